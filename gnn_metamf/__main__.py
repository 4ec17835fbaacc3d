"""``python -m gnn_metamf``: the ``gnn-metamf`` command line."""
import sys

from .cli import console

if __name__ == '__main__':
    sys.exit(console())
