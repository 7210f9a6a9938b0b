"""The bundled model's record: workflows/scripts/bundle_model.py writes it from the evaluation summaries, and the
figures in protrnn/pretrained/evaluation.json are what the shipped weights score when evaluated again."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from protrnn.cli import main as protrnn_main
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import save_dataset
from protrnn.data.sources import read_chains
from protrnn.errors import InputError
from protrnn.evaluation.results import CHANCE_NAME
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import PRETRAINED_DIR, load_network, save_model

REPO = Path(__file__).resolve().parents[1]
#: The recorded figures: {test set: {method: {metric: [mean, low, high]}}}, plus the commands that made them.
RECORD = json.loads((PRETRAINED_DIR / "evaluation.json").read_text(encoding="utf-8"))
#: Where each recorded test set came from (workflows/config.yaml `test_sets`, relative to the repository's parent).
TEST_SET_SOURCES = {"ts50": "ts50_gvp/ts50.json.gz", "psicov150": "psicov150_gremlin_rf/psicov150_org_pdb.tar.gz"}


def _script():
    """workflows/scripts/bundle_model.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bundle_model", REPO / "workflows" / "scripts" / "bundle_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(method: str, values: dict[str, float], n_proteins: int = 50) -> dict:
    metrics = {key: {"mean": v, "low": v - 0.01, "high": v + 0.01} for key, v in values.items()}
    return {"format": "protrnn-evaluation", "command": f"protrnn evaluate {method}",
            "results": {method: {"ts50": {"n_proteins": n_proteins, "metrics": metrics}}}}


def test_record_states_model_and_baseline_figures_and_the_ratio_to_random() -> None:
    bundle = _script()
    model_eval = _summary("bundle", {"long/P@L/5": 0.15, "medium_long/P@L/5": 0.21})
    baselines = _summary("random", {"long/P@L/5": 0.03, "medium_long/P@L/5": 0.03})
    record, card = bundle.build_record({"config": {"cell": "lstm"}, "selected": "best"}, model_eval, baselines)
    assert record["test_sets"]["ts50"]["protrnn (this model)"]["long/P@L/5"] == [0.15, 0.14, 0.16]
    assert record["test_sets"]["ts50"]["random"]["medium_long/P@L/5"] == [0.03, 0.02, 0.04]
    assert "## ts50 (50 proteins)" in card
    assert "| protrnn (this model) | " in card and "0.210 [0.200, 0.220]" in card
    assert "5.0x random ranking" in card


def test_record_states_the_chance_level_and_the_ratios_to_it() -> None:
    """With the chance level in the model's evaluation (summary.json's `chance`), the card compares with it, not with
    the random baseline's one draw: long 0.15 / 0.03 = 5.0x; the >= 96 bin 0.09 / 0.025 = 3.6x over the 122
    proteins that have such pairs. The record and the table carry the chance row beside the baselines."""
    bundle = _script()
    model_eval = _summary("bundle", {"long/P@L/5": 0.15, "bin/96+/P@L/5": 0.09})
    model_eval["results"]["bundle"]["ts50"]["metrics"]["bin/96+/P@L/5"]["n"] = 122
    model_eval["bins"] = [[6, 11], [12, 23], [24, 47], [48, 95], [96, None]]
    model_eval["chance"] = _summary("chance", {"long/P@L/5": 0.03, "bin/96+/P@L/5": 0.025})["results"]["chance"]
    baselines = _summary("random", {"long/P@L/5": 0.04})
    record, card = bundle.build_record({"config": {"cell": "lstm"}, "selected": "best"}, model_eval, baselines)
    assert record["test_sets"]["ts50"][CHANCE_NAME]["long/P@L/5"] == [0.03, 0.02, 0.04]
    assert f"| {CHANCE_NAME} | " in card
    assert ("Long-range (>= 24) P@L/5 is 5.0x chance (0.150 against 0.030, the expected precision of a random "
            "ranking). In the >= 96 bin (122 proteins have such pairs) it is 3.6x chance (0.0900 against 0.0250).") in card
    assert "x random ranking" not in card  # not against the random baseline's one draw (0.15 / 0.04 = 3.8x)


# ---------------------------------------------------------------------------------------------- the script's main()
def _tiny_export(directory: Path, cwd: Path) -> dict:
    """A small exported model with the training metadata `protrnn train` writes; returns its model.json."""
    save_model(ContactModel(ModelConfig(hidden_size=8, embed_dim=8, num_layers=1, head="pairwise")), directory,
               extra={"source_checkpoint": str(cwd / "results" / "models" / "bundle" / "checkpoints" / "best.ckpt"),
                      "selected": "best", "monitor": "val/P@L5_medium_long", "epoch": 3, "global_step": 40,
                      "val_metrics": {"val/loss": 0.25, "val/P@L5_long": 0.125},
                      "training_config": {"trainer": {"max_epochs": 7, "max_time": "00:00:02:00"}}})
    return json.loads((directory / "model.json").read_text(encoding="utf-8"))


def _write_summary(directory: Path, command: str, results: dict) -> None:
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps({"format": "protrnn-evaluation", "format_version": 1,
                                                        "command": command, "results": results}))


def _write_ts50_summaries(directory: Path, model: str) -> None:
    """directory/bundle and directory/baselines: the model at long-range P@L/5 0.2 and the random baseline at 0.05
    on TS50."""
    _write_summary(directory / "bundle", f"protrnn evaluate --model bundle={model}",
                   {"bundle": {"ts50": {"n_proteins": 50, "metrics": {"long/P@L/5": _metric(0.2, 0.1, 0.3)}}}})
    _write_summary(directory / "baselines", "protrnn evaluate --baselines random",
                   {"random": {"ts50": {"n_proteins": 50, "metrics": {"long/P@L/5": _metric(0.05, 0.04, 0.06)}}}})


def _seeded_members(root: Path, steps: dict[int, int]) -> list[Path]:
    """Tiny exports at results/models/bundle/seed<S>, recorded as trained at seed S and selected at step steps[S]."""
    members = []
    for seed, step in steps.items():
        member = root / "results" / "models" / "bundle" / f"seed{seed}"
        _tiny_export(member, root)
        meta = json.loads((member / "model.json").read_text(encoding="utf-8"))
        meta["training_config"]["seed_everything"] = seed
        meta["global_step"] = step
        (member / "model.json").write_text(json.dumps(meta), encoding="utf-8")
        members.append(member)
    return members


def _seeded_ensemble(root: Path, steps: dict[int, int]) -> tuple[list[Path], Path]:
    """:func:`_seeded_members` combined into results/ensembles/bundle, with TS50 summaries of it under root/eval."""
    from protrnn.model.io import save_ensemble

    members = _seeded_members(root, steps)
    ensemble = root / "results" / "ensembles" / "bundle"
    save_ensemble(members, ensemble)
    _write_ts50_summaries(root / "eval", "results/ensembles/bundle")
    return members, ensemble


def _metric(mean: float, low: float, high: float) -> dict[str, float]:
    return {"mean": mean, "low": low, "high": high}


def test_the_cards_data_line_states_the_leakage_rule() -> None:
    """The leakage rule as prepare recorded it (identity, coverage, the chain the coverage is measured on); the card
    had named the identity only."""
    script = _script()
    record = {"chains": {"train": 3536, "val": 482}, "sources": [], "test_sets": {},
              "leakage": {"removed": 323, "per_test_set": {"ts50": 15}, "identity": 0.3, "coverage": 0.5,
                          "leakage_coverage_of": "test chain", "homology_method": "mmseqs2"}}
    line = script.data_lines(record)[2]
    assert line == ("3,536 training and 482 validation chains (split by sequence cluster). Chains removed for homology "
                    "to a test set (>= 30% identity over >= 50% of the test chain, mmseqs2): 323 (ts50 15).")
    del record["leakage"]["coverage"]
    assert "(>= 30% identity, mmseqs2)" in script.data_lines(record)[2]


def test_main_installs_the_weights_and_a_record_of_the_summaries(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    model_dir = tmp_path / "results" / "models" / "bundle"
    model_json = _tiny_export(model_dir, tmp_path)
    keys = ["short/P@L/5", "medium/P@L/5", "long/P@L/5", "medium_long/P@L/5", "long/P@L/1", "medium_long/P@L/1",
            "long/AUPR"]
    model_ts50 = {key: _metric(0.1 + 0.01 * n, 0.05 + 0.01 * n, 0.15 + 0.01 * n) for n, key in enumerate(keys)}
    model_ts50["long/P@L/5"] = _metric(0.123456, 0.10004, 0.14996)
    _write_summary(tmp_path / "eval" / "bundle", "protrnn evaluate --model bundle=results/models/bundle",
                   {"bundle": {"ts50": {"n_proteins": 50, "metrics": model_ts50},
                               "psicov150": {"n_proteins": 150, "metrics": {"long/P@L/5": _metric(0.2, 0.18, 0.22)}}}})
    _write_summary(tmp_path / "eval" / "baselines", "protrnn evaluate --baselines random,propensity",
                   {"random": {"ts50": {"n_proteins": 50, "metrics": {"long/P@L/5": _metric(0.030864, 0.02, 0.04)}},
                               "psicov150": {"n_proteins": 150, "metrics": {"long/P@L/5": _metric(0.04, 0.03, 0.05)}}},
                    "propensity": {"ts50": {"n_proteins": 50, "metrics": {"long/AUPR": _metric(0.05, 0.04, 0.06)}}},
                    # FreeContact scores only the chains with an alignment: 5 of psicov150's 150
                    "freecontact": {"psicov150": {"n_proteins": 5, "metrics": {"long/P@L/5": _metric(0.6, 0.5, 0.8)}}}})
    outdir = tmp_path / "pretrained"

    assert _script().main([str(model_dir), str(tmp_path / "eval" / "bundle"), str(tmp_path / "eval" / "baselines"),
                           str(outdir)]) == 0

    assert sorted(p.name for p in outdir.iterdir()) == ["README.md", "evaluation.json", "model.json",
                                                        "model.safetensors"]
    assert (outdir / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    shipped = json.loads((outdir / "model.json").read_text(encoding="utf-8"))
    assert shipped == {**model_json, "source_checkpoint": "results/models/bundle/checkpoints/best.ckpt"}
    load_network(outdir)  # the installed bundle loads
    record = json.loads((outdir / "evaluation.json").read_text(encoding="utf-8"))
    expected_model_ts50 = {key: [round(0.1 + 0.01 * n, 4), round(0.05 + 0.01 * n, 4), round(0.15 + 0.01 * n, 4)]
                           for n, key in enumerate(keys)}
    expected_model_ts50["long/P@L/5"] = [0.1235, 0.1, 0.15]  # four decimals, as in the shipped record
    assert record == {
        "model": "bundle",
        "test_sets": {
            "ts50": {"protrnn (this model)": expected_model_ts50, "random": {"long/P@L/5": [0.0309, 0.02, 0.04]},
                     "propensity": {"long/AUPR": [0.05, 0.04, 0.06]}, "freecontact": {}},
            "psicov150": {"protrnn (this model)": {"long/P@L/5": [0.2, 0.18, 0.22]},
                          "random": {"long/P@L/5": [0.04, 0.03, 0.05]}, "propensity": {},
                          "freecontact": {"long/P@L/5": [0.6, 0.5, 0.8]}},
        },
        "model_evaluation_command": "protrnn evaluate --model bundle=results/models/bundle",
        "baseline_evaluation_command": "protrnn evaluate --baselines random,propensity",
        # the installed weights' digest: two installs of different weights never leave the same record (rule bundle
        # compares records to tell whether the installed model is still its results folder's)
        "weights_sha256": {
            "model.safetensors": hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()},
    }
    card = (outdir / "README.md").read_text(encoding="utf-8")
    assert card == capsys.readouterr().out.removesuffix("\n")  # the card is also printed for the log
    assert "## ts50 (50 proteins)" in card and "## psicov150 (150 proteins)" in card
    assert "| protrnn (this model) | 0.100 [0.050, 0.150] | 0.110 [0.060, 0.160] | 0.123 [0.100, 0.150] |" in card
    assert "| propensity | – | – | – | – | – | – | 0.050 [0.040, 0.060] |" in card
    # a method scored on fewer proteins than the section's heading counts says so on its row
    assert "| freecontact (5 of 150 proteins) | – | – | 0.600 [0.500, 0.800] | – | – | – | – |" in card
    assert "| random | " in card and "| random (" not in card
    assert "Long-range (>= 24) P@L/5 is 4.0x random ranking." in card  # 0.123456 / 0.030864 = 4.0
    assert "Long-range (>= 24) P@L/5 is 5.0x random ranking." in card  # psicov150: 0.2 / 0.04
    assert ("Checkpoint: best by val/P@L5_medium_long: epoch 3 (0-based), global step 40; trainer.max_epochs 7, "
            "max_time 00:00:02:00") in card
    assert "Validation at that epoch: val/P@L5_long 0.125, val/loss 0.250." in card
    assert f"Architecture: {json.dumps(model_json['config'], sort_keys=True)}" in card


def test_a_refresh_keeps_the_pretraining_section_of_an_earlier_record_of_the_same_members(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    """--pretraining-record: reinstalling members whose encoders are gone keeps the earlier record's pretraining
    section (here the shipped one's) and its card lines; a record of other members (one selected step differs) is
    refused, naming the file, and the installed bundle stays as it was."""

    monkeypatch.chdir(tmp_path)
    _, ensemble = _seeded_ensemble(tmp_path, {0: 4000, 1: 4500})
    earlier = tmp_path / "earlier.json"
    ensemble_entries = [{"seed": seed, "global_step": 4000 + 500 * seed, "selected": "best",
                         "val_metrics": {"val/loss": 0.25, "val/P@L5_long": 0.125}} for seed in (0, 1)]
    earlier.write_text(json.dumps({"ensemble": ensemble_entries, "pretraining": RECORD["pretraining"]}))
    outdir = tmp_path / "pretrained"
    args = [str(ensemble), str(tmp_path / "eval" / "bundle"), str(tmp_path / "eval" / "baselines"), str(outdir)]

    assert _script().main([*args, "--pretraining-record", str(earlier)]) == 0
    record = json.loads((outdir / "evaluation.json").read_text(encoding="utf-8"))
    assert record["pretraining"] == RECORD["pretraining"]
    card = (outdir / "README.md").read_text(encoding="utf-8")
    assert ", starting from a pretrained encoder." in card
    installed = {p.relative_to(outdir): p.read_bytes() for p in outdir.rglob("*") if p.is_file()}

    ensemble_entries[1]["global_step"] = 4000
    earlier.write_text(json.dumps({"ensemble": ensemble_entries, "pretraining": RECORD["pretraining"]}))
    with pytest.raises(InputError, match="not of these members") as refused:
        _script().main([*args, "--pretraining-record", str(earlier)])
    assert str(earlier) in str(refused.value)
    assert {p.relative_to(outdir): p.read_bytes() for p in outdir.rglob("*") if p.is_file()} == installed
    # files that are no record: one line naming the file, the installed bundle untouched
    for content, message in ((b"[1, 2]", "not a JSON object"), (b'{"ensemble": 3}', "'ensemble' is not a list"),
                             (b'{"ensemble": [1]}', "'ensemble' is not a list"),
                             (b'{"ensemble": ', "not valid JSON"), (b"\xff\xfe", "not UTF-8")):
        earlier.write_bytes(content)
        with pytest.raises(InputError, match=message) as refused:
            _script().main([*args, "--pretraining-record", str(earlier)])
        assert str(earlier) in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(InputError, match="not found|No such file") as refused:
        _script().main([*args, "--pretraining-record", str(tmp_path / "missing.json")])
    assert {p.relative_to(outdir): p.read_bytes() for p in outdir.rglob("*") if p.is_file()} == installed


def test_main_refuses_weights_that_do_not_load_and_keeps_the_old_bundle(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    _tiny_export(model_dir, tmp_path)
    (model_dir / "model.safetensors").write_bytes(b"\x80\x04not safetensors")
    _write_summary(tmp_path / "eval", "protrnn evaluate", {"bundle": {}})
    outdir = tmp_path / "pretrained"
    outdir.mkdir()
    before = {name: f"old {name}" for name in ("model.json", "model.safetensors", "evaluation.json", "README.md")}
    for name, text in before.items():
        (outdir / name).write_text(text)
    with pytest.raises(InputError):
        _script().main([str(model_dir), str(tmp_path / "eval"), str(tmp_path / "eval"), str(outdir)])
    assert {p.name: p.read_text() for p in outdir.iterdir()} == before


def test_main_puts_the_configs_notes_in_the_card_and_refuses_a_missing_notes_file(tmp_path: Path, monkeypatch,
                                                                                    capsys) -> None:
    """`bundle.notes`: the written account of the recipe lives in a tracked file, so a rerun of the rule keeps it."""
    monkeypatch.chdir(tmp_path)
    model_dir = tmp_path / "results" / "models" / "bundle"
    _tiny_export(model_dir, tmp_path)
    _write_ts50_summaries(tmp_path / "eval", "results/models/bundle")
    notes = tmp_path / "workflows" / "bundle_notes.md"
    notes.parent.mkdir()
    paragraph = "Why it replaced the previous model: a rule fixed before training, passed on validation."
    notes.write_text(f"\n{paragraph}\n\nSecond paragraph, with `code`.\n\n", encoding="utf-8")
    outdir = tmp_path / "pretrained"
    args = [str(model_dir), str(tmp_path / "eval" / "bundle"), str(tmp_path / "eval" / "baselines"), str(outdir)]

    assert _script().main([*args, "--notes", str(notes)]) == 0

    card = (outdir / "README.md").read_text(encoding="utf-8")
    section = card.split("## Recipe and selection\n\n", 1)[1]
    assert section.startswith(f"{paragraph}\n\nSecond paragraph, with `code`.\n\n"
                              "(From `workflows/bundle_notes.md`, the config's `bundle.notes`.)\n")
    assert card.index("## Recipe and selection") < card.index("## ts50 (50 proteins)")
    assert json.loads((outdir / "evaluation.json").read_text(encoding="utf-8"))["notes"] == "workflows/bundle_notes.md"
    assert _script().main(args) == 0  # without notes: no such section
    assert "Recipe and selection" not in (outdir / "README.md").read_text(encoding="utf-8")

    before = {p.name: p.read_bytes() for p in outdir.iterdir()}
    latin1 = tmp_path / "latin1.md"
    latin1.write_bytes("R\u00e9sum\u00e9".encode("latin-1"))  # the second byte (0xe9) starts no UTF-8 sequence
    for bad, message in [(tmp_path / "missing.md", "file not found"), (tmp_path, "is a directory"),
                         (latin1, r"notes file is not UTF-8 text \(.* at byte 2\)"), (notes, "notes file is empty")]:
        if bad == notes:
            notes.write_text(" \n\n", encoding="utf-8")
        with pytest.raises(InputError, match=message) as caught:
            _script().main([*args, "--notes", str(bad)])
        assert str(bad) in str(caught.value)
        assert {p.name: p.read_bytes() for p in outdir.iterdir()} == before  # the installed bundle is untouched
    capsys.readouterr()


def test_main_installs_an_ensemble_and_swaps_bundle_kinds_cleanly(tmp_path: Path, monkeypatch, capsys) -> None:
    """An ensemble bundle: its members' weights beside ensemble.json, the single model's files gone, one checkpoint
    line per member; installing a single model afterwards removes the ensemble's files again."""
    from protrnn.model.io import save_ensemble
    from protrnn.model.predictor import load_model

    monkeypatch.chdir(tmp_path)
    members, ensemble = _seeded_ensemble(tmp_path, {3: 103, 5: 105})
    outdir = tmp_path / "pretrained"
    outdir.mkdir()
    for name in ("model.json", "model.safetensors"):  # a single-model bundle was installed before
        (outdir / name).write_text("old")
    args = [str(tmp_path / "eval" / "bundle"), str(tmp_path / "eval" / "baselines"), str(outdir)]

    assert _script().main([str(ensemble), *args]) == 0

    assert sorted(p.name for p in outdir.iterdir()) == ["README.md", "ensemble.json", "evaluation.json", "member-1",
                                                        "member-2"]
    for k, member in enumerate(members, 1):
        assert (outdir / f"member-{k}" / "model.safetensors").read_bytes() == (member / "model.safetensors").read_bytes()
        shipped = json.loads((outdir / f"member-{k}" / "model.json").read_text(encoding="utf-8"))
        assert shipped["source_checkpoint"] == "results/models/bundle/checkpoints/best.ckpt"  # no build-machine path
    document = json.loads((outdir / "ensemble.json").read_text(encoding="utf-8"))
    assert document["members"] == ["member-1", "member-2"] and document["seeds"] == [3, 5]
    sequences = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"]
    expected = np.mean([load_model(m, device="cpu").predict(sequences)[0] for m in members], axis=0)
    np.testing.assert_allclose(load_model(outdir, device="cpu").predict(sequences)[0], expected, rtol=1e-6)
    record = json.loads((outdir / "evaluation.json").read_text(encoding="utf-8"))
    assert [(m["seed"], m["global_step"]) for m in record["ensemble"]] == [(3, 103), (5, 105)]
    assert record["weights_sha256"] == {f"member-{k}/model.safetensors": hashlib.sha256(
        (member / "model.safetensors").read_bytes()).hexdigest() for k, member in enumerate(members, 1)}
    card = (outdir / "README.md").read_text(encoding="utf-8")
    assert "An ensemble of 2 training runs of one recipe at seeds 3, 5" in card
    assert "Member 1 (seed 3): best by val/P@L5_medium_long: epoch 3 (0-based), global step 103" in card
    assert "Member 2 (seed 5): best by val/P@L5_medium_long: epoch 3 (0-based), global step 105" in card
    assert "Checkpoint:" not in card

    mixed = tmp_path / "results" / "models" / "other"  # another architecture: not one recipe, so no record of it
    save_model(ContactModel(ModelConfig(hidden_size=12, embed_dim=8, num_layers=1, head="pairwise")), mixed)
    save_ensemble([members[0], mixed], tmp_path / "results" / "ensembles" / "mixed")
    before = sorted(p.name for p in outdir.iterdir())
    with pytest.raises(InputError, match="member 2 differs from member 1"):
        _script().main([str(tmp_path / "results" / "ensembles" / "mixed"), *args])
    assert sorted(p.name for p in outdir.iterdir()) == before

    assert _script().main([str(members[1]), *args]) == 0  # back to one model: the ensemble's files go
    assert sorted(p.name for p in outdir.iterdir()) == ["README.md", "evaluation.json", "model.json",
                                                        "model.safetensors"]
    assert (outdir / "model.safetensors").read_bytes() == (members[1] / "model.safetensors").read_bytes()
    capsys.readouterr()


def _encoder_json(directory: Path, seed: int, q8: float, labels: str) -> None:
    """The description `protrnn pretrain fit` writes beside an encoder's weights (encoder.json)."""
    directory.mkdir(parents=True)
    (directory / "encoder.json").write_text(json.dumps({
        "format": "protrnn-pretrained-encoder", "format_version": 1,
        "config": ModelConfig(hidden_size=8, embed_dim=8, num_layers=1).to_dict(), "alphabet": {},
        "global_step": 7500, "epoch": 3, "selected": "best", "monitor": "val/loss",
        "val_metrics": {"val/Q8": q8, "val/Q3": 0.7, "val/mask_acc": 0.2},
        "training_config": {"seed_everything": seed, "trainer": {"max_time": "00:02:00:00"},
                            "data": {"train_path": labels}}}), encoding="utf-8")


def test_main_records_each_members_own_encoder(tmp_path: Path, monkeypatch, capsys) -> None:
    """`bundle.encoder_per_seed`: members that started from different encoders are one recipe when those encoders
    learnt from the same labels; the record and the card name each member's encoder. Encoders pretrained on other
    labels, or a member without a pretrained encoder beside members with one, are refused and nothing is replaced."""
    from protrnn.model.io import save_ensemble

    monkeypatch.chdir(tmp_path)
    encoders = {0: "results/pretrain/encoder", 1: "results/pretrain/encoder_seed1"}
    for folder, content in (("results_old", b"labels"), ("results", b"labels"), ("other", b"other labels")):
        (tmp_path / folder / "pretrain" / "data").mkdir(parents=True)
        (tmp_path / folder / "pretrain" / "data" / "train.npz").write_bytes(content)
    # member 1's encoder was made in an earlier results folder whose labels were copied: the same bytes
    _encoder_json(tmp_path / encoders[0], 0, 0.6191, "results_old/pretrain/data/train.npz")
    _encoder_json(tmp_path / encoders[1], 1, 0.6177, "results/pretrain/data/train.npz")
    _encoder_json(tmp_path / "elsewhere" / "encoder", 1, 0.5, "other/pretrain/data/train.npz")

    def member(seed: int, encoder: str | None, name: str = "", aux_weight: float | None = None) -> Path:
        directory = tmp_path / "results" / "models" / "bundle" / (name or f"seed{seed}")
        _tiny_export(directory, tmp_path)
        meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        meta["training_config"]["seed_everything"] = seed
        if encoder is not None:
            meta["training_config"]["trainer"]["callbacks"] = [{
                "class_path": "protrnn.training.finetune.PretrainedEncoder",
                "init_args": {"path": encoder, "freeze_steps": 300}}]
            if aux_weight is not None:
                meta["training_config"]["trainer"]["callbacks"].append({
                    "class_path": "protrnn.training.finetune.AuxiliarySecondaryStructure",
                    "init_args": {"labels": "results/pretrain/data/train.npz", "encoder": encoder,
                                  "weight": aux_weight}})
        (directory / "model.json").write_text(json.dumps(meta), encoding="utf-8")
        return directory

    members = [member(0, encoders[0]), member(1, encoders[1])]
    ensemble = tmp_path / "results" / "ensembles" / "bundle"
    save_ensemble(members, ensemble)
    _write_ts50_summaries(tmp_path / "eval", "results/ensembles/bundle")
    outdir = tmp_path / "pretrained"
    args = [str(tmp_path / "eval" / "bundle"), str(tmp_path / "eval" / "baselines"), str(outdir)]

    assert _script().main([str(ensemble), *args]) == 0

    pretraining = json.loads((outdir / "evaluation.json").read_text(encoding="utf-8"))["pretraining"]
    assert pretraining["encoder"]["seed"] == 0 and pretraining["encoder"]["val_metrics"]["val/Q8"] == 0.6191
    assert [(e["seed"], e["val_metrics"]["val/Q8"]) for e in pretraining["member_encoders"]] == [(0, 0.6191),
                                                                                                 (1, 0.6177)]
    card = (outdir / "README.md").read_text(encoding="utf-8")
    assert ("Each member started from its own encoder, pretrained with the same labels and settings at the member's "
            "seed") in card
    assert "member 1 (seed 0): step 7,500, Q8 0.619; member 2 (seed 1): step 7,500, Q8 0.618." in card

    before = {p.name: p.read_bytes() for p in outdir.iterdir() if p.is_file()}
    other_labels = member(1, "elsewhere/encoder", "other_labels")
    no_encoder = member(1, None, "no_encoder")
    with_aux = member(1, encoders[1], "with_aux", aux_weight=0.1)  # member 1 trained without the auxiliary loss
    for second, message in [(other_labels, "member 2's encoder was pretrained on other/pretrain/data/train.npz"),
                            (no_encoder, "member 2 differs from member 1 in its training data, its use of a "
                                         "pretrained encoder"),
                            (with_aux, "member 2 differs from member 1 .* its auxiliary SS loss")]:
        mixed = tmp_path / "results" / "ensembles" / second.name
        save_ensemble([members[0], second], mixed)
        with pytest.raises(InputError, match=message):
            _script().main([str(mixed), *args])
        assert {p.name: p.read_bytes() for p in outdir.iterdir() if p.is_file()} == before
    missing = tmp_path / "results" / "ensembles" / "missing"
    save_ensemble([members[0], member(2, "results/pretrain/encoder_seed2")], missing)
    with pytest.raises(InputError, match="member 2 started from a pretrained encoder that is not here"):
        _script().main([str(missing), *args])
    capsys.readouterr()


# ------------------------------------------------------------------------- the shipped record vs the shipped weights
def _training_stand_in(path: Path) -> Path:
    """One synthetic chain (no homology to any test set) for `protrnn prepare` to split: the command needs training
    input, and what it does with the test sets does not depend on it."""
    rng = np.random.default_rng(0)
    trace = np.cumsum(rng.normal(size=(60, 3)), axis=0) * 2.0
    coords = trace[:, None, :] + rng.normal(scale=0.5, size=(60, 4, 3))
    sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 60))
    return save_dataset([ProteinChain("stand_in", sequence, np.ones(60, dtype=bool), coords)], path)


def _replayed(command: str, *, model: Path | None, test_sets: dict[str, Path], outdir: Path,
              baselines: str | None = None) -> list[str]:
    """The recorded ``protrnn evaluate`` arguments with local paths: the shipped model, the re-prepared test sets
    (others dropped), a fresh output folder, the CPU (the record was made on CPU); ``baselines`` replaces the list."""
    argv = shlex.split(command)
    assert argv[:2] == ["protrnn", "evaluate"], command
    out: list[str] = ["evaluate"]
    args = iter(argv[2:])
    for arg in args:
        if arg == "--model":
            name = next(args).partition("=")[0]
            out += ["--model", f"{name}={model}"]
        elif arg == "--test-set":
            name = next(args).partition("=")[0]
            if name in test_sets:
                out += ["--test-set", f"{name}={test_sets[name]}"]
        elif arg in ("-o", "--outdir"):
            next(args)
            out += ["-o", str(outdir)]
        elif arg == "--device":
            next(args)
            out += ["--device", "cpu"]
        elif arg == "--baselines":
            next(args)
            out += ["--baselines", baselines or ""]
        elif arg == "--train":  # the fitted baselines need the recorded training split, which is not shipped
            next(args)
        else:
            out.append(arg)
    return out


def _prepared_test_set(name: str, source: Path, tmp_path: Path, *, run_prepare: bool) -> Path:
    """``test_<name>.npz`` holding the chains the record was scored on.

    With ``run_prepare``, `protrnn prepare` writes it as the pipeline did (rule `prepare`). Without, it is rebuilt
    from what prepare does to a test set: every chain that parses, in input order, the first of each ID kept, stored
    with the default contact cutoff; no length filter and no leakage removal (those apply to training chains only).
    """
    if run_prepare:
        prepared = tmp_path / "data"
        assert protrnn_main(["prepare", str(_training_stand_in(tmp_path / "stand_in.npz")), "--test-set",
                             f"{name}={source}", "-o", str(prepared), "--split", "train=1.0", "--threads", "1"]) == 0
        return prepared / f"test_{name}.npz"
    chains = read_chains(source)
    assert len({chain.id for chain in chains}) == len(chains)  # so prepare's de-duplication by ID keeps every one
    return save_dataset(chains, tmp_path / f"test_{name}.npz")


def _recompute(name: str, shared_data: Path, tmp_path: Path, *, run_prepare: bool) -> dict[str, dict]:
    """Evaluate the shipped weights and the random baseline on test set ``name`` with the recorded commands; returns
    {method: {metric: [mean, low, high]}} rounded as the record is, plus the number of proteins scored."""
    test_sets = {name: _prepared_test_set(name, shared_data / TEST_SET_SOURCES[name], tmp_path,
                                          run_prepare=run_prepare)}
    model_out, random_out = tmp_path / "model_eval", tmp_path / "random_eval"
    assert protrnn_main(_replayed(RECORD["model_evaluation_command"], model=PRETRAINED_DIR, test_sets=test_sets,
                                  outdir=model_out)) == 0
    assert protrnn_main(_replayed(RECORD["baseline_evaluation_command"], model=None, test_sets=test_sets,
                                  outdir=random_out, baselines="random")) == 0
    figures: dict[str, dict] = {}
    for label, outdir, method in (("protrnn (this model)", model_out, RECORD["model"]),
                                  ("random", random_out, "random")):
        summary = json.loads((outdir / "summary.json").read_text(encoding="utf-8"))
        result = summary["results"][method][name]
        figures[label] = {key: [round(result["metrics"][key][part], 4) for part in ("mean", "low", "high")]
                          for key in RECORD["test_sets"][name][label]}
        figures[label]["n_proteins"] = result["n_proteins"]
    chance = json.loads((model_out / "summary.json").read_text(encoding="utf-8"))["chance"][name]
    figures[CHANCE_NAME] = {key: [round(chance["metrics"][key][part], 4) for part in ("mean", "low", "high")]
                            for key in RECORD["test_sets"][name][CHANCE_NAME]}
    figures[CHANCE_NAME]["n_proteins"] = chance["n_proteins"]
    return figures


def _recorded(name: str, n_proteins: int) -> dict[str, dict]:
    return {label: {**RECORD["test_sets"][name][label], "n_proteins": n_proteins}
            for label in ("protrnn (this model)", "random", CHANCE_NAME)}


def test_shipped_weights_reproduce_the_recorded_ts50_figures(shared_data: Path, tmp_path: Path) -> None:
    """Every TS50 figure of the model (and of the seeded random baseline, and the chance level) in evaluation.json, to
    the recorded four decimals, bootstrap intervals included (same proteins in the same order, same seed)."""
    assert len(RECORD["test_sets"]["ts50"]["protrnn (this model)"]) == 7
    figures = _recompute("ts50", shared_data, tmp_path, run_prepare=False)
    assert figures == _recorded("ts50", 50)  # README.md: "ts50 (50 proteins)"


@pytest.mark.slow
def test_shipped_weights_reproduce_the_recorded_psicov150_figures(shared_data: Path, tmp_path: Path) -> None:
    """The same for PSICOV150 (150 proteins, about a minute on one CPU core), with the test set written by `protrnn
    prepare` itself, so a change in how prepare builds test sets shows here too."""
    assert len(RECORD["test_sets"]["psicov150"]["protrnn (this model)"]) == 7
    figures = _recompute("psicov150", shared_data, tmp_path, run_prepare=True)
    assert figures == _recorded("psicov150", 150)
