"""Recurrent Jacobian norms and gradient-norm summaries, checked against independent derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from protrnn.diagnostics.jacobians import (
    clip_and_measure,
    default_lags,
    jacobian_norm_matrix,
    recurrent_jacobian_norms,
    summarise_gradient_norms,
)
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder


def _numpy_rnn_norms(rnn: nn.RNN, x: np.ndarray, start: int, lags: list[int]) -> list[float]:
    """||prod_j diag(1 - h_j^2) W_hh||_2 for a tanh RNN, forward pass and product done by hand in numpy."""
    w_ih = rnn.weight_ih_l0.detach().double().numpy()
    w_hh = rnn.weight_hh_l0.detach().double().numpy()
    bias = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().double().numpy()
    h = np.zeros(w_hh.shape[0])
    states = []
    for x_j in x:
        h = np.tanh(w_ih @ x_j + bias + w_hh @ h)
        states.append(h)
    out = []
    product = np.eye(w_hh.shape[0])
    for lag in range(1, max(lags) + 1):
        h_t = states[start + lag]
        product = np.diag(1.0 - h_t ** 2) @ w_hh @ product
        if lag in lags:
            out.append(float(np.linalg.norm(product, 2)))
    return out


def test_tanh_rnn_matches_hand_computed_products() -> None:
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(3.0)  # norms near 1, so the products neither vanish nor explode within 10 steps
    x = torch.randn(2, 14, 3)
    lags = list(range(1, 11))
    norms, starts = jacobian_norm_matrix(rnn, x, [14, 14], max_lag=10, max_starts=3, lags=lags)
    assert len(starts) == 6 and {s for _, s in starts} == {0, 2, 3}  # linspace(0, 14 - 1 - 10, 3)
    for i, (row, start) in enumerate(starts):
        expected = _numpy_rnn_norms(rnn, x[row].double().numpy(), start, lags)
        np.testing.assert_allclose(norms[i], expected, rtol=1e-5, atol=0)
    assert 0.05 < np.nanmedian(norms[:, 0]) < 20  # the check is not trivially between tiny numbers


def test_zero_input_orthogonal_rnn_has_norm_a_to_the_lag() -> None:
    """With zero input weights and biases the state stays 0, so dz_t/dz_s = W^(t-s) and, for W = a*Q (Q orthogonal),
    its spectral norm is exactly a^(t-s)."""
    torch.manual_seed(1)
    rnn = nn.RNN(2, 6, batch_first=True).double()  # Q orthogonal to float64 precision
    a = 0.9
    with torch.no_grad():
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(rnn, name).zero_()
        nn.init.orthogonal_(rnn.weight_hh_l0)
        rnn.weight_hh_l0.mul_(a)
    x = torch.randn(1, 40, 2)
    norms, _ = jacobian_norm_matrix(rnn, x, [40], max_lag=30, max_starts=2, lags=[1, 5, 30])
    np.testing.assert_allclose(norms, np.tile([a, a ** 5, a ** 30], (2, 1)), rtol=1e-9)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_gated_cells_match_autograd_through_the_unrolled_module(cell: type[nn.RNNBase]) -> None:
    """Independent route: run the module's own multi-step kernel from (h_s, c_s) over x[s+1 .. s+lag] and take the
    Jacobian of its final state with torch.autograd.functional.jacobian."""
    torch.manual_seed(2)
    rnn = cell(4, 3, batch_first=True).double()
    x = torch.randn(1, 12, 4, dtype=torch.float64)
    lags = [1, 3, 7]
    norms, starts = jacobian_norm_matrix(rnn, x, [12], max_lag=7, max_starts=2, lags=lags)
    lstm = cell is nn.LSTM
    for i, (_, start) in enumerate(starts):
        _, state = rnn(x[:, :start + 1])
        z_s = torch.cat([state[0][0, 0], state[1][0, 0]]) if lstm else state[0, 0]
        for k, lag in enumerate(lags):
            segment = x[:, start + 1:start + 1 + lag]

            def final_state(z: torch.Tensor, segment: torch.Tensor = segment) -> torch.Tensor:
                if lstm:
                    _, (h, c) = rnn(segment, (z[None, None, :3], z[None, None, 3:]))
                    return torch.cat([h[0, 0], c[0, 0]])
                _, h = rnn(segment, z[None, None])
                return h[0, 0]

            jac = torch.autograd.functional.jacobian(final_state, z_s)
            assert norms[i, k] == pytest.approx(float(torch.linalg.matrix_norm(jac, ord=2)), rel=1e-9)


def test_curve_from_encoder_and_model_and_padding() -> None:
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=10, cell="lstm", embed_dim=4, hidden_size=3, num_layers=2, dropout=0.0)
    encoder = RecurrentEncoder(config)
    embedding = nn.Embedding(10, 4, padding_idx=0)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding, self.encoder = embedding, encoder

    tokens = torch.randint(1, 10, (2, 20))
    tokens[1, 15:] = 0  # row 1 is 15 long
    mask = tokens != 0
    x = embedding(tokens).detach()
    curve = recurrent_jacobian_norms(Model(), tokens, mask, max_lag=8, max_starts=3)
    same = recurrent_jacobian_norms(encoder, x, mask, max_lag=8, max_starts=3)
    assert curve.to_dict() == same.to_dict()
    assert curve.state == "h,c" and curve.cell == "lstm" and curve.norm == "spectral"
    assert curve.lags == list(range(1, 9)) and curve.starts == 6 and curve.count == [6] * 8
    norms, _ = jacobian_norm_matrix(encoder.layers[0].fwd, x, [20, 15], max_lag=8, max_starts=3)
    np.testing.assert_allclose(curve.mean, norms.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(curve.geometric_mean, np.exp(np.log(norms).mean(axis=0)), rtol=1e-12)
    # padding never enters: row 1 alone, unpadded, gives the same norms as inside the padded batch
    alone, _ = jacobian_norm_matrix(encoder.layers[0].fwd, x[1:, :15], [15], max_lag=8, max_starts=3)
    np.testing.assert_allclose(norms[3:], alone, rtol=1e-12)


def test_short_rows_leave_unreached_lags_empty() -> None:
    rnn = nn.GRU(2, 3, batch_first=True)
    norms, starts = jacobian_norm_matrix(rnn, torch.randn(1, 5, 2), [5], max_lag=8, max_starts=4, lags=[1, 4, 8])
    assert starts == [(0, 0)]
    assert np.isfinite(norms[0, :2]).all() and np.isnan(norms[0, 2])  # position 0 + 8 is past the end


def test_default_lags() -> None:
    lags = default_lags(128)
    assert lags[:16] == list(range(1, 17)) and lags[-1] == 128 and lags == sorted(set(lags))
    ratios = np.array(lags[16:]) / np.array(lags[15:-1])
    assert np.all(ratios > 1.1) and np.all(ratios < 1.3)
    assert default_lags(5) == [1, 2, 3, 4, 5]


def test_summarise_gradient_norms() -> None:
    norms = [1.0] * 60 + [50.0] * 5 + [2.0] * 34 + [float("nan")]
    summary = summarise_gradient_norms(norms, clip=1.5)
    finite = np.array([1.0] * 60 + [50.0] * 5 + [2.0] * 34)
    assert summary["steps"] == 100 and summary["nonfinite"] == 1
    assert summary["q50"] == 1.0 and summary["max"] == 50.0
    assert summary["mean"] == pytest.approx((60 + 250 + 68) / 99)
    assert summary["q95"] == pytest.approx(float(np.quantile(finite, 0.95)))
    assert summary["spikes"] == 5  # 50 > 10 x median 1
    assert summary["spikes_local"] == 5  # each 50 follows a window whose median is still 1
    assert summary["clipped_fraction"] == pytest.approx((5 + 34 + 1) / 100)
    assert summarise_gradient_norms([3.0, 4.0], clip=None)["clipped_fraction"] is None
    # a solved task: large norms early, tiny later; globally every early step is a "spike", locally none is
    solved = summarise_gradient_norms([5.0] * 50 + [0.01] * 60, clip=None)
    assert solved["spikes"] == 50 and solved["spikes_local"] == 0


def test_clip_and_measure_reports_the_norm_before_clipping() -> None:
    a = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(1))
    a.grad = torch.tensor([3.0, 0.0])
    b.grad = torch.tensor([4.0])
    assert clip_and_measure([a, b], clip=None) == pytest.approx(5.0)
    assert a.grad.tolist() == [3.0, 0.0]  # unchanged without a clip
    assert clip_and_measure([a, b], clip=1.0) == pytest.approx(5.0)
    assert math.hypot(*a.grad.tolist(), *b.grad.tolist()) == pytest.approx(1.0, rel=1e-5)
