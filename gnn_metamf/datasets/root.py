"""Where rating files live, how they are checked, fetched and cached.

Raw files are looked up in ``<data root>/<dataset>/`` and then in
``<cache dir>/raw/<dataset>/``. A missing file is fetched from the dataset's
public sources into the data root when that folder may be written, and into
the cache dir otherwise. Processed tensors are only ever written to
``<cache dir>/processed/``: the data root may be a read-only, shared folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

__all__ = [
    'ChecksumError',
    'DatasetNotFoundError',
    'RawDataset',
    'Source',
    'cache_dir',
    'data_root',
    'download_url',
    'sha256',
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Environment variables that override the default folders.
DATA_ENV = 'GNN_METAMF_DATA'
CACHE_ENV = 'GNN_METAMF_CACHE'

# Bump when the processed tensors of a dataset change meaning, so that old
# cache files are no longer found.
_CACHE_FORMAT = 1


class DatasetNotFoundError(FileNotFoundError):
    r"""A dataset's raw files are missing and could not be fetched."""


class ChecksumError(ValueError):
    r"""A raw file's sha256 is not the one published for it."""


@dataclass(frozen=True)
class Source:
    r"""One public place a dataset's raw files can be fetched from.

    Args:
        description (str): Says what is fetched, for messages.
        url (str): Where a person can fetch it by hand.
        fetch (callable): Writes the dataset's raw files into the folder it
            is given; raises :class:`OSError` (or any error) on failure.
    """
    description: str
    url: str
    fetch: Callable[[Path], None]


@dataclass(frozen=True)
class RawDataset:
    r"""What a dataset reads, from where, and how it becomes tensors.

    Args:
        name (str): The dataset's name, also its folder in the data root.
        checksums (dict): The sha256 of each raw file, or :obj:`None` where
            none is published.
        splits (dict): For each split, the raw files it reads.
        default_split (str): The split used when none is asked for.
        sources (tuple): The :class:`Source` objects to try, in order.
        process (callable): ``process(paths, split)`` turns a dict of raw
            file paths into a dict of tensors for :class:`MatrixGraph`.
    """
    name: str
    checksums: Mapping[str, Optional[str]]
    splits: Mapping[str, tuple]
    default_split: str
    sources: tuple
    process: Callable[[dict, str], dict]


def data_root(root: Optional[PathLike] = None) -> Path:
    r"""The folder that holds one sub-folder of raw files per dataset.

    Args:
        root (str or Path, optional): Used when given; else the environment
            variable ``GNN_METAMF_DATA``; else the repository's ``datasets/``
            folder. (default: :obj:`None`)
    """
    if root is None:
        root = os.environ.get(DATA_ENV) or None
    if root is None:
        return Path(__file__).resolve().parents[2] / 'datasets'
    return Path(root).expanduser()


def cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    r"""The writable folder for processed tensors and fetched raw files.

    Args:
        cache_dir (str or Path, optional): Used when given; else the
            environment variable ``GNN_METAMF_CACHE``; else
            ``~/.cache/gnn_metamf``. (default: :obj:`None`)
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or None
    if cache_dir is None:
        return Path('~/.cache/gnn_metamf').expanduser()
    return Path(cache_dir).expanduser()


def sha256(path: PathLike) -> str:
    r"""The hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: PathLike, expected: Optional[str],
                 url: str = '') -> str:
    r"""Returns the sha256 of ``path``; raises :class:`ChecksumError` when
    ``expected`` is given and differs."""
    actual = sha256(path)
    if expected is not None and actual != expected:
        hint = f' from {url}' if url else ''
        raise ChecksumError(
            f"sha256 of '{path}' is {actual}, expected {expected}: the file "
            f"is damaged or another version; replace it with the file"
            f"{hint}")
    return actual


def check_bytes(data: bytes, expected: Optional[str], name: str) -> None:
    r"""Raises :class:`ChecksumError` when ``data`` (the would-be content of
    file ``name``) does not have the sha256 ``expected``."""
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise ChecksumError(f"sha256 of {name} is {actual}, expected "
                            f"{expected}")


def is_writable(folder: Path) -> bool:
    r"""Whether files can be created in ``folder``, making it if needed.

    A folder whose permission bits deny writing counts as read-only even for
    a superuser, who could write there anyway: a shared data root is marked
    read-only on purpose.
    """
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return False
        existing = existing.parent
    mode = existing.stat().st_mode
    if not (existing.is_dir() and os.access(existing, os.W_OK)
            and mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def write_atomic(path: Path, data: Union[bytes, Callable[[Any], None]]
                 ) -> None:
    r"""Writes ``path`` through a temporary file in the same folder and
    :func:`os.replace`, so that readers never see a partial file.

    ``data`` is the content, or a function that writes into a binary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def download_url(url: str, path: Path, timeout: float = 60.0) -> Path:
    r"""Downloads ``url`` to ``path`` (atomically) and returns ``path``.

    Raises:
        OSError: When the download fails (no network, HTTP error, ...).
    """
    log.info('downloading %s to %s', url, path)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        write_atomic(path, lambda f: _copy(response, f))
    return path


def _copy(src: Any, dst: Any) -> None:
    for block in iter(lambda: src.read(1 << 20), b''):
        dst.write(block)


# ----------------------------------------------------------------------
# Finding, fetching and caching a raw dataset.

def raw_paths(spec: RawDataset, split: str, root: Path, cache: Path,
              download: bool) -> tuple[dict, str]:
    r"""The verified paths of the raw files ``split`` reads, fetching them
    when missing and ``download`` is true, and one sha256 of them all.

    Raises:
        DatasetNotFoundError: When a file is missing and cannot be fetched.
        ChecksumError: When a file's sha256 is not the published one.
    """
    names = spec.splits[split]
    found = _locate(spec.name, names, root, cache)
    failures: list = []
    if download and len(found) < len(names):
        target = root / spec.name
        created = not target.exists()
        if not is_writable(target):
            target = cache / 'raw' / spec.name
            created = not target.exists()
        for source in spec.sources:
            try:
                source.fetch(target)
            except Exception as error:  # Any failure: try the next source.
                log.info('fetching %s failed: %s', source.description, error)
                failures.append(f'{source.description} ({source.url}): '
                                f'{type(error).__name__}: {error}')
                continue
            log.info('fetched %s into %s', source.description, target)
            found = _locate(spec.name, names, root, cache)
            if len(found) == len(names):
                break
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # Leave no empty folder behind.
    if len(found) < len(names):
        raise _not_found(spec, names, found, root, cache, download, failures)

    url = spec.sources[0].url if spec.sources else ''
    digest = hashlib.sha256()
    for name in sorted(found):
        actual = check_sha256(found[name], spec.checksums.get(name), url)
        digest.update(f'{name}:{actual};'.encode())
    return found, digest.hexdigest()


def _locate(dataset: str, names: Sequence[str], root: Path,
            cache: Path) -> dict:
    found = {}
    for name in names:
        for folder in (root / dataset, cache / 'raw' / dataset):
            if (folder / name).is_file():
                found[name] = folder / name
                break
    return found


def _not_found(spec: RawDataset, names: Sequence[str], found: dict,
               root: Path, cache: Path, download: bool,
               failures: list) -> DatasetNotFoundError:
    missing = [name for name in names if name not in found]
    sources = '; '.join(f'{s.description}: {s.url}' for s in spec.sources)
    if not download:
        why = 'download=False'
    elif failures:
        why = 'download failed: ' + ' | '.join(failures)
    else:
        why = 'no public source is known'
    return DatasetNotFoundError(
        f"dataset {spec.name!r} is missing {', '.join(missing)}: expected in "
        f"'{root / spec.name}' (or '{cache / 'raw' / spec.name}'); fetch "
        f"from {sources} and put the file(s) there, or set {DATA_ENV} to "
        f"the folder that holds '{spec.name}/' ({why})")


def load_processed(spec: RawDataset, split: str, paths: dict, digest: str,
                   cache: Path) -> dict:
    r"""The processed tensors of a split, from the cache when present.

    The cache file is named by dataset, split and ``digest``, the sha256 of
    the raw files from :func:`raw_paths`, so a changed raw file is processed
    again.
    """
    key = f'{spec.name}-{split}-{digest[:16]}-v{_CACHE_FORMAT}'
    path = cache / 'processed' / f'{key}.pt'

    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as error:  # A damaged cache is rebuilt.
            log.warning('ignoring unreadable cache file %s: %s', path, error)

    tensors = spec.process(paths, split)
    try:
        write_atomic(path, lambda f: torch.save(tensors, f))
    except OSError as error:  # The cache only saves time.
        log.warning('cannot write cache file %s: %s', path, error)
    else:
        log.debug('cached %s split %r in %s', spec.name, split, path)
    return tensors
