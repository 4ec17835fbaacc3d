import numpy as np
import pytest
import torch

from gnn_metamf.datasets import load_dataset, make_synthetic


def all_entries(graph):
    index, value = graph.edge_index, graph.edge_value
    if graph.get('edge_label_index') is not None:
        index = torch.cat([index, graph.edge_label_index], dim=1)
        value = torch.cat([value, graph.edge_label])
    return index, value


def explained(matrix, k):
    r"""Fraction of the variance around the mean that the best rank-``k``
    approximation explains."""
    s = np.linalg.svd(matrix - matrix.mean(), compute_uv=False)**2
    return s[:k].sum() / s.sum()


def test_synthetic_reproducible_from_seed():
    a = make_synthetic(200, 150, seed=3)
    b = make_synthetic(200, 150, seed=3)
    for key in ('edge_index', 'edge_value', 'edge_label_index',
                'edge_label'):
        assert torch.equal(a[key], b[key])
    c = make_synthetic(200, 150, seed=4)
    assert not torch.equal(all_entries(a)[0], all_entries(c)[0])


def test_synthetic_size_density_values():
    graph = make_synthetic(400, 300, density=0.05, test_fraction=0.2)
    assert (graph.num_rows, graph.num_cols) == (400, 300)
    index, value = all_entries(graph)
    assert abs(value.numel() / (400 * 300) - 0.05) < 0.005
    assert graph.edge_label.numel() == round(0.2 * value.numel())
    assert value.dtype == torch.float32
    assert set(value.unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    keys = index[0] * 300 + index[1]
    assert keys.unique().numel() == keys.numel()  # Train, test disjoint.


def test_synthetic_split_all_is_the_union():
    standard = load_dataset('synthetic', num_rows=120, num_cols=90, seed=1)
    full = load_dataset('synthetic', split='all', num_rows=120, num_cols=90,
                        seed=1)
    assert full.get('edge_label_index') is None
    index, value = all_entries(standard)
    order = torch.argsort(index[0] * 90 + index[1])
    assert torch.equal(index[:, order], full.edge_index)
    assert torch.equal(value[order], full.edge_value)


def test_synthetic_degrees_are_skewed():
    def top_share(skew):
        graph = make_synthetic(1000, 500, degree_skew=skew, test_fraction=0)
        degree = torch.bincount(graph.edge_index[0], minlength=1000)
        return degree.sort(descending=True).values[:100].sum() / \
            degree.sum()

    assert top_share(1.0) > 0.25  # The busiest 10% of rows.
    assert top_share(0.0) < 0.15


def test_synthetic_is_low_rank():
    graph = make_synthetic(150, 120, density=1.0, noise=0.0, test_fraction=0)
    assert graph.num_entries == 150 * 120
    matrix = graph.to_dense().double().numpy()
    # Rank 5 plus the two bias terms, blurred by rounding and clipping.
    assert explained(matrix, 7) > 0.85
    shuffled = np.random.default_rng(0).permutation(matrix.ravel())
    assert explained(shuffled.reshape(matrix.shape), 7) < 0.3

    noisy = make_synthetic(150, 120, density=1.0, test_fraction=0)
    assert explained(noisy.to_dense().double().numpy(), 7) > 0.6


def test_synthetic_sub_matrices_share_structure():
    # Rows are drawn independently: two halves rate alike.
    graph = make_synthetic(2000, 400, density=0.1, test_fraction=0)
    first = graph.edge_index[0] < 1000
    hist = [torch.bincount(graph.edge_value[half].long(), minlength=6)[1:]
            / int(half.sum()) for half in (first, ~first)]
    assert (hist[0] - hist[1]).abs().sum() < 0.05


@pytest.mark.parametrize('kwargs, match', [
    ({'num_rows': 0}, r"'num_rows' must be an integer >= 1, got 0"),
    ({'rank': 2.5}, r"'rank' must be an integer >= 1, got 2.5"),
    ({'density': 0.0}, r"'density' must be a number in \(0, 1\], got 0.0"),
    ({'test_fraction': 1.0}, r"'test_fraction' must be a number in "
                             r'\[0, 1\), got 1.0'),
    ({'noise': -1}, r"'noise' must be a number in \[0, inf\), got -1"),
])
def test_synthetic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)
