"""CASP RR contact files: a deterministic writer and a strict parser.

Layout written (CASP RR, one model)::

    PFRMAT RR
    TARGET <id>
    AUTHOR protrnn
    REMARK <settings>            (optional, any number)
    METHOD <model description>   (one or more)
    MODEL  1
    <sequence, 50 residues per line>
    i j 0 8 p                    (1-based, i < j, sorted by decreasing p, then by (i, j))
    END

Probabilities are written with four decimals, clamped to [0, 1]. The same matrix and settings always give the same bytes,
which is what lets ``protrnn predict`` resume an interrupted run and still match an uninterrupted one.

By default the top L pairs with |i - j| >= 6 are written (L = chain length): CASP assesses the top L/5, L/2 and L
contacts of each range, so L pairs cover every standard list, and the full matrix is in the ``.npz`` beside it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from protrnn.conventions import MIN_SEPARATION
from protrnn.errors import InputError, reading
from protrnn.utils.io import atomic_write

AUTHOR = "protrnn"
SEQUENCE_LINE_WIDTH = 50
PROBABILITY_DECIMALS = 4
CONTACT_D1 = 0
CONTACT_D2 = 8


class RRContact(NamedTuple):
    """One contact line: residues ``i < j`` (1-based), distance bounds ``d1``-``d2`` (Angstrom) and probability ``p``."""

    i: int
    j: int
    d1: float
    d2: float
    p: float


class RRFile(NamedTuple):
    """What most callers need from an RR file: ``target, sequence, contacts = read_rr(path)``."""

    target: str
    sequence: str
    contacts: list[RRContact]


@dataclass
class RRDocument:
    """Every field of a parsed RR file, including the header lines (used to check a file was written with given
    settings)."""

    target: str
    sequence: str
    contacts: list[RRContact]
    author: str | None = None
    methods: list[str] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)


def rr_target(record_id: str) -> str:
    """The TARGET token for a record ID: whitespace, non-printable and non-ASCII characters become ``_`` (RR is space
    separated and written as ASCII)."""
    token = "".join(ch if ch.isascii() and ch.isprintable() and not ch.isspace() else "_" for ch in record_id)
    return token or "_"


def select_contacts(probs: np.ndarray, *, top: int | None = None, min_separation: int = MIN_SEPARATION,
                    threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs to write, as 0-based ``(i, j, p)`` arrays with ``i < j``, ordered by decreasing p then (i, j).

    Only the upper triangle with ``j - i >= min_separation`` is considered. ``threshold`` keeps pairs with
    ``p >= threshold``; ``top`` caps the count. With neither, the top L pairs are kept (L = matrix size).
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != probs.shape[1]:
        raise ValueError(f"expected a square probability matrix, got shape {probs.shape}")
    if min_separation < 1:
        raise ValueError(f"min_separation must be >= 1, got {min_separation}")
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    length = probs.shape[0]
    if top is None and threshold is None:
        top = length
    rows, cols = np.triu_indices(length, k=min_separation)
    values = probs[rows, cols].astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("probability matrix contains NaN or infinite values")
    keep = np.ones(values.shape, dtype=bool) if threshold is None else values >= threshold
    if top is not None and int(keep.sum()) > top:
        # Everything at or above the top-th largest value, so ties at the cut are broken by (i, j) below.
        if top == 0:
            keep[:] = False
        else:
            candidate_values = values[keep]
            kth = np.partition(candidate_values, candidate_values.size - top)[candidate_values.size - top]
            keep &= values >= kth
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = np.lexsort((cols, rows, -values))
    if top is not None:
        order = order[:top]
    return rows[order], cols[order], values[order]


def format_probability(p: float) -> str:
    """Fixed four-decimal text, clamped to [0, 1] (the same float always gives the same bytes)."""
    return f"{min(1.0, max(0.0, float(p))):.{PROBABILITY_DECIMALS}f}"


def format_rr(target: str, sequence: str, probs: np.ndarray, *, method_lines: Sequence[str],
              remarks: Sequence[str] = (), top: int | None = None, min_separation: int = MIN_SEPARATION,
              threshold: float | None = None) -> str:
    """The RR text for one chain (see the module docstring for the layout)."""
    probs = np.asarray(probs)
    if not sequence:
        raise ValueError("cannot write an RR file for an empty sequence")
    if probs.shape != (len(sequence), len(sequence)):
        raise ValueError(f"probability matrix shape {probs.shape} does not match sequence length {len(sequence)}")
    if not method_lines:
        raise ValueError("at least one METHOD line is required")
    lines = ["PFRMAT RR", f"TARGET {rr_target(target)}", f"AUTHOR {AUTHOR}"]
    for label, texts in (("REMARK", remarks), ("METHOD", method_lines)):
        for text in texts:
            if "\n" in text or "\r" in text:
                raise ValueError(f"{label} line contains a line break: {text!r}")
            lines.append(f"{label} {text}".rstrip())
    lines.append("MODEL  1")
    lines.extend(sequence[k:k + SEQUENCE_LINE_WIDTH] for k in range(0, len(sequence), SEQUENCE_LINE_WIDTH))
    rows, cols, values = select_contacts(probs, top=top, min_separation=min_separation, threshold=threshold)
    lines.extend(f"{i + 1} {j + 1} {CONTACT_D1} {CONTACT_D2} {format_probability(p)}"
                 for i, j, p in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True))
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_rr(path_or_handle: str | os.PathLike[str] | IO[str], target: str, sequence: str, probs: np.ndarray, *,
             method_lines: Sequence[str], remarks: Sequence[str] = (), top: int | None = None,
             min_separation: int = MIN_SEPARATION, threshold: float | None = None) -> None:
    """Write one chain's contacts as CASP RR. A path is written atomically; a text handle is written as is.

    ``probs`` is the L x L probability matrix (its upper triangle is read); ``top``/``threshold`` choose the pairs
    (default: top L with ``|i - j| >= min_separation``).
    """
    text = format_rr(target, sequence, probs, method_lines=method_lines, remarks=remarks, top=top,
                     min_separation=min_separation, threshold=threshold)
    if isinstance(path_or_handle, (str, os.PathLike)):
        with atomic_write(path_or_handle, "w", encoding="ascii", newline="\n") as handle:
            handle.write(text)
    else:
        path_or_handle.write(text)


def _number(token: str, kind: type, what: str, path: object, line_no: int) -> float:
    try:
        value = kind(token)
    except ValueError:
        raise InputError(f"line {line_no}: {what} {token!r} is not a{'n integer' if kind is int else ' number'}",
                         path=path) from None
    if kind is float and not np.isfinite(value):
        raise InputError(f"line {line_no}: {what} {token!r} is not finite", path=path)
    return value


def parse_rr(lines: Iterable[str], *, path: object | None = None) -> RRDocument:
    """Parse a single-model CASP RR file strictly; every problem is an :class:`InputError` naming the line.

    Accepted: blank lines anywhere; AUTHOR/REMARK/METHOD before ``MODEL 1``; sequence lines (letters only) right after
    ``MODEL 1``; contact lines ``i j d1 d2 p`` (or the CASP14 short form ``i j p``, read as d1=0, d2=8) with
    ``1 <= i < j <= L``, ``0 <= d1 < d2``, ``0 <= p <= 1``, no repeated pair, p non-increasing; then ``END``.
    """
    target: str | None = None
    author: str | None = None
    methods: list[str] = []
    remarks: list[str] = []
    sequence_parts: list[str] = []
    contacts: list[RRContact] = []
    seen: set[tuple[int, int]] = set()
    state = "start"  # start -> header -> model (sequence allowed) -> contacts -> end
    line_no = 0
    for line_no, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n").strip()
        if not line:
            continue
        if state == "end":
            raise InputError(f"line {line_no}: content after END: {line[:40]!r}", path=path)
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        if state == "start":
            if line.split() != ["PFRMAT", "RR"]:
                raise InputError(f"line {line_no}: expected 'PFRMAT RR' as the first line, got {line[:40]!r}",
                                 path=path)
            state = "header"
            continue
        if state == "header":
            if keyword == "TARGET":
                if target is not None:
                    raise InputError(f"line {line_no}: second TARGET line", path=path)
                if not rest or len(rest.split()) != 1:
                    raise InputError(f"line {line_no}: TARGET needs exactly one identifier", path=path)
                target = rest
            elif keyword == "AUTHOR":
                author = rest
            elif keyword == "METHOD":
                methods.append(rest)
            elif keyword == "REMARK":
                remarks.append(rest)
            elif keyword == "MODEL":
                if rest != "1":
                    raise InputError(f"line {line_no}: only single-model RR files (MODEL 1) are supported, "
                                     f"got MODEL {rest!r}", path=path)
                if target is None:
                    raise InputError(f"line {line_no}: MODEL before any TARGET line", path=path)
                state = "model"
            else:
                raise InputError(f"line {line_no}: unexpected header line {line[:40]!r}", path=path)
            continue
        if keyword == "END":
            if rest:
                raise InputError(f"line {line_no}: unexpected text after END", path=path)
            state = "end"
            continue
        if state == "model" and line.isalpha():
            if not (line.isascii() and line.isupper()):
                raise InputError(f"line {line_no}: sequence lines must be upper-case letters A-Z", path=path)
            sequence_parts.append(line)
            continue
        if line.isalpha():
            raise InputError(f"line {line_no}: sequence line after contact lines", path=path)
        state = "contacts"
        fields = line.split()
        if len(fields) == 5:
            i_text, j_text, d1_text, d2_text, p_text = fields
        elif len(fields) == 3:
            i_text, j_text, p_text = fields
            d1_text, d2_text = str(CONTACT_D1), str(CONTACT_D2)
        else:
            raise InputError(f"line {line_no}: contact lines have 5 fields 'i j d1 d2 p' (or 3: 'i j p'), "
                             f"got {len(fields)}", path=path)
        i = int(_number(i_text, int, "residue index", path, line_no))
        j = int(_number(j_text, int, "residue index", path, line_no))
        d1 = _number(d1_text, float, "distance", path, line_no)
        d2 = _number(d2_text, float, "distance", path, line_no)
        p = _number(p_text, float, "probability", path, line_no)
        length = sum(map(len, sequence_parts))
        if not 1 <= i < j:
            raise InputError(f"line {line_no}: residue indices must satisfy 1 <= i < j, got {i} {j}", path=path)
        if length and j > length:
            raise InputError(f"line {line_no}: residue index {j} beyond the sequence length {length}", path=path)
        if not 0.0 <= d1 < d2:
            raise InputError(f"line {line_no}: distance bounds must satisfy 0 <= d1 < d2, got {d1_text} {d2_text}",
                             path=path)
        if not 0.0 <= p <= 1.0:
            raise InputError(f"line {line_no}: probability {p_text} outside [0, 1]", path=path)
        if contacts and p > contacts[-1].p:
            raise InputError(f"line {line_no}: contacts are not sorted by decreasing probability "
                             f"({p_text} after {contacts[-1].p})", path=path)
        if (i, j) in seen:
            raise InputError(f"line {line_no}: pair {i} {j} listed twice", path=path)
        seen.add((i, j))
        contacts.append(RRContact(i, j, d1, d2, p))
    if state == "start":
        raise InputError("empty RR file", path=path)
    if state == "header":
        raise InputError(f"line {line_no}: missing 'MODEL  1' line", path=path)
    if state != "end":
        raise InputError(f"line {line_no}: missing END line (truncated file?)", path=path)
    assert target is not None
    return RRDocument(target=target, sequence="".join(sequence_parts), contacts=contacts, author=author,
                      methods=methods, remarks=remarks)


def read_rr_document(path_or_handle: str | os.PathLike[str] | IO[str]) -> RRDocument:
    """Parse an RR file (path or text handle) with all its header lines."""
    if isinstance(path_or_handle, (str, os.PathLike)):
        path = Path(path_or_handle)
        try:
            with reading(path):
                text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not a text RR file ({exc.reason} at byte {exc.start})", path=path) from None
        return parse_rr(io.StringIO(text), path=path)
    return parse_rr(path_or_handle, path=getattr(path_or_handle, "name", None))


def read_rr(path_or_handle: str | os.PathLike[str] | IO[str]) -> RRFile:
    """``(target, sequence, contacts)`` of a single-model RR file; contacts are :class:`RRContact` ``(i, j, d1, d2, p)``
    with 1-based indices. Strict: malformed input raises :class:`InputError` naming the line."""
    doc = read_rr_document(path_or_handle)
    return RRFile(doc.target, doc.sequence, doc.contacts)
