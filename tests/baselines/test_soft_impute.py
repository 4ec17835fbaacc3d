import pytest
import torch

from gnn_metamf.baselines import GlobalMean, SoftImpute, fit_biases


def _rmse(pred, target):
    return float((pred - target).square().mean().sqrt())


def test_soft_impute_recovers_a_low_rank_matrix(low_rank):
    graph = low_rank(num_rows=40, num_cols=30, rank=2)
    model = SoftImpute()
    pred = model.fit_predict(graph)
    mean = GlobalMean().fit_predict(graph)
    assert _rmse(pred, graph.edge_label) < \
        0.5 * _rmse(mean, graph.edge_label)
    assert model.shrinkage_ in model.grid_scores_
    assert model.rank_ >= 2


def test_soft_impute_at_lambda_max_is_the_biases(low_rank):
    graph = low_rank(noise=0.3)
    model = SoftImpute(shrinkage=1.0, bias_reg=2.0).fit(graph)
    assert model.rank_ == 0 and model.grid_scores_ == {}
    row, col, value = graph.to_triples()
    mean, b, c = fit_biases(row, col, value, graph.num_rows, graph.num_cols,
                            2.0)
    query = graph.edge_label_index
    torch.testing.assert_close(model.predict(query),
                               mean + b[query[0]] + c[query[1]])


def test_soft_impute_singular_values_are_shrunk(low_rank):
    graph = low_rank(num_rows=20, num_cols=15, rank=3)
    weak = SoftImpute(shrinkage=0.6).fit(graph)
    strong = SoftImpute(shrinkage=0.05).fit(graph)
    assert weak.lambda_ > strong.lambda_
    assert weak.d_.sum() < strong.d_.sum()
    assert (weak.d_ > 0).all()
    # The factors are orthonormal, as an SVD's.
    eye = torch.eye(strong.rank_, dtype=torch.float64)
    torch.testing.assert_close(strong.U_.T @ strong.U_, eye)
    torch.testing.assert_close(strong.V_.T @ strong.V_, eye)


def test_soft_impute_randomized_matches_dense(low_rank):
    # max_rank + 10 oversampling directions < 30 columns: a real
    # randomized SVD, not a disguised full one.
    graph = low_rank(num_rows=40, num_cols=30, rank=2, noise=0.05)
    kwargs = dict(shrinkage=0.2, max_rank=4, tol=1e-12, max_iters=200)
    dense = SoftImpute(svd='dense', **kwargs).fit(graph)
    randomized = SoftImpute(svd='randomized', **kwargs).fit(graph)
    assert dense.rank_ == randomized.rank_ < 4
    torch.testing.assert_close(randomized.d_, dense.d_, rtol=1e-6,
                               atol=1e-6)
    query = graph.edge_label_index
    torch.testing.assert_close(randomized.predict(query),
                               dense.predict(query), rtol=1e-6, atol=1e-6)


def test_soft_impute_rank_cap(low_rank):
    graph = low_rank(num_rows=30, num_cols=25, rank=6)
    model = SoftImpute(shrinkage=0.01, max_rank=3).fit(graph)
    assert model.rank_ == 3


@pytest.mark.parametrize('kwargs, match', [
    ({'shrinkage': 1.5}, r"'shrinkage' must be a fraction of lambda_max in "
                         r"\(0, 1\], got 1.5"),
    ({'shrinkages': (0.5, 2.0)}, r"'shrinkages' must hold fractions of "
                                 r"lambda_max in \(0, 1\], got \(0.5, 2.0\)"),
    ({'shrinkages': (0.5, 0.0)}, "'shrinkages' must hold numbers > 0, got"),
    ({'shrinkages': ()}, "'shrinkages' must be a non-empty sequence"),
    ({'svd': 'exact'}, "'svd' must be 'auto', 'dense' or 'randomized', got "
                       "'exact'"),
    ({'max_rank': 0}, "'max_rank' must be"),
])
def test_soft_impute_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftImpute(**kwargs)
