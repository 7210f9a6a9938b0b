"""The contact cutoff: only a finite distance > 0 is accepted (given, configured or stored), and the cutoff stored with
a prepared dataset is the one its contacts are scored (``protrnn predict --structures``) and trained (``protrnn
train``) at, as ``protrnn evaluate`` scores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

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
