"""Install a trained model as the package's bundled default (protrnn/pretrained/) with its record.

The record (README.md + evaluation.json) states how the model was trained and its measured precision on every test
set next to the baselines evaluated by the same code, so the figures shipped beside the weights are the pipeline's own.
Every file is written atomically; the weights are checked to load (no pickle) before anything is replaced.

Usage: bundle_model.py MODEL_DIR MODEL_EVALUATION_DIR BASELINES_EVALUATION_DIR OUTDIR
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

from protrnn.conventions import RANGES
from protrnn.evaluation.results import read_summary
from protrnn.model.io import JSON_NAME, WEIGHTS_NAME, load_network
from protrnn.utils.io import atomic_path, atomic_write

KEYS = [f"{r}/P@L/5" for r in RANGES] + ["long/P@L/1", "medium_long/P@L/1", "long/AUPR"]


def _mean(results: dict, method: str, test_set: str, key: str) -> tuple[float, float, float] | None:
    metric = results.get(method, {}).get(test_set, {}).get("metrics", {}).get(key)
    if not metric:
        return None
    return metric["mean"], metric["low"], metric["high"]


def build_record(model_json: dict, model_eval: dict, baseline_eval: dict) -> tuple[dict, str]:
    """(evaluation.json content, README.md text) for the bundled model."""
    (model_name,) = model_eval["results"].keys()
    trainer = model_json.get("training_config", {}).get("trainer", {})
    tables: dict[str, dict[str, dict[str, list[float]]]] = {}
    lines = [
        "# protrnn bundled default model",
        "",
        "Trained by the project's own pipeline (`snakemake bundle --cores 2`, rule `bundle` in",
        "workflows/rules/bundle.smk) on the embedded default data (cgdms==1.0 + bioemu-benchmarks==0.0.2.post1 wheels),",
        "with training chains at >= 30% identity to any test set removed. Files: `model.safetensors` (weights, no pickle),",
        "`model.json` (architecture, alphabet and the full training config), `evaluation.json` (the figures below).",
        "",
        f"Architecture: {json.dumps(model_json.get('config', {}), sort_keys=True)}",
        f"Checkpoint: {model_json.get('selected', '?')} by {model_json.get('monitor')!s}: epoch "
        f"{model_json.get('epoch', '?')} (0-based), global step {model_json.get('global_step', '?')}; "
        f"trainer.max_epochs {trainer.get('max_epochs', '?')}, max_time {trainer.get('max_time', '?')}, "
        f"early stopping on the same metric. Validation at that epoch: "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(model_json.get("val_metrics", {}).items())) + ".",
        "",
        "Precision of the top L/5 pairs per range (CASP conventions, docs/conventions.md), mean over proteins with a",
        "95% bootstrap interval; baselines scored by the same code on the same chains.",
        "",
    ]
    for test_set, entry in model_eval["results"][model_name].items():
        n = entry["n_proteins"]
        lines += [f"## {test_set} ({n} proteins)", "", "| method | " + " | ".join(KEYS) + " |",
                  "|---" * (len(KEYS) + 1) + "|"]
        table: dict[str, dict[str, list[float]]] = {}
        methods = [("protrnn (this model)", model_eval["results"], model_name)]
        methods += [(b, baseline_eval["results"], b) for b in baseline_eval["results"]]
        for label, results, method in methods:
            cells, row = [], {}
            for key in KEYS:
                value = _mean(results, method, test_set, key)
                if value is None:
                    cells.append("–")
                    continue
                row[key] = [round(v, 4) for v in value]
                cells.append(f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]")
            table[label] = row
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        model_long = _mean(model_eval["results"], model_name, test_set, "long/P@L/5")
        random_long = _mean(baseline_eval["results"], "random", test_set, "long/P@L/5")
        if model_long and random_long and random_long[0] > 0:
            lines += ["", f"Long-range (>= 24) P@L/5 is {model_long[0] / random_long[0]:.1f}x random ranking."]
        lines.append("")
        tables[test_set] = table
    record = {"model": model_name, "test_sets": tables,
              "model_evaluation_command": model_eval.get("command"),
              "baseline_evaluation_command": baseline_eval.get("command")}
    return record, "\n".join(lines)


def main(argv: list[str]) -> int:
    model_dir, model_eval_dir, baseline_eval_dir, outdir = (Path(a) for a in argv)
    # Refuses anything that is not a safe protrnn model before the bundle is replaced; its metadata is model.json.
    model_json = dict(load_network(model_dir, kind="export").metadata)
    source = model_json.get("source_checkpoint")
    if source and Path(source).is_absolute():  # no build-machine paths in the shipped record
        with contextlib.suppress(ValueError):
            model_json["source_checkpoint"] = str(Path(source).relative_to(Path.cwd()))
    record, card = build_record(model_json, read_summary(model_eval_dir), read_summary(baseline_eval_dir))
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir / WEIGHTS_NAME) as tmp:
        shutil.copyfile(model_dir / WEIGHTS_NAME, tmp)
    with atomic_write(outdir / "evaluation.json", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    with atomic_write(outdir / "README.md", encoding="utf-8") as handle:
        handle.write(card)
    with atomic_write(outdir / JSON_NAME, encoding="utf-8") as handle:  # last: the bundle is complete now
        json.dump(model_json, handle, indent=2)
        handle.write("\n")
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
