"""The contact cutoff: only a finite distance > 0 is accepted (given, configured or stored), and the cutoff stored with
a prepared dataset is the one its contacts are scored (``protrnn predict --structures``) and trained (``protrnn
train``) at, as ``protrnn evaluate`` scores them."""

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


# ---- defect 2a: predict --structures DATASET.npz scores at the dataset's cutoff ------------------------------------
def test_predict_scores_a_prepared_dataset_at_its_stored_cutoff(chains: list, shared_data: Path,
                                                                tmp_path: Path) -> None:
    """`--structures test.npz` from `prepare --contact-cutoff 6` counted contacts at 8 Å; protrnn evaluate, on the
    same file, at 6. The counts per range are checked against Cβ distances taken from the file with numpy. Another
    collection (a chain_set JSON, which stores no cutoff) keeps the CASP 8 Å."""
    from protrnn.data.formats import iter_json_chains
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model
    from protrnn.predict import load_model, predict_fasta

    torch.manual_seed(0)
    save_model(ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                        pair_chunk_size=64, dropout=0.0)), tmp_path / "model")
    predictor = load_model(tmp_path / "model", device="cpu")
    dataset = save_dataset(chains[:3], tmp_path / "test_six.npz", contact_cutoff=6.0)
    stored = load_dataset(dataset)
    ts50 = [chain for chain in iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz")
            if set(chain.sequence) <= STANDARD][:2]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{c.id}\n{c.sequence}\n" for c in [*chains[:3], *ts50]))
    ranges = {"short": (6, 11), "medium": (12, 23), "long": (24, None)}

    def counts(structures: Path, out: str) -> dict[str, dict[str, int]]:
        predict_fasta(fasta, tmp_path / out, predictor, structures=structures, progress=False)
        header, *lines = (tmp_path / out / "summary.tsv").read_text().splitlines()
        rows = [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]
        return {row["id"]: {name: int(row[f"{name}/n_contacts"]) for name in ranges} for row in rows
                if row["evaluation"] == "ok"}

    found = counts(dataset, "npz")
    assert sorted(found) == sorted(c.id for c in chains[:3])
    for index in range(3):
        chain_id, coords, observed = stored.chain_id(index), stored.coords(index), stored.observed(index)
        at6 = {name: cb_contacts(coords, observed, 6.0, *bounds) for name, bounds in ranges.items()}
        at8 = {name: cb_contacts(coords, observed, 8.0, *bounds) for name, bounds in ranges.items()}
        assert at6 != at8  # the two cutoffs tell apart on this chain
        assert found[chain_id] == at6, chain_id
    json_found = counts(shared_data / "ts50_gvp" / "ts50.json.gz", "json")
    assert sorted(json_found) == sorted(c.id for c in ts50)
    for chain in ts50:
        assert json_found[chain.id] == {name: cb_contacts(chain.coords, chain.observed, 8.0, *bounds)
                                        for name, bounds in ranges.items()}


def test_structure_refs_carry_the_cutoff_of_their_source(chains: list, tmp_path: Path) -> None:
    from protrnn.data.structure_index import StructureIndex

    six = save_dataset(chains[:2], tmp_path / "six.npz", contact_cutoff=6.0)
    older = with_metadata(six, tmp_path / "older.npz", contact_cutoff=None)  # written before the cutoff was stored
    assert StructureIndex(six).find(chains[0].id).contact_cutoff == 6.0
    assert StructureIndex(older).find(chains[0].id).contact_cutoff == 8.0


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
    and a written-out BCE; --train-data at another cutoff than --data is refused in one line."""
    import io

    from protrnn.diagnostics.results import load_diagnostics
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose
    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model

    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                     dropout=0.0)).eval()
    save_model(model, tmp_path / "model")
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
