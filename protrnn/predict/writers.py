"""The files ``protrnn predict`` writes besides the RR (:mod:`protrnn.rr`): the npz matrix, the PNG map, summary.tsv.

Every writer is deterministic (fixed number formatting, fixed zip timestamps, no software stamp in the PNG) and atomic
(a temporary name renamed into place), so a resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
import math
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from protrnn.conventions import HEADLINE_K, MIN_SEPARATION
from protrnn.errors import InputError
from protrnn.evaluation.metrics import top_count
from protrnn.rr import select_contacts
from protrnn.utils.io import atomic_path, atomic_write, escape_control_characters

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUMMARY_NAME = "summary.tsv"
#: Temporary files of :func:`protrnn.utils.io.atomic_write` / ``atomic_path`` left behind by a killed run.
_STALE_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?$")
#: A fixed zip timestamp, so npz files are byte-identical across runs.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | os.PathLike[str], probs: np.ndarray, sequence: str, record_id: str, *,
              distogram: np.ndarray | None = None, distogram_edges: Sequence[float] | None = None,
              method: Sequence[str] | None = None) -> None:
    """Write ``probs`` (float16, symmetric L x L), ``sequence`` and ``id`` as a compressed npz, atomically; with
    ``distogram`` (L x L x K class probabilities) also ``distogram`` (float16) and ``distogram_edges`` (float32, the
    K - 1 class edges in Å); with ``method`` (the RR ``METHOD`` lines of the run: model, weights hash, precision) also
    ``method``, those lines joined by newlines, which ties the matrix to the model that computed it.

    Equivalent to ``np.savez_compressed`` but with a fixed zip timestamp, so equal inputs give equal bytes. Loads with
    ``np.load(path, allow_pickle=False)``. Each array is streamed into its zip entry (no in-memory copy of the
    matrix; the entry's size is announced up front, so the bytes are those of ``ZipFile.writestr``).
    """
    arrays = {"probs": np.ascontiguousarray(probs, dtype=np.float16), "sequence": np.str_(sequence),
              "id": np.str_(record_id)}
    if distogram is not None:
        if distogram_edges is None or distogram.shape != (len(sequence), len(sequence), len(distogram_edges) + 1):
            raise ValueError(f"distogram of shape {distogram.shape} does not fit {len(sequence)} residues and "
                             f"{distogram_edges!r}")
        arrays["distogram"] = np.ascontiguousarray(distogram, dtype=np.float16)
        arrays["distogram_edges"] = np.asarray(distogram_edges, dtype=np.float32)
    if method is not None:
        arrays["method"] = np.str_("\n".join(method))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.file_size = _npy_size(array)  # decides ZIP64 as writestr does
            with archive.open(info, "w") as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)


def _npy_size(array: np.ndarray) -> int:
    """Bytes of ``array`` in ``.npy`` format: its (version 1.0) header plus its data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.tell() + array.nbytes


def read_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, str, str]:
    """``(probs float16 L x L, sequence, id)`` from a prediction npz; InputError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            probs, sequence, record_id = data["probs"], str(data["sequence"]), str(data["id"])
    except Exception as exc:  # a damaged file: zlib.error, numpy's header parser (tokenize, SyntaxError), ...
        raise InputError(f"not a protrnn prediction npz ({type(exc).__name__}: {exc})", path=path) from None
    if probs.dtype != np.float16 or probs.shape != (len(sequence), len(sequence)):
        raise InputError(f"probs has dtype {probs.dtype} and shape {probs.shape}, expected float16 "
                         f"({len(sequence)}, {len(sequence)})", path=path)
    return probs, sequence, record_id


def _npz_text(path: str | os.PathLike[str], key: str, *, beside: tuple[str, ...] = ()) -> str | None:
    """The text entry ``key`` of an npz (only that entry is read), or None when the file cannot be read, lacks it
    or any entry of ``beside``, or holds something other than one string there."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if any(name not in data.files for name in (key, *beside)):
                return None
            stored = data[key]
    except Exception:  # a damaged file, whatever numpy or zlib raises on it, is not a prediction npz
        return None
    return str(stored) if stored.shape == () and stored.dtype.kind == "U" else None


def read_npz_id(path: str | os.PathLike[str]) -> str | None:
    """The record ID stored in a prediction npz (only that entry is read), or None when ``path`` is not one."""
    return _npz_text(path, "id", beside=("probs",))


def read_npz_method(path: str | os.PathLike[str]) -> list[str] | None:
    """The ``method`` lines stored in a prediction npz (:func:`write_npz`), or None when it has none or cannot be
    read."""
    text = _npz_text(path, "method")
    return None if text is None else text.split("\n")


def has_distogram(path: str | os.PathLike[str], length: int, edges: Sequence[float]) -> bool:
    """Whether a prediction npz holds a float16 ``distogram`` of ``length`` residues with these class ``edges``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "distogram" not in data.files or "distogram_edges" not in data.files:
                return False
            stored = data["distogram_edges"]
            with data.zip.open("distogram.npy") as header:  # the array's header only, not its data
                version = np.lib.format.read_magic(header)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(header)
    except Exception:  # a damaged file, whatever numpy or zlib raises on it
        return False
    return (dtype == np.float16 and tuple(shape) == (length, length, len(edges) + 1)
            and np.array_equal(stored, np.asarray(edges, dtype=np.float32)))


def write_png(path: str | os.PathLike[str], probs: np.ndarray, title: str) -> None:
    """A contact-map image (probabilities, both triangles) written atomically with matplotlib's Agg backend."""
    figure = contact_map_figure(probs, title)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def contact_map_figure(probs: np.ndarray, title: str) -> Figure:
    """The figure :func:`write_png` saves. Axes count residues from 1, as the RR file and the error messages do:
    the cell of residues i, j (1-based) is centred on (j, i)."""
    from matplotlib.figure import Figure

    length = probs.shape[0]
    figure = Figure(figsize=(5.0, 4.4), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(np.asarray(probs, dtype=np.float32), cmap="Greys", vmin=0.0, vmax=1.0,
                        interpolation="nearest", origin="upper", extent=(0.5, length + 0.5, length + 0.5, 0.5))
    shown = "".join(ch if ch.isprintable() else "?" for ch in title)  # IDs may hold control characters
    axes.set_title(shown[:60], fontsize=9, parse_math=False)  # an ID with two `$` is not mathtext
    axes.set_xlabel("residue j")
    axes.set_ylabel("residue i")
    figure.colorbar(image, ax=axes, label="contact probability")
    figure.tight_layout()
    return figure


def mean_top_probability(probs: np.ndarray, k: int = HEADLINE_K, min_separation: int = MIN_SEPARATION) -> float:
    """Mean of the top ``max(1, L // k)`` probabilities with ``|i - j| >= min_separation``: a confidence summary
    (high for chains the model is sure about). NaN when the chain is too short to have such pairs.

    The pairs are :func:`protrnn.rr.select_contacts`'s top ``max(1, L // k)`` (the same blocked scan the RR writer
    uses, so a long chain needs no array the size of the matrix), averaged in decreasing order.
    """
    _, _, values = select_contacts(probs, top=top_count(probs.shape[0], k), min_separation=min_separation)
    return float(values.mean()) if values.size else math.nan


@dataclass
class SummaryRow:
    """One line of summary.tsv: a record, its file stem, what became of it and, with structures, its evaluation."""

    record_id: str
    stem: str
    length: int | None
    status: str
    reason: str = ""
    mean_top_l5: float = math.nan
    structure: str = ""
    evaluation: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def _tsv_cell(text: str) -> str:
    """Backslash, tab and line breaks as ``\\\\``, ``\\t``, ``\\n``, ``\\r``; any other control character, format
    character (a bidi override U+202E as ``\\u202e``) or lone surrogate as an escape
    (:func:`~protrnn.utils.io.escape_control_characters`)."""
    escaped = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return escape_control_characters(escaped)


def _fmt(value: float | None, *, count: bool = False) -> str:
    """Fixed formatting (4 decimals; integers for counts) so equal values always give equal bytes."""
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if count else f"{value:.4f}"


def write_summary(path: Path, rows: Iterable[SummaryRow], metric_columns: Sequence[str] | None) -> None:
    """summary.tsv, one row per record in the given order; ``metric_columns`` (evaluation against structures) adds
    the ``structure`` and ``evaluation`` columns and one column per metric."""
    header = ["id", "file", "length", "status", "reason", "mean_top_L5_prob"]
    if metric_columns is not None:
        header += ["structure", "evaluation", *metric_columns]
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            cells = [_tsv_cell(row.record_id), row.stem, "" if row.length is None else str(row.length), row.status,
                     _tsv_cell(row.reason), _fmt(row.mean_top_l5) if row.status == "ok" else ""]
            if metric_columns is not None:
                cells += [_tsv_cell(row.structure), _tsv_cell(row.evaluation)]
                cells += [_fmt(row.metrics[key], count=key.endswith(("/n_pairs", "/n_contacts")))
                          if key in row.metrics else "" for key in metric_columns]
            handle.write("\t".join(cells) + "\n")


def remove_stale_temporaries(outdir: Path) -> int:
    """Delete temporary files a killed run left in ``outdir`` (one OUTDIR serves one run at a time)."""
    removed = 0
    for entry in outdir.iterdir():
        if _STALE_TEMP.match(entry.name) and entry.is_file():
            entry.unlink()
            removed += 1
    return removed
