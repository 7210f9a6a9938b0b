"""Contact-prediction metrics: every CASP convention protrnn uses lives here (documented in docs/conventions.md).

One protein is scored by :func:`evaluate_contacts` (its chance level, the expected precision of a random ranking, by
:func:`chance_precision`); a test set by :func:`average_metrics` (mean over proteins, NaN-skipping) and
:func:`bootstrap_ci` (percentile intervals from resampling proteins). Models, baselines, the ``evaluate`` command and
the report all go through these functions, so their numbers are comparable by construction.

Conventions in brief (the document has the reasoning):

* candidate pairs of a range: upper triangle ``i < j``, both residues observed, separation ``j - i`` inside the range;
* ranking: decreasing probability, ties broken by increasing ``i`` then increasing ``j`` (row-major order);
* top-L/k precision: true contacts among the first ``max(1, L // k)`` ranked candidates divided by ``max(1, L // k)``,
  where ``L`` is the full chain length, even when fewer candidates exist; NaN when the range has no candidate;
* ``probs`` is read in its upper triangle only (no symmetrisation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from protrnn.conventions import DEFAULT_BINS, HEADLINE_K, MIN_SEPARATION, RANGES, TOP_K
from protrnn.errors import InputError

DEFAULT_THRESHOLD = 0.5


def scored_pairs(observed: np.ndarray, min_separation: int = MIN_SEPARATION) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (0-based, i < j) of the pairs a chain of ``len(observed)`` residues is scored on: separation
    at least ``min_separation`` and both residues observed, in row-major order (i, then j)."""
    observed = np.asarray(observed, dtype=bool)
    rows, cols = np.triu_indices(observed.shape[0], k=min_separation)
    keep = observed[rows] & observed[cols]
    return rows[keep], cols[keep]


def rank_pairs(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The order that ranks pairs for top-L/k: decreasing score, ties by increasing i, then j (lexsort's last key is
    primary)."""
    return np.lexsort((cols, rows, -np.asarray(scores)))


def in_range(separation: np.ndarray, low: int, high: int | None) -> np.ndarray:
    """Mask of separations in the inclusive range ``low..high`` (``high`` None: open)."""
    return (separation >= low) if high is None else ((separation >= low) & (separation <= high))


def top_count(length: int, k: int = HEADLINE_K) -> int:
    """How many ranked pairs top-L/k precision looks at: ``max(1, L // k)``."""
    return max(1, int(length) // int(k))


def bin_label(low: int, high: int | None) -> str:
    """Key fragment of a separation bin: ``"24-47"``, or ``"96+"`` for an open bin."""
    return f"{low}+" if high is None else f"{low}-{high}"


def metric_keys(*, bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
                top_k: Sequence[int] = TOP_K) -> list[str]:
    """All keys :func:`evaluate_contacts` returns, in its order (used for CSV columns)."""
    keys = ["L"]
    for name in RANGES:
        keys += [f"{name}/P@L/{k}" for k in top_k]
        keys += [f"{name}/AUPR", f"{name}/F1", f"{name}/MCC", f"{name}/n_pairs", f"{name}/n_contacts"]
    for low, high in bins:
        label = bin_label(low, high)
        keys += [f"bin/{label}/P@L/{k}" for k in top_k]
        keys += [f"bin/{label}/n_pairs", f"bin/{label}/n_contacts"]
    return keys


def _check_ranges(spans: Sequence[tuple[int, int | None]]) -> None:
    """Every range must lie within what CASP scores: ``MIN_SEPARATION <= low <= high``."""
    for low, high in spans:
        if low < MIN_SEPARATION or (high is not None and high < low):
            raise InputError(f"invalid separation range ({low}, {high}): need {MIN_SEPARATION} <= low <= high "
                             f"(pairs closer than {MIN_SEPARATION} are never scored)")


def _as_bool(values: np.ndarray, what: str, name: str | None) -> np.ndarray:
    """``values`` as bool, when they are bool or only 0 / 1 (a fraction is not a truth value: InputError)."""
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise InputError(f"{what} must hold only 0/1 (or bool) values", record=name)
    return values.astype(bool)


def _validated_truth(contacts: object, observed: object | None,
                     name: str | None) -> tuple[np.ndarray, np.ndarray]:
    contacts_arr = np.asarray(contacts)
    if contacts_arr.ndim != 2 or contacts_arr.shape[0] != contacts_arr.shape[1]:
        raise InputError(f"contact map has shape {contacts_arr.shape}, expected L x L", record=name)
    length = contacts_arr.shape[0]
    contacts_arr = _as_bool(contacts_arr, "contact map", name)
    if observed is None:
        return contacts_arr, np.ones(length, dtype=bool)
    observed_arr = np.asarray(observed)
    if observed_arr.shape != (length,):
        raise InputError(f"observed mask has shape {observed_arr.shape}, expected ({length},)", record=name)
    return contacts_arr, _as_bool(observed_arr, "observed mask", name)


def _validated(probs: object, contacts: object, observed: object | None,
               name: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    contacts_arr, observed_arr = _validated_truth(contacts, observed, name)
    length = contacts_arr.shape[0]
    probs_arr = np.asarray(probs, dtype=np.float64)
    if probs_arr.shape != (length, length):
        raise InputError(f"prediction has shape {probs_arr.shape}, but the chain has {length} residues "
                         f"(expected ({length}, {length}))", record=name)
    return probs_arr, contacts_arr, observed_arr


def _average_precision(ranked_scores: np.ndarray, ranked_truth: np.ndarray) -> float:
    """Area under the precision-recall curve as ``sklearn.metrics.average_precision_score`` defines it
    (sum over distinct score thresholds of recall increase x precision), from pairs already sorted by decreasing
    score, so no second sort is needed. NaN without positives. Equality with scikit-learn is tested."""
    hits = np.cumsum(ranked_truth, dtype=np.float64)
    if ranked_truth.size == 0 or hits[-1] == 0:
        return math.nan
    # The last pair of each group of equal scores closes one threshold.
    ends = np.flatnonzero(np.append(ranked_scores[1:] != ranked_scores[:-1], True))
    true_pos = hits[ends]
    precision = true_pos / (ends + 1.0)
    recall_step = np.diff(true_pos, prepend=0.0) / hits[-1]
    return float(np.sum(recall_step * precision))


def _f1_mcc(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """F1 and MCC from boolean vectors; NaN where undefined (a zero denominator)."""
    tp = float(np.count_nonzero(truth & predicted))
    fp = float(np.count_nonzero(~truth & predicted))
    fn = float(np.count_nonzero(truth & ~predicted))
    tn = float(truth.size) - tp - fp - fn
    f1_den = 2 * tp + fp + fn
    f1 = 2 * tp / f1_den if f1_den > 0 else math.nan
    mcc_den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    mcc = (tp * tn - fp * fn) / math.sqrt(mcc_den) if mcc_den > 0 else math.nan
    return f1, mcc


def evaluate_contacts(probs: object, contacts: object, observed: object | None = None, *,
                      bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
                      threshold: float = DEFAULT_THRESHOLD, top_k: Sequence[int] = TOP_K,
                      name: str | None = None) -> dict[str, float]:
    """Score one protein's L x L contact probabilities against its true contact map.

    Args:
        probs: L x L contact probabilities in [0, 1]; only the upper triangle (i < j) is read.
        contacts: L x L true contacts (bool or 0/1), e.g. :meth:`ProteinChain.contact_map`.
        observed: length-L bool, True where the residue has coordinates; None means all observed.
        bins: separation bins for the ``bin/...`` keys (inclusive, ``None`` = open).
        threshold: a pair is predicted a contact when its probability is >= threshold (F1, MCC).
        top_k: the k of top-L/k precision.
        name: the protein's name, used in error messages.

    Returns:
        ``{"L": L}`` plus, for each range in :data:`RANGES`, ``{range}/P@L/{k}``, ``{range}/AUPR``,
        ``{range}/F1``, ``{range}/MCC``, ``{range}/n_pairs``, ``{range}/n_contacts``, and for each bin
        ``bin/{label}/P@L/{k}``, ``bin/{label}/n_pairs``, ``bin/{label}/n_contacts`` (see :func:`bin_label`).
        Undefined values are NaN, never 0.

    Raises:
        InputError: shapes disagree, probabilities outside [0, 1] or NaN on a scored pair, bad contact values.
    """
    probs_arr, contacts_arr, observed_arr = _validated(probs, contacts, observed, name)
    if not 0.0 <= threshold <= 1.0 or not all(int(k) >= 1 for k in top_k):
        raise InputError(f"threshold must be in [0, 1] and every k >= 1 (got {threshold}, {tuple(top_k)})",
                         record=name)
    spans = list(RANGES.values()) + list(bins)
    _check_ranges(spans)
    length = contacts_arr.shape[0]
    min_sep = min(low for low, _ in spans)

    # Every pair any range or bin can score, in row-major order (np.triu_indices order: i, then j).
    rows, cols = scored_pairs(observed_arr, min_sep)
    scores = probs_arr[rows, cols]
    truth = contacts_arr[rows, cols]
    if scores.size and not (np.all(scores >= 0.0) and np.all(scores <= 1.0)):  # False for NaN too
        bad = np.flatnonzero(~((scores >= 0.0) & (scores <= 1.0)))[0]
        raise InputError(f"probability {float(scores[bad])!r} at pair ({rows[bad] + 1}, {cols[bad] + 1}) is not in [0, 1]",
                         record=name)
    # One global ranking; filtering it by a range keeps the order, so each range is ranked consistently.
    order = rank_pairs(scores, rows, cols)
    ranked_sep = (cols - rows)[order]
    ranked_truth = truth[order]
    ranked_scores = scores[order]

    result: dict[str, float] = {"L": float(length)}

    def top_precisions(prefix: str, ranked_hits: np.ndarray) -> None:
        n_pairs = ranked_hits.size
        for k in top_k:
            denominator = top_count(length, k)
            result[f"{prefix}/P@L/{k}"] = (float(np.count_nonzero(ranked_hits[:denominator])) / denominator
                                           if n_pairs else math.nan)

    for range_name, (low, high) in RANGES.items():
        prefix = range_name
        member = in_range(ranked_sep, low, high)
        ranked_hits, member_scores = ranked_truth[member], ranked_scores[member]
        top_precisions(prefix, ranked_hits)
        result[f"{prefix}/AUPR"] = _average_precision(member_scores, ranked_hits)
        f1, mcc = (_f1_mcc(ranked_hits, member_scores >= threshold) if ranked_hits.size
                   else (math.nan, math.nan))
        result[f"{prefix}/F1"] = f1
        result[f"{prefix}/MCC"] = mcc
        result[f"{prefix}/n_pairs"] = float(ranked_hits.size)
        result[f"{prefix}/n_contacts"] = float(np.count_nonzero(ranked_hits))

    for low, high in bins:
        prefix = f"bin/{bin_label(low, high)}"
        ranked_hits = ranked_truth[in_range(ranked_sep, low, high)]
        top_precisions(prefix, ranked_hits)
        result[f"{prefix}/n_pairs"] = float(ranked_hits.size)
        result[f"{prefix}/n_contacts"] = float(np.count_nonzero(ranked_hits))
    return result


def chance_precision(contacts: object, observed: object | None = None, *,
                     bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS, top_k: Sequence[int] = TOP_K,
                     name: str | None = None) -> dict[str, float]:
    """The chance level of one protein: the expected top-L/k precision of a uniformly random ranking of its scored
    pairs, for every range and bin, under the ``{range}/P@L/{k}`` and ``bin/{label}/P@L/{k}`` keys of
    :func:`evaluate_contacts` (NaN where it gives NaN: no candidate pair).

    With ``m`` candidate pairs of which ``c`` are contacts and ``n = max(1, L // k)`` ranked pairs looked at, each of
    the first ``min(n, m)`` pairs of a random ranking is a contact with probability ``c / m``, so the expectation is
    ``min(n, m) * c / (m * n)``. The ``random`` baseline is one draw of such a ranking; this is its exact mean, so a
    ratio "x chance" carries no sampling noise.
    """
    contacts_arr, observed_arr = _validated_truth(contacts, observed, name)
    if not all(int(k) >= 1 for k in top_k):
        raise InputError(f"every k must be >= 1 (got {tuple(top_k)})", record=name)
    spans = {**RANGES, **{f"bin/{bin_label(low, high)}": (low, high) for low, high in bins}}
    _check_ranges(list(spans.values()))
    length = contacts_arr.shape[0]
    rows, cols = scored_pairs(observed_arr, min(low for low, _ in spans.values()))
    separation = cols - rows
    truth = contacts_arr[rows, cols]
    result: dict[str, float] = {}
    for prefix, (low, high) in spans.items():
        member = in_range(separation, low, high)
        n_pairs = int(np.count_nonzero(member))
        n_contacts = int(np.count_nonzero(truth[member]))
        for k in top_k:
            looked_at = top_count(length, k)
            result[f"{prefix}/P@L/{k}"] = (min(looked_at, n_pairs) * n_contacts / (n_pairs * looked_at)
                                           if n_pairs else math.nan)
    return result


def _matrix(per_protein: Sequence[Mapping[str, float]]) -> tuple[list[str], np.ndarray]:
    if not per_protein:
        raise InputError("no proteins to average: the test set is empty")
    keys: list[str] = []
    seen: set[str] = set()
    for record in per_protein:
        for key in record:
            if key not in seen:
                seen.add(key)
                keys.append(key)
    values = np.array([[float(record.get(key, math.nan)) for key in keys] for record in per_protein],
                      dtype=np.float64)
    return keys, values


def average_metrics(per_protein: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean of every metric over proteins, skipping NaN (a protein without candidate pairs in a range).

    Returns ``{key: {"mean": m, "n": proteins that had a value}}``; ``mean`` is NaN when ``n`` is 0.
    A key missing from some proteins counts as NaN for them.
    """
    keys, values = _matrix(per_protein)
    valid = ~np.isnan(values)
    counts = valid.sum(axis=0)
    sums = np.where(valid, values, 0.0).sum(axis=0)
    means = np.divide(sums, counts, out=np.full(len(keys), math.nan), where=counts > 0)
    return {key: {"mean": float(means[c]), "n": int(counts[c])} for c, key in enumerate(keys)}


#: Bootstrap resamples and interval level (1 - alpha = 95 %) of every interval protrnn reports: evaluation's
#: per-set intervals and the report's seed-aware and paired intervals.
BOOTSTRAP_RESAMPLES = 1000
INTERVAL_ALPHA = 0.05
#: The interval level as the report and figure captions write it ("95 %").
INTERVAL_PERCENT = f"{100 * (1 - INTERVAL_ALPHA):g} %"


def bootstrap_ci(per_protein: Sequence[Mapping[str, float]], n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 alpha: float = INTERVAL_ALPHA) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each protein-averaged metric, resampling proteins with replacement.

    The same resampled protein sets are used for every key (paired), so intervals of different metrics come from
    one bootstrap. Means inside a replicate skip NaN like :func:`average_metrics`; replicates where a key has no
    value are ignored, and a key never defined gives ``(nan, nan)``. Deterministic for a given ``seed``.
    """
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise InputError(f"need n_boot >= 1 and 0 < alpha < 1 (got {n_boot}, {alpha})")
    keys, values = _matrix(per_protein)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.shape[0], size=(n_boot, values.shape[0]))
    intervals: dict[str, tuple[float, float]] = {}
    for c, key in enumerate(keys):
        sample = values[picks, c]  # n_boot x n_proteins
        valid = ~np.isnan(sample)
        counts = valid.sum(axis=1)
        means = np.where(valid, sample, 0.0).sum(axis=1)[counts > 0] / counts[counts > 0]
        if means.size == 0:
            intervals[key] = (math.nan, math.nan)
            continue
        low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        intervals[key] = (float(low), float(high))
    return intervals


def summarize(per_protein: Sequence[Mapping[str, float]], n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
              alpha: float = INTERVAL_ALPHA) -> dict[str, dict[str, float]]:
    """JSON-ready summary: ``{key: {"mean", "n", "low", "high"}}`` from :func:`average_metrics` and
    :func:`bootstrap_ci` (the interval level is ``1 - alpha``)."""
    means = average_metrics(per_protein)
    intervals = bootstrap_ci(per_protein, n_boot=n_boot, seed=seed, alpha=alpha)
    return {key: {**stats, "low": intervals[key][0], "high": intervals[key][1]} for key, stats in means.items()}
