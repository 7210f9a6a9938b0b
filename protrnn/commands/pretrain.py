"""``protrnn pretrain``: structure-aware pretraining of the recurrent encoder (docs/pretraining.md).

Three actions: ``prepare`` (sidechainnet DSSP labels -> cluster-split datasets, :mod:`protrnn.data.sidechainnet`),
``fit`` (LightningCLI over :mod:`protrnn.training.pretrain`, the conventions of ``protrnn train``) and ``export``
(a pretraining checkpoint -> ``encoder.safetensors`` + ``encoder.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from protrnn.commands.args import default_cache_dir, fraction, open_fraction, positive_int
from protrnn.errors import InputError

HELP = "Pretrain the recurrent encoder on secondary structure and masked residues (sidechainnet DSSP labels)."
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
>= --identity to any --test-set chain over >= --coverage of the test chain removed (mmseqs2, else the logged
fallback of protrnn.data.splits, which is meant for --max-chains subsets); the rest clustered at --identity and split
into train/val by cluster (--val-fraction).

outputs in OUTDIR: train.npz, val.npz (tokens + 8-state labels + masks), records.tsv (every record: status,
reason, representative, split, cluster), leakage.tsv (removed chains and the test chain each hit), manifest.json
(parameters and counts: records read, duplicates collapsed, removed per test set, clusters, residues used).

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
    prepare.add_argument("--min-length", type=positive_int, default=20, metavar="N",
                         help="skip chains shorter than N residues (default 20)")
    prepare.add_argument("--max-length", type=positive_int, default=1000, metavar="N",
                         help="skip chains longer than N residues (default 1000; training crops anyway)")
    prepare.add_argument("--max-chains", type=positive_int, metavar="N",
                         help="keep a seeded random sample of at most N distinct sequences (short runs)")
    prepare.add_argument("--val-fraction", type=open_fraction, default=0.02, metavar="F",
                         help="fraction of chains, by whole clusters, in val.npz (default 0.02)")
    prepare.add_argument("--identity", type=fraction, default=0.3, metavar="F",
                         help="identity for clustering and leakage removal (default 0.3)")
    prepare.add_argument("--coverage", type=fraction, default=0.5, metavar="F",
                         help="alignment coverage: of both sequences for clustering, of the test chain for "
                              "leakage (default 0.5)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of --max-chains and the split (default 0)")
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
    from protrnn.commands.prepare import _parse_test_sets
    from protrnn.data.sidechainnet import fetch_sidechainnet, prepare_structure_labels, summary_text

    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    source = Path(args.source) if args.source else fetch_sidechainnet(args.cache_dir)
    recorded = {key: value if isinstance(value, (bool, int, float, type(None))) else
                [str(v) for v in value] if isinstance(value, list) else str(value)
                for key, value in vars(args).items() if not key.startswith("_")}
    result = prepare_structure_labels(source, args.outdir, test_sets=_parse_test_sets(args.test_set), subsets=subsets,
                                      min_length=args.min_length, max_length=args.max_length,
                                      max_chains=args.max_chains, val_fraction=args.val_fraction,
                                      identity=args.identity, coverage=args.coverage, seed=args.seed,
                                      threads=args.threads, arguments=recorded)
    print(summary_text(result))
    if result.manifest["splits"]["train"]["chains"] == 0:
        raise InputError("no training chain left (see records.tsv)", path=args.outdir)
    return 0


def _export(args: argparse.Namespace) -> int:
    from protrnn.training.pretrain import export_pretrained_checkpoint

    path = export_pretrained_checkpoint(args.checkpoint, args.outdir, extra={"exported_by": "protrnn pretrain export"})
    print(f"protrnn: exported {args.checkpoint} to {path.parent}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------------ fit
def _build_cli_class() -> type:
    """The LightningCLI of ``protrnn pretrain fit`` (built lazily: ``protrnn --help`` does not import Lightning)."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from protrnn.commands.train import _auto_precision, _dump_config, _next_version
    from protrnn.training.pretrain import (
        PRETRAIN_MONITOR,
        ExportPretrainedOnFitEnd,
        PretrainLightningModule,
        ResidueThroughput,
        StructureLabelDataModule,
    )

    class PretrainCLI(LightningCLI):
        """LightningCLI with protrnn's run directory, loggers, checkpoints, precision, throughput and export."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="Resume from this checkpoint; 'last' = the run directory's last.ckpt.")
            parser.add_argument("--export_dir", type=str | None, default=None,
                                help="Where to export the encoder (default: trainer.default_root_dir).")
            parser.add_argument("--num_threads", type=int | None, default=None,
                                help="torch intra-op CPU threads (default: torch's choice).")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({
                "checkpoint.monitor": PRETRAIN_MONITOR, "checkpoint.mode": "min", "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True, "checkpoint.filename": "best-epoch{epoch:03d}-step{step:06d}",
                "checkpoint.auto_insert_metric_name": False, "checkpoint.enable_version_counter": False,
            })

        def before_instantiate_classes(self) -> None:
            trainer = self.config.trainer
            if trainer.get("use_distributed_sampler"):
                raise InputError("config key 'trainer.use_distributed_sampler' must be false: the token-budget "
                                 "batch sampler shards the data across DDP ranks itself")
            if trainer.get("precision") is None:
                trainer.precision = _auto_precision(trainer.get("accelerator", "auto"))
            root = Path(trainer.get("default_root_dir") or "runs/pretrain")
            trainer.default_root_dir = str(root)
            if self.config.checkpoint.get("dirpath") is None:
                self.config.checkpoint.dirpath = str(root / "checkpoints")
            threads = self.config.get("num_threads")
            if threads is not None:
                if threads < 1:
                    raise InputError(f"config key 'num_threads': must be a positive integer or null, got {threads}")
                import torch

                torch.set_num_threads(threads)
            if self.config.get("export_dir") is None:
                self.config.export_dir = str(root)

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
            root = Path(config["default_root_dir"])
            if config.get("logger") in (None, True):
                version = _next_version(root)
                config["logger"] = [CSVLogger(str(root), name="logs", version=version),
                                    TensorBoardLogger(str(root), name="logs", version=version,
                                                      default_hp_metric=False)]
            callbacks = [self._get(self.config_init, key) for key in self.parser.callback_keys]
            training_config = yaml.safe_load(_dump_config(self.parser, self.config))
            callbacks += [ResidueThroughput(),
                          ExportPretrainedOnFitEnd(self.config.export_dir, extra={"training_config": training_config})]
            return self._instantiate_trainer(config, callbacks)

    PretrainCLI.model_class_default = PretrainLightningModule
    PretrainCLI.datamodule_class_default = StructureLabelDataModule
    return PretrainCLI


def build_cli(argv: list[str]) -> Any:
    """Parse ``argv`` of ``protrnn pretrain fit`` and instantiate model, data and trainer (no training)."""
    from jsonargparse import ArgumentError

    from protrnn.commands.train import CONFIG_DIR, _one_line

    cli_class = _build_cli_class()
    trainer_defaults = {"use_distributed_sampler": False, "gradient_clip_val": 1.0, "max_epochs": 1,
                        "log_every_n_steps": 10, "default_root_dir": "runs/pretrain", "precision": None}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        try:
            return cli_class(cli_class.model_class_default, cli_class.datamodule_class_default, run=False,
                             args=argv, seed_everything_default=0, trainer_defaults=trainer_defaults,
                             auto_configure_optimizers=False, save_config_kwargs={"overwrite": True},
                             parser_kwargs={"exit_on_error": False, "prog": "protrnn pretrain fit",
                                            "default_config_files": [str(CONFIG_DIR / "pretrain.yaml")],
                                            "description": "Pretrain the recurrent encoder (docs/pretraining.md); "
                                                           "--config pretrain is the bundled recipe."})
        except ArgumentError as exc:
            raise InputError(_one_line(exc)) from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"invalid configuration: {_one_line(exc)}") from None


def fit_main(argv: list[str]) -> int:
    """``protrnn pretrain fit``: returns the exit status (a diverging run: 1)."""
    from protrnn.commands.train import EXIT_DIVERGED, resolve_config_args
    from protrnn.training.module import TrainingDiverged

    cli = build_cli(resolve_config_args(list(argv)))
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    except TrainingDiverged as exc:
        print(f"protrnn: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    if cli.trainer.is_global_zero:
        for callback in cli.trainer.callbacks:
            exported = getattr(callback, "exported", None)
            if exported is not None:
                with contextlib.suppress(OSError):
                    print(f"protrnn: exported the pretrained encoder to {Path(exported).parent}", file=sys.stderr)
    return 0
