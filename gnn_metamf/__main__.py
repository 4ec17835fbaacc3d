"""``python -m gnn_metamf``: the ``gnn-metamf`` command line."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
