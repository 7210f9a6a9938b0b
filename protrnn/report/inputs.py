"""What a report is drawn from, loaded and checked before any drawing starts (torch-free).

Evaluation folders (``summary.json``, ``per_protein.csv``, ``predictions/``) from ``protrnn evaluate``, diagnostics JSON
from ``protrnn diagnose``, training run folders (Lightning ``CSVLogger`` ``metrics.csv`` anywhere below them),
``protrnn synthetic`` result folders and ``prepare``'s ``leakage.tsv``; plus the merged (method, test set) results, the
saved predictions and the choice of proteins whose contact maps are drawn. Runs of one model with different seeds are
named ``NAME@seedS`` (:func:`protrnn.diagnostics.results.split_seed`); :mod:`protrnn.report.aggregate` groups them.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.diagnostics.results import (
    SYNTHETIC_FORMAT,
    SYNTHETIC_FORMAT_VERSION,
    DiagnosticsResult,
    load_diagnostics,
    split_seed,
)
from protrnn.errors import InputError, read_json_document, reading
from protrnn.evaluation.results import (
    BASELINE_NAMES,
    PER_PROTEIN_FILE,
    PREDICTIONS_DIR,
    SUMMARY_FILE,
    read_per_protein_csv,
    read_summary,
)
from protrnn.utils.io import read_tsv_table

#: Baselines that read an alignment (not comparable to single-sequence models; shown, never the reference).
ALIGNMENT_METHODS = frozenset({"freecontact"})
#: Baselines in the order tables and legends list them (after the models).
BASELINE_ORDER = BASELINE_NAMES
#: Contact maps drawn when --proteins is not given: per test set, this many proteins.
DEFAULT_MAPS_PER_TEST_SET = 2


@dataclass
class Evaluation:
    """One ``protrnn evaluate`` output folder."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def predictions_dir(self) -> Path:
        return self.path / PREDICTIONS_DIR


@dataclass
class RunCurves:
    """Curves of one run from a Lightning ``metrics.csv``: ``{column: [(x, value), ...]}`` in x order, where x is the
    optimizer step (or the epoch when the file has no step column): training loss is logged per step and
    validation per epoch, so the step axis shows both, even for a run that stopped within its first epoch."""

    name: str
    path: Path
    series: dict[str, list[tuple[float, float]]]
    x_label: str = "optimizer step"


SYNTHETIC_RESULT = "result.json"


@dataclass
class SyntheticRun:
    """One ``protrnn synthetic`` run (``OUT/result.json``): a variant name, its seed and the parsed result."""

    name: str
    seed: int
    path: Path
    result: dict[str, Any]


@dataclass
class ReportInputs:
    """Everything a report is drawn from (loaded and checked before any drawing starts). ``reference``: the model
    (and synthetic variant) the findings table compares every knob against (None: ``lstm`` when present, else the
    first model)."""

    evaluations: list[Evaluation] = field(default_factory=list)
    diagnostics: list[DiagnosticsResult] = field(default_factory=list)
    runs: list[RunCurves] = field(default_factory=list)
    leakage: list[tuple[Path, list[dict[str, str]]]] = field(default_factory=list)
    proteins: list[str] | None = None
    synthetic: list[SyntheticRun] = field(default_factory=list)
    reference: str | None = None


def load_evaluation(path: str | Path) -> Evaluation:
    """Read an evaluation folder (``summary.json`` + ``per_protein.csv``)."""
    path = Path(path)
    if path.name == SUMMARY_FILE:
        path = path.parent
    summary = read_summary(path)
    csv_path = path / PER_PROTEIN_FILE
    if not csv_path.is_file():
        raise InputError(f"{PER_PROTEIN_FILE} missing from the evaluation folder", path=path)
    return Evaluation(path=path, summary=summary, rows=read_per_protein_csv(csv_path))


def find_metrics_csv(run_dir: str | Path) -> Path:
    """The newest Lightning ``metrics.csv`` below ``run_dir`` (highest ``version_N``, then latest modified)."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name.endswith(".csv"):
        return run_dir
    if not run_dir.is_dir():
        raise InputError("run folder not found", path=run_dir)
    found = sorted(run_dir.rglob("metrics.csv"))
    if not found:
        raise InputError("no metrics.csv (Lightning CSVLogger) below the run folder", path=run_dir)

    def key(path: Path) -> tuple[int, float]:
        match = re.search(r"version_(\d+)", str(path.relative_to(run_dir)))
        return (int(match.group(1)) if match else -1, path.stat().st_mtime)

    return max(found, key=key)


def read_run_curves(run_dir: str | Path, name: str | None = None) -> RunCurves:
    """Every numeric column of a run's ``metrics.csv`` as ``(step, value)`` points (rows of a column at the same
    step are averaged; empty cells skipped)."""
    path = find_metrics_csv(run_dir)
    run_dir = Path(run_dir)
    with reading(path), open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        x_column = "step" if "step" in fields else "epoch" if "epoch" in fields else None
        if x_column is None:
            raise InputError("metrics.csv has neither a 'step' nor an 'epoch' column (not a Lightning CSVLogger "
                             "file?)", path=path)
        columns = [c for c in fields if c not in ("epoch", "step")]
        points: dict[str, dict[float, list[float]]] = {c: {} for c in columns}
        for line, record in enumerate(reader, start=2):
            x_text = record.get(x_column) or ""
            if not x_text:
                continue
            try:
                x = float(x_text)
            except ValueError:
                raise InputError(f"{x_column} {x_text!r} is not a number", path=path, position=line) from None
            for column in columns:
                text = record.get(column) or ""
                if not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    raise InputError(f"column {column!r}: {text!r} is not a number", path=path,
                                     position=line) from None
                if math.isfinite(value):
                    points[column].setdefault(x, []).append(value)
    series = {column: sorted((x, float(np.mean(values))) for x, values in by_x.items())
              for column, by_x in points.items() if by_x}
    default_name = run_dir.name if run_dir.is_dir() else path.parent.name
    return RunCurves(name=name or default_name, path=path, series=series,
                     x_label="optimizer step" if x_column == "step" else "epoch")


def read_leakage(path: str | Path) -> list[dict[str, str]]:
    """Rows of a leakage TSV (``prepare``'s ``leakage.tsv`` or an mmseqs overlap table with a header). A table with
    none of their columns (``chain_id``; ``query...``; ``cluster_rep``), a manifest say, is refused: the report would
    count its rows as removed training chains."""
    path = Path(path)
    if not path.is_file():
        raise InputError("leakage table not found", path=path)
    with reading(path):
        columns, rows = read_tsv_table(path)
    if columns and not any(c == "chain_id" or c.startswith("query") or c == "cluster_rep" for c in columns):
        raise InputError(f"not a leakage table: its columns ({', '.join(columns[:4])}...) include none of chain_id "
                         "(prepare's leakage.tsv), query_* (an mmseqs overlap table) or cluster_rep", path=path)
    return rows


def load_synthetic(value: str | Path) -> SyntheticRun:
    """A ``protrnn synthetic`` output folder (or its result.json), as ``[NAME=]PATH`` (default name: the cell, plus
    ``_k<horizon>`` with a gradient horizon); the seed comes from the recorded settings."""
    name, path_text = _named(str(value))
    path = Path(path_text)
    if path.is_dir():
        path = path / SYNTHETIC_RESULT
    result = read_json_document(path, SYNTHETIC_FORMAT, max_version=SYNTHETIC_FORMAT_VERSION,
                                what="protrnn synthetic result")
    try:
        seed = int(result["settings"]["seed"])
        checked = [(int(row["distance"]), float(row["accuracy"])) for row in result["distances"]]
        if not checked or not 0.0 < float(result["chance"]) < 1.0:
            raise ValueError("no distances, or a chance level outside (0, 1)")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed synthetic result ({type(exc).__name__}: {exc})", path=path) from None
    if name is None:
        horizon = result.get("gradient_horizon")
        name = str(result.get("cell", path.parent.name)) + (f"_k{horizon}" if horizon else "")
    return SyntheticRun(name=name, seed=seed, path=path, result=result)


def _named(value: str) -> tuple[str | None, str]:
    name, sep, path = value.partition("=")
    if sep and name and "/" not in name and not Path(value).exists():
        return name, path
    return None, value


def load_inputs(evaluations: Sequence[str | Path] = (), diagnostics: Sequence[str | Path] = (),
                runs: Sequence[str] = (), leakage: Sequence[str | Path] = (),
                proteins: Sequence[str] | None = None, synthetic: Sequence[str | Path] = (),
                reference: str | None = None) -> ReportInputs:
    """Load and check every input; a run may be given as ``NAME=DIR`` (default name: the folder name), a synthetic
    result as ``NAME=DIR`` (default: its cell and horizon)."""
    inputs = ReportInputs(proteins=list(proteins) if proteins else None, reference=reference)
    inputs.synthetic = [load_synthetic(value) for value in synthetic]
    seen: dict[tuple[str, int], Path] = {}
    for run in inputs.synthetic:
        if (run.name, run.seed) in seen:
            raise InputError(f"two synthetic results for variant {run.name!r} seed {run.seed} ({seen[(run.name, run.seed)]}"
                             f" and {run.path}); name them with --synthetic NAME=DIR", path=run.path)
        seen[(run.name, run.seed)] = run.path
    inputs.evaluations = [load_evaluation(path) for path in evaluations]
    for path in diagnostics:
        inputs.diagnostics.extend(load_diagnostics(path))
    for value in runs:
        name, path = _named(str(value))
        inputs.runs.append(read_run_curves(path, name))
    inputs.leakage = [(Path(path), read_leakage(path)) for path in leakage]
    if not (inputs.evaluations or inputs.diagnostics or inputs.runs or inputs.synthetic):
        raise InputError("nothing to report: give --evaluation, --diagnostics, --runs or --synthetic")
    names = [run.name for run in inputs.runs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"two runs are named {duplicated[0]!r}; name them with --runs NAME=DIR")
    return inputs


@dataclass
class MethodResult:
    """Summary statistics of one method on one test set, with where they came from."""

    method: str
    kind: str
    test_set: str
    n_proteins: int
    metrics: dict[str, dict[str, float]]
    source: Path
    #: Seeds aggregated into this result and the run names they came from (empty for a single run).
    seeds: tuple[int, ...] = ()
    members: tuple[str, ...] = ()


def number(value: Any) -> float:
    """A summary statistic as a float (NaN for a missing value)."""
    return math.nan if value is None else float(value)


def check_test_sets_agree(evaluations: Sequence[Evaluation]) -> None:
    """One test-set name must mean one set of contacts in every evaluation: a name recorded with two contact cutoffs
    (``summary.json``'s ``test_sets.NAME.contact_cutoff``; e.g. one file prepared at 6 Å, one at 8 Å) is a one-line
    :class:`InputError` naming both evaluations, since its methods would be set side by side (or paired) as if they
    had been scored on the same contacts. Evaluations that record no cutoff are not checked."""
    seen: dict[str, tuple[float, Path]] = {}
    for evaluation in evaluations:
        for name, record in (evaluation.summary.get("test_sets") or {}).items():
            cutoff = record.get("contact_cutoff") if isinstance(record, Mapping) else None
            if cutoff is None:
                continue
            first = seen.setdefault(name, (float(cutoff), evaluation.path))
            if first[0] != float(cutoff):
                raise InputError(f"test set {name!r} is scored at contact cutoff {first[0]:g} Å in {first[1]} but "
                                 f"{float(cutoff):g} Å here: two different sets of contacts under one name; evaluate "
                                 "them under different names, or at one cutoff", path=evaluation.path)


def merge_results(evaluations: Sequence[Evaluation]) -> list[MethodResult]:
    """All (method, test set) results of the given evaluations; the same pair in two folders is an error, and so is
    a test-set name scored at two contact cutoffs (:func:`check_test_sets_agree`)."""
    check_test_sets_agree(evaluations)
    merged: dict[tuple[str, str], MethodResult] = {}
    for evaluation in evaluations:
        methods = evaluation.summary.get("methods", {})
        for method, by_test in evaluation.summary.get("results", {}).items():
            kind = str(methods.get(method, {}).get("kind", "model"))
            for test_set, result in by_test.items():
                key = (method, test_set)
                if key in merged:
                    raise InputError(f"method {method!r} on test set {test_set!r} appears in two evaluations "
                                     f"({merged[key].source} and {evaluation.path}); pass each once",
                                     path=evaluation.path)
                metrics = {name: {stat: number(v) if stat != "n" else int(v or 0) for stat, v in stats.items()}
                           for name, stats in result.get("metrics", {}).items()}
                merged[key] = MethodResult(method, kind, test_set, int(result.get("n_proteins", 0)), metrics,
                                           evaluation.path)
    return list(merged.values())


def chance_levels(evaluations: Sequence[Evaluation]) -> dict[str, dict[str, float]]:
    """Each test set's chance level (``summary.json``'s ``chance``: the expected top-L/k precision of a random
    ranking) as ``{test set: {metric: mean}}``. Evaluations written before it existed have none. A test set whose
    name carries different levels in two evaluations (two different files under one name) gets none: no line is
    better than a wrong one."""
    levels: dict[str, dict[str, float]] = {}
    conflicting: set[str] = set()
    for evaluation in evaluations:
        for test_set, entry in evaluation.summary.get("chance", {}).items():
            means = {key: number(stats.get("mean")) for key, stats in entry.get("metrics", {}).items()}
            known = levels.setdefault(test_set, means)
            if known.keys() != means.keys() or any(not np.isclose(known[k], means[k], rtol=1e-9, atol=0,
                                                                  equal_nan=True) for k in means):
                conflicting.add(test_set)
    return {name: means for name, means in levels.items() if name not in conflicting}


def order_methods(results: Iterable[MethodResult]) -> list[str]:
    """Models first (in input order), then baselines in a fixed order."""
    models: list[str] = []
    baselines: list[str] = []
    for result in results:
        target = baselines if result.kind == "baseline" else models
        if result.method not in target:
            target.append(result.method)
    rank = {name: k for k, name in enumerate(BASELINE_ORDER)}
    return models + sorted(baselines, key=lambda n: (rank.get(n, len(rank)), n))


@dataclass
class SavedPrediction:
    """A protein's saved prediction (``predictions/<method>/<test set>/<protein>.npz``)."""

    method: str
    kind: str
    test_set: str
    protein: str
    path: Path


def find_predictions(evaluations: Sequence[Evaluation]) -> list[SavedPrediction]:
    """Every saved prediction of the given evaluations, in method / test set / protein order."""
    found: list[SavedPrediction] = []
    for evaluation in evaluations:
        methods = evaluation.summary.get("methods", {})
        root = evaluation.predictions_dir
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*/*/*.npz")):
            method, test_set = path.parent.parent.name, path.parent.name
            with np.load(path, allow_pickle=False) as data:
                protein = str(data["id"]) if "id" in data.files else path.stem
            found.append(SavedPrediction(method, str(methods.get(method, {}).get("kind", "model")), test_set,
                                         protein, path))
    return first_seed_only(found)


def first_seed_only(predictions: Sequence[SavedPrediction]) -> list[SavedPrediction]:
    """Saved predictions of seeded runs reduced to each model's lowest seed (one map panel per model), renamed to
    the model; everything else unchanged."""
    lowest: dict[str, int] = {}
    for p in predictions:
        base, seed = split_seed(p.method)
        if seed is not None:
            lowest[base] = min(seed, lowest.get(base, seed))
    out = []
    for p in predictions:
        base, seed = split_seed(p.method)
        if seed is None:
            out.append(p)
        elif seed == lowest[base]:
            out.append(SavedPrediction(base, p.kind, p.test_set, p.protein, p.path))
    return out


def choose_proteins(predictions: Sequence[SavedPrediction], requested: Sequence[str] | None,
                    per_test_set: int = DEFAULT_MAPS_PER_TEST_SET) -> list[tuple[str, str]]:
    """``(test set, protein)`` pairs to draw: the requested IDs (an unknown one is an error listing the available),
    or the proteins with the most saved methods, ``per_test_set`` per test set."""
    available: dict[tuple[str, str], int] = {}
    for p in predictions:
        available[(p.test_set, p.protein)] = available.get((p.test_set, p.protein), 0) + 1
    if requested:
        chosen = [key for key in available if key[1] in requested]
        missing = [pid for pid in requested if all(key[1] != pid for key in available)]
        if missing:
            shown = ", ".join(sorted({key[1] for key in available})[:12]) or "none"
            raise InputError(f"--proteins: no saved prediction for {missing[0]!r} (run evaluate with "
                             f"--save-predictions N; available: {shown})")
        return chosen
    chosen = []
    for test_set in dict.fromkeys(key[0] for key in available):
        keys = [key for key in available if key[0] == test_set]
        keys.sort(key=lambda key: -available[key])  # stable: first saved wins ties
        chosen.extend(keys[:per_test_set])
    return chosen


def model_of(name: str) -> str:
    """The model a run name belongs to (``lstm`` for ``lstm@seed1``)."""
    return split_seed(name)[0]


def horizon_text(diag: DiagnosticsResult) -> str:
    """``"37 residues"``, or ``"> 96 residues"`` when sensitivity never fell below the threshold."""
    if diag.horizon is None:
        return f"> {diag.range_end} residues"
    return f"{diag.horizon} residues"
