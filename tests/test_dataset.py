"""Compact dataset files: exact round trip, lazy read-only views, corrupt files rejected."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import ChainDataset, load_dataset, save_dataset
from protrnn.errors import InputError


@pytest.fixture(scope="module")
def cgdms_chains(shared_data: Path) -> list[ProteinChain]:
    from protrnn.data.sources import iter_chains

    outcomes = list(iter_chains(shared_data / "cgdms" / "cgdms_train_val.tar.gz"))
    assert all(o.ok for o in outcomes)
    return [o.chain for o in outcomes]


def _with_gap(chain: ProteinChain, start: int, stop: int) -> ProteinChain:
    """The same chain with residues start:stop unobserved (NaN coordinates), as a reader gives for missing residues."""
    observed = chain.observed.copy()
    coords = chain.coords.copy()
    observed[start:stop] = False
    coords[start:stop] = np.nan
    return ProteinChain(chain.id + "_gap", chain.sequence, observed, coords, source="synthetic gap",
                        meta={"note": "gap", "n": np.int64(stop - start)})


def _assert_same(a: ProteinChain, b: ProteinChain) -> None:
    assert a.id == b.id and a.sequence == b.sequence and a.source == b.source
    np.testing.assert_array_equal(a.observed, b.observed)
    np.testing.assert_array_equal(a.coords, b.coords)  # NaN == NaN for assert_array_equal
    assert a.coords.dtype == np.float32


def test_round_trip_is_exact(tmp_path: Path, cgdms_chains: list[ProteinChain]) -> None:
    chains = cgdms_chains[:50] + [_with_gap(cgdms_chains[0], 5, 12)]
    path = save_dataset(chains, tmp_path / "d.npz", info={"purpose": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # no temporary left behind
    dataset = load_dataset(path)
    assert isinstance(dataset, ChainDataset) and len(dataset) == len(chains)
    assert dataset.ids == [c.id for c in chains]
    np.testing.assert_array_equal(dataset.lengths, [len(c) for c in chains])
    for original, loaded in zip(chains, dataset, strict=True):
        _assert_same(original, loaded)
    assert dataset[-1].meta == {"note": "gap", "n": 7}
    assert dataset[0].meta["split_hint"] in ("train", "val")
    assert dataset.metadata["info"] == {"purpose": "test"} and dataset.contact_cutoff == 8.0
    # contact maps are computed on access and agree with the source chain, unobserved rows included
    np.testing.assert_array_equal(dataset[-1].contact_map(), chains[-1].contact_map())
    assert not dataset[-1].contact_map()[5:12].any()
    with zipfile.ZipFile(path) as archive:  # uncompressed, so np.load reads it without inflating
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_views_are_read_only_and_subsets_independent(tmp_path: Path, cgdms_chains: list[ProteinChain]) -> None:
    dataset = load_dataset(save_dataset(cgdms_chains[:20], tmp_path / "d.npz"))
    chain = dataset[3]
    with pytest.raises(ValueError):
        chain.coords[0, 0, 0] = 1.0
    tokens = dataset.tokens(3)
    assert tokens.dtype == np.uint8 and len(tokens) == len(chain) and tokens.min() >= 2
    sub = dataset[2:5]
    assert isinstance(sub, ChainDataset) and sub.ids == dataset.ids[2:5]
    picked = dataset.subset([7, 1])
    _assert_same(picked[0], dataset[7])
    _assert_same(load_dataset(save_dataset(picked, tmp_path / "sub.npz"))[1], dataset[1])
    assert dataset.index_of(dataset.ids[9]) == 9
    with pytest.raises(IndexError):
        dataset[20]


def test_empty_dataset_round_trip(tmp_path: Path) -> None:
    dataset = load_dataset(save_dataset([], tmp_path / "empty.npz"))
    assert len(dataset) == 0 and dataset.lengths.shape == (0,) and list(dataset) == []


def test_duplicate_ids_rejected(tmp_path: Path, cgdms_chains: list[ProteinChain]) -> None:
    with pytest.raises(InputError, match="duplicate chain ID"):
        save_dataset([cgdms_chains[0], cgdms_chains[0]], tmp_path / "d.npz")
    assert not (tmp_path / "d.npz").exists()


def test_bad_files_give_one_line_errors(tmp_path: Path, cgdms_chains: list[ProteinChain]) -> None:
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(InputError, match=r"not a dataset file: not an \.npz \(zip\) archive; it starts with b'not '"):
        load_dataset(text)
    fasta = tmp_path / "seqs.fa"  # a FASTA given where a prepared set belongs: no word about pickles
    fasta.write_text(">a\nACDE\n")
    with pytest.raises(InputError, match=r"seqs\.fa: not a dataset file: not an \.npz") as info:
        load_dataset(fasta)
    assert "pickle" not in str(info.value)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(save_dataset(cgdms_chains[:3], tmp_path / "whole.npz").read_bytes()[:200])
    with pytest.raises(InputError, match="cannot read dataset"):  # a zip header, then nothing
        load_dataset(truncated)
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="missing"):
        load_dataset(other)
    pickled = tmp_path / "pickled.npz"
    good = dict(np.load(save_dataset(cgdms_chains[:3], tmp_path / "good.npz")))
    np.savez(pickled, **{**good, "ids": np.array([{"evil": 1}] * 3, dtype=object)})
    with pytest.raises(InputError) as info:
        load_dataset(pickled)
    assert "\n" not in str(info.value) and "pickled.npz" in str(info.value)
    corrupt = tmp_path / "corrupt.npz"
    np.savez(corrupt, **{**good, "offsets": good["offsets"][::-1].copy()})
    with pytest.raises(InputError, match="corrupt dataset"):
        load_dataset(corrupt)
    other_format = tmp_path / "other_format.npz"
    meta = {"format": "protrnn-structure-labels", "format_version": 1}
    np.savez(other_format, **{**good, "metadata": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})
    with pytest.raises(InputError,
                       match=r"not a dataset file \(format 'protrnn-structure-labels', expected 'protrnn-dataset'\)"):
        load_dataset(other_format)
    newer = tmp_path / "newer.npz"
    meta = {"format": "protrnn-dataset", "format_version": 7}
    np.savez(newer, **{**good, "metadata": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})
    with pytest.raises(InputError, match=r"unsupported format_version 7 of a dataset file \(this version reads 1\.\.1\)"):
        load_dataset(newer)
    broken = tmp_path / "broken.npz"
    text = b'{"format": "protrnn-dataset", "format_version": 1,}'  # JSON expects a key at offset 50, the "}"
    np.savez(broken, **{**good, "metadata": np.frombuffer(text, dtype=np.uint8)})
    with pytest.raises(InputError, match=r"broken\.npz \(metadata\): not a dataset file: not valid JSON \(.* at line "
                                         r"1, column 51\)"):
        load_dataset(broken)


def test_ten_thousand_chains_round_trip(tmp_path: Path, cgdms_chains: list[ProteinChain]) -> None:
    """A 10,000-chain file reads back whole (its load time is in benchmarks/bench_data.py and bench_timing.py)."""
    chains = [ProteinChain(f"{c.id}~{k}", c.sequence, c.observed, c.coords, c.source, c.meta)
              for k in range(5) for c in cgdms_chains][:10_000]
    path = save_dataset(chains, tmp_path / "big.npz")
    dataset = load_dataset(path)
    assert len(dataset) == 10_000 and int(dataset.lengths.sum()) == sum(len(c) for c in chains)
    assert dataset.lengths.tolist() == [len(c) for c in chains]
    _assert_same(dataset[len(dataset) - 1], chains[-1])
    _assert_same(dataset[5_000], chains[5_000])
