"""Gradient flow across sequence distance: how far back-propagation through time actually reaches in a model.

For a scored residue pair (i, j) (both observed, ``|i - j| >= 6``) we take one backward pass of its logit
``z_ij`` and read, at every position s of the chain,

* the **input sensitivity** ``||d z_ij / d x_s||`` where ``x`` is the embedding output (what the encoder sees), and
* the **hidden gradient** ``||dL/dh_t||`` of every recurrent layer output ``h`` (both directions concatenated), where
  ``L`` is the binary cross-entropy of that pair against its true label (``dL/dh = (sigmoid(z) - y) dz/dh``).

Values are binned by the distance of s from the pair: ``d = min(|i - s|, |j - s|)`` (distance from the nearer residue;
the *nearest* rule) and, as a second view, ``d = |i - s|`` from the pair's first residue (the *anchor* rule). Each pair's
values are divided by that pair's own maximum before averaging, so every pair counts equally whatever its logit scale;
the averaged profile is then divided by its peak, so profiles of different models share one scale (1 at the peak).
Unnormalised means are kept as ``raw_mean``.

Chains in a batch never interact (per-residue layer norm, masked recurrence, no batch statistics in eval mode), so one
backward pass of the summed logits of one pair per chain gives every chain's gradients at once; the forward graph is
kept and reused for the next pair of each chain.

:func:`effective_horizon` turns a profile into one number, and :func:`diagnose_fit` combines it with training and
validation losses into the under-/over-fitting diagnosis (docs/diagnostics.md states every rule and threshold).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from protrnn.alphabet import DEFAULT_ALPHABET, Alphabet
from protrnn.conventions import MIN_SEPARATION
from protrnn.data.chain import ProteinChain
from protrnn.errors import InputError, reading
from protrnn.utils.io import atomic_write

FORMAT = "protrnn-diagnostics"
FORMAT_VERSION = 1
NEAREST = "nearest"
ANCHOR = "anchor"
DEFAULT_MAX_DISTANCE = 128
DEFAULT_FRACTION = 0.01

# Diagnosis labels (stable strings; the report and tests key on them).
UNDERFIT_VANISHING = "underfitting-vanishing-gradients"
OVERFIT_LONG_MEMORY = "overfitting-long-memory"
UNDERFIT = "underfitting"
OVERFIT = "overfitting"
BALANCED = "balanced"
UNDETERMINED = "undetermined"


# ---------------------------------------------------------------------------------------------------------------------
# Result containers


@dataclass
class DistanceProfile:
    """A gradient quantity as a function of sequence distance ``0..max_distance``.

    ``mean`` (per-pair normalised, then divided by its own peak) is what horizons and plots use; ``std`` and ``sem``
    are on the same scale. ``count[d]`` is the number of (pair, position) samples at distance d; where it is 0 the
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
    """Thresholds of :func:`diagnose_fit` (all configurable; defaults documented in docs/diagnostics.md).

    Attributes:
        high_train_ratio: train loss at or above this fraction of the reference loss (a constant predictor at the
            contact base rate) is *high*: the model has learnt little beyond the prior.
        low_train_ratio: train loss at or below this fraction of the reference loss is *low*.
        high_train_loss / low_train_loss: absolute alternatives, used when no reference loss is given.
        overfit_gap: validation loss exceeding train loss by this relative margin is *notably worse*.
        length_trend: validation loss of the longest length group exceeding the shortest's by this relative margin
            counts as *worse validation as sequences get longer*.
        short_horizon: an effective horizon at or below this many residues means sensitivity *collapses*.
        long_horizon: a horizon at or above this (or none within the measured range) means gradients *carry far*.
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
    """Outcome of :func:`diagnose_fit`: a stable label, one-line summary, the reasons and the numbers behind them."""

    label: str
    summary: str
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "summary": self.summary, "reasons": list(self.reasons),
                "evidence": _json_safe(self.evidence)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        return cls(label=str(data["label"]), summary=str(data["summary"]), reasons=[str(r) for r in data["reasons"]],
                   evidence=dict(data.get("evidence", {})))


@dataclass
class DiagnosticsResult:
    """Everything ``protrnn diagnose`` (and the training callback) records for one model.

    ``horizon`` is :func:`effective_horizon` of the input sensitivity (nearest rule): the headline number.
    ``horizon_anchor`` applies the same rule to the |i - s| profile, which also carries the bump at s = j (distance
    j - i), so it mostly reflects the separations sampled; it is kept for completeness, not for comparison.
    ``hidden_horizons`` has one entry per recurrent layer (the last layer under a pairwise head is 1: its gradient
    sits on h_i and h_j only). ``metrics`` holds the losses and their sources, ``config`` the ModelConfig.
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fraction": self.fraction,
            "horizon": self.horizon,
            "horizon_anchor": self.horizon_anchor,
            "hidden_horizons": list(self.hidden_horizons),
            "config": _json_safe(self.config),
            "metrics": _json_safe(self.metrics),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "flow": self.flow.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiagnosticsResult:
        diagnosis = data.get("diagnosis")
        return cls(
            model=str(data["model"]), flow=GradientFlow.from_dict(data["flow"]), fraction=float(data["fraction"]),
            horizon=_opt_int(data.get("horizon")), horizon_anchor=_opt_int(data.get("horizon_anchor")),
            hidden_horizons=[_opt_int(v) for v in data.get("hidden_horizons", [])],
            config=dict(data.get("config", {})), metrics=dict(data.get("metrics", {})),
            diagnosis=None if diagnosis is None else Diagnosis.from_dict(diagnosis),
        )


def save_diagnostics(results: DiagnosticsResult | Sequence[DiagnosticsResult], path: str | os.PathLike[str]) -> None:
    """Write one or more results as ``{"format": "protrnn-diagnostics", "format_version": 1, "models": [...]}``
    (atomically: a reader never sees a partial file). NaN is written as ``null`` so the file is strict JSON."""
    items = [results] if isinstance(results, DiagnosticsResult) else list(results)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "models": [r.to_dict() for r in items]}
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, allow_nan=False)
        handle.write("\n")


def load_diagnostics(path: str | os.PathLike[str]) -> list[DiagnosticsResult]:
    """Read a file written by :func:`save_diagnostics`; a wrong format or a missing key is an :class:`InputError`."""
    try:
        with reading(path), open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a JSON file ({exc})", path=path) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} file (missing 'format': {FORMAT!r})", path=path)
    if document.get("format_version") != FORMAT_VERSION:
        raise InputError(f"unsupported format_version {document.get('format_version')!r}", path=path)
    results = []
    for index, item in enumerate(document.get("models", [])):
        try:
            results.append(DiagnosticsResult.from_dict(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed model entry ({type(exc).__name__}: {exc})", path=path,
                             record=str(item.get("model", index)) if isinstance(item, dict) else str(index)) from None
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Measuring


def sample_pairs(pair_mask: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``n`` scored pairs ``(i, j)``, ``i < j``, spread over the separations present.

    Separations are taken at evenly spaced ranks of the sorted distinct separations (so short, medium and long
    pairs all appear), then one pair of each chosen separation is drawn at random. No pair is drawn twice.
    """
    upper = np.triu(np.asarray(pair_mask, dtype=bool), k=1)
    ii, jj = np.nonzero(upper)
    if len(ii) == 0 or n <= 0:
        return []
    sep = jj - ii
    distinct = np.unique(sep)
    if n >= len(ii):
        order = rng.permutation(len(ii))
        return [(int(ii[k]), int(jj[k])) for k in order]
    ranks = np.unique(np.round(np.linspace(0, len(distinct) - 1, num=min(n, len(distinct)))).astype(int))
    chosen: list[int] = []
    for target in distinct[ranks]:
        candidates = np.flatnonzero(sep == target)
        chosen.append(int(rng.choice(candidates)))
    if len(chosen) < n:  # fewer distinct separations than pairs wanted: fill with random unused pairs
        rest = np.setdiff1d(np.arange(len(ii)), np.asarray(chosen))
        chosen.extend(int(k) for k in rng.choice(rest, size=n - len(chosen), replace=False))
    return [(int(ii[k]), int(jj[k])) for k in chosen]


#: Padded pairs (B x T^2) per diagnostic batch: the pair head's activations scale with it, and gradients are taken
#: through the whole chain, so one 985-residue chain padded into a batch of 8 would cost ~8x the memory of itself.
DEFAULT_MAX_PAIRS = 1 << 20


def _pair_budget_groups(chains: Sequence[ProteinChain], batch_size: int,
                        max_pairs: int) -> Iterator[Sequence[ProteinChain]]:
    """Consecutive groups of at most ``batch_size`` chains whose padded size B x T^2 stays within ``max_pairs``
    (a chain longer than the budget goes alone). Chain order is kept, so seeded pair sampling does not change."""
    start = 0
    while start < len(chains):
        end, width = start + 1, len(chains[start])
        while end < len(chains) and end - start < batch_size:
            wider = max(width, len(chains[end]))
            if (end - start + 1) * wider * wider > max_pairs:
                break
            end, width = end + 1, wider
        yield chains[start:end]
        start = end


def chains_to_batches(chains: Sequence[ProteinChain], batch_size: int = 8, alphabet: Alphabet = DEFAULT_ALPHABET,
                      min_separation: int = MIN_SEPARATION,
                      max_pairs: int = DEFAULT_MAX_PAIRS) -> Iterator[dict[str, Any]]:
    """Padded batches (the keys of the batch contract that diagnostics need) from whole, uncropped chains: at most
    ``batch_size`` chains and ``max_pairs`` padded pairs (B x T^2) each, which bounds memory on long chains."""
    if batch_size < 1 or max_pairs < 1:
        raise InputError(f"batch_size and max_pairs must be positive, got {batch_size} and {max_pairs}")
    for group in _pair_budget_groups(chains, batch_size, max_pairs):
        width = max(len(c) for c in group)
        tokens = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.bool)
        pair_mask = torch.zeros(len(group), width, width, dtype=torch.bool)
        contacts = torch.zeros(len(group), width, width, dtype=torch.float32)
        for b, chain in enumerate(group):
            length = len(chain)
            tokens[b, :length] = torch.from_numpy(alphabet.encode(chain.sequence).astype(np.int64))
            mask[b, :length] = True
            pair_mask[b, :length, :length] = torch.from_numpy(chain.pair_mask(min_separation))
            contacts[b, :length, :length] = torch.from_numpy(chain.contact_map().astype(np.float32))
        yield {"tokens": tokens, "mask": mask, "pair_mask": pair_mask, "contacts": contacts,
               "ids": [c.id for c in group]}


class _Accumulator:
    """Running per-distance sums of per-pair-normalised values (and of raw values)."""

    def __init__(self, quantity: str, rule: str, max_distance: int) -> None:
        self.quantity, self.rule, self.size = quantity, rule, max_distance + 1
        self.total = np.zeros(self.size)
        self.total_sq = np.zeros(self.size)
        self.raw_total = np.zeros(self.size)
        self.count = np.zeros(self.size, dtype=np.int64)
        self.n_pairs = 0

    def add(self, values: np.ndarray, distances: np.ndarray) -> None:
        peak = float(values.max()) if values.size else 0.0
        if not peak > 0.0 or not math.isfinite(peak):
            return  # a pair with no (or non-finite) gradient anywhere carries no shape information
        keep = distances < self.size
        d, raw = distances[keep], values[keep].astype(np.float64)
        norm = raw / peak
        self.total += np.bincount(d, weights=norm, minlength=self.size)
        self.total_sq += np.bincount(d, weights=norm * norm, minlength=self.size)
        self.raw_total += np.bincount(d, weights=raw, minlength=self.size)
        self.count += np.bincount(d, minlength=self.size)
        self.n_pairs += 1

    def profile(self, n_chains: int) -> DistanceProfile:
        with np.errstate(invalid="ignore", divide="ignore"):
            count = self.count.astype(np.float64)
            mean = np.where(count > 0, self.total / count, np.nan)
            var = np.where(count > 1, (self.total_sq - count * mean**2) / (count - 1), np.nan)
            std = np.sqrt(np.clip(var, 0.0, None))
            raw_mean = np.where(count > 0, self.raw_total / count, np.nan)
        finite = mean[np.isfinite(mean)]
        peak = float(finite.max()) if finite.size else 0.0
        if peak > 0:
            mean, std = mean / peak, std / peak
        with np.errstate(invalid="ignore", divide="ignore"):
            sem = np.where(count > 1, std / np.sqrt(count), np.nan)
        return DistanceProfile(quantity=self.quantity, rule=self.rule, distance=np.arange(self.size),
                               mean=mean, std=std, sem=sem, count=self.count.copy(), raw_mean=raw_mean,
                               n_pairs=self.n_pairs, n_chains=n_chains)


def _network_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


@contextlib.contextmanager
def _measurement_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, gradients on (even inside Lightning's inference mode), cuDNN RNNs off (their backward refuses eval
    mode), global RNG state restored afterwards; the model's train/eval flag is restored on exit."""
    was_training = model.training
    device = _network_device(model)
    devices = [device] if device.type == "cuda" else []
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=devices), \
                torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        model.train(was_training)


@dataclass
class PairGradients:
    """Gradient norms at every position of one chain for one scored pair (i, j), i < j.

    ``input_norms[s] = ||d logit_ij / d x_s||``; ``hidden_norms[l][t] = ||dL/dh_t||`` of layer l's output, where L
    is the pair's BCE loss (empty when hidden gradients were not asked for). Arrays have the chain's length.
    """

    chain: str
    i: int
    j: int
    logit: float
    label: float | None
    input_norms: np.ndarray
    hidden_norms: list[np.ndarray]


def iter_pair_gradients(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], *, pairs_per_chain: int = 8,
                        seed: int = 0, hidden: bool = True,
                        pairs: Mapping[str, Sequence[tuple[int, int]]] | None = None) -> Iterator[PairGradients]:
    """Per-pair gradient norms over padded batches (keys ``tokens``, ``mask``, ``pair_mask``; ``contacts`` for the
    loss gradients; ``ids`` to name chains and to look up ``pairs``).

    Pairs come from ``pairs[chain_id]`` when given, else :func:`sample_pairs` with a generator seeded by ``seed`` (the
    global RNG state is untouched). ``model`` follows the ContactModel contract (``embed``, ``forward_embedded``).
    One forward pass per batch; one backward pass per round, each round taking the next pair of every chain.
    """
    if pairs_per_chain < 1:
        raise InputError(f"pairs_per_chain must be positive, got {pairs_per_chain}")
    rng = np.random.default_rng(seed)
    counter = 0
    for batch in batches:
        ids = list(batch.get("ids") or [f"chain{counter + b}" for b in range(batch["tokens"].shape[0])])
        counter += len(ids)
        # Grad mode, eval mode and RNG forking are entered per batch, so nothing leaks into the caller between yields.
        with _measurement_mode(model):
            results = _batch_pair_gradients(model, batch, ids, pairs_per_chain, rng, hidden, pairs)
        yield from results


def _batch_pair_gradients(model: torch.nn.Module, batch: Mapping[str, Any], ids: list[str], pairs_per_chain: int,
                          rng: np.random.Generator, hidden: bool,
                          pairs: Mapping[str, Sequence[tuple[int, int]]] | None) -> list[PairGradients]:
    device = _network_device(model)
    # .clone() outside inference mode turns cached inference tensors into ordinary ones autograd accepts.
    tokens = batch["tokens"].detach().clone().to(device=device, dtype=torch.long)
    mask = batch["mask"].detach().clone().to(device=device, dtype=torch.bool)
    pair_mask = batch["pair_mask"].detach().to("cpu", dtype=torch.bool).numpy()
    contacts = batch.get("contacts")
    contacts_np = None if contacts is None else contacts.detach().to("cpu", dtype=torch.float32).numpy()
    lengths = mask.sum(dim=1).cpu().numpy()
    chosen = []
    for b in range(tokens.shape[0]):
        if pairs is not None:
            given = [(min(p), max(p)) for p in pairs.get(ids[b], [])]
            for i, j in given:
                if not (0 <= i < j < lengths[b]):
                    raise InputError(f"pair ({i}, {j}) outside the chain (length {lengths[b]})", record=ids[b])
            chosen.append(given)
        else:
            chosen.append(sample_pairs(pair_mask[b, :lengths[b], :lengths[b]], pairs_per_chain, rng))
    rounds = max((len(p) for p in chosen), default=0)
    results: list[PairGradients] = []
    if rounds == 0:
        return results
    x = model.embed(tokens).detach().requires_grad_(True)
    out = model.forward_embedded(x, mask, return_layers=hidden)
    logits, layers = (out[0], list(out[1])) if hidden else (out, [])
    for r in range(rounds):
        rows = [b for b in range(tokens.shape[0]) if r < len(chosen[b])]
        rows_t = torch.tensor(rows, device=device)
        ii = torch.tensor([chosen[b][r][0] for b in rows], device=device)
        jj = torch.tensor([chosen[b][r][1] for b in rows], device=device)
        z = logits[rows_t, ii, jj]
        grads = torch.autograd.grad(z.sum(), [x, *layers], retain_graph=r < rounds - 1, allow_unused=True)
        gx = _row_norms(grads[0], rows_t, x)
        gh = [_row_norms(g, rows_t, h) for g, h in zip(grads[1:], layers, strict=True)]
        z_np = z.detach().float().cpu().numpy()
        p_np = torch.sigmoid(z.detach().float()).cpu().numpy()
        for k, b in enumerate(rows):
            i, j = chosen[b][r]
            length = int(lengths[b])
            label = None if contacts_np is None else float(contacts_np[b, i, j])
            # dL/dz of BCE-with-logits; chains are independent, so it scales each row's dz/dh exactly.
            dloss = 1.0 if label is None else abs(float(p_np[k]) - label)
            results.append(PairGradients(chain=str(ids[b]), i=i, j=j, logit=float(z_np[k]), label=label,
                                         input_norms=gx[k, :length].copy(),
                                         hidden_norms=[g[k, :length] * dloss for g in gh]))
    return results


def gradient_flow_from_batches(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], *,
                               max_distance: int = DEFAULT_MAX_DISTANCE, pairs_per_chain: int = 8, seed: int = 0,
                               hidden: bool = True) -> GradientFlow:
    """Aggregate :func:`iter_pair_gradients` into distance profiles (nearest and anchor rules; per hidden layer)."""
    if max_distance < 1:
        raise InputError(f"max_distance must be positive, got {max_distance}")
    sens = _Accumulator("input_sensitivity", NEAREST, max_distance)
    sens_anchor = _Accumulator("input_sensitivity", ANCHOR, max_distance)
    layer_accs: list[_Accumulator] = []
    chains_seen: set[str] = set()
    n_pairs = 0
    total_chains = 0

    def counted(source: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        nonlocal total_chains
        for batch in source:
            total_chains += int(batch["tokens"].shape[0])
            yield batch

    for pg in iter_pair_gradients(model, counted(batches), pairs_per_chain=pairs_per_chain, seed=seed,
                                  hidden=hidden):
        positions = np.arange(len(pg.input_norms))
        from_i = np.abs(positions - pg.i)
        near = np.minimum(from_i, np.abs(positions - pg.j))
        sens.add(pg.input_norms, near)
        sens_anchor.add(pg.input_norms, from_i)
        while len(layer_accs) < len(pg.hidden_norms):
            layer_accs.append(_Accumulator(f"hidden_gradient/layer{len(layer_accs)}", NEAREST, max_distance))
        for acc, norms in zip(layer_accs, pg.hidden_norms, strict=False):
            acc.add(norms, near)
        chains_seen.add(pg.chain)
        n_pairs += 1
    if n_pairs == 0:
        raise InputError("no scored pairs (both residues observed, |i - j| >= 6) in the chains given to diagnostics")
    n_chains = len(chains_seen)
    return GradientFlow(
        sensitivity=sens.profile(n_chains), sensitivity_anchor=sens_anchor.profile(n_chains),
        hidden=[acc.profile(n_chains) for acc in layer_accs], max_distance=max_distance,
        pairs_per_chain=pairs_per_chain, seed=seed, n_chains=n_chains, n_pairs=n_pairs,
        skipped_chains=total_chains - n_chains,
    )


def _row_norms(grad: torch.Tensor | None, rows: torch.Tensor, like: torch.Tensor) -> np.ndarray:
    if grad is None:  # the output does not depend on this tensor at all
        return np.zeros((len(rows), like.shape[1]))
    return grad[rows].float().norm(dim=-1).cpu().numpy()


def gradient_flow(model: torch.nn.Module, chains: Sequence[ProteinChain], *,
                  max_distance: int = DEFAULT_MAX_DISTANCE, pairs_per_chain: int = 8, seed: int = 0,
                  batch_size: int = 8, hidden: bool = True, alphabet: Alphabet = DEFAULT_ALPHABET) -> GradientFlow:
    """Input-sensitivity and hidden-gradient profiles over whole chains (see the module docstring for definitions)."""
    if not chains:
        raise InputError("no chains given to gradient diagnostics")
    return gradient_flow_from_batches(model, chains_to_batches(chains, batch_size, alphabet),
                                      max_distance=max_distance, pairs_per_chain=pairs_per_chain, seed=seed,
                                      hidden=hidden)


def sensitivity_profile(model: torch.nn.Module, chains: Sequence[ProteinChain], *,
                        max_distance: int = DEFAULT_MAX_DISTANCE, pairs_per_chain: int = 8, seed: int = 0,
                        batch_size: int = 8, rule: str = NEAREST) -> DistanceProfile:
    """``||d logit_ij / d x_s||`` versus distance of s from the pair (``rule``: ``nearest`` = min(|i-s|, |j-s|),
    ``anchor`` = |i-s|), per-pair normalised, averaged over pairs and chains, 1 at the peak."""
    if rule not in (NEAREST, ANCHOR):
        raise InputError(f"unknown distance rule {rule!r}; choose {NEAREST!r} or {ANCHOR!r}")
    flow = gradient_flow(model, chains, max_distance=max_distance, pairs_per_chain=pairs_per_chain, seed=seed,
                         batch_size=batch_size, hidden=False)
    return flow.sensitivity if rule == NEAREST else flow.sensitivity_anchor


def hidden_gradient_profile(model: torch.nn.Module, chains: Sequence[ProteinChain], *,
                            max_distance: int = DEFAULT_MAX_DISTANCE, pairs_per_chain: int = 8, seed: int = 0,
                            batch_size: int = 8) -> list[DistanceProfile]:
    """``||dL/dh_t||`` of each recurrent layer output versus min(|i-t|, |j-t|), L the BCE loss of pair (i, j)."""
    return gradient_flow(model, chains, max_distance=max_distance, pairs_per_chain=pairs_per_chain, seed=seed,
                         batch_size=batch_size, hidden=True).hidden


# ---------------------------------------------------------------------------------------------------------------------
# Summaries


def effective_horizon(profile: DistanceProfile, fraction: float = DEFAULT_FRACTION, *, smooth: int = 5,
                      min_count: int = 1) -> int | None:
    """The distance at which sensitivity has fallen for good below ``fraction`` of its peak.

    Rule: keep distances measured at least ``min_count`` times; the peak is the largest (unsmoothed) ``mean``; smooth
    ``mean`` with a centred running median over ``smooth`` measured points (a median ignores isolated spikes yet keeps
    a step, such as a truncation cut, exactly where it is); the horizon is the smallest distance d beyond the peak such
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


def contact_rate(chains: Iterable[ProteinChain], min_separation: int = MIN_SEPARATION) -> float:
    """Fraction of scored pairs (both observed, |i - j| >= min_separation) that are contacts."""
    positives = total = 0
    for chain in chains:
        scored = np.triu(chain.pair_mask(min_separation), k=1)
        positives += int((chain.contact_map() & scored).sum())
        total += int(scored.sum())
    if total == 0:
        raise InputError("no scored pairs to compute a contact rate from")
    return positives / total


@dataclass
class LossByLength:
    """Pooled pair loss (mean over scored upper-triangle pairs) overall and per chain-length group."""

    loss: float
    n_pairs: int
    n_chains: int
    by_length: dict[str, float]
    pairs_by_length: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


def length_matched_losses(train: LossByLength, val: LossByLength) -> tuple[float, float]:
    """(train, validation) losses over the length groups both sets have, each group weighted by its share of the
    validation pairs. Pair losses fall with chain length (long chains add many easy distant pairs), so comparing the
    pooled means of two sets with different length mixes would read a length difference as over- or under-fitting."""
    common = [key for key in val.by_length if key in train.by_length and val.pairs_by_length.get(key)]
    total = sum(val.pairs_by_length[key] for key in common)
    if not total:
        return train.loss, val.loss
    def weighted(source: LossByLength) -> float:
        return sum(val.pairs_by_length[key] * source.by_length[key] for key in common) / total
    return weighted(train), weighted(val)


def length_label(length: int, edges: Sequence[int]) -> str:
    """``"64-127"`` style label of the group of ``length`` for ascending group starts ``edges`` (last is open)."""
    bounds = sorted({0, *(int(e) for e in edges)})
    for low, high in zip(bounds, bounds[1:], strict=False):
        if low <= length < high:
            return f"{low}-{high - 1}"
    return f">={bounds[-1]}"


def contact_loss_by_length(model: torch.nn.Module, chains: Sequence[ProteinChain], *, pos_weight: float = 1.0,
                           length_edges: Sequence[int] = (64, 128, 256), batch_size: int = 8,
                           alphabet: Alphabet = DEFAULT_ALPHABET) -> LossByLength:
    """The training objective (BCE, true contacts weighted ``pos_weight``) in eval mode on whole chains, pooled over
    scored upper-triangle pairs, overall and by chain length: the "worse validation on longer chains" evidence."""
    if not chains:
        raise InputError("no chains to compute a loss on")
    device = _network_device(model)
    totals: dict[str, list[float]] = {}
    total = count = 0.0
    eps = 1e-7
    for batch in chains_to_batches(chains, batch_size, alphabet):
        tokens, mask = batch["tokens"].to(device), batch["mask"].to(device)
        probs = model.predict_proba(tokens, mask).double().clamp(eps, 1.0 - eps).cpu()
        scored = torch.triu(batch["pair_mask"], diagonal=1)
        y = batch["contacts"].double()
        losses = -(pos_weight * y * probs.log() + (1.0 - y) * (1.0 - probs).log())
        for b, length in enumerate(batch["mask"].sum(dim=1).tolist()):
            chain_sum = float(losses[b][scored[b]].sum())
            chain_count = int(scored[b].sum())
            if chain_count == 0:
                continue
            entry = totals.setdefault(length_label(int(length), length_edges), [0.0, 0.0])
            entry[0] += chain_sum
            entry[1] += chain_count
            total += chain_sum
            count += chain_count
    if count == 0:
        raise InputError("no scored pairs (both residues observed, |i - j| >= 6) to compute a loss on")
    order = sorted(totals, key=_length_key)
    return LossByLength(loss=total / count, n_pairs=int(count), n_chains=len(chains),
                        by_length={k: totals[k][0] / totals[k][1] for k in order},
                        pairs_by_length={k: int(totals[k][1]) for k in order})


def diagnose_fit(train_loss: float | None, val_loss: float | None, horizon: int | None, *,
                 max_distance: int | None = None, reference_loss: float | None = None,
                 val_loss_by_length: Mapping[Any, float] | Sequence[tuple[float, float]] | None = None,
                 thresholds: FitThresholds = FitThresholds()) -> Diagnosis:
    """The seed's diagnosis, made explicit.

    * ``underfitting-vanishing-gradients``: high train loss AND sensitivity collapsing (horizon <= short_horizon).
    * ``overfitting-long-memory``: train loss not high, validation loss notably worse (relative gap >= overfit_gap, or
      validation worsening with chain length) AND gradients carrying far (horizon >= long_horizon or beyond the range).
    * ``underfitting`` / ``overfitting``: the loss pattern without the matching gradient signature (the cause lies
      elsewhere: capacity, optimisation, data), ``balanced`` when neither loss pattern holds, ``undetermined`` when the
      losses are missing.

    ``horizon`` is :func:`effective_horizon`'s result (``None`` = never fell within ``max_distance``). "High"/"low"
    train loss is judged against ``reference_loss`` (e.g. :func:`constant_predictor_loss` at the contact rate and the
    training ``pos_weight``) or, without one, the absolute thresholds. ``val_loss_by_length`` maps a length (or a length-bin
    label that sorts by length, or ``(length, loss)`` pairs) to validation loss.
    """
    t = thresholds
    reasons: list[str] = []
    evidence: dict[str, Any] = {"train_loss": train_loss, "val_loss": val_loss, "horizon": horizon,
                                "max_distance": max_distance, "reference_loss": reference_loss,
                                "thresholds": asdict(t)}
    horizon_short = horizon is not None and horizon <= t.short_horizon
    horizon_long = horizon is None or horizon >= t.long_horizon
    shown = f"beyond {max_distance}" if horizon is None and max_distance else str(horizon)
    if horizon_short:
        reasons.append(f"sensitivity falls below the threshold by distance {horizon} (<= {t.short_horizon}): "
                       "gradients vanish within a short distance")
    elif horizon_long:
        reasons.append(f"sensitivity stays above the threshold until {shown} (>= {t.long_horizon}): "
                       "gradients carry far")
    else:
        reasons.append(f"effective horizon {horizon} lies between {t.short_horizon} and {t.long_horizon}")

    train_high = train_low = None
    if train_loss is not None and math.isfinite(train_loss):
        if reference_loss is not None and reference_loss > 0:
            ratio = train_loss / reference_loss
            evidence["train_ratio"] = ratio
            train_high, train_low = ratio >= t.high_train_ratio, ratio <= t.low_train_ratio
            reasons.append(f"train loss {train_loss:.4g} is {ratio:.2f} x the base-rate loss {reference_loss:.4g} "
                           f"(high >= {t.high_train_ratio}, low <= {t.low_train_ratio})")
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
                       else [tuple(p) for p in val_loss_by_length], key=lambda kv: _length_key(kv[0]))
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
    elif train_high and horizon_short:
        label, summary = UNDERFIT_VANISHING, "under-fitting with vanishing gradients"
    elif val_worse and not train_high and horizon_long:
        label, summary = OVERFIT_LONG_MEMORY, "over-fitting with long memory"
    elif train_high:
        label, summary = UNDERFIT, (f"under-fitting, but gradients reach beyond {t.short_horizon} residues (no "
                                    "vanishing-gradient signature): look at capacity or optimisation")
    elif val_worse:
        label, summary = OVERFIT, "over-fitting without long gradient reach: look at capacity or data"
    elif train_high is None:
        label, summary = UNDETERMINED, "train-loss level not judged (give a reference loss or absolute thresholds)"
    else:
        label, summary = BALANCED, "balanced: no sign of under- or over-fitting"
    return Diagnosis(label=label, summary=summary, reasons=reasons, evidence=evidence)


def _length_key(key: Any) -> float:
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


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def _json_safe(value: Any) -> Any:
    """Plain JSON types: NaN/inf become None, numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


__all__ = [
    "length_matched_losses",
    "ANCHOR", "BALANCED", "NEAREST", "OVERFIT", "OVERFIT_LONG_MEMORY", "UNDERFIT", "UNDERFIT_VANISHING",
    "UNDETERMINED", "Diagnosis", "DiagnosticsResult", "DistanceProfile", "FitThresholds", "GradientFlow",
    "PairGradients",
    "LossByLength", "constant_predictor_loss", "contact_loss_by_length", "length_label", "chains_to_batches", "contact_rate", "diagnose_fit", "effective_horizon", "gradient_flow",
    "gradient_flow_from_batches", "hidden_gradient_profile", "iter_pair_gradients", "load_diagnostics", "save_diagnostics", "sample_pairs",
    "sensitivity_profile", "summarise",
]
