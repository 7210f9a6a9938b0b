"""`protrnn report` from inputs made by the real code paths: `protrnn evaluate` on TS50 chains (a tiny model and the
baselines), gradient diagnostics from `protrnn diagnose`, a Lightning CSVLogger metrics.csv and a
leakage table. The HTML must be self-contained, embed every figure, carry the tables, and reference no URL."""

from __future__ import annotations

import base64
import itertools
import json
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
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import save_model
from protrnn.report import build_report, load_inputs
from protrnn.report.figures import top_pairs
from protrnn.report.inputs import read_run_curves

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
    stems = ["precision_by_separation", "gradient_sensitivity", "training_curves"]
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
