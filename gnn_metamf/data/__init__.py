"""The matrix graph, batching, row/column splits and task sampling."""
from .matrix_graph import DUPLICATE_POLICIES, MatrixGraph

__all__ = ['MatrixGraph', 'DUPLICATE_POLICIES']
