import platform
import subprocess
import sys

import pytest

# Allocates and frees a 256 MiB tensor, then prints how much of it the
# process still holds (resident set after the free minus before the
# allocation), in MiB.
_PROBE = '''
import sys
import torch
from gnn_metamf.memory import keep_freed_memory

def rss():
    with open('/proc/self/status') as handle:
        line = next(l for l in handle if l.startswith('VmRSS:'))
    return int(line.split()[1]) / 1024

kept = keep_freed_memory() if sys.argv[1] == 'keep' else None
before = rss()
x = torch.ones(64 << 20)
del x
print(kept, rss() - before)
'''


def _held(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, '-c', _PROBE, mode], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc',
                    reason='glibc allocator settings')
def test_keep_freed_memory_keeps_pages_for_reuse():
    r"""By default glibc returns a freed large tensor to the kernel; after
    :func:`keep_freed_memory` the process keeps its pages for the next
    allocation."""
    kept, held = _held('keep')
    assert kept == 'True'
    assert held > 200  # MiB of the 256 freed
    default, held = _held('default')
    assert default == 'None'
    assert held < 50
