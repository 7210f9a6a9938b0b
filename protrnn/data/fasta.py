"""FASTA reading (plain or gzip, any line endings) with one-line errors, or skip-and-report for batch jobs.

Records carry their sequence **as written** (the record's lines joined, spaces, tabs and line breaks removed), after
validation: every letter must be one :data:`protrnn.alphabet.DEFAULT_ALPHABET` accepts (residue letters in either
case, gaps ``-``/``.``, one trailing ``*``) and something must remain once cleaned. Cleaning itself belongs to whoever
consumes the sequence: the predictor cleans with the model's own alphabet
(:meth:`protrnn.model.predictor.Predictor.clean`), once. Parsing streams (Bio.SeqIO's FASTA parser, fed lines that a
thin filter has checked), so a large file is never held in memory; errors name the file, the record and, for bad
letters, the 1-based position in the record as written.

Headers: a line is a header when it starts with ``>`` once leading whitespace and byte-order marks (U+FEFF, which
``cat`` of files saved by Windows editors leaves at the start of a line anywhere in the file) are set aside; leading
byte-order marks are dropped from sequence lines too. Any other line holding a ``>`` (a header behind some other
character, or two files joined by ``cat`` where the first lacks its final newline) is an error naming the line, with
or without ``skip_invalid``: which record it belongs to cannot be told, and a record must never vanish into the one
before it.

Bytes that are not UTF-8 do not stop the file: they are read as lone surrogates (``errors="surrogateescape"``), so in a
sequence one is an invalid letter of its record, named with its position (skippable); in a record ID it makes the
record invalid the same way (skippable; the ID is listed as read, and tables escape it); in the rest of a header (the
free-text description) it becomes U+FFFD.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from protrnn.alphabet import DEFAULT_ALPHABET, shown_letter
from protrnn.errors import InputError, reading
from protrnn.utils.io import control_character_position, undecoded_byte

_GZIP_MAGIC = b"\x1f\x8b"
#: What may come before the ``>`` of a header: whitespace and byte-order marks.
_LINE_START = re.compile(r"[\s\ufeff]*")
#: Removed from sequence lines: spaces, tabs and line breaks (Bio.SeqIO's FASTA parser removes spaces and ``\r`` and
#: strips trailing whitespace, Unicode's included, from each line).
_SEQUENCE_BLANKS = str.maketrans("", "", " \t\r\n")
#: Set aside at the start of a sequence line: byte-order marks (and spaces and tabs, which go anyway).
_SEQUENCE_LINE_START = re.compile(r"[ \t\ufeff]*")
#: Lone surrogates: bytes that were not UTF-8, read with ``errors="surrogateescape"``.
_UNDECODED = re.compile(r"[\udc80-\udcff]")


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: ``id`` (first word of the header), ``sequence`` as written (validated, not cleaned), and the
    rest of the header."""

    id: str
    sequence: str
    description: str = ""


@dataclass(frozen=True)
class _RawRecord:
    """A record as parsed, before validation: its header (after the ``>``), sequence and header line number."""

    title: str
    sequence: str
    line: int


def _open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Text handle with universal newlines that never fails to decode (bytes that are not UTF-8 become lone
    surrogates); gzip detected by magic bytes. Missing/binary files raise InputError."""
    with reading(path), open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline=None)
    return open(path, encoding="utf-8", errors="surrogateescape", newline=None)  # noqa: SIM115 - closed by the caller


def _check_not_binary(handle: IO[str], path: object) -> None:
    """Reject a binary file (a NUL in its first 4 KiB) before parsing, then rewind."""
    if "\x00" in handle.read(4096):
        raise InputError("binary file, not FASTA", path=path)
    handle.seek(0)


def _lines(handle: IO[str], path: object, headers: list[int]) -> Iterator[str]:
    """The stream's lines as Bio.SeqIO's FASTA parser should see them: a header's leading whitespace and byte-order
    marks set aside (its line number appended to ``headers``, which the caller empties as records come out),
    byte-order marks dropped from the start of sequence lines, blank lines before the first header skipped. Text before the first header, and a ``>`` anywhere but at the
    start of a header, raise InputError naming the line (Bio.SeqIO would join such a header to the record before)."""
    started = False
    for number, line in enumerate(handle, start=1):
        text = line[_LINE_START.match(line).end():]  # type: ignore[union-attr] - the pattern matches ""
        if text.startswith(">"):
            headers.append(number)
            started = True
            yield text
            continue
        if not started:
            if text.strip():
                raise InputError(f"not a FASTA file: first line {text.rstrip()[:40]!r} (line {number}) does not "
                                 "start with '>'", path=path)
            continue
        if ">" in text:
            column = line.index(">") + 1
            raise InputError(f"line {number}, column {column}: '>' after {shown_letter(line[column - 2])} (a header "
                             "must start its line; two files joined by cat where the first lacks its final newline?)",
                             path=path)
        sequence = line[_SEQUENCE_LINE_START.match(line).end():]  # type: ignore[union-attr]
        if sequence:
            yield sequence


def _parse(handle: IO[str], path: object) -> Iterator[_RawRecord]:
    """The records of a FASTA text stream, parsed by Bio.SeqIO's FASTA parser from :func:`_lines` (see the module
    docstring for what a header is)."""
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    headers: list[int] = []
    for title, sequence in SimpleFastaParser(_lines(handle, path, headers)):
        # the parser yields a record once it has read the next header: the oldest line number is this record's
        yield _RawRecord(title, sequence.translate(_SEQUENCE_BLANKS), headers.pop(0))


#: The reason of a record without an ID, which ``skipped`` lists as ``#N`` (its place in the file), not as an ID.
NO_ID_REASON = "record without an ID"


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
    seen: dict[str, tuple[int, int]] = {}  # record ID -> (record number, header line)
    count = 0
    try:
        with _open_text(path) as handle:
            _check_not_binary(handle, path)
            for count, raw in enumerate(_parse(handle, path), start=1):  # noqa: B007
                words = raw.title.split(None, 1)
                record_id = words[0] if words else ""
                description = _decoded(words[1].strip()) if len(words) > 1 else ""
                try:
                    _check_record(raw, record_id, count, seen, path)
                except InputError as exc:
                    if not skip_invalid:
                        raise
                    if skipped is not None:
                        skipped.append((record_id or f"#{count}", skip_reason(exc)))
                    continue
                yield FastaRecord(record_id, raw.sequence, description)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"truncated or corrupt gzip data ({exc})", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path=path) from None
    if count == 0:
        raise InputError("no FASTA records (empty file)", path=path)


def _decoded(text: str) -> str:
    """``text`` with each byte that was not UTF-8 (a lone surrogate) replaced by U+FFFD."""
    return _UNDECODED.sub("\ufffd", text)


def _check_record(raw: _RawRecord, record_id: str, count: int, seen: dict[str, tuple[int, int]],
                  path: object) -> None:
    """InputError (skippable) for a record without an ID, with a control character or a byte that is not UTF-8 in its
    ID, a duplicate ID, an invalid letter or nothing left once cleaned; records the ID in ``seen``."""
    if not record_id:
        raise InputError(f"{NO_ID_REASON} (empty header, line {raw.line})", path=path, record=f"#{count}")
    bad = control_character_position(record_id)
    if bad is not None:
        raise InputError(f"record ID has a control character (U+{ord(record_id[bad - 1]):04X}) at position {bad} of "
                         "the header", path=path, record=record_id)
    undecoded = _UNDECODED.search(record_id)
    if undecoded is not None:
        raise InputError(f"record ID has a byte that is not UTF-8 (0x{undecoded_byte(undecoded.group()):02x}) at "
                         f"position {undecoded.start() + 1} of the header", path=path, record=record_id)
    if record_id in seen:
        first, line = seen[record_id]
        raise InputError(f"duplicate record ID (header at line {raw.line}; first seen as record {first}, line {line})",
                         path=path, record=record_id)
    seen[record_id] = (count, raw.line)
    if not DEFAULT_ALPHABET.clean(raw.sequence, record=record_id, path=path):  # validation only
        raise InputError(f"empty sequence (header at line {raw.line})", path=path, record=record_id)


def read_fasta(path: str | os.PathLike[str], **kwargs: object) -> list[FastaRecord]:
    """All records of a FASTA file (see :func:`iter_fasta` for the rules and keyword arguments)."""
    return list(iter_fasta(Path(path), **kwargs))  # type: ignore[arg-type]
