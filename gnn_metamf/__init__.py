"""gnn-metamf: meta-learned matrix factorization on bipartite graphs.

The names most users need are here; the subpackages hold the rest:
:mod:`gnn_metamf.data` (the matrix graph, splits, task sampling),
:mod:`gnn_metamf.datasets` (loaders), :mod:`gnn_metamf.nn` (layers, priors,
refinement, the model), :mod:`gnn_metamf.baselines`, and the modules
``train``, ``evaluate``, ``config`` and ``checkpoint``.
"""
from .data import MatrixGraph, MetaSplit, TaskSampler, split_rows_cols
from .datasets import load_dataset
from .nn import MetaMF

__version__ = '0.1.0'

__all__ = [
    'MatrixGraph',
    'MetaMF',
    'MetaSplit',
    'TaskSampler',
    'load_dataset',
    'split_rows_cols',
    '__version__',
]
