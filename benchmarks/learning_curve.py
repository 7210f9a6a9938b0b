"""Learning curve of the bundled recipe: validation precision against the number of training structures.

Issue #11's marks are not met by any recipe measured on this data, and the working explanation is that the
3,571 training structures, not the model or the budget, are the limit. This measures that directly: the bundled
recipe (read from the ``bundle`` section of a pipeline config, ``workflows/config.bundle.yaml`` by default: the
contact config, its ``set`` overrides, the pretrained encoder with ``freeze_steps``, ``max_steps``, ``max_time``) is
trained on nested random subsets of the prepared training chains (for seed ``s``, a fraction ``f`` keeps the first
``f * N`` chains of one permutation seeded by ``s``, so the 25 % subset is inside the 50 % one; the run's
seed_everything and data seed are ``s`` too, so a second seed varies both the subset and the training), with the
budget and best-on-validation checkpoint of the full-data members, and every model is scored on the same whole
validation split by ``protrnn evaluate`` (runs ``f<F>@seed<S>``). Full-data runs already trained (the bundle's
members) join with ``--full full@seed<S>=MODEL``.

The table gives each model's validation top-L/5 precision by range (per-protein mean and 95 % bootstrap interval over
proteins, as ``protrnn evaluate`` computed them); then, with full-data runs, each fraction's paired difference to the
full data (``protrnn compare --reference full``: proteins, or the homology clusters of ``manifest.tsv`` when the
prepared directory has one, and seeds resampled together); then a least-squares line of
each metric against log2(training chains) over all runs: the gain per doubling of the data, and the number of
doublings it would take (if the line held) to add a given amount.
Completed subset runs are kept; an interrupted one resumes from its last checkpoint. Nothing here reads a test set.
The bundle's auxiliary secondary-structure loss (``aux_ss_weight``) reads the pipeline's pretraining labels,
``<results>/pretrain/data/train.npz``, given with ``--pretrain-labels``.

    python benchmarks/learning_curve.py --data results_bundle/data --pretrained results_bundle/pretrain/encoder \\
        --pretrain-labels results_bundle/pretrain/data/train.npz \\
        --fractions 0.25 0.5 --seeds 0 1 --jobs 2 --full full@seed0=results_bundle/models/bundle/seed0 \\
        --full full@seed1=results_bundle/models/bundle/seed1 -o runs/curve
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protrnn.data.dataset import ChainDataset, load_dataset, save_dataset  # noqa: E402
from protrnn.data.prepare import MANIFEST_FILE  # noqa: E402
from protrnn.diagnostics.results import split_seed  # noqa: E402
from protrnn.evaluation.results import read_summary  # noqa: E402
from protrnn.utils.io import atomic_write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"short": "short/P@L/5", "medium": "medium/P@L/5", "long": "long/P@L/5",
           "medium+long": "medium_long/P@L/5", ">=96 bin": "bin/96+/P@L/5"}
COMPARED = ("medium_long/P@L/5", "long/P@L/5", "short/P@L/5")


def subset_indices(n_chains: int, fraction: float, seed: int) -> np.ndarray:
    """Indices (sorted) of the nested subset: the first round(fraction * n) chains of one seeded permutation."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(n_chains)
    return np.sort(order[: max(1, round(fraction * n_chains))])


def write_subset(data: ChainDataset, fraction: float, seed: int, out: Path) -> tuple[int, int]:
    """Write the subset of ``data`` (the training chains) to ``out`` (kept if it exists); returns (chains,
    residues) of the file."""
    if out.is_file():
        subset = load_dataset(out)
    else:
        subset = data.subset(subset_indices(len(data), fraction, seed))
        save_dataset(subset, out,
                     info={"subset_of": str(data.path), "fraction": fraction, "seed": seed, "n_source": len(data)})
    return len(subset), subset.n_residues


def recipe_args(config: Path, pretrained: Path | None, labels: Path | None = None) -> tuple[list[str], dict]:
    """`protrnn train` flags of the config's bundle recipe (model, overrides, pretrained encoder and auxiliary SS
    loss, budget), in the pipeline's order (tests/test_learning_curve.py compares them both ways)."""
    bundle = yaml.safe_load(config.read_text())["bundle"]
    if bundle.get("pretrained") and pretrained is None:
        raise SystemExit(f"{config}: the bundle starts from a pretrained encoder; give it with --pretrained")
    if bundle.get("aux_ss_weight") is not None and labels is None:
        # the pipeline writes the labels beside the encoder: <results>/pretrain/{data/train.npz, encoder}
        where = (pretrained.parent / "data" / "train.npz" if pretrained is not None and pretrained.parent.name ==
                 "pretrain" else Path("<results>") / "pretrain" / "data" / "train.npz")
        raise SystemExit(f"{config}: the bundle adds the auxiliary SS loss (aux_ss_weight); give the pretraining "
                         f"labels the pipeline wrote with --pretrain-labels {where}")
    args = ["--config", bundle["config"]]
    for key, value in (bundle.get("set") or {}).items():  # YAML text, as the pipeline writes it (null, true, [4.0,5.0])
        args.append(f"--{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}")
    if bundle.get("pretrained"):
        args += ["--trainer.callbacks+=protrnn.training.finetune.PretrainedEncoder", "--trainer.callbacks.path",
                 str(pretrained), "--trainer.callbacks.freeze_steps", str(bundle.get("freeze_steps", 0))]
        if bundle.get("aux_ss_weight") is not None:
            args += ["--trainer.callbacks+=protrnn.training.finetune.AuxiliarySecondaryStructure",
                     "--trainer.callbacks.labels", str(labels), "--trainer.callbacks.encoder", str(pretrained),
                     "--trainer.callbacks.weight", repr(float(bundle["aux_ss_weight"]))]
    if "max_steps" in bundle:
        args += ["--trainer.max_steps", str(bundle["max_steps"])]
    if "max_time" in bundle:
        args += ["--trainer.max_time", str(bundle["max_time"])]
    return args, bundle


def train_command(recipe: list[str], train: Path, val: Path, run: Path, seed: int) -> list[str]:
    cmd = [sys.executable, "-m", "protrnn", "train", *recipe, "--data.train_path", str(train),
           "--data.val_path", str(val), "--num_threads", "1", "--trainer.default_root_dir", str(run),
           "--export_dir", str(run), "--trainer.enable_progress_bar", "false", "--seed_everything", str(seed),
           "--data.seed", str(seed)]
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        cmd += ["--ckpt_path", str(last)]
    return cmd


def fit_per_doubling(chains: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares line of ``values`` against log2(chains): (slope per doubling, intercept)."""
    slope, intercept = np.polyfit(np.log2(np.asarray(chains, dtype=float)), np.asarray(values, dtype=float), 1)
    return float(slope), float(intercept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared directory with train.npz and val.npz")
    parser.add_argument("--pretrained", type=Path,
                        help="the pretrained encoder export (needed when the bundle sets `pretrained: true`); every "
                             "run starts from it, also when the bundle sets `encoder_per_seed` (one encoder per member)")
    parser.add_argument("--pretrain-labels", type=Path,
                        help="pretraining labels (needed when the bundle sets `aux_ss_weight`, as "
                             "workflows/config.bundle.yaml does): the pipeline's <results>/pretrain/data/train.npz")
    parser.add_argument("--config", type=Path, default=ROOT / "workflows" / "config.bundle.yaml",
                        help="pipeline config whose `bundle` section is the recipe")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per fraction and seed: subset permutation, seed_everything and data seed")
    parser.add_argument("--jobs", type=int, default=1, help="subset runs trained at once (one thread each)")
    parser.add_argument("--full", action="append", default=[], metavar="full@seedS=MODEL",
                        help="an existing model trained on all of train.npz with the same recipe (repeatable; "
                             "name the runs full@seed<S> so that the comparison treats them as one model)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--target-gain", type=float, default=0.05,
                        help="gain (medium+long, long) whose doublings of data the fitted line is asked for")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, val = args.data / "train.npz", args.data / "val.npz"
    recipe, bundle = recipe_args(args.config, args.pretrained, args.pretrain_labels)
    train_set = load_dataset(train)
    n_full, n_full_residues = len(train_set), train_set.n_residues

    models: dict[str, tuple[Path, int, int]] = {}  # name -> (model dir, chains, residues)
    pending: list[tuple[str, list[str], Path]] = []
    for seed in args.seeds:
        for fraction in args.fractions:
            name = f"f{fraction:g}@seed{seed}"
            run = args.out / "runs" / name
            run.mkdir(parents=True, exist_ok=True)
            subset = args.out / "data" / f"train_{name}.npz"
            chains, residues = write_subset(train_set, fraction, seed, subset)
            models[name] = (run, chains, residues)
            if not (run / "model.json").is_file():
                cmd = train_command(recipe, subset, val, run, seed)
                (run / "command.txt").write_text(shlex.join(cmd) + "\n")
                pending.append((name, cmd, run))
    for spec in args.full:
        name, _, path = spec.partition("=")
        models[name] = (Path(path), n_full, n_full_residues)

    running: list[tuple[str, subprocess.Popen, Path, float, object]] = []
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            name, cmd, run = pending.pop(0)
            log = open(run / "train.log", "a")  # noqa: SIM115 (closed when the job ends)
            print(f"training {name}: {shlex.join(cmd)}", flush=True)
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), run, time.time(), log))
        time.sleep(5)
        for job in list(running):
            name, proc, run, start, log = job
            if proc.poll() is None:
                continue
            log.close()
            running.remove(job)
            if proc.returncode:
                raise SystemExit(f"training {name} failed ({proc.returncode}); see {run / 'train.log'}")
            with open(run / "wall_seconds.txt", "a") as handle:
                handle.write(f"{time.time() - start:.1f}\n")

    results: dict[str, dict] = {}
    for name, (path, _, _) in models.items():  # one evaluation per model, kept: adding a seed scores only its runs
        evaluation = args.out / "evaluation" / name
        if not (evaluation / "summary.json").is_file():
            cmd = [sys.executable, "-m", "protrnn", "evaluate", "--model", f"{name}={path}", "--test-set",
                   f"val={val}", "--bootstrap", str(args.bootstrap), "--seed", "0", "-o", str(evaluation)]
            print(f"evaluating: {shlex.join(cmd)}", flush=True)
            with open(args.out / f"evaluate_{name}.log", "w") as handle:
                if subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode:
                    raise SystemExit(f"evaluating {name} failed; see {args.out / f'evaluate_{name}.log'}")
        results[name] = read_summary(evaluation)["results"][name]

    print(f"\n### Validation ({val}), top-L/5 by range; recipe `bundle` of {args.config.name} "
          f"(max_steps {bundle.get('max_steps')})\n")
    print("| model | training chains | residues | " + " | ".join(METRICS) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    summary: dict[str, dict] = {}
    for name, (_, chains, residues) in sorted(models.items(), key=lambda item: (item[1][1], item[0])):
        cells, entry = [], {"chains": chains, "residues": residues}
        metrics = results[name]["val"]["metrics"]  # the bootstrap intervals protrnn evaluate computed
        for label, key in METRICS.items():
            metric = metrics.get(key) or {}
            if metric.get("mean") is None:  # e.g. no chain long enough for the >= 96 bin
                entry[label] = None
                cells.append("–")
                continue
            entry[label] = [metric["mean"], metric["low"], metric["high"]]
            cells.append("{:.3f} [{:.3f}, {:.3f}]".format(*entry[label]))
        summary[name] = entry
        print(f"| {name} | {chains:,} | {residues:,} | " + " | ".join(cells) + " |")
    fulls = sorted({split_seed(spec.partition("=")[0])[0] for spec in args.full})
    if fulls:
        fractions = ",".join(sorted({split_seed(n)[0] for n in models} - set(fulls)))
        cmd = [sys.executable, "-m", "protrnn", "compare", *[str(args.out / "evaluation" / n) for n in models],
               "--reference", fulls[0], "--methods", fractions, "--keys", ",".join(COMPARED),
               "--bootstrap", "2000", "--seed", "0", "-o", str(args.out / "compare.tsv")]
        if (args.data / MANIFEST_FILE).is_file():  # prepare's homology clusters: resample them, not chains
            cmd += ["--clusters", str(args.data / MANIFEST_FILE)]
        print(f"\n### Paired difference to the full data ({fulls[0]}): {shlex.join(cmd[2:])}\n")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"protrnn compare failed: {(proc.stderr or proc.stdout).strip()}")
        print((args.out / "compare.tsv").read_text(encoding="utf-8"))
    print("\n| metric | gain per doubling of the training chains | doublings for "
          f"+{args.target_gain:g} | chains that would take |")
    print("|---|---|---|---|")
    fits = {}
    for label in METRICS:
        scored = [n for n in summary if summary[n][label] is not None]
        if len({summary[n]["chains"] for n in scored}) < 2:
            continue  # a line needs two training-set sizes
        slope, _ = fit_per_doubling([summary[n]["chains"] for n in scored], [summary[n][label][0] for n in scored])
        doublings = args.target_gain / slope if slope > 0 else float("inf")
        fits[label] = {"per_doubling": slope, "doublings_for_target": doublings if np.isfinite(doublings) else None}
        need = f"{n_full * 2 ** doublings:,.0f}" if np.isfinite(doublings) else "never (no gain with data)"
        print(f"| {label} | {slope:+.4f} | {doublings:.1f} | {need} |")
    with atomic_write(args.out / "learning_curve.json", encoding="utf-8") as handle:
        json.dump({"config": str(args.config), "bundle": bundle, "seeds": args.seeds, "models": summary, "fits": fits,
                   "target_gain": args.target_gain, "n_full": n_full}, handle, indent=1)


if __name__ == "__main__":
    main()
