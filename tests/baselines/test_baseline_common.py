import pytest
import torch
from torch_geometric.data import Batch

from gnn_metamf import MatrixGraph
from gnn_metamf.baselines import (
    BASELINES,
    Biases,
    GlobalMean,
    MatrixFactorization,
    PerMatrixBaseline,
    SoftImpute,
    SurpriseSVD,
    evaluate_predictions,
    make_baseline,
)

# Small grids, so that every baseline runs its selection quickly.
FACTORIES = {
    'global_mean': lambda seed=0: GlobalMean(seed=seed),
    'biases': lambda seed=0: Biases(seed=seed),
    'mf': lambda seed=0: MatrixFactorization(ranks=(2, 3), regs=(0.1, 1.0),
                                             num_iters=10, seed=seed),
    'soft_impute': lambda seed=0: SoftImpute(shrinkages=(0.5, 0.2, 0.1),
                                             max_iters=50, seed=seed),
}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request):
    return FACTORIES[request.param]


def test_baseline_registry():
    assert set(BASELINES) == {'global_mean', 'biases', 'mf', 'soft_impute',
                              'surprise_svd'}
    for name, cls in BASELINES.items():
        assert cls.name == name
        assert issubclass(cls, PerMatrixBaseline)
    assert BASELINES['surprise_svd'] is SurpriseSVD

    model = make_baseline('mf', rank=3, reg=1.0, seed=4)
    assert isinstance(model, MatrixFactorization)
    assert model.rank == 3 and model.seed == 4


def test_baseline_registry_unknown_name():
    with pytest.raises(ValueError, match=r"unknown baseline 'svd'; expected "
                                         r"one of \['biases', 'global_mean'"):
        make_baseline('svd')


def test_baseline_keyword_only():
    with pytest.raises(TypeError):
        MatrixFactorization(5)


def test_baseline_repr():
    assert repr(GlobalMean()) == 'GlobalMean(seed=0)'
    text = repr(Biases(reg=2.0))
    assert text.startswith('Biases(reg=2.0, regs=(1.0, 3.0')
    assert 'seed=0' in text


def test_baseline_predict_before_fit(factory):
    model = factory()
    assert not model.is_fitted
    with pytest.raises(RuntimeError, match='is not fitted yet; call '
                                           r'fit\(graph\) before predict'):
        model.predict(torch.tensor([[0], [0]]))


def test_baseline_fit_predict_shape_and_dtype(factory, low_rank):
    graph = low_rank()
    graph.edge_value = graph.edge_value.float()
    model = factory()
    pred = model.fit_predict(graph)
    assert model.is_fitted
    assert pred.shape == (graph.edge_label_index.size(1),)
    assert pred.dtype == torch.float32
    assert torch.isfinite(pred).all()
    assert model.predict(torch.empty(2, 0, dtype=torch.long)).shape == (0,)


def test_baseline_edge_order_invariance(factory, low_rank):
    graph = low_rank(noise=0.3)
    perm = torch.randperm(graph.num_entries,
                          generator=torch.Generator().manual_seed(1))
    shuffled = MatrixGraph(graph.edge_index[:, perm], graph.edge_value[perm],
                           graph.num_rows, graph.num_cols)
    query = graph.edge_label_index
    expected = factory().fit(graph).predict(query)
    torch.testing.assert_close(factory().fit(shuffled).predict(query),
                               expected, rtol=0, atol=1e-10)


def test_baseline_determinism(factory, low_rank):
    graph = low_rank(noise=0.3)
    first = factory(seed=7).fit_predict(graph)
    second = factory(seed=7).fit_predict(graph)
    assert torch.equal(first, second)


def test_baseline_empty_rows_and_columns(factory, low_rank):
    graph = low_rank(num_rows=12, num_cols=10, noise=0.1)
    keep = (graph.edge_index[0] != 3) & (graph.edge_index[1] != 7)
    # Row 11 and column 9 are past every stored id: only num_rows and
    # num_cols say that they exist.
    keep &= (graph.edge_index[0] != 11) & (graph.edge_index[1] != 9)
    sparse = MatrixGraph(graph.edge_index[:, keep], graph.edge_value[keep],
                         12, 10)
    model = factory().fit(sparse)
    index = torch.tensor([[3, 3, 0, 11, 11], [7, 0, 7, 9, 2]])
    pred = model.predict(index)
    assert torch.isfinite(pred).all()
    low, high = sparse.edge_value.min(), sparse.edge_value.max()
    assert ((pred > low - 1) & (pred < high + 1)).all()


def test_baseline_index_errors(low_rank):
    model = GlobalMean().fit(low_rank(num_rows=5, num_cols=4))
    with pytest.raises(ValueError, match=r"shape \(2, Q\), got \(3, 2\)"):
        model.predict(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='integer ids, got dtype '
                                         'torch.float32'):
        model.predict(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r'row id 5, expected ids in '
                                         r'\[0, 5\)'):
        model.predict(torch.tensor([[5], [0]]))
    with pytest.raises(ValueError, match='column id -1'):
        model.predict(torch.tensor([[0], [-1]]))


def test_baseline_fit_errors(low_rank):
    with pytest.raises(TypeError, match='expected a MatrixGraph, got dict'):
        GlobalMean().fit({'edge_index': None})
    empty = MatrixGraph(torch.empty(2, 0, dtype=torch.long),
                        torch.empty(0), 3, 4)
    with pytest.raises(ValueError, match='no observed entry'):
        GlobalMean().fit(empty)
    batch = Batch.from_data_list([low_rank(seed=0), low_rank(seed=1)])
    with pytest.raises(ValueError, match='got a batch of 2'):
        GlobalMean().fit(batch)
    graph = low_rank()
    del graph.edge_label_index
    with pytest.raises(ValueError, match="no 'edge_label_index'"):
        GlobalMean().fit_predict(graph)


def test_baseline_fits_a_separated_matrix(low_rank):
    batch = Batch.from_data_list([low_rank(seed=0), low_rank(seed=1)])
    graph = batch.to_data_list()[1]
    pred = Biases(reg=1.0).fit_predict(graph)
    expected = Biases(reg=1.0).fit_predict(low_rank(seed=1))
    torch.testing.assert_close(pred, expected)


@pytest.mark.parametrize('kwargs, match', [
    ({'holdout': 1.0}, r"'holdout' must be a fraction in \(0, 1\), got 1.0"),
    ({'regs': ()}, "'regs' must be a non-empty sequence"),
    ({'reg': -1.0}, "'reg' must be a number >= 0, got -1.0"),
    ({'reg': float('nan')}, "'reg' must be a number >= 0, got nan"),
    ({'seed': 1.5}, "'seed' must be an integer >= 0, got 1.5"),
    ({'num_iters': True}, "'num_iters' must be an integer >= 1, got True"),
])
def test_baseline_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Biases(**kwargs)


def test_evaluate_predictions():
    pred = torch.tensor([1.0, 2.0, 4.0, 3.0])
    target = torch.tensor([1.0, 3.0, 2.0, 3.0])
    out = evaluate_predictions(pred, target)
    assert out == pytest.approx({'rmse': (5 / 4) ** 0.5, 'mae': 3 / 4})
    assert isinstance(out['rmse'], float)

    with pytest.raises(ValueError, match=r'same shape, got \(4,\) and '
                                         r'\(3,\)'):
        evaluate_predictions(pred, target[:3])
    with pytest.raises(ValueError, match=r"'pred' must have shape \(Q,\)"):
        evaluate_predictions(pred.view(2, 2), target)
    with pytest.raises(ValueError, match='empty'):
        evaluate_predictions(torch.empty(0), torch.empty(0))


def test_baseline_imputer_batch_equals_alone():
    from gnn_metamf.baselines import BaselineImputer
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n, m in ((6, 5), (4, 7)):
        dense = torch.randn(n, m, generator=gen) + 3
        mask = torch.rand(n, m, generator=gen) < 0.6
        g = MatrixGraph.from_dense(dense, mask)
        g.edge_label_index = (~mask).nonzero().T
        graphs.append(g)
    batch = Batch.from_data_list(graphs)
    imputer = BaselineImputer('biases', reg=1.0)
    mean, std = imputer.impute(batch, batch.edge_label_index)
    for b, g in enumerate(graphs):
        alone = make_baseline('biases', reg=1.0).fit(g).predict(
            g.edge_label_index)
        torch.testing.assert_close(mean[batch.row_batch[
            batch.edge_label_index[0]] == b], alone)
    assert (std > 0).all()
    with pytest.raises(ValueError, match='unknown baseline'):
        BaselineImputer('svd++')
