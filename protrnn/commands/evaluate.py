"""``protrnn evaluate``: models and baselines on prepared test sets -> per-protein CSV + JSON summary with CIs."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import tarfile
import tempfile
from pathlib import Path

HELP = "Evaluate a model and baselines on prepared test sets: per-protein CSV + JSON summary."
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


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="exported model directory (model.json + model.safetensors) or Lightning .ckpt; "
                             "repeat for several models")
    parser.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH.npz",
                        help="prepared test set (.npz from `protrnn prepare`); repeat for several sets")
    parser.add_argument("--baselines", metavar="LIST",
                        help="comma-separated: random, separation, propensity, freecontact")
    parser.add_argument("--train", metavar="TRAIN.npz",
                        help="training split; separation and propensity baselines are fitted on it")
    parser.add_argument("--ollikainen-root", metavar="DIR|TAR",
                        help="Ollikainen-40 folder (alignments + column maps) for the freecontact baseline, or the "
                             "ollikainen40_pdb_msa_indices.tar.gz it comes in")
    parser.add_argument("--save-predictions", type=_non_negative_int, default=0, metavar="N",
                        help="keep predicted and true maps of the first N proteins per method and test set")
    parser.add_argument("--bins", metavar="LIST",
                        help="separation bins of the bin/... precision keys, inclusive, e.g. 6-11,12-23,24+ "
                             "(default 6-11,12-23,24-47,48-95,96+)")
    parser.add_argument("--bootstrap", type=_positive_int, default=1000, metavar="N",
                        help="bootstrap resamples of proteins for confidence intervals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the random baseline")
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


def _extract_tarball(archive: Path, into: Path) -> Path:
    """Unpack an Ollikainen-40 tarball (``ollikainen40_pdb_msa_indices.tar.gz``) safely into ``into``."""
    from protrnn.errors import InputError

    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")  # no absolute paths, links out of the tree or device files
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"--ollikainen-root: not a readable tar archive ({exc})", path=archive) from None
    return into


def run(args: argparse.Namespace) -> int:
    from protrnn.errors import InputError
    from protrnn.evaluation.evaluate import (
        ModelMethod,
        build_baselines,
        evaluate,
        load_test_set,
        parse_baselines,
        parse_bins,
        parse_named_paths,
        stderr_log,
    )

    models = parse_named_paths(args.model, "--model")
    tests = parse_named_paths(args.test_set, "--test-set")
    baselines = parse_baselines(args.baselines)
    bins = parse_bins(args.bins)
    if not models and not baselines:
        raise InputError("nothing to evaluate: give --model NAME=PATH and/or --baselines LIST")
    if not tests:
        raise InputError("no test set: give --test-set NAME=PATH.npz")
    clash = set(models) & set(baselines)
    if clash:
        raise InputError(f"--model name {sorted(clash)[0]!r} is also a baseline name; rename the model")
    test_sets = [load_test_set(name, path) for name, path in tests.items()]
    methods = [ModelMethod(name, path, device=args.device) for name, path in models.items()]
    with contextlib.ExitStack() as stack:
        root = args.ollikainen_root
        if root and Path(root).is_file():  # the shipped tarball: unpacked for this run only
            root = _extract_tarball(Path(root), Path(stack.enter_context(tempfile.TemporaryDirectory())))
        baseline_methods, skipped = build_baselines(baselines, train_path=args.train, ollikainen_root=root,
                                                    seed=args.seed, log=stderr_log)
        methods += baseline_methods
        if not methods:
            raise InputError("every requested method was skipped (see the messages above)")
        result = evaluate(methods, test_sets, args.outdir, n_boot=args.bootstrap, seed=args.seed,
                          save_predictions=args.save_predictions, bins=bins, command=command_line(args),
                          skipped_methods=skipped, log=stderr_log)
    stderr_log(f"protrnn evaluate: {len(result.rows)} protein scores; wrote {result.outdir / 'per_protein.csv'} "
               f"and {result.outdir / 'summary.json'}")
    return 0
