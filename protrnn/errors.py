"""One exception type for bad input, so the CLI can print a single line and exit non-zero."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class InputError(ValueError):
    """Bad user input. The message names the file, the record and the position where known.

    The CLI catches this, prints ``protrnn: error: <message>`` on one line and exits with status 2.
    """

    def __init__(self, reason: str, *, path: object | None = None, record: str | None = None,
                 position: int | None = None) -> None:
        parts = []
        if path is not None:
            parts.append(str(path))
        if record is not None:
            parts.append(f"record {record!r}")
        if position is not None:
            parts.append(f"position {position}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.path = path
        self.record = record
        self.position = position


@contextlib.contextmanager
def reading(path: object) -> Iterator[None]:
    """Turn the operating system's errors while opening ``path`` into one-line :class:`InputError` messages."""
    try:
        yield
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path=path) from None
