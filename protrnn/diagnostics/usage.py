"""Usage horizon by context ablation: how far back a trained model actually *uses* its input (Khandelwal et al. 2018).

Gradient sensitivity (:mod:`protrnn.diagnostics.gradients`) says how far back-propagation *can* reach; this module
measures what the trained model reads at inference. For a scored pair (i, j) and a context radius d, every residue
s with ``min(|s - i|, |s - j|) > d`` is replaced by a draw from a background amino-acid composition (positions,
length and mask unchanged; only residue identities change), and the pair's logit is scored again:

* ``U(d)`` = mean over pairs and draws of ``|z_ij(ablated beyond d) - z_ij(original)|`` (pairs with at least one
  residue beyond d; ``count[d]`` of them), its signed mean and ``U(d) / U(d_min)`` (``relative``);
* the same mean from each half of the draws (``halves``: the first ``draws // 2`` and the rest), whose difference
  is the Monte-Carlo noise floor of ``U(d)`` (:func:`protrnn.diagnostics.fit.usage_noise_floor`, which scales it
  for an odd count);
* with ``precision_chains`` > 0, long-range (|i - j| >= 24) top-L/5 precision when every candidate pair is scored
  under its own ablation (re-ranked within a pool of the ``pool_factor x L/5`` top candidates of the intact chain:
  scoring every pair under its own ablation costs one forward pass per pair), on chains of at most
  ``precision_max_length`` residues.

Each (pair, draw) keeps one background sequence for every d, so the ablations are nested (a smaller d replaces a
superset of residues with the same draws). The background composition is the amino-acid frequency of the training
chains (``background="train"``) or of the chain itself (``"chain"``). The usage horizon is computed from ``U`` by
:func:`protrnn.diagnostics.fit.usage_horizon` (rule in docs/diagnostics.md): the first distance no longer read, one
more than the radius beyond which nothing is read, as the gradient horizon counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from protrnn.alphabet import DEFAULT_ALPHABET, STANDARD_AMINO_ACIDS, Alphabet
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, HEADLINE_K, MIN_SEPARATION, RANGES
from protrnn.data.chain import ProteinChain
from protrnn.diagnostics.fit import usage_horizon
from protrnn.diagnostics.gradients import sample_pairs
from protrnn.diagnostics.results import (
    DEFAULT_USAGE_DISTANCES,
    DEFAULT_USAGE_FRACTION,
    UsagePrecision,
    UsageProfile,
)
from protrnn.errors import InputError
from protrnn.evaluation.metrics import rank_pairs, scored_pairs, top_count

#: Context radii measured by default (0 = only residues i and j kept).
#: Tokens per encoder forward pass (rows x chain length) when scoring ablated sequences.
DEFAULT_MAX_TOKENS = 1 << 15
#: Padded pairs per head call when the head needs the whole map (any head but the pairwise one).
_MAX_HEAD_PAIRS = 1 << 20
#: Longest chain that gets the precision measurement (its cost grows with L^2: pool x radii x draws passes of length L).
PRECISION_MAX_LENGTH = 400
#: Long range as the evaluation defines it (|i - j| >= 24).
LONG_MIN_SEPARATION = RANGES["long"][0]
#: Top-L/k precision with this k.
PRECISION_K = HEADLINE_K
BACKGROUNDS = ("train", "chain")


def background_composition(chains: Iterable[ProteinChain]) -> np.ndarray:
    """Frequencies of the 20 standard amino acids (``STANDARD_AMINO_ACIDS`` order) over ``chains``; other letters
    are not counted. A uniform composition when no standard residue is present."""
    counts = np.zeros(len(STANDARD_AMINO_ACIDS), dtype=np.float64)
    index = {a: k for k, a in enumerate(STANDARD_AMINO_ACIDS)}
    for chain in chains:
        for letter in chain.sequence.upper():
            k = index.get(letter)
            if k is not None:
                counts[k] += 1
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))


def _background_tokens(alphabet: Alphabet, composition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.asarray(alphabet.encode(STANDARD_AMINO_ACIDS), dtype=np.int64)
    probs = np.asarray(composition, dtype=np.float64)
    if probs.shape != (len(STANDARD_AMINO_ACIDS),) or not np.all(probs >= 0) or probs.sum() <= 0:
        raise InputError("background composition must be 20 non-negative frequencies")
    return tokens, probs / probs.sum()


def _network_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


class PairScorer:
    """Logits of chosen pairs of many sequences of one length, in eval mode and without gradients.

    With the pairwise head (a per-pair MLP of ``h_i``, ``h_j`` and ``min(|i - j|, max_separation)``, see
    :class:`protrnn.model.heads.PairwiseHead`) each pair is scored on a two-residue stand-in of its encoder states
    placed ``min(|i - j|, max_separation)`` apart, which costs at most ``(max_separation + 1)^2`` pairs per row
    instead of ``T^2``; any other head scores the whole map (bounded batches) and reads the pair.
    """

    def __init__(self, model: torch.nn.Module, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.model = model
        self.max_tokens = max(1, int(max_tokens))
        config = getattr(model, "config", None)
        self.pairwise = getattr(config, "head", None) == "pairwise"
        self.max_separation = int(getattr(config, "max_separation", 0) or 0)
        self.device = _network_device(model)

    @torch.no_grad()
    def __call__(self, tokens: np.ndarray, rows_i: np.ndarray, rows_j: np.ndarray) -> np.ndarray:
        """``tokens [N, T]`` (all real residues), ``rows_i``/``rows_j [N]``: logit of pair (i_n, j_n) of row n."""
        count, length = tokens.shape
        out = np.empty(count, dtype=np.float64)
        per_batch = max(1, self.max_tokens // max(1, length))
        if not self.pairwise:
            per_batch = max(1, min(per_batch, _MAX_HEAD_PAIRS // max(1, length * length)))
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, count, per_batch):
                stop = min(count, start + per_batch)
                out[start:stop] = self._score(tokens[start:stop], rows_i[start:stop], rows_j[start:stop])
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def full_map(self, tokens: np.ndarray) -> np.ndarray:
        """Logits of every pair of one intact sequence ``tokens [T]`` (the head's own tiled inference)."""
        was_training = self.model.training
        self.model.eval()
        try:
            tok = torch.as_tensor(tokens[None], dtype=torch.long, device=self.device)
            mask = torch.ones_like(tok, dtype=torch.bool)
            h = self.model.encoder(self.model.embed(tok), mask)
            return self.model.head.predict_logits(h, mask)[0].float().cpu().numpy()
        finally:
            self.model.train(was_training)

    def _score(self, tokens: np.ndarray, rows_i: np.ndarray, rows_j: np.ndarray) -> np.ndarray:
        model = self.model
        tok = torch.as_tensor(np.ascontiguousarray(tokens), dtype=torch.long, device=self.device)
        mask = torch.ones_like(tok, dtype=torch.bool)
        h = model.encoder(model.embed(tok), mask)
        rows = torch.arange(tok.shape[0], device=self.device)
        ii = torch.as_tensor(rows_i, dtype=torch.long, device=self.device)
        jj = torch.as_tensor(rows_j, dtype=torch.long, device=self.device)
        if self.pairwise and self.max_separation > 0:
            sep = (jj - ii).abs().clamp(max=self.max_separation)
            width = int(sep.max()) + 1
            stand_in = h.new_zeros(h.shape[0], width, h.shape[2])
            stand_in[rows, 0] = h[rows, ii]
            stand_in[rows, sep] = h[rows, jj]
            logits = model.head(stand_in, torch.ones(stand_in.shape[:2], dtype=torch.bool, device=self.device))
            return logits[rows, 0, sep].float().cpu().numpy()
        logits = model.head.predict_logits(h, mask)
        return logits[rows, ii, jj].float().cpu().numpy()


def _ablated(original: np.ndarray, background: np.ndarray, i: int, j: int, d: int) -> tuple[np.ndarray, bool]:
    """``original`` with every position farther than ``d`` from both i and j taken from ``background``; and whether
    anything was replaced."""
    positions = np.arange(len(original))
    far = (np.abs(positions - i) > d) & (np.abs(positions - j) > d)
    if not far.any():
        return original, False
    out = original.copy()
    out[far] = background[far]
    return out, True


def _draws(rng: np.random.Generator, tokens: np.ndarray, probs: np.ndarray, length: int, n: int) -> np.ndarray:
    return tokens[rng.choice(len(tokens), size=(n, length), p=probs)]


def usage_profile(model: torch.nn.Module, chains: Sequence[ProteinChain], *,
                  distances: Sequence[int] = DEFAULT_USAGE_DISTANCES, draws: int = 4, pairs_per_chain: int = 8,
                  seed: int = 0, composition: np.ndarray | None = None, background: str = "chain",
                  precision_chains: int = 0, pool_factor: float = 2.0, fraction: float = DEFAULT_USAGE_FRACTION,
                  alphabet: Alphabet = DEFAULT_ALPHABET, max_tokens: int = DEFAULT_MAX_TOKENS,
                  min_separation: int = MIN_SEPARATION,
                  precision_max_length: int = PRECISION_MAX_LENGTH,
                  contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> UsageProfile:
    """Measure ``U(d)`` (and optionally long-range precision) under context ablation; see the module docstring.

    ``composition``: background frequencies for ``background="train"`` (from :func:`background_composition` of the
    training chains); with ``background="chain"`` each chain's own composition is used. ``draws`` >= 2, split in
    two halves for the noise floor (the first ``draws // 2`` and the rest; an odd count is allowed, its floor
    scaled to the spread of equal halves by :func:`protrnn.diagnostics.fit.usage_noise_floor`; ``U`` uses every
    draw). Pairs come from :func:`protrnn.diagnostics.gradients.sample_pairs` with a generator seeded by ``seed``;
    so do the background draws. ``precision_chains``: how many of ``chains`` (the first
    ones with a long-range candidate and at most ``precision_max_length`` residues) also get the precision
    measurement, its true contacts Cβ-Cβ below ``contact_cutoff`` Å (the cutoff of the dataset the chains come from).
    """
    radii = sorted({int(d) for d in distances})
    if not radii or radii[0] < 0:
        raise InputError(f"usage distances must be non-negative integers, got {list(distances)!r}")
    if draws < 2:
        raise InputError(f"usage needs at least 2 draws (two halves give the noise floor), got {draws}")
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    if background == "train" and composition is None:
        raise InputError("background 'train' needs the training composition (give training chains)")
    if not chains:
        raise InputError("no chains given to the usage measurement")
    if precision_chains > 0 and not (math.isfinite(pool_factor) and pool_factor > 1.0):
        raise InputError(f"pool_factor must be a finite number above 1 (a pool of only the top L/5 cannot change "
                         f"under ablation), got {pool_factor!r}")
    scorer = PairScorer(model, max_tokens)
    rng = np.random.default_rng([seed, 7])
    n_d = len(radii)
    half = draws // 2
    sums = np.zeros((2, n_d))          # |delta| summed per half of the draws
    draws_per_half = np.array([half, draws - half], dtype=np.float64)
    signed = np.zeros(n_d)
    count = np.zeros(n_d, dtype=np.int64)
    abs_logit: list[float] = []
    chains_used = 0
    n_pairs = 0
    precision_rows: list[tuple[float, np.ndarray]] = []
    for chain in chains:
        tokens = np.asarray(alphabet.encode(chain.sequence), dtype=np.int64)
        length = len(tokens)
        bg_tokens, bg_probs = _background_tokens(
            alphabet, composition if background == "train" else background_composition([chain]))
        pairs = sample_pairs(chain.pair_mask(min_separation), pairs_per_chain, rng)
        if not pairs:
            continue
        chains_used += 1
        n_pairs += len(pairs)
        # Rows: the intact chain once per pair (its logits are the reference), then every ablation that changes
        # something, (pair, draw, radius) recorded for each.
        rows = [tokens] * len(pairs)
        ii = [i for i, _ in pairs]
        jj = [j for _, j in pairs]
        index = []
        for p, (i, j) in enumerate(pairs):
            backgrounds = _draws(rng, bg_tokens, bg_probs, length, draws)
            for r in range(draws):
                for k, d in enumerate(radii):
                    ablated, changed = _ablated(tokens, backgrounds[r], i, j, d)
                    if changed:
                        rows.append(ablated)
                        ii.append(i)
                        jj.append(j)
                        index.append((p, r, k))
        logits = scorer(np.stack(rows), np.asarray(ii), np.asarray(jj))
        originals = logits[:len(pairs)]
        abs_logit.extend(np.abs(originals).tolist())
        seen = np.zeros((len(pairs), n_d), dtype=bool)
        for (p, r, k), z in zip(index, logits[len(pairs):], strict=True):
            delta = z - originals[p]
            sums[0 if r < half else 1, k] += abs(delta)
            signed[k] += delta
            seen[p, k] = True
        count += seen.sum(axis=0)
        if len(precision_rows) < precision_chains and length <= precision_max_length:
            row = _precision_under_ablation(scorer, chain, tokens, radii, draws, rng, bg_tokens, bg_probs,
                                            pool_factor, contact_cutoff)
            if row is not None:
                precision_rows.append(row)
    if n_pairs == 0:
        raise InputError("no scored pairs (both residues observed, |i - j| >= 6) in the chains given to usage")
    with np.errstate(invalid="ignore", divide="ignore"):
        halves = np.where(count > 0, sums / (count[None, :] * draws_per_half[:, None]), np.nan)
        mean_abs = np.where(count > 0, sums.sum(axis=0) / (count * draws), np.nan)
        mean_signed = np.where(count > 0, signed / (count * draws), np.nan)
    base = next((float(v) for v in mean_abs if math.isfinite(v)), math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = mean_abs / base if base and math.isfinite(base) and base > 0 else np.full(n_d, np.nan)
    precision = None
    if precision_rows:
        originals_p = np.array([r[0] for r in precision_rows])
        ablated_p = np.stack([r[1] for r in precision_rows])  # [chains, 2 halves, d]
        precision = UsagePrecision(
            distances=np.asarray(radii, dtype=np.int64), original=float(originals_p.mean()),
            ablated=ablated_p.mean(axis=(0, 1)), halves=ablated_p.mean(axis=0), n_chains=len(precision_rows),
            pool_factor=float(pool_factor), k=PRECISION_K, min_separation=LONG_MIN_SEPARATION)
    profile = UsageProfile(
        distances=np.asarray(radii, dtype=np.int64), mean_abs_delta=mean_abs, halves=halves,
        mean_delta=mean_signed, relative=relative, count=count, mean_abs_logit=float(np.mean(abs_logit)),
        n_pairs=n_pairs, n_chains=chains_used, draws=draws, seed=seed, background=background,
        composition=None if background == "chain" else np.asarray(composition, dtype=np.float64),
        fraction=fraction, horizon=None, precision=precision)
    profile.horizon = usage_horizon(profile, fraction)
    return profile


def _precision_under_ablation(scorer: PairScorer, chain: ProteinChain, tokens: np.ndarray, radii: Sequence[int],
                              draws: int, rng: np.random.Generator, bg_tokens: np.ndarray, bg_probs: np.ndarray,
                              pool_factor: float, contact_cutoff: float) -> tuple[float, np.ndarray] | None:
    """(intact precision, ablated precision [2 halves, d]) of one chain's long-range top-L/5 (contacts below
    ``contact_cutoff`` Å), or None without a long-range candidate pair. The pool is the ``pool_factor x L/5`` best long-range candidates of the intact chain
    (whole map); intact and ablated pool logits come from the same scorer, and each ablated pair is re-ranked
    within the pool."""
    length = len(tokens)
    ii, jj = scored_pairs(chain.observed, LONG_MIN_SEPARATION)
    if ii.size == 0:
        return None
    full = scorer.full_map(tokens)
    top_n = top_count(length, PRECISION_K)
    pool = rank_pairs(full[ii, jj], ii, jj)[:max(top_n, int(math.ceil(pool_factor * top_n)))]
    pi, pj = ii[pool], jj[pool]
    truth = chain.contact_map(contact_cutoff)[pi, pj].astype(bool)
    intact = scorer(np.broadcast_to(tokens, (len(pool), length)), pi, pj)
    original = float(truth[rank_pairs(intact, pi, pj)[:top_n]].sum()) / top_n
    rows, index = [], []
    for p in range(len(pool)):
        backgrounds = _draws(rng, bg_tokens, bg_probs, length, draws)
        for r in range(draws):
            for k, d in enumerate(radii):
                ablated, changed = _ablated(tokens, backgrounds[r], int(pi[p]), int(pj[p]), d)
                if changed:
                    rows.append(ablated)
                    index.append((p, r, k))
    z = np.broadcast_to(intact[:, None, None], (len(pool), draws, len(radii))).copy()
    if rows:
        scored = scorer(np.stack(rows), np.array([pi[p] for p, _, _ in index]), np.array([pj[p] for p, _, _ in index]))
        for (p, r, k), value in zip(index, scored, strict=True):
            z[p, r, k] = value
    half = draws // 2
    result = np.zeros((2, len(radii)))
    for r in range(draws):
        for k in range(len(radii)):
            ranked = rank_pairs(z[:, r, k], pi, pj)[:top_n]
            result[0 if r < half else 1, k] += float(truth[ranked].sum()) / top_n
    result[0] /= half
    result[1] /= draws - half
    return original, result


__all__ = ["BACKGROUNDS", "DEFAULT_USAGE_DISTANCES", "LONG_MIN_SEPARATION", "PairScorer", "background_composition",
           "usage_profile"]
