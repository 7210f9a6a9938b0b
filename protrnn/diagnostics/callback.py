"""Lightning callback: measure gradient flow versus sequence distance while a model trains.

At the end of every ``every_n_epochs``-th validation epoch, :class:`GradientFlowCallback` runs
:func:`protrnn.diagnostics.gradients.gradient_flow_from_batches` on a fixed handful of validation chains and

* logs ``gradient_flow/horizon`` (the effective horizon; ``inf`` while the sensitivity never falls below
  ``fraction`` of its peak within ``max_distance``), ``gradient_flow/sensitivity@d`` for ``d`` in ``log_distances``,
  and ``gradient_flow/hidden{l}_horizon`` per recurrent layer, to every logger of the trainer;
* writes the full profiles to ``<log_dir>/gradient_flow/epoch=NNNN.json`` (the ``protrnn diagnose`` format).

**Which chains.** ``n_chains`` rows drawn uniformly at random (seeded by ``seed``: reservoir sampling, Algorithm R)
from every row of the first validation run after the sanity check, then kept, so every later measurement uses the same
chains and pairs, as ``protrnn diagnose`` draws its chains at random. The validation loader yields its batches in
ascending length order, so the first rows it produces are the shortest chains: measured on those, the distance range
ended well below ``max_distance`` and the horizon read ``inf`` (beyond the range) at every epoch.

It is cheap by construction (one forward and ``pairs_per_chain`` backward passes over at most ``n_chains`` chains),
runs only on global rank 0, in eval mode, with its own pair-sampling generator and the global RNG state forked, and
takes gradients with :func:`torch.autograd.grad` so no parameter ``.grad`` is touched: training is unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from protrnn.diagnostics.fit import summarise
from protrnn.diagnostics.gradients import gradient_flow_from_batches
from protrnn.diagnostics.results import (
    DEFAULT_FRACTION,
    DEFAULT_MAX_DISTANCE,
    DiagnosticsResult,
    save_diagnostics,
)
from protrnn.errors import InputError
from protrnn.training.loss import LossSettings

_CACHED_KEYS = ("tokens", "mask", "pair_mask", "contacts")


class GradientFlowCallback(pl.Callback):
    """Log the effective gradient horizon and sensitivity-vs-distance points during training.

    Args:
        every_n_epochs: measure after every n-th validation epoch (sanity checking is skipped).
        n_chains: validation chains measured (drawn at random from the first validation run, then kept).
        pairs_per_chain: scored pairs per chain (spread over separations), one backward pass each.
        max_distance: largest distance (residues) of the profiles.
        fraction: the horizon threshold, as a fraction of the peak sensitivity.
        log_distances: distances whose normalised sensitivity is logged as ``gradient_flow/sensitivity@d``.
        seed: chain- and pair-sampling seed (fixed, so successive epochs measure the same chains and pairs).
        hidden: also measure ``||dL/dh_t||`` per recurrent layer.
        write_json: write the profiles of each measurement into the trainer's log directory.
    """

    def __init__(self, every_n_epochs: int = 1, n_chains: int = 8, pairs_per_chain: int = 4,
                 max_distance: int = DEFAULT_MAX_DISTANCE, fraction: float = DEFAULT_FRACTION,
                 log_distances: Sequence[int] = (8, 32, 64, 128), seed: int = 0, hidden: bool = True,
                 write_json: bool = True) -> None:
        super().__init__()
        for key, value in (("every_n_epochs", every_n_epochs), ("n_chains", n_chains),
                           ("pairs_per_chain", pairs_per_chain), ("max_distance", max_distance)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"GradientFlowCallback {key} must be a positive integer, got {value!r}")
        if not 0.0 < fraction < 1.0:
            raise InputError(f"GradientFlowCallback fraction must be in (0, 1), got {fraction!r}")
        self.every_n_epochs = every_n_epochs
        self.n_chains = n_chains
        self.pairs_per_chain = pairs_per_chain
        self.max_distance = max_distance
        self.fraction = float(fraction)
        self.log_distances = tuple(int(d) for d in log_distances)
        self.seed = int(seed)
        self.hidden = bool(hidden)
        self.write_json = bool(write_json)
        self._cache: list[dict[str, Any]] = []
        self._rows_seen = 0
        self._frozen = False
        self._rng = np.random.default_rng(self.seed)
        self.last_result: DiagnosticsResult | None = None
        self.last_metrics: dict[str, float] = {}

    # -- collecting chains --------------------------------------------------------------------------------------------

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or self._frozen or not trainer.is_global_zero or dataloader_idx != 0:
            return
        if not isinstance(batch, dict) or any(key not in batch for key in _CACHED_KEYS[:3]):
            return
        ids = batch.get("ids")
        lengths = batch["mask"].sum(dim=1)
        for row in range(int(batch["tokens"].shape[0])):
            slot = self._reservoir_slot()
            if slot is None:
                continue
            width = int(lengths[row])
            entry: dict[str, Any] = {}
            for key in _CACHED_KEYS:
                if key not in batch:
                    continue
                value = batch[key][row:row + 1]
                value = value[:, :width, :width] if value.dim() == 3 else value[:, :width]
                entry[key] = value.detach().to("cpu").clone()
            entry["ids"] = [str(ids[row])] if ids is not None else None
            if slot == len(self._cache):
                self._cache.append(entry)
            else:
                self._cache[slot] = entry

    def _reservoir_slot(self) -> int | None:
        """Algorithm R: the k-th row seen (0-based) fills slot k while ``k < n_chains``, then replaces a uniformly drawn
        slot with probability ``n_chains / (k + 1)``; every row of the run ends up kept with probability
        ``n_chains / rows``."""
        seen = self._rows_seen
        self._rows_seen += 1
        if seen < self.n_chains:
            return seen
        slot = int(self._rng.integers(0, seen + 1))
        return slot if slot < self.n_chains else None

    # -- measuring ----------------------------------------------------------------------------------------------------

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self._cache:
            return
        self._frozen = True  # the first validation run's draw is kept for every later measurement
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        net = getattr(pl_module, "net", pl_module)
        if not (hasattr(net, "embed") and hasattr(net, "forward_embedded")):
            raise InputError("GradientFlowCallback needs a module with `.net` (a ContactModel) or with "
                             "`embed` and `forward_embedded`")
        # The hidden-gradient loss is the module's own training loss (pos_weight, focal_gamma from its hparams).
        loss = LossSettings.from_hparams(dict(getattr(pl_module, "hparams", None) or {}))
        flow = gradient_flow_from_batches(net, self._cache, max_distance=self.max_distance,
                                          pairs_per_chain=self.pairs_per_chain, seed=self.seed, hidden=self.hidden,
                                          loss=loss)
        config = net.config.to_dict() if hasattr(getattr(net, "config", None), "to_dict") else {}
        result = summarise(flow, self.fraction, model=f"epoch={trainer.current_epoch}", config=config)
        result.metrics = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
        metrics = {"gradient_flow/horizon": math.inf if result.horizon is None else float(result.horizon)}
        for distance in self.log_distances:
            value = flow.sensitivity.value_at(distance)
            if math.isfinite(value):
                metrics[f"gradient_flow/sensitivity@{distance}"] = value
        for layer, horizon in enumerate(result.hidden_horizons):
            metrics[f"gradient_flow/hidden{layer}_horizon"] = math.inf if horizon is None else float(horizon)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        self.last_result, self.last_metrics = result, metrics
        if self.write_json:
            save_diagnostics(result, _log_dir(trainer) / "gradient_flow" / f"epoch={trainer.current_epoch:04d}.json")


def _log_dir(trainer: pl.Trainer) -> Path:
    """``trainer.log_dir`` without its broadcast (a collective call would hang when only rank 0 runs)."""
    for logger in trainer.loggers:
        directory = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if directory:
            return Path(directory)
    return Path(trainer.default_root_dir)


__all__ = ["GradientFlowCallback"]
