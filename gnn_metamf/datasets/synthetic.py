r"""A seeded, low-rank rating matrix with the sparsity of real rating data.

Every row and every column is an independent draw from one distribution, so
any sub-matrix (any subset of rows and columns) comes from the same process
and what is learned on some sub-matrices transfers to others. Row ``i``
draws a cluster ``z_i`` of a Gaussian mixture, factors
:math:`u_i \sim \mathcal{N}(\mu_{z_i}, \sigma_w^2 I)` of dimension ``rank``,
a bias :math:`b_i` and an activity :math:`a_i = \exp(s\,\epsilon_i)`;
columns draw :math:`v_j, c_j, p_j` from a mixture of their own. Entry
:math:`(i, j)` is observed with probability :math:`\min(1, \lambda a_i p_j)`,
:math:`\lambda` chosen so that the expected density is ``density``: a few
rows and columns hold many entries, most few. Its rating is

.. math::
    r_{ij} = \operatorname{clip}\Big(\operatorname{round}\big(\bar r + b_i
    + c_j + \gamma\, u_i^\top v_j / \sqrt{\mathrm{rank}}
    + \sigma \varepsilon_{ij}\big), 1, 5\Big).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import MatrixGraph

__all__ = ['make_synthetic']

_MEAN = 3.5  # The mean rating, about that of MovieLens.
_BIAS_STD = 0.4  # Row and column biases.
_SIGNAL = 0.9  # Scale of the low-rank interaction.
_CENTRE_STD = 0.8  # Spread of the mixture's cluster centres.
_WITHIN_STD = 0.6  # Spread of the factors inside a cluster.
_CHUNK = 1 << 22  # Entries drawn at a time when sampling the mask.


def make_synthetic(
    num_rows: int = 1000,
    num_cols: int = 1000,
    rank: int = 5,
    density: float = 0.05,
    test_fraction: float = 0.2,
    noise: float = 0.5,
    num_clusters: int = 4,
    degree_skew: float = 1.0,
    seed: int = 0,
) -> MatrixGraph:
    r"""Draws a synthetic rating matrix, see the module docstring.

    The same arguments give the same matrix. The observed entries and their
    ratings do not depend on ``test_fraction``: the query is a uniformly
    drawn part of them, so ``test_fraction=0`` gives the union of the
    training and test entries.

    Args:
        num_rows (int): Number of rows (users). (default: :obj:`1000`)
        num_cols (int): Number of columns (items). (default: :obj:`1000`)
        rank (int): Dimension of the latent factors. (default: :obj:`5`)
        density (float): Expected fraction of entries observed, in
            ``(0, 1]``. (default: :obj:`0.05`)
        test_fraction (float): Fraction of the entries moved to the query
            ``edge_label_index`` / ``edge_label``, in ``[0, 1)``; none when
            0. (default: :obj:`0.2`)
        noise (float): Standard deviation of the noise added before
            rounding. (default: :obj:`0.5`)
        num_clusters (int): Number of mixture components of the row and of
            the column factors. (default: :obj:`4`)
        degree_skew (float): Standard deviation of the log activity of rows
            and columns; 0 draws entries uniformly. (default: :obj:`1.0`)
        seed (int): Seed of all random draws. (default: :obj:`0`)

    Returns:
        MatrixGraph: Ratings in ``1, ..., 5`` as float32; entries in
        (row, column) order.
    """
    _check_int(num_rows, 'num_rows', 1)
    _check_int(num_cols, 'num_cols', 1)
    _check_int(rank, 'rank', 1)
    _check_int(num_clusters, 'num_clusters', 1)
    _check_int(seed, 'seed', 0)
    _check_range(density, 'density', 0.0, 1.0, '(0, 1]', low_open=True)
    _check_range(test_fraction, 'test_fraction', 0.0, 1.0, '[0, 1)',
                 high_open=True)
    _check_range(noise, 'noise', 0.0, np.inf, '[0, inf)')
    _check_range(degree_skew, 'degree_skew', 0.0, np.inf, '[0, inf)')

    # Independent streams, so that e.g. the split does not move the ratings.
    streams = np.random.SeedSequence(seed).spawn(5)
    centres, rows, cols, entries, split = (np.random.default_rng(s)
                                           for s in streams)
    row_centres, col_centres = (
        _CENTRE_STD * centres.standard_normal((2, num_clusters, rank)))
    u, b, a = _draw_side(rows, num_rows, row_centres, degree_skew)
    v, c, p = _draw_side(cols, num_cols, col_centres, degree_skew)

    row, col = _draw_mask(entries, a, p, density)  # (E,), (E,)
    score = (_MEAN + b[row] + c[col]
             + _SIGNAL * np.einsum('ek,ek->e', u[row], v[col]) / np.sqrt(rank)
             + noise * entries.standard_normal(row.size))
    value = np.clip(np.rint(score), 1, 5).astype(np.float32)
    index = torch.from_numpy(np.stack([row, col]))  # (2, E)
    value = torch.from_numpy(value)

    if test_fraction == 0:
        return MatrixGraph(index, value, num_rows, num_cols)
    is_test = np.zeros(row.size, dtype=bool)
    is_test[split.permutation(row.size)[:round(test_fraction * row.size)]] = 1
    is_test = torch.from_numpy(is_test)
    return MatrixGraph(index[:, ~is_test], value[~is_test], num_rows,
                       num_cols, edge_label_index=index[:, is_test],
                       edge_label=value[is_test])


def _draw_side(rng: np.random.Generator, num: int, centres: np.ndarray,
               skew: float) -> tuple:
    r"""Factors ``(num, rank)``, biases ``(num,)`` and activities ``(num,)``
    of ``num`` independent rows (or columns)."""
    num_clusters, rank = centres.shape
    cluster = rng.integers(num_clusters, size=num)
    factors = centres[cluster] + _WITHIN_STD * rng.standard_normal(
        (num, rank))
    bias = _BIAS_STD * rng.standard_normal(num)
    activity = np.exp(skew * rng.standard_normal(num))
    return factors, bias, activity


def _draw_mask(rng: np.random.Generator, a: np.ndarray, p: np.ndarray,
               density: float) -> tuple:
    r"""Observed positions, each ``(i, j)`` with probability
    ``min(1, scale * a[i] * p[j])``, in (row, column) order."""
    num_rows, num_cols = a.size, p.size
    scale = _solve_scale(a, p, density * num_rows * num_cols)
    rows_per_chunk = max(1, _CHUNK // num_cols)
    found = []
    for start in range(0, num_rows, rows_per_chunk):
        prob = np.minimum(1.0, scale * np.outer(
            a[start:start + rows_per_chunk], p))  # (chunk, num_cols)
        hit = rng.random(prob.shape) < prob
        row, col = np.nonzero(hit)
        found.append((row + start, col))
    row = np.concatenate([r for r, _ in found]).astype(np.int64)
    col = np.concatenate([c for _, c in found]).astype(np.int64)
    return row, col


def _solve_scale(a: np.ndarray, p: np.ndarray, target: float) -> float:
    r"""The ``scale`` for which ``sum_ij min(1, scale * a_i * p_j)`` is
    ``target``, by bisection on its logarithm."""
    if target >= a.size * p.size:
        return np.inf
    p_sorted = np.sort(p)
    prefix = np.concatenate([[0.0], np.cumsum(p_sorted)])  # (num_cols + 1,)

    def expected(scale: float) -> float:
        # Row i observes column j surely when p_j >= 1 / (scale * a_i); the
        # other columns add scale * a_i * p_j each.
        cut = np.searchsorted(p_sorted, 1.0 / (scale * a), side='left')
        return float((p.size - cut).sum() + scale * (a * prefix[cut]).sum())

    low = np.log(target / (a.sum() * p.sum()))  # Ignores the cap: too low.
    high = low + 1.0
    while expected(np.exp(high)) < target:
        high += 2.0 * (high - low)
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if expected(np.exp(mid)) < target else (
            low, mid)
    return float(np.exp(high))


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"'{name}' must be an integer >= {minimum}, got "
                         f'{value!r}')


def _check_range(value, name: str, low: float, high: float, shown: str,
                 low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and \
        not isinstance(value, bool) and low <= value <= high
    if ok and low_open:
        ok = value > low
    if ok and high_open:
        ok = value < high
    if not ok:
        raise ValueError(f"'{name}' must be a number in {shown}, got "
                         f'{value!r}')
