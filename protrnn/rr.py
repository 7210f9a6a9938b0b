"""CASP RR contact files: a deterministic writer and a strict parser.

Layout written (CASP RR, one model)::

    PFRMAT RR
    TARGET <id>
    AUTHOR protrnn
    REMARK <settings>            (optional, any number)
    METHOD <model description>   (one or more)
    MODEL  1
    <sequence, 50 residues per line>
    i j 0 d2 p                   (1-based, i < j, sorted by decreasing p, then by (i, j); d2 the model's
                                  contact cutoff, CASP's 8 for every shipped model)
    END

Probabilities are written with four decimals, clamped to [0, 1]. The same matrix and settings always give the same bytes,
which is what lets ``protrnn predict`` resume an interrupted run and still match an uninterrupted one.

By default the top L pairs (L = chain length) of each separation range are written (short 6-11, medium 12-23, long
>= 24; up to 3L pairs, ranked as one list; separations below 6, where ``min_separation`` admits them, are
one more list): CASP assesses the top L/5, L/2 and L contacts of each range, so every such
list can be read from the file. The full matrix is in the ``.npz`` beside it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from protrnn.conventions import MIN_SEPARATION, RANGES
from protrnn.errors import InputError, reading
from protrnn.utils.io import atomic_write

AUTHOR = "protrnn"
SEQUENCE_LINE_WIDTH = 50
PROBABILITY_DECIMALS = 4
CONTACT_D1 = 0
CONTACT_D2 = 8
# Pairs that select_contacts reads at a time (its working memory is ~40 bytes a pair, whatever L is).
_BLOCK_PAIRS = 1 << 20
#: The separation ranges whose top-L lists the default selection keeps whole (CASP's three).
RR_RANGES = ("short", "medium", "long")


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


def _pair_blocks(probs: np.ndarray, min_separation: int,
                 max_separation: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The upper-triangle pairs with ``min_separation <= j - i`` (``<= max_separation`` when given) as 0-based
    ``(i, j, p)`` arrays (p as float64), a few whole rows at a time (about ``_BLOCK_PAIRS`` pairs), in row-major
    order, so that no array spans the whole triangle (at 10,000 residues that would be ~2 GB of index and value
    arrays)."""
    length = probs.shape[0]
    rows_with_pairs = length - min_separation  # rows 0 .. rows_with_pairs - 1 have a partner j
    block_rows = max(1, _BLOCK_PAIRS // max(1, length))
    for start in range(0, max(0, rows_with_pairs), block_rows):
        stop = min(start + block_rows, rows_with_pairs)
        # Upper triangle of the (stop - start) x L slab starting at row ``start``: j >= start + r + min_separation.
        rows, cols = np.triu_indices(stop - start, k=start + min_separation, m=length)
        rows = rows + start
        if max_separation is not None:
            near = cols - rows <= max_separation
            rows, cols = rows[near], cols[near]
        yield rows, cols, probs[rows, cols].astype(np.float64)


def range_windows(min_separation: int = MIN_SEPARATION) -> list[tuple[int, int | None]]:
    """The separation windows ``(low, high)`` (inclusive; ``None`` = open) whose top L pairs the default selection
    keeps: each range of :data:`RR_RANGES` from ``min_separation`` on, and below the first one the separations that
    a smaller ``min_separation`` admits (``[(6, 11), (12, 23), (24, None)]`` by default)."""
    windows: list[tuple[int, int | None]] = []
    first = RANGES[RR_RANGES[0]][0]
    if min_separation < first:
        windows.append((min_separation, first - 1))
    for name in RR_RANGES:
        low, high = RANGES[name]
        if high is None or high >= min_separation:
            windows.append((max(low, min_separation), high))
    return windows


def _keep_top(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
              top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``top`` pairs ranking first by (-p, i, j), in their input order; the input must be in row-major (i, j)
    order, so that ties at the cut are kept in index order, as the final sort would rank them."""
    if values.size <= top:
        return rows, cols, values
    if top == 0:
        return rows[:0], cols[:0], values[:0]
    kth = np.partition(values, values.size - top)[values.size - top]  # the top-th largest value
    keep = values > kth
    tied = np.flatnonzero(values == kth)
    keep[tied[:top - int(keep.sum())]] = True
    return rows[keep], cols[keep], values[keep]


def select_contacts(probs: np.ndarray, *, top: int | None = None, min_separation: int = MIN_SEPARATION,
                    threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs to write, as 0-based ``(i, j, p)`` arrays with ``i < j``, ordered by decreasing p then (i, j).

    Only the upper triangle with ``j - i >= min_separation`` is considered. ``threshold`` keeps pairs with
    ``p >= threshold``; ``top`` caps the count. With neither, the top L pairs (L = matrix size) of each window of
    :func:`range_windows` are kept, so that every range's top-L/k list is among them (up to 3L pairs by default).
    The triangle is read in blocks of rows and only the running top candidates are kept, so working memory is
    O(top + block) rather than O(L^2) (except with a threshold and no cap, which keeps every pair that passes).
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
    if top is None and threshold is None:
        chosen = [_select(probs, probs.shape[0], low, high, None) for low, high in range_windows(min_separation)]
        rows, cols, values = (np.concatenate(column) for column in zip(*chosen, strict=True))
        order = np.lexsort((cols, rows, -values))
        return rows[order], cols[order], values[order]
    return _select(probs, top, min_separation, None, threshold)


def _select(probs: np.ndarray, top: int | None, min_separation: int, max_separation: int | None,
            threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """select_contacts within one separation window (checked arguments)."""
    # Candidates so far, in row-major order (blocks arrive in row order; filtering keeps order).
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending = 0
    for rows, cols, values in _pair_blocks(probs, min_separation, max_separation):
        if not np.all(np.isfinite(values)):
            raise ValueError("probability matrix contains NaN or infinite values")
        if threshold is not None:
            keep = values >= threshold
            rows, cols, values = rows[keep], cols[keep], values[keep]
        parts.append((rows, cols, values))
        pending += values.size
        if top is not None and pending > top:
            parts = [_keep_top(*(np.concatenate(column) for column in zip(*parts, strict=True)), top)]
            pending = parts[0][2].size
    if parts:
        rows, cols, values = (np.concatenate(column) for column in zip(*parts, strict=True))
    else:
        rows, cols, values = np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp), np.empty(0, dtype=np.float64)
    order = np.lexsort((cols, rows, -values))
    if top is not None:
        order = order[:top]
    return rows[order], cols[order], values[order]


def format_probability(p: float) -> str:
    """Fixed four-decimal text, clamped to [0, 1] (the same float always gives the same bytes)."""
    return f"{min(1.0, max(0.0, float(p))):.{PROBABILITY_DECIMALS}f}"


def format_rr(target: str, sequence: str, probs: np.ndarray, *, method_lines: Sequence[str],
              remarks: Sequence[str] = (), top: int | None = None, min_separation: int = MIN_SEPARATION,
              threshold: float | None = None, upper_distance: float = CONTACT_D2) -> str:
    """The RR text for one chain (see the module docstring for the layout); ``upper_distance`` is each contact line's
    d2, the distance (Å) the probabilities are for (the model's contact cutoff; CASP's 8 by default)."""
    probs = np.asarray(probs)
    if not (math.isfinite(upper_distance) and upper_distance > CONTACT_D1):
        raise ValueError(f"upper_distance must be a finite distance > {CONTACT_D1}, got {upper_distance!r}")
    d2 = f"{upper_distance:g}"
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
    lines.extend(f"{i + 1} {j + 1} {CONTACT_D1} {d2} {format_probability(p)}"
                 for i, j, p in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True))
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_rr(path_or_handle: str | os.PathLike[str] | IO[str], target: str, sequence: str, probs: np.ndarray, *,
             method_lines: Sequence[str], remarks: Sequence[str] = (), top: int | None = None,
             min_separation: int = MIN_SEPARATION, threshold: float | None = None,
             upper_distance: float = CONTACT_D2) -> None:
    """Write one chain's contacts as CASP RR. A path is written atomically; a text handle is written as is.

    ``probs`` is the L x L probability matrix (its upper triangle is read); ``top``/``threshold`` choose the pairs
    (default: the top L of each separation range from ``min_separation`` on, :func:`select_contacts`);
    ``upper_distance`` is each line's d2 (:func:`format_rr`).
    """
    text = format_rr(target, sequence, probs, method_lines=method_lines, remarks=remarks, top=top,
                     min_separation=min_separation, threshold=threshold, upper_distance=upper_distance)
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
    # "END" right after MODEL or a sequence line is also a valid sequence line (E, N, D are residues; a writer that
    # wraps at 50 produces it for a sequence whose length is 3 mod 50): it ends the file only if nothing follows.
    end_or_sequence = False
    line_no = 0
    for line_no, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n").strip()
        if not line:
            continue
        if end_or_sequence:
            sequence_parts.append("END")
            end_or_sequence = False
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
            if state == "model":
                end_or_sequence = True
                continue
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
    if end_or_sequence:
        state = "end"
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
