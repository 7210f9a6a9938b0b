"""``protrnn train``: LightningCLI over ContactLightningModule + ContactDataModule, with protrnn's defaults.

Lightning's conventions hold: ``--config FILE`` (or the name of a bundled config: ``--config lstm``),
``--trainer.max_epochs 5``, ``--model.model.cell gru``, ``--data.crop_length 256``, ``--print_config``, and
``--ckpt_path last|PATH`` to resume. protrnn adds:

* a run directory ``trainer.default_root_dir`` holding ``checkpoints/`` (best + last), ``logs/version_N/``
  (CSV + TensorBoard + the resolved ``config.yaml``) and, at the end, the exported best model
  (``model.safetensors`` + ``model.json``; ``--export_dir`` puts it elsewhere);
* ``trainer.precision`` chosen per device when not given: ``bf16-mixed`` on a GPU and on a CPU with native bf16
  (AVX512-BF16 / AMX), ``32-true`` elsewhere;
* glibc's malloc tuned for PyTorch on CPU (``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_``; see docs/training.md):
  when they are unset, the process re-executes itself once with them, because glibc reads them only at start-up;
* one-line errors: invalid config values exit with status 2 naming the key, a diverging run with status 1.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from protrnn.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
#: glibc malloc settings that keep freed activation memory in the process instead of returning it to the OS on
#: every step (measured on 2 CPU cores: see docs/training.md).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
EXIT_DIVERGED = 1


def bundled_configs() -> list[str]:
    """Names accepted by ``--config NAME`` (the YAML files shipped in protrnn/configs)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_args(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` / ``-c NAME`` / ``--config=NAME`` by the bundled file when NAME is not a path."""
    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value:
            out.append(_config_path(arg))
            expect_value = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            expect_value = True
        elif arg.startswith("--config="):
            out.append("--config=" + _config_path(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def _config_path(value: str) -> str:
    if Path(value).exists() or "/" in value or os.sep in value or value.endswith((".yaml", ".yml", ".json")):
        if not Path(value).is_file():
            raise InputError(f"--config: file not found (bundled configs: {', '.join(bundled_configs())})",
                             path=value)
        return value
    candidate = CONFIG_DIR / f"{value}.yaml"
    if not candidate.is_file():
        raise InputError(f"--config: no bundled config named {value!r} and no such file "
                         f"(bundled: {', '.join(bundled_configs())})")
    return str(candidate)


def _maybe_reexec_with_malloc_env(argv: list[str]) -> None:
    """Re-execute this process once with the glibc malloc settings, when they are unset and we are the program.

    Only when the process was started as ``protrnn train ...`` (so a library caller or a test calling :func:`main`
    is never replaced), on Linux with glibc. Variables the user set (to anything) are kept; ``PROTRNN_MALLOC_TUNING=0``
    turns the re-execution off. DDP workers inherit the environment and do not re-execute.
    """
    if os.environ.get("PROTRNN_MALLOC_TUNING", "1") == "0":
        return
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    missing = {key: value for key, value in MALLOC_ENV.items() if key not in os.environ}
    if not missing or list(sys.argv[1:]) != ["train", *argv]:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **missing})


def _next_version(root: Path) -> int:
    versions = [int(m.group(1)) for p in (root / "logs").glob("version_*")
                if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions, default=-1) + 1


def _auto_precision(accelerator: Any) -> str:
    """What ``trainer.precision: null`` (auto) becomes: ``bf16-mixed`` on a CUDA GPU (``16-mixed`` where bf16 is
    unsupported) and on a CPU that multiplies bf16 natively (AVX512-BF16 or AMX-BF16, see
    :func:`protrnn.model.contact_model.bf16_is_native`), ``32-true`` elsewhere (other CPUs emulate bf16, which is
    slower than float32; Apple MPS). An explicit ``trainer.precision`` always wins."""
    import torch

    from protrnn.model.contact_model import bf16_is_native

    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    on_cpu = name in ("cpu", "cpuaccelerator")
    if name in ("mps", "mpsaccelerator") or (name == "auto" and torch.backends.mps.is_available()):
        return "32-true"
    if not on_cpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if bf16_is_native("cpu") else "32-true"


def _build_cli_class() -> type:
    """The LightningCLI subclass (built lazily so ``protrnn --help`` does not import Lightning)."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from protrnn.training.callbacks import ExportOnFitEnd
    from protrnn.training.datamodule import ContactDataModule
    from protrnn.training.module import DEFAULT_MONITOR, ContactLightningModule

    class ProtrnnCLI(LightningCLI):
        """LightningCLI with protrnn's run directory, loggers, checkpoints, precision and export."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="Resume from this checkpoint; 'last' = the run directory's last.ckpt.")
            parser.add_argument("--export_dir", type=str | None, default=None,
                                help="Where to export the best model (default: trainer.default_root_dir).")
            parser.add_argument("--num_threads", type=int | None, default=None,
                                help="torch intra-op CPU threads (default: torch's choice, one per core). On a "
                                     "shared, oversubscribed CPU 1 can be several times faster (docs/training.md).")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({
                "checkpoint.monitor": DEFAULT_MONITOR, "checkpoint.mode": "max", "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True, "checkpoint.filename": "best-epoch{epoch:03d}-step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
                # Always overwrite last.ckpt, even after the run directory was moved (no last-v1.ckpt).
                "checkpoint.enable_version_counter": False,
            })
            parser.add_lightning_class_args(EarlyStopping, "early_stopping")
            # Checked after validation only, so a run without validation (limit_val_batches 0) does not fail.
            parser.set_defaults({"early_stopping.monitor": DEFAULT_MONITOR, "early_stopping.mode": "max",
                                 "early_stopping.patience": 20, "early_stopping.check_on_train_epoch_end": False})

        def before_instantiate_classes(self) -> None:
            trainer = self.config.trainer
            if trainer.get("use_distributed_sampler"):
                raise InputError("config key 'trainer.use_distributed_sampler' must be false: protrnn's token-budget "
                                 "batch sampler shards the data across DDP ranks itself")
            if trainer.get("precision") is None:
                trainer.precision = _auto_precision(trainer.get("accelerator", "auto"))
            root = Path(trainer.get("default_root_dir") or "runs/protrnn")
            trainer.default_root_dir = str(root)
            if self.config.checkpoint.get("dirpath") is None:
                self.config.checkpoint.dirpath = str(root / "checkpoints")
            ckpt = self.config.get("ckpt_path")
            if ckpt and ckpt not in ("last", "best", "hpc", "registry") and not Path(ckpt).is_file():
                raise InputError("config key 'ckpt_path': checkpoint file not found", path=ckpt)
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
            callbacks.append(ExportOnFitEnd(self.config.export_dir, extra={"training_config": training_config}))
            return self._instantiate_trainer(config, callbacks)

    ProtrnnCLI.model_class_default = ContactLightningModule
    ProtrnnCLI.datamodule_class_default = ContactDataModule
    return ProtrnnCLI


def _dump_config(parser: Any, config: Any) -> str:
    """The resolved config as YAML, nulls included (jsonargparse >= 4.49 renamed ``skip_none`` to ``skip_unset``)."""
    try:
        return parser.dump(config, skip_unset=False)
    except TypeError:
        return parser.dump(config, skip_none=False)


def build_cli(argv: list[str]) -> Any:
    """Parse ``argv`` and instantiate model, data and trainer (no training). Raises InputError for bad values."""
    from jsonargparse import ArgumentError

    cli_class = _build_cli_class()
    trainer_defaults = {"use_distributed_sampler": False, "gradient_clip_val": 1.0, "max_epochs": 50,
                        "log_every_n_steps": 10, "default_root_dir": "runs/protrnn", "precision": None}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        try:
            return cli_class(
                cli_class.model_class_default, cli_class.datamodule_class_default,
                run=False, args=argv, seed_everything_default=0, trainer_defaults=trainer_defaults,
                auto_configure_optimizers=False, save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False, "default_config_files": [str(DEFAULT_CONFIG)],
                               "prog": "protrnn train",
                               "description": "Train a recurrent contact model (docs/training.md). Bundled "
                                              f"configs for --config NAME: {', '.join(bundled_configs())}."},
            )
        except ArgumentError as exc:
            raise InputError(_one_line(exc)) from None
        except InputError as exc:
            # ModelConfig names its field ('cell'); say where it lives in this CLI's config tree as well.
            match = re.match(r"model config key '(\w+)'", str(exc))
            if match and exc.path is None:
                raise InputError(f"{exc} (set with --model.model.{match.group(1)})") from None
            raise
        except (TypeError, ValueError) as exc:
            # Instantiation errors of our classes are InputError already; these come from Lightning's own checks.
            raise InputError(f"invalid configuration: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """jsonargparse nests the causes of a parse error over many lines; keep the lines that name the key."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    inner = next((exc_ for exc_ in _causes(exc) if isinstance(exc_, InputError)), None)
    if inner is not None:
        return str(inner)
    return " | ".join(lines[:3]) if lines else type(exc).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _check_resume_checkpoint(ckpt: str | None, config: Any) -> None:
    """Before training: a ``--ckpt_path`` file must be a readable protrnn checkpoint of the configured architecture.

    Without this, a file that is not a checkpoint fails inside ``trainer.fit`` with a torch.load traceback, and a
    Lightning checkpoint of another program with a state_dict error. ``last`` / ``best`` are resolved by Lightning
    and checked by ``ContactLightningModule.on_load_checkpoint``.
    """
    if not ckpt or ckpt in ("last", "best", "hpc", "registry"):
        return
    from protrnn.model.io import load_checkpoint
    from protrnn.training.module import check_architecture

    try:
        checkpoint = load_checkpoint(ckpt)
    except InputError as exc:
        raise InputError(f"config key 'ckpt_path': {exc.reason}", path=ckpt) from None
    saved = (checkpoint.get("hyper_parameters") or {}).get("model")
    if not isinstance(saved, dict):
        raise InputError("config key 'ckpt_path': not a protrnn train checkpoint (no model architecture in its "
                         "hyper-parameters)", path=ckpt)
    check_architecture(saved, config, source=ckpt)


def main(argv: list[str]) -> int:
    """Entry point of ``protrnn train``; returns the exit status (InputError propagates to the CLI: status 2)."""
    argv = list(argv)
    _maybe_reexec_with_malloc_env(argv)
    argv = resolve_config_args(argv)
    from protrnn.training.module import TrainingDiverged

    cli = build_cli(argv)
    _check_resume_checkpoint(cli.config.get("ckpt_path"), cli.model.config)
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
                    print(f"protrnn: exported model to {Path(exported).parent}", file=sys.stderr)
    return 0
