"""glibc malloc settings for ``protrnn predict`` on a CPU, set in-process with ``mallopt`` (measured in
docs/predict.md, "Speed and memory").

The pair head allocates and frees row-strip temporaries (a few MiB each: the streamed inference of
:meth:`protrnn.model.heads.ResNet2dHead._pairs_streamed`) thousands of times per long chain, and each tile's maps (up
to 128 MiB, the CPU tile cap :data:`protrnn.model.heads.STREAMED_TILE_FLOATS`) once per tile. Under glibc's
defaults the heap top is trimmed back to the OS whenever more than 2 x the dynamic mmap threshold is free, and
re-grown (page faults) on the next allocation. :func:`tune_malloc` keeps freed heap memory for reuse and serves
allocations up to 32 MiB from the heap (larger ones, such as a long chain's L x L output or a big tile's maps, are
still mmapped and returned to the OS when freed);
:func:`release_free_memory` hands the kept memory back once a long chain's scoring is done, before its files are
written. Unlike ``protrnn train`` (environment variables + re-execution), nothing here needs a restart: ``mallopt``
applies from the call on.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap: glibc's largest mmap threshold on 64-bit (32 MiB).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap top kept rather than trimmed (``mallopt`` takes a C int: the largest one).
TRIM_THRESHOLD = 2**31 - 1
#: A batch with at least this many padded pairs (B x T^2: a 2,048-residue chain) returns its freed memory.
RELEASE_PAIRS = 1 << 22
#: Set by the user, these win over :func:`tune_malloc` (it then does nothing).
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux (``mallopt`` / ``malloc_trim`` exist), else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_malloc() -> bool:
    """Apply :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` to this process; True if they were set.

    Does nothing (False) off glibc, when ``PROTRNN_MALLOC_TUNING=0`` (the opt-out ``protrnn train`` also reads), or
    when the user chose malloc settings (any of :data:`USER_SETTINGS`, or ``glibc.malloc`` tunables in
    ``GLIBC_TUNABLES``).
    """
    if os.environ.get("PROTRNN_MALLOC_TUNING", "1") == "0":
        return False
    if any(key in os.environ for key in USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_set = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim(0)``; glibc only, else nothing): after a long chain's
    scoring, so its tile buffers do not add to the peak while its outputs are written."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
