"""One exception type for bad input, so the CLI can print a single line and exit non-zero."""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
from collections.abc import Iterator
from typing import Any


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
    """Turn the operating system's errors while opening or reading ``path``, text that is not UTF-8 and a table the
    :mod:`csv` module cannot parse (a field over its size limit; :func:`protrnn.utils.io.csv_records` names the line)
    into one-line :class:`InputError` messages."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    except csv.Error as exc:
        raise InputError(f"not a readable table ({exc})", path=path) from None
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path=path) from None


def decode_text(raw: bytes, path: object, encoding: str = "utf-8") -> str:
    """``raw`` (the bytes of ``path``) decoded as ``encoding``; a byte that is not valid there is a one-line
    :class:`InputError` naming the byte and its line and column (1-based, the column counted in bytes)."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        label = {"ascii": "ASCII", "utf-8": "UTF-8"}.get(codecs.lookup(encoding).name, encoding)
        raise InputError(f"not {label} text: byte 0x{raw[exc.start]:02x} at line {line}, column {column}",
                         path=path) from None


def read_json_document(path: str | os.PathLike[str], fmt: str, *, max_version: int | None = None,
                       what: str | None = None) -> dict[str, Any]:
    """Read a JSON file that protrnn wrote: :func:`parse_json_document` of its bytes (not found and unreadable are
    one-line :class:`InputError` messages naming the file too)."""
    with reading(path), open(path, "rb") as handle:
        raw = handle.read()
    return parse_json_document(raw, path, fmt, max_version=max_version, what=what)


def parse_json_document(raw: bytes, path: object, fmt: str, *, max_version: int | None = None,
                        what: str | None = None) -> dict[str, Any]:
    """The JSON document ``raw`` (the bytes of ``path``): UTF-8 text holding an object that passes
    :func:`check_document`. Not UTF-8 and not JSON are one-line :class:`InputError` messages with the position."""
    return check_document(parse_json_bytes(raw, path, what or fmt), path, fmt, max_version=max_version, what=what)


def parse_json_bytes(raw: bytes, path: object, what: str) -> Any:
    """``raw`` (the bytes of ``path``, a ``what``) decoded as UTF-8 JSON, any value. Not UTF-8 and not JSON are
    one-line :class:`InputError` messages naming the byte, or the line and column (1-based); so is JSON that Python
    cannot hold: an integer longer than its digit limit (``sys.get_int_max_str_digits()``, 4300 by default) or arrays
    and objects nested deeper than its recursion limit."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not a {what}: not UTF-8 text ({exc.reason} at byte {exc.start + 1})", path=path) from None
    except json.JSONDecodeError as exc:  # line and column, 1-based (a "position" would read as a residue's)
        raise InputError(f"not a {what}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                         path=path) from None
    except ValueError as exc:  # an integer beyond Python's digit limit (its advice to raise the limit is cut)
        reason = str(exc).split(";")[0].strip() or type(exc).__name__
        raise InputError(f"not a {what}: unreadable JSON ({reason})", path=path) from None
    except RecursionError:
        raise InputError(f"not a {what}: unreadable JSON (arrays or objects nested too deeply)", path=path) from None


def check_document(document: Any, path: object, fmt: str, *, max_version: int | None = None,
                   what: str | None = None) -> dict[str, Any]:
    """The one format check of protrnn's versioned documents (JSON files, the metadata of .npz files): an object
    whose ``format`` is ``fmt`` and, with ``max_version``, whose ``format_version`` is an integer 1..max_version.
    Otherwise a one-line :class:`InputError` naming ``path`` and the document (``what``, default ``fmt``)."""
    label = what or fmt
    if not isinstance(document, dict) or document.get("format") != fmt:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InputError(f"not a {label} (format {found!r}, expected {fmt!r})", path=path)
    if max_version is not None:
        version = document.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= max_version:
            raise InputError(f"unsupported format_version {version!r} of a {label} (this version reads "
                             f"1..{max_version})", path=path)
    return document
