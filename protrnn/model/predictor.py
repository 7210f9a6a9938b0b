"""Sequences -> contact probabilities: :class:`Predictor` (cleaning with the model's alphabet, encoding, batching under
memory budgets via :func:`protrnn.data.packing.pack`, padding via :func:`~protrnn.data.packing.right_pad`, tiled pair
scoring so one long chain runs in bounded memory, float32 or bf16 arithmetic) and :func:`load_model`. Kept with the
model, as ESM keeps its batch converter with its alphabet; the FASTA-to-files run is :mod:`protrnn.predict.run`.

Public API (stable, see docs/predict.md)::

    model = protrnn.load_model()                 # bundled default model (or load_model("path/to/model_dir"))
    probs = model.predict(["MKV...", "GSH..."])  # one L x L float32 symmetric probability matrix per sequence

An ensemble (:func:`protrnn.model.io.save_ensemble`) loads the same way; its members run one after the other on each
batch and the predictor returns the mean of their probabilities.

Memory of one batch of B chains padded to T (see :mod:`protrnn.model.heads`): each pair-feature tensor of the head
holds ``B x (tile + 2 halo)^2 x pair_dim`` floats, at most the pair budget capped on a CPU by the head's
``cpu_tile_floats`` (the tile is chosen by :meth:`ContactModel.chunk_size_for`; :meth:`Predictor.plan` forms batches
under :func:`pair_budget`, the smallest member's cap for an ensemble), plus the ``B x T^2`` float32 output, at most
:data:`MAX_BATCH_PAIRS` (two such tensors for an ensemble: the running sum and the member being added).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from protrnn import __version__
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.data.chain import check_contact_cutoff
from protrnn.data.packing import pack, right_pad
from protrnn.errors import InputError
from protrnn.model.config import INIT_SETTINGS, ModelConfig
from protrnn.model.contact_model import ContactModel, resolve_precision
from protrnn.model.io import (
    ENSEMBLE_COMBINE,
    ENSEMBLE_FORMAT,
    alphabet_of,
    bundled_model_dir,
    is_ensemble,
    load_networks,
)

_T = TypeVar("_T")

#: Architecture settings that do not change what a network computes from given weights: the inference tile of the pair
#: head, the dropouts (off at inference), the initialisations and the gradient horizon (backward only).
NOT_PREDICTIVE = frozenset({"pair_chunk_size", "dropout", "head_dropout", "gradient_horizon", *INIT_SETTINGS})

#: Padded residues per batch (B x T_max) on a GPU: bounds the recurrent activations.
DEFAULT_BATCH_TOKENS = 8192
#: Padded residues per batch on a CPU: small batches keep each batch's pair tensors in cache and below glibc's mmap
#: threshold; measured faster than 8,192 for many short chains (docs/predict.md, "Speed and memory").
CPU_BATCH_TOKENS = 1024
#: Cap on B x T_max^2 per batch: bounds the B x T x T float32 output (64 MiB).
MAX_BATCH_PAIRS = 1 << 24
#: Cap on pair-feature floats per batch, B x E^2 x pair_dim, where E = min(T_max, tile + 2 x halo) is the side of
#: the pair block the head holds at once (see protrnn.model.heads): 128 MiB per pair-feature tensor. On a CPU the
#: model's head caps it further (its ``cpu_tile_floats``): see :func:`pair_budget`.
PAIR_FEATURE_BUDGET = 1 << 25
#: The library's default arithmetic: float32 everywhere, so results do not depend on the machine's bf16 support.
DEFAULT_PRECISION = "32"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the named device (checked to exist)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r} requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type != "cpu":
        # torch names more device types (mps, xpu, meta, ...) than this package runs on; they failed with a
        # traceback deep in loading or, for meta, after inference
        raise InputError(f"device {str(device)!r} is not supported: use cpu, cuda, cuda:N or auto")
    return resolved


def default_batch_tokens(device: str | torch.device) -> int:
    """Padded residues per batch when none is given: :data:`CPU_BATCH_TOKENS` on a CPU, :data:`DEFAULT_BATCH_TOKENS`
    on an accelerator (where big batches keep the device busy)."""
    return CPU_BATCH_TOKENS if torch.device(device).type == "cpu" else DEFAULT_BATCH_TOKENS


def pair_budget(device: str | torch.device, budget: int = PAIR_FEATURE_BUDGET, *, cpu_cap: int) -> int:
    """Pair-feature floats per tensor that the model's tile choice (:meth:`ContactModel.chunk_size_for`) actually
    allows on ``device``: ``budget``, capped on a CPU at ``cpu_cap`` (the head's ``cpu_tile_floats``; for an ensemble
    the smallest of its members'). Batches are planned under this same number, so the tile chosen for a planned
    batch is never below the model's own ``pair_chunk_size`` for lack of budget."""
    return min(budget, cpu_cap) if torch.device(device).type == "cpu" else budget


def load_model(path: str | os.PathLike[str] | None = None, device: str | torch.device | None = None, *,
               precision: str = DEFAULT_PRECISION) -> Predictor:
    """The bundled default model (``path=None``), an exported one (its directory, ``model.json`` or
    ``model.safetensors``), an ensemble of exports (its directory) or a Lightning ``.ckpt`` of ``protrnn train``,
    ready to predict on ``device`` (default: CUDA when available, else CPU) with ``precision`` (see
    :class:`Predictor`).

    Nothing is unpickled: see :func:`protrnn.model.io.load_network`. An ensemble's metadata is
    ``{"format": "protrnn-ensemble", "combine": ..., "config": <first member's>, "alphabet": ..., "members": [...]}``
    and its ``weights_sha256`` the SHA-256 of its members' hashes, one per line in member order.
    """
    target = bundled_model_dir() if path is None else Path(path)
    loaded = load_networks(target)
    source = "bundled default model" if path is None else str(path)
    cutoffs = [member.contact_cutoff for member in loaded]
    if len(set(cutoffs)) > 1:  # save_ensemble refuses this; an ensemble.json written by hand may not
        listed = ", ".join(f"{member.path.name} {cutoff:g} Å" for member, cutoff in zip(loaded, cutoffs, strict=True))
        raise InputError(f"the ensemble's members were trained at different contact cutoffs ({listed}); the mean "
                         "of their probabilities is a probability of no one contact definition", path=target)
    if not is_ensemble(target):
        return Predictor(loaded[0].network, device=device, metadata=loaded[0].metadata, source=source,
                         weights_sha256=loaded[0].weights_sha256(), precision=precision, contact_cutoff=cutoffs[0])
    hashes = [member.weights_sha256() for member in loaded]
    metadata = {"format": ENSEMBLE_FORMAT, "combine": ENSEMBLE_COMBINE, "config": loaded[0].metadata.get("config"),
                "alphabet": loaded[0].metadata.get("alphabet"),
                "members": [{"path": str(member.path), "weights_sha256": digest, **member.metadata}
                            for member, digest in zip(loaded, hashes, strict=True)]}
    combined = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    return Predictor([member.network for member in loaded], device=device, metadata=metadata, source=source,
                     weights_sha256=combined, precision=precision, contact_cutoff=cutoffs[0])


def config_sha256(configs: Sequence[ModelConfig]) -> str:
    """SHA-256 of the members' architecture settings (canonical JSON, in member order) that change what a network
    computes from its weights and differ from :class:`ModelConfig`'s defaults: with the weights hash it identifies a
    model, since settings such as ``residual`` or ``head_dilations`` can be edited in ``model.json`` without changing
    any weight's shape. Left out: :data:`NOT_PREDICTIVE` (the inference tile changes memory, not results), and every
    setting at its default, so a field a later version adds with a default does not make every earlier output folder
    be predicted again."""
    defaults = ModelConfig().to_dict()
    documents = [{k: v for k, v in config.to_dict().items() if k not in NOT_PREDICTIVE and v != defaults[k]}
                 for config in configs]
    return hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest()


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
    """A loaded contact model (or an ensemble of them) plus what is needed to use it on raw sequences.

    ``predict`` returns, per sequence, an L x L float32 symmetric matrix of contact probabilities. Every entry is
    filled by the model, but the diagonal and pairs with |i - j| < 6 are never scored in training or evaluation
    (CASP convention), so their values carry no meaning.

    ``precision``: ``"32"`` (default: float32 throughout, the same numbers on every machine up to float rounding),
    ``"bf16"`` (the pair head under bfloat16 autocast: logits move by about 1e-2, rankings barely; faster where the
    hardware multiplies bf16) or ``"auto"`` (bf16 where the device does it natively, else float32; see
    :func:`protrnn.model.contact_model.resolve_precision`). Stored resolved, as ``"32"`` or ``"bf16"``.
    ``batch_tokens``: padded residues per batch when ``predict``/``plan`` are not given one (default: per device,
    :func:`default_batch_tokens`). ``pair_floats``: the pair-feature budget per tensor that sizes batches and tiles
    (:data:`PAIR_FEATURE_BUDGET`; ``None`` scores in the model's own ``pair_chunk_size`` tiles).

    ``model`` may be a list of networks (an ensemble, all with the metadata's alphabet): each batch runs through them
    one after the other and the mean of their probabilities is returned; batches and tiles are sized for the most
    demanding member, so the memory bound is one member's working memory plus one running sum of the output (a second
    ``B x T^2`` float32 tensor), with every member's weights held on the device. :attr:`model` is the first member,
    :attr:`models` all of them.

    ``contact_cutoff``: the Cβ-Cβ distance (Å) the model's probabilities are for, the one it was trained at
    (:func:`load_model` reads it from the model's record; :attr:`protrnn.model.io.LoadedModel.contact_cutoff`). RR
    files give it as each contact's upper distance bound, and structures are scored at it.
    """

    def __init__(self, model: ContactModel | Sequence[ContactModel], *, device: str | torch.device | None = None,
                 metadata: dict[str, Any] | None = None, source: str = "", weights_sha256: str = "",
                 precision: str = DEFAULT_PRECISION, batch_tokens: int | None = None,
                 pair_floats: int | None = PAIR_FEATURE_BUDGET,
                 contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> None:
        self.device = resolve_device(device)
        members = [model] if isinstance(model, ContactModel) else list(model)
        if not members:
            raise InputError("a predictor needs at least one network")
        self.models = [member.to(self.device).eval() for member in members]
        self.model = self.models[0]
        self._metadata = dict(metadata or {})
        self.alphabet = alphabet_of(self._metadata)
        self.source = source
        self.weights_sha256 = weights_sha256
        self.precision = precision
        if batch_tokens is not None and batch_tokens < 1:
            raise InputError(f"batch_tokens must be positive, got {batch_tokens}")
        self.batch_tokens = default_batch_tokens(self.device) if batch_tokens is None else int(batch_tokens)
        if pair_floats is not None and pair_floats < 1:
            raise InputError(f"pair_floats must be positive or None, got {pair_floats}")
        self.pair_floats = pair_floats
        self.contact_cutoff = check_contact_cutoff(contact_cutoff, "contact_cutoff")

    @property
    def precision(self) -> str:
        """The arithmetic the pair head runs in: ``"32"`` or ``"bf16"`` (``"auto"`` is resolved when set)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = resolve_precision(value, self.device)

    @property
    def config(self) -> ModelConfig:
        """The architecture (``ModelConfig``) the model was built with (an ensemble's: its first member's)."""
        return self.model.config

    @property
    def metadata(self) -> dict[str, Any]:
        """The content of ``model.json`` (format, config, alphabet, and what the exporter recorded); for an ensemble,
        ``{"format": "protrnn-ensemble", ...}`` with the first member's config and every member's ``model.json``
        (see :func:`load_model`)."""
        return self._metadata

    def method_lines(self) -> list[str]:
        """RR ``METHOD`` lines describing this model; they also identify it when a run resumes."""
        lines = [f"protrnn {__version__}: single-sequence contact prediction, no alignment"]
        if len(self.models) > 1:
            lines.append(f"ensemble of {len(self.models)} networks, mean of their contact probabilities")
        described: list[str] = []
        for member in self.models:
            cfg = member.config
            line = (f"bidirectional {cfg.cell.upper()} encoder, {cfg.num_layers} layers x {cfg.hidden_size} units "
                    f"per direction, {cfg.head} pair head")
            if line not in described:
                described.append(line)
        lines += described
        lines.append(f"contacts: Cb-Cb distance below {self.contact_cutoff:g} A (the training labels' cutoff)")
        if self.weights_sha256:
            lines.append(f"weights sha256 {self.weights_sha256}")
        lines.append(f"config sha256 {config_sha256([member.config for member in self.models])}")
        if self.precision == "bf16":  # float32, the default, adds no line (files as before precision existed)
            lines.append("pair head in bfloat16 autocast (precision bf16)")
        return lines

    def plan(self, lengths: Sequence[int], batch_tokens: int | None = None) -> list[list[int]]:
        """Batches for these lengths under the token budget (default :attr:`batch_tokens`) and the pair-memory budget
        that :meth:`predict_batch` sizes its tiles with (:func:`pair_budget`), so the smallest tile the model allows
        (``pair_chunk_size`` plus the halo on both sides) always fits a planned batch's budget."""
        # The most demanding member sizes the batch: the largest tile + halo and the widest pair features.
        extent = max(member.config.pair_chunk_size + 2 * int(getattr(member.head, "halo", 0))
                     for member in self.models)
        pair_dim = max(member.config.pair_dim for member in self.models)
        # pair_floats None: the model's fixed tiles, batches under the uncapped budget (the path before budget tiles).
        cpu_cap = min(member.head.cpu_tile_floats for member in self.models)
        budget = (PAIR_FEATURE_BUDGET if self.pair_floats is None
                  else pair_budget(self.device, self.pair_floats, cpu_cap=cpu_cap))
        return plan_batches(lengths, self.batch_tokens if batch_tokens is None else batch_tokens, MAX_BATCH_PAIRS,
                            pair_extent=extent, max_pair_blocks=max(1, budget // pair_dim))

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

    def predict(self, sequences: Iterable[str], batch_tokens: int | None = None) -> list[np.ndarray]:
        """One L x L float32 symmetric probability matrix per sequence, in input order (any iterable of str, a
        generator included, read once; a single str or bytes is a TypeError).

        Sequences are cleaned with the model's alphabet (lower case, gaps, U/O, a trailing ``*``), batched by length
        within ``batch_tokens`` padded residues (default :attr:`batch_tokens`), and run on the predictor's device.
        """
        return self._predict_each("predict", sequences, batch_tokens, self.predict_batch)

    def _predict_each(self, name: str, sequences: Iterable[str], batch_tokens: int | None,
                      run_batch: Callable[[list[str]], list[_T]]) -> list[_T]:
        """Clean, batch by length (:meth:`plan`) and run ``run_batch`` on each batch; one output per sequence, in
        input order."""
        if isinstance(sequences, (str, bytes)):
            raise TypeError(f"{name} expects a list of sequences, not a single {type(sequences).__name__}")
        sequences = list(sequences)  # once: a generator or iterator would be used up by the checks below
        for k, seq in enumerate(sequences):
            if not isinstance(seq, str):
                raise TypeError(f"{name}: sequence #{k + 1} is a {type(seq).__name__}, not a str")
        cleaned = [self.clean(seq, record=f"#{k + 1}") for k, seq in enumerate(sequences)]
        results: dict[int, _T] = {}
        for batch in self.plan([len(s) for s in cleaned], batch_tokens):
            results.update(zip(batch, run_batch([cleaned[k] for k in batch]), strict=True))
        return [results[k] for k in range(len(cleaned))]

    def predict_batch(self, sequences: Sequence[str], *, tile: int | None = None) -> list[np.ndarray]:
        """Run one padded batch of already-cleaned sequences (no re-batching): one L x L float32 matrix each.

        The matrices are exactly symmetric as the model returns them (both heads end with ``0.5 * (L + L^T)``, then
        an elementwise sigmoid), so nothing is symmetrised here; a chain that fills its batch comes back without a
        copy of the model's output. An ensemble's members are summed into the first one's output in place and
        divided by their number (elementwise, so still exactly symmetric).

        ``tile`` cuts the pair head's view to ``tile``-residue tiles without context (a diagnostic of what the
        head's 2D context adds: ``benchmarks/head_context.py``); the default, None, is exact inference.
        """
        return [probs for probs, _ in self._run_batch(sequences, distogram=False, tile=tile)]

    @property
    def distogram_edges(self) -> list[float] | None:
        """The distance-class edges in Å (``model.json``'s ``distogram_bins``: classes ``< e0``, ``[e0, e1)``, ...,
        ``>= e_last``) when every member has a distogram head with these edges; None for a binary head."""
        edges = [member.config.distogram_bins for member in self.models]
        return None if edges[0] is None or any(e != edges[0] for e in edges) else list(edges[0])

    def predict_distogram(self, sequences: Iterable[str],
                          batch_tokens: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Like :meth:`predict`, with each pair's distance distribution: per sequence ``(probs L x L,
        distogram L x L x K)``, float32, where ``distogram[i, j, k]`` is the probability that the Cβ-Cβ distance of
        residues i and j falls in class k of :attr:`distogram_edges` (K = edges + 1). Both are exactly symmetric;
        ``probs`` equals :meth:`predict`'s bit for bit, and a pair's mass in the classes below 8 Å equals its
        contact probability up to rounding. An ensemble averages its members' class probabilities, as it averages
        their contact probabilities. InputError when a member has no distogram head or the members' classes differ.
        """
        return self._predict_each("predict_distogram", sequences, batch_tokens, self.predict_batch_distogram)

    def require_distogram(self) -> list[float]:
        """:attr:`distogram_edges`, or an InputError that says why this model predicts no distance distribution."""
        edges = self.distogram_edges
        if edges is None:
            heads = {tuple(m.config.distogram_bins) if m.config.distogram_bins else None for m in self.models}
            why = ("a binary contact head (distogram_bins is null)" if heads == {None}
                   else "members with a binary contact head among them" if None in heads
                   else "members with different distance classes")
            raise InputError(f"no distance distribution from {self.source or 'this model'}: it has {why}")
        return edges

    def predict_batch_distogram(self, sequences: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`predict_batch` with each chain's distance distribution (see :meth:`predict_distogram`)."""
        self.require_distogram()
        return [(probs, dist) for probs, dist in self._run_batch(sequences, distogram=True) if dist is not None]

    def _run_batch(self, sequences: Sequence[str], *, distogram: bool,
                   tile: int | None = None) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if tile is not None and tile < 1:
            raise InputError(f"tile must be positive, got {tile}")
        # A cut view (tiles without context) only when asked: the default call is the exact one, unchanged.
        view: dict[str, int] = {} if tile is None else {"chunk_size": tile, "head_halo": 0}
        lengths = [len(s) for s in sequences]
        tokens = right_pad([np.asarray(self.alphabet.encode(seq), dtype=np.int64) for seq in sequences], np.int64,
                           fill=self.alphabet.padding_idx)
        tokens_t = torch.from_numpy(tokens).to(self.device)
        mask = tokens_t != self.alphabet.padding_idx
        with torch.inference_mode():
            probs, dist = self.model.predict_maps(tokens_t, mask, precision=self.precision,
                                                  max_pair_floats=self.pair_floats, distogram=distogram, **view)
            probs = probs.float()
            for member in self.models[1:]:
                more, more_dist = member.predict_maps(tokens_t, mask, precision=self.precision,
                                                      max_pair_floats=self.pair_floats, distogram=distogram, **view)
                probs += more
                if dist is not None and more_dist is not None:
                    dist += more_dist
            if len(self.models) > 1:
                probs /= len(self.models)
                if dist is not None:
                    dist /= len(self.models)
        probs_np = probs.cpu().numpy()
        dist_np = None if dist is None else dist.cpu().numpy()
        if len(lengths) == 1 and lengths[0] == probs_np.shape[1]:
            return [(probs_np[0], None if dist_np is None else dist_np[0])]
        return [(np.ascontiguousarray(probs_np[row, :length, :length]),
                 None if dist_np is None else np.ascontiguousarray(dist_np[row, :length, :length]))
                for row, length in enumerate(lengths)]
