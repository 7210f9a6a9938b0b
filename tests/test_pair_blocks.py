"""sample_pair_blocks: the pair blocks the head is trained on (bounds, short chains, determinism, schedule)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protrnn.data.batching import sample_pair_blocks


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@settings(max_examples=300, deadline=None, database=None)  # no example database written into the checkout
@given(length=st.integers(1, 3000), block=st.integers(1, 700), count=st.integers(1, 9), seed=st.integers(0, 2**32))
def test_blocks_lie_inside_the_chain(length: int, block: int, count: int, seed: int) -> None:
    blocks = sample_pair_blocks(length, block, count, _rng(seed))
    side = min(block, length)
    assert blocks.dtype == np.int64 and blocks.ndim == 2 and blocks.shape[1] == 2
    if length <= block:
        assert blocks.tolist() == [[0, 0]]
        return
    assert len(blocks) == count
    assert (blocks >= 0).all() and (blocks <= length - side).all()
    assert blocks[0, 0] == blocks[0, 1]  # the diagonal block
    d_hi = length - side
    d_lo = max(1, min(side // 2, d_hi))
    offsets = np.abs(blocks[1:, 1] - blocks[1:, 0])
    assert ((offsets >= d_lo) & (offsets <= d_hi)).all()


@pytest.mark.parametrize("length", [1, 7, 50, 96])
def test_a_chain_no_longer_than_the_block_is_one_whole_map(length: int) -> None:
    for count in (1, 4):
        blocks = sample_pair_blocks(length, 96, count, _rng(length))
        np.testing.assert_array_equal(blocks, np.zeros((1, 2), dtype=np.int64))


def test_one_residue_over_the_block_has_offset_one() -> None:
    blocks = sample_pair_blocks(97, 96, 50, _rng(0))
    assert set(blocks[0].tolist()) <= {0, 1} and blocks[0, 0] == blocks[0, 1]
    assert {tuple(b) for b in blocks[1:].tolist()} == {(0, 1), (1, 0)}  # d_lo = d_hi = 1, both orientations


def test_blocks_are_deterministic_per_generator_seed() -> None:
    a = sample_pair_blocks(800, 64, 6, _rng(5))
    b = sample_pair_blocks(800, 64, 6, _rng(5))
    c = sample_pair_blocks(800, 64, 6, _rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_both_orientations_are_trained() -> None:
    rng = _rng(1)
    blocks = np.concatenate([sample_pair_blocks(600, 64, 5, rng)[1:] for _ in range(1000)])
    upper = float(np.mean(blocks[:, 1] > blocks[:, 0]))
    assert not (blocks[:, 0] == blocks[:, 1]).any()
    assert 0.45 < upper < 0.55  # a fair coin over 4,000 blocks: sd 0.008


def test_offsets_are_log_uniform_up_to_the_chain_length() -> None:
    length, block = 2000, 64
    d_lo, d_hi = 32, length - block  # s // 2 and length - s, as documented
    rng = _rng(2)
    draws = [sample_pair_blocks(length, block, 2, rng)[1] for _ in range(5000)]
    offsets = np.array([abs(int(c) - int(r)) for r, c in draws], dtype=float)
    assert offsets.min() >= d_lo and offsets.max() <= d_hi
    # log-uniform on [d_lo, d_hi]: quantile q at exp(log d_lo + q * (log d_hi - log d_lo)); the median is the
    # geometric mean sqrt(d_lo * d_hi) ~ 249 (a uniform draw would put it near 1,000).
    width = math.log(d_hi) - math.log(d_lo)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        expected = math.log(d_lo) + q * width
        assert abs(math.log(np.quantile(offsets, q)) - expected) < 0.08, q
    assert abs(np.median(offsets) - math.sqrt(d_lo * d_hi)) < 0.08 * math.sqrt(d_lo * d_hi)
    # so the far half of the chain is reached: P(d > 1000) = log(1936 / 1000) / log(1936 / 32) ~ 0.16
    assert 0.13 < float(np.mean(offsets > 1000)) < 0.19


def test_a_block_scores_the_documented_separations() -> None:
    """What a batch scores at a sampled block (``BlockOutputs``, the positions the head and the loss use): the pairs
    ``(r + a, c + b)``, ``0 <= a, b < s``, so a block at offset ``d >= s`` covers separations ``d - s + 1 .. d + s - 1``
    and one closer to the diagonal folds over 0."""
    import torch

    from protrnn.model.heads import BlockOutputs

    length, block = 700, 40
    starts = sample_pair_blocks(length, block, 8, _rng(3))
    index = np.arange(length)
    separation = torch.from_numpy(np.abs(index[:, None] - index[None, :]))[None]  # [1, T, T], by hand
    scored = BlockOutputs.positions(torch.from_numpy(starts)[None], block)
    gathered = scored.gather(separation)
    assert tuple(gathered.shape) == (len(starts), block, block)
    folded = 0
    for n, (r, c) in enumerate(starts.tolist()):
        assert scored.rows[n].tolist() == list(range(r, r + block))
        assert scored.cols[n].tolist() == list(range(c, c + block))
        d = abs(c - r)
        seen = np.unique(gathered[n].numpy()).tolist()
        if d >= block:
            assert seen == list(range(d - block + 1, d + block))
        else:  # the block straddles the diagonal: |d + b - a| folds over 0
            assert seen == list(range(0, d + block))
            folded += 1
    assert 0 < folded < len(starts) - 1  # both cases occur in this draw (the diagonal block is one of the folded)


@pytest.mark.parametrize(("length", "block", "count"), [(0, 10, 1), (10, 0, 1), (10, 5, 0)])
def test_nonpositive_arguments_are_rejected(length: int, block: int, count: int) -> None:
    with pytest.raises(ValueError):
        sample_pair_blocks(length, block, count, _rng(0))
