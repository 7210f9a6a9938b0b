"""Exploding and vanishing gradients, measured: total gradient norms per training step, and the norms of products
of recurrent Jacobians ∂z_t/∂z_s against the lag t − s.

Gradient norms
    :func:`clip_and_measure` returns the total L2 norm of all parameter gradients *before* clipping (the quantity
    Pascanu, Mikolov & Bengio 2013 clip) and clips in place; :func:`summarise_gradient_norms` turns the per-step
    series into a distribution summary: quantiles, maximum, spikes (steps above 10x the median) and the fraction of
    steps that clipping changed (norm > clip).

Recurrent Jacobians
    For the *forward* direction of the *first* recurrent layer of a :class:`~protrnn.model.encoder.RecurrentEncoder`,
    the recurrent state is ``z_t = h_t`` (GRU, tanh-RNN) or ``z_t = (h_t, c_t)`` (LSTM: the cell state is where
    the gates let gradient pass, so it is part of the state whose Jacobian products BPTT multiplies). With
    ``z_t = F(x_t, z_{t-1})`` the chain rule gives

        ∂z_t/∂z_s = J_t J_{t-1} ... J_{s+1},   J_j = ∂F/∂z (x_j, z_{j-1}),

    evaluated along the trajectory the layer actually follows on the given inputs. Each one-step Jacobian ``J_j``
    is computed exactly by autograd through the layer's own module (one step of the same ``nn.LSTM`` / ``nn.GRU`` /
    ``nn.RNN``, batched over every position, one backward pass per state unit), the products are formed
    explicitly in float64, and their **spectral norm** (largest singular value) is reported against the lag
    ``t - s``, averaged over start positions s. The curve describes the dynamics (the forward values); a gradient
    horizon k uses these same products but only inside a block ``[m*k, (m+1)*k)``: beyond it the gradient is 0.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from protrnn.errors import InputError

#: Quantiles of the per-step gradient norms reported by :func:`summarise_gradient_norms`.
GRAD_NORM_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: A step is a spike when its gradient norm exceeds this multiple of the median norm.
SPIKE_FACTOR = 10.0
#: Steps in the trailing window of the local spike rule (the median of the previous this-many steps).
SPIKE_WINDOW = 50


def clip_and_measure(parameters: Iterable[nn.Parameter], clip: float | None) -> float:
    """The total L2 norm of the parameters' gradients before clipping; with ``clip`` (> 0) clip them to it in place.

    A non-finite norm is returned as is (the caller decides whether to skip the step).
    """
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if clip:
        return float(torch.nn.utils.clip_grad_norm_(grads, clip, error_if_nonfinite=False))
    return float(torch.nn.utils.get_total_norm([p.grad for p in grads]))


def summarise_gradient_norms(norms: Sequence[float], clip: float | None) -> dict[str, object]:
    """Distribution of per-step total gradient norms (pre-clipping).

    Keys: ``steps``, ``nonfinite`` (steps whose norm was NaN/inf), ``mean``, ``max``, ``q05`` ... ``q99`` (over the
    finite norms; ``q50`` is the median), ``spike_factor``, ``spikes`` (steps with norm > ``spike_factor`` x the
    median of all steps), ``spikes_local`` (steps with norm > ``spike_factor`` x the median of the previous
    ``spike_window`` finite steps: once a task is solved the norms fall by orders of magnitude, and the global rule
    then counts every early step as a spike), ``clip`` and ``clipped_fraction`` (steps with norm > clip, non-finite
    ones included; ``None`` when training did not clip).
    """
    values = np.asarray(list(norms), dtype=float)
    finite = values[np.isfinite(values)]
    summary: dict[str, object] = {"steps": int(values.size), "nonfinite": int(values.size - finite.size)}
    if finite.size:
        median = float(np.median(finite))
        summary["mean"] = float(finite.mean())
        summary["max"] = float(finite.max())
        for q in GRAD_NORM_QUANTILES:
            summary[f"q{round(q * 100):02d}"] = float(np.quantile(finite, q))
        summary["spikes"] = int(np.sum(finite > SPIKE_FACTOR * median))
        summary["spikes_local"] = sum(
            1 for i in range(1, finite.size)
            if finite[i] > SPIKE_FACTOR * np.median(finite[max(0, i - SPIKE_WINDOW):i]))
    else:
        summary.update({"mean": None, "max": None, "spikes": 0, "spikes_local": 0})
        summary.update({f"q{round(q * 100):02d}": None for q in GRAD_NORM_QUANTILES})
    summary["spike_factor"] = SPIKE_FACTOR
    summary["spike_window"] = SPIKE_WINDOW
    summary["clip"] = clip if clip else None
    if clip and values.size:
        changed = np.sum(~np.isfinite(values)) + np.sum(finite > clip)
        summary["clipped_fraction"] = float(changed / values.size)
    else:
        summary["clipped_fraction"] = None
    return summary


@dataclass
class JacobianCurve:
    """Spectral norm of ∂z_{s+lag}/∂z_s against ``lag`` (1 … max_lag), over ``starts`` start positions.

    ``mean`` is the arithmetic mean over start positions, ``geometric_mean`` the exponential of the mean log norm
    (the norms vary over orders of magnitude, so this is the typical value), ``count`` how many starts reached each
    lag (a start near a chain end reaches fewer). ``state`` says what z is: ``"h"`` or ``"h,c"`` (LSTM).
    """

    lags: list[int]
    mean: list[float | None]
    geometric_mean: list[float | None]
    count: list[int]
    starts: int
    cell: str
    state: str
    norm: str = "spectral"
    layer: str = "first layer, forward direction"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _first_forward_rnn(module: nn.Module) -> tuple[nn.RNNBase, nn.Module | None]:
    """The first layer's forward one-way RNN of a RecurrentEncoder (or of a model holding one as ``.encoder``),
    and the model (for embedding tokens) when one was given."""
    from protrnn.model.encoder import RecurrentEncoder

    if isinstance(module, RecurrentEncoder):
        return module.layers[0].fwd, None
    encoder = getattr(module, "encoder", None)
    if isinstance(encoder, RecurrentEncoder):
        return encoder.layers[0].fwd, module
    if isinstance(module, nn.RNNBase):
        return module, None
    raise InputError(f"expected a RecurrentEncoder, a model with one as .encoder, or an nn.RNNBase; got "
                     f"{type(module).__name__}")


def _embed(model: nn.Module | None, tokens: Tensor) -> Tensor:
    if tokens.is_floating_point():
        return tokens
    if model is None:
        raise InputError("integer tokens need a model with an embedding; pass embedded inputs [B, T, E] to an encoder")
    embed = getattr(model, "embed", None)
    if callable(embed):
        return embed(tokens)
    return model.embedding(tokens)  # type: ignore[operator]


class _Step:
    """One step ``z_j = F(x_j, z_{j-1})`` of a single-layer, one-way, batch-first ``nn.LSTM``/``nn.GRU``/``nn.RNN``
    on a flat state ``z [N, D]`` (LSTM: ``D = 2H``, h then c)."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        if rnn.num_layers != 1 or rnn.bidirectional or not rnn.batch_first or getattr(rnn, "proj_size", 0):
            raise InputError("recurrent Jacobians need a one-layer, one-way, batch-first RNN without projection")
        self.rnn = rnn
        self.lstm = isinstance(rnn, nn.LSTM)
        self.hidden = rnn.hidden_size
        self.size = 2 * self.hidden if self.lstm else self.hidden

    def __call__(self, x: Tensor, z: Tensor) -> Tensor:
        if self.lstm:
            h, c = z[:, :self.hidden], z[:, self.hidden:]
            _, (h1, c1) = self.rnn(x.unsqueeze(1), (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
            return torch.cat([h1[0], c1[0]], dim=-1)
        _, h1 = self.rnn(x.unsqueeze(1), z.unsqueeze(0).contiguous())
        return h1[0]


def _trajectory(step: _Step, x: Tensor) -> Tensor:
    """States ``z_{-1} = 0, z_0, …, z_{T-1}`` as ``[B, T+1, D]`` (index j+1 holds z_j)."""
    batch, steps, _ = x.shape
    z = x.new_zeros(batch, step.size)
    states = [z]
    for j in range(steps):
        z = step(x[:, j], z)
        states.append(z)
    return torch.stack(states, dim=1)


def _one_step_jacobians(step: _Step, x: Tensor, states: Tensor) -> Tensor:
    """``J[b, j] = ∂z_j/∂z_{j-1}`` at every position, ``[B, T, D, D]`` (row = output unit), exact by autograd."""
    batch, steps, width = x.shape
    flat_x = x.reshape(batch * steps, width)
    prev = states[:, :-1].reshape(batch * steps, step.size).detach().requires_grad_(True)
    with torch.enable_grad():
        out = step(flat_x, prev)
        rows = []
        for unit in range(step.size):  # rows are independent across the batch: one backward per output unit
            (grad,) = torch.autograd.grad(out[:, unit].sum(), prev, retain_graph=unit + 1 < step.size)
            rows.append(grad)
    return torch.stack(rows, dim=1).reshape(batch, steps, step.size, step.size)


def default_lags(max_lag: int) -> list[int]:
    """Lags at which norms are reported: every lag up to 16, then four per octave (x 2^(1/4)), and ``max_lag``.

    (An SVD per start and lag dominates the cost, so a log-spaced set keeps long curves cheap.)
    """
    lags = set(range(1, min(16, max_lag) + 1))
    value = 16.0
    while value < max_lag:
        value *= 2 ** 0.25
        lags.add(min(max_lag, int(round(value))))
    lags.add(max_lag)
    return sorted(lags)


def _start_positions(length: int, max_lag: int, max_starts: int) -> list[int]:
    """Up to ``max_starts`` start positions, evenly spread, preferring starts that reach the full ``max_lag``."""
    if length < 2:
        return []
    last = max(0, length - 1 - max_lag)
    return sorted({int(round(v)) for v in np.linspace(0, last, num=min(max_starts, last + 1))})


@torch.no_grad()
def jacobian_norm_matrix(rnn: nn.RNNBase, x: Tensor, lengths: Sequence[int], max_lag: int,
                         max_starts: int = 4, lags: Sequence[int] | None = None,
                         ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Spectral norms ``N[i, k] = ||∂z_{s_i+lags[k]}/∂z_{s_i}||_2`` for start positions ``(row, s_i)``.

    ``x [B, T, E]`` are the layer's inputs, ``lengths`` the real length of each row (positions at or beyond it are
    never used), ``lags`` the reported lags (default :func:`default_lags`; all ≤ ``max_lag``). Entries whose
    target ``s + lag`` falls past the row's end are NaN. Computed in float64 on a copy of ``rnn``.
    """
    if max_lag < 1:
        raise InputError(f"max_lag must be at least 1, got {max_lag}")
    lags = default_lags(max_lag) if lags is None else sorted(set(lags))
    if not lags or lags[0] < 1 or lags[-1] > max_lag:
        raise InputError(f"lags must lie in [1, {max_lag}], got {lags}")
    column = {lag: k for k, lag in enumerate(lags)}
    rnn64 = copy.deepcopy(rnn).to(device=x.device, dtype=torch.float64)
    step = _Step(rnn64)
    x64 = x.detach().to(torch.float64)
    states = _trajectory(step, x64)
    jac = _one_step_jacobians(step, x64, states)
    starts = [(b, s) for b, length in enumerate(lengths) for s in _start_positions(int(length), max_lag, max_starts)]
    norms = np.full((len(starts), len(lags)), np.nan)
    if not starts:
        return norms, starts
    eye = torch.eye(step.size, dtype=torch.float64, device=x.device)
    rows = torch.tensor([b for b, _ in starts], device=x.device)
    product = eye.expand(len(starts), -1, -1).clone()
    for lag in range(1, lags[-1] + 1):
        target = torch.tensor([s + lag for _, s in starts], device=x.device)
        alive = target < torch.tensor([int(lengths[b]) for b, _ in starts], device=x.device)
        if not bool(alive.any()):
            break
        step_jac = jac[rows, target.clamp(max=jac.size(1) - 1)]
        product = torch.where(alive[:, None, None], step_jac @ product, product)
        if lag in column:
            keep = alive.cpu().numpy()
            norms[keep, column[lag]] = torch.linalg.matrix_norm(product[alive], ord=2).cpu().numpy()
    return norms, starts


def recurrent_jacobian_norms(module: nn.Module, tokens: Tensor, mask: Tensor, max_lag: int,
                             max_starts: int = 4, lags: Sequence[int] | None = None) -> JacobianCurve:
    """Spectral norm of ∂z_t/∂z_s against t − s for the first recurrent layer's forward direction.

    ``module``: a :class:`~protrnn.model.encoder.RecurrentEncoder` (then ``tokens`` are its embedded inputs
    ``[B, T, E]``), a model that holds one as ``.encoder`` and embeds integer ``tokens [B, T]`` with ``.embed`` or
    ``.embedding``, or a one-way ``nn.RNNBase``. ``mask [B, T]`` is the right-padded bool mask. Up to
    ``max_starts`` start positions per row are used, and norms are reported at ``lags`` (default
    :func:`default_lags`; see :func:`jacobian_norm_matrix`).
    """
    rnn, model = _first_forward_rnn(module)
    with torch.no_grad():
        x = _embed(model, tokens)
    lengths = [int(v) for v in mask.sum(1).tolist()]
    lags = default_lags(max_lag) if lags is None else sorted(set(lags))
    norms, starts = jacobian_norm_matrix(rnn, x, lengths, max_lag, max_starts, lags)
    mean: list[float | None] = []
    geometric: list[float | None] = []
    count: list[int] = []
    for k in range(len(lags)):
        column = norms[:, k][np.isfinite(norms[:, k])]
        count.append(int(column.size))
        mean.append(float(column.mean()) if column.size else None)
        if not column.size:
            geometric.append(None)
        elif np.any(column <= 0):
            geometric.append(0.0)
        else:
            geometric.append(float(np.exp(np.log(column).mean())))
    cell = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}.get(type(rnn), type(rnn).__name__)
    return JacobianCurve(lags=list(lags), mean=mean, geometric_mean=geometric, count=count, starts=len(starts),
                         cell=cell, state="h,c" if isinstance(rnn, nn.LSTM) else "h")


def finite_or_none(value: float) -> float | None:
    """JSON-safe float: NaN and infinities become ``None``."""
    return value if math.isfinite(value) else None
