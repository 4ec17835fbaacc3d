import numpy as np
import pytest
import torch

from gnn_metamf import MatrixGraph
from gnn_metamf.baselines import Biases, GlobalMean, fit_biases


def _additive(num_rows: int = 40, num_cols: int = 30,
              noise: float = 0.5) -> MatrixGraph:
    r"""Row effect plus column effect plus noise, half of it observed."""
    gen = torch.Generator().manual_seed(0)
    matrix = (3.0 + torch.randn(num_rows, 1, generator=gen)
              + torch.randn(1, num_cols, generator=gen)
              + noise * torch.randn(num_rows, num_cols, generator=gen))
    mask = torch.rand(num_rows, num_cols, generator=gen) < 0.5
    return MatrixGraph(mask.nonzero().T, matrix[mask], num_rows, num_cols,
                       edge_label_index=(~mask).nonzero().T,
                       edge_label=matrix[~mask])


def _ridge_biases(graph: MatrixGraph, reg: float) -> np.ndarray:
    r"""``(mu, b, c)`` by one dense ridge solve on the design matrix
    ``[1, one-hot(row), one-hot(col)]``, ``mu`` not penalised."""
    row, col, value = (t.numpy() for t in graph.to_triples())
    m, n = graph.num_rows, graph.num_cols
    X = np.zeros((value.size, 1 + m + n))
    X[:, 0] = 1.0
    X[np.arange(value.size), 1 + row] = 1.0
    X[np.arange(value.size), 1 + m + col] = 1.0
    penalty = np.full(1 + m + n, reg)
    penalty[0] = 0.0
    return np.linalg.solve(X.T @ X + np.diag(penalty), X.T @ value)


def test_global_mean_exact():
    graph = MatrixGraph.from_triples([0, 0, 1, 2], [0, 2, 1, 0],
                                     [1.0, 2.0, 4.0, 5.0], num_cols=4)
    model = GlobalMean().fit(graph)
    assert model.mean_ == 3.0
    pred = model.predict(torch.tensor([[0, 2, 1], [3, 3, 0]]))
    assert torch.equal(pred, torch.full((3,), 3.0))


@pytest.mark.parametrize('reg', [0.5, 4.0])
def test_biases_match_ridge_least_squares(low_rank, reg):
    graph = low_rank(num_rows=7, num_cols=6, density=0.6, noise=0.5)
    model = Biases(reg=reg, num_iters=10_000, tol=1e-13).fit(graph)
    expected = _ridge_biases(graph, reg)

    assert model.mean_ == pytest.approx(expected[0], abs=1e-9)
    np.testing.assert_allclose(model.row_bias_.numpy(), expected[1:8],
                               atol=1e-9)
    np.testing.assert_allclose(model.col_bias_.numpy(), expected[8:],
                               atol=1e-9)
    assert model.reg_ == reg and model.grid_scores_ == {}


def test_biases_sweeps_never_raise_the_objective(low_rank):
    graph = low_rank(num_rows=15, num_cols=12, noise=0.5)
    row, col, value = graph.to_triples()

    def objective(num_iters):
        mu, b, c = fit_biases(row, col, value, 15, 12, 2.0, num_iters, 0.0)
        err = value - mu - b[row] - c[col]
        return float(err.square().sum() + 2.0 * (b.square().sum()
                                                 + c.square().sum()))

    values = [objective(k) for k in range(1, 15)]
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))


def test_biases_selection():
    graph = _additive()
    model = Biases(regs=(0.1, 1.0, 10.0, 1000.0)).fit(graph)
    assert set(model.grid_scores_) == {0.1, 1.0, 10.0, 1000.0}
    assert model.reg_ == min(model.grid_scores_, key=model.grid_scores_.get)
    # A huge penalty leaves only the mean, which is clearly worse here.
    assert model.grid_scores_[1000.0] > model.grid_scores_[model.reg_]


def test_biases_beat_the_mean():
    graph = _additive(noise=0.1)
    target = graph.edge_label
    biases = Biases().fit_predict(graph)
    mean = GlobalMean().fit_predict(graph)
    assert (biases - target).square().mean() < \
        0.5 * (mean - target).square().mean()


@pytest.mark.parametrize('reg', [0.0, 1.0])
def test_biases_cold_rows_and_columns(reg):
    # Row 2 and column 3 have no entry.
    graph = MatrixGraph.from_triples([0, 0, 1, 1], [0, 1, 1, 2],
                                     [1.0, 2.0, 3.0, 5.0], num_rows=3,
                                     num_cols=4)
    model = Biases(reg=reg).fit(graph)
    assert model.row_bias_[2] == 0 and model.col_bias_[3] == 0
    pred = model.predict(torch.tensor([[2, 2, 0], [0, 3, 3]]))
    assert torch.isfinite(pred).all()
    expected = torch.tensor([model.mean_ + float(model.col_bias_[0]),
                             model.mean_,
                             model.mean_ + float(model.row_bias_[0])],
                            dtype=pred.dtype)
    torch.testing.assert_close(pred, expected)


def test_biases_too_few_entries_to_hold_out():
    graph = MatrixGraph.from_triples([0], [1], [4.0])
    model = Biases(regs=(1.0, 5.0)).fit(graph)
    assert model.reg_ == 5.0
    assert model.predict(torch.tensor([[0], [0]])).item() == \
        pytest.approx(4.0)
