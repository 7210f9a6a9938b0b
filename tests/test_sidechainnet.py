"""Structure labels from sidechainnet: DSSP encoding, the 8 -> 3 map, duplicate collapsing, reading the wheel,
leakage removal against a real test set, cluster splits and the label file format."""

from __future__ import annotations

import csv
import gzip
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.data import splits
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import save_dataset
from protrnn.data.sidechainnet import (
    RESOURCES,
    consensus_labels,
    prepare_structure_labels,
    read_dssp_records,
)
from protrnn.data.sources import read_chains
from protrnn.data.structure_labels import (
    LabelledSequence,
    encode_dssp,
    load_structure_labels,
    residue_labels,
    save_structure_labels,
    ss8_to_ss3,
)
from protrnn.errors import InputError

RESIDUES = DEFAULT_ALPHABET.residues
STATES = "HGIEBTSL"


def _random_sequence(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(RESIDUES), size=length))


def _mutant(rng: np.random.Generator, sequence: str, identity: float) -> str:
    """``sequence`` with a fraction 1 - identity of its positions changed to another residue."""
    letters = list(sequence)
    for position in rng.choice(len(letters), size=round(len(letters) * (1 - identity)), replace=False):
        letters[position] = rng.choice([r for r in RESIDUES if r != letters[position]])
    return "".join(letters)


def _dssp(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(STATES), size=length))


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# ---- labels -------------------------------------------------------------------------------------------------------
def test_dssp_letters_and_the_standard_three_state_map() -> None:
    labels = encode_dssp("HGIEBTSL-? C")
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1, -1]
    # H, G, I -> H (0); E, B -> E (1); T, S, L -> C (2); unlabelled stays -1.
    assert ss8_to_ss3(labels).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, -1, -1, -1, -1]


def test_unknown_residues_lose_their_label() -> None:
    tokens = DEFAULT_ALPHABET.encode("AXCBG")
    assert residue_labels(tokens, "HHEES").tolist() == [0, -1, 3, -1, 6]
    with pytest.raises(ValueError, match="4 DSSP letters for 5 residues"):
        residue_labels(tokens, "HHEE")


def test_consensus_is_the_per_residue_majority_and_the_representative_breaks_ties() -> None:
    copies = [encode_dssp("HHE-"), encode_dssp("GHE-"), encode_dssp("GEE-")]
    assert consensus_labels(copies).tolist() == [1, 0, 3, -1]  # G (2 votes), H (2), E (3), nothing
    assert consensus_labels([encode_dssp("HE"), encode_dssp("EH")]).tolist() == [0, 3]
    assert consensus_labels([encode_dssp("-E"), encode_dssp("HT")]).tolist() == [0, 3]


def test_label_file_round_trip_and_corruption(tmp_path: Path) -> None:
    records = [LabelledSequence("a", "ACDX", encode_dssp("HHE-"), "a"),
               LabelledSequence("b", "GG", np.array([7, 5], dtype=np.int8), "a")]
    path = save_structure_labels(records, tmp_path / "labels.npz")
    labels = load_structure_labels(path)
    assert labels.ids == ["a", "b"] and labels.clusters == ["a", "a"] and labels.lengths.tolist() == [4, 2]
    assert labels.sequence(0) == "ACDX" and labels.tokens(0).tolist() == [2, 3, 4, 1]
    assert labels.ss8(0).tolist() == [0, 0, 3, -1] and labels.ss8(1).tolist() == [7, 5]
    with np.load(path) as archive:
        arrays = dict(archive)
    assert arrays["label_mask"].tolist() == [True, True, True, False, True, True]
    arrays["label_mask"][0] = False
    with open(tmp_path / "bad.npz", "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(InputError, match="corrupt structure-label file"):
        load_structure_labels(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="duplicate chain ID"):
        save_structure_labels([records[0], records[0]], tmp_path / "dup.npz")
    # The .npz checks shared with contact datasets: a contact dataset is not a label file, nor a newer version.
    contact = save_dataset([ProteinChain("c", "ACD", np.ones(3, dtype=bool), np.zeros((3, 4, 3), np.float32))],
                           tmp_path / "contacts.npz")
    with pytest.raises(InputError, match=r"not a structure-label file \(missing tokens, ss8, label_mask"):
        load_structure_labels(contact)
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["metadata"].tobytes())
    arrays["metadata"] = np.frombuffer(json.dumps({**meta, "format_version": 2}).encode(), dtype=np.uint8)
    with open(tmp_path / "v2.npz", "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(InputError, match="unsupported format_version 2"):
        load_structure_labels(tmp_path / "v2.npz")
    with pytest.raises(InputError, match="structure-label file not found .*protrnn pretrain prepare"):
        load_structure_labels(tmp_path / "missing.npz")


# ---- reading ------------------------------------------------------------------------------------------------------
def _annotations(records: dict[str, tuple[str, str]]) -> bytes:
    return json.dumps({key: {"Sequence": seq, "DSSP": dssp} for key, (seq, dssp) in records.items()}).encode()


def test_reads_the_wheel_an_extracted_folder_and_the_json_alike(tmp_path: Path) -> None:
    raw = _annotations({"1ABC_1_A": ("ACDE", "HHEL"), "2XYZ_1_B": ("GG", "TT")})
    domains = json.dumps({"1ABC_d1abca1": {"Sequence": "ACD", "DSSP": "HHE", "SCCS": "a.1.1.1"}}).encode()
    wheel = tmp_path / "sidechainnet-1.0.1-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(RESOURCES + "full_protein_dssp_annotations.json", raw)
        archive.writestr(RESOURCES + "single_domain_dssp_annotations.json", domains)
    folder = tmp_path / "extracted" / "sidechainnet" / "resources"
    folder.mkdir(parents=True)
    (folder / "full_protein_dssp_annotations.json").write_bytes(raw)
    plain = tmp_path / "full_protein_dssp_annotations.json.gz"
    plain.write_bytes(gzip.compress(raw))

    def summary(records: list) -> list[tuple[str, str, str, str]]:
        return [(r.id, r.sequence, r.dssp, r.subset) for r in records]

    expected = [("1ABC_1_A", "ACDE", "HHEL", "full"), ("2XYZ_1_B", "GG", "TT", "full")]
    assert summary(read_dssp_records(wheel)) == expected
    assert summary(read_dssp_records(tmp_path / "extracted")) == expected
    assert summary(read_dssp_records(plain)) == expected
    both = read_dssp_records(wheel, ("full", "single_domain"))
    assert summary(both)[2] == ("1ABC_d1abca1", "ACD", "HHE", "single_domain")
    with pytest.raises(InputError, match="single_domain_dssp_annotations.json"):
        read_dssp_records(tmp_path / "extracted", ("single_domain",))
    with pytest.raises(InputError, match="unknown annotation subset"):
        read_dssp_records(wheel, ("domains",))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object of records"):
        read_dssp_records(tmp_path / "list.json")


def test_annotation_files_are_read_within_the_input_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON file, its gzip content and the wheel member were read whole (read_bytes, gzip.decompress, ZipFile.read)
    past MAX_INPUT_BYTES, the bound of every input file."""
    import protrnn.data.structure as structure

    monkeypatch.setattr(structure, "MAX_INPUT_BYTES", 1000)
    raw = _annotations({f"{k}ABC_1_A": ("ACDEFGHIKLMNPQRSTVWY", "H" * 20) for k in range(30)})  # ~1,900 bytes
    assert len(raw) > 1000
    plain = tmp_path / "full_protein_dssp_annotations.json"
    plain.write_bytes(raw)
    packed = tmp_path / "single_domain_dssp_annotations.json.gz"
    packed.write_bytes(gzip.compress(raw))
    assert packed.stat().st_size < 1000  # within the bound on disk, over it once inflated
    wheel = tmp_path / "sidechainnet-1.0.1-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(RESOURCES + "full_protein_dssp_annotations.json", raw)
    expected = {plain: f"{plain}: file larger than ", packed: f"{packed}: gzip content larger than ",
                wheel: f"{wheel}#{RESOURCES}full_protein_dssp_annotations.json: archive member larger than "}
    for path, start in expected.items():
        with pytest.raises(InputError) as caught:
            read_dssp_records(path)
        assert str(caught.value).startswith(start) and "\n" not in str(caught.value), str(caught.value)


# ---- the prepare pipeline -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts50(shared_data: Path) -> Path:
    path = shared_data / "ts50_gvp" / "ts50.json.gz"
    if not path.is_file():
        pytest.skip("TS50 not in shared data")
    return path


@pytest.fixture(scope="module")
def planted(ts50: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic annotation file with planted TS50 relatives, families, duplicates and bad records."""
    rng = np.random.default_rng(7)
    tests = read_chains(ts50)
    records: dict[str, tuple[str, str]] = {}
    # Relatives of TS50 chains: an exact copy, a 60 %-identity mutant, and a chain containing a TS50 chain in long
    # flanks (the test chain is covered whole, the long chain only to ~1/3).
    exact, mutant, domain = tests[0], tests[1], tests[2]
    records["LEAK_EXACT"] = (exact.sequence, _dssp(rng, len(exact)))
    records["LEAK_MUTANT"] = (_mutant(rng, mutant.sequence, 0.6), _dssp(rng, len(mutant)))
    flanked = _random_sequence(rng, len(domain)) + domain.sequence + _random_sequence(rng, len(domain))
    records["LEAK_DOMAIN"] = (flanked, _dssp(rng, len(flanked)))
    # Eight families of three members at ~85 % identity: each family must land in one split.
    for family in range(8):
        base = _random_sequence(rng, int(rng.integers(80, 140)))
        for member in range(3):
            sequence = base if member == 0 else _mutant(rng, base, 0.85)
            records[f"FAM{family}_{member}"] = (sequence, _dssp(rng, len(sequence)))
    # The same sequence three times with different DSSP: collapsed into DUP_A, labels = majority vote.
    dup = _random_sequence(rng, 60)
    dup_dssp = [_dssp(rng, 60) for _ in range(3)]
    records["DUP_C"], records["DUP_A"], records["DUP_B"] = ((dup, d) for d in dup_dssp)
    for index in range(6):
        sequence = _random_sequence(rng, int(rng.integers(50, 120)))
        records[f"SOLO{index}"] = (sequence, _dssp(rng, len(sequence)))
    records["SHORT"] = ("ACDEFGHIK", "HHHHHHHHH")
    records["BAD_LENGTH"] = ("ACDEFGHIKLMNPQRSTVWY", "HHH")
    records["BAD_LETTER"] = ("ACDEFGHIK1MNPQRSTVWYACDEFG", "H" * 26)
    root = tmp_path_factory.mktemp("scn")
    source = root / "full_protein_dssp_annotations.json"
    source.write_bytes(_annotations(records))
    return {"source": source, "records": records, "tests": tests, "dup_dssp": dup_dssp,
            "leaks": {"LEAK_EXACT": exact.id, "LEAK_MUTANT": mutant.id, "LEAK_DOMAIN": domain.id}}


@pytest.mark.parametrize("method", ["mmseqs", "fallback"])
def test_prepare_removes_test_relatives_collapses_duplicates_and_splits_by_cluster(
        method: str, planted: dict, ts50: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    if method == "mmseqs":
        request.getfixturevalue("mmseqs")  # fails, not skips, without mmseqs2
    if method == "fallback":
        monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    result = prepare_structure_labels(planted["source"], tmp_path / "out", test_sets={"ts50": ts50},
                                      val_fraction=0.3, seed=1, log=lambda _: None)
    out = tmp_path / "out"
    records = {row["id"]: row for row in _read_tsv(out / "records.tsv")}
    assert set(records) == set(planted["records"])

    # Leakage: every planted relative removed, naming the TS50 chain it hit; nothing else.
    leakage = {row["chain_id"]: row for row in _read_tsv(out / "leakage.tsv")}
    assert {k: v["test_id"] for k, v in leakage.items()} == planted["leaks"]
    assert all(row["test_set"] == "ts50" for row in leakage.values())
    assert float(leakage["LEAK_EXACT"]["identity"]) == 1.0
    assert 0.5 < float(leakage["LEAK_MUTANT"]["identity"]) < 0.75
    assert float(leakage["LEAK_DOMAIN"]["test_coverage"]) == 1.0
    assert float(leakage["LEAK_DOMAIN"]["chain_coverage"]) < 0.4
    assert all(records[k]["status"] == "removed" for k in planted["leaks"])
    counts = result.manifest["counts"]
    assert counts["removed_per_test_set"] == {"ts50": 3} and counts["removed_if_both_coverage"] == 2
    assert result.manifest["info"]["leakage_rule"] == splits.LEAKAGE_RULE  # the rule these removals were made under

    # Bad records are skipped with their reason; duplicates point at their representative.
    assert records["BAD_LENGTH"]["status"] == "skipped" and "20 residues but 3 DSSP" in records["BAD_LENGTH"]["reason"]
    assert records["BAD_LETTER"]["status"] == "skipped" and "invalid residue letter '1'" in records["BAD_LETTER"]["reason"]
    assert records["SHORT"]["status"] == "skipped" and "length 9 < minimum 20" in records["SHORT"]["reason"]
    assert [records[k]["status"] for k in ("DUP_A", "DUP_B", "DUP_C")] == ["kept", "duplicate", "duplicate"]
    assert records["DUP_C"]["representative"] == "DUP_A"
    n = len(planted["records"])
    assert counts["records_read"] == n and counts["records_skipped"] == 2 and counts["duplicates_collapsed"] == 2
    kept = {k for k, row in records.items() if row["status"] == "kept"}
    assert kept == {f"FAM{f}_{m}" for f in range(8) for m in range(3)} | {f"SOLO{i}" for i in range(6)} | {"DUP_A"}
    assert counts["chains_used"] == len(kept) == 31

    # Splits: whole families together, both splits used, files hold exactly the kept chains.
    train, val = load_structure_labels(out / "train.npz"), load_structure_labels(out / "val.npz")
    assert set(train.ids) | set(val.ids) == kept and not set(train.ids) & set(val.ids) and len(val) > 0
    for family in range(8):
        assert len({records[f"FAM{family}_{m}"]["split"] for m in range(3)}) == 1
        assert len({records[f"FAM{family}_{m}"]["cluster"] for m in range(3)}) == 1
    assert counts["clusters"] == 8 + 6 + 1
    assert counts["residues_used"] == sum(len(planted["records"][k][0]) for k in kept)

    # The collapsed sequence carries the per-residue majority of its three DSSP strings (DUP_A breaks ties).
    dataset = train if "DUP_A" in train.ids else val
    labels = dataset.ss8(dataset.ids.index("DUP_A"))
    a, b, c = (planted["dup_dssp"][i] for i in (1, 2, 0))  # DUP_C was written first, DUP_A second, DUP_B third
    for position, label in enumerate(labels.tolist()):
        letters = [a[position], b[position], c[position]]
        top = max(letters.count(x) for x in letters)
        expected = a[position] if letters.count(a[position]) == top else next(x for x in letters if letters.count(x) == top)
        assert STATES[label] == expected


def test_prepare_is_deterministic_and_samples_max_chains(planted: dict, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splits, "mmseqs_path", lambda: None)  # fast; mmseqs2 itself is covered above
    kwargs = {"val_fraction": 0.3, "seed": 3, "max_chains": 12, "log": lambda _: None}
    first = prepare_structure_labels(planted["source"], tmp_path / "a", **kwargs)
    prepare_structure_labels(planted["source"], tmp_path / "b", **kwargs)
    assert first.manifest["counts"]["candidates"] == 12
    assert first.manifest["counts"]["not_sampled"] == 31 + 3 - 12  # 34 distinct sequences pass the length filter
    for name in ("train.npz", "val.npz"):
        with np.load(tmp_path / "a" / name) as a, np.load(tmp_path / "b" / name) as b:
            for key in ("tokens", "ss8", "label_mask", "offsets", "ids", "clusters"):
                assert np.array_equal(a[key], b[key]), key
    assert (tmp_path / "a" / "records.tsv").read_text() == (tmp_path / "b" / "records.tsv").read_text()


def test_prepare_rejects_bad_options(planted: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="test set 'ts50' not found"):
        prepare_structure_labels(planted["source"], tmp_path, test_sets={"ts50": tmp_path / "missing.json"})
    with pytest.raises(InputError, match="validation fraction"):
        prepare_structure_labels(planted["source"], tmp_path, val_fraction=1.0)
    with pytest.raises(InputError, match="sidechainnet source not found"):
        prepare_structure_labels(tmp_path / "nothing.whl", tmp_path)


def test_cli_prepare_writes_the_documented_outputs(planted: dict, ts50: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from protrnn.cli import main

    monkeypatch.setattr(splits, "mmseqs_path", lambda: None)

    status = main(["pretrain", "prepare", str(planted["source"]), "-o", str(tmp_path / "out"),
                   "--test-set", f"ts50={ts50}", "--val-fraction", "0.3"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "removed for leakage    3 (ts50: 3)" in printed and "duplicates collapsed   2" in printed
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"train.npz", "val.npz", "records.tsv", "leakage.tsv",
                                                            "manifest.json"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["info"]["arguments"]["val_fraction"] == 0.3
    assert manifest["test_sets"]["ts50"]["chains"] == 50


# ---- the real wheel -----------------------------------------------------------------------------------------------
def _cached_wheel() -> Path | None:
    dirs = [Path(p) for p in os.environ.get("PROTRNN_WHEEL_DIR", "").split(os.pathsep) if p]
    dirs += [Path(__file__).resolve().parents[1] / ".cache" / "protrnn" / "wheels", Path("/tmp/wheels")]
    for directory in dirs:
        hits = sorted(directory.glob("sidechainnet-1.0.1-*.whl")) if directory.is_dir() else []
        if hits:
            return hits[0]
    return None


@pytest.mark.slow
def test_the_real_wheel_holds_the_counts_the_issue_states() -> None:
    """159,026 ProteinNet chains, 82,813 distinct sequences, 41.3 M residues, longest 5,037 (issue #10)."""
    from protrnn.data.sidechainnet import LabelEntry, _group

    wheel = _cached_wheel()
    if wheel is None:
        pytest.skip("sidechainnet-1.0.1 wheel not downloaded (protrnn pretrain prepare fetches it)")
    records = read_dssp_records(wheel)
    assert len(records) == 159_026
    assert round(sum(len(r.sequence) for r in records) / 1e6, 1) == 41.3
    assert max(len(r.sequence) for r in records) == 5_037
    groups = _group([LabelEntry(r) for r in records])
    assert len(groups) == 82_813
