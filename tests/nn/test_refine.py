import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import gnn_metamf.nn.refine as refine_module
from gnn_metamf.nn import BipartiteOps, MAPRefinement, map_objective
from gnn_metamf.nn.refine import (
    packed_index,
    packed_spd_inverse,
    packed_spd_solve,
    side_statistics,
    unpack_symmetric,
)

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


# The packed solver's paths: LAPACK for few systems (on CPU), the loops
# vectorised across systems in one block or in several.
SOLVER_PATHS = {'lapack': (10 ** 9, 4096), 'packed': (0, 4096),
                'packed-blocks': (0, 7)}


@pytest.fixture(params=list(SOLVER_PATHS))
def solver_path(request, monkeypatch):
    lapack_below, block = SOLVER_PATHS[request.param]
    monkeypatch.setattr(refine_module, '_LAPACK_BELOW', lapack_below)
    monkeypatch.setattr(refine_module, '_SYSTEMS_PER_BLOCK', block)
    monkeypatch.setattr(refine_module, '_SYSTEMS_PER_INVERSE_BLOCK', block)
    return request.param


def _spd_batch(num, n, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(num, n + 2, n, generator=gen, dtype=dtype)
    i, j = packed_index(n)[:2]
    packed = (a[:, :, i] * a[:, :, j]).sum(1)  # (num, P): sum a a^T
    diag = torch.rand(num, n, generator=gen, dtype=dtype) + 0.1
    rhs = torch.randn(num, n, generator=gen, dtype=dtype)
    return packed, diag, rhs


def test_refine_packed_solve_equals_dense_solve(device, solver_path):
    packed, diag, rhs = (t.to(device) for t in _spd_batch(30, 6))
    system = unpack_symmetric(packed, 6) + torch.diag_embed(diag)
    expected = torch.linalg.solve(system, rhs)
    torch.testing.assert_close(packed_spd_solve(packed, diag, rhs), expected)
    i, j = packed_index(6, device)[:2]
    torch.testing.assert_close(packed_spd_inverse(packed, diag),
                               torch.linalg.inv(system)[:, i, j])


def test_refine_packed_solve_gradients(solver_path):
    inputs = tuple(t.requires_grad_() for t in _spd_batch(4, 3, seed=1))
    assert torch.autograd.gradcheck(packed_spd_solve, inputs)


def test_refine_packed_solve_rejects_indefinite_systems(solver_path):
    packed, diag, rhs = _spd_batch(15, 3)
    diag[2] = diag[11] = -1e3
    with pytest.raises(FloatingPointError, match='2 of 15 refinement '
                                                 'systems are not positive'):
        packed_spd_solve(packed, diag, rhs)


def test_refine_packed_gram_equals_full_gram(graphs):
    batch = Batch.from_data_list(graphs)
    z, ops, row_prior, _ = _problem(batch, 6)
    other = torch.randn(batch.num_cols, RANK + 1, dtype=torch.float64)
    gram, rhs = side_statistics(other, z, ops.rows_from_cols)
    packed, packed_rhs = side_statistics(other, z, ops.rows_from_cols,
                                         packed=True)
    torch.testing.assert_close(unpack_symmetric(packed, RANK + 1), gram)
    torch.testing.assert_close(packed_rhs, rhs)
    assert side_statistics(other, None, ops.rows_from_cols)[1] is None


@pytest.mark.parametrize('solver', ['als', 'gd'])
def test_refine_fast_kernels_equal_reference(graphs, solver, device,
                                             solver_path):
    r"""The sparse backend's kernels (packed Gram matrices, vectorised
    Cholesky with its own backward pass) give the values and gradients of
    the reference backend's (full Gram matrices, LAPACK through autograd)
    and the same Laplace covariances."""
    batch = Batch.from_data_list(graphs).to(device)
    results = []
    for backend in ('sparse', 'scatter'):
        z, ops, row_prior, col_prior = _problem(batch.cpu(), 7)
        ops = BipartiteOps.from_graph(batch, backend)
        priors = [tuple(t.to(device).requires_grad_() for t in p)
                  for p in (row_prior, col_prior)]
        refine = MAPRefinement(num_steps=3, solver=solver).double().to(
            device)
        P, Q = refine(z.to(device), ops, *priors)
        (P.sin().sum() + Q.cos().sum()).backward()
        cov = refine.posterior_covariance(P.detach(), Q.detach(),
                                          z.to(device), ops, *priors)
        results.append((P, Q, priors[0][0].grad, priors[1][1].grad,
                        refine.log_noise_var.grad, *cov))
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize('backend', ['sparse', 'scatter'])
@pytest.mark.parametrize('solver', ['als', 'gd'])
def test_refine_covariance_reuses_last_gram_and_takes_subsets(
        graphs, backend, solver):
    r"""The column Gram matrices that the last step aggregated are those of
    the final row factors, so the covariances built from them equal the
    recomputed ones; asking for some rows and columns gives exactly those
    covariances, in the order asked."""
    batch = Batch.from_data_list(graphs)
    z, _, row_prior, col_prior = _problem(batch, 3)
    ops = BipartiteOps.from_graph(batch, backend)
    refine = MAPRefinement(num_steps=2, solver=solver).double()
    with torch.no_grad():
        P, Q, col_gram = refine(z, ops, row_prior, col_prior,
                                return_col_gram=True)
        again = side_statistics(P, None, ops.cols_from_rows,
                                packed=backend == 'sparse')[0]
        torch.testing.assert_close(col_gram, again)
        full = refine.posterior_covariance(P, Q, z, ops, row_prior,
                                           col_prior)
        reused = refine.posterior_covariance(P, Q, z, ops, row_prior,
                                             col_prior, col_gram=col_gram)
        torch.testing.assert_close(reused, full)
        rows = torch.tensor([4, 0, 2])
        cols = torch.tensor([1, batch.num_cols - 1])
        some = refine.posterior_covariance(P, Q, z, ops, row_prior,
                                           col_prior, col_gram=col_gram,
                                           rows=rows, cols=cols)
        torch.testing.assert_close(some[0], full[0][rows])
        torch.testing.assert_close(some[1], full[1][cols])
        assert refine(z, ops, row_prior, col_prior, num_steps=0,
                      return_col_gram=True)[2] is None
