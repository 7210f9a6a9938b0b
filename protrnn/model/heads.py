"""Pair heads: encoder states ``h [B, T, D]`` -> symmetric contact logits ``[B, T, T]``.

Both heads are built from features that are symmetric in (i, j) and end with ``(L + L^T) / 2``, so logits are
exactly symmetric. Real-pair logits never depend on padding: the pairwise head is per pair, and the resnet2d head
zeroes padded pairs before every convolution and normalises per pair (over channels), not over the map.

Memory of inference (``predict_logits``) with tile size c, pair width P, receptive-field halo R:
    full map:   O(B * T^2 * P) activations;
    tiled:      O(B * (c + 2R)^2 * P) activations for the tile being scored + O(B * T * D) encoder states
                + O(B * T^2) for the logits themselves (the output, 1 float per pair, symmetrised in place).
The pairwise head needs no halo (R = 0); the resnet2d head's R is the reach of its dilated convolutions
(``sum(2 * dilation)`` over blocks), so tiles overlap by R and tiled logits equal the full map's up to rounding.
When one haloed tile would span the whole map (T <= c + 2R) the map is scored at once.

Two implementations of the same function share the parameters (so exported models load into either):

* ``impl="fast"`` (the default): the first layer is one batched matmul per tile (the outer sum and product are
  factorised, no ``[B, T, T, P]`` product tensor); each LayerNorm + ReLU + padding mask is one autograd node that
  writes the convolution's input directly in its dtype and layout (channels-last); the residual stream stays in the
  parameters' dtype. Under autocast (``bf16-mixed``) the convolutions and the pairwise head's hidden layer run in
  the autocast dtype with fp32 norms and residual stream; on CPU their input channels are zero-padded to a multiple
  of 16 (oneDNN's bf16 weight-gradient kernel crashes on 20- or 24-channel dilated convolutions in torch 2.13, and
  the padded kernel is faster anyway). Inference (no autograd) runs in place.
* ``impl="reference"``: the original module-by-module code, kept for the speed benchmark and the numerics tests.

In float32 the two agree to rounding (about 1e-6 on logits; tests check 1e-5).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from protrnn.model.config import ModelConfig

#: Implementations of the heads' forward pass (same parameters, same function): see the module docstring.
HEAD_IMPLS = ("fast", "reference")
#: oneDNN's CPU bf16 convolution kernels want input channels in multiples of this.
_CPU_BF16_CHANNEL_BLOCK = 16


def _symmetrise(logits: Tensor) -> Tensor:
    return 0.5 * (logits + logits.transpose(-1, -2))


def _symmetrise_tiles_(logits: Tensor, tiles: list[range]) -> Tensor:
    """``0.5 * (L + L^T)`` in place, one pair of tiles at a time (bit-identical to :func:`_symmetrise`; the only
    temporary is one tile, so a long chain's map is held once, not three times)."""
    for k, rows in enumerate(tiles):
        for cols in tiles[k:]:
            upper = logits[:, rows.start:rows.stop, cols.start:cols.stop]
            lower = logits[:, cols.start:cols.stop, rows.start:rows.stop]
            sym = 0.5 * (upper + lower.transpose(-1, -2))
            upper.copy_(sym)
            lower.copy_(sym.transpose(-1, -2))
    return logits


def _separation_index(rows: range, cols: range, max_separation: int, device: torch.device) -> Tensor:
    """``min(|i - j|, max_separation)`` for i in rows, j in cols: [len(rows), len(cols)] long."""
    i = torch.arange(rows.start, rows.stop, device=device)
    j = torch.arange(cols.start, cols.stop, device=device)
    return (i[:, None] - j[None, :]).abs().clamp(max=max_separation)


def _tiles(length: int, chunk: int) -> list[range]:
    return [range(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def _check_impl(impl: str) -> str:
    if impl not in HEAD_IMPLS:
        raise ValueError(f"unknown head implementation {impl!r}; choose one of {', '.join(HEAD_IMPLS)}")
    return impl


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, or None when autocast is off there."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    except TypeError:  # torch < 2.4: per-device functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return None


def _compute_dtype(reference: Tensor) -> torch.dtype:
    """What the heavy operations (convolutions, hidden matmuls) run in: the autocast dtype when autocast is on for
    ``reference``'s device, else ``reference``'s own dtype."""
    return _autocast_dtype(reference.device.type) or reference.dtype


def _conv_width(channels: int, dtype: torch.dtype, device: torch.device) -> int:
    """Input channels the fast convolution is fed: zero-padded to a multiple of 16 for bf16 on CPU (see the module
    docstring), unchanged otherwise."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        return -(-channels // _CPU_BF16_CHANNEL_BLOCK) * _CPU_BF16_CHANNEL_BLOCK
    return channels


def _pair_keep(mask: Tensor, rows: range, cols: range) -> Tensor | None:
    """``[B, R, C, 1]`` float 0/1 of real pairs in rows x cols, or None when every pair there is real."""
    m_r, m_c = mask[:, rows.start:rows.stop], mask[:, cols.start:cols.stop]
    if bool(m_r.all()) and bool(m_c.all()):
        return None
    return (m_r[:, :, None] & m_c[:, None, :]).unsqueeze(-1)


def _outer_features(a: Tensor, s: Tensor, weight: Tensor, rows: range, cols: range) -> Tensor:
    """``W (a_i * a_j) + s_i + s_j`` for i in rows, j in cols with one batched matmul: ``[B, R, C, P']``.

    ``out[b, i, (j, c)] = sum_k left[b, i, k] right[b, k, (j, c)] + s_i[c]`` with ``left_i = [a_i | 1]`` and
    ``right = [W[c, p] a_j[p] ; s_j[c]]``, so the ``[B, R, C, P]`` product tensor is never materialised and the
    result comes out channels-last and contiguous; ``s_i`` is one broadcast add.
    """
    a_r, a_c = a[:, rows.start:rows.stop], a[:, cols.start:cols.stop]
    s_r, s_c = s[:, rows.start:rows.stop], s[:, cols.start:cols.stop]
    batch, n_cols, width = a_c.shape
    channels = weight.shape[0]
    left = torch.cat([a_r, a_r.new_ones(batch, a_r.shape[1], 1)], dim=-1)
    product = (a_c.unsqueeze(-1) * weight.t()).permute(0, 2, 1, 3).reshape(batch, width, n_cols * channels)
    right = torch.cat([product, s_c.reshape(batch, 1, n_cols * channels)], dim=1)
    out = torch.bmm(left, right).view(batch, a_r.shape[1], n_cols, channels)
    return out.add_(s_r.unsqueeze(2))


class _NormReLU(torch.autograd.Function):
    """``relu(layer_norm(x)) * keep`` in ``dtype``, written into the first C of ``width`` zero-padded channels: the
    input of the next convolution in the layout it wants, produced by one LayerNorm kernel and one copy.

    Backward reads the ReLU/mask pattern back from the output (``out > 0``; the convolution keeps that tensor anyway),
    so nothing extra is stored. First-order gradients only (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float, keep: Tensor | None,
                dtype: torch.dtype, width: int) -> Tensor:
        channels = x.shape[-1]
        x_norm = x if x.dtype == weight.dtype else x.to(weight.dtype)
        y, mean, rstd = torch.native_layer_norm(x_norm, [channels], weight, bias, eps)
        y.relu_()
        if keep is not None:
            y.mul_(keep)
        out = y if dtype == y.dtype else y.to(dtype)
        if width > channels:
            out = F.pad(out, (0, width - channels))
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x_norm, weight, bias, mean, rstd, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x_norm, weight, bias, mean, rstd, out = ctx.saved_tensors
        channels = x_norm.shape[-1]
        grad = torch.ops.aten.threshold_backward(grad_out, out, 0)  # relu and mask: zero where out == 0
        if grad.shape[-1] != channels or grad.dtype != x_norm.dtype:
            grad = grad[..., :channels].to(x_norm.dtype, memory_format=torch.contiguous_format)
        needs = [bool(n) for n in ctx.needs_input_grad[:3]]
        grad_x, grad_w, grad_b = torch.ops.aten.native_layer_norm_backward(
            grad, x_norm, [channels], mean, rstd, weight, bias, needs)
        if grad_x is not None and grad_x.dtype != ctx.x_dtype:
            grad_x = grad_x.to(ctx.x_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def _norm_relu(norm: nn.LayerNorm, x: Tensor, keep: Tensor | None, dtype: torch.dtype, width: int,
               buffer: Tensor | None = None) -> Tensor:
    """:class:`_NormReLU`; without autograd, written in place into ``buffer`` (``[..., width]`` of ``dtype`` whose
    channels beyond ``x``'s are zero), so inference casts and pads in the same single copy and reuses one tensor."""
    if buffer is None or torch.is_grad_enabled():
        return _NormReLU.apply(x, norm.weight, norm.bias, norm.eps, keep, dtype, width)
    channels = x.shape[-1]
    y = F.layer_norm(x if x.dtype == norm.weight.dtype else x.to(norm.weight.dtype), (channels,), norm.weight,
                     norm.bias, norm.eps).relu_()
    if keep is not None:
        y.mul_(keep)
    buffer[..., :channels].copy_(y)
    return buffer


def _fast_conv(conv: nn.Conv2d, u: Tensor, dtype: torch.dtype) -> Tensor:
    """``conv`` on a channels-last ``[B, I, J, W]`` input whose channels beyond ``conv.in_channels`` are zero
    (weights zero-padded to match, so the result is the same): returns ``[B, I, J, C_out]`` in ``dtype``."""
    weight = conv.weight
    extra = u.shape[-1] - weight.shape[1]
    if extra:
        weight = F.pad(weight, (0, 0, 0, 0, 0, extra))
    bias = conv.bias.to(dtype) if conv.bias is not None else None
    out = F.conv2d(u.permute(0, 3, 1, 2), weight.to(dtype), bias, padding=conv.padding, dilation=conv.dilation)
    return out.permute(0, 2, 3, 1)


class PairwiseHead(nn.Module):
    """Per-pair MLP; all sequence context must come from the recurrent encoder (no spatial mixing).

    With ``a = W h`` (width P) the first layer is ``u_i + u_j + B(a_i, a_j) + E[min(|i-j|, S)]``: a symmetric
    linear term, a symmetric bilinear term (``sum_p V_cp a_ip a_jp`` per channel c, computed as one matmul, so no
    [B, T, T, P] intermediate), and a learned separation embedding; then ReLU, a hidden layer, and the logit.
    """

    def __init__(self, config: ModelConfig, impl: str = "fast") -> None:
        super().__init__()
        width, pair = 2 * config.hidden_size, config.pair_dim
        self.max_separation = config.max_separation
        self.chunk_size = config.pair_chunk_size
        #: ``"fast"`` or ``"reference"`` (same function; see the module docstring). Not saved with the weights.
        self.impl = _check_impl(impl)
        self.proj = nn.Linear(width, pair)
        self.linear = nn.Linear(pair, pair)
        self.bilinear = nn.Parameter(torch.empty(pair, pair))
        nn.init.normal_(self.bilinear, std=pair ** -1.0)
        self.separation = nn.Embedding(config.max_separation + 1, pair)
        self.hidden = nn.Linear(pair, pair)
        self.out = nn.Linear(pair, 1)

    def _block_reference(self, a: Tensor, u: Tensor, rows: range, cols: range) -> Tensor:
        """Unsymmetrised logits for pairs rows x cols: [B, len(rows), len(cols)] (the original code)."""
        a_r, a_c = a[:, rows.start:rows.stop], a[:, cols.start:cols.stop]
        batch, n_rows, pair = a_r.shape
        # bilinear[b, i, c, j] = sum_p a_r[b, i, p] * V[c, p] * a_c[b, j, p]
        scaled = (a_r.unsqueeze(2) * self.bilinear).reshape(batch, n_rows * pair, pair)
        bilinear = torch.bmm(scaled, a_c.transpose(1, 2)).view(batch, n_rows, pair, -1).permute(0, 1, 3, 2)
        sep = self.separation(_separation_index(rows, cols, self.max_separation, a.device))
        z = bilinear + u[:, rows.start:rows.stop, None, :] + u[:, None, cols.start:cols.stop, :] + sep
        z = F.relu(self.hidden(F.relu(z)))
        return self.out(z).squeeze(-1)

    def _block_fast(self, a: Tensor, u: Tensor, rows: range, cols: range, dtype: torch.dtype) -> Tensor:
        """Same as :meth:`_block_reference`: the first layer is one matmul, the hidden layer runs in ``dtype``."""
        z = _outer_features(a, u, self.bilinear, rows, cols)
        z = z + self.separation(_separation_index(rows, cols, self.max_separation, a.device))
        z = F.relu(z).to(dtype)
        z = F.relu(F.linear(z, self.hidden.weight.to(dtype), self.hidden.bias.to(dtype)))
        return F.linear(z, self.out.weight.to(dtype), self.out.bias.to(dtype)).squeeze(-1).to(a.dtype)

    def _project(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``a = W h`` and the linear term ``u``; the fast path keeps them in the parameters' dtype under autocast."""
        if self.impl == "reference":
            a = self.proj(h)
            return a, self.linear(a)
        with torch.autocast(h.device.type, enabled=False):
            a = self.proj(h.to(self.proj.weight.dtype))
            return a, self.linear(a)

    def _block(self, a: Tensor, u: Tensor, rows: range, cols: range, dtype: torch.dtype) -> Tensor:
        if self.impl == "reference":
            return self._block_reference(a, u, rows, cols)
        with torch.autocast(a.device.type, enabled=False):
            return self._block_fast(a, u, rows, cols, dtype)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        dtype = _compute_dtype(h)
        a, u = self._project(h)
        span = range(0, h.size(1))
        return _symmetrise(self._block(a, u, span, span, dtype))

    def predict_logits(self, h: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
        """Same logits as :meth:`forward`, scored in tiles of ``chunk_size`` rows x columns (bounded memory)."""
        dtype = _compute_dtype(h)
        a, u = self._project(h)
        steps = h.size(1)
        logits = h.new_empty(h.size(0), steps, steps)
        tiles = _tiles(steps, chunk_size or self.chunk_size)
        for rows in tiles:
            for cols in tiles:
                logits[:, rows.start:rows.stop, cols.start:cols.stop] = self._block(a, u, rows, cols, dtype)
        if self.impl == "reference" or torch.is_grad_enabled():
            return _symmetrise(logits)
        return _symmetrise_tiles_(logits, tiles)


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

    def forward_fast(self, x: Tensor, keep: Tensor | None, dtype: torch.dtype, width: int,
                     buffer: Tensor | None = None) -> Tensor:
        """The same block with fused norm/ReLU/mask nodes, convolutions in ``dtype`` on ``width`` input channels,
        and the residual added in ``x``'s dtype (in place when no gradient is being recorded)."""
        y = _fast_conv(self.conv1, _norm_relu(self.norm1.norm, x, keep, dtype, width, buffer), dtype)
        y = _fast_conv(self.conv2, _norm_relu(self.norm2.norm, y, keep, dtype, width, buffer), dtype)
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        return x + y if torch.is_grad_enabled() else x.add_(y)


class ResNet2dHead(nn.Module):
    """Outer features -> ``head_blocks`` dilated residual 2D conv blocks (dilations cycle ``head_dilations``) ->
    1x1 conv. Input pair features: ``W (a_i + a_j) + U (a_i * a_j)`` (symmetric, a 1x1 conv over the sum and
    the product) plus a separation embedding. Activations are kept channels-last ([B, I, J, C]) so the per-pair
    norm is a plain LayerNorm.
    """

    def __init__(self, config: ModelConfig, impl: str = "fast") -> None:
        super().__init__()
        width, pair = 2 * config.hidden_size, config.pair_dim
        self.max_separation = config.max_separation
        self.chunk_size = config.pair_chunk_size
        #: ``"fast"`` or ``"reference"`` (same function; see the module docstring). Not saved with the weights.
        self.impl = _check_impl(impl)
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

    def _raw_reference(self, a: Tensor, mask: Tensor, rows: range, cols: range) -> Tensor:
        """Unsymmetrised logits of the sub-map rows x cols, computed as if it were the whole map (original code)."""
        a_r, a_c = a[:, rows.start:rows.stop, None, :], a[:, None, cols.start:cols.stop, :]
        s = self.pair_sum(a)  # W(a_i + a_j) = (W a)_i + (W a)_j: no [B, T, T, 2P] concatenation needed
        keep = (mask[:, rows.start:rows.stop, None] & mask[:, None, cols.start:cols.stop]).unsqueeze(-1).to(a.dtype)
        sep = self.separation(_separation_index(rows, cols, self.max_separation, a.device))
        x = self.pair_product(a_r * a_c) + s[:, rows.start:rows.stop, None, :] + s[:, None, cols.start:cols.stop, :]
        x = x + sep
        for block in self.blocks:
            x = block(x, keep)
        return self.out(F.relu(self.out_norm(x))).squeeze(-1)

    def _raw_fast(self, a: Tensor, mask: Tensor, rows: range, cols: range, dtype: torch.dtype) -> Tensor:
        """Same as :meth:`_raw_reference`: first layer as one matmul, fused norm nodes, convs in ``dtype``."""
        with torch.autocast(a.device.type, enabled=False):
            x = _outer_features(a, self.pair_sum(a), self.pair_product.weight, rows, cols)
            sep = self.separation(_separation_index(rows, cols, self.max_separation, a.device))
            x = x + sep if torch.is_grad_enabled() else x.add_(sep)
            keep = _pair_keep(mask, rows, cols)
            keep = keep.to(x.dtype) if keep is not None else None
            width = _conv_width(x.shape[-1], dtype, x.device)
            buffer = None  # inference: one zero-padded conv-input tensor reused by every convolution of the tile
            if not torch.is_grad_enabled() and self.blocks and (width != x.shape[-1] or dtype != x.dtype):
                buffer = x.new_zeros(*x.shape[:-1], width, dtype=dtype)
            for block in self.blocks:
                x = block.forward_fast(x, keep, dtype, width, buffer)
            y = _norm_relu(self.out_norm.norm, x, None, x.dtype, x.shape[-1])
            return F.linear(y, self.out.weight, self.out.bias).squeeze(-1)

    def _project(self, h: Tensor) -> Tensor:
        """``a = W h``; the fast path keeps it in the parameters' dtype under autocast."""
        if self.impl == "reference":
            return self.proj(h)
        with torch.autocast(h.device.type, enabled=False):
            return self.proj(h.to(self.proj.weight.dtype))

    def _raw(self, a: Tensor, mask: Tensor, rows: range, cols: range, dtype: torch.dtype) -> Tensor:
        if self.impl == "reference":
            return self._raw_reference(a, mask, rows, cols)
        return self._raw_fast(a, mask, rows, cols, dtype)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        span = range(0, h.size(1))
        return _symmetrise(self._raw(self._project(h), mask, span, span, _compute_dtype(h)))

    def predict_logits(self, h: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
        """Same logits as :meth:`forward` (up to rounding), scored in tiles of ``chunk_size`` with a halo of
        :attr:`halo` rows/columns on each side; exact because nothing outside the halo reaches the tile centre."""
        chunk = chunk_size or self.chunk_size
        steps = h.size(1)
        if steps <= chunk + 2 * self.halo:  # one haloed tile would already span the map: score it whole
            return self.forward(h, mask)
        dtype = _compute_dtype(h)
        a = self._project(h)
        logits = h.new_empty(h.size(0), steps, steps)
        tiles = _tiles(steps, chunk)
        for rows in tiles:
            rows_ext = range(max(0, rows.start - self.halo), min(steps, rows.stop + self.halo))
            for cols in tiles:
                cols_ext = range(max(0, cols.start - self.halo), min(steps, cols.stop + self.halo))
                raw = self._raw(a, mask, rows_ext, cols_ext, dtype)
                r0, c0 = rows.start - rows_ext.start, cols.start - cols_ext.start
                logits[:, rows.start:rows.stop, cols.start:cols.stop] = raw[:, r0:r0 + len(rows), c0:c0 + len(cols)]
        if self.impl == "reference" or torch.is_grad_enabled():
            return _symmetrise(logits)
        return _symmetrise_tiles_(logits, tiles)


PairHead = PairwiseHead | ResNet2dHead


def build_head(config: ModelConfig, impl: str = "fast") -> PairHead:
    """The head named by ``config.head``, with forward implementation ``impl`` (``"fast"`` or ``"reference"``)."""
    if config.head == "pairwise":
        return PairwiseHead(config, impl)
    if config.head == "resnet2d":
        return ResNet2dHead(config, impl)
    raise ValueError(f"unknown head {config.head!r}")
