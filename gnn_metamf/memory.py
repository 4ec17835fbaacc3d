r"""Keeping freed memory in the process, for large matrices on Linux.

glibc's ``malloc`` serves every allocation above a threshold (at most
32 MiB) with a fresh ``mmap`` and gives it back to the kernel when it is
freed. Imputing a large matrix allocates and frees many such tensors (the
entry states alone are :math:`E \times 64` floats, 2.6 GB at
:math:`10^7` entries), and each new one is faulted in again page by page,
zero-filled by the kernel: on the development machine this cost a third of
the time of a :math:`10^7`-entry imputation. :func:`keep_freed_memory`
asks glibc to serve large blocks from its heap and never to return freed
memory, so that later tensors reuse pages the process already holds.

The price is that the process keeps its peak memory until it exits, so
this is a choice for applications (the ``gnn-metamf`` command line and the
benchmark scripts make it), never made by importing the library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ['keep_freed_memory']

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    r"""Tells glibc's allocator to keep freed memory for reuse: no
    ``mmap`` for large blocks (``M_MMAP_MAX = 0``) and no trimming of the
    heap (``M_TRIM_THRESHOLD`` at its maximum). Affects allocations made
    after the call, in the whole process.

    Returns:
        bool: Whether the allocator took the settings: ``False`` where the
        C library is not glibc (macOS, Windows, musl), where this does
        nothing.
    """
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return False
    # The value is an int; -1 becomes the largest size_t inside glibc.
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, -1)
    mapped = libc.mallopt(_M_MMAP_MAX, 0)
    return bool(trimmed and mapped)
