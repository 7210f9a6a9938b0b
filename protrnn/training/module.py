"""Lightning logic for contact training: loss, optimiser, schedule, logging and the divergence guard.

The network itself lives in :class:`protrnn.model.contact_model.ContactModel` (``self.net``), so an exported model
carries no Lightning code and the training recipe can change without touching the architecture.

Class imbalance: contacts are about 2-5 % of the scored pairs of a chain (fewer at long range), so an unweighted BCE
is minimised by predicting "no contact" everywhere and learns slowly. The default treatment is BCE with a positive-class
weight (``pos_weight``), which multiplies the loss of true contacts; ``focal_gamma > 0`` adds a focal modulation
(Lin et al. 2017) that down-weights pairs already classified confidently. The ranking metrics (top-L/k precision) do not
depend on calibration, so a moderate ``pos_weight`` is a pure optimisation aid; docs/training.md records the
measurement behind the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from protrnn.errors import InputError
from protrnn.model.config import ModelConfig

#: Separation ranges scored on validation (inclusive bounds, ``None`` = open), as in protrnn.evaluation.metrics.
VAL_RANGES: dict[str, tuple[int, int | None]] = {
    "short": (6, 11),
    "medium": (12, 23),
    "long": (24, None),
    "medium_long": (12, None),
}
#: The metric ModelCheckpoint and EarlyStopping watch by default (TAPE's medium+long P@L/5).
DEFAULT_MONITOR = "val/P@L5_medium_long"
#: Key under which a checkpoint stores the validation metrics of the epoch that wrote it.
CKPT_VAL_METRICS = "protrnn_val_metrics"


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/inf. Raised instead of continuing into a garbage model."""


class WarmupCosine:
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``.

    A callable object (not a lambda) so ``LambdaLR.state_dict`` stores its plain attributes and a resumed run
    continues the same schedule. ``total_steps = inf`` (no step bound known) keeps the rate constant after warm-up.
    """

    def __init__(self, warmup_steps: int, total_steps: float, min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = float(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not math.isfinite(self.total_steps):
            return 1.0
        span = max(1.0, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scored_pairs(pair_mask: Tensor) -> Tensor:
    """Upper triangle of ``pair_mask``: each unordered pair once (the model's logits are symmetric)."""
    length = pair_mask.shape[-1]
    upper = torch.ones(length, length, dtype=torch.bool, device=pair_mask.device).triu(diagonal=1)
    return pair_mask & upper


def contact_loss(logits: Tensor, contacts: Tensor, pair_mask: Tensor, *, pos_weight: float = 1.0,
                 focal_gamma: float = 0.0, reduction: str = "mean") -> Tensor:
    """Masked binary cross-entropy over the scored pairs of a batch (upper triangle, each pair once).

    Args:
        logits, contacts: [B, T, T]; contacts are 0/1.
        pair_mask: Bool [B, T, T], the batch contract's scored pairs (both observed, |i - j| >= 6).
        pos_weight: weight of the loss on true contacts (class-imbalance treatment, see module docstring).
        focal_gamma: focal modulation exponent; 0 gives plain (weighted) BCE.
        reduction: ``mean`` over scored pairs (pairs of every chain weigh the same), or ``sum``.
    Returns:
        A scalar in float32 (computed in float32 under mixed precision). Zero, with a graph, when nothing is scored.
    """
    selected = scored_pairs(pair_mask)
    x = logits[selected].float()
    y = contacts[selected].float()
    if x.numel() == 0:
        return logits.sum() * 0.0
    weight = torch.tensor(float(pos_weight), device=x.device)
    if focal_gamma == 0.0:
        losses = F.binary_cross_entropy_with_logits(x, y, pos_weight=weight, reduction="none")
    else:
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_true = torch.exp(-bce)  # probability the model gives to the true class
        losses = bce * (1.0 - p_true).pow(focal_gamma) * torch.where(y > 0.5, weight, torch.ones_like(weight))
    return losses.mean() if reduction == "mean" else losses.sum()


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
    batch, length, _ = logits.shape
    idx = torch.arange(length, device=logits.device)
    separation = idx[None, :] - idx[:, None]
    in_range = separation >= low
    if high is not None:
        in_range &= separation <= high
    candidates = scored_pairs(pair_mask) & in_range
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


def _as_model_config(model: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    if isinstance(model, ModelConfig):
        model.validate()
        return model
    if isinstance(model, Mapping):
        return ModelConfig.from_dict(dict(model))
    raise InputError(f"config key 'model.model': expected a mapping of ModelConfig fields, got {type(model).__name__}")


class ContactLightningModule(pl.LightningModule):
    """Trains a :class:`ContactModel` (``self.net``) on the batch contract of protrnn.data.batching.

    Args:
        model: the architecture (validated :class:`ModelConfig`; a plain mapping is accepted for checkpoints).
        lr: peak AdamW learning rate (reached after warm-up).
        weight_decay: AdamW decoupled weight decay on matrices (biases, norms and embeddings are not decayed).
        warmup_steps: optimiser steps of linear warm-up.
        min_lr_ratio: final learning rate of the cosine decay, as a fraction of ``lr``. The decay spans
            ``trainer.estimated_stepping_batches`` (max_steps, or max_epochs x batches per epoch).
        pos_weight: BCE weight on true contacts (class-imbalance treatment).
        focal_gamma: focal-loss exponent (0 = off).
        betas: AdamW betas.
    """

    def __init__(self, model: ModelConfig, lr: float = 3e-3, weight_decay: float = 0.01, warmup_steps: int = 100,
                 min_lr_ratio: float = 0.05, pos_weight: float = 4.0, focal_gamma: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.99)) -> None:
        super().__init__()
        self.config = _as_model_config(model)
        for key, value, ok in (
            ("lr", lr, lr > 0 and math.isfinite(lr)),
            ("weight_decay", weight_decay, weight_decay >= 0),
            ("warmup_steps", warmup_steps, isinstance(warmup_steps, int) and warmup_steps >= 0),
            ("min_lr_ratio", min_lr_ratio, 0.0 <= min_lr_ratio <= 1.0),
            ("pos_weight", pos_weight, pos_weight > 0 and math.isfinite(pos_weight)),
            ("focal_gamma", focal_gamma, focal_gamma >= 0),
            ("betas", betas, len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)),
        ):
            if not ok:
                raise InputError(f"config key 'model.{key}': invalid value {value!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.pos_weight = float(pos_weight)
        self.focal_gamma = float(focal_gamma)
        self.betas = (float(betas[0]), float(betas[1]))
        # Checkpoints must hold primitives only (torch.load(weights_only=True)): store the architecture as a dict.
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = self.config.to_dict()

        from protrnn.model.contact_model import ContactModel

        self.net = ContactModel(self.config)
        # Pair-weighted epoch means (exact over the epoch, synchronised across DDP ranks by torchmetrics).
        self.train_loss = MeanMetric()
        self.grad_norm = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_precision = torch.nn.ModuleDict({name: MeanMetric(nan_strategy="ignore") for name in VAL_RANGES})
        self._nonfinite_loss = False

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.net(tokens, mask)

    def _loss(self, batch: Mapping[str, Any], logits: Tensor, reduction: str = "mean") -> Tensor:
        return contact_loss(logits, batch["contacts"], batch["pair_mask"], pos_weight=self.pos_weight,
                            focal_gamma=self.focal_gamma, reduction=reduction)

    # ---- training -------------------------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        logits = self.net(batch["tokens"], batch["mask"])
        loss = self._loss(batch, logits)
        if not torch.isfinite(loss.detach()):
            if self.trainer.world_size == 1:
                raise self._diverged(f"loss is {loss.item()}")
            # Under DDP, raise on every rank together in on_before_optimizer_step (a lone raise would hang the
            # gradient all-reduce of the other ranks).
            self._nonfinite_loss = True
        n_pairs = scored_pairs(batch["pair_mask"]).sum().clamp(min=1)  # a tensor: no device sync
        self.train_loss.update(loss.detach(), weight=n_pairs)
        batch_size = int(batch["tokens"].shape[0])
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch_size)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=batch_size)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the total gradient L2 norm before clipping, and stop on a non-finite loss or gradient."""
        grads = [p.grad.detach() for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)).float(), 2.0)
        bad = not bool(torch.isfinite(norm)) or self._nonfinite_loss
        if str(self.trainer.precision).startswith("16"):
            bad = self._nonfinite_loss  # fp16 loss scaling skips inf-gradient steps by design
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise self._diverged(f"loss or gradient norm is not finite (gradient norm {float(norm)})")
        # After the DDP all-reduce every rank holds the same gradient: no per-step sync needed.
        self.grad_norm.update(norm.detach())
        self.log("grad_norm_step", norm, on_step=True, on_epoch=False, batch_size=1)
        self.log("grad_norm", self.grad_norm, on_step=False, on_epoch=True, batch_size=1)

    def _diverged(self, what: str) -> TrainingDiverged:
        clip = self.trainer.gradient_clip_val
        hint = (f"lower model.lr (now {self.lr:g})" + ("" if clip else " or set trainer.gradient_clip_val (e.g. 1.0)")
                + (f"; gradients are clipped at {clip:g}" if clip else ""))
        return TrainingDiverged(f"training diverged at global step {self.global_step} "
                                f"(epoch {self.current_epoch}): {what}; {hint}")

    def on_train_epoch_start(self) -> None:
        self._nonfinite_loss = False

    # ---- validation -----------------------------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        logits = self.net(batch["tokens"], batch["mask"])
        n_pairs = int(scored_pairs(batch["pair_mask"]).sum())
        if n_pairs:
            loss_sum = self._loss(batch, logits, reduction="sum")
            self.val_loss.update(loss_sum / n_pairs, weight=n_pairs)
        for name, (low, high) in VAL_RANGES.items():
            precision = top_l_precision(logits.detach(), batch["contacts"], batch["pair_mask"], batch["lengths"],
                                        low=low, high=high, k=5)
            self.val_precision[name].update(precision)

    def on_validation_epoch_end(self) -> None:
        # Logged as metric objects so Lightning computes (DDP-synchronised) and resets them at the epoch end.
        self.log("val/loss", self.val_loss, prog_bar=True)
        for name, metric in self.val_precision.items():
            self.log(f"val/P@L5_{name}", metric, prog_bar=name in ("long", "medium_long"))

    # ---- optimiser ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        # Decay weight matrices only: biases, norm gains and embedding tables are left free.
        embeddings = {id(m.weight) for m in self.net.modules() if isinstance(m, torch.nn.Embedding)}
        decay, no_decay = [], []
        for param in self.net.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 and id(param) not in embeddings else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr, betas=self.betas,
        )
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        schedule = WarmupCosine(self.warmup_steps, float(total), self.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the validation metrics of the epoch that wrote this checkpoint (floats only), for export."""
        if self._trainer is None:
            return
        metrics = {}
        for key, value in self.trainer.callback_metrics.items():
            if key.startswith("val/"):
                number = float(value)
                metrics[key] = number if math.isfinite(number) else None
        checkpoint[CKPT_VAL_METRICS] = metrics

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with a message naming the differing keys."""
        saved = (checkpoint.get("hyper_parameters") or {}).get("model")
        if isinstance(saved, Mapping):
            source = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
            check_architecture(saved, self.config, source=str(source or "checkpoint"))


def check_architecture(saved: Mapping[str, Any], expected: ModelConfig, *, source: str) -> None:
    """Raise InputError naming every architecture key where ``saved`` differs from ``expected``.

    ``pair_chunk_size`` is an inference setting, not architecture, and is ignored.
    """
    current = expected.to_dict()
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key == "pair_chunk_size":
            continue
        if saved.get(key, "<missing>") != current.get(key, "<missing>"):
            diffs.append(f"model.{key}={saved.get(key, '<missing>')!r} (config: {current.get(key, '<missing>')!r})")
    if diffs:
        raise InputError(f"the checkpoint's architecture does not match the config: {'; '.join(diffs)}; "
                         "resume with the model settings it was trained with", path=source)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling code (``weights_only=True``); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path=path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a readable checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable checkpoint ({reason})", path=path) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError("not a Lightning checkpoint (no 'state_dict')", path=path)
    return checkpoint


def network_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the ContactModel stored in a checkpoint written by :class:`ContactLightningModule`.

    Returns:
        (network in eval mode, checkpoint dict). Raises InputError when the checkpoint has no architecture, or its
        weights do not fit that architecture (missing/unexpected tensors or shape mismatches are named).
    """
    from protrnn.model.contact_model import ContactModel

    checkpoint = load_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams.get("model"), Mapping):
        raise InputError("checkpoint has no model architecture in its hyper-parameters "
                         "(was it written by protrnn train?)", path=path)
    config = ModelConfig.from_dict(dict(hparams["model"]))
    net = ContactModel(config)
    prefix = "net."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")
                parts.append(f"{label}: {shown}")
        raise InputError(f"weights do not match the architecture {config.cell}/{config.head} recorded in the "
                         f"checkpoint: {'; '.join(parts)}", path=path)
    net.load_state_dict(state, strict=True)
    net.eval()
    return net, checkpoint
