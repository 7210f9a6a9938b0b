"""Lightning training: loss and metrics, the `protrnn train` CLI (configs, bad values, divergence, resume) and export."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from protrnn.commands import train as train_cmd
from protrnn.errors import InputError
from protrnn.evaluation.metrics import evaluate_contacts
from protrnn.training.cli import (
    EXIT_DIVERGED,
    MALLOC_ENV,
    PRETRAIN_CONFIGS,
    TRAIN_CONFIGS,
    maybe_reexec_with_malloc_env,
)
from protrnn.training.loss import contact_loss
from protrnn.training.precision import top_l_precision, true_contacts_in_range
from protrnn.training.schedule import WarmupCosine


@pytest.fixture(scope="module")
def datasets(cgdms_chains, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.npz (10 chains), val.npz (4 chains) and overfit.npz (4 chains) built from real cgdms chains."""
    from protrnn.data.dataset import save_dataset

    chains = cgdms_chains(14)
    out = tmp_path_factory.mktemp("datasets")
    save_dataset(chains[:10], out / "train.npz")
    save_dataset(chains[10:], out / "val.npz")
    save_dataset(chains[:4], out / "overfit.npz")
    return {"train": out / "train.npz", "val": out / "val.npz", "overfit": out / "overfit.npz"}


def tiny_args(datasets: dict[str, Path], root: Path, *extra: str) -> list[str]:
    return ["--config", "tiny", "--data.train_path", str(datasets["train"]), "--data.val_path", str(datasets["val"]),
            "--trainer.default_root_dir", str(root), *extra]


def read_metrics(run: Path, version: int = 0) -> list[dict[str, str]]:
    with open(run / "logs" / f"version_{version}" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---- loss and metrics ----------------------------------------------------------------------------------------------
def _random_batch(seed: int = 0, lengths: tuple[int, ...] = (50, 37, 20)) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch, width = len(lengths), max(lengths)
    logits = torch.randn(batch, width, width, generator=gen)
    logits = logits + logits.transpose(1, 2)
    logits[0, :8, :8] = 0.25  # exact ties: ranking must break them in row-major order
    contacts = (torch.rand(batch, width, width, generator=gen) < 0.08).float()
    contacts = ((contacts + contacts.transpose(1, 2)) > 0).float()
    lens = torch.tensor(lengths)
    mask = torch.arange(width)[None] < lens[:, None]
    observed = mask & (torch.rand(batch, width, generator=gen) > 0.1)
    idx = torch.arange(width)
    pair_mask = observed[:, :, None] & observed[:, None, :] & ((idx[:, None] - idx[None, :]).abs() >= 6)
    return {"logits": logits, "contacts": contacts * pair_mask, "pair_mask": pair_mask, "lengths": lens,
            "observed": observed}


@pytest.mark.parametrize(("name", "low", "high"), [("short", 6, 11), ("medium", 12, 23), ("long", 24, None),
                                                     ("medium_long", 12, None)])
def test_top_l_precision_matches_evaluate_contacts(name: str, low: int, high: int | None) -> None:
    b = _random_batch()
    got = top_l_precision(b["logits"], b["contacts"], b["pair_mask"], b["lengths"], low=low, high=high, k=5)
    for i, length in enumerate(b["lengths"].tolist()):
        probs = torch.sigmoid(b["logits"][i, :length, :length].double()).numpy()
        ref = evaluate_contacts(probs, b["contacts"][i, :length, :length].numpy(), b["observed"][i, :length].numpy(),
                                bins=[], top_k=(5,))[f"{name}/P@L/5"]
        if math.isnan(ref):
            assert math.isnan(float(got[i]))
        else:
            assert float(got[i]) == pytest.approx(ref, abs=1e-6)


def test_true_contacts_in_range_match_evaluate_contacts() -> None:
    b = _random_batch(seed=4, lengths=(90, 64, 31))
    for name, (low, high) in (("short", (6, 11)), ("long", (24, None)), ("medium_long", (12, None))):
        got = true_contacts_in_range(b["contacts"], b["pair_mask"], low=low, high=high)
        for i, length in enumerate(b["lengths"].tolist()):
            ref = evaluate_contacts(np.zeros((length, length)), b["contacts"][i, :length, :length].numpy(),
                                    b["observed"][i, :length].numpy(), bins=[], top_k=(5,))[f"{name}/n_contacts"]
            assert int(got[i]) == ref


def test_validation_logs_long_range_precision_of_the_far_rich_chains() -> None:
    """val/P@L5_long_far: the long-range P@L/5 averaged over the chains with at least L long-range contacts only."""
    from protrnn.model.config import ModelConfig
    from protrnn.training.module import ContactLightningModule

    b = _random_batch(seed=6, lengths=(120, 100, 70, 40))
    # Chain 0 gets dense far contacts (many more than L), the others keep the sparse random ones.
    idx = torch.arange(120)
    far_band = ((idx[None, :] - idx[:, None]).abs() >= 24) & (torch.rand(120, 120, generator=torch.Generator()
                                                                            .manual_seed(1)) < 0.15)
    far_band = far_band | far_band.T
    b["contacts"][0] = torch.maximum(b["contacts"][0], far_band.float()) * b["pair_mask"][0]
    refs, far = [], []
    for i, length in enumerate(b["lengths"].tolist()):
        probs = torch.sigmoid(b["logits"][i, :length, :length].double()).numpy()
        m = evaluate_contacts(probs, b["contacts"][i, :length, :length].numpy(), b["observed"][i, :length].numpy(),
                              bins=[], top_k=(5,))
        refs.append(m["long/P@L/5"])
        far.append(m["long/n_contacts"] >= length)
    assert far[0] and not all(far)  # the test needs both kinds of chain
    module = ContactLightningModule(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise",
                                                pair_dim=8, max_separation=16), warmup_steps=0)
    module.net.pair_outputs = lambda tokens, mask: b["logits"]
    module.net.contact_logits = lambda outputs: outputs
    module._selected_loss = lambda *args, **kwargs: torch.tensor(0.0)
    width = b["logits"].shape[1]
    batch = {"tokens": torch.zeros(4, width, dtype=torch.long), "mask": b["pair_mask"].any(-1), **b}
    module.validation_step(batch, 0)
    expected = np.mean([r for r, f in zip(refs, far, strict=True) if f])
    assert float(module.val_precision["long_far"].compute()) == pytest.approx(expected, abs=1e-6)
    assert float(module.val_precision["long"].compute()) == pytest.approx(np.nanmean(refs), abs=1e-6)


@pytest.mark.parametrize(("n_far", "qualifies"), [(60, True), (59, False)])
def test_far_rich_chains_hold_at_least_l_long_range_contacts(n_far: int, qualifies: bool) -> None:
    """A 60-residue chain with exactly 60 long-range contacts counts (>= L); with 59 it does not, and a validation
    without any qualifying chain logs NaN."""
    from protrnn.model.config import ModelConfig
    from protrnn.training.module import ContactLightningModule

    length = 60
    i, j = torch.triu_indices(length, length, offset=24)  # the 666 long-range pairs, in row-major order
    contacts = torch.zeros(1, length, length)
    contacts[0, i[:n_far], j[:n_far]] = 1.0
    contacts = torch.maximum(contacts, contacts.transpose(1, 2))
    idx = torch.arange(length)
    pair_mask = ((idx[:, None] - idx[None, :]).abs() >= 6)[None]
    logits = torch.zeros(1, length, length)
    logits[0, i[:12], j[:12]] = 5.0  # the top L/5 = 12 long-range pairs are all contacts: precision 1
    logits = logits + logits.transpose(1, 2)
    module = ContactLightningModule(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise",
                                                pair_dim=8, max_separation=16), warmup_steps=0)
    module.net.pair_outputs = lambda tokens, mask: logits
    module.net.contact_logits = lambda outputs: outputs
    module._selected_loss = lambda *args, **kwargs: torch.tensor(0.0)
    batch = {"tokens": torch.zeros(1, length, dtype=torch.long), "mask": torch.ones(1, length, dtype=torch.bool),
             "contacts": contacts, "pair_mask": pair_mask, "lengths": torch.tensor([length])}
    module.validation_step(batch, 0)
    assert float(module.val_precision["long"].compute()) == 1.0
    far = float(module.val_precision["long_far"].compute())
    assert far == 1.0 if qualifies else math.isnan(far)


def test_contact_loss_scores_each_masked_pair_once() -> None:
    b = _random_batch(seed=1)
    logits, contacts, pair_mask = b["logits"], b["contacts"], b["pair_mask"]
    loss = contact_loss(logits, contacts, pair_mask, pos_weight=3.0)
    upper = torch.ones_like(pair_mask[0]).triu(1)
    keep = pair_mask & upper
    x, y = logits[keep], contacts[keep]
    manual = -(3.0 * y * torch.nn.functional.logsigmoid(x) + (1 - y) * torch.nn.functional.logsigmoid(-x)).mean()
    assert float(loss) == pytest.approx(float(manual), rel=1e-5)
    # Unscored pairs (lower triangle, |i-j| < 6, padding, unobserved) never move the loss.
    changed = logits.clone()
    changed[~keep] = 1e4
    assert float(contact_loss(changed, contacts, pair_mask, pos_weight=3.0)) == pytest.approx(float(loss), rel=1e-6)
    # pos_weight up-weights the positives only; focal modulation lowers the loss of confident pairs.
    assert float(contact_loss(logits, contacts, pair_mask, pos_weight=1.0)) < float(loss)
    assert float(contact_loss(logits, contacts, pair_mask, focal_gamma=2.0)) < float(
        contact_loss(logits, contacts, pair_mask))
    empty = contact_loss(logits, contacts, torch.zeros_like(pair_mask))
    assert float(empty) == 0.0


def test_warmup_cosine_schedule() -> None:
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    values = [schedule(step) for step in range(120)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[60] == pytest.approx(0.55)
    assert values[110] == pytest.approx(0.1) and values[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert WarmupCosine(5, math.inf, 0.1)(1000) == 1.0


# ---- CLI: configs and bad values ----------------------------------------------------------------------------------
def test_bundled_configs_parse_and_shortcut_resolves() -> None:
    names = TRAIN_CONFIGS.names()
    assert {"default", "lstm", "gru", "rnn", "tiny", "longrange"} <= set(names)
    assert TRAIN_CONFIGS.resolve_args(["--config", "gru", "-c=x"])[1].endswith("configs/gru.yaml")
    assert TRAIN_CONFIGS.resolve_args(["--config=rnn"])[0].endswith("configs/rnn.yaml")
    with pytest.raises(InputError, match="no bundled config named 'nosuch'"):
        TRAIN_CONFIGS.resolve_args(["--config", "nosuch"])


def test_pretraining_configs_are_not_training_configs() -> None:
    """`pretrain` is a `protrnn pretrain fit` config: `protrnn train` neither lists nor resolves it, and the other way
    round."""
    assert "pretrain" not in TRAIN_CONFIGS.names()
    assert PRETRAIN_CONFIGS.names() == ["pretrain"]
    with pytest.raises(InputError, match="no bundled config named 'pretrain'"):
        train_cmd.main(["--config", "pretrain", "--print_config"])
    assert PRETRAIN_CONFIGS.resolve_args(["--config", "pretrain"])[1].endswith("configs/pretrain/pretrain.yaml")
    with pytest.raises(InputError, match="no bundled config named 'tiny'"):
        PRETRAIN_CONFIGS.resolve_args(["--config", "tiny"])


@pytest.mark.parametrize("name", TRAIN_CONFIGS.names())
def test_print_config_of_each_bundled_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every config `protrnn train` lists is a training config: it parses with its module and data module."""
    with pytest.raises(SystemExit) as stop:
        train_cmd.main(["--config", name, "--print_config"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "use_distributed_sampler: false" in printed and "cell:" in printed and "crop_length:" in printed


@pytest.mark.parametrize(("override", "key"), [
    (["--model.model.cell", "transformer"], "'cell'"),
    (["--model.model.gradient_horizon", "-4"], "'gradient_horizon'"),
    (["--data.crop_length", "5"], "'data.crop_length'"),
    (["--model.lr", "-1"], "'model.lr'"),
    (["--trainer.use_distributed_sampler", "true"], "'trainer.use_distributed_sampler'"),
    (["--model.model.not_a_key", "1"], "not_a_key"),
])
def test_invalid_config_fails_before_training_naming_the_key(datasets: dict[str, Path], tmp_path: Path,
                                                             override: list[str], key: str) -> None:
    with pytest.raises(InputError) as err:
        train_cmd.main(tiny_args(datasets, tmp_path / "run", *override))
    message = str(err.value)
    assert key in message and "\n" not in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_network_too_large_to_train_is_refused_before_it_is_built(datasets: dict[str, Path], tmp_path: Path) -> None:
    """``hidden_size: 10,000,000``: 8 x 10**14 LSTM weights (2 directions x 4 gates x H x H),
    petabytes with gradients and AdamW moments. ``protrnn train`` refuses it in one line naming the key, the count
    and the size, from a meta-device count, before allocating anything (it used to fail inside the allocator, or
    be killed)."""
    with pytest.raises(InputError) as err:
        train_cmd.main(tiny_args(datasets, tmp_path / "run", "--model.model.hidden_size", "10000000"))
    message = str(err.value)
    found = re.fullmatch(r"model config key 'hidden_size': 10000000 makes a network of ([\d,]+) parameters, about "
                         r"([\d.]+) PiB to train with AdamW \(16 bytes a parameter: weight, gradient and two "
                         r"moments\), more than the [\d.]+ [KMGTP]iB of memory this machine has; refused before allocating "
                         r"it \(set with --model.model.hidden_size\)", message)
    assert found, message
    count = int(found.group(1).replace(",", ""))
    assert count // 10**12 == 800  # the recurrent weights; the rest is smaller by orders of magnitude
    assert float(found.group(2)) == pytest.approx(16 * count / 2**50, abs=0.05)
    assert not (tmp_path / "run").exists()


def test_a_near_miss_bound_within_the_cutoff_is_refused_before_training(datasets: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """No non-contact is closer than the contact cutoff, so near_miss_max 8 with data.contact_cutoff 8 would weight
    nothing: refused in one line before the trainer starts (no run folder)."""
    with pytest.raises(InputError, match="'model.near_miss_max': 8 Å is not beyond the contact cutoff "
                                         r"\(data.contact_cutoff 8 Å\)"):
        train_cmd.main(tiny_args(datasets, tmp_path / "run", "--model.near_miss_weight", "2",
                                 "--model.near_miss_max", "8", "--data.contact_cutoff", "8"))
    assert not (tmp_path / "run").exists()


def test_the_training_memory_check_counts_16_bytes_a_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check counts what the real network holds (meta-device build against a real one), refuses one byte
    short of 16 bytes a parameter and passes at exactly that; it names the key that sizes the network, also when
    torch cannot even size it; pretraining checks its own network the same way."""
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.training import module
    from protrnn.training.pretrain import PretrainLightningModule

    config = ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, pair_dim=8, head_blocks=1)
    count = sum(p.numel() for p in ContactModel(config).parameters())
    assert module.parameter_count(ContactModel, config) == count
    monkeypatch.setattr(module, "memory_limit_bytes", lambda: 16 * count)
    assert module.ContactLightningModule(config).net is not None
    monkeypatch.setattr(module, "memory_limit_bytes", lambda: 16 * count - 1)
    with pytest.raises(InputError, match=rf"model config key '\w+': \d+ makes a network of {count:,} parameters, "
                                         rf"about {16 * count / 1024:.1f} KiB to train with AdamW"):
        module.ContactLightningModule(config)
    monkeypatch.setattr(module, "memory_limit_bytes", lambda: 2**40)  # 1 TiB, whatever this machine has
    with pytest.raises(InputError, match="model config key 'pair_dim': 1099511627776 makes a network with more "
                                         "parameters than torch can size; refused before allocating it"):
        module.check_training_memory(ContactModel, ModelConfig(pair_dim=2**40))
    with pytest.raises(InputError, match="model config key 'max_separation': 1000000000 makes a network of "):
        module.check_training_memory(ContactModel, ModelConfig(max_separation=10**9), limit=10**9)
    with pytest.raises(InputError, match="model config key 'hidden_size': 10000000 makes a network of "):
        PretrainLightningModule(ModelConfig(hidden_size=10**7))
    monkeypatch.undo()
    limit = module.memory_limit_bytes()
    assert limit is None or 0 < limit < 2**60


def test_the_memory_limit_is_the_smallest_of_the_machine_and_its_cgroups(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The size check compares with what the process could ever hold: MemTotal, lowered to the smallest memory.max of
    its cgroup and the cgroups above it; never with what is free now (page cache a job has read counts as used in
    MemAvailable and memory.current, so a busy job would refuse every network)."""
    from protrnn.utils import resources

    gib = 2**30
    root = tmp_path / "cgroup"
    leaf = root / "job" / "step"
    leaf.mkdir(parents=True)
    (root / "job" / "memory.max").write_text(f"{8 * gib}\n")  # the job's allocation, one level up
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.current").write_text(f"{8 * gib - 2**20}\n")  # nearly "full" of reclaimable cache
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {64 * gib // 1024} kB\nMemAvailable:       1024 kB\n")
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("0::/job/step\n")
    monkeypatch.setattr(resources, "_CGROUP", root)
    monkeypatch.setattr(resources, "_MEMINFO", meminfo)
    monkeypatch.setattr(resources, "_SELF_CGROUP", self_cgroup)
    assert resources.memory_limit_bytes() == 8 * gib
    (root / "job" / "memory.max").write_text("max\n")  # no limit anywhere: the machine's memory
    assert resources.memory_limit_bytes() == 64 * gib
    (leaf / "memory.max").write_text(f"{2 * gib}\n")
    assert resources.memory_limit_bytes() == 2 * gib


def test_cli_prints_config_errors_on_one_line(datasets: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.cli import main as cli_main

    status = cli_main(["train", *tiny_args(datasets, tmp_path / "run", "--model.model.cell", "lstmx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("protrnn: error: ") and "cell" in err[-1] and "--model.model.cell" in err[-1]


@pytest.mark.parametrize(("override", "key"), [
    (["--trainer.max_steps", "-5"], "trainer.max_steps"),
    (["--trainer.max_epochs", "-3"], "trainer.max_epochs"),
    (["--trainer.val_check_interval", "-1"], "trainer.val_check_interval"),
])
def test_trainer_values_lightning_rejects_are_one_line_naming_the_key(
        datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], override: list[str],
        key: str) -> None:
    """Lightning refuses these while the Trainer is built (MisconfigurationException): exit 2 and one line naming
    the key and the value given, no traceback and no run folder."""
    from protrnn.cli import main as cli_main

    run = tmp_path / "run"
    status = cli_main(["train", *tiny_args(datasets, run, *override)])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err and "MisconfigurationException" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"protrnn: error: config key '{key}': ") and override[1] in last
    assert not run.exists()


def test_a_data_file_that_is_no_npz_archive_is_named_with_its_config_key(datasets: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """A text file given as a dataset: the archive check of load_dataset, named by config key as a missing file is
    (the run's identity digest read it first and blamed "pickled (object) data"); a file of another suffix failed
    inside trainer.fit, after the run folder was made."""
    fake = tmp_path / "fake.npz"
    fake.write_text("hello\n")
    notes = tmp_path / "notes.json"
    notes.write_text('{"a": 1}')
    run = tmp_path / "run"
    for key, path in (("data.train_path", fake), ("data.val_path", notes)):
        data = {**datasets, key.split(".")[1].removesuffix("_path"): path}
        with pytest.raises(InputError) as err:
            train_cmd.main(tiny_args(data, run))
        message = str(err.value)
        magic = path.read_bytes()[:4]
        assert message == (f"{path}: config key '{key}': not a dataset file: not an .npz (zip) archive; it starts "
                           f"with {magic!r}")
        assert not run.exists()
    # prepare's output folder given for its train.npz: named as a directory, with the files to give
    folder = tmp_path / "prepared"
    folder.mkdir()
    for name in ("val.npz", "train.npz"):
        (folder / name).write_bytes(b"")
    with pytest.raises(InputError) as err:
        train_cmd.main(tiny_args({**datasets, "train": folder}, run))
    assert str(err.value) == (f"{folder}: config key 'data.train_path': is a directory, not a dataset file; give one "
                              "of its .npz files: train.npz, val.npz")
    assert not run.exists()


def test_malloc_reexec_only_for_the_real_program(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    for key in MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])  # a library caller: never replaced
    maybe_reexec_with_malloc_env(["--config", "tiny"], ("train",))
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["protrnn", "train", "--config", "tiny"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "protrnn", "train", "--config", "tiny"])
    maybe_reexec_with_malloc_env(["--config", "tiny"], ("train",))
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert len(calls) == 1
        path, argv, env = calls[0]
        assert path == sys.executable and argv[1:] == ["-m", "protrnn", "train", "--config", "tiny"]
        assert all(env[k] == v for k, v in MALLOC_ENV.items())
    calls.clear()
    monkeypatch.setenv("PROTRNN_MALLOC_TUNING", "0")  # the opt-out
    maybe_reexec_with_malloc_env(["--config", "tiny"], ("train",))
    monkeypatch.delenv("PROTRNN_MALLOC_TUNING")
    for key, value in MALLOC_ENV.items():  # already set (the re-executed process itself): no loop
        monkeypatch.setenv(key, value)
    maybe_reexec_with_malloc_env(["--config", "tiny"], ("train",))
    assert calls == []


# ---- training runs -------------------------------------------------------------------------------------------------
def test_diverging_loss_stops_with_the_step(datasets: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    status = train_cmd.main(tiny_args(datasets, tmp_path / "run", "--model.lr", "1e10", "--model.warmup_steps", "0",
                                      "--trainer.gradient_clip_val", "null", "--trainer.max_epochs", "3"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_DIVERGED
    assert "training diverged at global step" in err[-1] and "model.lr" in err[-1]
    assert "gradient_clip_val" in err[-1]
    assert not (tmp_path / "run" / "model.json").exists()


@pytest.fixture(scope="module")
def trained_run(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the tiny config (shared by the resume and export tests)."""
    run = tmp_path_factory.mktemp("run")
    assert train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "1")) == 0
    return run


@pytest.mark.slow
def test_resume_continues_the_global_step(datasets: dict[str, Path], trained_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = first["global_step"]
    assert first["epoch"] == 0 and steps_per_epoch > 0
    capsys.readouterr()
    assert train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "2", "--ckpt_path", "last",
                                    "--model.weight_decay", "0.123")) == 0
    assert re.search(r"resuming .*last\.ckpt with settings that differ from its run: model\.weight_decay: "
                     r"[0-9.e-]+ -> 0\.123; trainer\.max_epochs: 1 -> 2\.", capsys.readouterr().err)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 2 * steps_per_epoch and resumed["epoch"] == 1
    rows = [r for r in read_metrics(run, version=1) if r.get("train/loss_step")]
    assert int(rows[0]["step"]) == steps_per_epoch  # logging continues where the first run stopped
    # A different architecture cannot resume this checkpoint.
    with pytest.raises(InputError, match=r"hidden_size=32 \(config: 48\)"):
        train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "3", "--ckpt_path", "last",
                                 "--model.model.hidden_size", "48"))


RECORDER = '''
import json

import pytorch_lightning as pl


class Recorder(pl.Callback):
    """Appends each training batch's global step and chain IDs to `path`; raises at global step `die_at` (a kill)."""

    def __init__(self, path: str = "", die_at: int = -1) -> None:
        self.path, self.die_at = path, die_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.die_at:
            raise RuntimeError("killed")
        with open(self.path, "a") as handle:
            handle.write(json.dumps([trainer.global_step, list(batch["ids"])]) + "\\n")
'''


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_a_killed_run_resumes_from_its_last_validation_with_the_uninterrupted_runs_batches(
        workers: int, datasets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation every 4 steps across epochs of a few batches, so checkpoints fall mid-epoch; the best checkpoint
    is the first validation's (monitor: step, mode min), so no later validation improves. Killed at step 11 and
    resumed with --ckpt_path last, the run must continue from step 8, its last validation (Lightning 2.6 had left
    last.ckpt at the best step, 4), and train the batches the uninterrupted run trained (a plain loader restarted the
    epoch at its first batch), ending with the same weights (dropout 0: deterministic on the CPU). With a worker
    process too, whose first indices are drawn when its iterator is created."""
    (tmp_path / "recorder_callback.py").write_text(RECORDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["--trainer.max_steps", "16", "--trainer.max_epochs", "100", "--trainer.val_check_interval", "4",
              "--trainer.check_val_every_n_epoch", "null", "--data.max_tokens", "256",
              "--checkpoint.monitor", "step", "--checkpoint.mode", "min", "--data.num_workers", str(workers),
              "--trainer.callbacks+=recorder_callback.Recorder"]

    def steps(path: Path) -> list[list]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    full, part = tmp_path / "full", tmp_path / "part"
    assert train_cmd.main(tiny_args(datasets, full, *common, "--trainer.callbacks.path",
                                    str(tmp_path / "full.jsonl"))) == 0
    uninterrupted = steps(tmp_path / "full.jsonl")
    assert [step for step, _ in uninterrupted] == list(range(16))
    per_epoch = next(step for step, ids in uninterrupted[1:] if set(ids) & set(uninterrupted[0][1]))
    assert 8 % per_epoch != 0, f"step 8 must fall mid-epoch ({per_epoch} batches per epoch)"

    with pytest.raises(RuntimeError, match="killed"):
        train_cmd.main(tiny_args(datasets, part, *common, "--trainer.callbacks.path", str(tmp_path / "part.jsonl"),
                                 "--trainer.callbacks.die_at", "11"))
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert train_cmd.main(tiny_args(datasets, part, *common, "--trainer.callbacks.path", str(tmp_path / "part.jsonl"),
                                    "--ckpt_path", "last")) == 0
    interrupted = steps(tmp_path / "part.jsonl")
    assert [step for step, _ in interrupted] == list(range(11)) + list(range(8, 16))
    assert interrupted[11:] == uninterrupted[8:]
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 16
    for name, tensor in a["state_dict"].items():
        assert torch.allclose(tensor, b["state_dict"][name], rtol=0, atol=1e-6), name


@pytest.mark.slow
def test_a_resume_on_other_data_is_refused_and_last_if_same_resumes_only_the_same_run(
        datasets: dict[str, Path], trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each checkpoint records its run's identity. `--ckpt_path last` on other chains at the same path is one line
    naming the file (it had resumed the old run's model). `last-if-same` (the pipeline's) resumes the same run, the
    data copied elsewhere included, and starts a run over, its checkpoints moved aside, when its data or a training
    setting (here the step budget) changed, or when the checkpoint has no record (an interrupted job rerun after a
    change had resumed the old run)."""
    import shutil

    from protrnn.data.dataset import load_dataset, save_dataset
    from protrnn.training.identity import CHECKPOINT_KEY

    data = {key: tmp_path / f"{key}.npz" for key in ("train", "val")}
    for key, path in data.items():
        shutil.copyfile(datasets[key], path)

    def run_copy(name: str) -> Path:
        run = tmp_path / name
        shutil.copytree(trained_run, run)
        return run

    def newest_log_steps(run: Path) -> list[int]:
        newest = max(int(p.name.split("_")[1]) for p in (run / "logs").glob("version_*"))
        if not (run / "logs" / f"version_{newest}" / "metrics.csv").exists():  # nothing trained, nothing logged
            return []
        return [int(r["step"]) for r in read_metrics(run, version=newest) if r.get("train/loss_step")]

    # the same run (the fixture's settings; its data copied elsewhere): resumed, nothing left to train
    same = run_copy("same")
    capsys.readouterr()
    assert train_cmd.main(tiny_args(data, same, "--trainer.max_epochs", "1", "--ckpt_path", "last-if-same")) == 0
    assert "not resuming" not in capsys.readouterr().err and not (same / "checkpoints.replaced").exists()
    assert newest_log_steps(same) == []
    # another step budget: started over (its logged steps start at 0)
    budget = run_copy("budget")
    assert train_cmd.main(tiny_args(data, budget, "--trainer.max_epochs", "1", "--trainer.max_steps", "1",
                                    "--ckpt_path", "last-if-same")) == 0
    assert "trainer.max_steps: -1 -> 1" in capsys.readouterr().err
    assert (budget / "checkpoints.replaced" / "last.ckpt").is_file() and newest_log_steps(budget)[0] == 0
    # a checkpoint without a record (an older protrnn): started over
    old = run_copy("old")
    checkpoint = torch.load(old / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint[CHECKPOINT_KEY]
    torch.save(checkpoint, old / "checkpoints" / "last.ckpt")
    assert train_cmd.main(tiny_args(data, old, "--trainer.max_epochs", "1", "--ckpt_path", "last-if-same")) == 0
    assert "has no record of its run" in capsys.readouterr().err and newest_log_steps(old)[0] == 0
    # the training chains rewritten without their first chain: same path, other contents
    save_dataset(list(load_dataset(datasets["train"]))[1:], data["train"])
    run = run_copy("run")
    with pytest.raises(InputError, match=r"last\.ckpt: config key 'ckpt_path': the checkpoint's run trained on other "
                                         r"data \(data\.train_path contents: sha256 [0-9a-f]{12} -> [0-9a-f]{12}\)"):
        train_cmd.main(tiny_args(data, run, "--trainer.max_epochs", "1", "--ckpt_path", "last"))
    assert train_cmd.main(tiny_args(data, run, "--trainer.max_epochs", "1", "--ckpt_path", "last-if-same")) == 0
    assert "data.train_path contents" in capsys.readouterr().err
    assert (run / "checkpoints.replaced" / "last.ckpt").is_file() and newest_log_steps(run)[0] == 0


def test_run_identity_settings_and_file_contents(tmp_path: Path) -> None:
    """What counts as the same run: settings but not outputs, threads or the time cap; files by contents (a copy at
    another path is the same; other contents, or an encoder folder's files, differ); a setting such as `cell: lstm`
    is not read as a folder even when one of that name exists."""
    from protrnn.training.identity import identity_differences, run_identity

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"weights")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "w.bin").write_bytes(b"weights")
    (tmp_path / "lstm").mkdir()
    base = {"trainer": {"max_steps": 10, "max_time": "00:01:00:00", "default_root_dir": "x"}, "num_threads": 1,
            "model": {"lr": 0.01, "model": {"cell": "lstm"}},
            "trainer_callbacks": [{"init_args": {"path": str(tmp_path / "a")}}]}
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        one = run_identity(base)
        assert "model.model.cell" not in one["files"] and "trainer_callbacks.0.init_args.path" in one["files"]
        same = run_identity({**base, "num_threads": 4, "trainer": {**base["trainer"], "max_time": "00:09:00:00",
                                                                   "default_root_dir": "y"},
                             "trainer_callbacks": [{"init_args": {"path": str(tmp_path / "b")}}]})
        assert identity_differences(one, same) == ([], {})
        (tmp_path / "b" / "w.bin").write_bytes(b"other weights")
        other = run_identity({**base, "model": {"lr": 0.02, "model": {"cell": "lstm"}},
                              "trainer_callbacks": [{"init_args": {"path": str(tmp_path / "b")}}]})
        settings, files = identity_differences(one, other)
        assert settings == ["model.lr: 0.01 -> 0.02"]
        assert list(files) == ["trainer_callbacks.0.init_args.path"]
        assert files["trainer_callbacks.0.init_args.path"].startswith(
            "trainer_callbacks.0.init_args.path contents: sha256 ")
    finally:
        os.chdir(cwd)


def test_content_digest_ignores_the_creation_record_and_sees_the_chains(cgdms_chains, tmp_path: Path) -> None:
    from protrnn.data.dataset import content_sha256, save_dataset

    chains = cgdms_chains(3)
    save_dataset(chains, tmp_path / "a.npz", info={"command": "one"})
    save_dataset(chains, tmp_path / "b.npz", info={"command": "another"})
    save_dataset(chains[:2], tmp_path / "c.npz")
    a, b, c = (content_sha256(tmp_path / f"{n}.npz") for n in "abc")
    assert a == b != c and len(a) == 64


def test_resume_from_a_file_that_is_not_a_matching_checkpoint_fails_before_training(
        datasets: dict[str, Path], trained_run: Path, tmp_path: Path) -> None:
    """--ckpt_path FILE: a non-checkpoint, a foreign checkpoint or another architecture -> one line naming the key."""
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["hyper_parameters"]["model"]
    torch.save(checkpoint, tmp_path / "foreign.ckpt")
    run = tmp_path / "run"
    for path, match in ((trained_run / "model.json", "'ckpt_path'.*not a readable checkpoint"),
                        (datasets["train"], "'ckpt_path'.*not a readable checkpoint"),
                        (tmp_path / "foreign.ckpt", "'ckpt_path'.*not a protrnn train checkpoint")):
        with pytest.raises(InputError, match=match) as err:
            train_cmd.main(tiny_args(datasets, run, "--ckpt_path", str(path)))
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"hidden_size=32 \(config: 48\)"):
        train_cmd.main(tiny_args(datasets, run, "--ckpt_path", str(trained_run / "checkpoints" / "last.ckpt"),
                                 "--model.model.hidden_size", "48"))
    assert not (run / "checkpoints").exists()


def test_resume_refusals_name_the_checkpoint_on_one_line(datasets: dict[str, Path], trained_run: Path,
                                                         tmp_path: Path) -> None:
    """--ckpt_path last reads the run's own last.ckpt like a file (it gave torch.load tracebacks); a checkpoint past
    max_epochs and Lightning's 'best' (never usable here) are one line too, before anything trains."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with pytest.raises(InputError, match="'ckpt_path': 'best' is not supported; resume with 'last'"):
        train_cmd.main(tiny_args(datasets, run, "--ckpt_path", "best"))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["epoch"] = 3  # 0-based: the fourth epoch
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    with pytest.raises(InputError, match=r"last\.ckpt: config key 'ckpt_path': the checkpoint is at epoch 4 \(counted "
                                         r"from 1\), past trainer\.max_epochs 2"):
        train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"last\.ckpt: config key 'ckpt_path': not a readable checkpoint") as err:
        train_cmd.main(tiny_args(datasets, run, "--ckpt_path", "last"))
    assert "\n" not in str(err.value)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"not a checkpoint"  # nothing trained over it


def test_a_resume_past_max_steps_is_refused_like_one_past_max_epochs(datasets: dict[str, Path], trained_run: Path,
                                                                     tmp_path: Path) -> None:
    """--trainer.max_steps below the checkpoint's global step: one line naming the key and the step (it stopped at
    once, exported again and exited 0); at the checkpoint's step nothing is left to train and the run resumes."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step > 1
    exported = (run / "model.json").read_bytes()
    with pytest.raises(InputError) as err:
        train_cmd.main(tiny_args(datasets, run, "--trainer.max_steps", str(step - 1), "--trainer.max_epochs", "10",
                                 "--ckpt_path", "last"))
    assert str(err.value) == (f"{run / 'checkpoints' / 'last.ckpt'}: config key 'ckpt_path': the checkpoint is at "
                              f"global step {step}, past trainer.max_steps {step - 1}; raise --trainer.max_steps to "
                              "continue it")
    assert (run / "model.json").read_bytes() == exported and not (run / "logs" / "version_1").exists()
    assert train_cmd.main(tiny_args(datasets, run, "--trainer.max_steps", str(step), "--trainer.max_epochs", "10",
                                    "--ckpt_path", "last")) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step


def test_a_resume_one_epoch_past_max_epochs_is_refused(datasets: dict[str, Path], trained_run: Path,
                                                       tmp_path: Path) -> None:
    """A run trained for 2 epochs (its checkpoint's 0-based epoch is 1) resumed with max_epochs 1 had stopped at once,
    exported again and exited 0, as the step budget did; with max_epochs 2 it is finished and resumes as a rerun."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # one epoch
    assert train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # two epochs, from 0
    exported = (run / "model.json").read_bytes()
    with pytest.raises(InputError) as err:
        train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "1", "--ckpt_path", "last"))
    assert str(err.value) == (f"{run / 'checkpoints' / 'last.ckpt'}: config key 'ckpt_path': the checkpoint is at "
                              "epoch 2 (counted from 1), past trainer.max_epochs 1; raise --trainer.max_epochs to "
                              "continue it")
    assert (run / "model.json").read_bytes() == exported
    assert train_cmd.main(tiny_args(datasets, run, "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0


def test_output_folders_that_are_files_are_refused_before_training(datasets: dict[str, Path], tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match=r"afile: config key 'export_dir': is a file, not a folder"):
        train_cmd.main(tiny_args(datasets, tmp_path / "run", "--export_dir", str(afile)))
    with pytest.raises(InputError, match=r"afile: config key 'trainer.default_root_dir': is a file"):
        train_cmd.main(tiny_args(datasets, afile))
    assert not (tmp_path / "run").exists() and afile.read_text() == "x"


def test_resume_names_the_settings_that_differ_from_the_checkpoints() -> None:
    from protrnn.training.cli import resume_differences

    checkpoint = {"hyper_parameters": {"lr": 0.01, "betas": [0.9, 0.99], "model": {"cell": "lstm"}, "_instantiator": "x",
                                       "pos_weight": 4.0},
                  "datamodule_hyper_parameters": {"train_path": "a/train.npz", "seed": 0}}
    assert resume_differences(checkpoint, {"lr": 0.5, "betas": (0.9, 0.99), "model": {"cell": "gru"},
                                           "_instantiator": "y", "pos_weight": 4.0},
                              {"train_path": "b/train.npz", "seed": 0}) == [
        "model.lr: 0.01 -> 0.5", "data.train_path: 'a/train.npz' -> 'b/train.npz'"]
    assert resume_differences({}, {"lr": 0.5}, None) == []


def test_a_copied_run_exports_its_own_best_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    """Resuming a copied run restores the original's absolute best_model_path (Lightning): the export must take the
    file of that name in this run's checkpoints/, or this run's last checkpoint, never the other folder's file."""
    import shutil
    from types import SimpleNamespace

    from protrnn.training.callbacks import ExportOnFitEnd

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    [best] = sorted((trained_run / "checkpoints").glob("best-*.ckpt"))
    here = run / "checkpoints"
    callback = SimpleNamespace(best_model_path=str(best), last_model_path=str(here / "last.ckpt"), dirpath=str(here),
                               monitor="val/P@L5_medium_long")
    trainer = SimpleNamespace(checkpoint_callback=callback, is_global_zero=True, default_root_dir=str(run),
                              strategy=SimpleNamespace(barrier=lambda name: None))
    ExportOnFitEnd(run).on_fit_end(trainer, None)
    meta = json.loads((run / "model.json").read_text())
    assert meta["source_checkpoint"] == str((here / best.name).resolve()) and meta["selected"] == "best"
    (here / best.name).unlink()  # the copy lacks it: this run's last checkpoint, not the other folder's best
    ExportOnFitEnd(run).on_fit_end(trainer, None)
    meta = json.loads((run / "model.json").read_text())
    assert meta["source_checkpoint"] == str((here / "last.ckpt").resolve()) and meta["selected"] == "last"


@pytest.mark.slow
def test_a_copied_run_resumed_with_worse_validations_exports_its_real_best(datasets: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    """A run copied to another folder and resumed: Lightning forgot the best score when the checkpoint folder's path
    changed, so the first validation after the resume became the new "best" (a second best-*.ckpt beside the real
    one, save_top_k 1) and was exported. Monitored here: the global step, mode min, so every validation after the
    first is worse; each checkpoint file records its own step, from which the true best is taken."""
    import shutil

    monitor = ["--checkpoint.monitor", "step", "--checkpoint.mode", "min"]
    original, copy = tmp_path / "original", tmp_path / "elsewhere" / "copy"
    assert train_cmd.main(tiny_args(datasets, original, *monitor, "--trainer.max_epochs", "2")) == 0
    shutil.copytree(original, copy)
    assert train_cmd.main(tiny_args(datasets, copy, *monitor, "--trainer.max_epochs", "4", "--ckpt_path",
                                    "last")) == 0

    def recorded_step(path: Path) -> int:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])

    here = copy / "checkpoints"
    per_epoch = recorded_step(original / "checkpoints" / "last.ckpt") // 2
    assert recorded_step(here / "last.ckpt") == 4 * per_epoch  # the resume trained two more epochs
    written = sorted({*here.glob("*.ckpt"), *(original / "checkpoints").glob("*.ckpt")})
    scores = {path: recorded_step(path) for path in written}
    best_score = min(scores.values())
    assert best_score < 4 * per_epoch
    bests = sorted(here.glob("best-*.ckpt"))
    assert len(bests) == 1, [p.name for p in bests]  # save_top_k 1
    assert recorded_step(bests[0]) == best_score
    meta = json.loads((copy / "model.json").read_text())
    assert meta["selected"] == "best"
    assert Path(meta["source_checkpoint"]) == bests[0].resolve()  # this run's own file, not the original's
    assert meta["global_step"] == best_score


def test_a_moved_checkpoint_state_keeps_the_scores_of_the_files_in_its_new_folder(tmp_path: Path) -> None:
    """RunCheckpoint.load_state_dict with a state recorded in another folder: the paths move to this folder by file
    name, an entry whose file is not here is dropped, and best / kth / last follow from what is kept. A file of the
    same name that another run's callback wrote (its recorded folder differs) is not this run's: never adopted."""
    from protrnn.training.callbacks import RunCheckpoint

    old, here = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    here.mkdir(parents=True)

    def checkpoint_from(folder: Path, path: Path) -> None:  # a checkpoint file as the callback of `folder` saves it
        torch.save({"callbacks": {"RunCheckpoint{'monitor': 'm'}": {"dirpath": str(folder), "best_k_models": {}}}},
                   path)

    for name in ("a.ckpt", "c.ckpt", "last.ckpt"):
        checkpoint_from(old, here / name)
    scores = {"a.ckpt": 0.5, "b.ckpt": 0.875, "c.ckpt": 0.75}  # b, the best, is not in the new folder
    state = {"monitor": "m", "best_model_score": torch.tensor(0.875), "best_model_path": str(old / "b.ckpt"),
             "current_score": torch.tensor(0.75), "dirpath": str(old),
             "best_k_models": {str(old / name): torch.tensor(score) for name, score in scores.items()},
             "kth_best_model_path": str(old / "a.ckpt"), "kth_value": torch.tensor(0.5),
             "last_model_path": str(old / "last.ckpt")}
    for top_k, kth in ((3, None), (2, "a.ckpt")):
        callback = RunCheckpoint(dirpath=here, monitor="m", mode="max", save_top_k=top_k, save_last=True)
        callback.load_state_dict(state)
        assert {Path(p).name: float(v) for p, v in callback.best_k_models.items()} == {"a.ckpt": 0.5, "c.ckpt": 0.75}
        assert all(Path(p).parent == Path(callback.dirpath) for p in callback.best_k_models)
        assert callback.best_model_path == str(Path(callback.dirpath) / "c.ckpt")
        assert float(callback.best_model_score) == 0.75
        assert callback.last_model_path == str(Path(callback.dirpath) / "last.ckpt")
        if kth is None:  # fewer than k kept: the next validation is saved whatever its score
            assert callback.kth_best_model_path == "" and float(callback.kth_value) == -math.inf
        else:
            assert Path(callback.kth_best_model_path).name == kth and float(callback.kth_value) == 0.5
    # another run of the same settings wrote c.ckpt and last.ckpt here: their names match, their folder does not
    for name in ("c.ckpt", "last.ckpt"):
        checkpoint_from(tmp_path / "other" / "checkpoints", here / name)
    callback = RunCheckpoint(dirpath=here, monitor="m", mode="max", save_top_k=1, save_last=True)
    callback.load_state_dict(state)
    assert {Path(p).name: float(v) for p, v in callback.best_k_models.items()} == {"a.ckpt": 0.5}
    assert callback.last_model_path == ""
    (here / "empty.ckpt").write_bytes(b"")  # not a checkpoint at all
    callback = RunCheckpoint(dirpath=here, monitor="m", mode="max", save_top_k=1, save_last=True)
    callback.load_state_dict({**state, "best_k_models": {str(old / "empty.ckpt"): torch.tensor(1.0)}})
    assert callback.best_k_models == {}
    for name in ("a.ckpt", "c.ckpt", "last.ckpt"):
        (here / name).unlink()
    callback = RunCheckpoint(dirpath=here, monitor="m", mode="max", save_top_k=1, save_last=True)
    callback.load_state_dict(state)
    assert callback.best_k_models == {} and callback.best_model_path == "" and callback.best_model_score is None
    assert callback.last_model_path == ""


def test_fit_end_export_and_export_command_round_trip(trained_run: Path, tmp_path: Path) -> None:
    from protrnn.cli import main as cli_main
    from protrnn.model.io import load_network

    # protrnn train exported the best checkpoint into the run directory, with its validation metrics and config.
    meta = json.loads((trained_run / "model.json").read_text())
    assert meta["selected"] == "best" and meta["monitor"] == "val/P@L5_medium_long"
    assert set(meta["val_metrics"]) >= {"val/loss", "val/P@L5_long", "val/P@L5_medium_long"}
    assert meta["training_config"]["model"]["model"]["cell"] == "lstm"
    assert meta["training_config"]["trainer"]["use_distributed_sampler"] is False

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "exported")]) == 0
    model = load_network(tmp_path / "exported").network
    reference = load_network(ckpt).network
    tokens = torch.randint(2, 22, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    torch.testing.assert_close(model.predict_proba(tokens, mask), reference.predict_proba(tokens, mask))
    assert model.export_metadata["global_step"] == torch.load(ckpt, weights_only=True)["global_step"]


def test_export_rejects_mismatched_and_foreign_checkpoints(trained_run: Path, tmp_path: Path,
                                                           datasets: dict[str, Path]) -> None:
    from protrnn.training.callbacks import export_checkpoint

    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"]["hidden_size"] = 24
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    with pytest.raises(InputError, match="weights do not match the architecture.*has shape"):
        export_checkpoint(tmp_path / "mismatch.ckpt", tmp_path / "out")
    diverged = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    name = next(k for k, v in diverged["state_dict"].items() if k.startswith("net.") and v.is_floating_point())
    diverged["state_dict"][name] = torch.full_like(diverged["state_dict"][name], float("nan"))
    torch.save(diverged, tmp_path / "diverged.ckpt")
    with pytest.raises(InputError, match=f"{name.removeprefix('net.')}.*NaN or infinite"):
        export_checkpoint(tmp_path / "diverged.ckpt", tmp_path / "out")
    del checkpoint["hyper_parameters"]["model"]
    torch.save(checkpoint, tmp_path / "nomodel.ckpt")
    with pytest.raises(InputError, match="no model architecture"):
        export_checkpoint(tmp_path / "nomodel.ckpt", tmp_path / "out")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        export_checkpoint(datasets["train"], tmp_path / "out")
    assert not (tmp_path / "out" / "model.json").exists()


@pytest.mark.slow
def test_overfits_a_handful_of_real_chains(datasets: dict[str, Path], tmp_path: Path) -> None:
    """4 real chains, no dropout, whole chains: the training loss must fall at least 10-fold."""
    run = tmp_path / "run"
    args = ["--config", "tiny", "--data.train_path", str(datasets["overfit"]),
            "--data.val_path", str(datasets["overfit"]), "--trainer.default_root_dir", str(run),
            "--trainer.max_epochs", "150", "--trainer.check_val_every_n_epoch", "50",
            "--data.crop_length", "null", "--data.max_tokens", "400", "--data.max_pairs", "40000",
            "--model.lr", "0.01", "--model.warmup_steps", "10", "--model.min_lr_ratio", "0.1"]
    assert train_cmd.main(args) == 0
    rows = read_metrics(run)
    step_losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    epoch_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(epoch_losses) == 150
    first, last = step_losses[0], epoch_losses[-1]
    assert np.isfinite(last) and last <= first / 10, (first, last)


def test_long_range_recipe_overfits_real_chains_through_blocks_and_distogram(datasets: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    """Whole-chain encoder + sampled 24 x 24 pair blocks + log separation + distogram head on 4 real chains: the
    cross-entropy must fall well below chance (ln 18 = 2.89), and the exported model, read back through the contact
    probability (distogram mass below 8 Å), must rank the training chains' true contacts far above their base rate."""
    from protrnn.data.dataset import load_dataset
    from protrnn.model.predictor import load_model

    run = tmp_path / "run"
    bins = json.dumps([float(e) for e in range(4, 21)])
    args = ["--config", "tiny", "--data.train_path", str(datasets["overfit"]),
            "--data.val_path", str(datasets["overfit"]), "--trainer.default_root_dir", str(run),
            "--trainer.max_epochs", "300", "--trainer.check_val_every_n_epoch", "150",
            "--data.crop_length", "null", "--data.pair_block", "24", "--data.blocks_per_chain", "4",
            "--data.max_tokens", "400", "--data.max_pairs", "40000",
            "--model.model.separation", "log", "--model.model.max_separation", "96",
            "--model.model.distogram_bins", bins,
            "--model.lr", "0.01", "--model.warmup_steps", "10", "--model.min_lr_ratio", "0.1"]
    assert train_cmd.main(args) == 0
    rows = read_metrics(run)
    epoch_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(epoch_losses) == 300
    assert epoch_losses[0] > 2.0 and epoch_losses[-1] < 1.0, (epoch_losses[0], epoch_losses[-1])
    meta = json.loads((run / "model.json").read_text())
    assert meta["config"]["distogram_bins"][4] == 8.0 and meta["config"]["separation"] == "log"
    predictor = load_model(run)
    chains = load_dataset(datasets["overfit"])
    scored = 0
    for chain in chains:
        probs = predictor.predict([chain.sequence])[0]
        assert np.array_equal(probs, probs.T)
        truth = chain.contact_map()
        i, j = np.triu_indices(len(truth), 6)
        if truth[i, j].sum() < len(truth) / 5:  # too few scored contacts for a top-L/5 list
            continue
        scored += 1
        rate = truth[i, j].mean()
        top = np.argsort(-probs[i, j], kind="stable")[: len(truth) // 5]  # top-L/5 over all scored pairs
        precision = truth[i[top], j[top]].mean()
        assert precision > max(0.5, 5 * rate), (chain.id, precision, rate)
    assert scored >= 2


@pytest.mark.parametrize("moved", ["before_the_check", "while_reading"])
def test_a_rank_that_finds_last_ckpt_gone_starts_afresh_as_rank_zero_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moved: str) -> None:
    """Under srun/DDP every rank reads `last.ckpt` to decide `last-if-same`, and rank 0 alone moves `checkpoints/`
    aside to start over. A rank that lost the file while reading it failed with "checkpoint not found" while rank 0
    trained. A rank that finds it gone now starts afresh, as rank 0 does (it moved the file, or found none), and never
    reads `checkpoints.replaced/`, which can hold an older run's checkpoint (here one past max_epochs, which would
    stop that rank). Rank 0, and `--ckpt_path last` (which moves nothing), still report a file lost mid-read."""
    import shutil
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from protrnn.model import io as model_io
    from protrnn.training import cli as training_cli

    folder, aside = tmp_path / "checkpoints", tmp_path / "checkpoints.replaced"
    real = model_io.load_checkpoint

    def moved_while_reading(path: Path) -> dict:
        if Path(path).parent == folder and folder.exists():
            folder.rename(aside)
        return real(path)

    def resume(ckpt_path: str, global_zero: bool) -> tuple[SimpleNamespace, tuple[Path, dict] | None]:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        folder.mkdir()
        torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 0}, folder / "last.ckpt")
        cli = SimpleNamespace(config=Namespace(ckpt_path=ckpt_path, checkpoint=Namespace(dirpath=str(folder))),
                              trainer=SimpleNamespace(is_global_zero=global_zero, max_epochs=5))
        if moved == "before_the_check":
            folder.rename(aside)
            return cli, training_cli._resume_checkpoint(cli)
        monkeypatch.setattr(model_io, "load_checkpoint", moved_while_reading)
        try:
            return cli, training_cli._resume_checkpoint(cli)
        finally:
            monkeypatch.setattr(model_io, "load_checkpoint", real)

    cli, found = resume("last-if-same", global_zero=False)
    assert found is None and cli.config.ckpt_path is None
    if moved == "while_reading":  # the file rank 0 read is gone under the others; they reported it and stopped
        for ckpt_path, global_zero in (("last-if-same", True), ("last", False)):
            with pytest.raises(InputError, match="checkpoint not found"):
                resume(ckpt_path, global_zero)
    else:  # nothing to resume, every rank alike
        assert resume("last-if-same", global_zero=True)[1] is None
        assert resume("last", global_zero=False)[1] is None
    # an older run's checkpoint moved aside earlier, and none in checkpoints/: not read by any rank
    shutil.rmtree(folder, ignore_errors=True)
    aside.mkdir(exist_ok=True)
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 60}, aside / "last.ckpt")
    for global_zero in (True, False):
        cli = SimpleNamespace(config=Namespace(ckpt_path="last-if-same", checkpoint=Namespace(dirpath=str(folder))),
                              trainer=SimpleNamespace(is_global_zero=global_zero, max_epochs=5))
        assert training_cli._resume_checkpoint(cli) is None
