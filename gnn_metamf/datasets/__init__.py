"""Loaders of rating matrices as :class:`~gnn_metamf.MatrixGraph` objects.

Real datasets are read from a data root (see :func:`data_root` and
``datasets/README.md``) and cached, processed, in :func:`cache_dir`;
``'synthetic'`` needs no files.
"""
from .registry import DATASET_NAMES, load_dataset
from .root import ChecksumError, DatasetNotFoundError, cache_dir, data_root
from .synthetic import make_synthetic

__all__ = [
    'DATASET_NAMES',
    'load_dataset',
    'data_root',
    'cache_dir',
    'make_synthetic',
    'DatasetNotFoundError',
    'ChecksumError',
]
