r"""Per-matrix MAP matrix factorization with biases, fitted by alternating
least squares (Zhou et al., "Large-scale parallel collaborative filtering
for the Netflix prize", AAIM 2008; the biased model of Koren, Bell and
Volinsky, "Matrix factorization techniques for recommender systems", IEEE
Computer 2009).

The model :math:`\hat{r}_{ij} = \mu + b_i + c_j + \mathbf{u}_i^\top
\mathbf{v}_j`, with :math:`\mathbf{U} \in \mathbb{R}^{m \times K}` and
:math:`\mathbf{V} \in \mathbb{R}^{n \times K}`, is the MAP estimate under
Gaussian noise and zero-mean Gaussian priors: it minimises

.. math::
    L = \sum_{(i, j) \in \Omega} (r_{ij} - \hat{r}_{ij})^2
    + \lambda \left( \|\mathbf{U}\|_F^2 + \|\mathbf{V}\|_F^2 \right)
    + \lambda_b \left( \|\mathbf{b}\|^2 + \|\mathbf{c}\|^2 \right).

The factor penalty is given relative to the spread of the data,
:math:`\lambda = \texttt{reg} \cdot \hat{\sigma}` with :math:`\hat{\sigma}`
the standard deviation of the observed values (and the initial factors
scale with :math:`\sqrt{\hat{\sigma}}`), so that multiplying the matrix by
a constant multiplies the predictions by it and one grid of ``reg`` fits
every rating scale. :math:`\lambda_b` counts pseudo-observations pulling a
bias to zero and needs no such scaling.

One sweep solves exactly for the rows, then the columns, then
:math:`\mu`. With :math:`\mathbf{w}_j = (\mathbf{v}_j, 1)` and
:math:`\boldsymbol{\Lambda} = \operatorname{diag}(\lambda, \dots, \lambda,
\lambda_b)`, row :math:`i` gets

.. math::
    (\mathbf{u}_i, b_i) \leftarrow \Big( \sum_{j \in \Omega_i}
    \mathbf{w}_j \mathbf{w}_j^\top + \boldsymbol{\Lambda} \Big)^{-1}
    \sum_{j \in \Omega_i} (r_{ij} - \mu - c_j) \, \mathbf{w}_j,

a :math:`(K + 1) \times (K + 1)` ridge solve (by Cholesky), batched over
the rows; the columns are symmetric and :math:`\mu` is the mean residual.
Each step minimises :math:`L` over its block, so :math:`L` never rises.
The per-row
sums are products of the sparse ``(num_rows, num_cols)`` incidence matrix
with per-column outer products :math:`\mathbf{w}_j \mathbf{w}_j^\top`, so
the cost of a sweep is :math:`O(|\Omega| K^2 + (m + n) K^3)` and no dense
``num_rows x num_cols`` tensor is ever built. A row or column with no
observed entry gets zero factors and bias, so it is predicted by
:math:`\mu` plus the other side's bias.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .base import (
    PerMatrixBaseline,
    _check_grid,
    _check_holdout,
    _check_number,
    _holdout_split,
    _rmse,
)

__all__ = ['MatrixFactorization']


class MatrixFactorization(PerMatrixBaseline):
    r"""Per-matrix MAP matrix factorization with biases, fitted by
    alternating least squares, with its rank and regularisation chosen on
    the matrix's own observed entries (see the module docstring for the
    objective and the updates).

    Unless both ``rank`` and ``reg`` are fixed, every pair of candidates in
    ``ranks`` x ``regs`` is fitted on a ``1 - holdout`` fraction of the
    observed entries and scored by the RMSE on the rest; the best pair is
    then refitted on all the observed entries.

    Args:
        rank (int, optional): A fixed rank :math:`K`; only ``regs`` is
            searched. (default: :obj:`None`)
        reg (float, optional): A fixed ``reg > 0``, with :math:`\lambda =
            \texttt{reg} \cdot \hat{\sigma}`; only ``ranks`` is searched.
            (default: :obj:`None`)
        ranks (sequence of int): Candidate ranks. (default: :obj:`(2, 5,
            10, 20)`)
        regs (sequence of float): Candidate ``reg``. (default: :obj:`(1, 3,
            10, 30)`)
        bias_reg (float): :math:`\lambda_b > 0`. (default: :obj:`3.0`)
        holdout (float): Fraction of the observed entries held out for the
            selection. (default: :obj:`0.1`)
        num_iters (int): Maximum number of ALS sweeps. (default: :obj:`30`)
        tol (float): Stop when a sweep lowers :math:`L` by less than
            ``tol`` times its value. (default: :obj:`1e-5`)
        init_std (float): Standard deviation of the Gaussian initial
            factors, in units of :math:`\sqrt{\hat{\sigma}}`.
            (default: :obj:`0.1`)
        seed (int): Seed of the held-out split and the initial factors.
            (default: :obj:`0`)

    Attributes:
        mean_ (float): :math:`\mu`.
        row_bias_ (torch.Tensor): :math:`\mathbf{b}`, shape
            ``(num_rows,)``.
        col_bias_ (torch.Tensor): :math:`\mathbf{c}`, shape
            ``(num_cols,)``.
        U_ (torch.Tensor): Row factors, shape ``(num_rows, rank_)``.
        V_ (torch.Tensor): Column factors, shape ``(num_cols, rank_)``.
        rank_ (int): The rank used.
        reg_ (float): The ``reg`` used.
        scale_ (float): :math:`\hat{\sigma}`, so that :math:`\lambda =`
            ``reg_ * scale_``.
        grid_scores_ (dict): Held-out RMSE of each ``(rank, reg)`` tried.
        objective_ (list of float): :math:`L` before the first sweep and
            after each sweep of the final fit.
    """
    name = 'mf'

    def __init__(
        self,
        *,
        rank: Optional[int] = None,
        reg: Optional[float] = None,
        ranks: Sequence[int] = (2, 5, 10, 20),
        regs: Sequence[float] = (1.0, 3.0, 10.0, 30.0),
        bias_reg: float = 3.0,
        holdout: float = 0.1,
        num_iters: int = 30,
        tol: float = 1e-5,
        init_std: float = 0.1,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        self.rank = None if rank is None else _check_number(
            rank, 'rank', int, 1)
        self.reg = None if reg is None else _check_number(
            reg, 'reg', strict=True)
        self.ranks = _check_grid(ranks, 'ranks', int, 1)
        self.regs = _check_grid(regs, 'regs', strict=True)
        self.bias_reg = _check_number(bias_reg, 'bias_reg', strict=True)
        self.holdout = _check_holdout(holdout)
        self.num_iters = _check_number(num_iters, 'num_iters', int, 1)
        self.tol = _check_number(tol, 'tol')
        self.init_std = _check_number(init_std, 'init_std')

    def _fit(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int) -> None:
        ranks = self.ranks if self.rank is None else (self.rank,)
        regs = self.regs if self.reg is None else (self.reg,)
        self.grid_scores_: dict = {}
        if len(ranks) * len(regs) == 1:
            rank, reg = ranks[0], regs[0]
        else:
            rank, reg = self._select(row, col, value, num_rows, num_cols,
                                     ranks, regs)

        self.rank_, self.reg_, self.scale_ = rank, reg, _scale(value)
        params, self.objective_ = self._als(row, col, value, num_rows,
                                            num_cols, rank, reg)
        self.mean_, self.row_bias_, self.col_bias_, self.U_, self.V_ = params

    def _select(self, row: Tensor, col: Tensor, value: Tensor,
                num_rows: int, num_cols: int, ranks: tuple,
                regs: tuple) -> tuple[int, float]:
        generator = torch.Generator().manual_seed(self.seed)
        split = _holdout_split(value.numel(), self.holdout, generator)
        if split is None:  # Nothing to hold out: the most regularised.
            return min(ranks), max(regs)
        kept, held = (s.to(row.device) for s in split)
        for rank in ranks:
            for reg in regs:
                params, _ = self._als(row[kept], col[kept], value[kept],
                                      num_rows, num_cols, rank, reg)
                pred = _predict(params, row[held], col[held])
                self.grid_scores_[(rank, reg)] = _rmse(pred, value[held])
        return min(self.grid_scores_, key=self.grid_scores_.get)

    def _als(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int, rank: int,
             reg: float) -> tuple[tuple, list[float]]:
        bias_reg = self.bias_reg
        scale = _scale(value)
        reg = reg * scale
        init_std = self.init_std * scale ** 0.5
        # The same initial factors for every candidate and for the refit.
        generator = torch.Generator().manual_seed(self.seed)
        U = torch.randn(num_rows, rank, generator=generator,
                        dtype=value.dtype).to(value.device) * init_std
        V = torch.randn(num_cols, rank, generator=generator,
                        dtype=value.dtype).to(value.device) * init_std
        b = value.new_zeros(num_rows)
        c = value.new_zeros(num_cols)
        mu = value.mean()

        # Sparse incidence (A) and value (R) matrices, both orientations.
        ones = torch.ones_like(value)
        A_row = _sparse(row, col, ones, num_rows, num_cols)
        R_row = _sparse(row, col, value, num_rows, num_cols)
        A_col = _sparse(col, row, ones, num_cols, num_rows)
        R_col = _sparse(col, row, value, num_cols, num_rows)
        penalty = torch.full((rank + 1,), reg, dtype=value.dtype,
                             device=value.device)
        penalty[-1] = bias_reg

        def objective(err: Tensor) -> float:
            return float(err.square().sum()
                         + reg * (U.square().sum() + V.square().sum())
                         + bias_reg * (b.square().sum() + c.square().sum()))

        history = [objective(value - _predict((mu, b, c, U, V), row, col))]
        for _ in range(self.num_iters):
            U, b = _ridge_side(A_row, R_row, V, mu + c, penalty)
            V, c = _ridge_side(A_col, R_col, U, mu + b, penalty)
            # Residual without mu, shared by the mu update and L.
            partial = value - _predict((0.0, b, c, U, V), row, col)  # (E,)
            mu = partial.mean()
            history.append(objective(partial - mu))
            if history[-2] - history[-1] <= self.tol * abs(history[-2]):
                break
        return (float(mu), b, c, U, V), history

    def _predict(self, row: Tensor, col: Tensor) -> Tensor:
        params = (self.mean_,) + tuple(
            t.to(row.device) for t in (self.row_bias_, self.col_bias_,
                                       self.U_, self.V_))
        return _predict(params, row, col)


def _scale(value: Tensor) -> float:
    std = float(value.std(correction=0))
    return std if std > 0 else 1.0


def _predict(params: tuple, row: Tensor, col: Tensor) -> Tensor:
    mu, b, c, U, V = params
    return mu + b[row] + c[col] + (U[row] * V[col]).sum(dim=-1)  # (Q,)


def _sparse(index0: Tensor, index1: Tensor, value: Tensor, size0: int,
            size1: int) -> Tensor:
    # Explicit invariant checks: torch warns when they are left implicit.
    out = torch.sparse_coo_tensor(torch.stack([index0, index1]), value,
                                  (size0, size1), check_invariants=False)
    return out.coalesce()


def _ridge_side(A: Tensor, R: Tensor, W: Tensor, offset: Tensor,
                penalty: Tensor) -> tuple[Tensor, Tensor]:
    r"""Solves one side of the ALS sweep.

    For every row :math:`i` of the sparse ``A`` (incidence) and ``R``
    (values), both ``(m, n)``, returns the ridge solution of
    :math:`r_{ij} - o_j \approx (\mathbf{x}_i, \beta_i)^\top
    (\mathbf{w}_j, 1)` over the observed :math:`j`, with per-coordinate
    penalty ``penalty``. ``W`` is ``(n, K)``, ``offset`` is ``(n,)``.
    Returns :math:`\mathbf{X}` ``(m, K)`` and :math:`\boldsymbol{\beta}`
    ``(m,)``.
    """
    n, K = W.shape
    W1 = torch.cat([W, W.new_ones(n, 1)], dim=1)  # (n, K + 1)
    outer = (W1.unsqueeze(2) * W1.unsqueeze(1)).reshape(n, -1)  # (n, K1^2)
    shifted = offset.unsqueeze(1) * W1  # (n, K + 1)
    # One pass over A for the Gram matrices and the offset part of the
    # right-hand side: sum_j w_j w_j^T and sum_j o_j w_j.
    stats = torch.sparse.mm(A, torch.cat([outer, shifted], dim=1))
    gram = stats[:, :(K + 1) ** 2].reshape(-1, K + 1, K + 1)  # (m, K1, K1)
    gram = gram + torch.diag(penalty)
    rhs = torch.sparse.mm(R, W1) - stats[:, (K + 1) ** 2:]  # (m, K + 1)
    # The systems are symmetric positive definite; batched Cholesky is also
    # much faster than torch.linalg.solve on small batched systems.
    L = torch.linalg.cholesky(gram)  # (m, K + 1, K + 1)
    x = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)  # (m, K1)
    return x[:, :K], x[:, K]
