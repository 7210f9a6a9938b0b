"""The LightningCLI machinery of protrnn's fit commands (``protrnn train``, ``protrnn pretrain fit``), in one place.

A fit command is described by a :class:`FitSpec` (:data:`TRAIN`, :data:`PRETRAIN`): its program name, bundled configs,
trainer defaults and, imported lazily (``protrnn --help`` must not import Lightning), the LightningModule, DataModule,
checkpoint metric and end-of-fit callbacks. :func:`run_fit` parses the arguments and trains; every command gets:

* Lightning's conventions: ``--config FILE`` or the name of one of the command's bundled configs
  (:class:`BundledConfigs`: ``--config lstm``), dotted overrides, ``--print_config``, ``--ckpt_path last|PATH``;
* a run directory ``trainer.default_root_dir`` holding ``checkpoints/`` (best + last), ``logs/version_N/`` (CSV +
  TensorBoard + the resolved ``config.yaml``) and, at the end, the export (``--export_dir`` puts it elsewhere);
* ``trainer.precision`` chosen per device when not given (:func:`auto_precision`);
* ``--num_threads N`` (torch intra-op CPU threads);
* one-line errors (:class:`~protrnn.errors.InputError`, exit status 2) naming the key of an invalid config value,
  :data:`EXIT_DIVERGED` for a diverging run, and 128 + the signal with one line for a run stopped by SIGTERM (143) or
  Ctrl-C (130) (:func:`interrupted_message`; Lightning alone exited 0 on SIGTERM);
* every checkpoint records the run's identity and resolved config (what an export of it records as
  ``training_config``: :class:`~protrnn.training.callbacks.TrainingConfigRecord`);
* optionally (``protrnn train``) glibc's malloc tuned for PyTorch on CPU (:func:`maybe_reexec_with_malloc_env`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import shutil
import signal
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from protrnn.errors import InputError

#: Bundled ``protrnn train`` configs: the ``*.yaml`` files directly in this folder.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
#: Bundled ``protrnn pretrain fit`` configs (a subfolder, so no pretraining config is listed as a training one).
PRETRAIN_CONFIG_DIR = CONFIG_DIR / "pretrain"
#: glibc malloc settings that keep freed activation memory in the process instead of returning it to the OS on
#: every step (measured on 2 CPU cores: see docs/training.md).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
#: Exit status of a run stopped because its loss diverged (configuration errors exit with 2).
EXIT_DIVERGED = 1
#: The ``--ckpt_path`` value that names this run's own ``checkpoints/last.ckpt`` (Lightning's other names, ``best``,
#: ``hpc`` and ``registry``, are refused: protrnn's run directory has no use for them).
LAST_CKPT = "last"
#: ``--ckpt_path`` value for a pipeline: resume from ``checkpoints/last.ckpt`` only when its run had the architecture,
#: settings and data given now; otherwise move the folder aside and train from the start.
LAST_IF_SAME = "last-if-same"
#: The run-identity keys of the training data: a resume on other contents there is refused (:func:`check_resume`).
DATA_KEYS = ("data.train_path", "data.val_path")
_UNSUPPORTED_CKPT_NAMES = ("best", "hpc", "registry")
#: Trainer defaults of every fit command (a spec's ``trainer_defaults`` add to / override these).
SHARED_TRAINER_DEFAULTS: dict[str, Any] = {"use_distributed_sampler": False, "gradient_clip_val": 1.0,
                                           "log_every_n_steps": 10, "precision": None}


# ------------------------------------------------------------------------------------------------ bundled configs
@dataclass(frozen=True)
class BundledConfigs:
    """The YAML configs one command ships: the ``*.yaml`` files directly in ``directory``, named by their stem."""

    directory: Path

    def names(self) -> list[str]:
        """Names accepted by ``--config NAME``."""
        return sorted(p.stem for p in self.directory.glob("*.yaml"))

    def path(self, name: str) -> Path:
        """The file of bundled config ``name`` (not checked)."""
        return self.directory / f"{name}.yaml"

    def resolve_args(self, argv: list[str]) -> list[str]:
        """Replace ``--config NAME`` / ``-c NAME`` / ``--config=NAME`` by the bundled file when NAME is not a path."""
        out: list[str] = []
        expect_value = False
        for arg in argv:
            if expect_value:
                out.append(self._resolve(arg))
                expect_value = False
            elif arg in ("--config", "-c"):
                out.append(arg)
                expect_value = True
            elif arg.startswith("--config="):
                out.append("--config=" + self._resolve(arg.split("=", 1)[1]))
            else:
                out.append(arg)
        return out

    def _resolve(self, value: str) -> str:
        if Path(value).exists() or "/" in value or os.sep in value or value.endswith((".yaml", ".yml", ".json")):
            if not Path(value).is_file():
                raise InputError(f"--config: file not found (bundled configs: {', '.join(self.names())})",
                                 path=value)
            return value
        candidate = self.path(value)
        if not candidate.is_file():
            raise InputError(f"--config: no bundled config named {value!r} and no such file "
                             f"(bundled: {', '.join(self.names())})")
        return str(candidate)


TRAIN_CONFIGS = BundledConfigs(CONFIG_DIR)
PRETRAIN_CONFIGS = BundledConfigs(PRETRAIN_CONFIG_DIR)


# ------------------------------------------------------------------------------------------------ process set-up
def maybe_reexec_with_malloc_env(argv: list[str], command: tuple[str, ...]) -> None:
    """Re-execute this process once with :data:`MALLOC_ENV`, when those are unset and we are the program.

    glibc reads them only at start-up, hence the re-execution. Only when the process was started as
    ``protrnn COMMAND... ARGV`` (so a library caller or a test calling a command's ``main`` is never replaced), on
    Linux with glibc. Variables the user set (to anything) are kept; ``PROTRNN_MALLOC_TUNING=0`` turns the
    re-execution off. DDP workers inherit the environment and do not re-execute.
    """
    if os.environ.get("PROTRNN_MALLOC_TUNING", "1") == "0":
        return
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    missing = {key: value for key, value in MALLOC_ENV.items() if key not in os.environ}
    if not missing or list(sys.argv[1:]) != [*command, *argv]:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **missing})


def auto_precision(accelerator: Any) -> str:
    """What ``trainer.precision: null`` (auto) becomes: ``bf16-mixed`` on a CUDA GPU (``16-mixed`` where bf16 is
    unsupported) and on a CPU that multiplies bf16 natively (AVX512-BF16 or AMX-BF16, see
    :func:`protrnn.model.hardware.bf16_is_native`), ``32-true`` elsewhere (other CPUs emulate bf16, which is
    slower than float32; Apple MPS). An explicit ``trainer.precision`` always wins."""
    import torch

    from protrnn.model.hardware import bf16_is_native

    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    on_cpu = name in ("cpu", "cpuaccelerator")
    if name in ("mps", "mpsaccelerator") or (name == "auto" and torch.backends.mps.is_available()):
        return "32-true"
    if not on_cpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if bf16_is_native("cpu") else "32-true"


def log_versions(root: Path) -> dict[int, Path]:
    """The ``logs/version_N`` folders of run directory ``root`` by their number N (one per invocation; each holds
    the resolved ``config.yaml`` of its invocation)."""
    return {int(m.group(1)): folder for folder in (root / "logs").glob("version_*")
            if (m := re.fullmatch(r"version_(\d+)", folder.name))}


def next_version(root: Path) -> int:
    """The next free ``logs/version_N`` number of run directory ``root``."""
    return max(log_versions(root), default=-1) + 1


def dump_config(parser: Any, config: Any) -> str:
    """The resolved config as YAML, nulls included (jsonargparse >= 4.49 renamed ``skip_none`` to ``skip_unset``)."""
    try:
        return parser.dump(config, skip_unset=False)
    except TypeError:
        return parser.dump(config, skip_none=False)


def one_line(exc: BaseException) -> str:
    """jsonargparse nests the causes of a parse error over many lines; keep the lines that name the key."""
    inner = next((cause for cause in _causes(exc) if isinstance(cause, InputError)), None)
    if inner is not None:
        return str(inner)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else type(exc).__name__


def trainer_config_error(exc: BaseException) -> InputError:
    """Lightning's refusal of a ``trainer.*`` value while the Trainer is built (a MisconfigurationException or a
    ValueError: ``max_steps -5``, ``max_epochs -3``, ``val_check_interval -1``, ...) as a one-line InputError that
    names the config key, ``trainer.NAME`` for each argument of ``Trainer`` the message names (in the order it names
    them), or, where it names none, the whole message on one line."""
    import inspect

    from pytorch_lightning import Trainer

    message = " ".join(str(exc).split()) or type(exc).__name__
    names = [name for name in inspect.signature(Trainer.__init__).parameters if name != "self"]
    found = sorted((match.start(), name) for name in names
                   if (match := re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message)))
    keys = [f"'trainer.{name}'" for _, name in found]
    if not keys:
        return InputError(f"invalid trainer configuration: {message}")
    label = f"config key {keys[0]}" if len(keys) == 1 else f"config keys {', '.join(keys)}"
    return InputError(f"{label}: {message}")


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


# ------------------------------------------------------------------------------------------------ fit commands
@dataclass(frozen=True)
class FitParts:
    """The Lightning side of a fit command (imported only when the command runs).

    ``fit_end_callbacks(export_dir, extra)`` gives the callbacks appended to the trainer's (the export among them;
    ``extra`` holds the resolved ``training_config``); ``check_before_fit(cli)`` runs after instantiation, before
    ``trainer.fit`` (one-line InputError for what would fail inside it).
    """

    model_class: type
    datamodule_class: type
    monitor: str
    mode: str
    fit_end_callbacks: Callable[[str, dict[str, Any]], list[Any]]
    early_stopping_patience: int | None = None
    check_before_fit: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class FitSpec:
    """One LightningCLI fit command. ``description`` may name ``{configs}`` (the bundled config names);
    ``exported`` is the message printed after a successful run, with ``{}`` for the export directory;
    ``malloc_command`` (the words after ``protrnn``) turns on :func:`maybe_reexec_with_malloc_env`."""

    prog: str
    description: str
    configs: BundledConfigs
    default_config: str
    default_root_dir: str
    export_what: str
    exported: str
    parts: Callable[[], FitParts]
    trainer_defaults: Mapping[str, Any] = field(default_factory=dict)
    malloc_command: tuple[str, ...] | None = None


def _cli_class(spec: FitSpec) -> type:
    """The LightningCLI subclass of ``spec`` (built lazily so ``protrnn --help`` does not import Lightning)."""
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from protrnn.training.callbacks import RunCheckpoint, TrainingConfigRecord
    from protrnn.training.identity import RunIdentity, run_identity

    parts = spec.parts()

    class ProtrnnCLI(LightningCLI):
        """LightningCLI with protrnn's run directory, loggers, checkpoints, precision, threads and export."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="Resume from this checkpoint; 'last' = the run directory's last.ckpt; "
                                     "'last-if-same' = last.ckpt only when its run had this architecture, these "
                                     "settings and this data, else train from the start (the pipeline's).")
            parser.add_argument("--export_dir", type=str | None, default=None,
                                help=f"Where to export {spec.export_what} (default: trainer.default_root_dir).")
            parser.add_argument("--num_threads", type=int | None, default=None,
                                help="torch intra-op CPU threads (default: torch's choice, one per core). On a "
                                     "shared, oversubscribed CPU 1 can be several times faster (docs/training.md).")
            # last.ckpt rewritten at every validation, improved or not (RunCheckpoint): what --ckpt_path last resumes
            parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
            parser.set_defaults({
                "checkpoint.monitor": parts.monitor, "checkpoint.mode": parts.mode, "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True, "checkpoint.filename": "best-epoch{epoch:03d}-step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
                # Always overwrite last.ckpt, even after the run directory was moved (no last-v1.ckpt).
                "checkpoint.enable_version_counter": False,
            })
            if parts.early_stopping_patience is not None:
                parser.add_lightning_class_args(EarlyStopping, "early_stopping")
                # Checked after validation only, so a run without validation (limit_val_batches 0) does not fail.
                parser.set_defaults({"early_stopping.monitor": parts.monitor, "early_stopping.mode": parts.mode,
                                     "early_stopping.patience": parts.early_stopping_patience,
                                     "early_stopping.check_on_train_epoch_end": False})

        def before_instantiate_classes(self) -> None:
            trainer = self.config.trainer
            if trainer.get("use_distributed_sampler"):
                raise InputError("config key 'trainer.use_distributed_sampler' must be false: protrnn's token-budget "
                                 "batch sampler shards the data across DDP ranks itself")
            if trainer.get("precision") is None:
                trainer.precision = auto_precision(trainer.get("accelerator", "auto"))
            root = Path(trainer.get("default_root_dir") or spec.default_root_dir)
            trainer.default_root_dir = str(root)
            if self.config.checkpoint.get("dirpath") is None:
                self.config.checkpoint.dirpath = str(root / "checkpoints")
            ckpt = self.config.get("ckpt_path")
            if ckpt in _UNSUPPORTED_CKPT_NAMES:
                raise InputError(f"config key 'ckpt_path': {ckpt!r} is not supported; resume with 'last' (the run "
                                 "directory's checkpoints/last.ckpt) or a checkpoint file, e.g. checkpoints/best-*.ckpt")
            if ckpt and ckpt not in (LAST_CKPT, LAST_IF_SAME) and not Path(ckpt).is_file():
                raise InputError("config key 'ckpt_path': checkpoint file not found", path=ckpt)
            threads = self.config.get("num_threads")
            if threads is not None:
                if threads < 1:
                    raise InputError(f"config key 'num_threads': must be a positive integer or null, got {threads}")
                import torch

                torch.set_num_threads(threads)
            if self.config.get("export_dir") is None:
                self.config.export_dir = str(root)
            for key, folder in (("trainer.default_root_dir", root), ("export_dir", Path(self.config.export_dir))):
                if folder.exists() and not folder.is_dir():  # found before training, not after it
                    raise InputError(f"config key {key!r}: is a file, not a folder", path=folder)

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
            root = Path(config["default_root_dir"])
            if config.get("logger") in (None, True):
                version = next_version(root)
                config["logger"] = [CSVLogger(str(root), name="logs", version=version),
                                    TensorBoardLogger(str(root), name="logs", version=version,
                                                      default_hp_metric=False)]
            callbacks = [self._get(self.config_init, key) for key in self.parser.callback_keys]
            training_config = yaml.safe_load(dump_config(self.parser, self.config))
            callbacks += parts.fit_end_callbacks(self.config.export_dir, {"training_config": training_config})
            # every checkpoint records which run it belongs to: what a resume compares (check_resume), and its
            # resolved config: what an export of any of its checkpoints records (protrnn export, pretrain export)
            self.run_identity = run_identity(training_config)
            callbacks += [RunIdentity(self.run_identity), TrainingConfigRecord(training_config)]
            try:
                return self._instantiate_trainer(config, callbacks)
            except InputError:
                raise
            except (MisconfigurationException, ValueError) as exc:
                raise trainer_config_error(exc) from None

    ProtrnnCLI.model_class_default = parts.model_class
    ProtrnnCLI.datamodule_class_default = parts.datamodule_class
    return ProtrnnCLI


def build_cli(spec: FitSpec, argv: list[str]) -> Any:
    """Parse ``argv`` (config names already resolved) and instantiate model, data and trainer (no training).

    Raises a one-line :class:`InputError` for bad values; ``--print_config`` / ``--help`` exit as Lightning does.
    """
    from jsonargparse import ArgumentError

    cli_class = _cli_class(spec)
    trainer_defaults = {**SHARED_TRAINER_DEFAULTS, "default_root_dir": spec.default_root_dir,
                        **spec.trainer_defaults}
    description = spec.description.format(configs=", ".join(spec.configs.names()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        try:
            return cli_class(
                cli_class.model_class_default, cli_class.datamodule_class_default,
                run=False, args=argv, seed_everything_default=0, trainer_defaults=trainer_defaults,
                auto_configure_optimizers=False, save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False, "prog": spec.prog, "description": description,
                               "default_config_files": [str(spec.configs.path(spec.default_config))]},
            )
        except ArgumentError as exc:
            raise InputError(one_line(exc)) from None
        except InputError as exc:
            # ModelConfig names its field ('cell'); say where it lives in this CLI's config tree as well.
            match = re.match(r"model config key '(\w+)'", str(exc))
            if match and exc.path is None:
                raise InputError(f"{exc} (set with --model.model.{match.group(1)})") from None
            raise
        except (TypeError, ValueError) as exc:
            # Instantiation errors of our classes are InputError already; these come from Lightning's own checks.
            raise InputError(f"invalid configuration: {one_line(exc)}") from None


def run_fit(spec: FitSpec, argv: list[str]) -> int:
    """Parse ``argv`` of ``spec``'s command and train; returns the exit status (0, :data:`EXIT_DIVERGED`, or 128 +
    the signal for a run stopped by SIGTERM (143) or Ctrl-C (130), with one line on what it left:
    :func:`interrupted_message`).

    Invalid arguments raise :class:`InputError` (the CLI prints it on one line and exits with 2).
    """
    argv = list(argv)
    if spec.malloc_command is not None:
        maybe_reexec_with_malloc_env(argv, spec.malloc_command)
    from protrnn.training.module import TrainingDiverged

    cli = build_cli(spec, spec.configs.resolve_args(argv))
    check = spec.parts().check_before_fit
    if check is not None:
        check(cli)
    if cli.config.get("ckpt_path") == LAST_IF_SAME:  # not started over: the same run, resumed as with 'last'
        cli.config.ckpt_path = LAST_CKPT
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    except TrainingDiverged as exc:
        print(f"protrnn: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except SystemExit as exc:
        signum = interrupting_signal(exc)
        if signum is None:
            raise
        if cli.trainer.is_global_zero:
            print(f"protrnn: {interrupted_message(cli, signum)}", file=sys.stderr)
        return 128 + signum
    if cli.trainer.is_global_zero:
        for callback in cli.trainer.callbacks:
            exported = getattr(callback, "exported", None)
            if exported is not None:
                with contextlib.suppress(OSError):
                    print(f"protrnn: {spec.exported.format(Path(exported).parent)}", file=sys.stderr)
    return 0


def interrupting_signal(exc: SystemExit) -> int | None:
    """The signal that stopped ``trainer.fit`` with ``exc``, or None for another exit. Lightning ends a fit on SIGTERM
    with its SIGTERMException (a SystemExit without a code: exit status 0, as if the run had completed) and on Ctrl-C
    with ``sys.exit(1)`` while handling the KeyboardInterrupt (the exit status of a diverged run)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException):
        return int(signal.SIGTERM)
    if isinstance(exc.__context__, KeyboardInterrupt):
        return int(signal.SIGINT)
    return None


def interrupted_message(cli: Any, signum: int) -> str:
    """The line a fit stopped by signal ``signum`` prints: what it left and how to go on (the export is written only
    when a run completes)."""
    from protrnn.training.identity import checkpoint_of_run

    last = Path(cli.config.checkpoint.dirpath) / "last.ckpt"
    if not last.is_file():
        kept = "no checkpoint was written yet (none before the first validation); rerun to start over"
    elif checkpoint_of_run(last, getattr(cli, "run_identity", None)):
        kept = f"{last} holds the state of the last validation; rerun with --ckpt_path last to continue"
    else:  # an earlier run's in this folder: this one stopped before its first validation wrote its own
        kept = (f"{last} is not this run's (it records other settings or data, or none): nothing of this run was "
                "saved before its first validation; rerun to start over")
    return (f"interrupted by {signal.Signals(signum).name} at global step {cli.trainer.global_step}, nothing "
            f"exported; {kept}")


# ------------------------------------------------------------------------------------------------ the two commands
def _resume_checkpoint(cli: Any) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``--ckpt_path`` resumes from, read (``weights_only``), or None for a fresh start: a file, or with
    ``last`` the run directory's ``checkpoints/last.ckpt`` when there is one (without it Lightning starts afresh).
    An unreadable file is a one-line InputError instead of a torch.load traceback inside ``trainer.fit``."""
    ckpt = cli.config.get("ckpt_path")
    if not ckpt:
        return None
    last = ckpt in (LAST_CKPT, LAST_IF_SAME)
    path = Path(cli.config.checkpoint.dirpath) / "last.ckpt" if last else Path(ckpt)
    from protrnn.model.io import load_checkpoint

    try:
        if not path.is_file():
            raise FileNotFoundError(path)
        checkpoint = load_checkpoint(path)
    except (InputError, FileNotFoundError) as exc:
        if _gone_under_another_rank(cli, path):
            cli.config.ckpt_path = None  # rank 0 starts afresh too: it moved the file, or there was none
            return None
        if isinstance(exc, FileNotFoundError):
            return None
        raise InputError(f"config key 'ckpt_path': {exc.reason}", path=path) from None
    return path, checkpoint


def check_budget(path: Path, checkpoint: Mapping[str, Any], trainer: Any) -> None:
    """A one-line InputError when the checkpoint to resume is past the run's budget: its ``epoch`` beyond
    ``trainer.max_epochs`` (where Lightning raised a MisconfigurationException inside ``trainer.fit``) or its
    ``global_step`` beyond ``trainer.max_steps`` (where Lightning stopped at once and the run exported the
    checkpoint's best again, exit 0, as if it had trained to the smaller budget). A checkpoint at the budget is a
    finished run with nothing left to train: it resumes, stops and exports again, as a rerun of that run does."""
    # ``epoch`` is the 0-based index of the epoch the checkpoint was saved in: a run of max_epochs N ends in epoch
    # N - 1, so epoch e needs a budget of e + 1 epochs; ``global_step`` counts the steps taken
    for recorded, key, budget, offset in (("epoch", "max_epochs", trainer.max_epochs, 1),
                                          ("global_step", "max_steps", trainer.max_steps, 0)):
        value = checkpoint.get(recorded)
        if (isinstance(value, int) and not isinstance(value, bool) and budget not in (None, -1)
                and value + offset > budget):
            where = f"epoch {value + 1} (counted from 1)" if recorded == "epoch" else f"global step {value}"
            raise InputError(f"config key 'ckpt_path': the checkpoint is at {where}, past trainer.{key} "
                             f"{budget}; raise --trainer.{key} to continue it", path=path)


def _gone_under_another_rank(cli: Any, path: Path) -> bool:
    """True for a rank other than 0 of a multi-process run (``srun``/DDP) with ``last-if-same`` that finds no
    ``last.ckpt``, before or while reading it. Every rank reads the checkpoint to decide, and rank 0 alone moves
    ``checkpoints/`` aside (:func:`_start_over`). So a missing file means that rank 0 found none or moved it, and
    starts afresh either way. Reading ``checkpoints.replaced/`` instead could find an older run's checkpoint (a run
    started over and then killed before its first save). Before, a rank that lost the file mid-read failed with
    "checkpoint not found" while rank 0 trained."""
    return (cli.config.get("ckpt_path") == LAST_IF_SAME and not cli.trainer.is_global_zero
            and not os.path.lexists(path))


def check_resumable(cli: Any) -> None:
    """Before pretraining: :func:`check_resume` (a pretraining checkpoint has no other kind to tell apart)."""
    check_resume(cli, kind_check=None)


def check_resume_checkpoint(cli: Any) -> None:
    """Before contact training: :func:`check_resume`, and the checkpoint must be one of ``protrnn train``.

    Without this, a file that is not a checkpoint fails inside ``trainer.fit`` with a torch.load traceback, and a
    Lightning checkpoint of another program with a state_dict error.
    """
    def is_contact_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
        if not isinstance((checkpoint.get("hyper_parameters") or {}).get("model"), dict):
            raise InputError("config key 'ckpt_path': not a protrnn train checkpoint (no model architecture in its "
                             "hyper-parameters)", path=path)

    check_resume(cli, kind_check=is_contact_checkpoint)


def check_resume(cli: Any, kind_check: Callable[[Path, Mapping[str, Any]], None] | None) -> None:
    """The checkpoint ``--ckpt_path`` resumes from, checked before anything trains (:func:`_resume_checkpoint`).

    Every checkpoint records its run's identity (:mod:`protrnn.training.identity`: the resolved config but for where
    outputs go, threads and the time cap, and the contents of each file it names).

    * Another architecture is refused (one line naming each key), and so is other data (the contents of
      ``data.train_path`` / ``data.val_path``): a resume on other chains would go on from a model fitted to the old
      ones.
    * Other settings (or another named file, e.g. an encoder) are named on stderr and the run resumes: the optimizer
      and schedule continue from the checkpoint's state.
    * A checkpoint past ``trainer.max_epochs`` or ``trainer.max_steps`` is refused (:func:`check_budget`), unless
      ``last-if-same`` starts the run over anyway (a smaller budget is a difference of its run).
    * With ``--ckpt_path last-if-same`` (the pipeline's) any difference, or a checkpoint without a record (written by
      an older protrnn), instead moves ``checkpoints/`` aside to ``checkpoints.replaced`` and trains from the start:
      a job killed and rerun after its settings, data or encoder changed had resumed the old run.
    """
    resumed = _resume_checkpoint(cli)
    if resumed is None:
        return
    path, checkpoint = resumed
    if kind_check is not None:
        kind_check(path, checkpoint)
    from protrnn.training.identity import CHECKPOINT_KEY, identity_differences
    from protrnn.training.module import architecture_differences, check_architecture

    strict = cli.config.get("ckpt_path") == LAST_IF_SAME
    saved_architecture = (checkpoint.get("hyper_parameters") or {}).get("model") or {}
    reasons: list[str] = []
    if strict:
        architecture = architecture_differences(saved_architecture, cli.model.config)
        if architecture:
            reasons.append(f"the checkpoint's architecture does not match the config: {'; '.join(architecture)}")
    else:
        check_architecture(saved_architecture, cli.model.config, source=str(path))
    saved = checkpoint.get(CHECKPOINT_KEY)
    data: list[str] = []
    if isinstance(saved, Mapping):
        changed, files = identity_differences(saved, cli.run_identity)
        data = [text for key, text in files.items() if key in DATA_KEYS]
        if data and not strict:
            raise InputError(f"config key 'ckpt_path': the checkpoint's run trained on other data "
                             f"({'; '.join(data)}); train into a new run directory (trainer.default_root_dir), or "
                             "delete its checkpoints/ to start this one over", path=path)
        changed += [text for key, text in files.items() if key not in DATA_KEYS]
    else:
        changed = resume_differences(checkpoint, cli.model.hparams, cli.datamodule.hparams)
        if strict:
            reasons.append("the checkpoint has no record of its run's settings and data (an older protrnn wrote it)")
    reasons += data + changed
    if strict and reasons:
        _start_over(cli, path, reasons)
        return
    check_budget(path, checkpoint, cli.trainer)
    if changed:
        print(f"protrnn: resuming {path} with settings that differ from its run: {'; '.join(changed)}. The "
              "optimizer and learning-rate schedule continue from the checkpoint's state, so a new lr, weight_decay "
              "or schedule does not take effect; model.json records the settings given now", file=sys.stderr)


def _start_over(cli: Any, path: Path, reasons: list[str]) -> None:
    """Train from the start instead of resuming ``path``: its folder moves to ``<folder>.replaced`` (by rank 0; a
    previous one is removed) and ``ckpt_path`` becomes null."""
    folder = Path(cli.config.checkpoint.dirpath)
    aside = folder.with_name(folder.name + ".replaced")
    if cli.trainer.is_global_zero and folder.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
    print(f"protrnn: not resuming {path}: its run differs from this one ({'; '.join(reasons)}); training from the "
          f"start, its checkpoints moved to {aside}", file=sys.stderr)
    cli.config.ckpt_path = None


def resume_differences(checkpoint: dict[str, Any], model_hparams: Any, data_hparams: Any) -> list[str]:
    """``key: saved -> now`` for each training (``model.*``) and data (``data.*``) setting a resumed run changes, from
    the hyper-parameters Lightning saved in ``checkpoint`` (the architecture is checked apart)."""
    out: list[str] = []
    for prefix, saved, current in (("model", checkpoint.get("hyper_parameters"), model_hparams),
                                   ("data", checkpoint.get("datamodule_hyper_parameters"), data_hparams)):
        saved, current = dict(saved or {}), dict(current or {})
        for key in sorted(set(saved) & set(current)):
            if key == "model" or key.startswith("_"):
                continue
            old, new = saved[key], current[key]
            if (list(old) if isinstance(old, tuple) else old) != (list(new) if isinstance(new, tuple) else new):
                out.append(f"{prefix}.{key}: {old!r} -> {new!r}")
    return out


@functools.cache
def _train_parts() -> FitParts:
    from protrnn.training.callbacks import ExportOnFitEnd
    from protrnn.training.datamodule import ContactDataModule
    from protrnn.training.module import DEFAULT_MONITOR, ContactLightningModule

    return FitParts(ContactLightningModule, ContactDataModule, monitor=DEFAULT_MONITOR, mode="max",
                    fit_end_callbacks=lambda directory, extra: [ExportOnFitEnd(directory, extra=extra)],
                    early_stopping_patience=20, check_before_fit=_check_contact_fit)


def _check_contact_fit(cli: Any) -> None:
    """``protrnn train``'s checks after instantiation, before the trainer starts: the model's settings that depend on
    the data (:meth:`~protrnn.training.module.ContactLightningModule.check_data_settings`), then the checkpoint to
    resume (:func:`check_resume_checkpoint`)."""
    cli.model.check_data_settings(getattr(cli.datamodule, "contact_cutoff", None))
    check_resume_checkpoint(cli)


@functools.cache
def _pretrain_parts() -> FitParts:
    from protrnn.training.pretrain import (
        PRETRAIN_MONITOR,
        ExportPretrainedOnFitEnd,
        PretrainLightningModule,
        ResidueThroughput,
        StructureLabelDataModule,
    )

    return FitParts(PretrainLightningModule, StructureLabelDataModule, monitor=PRETRAIN_MONITOR, mode="min",
                    fit_end_callbacks=lambda directory, extra: [ResidueThroughput(),
                                                                ExportPretrainedOnFitEnd(directory, extra=extra)],
                    check_before_fit=check_resumable)


#: ``protrnn train``: contact training (docs/training.md).
TRAIN = FitSpec(
    prog="protrnn train", configs=TRAIN_CONFIGS, default_config="default", default_root_dir="runs/protrnn",
    description="Train a recurrent contact model (docs/training.md). Bundled configs for --config NAME: {configs}.",
    export_what="the best model", exported="exported model to {}", parts=_train_parts,
    trainer_defaults={"max_epochs": 50}, malloc_command=("train",))

#: ``protrnn pretrain fit``: encoder pretraining (docs/pretraining.md).
PRETRAIN = FitSpec(
    prog="protrnn pretrain fit", configs=PRETRAIN_CONFIGS, default_config="pretrain", default_root_dir="runs/pretrain",
    description="Pretrain the recurrent encoder (docs/pretraining.md). Bundled configs for --config NAME: {configs}.",
    export_what="the encoder", exported="exported the pretrained encoder to {}", parts=_pretrain_parts,
    trainer_defaults={"max_epochs": 1})
