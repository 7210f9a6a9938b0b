"""The Snakemake pipeline: configuration checks, dry runs of the shipped configs, lint, and a tiny end-to-end run.

Snakemake is in the ``[test]`` extra and runs as ``python -m snakemake`` with this interpreter, so a missing install
fails these tests rather than skipping them; only the tests that read ../shared/data skip when it is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def snakemake(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def write_config(tmp_path: Path, **changes: object) -> Path:
    config = yaml.safe_load((REPO / "workflows" / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["cache_dir"] = str(tmp_path / "cache")
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for parent in parents:
            node = node[parent]
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_default_config_dry_run(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path)), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    for rule in ("fetch_default_sources", "prepare", "train", "evaluate_model", "evaluate_baselines", "diagnose",
                 "synthetic", "report", "split_fasta", "predict_shard", "gather_predictions"):
        assert rule in plan, f"rule {rule} missing from the default plan"


def test_grid_runs_every_model_per_seed_with_a_matched_step_budget(tmp_path: Path) -> None:
    """Each (model, seed) is one run trained for exactly train.max_steps steps (no early stopping, final weights);
    the bundle keeps its epoch budget; evaluation, diagnostics and the report take every run."""
    config = yaml.safe_load((REPO / "workflows" / "config.yaml").read_text())
    assert len(config["seeds"]) >= 2 and "max_steps" in config["train"]
    result = snakemake("-n", "-p", "all", "bundle", "--configfile", str(write_config(tmp_path)), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    trains = [line for line in plan.splitlines() if "-m protrnn train" in line]
    assert len(trains) == len(config["models"]) * len(config["seeds"]) + 1  # + the bundle
    steps = config["train"]["max_steps"]
    for model in config["models"]:
        for seed in config["seeds"]:
            line = next(t for t in trains if f"--export_dir {tmp_path}/results/models/{model}/seed{seed} " in t)
            assert f"--trainer.max_steps {steps} --trainer.max_epochs -1" in line
            assert "--early_stopping.patience 1000000000 --checkpoint.monitor null" in line
            assert f"--seed_everything {seed} --data.seed {seed}" in line
            assert f"diagnose {model}@seed{seed}=" in plan and f"--model {model}@seed{seed}=" in plan
    bundle = next(t for t in trains if "models/bundle" in t)
    assert "--trainer.max_epochs 18" in bundle and "max_steps" not in bundle
    for variant in config["synthetic"]["variants"]:
        for seed in config["seeds"]:
            assert f"synthetic/{variant}/seed{seed}/result.json" in plan
    report = next(line for line in plan.splitlines() if "-m protrnn report" in line)
    assert report.count("--evaluation") == len(config["models"]) * len(config["seeds"]) + 1
    assert report.count("--synthetic") == len(config["synthetic"]["variants"]) * len(config["seeds"])
    assert f"--reference {config['report']['reference']}" in report


def test_seeds_must_be_distinct(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, seeds=[1, 1])))
    assert result.returncode != 0 and "seeds" in result.stderr + result.stdout


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_science_config_isolates_every_knob_with_three_seeds() -> None:
    science = yaml.safe_load((REPO / "workflows" / "config.science.yaml").read_text())
    assert len(science["seeds"]) >= 3
    result = snakemake("-n", "--configfile", str(REPO / "workflows" / "config.science.yaml"), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    for model in ("lstm_no_orthogonal", "lstm_no_residual", "lstm_no_layer_norm", "lstm_no_clip", "lstm_chrono"):
        assert f"models/{model}/seed2/model.json" in plan
    assert "synthetic/lstm2_no_residual/seed2/result.json" in plan


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_full_config_dry_run() -> None:
    result = snakemake("-n", "--configfile", str(REPO / "workflows" / "config.full.yaml"), "--cores", "16")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "lstm_horizon32" in result.stdout + result.stderr


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_configfile_replaces_the_default_config_instead_of_merging(tmp_path: Path) -> None:
    """Snakemake deep-merges a --configfile into the Snakefile's default config; the full config must not inherit the
    default grid's extra model, its 18-epoch bundle cap or `optional: true` on its test sets."""
    full = REPO / "workflows" / "config.full.yaml"
    result = snakemake("bundle", "all", "-n", "-p", "--configfile", str(full), "--cores", "16")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    assert "models/lstm_horizon16/" not in plan  # in config.yaml's grid only
    bundle_cmd = next(line for line in plan.splitlines() if "--export_dir results_full/models/bundle" in line)
    assert "--trainer.max_epochs 300" in bundle_cmd
    missing = tmp_path / "missing_ts50.json.gz"
    config = yaml.safe_load(full.read_text())
    config["test_sets"]["ts50"]["path"] = str(missing)
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "full.yaml"))
    assert result.returncode != 0
    assert "test_sets.ts50.path" in result.stderr + result.stdout and str(missing) in result.stderr + result.stdout


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_bundle_target_trains_evaluates_and_installs_the_default_model(tmp_path: Path) -> None:
    result = snakemake("-n", "-p", "bundle", "--configfile", str(write_config(tmp_path)), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    assert "models/bundle/model.json" in plan and "evaluation/bundle/summary.json" in plan
    assert "protrnn/pretrained/model.safetensors" in plan
    assert "--trainer.max_time 00:00:15:00" in plan.replace("\n", " ") or "00:00:15:00" in plan


def test_pdb_ids_are_fetched_by_their_own_rule(tmp_path: Path) -> None:
    config = write_config(tmp_path, **{"sources.pdb_ids": ["1UBQ", "2gb1"]})
    result = snakemake("-n", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    assert "fetch_pdb_entry" in plan and "pdb/1ubq.cif" in plan and "pdb/2gb1.cif" in plan


def test_without_any_test_set_a_heldout_share_of_the_clusters_is_the_test_set(tmp_path: Path) -> None:
    """A fresh machine without ../shared/data still runs the main job end to end (README's first command)."""
    config = write_config(tmp_path, test_sets={"ts50": {"path": str(tmp_path / "missing.json.gz"), "optional": True}},
                          **{"evaluate.ollikainen_root": str(tmp_path / "missing")})
    result = snakemake("-n", "-p", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    assert "holding out 10% of the training clusters as test set 'heldout'" in plan
    assert "--split train=0.81,val=0.09,test_heldout=0.1" in plan
    assert "--test-set heldout=" in plan and "FreeContact baseline skipped" in plan
    assert "freecontact" not in plan.split("--baselines", 1)[1].split()[0]


def test_bundle_is_a_reserved_model_name(tmp_path: Path) -> None:
    config = write_config(tmp_path, models={"bundle": {"config": "lstm"}})
    result = snakemake("-n", "--configfile", str(config))
    assert result.returncode != 0
    assert "models.bundle" in result.stderr + result.stdout


def test_lint_is_clean() -> None:
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_slurm_profile_keeps_each_models_runtime_and_gpu(tmp_path: Path) -> None:
    """The profile must not override the train rule's runtime (max_time + 30 min): the full config's 12-hour
    `bundle` run needs 750 minutes, and a fixed 420 would let SLURM kill it."""
    result = snakemake("bundle", "-n", "--profile", str(REPO / "workflows" / "profiles" / "slurm"),
                       "--configfile", str(REPO / "workflows" / "config.full.yaml"))
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    train = plan[plan.index("rule train:"):]
    resources = next(line for line in train.splitlines() if line.strip().startswith("resources:"))
    assert "runtime=750" in resources and "gpu=1" in resources and "slurm_partition=gpu" in resources


def test_ddp_under_slurm_launches_training_with_srun(tmp_path: Path) -> None:
    """docs/pipeline.md: the `mpi: srun` resource makes the train rule start one task per GPU with srun."""
    config = str(write_config(tmp_path))
    target = str(tmp_path / "results" / "models" / "lstm" / "seed0" / "model.json")
    plain = snakemake(target, "-n", "-p", "--configfile", config)
    ddp = snakemake(target, "-n", "-p", "--set-resources", "train:mpi=srun", "train:tasks_per_node=4",
                    "--configfile", config)
    assert plain.returncode == 0 and ddp.returncode == 0, plain.stderr + ddp.stderr
    assert "srun " not in plain.stdout and 'srun "$PROTRNN_PY" -m protrnn train' in ddp.stdout


def test_wrong_type_fails_naming_the_key(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"train.max_epochs": "many"})))
    assert result.returncode != 0
    assert "max_epochs" in result.stderr + result.stdout


def test_unknown_model_config_fails_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, models={"lstm": {"config": "transformer"}})
    result = snakemake("-n", "--configfile", str(config))
    assert result.returncode != 0
    assert "models.lstm.config" in result.stderr + result.stdout


def test_missing_input_directory_fails_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"sources.paths": [str(missing)]})))
    assert result.returncode != 0
    assert str(missing) in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_tiny_end_to_end_run(tmp_path: Path) -> None:
    """A few real chains, two seeds, a few optimiser steps, two synthetic variants: every stage runs, the report,
    its summary.json and gathered predictions exist, a rerun is a no-op."""
    config = write_config(
        tmp_path,
        **{
            "sources.default": False,
            "sources.paths": [str(SHARED / "rosetta_demos_pdbentries" / "rosetta_demos_pdbentries_chains.jsonl.gz")],
            "sources.limit": 40,
            "prepare.max_length": 300,
            "test_sets": {"ts50": {"path": str(SHARED / "ts50_gvp" / "ts50.json.gz")}},
            "seeds": [0, 1],
            "train.max_steps": 6,
            "train.max_time": "00:00:01:00",
            "models": {"lstm": {"config": "tiny"}, "rnn": {"config": "tiny", "set": {"model.model.cell": "rnn"}}},
            "evaluate.bootstrap": 20,
            "evaluate.save_predictions": 2,
            "diagnose.max_distance": 32,
            "diagnose.usage": {"distances": [0, 4, 16], "draws": 2, "chains": 3, "pairs_per_chain": 2,
                               "precision_chains": 1},
            "synthetic": {"distances": [2, 4], "steps": 10, "eval_queries": 50,
                          "variants": {"lstm": {}, "rnn": {"cell": "rnn"}}},
            "predict.model": "lstm",
        },
    )
    result = snakemake("--configfile", str(config), "--cores", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / "results"
    html = (results / "report" / "report.html").read_text()
    assert "rnn" in html and "lstm" in html and "Findings" in html
    summary = json.loads((results / "report" / "summary.json").read_text())
    assert summary["models"]["lstm"]["seeds"] == [0, 1] and summary["models"]["rnn"]["seeds"] == [0, 1]
    assert sorted(summary["synthetic"]) == ["lstm", "rnn"]
    cell = next(r for r in summary["findings"]["rows"] if r["knob"] == "cell")
    assert cell["grid"] == {"variant": "rnn", "reference": "lstm"}
    assert cell["synthetic"] == {"variant": "rnn", "reference": "lstm"}
    # every grid run trained exactly train.max_steps optimiser steps and exported those final weights
    for model in ("lstm", "rnn"):
        for seed in (0, 1):
            record = json.loads((results / "models" / model / f"seed{seed}" / "model.json").read_text())
            assert record["global_step"] == 6 and record["training_config"]["seed_everything"] == seed
    predictions = (results / "predict" / "example" / "summary.tsv").read_text().splitlines()
    assert len(predictions) == 4 and predictions[1].startswith("ubiquitin_human")
    assert sorted(p.suffix for p in (results / "predict" / "example" / "contacts").iterdir()).count(".rr") == 3
    assert (results / "benchmarks" / "prepare.tsv").exists()
    assert (results / "logs" / "train" / "lstm" / "seed1.log").exists()
    rerun = snakemake("-n", "--configfile", str(config), "--cores", "2")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr
    # Started through another path to the same interpreter (the environment's `snakemake` script, found beside this
    # interpreter rather than on PATH): still nothing to redo.
    script = Path(sysconfig.get_path("scripts")) / ("snakemake.exe" if sys.platform == "win32" else "snakemake")
    assert script.is_file(), f"no snakemake script in {script.parent}"
    other = subprocess.run([str(script), "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO), "-n",
                            "--configfile", str(config), "--cores", "2"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 0 and "Nothing to be done" in other.stdout + other.stderr, other.stdout[-3000:]

    # A training job killed midway (last.ckpt kept, no exported model) resumes from its checkpoint, and once it has
    # finished the next invocation leaves it alone: the resume flag must not count as a changed parameter.
    lstm = results / "models" / "lstm" / "seed0"
    assert (lstm / "checkpoints" / "last.ckpt").exists()
    (lstm / "model.json").unlink()
    (lstm / "model.safetensors").unlink()
    target = str(lstm / "model.json")
    resumed = snakemake(target, "-p", "--configfile", str(config), "--cores", "2", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "--ckpt_path" in resumed.stdout + resumed.stderr
    again = snakemake(target, "-n", "--configfile", str(config), "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
