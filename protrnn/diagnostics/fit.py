"""From measurements to a verdict, torch-free: the effective-horizon rule, the reference (base-rate) loss, length
matching of losses and the under-/over-fitting diagnosis.

:func:`effective_horizon` turns a sensitivity profile into one number; :func:`summarise` applies it to every profile of
a :class:`~protrnn.diagnostics.results.GradientFlow`; :func:`diagnose_fit` combines the horizon with training and
validation losses. docs/diagnostics.md states every rule and threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.data.chain import ProteinChain
from protrnn.diagnostics.results import (
    BALANCED,
    DEFAULT_FRACTION,
    DEFAULT_USAGE_FRACTION,
    OVERFIT,
    OVERFIT_LONG_MEMORY,
    UNDERFIT,
    UNDERFIT_VANISHING,
    UNDETERMINED,
    Diagnosis,
    DiagnosticsResult,
    DistanceProfile,
    FitThresholds,
    GradientFlow,
    LossByLength,
    UsageProfile,
)
from protrnn.errors import InputError
from protrnn.evaluation.metrics import INTERVAL_ALPHA

#: Two-sided level of every interval over seeds (evaluation.metrics.INTERVAL_ALPHA: 95 %).
INTERVAL_LEVEL = 1.0 - INTERVAL_ALPHA


def effective_horizon(profile: DistanceProfile, fraction: float = DEFAULT_FRACTION, *, smooth: int = 5,
                      min_count: int = 1) -> int | None:
    """The distance at which sensitivity has fallen for good below ``fraction`` of its peak.

    Rule: keep distances measured at least ``min_count`` times; the peak is the largest (unsmoothed) ``mean``; smooth
    ``mean`` with a centred running median over ``smooth`` measured points, ``smooth // 2`` on each side (an even
    ``smooth`` acts as the next odd one; a median ignores isolated spikes yet keeps a step, such as a truncation cut,
    exactly where it is); the horizon is the smallest distance d beyond the peak such
    that the smoothed value is below ``fraction * peak`` at d and at every measured distance after d. ``None`` when
    the smoothed value at the last measured distance is still at or above the threshold (the gradient carries past
    ``max_distance``); 0 when the profile is zero everywhere.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"fraction must be in (0, 1), got {fraction!r}")
    if smooth < 1:
        raise InputError(f"smooth must be a positive window, got {smooth!r}")
    valid = (profile.count >= max(min_count, 1)) & np.isfinite(profile.mean)
    distances = np.asarray(profile.distance)[valid]
    values = np.asarray(profile.mean, dtype=np.float64)[valid]
    if values.size == 0:
        raise InputError(f"profile {profile.quantity!r} has no measured distance (count >= {min_count})")
    peak_at = int(np.argmax(values))
    peak = float(values[peak_at])
    if peak <= 0.0:
        return 0
    half = smooth // 2
    smoothed = np.array([np.median(values[max(0, k - half): k + half + 1]) for k in range(values.size)])
    above = np.flatnonzero(smoothed[peak_at + 1:] >= fraction * peak)
    first_below = peak_at + 1 + (int(above[-1]) + 1 if above.size else 0)
    if first_below >= values.size:
        return None
    return int(distances[first_below])


def usage_noise_floor(profile: UsageProfile) -> np.ndarray:
    """The noise floor of ``U(d)`` at every radius of ``profile``: ``c x |U_A(d) - U_B(d)|``, the difference of the
    means of the two halves of the draws (the first ``draws // 2`` and the rest; NaN where a half is).

    With n draws split n_A + n_B the difference has variance ``sigma^2 (1/n_A + 1/n_B)`` (sigma^2: the variance of
    one draw's mean change); with equal halves that is ``4 sigma^2 / n``, four times the variance of ``U(d)``
    itself. ``c = 2 sqrt(n_A n_B) / n`` (1 for an even n; sqrt(8/9) for 3 draws) gives an odd count the same spread,
    so the floor keeps its one scale relative to the noise of ``U`` whatever the count, and ``U`` keeps every draw.
    """
    draws = int(profile.draws)
    n_a, n_b = draws // 2, draws - draws // 2
    if n_a < 1:
        raise InputError(f"usage noise floor needs at least 2 draws (two halves), got {draws}")
    scale = 1.0 if n_a == n_b else 2.0 * math.sqrt(n_a * n_b) / draws
    halves = np.asarray(profile.halves, dtype=np.float64)
    return scale * np.abs(halves[0] - halves[1])


def usage_horizon(profile: UsageProfile, fraction: float = DEFAULT_USAGE_FRACTION, *, min_count: int = 1,
                  floor: float = 1e-6) -> int | None:
    """The first distance from the pair that the model no longer reads: the gradient horizon's convention.

    Rule (docs/diagnostics.md): take the radii where at least ``min_count`` pairs had context to replace; ``U0`` is
    ``mean_abs_delta`` at the smallest of them; the noise floor at d is :func:`usage_noise_floor` (the difference of
    the two halves of the draws). Radius d is *unused* when ``U(d) + noise(d) < fraction * U0``: replacing every
    residue farther than d, i.e. at distance d + 1 or more from both i and j, no longer changes the prediction. With
    d the smallest measured radius such that every measured radius >= d is unused, the usage horizon is d + 1: the
    residues from distance d + 1 on are not read, as a gradient horizon k says that those from distance k on get no
    gradient (a model whose every output reads only inputs fewer than k residues away has both horizons k). ``None``
    when the largest measured radius is still used (the model reads context past it); the smallest radius + 1 when
    ``U0`` is at rounding level (``<= floor x max(1, mean |z|)``: the model reads nothing beyond the residues that
    radius keeps). A profile with no measured radius (no radius with ``min_count`` affected pairs and a finite
    change) says nothing either way and is an :class:`InputError`, not a horizon.

    Until 2026-12-07 the horizon was the radius d itself (the last distance read, one below a gradient horizon of
    the same cut); :meth:`UsageProfile.from_dict` adds the 1 to horizons stored that way.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"usage fraction must be in (0, 1), got {fraction!r}")
    distances = np.asarray(profile.distances)
    values = np.asarray(profile.mean_abs_delta, dtype=np.float64)
    valid = (np.asarray(profile.count) >= max(min_count, 1)) & np.isfinite(values)
    if not valid.any():
        radii = ", ".join(str(int(d)) for d in distances) or "none"
        raise InputError(f"usage profile has no measured radius (radii {radii}): none had context to replace in "
                         f"at least {max(min_count, 1)} pair(s) with a finite logit change")
    d, u = distances[valid], values[valid]
    noise = np.nan_to_num(usage_noise_floor(profile)[valid], nan=0.0)
    scale = floor * max(1.0, float(profile.mean_abs_logit) if math.isfinite(profile.mean_abs_logit) else 1.0)
    base = float(u[0])
    if base <= scale:
        return int(d[0]) + 1
    unused = (u + noise < fraction * base) | (u <= scale)
    used = np.flatnonzero(~unused)
    first = int(used[-1]) + 1 if used.size else 0
    if first >= d.size:
        return None
    return int(d[first]) + 1


def t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t quantile (e.g. 12.71 for 95 % and 1 degree of freedom)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def seed_interval(values: Sequence[float], level: float = INTERVAL_LEVEL, noise_sd: float = 0.0) -> dict[str, Any]:
    """Mean over seeds with a Student-t interval: ``{"mean", "low", "high", "n", "sd", "values"}``; the interval is
    NaN with fewer than two finite values (one seed says nothing about seed-to-seed spread). ``noise_sd``: the known
    measurement noise of one value (e.g. binomial error, or the resolution of a horizon); the seed spread used is never
    below it, so two seeds that agree by chance do not give a zero-width interval."""
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    out: dict[str, Any] = {"values": [None if v is None or not math.isfinite(float(v)) else float(v) for v in values],
                           "n": int(finite.size), "mean": math.nan, "low": math.nan, "high": math.nan, "sd": math.nan}
    if finite.size == 0:
        return out
    out["mean"] = float(finite.mean())
    if finite.size >= 2:
        sd = max(float(finite.std(ddof=1)), float(noise_sd))
        half = t_quantile(level, finite.size - 1) * sd / math.sqrt(finite.size)
        out.update(sd=sd, low=out["mean"] - half, high=out["mean"] + half)
    return out


def difference_interval(variant: Sequence[float], reference: Sequence[float], level: float = INTERVAL_LEVEL,
                        noise_sd: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    """Difference of seed means (variant - reference) with a Welch-Satterthwaite t interval, its degrees of freedom
    rounded down (conservative: docs/diagnostics.md). Each group's variance is
    at least its ``noise_sd`` squared (the known measurement noise of one value: see :func:`seed_interval`); with no
    spread and no noise the interval is the point itself; with fewer than two seeds in a group it is NaN."""
    a = np.array([float(v) for v in variant if v is not None and math.isfinite(float(v))], dtype=np.float64)
    b = np.array([float(v) for v in reference if v is not None and math.isfinite(float(v))], dtype=np.float64)
    out: dict[str, Any] = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": [int(a.size), int(b.size)],
                           "method": "welch-t over seeds"}
    if a.size == 0 or b.size == 0:
        return out
    diff = float(a.mean() - b.mean())
    out["mean"] = diff
    if a.size < 2 or b.size < 2:
        return out
    va = max(float(a.var(ddof=1)), float(noise_sd[0]) ** 2) / a.size
    vb = max(float(b.var(ddof=1)), float(noise_sd[1]) ** 2) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        out.update(low=diff, high=diff)
        return out
    df = (va + vb) ** 2 / ((va**2 / (a.size - 1) if va else 0.0) + (vb**2 / (b.size - 1) if vb else 0.0))
    half = t_quantile(level, max(1, int(math.floor(df)))) * se
    out.update(low=diff - half, high=diff + half, df=df)
    return out


#: Measurement noise of a gradient horizon: it is read on a grid of whole residues (uniform quantisation, 1 / sqrt(12)).
GRADIENT_HORIZON_NOISE = 1.0 / math.sqrt(12.0)


def usage_horizon_noise(horizon: int | None, distances: Sequence[int]) -> float:
    """Quantisation noise of a usage horizon read on the radius grid ``distances``: a horizon h = d_k + 1 (radius
    d_k the first unused one) lies somewhere above d_(k-1) + 1, the horizon the previous radius would have given,
    so one value carries ``(d_k - d_(k-1)) / sqrt(12)`` (0 at the smallest radius or beyond the range)."""
    grid = sorted(int(d) for d in distances)
    if horizon is None or horizon - 1 not in grid or grid.index(horizon - 1) == 0:
        return 0.0
    k = grid.index(horizon - 1)
    return (grid[k] - grid[k - 1]) / math.sqrt(12.0)


def horizon_value(horizon: int | None, cap: int) -> float:
    """A horizon as a number for averaging: ``None`` (beyond the measured range) counts as ``cap``, a lower bound:
    pass the end of that run's own measured range (:attr:`DiagnosticsResult.range_end`,
    :attr:`UsageProfile.range_end`), not the ``max_distance`` asked for, which short chains may never reach."""
    return float(cap) if horizon is None else float(horizon)


def diagnose_over_seeds(results: Sequence[DiagnosticsResult],
                        thresholds: FitThresholds | None = None) -> dict[str, Any]:
    """The fit diagnosis of one model over its seeds: each seed's label, and the diagnosis of the seed means of its
    inputs (train and validation loss, reference loss, horizon, validation loss by length), with every input's
    mean and interval over seeds."""
    if not results:
        raise InputError("no diagnostics to aggregate")
    cap = max(r.flow.max_distance for r in results)
    labels = [r.diagnosis.label if r.diagnosis is not None else UNDETERMINED for r in results]

    def metric(key: str) -> list[float]:
        return [math.nan if r.metrics.get(key) is None else float(r.metrics[key]) for r in results]

    horizons = [horizon_value(r.horizon, r.range_end) for r in results]
    inputs = {key: seed_interval(metric(key)) for key in ("train_loss", "val_loss", "reference_loss")}
    inputs["horizon"] = seed_interval(horizons, noise_sd=GRADIENT_HORIZON_NOISE)
    by_length: dict[str, list[float]] = {}
    for r in results:
        for key, value in ((r.metrics.get("data_loss") or {}).get("by_length") or {}).items():
            by_length.setdefault(str(key), []).append(math.nan if value is None else float(value))
    mean_by_length = {k: float(np.nanmean(v)) for k, v in by_length.items() if np.isfinite(v).any()}
    mean = {k: v["mean"] for k, v in inputs.items()}
    # A seed whose horizon lies beyond its measured range gives only a lower bound, the end of its own range; with
    # any such seed the mean horizon lies beyond the mean of the bounds (known horizons and those ends), which is
    # judged as a range end: long only if it reaches long_horizon, not short only if it reaches short_horizon.
    censored = any(r.horizon is None for r in results)
    reach = int(math.floor(sum(horizons) / len(horizons))) if censored else cap
    diagnosis = diagnose_fit(None if not math.isfinite(mean["train_loss"]) else mean["train_loss"],
                             None if not math.isfinite(mean["val_loss"]) else mean["val_loss"],
                             None if censored else int(round(mean["horizon"])), max_distance=reach,
                             reference_loss=None if not math.isfinite(mean["reference_loss"]) else mean["reference_loss"],
                             val_loss_by_length=mean_by_length or None, thresholds=thresholds)
    return {"label": diagnosis.label, "summary": diagnosis.summary, "seed_labels": labels,
            "agreeing_seeds": labels.count(diagnosis.label), "n_seeds": len(results), "inputs": inputs,
            "reasons": diagnosis.reasons}


def summarise(flow: GradientFlow, fraction: float = DEFAULT_FRACTION, *, model: str = "",
              config: Mapping[str, Any] | None = None, smooth: int = 5, min_count: int = 1) -> DiagnosticsResult:
    """Horizons of every profile of ``flow``, packed as a :class:`DiagnosticsResult` (no diagnosis yet)."""
    def horizon(p: DistanceProfile) -> int | None:
        return effective_horizon(p, fraction, smooth=smooth, min_count=min_count)

    return DiagnosticsResult(model=model, flow=flow, fraction=fraction, horizon=horizon(flow.sensitivity),
                             horizon_anchor=horizon(flow.sensitivity_anchor),
                             hidden_horizons=[horizon(p) for p in flow.hidden], config=dict(config or {}))


def constant_predictor_loss(rate: float, pos_weight: float = 1.0) -> float:
    """Mean BCE (nats) of the best constant prediction when a fraction ``rate`` of pairs are contacts and true
    contacts weigh ``pos_weight``: the loss a model must beat to have learnt anything beyond the base rate.

    The optimum constant is ``p* = w r / (w r + 1 - r)`` (``w = pos_weight``, ``r = rate``); with ``w = 1`` the loss
    is the entropy of the base rate.
    """
    if not 0.0 < rate < 1.0:
        raise InputError(f"contact rate must be in (0, 1), got {rate!r}")
    if not (pos_weight > 0.0 and math.isfinite(pos_weight)):
        raise InputError(f"pos_weight must be positive, got {pos_weight!r}")
    positive, negative = pos_weight * rate, 1.0 - rate
    best = positive / (positive + negative)
    return -(positive * math.log(best) + negative * math.log(1.0 - best))


def contact_rate(chains: Iterable[ProteinChain], min_separation: int = MIN_SEPARATION, *,
                 contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> float:
    """Fraction of scored pairs (both observed, |i - j| >= min_separation) that are contacts (Cβ-Cβ below
    ``contact_cutoff`` Å: the cutoff of the dataset the chains come from)."""
    positives = total = 0
    for chain in chains:
        scored = np.triu(chain.pair_mask(min_separation), k=1)
        positives += int((chain.contact_map(contact_cutoff) & scored).sum())
        total += int(scored.sum())
    if total == 0:
        raise InputError("no scored pairs to compute a contact rate from")
    return positives / total


def contact_rates_by_length(chains: Iterable[ProteinChain], length_edges: Sequence[int],
                            min_separation: int = MIN_SEPARATION, *,
                            contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> dict[str, float]:
    """:func:`contact_rate` (at ``contact_cutoff``) of each chain-length group (:func:`length_label` of
    ``length_edges``, the groups of :func:`protrnn.diagnostics.gradients.contact_loss_by_length`); groups without a
    scored pair are left out."""
    counts: dict[str, list[int]] = {}
    for chain in chains:
        scored = np.triu(chain.pair_mask(min_separation), k=1)
        entry = counts.setdefault(length_label(len(chain), length_edges), [0, 0])
        entry[0] += int((chain.contact_map(contact_cutoff) & scored).sum())
        entry[1] += int(scored.sum())
    ordered = sorted(counts.items(), key=lambda kv: length_key(kv[0]))
    return {key: positives / total for key, (positives, total) in ordered if total}


def length_weights(train: LossByLength, val: LossByLength) -> dict[str, int]:
    """The weights of :func:`length_matched_losses`: each length group both sets have, with its number of
    validation pairs (empty when they share none)."""
    return {key: int(val.pairs_by_length[key]) for key in val.by_length
            if key in train.by_length and val.pairs_by_length.get(key)}


def length_matched_losses(train: LossByLength, val: LossByLength) -> tuple[float, float]:
    """(train, validation) losses over the length groups both sets have, each group weighted by its share of the
    validation pairs. Pair losses fall with chain length (long chains add many easy distant pairs), so comparing the
    pooled means of two sets with different length mixes would read a length difference as over- or under-fitting.
    Without a common group: the pooled losses."""
    weights = length_weights(train, val)
    total = sum(weights.values())
    if not total:
        return train.loss, val.loss

    def weighted(source: LossByLength) -> float:
        return sum(weight * source.by_length[key] for key, weight in weights.items()) / total

    return weighted(train), weighted(val)


def length_matched_reference_loss(rates: Mapping[str, float], weights: Mapping[str, float],
                                  pos_weight: float = 1.0) -> float:
    """The reference loss of a length-matched train loss: ``sum_g w_g L*(r_g) / sum_g w_g`` over the groups of
    ``weights`` (:func:`length_weights`), where ``r_g`` is group g's contact rate in the *training* chains
    (:func:`contact_rates_by_length`) and ``L*`` is :func:`constant_predictor_loss` at ``pos_weight``.

    It is the train loss, weighted the same way, of the best predictor that knows nothing but the length group: a
    constant per group, each at its group's optimum. A model predicting each group's rate scores exactly this (ratio
    1); any constant model, the pooled base rate included, scores at least this. A group without contacts (or with
    only contacts) contributes 0, the limit of ``L*`` there (a constant fits it exactly).
    """
    missing = [key for key in weights if key not in rates]
    if missing:
        raise InputError(f"no training contact rate for length group(s) {', '.join(map(str, missing))}")
    total = float(sum(weights.values()))
    if not total > 0:
        raise InputError("length weights must have a positive sum")

    def best(rate: float) -> float:
        return constant_predictor_loss(rate, pos_weight) if 0.0 < rate < 1.0 else 0.0

    return sum(weight * best(rates[key]) for key, weight in weights.items()) / total


def length_label(length: int, edges: Sequence[int]) -> str:
    """``"64-127"`` style label of the group of ``length`` for ascending group starts ``edges`` (last is open)."""
    bounds = sorted({0, *(int(e) for e in edges)})
    for low, high in zip(bounds, bounds[1:], strict=False):
        if low <= length < high:
            return f"{low}-{high - 1}"
    return f">={bounds[-1]}"


def length_key(key: Any) -> float:
    """Sort key for length groups: a number, or the first number in a label such as ``"100-199"`` or ``">=200"``."""
    if isinstance(key, (int, float)):
        return float(key)
    digits = ""
    for char in str(key):
        if char.isdigit() or (char == "." and digits):
            digits += char
        elif digits:
            break
    return float(digits) if digits else math.inf


def diagnose_fit(train_loss: float | None, val_loss: float | None, horizon: int | None, *,
                 max_distance: int | None = None, reference_loss: float | None = None,
                 val_loss_by_length: Mapping[Any, float] | Sequence[tuple[float, float]] | None = None,
                 thresholds: FitThresholds | None = None) -> Diagnosis:
    """The seed's diagnosis, made explicit.

    * ``underfitting-vanishing-gradients``: high train loss AND sensitivity collapsing (horizon <= short_horizon).
    * ``overfitting-long-memory``: train loss not high, validation loss notably worse (relative gap >= overfit_gap, or
      validation worsening with chain length) AND gradients carrying far (horizon >= long_horizon, or beyond a
      measured range that reaches long_horizon).
    * ``underfitting`` / ``overfitting``: the loss pattern without the matching gradient signature (the cause lies
      elsewhere: capacity, optimisation, data), ``balanced`` when neither loss pattern holds, ``undetermined`` when the
      losses are missing, or when a loss pattern holds but the measured range is too short to tell whether the
      gradient signature does.

    ``horizon`` is :func:`effective_horizon`'s result; ``None`` means the sensitivity never fell within the measured
    range, which ends at ``max_distance`` (the largest distance measured), so the horizon lies beyond it: it counts
    as long only when ``max_distance >= long_horizon`` and as not short only when ``max_distance >= short_horizon``;
    otherwise (and without ``max_distance``) that side is unknown (``None`` in the evidence).

    "High"/"low" train loss is judged against ``reference_loss`` (the best constant's loss on the same pairs, weighted
    as the train loss: :func:`length_matched_reference_loss` for a length-matched train loss, else
    :func:`constant_predictor_loss` at the contact rate and the training ``pos_weight``) or, without one, the absolute
    thresholds of ``thresholds`` (default :class:`FitThresholds`). ``val_loss_by_length`` maps a length (or a
    length-bin label that sorts by length, or ``(length, loss)`` pairs) to validation loss.
    """
    t = FitThresholds() if thresholds is None else thresholds
    reasons: list[str] = []
    evidence: dict[str, Any] = {"train_loss": train_loss, "val_loss": val_loss, "horizon": horizon,
                                "max_distance": max_distance, "reference_loss": reference_loss,
                                "thresholds": asdict(t)}
    # True / False, or None when the horizon lies beyond a measured range too short to tell.
    horizon_short: bool | None
    horizon_long: bool | None
    if horizon is not None:
        horizon_short, horizon_long = horizon <= t.short_horizon, horizon >= t.long_horizon
    else:
        horizon_short = False if max_distance is not None and max_distance >= t.short_horizon else None
        horizon_long = True if max_distance is not None and max_distance >= t.long_horizon else None
    unknown_reach = ""
    if horizon_short:
        reasons.append(f"sensitivity falls below the threshold by distance {horizon} (<= {t.short_horizon}): "
                       "gradients vanish within a short distance")
    elif horizon_long:
        shown = f"beyond {max_distance}" if horizon is None else str(horizon)
        reasons.append(f"sensitivity stays above the threshold until {shown} (>= {t.long_horizon}): "
                       "gradients carry far")
    elif horizon is None:
        where = "an unknown distance" if max_distance is None else f"distance {max_distance}"
        unknown = "whether gradients vanish or carry far" if horizon_short is None else "whether gradients carry far"
        bound = t.short_horizon if horizon_short is None else t.long_horizon
        unknown_reach = (f"the sensitivity is still above the threshold at {where}, the end of the measured range "
                         f"(below {bound}), so {unknown} is not known: measure up to {t.long_horizon} or further")
        reasons.append(unknown_reach)
    else:
        reasons.append(f"effective horizon {horizon} lies between {t.short_horizon} and {t.long_horizon}")

    train_high = train_low = None
    if train_loss is not None and math.isfinite(train_loss):
        if reference_loss is not None and reference_loss > 0:
            ratio = train_loss / reference_loss
            evidence["train_ratio"] = ratio
            train_high, train_low = ratio >= t.high_train_ratio, ratio <= t.low_train_ratio
            reasons.append(f"train loss {train_loss:.4g} is {ratio:.2f} x the best constant predictor's loss "
                           f"{reference_loss:.4g} (high >= {t.high_train_ratio}, low <= {t.low_train_ratio})")
        elif t.high_train_loss is not None or t.low_train_loss is not None:
            train_high = t.high_train_loss is not None and train_loss >= t.high_train_loss
            train_low = t.low_train_loss is not None and train_loss <= t.low_train_loss
            reasons.append(f"train loss {train_loss:.4g} (high >= {t.high_train_loss}, low <= {t.low_train_loss})")
        else:
            reasons.append("no reference loss or absolute thresholds: train loss level not judged")

    gap_large = False
    if train_loss is not None and val_loss is not None and math.isfinite(train_loss) and math.isfinite(val_loss):
        gap = (val_loss - train_loss) / max(abs(train_loss), 1e-12)
        evidence["relative_gap"] = gap
        gap_large = gap >= t.overfit_gap
        reasons.append(f"validation loss {val_loss:.4g} is {gap:+.1%} relative to train "
                       f"({'notably worse' if gap_large else 'not notably worse'}; threshold {t.overfit_gap:.0%})")
    length_worse = False
    if val_loss_by_length:
        items = sorted(val_loss_by_length.items() if isinstance(val_loss_by_length, Mapping)
                       else [tuple(p) for p in val_loss_by_length], key=lambda kv: length_key(kv[0]))
        if len(items) >= 2:
            first, last = float(items[0][1]), float(items[-1][1])
            trend = (last - first) / max(abs(first), 1e-12)
            evidence["length_trend"] = trend
            length_worse = trend >= t.length_trend
            reasons.append(f"validation loss goes from {first:.4g} (lengths {items[0][0]}) to {last:.4g} "
                           f"(lengths {items[-1][0]}): {trend:+.1%}"
                           + (" - worse on longer chains" if length_worse else ""))
    val_worse = gap_large or length_worse
    evidence.update(train_high=train_high, train_low=train_low, val_worse=val_worse, horizon_short=horizon_short,
                    horizon_long=horizon_long)

    if train_loss is None:
        label, summary = UNDETERMINED, "no training loss given: only the gradient reach is reported"
    elif train_high is None:
        # every label below needs the train loss judged high or not high (over-fitting: "not high")
        label, summary = UNDETERMINED, ("train-loss level not judged (give a reference loss or absolute thresholds)"
                                        + ("; validation is worse than training" if val_worse else ""))
    elif train_high and horizon_short:
        label, summary = UNDERFIT_VANISHING, "under-fitting with vanishing gradients"
    elif train_high and horizon_short is None:
        label, summary = UNDETERMINED, f"under-fitting, but {unknown_reach}"
    elif val_worse and not train_high and horizon_long:
        label, summary = OVERFIT_LONG_MEMORY, "over-fitting with long memory"
    elif val_worse and not train_high and horizon_long is None:
        label, summary = UNDETERMINED, f"over-fitting, but {unknown_reach}"
    elif train_high:
        label, summary = UNDERFIT, (f"under-fitting, but gradients reach beyond {t.short_horizon} residues (no "
                                    "vanishing-gradient signature): look at capacity or optimisation")
    elif val_worse:
        label, summary = OVERFIT, "over-fitting without long gradient reach: look at capacity or data"
    else:
        label, summary = BALANCED, "balanced: no sign of under- or over-fitting"
    return Diagnosis(label=label, summary=summary, reasons=reasons, evidence=evidence)


__all__ = ["GRADIENT_HORIZON_NOISE", "INTERVAL_LEVEL", "constant_predictor_loss", "contact_rate",
           "contact_rates_by_length", "diagnose_fit", "diagnose_over_seeds", "difference_interval",
           "effective_horizon", "horizon_value", "length_key", "length_label", "length_matched_losses",
           "length_matched_reference_loss", "length_weights", "seed_interval", "summarise", "t_quantile",
           "usage_horizon", "usage_horizon_noise", "usage_noise_floor"]
