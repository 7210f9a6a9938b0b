"""Aggregation over seeds (torch-free): one entry per model from its runs ``NAME@seedS``.

* Evaluation metrics (precision per separation bin, every metric of the tables): the mean over seeds of the
  per-seed protein means, with a two-level (hierarchical) percentile bootstrap interval: each replicate resamples
  the proteins (with replacement) and, independently, the seeds, so the interval holds both the protein sample and
  the seed-to-seed spread (:func:`hierarchical_bootstrap`). ``seed_low``/``seed_high`` add the Student-t interval of
  the per-seed means alone.
* Diagnostics (gradient and usage horizons, the fit diagnosis): mean over seeds with a Student-t interval
  (:func:`protrnn.diagnostics.fit.seed_interval`); a horizon beyond the measured range counts as the range's end,
  a lower bound, and is flagged.
* The synthetic task: accuracy per distance and the reach score per seed, mean with a t interval.

Methods without a seed tag (baselines, single runs) pass through unchanged.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protrnn.diagnostics.fit import (
    GRADIENT_HORIZON_NOISE,
    diagnose_over_seeds,
    horizon_value,
    seed_interval,
    usage_horizon_noise,
)
from protrnn.diagnostics.results import DiagnosticsResult, split_seed
from protrnn.evaluation.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_ALPHA
from protrnn.report.inputs import Evaluation, MethodResult, SyntheticRun

#: Seed of every bootstrap interval the report computes itself (replicates and level: evaluation.metrics's
#: BOOTSTRAP_RESAMPLES and INTERVAL_ALPHA).
BOOT_SEED = 0


def group_seeds(names: Sequence[str]) -> dict[str, list[tuple[int | None, str]]]:
    """``{model: [(seed, name), ...]}`` in first-seen model order, seeds ascending (untagged names: seed None)."""
    groups: dict[str, list[tuple[int | None, str]]] = {}
    for name in names:
        base, seed = split_seed(name)
        members = groups.setdefault(base, [])
        if all(existing != name for _, existing in members):
            members.append((seed, name))
    for members in groups.values():
        members.sort(key=lambda m: (m[0] is None, m[0] if m[0] is not None else 0))
    return groups


def _seed_means(values: np.ndarray) -> np.ndarray:
    """Per-seed nan-mean over proteins ``[S]`` (NaN for a seed without any value)."""
    valid = ~np.isnan(values)
    counts = valid.sum(axis=-1)
    sums = np.where(valid, values, 0.0).sum(axis=-1)
    return np.divide(sums, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def mean_over_seeds(values: np.ndarray) -> float:
    """``values [S seeds, P proteins]``: the mean over seeds of each seed's protein mean (NaN skipped; NaN when
    nothing is defined): the point estimate of :func:`hierarchical_bootstrap` and :func:`paired_difference_bootstrap`."""
    means = _seed_means(np.asarray(values, dtype=np.float64))
    return float(np.nanmean(means)) if np.isfinite(means).any() else math.nan


def _replicates(values: np.ndarray, seeds: np.ndarray, proteins: np.ndarray) -> np.ndarray:
    """Statistic of each replicate: mean over the drawn seeds of the nan-mean over the drawn proteins ``[B]``."""
    return _mean_of_seed_means(_seed_means(values[seeds[:, :, None], proteins[:, None, :]]))  # sample [B, S, P]


def _weighted_replicates(values: np.ndarray, seeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """As :func:`_replicates`, with the proteins drawn as ``weights [B, P]`` (how often each is in the replicate)."""
    sample = values[seeds]  # [B, S, P]
    w = np.where(np.isnan(sample), 0.0, weights[:, None, :])
    totals = w.sum(axis=-1)
    sums = (w * np.nan_to_num(sample)).sum(axis=-1)
    return _mean_of_seed_means(np.divide(sums, totals, out=np.full(totals.shape, np.nan), where=totals > 0))


def cluster_index(clusters: Sequence[object]) -> tuple[np.ndarray, int]:
    """Each protein's cluster as an index ``[P]`` into the ``k`` distinct labels (compared as text), and ``k``."""
    _, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    return index, int(index.max()) + 1 if index.size else 0


def cluster_weights(clusters: Sequence[object], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, P]`` weights of a cluster bootstrap: each replicate draws as many clusters as there are, with
    replacement, and every protein counts as often as its cluster was drawn (``clusters[p]``: protein p's label)."""
    index, k = cluster_index(clusters)
    draws = rng.integers(0, k, size=(n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, index]


def _mean_of_seed_means(per_seed: np.ndarray) -> np.ndarray:
    """``[B, S]`` per-seed means -> ``[B]`` their nan-mean (NaN where no seed has a value)."""
    valid = ~np.isnan(per_seed)
    counts = valid.sum(axis=1)
    sums = np.where(valid, per_seed, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def metric_seed(metric: str, base: int = BOOT_SEED) -> int:
    """The bootstrap seed of one metric's interval, fixed by its name (CRC-32), so that adding or dropping other
    metrics (a finer separation bin, say) leaves the intervals of the rest as they were."""
    return base + zlib.crc32(metric.encode("utf-8"))


def hierarchical_bootstrap(values: np.ndarray, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOT_SEED,
                           alpha: float = INTERVAL_ALPHA) -> dict[str, float]:
    """``values [S seeds, P proteins]`` (NaN = no value): mean over seeds of the protein means, with a percentile
    interval from replicates that resample proteins and seeds independently (with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    mean = mean_over_seeds(values)
    rng = np.random.default_rng(seed)
    n_seeds, n_proteins = values.shape
    stats = _replicates(values, rng.integers(0, n_seeds, size=(n_boot, n_seeds)),
                        rng.integers(0, n_proteins, size=(n_boot, n_proteins)))
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return {"mean": mean, "low": math.nan, "high": math.nan}
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"mean": mean, "low": float(low), "high": float(high)}


def paired_difference_bootstrap(variant: np.ndarray, reference: np.ndarray, n_boot: int = BOOTSTRAP_RESAMPLES,
                                seed: int = BOOT_SEED, alpha: float = INTERVAL_ALPHA,
                                clusters: Sequence[object] | None = None) -> dict[str, Any]:
    """Difference ``variant - reference`` of the seed-and-protein means of two models scored on the same proteins
    (columns paired): each replicate draws one protein resample for both and each model's seeds independently.

    With ``clusters`` (one label per protein, e.g. its homology cluster) each replicate resamples whole clusters
    instead of proteins (:func:`cluster_weights`), so related proteins, whose differences go together, count as
    the one sample they are; the point estimate is still the mean over proteins.
    """
    a, b = np.asarray(variant, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    out: dict[str, Any] = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": [a.shape[0], b.shape[0]],
                           "proteins": int(a.shape[1]) if a.ndim == 2 else 0,
                           "method": "bootstrap over proteins (paired) and seeds"}
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        return out
    if clusters is not None and len(clusters) != a.shape[1]:
        raise ValueError(f"{len(clusters)} cluster labels for {a.shape[1]} proteins")
    out["mean"] = mean_over_seeds(a) - mean_over_seeds(b)
    rng = np.random.default_rng(seed)
    if clusters is None:
        proteins = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
        stats = (_replicates(a, rng.integers(0, a.shape[0], size=(n_boot, a.shape[0])), proteins)
                 - _replicates(b, rng.integers(0, b.shape[0], size=(n_boot, b.shape[0])), proteins))
    else:
        weights = cluster_weights(clusters, n_boot, rng)
        out.update(clusters=cluster_index(clusters)[1],
                   method="bootstrap over clusters of proteins (paired) and seeds")
        stats = (_weighted_replicates(a, rng.integers(0, a.shape[0], size=(n_boot, a.shape[0])), weights)
                 - _weighted_replicates(b, rng.integers(0, b.shape[0], size=(n_boot, b.shape[0])), weights))
    stats = stats[np.isfinite(stats)]
    if stats.size:
        low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
        out.update(low=float(low), high=float(high))
    return out


def protein_matrix(evaluations: Sequence[Evaluation], names: Sequence[str], test_set: str | None,
                   key: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """``[len(names), P]`` values of ``key`` for the proteins every name was scored on (all test sets when
    ``test_set`` is None; a protein is the pair (test set, id)), and those proteins in order."""
    by_name: dict[str, dict[tuple[str, str], float]] = {name: {} for name in names}
    for evaluation in evaluations:
        for row in evaluation.rows:
            name = row.get("method")
            if name in by_name and (test_set is None or row.get("test_set") == test_set):
                value = row.get(key, math.nan)
                by_name[name][(str(row["test_set"]), str(row["protein"]))] = (
                    math.nan if value is None else float(value))
    common = None
    for values in by_name.values():
        keys = set(values)
        common = keys if common is None else common & keys
    proteins = sorted(common or set())
    matrix = np.array([[by_name[name][p] for p in proteins] for name in names], dtype=np.float64)
    return matrix.reshape(len(names), len(proteins)), proteins


def aggregate_results(results: Sequence[MethodResult], evaluations: Sequence[Evaluation],
                      n_boot: int = BOOTSTRAP_RESAMPLES) -> list[MethodResult]:
    """The merged results with every model's seeded runs replaced by one result per (model, test set): metric means
    over seeds with hierarchical intervals (module docstring); other methods unchanged, order kept."""
    groups = group_seeds([r.method for r in results if r.kind != "baseline"])
    seeded = {base: [name for _, name in members] for base, members in groups.items()
              if any(seed is not None for seed, _ in members)}
    member_of = {name: base for base, names in seeded.items() for name in names}
    out: list[MethodResult] = []
    done: set[tuple[str, str]] = set()
    for result in results:
        base = member_of.get(result.method)
        if base is None:
            out.append(result)
            continue
        key = (base, result.test_set)
        if key in done:
            continue
        done.add(key)
        names = [n for n in seeded[base] if any(r.method == n and r.test_set == result.test_set for r in results)]
        seeds = [split_seed(n)[1] for n in names]
        metric_keys = list(dict.fromkeys(k for r in results if r.method in names and r.test_set == result.test_set
                                         for k in r.metrics))
        metrics: dict[str, dict[str, Any]] = {}
        n_proteins = 0
        for metric in metric_keys:
            matrix, proteins = protein_matrix(evaluations, names, result.test_set, metric)
            n_proteins = max(n_proteins, len(proteins))
            if matrix.shape[1] == 0:
                continue
            stats: dict[str, Any] = hierarchical_bootstrap(matrix, n_boot=n_boot, seed=metric_seed(metric))
            per_seed = _seed_means(matrix)
            spread = seed_interval(per_seed.tolist())
            stats.update(n=int((~np.isnan(matrix)).any(axis=0).sum()), seed_low=spread["low"],
                         seed_high=spread["high"], seed_values=spread["values"])
            metrics[metric] = stats
        out.append(MethodResult(method=base, kind=result.kind, test_set=result.test_set, n_proteins=n_proteins,
                                metrics=metrics, source=result.source, seeds=tuple(s for s in seeds if s is not None),
                                members=tuple(names)))
    return out


def usage_noise(run: DiagnosticsResult) -> float:
    """Quantisation noise of one run's usage horizon on its radius grid (0 without a usage measurement)."""
    if run.usage is None:
        return 0.0
    measured = [int(d) for d, c in zip(run.usage.distances, run.usage.count, strict=True) if c > 0]
    return usage_horizon_noise(run.usage.horizon, measured)


@dataclass
class ModelDiagnostics:
    """One model's diagnostics over its seeds: horizons as mean with a t interval, the fit diagnosis over seeds."""

    model: str
    runs: list[DiagnosticsResult]
    seeds: list[int | None]
    gradient: dict[str, Any]
    usage: dict[str, Any] | None
    diagnosis: dict[str, Any] | None
    max_distance: int
    usage_max: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.runs)


def aggregate_diagnostics(diagnostics: Sequence[DiagnosticsResult]) -> list[ModelDiagnostics]:
    """Group diagnostics by model (``NAME@seedS``) and summarise each group."""
    groups = group_seeds([d.model for d in diagnostics])
    by_name: dict[str, DiagnosticsResult] = {}
    for diag in diagnostics:
        by_name.setdefault(diag.model, diag)
    out = []
    for base, members in groups.items():
        runs = [by_name[name] for _, name in members]
        cap = max(r.flow.max_distance for r in runs)
        # a seed beyond its measured range counts as that range's end (a lower bound), not as max_distance
        gradient = seed_interval([horizon_value(r.horizon, r.range_end) for r in runs],
                                 noise_sd=GRADIENT_HORIZON_NOISE)
        gradient["range_end"] = min((r.range_end for r in runs if r.horizon is None),
                                    default=max(r.range_end for r in runs))
        gradient["censored"] = sum(r.horizon is None for r in runs)
        gradient["horizons"] = [r.horizon for r in runs]
        usage = None
        usage_max = None
        with_usage = [r for r in runs if r.usage is not None]
        if with_usage:
            usage_max = max(r.usage.range_end for r in with_usage)  # type: ignore[union-attr]
            usage = seed_interval([horizon_value(r.usage.horizon, r.usage.range_end)  # type: ignore[union-attr]
                                   for r in with_usage],
                                  noise_sd=float(np.mean([usage_noise(r) for r in with_usage])))
            usage["censored"] = sum(r.usage.horizon is None for r in with_usage)  # type: ignore[union-attr]
            usage["horizons"] = [r.usage.horizon for r in with_usage]  # type: ignore[union-attr]
            usage["range_end"] = min((r.usage.range_end for r in with_usage  # type: ignore[union-attr]
                                      if r.usage.horizon is None), default=usage_max)  # type: ignore[union-attr]
        diagnosis = diagnose_over_seeds(runs) if any(r.diagnosis is not None for r in runs) else None
        training = dict(runs[0].training)
        if len(runs) > 1:
            training["seeds"] = [r.training.get("seed") for r in runs]
            training["global_steps"] = [r.training.get("global_step") for r in runs]
        out.append(ModelDiagnostics(model=base, runs=runs, seeds=[s for s, _ in members], gradient=gradient,
                                    usage=usage, diagnosis=diagnosis, max_distance=cap, usage_max=usage_max,
                                    config=dict(runs[0].config), training=training))
    return out


@dataclass
class SyntheticVariant:
    """One synthetic-task variant over its seeds."""

    name: str
    runs: list[SyntheticRun]
    distances: list[int]
    chance: float
    accuracy: np.ndarray          # [seeds, distances]
    reach: list[int | None]
    score: list[float]
    score_noise: float = 0.0

    @property
    def result(self) -> Mapping[str, Any]:
        return self.runs[0].result


def reach_score_noise(result: Mapping[str, Any]) -> float:
    """Binomial standard error of :func:`reach_score` from the held-out queries of each distance: the measurement
    noise of one run's score, a floor under the seed spread."""
    chance = float(result["chance"])
    rows = result["distances"]
    if not rows:
        return 0.0
    default_n = int((result.get("settings") or {}).get("eval_queries", 0) or 0)
    total = 0.0
    for row in rows:
        n = int(row.get("n_queries", default_n) or 0)
        if n > 0:
            acc = float(row["accuracy"])
            total += acc * (1.0 - acc) / n
    return math.sqrt(total) / (len(rows) * (1.0 - chance))


def reach_score(result: Mapping[str, Any]) -> float:
    """Mean over the measured distances of ``(accuracy - chance) / (1 - chance)``: 1 = perfect recall at every
    distance, 0 = chance everywhere (the continuous summary the findings compare)."""
    chance = float(result["chance"])
    values = [(float(r["accuracy"]) - chance) / (1.0 - chance) for r in result["distances"]]
    return float(np.mean(values)) if values else math.nan


def aggregate_synthetic(runs: Sequence[SyntheticRun]) -> list[SyntheticVariant]:
    """Group synthetic results by variant name; accuracy per distance over the distances every seed measured."""
    groups: dict[str, list[SyntheticRun]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    out = []
    for name, members in groups.items():
        members.sort(key=lambda r: r.seed)
        common = sorted(set.intersection(*[{int(row["distance"]) for row in m.result["distances"]}
                                           for m in members]))
        accuracy = np.array([[next(float(row["accuracy"]) for row in m.result["distances"]
                                   if int(row["distance"]) == d) for d in common] for m in members])
        out.append(SyntheticVariant(name=name, runs=members, distances=common, chance=float(members[0].result["chance"]),
                                    accuracy=accuracy.reshape(len(members), len(common)),
                                    reach=[m.result.get("reach") for m in members],
                                    score=[reach_score(m.result) for m in members],
                                    score_noise=float(np.mean([reach_score_noise(m.result) for m in members]))))
    return out


__all__ = ["BOOT_SEED", "ModelDiagnostics", "SyntheticVariant", "aggregate_diagnostics",
           "aggregate_results", "aggregate_synthetic", "group_seeds", "hierarchical_bootstrap",
           "mean_over_seeds", "metric_seed", "paired_difference_bootstrap", "protein_matrix", "reach_score", "reach_score_noise",
           "usage_noise"]
