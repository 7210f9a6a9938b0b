"""Process resource figures shared by the benchmarks and the GPU check: peak resident memory."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def peak_rss_mib(*, reset: bool = False) -> float:
    """Peak resident memory of this process image in MiB.

    On Linux this is ``VmHWM`` from /proc/self/status (``ru_maxrss`` would also count the parent's RSS at spawn, which
    Linux folds in across fork + exec); ``reset=True`` first resets it (``/proc/self/clear_refs`` = 5), so a
    measurement is not hidden by an earlier peak such as importing torch. Elsewhere ``ru_maxrss`` (no reset).
    """
    if _STATUS.is_file():
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
