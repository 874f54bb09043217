"""Allocator tuning for the data-loading processes.

Every training clip allocates a few MB of temporaries (decoded frames, the uint8 and float copies
of the transforms). With glibc's defaults, blocks of this size are ``mmap``-ed and freed memory at
the top of the heap is returned to the OS, so each clip faults its memory back in page by page.
On this project's CPU benchmark that fault traffic made the training transform about 1.4x slower
(benchmarks/bench_loader.py). PyTorch's CPU performance guide recommends jemalloc or tcmalloc
through ``LD_PRELOAD`` for the same reason; raising glibc's two thresholds gets the effect without
a preload.
"""
from __future__ import annotations

import ctypes
import sys

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 32 << 20  # the ceiling of glibc's own dynamic threshold on 64-bit
DEFAULT_TRIM_THRESHOLD = 128 << 20


def retain_freed_memory(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
                        trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Keep this process's freed memory for reuse instead of handing it back to the OS.

    Allocations below ``mmap_threshold`` bytes come from the heap, and up to ``trim_threshold``
    bytes of free heap are kept. Both must be set: setting either alone turns off glibc's dynamic
    threshold and is slower than the defaults. Affects the calling process only (call it in each
    DataLoader worker). Returns False, changing nothing, where the C library has no mallopt.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The symbols already loaded into the process (libc's among them): no library search,
        # which would spawn ldconfig.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
