"""Bidirectional recurrent encoder with exact masking, optional truncated BPTT (gradient horizon) and inits.

Exact masking
    A padded bidirectional RNN reads the padding first in its reverse direction, so every real output of that
    direction depends on how much padding the batch happened to need. Here padding never enters a recurrence:

    * forward direction: the fused one-way kernel runs over the padded tensor; padding sits after the last residue,
      so it can only influence padded outputs, which are zeroed;
    * reverse direction: each row's valid prefix is reversed in place with a per-row gather (``L-1-t`` for
      ``t < L``), the same fused one-way kernel runs over it, and the outputs are gathered back.

    On the 2-core CPU (training step, B=16, T=128) this runs within 1.05-1.15x of the inexact fused padded
    bidirectional kernel, while the packed path is 1.3-5.5x slower than it (LSTM worst; ``benchmarks/bench_models.py``,
    table in docs/training.md). The packed bidirectional computation is
    kept as ``exact_path="packed"``: it is the reference the tests compare against. The default ``"auto"`` picks per
    device (:func:`select_exact_path`): ``"reverse"`` on the CPU (measured above), ``"packed"`` on CUDA, where cuDNN
    runs packed bidirectional input in one fused call; with a gradient horizon always ``"reverse"`` (the packed path
    cannot cut gradients). Both are exact; they differ only in float rounding.

Gradient horizon k (truncated BPTT)
    Positions are split into blocks ``[m*k, (m+1)*k)`` counted from residue 0 of each chain. Both directions run
    block by block and hand their final state to the next block with ``.detach()``: the forward *values* are
    unchanged (the state still crosses the whole chain) but no gradient flows through a block boundary. The
    reverse direction uses the *same* boundaries in original residue indices (its first block is the partial one
    at the chain end), so the horizon is symmetric.

    Consequence, within one layer: ``d out_t / d x_s`` is zero whenever s and t lie in different blocks (the
    forward half only depends on s <= t inside t's block, the reverse half on s >= t inside t's block). Because
    every layer cuts at the same positions and everything between layers (residual, layer norm, dropout) acts per
    position, each layer's Jacobian is block-diagonal with the same blocks, so their product is too: for the
    whole stack ``d h_t / d x_s == 0`` exactly whenever a cut lies between s and t, however many layers there are.
    (A pair head then mixes positions i and j, so ``d logit_ij / d x_s`` is non-zero only for s in the block of i
    or of j, plus the 2D convolutions' reach for the resnet2d head.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from protrnn.model.config import ModelConfig
from protrnn.model.hardware import recurrence_autocast

_RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
#: Gates per cell, in PyTorch's weight layout (LSTM: i, f, g, o; GRU: r, z, n; RNN: one).
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
EXACT_PATHS = ("auto", "reverse", "packed")


def select_exact_path(requested: str, device_type: str, gradient_horizon: int | None) -> str:
    """The masking implementation to run: ``requested`` unless it is ``"auto"`` (see the module docstring)."""
    if requested != "auto":
        return requested
    return "packed" if device_type == "cuda" and gradient_horizon is None else "reverse"

State = Tensor | tuple[Tensor, Tensor]


def _detach(state: State) -> State:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """``out[b, t] = x[b, index[b, t]]`` for a [B, T, D] tensor and a [B, T'] index."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


@dataclass
class MaskPlan:
    """Per-batch index tensors shared by all layers (computed once per forward).

    ``reverse_index`` reverses each row's valid prefix and leaves padding in place (it is its own inverse).
    With a gradient horizon k, the reverse direction runs over a working tensor W whose slots ``[0, k)`` hold the
    first (partial, length ``first_len``) block from the chain end and whose slots ``[k, ...)`` hold the following
    full blocks, so every later block boundary sits at a multiple of k for every row:
    ``W = x[work_index]`` and ``out = W_out[unwork_index]``.
    """

    mask: Tensor
    lengths: Tensor
    lengths_cpu: Tensor
    reverse_index: Tensor
    horizon: int | None = None
    first_len_cpu: Tensor | None = None
    work_index: Tensor | None = None
    unwork_index: Tensor | None = None

    @classmethod
    def build(cls, mask: Tensor, horizon: int | None) -> MaskPlan:
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool [B, T] tensor, got {mask.dtype} {tuple(mask.shape)}")
        batch, steps = mask.shape
        lengths = mask.sum(1)
        positions = torch.arange(steps, device=mask.device).expand(batch, steps)
        if not torch.equal(mask, positions < lengths.unsqueeze(1)):
            raise ValueError("mask must be right-padded: True for the first `length` positions of each row only")
        valid = positions < lengths.unsqueeze(1)
        reverse_index = torch.where(valid, lengths.unsqueeze(1) - 1 - positions, positions)
        plan = cls(mask=mask, lengths=lengths, lengths_cpu=lengths.cpu(), reverse_index=reverse_index)
        longest = int(plan.lengths_cpu.max()) if batch else 0
        if horizon is None or horizon >= longest:
            return plan  # no cut falls inside any chain
        k = horizon
        # Residues in the block that contains the chain end; an empty row (length 0) gets a one-step first block,
        # because packing needs at least one step, but none of its slots is valid: it reads nothing and outputs zeros.
        first_len = (lengths - 1).clamp(min=0) % k + 1
        width = k + int((plan.lengths_cpu - first_len.cpu()).max())
        slots = torch.arange(width, device=mask.device).expand(batch, width)
        first = first_len.unsqueeze(1)
        rev_pos = torch.where(slots < k, slots, slots - k + first)  # position in the reversed chain
        slot_valid = torch.where(slots < k, slots < first, rev_pos < lengths.unsqueeze(1)) & (lengths.unsqueeze(1) > 0)
        work_index = torch.where(slot_valid, lengths.unsqueeze(1) - 1 - rev_pos, torch.zeros_like(slots))
        rev_of_t = lengths.unsqueeze(1) - 1 - positions
        unwork_index = torch.where(rev_of_t < first, rev_of_t, rev_of_t - first + k)
        unwork_index = torch.where(valid, unwork_index, torch.zeros_like(unwork_index))
        plan.horizon = k
        plan.first_len_cpu = first_len.cpu()
        plan.work_index = work_index
        plan.unwork_index = unwork_index
        return plan


class BiRecurrentLayer(nn.Module):
    """One bidirectional layer stored as two one-way modules (``fwd``, ``bwd``) so each direction can run on the
    fused kernel over its own (prefix-reversed) input."""

    def __init__(self, cell: str, input_size: int, hidden_size: int) -> None:
        super().__init__()
        rnn_class = _RNN_CLASSES[cell]
        kwargs: dict[str, object] = {"batch_first": True}
        if cell == "rnn":
            kwargs["nonlinearity"] = "tanh"
        self.cell = cell
        self.hidden_size = hidden_size
        self.fwd = rnn_class(input_size, hidden_size, **kwargs)
        self.bwd = rnn_class(input_size, hidden_size, **kwargs)
        # Parameter-free bidirectional twin used only by the packed path (weights are supplied per call).
        template = rnn_class(input_size, hidden_size, bidirectional=True, device="meta", **kwargs)
        self.__dict__["_packed_template"] = template  # plain attribute: not a submodule, not in state_dict

    def forward(self, x: Tensor, plan: MaskPlan, path: str = "reverse") -> Tensor:
        if path == "packed":
            if plan.horizon is not None:
                raise ValueError("the packed path has no gradient horizon; use path='reverse'")
            return self._packed(x, plan)
        if plan.horizon is None:
            out_f, _ = self.fwd(x)
            out_b, _ = self.bwd(_gather_time(x, plan.reverse_index))
            out_b = _gather_time(out_b, plan.reverse_index)
        else:
            out_f = self._segmented(self.fwd, x, plan.horizon)
            out_b = self._reverse_segmented(x, plan)
        return torch.cat([out_f, out_b], dim=-1)

    @staticmethod
    def _segmented(rnn: nn.RNNBase, x: Tensor, k: int, state: State | None = None, start: int = 0) -> Tensor:
        """Run ``rnn`` over ``x[:, start:]`` in blocks of k steps, detaching the state between blocks."""
        outputs = []
        for begin in range(start, x.size(1), k):
            out, state = rnn(x[:, begin:begin + k], state)
            state = _detach(state)
            outputs.append(out)
        return torch.cat(outputs, dim=1)

    def _reverse_segmented(self, x: Tensor, plan: MaskPlan) -> Tensor:
        assert plan.horizon is not None and plan.work_index is not None and plan.unwork_index is not None
        k = plan.horizon
        work = _gather_time(x, plan.work_index)
        # First block: its length differs per row (the chain end is rarely on a boundary), so it runs packed to
        # get each row's exact final state; it is at most k steps, the rest runs on the fused kernel.
        packed = pack_padded_sequence(work[:, :k], plan.first_len_cpu, batch_first=True, enforce_sorted=False)
        first_out, state = self.bwd(packed)
        first_out, _ = pad_packed_sequence(first_out, batch_first=True, total_length=k)
        parts = [first_out]
        if work.size(1) > k:
            parts.append(self._segmented(self.bwd, work, k, _detach(state), start=k))
        return _gather_time(torch.cat(parts, dim=1), plan.unwork_index)

    def _packed(self, x: Tensor, plan: MaskPlan) -> Tensor:
        """Reference: PyTorch's own packed bidirectional computation with this layer's weights."""
        template = self.__dict__["_packed_template"]
        weights = {name: getattr(self.fwd, name) for name in self.fwd._flat_weights_names}
        weights.update({f"{name}_reverse": getattr(self.bwd, name) for name in self.bwd._flat_weights_names})
        packed = pack_padded_sequence(x, plan.lengths_cpu.clamp(min=1), batch_first=True, enforce_sorted=False)
        out, _ = functional_call(template, weights, (packed,))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out


class RecurrentEncoder(nn.Module):
    """Stack of ``num_layers`` bidirectional LSTM / GRU / tanh-RNN layers: ``x [B, T, E] -> h [B, T, 2H]``.

    Between layers: residual connection (when input and output widths match, i.e. every layer after the first
    unless ``embed_dim == 2 * hidden_size``), layer norm (applied to every layer's output, the last included, so
    the head sees normalised features), and dropout (on the input of layers 2..N). Outputs at padded positions are
    exactly zero. ``exact_path`` picks the masking implementation (see the module docstring); it is not part of the
    architecture and does not change results beyond float rounding.
    """

    def __init__(self, config: ModelConfig, exact_path: str = "auto") -> None:
        super().__init__()
        if exact_path not in EXACT_PATHS:
            raise ValueError(f"exact_path must be one of {EXACT_PATHS}, got {exact_path!r}")
        self.config = config
        self.exact_path = exact_path
        width = 2 * config.hidden_size
        self.layers = nn.ModuleList(
            BiRecurrentLayer(config.cell, config.embed_dim if i == 0 else width, config.hidden_size)
            for i in range(config.num_layers)
        )
        self.norms = nn.ModuleList(
            nn.LayerNorm(width) if config.layer_norm else nn.Identity() for _ in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.reset_recurrent_parameters()

    @property
    def output_size(self) -> int:
        return 2 * self.config.hidden_size

    @torch.no_grad()
    def reset_recurrent_parameters(self) -> None:
        """Apply the configured inits to every direction of every layer.

        * ``orthogonal_init``: each gate's H x H block of ``weight_hh`` is an independent orthogonal matrix, so the
          linear part of the recurrence preserves norms at init (Saxe et al. 2014; Henaff et al. 2016).
        * ``forget_bias`` (LSTM): PyTorch adds ``b_ih + b_hh``; the forget slice of ``b_ih`` is set to the value
          and that of ``b_hh`` to 0, so the *sum* equals ``forget_bias``.
        * ``chrono_init`` (LSTM, Tallec & Ollivier 2018): ``b_f ~ log U(1, T_max - 1)`` and ``b_i = -b_f`` (again
          as sums over the two bias vectors); it replaces ``forget_bias``. Uses the global torch RNG (seeded).
        """
        config = self.config
        hidden = config.hidden_size
        gates = _GATES[config.cell]
        for layer in self.layers:
            for rnn in (layer.fwd, layer.bwd):
                if config.orthogonal_init:
                    for g in range(gates):
                        nn.init.orthogonal_(rnn.weight_hh_l0[g * hidden:(g + 1) * hidden])
                if config.cell != "lstm":
                    continue
                input_slice, forget_slice = slice(0, hidden), slice(hidden, 2 * hidden)
                if config.chrono_init:
                    uniform = torch.empty(hidden).uniform_(1.0, config.chrono_tmax - 1.0)
                    forget = torch.log(uniform).to(rnn.bias_ih_l0)
                    rnn.bias_ih_l0[forget_slice] = forget
                    rnn.bias_hh_l0[forget_slice] = 0.0
                    rnn.bias_ih_l0[input_slice] = -forget
                    rnn.bias_hh_l0[input_slice] = 0.0
                elif config.forget_bias is not None:
                    rnn.bias_ih_l0[forget_slice] = config.forget_bias
                    rnn.bias_hh_l0[forget_slice] = 0.0

    def forward(self, x: Tensor, mask: Tensor, return_layers: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Encode ``x [B, T, E]`` under a right-padded bool ``mask [B, T]``.

        Returns ``h [B, T, 2H]`` (zero at padding), or ``(h, layers)`` where ``layers[i]`` is layer i's output
        after residual and norm (before dropout) - the tensors whose gradients diagnostics read as dL/dh_t.
        """
        if x.dim() != 3 or x.shape[:2] != mask.shape:
            raise ValueError(f"x must be [B, T, E] matching mask [B, T]; got {tuple(x.shape)} and {tuple(mask.shape)}")
        path = select_exact_path(self.exact_path, x.device.type, self.config.gradient_horizon)
        if path == "packed" and self.config.gradient_horizon is not None:
            raise ValueError("the packed path has no gradient horizon; use exact_path='reverse'")
        plan = MaskPlan.build(mask, self.config.gradient_horizon)
        keep = mask.unsqueeze(-1).to(x.dtype)
        hidden = x
        outputs: list[Tensor] = []
        with recurrence_autocast(x.device):  # float32 under CPU bf16 autocast where bf16 is not native
            for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
                layer_in = self.dropout(hidden) if i > 0 else hidden
                out = layer(layer_in, plan, path)
                if self.config.residual and out.size(-1) == hidden.size(-1):
                    out = out + hidden
                out = norm(out) * keep
                outputs.append(out)
                hidden = out
        return (hidden, outputs) if return_layers else hidden

