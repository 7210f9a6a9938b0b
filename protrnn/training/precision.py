"""Top-L/k precision on a batch of logits, in torch: the validation metric of training (checkpoint selection).

The numpy reference for evaluation is :func:`protrnn.evaluation.metrics.evaluate_contacts`; tests check they agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from protrnn.training.loss import scored_pairs


def _candidates(pair_mask: Tensor, low: int, high: int | None) -> Tensor:
    """Scored upper-triangle pairs ``[B, T, T]`` with ``low <= j - i <= high``."""
    idx = torch.arange(pair_mask.shape[-1], device=pair_mask.device)
    separation = idx[None, :] - idx[:, None]
    in_range = separation >= low
    if high is not None:
        in_range &= separation <= high
    return scored_pairs(pair_mask) & in_range


def true_contacts_in_range(contacts: Tensor, pair_mask: Tensor, *, low: int, high: int | None) -> Tensor:
    """True contacts of each chain among its scored pairs with ``low <= j - i <= high`` (each pair once): the
    ``RANGE/n_contacts`` of :func:`protrnn.evaluation.metrics.evaluate_contacts`. Returns int64 [B]."""
    truth = (contacts > 0.5) & _candidates(pair_mask, low, high)
    return truth.reshape(truth.shape[0], -1).sum(dim=1)


def top_l_precision(logits: Tensor, contacts: Tensor, pair_mask: Tensor, lengths: Tensor, *,
                    low: int, high: int | None, k: int = 5) -> Tensor:
    """Top-L/k precision of each chain in a batch within a separation range, vectorised.

    Same conventions as :func:`protrnn.evaluation.metrics.evaluate_contacts` (tests check they agree): candidates are
    the scored upper-triangle pairs with ``low <= j - i <= high``, ranked by decreasing score with ties in row-major
    order; precision = true contacts among the first ``max(1, L // k)`` candidates / ``max(1, L // k)``, with L the
    chain length (so missing candidates count as misses); NaN for a chain with no candidate.

    Returns:
        Float [B] (float32).
    """
    batch = logits.shape[0]
    candidates = _candidates(pair_mask, low, high)
    scores = logits.float().masked_fill(~candidates, -math.inf).reshape(batch, -1)
    truth = (contacts > 0.5) & candidates
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranked = torch.gather(truth.reshape(batch, -1), 1, order)
    top_n = torch.clamp(lengths.to(logits.device) // k, min=1)
    take = torch.arange(ranked.shape[1], device=logits.device)[None, :] < top_n[:, None]
    hits = (ranked & take).sum(dim=1).float()
    precision = hits / top_n.float()
    has_candidates = candidates.reshape(batch, -1).any(dim=1)
    return torch.where(has_candidates, precision, torch.full_like(precision, math.nan))
