"""The contact network (embedding + recurrent encoder + pair head) and its pickle-free export format.

A saved model is a directory with two files:

* ``model.safetensors``: the ``state_dict`` (safetensors cannot hold code, so loading it cannot execute anything);
* ``model.json``: ``{"format": "protrnn-model", "format_version": 1, "config": ModelConfig, "alphabet": ..., ...}``
  plus any ``extra`` keys (training metadata). It is written last, so a directory with a ``model.json`` is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from protrnn.alphabet import DEFAULT_ALPHABET, PAD_TOKEN, Alphabet
from protrnn.errors import InputError, reading
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder
from protrnn.model.heads import build_head
from protrnn.utils.io import atomic_path, atomic_write

MODEL_FORMAT = "protrnn-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
JSON_NAME = "model.json"
_RESERVED_KEYS = frozenset({"format", "format_version", "config", "alphabet"})


class ContactModel(nn.Module):
    """``tokens [B, T] (0 = padding), mask [B, T] -> symmetric contact logits [B, T, T]``."""

    def __init__(self, config: ModelConfig, exact_path: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_TOKEN)
        self.encoder = RecurrentEncoder(config, exact_path=exact_path)
        self.head = build_head(config)
        #: Parsed ``model.json`` when the model came from :func:`load_model_files` (empty otherwise).
        self.export_metadata: dict[str, object] = {}

    def embed(self, tokens: Tensor) -> Tensor:
        """``x [B, T, E]``: the leaf that gradient diagnostics differentiate against (d logit / d x_s)."""
        return self.embedding(tokens)

    def forward_embedded(self, x: Tensor, mask: Tensor,
                         return_layers: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits from embedded inputs; with ``return_layers`` also each encoder layer's output [B, T, 2H]."""
        h, layers = self.encoder(x, mask, return_layers=True)
        logits = self.head(h, mask)
        return (logits, layers) if return_layers else logits

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.forward_embedded(self.embed(tokens), mask)  # type: ignore[return-value]

    @torch.no_grad()
    def predict_proba(self, tokens: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
        """Contact probabilities [B, T, T], pairs scored in tiles of ``chunk_size`` (default
        ``config.pair_chunk_size``) so head memory is bounded (see :mod:`protrnn.model.heads`).

        Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise InputError(f"tokens must lie in [0, {self.config.vocab_size}); "
                             f"got [{int(tokens.min())}, {int(tokens.max())}]")
        was_training = self.training
        self.eval()
        try:
            h = self.encoder(self.embed(tokens), mask)
            return torch.sigmoid(self.head.predict_logits(h, mask, chunk_size))
        finally:
            self.train(was_training)


def save_model(model: ContactModel, directory: str | os.PathLike[str], extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` then ``model.json`` into ``directory`` (each atomically); returns the JSON path.

    ``extra`` (JSON-serialisable, e.g. training metadata) is merged into the JSON; it may not override the
    reserved keys ``format``, ``format_version``, ``config`` and ``alphabet``.
    """
    extra = dict(extra or {})
    clash = sorted(_RESERVED_KEYS & set(extra))
    if clash:
        raise ValueError(f"extra may not override reserved model.json key(s): {', '.join(clash)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
            "config": model.config.to_dict(), "alphabet": DEFAULT_ALPHABET.to_dict(), **extra}
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"  # fails before anything is written if not JSON-able
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION)})
    with atomic_write(out / JSON_NAME) as handle:
        handle.write(text)
    return out / JSON_NAME


def _resolve(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(model.json, model.safetensors) for a model directory, its model.json or its model.safetensors."""
    target = Path(path)
    if target.is_dir():
        json_path = target / JSON_NAME
        if not json_path.is_file():
            raise InputError(f"not a protrnn model: no {JSON_NAME} in the directory", path=target)
    elif target.is_file():
        json_path = target.with_name(JSON_NAME) if target.name == WEIGHTS_NAME else target
    else:
        raise InputError("model path does not exist", path=target)
    if not json_path.is_file():
        raise InputError(f"not a protrnn model: no {JSON_NAME} beside the weights", path=target)
    return json_path, json_path.with_name(WEIGHTS_NAME)


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """Parse and validate ``model.json`` (no weights read). Raises :class:`InputError` for anything that is not a
    protrnn model: a pickle / PyTorch or Lightning checkpoint, non-JSON, another format or a newer version."""
    json_path, _ = _resolve(path)
    with reading(json_path):
        raw = json_path.read_bytes()
    if raw[:1] == b"\x80" or raw[:2] == b"PK":
        raise InputError("not a protrnn model: this is a pickle / PyTorch checkpoint, which is never unpickled; "
                         "export one with `protrnn export`", path=json_path)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a protrnn model: not a JSON model description ({err})", path=json_path) from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputError(f"not a protrnn model: format is {found!r}, expected {MODEL_FORMAT!r}", path=json_path)
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MODEL_FORMAT_VERSION:
        raise InputError(f"unsupported protrnn model format_version {version!r} "
                         f"(this version reads 1..{MODEL_FORMAT_VERSION})", path=json_path)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("alphabet"), dict):
        raise InputError("model.json must contain 'config' and 'alphabet' objects", path=json_path)
    return meta


def load_model_files(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> ContactModel:
    """Rebuild a :class:`ContactModel` from :func:`save_model` output (a directory, its ``model.json`` or its
    ``model.safetensors``) without unpickling anything. Returns the model in eval mode with
    ``export_metadata`` set to the parsed JSON.

    Every mismatch is an :class:`InputError` that names the file and, for weights, the parameter.
    """
    json_path, weights_path = _resolve(path)
    meta = read_model_metadata(json_path)
    try:
        config = ModelConfig.from_dict(dict(meta["config"]))  # type: ignore[arg-type]
        alphabet = Alphabet.from_dict(dict(meta["alphabet"]))  # type: ignore[arg-type]
    except (InputError, TypeError, KeyError) as err:
        raise InputError(f"invalid model description: {err}", path=json_path) from None
    if alphabet.size != config.vocab_size:
        raise InputError(f"alphabet has {alphabet.size} tokens but config.vocab_size is {config.vocab_size}",
                         path=json_path)
    if alphabet != DEFAULT_ALPHABET:
        raise InputError(f"model alphabet {alphabet.residues!r} differs from this version's "
                         f"{DEFAULT_ALPHABET.residues!r}", path=json_path)
    if not weights_path.is_file():
        raise InputError(f"missing weights file {WEIGHTS_NAME} beside model.json", path=json_path)
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"not a protrnn model: unreadable safetensors weights ({err})", path=weights_path) from None
    model = ContactModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise InputError(f"weights do not match the config: missing parameter {missing[0]!r}"
                         + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""), path=weights_path)
    if unexpected:
        raise InputError(f"weights do not match the config: unexpected parameter {unexpected[0]!r}"
                         + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""), path=weights_path)
    for name, reference in expected.items():
        tensor = state[name]
        if tensor.shape != reference.shape:
            raise InputError(f"weights do not match the config: parameter {name!r} has shape "
                             f"{tuple(tensor.shape)}, config implies {tuple(reference.shape)}", path=weights_path)
        if not tensor.is_floating_point():
            raise InputError(f"parameter {name!r} has non-float dtype {tensor.dtype}", path=weights_path)
        if not torch.isfinite(tensor).all():
            raise InputError(f"parameter {name!r} contains NaN or infinite values", path=weights_path)
    model.load_state_dict({name: state[name].to(expected[name].dtype) for name in expected})
    model.to(map_location)
    model.export_metadata = meta
    return model.eval()
