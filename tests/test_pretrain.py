"""Pretraining objectives (Q8/Q3, BERT masking, masked-only loss), the pretraining network and its export, fine-tuning
(loading into a ContactModel for every cell, freezing for N steps, the auxiliary SS loss) and the `pretrain` CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file, save_file

from protrnn.alphabet import DEFAULT_ALPHABET, PAD_TOKEN, UNK_TOKEN
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import save_dataset
from protrnn.data.structure_labels import LabelledSequence, encode_dssp, save_structure_labels
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.pretrain_heads import PretrainNetwork, load_pretrained, save_pretrained
from protrnn.training.cli import PRETRAIN_CONFIGS
from protrnn.training.finetune import (
    AuxiliarySecondaryStructure,
    InitialWeights,
    PretrainedEncoder,
    load_pretrained_encoder,
)
from protrnn.training.module import ContactLightningModule
from protrnn.training.pretrain import (
    IGNORE_INDEX,
    PretrainLightningModule,
    StructureLabelDataModule,
    mask_residues,
    masked_residue_loss,
    ss8_loss,
    ss_counts,
)

CELLS = ("lstm", "gru", "rnn")
STATES = "HGIEBTSL"


def tiny_config(cell: str = "lstm", **changes: object) -> ModelConfig:
    values = {"cell": cell, "embed_dim": 8, "hidden_size": 8, "num_layers": 2, "dropout": 0.0, "head": "pairwise",
              "pair_dim": 8, "max_separation": 16}
    values.update(changes)
    return ModelConfig(**values)


def _logits_for(states: str) -> torch.Tensor:
    """[1, T, 8] logits whose argmax is the given 8-state string."""
    logits = torch.zeros(1, len(states), 8)
    for t, letter in enumerate(states):
        logits[0, t, STATES.index(letter)] = 5.0
    return logits


# ---- objectives ---------------------------------------------------------------------------------------------------
def test_q8_and_q3_against_a_hand_computed_example() -> None:
    labels = torch.as_tensor(encode_dssp("HGIEBTSLHE-").astype(np.int64))[None]
    logits = _logits_for("GGHBBLTLEEH")
    correct8, correct3, total = ss_counts(logits, labels)
    # 8 states: G=G, B=B, L=L, E=E match -> 4 of the 10 labelled residues (the 11th has no label).
    # 3 states: H/H H/H H/H E/E E/E C/C C/C C/C H/E(miss) E/E -> 9 of 10.
    assert (int(correct8), int(correct3), int(total)) == (4, 9, 10)


def test_ss8_loss_ignores_unlabelled_residues() -> None:
    labels = torch.tensor([[0, 3, -1]])
    logits = torch.randn(1, 3, 8)
    expected = -(torch.log_softmax(logits[0, 0], -1)[0] + torch.log_softmax(logits[0, 1], -1)[3]) / 2
    torch.testing.assert_close(ss8_loss(logits, labels), expected)
    changed = logits.clone()
    changed[0, 2] = 100.0
    torch.testing.assert_close(ss8_loss(changed, labels), expected)


def test_masked_residue_loss_scores_masked_positions_only() -> None:
    targets = torch.full((2, 5), IGNORE_INDEX)
    targets[0, 1], targets[1, 3] = 4, 19
    logits = torch.randn(2, 5, 20)
    expected = -(torch.log_softmax(logits[0, 1], -1)[4] + torch.log_softmax(logits[1, 3], -1)[19]) / 2
    torch.testing.assert_close(masked_residue_loss(logits, targets), expected)
    changed = logits.clone()
    changed[targets == IGNORE_INDEX] = torch.randn(8, 20) * 10
    torch.testing.assert_close(masked_residue_loss(changed, targets), expected)
    changed[0, 1, 4] += 3.0
    assert masked_residue_loss(changed, targets) < expected
    assert masked_residue_loss(logits, torch.full((2, 5), IGNORE_INDEX)).item() == 0.0


def test_bert_masking_selects_15_percent_of_standard_residues_and_splits_80_10_10() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, 22, (200, 1000), generator=gen)
    tokens[:, ::50] = UNK_TOKEN
    lengths = torch.randint(500, 1001, (200,), generator=gen)
    mask = torch.arange(1000)[None] < lengths[:, None]
    tokens[~mask] = PAD_TOKEN
    inputs, targets = mask_residues(tokens, mask, 0.15, torch.Generator().manual_seed(1))
    selected = targets != IGNORE_INDEX
    eligible = mask & (tokens >= 2)
    assert not (selected & ~eligible).any()  # never padding or an unknown residue
    assert (inputs[~selected] == tokens[~selected]).all()  # unselected positions untouched
    assert (targets[selected] == tokens[selected] - 2).all()
    n = int(selected.sum())
    assert abs(n / int(eligible.sum()) - 0.15) < 0.005
    to_mask = (inputs[selected] == UNK_TOKEN).sum().item() / n
    unchanged = (inputs[selected] == tokens[selected]).sum().item() / n
    other = 1 - to_mask - unchanged
    assert abs(to_mask - 0.8) < 0.01
    assert abs(unchanged - (0.1 + 0.1 / 20)) < 0.01  # kept, or replaced by a random residue that is the same
    assert abs(other - 0.1 * 19 / 20) < 0.01
    again, _ = mask_residues(tokens, mask, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again, inputs)


# ---- network and export -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_pretrained_export_round_trips_and_shares_names_with_the_contact_model(cell: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = PretrainNetwork(tiny_config(cell)).eval()
    contact = ContactModel(tiny_config(cell))
    shared = {k for k in network.state_dict() if k.startswith(("embedding.", "encoder."))}
    assert shared == {k for k in contact.state_dict() if k.startswith(("embedding.", "encoder."))}
    save_pretrained(network, tmp_path, extra={"note": "x"})
    loaded = load_pretrained(tmp_path)
    tokens = torch.randint(2, 22, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    out, back = network(tokens, mask), loaded.network(tokens, mask)
    torch.testing.assert_close(out.ss8, back.ss8)
    torch.testing.assert_close(out.residue, back.residue)
    assert out.ss8.shape == (2, 30, 8) and out.residue.shape == (2, 30, 20)
    assert loaded.metadata["note"] == "x" and loaded.metadata["config"]["cell"] == cell


def test_pretrained_export_checks_the_checkpoint_fields_as_the_contact_export_does(tmp_path: Path) -> None:
    """encoder.json records the checkpoint's epoch, step and validation metrics: a step held as text or a metric that
    is no number is a one-line error naming the checkpoint and the field (they were copied into encoder.json as they
    were), and a metric that is NaN is recorded as null (strict JSON)."""
    from protrnn.training.pretrain import export_pretrained_checkpoint

    torch.manual_seed(0)
    config = tiny_config()
    network = PretrainNetwork(config)
    hparams = {"model": config.to_dict(), "ss_weight": 1.0, "mask_weight": 1.0, "mask_fraction": 0.15}

    def checkpoint(name: str, **fields: object) -> Path:
        path = tmp_path / name
        torch.save({"state_dict": {f"net.{k}": v for k, v in network.state_dict().items()}, "hyper_parameters": hparams,
                    "epoch": 2, "global_step": 40, "protrnn_val_metrics": {"val/loss": 0.5}, **fields}, path)
        return path

    good = export_pretrained_checkpoint(checkpoint("good.ckpt"), tmp_path / "good")
    assert json.loads(good.read_text())["global_step"] == 40
    nan = export_pretrained_checkpoint(checkpoint("nan.ckpt", protrnn_val_metrics={"val/loss": math.nan,
                                                                                   "val/Q8": 0.25}),
                                       tmp_path / "nan")
    assert json.loads(nan.read_text(), parse_constant=lambda c: pytest.fail(c))["val_metrics"] == {
        "val/loss": None, "val/Q8": 0.25}
    with pytest.raises(InputError, match="checkpoint field 'global_step' is '40', not a non-negative integer"):
        export_pretrained_checkpoint(checkpoint("text.ckpt", global_step="40"), tmp_path / "text")
    with pytest.raises(InputError, match="metric 'val/loss' is 'low', not a number"):
        export_pretrained_checkpoint(checkpoint("low.ckpt", protrnn_val_metrics={"val/loss": "low"}),
                                     tmp_path / "low")
    assert not (tmp_path / "text").exists() and not (tmp_path / "low").exists()


def test_export_reading_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no encoder.json"):
        load_pretrained(tmp_path)
    save_pretrained(PretrainNetwork(tiny_config()), tmp_path)
    meta = json.loads((tmp_path / "encoder.json").read_text())
    meta["config"]["hidden_size"] = 16
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"parameter 'embedding.weight'|parameter 'encoder") as err:
        load_pretrained(tmp_path)
    assert "\n" not in str(err.value)
    # The checks of protrnn.model.io apply to encoder exports too: version, pickles, non-finite weights.
    meta["config"]["hidden_size"] = 8
    meta["format_version"] = True
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"unsupported format_version True of a pretrained encoder \(this version reads 1\.\.1\)"):
        load_pretrained(tmp_path)
    (tmp_path / "encoder.json").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InputError, match="not a pretrained encoder: this is a pickle"):
        load_pretrained(tmp_path)
    save_pretrained(PretrainNetwork(tiny_config()), tmp_path)
    state = load_file(str(tmp_path / "encoder.safetensors"))
    state["heads.ss8.bias"][3] = float("inf")
    save_file(state, str(tmp_path / "encoder.safetensors"))
    with pytest.raises(InputError, match="'heads.ss8.bias' contains NaN or infinite"):
        load_pretrained(tmp_path)


# ---- fine-tuning --------------------------------------------------------------------------------------------------
def _export(tmp_path: Path, config: ModelConfig, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    network = PretrainNetwork(config)
    save_pretrained(network, tmp_path / "encoder")
    return tmp_path / "encoder", {k: v.clone() for k, v in network.state_dict().items()}


@pytest.mark.parametrize("cell", CELLS)
def test_load_pretrained_encoder_copies_embedding_and_encoder(cell: str, tmp_path: Path) -> None:
    path, state = _export(tmp_path, tiny_config(cell))
    torch.manual_seed(1)
    # Another head, dropout and gradient horizon are fine: only the encoder keys must agree.
    net = ContactModel(tiny_config(cell, head="resnet2d", dropout=0.2, gradient_horizon=8, pair_dim=4,
                                   head_blocks=1, head_dilations=[1]))
    head_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("head.")}
    meta = load_pretrained_encoder(net, path)
    assert meta["config"]["cell"] == cell
    after = net.state_dict()
    for name, tensor in state.items():
        if name.startswith(("embedding.", "encoder.")):
            assert torch.equal(after[name], tensor), name
    for name, tensor in head_before.items():
        assert torch.equal(after[name], tensor), name


@pytest.mark.parametrize(("exported", "model", "key", "parameter"), [
    (tiny_config("lstm"), tiny_config("lstm", hidden_size=16), "model.hidden_size is 8 in the export, 16",
     "encoder.layers.0.fwd.weight_ih_l0"),
    (tiny_config("lstm"), tiny_config("gru"), "model.cell is 'lstm' in the export, 'gru'",
     "encoder.layers.0.fwd.weight_ih_l0"),
    (tiny_config("gru"), tiny_config("gru", num_layers=1), "model.num_layers is 2 in the export, 1",
     "unexpected parameter 'encoder.layers.1"),
    (tiny_config("rnn"), tiny_config("rnn", layer_norm=False), "model.layer_norm is True in the export, False",
     "unexpected parameter 'encoder.norms.0.bias'"),
])
def test_mismatched_encoder_is_one_line_naming_key_and_parameter(exported: ModelConfig, model: ModelConfig, key: str,
                                                                 parameter: str, tmp_path: Path) -> None:
    path, _ = _export(tmp_path, exported)
    net = ContactModel(model)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InputError) as err:
        load_pretrained_encoder(net, path)
    message = str(err.value)
    assert "\n" not in message and key in message and parameter in message and str(path) in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing half-loaded


@pytest.fixture(scope="module")
def contact_data(tmp_path_factory: pytest.TempPathFactory,
                 random_walk_chain: Callable[..., ProteinChain]) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("contacts")
    chains = [random_walk_chain(rng, f"c{i}", int(rng.integers(30, 60))) for i in range(12)]
    return {"train": save_dataset(chains[:8], out / "train.npz"), "val": save_dataset(chains[8:], out / "val.npz")}


def _label_records(rng: np.random.Generator, n: int, prefix: str) -> list[LabelledSequence]:
    """Chains that repeat a random 3-residue motif; the label is a function of the residue (learnable both ways)."""
    records = []
    for index in range(n):
        motif = rng.choice(list(DEFAULT_ALPHABET.residues), size=3)
        length = int(rng.integers(30, 80))
        sequence = "".join(motif[i % 3] for i in range(length))
        labels = (DEFAULT_ALPHABET.encode(sequence).astype(np.int8) % 8).astype(np.int8)
        records.append(LabelledSequence(f"{prefix}{index}", sequence, labels, f"{prefix}{index}"))
    return records


@pytest.fixture(scope="module")
def label_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    out = tmp_path_factory.mktemp("labels")
    return {"train": save_structure_labels(_label_records(rng, 400, "t"), out / "train.npz"),
            "val": save_structure_labels(_label_records(rng, 16, "v"), out / "val.npz")}


def _contact_datamodule(data: dict[str, Path]) -> pl.LightningDataModule:
    from protrnn.training.datamodule import ContactDataModule

    return ContactDataModule(data["train"], data["val"], crop_length=32, max_tokens=64, max_pairs=4096)


def _trainer(steps: int, *callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      use_distributed_sampler=False, callbacks=list(callbacks))


class _Snapshots(pl.Callback):
    """Encoder and head parameters after every training batch."""

    def __init__(self) -> None:
        self.encoder: list[torch.Tensor] = []
        self.head: list[torch.Tensor] = []

    @staticmethod
    def _flat(module: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = (self._flat(pl_module.net.encoder), self._flat(pl_module.net.head))
        self.start_embedding = self._flat(pl_module.net.embedding)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self.encoder.append(self._flat(pl_module.net.encoder))
        self.head.append(self._flat(pl_module.net.head))


@pytest.mark.parametrize("cell", CELLS)
def test_pretrained_encoder_is_loaded_and_frozen_for_the_first_steps(cell: str, contact_data: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    path, state = _export(tmp_path, tiny_config(cell), seed=3)
    pretrained = torch.cat([state[k].flatten() for k, _ in ContactModel(tiny_config(cell)).encoder.named_parameters(
        prefix="encoder")])
    torch.manual_seed(0)
    module = ContactLightningModule(tiny_config(cell), warmup_steps=0)
    snapshots = _Snapshots()
    _trainer(4, PretrainedEncoder(path, freeze_steps=2), snapshots).fit(module, datamodule=_contact_datamodule(
        contact_data))
    assert torch.equal(snapshots.start[0], pretrained)  # loaded before training
    assert torch.equal(snapshots.encoder[0], pretrained) and torch.equal(snapshots.encoder[1], pretrained)
    assert not torch.equal(snapshots.encoder[2], pretrained)  # step 3 trains the encoder
    assert not torch.equal(snapshots.head[0], snapshots.start[1])  # the head trains from the first step
    assert all(p.requires_grad for p in module.net.parameters())  # nothing left frozen


def test_initial_weights_start_training_from_a_trained_model_and_refuse_another_architecture(
        contact_data: dict[str, Path], tmp_path: Path) -> None:
    from protrnn.model.io import save_model

    config = tiny_config(head="resnet2d", head_blocks=1, head_dilations=[1])
    torch.manual_seed(5)
    trained = ContactModel(config)
    save_model(trained, tmp_path / "model")
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    flat = {name: torch.cat([weights[f"{name}.{k}"].flatten() for k, _ in part.named_parameters()])
            for name, part in (("encoder", trained.encoder), ("head", trained.head))}
    torch.manual_seed(0)
    module = ContactLightningModule(config, warmup_steps=0)
    assert not torch.equal(_Snapshots._flat(module.net.head), flat["head"])  # a fresh init differs
    snapshots = _Snapshots()
    start = InitialWeights(tmp_path / "model")
    _trainer(1, start, snapshots).fit(module, datamodule=_contact_datamodule(contact_data))
    assert torch.equal(snapshots.start[0], flat["encoder"]) and torch.equal(snapshots.start[1], flat["head"])
    assert not torch.equal(snapshots.head[0], flat["head"])  # and then trains
    assert start.metadata is not None and start.metadata["config"]["head"] == "resnet2d"
    other = ContactLightningModule(tiny_config(head="resnet2d", head_blocks=1, head_dilations=[1], pair_dim=4))
    with pytest.raises(InputError, match=r"initial model's architecture .*model.pair_dim=8 \(config: 4\)") as err:
        _trainer(1, InitialWeights(tmp_path / "model")).fit(other, datamodule=_contact_datamodule(contact_data))
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not found|no such|does not exist"):
        _trainer(1, InitialWeights(tmp_path / "missing")).fit(other, datamodule=_contact_datamodule(contact_data))


def test_initial_weights_encoder_part_puts_a_fresh_head_of_any_size_on_a_trained_encoder(
        contact_data: dict[str, Path], tmp_path: Path) -> None:
    from protrnn.model.io import save_model

    torch.manual_seed(5)
    trained = ContactModel(tiny_config(head="resnet2d", head_blocks=1, head_dilations=[1]))
    save_model(trained, tmp_path / "model")
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    encoder = torch.cat([weights[f"encoder.{k}"].flatten() for k, _ in trained.encoder.named_parameters()])
    embedding = torch.cat([weights[f"embedding.{k}"].flatten() for k, _ in trained.embedding.named_parameters()])
    # another head (a pairwise one, pair_dim 4): only the encoder settings have to agree
    torch.manual_seed(0)
    module = ContactLightningModule(tiny_config(pair_dim=4), warmup_steps=0)
    fresh_head = _Snapshots._flat(module.net.head)
    assert not torch.equal(_Snapshots._flat(module.net.encoder), encoder)
    snapshots = _Snapshots()
    start = InitialWeights(tmp_path / "model", parts="encoder")
    _trainer(1, start, snapshots).fit(module, datamodule=_contact_datamodule(contact_data))
    assert torch.equal(snapshots.start[0], encoder) and torch.equal(snapshots.start_embedding, embedding)
    assert torch.equal(snapshots.start[1], fresh_head)  # the head keeps its own initialisation
    assert start.metadata is not None and start.metadata["config"]["head"] == "resnet2d"
    wider = ContactLightningModule(tiny_config(hidden_size=6, pair_dim=4))
    with pytest.raises(InputError, match=r"initial model's encoder does not fit .*model.hidden_size is 8 in the "
                                         r"export, 6 in the config") as err:
        _trainer(1, InitialWeights(tmp_path / "model", parts="encoder")).fit(
            wider, datamodule=_contact_datamodule(contact_data))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{tmp_path / 'model'}: ")  # names the export
    with pytest.raises(InputError, match="parts must be one of all, encoder, got 'head'"):
        InitialWeights(tmp_path / "model", parts="head")


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_encoder_lr_scale_trains_the_encoder_at_that_fraction_of_the_heads_rate(scale: float,
                                                                                contact_data: dict[str, Path]) -> None:
    # AdamW's first step moves every parameter with a non-zero gradient by lr * g / (|g| + eps), i.e. by the group's
    # rate (no weight decay, no warm-up: the schedule's multiplier is 1 at step 0). So the largest move of an encoder
    # weight is lr * scale and the head's is lr.
    lr = 1e-3
    torch.manual_seed(0)
    module = ContactLightningModule(tiny_config("lstm"), lr=lr, weight_decay=0.0, warmup_steps=0,
                                    encoder_lr_scale=scale)
    snapshots = _Snapshots()
    _trainer(1, snapshots).fit(module, datamodule=_contact_datamodule(contact_data))
    encoder_step = (snapshots.encoder[0] - snapshots.start[0]).abs().max().item()
    head_step = (snapshots.head[0] - snapshots.start[1]).abs().max().item()
    assert head_step == pytest.approx(lr, rel=1e-3)
    assert encoder_step == pytest.approx(lr * scale, rel=1e-3)
    groups = module.optimizers().optimizer.param_groups
    # Unscaled, the optimiser keeps its two groups (decayed, not decayed), so older checkpoints still resume.
    assert len(groups) == (2 if scale == 1.0 else 4)


@pytest.mark.parametrize("scale", [0.0, -0.5, math.nan, math.inf])
def test_invalid_encoder_lr_scale_is_refused_naming_the_key(scale: float) -> None:
    with pytest.raises(InputError, match="encoder_lr_scale"):
        ContactLightningModule(tiny_config("lstm"), encoder_lr_scale=scale)


class _NoHook(ContactLightningModule):
    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self._training_loss(batch)[0]  # the contact loss alone: no auxiliary terms


def test_auxiliary_ss_loss_trains_the_encoder_through_the_frozen_pretrained_head(
        contact_data: dict[str, Path], label_data: dict[str, Path], tmp_path: Path) -> None:
    path, state = _export(tmp_path, tiny_config())
    aux = AuxiliarySecondaryStructure(label_data["train"], path, weight=0.5, max_tokens=256, crop_length=32)
    module = ContactLightningModule(tiny_config(), warmup_steps=0)
    aux.setup(SimpleNamespace(world_size=1, global_rank=0), module, "fit")
    assert module.auxiliary_losses == [aux]
    torch.testing.assert_close(aux.head.weight, state["heads.ss8.weight"])
    with pytest.warns(UserWarning, match="log"):
        loss = aux(module, None, 0)
    assert loss.item() > 0 and math.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.encoder.parameters())
    assert all(p.grad is None for p in module.net.head.parameters())
    assert all(not p.requires_grad and p.grad is None for p in aux.head.parameters())

    hooked = ContactLightningModule(tiny_config(), warmup_steps=0)  # the real module carries the hook
    aux = AuxiliarySecondaryStructure(label_data["train"], path, weight=0.5, max_tokens=256, crop_length=32)
    trainer = _trainer(3, aux)
    trainer.fit(hooked, datamodule=_contact_datamodule(contact_data))
    assert aux.calls == 3
    assert math.isfinite(float(trainer.callback_metrics["train/aux_ss_loss_step"]))
    assert hooked.auxiliary_losses == []  # removed again at teardown

    aux = AuxiliarySecondaryStructure(label_data["train"], path, weight=0.5)
    with pytest.raises(InputError, match="needs the line"):
        _trainer(3, aux).fit(_NoHook(tiny_config()), datamodule=_contact_datamodule(contact_data))


# ---- pretraining --------------------------------------------------------------------------------------------------
def test_objective_weights_switch_objectives_off(label_data: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="both 0"):
        PretrainLightningModule(tiny_config(), ss_weight=0, mask_weight=0)
    with pytest.raises(InputError, match="'model.mask_fraction'"):
        PretrainLightningModule(tiny_config(), mask_fraction=0.0)
    for ss_weight, mask_weight, present, absent in ((1.0, 0.0, {"val/Q8", "val/Q3"}, {"val/mask_acc"}),
                                                    (0.0, 1.0, {"val/mask_acc"}, {"val/Q8", "val/Q3"})):
        module = PretrainLightningModule(tiny_config(), ss_weight=ss_weight, mask_weight=mask_weight)
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=False,
                             enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
        trainer.fit(module, datamodule=StructureLabelDataModule(label_data["train"], label_data["val"],
                                                                max_tokens=512))
        logged = set(trainer.callback_metrics)
        assert present <= logged and not absent & logged and "val/loss" in logged


def test_pretraining_learns_both_objectives(label_data: dict[str, Path]) -> None:
    """Labels are a function of the residue and chains repeat a 3-residue motif: on held-out chains (unseen motifs)
    Q8 and masked-residue accuracy must climb far above chance (1/8 and 1/20) within a short run; Q3 >= Q8."""
    torch.manual_seed(0)
    module = PretrainLightningModule(tiny_config(embed_dim=16, hidden_size=16, num_layers=1), lr=0.02,
                                     warmup_steps=5)
    trainer = pl.Trainer(max_steps=300, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         check_val_every_n_epoch=None, val_check_interval=300, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=StructureLabelDataModule(label_data["train"], label_data["val"], max_tokens=512))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["val/Q8"] > 0.9, metrics
    assert metrics["val/Q3"] >= metrics["val/Q8"]
    assert metrics["val/mask_acc"] > 0.4, metrics  # copying the (10 % unchanged) input alone gives ~0.1


@pytest.mark.parametrize("name", PRETRAIN_CONFIGS.names())
def test_print_config_of_each_bundled_pretraining_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every config `protrnn pretrain fit` lists parses with the pretraining module and data module."""
    from protrnn.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "fit", "--config", name, "--print_config"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "use_distributed_sampler: false" in printed and "ss_weight:" in printed and "mask_fraction:" in printed


def test_pretrain_cli_errors_are_one_line_naming_the_key(label_data: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.cli import main

    data = ["--data.train_path", str(label_data["train"]), "--data.val_path", str(label_data["val"]),
            "--trainer.default_root_dir", str(tmp_path / "run")]
    for override, key in ((["--model.model.cell", "lstmx"], "--model.model.cell"),
                          (["--trainer.use_distributed_sampler", "true"], "'trainer.use_distributed_sampler'"),
                          (["--num_threads", "0"], "'num_threads'"),
                          (["--ckpt_path", str(tmp_path / "missing.ckpt")], "'ckpt_path'")):
        assert main(["pretrain", "fit", "--config", "pretrain", *data, *override]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("protrnn: error: ") and key in err[-1], (override, err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_pretrain_cli_fit_export_and_train_from_the_encoder(label_data: dict[str, Path],
                                                            contact_data: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.cli import main
    from protrnn.commands import train as train_cmd
    from protrnn.model.io import load_network

    run = tmp_path / "pretrain"
    # The tiny training config's encoder: embed 16, hidden 32, one layer.
    status = main(["pretrain", "fit", "--config", "pretrain", "--data.train_path", str(label_data["train"]),
                   "--data.val_path", str(label_data["val"]), "--trainer.default_root_dir", str(run),
                   "--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--trainer.max_time", "null",
                   "--trainer.enable_progress_bar", "false", "--data.max_tokens", "512", "--data.crop_length", "40",
                   "--model.warmup_steps", "2", "--model.model.embed_dim", "16", "--model.model.hidden_size", "32",
                   "--model.model.num_layers", "1"])
    assert status == 0
    meta = json.loads((run / "encoder.json").read_text())
    assert meta["format"] == "protrnn-pretrained-encoder" and meta["selected"] == "best"
    assert {"val/Q8", "val/Q3", "val/mask_acc", "val/loss"} <= set(meta["val_metrics"])
    assert meta["throughput"]["residues_seen"] > 0 and meta["throughput"]["residues_per_s"] > 0
    assert meta["objectives"] == {"ss_weight": 1.0, "mask_weight": 1.0, "mask_fraction": 0.15}
    assert (run / "checkpoints" / "last.ckpt").is_file()

    assert main(["pretrain", "export", str(run / "checkpoints" / "last.ckpt"), "-o", str(tmp_path / "exp")]) == 0
    last = load_pretrained(tmp_path / "exp")
    assert last.metadata["global_step"] == 6 and last.metadata["exported_by"] == "protrnn pretrain export"
    # the run's resolved config, as the export at the end of fit records it (read from the checkpoint)
    assert last.metadata["training_config"]["trainer"]["max_steps"] == 6
    assert last.metadata["training_config"] == meta["training_config"]
    assert last.metadata["training_config_source"] == "checkpoint"
    # the contact export of a pretraining checkpoint names the command that exports it (it listed 42 missing weights)
    capsys.readouterr()
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "-o", str(tmp_path / "wrong")]) == 2
    assert "a pretraining checkpoint of protrnn pretrain fit, not a contact model: export it with `protrnn pretrain " \
           "export`" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()

    # protrnn train from the export, encoder frozen throughout: the exported contact model carries its weights.
    contact_run = tmp_path / "contact"
    assert train_cmd.main(["--config", "tiny", "--data.train_path", str(contact_data["train"]),
                           "--data.val_path", str(contact_data["val"]), "--trainer.default_root_dir",
                           str(contact_run), "--trainer.max_epochs", "1",
                           "--trainer.callbacks+=protrnn.training.finetune.PretrainedEncoder",
                           "--trainer.callbacks.path", str(run), "--trainer.callbacks.freeze_steps", "1000"]) == 0
    contact = load_network(contact_run).network.state_dict()
    encoder = load_pretrained(run).network.state_dict()
    shared = [k for k in contact if k.startswith(("embedding.", "encoder."))]
    assert shared and all(torch.equal(contact[k], encoder[k]) for k in shared)
    recorded = json.loads((contact_run / "model.json").read_text())["training_config"]["trainer"]["callbacks"]
    assert recorded[0]["class_path"] == "protrnn.training.finetune.PretrainedEncoder"


# ---- protrnn pretrain prepare: a failed run ----------------------------------------------------------------------
def _annotation_file(path: Path, count: int, seed: int) -> Path:
    """A sidechainnet-style annotation JSON of ``count`` random chains of 40-90 residues."""
    rng = np.random.default_rng(seed)
    records = {}
    for index in range(count):
        length = int(rng.integers(40, 90))
        records[f"R{index:02d}"] = {"Sequence": "".join(rng.choice(list(DEFAULT_ALPHABET.residues), size=length)),
                                    "DSSP": "".join(rng.choice(list(STATES), size=length))}
    path.write_text(json.dumps(records))
    return path


def test_pretrain_prepare_without_training_chains_writes_only_records_failed_tsv(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that keeps no chain to train on exits 2 naming records.failed.tsv, its only output: an earlier run's
    datasets and tables stay byte for byte (before, it rewrote them all with 0 chains); a successful rerun removes
    the failed run's table."""
    from protrnn.cli import main
    from protrnn.data import splits

    monkeypatch.setattr(splits, "mmseqs_path", lambda: None)  # the fallback: seconds fewer for a dozen chains

    source = _annotation_file(tmp_path / "full_protein_dssp_annotations.json", 12, seed=5)
    out = tmp_path / "out"
    args = ["pretrain", "prepare", str(source), "-o", str(out), "--threads", "1", "--val-fraction", "0.25"]
    assert main(args) == 0
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(good) == {"train.npz", "val.npz", "records.tsv", "leakage.tsv", "manifest.json"}
    capsys.readouterr()

    assert main([*args, "--min-length", "500"]) == 2  # every chain is shorter: nothing to train on
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"protrnn: error: {out}: no training chain left (12 records read, 12 skipped or removed: 12 x "
                   "length N < minimum N); every record's reason is in records.failed.tsv, and nothing else was "
                   "written"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "records.failed.tsv"} == good
    assert {p.name for p in out.iterdir()} == {*good, "records.failed.tsv"}  # no staging folder left either
    with open(out / "records.failed.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["id"] for row in rows] == [f"R{index:02d}" for index in range(12)]
    assert all(row["status"] == "skipped" and re.fullmatch(r"length \d+ < minimum 500", row["reason"]) for row in rows)

    fresh = tmp_path / "fresh"  # a failed first run: only the table
    assert main(["pretrain", "prepare", str(source), "-o", str(fresh), "--threads", "1", "--min-length", "500"]) == 2
    assert [p.name for p in fresh.iterdir()] == ["records.failed.tsv"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging folder beside

    assert main(args) == 0
    assert {p.name for p in out.iterdir()} == set(good)

    # OUTDIR a link to another file system (/dev/shm, a tmpfs, where the machine has one): the outputs still land
    # (a staging folder beside the link's name had made the final renames fail across devices, after the whole run)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        elsewhere = Path(tempfile.mkdtemp(dir=shm))
        try:
            (tmp_path / "linked").symlink_to(elsewhere)
            assert main(["pretrain", "prepare", str(source), "-o", str(tmp_path / "linked"), "--threads", "1",
                         "--val-fraction", "0.25"]) == 0
            assert {p.name for p in elsewhere.iterdir()} == set(good)
        finally:
            shutil.rmtree(elsewhere)


# ---- a fit stopped by a signal -----------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def test_the_interrupted_line_names_last_ckpt_only_when_it_is_this_runs(tmp_path: Path) -> None:
    """A run started over in a folder that holds an earlier run's last.ckpt, and stopped before its first validation,
    must not be told to resume from that file (it is another run's): only a last.ckpt whose recorded run identity is
    this run's is offered with --ckpt_path last."""
    from protrnn.training.cli import interrupted_message
    from protrnn.training.identity import CHECKPOINT_KEY

    this = {"settings": {"model.lr": "0.001"}, "files": {}}
    other = {"settings": {"model.lr": "0.01"}, "files": {}}
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    cli = SimpleNamespace(config=SimpleNamespace(checkpoint=SimpleNamespace(dirpath=str(folder))),
                          trainer=SimpleNamespace(global_step=3), run_identity=this)
    assert "no checkpoint was written yet" in interrupted_message(cli, int(signal.SIGTERM))
    torch.save({CHECKPOINT_KEY: other, "state_dict": {}}, folder / "last.ckpt")
    line = interrupted_message(cli, int(signal.SIGTERM))
    assert line.startswith("interrupted by SIGTERM at global step 3") and "--ckpt_path last" not in line
    assert "is not this run's" in line and "rerun to start over" in line
    torch.save({CHECKPOINT_KEY: this, "state_dict": {}}, folder / "last.ckpt")
    assert "holds the state of the last validation; rerun with --ckpt_path last" in interrupted_message(
        cli, int(signal.SIGINT))


def test_a_training_run_stopped_by_sigterm_exits_143_with_one_line_and_resumes(contact_data: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    """SIGTERM (a scheduler's or Snakemake's stop) ends `protrnn train` with 143 and one line naming the last.ckpt to
    resume, not with 0 (Lightning's SIGTERMException is a SystemExit without a code), so a pipeline does not take the
    job for complete; nothing is exported, and --ckpt_path last continues the run."""
    from protrnn.commands import train as train_cmd

    run = tmp_path / "run"
    data = ["--config", "tiny", "--data.train_path", str(contact_data["train"]), "--data.val_path",
            str(contact_data["val"]), "--trainer.default_root_dir", str(run)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    last = run / "checkpoints" / "last.ckpt"
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "protrnn", "train", *data, "--num_threads", "1",
                                    "--trainer.max_epochs", "100000"], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert last.is_file(), "no validation within 120 s"
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert status == 128 + signal.SIGTERM, lines[-5:]
    assert re.fullmatch(rf"protrnn: interrupted by SIGTERM at global step \d+, nothing exported; "
                        rf"{re.escape(str(last))} holds the state of the last validation; rerun with --ckpt_path "
                        rf"last to continue", lines[-1]), lines[-1]
    assert not (run / "model.json").exists()

    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert train_cmd.main([*data, "--trainer.max_epochs", str(epoch + 2), "--ckpt_path", "last"]) == 0
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == epoch + 1
    assert (run / "model.json").is_file()
