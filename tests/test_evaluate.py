"""`protrnn evaluate` on real TS50 chains with a tiny random exported model and the baselines: output structure,
bootstrap intervals, predictions, checkpoints, leakage records, and the errors (shape mismatch, empty set)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from protrnn.cli import main
from protrnn.commands.args import named_paths
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import load_dataset, save_dataset
from protrnn.data.formats import iter_json_chains
from protrnn.errors import InputError
from protrnn.evaluation.evaluate import TestSet as EvalSet  # aliased: pytest would try to collect "Test*"
from protrnn.evaluation.evaluate import (
    evaluate,
    load_test_set,
    parse_baselines,
    score_method,
)
from protrnn.evaluation.metrics import metric_keys
from protrnn.evaluation.results import ID_COLUMNS, read_per_protein_csv
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import save_model

N_TEST = 5
N_TRAIN = 10


@pytest.fixture(scope="module")
def files(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real TS50 chains split into a small test and training set, plus a tiny random exported model."""
    root = tmp_path_factory.mktemp("evaluate")
    chains = list(itertools.islice(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"), N_TEST + N_TRAIN))
    save_dataset(chains[:N_TEST], root / "data" / "test_ts50.npz")
    save_dataset(chains[N_TEST:], root / "data" / "train.npz")
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                     dropout=0.0))
    save_model(model, root / "model")
    return {"root": root, "test": root / "data" / "test_ts50.npz", "train": root / "data" / "train.npz",
            "model": root / "model"}


@pytest.fixture(scope="module")
def evaluated(files: dict[str, Path]) -> Path:
    out = files["root"] / "out"
    code = main(["evaluate", "--model", f"tiny={files['model']}", "--test-set", f"ts50={files['test']}",
                 "--baselines", "random,separation,propensity", "--train", str(files["train"]),
                 "--save-predictions", "2", "--bootstrap", "200", "--seed", "1", "--device", "cpu", "-o", str(out)])
    assert code == 0
    return out


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_per_protein_csv_structure(evaluated: Path, files: dict[str, Path]) -> None:
    header, rows = _csv_rows(evaluated / "per_protein.csv")
    assert header == [*ID_COLUMNS, *metric_keys()]
    test = load_dataset(files["test"])
    lengths = {chain.id: len(chain) for chain in test}
    assert len(rows) == 4 * N_TEST
    assert {r["method"] for r in rows} == {"tiny", "random", "separation", "propensity"}
    for row in rows:
        assert row["test_set"] == "ts50"
        assert int(row["L"]) == lengths[row["protein"]]
    # The reader gives the same numbers back, NaN included.
    parsed = read_per_protein_csv(evaluated / "per_protein.csv")
    assert len(parsed) == len(rows)
    nans = 0
    for got, raw in zip(parsed, rows, strict=True):
        assert [got[c] for c in ID_COLUMNS if c != "L"] == [raw[c] for c in ID_COLUMNS if c != "L"]
        for key in metric_keys():
            assert got[key] == pytest.approx(float(raw[key]), nan_ok=True), key
            nans += raw[key].lower() == "nan"
    # TS50 chains under 97 residues have no pair 96 apart: their >= 96 bin is NaN, and must come back as NaN
    # No separation >= 24 has a contact rate of 0.5, so the separation baseline (a rate per separation) predicts no
    # long-range contact at the 0.5 threshold: its long-range MCC is undefined, written NaN and read back as NaN.
    assert all(r["long/MCC"].lower() == "nan" for r in rows if r["method"] == "separation") and nans > 0


def test_summary_means_and_bootstrap_intervals(evaluated: Path, files: dict[str, Path]) -> None:
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["format"] == "protrnn-evaluation"
    assert set(summary["results"]) == {"tiny", "random", "separation", "propensity"}
    rows = read_per_protein_csv(evaluated / "per_protein.csv")
    checked = 0
    for method, by_test in summary["results"].items():
        result = by_test["ts50"]
        assert result["n_proteins"] == N_TEST
        mine = [r for r in rows if r["method"] == method]
        for key, stats in result["metrics"].items():
            values = np.array([r[key] for r in mine], dtype=float)
            finite = values[~np.isnan(values)]
            assert stats["n"] == finite.size
            if finite.size == 0:
                assert stats["mean"] is None
                continue
            assert stats["mean"] == pytest.approx(finite.mean(), rel=1e-12, abs=1e-15)
            assert stats["low"] <= stats["mean"] + 1e-12 <= stats["high"] + 2e-12
            checked += 1
    assert checked > 100
    # A spread-out metric has a real interval, not a degenerate one.
    spread = summary["results"]["random"]["ts50"]["metrics"]["short/AUPR"]
    assert spread["high"] > spread["low"]
    # Metadata: the command, the model's JSON, the test set and the fitted baselines.
    assert summary["command"].startswith("protrnn evaluate --model tiny=")
    assert summary["methods"]["tiny"]["model_json"] == str(files["model"] / "model.json")
    assert summary["methods"]["tiny"]["config"]["cell"] == "lstm"
    assert summary["methods"]["propensity"]["train_chains"] == N_TRAIN
    assert summary["test_sets"]["ts50"]["n_chains"] == N_TEST
    assert summary["bootstrap"]["n_boot"] == 200
    assert "leakage_rows" not in summary["test_sets"]["ts50"]


def _naive_top_precision(probs: np.ndarray, contacts: np.ndarray, observed: np.ndarray, low: int,
                         high: int | None, k: int) -> float:
    """Top-L/k precision written out pair by pair (docs/conventions.md): candidates i < j, both observed,
    low <= j - i <= high; ranked by decreasing probability, ties by i then j; hits among the first max(1, L // k)
    divided by max(1, L // k); NaN without candidates."""
    length = len(observed)
    pairs = [(i, j) for i in range(length) for j in range(i + 1, length)
             if observed[i] and observed[j] and low <= j - i and (high is None or j - i <= high)]
    if not pairs:
        return math.nan
    pairs.sort(key=lambda p: (-float(probs[p[0], p[1]]), p[0], p[1]))
    top = max(1, length // k)
    return sum(bool(contacts[i, j]) for i, j in pairs[:top]) / top


def test_per_protein_precision_matches_a_pair_by_pair_count(evaluated: Path) -> None:
    """For every saved real prediction, the CSV's top-L/k precisions equal a plain count over the ranked pairs."""
    rows = {(r["method"], r["protein"]): r for r in read_per_protein_csv(evaluated / "per_protein.csv")}
    checked = 0
    for path in sorted((evaluated / "predictions").glob("*/ts50/*.npz")):
        with np.load(path, allow_pickle=False) as data:
            probs, contacts, observed = data["probs"], data["contacts"], data["observed"]
            row = rows[(path.parent.parent.name, str(data["id"]))]
        for name, (low, high) in {"short": (6, 11), "medium_long": (12, None), "long": (24, None)}.items():
            for k in (1, 5):
                expected = _naive_top_precision(probs, contacts, observed, low, high, k)
                assert row[f"{name}/P@L/{k}"] == pytest.approx(expected, abs=1e-12, nan_ok=True), (path, name, k)
                checked += 1
    assert checked == 4 * 2 * 3 * 2  # 4 methods x 2 saved proteins x 3 ranges x 2 k


def _clique_chain(name: str, length: int, clique: Sequence[int], unobserved: Sequence[int] = ()) -> ProteinChain:
    """A chain whose only contacts are the pairs of ``clique`` (those residues share one position; every other
    residue sits 20 A from all others)."""
    coords = np.zeros((length, 4, 3), dtype=np.float32)
    for i in range(length):
        if i not in clique:
            coords[i, :, 0] = 20.0 * (i + 1)
    observed = np.ones(length, dtype=bool)
    observed[list(unobserved)] = False
    coords[~observed] = np.nan
    return ProteinChain(name, "A" * length, observed, coords)


class _FixedScores:
    """A method that gives a few chosen pairs a score and every other pair 0."""

    name = "fixed"
    kind = "model"
    info: dict = {}
    scores = {(0, 12): 0.9, (0, 24): 0.8, (3, 20): 0.7, (12, 24): 0.6, (5, 22): 0.5, (1, 2): 0.95}

    def predict(self, chains):
        out = []
        for chain in chains:
            probs = np.zeros((len(chain), len(chain)), dtype=np.float32)
            for (i, j), value in self.scores.items():
                probs[i, j] = probs[j, i] = value
            out.append(probs)
        return out


def test_precision_of_a_hand_built_case(tmp_path: Path) -> None:
    """L = 25 (L/5 = 5) and contacts exactly (0,12), (12,24), (0,24). Ranked medium_long (sep >= 12) pairs: (0,12)
    hit, (0,24) hit, (3,20) miss, (12,24) hit, (5,22) miss -> 3/5. Long (sep >= 24) has the one candidate (0,24), a
    hit, but the divisor stays L/5 -> 1/5. Medium (12..23): (0,12) hit, (3,20), (12,24) hit, (5,22), then the
    zero-score pairs in row order, starting with (0,13), a miss -> 2/5. Short (6..11) has no contact -> 0.
    medium_long top-L: all 3 contacts among the first 25 -> 3/25.
    With residue 24 unobserved, medium_long keeps (0,12) hit, (3,20), (5,22), then (0,13), (0,14) -> 1/5."""
    chains = [_clique_chain("full", 25, (0, 12, 24)), _clique_chain("masked", 25, (0, 12, 24), unobserved=(24,))]
    assert {tuple(p) for p in np.argwhere(np.triu(chains[0].contact_map(), k=6))} == {(0, 12), (0, 24), (12, 24)}
    test_set = EvalSet("hand", tmp_path / "hand.npz", chains)
    result = evaluate([_FixedScores()], [test_set], tmp_path / "out", n_boot=20, log=lambda _: None)
    rows = {r["protein"]: r for r in read_per_protein_csv(tmp_path / "out" / "per_protein.csv")}
    assert rows["full"]["medium_long/P@L/5"] == pytest.approx(3 / 5, abs=1e-12)
    assert rows["full"]["long/P@L/5"] == pytest.approx(1 / 5, abs=1e-12)
    assert rows["full"]["medium/P@L/5"] == pytest.approx(2 / 5, abs=1e-12)
    assert rows["full"]["short/P@L/5"] == 0.0
    assert rows["full"]["medium_long/P@L/1"] == pytest.approx(3 / 25, abs=1e-12)
    assert rows["masked"]["medium_long/P@L/5"] == pytest.approx(1 / 5, abs=1e-12)
    assert math.isnan(rows["masked"]["long/P@L/5"])  # (0,24) was the only long candidate
    mean = result.summary["results"]["fixed"]["hand"]["metrics"]["medium_long/P@L/5"]
    assert mean["mean"] == pytest.approx((3 / 5 + 1 / 5) / 2) and mean["n"] == 2
    # The chance level (a random ranking's expected precision): medium_long has 13+12+...+1 = 91 candidates, 3 of
    # them contacts; top-L/5 looks at 5 -> 3/91. Without residue 24 the 13 pairs (i, 24) go, one contact left -> 1/78.
    chance = result.summary["chance"]["hand"]
    assert chance["n_proteins"] == 2
    assert chance["metrics"]["medium_long/P@L/5"]["mean"] == pytest.approx((3 / 91 + 1 / 78) / 2, abs=1e-15)
    assert chance["metrics"]["long/P@L/5"]["mean"] == pytest.approx(1 / 5, abs=1e-15)  # "full" only: 1 x 1 / (1 x 5)
    assert chance["metrics"]["long/P@L/5"]["n"] == 1


def test_groups_bound_the_sum_of_squared_lengths(tmp_path: Path) -> None:
    """Lengths 10, 10, 10, 20 under a budget of 250 pairs: 100 + 100 fit, a third 100 would make 300, so the groups
    are [10, 10], [10] (100 + 400 > 250), [20] (alone, over budget: still scored)."""
    seen: list[list[int]] = []

    class Recorder(_FixedScores):
        def predict(self, chains):
            seen.append([len(c) for c in chains])
            return [np.zeros((len(c), len(c)), dtype=np.float32) for c in chains]

    chains = [_clique_chain(f"c{k}", n, ()) for k, n in enumerate((10, 10, 10, 20))]
    rows, skipped = score_method(Recorder(), EvalSet("g", tmp_path / "g.npz", chains), max_group_pairs=250)
    assert seen == [[10, 10], [10], [20]]
    assert [r["protein"] for r in rows] == ["c0", "c1", "c2", "c3"] and skipped == []


def test_saved_predictions_are_loadable_without_pickle(evaluated: Path, files: dict[str, Path]) -> None:
    test = load_dataset(files["test"])
    for method in ("tiny", "random", "separation", "propensity"):
        saved = sorted((evaluated / "predictions" / method / "ts50").glob("*.npz"))
        assert [p.stem for p in saved] == sorted(chain.id for chain in list(test)[:2])
        with np.load(saved[0], allow_pickle=False) as data:
            chain = test[test.index_of(str(data["id"]))]
            assert data["probs"].shape == (len(chain), len(chain))
            assert np.array_equal(data["contacts"], chain.contact_map())
            assert np.array_equal(data["observed"], chain.observed)
            assert str(data["sequence"]) == chain.sequence


def test_rerun_overwrites_cleanly(files: dict[str, Path], evaluated: Path) -> None:
    out = files["root"] / "rerun"
    shutil.copytree(evaluated, out)
    code = main(["evaluate", "--test-set", f"ts50={files['test']}", "--baselines", "random", "--bootstrap", "50",
                 "-o", str(out)])
    assert code == 0
    _, rows = _csv_rows(out / "per_protein.csv")
    assert {r["method"] for r in rows} == {"random"}
    assert not (out / "predictions").exists()  # no stale maps from the earlier run
    assert set(json.loads((out / "summary.json").read_text())["results"]) == {"random"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_checkpoint_gives_the_same_predictions(files: dict[str, Path], tmp_path: Path) -> None:
    """A Lightning-style checkpoint (weights under ``net.``, config in hparams) scores like the exported model."""
    from protrnn.model.io import load_network

    model = load_network(files["model"]).network
    checkpoint = {"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
                  "hyper_parameters": {"model": model.config.to_dict()}}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    for name, path in (("exported", files["model"]), ("ckpt", tmp_path / "last.ckpt")):
        assert main(["evaluate", "--model", f"m={path}", "--test-set", f"ts50={files['test']}", "--bootstrap", "20",
                     "--device", "cpu", "-o", str(tmp_path / name)]) == 0
    exported = read_per_protein_csv(tmp_path / "exported" / "per_protein.csv")
    ckpt = read_per_protein_csv(tmp_path / "ckpt" / "per_protein.csv")
    for a, b in zip(exported, ckpt, strict=True):
        assert a["protein"] == b["protein"]
        assert a["medium_long/AUPR"] == pytest.approx(b["medium_long/AUPR"], nan_ok=True)


class _WrongShape:
    """A method that returns one residue too many for its second chain."""

    name = "broken"
    kind = "model"
    info: dict = {}

    def predict(self, chains):
        out = []
        for k, chain in enumerate(chains):
            size = len(chain) + (1 if k == 1 else 0)
            out.append(np.full((size, size), 0.5, dtype=np.float32))
        return out


def test_shape_mismatch_names_the_protein(files: dict[str, Path], tmp_path: Path) -> None:
    test_set = load_test_set("ts50", files["test"])
    second = test_set.chains[1].id
    with pytest.raises(InputError, match=rf"record '{second}'.*prediction has shape"):
        evaluate([_WrongShape()], [test_set], tmp_path / "out", n_boot=10, log=lambda _: None)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_grouping_does_not_change_results(files: dict[str, Path], tmp_path: Path) -> None:
    """One chain per prediction call (as for chains too long to batch) gives the same numbers as one big call."""
    from protrnn.evaluation.evaluate import ModelMethod

    method = ModelMethod("tiny", files["model"], device="cpu")
    test_set = load_test_set("ts50", files["test"])
    together, _ = score_method(method, test_set)
    alone, _ = score_method(method, test_set, max_group_pairs=1)
    assert [r["protein"] for r in together] == [r["protein"] for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert a["medium_long/AUPR"] == pytest.approx(b["medium_long/AUPR"], abs=1e-6, nan_ok=True)


def test_empty_test_set_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_dataset([], tmp_path / "test_empty.npz")
    code = main(["evaluate", "--baselines", "random", "--test-set", f"empty={tmp_path / 'test_empty.npz'}",
                 "-o", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "test_empty.npz" in err and "empty" in err
    from protrnn.evaluation.baselines import RandomBaseline
    from protrnn.evaluation.evaluate import BaselineMethod

    with pytest.raises(InputError, match="nothing to evaluate on"):
        evaluate([BaselineMethod("random", RandomBaseline())], [], tmp_path / "out")


def test_argument_errors(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # separation/propensity are fitted on the training split, so --train is required.
    assert main(["evaluate", "--baselines", "separation", "--test-set", f"ts50={files['test']}",
                 "-o", str(tmp_path)]) == 2
    assert "--train" in capsys.readouterr().err
    with pytest.raises(InputError, match="unknown baseline 'ccmpred'"):
        parse_baselines("random,ccmpred")
    with pytest.raises(InputError, match="given twice"):
        named_paths(["a=x.npz", "a=y.npz"], "--test-set", bare=True)
    assert named_paths(["results/data/test_ts50.npz"], "--test-set", bare=True) == {
        "ts50": Path("results/data/test_ts50.npz")}
    assert named_paths(["data/val.npz", "x/testing.npz"], "--test-set", bare=True) == {
        "val": Path("data/val.npz"), "testing": Path("x/testing.npz")}  # no test_ prefix: the stem as it is
    # names become file names: no separators, no leading dot, and NAME=PATH is required unless bare paths are allowed
    for bad in ("../up=x.npz", "a/b=x.npz", ".hidden=x.npz", "a,b=x.npz", "=x.npz"):
        with pytest.raises(InputError, match="--test-set"):
            named_paths([bad], "--test-set", bare=True)
    with pytest.raises(InputError, match="expected NAME=PATH"):
        named_paths(["results/data/test_ts50.npz"], "--test-set")
    assert main(["evaluate", "--model", f"m={tmp_path / 'missing'}", "--test-set", f"ts50={files['test']}",
                 "-o", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_leakage_beside_the_test_set_is_recorded(files: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(files["test"], data / "test_ts50.npz")
    (data / "leakage.tsv").write_text("chain_id\ttest_set\ttest_id\tidentity\n"
                                      "cgdms|1abc\tts50\t1eteA\t0.45\ncgdms|2xyz\tts50\t1v7mV\t0.31\n"
                                      "cgdms|3def\tpsicov150\t1ctfA\t0.50\n")
    (data / "manifest.tsv").write_text("source\tid\tlength\tn_observed\tstatus\treason\tsplit\tcluster\n"
                                       "ts50.json\t1eteA\t134\t134\tkept\t\ttest_ts50\t\n"
                                       "ts50.json\t1v7mV\t145\t145\tkept\t\ttest_ts50\t\n"
                                       "cgdms\t1abc\t80\t80\tremoved\tts50:1eteA\t\t\n")
    # prepare's name (from test_<NAME>.npz) finds the rows even when evaluate calls the set something else.
    test_set = load_test_set("renamed", data / "test_ts50.npz")
    assert test_set.leakage["prepared_name"] == "ts50"
    assert test_set.leakage["manifest_test_chains"] == 2
    assert test_set.leakage["leakage_rows"] == 2
    assert test_set.leakage["leakage_rows_total"] == 3
    assert {row["chain_id"] for row in test_set.leakage["leakage"]} == {"cgdms|1abc", "cgdms|2xyz"}
    # the manifest is recorded by an absolute path, which protrnn compare (run from anywhere) can open: a test set
    # named relative to the working directory had recorded "data/manifest.tsv", which compare found only from there
    monkeypatch.chdir(tmp_path)
    relative = load_test_set("ts50", Path("data") / "test_ts50.npz")
    assert relative.leakage["manifest_tsv"] == str((data / "manifest.tsv").resolve())


def test_freecontact_skips_cleanly_without_alignments(files: dict[str, Path], tmp_path: Path) -> None:
    messages: list[str] = []
    from protrnn.evaluation.evaluate import build_baselines

    methods, skipped = build_baselines(["random", "freecontact"], log=messages.append)
    assert [m.name for m in methods] == ["random"]
    assert skipped[0]["method"] == "freecontact" and "--ollikainen-root" in skipped[0]["reason"]
    assert any("skipping baseline freecontact" in m for m in messages)
    result = evaluate(methods, [load_test_set("ts50", files["test"])], tmp_path, n_boot=10,
                      skipped_methods=skipped, log=lambda _: None)
    assert result.summary["skipped"][0]["method"] == "freecontact"


@pytest.fixture()
def small_ollikainen(extracted, tmp_path: Path) -> Path:
    """The real Ollikainen-40 folder with the 2O9S SH3 (PF00018, 49 columns) alignment cut to 300 sequences: freecontact
    then runs in about a second (its cost grows with the cube of the column count, not with the sequences)."""
    source = extracted("ollikainen40_covariation/ollikainen40_pdb_msa_indices.tar.gz") / "ollikainen40"
    root = tmp_path / "ollikainen40"
    shutil.copytree(source, root)
    alignment = root / "natural_alignments" / "PF00018.align.80"
    records = alignment.read_text().split(">")[1:301]
    alignment.write_text("".join(">" + record for record in records))
    return root


@pytest.mark.usefixtures("freecontact")  # fails, not skips, without it (conftest.require_tool)
def test_freecontact_on_ollikainen_protein_only(small_ollikainen: Path, files: dict[str, Path],
                                                tmp_path: Path) -> None:
    from protrnn.evaluation import baselines as bl

    chain = bl.load_ollikainen_chain(bl.load_ollikainen_case(small_ollikainen, "2O9S"))
    ts50 = list(load_dataset(files["test"]))[:1]
    save_dataset([chain, *ts50], tmp_path / "test_mixed.npz")
    code = main(["evaluate", "--baselines", "freecontact", "--ollikainen-root", str(small_ollikainen),
                 "--test-set", f"mixed={tmp_path / 'test_mixed.npz'}", "--bootstrap", "20", "-o",
                 str(tmp_path / "out")])
    assert code == 0
    rows = read_per_protein_csv(tmp_path / "out" / "per_protein.csv")
    assert [r["protein"] for r in rows] == [chain.id]
    assert rows[0]["L"] == len(chain)
    assert not math.isnan(rows[0]["long/P@L/5"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"] == [{"method": "freecontact", "test_set": "mixed", "n_proteins": 1,
                                   "proteins": {ts50[0].id: "no Ollikainen-40 alignment for this protein"}}]



def test_a_failing_freecontact_run_is_reported_not_fatal(small_ollikainen: Path, tmp_path: Path) -> None:
    """freecontact crashing on one alignment skips that protein with the reason; the evaluation goes on."""
    from protrnn.evaluation import baselines as bl
    from protrnn.evaluation.evaluate import FreeContactMethod

    failing = tmp_path / "freecontact"
    failing.write_text("#!/bin/sh\necho 'alignment has too few sequences' >&2\nexit 3\n")
    failing.chmod(0o755)
    chain = bl.load_ollikainen_chain(bl.load_ollikainen_case(small_ollikainen, "2O9S"))
    method = FreeContactMethod(small_ollikainen)
    method.baseline.executable = str(failing)
    assert method.predict([chain]) == [None]
    assert "freecontact failed" in method.reasons[chain.id] and "too few sequences" in method.reasons[chain.id]


def test_bins_option_sets_the_separation_bins(files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.conventions import DEFAULT_BINS
    from protrnn.evaluation.evaluate import parse_bins

    assert parse_bins(None) == list(DEFAULT_BINS)
    assert parse_bins("6-11, 12+ ,30-40") == [(6, 11), (12, None), (30, 40)]
    for bad in ("6-x", "11-6", "0-5", "1-5", "5+", "6-11,6-11"):
        with pytest.raises(InputError, match="--bins"):
            parse_bins(bad)
    out = tmp_path / "out"
    assert main(["evaluate", "--baselines", "random", "--test-set", f"ts50={files['test']}", "--bins", "6-11,12+",
                 "--bootstrap", "10", "-o", str(out)]) == 0
    header, rows = _csv_rows(out / "per_protein.csv")
    assert [c for c in header if c.startswith("bin/") and c.endswith("/P@L/5")] == ["bin/6-11/P@L/5", "bin/12+/P@L/5"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bins"] == [[6, 11], [12, None]] and "--bins 6-11,12+" in summary["command"]
    # bin 12+ is the medium_long range: same numbers
    for row in rows:
        assert row["bin/12+/P@L/5"] == row["medium_long/P@L/5"]
    assert main(["evaluate", "--baselines", "random", "--test-set", f"ts50={files['test']}", "--bins", "6-",
                 "-o", str(out)]) == 2
    assert "--bins" in capsys.readouterr().err


@pytest.mark.usefixtures("freecontact")  # fails, not skips, without it (conftest.require_tool)
def test_ollikainen_root_may_be_the_shipped_tarball(small_ollikainen: Path, tmp_path: Path) -> None:
    import tarfile

    from protrnn.evaluation import baselines as bl

    chain = bl.load_ollikainen_chain(bl.load_ollikainen_case(small_ollikainen, "2O9S"))
    save_dataset([chain], tmp_path / "test_olk.npz")
    archive = tmp_path / "ollikainen40_pdb_msa_indices.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(small_ollikainen, arcname="ollikainen40")
    code = main(["evaluate", "--baselines", "freecontact", "--ollikainen-root", str(archive),
                 "--test-set", f"olk={tmp_path / 'test_olk.npz'}", "--bootstrap", "20", "-o", str(tmp_path / "out")])
    assert code == 0
    rows = read_per_protein_csv(tmp_path / "out" / "per_protein.csv")
    assert [r["protein"] for r in rows] == [chain.id] and not math.isnan(rows[0]["long/P@L/5"])
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    assert main(["evaluate", "--baselines", "freecontact", "--ollikainen-root", str(tmp_path / "broken.tar.gz"),
                 "--test-set", f"olk={tmp_path / 'test_olk.npz'}", "-o", str(tmp_path / "out2")]) == 2


@pytest.mark.parametrize("command", [["evaluate", "--baselines", "random", "--test-set", "t=x.npz"],
                                     ["prepare", "x.pdb", "-o", "out"], ["pretrain", "prepare", "x", "-o", "out"],
                                     ["compare", "a", "b"], ["diagnose", "m", "--data", "d.npz", "-o", "o.json"],
                                     ["synthetic", "-o", "out"]])
@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_a_seed_outside_0_to_2_63_is_refused_before_any_work(command: list[str], seed: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """numpy refuses negative seeds, so evaluate failed with a traceback after scoring every protein; every command's
    --seed takes the same range, what torch, NumPy and the recorded JSON all hold."""
    from protrnn.cli import main

    with pytest.raises(SystemExit) as stop:
        main([*command, "--seed", seed])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument --seed: must be an integer from 0 to 2**63 - 1, got {seed}")


def _toy_test_set(path: Path, ids: Sequence[str], *, sequence: str = "ACDEFGHIKLMNPQRSTVWYACDEFGHIK") -> Path:
    """A test set of compact random walks (they have contacts at every range) named ``ids``."""
    rng = np.random.default_rng(0)
    chains = []
    for chain_id in ids:
        steps = rng.normal(size=(len(sequence), 3))
        ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
        coords = np.repeat(ca[:, None, :], 4, axis=1).astype(np.float32)
        chains.append(ProteinChain(chain_id, sequence, np.ones(len(sequence), dtype=bool), coords))
    return save_dataset(chains, path)


def _with_array(path: Path, target: Path, **arrays: np.ndarray) -> Path:
    np.savez(target, **{**dict(np.load(path)), **arrays})
    return target


def test_a_bad_test_set_is_one_line_naming_file_and_chain_and_leaves_no_outdir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A '#' in a sequence (named neither file nor chain: "record '#1', position 6"; with baselines only, scored
    silently), chain_meta that is not JSON (a JSONDecodeError traceback) and a chain ID given twice (exit 0, then
    compare refused the output) are refused at load, before any work, on one line."""
    good = _toy_test_set(tmp_path / "good.npz", ["a", "b", "c"])
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWYACDEFGHIK" * 3, dtype=np.uint8).copy()
    letters[29 + 5] = ord("#")  # chain b (residues 29..57), its 6th residue
    cases = [
        (_with_array(good, tmp_path / "hash.npz", sequences=letters),
         "hash.npz, record 'b', position 6: invalid residue letter '#'"),
        (_with_array(good, tmp_path / "meta.npz", chain_meta=np.frombuffer(b"{not json", dtype=np.uint8)),
         "meta.npz (chain_meta): not a list of per-chain meta objects: not valid JSON"),
        (_with_array(good, tmp_path / "dup.npz", ids=np.array(["a", "b", "a"])),
         "dup.npz, record 'a': duplicate chain ID (chains #1 and #3)"),
    ]
    for path, expected in cases:
        out = tmp_path / f"out_{path.stem}"
        code = main(["evaluate", "--baselines", "random", "--test-set", f"t={path}", "--bootstrap", "10",
                     "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith(f"protrnn: error: {path}") and err.count("\n") == 1 and expected in err
        assert not out.exists()


def test_ids_that_are_not_utf8_are_written_escaped_and_read_back_by_compare(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ID from a file name holding byte 0xE9 (a lone surrogate, as prepare reads it) made evaluate fail after
    scoring with a UnicodeEncodeError and an empty OUTDIR. It is written as the escape manifest.tsv uses, the file
    stays UTF-8, and compare reads it back."""
    test = _toy_test_set(tmp_path / "test_t.npz", ["z\udce9_A", "b", "c"])
    out = tmp_path / "out"
    assert main(["evaluate", "--baselines", "random,separation", "--train", str(test), "--test-set", f"t={test}",
                 "--bootstrap", "10", "-o", str(out)]) == 0
    text = (out / "per_protein.csv").read_bytes().decode("utf-8")  # strict: the file is UTF-8
    assert "z\\udce9_A" in text
    rows = read_per_protein_csv(out / "per_protein.csv")
    assert [(r["method"], r["protein"]) for r in rows] == [
        (method, protein) for method in ("random", "separation") for protein in ("z\\udce9_A", "b", "c")]
    capsys.readouterr()
    assert main(["compare", str(out), "--reference", "separation"]) == 0
    assert "random" in capsys.readouterr().out


def test_a_failed_evaluation_removes_the_outdir_it_created_and_keeps_an_existing_one(tmp_path: Path) -> None:
    """A method failing midway left the empty OUTDIR (and parents) swapped_directory had made for its staging."""

    class Failing(_FixedScores):
        def predict(self, chains):
            raise InputError("the method cannot read its input", record=chains[0].id)

    chains = [_clique_chain("full", 25, (0, 12, 24))]
    test_set = EvalSet("hand", tmp_path / "hand.npz", chains)
    nested = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(InputError, match="cannot read its input"):
        evaluate([Failing()], [test_set], nested, n_boot=5, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # "new" and "deeper" went too
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="cannot read its input"):
        evaluate([Failing()], [test_set], existing / "out", n_boot=5, log=lambda _: None)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
