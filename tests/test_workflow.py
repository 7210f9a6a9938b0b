"""The Snakemake pipeline: configuration checks, dry runs of the shipped configs, lint, and a tiny end-to-end run.

Snakemake is in the ``[test]`` extra and runs as ``python -m snakemake`` with this interpreter, so a missing install
fails these tests rather than skipping them; only the tests that read ../shared/data skip when it is absent.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def snakemake(*args: str, timeout: int = 300, directory: Path = REPO,
              snakefile: Path = REPO / "Snakefile") -> subprocess.CompletedProcess[str]:
    """The pipeline run as a user would, in `directory` (the checkout unless a test gives another)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(directory), *args]
    return subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=timeout)


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
    jobs = {re.match(r"(?:local)?rule (\w+):", block).group(1) for block in job_blocks(plan)}  # type: ignore[union-attr]
    for rule in ("fetch_default_sources", "prepare", "train", "evaluate_model", "evaluate_baselines", "diagnose",
                 "synthetic", "report", "split_fasta", "predict_shard", "gather_predictions"):
        assert rule in jobs, f"rule {rule} missing from the default plan"


def test_default_config_runs_in_another_working_directory(tmp_path: Path) -> None:
    """`snakemake -s CHECKOUT/Snakefile -d DIR`: the default config is the checkout's, outputs go under DIR, and the
    paths the default config gives are read from the checkout (the example FASTA; the test sets beside it), while a
    path given with --config is read from DIR, as Snakemake reads paths. The workflow's scripts and the installed
    model are the checkout's. Before, the default config was looked for in DIR and nothing ran."""
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake("-n", "-p", "all", "bundle", "--cores", "2", directory=work)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    plan = result.stdout + result.stderr
    split = job_block(plan, "split_fasta", "results/predict/example/names.tsv")
    assert f"input: {REPO}/data/example.fasta" in split
    assert f'"$PROTRNN_SCRIPTS/split_fasta.py" {REPO}/data/example.fasta --names results/predict/' in split
    prepare = job_block(plan, "prepare", "results/data/train.npz")
    assert "--test-set" not in prepare or SHARED.exists()
    if SHARED.exists():  # the default config's optional test sets, found beside the checkout
        assert f"--test-set ts50={REPO}/../shared/data/ts50_gvp/ts50.json.gz " in prepare
    assert f" {REPO}/protrnn/pretrained " in shell_line(plan, '"$PROTRNN_SCRIPTS/bundle_model.py"')
    # a path given with --config is the user's, read from the working directory
    shutil.copyfile(REPO / "data" / "example.fasta", work / "mine.fasta")
    result = snakemake("-n", "-p", "--cores", "2", "--config", "predict={fasta: [mine.fasta]}", directory=work)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    split = job_block(result.stdout + result.stderr, "split_fasta", "results/predict/mine/names.tsv")
    assert "input: mine.fasta" in split and "example" not in split


def test_a_checkout_reached_through_a_link_plans_the_same_commands(tmp_path: Path) -> None:
    """The checkout run through a symbolic link to it (a linked home folder, say) plans the very commands it plans
    run directly: its files are given relative to the working directory, as Snakemake records them. Before, the
    default config's test sets, a model's bundled config and the installed model became absolute paths there, which
    Snakemake would have taken for changed inputs and parameters, rerunning prepare and every model."""
    link = tmp_path / "checkout"
    link.symlink_to(REPO)
    config = str(write_config(tmp_path))

    def commands(checkout: Path) -> list[str]:
        result = snakemake("-n", "-p", "all", "bundle", "--cores", "2", "--configfile", config,
                           directory=checkout, snakefile=checkout / "Snakefile")
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
        return sorted(line for line in (result.stdout + result.stderr).splitlines() if "$PROTRNN" in line)

    direct = commands(REPO)
    assert any("--config protrnn/configs/lstm.yaml" in line for line in direct)
    assert commands(link) == direct


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


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"results": "/"}, "results", "file-system root"),
    ({"results": "."}, "results", "checkout or a folder above it"),
    ({"results": "my results"}, "results", "without whitespace"),
    ({"results": "results_{date}"}, "results", "braces"),
    ({"cache_dir": "cache;rm"}, "cache_dir", "shell characters"),
    # a leading ~: Snakemake makes a folder named '~', the shell expands it to $HOME
    ({"results": "~/results"}, "results", "'~' is not expanded"),
    ({"results": "~"}, "results", "'~' is not expanded"),
    ({"cache_dir": "~/.cache/protrnn"}, "cache_dir", "'~' is not expanded"),
    # inside a code folder: `snakemake bundle` swaps protrnn/pretrained whole, deleting results there
    ({"results": "protrnn/pretrained"}, "results", "inside the checkout's protrnn/ folder"),
    ({"results": "protrnn"}, "results", "inside the checkout's protrnn/ folder"),
    ({"results": "workflows/rules/"}, "results", "inside the checkout's workflows/ folder"),
    ({"results": str(REPO / "tests" / "out")}, "results", "inside the checkout's tests/ folder"),
    ({"results": "docs/../docs/results"}, "results", "inside the checkout's docs/ folder"),
    ({"cache_dir": "protrnn/configs/cache"}, "cache_dir", "inside the checkout's protrnn/ folder"),
    ({"models": {"random": {"config": "lstm"}}}, "models.random", "name of a baseline"),
    ({"prepare.split": {"train": 0.9, "val": 0.9}}, "prepare.split", "add up to 1"),
    ({"prepare.min_length": 500, "prepare.max_length": 100}, "prepare.min_length", "above prepare.max_length"),
])
def test_config_values_that_would_misplace_or_merge_outputs_fail_naming_the_key(tmp_path: Path, changes: dict,
                                                                               key: str, words: str) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"config key {key!r}" in output and words in output, output[-2000:]


@pytest.mark.parametrize("place", ["sources.paths", "predict.fasta", "test_sets", "models.config", "results"])
def test_paths_snakemake_or_the_commands_would_misread_fail_naming_the_key(tmp_path: Path, place: str) -> None:
    """A path with braces (Snakemake reads them as wildcards: a WildcardError naming no key) or one starting with '-'
    (the commands read it as an option, after the jobs before it had run) is refused at start-up naming its key."""
    braced = tmp_path / "we ird" / "a{b}.fasta"
    braced.parent.mkdir()
    braced.write_text((REPO / "data" / "example.fasta").read_text())
    config_file = tmp_path / "m{1}.yaml"
    config_file.write_text((REPO / "protrnn" / "configs" / "lstm.yaml").read_text())
    changes, key = {
        "sources.paths": ({"sources.paths": [str(braced)]}, "sources.paths[0]"),
        "predict.fasta": ({"predict.fasta": [str(braced)]}, "predict.fasta[0]"),
        "test_sets": ({"test_sets": {"ts": {"path": str(braced)}}}, "test_sets.ts.path"),
        "models.config": ({"models": {"lstm": {"config": str(config_file)}}}, "models.lstm.config"),
        "results": ({"results": "-dashres"}, "results"),
    }[place]
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    output = result.stderr + result.stdout
    words = "reads as an option" if place == "results" else "reads braces in a path as wildcards"
    assert result.returncode != 0 and f"config key {key!r}" in output and words in output, output[-2000:]
    assert "WildcardError" not in output and "Traceback" not in output


def test_model_configs_and_baselines_that_cannot_run_fail_at_start_up(tmp_path: Path) -> None:
    """A model config naming a folder (an IsADirectoryError traceback), and a baseline list left empty once
    FreeContact is skipped (a broken `--baselines` argument, after training), fail before any job, naming the key."""
    folder = snakemake("-n", "--configfile", str(write_config(tmp_path, models={"lstm": {"config": "data"}})))
    output = folder.stderr + folder.stdout
    assert folder.returncode != 0 and "config key 'models.lstm.config'" in output and "is not a file" in output
    assert "Traceback" not in output and "IsADirectoryError" not in output
    only = snakemake("-n", "--configfile", str(write_config(tmp_path, **{
        "evaluate.baselines": ["freecontact"], "evaluate.ollikainen_root": str(tmp_path / "no_such_alignments")})))
    output = only.stderr + only.stdout
    assert only.returncode != 0 and "config key 'evaluate.baselines'" in output and "lists only freecontact" in output


@pytest.mark.parametrize(("changes", "line"), [
    ({"seeds": [-1, 1]}, "config key 'seeds.0': -1 is less than the minimum of 0"),
    ({"train.seed": -3}, "config key 'train.seed': -3 is less than the minimum of 0"),
    ({"evaluate.baselines": []}, "config key 'evaluate.baselines': [] should be non-empty"),
    ({"evaluate.bootstrap": 0}, "config key 'evaluate.bootstrap': 0 is less than the minimum of 1"),
    ({"train.max_epochs": "many"}, "config key 'train.max_epochs': 'many' is not of type 'integer'"),
    ({"trian": {}}, "config key '(top level)': Additional properties are not allowed ('trian' was unexpected)"),
])
def test_schema_errors_are_one_line_naming_the_key(tmp_path: Path, changes: dict, line: str) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    output = result.stderr + result.stdout
    # one line naming the key, not Snakemake's dump of the whole schema and config (about 580 lines)
    assert result.returncode != 0 and line in output and len(output.splitlines()) < 20, output[-3000:]


@pytest.mark.parametrize("key", ["train.max_time", "models.gru.max_time", "bundle.max_time", "pretrain.max_time"])
def test_a_time_limit_of_zero_is_refused_naming_the_key(tmp_path: Path, key: str) -> None:
    """"00:00:00:00" has the schema's DD:HH:MM:SS form, but Lightning stops such a run before its first step: the job
    exported untrained weights, exited 0, and everything after it evaluated them."""
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{key: "00:00:00:00"})))
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"config key {key!r}: '00:00:00:00' is no time at all" in output, output[-2000:]
    assert "untrained weights" in output and len(output.splitlines()) < 20, output[-2000:]


def test_integral_floats_reach_the_commands_as_integers(tmp_path: Path) -> None:
    config = write_config(tmp_path, **{"train.max_steps": 700.0, "seeds": [0.0, 1.0]})
    result = snakemake("-n", "-p", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    plan = result.stdout + result.stderr
    assert "--trainer.max_steps 700 " in plan and "700.0" not in plan and "models/lstm/seed1/" in plan


def test_settings_the_pipeline_drops_or_changes_are_announced(tmp_path: Path) -> None:
    config = yaml.safe_load(write_config(tmp_path).read_text())
    del config["train"]["max_steps"]
    config["evaluate"]["baselines"] = ["random", "freecontact"]
    config["evaluate"].pop("ollikainen_root", None)
    path = tmp_path / "announced.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    err = result.stderr + result.stdout
    assert "train.max_steps is not set, so grid models train by epochs" in err
    assert "lists freecontact but evaluate.ollikainen_root is not set: FreeContact baseline skipped" in err


def test_train_seed_is_the_seed_when_seeds_is_unset(tmp_path: Path) -> None:
    config = yaml.safe_load(write_config(tmp_path, **{"train.seed": 5}).read_text())
    del config["seeds"]
    path = tmp_path / "unseeded.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    plan = result.stdout + result.stderr
    assert "models/lstm/seed5/model.json" in plan and "models/lstm/seed0/" not in plan


def test_fasta_files_get_distinct_safe_prediction_folders(tmp_path: Path) -> None:
    example = (REPO / "data" / "example.fasta").read_text()
    files = [tmp_path / "x_2.fa", tmp_path / "a" / "x.fa", tmp_path / "b" / "x.fa", tmp_path / "my file.fa"]
    for path in files:
        path.parent.mkdir(exist_ok=True)
        path.write_text(example)
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"predict.fasta": [str(f) for f in files]})))
    assert result.returncode == 0, result.stderr[-2000:]
    plan = result.stdout + result.stderr
    splits = set(re.findall(r"predict/([^/\s]+)/names\.tsv", plan))
    # the second x.fa must not take x_2.fa's folder (it did: x_2 was both the first file's stem and the fallback)
    assert splits == {"x_2", "x", "x_3", "my_file"}


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
    config = write_config(tmp_path, **{"bundle.max_time": "00:00:42:00", "train.max_time": "00:00:07:00"})
    result = snakemake("-n", "-p", "bundle", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    assert "models/bundle/model.json" in plan and "evaluation/bundle/summary.json" in plan
    # installed into the package folder, which is not an output: Snakemake deletes a job's outputs before running it,
    # so a failed install would leave the package without a model (bundle_model.py swaps the folder in whole instead)
    install = job_block(plan, "bundle", f"{tmp_path}/results/bundle/installed.json")
    output = next(line for line in install.splitlines() if line.strip().startswith("output:"))
    assert "protrnn/" not in output
    assert " protrnn/pretrained " in shell_line(plan, '"$PROTRNN_SCRIPTS/bundle_model.py"')
    bundle_training = next(line for line in plan.splitlines() if "protrnn train" in line and "models/bundle" in line)
    assert "--trainer.max_time 00:00:42:00" in bundle_training  # the bundle's own cap, not train.max_time


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


def test_a_distance_given_twice_fails_at_start_up_naming_the_key(tmp_path: Path) -> None:
    """The commands refuse a repeated distance (protrnn synthetic --distances 8,8): the schema refuses it first."""
    for key in ("synthetic.distances", "diagnose.usage.distances"):
        config = write_config(tmp_path, **{key: [0, 8, 8] if "usage" in key else [8, 16, 8]})
        result = snakemake("-n", "--configfile", str(config))
        assert result.returncode != 0 and key in result.stderr + result.stdout, key


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
    its summary.json and gathered predictions exist, a rerun is a no-op, also after the datasets were copied again.
    It runs in a working directory of its own (`--directory`), as a user may: the checkout's scripts still run."""
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return snakemake(*args, timeout=timeout, directory=work)

    # Copies of the datasets, so that the test can give them new modification times (a re-mounted or re-copied dataset)
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    source = datasets / "rosetta_demos_pdbentries_chains.jsonl.gz"
    test_set = datasets / "ts50.json.gz"
    shutil.copyfile(SHARED / "rosetta_demos_pdbentries" / "rosetta_demos_pdbentries_chains.jsonl.gz", source)
    shutil.copyfile(SHARED / "ts50_gvp" / "ts50.json.gz", test_set)
    config = write_config(
        tmp_path,
        **{
            "sources.default": False,
            "sources.paths": [str(source)],
            "sources.limit": 40,
            "prepare.max_length": 300,
            "test_sets": {"ts50": {"path": str(test_set)}},
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
            "predict.fasta": [str(REPO / "data" / "example.fasta")],
            "predict.model": "lstm",
            "predict.shards": 4,  # the example's 3 records leave one shard empty
            "pretrain.enabled": False,
        },
    )
    result = run("--configfile", str(config), "--cores", "2", timeout=900)
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
    assert sorted(p.name for p in work.iterdir()) == [".snakemake"]  # the outputs went to the config's results
    rerun = run("-n", "--configfile", str(config), "--cores", "2")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr
    # The datasets copied again (same content, newer modification times): nothing is prepared or trained again
    later = time.time() + 60
    for path in (source, test_set):
        os.utime(path, (later, later))
    recopied = run("-n", "--configfile", str(config), "--cores", "2")
    assert recopied.returncode == 0 and "Nothing to be done" in recopied.stdout + recopied.stderr, \
        recopied.stdout[-3000:]
    # Started through another path to the same interpreter (the environment's `snakemake` script, found beside this
    # interpreter rather than on PATH): still nothing to redo.
    script = Path(sysconfig.get_path("scripts")) / ("snakemake.exe" if sys.platform == "win32" else "snakemake")
    assert script.is_file(), f"no snakemake script in {script.parent}"
    other = subprocess.run([str(script), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "-n",
                            "--configfile", str(config), "--cores", "2"], cwd=work, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 0 and "Nothing to be done" in other.stdout + other.stderr, other.stdout[-3000:]

    # A training job killed midway (last.ckpt kept, no exported model) resumes from its checkpoint, and once it has
    # finished the next invocation leaves it alone: the resume flag must not count as a changed parameter.
    lstm = results / "models" / "lstm" / "seed0"
    assert (lstm / "checkpoints" / "last.ckpt").exists()
    (lstm / "model.json").unlink()
    (lstm / "model.safetensors").unlink()
    target = str(lstm / "model.json")
    resumed = run(target, "-p", "--configfile", str(config), "--cores", "2", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "--ckpt_path" in resumed.stdout + resumed.stderr
    again = run(target, "-n", "--configfile", str(config), "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


# ------------------------------------------------------------------------------------------- pretraining stage (#10)
PRETRAIN_RULES = ("fetch_pretrain_source", "pretrain_prepare", "pretrain_fit")
CALLBACK = "--trainer.callbacks+=protrnn.training.finetune.PretrainedEncoder"


def job_blocks(plan: str) -> list[str]:
    """The per-job blocks of a dry run's plan (each starts with `rule NAME:`)."""
    return [block for block in re.split(r"\n(?=(?:local)?rule \w+:)", plan) if re.match(r"(?:local)?rule \w+:", block)]


def job_block(plan: str, rule: str, output: str) -> str:
    """The dry-run block of the `rule` job whose output line names `output`."""
    for block in job_blocks(plan):
        if block.startswith(f"rule {rule}:") and any(line.strip().startswith("output:") and output in line
                                                     for line in block.splitlines()):
            return block
    raise AssertionError(f"no {rule} job writing {output} in the plan")


def shell_line(plan: str, needle: str) -> str:
    return next(line for line in plan.splitlines() if needle in line)


def test_default_config_pretrains_once_and_compares_the_same_model_with_and_without_it(tmp_path: Path) -> None:
    """workflows/config.yaml: the pretraining stage on a small sample (fetch, prepare, fit: one job each) and a grid
    model identical to `lstm` except that it starts from the export, once per seed."""
    config = yaml.safe_load((REPO / "workflows" / "config.yaml").read_text())
    assert config["pretrain"]["enabled"] and config["pretrain"]["max_chains"] <= 5000
    pretrained = config["models"]["lstm_pretrained"]
    assert pretrained["pretrained"] is True
    assert {k: v for k, v in pretrained.items() if k not in ("pretrained", "freeze_steps")} == config["models"]["lstm"]
    result = snakemake("-n", "-p", "--configfile", str(write_config(tmp_path)), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    jobs = [block.split(":", 1)[0].split()[-1] for block in job_blocks(plan)]
    for rule in PRETRAIN_RULES:
        assert jobs.count(rule) == 1, (rule, jobs.count(rule))
    results, cache = tmp_path / "results", tmp_path / "cache"
    assert f"sidechainnet==1.0.1 -d {cache}/wheels" in plan
    prepare = shell_line(plan, "-m protrnn pretrain prepare")
    assert prepare.split("prepare ", 1)[1].startswith(f"{cache}/wheels/sidechainnet-1.0.1-py2.py3-none-any.whl ")
    assert f"-o {results}/pretrain/data " in prepare and "--max-chains 3000" in prepare and "--threads 2" in prepare
    for name in ("ts50", "psicov150", "ollikainen40"):
        if (REPO / config["test_sets"][name]["path"]).exists():
            assert f"--test-set {name}={config['test_sets'][name]['path']}" in prepare
    fit = shell_line(plan, "-m protrnn pretrain fit")
    bundled = "protrnn/configs/pretrain/pretrain.yaml"
    assert f"--config {bundled} " in fit and "--trainer.max_time 00:00:03:30" in fit
    assert f"--data.train_path {results}/pretrain/data/train.npz" in fit and "--num_threads 1" in fit
    assert f"--trainer.default_root_dir {results}/pretrain/encoder --export_dir {results}/pretrain/encoder" in fit
    assert "--ckpt_path" not in fit
    for seed in config["seeds"]:
        with_encoder = job_block(plan, "train", f"models/lstm_pretrained/seed{seed}/model.json")
        inputs = next(line for line in with_encoder.splitlines() if line.strip().startswith("input:"))
        assert f"{results}/pretrain/encoder/encoder.json" in inputs
        assert f"{results}/pretrain/encoder/encoder.safetensors" in inputs
        command = shell_line(plan, f"--export_dir {results}/models/lstm_pretrained/seed{seed} ")
        assert (f"{CALLBACK} --trainer.callbacks.path {results}/pretrain/encoder "
                "--trainer.callbacks.freeze_steps 200 ") in command
        plain = job_block(plan, "train", f"models/lstm/seed{seed}/model.json")
        assert "/pretrain/" not in plain and CALLBACK not in plain
    for model in config["models"]:
        if model != "lstm_pretrained":
            assert CALLBACK not in shell_line(plan, f"--export_dir {results}/models/{model}/seed0 ")
    report = shell_line(plan, "-m protrnn report")
    assert "--runs lstm_pretrained@seed0=" in report and "--runs lstm@seed0=" in report


def test_pretraining_disabled_leaves_no_pretrain_job(tmp_path: Path) -> None:
    models = yaml.safe_load((REPO / "workflows" / "config.yaml").read_text())["models"]
    models = {name: spec for name, spec in models.items() if not spec.get("pretrained")}
    config = write_config(tmp_path, models=models, **{"pretrain.enabled": False})
    result = snakemake("-n", "-p", "all", "bundle", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    jobs = {block.split(":", 1)[0].split()[-1] for block in job_blocks(plan)}
    assert "train" in jobs and not jobs & set(PRETRAIN_RULES)
    assert "/pretrain/" not in plan
    assert CALLBACK not in plan and "sidechainnet" not in plan


def test_pretrain_target_and_settings(tmp_path: Path) -> None:
    """`snakemake pretrain` builds only the encoder; every pretrain key reaches its command; a given source is used
    as is (no download)."""
    source = tmp_path / "full_protein_dssp_annotations.json"
    source.write_text("[]")
    config = write_config(tmp_path, pretrain={
        "enabled": True, "source": str(source), "subsets": ["full", "single_domain"], "max_chains": 500,
        "min_length": 30, "max_length": 700, "identity": 0.4, "coverage": 0.6, "val_fraction": 0.1, "seed": 3,
        "max_time": "00:00:01:00", "max_steps": 50, "threads": 2, "prepare_threads": 1,
        "set": {"model.mask_weight": 0, "trainer.val_check_interval": 20}})
    result = snakemake("pretrain", "-n", "-p", "--configfile", str(config), "--cores", "4")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    jobs = sorted(block.split(":", 1)[0].split()[-1] for block in job_blocks(plan))
    assert jobs == ["pretrain", "pretrain_fit", "pretrain_prepare"]  # no fetch: the source is given
    prepare = shell_line(plan, "-m protrnn pretrain prepare")
    assert f"pretrain prepare {source} -o " in prepare
    for flag in ("--subsets full,single_domain", "--min-length 30", "--max-length 700", "--identity 0.4",
                 "--coverage 0.6", "--val-fraction 0.1", "--seed 3", "--max-chains 500", "--threads 1 "):
        assert flag in prepare, flag
    fit = shell_line(plan, "-m protrnn pretrain fit")
    for flag in ("--model.mask_weight=0", "--trainer.val_check_interval=20", "--trainer.max_time 00:00:01:00",
                 "--trainer.max_steps 50", "--num_threads 2", "--seed_everything 3 --data.seed 3"):
        assert flag in fit, flag


def test_config_paths_reach_the_shell_as_one_quoted_word(tmp_path: Path) -> None:
    """A model's and the pretraining config path are one shell word: a space or a command substitution in the name is
    part of the name. Both had reached the shell unquoted (`--config {params.config}`), so `$(touch PWNED)` ran."""
    folder = tmp_path / "my cfgs"
    folder.mkdir()
    model_config = folder / "x$(touch PWNED).yaml"
    pretrain_config = folder / "pre `touch PWNED`.yaml"
    shutil.copyfile(REPO / "protrnn" / "configs" / "lstm.yaml", model_config)
    shutil.copyfile(REPO / "protrnn" / "configs" / "pretrain" / "pretrain.yaml", pretrain_config)
    config = write_config(tmp_path, **{"models.lstm.config": str(model_config), "pretrain.config": str(pretrain_config)})
    result = snakemake("-n", "-p", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout + result.stderr
    commands = {model_config: shell_line(plan, f"--export_dir {tmp_path}/results/models/lstm/seed0 "),
                pretrain_config: shell_line(plan, "-m protrnn pretrain fit")}
    for path, command in commands.items():
        word = re.search(r"--config ('[^']*'|\S+)", command)
        assert word, command
        # the word as a shell reads it: the path itself, and nothing run
        echoed = subprocess.run(["bash", "-c", f"printf '%s' {word[1]}"], cwd=tmp_path, capture_output=True, text=True)
        assert echoed.stdout == str(path), command
        assert not (tmp_path / "PWNED").exists()


def test_editing_a_config_file_reruns_the_training_that_reads_it(tmp_path: Path) -> None:
    """A model's config file, the pretraining config and the file each fit command reads before them (default.yaml,
    pretrain.yaml) are inputs of their jobs, by contents: with every output in place nothing runs, a new modification
    time alone (a fresh clone, a checkout switch) reruns nothing, and after a config file's text changes its job (and
    only its) trains again. The config path had only been a param, so an edit reran nothing."""
    model_config, pretrain_config = tmp_path / "lstm_copy.yaml", tmp_path / "pretrain_copy.yaml"
    shutil.copyfile(REPO / "protrnn" / "configs" / "lstm.yaml", model_config)
    shutil.copyfile(REPO / "protrnn" / "configs" / "pretrain" / "pretrain.yaml", pretrain_config)
    config = write_config(tmp_path, test_sets={"ts50": {"path": str(tmp_path / "missing.json.gz"), "optional": True}},
                          **{"models.lstm.config": str(model_config), "pretrain.config": str(pretrain_config)})
    results, cache = tmp_path / "results", tmp_path / "cache"
    outputs = {"lstm": results / "models" / "lstm" / "seed0" / "model.json",
               "gru": results / "models" / "gru" / "seed0" / "model.json",
               "encoder": results / "pretrain" / "encoder" / "encoder.json"}
    files = [cache / "wheels" / "cgdms-1.0-py3-none-any.whl",
             cache / "wheels" / "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl",
             cache / "wheels" / "sidechainnet-1.0.1-py2.py3-none-any.whl",
             *(results / "data" / name for name in ("train.npz", "val.npz", "test_heldout.npz", "manifest.tsv",
                                                    "leakage.tsv")),
             *(results / "pretrain" / "data" / name for name in ("train.npz", "val.npz", "records.tsv", "leakage.tsv",
                                                                  "manifest.json")),
             *(path.with_name(name) for path in outputs.values() for name in (path.name, "x.safetensors"))]
    for path in files:  # written in pipeline order, so every output is newer than its inputs
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    for name in ("lstm", "gru"):
        outputs[name].with_name("x.safetensors").rename(outputs[name].with_name("model.safetensors"))
    outputs["encoder"].with_name("x.safetensors").rename(outputs["encoder"].with_name("encoder.safetensors"))
    targets = [str(path) for path in outputs.values()]
    # a working directory of its own: --touch locks, and a finished run deletes the checkout's whole .snakemake/locks,
    # which fails a run started beside it in another test worker
    work = tmp_path / "work"
    work.mkdir()
    (work / "data").mkdir()  # the default config's predict.fasta, relative to the working directory
    shutil.copyfile(REPO / "data" / "example.fasta", work / "data" / "example.fasta")
    # record every job's params as if it had run (no command runs under --touch)
    recorded = snakemake("--touch", "--forceall", *targets, "--configfile", str(config), "--cores", "1",
                         directory=work)
    assert recorded.returncode == 0, recorded.stderr[-3000:]

    def planned() -> list[str]:
        result = snakemake("-n", *targets, "--configfile", str(config), "--cores", "2", directory=work)
        assert result.returncode == 0, result.stderr + result.stdout
        plan = result.stdout + result.stderr
        return sorted(line.split("output: ", 1)[1].split(",")[0] for block in job_blocks(plan)
                      for line in block.splitlines() if line.strip().startswith("output:"))

    assert planned() == []
    later = time.time() + 60
    for path in (model_config, pretrain_config):  # new times, same text
        os.utime(path, (later, later))
    assert planned() == []
    model_config.write_text(model_config.read_text() + "# edited\n")
    assert planned() == [str(outputs["lstm"])]
    pretrain_config.write_text(pretrain_config.read_text() + "# edited\n")
    # the encoder retrains, and so would every model that starts from it (none is a target here)
    assert planned() == sorted([str(outputs["lstm"]), str(outputs["encoder"])])
    # the files the commands read first are inputs as well (not edited here: they belong to the checkout)
    result = snakemake("-n", *targets, "--forceall", "--configfile", str(config), "--cores", "2",
                       directory=work)
    plan = result.stdout + result.stderr
    for rule, output, base in (("train", outputs["gru"], "protrnn/configs/default.yaml"),
                               ("pretrain_fit", outputs["encoder"], "protrnn/configs/pretrain/pretrain.yaml")):
        inputs = next(line for line in job_block(plan, rule, str(output)).splitlines()
                      if line.strip().startswith("input:"))
        assert base in inputs, inputs


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"models.lstm.set": {"trainer.max_steps": 2000}}, "models.lstm.set.trainer.max_steps",
     "use models.lstm.max_steps or train.max_steps instead"),
    ({"models.gru.set": {"seed_everything": 99}}, "models.gru.set.seed_everything", "use seeds"),
    ({"models.rnn.set": {"data.train_path": "mine.npz"}}, "models.rnn.set.data.train_path", "prepared data"),
    ({"models.lstm.set": {"trainer.devices": 2}}, "models.lstm.set.trainer.devices", "use train.devices instead"),
    ({"models.lstm.set": {"early_stopping.patience": 3}}, "models.lstm.set.early_stopping.patience",
     "give models.lstm.max_epochs"),
    ({"bundle.set": {"trainer.max_epochs": 5}}, "bundle.set.trainer.max_epochs", "use bundle.max_epochs"),
    ({"pretrain.set": {"trainer.max_time": "00:01:00:00"}}, "pretrain.set.trainer.max_time", "use pretrain.max_time"),
    ({"pretrain.set": {"data.seed": 4}}, "pretrain.set.data.seed", "use pretrain.seed instead"),
    ({"synthetic.variants.lstm": {"steps": 2000}}, "synthetic.variants.lstm.steps", "use synthetic.steps instead"),
    ({"synthetic.variants.lstm": {"seed": 99}}, "synthetic.variants.lstm.seed", "use seeds"),
    ({"synthetic.variants.lstm": {"eval_queries": 4000}}, "synthetic.variants.lstm.eval_queries",
     "use synthetic.eval_queries instead"),
    ({"synthetic.variants.lstm": {"step": 2000}}, "synthetic.variants.lstm.step", "use synthetic.steps instead"),
    # the fit commands' parser takes an unambiguous prefix too (`--seed_every 7` sets seed_everything)
    ({"models.gru.set": {"seed_every": 99}}, "models.gru.set.seed_every", "use seeds"),
    ({"pretrain.set": {"num_thr": 4}}, "pretrain.set.num_thr", "use pretrain.threads instead"),
    ({"models.lstm.set": {"config": "other.yaml"}}, "models.lstm.set.config", "config file as its `config` key"),
    # ... and takes `conf` (`co`) for --config: such a key had reached the command (a config file not tracked)
    ({"models.lstm.set": {"conf": "other.yaml"}}, "models.lstm.set.conf", "config file as its `config` key"),
    ({"pretrain.set": {"co": "other.yaml"}}, "pretrain.set.co", "config file as its `config` key"),
])
def test_settings_the_pipeline_sets_itself_are_refused_where_they_would_be_ignored(
        tmp_path: Path, changes: dict, key: str, words: str) -> None:
    """The commands give the pipeline's own flags after a model's `set:`, `pretrain.set` and a synthetic variant's
    options, and the last value wins: such a key fails at start-up, naming the key that controls it (it had been
    overridden without a word)."""
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"config key {key!r}: the pipeline sets this itself" in output, output[-2000:]
    assert words in output and len(output.splitlines()) < 20, output[-2000:]


def test_settings_the_pipeline_leaves_alone_reach_the_command(tmp_path: Path) -> None:
    """Only flags a command gives itself are refused: an epoch-budget model keeps its early-stopping setting, and
    pretraining without pretrain.max_steps takes trainer.max_steps from pretrain.set."""
    config = write_config(tmp_path, **{
        "models.gru": {"config": "gru", "max_epochs": 4, "set": {"early_stopping.patience": 3}},
        "pretrain.set": {"trainer.max_steps": 40}})
    result = snakemake("-n", "-p", "all", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    plan = result.stdout + result.stderr
    gru = shell_line(plan, f"--export_dir {tmp_path}/results/models/gru/seed0 ")
    assert "--early_stopping.patience=3 " in gru and "--trainer.max_epochs 4 " in gru and "max_steps" not in gru
    assert "--trainer.max_steps=40 " in shell_line(plan, "-m protrnn pretrain fit")


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"models.lstm.set": {"model.model.hiden_size": 64}}, "models.lstm.set.model.model.hiden_size",
     "protrnn train has no setting 'model.model.hiden_size'; did you mean model.model.hidden_size?"),
    ({"bundle.set": {"model.lrr": 0.01}}, "bundle.set.model.lrr", "did you mean model.lr?"),
    ({"models.gru.set": {"data.crop_lenght": 64}}, "models.gru.set.data.crop_lenght", "did you mean data.crop_length?"),
    ({"models.lstm.set": {"early_stoping.patience": 3}}, "models.lstm.set.early_stoping.patience",
     "did you mean early_stopping.patience?"),
    ({"models.lstm.set": {"optimizer.lr": 0.1}}, "models.lstm.set.optimizer.lr", "`protrnn train --help` lists"),
    # the parser takes an unambiguous prefix of a setting, and refuses one that begins several
    ({"models.rnn.set": {"trainer.gradient_clip": 0.5}}, "models.rnn.set.trainer.gradient_clip",
     "ambiguous: it could be any of trainer.gradient_clip_algorithm, trainer.gradient_clip_val"),
    ({"models.rnn.set": {"model.model.distogram": None}}, "models.rnn.set.model.model.distogram",
     "it could be any of model.model.distogram_bins, model.model.distogram_bins+"),
    ({"pretrain.set": {"model.mask_wieght": 0}}, "pretrain.set.model.mask_wieght",
     "protrnn pretrain fit has no setting 'model.mask_wieght'; did you mean model.mask_weight?"),
    ({"pretrain.set": {"early_stopping.patience": 3}}, "pretrain.set.early_stopping.patience",
     "protrnn pretrain fit has no setting 'early_stopping.patience'"),  # pretraining has no early stopping
])
def test_settings_the_fit_commands_do_not_know_are_refused_at_start_up(tmp_path: Path, changes: dict, key: str,
                                                                       words: str) -> None:
    """A model's `set:` (and pretrain.set) reaches protrnn train (protrnn pretrain fit) as overrides: a key the
    command does not know had failed only when its job started, after every job before it."""
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"config key {key!r}: " in output and words in output, output[-2000:]
    assert len(output.splitlines()) < 20, output[-2000:]


def test_settings_the_fit_commands_take_reach_them(tmp_path: Path) -> None:
    """Keys of every group pass, and so do an unambiguous prefix (the parser takes `model.model.hidden` for
    `model.model.hidden_size`) and a key below an option that takes a class (a callback's init_args)."""
    config = write_config(tmp_path, **{
        "models.lstm.set": {"model.model.hidden": 64, "trainer.gradient_clip_val": 0.5, "data.crop_length": 96,
                            "checkpoint.every_n_epochs": 1, "trainer.callbacks.init_args.verbose": True},
        "pretrain.set": {"model.mask_weight": 0, "trainer.val_check_interval": 20}})
    result = snakemake("-n", "-p", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    plan = result.stdout + result.stderr
    lstm = shell_line(plan, f"--export_dir {tmp_path}/results/models/lstm/seed0 ")
    for flag in ("--model.model.hidden=64", "--trainer.gradient_clip_val=0.5", "--data.crop_length=96",
                 "--checkpoint.every_n_epochs=1", "--trainer.callbacks.init_args.verbose=true"):
        assert flag in lstm, flag
    assert "--model.mask_weight=0 " in shell_line(plan, "-m protrnn pretrain fit")


def _fit_settings_section(uses_conda: bool = False) -> dict:
    """The sections of common.smk that list the settings the pipeline gives the fit commands itself and read the ones
    they accept from the code (resolve_setting, unknown_setting, _managed_entry), run on their own (as under
    --use-conda when ``uses_conda``)."""
    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    start = common.index("\n# --- settings the pipeline sets itself")
    section = common[start:common.index("\n# --- ", common.index("\n# --- settings the fit commands accept") + 1)]
    namespace: dict = {"workflow": types.SimpleNamespace(basedir=str(REPO)), "CHECKOUT": REPO, "_USES_CONDA": uses_conda}
    exec("import ast, difflib, importlib.util, re, sys\nfrom pathlib import Path\n" + section, namespace)
    return namespace


@pytest.mark.parametrize("command", ["train", "pretrain fit"])
def test_the_settings_read_from_the_code_are_the_fit_commands_own(command: str) -> None:
    """What common.smk reads from the sources (with `ast`, so that Snakemake's start-up does not import Lightning)
    are exactly the options the command's parser lists, list options (OPTION+) included."""
    shown = subprocess.run([sys.executable, "-m", "protrnn", *command.split(), "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    options = {option for option in re.findall(r"--([A-Za-z_][\w.+-]*)", shown.stdout)
               if option not in ("help", "print_config") and not option.endswith(".help")}
    settings, unread = _fit_settings_section()["fit_settings"](f"protrnn {command}")
    assert unread == []
    assert set(settings) | {f"{option}+" for option, is_list in settings.items() if is_list} == options


def test_groups_whose_code_is_not_here_are_left_to_the_command() -> None:
    """Under --use-conda, Snakemake's own Python may lack Lightning: its groups' keys are then taken (the command
    checks them), while the keys read from protrnn's own sources are still checked."""
    section = _fit_settings_section()
    section["SOURCE_ROOTS"]["pytorch_lightning"] = None
    _, unread = section["fit_settings"]("protrnn train")
    assert unread == ["trainer", "checkpoint", "early_stopping"]
    assert section["unknown_setting"]("trainer.max_stepz", "protrnn train") is None
    assert section["unknown_setting"]("model.lrr", "protrnn train").endswith("did you mean model.lr?")
    # under --use-conda the jobs run the environment's Lightning, which may not be the one installed here
    _, unread = _fit_settings_section(uses_conda=True)["fit_settings"]("protrnn train")
    assert unread == ["trainer", "checkpoint", "early_stopping"]


def test_groups_whose_code_is_not_here_still_know_the_settings_the_pipeline_gives() -> None:
    """The options the rules give a command themselves are its own whatever its Lightning: under --use-conda a key
    that is or abbreviates one is still refused as the pipeline's own setting (`trainer.max_t`), one that begins
    several of them as ambiguous (`trainer.max_`, which the command refuses too: it had been taken for
    trainer.max_time, the first of them), and any other key of the group is left to the command."""
    section = _fit_settings_section(uses_conda=True)
    train, managed = "protrnn train", section["TRAIN_MANAGED"]
    assert section["fit_settings"](train)[1] == ["trainer", "checkpoint", "early_stopping"]
    for key in ("trainer.max_time", "trainer.max_t"):
        assert section["resolve_setting"](key, train) == "trainer.max_time"
        assert section["unknown_setting"](key, train) is None
        assert section["_managed_entry"](key, managed, train) == "{model}.max_time or train.max_time"
    assert section["resolve_setting"]("trainer.max_", train) is None
    assert section["unknown_setting"]("trainer.max_", train) == (
        "protrnn train refuses it as ambiguous: it could be any of trainer.max_epochs, trainer.max_steps, "
        "trainer.max_time; give the whole name")
    for key in ("trainer.gradient_clip_val", "checkpoint.every_n_epochs"):
        assert section["resolve_setting"](key, train) is None
        assert section["unknown_setting"](key, train) is None
        assert section["_managed_entry"](key, managed, train) is None


#: (command, `set:` key, a value, the setting the command's parser takes `--KEY=VALUE` for, or None where it refuses
#: the key as ambiguous), derived by hand from the commands' options.
RESOLVED = [
    ("protrnn train", "model.model.hidden_size", 77, "model.model.hidden_size"),
    ("protrnn train", "model.model.hidden", 77, "model.model.hidden_size"),
    ("protrnn train", "model.model.head", "pairwise", "model.model.head"),  # a whole name, though it begins others
    ("protrnn train", "seed_every", 77, "seed_everything"),
    ("protrnn train", "export", "elsewhere", "export_dir"),
    ("protrnn train", "trainer.devices+", 3, "trainer.devices"),  # a list option's second name appends to it
    ("protrnn train", "model.model.h", 77, None),  # hidden_size, head, head_blocks, head_dilations, ...
    ("protrnn train", "model.model.c", "gru", None),  # cell, chrono_init, chrono_tmax
    ("protrnn train", "model.model.distogram", "[5.5]", None),  # distogram_bins, distogram_bins+
    ("protrnn train", "trainer.dev", 1, None),  # trainer.devices, trainer.devices+
    ("protrnn train", "trainer.max_", 10, None),  # max_epochs, max_steps, max_time
    ("protrnn pretrain fit", "model.mask_w", 0.5, "model.mask_weight"),
    ("protrnn pretrain fit", "model.mask", 0.5, None),  # mask_weight, mask_fraction
    ("protrnn pretrain fit", "model.model.hidden", 77, "model.model.hidden_size"),
]


@pytest.mark.parametrize(("command", "key", "setting"), [
    *((command, key, setting) for command, key, _, setting in RESOLVED),
    ("protrnn train", "conf", "config"),
    ("protrnn pretrain fit", "co", "config"),
    ("protrnn train", "data", "data"),  # a group's own key: the group's config file
    ("protrnn train", "model.model.distogram_bins+", "model.model.distogram_bins"),
    ("protrnn train", "trainer.callbacks.init_args.verbose", None),  # below an option: the command checks it
    ("protrnn train", "model.model.hiden_size", None),
    ("protrnn pretrain fit", "early_stopping.patience", None),  # pretraining has no early stopping
])
def test_resolve_setting_names_the_setting_a_key_stands_for(command: str, key: str, setting: str | None) -> None:
    assert _fit_settings_section()["resolve_setting"](key, command) == setting


_PARSE_KEYS = """
import contextlib, io, json, sys, warnings
warnings.filterwarnings("ignore")
from protrnn.training.cli import PRETRAIN, TRAIN, build_cli
results = []
for command, key, value in json.loads(sys.argv[1]):
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            build_cli(TRAIN if command == "protrnn train" else PRETRAIN, [f"--{key}={value}", "--print_config"])
        results.append({"error": "parsed without printing the config"})
    except SystemExit:
        results.append({"config": shown.getvalue()})
    except Exception as exc:
        results.append({"error": str(exc)})
print(json.dumps(results))
"""


def test_the_fit_commands_take_a_key_for_the_setting_resolve_setting_names() -> None:
    """The commands' own parser (`--KEY=VALUE --print_config`) sets the setting resolve_setting names for a key, and
    refuses a key it names none for as ambiguous (should a parser stop taking prefixes, this fails)."""
    parsed = subprocess.run([sys.executable, "-c", _PARSE_KEYS, json.dumps([row[:3] for row in RESOLVED])], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    section = _fit_settings_section()
    results = json.loads(parsed.stdout.splitlines()[-1])
    for (command, key, value, setting), result in zip(RESOLVED, results, strict=True):
        assert section["resolve_setting"](key, command) == setting, key
        if setting is None:
            assert "ambiguous option" in result.get("error", ""), (key, result)
            continue
        assert "config" in result, (key, result)
        node = yaml.safe_load(result["config"])
        for part in setting.split("."):
            node = node[part]
        assert node == value or (isinstance(node, list) and value in node), (key, node)


def _encoder_settings_function(section: dict) -> object:
    """common.smk's encoder_settings, run in `section` (from _fit_settings_section)."""
    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    source = "\n\n".join(common[common.index(f"\ndef {name}("):].split("\n\n\n", 1)[0]
                          for name in ("_plain", "encoder_settings"))
    keys = re.search(r"^ENCODER_KEYS = (\(.*?\))$", common, flags=re.M)
    assert keys is not None
    section.update(yaml=yaml, WorkflowError=RuntimeError, ENCODER_KEYS=eval(keys.group(1)))  # a literal tuple
    exec(source, section)
    return section["encoder_settings"]


@pytest.mark.parametrize("command", ["protrnn train", "protrnn pretrain fit"])
def test_every_check_takes_a_key_for_the_setting_resolve_setting_names(command: str, tmp_path: Path) -> None:
    """For every prefix of every option name, the unknown-setting check, the pipeline's-own-setting check and the
    encoder match agree with resolve_setting: a key it resolves is taken and counts as that setting, one it does not
    (a prefix of several) is refused as ambiguous and counts as none. The three had rules of their own:
    _managed_entry took `conf` for no setting (it is --config) and `trainer.devices+` for none (it is
    trainer.devices); the encoder match took `model.model.c` for cell and `model.model.h` for hidden_size."""
    section = _fit_settings_section()
    options, _ = section["fit_settings"](command)
    assert set(section["GIVEN_OPTIONS"][command]) <= set(options)  # the options the rules give are the command's
    encoder_settings = _encoder_settings_function(section)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    managed = {option: f"the entry of {option}" for option in options if option != "config"}
    names = [*options, *(f"{option}+" for option, is_list in options.items() if is_list)]
    for key in sorted({name[:end] for name in names for end in range(1, len(name) + 1)}):
        setting = section["resolve_setting"](key, command)
        why = section["unknown_setting"](key, command)
        entry = section["_managed_entry"](key, managed, command)
        encoder = {name for name, value in encoder_settings(empty, empty, {key: 7}, command).items() if value == 7}
        if setting is None:
            assert why is not None and "ambiguous" in why and entry is None and not encoder, (key, why, entry, encoder)
            continue
        assert why is None, (key, why)
        assert entry == managed.get(setting, "none: give the model's config file as its `config` key, which the rule "
                                              "tracks"), (key, entry)
        name = setting.removeprefix("model.model.")
        assert encoder == ({name} if name in section["ENCODER_KEYS"] else set()), (key, encoder)


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"models.lstm.set": {"data": "data.yaml"}}, "models.lstm.set.data",
     "`data` sets the whole group from a config file, and the pipeline gives data.seed, data.train_path, "
     "data.val_path itself after it, so those would be ignored; give the group's other settings one by one"),
    ({"pretrain.set": {"trainer": "trainer.yaml"}}, "pretrain.set.trainer",
     "the pipeline gives trainer.accelerator, trainer.default_root_dir, trainer.enable_progress_bar, "
     "trainer.max_time itself after it"),
])
def test_a_groups_own_key_is_refused_where_the_pipeline_sets_some_of_the_group(tmp_path: Path, changes: dict,
                                                                               key: str, words: str) -> None:
    """`--data FILE` reads the whole data group from a file, and the pipeline's data paths and seed follow it: the
    key had been refused as data.train_path itself, the first of the pipeline's settings it begins."""
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"config key {key!r}: `" in output and words in output, output[-2000:]


@pytest.mark.parametrize(("model_set", "pretrain_set", "key", "words"), [
    ({"model.model.c": "gru"}, {}, "models.probe.set.model.model.c",
     "it could be any of model.model.cell, model.model.chrono_init, model.model.chrono_tmax"),
    ({}, {"model.model.h": 128}, "pretrain.set.model.model.h", "it could be any of model.model.head, "),
])
def test_the_encoder_match_takes_an_abbreviation_for_what_the_command_does(tmp_path: Path, model_set: dict,
                                                                         pretrain_set: dict, key: str,
                                                                         words: str) -> None:
    """`model.model.c` begins cell, chrono_init and chrono_tmax, so the command refuses it as ambiguous: the encoder
    match had taken it for cell (the one encoder setting it begins) and failed first, on 'encoders differ'."""
    config = write_config(tmp_path, models={"lstm": {"config": "lstm"},
                                            "probe": {"config": "lstm", "pretrained": True, "set": model_set}},
                          **{"pretrain.set": pretrain_set})
    result = snakemake("-n", "--configfile", str(config))
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"config key {key!r}: protrnn" in output and words in output, output[-2000:]
    assert "encoders differ" not in output, output[-2000:]


def _managed_table(name: str) -> dict:
    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    match = re.search(rf"^{name} = (\{{.*?^\}})$", common, flags=re.M | re.S)
    assert match is not None, name
    return eval(match.group(1), {"_SEEDS_KEY": "seeds"})  # a literal dict of strings


def _flags_after(rule_file: str, marker: str) -> set[str]:
    """The options a rule's shell command gives after `marker` (the user's options)."""
    text = (REPO / "workflows" / "rules" / rule_file).read_text()
    return set(re.findall(r"--([A-Za-z_][\w.-]*)", text.split(marker, 1)[1].split("> {log}", 1)[0]))


def test_managed_settings_are_every_flag_the_rules_give_after_the_users() -> None:
    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    budget = common.split("def model_budget(", 1)[1].split("\ndef ", 1)[0]
    pretrain_options = common.split("def pretrain_fit_options(", 1)[1].split("\ndef ", 1)[0].split("PRETRAIN.get(\"set\")", 1)[1]
    assert _flags_after("train.smk", "{params.overrides}") | {"ckpt_path"} == set(_managed_table("TRAIN_MANAGED"))
    assert set(re.findall(r"--([\w.]+)", budget)) == set(_managed_table("BUDGET_MANAGED"))
    assert (_flags_after("pretrain.smk", "pretrain fit --config {input.config:q} {params.options}")
            | set(re.findall(r"--([\w.]+)", pretrain_options)) | {"ckpt_path"}) == set(_managed_table("PRETRAIN_MANAGED"))
    # -o is --outdir
    assert (_flags_after("evaluate.smk", "protrnn synthetic {params.options}") | {"outdir"}
            == set(_managed_table("SYNTHETIC_MANAGED")))


def test_data_prepared_under_an_earlier_leakage_rule_are_prepared_again(tmp_path: Path) -> None:
    """Snakemake does not see a package change, so a results folder prepared under an earlier leakage rule kept its
    data (test relatives the current rule removes) on every rerun. The rule (protrnn.data.splits.LEAKAGE_RULE) is a
    parameter of both data rules: with the rule unchanged nothing reruns, and once the text of the rule in a scratch
    checkout's splits.py changes, both prepare jobs run again."""
    checkout = scratch_checkout(tmp_path)
    data = checkout / "protrnn" / "data"
    data.unlink()  # a folder of its own: links to this checkout's files, but for a copy of splits.py
    data.mkdir()
    for entry in (REPO / "protrnn" / "data").iterdir():
        if entry.name not in ("__pycache__", "splits.py"):
            (data / entry.name).symlink_to(entry)
    splits = data / "splits.py"
    splits.write_text((REPO / "protrnn" / "data" / "splits.py").read_text(encoding="utf-8"), encoding="utf-8")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)  # the default config's predict.fasta, relative to the working directory
    shutil.copyfile(REPO / "data" / "example.fasta", work / "data" / "example.fasta")
    results, cache = tmp_path / "results", tmp_path / "cache"
    files = [cache / "wheels" / "cgdms-1.0-py3-none-any.whl",
             cache / "wheels" / "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl",
             cache / "wheels" / "sidechainnet-1.0.1-py2.py3-none-any.whl",
             *(results / "data" / name for name in ("train.npz", "val.npz", "test_heldout.npz", "manifest.tsv",
                                                    "leakage.tsv")),
             *(results / "pretrain" / "data" / name for name in ("train.npz", "val.npz", "records.tsv", "leakage.tsv",
                                                                  "manifest.json"))]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    targets = [str(results / "data" / "manifest.tsv"), str(results / "pretrain" / "data" / "manifest.json")]
    config = write_config(tmp_path, test_sets={"ts50": {"path": str(tmp_path / "missing.json.gz"), "optional": True}})

    def run(*flags: str) -> str:
        result = snakemake(*flags, *targets, "--configfile", str(config), "--cores", "1", directory=work,
                           snakefile=checkout / "Snakefile")
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
        return result.stdout + result.stderr

    run("--touch", "--forceall")  # record both jobs' params as if they had run
    assert job_blocks(run("-n")) == []
    text = splits.read_text(encoding="utf-8")
    assert text.count('LEAKAGE_RULE = ("') == 1
    splits.write_text(text.replace('LEAKAGE_RULE = ("', 'LEAKAGE_RULE = ("a later rule; ', 1), encoding="utf-8")
    plan = run("-n")
    assert sorted(block.split(":", 1)[0].split()[-1] for block in job_blocks(plan)) == ["prepare", "pretrain_prepare"]
    # the constant is read without importing the package: an annotated one too; one that is no literal fails naming it
    text = splits.read_text(encoding="utf-8")
    splits.write_text(text.replace('LEAKAGE_RULE = ("', 'LEAKAGE_RULE: str = ("', 1), encoding="utf-8")
    assert sorted(block.split(":", 1)[0].split()[-1] for block in job_blocks(run("-n"))) == ["prepare",
                                                                                          "pretrain_prepare"]
    splits.write_text(text.replace('LEAKAGE_RULE = ("', 'LEAKAGE_RULE = str(1) + ("', 1), encoding="utf-8")
    failed = snakemake("-n", *targets, "--configfile", str(config), directory=work, snakefile=checkout / "Snakefile")
    assert failed.returncode != 0
    printed = failed.stdout + failed.stderr
    assert f"{splits.resolve()}:" in printed and "LEAKAGE_RULE must be a literal" in printed, printed[-2000:]


def test_a_setting_reruns_only_the_jobs_whose_command_uses_it(tmp_path: Path) -> None:
    """Rules record only the config keys their command reads as params (the `params` rerun trigger): evaluate.baselines
    reruns the baselines' evaluation but not each model's, train.max_epochs does not retrain a step-bounded run; the
    keys the commands do read still rerun them. The rules had recorded the whole train and evaluate sections."""
    missing_test_set = {"ts50": {"path": str(tmp_path / "missing.json.gz"), "optional": True}}
    results, cache = tmp_path / "results", tmp_path / "cache"
    model, evaluation = results / "models" / "lstm" / "seed0", results / "evaluation"
    files = [cache / "wheels" / "cgdms-1.0-py3-none-any.whl",
             cache / "wheels" / "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl",
             *(results / "data" / name for name in ("train.npz", "val.npz", "test_heldout.npz", "manifest.tsv",
                                                    "leakage.tsv")),
             model / "model.json", model / "model.safetensors",
             *(evaluation / run / name for run in ("lstm/seed0", "baselines")
               for name in ("summary.json", "per_protein.csv"))]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    targets = [str(evaluation / "lstm" / "seed0" / "summary.json"), str(evaluation / "baselines" / "summary.json")]
    base = {"test_sets": missing_test_set, "train.max_steps": 700, "train.max_epochs": 100,
            "evaluate.baselines": ["random", "separation"], "evaluate.bootstrap": 1000}
    work = tmp_path / "work"  # its own working directory, as in the test above
    work.mkdir()
    (work / "data").mkdir()  # the default config's predict.fasta, relative to the working directory
    shutil.copyfile(REPO / "data" / "example.fasta", work / "data" / "example.fasta")
    # record every job's params as if it had run (no command runs under --touch)
    recorded = snakemake("--touch", "--forceall", *targets, "--configfile", str(write_config(tmp_path, **base)),
                         "--cores", "1", directory=work)
    assert recorded.returncode == 0, recorded.stderr[-3000:]

    def planned(**changes: object) -> set[str]:
        config = write_config(tmp_path, **{**base, **changes})
        result = snakemake("-n", *targets, "--configfile", str(config), "--cores", "2", directory=work)
        assert result.returncode == 0, result.stderr + result.stdout
        return {block.split(":", 1)[0].split()[-1] for block in job_blocks(result.stdout + result.stderr)}

    assert planned() == set()
    assert planned(**{"evaluate.baselines": ["random"]}) == {"evaluate_baselines"}
    assert planned(**{"train.max_epochs": 7}) == set()  # lstm trains for train.max_steps
    assert planned(**{"evaluate.bootstrap": 50}) == {"evaluate_model", "evaluate_baselines"}
    assert planned(**{"train.accelerator": "cpu"}) == {"train", "evaluate_model"}
    assert planned(**{"train.max_steps": 800}) == {"train", "evaluate_model"}


def test_pretraining_identity_defaults_to_the_contact_datas(tmp_path: Path) -> None:
    config = write_config(tmp_path, **{"prepare.identity": 0.25})
    result = snakemake("-n", "-p", "pretrain", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "--identity 0.25 " in shell_line(result.stdout + result.stderr, "-m protrnn pretrain prepare")


def test_an_interrupted_pretraining_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    checkpoints = tmp_path / "results" / "pretrain" / "encoder" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    result = snakemake("-n", "-p", "pretrain", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    fit = shell_line(result.stdout + result.stderr, "-m protrnn pretrain fit")
    # resumed only if the checkpoint's run had this job's settings and data (protrnn.training.cli.LAST_IF_SAME)
    assert "--ckpt_path last-if-same" in fit and f"--trainer.default_root_dir {checkpoints.parent}" in fit


def test_pretrain_stage_is_reused_once_its_outputs_exist(tmp_path: Path) -> None:
    """Cached: with the wheel, the labels and the export in place, `snakemake pretrain` has nothing to do and a
    pretrained model's training does not pretrain again."""
    config = write_config(tmp_path)
    results, cache = tmp_path / "results", tmp_path / "cache"
    files = [cache / "wheels" / "sidechainnet-1.0.1-py2.py3-none-any.whl",
             *(results / "pretrain" / "data" / name for name in ("train.npz", "val.npz", "records.tsv", "leakage.tsv",
                                                                  "manifest.json")),
             results / "pretrain" / "encoder" / "encoder.json", results / "pretrain" / "encoder" / "encoder.safetensors"]
    for path in files:  # written in pipeline order, so every output is newer than its inputs
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    result = snakemake("-n", "pretrain", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout
    target = str(results / "models" / "lstm_pretrained" / "seed0" / "model.json")
    result = snakemake("-n", target, "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = {block.split(":", 1)[0].split()[-1] for block in job_blocks(result.stdout + result.stderr)}
    assert "train" in jobs and not jobs & set(PRETRAIN_RULES)


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"pretrain.max_chains": 0}, "max_chains", ["minimum"]),
    ({"pretrain.max_time": "3 minutes"}, "max_time", []),
    ({"pretrain.subsets": ["everything"]}, "subsets", []),
    ({"pretrain.threads": "two"}, "threads", []),
    ({"pretrain.unknown_key": 1}, "unknown_key", []),
    ({"models.lstm.pretrained": "yes"}, "pretrained", []),
    ({"models.lstm.freeze_steps": -1}, "freeze_steps", []),
])
def test_pretrain_keys_are_validated_by_the_schema(tmp_path: Path, changes: dict, key: str, words: list) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **changes)))
    assert result.returncode != 0
    text = result.stderr + result.stdout
    assert key in text and all(word in text for word in words), text[-2000:]


def test_pretrained_model_needs_the_pretraining_stage(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"pretrain.enabled": False})))
    assert result.returncode != 0
    text = result.stderr + result.stdout
    assert "models.lstm_pretrained.pretrained" in text and "pretrain.enabled" in text


def test_freeze_steps_without_pretrained_is_a_config_error(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"models.lstm.freeze_steps": 10})))
    assert result.returncode != 0 and "models.lstm.freeze_steps" in result.stderr + result.stdout


@pytest.mark.parametrize(("model", "pretrain_set", "ok", "named"), [
    ({"config": "lstm", "pretrained": True, "set": {"model.model.hidden_size": 128}}, {}, False, ["hidden_size"]),
    ({"config": "gru", "pretrained": True}, {}, False, ["cell"]),
    ({"config": "tiny", "pretrained": True}, {}, False, ["embed_dim", "hidden_size", "num_layers"]),
    ({"config": "lstm", "pretrained": True, "set": {"model.model.hidden_size": 128}},
     {"model.model.hidden_size": 128}, True, []),
    ({"config": "gru", "pretrained": True}, {"model.model.cell": "gru"}, True, []),
    # head, dropout, inits and the gradient horizon need not match
    ({"config": "lstm", "pretrained": True, "set": {"model.model.gradient_horizon": 16, "model.model.dropout": 0.3,
                                                    "model.model.head": "resnet2d"}}, {}, True, []),
    ({"config": "longrange", "pretrained": True, "set": {"model.model.pair_dim": 32}}, {}, True, []),
    # an abbreviated key is the setting the command takes it for (`model.model.hidden` is hidden_size)
    ({"config": "lstm", "pretrained": True, "set": {"model.model.hidden": 128}}, {}, False, ["hidden_size"]),
    ({"config": "lstm", "pretrained": True, "set": {"model.model.hidden": 128}},
     {"model.model.hidden_s": 128}, True, []),
])
def test_encoder_sizes_must_match_the_pretraining_config(tmp_path: Path, model: dict, pretrain_set: dict, ok: bool,
                                                         named: list) -> None:
    config = write_config(tmp_path, models={"lstm": {"config": "lstm"}, "probe": model},
                          **{"pretrain.set": pretrain_set})
    result = snakemake("-n", "--configfile", str(config))
    text = result.stderr + result.stdout
    if ok:
        assert result.returncode == 0, text[-3000:]
        return
    assert result.returncode != 0
    message = next(line for line in text.splitlines() if "models.probe.pretrained" in line)
    assert "encoders differ" in message
    for key in named:
        assert f"{key} is " in message, (key, message)


def test_encoder_keys_agree_with_the_library() -> None:
    from protrnn.model.pretrain_heads import ENCODER_KEYS

    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    match = re.search(r"^ENCODER_KEYS = (\(.*?\))$", common, flags=re.M)
    assert match is not None
    assert tuple(eval(match.group(1))) == tuple(ENCODER_KEYS)  # a literal tuple of strings


def test_base_configs_agree_with_the_library() -> None:
    """The files rules declare as read before --config are the fit commands' default config files."""
    from protrnn.training.cli import PRETRAIN, TRAIN

    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    for name, spec in (("TRAIN_BASE_CONFIG", TRAIN), ("PRETRAIN_BASE_CONFIG", PRETRAIN)):
        match = re.search(rf'^{name} = (BUNDLED_CONFIGS|PRETRAIN_CONFIGS) / "(.*?)"$', common, flags=re.M)
        assert match is not None, name
        folder = REPO / "protrnn" / "configs" / ("pretrain" if match[1] == "PRETRAIN_CONFIGS" else "")
        assert (folder / match[2]).resolve() == spec.configs.path(spec.default_config).resolve(), name


def test_split_prefix_agrees_with_the_library() -> None:
    from protrnn.conventions import TEST_SPLIT_PREFIX, named_test_set

    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    match = re.search(r'^TEST_SPLIT_PREFIX = "(.*?)"$', common, flags=re.M)
    assert match is not None and match.group(1) == TEST_SPLIT_PREFIX
    assert named_test_set(f"{match.group(1)}heldout") == "heldout"
    for rules in ("data.smk", "evaluate.smk"):  # the rules name test files through prepared_test_file only
        assert "test_{" not in (REPO / "workflows" / "rules" / rules).read_text(), rules


def test_seed_tag_agrees_with_the_library() -> None:
    from protrnn.diagnostics.results import SEED_TAG, split_seed

    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    match = re.search(r'^SEED_TAG = "(.*?)"$', common, flags=re.M)
    assert match is not None and match.group(1) == SEED_TAG
    assert split_seed(f"lstm_pretrained{match.group(1)}12") == ("lstm_pretrained", 12)


def test_ddp_with_a_frozen_pretrained_encoder_is_refused(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"train.devices": 2})))
    assert result.returncode != 0
    assert "models.lstm_pretrained.freeze_steps" in result.stderr + result.stdout


def _bundle_dry_run(tmp_path: Path, bundle_config: dict) -> tuple[str, Path]:
    """`snakemake bundle -n -p` of a bundle configuration with results and cache under tmp_path: (plan, results)."""
    config = dict(bundle_config, results=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("bundle", "-n", "-p", "--configfile", str(tmp_path / "bundle.yaml"), "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout + result.stderr, tmp_path / "results"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_bundle_config_reproduces_the_hand_run(tmp_path: Path) -> None:
    """workflows/config.bundle.yaml: `snakemake bundle` pretrains two encoders at the full setting (seeds 0 and 1)
    and trains the long-range recipe at seeds 0 and 1, member S from encoder S, with the flags of the runs that made
    the shipped ensemble (docs/pipeline.md), on the full configuration's structure sources with 12 % of the clusters
    held out for validation."""
    bundle_config = yaml.safe_load((REPO / "workflows" / "config.bundle.yaml").read_text())
    full = yaml.safe_load((REPO / "workflows" / "config.full.yaml").read_text())
    assert bundle_config["sources"]["default"] is True
    assert bundle_config["sources"]["paths"] == full["sources"]["paths"] and len(full["sources"]["paths"]) == 3
    assert bundle_config["prepare"]["identity"] == 0.3 and bundle_config["prepare"]["split"] == {"train": 0.88,
                                                                                                 "val": 0.12}
    assert sorted(bundle_config["test_sets"]) == ["ollikainen40", "psicov150", "ts50"]
    plan, results = _bundle_dry_run(tmp_path, bundle_config)
    jobs = sorted(block.split(":", 1)[0].split()[-1] for block in job_blocks(plan))
    assert jobs == sorted(["fetch_default_sources", "fetch_pretrain_source", "prepare", "pretrain_prepare",
                           "pretrain_fit", "pretrain_fit", "train", "train", "bundle_ensemble", "evaluate_model",
                           "evaluate_baselines", "bundle"])
    prepare = shell_line(plan, "-m protrnn prepare")
    assert prepare.index("db55_dips_equidock") < prepare.index("abag_docking") < prepare.index("rosetta_demos") \
        < prepare.index("cgdms-1.0") < prepare.index("bioemu_benchmarks")  # the hand run's input order
    assert "--split train=0.88,val=0.12 --identity 0.3" in prepare
    pretrain_prepare = shell_line(plan, "-m protrnn pretrain prepare")
    assert "--max-chains" not in pretrain_prepare and "--val-fraction 0.02" in pretrain_prepare
    assert "--identity 0.3" in pretrain_prepare  # prepare.identity: the contact data's leakage threshold
    assert "--test-set ts50=" in pretrain_prepare and "--test-set ollikainen40=" in pretrain_prepare
    encoders = {0: f"{results}/pretrain/encoder", 1: f"{results}/pretrain/encoder_seed1"}
    fits = [line for line in plan.splitlines() if "-m protrnn pretrain fit" in line]
    for seed, folder in encoders.items():
        (pretrain_fit,) = [line for line in fits if f"--export_dir {folder} " in line]
        for flag in ("--model.model.hidden_size=128", "--model.schedule_steps=4800", "--trainer.max_time 00:02:00:00",
                     "--trainer.max_steps 7500", "--num_threads 1", f"--seed_everything {seed} --data.seed {seed}"):
            assert flag in pretrain_fit, (seed, flag)
    trains = [line for line in plan.splitlines() if "-m protrnn train" in line]
    assert len(trains) == 2
    for seed in (0, 1):
        (train,) = [line for line in trains if f"--seed_everything {seed} " in line]
        hand_run = ["--config protrnn/configs/longrange.yaml", "--model.model.hidden_size=128",
                    "--model.model.pair_dim=32", "--model.model.head_blocks=6", "--model.encoder_lr_scale=0.1",
                    "--trainer.max_steps 4500", "--trainer.max_time 00:02:00:00",
                    "--trainer.enable_progress_bar false", CALLBACK,
                    f"--trainer.callbacks.path {encoders[seed]} ", "--trainer.callbacks.freeze_steps 300",
                    "--num_threads 1", f"--data.seed {seed}",
                    f"--trainer.default_root_dir {results}/models/bundle/seed{seed}"]
        for flag in hand_run:
            assert flag in train, (seed, flag)
        # the bundle keeps the config's early stopping, best-checkpoint export and max_epochs (as the hand run did)
        for grid_flag in ("--early_stopping.patience", "--checkpoint.monitor", "--trainer.max_epochs"):
            assert grid_flag not in train
    ensemble = shell_line(plan, "-m protrnn ensemble")
    assert f"{results}/models/bundle/seed0 {results}/models/bundle/seed1 -o {results}/ensembles/bundle" in ensemble
    install = shell_line(plan, '"$PROTRNN_SCRIPTS/bundle_model.py"')
    assert f'"$PROTRNN_SCRIPTS/bundle_model.py" {results}/ensembles/bundle ' in install
    assert (f"--data {results}/data --pretrain-data {results}/pretrain/data --encoder {results}/pretrain/encoder"
            " --notes workflows/bundle_notes.md" in install)
    bundle = job_block(plan, "bundle", f"{results}/bundle/installed.json")
    for path in (f"{results}/data/manifest.tsv", f"{results}/data/leakage.tsv",
                 f"{results}/pretrain/data/manifest.json", f"{results}/pretrain/encoder/encoder.json",
                 "workflows/bundle_notes.md"):  # the card's notes are an input: editing them reinstalls the record
        assert path in bundle
    # the installed card carries the notes file's text, so a rerun of the rule reproduces it
    card = (REPO / "protrnn" / "pretrained" / "README.md").read_text(encoding="utf-8")
    assert (REPO / "workflows" / "bundle_notes.md").read_text(encoding="utf-8").strip() in card


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_bundle_with_seeds_trains_each_member_and_ships_their_ensemble(tmp_path: Path) -> None:
    """`bundle.seeds`: one training run per seed under models/bundle/seed<S> (seed_everything and data seed S), one
    `protrnn ensemble` of their exports outside that folder, evaluated as the model `bundle` and installed as
    protrnn/pretrained/ensemble.json."""
    bundle_config = yaml.safe_load((REPO / "workflows" / "config.bundle.yaml").read_text())
    bundle_config["bundle"] = {**bundle_config["bundle"], "seeds": [4, 7], "encoder_per_seed": False}  # one encoder
    plan, results = _bundle_dry_run(tmp_path, bundle_config)
    jobs = sorted(block.split(":", 1)[0].split()[-1] for block in job_blocks(plan))
    assert jobs == sorted(["fetch_default_sources", "fetch_pretrain_source", "prepare", "pretrain_prepare",
                           "pretrain_fit", "train", "train", "bundle_ensemble", "evaluate_model",
                           "evaluate_baselines", "bundle"])
    trains = [line for line in plan.splitlines() if "-m protrnn train" in line]
    for seed in (4, 7):
        (line,) = [t for t in trains if f"--seed_everything {seed} " in t]
        assert f"--data.seed {seed}" in line and f"--trainer.default_root_dir {results}/models/bundle/seed{seed}" in line
        assert "--trainer.max_steps 4500" in line and CALLBACK in line  # the bundle's own recipe, per member
    ensemble = shell_line(plan, "-m protrnn ensemble")
    assert (f"{results}/models/bundle/seed4 {results}/models/bundle/seed7 -o {results}/ensembles/bundle"
            in ensemble)
    assert f"--model bundle={results}/ensembles/bundle " in shell_line(plan, "--model bundle=")
    assert f'"$PROTRNN_SCRIPTS/bundle_model.py" {results}/ensembles/bundle ' in shell_line(plan, "bundle_model.py")
    job_block(plan, "bundle", f"{results}/bundle/installed.json")
    for seeds in ([1, 1], [3]):  # repeated seeds, or one model (not an ensemble): refused by the schema
        bad = dict(bundle_config, results=str(results), bundle={**bundle_config["bundle"], "seeds": seeds})
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
        result = snakemake("bundle", "-n", "--configfile", str(tmp_path / "bad.yaml"), "--cores", "2")
        assert result.returncode != 0 and "seeds" in result.stderr + result.stdout, seeds


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not available")
def test_bundle_encoder_per_seed_pretrains_one_encoder_per_member(tmp_path: Path) -> None:
    """`bundle.encoder_per_seed`: member S starts from an encoder pretrained at seed S on the same labels; the member
    at pretrain.seed uses pretrain/encoder, the others pretrain/encoder_seed<S>; the target `pretrain` builds all."""
    bundle_config = yaml.safe_load((REPO / "workflows" / "config.bundle.yaml").read_text())
    bundle_config["bundle"] = {**bundle_config["bundle"], "seeds": [0, 1, 2], "encoder_per_seed": True}
    plan, results = _bundle_dry_run(tmp_path, bundle_config)
    jobs = [block.split(":", 1)[0].split()[-1] for block in job_blocks(plan)]
    assert jobs.count("pretrain_fit") == 3 and jobs.count("train") == 3 and jobs.count("pretrain_prepare") == 1
    encoders = {0: f"{results}/pretrain/encoder", 1: f"{results}/pretrain/encoder_seed1",
                2: f"{results}/pretrain/encoder_seed2"}
    fits = [line for line in plan.splitlines() if "-m protrnn pretrain fit" in line]
    for seed, folder in encoders.items():
        (fit,) = [line for line in fits if f"--export_dir {folder} " in line]
        assert f"--seed_everything {seed} --data.seed {seed}" in fit  # its own initialisation and batch order
        assert f"--data.train_path {results}/pretrain/data/train.npz" in fit  # ... on the one set of labels
        assert f"> {results}/logs/pretrain_fit/{Path(folder).name}.log" in fit
        member = job_block(plan, "train", f"models/bundle/seed{seed}/model.json")
        inputs = next(line for line in member.splitlines() if line.strip().startswith("input:"))
        assert f"{folder}/encoder.json" in inputs and f"{folder}/encoder.safetensors" in inputs
        (train,) = [line for line in plan.splitlines() if f"--export_dir {results}/models/bundle/seed{seed} " in line]
        assert f"--trainer.callbacks.path {folder} --trainer.callbacks.freeze_steps 300" in train
        assert f"--seed_everything {seed} " in train
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump(dict(bundle_config, results=str(results))))
    target = snakemake("pretrain", "-n", "--configfile", str(tmp_path / "bundle.yaml"), "--cores", "2")
    assert target.returncode == 0, target.stderr + target.stdout
    assert (target.stdout + target.stderr).count("rule pretrain_fit:") == 3
    # without pretrained encoders, or without an ensemble, the key means nothing: refused with its name
    for bad_bundle in ({"pretrained": False}, {"seeds": None}):
        bundle = {k: v for k, v in {**bundle_config["bundle"], **bad_bundle}.items() if v is not None}
        if "pretrained" in bad_bundle:  # the keys that need a pretrained bundle would be refused first
            bundle.pop("freeze_steps")
            bundle.pop("aux_ss_weight", None)
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(dict(bundle_config, results=str(results), bundle=bundle)))
        result = snakemake("bundle", "-n", "--configfile", str(tmp_path / "bad.yaml"), "--cores", "2")
        assert result.returncode != 0 and "bundle.encoder_per_seed" in result.stderr + result.stdout, bad_bundle


def test_aux_ss_weight_adds_the_auxiliary_ss_loss_from_each_members_own_encoder(tmp_path: Path) -> None:
    """`aux_ss_weight`: each member's command appends AuxiliarySecondaryStructure after PretrainedEncoder, reading the
    pipeline's pretraining labels and the SS read-out of the member's own encoder; the labels are an input of the job;
    the command parses into exactly those two callbacks; the key is refused without `pretrained: true`."""
    bundle_config = yaml.safe_load((REPO / "workflows" / "config.bundle.yaml").read_text())
    bundle_config["bundle"] = {**bundle_config["bundle"], "seeds": [0, 1], "encoder_per_seed": True,
                               "aux_ss_weight": 0.25}
    plan, results = _bundle_dry_run(tmp_path, bundle_config)
    labels = f"{results}/pretrain/data/train.npz"
    for seed, folder in {0: f"{results}/pretrain/encoder", 1: f"{results}/pretrain/encoder_seed1"}.items():
        member = job_block(plan, "train", f"models/bundle/seed{seed}/model.json")
        inputs = next(line for line in member.splitlines() if line.strip().startswith("input:"))
        assert labels in inputs.split(": ", 1)[1].split(", ")
        (train,) = [line for line in plan.splitlines() if f"--export_dir {results}/models/bundle/seed{seed} " in line]
        expected = (f"--trainer.callbacks.path {folder} --trainer.callbacks.freeze_steps 300"
                    " --trainer.callbacks+=protrnn.training.finetune.AuxiliarySecondaryStructure"
                    f" --trainer.callbacks.labels {labels} --trainer.callbacks.encoder {folder}"
                    " --trainer.callbacks.weight 0.25 ")
        assert expected in train
    # the flags as the training CLI reads them: the second callback gets its own arguments, the first keeps its own
    args = train.split("-m protrnn train ", 1)[1].split(" > ", 1)[0].split()
    printed = subprocess.run([sys.executable, "-m", "protrnn", "train", *args, "--print_config"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    callbacks = yaml.safe_load(printed.stdout)["trainer"]["callbacks"]
    assert [c["class_path"].rsplit(".", 1)[1] for c in callbacks] == ["PretrainedEncoder",
                                                                       "AuxiliarySecondaryStructure"]
    assert callbacks[0]["init_args"] == {"path": f"{results}/pretrain/encoder_seed1", "freeze_steps": 300}
    assert {k: callbacks[1]["init_args"][k] for k in ("labels", "encoder", "weight")} == {
        "labels": labels, "encoder": f"{results}/pretrain/encoder_seed1", "weight": 0.25}
    # a model that does not start from the pretrained encoder has no SS read-out to keep: refused with the key
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"models.lstm.aux_ss_weight": 0.1})))
    assert result.returncode != 0 and "models.lstm.aux_ss_weight" in result.stderr + result.stdout
    result = snakemake("-n", "--configfile", str(write_config(tmp_path, **{"models.lstm_pretrained.aux_ss_weight": 0})))
    assert result.returncode != 0 and "aux_ss_weight" in result.stderr + result.stdout


def _bundle_results(tmp_path: Path, name: str, step: int) -> Path:
    """A configuration whose results folder (tmp_path/NAME/results) holds every input of rule bundle, in miniature and
    written in pipeline order (so nothing before rule bundle has to run): the default wheels, the prepared data with
    its records, a tiny export recorded as selected at `step` and its and the baselines' evaluation summaries."""
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model

    folder = tmp_path / name
    folder.mkdir()
    config = write_config(folder, models={"lstm": {"config": "lstm"}},
                          **{"pretrain.enabled": False, "predict.fasta": []})
    results, cache = folder / "results", folder / "cache"
    for wheel in ("cgdms-1.0-py3-none-any.whl", "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl"):
        (cache / "wheels").mkdir(parents=True, exist_ok=True)
        (cache / "wheels" / wheel).write_bytes(b"")
    _prepared_data(results / "data")
    for data in ("train.npz", "val.npz", "test_heldout.npz"):
        (results / "data" / data).write_bytes(b"")
    save_model(ContactModel(ModelConfig(hidden_size=8, embed_dim=8, num_layers=1, head="pairwise")),
               results / "models" / "bundle", extra={"selected": "best", "global_step": step})
    metric = {"mean": 0.2, "low": 0.1, "high": 0.3}
    for run, method in (("bundle", "bundle"), ("baselines", "random")):
        (results / "evaluation" / run).mkdir(parents=True)
        (results / "evaluation" / run / "summary.json").write_text(json.dumps({
            "format": "protrnn-evaluation", "format_version": 1, "command": f"protrnn evaluate {run}",
            "results": {method: {"heldout": {"n_proteins": 5, "metrics": {"long/P@L/5": metric}}}}}))
        (results / "evaluation" / run / "per_protein.csv").write_text("")
    return config


def scratch_checkout(root: Path) -> Path:
    """ROOT/checkout: a checkout whose protrnn/pretrained is its own and empty, the rest this one's (the Snakefile
    copied, workflows/ and every other entry of protrnn/ linked). `snakemake bundle` installs into the checkout's
    protrnn/pretrained, so a test that installs runs this one's Snakefile and never touches the shipped model."""
    checkout = root / "checkout"
    (checkout / "protrnn" / "pretrained").mkdir(parents=True)
    shutil.copyfile(REPO / "Snakefile", checkout / "Snakefile")
    (checkout / "workflows").symlink_to(REPO / "workflows")
    for entry in (REPO / "protrnn").iterdir():
        if entry.name not in ("pretrained", "__pycache__"):
            (checkout / "protrnn" / entry.name).symlink_to(entry)
    return checkout


def test_bundle_installs_again_once_another_results_folder_replaced_the_installed_model(tmp_path: Path) -> None:
    """`snakemake bundle` with results A, then B, then A again installs A's model the third time: A's record of its
    own install had kept the job up to date while B's model was installed. A fourth run has nothing to do, nor has one
    after the installed record got a new modification time with the same content (a fresh checkout). The pipeline runs
    a scratch checkout's Snakefile in another working directory (`--directory`): it installs into that checkout's
    protrnn/pretrained (the package its jobs import), not into the working directory, and never into this checkout."""
    checkout_model = REPO / "protrnn" / "pretrained"
    shipped = {path: path.read_bytes() for path in checkout_model.rglob("*") if path.is_file()}
    checkout = scratch_checkout(tmp_path)
    installed = checkout / "protrnn" / "pretrained"
    (installed / "evaluation.json").write_text('{"model": "installed before"}\n')
    work = tmp_path / "work"
    work.mkdir()
    configs = {name: _bundle_results(tmp_path, name, step) for name, step in (("A", 10), ("B", 20))}

    def bundle(name: str, *flags: str) -> str:
        result = snakemake("bundle", "--cores", "1", "--configfile", str(configs[name]), *flags,
                           directory=work, snakefile=checkout / "Snakefile")
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
        return result.stdout + result.stderr

    for name in ("A", "B", "A"):
        plan = bundle(name, "-n")
        assert [block.split(":", 1)[0] for block in job_blocks(plan)] == ["rule bundle"], plan[-3000:]
        bundle(name)
        results = tmp_path / name / "results"
        assert ((installed / "model.safetensors").read_bytes()
                == (results / "models" / "bundle" / "model.safetensors").read_bytes()), name
        assert (installed / "evaluation.json").read_bytes() == (results / "bundle" / "installed.json").read_bytes()
    assert "Nothing to be done" in bundle("A", "-n")
    later = time.time() + 60
    os.utime(installed / "evaluation.json", (later, later))
    assert "Nothing to be done" in bundle("A", "-n")
    assert not (work / "protrnn").exists()
    assert {path: path.read_bytes() for path in checkout_model.rglob("*") if path.is_file()} == shipped


# ------------------------------------------------------------------ bundle_model.py: the record of the training data
def _bundle_script():
    spec = importlib.util.spec_from_file_location("bundle_model", REPO / "workflows" / "scripts" / "bundle_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _prepared_data(folder: Path) -> None:
    """A `protrnn prepare` output in miniature: two training sources (one an archive), one test set."""
    folder.mkdir(parents=True)
    header = ["source", "id", "length", "n_observed", "status", "reason", "split", "cluster"]
    wheel = "/somewhere/cache/wheels/cgdms-1.0-py3-none-any.whl"
    rows = [[f"{wheel}#cgdms/a.txt", "A", 50, 50, "kept", "", "train", "A"],
            [f"{wheel}#cgdms/b.txt", "B", 50, 50, "kept", "", "train", "A"],
            [f"{wheel}#cgdms/c.txt", "C", 50, 50, "kept", "", "val", "C"],
            [f"{wheel}#cgdms/d.txt", "D", 50, 50, "removed", "1.000 identity to ts50:x", "", ""],
            ["extra/chains.jsonl.gz", "E", 90, 90, "kept", "", "train", "E"],
            ["extra/chains.jsonl.gz", "F", 900, 900, "skipped", "length N > --max-length N", "", ""],
            ["extra/chains.jsonl.gz", "G", 80, 80, "removed", "0.400 identity to ts50:y", "", ""],
            ["extra/chains.jsonl.gz", "H", 80, 80, "removed", "0.500 identity to other:z", "", ""],
            ["tests/ts50.json.gz", "x", 70, 70, "kept", "", "test_ts50", ""],
            ["tests/ts50.json.gz", "y", 60, 60, "kept", "", "test_ts50", ""],
            ["tests/other.tar.gz", "z", 60, 60, "kept", "", "test_other", ""]]
    _write_tsv(folder / "manifest.tsv", header, rows)
    _write_tsv(folder / "leakage.tsv", ["chain_id", "source", "test_set", "test_id", "identity"],
               [["D", f"{wheel}#cgdms/d.txt", "ts50", "x", "1.000"], ["G", "extra/chains.jsonl.gz", "ts50", "y", "0.4"],
                ["H", "extra/chains.jsonl.gz", "other", "z", "0.5"]])


def test_bundle_record_lists_sources_and_leakage(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _prepared_data(tmp_path / "data")
    record = _bundle_script().data_record(tmp_path / "data")
    assert record["sources"] == [
        {"source": "cgdms-1.0-py3-none-any.whl", "train": 2, "val": 1, "removed_for_leakage": 1, "skipped": 0},
        {"source": "extra/chains.jsonl.gz", "train": 1, "val": 0, "removed_for_leakage": 2, "skipped": 1}]
    assert record["chains"] == {"train": 3, "val": 1}
    assert record["test_sets"] == {"ts50": {"source": "tests/ts50.json.gz", "chains": 2},
                                   "other": {"source": "tests/other.tar.gz", "chains": 1}}
    assert record["leakage"] == {"removed": 3, "per_test_set": {"ts50": 2, "other": 1}}


def test_bundle_install_records_the_data_and_encoder_the_model_was_trained_with(tmp_path: Path, monkeypatch) -> None:
    """Without options, bundle_model.py finds the prepared data and the pretrained encoder through the paths the
    model's training config recorded, and the labels through the encoder's."""
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model

    monkeypatch.chdir(tmp_path)
    _prepared_data(tmp_path / "data")
    (tmp_path / "data" / "prepare.json").write_text(json.dumps({  # protrnn prepare's summary, its parameters
        "format": "protrnn-prepare", "info": {"identity": 0.3, "coverage": 0.5, "leakage_coverage_of": "either chain",
                                              "leakage_rule": "the contact data's rule", "homology_method": "mmseqs2"}}))
    labels = tmp_path / "pretrain" / "data"
    labels.mkdir(parents=True)
    counts = {"records_read": 1000, "duplicates_collapsed": 400, "distinct_sequences": 600, "candidates": 580,
              "removed_for_leakage": 30, "removed_per_test_set": {"ts50": 10, "other": 20}, "clusters": 200,
              "chains_used": 550, "residues_used": 123456}
    (labels / "manifest.json").write_text(json.dumps({  # the record protrnn pretrain prepare writes
        "format": "protrnn-structure-label-manifest",
        "info": {"source": "/cache/wheels/sidechainnet-1.0.1-py2.py3-none-any.whl", "subsets": ["full"],
                 "max_chains": None, "identity": 0.3, "coverage": 0.5, "coverage_of": "either chain",
                 "leakage_rule": "the labels' rule"},
        "counts": counts, "splits": {"train": {"chains": 540, "clusters": 195, "residues": 120000},
                                     "val": {"chains": 10, "clusters": 5, "residues": 3456}}}))
    encoder = tmp_path / "pretrain" / "encoder"
    encoder.mkdir(parents=True)
    (encoder / "encoder.json").write_text(json.dumps({  # the description protrnn pretrain fit writes
        "format": "protrnn-pretrained-encoder", "format_version": 1,
        "config": ModelConfig(hidden_size=8, embed_dim=8, num_layers=1).to_dict(), "alphabet": {},
        "global_step": 2851, "epoch": 1, "selected": "best", "monitor": "val/loss",
        "objectives": {"ss_weight": 1.0, "mask_weight": 1.0},
        "val_metrics": {"val/Q8": 0.59789, "val/Q3": 0.70974, "val/mask_acc": 0.21558},
        "throughput": {"residues_seen": 22993952, "residues_per_s": 27877.0},
        "training_config": {"trainer": {"max_time": "00:00:15:00"},
                            "data": {"train_path": "pretrain/data/train.npz"}}}))
    model_dir = tmp_path / "models" / "bundle"
    callback = {"class_path": "protrnn.training.finetune.PretrainedEncoder",
                "init_args": {"path": "pretrain/encoder", "freeze_steps": 300}}
    save_model(ContactModel(ModelConfig(hidden_size=8, embed_dim=8, num_layers=1, head="pairwise")), model_dir,
               extra={"selected": "best", "monitor": "val/P@L5_medium_long", "epoch": 3, "global_step": 4000,
                      "val_metrics": {"val/loss": 0.25},
                      "training_config": {"trainer": {"max_epochs": 30, "max_time": "00:01:28:00", "max_steps": 8000,
                                                      "callbacks": [callback]},
                                          "data": {"train_path": "data/train.npz"}}})
    summary = {"format": "protrnn-evaluation", "format_version": 1, "command": "protrnn evaluate",
               "results": {"bundle": {"ts50": {"n_proteins": 2, "metrics": {
                   "long/P@L/5": {"mean": 0.2, "low": 0.1, "high": 0.3}}}}}}
    for name in ("bundle", "baselines"):
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "summary.json").write_text(json.dumps(summary))
    outdir = tmp_path / "installed"
    assert _bundle_script().main([str(model_dir), str(tmp_path / "eval" / "bundle"),
                                  str(tmp_path / "eval" / "baselines"), str(outdir)]) == 0
    record = json.loads((outdir / "evaluation.json").read_text())
    assert record["training_data"]["chains"] == {"train": 3, "val": 1}
    assert record["training_data"]["leakage"]["per_test_set"] == {"ts50": 2, "other": 1}
    # the rule each side's test relatives were removed under, as their prepare step recorded it
    assert record["training_data"]["leakage"]["leakage_rule"] == "the contact data's rule"
    assert record["pretraining"]["data"]["leakage_rule"] == "the labels' rule"
    pretraining = record["pretraining"]
    assert pretraining["freeze_steps"] == 300 and pretraining["encoder"]["global_step"] == 2851
    assert pretraining["encoder"]["val_metrics"] == {"val/Q8": 0.5979, "val/Q3": 0.7097, "val/mask_acc": 0.2156}
    assert pretraining["data"]["source"] == "sidechainnet-1.0.1-py2.py3-none-any.whl"
    assert pretraining["data"]["counts"] == counts
    card = (outdir / "README.md").read_text()
    assert "## Training data" in card and "| cgdms-1.0-py3-none-any.whl | 2 | 1 | 1 | 0 |" in card
    assert ": 3 (ts50 2, other 1)." in card
    assert "## Pretrained encoder" in card and "Q3 0.710" in card and "first 300 contact-training steps" in card
    assert "30 chains removed" in card and "(ts50 10, other 20)" in card
    assert "max_time 00:01:28:00, max_steps 8000" in card
    # explicit folders win over the recorded ones
    elsewhere = tmp_path / "elsewhere"
    _prepared_data(elsewhere)
    with open(elsewhere / "manifest.tsv", "a", encoding="utf-8") as handle:
        handle.write("extra/chains.jsonl.gz\tI\t90\t90\tkept\t\tval\tI\n")
    assert _bundle_script().main([str(model_dir), str(tmp_path / "eval" / "bundle"),
                                  str(tmp_path / "eval" / "baselines"), str(outdir), "--data", str(elsewhere)]) == 0
    assert json.loads((outdir / "evaluation.json").read_text())["training_data"]["chains"] == {"train": 3, "val": 2}
    assert pretraining["auxiliary_ss_weight"] is None and "secondary-structure loss" not in card
    # a model trained with the auxiliary SS loss says so, with its weight, in the record and the card
    aux = {"class_path": "protrnn.training.finetune.AuxiliarySecondaryStructure",
           "init_args": {"labels": "pretrain/data/train.npz", "encoder": "pretrain/encoder", "weight": 0.25}}
    save_model(ContactModel(ModelConfig(hidden_size=8, embed_dim=8, num_layers=1, head="pairwise")), model_dir,
               extra={"selected": "best", "monitor": "val/P@L5_medium_long", "epoch": 3, "global_step": 4000,
                      "val_metrics": {"val/loss": 0.25},
                      "training_config": {"trainer": {"max_epochs": 30, "max_time": "00:01:28:00", "max_steps": 8000,
                                                      "callbacks": [callback, aux]},
                                          "data": {"train_path": "data/train.npz"}}})
    assert _bundle_script().main([str(model_dir), str(tmp_path / "eval" / "bundle"),
                                  str(tmp_path / "eval" / "baselines"), str(outdir)]) == 0
    assert json.loads((outdir / "evaluation.json").read_text())["pretraining"]["auxiliary_ss_weight"] == 0.25
    assert ("first 300 contact-training steps; then every step added 0.25 x the 8-state secondary-structure loss"
            in (outdir / "README.md").read_text())
    # a callback recorded without its arguments had the callback's documented default weight, 0.1
    bare = {"training_config": {"trainer": {"callbacks": [{"class_path": "AuxiliarySecondaryStructure"}]}}}
    assert _bundle_script().auxiliary_ss_weight(bare) == 0.1


# ------------------------------------------------------------------------------- gather_predictions.py (prediction shards)
def test_baseline_names_agree_with_the_library() -> None:
    from protrnn.evaluation.results import BASELINE_NAMES

    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    match = re.search(r"^BASELINE_NAMES = \((.*?)\)$", common, flags=re.M)
    assert match is not None and tuple(re.findall(r'"([^"]+)"', match.group(1))) == BASELINE_NAMES


def test_gather_restores_order_and_ids_literally(tmp_path: Path, capsys) -> None:
    """Shard summaries keyed by safe names come back in FASTA order with the original IDs, cell by cell as written:
    an ID that starts with a quote character is not parsed as a quoted cell (it swallowed the rest of the table)."""
    spec = importlib.util.spec_from_file_location("gather_predictions",
                                                  REPO / "workflows" / "scripts" / "gather_predictions.py")
    gather = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gather)
    ids = ['"quoted', "plain|x", "third"]
    (tmp_path / "names.tsv").write_text("index\tname\tid\n" + "".join(f"{k}\tn{k}\t{i}\n" for k, i in enumerate(ids)))
    header = "id\tfile\tlength\tstatus\treason\tmean_top_L5_prob\n"
    for shard, members in (("s1", [2, 0]), ("s2", [1])):
        (tmp_path / shard).mkdir()
        (tmp_path / shard / "summary.tsv").write_text(header + "".join(
            f"n{k}\tn{k}\t{10 + k}\tok\t\t0.5{k}\n" for k in members))
        for k in members:
            (tmp_path / shard / f"n{k}.rr").write_text(f"rr {k}\n")
    assert gather.main(["--names", str(tmp_path / "names.tsv"), "--summary", str(tmp_path / "all.tsv"),
                        "--contacts", str(tmp_path / "contacts"), str(tmp_path / "s1"), str(tmp_path / "s2")]) == 0
    lines = (tmp_path / "all.tsv").read_text().splitlines()
    assert lines[0] == "id\tname\tfile\tlength\tstatus\treason\tmean_top_L5_prob"
    assert lines[1:] == [f"{ids[k]}\tn{k}\tn{k}\t{10 + k}\tok\t\t0.5{k}" for k in range(3)]
    assert sorted(p.name for p in (tmp_path / "contacts").iterdir()) == ["n0.rr", "n1.rr", "n2.rr"]
    # an empty shard (fewer records than shards; Snakemake leaves its hidden timestamp in it) adds nothing, and no
    # hidden file is gathered; a lost record is still an error
    (tmp_path / "s3").mkdir()
    for shard in ("s1", "s2", "s3"):
        (tmp_path / shard / ".snakemake_timestamp").touch()
    args = ["--names", str(tmp_path / "names.tsv"), "--summary", str(tmp_path / "all3.tsv"),
            "--contacts", str(tmp_path / "contacts3"), str(tmp_path / "s1"), str(tmp_path / "s2"), str(tmp_path / "s3")]
    assert gather.main(args) == 0
    assert (tmp_path / "all3.tsv").read_text() == (tmp_path / "all.tsv").read_text()
    assert sorted(p.name for p in (tmp_path / "contacts3").iterdir()) == ["n0.rr", "n1.rr", "n2.rr"]
    assert gather.main(args[:-2] + [str(tmp_path / "s3")]) == 2
    assert "2 summary rows for 3 records" in capsys.readouterr().err  # s2 left out
