"""Gradient flow across sequence distance, measured with autograd: how far back-propagation through time reaches.

For a scored residue pair (i, j) (both observed, ``|i - j| >= 6``) we take one backward pass of its logit
``z_ij`` and read, at every position s of the chain,

* the **input sensitivity** ``||d z_ij / d x_s||`` where ``x`` is the embedding output (what the encoder sees), and
* the **hidden gradient** ``||dL/dh_t||`` of every recurrent layer output ``h`` (both directions concatenated), where
  ``L`` is the pair's training loss (:mod:`protrnn.training.loss`: weighted BCE, focal term included) against its
  true label, ``dL/dh = (dL/dz) dz/dh``.

Values are binned by the distance of s from the pair: ``d = min(|i - s|, |j - s|)`` (distance from the nearer residue;
the *nearest* rule) and, as a second view, ``d = |i - s|`` from the pair's first residue (the *anchor* rule). Each pair's
values are divided by that pair's own maximum before averaging, so every pair counts equally whatever its logit scale
(a pair whose gradient is zero everywhere counts as zeros; one with a non-finite value is skipped); the averaged
profile is then divided by its peak, so profiles of different models share one scale (1 at the peak). Unnormalised
means are kept as ``raw_mean``.

Chains in a batch never interact (per-residue layer norm, masked recurrence, no batch statistics in eval mode), so one
backward pass of the summed logits of one pair per chain gives every chain's gradients at once; the forward graph is
kept and reused for the next pair of each chain.

:func:`contact_loss_by_length` evaluates the training loss on whole chains, by chain length (the fit evidence).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protrnn.alphabet import DEFAULT_ALPHABET, Alphabet
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.data.batching import collate_contacts
from protrnn.data.chain import ProteinChain
from protrnn.data.packing import pack
from protrnn.diagnostics.fit import length_key, length_label
from protrnn.diagnostics.results import (
    ANCHOR,
    DEFAULT_MAX_DISTANCE,
    MAX_PROFILE_DISTANCE,
    NEAREST,
    DistanceProfile,
    GradientFlow,
    LossByLength,
)
from protrnn.errors import InputError
from protrnn.training.loss import LossSettings, scored_pairs

#: Padded pairs (B x T^2) per diagnostic batch: the pair head's activations scale with it, and gradients are taken
#: through the whole chain, so one 985-residue chain padded into a batch of 8 would cost ~8x the memory of itself.
DEFAULT_MAX_PAIRS = 1 << 20


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


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


def chains_to_batches(chains: Sequence[ProteinChain], batch_size: int = 8, alphabet: Alphabet = DEFAULT_ALPHABET,
                      min_separation: int = MIN_SEPARATION, max_pairs: int = DEFAULT_MAX_PAIRS, *,
                      contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> Iterator[dict[str, Any]]:
    """Padded batches (the batch contract of :func:`protrnn.data.batching.collate_contacts`) from whole, uncropped
    chains, in the given order: at most ``batch_size`` chains and ``max_pairs`` padded pairs (B x T^2) each, which
    bounds memory on long chains (a chain longer than the budget goes alone). Order is kept, so seeded pair sampling
    does not depend on the budgets. ``contacts`` are Cβ-Cβ below ``contact_cutoff`` Å (the cutoff of the dataset the
    chains come from: ``protrnn diagnose`` passes a prepared dataset's stored one)."""
    if batch_size < 1 or max_pairs < 1:
        raise InputError(f"batch_size and max_pairs must be positive, got {batch_size} and {max_pairs}")
    for group in pack([len(c) for c in chains], "given", max_items=batch_size, max_pairs=max_pairs):
        examples = [{"tokens": alphabet.encode(chains[k].sequence), "observed": chains[k].observed,
                     "contacts": chains[k].contact_map(contact_cutoff), "length": len(chains[k]), "id": chains[k].id}
                    for k in group]
        yield collate_contacts(examples, min_separation)


# ---------------------------------------------------------------------------------------------------------------------
# Measuring


class _Accumulator:
    """Running per-distance sums of per-pair-normalised values (and of raw values); the sums and counts are kept per
    chain (the sampling unit, for ``sem``), and the profile's totals are theirs."""

    def __init__(self, quantity: str, rule: str, max_distance: int) -> None:
        self.quantity, self.rule, self.size = quantity, rule, max_distance + 1
        self.total_sq = np.zeros(self.size)
        self.raw_total = np.zeros(self.size)
        self.n_pairs = 0
        #: Per chain: sums and counts of normalised values per distance.
        self.unit_total: dict[str, np.ndarray] = {}
        self.unit_count: dict[str, np.ndarray] = {}

    def add(self, values: np.ndarray, distances: np.ndarray, unit: str = "") -> None:
        """One pair's values at ``distances``; ``unit`` names its chain (pairs of one chain are correlated, so
        ``sem`` treats the chain, not the sample, as the independent draw)."""
        if values.size == 0 or not np.isfinite(values).all():
            return  # a pair with a non-finite gradient somewhere has no usable shape: skipped, not counted
        peak = float(values.max())
        keep = distances < self.size
        d, raw = distances[keep], values[keep].astype(np.float64)
        # A pair whose gradient is exactly zero everywhere is a measurement too (the logit ignores every input):
        # it counts as zeros at every distance, so a model with no sensitivity at all gets a zero profile.
        norm = raw / peak if peak > 0.0 else np.zeros_like(raw)
        self.total_sq += np.bincount(d, weights=norm * norm, minlength=self.size)
        self.raw_total += np.bincount(d, weights=raw, minlength=self.size)
        self.n_pairs += 1
        if unit not in self.unit_total:
            self.unit_total[unit] = np.zeros(self.size)
            self.unit_count[unit] = np.zeros(self.size, dtype=np.int64)
        self.unit_total[unit] += np.bincount(d, weights=norm, minlength=self.size)
        self.unit_count[unit] += np.bincount(d, minlength=self.size)

    @staticmethod
    def _cluster_sem(totals: np.ndarray, counts: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Standard error of ``mean`` (a ratio: sum over chains of their ``totals`` / sum of their ``counts``, both
        ``[chains, distance]``) with the chain as the unit: ``sqrt(G / (G - 1) * sum_c (T_c - mean N_c)^2) / sum_c
        N_c`` over the G chains with samples at that distance (the linearised, cluster-robust variance of a ratio
        estimator). NaN where fewer than two chains reach a distance. A chain's positions, and its pairs, share one sequence and one hidden state, so dividing
        the sample spread by the root of the sample count understates the error (by up to 1.8x, measured on the
        bundled model's members: docs/diagnostics.md)."""
        units = (counts > 0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            residual = np.where(counts > 0, totals - np.nan_to_num(mean) * counts, 0.0)
            var = units / (units - 1) * (residual**2).sum(axis=0) / counts.sum(axis=0) ** 2
            return np.where(units > 1, np.sqrt(var), np.nan)

    def profile(self, n_chains: int) -> DistanceProfile:
        totals = np.stack([np.zeros(self.size), *self.unit_total.values()])  # a zero row: no chain yet
        counts = np.stack([np.zeros(self.size, dtype=np.int64), *self.unit_count.values()])
        count_int = counts.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            count = count_int.astype(np.float64)
            mean = np.where(count > 0, totals.sum(axis=0) / count, np.nan)
            var = np.where(count > 1, (self.total_sq - count * mean**2) / (count - 1), np.nan)
            std = np.sqrt(np.clip(var, 0.0, None))
            raw_mean = np.where(count > 0, self.raw_total / count, np.nan)
        sem = self._cluster_sem(totals, counts.astype(np.float64), mean)
        finite = mean[np.isfinite(mean)]
        peak = float(finite.max()) if finite.size else 0.0
        if peak > 0:
            mean, std, sem = mean / peak, std / peak, sem / peak
        return DistanceProfile(quantity=self.quantity, rule=self.rule, distance=np.arange(self.size),
                               mean=mean, std=std, sem=sem, count=count_int, raw_mean=raw_mean,
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


def _loss_slopes(logits: torch.Tensor, labels: Sequence[float], separations: Sequence[int],
                 loss: LossSettings) -> np.ndarray:
    """``|dL/dz|`` of the training loss ``loss`` for each pair, at logit ``logits[k]`` with 0/1 label ``labels[k]``
    and separation ``separations[k] = j - i``: the derivative of the pair's term in training's summed objective
    (:meth:`protrnn.training.loss.LossSettings.binary_loss`, summed so every pair gets its own derivative), its
    ``far_weight`` included when the pair is at least ``far_separation`` apart (``near_miss_weight`` is not: the
    pairs' distances are not at hand here)."""
    z = logits.detach().float().cpu().requires_grad_(True)
    targets = torch.tensor(list(labels), dtype=torch.float32)
    apart = torch.tensor(list(separations), dtype=torch.long)
    (slope,) = torch.autograd.grad(loss.binary_loss(z, targets, reduction="sum", separations=apart), z)
    return slope.abs().numpy().astype(np.float64)


@dataclass
class PairGradients:
    """Gradient norms at every position of one chain for one scored pair (i, j), i < j.

    ``input_norms[s] = ||d logit_ij / d x_s||``; ``hidden_norms[l][t] = ||dL/dh_t||`` of layer l's output, where L
    is the pair's training loss (empty when hidden gradients were not asked for). Arrays have the chain's length.
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
                        pairs: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                        loss: LossSettings | None = None) -> Iterator[PairGradients]:
    """Per-pair gradient norms over padded batches (keys ``tokens``, ``mask``, ``pair_mask``; ``contacts`` for the
    loss gradients; ``ids`` to name chains and to look up ``pairs``).

    Pairs come from ``pairs[chain_id]`` when given, else :func:`sample_pairs` with a generator seeded by ``seed`` (the
    global RNG state is untouched). ``model`` follows the ContactModel contract (``embed``, ``forward_embedded``).
    ``loss`` is the training loss whose gradient the hidden norms are taken of (default: plain BCE). One forward pass per batch; one
    backward pass per round, each round taking the next pair of every chain.
    """
    if pairs_per_chain < 1:
        raise InputError(f"pairs_per_chain must be positive, got {pairs_per_chain}")
    loss = LossSettings() if loss is None else loss
    rng = np.random.default_rng(seed)
    counter = 0
    for batch in batches:
        ids = list(batch.get("ids") or [f"chain{counter + b}" for b in range(batch["tokens"].shape[0])])
        counter += len(ids)
        # Grad mode, eval mode and RNG forking are entered per batch, so nothing leaks into the caller between yields.
        with _measurement_mode(model):
            results = _batch_pair_gradients(model, batch, ids, pairs_per_chain, rng, hidden, pairs, loss)
        yield from results


def _batch_pair_gradients(model: torch.nn.Module, batch: Mapping[str, Any], ids: list[str], pairs_per_chain: int,
                          rng: np.random.Generator, hidden: bool,
                          pairs: Mapping[str, Sequence[tuple[int, int]]] | None,
                          loss: LossSettings) -> list[PairGradients]:
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
        labels = None if contacts_np is None else [float(contacts_np[(b, *chosen[b][r])]) for b in rows]
        # dL/dz of the training loss; chains are independent, so it scales each row's dz/dh exactly.
        separations = [chosen[b][r][1] - chosen[b][r][0] for b in rows]
        slopes = np.ones(len(rows)) if labels is None or not gh else _loss_slopes(z, labels, separations, loss)
        for k, b in enumerate(rows):
            i, j = chosen[b][r]
            length = int(lengths[b])
            results.append(PairGradients(chain=str(ids[b]), i=i, j=j, logit=float(z_np[k]),
                                         label=None if labels is None else labels[k],
                                         input_norms=gx[k, :length].copy(),
                                         hidden_norms=[g[k, :length] * slopes[k] for g in gh]))
    return results


def gradient_flow_from_batches(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], *,
                               max_distance: int = DEFAULT_MAX_DISTANCE, pairs_per_chain: int = 8, seed: int = 0,
                               hidden: bool = True, loss: LossSettings | None = None) -> GradientFlow:
    """Aggregate :func:`iter_pair_gradients` into distance profiles (nearest and anchor rules; per hidden layer)."""
    if not 1 <= max_distance <= MAX_PROFILE_DISTANCE:
        raise InputError(f"max_distance must be from 1 to {MAX_PROFILE_DISTANCE}, got {max_distance}")
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
                                  hidden=hidden, loss=loss):
        positions = np.arange(len(pg.input_norms))
        from_i = np.abs(positions - pg.i)
        near = np.minimum(from_i, np.abs(positions - pg.j))
        sens.add(pg.input_norms, near, pg.chain)
        sens_anchor.add(pg.input_norms, from_i, pg.chain)
        while len(layer_accs) < len(pg.hidden_norms):
            layer_accs.append(_Accumulator(f"hidden_gradient/layer{len(layer_accs)}", NEAREST, max_distance))
        for acc, norms in zip(layer_accs, pg.hidden_norms, strict=False):
            acc.add(norms, near, pg.chain)
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
                  batch_size: int = 8, hidden: bool = True, alphabet: Alphabet = DEFAULT_ALPHABET,
                  loss: LossSettings | None = None, contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> GradientFlow:
    """Input-sensitivity and hidden-gradient profiles over whole chains (see the module docstring for definitions);
    the hidden gradients' losses take their true labels at ``contact_cutoff`` Å."""
    if not chains:
        raise InputError("no chains given to gradient diagnostics")
    return gradient_flow_from_batches(model, chains_to_batches(chains, batch_size, alphabet,
                                                               contact_cutoff=contact_cutoff),
                                      max_distance=max_distance, pairs_per_chain=pairs_per_chain, seed=seed,
                                      hidden=hidden, loss=loss)


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
                            batch_size: int = 8, loss: LossSettings | None = None,
                            contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> list[DistanceProfile]:
    """``||dL/dh_t||`` of each recurrent layer output versus min(|i-t|, |j-t|), L the training loss of pair (i, j)
    against its label at ``contact_cutoff`` Å."""
    return gradient_flow(model, chains, max_distance=max_distance, pairs_per_chain=pairs_per_chain, seed=seed,
                         batch_size=batch_size, hidden=True, loss=loss, contact_cutoff=contact_cutoff).hidden


# ---------------------------------------------------------------------------------------------------------------------
# The training loss on whole chains


@torch.no_grad()
def _eval_logits(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits in eval mode, pairs scored in the head's tiles (bounded memory, as ``predict_proba``); the model's
    train/eval flag is restored."""
    was_training = model.training
    model.eval()
    try:
        return model.head.predict_logits(model.encoder(model.embed(tokens), mask), mask)
    finally:
        model.train(was_training)


def contact_loss_by_length(model: torch.nn.Module, chains: Sequence[ProteinChain],
                           loss: LossSettings | None = None, *, length_edges: Sequence[int] = (64, 128, 256),
                           batch_size: int = 8, alphabet: Alphabet = DEFAULT_ALPHABET,
                           max_pairs: int = DEFAULT_MAX_PAIRS,
                           contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> LossByLength:
    """The training loss ``loss`` (:mod:`protrnn.training.loss`: weighted BCE, focal term included; default plain
    BCE) in eval mode on whole chains, as the plain mean over scored upper-triangle pairs, overall and by chain
    length: the "worse validation on longer chains" evidence.

    ``loss.far_weight`` and ``loss.near_miss_weight`` are not applied (every pair weighs 1): a weighted mean would
    put a different share of far pairs into each length group (long chains hold most of them), so groups, and the
    base-rate reference loss (unweighted too), would no longer compare; ``pos_weight`` and ``focal_gamma`` are
    kept. The true contacts are Cβ-Cβ below ``contact_cutoff`` Å (the cutoff of the dataset the chains come from)."""
    if not chains:
        raise InputError("no chains to compute a loss on")
    loss = LossSettings() if loss is None else dataclasses.replace(loss, far_weight=1.0, near_miss_weight=1.0)
    device = _network_device(model)
    totals: dict[str, list[float]] = {}
    total = count = 0.0
    for batch in chains_to_batches(chains, batch_size, alphabet, max_pairs=max_pairs, contact_cutoff=contact_cutoff):
        logits = _eval_logits(model, batch["tokens"].to(device), batch["mask"].to(device))
        contacts, pair_mask = batch["contacts"].to(device), batch["pair_mask"].to(device)
        for b, length in enumerate(batch["lengths"].tolist()):
            chain_count = int(scored_pairs(pair_mask[b]).sum())
            if chain_count == 0:
                continue
            chain_sum = float(loss(logits[b:b + 1], contacts[b:b + 1], pair_mask[b:b + 1], reduction="sum"))
            entry = totals.setdefault(length_label(int(length), length_edges), [0.0, 0.0])
            entry[0] += chain_sum
            entry[1] += chain_count
            total += chain_sum
            count += chain_count
    if count == 0:
        raise InputError("no scored pairs (both residues observed, |i - j| >= 6) to compute a loss on")
    order = sorted(totals, key=length_key)
    return LossByLength(loss=total / count, n_pairs=int(count), n_chains=len(chains),
                        by_length={k: totals[k][0] / totals[k][1] for k in order},
                        pairs_by_length={k: int(totals[k][1]) for k in order})


__all__ = ["DEFAULT_MAX_PAIRS", "PairGradients", "chains_to_batches", "contact_loss_by_length", "gradient_flow",
           "gradient_flow_from_batches", "hidden_gradient_profile", "iter_pair_gradients", "sample_pairs",
           "sensitivity_profile"]
