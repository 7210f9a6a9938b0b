"""Batch packing and padding, in one place: how items of different lengths are grouped under memory budgets, and how
they are right-padded into rectangular arrays (residues first, padding after: the batch contract).

Every consumer uses :func:`pack`: training's token-budget sampler (:mod:`protrnn.data.batching`), prediction
(:class:`protrnn.model.predictor.Predictor`), evaluation groups and gradient diagnostics. The budgets are:

* ``max_tokens``: ``B x T_max`` padded residues (recurrent activations);
* ``max_pairs``: ``B x T_max^2`` padded pairs (the pair head's B x T x T tensors), or with ``pair_cost="sum"`` the
  sum of ``L^2`` over the group (results held in memory at once, no padding involved). With ``pair_costs`` (pairs
  scored per item, e.g. sampled pair blocks instead of whole maps) these become ``B x max(cost)`` and ``sum(cost)``;
  the default cost ``L^2`` gives the two forms above;
* ``max_pair_blocks`` with ``pair_extent``: ``B x min(T_max, extent)^2``, the pair block a tiled head holds at once;
* ``max_items``: at most this many items.

Packing is greedy in the given order and deterministic; an item that alone exceeds a budget forms its own group (it
must still be processed; callers crop or chunk if that is too big).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from protrnn.errors import InputError

Order = Literal["given", "longest_first"]


def pack(lengths: Sequence[int] | np.ndarray, order: Order | Sequence[int] | np.ndarray = "given", *,
         max_tokens: int | None = None, max_pairs: int | None = None, max_items: int | None = None,
         pair_extent: int | None = None, max_pair_blocks: int | None = None,
         pair_cost: Literal["padded", "sum"] = "padded",
         pair_costs: Sequence[int] | np.ndarray | None = None) -> list[list[int]]:
    """Group item indices into batches under the budgets above.

    Args:
        lengths: length of each item.
        order: ``"given"`` (index order), ``"longest_first"`` (decreasing length, ties by index: tight batches for
            inference), or an explicit permutation / subset of indices (e.g. shuffled or sorted buckets for training).
        pair_costs: pairs scored per item for ``max_pairs`` (default ``length**2``). ``"padded"`` budgets
            ``B x max(cost)``: exact for padded tensors when the cost is a non-decreasing function of the length.
    Returns:
        Lists of indices; concatenated they give the visiting order.
    """
    for name, value in (("max_tokens", max_tokens), ("max_pairs", max_pairs), ("max_items", max_items),
                        ("max_pair_blocks", max_pair_blocks), ("pair_extent", pair_extent)):
        if value is not None and value < 1:
            raise InputError(f"batch budget {name} must be positive, got {value}")
    if pair_cost not in ("padded", "sum"):
        raise ValueError(f"pair_cost must be 'padded' or 'sum', got {pair_cost!r}")
    sizes = [int(x) for x in (lengths.tolist() if isinstance(lengths, np.ndarray) else lengths)]
    if pair_costs is None:
        costs = [size * size for size in sizes]
    else:
        costs = [int(x) for x in (pair_costs.tolist() if isinstance(pair_costs, np.ndarray) else pair_costs)]
        if len(costs) != len(sizes):
            raise InputError(f"pair_costs has {len(costs)} entries for {len(sizes)} items")
    if isinstance(order, str):
        if order == "given":
            visit = list(range(len(sizes)))
        elif order == "longest_first":
            visit = sorted(range(len(sizes)), key=lambda k: (-sizes[k], k))
        else:
            raise ValueError(f"order must be 'given', 'longest_first' or a sequence of indices, got {order!r}")
    else:
        visit = [int(k) for k in (order.tolist() if isinstance(order, np.ndarray) else order)]

    def fits(count: int, width: int, pair_sum: int, pair_max: int) -> bool:
        if max_items is not None and count > max_items:
            return False
        if max_tokens is not None and count * width > max_tokens:
            return False
        if max_pairs is not None:
            pairs = pair_sum if pair_cost == "sum" else count * pair_max
            if pairs > max_pairs:
                return False
        if max_pair_blocks is not None:
            block = min(width, pair_extent) if pair_extent else width
            if count * block * block > max_pair_blocks:
                return False
        return True

    batches: list[list[int]] = []
    current: list[int] = []
    width = pair_sum = pair_max = 0
    for index in visit:
        length, cost = sizes[index], costs[index]
        new_width, new_sum, new_max = max(width, length), pair_sum + cost, max(pair_max, cost)
        if current and not fits(len(current) + 1, new_width, new_sum, new_max):
            batches.append(current)
            current, new_width, new_sum, new_max = [], length, cost, cost
        current.append(index)
        width, pair_sum, pair_max = new_width, new_sum, new_max
    if current:
        batches.append(current)
    return batches


def right_pad(arrays: Sequence[np.ndarray], dtype: np.dtype | type | None = None, fill: object = 0) -> np.ndarray:
    """Stack 1-D arrays into ``[B, T_max]`` or square 2-D arrays into ``[B, T_max, T_max]``, real values first and
    ``fill`` after (right padding, as the encoder's exact masking requires)."""
    if not arrays:
        raise ValueError("right_pad needs at least one array")
    first = np.asarray(arrays[0])
    dtype = first.dtype if dtype is None else dtype
    width = max(len(a) for a in arrays)
    shape = (len(arrays), width) if first.ndim == 1 else (len(arrays), width, width)
    out = np.full(shape, fill, dtype=dtype)
    for row, array in enumerate(arrays):
        length = len(array)
        if first.ndim == 1:
            out[row, :length] = array
        else:
            out[row, :length, :length] = array
    return out


def padded_size(batch: Sequence[int], lengths: Sequence[int] | np.ndarray) -> tuple[int, int]:
    """(padded tokens B·T_max, padded pairs B·T_max²) of one batch."""
    width = int(max(lengths[i] for i in batch))
    return len(batch) * width, len(batch) * width * width


def real_token_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int] | np.ndarray) -> float:
    """Real residues / padded token slots over ``batches`` (1.0 = no padding); the packing-efficiency figure."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = sum(int(lengths[list(batch)].sum()) for batch in batches)
    padded = sum(padded_size(batch, lengths)[0] for batch in batches)
    return real / padded if padded else 1.0


def fixed_size_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Naive baseline: a random permutation cut into batches of ``batch_size`` (what a plain DataLoader does)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
