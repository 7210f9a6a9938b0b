"""Optimiser and learning-rate schedule shared by contact training and encoder pretraining.

The LR multiplier is a callable object, so ``LambdaLR.state_dict`` restores it on resume."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


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


def adamw_warmup_cosine(net: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                        warmup_steps: int, total_steps: float, min_ratio: float,
                        lr_scales: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` value: AdamW that decays weight matrices only (biases, norm gains and
    embedding tables are left free), stepped per batch through :class:`WarmupCosine`.

    ``lr_scales`` maps parameter-name prefixes to multiples of ``lr`` (the first prefix that matches wins; other
    parameters train at ``lr``). Scaled parameters get their own parameter groups after the two unscaled ones
    (decayed, not decayed), so without scales the optimiser, and the checkpoints it writes, are as before; the
    schedule multiplies every group's rate alike, so a scaled group keeps its ratio to ``lr`` throughout.
    """
    embeddings = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Embedding)}
    scales = dict(lr_scales or {})
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for name, param in net.named_parameters():
        if param.requires_grad:
            scale = next((float(s) for prefix, s in scales.items() if name.startswith(prefix)), 1.0)
            decays = param.ndim >= 2 and id(param) not in embeddings
            groups.setdefault((scale, decays), []).append(param)
    optimizer = torch.optim.AdamW([{"params": params, "weight_decay": weight_decay if decays else 0.0,
                                    "lr": lr * scale}
                                   for (scale, decays), params in groups.items()], lr=lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, float(total_steps),
                                                                          min_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def finite_val_metrics(callback_metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The ``val/*`` metrics as floats (non-finite -> None), for storing in a checkpoint."""
    metrics: dict[str, float | None] = {}
    for key, value in callback_metrics.items():
        if key.startswith("val/"):
            number = float(value)
            metrics[key] = number if math.isfinite(number) else None
    return metrics
