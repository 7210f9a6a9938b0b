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


def test_content_digest_of_a_file_that_is_no_npz_archive_says_so(tmp_path: Path) -> None:
    """content_sha256 (a training run's identity) checks the archive as load_dataset does: a text file was
    "pickled (object) data" to np.load."""
    from protrnn.data.dataset import content_sha256

    text = tmp_path / "fake.npz"
    text.write_text("hello\n")
    with pytest.raises(InputError) as info:
        content_sha256(text)
    assert str(info.value) == f"{text}: not an .npz (zip) archive; it starts with b'hell'"


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
    # a prepare output folder given where one of its files belongs: named as a directory, with the files to give
    # (tmp_path holds text.npz, truncated.npz and whole.npz by now); an empty folder is a directory too, not "not found"
    with pytest.raises(InputError, match="is a directory, not a dataset file; give one of its .npz files: "
                                         r"text\.npz, truncated\.npz, whole\.npz$"):
        load_dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: is a directory, not a dataset file$"):
        load_dataset(tmp_path / "empty")
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


def _toy_chains() -> list[ProteinChain]:
    """Three small synthetic chains (no real data needed): lengths 7, 9 and 5."""
    rng = np.random.default_rng(0)
    chains = []
    for name, length in (("c1", 7), ("c2", 9), ("c3", 5)):
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))
        coords = rng.normal(size=(length, 4, 3)).astype(np.float32)
        chains.append(ProteinChain(name, sequence, np.ones(length, dtype=bool), coords, source=f"{name}.pdb",
                                   meta={"k": length}))
    return chains


def _tampered(tmp_path: Path, name: str, **arrays: np.ndarray) -> Path:
    """A copy of a valid toy dataset with ``arrays`` replaced (as a hand-edited or foreign file holds them)."""
    good = dict(np.load(save_dataset(_toy_chains(), tmp_path / "good.npz")))
    path = tmp_path / name
    np.savez(path, **{**good, **arrays})
    return path


def _load_fully(path: Path) -> list[ProteinChain]:
    """Load and build every chain (meta included): where lazily decoded contents fail."""
    return list(load_dataset(path))


def _sequence_bytes_with(position: int, byte: int) -> np.ndarray:
    """The toy set's sequence bytes with residue ``position`` (0-based over the whole file) set to ``byte``."""
    raw = np.frombuffer("".join(c.sequence for c in _toy_chains()).encode("ascii"), dtype=np.uint8).copy()
    raw[position] = byte
    return raw


def _coords_with(position: int, value: float) -> np.ndarray:
    """The toy set's coordinates with residue ``position``'s (0-based over the whole file) Cβ x set to ``value``."""
    coords = np.concatenate([c.coords for c in _toy_chains()]).copy()
    coords[position, 3, 0] = value
    return coords


# chain c2 holds residues 7..15 of the file: residue 7 + 4 = 11 is c2's 5th letter
@pytest.mark.parametrize(("name", "arrays", "expected"), [
    ("nonascii.npz", {"sequences": _sequence_bytes_with(11, 0xFF)},
     r"nonascii\.npz, record 'c2', position 5: invalid residue byte 0xff \(not ASCII\)"),
    ("hash.npz", {"sequences": _sequence_bytes_with(11, ord("#"))},
     r"hash\.npz, record 'c2', position 5: invalid residue letter '#'"),
    ("gap.npz", {"sequences": _sequence_bytes_with(0, ord("-"))},
     r"gap\.npz, record 'c1', position 1: invalid residue letter '-' \(an alignment gap"),
    ("last.npz", {"sequences": _sequence_bytes_with(20, 0)},  # c3 holds 16..20: its 5th and last letter
     r"last\.npz, record 'c3', position 5: invalid residue letter \\x00"),
    ("metajson.npz", {"chain_meta": np.frombuffer(b"{not json", dtype=np.uint8)},
     r"metajson\.npz \(chain_meta\): not a list of per-chain meta objects: not valid JSON \(.* at line 1, "
     r"column 2\)"),
    ("metalist.npz", {"chain_meta": np.frombuffer(b'[{}, 2, {}]', dtype=np.uint8)},
     r"metalist\.npz, record 'c2': chain_meta entry #2 is int, not an object"),
    ("meta2d.npz", {"chain_meta": np.array([[1.5]])},
     r"meta2d\.npz: corrupt dataset: chain_meta is not JSON text"),
    ("offsets0d.npz", {"offsets": np.array(5)},
     r"offsets0d\.npz: corrupt dataset: offsets are not 4 integers, one more than the 3 chains \(int64 \(\)\)"),
    ("offsetsfloat.npz", {"offsets": np.array([0.0, 7.0, 16.0, 21.0])},
     r"offsetsfloat\.npz: corrupt dataset: offsets are not 4 integers"),
    ("ids0d.npz", {"ids": np.array("c1")},
     r"ids0d\.npz: corrupt dataset: ids/sources are not unicode arrays of one entry per chain"),
    ("ids2d.npz", {"ids": np.array([["c1"], ["c2"], ["c3"]])},
     r"ids2d\.npz: corrupt dataset: ids/sources are not unicode arrays of one entry per chain"),
    ("dupids.npz", {"ids": np.array(["c1", "c3", "c3"])},
     r"dupids\.npz, record 'c3': duplicate chain ID \(chains #2 and #3\)"),
    ("emptyid.npz", {"ids": np.array(["c1", "", "c3"])},
     r"emptyid\.npz: chain #2 has an empty ID"),
    ("infcb.npz", {"coords": _coords_with(12, np.inf)},  # c2's 6th residue
     r"infcb\.npz, record 'c2', position 6: observed residue with a non-finite Cb coordinate"),
])
def test_bad_contents_are_one_line_errors_naming_file_and_chain(tmp_path: Path, name: str,
                                                                 arrays: dict[str, np.ndarray],
                                                                 expected: str) -> None:
    """Contents, not just shapes: bytes that are not residue letters, chain_meta that is not a list of objects,
    arrays of the wrong rank or kind and duplicate IDs are each one line naming the file, the chain ID and the
    position where there is one (they were a UnicodeDecodeError, JSONDecodeError, TypeError or IndexError
    traceback, or, for 2-D IDs, float offsets and duplicate IDs, no error at all)."""
    path = _tampered(tmp_path, name, **arrays)
    with pytest.raises(InputError, match=expected) as info:
        _load_fully(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_lower_case_and_ambiguity_letters_still_load(tmp_path: Path) -> None:
    """The letter check accepts every letter the model alphabet reads one for one (lower case, X, B, Z, J, U, O),
    and refuses the stop '*' that save_dataset had written before (so prepare can never write what load refuses)."""
    path = _tampered(tmp_path, "letters.npz", sequences=np.frombuffer(b"acdXBZJ" + b"UOefghikl" + b"MNPQR",
                                                                      dtype=np.uint8))
    assert [c.sequence for c in _load_fully(path)] == ["acdXBZJ", "UOefghikl", "MNPQR"]
    chains = _toy_chains()
    chains[2] = ProteinChain("c3", "MNPQ*", chains[2].observed, chains[2].coords)
    with pytest.raises(InputError, match=r"stop\.npz, record 'c3', position 5: invalid residue letter '\*'"):
        save_dataset(chains, tmp_path / "stop.npz")
    assert not (tmp_path / "stop.npz").exists()


def test_a_damaged_compressed_entry_is_one_line(tmp_path: Path) -> None:
    """A dataset saved with np.savez_compressed whose deflate data is damaged raised zlib.error (a traceback);
    zipfile's own checks only catch a wrong CRC after a stream that decompressed."""
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **dict(np.load(save_dataset(_toy_chains(), tmp_path / "good.npz"))))
    raw = bytearray(path.read_bytes())
    header = zipfile.ZipFile(path).getinfo("coords.npy").header_offset
    name_length, extra_length = (int.from_bytes(raw[header + k:header + k + 2], "little") for k in (26, 28))
    raw[header + 30 + name_length + extra_length] = 0x07  # first deflate block: final, reserved type 3
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"compressed\.npz: cannot read dataset file \(error: .*invalid block type"):
        load_dataset(path)
