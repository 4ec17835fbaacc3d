import pytest
import torch
from torch_geometric.data import Batch

from gnn_metamf import MatrixGraph
from gnn_metamf.nn import MetaMF

SMALL = dict(rank=4, hidden_channels=8, num_layers=2, num_steps=3)


def _model(seed=0, **kwargs):
    torch.manual_seed(seed)
    return MetaMF(**{**SMALL, **kwargs}).double()


def _double(graph):
    graph = graph.clone()
    graph.edge_value = graph.edge_value.double()
    graph.edge_label = graph.edge_label.double()
    return graph


@pytest.mark.parametrize('layer', ['exchangeable', 'node'])
def test_model_permutation_equivariance(graphs, layer):
    graph = _double(graphs[2])
    model = _model(layer=layer)
    gen = torch.Generator().manual_seed(0)
    row_perm = torch.randperm(graph.num_rows, generator=gen)
    col_perm = torch.randperm(graph.num_cols, generator=gen)
    edge_perm = torch.randperm(graph.num_entries, generator=gen)
    index = torch.stack([row_perm[graph.edge_index[0]],
                         col_perm[graph.edge_index[1]]])[:, edge_perm]
    other = MatrixGraph(index, graph.edge_value[edge_perm], graph.num_rows,
                        graph.num_cols)
    query = graph.edge_label_index
    mean, std = model.impute(graph, query)
    p_mean, p_std = model.impute(
        other, torch.stack([row_perm[query[0]], col_perm[query[1]]]))
    torch.testing.assert_close(p_mean, mean)
    torch.testing.assert_close(p_std, std)


def test_model_batch_equals_alone(graphs):
    model = _model()
    graphs = [_double(g) for g in graphs]
    batch = Batch.from_data_list(graphs)
    mean, std = model.impute(batch, batch.edge_label_index)
    alone = [model.impute(g, g.edge_label_index) for g in graphs]
    torch.testing.assert_close(mean, torch.cat([a[0] for a in alone]))
    torch.testing.assert_close(std, torch.cat([a[1] for a in alone]))


@pytest.mark.parametrize('a,b', [(20.0, 1.0), (0.5, -3.0)])
def test_model_follows_the_matrix_scale(graphs, a, b):
    r"""Values ``a x + b`` give predictions ``a m + b`` and deviations
    ``a s``: a model serves any rating scale without a hand-made map."""
    graph = _double(graphs[1])
    model = _model()
    other = graph.clone()
    other.edge_value = a * graph.edge_value + b
    mean, std = model.impute(graph, graph.edge_label_index)
    o_mean, o_std = model.impute(other, graph.edge_label_index)
    torch.testing.assert_close(o_mean, a * mean + b)
    torch.testing.assert_close(o_std, a * std)


def test_model_gradients_reach_every_parameter(graphs):
    model = _model()
    loss, stats = model.loss(Batch.from_data_list(
        [_double(g) for g in graphs]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert set(stats) == {'mse', 'nll', 'rmse'}


def test_model_calibration_does_not_move_predictions(graphs):
    r"""The likelihood term trains only the two calibration scalars."""
    batch = Batch.from_data_list([_double(g) for g in graphs])
    model = _model()
    fact = model(batch)
    var = model.predictive_variance(fact, batch.edge_label_index)
    var.sum().backward()
    for name, param in model.named_parameters():
        moved = param.grad is not None and param.grad.abs().sum() > 0
        assert moved == (name in ('log_obs_var', 'log_kappa')), name


def test_model_empty_rows_and_cols_get_finite_predictions(graphs):
    graph = _double(graphs[0])  # Last row and column are empty.
    model = _model()
    query = torch.tensor([[graph.num_rows - 1, 0, graph.num_rows - 1],
                          [0, graph.num_cols - 1, graph.num_cols - 1]])
    mean, std = model.impute(graph, query)
    assert torch.isfinite(mean).all() and (std > 0).all()
    low, high = graph.edge_value.min(), graph.edge_value.max()
    assert ((mean >= low) & (mean <= high)).all()  # Clipped to the range.


def test_model_zero_steps_predicts_from_prior_means(graphs):
    graph = _double(graphs[0])
    model = _model()
    fact = model(graph, num_steps=0)
    torch.testing.assert_close(fact.P, fact.row_prior[0])
    torch.testing.assert_close(fact.Q, fact.col_prior[0])


def test_model_default_and_impute_keeps_mode(graphs):
    model = MetaMF()
    assert model.rank == 16 and model.training
    mean, std = model.impute(graphs[0], graphs[0].edge_label_index)
    assert mean.shape == std.shape == (graphs[0].edge_label_index.size(1),)
    assert model.training and not mean.requires_grad
    empty = model.impute(graphs[0], torch.zeros(2, 0, dtype=torch.long))
    assert empty[0].shape == (0,)


def test_model_sparse_equals_scatter_backend(graphs, device):
    r"""The fast kernels (sparse backend: fused encoder, packed Gram
    matrices and solves, pair products for means and variances) against
    the reference ones, on queries in any order, repeated, in chunks."""
    batch = Batch.from_data_list([_double(g) for g in graphs]).to(device)
    query = batch.edge_label_index
    perm = torch.randperm(query.size(1),
                          generator=torch.Generator().manual_seed(0))
    query = torch.cat([query[:, perm.to(device)], query[:, :5]], 1)
    fast, ref = (_model(backend=b).to(device) for b in ('sparse',
                                                        'scatter'))
    torch.testing.assert_close(fast.impute(batch, query, chunk_size=7),
                               ref.impute(batch, query, chunk_size=7))
    torch.testing.assert_close(
        fast.predictive_variance(fast(batch), query),
        ref.predictive_variance(ref(batch), query))


@pytest.mark.parametrize('layer', ['exchangeable', 'node'])
def test_model_impute_in_cache_order_equals_reference(graphs, layer,
                                                      monkeypatch):
    r"""Large matrices are imputed with their entries in tile order
    (tiny tiles here: 2 rows or columns of 8 float64 states) and with
    column-tiled products; the predictions are those of the reference."""
    from gnn_metamf.nn import ops as ops_module
    monkeypatch.setattr(ops_module, 'TILE_BYTES', 128)
    batch = Batch.from_data_list([_double(g) for g in graphs])
    query = batch.edge_label_index
    fast, ref = (_model(backend=b, layer=layer)
                 for b in ('sparse', 'scatter'))
    with torch.no_grad():  # The entries were reordered.
        assert not torch.equal(fast(batch).ops.row, batch.edge_index[0])
    torch.testing.assert_close(fast.impute(batch, query),
                               ref.impute(batch, query))


def test_model_covariances_only_where_queried(graphs):
    r"""Covariances restricted to the queried rows and columns equal the
    full ones there and are zero elsewhere, and give the same predictive
    variances."""
    model = _model()
    graph = _double(graphs[1])
    fact = model(graph)
    query = graph.edge_label_index[:, :4]
    full = model.covariances(fact)
    some = model.covariances(fact, query)
    for side, (a, b) in enumerate(zip(full, some)):
        hit = torch.zeros(a.size(0), dtype=torch.bool)
        hit[query[side]] = True
        assert not hit.all()
        torch.testing.assert_close(b[hit], a[hit])
        assert (b[~hit] == 0).all()
    torch.testing.assert_close(model.predictive_variance(fact, query, full),
                               model.predictive_variance(fact, query))


def test_model_errors_say_what_they_got(graphs):
    model = _model()
    graph = _double(graphs[0])
    with pytest.raises(ValueError, match=r'shape \(2, Q\), got \(3, 2\)'):
        model.impute(graph, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='integer ids, got dtype'):
        model.impute(graph, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r'row id 12, expected ids in '
                                         r'\[0, 12\)'):
        model.impute(graph, torch.tensor([[12], [0]]))
    del graph.edge_label
    with pytest.raises(ValueError, match="no 'edge_label'"):
        model.loss(graph)
    with pytest.raises(ValueError, match="'rank' must be >= 1, got 0"):
        MetaMF(rank=0)


def test_model_fixed_prior_ablation(graphs):
    r"""Without encoder: zero-mean priors, a start that leaves the zero
    saddle, gradients to the prior strength and start scale, and the same
    result for a matrix alone or in a batch."""
    model = _model(prior='fixed')
    assert not hasattr(model, 'encoder')
    graphs = [_double(g) for g in graphs]
    batch = Batch.from_data_list(graphs)
    loss, _ = model.loss(batch)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    fact = model(batch)
    assert fact.U.abs().sum() > 0 and fact.row_prior[0].abs().sum() == 0
    mean, _ = model.impute(batch, batch.edge_label_index)
    alone = torch.cat([model.impute(g, g.edge_label_index)[0]
                       for g in graphs])
    torch.testing.assert_close(mean, alone)
    with pytest.raises(ValueError, match="'prior' must be one of"):
        MetaMF(prior='none')
