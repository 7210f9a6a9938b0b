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
ModelConfig, "alphabet": ..., ...}``, written last): :data:`ENCODER_EXPORT`, written and read with the checks of
:mod:`protrnn.model.io` (the one home of model I/O). Other names than the contact model's ``model.*`` keep an export
from being taken for a contact model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from protrnn.alphabet import DEFAULT_ALPHABET, PAD_TOKEN
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder
from protrnn.model.io import ExportFormat, export_paths, load_export, read_export_metadata, save_export

ENCODER_FORMAT = "protrnn-pretrained-encoder"
ENCODER_FORMAT_VERSION = 1
ENCODER_WEIGHTS_NAME = "encoder.safetensors"
ENCODER_JSON_NAME = "encoder.json"
ENCODER_EXPORT = ExportFormat(ENCODER_FORMAT, ENCODER_FORMAT_VERSION, ENCODER_WEIGHTS_NAME, ENCODER_JSON_NAME,
                              label="pretrained encoder", noun="pretrained encoder",
                              how_to_export="`protrnn pretrain fit` or `protrnn pretrain export`")
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
    return save_export(network, network.config, directory, extra, ENCODER_EXPORT)


def read_pretrained_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``encoder.json`` (no weights read); one-line InputError for anything else."""
    return read_export_metadata(path, ENCODER_EXPORT)


def load_pretrained(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> LoadedPretrained:
    """Rebuild a :class:`PretrainNetwork` from :func:`save_pretrained` output without unpickling (eval mode)."""
    json_path, _ = export_paths(path, ENCODER_EXPORT)
    network, meta = load_export(json_path, PretrainNetwork, ENCODER_EXPORT, map_location)
    return LoadedPretrained(network, meta, json_path.parent)
