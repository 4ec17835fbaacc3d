"""Message layers, prior heads, the MAP refinement and the MetaMF model."""
from .conv import (
    LAYERS,
    ExchangeableLayer,
    NodeMessageLayer,
    RowColLayer,
    make_layer,
    register_layer,
)
from .encoder import Encoder
from .model import Factorization, MetaMF
from .normalize import MatrixScale
from .ops import BACKENDS, BipartiteOps
from .prior import GaussianPriorHead
from .refine import SOLVERS, MAPRefinement, map_objective, predict_entries

__all__ = [
    'BACKENDS',
    'BipartiteOps',
    'Encoder',
    'ExchangeableLayer',
    'Factorization',
    'GaussianPriorHead',
    'LAYERS',
    'MAPRefinement',
    'MatrixScale',
    'MetaMF',
    'NodeMessageLayer',
    'RowColLayer',
    'SOLVERS',
    'make_layer',
    'map_objective',
    'predict_entries',
    'register_layer',
]
