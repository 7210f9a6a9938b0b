"""Sequence -> contact probabilities: the bundled default model, :class:`Predictor`, and FASTA -> RR / npz / TSV.

Public API (stable, see docs/predict.md)::

    model = protrnn.load_model()                 # bundled default model (or load_model("path/to/model_dir"))
    probs = model.predict(["MKV...", "GSH..."])  # one L x L float32 symmetric probability matrix per sequence

:func:`predict_fasta` is what ``protrnn predict`` runs. Its outputs are deterministic (fixed formatting, no timestamps,
batches formed independently of what is already done), written atomically per record, and a rerun of the same command
skips records whose outputs are complete, so an interrupted run, rerun, ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protrnn.conventions import MIN_SEPARATION
from protrnn.errors import InputError, reading
from protrnn.model.predictor import DEFAULT_BATCH_TOKENS, Predictor, load_model
from protrnn.rr import read_rr_document, rr_target, write_rr
from protrnn.utils.io import SafeNamer, atomic_path, atomic_write

__all__ = ["DEFAULT_BATCH_TOKENS", "Predictor", "load_model", "predict_fasta"]

if TYPE_CHECKING:  # pragma: no cover

    from protrnn.data.chain import ProteinChain

#: FASTA records are read and planned in chunks of this many records or residues (bounded memory on any file size).
CHUNK_RECORDS = 512
CHUNK_RESIDUES = 262_144

SUMMARY_NAME = "summary.tsv"
#: Temporary files of :func:`protrnn.utils.io.atomic_write` / ``atomic_path`` left behind by a killed run.
_STALE_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?$")
#: A fixed zip timestamp, so npz files are byte-identical across runs.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")


# --------------------------------------------------------------------------------------------------------------------
# Output files


def write_npz(path: str | os.PathLike[str], probs: np.ndarray, sequence: str, record_id: str) -> None:
    """Write ``probs`` (float16, symmetric L x L), ``sequence`` and ``id`` as a compressed npz, atomically.

    Equivalent to ``np.savez_compressed`` but with a fixed zip timestamp, so equal inputs give equal bytes. Loads with
    ``np.load(path, allow_pickle=False)``.
    """
    arrays = {"probs": np.ascontiguousarray(probs, dtype=np.float16), "sequence": np.str_(sequence),
              "id": np.str_(record_id)}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def read_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, str, str]:
    """``(probs float16 L x L, sequence, id)`` from a prediction npz; InputError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            probs, sequence, record_id = data["probs"], str(data["sequence"]), str(data["id"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"not a protrnn prediction npz ({exc})", path=path) from None
    if probs.dtype != np.float16 or probs.shape != (len(sequence), len(sequence)):
        raise InputError(f"probs has dtype {probs.dtype} and shape {probs.shape}, expected float16 "
                         f"({len(sequence)}, {len(sequence)})", path=path)
    return probs, sequence, record_id


def write_png(path: str | os.PathLike[str], probs: np.ndarray, title: str) -> None:
    """A contact-map image (probabilities, both triangles) written atomically with matplotlib's Agg backend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.4), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(np.asarray(probs, dtype=np.float32), cmap="Greys", vmin=0.0, vmax=1.0,
                        interpolation="nearest", origin="upper")
    shown = "".join(ch if ch.isprintable() else "?" for ch in title)  # IDs may hold control characters
    axes.set_title(shown[:60], fontsize=9)
    axes.set_xlabel("residue j")
    axes.set_ylabel("residue i")
    figure.colorbar(image, ax=axes, label="contact probability")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def mean_top_probability(probs: np.ndarray, k: int = 5, min_separation: int = MIN_SEPARATION) -> float:
    """Mean of the top ``max(1, L // k)`` probabilities with ``|i - j| >= min_separation``: a confidence summary
    (high for chains the model is sure about). NaN when the chain is too short to have such pairs."""
    length = probs.shape[0]
    rows, cols = np.triu_indices(length, k=min_separation)
    if rows.size == 0:
        return math.nan
    values = probs[rows, cols].astype(np.float64)
    count = min(values.size, max(1, length // k))
    return float(np.sort(values)[::-1][:count].mean())


# --------------------------------------------------------------------------------------------------------------------
# Structures for optional evaluation


@dataclass(frozen=True)
class StructureRef:
    """Where a record's structure is: a file (and chain ID) to parse, or a chain already read from a collection."""

    path: Path
    chain: str | None = None
    loaded: ProteinChain | None = None


class StructureIndex:
    """Finds the structure of a record: an explicit TSV map ``id<TAB>path[<TAB>chain]`` (``.tsv``/``.txt``), files in
    a directory named ``<id>.pdb/.cif/.ent[.gz]`` or, for IDs like ``1abcA`` / ``1abc_A``, ``1abc.*`` with chain
    ``A``; or a collection of chains matched by ID: a prepared ``.npz`` (``protrnn prepare``), a CATH-style
    ``chain_set.jsonl`` / JSON, per-chain JSONL or an archive (every format ``protrnn prepare`` reads)."""

    def __init__(self, source: str | os.PathLike[str]) -> None:
        self.source = Path(source)
        self._map: dict[str, StructureRef] = {}
        self._files: dict[str, Path] = {}
        self._chains: dict[str, ProteinChain] = {}
        if self.source.is_file() and not self.source.name.lower().endswith((".tsv", ".txt")):
            self._read_collection()
        elif self.source.is_dir():
            for entry in sorted(self.source.iterdir()):
                name = entry.name.lower()
                for suffix in _STRUCTURE_SUFFIXES:
                    if name.endswith(suffix) and entry.is_file():
                        self._files.setdefault(entry.name[: -len(suffix)].lower(), entry)
                        break
        elif self.source.is_file():
            self._read_map()
        else:
            raise InputError("structures: no such directory or mapping file", path=self.source)

    def _read_map(self) -> None:
        try:
            with reading(self.source):
                lines = self.source.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise InputError(f"structure map is not UTF-8 text (byte {exc.start + 1})", path=self.source) from None
        for line_no, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                continue
            fields = text.split("\t")
            if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
                raise InputError(f"line {line_no}: expected 'id<TAB>path[<TAB>chain]'", path=self.source)
            if fields[0] in self._map:
                raise InputError(f"line {line_no}: id {fields[0]!r} mapped twice", path=self.source)
            path = Path(fields[1])
            if not path.is_absolute():
                path = self.source.parent / path
            chain = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
            self._map[fields[0]] = StructureRef(path, chain)

    def _read_collection(self) -> None:
        if self.source.name.lower().endswith(".npz"):
            from protrnn.data.dataset import load_dataset

            chains = list(load_dataset(self.source))
        else:
            from protrnn.data.sources import iter_chains

            chains = [outcome.chain for outcome in iter_chains(self.source) if outcome.chain is not None]
        if not chains:
            raise InputError("structures: no chain could be read from this file", path=self.source)
        for chain in chains:
            self._chains.setdefault(chain.id, chain)

    def find(self, record_id: str) -> StructureRef | None:
        if self._chains:
            chain = self._chains.get(record_id)
            return StructureRef(self.source, chain.id, loaded=chain) if chain is not None else None
        if not self._files:
            return self._map.get(record_id)
        from protrnn.utils.io import safe_name

        for key in (record_id.lower(), safe_name(record_id).lower()):
            if key in self._files:
                return StructureRef(self._files[key])
        match = re.fullmatch(r"([0-9][A-Za-z0-9]{3})[_:.|-]?([A-Za-z0-9]{1,4})", record_id)
        if match and match.group(1).lower() in self._files:
            return StructureRef(self._files[match.group(1).lower()], match.group(2))
        return None


def evaluation_columns() -> list[str]:
    """Metric columns added to the summary with ``--structures`` (the range metrics of ``evaluate_contacts``)."""
    from protrnn.evaluation.metrics import metric_keys

    return [key for key in metric_keys(bins=()) if key != "L"]


def evaluate_record(probs: np.ndarray, sequence: str, ref: StructureRef | None) -> tuple[str, str, dict[str, float]]:
    """``(structure file, note, metrics)`` for one record; problems become a note, never an exception."""
    if ref is None:
        return "", "no structure found", {}
    from protrnn.data.structure import read_structure
    from protrnn.evaluation.metrics import evaluate_contacts

    if ref.loaded is not None:
        chain = ref.loaded
    else:
        try:
            chain = read_structure(ref.path, chain=ref.chain)
        except InputError as exc:
            return ref.path.name, f"structure not read: {exc}", {}
    if chain.sequence != sequence:
        differ = next((k for k, (a, b) in enumerate(zip(chain.sequence, sequence, strict=False)) if a != b),
                      min(len(chain.sequence), len(sequence)))
        return ref.path.name, (f"sequence mismatch: structure {len(chain.sequence)} residues, record "
                               f"{len(sequence)}, first difference at position {differ + 1}; not evaluated"), {}
    try:
        metrics = evaluate_contacts(probs.astype(np.float32), chain.contact_map(), chain.observed, bins=())
    except InputError as exc:
        return ref.path.name, f"not evaluated: {exc}", {}
    return ref.path.name, "ok", {key: value for key, value in metrics.items() if key != "L"}


# --------------------------------------------------------------------------------------------------------------------
# FASTA -> outputs


@dataclass
class SummaryRow:
    record_id: str
    stem: str
    length: int | None
    status: str
    reason: str = ""
    mean_top_l5: float = math.nan
    structure: str = ""
    evaluation: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PredictionRun:
    """What :func:`predict_fasta` did: per-record rows (input order) and counts."""

    outdir: Path
    summary_path: Path
    rows: list[SummaryRow]
    predicted: int = 0
    resumed: int = 0

    @property
    def ok(self) -> int:
        return sum(row.status == "ok" for row in self.rows)

    @property
    def skipped(self) -> int:
        return sum(row.status == "skipped" for row in self.rows)


@dataclass
class _Pending:
    index: int
    record_id: str
    stem: str
    sequence: str


def _tsv_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _fmt(value: float | None, *, count: bool = False) -> str:
    """Fixed formatting (4 decimals; integers for counts) so equal values always give equal bytes."""
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if count else f"{value:.4f}"


def write_summary(path: Path, rows: Iterable[SummaryRow], metric_columns: Sequence[str] | None) -> None:
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


def _read_complete(outdir: Path, item: _Pending, *, png: bool, methods: list[str],
                   remarks: list[str]) -> np.ndarray | None:
    """The stored float16 matrix if this record's outputs are complete and match this run's settings, else None."""
    rr_path, npz_path = outdir / f"{item.stem}.rr", outdir / f"{item.stem}.npz"
    if not rr_path.is_file() or not npz_path.is_file() or (png and not (outdir / f"{item.stem}.png").is_file()):
        return None
    try:
        probs, sequence, record_id = read_npz(npz_path)
        doc = read_rr_document(rr_path)
    except InputError:
        return None
    if (sequence, record_id) != (item.sequence, item.record_id):
        return None
    if (doc.target, doc.sequence, doc.methods, doc.remarks) != (rr_target(item.record_id), item.sequence, methods,
                                                                remarks):
        return None
    return probs


def _iter_records(fasta: Path, *, skip_invalid: bool) -> Iterator[tuple[str, str | None, str]]:
    """``(id, cleaned sequence or None, reason)`` per FASTA record in file order. Invalid records (bad letters, empty,
    duplicate ID) raise, or with ``skip_invalid`` come back with ``None`` and the reason, in their place in the file."""
    from protrnn.data.fasta import iter_fasta

    skipped: list[tuple[str, str]] = []
    for record in iter_fasta(fasta, skip_invalid=skip_invalid, skipped=skipped):
        # Entries appended while advancing to this record lie before it in the file.
        for record_id, reason in skipped:
            yield record_id, None, reason
        skipped.clear()
        yield record.id, record.sequence, ""
    for record_id, reason in skipped:
        yield record_id, None, reason


def predict_fasta(fasta: str | os.PathLike[str], outdir: str | os.PathLike[str],
                  model: Predictor | str | os.PathLike[str] | None = None, *, top: int | None = None,
                  min_separation: int = MIN_SEPARATION, threshold: float | None = None, png: bool = False,
                  skip_invalid: bool = False, structures: str | os.PathLike[str] | None = None,
                  progress: bool = True, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                  on_record: Callable[[str], None] | None = None) -> PredictionRun:
    """Predict every record of ``fasta`` into ``outdir``: ``<stem>.rr`` (CASP RR), ``<stem>.npz`` (float16 matrix,
    sequence, id), optionally ``<stem>.png``, and ``summary.tsv``.

    ``top``/``threshold``/``min_separation`` choose the RR pairs (default: top L with |i - j| >= 6). ``structures``
    is a directory of PDB/mmCIF files or a TSV map; matched records get evaluation metrics in the summary.
    Records whose outputs are already complete (same sequence, model and settings) are not predicted again.
    ``on_record(stem)`` is called after each record's files are written (progress hooks, tests).
    """
    fasta = Path(fasta)
    outdir = Path(outdir)
    if not fasta.is_file():
        raise InputError("FASTA file not found", path=fasta)
    if min_separation < 1:
        raise InputError(f"--min-separation must be at least 1, got {min_separation}")
    if top is not None and top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be in [0, 1], got {threshold}")
    predictor = model if isinstance(model, Predictor) else load_model(model)
    index = StructureIndex(structures) if structures is not None else None
    metric_columns = evaluation_columns() if index is not None else None
    outdir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(outdir)

    methods = predictor.method_lines()
    selection = (f"threshold {threshold:g}" if threshold is not None else "top L") if top is None else (
        f"top {top}" + (f" with p >= {threshold:g}" if threshold is not None else ""))
    remarks = [f"contacts: {selection} pairs with |i-j| >= {min_separation}; full matrix in the npz"]

    run = PredictionRun(outdir=outdir, summary_path=outdir / SUMMARY_NAME, rows=[])
    namer = SafeNamer()
    bar = _progress(progress)
    started = time.perf_counter()
    predicted_residues = 0

    def summarise(item: _Pending, half: np.ndarray) -> None:
        # From the stored float16 matrix, so a resumed record reports exactly what a fresh one does.
        probs32 = half.astype(np.float32)
        row = rows_by_index[item.index]
        row.mean_top_l5 = mean_top_probability(probs32, 5, min_separation)
        if index is not None:
            row.structure, row.evaluation, row.metrics = evaluate_record(probs32, item.sequence,
                                                                         index.find(item.record_id))

    def process(chunk: list[_Pending]) -> None:
        nonlocal predicted_residues
        done: set[int] = set()
        for item in chunk:
            stored = _read_complete(outdir, item, png=png, methods=methods, remarks=remarks)
            if stored is not None:
                summarise(item, stored)
                done.add(item.index)
        # Batches are planned over the whole chunk, done or not, so each record sees the same batch (and thus the
        # same arithmetic) as in an uninterrupted run; a batch whose records are all done is not run.
        for batch in predictor.plan([len(item.sequence) for item in chunk], batch_tokens):
            items = [chunk[k] for k in batch]
            if all(item.index in done for item in items):
                run.resumed += len(items)
                bar.update(len(items))
                continue
            for item, probs in zip(items, predictor.predict_batch([item.sequence for item in items]), strict=True):
                if item.index in done:
                    run.resumed += 1
                    continue
                half = probs.astype(np.float16)
                # The RR goes last: a record counts as complete only once its npz (and PNG) exist.
                write_npz(outdir / f"{item.stem}.npz", half, item.sequence, item.record_id)
                if png:
                    write_png(outdir / f"{item.stem}.png", half, f"{item.record_id} (L={len(item.sequence)})")
                write_rr(outdir / f"{item.stem}.rr", item.record_id, item.sequence, probs, method_lines=methods,
                         remarks=remarks, top=top, min_separation=min_separation, threshold=threshold)
                summarise(item, half)
                run.predicted += 1
                predicted_residues += len(item.sequence)
                if on_record is not None:
                    on_record(item.stem)
            bar.update(len(items))
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{predicted_residues / elapsed:,.0f} res/s", refresh=False)

    rows_by_index: dict[int, SummaryRow] = {}
    chunk: list[_Pending] = []
    chunk_residues = 0
    try:
        for number, (record_id, sequence, reason) in enumerate(
                _iter_records(fasta, skip_invalid=skip_invalid)):
            if sequence is None:
                run.rows.append(SummaryRow(record_id, "", None, "skipped", reason))
                continue
            stem = namer(record_id)
            row = SummaryRow(record_id, stem, len(sequence), "ok")
            run.rows.append(row)
            rows_by_index[number] = row
            chunk.append(_Pending(number, record_id, stem, sequence))
            chunk_residues += len(sequence)
            if len(chunk) >= CHUNK_RECORDS or chunk_residues >= CHUNK_RESIDUES:
                process(chunk)
                chunk, chunk_residues = [], 0
        if chunk:
            process(chunk)
    finally:
        bar.close()
    if not run.rows:
        raise InputError("no FASTA records found (empty file?)", path=fasta)
    write_summary(run.summary_path, run.rows, metric_columns)
    return run


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(desc="predict", unit="rec", file=sys.stderr, dynamic_ncols=True)
