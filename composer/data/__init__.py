"""Data for training and evaluation: the synthetic set, feature pickles (standard and MAG layouts),
CMU-MultimodalSDK computational sequences, the split interface."""

from composer.data.base import SPLITS, DataSplits, Dataset, TensorSplit, check_split, splits_from_arrays
from composer.data.csd import load_csd
from composer.data.load import load_data, load_feature_pickle
from composer.data.mag import load_mag_pickle
from composer.data.standard import load_standard_pickle
from composer.data.synthetic import synthetic_data

__all__ = [
    "SPLITS",
    "DataSplits",
    "Dataset",
    "TensorSplit",
    "check_split",
    "load_csd",
    "load_data",
    "load_feature_pickle",
    "load_mag_pickle",
    "load_standard_pickle",
    "splits_from_arrays",
    "synthetic_data",
]
