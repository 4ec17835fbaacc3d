"""The ``gnn-metamf`` command line: ``train``, ``evaluate``, ``impute``.

Each subcommand prints fixed-format lines on standard output. A bad
argument or input file ends it with one line, ``gnn-metamf: error: ...``,
on standard error and exit status 2; ``--debug`` shows the traceback
instead.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .. import __version__
from ..checkpoint import CheckpointError
from ..datasets import DatasetNotFoundError
from ..memory import keep_freed_memory
from . import evaluate, impute, train
from .common import PROG, CLIError, Formatter, Parser

__all__ = ['main', 'console', 'build_parser']

# Errors that come from what the user gave (arguments, files, data), as
# opposed to bugs: CheckpointError is a ValueError and
# DatasetNotFoundError an OSError, named for the reader.
USER_ERRORS = (CLIError, CheckpointError, DatasetNotFoundError, ValueError,
               OSError)

_DESCRIPTION = """\
Meta-learned matrix factorization: train a model on many rating matrices,
then impute the missing entries of a new matrix, with uncertainty, without
training on it. Run 'gnn-metamf COMMAND --help' for each command.
"""

_EPILOG = """\
examples:
  gnn-metamf train --datasets ml-100k --out runs/ml100k
  gnn-metamf evaluate --checkpoint runs/ml100k/checkpoint.pt \\
      --dataset douban
  gnn-metamf impute --checkpoint runs/ml100k/checkpoint.pt \\
      --observed ratings.csv --all-missing --output filled.csv
"""


def build_parser() -> argparse.ArgumentParser:
    r"""The parser of all subcommands."""
    parser = Parser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
                    formatter_class=Formatter)
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--debug', action='store_true',
                        help='on an error, show the full traceback instead '
                             'of a one-line message')
    for command in (train, evaluate, impute):
        command.add_parser(commands, [common])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""Runs the command line on ``argv`` (default: ``sys.argv[1:]``) and
    returns the exit status: 0 on success, 2 for a bad argument or file."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help and --version (0), usage errors (2).
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return args.run(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = ' '.join(str(error).split()) or type(error).__name__
        print(f'{PROG}: error: {message}', file=sys.stderr)
        return 2


def console() -> int:
    r"""The ``gnn-metamf`` program: :func:`main` on ``sys.argv``, in a
    process that keeps freed memory for reuse
    (:func:`~gnn_metamf.memory.keep_freed_memory`; large matrices impute
    faster). Calling :func:`main` from Python leaves the allocator alone."""
    keep_freed_memory()
    return main()
