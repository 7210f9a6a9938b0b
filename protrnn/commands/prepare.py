"""``protrnn prepare``: structures -> compact contact datasets, homology-aware splits, leakage removal, manifest."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.data.chain import ProteinChain
from protrnn.errors import InputError
from protrnn.utils.io import atomic_write

HELP = "Parse structures into contact datasets with homology-aware splits and a manifest."
DESCRIPTION = """\
Parse protein structures into compact contact datasets (one .npz per split, loaded by
protrnn.data.dataset.load_dataset), with splits by sequence cluster and training chains that overlap a test
set removed.

inputs (INPUT, and PATH of --test-set), any mix of:
  PDB / mmCIF files (.pdb .ent .cif .mmcif, plain or .gz; first protein chain unless --chain),
  CATH-style chain_set.jsonl / JSON records with backbone coords, per-chain JSONL (shared/data format),
  cgdms per-chain .txt files, a cgdms data directory, tarball or the cgdms==1.0 wheel,
  the bioemu-benchmarks wheel, .tar/.tar.gz archives of the above, and directories (searched recursively).
  --default-sources adds the embedded default training set from PyPI (cgdms==1.0 + bioemu-benchmarks==0.0.2.post1),
  downloaded once into --cache-dir.

processing, in order:
  1. every input is parsed; an entry that cannot be read is skipped with its one-line reason (never dropped);
  2. training candidates are filtered by --min-length/--max-length, need at least one scored pair (two observed
     residues >= 6 apart), and must have a unique ID (later duplicates are skipped); --limit samples a subset;
  3. every training candidate at >= --identity sequence identity (over >= --coverage of both sequences) to any chain of
     any --test-set is removed (mmseqs2 easy-search, -e 1e-3 -s 7.5, when `mmseqs` is on PATH; else a logged,
     less sensitive fallback, see protrnn.data.splits);
  4. the remaining chains are clustered at --identity (mmseqs2 easy-cluster, --coverage) and whole clusters are
     assigned to splits by --split fractions (or chains follow their source's own split with --use-split-hints:
     cgdms train/val lists; chains without a hint go to train).

outputs in OUTDIR (each written atomically; a rerun replaces them and deletes datasets a previous run wrote
that this run does not):
  <split>.npz         one dataset per split (train.npz, val.npz by default)
  test_<NAME>.npz     one dataset per --test-set (all chains that parsed)
  manifest.tsv        one row per input entry: source, id, length, n_observed, status (kept | skipped | removed),
                      reason (parse error, filter, or the test chain it hit), split (the dataset it was written to),
                      cluster (representative ID of its sequence cluster); id and length are empty for an
                      input that could not be read
  leakage.tsv         one row per removed training chain: chain_id, source, test_set, test_id, identity,
                      aln_length, evalue, bits, test_coverage, chain_coverage
  prepare.json        parameters, homology method, counts and output files

examples:
  protrnn prepare structures/ -o data --test-set ts50=ts50.json.gz
  protrnn prepare --default-sources --use-split-hints -o data --test-set psicov=psicov150_org_pdb.tar.gz
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUMMARY_FILE = "prepare.json"
MANIFEST_COLUMNS = ("source", "id", "length", "n_observed", "status", "reason", "split", "cluster")
LEAKAGE_COLUMNS = ("chain_id", "source", "test_set", "test_id", "identity", "aln_length", "evalue", "bits",
                   "test_coverage", "chain_coverage")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "protrnn" / "wheels"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="structure files, archives or directories")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output directory (created)")
    parser.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH",
                        help="held-out test set (any input format); repeat for several. Written as test_NAME.npz")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split", default="train=0.9,val=0.1", metavar="NAME=FRAC,...",
                       help="split fractions by sequence cluster (default train=0.9,val=0.1)")
    split.add_argument("--use-split-hints", action="store_true",
                       help="keep the sources' own split (cgdms train/val lists); chains without a hint -> train")
    parser.add_argument("--min-length", type=_positive_int, default=20, metavar="N",
                        help="skip training chains shorter than N residues (default 20)")
    parser.add_argument("--max-length", type=_positive_int, default=1000, metavar="N",
                        help="skip training chains longer than N residues (default 1000; training crops anyway)")
    parser.add_argument("--identity", type=_fraction, default=0.3, metavar="F",
                        help="sequence identity for clustering and leakage removal (default 0.3)")
    parser.add_argument("--coverage", type=_fraction, default=0.5, metavar="F",
                        help="alignment coverage of both sequences for clustering and leakage (default 0.5)")
    parser.add_argument("--limit", type=_positive_int, metavar="N",
                        help="keep a seeded random sample of at most N training candidates (tiny runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cluster split and --limit (default 0)")
    parser.add_argument("--chain", metavar="ID", help="chain ID to take from PDB/mmCIF inputs (default: first protein)")
    parser.add_argument("--contact-cutoff", type=float, default=DEFAULT_CONTACT_CUTOFF, metavar="A",
                        help="Cb-Cb contact cutoff in Angstrom stored with the datasets (default 8.0)")
    parser.add_argument("--default-sources", action="store_true",
                        help="add the default training set from PyPI (cgdms==1.0, bioemu-benchmarks==0.0.2.post1)")
    parser.add_argument("--cache-dir", type=Path, default=_default_cache_dir(), metavar="DIR",
                        help=f"where --default-sources wheels are kept (default {_default_cache_dir()})")
    parser.add_argument("--threads", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="processes for parsing and threads for mmseqs2 (default: all cores)")


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
    entries: list[Entry]
    datasets: dict[str, Path]
    leakage: list = field(default_factory=list)
    method: str = ""
    n_clusters: int = 0
    summary: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- parsing
def _parse_task(task: tuple[str, str | None]) -> list:
    from protrnn.data.sources import iter_chains

    path, chain = task
    return list(iter_chains(path, chain=chain))


def _expand(path: Path) -> list[Path]:
    """Split a plain directory into its files so they parse in parallel; cgdms data directories stay whole."""
    if not path.is_dir() or any(path.glob("**/protein_data/train_val")):
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files or [path]


def load_entries(paths: Sequence[Path], role: str, chain: str | None, threads: int) -> list[Entry]:
    """Every outcome of every input, in input order, parsed with up to ``threads`` processes."""
    tasks = [(str(p), chain) for path in paths for p in _expand(path)]
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


def _dedupe(entries: Iterable[Entry]) -> None:
    first: dict[str, str] = {}
    for entry in entries:
        if entry.status != "kept":
            continue
        if entry.id in first:
            entry.skip(f"duplicate ID (first read from {first[entry.id]})")
        else:
            first[entry.id] = entry.source


def _parse_test_sets(specs: Sequence[str]) -> dict[str, Path]:
    tests: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise InputError(f"--test-set {spec!r} is not NAME=PATH")
        if not _NAME.match(name):
            raise InputError(f"--test-set name {name!r} must be letters, digits, '_', '.' or '-'")
        if name in tests:
            raise InputError(f"--test-set {name!r} given twice")
        tests[name] = Path(path)
    return tests


# ------------------------------------------------------------------------------------------------- main logic
def prepare_datasets(inputs: Sequence[Path], outdir: Path, *, test_sets: dict[str, Path] | None = None,
                     fractions: dict[str, float] | None = None, use_split_hints: bool = False,
                     min_length: int = 20, max_length: int | None = 1000, identity: float = 0.3,
                     coverage: float = 0.5, limit: int | None = None, seed: int = 0, chain: str | None = None,
                     contact_cutoff: float = DEFAULT_CONTACT_CUTOFF, threads: int = 1,
                     arguments: dict | None = None, log=print) -> PrepareResult:
    """The whole of ``protrnn prepare`` as a library call; see the command's ``--help`` for the steps."""
    from protrnn.data import splits
    from protrnn.data.dataset import save_dataset

    test_sets = test_sets or {}
    fractions = fractions or {"train": 0.9, "val": 0.1}
    split_names = ["train", "val"] if use_split_hints else list(fractions)
    for name in split_names:
        if not _NAME.match(name):
            raise InputError(f"split name {name!r} must be letters, digits, '_', '.' or '-'")
    if not inputs:
        raise InputError("no inputs given (name files or directories, or use --default-sources)")
    for path in [*inputs, *test_sets.values()]:
        if not Path(path).exists():
            raise InputError("input not found", path=path)
    if not contact_cutoff > 0:
        raise InputError(f"contact cutoff must be positive, got {contact_cutoff}")
    started = time.perf_counter()

    entries = load_entries(inputs, "train", chain, threads)
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
    _dedupe(entries)
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
        _dedupe(test_entries[name])
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
    for entry in candidates:
        entry.cluster = clusters[entry.id]
    n_clusters = len(set(clusters.values()))
    log(f"clustered {len(candidates)} chains into {n_clusters} clusters at {identity:.0%} identity "
        f"({method}, {time.perf_counter() - t0:.1f} s)")
    if use_split_hints:
        for entry in candidates:
            hint = entry.chain.meta.get("split_hint")
            entry.split = hint if hint in ("train", "val") else "train"
        spanning = _clusters_spanning(candidates)
        if spanning:
            log(f"note: {spanning} clusters have chains in both train and val (the sources' own split is not "
                "homology-aware; use --split for a cluster split)")
    else:
        assignment = splits.split_by_cluster(clusters, fractions, seed=seed)
        for entry in candidates:
            entry.split = assignment[entry.id]

    outdir.mkdir(parents=True, exist_ok=True)
    info = {"arguments": arguments or {}, "inputs": [str(p) for p in inputs], "identity": identity, "coverage": coverage, "homology_method": method,
            "seed": seed, "split_mode": "hints" if use_split_hints else fractions}
    datasets: dict[str, Path] = {}
    for name in split_names:
        members = [e.chain for e in candidates if e.split == name]
        datasets[name] = save_dataset(members, outdir / f"{name}.npz", contact_cutoff=contact_cutoff,
                                      info={**info, "split": name})
        if not members:
            log(f"warning: split {name!r} is empty")
    for name, group in test_entries.items():
        stem = f"test_{name}"
        members = []
        for entry in group:
            if entry.status == "kept":
                entry.split = stem
                members.append(entry.chain)
        datasets[stem] = save_dataset(members, outdir / f"{stem}.npz", contact_cutoff=contact_cutoff,
                                      info={**info, "split": stem, "test_set": name, "path": str(test_sets[name])})

    all_entries = entries + [e for group in test_entries.values() for e in group]
    _write_manifest(outdir / "manifest.tsv", all_entries)
    _write_leakage(outdir / "leakage.tsv", leakage, {e.id: e.source for e in entries if e.status == "removed"})
    summary = _summary(all_entries, datasets, leakage, method, n_clusters, info, outdir)
    _remove_stale(outdir, set(datasets.values()))
    with atomic_write(outdir / SUMMARY_FILE) as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return PrepareResult(all_entries, datasets, leakage, method, n_clusters, summary)


def _clusters_spanning(entries: Sequence[Entry]) -> int:
    seen: dict[str, set[str]] = {}
    for entry in entries:
        seen.setdefault(entry.cluster, set()).add(entry.split)
    return sum(len(s) > 1 for s in seen.values())


def _cell(value: object) -> str:
    """TSV-safe text: tabs and newlines in IDs or messages would break the table."""
    return " ".join(str(value).replace("\t", " ").split()) if value is not None else ""


def _write_manifest(path: Path, entries: Sequence[Entry]) -> None:
    with atomic_write(path, newline="", encoding="utf-8") as handle:
        handle.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for e in entries:
            length = len(e.chain) if e.chain is not None else ""
            observed = int(e.chain.observed.sum()) if e.chain is not None else ""
            row = (e.source, e.id, length, observed, e.status, e.reason, e.split, e.cluster)
            handle.write("\t".join(_cell(v) for v in row) + "\n")


def _write_leakage(path: Path, leakage: Sequence, sources: dict[str, str]) -> None:
    with atomic_write(path, newline="", encoding="utf-8") as handle:
        handle.write("\t".join(LEAKAGE_COLUMNS) + "\n")
        for hit in leakage:
            h = hit.hit
            row = (hit.chain_id, sources.get(hit.chain_id, ""), hit.test_set, hit.test_id, f"{hit.identity:.3f}",
                   h.aln_length, f"{h.evalue:.3g}", f"{h.bits:.1f}", f"{h.query_coverage:.3f}",
                   f"{h.target_coverage:.3f}")
            handle.write("\t".join(_cell(v) for v in row) + "\n")


def _summary(entries: Sequence[Entry], datasets: dict[str, Path], leakage: Sequence, method: str, n_clusters: int,
             info: dict, outdir: Path) -> dict:
    status = Counter((e.role if e.role == "train" else "test", e.status) for e in entries)
    reasons = Counter(_reason_kind(e.reason) for e in entries if e.status == "skipped")
    split_counts = {}
    for name, path in datasets.items():
        members = [e for e in entries if e.split == name and e.status == "kept"]
        split_counts[name] = {"chains": len(members), "residues": int(sum(len(e.chain) for e in members)),
                              "file": path.name}
    return {
        "format": "protrnn-prepare", "info": info, "homology_method": method, "clusters": n_clusters,
        "entries": len(entries),
        "status": {f"{role}:{state}": count for (role, state), count in sorted(status.items())},
        "skip_reasons": dict(reasons.most_common()),
        "leakage": dict(Counter(hit.test_set for hit in leakage)),
        "datasets": split_counts,
        "outputs": sorted(p.name for p in datasets.values()) + ["manifest.tsv", "leakage.tsv"],
        "outdir": str(outdir),
    }


def _reason_kind(reason: str) -> str:
    """Group skip reasons for the summary: drop the file/record prefix and numbers."""
    tail = reason.split(": ", 1)[-1]  # "<file>, record 'x': reason"; the reason itself may contain ": "
    return re.sub(r"\d+", "N", tail)[:80]


def _remove_stale(outdir: Path, written: set[Path]) -> None:
    """Delete datasets a previous run listed in prepare.json that this run did not write (e.g. a dropped test set)."""
    previous = outdir / SUMMARY_FILE
    try:
        old = json.loads(previous.read_text(encoding="utf-8")).get("outputs", [])
    except (OSError, ValueError):
        return
    keep = {p.name for p in written}
    for name in old:
        if isinstance(name, str) and name.endswith(".npz") and _NAME.match(name) and name not in keep:
            (outdir / name).unlink(missing_ok=True)


def _print_summary(result: PrepareResult, outdir: Path) -> None:
    s = result.summary
    print(f"\nprotrnn prepare: {s['entries']} input entries -> {outdir} ({s.get('seconds', 0)} s)")
    for key, count in s["status"].items():
        print(f"  {key:<16} {count}")
    if s["skip_reasons"]:
        print("  skipped because:")
        for reason, count in list(s["skip_reasons"].items())[:8]:
            print(f"    {count:>6}  {reason}")
    print(f"  homology: {s['homology_method']}; {s['clusters']} clusters among kept training chains")
    if result.leakage:
        per_set = ", ".join(f"{k}: {v}" for k, v in s["leakage"].items())
        print(f"  removed for test-set overlap: {len(result.leakage)} ({per_set}); see leakage.tsv")
    for counts in s["datasets"].values():
        print(f"  {counts['file']:<24} {counts['chains']:>7} chains {counts['residues']:>10} residues")
    print("  manifest.tsv lists every input entry; prepare.json records parameters and counts")


def run(args: argparse.Namespace) -> int:
    from protrnn.data import splits

    fractions = None if args.use_split_hints else splits.parse_fractions(args.split)
    if args.min_length and args.max_length and args.min_length > args.max_length:
        raise InputError(f"--min-length {args.min_length} exceeds --max-length {args.max_length}")
    inputs = [Path(p) for p in args.inputs]
    if args.default_sources:
        from protrnn.data.sources import default_sources

        inputs += default_sources(args.cache_dir)
    outdir = Path(args.outdir)
    arguments = {key: value if isinstance(value, (bool, int, float, type(None))) else
                 [str(v) for v in value] if isinstance(value, list) else str(value)
                 for key, value in vars(args).items() if not key.startswith("_")}
    result = prepare_datasets(inputs, outdir, test_sets=_parse_test_sets(args.test_set), fractions=fractions,
                              use_split_hints=args.use_split_hints, min_length=args.min_length,
                              max_length=args.max_length, identity=args.identity, coverage=args.coverage,
                              limit=args.limit, seed=args.seed, chain=args.chain, contact_cutoff=args.contact_cutoff,
                              threads=args.threads, arguments=arguments)
    _print_summary(result, outdir)
    if inputs and not any(e.role == "train" and e.status == "kept" and not e.split.startswith("test_")
                          for e in result.entries):
        # Everything is written (the manifest says why each entry went), but a pipeline must not train on nothing.
        raise InputError("no input chain was kept for training: every entry was skipped or removed "
                         "(reasons in manifest.tsv)", path=outdir / "manifest.tsv")
    return 0
