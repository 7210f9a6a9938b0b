"""`protrnn predict` / `protrnn.load_model`: outputs, safe names, resume byte-identity, bad input, memory bound."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import protrnn
import protrnn.model.io as model_io
import protrnn.predict.run as run_mod
from protrnn.cli import main
from protrnn.data.fasta import read_fasta
from protrnn.data.structure_index import StructureIndex
from protrnn.errors import InputError
from protrnn.model.config import DEFAULT_DISTOGRAM_BINS, ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import load_network, read_model_metadata, save_model
from protrnn.model.predictor import Predictor, plan_batches
from protrnn.predict import load_model, predict_fasta
from protrnn.predict.writers import read_npz
from protrnn.rr import read_rr, read_rr_document

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
PSICOV_TAR = DATA / "psicov150_gremlin_rf" / "psicov150_clean_chainA_pdb_fasta.tar.gz"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight model (fast on CPU); predictions are meaningless but deterministic."""
    torch.manual_seed(0)
    config = ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                         pair_chunk_size=64, dropout=0.0)
    directory = tmp_path_factory.mktemp("model")
    save_model(ContactModel(config), directory, extra={"note": "test model"})
    return directory


@pytest.fixture(scope="module")
def predictor(model_dir):
    return load_model(model_dir, device="cpu")


def _random_sequence(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))


def _write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in records))
    return path


def _tree(directory: Path) -> dict[str, str]:
    """Every file under directory (hidden ones included) -> sha256, to compare whole output trees."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_load_model_and_predict_api(model_dir, predictor) -> None:
    assert predictor.config.hidden_size == 8
    assert predictor.metadata["format"] == "protrnn-model" and predictor.metadata["note"] == "test model"
    sequences = ["ACDEFGHIKLMNPQRSTVWY" * 3, "mkvl-LLa" + "G" * 20 + "*", "A" * 7]
    probs = predictor.predict(sequences)
    assert [p.shape for p in probs] == [(60, 60), (27, 27), (7, 7)]  # cleaned: gaps and the trailing * removed
    for p in probs:
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, p.T)
        assert np.all((p >= 0) & (p <= 1))
    # Batching (padding, order) does not change the answer beyond float rounding.
    alone = [predictor.predict([s])[0] for s in sequences]
    for batched, single in zip(probs, alone, strict=True):
        np.testing.assert_allclose(batched, single, atol=1e-5)
    via_package = protrnn.load_model(model_dir / "model.json", device="cpu")
    np.testing.assert_array_equal(via_package.predict([sequences[0]])[0], alone[0])
    with pytest.raises(InputError, match=r"record '#2', position 3"):
        predictor.predict(["ACD", "AC1"])
    with pytest.raises(InputError, match="empty sequence"):
        predictor.predict(["--"])
    # what is not a str is named by its place (bytes and None failed inside the alphabet with AttributeError)
    for bad, kind in ((123, "int"), (None, "NoneType"), (b"MKV", "bytes")):
        with pytest.raises(TypeError, match=rf"predict: sequence #2 is a {kind}, not a str"):
            predictor.predict(["ACDEFG", bad])
    with pytest.raises(TypeError, match="not a single bytes"):
        predictor.predict(b"MKVLA")


def test_plan_batches_respects_budget() -> None:
    lengths = [50, 10, 300, 50, 20, 5000]
    batches = plan_batches(lengths, batch_tokens=200)
    assert sorted(k for b in batches for k in b) == list(range(len(lengths)))
    assert batches[0] == [5] and batches[1] == [2]  # over budget: alone, longest first
    for batch in batches:
        width = max(lengths[k] for k in batch)
        assert len(batch) == 1 or len(batch) * width <= 200
    assert plan_batches(lengths, batch_tokens=200) == batches
    # The pair-block cap: 3 chains of 50 padded to 50 would hold 3 * 40^2 pairs with a 40-wide tile; allow 2.
    capped = plan_batches([50, 50, 50, 10], batch_tokens=10_000, pair_extent=40, max_pair_blocks=2 * 40 * 40)
    assert capped == [[0, 1], [2, 3]]
    assert plan_batches([50, 50], batch_tokens=10_000, max_pairs=4999) == [[0], [1]]


def test_bundled_model_missing_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(model_io, "PRETRAINED_DIR", tmp_path / "pretrained")
    with pytest.raises(InputError, match="no bundled default model"):
        load_model()


def test_bundled_model_loads_and_predicts() -> None:
    model = load_model(device="cpu")
    sequence = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQ"
    (probs,) = model.predict([sequence])
    assert probs.shape == (len(sequence), len(sequence)) and np.all(np.isfinite(probs))
    np.testing.assert_array_equal(probs, probs.T)


@pytest.mark.skipif(not (DATA / "ts50_gvp" / "ts50.json.gz").is_file(), reason="shared TS50 data not available")
def test_bundled_model_meets_its_accuracy_marks_on_ts50() -> None:
    """Issue marks for the shipped weights: TS50 medium+long P@L/5 >= 0.17, long P@L/5 >= 3x random (~0.03)."""
    from protrnn.data.sources import iter_chains
    from protrnn.evaluation.metrics import evaluate_contacts

    chains = [o.chain for o in iter_chains(DATA / "ts50_gvp" / "ts50.json.gz") if o.chain is not None]
    assert len(chains) == 50
    probs = load_model(device="cpu").predict([c.sequence for c in chains])
    scores = [evaluate_contacts(p, c.contact_map(), c.observed, bins=()) for p, c in zip(probs, chains, strict=True)]
    medium_long = float(np.mean([s["medium_long/P@L/5"] for s in scores]))
    long = float(np.mean([s["long/P@L/5"] for s in scores]))
    contact_rate = np.mean([s["long/n_contacts"] / max(1, s["long/n_pairs"]) for s in scores])
    assert medium_long >= 0.17, medium_long
    assert long >= 3 * contact_rate, (long, contact_rate)


def test_pickled_or_foreign_models_are_refused(model_dir, tmp_path, capsys) -> None:
    pickled = tmp_path / "model.pt"
    torch.save(ContactModel(ModelConfig(hidden_size=8, head="pairwise")).state_dict(), pickled)
    with pytest.raises(InputError, match="pickle"):
        load_model(pickled)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.json").write_text(json.dumps({"format": "something-else"}))
    (foreign / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="not a protrnn model"):
        load_model(foreign)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL")])
    assert main(["predict", str(fasta), "-o", str(tmp_path / "out"), "--model", str(pickled), "--no-progress"]) == 2
    assert "pickle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _RunsCode:
    """Pickles to a call of os.system: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path, capsys) -> None:
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": _RunsCode(marker)}}, hostile)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL")])
    assert main(["predict", str(fasta), "-o", str(tmp_path / "out"), "--model", str(hostile), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"protrnn: error: {hostile}: not a readable checkpoint: refused")
    assert "weights_only=False" not in err  # no advice to unpickle it
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_an_output_path_that_cannot_be_written_is_one_line(model_dir, tmp_path, capsys) -> None:
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL"), ("b", "MKVLAAGGHH")])
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    base = ["--model", str(model_dir), "--no-progress"]
    for outdir, reason in ((a_file, "is a file, not a directory"), (a_file / "sub", "Not a directory")):
        assert main(["predict", str(fasta), "-o", str(outdir), *base]) == 1
        err = capsys.readouterr().err
        assert err == f"protrnn: error: {outdir}: cannot use this path ({reason})\n"
    assert a_file.read_text() == "keep me"
    assert main(["predict", str(tmp_path), "-o", str(tmp_path / "o"), *base]) == 2  # a folder given as the FASTA
    assert capsys.readouterr().err == f"protrnn: error: {tmp_path}: is a directory, not a FASTA file\n"
    clash = tmp_path / "clash"
    (clash / "b.rr").mkdir(parents=True)  # a directory where an output file goes
    assert main(["predict", str(fasta), "-o", str(clash), *base]) == 1
    assert capsys.readouterr().err == f"protrnn: error: {clash / 'b.rr'}: cannot use this path (Is a directory)\n"
    assert not [p.name for p in clash.iterdir() if p.name.endswith(".part")]  # no partial file left behind
    (clash / "b.rr").rmdir()
    assert main(["predict", str(fasta), "-o", str(clash), *base]) == 0  # the rerun completes what was missing
    assert read_rr(clash / "b.rr").sequence == "MKVLAAGGHH"


def test_cli_outputs_safe_names_and_rr_top_k(model_dir, predictor, tmp_path) -> None:
    rng = np.random.default_rng(1)
    records = [("../../x", _random_sequence(rng, 40)), ("a/b", _random_sequence(rng, 33)),
               ("a_b", _random_sequence(rng, 25)), ("A_B", _random_sequence(rng, 12)),
               ("..hidden", _random_sequence(rng, 30)), ("tiny", "MKV")]
    workdir = tmp_path / "work"
    workdir.mkdir()
    fasta = _write_fasta(workdir / "in.fasta", records)
    out = workdir / "out"
    # --max-tokens 1: one record per batch, so predictor.predict(..., batch_tokens=1) repeats the exact arithmetic.
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--png", "--no-progress",
                 "--max-tokens", "1"]) == 0
    stems = ["x", "a_b", "a_b~2", "A_B~3", "hidden", "tiny"]
    # RR TARGET: the ID with whitespace, non-printable and non-ASCII characters replaced by '_' (docs/predict.md), so
    # unlike the file names it keeps '/', '.' and case (an ID with a control character is refused earlier, by the
    # FASTA reader: test_fasta.py).
    targets = ["../../x", "a/b", "a_b", "A_B", "..hidden", "tiny"]
    expected = {f"{s}.{ext}" for s in stems for ext in ("rr", "npz", "png")} | {"summary.tsv"}
    assert {p.name for p in out.iterdir()} == expected
    assert sorted(p.name for p in workdir.iterdir()) == ["in.fasta", "out"]  # nothing escaped OUTDIR
    assert not (tmp_path / "x.rr").exists() and not (tmp_path.parent / "x.rr").exists()

    matrices = predictor.predict([seq for _, seq in records], batch_tokens=1)
    for (record_id, sequence), stem, target, probs in zip(records, stems, targets, matrices, strict=True):
        with np.load(out / f"{stem}.npz", allow_pickle=False) as data:
            assert sorted(data.files) == ["id", "method", "probs", "sequence"]
            assert str(data["method"]).split("\n") == predictor.method_lines()
            assert str(data["sequence"]) == sequence and str(data["id"]) == record_id
            stored = data["probs"]
        assert stored.dtype == np.float16 and stored.shape == (len(sequence),) * 2
        np.testing.assert_array_equal(stored, stored.T)
        np.testing.assert_allclose(stored.astype(np.float32), probs, atol=1e-3)
        rr_target, rr_sequence, contacts = read_rr(out / f"{stem}.rr")
        assert rr_sequence == sequence and rr_target == target
        length = len(sequence)
        # the top L of each range (6-11, 12-23, >= 24), ranked together by the stored float16 values (the npz's,
        # which the summary scores too), ties by (i, j)
        chosen = []
        for low, high in ((6, 11), (12, 23), (24, length)):
            chosen += sorted((-float(stored[i, j]), i + 1, j + 1) for i in range(length)
                             for j in range(i + low, min(i + high, length - 1) + 1))[:length]
        assert [(c.i, c.j) for c in contacts] == [(i, j) for _, i, j in sorted(chosen)]
        assert all(abs(c.p - float(stored[c.i - 1, c.j - 1])) <= 5e-5 for c in contacts)
    assert read_rr(out / "tiny.rr").contacts == []  # no pair with |i-j| >= 6 in 3 residues

    lines = (out / "summary.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header == ["id", "file", "length", "status", "reason", "mean_top_L5_prob"]
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert [r["file"] for r in rows] == stems and [r["status"] for r in rows] == ["ok"] * 6
    assert rows[4]["id"] == "..hidden" and rows[5]["mean_top_L5_prob"] == "nan"
    top5 = np.sort(matrices[0][np.triu_indices(40, 6)])[::-1][:8]
    assert float(rows[0]["mean_top_L5_prob"]) == pytest.approx(float(top5.mean()), abs=1e-3)


def test_non_ascii_record_id_is_predicted_and_resumed(predictor, tmp_path) -> None:
    # FASTA is UTF-8 but RR files are ASCII: the TARGET token replaces the non-ASCII letter (was a traceback).
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">prot\u00e9ine_1\n" + "ACDEFGHIKLMNPQ" + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run = predict_fasta(fasta, out, predictor, progress=False)
    assert run.ok == 1 and run.predicted == 1
    assert read_rr(out / "prot_ine_1.rr").target == "prot_ine_1"
    assert read_npz(out / "prot_ine_1.npz")[2] == "prot\u00e9ine_1"
    assert predict_fasta(fasta, out, predictor, progress=False).resumed == 1


def test_structure_map_that_is_not_utf8_is_an_input_error(tmp_path) -> None:
    (tmp_path / "map.tsv").write_bytes(b"prot\xe9ine\tx.pdb\n")
    with pytest.raises(InputError, match="not UTF-8"):
        StructureIndex(tmp_path / "map.tsv", kind="map")


def test_a_map_given_as_structures_points_to_structure_map(tmp_path) -> None:
    """Which option was used, not the suffix, decides how a file is read; a map passed to --structures fails, and
    the message names the option that reads maps."""
    (tmp_path / "map.tsv").write_text("p\tx.pdb\n")
    with pytest.raises(InputError, match=r"no chain could be read .* is --structure-map FILE"):
        StructureIndex(tmp_path / "map.tsv")


def test_threshold_and_top_options(model_dir, tmp_path) -> None:
    rng = np.random.default_rng(2)
    fasta = _write_fasta(tmp_path / "in.fasta", [("p", _random_sequence(rng, 50))])

    def run(out: Path, *option: str) -> tuple[list, np.ndarray]:
        assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress",
                     *option]) == 0
        doc = read_rr_document(out / "p.rr")
        assert doc.remarks and doc.methods[-2].startswith("weights sha256 ")
        assert doc.methods[-1].startswith("config sha256 ")
        return doc.contacts, read_npz(out / "p.npz")[0].astype(np.float32)

    contacts, probs = run(tmp_path / "top", "--top", "7")
    assert len(contacts) == 7
    # a threshold halfway between the 20th and 21st highest probability at separation >= 12: exactly 20 pairs pass
    upper = np.sort(probs[np.triu_indices(len(probs), 12)])[::-1]
    assert upper[19] > upper[20]
    threshold = float(upper[19] + upper[20]) / 2
    contacts, _ = run(tmp_path / "threshold", "--threshold", repr(threshold), "--min-separation", "12")
    assert len(contacts) == 20
    assert all(x.j - x.i >= 12 and probs[x.i - 1, x.j - 1] >= threshold for x in contacts)


def test_interrupted_then_rerun_is_byte_identical(model_dir, predictor, tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    records = [(f"rec{k}" if k % 4 else f"dup/{k}", _random_sequence(rng, int(n)))
               for k, n in enumerate(rng.integers(8, 60, size=10))]
    records.append(("dup_0", "ACDEFGHIKLMNP"))  # same safe name as dup/0 -> dup_0~2, in input order
    fasta = _write_fasta(tmp_path / "in.fasta", records)
    monkeypatch.setattr(run_mod, "CHUNK_RECORDS", 4)  # several chunks, several batches per chunk
    options = {"png": True, "progress": False, "batch_tokens": 100}

    full = predict_fasta(fasta, tmp_path / "full", predictor, **options)
    assert (full.predicted, full.resumed, full.ok) == (11, 0, 11)

    calls = {"n": 0}
    real_write_rr = run_mod.write_rr

    def dying_write_rr(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # killed between this record's npz and its rr
            raise KeyboardInterrupt
        return real_write_rr(*args, **kwargs)

    monkeypatch.setattr(run_mod, "write_rr", dying_write_rr)
    with pytest.raises(KeyboardInterrupt):
        predict_fasta(fasta, tmp_path / "resumed", predictor, **options)
    monkeypatch.setattr(run_mod, "write_rr", real_write_rr)
    partial = tmp_path / "resumed"
    assert len(list(partial.glob("*.rr"))) == 4 and len(list(partial.glob("*.npz"))) == 5
    assert not (partial / "summary.tsv").exists()
    (partial / ".rec5.npz.abcd_123.part.npz").write_bytes(b"half a file")  # what a SIGKILL leaves behind

    again = predict_fasta(fasta, partial, predictor, **options)
    assert (again.predicted, again.resumed) == (7, 4)
    assert _tree(partial) == _tree(tmp_path / "full")
    # And a third run with everything complete predicts nothing and changes nothing.
    third = predict_fasta(fasta, partial, predictor, **options)
    assert (third.predicted, third.resumed) == (0, 11)
    assert _tree(partial) == _tree(tmp_path / "full")


def test_another_models_matrix_left_by_an_interrupted_run_is_predicted_again(model_dir, predictor,
                                                                            tmp_path) -> None:
    """A run of another model stopped between a record's npz and its RR leaves that model's matrix beside the first
    model's RR (and PNG). Rerunning the first model's command must predict the record again and end byte-identical to
    an uninterrupted run; it took the record as complete, because only the RR named the model."""
    rng = np.random.default_rng(5)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", _random_sequence(rng, 40)), ("b", _random_sequence(rng, 30))])
    clean = tmp_path / "clean"
    predict_fasta(fasta, clean, predictor, progress=False, png=True)
    torch.manual_seed(1)
    other_dir = tmp_path / "other_model"
    save_model(ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                        pair_chunk_size=64, dropout=0.0)), other_dir)
    predict_fasta(fasta, tmp_path / "other", load_model(other_dir, device="cpu"), progress=False, png=True)
    assert (tmp_path / "other" / "a.npz").read_bytes() != (clean / "a.npz").read_bytes()

    mixed = tmp_path / "mixed"
    shutil.copytree(clean, mixed)
    shutil.copy(tmp_path / "other" / "a.npz", mixed / "a.npz")  # the other run's npz, written before its RR
    run = predict_fasta(fasta, mixed, predictor, progress=False, png=True)
    assert (run.predicted, run.resumed) == (1, 1)
    assert _tree(mixed) == _tree(clean)


def test_a_damaged_npz_is_predicted_again(model_dir, predictor, tmp_path) -> None:
    """An npz whose compressed bytes are damaged (zlib fails inside numpy) is not a complete record: the rerun predicts
    it again and ends byte-identical, instead of stopping with a zlib traceback."""
    rng = np.random.default_rng(6)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", _random_sequence(rng, 60))])
    clean = tmp_path / "clean"
    predict_fasta(fasta, clean, predictor, progress=False)
    damaged = tmp_path / "damaged"
    shutil.copytree(clean, damaged)
    raw = bytearray((damaged / "a.npz").read_bytes())
    with zipfile.ZipFile(damaged / "a.npz") as archive:
        info = archive.getinfo("probs.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the entry's compressed data
    for k in range(start + 40, start + 60):
        raw[k] ^= 0xFF
    (damaged / "a.npz").write_bytes(bytes(raw))
    # the damage is real: numpy cannot read the matrix back (zlib fails, which the old probe did not catch)
    with pytest.raises(zlib.error), np.load(damaged / "a.npz", allow_pickle=False) as data:
        data["probs"]
    run = predict_fasta(fasta, damaged, predictor, progress=False)
    assert (run.predicted, run.resumed) == (1, 0)
    assert _tree(damaged) == _tree(clean)


def test_a_structure_map_with_a_byte_order_mark_finds_its_first_id(tmp_path) -> None:
    """A map saved with a UTF-8 byte-order mark (as spreadsheet programs do) matches its first ID; the BOM was read as
    part of it, so that record silently found no structure."""
    (tmp_path / "s.pdb").write_text(_pdb_text("ACDEFGHIK"))
    (tmp_path / "map.tsv").write_bytes("\ufeffctf\ts.pdb\nother\ts.pdb\n".encode())
    index = StructureIndex(tmp_path / "map.tsv", kind="map")
    assert index.find("ctf") is not None and index.find("other") is not None


def test_rerun_with_other_settings_recomputes(model_dir, predictor, tmp_path) -> None:
    rng = np.random.default_rng(4)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", _random_sequence(rng, 30))])
    predict_fasta(fasta, tmp_path / "out", predictor, progress=False)
    run = predict_fasta(fasta, tmp_path / "out", predictor, progress=False, top=5)
    assert run.predicted == 1 and len(read_rr(tmp_path / "out" / "a.rr").contacts) == 5


def _distogram_network(seed: int) -> ContactModel:
    torch.manual_seed(seed)
    config = ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="resnet2d", pair_dim=8, head_blocks=2,
                         head_dilations=[1, 2], pair_chunk_size=16, dropout=0.0, separation="log",
                         max_separation=384, distogram_bins=list(DEFAULT_DISTOGRAM_BINS))
    return ContactModel(config)


def test_distogram_api_averages_members_and_carries_the_contact_probability() -> None:
    members = [_distogram_network(0), _distogram_network(1)]
    ensemble = Predictor(members, device="cpu")
    singles = [Predictor(m, device="cpu") for m in members]
    sequences = ["ACDEFGHIKLMNPQRSTVWY" * 4, "MKV" * 9]  # 80 and 27 residues, one padded batch
    assert ensemble.distogram_edges == list(DEFAULT_DISTOGRAM_BINS)
    outputs = ensemble.predict_distogram(sequences)
    plain = ensemble.predict(sequences)  # the same batches
    each = [single.predict_distogram(sequences) for single in singles]
    for k, (probs, dist) in enumerate(outputs):
        length = len(sequences[k])
        assert dist.shape == (length, length, 18) and dist.dtype == np.float32
        np.testing.assert_array_equal(probs, plain[k])
        np.testing.assert_array_equal(dist, dist.transpose(1, 0, 2))
        np.testing.assert_allclose(dist, (each[0][k][1] + each[1][k][1]) / 2, atol=1e-6)
        np.testing.assert_allclose(dist.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(dist[..., :5].sum(-1), probs, atol=1e-5)  # < 4 ... [7, 8) A: the contact mass
    mixed = Predictor([members[0], ContactModel(ModelConfig(hidden_size=8, head="pairwise"))], device="cpu")
    assert mixed.distogram_edges is None
    with pytest.raises(InputError, match="it has members with a binary contact head among them"):
        mixed.predict_distogram(["ACDE" * 5])


def test_predict_distogram_files_resume_and_refusal(model_dir, tmp_path, capsys) -> None:
    network = tmp_path / "distogram_model"
    save_model(_distogram_network(2), network)
    rng = np.random.default_rng(7)
    records = [("a", _random_sequence(rng, 50)), ("b", _random_sequence(rng, 23))]
    fasta = _write_fasta(tmp_path / "in.fasta", records)
    plain, with_dist = tmp_path / "plain", tmp_path / "dist"
    predict_fasta(fasta, plain, network, progress=False)
    run = predict_fasta(fasta, with_dist, network, progress=False, distogram=True)
    assert run.predicted == 2
    for rid, seq in records:
        with np.load(with_dist / f"{rid}.npz", allow_pickle=False) as data:
            dist, edges, probs = data["distogram"], data["distogram_edges"], data["probs"]
        assert dist.dtype == np.float16 and dist.shape == (len(seq), len(seq), 18)
        assert edges.tolist() == list(DEFAULT_DISTOGRAM_BINS)
        # the contact matrix and the RR contacts are those of a run without --distogram
        np.testing.assert_array_equal(probs, read_npz(plain / f"{rid}.npz")[0])
        assert read_rr(with_dist / f"{rid}.rr").contacts == read_rr(plain / f"{rid}.rr").contacts
        np.testing.assert_allclose(dist.astype(np.float32)[..., :5].sum(-1), probs.astype(np.float32), atol=3e-3)
    assert predict_fasta(fasta, with_dist, network, progress=False, distogram=True).resumed == 2
    # switching the option recomputes: a plain run drops the distogram, and it comes back when asked for again
    assert predict_fasta(fasta, with_dist, network, progress=False).predicted == 2
    assert "distogram" not in np.load(with_dist / "a.npz", allow_pickle=False).files
    assert predict_fasta(fasta, with_dist, network, progress=False, distogram=True).predicted == 2
    # a model without distance classes: one clear error, nothing written
    out = tmp_path / "refused"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--distogram",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "binary contact head" in err[0]
    assert not out.exists()


def test_has_distogram_reads_the_entry_header_and_edges(tmp_path) -> None:
    from protrnn.predict.writers import has_distogram, write_npz

    probs = np.full((3, 3), 0.5, np.float16)
    dist = np.full((3, 3, 3), 1 / 3, np.float32)
    write_npz(tmp_path / "plain.npz", probs, "ACD", "x")
    write_npz(tmp_path / "dist.npz", probs, "ACD", "x", distogram=dist, distogram_edges=[6.0, 8.0])
    assert not has_distogram(tmp_path / "plain.npz", 3, [6.0, 8.0])
    assert has_distogram(tmp_path / "dist.npz", 3, [6.0, 8.0])
    assert not has_distogram(tmp_path / "dist.npz", 3, [7.0, 8.0])  # other classes
    assert not has_distogram(tmp_path / "dist.npz", 4, [6.0, 8.0])  # another length
    (tmp_path / "broken.npz").write_bytes((tmp_path / "dist.npz").read_bytes()[:200])
    assert not has_distogram(tmp_path / "broken.npz", 3, [6.0, 8.0])
    with pytest.raises(ValueError, match="does not fit"):
        write_npz(tmp_path / "bad.npz", probs, "ACD", "x", distogram=dist, distogram_edges=[8.0])


def test_invalid_records_error_or_skip(model_dir, tmp_path, capsys) -> None:
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">good1\nACDEFGHIKLMN\n>bad\nACDE1FG\n>empty\n>good1\nMKVL\n>good2\nGGGGGGGGHHHH\n")
    out = tmp_path / "out"
    base = ["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "record 'bad'" in err and "position 5" in err and err.count("\n") == 1
    assert main([*base, "--skip-invalid"]) == 0
    lines = (out / "summary.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[3]) for r in rows] == [("good1", "ok"), ("bad", "skipped"), ("empty", "skipped"),
                                           ("good1", "skipped"), ("good2", "ok")]
    assert "position 5" in rows[1][4] and "empty" in rows[2][4] and "duplicate" in rows[3][4]
    assert sorted(p.name for p in out.glob("*.rr")) == ["good1.rr", "good2.rr"]


def test_a_rejected_fasta_leaves_no_empty_outdir(model_dir, tmp_path, capsys) -> None:
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">bad\nAC7DE\n>good\nACDEFGHIKLMN\n")
    out = tmp_path / "new" / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress"]) == 2
    assert "position 3" in capsys.readouterr().err and not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()  # not this run's to remove
    assert main(["predict", str(fasta), "-o", str(existing), "--model", str(model_dir), "--no-progress"]) == 2
    assert existing.is_dir()


def test_a_skipped_id_with_control_characters_is_escaped_in_the_summary(model_dir, tmp_path) -> None:
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">ok\nACDEFGHIKLMN\n>b\x1b[31mad\nACDEFGHIKLMN\n")
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress",
                 "--skip-invalid"]) == 0
    text = (out / "summary.tsv").read_text()
    assert "\x1b" not in text
    assert text.splitlines()[2].split("\t")[:4] == ["b\\x1b[31mad", "", "", "skipped"]


def test_sequences_as_written_give_the_outputs_of_their_clean_form(predictor, tmp_path) -> None:
    """Lower case, gaps, U/O and a trailing '*' are cleaned once, by the predictor: outputs equal the clean form's."""
    rng = np.random.default_rng(5)
    clean = [_random_sequence(rng, 41), _random_sequence(rng, 23), _random_sequence(rng, 30)]
    # Written by hand per the cleaning rules (docs/predict.md): the first record lower case over two lines, with gaps
    # '-' and '.' and a stop; the second with a stop only; the third with U for C and O for K, mixed case.
    dirty = [clean[0][:10].lower() + "--" + clean[0][10:20] + "\n" + "." + clean[0][20:].lower() + "*",
             clean[1] + "*",
             "U" + clean[2][:5].lower() + "O" + clean[2][5:]]
    clean[2] = "C" + clean[2][:5] + "K" + clean[2][5:]
    dirty_fasta = tmp_path / "dirty" / "in.fasta"
    clean_fasta = tmp_path / "clean" / "in.fasta"
    for path, sequences in ((dirty_fasta, dirty), (clean_fasta, clean)):
        path.parent.mkdir()
        _write_fasta(path, [(f"r{k}", seq) for k, seq in enumerate(sequences)])
    # The reader keeps what was written; only the predictor cleans.
    assert [r.sequence for r in read_fasta(dirty_fasta)] == [seq.replace("\n", "") for seq in dirty]
    runs = [predict_fasta(path, path.parent / "out", predictor, progress=False, batch_tokens=64)
            for path in (dirty_fasta, clean_fasta)]
    assert [row.length for row in runs[0].rows] == [41, 23, 32]
    assert _tree(dirty_fasta.parent / "out") == _tree(clean_fasta.parent / "out")
    for k, sequence in enumerate(clean):
        assert read_npz(dirty_fasta.parent / "out" / f"r{k}.npz")[1] == sequence
        assert read_rr(dirty_fasta.parent / "out" / f"r{k}.rr").sequence == sequence


def test_the_model_alphabet_decides_the_cleaning(model_dir, predictor, tmp_path) -> None:
    """A model whose model.json alphabet lacks W: the FASTA reader accepts W, the model's predictor rejects it."""
    restricted = tmp_path / "model"
    restricted.mkdir()
    meta = json.loads((model_dir / "model.json").read_text())
    meta["alphabet"]["residues"] = "ACDEFGHIKLMNPQRSTVY"
    (restricted / "model.json").write_text(json.dumps(meta))
    no_w = Predictor(load_network(model_dir).network, device="cpu",
                     metadata=read_model_metadata(restricted / "model.json"))
    assert no_w.alphabet.residues == "ACDEFGHIKLMNPQRSTVY"
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKLMN"), ("w", "mk-WLLAGHIKE"), ("b", "MKVLLAGHIKE")])
    assert [r.sequence for r in read_fasta(fasta)][1] == "mk-WLLAGHIKE"
    assert predict_fasta(fasta, tmp_path / "default", predictor, progress=False).ok == 3  # W is a residue there
    # The position is the one in the record as written (the gap counts), as for the reader's own errors.
    with pytest.raises(InputError, match=r"in\.fasta, record 'w', position 4: invalid residue letter 'W'"):
        predict_fasta(fasta, tmp_path / "strict", no_w, progress=False)
    run = predict_fasta(fasta, tmp_path / "skip", no_w, progress=False, skip_invalid=True)
    assert [(row.record_id, row.status, row.reason) for row in run.rows] == [
        ("a", "ok", ""), ("w", "skipped", "invalid residue letter 'W' at position 4"), ("b", "ok", "")]
    assert sorted(p.name for p in (tmp_path / "skip").glob("*.rr")) == ["a.rr", "b.rr"]


def test_structure_directory_finds_every_documented_suffix(tmp_path) -> None:
    """<id>.pdb|.ent|.cif|.mmcif, optionally .gz, any case; IDs like 1abcA pick chain A of 1abc.*."""
    names = ["1abc.mmcif", "2DEF.CIF.GZ", "3ghi.ent", "4jkl.pdb.gz", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("")
    index = StructureIndex(tmp_path)
    found = {rid: index.find(rid) for rid in ("1abcA", "2def", "3ghi_B", "4JKL", "notes", "5xyz")}
    assert {rid: (ref.path.name, ref.chain) if ref else None for rid, ref in found.items()} == {
        "1abcA": ("1abc.mmcif", "A"), "2def": ("2DEF.CIF.GZ", None), "3ghi_B": ("3ghi.ent", "B"),
        "4JKL": ("4jkl.pdb.gz", None), "notes": None, "5xyz": None}


def test_empty_fasta_is_an_error(model_dir, tmp_path, capsys) -> None:
    fasta = tmp_path / "empty.fasta"
    fasta.write_text("")
    assert main(["predict", str(fasta), "-o", str(tmp_path / "out"), "--model", str(model_dir),
                 "--no-progress"]) == 2
    assert "no FASTA records" in capsys.readouterr().err


@pytest.mark.skipif(not PSICOV_TAR.is_file(), reason="shared PSICOV150 data not available")
def test_structures_add_metrics_and_note_mismatches(predictor, tmp_path) -> None:
    names = ["1h2e", "1a3a"]
    with tarfile.open(PSICOV_TAR) as tar:
        for name in names:
            for member in (f"psicov150/pdb/{name}.pdb", f"psicov150/fasta/{name}.fasta"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                (tmp_path / Path(member).name).write_bytes(extracted.read())
    structures = tmp_path / "pdb"
    structures.mkdir()
    for name in names:
        (tmp_path / f"{name}.pdb").rename(structures / f"{name}.pdb")
    sequences = [(tmp_path / f"{n}.fasta").read_text().splitlines()[1].strip() for n in names]
    records = [("1h2e_A", sequences[0]), ("1a3aA", sequences[1]), ("1a3a_mut", "W" + sequences[1][1:]),
               ("9xyz_A", "ACDEFGHIKLMNPQ")]
    fasta = _write_fasta(tmp_path / "in.fasta", records)
    run = predict_fasta(fasta, tmp_path / "out", predictor, structures=structures, progress=False)
    notes = {row.record_id: (row.structure, row.evaluation) for row in run.rows}
    # both IDs are PDB-style: each found as chain A of its file
    assert notes["1h2e_A"] == ("1h2e.pdb chain A", "ok") and notes["1a3aA"] == ("1a3a.pdb chain A", "ok")
    assert notes["9xyz_A"] == ("", "no structure found")
    header, *lines = (tmp_path / "out" / "summary.tsv").read_text().splitlines()
    columns = header.split("\t")
    assert {"long/P@L/5", "medium_long/P@L/5", "long/n_contacts", "bin/96+/P@L/5", "chance/bin/96+/P@L/5",
            "chance/medium_long/P@L/5"} <= set(columns)
    first = dict(zip(columns, lines[0].split("\t"), strict=True))
    assert 0.0 <= float(first["long/P@L/5"]) <= 1.0 and int(first["long/n_contacts"]) > 0
    # the PDB route scores what the npz holds against the chain read from the PDB file, by the project's metrics
    from protrnn.data.structure import read_structure
    from protrnn.evaluation.metrics import evaluate_contacts

    chain = read_structure(structures / "1h2e.pdb")
    assert chain.sequence == sequences[0]
    expected = evaluate_contacts(read_npz(tmp_path / "out" / "1h2e_A.npz")[0].astype(np.float32),
                                 chain.contact_map(), chain.observed)
    row = next(dict(zip(columns, line.split("\t"), strict=True)) for line in lines
               if line.split("\t")[0] == "1h2e_A")
    for key in ("long/P@L/5", "medium_long/P@L/5", "short/P@L/5"):
        assert float(row[key]) == pytest.approx(expected[key], abs=5e-5), key
    assert int(row["long/n_contacts"]) == int(np.triu(chain.contact_map() & np.outer(chain.observed, chain.observed),
                                                      k=24).sum())
    # the RR file alone gives every range's top-L/5 (by default it holds each range's top L): its lines of a range,
    # without pairs of unobserved residues, scored on the structure, are the summary's figures
    _, _, rr_contacts = read_rr(tmp_path / "out" / "1h2e_A.rr")
    contact_map, length = chain.contact_map(), len(chain.sequence)
    for name, low, high in (("short", 6, 11), ("medium", 12, 23), ("long", 24, length)):
        ranked = [(c.i - 1, c.j - 1) for c in rr_contacts if low <= c.j - c.i <= high
                  and chain.observed[c.i - 1] and chain.observed[c.j - 1]]
        top = ranked[:max(1, length // 5)]
        assert len(top) == max(1, length // 5), name
        assert float(row[f"{name}/P@L/5"]) == pytest.approx(sum(contact_map[i, j] for i, j in top) / len(top),
                                                             abs=1e-4), name

    # An explicit map: the mutated record points at 1a3a, whose sequence differs -> noted, not a crash.
    mapping = tmp_path / "map.tsv"
    mapping.write_text("# id\tpath\tchain\n1a3a_mut\tpdb/1a3a.pdb\tA\n1h2e_A\tpdb/1h2e.pdb\n")
    run = predict_fasta(fasta, tmp_path / "out2", predictor, structure_map=mapping, progress=False)
    notes = {row.record_id: row.evaluation for row in run.rows}
    assert notes["1a3a_mut"].startswith("sequence mismatch") and notes["1h2e_A"] == "ok"
    assert notes["1a3aA"] == "no structure found"
    bad_map = tmp_path / "bad.tsv"
    bad_map.write_text("only-one-field\n")
    with pytest.raises(InputError, match="line 1"):
        predict_fasta(fasta, tmp_path / "out3", predictor, structure_map=bad_map, progress=False)


#: Peak RSS allowed for predicting one 2,000-residue chain with the tiny test model (python + torch ~ 300 MB,
#: the 2,000 x 2,000 float32 output 16 MB); and the growth allowed over a 50-residue prediction in the same process.
#: The growth is the scoring tiles' pair tensors (each capped at 32 MiB, several alive at once) plus what the heap
#: keeps: measured 202 MB with glibc's defaults and 225-286 MB under CI's MALLOC_MMAP_MAX_=0 (nothing handed back to
#: the OS), so 256 failed now and then in CI; a whole-map (untiled) pass would add 4 x 2,000^2 x 8 bytes = 128 MB per
#: pair tensor on top of that.
MEMORY_BOUND_MB = 1024
GROWTH_BOUND_MB = 384


@pytest.mark.slow
def test_2000_residue_chain_in_bounded_memory(model_dir, tmp_path) -> None:
    script = textwrap.dedent(f"""
        import resource
        import numpy as np
        from protrnn.model.predictor import load_model
        def peak_mb():
            # VmHWM: this process image's own high-water mark (ru_maxrss would carry the parent's over exec).
            try:
                with open("/proc/self/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) // 1024
            except OSError:
                pass
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        model = load_model({str(model_dir)!r}, device="cpu")
        rng = np.random.default_rng(0)
        def seq(n):
            return "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=n))
        model.predict([seq(50)])
        before = peak_mb()
        (probs,) = model.predict([seq(2000)])
        assert probs.shape == (2000, 2000) and np.isfinite(probs).all()
        print(before, peak_mb())
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr
    before_mb, peak_mb = map(int, result.stdout.split())
    assert peak_mb < MEMORY_BOUND_MB, f"peak RSS {peak_mb} MB"
    assert peak_mb - before_mb < GROWTH_BOUND_MB, f"2,000 residues added {peak_mb - before_mb} MB"


TS50 = DATA / "ts50_gvp" / "ts50.json.gz"


@pytest.mark.skipif(not TS50.is_file(), reason="shared TS50 data not available")
def test_a_collection_finds_pdb_style_ids_as_a_directory_does(tmp_path) -> None:
    """A directory finds `1abcA` as chain A of 1abc.pdb; a collection whose chains were read as `1abc_A` (prepare's and
    the archive readers' names) must find it too: PDB code in any case, chain ID as written, never another chain."""
    import dataclasses

    from protrnn.data.dataset import save_dataset
    from protrnn.data.sources import iter_chains

    first, second = [o.chain for o in iter_chains(TS50) if o.chain is not None][:2]
    chains = [dataclasses.replace(first, id="1abc_A"), dataclasses.replace(second, id="1abc_B")]
    save_dataset(chains, tmp_path / "pdb.npz")
    index = StructureIndex(tmp_path / "pdb.npz")
    found = {rid: index.find(rid) for rid in ("1abc_A", "1abcA", "1ABC:B", "1abc-B", "1abca", "1abcC", "2abcA")}
    assert {rid: ref.loaded.id if ref else None for rid, ref in found.items()} == {
        "1abc_A": "1abc_A", "1abcA": "1abc_A", "1ABC:B": "1abc_B", "1abc-B": "1abc_B", "1abca": None, "1abcC": None,
        "2abcA": None}
    assert found["1abcA"].loaded.sequence == first.sequence and found["1ABC:B"].loaded.sequence == second.sequence


@pytest.mark.skipif(not TS50.is_file(), reason="shared TS50 data not available")
def test_structures_from_a_chain_collection_match_records_by_id(predictor, tmp_path) -> None:
    """--structures FILE: CATH-style JSON (TS50) or a prepared .npz, chains matched by record ID."""
    from protrnn.data.dataset import save_dataset
    from protrnn.data.sources import iter_chains
    from protrnn.evaluation.metrics import evaluate_contacts

    chains = [o.chain for o in iter_chains(TS50) if o.chain is not None][:2]
    fasta = _write_fasta(tmp_path / "ts50.fasta", [(c.id, c.sequence) for c in chains] + [("unknown", "ACDEFGHIKLM")])
    save_dataset(chains, tmp_path / "two.npz")
    for source in (TS50, tmp_path / "two.npz"):
        out = tmp_path / f"out_{source.suffix}"
        run = predict_fasta(fasta, out, predictor, structures=source, progress=False)
        rows = {row.record_id: row for row in run.rows}
        assert rows["unknown"].evaluation == "no structure found"
        for chain in chains:
            assert rows[chain.id].evaluation == "ok" and rows[chain.id].structure == source.name
            expected = evaluate_contacts(read_npz(out / f"{chain.id}.npz")[0].astype(np.float32),
                                         chain.contact_map(), chain.observed)
            assert rows[chain.id].metrics["long/P@L/5"] == pytest.approx(expected["long/P@L/5"])
            assert rows[chain.id].metrics["bin/24-47/P@L/5"] == pytest.approx(expected["bin/24-47/P@L/5"])
            # The chance level, counted by hand: m candidate pairs 24+ apart (both observed), c of them contacts,
            # n = L // 5 looked at -> min(n, m) * c / (m * n).
            truth, seen, length = chain.contact_map(), chain.observed, len(chain)
            candidates = [(i, j) for i in range(length) for j in range(i + 24, length) if seen[i] and seen[j]]
            hits = sum(bool(truth[i, j]) for i, j in candidates)
            looked_at = max(1, length // 5)
            by_hand = min(looked_at, len(candidates)) * hits / (len(candidates) * looked_at)
            assert rows[chain.id].metrics["chance/long/P@L/5"] == pytest.approx(by_hand, rel=1e-12)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no chain could be read"):
        predict_fasta(fasta, tmp_path / "out_empty", predictor, structures=empty, progress=False)


# ------------------------------------------------------------------------------------------------ review fixes
_THREE_LETTER = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE",
                 "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER",
                 "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR"}


def _backbone(length: int) -> np.ndarray:
    """N, CA, C, centroid per residue (L x 4 x 3) along a helix: fake but non-degenerate geometry."""
    turn = np.deg2rad(100.0) * np.arange(length)
    ca = np.stack([2.3 * np.cos(turn), 2.3 * np.sin(turn), 1.5 * np.arange(length)], axis=1)
    return np.stack([ca + [-0.6, 1.2, -0.4], ca, ca + [1.3, 0.5, 0.3], ca + [0.9, -1.1, 0.8]], axis=1)


def _cgdms_text(sequence: str) -> str:
    """A cgdms per-chain file: sequence, predicted SS, then N, CA, C and centroid (12 numbers) per residue."""
    rows = [" ".join(f"{v:.3f}" for v in atoms.ravel()) for atoms in _backbone(len(sequence))]
    return "\n".join([sequence, "C" * len(sequence), *rows]) + "\n"


def _pdb_text(sequence: str, chain: str = "A") -> str:
    lines, serial = [], 1
    for number, (letter, atoms) in enumerate(zip(sequence, _backbone(len(sequence)), strict=True), start=1):
        for name, (x, y, z) in zip(("N", "CA", "C"), atoms[:3], strict=True):
            lines.append(f"ATOM  {serial:5d}  {name:<3} {_THREE_LETTER[letter]} {chain}{number:4d}    "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {name[0]}")
            serial += 1
    return "\n".join([*lines, "END"]) + "\n"


def _summary(out: Path) -> list[dict[str, str]]:
    header, *lines = (out / "summary.tsv").read_text(encoding="utf-8").splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def test_the_summary_names_the_chain_a_pdb_style_id_picked(model_dir, tmp_path) -> None:
    """`1xyzB` found in a directory is chain B of 1xyz.pdb: the structure column says so (it named the file only, so
    chain A and chain B of one file read alike); a record found by its own file name keeps the file name alone."""
    first, second = "MKTAYIAKQRQISFVKSHFSRQLEERLGLI", "GSHMLEDPVDAFQLSRQEELLKRAAEG"
    (tmp_path / "pdb").mkdir()
    both = _pdb_text(first, "A").removesuffix("END\n") + _pdb_text(second, "B")
    (tmp_path / "pdb" / "1xyz.pdb").write_text(both)
    (tmp_path / "pdb" / "solo.pdb").write_text(_pdb_text(first, "A"))
    fasta = _write_fasta(tmp_path / "in.fasta", [("1xyzB", second), ("1xyzA", first), ("solo", first)])
    assert main(["predict", str(fasta), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--no-progress",
                 "--structures", str(tmp_path / "pdb")]) == 0
    assert [(r["id"], r["structure"], r["evaluation"]) for r in _summary(tmp_path / "out")] == [
        ("1xyzB", "1xyz.pdb chain B", "ok"), ("1xyzA", "1xyz.pdb chain A", "ok"), ("solo", "solo.pdb", "ok")]


def test_structure_option_decides_the_kind_of_source_not_the_suffix(model_dir, tmp_path, capsys) -> None:
    """--structures FILE.txt is a cgdms chain (was read as a TSV map); --structure-map with any suffix is a map (was
    read as a chain collection); --structure-map DIR is refused (was taken as a structure directory)."""
    sequence = "MKTAYIAKQRQISFVKSHFSRQLEERLGLI"  # 30 residues, every one observed
    (tmp_path / "3OWT_C.txt").write_text(_cgdms_text(sequence))
    (tmp_path / "pdb").mkdir()
    (tmp_path / "pdb" / "model.pdb").write_text(_pdb_text(sequence))
    (tmp_path / "pairs.list").write_text("# id\tpath\tchain\n3OWT_C\tpdb/model.pdb\tA\n")
    fasta = _write_fasta(tmp_path / "in.fasta", [("3OWT_C", sequence), ("other", "ACDEFGHIKLMN")])
    base = ["--model", str(model_dir), "--no-progress"]
    # pairs 6-11 apart among 30 residues: (30 - 6) + ... + (30 - 11)
    short_pairs = sum(30 - s for s in range(6, 12))
    for option, source, name in (("--structures", tmp_path / "3OWT_C.txt", "3OWT_C.txt"),
                                 ("--structure-map", tmp_path / "pairs.list", "model.pdb chain A")):
        out = tmp_path / f"out{option}"
        assert main(["predict", str(fasta), "-o", str(out), *base, option, str(source)]) == 0
        capsys.readouterr()
        rows = _summary(out)
        assert [(r["id"], r["structure"], r["evaluation"]) for r in rows] == [
            ("3OWT_C", name, "ok"), ("other", "", "no structure found")]
        assert rows[0]["short/n_pairs"] == str(short_pairs)
    assert main(["predict", str(fasta), "-o", str(tmp_path / "dir"), *base, "--structure-map", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"protrnn: error: {tmp_path}: --structure-map: a directory, not a map file")
    assert err.count("\n") == 1 and not (tmp_path / "dir").exists()
    with pytest.raises(InputError, match="not both"):
        predict_fasta(fasta, tmp_path / "both", model_dir, structures=tmp_path / "pdb",
                      structure_map=tmp_path / "pairs.list", progress=False)


_TINY = ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8, dropout=0.0)


def _checkpoint_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    return {f"net.{name}": tensor for name, tensor in ContactModel(config).state_dict().items()}


def _malformed_checkpoint(case: str) -> tuple[dict, str]:
    """(content for torch.save, the reason expected in the error) per malformed case."""
    hparams = {"model": _TINY.to_dict()}
    state = _checkpoint_state(_TINY)
    first = next(iter(state))
    return {
        "state_list": ({"state_dict": [1, 2], "hyper_parameters": hparams},
                       "not a Lightning checkpoint: its 'state_dict' is a list, not a dict"),
        "state_int_key": ({"state_dict": {**state, 3: torch.zeros(1)}, "hyper_parameters": hparams},
                          "not a Lightning checkpoint: its 'state_dict' has a key that is not a name (3)"),
        "hparams_list": ({"state_dict": state, "hyper_parameters": ["model"]},
                         "not a Lightning checkpoint: its 'hyper_parameters' is a list, not a dict"),
        "not_tensor": ({"state_dict": {**state, first: 1.5}, "hyper_parameters": hparams},
                       f"parameter '{first[len('net.'):]}' is a float, not a tensor"),
        "unknown_key": ({"state_dict": state, "hyper_parameters": {"model": {**_TINY.to_dict(), "colour": 1}}},
                        "invalid model architecture in the checkpoint's hyper-parameters: model config: unknown "
                        "key(s) 'colour'"),
        "bad_value": ({"state_dict": state, "hyper_parameters": {"model": {**_TINY.to_dict(), "hidden_size": "x"}}},
                      "model config key 'hidden_size': must be a positive integer, got 'x'"),
    }[case]


@pytest.mark.parametrize("case", ["state_list", "state_int_key", "hparams_list", "not_tensor", "unknown_key",
                                  "bad_value"])
def test_malformed_checkpoints_are_one_line_errors_naming_the_file(case: str, tmp_path, capsys) -> None:
    """Checkpoints that torch.load(weights_only=True) reads but whose content is not what protrnn train writes: one
    line naming the file each (tracebacks before: AttributeError, TypeError; a config error without the file)."""
    content, reason = _malformed_checkpoint(case)
    path = tmp_path / f"{case}.ckpt"
    torch.save(content, path)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL")])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"protrnn: error: {path}: ") and reason in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_the_checkpoint_the_malformed_ones_are_made_from_loads(tmp_path) -> None:
    torch.save({"state_dict": _checkpoint_state(_TINY), "hyper_parameters": {"model": _TINY.to_dict()}},
               tmp_path / "good.ckpt")
    assert load_model(tmp_path / "good.ckpt", device="cpu").config == _TINY


def test_the_png_counts_residues_from_one_as_the_rr_file_does() -> None:
    """The RR file's pair 3 6 (1-based) is matrix cell [2, 5]: the image must show it centred on x = 6, y = 3."""
    from protrnn.predict.writers import contact_map_figure

    probs = np.zeros((10, 10), dtype=np.float16)
    probs[2, 5] = probs[5, 2] = 1.0
    axes = contact_map_figure(probs, "x").axes[0]
    [image] = axes.get_images()
    left, right, bottom, top = image.get_extent()
    assert (left, right, bottom, top) == (0.5, 10.5, 10.5, 0.5)  # 10 cells of width 1 from 0.5: centres 1..10
    column, row = 5, 2
    assert left + (column + 0.5) * (right - left) / 10 == 6.0 and top + (row + 0.5) * (bottom - top) / 10 == 3.0


def test_an_id_with_dollar_signs_draws_its_png(tmp_path) -> None:
    """'$...$' in a title was parsed as mathtext: an ID like 'x$^$' crashed --png."""
    from protrnn.predict.writers import write_png

    probs = np.full((12, 12), 0.25, dtype=np.float16)
    for title in ("x$^$ (L=12)", "$\\frac{$ (L=12)", "a$b$c (L=12)"):
        path = tmp_path / "map.png"
        write_png(path, probs, title)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        path.unlink()


def test_a_rewrite_without_png_removes_the_old_png(model_dir, tmp_path) -> None:
    """A record written again without --png (its sequence changed) loses the PNG that showed the old prediction; a
    PNG with no prediction npz beside it is not protrnn's and stays, and a record resumed keeps its own PNG."""
    out = tmp_path / "out"
    base = ["--model", str(model_dir), "--no-progress"]
    first = _write_fasta(tmp_path / "v1.fasta", [("a", "ACDEFGHIKLMNPQ"), ("b", "MKVLAAGGHHKKLL")])
    assert main(["predict", str(first), "-o", str(out), *base, "--png"]) == 0
    (out / "c.png").write_bytes(b"the user's own picture")
    second = _write_fasta(tmp_path / "v2.fasta", [("a", "WWWWACDEFGHIKL"), ("b", "MKVLAAGGHHKKLL"), ("c", "MKVLAAGG")])
    assert main(["predict", str(second), "-o", str(out), *base]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "a.rr", "b.npz", "b.png", "b.rr", "c.npz", "c.png",
                                                    "c.rr", "summary.tsv"]
    assert read_npz(out / "a.npz")[1] == "WWWWACDEFGHIKL"
    assert (out / "c.png").read_bytes() == b"the user's own picture"


def test_a_record_skipped_on_rerun_loses_its_earlier_outputs(model_dir, tmp_path) -> None:
    """--skip-invalid: a record that was predicted before and is skipped now has no .rr/.npz/.png left to pass for
    its prediction; files of other records (a kept record of the same ID, another ID with the same safe name, one
    not in this FASTA) stay."""
    out = tmp_path / "out"
    base = ["--model", str(model_dir), "--no-progress", "--skip-invalid"]
    first = _write_fasta(tmp_path / "v1.fasta", [("a", "ACDEFGHIKLMN"), ("b", "MKVLAAGGHHKK"), ("b/x", "GGHHKKLLMMNN"),
                                                 ("b_x", "LLMMNNPPQQRR"), ("gone", "PPQQRRSSTTVV")])
    assert main(["predict", str(first), "-o", str(out), *base, "--png"]) == 0
    before = {p.name for p in out.iterdir()}
    assert {"b.rr", "b_x.rr", "b_x~2.rr", "gone.rr"} <= before
    # now b has a bad letter, b_x too (its old outputs are b_x~2.*, the second of that safe name), and a appears
    # twice (the duplicate is skipped: its ID is the kept record's, whose files stay)
    second = _write_fasta(tmp_path / "v2.fasta", [("a", "ACDEFGHIKLMN"), ("b", "MKV1AAGGHHKK"), ("b/x", "GGHHKKLLMMNN"),
                                                  ("b_x", "LLMMNN7PQQRR"), ("a", "WWWWWWWWWWWW")])
    assert main(["predict", str(second), "-o", str(out), *base, "--png"]) == 0
    assert [(r["id"], r["status"]) for r in _summary(out)] == [("a", "ok"), ("b", "skipped"), ("b/x", "ok"),
                                                                ("b_x", "skipped"), ("a", "skipped")]
    after = {p.name for p in out.iterdir()}
    assert before - after == {"b.rr", "b.npz", "b.png", "b_x~2.rr", "b_x~2.npz", "b_x~2.png"}
    assert after - before == set()
    assert read_npz(out / "a.npz")[1] == "ACDEFGHIKLMN" and read_npz(out / "b_x.npz")[2] == "b/x"


def test_a_record_without_an_id_removes_nothing(model_dir, tmp_path) -> None:
    """A record with an empty header is skipped and listed as #2 (its place in the file); that is no ID, so the
    outputs an earlier run wrote for a record really named '#2' stay."""
    out = tmp_path / "out"
    base = ["--model", str(model_dir), "--no-progress", "--skip-invalid"]
    first = _write_fasta(tmp_path / "v1.fasta", [("a", "ACDEFGHIKLMN"), ("#2", "MKVLAAGGHHKK")])
    assert main(["predict", str(first), "-o", str(out), *base]) == 0
    before = {p.name for p in out.iterdir()}
    assert {"2.rr", "2.npz"} <= before
    second = tmp_path / "v2.fasta"
    second.write_text(">a\nACDEFGHIKLMN\n>\nMKVLAAGGHHKK\n")
    assert main(["predict", str(second), "-o", str(out), *base]) == 0
    assert [(r["id"], r["status"]) for r in _summary(out)] == [("a", "ok"), ("#2", "skipped")]
    assert {p.name for p in out.iterdir()} == before


def test_thresholds_that_differ_beyond_six_digits_do_not_resume_each_other(model_dir, tmp_path) -> None:
    fasta = _write_fasta(tmp_path / "in.fasta", [("p", "ACDEFGHIKLMNPQRSTVWYACDEFGHIKL")])
    out = tmp_path / "out"
    base = ["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress", "--threshold"]
    calls: list[str] = []
    assert main([*base, "0.3265000"]) == 0
    run = predict_fasta(fasta, out, model_dir, threshold=0.3265001, progress=False, on_record=calls.append)
    assert (run.predicted, run.resumed, calls) == (1, 0, ["p"])
    assert "threshold 0.3265001 pairs" in read_rr_document(out / "p.rr").remarks[0]
    again = predict_fasta(fasta, out, model_dir, threshold=0.3265001, progress=False)
    assert (again.predicted, again.resumed) == (0, 1)


def test_mean_top_l5_keeps_its_documented_separation_whatever_the_rr_uses(model_dir, tmp_path) -> None:
    """summary.tsv's mean_top_L5_prob is the mean of the top L/5 pairs with |i-j| >= 6 (docs/predict.md), also when
    --min-separation changes the RR selection."""
    rng = np.random.default_rng(8)
    fasta = _write_fasta(tmp_path / "in.fasta", [("p", _random_sequence(rng, 40))])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress",
                 "--min-separation", "30"]) == 0
    probs = read_npz(out / "p.npz")[0].astype(np.float64)

    def top_mean(separation: int) -> float:
        values = sorted((probs[i, j] for i in range(40) for j in range(i + separation, 40)), reverse=True)
        return float(np.mean(values[:8]))  # L/5 = 8

    assert abs(top_mean(6) - top_mean(30)) > 1e-3  # the test tells the two apart
    assert float(_summary(out)[0]["mean_top_L5_prob"]) == pytest.approx(top_mean(6), abs=5e-5)
    assert all(c.j - c.i >= 30 for c in read_rr(out / "p.rr").contacts)  # the RR keeps its own cut


def test_windows_device_names_and_bidi_overrides_in_ids(model_dir, tmp_path) -> None:
    """An ID 'CON' is written to _CON.* (CON.rr is the console on Windows), '-x' to x.*; a bidi override in an ID
    is escaped in summary.tsv (it reordered the rest of the line on screen)."""
    fasta = _write_fasta(tmp_path / "in.fasta", [("CON", "ACDEFGHIKL"), ("-x", "MKVLAAGGHH"),
                                                 ("evil\u202egnp.exe", "GGHHKKLLMM")])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.rr")) == ["_CON.rr", "evil_gnp.exe.rr", "x.rr"]
    text = (out / "summary.tsv").read_text(encoding="utf-8")
    assert "\u202e" not in text
    assert [(r["id"], r["file"]) for r in _summary(out)] == [("CON", "_CON"), ("-x", "x"),
                                                             ("evil\\u202egnp.exe", "evil_gnp.exe")]


def test_skip_invalid_lists_every_record_of_a_concatenated_latin1_fasta(model_dir, tmp_path) -> None:
    """A FASTA joined by cat (a BOM before a header mid-file) with a Latin-1 byte in one sequence: with --skip-invalid
    every record is either predicted or listed (the byte aborted the run; the record after the BOM vanished)."""
    fasta = tmp_path / "in.fasta"
    fasta.write_bytes(b">a\nACDEFGHIKL\n>bad\nMKV\xe9AAGGHH\n\xef\xbb\xbf>c\nGGHHKKLLMM\n")
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(model_dir), "--no-progress",
                 "--skip-invalid"]) == 0
    assert [(r["id"], r["status"], r["reason"]) for r in _summary(out)] == [
        ("a", "ok", ""), ("bad", "skipped", "invalid residue letter (byte 0xe9, not UTF-8) at position 4"),
        ("c", "ok", "")]
    assert read_npz(out / "c.npz")[1] == "GGHHKKLLMM"


def test_removing_a_skipped_records_files_tells_names_by_case_and_by_file(tmp_path) -> None:
    """remove_skipped_outputs on a case-sensitive file system: 'b' (skipped) and 'B' (kept) are two records with
    files of their own. On a case-insensitive one (mimicked by a symlink c.npz -> C.npz) the kept record 'c' writes
    its stem 'c' into the C.npz an earlier record 'C' created: that file is the kept one's, also for the skipped
    duplicate 'c'."""
    from protrnn.predict.writers import write_npz

    probs = np.zeros((3, 3), dtype=np.float16)
    for stem, record_id in (("b", "b"), ("B", "B"), ("C", "c")):
        write_npz(tmp_path / f"{stem}.npz", probs, "ACD", record_id)
        (tmp_path / f"{stem}.rr").write_text("rr")
    (tmp_path / "c.npz").symlink_to(tmp_path / "C.npz")
    assert run_mod.remove_skipped_outputs(tmp_path, ["b", "c"], ["B", "c"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B.npz", "B.rr", "C.npz", "C.rr", "c.npz"]


def _export_copy(model_dir: Path, directory: Path, state: dict[str, torch.Tensor] | None = None,
                 json_text: str | None = None) -> Path:
    """A copy of the fixture's export in ``directory``, with other weights or another model.json where given."""
    from safetensors.torch import save_file

    directory.mkdir()
    if state is None:
        shutil.copyfile(model_dir / "model.safetensors", directory / "model.safetensors")
    else:
        save_file(state, str(directory / "model.safetensors"))
    (directory / "model.json").write_text((model_dir / "model.json").read_text() if json_text is None else json_text)
    return directory


def test_float64_weights_beyond_float32_are_refused_naming_file_and_parameter(model_dir, tmp_path) -> None:
    """A float64 1e300 is finite but infinite as the float32 the network holds: it was let through (NaN
    probabilities from the API, a late traceback from the command); refused in one line now, in range loads."""
    from safetensors.torch import load_file

    state = {k: v.double() for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    state["head.out.weight"] = state["head.out.weight"].clone()
    state["head.out.weight"].view(-1)[0] = 1e300
    export = _export_copy(model_dir, tmp_path / "f64_overflow", state)
    with pytest.raises(InputError) as info:
        load_model(export, device="cpu")
    assert str(info.value).startswith(f"{export / 'model.safetensors'}: parameter 'head.out.weight' contains NaN "
                                      "or infinite values as float32")
    state["head.out.weight"].view(-1)[0] = 3.0e38  # within float32's range (largest 3.4028e38): loads
    fine = load_model(_export_copy(model_dir, tmp_path / "f64_in_range", state), device="cpu")
    assert np.isfinite(fine.predict(["ACDEFGHIKL"])[0]).all()


def test_float64_checkpoint_weights_beyond_float32_are_one_line(tmp_path, capsys) -> None:
    """The same for a checkpoint, whose weights load_state_dict copied into float32 (inf) after the check."""
    checkpoint_state = {f"net.{k}": v.double() for k, v in ContactModel(_TINY).state_dict().items()}
    checkpoint_state["net.head.out.weight"].view(-1)[0] = -1e300
    checkpoint = tmp_path / "f64_overflow.ckpt"
    torch.save({"state_dict": checkpoint_state, "hyper_parameters": {"model": _TINY.to_dict()}}, checkpoint)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL")])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(checkpoint), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"protrnn: error: {checkpoint}: parameter 'head.out.weight' contains NaN or infinite "
                          "values as float32"), err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize(("case", "reason"), [
    ("sparse", "parameter 'embedding.weight' is a sparse_coo tensor; weights must be dense (strided) tensors"),
    ("meta", "parameter 'embedding.weight' is a meta tensor (a shape without values)"),
], ids=["sparse", "meta"])
def test_a_sparse_or_meta_tensor_in_a_checkpoint_is_one_line(case: str, reason: str, tmp_path, capsys) -> None:
    """torch.load(weights_only=True) reads both; the checks of shape and dtype let them through to a traceback."""
    state = _checkpoint_state(_TINY)
    dense = state["net.embedding.weight"]
    state["net.embedding.weight"] = (dense.to_sparse() if case == "sparse"
                                     else torch.empty(dense.shape, dtype=dense.dtype, device="meta"))
    path = tmp_path / f"{case}.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"model": _TINY.to_dict()}}, path)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL")])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"protrnn: error: {path}: {reason}\n" and not out.exists()


@pytest.mark.parametrize(("case", "reason"), [
    ("bignum", "not a protrnn model: unreadable JSON (Exceeds the limit (4300 digits) for integer string "
               "conversion: value has 5001 digits)"),
    ("deep", "not a protrnn model: unreadable JSON (arrays or objects nested too deeply)"),
], ids=["bignum", "deep"])
def test_json_python_cannot_hold_is_one_line_naming_the_file(case: str, reason: str, model_dir, tmp_path,
                                                              capsys) -> None:
    """A 5,001-digit integer (ValueError) or `[` nested 100,000 deep (RecursionError) was a traceback."""
    text = (model_dir / "model.json").read_text()
    hostile = (text.replace('"hidden_size": 8', '"hidden_size": 1' + "0" * 5000) if case == "bignum"
               else "[" * 100_000 + "]" * 100_000)
    assert hostile != text
    export = _export_copy(model_dir, tmp_path / case, json_text=hostile)
    fasta = _write_fasta(tmp_path / "in.fasta", [("a", "ACDEFGHIKL")])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(export), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"protrnn: error: {export / 'model.json'}: {reason}\n" and not out.exists()
    ensemble = tmp_path / f"{case}_ensemble"
    ensemble.mkdir()
    (ensemble / "ensemble.json").write_text(hostile if case == "deep" else
                                            '{"format": "protrnn-ensemble", "format_version": 1' + "0" * 5000 + "}")
    with pytest.raises(InputError) as info:
        load_model(ensemble, device="cpu")
    assert str(info.value).startswith(f"{ensemble / 'ensemble.json'}: not a protrnn ensemble: unreadable JSON (")


_DESCRIPTION_CAP = 8 * 2**20  # 8 MiB: the largest model.json / ensemble.json read (docstring of model.io)


def test_a_description_over_8_mib_is_refused_before_it_is_read(model_dir, tmp_path) -> None:
    """model.json and ensemble.json were read whole, whatever their size; now one line past 8 MiB. Valid JSON padded
    with spaces: the size alone decides (exactly 8 MiB still loads), and a pickle of any size is still named one."""
    text = (model_dir / "model.json").read_text()
    at_cap = _export_copy(model_dir, tmp_path / "at_cap", json_text=text + " " * (_DESCRIPTION_CAP - len(text)))
    assert (at_cap / "model.json").stat().st_size == _DESCRIPTION_CAP
    assert load_model(at_cap, device="cpu").config.hidden_size == 8
    over = _export_copy(model_dir, tmp_path / "over", json_text=text + " " * (_DESCRIPTION_CAP + 1 - len(text)))
    with pytest.raises(InputError) as info:
        load_model(over, device="cpu")
    assert str(info.value) == (f"{over / 'model.json'}: not a protrnn model: larger than 8 MiB (protrnn writes "
                               "model.json files of a few kB)")
    pickled = tmp_path / "big.pt"
    with open(pickled, "wb") as handle:
        handle.write(b"PK\x03\x04")
        handle.truncate(_DESCRIPTION_CAP * 4)
    with pytest.raises(InputError, match="this is a pickle / PyTorch checkpoint"):
        load_model(pickled, device="cpu")


def test_an_ensemble_json_over_8_mib_is_refused_before_it_is_read(model_dir, tmp_path) -> None:
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    for name in ("member-1", "member-2"):
        shutil.copytree(model_dir, ensemble / name)
    document = json.dumps({"format": "protrnn-ensemble", "format_version": 1, "members": ["member-1", "member-2"],
                           "combine": "mean_probability"})
    (ensemble / "ensemble.json").write_text(document)
    assert len(load_model(ensemble, device="cpu").models) == 2
    (ensemble / "ensemble.json").write_text(document + " " * (_DESCRIPTION_CAP + 1 - len(document)))
    with pytest.raises(InputError) as info:
        load_model(ensemble, device="cpu")
    assert str(info.value) == (f"{ensemble / 'ensemble.json'}: not a protrnn ensemble: larger than 8 MiB (protrnn "
                               "writes ensemble.json files of a few kB)")


def test_predict_reads_a_generator_or_iterator_once(predictor) -> None:
    """The type checks used the iterable up before the sequences were cleaned: a generator gave []."""
    sequences = ["ACDEFGHIKLMNPQRSTVWY", "MKVLAAGGHH" * 2 + "W"]
    expected = predictor.predict(sequences)
    for given in ((s for s in sequences), iter(sequences), map(str, sequences)):
        got = predictor.predict(given)
        assert [p.shape for p in got] == [(20, 20), (21, 21)]
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="sequence #2 is a int"):
        predictor.predict(s for s in ["ACDE", 5])
    with pytest.raises(TypeError, match="not a single bytes"):
        predictor.predict(b"ACDE")
    distogram = Predictor(_distogram_network(3), device="cpu")
    listed = distogram.predict_distogram(sequences)
    streamed = distogram.predict_distogram(s for s in sequences)
    assert [d.shape for _, d in streamed] == [(20, 20, 18), (21, 21, 18)]
    for (p1, d1), (p2, d2) in zip(streamed, listed, strict=True):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(d1, d2)


def test_an_invalid_letter_is_named_at_its_position_in_the_string_given(predictor) -> None:
    """Leading whitespace is removed but counted: "  AC#DE" names position 5, the '#' (it named 3)."""
    with pytest.raises(InputError) as info:
        predictor.predict(["ACDEFGHIKL", "  AC#DE"])
    assert str(info.value) == "record '#2', position 5: invalid residue letter '#'"
    with pytest.raises(InputError) as info:
        predictor.clean("\n\tMK1V \n", record="r")
    assert info.value.position == 5 and "'1'" in str(info.value)


def test_a_structure_map_is_read_within_the_input_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--structure-map was read whole whatever its size; it is refused past MAX_INPUT_BYTES (1,000 bytes here) in
    one line naming it, like every structure input."""
    from protrnn.data import structure

    monkeypatch.setattr(structure, "MAX_INPUT_BYTES", 1000)
    lines = "".join(f"p{k}\tx{k}.pdb\n" for k in range(100))
    assert len(lines.encode()) > 1000
    (tmp_path / "map.tsv").write_text(lines)
    with pytest.raises(InputError, match=r"map\.tsv: file larger than .* GiB"):
        StructureIndex(tmp_path / "map.tsv", kind="map")
    (tmp_path / "small.tsv").write_text("p\tx.pdb\tB\n")
    assert StructureIndex(tmp_path / "small.tsv", kind="map").find("p").chain == "B"


def test_a_structure_map_with_any_line_ending_is_read(tmp_path: Path) -> None:
    """The map was read as text (universal newlines) until it got its input bound; CR-only lines (old Mac files) then
    read as one line whose path ran into the next record. Every line ending reads the same."""
    for name, ending in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
        (tmp_path / f"{name}.tsv").write_text(f"a\tx.pdb{ending}b\ty.pdb\tB{ending}", newline="")
        index = StructureIndex(tmp_path / f"{name}.tsv", kind="map")
        assert (index.find("a").path, index.find("a").chain) == (tmp_path / "x.pdb", None), name
        assert (index.find("b").path, index.find("b").chain) == (tmp_path / "y.pdb", "B"), name
