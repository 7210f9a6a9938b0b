"""`protrnn report` from inputs made by the real code paths: `protrnn evaluate` on TS50 chains (a tiny model and the
baselines), gradient diagnostics from `protrnn diagnose`, a Lightning CSVLogger metrics.csv and a
leakage table. The HTML must be self-contained, embed every figure, carry the tables, and reference no URL."""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from protrnn.cli import main
from protrnn.data.dataset import load_dataset, save_dataset
from protrnn.data.formats import iter_json_chains
from protrnn.diagnostics.fit import difference_interval, seed_interval
from protrnn.diagnostics.results import (
    DiagnosticsResult,
    DistanceProfile,
    GradientFlow,
    UsageProfile,
    save_diagnostics,
    split_seed,
)
from protrnn.errors import InputError
from protrnn.evaluation.results import CHANCE_NAME
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import save_model
from protrnn.report import build_report, figures, load_inputs
from protrnn.report.aggregate import (
    aggregate_diagnostics,
    aggregate_synthetic,
    hierarchical_bootstrap,
    paired_difference_bootstrap,
)
from protrnn.report.figures import top_pairs
from protrnn.report.findings import build_findings, comparisons, effective_settings
from protrnn.report.html import _findings_section
from protrnn.report.inputs import Evaluation, MethodResult, SyntheticRun, chance_levels, read_run_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_inputs")
    chains = list(itertools.islice(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"), 12))
    save_dataset(chains[:4], root / "data" / "test_ts50.npz")
    save_dataset(chains[4:], root / "data" / "train.npz")
    (root / "data" / "leakage.tsv").write_text("chain_id\ttest_set\ttest_id\tidentity\n"
                                               f"cgdms|1abc\tts50\t{chains[0].id}\t0.45\n")
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=2, head="pairwise", pair_dim=8,
                                     dropout=0.0))
    save_model(model, root / "models" / "lstm_tiny")
    test = f"ts50={root / 'data' / 'test_ts50.npz'}"
    assert main(["evaluate", "--model", f"lstm_tiny={root / 'models' / 'lstm_tiny'}", "--test-set", test,
                 "--save-predictions", "2", "--bootstrap", "100", "--device", "cpu",
                 "-o", str(root / "evaluation" / "lstm_tiny")]) == 0
    assert main(["evaluate", "--baselines", "random,separation,propensity", "--train",
                 str(root / "data" / "train.npz"), "--test-set", test, "--save-predictions", "2",
                 "--bootstrap", "100", "-o", str(root / "evaluation" / "baselines")]) == 0

    # Diagnostics exactly as the pipeline makes them: `protrnn diagnose` (protrnn.diagnostics.run).
    assert main(["diagnose", str(root / "models" / "lstm_tiny"), "--data", str(root / "data" / "train.npz"),
                 "--train-data", str(root / "data" / "train.npz"), "--n-chains", "2", "--pairs-per-chain", "3",
                 "--loss-chains", "2", "--max-distance", "40", "--device", "cpu",
                 "-o", str(root / "diagnostics" / "lstm_tiny.json")]) == 0

    from pytorch_lightning.loggers import CSVLogger

    logger = CSVLogger(root / "models" / "lstm_tiny", name="lightning_logs")
    step = 0
    for epoch in range(4):
        for _ in range(3):
            logger.log_metrics({"train/loss_step": 0.6 - 0.05 * step, "epoch": epoch}, step=step)
            step += 1
        logger.log_metrics({"train/loss": 0.55 - 0.1 * epoch, "epoch": epoch}, step=step - 1)
        logger.log_metrics({"val/loss": 0.6 - 0.05 * epoch, "val/P@L5_long": 0.02 * epoch, "epoch": epoch},
                           step=step - 1)
    logger.save()
    return root


@pytest.fixture(scope="module")
def report(inputs: Path) -> Path:
    out = inputs / "report"
    code = main(["report", "--evaluation", str(inputs / "evaluation" / "lstm_tiny"),
                 str(inputs / "evaluation" / "baselines"), "--diagnostics", str(inputs / "diagnostics" / "lstm_tiny.json"),
                 "--runs", str(inputs / "models" / "lstm_tiny"), "--leakage", str(inputs / "data" / "leakage.tsv"),
                 "-o", str(out)])
    assert code == 0
    return out


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("href", "src"):
            if key in values and tag != "img":
                self.links.append(values[key] or "")


def test_html_is_self_contained_with_every_figure(report: Path) -> None:
    text = (report / "report.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    assert not re.search(r"https?://|//cdn|@import", text, re.IGNORECASE)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert parser.links == []
    stems = ["precision_by_separation", "gradient_sensitivity", "context_usage", "training_curves"]
    maps = sorted(p.stem for p in (report / "figures").glob("contact_map_*.png"))
    assert len(maps) == 2  # two proteins per test set by default
    assert len(parser.images) == len(stems) + len(maps)
    embedded = []
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        embedded.append(base64.b64decode(src.split(",", 1)[1]))
    for stem in stems + maps:
        png = (report / "figures" / f"{stem}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and png in embedded
        assert (report / "figures" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    assert not [p for p in report.rglob(".*")]  # no temporary files left


def test_tables_answer_the_question(report: Path, inputs: Path) -> None:
    text = (report / "report.html").read_text(encoding="utf-8")
    assert "How far does each recurrent model see?" in text
    diagnostics = json.loads((inputs / "diagnostics" / "lstm_tiny.json").read_text())["models"][0]
    horizon = diagnostics["horizon"]
    assert ("&gt; 40 residues" if horizon is None else f"{horizon} residues") in text
    assert diagnostics["diagnosis"]["label"] in text
    for method in ("lstm_tiny", "random", "separation", "propensity"):
        assert f">{method}<" in text
    # Every headline number is the summary's mean and interval, formatted to 3 decimals.
    summary = json.loads((inputs / "evaluation" / "baselines" / "summary.json").read_text())
    stats = summary["results"]["propensity"]["ts50"]["metrics"]["medium_long/P@L/5"]
    assert f"{stats['mean']:.3f} <span class='small'>[{stats['low']:.3f}, {stats['high']:.3f}]</span>" in text
    assert "All metrics" in text and "bin/96+/P@L/5" in text
    # The leakage rows are listed, not just counted.
    assert "cgdms|1abc" in text and "<b>1</b> overlapping training chain(s) (ts50: 1)" in text
    assert "1 overlapping training chain(s) listed in" in text  # as evaluate recorded it beside the test set


def test_proteins_option_and_clean_rerun(report: Path, inputs: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    shutil.copytree(report, out)
    protein = load_dataset(inputs / "data" / "test_ts50.npz")[1].id
    assert main(["report", "--evaluation", str(inputs / "evaluation" / "lstm_tiny"), "--proteins", protein,
                 "-o", str(out)]) == 0
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        [f"contact_map_ts50_{protein}.png", f"contact_map_ts50_{protein}.svg", "precision_by_separation.png",
         "precision_by_separation.svg"])
    text = (out / "report.html").read_text()
    assert "No diagnostics were given" in text and "No training runs were given" in text
    assert "No leakage table was given" in text
    assert main(["report", "--evaluation", str(inputs / "evaluation" / "lstm_tiny"), "--proteins", "9xyzQ",
                 "-o", str(out)]) == 2
    assert "no saved prediction for '9xyzQ'" in capsys.readouterr().err


def test_bad_inputs_are_named(inputs: Path, tmp_path: Path) -> None:
    evaluation = str(inputs / "evaluation" / "baselines")
    with pytest.raises(InputError, match="appears in two evaluations"):
        build_report(load_inputs(evaluations=[evaluation, evaluation]), tmp_path / "r", log=lambda _: None)
    with pytest.raises(InputError, match="evaluation summary not found"):
        load_inputs(evaluations=[tmp_path])
    with pytest.raises(InputError, match="nothing to report"):
        load_inputs()
    with pytest.raises(InputError, match="no metrics.csv"):
        load_inputs(runs=[str(tmp_path)])
    # a misspelt reference: every knob of the findings had read "not measured", with exit 0
    with pytest.raises(InputError, match=r"--reference 'lstm_tinyy': no model or synthetic variant of that name; "
                                         r"the inputs have lstm_tiny"):
        build_report(load_inputs(evaluations=[str(inputs / "evaluation" / "lstm_tiny")], reference="lstm_tinyy"),
                     tmp_path / "r2", log=lambda _: None)
    assert not (tmp_path / "r2").exists()


def test_report_inputs_that_would_mislead_or_be_destroyed_are_refused(inputs: Path, tmp_path: Path) -> None:
    import shutil

    # -o an evaluation folder: the report's summary.json replaced the evaluation's
    evaluation = tmp_path / "ev"
    shutil.copytree(inputs / "evaluation" / "baselines", evaluation)
    before = (evaluation / "summary.json").read_bytes()
    with pytest.raises(InputError, match=r"ev: holds a summary.json that is not a report's \(format "
                                         r"'protrnn-evaluation'\)"):
        build_report(load_inputs(evaluations=[str(evaluation)]), evaluation, log=lambda _: None)
    assert (evaluation / "summary.json").read_bytes() == before
    # a protein listed twice would replace its first row in every mean
    table = evaluation / "per_protein.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(InputError, match=rf"per_protein.csv, position {len(lines) + 1}: method .* is listed twice "
                                         r"\(line 2 and here\)"):
        load_inputs(evaluations=[str(evaluation)])
    table.write_bytes(b"method,test_set,protein\nrandom,ts50,\xff\xfe\n")
    with pytest.raises(InputError, match=r"per_protein.csv: not UTF-8 text"):
        load_inputs(evaluations=[str(evaluation)])
    # a hand-edited summary.json that still parses: one line naming the entry, not an AttributeError in the report
    table.write_text("\n".join(lines) + "\n")
    original = json.loads(before)
    method, test_set = next((m, t) for m, cells in original["results"].items() for t in cells)
    key = next(iter(original["results"][method][test_set]["metrics"]))
    edits = [("results", [1, 2], "'results' is not an object"),
             ("test_sets", "x", "'test_sets' is not an object"),
             ("results", {method: {test_set: {"metrics": {key: None}}}},
              f"results.{method}.{test_set}.metrics.{key} is not an object with a numeric 'mean'"),
             ("chance", {"ts50": "abc"}, "chance.ts50 is not an object"),
             ("methods", {"random": None}, "methods.random is not an object")]
    for field, value, message in edits:
        (evaluation / "summary.json").write_text(json.dumps({**original, field: value}))
        with pytest.raises(InputError, match=re.escape(message)):
            load_inputs(evaluations=[str(evaluation)])
    (evaluation / "summary.json").write_text(json.dumps({k: v for k, v in original.items() if k != "results"}))
    with pytest.raises(InputError, match="'results' is not present"):  # it gave an empty report, exit 0
        load_inputs(evaluations=[str(evaluation)])
    # a table that is not a leakage table (a manifest) would be reported as removed training chains
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("source\tid\tlength\tstatus\nsrc\ta\t50\tkept\n")
    with pytest.raises(InputError, match="manifest.tsv: not a leakage table"):
        load_inputs(evaluations=[str(inputs / "evaluation" / "baselines")], leakage=[str(manifest)])
    # the report's own folder is rewritten freely
    out = tmp_path / "r"
    for _ in range(2):
        build_report(load_inputs(evaluations=[str(inputs / "evaluation" / "baselines")]), out, log=lambda _: None)


def test_run_curves_read_lightning_csv(inputs: Path) -> None:
    curves = read_run_curves(inputs / "models" / "lstm_tiny", "tiny")
    assert curves.path.name == "metrics.csv" and "version_0" in str(curves.path)
    assert curves.x_label == "optimizer step"
    steps = curves.series["train/loss_step"]
    assert [x for x, _ in steps] == list(range(12))
    assert steps[1][1] == pytest.approx(0.55)
    assert curves.series["val/loss"] == [(2.0, pytest.approx(0.6)), (5.0, pytest.approx(0.55)),
                                         (8.0, pytest.approx(0.5)), (11.0, pytest.approx(0.45))]


def test_top_pairs_respects_ranking_ties_and_observed() -> None:
    probs = np.zeros((12, 12))
    probs[0, 11] = probs[1, 9] = 0.9  # a tie: (0, 11) comes first by row
    probs[2, 10] = 0.95  # highest, but residue 10 is unobserved
    probs[0, 3] = 1.0  # separation 3 < 6: never ranked
    observed = np.ones(12, dtype=bool)
    observed[10] = False
    rows, cols = top_pairs(probs, observed, 2)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 11), (1, 9)]
    # Every other candidate scores 0: they follow in (i, j) order, the first being (0, 6).
    rows, cols = top_pairs(probs, observed, 3)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 11), (1, 9), (0, 6)]
    # All candidates: i < j, j - i >= 6 among 12 residues gives 6 + 5 + 4 + 3 + 2 + 1 = 21 pairs, less the 5 with the
    # unobserved residue 10 ((0..4, 10)): 16, and asking for more returns just those.
    rows, cols = top_pairs(probs, observed, 100)
    pairs = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert len(rows) == len(pairs) == 16
    assert pairs == {(i, j) for i in range(12) for j in range(i + 6, 12) if 10 not in (i, j)}


def test_no_double_escaped_entities(report: Path, inputs: Path, tmp_path: Path) -> None:
    """A model evaluated but not diagnosed shows a dash in section 1, not the literal text '&ndash;'."""
    out = tmp_path / "report"
    assert main(["report", "--evaluation", str(inputs / "evaluation" / "lstm_tiny"), "-o", str(out)]) == 0
    for html_file in (report / "report.html", out / "report.html"):
        assert not re.search(r"&amp;[a-zA-Z]+;", html_file.read_text(encoding="utf-8"))
    assert "<td class='l'>not measured</td><td class='l'>&ndash;</td>" in (out / "report.html").read_text()


def test_last_hidden_layer_collapse_is_explained(report: Path) -> None:
    text = (report / "report.html").read_text(encoding="utf-8")
    assert "The last layer drops to zero right after distance 0 by construction" in text
    assert "pairwise head reads only h_i and h_j" in text


def test_legends_do_not_cover_the_data(inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Legends of the sensitivity and training-curve figures sit outside every axes (inside, they hid curves)."""
    import protrnn.report.figures as rep

    loaded = load_inputs(evaluations=[str(inputs / "evaluation" / "lstm_tiny")],
                         diagnostics=[str(inputs / "diagnostics" / "lstm_tiny.json")],
                         runs=[str(inputs / "models" / "lstm_tiny")])
    overlaps: dict[str, list[str]] = {}
    original = rep._save

    def checking_save(fig, directory, stem, title, caption):  # type: ignore[no-untyped-def]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
        found = []
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                box = legend.get_window_extent(renderer)
                found += [f"{ax.get_title()!r}" for other in boxes if box.overlaps(other)]
        overlaps[stem] = found
        return original(fig, directory, stem, title, caption)

    monkeypatch.setattr(rep, "_save", checking_save)
    build_report(loaded, tmp_path / "r", log=lambda _: None)
    assert overlaps["gradient_sensitivity"] == [] and overlaps["training_curves"] == []


# ------------------------------------------------------------------------------------ seeds, usage, findings


def test_seed_names_round_trip() -> None:
    assert split_seed("lstm@seed1") == ("lstm", 1)
    assert split_seed("lstm_horizon16@seed12") == ("lstm_horizon16", 12)
    assert split_seed("lstm") == ("lstm", None) and split_seed("a@seedx") == ("a@seedx", None)


def test_seed_intervals_are_student_t() -> None:
    from scipy import stats

    got = seed_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert got["mean"] == 2.0 and got["low"] == pytest.approx(2 - half) and got["high"] == pytest.approx(2 + half)
    assert math.isnan(seed_interval([5.0])["low"])
    # Welch: variances 2 and 0 over 2 seeds each -> se 1, df 1
    diff = difference_interval([10.0, 12.0], [4.0, 4.0])
    assert diff["mean"] == 7.0
    assert diff["low"] == pytest.approx(7 - stats.t.ppf(0.975, 1)) and diff["high"] == pytest.approx(7 + stats.t.ppf(0.975, 1))
    exact = difference_interval([16.0, 16.0], [75.0, 75.0])
    assert exact["low"] == exact["high"] == -59.0
    # a known measurement noise floors each group's spread: sd 1 in both groups of 2 -> se 1, df 2
    floored = difference_interval([16.0, 16.0], [75.0, 75.0], noise_sd=(1.0, 1.0))
    assert floored["high"] == pytest.approx(-59.0 + stats.t.ppf(0.975, 2))
    assert seed_interval([3.0, 3.0], noise_sd=0.5)["low"] == pytest.approx(3 - stats.t.ppf(0.975, 1) * 0.5 / math.sqrt(2))


def test_a_metrics_seeded_interval_does_not_depend_on_the_other_metrics() -> None:
    from protrnn.report.aggregate import aggregate_results

    rng = np.random.default_rng(5)
    names = ["m@seed0", "m@seed1"]
    rows = [{"method": name, "test_set": "ts", "protein": f"p{k}", "bin/24-47/P@L/5": float(rng.random()),
             "bin/96+/P@L/5": float(rng.random())} for name in names for k in range(25)]

    def interval(metrics: list[str]) -> tuple[float, float]:
        evaluation = Evaluation(path=Path("e"), summary={}, rows=[{k: v for k, v in r.items()
                                                                    if k in metrics or "/" not in k} for r in rows])
        results = [MethodResult(method=name, kind="model", test_set="ts", n_proteins=25,
                                metrics={m: {"mean": 0.0} for m in metrics}, source=Path("e")) for name in names]
        [merged] = aggregate_results(results, [evaluation], n_boot=200)
        far = merged.metrics["bin/96+/P@L/5"]
        return far["low"], far["high"]

    # a finer bin listed before it must not move the >= 96 interval
    assert interval(["bin/24-47/P@L/5", "bin/96+/P@L/5"]) == interval(["bin/96+/P@L/5"])


def test_hierarchical_bootstrap_resamples_seeds_and_pairs_proteins() -> None:
    # two seeds that disagree completely: a quarter of the replicates draw seed 0 twice, a quarter seed 1 twice
    disagree = np.array([[0.0] * 30, [1.0] * 30])
    stats = hierarchical_bootstrap(disagree)
    assert stats["mean"] == 0.5 and stats["low"] == 0.0 and stats["high"] == 1.0
    # seeds that agree: only the protein sample moves the interval; NaN proteins are skipped per seed
    rng = np.random.default_rng(1)
    values = rng.random(40)
    same = np.stack([values, values])
    same[1, 3] = np.nan
    stats = hierarchical_bootstrap(same)
    assert stats["mean"] == pytest.approx((values.mean() + np.delete(values, 3).mean()) / 2)
    assert stats["low"] < stats["mean"] < stats["high"]
    # paired proteins: a model that is the reference plus 0.1 on every protein differs by exactly 0.1
    paired = paired_difference_bootstrap(values[None, :] + 0.1, values[None, :])
    assert paired["mean"] == pytest.approx(0.1) and paired["low"] == pytest.approx(0.1)
    assert paired["high"] == pytest.approx(0.1)


def _lstm(**changes: object) -> dict:
    config = {"cell": "lstm", "hidden_size": 64, "num_layers": 2, "residual": True, "layer_norm": True,
              "orthogonal_init": True, "forget_bias": 1.0, "chrono_init": False, "chrono_tmax": 200,
              "gradient_horizon": None, "pair_chunk_size": 256}
    config.update(changes)
    return config


def _inits(config: dict) -> dict:
    """A config's init settings, as training_record records a pretrained encoder's (pretrained_encoder_init)."""
    return {key: config[key] for key in ("orthogonal_init", "forget_bias", "chrono_init", "chrono_tmax")}


def test_knob_comparisons_are_read_from_the_configurations() -> None:
    settings = {
        "lstm": effective_settings(_lstm(), 1.0),
        "gru": effective_settings(_lstm(cell="gru", forget_bias=None), 1.0),    # forget bias means nothing to a GRU
        "lstm_h16": effective_settings(_lstm(gradient_horizon=16), 1.0),
        "lstm_chrono": effective_settings(_lstm(chrono_init=True, chrono_tmax=128), 1.0),
        "lstm_noclip": effective_settings(_lstm(), 0),
        "lstm_plain": effective_settings(_lstm(orthogonal_init=False, layer_norm=False, residual=False,
                                               forget_bias=None), 1.0),
        "lstm_big": effective_settings(_lstm(hidden_size=128), 1.0),             # not a knob: never compared
        "rnn": effective_settings(_lstm(cell="rnn"), 1.0),
        "rnn_noclip": effective_settings(_lstm(cell="rnn"), None),
        "lstm1": effective_settings(_lstm(num_layers=1), 1.0),
        "lstm1_nores": effective_settings(_lstm(num_layers=1, residual=False), 1.0),
    }
    found = {(c.knobs, c.variant, c.base) for c in comparisons(settings, "lstm")}
    assert found == {
        (("cell",), "gru", "lstm"), (("cell",), "rnn", "lstm"), (("gradient horizon",), "lstm_h16", "lstm"),
        (("forget bias / chrono init",), "lstm_chrono", "lstm"), (("gradient clipping",), "lstm_noclip", "lstm"),
        (("forget bias / chrono init", "layer norm", "orthogonal init", "residual"), "lstm_plain", "lstm"),
        (("gradient clipping",), "rnn_noclip", "rnn"), (("residual",), "lstm1_nores", "lstm1"),
    }
    texts = {c.variant: c.change for c in comparisons(settings, "lstm")}
    assert texts["lstm_noclip"] == "clip=1 -> clip=off" and texts["rnn_noclip"] == "clip=1 -> clip=off (in rnn)"
    assert texts["lstm_chrono"] == ("chrono_init=False, forget_bias=1.0 -> chrono_init=True, chrono_tmax=128, "
                                    "forget_bias=none")


def _profile(values: list[float]) -> DistanceProfile:
    v = np.asarray(values, dtype=float)
    n = len(v)
    return DistanceProfile(quantity="input_sensitivity", rule="nearest", distance=np.arange(n), mean=v,
                           std=np.zeros(n), sem=np.zeros(n), count=np.full(n, 10), raw_mean=v, n_pairs=4, n_chains=2)


def _diagnostics(name: str, config: dict, clip: float, horizon: int | None, usage_horizon: int | None,
                 seed: int, training: dict | None = None) -> DiagnosticsResult:
    values = [1.0] * 10 + [1e-4] * 31
    flow = GradientFlow(sensitivity=_profile(values), sensitivity_anchor=_profile(values), hidden=[],
                        max_distance=40, pairs_per_chain=4, seed=0, n_chains=2, n_pairs=8)
    d = np.array([0, 4, 16, 32])
    u = np.array([1.0, 0.5, 0.1, 0.0])
    usage = UsageProfile(distances=d, mean_abs_delta=u, halves=np.stack([u, u]), mean_delta=u, relative=u,
                         count=np.array([8, 8, 8, 4]), mean_abs_logit=2.0, n_pairs=8, n_chains=2, draws=2, seed=0,
                         background="train", fraction=0.05, horizon=usage_horizon)
    return DiagnosticsResult(model=f"{name}@seed{seed}", flow=flow, fraction=0.01, horizon=horizon, horizon_anchor=None,
                             hidden_horizons=[], config=config,
                             training={"seed": seed, "gradient_clip_val": clip, **(training or {})}, usage=usage)


def test_the_reach_sentence_says_a_censored_horizon_reads_past_the_measured_range() -> None:
    """A model whose gradient and usage horizons lie beyond the measured range in every seed (None) still reads
    context there: its sentence must say so, not that sensitivity falls below the threshold or that replacing context
    beyond the horizon changes nothing. A model with measured horizons (30 and 16) keeps the plain sentence."""
    from protrnn.report.html import _reach_section

    far = aggregate_diagnostics([_diagnostics("far", _lstm(), 1.0, None, None, seed) for seed in (0, 1)])
    near = aggregate_diagnostics([_diagnostics("near", _lstm(), 1.0, 30, 16, seed) for seed in (0, 1)])
    text = _reach_section([], [*far, *near])
    far_part = text[text.index("<b>far</b>: "):text.index("<b>near</b>: ")]
    near_part = text[text.index("<b>near</b>: "):]
    assert "stays above 0.01 of its peak over the whole measured range" in far_part
    assert "still changes its predictions at the largest radius measured" in far_part
    assert "falls below" not in far_part and "no longer changes" not in far_part
    assert "falls below 0.01 of its peak at 30 [" in near_part  # mean of the seeds' 30 and 30, with its interval
    assert "beyond the usage horizon (16 [" in near_part and "no longer changes its predictions" in near_part


def test_the_findings_sentence_names_why_a_knob_is_undetermined() -> None:
    """Two seeds each, horizons beyond the measured range: the sentence must not blame the seed count."""
    from protrnn.report.findings import FindingRow, findings_sentence

    censored = FindingRow(knob="cell", change="cell=lstm -> cell=gru", effects={
        "gradient": {"mean": 0.0, "low": -3.0, "high": 3.0, "bound": "lower"}})
    single = FindingRow(knob="layer norm", change="on -> off", effects={
        "reach": {"mean": 0.1, "low": math.nan, "high": math.nan}})
    assert censored.verdict == single.verdict == "undetermined"
    sentence = findings_sentence([censored, single])
    assert ("cell (cell=lstm -> cell=gru) (only a bound, a horizon lying beyond the measured range: gradient horizon)"
            in sentence)
    assert "layer norm (on -> off) (no interval with one seed: reach (synthetic score))" in sentence
    assert "fewer than two seeds" not in sentence


def test_a_horizon_beyond_a_short_range_counts_as_that_range_s_end() -> None:
    """Two seeds measured to distance 18 only (chains too short for the 40 asked), their sensitivity still above the
    threshold there: each horizon is only known to exceed 18, so the seed mean is 18, shown "> 18", and against a
    reference whose horizons are 30 and 30 the difference is 18 - 30 = -12. The max_distance asked (40) was used
    instead: a mean of 40 and a difference of +10, a reach never observed."""
    from protrnn.diagnostics.fit import diagnose_over_seeds
    from protrnn.report.figures import group_horizon_text
    from protrnn.report.findings import _horizon_effect, excludes_zero
    from protrnn.report.inputs import horizon_text

    def short(seed: int) -> DiagnosticsResult:
        result = _diagnostics("short", _lstm(), 1.0, None, 16, seed)
        values = np.array([1.0] * 19 + [np.nan] * 22)
        count = np.array([10] * 19 + [0] * 22)
        profile = DistanceProfile(quantity="input_sensitivity", rule="nearest", distance=np.arange(41), mean=values,
                                  std=np.zeros(41), sem=np.zeros(41), count=count, raw_mean=values, n_pairs=4,
                                  n_chains=2)
        result.flow = GradientFlow(sensitivity=profile, sensitivity_anchor=profile, hidden=[], max_distance=40,
                                   pairs_per_chain=4, seed=0, n_chains=2, n_pairs=8)
        result.metrics = {"train_loss": 0.3, "val_loss": 0.31, "reference_loss": 1.0}
        return result

    runs = [short(0), short(1)]
    assert runs[0].range_end == 18 and runs[0].flow.max_distance == 40
    [group] = aggregate_diagnostics(runs)
    assert group.gradient["values"] == [18.0, 18.0] and group.gradient["mean"] == 18.0
    assert group.gradient["censored"] == 2 and group.gradient["range_end"] == 18
    assert group_horizon_text(group) == "> 18 residues (2 seeds)"
    assert horizon_text(runs[0]) == "> 18 residues"
    assert diagnose_over_seeds(runs)["inputs"]["horizon"]["mean"] == 18.0
    [reference] = aggregate_diagnostics([_diagnostics("ref", _lstm(), 1.0, 30, 16, seed) for seed in (0, 1)])
    effect = _horizon_effect(group, reference, "gradient")
    assert effect["variant_values"] == [18.0, 18.0] and effect["mean"] == pytest.approx(-12.0)
    # ... but the variant's horizons are only known to exceed 18: the difference is a lower bound, and a negative
    # interval of a lower bound settles nothing (it was a bold "matters", of either sign, before)
    assert effect["bound"] == "lower" and effect["high"] < 0 and not excludes_zero(effect)
    reverse = _horizon_effect(reference, group, "gradient")  # the censored runs as the reference: an upper bound
    assert reverse["bound"] == "upper" and reverse["low"] > 0 and not excludes_zero(reverse)
    # a lower bound above the reference's horizons does settle it: measured to 40, still above threshold there
    [far] = aggregate_diagnostics([_diagnostics("far", _lstm(), 1.0, None, 16, seed) for seed in (0, 1)])
    settled = _horizon_effect(far, reference, "gradient")
    assert settled["bound"] == "lower" and settled["mean"] == pytest.approx(10.0) and excludes_zero(settled)


def _synthetic_result(cell: str, accuracy: list[float], seed: int, clip: float | None = 1.0,
                      horizon: int | None = None) -> dict:
    return {"format": "protrnn-synthetic", "format_version": 1, "cell": cell, "gradient_horizon": horizon,
            "chance": 0.25, "reach": None, "command": f"protrnn synthetic --cell {cell}",
            "settings": {"seed": seed, "gradient_clip": clip, "steps": 10},
            "model": {"cell": cell, "hidden_size": 32, "num_layers": 1, "residual": True, "layer_norm": True,
                      "orthogonal_init": True, "forget_bias": 1.0, "chrono_init": False, "chrono_tmax": 200,
                      "gradient_horizon": horizon},
            "distances": [{"distance": d, "accuracy": a, "chance": 0.25, "interval": [a, a], "n_queries": 1000}
                          for d, a in zip((8, 16, 32, 64), accuracy, strict=True)]}


def test_findings_table_and_summary_from_seeded_runs(inputs: Path, tmp_path: Path) -> None:
    """Two models x two seeds (real evaluations of tiny untrained models, diagnostics and synthetic results written
    by hand): the report aggregates over seeds, and the findings read the knobs, differences and verdicts that the
    numbers give when worked out here."""
    root = tmp_path
    test = f"ts50={inputs / 'data' / 'test_ts50.npz'}"
    args = ["evaluate", "--test-set", test, "--bootstrap", "50", "--save-predictions", "1", "--device", "cpu"]
    for seed in (0, 1):
        for cell in ("lstm", "gru"):
            torch.manual_seed(10 * seed + (cell == "gru"))
            model = ContactModel(ModelConfig(cell=cell, embed_dim=8, hidden_size=8, num_layers=1, head="pairwise",
                                             pair_dim=8, dropout=0.0))
            save_model(model, root / "models" / f"{cell}{seed}")
            args += ["--model", f"{cell}@seed{seed}={root / 'models' / f'{cell}{seed}'}"]
    assert main([*args, "-o", str(root / "evaluation")]) == 0
    lstm_config = _lstm(hidden_size=8, num_layers=1)
    gru_config = _lstm(hidden_size=8, num_layers=1, cell="gru", forget_bias=None)
    diagnostics = [_diagnostics("lstm", lstm_config, 1.0, 60, 16, 0), _diagnostics("lstm", lstm_config, 1.0, 70, 32, 1),
                   _diagnostics("gru", gru_config, 1.0, None, 16, 0), _diagnostics("gru", gru_config, 1.0, 38, 32, 1)]
    save_diagnostics(diagnostics, root / "diagnostics.json")
    # lstm_no_clip's seeds agree with each other and differ from lstm's by 0.01 at one distance: within the binomial
    # noise of 1,000 queries, so no effect, although the seed spread alone (zero) would call it one
    synthetic = {"lstm": [[1, 1, 0.5, 0.25], [1, 1, 0.5, 0.25]], "gru": [[1, 1, 1, 0.9], [1, 1, 1, 0.95]],
                 "lstm_no_clip": [[1, 1, 0.51, 0.25], [1, 1, 0.51, 0.25]]}
    for name, runs in synthetic.items():
        for seed, accuracy in enumerate(runs):
            result = _synthetic_result("gru" if name == "gru" else "lstm", accuracy, seed,
                                       clip=None if name == "lstm_no_clip" else 1.0)
            (root / "synthetic" / name / f"seed{seed}").mkdir(parents=True)
            (root / "synthetic" / name / f"seed{seed}" / "result.json").write_text(json.dumps(result))
    out = root / "report"
    assert main(["report", "--evaluation", str(root / "evaluation"), str(inputs / "evaluation" / "baselines"),
                 "--diagnostics", str(root / "diagnostics.json"),
                 *[f"--synthetic={name}={root / 'synthetic' / name / f'seed{seed}'}" for name in synthetic
                   for seed in (0, 1)], "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    html_text = (out / "report.html").read_text()
    assert html_text.index("Findings") < html_text.index("1. How far does each recurrent model see?")

    # per model: seeds, horizons as mean over seeds (gru seed 0 beyond 40 counts as 40)
    lstm, gru = summary["models"]["lstm"], summary["models"]["gru"]
    assert lstm["seeds"] == [0, 1] and lstm["gradient_horizon"]["mean"] == 65.0
    assert gru["gradient_horizon"]["mean"] == 39.0 and gru["gradient_horizon"]["censored"] == 1
    assert lstm["usage_horizon"]["mean"] == 24.0
    # precision: the mean over seeds of each seed's protein mean, straight from the per-protein table
    rows = [r for r in csv_rows(root / "evaluation" / "per_protein.csv") if r["method"].startswith("lstm@")]
    by_seed = {}
    for row in rows:
        by_seed.setdefault(row["method"], []).append(float(row["long/P@L/5"]))
    expected = np.mean([np.nanmean(v) for v in by_seed.values()])
    assert lstm["precision"]["ts50"]["long/P@L/5"]["mean"] == pytest.approx(expected)
    assert ">lstm@seed0<" not in html_text.split("2. Precision")[0]  # tables list the model, not its runs

    findings = {r["knob"] + r["change"]: r for r in summary["findings"]["rows"]}
    cell = findings["cellcell=lstm -> cell=gru"]
    assert cell["grid"] == {"variant": "gru", "reference": "lstm"}
    assert cell["synthetic"] == {"variant": "gru", "reference": "lstm"}
    # reach score = mean over distances of (acc - 1/4) / (3/4); Welch interval over the two seeds
    score = {name: [np.mean([(a - 0.25) / 0.75 for a in run]) for run in runs] for name, runs in synthetic.items()}
    # binomial standard error of one run's score: sqrt(sum_d p(1-p)/n) / (D (1 - chance)), averaged over seeds
    noise = {name: np.mean([math.sqrt(sum(a * (1 - a) / 1000 for a in run)) / (4 * 0.75) for run in runs])
             for name, runs in synthetic.items()}
    reach = difference_interval(score["gru"], score["lstm"], noise_sd=(noise["gru"], noise["lstm"]))
    assert cell["effects"]["reach"]["mean"] == pytest.approx(reach["mean"])
    assert cell["effects"]["reach"]["low"] == pytest.approx(reach["low"])
    gradient = difference_interval([40.0, 38.0], [60.0, 70.0], noise_sd=(1 / math.sqrt(12), 1 / math.sqrt(12)))
    assert cell["effects"]["gradient"]["low"] == pytest.approx(gradient["low"])
    assert cell["verdict"] == "matters" and "reach" in cell["matters_for"]
    clip = findings["gradient clippingclip=1 -> clip=off"]
    assert clip["grid"] is None and clip["verdict"] == "no effect detected"
    assert difference_interval(score["lstm_no_clip"], score["lstm"])["low"] > 0  # what seeds alone would say
    assert findings["pretraining"]["verdict"] == "not measured"
    sentence = summary["findings"]["sentence"]
    assert "cell (cell=lstm -> cell=gru) for reach (synthetic score)" in sentence
    assert "no effect detected for gradient clipping" in sentence.lower()
    assert "Not measured: gradient horizon" in sentence
    assert html.escape(sentence) in html_text


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_pretrained_model_is_a_one_knob_variant_not_a_second_baseline(tmp_path: Path) -> None:
    """The default grid (lstm, gru, rnn, lstm_horizon16, lstm_plain, lstm_pretrained; diagnostics records as
    `protrnn diagnose` writes them, two seeds each, plus synthetic lstm / gru / rnn): lstm_pretrained differs from
    lstm in pretraining only, so it gives the pretraining row and no other; the synthetic column of that row says
    there is no synthetic variant."""
    pretrained = {"pretrained_encoder": True, "freeze_steps": 200,
                  "pretrained_encoder_path": "results/pretrain/encoder",
                  "pretrained_encoder_metrics": {"Q8": 0.598, "Q3": 0.71, "mask_acc": 0.2},
                  "pretrained_encoder_init": _inits(_lstm())}
    # the configs of protrnn/configs/{lstm,gru,rnn}.yaml with workflows/config.yaml's overrides; clipping 1.0 for all
    grid = {"lstm": (_lstm(), {"pretrained_encoder": False}),
            "gru": (_lstm(cell="gru", forget_bias=None), {"pretrained_encoder": False}),
            "rnn": (_lstm(cell="rnn", forget_bias=None), {"pretrained_encoder": False}),
            "lstm_horizon16": (_lstm(gradient_horizon=16), {"pretrained_encoder": False}),
            "lstm_plain": (_lstm(orthogonal_init=False, layer_norm=False, residual=False, forget_bias=None),
                           {"pretrained_encoder": False}),
            "lstm_pretrained": (_lstm(), pretrained)}
    records = [_diagnostics(name, config, 1.0, 30 + seed, 16, seed, training)
               for name, (config, training) in grid.items() for seed in (0, 1)]
    save_diagnostics(records, tmp_path / "diagnostics.json")
    from protrnn.diagnostics.results import load_diagnostics

    models = aggregate_diagnostics(load_diagnostics(tmp_path / "diagnostics.json"))  # through the JSON round trip
    synthetic = aggregate_synthetic([SyntheticRun(cell, seed, tmp_path / cell,
                                                  _synthetic_result(cell, [1, 1, 0.5, 0.25], seed))
                                     for cell in ("lstm", "gru", "rnn") for seed in (0, 1)])
    findings = build_findings(models, synthetic, [], None, {})
    rows = findings["_rows"]
    measured = {(r.knob, r.change, r.grid, r.synthetic) for r in rows if r.grid or r.synthetic}
    plain = "forget bias / chrono init + layer norm + orthogonal init + residual (together)"
    assert measured == {
        ("cell", "cell=lstm -> cell=gru", ("gru", "lstm"), ("gru", "lstm")),
        ("cell", "cell=lstm -> cell=rnn", ("rnn", "lstm"), ("rnn", "lstm")),
        ("gradient horizon", "gradient_horizon=none -> gradient_horizon=16", ("lstm_horizon16", "lstm"), None),
        ("pretraining", "pretrained=False -> freeze_steps=200, pretrained=True", ("lstm_pretrained", "lstm"), None),
        (plain, "forget_bias=1.0, layer_norm=True, orthogonal_init=True, residual=True -> forget_bias=none, "
                "layer_norm=False, orthogonal_init=False, residual=False", ("lstm_plain", "lstm"), None),
    }
    assert not [r for r in rows if "lstm_pretrained" in r.change or (r.grid and r.grid[1] != "lstm")]
    unmeasured = {r.knob for r in rows if not r.grid and not r.synthetic}
    assert unmeasured == {"forget bias / chrono init", "orthogonal init", "residual", "layer norm",
                          "gradient clipping"}

    [row] = [r for r in rows if r.knob == "pretraining"]
    assert row.effects["reach"] == {"note": "n/a (no synthetic variant: the planted-distance task has no pretraining)"}
    # both models' horizons are 30 and 31 over the two seeds: a zero difference
    assert row.effects["gradient"]["mean"] == 0.0 and row.verdict == "no effect detected"
    assert "Q8 0.598, Q3 0.710" in row.note and "first 200 optimiser steps" in row.note
    summary_row = next(r for r in findings["rows"] if r["knob"] == "pretraining")
    assert summary_row["grid"] == {"variant": "lstm_pretrained", "reference": "lstm"}
    assert "pretraining" not in findings["sentence"].split("Not measured")[-1]
    table = _findings_section(findings)
    assert "n/a (no synthetic variant" in table and "grid: lstm_pretrained vs lstm" in table
    assert "(in lstm_pretrained)" not in table

    # Without the record (diagnostics written before it existed) a copy of the reference is neither compared nor
    # a base: no row at all instead of the cell rows repeated "(in lstm_pretrained)".
    for record in records:
        record.training.pop("pretrained_encoder", None)
    old = build_findings(aggregate_diagnostics(records), synthetic, [], None, {})
    assert {r.grid for r in old["_rows"] if r.grid} == {("gru", "lstm"), ("rnn", "lstm"), ("lstm_horizon16", "lstm"),
                                                        ("lstm_plain", "lstm")}
    assert next(r for r in old["_rows"] if r.knob == "pretraining").verdict == "not measured"


def test_runs_trained_differently_do_not_isolate_a_knob(tmp_path: Path) -> None:
    """A reviewer's case: gru trained 5,000 steps against lstm's 700 had been reported as "cell=lstm -> cell=gru
    matters". A pair of grid runs that differs in the step budget, the learning rate or the crop, or a pair of
    synthetic variants that differs in steps or learning rate, now gives no row (the knob is not isolated); with the
    same training the cell row is there. Records written before training settings were recorded compare as before."""
    from protrnn.diagnostics.run import training_record

    def record(max_steps: int, lr: float, crop: int) -> dict:
        return training_record({"training_config": {
            "seed_everything": 0, "trainer": {"max_steps": max_steps, "max_epochs": 30, "gradient_clip_val": 1.0},
            "model": {"model": {"cell": "ignored here"}, "lr": lr, "pos_weight": 4.0, "encoder_lr_scale": 1.0},
            "data": {"train_path": "a.npz", "val_path": "b.npz", "seed": 3, "num_workers": 2, "crop_length": crop}}})

    same = record(700, 0.003, 128)
    assert same["model_settings"] == {"lr": 0.003, "pos_weight": 4.0} and same["data_settings"] == {"crop_length": 128}
    assert (same["max_steps"], same["max_epochs"]) == (700, 30)

    def grid_rows(gru_training: dict) -> set:
        records = [_diagnostics(name, config, 1.0, 30, 16, seed, training)
                   for name, config, training in (("lstm", _lstm(), same), ("gru", _lstm(cell="gru"), gru_training))
                   for seed in (0, 1)]
        return {r.grid for r in build_findings(aggregate_diagnostics(records), [], [], "lstm", {})["_rows"] if r.grid}

    assert grid_rows(record(700, 0.003, 128)) == {("gru", "lstm")}
    for other in (record(5000, 0.003, 128), record(700, 0.01, 128), record(700, 0.003, 512)):
        assert grid_rows(other) == set()
    old = {k: v for k, v in same.items() if k not in ("model_settings", "data_settings", "max_epochs")}
    records = [_diagnostics(n, c, 1.0, 30, 16, s, old) for n, c in (("lstm", _lstm()), ("gru", _lstm(cell="gru")))
               for s in (0, 1)]
    assert {r.grid for r in build_findings(aggregate_diagnostics(records), [], [], "lstm", {})["_rows"]
            if r.grid} == {("gru", "lstm")}

    def synthetic_rows(gru_settings: dict) -> set:
        runs = []
        for cell, settings in (("lstm", {}), ("gru", gru_settings)):
            for seed in (0, 1):
                result = _synthetic_result(cell, [1, 1, 0.5, 0.25], seed)
                result["settings"].update({"lr": 0.003, "threads": seed + 1, **settings})
                runs.append(SyntheticRun(cell, seed, tmp_path / cell, result))
        return {r.synthetic for r in build_findings([], aggregate_synthetic(runs), [], "lstm", {})["_rows"]
                if r.synthetic}

    assert synthetic_rows({}) == {("gru", "lstm")}  # threads and seeds differ per run: not training settings
    assert synthetic_rows({"steps": 5000}) == set() and synthetic_rows({"lr": 0.01}) == set()


def test_a_model_whose_pretraining_is_unknown_is_not_compared() -> None:
    """An export whose record cannot say whether it started from a pretrained encoder (pretrained_encoder None,
    `protrnn export` found no config of its run) has no known settings: it is no plain model that a pretrained one
    could be compared with as the pretraining knob (it may itself be pretrained). The findings leave it out and name
    it with the reason; the report says so under the table."""
    from protrnn.report.html import _findings_section

    unknown = {"pretrained_encoder": None, "training_config_source": "unknown: the checkpoint records neither"}
    pretrained = {"pretrained_encoder": True, "freeze_steps": 200, "pretrained_encoder_init": _inits(_lstm())}
    records = [_diagnostics(name, _lstm(), 1.0, 30 + seed, 16, seed, training)
               for name, training in (("lstm", unknown), ("lstm_pretrained", pretrained)) for seed in (0, 1)]
    findings = build_findings(aggregate_diagnostics(records), [], [], "lstm", {})
    assert not [r for r in findings["_rows"] if r.grid]  # no pretraining row against a model that may be pretrained
    assert findings["not_compared"] == {"lstm": "its training record does not say whether it started from a "
                                                "pretrained encoder (unknown: the checkpoint records neither)"}
    assert "Not compared: <b>lstm</b>, its training record does not say" in _findings_section(findings)


def test_a_pretrained_models_init_settings_are_its_encoders() -> None:
    """A reviewer's case: load_pretrained_encoder overwrites the embedding and encoder, so a pretrained model's
    weights start from its encoder's inits, not from its contact config's. The findings read the inits a
    pretrained model's record gives for its encoder (pretrained_encoder_init): a contact config with other inits over
    an encoder initialised as the reference is a plain pretraining variant, and an encoder with chrono init under the
    reference's own contact config differs in pretraining *and* the forget bias / chrono init (it is no repeat of the
    first). A pretrained record without the encoder's inits (written before they were recorded, or the encoder was
    gone when diagnosed) is compared with nothing and named under the table."""
    reference_inits = {"orthogonal_init": True, "forget_bias": 1.0, "chrono_init": False, "chrono_tmax": 200}
    chrono_inits = {"orthogonal_init": True, "forget_bias": 1.0, "chrono_init": True, "chrono_tmax": 512}

    def pretrained(inits: dict | None) -> dict:
        return {"pretrained_encoder": True, "freeze_steps": 200, "pretrained_encoder_path": "results/enc",
                **({} if inits is None else {"pretrained_encoder_init": inits})}

    grid = {"lstm": (_lstm(), {"pretrained_encoder": False}),
            # the contact config says no orthogonal init and chrono init; its encoder had the reference's inits
            "lstm_pre": (_lstm(orthogonal_init=False, chrono_init=True), pretrained(reference_inits)),
            # the reference's contact config; its encoder had chrono init (T_max 512)
            "lstm_pre_chrono": (_lstm(), pretrained(chrono_inits)),
            "lstm_pre_old": (_lstm(), pretrained(None))}
    records = [_diagnostics(name, config, 1.0, 30 + seed, 16, seed, training)
               for name, (config, training) in grid.items() for seed in (0, 1)]
    findings = build_findings(aggregate_diagnostics(records), [], [], "lstm", {})
    rows = {(r.knob, r.change, r.grid) for r in findings["_rows"] if r.grid}
    assert rows == {
        ("pretraining", "pretrained=False -> freeze_steps=200, pretrained=True", ("lstm_pre", "lstm")),
        ("forget bias / chrono init + pretraining (together)",
         "chrono_init=False, forget_bias=1.0, pretrained=False -> chrono_init=True, chrono_tmax=512, "
         "forget_bias=none, freeze_steps=200, pretrained=True", ("lstm_pre_chrono", "lstm")),
    }
    assert set(findings["not_compared"]) == {"lstm_pre_old"}
    assert findings["not_compared"]["lstm_pre_old"].startswith(
        "its training record does not say the init settings of its pretrained encoder (results/enc)")
    assert "Not compared: <b>lstm_pre_old</b>" in _findings_section(findings)

    # effective_settings: the encoder's inits replace the config's; unknown ones are no value of the config's
    settings = effective_settings(_lstm(orthogonal_init=False), 1.0, True, 200, encoder_init=chrono_inits)
    assert (settings["orthogonal_init"], settings["chrono_init"], settings["chrono_tmax"],
            settings["forget_bias"]) == (True, True, 512, None)
    unknown = effective_settings(_lstm(), 1.0, True, 200)
    assert {unknown[k] for k in ("orthogonal_init", "forget_bias", "chrono_init", "chrono_tmax")} == {
        "unknown (pretrained encoder)"}
    gru = effective_settings(_lstm(cell="gru", forget_bias=None), 1.0, True, 200)
    assert gru["orthogonal_init"] == "unknown (pretrained encoder)" and gru["forget_bias"] is None
    # compared directly, a model with unknown inits isolates nothing, not even the pretraining knob, and is no base
    assert comparisons({"lstm": effective_settings(_lstm(), 1.0), "lstm_pre": unknown,
                        "lstm_pre_h16": effective_settings(_lstm(gradient_horizon=16), 1.0, True, 200)}, "lstm") == []
    assert comparisons({"lstm_pre": unknown, "lstm": effective_settings(_lstm(), 1.0)}, "lstm_pre") == []


def test_a_model_started_from_a_trained_models_weights_is_not_compared(tmp_path: Path) -> None:
    """InitialWeights (docs/training.md, "Fine-tuning a trained model") starts a run from a trained contact model's
    weights: with parts="encoder" its encoder's inits are the source model's, not the config's (as with a pretrained
    encoder), and with "all" every weight is, after a whole training run that no setting of this one describes. The
    training record says so (initial_weights) and the findings compare such a model with nothing: it had read as a
    model trained from scratch (here a gradient horizon variant of the reference)."""
    from protrnn.diagnostics.run import training_record

    def record(parts: str | None) -> dict:
        callback = {"class_path": "protrnn.training.finetune.InitialWeights",
                    "init_args": {"path": "runs/lstm/export", **({} if parts is None else {"parts": parts})}}
        return training_record({"training_config": {"trainer": {"gradient_clip_val": 1.0, "callbacks": [callback]}}})

    assert record("encoder")["initial_weights"] == {"path": "runs/lstm/export", "parts": "encoder"}
    assert record(None)["initial_weights"] == {"path": "runs/lstm/export", "parts": "all"}
    assert "initial_weights" not in training_record({"training_config": {"trainer": {"gradient_clip_val": 1.0}}})
    for parts in ("encoder", None):
        records = [_diagnostics(name, config, 1.0, 30 + seed, 16, seed, training)
                   for name, config, training in (("lstm", _lstm(), {"pretrained_encoder": False}),
                                                  ("lstm_h16", _lstm(gradient_horizon=16), record(parts)))
                   for seed in (0, 1)]
        findings = build_findings(aggregate_diagnostics(records), [], [], "lstm", {})
        assert not [r for r in findings["_rows"] if r.grid]
        assert findings["not_compared"] == {"lstm_h16": (
            f"it started from the weights of a trained model (runs/lstm/export, parts={parts or 'all'}): its settings "
            "describe neither the weights it started from nor the training before")}


def test_residual_counts_only_where_a_layer_can_add_it() -> None:
    """A reviewer's case: the encoder adds the residual connection to a layer whose input is as wide as its output
    (2 x hidden_size), so in a one-layer encoder under a narrower embedding (the synthetic task's defaults: embedding
    16, 32 units per direction) residual on and off compute the same function, yet the pair read as a residual
    comparison ("no effect detected" for a knob that changed nothing). residual_layers is checked here against the
    encoder itself (outputs with residual on and off); such a pair is now a repeat, while a one-layer encoder whose
    embedding is 2 x hidden_size wide, and the two-layer context of a one-layer reference, keep their residual rows."""
    from protrnn.model.encoder import RecurrentEncoder
    from protrnn.report.findings import residual_layers

    cases = [(1, 16, 32, 0), (2, 16, 32, 1), (3, 16, 32, 2), (1, 64, 32, 1), (2, 64, 32, 2)]
    for layers, embed, hidden, expected in cases:
        config = ModelConfig(cell="lstm", embed_dim=embed, hidden_size=hidden, num_layers=layers, dropout=0.0)
        assert residual_layers(config.to_dict()) == expected
        outputs = {}
        for residual in (True, False):
            torch.manual_seed(0)
            encoder = RecurrentEncoder(ModelConfig(**{**config.to_dict(), "residual": residual})).eval()
            torch.manual_seed(1)
            x = torch.randn(2, 7, embed)
            outputs[residual] = encoder(x, torch.ones(2, 7, dtype=torch.bool))
        assert torch.equal(outputs[True], outputs[False]) == (expected == 0), (layers, embed, hidden)
    assert residual_layers({"num_layers": 1, "hidden_size": 32}) is None  # sizes not recorded: kept as before

    def synthetic(**changes: object) -> dict:
        return effective_settings(_lstm(**{"embed_dim": 16, "hidden_size": 32, "num_layers": 1, **changes}), 1.0)

    settings = {"lstm": synthetic(), "lstm_no_residual": synthetic(residual=False),
                "lstm_no_residual_h16": synthetic(residual=False, gradient_horizon=16),
                "lstm2": synthetic(num_layers=2), "lstm2_no_residual": synthetic(num_layers=2, residual=False),
                "lstm_wide": synthetic(embed_dim=64), "lstm_wide_no_residual": synthetic(embed_dim=64, residual=False)}
    found = {(c.knobs, c.variant, c.base, c.change) for c in comparisons(settings, "lstm")}
    assert found == {
        # residual off changes nothing in the one-layer reference: the horizon alone differs
        (("gradient horizon",), "lstm_no_residual_h16", "lstm", "gradient_horizon=none -> gradient_horizon=16"),
        (("residual",), "lstm2_no_residual", "lstm2", "residual=True -> residual=False (in lstm2)"),
        (("residual",), "lstm_wide_no_residual", "lstm_wide", "residual=True -> residual=False (in lstm_wide)"),
    }


def test_pretraining_is_a_knob_of_the_settings() -> None:
    """effective_settings: pretraining on/off with its freeze steps (None when off); a pretrained GRU compares with
    the GRU (a context), while the plain pretrained/not-pretrained pair of the reference reads as one knob."""
    assert effective_settings(_lstm(), 1.0)["pretrained"] is False
    assert effective_settings(_lstm(), 1.0, None)["freeze_steps"] is None
    on = effective_settings(_lstm(), 1.0, True, None)
    assert on["pretrained"] is True and on["freeze_steps"] == 0 and on["encoder_lr_scale"] == 1.0
    assert effective_settings(_lstm(), 1.0, False, None, 0.1)["encoder_lr_scale"] is None
    same = _inits(_lstm())  # each pretrained encoder was initialised as its contact config says
    settings = {"lstm": effective_settings(_lstm(), 1.0),
                "lstm_pre": effective_settings(_lstm(), 1.0, True, 200, encoder_init=same),
                "gru": effective_settings(_lstm(cell="gru", forget_bias=None), 1.0),
                "gru_pre": effective_settings(_lstm(cell="gru", forget_bias=None), 1.0, True, 200, encoder_init=same),
                "lstm_pre_h16": effective_settings(_lstm(gradient_horizon=16), 1.0, True, 200, encoder_init=same),
                "lstm_pre_gentle": effective_settings(_lstm(), 1.0, True, 200, 0.1, encoder_init=same)}
    found = {(c.knobs, c.variant, c.base, c.change) for c in comparisons(settings, "lstm")}
    assert found == {
        (("cell",), "gru", "lstm", "cell=lstm -> cell=gru"),
        (("pretraining",), "lstm_pre", "lstm", "pretrained=False -> freeze_steps=200, pretrained=True"),
        (("pretraining",), "gru_pre", "gru", "pretrained=False -> freeze_steps=200, pretrained=True (in gru)"),
        # the fine-tuning rate is part of the pretraining knob (the default rate, 1, goes unsaid), so this variant too
        # differs from the reference in that knob alone
        (("pretraining",), "lstm_pre_gentle", "lstm",
         "pretrained=False -> encoder_lr_scale=0.1, freeze_steps=200, pretrained=True"),
        # horizon + pretraining against the reference: combined (isolated by no single-knob pair)
        (("pretraining", "gradient horizon"), "lstm_pre_h16", "lstm",
         "gradient_horizon=none, pretrained=False -> freeze_steps=200, gradient_horizon=16, pretrained=True"),
    }


def _chance_evaluation(path: Path, levels: dict[str, float], test_set: str = "ts50") -> Evaluation:
    metrics = {key: {"mean": value, "n": 3, "low": value, "high": value} for key, value in levels.items()}
    return Evaluation(path=path, summary={"chance": {test_set: {"n_proteins": 3, "metrics": metrics}}}, rows=[])


def test_chance_levels_come_from_the_evaluations_and_conflicts_draw_nothing(tmp_path: Path) -> None:
    levels = {"bin/6-11/P@L/5": 0.06, "bin/96+/P@L/5": 0.025}
    first, same = _chance_evaluation(tmp_path / "a", levels), _chance_evaluation(tmp_path / "b", levels)
    other = _chance_evaluation(tmp_path / "c", {**levels, "bin/96+/P@L/5": 0.03})
    assert chance_levels([first, same]) == {"ts50": levels}
    assert chance_levels([first, other]) == {}  # one name, two different test sets: no line rather than a wrong one
    assert chance_levels([first, _chance_evaluation(tmp_path / "d", levels, "psicov150")]) == {
        "ts50": levels, "psicov150": levels}
    assert chance_levels([Evaluation(path=tmp_path, summary={"results": {}}, rows=[])]) == {}  # written before it


def test_precision_figure_draws_the_chance_level_per_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grey chance line sits at each bin's chance level, at the bins' x positions; without levels there is none
    and the caption does not mention it."""
    drawn: list[list[tuple[str, list[float], list[float]]]] = []

    def keep_lines(fig, directory, stem, title, caption):
        drawn.append([(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
                      for ax in fig.axes for line in ax.get_lines()])
        figures._pyplot().close(fig)
        return figures.Figure(stem=stem, title=title, caption=caption, png=b"")

    monkeypatch.setattr(figures, "_save", keep_lines)
    metrics = {f"bin/{label}/P@L/5": {"mean": value, "low": value - 0.01, "high": value + 0.01}
               for label, value in (("6-11", 0.3), ("24-47", 0.2), ("96+", 0.08))}
    result = MethodResult("m", "model", "ts50", 3, metrics, tmp_path)
    chance = {"ts50": {"bin/6-11/P@L/5": 0.06, "bin/24-47/P@L/5": 0.04, "bin/96+/P@L/5": 0.025}}
    with_chance = figures.figure_precision_by_separation([result], tmp_path, figures.Styles(["m"]), chance)
    without = figures.figure_precision_by_separation([result], tmp_path, figures.Styles(["m"]))
    elsewhere = figures.figure_precision_by_separation([result], tmp_path, figures.Styles(["m"]),
                                                       {"psicov150": chance["ts50"]})
    chance_lines = [line for line in drawn[0] if line[0] == CHANCE_NAME]
    assert chance_lines == [(CHANCE_NAME, [0, 1, 2], [0.06, 0.04, 0.025])]
    assert not [line for line in drawn[1] if line[0] == CHANCE_NAME]
    assert not [line for line in drawn[2] if line[0] == CHANCE_NAME]  # levels of another test set only
    assert "chance level" in with_chance.caption
    assert "chance level" not in without.caption and "chance level" not in elsewhere.caption


def test_cluster_weights_reproduce_a_protein_resample_with_seeds_and_missing_values() -> None:
    """A cluster bootstrap's replicate weighs each protein by how often its cluster was drawn. With every protein its
    own cluster, weights equal to the draw counts of a protein resample must give that resample's statistic, seeds
    and NaN-skipping included; and cluster_weights draws whole clusters."""
    from protrnn.report.aggregate import _replicates, _weighted_replicates, cluster_weights

    rng = np.random.default_rng(3)
    values = rng.random((3, 25))  # 3 seeds x 25 proteins
    values[0, 4] = values[2, 7] = np.nan
    seeds = rng.integers(0, 3, size=(200, 3))
    proteins = rng.integers(0, 25, size=(200, 25))
    weights = np.stack([np.bincount(row, minlength=25) for row in proteins]).astype(float)
    np.testing.assert_allclose(_weighted_replicates(values, seeds, weights), _replicates(values, seeds, proteins),
                               rtol=1e-12)
    labels = ["a", "a", "b", "c", "c", "c"]
    w = cluster_weights(labels, 500, np.random.default_rng(0))
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all() and (w[:, 4] == w[:, 5]).all()
    assert (w[:, [0, 2, 3]].sum(axis=1) == 3).all()  # three clusters drawn per replicate
