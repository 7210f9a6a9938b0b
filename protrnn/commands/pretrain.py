"""``protrnn pretrain``: structure-aware pretraining of the recurrent encoder (docs/pretraining.md).

Three actions: ``prepare`` (sidechainnet DSSP labels -> cluster-split datasets, :mod:`protrnn.data.sidechainnet`),
``fit`` (LightningCLI over :mod:`protrnn.training.pretrain`, the conventions of ``protrnn train``) and ``export``
(a pretraining checkpoint -> ``encoder.safetensors`` + ``encoder.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from protrnn.commands.args import (
    default_cache_dir,
    fraction,
    name_list,
    open_fraction,
    positive_int,
    seed_int,
)
from protrnn.conventions import (
    DEFAULT_COVERAGE,
    DEFAULT_LABEL_VAL_FRACTION,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_LENGTH,
    DEFAULT_MIN_SEQ_ID,
)
from protrnn.errors import InputError

#: The records table of a prepare run that kept no chain to train on, written instead of every other output (so an
#: earlier run's datasets stay as they were; the twin of ``protrnn prepare``'s manifest.failed.tsv); a later run that
#: succeeds removes it.
FAILED_RECORDS_FILE = "records.failed.tsv"

DESCRIPTION = """\
Structure-aware pretraining of the recurrent encoder, then `protrnn train` from it (docs/pretraining.md).

  protrnn pretrain prepare [SOURCE] -o DIR --test-set NAME=PATH ...
      SOURCE: the sidechainnet==1.0.1 wheel, its extracted resources folder or an annotation JSON; default: the
      wheel, downloaded once into --cache-dir. Writes DIR/train.npz, val.npz, records.tsv, leakage.tsv and
      manifest.json (counts). See `protrnn pretrain prepare --help`.
  protrnn pretrain fit --config pretrain [--data.train_path DIR/train.npz ...] [Lightning options]
      LightningCLI, as `protrnn train`: --trainer.max_time 00:00:15:00, --model.ss_weight 0, --print_config,
      --ckpt_path last. Exports the best checkpoint as encoder.safetensors + encoder.json into the run directory.
  protrnn pretrain export CKPT -o DIR
      Export a pretraining checkpoint (e.g. of an interrupted run) as encoder.safetensors + encoder.json.

Then: protrnn train --config default --trainer.callbacks+=protrnn.training.finetune.PretrainedEncoder
      --trainer.callbacks.path RUN_DIR --trainer.callbacks.freeze_steps 200 ...
"""
PREPARE_DESCRIPTION = """\
Read 8-state DSSP annotations from the sidechainnet wheel and write pretraining datasets.

steps: records are read (unreadable ones skipped with a reason); identical sequences collapsed (labels: per-residue
majority vote); chains outside --min-length/--max-length skipped; --max-chains keeps a seeded sample; chains at
>= --identity to any --test-set chain over >= --coverage of either chain removed (a longer chain holding a test
domain, or a fragment or domain of a test chain; of the test chain alone until 2026-12-07; searched in both directions,
and the chains against the test chains once more with --exhaustive-search; mmseqs2, else the logged
fallback of protrnn.data.splits, which is meant for --max-chains subsets); the rest clustered at --identity and split
into train/val by cluster (--val-fraction).

outputs in OUTDIR: train.npz, val.npz (tokens + 8-state labels + masks), records.tsv (every record: status,
reason, representative, split, cluster), leakage.tsv (removed chains and the test chain each hit), manifest.json
(parameters and counts: records read, duplicates collapsed, removed per test set, clusters, residues used).
A run that keeps no chain for train.npz exits 2 and writes only records.failed.tsv (every record's reason), leaving an
earlier run's outputs as they were; an empty val.npz is written with a warning (as `protrnn prepare` does), and
`protrnn pretrain fit` refuses it.

example:
  protrnn pretrain prepare -o data/pretrain --max-chains 8000 --threads 2 \\
      --test-set ts50=../shared/data/ts50_gvp/ts50.json.gz \\
      --test-set psicov150=../shared/data/psicov150_gremlin_rf/psicov150_org_pdb.tar.gz \\
      --test-set ollikainen40=../shared/data/ollikainen40_covariation/ollikainen40_pdb_msa_indices.tar.gz
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    prepare = actions.add_parser("prepare", help="sidechainnet DSSP labels -> train/val datasets",
                                 description=PREPARE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    prepare.add_argument("source", nargs="?", metavar="SOURCE",
                         help="sidechainnet wheel, extracted resources folder or annotation JSON (default: the wheel "
                              "in --cache-dir, downloaded once)")
    prepare.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output directory (created)")
    prepare.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH",
                         help="test set whose homologues are removed (any input protrnn prepare reads); repeatable")
    prepare.add_argument("--subsets", default="full", metavar="LIST",
                         help="annotation files to read: full, single_domain or full,single_domain (default full)")
    prepare.add_argument("--min-length", type=positive_int, default=DEFAULT_MIN_LENGTH, metavar="N",
                         help=f"skip chains shorter than N residues (default {DEFAULT_MIN_LENGTH})")
    prepare.add_argument("--max-length", type=positive_int, default=DEFAULT_MAX_LENGTH, metavar="N",
                         help=f"skip chains longer than N residues (default {DEFAULT_MAX_LENGTH}; training "
                              "crops anyway)")
    prepare.add_argument("--max-chains", type=positive_int, metavar="N",
                         help="keep a seeded random sample of at most N distinct sequences (short runs)")
    prepare.add_argument("--val-fraction", type=open_fraction, default=DEFAULT_LABEL_VAL_FRACTION,
                         metavar="F", help="fraction of chains, by whole clusters, in val.npz "
                                           f"(default {DEFAULT_LABEL_VAL_FRACTION})")
    prepare.add_argument("--identity", type=fraction, default=DEFAULT_MIN_SEQ_ID, metavar="F",
                         help=f"identity for clustering and leakage removal (default {DEFAULT_MIN_SEQ_ID})")
    prepare.add_argument("--coverage", type=fraction, default=DEFAULT_COVERAGE, metavar="F",
                         help="alignment coverage: of both sequences for clustering, of either chain for "
                              f"leakage (default {DEFAULT_COVERAGE})")
    prepare.add_argument("--seed", type=seed_int, default=0, help="seed of --max-chains and the split (default 0)")
    prepare.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                         help="mmseqs2 threads (default: all cores)")
    prepare.add_argument("--cache-dir", type=Path, default=default_cache_dir(), metavar="DIR",
                         help=f"where the downloaded wheel is kept (default {default_cache_dir()})")
    prepare.set_defaults(_action=_prepare)

    # LightningCLI parses the options of `fit`: this parser must not know any (hence the prefix character '+').
    fit = actions.add_parser("fit", help="pretrain with Lightning (LightningCLI options; --help lists them)",
                             add_help=False, prefix_chars="+")
    fit.add_argument("lightning_args", nargs=argparse.REMAINDER)
    fit.set_defaults(_action=lambda args: fit_main(args.lightning_args))

    export = actions.add_parser("export", help="pretraining checkpoint -> encoder.safetensors + encoder.json")
    export.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by protrnn pretrain fit")
    export.add_argument("-o", "--outdir", required=True, metavar="DIR", help="output directory (created)")
    export.set_defaults(_action=_export)


def run(args: argparse.Namespace) -> int:
    return int(args._action(args) or 0)


def _prepare(args: argparse.Namespace) -> int:
    """Run :func:`~protrnn.data.sidechainnet.prepare_structure_labels` in a staging folder inside OUTDIR and move its
    outputs into OUTDIR only when the run has chains to train on; a run without writes only
    :data:`FAILED_RECORDS_FILE` (every record's reason), so an earlier run's outputs stay as they were (the rule of
    ``protrnn prepare``, :mod:`protrnn.data.prepare`). A successful run removes an earlier failed run's table."""
    from protrnn.commands.args import named_paths, recorded_arguments
    from protrnn.data.prepare import reason_kind
    from protrnn.data.sidechainnet import (
        RECORDS_FILE,
        fetch_sidechainnet,
        prepare_structure_labels,
        summary_text,
    )

    subsets = name_list(args.subsets)
    source = Path(args.source) if args.source else fetch_sidechainnet(args.cache_dir)
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError("the output folder is a file", path=outdir)
    # The staging folder goes inside OUTDIR, so that the outputs move into place on one file system (OUTDIR may be a
    # mount point or a link to another disk, where a rename from beside it fails after the whole run).
    outdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", suffix=".part", dir=outdir))
    try:
        result = prepare_structure_labels(source, staging, test_sets=named_paths(args.test_set, "--test-set"),
                                          subsets=subsets,
                                          min_length=args.min_length, max_length=args.max_length,
                                          max_chains=args.max_chains, val_fraction=args.val_fraction,
                                          identity=args.identity, coverage=args.coverage, seed=args.seed,
                                          threads=args.threads, arguments=recorded_arguments(args))
        if result.manifest["splits"]["train"]["chains"] == 0:
            os.replace(staging / RECORDS_FILE, outdir / FAILED_RECORDS_FILE)
            reasons = Counter(reason_kind(e.reason) for e in result.entries if e.status in ("skipped", "removed"))
            common = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
            raise InputError(f"no training chain left ({result.manifest['counts']['records_read']} records read, "
                             f"{sum(reasons.values())} skipped or removed{': ' + common if common else ''}); every "
                             f"record's reason is in {FAILED_RECORDS_FILE}, and nothing else was written",
                             path=outdir)
        for name in result.manifest["outputs"]:  # manifest.json last: it lists the others
            os.replace(staging / name, outdir / name)
        (outdir / FAILED_RECORDS_FILE).unlink(missing_ok=True)  # a failed run's, now out of date
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(summary_text(dataclasses.replace(result, outdir=outdir,
                                           datasets={k: outdir / p.name for k, p in result.datasets.items()})))
    return 0


def _export(args: argparse.Namespace) -> int:
    from protrnn.model.io import load_checkpoint
    from protrnn.training.callbacks import training_config_record
    from protrnn.training.pretrain import export_pretrained_checkpoint

    # the run's resolved config, as the export at the end of `pretrain fit` records it
    record = training_config_record(load_checkpoint(args.checkpoint), args.checkpoint)
    path = export_pretrained_checkpoint(args.checkpoint, args.outdir,
                                        extra={"exported_by": "protrnn pretrain export", **record})
    print(f"protrnn: exported {args.checkpoint} to {path.parent}", file=sys.stderr)
    return 0


def fit_main(argv: list[str]) -> int:
    """``protrnn pretrain fit``: LightningCLI over :mod:`protrnn.training.pretrain` (:data:`protrnn.training.cli.PRETRAIN`);
    returns the exit status (a diverging run: 1; stopped by SIGTERM: 143, by Ctrl-C: 130)."""
    from protrnn.training.cli import PRETRAIN, run_fit

    return run_fit(PRETRAIN, argv)
