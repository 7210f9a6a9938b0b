"""Contact training from a pretrained encoder (load its weights, freeze it for a while, keep an auxiliary SS loss),
or from a whole trained contact model.

Four pieces, usable from ``protrnn train`` through ``trainer.callbacks`` (docs/pretraining.md has the YAML):

* :func:`load_pretrained_encoder` copies the ``embedding.*`` and ``encoder.*`` weights of a pretrained export
  (``protrnn pretrain fit``: ``encoder.safetensors`` + ``encoder.json``, never a pickle) into a
  :class:`~protrnn.model.contact_model.ContactModel` whose encoder settings agree (:data:`ENCODER_KEYS`); any
  mismatch is a one-line :class:`InputError` naming the config key and the parameter;
* :class:`PretrainedEncoder` (a callback) does that when ``fit`` starts (before a resumed checkpoint is restored, so
  resuming continues from the checkpoint) and, as :class:`FreezeEncoder`, freezes the embedding and encoder for the
  first ``freeze_steps`` optimiser steps, so the freshly initialised contact head cannot wreck them early;
* :class:`AuxiliarySecondaryStructure` (a callback) adds ``weight x`` the 8-state secondary-structure loss of a batch
  of the pretraining labels to every contact training step. The pretrained SS read-out (``heads.ss8``) is kept
  frozen: the term anchors the encoder to features that still read out as secondary structure. It needs one line in
  ``ContactLightningModule.training_step`` (:data:`HOOK`): ``return loss + sum(term(self, batch, batch_idx) for term
  in getattr(self, "auxiliary_losses", ()))``; without it the callback stops the run after the first step with an
  error that says so;
* :class:`InitialWeights` (a callback) starts a run from every weight of a trained contact model (an export or a
  ``protrnn train`` checkpoint) of the same architecture: fine-tuning, with a fresh optimiser and schedule; or, with
  ``parts="encoder"``, from its embedding and encoder only, under a freshly initialised head (docs/training.md,
  "Fine-tuning a trained model").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from protrnn.data.structure_labels import load_structure_labels
from protrnn.errors import InputError
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import check_state, load_network
from protrnn.model.pretrain_heads import ENCODER_KEYS, SHARED_PREFIXES, load_pretrained
from protrnn.training.module import check_architecture
from protrnn.training.pretrain import StructureLabelExamples, collate_labels, ss8_loss

#: The attribute of the contact Lightning module that holds auxiliary loss terms (callables
#: ``(module, batch, batch_idx) -> Tensor`` added to the training loss).
AUXILIARY_LOSSES = "auxiliary_losses"
#: The line ContactLightningModule.training_step needs (instead of ``return loss``) for auxiliary losses.
HOOK = 'return loss + sum(term(self, batch, batch_idx) for term in getattr(self, "auxiliary_losses", ()))'


def _shared_parameters(net: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in net.named_parameters() if name.startswith(SHARED_PREFIXES)]


def load_pretrained_encoder(net: ContactModel, path: str | Path) -> dict[str, Any]:
    """Copy a pretrained export's embedding and encoder weights into ``net`` (in place); returns ``encoder.json``.

    The export's :data:`ENCODER_KEYS` must equal ``net.config``'s; the head, dropout, inits and the gradient
    horizon may differ. Raises a one-line InputError naming the differing key(s) and the first mismatched parameter.
    """
    loaded = load_pretrained(path)
    _copy_encoder(net, loaded.network.config.to_dict(), loaded.network.state_dict(), path=path,
                  what="the pretrained encoder")
    return loaded.metadata


def _copy_encoder(net: ContactModel, saved: dict[str, Any], weights: dict[str, Tensor], *, path: str | Path,
                  what: str) -> None:
    """Copy the ``embedding.*`` and ``encoder.*`` tensors of ``weights`` (a source network's state dict, its config
    ``saved``) into ``net``; one InputError names every differing :data:`ENCODER_KEYS` key and the first mismatched
    parameter."""
    current = net.config.to_dict()
    problems = [f"model.{key} is {saved[key]!r} in the export, {current[key]!r} in the config"
                for key in ENCODER_KEYS if saved[key] != current[key]]
    state = {k: v for k, v in weights.items() if k.startswith(SHARED_PREFIXES)}
    expected = {k: v for k, v in net.state_dict().items() if k.startswith(SHARED_PREFIXES)}
    try:
        check_state(state, expected, source=None, what="parameters differ")
    except InputError as exc:
        problems.append(exc.reason)
    if problems:
        raise InputError(f"{what} does not fit this contact model: {'; '.join(problems)}", path=path)
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(state[name].to(tensor.device, tensor.dtype))  # state_dict tensors share the parameters


class FreezeEncoder(pl.Callback):
    """Freeze the embedding and recurrent encoder of ``pl_module.net`` for the first ``steps`` optimiser steps.

    Freezing sets ``requires_grad`` off after the optimiser was built (so the parameters stay in it) and back on once
    ``trainer.global_step`` reaches ``steps`` (a resumed run past that point trains them from its first step). While
    frozen no gradient flows into the encoder, which also saves its backward pass. Single-process training only:
    DDP needs ``find_unused_parameters`` for parameters that stop receiving gradients.
    """

    def __init__(self, freeze_steps: int = 0) -> None:
        if not isinstance(freeze_steps, int) or isinstance(freeze_steps, bool) or freeze_steps < 0:
            raise InputError(f"freeze_steps must be a non-negative integer, got {freeze_steps!r}")
        self.freeze_steps = freeze_steps
        self.frozen = False

    def _set(self, pl_module: pl.LightningModule, trainable: bool) -> None:
        for param in _shared_parameters(pl_module.net):
            param.requires_grad_(trainable)
        self.frozen = not trainable

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step < self.freeze_steps:
            self._set(pl_module, trainable=False)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.frozen and trainer.global_step >= self.freeze_steps:
            self._set(pl_module, trainable=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.frozen:
            self._set(pl_module, trainable=True)


class PretrainedEncoder(FreezeEncoder):
    """Start contact training from a pretrained encoder export (``path``), frozen for ``freeze_steps`` steps.

    The weights are loaded in ``setup`` (before Lightning restores a ``--ckpt_path`` checkpoint, which therefore
    wins when resuming). ``metadata`` keeps the export's ``encoder.json``.
    """

    def __init__(self, path: str | Path, freeze_steps: int = 0) -> None:
        super().__init__(freeze_steps)
        self.path = Path(path)
        self.metadata: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            net = getattr(pl_module, "net", None)
            if not isinstance(net, ContactModel):
                raise InputError("PretrainedEncoder needs a module with a ContactModel in .net")
            self.metadata = load_pretrained_encoder(net, self.path)


#: What :class:`InitialWeights` can copy: every weight, or the embedding and recurrent encoder only.
INITIAL_PARTS = ("all", "encoder")


class InitialWeights(pl.Callback):
    """Start contact training from a trained contact model (``path``: an export directory such as a bundled
    ensemble's ``member-K``, its ``model.json``/``model.safetensors``, or a ``protrnn train`` checkpoint): with
    ``parts="all"`` every weight, head included, is copied into the configured network when ``fit`` starts; with
    ``parts="encoder"`` only the embedding and recurrent encoder are, and the pair head starts from its own fresh
    initialisation (a new head, of any type or size, on a trained encoder).

    With ``"all"`` the model's architecture must equal the config's
    (:func:`~protrnn.training.module.check_architecture`: a one-line InputError names each differing ``model.*``
    key); with ``"encoder"`` only the encoder settings (``ENCODER_KEYS`` of :mod:`protrnn.model.pretrain_heads`)
    must. Only weights are taken: the optimiser, schedule and step count start afresh, so the config's learning rate
    and schedule set the fine-tuning. Loaded in ``setup``, before Lightning restores a ``--ckpt_path`` checkpoint,
    which therefore wins when resuming. Nothing is unpickled. ``metadata`` keeps the source's ``model.json`` metadata.
    """

    def __init__(self, path: str | Path, parts: str = "all") -> None:
        if parts not in INITIAL_PARTS:
            raise InputError(f"InitialWeights parts must be one of {', '.join(INITIAL_PARTS)}, got {parts!r}")
        self.path = Path(path)
        self.parts = parts
        self.metadata: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net = getattr(pl_module, "net", None)
        if not isinstance(net, ContactModel):
            raise InputError("InitialWeights needs a module with a ContactModel in .net")
        loaded = load_network(self.path)
        if self.parts == "encoder":
            _copy_encoder(net, loaded.network.config.to_dict(), loaded.network.state_dict(), path=self.path,
                          what="the initial model's encoder")
        else:
            check_architecture(loaded.network.config.to_dict(), net.config, source=str(self.path),
                               what="initial model", advice="train with the model settings it was trained with")
            net.load_state_dict(loaded.network.state_dict())
        self.metadata = dict(loaded.metadata)


class AuxiliarySecondaryStructure(pl.Callback):
    """Add ``weight`` x the 8-state SS loss of a batch of pretraining labels to each contact training step.

    Args:
        labels: a structure-label file (``train.npz`` of ``protrnn pretrain prepare``).
        encoder: the pretrained export whose ``heads.ss8`` read-out scores the encoder states (kept frozen).
        weight: the loss weight (> 0).
        max_tokens: padded tokens per auxiliary batch.
        crop_length: auxiliary chains are cropped to a random window of this length (null = whole chains).
        seed: seed of the auxiliary batches (crops and order; the sequence restarts when a run is resumed).

    The term is skipped (zero) while the encoder is frozen. Logged as ``train/aux_ss_loss``.
    """

    def __init__(self, labels: str | Path, encoder: str | Path, weight: float = 0.1, max_tokens: int = 2048,
                 crop_length: int | None = 256, seed: int = 0) -> None:
        if not weight > 0:
            raise InputError(f"AuxiliarySecondaryStructure weight must be positive, got {weight!r}")
        self.labels_path, self.encoder_path = Path(labels), Path(encoder)
        self.weight, self.max_tokens, self.crop_length, self.seed = float(weight), int(max_tokens), crop_length, seed
        self.head: nn.Module | None = None
        self.calls = 0
        self._batches: Iterator[dict[str, Tensor]] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from protrnn.data.batching import TokenBudgetBatchSampler

        head = load_pretrained(self.encoder_path).network.heads.ss8
        width = pl_module.net.encoder.output_size
        if head.in_features != width:
            raise InputError(f"the pretrained SS head reads {head.in_features} features but this encoder gives "
                             f"{width}", path=self.encoder_path)
        self.head = head.requires_grad_(False)
        examples = StructureLabelExamples(load_structure_labels(self.labels_path), self.crop_length,
                                          random_crop=self.crop_length is not None, seed=self.seed)
        sampler = TokenBudgetBatchSampler(examples.lengths.tolist(), max_tokens=self.max_tokens, shuffle=True,
                                          seed=self.seed, num_replicas=trainer.world_size, rank=trainer.global_rank)
        self._batches = self._cycle(examples, sampler)
        terms = [t for t in getattr(pl_module, AUXILIARY_LOSSES, []) if t is not self]
        setattr(pl_module, AUXILIARY_LOSSES, [*terms, self])

    @staticmethod
    def _cycle(examples: StructureLabelExamples, sampler: Any) -> Iterator[dict[str, Tensor]]:
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            examples.set_epoch(epoch)
            for batch in sampler:
                yield collate_labels([examples[i] for i in batch])
            epoch += 1

    def __call__(self, module: pl.LightningModule, batch: Any, batch_idx: int) -> Tensor:
        """The weighted auxiliary loss for this step (called from the contact module's training step)."""
        self.calls += 1
        net = module.net
        if self.head is None or self._batches is None or not any(p.requires_grad for p in _shared_parameters(net)):
            return torch.zeros((), device=module.device)
        aux = {key: value.to(module.device) for key, value in next(self._batches).items()}
        self.head.to(module.device)
        states = net.encoder(net.embed(aux["tokens"]), aux["mask"])
        loss = ss8_loss(self.head(states), aux["ss8"])
        module.log("train/aux_ss_loss", loss.detach(), on_step=True, on_epoch=True,
                   batch_size=int(aux["tokens"].shape[0]))
        return self.weight * loss

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.calls == 0:
            raise InputError("AuxiliarySecondaryStructure: the training step never asked for the auxiliary loss; "
                             f"ContactLightningModule.training_step needs the line `{HOOK}`")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        terms = [t for t in getattr(pl_module, AUXILIARY_LOSSES, []) if t is not self]
        if hasattr(pl_module, AUXILIARY_LOSSES):
            setattr(pl_module, AUXILIARY_LOSSES, terms)

