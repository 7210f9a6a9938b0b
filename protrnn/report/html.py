"""The report's HTML: sections, tables and :func:`build_report`, which draws every figure and writes one
self-contained ``OUTDIR/report.html`` that answers "how far does each recurrent model see?".

``report.html`` embeds every figure as a base64 PNG and its CSS inline, so it opens offline and links nothing;
``OUTDIR/figures`` holds the same figures as PNG and SVG for papers and slides; ``OUTDIR/summary.json`` holds the
findings table and every per-model number the report states (format ``protrnn-report-summary``). Runs of one model
with several seeds (``NAME@seedS``) are reported as the model: means over seeds with 95 % intervals
(:mod:`protrnn.report.aggregate`). Sections:

0. findings: each knob's effect on reach, usage and gradient horizons and long-range precision, and which matter
   (:mod:`protrnn.report.findings`);
1. how far each model sees: gradient and usage horizons, diagnosis, long-range precision against the baselines;
2. precision (top-L/5) by separation bin for every method, one panel per test set, bootstrap error bars;
3. gradient sensitivity versus distance per model (log scale) with the effective horizons marked;
4. context usage versus radius (usage horizons) and precision under ablation;
5. the synthetic planted-distance task;
6. training and validation curves per run;
7. predicted versus true contact maps (prediction above the diagonal, truth below, top-L TP/FP marked);
8. every metric (mean and bootstrap interval) per method and test set;
9. test-set overlap removed by ``prepare`` (never silent).

The report and the figure folder are replaced as a whole on success, so a rerun never mixes old and new figures.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protrnn import __version__
from protrnn.diagnostics.fit import seed_interval
from protrnn.diagnostics.results import DiagnosticsResult
from protrnn.errors import InputError
from protrnn.evaluation.metrics import INTERVAL_PERCENT
from protrnn.report.aggregate import (
    ModelDiagnostics,
    SyntheticVariant,
    aggregate_diagnostics,
    aggregate_results,
    aggregate_synthetic,
)
from protrnn.report.figures import (
    Figure,
    Styles,
    all_censored,
    figure_contact_map,
    figure_precision_by_separation,
    figure_sensitivity,
    figure_synthetic,
    figure_training_curves,
    figure_usage,
    group_horizon_text,
)
from protrnn.report.findings import MEASURE_TITLES, MEASURES, PRECISION_KEY, build_findings, excludes_zero
from protrnn.report.inputs import (
    ALIGNMENT_METHODS,
    Evaluation,
    MethodResult,
    ReportInputs,
    chance_levels,
    choose_proteins,
    find_predictions,
    horizon_text,
    merge_results,
    number,
    order_methods,
)
from protrnn.utils.io import atomic_write, swapped_directory

SUMMARY_FORMAT = "protrnn-report-summary"
#: 2 since 2026-12-07: usage horizons (and ``usage_horizon.max_distance``, the largest measured radius + 1, which a
#: censored horizon exceeds) count the first distance no longer read, one more than version 1 stated.
SUMMARY_FORMAT_VERSION = 2
SUMMARY_NAME = "summary.json"

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
#: Leakage rows shown in the HTML per file (all are in the TSV).
MAX_LEAKAGE_ROWS = 200
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
    if not stats or not math.isfinite(number(stats.get("mean"))):
        return "&ndash;"
    text = f"{stats['mean']:.{digits}f}"
    low, high = number(stats.get("low")), number(stats.get("high"))
    if math.isfinite(low) and math.isfinite(high):
        text += f" <span class='small'>[{low:.{digits}f}, {high:.{digits}f}]</span>"
    return text


def _figure_html(figure: Figure | None) -> str:
    if figure is None:
        return ""
    data = base64.b64encode(figure.png).decode("ascii")
    return (f"<figure id='{_e(figure.stem)}'><img alt='{_e(figure.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)} <span class='small'>Files: "
            f"figures/{_e(figure.stem)}.png, figures/{_e(figure.stem)}.svg</span></figcaption></figure>")


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def _effect_cell(effect: Mapping[str, Any] | None, digits: int) -> str:
    """``+12.0 [4.0, 20.0]`` (bold when the interval excludes 0), ``n/i`` hints for missing intervals."""
    if not effect or not math.isfinite(number(effect.get("mean"))):
        return f"<td class='small'>{_e(effect.get('note', 'not measured')) if effect else 'not measured'}</td>"
    text = _signed(effect["mean"], digits)
    low, high = number(effect.get("low")), number(effect.get("high"))
    if math.isfinite(low) and math.isfinite(high):
        text += f" <span class='small'>[{low:+.{digits}f}, {high:+.{digits}f}]</span>"
    else:
        text += " <span class='small'>(no interval: one seed)</span>"
    bound = effect.get("bound")
    if bound == "lower":
        text += " <span class='small'>(at least: variant beyond its measured range)</span>"
    elif bound == "upper":
        text += " <span class='small'>(at most: reference beyond its measured range)</span>"
    elif bound == "both":
        text += " <span class='small'>(both beyond their measured ranges: sign unknown)</span>"
    return f"<td><b>{text}</b></td>" if excludes_zero(effect) else f"<td>{text}</td>"


_EFFECT_DIGITS = {"reach": 2, "usage": 1, "gradient": 1, "precision": 3}


def _findings_section(findings: Mapping[str, Any]) -> str:
    """Section 0: the knob table, the sentence and the rule."""
    rows = findings.get("_rows", [])
    if not rows:
        return "<p class='note'>No runs to compare.</p>"
    head = "".join(f"<th>{_e(MEASURE_TITLES[m])}<br><span class='small'>variant - reference</span></th>"
                   for m in MEASURES)
    lines = [f"<table id='findings'><tr><th class='l'>Knob</th><th class='l'>Change</th><th class='l'>Runs</th>{head}"
             "<th class='l'>Verdict</th></tr>"]
    for row in rows:
        runs = []
        if row.grid:
            runs.append(f"grid: {_e(row.grid[0])} vs {_e(row.grid[1])}")
        if row.synthetic:
            runs.append(f"synthetic: {_e(row.synthetic[0])} vs {_e(row.synthetic[1])}")
        if not row.grid and not row.synthetic:
            lines.append(f"<tr><td class='l'><b>{_e(row.knob)}</b></td><td class='l small' colspan='{3 + len(MEASURES)}'>"
                         f"{_e(row.note)}</td></tr>")
            continue
        cells = "".join(_effect_cell(row.effects.get(m), _EFFECT_DIGITS[m]) for m in MEASURES)
        verdict = row.verdict
        if verdict == "matters":
            verdict += " (" + ", ".join(row.matters_for()) + ")"
        change = _e(row.change) + (f"<br><i>{_e(row.note)}</i>" if row.note else "")
        lines.append(f"<tr><td class='l'><b>{_e(row.knob)}</b></td><td class='l small'>{change}</td>"
                     f"<td class='l small'>{'<br>'.join(runs)}</td>{cells}<td class='l'>{_e(verdict)}</td></tr>")
    lines.append("</table>")
    left_out = "".join(f"<p class='note'>Not compared: <b>{_e(name)}</b>, {_e(why)}.</p>"
                       for name, why in (findings.get("not_compared") or {}).items())
    return ("".join(lines) + f"<p class='ok'><b>{_e(findings.get('sentence', ''))}</b></p>" + left_out +
            f"<p class='small'>Reference: <b>{_e(findings.get('reference'))}</b>. {_e(findings.get('rule', ''))} "
            "Horizons in residues; reach score in [0, 1]; precision as a fraction. Bold: the interval excludes 0. "
            "&ge;: some run's horizon lay beyond the measured range (counted at the range's end).</p>")


def _reach_section(results: Sequence[MethodResult], groups: Sequence[ModelDiagnostics]) -> str:
    """Section 1: one row per model: horizons, diagnosis and long-range precision against the best baseline."""
    by_key = {(r.method, r.test_set): r for r in results}
    test_sets = list(dict.fromkeys(r.test_set for r in results))
    models = [m for m in order_methods(results) if any(r.method == m and r.kind != "baseline" for r in results)]
    diag_by_model = {g.model: g for g in groups}
    for name in diag_by_model:
        if name not in models:
            models.append(name)
    if not models:
        return "<p class='note'>No model results or diagnostics were given: nothing to say about reach.</p>"
    # Compare against single-sequence baselines only: FreeContact uses an alignment, which no model here sees.
    baselines = [m for m in order_methods(results) if m not in ALIGNMENT_METHODS
                 and any(r.method == m and r.kind == "baseline" for r in results)]
    seeded = any(g.n_seeds > 1 for g in groups) or any(len(r.seeds) > 1 for r in results)
    head = ["Model", "Seeds", "Effective horizon", "Usage horizon", "Diagnosis"]
    head += [f"Long P@L/5 ({_e(t)})" for t in test_sets]
    lines = ["<table><tr>" + "".join(f"<th class='l'>{h}</th>" if k < 5 else f"<th>{h}</th>"
                                      for k, h in enumerate(head)) + "</tr>"]
    sentences = []
    for model in models:
        group = diag_by_model.get(model)
        horizon = group_horizon_text(group) if group is not None else "not measured"
        usage = group_horizon_text(group, "usage") if group is not None else "not measured"
        label = "&ndash;"
        if group is not None and group.diagnosis is not None:
            label = _e(group.diagnosis["label"])
            if group.diagnosis["n_seeds"] > 1:
                label += (f" <span class='small'>({group.diagnosis['agreeing_seeds']} of "
                          f"{group.diagnosis['n_seeds']} seeds)</span>")
        seeds = next((len(r.seeds) for r in results if r.method == model and r.seeds), None)
        seeds = seeds or (group.n_seeds if group is not None else 1)
        cells = [f"<td class='l'><b>{_e(model)}</b></td>", f"<td class='l'>{seeds}</td>",
                 f"<td class='l'>{_e(horizon)}</td>", f"<td class='l'>{_e(usage)}</td>", f"<td class='l'>{label}</td>"]
        for test_set in test_sets:
            result = by_key.get((model, test_set))
            cells.append(f"<td>{_fmt(result.metrics.get('long/P@L/5')) if result else '&ndash;'}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
        parts = [f"<b>{_e(model)}</b>: "]
        if group is not None:
            fraction = group.runs[0].fraction
            if all_censored(group.gradient):
                parts.append(f"input sensitivity stays above {fraction:g} of its peak over the whole measured range "
                             f"(effective horizon {_e(horizon)})")
            else:
                parts.append(f"input sensitivity falls below {fraction:g} of its peak at {_e(horizon)}")
            if group.usage is not None and all_censored(group.usage):
                parts.append(f"; replacing context still changes its predictions at the largest radius measured "
                             f"(usage horizon {_e(usage)})")
            elif group.usage is not None:
                parts.append(f"; replacing context beyond the usage horizon ({_e(usage)}) no longer changes its "
                             "predictions")
            if group.diagnosis is not None:
                parts.append(f" ({_e(group.diagnosis['summary'])})")
            parts.append(". ")
        for test_set in test_sets:
            result = by_key.get((model, test_set))
            if result is None:
                continue
            mine = result.metrics.get("long/P@L/5", {})
            best = max((by_key[(b, test_set)] for b in baselines if (b, test_set) in by_key),
                       key=lambda r: number(r.metrics.get("long/P@L/5", {}).get("mean")), default=None)
            text = f"On {_e(test_set)}, long-range (|i-j| >= 24) top-L/5 precision is {_fmt(mine)}"
            if best is not None:
                theirs = best.metrics.get("long/P@L/5", {})
                verdict = ""
                if math.isfinite(number(mine.get("low"))) and math.isfinite(number(theirs.get("high"))):
                    if mine["low"] > theirs["high"]:
                        verdict = ": above it, intervals apart"
                    elif number(mine.get("high")) < number(theirs.get("low")):
                        verdict = ": below it, intervals apart"
                    else:
                        verdict = ": intervals overlap"
                text += (f" against {_fmt(theirs)} for the best single-sequence baseline ({_e(best.method)})"
                         f"{verdict}")
            parts.append(text + ". ")
        sentences.append("<li>" + "".join(parts) + "</li>")
    lines.append("</table>")
    note = (f"<p class='small'>Several seeds: horizons are the mean over seeds with a {INTERVAL_PERCENT} Student-t "
            f"interval; precision is the mean over seeds of the protein means, with a {INTERVAL_PERCENT} bootstrap "
            "interval that resamples proteins and seeds; the diagnosis is the rule applied to the seed means of its "
            "inputs (how many seeds' own labels agree in brackets).</p>") if seeded else ""
    return "".join(lines) + note + "<ul>" + "".join(sentences) + "</ul>"


def _usage_table(groups: Sequence[ModelDiagnostics]) -> str:
    """Per run: usage horizon, U(d) at the smallest radius, the noise floor and precision intact vs fully ablated."""
    rows = ["<table><tr><th class='l'>Run</th><th>Usage horizon</th><th>Gradient horizon</th><th>U(d_min)</th>"
            "<th>Mean |logit|</th><th>Pairs</th><th>Long P@L/5 intact</th><th>at d_min</th><th class='l'>Background"
            "</th></tr>"]
    for group in groups:
        for run in group.runs:
            usage = run.usage
            if usage is None:
                continue
            horizon = f"&gt; {usage.range_end}" if usage.horizon is None else str(usage.horizon)
            gradient = f"&gt; {run.range_end}" if run.horizon is None else str(run.horizon)
            precision = usage.precision
            intact = f"{precision.original:.3f}" if precision is not None else "&ndash;"
            ablated = f"{precision.ablated[0]:.3f}" if precision is not None else "&ndash;"
            rows.append(f"<tr><td class='l'>{_e(run.model)}</td><td>{horizon}</td><td>{gradient}</td>"
                        f"<td>{usage.mean_abs_delta[0]:.3g}</td><td>{usage.mean_abs_logit:.3g}</td>"
                        f"<td>{usage.n_pairs}</td><td>{intact}</td><td>{ablated}</td>"
                        f"<td class='l'>{_e(usage.background)}, {usage.draws} draws</td></tr>")
    rows.append("</table>")
    return "".join(rows) if len(rows) > 2 else ""


def _synthetic_section(variants: Sequence[SyntheticVariant], figure: Figure | None) -> str:
    if not variants:
        return ("<p>No synthetic results were given (<code>--synthetic</code>; the pipeline runs "
                "<code>protrnn synthetic</code> for every variant of its config).</p>")
    distances = sorted(set.intersection(*[set(v.distances) for v in variants]))
    head = "".join(f"<th>d = {d}</th>" for d in distances)
    rows = [f"<table><tr><th class='l'>Variant</th><th>Seeds</th><th>Reach (per seed)</th><th>Reach score</th>{head}"
            "</tr>"]
    for variant in variants:
        score = seed_interval(variant.score)
        score_text = f"{score['mean']:.2f}" + (f" <span class='small'>[{score['low']:.2f}, {score['high']:.2f}]</span>"
                                               if math.isfinite(score["low"]) else "")
        cells = []
        for d in distances:
            column = variant.accuracy[:, variant.distances.index(d)]
            cells.append(f"<td>{column.mean():.2f}" + (f" <span class='small'>[{column.min():.2f}, {column.max():.2f}]"
                                                       "</span>" if len(column) > 1 else "") + "</td>")
        reach = ", ".join("&lt; min" if r is None else str(r) for r in variant.reach)
        rows.append(f"<tr><td class='l'>{_e(variant.name)}</td><td>{len(variant.runs)}</td><td>{reach}</td>"
                    f"<td>{score_text}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return (_figure_html(figure) + "".join(rows)
            + "<p class='small'>Reach: the largest distance at which every distance up to it is above chance (the "
              f"lower end of the {INTERVAL_PERCENT} Wilson interval above 1/K). Reach score: mean over distances of "
              f"(accuracy - chance) / (1 - chance), mean over seeds with a {INTERVAL_PERCENT} t interval. Accuracy "
              "cells: mean [lowest, highest] seed.</p>")


def _diagnosis_section(diagnostics: Sequence[DiagnosticsResult]) -> str:
    if not diagnostics:
        return ""
    rows = ["<table><tr><th class='l'>Run</th><th>Horizon</th><th>Horizon (anchor rule)</th>"
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


def _metrics_tables(results: Sequence[MethodResult], groups: Sequence[ModelDiagnostics],
                    evaluations: Sequence[Evaluation] = ()) -> str:
    """Section 8: headline metrics per method and test set, then every metric in a collapsible table."""
    if not results:
        return "<p>No evaluation results were given.</p>"
    labels = {g.model: (g.diagnosis["label"] if g.diagnosis else "&ndash;") for g in groups}
    order = {m: k for k, m in enumerate(order_methods(results))}
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
    full = [f"<details><summary>All metrics (mean [{INTERVAL_PERCENT} bootstrap interval] over proteins; n = "
            "proteins with a value)</summary><table><tr><th class='l'>Metric</th>"
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
    for synth in inputs.synthetic:
        command = synth.result.get("command") or "(not recorded)"
        items.append(f"<li>synthetic {_e(synth.name)} seed {synth.seed}: {_e(synth.path)} "
                     f"<code class='small'>{_e(command)}</code></li>")
    for path, _ in inputs.leakage:
        items.append(f"<li>leakage table {_e(path)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


@dataclass
class ReportResult:
    """What :func:`build_report` wrote."""

    html: Path
    figures: list[Path]
    summary: Path | None = None


def _stats(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in value.items()
            if k in ("mean", "low", "high", "n", "sd", "values", "seed_low", "seed_high", "seed_values", "censored",
                     "horizons", "range_end")}


def summary_document(results: Sequence[MethodResult], groups: Sequence[ModelDiagnostics],
                     variants: Sequence[SyntheticVariant], findings: Mapping[str, Any]) -> dict[str, Any]:
    """What ``summary.json`` holds: the findings and every per-model number of the report (strict JSON)."""
    keys = ("medium_long/P@L/5", "long/P@L/5", "long/P@L/1", "medium/P@L/5", "short/P@L/5")
    models: dict[str, Any] = {}
    baselines: dict[str, Any] = {}
    for r in results:
        target = baselines if r.kind == "baseline" else models
        entry = target.setdefault(r.method, {"precision": {}})
        if r.seeds:
            entry["seeds"] = list(r.seeds)
        entry["precision"][r.test_set] = {
            "n_proteins": r.n_proteins,
            **{k: _stats(r.metrics[k]) for k in r.metrics if k in keys or (k.startswith("bin/")
                                                                            and k.endswith("/P@L/5"))}}
    for g in groups:
        entry = models.setdefault(g.model, {"precision": {}})
        entry.update(seeds=g.seeds, gradient_horizon={**_stats(g.gradient), "max_distance": g.max_distance},
                     usage_horizon=None if g.usage is None else {**_stats(g.usage), "max_distance": g.usage_max},
                     diagnosis=None if g.diagnosis is None else {
                         k: g.diagnosis[k] for k in ("label", "summary", "seed_labels", "agreeing_seeds", "n_seeds")}
                     | {"inputs": {k: _stats(v) for k, v in g.diagnosis["inputs"].items()}},
                     training=g.training, config=g.config)
    synthetic = {}
    for v in variants:
        synthetic[v.name] = {"seeds": [r.seed for r in v.runs], "distances": v.distances, "chance": v.chance,
                             "accuracy": {"mean": v.accuracy.mean(axis=0).tolist(), "min": v.accuracy.min(axis=0).tolist(),
                                          "max": v.accuracy.max(axis=0).tolist(), "per_seed": v.accuracy.tolist()},
                             "reach": v.reach, "score": _stats(seed_interval(v.score)),
                             "model": v.result.get("model"), "settings": v.result.get("settings")}
    document = {"format": SUMMARY_FORMAT, "format_version": SUMMARY_FORMAT_VERSION,
                "findings": {k: v for k, v in findings.items() if not k.startswith("_")},
                "precision_key": PRECISION_KEY, "models": models, "baselines": baselines, "synthetic": synthetic}
    return _json_ready(document)


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_outdir(outdir: Path) -> None:
    """Refuse a folder whose ``summary.json`` is not a report's (an evaluation folder, say): the report writes its own
    summary.json there and would destroy the other."""
    existing = outdir / SUMMARY_NAME
    if not existing.is_file():
        return
    try:
        found = json.loads(existing.read_text(encoding="utf-8")).get("format")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        found = None
    if found != SUMMARY_FORMAT:
        raise InputError(f"holds a {SUMMARY_NAME} that is not a report's (format {found!r}), which the report would "
                         "replace: write the report to another folder", path=outdir)


def build_report(inputs: ReportInputs, outdir: str | Path, *, title: str = "protrnn report",
                 log: Callable[[str], None] = print) -> ReportResult:
    """Draw every figure into ``OUTDIR/figures``, write ``OUTDIR/report.html`` (both replaced whole) and
    ``OUTDIR/summary.json``."""
    outdir = Path(outdir)
    _check_outdir(outdir)
    results = aggregate_results(merge_results(inputs.evaluations), inputs.evaluations)
    groups = aggregate_diagnostics(inputs.diagnostics)
    variants = aggregate_synthetic(inputs.synthetic)
    members = {r.method: list(r.members) or [r.method] for r in results if r.kind != "baseline"}
    known = list(dict.fromkeys([*(g.model for g in groups), *members, *(v.name for v in variants)]))
    if inputs.reference is not None and inputs.reference not in known:  # every knob had read "not measured"
        raise InputError(f"--reference {inputs.reference!r}: no model or synthetic variant of that name; the inputs "
                         f"have {', '.join(known) or 'none'}")
    findings = build_findings(groups, variants, inputs.evaluations, inputs.reference, members)
    model_names = [m for m in order_methods(results) if any(r.method == m and r.kind != "baseline"
                                                            for r in results)]
    model_names += [g.model for g in groups if g.model not in model_names]
    model_names += [r.name for r in inputs.runs if r.name not in model_names]
    styles = Styles(model_names)
    predictions = find_predictions(inputs.evaluations)
    maps = choose_proteins(predictions, inputs.proteins)
    seeded = any(len(r.seeds) > 1 for r in results)
    with swapped_directory(outdir / "figures") as staging:
        precision = figure_precision_by_separation(results, staging, styles, chance_levels(inputs.evaluations))
        sensitivity = figure_sensitivity(groups, staging, styles)
        usage = figure_usage(groups, staging, styles)
        synthetic = figure_synthetic(variants, staging, styles)
        curves = figure_training_curves(inputs.runs, staging, styles)
        contact_maps = [figure_contact_map(t, p, predictions, staging, styles) for t, p in maps]
        figures = [f for f in (precision, sensitivity, usage, synthetic, curves, *contact_maps) if f is not None]
        body = [f"<h1>{_e(title)}</h1>",
                f"<p class='small'>protrnn {__version__}, generated {time.strftime('%Y-%m-%d %H:%M')}. "
                "Contacts: C-beta (C-alpha for Gly) &lt; 8 &Aring;; pairs with |i - j| &lt; 6 are not scored; "
                "short 6-11, medium 12-23, long &ge; 24, medium+long &ge; 12; top-L/k over observed residues, "
                f"L = chain length; intervals are {INTERVAL_PERCENT} percentile bootstraps over proteins"
                + (" (and over seeds, for models with several seeds)" if seeded else "") + ".</p>",
                "<h2>Findings: which knobs move how far a model sees</h2>", _findings_section(findings),
                "<h2>1. How far does each recurrent model see?</h2>", _reach_section(results, groups),
                "<h2>2. Precision by sequence separation</h2>",
                _figure_html(precision) or "<p>No evaluation results were given (<code>--evaluation</code>).</p>",
                "<h2>3. Gradient sensitivity vs distance</h2>",
                (_figure_html(sensitivity) + _diagnosis_section(inputs.diagnostics))
                if sensitivity else "<p>No diagnostics were given (<code>--diagnostics</code>).</p>",
                "<h2>4. Context usage: what the trained models read</h2>",
                (_figure_html(usage) + _usage_table(groups)) if usage
                else "<p>No usage measurement in the diagnostics (<code>protrnn diagnose</code> without "
                     "<code>--no-usage</code>).</p>",
                "<h2>5. Synthetic reach task</h2>", _synthetic_section(variants, synthetic),
                "<h2>6. Training and validation curves</h2>",
                _figure_html(curves) or "<p>No training runs were given (<code>--runs</code>).</p>",
                "<h2>7. Predicted vs true contact maps</h2>",
                "".join(_figure_html(f) for f in contact_maps)
                or "<p>No saved predictions (run <code>protrnn evaluate --save-predictions N</code>).</p>",
                "<h2>8. All metrics</h2>", _metrics_tables(results, groups, inputs.evaluations),
                "<h2>9. Test-set overlap and leakage removed</h2>",
                _leakage_section(inputs.leakage, inputs.evaluations),
                "<h2>Sources</h2>", _sources_section(inputs)]
        document = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                    f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
                    + "\n".join(body) + "\n</body></html>\n")
        with atomic_write(outdir / "report.html", encoding="utf-8") as handle:
            handle.write(document)
    with atomic_write(outdir / SUMMARY_NAME, encoding="utf-8") as handle:
        json.dump(summary_document(results, groups, variants, findings), handle, indent=1, allow_nan=False)
        handle.write("\n")
    figure_paths = [outdir / "figures" / f"{f.stem}.{ext}" for f in figures for ext in ("png", "svg")]
    log(f"protrnn report: wrote {outdir / 'report.html'} with {len(figures)} figures and {outdir / SUMMARY_NAME}")
    return ReportResult(html=outdir / "report.html", figures=figure_paths, summary=outdir / SUMMARY_NAME)
