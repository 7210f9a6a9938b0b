"""The resumable FASTA -> files run behind ``protrnn predict``: per record ``<stem>.rr``, ``<stem>.npz`` (and
``<stem>.png``), then ``summary.tsv``.

Outputs are deterministic (fixed formatting, no timestamps, batches formed independently of what is already done),
written atomically per record, and a rerun of the same command skips records whose outputs are complete, so an
interrupted run, rerun, ends byte-identical to an uninterrupted one. What an earlier run left that would now be wrong
goes: the PNG of a record written again without ``--png`` (:func:`write_record`), the files of a record this run
skips (:func:`remove_skipped_outputs`).

Sequences are read as written (:func:`protrnn.data.fasta.iter_fasta`) and cleaned once, here, with the model's alphabet
(:meth:`Predictor.clean`), before batching; the RR, npz and summary hold the cleaned sequence.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.data.fasta import NO_ID_REASON, iter_fasta, skip_reason
from protrnn.data.structure_index import StructureIndex
from protrnn.errors import InputError
from protrnn.evaluation.metrics import bin_label
from protrnn.model.predictor import Predictor, load_model
from protrnn.predict.evaluate import evaluate_record, evaluation_columns
from protrnn.predict.memory import RELEASE_PAIRS, release_free_memory
from protrnn.predict.writers import (
    SUMMARY_NAME,
    SummaryRow,
    has_distogram,
    mean_top_probability,
    read_npz,
    read_npz_id,
    read_npz_method,
    remove_stale_temporaries,
    write_npz,
    write_png,
    write_summary,
)
from protrnn.rr import range_windows, read_rr_document, rr_target, write_rr
from protrnn.utils.io import SafeNamer, safe_name

#: FASTA records are read and planned in chunks of this many records or residues (bounded memory on any file size).
CHUNK_RECORDS = 512
CHUNK_RESIDUES = 262_144


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


@dataclass(frozen=True)
class OutputSettings:
    """What a record's files depend on besides its sequence: the RR selection, the PNG switch and the model's
    description. ``methods`` and ``remarks`` are also what identifies a complete record when a run resumes."""

    outdir: Path
    top: int | None
    min_separation: int
    threshold: float | None
    png: bool
    methods: list[str]
    remarks: list[str]
    #: The distance-class edges (Å) when the npz also holds each pair's distance distribution, else None.
    distogram_edges: list[float] | None = None
    #: The contacts' upper distance bound (Å) in the RR lines: the model's training cutoff (a METHOD line says it).
    contact_cutoff: float = DEFAULT_CONTACT_CUTOFF

    @classmethod
    def build(cls, outdir: Path, predictor: Predictor, *, top: int | None, min_separation: int,
              threshold: float | None, png: bool, distogram: bool = False) -> OutputSettings:
        # repr: the shortest text that reads back as the same float, so the REMARK (which a resumed run compares)
        # tells 0.3265 from 0.3265001 (``:g`` kept 6 digits, and such runs resumed each other's files)
        shown = repr(float(threshold)) if threshold is not None else ""
        if top is None and threshold is None:
            windows = ", ".join(bin_label(low, high) for low, high in range_windows(min_separation))
            remarks = [f"contacts: top L pairs of each separation range {windows}; full matrix in the npz"]
        else:
            selection = f"threshold {shown}" if top is None else (
                f"top {top}" + (f" with p >= {shown}" if threshold is not None else ""))
            remarks = [f"contacts: {selection} pairs with |i-j| >= {min_separation}; full matrix in the npz"]
        edges = predictor.require_distogram() if distogram else None
        if edges is not None:
            remarks.append(f"distance distribution per pair in the npz (distogram): {len(edges) + 1} Cb-Cb classes, "
                           f"edges {' '.join(f'{e:g}' for e in edges)} A")
        return cls(outdir, top, min_separation, threshold, png, predictor.method_lines(), remarks, edges,
                   predictor.contact_cutoff)

    def path(self, stem: str, suffix: str) -> Path:
        return self.outdir / f"{stem}{suffix}"


@dataclass
class PendingRecord:
    """A record waiting in a chunk: its summary row (filled in when done) and its cleaned sequence."""

    row: SummaryRow
    sequence: str

    @property
    def record_id(self) -> str:
        return self.row.record_id

    @property
    def stem(self) -> str:
        return self.row.stem


def read_complete(settings: OutputSettings, item: PendingRecord) -> np.ndarray | None:
    """The stored float16 matrix if this record's outputs are complete and match this run's settings, else None."""
    rr_path, npz_path = settings.path(item.stem, ".rr"), settings.path(item.stem, ".npz")
    png_missing = settings.png and not settings.path(item.stem, ".png").is_file()
    if not rr_path.is_file() or not npz_path.is_file() or png_missing:
        return None
    try:
        probs, sequence, record_id = read_npz(npz_path)
        doc = read_rr_document(rr_path)
    except InputError:
        return None
    if (sequence, record_id) != (item.sequence, item.record_id):
        return None
    # the npz is written before the RR: a run of another model (or precision) stopped between the two leaves its
    # matrix beside this run's RR, and only the npz's own method lines tell
    if read_npz_method(npz_path) != settings.methods:
        return None
    if (doc.target, doc.sequence, doc.methods, doc.remarks) != (rr_target(item.record_id), item.sequence,
                                                                settings.methods, settings.remarks):
        return None
    if settings.distogram_edges is not None and not has_distogram(npz_path, len(item.sequence),
                                                                  settings.distogram_edges):
        return None
    return probs


def write_record(settings: OutputSettings, item: PendingRecord, probs: np.ndarray,
                 distogram: np.ndarray | None = None) -> np.ndarray:
    """Write one record's files (npz, PNG, then the RR last: a record is complete only once its RR exists); returns
    the stored float16 matrix. ``distogram`` (L x L x K) goes into the npz with the settings' edges.

    Without ``--png``, a ``<stem>.png`` of an earlier run is removed first (it would show another prediction beside
    the new files), provided ``<stem>.npz`` is a prediction npz: a PNG that no protrnn output sits beside is left."""
    png = settings.path(item.stem, ".png")
    if not settings.png and png.is_file() and read_npz_id(settings.path(item.stem, ".npz")) is not None:
        png.unlink()
    half = probs.astype(np.float16)
    write_npz(settings.path(item.stem, ".npz"), half, item.sequence, item.record_id, distogram=distogram,
              distogram_edges=settings.distogram_edges, method=settings.methods)
    if settings.png:
        write_png(png, half, f"{item.record_id} (L={len(item.sequence)})")
    # the RR lists the stored matrix, so its ranking is the one the npz, the PNG and the summary's metrics use (float32
    # values that round to one float16 tie there, and ties rank by (i, j) everywhere)
    write_rr(settings.path(item.stem, ".rr"), item.record_id, item.sequence, half.astype(np.float32),
             method_lines=settings.methods,
             remarks=settings.remarks, top=settings.top, min_separation=settings.min_separation,
             threshold=settings.threshold, upper_distance=settings.contact_cutoff)
    return half


#: A stem of :class:`~protrnn.utils.io.SafeNamer`: a safe name, with ``~N`` when it collided (``~`` is never part of a
#: safe name).
_NAMER_STEM = re.compile(r"(?P<base>[^~]+)(?:~[0-9]+)?")


def remove_skipped_outputs(outdir: Path, record_ids: Collection[str], kept_stems: Collection[str]) -> int:
    """Remove what an earlier run wrote for records this run skipped (``--skip-invalid``): per skipped ID, the
    ``<stem>.rr``, ``<stem>.png`` and ``<stem>.npz`` of every stem it could have been named (its safe name, with or
    without a ``~N``) whose npz stores exactly that ID, unless this run wrote that stem for a record of its own
    (``kept_stems``; a skipped duplicate shares its ID with the record kept). A stem without a readable npz is left,
    as is anything else in OUTDIR. The npz goes last, so an interrupted removal is finished by a rerun. Returns how
    many records' files were removed."""
    wanted: dict[str, set[str]] = {}
    for record_id in record_ids:
        wanted.setdefault(safe_name(record_id).lower(), set()).add(record_id)
    if not wanted:
        return 0
    kept: dict[str, list[str]] = {}
    for stem in kept_stems:
        kept.setdefault(stem.lower(), []).append(stem)
    removed = 0
    for entry in sorted(outdir.iterdir()):
        stem = entry.name[:-len(".npz")]
        match = _NAMER_STEM.fullmatch(stem) if entry.name.endswith(".npz") else None
        if match is None or match["base"].lower() not in wanted or _written_now(entry, kept.get(stem.lower(), [])):
            continue
        if read_npz_id(entry) not in wanted[match["base"].lower()]:
            continue
        for suffix in (".rr", ".png", ".npz"):
            with contextlib.suppress(FileNotFoundError):
                (outdir / f"{stem}{suffix}").unlink()
        removed += 1
    return removed


def _written_now(npz: Path, stems: list[str]) -> bool:
    """Whether ``npz`` is the npz of one of ``stems`` (this run's, equal to its stem but for case): the same name, or
    on a case-insensitive file system the same file under a name of other case."""
    for stem in stems:
        if npz.name == f"{stem}.npz":
            return True
        with contextlib.suppress(OSError):
            if npz.samefile(npz.with_name(f"{stem}.npz")):
                return True
    return False


def iter_records(fasta: Path, predictor: Predictor, *, skip_invalid: bool) -> Iterator[tuple[str, str | None, str]]:
    """``(id, cleaned sequence or None, reason)`` per FASTA record in file order.

    The reader validates and returns sequences as written; they are cleaned here, once, with the model's alphabet.
    Invalid records (bad letters for the reader or the model, empty, duplicate ID) raise, or with ``skip_invalid``
    come back with ``None`` and the reason, in their place in the file.
    """
    skipped: list[tuple[str, str]] = []
    for record in iter_fasta(fasta, skip_invalid=skip_invalid, skipped=skipped):
        # Entries appended while advancing to this record lie before it in the file.
        yield from ((record_id, None, reason) for record_id, reason in skipped)
        skipped.clear()
        try:
            sequence = predictor.clean(record.sequence, record=record.id, path=fasta)
        except InputError as exc:
            if not skip_invalid:
                raise
            yield record.id, None, skip_reason(exc)
            continue
        yield record.id, sequence, ""
    yield from ((record_id, None, reason) for record_id, reason in skipped)


class ChunkPredictor:
    """Predicts chunks of records into files and fills in their summary rows; counts what it did on ``run``."""

    def __init__(self, predictor: Predictor, settings: OutputSettings, run: PredictionRun, *,
                 index: StructureIndex | None, batch_tokens: int | None, progress: Any,
                 on_record: Callable[[str], None] | None) -> None:
        self.predictor = predictor
        self.settings = settings
        self.run = run
        self.index = index
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.on_record = on_record
        self.started = time.perf_counter()
        self.predicted_residues = 0

    def summarise(self, item: PendingRecord, half: np.ndarray) -> None:
        """Fill in the record's summary row from the stored float16 matrix, so a resumed record reports exactly what
        a fresh one does."""
        # |i-j| >= 6 (the CASP convention) whatever --min-separation selects for the RR: the column's documented
        # meaning, comparable across runs
        item.row.mean_top_l5 = mean_top_probability(half, 5, MIN_SEPARATION)
        if self.index is not None:
            item.row.structure, item.row.evaluation, item.row.metrics = evaluate_record(
                half.astype(np.float32), item.sequence, self.index.find(item.record_id))

    def process(self, chunk: list[PendingRecord]) -> None:
        """Predict every record of ``chunk`` whose outputs are not already complete."""
        done: set[int] = set()
        for position, item in enumerate(chunk):
            stored = read_complete(self.settings, item)
            if stored is not None:
                self.summarise(item, stored)
                done.add(position)
        # Batches are planned over the whole chunk, done or not, so each record sees the same batch (and thus the
        # same arithmetic) as in an uninterrupted run; a batch whose records are all done is not run.
        for batch in self.predictor.plan([len(item.sequence) for item in chunk], self.batch_tokens):
            if all(position in done for position in batch):
                self.run.resumed += len(batch)
                self.progress.update(len(batch))
                continue
            items = [chunk[position] for position in batch]
            sequences = [item.sequence for item in items]
            outputs: list[tuple[np.ndarray, np.ndarray | None]] = (
                [(probs, None) for probs in self.predictor.predict_batch(sequences)]
                if self.settings.distogram_edges is None else
                list(self.predictor.predict_batch_distogram(sequences)))
            if len(batch) * max(len(item.sequence) for item in items) ** 2 >= RELEASE_PAIRS:
                release_free_memory()  # a long chain's tile buffers, before its files are written
            for position, item, (probs, dist) in zip(batch, items, outputs, strict=True):
                if position in done:
                    self.run.resumed += 1
                    continue
                self.summarise(item, write_record(self.settings, item, probs, dist))
                self.run.predicted += 1
                self.predicted_residues += len(item.sequence)
                if self.on_record is not None:
                    self.on_record(item.stem)
            self.progress.update(len(batch))
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.progress.set_postfix_str(f"{self.predicted_residues / elapsed:,.0f} res/s", refresh=False)


def predict_fasta(fasta: str | os.PathLike[str], outdir: str | os.PathLike[str],
                  model: Predictor | str | os.PathLike[str] | None = None, *, top: int | None = None,
                  min_separation: int = MIN_SEPARATION, threshold: float | None = None, png: bool = False,
                  skip_invalid: bool = False, structures: str | os.PathLike[str] | None = None,
                  structure_map: str | os.PathLike[str] | None = None, progress: bool = True,
                  batch_tokens: int | None = None, on_record: Callable[[str], None] | None = None,
                  distogram: bool = False) -> PredictionRun:
    """Predict every record of ``fasta`` into ``outdir``: ``<stem>.rr`` (CASP RR), ``<stem>.npz`` (float16 matrix,
    sequence, id, the run's METHOD lines), optionally ``<stem>.png``, and ``summary.tsv``.

    ``top``/``threshold``/``min_separation`` choose the RR pairs (default: the top L of each separation range).
    ``structures`` is a directory of PDB/mmCIF files or a chain collection, ``structure_map`` a TSV map (``--structure-map``; at most
    one of the two; :class:`StructureIndex`); matched records get evaluation metrics in the summary.
    ``batch_tokens``: padded residues per batch (default: the predictor's, per device); the arithmetic
    (``precision``) is the predictor's (:func:`load_model`). Records whose outputs are already complete (same
    sequence, model, precision and settings) are not predicted again; earlier outputs of a record skipped now are
    removed (:func:`remove_skipped_outputs`). ``on_record(stem)`` is called after each record's files are written
    (progress hooks, tests). ``distogram``: each npz also holds the
    pairs' distance distributions (``distogram``, float16 L x L x K, and ``distogram_edges`` in Å; a model with a
    distogram head only, else InputError before anything is written).
    """
    fasta = Path(fasta)
    outdir = Path(outdir)
    if fasta.is_dir():
        raise InputError("is a directory, not a FASTA file", path=fasta)
    if not fasta.is_file():
        raise InputError("FASTA file not found", path=fasta)
    if min_separation < 1:
        raise InputError(f"--min-separation must be at least 1, got {min_separation}")
    if top is not None and top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be in [0, 1], got {threshold}")
    predictor = model if isinstance(model, Predictor) else load_model(model)
    settings = OutputSettings.build(outdir, predictor, top=top, min_separation=min_separation, threshold=threshold,
                                    png=png, distogram=distogram)
    if structures is not None and structure_map is not None:
        raise InputError("give --structures or --structure-map, not both")
    cutoff = predictor.contact_cutoff  # structures are scored at the contacts the model predicts
    index = (StructureIndex(structures, contact_cutoff=cutoff) if structures is not None else
             StructureIndex(structure_map, kind="map", contact_cutoff=cutoff) if structure_map is not None else None)
    metric_columns = evaluation_columns() if index is not None else None
    created = not outdir.exists()
    if os.path.lexists(outdir) and not outdir.is_dir():  # a file (or a dangling link) in the way: exit 1, as for
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a directory", str(outdir))  # every output path
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        remove_stale_temporaries(outdir)

        run = PredictionRun(outdir=outdir, summary_path=outdir / SUMMARY_NAME, rows=[])
        namer = SafeNamer()
        bar = _progress(progress)
        worker = ChunkPredictor(predictor, settings, run, index=index, batch_tokens=batch_tokens, progress=bar,
                                on_record=on_record)
        chunk: list[PendingRecord] = []
        chunk_residues = 0
        try:
            for record_id, sequence, reason in iter_records(fasta, predictor, skip_invalid=skip_invalid):
                if sequence is None:
                    run.rows.append(SummaryRow(record_id, "", None, "skipped", reason))
                    continue
                row = SummaryRow(record_id, namer(record_id), len(sequence), "ok")
                run.rows.append(row)
                chunk.append(PendingRecord(row, sequence))
                chunk_residues += len(sequence)
                if len(chunk) >= CHUNK_RECORDS or chunk_residues >= CHUNK_RESIDUES:
                    worker.process(chunk)
                    chunk, chunk_residues = [], 0
            if chunk:
                worker.process(chunk)
        finally:
            bar.close()
        if not run.rows:
            raise InputError("no FASTA records found (empty file?)", path=fasta)
        # a record without an ID is listed as #N, its place in the file: not an ID whose earlier outputs could go
        remove_skipped_outputs(outdir, [row.record_id for row in run.rows
                                        if row.status == "skipped" and not row.reason.startswith(NO_ID_REASON)],
                               [row.stem for row in run.rows if row.status == "ok"])
        write_summary(run.summary_path, run.rows, metric_columns)
    except BaseException:
        if created:  # a run that stopped before writing anything leaves no empty OUTDIR behind
            with contextlib.suppress(OSError):
                outdir.rmdir()  # refuses a directory that holds anything
        raise
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
