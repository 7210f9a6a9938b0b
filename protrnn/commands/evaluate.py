"""``protrnn evaluate``: arguments of :func:`protrnn.evaluation.evaluate.run_evaluation` (models and baselines on
prepared test sets -> per-protein CSV + JSON summary with CIs), which it then calls."""

from __future__ import annotations

import argparse
import shlex

from protrnn.commands.args import named_paths, non_negative_int, positive_int, seed_int

DESCRIPTION = """\
Score exported models (and/or baselines) on prepared test sets with the CASP conventions of
protrnn.evaluation.metrics: top-L/k precision per separation range and bin, AUPR, F1 and MCC.

OUTDIR gets per_protein.csv (method, test_set, protein, L, every metric), summary.json (per method and test set:
mean over proteins, n, bootstrap confidence interval over proteins; plus the command, model.json paths and any
leakage prepare removed, read from leakage.tsv / manifest.tsv beside the test set) and, with --save-predictions N,
predictions/<method>/<test set>/<protein>.npz for the first N proteins (for report contact maps).

examples:
  protrnn evaluate --model lstm=results/models/lstm --test-set ts50=results/data/test_ts50.npz -o eval/lstm
  protrnn evaluate --baselines random,separation,propensity --train results/data/train.npz \\
      --test-set ts50=results/data/test_ts50.npz -o eval/baselines
  protrnn evaluate --baselines freecontact --ollikainen-root ollikainen40 \\
      --test-set olk40=results/data/test_ollikainen40.npz -o eval/freecontact
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from protrnn.evaluation.metrics import BOOTSTRAP_RESAMPLES

    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="exported model directory (model.json + model.safetensors), ensemble directory "
                             "(`protrnn ensemble`) or Lightning .ckpt; repeat for several models")
    parser.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH.npz",
                        help="prepared test set (.npz from `protrnn prepare`); repeat for several sets")
    parser.add_argument("--baselines", metavar="LIST",
                        help="comma-separated: random, separation, propensity, freecontact")
    parser.add_argument("--train", metavar="TRAIN.npz",
                        help="training split; separation and propensity baselines are fitted on it")
    parser.add_argument("--ollikainen-root", metavar="DIR|TAR",
                        help="Ollikainen-40 folder (alignments + column maps) for the freecontact baseline, or the "
                             "ollikainen40_pdb_msa_indices.tar.gz it comes in")
    parser.add_argument("--save-predictions", type=non_negative_int, default=0, metavar="N",
                        help="keep predicted and true maps of the first N proteins per method and test set")
    parser.add_argument("--bins", metavar="LIST",
                        help="separation bins of the bin/... precision keys, inclusive, e.g. 6-11,12-23,24+ "
                             "(default 6-11,12-23,24-47,48-95,96+)")
    parser.add_argument("--bootstrap", type=positive_int, default=BOOTSTRAP_RESAMPLES, metavar="N",
                        help=f"bootstrap resamples of proteins for confidence intervals (default {BOOTSTRAP_RESAMPLES})")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the bootstrap and the random baseline")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output directory (created)")


def command_line(args: argparse.Namespace) -> str:
    """The equivalent command, rebuilt from the parsed arguments (recorded in summary.json)."""
    parts = ["protrnn", "evaluate"]
    parts += [item for value in args.model for item in ("--model", value)]
    parts += [item for value in args.test_set for item in ("--test-set", value)]
    for option, value in (("--baselines", args.baselines), ("--train", args.train),
                          ("--ollikainen-root", args.ollikainen_root), ("--bins", args.bins)):
        if value:
            parts += [option, value]
    parts += ["--save-predictions", str(args.save_predictions), "--bootstrap", str(args.bootstrap),
              "--seed", str(args.seed), "--device", args.device, "-o", args.outdir]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from protrnn.evaluation.evaluate import (
        parse_baselines,
        parse_bins,
        run_evaluation,
    )
    from protrnn.evaluation.results import PER_PROTEIN_FILE, SUMMARY_FILE
    from protrnn.utils.io import stderr_log

    models = named_paths(args.model, "--model", bare=True)
    tests = named_paths(args.test_set, "--test-set", bare=True)
    result = run_evaluation(models, tests, args.outdir, baselines=parse_baselines(args.baselines),
                            bins=parse_bins(args.bins),
                            train_path=args.train, ollikainen_root=args.ollikainen_root, device=args.device,
                            n_boot=args.bootstrap, seed=args.seed, save_predictions=args.save_predictions,
                            command=command_line(args), log=stderr_log)
    stderr_log(f"protrnn evaluate: {len(result.rows)} protein scores; wrote {result.outdir / PER_PROTEIN_FILE} "
               f"and {result.outdir / SUMMARY_FILE}")
    return 0
