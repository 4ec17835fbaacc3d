import logging
import re
from pathlib import Path

import pytest

from gnn_metamf.datasets import (
    ChecksumError,
    DatasetNotFoundError,
    cache_dir,
    data_root,
    load_dataset,
)
from gnn_metamf.datasets import root as data_files
from gnn_metamf.datasets.movielens import ML_100K_URL

REPO = Path(__file__).resolve().parents[2]

ML_1M_LINES = b'1::10::5::978300760\n2::3::3::978302109\n2::10::4::9783\n'


def write_ml_1m(root: Path, data: bytes = ML_1M_LINES) -> Path:
    path = root / 'ml-1m' / 'ratings.dat'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv('GNN_METAMF_DATA', raising=False)
    assert data_root() == REPO / 'datasets'
    monkeypatch.setenv('GNN_METAMF_DATA', str(tmp_path / 'env'))
    assert data_root() == tmp_path / 'env'
    assert data_root(tmp_path / 'arg') == tmp_path / 'arg'
    assert data_root(str(tmp_path)) == tmp_path


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv('GNN_METAMF_CACHE', raising=False)
    assert cache_dir() == Path('~/.cache/gnn_metamf').expanduser()
    monkeypatch.setenv('GNN_METAMF_CACHE', str(tmp_path / 'env'))
    assert cache_dir() == tmp_path / 'env'
    assert cache_dir(tmp_path / 'arg') == tmp_path / 'arg'


def test_missing_files_offline_error_names_file_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset('ml-100k', tmp_path / 'root')
    message = str(info.value)
    assert 'u1.base' in message and 'u1.test' in message
    assert ML_100K_URL in message
    assert str(tmp_path / 'root' / 'ml-100k') in message
    assert 'network disabled in tests' in message  # Why the download failed.
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / 'root' / 'ml-100k').exists()  # No empty folder.

    url = ('https://raw.githubusercontent.com/muhanzhang/IGMC/master/'
           'raw_data/douban/training_test_dataset.mat')
    with pytest.raises(DatasetNotFoundError,
                       match=rf'(?s)training_test_dataset\.mat.*'
                             rf'{re.escape(url)}'):
        load_dataset('douban', tmp_path / 'root')


def test_missing_files_without_download(tmp_path, monkeypatch):
    def fail(*args):
        raise AssertionError('download=False must not download')

    monkeypatch.setattr(data_files, 'download_url', fail)
    with pytest.raises(DatasetNotFoundError,
                       match=r'ratings\.dat.*download=False'):
        load_dataset('ml-1m', tmp_path, download=False)


def test_checksum_mismatch(tmp_path):
    folder = tmp_path / 'ml-100k'
    folder.mkdir()
    (folder / 'u1.base').write_bytes(b'1\t1\t5\t881250949\n')
    (folder / 'u1.test').write_bytes(b'1\t2\t3\t881250950\n')
    expected = data_files.sha256(folder / 'u1.base')
    with pytest.raises(ChecksumError) as info:
        load_dataset('ml-100k', tmp_path)
    message = str(info.value)
    assert str(folder / 'u1.base') in message
    assert expected in message  # The actual hash.
    assert 'ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a' \
        in message


def test_cache_written_to_cache_dir_and_reused(tmp_path, cache, listing,
                                               monkeypatch):
    root = tmp_path / 'root'
    write_ml_1m(root)
    before = listing(root)
    graph = load_dataset('ml-1m', root)
    assert listing(root) == before
    assert len(list((cache / 'processed').glob('ml-1m-all-*.pt'))) == 1

    from gnn_metamf.datasets import movielens

    def fail(*args):
        raise AssertionError('the second call must be served from the cache')

    monkeypatch.setattr(movielens, '_read_ratings', fail)
    again = load_dataset('ml-1m', root)
    assert again.edge_index.equal(graph.edge_index)
    assert again.edge_value.equal(graph.edge_value)
    assert (again.num_rows, again.num_cols) == (graph.num_rows, graph.num_cols)


def test_cache_follows_raw_file_changes(tmp_path, cache):
    root = tmp_path / 'root'
    path = write_ml_1m(root)
    assert load_dataset('ml-1m', root).edge_value.tolist() == [5, 3, 4]
    path.write_bytes(ML_1M_LINES.replace(b'::5::', b'::1::'))
    assert load_dataset('ml-1m', root).edge_value.tolist() == [1, 3, 4]
    assert len(list((cache / 'processed').glob('*.pt'))) == 2


def test_damaged_cache_is_rebuilt(tmp_path, cache, caplog):
    root = tmp_path / 'root'
    write_ml_1m(root)
    load_dataset('ml-1m', root)
    (cached,) = (cache / 'processed').glob('*.pt')
    cached.write_bytes(b'not a torch file')
    with caplog.at_level(logging.WARNING, logger='gnn_metamf.datasets'):
        graph = load_dataset('ml-1m', root)
    assert graph.num_entries == 3
    assert 'unreadable cache file' in caplog.text


def fake_download(content: bytes):
    def download(url, path, timeout=60.0):
        data_files.write_atomic(Path(path), content)
        return Path(path)
    return download


def test_download_goes_to_writable_root(tmp_path, cache, monkeypatch):
    import zipfile
    archive = tmp_path / 'ml-1m.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.writestr('ml-1m/ratings.dat', ML_1M_LINES)
    monkeypatch.setattr(data_files, 'download_url',
                        fake_download(archive.read_bytes()))
    root = tmp_path / 'root'
    graph = load_dataset('ml-1m', root)
    assert graph.num_entries == 3
    assert (root / 'ml-1m' / 'ratings.dat').read_bytes() == ML_1M_LINES
    assert not (cache / 'raw').exists()


def test_download_goes_to_cache_when_root_read_only(tmp_path, cache,
                                                    monkeypatch, listing):
    import zipfile
    archive = tmp_path / 'ml-1m.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.writestr('ml-1m/ratings.dat', ML_1M_LINES)
    monkeypatch.setattr(data_files, 'download_url',
                        fake_download(archive.read_bytes()))
    root = tmp_path / 'root'
    root.mkdir()
    root.chmod(0o555)
    try:
        graph = load_dataset('ml-1m', root)
        assert listing(root) == []
    finally:
        root.chmod(0o755)
    assert graph.num_entries == 3
    assert (cache / 'raw' / 'ml-1m' / 'ratings.dat').is_file()
    # Found there the next time, without a download.
    monkeypatch.setattr(data_files, 'download_url', None)
    assert load_dataset('ml-1m', root).num_entries == 3


def test_write_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / 'sub' / 'file.bin'

    def broken(f):
        f.write(b'half')
        raise RuntimeError('interrupted')

    with pytest.raises(RuntimeError, match='interrupted'):
        data_files.write_atomic(path, broken)
    assert list(path.parent.iterdir()) == []
    data_files.write_atomic(path, b'whole')
    assert path.read_bytes() == b'whole'
