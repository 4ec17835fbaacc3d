import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from gnn_metamf.nn import BipartiteOps, MAPRefinement, map_objective

RANK = 3


def _problem(graph, seed=0, dtype=torch.float64, min_precision=0.1):
    r"""Normalised values, ops and random priors for one graph or batch."""
    gen = torch.Generator().manual_seed(seed)
    ops = BipartiteOps.from_graph(graph)
    z = (graph.edge_value - 3).to(dtype)

    def prior(n):
        mean = torch.randn(n, RANK + 1, generator=gen, dtype=dtype)
        precision = torch.rand(n, RANK + 1, generator=gen,
                               dtype=dtype) + min_precision
        return mean, precision
    return z, ops, prior(graph.num_rows), prior(graph.num_cols)


def _objective_path(refine, z, ops, row_prior, col_prior, steps):
    out = []
    for t in range(steps + 1):
        P, Q = refine(z, ops, row_prior, col_prior, num_steps=t)
        out.append(map_objective(P, Q, z, ops, row_prior, col_prior,
                                 refine.noise_var))
    return torch.stack(out)  # (steps + 1, B)


@pytest.mark.parametrize('seed', range(4))
def test_refine_als_objective_never_increases(graphs, seed):
    batch = Batch.from_data_list(graphs)
    z, ops, row_prior, col_prior = _problem(batch, seed)
    refine = MAPRefinement(num_steps=8, solver='als').double()
    with torch.no_grad():  # Random degree-aware damping in (0, 1).
        gen = torch.Generator().manual_seed(seed)
        refine.damping_bias.copy_(torch.randn(8, 2, generator=gen))
        refine.damping_degree.copy_(torch.randn(8, 2, generator=gen))
        path = _objective_path(refine, z, ops, row_prior, col_prior, 8)
    assert (path[1:] <= path[:-1] + 1e-9).all()
    assert (path[-1] < path[0]).all()


def test_refine_gd_objective_never_increases_with_safe_steps(graphs):
    batch = Batch.from_data_list(graphs)
    z, ops, row_prior, col_prior = _problem(batch, 1)
    # A diagonally scaled step of 1 / (K + 1) cannot overshoot: the Hessian
    # of a block is at most (K + 1) times its diagonal.
    refine = MAPRefinement(num_steps=10, solver='gd',
                           init_damping=1 / (RANK + 1)).double()
    with torch.no_grad():
        path = _objective_path(refine, z, ops, row_prior, col_prior, 10)
    assert (path[1:] <= path[:-1] + 1e-9).all()
    assert (path[-1] < path[0]).all()


def _dense_als(R, mask, row_prior, col_prior, noise_var, iters):
    r"""Independent reference: alternating ridge regressions on the dense
    matrix, in NumPy, to their fixed point."""
    (mu_u, lam_u), (mu_v, lam_v) = [(m.numpy(), p.numpy())
                                    for m, p in (row_prior, col_prior)]
    P, Q = mu_u.copy(), mu_v.copy()
    for _ in range(iters):
        for i in range(P.shape[0]):
            js = np.flatnonzero(mask[i])
            A = np.c_[Q[js, :-1], np.ones(len(js))]
            H = A.T @ A / noise_var + np.diag(lam_u[i])
            P[i] = np.linalg.solve(
                H, A.T @ (R[i, js] - Q[js, -1]) / noise_var +
                lam_u[i] * mu_u[i])
        for j in range(Q.shape[0]):
            is_ = np.flatnonzero(mask[:, j])
            A = np.c_[P[is_, :-1], np.ones(len(is_))]
            H = A.T @ A / noise_var + np.diag(lam_v[j])
            Q[j] = np.linalg.solve(
                H, A.T @ (R[is_, j] - P[is_, -1]) / noise_var +
                lam_v[j] * mu_v[j])
    return P, Q


def test_refine_converges_to_closed_form_fixed_point(graphs):
    graph = graphs[0]
    # A firm prior makes ALS contract fast enough for a short test.
    z, ops, row_prior, col_prior = _problem(graph, 2, min_precision=1.0)
    refine = MAPRefinement(num_steps=200, solver='als').double()
    with torch.no_grad():
        refine.damping_bias.fill_(40.0)  # alpha = 1: plain ALS.
        P, Q = refine(z, ops, row_prior, col_prior)

    R = np.zeros((graph.num_rows, graph.num_cols))
    mask = np.zeros_like(R, dtype=bool)
    row, col = graph.edge_index.numpy()
    R[row, col], mask[row, col] = z.numpy(), True
    P_ref, Q_ref = _dense_als(R, mask, row_prior, col_prior,
                              refine.noise_var.item(), 200)
    np.testing.assert_allclose(P.numpy(), P_ref, atol=1e-8)
    np.testing.assert_allclose(Q.numpy(), Q_ref, atol=1e-8)

    # And the point is stationary: the gradient of J vanishes there.
    P, Q = P.clone().requires_grad_(), Q.clone().requires_grad_()
    J = map_objective(P, Q, z, ops, row_prior, col_prior, refine.noise_var)
    grad_P, grad_Q = torch.autograd.grad(J.sum(), (P, Q))
    assert grad_P.abs().max() < 1e-8 and grad_Q.abs().max() < 1e-8


@pytest.mark.parametrize('solver', ['als', 'gd'])
def test_refine_gradients_reach_every_meta_parameter(graphs, solver):
    batch = Batch.from_data_list(graphs)
    z, ops, row_prior, col_prior = _problem(batch, 3, torch.float32)
    row_prior = tuple(t.clone().requires_grad_() for t in row_prior)
    col_prior = tuple(t.clone().requires_grad_() for t in col_prior)
    refine = MAPRefinement(num_steps=3, solver=solver)
    P, Q = refine(z, ops, row_prior, col_prior)
    P.pow(2).sum().add(Q.pow(3).sum()).backward()
    for name, param in refine.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for tensor in (*row_prior, *col_prior):
        assert tensor.grad.abs().sum() > 0


def test_refine_checkpointing_and_first_order(graphs):
    batch = Batch.from_data_list(graphs)
    z, ops, row_prior, col_prior = _problem(batch, 4)
    results = {}
    for key, kwargs in {'plain': {}, 'checkpoint': dict(checkpoint_steps=True),
                        'first': dict(first_order=True)}.items():
        refine = MAPRefinement(num_steps=4, **kwargs).double()
        priors = [tuple(t.clone().requires_grad_() for t in p)
                  for p in (row_prior, col_prior)]
        P, Q = refine(z, ops, *priors)
        (P.sin().sum() + Q.cos().sum()).backward()
        results[key] = (P.detach(), Q.detach(), priors[0][0].grad.clone(),
                        refine.log_noise_var.grad.clone())
    for k in range(4):  # Checkpointing changes nothing but memory.
        torch.testing.assert_close(results['checkpoint'][k],
                                   results['plain'][k])
    for k in range(2):  # First order changes the gradient, not the values.
        torch.testing.assert_close(results['first'][k], results['plain'][k])
    assert not torch.allclose(results['first'][2], results['plain'][2])


def test_refine_empty_row_keeps_prior_mean(graphs):
    graph = graphs[0]  # Its last row and column have no entry.
    z, ops, row_prior, col_prior = _problem(graph, 5)
    P, Q = MAPRefinement(num_steps=3).double()(z, ops, row_prior, col_prior)
    torch.testing.assert_close(P[-1], row_prior[0][-1])
    torch.testing.assert_close(Q[-1], col_prior[0][-1])


def test_refine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one of .*got 'newton'"):
        MAPRefinement(solver='newton')
    with pytest.raises(ValueError, match='got -1'):
        MAPRefinement(num_steps=-1)
