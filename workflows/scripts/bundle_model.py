"""Install a trained model (one export, or an ensemble of exports) as the package's bundled default
(protrnn/pretrained/) with its record.

The record (README.md + evaluation.json) states how the model was trained, on which data (every training source with
its chains kept and removed, the chains removed per test set for homology; the pretraining labels and encoder when the
model started from one) and its measured precision on every test set next to the baselines evaluated by the same
code, so the figures shipped beside the weights are the pipeline's own; it ends with the installed weights' SHA-256
(`weights_sha256`), so two installs of different weights never leave the same record. The weights are checked to load
(no pickle) before anything is replaced, and the bundle is built beside OUTDIR and swapped in whole.

Usage: bundle_model.py MODEL_DIR MODEL_EVALUATION_DIR BASELINES_EVALUATION_DIR OUTDIR
           [--data DIR] [--pretrain-data DIR] [--encoder DIR] [--notes FILE] [--pretraining-record FILE]

MODEL_DIR may be an ensemble (`protrnn ensemble`: ensemble.json + member exports, one recipe at several seeds); its
members are installed beside ensemble.json and the record lists each (seed, selected checkpoint, validation figures);
the data and pretraining records are the first member's (the members share the recipe). Members that started from
encoders of their own (`bundle.encoder_per_seed`, pretrained on the same labels) are each recorded with theirs.
OUTDIR holds the bundle and nothing else: it is replaced whole.

--data: the `protrnn prepare` output the model trained on (manifest.tsv, leakage.tsv); --encoder: the pretrained
encoder it started from (encoder.json); --pretrain-data: the `protrnn pretrain prepare` output that encoder was
trained on (manifest.json). Each defaults to what the model's (or encoder's) recorded training config names, when
that directory exists here (a model trained by hand is recorded the same way). --pretraining-record: an earlier
evaluation.json of the same ensemble members (checked), whose pretraining section is kept instead, for refreshing the
figures of an installed ensemble whose encoders are gone. --notes: a Markdown file (the config's `bundle.notes`) whose
text the card carries under "Recipe and selection": the written account of the recipe and of why this model was
installed lives in the repository beside the config, so a rerun of the rule keeps it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import filecmp
import inspect
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from protrnn.conventions import RANGES, named_test_set
from protrnn.data.prepare import LEAKAGE_FILE, SUMMARY_FILE, SUMMARY_FORMAT
from protrnn.data.prepare import MANIFEST_FILE as PREPARE_MANIFEST
from protrnn.data.sidechainnet import MANIFEST_FILE, MANIFEST_FORMAT
from protrnn.diagnostics.run import AUXILIARY_SS_CALLBACK, PRETRAINED_CALLBACK, recorded_callback
from protrnn.errors import InputError, parse_json_bytes, read_json_document, reading
from protrnn.evaluation.metrics import bin_label
from protrnn.evaluation.results import CHANCE_NAME, read_summary
from protrnn.model.io import (
    JSON_NAME,
    WEIGHTS_NAME,
    ensemble_members,
    is_ensemble,
    load_network,
    write_ensemble_files,
)
from protrnn.model.pretrain_heads import ENCODER_JSON_NAME, read_pretrained_metadata
from protrnn.utils.io import file_sha256, read_tsv, swapped_directory

KEYS = [f"{r}/P@L/5" for r in RANGES] + ["long/P@L/1", "medium_long/P@L/1", "long/AUPR"]


def _mean(results: dict, method: str, test_set: str, key: str) -> tuple[float, float, float] | None:
    metric = results.get(method, {}).get(test_set, {}).get("metrics", {}).get(key)
    if not metric:
        return None
    return metric["mean"], metric["low"], metric["high"]


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as the shipped record shows it: a wheel by its file name (the cache folder is the build machine's),
    else relative to the working directory when that is short (`../shared/data/...`), else the file name."""
    text = str(path)
    if text.endswith(".whl"):
        return Path(text).name
    relative = os.path.relpath(text) if Path(text).is_absolute() else text
    return relative if relative.count("..") <= 1 else Path(text).name


def _training_config(metadata: dict) -> dict:
    config = metadata.get("training_config")
    return config if isinstance(config, dict) else {}


def recorded_data_dir(metadata: dict, marker: str) -> Path | None:
    """The folder of the recorded training data (`data.train_path`) when it exists here and holds `marker`."""
    data = _training_config(metadata).get("data")
    train = data.get("train_path") if isinstance(data, dict) else None
    if not train:
        return None
    folder = Path(train).parent
    return folder if (folder / marker).is_file() else None


def _callback_args(metadata: dict, class_path: str) -> dict | None:
    """init_args of the recorded `class_path` callback the model was trained with, or None."""
    trainer = _training_config(metadata).get("trainer")
    callback = recorded_callback(trainer.get("callbacks"), class_path) if isinstance(trainer, dict) else None
    return dict(callback.get("init_args") or {}) if callback is not None else None


def pretrained_encoder_callback(metadata: dict) -> dict | None:
    """init_args of the PretrainedEncoder callback the model was trained with, or None."""
    return _callback_args(metadata, PRETRAINED_CALLBACK)


def auxiliary_ss_weight(metadata: dict) -> float | None:
    """The weight of the auxiliary secondary-structure loss the model was trained with (AuxiliarySecondaryStructure),
    or None."""
    args = _callback_args(metadata, AUXILIARY_SS_CALLBACK)
    if args is None:
        return None
    if "weight" not in args:  # recorded without its arguments: the callback's own default
        from protrnn.training.finetune import AuxiliarySecondaryStructure
        return float(inspect.signature(AuxiliarySecondaryStructure).parameters["weight"].default)
    return float(args["weight"])


def data_record(data_dir: Path) -> dict[str, Any]:
    """What `protrnn prepare` did with every input (manifest.tsv) and which chains it removed for homology to a test
    set (leakage.tsv): chains per training source and split, test sets, removals per test set."""
    rows = read_tsv(data_dir / PREPARE_MANIFEST)
    by_source: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for row in rows:
        by_source[row["source"].split("#", 1)[0]].append(row)
    sources, test_sets = [], {}
    for source, members in by_source.items():
        splits = collections.Counter(r["split"] for r in members if r["status"] == "kept")
        tests = {split: n for split, n in splits.items() if named_test_set(split) is not None}
        if tests:
            for split, n in tests.items():
                test_sets[named_test_set(split)] = {"source": display_path(source), "chains": n}
            continue
        statuses = collections.Counter(r["status"] for r in members)
        sources.append({"source": display_path(source), "train": splits.get("train", 0), "val": splits.get("val", 0),
                        "removed_for_leakage": statuses.get("removed", 0),
                        "skipped": sum(n for status, n in statuses.items() if status not in ("kept", "removed"))})
    leakage = read_tsv(data_dir / LEAKAGE_FILE) if (data_dir / LEAKAGE_FILE).is_file() else []
    per_test_set = collections.Counter(r["test_set"] for r in leakage)
    record: dict[str, Any] = {
        "sources": sources,
        "chains": {"train": sum(s["train"] for s in sources), "val": sum(s["val"] for s in sources)},
        "test_sets": test_sets,
        "leakage": {"removed": len(leakage), "per_test_set": {name: per_test_set.get(name, 0) for name in test_sets}},
    }
    summary = data_dir / SUMMARY_FILE
    if summary.is_file():
        info = read_json_document(summary, SUMMARY_FORMAT, what="prepare summary").get("info") or {}
        record["leakage"].update({key: info[key] for key in ("identity", "coverage", "leakage_coverage_of",
                                                             "leakage_rule", "homology_method") if key in info})
        if "split_mode" in info:
            record["split"] = info["split_mode"]
    return record


def encoder_record(encoder: dict) -> dict[str, Any]:
    """What the record keeps of a pretrained encoder's description (encoder.json): its checkpoint, budget, objectives,
    held-out figures and throughput."""
    trainer = _training_config(encoder).get("trainer") or {}
    return {"global_step": encoder.get("global_step"), "epoch": encoder.get("epoch"),
            "selected": encoder.get("selected"), "monitor": encoder.get("monitor"),
            "seed": _training_config(encoder).get("seed_everything"),
            "max_time": trainer.get("max_time"), "objectives": encoder.get("objectives"),
            "val_metrics": {k: round(float(v), 4) for k, v in (encoder.get("val_metrics") or {}).items()},
            "throughput": encoder.get("throughput")}


def pretraining_record(encoder: dict, data_dir: Path | None, callback: dict | None,
                       aux_ss_weight: float | None = None) -> dict[str, Any]:
    """The pretrained encoder the model started from (its encoder.json, read), the labels it learnt from
    (manifest.json), and the weight of the auxiliary SS loss kept during contact training (None: none)."""
    record: dict[str, Any] = {
        "encoder": encoder_record(encoder),
        "freeze_steps": (callback or {}).get("freeze_steps"),
        "auxiliary_ss_weight": aux_ss_weight,
    }
    if data_dir is not None:
        manifest = read_json_document(data_dir / MANIFEST_FILE, MANIFEST_FORMAT, what="pretraining label manifest")
        info, counts = manifest.get("info") or {}, manifest.get("counts") or {}
        record["data"] = {
            "source": display_path(info.get("source", "?")),
            **{key: info.get(key) for key in ("subsets", "max_chains", "identity", "coverage", "coverage_of")},
            # as the contact data's: labels prepared before the rule was recorded (75d8e3f) have none
            **{key: info[key] for key in ("leakage_rule",) if key in info},
            "counts": {key: counts.get(key) for key in (
                "records_read", "duplicates_collapsed", "distinct_sequences", "candidates", "removed_for_leakage",
                "removed_per_test_set", "clusters", "chains_used", "residues_used")},
            "splits": {name: {k: split.get(k) for k in ("chains", "clusters", "residues")}
                       for name, split in (manifest.get("splits") or {}).items()},
        }
    return record


def _count(value: Any) -> str:
    """A count with thousands separators (floats rounded), anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def _chain_words(of: Any, default: str) -> str:
    """The chain a leakage coverage was measured on, as the data's preparation recorded it: ``either chain`` (the rule
    since 2026-12-07), ``the test chain`` (the rule of 2026-12-06/07, which kept fragments of test chains), or
    ``default`` when the record does not say."""
    if not isinstance(of, str) or not of:
        return default
    return of if of.startswith("either") else f"the {of}"


def _coverage_words(leakage: dict[str, Any]) -> str:
    """`` over >= 50% of either chain`` (or ``of the test chain``) from a leakage record's coverage and the chain it
    is measured on, when prepare recorded it; empty without a coverage."""
    coverage = leakage.get("coverage")
    if not isinstance(coverage, (int, float)) or isinstance(coverage, bool):
        return ""
    return f" over >= {coverage:.0%} of " + _chain_words(leakage.get("leakage_coverage_of"), "the aligned chains")


def data_lines(record: dict[str, Any]) -> list[str]:
    """README section of the contact training data."""
    leakage = record["leakage"]
    identity = leakage.get("identity")
    lines = ["## Training data", "",
             f"{record['chains']['train']:,} training and {record['chains']['val']:,} validation chains (split by "
             "sequence cluster). Chains removed for homology to a test set"
             + (f" (>= {identity:.0%} identity{_coverage_words(leakage)}, {leakage.get('homology_method', '?')})"
                if identity else "")
             + f": {leakage['removed']:,} ("
             + ", ".join(f"{name} {n:,}" for name, n in leakage["per_test_set"].items()) + ").", "",
             "| source | train | val | removed (test-set homologues) | skipped |", "|---|---|---|---|---|"]
    for source in record["sources"]:
        lines.append(f"| {source['source']} | {source['train']:,} | {source['val']:,} | "
                     f"{source['removed_for_leakage']:,} | {source['skipped']:,} |")
    lines += ["", "Test sets: " + ", ".join(f"{name} ({entry['chains']} chains, {entry['source']})"
                                           for name, entry in record["test_sets"].items()) + ".", ""]
    return lines


def pretraining_lines(record: dict[str, Any]) -> list[str]:
    """README section of the pretrained encoder."""
    encoder = record["encoder"]
    if encoder is None:
        return ["## Pretrained encoder", "", "The embedding and encoder started from a pretrained encoder that was not "
                f"found when this model was installed; frozen for the first {_count(record.get('freeze_steps'))} "
                "contact-training steps.", ""]
    metrics = encoder.get("val_metrics") or {}
    throughput = encoder.get("throughput") or {}
    checkpoint = " ".join(filter(None, (encoder.get("selected"), "checkpoint",
                                        f"by {encoder['monitor']}" if encoder.get("monitor") else "")))
    lines = ["## Pretrained encoder", "",
             f"The embedding and encoder started from `protrnn pretrain` (docs/pretraining.md): its {checkpoint}, "
             f"at step {_count(encoder.get('global_step'))} (max_time {encoder.get('max_time')})"
             + (f", {_count(throughput.get('residues_seen'))} residues at {_count(throughput.get('residues_per_s'))} "
                "residues/s" if throughput else "")
             + f"; its validation clusters (not homology-separated from its training split: docs/pretraining.md, "
             f"Limits): Q8 {metrics.get('val/Q8', float('nan')):.3f}, Q3 "
             f"{metrics.get('val/Q3', float('nan')):.3f}, masked-residue accuracy "
             f"{metrics.get('val/mask_acc', float('nan')):.3f}. Frozen for the first "
             f"{_count(record.get('freeze_steps'))} contact-training steps"
             + (f"; then every step added {record['auxiliary_ss_weight']:g} x the 8-state secondary-structure loss of "
                "a batch of these labels, scored by the encoder's frozen SS read-out (AuxiliarySecondaryStructure)."
                if record.get("auxiliary_ss_weight") is not None else ".")]
    members = record.get("member_encoders")
    if members:
        lines += ["", "Each member started from its own encoder, pretrained with the same labels and settings at "
                  "the member's seed (`bundle.encoder_per_seed`; the figures above are member 1's): "
                  + "; ".join(f"member {k} (seed {m.get('seed')}): step {_count(m.get('global_step'))}, Q8 "
                              f"{(m.get('val_metrics') or {}).get('val/Q8', float('nan')):.3f}"
                              for k, m in enumerate(members, 1)) + "."]
    data = record.get("data")
    if data:
        counts = data["counts"]
        removed = counts.get("removed_per_test_set") or {}
        splits = data.get("splits") or {}
        lines += ["", f"Labels: {data['source']} (8-state DSSP; subsets {', '.join(data.get('subsets') or [])}"
                  + (f", a sample of {data['max_chains']:,} sequences" if data.get("max_chains") else "") + "): "
                  f"{_count(counts.get('records_read'))} records, {_count(counts.get('duplicates_collapsed'))} "
                  f"duplicates collapsed, {_count(counts.get('removed_for_leakage'))} chains removed at >= "
                  f"{data.get('identity', 0):.0%} identity over {data.get('coverage', 0):.0%} of "
                  f"{_chain_words(data.get('coverage_of'), 'the test chain')} ("
                  + ", ".join(f"{name} {_count(n)}" for name, n in removed.items()) + "); "
                  f"{_count(counts.get('chains_used'))} chains in {_count(counts.get('clusters'))} clusters, "
                  f"{_count(counts.get('residues_used'))} residues; train / val "
                  f"{_count((splits.get('train') or {}).get('chains'))} / "
                  f"{_count((splits.get('val') or {}).get('chains'))} chains."]
    return [*lines, ""]


def checkpoint_line(model_json: dict) -> str:
    """README line: which checkpoint of a training run the weights are, under which budget, and its validation."""
    trainer = model_json.get("training_config", {}).get("trainer", {})
    return (f"{model_json.get('selected', '?')} by {model_json.get('monitor')!s}: epoch "
            f"{model_json.get('epoch', '?')} (0-based), global step {model_json.get('global_step', '?')}; "
            f"trainer.max_epochs {trainer.get('max_epochs', '?')}, max_time {trainer.get('max_time', '?')}"
            + (f", max_steps {trainer['max_steps']}" if trainer.get("max_steps") not in (None, -1) else "")
            + ", early stopping on the same metric. Validation at that epoch: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(model_json.get("val_metrics", {}).items())) + ".")


def member_seed(model_json: dict) -> Any:
    """The seed_everything a member was trained with (its recorded training config), or None."""
    return model_json.get("training_config", {}).get("seed_everything")


def ratio_lines(model_eval: dict, baseline_eval: dict, chance: dict | None, model_name: str,
                test_set: str) -> list[str]:
    """The card's sentence on how far the model is above chance on one test set: long-range top-L/5, and top-L/5
    in the farthest open separation bin (>= 96 by default; issue #11's mark is 4x chance there), each against the
    chance level (summary.json's ``chance``, the exact expected precision of a random ranking). An evaluation
    written before the chance level existed has only the ``random`` baseline, one draw of such a ranking: the
    sentence then compares with it, as the card did before."""
    model_long = _mean(model_eval["results"], model_name, test_set, "long/P@L/5")
    if chance is None:
        random_long = _mean(baseline_eval["results"], "random", test_set, "long/P@L/5")
        if model_long and random_long and random_long[0] > 0:
            return ["", f"Long-range (>= 24) P@L/5 is {model_long[0] / random_long[0]:.1f}x random ranking."]
        return []
    sentences = []
    chance_long = _mean(chance, CHANCE_NAME, test_set, "long/P@L/5")
    if model_long and chance_long and chance_long[0] > 0:
        sentences.append(f"Long-range (>= 24) P@L/5 is {model_long[0] / chance_long[0]:.1f}x chance "
                         f"({model_long[0]:.3f} against {chance_long[0]:.3f}, the expected precision of a random "
                         "ranking).")
    open_bins = [low for low, high in model_eval.get("bins", []) if high is None]
    if open_bins:
        low = max(open_bins)
        key = f"bin/{bin_label(low, None)}/P@L/5"
        model_far = _mean(model_eval["results"], model_name, test_set, key)
        chance_far = _mean(chance, CHANCE_NAME, test_set, key)
        proteins = model_eval["results"][model_name][test_set]["metrics"].get(key, {}).get("n")
        if model_far and chance_far and chance_far[0] > 0:
            sentences.append(f"In the >= {low} bin ({proteins} proteins have such pairs) it is "
                             f"{model_far[0] / chance_far[0]:.1f}x chance ({model_far[0]:.4f} against "
                             f"{chance_far[0]:.4f}).")
    return ["", " ".join(sentences)] if sentences else []


def build_record(model_json: dict, model_eval: dict, baseline_eval: dict, *, data: dict | None = None,
                 pretraining: dict | None = None, members: list[dict] | None = None,
                 notes: tuple[str, str] | None = None) -> tuple[dict, str]:
    """(evaluation.json content, README.md text) for the bundled model; `data` (:func:`data_record`) and
    `pretraining` (:func:`pretraining_record`), when known, are recorded in both. `members`: the model.json of each
    member of an ensemble (then `model_json` is the first one's). `notes`: (file as shown, its Markdown text), put in
    the card under "Recipe and selection" and named in the record."""
    (model_name,) = model_eval["results"].keys()
    tables: dict[str, dict[str, dict[str, list[float]]]] = {}
    if data is not None:
        trained_on = ("on the data listed under \"Training data\" below (relatives of the test sets removed by the "
                      "leakage rule stated there)")
    else:
        trained_on = ("on data this record does not list (the model's training config names no prepared-data "
                      "folder found when it was installed)")
    lines = [
        "# protrnn bundled default model",
        "",
        "Trained by the project's own pipeline (`snakemake bundle --cores 2`, rule `bundle` in",
        f"workflows/rules/bundle.smk) {trained_on}"
        + (", starting from a pretrained encoder" if pretraining is not None else "") + ".",
    ]
    architecture = json.dumps(model_json.get("config", {}), sort_keys=True)
    if members:
        lines += [
            f"An ensemble of {len(members)} training runs of one recipe at seeds "
            + ", ".join(str(member_seed(m)) for m in members) + ": each prediction is the mean of the members' "
            "contact probabilities (`protrnn ensemble`), so it costs their times added up.",
            "Files: `ensemble.json` (the member list), `member-K/model.safetensors` (weights, no pickle) and",
            "`member-K/model.json` (architecture, alphabet and the full training config), `evaluation.json` (the "
            "figures below).",
            "",
            f"Architecture of each member: {architecture}",
            *(f"Member {k} (seed {member_seed(m)}): {checkpoint_line(m)}" for k, m in enumerate(members, 1)),
            "",
        ]
    else:
        lines += [
            "Files: `model.safetensors` (weights, no pickle),",
            "`model.json` (architecture, alphabet and the full training config), `evaluation.json` (the figures "
            "below).",
            "",
            f"Architecture: {architecture}",
            f"Checkpoint: {checkpoint_line(model_json)}",
            "",
        ]
    if notes is not None:
        lines += ["## Recipe and selection", "", notes[1].strip(), "", f"(From `{notes[0]}`, the config's "
                  "`bundle.notes`.)", ""]
    lines += [
        *(data_lines(data) if data is not None else []),
        *(pretraining_lines(pretraining) if pretraining is not None else []),
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
        level = model_eval.get("chance", {}).get(test_set)
        chance = {CHANCE_NAME: {test_set: level}} if level is not None else None
        if chance is not None:
            methods.append((CHANCE_NAME, chance, CHANCE_NAME))
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
            scored = results.get(method, {}).get(test_set, {}).get("n_proteins")
            shown = label if scored in (None, n) else f"{label} ({scored} of {n} proteins)"  # freecontact: aligned ones
            lines.append(f"| {shown} | " + " | ".join(cells) + " |")
        lines += ratio_lines(model_eval, baseline_eval, chance, model_name, test_set)
        lines.append("")
        tables[test_set] = table
    record: dict[str, Any] = {"model": model_name, "test_sets": tables,
                              "model_evaluation_command": model_eval.get("command"),
                              "baseline_evaluation_command": baseline_eval.get("command")}
    if members:
        record["ensemble"] = [{"seed": member_seed(m), "global_step": m.get("global_step"),
                               "selected": m.get("selected"), "val_metrics": m.get("val_metrics")} for m in members]
    if notes is not None:
        record["notes"] = notes[0]
    if data is not None:
        record["training_data"] = data
    if pretraining is not None:
        record["pretraining"] = pretraining
    return record, "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bundle_model.py", description=__doc__.split("\n\n")[0])
    for name in ("model_dir", "model_eval_dir", "baseline_eval_dir", "outdir"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--data", type=Path, help="protrnn prepare output the model trained on (manifest.tsv)")
    parser.add_argument("--encoder", type=Path, help="pretrained encoder it started from (encoder.json)")
    parser.add_argument("--pretrain-data", type=Path, help="protrnn pretrain prepare output (manifest.json)")
    parser.add_argument("--notes", type=Path, help="Markdown text for the card's 'Recipe and selection' section")
    parser.add_argument("--pretraining-record", type=Path, metavar="EVALUATION_JSON",
                        help="an earlier record (evaluation.json) of these same ensemble members: its pretraining "
                             "section is kept when the encoders are not on this machine (refreshing a record's "
                             "figures)")
    return parser.parse_args(argv)


def recorded_pretraining(path: Path, member_jsons: list[dict]) -> dict[str, Any]:
    """The pretraining section of an earlier record of the ensemble members being installed. It describes encoders
    that may no longer exist, so the record must list the same members: the same seeds, selected steps and
    validation figures, in order (a single model's record lists none, so it is always refused). Refused otherwise,
    or when it has no pretraining section. Unreadable, non-UTF-8 or non-JSON files are one-line InputErrors naming
    the file (and the position), worded as for every other input (protrnn.errors.reading)."""
    with reading(path):
        raw = path.read_bytes()
    earlier = parse_json_bytes(raw, path, "bundle record (evaluation.json)")
    if not isinstance(earlier, dict):
        raise InputError("the earlier record is not a JSON object (an evaluation.json of protrnn bundle)", path=path)
    entries = earlier.get("ensemble") or []
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise InputError("the earlier record's 'ensemble' is not a list of member entries", path=path)
    recorded = [(m.get("seed"), m.get("global_step"), m.get("val_metrics")) for m in entries]
    members = [(member_seed(m), m.get("global_step"), m.get("val_metrics")) for m in member_jsons]
    if recorded != members:
        raise InputError("the earlier record is not of these members (seeds, selected steps or validation figures "
                         "differ): its pretraining section would describe another model", path=path)
    if not earlier.get("pretraining"):
        raise InputError("the earlier record has no pretraining section", path=path)
    return earlier["pretraining"]


def read_notes(path: Path) -> tuple[str, str]:
    """(path as the record shows it, text) of a notes file; a missing, unreadable, non-UTF-8 or empty file is an
    InputError (the operating system's errors worded by protrnn.errors.reading, as for every other input)."""
    with reading(path):
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"notes file is not UTF-8 text ({exc.reason} at byte {exc.start + 1})", path=path) from None
    if not text.strip():
        raise InputError("notes file is empty", path=path)
    return display_path(path), text


def check_shared_recipe(member_jsons: list[dict], model_dir: Path) -> None:
    """The record of an ensemble is its first member's data and pretraining: every member must have trained on the
    same data (`data.train_path`) with the same architecture, each from a pretrained encoder or none, with the same
    auxiliary SS loss weight or none. The encoders may differ (`bundle.encoder_per_seed`); :func:`member_encoders`
    then checks that they learnt from the same labels."""
    def recipe(model_json: dict) -> tuple:
        data = _training_config(model_json).get("data")
        train = data.get("train_path") if isinstance(data, dict) else None
        return (train, pretrained_encoder_callback(model_json) is not None, model_json.get("config"),
                auxiliary_ss_weight(model_json))

    first = recipe(member_jsons[0])
    for k, member_json in enumerate(member_jsons[1:], 2):
        if recipe(member_json) != first:
            raise InputError(f"ensemble member {k} differs from member 1 in its training data, its use of a "
                             "pretrained encoder, its auxiliary SS loss or its architecture; the bundle's record "
                             "describes one recipe", path=model_dir)


def member_encoders(member_jsons: list[dict], first: dict) -> list[dict] | None:
    """Each member's encoder (seed, checkpoint, held-out figures) when the members of an ensemble started from
    different encoders (`bundle.encoder_per_seed`; `first` is member 1's encoder.json, read), else None. Every such encoder must be
    here and have learnt from the labels member 1's did (`data.train_path` of its training config: the same path, or
    a file with the same bytes)."""
    recorded = [(pretrained_encoder_callback(m) or {}).get("path") for m in member_jsons]
    if len(set(recorded)) == 1:  # one shared encoder (member 1's, wherever --encoder found it)
        return None
    encoders = [first]
    for k, path in enumerate(recorded[1:], 2):
        if not path:  # no folder recorded: member 1's encoder
            encoders.append(first)
        elif (Path(path) / ENCODER_JSON_NAME).is_file():
            encoders.append(read_pretrained_metadata(Path(path)))
        else:
            raise InputError(f"ensemble member {k} started from a pretrained encoder that is not here",
                             path=Path(path) / ENCODER_JSON_NAME)
    labels = [(_training_config(e).get("data") or {}).get("train_path") for e in encoders]
    for k, label in enumerate(labels[1:], 2):
        if label != labels[0] and not same_file(label, labels[0]):
            raise InputError(f"ensemble member {k}'s encoder was pretrained on {label}, member 1's on {labels[0]} "
                             "(not the same file here); the bundle's record describes one set of pretraining labels",
                             path=Path(recorded[k - 1]))
    return [encoder_record(e) for e in encoders]


def same_file(a: str | None, b: str | None) -> bool:
    """Whether two recorded paths hold the same bytes here (labels copied from one results folder to another)."""
    return bool(a and b and Path(a).is_file() and Path(b).is_file() and filecmp.cmp(a, b, shallow=False))


def _relative_checkpoint(model_json: dict) -> dict:
    """model.json with an absolute source_checkpoint made relative to the working directory (no build-machine paths
    in the shipped record)."""
    source = model_json.get("source_checkpoint")
    if source and Path(source).is_absolute():
        with contextlib.suppress(ValueError):
            model_json["source_checkpoint"] = str(Path(source).relative_to(Path.cwd()))
    return model_json


def weights_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every weights file of a bundle, by its path in the bundle (`model.safetensors`,
    `member-K/model.safetensors`)."""
    return {path.relative_to(directory).as_posix(): file_sha256(path)
            for path in sorted(directory.rglob(WEIGHTS_NAME)) if path.is_file()}


def install(outdir: Path, model_dir: Path, member_dirs: list[Path] | None, member_jsons: list[dict],
            record: dict, card: str) -> None:
    """Build the bundle beside `outdir` (one export, or an ensemble through the library's one writer of that layout)
    with its record, and swap it in whole: a stopped run leaves the old bundle as it was, and installing one kind
    leaves none of the other kind's files. The record ends with the installed weights' SHA-256 (`weights_sha256`), so
    two installs of different weights never leave the same record: rule `bundle` compares records to tell whether
    the installed model is still its results folder's."""
    with swapped_directory(outdir) as staging:
        if member_dirs:
            write_ensemble_files(staging, [(member / WEIGHTS_NAME, member_json)
                                           for member, member_json in zip(member_dirs, member_jsons, strict=True)],
                                 extra={"seeds": [member_seed(m) for m in member_jsons]})
        else:
            shutil.copyfile(model_dir / WEIGHTS_NAME, staging / WEIGHTS_NAME)
            (staging / JSON_NAME).write_text(json.dumps(member_jsons[0], indent=2) + "\n", encoding="utf-8")
        record = {**record, "weights_sha256": weights_digests(staging)}
        (staging / "evaluation.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(card, encoding="utf-8")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    model_dir, outdir = args.model_dir, args.outdir
    notes = read_notes(args.notes) if args.notes is not None else None
    # Refuses anything that is not a safe protrnn model (every member of an ensemble) before the bundle is replaced.
    member_dirs = ensemble_members(model_dir) if is_ensemble(model_dir) else None
    member_jsons = [_relative_checkpoint(dict(load_network(m, kind="export").metadata))
                    for m in (member_dirs or [model_dir])]
    model_json = member_jsons[0]
    check_shared_recipe(member_jsons, model_dir)
    data_dir = args.data or recorded_data_dir(model_json, PREPARE_MANIFEST)
    data = data_record(data_dir) if data_dir is not None else None
    callback = pretrained_encoder_callback(model_json)
    encoder_dir = args.encoder or (Path(callback["path"]) if callback and callback.get("path") else None)
    pretraining = None
    if args.pretraining_record is not None:
        pretraining = recorded_pretraining(args.pretraining_record, member_jsons)
    elif encoder_dir is not None and (encoder_dir / ENCODER_JSON_NAME).is_file():
        encoder_json = read_pretrained_metadata(encoder_dir)
        pretrain_dir = args.pretrain_data or recorded_data_dir(encoder_json, "manifest.json")
        pretraining = pretraining_record(encoder_json, pretrain_dir, callback, auxiliary_ss_weight(model_json))
        encoders = member_encoders(member_jsons, encoder_json) if member_dirs else None
        if encoders is not None:
            pretraining["member_encoders"] = encoders
    elif callback is not None:
        print(f"bundle_model.py: the model started from a pretrained encoder ({callback.get('path')}) that is not "
              "here: the record says so without its figures", file=sys.stderr)
        pretraining = {"encoder": None, "freeze_steps": callback.get("freeze_steps"),
                       "auxiliary_ss_weight": auxiliary_ss_weight(model_json)}
    record, card = build_record(model_json, read_summary(args.model_eval_dir), read_summary(args.baseline_eval_dir),
                                data=data, pretraining=pretraining, members=member_jsons if member_dirs else None,
                                notes=notes)
    install(outdir, model_dir, member_dirs, member_jsons, record, card)
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
