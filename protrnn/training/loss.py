"""The contact loss, in one place: used by training (protrnn.training.module) and by diagnostics.

Class imbalance: contacts are about 2-5 % of the scored pairs of a chain (fewer at long range), so an unweighted BCE
is minimised by predicting "no contact" everywhere and learns slowly. The default treatment is BCE with a positive-class
weight (``pos_weight``), which multiplies the loss of true contacts; ``focal_gamma > 0`` adds a focal modulation
(Lin et al. 2017) that down-weights pairs already classified confidently. The ranking metrics (top-L/k precision) do not
depend on calibration, so a moderate ``pos_weight`` is a pure optimisation aid; docs/training.md records the
measurement behind the default.

A distogram model (``ModelConfig.distogram_bins``) is trained instead with cross-entropy over distance classes
(:func:`distogram_loss`, as trRosetta and AlphaFold do): every scored pair contributes its Cβ-Cβ distance, not just
whether it is below 8 Å. ``contact_weight > 0`` adds the binary contact loss (the same ``pos_weight`` and
``focal_gamma``) on the distogram's derived contact logit (the log-odds of its mass below the cutoff), times that
weight: the distances stay the target, while the contact decision at the cutoff, which top-L/k precision ranks by,
weighs as much as it does for a binary head. ``far_weight`` (1 = off) multiplies the loss of every pair at least
``far_separation`` residues apart, in either loss, and the mean becomes the weighted mean: it moves the share of the
gradient towards the far pairs that the sampled blocks hold few of (docs/training.md, "What is trained").
``near_miss_weight`` (1 = off) multiplies the loss of every non-contact whose Cβ-Cβ distance is below ``near_miss_max``
Å (the pairs just beyond the cutoff, where the shipped model's far picks land most often: docs/training.md, "Where the
far picks land"), in a binary head's loss (training refuses it with a distogram head), as a weighted mean too; it
needs the pairs' distances. :func:`pair_loss` picks the loss a model's outputs call for; it works on whole maps and
on the sampled pair blocks of whole-chain training alike, because it takes the selected pairs' values (and their
separations in the chain).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from protrnn.model.heads import to_contact_logits


@dataclass(frozen=True)
class LossSettings:
    """The loss hyper-parameters a model was trained with (recorded as ``training_hparams`` in model.json)."""

    pos_weight: float = 1.0
    focal_gamma: float = 0.0
    contact_weight: float = 0.0
    far_weight: float = 1.0
    far_separation: int = 96
    near_miss_weight: float = 1.0
    near_miss_max: float = 16.0

    @classmethod
    def from_hparams(cls, hparams: dict | None) -> LossSettings:
        hparams = hparams or {}
        pos_weight, focal_gamma = hparams.get("pos_weight"), hparams.get("focal_gamma")
        contact_weight, far_weight = hparams.get("contact_weight"), hparams.get("far_weight")
        far_separation = hparams.get("far_separation")
        near_miss_weight, near_miss_max = hparams.get("near_miss_weight"), hparams.get("near_miss_max")
        return cls(pos_weight=1.0 if pos_weight is None else float(pos_weight),
                   focal_gamma=0.0 if focal_gamma is None else float(focal_gamma),
                   contact_weight=0.0 if contact_weight is None else float(contact_weight),
                   far_weight=1.0 if far_weight is None else float(far_weight),
                   far_separation=96 if far_separation is None else int(far_separation),
                   near_miss_weight=1.0 if near_miss_weight is None else float(near_miss_weight),
                   near_miss_max=16.0 if near_miss_max is None else float(near_miss_max))

    def __call__(self, logits: Tensor, contacts: Tensor, pair_mask: Tensor, reduction: str = "mean") -> Tensor:
        return contact_loss(logits, contacts, pair_mask, pos_weight=self.pos_weight, focal_gamma=self.focal_gamma,
                            reduction=reduction, far_weight=self.far_weight, far_separation=self.far_separation)

    def pair_weights(self, separations: Tensor | None) -> Tensor | None:
        """Per-pair loss weights of the selected pairs' ``separations [n]``: ``far_weight`` at or beyond
        ``far_separation``, else 1; ``None`` (unweighted) when ``far_weight`` is 1 or no separations are given."""
        if self.far_weight == 1.0 or separations is None:
            return None
        return 1.0 + (self.far_weight - 1.0) * (separations.abs() >= self.far_separation).float()

    def near_miss_weights(self, contacts: Tensor, distances: Tensor | None) -> Tensor | None:
        """Per-pair weights of the selected pairs: ``near_miss_weight`` for a non-contact closer than
        ``near_miss_max`` Å (``distances [n]``), else 1; ``None`` when ``near_miss_weight`` is 1 or no distances are
        given."""
        if self.near_miss_weight == 1.0 or distances is None:
            return None
        near = (contacts <= 0.5) & (distances.float() < self.near_miss_max)
        return 1.0 + (self.near_miss_weight - 1.0) * near.float()

    def binary_loss(self, logits: Tensor, contacts: Tensor, reduction: str = "mean",
                    separations: Tensor | None = None, distances: Tensor | None = None) -> Tensor:
        """The binary contact loss (``pos_weight``, ``focal_gamma``, ``far_weight`` by the pairs' ``separations``,
        ``near_miss_weight`` by their ``distances`` when given) of already selected contact logits ``[n]`` against
        0/1 ``contacts [n]``, in float32; zero, with a graph, for n = 0."""
        weights = self.pair_weights(separations)
        near = self.near_miss_weights(contacts, distances)
        if near is not None:
            weights = near if weights is None else weights * near
        return _binary_loss(logits.float(), contacts.float(), pos_weight=self.pos_weight,
                            focal_gamma=self.focal_gamma, reduction=reduction, weights=weights)


def pair_separations(length: int, device: torch.device) -> Tensor:
    """|i - j| of every pair of a ``length``-residue map: ``[length, length]`` integers."""
    positions = torch.arange(length, device=device)
    return (positions[None, :] - positions[:, None]).abs()


def scored_pairs(pair_mask: Tensor) -> Tensor:
    """Upper triangle of ``pair_mask``: each unordered pair once (the model's logits are symmetric)."""
    length = pair_mask.shape[-1]
    upper = torch.ones(length, length, dtype=torch.bool, device=pair_mask.device).triu(diagonal=1)
    return pair_mask & upper


def contact_loss(logits: Tensor, contacts: Tensor, pair_mask: Tensor, *, pos_weight: float = 1.0,
                 focal_gamma: float = 0.0, reduction: str = "mean", far_weight: float = 1.0,
                 far_separation: int = 96) -> Tensor:
    """Masked binary cross-entropy over the scored pairs of a batch (upper triangle, each pair once).

    Args:
        logits, contacts: [B, T, T]; contacts are 0/1.
        pair_mask: Bool [B, T, T], the batch contract's scored pairs (both observed, |i - j| >= 6).
        pos_weight: weight of the loss on true contacts (class-imbalance treatment, see above).
        focal_gamma: focal modulation exponent; 0 gives plain (weighted) BCE.
        reduction: ``mean`` over scored pairs (pairs of every chain weigh the same), or ``sum``.
        far_weight, far_separation: the loss of pairs at least ``far_separation`` apart weighs ``far_weight``
            (the mean becomes the weighted mean); 1 = every pair the same.
    Returns:
        A scalar in float32 (computed in float32 under mixed precision). Zero, with a graph, when nothing is scored.
    """
    selected = scored_pairs(pair_mask)
    settings = LossSettings(pos_weight=pos_weight, focal_gamma=focal_gamma, far_weight=far_weight,
                            far_separation=far_separation)
    separations = None  # only needed, and only computed, when far pairs are weighted
    if far_weight != 1.0:
        separations = pair_separations(pair_mask.shape[-1], pair_mask.device).expand_as(pair_mask)[selected]
    return settings.binary_loss(logits[selected], contacts[selected], reduction=reduction, separations=separations)


def _reduce(losses: Tensor, weights: Tensor | None, reduction: str) -> Tensor:
    """Mean (weighted by ``weights`` when given) or sum (of weighted losses) of per-pair ``losses [n]``."""
    if weights is None:
        return losses.mean() if reduction == "mean" else losses.sum()
    weighted = (losses * weights).sum()
    return weighted / weights.sum() if reduction == "mean" else weighted


def _binary_loss(x: Tensor, y: Tensor, *, pos_weight: float, focal_gamma: float, reduction: str,
                 weights: Tensor | None = None) -> Tensor:
    """(Weighted, focal) BCE of selected logits ``x`` against 0/1 targets ``y`` (both 1-D float32), each pair's
    loss times its ``weights`` entry when given; zero, with a graph, when nothing is selected."""
    if x.numel() == 0:
        return x.sum() * 0.0
    weight = torch.tensor(float(pos_weight), device=x.device)
    if focal_gamma == 0.0:
        losses = F.binary_cross_entropy_with_logits(x, y, pos_weight=weight, reduction="none")
    else:
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_true = torch.exp(-bce)  # probability the model gives to the true class
        losses = bce * (1.0 - p_true).pow(focal_gamma) * torch.where(y > 0.5, weight, torch.ones_like(weight))
    return _reduce(losses, weights, reduction)


def distance_classes(distances: Tensor, edges: list[float]) -> Tensor:
    """Distance class of each distance (Å): 0 below ``edges[0]``, k for ``edges[k-1] <= d < edges[k]``, and
    ``len(edges)`` at or beyond the last edge."""
    boundaries = torch.tensor(edges, dtype=distances.dtype, device=distances.device)
    return torch.bucketize(distances, boundaries, right=True)


def distogram_loss(outputs: Tensor, distances: Tensor, edges: list[float], reduction: str = "mean",
                   weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of distance-class logits ``outputs [n, len(edges) + 1]`` for the selected pairs' Cβ-Cβ
    ``distances [n]`` (Å), each pair's term times its ``weights`` entry when given (the mean is then the weighted
    mean). Computed in float32; zero with a graph when nothing is selected."""
    if outputs.shape[0] == 0:
        return outputs.sum() * 0.0
    target = distance_classes(distances.float(), edges)
    return _reduce(F.cross_entropy(outputs.float(), target, reduction="none"), weights, reduction)


def pair_loss(outputs: Tensor, contacts: Tensor, distances: Tensor | None, *, settings: LossSettings,
              edges: list[float] | None, reduction: str = "mean", contact_classes: int = 0,
              separations: Tensor | None = None) -> Tensor:
    """The training loss of selected pairs: ``outputs [n, O]`` (a model's per-pair outputs), ``contacts [n]``
    (0/1), ``distances [n]`` (Å; needed by a distogram model) and ``separations [n]`` (|i - j|; needed when
    ``settings.far_weight`` is not 1, which weights each pair's term by it). ``edges=None``: binary contact loss on
    the single output (``settings``: pos_weight, focal_gamma, near_miss_weight by ``distances``); else
    :func:`distogram_loss` over ``edges``, plus, when ``settings.contact_weight`` is above 0, that weight x the binary
    contact loss of the derived contact logit
    (:func:`protrnn.model.heads.to_contact_logits` over the first ``contact_classes`` classes, the model's
    ``ModelConfig.contact_classes``; ``contacts`` are the contacts at the same cutoff)."""
    if settings.far_weight != 1.0 and separations is None:
        raise ValueError("far_weight needs the selected pairs' separations")
    if edges is None:
        if settings.near_miss_weight != 1.0 and distances is None:
            raise ValueError("near_miss_weight needs the selected pairs' distances")
        return settings.binary_loss(outputs[..., 0], contacts, reduction=reduction, separations=separations,
                                    distances=distances)
    if distances is None:
        raise ValueError("a distogram model needs the batch's 'distances' (protrnn.data.batching.collate_contacts)")
    loss = distogram_loss(outputs, distances, edges, reduction=reduction, weights=settings.pair_weights(separations))
    if settings.contact_weight > 0.0:
        if not 0 < contact_classes <= len(edges):
            raise ValueError(f"contact_weight needs the distogram's classes below the cutoff, got {contact_classes}")
        contact = settings.binary_loss(to_contact_logits(outputs, contact_classes), contacts, reduction=reduction,
                                       separations=separations)
        loss = loss + settings.contact_weight * contact
    return loss
