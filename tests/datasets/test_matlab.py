import h5py
import numpy as np
import pytest
import torch

from gnn_metamf.datasets import load_dataset, matlab
from gnn_metamf.datasets import root as data_files

FILE = 'training_test_dataset.mat'

# A 4 x 5 (users x items) matrix: train, test and unobserved entries.
RATINGS = np.array([[1.0, 0.0, 4.5, 0.0, 2.0],
                    [0.0, 3.0, 0.0, 0.0, 0.0],
                    [5.0, 0.0, 0.0, 0.5, 0.0],
                    [0.0, 0.0, 2.5, 0.0, 4.0]])
TEST = np.zeros_like(RATINGS)
TEST[0, 4] = TEST[2, 3] = 1
TRAIN = (RATINGS != 0) & (TEST == 0)


def write_mat(path, arrays, sparse=()):
    r"""Writes ``arrays`` the way MATLAB 7.3 does: dense ones transposed,
    sparse ones as CSC groups."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, 'w') as f:
        for key, array in arrays.items():
            array = np.asarray(array, dtype=np.float64)
            if key not in sparse:
                f.create_dataset(key, data=array.T)
                continue
            row, col = np.nonzero(array.T)  # Column-major order.
            group = f.create_group(key)
            group.attrs['MATLAB_sparse'] = np.uint64(array.shape[0])
            group.create_dataset('ir', data=col.astype(np.uint64))
            group.create_dataset('data', data=array.T[row, col])
            jc = np.concatenate([[0], np.cumsum(np.bincount(
                row, minlength=array.shape[1]))])
            group.create_dataset('jc', data=jc.astype(np.uint64))
    return path


@pytest.fixture
def small_shape(monkeypatch):
    monkeypatch.setattr(matlab, 'SHAPE', RATINGS.shape)


@pytest.mark.parametrize('sparse', [(), ('M', 'Otraining', 'Otest')],
                         ids=['dense', 'sparse'])
def test_flixster_fake_file(tmp_path, small_shape, listing, sparse):
    root = tmp_path / 'root'
    write_mat(root / 'flixster' / FILE,
              {'M': RATINGS, 'Otraining': TRAIN, 'Otest': TEST}, sparse)
    before = listing(root)

    graph = load_dataset('flixster', root)
    assert (graph.num_rows, graph.num_cols) == (4, 5)
    assert graph.edge_index.tolist() == [[0, 0, 1, 2, 3, 3],
                                         [0, 2, 1, 0, 2, 4]]
    assert graph.edge_value.tolist() == [1.0, 4.5, 3.0, 5.0, 2.5, 4.0]
    assert graph.edge_value.dtype == torch.float32
    assert graph.edge_label_index.tolist() == [[0, 2], [4, 3]]
    assert graph.edge_label.tolist() == [2.0, 0.5]

    full = load_dataset('flixster', root, split='all')
    assert full.num_entries == 8 and full.get('edge_label_index') is None
    assert torch.equal(full.to_dense(0.0), torch.from_numpy(RATINGS).float())
    assert listing(root) == before


def test_mat_shape_and_overlap_errors(tmp_path, small_shape):
    write_mat(tmp_path / 'flixster' / FILE,
              {'M': RATINGS.T, 'Otraining': TRAIN.T, 'Otest': TEST.T})
    with pytest.raises(ValueError, match=r"'M' of .* has shape \(5, 4\), "
                                         r'expected \(4, 5\)'):
        load_dataset('flixster', tmp_path)

    write_mat(tmp_path / 'flixster' / FILE,
              {'M': RATINGS, 'Otraining': RATINGS != 0, 'Otest': TEST})
    with pytest.raises(ValueError, match=r'share 2 entries, expected '
                                         r'disjoint'):
        load_dataset('flixster', tmp_path, split='all')

    write_mat(tmp_path / 'flixster' / FILE, {'M': RATINGS, 'Otest': TEST})
    with pytest.raises(KeyError, match=r"no array 'Otraining'"):
        load_dataset('flixster', tmp_path)


def test_mat_download_is_checked(tmp_path, cache, monkeypatch):
    def download(url, path, timeout=60.0):
        assert url.endswith('/raw_data/douban/' + FILE)
        data_files.write_atomic(path, b'not the douban file')
        return path

    monkeypatch.setattr(data_files, 'download_url', download)
    with pytest.raises(data_files.DatasetNotFoundError,
                       match=r'ChecksumError: sha256 of .* expected '
                             r'1f4476321cbf'):
        load_dataset('douban', tmp_path / 'root')
    assert not (tmp_path / 'root' / 'douban' / FILE).exists()


@pytest.mark.data
@pytest.mark.parametrize('name, train, test, top', [
    ('douban', 123_202, 13_689, 5.0),
    ('yahoo_music', 4_802, 533, 100.0),
])
def test_mat_real(real_root, cache, listing, name, train, test, top):
    root = real_root(name, FILE)
    before = listing(root)

    graph = load_dataset(name, root)
    assert (graph.num_rows, graph.num_cols) == (3000, 3000)
    assert graph.num_entries == train
    assert graph.edge_label_index.size(1) == test
    for value in (graph.edge_value, graph.edge_label):
        assert value.dtype == torch.float32
        assert value.min() >= 1.0 and value.max() <= top
    assert torch.cat([graph.edge_value, graph.edge_label]).max() == top
    keys = graph.edge_index[0] * 3000 + graph.edge_index[1]
    label_keys = graph.edge_label_index[0] * 3000 + graph.edge_label_index[1]
    assert not torch.isin(label_keys, keys).any()

    full = load_dataset(name, root, split='all')
    assert full.num_entries == train + test
    assert listing(root) == before
    assert len(list((cache / 'processed').glob(f'{name}-*.pt'))) == 2


@pytest.mark.data
def test_mat_real_second_call_from_cache(real_root, monkeypatch):
    root = real_root('yahoo_music', FILE)
    first = load_dataset('yahoo_music', root)

    def fail(*args):
        raise AssertionError('the second call must be served from the cache')

    monkeypatch.setattr(matlab, 'read_mat', fail)
    second = load_dataset('yahoo_music', root)
    for key in ('edge_index', 'edge_value', 'edge_label_index',
                'edge_label'):
        assert torch.equal(first[key], second[key])
