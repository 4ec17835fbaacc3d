r"""Soft-Impute (Mazumder, Hastie and Tibshirani, "Spectral regularization
algorithms for learning large incomplete matrices", JMLR 2010) on one
matrix's observed entries.

The observed values are first centred by regularised row and column biases
(:func:`~gnn_metamf.baselines.bias.fit_biases`); Soft-Impute then fits the
residuals :math:`x_{ij}` with a low-rank :math:`\mathbf{Z}` solving the
nuclear-norm regularised problem

.. math::
    \min_{\mathbf{Z}} \frac{1}{2} \| P_\Omega(\mathbf{X} - \mathbf{Z})
    \|_F^2 + \lambda \|\mathbf{Z}\|_*

by the iteration

.. math::
    \mathbf{Z} \leftarrow S_\lambda\big( P_\Omega(\mathbf{X})
    + P_\Omega^\perp(\mathbf{Z}) \big),

where :math:`S_\lambda` soft-thresholds the singular values,
:math:`S_\lambda(\mathbf{M}) = \mathbf{P} \operatorname{diag}((\sigma_k -
\lambda)_+) \mathbf{Q}^\top` for :math:`\mathbf{M} = \mathbf{P}
\operatorname{diag}(\sigma_k) \mathbf{Q}^\top`. Written as
:math:`P_\Omega(\mathbf{X} - \mathbf{Z}) + \mathbf{Z}`, the matrix to
decompose is sparse plus low rank, so the top singular triplets are found
by a randomized subspace iteration (Halko, Martinsson and Tropp, 2011)
that only multiplies it with thin matrices, warm-started from the previous
right singular vectors; no dense ``num_rows x num_cols`` matrix is built
unless the matrix is small. The rank of :math:`\mathbf{Z}` is capped at
``max_rank``.

:math:`\lambda` is a fraction of :math:`\lambda_{\max} =
\sigma_1(P_\Omega(\mathbf{X}))`, above which :math:`\mathbf{Z} = 0`. The
fractions are visited from the largest down, each fit warm-started from
the previous one (the regularisation path of the paper).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .base import (
    PerMatrixBaseline,
    _check_grid,
    _check_holdout,
    _check_number,
    _holdout_split,
)
from .bias import fit_biases

__all__ = ['SoftImpute']

#: Matrices with at most this many cells are decomposed densely.
_DENSE_MAX_CELLS = 250_000

#: Extra random directions of the randomized SVD.
_OVERSAMPLE = 10


class SoftImpute(PerMatrixBaseline):
    r"""Soft-Impute on the bias-centred observed entries (see the module
    docstring), with :math:`\lambda` chosen on the matrix's own observed
    entries.

    Unless ``shrinkage`` is fixed, the regularisation path over
    ``shrinkages`` is fitted on a ``1 - holdout`` fraction of the observed
    entries and scored by the RMSE on the rest, until the score stops
    improving; the path is then refitted on all the observed entries down
    to the best fraction. On all entries, :math:`\lambda_{\max}` is
    recomputed, so the chosen *fraction* carries over.

    Args:
        shrinkage (float, optional): A fixed :math:`\lambda / \lambda_{\max}
            \in (0, 1]`; no selection. (default: :obj:`None`)
        shrinkages (sequence of float): Candidate fractions
            :math:`\lambda / \lambda_{\max}`, visited from the largest.
            (default: :obj:`(0.9, 0.7, 0.55, 0.45, 0.35, 0.25, 0.18, 0.13,
            0.09, 0.06, 0.04, 0.025, 0.015)`)
        max_rank (int): Largest rank of :math:`\mathbf{Z}`.
            (default: :obj:`100`)
        bias_reg (float): Regularisation :math:`\lambda_b \geq 0` of the
            centring biases (pseudo-counts, as in
            :class:`~gnn_metamf.baselines.Biases`). (default: :obj:`3.0`)
        holdout (float): Fraction of the observed entries held out for the
            selection. (default: :obj:`0.1`)
        patience (int): Stop going down the path once the held-out RMSE
            has not improved for this many fractions in a row.
            (default: :obj:`2`)
        max_iters (int): Maximum number of iterations per :math:`\lambda`.
            (default: :obj:`100`)
        tol (float): Stop at a :math:`\lambda` when :math:`\|\mathbf{Z}_{
            \text{new}} - \mathbf{Z}\|_F^2 \leq` ``tol`` :math:`\cdot
            \|\mathbf{Z}\|_F^2`. (default: :obj:`1e-5`)
        svd (str): ``'dense'``, ``'randomized'`` or ``'auto'`` (dense when
            the matrix has at most 250,000 cells). (default: :obj:`'auto'`)
        power_iters (int): Subspace iterations of each randomized SVD.
            (default: :obj:`2`)
        seed (int): Seed of the held-out split and of the randomized SVD.
            (default: :obj:`0`)

    Attributes:
        mean_ (float): :math:`\mu` of the centring.
        row_bias_ (torch.Tensor): Row biases, shape ``(num_rows,)``.
        col_bias_ (torch.Tensor): Column biases, shape ``(num_cols,)``.
        U_ (torch.Tensor): Left singular vectors of :math:`\mathbf{Z}`,
            shape ``(num_rows, rank_)``.
        d_ (torch.Tensor): Its singular values, shape ``(rank_,)``.
        V_ (torch.Tensor): Its right singular vectors, shape
            ``(num_cols, rank_)``.
        rank_ (int): The rank of :math:`\mathbf{Z}`.
        shrinkage_ (float): The fraction :math:`\lambda / \lambda_{\max}`
            used.
        lambda_ (float): The :math:`\lambda` used.
        grid_scores_ (dict): Held-out RMSE of each fraction tried.
    """
    name = 'soft_impute'

    def __init__(
        self,
        *,
        shrinkage: Optional[float] = None,
        shrinkages: Sequence[float] = (0.9, 0.7, 0.55, 0.45, 0.35, 0.25,
                                       0.18, 0.13, 0.09, 0.06, 0.04, 0.025,
                                       0.015),
        max_rank: int = 100,
        bias_reg: float = 3.0,
        holdout: float = 0.1,
        patience: int = 2,
        max_iters: int = 100,
        tol: float = 1e-5,
        svd: str = 'auto',
        power_iters: int = 2,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        self.shrinkage = None if shrinkage is None else _check_fraction(
            shrinkage, 'shrinkage')
        self.shrinkages = _check_fractions(shrinkages, 'shrinkages')
        self.max_rank = _check_number(max_rank, 'max_rank', int, 1)
        self.bias_reg = _check_number(bias_reg, 'bias_reg')
        self.holdout = _check_holdout(holdout)
        self.patience = _check_number(patience, 'patience', int, 1)
        self.max_iters = _check_number(max_iters, 'max_iters', int, 1)
        self.tol = _check_number(tol, 'tol')
        if svd not in ('auto', 'dense', 'randomized'):
            raise ValueError(f"'svd' must be 'auto', 'dense' or "
                             f"'randomized', got {svd!r}")
        self.svd = svd
        self.power_iters = _check_number(power_iters, 'power_iters', int)

    def _fit(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int) -> None:
        device = row.device
        row, col = row.cpu().numpy(), col.cpu().numpy()
        value = value.cpu()
        rng = np.random.default_rng(self.seed)
        self.grid_scores_: dict = {}

        if self.shrinkage is not None:
            shrinkage = self.shrinkage
        else:
            shrinkage = self._select(row, col, value, num_rows, num_cols,
                                     rng)
        self.shrinkage_ = shrinkage
        path = [s for s in sorted(set(self.shrinkages), reverse=True)
                if s > shrinkage] + [shrinkage]

        fit = _Fit(row, col, value, num_rows, num_cols, self, rng)
        for fraction in path:
            fit.solve(fraction)
        self.lambda_ = fit.lam
        self.mean_ = fit.mean
        self.row_bias_, self.col_bias_ = fit.b.to(device), fit.c.to(device)
        self.U_ = torch.from_numpy(fit.U).to(device)
        self.d_ = torch.from_numpy(fit.d).to(device)
        self.V_ = torch.from_numpy(fit.V).to(device)
        self.rank_ = int(fit.d.size)

    def _select(self, row: np.ndarray, col: np.ndarray, value: Tensor,
                num_rows: int, num_cols: int,
                rng: np.random.Generator) -> float:
        generator = torch.Generator().manual_seed(self.seed)
        split = _holdout_split(value.numel(), self.holdout, generator)
        if split is None:  # Nothing to hold out: the most regularised.
            return max(self.shrinkages)
        kept, held = (s.numpy() for s in split)
        fit = _Fit(row[kept], col[kept], value[kept], num_rows, num_cols,
                   self, rng)
        target = value.numpy()[held]
        best, best_rmse, worse = None, float('inf'), 0
        for fraction in sorted(set(self.shrinkages), reverse=True):
            fit.solve(fraction)
            pred = fit.predict(row[held], col[held], centred=False)
            rmse = float(np.sqrt(np.mean((pred - target) ** 2)))
            self.grid_scores_[fraction] = rmse
            if rmse < best_rmse:  # Ties go to the more regularised.
                best, best_rmse, worse = fraction, rmse, 0
            else:
                worse += 1
                if worse == self.patience:
                    break
        return best

    def _predict(self, row: Tensor, col: Tensor) -> Tensor:
        b = self.row_bias_.to(row.device)
        c = self.col_bias_.to(row.device)
        U, d, V = (t.to(row.device) for t in (self.U_, self.d_, self.V_))
        low_rank = ((U[row] * d) * V[col]).sum(dim=-1)  # (Q,)
        return self.mean_ + b[row] + c[col] + low_rank


class _Fit:
    r"""One Soft-Impute regularisation path on fixed observed entries:
    centring, :math:`\lambda_{\max}`, then :meth:`solve` for decreasing
    fractions, each warm-started from the last."""

    def __init__(self, row: np.ndarray, col: np.ndarray, value: Tensor,
                 num_rows: int, num_cols: int, config: SoftImpute,
                 rng: np.random.Generator):
        self.row, self.col = row, col
        self.shape = (num_rows, num_cols)
        self.config, self.rng = config, rng
        self.mean, self.b, self.c = fit_biases(
            torch.from_numpy(row), torch.from_numpy(col), value, num_rows,
            num_cols, config.bias_reg)
        x = value - self.mean - self.b[row] - self.c[col]  # (E,)
        self.x = x.numpy()

        self.rank_cap = min(config.max_rank, min(self.shape))
        self.dense = config.svd == 'dense' or (
            config.svd == 'auto' and num_rows * num_cols <= _DENSE_MAX_CELLS)
        # Entries are sorted by (row, col), so they are already in CSR
        # order and the data array can be swapped in place.
        indptr = np.zeros(num_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=num_rows), out=indptr[1:])
        self.S = sp.csr_matrix((self.x.copy(), col, indptr),
                               shape=self.shape)
        self.lam_max = self._top_singular_value()

        self.U = np.zeros((num_rows, 0))
        self.d = np.zeros(0)
        self.V = np.zeros((num_cols, 0))
        self.lam = self.lam_max

    def _top_singular_value(self) -> float:
        if self.dense or min(self.shape) < 3:  # svds needs k < min(shape).
            return float(np.linalg.norm(self.S.toarray(), 2))
        from scipy.sparse.linalg import svds
        v0 = self.rng.standard_normal(min(self.shape))
        s = svds(self.S, k=1, v0=v0, return_singular_vectors=False)
        return float(s[0])

    def solve(self, fraction: float) -> None:
        r"""Iterates to convergence at :math:`\lambda = ` ``fraction``
        :math:`\cdot \lambda_{\max}` from the current :math:`\mathbf{Z}`."""
        self.lam = fraction * self.lam_max
        for _ in range(self.config.max_iters):
            # Sparse part P_Omega(X - Z) of the filled-in matrix.
            self.S.data = self.x - self.predict(self.row, self.col)
            P, s, Q = self._svd()
            d = np.maximum(s - self.lam, 0.0)
            # At lambda = lambda_max rounding leaves d_1 ~ 1e-16, not 0.
            keep = d > 1e-10 * max(self.lam_max, s[0] if s.size else 0.0)
            P, d, Q = P[:, keep], d[keep], Q[:, keep]
            change = _relative_change(self.U, self.d, self.V, P, d, Q)
            self.U, self.d, self.V = P, d, Q
            if change <= self.config.tol:
                break

    def predict(self, row: np.ndarray, col: np.ndarray,
                centred: bool = True) -> np.ndarray:
        r"""Entries of :math:`\mathbf{Z}` at ``(row, col)``, shape
        ``(Q,)``, plus the centring unless ``centred``."""
        out = np.einsum('qk,qk->q', self.U[row] * self.d, self.V[col])
        if not centred:
            out = out + (self.mean + self.b.numpy()[row]
                         + self.c.numpy()[col])
        return out

    def _svd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Top singular triplets of :math:`P_\Omega(\mathbf{X} -
        \mathbf{Z}) + \mathbf{Z}`: ``P`` ``(m, k)``, ``s`` ``(k,)``, ``Q``
        ``(n, k)``."""
        if self.dense:
            M = self.S.toarray() + (self.U * self.d) @ self.V.T  # (m, n)
            P, s, Qt = np.linalg.svd(M, full_matrices=False)
            k = self.rank_cap
            return P[:, :k], s[:k], Qt[:k].T

        S, U, d, V = self.S, self.U, self.d, self.V
        St = S.T.tocsr()

        def matmat(X: np.ndarray) -> np.ndarray:  # (n, p) -> (m, p)
            return S @ X + (U * d) @ (V.T @ X)

        def rmatmat(Y: np.ndarray) -> np.ndarray:  # (m, p) -> (n, p)
            return St @ Y + (V * d) @ (U.T @ Y)

        # Warm start: the previous right singular vectors, then random
        # directions.
        width = min(self.rank_cap + _OVERSAMPLE, min(self.shape))
        extra = self.rng.standard_normal((self.shape[1], width - V.shape[1]))
        Q = np.linalg.qr(np.concatenate([V, extra], axis=1))[0]  # (n, p)
        P = np.linalg.qr(matmat(Q))[0]  # (m, p)
        for _ in range(self.config.power_iters):
            Q = np.linalg.qr(rmatmat(P))[0]
            P = np.linalg.qr(matmat(Q))[0]
        B = rmatmat(P).T  # (p, n), B = P^T M
        Pb, s, Qt = np.linalg.svd(B, full_matrices=False)
        k = self.rank_cap
        return (P @ Pb)[:, :k], s[:k], Qt[:k].T


def _relative_change(U: np.ndarray, d: np.ndarray, V: np.ndarray,
                     P: np.ndarray, e: np.ndarray, Q: np.ndarray) -> float:
    r""":math:`\|\mathbf{Z}' - \mathbf{Z}\|_F^2 / \|\mathbf{Z}\|_F^2` for
    :math:`\mathbf{Z} = \mathbf{U} \operatorname{diag}(d) \mathbf{V}^\top`
    and :math:`\mathbf{Z}' = \mathbf{P} \operatorname{diag}(e)
    \mathbf{Q}^\top`, from the factors only."""
    old = float(np.sum(d ** 2))
    new = float(np.sum(e ** 2))
    cross = float(np.sum((U.T @ P) * np.outer(d, e) * (V.T @ Q)))
    if old == 0.0:
        return 0.0 if new == 0.0 else float('inf')
    return max(old + new - 2.0 * cross, 0.0) / old


def _check_fraction(value: float, name: str) -> float:
    value = _check_number(value, name, strict=True)
    if value > 1.0:
        raise ValueError(f"'{name}' must be a fraction of lambda_max in "
                         f"(0, 1], got {value!r}")
    return value


def _check_fractions(values: Sequence[float], name: str) -> tuple:
    values = _check_grid(values, name, strict=True)
    if any(v > 1.0 for v in values):
        raise ValueError(f"'{name}' must hold fractions of lambda_max in "
                         f"(0, 1], got {values!r}")
    return values
