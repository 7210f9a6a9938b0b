"""The contact network: embedding + recurrent encoder + pair head. Saving and loading live in :mod:`protrnn.model.io`.

Also where the network's arithmetic precision is chosen per machine (:func:`resolve_precision`): bfloat16 mixed
precision pays where the hardware multiplies bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX-BF16:
:func:`protrnn.model.hardware.bf16_is_native`) and costs time elsewhere (emulated), so "auto" asks the machine.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from protrnn.alphabet import PAD_TOKEN
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder
from protrnn.model.hardware import bf16_is_native
from protrnn.model.heads import BlockOutputs, build_head, to_contact_logits

#: ``predict_proba(precision=...)`` values: float32, bfloat16 head, or bf16 where the device supports it natively.
PREDICT_PRECISIONS = ("32", "bf16", "auto")


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``"32"`` or ``"bf16"`` for a :data:`PREDICT_PRECISIONS` value: ``"auto"`` is bf16 where
    :func:`bf16_is_native`, float32 elsewhere."""
    if precision not in PREDICT_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PREDICT_PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "32"
    return precision


def _symmetric_sigmoid_(logits: Tensor, tile: int = 1024) -> Tensor:
    """``sigmoid`` of symmetric logits ``[B, T, T]`` in place, exactly symmetric: each pair of mirror tiles is
    computed once and written to both triangles. (An elementwise kernel is not: SIMD lanes and the scalar tail
    round the same value differently, so ``sigmoid(x)[i, j]`` and ``[j, i]`` can differ in the last bit.)"""
    steps = logits.shape[-1]
    for r0 in range(0, steps, tile):
        rows = slice(r0, min(steps, r0 + tile))
        diagonal = logits[:, rows, rows].sigmoid()
        upper = diagonal.triu()
        logits[:, rows, rows] = upper + upper.triu(1).transpose(-1, -2)
        for c0 in range(r0 + tile, steps, tile):
            cols = slice(c0, min(steps, c0 + tile))
            block = logits[:, rows, cols].sigmoid()
            logits[:, rows, cols] = block
            logits[:, cols, rows] = block.transpose(-1, -2)
    return logits


class ContactModel(nn.Module):
    """``tokens [B, T] (0 = padding), mask [B, T] -> symmetric contact logits [B, T, T]``.

    ``head_impl`` picks the pair head's implementation (``"fast"``, default, or ``"reference"``: the same function
    and parameters, see :mod:`protrnn.model.heads`); like ``exact_path`` it is not part of the saved model.
    """

    def __init__(self, config: ModelConfig, exact_path: str = "auto", head_impl: str = "fast") -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_TOKEN)
        self.encoder = RecurrentEncoder(config, exact_path=exact_path)
        self.head = build_head(config, head_impl)
        #: Parsed ``model.json`` when the model came from :func:`protrnn.model.io.load_network` (else empty).
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

    def pair_outputs(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """The head's symmetrised per-pair outputs ``[B, T, T, O]``: ``O = 1`` contact logit, or the distance-class
        logits of a distogram model (``config.distogram_bins``). What the loss is computed on."""
        return self.head.pair_outputs(self.encoder(self.embed(tokens), mask), mask)

    def block_outputs(self, tokens: Tensor, mask: Tensor, blocks: Tensor, size: int, context: int = 0) -> BlockOutputs:
        """Per-pair outputs on sampled pair blocks (training): the encoder reads every residue of ``tokens``, the
        head scores only the blocks, each computed with ``context`` residues around it (see
        :meth:`protrnn.model.heads._PairHeadBase.block_outputs`)."""
        return self.head.block_outputs(self.encoder(self.embed(tokens), mask), mask, blocks, size, context)

    def contact_logits(self, outputs: Tensor) -> Tensor:
        """Contact logits ``[...]`` from per-pair outputs ``[..., O]`` (:func:`protrnn.model.heads.to_contact_logits`)."""
        return to_contact_logits(outputs, self.config.contact_classes)

    def chunk_size_for(self, batch: int, steps: int, max_pair_floats: int,
                       device: str | torch.device = "cpu") -> int:
        """The largest inference tile side whose haloed pair block, ``batch x (tile + 2 halo)^2 x pair_dim`` floats
        (one pair-feature tensor of the head), fits ``max_pair_floats`` (and, on CPU, the head's ``cpu_tile_floats``);
        never below ``config.pair_chunk_size`` (the model's own bound), and ``steps`` when the whole map fits.
        Bigger tiles recompute less halo (a 256 tile with the default model's 30-residue halo computes 1.5x its own
        area)."""
        halo = int(getattr(self.head, "halo", 0))
        budget = max(0, max_pair_floats)
        if torch.device(device).type == "cpu":
            budget = min(budget, self.head.cpu_tile_floats)
        side = int(math.isqrt(budget // max(1, batch * self.config.pair_dim)))
        chunk = max(self.config.pair_chunk_size, side - 2 * halo)
        return steps if chunk + 2 * halo >= steps else chunk

    @torch.no_grad()
    def predict_proba(self, tokens: Tensor, mask: Tensor, chunk_size: int | None = None,
                      precision: str = "32", max_pair_floats: int | None = None) -> Tensor:
        """Contact probabilities [B, T, T] (float32), pairs scored in tiles of ``chunk_size`` (default
        ``config.pair_chunk_size``, or with ``max_pair_floats`` the largest tile within that many floats per pair
        tensor: :meth:`chunk_size_for`) so head memory is bounded (see :mod:`protrnn.model.heads`). Tiling changes
        nothing but rounding.

        ``precision``: ``"32"`` (default) runs everything in float32; ``"bf16"`` runs the pair head under bfloat16
        autocast (convolutions / hidden matmuls in bf16, norms, residual stream and logits in float32; logits move
        by about 1e-2, rankings barely: see docs/training.md, "Speed"); ``"auto"`` is bf16 where the device does
        bf16 natively (:func:`bf16_is_native`), else float32. The recurrent encoder always runs in float32.

        Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        return self.predict_maps(tokens, mask, chunk_size, precision, max_pair_floats)[0]

    @torch.no_grad()
    def predict_maps(self, tokens: Tensor, mask: Tensor, chunk_size: int | None = None, precision: str = "32",
                     max_pair_floats: int | None = None, distogram: bool = False,
                     head_halo: int | None = None) -> tuple[Tensor, Tensor | None]:
        """:meth:`predict_proba`'s probabilities and, with ``distogram``, the distance-class probabilities
        ``[B, T, T, O]`` (float32; classes ``config.distogram_bins``: ``< e0``, ``[e0, e1)``, ..., ``>= e_last``),
        from the same pass: the probabilities are bit for bit :meth:`predict_proba`'s, and a pair's mass in the
        classes below 8 Å equals its contact probability up to rounding. The distogram holds ``O`` floats per pair
        (the bundled model: 18, so 72 MB of float32 for one 1,000-residue chain). InputError for a binary head.
        ``head_halo`` cuts the pair head's view to ``chunk_size`` tiles with that much context (diagnostics only:
        :meth:`protrnn.model.heads._PairHeadBase.predict_maps`); the default is exact."""
        if distogram and self.config.distogram_bins is None:
            raise InputError("this model has a binary contact head (model.json distogram_bins is null): it "
                             "predicts no distance distribution")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise InputError(f"tokens must lie in [0, {self.config.vocab_size}); "
                             f"got [{int(tokens.min())}, {int(tokens.max())}]")
        bf16 = resolve_precision(precision, tokens.device) == "bf16"
        if chunk_size is None and max_pair_floats is not None:
            chunk_size = self.chunk_size_for(tokens.size(0), tokens.size(1), max_pair_floats, tokens.device)
        was_training = self.training
        self.eval()
        try:
            h = self.encoder(self.embed(tokens), mask)
            autocast = torch.autocast(tokens.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                logits, dist = self.head.predict_maps(h, mask, chunk_size, distogram, head_halo)
            return _symmetric_sigmoid_(logits.float()), dist
        finally:
            self.train(was_training)
