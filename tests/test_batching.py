"""Crops, collate and the token/pair-budget sampler: exact masks, budgets, determinism, DDP sharding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from protrnn.data.batching import (
    ContactExampleDataset,
    TokenBudgetBatchSampler,
    collate_contacts,
)
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import ChainDataset, load_dataset, save_dataset
from protrnn.data.packing import fixed_size_batches, padded_size, real_token_fraction
from protrnn.errors import InputError


@pytest.fixture(scope="module")
def cgdms(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ChainDataset:
    """All 2,204 cgdms chains, plus two copies with unobserved stretches (a gap, and a disordered N-terminus)."""
    from protrnn.data.sources import iter_chains

    chains = [o.chain for o in iter_chains(shared_data / "cgdms" / "cgdms_train_val.tar.gz")]
    longest = max(chains, key=len)
    extra = []
    for name, stop_start in (("gap", (30, 40)), ("nterm", (0, 60))):
        observed, coords = longest.observed.copy(), longest.coords.copy()
        observed[slice(*stop_start)] = False
        coords[slice(*stop_start)] = np.nan
        extra.append(ProteinChain(f"{longest.id}_{name}", longest.sequence, observed, coords))
    return load_dataset(save_dataset(chains + extra, tmp_path_factory.mktemp("cgdms") / "cgdms.npz"))


def test_padding_never_changes_a_result(cgdms: ChainDataset) -> None:
    examples = ContactExampleDataset(cgdms)
    gap = len(cgdms) - 2
    short = int(np.argmin(cgdms.lengths))
    alone = collate_contacts([examples[gap]])
    for others in ([short], [short, gap - 5], [gap - 7, short]):
        batch = collate_contacts([examples[i] for i in others] + [examples[gap]] + [examples[short]])
        row, length = len(others), int(alone["lengths"][0])
        assert batch["ids"][row] == alone["ids"][0] and int(batch["lengths"][row]) == length
        for key in ("tokens", "mask", "observed"):
            assert torch.equal(batch[key][row, :length], alone[key][0])
            assert not batch[key][row, length:].any()
        for key in ("contacts", "pair_mask"):
            assert torch.equal(batch[key][row, :length, :length], alone[key][0])
            assert not batch[key][row, length:].any() and not batch[key][row, :, length:].any()
    # and the targets are the chain's own, with unobserved residues and |i-j| < 6 masked
    chain = cgdms[gap]
    assert torch.equal(alone["contacts"][0].bool(), torch.from_numpy(chain.contact_map()))
    assert torch.equal(alone["pair_mask"][0], torch.from_numpy(chain.pair_mask()))
    assert not alone["pair_mask"][0, 30:40].any() and alone["mask"][0, 30:40].all()
    assert alone["tokens"].dtype == torch.long and alone["contacts"].dtype == torch.float32
    assert set(alone) == {"tokens", "mask", "observed", "distances", "contacts", "pair_mask", "lengths", "offsets",
                          "ids"}


def test_random_crops_are_deterministic_and_exact(cgdms: ChainDataset) -> None:
    index = int(np.argmax(cgdms.lengths))
    chain = cgdms[index]
    first = ContactExampleDataset(cgdms, crop_length=32, random_crop=True, seed=7)
    again = ContactExampleDataset(cgdms, crop_length=32, random_crop=True, seed=7)
    offsets = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        a, b = first[index], again[index]
        assert a["offset"] == b["offset"] and a["length"] == 32
        assert first[(index, epoch)]["offset"] == a["offset"]  # the (index, epoch) form used with yield_epoch
        offsets.add(a["offset"])
        window = slice(a["offset"], a["offset"] + 32)
        np.testing.assert_array_equal(a["contacts"], chain.contact_map()[window, window])
        np.testing.assert_array_equal(a["tokens"], cgdms.tokens(index)[window])
    assert len(offsets) > 1, "crops should move between epochs"
    batch = collate_contacts([first[index]])
    assert int(batch["offsets"][0]) == first[index]["offset"]
    # short chains are never cropped; evaluation takes the whole chain
    short = int(np.argmin(cgdms.lengths))
    assert first[short]["length"] == cgdms.lengths[short] and first[short]["offset"] == 0
    assert ContactExampleDataset(cgdms)[index]["length"] == len(chain)


def test_crops_prefer_observed_windows(cgdms: ChainDataset) -> None:
    nterm = len(cgdms) - 1  # residues 0..59 unobserved
    examples = ContactExampleDataset(cgdms, crop_length=30, random_crop=True, seed=0)
    observed = cgdms.observed(nterm).astype(int)
    observed_best = max(observed[i:i + 30].sum() for i in range(len(observed) - 29))
    assert observed_best == 30 and not observed[:60].any()
    for epoch in range(20):
        example = examples[(nterm, epoch)]
        assert example["observed"].sum() >= 0.5 * observed_best
    deterministic = ContactExampleDataset(cgdms, crop_length=30, random_crop=False)[nterm]
    assert deterministic["observed"].all() and deterministic["offset"] == 60


def test_crop_length_below_six_is_an_input_error(cgdms: ChainDataset) -> None:
    with pytest.raises(InputError, match="crop_length 5"):
        ContactExampleDataset(cgdms, crop_length=5)


def test_smallest_crop_holds_a_scored_pair(tmp_path: Path) -> None:
    # A crop of 6 residues spans separations 0..5, so it can never hold a pair with |i - j| >= 6.
    length = 20
    coords = np.zeros((length, 4, 3), dtype=np.float32)
    coords[:, :, 0] = np.arange(length, dtype=np.float32)[:, None]
    chain = ProteinChain("toy", "A" * length, np.ones(length, dtype=bool), coords)
    chains = load_dataset(save_dataset([chain], tmp_path / "toy.npz"))
    with pytest.raises(InputError, match="crop_length 6"):
        ContactExampleDataset(chains, crop_length=6)
    batch = collate_contacts([ContactExampleDataset(chains, crop_length=7)[0]])
    assert int(batch["pair_mask"].sum()) == 2  # (0, 6) and (6, 0)


def _check_budgets(batches: list[list[int]], lengths: np.ndarray, max_tokens: int, max_pairs: int | None) -> None:
    for batch in batches:
        tokens, pairs = padded_size(batch, lengths)
        if len(batch) > 1:
            assert tokens <= max_tokens and (max_pairs is None or pairs <= max_pairs)


def test_sampler_respects_budgets_and_covers_every_chain(cgdms: ChainDataset) -> None:
    lengths = ContactExampleDataset(cgdms, crop_length=64).lengths
    lengths = lengths.copy()
    lengths[0] = 5000  # an over-long chain must still be yielded, alone
    for max_pairs in (None, 150_000):
        sampler = TokenBudgetBatchSampler(lengths, max_tokens=4096, max_pairs=max_pairs, seed=3)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            _check_budgets(batches, lengths, 4096, max_pairs)
            flat = sorted(i for batch in batches for i in batch)
            assert flat == list(range(len(lengths)))
            assert [0] in batches


def test_sampler_is_deterministic_under_seed(cgdms: ChainDataset) -> None:
    lengths = cgdms.lengths
    make = lambda seed, **kw: TokenBudgetBatchSampler(lengths, max_tokens=2048, seed=seed, **kw)  # noqa: E731
    a, b, c = make(1), make(1), make(2)
    assert list(a) == list(b) and list(a) != list(c)
    a.set_epoch(1)
    assert list(a) != list(b) and len(a) == len(b)  # new order and composition, same count
    ordered = make(0, shuffle=False)
    assert list(ordered) == list(make(5, shuffle=False))
    bucketed = make(1, bucket_size=500)
    for epoch in range(3):
        bucketed.set_epoch(epoch)
        assert len(list(bucketed)) == len(bucketed)
        _check_budgets(list(bucketed), lengths, 2048, None)
    stamped = make(1, yield_epoch=True)
    stamped.set_epoch(4)
    first = next(iter(stamped))
    assert all(epoch == 4 for _, epoch in first)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_shards_are_disjoint_and_equal(cgdms: ChainDataset, drop_last: bool) -> None:
    lengths = cgdms.lengths
    replicas = 3
    full = TokenBudgetBatchSampler(lengths, max_tokens=3000, seed=11, num_replicas=1, rank=0)
    total = len(full)
    assert total % replicas != 0  # so padding/dropping is exercised
    shards = [list(TokenBudgetBatchSampler(lengths, max_tokens=3000, seed=11, num_replicas=replicas, rank=r,
                                           drop_last=drop_last)) for r in range(replicas)]
    counts = {len(s) for s in shards}
    assert len(counts) == 1
    per_rank = counts.pop()
    assert per_rank == (total // replicas if drop_last else -(-total // replicas))
    seen = [i for shard in shards for batch in shard for i in batch]
    global_batches = full.global_batches()
    if drop_last:
        assert len(seen) == len(set(seen))  # disjoint
        dealt = {i for batch in global_batches[: per_rank * replicas] for i in batch}
        assert set(seen) == dealt
    else:
        assert set(seen) == set(range(len(lengths)))  # covering
        repeated = per_rank * replicas - total
        padding = {i for batch in global_batches[:repeated] for i in batch}
        duplicates = {i for i in seen if seen.count(i) > 1}
        assert duplicates <= padding  # only the DistributedSampler-style padding repeats


def test_token_budget_batches_are_mostly_real_tokens(cgdms: ChainDataset) -> None:
    lengths = cgdms.lengths
    budget = list(TokenBudgetBatchSampler(lengths, max_tokens=8192, seed=0))
    naive = fixed_size_batches(len(lengths), batch_size=int(np.mean([len(b) for b in budget])), seed=0)
    assert real_token_fraction(budget, lengths) >= 0.9
    assert real_token_fraction(budget, lengths) > real_token_fraction(naive, lengths) + 0.1


def test_dataloader_end_to_end(cgdms: ChainDataset) -> None:
    examples = ContactExampleDataset(cgdms, crop_length=48, random_crop=True, seed=0)
    sampler = TokenBudgetBatchSampler(examples.lengths, max_tokens=1024, max_pairs=40_000, seed=0, yield_epoch=True)
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=collate_contacts)
    total = 0
    for batch in loader:
        b, t = batch["tokens"].shape
        assert b * t <= 1024 and b * t * t <= 40_000
        assert batch["contacts"].shape == (b, t, t) and int(batch["lengths"].max()) == t
        observed = batch["observed"].numpy()  # numpy: tiny torch ops are slow on a busy CPU
        assert not (batch["contacts"].numpy().astype(bool) & ~(observed[:, :, None] & observed[:, None, :])).any()
        total += b
    assert total == len(cgdms)


# -------------------------------------------------------------------------------------------------- distances, blocks
def test_distances_are_the_chains_cb_distances(cgdms: ChainDataset) -> None:
    from scipy.spatial.distance import cdist

    gap = len(cgdms) - 2  # residues 30..39 unobserved
    chain = cgdms[gap]
    for example in (ContactExampleDataset(cgdms)[gap],
                    ContactExampleDataset(cgdms, crop_length=50, random_crop=True, seed=3, pair_block=16)[gap]):
        window = slice(example["offset"], example["offset"] + example["length"])
        observed = chain.observed[window]
        both = observed[:, None] & observed[None, :]
        cb = chain.coords[window, 3].astype(np.float64)
        expected = np.where(both, cdist(np.nan_to_num(cb), np.nan_to_num(cb)), 0.0)
        assert example["distances"].dtype == np.float32 and example["distances"].shape == both.shape
        np.testing.assert_allclose(example["distances"], expected, rtol=0, atol=1e-4)
        assert not example["distances"][~both].any()
        np.testing.assert_array_equal(example["contacts"], (example["distances"] < 8.0) & both)
        np.testing.assert_array_equal(example["contacts"], chain.contact_map()[window, window])
    assert not (ContactExampleDataset(cgdms)[gap]["distances"][30:40]).any()
    # collated: the same values, 0 in padding
    short = int(np.argmin(cgdms.lengths))
    examples = ContactExampleDataset(cgdms)
    batch = collate_contacts([examples[short], examples[gap]])
    n = len(cgdms[short])
    assert batch["distances"].dtype == torch.float32 and batch["distances"].shape == batch["contacts"].shape
    np.testing.assert_array_equal(batch["distances"][1].numpy(), examples[gap]["distances"])
    np.testing.assert_array_equal(batch["distances"][0, :n, :n].numpy(), examples[short]["distances"])
    assert not batch["distances"][0, n:].any() and not batch["distances"][0, :, n:].any()
    assert "distances" not in collate_contacts([{k: v for k, v in examples[short].items() if k != "distances"}])


def test_pair_blocks_leave_crops_unchanged(cgdms: ChainDataset) -> None:
    plain = ContactExampleDataset(cgdms, crop_length=60, random_crop=True, seed=9)
    blocked = ContactExampleDataset(cgdms, crop_length=60, random_crop=True, seed=9, pair_block=16,
                                    blocks_per_chain=5)
    long_chains = np.flatnonzero(cgdms.lengths > 80)[:20]
    assert len(long_chains) == 20
    for epoch in range(3):
        for index in long_chains:
            a, b = plain[(int(index), epoch)], blocked[(int(index), epoch)]
            assert a["offset"] == b["offset"] and a["length"] == b["length"] == 60
            np.testing.assert_array_equal(a["tokens"], b["tokens"])
            np.testing.assert_array_equal(a["contacts"], b["contacts"])
            assert "blocks" not in a and "pair_block" not in a
            assert b["pair_block"] == 16 and b["blocks"].shape == (5, 2) and b["blocks"].dtype == np.int64
            assert (b["blocks"] >= 0).all() and (b["blocks"] <= 60 - 16).all()
            np.testing.assert_array_equal(b["blocks"], blocked[(int(index), epoch)]["blocks"])  # deterministic
    assert not np.array_equal(blocked[(int(long_chains[0]), 0)]["blocks"], blocked[(int(long_chains[0]), 1)]["blocks"])
    # a crop no longer than the block is one whole map; evaluation examples never carry blocks
    short = int(np.argmin(cgdms.lengths))  # 20 residues
    wide = ContactExampleDataset(cgdms, crop_length=60, random_crop=True, seed=9, pair_block=20)
    assert wide[short]["blocks"].tolist() == [[0, 0]] and wide[short]["pair_block"] == 20
    evaluation = ContactExampleDataset(cgdms, crop_length=60, random_crop=False, pair_block=16)
    assert "blocks" not in evaluation[int(long_chains[0])] and "blocks" not in collate_contacts([evaluation[short]])


def test_pair_block_arguments_are_checked(cgdms: ChainDataset) -> None:
    with pytest.raises(InputError, match="pair_block 6"):
        ContactExampleDataset(cgdms, pair_block=6)
    with pytest.raises(InputError, match="blocks_per_chain"):
        ContactExampleDataset(cgdms, pair_block=32, blocks_per_chain=0)
    ContactExampleDataset(cgdms, pair_block=7, blocks_per_chain=1)


def test_collated_blocks_are_padded_and_inside_the_batch(cgdms: ChainDataset) -> None:
    examples = ContactExampleDataset(cgdms, crop_length=90, random_crop=True, seed=4, pair_block=24,
                                     blocks_per_chain=5)
    lengths = examples.lengths
    long_chain = int(np.flatnonzero(lengths == 90)[0])
    short = int(np.flatnonzero(lengths == 20)[0])
    middle = int(np.flatnonzero((lengths > 24) & (lengths < 60))[0])
    batch = collate_contacts([examples[i] for i in (short, long_chain, middle)])
    assert batch["block_size"] == 24 and type(batch["block_size"]) is int
    blocks = batch["blocks"]
    assert blocks.dtype == torch.long and blocks.shape == (3, 5, 2)
    assert blocks[0, 0].tolist() == [0, 0] and (blocks[0, 1:] == -1).all()  # one whole map, then padding rows
    np.testing.assert_array_equal(blocks[1].numpy(), examples[long_chain]["blocks"])
    real = (blocks >= 0).all(-1)
    assert int(real.sum()) == 11
    assert (blocks[real] + 24 <= 90).all() and (blocks[real] >= 0).all()
    for row, index in enumerate((short, long_chain, middle)):  # blocks of a real chain stay inside it
        length = int(lengths[index])
        if length > 24:
            assert (blocks[row][real[row]] + 24 <= length).all()
    # every chain shorter than the block: S = T_max, one (0, 0) block each
    shorts = [int(i) for i in np.flatnonzero((lengths >= 20) & (lengths <= 24))[:3]]
    small = collate_contacts([examples[i] for i in shorts])
    assert small["block_size"] == int(lengths[shorts].max()) and small["blocks"].tolist() == [[[0, 0]]] * 3
    # a block that would stick out of a narrower batch is clamped to T_max - S (never happens to sampled blocks)
    handmade = {"tokens": np.ones(40, np.int64), "observed": np.ones(40, bool), "contacts": np.zeros((40, 40), bool),
                "id": "x", "blocks": np.array([[30, 5]]), "pair_block": 20}
    assert collate_contacts([handmade])["blocks"].tolist() == [[[20, 5]]]
    with pytest.raises(ValueError, match="every example"):
        collate_contacts([examples[long_chain], ContactExampleDataset(cgdms)[short]])


def test_block_context_is_carried_budgeted_and_dropped_for_whole_maps(cgdms: ChainDataset) -> None:
    examples = ContactExampleDataset(cgdms, crop_length=90, random_crop=True, seed=4, pair_block=24,
                                     blocks_per_chain=3, block_context=10)
    plain = ContactExampleDataset(cgdms, crop_length=90, random_crop=True, seed=4, pair_block=24, blocks_per_chain=3)
    lengths = examples.lengths
    # a block of 24 computed with 10 residues on each side holds 44 x 44 pairs; a whole map has no context
    np.testing.assert_array_equal(examples.pair_costs, [n * n if n <= 24 else 3 * 44 * 44 for n in lengths.tolist()])
    long_chain = int(np.flatnonzero(lengths == 90)[0])
    assert examples[long_chain]["block_context"] == 10
    np.testing.assert_array_equal(examples[long_chain]["blocks"], plain[long_chain]["blocks"])  # same draws
    short = int(np.flatnonzero(lengths == 20)[0])
    assert collate_contacts([examples[short], examples[long_chain]])["block_context"] == 10
    shorts = [int(i) for i in np.flatnonzero((lengths >= 20) & (lengths <= 24))[:3]]
    assert collate_contacts([examples[i] for i in shorts])["block_context"] == 0  # S = T_max: whole maps
    assert collate_contacts([plain[long_chain]])["block_context"] == 0
    with pytest.raises(ValueError, match="block_context"):
        collate_contacts([examples[long_chain], plain[long_chain]])
    for bad in (-1, 1.5, None):
        with pytest.raises(InputError, match="block_context"):
            ContactExampleDataset(cgdms, pair_block=24, block_context=bad)  # type: ignore[arg-type]


def test_sampler_budgets_the_pairs_blocks_score(cgdms: ChainDataset) -> None:
    examples = ContactExampleDataset(cgdms, crop_length=96, random_crop=True, seed=0, pair_block=24,
                                     blocks_per_chain=3)
    lengths = examples.lengths
    expected_costs = np.array([n * n if n <= 24 else 3 * 24 * 24 for n in lengths.tolist()])
    np.testing.assert_array_equal(examples.pair_costs, expected_costs)
    np.testing.assert_array_equal(ContactExampleDataset(cgdms, crop_length=96).pair_costs, lengths ** 2)
    max_pairs = 20_000
    blocked = TokenBudgetBatchSampler(lengths, max_tokens=4096, max_pairs=max_pairs, seed=1,
                                      pair_costs=examples.pair_costs, yield_epoch=True)
    whole = TokenBudgetBatchSampler(lengths, max_tokens=4096, max_pairs=max_pairs, seed=1)
    for batch in blocked:
        width = int(lengths[[i for i, _ in batch]].max())
        side, rows = min(24, width), (3 if width > 24 else 1)
        if len(batch) > 1:
            assert len(batch) * rows * side * side <= max_pairs
    assert sorted(i for batch in blocked for i, _ in batch) == list(range(len(lengths)))
    assert len(blocked) < len(whole) / 2  # 3·24² = 1,728 pairs per long crop instead of up to 96² = 9,216
    # the collated tensors are what was budgeted: B · K_max · S² <= max_pairs
    loader = DataLoader(examples, batch_sampler=blocked, collate_fn=collate_contacts)
    for step, batch in enumerate(loader):
        b, k = batch["blocks"].shape[:2]
        assert b == 1 or b * k * batch["block_size"] ** 2 <= max_pairs
        if step == 20:
            break
    # pair_costs = L² is the default budget: identical batches
    same = TokenBudgetBatchSampler(lengths, max_tokens=4096, max_pairs=max_pairs, seed=1, pair_costs=lengths ** 2)
    assert list(same) == list(whole)
    with pytest.raises(InputError, match="pair_costs"):
        TokenBudgetBatchSampler(lengths, max_tokens=4096, pair_costs=lengths[:-1])


def test_datamodule_trains_on_blocks_and_validates_whole_maps(cgdms: ChainDataset, tmp_path: Path) -> None:
    from protrnn.training.datamodule import ContactDataModule

    order = np.argsort(cgdms.lengths)
    save_dataset([cgdms[int(i)] for i in order[-40:]] + [cgdms[int(i)] for i in order[:10]], tmp_path / "train.npz")
    save_dataset([cgdms[int(i)] for i in order[-6:]], tmp_path / "val.npz")
    paths = (tmp_path / "train.npz", tmp_path / "val.npz")
    for key, value, message in (("pair_block", 6, "'data.pair_block'.*>= 7 or null"),
                                ("pair_block", True, "'data.pair_block'"),
                                ("blocks_per_chain", 0, "'data.blocks_per_chain'.*>= 1"),
                                ("blocks_per_chain", None, "'data.blocks_per_chain'"),
                                ("block_context", -1, "'data.block_context'.*>= 0")):
        with pytest.raises(InputError, match=message):
            ContactDataModule(*paths, **{key: value})
    data = ContactDataModule(*paths, crop_length=80, max_tokens=4096, max_pairs=10_000, pair_block=24,
                             blocks_per_chain=4, seed=2)
    assert data.hparams["pair_block"] == 24 and data.hparams["blocks_per_chain"] == 4
    data.setup("fit")
    train_batches = list(data.train_dataloader())
    assert all("blocks" in batch and "distances" in batch for batch in train_batches)
    assert max(int(batch["lengths"].max()) for batch in train_batches) == 80  # the encoder reads the window
    for batch in train_batches:
        b, k = batch["blocks"].shape[:2]
        assert b == 1 or b * k * batch["block_size"] ** 2 <= 10_000
    # 4·24² = 2,304 scored pairs per 80-residue crop: 4 of them per batch, where whole 80² maps allow only 1
    assert max(len(batch["ids"]) for batch in train_batches if int(batch["lengths"].max()) == 80) == 4
    assert sum(len(batch["ids"]) for batch in train_batches) == 50
    val_batches = list(data.val_dataloader())
    assert all("blocks" not in batch and "block_size" not in batch for batch in val_batches)
    # with context the budget counts each block with its context: (24 + 2 x 8)² pairs, so 1 crop of 80 per batch
    context = ContactDataModule(*paths, crop_length=80, max_tokens=4096, max_pairs=10_000, pair_block=24,
                                blocks_per_chain=4, seed=2, block_context=8)
    assert context.hparams["block_context"] == 8
    context.setup("fit")
    context_batches = list(context.train_dataloader())
    assert {batch["block_context"] for batch in context_batches if int(batch["lengths"].max()) > 24} == {8}
    assert max(len(batch["ids"]) for batch in context_batches if int(batch["lengths"].max()) == 80) == 1
    assert sum(len(batch["ids"]) for batch in context_batches) == 50
    assert sorted(int(n) for batch in val_batches for n in batch["lengths"]) == sorted(
        len(cgdms[int(i)]) for i in order[-6:])
    plain = ContactDataModule(*paths, crop_length=80, max_tokens=4096, max_pairs=10_000, seed=2)
    plain.setup("fit")
    assert all("blocks" not in batch for batch in plain.train_dataloader())
