"""A self-contained HTML report answering "how far does each recurrent model see?", plus its figures.

Inputs are the files the other commands write: evaluation folders (``summary.json``, ``per_protein.csv``,
``predictions/``) from ``protrnn evaluate``, diagnostics JSON from ``protrnn diagnose``, training run folders
(Lightning ``CSVLogger`` ``metrics.csv`` anywhere below them) and ``prepare``'s ``leakage.tsv``.

``OUTDIR/report.html`` embeds every figure as a base64 PNG and its CSS inline, so it opens offline and links
nothing; ``OUTDIR/figures`` holds the same figures as PNG and SVG for papers and slides. Sections:

1. how far each model sees: effective gradient horizon, diagnosis, long-range precision against the baselines;
2. precision (top-L/5) by separation bin for every method, one panel per test set, bootstrap error bars;
3. gradient sensitivity versus distance per model (log scale) with the effective horizons marked;
4. training and validation curves per run;
5. predicted versus true contact maps (prediction above the diagonal, truth below, top-L TP/FP marked);
6. every metric (mean and bootstrap interval) per method and test set;
7. test-set overlap removed by ``prepare`` (never silent).

The report and the figure folder are replaced as a whole on success, so a rerun never mixes old and new figures.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protrnn import __version__
from protrnn.errors import InputError
from protrnn.evaluation.evaluate import read_per_protein_csv, read_summary
from protrnn.utils.io import atomic_write, safe_name, swapped_directory

#: Metrics in the headline table (key, column title); everything else is in the full table.
HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("medium_long/P@L/5", "M+L P@L/5"),
    ("long/P@L/5", "Long P@L/5"),
    ("long/P@L/1", "Long P@L"),
    ("medium/P@L/5", "Medium P@L/5"),
    ("short/P@L/5", "Short P@L/5"),
    ("medium_long/AUPR", "M+L AUPR"),
    ("long/AUPR", "Long AUPR"),
    ("medium_long/MCC", "M+L MCC"),
)
#: Baselines that read an alignment (not comparable to single-sequence models; shown, never the reference).
ALIGNMENT_METHODS = frozenset({"freecontact"})
#: Precision-by-separation figures use top-L/k with this k.
BIN_K = 5
#: Values below this are drawn at this level on log axes (a hard gradient horizon gives exact zeros).
LOG_FLOOR = 1e-8
#: Leakage rows shown in the HTML per file (all are in the TSV).
MAX_LEAKAGE_ROWS = 200
#: Contact maps drawn when --proteins is not given: per test set, this many proteins.
DEFAULT_MAPS_PER_TEST_SET = 2
_BASELINE_STYLE = {"random": ("#9e9e9e", ":"), "separation": ("#616161", "--"), "propensity": ("#8d6e63", "--"),
                   "freecontact": ("#000000", "-.")}
_MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22",
                  "#7f7f7f", "#8c564b")


# ------------------------------------------------------------------------------------------------------------ inputs
@dataclass
class Evaluation:
    """One ``protrnn evaluate`` output folder."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"


@dataclass
class RunCurves:
    """Curves of one run from a Lightning ``metrics.csv``: ``{column: [(x, value), ...]}`` in x order, where x is the
    optimizer step (or the epoch when the file has no step column): training loss is logged per step and
    validation per epoch, so the step axis shows both, even for a run that stopped within its first epoch."""

    name: str
    path: Path
    series: dict[str, list[tuple[float, float]]]
    x_label: str = "optimizer step"


@dataclass
class ReportInputs:
    """Everything a report is drawn from (loaded and checked before any drawing starts)."""

    evaluations: list[Evaluation] = field(default_factory=list)
    diagnostics: list[Any] = field(default_factory=list)  # protrnn.evaluation.diagnostics.DiagnosticsResult
    runs: list[RunCurves] = field(default_factory=list)
    leakage: list[tuple[Path, list[dict[str, str]]]] = field(default_factory=list)
    proteins: list[str] | None = None


def load_evaluation(path: str | Path) -> Evaluation:
    """Read an evaluation folder (``summary.json`` + ``per_protein.csv``)."""
    path = Path(path)
    if path.name == "summary.json":
        path = path.parent
    summary = read_summary(path)
    csv_path = path / "per_protein.csv"
    if not csv_path.is_file():
        raise InputError("per_protein.csv missing from the evaluation folder", path=path)
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
    with open(path, newline="", encoding="utf-8") as handle:
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
    """Rows of a leakage TSV (``prepare``'s ``leakage.tsv`` or an mmseqs overlap table with a header)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("leakage table not found", path=path)
    with open(path, newline="", encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip() and not line.startswith("#")]
    if not lines:
        return []
    return list(csv.DictReader(lines, delimiter="\t"))


def _named(value: str) -> tuple[str | None, str]:
    name, sep, path = value.partition("=")
    if sep and name and "/" not in name and not Path(value).exists():
        return name, path
    return None, value


def load_inputs(evaluations: Sequence[str | Path] = (), diagnostics: Sequence[str | Path] = (),
                runs: Sequence[str] = (), leakage: Sequence[str | Path] = (),
                proteins: Sequence[str] | None = None) -> ReportInputs:
    """Load and check every input; a run may be given as ``NAME=DIR`` (default name: the folder name)."""
    inputs = ReportInputs(proteins=list(proteins) if proteins else None)
    inputs.evaluations = [load_evaluation(path) for path in evaluations]
    if diagnostics:
        from protrnn.evaluation.diagnostics import load_diagnostics

        for path in diagnostics:
            inputs.diagnostics.extend(load_diagnostics(path))
    for value in runs:
        name, path = _named(str(value))
        inputs.runs.append(read_run_curves(path, name))
    inputs.leakage = [(Path(path), read_leakage(path)) for path in leakage]
    if not (inputs.evaluations or inputs.diagnostics or inputs.runs):
        raise InputError("nothing to report: give --evaluation, --diagnostics or --runs")
    names = [run.name for run in inputs.runs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"two runs are named {duplicated[0]!r}; name them with --runs NAME=DIR")
    return inputs


# ----------------------------------------------------------------------------------------------------- merged data
@dataclass
class MethodResult:
    """Summary statistics of one method on one test set, with where they came from."""

    method: str
    kind: str
    test_set: str
    n_proteins: int
    metrics: dict[str, dict[str, float]]
    source: Path


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def merge_results(evaluations: Sequence[Evaluation]) -> list[MethodResult]:
    """All (method, test set) results of the given evaluations; the same pair in two folders is an error."""
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
                metrics = {name: {stat: _num(v) if stat != "n" else int(v or 0) for stat, v in stats.items()}
                           for name, stats in result.get("metrics", {}).items()}
                merged[key] = MethodResult(method, kind, test_set, int(result.get("n_proteins", 0)), metrics,
                                           evaluation.path)
    return list(merged.values())


def _order_methods(results: Iterable[MethodResult]) -> list[str]:
    """Models first (in input order), then baselines in a fixed order."""
    models: list[str] = []
    baselines: list[str] = []
    for result in results:
        target = baselines if result.kind == "baseline" else models
        if result.method not in target:
            target.append(result.method)
    rank = {name: k for k, name in enumerate(_BASELINE_STYLE)}
    return models + sorted(baselines, key=lambda n: (rank.get(n, len(rank)), n))


class Styles:
    """One colour and line style per method, the same in every figure."""

    def __init__(self, models: Sequence[str]) -> None:
        self._colours = {name: _MODEL_COLOURS[k % len(_MODEL_COLOURS)] for k, name in enumerate(models)}

    def __call__(self, method: str, kind: str = "model") -> dict[str, Any]:
        if kind == "baseline" or (method in _BASELINE_STYLE and method not in self._colours):
            colour, style = _BASELINE_STYLE.get(method, ("#555555", "--"))
            return {"color": colour, "linestyle": style, "marker": "s", "linewidth": 1.4}
        if method not in self._colours:
            self._colours[method] = _MODEL_COLOURS[len(self._colours) % len(_MODEL_COLOURS)]
        return {"color": self._colours[method], "linestyle": "-", "marker": "o", "linewidth": 2.0}


# --------------------------------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    """A saved figure: file stem, caption and the PNG bytes embedded in the HTML."""

    stem: str
    title: str
    caption: str
    png: bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, directory: Path, stem: str, title: str, caption: str) -> Figure:
    """Write ``stem.png`` and ``stem.svg`` (no timestamps, so reruns give the same SVG) and keep the PNG bytes."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    png = buffer.getvalue()
    (directory / f"{stem}.png").write_bytes(png)
    fig.savefig(directory / f"{stem}.svg", format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return Figure(stem=stem, title=title, caption=caption, png=png)


def _bin_keys(result: MethodResult) -> list[str]:
    """``bin/<label>/P@L/5`` keys in separation order."""
    keys = [k for k in result.metrics if k.startswith("bin/") and k.endswith(f"/P@L/{BIN_K}")]
    return sorted(keys, key=lambda k: int(re.match(r"bin/(\d+)", k).group(1)))  # type: ignore[union-attr]


def figure_precision_by_separation(results: Sequence[MethodResult], directory: Path, styles: Styles) -> Figure | None:
    """(a) top-L/5 precision per separation bin, every method on one plot, one panel per test set."""
    if not results:
        return None
    plt = _pyplot()
    test_sets = list(dict.fromkeys(r.test_set for r in results))
    methods = _order_methods(results)
    fig, axes = plt.subplots(1, len(test_sets), figsize=(5.2 * len(test_sets) + 1.5, 4.2), squeeze=False,
                             sharey=True)
    for ax, test_set in zip(axes[0], test_sets, strict=True):
        in_set = {r.method: r for r in results if r.test_set == test_set}
        # One x position per bin over every method of the panel (evaluations could use different bins).
        labels = sorted({k.split("/")[1] for r in in_set.values() for k in _bin_keys(r)},
                        key=lambda label: int(re.match(r"\d+", label).group(0)))  # type: ignore[union-attr]
        position = {label: k for k, label in enumerate(labels)}
        n = max((r.n_proteins for r in in_set.values()), default=0)
        for offset, method in enumerate(m for m in methods if m in in_set):
            result = in_set[method]
            keys = _bin_keys(result)
            if not keys:
                continue
            x = np.array([position[k.split("/")[1]] for k in keys]) + (offset - (len(in_set) - 1) / 2) * 0.05
            mean = np.array([result.metrics[k]["mean"] for k in keys])
            low = np.array([result.metrics[k].get("low", math.nan) for k in keys])
            high = np.array([result.metrics[k].get("high", math.nan) for k in keys])
            err = np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])
            err = np.where(np.isfinite(err), err, 0.0)
            line = ax.errorbar(x, mean, yerr=err, capsize=3, markersize=5, label=method,
                               **styles(method, result.kind))
            if result.n_proteins < n:  # e.g. FreeContact scores only the proteins that come with an alignment
                ax.annotate(f"{method}: {result.n_proteins} of {n} proteins", (x[0], mean[0]),
                            xytext=(-4, 12), textcoords="offset points", fontsize=7, annotation_clip=False,
                            color=line.lines[0].get_color())
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_title(f"{test_set} ({n} proteins)")
        ax.set_xlabel("sequence separation |i - j| (residues)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"precision of top L/{BIN_K} pairs in the bin")
    axes[0][0].set_ylim(bottom=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, directory, "precision_by_separation", "Precision by sequence separation",
                 f"Top-L/{BIN_K} precision within each separation bin (L = chain length), mean over proteins; "
                 "error bars: bootstrap 95% interval over proteins. Models solid, baselines dashed/dotted. A model "
                 "that sees far keeps its precision above the separation prior in the long bins. A method that "
                 "scores only some proteins of a set (FreeContact needs an alignment) is labelled with its count.")


def figure_sensitivity(diagnostics: Sequence[Any], directory: Path, styles: Styles) -> Figure | None:
    """(b) gradient sensitivity vs distance per model (log y), effective horizons marked; hidden-gradient panel."""
    if not diagnostics:
        return None
    plt = _pyplot()
    has_hidden = any(d.flow.hidden for d in diagnostics)
    fig, axes = plt.subplots(1, 2 if has_hidden else 1, figsize=(12.5 if has_hidden else 7.0, 4.4), squeeze=False)
    ax = axes[0][0]
    fractions = sorted({float(d.fraction) for d in diagnostics})
    for diag in diagnostics:
        style = styles(diag.model)
        profile = diag.flow.sensitivity
        valid = (np.asarray(profile.count) > 0) & np.isfinite(profile.mean)
        x = np.asarray(profile.distance)[valid]
        y = np.maximum(np.asarray(profile.mean)[valid], LOG_FLOOR)
        label = f"{diag.model} (horizon {horizon_text(diag)})"
        ax.plot(x, y, color=style["color"], linewidth=1.8, label=label)
        if diag.horizon is not None:
            ax.axvline(diag.horizon, color=style["color"], linestyle="--", linewidth=1.0)
        else:
            ax.annotate("", xy=(float(x.max()) if x.size else 0.0, diag.fraction * 1.5),
                        xytext=(float(x.max()) * 0.9 if x.size else 0.0, diag.fraction * 1.5),
                        arrowprops={"arrowstyle": "->", "color": style["color"]})
    for fraction in fractions:
        ax.axhline(fraction, color="#444444", linestyle=":", linewidth=1.0)
        ax.text(0.99, fraction, f"horizon threshold {fraction:g} x peak", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=8, color="#444444")
    ax.set_yscale("log")
    ax.set_ylim(bottom=LOG_FLOOR * 0.5, top=2.0)
    ax.set_xlabel("distance of input residue s from the scored pair, min(|i-s|, |j-s|)")
    ax.set_ylabel("||d logit_ij / d x_s||, normalised to peak")
    ax.set_title("Input sensitivity vs distance (dashed: effective horizon)")
    ax.grid(alpha=0.3, which="both")
    # Legends go below the axes: inside, they cover the curves (the profiles fill the whole log range).
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    pairwise_last = False
    if has_hidden:
        ax2 = axes[0][1]
        styles_by_layer = ("-", "--", "-.", ":")
        for diag in diagnostics:
            colour = styles(diag.model)["color"]
            for layer, profile in enumerate(diag.flow.hidden):
                valid = (np.asarray(profile.count) > 0) & np.isfinite(profile.mean)
                ax2.plot(np.asarray(profile.distance)[valid],
                         np.maximum(np.asarray(profile.mean)[valid], LOG_FLOOR), color=colour,
                         linestyle=styles_by_layer[layer % len(styles_by_layer)], linewidth=1.4,
                         label=f"{diag.model} layer {layer + 1}")
            pairwise_last |= _last_layer_on_pair(diag)
        ax2.set_yscale("log")
        ax2.set_ylim(bottom=LOG_FLOOR * 0.5, top=2.0)
        ax2.set_xlabel("distance of position t from the scored pair")
        ax2.set_ylabel("||dL / dh_t||, normalised to peak")
        ax2.set_title("Hidden-state gradient per recurrent layer"
                      + ("\n(last layer: non-zero only at t = i, j, as the pairwise head reads only h_i, h_j)"
                         if pairwise_last else ""), fontsize=11 if pairwise_last else None)
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                   ncol=min(4, max(2, len(diagnostics))))
    fig.tight_layout()
    return _save(fig, directory, "gradient_sensitivity", "Gradient sensitivity vs sequence distance",
                 "Sensitivity of a pair's logit to each input residue, by distance from the nearer residue of the "
                 "pair, averaged over validation chains and normalised to its peak (log scale; values below "
                 f"{LOG_FLOOR:g} drawn at {LOG_FLOOR:g}). Dashed vertical lines: effective horizon, where sensitivity "
                 "falls for good below the dotted threshold; an arrow means it never does within the measured range."
                 + (" Right: ||dL/dh_t|| of each recurrent layer's output by distance of t from the nearer residue of "
                    "the pair. The last layer drops to zero right after distance 0 by construction: the pairwise "
                    "head reads only h_i and h_j, so dL/dh_t of the last layer is non-zero only at t = i and t = j. "
                    "How far the gradient reaches shows in the earlier layers and in the input sensitivity (left)."
                    if pairwise_last else ""))


def _last_layer_on_pair(diag: Any) -> bool:
    """True when the model's last hidden-gradient profile is non-zero only at distance 0 (pairwise head)."""
    if not diag.flow.hidden:
        return False
    if diag.config.get("head") == "pairwise":
        return True
    last = diag.flow.hidden[-1]
    beyond = (np.asarray(last.count)[1:] > 0) & np.isfinite(np.asarray(last.mean)[1:])
    return bool(beyond.any()) and bool(np.all(np.asarray(last.mean)[1:][beyond] == 0.0))


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean (the first points average what exists so far), so noisy step losses read as a trend."""
    if window <= 1 or values.size < 3:
        return values
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, values.size + 1)
    start = np.maximum(0, idx - window)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def figure_training_curves(runs: Sequence[RunCurves], directory: Path, styles: Styles) -> Figure | None:
    """(c) training loss (per step, smoothed) and validation loss per run; validation precision when logged."""
    if not runs:
        return None
    plt = _pyplot()
    precision_columns = sorted({c for run in runs for c in run.series if c.startswith("val/") and "P@L" in c})
    fig, axes = plt.subplots(1, 2 if precision_columns else 1, figsize=(13.5 if precision_columns else 7.5, 4.3),
                             squeeze=False)
    ax = axes[0][0]
    for run in runs:
        colour = styles(run.name)["color"]
        train_column = next((c for c in ("train/loss_step", "train/loss") if c in run.series), None)
        if train_column is not None:
            x, y = (np.array(v, dtype=float) for v in zip(*run.series[train_column], strict=True))
            smoothed = _smooth(y, max(1, y.size // 30))
            if smoothed is not y:
                ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, smoothed, color=colour, linewidth=1.8, label=f"{run.name} training ({train_column})")
        if "val/loss" in run.series:
            x, y = zip(*run.series["val/loss"], strict=True)
            ax.plot(x, y, color=colour, linestyle="--", marker="o", markersize=4, linewidth=1.6,
                    label=f"{run.name} validation")
    ax.set_xlabel(runs[0].x_label)
    ax.set_ylabel("loss")
    ax.set_title("Training (solid, smoothed) and validation (dashed) loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    if precision_columns:
        ax2 = axes[0][1]
        dashes = ("-", "--", "-.", ":")
        for run in runs:
            colour = styles(run.name)["color"]
            for k, column in enumerate(precision_columns):
                if column not in run.series:
                    continue
                x, y = zip(*run.series[column], strict=True)
                ax2.plot(x, y, color=colour, linestyle=dashes[k % len(dashes)], marker="o", markersize=3,
                         linewidth=1.4, label=f"{run.name} {column}")
        ax2.set_xlabel(runs[0].x_label)
        ax2.set_ylabel("precision")
        ax2.set_title("Validation precision (top-L/5) by range")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                   ncol=min(4, max(1, len(precision_columns))))
    fig.tight_layout()
    return _save(fig, directory, "training_curves", "Training and validation curves",
                 "From each run's Lightning metrics.csv: training loss per step (light) and its running mean, "
                 "validation loss at each validation. Training loss that stays high points to under-fitting; "
                 "validation loss rising while training loss falls points to over-fitting.")


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
    return found


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


def top_pairs(probs: np.ndarray, observed: np.ndarray, count: int, min_separation: int = 6) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """The ``count`` highest-probability upper-triangle pairs with both residues observed (ties by i then j)."""
    rows, cols = np.triu_indices(probs.shape[0], k=min_separation)
    keep = observed[rows] & observed[cols]
    rows, cols = rows[keep], cols[keep]
    order = np.lexsort((cols, rows, -probs[rows, cols]))[:count]
    return rows[order], cols[order]


def figure_contact_map(test_set: str, protein: str, predictions: Sequence[SavedPrediction], directory: Path,
                       styles: Styles) -> Figure:
    """(d) one panel per method: predicted probabilities above the diagonal, true contacts below; the top-L
    predicted pairs marked as true (green) or false (red) positives."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    methods = [p for p in predictions if p.test_set == test_set and p.protein == protein]
    order = {name: k for k, name in enumerate(_order_methods(
        MethodResult(p.method, p.kind, p.test_set, 0, {}, p.path) for p in methods))}
    methods.sort(key=lambda p: order[p.method])
    columns = min(len(methods), 4)
    rows_n = math.ceil(len(methods) / columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.2 * columns, 4.3 * rows_n), squeeze=False)
    length = 0
    for ax, saved in zip(axes.flat, methods, strict=False):
        with np.load(saved.path, allow_pickle=False) as data:
            probs = np.asarray(data["probs"], dtype=np.float32)
            contacts = np.asarray(data["contacts"], dtype=bool)
            observed = np.asarray(data["observed"], dtype=bool)
        length = probs.shape[0]
        if contacts.shape != probs.shape or observed.shape != (length,):
            raise InputError(f"prediction file holds inconsistent shapes {probs.shape}, {contacts.shape}, "
                             f"{observed.shape}", path=saved.path, record=protein)
        upper = np.triu(np.ones((length, length), dtype=bool), k=1)
        lower = np.tril(np.ones((length, length), dtype=bool), k=-1)
        truth = np.where(lower, contacts.astype(float), np.nan)
        truth[~observed, :] = np.where(lower[~observed, :], 0.5, np.nan)  # unobserved residues: mid grey
        truth[:, ~observed] = np.where(lower[:, ~observed], 0.5, truth[:, ~observed])
        ax.imshow(np.where(lower, truth, np.nan), cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
        image = ax.imshow(np.where(upper, probs, np.nan), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        r, c = top_pairs(probs, observed, length)
        hit = contacts[r, c]
        marker = max(2.0, 120.0 / max(length, 1))
        ax.scatter(c[hit], r[hit], s=marker, c="#2ca02c", marker="o", linewidths=0)
        ax.scatter(c[~hit], r[~hit], s=marker, c="#d62728", marker="o", linewidths=0)
        precision = float(hit.sum()) / max(1, length)  # CASP top-L: missing candidates count as misses
        ax.plot([0, length - 1], [0, length - 1], color="#bbbbbb", linewidth=0.6)
        ax.set_xlim(-0.5, length - 0.5)
        ax.set_ylim(length - 0.5, -0.5)
        ax.set_title(f"{saved.method}: top-L precision {precision:.2f}", fontsize=10)
        ax.set_xlabel("residue j")
    for row in axes:
        row[0].set_ylabel("residue i")
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.7, label="predicted probability (upper triangle)")
    handles = [Line2D([], [], marker="o", linestyle="", color="#2ca02c", label="top-L pair: true contact"),
               Line2D([], [], marker="o", linestyle="", color="#d62728", label="top-L pair: false positive"),
               Line2D([], [], marker="s", linestyle="", color="#333333", label="true contact (lower triangle)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.45, -0.02))
    fig.suptitle(f"{protein} ({test_set}, L = {length})")
    stem = f"contact_map_{safe_name(test_set)}_{safe_name(protein)}"
    return _save(fig, directory, stem, f"Contact map: {protein} ({test_set})",
                 "Upper triangle: predicted probability; lower triangle: true contacts (C-beta < 8 A; grey rows: "
                 "residues without coordinates). Dots: the top-L predicted pairs with |i - j| >= 6, green when a true "
                 "contact, red when not.")


# ------------------------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #1f77b4;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .55em;
text-align:right}th{background:#f0f4f8}td.l,th.l{text-align:left}tr.baseline td{color:#555;background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.88em;color:#444}
.note{background:#fff8e1;border-left:4px solid #ffb300;padding:.5em 1em}.ok{background:#e8f5e9;border-left:4px solid
#43a047;padding:.5em 1em}code{background:#f4f4f4;padding:0 .2em}details summary{cursor:pointer;font-weight:600}
.small{font-size:.85em;color:#555}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(stats: Mapping[str, float] | None, digits: int = 3) -> str:
    if not stats or not math.isfinite(_num(stats.get("mean"))):
        return "&ndash;"
    text = f"{stats['mean']:.{digits}f}"
    low, high = _num(stats.get("low")), _num(stats.get("high"))
    if math.isfinite(low) and math.isfinite(high):
        text += f" <span class='small'>[{low:.{digits}f}, {high:.{digits}f}]</span>"
    return text


def horizon_text(diag: Any) -> str:
    """``"37 residues"``, or ``"> 96 residues"`` when sensitivity never fell below the threshold."""
    if diag.horizon is None:
        return f"> {diag.flow.max_distance} residues"
    return f"{diag.horizon} residues"


def _figure_html(figure: Figure | None) -> str:
    if figure is None:
        return ""
    data = base64.b64encode(figure.png).decode("ascii")
    return (f"<figure id='{_e(figure.stem)}'><img alt='{_e(figure.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)} <span class='small'>Files: "
            f"figures/{_e(figure.stem)}.png, figures/{_e(figure.stem)}.svg</span></figcaption></figure>")


def _reach_section(results: Sequence[MethodResult], diagnostics: Sequence[Any]) -> str:
    """Section 1: one row per model: horizon, diagnosis and long-range precision against the best baseline."""
    by_key = {(r.method, r.test_set): r for r in results}
    test_sets = list(dict.fromkeys(r.test_set for r in results))
    models = [m for m in _order_methods(results) if any(r.method == m and r.kind != "baseline" for r in results)]
    diag_by_model = {d.model: d for d in diagnostics}
    for name in diag_by_model:
        if name not in models:
            models.append(name)
    if not models:
        return "<p class='note'>No model results or diagnostics were given: nothing to say about reach.</p>"
    # Compare against single-sequence baselines only: FreeContact uses an alignment, which no model here sees.
    baselines = [m for m in _order_methods(results) if m not in ALIGNMENT_METHODS
                 and any(r.method == m and r.kind == "baseline" for r in results)]
    head = ["Model", "Effective horizon", "Diagnosis"]
    head += [f"Long P@L/5 ({_e(t)})" for t in test_sets]
    lines = ["<table><tr>" + "".join(f"<th class='l'>{h}</th>" if k < 3 else f"<th>{h}</th>"
                                      for k, h in enumerate(head)) + "</tr>"]
    sentences = []
    for model in models:
        diag = diag_by_model.get(model)
        horizon = horizon_text(diag) if diag is not None else "not measured"
        label = _e(diag.diagnosis.label) if diag is not None and diag.diagnosis is not None else "&ndash;"
        cells = [f"<td class='l'><b>{_e(model)}</b></td>", f"<td class='l'>{_e(horizon)}</td>",
                 f"<td class='l'>{label}</td>"]
        for test_set in test_sets:
            result = by_key.get((model, test_set))
            cells.append(f"<td>{_fmt(result.metrics.get('long/P@L/5')) if result else '&ndash;'}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
        parts = [f"<b>{_e(model)}</b>: "]
        if diag is not None:
            parts.append(f"input sensitivity falls below {diag.fraction:g} of its peak at {_e(horizon)}")
            if diag.diagnosis is not None:
                parts.append(f" ({_e(diag.diagnosis.summary)})")
            parts.append(". ")
        for test_set in test_sets:
            result = by_key.get((model, test_set))
            if result is None:
                continue
            mine = result.metrics.get("long/P@L/5", {})
            best = max((by_key[(b, test_set)] for b in baselines if (b, test_set) in by_key),
                       key=lambda r: _num(r.metrics.get("long/P@L/5", {}).get("mean")), default=None)
            text = f"On {_e(test_set)}, long-range (|i-j| >= 24) top-L/5 precision is {_fmt(mine)}"
            if best is not None:
                theirs = best.metrics.get("long/P@L/5", {})
                verdict = ""
                if math.isfinite(_num(mine.get("low"))) and math.isfinite(_num(theirs.get("high"))):
                    if mine["low"] > theirs["high"]:
                        verdict = ": above it, intervals apart"
                    elif _num(mine.get("high")) < _num(theirs.get("low")):
                        verdict = ": below it, intervals apart"
                    else:
                        verdict = ": intervals overlap"
                text += (f" against {_fmt(theirs)} for the best single-sequence baseline ({_e(best.method)})"
                         f"{verdict}")
            parts.append(text + ". ")
        sentences.append("<li>" + "".join(parts) + "</li>")
    lines.append("</table>")
    return "".join(lines) + "<ul>" + "".join(sentences) + "</ul>"


def _diagnosis_section(diagnostics: Sequence[Any]) -> str:
    if not diagnostics:
        return ""
    rows = ["<table><tr><th class='l'>Model</th><th>Horizon</th><th>Horizon (anchor rule)</th>"
            "<th class='l'>Hidden-layer horizons</th><th class='l'>Diagnosis</th><th class='l'>Why</th>"
            "<th>Pairs</th><th>Chains</th></tr>"]
    for diag in diagnostics:
        hidden = ", ".join("&gt; max" if h is None else str(h) for h in diag.hidden_horizons) or "&ndash;"
        anchor = "&gt; max" if diag.horizon_anchor is None else str(diag.horizon_anchor)
        why = "<br>".join(_e(r) for r in diag.diagnosis.reasons) if diag.diagnosis else "&ndash;"
        label = _e(diag.diagnosis.label) if diag.diagnosis else "&ndash;"
        rows.append(f"<tr><td class='l'>{_e(diag.model)}</td><td>{_e(horizon_text(diag))}</td><td>{anchor}</td>"
                    f"<td class='l'>{hidden}</td><td class='l'>{label}</td><td class='l small'>{why}</td>"
                    f"<td>{diag.flow.n_pairs}</td><td>{diag.flow.n_chains}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _metrics_tables(results: Sequence[MethodResult], diagnostics: Sequence[Any],
                    evaluations: Sequence[Evaluation] = ()) -> str:
    """Section 6: headline metrics per method and test set, then every metric in a collapsible table."""
    if not results:
        return "<p>No evaluation results were given.</p>"
    labels = {d.model: (d.diagnosis.label if d.diagnosis else "&ndash;") for d in diagnostics}
    order = {m: k for k, m in enumerate(_order_methods(results))}
    set_order = {t: k for k, t in enumerate(dict.fromkeys(r.test_set for r in results))}
    ordered = sorted(results, key=lambda r: (set_order[r.test_set], order[r.method]))
    head = "".join(f"<th>{_e(title)}</th>" for _, title in HEADLINE_METRICS)
    lines = [f"<table><tr><th class='l'>Test set</th><th class='l'>Method</th><th>Proteins</th>{head}"
             "<th class='l'>Diagnosis</th></tr>"]
    for r in ordered:
        cells = "".join(f"<td>{_fmt(r.metrics.get(key))}</td>" for key, _ in HEADLINE_METRICS)
        kind = " class='baseline'" if r.kind == "baseline" else ""
        label = labels.get(r.method, "baseline" if r.kind == "baseline" else "&ndash;")
        lines.append(f"<tr{kind}><td class='l'>{_e(r.test_set)}</td><td class='l'>{_e(r.method)}</td>"
                     f"<td>{r.n_proteins}</td>{cells}<td class='l'>{_e(label) if label != '&ndash;' else label}"
                     "</td></tr>")
    lines.append("</table>")
    keys: list[str] = []
    for r in ordered:
        keys.extend(k for k in r.metrics if k not in keys and k != "L" and not k.endswith(("/n_pairs", "/n_contacts")))
    columns = [(r.test_set, r.method) for r in ordered]
    by_key = {(r.test_set, r.method): r for r in ordered}
    full = ["<details><summary>All metrics (mean [95% bootstrap interval] over proteins; n = proteins with a "
            "value)</summary><table><tr><th class='l'>Metric</th>"
            + "".join(f"<th>{_e(m)}<br><span class='small'>{_e(t)}</span></th>" for t, m in columns) + "</tr>"]
    for key in keys:
        cells = []
        for column in columns:
            stats = by_key[column].metrics.get(key)
            n = f" <span class='small'>n={stats.get('n', 0)}</span>" if stats else ""
            cells.append(f"<td>{_fmt(stats)}{n}</td>")
        full.append(f"<tr><td class='l'>{_e(key)}</td>{''.join(cells)}</tr>")
    full.append("</table></details>")
    return "".join(lines) + _skipped_html(evaluations) + "".join(full)


def _skipped_html(evaluations: Sequence[Evaluation]) -> str:
    """Methods or proteins ``evaluate`` skipped (e.g. FreeContact without an alignment), so gaps are explained."""
    items = []
    for evaluation in evaluations:
        for entry in evaluation.summary.get("skipped", []):
            method = _e(entry.get("method", "?"))
            if "proteins" in entry:
                proteins = entry["proteins"]
                reasons = sorted(set(proteins.values())) if isinstance(proteins, dict) else []
                items.append(f"<li>{method} on {_e(entry.get('test_set', '?'))}: {len(proteins)} protein(s) not "
                             f"scored ({_e('; '.join(reasons)[:300]) or 'no reason recorded'})</li>")
            else:
                items.append(f"<li>{method}: not run ({_e(entry.get('reason', 'no reason recorded'))})</li>")
    if not items:
        return ""
    return "<p class='note'>Skipped during evaluation:</p><ul>" + "".join(items) + "</ul>"


def _leakage_section(leakage: Sequence[tuple[Path, list[dict[str, str]]]],
                     evaluations: Sequence[Evaluation]) -> str:
    """Section 7: what prepare removed for each test set, from the given TSVs and the evaluation summaries."""
    parts = []
    recorded: list[str] = []
    for evaluation in evaluations:
        for name, info in evaluation.summary.get("test_sets", {}).items():
            if "leakage_rows" in info:
                recorded.append(f"<li>{_e(name)} ({_e(info.get('path', ''))}): {info['leakage_rows']} overlapping "
                                f"training chain(s) listed in {_e(info.get('leakage_tsv', 'leakage.tsv'))}</li>")
            else:
                recorded.append(f"<li>{_e(name)} ({_e(info.get('path', ''))}): no leakage.tsv beside the test set "
                                "&mdash; overlap with training data is <b>unknown</b></li>")
    if recorded:
        parts.append("<p>Test sets as recorded by <code>protrnn evaluate</code>:</p><ul>"
                     + "".join(dict.fromkeys(recorded)) + "</ul>")
    if not leakage:
        parts.append("<p class='note'>No leakage table was given (<code>--leakage</code>): the report cannot show "
                     "which training chains were removed for overlapping the test sets.</p>")
    for path, rows in leakage:
        if not rows:
            parts.append(f"<p class='ok'>{_e(path)}: no overlap between training data and test sets was found "
                         "(the table is empty).</p>")
            continue
        columns = list(rows[0].keys())
        shown = rows[:MAX_LEAKAGE_ROWS]
        summary = _leakage_counts(rows)
        parts.append(f"<p class='note'>{_e(path)}: <b>{len(rows)}</b> overlapping training chain(s){summary}. "
                     "These chains were removed from training (or flagged) so the test sets stay held out.</p>")
        table = ["<details><summary>Overlap rows" + (f" (first {MAX_LEAKAGE_ROWS})" if len(rows) > len(shown)
                                                      else "") + "</summary><table><tr>"
                 + "".join(f"<th class='l'>{_e(c)}</th>" for c in columns) + "</tr>"]
        for row in shown:
            table.append("<tr>" + "".join(f"<td class='l'>{_e(row.get(c, ''))}</td>" for c in columns) + "</tr>")
        table.append("</table></details>")
        parts.append("".join(table))
    return "".join(parts)


def _leakage_counts(rows: Sequence[Mapping[str, str]]) -> str:
    """`` (ts50: 4, psicov150: 34)``: rows per test set when a column names it."""
    for column in ("test_set", "test", "set"):
        if column in rows[0]:
            counts: dict[str, int] = {}
            for row in rows:
                counts[row.get(column, "")] = counts.get(row.get(column, ""), 0) + 1
            return " (" + ", ".join(f"{_e(k)}: {v}" for k, v in counts.items()) + ")"
    return ""


def _sources_section(inputs: ReportInputs) -> str:
    items = []
    for evaluation in inputs.evaluations:
        command = evaluation.summary.get("command") or "(not recorded)"
        items.append(f"<li>evaluation {_e(evaluation.path)}: <code>{_e(command)}</code></li>")
        for name, info in evaluation.summary.get("methods", {}).items():
            if info.get("model_json"):
                items.append(f"<li class='small'>model {_e(name)}: {_e(info['model_json'])}</li>")
    for diag in inputs.diagnostics:
        items.append(f"<li>diagnostics for {_e(diag.model)}: {diag.flow.n_pairs} pairs on {diag.flow.n_chains} "
                     f"chains, max distance {diag.flow.max_distance}</li>")
    for run in inputs.runs:
        items.append(f"<li>run {_e(run.name)}: {_e(run.path)}</li>")
    for path, _ in inputs.leakage:
        items.append(f"<li>leakage table {_e(path)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


@dataclass
class ReportResult:
    """What :func:`build_report` wrote."""

    html: Path
    figures: list[Path]


def build_report(inputs: ReportInputs, outdir: str | Path, *, title: str = "protrnn report",
                 log: Callable[[str], None] = print) -> ReportResult:
    """Draw every figure into ``OUTDIR/figures`` and write ``OUTDIR/report.html`` (both replaced whole)."""
    outdir = Path(outdir)
    results = merge_results(inputs.evaluations)
    model_names = [m for m in _order_methods(results) if any(r.method == m and r.kind != "baseline"
                                                            for r in results)]
    model_names += [d.model for d in inputs.diagnostics if d.model not in model_names]
    model_names += [r.name for r in inputs.runs if r.name not in model_names]
    styles = Styles(model_names)
    predictions = find_predictions(inputs.evaluations)
    maps = choose_proteins(predictions, inputs.proteins)
    with swapped_directory(outdir / "figures") as staging:
        precision = figure_precision_by_separation(results, staging, styles)
        sensitivity = figure_sensitivity(inputs.diagnostics, staging, styles)
        curves = figure_training_curves(inputs.runs, staging, styles)
        contact_maps = [figure_contact_map(t, p, predictions, staging, styles) for t, p in maps]
        figures = [f for f in (precision, sensitivity, curves, *contact_maps) if f is not None]
        body = [f"<h1>{_e(title)}</h1>",
                f"<p class='small'>protrnn {__version__}, generated {time.strftime('%Y-%m-%d %H:%M')}. "
                "Contacts: C-beta (C-alpha for Gly) &lt; 8 &Aring;; pairs with |i - j| &lt; 6 are not scored; "
                "short 6-11, medium 12-23, long &ge; 24, medium+long &ge; 12; top-L/k over observed residues, "
                "L = chain length; intervals are 95% percentile bootstraps over proteins.</p>",
                "<h2>1. How far does each recurrent model see?</h2>", _reach_section(results, inputs.diagnostics),
                "<h2>2. Precision by sequence separation</h2>",
                _figure_html(precision) or "<p>No evaluation results were given (<code>--evaluation</code>).</p>",
                "<h2>3. Gradient sensitivity vs distance</h2>",
                (_figure_html(sensitivity) + _diagnosis_section(inputs.diagnostics))
                if sensitivity else "<p>No diagnostics were given (<code>--diagnostics</code>).</p>",
                "<h2>4. Training and validation curves</h2>",
                _figure_html(curves) or "<p>No training runs were given (<code>--runs</code>).</p>",
                "<h2>5. Predicted vs true contact maps</h2>",
                "".join(_figure_html(f) for f in contact_maps)
                or "<p>No saved predictions (run <code>protrnn evaluate --save-predictions N</code>).</p>",
                "<h2>6. All metrics</h2>", _metrics_tables(results, inputs.diagnostics, inputs.evaluations),
                "<h2>7. Test-set overlap and leakage removed</h2>",
                _leakage_section(inputs.leakage, inputs.evaluations),
                "<h2>Sources</h2>", _sources_section(inputs)]
        document = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                    f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
                    + "\n".join(body) + "\n</body></html>\n")
        with atomic_write(outdir / "report.html", encoding="utf-8") as handle:
            handle.write(document)
    figure_paths = [outdir / "figures" / f"{f.stem}.{ext}" for f in figures for ext in ("png", "svg")]
    log(f"protrnn report: wrote {outdir / 'report.html'} with {len(figures)} figures")
    return ReportResult(html=outdir / "report.html", figures=figure_paths)
