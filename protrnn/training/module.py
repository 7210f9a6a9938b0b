"""Lightning logic for contact training: optimiser, logging and the divergence guard.

The network itself lives in :class:`protrnn.model.contact_model.ContactModel` (``self.net``), so an exported model
carries no Lightning code and the training recipe can change without touching the architecture. The loss is in
:mod:`protrnn.training.loss`, the LR schedule in :mod:`protrnn.training.schedule`, the validation precision in
:mod:`protrnn.training.precision` and checkpoint reading in :mod:`protrnn.model.io`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from protrnn.conventions import (
    DEFAULT_CONTACT_CUTOFF,
    FAR_RICH_PER_LENGTH,
    FAR_RICH_RANGE,
    HEADLINE_K,
    RANGES,
)
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.io import expected_state
from protrnn.model.pretrain_heads import SHARED_PREFIXES
from protrnn.training.loss import LossSettings, pair_loss, pair_separations, scored_pairs
from protrnn.training.precision import top_l_precision, true_contacts_in_range
from protrnn.training.schedule import adamw_warmup_cosine, finite_val_metrics
from protrnn.utils.resources import bytes_text, memory_limit_bytes

#: Separation ranges scored on validation: the evaluation's ranges (protrnn.conventions).
VAL_RANGES = RANGES
#: Name of the long-range precision over the chains with many far pairs only (protrnn.conventions.FAR_RICH_*).
FAR_RICH_METRIC = f"{FAR_RICH_RANGE}_far"
#: The metric ModelCheckpoint and EarlyStopping watch by default (TAPE's medium+long P@L/5).
DEFAULT_MONITOR = "val/P@L5_medium_long"
#: Key under which a checkpoint stores the validation metrics of the epoch that wrote it.
CKPT_VAL_METRICS = "protrnn_val_metrics"


#: Bytes one float32 parameter takes in training with AdamW: the weight, its gradient and the optimiser's two moments.
TRAINING_BYTES_PER_PARAMETER = 16
#: The :class:`ModelConfig` keys that size the network's parameters, each with its smallest value: a refusal names
#: the key whose smallest value shrinks the network most (:func:`check_training_memory`; ties: the first here).
SIZE_KEYS = {"hidden_size": 1, "pair_dim": 1, "embed_dim": 1, "num_layers": 1, "head_blocks": 1, "max_separation": 1,
             "vocab_size": 1}


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/inf. Raised instead of continuing into a garbage model."""


def parameter_count(build: Callable[[ModelConfig], nn.Module], config: ModelConfig) -> int | None:
    """Elements of ``build(config)``'s ``state_dict`` (its parameters), counted on a ``meta``-device build
    (:func:`protrnn.model.io.expected_state`: no memory allocated, the random state untouched); None when they
    are too many for torch to size (more than an index holds)."""
    try:
        state = expected_state(build, config, what="model config", source=None)
    except InputError:
        return None
    return sum(tensor.numel() for tensor in state.values())


def check_training_memory(build: Callable[[ModelConfig], nn.Module], config: ModelConfig,
                          limit: int | None = None) -> None:
    """Refuse a network too large to train here, before any of it is allocated: a one-line :class:`InputError`
    when its parameters, gradients and AdamW moments (:data:`TRAINING_BYTES_PER_PARAMETER` bytes a parameter)
    exceed ``limit`` bytes (default: :func:`~protrnn.utils.resources.memory_limit_bytes`, the machine's or its
    cgroup's memory, not what is free now; the check is skipped when that is unknown),
    or when torch cannot even size them. Counting is a ``meta``-device build (:func:`parameter_count`), a few
    milliseconds; only a refusal builds more, to name the :data:`SIZE_KEYS` key whose smallest value shrinks the
    network most. The memory is the machine's RAM (a GPU's is not asked, so as not to start CUDA before Lightning
    does) and activations come on top: the check stops gross mistakes, such as a ``hidden_size`` of 10,000,000,
    with a message instead of an allocation failure or the OOM killer."""
    count = parameter_count(build, config)
    limit = memory_limit_bytes() if limit is None else limit
    if count is not None and (limit is None or count * TRAINING_BYTES_PER_PARAMETER <= limit):
        return

    def shrunk(key: str) -> float:
        try:
            smaller = parameter_count(build, dataclasses.replace(config, **{key: SIZE_KEYS[key]}))
        except InputError:  # a combination the config refuses
            return math.inf
        return math.inf if smaller is None else smaller

    key = min(SIZE_KEYS, key=shrunk)
    if count is None:
        size = "with more parameters than torch can size"
    else:
        size = (f"of {count:,} parameters, about {bytes_text(count * TRAINING_BYTES_PER_PARAMETER)} to train with "
                f"AdamW ({TRAINING_BYTES_PER_PARAMETER} bytes a parameter: weight, gradient and two moments), more "
                f"than the {bytes_text(limit or 0)} of memory this machine has")
    raise InputError(f"model config key {key!r}: {getattr(config, key)!r} makes a network {size}; refused before "
                     "allocating it")


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
        contact_weight: for a distogram head, the weight of an added binary contact loss (``pos_weight``,
            ``focal_gamma``) on its derived contact logit (protrnn.training.loss; 0 = distance cross-entropy only).
            Ignored by a binary head, whose loss is that contact loss.
        betas: AdamW betas.
        encoder_lr_scale: learning rate of the embedding and recurrent encoder as a multiple of ``lr`` (1 = the
            same rate as the head; below 1 fine-tunes a pretrained encoder gently). Follows the schedule like ``lr``.
        far_weight: weight of the loss of pairs at least ``far_separation`` apart, relative to the others (1 = every
            pair the same; the mean over pairs becomes the weighted mean). Training and validation loss alike.
        far_separation: where ``far_weight`` starts (residues).
        near_miss_weight: weight of the binary loss of non-contacts closer than ``near_miss_max`` Å, relative to
            the others (1 = off; protrnn.training.loss).
        near_miss_max: where ``near_miss_weight`` stops (Å, above the contact cutoff).
    """

    def __init__(self, model: ModelConfig, lr: float = 3e-3, weight_decay: float = 0.01, warmup_steps: int = 100,
                 min_lr_ratio: float = 0.05, pos_weight: float = 4.0, focal_gamma: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.99), encoder_lr_scale: float = 1.0,
                 contact_weight: float = 0.0, far_weight: float = 1.0, far_separation: int = 96,
                 near_miss_weight: float = 1.0, near_miss_max: float = 16.0) -> None:
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
            ("encoder_lr_scale", encoder_lr_scale, 0.0 < encoder_lr_scale <= 1e3 and math.isfinite(encoder_lr_scale)),
            ("contact_weight", contact_weight, contact_weight >= 0 and math.isfinite(contact_weight)),
            ("far_weight", far_weight, far_weight > 0 and math.isfinite(far_weight)),
            ("far_separation", far_separation, isinstance(far_separation, int) and far_separation >= 1),
            ("near_miss_weight", near_miss_weight, near_miss_weight > 0 and math.isfinite(near_miss_weight)),
            ("near_miss_max", near_miss_max, near_miss_max > 0 and math.isfinite(near_miss_max)),
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
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.contact_weight = float(contact_weight)
        self.far_weight = float(far_weight)
        self.far_separation = int(far_separation)
        self.near_miss_weight = float(near_miss_weight)
        self.near_miss_max = float(near_miss_max)
        if self.near_miss_weight != 1.0 and self.config.distogram_bins is not None:
            raise InputError("config key 'model.near_miss_weight': weights the binary contact loss, and this model "
                             "has a distogram head (model.model.distogram_bins), whose loss it would not change")
        # Checkpoints must hold primitives only (torch.load(weights_only=True)): store the architecture as a dict.
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = self.config.to_dict()

        from protrnn.model.contact_model import ContactModel

        check_training_memory(ContactModel, self.config)  # a meta-device count before any real allocation
        self.net = ContactModel(self.config)
        # Pair-weighted epoch means (exact over the epoch, synchronised across DDP ranks by torchmetrics).
        self.train_loss = MeanMetric()
        self.grad_norm = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_precision = torch.nn.ModuleDict({name: MeanMetric(nan_strategy="ignore")
                                                  for name in [*VAL_RANGES, FAR_RICH_METRIC]})
        self._nonfinite_loss = False

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.net(tokens, mask)

    def check_data_settings(self, contact_cutoff: object) -> None:
        """Settings that depend on the data: ``near_miss_max`` must lie beyond the data's contact cutoff (no
        non-contact is closer than the cutoff, so a bound at or below it weights nothing), and a distogram head needs
        the data at the CASP 8 Å (its contact probability is the mass below 8 Å, :attr:`ModelConfig.contact_classes`,
        and would be validated, trained with ``contact_weight`` and evaluated against contacts at another cutoff).
        ``protrnn train`` calls this before the trainer starts; :meth:`setup` again for a fit started from Python."""
        if not isinstance(contact_cutoff, (int, float)):
            return
        if self.near_miss_weight != 1.0 and self.near_miss_max <= contact_cutoff:
            raise InputError(f"config key 'model.near_miss_max': {self.near_miss_max:g} Å is not beyond the contact "
                             f"cutoff (data.contact_cutoff {contact_cutoff:g} Å), so no pair would be weighted")
        if self.config.distogram_bins is not None and contact_cutoff != DEFAULT_CONTACT_CUTOFF:
            raise InputError(f"config key 'data.contact_cutoff': {contact_cutoff:g} Å, but a distogram head "
                             f"(model.model.distogram_bins) gives the contact probability as the mass below "
                             f"{DEFAULT_CONTACT_CUTOFF:g} Å; train it on data prepared at {DEFAULT_CONTACT_CUTOFF:g} Å, "
                             "or use a binary head (model.model.distogram_bins: null)")

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            self.check_data_settings(getattr(getattr(self.trainer, "datamodule", None), "contact_cutoff", None))

    @property
    def loss_settings(self) -> LossSettings:
        return LossSettings(pos_weight=self.pos_weight, focal_gamma=self.focal_gamma, contact_weight=self.contact_weight,
                            far_weight=self.far_weight, far_separation=self.far_separation,
                            near_miss_weight=self.near_miss_weight, near_miss_max=self.near_miss_max)

    def _selected_loss(self, batch: Mapping[str, Any], outputs: Tensor, selected: Tensor,
                       gather: Callable[[Tensor], Tensor], separations: Callable[[], Tensor],
                       reduction: str = "mean") -> Tensor:
        """:func:`pair_loss` of ``outputs[selected]`` against the batch's targets at the same pairs (``gather`` maps a
        ``[B, T, T]`` batch tensor onto ``outputs``' pair layout; ``separations()`` gives |i - j| in that layout, and is
        called only when far pairs are weighted, so the default loss builds no separation tensor)."""
        distances = batch.get("distances")
        return pair_loss(outputs[selected], gather(batch["contacts"])[selected],
                         None if distances is None else gather(distances)[selected], settings=self.loss_settings,
                         edges=self.config.distogram_bins, reduction=reduction,
                         contact_classes=self.config.contact_classes,
                         separations=None if self.far_weight == 1.0 else separations()[selected])

    @staticmethod
    def _map_separations(outputs: Tensor) -> Tensor:
        """|i - j| of every pair of whole ``[B, T, T, ...]`` maps, as ``[B, T, T]`` (a broadcast view)."""
        return pair_separations(outputs.shape[1], outputs.device).expand(outputs.shape[0], -1, -1)

    def _training_loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """The loss of a training batch and its number of scored pairs. With sampled pair blocks (``blocks`` in the
        batch: whole-chain encoder, see protrnn.data.batching.sample_pair_blocks) the head scores only the blocks;
        otherwise every pair of every (cropped) chain."""
        if batch.get("blocks") is not None:
            blocks = self.net.block_outputs(batch["tokens"], batch["mask"], batch["blocks"], int(batch["block_size"]),
                                            int(batch.get("block_context", 0)))
            selected = blocks.scored(batch["pair_mask"])
            return (self._selected_loss(batch, blocks.outputs, selected, blocks.gather, blocks.separations),
                    selected.sum())
        outputs = self.net.pair_outputs(batch["tokens"], batch["mask"])
        selected = scored_pairs(batch["pair_mask"])
        return (self._selected_loss(batch, outputs, selected, lambda t: t, lambda: self._map_separations(outputs)),
                selected.sum())

    # ---- training -------------------------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss, n_pairs = self._training_loss(batch)
        if not torch.isfinite(loss.detach()):
            if self.trainer.world_size == 1:
                raise self._diverged(f"loss is {loss.item()}")
            # Under DDP, raise on every rank together in on_before_optimizer_step (a lone raise would hang the
            # gradient all-reduce of the other ranks).
            self._nonfinite_loss = True
        self.train_loss.update(loss.detach(), weight=n_pairs.clamp(min=1))  # a tensor: no device sync
        batch_size = int(batch["tokens"].shape[0])
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch_size)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=batch_size)
        # Auxiliary objectives registered by callbacks (protrnn.training.finetune.AuxiliarySecondaryStructure).
        return loss + sum(term(self, batch, batch_idx) for term in getattr(self, "auxiliary_losses", ()))

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
        outputs = self.net.pair_outputs(batch["tokens"], batch["mask"])
        selected = scored_pairs(batch["pair_mask"])
        n_pairs = int(selected.sum())
        if n_pairs:
            loss = self._selected_loss(batch, outputs, selected, lambda t: t, lambda: self._map_separations(outputs))
            self.val_loss.update(loss, weight=n_pairs)
        logits = self.net.contact_logits(outputs).detach()
        for name, (low, high) in VAL_RANGES.items():
            precision = top_l_precision(logits, batch["contacts"], batch["pair_mask"], batch["lengths"],
                                        low=low, high=high, k=HEADLINE_K)
            self.val_precision[name].update(precision)
            if name == FAR_RICH_RANGE:  # the same precision, counted only on chains with >= L far contacts
                held = true_contacts_in_range(batch["contacts"], batch["pair_mask"], low=low, high=high)
                far = held >= FAR_RICH_PER_LENGTH * batch["lengths"].to(held.device)
                self.val_precision[FAR_RICH_METRIC].update(
                    torch.where(far, precision, torch.full_like(precision, math.nan)))

    def on_validation_epoch_end(self) -> None:
        # Logged as metric objects so Lightning computes (DDP-synchronised) and resets them at the epoch end.
        self.log("val/loss", self.val_loss, prog_bar=True)
        for name, metric in self.val_precision.items():
            self.log(f"val/P@L5_{name}", metric, prog_bar=name in ("long", "medium_long"))

    # ---- optimiser ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        return adamw_warmup_cosine(self.net, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                                   warmup_steps=self.warmup_steps, total_steps=total, min_ratio=self.min_lr_ratio,
                                   lr_scales=dict.fromkeys(SHARED_PREFIXES, self.encoder_lr_scale))

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the validation metrics of the epoch that wrote this checkpoint (floats only), for export."""
        if self._trainer is None:
            return
        checkpoint[CKPT_VAL_METRICS] = finite_val_metrics(self.trainer.callback_metrics)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with a message naming the differing keys."""
        saved = (checkpoint.get("hyper_parameters") or {}).get("model")
        if isinstance(saved, Mapping):
            source = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
            check_architecture(saved, self.config, source=str(source or "checkpoint"))


def architecture_differences(saved: Mapping[str, Any], expected: ModelConfig) -> list[str]:
    """``model.KEY=saved (config: expected)`` for every architecture key where ``saved`` differs from ``expected``.

    ``pair_chunk_size`` is an inference setting, not architecture, and is ignored.
    """
    current = expected.to_dict()
    return [f"model.{key}={saved.get(key, '<missing>')!r} (config: {current.get(key, '<missing>')!r})"
            for key in sorted(set(saved) | set(current))
            if key != "pair_chunk_size" and saved.get(key, "<missing>") != current.get(key, "<missing>")]


def check_architecture(saved: Mapping[str, Any], expected: ModelConfig, *, source: str, what: str = "checkpoint",
                       advice: str = "resume with the model settings it was trained with") -> None:
    """Raise InputError naming every architecture key where ``saved`` (the ``what``'s) differs from ``expected``
    (:func:`architecture_differences`)."""
    diffs = architecture_differences(saved, expected)
    if diffs:
        raise InputError(f"the {what}'s architecture does not match the config: {'; '.join(diffs)}; {advice}",
                         path=source)
