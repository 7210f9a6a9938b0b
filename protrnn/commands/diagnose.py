"""``protrnn diagnose``: gradient flow versus sequence distance, effective horizon and fit diagnosis per model."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HELP = "Measure gradient flow vs sequence distance and the effective gradient horizon of a model."
DESCRIPTION = """\
For each MODEL (an exported model directory, or a Lightning .ckpt written by protrnn train), sample scored pairs
(i, j) of the --data chains, back-propagate each pair's logit, and record

  * ||d logit_ij / d x_s|| (x = embedding output) versus d = min(|i - s|, |j - s|), and versus |i - s|;
  * ||dL/dh_t|| of every recurrent layer (L = the pair's BCE) versus min(|i - t|, |j - t|);
  * the effective horizon: the distance beyond which the median-smoothed sensitivity stays below
    --fraction x its peak (docs/diagnostics.md states the rule);
  * the loss on the --data chains by chain length and, with training losses (--train-data or --train-metrics),
    the fit diagnosis: under-fitting with vanishing gradients, over-fitting with long memory, or neither.

OUT.json holds every profile (format protrnn-diagnostics, read by protrnn report); a table is printed.

examples:
  protrnn diagnose results/models/lstm results/models/rnn --data results/data/val.npz -o diag.json
  protrnn diagnose lstm=runs/lstm/model rnn=runs/rnn/model --data results/data/val.npz \\
      --train-data results/data/train.npz -o diag.json
  protrnn diagnose runs/lstm/model --data val.npz --train-metrics runs/lstm/logs/version_0/metrics.csv -o diag.json
"""

TRAIN_LOSS_KEYS = ("train/loss", "train/loss_epoch", "train_loss_epoch", "train_loss")
VAL_LOSS_KEYS = ("val/loss", "val_loss")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from protrnn.evaluation.diagnostics import FitThresholds

    t = FitThresholds()
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="[NAME=]PATH: exported model directory (model.json + model.safetensors) or a .ckpt")
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="validation chains: a prepared .npz (protrnn prepare) or structures/JSON/cgdms files "
                             "or a directory of them")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.json", help="diagnostics JSON (written atomically)")
    parser.add_argument("--max-distance", type=_positive_int, default=128, help="largest distance profiled (128)")
    parser.add_argument("--fraction", type=_fraction, default=0.01,
                        help="horizon threshold as a fraction of the peak sensitivity (0.01)")
    parser.add_argument("--smooth", type=_positive_int, default=5,
                        help="running-median window (measured distances) used by the horizon rule (5)")
    parser.add_argument("--n-chains", type=_positive_int, default=32,
                        help="chains measured, a seeded sample of --data (32)")
    parser.add_argument("--pairs-per-chain", type=_positive_int, default=8,
                        help="scored pairs per chain, spread over separations; one backward pass each (8)")
    parser.add_argument("--batch-size", type=_positive_int, default=8,
                        help="chains per forward pass (8); fewer when B x T^2 would pass 2^20 padded pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chain and pair sampling (0)")
    parser.add_argument("--no-hidden", action="store_true", help="skip the per-layer dL/dh_t profiles")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    group = parser.add_argument_group("fit diagnosis")
    group.add_argument("--train-data", metavar="TRAIN.npz",
                       help="training chains: train and validation losses are then both computed here, in eval mode")
    group.add_argument("--loss-chains", type=_positive_int, default=200,
                       help="chains (seeded sample) of --train-data and --data used for the losses (200)")
    group.add_argument("--train-metrics", nargs="+", metavar="CSV",
                       help="Lightning CSVLogger metrics.csv, one per MODEL in order: the last logged train and "
                            "validation losses are used (when --train-data is not given)")
    group.add_argument("--pos-weight", type=float,
                       help="weight of true contacts in the loss (default: the model's training pos_weight from "
                            "model.json / the checkpoint, else 1)")
    group.add_argument("--length-bins", type=_int_list, default=[64, 128, 256], metavar="E1,E2,...",
                       help="chain-length group starts for the loss-by-length evidence (64,128,256)")
    group.add_argument("--short-horizon", type=_positive_int, default=t.short_horizon,
                       help=f"horizon at or below which sensitivity 'collapses' ({t.short_horizon})")
    group.add_argument("--long-horizon", type=_positive_int, default=t.long_horizon,
                       help=f"horizon at or above which gradients 'carry far' ({t.long_horizon})")
    group.add_argument("--high-train-ratio", type=float, default=t.high_train_ratio,
                       help=f"train loss / constant-predictor loss at or above which it is high ({t.high_train_ratio})")
    group.add_argument("--low-train-ratio", type=float, default=t.low_train_ratio,
                       help=f"... at or below which it is low ({t.low_train_ratio})")
    group.add_argument("--overfit-gap", type=float, default=t.overfit_gap,
                       help=f"relative excess of validation over train loss that is 'notably worse' ({t.overfit_gap})")
    group.add_argument("--length-trend", type=float, default=t.length_trend,
                       help=f"relative rise of loss from shortest to longest group that is 'worse' ({t.length_trend})")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from protrnn.errors import InputError
    from protrnn.evaluation.diagnostics import (
        FitThresholds,
        constant_predictor_loss,
        contact_loss_by_length,
        contact_rate,
        diagnose_fit,
        gradient_flow,
        length_matched_losses,
        save_diagnostics,
        summarise,
    )
    from protrnn.model.predictor import resolve_device

    if args.train_metrics and len(args.train_metrics) != len(args.models):
        raise InputError(f"--train-metrics needs one file per model: {len(args.models)} model(s), "
                         f"{len(args.train_metrics)} file(s)")
    thresholds = FitThresholds(high_train_ratio=args.high_train_ratio, low_train_ratio=args.low_train_ratio,
                               overfit_gap=args.overfit_gap, length_trend=args.length_trend,
                               short_horizon=args.short_horizon, long_horizon=args.long_horizon)
    device = resolve_device(args.device)
    specs = [_model_spec(text) for text in args.models]
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise InputError(f"model names must be unique, got {', '.join(names)} (use NAME=PATH)")

    chains = read_chains(args.data)
    rng = np.random.default_rng(args.seed)
    measured = _sample(chains, args.n_chains, rng)
    loss_val = _sample(chains, args.loss_chains, np.random.default_rng(args.seed))
    loss_train = None
    if args.train_data:
        loss_train = _sample(read_chains(args.train_data), args.loss_chains, np.random.default_rng(args.seed))
    rate = contact_rate(loss_train if loss_train is not None else loss_val)

    results = []
    for index, (name, path) in enumerate(specs):
        model, meta = load_network(path)
        model.to(device)
        flow = gradient_flow(model, measured, max_distance=args.max_distance, pairs_per_chain=args.pairs_per_chain,
                             seed=args.seed, batch_size=args.batch_size, hidden=not args.no_hidden)
        result = summarise(flow, args.fraction, model=name, config=model.config.to_dict(), smooth=args.smooth)
        hparams = meta.get("training_hparams") or {}
        pos_weight = args.pos_weight if args.pos_weight is not None else float(hparams.get("pos_weight") or 1.0)
        focal = float(hparams.get("focal_gamma") or 0.0)
        val_eval = contact_loss_by_length(model, loss_val, pos_weight=pos_weight, length_edges=args.length_bins,
                                          batch_size=args.batch_size)
        metrics: dict[str, Any] = {"source": str(path), "pos_weight": pos_weight, "contact_rate": rate,
                                   "data_loss": val_eval.to_dict()}
        train_loss = val_loss = None
        if loss_train is not None:
            train_eval = contact_loss_by_length(model, loss_train, pos_weight=pos_weight,
                                                length_edges=args.length_bins, batch_size=args.batch_size)
            metrics["train_data_loss"] = train_eval.to_dict()
            train_loss, val_loss = length_matched_losses(train_eval, val_eval)
            metrics["loss_source"] = ("eval-mode loss on --train-data and --data, over the length groups both have, "
                                      "weighted by the --data pairs per group")
        elif args.train_metrics:
            train_loss, val_loss = read_last_losses(args.train_metrics[index])
            metrics["loss_source"] = f"last logged losses in {args.train_metrics[index]}"
        reference = None if focal > 0 else constant_predictor_loss(rate, pos_weight)
        metrics.update(train_loss=train_loss, val_loss=val_loss, reference_loss=reference)
        result.metrics = metrics
        result.diagnosis = diagnose_fit(train_loss, val_loss, result.horizon, max_distance=args.max_distance,
                                        reference_loss=reference, val_loss_by_length=val_eval.by_length,
                                        thresholds=thresholds)
        results.append(result)
        model.to("cpu")
    save_diagnostics(results, args.output)
    print_table(results, sys.stdout)
    print(f"wrote {args.output}")
    return 0


def _model_spec(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the directory, or the checkpoint's stem)."""
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name and path:
            return name, Path(path)
    path = Path(text)
    if path.suffix == ".ckpt":
        return path.stem, path
    resolved = path if path.is_dir() else path.parent
    return resolved.resolve().name or str(path), path


def load_network(path: Path) -> tuple[Any, dict[str, Any]]:
    """(ContactModel in eval mode, its metadata): see :func:`protrnn.model.io.load_network`."""
    from protrnn.model.io import load_network as load

    loaded = load(path)
    return loaded.network, loaded.metadata


def read_chains(path: str | Path) -> list[Any]:
    """Chains of a prepared ``.npz`` dataset, or of any input :func:`protrnn.data.sources.iter_chains` reads
    (inputs that fail are counted on stderr; none readable is an error)."""
    from protrnn.errors import InputError

    source = Path(path)
    if source.suffix == ".npz":
        from protrnn.data.dataset import load_dataset

        chains = list(load_dataset(source))
    else:
        from protrnn.data.sources import iter_chains

        chains, failed = [], 0
        for outcome in iter_chains(source):
            if outcome.ok:
                chains.append(outcome.chain)
            else:
                failed += 1
        if failed:
            print(f"protrnn diagnose: skipped {failed} unreadable input(s) in {source}", file=sys.stderr)
    if not chains:
        raise InputError("no chains to diagnose on", path=source)
    return chains


def _sample(chains: Sequence[Any], n: int, rng: Any) -> list[Any]:
    if n >= len(chains):
        return list(chains)
    return [chains[i] for i in sorted(rng.choice(len(chains), size=n, replace=False))]


def read_last_losses(path: str | Path) -> tuple[float | None, float | None]:
    """Last non-empty train and validation loss in a Lightning CSVLogger ``metrics.csv``."""
    from protrnn.errors import InputError, reading

    source = Path(path)
    try:
        with reading(source), open(source, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"unreadable metrics CSV ({exc})", path=source) from None
    columns = set(rows[0]) if rows else set()

    def last(keys: Sequence[str]) -> float | None:
        key = next((k for k in keys if k in columns), None)
        if key is None:
            return None
        for row in reversed(rows):
            text = (row.get(key) or "").strip()
            if text:
                try:
                    value = float(text)
                except ValueError:
                    raise InputError(f"non-numeric {key!r} value {text!r}", path=source) from None
                if math.isfinite(value):
                    return value
        return None

    train, val = last(TRAIN_LOSS_KEYS), last(VAL_LOSS_KEYS)
    if train is None and val is None:
        raise InputError(f"no train or validation loss column (looked for {', '.join(TRAIN_LOSS_KEYS + VAL_LOSS_KEYS)})",
                         path=source)
    return train, val


def print_table(results: Sequence[Any], stream: Any) -> None:
    """One line per model: horizon, sensitivity at a few distances, per-layer horizons and the diagnosis label."""
    def fmt_h(value: int | None, cap: int) -> str:
        return f">{cap}" if value is None else str(value)

    points = [d for d in (8, 16, 32, 64, 128) if results and d <= results[0].flow.max_distance]
    header = ["model", "horizon"] + [f"s@{d}" for d in points] + ["hidden horizons", "diagnosis"]
    rows = []
    for r in results:
        cap = r.flow.max_distance
        values = [r.flow.sensitivity.value_at(d) for d in points]
        rows.append([r.model, fmt_h(r.horizon, cap)]
                    + ["-" if not math.isfinite(v) else f"{v:.2g}" for v in values]
                    + [",".join(fmt_h(h, cap) for h in r.hidden_horizons) or "-",
                       r.diagnosis.label if r.diagnosis is not None else "-"])
    widths = [max(len(str(row[k])) for row in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=stream)
