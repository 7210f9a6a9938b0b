"""The prepare pipeline: structures -> compact contact datasets with homology-aware splits, leakage removal and a
manifest of every input entry. ``protrnn prepare`` (:mod:`protrnn.commands.prepare`, whose ``--help`` documents the
steps and outputs) parses its arguments and calls :func:`prepare_datasets`.

Steps, in order:

1. every input is parsed through :func:`protrnn.data.sources.iter_chains` (in parallel over the files of plain
   directories); an entry that cannot be read is kept in the manifest with its one-line reason;
2. training candidates are filtered by length, need a scored pair and a unique ID; ``limit`` samples a subset;
3. candidates at ``identity`` or more to a test chain are removed (:func:`protrnn.data.splits.remove_leakage`);
4. the rest are clustered, clusters joined by any hit are merged (:func:`protrnn.data.splits.link_clusters`: a
   set-cover cluster ties members to its representative only, so one family could span two clusters) and whole
   clusters assigned to splits, none larger than a split's room unless it fits nowhere (or chains follow their
   source's split hints).

Outputs in OUTDIR (each written atomically): ``<split>.npz``, ``test_<NAME>.npz``, ``manifest.tsv``,
``leakage.tsv`` and ``prepare.json``; datasets a previous run listed in ``prepare.json`` but this run did not write
are deleted. A run that keeps no chain for the ``train`` split writes only ``manifest.failed.tsv`` (every entry's
reason) and raises, so an earlier run's outputs stay as they were. A split may not be named like a test set's file.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.conventions import (
    DEFAULT_CONTACT_CUTOFF,
    DEFAULT_COVERAGE,
    DEFAULT_FRACTIONS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_LENGTH,
    DEFAULT_MIN_SEQ_ID,
    MIN_SEPARATION,
    TRAIN_SPLIT,
    split_of_test_set,
)
from protrnn.data import formats, splits
from protrnn.data.chain import ProteinChain, check_contact_cutoff
from protrnn.data.dataset import save_dataset
from protrnn.data.sources import LoadOutcome, iter_chains
from protrnn.errors import InputError, read_json_document
from protrnn.utils.io import atomic_write, table_cell

#: Names of splits and test sets: they become file names (``<name>.npz``, ``test_<name>.npz``).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUMMARY_FILE = "prepare.json"
#: The ``format`` of prepare.json (no version: it is a record, read back only for its outputs and parameters).
SUMMARY_FORMAT = "protrnn-prepare"
MANIFEST_FILE = "manifest.tsv"
#: The manifest of a run that kept nothing to train on (written instead of every other output, so that an earlier
#: run's datasets stay as they were); a later run that succeeds removes it.
FAILED_MANIFEST_FILE = "manifest.failed.tsv"
LEAKAGE_FILE = "leakage.tsv"
MANIFEST_COLUMNS = ("source", "id", "length", "n_observed", "status", "reason", "split", "cluster")
LEAKAGE_COLUMNS = ("chain_id", "source", "test_set", "test_id", "identity", "aln_length", "evalue", "bits",
                   "test_coverage", "chain_coverage")


# ------------------------------------------------------------------------------------------------------- records
@dataclass
class Entry:
    """One manifest row: an input entry and what became of it."""

    source: str
    chain: ProteinChain | None
    role: str  # "train" (training candidate) or the test-set name
    status: str = "kept"
    reason: str = ""
    split: str = ""
    cluster: str = ""

    @property
    def id(self) -> str:
        return self.chain.id if self.chain is not None else ""

    def skip(self, reason: str) -> None:
        self.status, self.reason = "skipped", reason


@dataclass
class PrepareResult:
    """What :func:`prepare_datasets` did: every entry, the datasets written, the leakage hits and the summary
    (the content of ``prepare.json`` plus ``seconds``)."""

    entries: list[Entry]
    datasets: dict[str, Path]
    leakage: list = field(default_factory=list)
    method: str = ""
    n_clusters: int = 0
    summary: dict = field(default_factory=dict)
    outdir: Path = field(default_factory=Path)


# --------------------------------------------------------------------------------------------------- parsing
def _parse_task(task: tuple[str, str | None]) -> list[LoadOutcome]:
    path, chain = task
    return list(iter_chains(path, chain=chain))


def _expand(path: Path, skip: frozenset[Path] = frozenset()) -> list[Path]:
    """Split a plain directory into its files so they parse in parallel; cgdms data directories stay whole. Files in
    ``skip`` (resolved paths: an earlier run's outputs, when the output folder lies in an input directory) are left
    out, so a rerun does not read them back as inputs."""
    if not path.is_dir() or any(path.glob(f"**/{formats.CGDMS_TRAIN_VAL.rstrip('/')}")):
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames)
                     if not f.startswith(".") and (Path(dirpath) / f).resolve() not in skip)
    return files or [path]


def own_outputs(outdir: Path) -> frozenset[Path]:
    """The files an earlier prepare run wrote into ``outdir`` (resolved): its tables, and the datasets its
    ``prepare.json`` lists."""
    names = {MANIFEST_FILE, FAILED_MANIFEST_FILE, LEAKAGE_FILE, SUMMARY_FILE}
    try:  # a missing, unreadable or foreign prepare.json lists nothing
        listed = read_json_document(outdir / SUMMARY_FILE, SUMMARY_FORMAT).get("outputs")
    except InputError:
        listed = None
    if isinstance(listed, list):
        names |= {name for name in listed if isinstance(name, str) and name.endswith(".npz") and SAFE_NAME.match(name)}
    return frozenset((outdir / name).resolve() for name in names)


def load_entries(paths: Sequence[Path], role: str, chain: str | None, threads: int,
                 skip: frozenset[Path] = frozenset()) -> list[Entry]:
    """Every outcome of every input, in input order, parsed with up to ``threads`` processes (files in ``skip`` left
    out of input directories: see :func:`_expand`)."""
    tasks = [(str(p), chain) for path in paths for p in _expand(path, skip)]
    if threads > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with context.Pool(min(threads, len(tasks))) as pool:
            results = pool.imap(_parse_task, tasks, chunksize=max(1, len(tasks) // (threads * 8)))
            outcomes = [outcome for result in results for outcome in result]
    else:
        outcomes = [outcome for task in tasks for outcome in _parse_task(task)]
    entries = []
    for outcome in outcomes:
        entry = Entry(source=outcome.source, chain=outcome.chain, role=role)
        if outcome.chain is None:
            entry.skip(outcome.error or "unreadable input")
        entries.append(entry)
    return entries


def _has_scored_pair(chain: ProteinChain) -> bool:
    positions = np.flatnonzero(chain.observed)
    return positions.size >= 2 and int(positions[-1] - positions[0]) >= MIN_SEPARATION


def dedupe(entries: Iterable[Entry]) -> None:
    """Skip every kept entry whose ID an earlier kept entry already has (datasets are indexed by ID)."""
    first: dict[str, str] = {}
    for entry in entries:
        if entry.status != "kept":
            continue
        if entry.id in first:
            entry.skip(f"duplicate ID (first read from {first[entry.id]})")
        else:
            first[entry.id] = entry.source


# ------------------------------------------------------------------------------------------------- main logic
def prepare_datasets(inputs: Sequence[Path], outdir: str | Path, *, test_sets: dict[str, Path] | None = None,
                     fractions: dict[str, float] | None = None, use_split_hints: bool = False,
                     min_length: int = DEFAULT_MIN_LENGTH, max_length: int | None = DEFAULT_MAX_LENGTH,
                     identity: float = DEFAULT_MIN_SEQ_ID, coverage: float = DEFAULT_COVERAGE,
                     limit: int | None = None, seed: int = 0, chain: str | None = None,
                     contact_cutoff: float = DEFAULT_CONTACT_CUTOFF, threads: int = 1,
                     arguments: dict | None = None, log: Callable[[str], None] = print) -> PrepareResult:
    """The whole of ``protrnn prepare`` as a library call; see the command's ``--help`` for the steps."""
    outdir = Path(outdir)
    test_sets = test_sets or {}
    fractions = fractions or dict(DEFAULT_FRACTIONS)
    split_names = ["train", "val"] if use_split_hints else list(fractions)
    for name in split_names:
        if not SAFE_NAME.match(name):
            raise InputError(f"split name {name!r} must be letters, digits, '_', '.' or '-'")
    if TRAIN_SPLIT not in split_names:
        raise InputError(f"the splits {', '.join(split_names)} have no {TRAIN_SPLIT!r} split to train on")
    for name in test_sets:
        if split_of_test_set(name) in split_names:
            raise InputError(f"split {split_of_test_set(name)!r} would be written over test set {name!r}'s file "
                             f"{split_of_test_set(name)}.npz; name the split otherwise")
    if outdir.exists() and not outdir.is_dir():
        raise InputError("the output folder is a file", path=outdir)
    if not inputs:
        raise InputError("no inputs given (name files or directories, or use --default-sources)")
    for path in [*inputs, *test_sets.values()]:
        if not Path(path).exists():
            raise InputError("input not found", path=path)
    contact_cutoff = check_contact_cutoff(contact_cutoff, "contact cutoff")
    started = time.perf_counter()

    entries = load_entries(inputs, "train", chain, threads, skip=own_outputs(outdir))
    candidates = [e for e in entries if e.status == "kept"]
    log(f"parsed {len(entries)} input entries ({len(candidates)} chains) from {len(inputs)} input(s) "
        f"in {time.perf_counter() - started:.1f} s")
    for entry in candidates:
        length = len(entry.chain)
        if length < min_length:
            entry.skip(f"length {length} < --min-length {min_length}")
        elif max_length is not None and length > max_length:
            entry.skip(f"length {length} > --max-length {max_length}")
        elif not _has_scored_pair(entry.chain):
            entry.skip(f"no scored pair (fewer than two observed residues >= {MIN_SEPARATION} apart)")
    dedupe(entries)
    candidates = [e for e in entries if e.status == "kept"]
    if limit is not None and len(candidates) > limit:
        chosen = set(np.random.default_rng(seed).choice(len(candidates), size=limit, replace=False).tolist())
        for index, entry in enumerate(candidates):
            if index not in chosen:
                entry.skip(f"not sampled (--limit {limit})")
        candidates = [e for e in entries if e.status == "kept"]

    test_entries: dict[str, list[Entry]] = {}
    for name, path in test_sets.items():
        test_entries[name] = load_entries([path], name, chain, threads)
        dedupe(test_entries[name])
        kept = sum(e.status == "kept" for e in test_entries[name])
        log(f"test set {name}: {kept} chains from {path}")
        if kept == 0:
            raise InputError(f"test set {name!r} has no readable chain", path=path)

    method = splits.method_name()
    test_chains = {name: [e.chain for e in group if e.status == "kept"] for name, group in test_entries.items()}
    leakage = []
    if test_chains and candidates:
        t0 = time.perf_counter()
        _, leakage = splits.remove_leakage([e.chain for e in candidates], test_chains, min_seq_id=identity,
                                           coverage=coverage, threads=threads)
        by_id = {e.id: e for e in candidates}
        for hit in leakage:
            entry = by_id[hit.chain_id]
            entry.status = "removed"
            entry.reason = f"{hit.identity:.3f} identity to {hit.test_set}:{hit.test_id}"
        candidates = [e for e in candidates if e.status == "kept"]
        log(f"leakage: removed {len(leakage)} training chains at >= {identity:.0%} identity to a test chain "
            f"({method}, {time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    clusters = splits.cluster_sequences([e.id for e in candidates], [e.chain.sequence for e in candidates],
                                        min_seq_id=identity, coverage=coverage, threads=threads)
    n_clusters = len(set(clusters.values()))
    log(f"clustered {len(candidates)} chains into {n_clusters} clusters at {identity:.0%} identity "
        f"({method}, {time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    clusters = splits.link_clusters([e.id for e in candidates], [e.chain.sequence for e in candidates], clusters,
                                    min_seq_id=identity, coverage=coverage, threads=threads)
    sizes = Counter(clusters.values())
    log(f"merged clusters joined by a hit at {identity:.0%} identity: {n_clusters} -> {len(sizes)} clusters "
        f"(largest {max(sizes.values(), default=0)} chains; {time.perf_counter() - t0:.1f} s)")
    n_clusters = len(sizes)
    for entry in candidates:
        entry.cluster = clusters[entry.id]
    if use_split_hints:
        for entry in candidates:
            hint = entry.chain.meta.get("split_hint")
            entry.split = hint if hint in ("train", "val") else "train"
        spanning = _clusters_spanning(candidates)
        if spanning:
            log(f"note: {spanning} clusters have chains in both train and val (the sources' own split is not "
                "homology-aware; use --split for a cluster split)")
    else:
        assignment = splits.split_by_cluster(clusters, fractions, seed=seed, fit=True)
        for entry in candidates:
            entry.split = assignment[entry.id]

    all_entries = entries + [e for group in test_entries.values() for e in group]
    outdir.mkdir(parents=True, exist_ok=True)
    if not any(e.split == TRAIN_SPLIT for e in candidates):
        # A run with nothing to train on leaves an earlier run's outputs as they were: its manifest goes aside.
        write_manifest(outdir / FAILED_MANIFEST_FILE, all_entries)
        reasons = Counter(e.reason for e in entries if e.status != "kept")
        common = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
        raise InputError(f"no input chain was kept for the {TRAIN_SPLIT!r} split ({len(candidates)} kept, "
                         f"{sum(reasons.values())} skipped or removed{': ' + common if common else ''}); every "
                         f"entry's reason is in {FAILED_MANIFEST_FILE}, and nothing else was written", path=outdir)
    info = {"arguments": arguments or {}, "inputs": [str(p) for p in inputs], "identity": identity,
            # the leakage rule's coverage: of either chain since 2026-12-07 ("test chain" in data prepared before)
            "coverage": coverage, "leakage_coverage_of": "either chain", "leakage_rule": splits.LEAKAGE_RULE,
            "homology_method": method, "seed": seed, "split_mode": "hints" if use_split_hints else fractions}
    datasets: dict[str, Path] = {}
    for name in split_names:
        members = [e.chain for e in candidates if e.split == name]
        datasets[name] = save_dataset(members, outdir / f"{name}.npz", contact_cutoff=contact_cutoff,
                                      info={**info, "split": name})
        if not members:
            log(f"warning: split {name!r} is empty")
    for name, group in test_entries.items():
        stem = split_of_test_set(name)
        members = []
        for entry in group:
            if entry.status == "kept":
                entry.split = stem
                members.append(entry.chain)
        datasets[stem] = save_dataset(members, outdir / f"{stem}.npz", contact_cutoff=contact_cutoff,
                                      info={**info, "split": stem, "test_set": name, "path": str(test_sets[name])})

    write_manifest(outdir / MANIFEST_FILE, all_entries)
    (outdir / FAILED_MANIFEST_FILE).unlink(missing_ok=True)  # a failed run's, now out of date
    write_leakage(outdir / LEAKAGE_FILE, leakage, {e.id: e.source for e in entries if e.status == "removed"})
    summary = build_summary(all_entries, datasets, leakage, method, n_clusters, info, outdir)
    remove_stale(outdir, set(datasets.values()))
    with atomic_write(outdir / SUMMARY_FILE) as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return PrepareResult(all_entries, datasets, leakage, method, n_clusters, summary, outdir)


def _clusters_spanning(entries: Sequence[Entry]) -> int:
    seen: dict[str, set[str]] = {}
    for entry in entries:
        seen.setdefault(entry.cluster, set()).add(entry.split)
    return sum(len(s) > 1 for s in seen.values())


# ---------------------------------------------------------------------------------------------------- outputs
def write_manifest(path: Path, entries: Sequence[Entry]) -> None:
    """``manifest.tsv``: one row per input entry (:data:`MANIFEST_COLUMNS`)."""
    with atomic_write(path, newline="", encoding="utf-8") as handle:
        handle.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for e in entries:
            length = len(e.chain) if e.chain is not None else ""
            observed = int(e.chain.observed.sum()) if e.chain is not None else ""
            row = (e.source, e.id, length, observed, e.status, e.reason, e.split, e.cluster)
            handle.write("\t".join(table_cell(v) for v in row) + "\n")


def write_leakage(path: Path, leakage: Sequence, sources: dict[str, str]) -> None:
    """``leakage.tsv``: one row per removed training chain (:data:`LEAKAGE_COLUMNS`); ``sources`` maps its ID to
    the input it came from."""
    with atomic_write(path, newline="", encoding="utf-8") as handle:
        handle.write("\t".join(LEAKAGE_COLUMNS) + "\n")
        for hit in leakage:
            h = hit.hit
            row = (hit.chain_id, sources.get(hit.chain_id, ""), hit.test_set, hit.test_id, f"{hit.identity:.3f}",
                   h.aln_length, f"{h.evalue:.3g}", f"{h.bits:.1f}", f"{h.query_coverage:.3f}",
                   f"{h.target_coverage:.3f}")
            handle.write("\t".join(table_cell(v) for v in row) + "\n")


def build_summary(entries: Sequence[Entry], datasets: dict[str, Path], leakage: Sequence, method: str,
                  n_clusters: int, info: dict, outdir: Path) -> dict[str, Any]:
    """The content of ``prepare.json``: parameters, homology method, counts and output files."""
    status = Counter((e.role if e.role == "train" else "test", e.status) for e in entries)
    reasons = Counter(reason_kind(e.reason) for e in entries if e.status == "skipped")
    split_counts = {}
    for name, path in datasets.items():
        members = [e for e in entries if e.split == name and e.status == "kept"]
        split_counts[name] = {"chains": len(members), "residues": int(sum(len(e.chain) for e in members)),
                              "file": path.name}
    return {
        "format": SUMMARY_FORMAT, "info": info, "homology_method": method, "clusters": n_clusters,
        "entries": len(entries),
        "status": {f"{role}:{state}": count for (role, state), count in sorted(status.items())},
        "skip_reasons": dict(reasons.most_common()),
        "leakage": dict(Counter(hit.test_set for hit in leakage)),
        "datasets": split_counts,
        "outputs": sorted(p.name for p in datasets.values()) + [MANIFEST_FILE, LEAKAGE_FILE],
        "outdir": str(outdir),
    }


#: The text of a skip reason that :func:`reason_kind` keeps as written: a quoted value (the letter of "invalid residue
#: letter '1'") and a path or file name (a word holding '/' or '\', a name with an extension, or 'file#record':
#: "duplicate ID (first read from t1.tar.gz#a/1aap.pdb.gz)").
_NAMED_IN_REASON = re.compile(r"""('[^']*'|[^\s'"(),;]*(?:[/\\]|\w\.[A-Za-z]|\w#\w)[^\s'"(),;]*)""")
#: A number standing alone in a skip reason (a position, length or count), not digits within a name (mmseqs2, 0xff).
_COUNT_IN_REASON = re.compile(r"(?<!\w)\d+(?:\.\d+)?(?!\w)")


def reason_kind(reason: str) -> str:
    """The group of a skip reason in the summary (prepare.json's ``skip_reasons``, the printed "skipped because"):
    the reasons that differ only in where they occurred and in numbers that vary from entry to entry. The
    file/record prefix is dropped and numbers standing alone (positions, lengths, counts) become N; what the
    reason names is kept as written: quoted values (the letter of "invalid residue letter '1'"), paths and file
    names (the first file of a duplicate ID) and digits within a word (mmseqs2, a byte 0xff)."""
    tail = reason.split(": ", 1)[-1]  # "<file>, record 'x': reason"; the reason itself may contain ": "
    parts = _NAMED_IN_REASON.split(tail)  # odd indices: quoted values, paths and file names
    return "".join(part if k % 2 else _COUNT_IN_REASON.sub("N", part) for k, part in enumerate(parts))[:80]


def remove_stale(outdir: Path, written: set[Path]) -> None:
    """Delete datasets a previous run listed in prepare.json that this run did not write (e.g. a dropped test set)."""
    keep = {p.name for p in written}
    for path in own_outputs(outdir):  # a missing, unreadable or foreign prepare.json lists no dataset
        if path.suffix == ".npz" and path.name not in keep:
            path.unlink(missing_ok=True)


def summary_text(result: PrepareResult) -> str:
    """The summary ``protrnn prepare`` prints when it is done (counts per status, skip reasons, datasets)."""
    s = result.summary
    lines = [f"\nprotrnn prepare: {s['entries']} input entries -> {result.outdir} ({s.get('seconds', 0)} s)"]
    lines += [f"  {key:<16} {count}" for key, count in s["status"].items()]
    if s["skip_reasons"]:
        lines.append("  skipped because:")
        lines += [f"    {count:>6}  {reason}" for reason, count in list(s["skip_reasons"].items())[:8]]
    lines.append(f"  homology: {s['homology_method']}; {s['clusters']} clusters among kept training chains")
    if result.leakage:
        per_set = ", ".join(f"{k}: {v}" for k, v in s["leakage"].items())
        lines.append(f"  removed for test-set overlap: {len(result.leakage)} ({per_set}); see leakage.tsv")
    lines += [f"  {counts['file']:<24} {counts['chains']:>7} chains {counts['residues']:>10} residues"
              for counts in s["datasets"].values()]
    lines.append("  manifest.tsv lists every input entry; prepare.json records parameters and counts")
    return "\n".join(lines)
