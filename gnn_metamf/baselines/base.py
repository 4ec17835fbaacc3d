"""The interface shared by the per-matrix baselines.

A per-matrix baseline sees one matrix only: it is fitted on that matrix's
observed (support) entries and predicts any other entry of the same matrix.
It learns nothing across matrices, which is what the meta-learned model is
compared against. Every baseline

* takes keyword arguments only, and is deterministic given its ``seed``;
* sorts the observed entries before fitting, so that the fit does not depend
  on the order in which they are stored;
* computes in ``float64`` and returns predictions in the dtype of the
  matrix's ``edge_value``, on the device of the queried index.
"""
from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, Optional

import torch
from torch import Tensor

from ..data import MatrixGraph

__all__ = ['PerMatrixBaseline']


class PerMatrixBaseline(ABC):
    r"""Abstract base class of the per-matrix baselines.

    Subclasses set the class attribute :attr:`name` (their key in
    :data:`gnn_metamf.baselines.BASELINES`) and implement :meth:`_fit` and
    :meth:`_predict` on plain ``float64`` tensors.

    Args:
        seed (int): Seed of every random choice the baseline makes (held-out
            splits, initialisations). (default: :obj:`0`)
    """
    #: Key of the baseline in :data:`gnn_metamf.baselines.BASELINES`.
    name: str = ''

    def __init__(self, *, seed: int = 0):
        self.seed = _check_number(seed, 'seed', int)
        self._shape: Optional[tuple[int, int]] = None
        self._out_dtype = torch.get_default_dtype()

    @property
    def is_fitted(self) -> bool:
        r"""Whether :meth:`fit` has been called."""
        return self._shape is not None

    def fit(self, graph: MatrixGraph) -> PerMatrixBaseline:
        r"""Fits the baseline on the observed entries of one matrix.

        Args:
            graph (MatrixGraph): One matrix (not a batch). Only
                ``edge_index`` and ``edge_value`` are used; the query
                ``edge_label_index`` / ``edge_label`` are never looked at.

        Returns:
            The baseline itself.
        """
        row, col, value, num_rows, num_cols = _support(graph)
        self._shape = None  # A failed refit must not leave a stale model.
        self._fit(row, col, value, num_rows, num_cols)
        self._shape = (num_rows, num_cols)
        self._out_dtype = graph.edge_value.dtype
        return self

    def predict(self, index: Tensor) -> Tensor:
        r"""Predicts the entries at ``index``.

        Args:
            index (torch.Tensor): Positions ``(row id, column id)``, shape
                ``(2, Q)``, integer, inside the fitted matrix.

        Returns:
            torch.Tensor: The predictions, shape ``(Q,)``.
        """
        if self._shape is None:
            raise RuntimeError(f'{type(self).__name__} is not fitted yet; '
                               f'call fit(graph) before predict(index)')
        index = _check_index(index, *self._shape)
        out = self._predict(index[0], index[1])
        return out.to(dtype=self._out_dtype, device=index.device)

    def fit_predict(self, graph: MatrixGraph) -> Tensor:
        r"""Fits on ``graph``'s observed entries and predicts its query
        entries ``graph.edge_label_index``, shape ``(Q,)``."""
        # Checked before fitting, which may take a while.
        if isinstance(graph, MatrixGraph) and \
                graph.get('edge_label_index') is None:
            raise ValueError("'graph' has no 'edge_label_index' to predict; "
                             "set the query entries or call fit() and "
                             "predict() separately")
        return self.fit(graph).predict(graph.edge_label_index)

    @abstractmethod
    def _fit(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int) -> None:
        r"""Fits on entries sorted by ``(row, col)``; ``value`` is
        ``float64``."""

    @abstractmethod
    def _predict(self, row: Tensor, col: Tensor) -> Tensor:
        r"""Predicts ``(row[q], col[q])`` for every ``q``, in range."""

    def __repr__(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        args = ', '.join(f'{key}={getattr(self, key)!r}' for key in params
                         if key != 'self' and hasattr(self, key))
        return f'{type(self).__name__}({args})'


# ----------------------------------------------------------------------
# Helpers shared by the baselines.

def _support(graph: Any) -> tuple[Tensor, Tensor, Tensor, int, int]:
    r"""The observed entries of one matrix, sorted by ``(row, col)``, with
    ``float64`` values."""
    if not isinstance(graph, MatrixGraph):
        raise TypeError(f'expected a MatrixGraph, got '
                        f'{type(graph).__name__}')
    if graph.get('edge_index') is None or graph.get('edge_value') is None:
        raise ValueError("'graph' needs 'edge_index' and 'edge_value'")
    if graph.num_matrices != 1:
        raise ValueError(f'a per-matrix baseline is fitted on one matrix, '
                         f'got a batch of {graph.num_matrices}; split it '
                         f'with batch.to_data_list()')
    num_rows, num_cols = graph.num_rows, graph.num_cols
    row, col = graph.edge_index[0], graph.edge_index[1]
    if row.numel() == 0:
        raise ValueError(f'cannot fit on a matrix with no observed entry '
                         f'(shape {num_rows} x {num_cols}, 0 entries)')
    order = torch.argsort(row * num_cols + col)
    value = graph.edge_value[order].to(torch.float64)
    return row[order], col[order], value, num_rows, num_cols


def _check_index(index: Any, num_rows: int, num_cols: int) -> Tensor:
    if not isinstance(index, Tensor):
        index = torch.as_tensor(index)
    if index.dim() != 2 or index.size(0) != 2:
        raise ValueError(f"'index' must have shape (2, Q), got "
                         f"{tuple(index.shape)}")
    if index.is_floating_point() or index.is_complex() or \
            index.dtype == torch.bool:
        raise ValueError(f"'index' must hold integer ids, got dtype "
                         f"{index.dtype}")
    index = index.long()
    for ids, size, side in ((index[0], num_rows, 'row'),
                            (index[1], num_cols, 'column')):
        if ids.numel() == 0:
            continue
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(f"'index' has {side} id {bad}, expected ids in "
                             f"[0, {size}) for the {size} {side}s of the "
                             f"fitted matrix")
    return index


def _check_holdout(holdout: Any) -> float:
    if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) \
            or not 0.0 < holdout < 1.0:
        raise ValueError(f"'holdout' must be a fraction in (0, 1), got "
                         f"{holdout!r}")
    return float(holdout)


def _check_number(value: Any, name: str, kind: type = float,
                  low: float = 0.0, strict: bool = False) -> Any:
    r"""A finite number (an integer when ``kind`` is :obj:`int`) ``> low``
    (``strict``) or ``>= low``."""
    if kind is int:
        ok = isinstance(value, numbers.Integral)
    else:
        ok = isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and not isinstance(value, bool) and (
        value > low if strict else value >= low)
    if not ok:
        what = 'an integer' if kind is int else 'a number'
        sign = '>' if strict else '>='
        raise ValueError(f"'{name}' must be {what} {sign} {low:g}, got "
                         f"{value!r}")
    return kind(value)


def _check_grid(values: Any, name: str, kind: type = float,
                low: float = 0.0, strict: bool = False) -> tuple:
    r"""A non-empty tuple of candidates, each as :func:`_check_number`."""
    try:
        candidates = tuple(values)
    except TypeError:
        candidates = ()
    if not candidates:
        raise ValueError(f"'{name}' must be a non-empty sequence of "
                         f"candidates, got {values!r}")
    values = candidates
    try:
        return tuple(_check_number(v, name, kind, low, strict)
                     for v in values)
    except ValueError:
        what = 'integers' if kind is int else 'numbers'
        sign = '>' if strict else '>='
        raise ValueError(f"'{name}' must hold {what} {sign} {low:g}, got "
                         f"{values!r}") from None


def _holdout_split(
    num_entries: int,
    holdout: float,
    generator: torch.Generator,
) -> Optional[tuple[Tensor, Tensor]]:
    r"""Splits ``range(num_entries)`` at random into kept and held-out
    positions, each sorted; ``None`` when fewer than two entries leave
    nothing to hold out."""
    if num_entries < 2:
        return None
    num_held = min(max(round(holdout * num_entries), 1), num_entries - 1)
    perm = torch.randperm(num_entries, generator=generator)
    held, _ = torch.sort(perm[:num_held])
    kept, _ = torch.sort(perm[num_held:])
    return kept, held


def _rmse(pred: Tensor, target: Tensor) -> float:
    return float(torch.sqrt(torch.mean((pred - target) ** 2)))
