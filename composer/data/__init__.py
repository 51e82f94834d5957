"""Data for training and evaluation: the synthetic set, standard feature pickles, the split interface."""

from composer.data.base import SPLITS, DataSplits, Dataset, TensorSplit, check_split, splits_from_arrays
from composer.data.load import load_data
from composer.data.standard import load_standard_pickle
from composer.data.synthetic import synthetic_data

__all__ = [
    "SPLITS",
    "DataSplits",
    "Dataset",
    "TensorSplit",
    "check_split",
    "load_data",
    "load_standard_pickle",
    "splits_from_arrays",
    "synthetic_data",
]
