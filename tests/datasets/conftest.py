"""Fixtures shared by the dataset tests.

No test reaches the network or the user's cache: every test gets a fresh
cache dir, and the two ways of fetching raw files fail unless a test replaces
them itself.
"""
from pathlib import Path

import pytest

from gnn_metamf.datasets import data_root, movielens
from gnn_metamf.datasets import root as data_files


def _offline(*args, **kwargs):
    raise OSError('network disabled in tests')


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv('GNN_METAMF_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(data_files, 'download_url', _offline)
    monkeypatch.setattr(movielens, 'download_recbole_wheel', _offline)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / 'cache'


@pytest.fixture
def real_root():
    r"""``real_root(name, *files)``: the data root holding ``<name>/<files>``,
    or a skipped test."""
    def find(name: str, *files: str) -> Path:
        root = data_root()
        missing = [f for f in files if not (root / name / f).is_file()]
        if missing:
            pytest.skip(f"real data absent: {name}/{', '.join(missing)} not "
                        f"in '{root}' (set GNN_METAMF_DATA to the data root)")
        return root
    return find


@pytest.fixture
def listing():
    r"""``listing(folder)``: every path under ``folder`` with its size and
    modification time, to show that nothing was written there."""
    def walk(folder: Path) -> list:
        return sorted((str(p.relative_to(folder)), p.stat().st_size,
                       p.stat().st_mtime_ns) for p in folder.rglob('*'))
    return walk
