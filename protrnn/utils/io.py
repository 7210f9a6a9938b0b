"""Small file-system helpers shared by every command that writes output: atomic writes and safe names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    A reader (or a rerun) therefore never sees a partial file: either the old content, or the complete new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Like :func:`atomic_write` for writers that want a path (``np.savez``, ``safetensors``, matplotlib)."""

    @contextlib.contextmanager
    def _ctx() -> Iterator[Path]:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + target.suffix, dir=target.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    return _ctx()


def safe_name(record_id: str, max_length: int = 80) -> str:
    """A file-name stem derived from a record ID that cannot escape a directory or hide.

    Characters outside ``[A-Za-z0-9._+-]`` become ``_`` (so ``/``, ``\\``, spaces and control characters go),
    leading dots are removed (no ``..`` or hidden files), and long names are truncated with a hash suffix.
    Callers that need uniqueness use :func:`unique_safe_names`.
    """
    stem = _UNSAFE.sub("_", record_id).lstrip(".")
    stem = stem.strip("_") or "record"
    if len(stem) > max_length:
        digest = hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:8]
        stem = f"{stem[: max_length - 9]}_{digest}"
    return stem


def unique_safe_names(record_ids: list[str]) -> list[str]:
    """Safe names for IDs in order; collisions (case-insensitive) get ``~2``, ``~3`` … in input order."""
    seen: dict[str, int] = {}
    names = []
    for record_id in record_ids:
        stem = safe_name(record_id)
        key = stem.lower()
        count = seen.get(key, 0) + 1
        seen[key] = count
        names.append(stem if count == 1 else f"{stem}~{count}")
    return names
