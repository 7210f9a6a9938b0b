"""Paired comparison of models scored by ``protrnn evaluate`` (torch-free): ``protrnn compare``.

Every model is compared with one reference on the proteins both were scored on: the difference of their protein
means, with a percentile bootstrap interval whose replicates draw one protein resample for both models (paired), and
the seeds of a model run as ``NAME@seedS`` independently (:func:`protrnn.report.aggregate.paired_difference_bootstrap`,
the same interval as the report's findings table). Pairing removes the protein-to-protein variance the two models
share, so a difference can be clear while the two per-model intervals overlap.

A comparison can be restricted to proteins chosen by what their structures hold, never by how a model scored on them:
a minimum length and, per separation range, a minimum number of true contacts as a multiple of L
(:class:`ContactFloor`, e.g. ``long:1`` = at least L contacts at separation >= 24, the chains whose long-range top-L/5
precision is not capped by a lack of far contacts: :meth:`ContactFloor.far_rich`, the chains of training's
``val/P@L5_long_far``). These are decision rules a user fixes before seeing a candidate's
figures; the filter reads the ``L`` and ``RANGE/n_contacts`` columns ``protrnn evaluate`` writes for every protein.

Proteins of one homology cluster (a validation split holds several members of some families) do not give
independent differences. With ``clusters`` (:func:`read_clusters`: ``prepare``'s ``manifest.tsv`` maps each chain to
its cluster) the interval resamples clusters instead of proteins, and the verdict needs as many clusters as it needs
proteins otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protrnn.conventions import FAR_RICH_PER_LENGTH, FAR_RICH_RANGE, HEADLINE_K, RANGES
from protrnn.diagnostics.results import split_seed
from protrnn.errors import InputError, reading
from protrnn.evaluation.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_ALPHA, INTERVAL_PERCENT
from protrnn.evaluation.results import ID_COLUMNS
from protrnn.report.aggregate import (
    BOOT_SEED,
    group_seeds,
    mean_over_seeds,
    paired_difference_bootstrap,
    protein_matrix,
)
from protrnn.report.inputs import Evaluation, check_test_sets_agree
from protrnn.utils.io import atomic_write, read_tsv_table, stderr_log, table_cell

#: The metrics compared unless others are asked for: top-L/5 precision at medium+long and long range.
DEFAULT_KEYS = (f"medium_long/P@L/{HEADLINE_K}", f"long/P@L/{HEADLINE_K}")
#: Fewer proteins than this get no verdict (the interval is still printed).
MIN_PROTEINS_FOR_VERDICT = 10
#: Columns of the comparison table (TSV), in order.
COLUMNS = ("test_set", "key", "method", "reference", "proteins", "clusters", "seeds", "reference_seeds", "mean",
           "reference_mean", "difference", "low", "high", "verdict")
#: The columns of a cluster table (:func:`read_clusters`; ``prepare``'s ``manifest.tsv`` has them).
CLUSTER_COLUMNS = ("id", "cluster")


@dataclass(frozen=True)
class ContactFloor:
    """Keep proteins with at least ``per_length * L`` true contacts in separation range ``range_name``."""

    range_name: str
    per_length: float

    @classmethod
    def parse(cls, text: str) -> ContactFloor:
        """``"long:1"`` -> ContactFloor("long", 1.0); the range must be one of :data:`protrnn.conventions.RANGES`."""
        name, sep, value = str(text).partition(":")
        if not sep or name not in RANGES:
            raise InputError(f"contact floor {text!r}: expected RANGE:FACTOR with RANGE one of {', '.join(RANGES)} "
                             "(e.g. long:1 = at least L long-range contacts)")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not math.isfinite(factor) or factor < 0:
            raise InputError(f"contact floor {text!r}: FACTOR must be a number >= 0")
        return cls(name, factor)

    @classmethod
    def far_rich(cls) -> ContactFloor:
        """The chains with many far pairs (:data:`protrnn.conventions.FAR_RICH_RANGE`, ``FAR_RICH_PER_LENGTH``): the
        chains of training's ``val/P@L5_long_far``; ``protrnn compare --far-rich``."""
        return cls(FAR_RICH_RANGE, FAR_RICH_PER_LENGTH)

    @property
    def column(self) -> str:
        return f"{self.range_name}/n_contacts"

    def __str__(self) -> str:
        return f"{self.range_name}:{self.per_length:g}"


@dataclass(frozen=True)
class Comparison:
    """One model against the reference on one test set and one metric (``low``/``high``: the paired interval;
    ``proteins``: those where both models have a value, e.g. a chain without long-range pairs has no long-range
    precision; ``clusters``: how many clusters those proteins form when the interval resampled clusters, else
    None)."""

    test_set: str
    key: str
    method: str
    reference: str
    proteins: int
    seeds: int
    reference_seeds: int
    mean: float
    reference_mean: float
    difference: float
    low: float
    high: float
    clusters: int | None = None

    @property
    def verdict(self) -> str:
        """``higher`` / ``lower`` when the interval excludes 0, else ``no clear difference`` (``too few proteins``
        below :data:`MIN_PROTEINS_FOR_VERDICT` proteins, or clusters when clusters were resampled: a bootstrap over a
        handful of samples understates the spread)."""
        samples = self.proteins if self.clusters is None else self.clusters
        if samples < MIN_PROTEINS_FOR_VERDICT:
            return "too few proteins"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "no clear difference"


def _groups(evaluations: Sequence[Evaluation]) -> dict[str, list[str]]:
    """``{model: [run names]}`` over every method of the evaluations (``NAME@seedS`` grouped under NAME)."""
    names: list[str] = []
    for evaluation in evaluations:
        for row in evaluation.rows:
            if row["method"] not in names:
                names.append(row["method"])
    return {base: [name for _, name in members] for base, members in group_seeds(names).items()}


def _resolve(name: str, groups: Mapping[str, list[str]]) -> tuple[str, list[str]]:
    """A model name as given (``NAME`` for all its seeds, or one run ``NAME@seedS``) -> (label, run names)."""
    if name in groups:
        return name, groups[name]
    for members in groups.values():
        if name in members:
            return name, [name]
    raise InputError(f"no method {name!r} in the evaluations (methods: {', '.join(sorted(groups))})")


def _test_sets(evaluations: Sequence[Evaluation], runs: Sequence[str]) -> set[str]:
    """Test sets on which every one of ``runs`` was scored."""
    seen: dict[str, set[str]] = {run: set() for run in runs}
    for evaluation in evaluations:
        for row in evaluation.rows:
            if row["method"] in seen:
                seen[row["method"]].add(str(row["test_set"]))
    return set.intersection(*seen.values()) if seen else set()


def selected_proteins(evaluations: Sequence[Evaluation], test_set: str, *, min_length: int = 0,
                      floors: Sequence[ContactFloor] = ()) -> set[str]:
    """Proteins of ``test_set`` that pass the length and contact floors, read from the ``L`` and ``RANGE/n_contacts``
    columns (properties of the structure: every method's row of a protein must agree)."""
    columns = ["L", *(floor.column for floor in floors)]
    facts: dict[str, tuple[float, ...]] = {}
    for evaluation in evaluations:
        for row in evaluation.rows:
            if row["test_set"] != test_set:
                continue
            protein = str(row["protein"])
            values = tuple(float(row.get(column, math.nan)) for column in columns)
            for column, value in zip(columns, values, strict=True):
                if math.isnan(value):
                    needed = "" if column == "L" else " (needed by a contact floor)"
                    raise InputError(f"protein {protein!r} of test set {test_set!r} has no {column!r} value{needed}",
                                     path=evaluation.path)
            if facts.setdefault(protein, values) != values:
                raise InputError(f"protein {protein!r} of test set {test_set!r}: two methods' rows disagree on "
                                 f"{', '.join(columns)} ({facts[protein]} and {values}); were they scored on the "
                                 "same test set?", path=evaluation.path)
    return {protein for protein, (length, *counts) in facts.items()
            if length >= min_length and all(count >= floor.per_length * length
                                            for count, floor in zip(counts, floors, strict=True))}


def read_clusters(path: str | Path) -> dict[str, str]:
    """``{protein id: cluster}`` from a tab-separated table with ``id`` and ``cluster`` columns (``prepare``'s
    ``manifest.tsv``). A row with an empty cluster (``prepare`` writes them for test-set chains and removed ones) lists
    its protein as a cluster of its own (:func:`own_cluster`), unless another row gives it one, so that a table that
    lists a test set's chains without clusters is still the table of that test set. One-line InputError for a missing
    file or column, a table without any cluster, or an id given two clusters."""
    path = Path(path)
    with reading(path):  # also the one-line error for text that is not UTF-8
        columns, rows = read_tsv_table(path)
    missing = [c for c in CLUSTER_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"the cluster table has no {missing[0]!r} column (needs {', '.join(CLUSTER_COLUMNS)}, "
                         "e.g. prepare's manifest.tsv)", path=path)
    out: dict[str, str] = {}
    alone: list[str] = []
    for line, row in enumerate(rows, start=2):
        protein, cluster = row["id"] or "", row["cluster"] or ""
        if not cluster:
            alone.append(protein)
            continue
        if out.setdefault(protein, cluster) != cluster:
            raise InputError(f"row {line}: id {protein!r} is in cluster {cluster!r} and, above, in "
                             f"{out[protein]!r}", path=path)
    if not out:
        raise InputError("the cluster table assigns no protein to a cluster", path=path)
    for protein in alone:
        out.setdefault(protein, own_cluster(protein))
    return out


def own_cluster(protein: str) -> str:
    """The cluster label of a protein that forms a cluster of its own (one no table label can equal)."""
    return "\0" + protein


def cluster_of(clusters: Mapping[str, str], protein: str) -> str | None:
    """The cluster a table from :func:`read_clusters` gives ``protein``, found by its ID as the dataset holds it or
    as ``manifest.tsv`` writes it (:func:`protrnn.utils.io.table_cell`: whitespace collapsed, control characters
    escaped); None when unlisted."""
    found = clusters.get(protein)
    return found if found is not None else clusters.get(table_cell(protein))


def compare_methods(evaluations: Sequence[Evaluation], reference: str, methods: Sequence[str] | None = None, *,
                    keys: Sequence[str] = DEFAULT_KEYS, test_sets: Sequence[str] | None = None, min_length: int = 0,
                    floors: Sequence[ContactFloor] = (), n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOT_SEED,
                    alpha: float = INTERVAL_ALPHA, clusters: Mapping[str, str] | None = None) -> list[Comparison]:
    """Every model (default: all but the reference's) against ``reference`` on each test set both were scored on
    (or ``test_sets``, which both must have) and each key.

    Model names are those of ``per_protein.csv``; ``NAME`` stands for all of its ``NAME@seedS`` runs. Proteins are
    those where every run of both models has a value of the key, within the length and contact floors (so the two
    means are taken over the same proteins). An unknown name, key or test set, and a comparison left without any
    protein, are errors, so a typo does not pass as "no difference".

    ``clusters`` (``{protein id: cluster}``) makes every interval resample clusters; a protein it does not list is a
    cluster of its own (the count is logged per test set), and a test set none of whose proteins it lists is an
    error.
    """
    if not evaluations:
        raise InputError("no evaluations to compare")
    check_test_sets_agree(evaluations)
    groups = _groups(evaluations)
    ref_label, ref_runs = _resolve(reference, groups)
    own = {ref_label, split_seed(ref_label)[0], *ref_runs}
    if methods is None:
        methods = [name for name in groups if name not in own]
    if not methods:
        raise InputError(f"nothing to compare with {reference!r}: the evaluations hold no other method")
    ids = [key for key in keys if key in ID_COLUMNS]
    if ids:
        raise InputError(f"{ids[0]!r} is an identity column, not a metric")
    known: dict[str, None] = {}  # every column, in the files' order (evaluate writes metric_keys' order)
    origin: dict[tuple[str, str, str], Path] = {}
    for evaluation in evaluations:
        for row in evaluation.rows:
            known.update(dict.fromkeys(row))
            where = (str(row["method"]), str(row["test_set"]), str(row["protein"]))
            if origin.setdefault(where, evaluation.path) != evaluation.path:
                raise InputError(f"method {where[0]!r} scored protein {where[2]!r} of test set {where[1]!r} in two "
                                 f"evaluations ({origin[where]} and {evaluation.path}); pass each once",
                                 path=evaluation.path)
    missing = [key for key in keys if key not in known]
    if missing:
        offered = [key for key in known if key.endswith("/P@L/5")]
        raise InputError(f"no column {missing[0]!r} in the evaluations' per_protein.csv (columns are RANGE/METRIC "
                         f"or bin/LO-HI/METRIC; those of P@L/5 here: {', '.join(offered) or 'none'})")
    ref_sets = _test_sets(evaluations, ref_runs)
    for name in test_sets or ():
        if name not in ref_sets:
            raise InputError(f"reference {reference!r} was not scored on test set {name!r} "
                             f"(its test sets: {', '.join(sorted(ref_sets))})")
    kept: dict[str, set[str]] = {}
    out: list[Comparison] = []
    for method in methods:
        label, runs = _resolve(method, groups)
        if set(runs) & set(ref_runs):
            raise InputError(f"{label!r} and the reference {ref_label!r} share runs; compare different models")
        shared = ref_sets & _test_sets(evaluations, runs)
        if test_sets:
            absent = [name for name in test_sets if name not in shared]
            if absent:
                raise InputError(f"{label!r} was not scored on test set {absent[0]!r}")
            chosen = list(test_sets)
        else:
            chosen = sorted(shared)
            if not chosen:
                raise InputError(f"{label!r} and {ref_label!r} were scored on no common test set")
            skipped = sorted(ref_sets - shared)
            if skipped:
                stderr_log(f"protrnn compare: {label} was not scored on {', '.join(skipped)}; compared on "
                           f"{', '.join(chosen)}")
        for test_set in chosen:
            if test_set not in kept:
                kept[test_set] = selected_proteins(evaluations, test_set, min_length=min_length, floors=floors)
                if clusters is not None:
                    _log_unlisted(test_set, sorted(kept[test_set]), clusters)
            for key in keys:
                matrix, proteins = protein_matrix(evaluations, [*runs, *ref_runs], test_set, key)
                columns = [c for c, (_, protein) in enumerate(proteins)
                           if protein in kept[test_set] and np.isfinite(matrix[:, c]).all()]
                if not columns:
                    raise InputError(f"no protein of test set {test_set!r} has a {key} value for both {label!r} "
                                     f"and {ref_label!r}" + (" within the length and contact floors"
                                                             if min_length or floors else ""))
                variant, base = matrix[:len(runs), columns], matrix[len(runs):, columns]
                labels = None
                if clusters is not None:
                    labels = [cluster_of(clusters, proteins[c][1]) or own_cluster(proteins[c][1])  # unlisted: its own
                              for c in columns]
                effect = paired_difference_bootstrap(variant, base, n_boot=n_boot, seed=seed, alpha=alpha,
                                                     clusters=labels)
                out.append(Comparison(test_set, key, label, ref_label, len(columns), len(runs), len(ref_runs),
                                      mean_over_seeds(variant), mean_over_seeds(base), effect["mean"],
                                      effect["low"], effect["high"], effect.get("clusters")))
    return out


def cluster_hints(evaluations: Sequence[Evaluation]) -> list[str]:
    """For comparisons made without clusters: one line per test set whose proteins the ``manifest.tsv`` that
    ``protrnn evaluate`` found beside its file (``summary.json``'s ``test_sets.NAME.manifest_tsv``) puts in fewer
    clusters than there are proteins, naming the ``--clusters`` argument that would resample them. A manifest that
    is gone or unreadable gives no line."""
    hints: list[str] = []
    seen: set[tuple[str, str]] = set()
    for evaluation in evaluations:
        recorded = evaluation.summary.get("test_sets")
        for test_set, info in (recorded.items() if isinstance(recorded, Mapping) else ()):
            manifest = info.get("manifest_tsv") if isinstance(info, Mapping) else None
            if not manifest or (test_set, str(manifest)) in seen:
                continue
            seen.add((test_set, str(manifest)))
            try:
                clusters = read_clusters(manifest)
            except InputError:
                continue
            proteins = {str(row["protein"]) for e in evaluations for row in e.rows if row["test_set"] == test_set}
            listed = [c for c in (cluster_of(clusters, p) for p in proteins) if c is not None]
            if listed and len(set(listed)) < len(listed):
                hints.append(f"protrnn compare: {len(listed)} proteins of {test_set} form {len(set(listed))} homology "
                             f"clusters ({manifest}); --clusters {manifest} resamples the clusters, as their "
                             "members' differences are not independent")
    return hints


def _log_unlisted(test_set: str, proteins: Sequence[str], clusters: Mapping[str, str]) -> None:
    """Refuse a test set whose proteins the cluster table never names; log how many it leaves out."""
    unlisted = sum(cluster_of(clusters, name) is None for name in proteins)
    if proteins and unlisted == len(proteins):
        raise InputError(f"the cluster table names no protein of test set {test_set!r} (e.g. {proteins[0]!r}); "
                         "give the manifest.tsv of the prepare run that wrote it")
    if unlisted:
        stderr_log(f"protrnn compare: {unlisted} of {len(proteins)} proteins of {test_set} are not in the cluster "
                   "table; each counts as a cluster of its own")


def format_comparisons(comparisons: Sequence[Comparison]) -> str:
    """A plain-text table: one line per model, test set and metric."""
    clustered = any(c.clusters is not None for c in comparisons)
    header = (f"{'test set':<14} {'metric':<22} {'model':<16} {'vs':<12} {'n':>5} "
              + (f"{'clusters':>8} " if clustered else "") + f"{'model':>7} {'ref':>7} "
              f"{'difference [' + INTERVAL_PERCENT + ' paired interval]':<40} verdict")
    lines = [header]
    for c in comparisons:
        interval = f"{c.difference:+.4f} [{c.low:+.4f}, {c.high:+.4f}]"
        groups = f"{'-' if c.clusters is None else c.clusters:>8} " if clustered else ""
        lines.append(f"{c.test_set:<14} {c.key:<22} {c.method:<16} {c.reference:<12} {c.proteins:>5} {groups}"
                     f"{c.mean:>7.4f} {c.reference_mean:>7.4f} {interval:<40} {c.verdict}")
    if clustered:
        lines.append("(intervals resample the clusters of proteins, not the proteins)")
    return "\n".join(lines)


def write_comparisons(path: str | Path, comparisons: Sequence[Comparison]) -> Path:
    """The table as TSV (written whole, then renamed into place)."""
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for comparison in comparisons:
            values = [getattr(comparison, c) for c in COLUMNS]
            handle.write("\t".join(f"{v:.6g}" if isinstance(v, float) else "" if v is None else str(v)
                                    for v in values) + "\n")
    return path
