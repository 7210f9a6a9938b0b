"""Structure-aware pretraining of the recurrent encoder, with Lightning: objectives, data, module, callbacks, export.

Objectives (each weighted; a weight of 0 turns it off, at least one must be on):

* **8-state secondary structure**: cross-entropy of ``heads.ss8`` over residues with a label
  (:data:`protrnn.data.structure_labels.MASKED` residues are ignored). Validation reports Q8 and Q3 (the predicted
  state and the label both reduced with the standard map H, G, I -> H; E, B -> E; rest -> C), residue-weighted over
  the whole validation split;
* **masked-residue recovery** (BERT-style): each standard residue is selected with probability ``mask_fraction``
  (0.15); of the selected, 80 % are replaced by ``<unk>`` (the alphabet's unknown token serves as the mask token, so
  the vocabulary and the embedding stay those of the contact model), 10 % by a random standard residue and 10 % are
  left unchanged. ``heads.residue`` predicts the original residue at the selected positions only, from the
  bidirectional encoder state; validation reports the accuracy there (``val/mask_acc``), with a fixed masking per
  validation batch so epochs compare.

During training one forward pass on the corrupted input serves both losses. During validation secondary structure is
scored on the clean input (what a downstream model sees) and masked residues on a separately corrupted one.

The data are the ``train.npz`` / ``val.npz`` of ``protrnn pretrain prepare`` (split by sequence cluster); training
chains are cropped at random to ``crop_length`` and packed under a token budget
(:class:`~protrnn.data.batching.TokenBudgetBatchSampler`), validation chains are whole.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchmetrics import SumMetric

from protrnn.alphabet import UNK_TOKEN
from protrnn.data.packing import right_pad
from protrnn.data.structure_labels import MASKED, SS8_TO_SS3, StructureLabelSet, load_structure_labels
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.io import load_checkpoint, network_from_checkpoint
from protrnn.model.pretrain_heads import (
    FIRST_RESIDUE_TOKEN,
    N_RESIDUES,
    PretrainNetwork,
    save_pretrained,
)
from protrnn.training.callbacks import checkpoint_of_this_run, recorded_count, recorded_metrics
from protrnn.training.datamodule import config_int, epoch_loader
from protrnn.training.module import CKPT_VAL_METRICS, TrainingDiverged, check_training_memory
from protrnn.training.schedule import adamw_warmup_cosine, finite_val_metrics

#: Target value of positions that are not scored (``F.cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100
#: BERT's split of the selected residues: replaced by the mask token, by a random residue, left unchanged.
MASK_TOKEN_SHARE, RANDOM_SHARE = 0.8, 0.1
#: The metric checkpoints of ``protrnn pretrain fit`` follow (the weighted sum of the active objectives).
PRETRAIN_MONITOR = "val/loss"
#: Key of the pretraining settings in a checkpoint's hyper-parameters: marks a pretraining checkpoint.
OBJECTIVE_KEYS = ("ss_weight", "mask_weight", "mask_fraction")


# ------------------------------------------------------------------------------------------------ objectives
def mask_residues(tokens: Tensor, mask: Tensor, fraction: float,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT-style corruption: ``(inputs, targets)``.

    Every standard residue (token >= :data:`FIRST_RESIDUE_TOKEN` under ``mask``) is selected with probability
    ``fraction``; selected ones become ``<unk>`` (80 %), a random standard residue (10 %) or stay (10 %).
    ``targets`` holds the residue class (token - :data:`FIRST_RESIDUE_TOKEN`, 0..19) at selected positions and
    :data:`IGNORE_INDEX` elsewhere. Random numbers come from ``generator`` (drawn on its device, then moved) or
    from the global RNG of ``tokens``' device.
    """
    device = generator.device if generator is not None else tokens.device
    shape = tokens.shape
    eligible = (mask & (tokens >= FIRST_RESIDUE_TOKEN)).to(device)
    selected = eligible & (torch.rand(shape, generator=generator, device=device) < fraction)
    action = torch.rand(shape, generator=generator, device=device)
    random_residue = torch.randint(FIRST_RESIDUE_TOKEN, FIRST_RESIDUE_TOKEN + N_RESIDUES, shape,
                                   generator=generator, device=device)
    original = tokens.to(device)
    inputs = torch.where(selected & (action < MASK_TOKEN_SHARE), torch.full_like(original, UNK_TOKEN), original)
    inputs = torch.where(selected & (action >= MASK_TOKEN_SHARE) & (action < MASK_TOKEN_SHARE + RANDOM_SHARE),
                         random_residue, inputs)
    targets = torch.where(selected, original - FIRST_RESIDUE_TOKEN, torch.full_like(original, IGNORE_INDEX))
    return inputs.to(tokens.device), targets.to(tokens.device)


def masked_residue_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the selected positions only (``targets != IGNORE_INDEX``); 0 when there are none."""
    scored = targets != IGNORE_INDEX
    if not bool(scored.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[scored].float(), targets[scored])


def ss8_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over residues with an 8-state label (``labels >= 0``); 0 when there are none."""
    labelled = labels >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled].float(), labels[labelled])


def ss_counts(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(correct 8-state, correct 3-state, labelled residues)`` of argmax predictions (3-state by the standard map
    applied to prediction and label alike)."""
    labelled = labels >= 0
    predicted = logits.argmax(-1)[labelled]
    truth = labels[labelled]
    to_ss3 = torch.as_tensor(SS8_TO_SS3, device=logits.device)
    return ((predicted == truth).sum(), (to_ss3[predicted] == to_ss3[truth]).sum(), labelled.sum())


# ------------------------------------------------------------------------------------------------------ data
class StructureLabelExamples(Dataset):
    """Chain ``i`` of a :class:`StructureLabelSet` as one example, cropped to ``crop_length`` (random window for
    training, seeded by ``(seed, epoch, i)``; the first window otherwise)."""

    def __init__(self, labels: StructureLabelSet, crop_length: int | None = None, random_crop: bool = False,
                 seed: int = 0, indices: Sequence[int] | None = None) -> None:
        self.labels = labels
        self.crop_length = crop_length
        self.random_crop = random_crop
        self.seed = int(seed)
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def lengths(self) -> np.ndarray:
        lengths = self.labels.lengths[self.indices]
        return lengths if self.crop_length is None else np.minimum(lengths, self.crop_length)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        position, epoch = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), self.epoch)
        index = int(self.indices[position])
        tokens, ss8 = self.labels.tokens(index), self.labels.ss8(index)
        start, length = 0, len(tokens)
        if self.crop_length is not None and length > self.crop_length:
            if self.random_crop:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF,
                                                                    index]))
                start = int(rng.integers(0, length - self.crop_length + 1))
            length = self.crop_length
        return {"tokens": tokens[start:start + length].astype(np.int64),
                "ss8": ss8[start:start + length].astype(np.int64), "length": length}


def collate_labels(examples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Right-padded batch: ``tokens`` (0 = padding), ``mask``, ``ss8`` (:data:`MASKED` at padding), ``lengths``."""
    lengths = [int(ex["length"]) for ex in examples]
    tokens = right_pad([np.asarray(ex["tokens"], dtype=np.int64) for ex in examples], np.int64)
    ss8 = right_pad([np.asarray(ex["ss8"], dtype=np.int64) for ex in examples], np.int64, fill=MASKED)
    mask = np.arange(tokens.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return {"tokens": torch.from_numpy(tokens), "mask": torch.from_numpy(mask), "ss8": torch.from_numpy(ss8),
            "lengths": torch.tensor(lengths, dtype=torch.long)}


class StructureLabelDataModule(pl.LightningDataModule):
    """``train.npz`` / ``val.npz`` of ``protrnn pretrain prepare`` -> batches for :class:`PretrainLightningModule`.

    Args:
        train_path, val_path: structure-label files (:mod:`protrnn.data.structure_labels`).
        crop_length: training chains longer than this are cropped to a random window each epoch (null = whole).
        max_tokens: padded tokens per training batch (``B * T_max``).
        val_max_tokens: the same for validation (default ``max_tokens``, raised to fit the longest chain).
        val_max_chains: validate on a seeded random subset of at most this many chains (null = all).
        num_workers: DataLoader worker processes (0 = in the training process).
        seed: seed of crops, batch order and the validation subset.
    """

    def __init__(self, train_path: str | Path, val_path: str | Path, crop_length: int | None = 512,
                 max_tokens: int = 8192, val_max_tokens: int | None = None, val_max_chains: int | None = None,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.train_path, self.val_path = Path(train_path), Path(val_path)
        self.crop_length = config_int("crop_length", crop_length, minimum=1, allow_none=True)
        self.max_tokens = config_int("max_tokens", max_tokens, minimum=1)
        self.val_max_tokens = config_int("val_max_tokens", val_max_tokens, minimum=1, allow_none=True)
        self.val_max_chains = config_int("val_max_chains", val_max_chains, minimum=1, allow_none=True)
        self.num_workers = config_int("num_workers", num_workers, minimum=0)
        self.seed = config_int("seed", seed, minimum=0)
        for key, path in (("train_path", self.train_path), ("val_path", self.val_path)):
            if not path.is_file():
                raise InputError(f"config key 'data.{key}': structure-label file not found (make one with "
                                 "`protrnn pretrain prepare`)", path=path)
        self.save_hyperparameters()
        self.train_set: StructureLabelExamples | None = None
        self.val_set: StructureLabelExamples | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            labels = load_structure_labels(self.train_path)
            if len(labels) == 0:
                raise InputError("training split holds no chains", path=self.train_path)
            self.train_set = StructureLabelExamples(labels, self.crop_length, random_crop=True, seed=self.seed)
        if self.val_set is None and stage in (None, "fit", "validate"):
            labels = load_structure_labels(self.val_path)
            if len(labels) == 0:
                raise InputError("validation split holds no chains", path=self.val_path)
            indices = None
            if self.val_max_chains is not None and len(labels) > self.val_max_chains:
                rng = np.random.default_rng(self.seed)
                indices = np.sort(rng.choice(len(labels), size=self.val_max_chains, replace=False))
            self.val_set = StructureLabelExamples(labels, None, random_crop=False, seed=self.seed, indices=indices)

    def _loader(self, dataset: StructureLabelExamples, max_tokens: int, shuffle: bool) -> DataLoader:
        from protrnn.data.batching import TokenBudgetBatchSampler

        trainer = self.trainer
        replicas, rank = (int(trainer.world_size), int(trainer.global_rank)) if trainer is not None else (1, 0)
        batches = TokenBudgetBatchSampler(dataset.lengths.tolist(), max_tokens=max_tokens, shuffle=shuffle,
                                          seed=self.seed, num_replicas=replicas, rank=rank, yield_epoch=shuffle)
        return epoch_loader(dataset, batches, training=shuffle, trainer=lambda: self.trainer,
                            collate_fn=collate_labels, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, self.max_tokens, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        budget = max(self.val_max_tokens or self.max_tokens, int(self.val_set.lengths.max()))
        return self._loader(self.val_set, budget, shuffle=False)


# ---------------------------------------------------------------------------------------------------- module
class PretrainLightningModule(pl.LightningModule):
    """Pretrains :class:`~protrnn.model.pretrain_heads.PretrainNetwork` (``self.net``) on structure labels.

    Args:
        model: the architecture (the contact model's :class:`ModelConfig`; head keys are ignored here).
        ss_weight: weight of the 8-state secondary-structure loss (0 = off).
        mask_weight: weight of the masked-residue loss (0 = off: the input is then never corrupted).
        mask_fraction: probability that a residue is selected for masked-residue recovery.
        lr, weight_decay, warmup_steps, min_lr_ratio, betas: AdamW with linear warm-up and cosine decay, as for
            contact training (decay on weight matrices only).
        schedule_steps: optimiser steps the cosine decay spans (default: the trainer's estimate, which is infinite,
            i.e. a constant rate after warm-up, when only ``max_time`` bounds the run).
        val_mask_seed: seed of the fixed validation masking.
    """

    def __init__(self, model: ModelConfig, ss_weight: float = 1.0, mask_weight: float = 1.0,
                 mask_fraction: float = 0.15, lr: float = 3e-3, weight_decay: float = 0.01, warmup_steps: int = 100,
                 min_lr_ratio: float = 0.05, betas: tuple[float, float] = (0.9, 0.99),
                 schedule_steps: int | None = None, val_mask_seed: int = 0) -> None:
        super().__init__()
        if isinstance(model, Mapping):
            model = ModelConfig.from_dict(dict(model))
        model.validate()
        for key, value, ok in (
            ("ss_weight", ss_weight, ss_weight >= 0 and math.isfinite(ss_weight)),
            ("mask_weight", mask_weight, mask_weight >= 0 and math.isfinite(mask_weight)),
            ("mask_fraction", mask_fraction, 0.0 < mask_fraction < 1.0),
            ("lr", lr, lr > 0 and math.isfinite(lr)),
            ("weight_decay", weight_decay, weight_decay >= 0),
            ("warmup_steps", warmup_steps, isinstance(warmup_steps, int) and warmup_steps >= 0),
            ("min_lr_ratio", min_lr_ratio, 0.0 <= min_lr_ratio <= 1.0),
            ("betas", betas, len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)),
            ("schedule_steps", schedule_steps, schedule_steps is None or schedule_steps >= 1),
        ):
            if not ok:
                raise InputError(f"config key 'model.{key}': invalid value {value!r}")
        if ss_weight == 0 and mask_weight == 0:
            raise InputError("config keys 'model.ss_weight' and 'model.mask_weight' are both 0: nothing to learn")
        self.config = model
        self.ss_weight, self.mask_weight, self.mask_fraction = float(ss_weight), float(mask_weight), float(mask_fraction)
        self.lr, self.weight_decay, self.warmup_steps = float(lr), float(weight_decay), int(warmup_steps)
        self.min_lr_ratio, self.betas = float(min_lr_ratio), (float(betas[0]), float(betas[1]))
        self.schedule_steps, self.val_mask_seed = schedule_steps, int(val_mask_seed)
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = self.config.to_dict()
        check_training_memory(PretrainNetwork, self.config)  # a meta-device count before any real allocation
        self.net = PretrainNetwork(self.config)
        names = ("ss_correct8", "ss_correct3", "ss_total", "ss_loss", "mask_correct", "mask_total", "mask_loss")
        self.val_sums = torch.nn.ModuleDict({name: SumMetric() for name in names})

    def forward(self, tokens: Tensor, mask: Tensor) -> Any:
        return self.net(tokens, mask)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        tokens, mask = batch["tokens"], batch["mask"]
        targets = None
        if self.mask_weight > 0:
            tokens, targets = mask_residues(tokens, mask, self.mask_fraction)
        out = self.net(tokens, mask)
        size = int(mask.shape[0])
        loss = out.ss8.new_zeros(())
        if self.ss_weight > 0:
            ss = ss8_loss(out.ss8, batch["ss8"])
            loss = loss + self.ss_weight * ss
            self.log("train/ss_loss", ss.detach(), on_step=True, on_epoch=True, batch_size=size)
        if targets is not None:
            recovered = masked_residue_loss(out.residue, targets)
            loss = loss + self.mask_weight * recovered
            self.log("train/mask_loss", recovered.detach(), on_step=True, on_epoch=True, batch_size=size)
        if not torch.isfinite(loss.detach()):
            raise TrainingDiverged(f"pretraining diverged at global step {self.global_step}: loss is {loss.item()}; "
                                   f"lower model.lr (now {self.lr:g})")
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        tokens, mask, labels = batch["tokens"], batch["mask"], batch["ss8"]
        sums = self.val_sums
        if self.ss_weight > 0:
            out = self.net(tokens, mask)
            correct8, correct3, total = ss_counts(out.ss8, labels)
            sums["ss_correct8"].update(correct8)
            sums["ss_correct3"].update(correct3)
            sums["ss_total"].update(total)
            sums["ss_loss"].update(ss8_loss(out.ss8, labels) * total)
        if self.mask_weight > 0:
            generator = torch.Generator().manual_seed(self.val_mask_seed * 1_000_003 + batch_idx)
            inputs, targets = mask_residues(tokens.cpu(), mask.cpu(), self.mask_fraction, generator)
            inputs, targets = inputs.to(tokens.device), targets.to(tokens.device)
            out = self.net(inputs, mask)
            scored = targets != IGNORE_INDEX
            sums["mask_correct"].update((out.residue.argmax(-1)[scored] == targets[scored]).sum())
            sums["mask_total"].update(scored.sum())
            sums["mask_loss"].update(masked_residue_loss(out.residue, targets) * scored.sum())

    def on_validation_epoch_end(self) -> None:
        values = {name: float(metric.compute()) if metric.update_called else 0.0
                  for name, metric in self.val_sums.items()}
        for metric in self.val_sums.values():
            metric.reset()
        logged: dict[str, float] = {}
        loss = 0.0
        if self.ss_weight > 0 and values["ss_total"] > 0:
            total = values["ss_total"]
            logged.update({"val/Q8": values["ss_correct8"] / total, "val/Q3": values["ss_correct3"] / total,
                           "val/ss_loss": values["ss_loss"] / total})
            loss += self.ss_weight * logged["val/ss_loss"]
        if self.mask_weight > 0 and values["mask_total"] > 0:
            total = values["mask_total"]
            logged.update({"val/mask_acc": values["mask_correct"] / total,
                           "val/mask_loss": values["mask_loss"] / total})
            loss += self.mask_weight * logged["val/mask_loss"]
        if logged:
            logged["val/loss"] = loss
            for key, value in logged.items():
                self.log(key, value, prog_bar=key in ("val/Q3", "val/Q8", "val/mask_acc"), sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        total = self.schedule_steps or (self.trainer.estimated_stepping_batches if self._trainer is not None
                                        else math.inf)
        return adamw_warmup_cosine(self.net, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                                   warmup_steps=self.warmup_steps, total_steps=total, min_ratio=self.min_lr_ratio)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the validation metrics of the epoch that wrote the checkpoint (floats only), for the export."""
        if self._trainer is None:
            return
        checkpoint[CKPT_VAL_METRICS] = finite_val_metrics(self.trainer.callback_metrics)


# ------------------------------------------------------------------------------------------------- callbacks
class ResidueThroughput(pl.Callback):
    """Real (unpadded) training residues per second of training-step time (validation excluded).

    Logs ``train/residues_per_s`` (running value since the fit started) and keeps :meth:`summary` for the export.
    """

    def __init__(self) -> None:
        self.residues = 0
        self.seconds = 0.0
        self._started: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._started is None:
            return
        self.seconds += time.perf_counter() - self._started
        self.residues += int(batch["mask"].sum())
        self._started = None
        if self.seconds > 0:
            pl_module.log("train/residues_per_s", self.residues / self.seconds, on_step=True, on_epoch=False,
                          batch_size=1)

    def summary(self) -> dict[str, float]:
        rate = self.residues / self.seconds if self.seconds > 0 else float("nan")
        return {"residues_seen": self.residues, "train_step_seconds": round(self.seconds, 1),
                "residues_per_s": round(rate, 1) if math.isfinite(rate) else None}

    def state_dict(self) -> dict[str, Any]:
        return {"residues": self.residues, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.residues = int(state_dict.get("residues", 0))
        self.seconds = float(state_dict.get("seconds", 0.0))


def export_pretrained_checkpoint(checkpoint_path: str | Path, directory: str | Path,
                                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``encoder.safetensors`` + ``encoder.json`` for the network of a ``protrnn pretrain fit`` checkpoint.

    ``encoder.json`` records the objectives, the checkpoint's epoch / step and validation metrics, plus ``extra``.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams.get("model"), Mapping) or any(key not in hparams for key in OBJECTIVE_KEYS):
        raise InputError("not a protrnn pretrain checkpoint (no model architecture and objectives in its "
                         "hyper-parameters)", path=checkpoint_path)
    network = network_from_checkpoint(checkpoint, PretrainNetwork, source=checkpoint_path,
                                      what="checkpoint weights do not match its architecture")
    metadata = {"source_checkpoint": str(Path(checkpoint_path).resolve()),
                "epoch": recorded_count(checkpoint, "epoch", checkpoint_path),
                "global_step": recorded_count(checkpoint, "global_step", checkpoint_path),
                "objectives": {key: hparams[key] for key in OBJECTIVE_KEYS},
                "val_metrics": recorded_metrics(checkpoint, checkpoint_path),
                "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(extra or {})}
    try:
        return save_pretrained(network, directory, extra=metadata)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot write the encoder description: {exc}", path=directory) from None


class ExportPretrainedOnFitEnd(pl.Callback):
    """At the end of ``fit``, export the best checkpoint (else the last, else the final weights) as
    ``encoder.safetensors`` + ``encoder.json`` in ``directory`` (default ``trainer.default_root_dir``), with the
    throughput of a :class:`ResidueThroughput` callback when one is attached."""

    def __init__(self, directory: str | Path | None = None, extra: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.extra = dict(extra or {})
        self.exported: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            directory = self.directory or Path(trainer.default_root_dir)
            extra = dict(self.extra)
            for callback in trainer.callbacks:
                if isinstance(callback, ResidueThroughput):
                    extra["throughput"] = callback.summary()
            checkpoint = trainer.checkpoint_callback
            best = checkpoint_of_this_run(checkpoint, getattr(checkpoint, "best_model_path", "") if checkpoint else "")
            last = checkpoint_of_this_run(checkpoint, getattr(checkpoint, "last_model_path", "") if checkpoint else "")
            if best or last:
                extra.update(selected="best" if best else "last", monitor=getattr(checkpoint, "monitor", None))
                self.exported = export_pretrained_checkpoint(best or last, directory, extra=extra)
            else:
                extra.update(selected="final weights (no checkpoint was written)", global_step=trainer.global_step)
                self.exported = save_pretrained(pl_module.net, directory, extra=extra)
        trainer.strategy.barrier("protrnn-pretrain-export")
