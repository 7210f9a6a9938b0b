"""Pretraining network: the contact model's embedding + recurrent encoder with per-residue heads, and its export.

:class:`PretrainNetwork` builds ``embedding`` and ``encoder`` exactly as :class:`~protrnn.model.contact_model.ContactModel`
does from the same :class:`~protrnn.model.config.ModelConfig` (so lstm, gru and rnn cells all work and the parameter
names match), and adds two linear read-outs of the encoder states ``h [B, T, 2H]``:

* ``heads.ss8``: 8-state secondary structure (:data:`protrnn.data.structure_labels.SS8_STATES`);
* ``heads.residue``: the 20 standard residues, for masked-residue recovery (a residue replaced in the input is
  predicted from its state, which the bidirectional encoder builds from both sides).

The heads are linear on purpose: whatever the encoder learns has to be linearly readable from ``h``, which is what the
contact head reads downstream.

A pretrained export is a directory with ``encoder.safetensors`` (the whole network's ``state_dict``; safetensors
cannot hold code) and ``encoder.json`` (``{"format": "protrnn-pretrained-encoder", "format_version": 1, "config":
ModelConfig, "alphabet": ..., ...}``, written last), following the conventions of :mod:`protrnn.model.io`. Other names
than the contact model's ``model.*`` keep an export from being taken for a contact model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from protrnn.alphabet import DEFAULT_ALPHABET, PAD_TOKEN, Alphabet
from protrnn.errors import InputError, reading
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder
from protrnn.utils.io import atomic_path, atomic_write

ENCODER_FORMAT = "protrnn-pretrained-encoder"
ENCODER_FORMAT_VERSION = 1
ENCODER_WEIGHTS_NAME = "encoder.safetensors"
ENCODER_JSON_NAME = "encoder.json"
N_SS8 = 8
#: Classes of masked-residue recovery: the standard residues (``<pad>`` and ``<unk>`` are never targets).
N_RESIDUES = len(DEFAULT_ALPHABET.residues)
#: Token of the first standard residue: class ``c`` of the residue head is token ``FIRST_RESIDUE_TOKEN + c``.
FIRST_RESIDUE_TOKEN = DEFAULT_ALPHABET.size - N_RESIDUES
#: ModelConfig keys that fix the shapes or the computation of the embedding and encoder weights (a pretrained encoder
#: fits a contact model only when these agree; dropout, inits and the gradient horizon may differ).
ENCODER_KEYS = ("vocab_size", "cell", "embed_dim", "hidden_size", "num_layers", "residual", "layer_norm")
#: State-dict prefixes shared with ContactModel.
SHARED_PREFIXES = ("embedding.", "encoder.")
_RESERVED = frozenset({"format", "format_version", "config", "alphabet"})


class PretrainHeads(nn.Module):
    """Per-residue read-outs of encoder states ``h [B, T, width]``: ``ss8`` (8 states) and ``residue`` (20)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ss8 = nn.Linear(width, N_SS8)
        self.residue = nn.Linear(width, N_RESIDUES)


@dataclass
class PretrainOutput:
    """Logits of both heads, ``[B, T, 8]`` and ``[B, T, 20]`` (meaningless at padding; losses mask them)."""

    ss8: Tensor
    residue: Tensor


class PretrainNetwork(nn.Module):
    """``tokens [B, T], mask [B, T] -> PretrainOutput``: ContactModel's embedding and encoder plus per-residue heads."""

    def __init__(self, config: ModelConfig, exact_path: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_TOKEN)
        self.encoder = RecurrentEncoder(config, exact_path=exact_path)
        self.heads = PretrainHeads(self.encoder.output_size)

    def encode(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Encoder states ``h [B, T, 2H]`` (zero at padding)."""
        return self.encoder(self.embedding(tokens), mask)  # type: ignore[return-value]

    def forward(self, tokens: Tensor, mask: Tensor) -> PretrainOutput:
        h = self.encode(tokens, mask)
        return PretrainOutput(ss8=self.heads.ss8(h), residue=self.heads.residue(h))


# ------------------------------------------------------------------------------------------------------ export
@dataclass
class LoadedPretrained:
    """A pretrained export read back: the network (eval mode), its parsed ``encoder.json`` and where it lies."""

    network: PretrainNetwork
    metadata: dict[str, Any]
    path: Path


def save_pretrained(network: PretrainNetwork, directory: str | os.PathLike[str],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``encoder.safetensors`` then ``encoder.json`` into ``directory`` (each atomically); returns the JSON.

    ``extra`` (JSON-serialisable: objectives, validation metrics, throughput) is merged into the JSON; it may not
    override ``format``, ``format_version``, ``config`` or ``alphabet``.
    """
    extra = dict(extra or {})
    clash = sorted(_RESERVED & set(extra))
    if clash:
        raise ValueError(f"extra may not override reserved encoder.json key(s): {', '.join(clash)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": ENCODER_FORMAT, "format_version": ENCODER_FORMAT_VERSION, "config": network.config.to_dict(),
            "alphabet": DEFAULT_ALPHABET.to_dict(), **extra}
    text = json.dumps(meta, indent=2) + "\n"  # fails before anything is written if not JSON-able
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in network.state_dict().items()}
    with atomic_path(out / ENCODER_WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": ENCODER_FORMAT})
    with atomic_write(out / ENCODER_JSON_NAME) as handle:
        handle.write(text)
    return out / ENCODER_JSON_NAME


def _json_path(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if target.is_dir():
        target = target / ENCODER_JSON_NAME
    elif target.name == ENCODER_WEIGHTS_NAME:
        target = target.with_name(ENCODER_JSON_NAME)
    if not target.is_file():
        raise InputError(f"not a pretrained encoder: no {ENCODER_JSON_NAME} (export one with `protrnn pretrain fit` "
                         "or `protrnn pretrain export`)", path=path)
    return target


def read_pretrained_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``encoder.json`` (no weights read); one-line InputError for anything else."""
    json_path = _json_path(path)
    with reading(json_path):
        raw = json_path.read_bytes()
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a pretrained encoder: not JSON ({err})", path=json_path) from None
    if not isinstance(meta, dict) or meta.get("format") != ENCODER_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputError(f"not a pretrained encoder: format is {found!r}, expected {ENCODER_FORMAT!r}",
                         path=json_path)
    if meta.get("format_version") != ENCODER_FORMAT_VERSION:
        raise InputError(f"unsupported pretrained encoder format_version {meta.get('format_version')!r}",
                         path=json_path)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("alphabet"), dict):
        raise InputError("encoder.json must contain 'config' and 'alphabet' objects", path=json_path)
    return meta


def load_pretrained(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> LoadedPretrained:
    """Rebuild a :class:`PretrainNetwork` from :func:`save_pretrained` output without unpickling (eval mode)."""
    json_path = _json_path(path)
    meta = read_pretrained_metadata(json_path)
    try:
        config = ModelConfig.from_dict(dict(meta["config"]))
        alphabet = Alphabet.from_dict(dict(meta["alphabet"]))
    except (InputError, TypeError, KeyError) as err:
        raise InputError(f"invalid pretrained encoder description: {err}", path=json_path) from None
    if alphabet != DEFAULT_ALPHABET:
        raise InputError(f"pretrained alphabet {alphabet.residues!r} differs from this version's", path=json_path)
    weights = json_path.with_name(ENCODER_WEIGHTS_NAME)
    if not weights.is_file():
        raise InputError(f"missing {ENCODER_WEIGHTS_NAME} beside {ENCODER_JSON_NAME}", path=json_path)
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"unreadable safetensors weights ({err})", path=weights) from None
    network = PretrainNetwork(config)
    check_state(state, network.state_dict(), source=weights)
    network.load_state_dict(state)
    return LoadedPretrained(network.to(map_location).eval(), meta, json_path.parent)


def check_state(state: dict[str, Tensor], expected: dict[str, Tensor], *, source: object,
                what: str = "weights do not match the config") -> None:
    """One-line InputError naming the first missing, unexpected, mis-shaped or non-finite parameter."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise InputError(f"{what}: parameter {missing[0]!r} is missing"
                         + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""), path=source)
    if unexpected:
        raise InputError(f"{what}: unexpected parameter {unexpected[0]!r}"
                         + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""), path=source)
    for name, reference in expected.items():
        tensor = state[name]
        if tensor.shape != reference.shape:
            raise InputError(f"{what}: parameter {name!r} has shape {tuple(tensor.shape)}, expected "
                             f"{tuple(reference.shape)}", path=source)
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise InputError(f"parameter {name!r} is not a finite float tensor", path=source)
