"""The long-range ablation of issue #11: each arm adds one change to the one before, all at the same step budget.

Arms (model/data overrides on protrnn/configs/default.yaml, cumulative):

1. ``today``: default.yaml (128-residue crops, every pair scored, separation capped at 64, binary head);
2. ``+window_blocks``: 512-residue windows read whole by the encoder, the head trained on 4 sampled 64 x 64 blocks;
3. ``+log_separation``: log-spaced separation bins up to 384;
4. ``+distogram``: distance-class head (4-20 Å, 1 Å bins), contact = mass below 8 Å (= longrange.yaml);
5. ``+pretraining``: the embedding and encoder start from a ``protrnn pretrain`` export (``--pretrained``);
6. ``bundled_recipe``: + the bundled model's larger head (pair_dim 32, 6 blocks).

Every arm trains ``--steps`` optimiser steps per seed on one thread (final weights; validation once at the end), and
is evaluated on the prepared test sets with ``protrnn evaluate`` (the model named after the arm without its leading
``+``, as model names start with a letter or digit). Completed runs are kept (``OUT/ARM/seedS``, under the arm's
own name): rerunning resumes where it stopped. The table gives, per arm and test set, top-L/5 precision by range and in the >= 96 bin: the mean over seeds
of the per-protein mean, with a 95 % bootstrap interval over proteins (per-protein values averaged over seeds first).
No setting is chosen here: the arms are fixed in advance, and only the validation split is used during training.

    python benchmarks/ablation_longrange.py --data results_full/data --pretrained runs/pretrain -o runs/ablation
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protrnn.commands.args import SAFE_NAME  # noqa: E402
from protrnn.conventions import split_of_test_set  # noqa: E402

DISTOGRAM = [float(e) for e in range(4, 21)]
ARMS: dict[str, list[str]] = {}
_steps = [
    ("today", []),
    ("+window_blocks", ["--data.crop_length", "512", "--data.pair_block", "64", "--data.blocks_per_chain", "4"]),
    ("+log_separation", ["--model.model.separation", "log", "--model.model.max_separation", "384"]),
    ("+distogram", ["--model.model.distogram_bins", json.dumps(DISTOGRAM)]),
    ("+pretraining", ["PRETRAINED"]),
    ("bundled_recipe", ["--model.model.pair_dim", "32", "--model.model.head_blocks", "6"]),
]
_so_far: list[str] = []
for _name, _args in _steps:
    _so_far = _so_far + _args
    ARMS[_name] = list(_so_far)

METRICS = {"short": "short/P@L/5", "medium": "medium/P@L/5", "long": "long/P@L/5",
           "medium+long": "medium_long/P@L/5", ">=96 bin": "bin/96+/P@L/5"}


def model_name(arm: str) -> str:
    """The name ``protrnn evaluate --model NAME=PATH`` gets for an arm: the arm's own name when it is a safe one
    (:data:`protrnn.commands.args.SAFE_NAME`), else the arm without its leading ``+`` (``+distogram`` ->
    ``distogram``). The run folders and the printed table keep the arm names."""
    name = arm if SAFE_NAME.match(arm) else arm.lstrip("+")
    if not SAFE_NAME.match(name):
        raise SystemExit(f"arm {arm!r} has no safe model name (letters, digits, '_', '.', '-', '@', '+')")
    return name


def _train_args(arm: str, pretrained: Path | None, freeze_steps: int) -> list[str]:
    out: list[str] = []
    for arg in ARMS[arm]:
        if arg == "PRETRAINED":
            if pretrained is None:
                raise SystemExit(f"arm {arm} needs --pretrained")
            out += ["--trainer.callbacks+=protrnn.training.finetune.PretrainedEncoder",
                    "--trainer.callbacks.path", str(pretrained), "--trainer.callbacks.freeze_steps", str(freeze_steps)]
        else:
            out.append(arg)
    return out


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def _bootstrap(values: np.ndarray, rng: np.random.Generator, n: int = 1000) -> tuple[float, float]:
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared train/val/test_*.npz directory")
    parser.add_argument("--test-sets", default="ts50,psicov150")
    parser.add_argument("--pretrained", type=Path, help="pretrained encoder export (protrnn pretrain)")
    parser.add_argument("--freeze-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    needs_encoder = [arm for arm in arms if "PRETRAINED" in ARMS[arm]]
    if needs_encoder and args.pretrained is None:  # before any arm trains, not after the earlier ones
        parser.error(f"arms {', '.join(needs_encoder)} need --pretrained (or leave them out with --arms)")
    tests = args.test_sets.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, list[float]] = defaultdict(list)
    for seed in seeds:
        for arm in arms:
            run = args.out / arm / f"seed{seed}"
            if not (run / "model.json").is_file():
                run.mkdir(parents=True, exist_ok=True)
                start = time.time()
                _run([sys.executable, "-m", "protrnn", "train", "--config", "default",
                      "--data.train_path", str(args.data / "train.npz"), "--data.val_path", str(args.data / "val.npz"),
                      "--trainer.default_root_dir", str(run), "--trainer.max_steps", str(args.steps),
                      "--trainer.max_epochs", "1000", "--trainer.check_val_every_n_epoch", "null",
                      "--trainer.val_check_interval", str(args.steps), "--trainer.enable_progress_bar", "false",
                      "--seed_everything", str(seed), "--data.seed", str(seed), "--num_threads", "1",
                      *_train_args(arm, args.pretrained, args.freeze_steps)], run / "train.log")
                (run / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
            timings[arm].append(float((run / "wall_seconds.txt").read_text()))
            evaluation = run / "evaluation"
            if not (evaluation / "per_protein.csv").is_file():
                _run([sys.executable, "-m", "protrnn", "evaluate", "--model", f"{model_name(arm)}={run}", "--bootstrap", "200",
                      *[a for t in tests for a in ("--test-set", f"{t}={args.data / (split_of_test_set(t) + '.npz')}")],
                      "-o", str(evaluation)], run / "evaluate.log")
    # per (arm, test set, protein): metric averaged over seeds
    values: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for arm in arms:
        for seed in seeds:
            with open(args.out / arm / f"seed{seed}" / "evaluation" / "per_protein.csv", newline="") as handle:
                for row in csv.DictReader(handle):
                    for label, key in METRICS.items():
                        if row.get(key) not in (None, "", "nan"):
                            values[(arm, row["test_set"])][label].setdefault(row["protein"], []).append(
                                float(row[key]))
    rng = np.random.default_rng(0)
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for test in tests:
        print(f"\n### {test}: top-L/5 precision, mean over {len(seeds)} seeds [95 % bootstrap over proteins]\n")
        print("| arm | " + " | ".join(METRICS) + " | wall min/run |")
        print("|---|" + "---|" * (len(METRICS) + 1))
        for arm in arms:
            cells = []
            for label in METRICS:
                per_protein = values[(arm, test)][label]
                seed_means = np.array([np.mean(v) for v in per_protein.values() if len(v) == len(seeds)])
                if len(seed_means) == 0:
                    cells.append("-")
                    continue
                low, high = _bootstrap(seed_means, rng)
                table.setdefault(test, {}).setdefault(arm, {})[label] = [float(seed_means.mean()), low, high,
                                                                          len(seed_means)]
                cells.append(f"{seed_means.mean():.3f} [{low:.3f}, {high:.3f}]")
            print(f"| {arm} | " + " | ".join(cells) + f" | {np.mean(timings[arm]) / 60:.1f} |")
    (args.out / "ablation.json").write_text(json.dumps({"steps": args.steps, "seeds": seeds, "table": table,
                                                        "wall_seconds": timings}, indent=1))


if __name__ == "__main__":
    main()
