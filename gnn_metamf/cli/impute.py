"""``gnn-metamf impute``: predicts entries of the user's own matrix."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ..data import DUPLICATE_POLICIES, MatrixGraph
from ..datasets.root import write_atomic
from ..nn import MetaMF
from .common import (
    CLIError,
    Formatter,
    input_file,
    natural_int,
    positive_int,
    read_table,
    same_file,
    separator,
)

OUTPUT_COLUMNS = ('row', 'col', 'prediction', 'std')

_DESCRIPTION = """\
Predict entries of a partially observed matrix with a trained model. The
model adapts to the matrix when it reads it: no training on it is needed.

--observed is a CSV file (TSV for .tsv and .tab files, or see --sep) with
a header line and one observed entry per line: a row key, a column key
and a number. Keys are any text and are written back exactly as given.

The pairs to predict come from --query, a file with the same row and
column key columns (other columns are ignored), or from --all-missing,
every entry that --observed lacks. A query key that --observed lacks
becomes a new, empty row or column of the matrix: its predictions come
from the rest of the matrix alone (the column's or row's other entries
and the matrix's overall level), usually with a larger std. The model
summarises the whole matrix, empty rows and columns included, so adding
them can shift the other predictions slightly. A queried pair that is
observed gets the model's fitted value, not the observed one.

--output is a CSV file with the header row,col,prediction,std: the keys,
the predicted value and its standard deviation, in the scale of the
observed values, one line per pair in query order (--all-missing: by row
key, then column key). It is written through a temporary file, never over
an input file, and over an existing file only with --force.
"""

_EPILOG = """\
examples:
  gnn-metamf impute --checkpoint runs/ml100k/checkpoint.pt \\
      --observed ratings.csv --query wanted.csv --output predictions.csv
  gnn-metamf impute --checkpoint runs/ml100k/checkpoint.pt \\
      --observed ratings.tsv --row-col user --col-col item \\
      --value-col stars --all-missing --output filled.csv
"""


def add_parser(commands, parents) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        'impute', parents=parents, formatter_class=Formatter,
        help="predict missing entries of one's own matrix",
        description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument('--checkpoint', required=True, metavar='PATH',
                        help='checkpoint.pt of a training run')
    parser.add_argument('--observed', required=True, metavar='FILE',
                        help='the observed entries, one per line')
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument('--query', metavar='FILE',
                       help='the (row, column) pairs to predict')
    which.add_argument('--all-missing', action='store_true',
                       help='predict every entry --observed lacks')
    parser.add_argument('--output', required=True, metavar='FILE',
                        help='CSV file to write')
    parser.add_argument('--force', action='store_true',
                        help='replace --output when it exists')
    parser.add_argument('--row-col', default='row', metavar='NAME',
                        help='column holding row keys (default: '
                             '%(default)s)')
    parser.add_argument('--col-col', default='col', metavar='NAME',
                        help='column holding column keys (default: '
                             '%(default)s)')
    parser.add_argument('--value-col', default='value', metavar='NAME',
                        help='column of --observed holding values '
                             '(default: %(default)s)')
    parser.add_argument('--sep', metavar='SEP',
                        help="field separator of the input files; '\\t' "
                             "or tab for a tab (default: from each file's "
                             "extension)")
    parser.add_argument('--duplicates', choices=DUPLICATE_POLICIES,
                        default='error',
                        help='what to do with an entry observed more than '
                             'once: stop with an error, or keep the mean, '
                             'sum, first or last value (default: '
                             '%(default)s)')
    parser.add_argument('--max-pairs', type=positive_int, default=5_000_000,
                        metavar='N',
                        help='largest number of pairs --all-missing may '
                             'predict (default: %(default)s)')
    parser.add_argument('--num-steps', type=natural_int, metavar='N',
                        help="refinement steps (default: the checkpoint's)")
    parser.add_argument('--threads', type=positive_int, metavar='N',
                        help="torch threads (default: torch's choice)")
    parser.set_defaults(run=run_impute)
    return parser


def run_impute(args: argparse.Namespace) -> int:
    observed = input_file(args.observed, '--observed')
    query = input_file(args.query, '--query') if args.query else None
    checkpoint, output = Path(args.checkpoint), Path(args.output)
    inputs = {'--observed': observed, '--query': query,
              '--checkpoint': checkpoint}
    _check_output(output, inputs, args.force)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = MetaMF.load(checkpoint)

    keys = [args.row_col, args.col_col]
    frame = read_table(observed, separator(observed, args.sep),
                       keys + [args.value_col], '--observed',
                       numeric=[args.value_col])
    if frame.empty:
        raise CLIError(f'--observed {observed} holds no entries')
    if args.duplicates == 'error':
        _check_duplicates(frame, keys, observed)
    graph = MatrixGraph.from_pandas(frame, *keys, args.value_col,
                                    duplicates=args.duplicates)
    row_keys, col_keys = list(graph.row_keys), list(graph.col_keys)
    num_rows, num_cols = len(row_keys), len(col_keys)

    if query is not None:
        pairs = read_table(query, separator(query, args.sep), keys,
                           '--query')
        rows = _ids(pairs[args.row_col], row_keys)  # Appends new keys.
        cols = _ids(pairs[args.col_col], col_keys)
        graph = MatrixGraph(graph.edge_index, graph.edge_value,
                            len(row_keys), len(col_keys))
    else:
        rows, cols = _missing(graph, args.max_pairs)
    index = torch.from_numpy(np.stack([rows, cols]))  # (2, Q)
    mean, std = model.impute(graph, index, num_steps=args.num_steps)

    result = pd.DataFrame({
        'row': np.asarray(row_keys, dtype=object)[rows],
        'col': np.asarray(col_keys, dtype=object)[cols],
        'prediction': mean.double().numpy(),
        'std': std.double().numpy(),
    }, columns=list(OUTPUT_COLUMNS))
    _check_output(output, inputs, args.force)  # It may have appeared since.
    write_atomic(output, result.to_csv(index=False,
                                       float_format='%.6g').encode())
    print(f'imputed {len(result)} pairs  observed {graph.num_entries} '
          f'entries in {num_rows} rows x {num_cols} columns  new_rows '
          f'{len(row_keys) - num_rows}  new_columns '
          f'{len(col_keys) - num_cols}  output {output}')
    return 0


def _check_output(output: Path, inputs: dict[str, Optional[Path]],
                  force: bool) -> None:
    for flag, path in inputs.items():
        if path is not None and same_file(output, path):
            raise CLIError(f'--output {output} is the {flag} file; input '
                           f'files are never overwritten, choose another '
                           f'--output')
    if output.exists() and not output.is_file():
        raise CLIError(f'--output {output} exists and is not a file')
    if output.exists() and not force:
        raise CLIError(f'--output {output} already exists; pass --force to '
                       f'replace it')


def _check_duplicates(frame: pd.DataFrame, keys: list[str],
                      path: Path) -> None:
    repeated = frame.duplicated(keys)
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise CLIError(
            f'--observed {path} gives {int(repeated.sum())} entr(ies) more '
            f'than once, the first ({keys[0]} {first[keys[0]]!r}, {keys[1]} '
            f'{first[keys[1]]!r}); merge them with --duplicates mean, sum, '
            f'first or last')


def _ids(values: pd.Series, keys: list) -> np.ndarray:
    r"""Ids of ``values`` among ``keys``; unknown values are appended to
    ``keys`` (in order of first appearance) as new, empty rows or
    columns."""
    ids = pd.Index(keys).get_indexer(values)
    new = ids < 0
    if new.any():
        codes, extra = pd.factorize(values[new])
        ids[new] = len(keys) + codes
        keys.extend(extra.tolist())
    return ids.astype(np.int64)


def _missing(graph: MatrixGraph,
             max_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Row and column ids of every unobserved entry, row by row."""
    num_rows, num_cols = graph.num_rows, graph.num_cols
    count = num_rows * num_cols - graph.num_entries
    if count > max_pairs:
        raise CLIError(f'--all-missing would predict {count:,} pairs '
                       f'({num_rows:,} rows x {num_cols:,} columns less '
                       f'{graph.num_entries:,} observed), more than '
                       f'--max-pairs {max_pairs:,}; list the pairs needed '
                       f'in a --query file, or raise --max-pairs')
    missing = np.ones(num_rows * num_cols, dtype=bool)
    row, col = graph.edge_index.numpy()
    missing[row * num_cols + col] = False
    linear = np.flatnonzero(missing)
    return linear // num_cols, linear % num_cols
