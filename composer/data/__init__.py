"""Data for training and evaluation: the synthetic set, feature pickles (standard and MAG layouts),
CMU-MultimodalSDK computational sequences, the split interface.

The names below are imported on first use, so that the torch-free parts of this package (the
data budget, :mod:`composer.data.budget`, which ``validate`` consults) import no PyTorch.
"""

import importlib

#: Public name -> the module that defines it.
_LAZY = {
    "SPLITS": "composer.data.base",
    "DataSplits": "composer.data.base",
    "Dataset": "composer.data.base",
    "TensorSplit": "composer.data.base",
    "check_split": "composer.data.base",
    "splits_from_arrays": "composer.data.base",
    "load_csd": "composer.data.csd",
    "load_data": "composer.data.load",
    "load_feature_pickle": "composer.data.load",
    "load_mag_pickle": "composer.data.mag",
    "load_standard_pickle": "composer.data.standard",
    "synthetic_data": "composer.data.synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'composer.data' has no attribute '{name}'")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
