"""The training record of an export of a checkpoint (`protrnn export CKPT`, `protrnn diagnose CKPT`): the run's resolved
config (``training_config``), as the export at the end of `protrnn train` records it, so a model fine-tuned from a
pretrained encoder reads as pretrained; where the config cannot be known, the record says so (unknown, not False)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from protrnn.cli import main
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import save_dataset
from protrnn.diagnostics.run import model_record, training_record
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.io import load_network
from protrnn.model.pretrain_heads import PretrainNetwork, save_pretrained
from protrnn.training.callbacks import CKPT_TRAINING_CONFIG, export_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRETRAINED = "protrnn.training.finetune.PretrainedEncoder"
FREEZE_STEPS = 3


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory,
               random_walk_chain: Callable[..., ProteinChain]) -> dict[str, Path]:
    """A `protrnn train --config tiny` run started from a pretrained encoder (frozen for FREEZE_STEPS steps)."""
    root = tmp_path_factory.mktemp("finetuned")
    rng = np.random.default_rng(0)
    chains = [random_walk_chain(rng, f"c{i}", int(rng.integers(30, 60))) for i in range(10)]
    train, val = save_dataset(chains[:7], root / "train.npz"), save_dataset(chains[7:], root / "val.npz")
    # the encoder of the tiny config (lstm, embed 16, hidden 32, one layer); its pretraining heads are irrelevant here
    torch.manual_seed(0)
    encoder = root / "encoder"
    save_pretrained(PretrainNetwork(ModelConfig(cell="lstm", embed_dim=16, hidden_size=32, num_layers=1)), encoder)
    run = root / "run"
    assert main(["train", "--config", "tiny", "--data.train_path", str(train), "--data.val_path", str(val),
                 "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "2",
                 f"--trainer.callbacks+={PRETRAINED}", "--trainer.callbacks.path", str(encoder),
                 "--trainer.callbacks.freeze_steps", str(FREEZE_STEPS)]) == 0
    return {"run": run, "encoder": encoder, "last": run / "checkpoints" / "last.ckpt"}


def _pretrained_entry(config: dict) -> dict:
    return next(c for c in config["trainer"]["callbacks"] if c["class_path"] == PRETRAINED)


def test_export_of_a_checkpoint_records_the_runs_config_and_reads_as_pretrained(fine_tuned: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    assert main(["export", str(fine_tuned["last"]), "-o", str(tmp_path / "exp")]) == 0
    exported = json.loads((tmp_path / "exp" / "model.json").read_text())
    config = exported["training_config"]
    # the callbacks and arguments given to `protrnn train` above
    assert _pretrained_entry(config)["init_args"] == {"path": str(fine_tuned["encoder"]), "freeze_steps": FREEZE_STEPS}
    assert exported["training_config_source"] == "checkpoint" and exported["exported_by"] == "protrnn export"
    # what the export at the end of fit recorded
    assert config == json.loads((fine_tuned["run"] / "model.json").read_text())["training_config"]
    record = training_record(exported)
    assert record["pretrained_encoder"] is True and record["freeze_steps"] == FREEZE_STEPS
    assert record["pretrained_encoder_path"] == str(fine_tuned["encoder"])

    # protrnn diagnose given the checkpoint itself reads the same record
    from_checkpoint = training_record(model_record(load_network(fine_tuned["last"])))
    assert from_checkpoint["pretrained_encoder"] is True and from_checkpoint["freeze_steps"] == FREEZE_STEPS
    assert from_checkpoint["global_step"] == torch.load(fine_tuned["last"], weights_only=True)["global_step"]


def _without_config(source: Path, target: Path) -> Path:
    """A copy of a checkpoint as protrnn wrote it before checkpoints held their run's config."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint.pop(CKPT_TRAINING_CONFIG, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


def test_an_older_checkpoint_takes_its_run_directorys_config_and_is_unknown_without_one(fine_tuned: dict[str, Path],
                                                                                         tmp_path: Path) -> None:
    # an older checkpoint in its run directory: the config.yaml of the invocation that has its run's settings
    run = tmp_path / "run"
    shutil.copytree(fine_tuned["run"] / "logs", run / "logs")
    old = _without_config(fine_tuned["last"], run / "checkpoints" / "last.ckpt")
    assert main(["export", str(old), "-o", str(tmp_path / "exp")]) == 0
    exported = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert _pretrained_entry(exported["training_config"])["init_args"]["freeze_steps"] == FREEZE_STEPS
    assert exported["training_config_source"] == str(run / "logs" / "version_0" / "config.yaml")
    assert training_record(exported)["pretrained_encoder"] is True

    # a config.yaml of other settings (another run's logs) is not this checkpoint's record
    (run / "logs" / "version_0" / "config.yaml").write_text(
        (run / "logs" / "version_0" / "config.yaml").read_text().replace(f"freeze_steps: {FREEZE_STEPS}",
                                                                          f"freeze_steps: {FREEZE_STEPS + 1}"))
    for path in (old, _without_config(fine_tuned["last"], tmp_path / "alone" / "last.ckpt")):
        exported = json.loads(export_checkpoint(path, tmp_path / "unknown").read_text())
        # no training_config (readers of model.json take an absent one as {}), and the reason it is unknown
        assert "training_config" not in exported and exported["training_config_source"].startswith("unknown: ")
        record = training_record(exported)
        assert record["pretrained_encoder"] is None  # unknown, not "trained without a pretrained encoder"
        assert record["training_config_source"] == exported["training_config_source"]
        assert training_record(model_record(load_network(path)))["pretrained_encoder"] is None
    # a model.json of an older `protrnn export`, which recorded no training config at all
    assert training_record({"exported_by": "protrnn export", "global_step": 4}) == {
        "global_step": 4, "pretrained_encoder": None,
        "training_config_source": "unknown: exported by a protrnn export that did not record it"}


def test_a_recorded_config_that_is_no_mapping_is_one_line_naming_the_field(fine_tuned: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    checkpoint = torch.load(fine_tuned["last"], map_location="cpu", weights_only=True)
    checkpoint[CKPT_TRAINING_CONFIG] = ["not", "a", "config"]
    torch.save(checkpoint, tmp_path / "odd.ckpt")
    with pytest.raises(InputError, match=f"odd.ckpt: checkpoint field '{CKPT_TRAINING_CONFIG}' is a list") as err:
        export_checkpoint(tmp_path / "odd.ckpt", tmp_path / "exp")
    assert "\n" not in str(err.value) and not (tmp_path / "exp").exists()
