"""The matrix graph, batching, row/column splits and task sampling."""
from .matrix_graph import DUPLICATE_POLICIES, MatrixGraph
from .sampler import COL_SAMPLING, TaskSampler, whole_matrix_task
from .split import PARTS, MetaSplit, split_rows_cols

__all__ = [
    'MatrixGraph',
    'DUPLICATE_POLICIES',
    'MetaSplit',
    'split_rows_cols',
    'PARTS',
    'TaskSampler',
    'whole_matrix_task',
    'COL_SAMPLING',
]
