"""The contact network: embedding + recurrent encoder + pair head. Saving and loading live in :mod:`protrnn.model.io`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from protrnn.alphabet import PAD_TOKEN
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder
from protrnn.model.heads import build_head


class ContactModel(nn.Module):
    """``tokens [B, T] (0 = padding), mask [B, T] -> symmetric contact logits [B, T, T]``."""

    def __init__(self, config: ModelConfig, exact_path: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_TOKEN)
        self.encoder = RecurrentEncoder(config, exact_path=exact_path)
        self.head = build_head(config)
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
