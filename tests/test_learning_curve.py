"""benchmarks/learning_curve.py: nested subsets of the training chains, the bundle recipe read from the pipeline
config (the same flags the pipeline's own train jobs get), and the fitted gain per doubling of the data."""

from __future__ import annotations

import csv
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import load_dataset, save_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _script():
    spec = importlib.util.spec_from_file_location("learning_curve", REPO / "benchmarks" / "learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_subsets_are_nested_seeded_and_of_the_asked_size() -> None:
    script = _script()
    quarter, half, whole = (set(script.subset_indices(1000, f, 0).tolist()) for f in (0.25, 0.5, 1.0))
    assert len(quarter) == 250 and len(half) == 500 and whole == set(range(1000))
    assert quarter < half < whole
    other_seed = set(script.subset_indices(1000, 0.5, 1).tolist())
    assert other_seed != half and len(other_seed) == 500
    assert len(script.subset_indices(3, 0.01, 0)) == 1  # never empty
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            script.subset_indices(10, bad, 0)


def test_write_subset_keeps_exactly_the_chosen_chains(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    chains = []
    for k in range(12):
        length = 10 + k
        coords = rng.normal(size=(length, 4, 3)).astype(np.float32)
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))
        chains.append(ProteinChain(f"c{k}", sequence, np.ones(length, dtype=bool), coords, source="synthetic"))
    train = save_dataset(chains, tmp_path / "train.npz")
    out = tmp_path / "sub" / "train_f0.5.npz"
    out.parent.mkdir()
    n_chains, n_residues = _script().write_subset(load_dataset(train), 0.5, 7, out)
    expected = [chains[i] for i in np.sort(np.random.default_rng(7).permutation(12)[:6])]
    assert (n_chains, n_residues) == (6, sum(len(c) for c in expected))
    subset = load_dataset(out)
    assert [c.id for c in subset] == [c.id for c in expected]
    for got, want in zip(subset, expected, strict=True):
        assert got.sequence == want.sequence
        np.testing.assert_array_equal(got.coords, want.coords)
    assert subset.metadata["info"]["fraction"] == 0.5 and subset.metadata["info"]["seed"] == 7


def test_fit_per_doubling_recovers_a_log_linear_curve() -> None:
    chains = [900, 1800, 3600, 3600, 3600]
    values = [0.10 + 0.02 * np.log2(n / 900) for n in chains]
    slope, intercept = _script().fit_per_doubling(chains, values)
    assert slope == pytest.approx(0.02) and intercept == pytest.approx(0.10 - 0.02 * np.log2(900))


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_recipe_flags_are_the_pipelines_bundle_train_flags(tmp_path: Path) -> None:
    """The benchmark trains the recipe the pipeline trains: every flag it derives from config.bundle.yaml's `bundle`
    section is on the pipeline's own bundle train line (dry run), with the config given by name there by path."""
    script = _script()
    config = yaml.safe_load((REPO / "workflows" / "config.bundle.yaml").read_text())
    config.update(results=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "bundle", "-n", "-p", "--configfile",
                             str(tmp_path / "bundle.yaml"), "--cores", "2"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    train = next(line for line in (result.stdout + result.stderr).splitlines()
                 if "-m protrnn train" in line and "--seed_everything 0 " in line)
    pipeline = shlex.split(train.split("-m protrnn train", 1)[1].split(">", 1)[0])
    encoder = tmp_path / "results" / "pretrain" / "encoder"
    labels = tmp_path / "results" / "pretrain" / "data" / "train.npz"
    flags, bundle = script.recipe_args(REPO / "workflows" / "config.bundle.yaml", encoder, labels)
    assert bundle["max_steps"] == config["bundle"]["max_steps"]
    assert flags[:2] == ["--config", config["bundle"]["config"]]
    for key, value in config["bundle"]["set"].items():  # every override (read back as YAML), the encoder, the budget
        given = [flag.split("=", 1)[1] for flag in flags if flag.startswith(f"--{key}=")]
        assert len(given) == 1 and yaml.safe_load(given[0]) == value, (key, given)
    for flag, value in [("--trainer.callbacks.path", str(encoder)), ("--trainer.max_time", config["bundle"]["max_time"]),
                        ("--trainer.callbacks.freeze_steps", str(config["bundle"]["freeze_steps"]))]:
        assert flags[flags.index(flag) + 1] == value
    assert pipeline[pipeline.index("--config") + 1] == f"protrnn/configs/{config['bundle']['config']}.yaml"
    for k in range(2, len(flags)):
        if flags[k].startswith("--"):
            value = flags[k + 1] if k + 1 < len(flags) and not flags[k + 1].startswith("--") else None
            assert flags[k] in pipeline, flags[k]
            if value is not None:
                assert pipeline[pipeline.index(flags[k]) + 1] == value, flags[k]
    # ... and the other way round: every recipe flag of the pipeline's line is one the script derives (a key the
    # script does not know would otherwise be dropped from the benchmark's recipe without a word)
    per_run = {"--data.train_path", "--data.val_path", "--num_threads", "--trainer.default_root_dir", "--export_dir",
               "--trainer.accelerator", "--trainer.devices", "--trainer.num_nodes", "--trainer.enable_progress_bar",
               "--seed_everything", "--data.seed", "--config"}
    recipe = [flag for flag in pipeline if flag.startswith("--") and flag not in per_run]
    assert sorted(recipe) == sorted(flag for flag in flags[2:] if flag.startswith("--"))


def test_recipe_flags_carry_the_auxiliary_ss_loss_or_refuse_without_its_labels(tmp_path: Path) -> None:
    script = _script()
    config = yaml.safe_load((REPO / "workflows" / "config.bundle.yaml").read_text())
    config["bundle"] = {**config["bundle"], "pretrained": True, "aux_ss_weight": 0.25}
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="--pretrain-labels"):
        script.recipe_args(tmp_path / "bundle.yaml", Path("enc"))
    flags, _ = script.recipe_args(tmp_path / "bundle.yaml", Path("enc"), Path("labels.npz"))
    start = flags.index("--trainer.callbacks+=protrnn.training.finetune.AuxiliarySecondaryStructure")
    assert flags[start + 1:start + 7] == ["--trainer.callbacks.labels", "labels.npz", "--trainer.callbacks.encoder",
                                          "enc", "--trainer.callbacks.weight", "0.25"]
    assert start > flags.index("--trainer.callbacks.freeze_steps")  # after the encoder it reads


@pytest.mark.slow
def test_the_script_trains_scores_compares_and_resumes(cgdms_chains, tmp_path: Path) -> None:
    """End to end on a tiny recipe: the subset run trains on its subset, every run is scored on val, the paired
    comparison names the fraction, and a second invocation that adds a full-data run trains and scores nothing
    twice."""
    chains = cgdms_chains(16)
    data = tmp_path / "data"
    data.mkdir()
    save_dataset(chains[:12], data / "train.npz")
    save_dataset(chains[12:], data / "val.npz")
    # prepare's manifest: the 4 validation chains in 2 homology clusters, which the comparison resamples
    (data / "manifest.tsv").write_text("id\tsplit\tcluster\n" + "".join(
        f"{c.id}\tval\tfam{k // 2}\n" for k, c in enumerate(chains[12:])))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"bundle": {"config": "tiny", "max_time": "00:00:05:00",
                                                 "set": {"model.model.hidden_size": 24}}}))
    out = tmp_path / "curve"
    base = [sys.executable, str(REPO / "benchmarks" / "learning_curve.py"), "--data", str(data), "--config",
            str(config), "--bootstrap", "50", "-o", str(out)]
    first = subprocess.run([*base, "--fractions", "0.5", "1.0"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    half = load_dataset(out / "data" / "train_f0.5@seed0.npz")
    assert [c.id for c in half] == [chains[i].id for i in _script().subset_indices(12, 0.5, 0)]
    assert "| f0.5@seed0 | 6 |" in first.stdout and "| f1@seed0 | 12 |" in first.stdout
    hidden = yaml.safe_load((out / "runs" / "f0.5@seed0" / "model.json").read_text())["config"]["hidden_size"]
    assert hidden == 24  # the config's `set` reached the run
    trained = {n: (out / "runs" / n / "model.safetensors").stat().st_mtime_ns for n in ("f0.5@seed0", "f1@seed0")}

    second = subprocess.run([*base, "--fractions", "0.5", "--full", f"full@seed0={out / 'runs' / 'f1@seed0'}"],
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "training f" not in second.stdout  # nothing trained again; only the new name is scored
    assert second.stdout.count("evaluating: ") == 1
    assert (out / "runs" / "f0.5@seed0" / "model.safetensors").stat().st_mtime_ns == trained["f0.5@seed0"]
    record = yaml.safe_load((out / "learning_curve.json").read_text())
    assert record["models"]["full@seed0"]["chains"] == 12 and record["models"]["f0.5@seed0"]["chains"] == 6
    with open(out / "compare.tsv", newline="") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert sorted(rows) == sorted(["medium_long/P@L/5", "long/P@L/5", "short/P@L/5"])
    for key, label in [("medium_long/P@L/5", "medium+long"), ("long/P@L/5", "long")]:
        row = rows[key]
        assert (row["method"], row["reference"], row["proteins"], row["clusters"]) == ("f0.5", "full", "4", "2")
        assert float(row["mean"]) == pytest.approx(record["models"]["f0.5@seed0"][label][0], abs=1e-6)
        assert float(row["reference_mean"]) == pytest.approx(record["models"]["full@seed0"][label][0], abs=1e-6)
