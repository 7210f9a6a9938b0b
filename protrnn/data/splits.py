"""Homology-aware splits and leakage removal: no sequence family may sit on both sides of an evaluation.

Why: random splits of protein chains put near-identical sequences in train and test, so a model that memorises
families looks good. Chains are therefore clustered at 30 % identity (mmseqs2, as for the overlap tables in
``shared/data``), whole clusters are assigned to a split, and every training chain with a hit at >= 30 % identity to a
test chain (over half of either chain) is removed before training.

mmseqs2 (Debian ``mmseqs2``) is used when ``mmseqs`` is on PATH, with the parameters of the shared overlap tables:
``easy-search --min-seq-id 0.3 -e 1e-3 -s 7.5`` and ``easy-cluster --min-seq-id 0.3 -c 0.5`` (coverage of both
sequences, ``--cov-mode 0``). Leakage removal searches without a coverage bound and keeps the hits that cover >= 50 %
of either chain (:func:`find_test_relatives`). Sequences reach it only through FASTA files written here with index-based
names (``q0``, ``t17``), never raw IDs, and it is run with an argument list (no shell).

Without mmseqs2 a pure-Python fallback runs and logs a warning. It finds identical sequences exactly, then candidate
pairs sharing two identical 3-mers on one diagonal (the BLAST two-hit idea), aligns those with Biopython's local
aligner (BLOSUM62, gap open 11, extend 1) and applies the same identity (identical / alignment columns) and coverage
thresholds. It is reliable from about 40 % identity and misses part of the 30-40 % twilight zone that mmseqs2's
similar-k-mer prefilter catches, so it may under-remove; install mmseqs2 for publication-grade splits. Clustering uses
the same hits greedily, longest sequence first (as cd-hit and mmseqs2's set-cover mode do).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.conventions import (
    DEFAULT_COVERAGE,
    DEFAULT_MIN_SEQ_ID,
)
from protrnn.data.chain import ProteinChain
from protrnn.errors import InputError

log = logging.getLogger(__name__)

#: The leakage rule in force: what counts as a test relative and the searches that find one. Prepared data record it
#: (``prepare.json``; the labels' ``manifest.json``), and the pipeline's two data rules take it as a parameter, so a
#: results folder prepared under an earlier rule is prepared again by its next run (Snakemake sees a parameter
#: change, never a package change). Change it when, and only when, the rule or its searches change what is removed:
#: any change to the text re-prepares every results folder and retrains what was trained on it. The thresholds are
#: recorded beside it (``identity``, ``coverage``).
LEAKAGE_RULE = ("2026-12-07: identity >= the identity threshold over >= the coverage threshold of either chain; "
                "mmseqs2 searches of the chains against the test chains, plain and exhaustive, and of the test chains "
                "against the chains")
SEARCH_EVALUE = 1e-3
SEARCH_SENSITIVITY = 7.5
_FORMAT_OUTPUT = "query,target,fident,alnlen,qstart,qend,qlen,tstart,tend,tlen,evalue,bits"
_KMER = 3
#: Karlin-Altschul parameters of BLOSUM62 with gap costs 11/1 (NCBI BLAST), for fallback bit scores and E-values.
_LAMBDA = 0.267
_K = 0.041


@dataclass(frozen=True)
class Hit:
    """One alignment between a query and a target sequence (1-based inclusive coordinates, as mmseqs reports)."""

    query: str
    target: str
    identity: float
    aln_length: int
    query_start: int
    query_end: int
    query_length: int
    target_start: int
    target_end: int
    target_length: int
    evalue: float
    bits: float

    @property
    def query_coverage(self) -> float:
        return (self.query_end - self.query_start + 1) / self.query_length

    @property
    def target_coverage(self) -> float:
        return (self.target_end - self.target_start + 1) / self.target_length


@dataclass(frozen=True)
class LeakageHit:
    """A training chain removed because it hits ``test_id`` of test set ``test_set`` (the best such hit)."""

    chain_id: str
    test_set: str
    test_id: str
    identity: float
    hit: Hit


def mmseqs_path() -> str | None:
    """The mmseqs2 executable, or None (then the documented fallback runs)."""
    return shutil.which("mmseqs")


def method_name() -> str:
    return "mmseqs2" if mmseqs_path() else "fallback (exact + 3-mer two-hit + Biopython local alignment)"


def _default_threads(threads: int | None) -> int:
    return max(1, threads if threads else (os.cpu_count() or 1))


def _check_thresholds(min_seq_id: float, coverage: float) -> None:
    if not 0.0 <= min_seq_id <= 1.0:
        raise InputError(f"sequence identity threshold must be in [0, 1], got {min_seq_id}")
    if not 0.0 <= coverage <= 1.0:
        raise InputError(f"coverage threshold must be in [0, 1], got {coverage}")


def _write_fasta(path: Path, prefix: str, seqs: Sequence[str]) -> None:
    with open(path, "w", encoding="ascii") as handle:
        for index, seq in enumerate(seqs):
            if seq:
                handle.write(f">{prefix}{index}\n{seq}\n")


def _run_mmseqs(args: list[str], workdir: Path) -> None:
    executable = mmseqs_path()
    assert executable is not None
    proc = subprocess.run([executable, *args], cwd=workdir, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"mmseqs {args[0]} failed with exit status {proc.returncode}: {tail[0]}")


# -- index-level search (names are positions; public functions map them back to IDs) ------------------------------
_IndexHit = tuple[int, int, Hit]


def _mmseqs_search(queries: Sequence[str], targets: Sequence[str], min_seq_id: float, coverage: float,
                   threads: int, exhaustive: bool = False) -> list[_IndexHit]:
    with tempfile.TemporaryDirectory(prefix="protrnn-mmseqs-") as tmp:
        work = Path(tmp)
        _write_fasta(work / "query.fasta", "q", queries)
        _write_fasta(work / "target.fasta", "t", targets)
        _run_mmseqs(["easy-search", "query.fasta", "target.fasta", "hits.tsv", "tmp",
                     "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", "0",
                     "-e", str(SEARCH_EVALUE), "-s", str(SEARCH_SENSITIVITY), "--format-output", _FORMAT_OUTPUT,
                     # Prefilter keeps --max-seqs candidates per query (default 300): a test chain with more
                     # relatives than that in the training data would keep some of them (leakage). Keep them all.
                     "--max-seqs", str(max(300, len(targets))),
                     # mmseqs2's exhaustive mode: the sliced search of the targets against the queries (mmseqs2
                     # 14: still a k-mer prefilter, from the targets' side), which passes pairs the query-side
                     # prefilter misses and misses some it passes, so callers add it to the plain search
                     *(["--exhaustive-search", "1"] if exhaustive else []),
                     "--threads", str(threads), "-v", "1"], work)
        hits: list[_IndexHit] = []
        if not (work / "hits.tsv").is_file():
            return hits
        with open(work / "hits.tsv", newline="") as handle:
            for row in csv.reader(handle, delimiter="\t"):
                q, t = int(row[0][1:]), int(row[1][1:])
                values = [float(v) for v in row[2:]]
                hit = Hit(query=row[0], target=row[1], identity=values[0], aln_length=int(values[1]),
                          query_start=int(values[2]), query_end=int(values[3]), query_length=int(values[4]),
                          target_start=int(values[5]), target_end=int(values[6]), target_length=int(values[7]),
                          evalue=values[8], bits=values[9])
                hits.append((q, t, hit))
        return hits


def _mmseqs_cluster(seqs: Sequence[str], min_seq_id: float, coverage: float, threads: int) -> list[int]:
    """Representative index of every sequence."""
    with tempfile.TemporaryDirectory(prefix="protrnn-mmseqs-") as tmp:
        work = Path(tmp)
        _write_fasta(work / "seqs.fasta", "s", seqs)
        _run_mmseqs(["easy-cluster", "seqs.fasta", "clu", "tmp", "--min-seq-id", str(min_seq_id),
                     "-c", str(coverage), "--cov-mode", "0", "--threads", str(threads), "-v", "1"], work)
        rep = list(range(len(seqs)))
        with open(work / "clu_cluster.tsv", newline="") as handle:
            for row in csv.reader(handle, delimiter="\t"):
                rep[int(row[1][1:])] = int(row[0][1:])
        return rep


def _aligner():
    from Bio import Align
    from Bio.Align import substitution_matrices

    aligner = Align.PairwiseAligner()
    aligner.mode = "local"
    aligner.substitution_matrix = substitution_matrices.load("BLOSUM62")
    aligner.open_gap_score = -11.0
    aligner.extend_gap_score = -1.0
    return aligner


def _align(aligner, query: str, target: str, database_size: int) -> Hit | None:
    """Best local alignment as a Hit (identity = identical columns / alignment columns, gaps included).

    The E-value uses the whole target database size in residues, as BLAST and mmseqs2 do.
    """
    try:
        alignment = aligner.align(query, target)[0]
    except (ValueError, IndexError, OverflowError):
        return None
    blocks_q, blocks_t = alignment.aligned
    if len(blocks_q) == 0:
        return None
    identical = sum(sum(a == b for a, b in zip(query[qs:qe], target[ts:te], strict=True))
                    for (qs, qe), (ts, te) in zip(blocks_q, blocks_t, strict=True))
    q0, q1 = int(blocks_q[0][0]), int(blocks_q[-1][1])
    t0, t1 = int(blocks_t[0][0]), int(blocks_t[-1][1])
    aligned = sum(int(e - s) for s, e in blocks_q)
    columns = aligned + (q1 - q0 - aligned) + (t1 - t0 - aligned)
    bits, evalue = _evalue(float(alignment.score), len(query), database_size)
    return Hit(query="", target="", identity=identical / columns, aln_length=columns, query_start=q0 + 1,
               query_end=q1, query_length=len(query), target_start=t0 + 1, target_end=t1, target_length=len(target),
               evalue=evalue, bits=bits)


def _kmer_index(seqs: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    index: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for t, seq in enumerate(seqs):
        for pos in range(len(seq) - _KMER + 1):
            kmer = seq[pos:pos + _KMER]
            if "X" not in kmer:
                index[kmer].append((t, pos))
    return index


def _evalue(score: float, query_length: int, database_size: int) -> tuple[float, float]:
    """(bits, E-value) of a raw BLOSUM62 score against a database of ``database_size`` residues."""
    bits = (_LAMBDA * score - math.log(_K)) / math.log(2.0)
    return bits, float(query_length * database_size * 2.0 ** -bits)


def _fallback_search(queries: Sequence[str], targets: Sequence[str], min_seq_id: float, coverage: float,
                     upper_triangle: bool = False) -> list[_IndexHit]:
    """Index hits by the documented fallback; ``upper_triangle`` (all-vs-all of one set) only tries target > query."""
    exact: dict[str, list[int]] = defaultdict(list)
    for t, seq in enumerate(targets):
        exact[seq].append(t)
    index = _kmer_index(targets)
    aligner = _aligner()
    database_size = sum(len(t) for t in targets)
    hits: list[_IndexHit] = []
    for q, query in enumerate(queries):
        if not query:
            continue
        diagonals: dict[tuple[int, int], int] = defaultdict(int)
        for pos in range(len(query) - _KMER + 1):
            for t, tpos in index.get(query[pos:pos + _KMER], ()):
                diagonals[(t, tpos - pos)] += 1
        candidates = {t for (t, _), count in diagonals.items() if count >= 2} | set(exact.get(query, ()))
        for t in sorted(candidates):
            if upper_triangle and t <= q:
                continue
            # The score-only pass is ~2x cheaper than a traceback and rejects almost every random candidate.
            if _evalue(aligner.score(query, targets[t]), len(query), database_size)[1] > SEARCH_EVALUE:
                continue
            hit = _align(aligner, query, targets[t], database_size)
            if (hit and hit.identity >= min_seq_id and hit.evalue <= SEARCH_EVALUE
                    and min(hit.query_coverage, hit.target_coverage) >= coverage):
                hits.append((q, t, hit))
    return hits


def _search(queries: Sequence[str], targets: Sequence[str], min_seq_id: float, coverage: float,
            threads: int | None, exhaustive: bool = False) -> list[_IndexHit]:
    _check_thresholds(min_seq_id, coverage)
    if not any(queries) or not any(targets):
        return []
    if mmseqs_path():
        return _mmseqs_search(queries, targets, min_seq_id, coverage, _default_threads(threads), exhaustive)
    log.warning("mmseqs not found on PATH: using the slower, less sensitive fallback homology search "
                "(reliable from ~40% identity); install mmseqs2 for 30% splits")
    return _fallback_search(queries, targets, min_seq_id, coverage)


def search_overlap(query_ids: Sequence[str], query_seqs: Sequence[str], target_ids: Sequence[str],
                   target_seqs: Sequence[str], min_seq_id: float = DEFAULT_MIN_SEQ_ID,
                   coverage: float = DEFAULT_COVERAGE, threads: int | None = None, *,
                   exhaustive: bool = False) -> list[Hit]:
    """All query-target pairs at >= ``min_seq_id`` identity over >= ``coverage`` of both sequences.

    Hits carry the caller's IDs; order is by query, then decreasing bit score. ``exhaustive``: mmseqs2's
    ``--exhaustive-search`` (a sliced search with its own prefilter on mmseqs2 14, not an alignment of every pair): it
    finds pairs the plain search misses and misses some the plain search finds.
    """
    if len(query_ids) != len(query_seqs) or len(target_ids) != len(target_seqs):
        raise ValueError("ids and sequences must have the same length")
    raw = _search(query_seqs, target_seqs, min_seq_id, coverage, threads, exhaustive)
    hits = [_renamed(hit, query_ids[q], target_ids[t]) for q, t, hit in raw]
    order = sorted(range(len(hits)), key=lambda i: (raw[i][0], -hits[i].bits, raw[i][1]))
    return [hits[i] for i in order]


def _renamed(hit: Hit, query: str, target: str) -> Hit:
    return Hit(query, target, hit.identity, hit.aln_length, hit.query_start, hit.query_end, hit.query_length,
               hit.target_start, hit.target_end, hit.target_length, hit.evalue, hit.bits)


def cluster_sequences(ids: Sequence[str], seqs: Sequence[str], min_seq_id: float = DEFAULT_MIN_SEQ_ID,
                      coverage: float = DEFAULT_COVERAGE, threads: int | None = None) -> dict[str, str]:
    """Cluster sequences; returns ``{id: representative id}`` (a chain with no neighbour is its own cluster)."""
    if len(ids) != len(seqs):
        raise ValueError("ids and sequences must have the same length")
    if len(set(ids)) != len(ids):
        raise InputError("cluster_sequences needs unique IDs")
    _check_thresholds(min_seq_id, coverage)
    if not ids:
        return {}
    if mmseqs_path():
        rep = _mmseqs_cluster(seqs, min_seq_id, coverage, _default_threads(threads))
    else:
        log.warning("mmseqs not found on PATH: clustering with the fallback (exact sequences + greedy k-mer/alignment "
                    "heuristic, reliable from ~40% identity); install mmseqs2 for 30% clusters")
        rep = _fallback_cluster(seqs, min_seq_id, coverage)
    return {ids[i]: ids[r] for i, r in enumerate(rep)}


def _fallback_cluster(seqs: Sequence[str], min_seq_id: float, coverage: float) -> list[int]:
    neighbours: dict[int, dict[int, float]] = defaultdict(dict)
    for q, t, hit in _fallback_search(seqs, seqs, min_seq_id, coverage, upper_triangle=True):
        neighbours[q][t] = neighbours[t][q] = max(hit.identity, neighbours[q].get(t, 0.0))
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    rank = {i: r for r, i in enumerate(order)}
    rep = list(range(len(seqs)))
    representatives: set[int] = set()
    for i in order:
        linked = [(identity, -rank[j], j) for j, identity in neighbours[i].items() if j in representatives]
        if linked:
            rep[i] = max(linked)[2]
        else:
            representatives.add(i)
    return rep


def link_clusters(ids: Sequence[str], seqs: Sequence[str], clusters: Mapping[str, str],
                  min_seq_id: float = DEFAULT_MIN_SEQ_ID, coverage: float = DEFAULT_COVERAGE,
                  threads: int | None = None) -> dict[str, str]:
    """Merge clusters that any hit joins: ``{id: family representative}``.

    A set-cover cluster (mmseqs2 ``easy-cluster``, the greedy fallback) ties each member to its representative only,
    so two clusters of one family can hold chains related at >= ``min_seq_id`` to each other; a split by those
    clusters then puts relatives on both sides (antibody chains, immunoglobulin domains). Every pair of chains is
    searched at ``min_seq_id``, and clusters joined by a hit that covers >= ``coverage`` of either chain are merged
    (single linkage over clusters): as for test leakage (:func:`remove_leakage`), a domain inside a longer chain is a
    relative of it. A family is named by the representative of its largest cluster (ties: the smaller ID), so a family
    of one cluster keeps its cluster's name."""
    if len(ids) != len(seqs):
        raise ValueError("ids and sequences must have the same length")
    _check_thresholds(min_seq_id, coverage)
    parent = {rep: rep for rep in clusters.values()}

    def root(rep: str) -> str:
        while parent[rep] != rep:
            parent[rep] = parent[parent[rep]]
            rep = parent[rep]
        return rep

    if mmseqs_path() or not any(seqs):
        hits = _search(seqs, seqs, min_seq_id, 0.0, threads)
    else:  # the fallback searches one triangle of an all-against-all
        hits = _fallback_search(seqs, seqs, min_seq_id, 0.0, upper_triangle=True)
    for q, t, hit in hits:
        if hit.identity < min_seq_id or max(hit.query_coverage, hit.target_coverage) < coverage:
            continue
        a, b = root(clusters[ids[q]]), root(clusters[ids[t]])
        if a != b:
            parent[max(a, b)] = min(a, b)
    size: dict[str, int] = defaultdict(int)
    for rep in clusters.values():
        size[rep] += 1
    name: dict[str, str] = {}
    for rep in sorted(size, key=lambda r: (-size[r], r)):
        name.setdefault(root(rep), rep)
    return {chain_id: name[root(rep)] for chain_id, rep in clusters.items()}


def parse_fractions(text: str) -> dict[str, float]:
    """``"train=0.9,val=0.1"`` -> ``{"train": 0.9, "val": 0.1}``; fractions must be positive and sum to 1."""
    fractions: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"split {part!r} is not NAME=FRACTION")
        if name in fractions:
            raise InputError(f"split {name!r} given twice")
        try:
            fractions[name] = float(value)
        except ValueError:
            raise InputError(f"split {name!r}: fraction {value!r} is not a number") from None
    validate_fractions(fractions)
    return fractions


def validate_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions:
        raise InputError("no split fractions given")
    bad = [name for name, value in fractions.items() if not (value > 0 and math.isfinite(value))]
    if bad:
        raise InputError(f"split fractions must be positive: {', '.join(bad)}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"split fractions sum to {total:g}, not 1")


def split_by_cluster(clusters: Mapping[str, str], fractions: Mapping[str, float], seed: int = 0,
                     fit: bool = False) -> dict[str, str]:
    """Assign every ID to a split so that no cluster spans two splits; returns ``{id: split}``.

    Clusters are taken in a seeded random order, each going to the split furthest below its target chain count,
    so split sizes track ``fractions`` as closely as cluster sizes allow. Deterministic for a given input and seed.
    With ``fit`` a cluster goes to the split furthest below its target *that has room for it*, and a cluster too
    large for every split's room to the split it overfills least relative to that split's target: a family larger
    than the validation target (the antibodies of the docking sets, once :func:`link_clusters` joins them) then lands
    in train instead of making the validation split a single family. Without it (the pretraining labels' split) the
    order alone decides.
    """
    validate_fractions(fractions)
    members: dict[str, list[str]] = defaultdict(list)
    for chain_id, cluster in clusters.items():
        members[cluster].append(chain_id)
    keys = sorted(members)
    order = np.random.default_rng(seed).permutation(len(keys))
    total = len(clusters)
    names = list(fractions)
    counts = dict.fromkeys(names, 0)
    assignment: dict[str, str] = {}
    for k in order.tolist():
        group = members[keys[k]]
        room = [name for name in names if fractions[name] * total - counts[name] >= len(group)]
        if fit and not room:  # too large for every split's room: the one it overfills least, relative to its target
            split = min(names, key=lambda name: ((counts[name] + len(group)) / fractions[name], names.index(name)))
        else:
            split = max(room if fit else names,
                        key=lambda name: (fractions[name] * total - counts[name], -names.index(name)))
        counts[split] += len(group)
        for chain_id in group:
            assignment[chain_id] = split
    return assignment


def best_test_hits(hits: Iterable[tuple[int, int, Hit]]) -> dict[int, tuple[int, Hit]]:
    """Per training chain that has a hit, its best one: ``{chain index: (test index, hit)}`` from ``(chain index,
    test index, hit)`` triples, best = the highest identity, then the highest bit score, then (a tie, e.g. the same
    sequence in two test sets) the lowest test index, then the lowest e-value and the longest alignment. The order of
    ``hits`` does not matter: multi-threaded mmseqs2 reports tied hits in varying order, which made the test set a
    removed chain was attributed to vary between runs. The one rule by which the leakage search
    (:func:`find_test_relatives`, for the contact data and the pretraining labels) names the hit a removed chain is
    recorded with."""
    def rank(test: int, hit: Hit) -> tuple[float, float, int, float, int]:
        return hit.identity, hit.bits, -test, -hit.evalue, hit.aln_length

    best: dict[int, tuple[int, Hit]] = {}
    for chain, test, hit in hits:
        current = best.get(chain)
        if current is None or rank(test, hit) > rank(*current):
            best[chain] = (test, hit)
    return best


def leakage_records(best: Mapping[int, tuple[int, Hit]], chain_ids: Sequence[str],
                    tests: Sequence[tuple[str, Any]], from_test: Callable[[Hit, str, str], Hit]) -> list[LeakageHit]:
    """One :class:`LeakageHit` per removed training chain of ``best`` (:func:`best_test_hits`), in chain order.
    ``tests[k]`` is test chain k's ``(test set name, chain with .id)``; ``from_test(hit, chain_id, test_id)`` writes
    the hit from the test chain (query) to the training chain (target), as the leakage tables hold it."""
    removed = []
    for chain in sorted(best):
        test, hit = best[chain]
        name, test_chain = tests[test]
        removed.append(LeakageHit(chain_id=chain_ids[chain], test_set=name, test_id=test_chain.id,
                                  identity=hit.identity, hit=from_test(hit, chain_ids[chain], test_chain.id)))
    return removed


def _swapped(hit: Hit, query: str, target: str) -> Hit:
    """The same alignment seen from the other side: ``target``'s sequence as the query, named ``query``."""
    return Hit(query=query, target=target, identity=hit.identity, aln_length=hit.aln_length,
               query_start=hit.target_start, query_end=hit.target_end, query_length=hit.target_length,
               target_start=hit.query_start, target_end=hit.query_end, target_length=hit.query_length,
               evalue=hit.evalue, bits=hit.bits)


def _as_test_query(hit: Hit, chain_id: str, test_id: str) -> Hit:
    """A hit from a chain (query) to a test chain, seen from the test chain, as the leakage tables hold it."""
    return _swapped(hit, test_id, chain_id)


def find_test_relatives(ids: Sequence[str], sequences: Sequence[str], test_sets: Mapping[str, Sequence[Any]], *,
                        min_seq_id: float = DEFAULT_MIN_SEQ_ID, coverage: float = DEFAULT_COVERAGE,
                        threads: int | None = None) -> tuple[list[LeakageHit], dict[str, Any]]:
    """Chains at >= ``min_seq_id`` identity to a test chain over >= ``coverage`` of **either** chain: the one
    leakage rule of the contact data (:func:`remove_leakage`) and the pretraining labels
    (:func:`protrnn.data.sidechainnet.prepare_structure_labels`).

    Either chain's coverage: a chain that holds a test domain inside a longer construct (a fusion protein, a complex's
    longer chain) is a relative though the domain covers less than half of it, and so is a fragment or single domain
    of a test chain (a SCOPe domain of it, the short chain of a two-chain protease) though it covers less than half of
    the test chain. Until 2026-12-07 only the test chain's coverage counted, and such fragments were kept (an exact
    86-residue half of a 173-residue TS50 chain would have stayed in training). Three searches (:func:`search_overlap`,
    no coverage bound, then filtered), and a pair found by any counts: the chains against the test chains, the test
    chains against the chains (near 30 % identity an alignment from one side can fall just below the threshold from
    the other), and the chains against the test chains with mmseqs2's ``--exhaustive-search`` (added 2026-12-07: the
    two k-mer prefiltered searches missed pairs that meet the rule, e.g. a 55-residue alignment at 33 % identity, E
    1.8e-4; the exhaustive mode alone misses others, so it is added, never substituted).
    ``test_sets`` maps a name to chains with ``.id`` and ``.sequence``. Returns one :class:`LeakageHit` per chain to
    remove (its best hit by :func:`best_test_hits`, written from the test chain; input order) and counts:
    ``chains_hitting`` (per test set, chains with any qualifying hit; a chain may count for several sets),
    ``removed_if_both_coverage`` (chains a rule of both sequences' coverage would remove) and
    ``removed_if_test_coverage`` (chains the rule before 2026-12-07, the test chain's coverage alone, removed).
    """
    _check_thresholds(min_seq_id, coverage)
    keys = [(name, chain) for name, chains in test_sets.items() for chain in chains]
    chain_names, test_names = [str(i) for i in range(len(ids))], [str(k) for k in range(len(keys))]
    test_sequences = [chain.sequence for _, chain in keys]
    raw = [hit for exhaustive in (False, True)
           for hit in search_overlap(chain_names, sequences, test_names, test_sequences, min_seq_id=min_seq_id,
                                     coverage=0.0, threads=threads, exhaustive=exhaustive)]
    raw += [_swapped(hit, hit.target, hit.query) for hit in  # from the test chains, seen from the chains
            search_overlap(test_names, test_sequences, chain_names, sequences, min_seq_id=min_seq_id, coverage=0.0,
                           threads=threads)]
    qualifying: list[tuple[int, int, Hit]] = []
    hitting: dict[str, set[int]] = {name: set() for name in test_sets}
    both: set[int] = set()
    test_only: set[int] = set()
    for hit in raw:
        chain, test = int(hit.query), int(hit.target)
        if hit.identity < min_seq_id or max(hit.query_coverage, hit.target_coverage) < coverage:
            continue
        hitting[keys[test][0]].add(chain)
        if min(hit.query_coverage, hit.target_coverage) >= coverage:
            both.add(chain)
        if hit.target_coverage >= coverage:
            test_only.add(chain)
        qualifying.append((chain, test, hit))
    removed = leakage_records(best_test_hits(qualifying), ids, keys, _as_test_query)
    counts = {"chains_hitting": {name: len(found) for name, found in hitting.items()},
              "removed_if_both_coverage": len(both), "removed_if_test_coverage": len(test_only)}
    return removed, counts


def remove_leakage(train: Sequence[ProteinChain], test_sets: Mapping[str, Sequence[ProteinChain]],
                   min_seq_id: float = DEFAULT_MIN_SEQ_ID, coverage: float = DEFAULT_COVERAGE,
                   threads: int | None = None) -> tuple[list[ProteinChain], list[LeakageHit]]:
    """Drop every training chain that :func:`find_test_relatives` finds (>= ``min_seq_id`` identity over >=
    ``coverage`` of **either** chain). Returns the kept chains (input order) and one :class:`LeakageHit` per removed
    chain. Until 2026-12-06 coverage of both sequences was asked, which kept a training chain holding a test domain
    inside a longer construct; until 2026-12-07 the test chain's alone, which kept fragments of test chains."""
    removed, _ = find_test_relatives([chain.id for chain in train], [chain.sequence for chain in train], test_sets,
                                     min_seq_id=min_seq_id, coverage=coverage, threads=threads)
    gone = {hit.chain_id for hit in removed}
    return [chain for chain in train if chain.id not in gone], removed
