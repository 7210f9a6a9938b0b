"""Pair heads: encoder states ``h [B, T, D]`` -> symmetric contact logits ``[B, T, T]``.

Both heads are built from features that are symmetric in (i, j) and end with ``(L + L^T) / 2``, so logits are
exactly symmetric. Real-pair logits never depend on padding: the pairwise head is per pair, and the resnet2d head
zeroes padded pairs before every convolution and normalises per pair (over channels), not over the map.

Memory of inference (``predict_logits``) with tile size c, pair width P, receptive-field halo R:
    full map:   O(B * T^2 * P) activations;
    tiled:      O(B * (c + 2R)^2 * P) activations for the tile being scored + O(B * T * D) encoder states
                + O(B * T^2) for the logits themselves (the output, 1 float per pair).
The pairwise head needs no halo (R = 0); the resnet2d head's R is the reach of its dilated convolutions
(``sum(2 * dilation)`` over blocks), so tiles overlap by R and tiled logits equal the full map's up to rounding.
When one haloed tile would span the whole map (T <= c + 2R) the map is scored at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protrnn.model.config import ModelConfig


def _symmetrise(logits: Tensor) -> Tensor:
    return 0.5 * (logits + logits.transpose(-1, -2))


def _separation_index(rows: range, cols: range, max_separation: int, device: torch.device) -> Tensor:
    """``min(|i - j|, max_separation)`` for i in rows, j in cols: [len(rows), len(cols)] long."""
    i = torch.arange(rows.start, rows.stop, device=device)
    j = torch.arange(cols.start, cols.stop, device=device)
    return (i[:, None] - j[None, :]).abs().clamp(max=max_separation)


def _tiles(length: int, chunk: int) -> list[range]:
    return [range(start, min(start + chunk, length)) for start in range(0, length, chunk)]


class PairwiseHead(nn.Module):
    """Per-pair MLP; all sequence context must come from the recurrent encoder (no spatial mixing).

    With ``a = W h`` (width P) the first layer is ``u_i + u_j + B(a_i, a_j) + E[min(|i-j|, S)]``: a symmetric
    linear term, a symmetric bilinear term (``sum_p V_cp a_ip a_jp`` per channel c, computed as one matmul, so no
    [B, T, T, P] intermediate), and a learned separation embedding; then ReLU, a hidden layer, and the logit.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width, pair = 2 * config.hidden_size, config.pair_dim
        self.max_separation = config.max_separation
        self.chunk_size = config.pair_chunk_size
        self.proj = nn.Linear(width, pair)
        self.linear = nn.Linear(pair, pair)
        self.bilinear = nn.Parameter(torch.empty(pair, pair))
        nn.init.normal_(self.bilinear, std=pair ** -1.0)
        self.separation = nn.Embedding(config.max_separation + 1, pair)
        self.hidden = nn.Linear(pair, pair)
        self.out = nn.Linear(pair, 1)

    def _block(self, a: Tensor, u: Tensor, rows: range, cols: range) -> Tensor:
        """Unsymmetrised logits for pairs rows x cols: [B, len(rows), len(cols)]."""
        a_r, a_c = a[:, rows.start:rows.stop], a[:, cols.start:cols.stop]
        batch, n_rows, pair = a_r.shape
        # bilinear[b, i, c, j] = sum_p a_r[b, i, p] * V[c, p] * a_c[b, j, p]
        scaled = (a_r.unsqueeze(2) * self.bilinear).reshape(batch, n_rows * pair, pair)
        bilinear = torch.bmm(scaled, a_c.transpose(1, 2)).view(batch, n_rows, pair, -1).permute(0, 1, 3, 2)
        sep = self.separation(_separation_index(rows, cols, self.max_separation, a.device))
        z = bilinear + u[:, rows.start:rows.stop, None, :] + u[:, None, cols.start:cols.stop, :] + sep
        z = F.relu(self.hidden(F.relu(z)))
        return self.out(z).squeeze(-1)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        a = self.proj(h)
        span = range(0, h.size(1))
        return _symmetrise(self._block(a, self.linear(a), span, span))

    def predict_logits(self, h: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
        """Same logits as :meth:`forward`, scored in tiles of ``chunk_size`` rows x columns (bounded memory)."""
        a = self.proj(h)
        u = self.linear(a)
        steps = h.size(1)
        logits = h.new_empty(h.size(0), steps, steps)
        tiles = _tiles(steps, chunk_size or self.chunk_size)
        for rows in tiles:
            for cols in tiles:
                logits[:, rows.start:rows.stop, cols.start:cols.stop] = self._block(a, u, rows, cols)
        return _symmetrise(logits)


class _PairNorm(nn.Module):
    """LayerNorm over channels at each pair: local (so tiles are exact and padding cannot leak through statistics)
    and independent of batch composition, unlike instance or batch norm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, I, J, C]
        return self.norm(x)


def _conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a conv to a channels-last [B, I, J, C] tensor (as a channels_last NCHW view) and return [B, I, J, C]."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class _ResidualBlock(nn.Module):
    """Pre-activation block: norm -> ReLU -> dilated 3x3 -> norm -> ReLU -> dilated 3x3, plus the identity.
    Padded pairs are zeroed right before each convolution so nothing computed there reaches a real pair."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.norm1 = _PairNorm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = _PairNorm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        y = _conv(self.conv1, F.relu(self.norm1(x)) * keep)
        y = _conv(self.conv2, F.relu(self.norm2(y)) * keep)
        return x + y


class ResNet2dHead(nn.Module):
    """Outer features -> ``head_blocks`` dilated residual 2D conv blocks (dilations cycle ``head_dilations``) ->
    1x1 conv. Input pair features: ``W (a_i + a_j) + U (a_i * a_j)`` (symmetric, a 1x1 conv over the sum and
    the product) plus a separation embedding. Activations are kept channels-last ([B, I, J, C]) so the per-pair norm is a plain LayerNorm.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width, pair = 2 * config.hidden_size, config.pair_dim
        self.max_separation = config.max_separation
        self.chunk_size = config.pair_chunk_size
        self.proj = nn.Linear(width, pair)
        self.pair_sum = nn.Linear(pair, pair)
        self.pair_product = nn.Linear(pair, pair, bias=False)
        self.separation = nn.Embedding(config.max_separation + 1, pair)
        dilations = [config.head_dilations[i % len(config.head_dilations)] for i in range(config.head_blocks)]
        self.blocks = nn.ModuleList(_ResidualBlock(pair, d) for d in dilations)
        self.out_norm = _PairNorm(pair)
        self.out = nn.Linear(pair, 1)
        #: Rows/columns beyond a tile that can influence it: each block has two convs of reach ``dilation``.
        self.halo = sum(2 * d for d in dilations)

    def _raw(self, a: Tensor, mask: Tensor, rows: range, cols: range) -> Tensor:
        """Unsymmetrised logits of the sub-map rows x cols, computed as if it were the whole map."""
        a_r, a_c = a[:, rows.start:rows.stop, None, :], a[:, None, cols.start:cols.stop, :]
        s = self.pair_sum(a)  # W(a_i + a_j) = (W a)_i + (W a)_j: no [B, T, T, 2P] concatenation needed
        keep = (mask[:, rows.start:rows.stop, None] & mask[:, None, cols.start:cols.stop]).unsqueeze(-1).to(a.dtype)
        sep = self.separation(_separation_index(rows, cols, self.max_separation, a.device))
        x = self.pair_product(a_r * a_c) + s[:, rows.start:rows.stop, None, :] + s[:, None, cols.start:cols.stop, :]
        x = x + sep
        for block in self.blocks:
            x = block(x, keep)
        return self.out(F.relu(self.out_norm(x))).squeeze(-1)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        span = range(0, h.size(1))
        return _symmetrise(self._raw(self.proj(h), mask, span, span))

    def predict_logits(self, h: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
        """Same logits as :meth:`forward` (up to rounding), scored in tiles of ``chunk_size`` with a halo of
        :attr:`halo` rows/columns on each side; exact because nothing outside the halo reaches the tile centre."""
        chunk = chunk_size or self.chunk_size
        steps = h.size(1)
        if steps <= chunk + 2 * self.halo:  # one haloed tile would already span the map: score it whole
            return self.forward(h, mask)
        a = self.proj(h)
        logits = h.new_empty(h.size(0), steps, steps)
        tiles = _tiles(steps, chunk)
        for rows in tiles:
            rows_ext = range(max(0, rows.start - self.halo), min(steps, rows.stop + self.halo))
            for cols in tiles:
                cols_ext = range(max(0, cols.start - self.halo), min(steps, cols.stop + self.halo))
                raw = self._raw(a, mask, rows_ext, cols_ext)
                r0, c0 = rows.start - rows_ext.start, cols.start - cols_ext.start
                logits[:, rows.start:rows.stop, cols.start:cols.stop] = raw[:, r0:r0 + len(rows), c0:c0 + len(cols)]
        return _symmetrise(logits)


PairHead = PairwiseHead | ResNet2dHead


def build_head(config: ModelConfig) -> PairHead:
    """The head named by ``config.head``."""
    if config.head == "pairwise":
        return PairwiseHead(config)
    if config.head == "resnet2d":
        return ResNet2dHead(config)
    raise ValueError(f"unknown head {config.head!r}")
