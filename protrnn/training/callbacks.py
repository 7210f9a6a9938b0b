"""Lightning callbacks of protrnn training, and checkpoint -> exported-model conversion.

The NaN/inf guard lives in :class:`~protrnn.training.module.ContactLightningModule` (it needs the loss and the
gradients of every step); gradient-flow diagnostics are in :mod:`protrnn.diagnostics.callback` and are added through
``trainer.callbacks`` in a config.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from protrnn.errors import InputError, reading
from protrnn.model.io import (
    CKPT_TRAINING_CONFIG,
    load_network,
    peek_checkpoint,
    recorded_contact_cutoff,
    save_model,
)
from protrnn.training.module import CKPT_VAL_METRICS
from protrnn.utils.io import json_safe

#: Largest finite float: an integer metric beyond it has no JSON number either.
_FLOAT_MAX = sys.float_info.max
#: The key of an export's ``model.json`` that says where its ``training_config`` came from, or, where it records none,
#: why the run's config is unknown (``"unknown: ..."``): :func:`training_config_record`.
TRAINING_CONFIG_SOURCE = "training_config_source"
#: ``exported_by`` of an export written by ``protrnn export`` (:func:`export_checkpoint` of one checkpoint).
EXPORT_COMMAND = "protrnn export"


def export_checkpoint(checkpoint_path: str | Path, directory: str | Path,
                      extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.json`` for the network in a Lightning checkpoint.

    ``model.json`` also records where the weights came from (checkpoint, epoch, global step), the validation metrics
    of that epoch (a non-finite value as ``null``), the training hyper-parameters and the run's resolved config
    (:func:`checkpoint_record`), plus anything in ``extra``. Returns the JSON path. A checkpoint field that is not
    what Lightning and protrnn write there (an ``epoch`` that is no integer, validation metrics that are no numbers)
    is an :class:`InputError` naming the checkpoint and the field, raised before anything is written.
    """
    loaded = load_network(checkpoint_path, kind="checkpoint")
    metadata = checkpoint_record(loaded.checkpoint or {}, checkpoint_path,
                                 find_config="training_config" not in (extra or {}))
    metadata["exported_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    metadata.update(extra or {})
    return save_model(loaded.network, directory, extra=metadata)


def checkpoint_record(checkpoint: Mapping[str, Any], path: str | Path, *, find_config: bool = True) -> dict[str, Any]:
    """What a contact checkpoint says about its training, as ``model.json`` records it: ``source_checkpoint``,
    ``epoch``, ``global_step``, ``val_metrics``, ``training_hparams`` and (with ``find_config``) the run's resolved
    config, ``training_config`` with ``training_config_source`` (:func:`training_config_record`). ``protrnn export``
    writes it; ``protrnn diagnose`` reads a checkpoint's training record from it."""
    hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items()
               if k != "model" and not k.startswith("_")}
    record: dict[str, Any] = {
        "source_checkpoint": str(Path(path).resolve()),
        "epoch": recorded_count(checkpoint, "epoch", path),
        "global_step": recorded_count(checkpoint, "global_step", path),
        "val_metrics": recorded_metrics(checkpoint, path),
        "training_hparams": json_safe(hparams, stringify=True),
    }
    if find_config:
        record.update(training_config_record(checkpoint, path))
    cutoff = recorded_contact_cutoff(record, checkpoint, path=path)
    if cutoff is not None:  # kept where the run's config was not found: the data module's hyper-parameters hold it
        record["contact_cutoff"] = cutoff
    return record


def training_config_record(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """``{"training_config": config, "training_config_source": source}``: the resolved fit config of the run that
    wrote the checkpoint at ``path`` (the ``training_config`` an end-of-fit export records) and where it was found.

    From the checkpoint itself (:data:`CKPT_TRAINING_CONFIG`, written by :class:`TrainingConfigRecord`; source
    ``"checkpoint"``); for a checkpoint written before it held one, from the ``logs/version_N/config.yaml`` of its run
    directory (the folder above the checkpoint's folder) whose settings are those of the checkpoint's run identity
    (:mod:`protrnn.training.identity`; the newest such version; source: that file). Otherwise only
    ``{"training_config_source": "unknown: <reason>"}`` (no ``training_config``, which readers take as ``{}``): the
    training record then says that it is unknown instead of reading as a run without callbacks. A recorded config
    that is no mapping is an :class:`InputError` naming the checkpoint and the field."""
    config = checkpoint.get(CKPT_TRAINING_CONFIG)
    if config is not None:
        if not isinstance(config, Mapping):
            raise InputError(f"checkpoint field {CKPT_TRAINING_CONFIG!r} is a {type(config).__name__}, not a dict of "
                             "settings", path=path)
        return {"training_config": json_safe(config, stringify=True), TRAINING_CONFIG_SOURCE: "checkpoint"}
    from protrnn.training.cli import log_versions
    from protrnn.training.identity import CHECKPOINT_KEY, identity_differences, run_identity

    identity = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(identity, Mapping):
        return {TRAINING_CONFIG_SOURCE: "unknown: the checkpoint records neither its run's config nor its run "
                                        "identity (an older protrnn wrote it)"}
    root = Path(path).resolve().parent.parent
    versions = log_versions(root)
    for number in sorted(versions, reverse=True):
        config_path = versions[number] / "config.yaml"
        try:
            with reading(config_path):
                candidate = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (InputError, yaml.YAMLError):
            continue  # a missing, unreadable or damaged config.yaml is not this run's record
        if isinstance(candidate, Mapping) and not identity_differences(identity, run_identity(candidate))[0]:
            return {"training_config": json_safe(candidate, stringify=True), TRAINING_CONFIG_SOURCE: str(config_path)}
    return {TRAINING_CONFIG_SOURCE: f"unknown: the checkpoint does not record its run's config, and no "
                                    f"{root / 'logs'}/version_*/config.yaml has its run's settings"}


def recorded_count(checkpoint: Mapping[str, Any], key: str, path: str | Path) -> int | None:
    """The checkpoint's ``key`` (``epoch``, ``global_step``): a non-negative integer, or None when absent."""
    value = checkpoint.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        shown = repr(value) if isinstance(value, (bool, int, float, str)) else f"a {type(value).__name__}"
        raise InputError(f"checkpoint field {key!r} is {shown}, not a non-negative integer", path=path)
    return value


def recorded_metrics(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, float | None]:
    """The checkpoint's validation metrics (:data:`CKPT_VAL_METRICS`): a dict of numbers or nulls, a non-finite
    number recorded as None (strict JSON has no NaN); ``{}`` when absent."""
    metrics = checkpoint.get(CKPT_VAL_METRICS)
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InputError(f"checkpoint field {CKPT_VAL_METRICS!r} is a {type(metrics).__name__}, not a dict of "
                         "metric values", path=path)
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            shown = repr(value) if isinstance(value, (bool, str)) else f"a {type(value).__name__}"
            raise InputError(f"checkpoint field {CKPT_VAL_METRICS!r}: metric {str(name)!r} is {shown}, not a number",
                             path=path)
        number = math.inf if value is None or abs(value) > _FLOAT_MAX else float(value)  # ints beyond float: inf
        out[str(name)] = number if math.isfinite(number) else None
    return out


def written_in(path: Path, dirpath: str) -> bool:
    """Whether the checkpoint file ``path`` was saved by a checkpoint callback whose folder was ``dirpath`` (its
    recorded callback state says so; read ``weights_only`` and memory-mapped, so the weights are not read). False for
    a file that cannot be read that way."""
    checkpoint = peek_checkpoint(path)
    states = checkpoint.get("callbacks") if checkpoint is not None else None
    return isinstance(states, Mapping) and any(
        isinstance(state, Mapping) and "best_k_models" in state and str(state.get("dirpath")) == dirpath
        for state in states.values())


def moved_checkpoint(here: Path, path: str, recorded: str) -> str:
    """The file of ``path``'s name in the folder ``here``, if it is a copy of the checkpoint written in the folder
    ``recorded`` (:func:`written_in`), else ``""``: another run's checkpoint of the same name (the same epoch and
    step) is not this run's."""
    candidate = here / Path(path).name
    return str(candidate) if candidate.is_file() and written_in(candidate, recorded) else ""


def checkpoint_of_this_run(callback: Any, path: str) -> str:
    """``path`` (a ModelCheckpoint's best or last checkpoint) as a file of this run's checkpoint folder.

    A run directory copied or moved and then resumed carries its old absolute ``best_model_path`` in ``last.ckpt``;
    :class:`RunCheckpoint` remaps it, but Lightning's own ModelCheckpoint restores it as it was: the other folder's
    file, or a file that is gone. The copy of that file in this run's folder is used instead when there is one
    (:func:`moved_checkpoint`); otherwise ``""`` (nothing this run holds)."""
    dirpath = getattr(callback, "dirpath", None)
    if not path or dirpath is None:
        return path
    given, here = Path(path), Path(dirpath)
    if given.parent.resolve() == here.resolve():
        return path
    return moved_checkpoint(here, path, str(given.parent))


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (``checkpoint.*`` options) whose ``last.ckpt`` follows the run: rewritten at every
    checkpoint moment (each validation, or each epoch end when the checkpoint is taken there), improved or not. Not at
    the end of training beyond that: a run stopped mid-epoch by its step budget or time cap holds a state there that a
    resume would misread (the next epoch's count with this epoch's batches).

    Lightning 2.6 writes ``last.ckpt`` only in a step that also saved a best checkpoint, so after the last improvement
    it stayed behind: a run killed at step 4,400 whose best was step 3,500 resumed with ``--ckpt_path last`` from
    step 3,500, trained those 900 steps again, and early stopping's patience started over.

    A run directory copied or moved and then resumed keeps its best score and top-k checkpoints, remapped to the new
    folder (:meth:`load_state_dict`), where Lightning forgot them."""

    _last_step_written: int | None = None
    #: True after :meth:`load_state_dict` remapped a checkpoint's state from another folder (the run was moved).
    _remapped: bool = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state of a resumed checkpoint, also when its run directory was copied or moved since.

        Lightning restores the scores only when ``dirpath`` is the one the checkpoint recorded; otherwise it restores
        only ``best_model_path`` (the other folder's file), forgets ``best_model_score`` and ``best_k_models``, and
        the first validation of the resumed run became "best" however poor it was, a second ``best-*.ckpt`` beside
        the real best, which was then exported. Here the recorded paths are remapped to this folder (the same file
        names): entries whose file is here keep their scores, those whose file is not are dropped (the best is then
        established again by the validations to come), and ``best_model_path``, ``best_model_score``,
        ``kth_best_model_path`` / ``kth_value`` and ``last_model_path`` are derived from what is kept.
        """
        recorded = state_dict.get("dirpath", self.dirpath)
        if self.dirpath is None or recorded is None or str(recorded) == str(self.dirpath):
            super().load_state_dict(state_dict)
            return
        self._restore_remapped(state_dict)
        self._remapped = True

    def _restore_remapped(self, state_dict: Mapping[str, Any]) -> None:
        """The state of :meth:`load_state_dict` for a checkpoint written in another folder (see there)."""
        here = Path(str(self.dirpath))
        recorded = str(state_dict.get("dirpath"))

        def this_folders(path: object) -> str:  # another run's file of the same name must not take its score
            return moved_checkpoint(here, str(path), recorded) if path else ""

        kept = {this_folders(path): score for path, score in (state_dict.get("best_k_models") or {}).items()}
        self.best_k_models = {path: score for path, score in kept.items() if path}
        if self.best_k_models:
            pick = min if self.mode == "min" else max
            self.best_model_path = pick(self.best_k_models, key=self.best_k_models.__getitem__)
            self.best_model_score = self.best_k_models[self.best_model_path]
        else:  # no monitor (Lightning keeps no scores then), or no file of the top k is here
            self.best_model_path = this_folders(state_dict.get("best_model_path"))
            self.best_model_score = state_dict.get("best_model_score") if self.best_model_path else None
        if self.best_k_models and (self.save_top_k == -1 or len(self.best_k_models) >= self.save_top_k):
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.__getitem__)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        else:  # fewer than k kept: the next validations fill the top k again (Lightning's initial values)
            self.kth_best_model_path = ""
            self.kth_value = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        self.last_model_path = this_folders(state_dict.get("last_model_path"))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._remapped:  # every rank remapped (same checkpoint, same folder): all take rank 0's view of the files
            (self.best_k_models, self.best_model_path, self.best_model_score, self.kth_best_model_path,
             self.kth_value, self.last_model_path) = trainer.strategy.broadcast(
                (self.best_k_models, self.best_model_path, self.best_model_score, self.kth_best_model_path,
                 self.kth_value, self.last_model_path))
            self._remapped = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._keep_last_current(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._keep_last_current(trainer)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_step_written = trainer.global_step

    def _keep_last_current(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this step (never in a sanity check, outside fit or in a
        fast_dev_run, like every ModelCheckpoint save)."""
        from pytorch_lightning.trainer.states import TrainerFn

        if (not self.save_last or trainer.fast_dev_run or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING or self._last_step_written == trainer.global_step):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class TrainingConfigRecord(pl.Callback):
    """Writes its run's resolved fit config into every checkpoint (under :data:`CKPT_TRAINING_CONFIG`, as strict-JSON
    values, which ``torch.load(weights_only=True)`` reads), so an export of any checkpoint records the
    ``training_config`` the end-of-fit export records (:func:`training_config_record`)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = json_safe(config, stringify=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_TRAINING_CONFIG] = self.config


class ExportOnFitEnd(pl.Callback):
    """At the end of ``fit``, export the best checkpoint (else the last one) as safetensors + JSON.

    Args:
        directory: where ``model.safetensors`` and ``model.json`` go (default: ``trainer.default_root_dir``).
        extra: more JSON-serialisable metadata for ``model.json`` (``protrnn train`` adds the full run config).
    """

    def __init__(self, directory: str | Path | None = None, extra: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.extra = dict(extra or {})
        self.exported: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        callback = trainer.checkpoint_callback
        best = checkpoint_of_this_run(callback, getattr(callback, "best_model_path", "") if callback else "")
        last = checkpoint_of_this_run(callback, getattr(callback, "last_model_path", "") if callback else "")
        source = best or last
        if trainer.is_global_zero:
            directory = self.directory or Path(trainer.default_root_dir)
            if source:
                extra = {**self.extra, "selected": "best" if best else "last",
                         "monitor": getattr(callback, "monitor", None)}
                self.exported = export_checkpoint(source, directory, extra=json_safe(extra, stringify=True))
            else:  # no checkpoint was written (e.g. stopped before the first epoch ended): the final weights
                net = getattr(pl_module, "net", None)
                if net is None:
                    raise InputError("ExportOnFitEnd needs a module with a ContactModel in .net")
                extra = {**self.extra, "selected": "final weights (no checkpoint was written)",
                         "global_step": trainer.global_step, "epoch": trainer.current_epoch}
                self.exported = save_model(net, directory, extra=json_safe(extra, stringify=True))
        trainer.strategy.barrier("protrnn-export")
