"""FASTA reading (plain or gzip, any line endings) with one-line errors, or skip-and-report for batch jobs.

Records carry their sequence **as written** (the record's lines joined), after validation: every letter must be one
:data:`protrnn.alphabet.DEFAULT_ALPHABET` accepts (residue letters in either case, gaps ``-``/``.``, one trailing
``*``) and something must remain once cleaned. Cleaning itself belongs to whoever consumes the sequence: the predictor
cleans with the model's own alphabet (:meth:`protrnn.model.predictor.Predictor.clean`), once. Parsing streams
(Bio.SeqIO), so a large file is never held in memory; errors name the file, the record and, for bad letters, the
1-based position in the record as written.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.errors import InputError, reading
from protrnn.utils.io import control_character_position

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: ``id`` (first word of the header), ``sequence`` as written (validated, not cleaned), and the
    rest of the header."""

    id: str
    sequence: str
    description: str = ""


def _open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Text handle with universal newlines, a UTF-8 byte-order mark (Windows editors) dropped; gzip detected by magic
    bytes. Missing/binary files raise InputError."""
    with reading(path), open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=None)
    return open(path, encoding="utf-8-sig", newline=None)  # noqa: SIM115 - closed by the caller's with-block


def _first_line(handle: IO[str], path: object) -> None:
    """Reject content that is not FASTA before Bio.SeqIO sees it (its own message is multi-line)."""
    head = handle.read(4096)
    if "\x00" in head:
        raise InputError("binary file, not FASTA", path=path)
    stripped = head.lstrip()
    if stripped and not stripped.startswith(">"):
        first = stripped.splitlines()[0][:40]
        raise InputError(f"not a FASTA file: first line {first!r} does not start with '>'", path=path)


def _skip_blank_lines(handle: IO[str]) -> None:
    """Rewind, then position the handle at the first non-blank line (Bio.SeqIO rejects leading blank lines)."""
    handle.seek(0)
    while True:
        position = handle.tell()
        line = handle.readline()
        if not line or line.strip():
            break
    handle.seek(position)


def skip_reason(exc: InputError) -> str:
    """The one-line reason a skipped record is listed with: the error's reason and, for a bad letter, its position."""
    where = "" if exc.position is None else f" at position {exc.position}"
    return f"{exc.reason}{where}"


def iter_fasta(path: str | os.PathLike[str], *, skip_invalid: bool = False,
               skipped: list[tuple[str, str]] | None = None) -> Iterator[FastaRecord]:
    """Stream the records of a FASTA file.

    Sequences come back as written (see the module docstring). Empty records (nothing left once gaps and the stop
    are removed), duplicate IDs and invalid letters raise :class:`InputError`; with ``skip_invalid`` they are skipped
    instead and ``(record_id, reason)`` is appended to ``skipped`` (when given), so nothing vanishes silently. A file
    with no records at all is always an error.
    """
    from Bio import SeqIO

    seen: dict[str, int] = {}
    count = 0
    try:
        with _open_text(path) as handle:
            _first_line(handle, path)
            _skip_blank_lines(handle)
            for count, record in enumerate(SeqIO.parse(handle, "fasta"), start=1):  # noqa: B007
                header = record.description
                description = header[len(record.id):].strip() if header.startswith(record.id) else header
                try:
                    if not record.id:
                        raise InputError("record without an ID (empty header)", path=path, record=f"#{count}")
                    bad = control_character_position(record.id)
                    if bad is not None:
                        raise InputError(f"record ID has a control character (U+{ord(record.id[bad - 1]):04X}) at "
                                         f"position {bad} of the header", path=path, record=record.id)
                    if record.id in seen:
                        raise InputError(f"duplicate record ID (first seen as record {seen[record.id]})",
                                         path=path, record=record.id)
                    seen[record.id] = count
                    # bytes, not str(): Bio.Seq decodes as ASCII, so a non-ASCII letter would escape as a decode
                    # error without the record and position
                    sequence = bytes(record.seq).decode("utf-8", errors="replace")
                    if not DEFAULT_ALPHABET.clean(sequence, record=record.id, path=path):  # validation only
                        raise InputError("empty sequence", path=path, record=record.id)
                except InputError as exc:
                    if not skip_invalid:
                        raise
                    if skipped is not None:
                        skipped.append((record.id or f"#{count}", skip_reason(exc)))
                    continue
                yield FastaRecord(record.id, sequence, description)
    except UnicodeDecodeError as exc:
        raise InputError(f"binary or non-UTF-8 content (byte {exc.start + 1} of a block)", path=path) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"truncated or corrupt gzip data ({exc})", path=path) from None
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot parse FASTA ({' '.join(str(exc).split())[:200]})", path=path) from None
    if count == 0:
        raise InputError("no FASTA records (empty file)", path=path)


def read_fasta(path: str | os.PathLike[str], **kwargs: object) -> list[FastaRecord]:
    """All records of a FASTA file (see :func:`iter_fasta` for the rules and keyword arguments)."""
    return list(iter_fasta(Path(path), **kwargs))  # type: ignore[arg-type]
