"""MetaMF: encoder, Gaussian priors and MAP refinement in one module."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch.profiler import record_function

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .encoder import Encoder
from .normalize import MatrixScale
from .ops import BipartiteOps, PairDot
from .prior import GaussianPriorHead
from .refine import (
    MAPRefinement,
    Prior,
    design,
    packed_index,
    predict_entries,
)

__all__ = ['MetaMF', 'Factorization', 'PRIORS']

#: Where the priors come from: the encoder, or one fixed learned prior.
PRIORS = ('encoder', 'fixed')


@dataclass
class Factorization:
    r"""The adapted factors of a batch of matrices and what is needed to
    predict from them.

    ``P`` (N, K + 1) holds :math:`[\mathbf{u}_i; b_i]` per row and ``Q``
    (M, K + 1) :math:`[\mathbf{v}_j; c_j]` per column, in the normalised
    scale of :class:`~gnn_metamf.nn.normalize.MatrixScale`. ``z`` (E,) are
    the normalised observed values in the entry order of ``ops``, which
    for large matrices without autograd is a cache-friendly reordering of
    the graph's (:meth:`BipartiteOps.in_cache_order`).
    """
    P: Tensor
    Q: Tensor
    row_prior: Prior
    col_prior: Prior
    z: Tensor
    ops: BipartiteOps
    scale: MatrixScale
    #: Column Gram matrices of the last refinement step (detached), which
    #: the Laplace covariances reuse; ``None`` after zero steps.
    col_gram: Optional[Tensor] = None

    @property
    def U(self) -> Tensor:
        r"""Row factors, shape ``(N, K)``."""
        return self.P[:, :-1]

    @property
    def V(self) -> Tensor:
        r"""Column factors, shape ``(M, K)``."""
        return self.Q[:, :-1]

    @property
    def row_bias(self) -> Tensor:
        return self.P[:, -1]

    @property
    def col_bias(self) -> Tensor:
        return self.Q[:, -1]

    def predict_normalized(self, index: Tensor) -> Tensor:
        r"""Normalised predictions at ``index`` (2, Q); shape ``(Q,)``."""
        return predict_entries(self.P, self.Q, index[0], index[1])


class MetaMF(torch.nn.Module):
    r"""Meta-learned matrix factorization for matrices that share no rows or
    columns with the training matrices (Iwata, arXiv 2106.15133), on
    bipartite graphs.

    For each matrix of a batch, the observed values are standardised
    (:class:`~gnn_metamf.nn.normalize.MatrixScale`); an
    :class:`~gnn_metamf.nn.encoder.Encoder` of row-column message layers
    describes every row, column and matrix; two
    :class:`~gnn_metamf.nn.prior.GaussianPriorHead` turn these into a
    Gaussian prior over each row's and column's factor and bias; and a
    :class:`~gnn_metamf.nn.refine.MAPRefinement` adapts the factors to the
    observed entries in a few closed-form steps. Predictions
    :math:`m_b + s_b(\mathbf{u}_i^\top\mathbf{v}_j + b_i + c_j)` return to
    each matrix's own scale.

    The predictive standard deviation of an entry combines a Laplace
    approximation of the factors' posterior (treating rows and columns as
    independent) with a noise term,

    .. math::
        \operatorname{Var}[\hat z_{ij}] \approx \sigma^2_{\mathrm{obs}}
        + \kappa\,(\mathbf{a}_j^\top \Sigma^u_i \mathbf{a}_j
        + \mathbf{a}_i^\top \Sigma^v_j \mathbf{a}_i),

    where :math:`\sigma^2_{\mathrm{obs}}` and :math:`\kappa` are calibrated
    by the Gaussian negative log-likelihood of the query entries during
    meta-training, on detached means, so that calibration never changes the
    predictions themselves.

    Args:
        rank (int): Latent dimension ``K``. (default: :obj:`16`)
        hidden_channels (int): Width of the encoder and prior heads.
            (default: :obj:`64`)
        num_layers (int): Encoder layers. (default: :obj:`4`)
        layer (str, type or list): Encoder layer(s), see
            :class:`~gnn_metamf.nn.encoder.Encoder`.
            (default: :obj:`'exchangeable'`)
        num_steps (int): Refinement steps; 0 predicts from the prior means.
            (default: :obj:`3`)
        solver (str): ``'als'`` or ``'gd'``. (default: :obj:`'als'`)
        first_order (bool): First-order meta-gradient.
            (default: :obj:`False`)
        checkpoint_steps (bool): Gradient checkpointing of the steps.
            (default: :obj:`False`)
        backend (str): ``'sparse'`` (CSR products) or ``'scatter'``.
            (default: :obj:`'sparse'`)
        clip (bool): Clip predictions to the range of each matrix's observed
            values. (default: :obj:`True`)
        prior (str): ``'encoder'``, or ``'fixed'`` for the ablation without
            encoder: every factor gets the zero-mean prior
            :math:`\mathcal{N}(0, \operatorname{diag}(\lambda)^{-1})` with a
            meta-learned :math:`\lambda`, and the refinement starts from a
            fixed pseudo-random point of meta-learned scale (a zero start
            would never leave the symmetric saddle point). This start
            depends on the row's position in its matrix, so this ablation
            is not permutation-equivariant. (default: :obj:`'encoder'`)
    """
    def __init__(
        self,
        rank: int = 16,
        hidden_channels: int = 64,
        num_layers: int = 4,
        layer: Any = 'exchangeable',
        num_steps: int = 3,
        solver: str = 'als',
        first_order: bool = False,
        checkpoint_steps: bool = False,
        backend: str = 'sparse',
        clip: bool = True,
        prior: str = 'encoder',
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"'rank' must be >= 1, got {rank}")
        if prior not in PRIORS:
            raise ValueError(f"'prior' must be one of {PRIORS}, got "
                             f"{prior!r}")
        self.config = dict(rank=rank, hidden_channels=hidden_channels,
                           num_layers=num_layers, layer=layer,
                           num_steps=num_steps, solver=solver,
                           first_order=first_order,
                           checkpoint_steps=checkpoint_steps,
                           backend=backend, clip=clip, prior=prior)
        self.rank = rank
        self.backend = backend
        self.clip = clip
        self.prior = prior
        if prior == 'encoder':
            self.encoder = Encoder(hidden_channels, num_layers, layer)
            node = self.encoder.node_channels
            graph = self.encoder.graph_channels
            self.row_prior = GaussianPriorHead(node, graph, rank,
                                               hidden_channels)
            self.col_prior = GaussianPriorHead(node, graph, rank,
                                               hidden_channels)
        else:
            # softplus(0.5413) = 1: unit precision at initialisation.
            self.fixed_precision = Parameter(torch.full((2, rank + 1),
                                                        0.5413))
            self.log_start_scale = Parameter(torch.tensor(math.log(0.1)))
        self.refine = MAPRefinement(num_steps, solver, first_order,
                                    checkpoint_steps)
        self.log_obs_var = Parameter(torch.tensor(math.log(0.5)))
        self.log_kappa = Parameter(torch.tensor(0.0))

    def reset_parameters(self):
        if self.prior == 'encoder':
            self.encoder.reset_parameters()
            self.row_prior.reset_parameters()
            self.col_prior.reset_parameters()
        else:
            with torch.no_grad():
                self.fixed_precision.fill_(0.5413)
                self.log_start_scale.fill_(math.log(0.1))
        self.refine.reset_parameters()
        with torch.no_grad():
            self.log_obs_var.fill_(math.log(0.5))
            self.log_kappa.zero_()

    def save(self, path, **extra: Any):
        r"""Writes the configuration and weights to ``path`` atomically
        (see :mod:`gnn_metamf.checkpoint`); ``extra`` entries are stored
        beside them. Returns the path."""
        layers = self.config['layer']
        names = layers if isinstance(layers, (list, tuple)) else [layers]
        if not all(isinstance(name, str) for name in names):
            raise ValueError(f'only models built from registered layer '
                             f'names can be saved, got layer={layers!r}; '
                             f'register the class with register_layer')
        return save_checkpoint({'model_config': dict(self.config),
                                'model_state': self.state_dict(), **extra},
                               path)

    @classmethod
    def load(cls, path, map_location: Any = 'cpu') -> MetaMF:
        r"""A model from a checkpoint written by :meth:`save` or by
        meta-training, in evaluation mode and ready to :meth:`impute`.

        Raises:
            CheckpointError: If the file is missing, corrupt, unsafe or
                does not hold a compatible model.
        """
        payload = load_checkpoint(path, map_location)
        try:
            model = cls(**payload['model_config'])
            model.load_state_dict(payload['model_state'])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f'{path} holds no compatible MetaMF '
                                  f'model: {error}') from error
        return model.eval()

    def forward(self, graph, num_steps: Optional[int] = None) -> Factorization:
        r"""Adapts factors to the observed entries of ``graph`` (a
        :class:`~gnn_metamf.MatrixGraph` or a batch of them).

        Args:
            graph: Observed entries ``edge_index`` (2, E), ``edge_value``
                (E,).
            num_steps (int, optional): Overrides the number of refinement
                steps. (default: :obj:`None`)
        """
        # The record_function ranges name the stages in a torch.profiler
        # trace (scripts/bench_adapt.py times them); free otherwise.
        with record_function('metamf.index'):
            ops = BipartiteOps.from_graph(graph, self.backend)
            value = graph.edge_value
            if not torch.is_grad_enabled():
                # Large matrices: entries in an order that keeps the node
                # states each pass touches in cache (the order of the
                # entries does not change the result).
                ops, perm = ops.in_cache_order(self._node_bytes())
                if perm is not None:
                    value = value.index_select(0, perm)
        with record_function('metamf.normalize'):
            value = value.to(self.log_kappa.dtype)
            scale = MatrixScale.fit(value, ops)
            z = scale.normalize(value, ops.edge_batch)  # (E,)
        start = None
        if self.prior == 'encoder':
            with record_function('metamf.encoder'):
                h_row, h_col, h_graph = self.encoder(z, ops)
            with record_function('metamf.priors'):
                row_prior = self.row_prior(h_row, h_graph, ops.row_batch)
                col_prior = self.col_prior(h_col, h_graph, ops.col_batch)
        else:
            with record_function('metamf.priors'):
                row_prior, col_prior, start = self._fixed_prior(ops,
                                                                z.dtype)
        with record_function('metamf.refine'):
            P, Q, col_gram = self.refine(z, ops, row_prior, col_prior,
                                         num_steps, start,
                                         return_col_gram=True)
        if col_gram is not None:
            col_gram = col_gram.detach()
        return Factorization(P, Q, row_prior, col_prior, z, ops, scale,
                             col_gram)

    def _node_bytes(self) -> int:
        r"""Bytes of the widest state per row or column that a pass over
        the entries gathers or sums: the encoder's hidden states."""
        width = (self.encoder.hidden_channels if self.prior == 'encoder'
                 else self.rank + 1)
        return width * self.log_kappa.element_size()

    def _fixed_prior(self, ops: BipartiteOps, dtype: torch.dtype):
        precision = F.softplus(self.fixed_precision).to(dtype) + 1e-3
        scale = self.log_start_scale.exp().to(dtype)
        priors, starts = [], []
        for side, (batch, count) in enumerate((
                (ops.row_batch, ops.rows_per_graph),
                (ops.col_batch, ops.cols_per_graph))):
            num = batch.numel()
            mean = precision.new_zeros(num, self.rank + 1)
            priors.append((mean, precision[side].expand(num, -1)))
            offset = torch.cumsum(count, 0) - count  # (B,)
            local = torch.arange(num, device=batch.device) - offset[batch]
            start = _pseudo_normal(local, self.rank + 1, side).to(dtype)
            start = torch.cat([start[:, :-1], start.new_zeros(num, 1)], -1)
            starts.append(scale * start)
        return priors[0], priors[1], (starts[0], starts[1])

    def predictive_variance(self, fact: Factorization, index: Tensor,
                            cov: Optional[tuple[Tensor, Tensor]] = None
                            ) -> Tensor:
        r"""Normalised predictive variance at ``index`` (2, Q); shape
        ``(Q,)``. Gradients reach only the calibration parameters.
        ``cov`` are the Laplace covariances when already computed, as
        :meth:`MAPRefinement.posterior_covariance` returns them (packed
        with the fast backend)."""
        with torch.no_grad():
            fast = not fact.ops.reference
            if cov is None:
                cov = self.covariances(fact, index)
            if fast:
                pairs = PairDot(index, fact.P.size(0), fact.Q.size(0))
                param_var = pairs(*_variance_features(fact, cov))  # (Q,)
            else:
                a_col = design(fact.Q)[0][index[1]]  # (Q, K + 1)
                a_row = design(fact.P)[0][index[0]]  # (Q, K + 1)
                param_var = (_quad(cov[0][index[0]], a_col) +
                             _quad(cov[1][index[1]], a_row))  # (Q,)
        return self._calibrate(param_var)

    @torch.no_grad()
    def covariances(self, fact: Factorization,
                    index: Optional[Tensor] = None
                    ) -> tuple[Tensor, Tensor]:
        r"""Laplace covariances of the refined row and column factors (see
        :meth:`MAPRefinement.posterior_covariance`), packed ``(N, P)`` and
        ``(M, P)`` with the fast backend, ``(N, K+1, K+1)`` and
        ``(M, K+1, K+1)`` with the reference one. With ``index`` (2, Q),
        only the rows and columns of those pairs get theirs; the others are
        left at zero (a saving when the queries touch few of them)."""
        rows = cols = None
        if index is not None:
            rows = _touched(index[0], fact.P.size(0))
            cols = _touched(index[1], fact.Q.size(0))
        cov = self.refine.posterior_covariance(
            fact.P, fact.Q, fact.z, fact.ops, fact.row_prior,
            fact.col_prior, packed=not fact.ops.reference,
            col_gram=fact.col_gram, rows=rows, cols=cols)
        return (_spread(cov[0], rows, fact.P.size(0)),
                _spread(cov[1], cols, fact.Q.size(0)))

    def _calibrate(self, param_var: Tensor) -> Tensor:
        return self.log_obs_var.exp() + self.log_kappa.exp() * param_var

    def predict(self, graph, index: Optional[Tensor] = None,
                num_steps: Optional[int] = None,
                return_std: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        r"""Predictions, in each matrix's original scale, at ``index``
        (2, Q) (default: ``graph.edge_label_index``). Returns the means and
        standard deviations, each of shape ``(Q,)`` (``None`` for the
        deviations when ``return_std`` is false)."""
        index = _query_index(graph, index)
        fact = self(graph, num_steps)
        batch = fact.ops.row_batch.index_select(0, index[0])  # (Q,)
        z_hat = fact.predict_normalized(index)
        mean = fact.scale.denormalize(z_hat, batch, clip=self.clip)
        if not return_std:
            return mean, None
        var = self.predictive_variance(fact, index)
        return mean, var.sqrt() * fact.scale.scale.index_select(0, batch)

    def loss(self, graph, num_steps: Optional[int] = None
             ) -> tuple[Tensor, dict[str, float]]:
        r"""Meta-training loss on the query entries ``edge_label_index`` /
        ``edge_label``: their mean squared error in normalised units plus
        the Gaussian negative log-likelihood that calibrates the predictive
        variance. Returns the loss and a dictionary of float statistics
        (``mse`` normalised, ``nll``, ``rmse`` in original units)."""
        index = _query_index(graph, None)
        if graph.get('edge_label') is None:
            raise ValueError("the graph has no 'edge_label': the loss needs "
                             "the true values of the query entries")
        fact = self(graph, num_steps)
        batch = fact.ops.row_batch.index_select(0, index[0])  # (Q,)
        target = fact.scale.normalize(
            graph.edge_label.to(fact.z.dtype), batch)  # (Q,)
        z_hat = fact.predict_normalized(index)
        mse = ((z_hat - target) ** 2).mean()
        var = self.predictive_variance(fact, index)
        nll = 0.5 * (torch.log(2 * math.pi * var) +
                     (z_hat.detach() - target) ** 2 / var).mean()
        with torch.no_grad():
            raw = fact.scale.denormalize(z_hat, batch) - graph.edge_label
            rmse = raw.pow(2).mean().sqrt()
        stats = dict(mse=mse.item(), nll=nll.item(), rmse=rmse.item())
        return mse + nll, stats

    @torch.no_grad()
    def impute(self, graph, query_index: Tensor,
               num_steps: Optional[int] = None,
               chunk_size: int = 1 << 18) -> tuple[Tensor, Tensor]:
        r"""Imputes entries of one matrix (or a batch) without gradients.

        Args:
            graph (MatrixGraph): The observed entries.
            query_index (torch.Tensor): Pairs to predict, shape ``(2, Q)``.
            num_steps (int, optional): Overrides the refinement steps.
            chunk_size (int): Query pairs handled at once, which bounds the
                memory of the uncertainty computation.
                (default: :obj:`262144`)

        Returns:
            (torch.Tensor, torch.Tensor): Means and standard deviations in
            the matrix's original scale, each of shape ``(Q,)``.
        """
        query_index = _check_query(graph, query_index)
        was_training = self.training
        self.eval()
        try:
            fact = self(graph, num_steps)
            fast = not fact.ops.reference
            with record_function('metamf.covariance'):
                cov = self.covariances(fact, query_index)
            with record_function('metamf.predict'):
                # Fast path: per-row and per-column features whose dot
                # products at the query pairs are the means and variances.
                features = ((_mean_features(fact),
                             _variance_features(fact, cov)) if fast
                            else None)
                means, stds = [], []
                for start in range(0, query_index.size(1), chunk_size):
                    index = query_index[:, start:start + chunk_size]
                    mean, std = self._predict_chunk(fact, cov, index,
                                                    features)
                    means.append(mean)
                    stds.append(std)
        finally:
            self.train(was_training)
        if not means:
            empty = fact.z.new_zeros(0)
            return empty, empty.clone()
        return torch.cat(means), torch.cat(stds)

    def _predict_chunk(self, fact: Factorization,
                       cov: tuple[Tensor, Tensor], index: Tensor,
                       features: Optional[tuple] = None
                       ) -> tuple[Tensor, Tensor]:
        batch = fact.ops.row_batch.index_select(0, index[0])  # (q,)
        if features is None:
            z_hat = fact.predict_normalized(index)
            var = self.predictive_variance(fact, index, cov)
        else:
            pairs = PairDot(index, fact.P.size(0), fact.Q.size(0))
            z_hat = pairs(*features[0])  # (q,)
            var = self._calibrate(pairs(*features[1]))
        mean = fact.scale.denormalize(z_hat, batch, clip=self.clip)
        return mean, var.sqrt() * fact.scale.scale.index_select(0, batch)


def _pseudo_normal(position: Tensor, dim: int, salt: int) -> Tensor:
    r"""Fixed pseudo-random values of unit variance, shape
    ``(len(position), dim)``, that depend only on each node's position in
    its matrix (so a matrix gets the same start alone or in a batch)."""
    k = torch.arange(dim, device=position.device, dtype=torch.float64)
    x = (position.to(torch.float64).unsqueeze(-1) * 12.9898 +
         k * 78.233 + salt * 37.719)
    uniform = torch.frac(torch.sin(x) * 43758.5453).abs()  # [0, 1)
    return (uniform - 0.5) * math.sqrt(12.0)


def _mean_features(fact: Factorization) -> tuple[Tensor, Tensor]:
    r"""``[u_i; b_i; 1]`` (N, K + 2) and ``[v_j; 1; c_j]`` (M, K + 2),
    whose dot product is the normalised prediction of entry (i, j)."""
    P, Q = fact.P, fact.Q
    return (torch.cat([P, P.new_ones(P.size(0), 1)], -1),
            torch.cat([Q[:, :-1], Q.new_ones(Q.size(0), 1), Q[:, -1:]], -1))


def _variance_features(fact: Factorization,
                       cov: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    r"""Row features (N, 2P) and column features (M, 2P) whose dot
    product is :math:`a_j^\top\Sigma^u_i a_j + a_i^\top\Sigma^v_j a_i`,
    from the packed covariances ``cov`` ((N, P), (M, P)): a quadratic form
    is the dot product of the packed matrix, off-diagonal terms counted
    twice, with the packed outer product :math:`a a^\top`."""
    k1 = fact.P.size(1)
    i, j = packed_index(k1, fact.P.device)[:2]
    num = i.numel()
    twice = torch.where(i == j, 1.0, 2.0).to(fact.P.dtype)  # (P,)
    out = []
    # Written into one buffer per side: no (nodes, 2P) concatenation.
    for X, c, (at_cov, at_outer) in ((fact.P, cov[0], (0, num)),
                                     (fact.Q, cov[1], (num, 0))):
        a = design(X)[0]  # (nodes, K + 1)
        feat = X.new_empty(X.size(0), 2 * num)
        torch.mul(c, twice, out=feat[:, at_cov:at_cov + num])
        torch.mul(a.index_select(1, i), a.index_select(1, j),
                  out=feat[:, at_outer:at_outer + num])
        out.append(feat)
    return out[0], out[1]


def _touched(ids: Tensor, num: int) -> Optional[Tensor]:
    r"""The sorted distinct values of ``ids`` (< ``num``), or ``None`` when
    that is every one of ``0 .. num - 1``."""
    mask = torch.zeros(num, dtype=torch.bool, device=ids.device)
    mask[ids] = True
    found = mask.nonzero().squeeze(1)
    return None if found.numel() == num else found


def _spread(values: Tensor, ids: Optional[Tensor], num: int) -> Tensor:
    r"""``values`` of the nodes ``ids`` placed in a zero tensor of ``num``
    nodes (``values`` itself when ``ids`` is ``None``)."""
    if ids is None:
        return values
    out = values.new_zeros((num,) + values.shape[1:])
    return out.index_copy_(0, ids, values)


def _quad(cov: Tensor, a: Tensor) -> Tensor:
    r""":math:`\mathbf{a}^\top \Sigma \mathbf{a}` per row: ``(Q, D, D)``,
    ``(Q, D)`` to ``(Q,)``."""
    return torch.einsum('qd,qde,qe->q', a, cov, a)


def _query_index(graph, index: Optional[Tensor]) -> Tensor:
    if index is None:
        index = graph.get('edge_label_index')
        if index is None:
            raise ValueError("no query: pass 'index' or give the graph an "
                             "'edge_label_index'")
    return _check_query(graph, index)


def _check_query(graph, index: Tensor) -> Tensor:
    if not isinstance(index, Tensor):
        index = torch.as_tensor(index)
    if index.dim() != 2 or index.size(0) != 2:
        raise ValueError(f'query index must have shape (2, Q), got '
                         f'{tuple(index.shape)}')
    if index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError(f'query index must hold integer ids, got dtype '
                         f'{index.dtype}')
    index = index.long().to(graph.edge_index.device)
    for dim, (size, side) in enumerate(((graph.num_rows, 'row'),
                                        (graph.num_cols, 'column'))):
        ids = index[dim]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise ValueError(f'query index has {side} id {bad}, expected '
                             f'ids in [0, {size})')
    return index
