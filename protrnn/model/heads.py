"""Pair heads: encoder states ``h [B, T, D]`` -> symmetric contact logits ``[B, T, T]``.

Both heads are built from features that are symmetric in (i, j) and end with ``(L + L^T) / 2``, so logits are
exactly symmetric. Real-pair logits never depend on padding: the pairwise head is per pair, and the resnet2d head
zeroes padded pairs before every convolution and normalises per pair (over channels), not over the map.

Memory of inference (``predict_logits``) with tile size c, pair width P, receptive-field halo R:
    full map:   O(B * T^2 * P) activations;
    tiled:      O(B * (c + 2R)^2 * P) activations for the tile being scored (streamed resnet2d inference: the
                residual stream, two conv-input maps and the outputs, each allocated once per tile, plus row-strip
                temporaries) + O(B * T * D) encoder states
                + O(B * T^2) for the logits themselves (the output, 1 float per pair, symmetrised in place).
The pairwise head needs no halo (R = 0); the resnet2d head's R is the reach of its dilated convolutions
(``sum(2 * dilation)`` over blocks), so tiles overlap by R and tiled logits equal the full map's up to rounding.
When one haloed tile would span the whole map (T <= c + 2R) the map is scored at once.

A dilation d at least a map's extent n along an axis reaches only the zero padding there with its off-centre taps:
each convolution clamps its dilation, and its padding, to the extent of the map it runs on, rows and columns apart
(:func:`_map_dilation`; the same output, bit for bit below the extent). So a hand-edited ``head_dilations:
[1000000]`` costs no more memory than a dilation of T, and its halo spans every map, which is then scored at once.

Two implementations of the same function share the parameters (so exported models load into either):

* ``impl="fast"`` (the default): the first layer is one batched matmul per tile (the outer sum and product are
  factorised, no ``[B, T, T, P]`` product tensor); each LayerNorm + ReLU + padding mask is one autograd node that
  writes the convolution's input directly in its dtype and layout (channels-last); the residual stream stays in the
  parameters' dtype. Under autocast (``bf16-mixed``) the convolutions and the pairwise head's hidden layer run in
  the autocast dtype with fp32 norms and residual stream; on CPU their input channels are zero-padded to a multiple
  of 16 (oneDNN's bf16 weight-gradient kernel crashes on 20- or 24-channel dilated convolutions in torch 2.13, and
  the padded kernel is faster anyway). Inference (no autograd) of the resnet2d head is streamed: layer by layer
  over cache-sized row strips of a tile whose maps are allocated once (:meth:`ResNet2dHead._pairs_streamed`), so
  big tiles (little halo recomputed) cost no more per pair than small ones.
* ``impl="reference"``: the original module-by-module code, kept for the speed benchmark and the numerics tests.

In float32 the two agree to rounding (about 1e-6 on logits; tests check 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from protrnn.model.config import LOG_SEPARATION_EXACT, LOG_SEPARATION_PER_OCTAVE, ModelConfig

#: Implementations of the heads' forward pass (same parameters, same function): see the module docstring.
HEAD_IMPLS = ("fast", "reference")
#: oneDNN's CPU bf16 convolution kernels want input channels in multiples of this.
_CPU_BF16_CHANNEL_BLOCK = 16
#: Pairs per row strip of the resnet2d head's streamed inference on a CPU (:meth:`ResNet2dHead._pairs_streamed`):
#: 4 MiB of float32 activations at 32 channels, so a convolution's output is still in cache when it is normalised.
STREAM_STRIP_PAIRS = 1 << 15
#: Side of the blocks in which a whole map scored at once is symmetrised and turned into contact logits.
SYMMETRISE_BLOCK = 128


def _symmetrise(outputs: Tensor) -> Tensor:
    """``0.5 * (Z + Z^T)`` over the pair axes of ``[B, T, T, C]`` outputs."""
    return 0.5 * (outputs + outputs.transpose(1, 2))


#: One map written by :func:`_tiled_maps`: the output tensor (``[B, T, T, ...]``) and what turns a symmetrised tile of
#: raw outputs ``[B, R, C, O]`` into its values there.
_MapOut = tuple[Tensor, Callable[[Tensor], Tensor]]


def _tiled_maps(score: Callable[[range, range], Tensor], tiles: list[range], outputs: list[_MapOut]) -> None:
    """Fill whole maps from a head scored one tile at a time: ``score(rows, cols)`` gives the raw outputs
    ``[B, R, C, O]`` of one tile. Each pair of mirror tiles is symmetrised per output channel, turned into each map's
    values (contact logits, :func:`to_contact_logits`; distance-class probabilities) and written to both triangles,
    so every map is exactly symmetric and equals the whole map's up to rounding; the only temporaries are two tiles
    (a long chain's map is held once)."""
    for k, rows in enumerate(tiles):
        for cols in tiles[k:]:
            upper = score(rows, cols)
            lower = upper if cols == rows else score(cols, rows)
            sym = 0.5 * (upper + lower.transpose(1, 2))
            for out, values in outputs:
                tile = values(sym).to(out.dtype)
                out[:, rows.start:rows.stop, cols.start:cols.stop] = tile
                out[:, cols.start:cols.stop, rows.start:rows.stop] = tile.transpose(1, 2)


def distance_probabilities(outputs: Tensor) -> Tensor:
    """Distogram head outputs ``[..., O]`` -> the probabilities of the O distance classes (float32 softmax)."""
    return torch.softmax(outputs.float(), dim=-1)


def separation_index(separation: Tensor, config: ModelConfig) -> Tensor:
    """Embedding rows for separations ``|i - j|`` (any shape, long): :func:`protrnn.model.config.separation_bin`
    applied elementwise (``capped``: ``min(s, max_separation)``; ``log``: exact below 16, then 4 bins per octave)."""
    s = separation.clamp(max=config.max_separation)
    if config.separation == "capped":
        return s
    far = s >= LOG_SEPARATION_EXACT
    octaves = torch.log2(s.clamp(min=LOG_SEPARATION_EXACT).double() / LOG_SEPARATION_EXACT)
    binned = LOG_SEPARATION_EXACT + torch.floor(LOG_SEPARATION_PER_OCTAVE * octaves).long()
    return torch.where(far, binned, s)


def _separation_index(rows: range, cols: range, config: ModelConfig, device: torch.device) -> Tensor:
    """:func:`separation_index` of ``|i - j|`` for i in rows, j in cols: [len(rows), len(cols)] long."""
    i = torch.arange(rows.start, rows.stop, device=device)
    j = torch.arange(cols.start, cols.stop, device=device)
    return separation_index((i[:, None] - j[None, :]).abs(), config)


def to_contact_logits(outputs: Tensor, contact_classes: int) -> Tensor:
    """Per-pair head outputs ``[..., C]`` -> contact logits ``[...]`` (float32 for a distogram).

    ``C == 1`` (binary head): the output itself. A distogram (computed in float32, or float64 for float64 input):
    the log-odds of the probability mass in the first
    ``contact_classes`` distance classes (below the contact cutoff), ``logsumexp(z_<cut) - logsumexp(z_>=cut)``.
    """
    if outputs.shape[-1] == 1:
        return outputs[..., 0]
    z = outputs if outputs.dtype == torch.float64 else outputs.float()
    return torch.logsumexp(z[..., :contact_classes], dim=-1) - torch.logsumexp(z[..., contact_classes:], dim=-1)


def _gather_blocks(x: Tensor, batch_index: Tensor, positions: Tensor) -> Tensor:
    """``x [B, T, ...]`` -> ``[N, S, ...]``: row ``positions[n]`` of chain ``batch_index[n]``."""
    return x[batch_index[:, None], positions]


def _block_positions(blocks: Tensor, size: int, context: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Valid rows of ``blocks [B, K, 2]`` (row start, column start; ``-1`` rows are padding) -> ``batch_index [N]``,
    ``rows [N, S]`` and ``cols [N, S]`` (absolute residue positions of each block's rows and columns), with
    ``context`` positions more on each side (``S = size + 2 context``; these may lie outside the chain)."""
    batch_index, slot = (blocks[..., 0] >= 0).nonzero(as_tuple=True)
    offsets = torch.arange(-context, size + context, device=blocks.device)
    rows = blocks[batch_index, slot, 0][:, None] + offsets
    cols = blocks[batch_index, slot, 1][:, None] + offsets
    return batch_index, rows, cols


class BlockOutputs:
    """Head outputs on sampled pair blocks (training, see :meth:`ResNet2dHead.block_outputs`).

    ``outputs [N, S, S, C]``; block n holds the pairs ``(rows[n, a], cols[n, b])`` of chain ``batch_index[n]``.
    Diagonal blocks (same rows and columns) are symmetrised like a whole map; off-diagonal blocks are scored in the
    orientation sampled (the sampler draws both orientations, so both are trained).
    """

    def __init__(self, outputs: Tensor, batch_index: Tensor, rows: Tensor, cols: Tensor) -> None:
        self.outputs = outputs
        self.batch_index = batch_index
        self.rows = rows
        self.cols = cols

    @classmethod
    def positions(cls, blocks: Tensor, size: int) -> BlockOutputs:
        """The blocks' pairs alone (empty ``outputs``), from a batch's ``blocks [B, K, 2]`` and ``block_size``: what
        a batch scores without running a network (:meth:`scored`, :meth:`gather`; the benchmarks count pairs and
        separations with it)."""
        return cls(blocks.new_empty(0, dtype=torch.float32), *_block_positions(blocks, size))

    def gather(self, pair_tensor: Tensor) -> Tensor:
        """A per-pair batch tensor ``[B, T, T, ...]`` (targets, masks) at the blocks' pairs: ``[N, S, S, ...]``."""
        return pair_tensor[self.batch_index[:, None, None], self.rows[:, :, None], self.cols[:, None, :]]

    def separations(self) -> Tensor:
        """``[N, S, S]``: |i - j| in the chain of every block pair (not its position inside the block)."""
        return (self.rows[:, :, None] - self.cols[:, None, :]).abs()

    def scored(self, pair_mask: Tensor) -> Tensor:
        """Bool ``[N, S, S]``: the batch's scored pairs inside the blocks, each pair of a diagonal block once
        (its upper triangle, as :func:`protrnn.training.loss.scored_pairs` does for whole maps)."""
        inside = self.gather(pair_mask)
        diagonal = (self.rows[:, 0] == self.cols[:, 0])[:, None, None]
        upper = self.rows[:, :, None] < self.cols[:, None, :]
        return inside & (upper | ~diagonal)


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


def _outer_features(a_r: Tensor, a_c: Tensor, s_r: Tensor, s_c: Tensor, weight: Tensor) -> Tensor:
    """``W (a_i * a_j) + s_i + s_j`` for every row i of ``a_r [N, R, W]`` and column j of ``a_c [N, C, W]`` with one
    batched matmul: ``[N, R, C, P']`` (``s_r [N, R, P']``, ``s_c [N, C, P']``).

    ``out[b, i, (j, c)] = sum_k left[b, i, k] right[b, k, (j, c)] + s_i[c]`` with ``left_i = [a_i | 1]`` and
    ``right = [W[c, p] a_j[p] ; s_j[c]]``, so the ``[N, R, C, P]`` product tensor is never materialised and the
    result comes out channels-last and contiguous; ``s_i`` is one broadcast add.
    """
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


def _norm_relu(norm: nn.LayerNorm, x: Tensor, keep: Tensor | None, dtype: torch.dtype, width: int) -> Tensor:
    """:class:`_NormReLU` (with autograd; inference streams instead: :meth:`ResNet2dHead._pairs_streamed`)."""
    return _NormReLU.apply(x, norm.weight, norm.bias, norm.eps, keep, dtype, width)


def _norm_relu_into(norm: nn.LayerNorm, x: Tensor, keep: Tensor | None, out: Tensor) -> None:
    """Inference: ``relu(layer_norm(x)) * keep`` written into ``out`` (cast to its dtype). ``x`` is normalised in the
    norm's own dtype, as the autograd path does (a bf16 input with float32 weights is not supported by every
    device's kernel, and rounds differently where it is)."""
    if x.dtype != norm.weight.dtype:
        x = x.to(norm.weight.dtype)
    y = F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps).relu_()
    out.copy_(y if keep is None else y.mul_(keep))


def _conv_operands(conv: nn.Conv2d, width: int, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """``conv``'s weight zero-padded to ``width`` input channels and its bias, both in ``dtype``."""
    weight = conv.weight
    extra = width - weight.shape[1]
    if extra:
        weight = F.pad(weight, (0, 0, 0, 0, 0, extra))
    return weight.to(dtype), (conv.bias.to(dtype) if conv.bias is not None else None)


def _map_dilation(dilation: int, rows: int, cols: int) -> tuple[int, int]:
    """The dilation (and zero padding) a dilated 3x3 convolution of the resnet2d head runs with on a ``rows x cols``
    map: ``dilation`` clamped to the map's extent along each axis.

    At every position of an axis of extent n, a tap ``d >= n`` away lies in the zero padding, as a tap n away does,
    so the output is the same, while the padding (``d`` rows and columns on each side) stays within the map's size
    however large a hand-edited ``head_dilations`` is. Dilations below the extent are unchanged, and so is the
    arithmetic."""
    return min(dilation, max(1, rows)), min(dilation, max(1, cols))


def _fast_conv(conv: nn.Conv2d, u: Tensor, dtype: torch.dtype) -> Tensor:
    """``conv`` on a channels-last ``[B, I, J, W]`` input whose channels beyond ``conv.in_channels`` are zero
    (weights zero-padded to match, so the result is the same): returns ``[B, I, J, C_out]`` in ``dtype``. The
    dilation is clamped to the map (:func:`_map_dilation`)."""
    weight, bias = _conv_operands(conv, u.shape[-1], dtype)
    dilation = _map_dilation(conv.dilation[0], u.shape[1], u.shape[2])
    out = F.conv2d(u.permute(0, 3, 1, 2), weight, bias, padding=dilation, dilation=dilation)
    return out.permute(0, 2, 3, 1)


#: Largest pair-feature tile (floats) a head plans on a CPU, unless it streams its inference
#: (:attr:`ResNet2dHead.cpu_tile_floats`): 32 MiB of float32, glibc's largest dynamic mmap threshold. Bigger blocks are
#: mmapped afresh on every allocation under default malloc settings, and a halo-free head gains nothing from bigger
#: tiles.
TILE_FLOATS = 1 << 23
#: The streamed resnet2d head's CPU tile cap: 128 MiB of float32 per map, a 1,024-residue haloed tile of 32 channels.
#: Its inference allocates a tile's maps once and streams them through cache in row strips, so a big tile costs its
#: page faults once, not once per layer, and saves the halo that smaller tiles recompute (measured: docs/predict.md,
#: "Speed and memory").
STREAMED_TILE_FLOATS = 1 << 25


class _PairHeadBase(nn.Module):
    """What both heads share: per-pair outputs ``[..., O]`` (O = 1 contact logit, or distance-class logits), the
    separation embedding, whole maps, sampled blocks and tiled inference. A head implements :meth:`_pairs`: raw
    (unsymmetrised) outputs for rows x columns given gathered per-residue features."""

    #: Rows/columns beyond a tile that can influence it (0 for the per-pair MLP).
    halo = 0

    #: Largest pair-feature tile (floats per tensor) :meth:`ContactModel.chunk_size_for` plans on a CPU.
    cpu_tile_floats: int = TILE_FLOATS

    def __init__(self, config: ModelConfig, impl: str) -> None:
        super().__init__()
        self.config = config
        self.max_separation = config.max_separation
        self.chunk_size = config.pair_chunk_size
        self.contact_classes = config.contact_classes
        #: ``"fast"`` or ``"reference"`` (same function; see the module docstring). Not saved with the weights.
        self.impl = _check_impl(impl)

    # -- to implement ------------------------------------------------------------------------------------------
    def _features(self, h: Tensor) -> tuple[Tensor, ...]:
        """Per-residue features ``[B, T, ...]`` the pair computation reads (each gathered along T)."""
        raise NotImplementedError

    def _pairs(self, rows: tuple[Tensor, ...], cols: tuple[Tensor, ...], keep: Tensor | None, sep: Tensor,
               dtype: torch.dtype) -> Tensor:
        """Raw outputs ``[N, R, C, O]`` from row / column features, the real-pair mask ``keep [N, R, C, 1]`` (None:
        all real) and the separation-embedding rows ``sep [R, C]`` or ``[N, R, C]``."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------------
    def _tile(self, feats: tuple[Tensor, ...], mask: Tensor, rows: range, cols: range, dtype: torch.dtype) -> Tensor:
        """Raw outputs of the sub-map rows x cols, computed as if it were the whole map: ``[B, R, C, O]``."""
        r = tuple(f[:, rows.start:rows.stop] for f in feats)
        c = tuple(f[:, cols.start:cols.stop] for f in feats)
        sep = _separation_index(rows, cols, self.config, mask.device)
        return self._pairs(r, c, _pair_keep(mask, rows, cols), sep, dtype)

    def pair_outputs(self, h: Tensor, mask: Tensor) -> Tensor:
        """Symmetrised per-pair outputs of the whole map: ``[B, T, T, O]``."""
        span = range(0, h.size(1))
        return _symmetrise(self._tile(self._features(h), mask, span, span, _compute_dtype(h)))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """Symmetric contact logits ``[B, T, T]`` of the whole map."""
        return to_contact_logits(self.pair_outputs(h, mask), self.contact_classes)

    def block_outputs(self, h: Tensor, mask: Tensor, blocks: Tensor, size: int, context: int = 0) -> BlockOutputs:
        """Outputs on sampled square pair blocks of side ``size`` (training with a whole-chain encoder): ``blocks
        [B, K, 2]`` holds each block's (row start, column start), ``-1`` rows are padding (see
        :func:`protrnn.data.batching.sample_pair_blocks`). Separations are the blocks' true ones in the chain.

        ``context`` (>= 0) computes each block on ``context`` more rows and columns on every side, residues outside
        the chain masked as inference masks them, and returns the central ``size x size`` outputs: with ``context``
        at least :attr:`halo` these equal the whole map's outputs at the block's pairs (what evaluation scores),
        while with 0 the block's convolutions see zeros beyond its edges. Context beyond :attr:`halo` cannot reach
        the centre and is not computed (a pairwise head, halo 0, ignores it)."""
        if context < 0:
            raise ValueError(f"block context must be >= 0, got {context}")
        extra = min(int(context), self.halo)
        batch_index, rows, cols = _block_positions(blocks, size, extra)
        steps = h.size(1)
        feats = self._features(h)
        r_in, c_in = rows.clamp(0, steps - 1), cols.clamp(0, steps - 1)
        r = tuple(_gather_blocks(f, batch_index, r_in) for f in feats)
        c = tuple(_gather_blocks(f, batch_index, c_in) for f in feats)
        m_r = _gather_blocks(mask, batch_index, r_in) & (rows >= 0) & (rows < steps)
        m_c = _gather_blocks(mask, batch_index, c_in) & (cols >= 0) & (cols < steps)
        keep = None if bool(m_r.all()) and bool(m_c.all()) else (m_r[:, :, None] & m_c[:, None, :]).unsqueeze(-1)
        sep = separation_index((rows[:, :, None] - cols[:, None, :]).abs(), self.config)
        z = self._pairs(r, c, keep, sep, _compute_dtype(h))
        if extra:
            centre = slice(extra, extra + size)
            z, rows, cols = z[:, centre, centre], rows[:, centre], cols[:, centre]
        diagonal = (rows[:, 0] == cols[:, 0])[:, None, None, None]
        z = torch.where(diagonal, _symmetrise(z), z)
        return BlockOutputs(z, batch_index, rows, cols)

    def predict_logits(self, h: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
        """Same contact logits as :meth:`forward` (up to rounding), scored in tiles of ``chunk_size`` rows x columns
        with a halo of :attr:`halo` on each side (exact: nothing outside the halo reaches the tile centre)."""
        return self.predict_maps(h, mask, chunk_size)[0]

    def predict_maps(self, h: Tensor, mask: Tensor, chunk_size: int | None = None, distogram: bool = False,
                     halo: int | None = None) -> tuple[Tensor, Tensor | None]:
        """:meth:`predict_logits`' contact logits ``[B, T, T]`` and, with ``distogram``, the distance-class
        probabilities ``[B, T, T, O]`` (float32, softmax of the same symmetrised outputs: their mass in the first
        ``contact_classes`` classes is the sigmoid of the contact logit), from one tiled pass. A binary head has no
        distance classes: ``distogram`` then raises ValueError.

        ``halo`` (default :attr:`halo`, which makes tiles exact) is the context computed around each tile. A smaller
        one cuts the head's view: with 0 each ``chunk_size`` tile is scored as if the map ended at its edges, as
        training blocks without context are (a diagnostic: ``benchmarks/head_context.py``)."""
        if distogram and self.contact_classes == 0:
            raise ValueError("a binary contact head has no distance classes (distogram_bins is null)")
        if halo is not None and halo < 0:
            raise ValueError(f"halo must be >= 0, got {halo}")
        halo = self.halo if halo is None else int(halo)
        chunk = chunk_size or self.chunk_size
        batch, steps = h.size(0), h.size(1)
        dtype = _compute_dtype(h)
        feats = self._features(h)
        logits = h.new_empty(batch, steps, steps)
        outputs: list[_MapOut] = [(logits, lambda z: to_contact_logits(z, self.contact_classes))]
        dist = None
        if distogram:
            dist = h.new_empty(batch, steps, steps, self.config.pair_outputs, dtype=torch.float32)
            outputs.append((dist, distance_probabilities))
        if steps <= chunk + 2 * halo:  # one haloed tile would already span the map: score it whole
            span = range(0, steps)
            raw = self._tile(feats, mask, span, span, dtype)
            # symmetrised block by block (cache-sized transposes), not as one [B, T, T, O] transpose
            _tiled_maps(lambda rows, cols: raw[:, rows.start:rows.stop, cols.start:cols.stop],
                        _tiles(steps, SYMMETRISE_BLOCK), outputs)
            return logits, dist

        def score(rows: range, cols: range) -> Tensor:
            rows_ext = range(max(0, rows.start - halo), min(steps, rows.stop + halo))
            cols_ext = range(max(0, cols.start - halo), min(steps, cols.stop + halo))
            raw = self._tile(feats, mask, rows_ext, cols_ext, dtype)
            r0, c0 = rows.start - rows_ext.start, cols.start - cols_ext.start
            return raw[:, r0:r0 + len(rows), c0:c0 + len(cols)]

        _tiled_maps(score, _tiles(steps, chunk), outputs)
        return logits, dist


class PairwiseHead(_PairHeadBase):
    """Per-pair MLP; all sequence context must come from the recurrent encoder (no spatial mixing).

    With ``a = W h`` (width P) the first layer is ``u_i + u_j + B(a_i, a_j) + E[sep(|i-j|)]``: a symmetric
    linear term, a symmetric bilinear term (``sum_p V_cp a_ip a_jp`` per channel c, computed as one matmul, so no
    [B, T, T, P] intermediate), and a learned separation embedding; then ReLU, a hidden layer, and the outputs.
    """

    def __init__(self, config: ModelConfig, impl: str = "fast") -> None:
        super().__init__(config, impl)
        width, pair = 2 * config.hidden_size, config.pair_dim
        self.proj = nn.Linear(width, pair)
        self.linear = nn.Linear(pair, pair)
        self.bilinear = nn.Parameter(torch.empty(pair, pair))
        nn.init.normal_(self.bilinear, std=pair ** -1.0)
        self.separation = nn.Embedding(config.separation_bins, pair)
        self.hidden = nn.Linear(pair, pair)
        self.out = nn.Linear(pair, config.pair_outputs)

    def _features(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``a = W h`` and the linear term ``u``; the fast path keeps them in the parameters' dtype under autocast."""
        if self.impl == "reference":
            a = self.proj(h)
            return a, self.linear(a)
        with torch.autocast(h.device.type, enabled=False):
            a = self.proj(h.to(self.proj.weight.dtype))
            return a, self.linear(a)

    def _pairs(self, rows: tuple[Tensor, ...], cols: tuple[Tensor, ...], keep: Tensor | None, sep: Tensor,
               dtype: torch.dtype) -> Tensor:
        (a_r, u_r), (a_c, u_c) = rows, cols
        if self.impl == "reference":  # the original code
            batch, n_rows, pair = a_r.shape
            # bilinear[b, i, c, j] = sum_p a_r[b, i, p] * V[c, p] * a_c[b, j, p]
            scaled = (a_r.unsqueeze(2) * self.bilinear).reshape(batch, n_rows * pair, pair)
            bilinear = torch.bmm(scaled, a_c.transpose(1, 2)).view(batch, n_rows, pair, -1).permute(0, 1, 3, 2)
            z = bilinear + u_r[:, :, None, :] + u_c[:, None, :, :] + self.separation(sep)
            return self.out(F.relu(self.hidden(F.relu(z))))
        with torch.autocast(a_r.device.type, enabled=False):
            z = _outer_features(a_r, a_c, u_r, u_c, self.bilinear)
            z = z + self.separation(sep)
            z = F.relu(z).to(dtype)
            z = F.relu(F.linear(z, self.hidden.weight.to(dtype), self.hidden.bias.to(dtype)))
            return F.linear(z, self.out.weight.to(dtype), self.out.bias.to(dtype)).to(a_r.dtype)


class _PairNorm(nn.Module):
    """LayerNorm over channels at each pair: local (so tiles are exact and padding cannot leak through statistics)
    and independent of batch composition, unlike instance or batch norm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, I, J, C]
        return self.norm(x)


def _conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a conv to a channels-last [B, I, J, C] tensor (as a channels_last NCHW view) and return [B, I, J, C];
    the dilation is clamped to the map (:func:`_map_dilation`)."""
    dilation = _map_dilation(conv.dilation[0], x.shape[1], x.shape[2])
    out = F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=dilation, dilation=dilation)
    return out.permute(0, 2, 3, 1)


class _ResidualBlock(nn.Module):
    """Pre-activation block: norm -> ReLU -> dilated 3x3 -> norm -> ReLU -> dilated 3x3 (-> dropout in training),
    plus the identity. Padded pairs are zeroed right before each convolution so nothing computed there reaches a real
    pair."""

    def __init__(self, channels: int, dilation: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dilation = dilation
        self.dropout = dropout
        self.norm1 = _PairNorm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = _PairNorm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def _drop(self, y: Tensor) -> Tensor:
        """The branch's dropout; without any (rate 0, or eval mode) ``y`` itself, drawing no random numbers, so a
        model without head dropout trains exactly as before the option existed."""
        return F.dropout(y, self.dropout, training=True) if self.dropout and self.training else y

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        y = _conv(self.conv1, F.relu(self.norm1(x)) * keep)
        y = _conv(self.conv2, F.relu(self.norm2(y)) * keep)
        return x + self._drop(y)

    def forward_fast(self, x: Tensor, keep: Tensor | None, dtype: torch.dtype, width: int) -> Tensor:
        """The same block with fused norm/ReLU/mask nodes, convolutions in ``dtype`` on ``width`` input channels,
        and the residual added in ``x``'s dtype. With autograd only: inference streams instead
        (:meth:`ResNet2dHead._pairs_streamed`)."""
        y = _fast_conv(self.conv1, _norm_relu(self.norm1.norm, x, keep, dtype, width), dtype)
        y = _fast_conv(self.conv2, _norm_relu(self.norm2.norm, y, keep, dtype, width), dtype)
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        return x + self._drop(y)


class ResNet2dHead(_PairHeadBase):
    """Outer features -> ``head_blocks`` dilated residual 2D conv blocks (dilations cycle ``head_dilations``) ->
    1x1 conv. Input pair features: ``W (a_i + a_j) + U (a_i * a_j)`` (symmetric, a 1x1 conv over the sum and
    the product) plus a separation embedding. Activations are kept channels-last ([B, I, J, C]) so the per-pair
    norm is a plain LayerNorm.
    """

    def __init__(self, config: ModelConfig, impl: str = "fast") -> None:
        super().__init__(config, impl)
        width, pair = 2 * config.hidden_size, config.pair_dim
        self.proj = nn.Linear(width, pair)
        self.pair_sum = nn.Linear(pair, pair)
        self.pair_product = nn.Linear(pair, pair, bias=False)
        self.separation = nn.Embedding(config.separation_bins, pair)
        dilations = [config.head_dilations[i % len(config.head_dilations)] for i in range(config.head_blocks)]
        self.blocks = nn.ModuleList(_ResidualBlock(pair, d, config.head_dropout) for d in dilations)
        self.out_norm = _PairNorm(pair)
        self.out = nn.Linear(pair, config.pair_outputs)
        #: Rows/columns beyond a tile that can influence it: each block has two convs of reach ``dilation``.
        self.halo = sum(2 * d for d in dilations)

    @property
    def cpu_tile_floats(self) -> int:  # type: ignore[override]
        """Only the fast implementation streams its inference; the reference allocates whole maps per layer."""
        return STREAMED_TILE_FLOATS if self.impl == "fast" else TILE_FLOATS

    def _features(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``a = W h`` and ``s = W' a`` (the sum term: ``W'(a_i + a_j) = s_i + s_j``); the fast path keeps them in the
        parameters' dtype under autocast."""
        if self.impl == "reference":
            a = self.proj(h)
            return a, self.pair_sum(a)
        with torch.autocast(h.device.type, enabled=False):
            a = self.proj(h.to(self.proj.weight.dtype))
            return a, self.pair_sum(a)

    def _pairs(self, rows: tuple[Tensor, ...], cols: tuple[Tensor, ...], keep: Tensor | None, sep: Tensor,
               dtype: torch.dtype) -> Tensor:
        (a_r, s_r), (a_c, s_c) = rows, cols
        if self.impl == "reference":  # the original module-by-module code
            keep_f = (torch.ones(*a_r.shape[:2], a_c.shape[1], 1, dtype=a_r.dtype, device=a_r.device)
                      if keep is None else keep.to(a_r.dtype))
            x = self.pair_product(a_r[:, :, None, :] * a_c[:, None, :, :]) + s_r[:, :, None, :] + s_c[:, None, :, :]
            x = x + self.separation(sep)
            for block in self.blocks:
                x = block(x, keep_f)
            return self.out(F.relu(self.out_norm(x)))
        with torch.autocast(a_r.device.type, enabled=False):
            if not torch.is_grad_enabled():
                return self._pairs_streamed(a_r, s_r, a_c, s_c, keep, sep, dtype)
            x = _outer_features(a_r, a_c, s_r, s_c, self.pair_product.weight) + self.separation(sep)
            keep = keep.to(x.dtype) if keep is not None else None
            width = _conv_width(x.shape[-1], dtype, x.device)
            for block in self.blocks:
                x = block.forward_fast(x, keep, dtype, width)
            y = _norm_relu(self.out_norm.norm, x, None, x.dtype, x.shape[-1])
            return F.linear(y, self.out.weight, self.out.bias)

    def _strip_rows(self, batch: int, n_cols: int, device: torch.device) -> int:
        """Rows per strip of :meth:`_pairs_streamed`: :data:`STREAM_STRIP_PAIRS` pairs on a CPU (at least 1 row), the
        whole tile elsewhere (a GPU wants large kernels, not cache-sized ones)."""
        if device.type != "cpu":
            return 1 << 62
        return max(1, STREAM_STRIP_PAIRS // max(1, batch * n_cols))

    def _pairs_streamed(self, a_r: Tensor, s_r: Tensor, a_c: Tensor, s_c: Tensor, keep: Tensor | None, sep: Tensor,
                        dtype: torch.dtype) -> Tensor:
        """Inference (no autograd) of the fast path, layer-major in row strips: the same function as the
        whole-tile code, computed so that each strip's activations stay in cache.

        The tile's residual stream ``x`` (float32) and two conv-input maps ``u``, ``v`` (``dtype``, zero-padded by
        the largest dilation above and below, and to the convolution's channel width) are allocated once. Each
        block then runs three passes over row strips: ``u = relu(norm1(x))``; ``v = relu(norm2(conv1(u)))``;
        ``x += conv2(v)``. A strip's convolution reads its rows plus ``dilation`` rows of the map on each side
        (the zero rows at the map's edges are the convolution's own padding; columns are padded by the
        convolution), so nothing is recomputed, unlike haloed tiles, and the LayerNorm reads the convolution's
        output while it is still in cache. Dilations are clamped to the tile (:func:`_map_dilation`): along the
        rows to its total rows, not a strip's, since a strip reads the rows of the whole padded map. Outputs are
        ``[B, R, C, O]`` in float32, as the whole-tile code's.
        """
        batch, n_rows, n_cols = a_r.shape[0], a_r.shape[1], a_c.shape[1]
        channels = self.config.pair_dim
        width = _conv_width(channels, dtype, a_r.device)
        dilations = [_map_dilation(block.dilation, n_rows, n_cols) for block in self.blocks]
        reach = max((rows for rows, _ in dilations), default=0)
        step = self._strip_rows(batch, n_cols, a_r.device)
        strips = [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]
        keeps = [None if keep is None else keep[:, rows].to(a_r.dtype) for rows in strips]
        x = a_r.new_empty(batch, n_rows, n_cols, channels)
        for rows in strips:
            # sep: [R, C] for a tile, [N, R, C] for sampled blocks (one per block)
            sep_rows = sep[rows] if sep.dim() == 2 else sep[:, rows]
            torch.add(_outer_features(a_r[:, rows], a_c, s_r[:, rows], s_c, self.pair_product.weight),
                      self.separation(sep_rows), out=x[:, rows])
        maps = []
        for _ in range(2 if self.blocks else 0):
            padded = a_r.new_empty(batch, n_rows + 2 * reach, n_cols, width, dtype=dtype)
            padded[:, :reach].zero_()
            padded[:, reach + n_rows:].zero_()
            if width > channels:
                padded[..., channels:].zero_()
            maps.append(padded)

        operands = {c: _conv_operands(c, width, dtype) for block in self.blocks for c in (block.conv1, block.conv2)}

        def inner(padded: Tensor, rows: slice) -> Tensor:  # a strip's rows of a padded map, first C channels
            return padded[:, reach + rows.start:reach + rows.stop, :, :channels]

        def conv(conv2d: nn.Conv2d, padded: Tensor, rows: slice, dilation: tuple[int, int]) -> Tensor:
            weight, bias = operands[conv2d]
            d_rows, d_cols = dilation
            window = padded[:, reach + rows.start - d_rows:reach + rows.stop + d_rows]
            out = F.conv2d(window.permute(0, 3, 1, 2), weight, bias, padding=(0, d_cols), dilation=dilation)
            return out.permute(0, 2, 3, 1)

        for block, dilation in zip(self.blocks, dilations, strict=True):
            u, v = maps
            for rows, keep_rows in zip(strips, keeps, strict=True):
                _norm_relu_into(block.norm1.norm, x[:, rows], keep_rows, inner(u, rows))
            for rows, keep_rows in zip(strips, keeps, strict=True):
                y = conv(block.conv1, u, rows, dilation)
                _norm_relu_into(block.norm2.norm, y, keep_rows, inner(v, rows))
            for rows in strips:
                x[:, rows].add_(conv(block.conv2, v, rows, dilation))
        out = a_r.new_empty(batch, n_rows, n_cols, self.out.out_features)
        norm = self.out_norm.norm
        for rows in strips:
            y = F.layer_norm(x[:, rows], (channels,), norm.weight, norm.bias, norm.eps).relu_()
            out[:, rows] = F.linear(y, self.out.weight, self.out.bias)
        return out


PairHead = PairwiseHead | ResNet2dHead


def build_head(config: ModelConfig, impl: str = "fast") -> PairHead:
    """The head named by ``config.head``, with forward implementation ``impl`` (``"fast"`` or ``"reference"``)."""
    if config.head == "pairwise":
        return PairwiseHead(config, impl)
    if config.head == "resnet2d":
        return ResNet2dHead(config, impl)
    raise ValueError(f"unknown head {config.head!r}")
