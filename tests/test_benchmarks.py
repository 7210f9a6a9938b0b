"""Benchmark scripts: what their figures and commands rest on, checked without running a benchmark (each test takes
seconds): the best speed-up leaves out the reference row, the ablation's arms reach ``protrnn evaluate`` under names it
accepts, ``bench_longrange --variant`` takes every ModelConfig key, ``head_context`` and ``pick_distances`` score the
contacts at the cutoff the test set stores, ``bench_speed``'s memory rows keep the malloc settings they are given and
report the mark's unit, ``bench_predict`` batches as ``protrnn predict`` does, and ``gpu_check``'s CPU peaks are per
run."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from protrnn.commands.args import named_paths
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import save_dataset

REPO = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_under_review", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- bench_speed: the best ratio is over the new paths only --------------------------------------------------------

def test_training_mark_can_fall_below_one_when_every_new_path_is_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference faster than every new path is a ratio below 1 (its own row, 1.00x, is not a candidate)."""
    bench_speed = _script("bench_speed")
    monkeypatch.setattr(bench_speed, "SIZES", {"tiny": {"hidden_size": 8, "pair_dim": 8, "head_blocks": 1}})
    monkeypatch.setattr(bench_speed, "_interleave", lambda runs, warmup, repeats: {
        label: ((0.5 if label.startswith("reference") else 1.0 if "fp32" in label else 2.0), 0.0) for label in runs})
    args = argparse.Namespace(batch=2, length=16, warmup=0, repeats=1, narrow_pair_dims=[])
    assert bench_speed.bench_training(args, bf16=True) == {"tiny": pytest.approx(0.5)}


def test_prediction_mark_can_fall_below_one_when_every_new_path_is_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel

    bench_speed = _script("bench_speed")
    torch.manual_seed(0)
    network = ContactModel(ModelConfig(hidden_size=8, pair_dim=8, head_blocks=1)).eval()
    monkeypatch.setattr(bench_speed, "_bundled_network", lambda: (network, "tiny"))

    def interleave(runs: dict, warmup: int, repeats: int) -> dict[str, tuple[float, float]]:
        for call in runs.values():
            call()  # the rows' outputs are compared with the reference's
        return {label: ((1.0 if label.startswith("reference") else 4.0), 0.0) for label in runs}

    monkeypatch.setattr(bench_speed, "_interleave", interleave)
    args = argparse.Namespace(predict_batch=1, predict_length=24, warmup=0, repeats=1)
    assert bench_speed.bench_predict_long(args, bf16=False) == pytest.approx(0.25)
    medians = {"reference": (2.0, 0.0), "fast": (4.0, 0.0), "narrow": (0.1, 0.0)}
    assert bench_speed.best_ratio(medians, "reference", exclude={"narrow"}) == pytest.approx(0.5)


def test_memory_rows_keep_the_tuned_malloc_settings_and_report_gb(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--predict-malloc tuned``: every memory subprocess runs with protrnn train's MALLOC_* settings, as the timed
    prediction parts do; the 5,000-residue figure is in GB, the unit of its 1.5 GB mark."""
    bench_speed = _script("bench_speed")
    envs: list[dict[str, str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> SimpleNamespace:
        envs.append(kwargs["env"])
        return SimpleNamespace(stdout=json.dumps({"cpu_s": 1.0, "wall_s": 1.0, "peak_rss_mib": 1024.0}) + "\n")

    monkeypatch.setattr(bench_speed.subprocess, "run", fake_run)
    args = argparse.Namespace(quick=False, long=False, predict_malloc="tuned")
    gb = bench_speed.bench_memory(args, bf16=False)
    assert envs and all(all(env.get(k) == v for k, v in bench_speed.MALLOC_ENV.items()) for env in envs)
    assert gb == pytest.approx(1024 * 2**20 / 1e9)
    assert "protrnn train's malloc settings" in capsys.readouterr().out
    envs.clear()
    bench_speed.bench_memory(argparse.Namespace(quick=False, long=False, predict_malloc="default"), bf16=False)
    assert envs and not any(key in env for env in envs for key in bench_speed.MALLOC_ENV)


# --- ablation_longrange: arm names reach protrnn evaluate as safe model names --------------------------------------

def test_every_arm_is_evaluated_under_a_name_protrnn_evaluate_accepts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ablation = _script("ablation_longrange")
    commands: list[list[str]] = []

    def fake_run(cmd: list[str], log: Path) -> None:
        commands.append(cmd)
        if "train" in cmd:
            (Path(cmd[cmd.index("--trainer.default_root_dir") + 1]) / "model.json").write_text("{}")
        else:  # evaluate: one protein per test set
            out = Path(cmd[cmd.index("-o") + 1])
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "per_protein.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, ["test_set", "protein", *ablation.METRICS.values()])
                writer.writeheader()
                writer.writerow({"test_set": "psi", "protein": "p1", **dict.fromkeys(ablation.METRICS.values(), 0.5)})

    monkeypatch.setattr(ablation, "_run", fake_run)
    arms = list(ablation.ARMS)
    monkeypatch.setattr(sys, "argv", ["ablation_longrange.py", "--data", str(tmp_path / "data"), "--test-sets", "psi",
                                      "--pretrained", str(tmp_path / "enc"), "--seeds", "0", "--arms", ",".join(arms),
                                      "-o", str(tmp_path / "out")])
    ablation.main()
    models = [cmd[cmd.index("--model") + 1] for cmd in commands if "evaluate" in cmd]
    assert len(models) == len(arms)
    named = named_paths(models, "--model", bare=True)  # what protrnn evaluate does with them: no InputError
    assert list(named) == [ablation.model_name(arm) for arm in arms] == [arm.lstrip("+") for arm in arms]
    assert [path.parent.name for path in named.values()] == arms  # run folders keep the arm names (rerun resumes)
    table = capsys.readouterr().out
    assert all(f"| {arm} | 0.500" in table for arm in arms)  # the table is labelled with the arm names


# --- bench_longrange: --variant takes every ModelConfig key ---------------------------------------------------------

def test_variant_takes_any_model_config_key_and_refuses_unknown_ones(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    bench = _script("bench_longrange")
    built: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def fake_module(model_cfg: dict[str, Any], **module_cfg: Any) -> None:
        built.append(model_cfg)
        raise Stop

    monkeypatch.setattr(bench, "ContactLightningModule", fake_module)
    argv = ["bench_longrange.py", "--data", str(tmp_path), "--recipes", "", "--variant",
            "x=today:separation=log,max_separation=384,head_dropout=0.1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Stop):  # parsed and validated: the run is being built
        bench.main()
    assert built[0]["separation"] == "log" and built[0]["max_separation"] == 384 and built[0]["head_dropout"] == 0.1
    for bad in ("x=today:separaton=log", "x=today:separation=sideways"):
        monkeypatch.setattr(sys, "argv", [*argv[:-1], bad])
        with pytest.raises(SystemExit):
            bench.main()
    assert bench.unknown_model_keys({"separaton": "log", "pair_dim": "8"}, {}) == ["separaton"]


# --- head_context / pick_distances: contacts at the test set's stored cutoff ----------------------------------------

def _chains_at(tmp_path: Path, cutoff: float) -> Path:
    """Three random-walk chains (3.8 A steps) saved as a prepared test set at ``cutoff``."""
    rng = np.random.default_rng(5)
    chains = []
    for k, length in enumerate((40, 52, 61)):
        steps = rng.normal(size=(length, 3))
        trace = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))
        chains.append(ProteinChain(f"c{k}", sequence, np.ones(length, dtype=bool),
                                   np.repeat(trace[:, None], 4, axis=1).astype(np.float32)))
    return save_dataset(chains, tmp_path / f"test_c{cutoff:g}.npz", contact_cutoff=cutoff)


class _FakePredictor:
    """Deterministic random probabilities, no network (what the scripts call of a Predictor)."""

    source = "fake"
    contact_cutoff = 8.0

    @staticmethod
    def clean(sequence: str) -> str:
        return sequence

    @staticmethod
    def _map(sequence: str) -> np.ndarray:
        probs = np.random.default_rng(len(sequence)).random((len(sequence), len(sequence)))
        return (probs + probs.T) / 2

    def predict(self, sequences: list[str]) -> list[np.ndarray]:
        return [self._map(s) for s in sequences]

    def predict_batch(self, sequences: list[str], tile: int | None = None) -> list[np.ndarray]:
        return self.predict(sequences)


def _spy_cutoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    seen: list[float] = []
    plain = ProteinChain.contact_map

    def spy(self: ProteinChain, cutoff: float = 8.0) -> np.ndarray:
        seen.append(cutoff)
        return plain(self, cutoff)

    monkeypatch.setattr(ProteinChain, "contact_map", spy)
    return seen


def test_head_context_scores_contacts_at_the_stored_cutoff(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.evaluation.metrics import evaluate_contacts

    path = _chains_at(tmp_path, 12.0)
    module = _script("head_context")
    monkeypatch.setattr(module, "load_model", lambda *args, **kwargs: _FakePredictor())
    seen = _spy_cutoffs(monkeypatch)
    assert module.main(["--test-set", f"c12={path}", "--tiles", "16"]) == 0
    assert seen and set(seen) == {12.0}
    out = capsys.readouterr().out
    whole = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[2:]}
    from protrnn.data.dataset import load_dataset

    chains = list(load_dataset(path))
    expected = np.mean([evaluate_contacts(_FakePredictor._map(c.sequence), c.contact_map(12.0), c.observed,
                                          bins=[(24, 47)])["long/P@L/5"] for c in chains])
    assert whole["long/P@L/5"] == pytest.approx(expected, abs=5e-4)


def test_pick_distances_counts_contacts_at_the_stored_cutoff(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import protrnn.model.predictor as predictor

    path = _chains_at(tmp_path, 10.0)
    module = _script("pick_distances")
    monkeypatch.setattr(predictor, "load_model", lambda *args, **kwargs: _FakePredictor())
    seen = _spy_cutoffs(monkeypatch)
    assert module.main(["--test-set", f"c10={path}", "--bands", "6-23,24+", "--near", "1"]) == 0
    assert seen and set(seen) == {10.0}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("contacts < 10 A")
    header = lines[1].split()  # the cutoff is a shell edge: the shells below it are what precision counts
    assert header[4:11] == ["0-8", "8-10", "10-12", "12-16", "16-24", ">=24", "median"]
    for line in lines[2:]:
        assert abs(sum(float(v) for v in line.split()[4:10]) - 1.0) < 2e-3


# --- bench_predict: protrnn predict's batch size -------------------------------------------------------------------

def test_bench_predict_batches_as_protrnn_predict_does(tmp_path: Path) -> None:
    import torch

    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model
    from protrnn.model.predictor import default_batch_tokens

    torch.manual_seed(0)
    save_model(ContactModel(ModelConfig(hidden_size=8, pair_dim=8, head_blocks=1)), tmp_path / "tiny")
    records = [("a", "MKTAYIAKQRQISFVKSHFSRQ"), ("b", "GSHMLEDPVDAFQ")]
    figures = _script("bench_predict").throughput(tmp_path / "tiny", "cpu", records)
    assert figures["max_tokens"] == default_batch_tokens("cpu") == 1024
    assert _script("bench_predict").throughput(tmp_path / "tiny", "cpu", records, 64)["max_tokens"] == 64


# --- gpu_check: a CPU run's peak is its own ------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="VmHWM cannot be reset here")
def test_gpu_check_cpu_peak_starts_again_for_each_run() -> None:
    import torch

    gpu_check = _script("gpu_check")
    cpu = torch.device("cpu")
    block = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
    before = gpu_check._peak_mib(cpu)
    del block
    per_run = gpu_check._reset_peak(cpu)
    assert gpu_check._peak_mib(cpu) < before - 20  # the freed block's peak is not this run's
    assert per_run is True
