"""Paired comparison of models scored by ``protrnn evaluate`` (torch-free): ``protrnn compare``.

Every model is compared with one reference on the proteins both were scored on: the difference of their protein
means, with a percentile bootstrap interval whose replicates draw one protein resample for both models (paired), and
the seeds of a model run as ``NAME@seedS`` independently (:func:`protrnn.report.aggregate.paired_difference_bootstrap`,
the same interval as the report's findings table). Pairing removes the protein-to-protein variance the two models
share, so a difference can be clear while the two per-model intervals overlap.

A comparison can be restricted to proteins chosen by what their structures hold, never by how a model scored on them:
a minimum length and, per separation range, a minimum number of true contacts as a multiple of L
(:class:`ContactFloor`, e.g. ``long:1`` = at least L contacts at separation >= 24, the chains where long-range top-L/5
precision can reach 1 and is least noisy: :data:`protrnn.conventions.FAR_RICH_RANGE` and ``FAR_RICH_PER_LENGTH``, the
chains of training's ``val/P@L5_long_far``). These are decision rules a user fixes before seeing a candidate's
figures; the filter reads the ``L`` and ``RANGE/n_contacts`` columns ``protrnn evaluate`` writes for every protein.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from protrnn.conventions import HEADLINE_K, RANGES
from protrnn.errors import InputError
from protrnn.evaluation.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_ALPHA, INTERVAL_PERCENT
from protrnn.report.aggregate import (
    BOOT_SEED,
    group_seeds,
    mean_over_seeds,
    paired_difference_bootstrap,
    protein_matrix,
)
from protrnn.report.inputs import Evaluation
from protrnn.utils.io import atomic_write

#: The metrics compared unless others are asked for: top-L/5 precision at medium+long and long range.
DEFAULT_KEYS = (f"medium_long/P@L/{HEADLINE_K}", f"long/P@L/{HEADLINE_K}")
#: Columns of the comparison table (TSV), in order.
COLUMNS = ("test_set", "key", "method", "reference", "proteins", "seeds", "reference_seeds", "mean",
           "reference_mean", "difference", "low", "high")


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

    @property
    def column(self) -> str:
        return f"{self.range_name}/n_contacts"

    def __str__(self) -> str:
        return f"{self.range_name}:{self.per_length:g}"


@dataclass(frozen=True)
class Comparison:
    """One model against the reference on one test set and one metric (``low``/``high``: the paired interval;
    ``proteins``: those where both models have a value, e.g. a chain without long-range pairs has no long-range
    precision)."""

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

    @property
    def verdict(self) -> str:
        """``higher`` / ``lower`` when the interval excludes 0, else ``no clear difference``."""
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


def selected_proteins(evaluations: Sequence[Evaluation], runs: Sequence[str], test_set: str, *,
                      min_length: int = 0, floors: Sequence[ContactFloor] = ()) -> set[str]:
    """Proteins of ``test_set`` (scored for ``runs[0]``) that pass the length and contact floors."""
    chosen: set[str] = set()
    for evaluation in evaluations:
        for row in evaluation.rows:
            if row["method"] != runs[0] or row["test_set"] != test_set:
                continue
            length = row.get("L", math.nan)
            if math.isnan(length):
                raise InputError(f"protein {row['protein']!r} has no 'L' column", path=evaluation.path)
            keep = length >= min_length
            for floor in floors:
                count = row.get(floor.column, math.nan)
                if math.isnan(count):
                    raise InputError(f"protein {row['protein']!r} has no {floor.column!r} column (needed by the "
                                     f"contact floor {floor})", path=evaluation.path)
                keep = keep and count >= floor.per_length * length
            if keep:
                chosen.add(str(row["protein"]))
    return chosen


def compare_methods(evaluations: Sequence[Evaluation], reference: str, methods: Sequence[str] | None = None, *,
                    keys: Sequence[str] = DEFAULT_KEYS, test_sets: Sequence[str] | None = None, min_length: int = 0,
                    floors: Sequence[ContactFloor] = (), n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOT_SEED,
                    alpha: float = INTERVAL_ALPHA) -> list[Comparison]:
    """Every model (default: all but the reference) against ``reference`` on each test set they share and each key.

    Model names are those of ``per_protein.csv``; ``NAME`` stands for all of its ``NAME@seedS`` runs. Proteins are
    those every run of both models was scored on, within the length and contact floors; a test set where no protein
    is left, or a key no table has, is an error (so a typo does not pass as "no difference").
    """
    if not evaluations:
        raise InputError("no evaluations to compare")
    groups = _groups(evaluations)
    ref_label, ref_runs = _resolve(reference, groups)
    if methods is None:
        methods = [name for name in groups if name != ref_label and name not in ref_runs]
    if not methods:
        raise InputError(f"nothing to compare with {reference!r}: the evaluations hold no other method")
    known = set()
    for evaluation in evaluations:
        for row in evaluation.rows:
            known.update(row)
    missing = [key for key in keys if key not in known]
    if missing:
        raise InputError(f"no column {missing[0]!r} in the evaluations' per_protein.csv")
    present = sorted({str(row["test_set"]) for e in evaluations for row in e.rows if row["method"] in ref_runs})
    if test_sets:
        absent = [name for name in test_sets if name not in present]
        if absent:
            raise InputError(f"reference {reference!r} was not scored on test set {absent[0]!r} "
                             f"(its test sets: {', '.join(present)})")
        present = list(test_sets)
    out: list[Comparison] = []
    for method in methods:
        label, runs = _resolve(method, groups)
        for test_set in present:
            keep = selected_proteins(evaluations, ref_runs, test_set, min_length=min_length, floors=floors)
            for key in keys:
                matrix, proteins = protein_matrix(evaluations, [*runs, *ref_runs], test_set, key)
                columns = [c for c, (_, protein) in enumerate(proteins) if protein in keep]
                if not columns:
                    raise InputError(f"{label!r} and {ref_label!r} share no protein of test set {test_set!r} "
                                     "within the length and contact floors")
                matrix = matrix[:, columns]
                variant, base = matrix[:len(runs)], matrix[len(runs):]
                scored = int((np.isfinite(variant).any(axis=0) & np.isfinite(base).any(axis=0)).sum())
                effect = paired_difference_bootstrap(variant, base, n_boot=n_boot, seed=seed, alpha=alpha)
                out.append(Comparison(test_set, key, label, ref_label, scored, len(runs), len(ref_runs),
                                      mean_over_seeds(variant), mean_over_seeds(base), effect["mean"], effect["low"], effect["high"]))
    return out


def format_comparisons(comparisons: Sequence[Comparison]) -> str:
    """A plain-text table: one line per model, test set and metric."""
    header = (f"{'test set':<14} {'metric':<22} {'model':<16} {'vs':<12} {'n':>5} {'model':>7} {'ref':>7} "
              f"{'difference [' + INTERVAL_PERCENT + ' paired interval]':<40} verdict")
    lines = [header]
    for c in comparisons:
        interval = f"{c.difference:+.4f} [{c.low:+.4f}, {c.high:+.4f}]"
        lines.append(f"{c.test_set:<14} {c.key:<22} {c.method:<16} {c.reference:<12} {c.proteins:>5} "
                     f"{c.mean:>7.4f} {c.reference_mean:>7.4f} {interval:<40} {c.verdict}")
    return "\n".join(lines)


def write_comparisons(path: str | Path, comparisons: Sequence[Comparison]) -> Path:
    """The table as TSV (written whole, then renamed into place)."""
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for comparison in comparisons:
            row = asdict(comparison)
            handle.write("\t".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                                   for c in COLUMNS) + "\n")
    return path
