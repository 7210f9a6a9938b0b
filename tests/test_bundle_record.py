"""The bundled model's record (workflows/scripts/bundle_model.py): figures come from the evaluation summaries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("bundle_model", REPO / "workflows" / "scripts" / "bundle_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(method: str, values: dict[str, float]) -> dict:
    metrics = {key: {"mean": v, "low": v - 0.01, "high": v + 0.01} for key, v in values.items()}
    return {"command": f"protrnn evaluate {method}",
            "results": {method: {"ts50": {"n_proteins": 50, "metrics": metrics}}}}


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
