"""Which run a checkpoint belongs to: the resolved fit config and the contents of every file it names.

``protrnn train`` and ``protrnn pretrain fit`` record a :func:`run_identity` in each checkpoint (:class:`RunIdentity`)
and compare it before resuming (:func:`protrnn.training.cli.check_resume`): ``--ckpt_path last-if-same`` resumes only
the same run, and ``--ckpt_path last`` refuses other data. The identity holds every setting of the resolved config
except those that do not change what is learnt (:data:`VOLATILE_KEYS`: where outputs go, threads, workers, the time
cap, logging), and for each setting that names an existing file or folder a digest of its contents
(:func:`file_digest`): the data, a pretrained encoder, auxiliary labels. So a changed learning rate, step budget,
``freeze_steps``, encoder or label file makes another run, and a moved or re-written file with the same contents does
not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from protrnn.model.io import peek_checkpoint
from protrnn.utils.io import file_sha256

#: The key of a checkpoint that holds its run's identity.
CHECKPOINT_KEY = "protrnn_run_identity"
#: Settings (dotted keys of the resolved config) that do not change what a run learns.
VOLATILE_KEYS = frozenset({
    "config", "ckpt_path", "num_threads", "export_dir", "trainer.default_root_dir", "trainer.max_time",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.logger", "checkpoint.dirpath",
    "data.num_workers",
})


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config (lists by index: ``trainer.callbacks.0.init_args.path``) -> leaf values."""
    if isinstance(config, Mapping):
        items = [(f"{prefix}{key}", value) for key, value in config.items()]
    elif isinstance(config, list):
        items = [(f"{prefix}{index}", value) for index, value in enumerate(config)]
    else:
        return {prefix.rstrip("."): config}
    out: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, (Mapping, list)) and value:
            out.update(flatten(value, f"{key}."))
        else:
            out[key] = value
    return out


def file_digest(path: Path) -> str:
    """SHA-256 of what a file or folder holds: a protrnn ``.npz`` by its arrays
    (:func:`protrnn.data.dataset.content_sha256`: not its creation record or source paths), another file by its
    bytes, a folder by the names and contents of the files directly in it (an encoder export: encoder.json and
    encoder.safetensors, not its checkpoints or logs)."""
    from protrnn.data.dataset import content_sha256

    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            digest.update(f"{child.name}\0{file_digest(child)}\0".encode())
        return digest.hexdigest()
    if path.suffix == ".npz":
        return content_sha256(path)
    return file_sha256(path)


def run_identity(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{"settings": {key: JSON value}, "files": {key: digest}}`` of a resolved fit config (module docstring)."""
    settings: dict[str, str] = {}
    files: dict[str, str] = {}
    for key, value in flatten(config).items():
        if key in VOLATILE_KEYS or any(key.startswith(f"{v}.") for v in VOLATILE_KEYS):
            continue
        settings[key] = json.dumps(value, sort_keys=True)
        if names_a_path(value):
            files[key] = file_digest(Path(value))
    return {"settings": settings, "files": files}


#: Suffixes of the files a fit config names (data, labels, exports, configs).
PATH_SUFFIXES = frozenset({".npz", ".json", ".safetensors", ".yaml", ".yml", ".ckpt"})


def names_a_path(value: Any) -> bool:
    """Whether a config value names an existing file or folder: a string that holds a path separator or ends in one
    of :data:`PATH_SUFFIXES` (so a setting such as ``cell: lstm`` is not read as a folder named ``lstm``)."""
    if not isinstance(value, str) or not value:
        return False
    path = Path(value)
    return ("/" in value or path.suffix in PATH_SUFFIXES) and path.exists()


def identity_differences(saved: Mapping[str, Any],
                         current: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """``(settings, files)``: ``key: saved -> now`` for each setting, and for each named file whose contents differ
    between two identities its key mapped to ``key contents: sha256 a -> b`` (a key on one side only counts). A
    setting that names a file on both sides is judged by the contents alone: the same data at another path is the
    same run."""
    old_files, new_files = dict(saved.get("files") or {}), dict(current.get("files") or {})
    by_contents = set(old_files) & set(new_files)
    old, new = dict(saved.get("settings") or {}), dict(current.get("settings") or {})
    settings = [f"{key}: {old.get(key, '<unset>')} -> {new.get(key, '<unset>')}"
                for key in sorted(set(old) | set(new)) if key not in by_contents and old.get(key) != new.get(key)]
    files = {key: f"{key} contents: sha256 {str(old_files.get(key, '<unset>'))[:12]} -> "
                  f"{str(new_files.get(key, '<unset>'))[:12]}"
             for key in sorted(by_contents) if old_files[key] != new_files[key]}
    return settings, files


def checkpoint_of_run(path: Path, identity: Mapping[str, Any] | None) -> bool:
    """Whether the checkpoint file ``path`` was written by the run of ``identity``: its recorded identity has the
    same settings and data (:func:`identity_differences`). Read ``weights_only`` and memory-mapped, so the weights are
    not read; False where it cannot be told (no identity given, an unreadable file, one recorded before identities)."""
    if identity is None:
        return False
    checkpoint = peek_checkpoint(path)
    saved = checkpoint.get(CHECKPOINT_KEY) if checkpoint is not None else None
    if not isinstance(saved, Mapping):
        return False
    settings, files = identity_differences(saved, identity)
    return not settings and not files


class RunIdentity(pl.Callback):
    """Writes its run's :func:`run_identity` into every checkpoint (under :data:`CHECKPOINT_KEY`)."""

    def __init__(self, identity: Mapping[str, Any]) -> None:
        self.identity = dict(identity)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.identity
