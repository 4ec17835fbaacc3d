r"""The simplest per-matrix baselines: the global mean, and the global mean
plus regularised row and column biases (the baseline predictor of Koren,
"Factorization meets the neighborhood", KDD 2008).

With :math:`\Omega` the observed entries, :math:`\Omega_i` the observed
columns of row :math:`i` and :math:`\Omega^j` the observed rows of column
:math:`j`, :class:`Biases` minimises

.. math::
    \sum_{(i, j) \in \Omega} (r_{ij} - \mu - b_i - c_j)^2
    + \lambda \left( \|\mathbf{b}\|^2 + \|\mathbf{c}\|^2 \right)

over :math:`\mu` (not regularised), :math:`\mathbf{b}` and
:math:`\mathbf{c}` by exact block-coordinate sweeps,

.. math::
    b_i \leftarrow \frac{\sum_{j \in \Omega_i} (r_{ij} - \mu - c_j)}
        {|\Omega_i| + \lambda}, \qquad
    c_j \leftarrow \frac{\sum_{i \in \Omega^j} (r_{ij} - \mu - b_i)}
        {|\Omega^j| + \lambda}, \qquad
    \mu \leftarrow \frac{1}{|\Omega|} \sum_{(i, j) \in \Omega}
        (r_{ij} - b_i - c_j),

each of which minimises the objective over its block, so that the objective
never rises. A row or column with no observed entry keeps a zero bias.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from .base import (
    PerMatrixBaseline,
    _check_grid,
    _check_holdout,
    _check_number,
    _holdout_split,
    _rmse,
)

__all__ = ['GlobalMean', 'Biases', 'fit_biases']


class GlobalMean(PerMatrixBaseline):
    r"""Predicts the mean :math:`\mu = \frac{1}{|\Omega|} \sum_{(i, j) \in
    \Omega} r_{ij}` of the observed entries everywhere.

    Args:
        seed (int): Unused; accepted so that every baseline takes it.
            (default: :obj:`0`)

    Attributes:
        mean_ (float): The mean of the observed values.
    """
    name = 'global_mean'

    def _fit(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int) -> None:
        self.mean_ = float(value.mean())

    def _predict(self, row: Tensor, col: Tensor) -> Tensor:
        return torch.full(row.shape, self.mean_, dtype=torch.float64,
                          device=row.device)


class Biases(PerMatrixBaseline):
    r"""Global mean plus regularised row and column biases,
    :math:`\hat{r}_{ij} = \mu + b_i + c_j`, fitted as in the module
    docstring.

    When ``reg`` is :obj:`None`, the regularisation :math:`\lambda` is
    chosen from ``regs``: the observed entries are split at random, each
    candidate is fitted on a ``1 - holdout`` fraction of them and scored by
    the RMSE on the rest, and the best one is refitted on all of them.
    :math:`\lambda` counts pseudo-observations pulling a bias towards zero,
    so the grid does not depend on the scale of the values.

    Args:
        reg (float, optional): A fixed :math:`\lambda \geq 0`; no selection.
            (default: :obj:`None`)
        regs (sequence of float): Candidates for :math:`\lambda` when
            ``reg`` is :obj:`None`. (default: :obj:`(1, 3, 10, 25, 50,
            100)`)
        holdout (float): Fraction of the observed entries held out to choose
            :math:`\lambda`. (default: :obj:`0.1`)
        num_iters (int): Maximum number of sweeps. (default: :obj:`100`)
        tol (float): Stop when no parameter moves by more than ``tol`` in a
            sweep. (default: :obj:`1e-6`)
        seed (int): Seed of the held-out split. (default: :obj:`0`)

    Attributes:
        mean_ (float): :math:`\mu`.
        row_bias_ (torch.Tensor): :math:`\mathbf{b}`, shape
            ``(num_rows,)``.
        col_bias_ (torch.Tensor): :math:`\mathbf{c}`, shape
            ``(num_cols,)``.
        reg_ (float): The :math:`\lambda` used.
        grid_scores_ (dict): Held-out RMSE of each candidate :math:`\lambda`
            (empty when ``reg`` is fixed).
    """
    name = 'biases'

    def __init__(
        self,
        *,
        reg: Optional[float] = None,
        regs: Sequence[float] = (1.0, 3.0, 10.0, 25.0, 50.0, 100.0),
        holdout: float = 0.1,
        num_iters: int = 100,
        tol: float = 1e-6,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        self.reg = None if reg is None else _check_number(reg, 'reg')
        self.regs = _check_grid(regs, 'regs')
        self.holdout = _check_holdout(holdout)
        self.num_iters = _check_number(num_iters, 'num_iters', int, 1)
        self.tol = _check_number(tol, 'tol')

    def _fit(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int) -> None:
        self.grid_scores_: dict = {}
        reg = self.reg
        if reg is None:
            reg = self._select(row, col, value, num_rows, num_cols)
        self.reg_ = reg
        self.mean_, self.row_bias_, self.col_bias_ = fit_biases(
            row, col, value, num_rows, num_cols, reg, self.num_iters,
            self.tol)

    def _select(self, row: Tensor, col: Tensor, value: Tensor,
                num_rows: int, num_cols: int) -> float:
        generator = torch.Generator().manual_seed(self.seed)
        split = _holdout_split(value.numel(), self.holdout, generator)
        if split is None:  # Nothing to hold out: the most regularised.
            return max(self.regs)
        kept, held = (s.to(row.device) for s in split)
        for reg in self.regs:
            mean, b, c = fit_biases(row[kept], col[kept], value[kept],
                                    num_rows, num_cols, reg,
                                    self.num_iters, self.tol)
            pred = mean + b[row[held]] + c[col[held]]
            self.grid_scores_[reg] = _rmse(pred, value[held])
        return min(self.grid_scores_, key=self.grid_scores_.get)

    def _predict(self, row: Tensor, col: Tensor) -> Tensor:
        b = self.row_bias_.to(row.device)
        c = self.col_bias_.to(row.device)
        return self.mean_ + b[row] + c[col]


def fit_biases(
    row: Tensor,
    col: Tensor,
    value: Tensor,
    num_rows: int,
    num_cols: int,
    reg: float,
    num_iters: int = 100,
    tol: float = 1e-6,
) -> tuple[float, Tensor, Tensor]:
    r"""Fits :math:`\mu`, :math:`\mathbf{b}` and :math:`\mathbf{c}` by the
    block-coordinate sweeps of the module docstring.

    Args:
        row (torch.Tensor): Row ids of the observed entries, shape ``(E,)``.
        col (torch.Tensor): Their column ids, shape ``(E,)``.
        value (torch.Tensor): Their values, shape ``(E,)``.
        num_rows (int): Number of rows.
        num_cols (int): Number of columns.
        reg (float): :math:`\lambda \geq 0`.
        num_iters (int): Maximum number of sweeps. (default: :obj:`100`)
        tol (float): Stop when no parameter moves by more than ``tol``.
            (default: :obj:`1e-6`)

    Returns:
        ``(mu, b, c)``: a float and tensors of shapes ``(num_rows,)`` and
        ``(num_cols,)``.
    """
    ones = torch.ones_like(value)
    row_den = scatter(ones, row, 0, dim_size=num_rows, reduce='sum') + reg
    col_den = scatter(ones, col, 0, dim_size=num_cols, reduce='sum') + reg
    # With reg = 0 an empty row would divide 0 by 0; its bias stays 0.
    row_den = row_den.clamp(min=torch.finfo(value.dtype).tiny)
    col_den = col_den.clamp(min=torch.finfo(value.dtype).tiny)

    mu = value.mean()
    b = value.new_zeros(num_rows)
    c = value.new_zeros(num_cols)
    for _ in range(num_iters):
        b_next = scatter(value - mu - c[col], row, 0, dim_size=num_rows,
                         reduce='sum') / row_den
        c_next = scatter(value - mu - b_next[row], col, 0,
                         dim_size=num_cols, reduce='sum') / col_den
        mu_next = (value - b_next[row] - c_next[col]).mean()
        change = max(float((b_next - b).abs().max()),
                     float((c_next - c).abs().max()),
                     float((mu_next - mu).abs()))
        mu, b, c = mu_next, b_next, c_next
        if change <= tol:
            break
    return float(mu), b, c
