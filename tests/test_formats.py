"""JSON / JSONL / cgdms / bioemu readers and the iter_chains dispatcher, on the real files in ../shared/data."""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from protrnn.data import sources
from protrnn.data.chain import virtual_cb
from protrnn.data.formats import (
    chain_from_cath_record,
    chain_from_perchain_record,
    iter_bioemu_wheel,
    iter_cgdms,
    iter_json_chains,
    parse_cgdms_text,
)
from protrnn.data.sources import LoadOutcome, default_sources, fetch_wheel, iter_chains
from protrnn.errors import InputError

CGDMS_TAR = "cgdms/cgdms_train_val.tar.gz"


def _first_jsonl_records(path: Path, n: int) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


# ------------------------------------------------------------------------------------------------------ CATH / TS50
def test_ts50_json_list(shared_data: Path) -> None:
    chains = list(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"))
    assert len(chains) == 50
    assert {len(c) for c in chains} <= set(range(79, 174))
    raw = json.loads(gzip.decompress((shared_data / "ts50_gvp" / "ts50.json.gz").read_bytes()))
    first, record = chains[0], raw[0]
    assert first.id == record["name"] and first.sequence == record["seq"] and first.observed.all()
    xyz = np.array(record["coords"], dtype=np.float64)
    np.testing.assert_allclose(first.coords[:, :3], xyz[:, :3], atol=1e-3)  # N, CA, C; O is dropped
    glycine = np.array([a == "G" for a in first.sequence])
    np.testing.assert_allclose(first.coords[glycine, 3], xyz[glycine, 1], atol=1e-3)
    np.testing.assert_allclose(first.coords[~glycine, 3], virtual_cb(*(xyz[~glycine, k] for k in range(3))),
                               atol=1e-3)


def test_cath_dict_coords_with_nan_and_null() -> None:
    nan = math.nan
    n = [[0.0, 1.0, 0.0], [3.8, 1.0, 0.0], [7.6, 1.0, 0.0]]
    ca = [[1.0, 0.0, 0.0], None, [8.6, 0.0, 0.0]]
    c = [[2.0, 0.5, 0.0], [5.8, 0.5, 0.0], [nan, nan, nan]]
    record = {"name": "1abc.A", "seq": "AGK", "coords": {"N": n, "CA": ca, "C": c, "O": n}}
    chain = chain_from_cath_record(record, path="chain_set.jsonl")
    assert chain.observed.tolist() == [True, False, False]  # residue 2 has no CA, residue 3 no C (no CB, not Gly)
    assert chain.source == "chain_set.jsonl#1abc.A"


def test_cath_jsonl_file_and_length_mismatch(tmp_path: Path) -> None:
    good = {"name": "a", "seq": "GG", "coords": {k: [[0.0, 0.0, 0.0], [3.8, 0.0, 0.0]] for k in ("N", "CA", "C", "O")}}
    bad = {"name": "b", "seq": "GGG", "coords": {k: [[0.0, 0.0, 0.0]] * 2 for k in ("N", "CA", "C", "O")}}
    path = tmp_path / "chain_set.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{not json\n")
    items = list(iter_json_chains(path, errors="yield"))
    assert items[0].id == "a"
    assert isinstance(items[1], InputError) and str(items[1]) == (
        f"{path}, record 'b': coords['N'] has 2 residues but seq has 3")
    assert isinstance(items[2], InputError) and "record 'line 3': invalid JSON" in str(items[2])
    with pytest.raises(InputError, match="record 'b'"):
        list(iter_json_chains(path))


def test_list_coords_length_mismatch_names_file_record_and_lengths(tmp_path: Path) -> None:
    record = {"name": "x", "seq": "AAAA", "coords": [[[0.0, 0.0, 0.0]] * 4] * 3}
    path = tmp_path / "ts.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(InputError) as info:
        list(iter_json_chains(path))
    assert str(info.value) == f"{path}, record 'x': coords have 3 residues but seq has 4"


def test_truncated_json(tmp_path: Path) -> None:
    path = tmp_path / "ts.json"
    path.write_text('[{"name": "x", "seq": "AA", "coo')
    with pytest.raises(InputError, match=r"ts\.json: invalid or truncated JSON"):
        list(iter_json_chains(path))


# ------------------------------------------------------------------------------------------------------ per-chain JSONL
@pytest.mark.parametrize("folder", ["db55_dips_equidock", "abag_docking_benchmark", "bioemu_benchmarks_pypi",
                                    "rosetta_demos_pdbentries"])
def test_perchain_jsonl_records(shared_data: Path, folder: str) -> None:
    path = shared_data / folder / f"{folder}_chains.jsonl.gz"
    records = _first_jsonl_records(path, 25)
    for record in records:
        chain = chain_from_perchain_record(record, path=path)
        observed = "".join(np.array(list(chain.sequence))[chain.observed])
        assert chain.id == record["id"]
        # every residue of the record with a CA is kept and observed (numbering gaps add unobserved 'X's)
        ca = record["atoms"].index("CA")
        with_ca = [res[ca] is not None and all(v is not None and math.isfinite(v) for v in res[ca])
                   for res in record["coords"]]
        assert int(chain.observed.sum()) == sum(with_ca) > 0
        assert observed == "".join(aa for aa, keep in zip(record["seq"], with_ca, strict=True) if keep)
        assert chain.meta["numbering"][np.flatnonzero(chain.observed)[0]] in record["resnum"]


def test_perchain_numbering_gaps_become_masked_residues(shared_data: Path) -> None:
    """Records with CA-CA breaks keep author numbering: across a physical gap, separation = numbering difference."""
    path = shared_data / "db55_dips_equidock" / "db55_dips_equidock_chains.jsonl.gz"
    with_gaps = 0
    with gzip.open(path, "rt") as handle:
        for line in handle:
            record = json.loads(line)
            resnum = record["resnum"]
            if record["ca_breaks_gt4.2A"] == 0 or any(not r.lstrip("-").isdigit() for r in resnum):
                continue
            chain = chain_from_perchain_record(record, path=path)
            index = np.flatnonzero([bool(n) for n in chain.meta["numbering"]])
            assert [chain.meta["numbering"][k] for k in index] == resnum, "every residue kept, in order"
            steps, jumps = np.diff(index), np.diff([int(r) for r in resnum])
            assert np.all((steps == 1) | (steps == jumps)), record["id"]
            if (steps > 1).any():
                assert (~chain.observed[[k for k in range(len(chain)) if not chain.meta["numbering"][k]]]).all()
                with_gaps += 1
            if with_gaps == 5:
                break
    assert with_gaps == 5


def test_whole_perchain_file_loads(shared_data: Path) -> None:
    chains = list(iter_json_chains(shared_data / "rosetta_demos_pdbentries" / "rosetta_demos_pdbentries_chains.jsonl.gz"))
    assert len(chains) == 127 and all(c.observed.sum() >= 40 for c in chains)


# ------------------------------------------------------------------------------------------------------ cgdms
def test_cgdms_tarball_counts_and_splits(shared_data: Path) -> None:
    chains = list(iter_cgdms(shared_data / CGDMS_TAR))
    assert len(chains) == 2204
    assert Counter(c.meta["split_hint"] for c in chains) == {"train": 2004, "val": 200}
    assert min(map(len, chains)) == 20 and max(map(len, chains)) == 100
    assert all(c.observed.all() for c in chains)


def test_cgdms_centroid_is_not_used_as_cb(extracted: Callable[[str], Path]) -> None:
    root = extracted(CGDMS_TAR)
    path = sorted((root / "protein_data" / "train_val").glob("*.txt"))[0]
    chain = parse_cgdms_text(path.read_text(), path.stem, source=str(path))
    values = np.loadtxt(path, skiprows=2).reshape(-1, 4, 3)
    np.testing.assert_allclose(chain.coords[:, :3], values[:, :3], atol=1e-4)
    not_gly = np.array([a != "G" for a in chain.sequence])
    np.testing.assert_allclose(chain.coords[not_gly, 3], virtual_cb(*(values[not_gly, k] for k in range(3))),
                               atol=1e-3)
    assert np.linalg.norm(chain.coords[not_gly, 3] - values[not_gly, 3], axis=1).mean() > 0.5


def test_cgdms_directory_matches_tarball(extracted: Callable[[str], Path], shared_data: Path) -> None:
    from_dir = {c.id: c for c in iter_cgdms(extracted(CGDMS_TAR))}
    from_tar = {c.id: c for c in iter_cgdms(shared_data / CGDMS_TAR)}
    assert len(from_dir) == 2204 and from_tar.keys() == from_dir.keys()
    for chain_id, chain in from_dir.items():
        other = from_tar[chain_id]
        assert other.sequence == chain.sequence and other.meta == chain.meta, chain_id
        np.testing.assert_array_equal(other.coords, chain.coords)
    assert Counter(c.meta["split_hint"] for c in from_dir.values()) == {"train": 2004, "val": 200}


def test_cgdms_wheel_read_without_extracting(cgdms_wheel: Path) -> None:
    outcomes = list(iter_chains(cgdms_wheel))
    assert len(outcomes) == 2204 and all(o.ok for o in outcomes)
    assert Counter(o.chain.meta["split_hint"] for o in outcomes) == {"train": 2004, "val": 200}
    assert outcomes[0].source.startswith(f"{cgdms_wheel}#cgdms/protein_data/train_val/")


def test_bad_cgdms_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="2 coordinate lines but sequence has 3 residues"):
        parse_cgdms_text("AGK\nHHH\n" + "0 " * 12 + "\n" + "0 " * 12 + "\n", "x", source="x.txt")
    with pytest.raises(InputError, match="12 numbers"):
        parse_cgdms_text("AG\nHH\n" + "0 " * 12 + "\n" + "0 " * 11 + "\n", "x", source="x.txt")
    with pytest.raises(InputError, match="truncated cgdms file"):
        parse_cgdms_text("AG\n", "x", source="x.txt")


# ---- the input bound (MAX_INPUT_BYTES) on every read of a chain file: a directory's, an archive member's ----------
BOUND = 1000  # bytes: the test's MAX_INPUT_BYTES


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import protrnn.data.structure as structure

    monkeypatch.setattr(structure, "MAX_INPUT_BYTES", BOUND)


def _cgdms_bytes(length: int) -> bytes:
    """A valid cgdms chain file of ``length`` residues (~85 bytes a residue)."""
    rows = [" ".join(f"{3.8 * k + 0.5 * atom:.3f}" for atom in range(12)) for k in range(length)]
    return ("\n".join(["A" * length, "C" * length, *rows]) + "\n").encode()


def _one_line(item: object, start: str) -> None:
    """``item`` is a one-line InputError whose message starts with ``start`` (the file or member, then the reason)."""
    assert isinstance(item, InputError), item
    assert "\n" not in str(item) and str(item).startswith(start), str(item)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cgdms_directory_files_are_read_within_the_bound(tmp_path: Path, small_bound: None) -> None:
    """A cgdms data directory's chain files and split lists were read whole (Path.read_bytes / read_text)."""
    folder = tmp_path / "cgdms" / "protein_data" / "train_val"
    folder.mkdir(parents=True)
    (folder / "small.txt").write_bytes(_cgdms_bytes(3))
    (folder / "big.txt").write_bytes(_cgdms_bytes(20))
    assert (folder / "big.txt").stat().st_size > BOUND
    big, small = iter_cgdms(tmp_path / "cgdms", errors="yield")
    _one_line(big, f"{folder / 'big.txt'}: file larger than ")
    assert small.id == "small" and len(small) == 3
    lists = tmp_path / "cgdms" / "datasets"
    lists.mkdir()
    (lists / "train.txt").write_text("small\n" * 200)  # 1,200 bytes
    with pytest.raises(InputError) as caught:
        list(iter_cgdms(tmp_path / "cgdms", errors="yield"))
    _one_line(caught.value, f"{lists / 'train.txt'}: file larger than ")


def test_tar_members_are_read_within_the_bound(tmp_path: Path, small_bound: None) -> None:
    """A plain (not gzipped) tar member was read whole by handle.read() before gunzip_if_needed bounded anything."""
    path = _tar(tmp_path / "chains.tar", {"x/small.txt": _cgdms_bytes(3), "x/big.txt": _cgdms_bytes(20)})
    small, big = iter_chains(path)
    assert small.ok and small.chain.id == "small"
    assert not big.ok and big.source == f"{path}#x/big.txt"
    assert big.error.startswith(f"{path}#x/big.txt: archive member larger than ") and "\n" not in big.error
    # The cgdms tarball reader (protein_data/train_val members) bounds its members the same way.
    cgdms = _tar(tmp_path / "cgdms.tar", {"protein_data/train_val/big.txt": _cgdms_bytes(20),
                                          "protein_data/train_val/small.txt": _cgdms_bytes(3)})
    big_item, small_item = iter_cgdms(cgdms, errors="yield")
    _one_line(big_item, f"{cgdms}#protein_data/train_val/big.txt: archive member larger than ")
    assert small_item.id == "small"
    # A member's declared size is checked before anything is read.
    from protrnn.data.structure import read_bounded

    class Unread(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("read past a declared size over the bound")

    with pytest.raises(InputError, match=r"^a\.tar#m\.pdb: archive member larger than "):
        read_bounded(Unread(), "a.tar#m.pdb", size=BOUND + 1, what="archive member")


def test_zip_members_are_read_within_the_bound(tmp_path: Path, small_bound: None) -> None:
    """Wheel members (cgdms chain files, bioemu reference PDBs) were read whole by ZipFile.read."""
    wheel = tmp_path / "cgdms-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cgdms/protein_data/train_val/big.txt", _cgdms_bytes(20))
        archive.writestr("cgdms/protein_data/train_val/small.txt", _cgdms_bytes(3))
    big, small = iter_cgdms(wheel, errors="yield")
    _one_line(big, f"{wheel}#cgdms/protein_data/train_val/big.txt: archive member larger than ")
    assert small.id == "small"
    member = ("bioemu_benchmarks/assets/folding_free_energies_benchmark_x/folding_free_energies/"
              "reference_wildtypes/1ABC_A.pdb")
    bioemu = tmp_path / "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl"
    with zipfile.ZipFile(bioemu, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, b"REMARK\n" * 200)  # 1,400 bytes inflated
    (item,) = iter_bioemu_wheel(bioemu, errors="yield")
    _one_line(item, f"{bioemu}#{member}: archive member larger than ")


# ------------------------------------------------------------------------------------------------------ bioemu wheel
def test_bioemu_wheel_reference_structures(bioemu_wheel: Path, shared_data: Path) -> None:
    items = list(iter_bioemu_wheel(bioemu_wheel, errors="yield"))
    errors = [i for i in items if isinstance(i, InputError)]
    chains = [i for i in items if not isinstance(i, InputError)]
    excluded = [e for e in errors if "excluded" in str(e)]
    duplicates = [e for e in errors if "duplicate" in str(e)]
    assert len(items) == 289 and len(excluded) == 3 and len(duplicates) + len(excluded) == len(errors)
    # 274 distinct <PDB>_<chain> files, 3 of them excluded: each PDB chain is read once
    assert len(chains) == 271 and len(duplicates) == 15
    stems = [c.id.split("|")[1].rsplit("/", 1)[-1] for c in chains]
    assert len(set(stems)) == len(stems)
    observed = {"".join(np.array(list(c.sequence))[c.observed]) for c in chains}
    with gzip.open(shared_data / "bioemu_benchmarks_pypi" / "bioemu_benchmarks_pypi_chains.jsonl.gz", "rt") as handle:
        staged = {json.loads(line)["seq"] for line in handle}
    assert staged <= observed, "every curated chain is read identically from the wheel"
    assert max(map(len, chains)) == 985
    assert len({c.id for c in chains}) == len(chains)


# ------------------------------------------------------------------------------------------------------ dispatcher
def test_iter_chains_directory_with_mixed_inputs(extracted: Callable[[str], Path], tmp_path: Path,
                                                 shared_data: Path) -> None:
    org = extracted("psicov150_gremlin_rf/psicov150_org_pdb.tar.gz") / "psicov150" / "org_pdb"
    folder = tmp_path / "inputs"
    (folder / "nested").mkdir(parents=True)
    (folder / "1a3a.pdb").write_bytes((org / "1a3a.pdb").read_bytes())
    (folder / "nested" / "1dbx.pdb.gz").write_bytes(gzip.compress((org / "1dbx.pdb").read_bytes()))
    (folder / "nested" / "ts50.json.gz").write_bytes((shared_data / "ts50_gvp" / "ts50.json.gz").read_bytes())
    (folder / "broken.pdb").write_bytes(b"\x00\x01binary")
    (folder / "seqs.fasta").write_text(">a\nAC\n")
    (folder / "notes.md").write_text("hello\n")
    outcomes = list(iter_chains(folder))
    assert len(outcomes) == 2 + 50 + 3
    failed = {Path(o.source.split("#")[0]).name: o.error for o in outcomes if not o.ok}
    assert set(failed) == {"broken.pdb", "seqs.fasta", "notes.md"}
    assert "binary" in failed["broken.pdb"] and "sequence-only" in failed["seqs.fasta"]
    assert all(o.error is None and o.chain is not None for o in outcomes if o.ok)
    assert all("\n" not in o.error for o in outcomes if not o.ok)


def test_iter_chains_tarball_of_structures_reports_bad_members(extracted: Callable[[str], Path],
                                                               tmp_path: Path) -> None:
    org = extracted("psicov150_gremlin_rf/psicov150_org_pdb.tar.gz") / "psicov150" / "org_pdb"
    path = tmp_path / "mixed.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(org / "1a3a.pdb", arcname="x/1a3a.pdb")
        data = b"HEADER    nothing\nEND\n"
        info = tarfile.TarInfo("x/empty.pdb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    outcomes = list(iter_chains(path, chain="B"))
    assert [o.ok for o in outcomes] == [True, False]
    assert outcomes[0].chain.meta["chain"] == "B" and outcomes[0].source == f"{path}#x/1a3a.pdb"
    assert outcomes[1].source == f"{path}#x/empty.pdb" and "no protein chain" in outcomes[1].error


def test_iter_chains_cgdms_tarball_and_missing_path(shared_data: Path, tmp_path: Path) -> None:
    outcomes = list(iter_chains(shared_data / CGDMS_TAR))
    assert len(outcomes) == 2204 and all(o.ok for o in outcomes)
    missing = list(iter_chains(tmp_path / "nope.pdb"))
    assert missing == [LoadOutcome(str(tmp_path / "nope.pdb"), None, f"{tmp_path / 'nope.pdb'}: file not found")]


def test_iter_chains_bad_json_record_is_one_outcome(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    ok = {"id": "s|p|A", "seq": "GA", "resnum": ["1", "2"], "atoms": ["N", "CA", "C"],
          "coords": [[[0, 1, 0], [1, 0, 0], [2, 0.5, 0]], [[2.6, 0.5, 0], [3.8, 0, 0], [5.0, -0.5, 0]]]}
    bad = {**ok, "id": "s|p|B", "resnum": ["1"]}
    path.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    outcomes = list(iter_chains(path))
    assert outcomes[0].ok and outcomes[0].chain.sequence == "GA"
    assert not outcomes[1].ok and outcomes[1].source == f"{path}#s|p|B"
    assert outcomes[1].error == f"{path}, record 's|p|B': 'resnum' has 1 entries but seq has 2"


# ------------------------------------------------------------------------------------------------------ wheels
def test_fetch_wheel_reuses_cached_wheel_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     cgdms_wheel: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / cgdms_wheel.name).symlink_to(cgdms_wheel)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(sources.subprocess, "run", no_network)
    assert fetch_wheel("cgdms==1.0", cache) == cache / cgdms_wheel.name


def test_fetch_wheel_downloads_once_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import zipfile

    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl", "w") as wheel:
            wheel.writestr("x.txt", "x")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_pip)
    cache = tmp_path / "cache"
    first = fetch_wheel("bioemu-benchmarks==0.0.2.post1", cache)
    second = fetch_wheel("bioemu-benchmarks==0.0.2.post1", cache)
    assert first == second == cache / "bioemu_benchmarks-0.0.2.post1-py3-none-any.whl"
    assert len(calls) == 1 and calls[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    assert [p.name for p in cache.iterdir()] == [first.name], "no temporary download folder left behind"


def test_fetch_wheel_failure_and_unpinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.setattr(sources.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: No matching distribution found for cgdms==1.0\n"))
    with pytest.raises(InputError, match="could not download cgdms==1.0 with pip .ERROR: No matching distribution"):
        fetch_wheel("cgdms==1.0", tmp_path)
    with pytest.raises(InputError, match="must pin one version"):
        fetch_wheel("cgdms", tmp_path)


def test_default_sources_from_search_dir(tmp_path: Path, cgdms_wheel: Path, bioemu_wheel: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    search = tmp_path / "downloaded"
    search.mkdir()
    for wheel in (cgdms_wheel, bioemu_wheel):
        (search / wheel.name).symlink_to(wheel)
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no pip")))
    paths = default_sources(tmp_path / "cache", search_dirs=(search,))
    assert [p.name for p in paths] == [cgdms_wheel.name, bioemu_wheel.name]
    assert all(p.parent == tmp_path / "cache" and p.stat().st_size > 0 for p in paths)
