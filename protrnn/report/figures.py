"""The report's figures (matplotlib, Agg): precision by separation, gradient sensitivity, context usage, the synthetic
reach task, training curves and contact maps. Models with several seeds are drawn as their seed mean (thick) over
each seed (thin). Each is written as ``figures/<stem>.png`` and ``.svg`` (no timestamps, so reruns give the same files) and its PNG
bytes are kept for embedding in the HTML.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.conventions import HEADLINE_K, MIN_SEPARATION
from protrnn.diagnostics.results import DiagnosticsResult, split_seed
from protrnn.errors import InputError
from protrnn.evaluation.metrics import INTERVAL_PERCENT, rank_pairs, scored_pairs
from protrnn.evaluation.results import CHANCE_NAME
from protrnn.report.aggregate import ModelDiagnostics, SyntheticVariant
from protrnn.report.inputs import MethodResult, RunCurves, SavedPrediction, order_methods
from protrnn.utils.io import safe_name

#: Precision-by-separation figures use top-L/k with this k.
BIN_K = HEADLINE_K
#: Values below this are drawn at this level on log axes (a hard gradient horizon gives exact zeros).
LOG_FLOOR = 1e-8
#: Colour and line style of each baseline (the baselines of :data:`protrnn.report.inputs.BASELINE_ORDER`).
_BASELINE_STYLE = {"random": ("#9e9e9e", ":"), "separation": ("#616161", "--"), "propensity": ("#8d6e63", "--"),
                   "freecontact": ("#000000", "-.")}
_MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22",
                  "#7f7f7f", "#8c564b")


class Styles:
    """One colour and line style per method, the same in every figure (the seeds of a model share its colour)."""

    def __init__(self, models: Sequence[str]) -> None:
        bases = list(dict.fromkeys(split_seed(name)[0] for name in models))
        self._colours = {name: _MODEL_COLOURS[k % len(_MODEL_COLOURS)] for k, name in enumerate(bases)}

    def __call__(self, method: str, kind: str = "model") -> dict[str, Any]:
        method = split_seed(method)[0]
        if kind == "baseline" or (method in _BASELINE_STYLE and method not in self._colours):
            colour, style = _BASELINE_STYLE.get(method, ("#555555", "--"))
            return {"color": colour, "linestyle": style, "marker": "s", "linewidth": 1.4}
        if method not in self._colours:
            self._colours[method] = _MODEL_COLOURS[len(self._colours) % len(_MODEL_COLOURS)]
        return {"color": self._colours[method], "linestyle": "-", "marker": "o", "linewidth": 2.0}


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
    """Write ``stem.png`` and ``stem.svg`` and keep the PNG bytes. No timestamps, and the SVG element ids are salted
    with the stem instead of at random, so reruns on the same inputs give the same files."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    png = buffer.getvalue()
    (directory / f"{stem}.png").write_bytes(png)
    with plt.rc_context({"svg.hashsalt": f"protrnn-report-{stem}"}):
        fig.savefig(directory / f"{stem}.svg", format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return Figure(stem=stem, title=title, caption=caption, png=png)


def _bin_keys(result: MethodResult) -> list[str]:
    """``bin/<label>/P@L/5`` keys in separation order."""
    keys = [k for k in result.metrics if k.startswith("bin/") and k.endswith(f"/P@L/{BIN_K}")]
    return sorted(keys, key=lambda k: int(re.match(r"bin/(\d+)", k).group(1)))  # type: ignore[union-attr]


#: Style of the chance level (the expected precision of a random ranking, legend CHANCE_NAME) in precision figures.
_CHANCE_STYLE = {"color": "#bdbdbd", "linestyle": "-", "linewidth": 6, "alpha": 0.6, "solid_capstyle": "butt"}


def figure_precision_by_separation(results: Sequence[MethodResult], directory: Path, styles: Styles,
                                   chance: Mapping[str, Mapping[str, float]] | None = None) -> Figure | None:
    """(a) top-L/5 precision per separation bin, every method on one plot, one panel per test set; with ``chance``
    (:func:`protrnn.report.inputs.chance_levels`), each panel's chance level per bin as a wide grey line."""
    if not results:
        return None
    plt = _pyplot()
    test_sets = list(dict.fromkeys(r.test_set for r in results))
    methods = order_methods(results)
    fig, axes = plt.subplots(1, len(test_sets), figsize=(5.2 * len(test_sets) + 1.5, 4.2), squeeze=False,
                             sharey=True)
    drew_chance = False
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
        level = (chance or {}).get(test_set, {})
        floor = [(position[label], level[f"bin/{label}/P@L/{BIN_K}"]) for label in labels
                 if math.isfinite(level.get(f"bin/{label}/P@L/{BIN_K}", math.nan))]
        if floor:
            ax.plot(*zip(*floor, strict=True), label=CHANCE_NAME, zorder=0, **_CHANCE_STYLE)
            drew_chance = True
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
                 f"error bars: bootstrap {INTERVAL_PERCENT} interval over proteins. Models solid, baselines "
                 "dashed/dotted. A model that sees far keeps its precision above the separation prior in the long "
                 "bins. A method that scores only some proteins of a set (FreeContact needs an alignment) is "
                 "labelled with its count." + (" The wide grey line is the chance level: the exact expected "
                 "precision of a random ranking (the random baseline is one draw of it)." if drew_chance else ""))


def _profile_xy(profile: Any) -> tuple[np.ndarray, np.ndarray]:
    valid = (np.asarray(profile.count) > 0) & np.isfinite(profile.mean)
    return np.asarray(profile.distance)[valid], np.maximum(np.asarray(profile.mean)[valid], LOG_FLOOR)


def _mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds at the x values every seed has (log-scale profiles: geometric mean)."""
    if not curves:
        return np.asarray([]), np.asarray([])
    common = sorted(set.intersection(*[set(x.tolist()) for x, _ in curves]))
    if not common:
        return np.asarray([]), np.asarray([])
    values = np.array([[y[list(x).index(c)] for c in common] for x, y in curves])
    return np.asarray(common), np.exp(np.mean(np.log(np.maximum(values, LOG_FLOOR)), axis=0))


def all_censored(stats: Mapping[str, Any] | None) -> bool:
    """Whether every seed's horizon in ``stats`` (a diagnostics group's gradient or usage entry) lies beyond the
    measured range: it is then known only to exceed it (shown ``>``), and the model reads past it."""
    return stats is not None and int(stats.get("censored", 0)) == int(stats["n"]) > 0


def group_horizon_text(group: ModelDiagnostics, kind: str = "gradient") -> str:
    """``"37 residues"`` for one seed; ``"41 [29, 53] residues (2 seeds)"`` for several (mean, 95 % t interval);
    ``>`` when every seed's horizon lies beyond the measured range, ``>=`` when some do."""
    stats = group.gradient if kind == "gradient" else group.usage
    if stats is None:
        return "not measured"
    cap = int(stats["range_end"])  # aggregate_diagnostics: the smallest measured-range end of the censored seeds
    censored = int(stats.get("censored", 0))
    if all_censored(stats):
        return f"> {cap} residues" + (f" ({stats['n']} seeds)" if stats["n"] > 1 else "")
    if stats["n"] == 1:
        return f"{stats['values'][0]:.0f} residues"
    prefix = ">= " if censored else ""
    # a horizon is never negative: the t interval is shown clipped at 0
    interval = f" [{max(stats['low'], 0.0):.0f}, {stats['high']:.0f}]" if math.isfinite(stats["low"]) else ""
    return f"{prefix}{stats['mean']:.0f}{interval} residues ({stats['n']} seeds)"


def figure_sensitivity(groups: Sequence[ModelDiagnostics], directory: Path, styles: Styles) -> Figure | None:
    """(b) gradient sensitivity vs distance per model (log y), effective horizons marked; hidden-gradient panel."""
    if not groups:
        return None
    plt = _pyplot()
    has_hidden = any(run.flow.hidden for g in groups for run in g.runs)
    fig, axes = plt.subplots(1, 2 if has_hidden else 1, figsize=(12.5 if has_hidden else 7.0, 4.4), squeeze=False)
    ax = axes[0][0]
    fractions = sorted({float(run.fraction) for g in groups for run in g.runs})
    for group in groups:
        style = styles(group.model)
        curves = [_profile_xy(run.flow.sensitivity) for run in group.runs]
        if len(curves) > 1:
            for x, y in curves:
                ax.plot(x, y, color=style["color"], linewidth=0.8, alpha=0.35)
        x, y = _mean_curve(curves) if len(curves) > 1 else curves[0]
        ax.plot(x, y, color=style["color"], linewidth=1.8,
                label=f"{group.model} (horizon {group_horizon_text(group)})")
        if not all_censored(group.gradient):
            ax.axvline(group.gradient["mean"], color=style["color"], linestyle="--", linewidth=1.0)
        else:
            fraction = group.runs[0].fraction
            ax.annotate("", xy=(float(x.max()) if x.size else 0.0, fraction * 1.5),
                        xytext=(float(x.max()) * 0.9 if x.size else 0.0, fraction * 1.5),
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
        for group in groups:
            colour = styles(group.model)["color"]
            layers = max(len(run.flow.hidden) for run in group.runs)
            for layer in range(layers):
                curves = [_profile_xy(run.flow.hidden[layer]) for run in group.runs if layer < len(run.flow.hidden)]
                x, y = _mean_curve(curves) if len(curves) > 1 else curves[0]
                ax2.plot(x, y, color=colour, linestyle=styles_by_layer[layer % len(styles_by_layer)], linewidth=1.4,
                         label=f"{group.model} layer {layer + 1}")
            pairwise_last |= _last_layer_on_pair(group.runs[0])
        ax2.set_yscale("log")
        ax2.set_ylim(bottom=LOG_FLOOR * 0.5, top=2.0)
        ax2.set_xlabel("distance of position t from the scored pair")
        ax2.set_ylabel("||dL / dh_t||, normalised to peak")
        ax2.set_title("Hidden-state gradient per recurrent layer"
                      + ("\n(last layer: non-zero only at t = i, j, as the pairwise head reads only h_i, h_j)"
                         if pairwise_last else ""), fontsize=11 if pairwise_last else None)
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                   ncol=min(4, max(2, len(groups))))
    fig.tight_layout()
    seeded = any(g.n_seeds > 1 for g in groups)
    return _save(fig, directory, "gradient_sensitivity", "Gradient sensitivity vs sequence distance",
                 "Sensitivity of a pair's logit to each input residue, by distance from the nearer residue of the "
                 "pair, averaged over validation chains and normalised to its peak (log scale; values below "
                 f"{LOG_FLOOR:g} drawn at {LOG_FLOOR:g}). Dashed vertical lines: effective horizon, where sensitivity "
                 "falls for good below the dotted threshold; an arrow means it never does within the measured range."
                 + (" Thick lines: geometric mean over seeds; thin lines: each seed; dashed lines at the mean horizon;"
                    f" intervals in the legend are {INTERVAL_PERCENT} t intervals over seeds." if seeded else "")
                 + (" Right: ||dL/dh_t|| of each recurrent layer's output by distance of t from the nearer residue of "
                    "the pair. The last layer drops to zero right after distance 0 by construction: the pairwise "
                    "head reads only h_i and h_j, so dL/dh_t of the last layer is non-zero only at t = i and t = j. "
                    "How far the gradient reaches shows in the earlier layers and in the input sensitivity (left)."
                    if pairwise_last else ""))


def figure_usage(groups: Sequence[ModelDiagnostics], directory: Path, styles: Styles) -> Figure | None:
    """(b') context usage: the logit change when context beyond d is replaced, relative to d_min, and long-range
    precision under ablation; usage horizons marked."""
    groups = [g for g in groups if g.usage is not None]
    if not groups:
        return None
    plt = _pyplot()
    has_precision = any(run.usage is not None and run.usage.precision is not None for g in groups for run in g.runs)
    fig, axes = plt.subplots(1, 2 if has_precision else 1, figsize=(12.5 if has_precision else 7.0, 4.4),
                             squeeze=False)
    ax = axes[0][0]
    fractions = set()
    for group in groups:
        style = styles(group.model)
        curves = []
        for run in group.runs:
            usage = run.usage
            if usage is None:
                continue
            fractions.add(float(usage.fraction))
            valid = (np.asarray(usage.count) > 0) & np.isfinite(usage.relative)
            curves.append((np.asarray(usage.distances)[valid],
                           np.maximum(np.asarray(usage.relative)[valid], LOG_FLOOR)))
        if len(curves) > 1:
            for x, y in curves:
                ax.plot(x, y, color=style["color"], linewidth=0.8, alpha=0.35, marker=".")
        x, y = _mean_curve(curves) if len(curves) > 1 else curves[0]
        ax.plot(x, y, color=style["color"], linewidth=1.8, marker="o", markersize=3,
                label=f"{group.model} (usage horizon {group_horizon_text(group, 'usage')})")
        if group.usage is not None and not all_censored(group.usage):
            ax.axvline(group.usage["mean"], color=style["color"], linestyle="--", linewidth=1.0)
    for fraction in sorted(fractions):
        ax.axhline(fraction, color="#444444", linestyle=":", linewidth=1.0)
        ax.text(0.99, fraction, f"usage threshold {fraction:g} x U(d_min)", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=8, color="#444444")
    ax.set_xscale("symlog", linthresh=2)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set_ylim(bottom=LOG_FLOOR * 0.5, top=2.0)
    ax.set_xlabel("context radius d kept around both residues of the pair (symlog)")
    ax.set_ylabel("mean |logit change| / its value at the smallest d")
    ax.set_title("Context usage: replace residues farther than d (dashed: usage horizon)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    if has_precision:
        ax2 = axes[0][1]
        for group in groups:
            style = styles(group.model)
            runs = [run.usage.precision for run in group.runs if run.usage is not None
                    and run.usage.precision is not None]
            if not runs:
                continue
            common = sorted(set.intersection(*[set(p.distances.tolist()) for p in runs]))
            values = np.array([[p.ablated[list(p.distances).index(d)] for d in common] for p in runs])
            ax2.plot(common, values.mean(axis=0), color=style["color"], linewidth=1.8, marker="o", markersize=3,
                     label=f"{group.model}")
            ax2.axhline(float(np.mean([p.original for p in runs])), color=style["color"], linestyle=":",
                        linewidth=1.0)
        ax2.set_xscale("symlog", linthresh=2)
        ax2.set_xlim(left=0)
        ax2.set_xlabel("context radius d (symlog)")
        ax2.set_ylabel("long-range top-L/5 precision")
        ax2.set_title("Precision with each pair's context beyond d replaced (dotted: intact)")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                   ncol=min(4, max(2, len(groups))))
    fig.tight_layout()
    first = next(run.usage for g in groups for run in g.runs if run.usage is not None)
    return _save(fig, directory, "context_usage", "Context usage vs context radius",
                 "For scored validation pairs (i, j), every residue farther than d from both i and j is replaced by "
                 f"draws from the {'training-set' if first.background == 'train' else 'chain'}'s amino-acid "
                 f"composition ({first.draws} draws per pair), and the pair's logit is scored again. Left: mean "
                 "|logit change| relative to its value at the smallest d (log scale; pairs with context beyond d "
                 "only). Dashed vertical lines: usage horizon, d + 1 for the smallest d beyond which the change stays "
                 "below the dotted threshold, noise floor (difference between the two halves of the draws) included: "
                 "the first distance the model no longer reads, as a gradient horizon counts. Unlike the "
                 "gradient horizon, this is what the trained model reads at inference."
                 + (" Right: long-range top-L/5 precision when every candidate pair is scored under its own ablation "
                    "(re-ranked within the 2 x L/5 best intact candidates), mean over chains and seeds; dotted: the "
                    "intact chains." if has_precision else ""))


def figure_synthetic(variants: Sequence[SyntheticVariant], directory: Path, styles: Styles) -> Figure | None:
    """(e) the planted-distance recall task: accuracy vs distance per variant, mean over seeds with the seed range."""
    if not variants:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    markers = "osD^v<>ph*"
    distances: set[int] = set()
    chances: set[float] = set()
    for k, variant in enumerate(variants):
        x = np.asarray(variant.distances, dtype=float)
        distances.update(variant.distances)
        chances.add(variant.chance)
        mean = variant.accuracy.mean(axis=0)
        low, high = variant.accuracy.min(axis=0), variant.accuracy.max(axis=0)
        colour = _MODEL_COLOURS[k % len(_MODEL_COLOURS)]
        offset = 1.0 + 0.012 * (k - (len(variants) - 1) / 2)
        ax.errorbar(x * offset, mean, yerr=np.vstack([mean - low, high - mean]), color=colour, capsize=2,
                    marker=markers[k % len(markers)], markersize=4, linewidth=1.4,
                    linestyle="--" if variant.result.get("gradient_horizon") else "-",
                    label=f"{variant.name} ({len(variant.runs)} seed{'s' if len(variant.runs) > 1 else ''})")
    for chance in sorted(chances):
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1.0)
        ax.text(0.01, chance, f"chance {chance:g}", transform=ax.get_yaxis_transform(), fontsize=8, color="grey",
                va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(distances), [str(d) for d in sorted(distances)])
    ax.minorticks_off()
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("distance key -> query (residues)")
    ax.set_ylabel("recall accuracy")
    ax.set_title("Planted-distance recall: how far each variant carries one symbol")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _save(fig, directory, "synthetic_reach", "Synthetic reach task",
                 "protrnn synthetic: a key symbol planted d residues before a query marker in random distractors; "
                 "only the forward recurrence carrying it d steps can answer (docs/synthetic.md). Accuracy on "
                 "held-out queries, mean over seeds (bars: lowest and highest seed); dashed: a gradient horizon.")


def _last_layer_on_pair(diag: DiagnosticsResult) -> bool:
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


def top_pairs(probs: np.ndarray, observed: np.ndarray, count: int,
              min_separation: int = MIN_SEPARATION) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` highest-probability upper-triangle pairs with both residues observed (ties by i then j)."""
    rows, cols = scored_pairs(observed, min_separation)
    order = rank_pairs(probs[rows, cols], rows, cols)[:count]
    return rows[order], cols[order]


def figure_contact_map(test_set: str, protein: str, predictions: Sequence[SavedPrediction], directory: Path,
                       styles: Styles) -> Figure:
    """(d) one panel per method: predicted probabilities above the diagonal, true contacts below; the top-L
    predicted pairs marked as true (green) or false (red) positives."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    methods = [p for p in predictions if p.test_set == test_set and p.protein == protein]
    order = {name: k for k, name in enumerate(order_methods(
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
