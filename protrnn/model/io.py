"""Model I/O, in one place: the pickle-free export format, Lightning checkpoints and the bundled model.

An exported model is a directory with two files:

* ``model.safetensors`` (:data:`WEIGHTS_NAME`): the ``state_dict`` (safetensors cannot hold code, so loading it cannot
  execute anything);
* ``model.json`` (:data:`JSON_NAME`): ``{"format": "protrnn-model", "format_version": 1, "config": ModelConfig,
  "alphabet": ..., ...}`` plus any ``extra`` keys (training metadata). It is written last, so a directory with a
  ``model.json`` is complete: re-exporting into it removes the old ``model.json`` before the new weights replace the
  old ones, so an interrupted re-export looks incomplete rather than pairing new weights with an old description.

:func:`load_network` is the one loader every caller uses: it takes an export directory, its ``model.json`` or
``model.safetensors``, or a Lightning ``.ckpt`` written by ``protrnn train`` (read with ``torch.load(weights_only=True)``),
and returns the network in eval mode with its metadata. :func:`load_checkpoint` reads a checkpoint dict for resuming.

The pair of files is one :class:`ExportFormat` (:data:`MODEL_EXPORT`); the pretrained encoder
(:mod:`protrnn.model.pretrain_heads`) is another, written and read by the same :func:`save_export`,
:func:`read_export_metadata` and :func:`load_export` with the same checks (:func:`check_state` for the weights).

Loading never allocates memory for a network the weights cannot fill: the network is first built on the ``meta``
device (shapes only, :func:`expected_state`), and the names, shapes and dtypes the weights file declares (the
safetensors header, read without the tensors) or the checkpoint holds are checked against it; only then are the
weights read and the network built for real. A hand-edited ``config`` with ``hidden_size: 10000000`` is one line
naming the weights file and its first mismatching parameter, not an allocation failure.

An **ensemble** is a directory of exports (e.g. one training recipe at several seeds) plus ``ensemble.json``
(:data:`ENSEMBLE_NAME`): ``{"format": "protrnn-ensemble", "format_version": 1, "members": ["member-1", ...],
"combine": "mean_probability"}``, each member a sub-directory holding one export. :func:`save_ensemble` writes one
(members copied and checked to load; ``ensemble.json`` last; the directory swapped in whole), :func:`load_networks`
loads any model as its list of members (one for a plain export) and the predictor averages their probabilities.
:func:`load_network` refuses an ensemble with a message naming its members: exports and fine-tuning work on one
network, and diagnostics expand an ensemble into its members (``protrnn.diagnostics.run.expand_ensembles``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from protrnn.alphabet import DEFAULT_ALPHABET, Alphabet
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.data.chain import check_contact_cutoff
from protrnn.errors import InputError, parse_json_document, reading
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.utils.io import atomic_path, atomic_write, file_sha256, json_safe, swapped_directory

MODEL_FORMAT = "protrnn-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
JSON_NAME = "model.json"
CHECKPOINT_SUFFIX = ".ckpt"
#: The key of a checkpoint that holds its run's resolved fit config
#: (:class:`protrnn.training.callbacks.TrainingConfigRecord`): what an export of the checkpoint records as
#: ``training_config``.
CKPT_TRAINING_CONFIG = "protrnn_training_config"
#: Where the bundled default model ships (model.safetensors + model.json + README.md + evaluation.json).
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
ENSEMBLE_FORMAT = "protrnn-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
ENSEMBLE_NAME = "ensemble.json"
#: How an ensemble combines its members: the mean of their contact probabilities (the only rule so far).
ENSEMBLE_COMBINE = "mean_probability"
#: An ensemble averages at least two networks (one is an export).
MIN_ENSEMBLE_MEMBERS = 2
#: Largest ``model.json`` / ``ensemble.json`` read (8 MiB; protrnn writes a few kB): a larger one is refused in one line
#: before it is read (its size by ``stat``, then at most this many bytes + 1), so a device or a huge file stops early.
MAX_DESCRIPTION_BYTES = 8 << 20
#: A member's sub-directory name: one plain path component (no separators, no "." / ".." and no leading dot).
_MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The attribute under which the Lightning module holds the network: checkpoint keys start with it.
CHECKPOINT_NET_PREFIX = "net."
_RESERVED_KEYS = frozenset({"format", "format_version", "config", "alphabet"})
#: The dtypes weights may be stored in (each converted to the network's own on loading); anything else (float8, integer,
#: bool, complex) is refused naming the parameter.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: safetensors' names of :data:`WEIGHT_DTYPES` (the ``dtype`` of a tensor in the file's header).
_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
#: :class:`ModelConfig` settings that choose initial values only, never a shape: :func:`expected_state` leaves them
#: off (the chrono init's ``log`` has no native kernel on the ``meta`` device, and torch's Python one imports its
#: compiler, seconds on every load, for values that a load overwrites anyway).
_INIT_ONLY_SETTINGS: dict[str, Any] = {"orthogonal_init": False, "chrono_init": False, "forget_bias": None}
#: The in-place random fills of PyTorch's layer initialisation, skipped on ``meta`` tensors (:class:`_ShapesOnly`).
_RANDOM_FILLS = frozenset({Tensor.normal_, Tensor.uniform_, Tensor.bernoulli_, Tensor.exponential_,
                           Tensor.geometric_, Tensor.log_normal_, Tensor.cauchy_, Tensor.random_})


@dataclass(frozen=True)
class ExportFormat:
    """One pickle-free export kind: ``weights_name`` (safetensors ``state_dict``) beside ``json_name``
    (``{"format": name, "format_version": version, "config": ModelConfig, "alphabet": ..., ...}``, written last).

    ``label`` and ``noun`` word the error messages ("not a {label}: ...", "invalid {noun} description"),
    ``how_to_export`` names the command that writes one.
    """

    name: str
    version: int
    weights_name: str
    json_name: str
    label: str
    noun: str
    how_to_export: str


MODEL_EXPORT = ExportFormat(MODEL_FORMAT, MODEL_FORMAT_VERSION, WEIGHTS_NAME, JSON_NAME, label="protrnn model",
                            noun="model", how_to_export="`protrnn export`")


@dataclass
class LoadedModel:
    """What :func:`load_network` returns: the network (eval mode, on the requested device) and where it came from.

    ``metadata`` is the parsed ``model.json`` for an export; for a checkpoint it is
    ``{"config": ..., "training_hparams": {...}}`` (the optimisation settings the module was built with).
    """

    network: ContactModel
    metadata: dict[str, Any]
    path: Path
    kind: str  # "export" or "checkpoint"
    weights_path: Path
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def config(self) -> ModelConfig:
        return self.network.config

    @property
    def alphabet(self) -> Alphabet:
        return alphabet_of(self.metadata)

    def weights_sha256(self) -> str:
        """SHA-256 of the weights file (safetensors or checkpoint): identifies the model in RR METHOD lines."""
        return file_sha256(self.weights_path)

    @property
    def contact_cutoff(self) -> float:
        """The contact cutoff (Å) the model was trained at: its probabilities are for Cβ-Cβ below it. Read from the
        run's recorded ``training_config`` (``data.contact_cutoff``: an export's ``model.json``, a checkpoint's
        :data:`CKPT_TRAINING_CONFIG`), else a checkpoint's data-module hyper-parameters; a model that records
        neither (an export of a checkpoint whose run config was not found) was trained at the default
        :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF`, the only cutoff before the option existed.
        A recorded value that is no distance is a one-line InputError naming the file."""
        return training_contact_cutoff(self.metadata, self.checkpoint, path=self.path)


def training_contact_cutoff(metadata: Mapping[str, Any], checkpoint: Mapping[str, Any] | None = None, *,
                            path: object | None = None) -> float:
    """:attr:`LoadedModel.contact_cutoff` of a model's metadata (``model.json``) and, for a checkpoint, its dict:
    :func:`recorded_contact_cutoff`, else the default 8 Å."""
    recorded = recorded_contact_cutoff(metadata, checkpoint, path=path)
    return DEFAULT_CONTACT_CUTOFF if recorded is None else recorded


def recorded_contact_cutoff(metadata: Mapping[str, Any], checkpoint: Mapping[str, Any] | None = None, *,
                            path: object | None = None) -> float | None:
    """The cutoff a model's record gives, or None: its ``training_config``'s ``data.contact_cutoff``, else a
    ``contact_cutoff`` key (what ``protrnn export`` copies from a checkpoint whose run config it did not find), else,
    for a checkpoint, its recorded config's or its data-module hyper-parameters' ``contact_cutoff``."""
    sources = [metadata.get("training_config")]
    if checkpoint is not None:
        sources.append(checkpoint.get(CKPT_TRAINING_CONFIG))
    for index, config in enumerate(sources):
        data = config.get("data") if isinstance(config, Mapping) else None
        if isinstance(data, Mapping) and data.get("contact_cutoff") is not None:
            return check_contact_cutoff(data["contact_cutoff"], "the model's recorded data.contact_cutoff", path=path)
        if index == 0 and metadata.get("contact_cutoff") is not None:
            return check_contact_cutoff(metadata["contact_cutoff"], "the model's recorded contact_cutoff", path=path)
    hparams = checkpoint.get("datamodule_hyper_parameters") if checkpoint is not None else None
    if isinstance(hparams, Mapping) and hparams.get("contact_cutoff") is not None:
        return check_contact_cutoff(hparams["contact_cutoff"], "the checkpoint's data contact_cutoff", path=path)
    return None


def alphabet_of(metadata: Mapping[str, Any]) -> Alphabet:
    """The alphabet recorded in a model's metadata (``model.json``), or the default one when none is recorded."""
    raw = metadata.get("alphabet")
    return Alphabet.from_dict(raw) if isinstance(raw, dict) else DEFAULT_ALPHABET


def bundled_model_dir() -> Path:
    """The bundled default model's directory (one export or an ensemble); InputError when this installation ships
    without one."""
    if is_ensemble(PRETRAINED_DIR):
        return PRETRAINED_DIR
    if not (PRETRAINED_DIR / JSON_NAME).is_file() or not (PRETRAINED_DIR / WEIGHTS_NAME).is_file():
        raise InputError(f"no bundled default model in {PRETRAINED_DIR} (this installation ships without one); "
                         "build it with the pipeline (docs/pipeline.md) or pass --model PATH")
    return PRETRAINED_DIR


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a Lightning checkpoint path (by suffix)."""
    return Path(path).suffix == CHECKPOINT_SUFFIX


def load_network(path: str | os.PathLike[str] | None = None, map_location: str | torch.device = "cpu", *,
                 kind: str | None = None) -> LoadedModel:
    """Load any model protrnn writes, without unpickling code: the bundled default (``path=None``), an export
    directory, its ``model.json`` or ``model.safetensors``, or a Lightning ``.ckpt`` of ``protrnn train``.

    ``kind`` forces the reading (``"checkpoint"`` or ``"export"``); by default a ``.ckpt`` suffix means a checkpoint.
    Every problem is an :class:`InputError` naming the file (and, for weights, the parameter).
    """
    if kind not in (None, "checkpoint", "export"):
        raise ValueError(f"kind must be 'checkpoint' or 'export', got {kind!r}")
    target = bundled_model_dir() if path is None else Path(path)
    if kind != "checkpoint" and is_ensemble(target):
        names = ", ".join(member.name for member in ensemble_members(target))
        raise InputError(f"an ensemble ({ENSEMBLE_NAME}: {names}), not one network: give one member's directory "
                         "here; prediction, evaluation and diagnostics take the ensemble", path=target)
    if kind == "checkpoint" or (kind is None and is_checkpoint(target)):
        network, checkpoint = _network_from_checkpoint(target)
        hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if k != "model"}
        metadata: dict[str, Any] = {"config": network.config.to_dict(), "alphabet": DEFAULT_ALPHABET.to_dict(),
                                    "training_hparams": hparams}
        network.export_metadata = metadata
        return LoadedModel(network.to(map_location).eval(), metadata, target, "checkpoint", target, checkpoint)
    json_path, weights_path = export_paths(target)
    network, meta = load_export(json_path, ContactModel, MODEL_EXPORT, map_location)
    network.export_metadata = meta
    return LoadedModel(network, dict(meta), target, "export", weights_path)


def is_ensemble(path: str | os.PathLike[str]) -> bool:
    """True for an ensemble: its directory (holding ``ensemble.json``) or its ``ensemble.json``."""
    target = Path(path)
    return (target / ENSEMBLE_NAME).is_file() if target.is_dir() else target.name == ENSEMBLE_NAME


def ensemble_members(path: str | os.PathLike[str]) -> list[Path]:
    """The member export directories of an ensemble (its directory or ``ensemble.json``), in the listed order.

    One-line :class:`InputError` for another format or version, a member list shorter than
    :data:`MIN_ENSEMBLE_MEMBERS`, repeated or not plain sub-directory names, a member folder that leads out of the
    ensemble's directory (a symbolic link), an unknown ``combine`` rule, a member without ``model.json``, or an
    ``ensemble.json`` larger than :data:`MAX_DESCRIPTION_BYTES` (refused before it is read)."""
    target = Path(path)
    json_path = target / ENSEMBLE_NAME if target.is_dir() else target
    raw, whole = _read_description(json_path)
    if not whole:
        raise _too_large(json_path, "protrnn ensemble", ENSEMBLE_NAME)
    document = parse_json_document(raw, json_path, ENSEMBLE_FORMAT, max_version=ENSEMBLE_FORMAT_VERSION,
                                   what="protrnn ensemble")
    members = document.get("members")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise InputError("'members' must be a list of sub-directory names", path=json_path)
    if len(members) < MIN_ENSEMBLE_MEMBERS:
        raise InputError(f"'members' lists {len(members)} model(s); an ensemble has at least {MIN_ENSEMBLE_MEMBERS}",
                         path=json_path)
    for name in members:
        if not _MEMBER_NAME.fullmatch(name):
            raise InputError(f"member {name!r} is not a plain sub-directory name", path=json_path)
    if len(set(members)) != len(members):
        raise InputError("'members' lists a directory twice", path=json_path)
    if document.get("combine", ENSEMBLE_COMBINE) != ENSEMBLE_COMBINE:
        raise InputError(f"unknown combine rule {document.get('combine')!r} (this version: {ENSEMBLE_COMBINE!r})",
                         path=json_path)
    folders = [json_path.parent / name for name in members]
    home = json_path.parent.resolve()
    for folder in folders:
        if folder.resolve().parent != home:
            raise InputError(f"ensemble member {folder.name!r} leads out of the ensemble's directory", path=json_path)
        if not (folder / JSON_NAME).is_file():
            raise InputError(f"ensemble member {folder.name!r} has no {JSON_NAME}", path=json_path)
    return folders


def load_networks(path: str | os.PathLike[str] | None = None,
                  map_location: str | torch.device = "cpu") -> list[LoadedModel]:
    """Every network of a model: the members of an ensemble (:func:`ensemble_members`, each loaded as an export),
    else the one network :func:`load_network` loads (bundled default, export or checkpoint)."""
    target = bundled_model_dir() if path is None else Path(path)
    if is_ensemble(target):
        return [load_network(member, map_location, kind="export") for member in ensemble_members(target)]
    return [load_network(target, map_location)]


def member_name(k: int) -> str:
    """The sub-directory of an ensemble's k-th member (1-based): ``member-k``."""
    return f"member-{k}"


def write_ensemble_files(directory: Path, members: Sequence[tuple[Path, Mapping[str, Any]]],
                         extra: Mapping[str, Any] | None = None) -> Path:
    """The files of an ensemble in a new (staging) ``directory``: for each ``(weights file, model.json content)``
    a ``member-K`` folder with a copy of the weights and the JSON, then ``ensemble.json`` (plus ``extra`` keys).
    The one writer of the ensemble layout (:func:`save_ensemble`, the bundle installer); callers build
    ``directory`` aside and swap it in whole, and check the members first. Returns the ``ensemble.json`` path."""
    extra = dict(extra or {})
    clash = sorted({"format", "format_version", "members", "combine"} & set(extra))
    if clash:
        raise ValueError(f"extra may not override reserved {ENSEMBLE_NAME} key(s): {', '.join(clash)}")
    if len(members) < MIN_ENSEMBLE_MEMBERS:
        raise InputError(f"an ensemble needs at least {MIN_ENSEMBLE_MEMBERS} models, got {len(members)}")
    names = [member_name(k) for k in range(1, len(members) + 1)]
    for name, (weights_path, metadata) in zip(names, members, strict=True):
        (directory / name).mkdir()
        shutil.copyfile(weights_path, directory / name / WEIGHTS_NAME)
        (directory / name / JSON_NAME).write_text(_json_text(dict(metadata)), encoding="utf-8")
    document = {"format": ENSEMBLE_FORMAT, "format_version": ENSEMBLE_FORMAT_VERSION, "members": names,
                "combine": ENSEMBLE_COMBINE, **extra}
    (directory / ENSEMBLE_NAME).write_text(_json_text(document), encoding="utf-8")  # last
    return directory / ENSEMBLE_NAME


def save_ensemble(members: Sequence[str | os.PathLike[str]], directory: str | os.PathLike[str],
                  extra: dict | None = None) -> Path:
    """Write an ensemble of exported models into ``directory``: each member's ``model.json`` and
    ``model.safetensors`` copied to ``member-K`` (K = 1, 2, ... in the given order), checked to load first, then
    ``ensemble.json`` (plus ``extra`` keys); the directory is built aside and swapped in whole. Returns the JSON path.

    Every member must be an export (not a checkpoint: export it first) with the same alphabet and contact cutoff
    (:attr:`LoadedModel.contact_cutoff`), outside
    ``directory`` (which is replaced whole: it must be new, empty or an ensemble); :func:`write_ensemble_files`
    checks their number."""
    target = Path(directory).resolve()
    sources = []
    cutoffs: list[float] = []
    for member in members:
        if is_ensemble(member) or is_checkpoint(member):
            raise InputError("an ensemble member must be one exported model (export a checkpoint with "
                             "`protrnn export`; list an ensemble's members one by one)", path=member)
        json_path, weights_path = export_paths(member)
        if target in (json_path.parent.resolve(), *json_path.parent.resolve().parents):
            raise InputError(f"the ensemble directory {target} holds this member, and is replaced whole: write the "
                             "ensemble elsewhere", path=member)
        if any(weights_path.resolve() == seen.resolve() for seen, _ in sources):
            raise InputError("listed twice: an ensemble's members are different models", path=member)
        metadata = load_network(json_path, kind="export").metadata  # every check of a load, before any write
        cutoff = training_contact_cutoff(metadata, path=json_path)
        if sources and cutoff != cutoffs[0]:
            raise InputError(f"trained at contact cutoff {cutoff:g} Å, but {members[0]} at {cutoffs[0]:g} Å: an "
                             "ensemble averages probabilities of one contact definition", path=member)
        cutoffs.append(cutoff)
        sources.append((weights_path, metadata))
    if target.exists() and not (target.is_dir() and (not any(target.iterdir()) or is_ensemble(target))):
        raise InputError("exists and is not an ensemble; the ensemble directory is replaced whole, so give a new or "
                         "empty directory, or an ensemble to replace", path=directory)
    with swapped_directory(target) as staging:  # resolved: "-o ." has no name to build a sibling from
        write_ensemble_files(staging, sources, extra)
    return Path(directory) / ENSEMBLE_NAME


def _json_text(document: Mapping[str, Any]) -> str:
    """``document`` as the strict JSON protrnn writes: NaN and infinities become ``null`` (:func:`json_safe`), so no
    reader meets the ``NaN`` literal that Python's ``json`` would write and strict parsers refuse."""
    return json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n"


def save_model(model: ContactModel, directory: str | os.PathLike[str], extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` then ``model.json`` into ``directory`` (each atomically); returns the JSON path.

    ``extra`` (JSON-serialisable, e.g. training metadata) is merged into the JSON; it may not override the
    reserved keys ``format``, ``format_version``, ``config`` and ``alphabet``.
    """
    return save_export(model, model.config, directory, extra, MODEL_EXPORT)


def save_export(network: nn.Module, config: ModelConfig, directory: str | os.PathLike[str], extra: dict | None,
                fmt: ExportFormat) -> Path:
    """Write ``network``'s weights then its JSON description (``fmt``) into ``directory``, each atomically; returns
    the JSON path. ``extra`` is merged into the JSON (strict JSON: NaN / inf as ``null``) and may not override the
    reserved keys.

    Nothing is created when the description cannot be written. An existing JSON description is removed once the new
    weights are written and before they replace the old ones, and the new one is written last: a re-export stopped
    half-way leaves a directory without a JSON description (incomplete, refused by the loaders), never new weights
    beside an old description."""
    if is_ensemble(directory):
        raise InputError(f"holds an ensemble ({ENSEMBLE_NAME}), which loading prefers: an export beside it would never "
                         "be used; give another directory", path=directory)
    extra = dict(extra or {})
    clash = sorted(_RESERVED_KEYS & set(extra))
    if clash:
        raise ValueError(f"extra may not override reserved {fmt.json_name} key(s): {', '.join(clash)}")
    out = Path(directory)
    meta = {"format": fmt.name, "format_version": fmt.version,
            "config": config.to_dict(), "alphabet": DEFAULT_ALPHABET.to_dict(), **extra}
    text = _json_text(meta)  # fails before anything is written (the directory included) if not JSON-able
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in network.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / fmt.weights_name) as tmp:
        mode = stat.S_IMODE(tmp.stat().st_mode)  # a plain open()'s mode; save_file makes the file anew, as 0600
        save_file(state, str(tmp), metadata={"format": fmt.name, "format_version": str(fmt.version)})
        tmp.chmod(mode)
        (out / fmt.json_name).unlink(missing_ok=True)  # the old description must never describe the new weights
    with atomic_write(out / fmt.json_name) as handle:
        handle.write(text)
    return out / fmt.json_name


def export_paths(path: str | os.PathLike[str], fmt: ExportFormat = MODEL_EXPORT) -> tuple[Path, Path]:
    """(JSON, weights) of an export of ``fmt``: its directory, its JSON file or its weights file."""
    target = Path(path)
    if target.is_dir():
        json_path = target / fmt.json_name
        if not json_path.is_file():
            raise InputError(f"not a {fmt.label}: no {fmt.json_name} in the directory (export one with "
                             f"{fmt.how_to_export})", path=target)
    elif target.is_file():
        json_path = target.with_name(fmt.json_name) if target.name == fmt.weights_name else target
    else:
        raise InputError(f"{fmt.noun} path does not exist", path=target)
    if not json_path.is_file():
        raise InputError(f"not a {fmt.label}: no {fmt.json_name} beside the weights", path=target)
    return json_path, json_path.with_name(fmt.weights_name)


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """Parse and validate ``model.json`` (no weights read). Raises :class:`InputError` for anything that is not a
    protrnn model: a pickle / PyTorch or Lightning checkpoint, non-JSON, another format or a newer version."""
    return read_export_metadata(path, MODEL_EXPORT)


def read_export_metadata(path: str | os.PathLike[str], fmt: ExportFormat) -> dict[str, Any]:
    """Parse and validate the JSON description of an export of ``fmt`` (no weights read); one-line InputError for
    a pickle, non-JSON, another format, an unsupported version, missing ``config`` / ``alphabet``, or a file larger
    than :data:`MAX_DESCRIPTION_BYTES` (refused before it is read; a pickle of any size is named as one)."""
    json_path, _ = export_paths(path, fmt)
    raw, whole = _read_description(json_path)
    if raw[:1] == b"\x80" or raw[:2] == b"PK":
        raise InputError(f"not a {fmt.label}: this is a pickle / PyTorch checkpoint, which is never unpickled; "
                         f"export one with {fmt.how_to_export}", path=json_path)
    if not whole:
        raise _too_large(json_path, fmt.label, fmt.json_name)
    meta = parse_json_document(raw, json_path, fmt.name, max_version=fmt.version, what=fmt.label)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("alphabet"), dict):
        raise InputError(f"{fmt.json_name} must contain 'config' and 'alphabet' objects", path=json_path)
    return meta


def _read_description(path: Path) -> tuple[bytes, bool]:
    """``(bytes, True)``: all of a JSON description no larger than :data:`MAX_DESCRIPTION_BYTES`; ``(first bytes,
    False)`` for a larger one, whose size ``stat`` tells (never more than the cap + 1 bytes read): the caller names a
    pickle by its first bytes, and refuses the rest (:func:`_too_large`). Unreadable files are one-line InputErrors."""
    with reading(path), open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_DESCRIPTION_BYTES:
            return handle.read(2), False
        raw = handle.read(MAX_DESCRIPTION_BYTES + 1)  # a file that grew since the stat is cut here
    return (raw, True) if len(raw) <= MAX_DESCRIPTION_BYTES else (raw[:2], False)


def _too_large(path: Path, label: str, name: str) -> InputError:
    """The refusal of a JSON description over :data:`MAX_DESCRIPTION_BYTES` (``label``: what it should be; ``name``:
    the file name protrnn writes it as)."""
    return InputError(f"not a {label}: larger than {MAX_DESCRIPTION_BYTES >> 20} MiB (protrnn writes {name} files "
                      "of a few kB)", path=path)


def load_export(path: str | os.PathLike[str], build: Callable[[ModelConfig], nn.Module], fmt: ExportFormat,
                map_location: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild ``build(config)`` from an export of ``fmt`` (directory, JSON or weights path) without unpickling
    anything; returns the network (eval mode, on ``map_location``) and the parsed JSON. The alphabet must be this
    version's and every weight must match the config (:func:`check_state`)."""
    json_path, weights_path = export_paths(path, fmt)
    meta = read_export_metadata(json_path, fmt)
    config = recorded_config(meta["config"], what=f"{fmt.noun} description", source=json_path)
    try:
        alphabet = Alphabet.from_dict(dict(meta["alphabet"]))
    except (TypeError, ValueError, KeyError) as err:
        raise InputError(f"invalid {fmt.noun} description: {_reason(err)}", path=json_path) from None
    if alphabet.size != config.vocab_size:
        raise InputError(f"alphabet has {alphabet.size} tokens but config.vocab_size is {config.vocab_size}",
                         path=json_path)
    if alphabet != DEFAULT_ALPHABET:
        raise InputError(f"{fmt.noun} alphabet {alphabet.residues!r} differs from this version's "
                         f"{DEFAULT_ALPHABET.residues!r}", path=json_path)
    if not weights_path.is_file():
        raise InputError(f"missing weights file {fmt.weights_name} beside {fmt.json_name}", path=json_path)
    expected = expected_state(build, config, what=f"invalid {fmt.noun} description", source=json_path)
    check_layout(_declared_state(weights_path, fmt), expected, source=weights_path)  # before reading any weights
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"not a {fmt.label}: unreadable safetensors weights ({err})", path=weights_path) from None
    check_state(state, expected, source=weights_path)
    network = build(config)
    network.load_state_dict({name: state[name].to(expected[name].dtype) for name in expected})
    return network.to(map_location).eval(), meta


def expected_state(build: Callable[[ModelConfig], nn.Module], config: ModelConfig, *, what: str,
                   source: object) -> dict[str, Tensor]:
    """The ``state_dict`` of ``build(config)`` built on the ``meta`` device: every parameter's name, shape and dtype,
    with no memory allocated however large the config (and the global random state untouched). A config whose
    parameters cannot even be sized (more elements than an index holds) is an :class:`InputError`
    ``WHAT: ...`` naming ``source``."""
    shapes_only = dataclasses.replace(config, **_INIT_ONLY_SETTINGS)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), _ShapesOnly():
            return dict(build(shapes_only).state_dict())
    except (RuntimeError, TypeError, OverflowError) as err:  # torch's words for a size beyond its integers
        if "overflow" not in str(err).lower():
            raise
        reason = str(err).strip().splitlines()[0]
        raise InputError(f"{what}: its parameters are too large to exist ({reason})", path=source) from None


class _ShapesOnly(TorchFunctionMode):
    """Skips the initial values of ``meta`` tensors (which hold none): ``torch.nn.init``'s in-place fills and
    :data:`_RANDOM_FILLS` return their tensor untouched. On the ``meta`` device ``normal_`` runs torch's Python
    reference, whose first call imports torch's compiler (seconds): a shape-only build must not pay that."""

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        fills = func in _RANDOM_FILLS or (getattr(func, "__module__", None) == "torch.nn.init"
                                          and getattr(func, "__name__", "").endswith("_"))
        if fills and isinstance(target, Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def _declared_state(weights_path: Path, fmt: ExportFormat) -> dict[str, Tensor]:
    """The tensors a safetensors file declares in its header, as ``meta`` tensors of their shapes and dtypes (no
    weights read; safetensors itself checks that the header's tensors fill the file exactly). A dtype other than
    :data:`WEIGHT_DTYPES` is an :class:`InputError` naming the file and the parameter."""
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            declared = {name: (handle.get_slice(name).get_shape(), handle.get_slice(name).get_dtype())
                        for name in handle.keys()}  # noqa: SIM118 - safe_open is no mapping
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"not a {fmt.label}: unreadable safetensors weights ({err})", path=weights_path) from None
    state = {}
    for name, (shape, code) in declared.items():
        if code not in _SAFETENSORS_DTYPES:
            raise InputError(f"parameter {name!r} has dtype {code}; weights must be one of {_dtype_names()}",
                             path=weights_path)
        state[name] = torch.empty(shape, dtype=_SAFETENSORS_DTYPES[code], device="meta")
    return state


def _dtype_names() -> str:
    """:data:`WEIGHT_DTYPES` for messages: ``float16, bfloat16, float32, float64``."""
    return ", ".join(str(dtype).removeprefix("torch.") for dtype in WEIGHT_DTYPES)


def recorded_config(raw: Mapping[str, Any], *, what: str, source: object) -> ModelConfig:
    """The :class:`ModelConfig` a model record holds (an export's ``config``, a checkpoint's
    ``hyper_parameters["model"]``); a config this version cannot build is one :class:`InputError` naming ``source``:
    ``invalid WHAT: REASON``."""
    try:
        return ModelConfig.from_dict(dict(raw))
    except (TypeError, ValueError, KeyError) as err:
        raise InputError(f"invalid {what}: {_reason(err)}", path=source) from None


def _reason(err: Exception) -> str:
    """An error's message without the location an :class:`InputError` prefixes (the caller names the file)."""
    return err.reason if isinstance(err, InputError) else str(err)


def check_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], *, source: object,
                what: str = "weights do not match the config") -> None:
    """One-line InputError naming the first missing, unexpected or mis-shaped parameter of ``state`` against
    ``expected`` (prefixed by ``what``), or the first that is not a dense tensor with values (a ``meta`` tensor has
    none) or not finite in the network's dtype, the one it is loaded as (a float64 ``1e300`` is infinite in float32);
    ``source`` is the file. ``expected`` may be ``meta`` tensors (:func:`expected_state`)."""
    check_layout(state, expected, source=source, what=what)
    for name, reference in expected.items():
        tensor = state[name]
        if tensor.is_meta:
            raise InputError(f"parameter {name!r} is a meta tensor (a shape without values)", path=source)
        if not torch.isfinite(tensor).all():
            raise InputError(f"parameter {name!r} contains NaN or infinite values", path=source)
        wider = (reference.dtype.is_floating_point  # float64 into float32, say
                 and torch.finfo(tensor.dtype).max > torch.finfo(reference.dtype).max)
        if wider and not torch.isfinite(tensor.to(reference.dtype)).all():
            raise InputError(f"parameter {name!r} contains NaN or infinite values as "
                             f"{str(reference.dtype).removeprefix('torch.')} (values beyond its range)", path=source)


def check_layout(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], *, source: object,
                 what: str = "weights do not match the config") -> None:
    """:func:`check_state` without reading any value: names, shapes, layouts (dense only: a sparse tensor is refused
    naming the parameter) and dtypes, so both ``state`` and ``expected`` may be ``meta`` tensors (a file's declared
    tensors, :func:`expected_state`)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise InputError(f"{what}: missing parameter {missing[0]!r}"
                         + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""), path=source)
    if unexpected:
        raise InputError(f"{what}: unexpected parameter {unexpected[0]!r}"
                         + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""), path=source)
    for name, reference in expected.items():
        tensor = state[name]
        if not isinstance(tensor, Tensor):
            raise InputError(f"{what}: parameter {name!r} is a {type(tensor).__name__}, not a tensor", path=source)
        if tensor.layout != torch.strided:
            raise InputError(f"parameter {name!r} is a {str(tensor.layout).removeprefix('torch.')} tensor; weights "
                             "must be dense (strided) tensors", path=source)
        if tensor.shape != reference.shape:
            raise InputError(f"{what}: parameter {name!r} has shape {tuple(tensor.shape)}, config implies "
                             f"{tuple(reference.shape)}", path=source)
        if tensor.dtype not in WEIGHT_DTYPES:
            raise InputError(f"parameter {name!r} has dtype {str(tensor.dtype).removeprefix('torch.')}; weights "
                             f"must be one of {_dtype_names()}", path=source)


def peek_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any] | None:
    """A checkpoint's fields, read ``weights_only`` and memory-mapped (the weights are not read), or None for a file
    that cannot be read that way: for the checks of which run or folder wrote a checkpoint, to which a damaged or
    foreign file is simply not the one sought (:func:`load_checkpoint` names what is wrong with a file instead)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # whatever torch raises on a damaged or foreign file
        return None
    return checkpoint if isinstance(checkpoint, Mapping) else None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling code (``weights_only=True``); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path=path)
    with reading(path), open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # torch.save's zip archive; torch's own message would be about pickles
            raise InputError("not a readable checkpoint (not a torch archive: protrnn train and pretrain write "
                             "Lightning .ckpt files)", path=path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError("not a readable checkpoint: refused, it holds pickled Python objects besides tensors, and "
                         "protrnn never unpickles those (they can run code)", path=path) from None
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a readable checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable checkpoint ({reason})", path=path) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError("not a Lightning checkpoint (no 'state_dict')", path=path)
    state = checkpoint["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"not a Lightning checkpoint: its 'state_dict' is a {type(state).__name__}, not a dict",
                         path=path)
    odd = next((key for key in state if not isinstance(key, str)), None)
    if odd is not None:
        raise InputError(f"not a Lightning checkpoint: its 'state_dict' has a key that is not a name ({odd!r})",
                         path=path)
    hparams = checkpoint.get("hyper_parameters")
    if hparams is not None and not isinstance(hparams, dict):
        raise InputError(f"not a Lightning checkpoint: its 'hyper_parameters' is a {type(hparams).__name__}, not a "
                         "dict", path=path)
    return checkpoint


def network_from_checkpoint(checkpoint: Mapping[str, Any], build: Callable[[ModelConfig], nn.Module], *,
                            source: object, what: str = "weights do not match the architecture recorded in the "
                                                        "checkpoint") -> nn.Module:
    """Rebuild ``build(config)`` from a checkpoint of ``protrnn train`` or ``protrnn pretrain fit`` read with
    :func:`load_checkpoint`: the architecture is ``hyper_parameters["model"]``, the weights are the state entries
    under :data:`CHECKPOINT_NET_PREFIX`, checked with :func:`check_state` (``what`` prefixes its message)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams.get("model"), Mapping):
        raise InputError("checkpoint has no model architecture in its hyper-parameters "
                         "(was it written by protrnn train?)", path=source)
    described = "model architecture in the checkpoint's hyper-parameters"
    config = recorded_config(hparams["model"], what=described, source=source)
    expected = expected_state(build, config, what=f"invalid {described}", source=source)
    prefix = CHECKPOINT_NET_PREFIX
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    check_state(state, expected, source=source, what=what)  # before the network takes any memory
    network = build(config)
    network.load_state_dict(state, strict=True)
    return network


def _network_from_checkpoint(path: Path) -> tuple[ContactModel, dict[str, Any]]:
    """Rebuild the ContactModel stored in a checkpoint of ``protrnn train`` (:func:`network_from_checkpoint`)."""
    checkpoint = load_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if isinstance(hparams, Mapping) and {"ss_weight", "mask_weight"} <= set(hparams):
        # the pretraining module's own settings (protrnn.training.pretrain.PretrainLightningModule): an encoder with
        # pretraining heads, not a contact model, whose weights had been reported as "missing parameter 'head...'"
        raise InputError("a pretraining checkpoint of protrnn pretrain fit, not a contact model: export it with "
                         "`protrnn pretrain export`, and train a contact model from it (docs/pretraining.md)", path=path)
    config = hparams.get("model") if isinstance(hparams, Mapping) else None
    architecture = f"{config.get('cell')}/{config.get('head')}" if isinstance(config, Mapping) else "?"
    net = network_from_checkpoint(checkpoint, ContactModel, source=path,
                                  what=f"weights do not match the architecture {architecture} recorded in the "
                                       "checkpoint")
    return net.eval(), checkpoint
