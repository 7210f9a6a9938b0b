"""Pair heads: exact symmetry, no padding leak, tiled inference equal to the full map, for both implementations;
the fast implementation computes the reference's function (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from protrnn.errors import InputError
from protrnn.model import heads
from protrnn.model.config import ModelConfig
from protrnn.model.heads import (
    HEAD_IMPLS,
    PairwiseHead,
    ResNet2dHead,
    _symmetrise,
    _tiled_maps,
    _tiles,
    build_head,
    distance_probabilities,
    to_contact_logits,
)

HEADS = ("pairwise", "resnet2d")


def _head(kind: str, impl: str = "fast", **overrides: object) -> PairwiseHead | ResNet2dHead:
    base: dict[str, object] = {"head": kind, "hidden_size": 8, "pair_dim": 8, "head_blocks": 3,
                               "head_dilations": [1, 2], "max_separation": 10, "pair_chunk_size": 16}
    base.update(overrides)
    torch.manual_seed(0)
    return build_head(ModelConfig(**base), impl).double().eval()  # type: ignore[arg-type]


def _states(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    steps = max(lengths)
    mask = torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), steps, 16, dtype=torch.float64) * mask[..., None], mask


def test_build_head_picks_the_configured_class() -> None:
    assert isinstance(_head("pairwise"), PairwiseHead)
    assert isinstance(_head("resnet2d"), ResNet2dHead)


@pytest.mark.parametrize("impl", HEAD_IMPLS)
@pytest.mark.parametrize("kind", HEADS)
def test_logits_are_exactly_symmetric(kind: str, impl: str) -> None:
    head = _head(kind, impl)
    h, mask = _states([20, 13])
    logits = head(h, mask)
    assert logits.shape == (2, 20, 20)
    assert torch.equal(logits, logits.transpose(1, 2))
    assert torch.isfinite(logits).all(), "padding rows/cols are finite"


@pytest.mark.parametrize("impl", HEAD_IMPLS)
@pytest.mark.parametrize("kind", HEADS)
def test_padding_does_not_leak_into_real_pairs(kind: str, impl: str) -> None:
    head = _head(kind, impl)
    h, mask = _states([11, 30])
    h[0, 11:] = torch.randn(19, 16, dtype=torch.float64) * 50  # even garbage encoder states at padding
    alone = head(h[:1, :11], mask[:1, :11])
    padded = head(h, mask)
    torch.testing.assert_close(padded[0, :11, :11], alone[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("impl", HEAD_IMPLS)
@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("chunk", [16, 23])
def test_tiled_inference_equals_full_map(kind: str, chunk: int, impl: str) -> None:
    head = _head(kind, impl)
    h, mask = _states([70, 52])  # several tiles each way; halo (8) < tile < T
    full = head(h, mask)
    tiled = head.predict_logits(h, mask, chunk_size=chunk)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)
    with torch.no_grad():  # the inference path (fast resnet2d: streamed in row strips; symmetrised by tiles)
        torch.testing.assert_close(head.predict_logits(h, mask, chunk_size=chunk), full, atol=1e-5, rtol=0)


def _poison_new_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill every floating ``Tensor.new_empty`` with NaN, so a map element the streamed path reads without having
    written it (padding rows or channels left unzeroed) shows up in the result."""
    original = torch.Tensor.new_empty

    def poisoned(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out = original(self, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned)


@pytest.mark.parametrize("strip_pairs", [1, 200, 1 << 15])
@pytest.mark.parametrize("pad_to", [None, 16])
def test_streamed_inference_computes_the_autograd_paths_function(monkeypatch: pytest.MonkeyPatch, strip_pairs: int,
                                                                  pad_to: int | None) -> None:
    """Inference streams the resnet2d head layer by layer in row strips (1 row, 2 rows, all rows of a 2 x 45
    batch); a 1-row strip is thinner than the dilation (4), so strips read their neighbours' rows. It must give the
    autograd path's logits everywhere, padding included, also with zero-padded conv channels (``pad_to``), and
    the reference implementation's."""
    monkeypatch.setattr(heads, "STREAM_STRIP_PAIRS", strip_pairs)
    if pad_to is not None:  # the bf16 CPU layout (channels zero-padded to 16), exercised in float64
        monkeypatch.setattr(heads, "_conv_width", lambda channels, dtype, device: pad_to)
    _poison_new_empty(monkeypatch)
    head = _head("resnet2d", head_dilations=[1, 4])
    reference = _head("resnet2d", "reference", head_dilations=[1, 4])
    h, mask = _states([45, 30])
    with torch.enable_grad():
        autograd = head(h, mask)
    with torch.no_grad():
        streamed = head(h, mask)
        tiled = head.predict_logits(h, mask, chunk_size=16)
        expected = reference(h, mask)
    torch.testing.assert_close(streamed, autograd, atol=1e-10, rtol=0)
    torch.testing.assert_close(streamed, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(tiled, expected, atol=1e-10, rtol=0)


def test_streamed_bf16_inference_is_the_autograd_paths_bf16_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast on a CPU (channels zero-padded to 16 there): one strip per tile does exactly the autograd
    path's arithmetic; cache-sized strips change only the convolutions' rounding."""
    torch.manual_seed(0)
    config = ModelConfig(head="resnet2d", hidden_size=8, pair_dim=24, head_blocks=3, head_dilations=[1, 2],
                         max_separation=10, distogram_bins=[4.0, 8.0, 12.0])  # type: ignore[arg-type]
    head = build_head(config).eval()
    h, mask = _states([45, 30])
    h = h.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autograd = head(h, mask)
        with torch.no_grad():
            monkeypatch.setattr(heads, "STREAM_STRIP_PAIRS", 1 << 30)
            whole = head(h, mask)
            monkeypatch.setattr(heads, "STREAM_STRIP_PAIRS", 200)
            strips = head(h, mask)
    with torch.no_grad():
        exact = head.double()(h.double(), mask).float()
    torch.testing.assert_close(whole, autograd.detach(), atol=0, rtol=0)
    assert (strips - exact).abs().max() < 0.05 and (autograd - exact).abs().max() < 0.05  # bf16 vs float64
    torch.testing.assert_close(strips, autograd.detach(), atol=0.02, rtol=0)


def test_streamed_sampled_blocks_equal_the_autograd_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """``block_outputs`` without autograd (validation of whole-chain training) streams each sampled block, whose
    separations are one [size, size] map per block; 2-row strips, padded blocks and a padded chain."""
    monkeypatch.setattr(heads, "STREAM_STRIP_PAIRS", 100)  # 100 // (3 blocks x 16 columns) = 2 rows per strip
    _poison_new_empty(monkeypatch)
    head = _head("resnet2d", head_dilations=[1, 4], max_separation=40)
    h, mask = _states([45, 30])
    blocks = torch.tensor([[[0, 0], [10, 29]], [[14, 0], [-1, -1]]])
    with torch.enable_grad():
        autograd = head.block_outputs(h, mask, blocks, 16)
    with torch.no_grad():
        streamed = head.block_outputs(h, mask, blocks, 16)
    assert streamed.outputs.shape == autograd.outputs.shape == (3, 16, 16, 1)
    torch.testing.assert_close(streamed.outputs, autograd.outputs.detach(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("impl", HEAD_IMPLS)
def test_resnet_halo_is_needed_and_sufficient(impl: str) -> None:
    """The halo equals the convolutions' reach: one row less and tiles stop matching the full map."""
    head = _head("resnet2d", impl)
    assert head.halo == 2 * (1 + 2 + 1)
    h, mask = _states([60])
    full = head(h, mask)
    head.halo -= 1
    short = head.predict_logits(h, mask, chunk_size=16)
    assert (short - full).abs().max() > 1e-6


@pytest.mark.parametrize("impl", HEAD_IMPLS)
def test_resnet_receptive_field_matches_halo(impl: str) -> None:
    head = _head("resnet2d", impl)
    h, mask = _states([40])
    h.requires_grad_()
    logits = head(h, mask)
    i, j = 20, 30
    (grad,) = torch.autograd.grad(logits[0, i, j], h)
    reach = grad[0].abs().sum(-1).nonzero().flatten()
    # the logit (i, j) is symmetrised from raw (i, j) and (j, i): it sees rows/cols within the halo of i and j
    assert int(reach.min()) == i - head.halo and int(reach.max()) == min(39, j + head.halo)


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("pair_dim", [8, 24])
def test_fast_implementation_computes_the_reference_function(kind: str, pair_dim: int) -> None:
    """Same parameters, same logits and same gradients (inputs and every parameter), padded batch included."""
    reference = _head(kind, "reference", pair_dim=pair_dim)
    fast = _head(kind, "fast", pair_dim=pair_dim)
    assert fast.state_dict().keys() == reference.state_dict().keys()
    fast.load_state_dict(reference.state_dict())
    h, mask = _states([37, 25, 30])
    h.requires_grad_()
    weights = torch.randn(3, 37, 37, dtype=torch.float64)
    out_ref, out_fast = reference(h, mask), fast(h, mask)
    torch.testing.assert_close(out_fast, out_ref, atol=1e-12, rtol=1e-10)
    grads_ref = torch.autograd.grad((out_ref * weights).sum(), [h, *reference.parameters()])
    grads_fast = torch.autograd.grad((out_fast * weights).sum(), [h, *fast.parameters()])
    for name, g_ref, g_fast in zip(["h", *dict(reference.named_parameters())], grads_ref, grads_fast, strict=True):
        assert g_ref.abs().max() > 0, name
        torch.testing.assert_close(g_fast, g_ref, atol=1e-11, rtol=1e-9, msg=name)


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown head implementation"):
        _head("resnet2d", "turbo")


@pytest.mark.parametrize("outputs", [1, 5])
def test_tilewise_symmetrisation_is_bit_identical(outputs: int) -> None:
    raw = torch.randn(2, 45, 45, outputs)
    expected = 0.5 * (raw + raw.transpose(1, 2))  # written out here, not _symmetrise
    assert torch.equal(_symmetrise(raw.clone()), expected)
    if outputs == 1:
        expected_logits = expected[..., 0]
    else:  # log-odds of the first two classes' probability mass, written out with softmax
        p = expected.softmax(-1)[..., :2].sum(-1)
        expected_logits = torch.log(p) - torch.log1p(-p)
    tiled = torch.empty(2, 45, 45)
    maps = [(tiled, lambda z: to_contact_logits(z, 2))]
    if outputs > 1:
        dist = torch.empty(2, 45, 45, outputs)
        maps.append((dist, distance_probabilities))
    _tiled_maps(lambda r, c: raw[:, r.start:r.stop, c.start:c.stop], _tiles(45, 16), maps)
    assert torch.equal(tiled, tiled.transpose(1, 2))
    torch.testing.assert_close(tiled, expected_logits, atol=1e-5, rtol=1e-5)
    if outputs == 1:
        assert torch.equal(tiled, expected_logits)
    else:  # each class's probability map, exactly symmetric, against softmax written out with exp
        e = (expected - expected.amax(-1, keepdim=True)).exp()
        assert torch.equal(dist, dist.transpose(1, 2))
        torch.testing.assert_close(dist, e / e.sum(-1, keepdim=True), atol=1e-6, rtol=1e-5)


def _grad_forward(head: torch.nn.Module, h: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.enable_grad():
        return head(h.clone().requires_grad_(True), mask).detach()


def test_head_dropout_acts_only_in_training_and_at_the_same_place_in_both_implementations() -> None:
    h, mask = _states([17, 12])
    plain = _head("resnet2d", head_dropout=0.0)
    fast, reference = _head("resnet2d", head_dropout=0.3), _head("resnet2d", "reference", head_dropout=0.3)
    assert all(block.dropout == 0.3 for block in fast.blocks)
    # the same weights (same seed), so evaluation is the no-dropout function exactly
    eval_logits = plain(h, mask)
    assert torch.equal(fast(h, mask), eval_logits) and torch.allclose(reference(h, mask), eval_logits)
    fast.train()
    reference.train()
    with torch.no_grad():  # the streamed inference path never drops, even in training mode
        assert torch.equal(fast(h, mask), eval_logits)
    dropped = _grad_forward(fast, h, mask, seed=1)
    assert not torch.allclose(dropped, eval_logits)
    assert torch.equal(dropped, dropped.transpose(1, 2))  # still symmetrised
    # the reference applies the same masks at the same points (same draws in the same order)
    assert torch.allclose(_grad_forward(reference, h, mask, seed=1), dropped, atol=1e-10)
    assert not torch.allclose(_grad_forward(fast, h, mask, seed=2), dropped)


def test_no_head_dropout_draws_no_random_numbers() -> None:
    """Rate 0 in training mode consumes no RNG state, so recipes without the option train exactly as before it."""
    h, mask = _states([15])
    for rate, draws in ((0.0, False), (0.2, True)):
        head = _head("resnet2d", head_dropout=rate).train()
        state = torch.get_rng_state()
        head(h.clone().requires_grad_(True), mask)
        assert (not torch.equal(torch.get_rng_state(), state)) == draws, rate


@pytest.mark.parametrize(("overrides", "words"), [
    ({"head_dropout": 1.0}, "[0, 1)"),
    ({"head_dropout": -0.1}, "[0, 1)"),
    ({"head_dropout": "0.1"}, "[0, 1)"),
    ({"head_dropout": 0.1, "head": "pairwise"}, "resnet2d"),
    ({"head_dropout": 0.1, "head_blocks": 0}, "resnet2d"),
])
def test_head_dropout_is_validated(overrides: dict, words: str) -> None:
    with pytest.raises(InputError, match="head_dropout") as caught:
        ModelConfig(**{"head": "resnet2d", **overrides})  # type: ignore[arg-type]
    assert words in str(caught.value)


#: A hand-edited ``head_dilations`` entry. The old streamed inference padded each tile's maps by it (petabytes here:
#: refused at once on any machine, where 10**7 asked for tens of GB that a large machine may try to hold).
HUGE_DILATION = 10**12
HEAD_PATHS = ("reference", "fast with autograd", "streamed")


def _run_path(head: ResNet2dHead, path: str, h: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """What one of the resnet2d head's three convolution paths computes on ``h``: the whole map's logits and, where
    tiling or blocks reach the path, the tiled logits and sampled-block outputs (with 2 residues of context)."""
    blocks = torch.tensor([[[0, 4], [6, 0]], [[2, 2], [-1, -1]]])
    if path == "reference":
        return [head(h, mask), head.block_outputs(h, mask, blocks, 6, context=2).outputs]
    if path == "fast with autograd":
        with torch.enable_grad():
            x = h.clone().requires_grad_(True)
            logits = head(x, mask)
            (grad,) = torch.autograd.grad((logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum(), x)
            return [logits.detach(), grad, head.block_outputs(x, mask, blocks, 6, context=2).outputs.detach()]
    with torch.no_grad():  # chunk 4 with a huge halo: the whole map at once
        return [head(h, mask), head.predict_logits(h, mask, chunk_size=4),
                head.block_outputs(h, mask, blocks, 6, context=2).outputs]


@pytest.mark.parametrize("path", HEAD_PATHS)
def test_a_dilation_beyond_the_map_is_clamped_to_it_on_every_path(monkeypatch: pytest.MonkeyPatch,
                                                                   path: str) -> None:
    """A dilation of 10**12 on a 12-residue map computes what a dilation of 12 (the map's size) computes, with the
    same weights, on the reference path, the fast path with autograd (training) and the streamed inference (1-row
    strips: the row clamp is by the map's rows, not a strip's), without allocating its padding."""
    monkeypatch.setattr(heads, "STREAM_STRIP_PAIRS", 1)
    _poison_new_empty(monkeypatch)
    impl = "reference" if path == "reference" else "fast"
    huge = _head("resnet2d", impl, head_dilations=[1, HUGE_DILATION])
    at_map = _head("resnet2d", impl, head_dilations=[1, 12])
    at_map.load_state_dict(huge.state_dict())
    assert [block.dilation for block in huge.blocks] == [1, HUGE_DILATION, 1]
    h, mask = _states([12, 9])
    for got, expected in zip(_run_path(huge, path, h, mask), _run_path(at_map, path, h, mask), strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.parametrize("path", HEAD_PATHS)
def test_a_dilation_beyond_the_map_leaves_only_the_centre_tap(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Checked by hand: with d >= n every off-centre tap reads zero padding, so the block computes what a dilation-1
    block computes with its 8 off-centre weights zeroed."""
    monkeypatch.setattr(heads, "STREAM_STRIP_PAIRS", 1)
    impl = "reference" if path == "reference" else "fast"
    huge = _head("resnet2d", impl, head_dilations=[1, HUGE_DILATION])
    centre_only = _head("resnet2d", impl, head_dilations=[1])
    state = huge.state_dict()
    centre = torch.zeros(3, 3, dtype=torch.float64)
    centre[1, 1] = 1.0
    for name in ("blocks.1.conv1.weight", "blocks.1.conv2.weight"):  # block 1 has the huge dilation
        state[name] = state[name] * centre
    centre_only.load_state_dict(state)
    huge.load_state_dict(state)  # the off-centre weights are never read: zeroing them changes nothing
    h, mask = _states([12, 9])
    for got, expected in zip(_run_path(huge, path, h, mask), _run_path(centre_only, path, h, mask), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_a_dilation_clamps_rows_and_columns_apart() -> None:
    """A tile of 5 rows x 30 columns with dilation 8: clamped along the rows only, the same as the unclamped
    convolution (computed here with torch's own padding, which is small enough)."""
    head = _head("resnet2d", "fast", head_dilations=[8], head_blocks=1)
    assert heads._map_dilation(8, 5, 30) == (5, 8)
    assert heads._map_dilation(8, 30, 30) == (8, 8)  # below the extent: unchanged
    conv = head.blocks[0].conv1
    u = torch.randn(2, 5, 30, 8, dtype=torch.float64)
    expected = conv(u.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(heads._fast_conv(conv, u, torch.float64), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(heads._conv(conv, u), expected, atol=1e-12, rtol=0)
