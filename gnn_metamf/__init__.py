"""gnn-metamf: meta-learned matrix factorization on bipartite graphs."""
from .data import MatrixGraph

__version__ = '0.1.0'

__all__ = ['MatrixGraph', '__version__']
