"""``protrnn diagnose``: gradient flow versus sequence distance, effective horizon and fit diagnosis per model."""

from __future__ import annotations

import argparse

from protrnn.commands.args import (
    int_list,
    model_spec,
    non_negative_float,
    non_negative_int,
    non_negative_int_list,
    open_fraction,
    positive_float,
    positive_int,
    seed_int,
)
from protrnn.diagnostics.results import (
    DEFAULT_FRACTION,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_USAGE_DISTANCES,
    DEFAULT_USAGE_FRACTION,
    MAX_PROFILE_DISTANCE,
    FitThresholds,
)
from protrnn.errors import InputError

DESCRIPTION = """\
For each MODEL (an exported model directory, or a Lightning .ckpt written by protrnn train; an ensemble such as the
bundled model is diagnosed member by member, as NAME/member-K), sample scored pairs (i, j) of the --data chains,
back-propagate each pair's logit, and record

  * ||d logit_ij / d x_s|| (x = embedding output) versus d = min(|i - s|, |j - s|), and versus |i - s|;
  * ||dL/dh_t|| of every recurrent layer (L = the pair's training loss) versus min(|i - t|, |j - t|);
  * the effective horizon: the first distance from which on the median-smoothed sensitivity stays below
    --fraction x its peak (docs/diagnostics.md states the rule);
  * the usage horizon (Khandelwal et al. 2018): every residue farther than d from both i and j is replaced by
    draws from the background composition (the --train-data chains', else each chain's own), and the change of
    the pair's logit (and of long-range top-L/5 precision) is measured for every d of --usage-distances; with d
    the smallest radius beyond which the change stays below --usage-fraction x its value at the smallest d,
    noise floor included, the usage horizon is d + 1, the first distance no longer read (as the effective
    horizon counts: a model that reads only residues fewer than k away has both horizons k where radius k - 1
    is measured, else the usage horizon is the grid's upper bound; --no-usage skips it);
  * the loss on the --data chains by chain length and, with training losses (--train-data or --train-metrics),
    the fit diagnosis: under-fitting with vanishing gradients, over-fitting with long memory, or neither.

OUT.json holds every profile (format protrnn-diagnostics, read by protrnn report); a table is printed.

examples:
  protrnn diagnose results/models/lstm results/models/rnn --data results/data/val.npz -o diag.json
  protrnn diagnose lstm=runs/lstm/model rnn=runs/rnn/model --data results/data/val.npz \\
      --train-data results/data/train.npz -o diag.json
  protrnn diagnose runs/lstm/model --data val.npz --train-metrics runs/lstm/logs/version_0/metrics.csv -o diag.json
"""


def max_distance(text: str) -> int:
    """--max-distance: residues, 1 to :data:`MAX_PROFILE_DISTANCE`."""
    value = positive_int(text)
    if value > MAX_PROFILE_DISTANCE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PROFILE_DISTANCE} residues, got {text}")
    return value


def odd_window(text: str) -> int:
    """--smooth: a positive odd number of distances (a centred median window; an even one would be widened)."""
    value = positive_int(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd number (a window centred on each distance), got {text}")
    return value


def pool_factor(text: str) -> float:
    """--usage-pool-factor: a finite number above 1. The ablated pairs are re-ranked within the FACTOR x L/5 best
    intact ones, so with a pool of L/5 (FACTOR <= 1) the top L/5 is the pool itself and precision cannot change."""
    value = positive_float(text)
    if not value > 1.0:
        raise argparse.ArgumentTypeError(f"must be above 1 (the pool must hold more than the top L/5), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    t = FitThresholds()
    parser.add_argument("models", nargs="+", metavar="MODEL", type=model_spec,
                        help="[NAME=]PATH: exported model directory (model.json + model.safetensors), a .ckpt, or an "
                             "ensemble directory (each member diagnosed, as NAME/member-K)")
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="validation chains: a prepared .npz (protrnn prepare) or structures/JSON/cgdms files "
                             "or a directory of them")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.json", help="diagnostics JSON (written atomically)")
    parser.add_argument("--max-distance", type=max_distance, default=DEFAULT_MAX_DISTANCE,
                        help=f"largest distance profiled, at most {MAX_PROFILE_DISTANCE}; below --long-horizon a "
                             f"horizon beyond it cannot be called long ({DEFAULT_MAX_DISTANCE})")
    parser.add_argument("--fraction", type=open_fraction, default=DEFAULT_FRACTION,
                        help=f"horizon threshold as a fraction of the peak sensitivity ({DEFAULT_FRACTION})")
    parser.add_argument("--smooth", type=odd_window, default=5,
                        help="running-median window (an odd number of measured distances, at most --max-distance + 1) "
                             "used by the horizon rule (5)")
    parser.add_argument("--n-chains", type=positive_int, default=32,
                        help="chains measured, a seeded sample of --data (32)")
    parser.add_argument("--pairs-per-chain", type=positive_int, default=8,
                        help="scored pairs per chain, spread over separations; one backward pass each (8)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="chains per forward pass (8); fewer when B x T^2 would pass 2^20 padded pairs")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the chain and pair sampling, 0 to 2**63 - 1 (0)")
    parser.add_argument("--no-hidden", action="store_true", help="skip the per-layer dL/dh_t profiles")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    usage = parser.add_argument_group("usage horizon (context ablation)")
    usage.add_argument("--no-usage", action="store_true", help="skip the context-ablation measurement")
    usage.add_argument("--usage-distances", type=non_negative_int_list, default=list(DEFAULT_USAGE_DISTANCES),
                       metavar="D1,D2,...",
                       help="context radii d: residues farther than d from both i and j are replaced "
                            f"({','.join(map(str, DEFAULT_USAGE_DISTANCES))})")
    usage.add_argument("--usage-draws", type=positive_int, default=4,
                       help="background draws per pair (>= 2; two halves give the noise floor, scaled for an odd "
                            "count to the spread of equal halves) (4)")
    usage.add_argument("--usage-chains", type=positive_int, default=16,
                       help="chains measured, a seeded sample of --data (16)")
    usage.add_argument("--usage-pairs-per-chain", type=positive_int, default=8,
                       help="scored pairs per chain, spread over separations (8)")
    usage.add_argument("--usage-precision-chains", type=non_negative_int, default=4,
                       help="of those chains, how many also get long-range top-L/5 precision under ablation "
                            "(one forward pass per candidate pair, radius and draw; 0 = off) (4)")
    usage.add_argument("--usage-pool-factor", type=pool_factor, default=2.0,
                       help="precision: candidates re-ranked within the top FACTOR x L/5 intact pairs; above 1 (2)")
    usage.add_argument("--usage-fraction", type=open_fraction, default=DEFAULT_USAGE_FRACTION,
                       help=f"usage threshold as a fraction of the change at the smallest d ({DEFAULT_USAGE_FRACTION})")
    usage.add_argument("--usage-background", choices=("train", "chain"),
                       help="background composition: 'train' (the --train-data chains; the default when given) or "
                            "'chain' (each chain's own; the default otherwise)")
    group = parser.add_argument_group("fit diagnosis")
    group.add_argument("--train-data", metavar="TRAIN.npz",
                       help="training chains: train and validation losses are then both computed here, in eval mode")
    group.add_argument("--loss-chains", type=positive_int, default=200,
                       help="chains (seeded sample) of --train-data and --data used for the losses (200)")
    group.add_argument("--train-metrics", nargs="+", metavar="CSV",
                       help="Lightning CSVLogger metrics.csv, one per MODEL in order (an ensemble: one per member): "
                            "the last logged train and validation losses are used (when --train-data is not given)")
    group.add_argument("--pos-weight", type=positive_float,
                       help="weight of true contacts in the loss (default: the model's training pos_weight from "
                            "model.json / the checkpoint, else 1)")
    group.add_argument("--length-bins", type=int_list, default=[64, 128, 256], metavar="E1,E2,...",
                       help="chain-length group starts for the loss-by-length evidence (64,128,256)")
    group.add_argument("--short-horizon", type=positive_int, default=t.short_horizon,
                       help=f"horizon at or below which sensitivity 'collapses'; below --long-horizon "
                            f"({t.short_horizon})")
    group.add_argument("--long-horizon", type=positive_int, default=t.long_horizon,
                       help=f"horizon at or above which gradients 'carry far' ({t.long_horizon})")
    group.add_argument("--high-train-ratio", type=positive_float, default=t.high_train_ratio,
                       help=f"train loss / constant-predictor loss at or above which it is high ({t.high_train_ratio})")
    group.add_argument("--low-train-ratio", type=positive_float, default=t.low_train_ratio,
                       help=f"... at or below which it is low; below --high-train-ratio ({t.low_train_ratio})")
    group.add_argument("--high-train-loss", type=non_negative_float, default=None, metavar="LOSS",
                       help="absolute train loss at or above which it is high, used when no reference loss is known "
                            "(e.g. a focal loss); unset by default")
    group.add_argument("--low-train-loss", type=non_negative_float, default=None, metavar="LOSS",
                       help="... at or below which it is low (below --high-train-loss when both are set); unset by "
                            "default")
    group.add_argument("--overfit-gap", type=non_negative_float, default=t.overfit_gap,
                       help=f"relative excess of validation over train loss that is 'notably worse' ({t.overfit_gap})")
    group.add_argument("--length-trend", type=non_negative_float, default=t.length_trend,
                       help=f"relative rise of loss from shortest to longest group that is 'worse' ({t.length_trend})")


def check_options(args: argparse.Namespace) -> None:
    """What the argument types cannot check alone: options that must agree with each other."""
    if args.short_horizon >= args.long_horizon:
        raise InputError(f"--short-horizon ({args.short_horizon}) must be below --long-horizon ({args.long_horizon})")
    if args.low_train_ratio >= args.high_train_ratio:
        raise InputError(f"--low-train-ratio ({args.low_train_ratio:g}) must be below --high-train-ratio "
                         f"({args.high_train_ratio:g})")
    if (args.low_train_loss is not None and args.high_train_loss is not None
            and args.low_train_loss >= args.high_train_loss):
        raise InputError(f"--low-train-loss ({args.low_train_loss:g}) must be below --high-train-loss "
                         f"({args.high_train_loss:g})")
    if args.smooth > args.max_distance + 1:
        raise InputError(f"--smooth {args.smooth} is wider than the profile (--max-distance {args.max_distance}: "
                         f"{args.max_distance + 1} distances)")
    if not args.no_usage and args.usage_draws < 2:
        raise InputError(f"--usage-draws must be at least 2 (two halves give the noise floor), got {args.usage_draws}")


def run(args: argparse.Namespace) -> int:
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose

    check_options(args)
    thresholds = FitThresholds(high_train_ratio=args.high_train_ratio, low_train_ratio=args.low_train_ratio,
                               high_train_loss=args.high_train_loss, low_train_loss=args.low_train_loss,
                               overfit_gap=args.overfit_gap, length_trend=args.length_trend,
                               short_horizon=args.short_horizon, long_horizon=args.long_horizon)
    options = DiagnoseOptions(max_distance=args.max_distance, fraction=args.fraction, smooth=args.smooth,
                              n_chains=args.n_chains, pairs_per_chain=args.pairs_per_chain,
                              batch_size=args.batch_size, seed=args.seed, hidden=not args.no_hidden,
                              device=args.device, train_data=args.train_data, loss_chains=args.loss_chains,
                              train_metrics=args.train_metrics, pos_weight=args.pos_weight,
                              length_bins=args.length_bins, thresholds=thresholds, usage=not args.no_usage,
                              usage_distances=args.usage_distances, usage_draws=args.usage_draws,
                              usage_chains=args.usage_chains, usage_pairs_per_chain=args.usage_pairs_per_chain,
                              usage_precision_chains=args.usage_precision_chains,
                              usage_pool_factor=args.usage_pool_factor, usage_fraction=args.usage_fraction,
                              usage_background=args.usage_background)
    diagnose(args.models, args.data, args.output, options)
    return 0
