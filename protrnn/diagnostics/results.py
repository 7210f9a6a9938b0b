"""What diagnostics produce, torch-free: the result types and their JSON file (format ``protrnn-diagnostics``).

:class:`DistanceProfile` is a gradient quantity against sequence distance; :class:`GradientFlow` holds every profile of
one measurement; :class:`DiagnosticsResult` adds the horizons, losses and the :class:`Diagnosis` of one model.
:func:`save_diagnostics` / :func:`load_diagnostics` write and read them (strict JSON: NaN is ``null``). Readers such as
``protrnn report`` import only this module, so reading results never loads torch. docs/diagnostics.md defines every
quantity.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from protrnn.errors import InputError, read_json_document
from protrnn.utils.io import atomic_write, json_safe

FORMAT = "protrnn-diagnostics"
#: 2 since 2026-12-07: usage horizons count the first distance no longer read (:data:`USAGE_HORIZON_RULE`); a
#: version-1 file stored one less, and is read with the 1 added, while a reader of version 1 refuses version 2.
FORMAT_VERSION = 2
#: ``format`` and version of a ``protrnn synthetic`` result.json (written by protrnn.diagnostics.synthetic; named
#: here so that torch-free readers such as the report can check it).
SYNTHETIC_FORMAT = "protrnn-synthetic"
SYNTHETIC_FORMAT_VERSION = 1
#: Distance rules: from the nearer residue of the pair, min(|i - s|, |j - s|), or from its first residue, |i - s|.
NEAREST = "nearest"
ANCHOR = "anchor"
DEFAULT_MAX_DISTANCE = 128
#: Largest distance a profile may span: beyond any chain gradients are taken through (whole chains, T^2 pairs each;
#: prepare keeps chains of up to 1,000 residues by default), so larger values only add unmeasured entries.
MAX_PROFILE_DISTANCE = 10_000
#: Horizon threshold, as a fraction of the peak sensitivity.
DEFAULT_FRACTION = 0.01
#: Usage-horizon threshold, as a fraction of the logit change when every residue but i and j is replaced.
DEFAULT_USAGE_FRACTION = 0.05
#: Context radii d of the usage measurement (residues farther than d from both i and j are replaced).
DEFAULT_USAGE_DISTANCES = (0, 2, 4, 8, 16, 32, 64, 96)
#: How a stored usage horizon counts (``horizon_rule`` of a usage entry): the first distance no longer read, as the
#: gradient horizon counts. Entries without it (written before 2026-12-07) hold the smallest radius d beyond which
#: nothing was read, one less; reading them adds the 1.
USAGE_HORIZON_RULE = "first-unused-distance"
#: A model run of seed S is named ``NAME@seedS`` (evaluation methods, diagnostics): :func:`split_seed` reads it.
SEED_TAG = "@seed"

# Diagnosis labels (stable strings; the report and tests key on them).
UNDERFIT_VANISHING = "underfitting-vanishing-gradients"
OVERFIT_LONG_MEMORY = "overfitting-long-memory"
UNDERFIT = "underfitting"
OVERFIT = "overfitting"
BALANCED = "balanced"
UNDETERMINED = "undetermined"


@dataclass
class DistanceProfile:
    """A gradient quantity as a function of sequence distance ``0..max_distance``.

    ``mean`` (per-pair normalised, then divided by its own peak) is what horizons and plots use; ``std`` and ``sem``
    are on the same scale; ``sem`` takes the chain as the unit (cluster-robust, NaN where fewer than two chains
    reach a distance). ``count[d]`` is the number of (pair, position) samples at distance d; where it is 0 the
    statistics are NaN (``null`` in JSON). ``raw_mean`` is the plain mean of the unnormalised norms.
    """

    quantity: str
    rule: str
    distance: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    sem: np.ndarray
    count: np.ndarray
    raw_mean: np.ndarray
    n_pairs: int
    n_chains: int

    def measured_max(self, min_count: int = 1) -> int | None:
        """Largest distance measured at least ``min_count`` times with a finite mean: the end of the measured range
        (None when nothing was measured)."""
        measured = np.asarray(self.distance)[(np.asarray(self.count) >= max(min_count, 1)) & np.isfinite(self.mean)]
        return int(measured.max()) if measured.size else None

    def value_at(self, distance: int) -> float:
        """Normalised mean at ``distance`` (NaN when not measured there)."""
        if 0 <= distance < len(self.distance) and self.count[distance] > 0:
            return float(self.mean[distance])
        return math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "rule": self.rule,
            "n_pairs": self.n_pairs,
            "n_chains": self.n_chains,
            "distance": [int(v) for v in self.distance],
            "mean": _json_floats(self.mean),
            "std": _json_floats(self.std),
            "sem": _json_floats(self.sem),
            "count": [int(v) for v in self.count],
            "raw_mean": _json_floats(self.raw_mean),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistanceProfile:
        def floats(key: str) -> np.ndarray:
            return np.array([math.nan if v is None else float(v) for v in data[key]], dtype=np.float64)

        profile = cls(
            quantity=str(data["quantity"]), rule=str(data["rule"]),
            distance=np.asarray(data["distance"], dtype=np.int64),
            mean=floats("mean"), std=floats("std"), sem=floats("sem"),
            count=np.asarray(data["count"], dtype=np.int64), raw_mean=floats("raw_mean"),
            n_pairs=int(data["n_pairs"]), n_chains=int(data["n_chains"]),
        )
        lengths = {len(profile.distance), len(profile.mean), len(profile.std), len(profile.sem), len(profile.count),
                   len(profile.raw_mean)}
        if len(lengths) != 1:
            raise InputError(f"profile {profile.quantity!r}: arrays of different lengths {sorted(lengths)}")
        return profile


@dataclass
class GradientFlow:
    """All profiles measured in one pass: input sensitivity (nearest and anchor rules) and per-layer hidden gradients."""

    sensitivity: DistanceProfile
    sensitivity_anchor: DistanceProfile
    hidden: list[DistanceProfile]
    max_distance: int
    pairs_per_chain: int
    seed: int
    n_chains: int
    n_pairs: int
    skipped_chains: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_distance": self.max_distance,
            "pairs_per_chain": self.pairs_per_chain,
            "seed": self.seed,
            "n_chains": self.n_chains,
            "n_pairs": self.n_pairs,
            "skipped_chains": self.skipped_chains,
            "sensitivity": self.sensitivity.to_dict(),
            "sensitivity_anchor": self.sensitivity_anchor.to_dict(),
            "hidden": [p.to_dict() for p in self.hidden],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradientFlow:
        return cls(
            sensitivity=DistanceProfile.from_dict(data["sensitivity"]),
            sensitivity_anchor=DistanceProfile.from_dict(data["sensitivity_anchor"]),
            hidden=[DistanceProfile.from_dict(p) for p in data.get("hidden", [])],
            max_distance=int(data["max_distance"]), pairs_per_chain=int(data["pairs_per_chain"]),
            seed=int(data["seed"]), n_chains=int(data["n_chains"]), n_pairs=int(data["n_pairs"]),
            skipped_chains=int(data.get("skipped_chains", 0)),
        )


@dataclass(frozen=True)
class FitThresholds:
    """Thresholds of :func:`protrnn.diagnostics.fit.diagnose_fit` (all configurable; defaults in docs/diagnostics.md).

    Attributes:
        high_train_ratio: train loss at or above this fraction of the reference loss (the best constant predictor on
            the same pairs: per length group at that group's contact rate) is *high*: the model has learnt little
            beyond the prior.
        low_train_ratio: train loss at or below this fraction of the reference loss is *low* (below
            ``high_train_ratio``).
        high_train_loss / low_train_loss: absolute alternatives, used when no reference loss is given.
        overfit_gap: validation loss exceeding train loss by this relative margin is *notably worse*.
        length_trend: validation loss of the longest length group exceeding the shortest's by this relative margin
            counts as *worse validation as sequences get longer*.
        short_horizon: an effective horizon at or below this many residues means sensitivity *collapses*.
        long_horizon: a horizon at or above this (or none within a measured range that reaches it) means gradients
            *carry far*; above ``short_horizon``.
    """

    high_train_ratio: float = 0.9
    low_train_ratio: float = 0.75
    high_train_loss: float | None = None
    low_train_loss: float | None = None
    overfit_gap: float = 0.10
    length_trend: float = 0.10
    short_horizon: int = 16
    long_horizon: int = 48


@dataclass
class Diagnosis:
    """Outcome of :func:`protrnn.diagnostics.fit.diagnose_fit`: a stable label, one-line summary, the reasons and the
    numbers behind them."""

    label: str
    summary: str
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "summary": self.summary, "reasons": list(self.reasons),
                "evidence": json_safe(self.evidence)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        return cls(label=str(data["label"]), summary=str(data["summary"]), reasons=[str(r) for r in data["reasons"]],
                   evidence=dict(data.get("evidence", {})))


@dataclass
class LossByLength:
    """Pooled pair loss (mean over scored upper-triangle pairs) overall and per chain-length group."""

    loss: float
    n_pairs: int
    n_chains: int
    by_length: dict[str, float]
    pairs_by_length: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def seed_name(model: str, seed: int | None) -> str:
    """``lstm@seed1`` for seed 1 of model ``lstm``; the plain name when ``seed`` is None."""
    return model if seed is None else f"{model}{SEED_TAG}{int(seed)}"


def split_seed(name: str) -> tuple[str, int | None]:
    """``("lstm", 1)`` from ``"lstm@seed1"``; ``(name, None)`` for a name without a seed tag."""
    base, tag, seed = str(name).rpartition(SEED_TAG)
    if tag and base and seed.lstrip("-").isdigit():
        return base, int(seed)
    return str(name), None


@dataclass
class UsagePrecision:
    """Long-range top-L/5 precision of the intact chains (``original``) and with every candidate pair scored under
    its own context ablation at radius d (``ablated[d]``; ``halves[h, d]`` from each half of the draws), averaged
    over ``n_chains`` chains; candidates re-ranked within a pool of ``pool_factor x L/k`` intact top pairs."""

    distances: np.ndarray
    original: float
    ablated: np.ndarray
    halves: np.ndarray
    n_chains: int
    pool_factor: float
    k: int
    min_separation: int

    def to_dict(self) -> dict[str, Any]:
        return {"distances": [int(v) for v in self.distances], "original": json_safe(self.original),
                "ablated": _json_floats(self.ablated), "halves": [_json_floats(h) for h in self.halves],
                "n_chains": self.n_chains, "pool_factor": self.pool_factor, "k": self.k,
                "min_separation": self.min_separation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsagePrecision:
        return cls(distances=np.asarray(data["distances"], dtype=np.int64), original=_float(data["original"]),
                   ablated=_floats(data["ablated"]), halves=np.stack([_floats(h) for h in data["halves"]]),
                   n_chains=int(data["n_chains"]), pool_factor=float(data["pool_factor"]), k=int(data["k"]),
                   min_separation=int(data["min_separation"]))


@dataclass
class UsageProfile:
    """What a trained model uses: the logit change ``U(d)`` when context farther than d from both residues of a pair
    is replaced by background draws (:mod:`protrnn.diagnostics.usage`; docs/diagnostics.md).

    ``mean_abs_delta[d]`` = mean |z_ablated - z| over ``count[d]`` affected pairs and ``draws`` draws; ``halves[h, d]``
    the same from each half of the draws (the first ``draws // 2`` and the rest; their difference, scaled for an odd
    count, is the noise floor: :func:`protrnn.diagnostics.fit.usage_noise_floor`); ``relative`` = U(d) / U(d_min);
    ``mean_delta`` the signed mean; ``mean_abs_logit`` the scale of the intact logits. ``horizon`` follows
    :func:`protrnn.diagnostics.fit.usage_horizon` at ``fraction``: the first distance no longer read, the radius
    beyond which nothing is read + 1, as the gradient horizon counts (None: context still used at the largest
    measured d). ``background``: ``train`` (training-set composition, kept in ``composition``) or ``chain`` (each
    chain's own).
    """

    distances: np.ndarray
    mean_abs_delta: np.ndarray
    halves: np.ndarray
    mean_delta: np.ndarray
    relative: np.ndarray
    count: np.ndarray
    mean_abs_logit: float
    n_pairs: int
    n_chains: int
    draws: int
    seed: int
    background: str
    fraction: float
    horizon: int | None
    composition: np.ndarray | None = None
    precision: UsagePrecision | None = None

    def measured_max(self) -> int | None:
        """Largest radius at which some pair had context to replace."""
        measured = np.asarray(self.distances)[np.asarray(self.count) > 0]
        return int(measured.max()) if measured.size else None

    @property
    def range_end(self) -> int:
        """The largest horizon the measured radii can give, :meth:`measured_max` + 1 (0 when no radius was
        measured): a ``horizon`` of None is known only to exceed it, as a gradient horizon of None exceeds
        :attr:`DiagnosticsResult.range_end`."""
        measured = self.measured_max()
        return 0 if measured is None else measured + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "distances": [int(v) for v in self.distances], "mean_abs_delta": _json_floats(self.mean_abs_delta),
            "halves": [_json_floats(h) for h in self.halves], "mean_delta": _json_floats(self.mean_delta),
            "relative": _json_floats(self.relative), "count": [int(v) for v in self.count],
            "mean_abs_logit": json_safe(self.mean_abs_logit), "n_pairs": self.n_pairs, "n_chains": self.n_chains,
            "draws": self.draws, "seed": self.seed, "background": self.background, "fraction": self.fraction,
            "horizon": self.horizon, "horizon_rule": USAGE_HORIZON_RULE,
            "composition": None if self.composition is None else _json_floats(self.composition),
            "precision": None if self.precision is None else self.precision.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageProfile:
        precision = data.get("precision")
        composition = data.get("composition")
        profile = cls(
            distances=np.asarray(data["distances"], dtype=np.int64), mean_abs_delta=_floats(data["mean_abs_delta"]),
            halves=np.stack([_floats(h) for h in data["halves"]]), mean_delta=_floats(data["mean_delta"]),
            relative=_floats(data["relative"]), count=np.asarray(data["count"], dtype=np.int64),
            mean_abs_logit=_float(data["mean_abs_logit"]), n_pairs=int(data["n_pairs"]),
            n_chains=int(data["n_chains"]), draws=int(data["draws"]), seed=int(data["seed"]),
            background=str(data["background"]), fraction=float(data["fraction"]),
            horizon=_usage_horizon(data),
            composition=None if composition is None else _floats(composition),
            precision=None if precision is None else UsagePrecision.from_dict(precision))
        if len({len(profile.distances), len(profile.mean_abs_delta), len(profile.count),
                profile.halves.shape[-1]}) != 1:
            raise InputError("usage profile: arrays of different lengths")
        return profile


@dataclass
class DiagnosticsResult:
    """Everything ``protrnn diagnose`` (and the training callback) records for one model.

    ``horizon`` is the effective horizon of the input sensitivity (nearest rule): the headline number.
    ``horizon_anchor`` applies the same rule to the |i - s| profile, which also carries the bump at s = j (distance
    j - i), so it mostly reflects the separations sampled; it is kept for completeness, not for comparison.
    ``hidden_horizons`` has one entry per recurrent layer (the last layer under a pairwise head is 1: its gradient
    sits on h_i and h_j only). ``metrics`` holds the losses and their sources, ``config`` the ModelConfig,
    ``training`` what model.json records of the training run (seed, optimiser steps, gradient clipping), ``usage``
    the context-ablation profile and usage horizon (None when not measured).
    """

    model: str
    flow: GradientFlow
    fraction: float
    horizon: int | None
    horizon_anchor: int | None
    hidden_horizons: list[int | None]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    diagnosis: Diagnosis | None = None
    training: dict[str, Any] = field(default_factory=dict)
    usage: UsageProfile | None = None

    @property
    def usage_horizon(self) -> int | None:
        return None if self.usage is None else self.usage.horizon

    @property
    def range_end(self) -> int:
        """The end of the input sensitivity's measured range (its largest distance with a sample; 0 when none): a
        ``horizon`` of None (beyond the range) is known only to exceed it. Below ``flow.max_distance`` when every
        measured chain is too short to reach that far."""
        return self.flow.sensitivity.measured_max() or 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fraction": self.fraction,
            "horizon": self.horizon,
            "horizon_anchor": self.horizon_anchor,
            "hidden_horizons": list(self.hidden_horizons),
            "config": json_safe(self.config),
            "metrics": json_safe(self.metrics),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "training": json_safe(self.training),
            "usage": None if self.usage is None else self.usage.to_dict(),
            "flow": self.flow.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiagnosticsResult:
        diagnosis = data.get("diagnosis")
        usage = data.get("usage")
        return cls(
            model=str(data["model"]), flow=GradientFlow.from_dict(data["flow"]), fraction=float(data["fraction"]),
            horizon=_opt_int(data.get("horizon")), horizon_anchor=_opt_int(data.get("horizon_anchor")),
            hidden_horizons=[_opt_int(v) for v in data.get("hidden_horizons", [])],
            config=dict(data.get("config", {})), metrics=dict(data.get("metrics", {})),
            diagnosis=None if diagnosis is None else Diagnosis.from_dict(diagnosis),
            training=dict(data.get("training") or {}),
            usage=None if usage is None else UsageProfile.from_dict(usage),
        )


def save_diagnostics(results: DiagnosticsResult | Sequence[DiagnosticsResult], path: str | os.PathLike[str]) -> None:
    """Write one or more results as ``{"format": "protrnn-diagnostics", "format_version": 2, "models": [...]}``
    (atomically: a reader never sees a partial file). NaN is written as ``null`` so the file is strict JSON."""
    items = [results] if isinstance(results, DiagnosticsResult) else list(results)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "models": [r.to_dict() for r in items]}
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, allow_nan=False)
        handle.write("\n")


def load_diagnostics(path: str | os.PathLike[str]) -> list[DiagnosticsResult]:
    """Read a file written by :func:`save_diagnostics`; a wrong format or a missing key is an :class:`InputError`."""
    document = read_json_document(path, FORMAT, max_version=FORMAT_VERSION, what="protrnn diagnostics file")
    results = []
    for index, item in enumerate(document.get("models", [])):
        try:
            results.append(DiagnosticsResult.from_dict(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed model entry ({type(exc).__name__}: {exc})", path=path,
                             record=str(item.get("model", index)) if isinstance(item, dict) else str(index)) from None
    return results


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _usage_horizon(data: Mapping[str, Any]) -> int | None:
    """A stored usage horizon in the current rule (:data:`USAGE_HORIZON_RULE`): an entry without ``horizon_rule``
    holds the radius beyond which nothing was read, one less, and gets the 1 added (None stays None)."""
    horizon = _opt_int(data.get("horizon"))
    rule = data.get("horizon_rule")
    if rule is None:
        return None if horizon is None else horizon + 1
    if rule != USAGE_HORIZON_RULE:
        raise InputError(f"usage horizon_rule {rule!r} is not known (this version reads {USAGE_HORIZON_RULE!r})")
    return horizon


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([_float(v) for v in values], dtype=np.float64)


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


__all__ = [
    "ANCHOR", "BALANCED", "DEFAULT_FRACTION", "DEFAULT_MAX_DISTANCE", "DEFAULT_USAGE_DISTANCES", "DEFAULT_USAGE_FRACTION",
    "FORMAT", "MAX_PROFILE_DISTANCE",
    "FORMAT_VERSION", "NEAREST", "OVERFIT", "OVERFIT_LONG_MEMORY", "SEED_TAG", "UNDERFIT", "UNDERFIT_VANISHING",
    "UNDETERMINED", "USAGE_HORIZON_RULE", "Diagnosis", "DiagnosticsResult", "DistanceProfile", "FitThresholds",
    "GradientFlow",
    "LossByLength", "UsagePrecision", "UsageProfile", "load_diagnostics", "save_diagnostics", "seed_name",
    "split_seed",
]
