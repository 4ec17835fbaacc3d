r"""Per-matrix baselines: models fitted on the observed entries of one
matrix only, which the meta-learned model is compared against.

Every baseline follows :class:`PerMatrixBaseline`::

    model = make_baseline('mf', seed=0)
    pred = model.fit(graph).predict(graph.edge_label_index)  # (Q,)
    evaluate_predictions(pred, graph.edge_label)  # {'rmse': .., 'mae': ..}
"""
from .base import PerMatrixBaseline
from .bias import Biases, GlobalMean, fit_biases
from .imputer import BaselineImputer
from .metrics import evaluate_predictions
from .mf import MatrixFactorization
from .registry import BASELINES, make_baseline
from .soft_impute import SoftImpute
from .surprise_svd import SurpriseSVD

__all__ = [
    'PerMatrixBaseline',
    'GlobalMean',
    'Biases',
    'MatrixFactorization',
    'SoftImpute',
    'SurpriseSVD',
    'BASELINES',
    'make_baseline',
    'evaluate_predictions',
    'BaselineImputer',
    'fit_biases',
]
