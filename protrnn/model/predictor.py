"""Sequences -> contact probabilities: :class:`Predictor` (cleaning with the model's alphabet, encoding, batching under
memory budgets via :func:`protrnn.data.packing.pack`, padding via :func:`~protrnn.data.packing.right_pad`, tiled pair
scoring so one long chain runs in bounded memory) and :func:`load_model`. Kept with the model, as ESM keeps its batch
converter with its alphabet; the FASTA-to-files run is :mod:`protrnn.predict.run`.

Public API (stable, see docs/predict.md)::

    model = protrnn.load_model()                 # bundled default model (or load_model("path/to/model_dir"))
    probs = model.predict(["MKV...", "GSH..."])  # one L x L float32 symmetric probability matrix per sequence
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from protrnn import __version__
from protrnn.alphabet import DEFAULT_ALPHABET, Alphabet
from protrnn.data.packing import pack, right_pad
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import load_network

#: Padded residues per batch (B x T_max): bounds the recurrent activations.
DEFAULT_BATCH_TOKENS = 8192
#: Cap on B x T_max^2 per batch: bounds the B x T x T float32 output (64 MiB).
MAX_BATCH_PAIRS = 1 << 24
#: Cap on pair-feature floats per batch, B x E^2 x pair_dim, where E = min(T_max, tile + 2 x halo) is the side of
#: the pair block the head holds at once (see protrnn.model.heads): 128 MiB per pair-feature tensor.
PAIR_FEATURE_BUDGET = 1 << 25


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the named device (checked to exist)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} requested but CUDA is not available")
    return resolved


def load_model(path: str | os.PathLike[str] | None = None,
               device: str | torch.device | None = None) -> Predictor:
    """The bundled default model (``path=None``), an exported one (its directory, ``model.json`` or
    ``model.safetensors``) or a Lightning ``.ckpt`` of ``protrnn train``, ready to predict on ``device`` (default:
    CUDA when available, else CPU).

    Nothing is unpickled: see :func:`protrnn.model.io.load_network`.
    """
    loaded = load_network(path)
    source = "bundled default model" if path is None else str(path)
    return Predictor(loaded.network, device=device, metadata=loaded.metadata, source=source,
                     weights_sha256=loaded.weights_sha256())


def plan_batches(lengths: Sequence[int], batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_pairs: int = MAX_BATCH_PAIRS, *, pair_extent: int | None = None,
                 max_pair_blocks: int | None = None) -> list[list[int]]:
    """Group sequence indices into batches, longest first (ties by index); deterministic for given lengths.

    A batch of n chains padded to width T keeps ``n * T <= batch_tokens``, ``n * T^2 <= max_pairs`` and, when
    given, ``n * min(T, pair_extent)^2 <= max_pair_blocks`` (the pair block a tiled head holds at once). A chain
    over budget runs alone. See :func:`protrnn.data.packing.pack`.
    """
    return pack(lengths, "longest_first", max_tokens=batch_tokens, max_pairs=max_pairs, pair_extent=pair_extent,
                max_pair_blocks=max_pair_blocks)


class Predictor:
    """A loaded contact model plus what is needed to use it on raw sequences.

    ``predict`` returns, per sequence, an L x L float32 symmetric matrix of contact probabilities. Every entry is
    filled by the model, but the diagonal and pairs with |i - j| < 6 are never scored in training or evaluation
    (CASP convention), so their values carry no meaning.
    """

    def __init__(self, model: ContactModel, *, device: str | torch.device | None = None,
                 metadata: dict[str, Any] | None = None, source: str = "", weights_sha256: str = "") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self._metadata = dict(metadata or {})
        alphabet = self._metadata.get("alphabet")
        self.alphabet = Alphabet.from_dict(alphabet) if isinstance(alphabet, dict) else DEFAULT_ALPHABET
        self.source = source
        self.weights_sha256 = weights_sha256

    @property
    def config(self) -> ModelConfig:
        """The architecture (``ModelConfig``) the model was built with."""
        return self.model.config

    @property
    def metadata(self) -> dict[str, Any]:
        """The content of ``model.json`` (format, config, alphabet, and what the exporter recorded)."""
        return self._metadata

    def method_lines(self) -> list[str]:
        """RR ``METHOD`` lines describing this model; they also identify it when a run resumes."""
        cfg = self.config
        lines = [f"protrnn {__version__}: single-sequence contact prediction, no alignment",
                 f"bidirectional {cfg.cell.upper()} encoder, {cfg.num_layers} layers x {cfg.hidden_size} units per "
                 f"direction, {cfg.head} pair head"]
        if self.weights_sha256:
            lines.append(f"weights sha256 {self.weights_sha256}")
        return lines

    def plan(self, lengths: Sequence[int], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[list[int]]:
        """Batches for these lengths under the token budget and this model's pair-memory budget."""
        cfg = self.config
        extent = cfg.pair_chunk_size + 2 * int(getattr(self.model.head, "halo", 0))
        return plan_batches(lengths, batch_tokens, MAX_BATCH_PAIRS, pair_extent=extent,
                            max_pair_blocks=max(1, PAIR_FEATURE_BUDGET // cfg.pair_dim))

    def clean(self, sequence: str, *, record: str | None = None, path: object | None = None) -> str:
        """The canonical sequence the model sees, cleaned with the model's own alphabet (from its ``model.json``;
        see :class:`~protrnn.alphabet.Alphabet`): upper case, gaps and one trailing ``*`` removed, U/O mapped.

        This is the one place a sequence is cleaned for prediction: FASTA records arrive as written. A letter the
        alphabet does not accept, or nothing left once cleaned, is an :class:`InputError` naming ``path``,
        ``record`` and the 1-based position in ``sequence`` as given.
        """
        cleaned = self.alphabet.clean(sequence, record=record, path=path)
        if not cleaned:
            raise InputError("empty sequence", path=path, record=record)
        return cleaned

    def predict(self, sequences: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[np.ndarray]:
        """One L x L float32 symmetric probability matrix per sequence, in input order.

        Sequences are cleaned with the model's alphabet (lower case, gaps, U/O, a trailing ``*``), batched by length
        within ``batch_tokens`` padded residues, and run on the predictor's device.
        """
        if isinstance(sequences, str):
            raise TypeError("predict expects a list of sequences, not a single string")
        cleaned = [self.clean(seq, record=f"#{k + 1}") for k, seq in enumerate(sequences)]
        results: list[np.ndarray | None] = [None] * len(cleaned)
        for batch in self.plan([len(s) for s in cleaned], batch_tokens):
            for index, probs in zip(batch, self.predict_batch([cleaned[k] for k in batch]), strict=True):
                results[index] = probs
        return [r for r in results if r is not None]

    def predict_batch(self, sequences: Sequence[str]) -> list[np.ndarray]:
        """Run one padded batch of already-cleaned sequences (no re-batching)."""
        lengths = [len(s) for s in sequences]
        tokens = right_pad([np.asarray(self.alphabet.encode(seq), dtype=np.int64) for seq in sequences], np.int64,
                           fill=self.alphabet.padding_idx)
        tokens_t = torch.from_numpy(tokens).to(self.device)
        mask = tokens_t != self.alphabet.padding_idx
        with torch.inference_mode():
            probs = self.model.predict_proba(tokens_t, mask)
        probs_np = probs.float().cpu().numpy()
        out = []
        for row, length in enumerate(lengths):
            upper = np.triu(probs_np[row, :length, :length])
            out.append((upper + np.triu(upper, 1).T).astype(np.float32, copy=False))  # exactly symmetric
        return out
