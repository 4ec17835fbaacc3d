import pytest
import torch

from gnn_metamf import MatrixGraph
from gnn_metamf.baselines import Biases, MatrixFactorization


def _rmse(pred, target):
    return float((pred - target).square().mean().sqrt())


def test_mf_objective_never_rises(low_rank):
    graph = low_rank(num_rows=25, num_cols=20, rank=3, noise=0.3)
    model = MatrixFactorization(rank=4, reg=0.3, num_iters=25, tol=0.0)
    model.fit(graph)
    history = model.objective_
    assert len(history) == 26
    assert history[-1] < 0.5 * history[0]
    for before, after in zip(history, history[1:]):
        assert after <= before * (1 + 1e-10)


def test_mf_objective_matches_the_model(low_rank):
    graph = low_rank(num_rows=10, num_cols=8, noise=0.3)
    model = MatrixFactorization(rank=2, reg=0.5, bias_reg=2.0, num_iters=5)
    model.fit(graph)
    row, col, value = graph.to_triples()
    pred = model.predict(graph.edge_index)
    lam = model.reg_ * model.scale_
    assert model.scale_ == pytest.approx(float(value.std(correction=0)))
    expected = ((value - pred).square().sum()
                + lam * (model.U_.square().sum() + model.V_.square().sum())
                + 2.0 * (model.row_bias_.square().sum()
                         + model.col_bias_.square().sum()))
    assert model.objective_[-1] == pytest.approx(float(expected))


def test_mf_recovers_a_low_rank_matrix(low_rank):
    graph = low_rank(num_rows=40, num_cols=30, rank=2)
    mf = MatrixFactorization().fit_predict(graph)
    biases = Biases().fit_predict(graph)
    assert _rmse(mf, graph.edge_label) < \
        0.2 * _rmse(biases, graph.edge_label)


def test_mf_selects_at_least_the_true_rank(low_rank):
    graph = low_rank(num_rows=50, num_cols=40, rank=3, noise=0.05)
    model = MatrixFactorization(ranks=(1, 2, 3, 5), regs=(0.1, 1.0),
                                num_iters=15)
    model.fit(graph)
    assert len(model.grid_scores_) == 8
    assert model.rank_ >= 3
    assert model.U_.shape == (50, model.rank_)
    assert model.V_.shape == (40, model.rank_)


def test_mf_fixed_rank_and_reg_skip_selection(low_rank):
    model = MatrixFactorization(rank=2, reg=1.0).fit(low_rank())
    assert model.grid_scores_ == {}
    assert (model.rank_, model.reg_) == (2, 1.0)


def test_mf_scale_equivariance(low_rank):
    graph = low_rank(noise=0.2)
    scaled = MatrixGraph(graph.edge_index, 10.0 * graph.edge_value,
                         graph.num_rows, graph.num_cols,
                         edge_label_index=graph.edge_label_index)
    model = MatrixFactorization(ranks=(2, 3), regs=(0.3, 3.0), num_iters=10)
    pred = model.fit_predict(graph)
    pred_scaled = model.fit_predict(scaled)
    torch.testing.assert_close(pred_scaled, 10.0 * pred)


def test_mf_cold_rows_and_columns(low_rank):
    graph = low_rank(num_rows=10, num_cols=8, noise=0.1)
    keep = (graph.edge_index[0] != 4) & (graph.edge_index[1] != 5)
    graph = MatrixGraph(graph.edge_index[:, keep], graph.edge_value[keep],
                        10, 8)
    model = MatrixFactorization(rank=3, reg=1.0).fit(graph)
    assert model.U_[4].abs().max() == 0 and model.row_bias_[4] == 0
    assert model.V_[5].abs().max() == 0 and model.col_bias_[5] == 0
    pred = model.predict(torch.tensor([[4, 4], [0, 5]]))
    expected = torch.tensor([model.mean_ + float(model.col_bias_[0]),
                             model.mean_], dtype=torch.float64)
    torch.testing.assert_close(pred, expected)


def test_mf_constant_matrix():
    graph = MatrixGraph.from_dense(torch.full((4, 3), 2.5))
    pred = MatrixFactorization().fit(graph).predict(torch.tensor([[0], [1]]))
    torch.testing.assert_close(pred, torch.tensor([2.5]))


@pytest.mark.parametrize('kwargs, match', [
    ({'rank': 0}, "'rank' must be an integer >= 1, got 0"),
    ({'ranks': (2, 2.5)}, r"'ranks' must hold integers >= 1, got "
                          r"\(2, 2.5\)"),
    ({'ranks': 5}, "'ranks' must be a non-empty sequence of candidates, "
                   "got 5"),
    ({'reg': 0.0}, "'reg' must be a number > 0, got 0.0"),
    ({'bias_reg': -1}, "'bias_reg' must be"),
])
def test_mf_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MatrixFactorization(**kwargs)
