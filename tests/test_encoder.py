"""Recurrent encoder: exact masking against PyTorch's packed reference, padding invariance, gradient horizon,
inits. Small sizes, so every test runs in well under a second or two on 2 cores."""

from __future__ import annotations

import math

import pytest
import torch

from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder

CELLS = ("lstm", "gru", "rnn")


def _config(**overrides: object) -> ModelConfig:
    base: dict[str, object] = {"embed_dim": 5, "hidden_size": 6, "num_layers": 2, "dropout": 0.0}
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


def _batch(lengths: list[int], dim: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    steps = max(lengths)
    mask = torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(len(lengths), steps, dim, dtype=dtype) * mask[..., None]
    return x, mask


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("horizon", [None, 4])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_exact_path_equals_packed_reference_outputs_and_gradients(
    cell: str, horizon: int | None, dtype: torch.dtype, tol: float
) -> None:
    """float32 to 1e-5; float64 to 1e-10 shows the two paths compute the same function (not just close)."""
    torch.manual_seed(0)
    config = _config(cell=cell, num_layers=3, gradient_horizon=horizon)
    fast = RecurrentEncoder(config).to(dtype)
    reference = RecurrentEncoder(_config(cell=cell, num_layers=3), exact_path="packed").to(dtype)
    reference.load_state_dict(fast.state_dict())
    x, mask = _batch([13, 5, 1, 9, 13, 12], config.embed_dim, dtype)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(*mask.shape, 2 * config.hidden_size, dtype=dtype) * mask[..., None]

    out_fast = fast(x_fast, mask)
    out_ref = reference(x_ref, mask)
    torch.testing.assert_close(out_fast, out_ref, atol=tol, rtol=0)
    assert torch.all(out_fast[~mask] == 0), "padded outputs are exactly zero"

    (out_fast * weights).sum().backward()
    (out_ref * weights).sum().backward()
    if horizon is None:  # gradients summed over many terms (|g| up to ~50): tolerance relative as well
        torch.testing.assert_close(x_fast.grad, x_ref.grad, atol=tol, rtol=tol)
        for (name, p_fast), p_ref in zip(fast.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=tol, rtol=tol, msg=name)
    else:  # truncated gradients differ by design; values match and padding still gets no gradient
        assert torch.all(x_fast.grad[~mask] == 0)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_does_not_change_real_outputs(cell: str) -> None:
    torch.manual_seed(1)
    encoder = RecurrentEncoder(_config(cell=cell, gradient_horizon=3)).eval()
    x, mask = _batch([7, 12], 5)
    alone = encoder(x[:1, :7], mask[:1, :7])
    padded = encoder(x, mask)
    torch.testing.assert_close(padded[0, :7], alone[0], atol=1e-6, rtol=0)
    x_noise = x.clone()
    x_noise[0, 7:] = torch.randn(5, 5) * 100  # garbage in the padding must not matter either
    torch.testing.assert_close(encoder(x_noise, mask)[0, :7], alone[0], atol=1e-6, rtol=0)


def _jacobian_support(encoder: RecurrentEncoder, x: torch.Tensor, mask: torch.Tensor, row: int) -> tuple:
    """|d (w . out_t) / d x_s| summed over input features, with random w over one direction's features, for the
    forward half and the reverse half: two [T, T] maps (t, s). One backward pass per (t, half) keeps it cheap;
    a random projection is zero only where the whole Jacobian block is (with probability 1)."""
    hidden = encoder.config.hidden_size
    x = x.clone().requires_grad_()
    out = encoder(x, mask)[row]  # [T, 2H]
    steps = x.size(1)
    maps = []
    for half in (slice(0, hidden), slice(hidden, 2 * hidden)):
        support = torch.zeros(steps, steps, dtype=x.dtype)
        for t in range(steps):
            weights = torch.zeros_like(out)
            weights[t, half] = torch.rand(hidden, dtype=x.dtype) + 0.5
            (grad,) = torch.autograd.grad(out, x, weights, retain_graph=True)
            support[t] = grad[row].abs().sum(-1)
        maps.append(support)
    return maps[0], maps[1]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_gradient_horizon_cuts_exactly_at_block_boundaries(cell: str, num_layers: int) -> None:
    torch.manual_seed(2)
    k, length = 4, 11  # length not a multiple of k: the reverse direction's first block is partial
    # One layer without layer norm keeps the two directions apart, so each can be checked on its own.
    config = _config(cell=cell, num_layers=num_layers, gradient_horizon=k, layer_norm=num_layers > 1)
    encoder = RecurrentEncoder(config).double()
    x, mask = _batch([length, 14], 5, dtype=torch.float64)
    forward, backward = _jacobian_support(encoder, x, mask, row=0)
    t = torch.arange(x.size(1))
    same_block = (t[:, None] // k == t[None, :] // k) & mask[0][:, None] & mask[0][None, :]
    # Across a cut: exactly zero, for each direction and (multi-layer) for the total derivative.
    assert torch.all(forward[~same_block] == 0) and torch.all(backward[~same_block] == 0)
    # Within a block: non-zero wherever the direction can see the input.
    if num_layers == 1:
        causal = t[:, None] >= t[None, :]  # out_t depends on x_s for s <= t (forward), s >= t (reverse)
        assert torch.all(forward[same_block & causal] > 0)
        assert torch.all(backward[same_block & causal.T] > 0)
        assert torch.all(forward[same_block & ~causal] == 0) and torch.all(backward[same_block & causal.T.logical_not()] == 0)
    else:  # layers mix the two directions: the whole block is visible
        assert torch.all(forward[same_block] > 0) and torch.all(backward[same_block] > 0)


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_horizon_keeps_forward_values(cell: str) -> None:
    torch.manual_seed(3)
    full = RecurrentEncoder(_config(cell=cell))
    cut = RecurrentEncoder(_config(cell=cell, gradient_horizon=3))
    cut.load_state_dict(full.state_dict())
    x, mask = _batch([10, 4, 8], 5)
    torch.testing.assert_close(cut(x, mask), full(x, mask), atol=1e-6, rtol=0)


def test_without_horizon_gradient_reaches_across_the_chain() -> None:
    torch.manual_seed(4)
    encoder = RecurrentEncoder(_config(cell="lstm", num_layers=1)).double()
    x, mask = _batch([12], 5, dtype=torch.float64)
    forward, backward = _jacobian_support(encoder, x, mask, row=0)
    assert forward[11, 0] > 0 and backward[0, 11] > 0


def test_return_layers_and_residual_shapes() -> None:
    config = _config(num_layers=3)
    encoder = RecurrentEncoder(config)
    x, mask = _batch([6, 3], 5)
    h, layers = encoder(x, mask, return_layers=True)
    assert h.shape == (2, 6, 12) and len(layers) == 3
    assert all(layer.shape == (2, 6, 12) for layer in layers) and layers[-1] is h


def test_forget_bias_sum_and_orthogonal_recurrent_weights() -> None:
    config = _config(cell="lstm", forget_bias=1.0, orthogonal_init=True, num_layers=2)
    encoder = RecurrentEncoder(config)
    hidden = config.hidden_size
    for layer in encoder.layers:
        for rnn in (layer.fwd, layer.bwd):
            total = rnn.bias_ih_l0 + rnn.bias_hh_l0
            torch.testing.assert_close(total[hidden:2 * hidden], torch.ones(hidden))
            for gate in range(4):
                block = rnn.weight_hh_l0[gate * hidden:(gate + 1) * hidden].detach()
                torch.testing.assert_close(block @ block.T, torch.eye(hidden), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_orthogonal_init_for_other_cells(cell: str) -> None:
    config = _config(cell=cell)
    rnn = RecurrentEncoder(config).layers[1].bwd
    gates = {"gru": 3, "rnn": 1}[cell]
    for gate in range(gates):
        block = rnn.weight_hh_l0[gate * 6:(gate + 1) * 6].detach()
        torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)


def test_chrono_init() -> None:
    torch.manual_seed(5)
    config = _config(cell="lstm", chrono_init=True, chrono_tmax=50, hidden_size=64)
    encoder = RecurrentEncoder(config)
    hidden = config.hidden_size
    rnn = encoder.layers[0].fwd
    total = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach()
    forget, input_gate = total[hidden:2 * hidden], total[:hidden]
    assert torch.all(forget >= 0) and torch.all(forget <= math.log(49))
    assert forget.std() > 0.3, "drawn per unit, not constant"
    torch.testing.assert_close(input_gate, -forget)


def test_pytorch_defaults_kept_when_inits_disabled() -> None:
    torch.manual_seed(6)
    config = _config(cell="lstm", forget_bias=None, orthogonal_init=False)
    rnn = RecurrentEncoder(config).layers[0].fwd
    block = rnn.weight_hh_l0[:6].detach()
    assert not torch.allclose(block @ block.T, torch.eye(6), atol=1e-2)
    assert rnn.bias_hh_l0.abs().max() <= 1 / math.sqrt(6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("horizon", [None, 3])
def test_an_empty_row_comes_out_zero_with_or_without_a_horizon(cell: str, horizon: int | None) -> None:
    """A row of length 0 among real chains (with a gradient horizon it failed with "index -1 is out of bounds"): its
    outputs are zero, it gets no gradient, and the other rows are what they are alone."""
    torch.manual_seed(5)
    encoder = RecurrentEncoder(_config(cell=cell, gradient_horizon=horizon)).double()
    x, mask = _batch([7, 0, 2], 5, dtype=torch.float64)
    x = x.clone().requires_grad_()
    weights = torch.randn(3, 7, 12, dtype=torch.float64)
    out = encoder(x, mask)
    (out * weights).sum().backward()
    assert torch.all(out[1] == 0) and torch.all(x.grad[1] == 0)
    assert torch.isfinite(x.grad).all()
    for row, length in ((0, 7), (2, 2)):
        alone = x.detach()[row:row + 1, :length].clone().requires_grad_()
        own = encoder(alone, mask[row:row + 1, :length])
        (own * weights[row:row + 1, :length]).sum().backward()
        torch.testing.assert_close(out[row, :length], own[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(x.grad[row, :length], alone.grad[0], atol=1e-12, rtol=0)


def test_rejects_left_padded_mask() -> None:
    encoder = RecurrentEncoder(_config())
    mask = torch.tensor([[False, True, True]])
    with pytest.raises(ValueError, match="right-padded"):
        encoder(torch.zeros(1, 3, 5), mask)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308, -1e39])
def test_non_finite_forget_bias_is_rejected(value: float) -> None:
    """An infinite forget bias, or one beyond float32's range (it becomes inf in the float32 weights), used to train
    and export weights that load_model_files then refuses as non-finite."""
    with pytest.raises(InputError, match="'forget_bias'"):
        _config(cell="lstm", forget_bias=value)


def test_auto_path_is_reverse_on_cpu_packed_on_cuda_and_reverse_with_a_horizon() -> None:
    from protrnn.model.encoder import select_exact_path

    assert select_exact_path("auto", "cpu", None) == "reverse"
    assert select_exact_path("auto", "cuda", None) == "packed"
    assert select_exact_path("auto", "cuda", 16) == "reverse"  # only the reverse path can cut gradients
    assert select_exact_path("packed", "cpu", None) == "packed" and select_exact_path("reverse", "cuda", None) == "reverse"
    assert RecurrentEncoder(_config()).exact_path == "auto"
