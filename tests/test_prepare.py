"""``protrnn prepare`` end to end on a small real subset: datasets, manifest, leakage, splits, reruns, errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from protrnn.cli import main
from protrnn.data import splits
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import load_dataset
from protrnn.data.prepare import MANIFEST_COLUMNS, Entry, dedupe, reason_kind, write_manifest
from protrnn.utils.io import read_tsv

TS50_LEAKS = {"1LPB_A": "1lpbA", "2CVI_A": "2cviA"}  # identical to TS50 chains (shared overlap table)
IDENTICAL = ("4E1P_A", "4E1R_A")  # two cgdms chains with the same sequence


@pytest.fixture(scope="module")
def inputs(extracted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature cgdms data directory (with its train/val lists) plus unreadable files beside it."""
    cgdms = extracted("cgdms/cgdms_train_val.tar.gz")
    root = tmp_path_factory.mktemp("inputs")
    data = root / "cgdms_subset"
    (data / "protein_data" / "train_val").mkdir(parents=True)
    (data / "datasets").mkdir()
    lists = {name: (cgdms / "datasets" / f"{name}.txt").read_text().split() for name in ("train", "val")}
    chosen = lists["train"][:40] + lists["val"][:12] + [*TS50_LEAKS, *IDENTICAL]
    chosen = list(dict.fromkeys(chosen))
    for chain_id in chosen:
        shutil.copy(cgdms / "protein_data" / "train_val" / f"{chain_id}.txt", data / "protein_data" / "train_val")
    for name, ids in lists.items():
        (data / "datasets" / f"{name}.txt").write_text("\n".join(i for i in ids if i in chosen) + "\n")
    bad = root / "other"
    bad.mkdir()
    (bad / "truncated.pdb").write_text("HEADER    TRUNCATED\nATOM      1  N   ALA A   1      11.104   6.134")
    (bad / "binary.cif.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    return root


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_help_documents_inputs_outputs_and_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["prepare", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("inputs", "manifest.tsv", "leakage.tsv", "kept | skipped | removed", "--test-set", "test_<NAME>.npz",
                   "--use-split-hints", "mmseqs2"):
        assert phrase in text


@pytest.mark.slow
@pytest.mark.usefixtures("mmseqs")  # the first run is mmseqs2's; fails, not skips, without it (conftest.require_tool)
def test_prepare_end_to_end(inputs: Path, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    ts50 = shared_data / "ts50_gvp" / "ts50.json.gz"
    code = main(["prepare", str(inputs / "cgdms_subset"), str(inputs / "other"), "-o", str(out),
                 "--test-set", f"ts50={ts50}", "--min-length", "30", "--threads", "2", "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "removed for test-set overlap: 2" in printed and "train.npz" in printed
    assert sorted(p.name for p in out.iterdir()) == ["leakage.tsv", "manifest.tsv", "prepare.json", "test_ts50.npz",
                                                    "train.npz", "val.npz"]
    manifest = _read_tsv(out / "manifest.tsv")
    rows = {r["id"]: r for r in manifest if r["id"]}
    n_chain_files = len(list((inputs / "cgdms_subset" / "protein_data" / "train_val").iterdir()))
    assert len(manifest) == n_chain_files + 2 + 50  # every chain, both bad files, every TS50 chain

    bad = [r for r in manifest if r["status"] == "skipped" and not r["id"]]
    assert sorted(Path(r["source"]).name for r in bad) == ["binary.cif.gz", "truncated.pdb"]
    assert all(r["reason"] and r["split"] == "" for r in bad)
    short = [r for r in manifest if r["reason"].startswith("length")]
    assert short and all(int(r["length"]) < 30 and r["status"] == "skipped" for r in short)

    leakage = _read_tsv(out / "leakage.tsv")
    assert {r["chain_id"]: r["test_id"] for r in leakage} == TS50_LEAKS
    for chain_id, test_id in TS50_LEAKS.items():
        assert rows[chain_id]["status"] == "removed" and test_id in rows[chain_id]["reason"]
        assert float(next(r for r in leakage if r["chain_id"] == chain_id)["identity"]) == 1.0

    datasets = {name: load_dataset(out / f"{name}.npz") for name in ("train", "val", "test_ts50")}
    for name, dataset in datasets.items():
        assert sorted(dataset.ids) == sorted(r["id"] for r in manifest if r["split"] == name)
        assert all(rows[i]["status"] == "kept" for i in dataset.ids) if name != "test_ts50" else len(dataset) == 50
    assert len(datasets["train"]) > len(datasets["val"]) > 0
    assert not set(TS50_LEAKS) & set(datasets["train"].ids + datasets["val"].ids)
    spans = defaultdict(set)
    for r in manifest:
        if r["split"] in ("train", "val"):
            assert r["cluster"]
            spans[r["cluster"]].add(r["split"])
    assert all(len(s) == 1 for s in spans.values())
    assert rows[IDENTICAL[0]]["cluster"] == rows[IDENTICAL[1]]["cluster"]
    chain = datasets["train"][0]
    assert chain.observed.all() and not np.isnan(chain.coords).any() and chain.contact_map().any()
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["leakage"] == {"ts50": 2} and summary["homology_method"] == "mmseqs2"
    assert summary["info"]["leakage_rule"] == splits.LEAKAGE_RULE and "either chain" in splits.LEAKAGE_RULE

    # Rerun into the same folder without the test set and with the sources' own split (fast fallback clustering):
    # the stale test_ts50.npz goes, leakage.tsv is empty, splits follow the cgdms lists.
    monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    assert main(["prepare", str(inputs), "-o", str(out), "--use-split-hints", "--threads", "1"]) == 0
    assert not (out / "test_ts50.npz").exists()
    assert _read_tsv(out / "leakage.tsv") == []
    val_list = set((inputs / "cgdms_subset" / "datasets" / "val.txt").read_text().split())
    assert set(load_dataset(out / "val.npz").ids) == val_list
    assert set(TS50_LEAKS) <= set(load_dataset(out / "train.npz").ids) | val_list
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert json.loads((out / "prepare.json").read_text())["homology_method"].startswith("fallback")


def test_bad_invocations_exit_2_with_one_line(inputs: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    one = str(inputs / "cgdms_subset" / "protein_data" / "train_val" / "1LPB_A.txt")
    cases = [
        (["prepare", str(tmp_path / "missing"), "-o", out], "input not found"),
        (["prepare", one, "-o", out, "--split", "train=0.5"], "sum to"),
        (["prepare", one, "-o", out, "--test-set", "bad/name=x"], "the name 'bad/name' must be letters"),
        (["prepare", one, "-o", out, "--test-set", f"junk={inputs / 'other'}"], "no readable chain"),
        (["prepare", "-o", out], "no inputs"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.npz"))


def test_skip_reasons_are_grouped_by_reason_not_by_its_last_colon() -> None:
    """The summary drops the "<file>, record 'x': " prefix only; reasons holding ': ' stay whole (regression)."""
    assert reason_kind("d/x.pdb: no protein chain (chains: 'B')") == "no protein chain (chains: 'B')"
    assert reason_kind("a.txt: sequence-only file: no coordinates") == "sequence-only file: no coordinates"
    assert reason_kind("r.jsonl, record 'r1': coords have 6 residues") == "coords have N residues"
    assert reason_kind("length 12 < --min-length 20") == "length N < --min-length N"
    # a quoted value is what the reason names, not a count: the digit '1' must not read as asparagine ('N')
    assert (reason_kind("t/ts50remove.txt, record 'x': invalid residue letter '1' at position 3")
            == "invalid residue letter '1' at position N")


def test_skip_reasons_keep_the_names_they_name_and_group_the_numbers_that_vary() -> None:
    """A reason group is what the skipped entries share: numbers that vary from entry to entry (positions, lengths,
    counts) read N, while what a reason names keeps its digits: "first read from bad/Nbdo.pdb" named no file."""
    assert (reason_kind("duplicate ID (first read from bad/1bdo.pdb)")
            == "duplicate ID (first read from bad/1bdo.pdb)")
    assert (reason_kind("duplicate ID (first read from t1.tar.gz#a/1aap.pdb.gz)")
            == "duplicate ID (first read from t1.tar.gz#a/1aap.pdb.gz)")
    assert reason_kind("duplicate ID (first read from 2.pdb)") == "duplicate ID (first read from 2.pdb)"
    assert reason_kind("x.pdb: invalid residue byte 0xc3 (not ASCII)") == "invalid residue byte 0xc3 (not ASCII)"
    # the same kind of reason at other positions and counts is one group
    assert (reason_kind("a/1.txt, record 'r1', position 17: chain #3 has 12 gaps in 2 runs (1.5 per 100)")
            == reason_kind("b/2.txt, record 'r2', position 9: chain #10 has 4 gaps in 3 runs (0.25 per 100)")
            == "chain #N has N gaps in N runs (N per N)")


def test_the_summary_names_the_files_of_duplicate_ids_as_they_are(
        inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two folders (and an archive) holding the same chain files: prepare.json and the printed summary said
    "first read from tN.tar.gz#c/NENP_A.txt"."""
    import tarfile

    monkeypatch.setattr(splits, "mmseqs_path", lambda: None)  # the fallback clustering: fast, and enough here
    monkeypatch.chdir(tmp_path)
    names = ("4E1P_A.txt", "1LPB_A.txt")
    for folder, files in (("c", names), ("a1", names), ("b2", names[:1])):
        Path(folder).mkdir()
        for name in files:
            shutil.copy(inputs / "cgdms_subset" / "protein_data" / "train_val" / name, folder)
    with tarfile.open("t1.tar.gz", "w:gz") as archive:
        archive.add("c")
    assert main(["prepare", "t1.tar.gz", "a1", "b2", "-o", "out", "--threads", "1", "--min-length", "1"]) == 0
    expected = {"duplicate ID (first read from t1.tar.gz#c/4E1P_A.txt)": 2,
                "duplicate ID (first read from t1.tar.gz#c/1LPB_A.txt)": 1}
    assert json.loads(Path("out/prepare.json").read_text())["skip_reasons"] == expected
    printed = capsys.readouterr().out
    for reason, count in expected.items():
        assert f"{count:>6}  {reason}\n" in printed


def _chain(chain_id: str, length: int) -> ProteinChain:
    return ProteinChain(chain_id, "A" * length, np.ones(length, dtype=bool), np.zeros((length, 4, 3)))


def test_dedupe_keeps_the_first_of_each_id_and_ignores_skipped_entries() -> None:
    entries = [Entry("a.txt", _chain("x", 10), "train"), Entry("b.txt", _chain("y", 10), "train"),
               Entry("c.txt", _chain("x", 12), "train"), Entry("d.txt", _chain("y", 10), "train"),
               Entry("e.txt", None, "train")]
    entries[1].skip("too short")  # a skipped entry claims no ID: the later "y" is kept
    entries[4].skip("unreadable")
    dedupe(entries)
    assert [e.status for e in entries] == ["kept", "skipped", "skipped", "kept", "skipped"]
    assert entries[2].reason == "duplicate ID (first read from a.txt)"
    assert entries[1].reason == "too short"


def test_manifest_is_one_clean_row_per_entry_and_reads_back(tmp_path: Path) -> None:
    kept = Entry("dir/a.txt", _chain("x\ty", 7), "train", split="train", cluster="x\ty")
    bad = Entry("dir/b.pdb", None, "train")
    bad.skip("b.pdb: truncated\nfile")
    escape = Entry("dir/c.jsonl", _chain("c\x1b[31m\x00", 8), "train", split="val", cluster="c\x7f")
    write_manifest(tmp_path / "manifest.tsv", [kept, bad, escape])
    text = (tmp_path / "manifest.tsv").read_text()
    assert text.splitlines()[0].split("\t") == list(MANIFEST_COLUMNS)
    assert not [c for c in text if ord(c) < 32 and c not in "\t\n"] and "\x7f" not in text  # no raw control character
    assert read_tsv(tmp_path / "manifest.tsv") == [
        {"source": "dir/a.txt", "id": "x y", "length": "7", "n_observed": "7", "status": "kept", "reason": "",
         "split": "train", "cluster": "x y"},
        {"source": "dir/b.pdb", "id": "", "length": "", "n_observed": "", "status": "skipped",
         "reason": "b.pdb: truncated file", "split": "", "cluster": ""},
        {"source": "dir/c.jsonl", "id": "c\\x1b[31m\\x00", "length": "8", "n_observed": "8", "status": "kept",
         "reason": "", "split": "val", "cluster": "c\\x7f"}]


def test_command_module_holds_no_pipeline() -> None:
    """``protrnn prepare`` parses arguments and calls protrnn.data.prepare; importing it loads none of the pipeline."""
    code = ("import sys, protrnn.commands.prepare; "
            "print(sorted(m for m in sys.modules if m.startswith('protrnn.data')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_nothing_kept_for_training_writes_only_the_failed_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "junk.pdb").write_bytes(b"\x00\x01binary\xff" * 10)
    (bad / "dna.pdb").write_text("ATOM      1  P    DA A   1      11.000  12.000  13.000  1.00  0.00           P\nEND\n")
    out = tmp_path / "out"
    assert main(["prepare", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input chain was kept for the 'train' split (0 kept, 2 skipped" in err[0]
    assert "manifest.failed.tsv, and nothing else was written" in err[0]
    rows = list(csv.DictReader((out / "manifest.failed.tsv").open(), delimiter="\t"))
    assert len(rows) == 2 and all(r["status"] == "skipped" and r["reason"] for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.failed.tsv"]


def test_a_failed_rerun_leaves_the_earlier_outputs_and_a_split_may_not_shadow_a_test_set(
        cgdms_wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["prepare", str(cgdms_wheel), "-o", str(out), "--limit", "30", "--threads", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.pdb"
    bad.write_bytes(b"\x00\x01binary\xff" * 10)
    assert main(["prepare", str(bad), "-o", str(out)]) == 2  # it replaced train.npz with an empty one
    capsys.readouterr()
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "manifest.failed.tsv"}
    assert after == before
    assert main(["prepare", str(cgdms_wheel), "-o", str(out), "--limit", "30", "--threads", "1"]) == 0
    assert not (out / "manifest.failed.tsv").exists()  # out of date once a run succeeds
    # a split named like a test set's file would have been overwritten by it; a run without 'train' trains nothing
    for split, message in (("train=0.5,test_t1=0.5", "split 'test_t1' would be written over test set 't1'"),
                           ("val=1", "have no 'train' split")):
        assert main(["prepare", str(cgdms_wheel), "-o", str(tmp_path / "x"), "--split", split, "--limit", "30",
                     "--test-set", f"t1={cgdms_wheel}", "--threads", "1"]) == 2
        assert message in capsys.readouterr().err


def test_remove_stale_trusts_only_its_own_summary(tmp_path: Path) -> None:
    """Datasets listed by an earlier prepare.json and not written now are removed; a prepare.json that is not
    prepare's own (another format, not an object, not JSON) removes nothing and raises nothing."""
    import json

    from protrnn.data.prepare import SUMMARY_FILE, SUMMARY_FORMAT, remove_stale

    def attempt(summary: str) -> bool:
        (tmp_path / "old.npz").write_bytes(b"x")
        (tmp_path / "kept.npz").write_bytes(b"x")
        (tmp_path / SUMMARY_FILE).write_text(summary)
        remove_stale(tmp_path, {tmp_path / "kept.npz"})
        assert (tmp_path / "kept.npz").is_file()
        return not (tmp_path / "old.npz").exists()

    outputs = ["old.npz", "kept.npz", "manifest.tsv"]
    assert attempt(json.dumps({"format": SUMMARY_FORMAT, "outputs": outputs}))
    assert not attempt(json.dumps({"format": "something-else", "outputs": outputs}))
    assert not attempt(json.dumps(outputs))
    assert not attempt('{"format": ')
    assert not attempt(json.dumps({"format": SUMMARY_FORMAT, "outputs": "old.npz"}))


def test_a_rerun_into_an_input_directory_does_not_read_its_own_outputs(
        inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """prepare D -o D (or D/out) read its earlier train.npz, manifest and prepare.json back as inputs: junk skips and
    chains "duplicated" by their own dataset. The output folder may also not be a file."""
    for name in ("inside", "itself"):
        folder = tmp_path / name
        folder.mkdir()
        for path in sorted((inputs / "cgdms_subset" / "protein_data" / "train_val").glob("*.txt"))[:25]:
            shutil.copy(path, folder)
        out = folder / "out" if name == "inside" else folder
        counts = []
        for _ in range(2):
            assert main(["prepare", str(folder), "-o", str(out), "--threads", "1"]) == 0
            rows = _read_tsv(out / "manifest.tsv")
            counts.append(len(rows))
            assert all(r["source"].endswith(".txt") for r in rows), [r["source"] for r in rows if
                                                                   not r["source"].endswith(".txt")]
        assert counts == [25, 25]
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    assert main(["prepare", str(folder), "-o", str(tmp_path / "afile")]) == 2
    assert "afile: the output folder is a file" in capsys.readouterr().err
