"""One entry point, :func:`load_dataset`, for every dataset by name."""
from __future__ import annotations

from inspect import signature
from typing import Any, Optional

from ..data import MatrixGraph
from . import matlab, movielens
from . import root as _root
from .root import PathLike
from .synthetic import make_synthetic

__all__ = ['DATASET_NAMES', 'load_dataset']

#: Names :func:`load_dataset` accepts.
DATASET_NAMES = ('ml-100k', 'ml-1m', 'douban', 'flixster', 'yahoo_music',
                 'synthetic')

_RAW = {
    'ml-100k': movielens.ML_100K,
    'ml-1m': movielens.ML_1M,
    'douban': matlab.DOUBAN,
    'flixster': matlab.FLIXSTER,
    'yahoo_music': matlab.YAHOO_MUSIC,
}

_SYNTHETIC_SPLITS = ('standard', 'all')


def load_dataset(
    name: str,
    root: Optional[PathLike] = None,
    *,
    split: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    download: bool = True,
    **kwargs: Any,
) -> MatrixGraph:
    r"""Loads a rating matrix: users are rows, items columns, ids 0-based.

    The observed (training) entries are ``edge_index`` / ``edge_value``; the
    dataset's standard test entries, when the split has them, are
    ``edge_label_index`` / ``edge_label``. Values are float32.

    ============= ============================ ============= ===============
    name          splits (first: default)      shape         values
    ============= ============================ ============= ===============
    ml-100k       ``'u1'``, ``'all'``          943 x 1682    1 .. 5
    ml-1m         ``'all'``                    6040 x 3952   1 .. 5
    douban        ``'standard'``, ``'all'``    3000 x 3000   1 .. 5
    flixster      ``'standard'``, ``'all'``    3000 x 3000   0.5 .. 5
    yahoo_music   ``'standard'``, ``'all'``    3000 x 3000   1 .. 100
    synthetic     ``'standard'``, ``'all'``    as asked      1 .. 5
    ============= ============================ ============= ===============

    ``'u1'`` is GroupLens' ``u1.base`` / ``u1.test`` (80,000 / 20,000);
    ``'standard'`` the ``Otraining`` / ``Otest`` masks of Monti et al.
    (2017); ``'all'`` every rating as observed, with no query. MovieLens 1M
    keeps GroupLens' movie ids, so 246 of its columns are empty.

    Raw files are read from ``<root>/<name>/`` (see ``datasets/README.md``
    for the layout, sources and checksums), checked by sha256, and the
    processed tensors cached in ``cache_dir``, never in ``root``.

    Args:
        name (str): One of :obj:`DATASET_NAMES`.
        root (str or Path, optional): The data root, see :func:`data_root`.
            (default: :obj:`None`)
        split (str, optional): Which entries to observe and to query, see
            above. (default: :obj:`None`)
        cache_dir (str or Path, optional): See :func:`cache_dir`.
            (default: :obj:`None`)
        download (bool): Fetch missing raw files from their public sources
            (into ``root`` when it is writable, else into ``cache_dir``).
            (default: :obj:`True`)
        **kwargs: For ``'synthetic'`` only, the arguments of
            :func:`make_synthetic` (``seed``, ``num_rows``, ...), except
            ``test_fraction`` with ``split='all'``. (``'synthetic'`` reads
            no files and ignores ``root``, ``cache_dir`` and ``download``.)

    Raises:
        ValueError: For an unknown name or split, or unexpected arguments.
        DatasetNotFoundError: When raw files are missing and cannot be
            fetched; the message says which files go where, and from where.
        ChecksumError: When a raw file's sha256 is not the published one.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f'unknown dataset {name!r}, expected one of '
                         f'{DATASET_NAMES}')
    if name == 'synthetic':
        return _load_synthetic(split, kwargs)

    spec = _RAW[name]
    if kwargs:
        raise ValueError(f'load_dataset({name!r}) takes no further keyword '
                         f'arguments, got {sorted(kwargs)}')
    split = spec.default_split if split is None else split
    if split not in spec.splits:
        raise ValueError(f'unknown split {split!r} of {name!r}, expected one '
                         f'of {tuple(spec.splits)}')

    root, cache = _root.data_root(root), _root.cache_dir(cache_dir)
    paths, digest = _root.raw_paths(spec, split, root, cache, download)
    tensors = _root.load_processed(spec, split, paths, digest, cache)
    return MatrixGraph(**tensors)


def _load_synthetic(split: Optional[str], kwargs: dict) -> MatrixGraph:
    split = 'standard' if split is None else split
    if split not in _SYNTHETIC_SPLITS:
        raise ValueError(f"unknown split {split!r} of 'synthetic', expected "
                         f'one of {_SYNTHETIC_SPLITS}')
    if split == 'all':
        if 'test_fraction' in kwargs:
            raise ValueError("split='all' has no test entries, got "
                             f"test_fraction={kwargs['test_fraction']!r}")
        kwargs = dict(kwargs, test_fraction=0.0)
    unknown = sorted(set(kwargs) - set(signature(make_synthetic).parameters))
    if unknown:
        raise ValueError(f"load_dataset('synthetic') got unexpected "
                         f'argument(s) {unknown}; make_synthetic takes '
                         f'{list(signature(make_synthetic).parameters)}')
    return make_synthetic(**kwargs)
