"""Shared fixtures: tiny seeded matrices and batches of them."""
import pytest
import torch

from gnn_metamf import MatrixGraph

# The tests use tiny matrices, for which one thread is fastest; two threads
# on the 2-core CI machine mostly wait for each other.
torch.set_num_threads(1)


def low_rank_graph(num_rows, num_cols, density=0.4, query=0.3, rank=3,
                   seed=0, dtype=torch.float32):
    r"""A seeded low-rank matrix around 3 with observed and query entries,
    and an empty last row and column when the matrix is large enough."""
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(num_rows, rank, generator=gen, dtype=dtype)
    V = torch.randn(num_cols, rank, generator=gen, dtype=dtype)
    R = 3 + U @ V.T / rank ** 0.5
    mask = torch.rand(num_rows, num_cols, generator=gen) < density
    if num_rows > 3 and num_cols > 3:
        mask[-1, :] = False
        mask[:, -1] = False
    is_query = torch.rand(num_rows, num_cols, generator=gen) < query
    graph = MatrixGraph.from_dense(R, mask & ~is_query)
    index = (mask & is_query).nonzero().T
    graph.edge_label_index = index
    graph.edge_label = R[index[0], index[1]]
    return graph


def pytest_addoption(parser):
    parser.addoption('--device', default='cpu',
                     help="torch device of the tests that take the 'device' "
                          "fixture, e.g. cuda (default: cpu)")


@pytest.fixture
def device(request):
    r"""The device of ``--device``; the test is skipped when it is a CUDA
    device and none is available."""
    device = torch.device(request.config.getoption('--device'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        pytest.skip(f'--device {device}: CUDA is not available')
    return device


@pytest.fixture
def graphs():
    return [low_rank_graph(12, 9, seed=0), low_rank_graph(7, 15, seed=1),
            low_rank_graph(20, 20, seed=2)]
