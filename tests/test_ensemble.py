"""Ensembles of exported models (protrnn.model.io.save_ensemble, Predictor over several networks, `protrnn
ensemble`): the mean of the members' probabilities, computed here from each member loaded on its own."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import protrnn.model.io as model_io
from protrnn.cli import main
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import (
    ENSEMBLE_NAME,
    ensemble_members,
    load_network,
    load_networks,
    save_ensemble,
    save_model,
)
from protrnn.model.predictor import load_model
from protrnn.predict import predict_fasta
from protrnn.predict.writers import read_npz
from protrnn.rr import read_rr_document

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ",
             "GSHMSLEQKLAELLKEHGVDSATIAKVLAAAGNL",
             "ACDEFGHIKLMNPQRSTVWY" * 4]


def _member(directory: Path, seed: int, *, head: str, hidden: int) -> Path:
    torch.manual_seed(seed)
    config = ModelConfig(embed_dim=8, hidden_size=hidden, num_layers=1, head=head, pair_dim=8, head_blocks=1,
                         head_dilations=[1], pair_chunk_size=32, dropout=0.0)
    save_model(ContactModel(config), directory, extra={"seed": seed})
    return directory


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    return [_member(root / "a", 1, head="pairwise", hidden=8), _member(root / "b", 2, head="resnet2d", hidden=12),
            _member(root / "c", 3, head="pairwise", hidden=8)]


@pytest.fixture(scope="module")
def ensemble_dir(members, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "x3"
    save_ensemble(members, out)
    return out


def test_ensemble_predicts_the_mean_of_its_members(members, ensemble_dir) -> None:
    alone = [load_model(member, device="cpu").predict(SEQUENCES) for member in members]
    ensemble = load_model(ensemble_dir, device="cpu")
    combined = ensemble.predict(SEQUENCES)
    assert len(ensemble.models) == 3
    for k, probs in enumerate(combined):
        expected = np.mean([member_probs[k] for member_probs in alone], axis=0)
        np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(probs, probs.T)
        # not just one member's output: each member alone is farther from the mean than rounding
        assert all(np.abs(member_probs[k] - expected).max() > 1e-4 for member_probs in alone)


def test_ensemble_layout_metadata_and_identity(members, ensemble_dir) -> None:
    document = json.loads((ensemble_dir / ENSEMBLE_NAME).read_text())
    assert document["format"] == "protrnn-ensemble" and document["members"] == ["member-1", "member-2", "member-3"]
    for name, source in zip(document["members"], members, strict=True):
        assert (ensemble_dir / name / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert ensemble_members(ensemble_dir / ENSEMBLE_NAME) == [ensemble_dir / n for n in document["members"]]
    assert [loaded.metadata["seed"] for loaded in load_networks(ensemble_dir)] == [1, 2, 3]
    predictor = load_model(ensemble_dir, device="cpu")
    assert predictor.metadata["format"] == "protrnn-ensemble" and len(predictor.metadata["members"]) == 3
    member_hashes = [load_network(member).weights_sha256() for member in members]
    assert predictor.weights_sha256 == hashlib.sha256("\n".join(member_hashes).encode()).hexdigest()
    lines = predictor.method_lines()
    assert "ensemble of 3 networks, mean of their contact probabilities" in lines
    assert sum("encoder" in line for line in lines) == 2  # members a and c share an architecture line
    # a one-network predictor: the program, its architecture, its contact definition, its weights and its settings
    single = load_model(members[0], device="cpu")
    lines = single.method_lines()
    assert not any("ensemble" in line for line in lines) and len(lines) == 5
    assert lines[2:] == ["contacts: Cb-Cb distance below 8 A (the training labels' cutoff)",
                         f"weights sha256 {hashlib.sha256((members[0] / 'model.safetensors').read_bytes()).hexdigest()}",
                         f"config sha256 {recorded_config_sha256(members[0])}"]


#: What a network computes from given weights does not depend on these (inference tile, dropouts, inits, horizon).
NOT_PREDICTIVE = {"pair_chunk_size", "dropout", "head_dropout", "orthogonal_init", "forget_bias", "chrono_init",
                  "chrono_tmax", "gradient_horizon"}


def recorded_config_sha256(*exports: Path) -> str:
    """SHA-256 of the exports' model.json configs as written, in canonical JSON: the settings that change what the
    network computes and differ from a default ModelConfig's."""
    defaults = ModelConfig().to_dict()
    configs = [json.loads((export / "model.json").read_text())["config"] for export in exports]
    return hashlib.sha256(json.dumps([{k: v for k, v in config.items()
                                       if k not in NOT_PREDICTIVE and v != defaults[k]}
                                      for config in configs], sort_keys=True).encode()).hexdigest()


def test_a_rerun_predicts_again_when_model_json_changed_without_the_weights(members, tmp_path) -> None:
    """The resume check knew a model by its weights' hash alone: with `head_dilations` edited in model.json (the
    same weight shapes, so it loads; other probabilities) a rerun into the same OUTDIR kept the old files as complete.
    The METHOD lines now also hash the settings; `pair_chunk_size` (the inference tile) changes nothing and resumes."""
    model = tmp_path / "model"
    shutil.copytree(members[1], model)  # the resnet2d member: dilations change its output, not its weights
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">s{k}\n{seq}\n" for k, seq in enumerate(SEQUENCES)))

    def edit(**changes) -> None:
        document = json.loads((model / "model.json").read_text())
        document["config"].update(changes)
        (model / "model.json").write_text(json.dumps(document))

    def run() -> tuple[int, int, np.ndarray]:
        done = predict_fasta(fasta, tmp_path / "out", model, progress=False)
        return done.predicted, done.resumed, read_npz(tmp_path / "out" / "s0.npz")[0]

    predicted, resumed, before = run()
    assert (predicted, resumed) == (3, 0)
    edit(head_dilations=[4])
    predicted, resumed, after = run()
    assert (predicted, resumed) == (3, 0)
    fresh = load_model(model, device="cpu").predict(SEQUENCES[:1])[0].astype(np.float16)
    np.testing.assert_array_equal(after, fresh)
    assert np.abs(after.astype(np.float32) - before.astype(np.float32)).max() > 1e-3
    edit(pair_chunk_size=16, dropout=0.5, orthogonal_init=False)  # what the weights compute is unchanged: resumed
    assert run()[:2] == (0, 3)
    document = json.loads((model / "model.json").read_text())  # a setting at its default, recorded or not: one hash
    document["config"].pop("chrono_tmax")
    document["config"]["max_separation"] = ModelConfig().max_separation
    (model / "model.json").write_text(json.dumps(document))
    assert run()[:2] == (0, 3)
    methods = read_rr_document(tmp_path / "out" / "s0.rr").methods
    assert methods[-1] == f"config sha256 {recorded_config_sha256(model)}"


def test_ensemble_in_predict_runs_and_resumes(ensemble_dir, members, tmp_path) -> None:
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">s{k}\n{seq}\n" for k, seq in enumerate(SEQUENCES)))
    assert main(["predict", str(fasta), "--model", str(ensemble_dir), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    probs, sequence, _ = read_npz(tmp_path / "out" / "s1.npz")
    alone = [load_model(m, device="cpu").predict([SEQUENCES[1]])[0] for m in members]
    expected = np.mean(alone, axis=0)
    assert sequence == SEQUENCES[1]
    np.testing.assert_allclose(probs.astype(np.float32), expected, atol=1e-3)  # the npz holds float16
    assert all(np.abs(member - expected).max() > 5e-3 for member in alone)
    run = predict_fasta(fasta, tmp_path / "out", model=load_model(ensemble_dir, device="cpu"))
    assert run.resumed == len(SEQUENCES) and run.predicted == 0


def test_ensemble_command_and_refusals(members, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "x2"
    assert main(["ensemble", str(members[0]), str(members[1] / "model.json"), "-o", str(out)]) == 0
    assert ensemble_members(out) == [out / "member-1", out / "member-2"]
    # one network is asked for where only one makes sense (diagnostics, export, fine-tuning)
    with pytest.raises(InputError, match="an ensemble .*member-1, member-2"):
        load_network(out)
    # a member that does not load leaves no ensemble behind
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{}")
    assert main(["ensemble", str(members[0]), str(broken), "-o", str(tmp_path / "nope")]) == 2
    assert "broken" in capsys.readouterr().err and not (tmp_path / "nope").exists()
    # nested ensembles are not members, one model is not an ensemble
    with pytest.raises(InputError, match="one exported model"):
        save_ensemble([out, members[0]], tmp_path / "nested")
    assert main(["ensemble", str(members[0]), "-o", str(tmp_path / "one")]) == 2
    assert "at least 2 models, got 1" in capsys.readouterr().err and not (tmp_path / "one").exists()
    # the output directory is replaced whole, so it may not hold a member: refused, the members untouched
    before = sorted(p.name for p in members[0].parent.rglob("*"))
    with pytest.raises(InputError, match="holds this member"):
        save_ensemble([members[0], members[1]], members[0].parent)
    with pytest.raises(InputError, match="holds this member"):
        save_ensemble([members[0], members[1]], members[1])
    assert sorted(p.name for p in members[0].parent.rglob("*")) == before
    with pytest.raises(InputError, match="listed twice"):
        save_ensemble([members[0], members[1], members[0] / "model.json"], tmp_path / "twice")
    assert not (tmp_path / "twice").exists()
    # an existing directory that is not an ensemble (a run, say) is refused and left as it was, '.' included
    run = tmp_path / "a_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "notes.txt").write_text("keep")
    assert main(["ensemble", str(members[0]), str(members[1]), "-o", str(run)]) == 2
    assert "exists and is not an ensemble" in capsys.readouterr().err
    monkeypatch.chdir(run)
    assert main(["ensemble", str(members[0]), str(members[1]), "-o", "."]) == 2
    assert "exists and is not an ensemble" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "notes.txt"] and (run / "notes.txt").read_text() == "keep"
    # an ensemble is replaced whole, and nothing is exported beside one (loading would never see it)
    assert main(["ensemble", str(members[1]), str(members[0]), "-o", str(out)]) == 0
    assert ensemble_members(out) == [out / "member-1", out / "member-2"]
    with pytest.raises(InputError, match="holds an ensemble"):
        save_model(load_network(members[0]).network, out)
    assert not (out / "model.json").exists()


@pytest.mark.parametrize("members_value, message", [
    ([], "lists 0 model"),
    (["member-1"], "lists 1 model"),
    ("member-1", "must be a list"),
    (["member-1", "../escape"], "not a plain sub-directory name"),
    (["member-1", "/abs"], "not a plain sub-directory name"),
    (["member-1", "member-2\n"], "not a plain sub-directory name"),
    (["member-1", "member-1"], "twice"),
    (["member-1", "missing"], "has no model.json"),
    (["member-1", "outside"], "leads out of the ensemble's directory"),
])
def test_ensemble_json_is_checked(ensemble_dir, tmp_path, members_value, message) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("member-1", "member-2"):
        shutil.copytree(ensemble_dir / name, bad / name)
    (bad / "outside").symlink_to(ensemble_dir / "member-2")  # a complete member, but elsewhere on disk
    (bad / ENSEMBLE_NAME).write_text(json.dumps({"format": "protrnn-ensemble", "format_version": 1,
                                                 "members": members_value}))
    with pytest.raises(InputError, match=message) as err:
        load_model(bad, device="cpu")
    assert str(bad / ENSEMBLE_NAME) in str(err.value)


def test_foreign_ensemble_documents_are_refused(ensemble_dir, tmp_path) -> None:
    pair = ["member-1", "member-2"]
    for document, message in [({"format": "protrnn-ensemble", "format_version": 2, "members": pair},
                                "unsupported format_version 2"),
                               ({"format": "protrnn-ensemble", "format_version": 1, "members": pair,
                                 "combine": "max"}, "unknown combine rule 'max'"),
                               ({"format": "protrnn-model", "members": pair}, "not a protrnn ensemble")]:
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        bad.mkdir()
        for name in ("member-1", "member-2"):
            shutil.copytree(ensemble_dir / name, bad / name)
        (bad / ENSEMBLE_NAME).write_text(json.dumps(document))
        with pytest.raises(InputError, match=message):
            load_model(bad, device="cpu")


def test_bundled_ensemble_is_the_default_model(ensemble_dir, members, monkeypatch) -> None:
    monkeypatch.setattr(model_io, "PRETRAINED_DIR", ensemble_dir)
    predictor = load_model(device="cpu")
    assert len(predictor.models) == 3 and predictor.source == "bundled default model"
    expected = load_model(ensemble_dir, device="cpu").predict(SEQUENCES[:1])[0]
    np.testing.assert_array_equal(predictor.predict(SEQUENCES[:1])[0], expected)
