import pytest

import gnn_metamf.datasets as datasets
from gnn_metamf import MatrixGraph
from gnn_metamf.datasets import DATASET_NAMES, load_dataset


def test_public_api():
    assert DATASET_NAMES == ('ml-100k', 'ml-1m', 'douban', 'flixster',
                             'yahoo_music', 'synthetic')
    for name in datasets.__all__:
        assert hasattr(datasets, name)


def test_load_synthetic_by_name(tmp_path):
    graph = load_dataset('synthetic', tmp_path / 'unused', seed=2,
                         num_rows=50, num_cols=40)
    assert isinstance(graph, MatrixGraph)
    assert (graph.num_rows, graph.num_cols) == (50, 40)
    assert graph.edge_label_index.size(1) > 0
    assert not (tmp_path / 'unused').exists()


@pytest.mark.parametrize('args, kwargs, match', [
    (('movielens',), {}, r"unknown dataset 'movielens', expected one of"),
    (('douban',), {'split': 'u1'},
     r"unknown split 'u1' of 'douban', expected one of \('standard', "
     r"'all'\)"),
    (('ml-100k',), {'seed': 0},
     r"load_dataset\('ml-100k'\) takes no further keyword arguments, got "
     r"\['seed'\]"),
    (('synthetic',), {'split': 'u1'}, r"unknown split 'u1' of 'synthetic'"),
    (('synthetic',), {'split': 'all', 'test_fraction': 0.1},
     r"split='all' has no test entries"),
    (('synthetic',), {'size': 3}, r"unexpected argument\(s\) \['size'\]"),
])
def test_load_dataset_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(*args, **kwargs)
