"""Process resource figures: peak resident memory (the benchmarks and the GPU check) and the most memory this process
could hold (the training start-up's size check)."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")
_SELF_CGROUP = Path("/proc/self/cgroup")


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


def memory_limit_bytes() -> int | None:
    """The most memory this process could ever hold, in bytes, or None when the machine does not say.

    Linux: the kernel's ``MemTotal`` (/proc/meminfo), lowered to the smallest cgroup v2 ``memory.max`` of this
    process's cgroup and its parents (a container, a batch job's allocation). Elsewhere the physical pages
    (``os.sysconf``) where the system reports them. A limit, not what is free now: free memory (``MemAvailable``,
    ``memory.max`` less ``memory.current``) counts reclaimable page cache as used, so a job that has read many files
    would look full.
    """
    sizes: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        sizes += [int(line.split()[1]) * 1024 for line in _MEMINFO.read_text().splitlines()
                  if line.startswith("MemTotal:")]
    with contextlib.suppress(OSError, ValueError):
        groups = [line[3:] for line in _SELF_CGROUP.read_text().splitlines() if line.startswith("0::")]
        for group in groups[:1]:  # cgroup v2: one line, "0::/path"
            folder = _CGROUP / group.strip().lstrip("/")
            while True:
                with contextlib.suppress(OSError, ValueError):
                    limit = (folder / "memory.max").read_text().strip()
                    if limit != "max":
                        sizes.append(int(limit))
                if folder == _CGROUP or _CGROUP not in folder.parents:
                    break
                folder = folder.parent
    if not sizes:
        try:
            sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None
    return min(sizes)


def bytes_text(count: float) -> str:
    """``count`` bytes for a message: ``51.2 GiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if count < 1024 or unit == "EiB":
            break
        count /= 1024
    return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
