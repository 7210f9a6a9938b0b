"""Sequence-level structure labels from the sidechainnet wheel: ProteinNet chains with 8-state DSSP per residue.

The PyPI wheel ``sidechainnet==1.0.1`` (47.7 MB) ships ``sidechainnet/resources/full_protein_dssp_annotations.json``
(159,026 ProteinNet chains, ``{"<id>": {"Sequence": ..., "DSSP": ...}}``) and
``single_domain_dssp_annotations.json`` (93,212 SCOPe domains, the same plus ``SCCS``). The files are read straight
from the wheel, which is downloaded once with :func:`protrnn.data.sources.fetch_wheel` (never installed: it pulls
heavy dependencies); an already downloaded wheel, an extracted ``resources`` folder or the JSON itself work too.

:func:`prepare_structure_labels` turns them into pretraining datasets with the hygiene of the contact data:

1. every record is read; one whose sequence and DSSP lengths differ, or whose sequence holds a letter that is not a
   residue, is skipped with its reason;
2. identical sequences are collapsed into one chain (the smallest ID represents them); its labels are the
   per-residue majority vote of the copies' DSSP letters, ties going to the representative's letter;
3. chains outside ``[min_length, max_length]`` are skipped; ``max_chains`` keeps a seeded random sample (the subset
   for short runs is drawn before the homology steps, so they stay cheap);
4. every chain at >= ``identity`` sequence identity to a chain of any test set over >= ``coverage`` of **either**
   chain is removed (:func:`protrnn.data.splits.find_test_relatives`, the rule of the contact data too: a ProteinNet
   chain that holds a test domain, and a fragment or SCOPe domain of a test chain, are both relatives; the manifest
   counts how many chains the earlier rules, of both chains' or the test chain's coverage, would have removed). Its
   three searches take the sidechainnet chains as queries against the test chains (plain and exhaustive) and the test
   chains as queries against them, with no per-query candidate limit (``--max-seqs`` at least the database's size),
   so a test chain with hundreds of relatives in ProteinNet keeps none of them;
5. the rest are clustered (:func:`protrnn.data.splits.cluster_sequences`) and whole clusters go to train or val
   (:func:`protrnn.data.splits.split_by_cluster`).

Without mmseqs2 the documented fallback of :mod:`protrnn.data.splits` runs; it is meant for subsets
(``max_chains``): its all-against-all clustering does not scale to the 80k sequences of the full file.

Outputs (each written atomically) in OUTDIR: ``train.npz`` / ``val.npz`` (:mod:`protrnn.data.structure_labels`),
``records.tsv`` (one row per record read: :data:`RECORD_COLUMNS`), ``leakage.tsv`` (one row per removed chain, the
columns of ``protrnn prepare``'s table) and ``manifest.json`` (parameters and counts: records read, duplicates
collapsed, removed per test set, clusters, residues used, masked residues).
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.alphabet import DEFAULT_ALPHABET, PARENT_LETTER, UNK_TOKEN, UNKNOWN_LETTERS
from protrnn.conventions import (
    DEFAULT_COVERAGE,
    DEFAULT_LABEL_VAL_FRACTION,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_LENGTH,
    DEFAULT_MIN_SEQ_ID,
)
from protrnn.data import splits
from protrnn.data.prepare import LEAKAGE_FILE, reason_kind, write_leakage
from protrnn.data.sources import fetch_wheel, read_chains
from protrnn.data.structure import gunzip_if_needed, read_input_bytes, read_zip_member
from protrnn.data.structure_labels import (
    MASKED,
    SS8_STATES,
    LabelledSequence,
    residue_labels,
    save_structure_labels,
)
from protrnn.errors import InputError
from protrnn.utils.io import atomic_write

SIDECHAINNET_REQUIREMENT = "sidechainnet==1.0.1"
RESOURCES = "sidechainnet/resources/"
#: Annotation files of the wheel, by the subset name used in options and manifests.
SUBSET_FILES = {"full": "full_protein_dssp_annotations.json", "single_domain": "single_domain_dssp_annotations.json"}
SPLITS = ("train", "val")
RECORDS_FILE = "records.tsv"
MANIFEST_FILE = "manifest.json"
#: The ``format`` of manifest.json (a record of the run: no version).
MANIFEST_FORMAT = "protrnn-structure-label-manifest"
RECORD_COLUMNS = ("id", "subset", "length", "status", "reason", "representative", "split", "cluster")
#: Sequences made of these letters need no per-letter cleaning (the parent mapping U -> C, O -> K still applies).
_PLAIN = re.compile(f"[{DEFAULT_ALPHABET.residues}{''.join(sorted(UNKNOWN_LETTERS | set(PARENT_LETTER)))}]*")
_PARENT = str.maketrans(PARENT_LETTER)


@dataclass(frozen=True)
class DsspRecord:
    """One annotation record as read: the raw sequence and DSSP strings ('' when the record lacks one)."""

    id: str
    sequence: str
    dssp: str
    subset: str
    source: str


@dataclass
class LabelEntry:
    """One row of ``records.tsv``: a record and what became of it.

    ``status`` is ``kept`` (written to ``split``), ``duplicate`` (its sequence is represented by
    ``representative``), ``skipped`` (``reason``: unreadable, length, not sampled) or ``removed`` (``reason``: the
    test chain it hit).
    """

    record: DsspRecord
    status: str = "kept"
    reason: str = ""
    representative: str = ""
    split: str = ""
    cluster: str = ""


@dataclass
class _Group:
    """All valid records of one distinct sequence; ``members[0]`` (smallest ID) represents it."""

    sequence: str
    members: list[LabelEntry]
    labels: np.ndarray | None = None

    @property
    def id(self) -> str:
        return self.members[0].record.id

    def set(self, status: str, reason: str = "") -> None:
        self.members[0].status, self.members[0].reason = status, reason


@dataclass
class LabelPrepResult:
    """What :func:`prepare_structure_labels` did: every record's fate, the leakage hits and ``manifest.json``."""

    entries: list[LabelEntry]
    leakage: list[splits.LeakageHit]
    manifest: dict[str, Any]
    outdir: Path
    datasets: dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ reading
def fetch_sidechainnet(cache_dir: str | os.PathLike[str]) -> Path:
    """The ``sidechainnet==1.0.1`` wheel in ``cache_dir``, downloaded once (``pip download --no-deps``)."""
    return fetch_wheel(SIDECHAINNET_REQUIREMENT, cache_dir)


def _check_subsets(subsets: Sequence[str]) -> None:
    unknown = [s for s in subsets if s not in SUBSET_FILES]
    if unknown or not subsets:
        raise InputError(f"unknown annotation subset(s) {unknown or subsets!r}; choose from {', '.join(SUBSET_FILES)}")


def read_dssp_records(path: str | os.PathLike[str], subsets: Sequence[str] = ("full",)) -> list[DsspRecord]:
    """Every record of the chosen annotation files, in file order.

    ``path`` is the sidechainnet wheel (or any zip holding ``sidechainnet/resources/<file>``), a folder holding the
    files (the extracted wheel, its ``resources`` folder, or the JSON files themselves), or one JSON file (``.gz``
    allowed), whose subset is then taken from its name (``single_domain...`` or else ``full``).
    """
    _check_subsets(subsets)
    source = Path(path)
    if not source.exists():
        raise InputError("sidechainnet source not found", path=source)
    records: list[DsspRecord] = []
    if source.is_file() and source.name.lower().removesuffix(".gz").endswith(".json"):
        subset = "single_domain" if source.name.startswith("single_domain") else "full"
        return _parse(read_input_bytes(source), subset, str(source))
    if source.is_dir():
        for subset in subsets:
            name = SUBSET_FILES[subset]
            candidates = [source / name, source / f"{name}.gz", source / RESOURCES / name, source / "resources" / name]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise InputError(f"no {name} in the folder (looked for {RESOURCES}{name} too)", path=source)
            records += read_dssp_records(found)
        return records
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            for subset in subsets:
                name = SUBSET_FILES[subset]
                member = next((n for n in names if n == RESOURCES + name or n.endswith("/" + name)), None)
                if member is None:
                    raise InputError(f"the archive has no {RESOURCES}{name} (is it the sidechainnet wheel?)",
                                     path=source)
                where = f"{source}#{member}"
                records += _parse(read_zip_member(archive, member, where), subset, where)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable wheel/zip or JSON file ({exc})", path=source) from None
    return records


def _parse(raw: bytes, subset: str, source: str) -> list[DsspRecord]:
    raw = gunzip_if_needed(raw, source)  # bounded as every input (MAX_INPUT_BYTES of output)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a DSSP annotation JSON ({exc.__class__.__name__}: {exc})", path=source) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object of records keyed by chain ID, got {type(data).__name__}",
                         path=source)
    records = []
    for key, value in data.items():
        value = value if isinstance(value, dict) else {}
        sequence, dssp = value.get("Sequence"), value.get("DSSP")
        records.append(DsspRecord(id=str(key), sequence=sequence if isinstance(sequence, str) else "",
                                  dssp=dssp if isinstance(dssp, str) else "", subset=subset, source=source))
    return records


# ---------------------------------------------------------------------------------------------------- labelling
def consensus_labels(copies: Sequence[np.ndarray]) -> np.ndarray:
    """Per-residue majority vote of the 8-state labels of identical sequences (``copies[0]`` wins ties).

    A position where every copy is :data:`~protrnn.data.structure_labels.MASKED` stays masked.
    """
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in copies])
    votes = np.zeros((len(SS8_STATES), stacked.shape[1]))
    for state in range(len(SS8_STATES)):
        votes[state] = (stacked == state).sum(0)
    first = stacked[0]
    columns = np.flatnonzero(first >= 0)
    votes[first[columns], columns] += 0.5  # the representative breaks ties
    labels = votes.argmax(0).astype(np.int8)
    labels[votes.max(0) == 0] = MASKED
    return labels


def _validate(entry: LabelEntry) -> str | None:
    """The cleaned sequence of a record, or None after marking it skipped with its reason."""
    record = entry.record
    if not record.sequence or not record.dssp:
        entry.status, entry.reason = "skipped", "record lacks a Sequence or DSSP string"
        return None
    if len(record.sequence) != len(record.dssp):
        entry.status = "skipped"
        entry.reason = f"{len(record.sequence)} residues but {len(record.dssp)} DSSP letters"
        return None
    if _PLAIN.fullmatch(record.sequence):  # the common case, checked in C: upper-case residue letters only
        sequence = record.sequence.translate(_PARENT)
    else:
        try:
            sequence = DEFAULT_ALPHABET.clean(record.sequence, record=record.id)
        except InputError as exc:
            entry.status, entry.reason = "skipped", str(exc)
            return None
    if len(sequence) != len(record.sequence) or not sequence.isascii():
        entry.status, entry.reason = "skipped", "sequence holds gap or stop characters"
        return None
    return sequence


def _group(entries: Sequence[LabelEntry]) -> list[_Group]:
    """Collapse valid records with identical sequences; groups sorted by representative ID."""
    by_sequence: dict[str, list[LabelEntry]] = defaultdict(list)
    seen_ids: dict[str, str] = {}
    for entry in entries:
        sequence = _validate(entry)
        if sequence is None:
            continue
        if entry.record.id in seen_ids:
            entry.status, entry.reason = "skipped", f"duplicate ID (also in {seen_ids[entry.record.id]})"
            continue
        seen_ids[entry.record.id] = entry.record.subset
        by_sequence[sequence].append(entry)
    groups = []
    for sequence, members in by_sequence.items():
        members.sort(key=lambda e: e.record.id)
        tokens = DEFAULT_ALPHABET.encode(sequence)
        copies = [residue_labels(tokens, m.record.dssp) for m in members]
        group = _Group(sequence, members, consensus_labels(copies) if len(copies) > 1 else copies[0])
        for member in members[1:]:
            member.status, member.reason = "duplicate", "same sequence as the representative"
            member.representative = group.id
        members[0].representative = group.id
        groups.append(group)
    groups.sort(key=lambda g: g.id)
    return groups


# ------------------------------------------------------------------------------------------------------ pipeline
def prepare_structure_labels(source: str | os.PathLike[str], outdir: str | os.PathLike[str], *,
                             test_sets: Mapping[str, Path] | None = None, subsets: Sequence[str] = ("full",),
                             min_length: int = DEFAULT_MIN_LENGTH,
                             max_length: int | None = DEFAULT_MAX_LENGTH, max_chains: int | None = None,
                             val_fraction: float = DEFAULT_LABEL_VAL_FRACTION,
                             identity: float = DEFAULT_MIN_SEQ_ID,
                             coverage: float = DEFAULT_COVERAGE, seed: int = 0, threads: int = 1,
                             arguments: dict[str, Any] | None = None,
                             log: Callable[[str], None] = print) -> LabelPrepResult:
    """The whole of ``protrnn pretrain prepare`` as a library call (steps and outputs: module docstring)."""
    _check_subsets(subsets)
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"validation fraction must be in (0, 1), got {val_fraction}")
    if max_length is not None and min_length > max_length:
        raise InputError(f"minimum length {min_length} exceeds maximum length {max_length}")
    test_sets = dict(test_sets or {})
    for name, path in test_sets.items():
        if not Path(path).exists():
            raise InputError(f"test set {name!r} not found", path=path)
    out = Path(outdir)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    records = read_dssp_records(source, subsets)
    entries = [LabelEntry(record) for record in records]
    groups = _group(entries)
    valid = sum(e.status != "skipped" for e in entries)
    seconds["read"] = round(time.perf_counter() - started, 1)
    log(f"read {len(records)} records from {source} ({', '.join(subsets)}): {valid} valid, "
        f"{len(groups)} distinct sequences ({seconds['read']} s)")

    counts: dict[str, Any] = {
        "records_read": len(records),
        "records_read_per_subset": dict(Counter(r.subset for r in records)),
        "records_skipped": len(entries) - valid,
        "skip_reasons": dict(Counter(reason_kind(e.reason) for e in entries if e.status == "skipped").most_common()),
        "duplicates_collapsed": valid - len(groups),
        "distinct_sequences": len(groups),
    }
    candidates = []
    too_short = too_long = 0
    for group in groups:
        length = len(group.sequence)
        if length < min_length:
            group.set("skipped", f"length {length} < minimum {min_length}")
            too_short += 1
        elif max_length is not None and length > max_length:
            group.set("skipped", f"length {length} > maximum {max_length}")
            too_long += 1
        else:
            candidates.append(group)
    counts.update(too_short=too_short, too_long=too_long)
    if max_chains is not None and len(candidates) > max_chains:
        chosen = set(np.random.default_rng(seed).choice(len(candidates), size=max_chains, replace=False).tolist())
        for index, group in enumerate(candidates):
            if index not in chosen:
                group.set("skipped", f"not sampled (at most {max_chains} chains)")
        counts["not_sampled"] = len(candidates) - max_chains
        candidates = [g for i, g in enumerate(candidates) if i in chosen]
    else:
        counts["not_sampled"] = 0
    counts["candidates"] = len(candidates)

    method = splits.method_name()
    leakage: list[splits.LeakageHit] = []
    test_counts = {}
    if test_sets and candidates:
        t0 = time.perf_counter()
        test_chains = {}
        for name, path in test_sets.items():
            test_chains[name] = read_chains(path)
            test_counts[name] = {"path": str(path), "chains": len(test_chains[name])}
        leakage, leak_counts = splits.find_test_relatives(
            [g.id for g in candidates], [g.sequence for g in candidates], test_chains, min_seq_id=identity,
            coverage=coverage, threads=threads)
        by_id = {g.id: g for g in candidates}
        for hit in leakage:
            by_id[hit.chain_id].set("removed", f"{hit.identity:.3f} identity to {hit.test_set}:{hit.test_id}")
        candidates = [g for g in candidates if g.members[0].status == "kept"]
        seconds["leakage"] = round(time.perf_counter() - t0, 1)
        counts.update(leak_counts)
        log(f"leakage: removed {len(leakage)} chains at >= {identity:.0%} identity to a test chain "
            f"({method}, {seconds['leakage']} s)")
    counts["removed_for_leakage"] = len(leakage)
    counts["removed_per_test_set"] = {name: sum(h.test_set == name for h in leakage) for name in test_sets}

    t0 = time.perf_counter()
    clusters = splits.cluster_sequences([g.id for g in candidates], [g.sequence for g in candidates],
                                        min_seq_id=identity, coverage=coverage, threads=threads)
    assignment = (splits.split_by_cluster(clusters, {"train": 1.0 - val_fraction, "val": val_fraction}, seed=seed)
                  if clusters else {})
    seconds["cluster"] = round(time.perf_counter() - t0, 1)
    counts["clusters"] = len(set(clusters.values()))
    log(f"clustered {len(candidates)} chains into {counts['clusters']} clusters at {identity:.0%} identity "
        f"({method}, {seconds['cluster']} s)")
    for group in candidates:
        group.members[0].split, group.members[0].cluster = assignment[group.id], clusters[group.id]
    for group in groups:
        for member in group.members[1:]:
            member.split, member.cluster = group.members[0].split, group.members[0].cluster

    info = {"source": str(source), "subsets": list(subsets), "identity": identity, "coverage": coverage,
            # the leakage rule's coverage: of either chain since 2026-12-07 ("test chain" in labels prepared before)
            "coverage_of": "either chain", "leakage_rule": splits.LEAKAGE_RULE, "homology_method": method, "seed": seed,
            "val_fraction": val_fraction,
            "min_length": min_length, "max_length": max_length, "max_chains": max_chains,
            "arguments": arguments or {}}
    out.mkdir(parents=True, exist_ok=True)
    datasets, split_counts = {}, {}
    masked_missing = masked_unknown = 0
    for name in SPLITS:
        members = [g for g in candidates if g.members[0].split == name]
        labelled = [LabelledSequence(g.id, g.sequence, g.labels, clusters[g.id]) for g in members]
        datasets[name] = save_structure_labels(labelled, out / f"{name}.npz", info={**info, "split": name})
        residues = sum(len(g.sequence) for g in members)
        n_labelled = sum(int((g.labels >= 0).sum()) for g in members)
        unknown = sum(int((DEFAULT_ALPHABET.encode(g.sequence) == UNK_TOKEN).sum()) for g in members)
        masked_unknown += unknown
        masked_missing += residues - n_labelled - unknown
        split_counts[name] = {"chains": len(members), "clusters": len({clusters[g.id] for g in members}),
                              "residues": residues, "labelled_residues": n_labelled, "file": datasets[name].name}
        if not members:
            log(f"warning: split {name!r} is empty")
    counts.update(chains_used=len(candidates), residues_used=sum(s["residues"] for s in split_counts.values()),
                  labelled_residues=sum(s["labelled_residues"] for s in split_counts.values()),
                  masked_unknown_residue=masked_unknown, masked_missing_dssp=masked_missing)

    write_records(out / RECORDS_FILE, entries)
    write_leakage(out / LEAKAGE_FILE, leakage, {g.id: g.members[0].record.source for g in groups})
    seconds["total"] = round(time.perf_counter() - started, 1)
    manifest = {"format": MANIFEST_FORMAT, "info": info, "homology_method": method,
                "counts": counts, "splits": split_counts, "test_sets": test_counts, "seconds": seconds,
                "outputs": [p.name for p in datasets.values()] + [RECORDS_FILE, LEAKAGE_FILE, MANIFEST_FILE]}
    with atomic_write(out / MANIFEST_FILE) as handle:
        json.dump(manifest, handle, indent=2, sort_keys=False)
        handle.write("\n")
    return LabelPrepResult(entries, leakage, manifest, out, datasets)


def write_records(path: Path, entries: Sequence[LabelEntry]) -> None:
    """``records.tsv``: one row per record read (:data:`RECORD_COLUMNS`)."""
    with atomic_write(path, newline="", encoding="utf-8") as handle:
        handle.write("\t".join(RECORD_COLUMNS) + "\n")
        for e in entries:
            row = (e.record.id, e.record.subset, len(e.record.sequence), e.status, e.reason, e.representative,
                   e.split, e.cluster)
            handle.write("\t".join(" ".join(str(v).replace("\t", " ").split()) for v in row) + "\n")


def summary_text(result: LabelPrepResult) -> str:
    """What ``protrnn pretrain prepare`` prints when it is done."""
    m, c = result.manifest, result.manifest["counts"]
    lines = [f"\nprotrnn pretrain prepare: {c['records_read']} records -> {result.outdir} ({m['seconds']['total']} s)",
             f"  skipped (unreadable)   {c['records_skipped']}",
             f"  duplicates collapsed   {c['duplicates_collapsed']} ({c['distinct_sequences']} distinct sequences)",
             f"  outside length limits  {c['too_short'] + c['too_long']}",
             f"  not sampled            {c['not_sampled']}",
             f"  removed for leakage    {c['removed_for_leakage']}"
             + (f" ({', '.join(f'{k}: {v}' for k, v in c['removed_per_test_set'].items())}); see leakage.tsv"
                if c["removed_per_test_set"] else " (no --test-set given)"),
             f"  homology: {m['homology_method']}; {c['clusters']} clusters among {c['chains_used']} chains"]
    lines += [f"  {s['file']:<10} {s['chains']:>7} chains {s['clusters']:>7} clusters {s['residues']:>10} residues "
              f"({s['labelled_residues']} labelled)" for s in m["splits"].values()]
    lines.append("  records.tsv lists every record; manifest.json records parameters and counts")
    return "\n".join(lines)
