"""Pair heads: exact symmetry, no padding leak, tiled inference equal to the full map."""

from __future__ import annotations

import pytest
import torch

from protrnn.model.config import ModelConfig
from protrnn.model.heads import PairwiseHead, ResNet2dHead, build_head

HEADS = ("pairwise", "resnet2d")


def _head(kind: str, **overrides: object) -> PairwiseHead | ResNet2dHead:
    base: dict[str, object] = {"head": kind, "hidden_size": 8, "pair_dim": 8, "head_blocks": 3,
                               "head_dilations": [1, 2], "max_separation": 10, "pair_chunk_size": 16}
    base.update(overrides)
    torch.manual_seed(0)
    return build_head(ModelConfig(**base)).double().eval()  # type: ignore[arg-type]


def _states(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    steps = max(lengths)
    mask = torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), steps, 16, dtype=torch.float64) * mask[..., None], mask


def test_build_head_picks_the_configured_class() -> None:
    assert isinstance(_head("pairwise"), PairwiseHead)
    assert isinstance(_head("resnet2d"), ResNet2dHead)


@pytest.mark.parametrize("kind", HEADS)
def test_logits_are_exactly_symmetric(kind: str) -> None:
    head = _head(kind)
    h, mask = _states([20, 13])
    logits = head(h, mask)
    assert logits.shape == (2, 20, 20)
    assert torch.equal(logits, logits.transpose(1, 2))
    assert torch.isfinite(logits).all(), "padding rows/cols are finite"


@pytest.mark.parametrize("kind", HEADS)
def test_padding_does_not_leak_into_real_pairs(kind: str) -> None:
    head = _head(kind)
    h, mask = _states([11, 30])
    h[0, 11:] = torch.randn(19, 16, dtype=torch.float64) * 50  # even garbage encoder states at padding
    alone = head(h[:1, :11], mask[:1, :11])
    padded = head(h, mask)
    torch.testing.assert_close(padded[0, :11, :11], alone[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("chunk", [16, 23])
def test_tiled_inference_equals_full_map(kind: str, chunk: int) -> None:
    head = _head(kind)
    h, mask = _states([70, 52])  # several tiles each way; halo (8) < tile < T
    full = head(h, mask)
    tiled = head.predict_logits(h, mask, chunk_size=chunk)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_resnet_halo_is_needed_and_sufficient() -> None:
    """The halo equals the convolutions' reach: one row less and tiles stop matching the full map."""
    head = _head("resnet2d")
    assert head.halo == 2 * (1 + 2 + 1)
    h, mask = _states([60])
    full = head(h, mask)
    head.halo -= 1
    short = head.predict_logits(h, mask, chunk_size=16)
    assert (short - full).abs().max() > 1e-6


def test_resnet_receptive_field_matches_halo() -> None:
    head = _head("resnet2d")
    h, mask = _states([40])
    h.requires_grad_()
    logits = head(h, mask)
    i, j = 20, 30
    (grad,) = torch.autograd.grad(logits[0, i, j], h)
    reach = grad[0].abs().sum(-1).nonzero().flatten()
    # the logit (i, j) is symmetrised from raw (i, j) and (j, i): it sees rows/cols within the halo of i and j
    assert int(reach.min()) == i - head.halo and int(reach.max()) == min(39, j + head.halo)
