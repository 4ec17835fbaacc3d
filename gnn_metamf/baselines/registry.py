r"""The baselines by name."""
from __future__ import annotations

from typing import Any

from .base import PerMatrixBaseline
from .bias import Biases, GlobalMean
from .mf import MatrixFactorization
from .soft_impute import SoftImpute
from .surprise_svd import SurpriseSVD

__all__ = ['BASELINES', 'make_baseline']

#: Every baseline class under its :attr:`~PerMatrixBaseline.name`.
BASELINES: dict[str, type] = {
    cls.name: cls
    for cls in (GlobalMean, Biases, MatrixFactorization, SoftImpute,
                SurpriseSVD)
}


def make_baseline(name: str, **kwargs: Any) -> PerMatrixBaseline:
    r"""Builds the baseline registered as ``name``.

    Args:
        name (str): A key of :data:`BASELINES`.
        **kwargs: Keyword arguments of its constructor.

    Raises:
        ValueError: If ``name`` is not a key of :data:`BASELINES`.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of "
                         f"{sorted(BASELINES)}")
    return BASELINES[name](**kwargs)
