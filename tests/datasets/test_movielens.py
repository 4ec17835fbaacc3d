import hashlib
import zipfile

import pytest
import torch

from gnn_metamf.datasets import load_dataset, movielens
from gnn_metamf.datasets import root as data_files
from gnn_metamf.datasets.movielens import (
    ML_100K_SHA256,
    RECBOLE_HEADER,
    RECBOLE_MEMBER,
    download_recbole_wheel,
    ml_100k_from_recbole,
)


def entry_keys(index, num_cols):
    return set((index[0] * num_cols + index[1]).tolist())


@pytest.mark.data
def test_ml_100k_real(real_root, cache, listing):
    root = real_root('ml-100k', 'u.data', 'u1.base', 'u1.test')
    before = listing(root)

    graph = load_dataset('ml-100k', root)
    assert (graph.num_rows, graph.num_cols) == (943, 1682)
    assert graph.num_entries == 80_000
    assert graph.edge_label_index.shape == (2, 20_000)
    assert graph.edge_value.dtype == torch.float32
    for value in (graph.edge_value, graph.edge_label):
        assert set(value.unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    train = entry_keys(graph.edge_index, 1682)
    test = entry_keys(graph.edge_label_index, 1682)
    assert not train & test

    full = load_dataset('ml-100k', root, split='all')
    assert full.num_entries == 100_000 and full.get('edge_label') is None
    assert (full.num_rows, full.num_cols) == (943, 1682)
    assert entry_keys(full.edge_index, 1682) == train | test
    # u.data's first line: user 196 rated movie 242 with 3.
    assert full.edge_index[:, 0].tolist() == [195, 241]
    assert full.edge_value[0] == 3

    assert listing(root) == before
    assert len(list((cache / 'processed').glob('ml-100k-*.pt'))) == 2


@pytest.mark.data
def test_ml_100k_real_second_call_from_cache(real_root, monkeypatch):
    root = real_root('ml-100k', 'u1.base', 'u1.test')
    first = load_dataset('ml-100k', root)

    def fail(*args):
        raise AssertionError('the second call must be served from the cache')

    monkeypatch.setattr(movielens, '_read_ratings', fail)
    second = load_dataset('ml-100k', root)
    for key in ('edge_index', 'edge_value', 'edge_label_index',
                'edge_label'):
        assert torch.equal(first[key], second[key])


def test_ml_1m_fake_file(tmp_path, listing):
    root = tmp_path / 'root'
    folder = root / 'ml-1m'
    folder.mkdir(parents=True)
    (folder / 'ratings.dat').write_bytes(
        b'1::1193::5::978300760\n'
        b'1::661::3::978302109\n'
        b'3::3952::4::978301968\n')
    before = listing(root)
    graph = load_dataset('ml-1m', root)
    # GroupLens' ids minus one; the largest ids give the shape.
    assert (graph.num_rows, graph.num_cols) == (3, 3952)
    assert graph.edge_index.tolist() == [[0, 0, 2], [1192, 660, 3951]]
    assert graph.edge_value.tolist() == [5.0, 3.0, 4.0]
    assert graph.edge_value.dtype == torch.float32
    assert graph.get('edge_label_index') is None
    assert listing(root) == before

    with pytest.raises(ValueError, match=r"unknown split 'u1' of 'ml-1m'"):
        load_dataset('ml-1m', root, split='u1')


@pytest.mark.parametrize('content, match', [
    (b'1::2::3\n', r'has 3 columns, expected 4'),
    (b'0::2::3::4\n', r"has id 0, expected GroupLens' 1-based ids"),
    (b'1::x::3::4\n', r'cannot read .*ratings\.dat'),
])
def test_ml_1m_bad_file(tmp_path, content, match):
    (tmp_path / 'ml-1m').mkdir()
    (tmp_path / 'ml-1m' / 'ratings.dat').write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_dataset('ml-1m', tmp_path)


def fake_wheel(path, lines, header=RECBOLE_HEADER):
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr(RECBOLE_MEMBER, header + b'\n' + b''.join(lines))
    return path


def test_recbole_derivation_on_a_fake_wheel(tmp_path, monkeypatch):
    lines = [b'3\t1\t4\t5\n', b'1\t2\t5\t6\n', b'2\t2\t1\t7\n',
             b'1\t1\t3\t8\n', b'3\t2\t2\t9\n']
    expected = {
        'u.data': b''.join(lines),
        'u1.test': lines[1] + lines[0],  # The first 2 lines, sorted.
        'u1.base': lines[3] + lines[2] + lines[4],  # The rest, sorted.
    }
    for name, data in expected.items():
        monkeypatch.setitem(ML_100K_SHA256, name,
                            hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(movielens, 'U1_TEST_LINES', 2)
    wheel = fake_wheel(tmp_path / 'recbole-1.2.1-py3-none-any.whl', lines)
    assert ml_100k_from_recbole(wheel) == expected

    # The whole fallback: GroupLens is offline, the wheel comes from pip.
    monkeypatch.setattr(movielens, 'download_recbole_wheel',
                        lambda folder: wheel)
    root = tmp_path / 'root'
    graph = load_dataset('ml-100k', root)
    assert graph.edge_index.tolist() == [[0, 1, 2], [0, 1, 1]]
    assert graph.edge_label_index.tolist() == [[0, 2], [1, 0]]
    for name, data in expected.items():
        assert (root / 'ml-100k' / name).read_bytes() == data


def test_recbole_rejects_other_content(tmp_path):
    wheel = fake_wheel(tmp_path / 'a.whl', [b'1\t1\t1\t1\n'])
    with pytest.raises(data_files.ChecksumError,
                       match=r'sha256 of u\.data rebuilt from a\.whl'):
        ml_100k_from_recbole(wheel)
    wheel = fake_wheel(tmp_path / 'b.whl', [], header=b'user\titem')
    with pytest.raises(ValueError, match=r'starts with .*expected'):
        ml_100k_from_recbole(wheel)


@pytest.mark.slow
def test_ml_100k_from_the_recbole_wheel(tmp_path, monkeypatch):
    # Needs the package index (PyPI); GroupLens stays unreachable here.
    try:
        wheel = download_recbole_wheel(tmp_path / 'wheel')
    except OSError as error:
        pytest.skip(f'cannot download the RecBole wheel with pip: {error}')
    monkeypatch.setattr(movielens, 'download_recbole_wheel',
                        lambda folder: wheel)

    root = tmp_path / 'root'
    graph = load_dataset('ml-100k', root)
    assert (graph.num_rows, graph.num_cols) == (943, 1682)
    assert graph.num_entries == 80_000
    assert graph.edge_label_index.size(1) == 20_000
    for name, digest in ML_100K_SHA256.items():
        assert data_files.sha256(root / 'ml-100k' / name) == digest
    assert load_dataset('ml-100k', root, split='all').num_entries == 100_000
