"""LightningDataModule over prepared datasets: random crops (optionally with sampled pair blocks) and token/pair-budget
batches for training, whole chains and whole contact maps for validation.

Sharding is done by :class:`~protrnn.data.batching.TokenBudgetBatchSampler` (it knows the token budget, which a
DistributedSampler would break), so the trainer must run with ``use_distributed_sampler=False`` (the bundled configs
and ``protrnn train`` set it). Each rank receives a disjoint shard with the same number of batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Sampler

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.data.chain import check_contact_cutoff
from protrnn.errors import InputError


class EpochedBatchSampler(Sampler[list[Any]]):
    """Wraps a batch sampler so Lightning's per-epoch ``set_epoch`` reaches it (and the dataset).

    Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler`` before each
    epoch, not on ``dataloader.batch_sampler`` itself; exposing this object as ``.sampler`` routes that call here.

    With ``completed`` (the training loader's: :func:`completed_batches` of the trainer) each pass starts at the
    epoch's batch ``completed()``: 0 at an epoch's start, the checkpoint's count when a run resumes mid-epoch. The
    batches and the crops depend only on the seed, the epoch and the indices, so the rest of the epoch is then the
    uninterrupted run's. A plain pass restarted the epoch at its first batch while Lightning went on counting from the
    checkpoint's: the resumed epoch trained its first batches twice and never its last ones.
    """

    def __init__(self, batch_sampler: Any, dataset: Any, completed: Callable[[], int] | None = None) -> None:
        self.batch_sampler = batch_sampler
        self.dataset = dataset
        self.epoch = 0
        self.completed = completed

    @property
    def sampler(self) -> EpochedBatchSampler:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for target in (self.batch_sampler, self.dataset):
            if hasattr(target, "set_epoch"):
                target.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[list[Any]]:
        # A generator: its body runs at the pass's first batch, after Lightning has restored a checkpoint's progress
        # and set the epoch (it creates the iterator of a resumed run before either).
        skip = self.completed() if self.completed is not None else 0
        yield from itertools.islice(iter(self.batch_sampler), skip, None)

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ResumableLoader(DataLoader):
    """The training DataLoader: resumable mid-epoch through its :class:`EpochedBatchSampler` (``completed``), and so
    declared to Lightning by the ``state_dict`` / ``load_state_dict`` pair it looks for (without them it warns that a
    mid-epoch resume is unreliable). The state is recorded for the reader of a checkpoint; loading it changes nothing,
    since the sampler reads the restored progress from the trainer (Lightning 2.6 does not call ``load_state_dict`` on
    a loader built before the restore, as ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` does)."""

    def __iter__(self) -> Iterator[Any]:
        # Lazy: worker processes fetch their first indices from the sampler when the iterator is created, and
        # Lightning creates a resumed run's before it restores the progress and sets the epoch.
        yield from super().__iter__()

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        completed = sampler.completed() if sampler.completed is not None else 0
        return {"epoch": int(sampler.epoch), "batches": int(completed)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Nothing to restore: see the class docstring."""


def completed_batches(trainer: Any) -> int:
    """Training batches of the current epoch that ``trainer`` completed: 0 at an epoch's start, the restored count
    after a mid-epoch resume; 0 without a trainer."""
    if trainer is None:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)


def epoch_loader(dataset: Any, batches: Any, *, training: bool, trainer: Callable[[], Any],
                 **options: Any) -> DataLoader:
    """The DataLoader of a protrnn data module over ``batches`` (a batch sampler), wrapped in an
    :class:`EpochedBatchSampler`; for ``training`` a :class:`ResumableLoader` whose passes start at the batches
    ``trainer()`` (the module's trainer, attached after the loader is built) has completed in the epoch."""
    if training:
        sampler = EpochedBatchSampler(batches, dataset, completed=lambda: completed_batches(trainer()))
        return ResumableLoader(dataset, batch_sampler=sampler, **options)
    return DataLoader(dataset, batch_sampler=EpochedBatchSampler(batches, dataset), **options)


def config_int(key: str, value: object, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` of config key ``data.KEY`` checked to be an integer >= ``minimum`` (or null with ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"config key 'data.{key}': must be an integer >= {minimum}"
                         + (" or null" if allow_none else "") + f", got {value!r}")
    return value


def load_config_datasets(paths: dict[str, Path]) -> dict[str, Any]:
    """The datasets of config keys ``paths`` (``{"data.train_path": path, ...}``), each read and checked by
    :func:`~protrnn.data.dataset.load_dataset` (a file named twice is read once), as
    :class:`~protrnn.data.dataset.ChainDataset` by key. Read when the data module is built, before the trainer and
    its run directory exist: every problem (not an .npz archive, not a dataset, corrupt, no chains) is a one-line
    :class:`InputError` naming the file and the key, as a missing file is."""
    from protrnn.data.dataset import load_dataset

    loaded: dict[Path, Any] = {}
    out: dict[str, Any] = {}
    for key, path in paths.items():
        resolved = path.resolve()
        try:
            if resolved not in loaded:
                loaded[resolved] = load_dataset(path)
        except InputError as exc:
            raise InputError(f"config key {key!r}: {exc.reason}", path=exc.path, record=exc.record,
                             position=exc.position) from None
        if len(loaded[resolved]) == 0:
            raise InputError(f"config key {key!r}: the dataset holds no chains", path=path)
        out[key] = loaded[resolved]
    return out


def check_stored_cutoff(key: str, chains: Any, contact_cutoff: float) -> None:
    """The dataset of config key ``key`` was prepared at ``contact_cutoff`` (``data.contact_cutoff``): its labels would
    otherwise be computed at another cutoff than the one its file records (what ``protrnn prepare`` was given), and
    the run, its validation precision and the export would silently disagree with ``protrnn evaluate``, which scores
    at the stored one. A mismatch is a one-line :class:`InputError` naming the file, both values and the fix; a file
    that stores no cutoff (written before datasets recorded one) is trained at ``contact_cutoff``."""
    stored = chains.stored_contact_cutoff
    if stored is not None and stored != contact_cutoff:
        raise InputError(f"config key {key!r}: the dataset was prepared at contact cutoff {stored:g} Å, but "
                         f"data.contact_cutoff is {contact_cutoff:g} Å; train at the data's cutoff with "
                         f"--data.contact_cutoff {stored:g} (or prepare the data again with --contact-cutoff "
                         f"{contact_cutoff:g})", path=chains.path)


class ContactDataModule(pl.LightningDataModule):
    """Prepared ``train.npz`` / ``val.npz`` (``protrnn prepare``) -> batches of the batch contract.

    Args:
        train_path, val_path: datasets written by ``protrnn prepare`` (:func:`protrnn.data.dataset.save_dataset`),
            read and checked here, when the module is built (:func:`load_config_datasets`; ``chains`` holds them).
        crop_length: training chains longer than this are randomly cropped to it each epoch (>= 7, so a crop holds a
            pair at the minimum scored separation 6; ``null`` = never crop): the window the encoder reads. With
            ``pair_block`` this is a long window (e.g. 512) and the pair head sees only the sampled blocks of it.
            Validation always uses whole chains.
        max_tokens: training token budget per batch (padded tokens B·T_max): the recurrent activation memory.
        max_pairs: training pair budget per batch, counted as the pairs the head scores with padding: B·T_max² for
            whole maps, B·K_max·(S + 2c)² with pair blocks (S = min(pair_block, T_max), K_max = blocks_per_chain
            when a crop is longer than pair_block, else 1; c = block_context): the 2D head memory; null = none.
        pair_block: side of the square pair blocks the head is trained on (>= 7; null = score every pair of each
            crop, as before). Each training crop longer than ``pair_block`` gives ``blocks_per_chain`` blocks: the
            diagonal block and off-diagonal blocks at log-uniform offsets up to the crop length
            (:func:`protrnn.data.batching.sample_pair_blocks`); shorter crops are scored whole. Validation always
            scores every pair.
        blocks_per_chain: pair blocks per training crop (>= 1) when ``pair_block`` is set.
        block_context: residues of context the head computes around each training block (>= 0, default 0) so that
            its 2D convolutions see the map beyond the block as at evaluation; the loss still scores the block
            alone. The head's cost and ``max_pairs``' count grow by ``((pair_block + 2 c) / pair_block)**2``;
            context beyond the head's receptive field (``halo``: 36 for the bundled model) is not computed.
        val_max_tokens / val_max_pairs: the same budgets for whole-chain validation batches (default: the training
            budgets, and ``max_pairs`` is raised to fit the longest single chain).
        num_workers: DataLoader worker processes (0 = load in the training process; best on 2 CPU cores).
        seed: seed for crops and batch shuffling (per epoch: seed + epoch), independent of the model seed.
        contact_cutoff: Cβ-Cβ distance (Å) below which a pair is a contact: the cutoff stored with both datasets
            (the cutoff ``protrnn prepare`` was given), or a mismatch is refused here (:func:`check_stored_cutoff`).
    """

    def __init__(self, train_path: str | Path, val_path: str | Path, crop_length: int | None = 128,
                 max_tokens: int = 4096, max_pairs: int | None = None, val_max_tokens: int | None = None,
                 val_max_pairs: int | None = None, num_workers: int = 0, seed: int = 0,
                 contact_cutoff: float = DEFAULT_CONTACT_CUTOFF, pair_block: int | None = None,
                 blocks_per_chain: int = 4, block_context: int = 0) -> None:
        super().__init__()
        self.train_path = Path(train_path)
        self.val_path = Path(val_path)
        self.crop_length = config_int("crop_length", crop_length, minimum=MIN_SEPARATION + 1,
                                         allow_none=True)
        self.max_tokens = config_int("max_tokens", max_tokens)
        self.max_pairs = config_int("max_pairs", max_pairs, allow_none=True)
        self.val_max_tokens = config_int("val_max_tokens", val_max_tokens, allow_none=True)
        self.val_max_pairs = config_int("val_max_pairs", val_max_pairs, allow_none=True)
        self.num_workers = config_int("num_workers", num_workers, minimum=0)
        self.pair_block = config_int("pair_block", pair_block, minimum=MIN_SEPARATION + 1, allow_none=True)
        self.blocks_per_chain = config_int("blocks_per_chain", blocks_per_chain)
        self.block_context = config_int("block_context", block_context, minimum=0)
        self.seed = config_int("seed", seed, minimum=0)
        self.contact_cutoff = check_contact_cutoff(contact_cutoff, "config key 'data.contact_cutoff'")
        for key, path in (("train_path", self.train_path), ("val_path", self.val_path)):
            if not path.exists():  # a directory is named as one by load_config_datasets, with its .npz files
                raise InputError(f"config key 'data.{key}': dataset file not found (make one with protrnn prepare)",
                                 path=path)
        self.save_hyperparameters()
        self.chains = load_config_datasets({"data.train_path": self.train_path, "data.val_path": self.val_path})
        for key, chains in self.chains.items():
            check_stored_cutoff(key, chains, self.contact_cutoff)
        self.train_set: Any = None
        self.val_set: Any = None

    def setup(self, stage: str | None = None) -> None:
        from protrnn.data.batching import ContactExampleDataset

        if self.train_set is None and stage in (None, "fit"):
            chains = self.chains["data.train_path"]
            self.train_set = ContactExampleDataset(chains, crop_length=self.crop_length, random_crop=True,
                                                   seed=self.seed, cutoff=self.contact_cutoff,
                                                   pair_block=self.pair_block, blocks_per_chain=self.blocks_per_chain,
                                                   block_context=self.block_context)
        if self.val_set is None and stage in (None, "fit", "validate"):
            chains = self.chains["data.val_path"]
            self.val_set = ContactExampleDataset(chains, crop_length=None, random_crop=False, seed=self.seed,
                                                 cutoff=self.contact_cutoff)

    def _distributed(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _loader(self, dataset: Any, lengths: Sequence[int], max_tokens: int, max_pairs: int | None,
                shuffle: bool, pair_costs: Sequence[int] | None = None) -> DataLoader:
        from protrnn.data.batching import TokenBudgetBatchSampler, collate_contacts

        replicas, rank = self._distributed()
        # yield_epoch: every index travels with its epoch, so crops follow the epoch even inside worker processes.
        batches = TokenBudgetBatchSampler(list(lengths), max_tokens=max_tokens, max_pairs=max_pairs, shuffle=shuffle,
                                          seed=self.seed, num_replicas=replicas, rank=rank, drop_last=False,
                                          yield_epoch=shuffle, pair_costs=pair_costs)
        return epoch_loader(dataset, batches, training=shuffle, trainer=lambda: self.trainer,
                            collate_fn=collate_contacts, num_workers=self.num_workers, persistent_workers=False,
                            pin_memory=self._on_cuda())

    def _on_cuda(self) -> bool:
        from pytorch_lightning.accelerators import CUDAAccelerator

        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        # pair_costs: with pair blocks the head scores K·S² pairs per crop, not L²; budget what it actually holds.
        pair_costs = self.train_set.pair_costs.tolist() if self.pair_block is not None else None
        return self._loader(self.train_set, self.train_set.lengths.tolist(), self.max_tokens, self.max_pairs,
                            shuffle=True, pair_costs=pair_costs)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        lengths = self.val_set.lengths.tolist()
        longest = max(lengths)
        max_tokens = max(self.val_max_tokens or self.max_tokens, longest)
        max_pairs = self.val_max_pairs or self.max_pairs
        if max_pairs is not None:
            max_pairs = max(max_pairs, longest * longest)
        return self._loader(self.val_set, lengths, max_tokens, max_pairs, shuffle=False)
