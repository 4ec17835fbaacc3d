"""Per-matrix baselines behind the same ``impute`` call as the model."""
from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor

from .base import PerMatrixBaseline
from .registry import make_baseline

__all__ = ['BaselineImputer']


class BaselineImputer:
    r"""Gives a per-matrix baseline the ``impute(graph, index)`` call of
    :class:`~gnn_metamf.nn.MetaMF`, so that evaluation code treats both
    alike (e.g. :func:`gnn_metamf.evaluate.evaluate_tasks`).

    For a batch, one baseline is fitted per matrix on that matrix's observed
    entries only. Its standard deviation is the root mean squared residual
    on those entries, the same for every entry of the matrix: a baseline
    has no per-entry uncertainty, and this is the plug-in one.

    Args:
        baseline (str or type): A name of
            :data:`~gnn_metamf.baselines.BASELINES` or a
            :class:`PerMatrixBaseline` subclass.
        **kwargs: Its constructor arguments.
    """
    def __init__(self, baseline: Union[str, type], **kwargs: Any):
        if isinstance(baseline, str):
            make_baseline(baseline, **kwargs)  # Validates name and kwargs.
            self._make = lambda: make_baseline(baseline, **kwargs)
            self.name = baseline
        elif isinstance(baseline, type) and issubclass(baseline,
                                                       PerMatrixBaseline):
            self._make = lambda: baseline(**kwargs)
            self.name = baseline.name
        else:
            raise TypeError(f'expected a baseline name or a PerMatrixBaseline '
                            f'subclass, got {baseline!r}')

    @torch.no_grad()
    def impute(self, graph, index: Tensor) -> tuple[Tensor, Tensor]:
        graphs = graph.to_data_list() if hasattr(graph, 'to_data_list') \
            else [graph]
        query_batch = graph.row_batch[index[0]]  # (Q,)
        rows = torch.cumsum(graph.rows_per_graph, 0) - graph.rows_per_graph
        cols = torch.cumsum(graph.cols_per_graph, 0) - graph.cols_per_graph
        mean = graph.edge_value.new_zeros(index.size(1))
        std = graph.edge_value.new_zeros(index.size(1))
        for b, g in enumerate(graphs):
            mask = query_batch == b
            local = index[:, mask] - torch.stack([rows[b], cols[b]]).view(
                2, 1)
            model = self._make().fit(g)
            fitted = model.predict(g.edge_index).to(g.edge_value.dtype)
            spread = (fitted - g.edge_value).pow(2).mean().sqrt() \
                if g.num_entries else torch.tensor(1.0)
            mean[mask] = model.predict(local).to(mean.dtype)
            std[mask] = float(spread.clamp(min=1e-3))
        return mean, std

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name!r})'
