from typing import Callable

import pytest
import torch

from gnn_metamf import MatrixGraph


def _low_rank(num_rows: int = 30, num_cols: int = 25, rank: int = 2,
              density: float = 0.5, noise: float = 0.0, seed: int = 0,
              offset: float = 3.0) -> MatrixGraph:
    r"""A rank-``rank`` matrix plus ``offset``, a random ``density`` of it
    observed and the rest as the query, in float64."""
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(num_rows, rank, generator=gen, dtype=torch.float64)
    V = torch.randn(num_cols, rank, generator=gen, dtype=torch.float64)
    matrix = offset + U @ V.T  # (num_rows, num_cols)
    matrix = matrix + noise * torch.randn(matrix.shape, generator=gen,
                                          dtype=torch.float64)
    mask = torch.rand(matrix.shape, generator=gen) < density
    return MatrixGraph(mask.nonzero().T, matrix[mask], num_rows, num_cols,
                       edge_label_index=(~mask).nonzero().T,
                       edge_label=matrix[~mask])


@pytest.fixture
def low_rank() -> Callable[..., MatrixGraph]:
    return _low_rank
