"""The contact cutoff: only a finite distance > 0 is accepted (given, configured or stored); the cutoff stored with
a prepared dataset is the one its contacts are trained (``protrnn train``) and evaluated at, and a model is only
scored against contacts at the cutoff it was trained at (``protrnn evaluate``, ``protrnn predict --structures``),
which its RR files give as each contact's upper distance bound."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.cli import main
from protrnn.data.dataset import load_dataset, save_dataset
from protrnn.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STANDARD = set("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def chains(cgdms_chains) -> list:
    """Six real cgdms chains of standard letters only (a predictor's cleaning leaves them as they are)."""
    found = [chain for chain in cgdms_chains(40) if set(chain.sequence) <= STANDARD and chain.observed.sum() > 40]
    assert len(found) >= 6
    return found[:6]


def with_metadata(source: Path, target: Path, **changes: object) -> Path:
    """A copy of the dataset ``source`` whose JSON metadata has ``changes`` (a value None: the key removed), written as
    an older or a broken writer would have (``json.dumps`` writes an infinite float as ``Infinity``)."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    metadata = json.loads(arrays["metadata"].tobytes())
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    with open(target, "wb") as handle:
        np.savez(handle, **arrays)
    return target


def cb_contacts(coords: np.ndarray, observed: np.ndarray, cutoff: float, low: int, high: int | None) -> int:
    """Pairs i < j with low <= j - i (<= high), both residues observed and Cβ-Cβ < cutoff, counted with numpy alone."""
    cb = coords[:, 3].astype(np.float64)
    distance = np.sqrt(((cb[:, None, :] - cb[None, :, :]) ** 2).sum(-1))
    i, j = np.triu_indices(len(cb), k=low)
    keep = observed[i] & observed[j] & ((j - i) <= high if high is not None else True)
    return int((distance[i[keep], j[keep]] < cutoff).sum())


# ---- defect 1: a non-finite cutoff --------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-3", "1e999"])
def test_prepare_refuses_a_cutoff_that_is_not_a_finite_distance(value: str, chains: list, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`--contact-cutoff inf` ran and wrote "contact_cutoff": Infinity (not JSON) into prepare.json and every
    dataset; every contact then counted, and evaluate reported P@L/5 = 1.000. Refused by the option's type, in one
    line, before anything is read or written."""
    source = save_dataset(chains, tmp_path / "in.npz")
    with pytest.raises(SystemExit) as info:
        main(["prepare", str(source), "-o", str(tmp_path / "out"), f"--contact-cutoff={value}", "--threads", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument --contact-cutoff: must be a finite number > 0, got {value}"), err
    assert not (tmp_path / "out").exists()


def test_the_library_refuses_a_non_finite_cutoff_too(chains: list, tmp_path: Path) -> None:
    from protrnn.data.batching import ContactExampleDataset
    from protrnn.data.prepare import prepare_datasets

    source = save_dataset(chains, tmp_path / "in.npz")
    with pytest.raises(InputError, match=r"^contact cutoff: must be a finite distance > 0 Å, got inf$"):
        prepare_datasets([source], tmp_path / "out", contact_cutoff=float("inf"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=r"out\.npz: contact cutoff: must be a finite distance > 0 Å, got inf$"):
        save_dataset(chains, tmp_path / "out.npz", contact_cutoff=float("inf"))
    assert not (tmp_path / "out.npz").exists()
    with pytest.raises(InputError, match="contact cutoff: must be a finite distance > 0 Å, got inf"):
        ContactExampleDataset(load_dataset(source), cutoff=float("inf"))


def test_a_dataset_storing_a_non_finite_cutoff_is_refused_where_it_is_read(chains: list, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A file an earlier version wrote with `--contact-cutoff inf` is refused by load_dataset (naming the file and
    the key): protrnn evaluate scored it at P@L/5 = 1.000."""
    broken = with_metadata(save_dataset(chains, tmp_path / "good.npz"), tmp_path / "test_inf.npz",
                           contact_cutoff=float("inf"))
    assert b"Infinity" in (np.load(broken)["metadata"].tobytes())
    with pytest.raises(InputError, match=r"test_inf\.npz: metadata key 'contact_cutoff': must be a finite distance > 0 "
                                         r"Å, got inf$"):
        load_dataset(broken)
    assert main(["evaluate", "--baselines", "random", "--test-set", f"t={broken}", "-o", str(tmp_path / "ev"),
                 "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_inf.npz: metadata key 'contact_cutoff': must be a finite distance" in err[0]
    assert not (tmp_path / "ev" / "summary.json").exists()


# ---- defect 2a: predict --structures scores at the model's cutoff; a dataset stored at another one is refused ------
def tiny_export(directory: Path, contact_cutoff: float | None, seed: int = 0) -> Path:
    """An untrained tiny export whose record says it was trained at ``contact_cutoff`` (None: no training record, as
    an export of a checkpoint whose run config was not found)."""
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model

    torch.manual_seed(seed)
    extra = None if contact_cutoff is None else {"training_config": {"data": {"contact_cutoff": contact_cutoff}}}
    save_model(ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                        pair_chunk_size=64, dropout=0.0)), directory, extra=extra)
    return directory


def test_predict_scores_structures_at_the_models_cutoff(chains: list, shared_data: Path, tmp_path: Path) -> None:
    """A model trained at 6 Å: `--structures test.npz` (prepared at 6 Å) and a chain_set JSON (which stores no
    cutoff) are both scored at 6 Å, the contacts its probabilities are for; the counts per range are checked against
    Cβ distances taken with numpy. An 8 Å model given the 6 Å dataset is refused before anything is written (it had
    been scored at the dataset's 6 Å, and before that at 8 Å whatever the file stored)."""
    from protrnn.data.formats import iter_json_chains
    from protrnn.predict import load_model, predict_fasta

    six = load_model(tiny_export(tmp_path / "six", 6.0), device="cpu")
    assert six.contact_cutoff == 6.0
    dataset = save_dataset(chains[:3], tmp_path / "test_six.npz", contact_cutoff=6.0)
    stored = load_dataset(dataset)
    ts50 = [chain for chain in iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz")
            if set(chain.sequence) <= STANDARD][:2]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{c.id}\n{c.sequence}\n" for c in [*chains[:3], *ts50]))
    ranges = {"short": (6, 11), "medium": (12, 23), "long": (24, None)}

    def counts(structures: Path, out: str, predictor) -> dict[str, dict[str, int]]:
        predict_fasta(fasta, tmp_path / out, predictor, structures=structures, progress=False)
        header, *lines = (tmp_path / out / "summary.tsv").read_text().splitlines()
        rows = [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]
        return {row["id"]: {name: int(row[f"{name}/n_contacts"]) for name in ranges} for row in rows
                if row["evaluation"] == "ok"}

    found = counts(dataset, "npz", six)
    assert sorted(found) == sorted(c.id for c in chains[:3])
    for index in range(3):
        chain_id, coords, observed = stored.chain_id(index), stored.coords(index), stored.observed(index)
        at6 = {name: cb_contacts(coords, observed, 6.0, *bounds) for name, bounds in ranges.items()}
        at8 = {name: cb_contacts(coords, observed, 8.0, *bounds) for name, bounds in ranges.items()}
        assert at6 != at8  # the two cutoffs tell apart on this chain
        assert found[chain_id] == at6, chain_id
    json_found = counts(shared_data / "ts50_gvp" / "ts50.json.gz", "json", six)
    assert sorted(json_found) == sorted(c.id for c in ts50)
    for chain in ts50:
        assert json_found[chain.id] == {name: cb_contacts(chain.coords, chain.observed, 6.0, *bounds)
                                        for name, bounds in ranges.items()}
    eight = load_model(tiny_export(tmp_path / "eight", None), device="cpu")  # no record: the default 8 Å
    assert eight.contact_cutoff == 8.0
    with pytest.raises(InputError) as info:
        predict_fasta(fasta, tmp_path / "refused", eight, structures=dataset, progress=False)
    assert str(info.value) == (f"{dataset}: structures: the dataset was prepared at contact cutoff 6 Å, but the "
                               "model was trained at 8 Å; its probabilities are not for these contacts (prepare the "
                               "structures again with --contact-cutoff 8)")
    assert not (tmp_path / "refused").exists()


def test_structure_refs_carry_the_cutoff_they_are_scored_at(chains: list, tmp_path: Path) -> None:
    from protrnn.data.structure_index import StructureIndex

    six = save_dataset(chains[:2], tmp_path / "six.npz", contact_cutoff=6.0)
    older = with_metadata(six, tmp_path / "older.npz", contact_cutoff=None)  # written before the cutoff was stored
    assert StructureIndex(six, contact_cutoff=6.0).find(chains[0].id).contact_cutoff == 6.0
    with pytest.raises(InputError, match=r"six\.npz: structures: the dataset was prepared at contact cutoff 6 Å, "
                                         r"but the model was trained at 8 Å"):
        StructureIndex(six)
    assert StructureIndex(older).find(chains[0].id).contact_cutoff == 8.0  # prepared before the option: at 8 Å
    with pytest.raises(InputError, match=r"older\.npz: structures: the dataset was prepared at contact cutoff 8 Å"):
        StructureIndex(older, contact_cutoff=6.5)
    (tmp_path / "1abc.pdb").write_text("")  # a directory's files (and a map's) are scored at the index's cutoff
    assert StructureIndex(tmp_path, contact_cutoff=7.0).find("1abcA").contact_cutoff == 7.0


def test_a_model_reads_its_training_cutoff_from_its_record(tmp_path: Path) -> None:
    """The cutoff a model was trained at is its recorded data.contact_cutoff (an export's training_config, a
    checkpoint's recorded config or its data-module hyper-parameters), 8 Å where none is recorded; a recorded value
    that is no distance is refused in one line naming the file."""
    from protrnn.model.io import CKPT_TRAINING_CONFIG, load_network, training_contact_cutoff

    assert load_network(tiny_export(tmp_path / "a", 6.5)).contact_cutoff == 6.5
    assert load_network(tiny_export(tmp_path / "b", None)).contact_cutoff == 8.0
    assert training_contact_cutoff({}, {CKPT_TRAINING_CONFIG: {"data": {"contact_cutoff": 7}}}) == 7.0
    assert training_contact_cutoff({}, {"datamodule_hyper_parameters": {"contact_cutoff": 5.5}}) == 5.5
    assert training_contact_cutoff({}, {"datamodule_hyper_parameters": {}}) == 8.0
    with pytest.raises(InputError, match=r"model\.json: the model's recorded data.contact_cutoff: must be a finite "
                                         r"distance > 0 Å, got 'far'"):
        training_contact_cutoff({"training_config": {"data": {"contact_cutoff": "far"}}},
                                path=tmp_path / "model.json")


def test_an_export_of_a_checkpoint_without_its_run_config_keeps_the_checkpoints_cutoff(tmp_path: Path) -> None:
    """A checkpoint written before checkpoints held their run's config, trained at 6.5 Å, keeps the cutoff in its
    data module's hyper-parameters; `protrnn export` found no config of its run and the export read as 8 Å (its RR
    lines said 8, evaluate refused it on 6.5 Å test sets). The export now records the checkpoint's cutoff."""
    from protrnn.model.io import load_network
    from protrnn.training.callbacks import TRAINING_CONFIG_SOURCE, checkpoint_record

    checkpoint = {"epoch": 1, "global_step": 10, "hyper_parameters": {},
                  "datamodule_hyper_parameters": {"contact_cutoff": 6.5}}
    record = checkpoint_record(checkpoint, tmp_path / "run" / "last.ckpt")
    assert "training_config" not in record and record[TRAINING_CONFIG_SOURCE].startswith("unknown")
    assert record["contact_cutoff"] == 6.5
    export = tiny_export(tmp_path / "export", None)
    document = json.loads((export / "model.json").read_text())
    document.update(record)
    (export / "model.json").write_text(json.dumps(document))
    assert load_network(export).contact_cutoff == 6.5
    assert "contact_cutoff" not in checkpoint_record({"epoch": 1, "global_step": 10}, tmp_path / "old.ckpt")


def test_rr_lines_give_the_models_cutoff_as_the_upper_distance(chains: list, tmp_path: Path) -> None:
    """A 6 Å model's RR lines read `i j 0 6 p` (they said 8 for every model) and a METHOD line names the cutoff;
    an 8 Å model's lines keep CASP's `0 8`."""
    from protrnn.predict import load_model, predict_fasta
    from protrnn.rr import read_rr_document

    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">{chains[0].id}\n{chains[0].sequence}\n")
    for cutoff, expected in ((6.0, "6"), (6.5, "6.5"), (None, "8")):
        out = tmp_path / f"out{cutoff}"
        predict_fasta(fasta, out, load_model(tiny_export(tmp_path / f"m{cutoff}", cutoff), device="cpu"),
                      progress=False)
        (rr,) = out.glob("*.rr")
        lines = rr.read_text().splitlines()
        contact_lines = [line for line in lines if line[:1].isdigit()]
        assert contact_lines and {line.split()[2:4] == ["0", expected] for line in contact_lines} == {True}
        assert f"METHOD contacts: Cb-Cb distance below {expected} A (the training labels' cutoff)" in lines
        doc = read_rr_document(rr)
        assert {contact.d2 for contact in doc.contacts} == {float(expected)}


def test_ensembles_of_models_trained_at_different_cutoffs_are_refused(tmp_path: Path) -> None:
    """`protrnn ensemble` averaged a 6 Å and an 8 Å model's probabilities (exit 0): refused, naming both; an
    ensemble.json put together by hand from such members is refused on load."""
    import shutil

    from protrnn.model.io import save_ensemble
    from protrnn.predict import load_model

    a, b, c = (tiny_export(tmp_path / "a", 6.0, 0), tiny_export(tmp_path / "b", None, 1),
               tiny_export(tmp_path / "c", 6.0, 2))
    assert main(["ensemble", str(a), str(b), "-o", str(tmp_path / "mixed")]) == 2
    assert not (tmp_path / "mixed").exists()
    with pytest.raises(InputError) as info:
        save_ensemble([a, b], tmp_path / "mixed")
    assert str(info.value) == (f"{b}: trained at contact cutoff 8 Å, but {a} at 6 Å: an ensemble averages "
                               "probabilities of one contact definition")
    save_ensemble([a, c], tmp_path / "six")
    assert load_model(tmp_path / "six", device="cpu").contact_cutoff == 6.0
    for name in ("model.json", "model.safetensors"):  # by hand: member-2 replaced with the 8 Å model
        shutil.copyfile(b / name, tmp_path / "six" / "member-2" / name)
    with pytest.raises(InputError, match=r"six: the ensemble's members were trained at different contact cutoffs "
                                         r"\(member-1 6 Å, member-2 8 Å\)"):
        load_model(tmp_path / "six", device="cpu")


def test_evaluate_refuses_a_model_on_a_test_set_at_another_cutoff(chains: list, tmp_path: Path) -> None:
    """`protrnn evaluate --model m6=... --test-set t8=...` scored a 6 Å model's probabilities against 8 Å contacts
    (exit 0). Refused before anything is written; at its own cutoff the model is evaluated and its cutoff recorded."""
    six = tiny_export(tmp_path / "six", 6.0)
    test8 = save_dataset(chains[:2], tmp_path / "t8.npz")
    test6 = save_dataset(chains[:2], tmp_path / "t6.npz", contact_cutoff=6.0)
    with pytest.raises(InputError) as info:
        from protrnn.evaluation.evaluate import run_evaluation

        run_evaluation({"m6": six}, {"t8": test8}, tmp_path / "refused", n_boot=10, log=lambda _: None)
    assert str(info.value) == (f"{six}: --model m6: the model was trained at contact cutoff 6 Å, but test set 't8' "
                               f"({test8}) was prepared at 8 Å; its probabilities are not for these contacts: prepare "
                               "the test set at --contact-cutoff 6")
    assert not (tmp_path / "refused").exists()
    assert main(["evaluate", "--model", f"m6={six}", "--test-set", f"t6={test6}", "-o", str(tmp_path / "ok"),
                 "--bootstrap", "10"]) == 0
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["methods"]["m6"]["contact_cutoff"] == 6.0


# ---- defect 2b: training refuses data prepared at another cutoff ----------------------------------------------------
def test_the_data_module_refuses_datasets_prepared_at_another_cutoff(chains: list, tmp_path: Path) -> None:
    """Labels were computed at data.contact_cutoff (8 in every shipped config) whatever cutoff the files were
    prepared at: refused when the module is built, naming the file, both values and the fix."""
    from protrnn.training.datamodule import ContactDataModule

    train6 = save_dataset(chains[:4], tmp_path / "train6.npz", contact_cutoff=6.0)
    val6 = save_dataset(chains[4:], tmp_path / "val6.npz", contact_cutoff=6.0)
    val8 = save_dataset(chains[4:], tmp_path / "val8.npz")
    with pytest.raises(InputError) as info:
        ContactDataModule(train6, val6)
    assert str(info.value) == (f"{train6}: config key 'data.train_path': the dataset was prepared at contact cutoff "
                               "6 Å, but data.contact_cutoff is 8 Å; train at the data's cutoff with "
                               "--data.contact_cutoff 6 (or prepare the data again with --contact-cutoff 8)")
    with pytest.raises(InputError, match=r"val6\.npz: config key 'data.val_path': the dataset was prepared at contact "
                                         r"cutoff 6 Å, but data.contact_cutoff is 8 Å"):
        ContactDataModule(val8, val6)
    with pytest.raises(InputError, match=r"val8\.npz: config key 'data.val_path'.* at contact cutoff 8 Å, but "
                                         r"data.contact_cutoff is 6 Å.*--data.contact_cutoff 8"):
        ContactDataModule(train6, val8, contact_cutoff=6.0)
    # at the data's cutoff it trains, on labels at that cutoff
    data = ContactDataModule(train6, val6, crop_length=None, contact_cutoff=6)
    data.setup("fit")
    item = data.train_set[0]
    stored = load_dataset(train6)
    cb = stored.coords(0)[:, 3].astype(np.float64)
    distance = np.sqrt(((cb[:, None] - cb[None]) ** 2).sum(-1))
    observed = stored.observed(0)
    np.testing.assert_array_equal(np.asarray(item["contacts"]), (distance < 6.0) & np.outer(observed, observed))
    # files that store no cutoff (written before datasets recorded one) train at the configured cutoff, as before
    train = with_metadata(train6, tmp_path / "train_older.npz", contact_cutoff=None)
    val = with_metadata(val6, tmp_path / "val_older.npz", contact_cutoff=None)
    for cutoff in (8.0, 6.5):
        data = ContactDataModule(train, val, contact_cutoff=cutoff)
        data.setup("fit")
        assert data.train_set.cutoff == data.val_set.cutoff == cutoff


def test_protrnn_train_stops_before_the_run_on_a_cutoff_mismatch(chains: list, tmp_path: Path) -> None:
    from protrnn.commands import train as train_cmd

    train6 = save_dataset(chains[:4], tmp_path / "train.npz", contact_cutoff=6.0)
    val6 = save_dataset(chains[4:], tmp_path / "val.npz", contact_cutoff=6.0)
    with pytest.raises(InputError, match=r"train\.npz: config key 'data.train_path': the dataset was prepared at "
                                         r"contact cutoff 6 Å, but data.contact_cutoff is 8 Å"):
        train_cmd.main(["--config", "tiny", "--data.train_path", str(train6), "--data.val_path", str(val6),
                        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1",
                        "--trainer.limit_val_batches", "1"])
    assert not (tmp_path / "run").exists()


# ---- the learned baselines and protrnn diagnose learn and measure at the data's stored cutoff ---------------------
def test_evaluate_refuses_learned_baselines_whose_training_set_has_another_cutoff(chains: list, tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture[str]
                                                                                 ) -> None:
    """The separation and propensity baselines learnt their rates at 8 Å from any training set and were scored at the
    test set's stored cutoff: a table learnt at one cutoff, scored at another. They now learn at the training set's
    stored cutoff (recorded in summary.json), and a training set and a test set prepared at different cutoffs are
    refused in one line naming both files and both values, before anything is written."""
    train8 = save_dataset(chains[:4], tmp_path / "train8.npz")
    train6 = save_dataset(chains[:4], tmp_path / "train6.npz", contact_cutoff=6.0)
    test6 = save_dataset(chains[4:], tmp_path / "test_six.npz", contact_cutoff=6.0)
    for baseline in ("separation", "propensity"):
        out = tmp_path / f"refused_{baseline}"
        assert main(["evaluate", "--baselines", f"random,{baseline}", "--train", str(train8), "--test-set",
                     f"six={test6}", "-o", str(out), "--bootstrap", "10"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith(
            f"--baselines separation/propensity: the training set {train8} was prepared at contact cutoff 8 Å, but "
            f"test set 'six' ({test6}) at 6 Å; a contact rate learnt at one cutoff does not score contacts at "
            "another: prepare both at one --contact-cutoff"), err
        assert not out.exists()
    # a baseline that learns nothing does not read --train
    assert main(["evaluate", "--baselines", "random", "--train", str(train8), "--test-set", f"six={test6}", "-o",
                 str(tmp_path / "random"), "--bootstrap", "10"]) == 0
    out = tmp_path / "six"
    assert main(["evaluate", "--baselines", "separation,propensity", "--train", str(train6), "--test-set",
                 f"six={test6}", "-o", str(out), "--bootstrap", "10"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_sets"]["six"]["contact_cutoff"] == 6.0
    for baseline in ("separation", "propensity"):
        assert summary["methods"][baseline]["contact_cutoff"] == 6.0
        assert summary["methods"][baseline]["train"] == str(train6)


def test_diagnose_measures_contacts_at_the_stored_cutoff_of_its_data(chains: list, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`protrnn diagnose --data val6.npz --train-data train6.npz` measured contact rates and losses at 8 Å. Its contact
    rate (of the training chains) and its --data loss are checked against Cβ distances read from the files with numpy
    and a written-out BCE; --train-data at another cutoff than --data is refused in one line, as is a model trained
    at another cutoff than --data's (it had been measured against labels it was not trained for)."""
    import io

    from protrnn.diagnostics.results import load_diagnostics
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model

    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                     dropout=0.0)).eval()
    save_model(model, tmp_path / "model", extra={"training_config": {"data": {"contact_cutoff": 6.0}}})
    train6 = save_dataset(chains[:4], tmp_path / "train6.npz", contact_cutoff=6.0)
    val6 = save_dataset(chains[4:], tmp_path / "val6.npz", contact_cutoff=6.0)
    options = DiagnoseOptions(n_chains=1, pairs_per_chain=2, max_distance=16, hidden=False, usage=False,
                              device="cpu", train_data=train6)
    [result] = diagnose([("m", tmp_path / "model")], val6, tmp_path / "d.json", options, stream=io.StringIO())

    def count(path: Path, cutoff: float) -> tuple[int, int]:
        stored = load_dataset(path)
        hits = sum(cb_contacts(stored.coords(k), stored.observed(k), cutoff, 6, None) for k in range(len(stored)))
        pairs = sum(cb_contacts(stored.coords(k), stored.observed(k), math.inf, 6, None) for k in range(len(stored)))
        return hits, pairs

    hits, pairs = count(train6, 6.0)
    assert hits != count(train6, 8.0)[0]
    assert result.metrics["contact_rate"] == pytest.approx(hits / pairs, rel=1e-12)
    total = scored = 0.0
    stored = load_dataset(val6)
    for k in range(len(stored)):
        chain = stored[k]
        cb = chain.coords[:, 3].astype(np.float64)
        distance = np.sqrt(((cb[:, None] - cb[None]) ** 2).sum(-1))
        upper = np.triu(chain.pair_mask(), 1)
        label = torch.from_numpy((distance < 6.0)[upper].astype(np.float64))
        tokens = torch.from_numpy(DEFAULT_ALPHABET.encode(chain.sequence).astype(np.int64))[None]
        with torch.no_grad():
            logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool))[0].double()[torch.from_numpy(upper)]
        total += float(torch.nn.functional.binary_cross_entropy_with_logits(logits, label, reduction="sum"))
        scored += int(upper.sum())
    assert result.metrics["data_loss"]["loss"] == pytest.approx(total / scored, rel=1e-4)
    assert result.metrics["contact_cutoff"] == 6.0
    assert load_diagnostics(tmp_path / "d.json")[0].metrics["contact_cutoff"] == 6.0
    train8 = save_dataset(chains[:4], tmp_path / "train8.npz")
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path / "model"), "--data", str(val6), "--train-data", str(train8), "--device",
                 "cpu", "-o", str(tmp_path / "refused.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        f"--train-data {train8} labels contacts at 8 Å but --data {val6} at 6 Å (a prepared dataset's stored contact "
        "cutoff, 8 Å for any other input): losses at two cutoffs do not compare; give both at one cutoff"), err
    assert not (tmp_path / "refused.json").exists()
    val8 = save_dataset(chains[4:], tmp_path / "val8.npz")
    save_model(model, tmp_path / "eight")  # no training record: 8 Å
    assert main(["diagnose", f"six={tmp_path / 'model'}", f"eight={tmp_path / 'eight'}", "--data", str(val8),
                 "--device", "cpu", "-o", str(tmp_path / "refused.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        f"{tmp_path / 'model'}: model six: trained at contact cutoff 6 Å, but --data labels contacts at 8 Å (a "
        "prepared dataset's stored contact cutoff, 8 Å for any other input): diagnose it on data at its own cutoff"), err
    assert not (tmp_path / "refused.json").exists()


def test_a_distogram_head_is_refused_at_a_cutoff_its_contact_mass_is_not_below(chains: list, tmp_path: Path) -> None:
    """A distogram head's contact probability is its mass below 8 Å (ModelConfig.contact_classes); trained on data
    prepared at 6 Å with --data.contact_cutoff 6 it validated, and was evaluated, against contacts below 6 Å (and
    its contact_weight term trained the mass below 8 Å on them). Refused in one line naming both values before the
    run starts; a binary head learns the cutoff it is given, and a distogram at 8 Å is what it predicts."""
    from protrnn.commands import train as train_cmd
    from protrnn.model.config import DEFAULT_DISTOGRAM_BINS, ModelConfig
    from protrnn.training.module import ContactLightningModule

    settings = {"embed_dim": 8, "hidden_size": 8, "num_layers": 1, "head": "pairwise", "pair_dim": 8, "dropout": 0.0}
    distogram = ContactLightningModule(ModelConfig(**settings, distogram_bins=list(DEFAULT_DISTOGRAM_BINS)))
    assert distogram.config.contact_classes == 5  # < 4, 4-5, 5-6, 6-7, 7-8 Å: the mass below 8 Å
    with pytest.raises(InputError) as info:
        distogram.check_data_settings(6.0)
    assert str(info.value) == ("config key 'data.contact_cutoff': 6 Å, but a distogram head (model.model.distogram_bins) "
                               "gives the contact probability as the mass below 8 Å; train it on data prepared at 8 Å, "
                               "or use a binary head (model.model.distogram_bins: null)")
    distogram.check_data_settings(8.0)
    ContactLightningModule(ModelConfig(**settings)).check_data_settings(6.0)
    train6 = save_dataset(chains[:4], tmp_path / "train.npz", contact_cutoff=6.0)
    val6 = save_dataset(chains[4:], tmp_path / "val.npz", contact_cutoff=6.0)
    with pytest.raises(InputError, match=r"^config key 'data.contact_cutoff': 6 Å, but a distogram head"):
        train_cmd.main(["--config", "tiny", "--data.train_path", str(train6), "--data.val_path", str(val6),
                        "--data.contact_cutoff", "6", "--model.model.distogram_bins", "[4.0, 6.0, 8.0, 10.0]",
                        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1",
                        "--trainer.limit_val_batches", "1"])
    assert not (tmp_path / "run").exists()
