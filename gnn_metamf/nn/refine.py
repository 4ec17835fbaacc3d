r"""Differentiable MAP refinement of the factors of a batch of matrices.

This is the inner loop of Iwata, "Meta-learning for Matrix Factorization
without Shared Rows or Columns" (arXiv 2106.15133): starting from the prior
means given by the encoder, a fixed number of closed-form steps adapt the
factors to the observed entries, and the meta-gradient flows back through
every step.

**Objective.** Each row :math:`i` has an augmented factor
:math:`\tilde{\mathbf{u}}_i = [\mathbf{u}_i; b_i]` (latent factor and bias),
each column :math:`\tilde{\mathbf{v}}_j = [\mathbf{v}_j; c_j]`, and the model
of a normalised entry is
:math:`\hat z_{ij} = \mathbf{u}_i^\top\mathbf{v}_j + b_i + c_j`.
With diagonal Gaussian priors :math:`\mathcal{N}(\boldsymbol{\mu}_i,
\operatorname{diag}(\boldsymbol{\lambda}_i)^{-1})` from the encoder and a
meta-learned noise variance :math:`\sigma^2`, the refinement minimises,
for each matrix,

.. math::
    J(U, V) = \frac{1}{2\sigma^2} \sum_{(i,j) \in \mathcal{S}}
    (z_{ij} - \hat z_{ij})^2
    + \frac{1}{2} \sum_i \|\tilde{\mathbf{u}}_i - \boldsymbol{\mu}^u_i
    \|^2_{\boldsymbol{\lambda}^u_i}
    + \frac{1}{2} \sum_j \|\tilde{\mathbf{v}}_j - \boldsymbol{\mu}^v_j
    \|^2_{\boldsymbol{\lambda}^v_j}.

**One step** updates all rows, then all columns. For rows, with the column
design vectors :math:`\mathbf{a}_j = [\mathbf{v}_j; 1]` and targets
:math:`t_{ij} = z_{ij} - c_j`, the statistics

.. math::
    G_i = \sum_{j \in \mathcal{N}(i)} \mathbf{a}_j \mathbf{a}_j^\top,
    \qquad \mathbf{r}_i = \sum_{j \in \mathcal{N}(i)} \mathbf{a}_j t_{ij}

are sums over the observed entries (sparse products, never a dense
:math:`N \times M` tensor). The ``'als'`` solver takes the exact minimiser
of :math:`J` over row :math:`i` (a ridge regression),

.. math::
    \tilde{\mathbf{u}}_i^\star = (\sigma^2 \Lambda_i + G_i)^{-1}
    (\sigma^2 \Lambda_i \boldsymbol{\mu}_i + \mathbf{r}_i),
    \qquad \tilde{\mathbf{u}}_i \leftarrow \tilde{\mathbf{u}}_i
    + \alpha_{t,i} (\tilde{\mathbf{u}}_i^\star - \tilde{\mathbf{u}}_i),

a batched :math:`(K+1) \times (K+1)` Cholesky solve per row. The ``'gd'``
solver takes a gradient step scaled by each coordinate's curvature (which
grows with the row's degree, so that long rows do not diverge):

.. math::
    \tilde{\mathbf{u}}_i \leftarrow \tilde{\mathbf{u}}_i - \alpha_{t,i}
    \frac{\sigma^2 \Lambda_i (\tilde{\mathbf{u}}_i - \boldsymbol{\mu}_i)
    + G_i \tilde{\mathbf{u}}_i - \mathbf{r}_i}
    {\sigma^2 \boldsymbol{\lambda}_i + \operatorname{diag}(G_i)}.

Columns follow symmetrically, with :math:`[\mathbf{u}_i; 1]` and
:math:`z_{ij} - b_i`. The damping
:math:`\alpha_{t,i} = \operatorname{sigmoid}(a_t + d_t \log(1 + \deg i))`
is meta-learned per step and side and adapts to each node's degree, so that
sparse nodes may lean on the prior and dense ones on their data. For ALS any
:math:`\alpha \in (0, 1]` moves to a convex combination of the old value and
the block minimiser, so :math:`J` never increases.

**Kernels.** With the fast (``'sparse'``) backend of
:class:`~gnn_metamf.nn.ops.BipartiteOps`, :math:`G_i` is aggregated as its
upper triangle only (``packed=True``: :math:`(K+1)(K+2)/2` numbers per
entry instead of :math:`(K+1)^2`) and each ridge system is solved by
:func:`spd_solve`, whose backward pass is one more solve with the same
Cholesky factor. The reference backend (``'scatter'``) keeps the full
:math:`G_i` and differentiates through :func:`torch.linalg.cholesky_ex`
and :func:`torch.cholesky_solve`; both agree within float tolerance
(tested).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import Parameter
from torch.utils.checkpoint import checkpoint

from .ops import BipartiteOps

__all__ = [
    'MAPRefinement',
    'SOLVERS',
    'predict_entries',
    'map_objective',
    'design',
    'side_statistics',
    'packed_spd_solve',
    'packed_spd_inverse',
    'packed_index',
    'unpack_symmetric',
]

SOLVERS = ('als', 'gd')

Prior = tuple[Tensor, Tensor]  # (mean, precision), each (num_nodes, K + 1)


def predict_entries(P: Tensor, Q: Tensor, row: Tensor, col: Tensor) -> Tensor:
    r"""Normalised predictions :math:`\mathbf{u}_i^\top \mathbf{v}_j + b_i +
    c_j` at pairs ``(row, col)``, from augmented factors ``P`` (N, K + 1)
    and ``Q`` (M, K + 1). Returns shape ``(len(row),)``."""
    p, q = P.index_select(0, row), Q.index_select(0, col)  # (E, K + 1)
    return (p[:, :-1] * q[:, :-1]).sum(-1) + p[:, -1] + q[:, -1]


def map_objective(P: Tensor, Q: Tensor, z: Tensor, ops: BipartiteOps,
                  row_prior: Prior, col_prior: Prior,
                  noise_var: Tensor) -> Tensor:
    r"""The objective :math:`J` of each matrix, shape ``(B,)``."""
    err = z - predict_entries(P, Q, ops.row, ops.col)  # (E,)
    data = ops.graph_sum((err ** 2).unsqueeze(-1)).squeeze(-1)
    out = data / (2 * noise_var)
    for X, (mean, precision), batch in ((P, row_prior, ops.row_batch),
                                        (Q, col_prior, ops.col_batch)):
        node = 0.5 * (precision * (X - mean) ** 2).sum(-1)  # (nodes,)
        out = out.index_add(0, batch, node)
    return out


def design(X: Tensor) -> tuple[Tensor, Tensor]:
    r"""Splits augmented factors ``[x; bias]`` of the other side into the
    design ``[x; 1]`` and the bias column, each ``(nodes, K + 1)`` and
    ``(nodes, 1)``."""
    return torch.cat([X[:, :-1], torch.ones_like(X[:, -1:])], -1), X[:, -1:]


def side_statistics(other: Tensor, z: Optional[Tensor], aggregate: Callable,
                    packed: bool = False
                    ) -> tuple[Tensor, Optional[Tensor]]:
    r"""The Gram matrices :math:`G` (nodes, K + 1, K + 1) and right-hand
    sides :math:`\mathbf{r}` (nodes, K + 1) of one side given the other
    side's augmented factors ``other``. ``aggregate`` is
    :meth:`BipartiteOps.rows_from_cols` (for rows) or
    :meth:`BipartiteOps.cols_from_rows` (for columns). With ``packed``,
    :math:`G` is returned as its upper triangle, shape (nodes,
    (K + 1)(K + 2) / 2), in the order of :func:`packed_index`; without
    ``z`` the right-hand sides are skipped (``None``).
    """
    a, bias = design(other)  # (T, K + 1), (T, 1)
    k1 = a.size(1)
    outer = (a.unsqueeze(2) * a.unsqueeze(1)).reshape(-1, k1 * k1)
    if packed:  # Autograd keeps only `a` for this, not two (T, P) copies.
        i, j = packed_index(k1, a.device)[:2]
        outer = outer.index_select(1, i * k1 + j)  # (T, P)
    width = outer.size(1)
    if z is None:
        return _shape_gram(aggregate(outer), k1, packed), None
    # One pass over the entries for sum a a^T and sum a * bias together.
    agg = aggregate(torch.cat([outer, a * bias], dim=-1))  # (S, width + k1)
    gram = _shape_gram(agg[:, :width], k1, packed)
    rhs = aggregate(a, z) - agg[:, width:]  # (S, K + 1)
    return gram, rhs


def _shape_gram(flat: Tensor, k1: int, packed: bool) -> Tensor:
    return flat if packed else flat.reshape(-1, k1, k1)


_PACKED: dict = {}


def packed_index(n: int, device=None) -> tuple[Tensor, Tensor, Tensor,
                                                Tensor]:
    r"""Index maps of the packed upper triangle of symmetric ``n x n``
    matrices, ``P = n (n + 1) / 2`` numbers in row-major order: the row
    ``i`` and column ``j`` (``i <= j``) of each packed position, shape
    ``(P,)`` each; the packed position of each of the ``n * n`` entries,
    shape ``(n * n,)``; and the packed positions of the diagonal,
    shape ``(n,)``."""
    key = (n, str(device))
    if key not in _PACKED:
        i, j = torch.triu_indices(n, n, device=device)
        full = torch.empty(n, n, dtype=torch.long, device=device)
        pos = torch.arange(i.numel(), device=device)
        full[i, j] = pos
        full[j, i] = pos
        diag = full.diagonal()
        _PACKED[key] = (i, j, full.reshape(-1), diag.contiguous())
    return _PACKED[key]


def unpack_symmetric(packed: Tensor, n: int) -> Tensor:
    r"""Symmetric matrices ``(S, n, n)`` from their packed upper triangles
    ``(S, n (n + 1) / 2)``."""
    full = packed_index(n, packed.device)[2]
    return packed.index_select(1, full).reshape(-1, n, n)


def _cholesky(system: Tensor) -> Tensor:
    # The systems are positive definite by construction (a Gram matrix plus
    # a positive diagonal); a failure means non-finite inputs.
    chol, info = torch.linalg.cholesky_ex(system)
    if bool((info != 0).any()):
        _not_positive_definite(int((info != 0).sum()), system.size(0))
    return chol


def _not_positive_definite(bad: int, total: int):
    raise FloatingPointError(
        f'{bad} of {total} refinement systems are not positive '
        f'definite: the factors or priors are not finite (a diverged '
        f'model, e.g. a too large learning rate, or non-finite input)')


# ----------------------------------------------------------------------
# Packed Cholesky, vectorised across the systems.
#
# LAPACK factors a batch of small matrices one at a time, at about a
# microsecond each; with n = K + 1 around 17 and thousands of rows, the
# loops below are several times faster: they run the O(n^3) scalar
# recurrences once, each step on a slab that holds that number for every
# system of a block. A block of b symmetric matrices is stored as (P, b),
# P = n (n + 1) / 2: packed row i of the upper triangle (entries
# (i, i..n-1)) is column i of the lower one, and so holds column i of the
# Cholesky factor L after factorisation. On CPU the blocks are sized to
# stay in cache (the inverse, whose working set per system is n times
# larger, takes smaller ones; sizes measured on a 2 MiB L2), and below
# _LAPACK_BELOW systems, where the loops' fixed cost dominates, LAPACK is
# used after all; on a GPU one block holds every system.

_SYSTEMS_PER_BLOCK = 8192
_SYSTEMS_PER_INVERSE_BLOCK = 4096
_LAPACK_BELOW = 1024

Blocks = list[tuple[int, int, Tensor, Tensor]]  # (start, stop, L, 1/diag)


def _row_starts(n: int) -> list[int]:
    starts = [0]
    for i in range(n - 1):
        starts.append(starts[-1] + n - i)
    return starts


def _spans(num: int, device: torch.device,
           block: int) -> list[tuple[int, int]]:
    step = block if device.type == 'cpu' else max(num, 1)
    return [(s, min(s + step, num)) for s in range(0, num, step)]


def _factor(packed: Tensor, diag: Tensor,
            block: Optional[int] = None) -> Blocks:
    r"""Cholesky factors of the systems ``packed`` (S, P) (packed upper
    triangles, in the order of :func:`packed_index`) plus ``diag(diag)``
    (S, n), block by block.

    Raises:
        FloatingPointError: If a system is not positive definite.
    """
    n = diag.size(1)
    starts = _row_starts(n)
    on_diagonal = packed_index(n, packed.device)[3]  # (n,)
    blocks, bad = [], 0
    block = _SYSTEMS_PER_BLOCK if block is None else block
    for start, stop in _spans(packed.size(0), packed.device, block):
        L = packed[start:stop].t().contiguous()  # (P, b)
        L.index_add_(0, on_diagonal, diag[start:stop].t())
        inv = torch.empty_like(L[:n])  # (n, b)
        for j in range(n):  # Left-looking: column j from columns 0..j-1.
            col = L[starts[j]:starts[j] + n - j]  # (n - j, b): L[j:, j]
            for k in range(j):
                prev = L[starts[k] + j - k:starts[k] + n - k]  # L[j:, k]
                col.addcmul_(prev, prev[0], value=-1)
            col[0].sqrt_()
            torch.reciprocal(col[0], out=inv[j])
            col[1:] *= inv[j]
        # A non-positive pivot gave NaN (or 0, and inf) in its system only.
        bad += int((~torch.isfinite(inv).all(0)).sum())
        blocks.append((start, stop, L, inv))
    if bad:
        _not_positive_definite(bad, packed.size(0))
    return blocks


def _solve_block(L: Tensor, inv: Tensor, rhs: Tensor) -> Tensor:
    r"""Solves :math:`L L^\top x = b` for ``rhs`` (n, ..., b) given one
    block of factors; returns ``x`` like ``rhs``."""
    n = inv.size(0)
    starts = _row_starts(n)
    shape = (-1,) + (1,) * (rhs.dim() - 2) + (rhs.size(-1),)
    x = rhs.clone()
    for j in range(n):  # Forward: L y = b.
        x[j] *= inv[j].view(shape[1:])
        if j + 1 < n:
            below = L[starts[j] + 1:starts[j] + n - j].view(shape)
            x[j + 1:].addcmul_(below, x[j].unsqueeze(0), value=-1)
    for j in reversed(range(n)):  # Backward: L^T x = y.
        if j + 1 < n:
            below = L[starts[j] + 1:starts[j] + n - j].view(shape)
            x[j] -= (below * x[j + 1:]).sum(0)
        x[j] *= inv[j].view(shape[1:])
    return x


def _solve(blocks: Blocks, rhs: Tensor) -> Tensor:
    r"""Solves every system for ``rhs`` (S, n); returns (S, n)."""
    out = torch.empty_like(rhs)
    for start, stop, L, inv in blocks:
        out[start:stop] = _solve_block(L, inv,
                                       rhs[start:stop].t().contiguous()).t()
    return out


def _use_lapack(packed: Tensor) -> bool:
    return packed.device.type == 'cpu' and packed.size(0) < _LAPACK_BELOW


def _lapack_factor(packed: Tensor, diag: Tensor) -> Tensor:
    system = unpack_symmetric(packed, diag.size(1))  # (S, n, n)
    system.diagonal(dim1=-2, dim2=-1).add_(diag)
    return _cholesky(system)


class _PackedSPDSolve(torch.autograd.Function):
    r"""``x = (A + diag(d))^{-1} b`` for packed symmetric ``A``. The
    backward pass is one more solve with the same factor:
    :math:`\bar b = (A + D)^{-1}\bar x` and :math:`-\bar b x^\top`,
    packed, for the matrix."""
    @staticmethod
    def forward(ctx, packed: Tensor, diag: Tensor, rhs: Tensor) -> Tensor:
        if _use_lapack(packed):
            chol = _lapack_factor(packed, diag)  # (S, n, n)
            x = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
            ctx.spans = None
            ctx.save_for_backward(x, chol)
            return x
        blocks = _factor(packed, diag)
        x = _solve(blocks, rhs)  # (S, n)
        ctx.spans = [(start, stop) for start, stop, _, _ in blocks]
        ctx.save_for_backward(x, *(t for _, _, L, inv in blocks
                                   for t in (L, inv)))
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, *factors = ctx.saved_tensors
        if ctx.spans is None:
            grad_rhs = torch.cholesky_solve(grad.unsqueeze(-1),
                                            factors[0]).squeeze(-1)
        else:
            blocks = [(start, stop, factors[2 * k], factors[2 * k + 1])
                      for k, (start, stop) in enumerate(ctx.spans)]
            grad_rhs = _solve(blocks, grad.contiguous())  # (S, n)
        grad_packed = grad_diag = None
        if ctx.needs_input_grad[0]:
            i, j = packed_index(x.size(1), x.device)[:2]
            # Entry (i, j) stands for both (i, j) and (j, i) of the matrix,
            # a diagonal entry for itself only.
            half = torch.where(i == j, -0.5, -1.0).to(x.dtype)  # (P,)
            grad_packed = (grad_rhs.index_select(1, i) * x.index_select(1, j)
                           + grad_rhs.index_select(1, j) *
                           x.index_select(1, i)) * half  # (S, P)
        if ctx.needs_input_grad[1]:
            grad_diag = -(grad_rhs * x)
        return grad_packed, grad_diag, grad_rhs


def packed_spd_solve(packed: Tensor, diag: Tensor, rhs: Tensor) -> Tensor:
    r"""Solves :math:`(A_s + \operatorname{diag}(\mathbf{d}_s))\,
    \mathbf{x}_s = \mathbf{b}_s` for every ``s``, where ``A_s`` is
    symmetric and given by its packed upper triangle (``packed`` (S, P), in
    the order of :func:`packed_index`), ``diag`` (S, n) and ``rhs``
    (S, n), by a Cholesky factorisation vectorised across the systems.
    Differentiable in all three inputs; the backward pass costs one solve.
    Returns ``x`` (S, n).

    Raises:
        FloatingPointError: If a system is not positive definite.
    """
    return _PackedSPDSolve.apply(packed, diag, rhs)


def packed_spd_inverse(packed: Tensor, diag: Tensor) -> Tensor:
    r"""The inverses of :math:`A_s + \operatorname{diag}(\mathbf{d}_s)`
    (as :func:`packed_spd_solve`), packed the same way: (S, P). Without
    gradients."""
    n = diag.size(1)
    i, j = packed_index(n, packed.device)[:2]
    starts = _row_starts(n)
    with torch.no_grad():
        if _use_lapack(packed):
            cov = torch.cholesky_inverse(_lapack_factor(packed, diag))
            return cov.reshape(-1, n * n).index_select(1, i * n + j)
        out = packed.new_empty(packed.shape)
        for start, stop, L, inv in _factor(packed, diag,
                                           _SYSTEMS_PER_INVERSE_BLOCK):
            # Forward substitution on the identity: row j of L^{-1} is
            # zero right of column j, so only columns <= j are updated.
            x = torch.eye(n, dtype=L.dtype, device=L.device).unsqueeze(
                -1).repeat(1, 1, stop - start)  # (n, n, b)
            for c in range(n):
                x[c, :c + 1] *= inv[c]
                if c + 1 < n:
                    below = L[starts[c] + 1:starts[c] + n - c].unsqueeze(1)
                    x[c + 1:, :c + 1].addcmul_(below, x[c, :c + 1],
                                               value=-1)
            for c in reversed(range(n)):  # Then L^{-T}, all columns.
                if c + 1 < n:
                    below = L[starts[c] + 1:starts[c] + n - c].unsqueeze(1)
                    x[c] -= (below * x[c + 1:]).sum(0)
                x[c] *= inv[c]
            out[start:stop] = x.reshape(n * n, -1).index_select(
                0, i * n + j).t()  # (b, P)
        return out


class MAPRefinement(torch.nn.Module):
    r"""Unrolled MAP refinement of row and column factors (see the module
    docstring for the objective and the steps).

    Args:
        num_steps (int): Steps ``T``, each updating rows then columns.
            (default: :obj:`3`)
        solver (str): ``'als'`` (exact per-node solves) or ``'gd'``
            (curvature-scaled gradient steps). (default: :obj:`'als'`)
        first_order (bool): Stop gradients through the other side's factors
            in each step, so that the meta-gradient reaches the priors only
            through their direct use (cheaper, approximate).
            (default: :obj:`False`)
        checkpoint_steps (bool): Recompute each step in the backward pass
            instead of storing its intermediates, so that memory does not
            grow with ``num_steps``. (default: :obj:`False`)
        init_noise_var (float): Initial :math:`\sigma^2` (normalised units).
            (default: :obj:`0.5`)
        init_damping (float, optional): Initial :math:`\alpha`; defaults to
            0.95 for ALS and 0.5 for gradient steps. (default: :obj:`None`)

    Shapes:
        - **input:** normalised values :math:`(E,)`, :class:`BipartiteOps`,
          row prior (mean, precision) :math:`(N, K+1)` each, column prior
          :math:`(M, K+1)` each
        - **output:** augmented factors ``P`` :math:`(N, K+1)` and ``Q``
          :math:`(M, K+1)`
    """
    def __init__(self, num_steps: int = 3, solver: str = 'als',
                 first_order: bool = False, checkpoint_steps: bool = False,
                 init_noise_var: float = 0.5,
                 init_damping: Optional[float] = None):
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"'solver' must be one of {SOLVERS}, got "
                             f"{solver!r}")
        if num_steps < 0:
            raise ValueError(f"'num_steps' must be >= 0, got {num_steps}")
        self.num_steps = num_steps
        self.solver = solver
        self.first_order = first_order
        self.checkpoint_steps = checkpoint_steps
        if init_damping is None:
            init_damping = 0.95 if solver == 'als' else 0.5
        self._init = (init_noise_var, init_damping)
        steps = max(num_steps, 1)
        self.log_noise_var = Parameter(torch.empty(()))
        self.damping_bias = Parameter(torch.empty(steps, 2))
        self.damping_degree = Parameter(torch.empty(steps, 2))
        self.reset_parameters()

    def reset_parameters(self):
        noise_var, damping = self._init
        with torch.no_grad():
            self.log_noise_var.fill_(math.log(noise_var))
            self.damping_bias.fill_(math.log(damping / (1 - damping)))
            self.damping_degree.zero_()

    @property
    def noise_var(self) -> Tensor:
        return self.log_noise_var.exp()

    def damping(self, step: int, side: int, degree: Tensor) -> Tensor:
        r""":math:`\alpha_{t,i}` of every node of one side, shape
        ``(nodes, 1)``; steps beyond the trained ones reuse the last."""
        t = min(step, self.damping_bias.size(0) - 1)
        logit = (self.damping_bias[t, side] +
                 self.damping_degree[t, side] * torch.log1p(degree))
        return torch.sigmoid(logit).unsqueeze(-1)

    def forward(self, z: Tensor, ops: BipartiteOps, row_prior: Prior,
                col_prior: Prior,
                num_steps: Optional[int] = None,
                start: Optional[tuple[Tensor, Tensor]] = None,
                return_col_gram: bool = False,
                ) -> tuple[Tensor, ...]:
        r"""Runs the steps from the prior means (or from ``start``).

        With ``return_col_gram``, also returns the column Gram matrices
        :math:`G_j` of the last step, which were aggregated from the final
        row factors and so are the ones
        :meth:`posterior_covariance` needs (``col_gram=``): packed (M, P)
        with the fast backend, (M, K+1, K+1) with the reference one, and
        ``None`` after zero steps."""
        num_steps = self.num_steps if num_steps is None else num_steps
        # Start at the prior means unless told otherwise.
        P, Q = start if start is not None else (row_prior[0], col_prior[0])
        col_gram = None
        for t in range(num_steps):
            if self.checkpoint_steps and torch.is_grad_enabled():
                P, Q, col_gram = checkpoint(
                    self._step, t, P, Q, z, ops, row_prior, col_prior,
                    use_reentrant=False)
            else:
                P, Q, col_gram = self._step(t, P, Q, z, ops, row_prior,
                                            col_prior)
        if return_col_gram:
            return P, Q, col_gram
        return P, Q

    def _step(self, t: int, P: Tensor, Q: Tensor, z: Tensor,
              ops: BipartiteOps, row_prior: Prior,
              col_prior: Prior) -> tuple[Tensor, Tensor, Tensor]:
        fixed = Q.detach() if self.first_order else Q
        P_next, _ = self._update(P, fixed, z, ops.rows_from_cols, row_prior,
                                 self.damping(t, 0, ops.row_degree),
                                 ops.reference)
        fixed = P_next.detach() if self.first_order else P_next
        Q_next, col_gram = self._update(Q, fixed, z, ops.cols_from_rows,
                                        col_prior,
                                        self.damping(t, 1, ops.col_degree),
                                        ops.reference)
        return P_next, Q_next, col_gram

    def _update(self, X: Tensor, other: Tensor, z: Tensor,
                aggregate: Callable, prior: Prior, alpha: Tensor,
                reference: bool) -> tuple[Tensor, Tensor]:
        mean, precision = prior  # (S, K + 1) each
        k1 = X.size(1)
        gram, rhs = side_statistics(other, z, aggregate,
                                    packed=not reference)
        ridge = self.noise_var * precision  # (S, K + 1): sigma^2 lambda
        if self.solver == 'als' and not reference:
            # (sigma^2 Lambda + G)^{-1} (sigma^2 Lambda mu + r), G packed.
            step = packed_spd_solve(gram, ridge, ridge * mean + rhs) - X
        elif self.solver == 'als':
            system = gram + torch.diag_embed(ridge)  # (S, K+1, K+1)
            target = (ridge * mean + rhs).unsqueeze(-1)  # (S, K + 1, 1)
            step = torch.cholesky_solve(target, _cholesky(system))
            step = step.squeeze(-1) - X
        else:
            full = gram if reference else unpack_symmetric(gram, k1)
            grad = (ridge * (X - mean) +
                    (full @ X.unsqueeze(-1)).squeeze(-1) - rhs)
            curvature = ridge + torch.diagonal(full, dim1=-2, dim2=-1)
            step = -grad / curvature
        # A new tensor (no in-place), and G as aggregated.
        return X + alpha * step, gram

    def posterior_covariance(self, P: Tensor, Q: Tensor, z: Tensor,
                             ops: BipartiteOps, row_prior: Prior,
                             col_prior: Prior, packed: bool = False,
                             col_gram: Optional[Tensor] = None,
                             rows: Optional[Tensor] = None,
                             cols: Optional[Tensor] = None,
                             ) -> tuple[Tensor, Tensor]:
        r"""Laplace approximation around the refined factors: for each row
        the inverse of the Hessian of :math:`J` in
        :math:`\tilde{\mathbf{u}}_i` with the columns fixed,
        :math:`(\Lambda_i + G_i / \sigma^2)^{-1}`, and likewise per column.
        Shapes ``(N, K+1, K+1)`` and ``(M, K+1, K+1)``, or with ``packed``
        their upper triangles ``(N, P)`` and ``(M, P)`` in the order of
        :func:`packed_index`.

        Args:
            col_gram (torch.Tensor, optional): The column Gram matrices of
                the final row factors, as :meth:`forward` returns them with
                ``return_col_gram``, which saves aggregating them again.
            rows (torch.Tensor, optional): Ids of the only rows whose
                covariances are wanted, ``(R,)``; the row output then has
                ``R`` entries in that order. (default: all rows)
            cols (torch.Tensor, optional): The same for columns.
        """
        k1 = P.size(1)
        upper = packed_index(k1, P.device)
        out = []
        for other, aggregate, (_, precision), gram, subset in (
                (Q, ops.rows_from_cols, row_prior, None, rows),
                (P, ops.cols_from_rows, col_prior, col_gram, cols)):
            if gram is None:  # With the fast backend, G's upper triangle.
                gram, _ = side_statistics(other, None, aggregate,
                                          not ops.reference)
            gram = gram.detach()
            if subset is not None:
                gram = gram.index_select(0, subset)
                precision = precision.index_select(0, subset)
            if ops.reference:
                hessian = gram / self.noise_var + torch.diag_embed(precision)
                cov = torch.cholesky_inverse(_cholesky(hessian))
                if packed:  # (S, K+1, K+1) -> (S, P)
                    cov = cov.reshape(-1, k1 * k1).index_select(
                        1, upper[0] * k1 + upper[1])
            else:
                cov = packed_spd_inverse(gram / self.noise_var, precision)
                if not packed:
                    cov = unpack_symmetric(cov, k1)
            out.append(cov)
        return out[0], out[1]

    def extra_repr(self) -> str:
        return (f'num_steps={self.num_steps}, solver={self.solver!r}, '
                f'first_order={self.first_order}, '
                f'checkpoint_steps={self.checkpoint_steps}')
