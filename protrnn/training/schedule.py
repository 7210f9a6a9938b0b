"""Learning-rate schedules (a LambdaLR multiplier that a resumed run restores from its state dict)."""

from __future__ import annotations

import math


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
