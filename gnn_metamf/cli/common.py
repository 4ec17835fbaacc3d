"""What the subcommands share: argument types, table files and output."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..datasets import DATASET_NAMES

PROG = 'gnn-metamf'


class CLIError(Exception):
    r"""A bad argument or input file, reported in one line (exit status 2)."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    r"""Keeps the line breaks of descriptions and epilog examples."""


class Parser(argparse.ArgumentParser):
    r"""Reports a usage error in one line rather than the whole usage."""
    def error(self, message: str):
        self.exit(2, f'{PROG}: error: {message} (see {self.prog} --help)\n')


def positive_int(text: str) -> int:
    return _number(text, int, 1)


def natural_int(text: str) -> int:
    return _number(text, int, 0)


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, strict=True)


def natural_float(text: str) -> float:
    return _number(text, float, 0.0)


def _number(text: str, kind: type, low, strict: bool = False):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low or (
            strict and value == low):
        relation = '>' if strict else '>='
        name = 'an integer' if kind is int else 'a number'
        raise argparse.ArgumentTypeError(
            f'expected {name} {relation} {low}, got {text!r}')
    return value


def dataset_spec(text: str) -> str:
    r"""Checks the name of ``NAME[:SPLIT]``; load_dataset checks the
    split."""
    name = text.partition(':')[0]
    if name not in DATASET_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {name!r}, expected one of "
            f"{', '.join(DATASET_NAMES)} (optionally NAME:SPLIT)")
    return text


def input_file(path: str, flag: str) -> Path:
    r"""``path`` as a :class:`Path`, after checking that it is a file."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f'{flag} {path}: no such file')
    if not path.is_file():
        raise CLIError(f'{flag} {path}: not a file')
    return path


def same_file(a: Path, b: Path) -> bool:
    r"""Whether ``a`` and ``b`` name one file (links and ``..`` too)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # One of them does not exist.
        return False


def separator(path: Path, sep: Optional[str]) -> str:
    r"""``sep`` (``\t`` spelled out means a tab), else a tab for
    ``.tsv`` and ``.tab`` files and a comma for the rest."""
    if sep is not None:
        return '\t' if sep in ('\\t', 'tab') else sep
    suffixes = [s.lower() for s in path.suffixes]
    return '\t' if {'.tsv', '.tab'} & set(suffixes) else ','


def read_table(path: Path, sep: str, columns: Sequence[str], flag: str,
               numeric: Sequence[str] = ()) -> pd.DataFrame:
    r"""Reads ``columns`` of a delimited text file with a header line.

    Every column is read as text, so that keys such as ``007`` keep their
    spelling; ``numeric`` columns are then converted to numbers. Empty
    cells and text that is not a number are errors that name the data row
    (1 is the first line after the header).
    """
    shown = 'tab' if sep == '\t' else repr(sep)
    try:
        header = pd.read_csv(path, sep=sep, nrows=0)
        missing = [c for c in columns if c not in header.columns]
        if missing:
            raise CLIError(
                f'{flag} {path} has no column(s) {missing}; its columns are '
                f'{list(header.columns)} (separator {shown}); the first line '
                f'must name the columns, see --row-col, --col-col, '
                f'--value-col and --sep')
        frame = pd.read_csv(path, sep=sep, usecols=list(columns), dtype=str,
                            keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error) else ''
        raise CLIError(f'{flag} {path} is not a readable table with '
                       f'separator {shown}: {first}') from error

    for column in columns:
        empty = (frame[column].str.strip() == '').to_numpy()
        if empty.any():
            raise CLIError(f'{flag} {path}: empty {column!r} cell in data '
                           f'row {int(empty.argmax()) + 1}')
    for column in numeric:
        values = pd.to_numeric(frame[column], errors='coerce').to_numpy(
            dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(bad.argmax())
            raise CLIError(f'{flag} {path}: {column!r} must hold finite '
                           f'numbers, got {frame[column].iloc[row]!r} in '
                           f'data row {row + 1}')
        frame[column] = values
    return frame


def finite_or_none(value):
    r"""JSON has no NaN or infinity: they become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
