"""From a :class:`~protrnn.data.dataset.ChainDataset` to padded, masked batches (the batch contract in ARCHITECTURE.md).

Four pieces, each deterministic under a seed:

* :class:`ContactExampleDataset` turns chain ``i`` into one example: tokens, observed mask, Cβ–Cβ distances and
  contact targets of a contiguous crop (random for training, the whole chain for evaluation). Crops are contiguous,
  so the separation ``|i - j|`` inside a crop is the true separation in the chain. With ``pair_block`` a training
  example also carries sampled square pair blocks (:func:`sample_pair_blocks`): the encoder reads the whole crop (a
  long window), the pair head scores only the blocks.
* :func:`sample_pair_blocks` draws those blocks: the diagonal block plus off-diagonal blocks at log-uniform offsets,
  so far separations up to the crop length are trained.
* :func:`collate_contacts` pads examples to ``[B, T]`` / ``[B, T, T]``; padding is masked everywhere, so a chain gives
  identical targets and masks alone or in any batch.
* :class:`TokenBudgetBatchSampler` packs chains of similar length so that ``B * T_max <= max_tokens`` (recurrent
  activations scale with B·T) and the padded pairs the head scores stay within ``max_pairs``: ``B * T_max**2`` for
  whole maps, ``B * K_max * S**2`` with pair blocks (``ContactExampleDataset.pair_costs``), and shards the batches
  over DDP ranks.

Epoch-dependent randomness (crops, blocks, batch order) follows ``set_epoch``. DataLoader workers hold a *copy* of the
dataset, so with ``persistent_workers=True`` a later ``dataset.set_epoch`` would not reach them; the sampler can
instead send the epoch with every index (``yield_epoch=True``: items are ``(index, epoch)``), which the example
dataset accepts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from protrnn.conventions import MIN_SEPARATION
from protrnn.data.chain import check_contact_cutoff
from protrnn.data.dataset import ChainDataset
from protrnn.data.packing import pack, right_pad
from protrnn.errors import InputError

#: Smallest crop that still contains a scored pair (|i - j| >= MIN_SEPARATION needs MIN_SEPARATION + 1 residues).
MIN_CROP_LENGTH = MIN_SEPARATION + 1
#: A random crop is drawn among windows holding at least this fraction of the best window's observed residues.
CROP_OBSERVED_FRACTION = 0.5


def _example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent stream per (seed, epoch, chain): the same crop whatever worker or order asks for it."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index]))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def choose_crop(observed: np.ndarray, crop_length: int | None, rng: np.random.Generator | None) -> int:
    """Start of the crop window for a chain with mask ``observed``.

    No crop needed -> 0. Otherwise windows are scored by their number of observed residues; with ``rng`` a start is
    drawn uniformly among windows holding at least :data:`CROP_OBSERVED_FRACTION` of the best count (so a crop does
    not land on a disordered tail), without ``rng`` the first best window is taken (deterministic evaluation crops).
    """
    length = len(observed)
    if crop_length is None or length <= crop_length:
        return 0
    counts = np.concatenate([[0], np.cumsum(observed, dtype=np.int64)])
    window = counts[crop_length:] - counts[: length - crop_length + 1]
    best = int(window.max())
    if rng is None:
        return int(np.argmax(window))
    candidates = np.flatnonzero(window >= CROP_OBSERVED_FRACTION * best) if best > 0 else np.arange(len(window))
    return int(candidates[rng.integers(len(candidates))])


def sample_pair_blocks(length: int, block: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Starts ``(row_start, col_start)`` of square pair blocks of side ``s = min(block, length)`` to train the pair
    head on, inside a chain (or crop) of ``length`` residues: int64 ``[k, 2]``.

    Schedule:

    * ``length <= block``: one block ``(0, 0)``, the whole map (k = 1).
    * otherwise ``k = count`` blocks. Row 0 is a diagonal block, ``r = c`` uniform in ``[0, length - s]``; it always
      covers the short range (separations 0 .. s - 1). Rows 1 .. count - 1 are off-diagonal blocks at offset
      ``d = |c - r|`` drawn log-uniformly in ``[d_lo, d_hi]`` (rounded, clipped to the range), with
      ``d_hi = length - s`` and ``d_lo = max(1, min(s // 2, d_hi))``; then ``r`` is uniform in
      ``[0, length - s - d]``, ``c = r + d``, and with probability 1/2 ``r`` and ``c`` swap, so both triangles of
      the map are trained (the loss sees pair (i, j) in one orientation and (j, i) in the other).

    A block at offset ``d`` holds the pairs ``(r + a, c + b)``, ``0 <= a, b < s``: separations ``d - s + 1`` to
    ``d + s - 1`` (peaking at ``d``). Log-uniform offsets give offset density ``~ 1 / d``, so every octave of
    separation (s..2s, 2s..4s, ...) receives about the same number of blocks, and separations up to the chain length
    ``length - 1`` are seen; with a uniform draw the few far octaves would get almost nothing, with whole maps the
    short range dominates. Blocks may overlap each other (a pair in two blocks is scored twice). Every start
    satisfies ``0 <= start <= length - s``. Deterministic given ``rng``.
    """
    length, block, count = int(length), int(block), int(count)
    if length < 1 or block < 1 or count < 1:
        raise ValueError(f"sample_pair_blocks needs positive length, block and count, got {length}, {block}, {count}")
    if length <= block:
        return np.zeros((1, 2), dtype=np.int64)
    side = block
    free = length - side  # >= 1: the largest start
    blocks = np.empty((count, 2), dtype=np.int64)
    blocks[0] = int(rng.integers(0, free + 1))
    if count > 1:
        d_hi = free
        d_lo = max(1, min(side // 2, d_hi))
        log_d = rng.uniform(math.log(d_lo), math.log(d_hi), size=count - 1)
        offsets = np.clip(np.rint(np.exp(log_d)).astype(np.int64), d_lo, d_hi)
        rows = rng.integers(0, free - offsets + 1)  # high is exclusive: r in [0, free - d]
        swap = rng.random(count - 1) < 0.5
        cols = rows + offsets
        blocks[1:, 0] = np.where(swap, cols, rows)
        blocks[1:, 1] = np.where(swap, rows, cols)
    return blocks


def crop_distances(cb: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Float32 T×T Cβ–Cβ distances (Å) of one crop; 0.0 wherever either residue is unobserved."""
    cb = cb.astype(np.float32, copy=False)
    diff = cb[:, None, :] - cb[None, :, :]
    with np.errstate(invalid="ignore"):
        distances = np.sqrt((diff * diff).sum(-1))
    both = observed[:, None] & observed[None, :]
    return np.where(both & np.isfinite(distances), distances, np.float32(0.0)).astype(np.float32, copy=False)


def contacts_from_distances(distances: np.ndarray, observed: np.ndarray, cutoff: float) -> np.ndarray:
    """Bool T×T contacts (distance < cutoff, compared in float32 as ``ProteinChain.contact_map``); False wherever a
    residue is unobserved (where :func:`crop_distances` wrote 0)."""
    return (distances < np.float32(cutoff)) & observed[:, None] & observed[None, :]


class ContactExampleDataset(Dataset):
    """Per-chain training/evaluation examples with optional contiguous crops and sampled pair blocks.

    Args:
        chains: the dataset to draw from.
        crop_length: maximum residues per example (``None``: never crop): the window the encoder reads. Must be >= 7
            so a crop can hold a scored pair (|i - j| >= 6).
        random_crop: draw the crop window at random (training); otherwise the first window with the most observed
            residues (only matters when a chain is longer than ``crop_length``).
        seed: base seed; crop (and blocks) of chain ``i`` in epoch ``e`` depend only on ``(seed, e, i)``.
        cutoff: contact cutoff in Å; ``None`` uses the cutoff stored in the dataset file (8 Å by default).
        pair_block: side of the square pair blocks the head is trained on (>= 7; ``None``: whole maps). Only used
            with ``random_crop`` (training); evaluation examples are always whole maps.
        blocks_per_chain: blocks per example when the crop is longer than ``pair_block`` (>= 1): the diagonal block
            plus ``blocks_per_chain - 1`` off-diagonal ones (:func:`sample_pair_blocks`).
        block_context: residues of context the head computes around each block (>= 0; only with ``pair_block``):
            the loss still scores the block, but its 2D convolutions see the map around it as at evaluation
            (:meth:`protrnn.model.heads._PairHeadBase.block_outputs`), at ``((s + 2c) / s)**2`` the head's cost.

    An item is a dict: ``tokens`` (int64 [T]), ``observed`` (bool [T]), ``distances`` (float32 [T, T], Cβ–Cβ in Å,
    0.0 where either residue is unobserved), ``contacts`` (bool [T, T], ``distances < cutoff`` on observed pairs),
    ``length``, ``offset`` (crop start in the full chain), ``id``; with ``pair_block`` and ``random_crop`` also
    ``blocks`` (int64 [k, 2] block starts, :func:`sample_pair_blocks`), ``pair_block`` and ``block_context``
    (ints). The crop is drawn first and the blocks after it from the same per-(seed, epoch, chain) stream, so crops
    do not depend on ``pair_block``.
    """

    def __init__(self, chains: ChainDataset, crop_length: int | None = None, random_crop: bool = False,
                 seed: int = 0, cutoff: float | None = None, pair_block: int | None = None,
                 blocks_per_chain: int = 4, block_context: int = 0) -> None:
        if crop_length is not None and crop_length < MIN_CROP_LENGTH:
            raise InputError(f"crop_length {crop_length} is below {MIN_CROP_LENGTH}: no pair |i-j| >= "
                             f"{MIN_SEPARATION} would fit in a crop")
        if pair_block is not None and (not _is_int(pair_block) or pair_block < MIN_CROP_LENGTH):
            raise InputError(f"pair_block {pair_block} must be an integer >= {MIN_CROP_LENGTH} (a block must hold a "
                             f"pair |i-j| >= {MIN_SEPARATION}) or None")
        if not _is_int(blocks_per_chain) or blocks_per_chain < 1:
            raise InputError(f"blocks_per_chain must be an integer >= 1, got {blocks_per_chain!r}")
        if not _is_int(block_context) or block_context < 0:
            raise InputError(f"block_context must be an integer >= 0, got {block_context!r}")
        self.chains = chains
        self.crop_length = crop_length
        self.random_crop = random_crop
        self.seed = int(seed)
        self.cutoff = chains.contact_cutoff if cutoff is None else check_contact_cutoff(cutoff, "contact cutoff")
        self.pair_block = None if pair_block is None else int(pair_block)
        self.blocks_per_chain = int(blocks_per_chain)
        self.block_context = int(block_context)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.chains)

    @property
    def samples_blocks(self) -> bool:
        """Whether items carry ``blocks`` (``pair_block`` set and random crops, i.e. training)."""
        return self.pair_block is not None and self.random_crop

    @property
    def lengths(self) -> np.ndarray:
        """Residues per example after cropping: ``min(L, crop_length)`` (what the batch sampler must budget)."""
        lengths = np.asarray(self.chains.lengths, dtype=np.int64)
        return lengths if self.crop_length is None else np.minimum(lengths, self.crop_length)

    @property
    def pair_costs(self) -> np.ndarray:
        """Pairs the head scores per example (int64), for the sampler's pair budget.

        Whole maps: ``L**2`` (L = cropped length). With blocks: ``L**2`` when ``L <= pair_block`` (one whole-map
        block), else ``blocks_per_chain * (pair_block + 2 * block_context)**2`` (each block computed with its
        context). The cost grows with L, and a batch of width ``T_max`` uses block side ``S = min(pair_block,
        T_max)``, ``K_max`` block rows for every example and context only when ``T_max > S``, so ``B * max(cost)``
        over the batch equals the padded ``B * K_max * (S + 2 c)**2`` the head holds.
        """
        lengths = self.lengths
        whole = lengths * lengths
        if not self.samples_blocks:
            return whole
        assert self.pair_block is not None
        side = self.pair_block + 2 * self.block_context
        return np.where(lengths <= self.pair_block, whole,
                        np.int64(self.blocks_per_chain) * side * side).astype(np.int64)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), self.epoch)
        observed_full = self.chains.observed(index)
        rng = _example_rng(self.seed, epoch, index % len(self)) if self.random_crop else None
        start = choose_crop(observed_full, self.crop_length, rng)
        stop = len(observed_full) if self.crop_length is None else min(len(observed_full), start + self.crop_length)
        observed = np.array(observed_full[start:stop], dtype=bool)
        distances = crop_distances(self.chains.coords(index)[start:stop, 3], observed)
        example: dict[str, Any] = {
            "tokens": self.chains.tokens(index)[start:stop].astype(np.int64),
            "observed": observed,
            "distances": distances,
            "contacts": contacts_from_distances(distances, observed, self.cutoff),
            "length": stop - start,
            "offset": start,
            "id": self.chains.chain_id(index),
        }
        if self.samples_blocks:
            assert rng is not None and self.pair_block is not None
            example["blocks"] = sample_pair_blocks(stop - start, self.pair_block, self.blocks_per_chain, rng)
            example["pair_block"] = self.pair_block
            example["block_context"] = self.block_context
        return example


def _as_array(value: Any, dtype: type) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, dtype=dtype)


def _collate_blocks(examples: Sequence[Mapping[str, Any]], width: int) -> tuple[np.ndarray, int, int]:
    """``blocks`` [B, K_max, 2] (-1 rows pad examples with fewer blocks), the batch's block side
    ``S = min(pair_block, T_max)`` and block context (the examples' ``block_context``, 0 when ``S = T_max``: every
    block is then a whole map, with nothing around it); starts are clamped to ``T_max - S`` so every block lies
    inside the batch."""
    if not all("blocks" in ex for ex in examples):
        raise ValueError("collate_contacts: either every example carries 'blocks' or none does")
    sizes = {int(ex["pair_block"]) for ex in examples}
    if len(sizes) != 1:
        raise ValueError(f"collate_contacts: examples disagree on pair_block ({sorted(sizes)})")
    contexts = {int(ex.get("block_context", 0)) for ex in examples}
    if len(contexts) != 1:
        raise ValueError(f"collate_contacts: examples disagree on block_context ({sorted(contexts)})")
    side = min(sizes.pop(), width)
    starts = [_as_array(ex["blocks"], np.int64).reshape(-1, 2) for ex in examples]
    if any(len(b) == 0 for b in starts):
        raise ValueError("collate_contacts: an example carries no pair block")
    blocks = np.full((len(examples), max(len(b) for b in starts), 2), -1, dtype=np.int64)
    for row, block in enumerate(starts):
        if block.min() < 0:
            raise ValueError(f"collate_contacts: negative block start in example {examples[row].get('id', row)}")
        # An example sampled with s_b = min(pair_block, L_b) <= S; its starts can pass T_max - S only when L_b < S,
        # where (0, 0) is its only block: the clamp never moves a block that was inside.
        blocks[row, :len(block)] = np.minimum(block, width - side)
    return blocks, side, contexts.pop() if width > side else 0


def collate_contacts(examples: Sequence[Mapping[str, Any]], min_separation: int = MIN_SEPARATION) -> dict[str, Any]:
    """Pad examples into one batch (keys and dtypes as in the batch contract of docs/ARCHITECTURE.md).

    ``pair_mask`` = observed_i & observed_j & |i - j| >= ``min_separation``; since crops are contiguous, the
    within-crop separation is the separation in the original chain. Padding is 0 / False in every tensor, and
    contacts and distances are 0 wherever a residue is unobserved. ``distances`` is added when every example has
    them; ``blocks`` (Long [B, K_max, 2], -1 rows as padding), ``block_size`` (int ``S = min(pair_block, T_max)``)
    and ``block_context`` (int) when the examples carry pair blocks, with ``0 <= start`` and ``start + S <= T_max``
    for every real block row.
    Arrays are filled in numpy and handed to torch without copying (many tiny torch ops cost more than the copy).
    """
    if not examples:
        raise ValueError("collate_contacts needs at least one example")
    lengths = [int(ex["length"]) if "length" in ex else len(ex["tokens"]) for ex in examples]
    width = max(lengths)
    tokens = right_pad([_as_array(ex["tokens"], np.int64)[:n] for ex, n in zip(examples, lengths, strict=True)],
                       np.int64)
    observed = right_pad([_as_array(ex["observed"], bool)[:n] for ex, n in zip(examples, lengths, strict=True)], bool)
    contacts = right_pad([_as_array(ex["contacts"], bool)[:n, :n] for ex, n in zip(examples, lengths, strict=True)],
                         bool)
    mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    both = observed[:, :, None] & observed[:, None, :]
    contacts &= both
    positions = np.arange(width)
    pair_mask = both & (np.abs(positions[:, None] - positions[None, :]) >= min_separation)
    batch: dict[str, Any] = {
        "tokens": torch.from_numpy(tokens),
        "mask": torch.from_numpy(mask),
        "observed": torch.from_numpy(observed),
        "contacts": torch.from_numpy(contacts.astype(np.float32)),
        "pair_mask": torch.from_numpy(pair_mask),
        "lengths": torch.tensor(lengths, dtype=torch.long),
        "offsets": torch.tensor([int(ex.get("offset", 0)) for ex in examples], dtype=torch.long),
        "ids": [str(ex["id"]) for ex in examples],
    }
    if all("distances" in ex for ex in examples):
        distances = right_pad([_as_array(ex["distances"], np.float32)[:n, :n]
                               for ex, n in zip(examples, lengths, strict=True)], np.float32)
        distances[~both] = 0.0
        batch["distances"] = torch.from_numpy(distances)
    if any("blocks" in ex for ex in examples):
        blocks, side, context = _collate_blocks(examples, width)
        batch["blocks"] = torch.from_numpy(blocks)
        batch["block_size"] = side
        batch["block_context"] = context
    return batch


def _distributed_context(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for {num_replicas} replicas")
    return int(num_replicas), int(rank)


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches under a token budget and a pair budget, shuffled per epoch, sharded over DDP ranks.

    Args:
        lengths: residues per example *as batched* (post-crop: ``ContactExampleDataset.lengths``).
        max_tokens: bound on padded tokens ``B * T_max`` per batch.
        max_pairs: bound on padded pairs ``B * T_max**2`` per batch (``None``: no pair budget), or, with
            ``pair_costs``, on ``B * max(cost)`` over the batch.
        shuffle: new batch composition (among chains of equal length) and batch order each epoch; otherwise batches
            are fixed and in ascending length.
        seed: all randomness is a function of ``(seed, epoch)``, identical on every rank.
        num_replicas, rank: DDP sharding; read from ``torch.distributed`` when it is initialised and these are None.
        drop_last: drop the tail batches that do not divide evenly over ranks instead of repeating batches from the
            start (as ``DistributedSampler`` does) so that every rank runs the same number of steps.
        bucket_size: ``None`` (default) packs from one global length order, so the batch count never changes between
            epochs (schedulers and progress bars rely on it). An int first splits a random permutation into buckets
            of that many chains and sorts within each: more varied batches, slightly more padding, and a count that
            may differ between epochs (``len`` is exact for the current epoch).
        yield_epoch: yield ``(index, epoch)`` pairs instead of ints (see module docstring).
        pair_costs: pairs the head scores per example (``ContactExampleDataset.pair_costs``: with sampled pair blocks
            ``blocks_per_chain * pair_block**2`` rather than ``L**2``); ``None``: ``L**2``, whole maps.

    Under Lightning use ``Trainer(use_distributed_sampler=False)``: the sampler shards itself. Lightning calls
    ``set_epoch`` on ``dataloader.sampler``, not on a batch sampler, so wrap this one in
    :class:`protrnn.training.datamodule.EpochedBatchSampler` (as ``ContactDataModule`` does) or call ``set_epoch``
    yourself before each epoch.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens: int, max_pairs: int | None = None,
                 shuffle: bool = True, seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 drop_last: bool = False, bucket_size: int | None = None, yield_epoch: bool = False,
                 pair_costs: Sequence[int] | np.ndarray | None = None) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or (self.lengths.size and self.lengths.min() < 1):
            raise InputError("lengths must be a 1-D array of positive chain lengths")
        self.pair_costs = None if pair_costs is None else np.asarray(pair_costs, dtype=np.int64)
        if self.pair_costs is not None and (self.pair_costs.shape != self.lengths.shape
                                            or (self.pair_costs.size and self.pair_costs.min() < 1)):
            raise InputError("pair_costs must hold one positive pair count per example")
        if max_tokens < 1:
            raise InputError(f"max_tokens must be positive, got {max_tokens}")
        if max_pairs is not None and max_pairs < 1:
            raise InputError(f"max_pairs must be positive, got {max_pairs}")
        if bucket_size is not None and bucket_size < 1:
            raise InputError(f"bucket_size must be positive, got {bucket_size}")
        self.max_tokens = int(max_tokens)
        self.max_pairs = None if max_pairs is None else int(max_pairs)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas, self.rank = _distributed_context(num_replicas, rank)
        self.drop_last = drop_last
        self.bucket_size = bucket_size
        self.yield_epoch = yield_epoch
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch, over all ranks, in the order they are dealt out (before sharding/padding)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = len(self.lengths)
        if not self.shuffle:
            batches = pack(self.lengths, np.argsort(self.lengths, kind="stable"), max_tokens=self.max_tokens,
                           max_pairs=self.max_pairs, pair_costs=self.pair_costs)
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF]))
            tiebreak = rng.permutation(n)
            if self.bucket_size is None:
                order = np.lexsort((tiebreak, self.lengths))
                batches = pack(self.lengths, order, max_tokens=self.max_tokens, max_pairs=self.max_pairs,
                               pair_costs=self.pair_costs)
            else:
                batches = []
                for start in range(0, n, self.bucket_size):
                    bucket = tiebreak[start:start + self.bucket_size]
                    bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
                    batches.extend(pack(self.lengths, bucket, max_tokens=self.max_tokens,
                                        max_pairs=self.max_pairs, pair_costs=self.pair_costs))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def _num_batches_per_rank(self, total: int) -> int:
        if self.drop_last:
            return total // self.num_replicas
        return math.ceil(total / self.num_replicas)

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches for an epoch: every ``num_replicas``-th batch, padded by repetition to equal counts."""
        batches = self.global_batches(epoch)
        per_rank = self._num_batches_per_rank(len(batches))
        needed = per_rank * self.num_replicas
        if needed > len(batches) and batches:
            repeats = math.ceil(needed / len(batches))
            batches = (batches * repeats)[:needed]
        else:
            batches = batches[:needed]
        return batches[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[list[Any]]:
        epoch = self.epoch
        for batch in self.rank_batches(epoch):
            yield [(index, epoch) for index in batch] if self.yield_epoch else list(batch)

    def __len__(self) -> int:
        return self._num_batches_per_rank(len(self.global_batches()))
