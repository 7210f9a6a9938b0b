"""benchmarks/head_context.py: the whole-map column equals the bundled model's own predictions scored by the
project's metrics, a tile as long as every chain changes nothing, and shorter tiles are what the head returns with its
view cut."""

from __future__ import annotations

import itertools
import runpy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from protrnn.data.formats import iter_json_chains
from protrnn.evaluation.metrics import evaluate_contacts

REPO = Path(__file__).resolve().parents[1]


def _script() -> SimpleNamespace:
    """The script's functions (it is run by path, as a user runs it, with ``__name__`` not ``"__main__"``)."""
    return SimpleNamespace(**runpy.run_path(str(REPO / "benchmarks" / "head_context.py"), run_name="head_context"))


def test_views_of_the_bundled_model(shared_data: Path) -> None:
    import protrnn

    chains = list(itertools.islice(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"), 2))
    model = protrnn.load_model()
    module = _script()
    sequences = [c.sequence for c in chains]
    predicted = model.predict(sequences)  # the Predictor's own batched path
    whole = [module.tiled_probabilities(model, s, None) for s in sequences]
    for a, b in zip(whole, predicted, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    longest = max(len(s) for s in sequences)
    for a, b in zip([module.tiled_probabilities(model, s, longest) for s in sequences], whole, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)  # one tile spans each chain: its whole map
    cut = [module.tiled_probabilities(model, s, 16) for s in sequences]
    assert all(not np.allclose(a, b, atol=1e-3) for a, b in zip(cut, whole, strict=True))
    bins = [(24, 47), (96, None)]
    table = module.scores(chains, whole, bins, 5)
    for n, (chain, probs) in enumerate(zip(chains, predicted, strict=True)):
        expected = evaluate_contacts(probs, chain.contact_map(), chain.observed, bins=bins)
        for key in ("long/P@L/5", "medium_long/P@L/5", "bin/24-47/P@L/5"):
            np.testing.assert_allclose(table[key][n], expected[key], atol=1e-12)
    # view minus whole, over the chains where both are defined: two chains 0.2 above, one dropped for its NaN
    shifted = module.compare(np.array([0.5, 0.7, np.nan]), np.array([0.3, 0.5, 0.3]))
    np.testing.assert_allclose(shifted[:4], (0.6, 0.2, 0.2, 0.2), atol=1e-12)
    assert shifted[4] == 2
    spread = module.compare(np.array([0.5, 0.9]), np.array([0.4, 0.4]))  # differences 0.1 and 0.5
    assert abs(spread[1] - 0.3) < 1e-12 and 0.1 - 1e-12 <= spread[2] < 0.29 and 0.31 < spread[3] <= 0.5 + 1e-12


def test_script_end_to_end(run_on_two_ts50_chains: Callable[..., list[str]]) -> None:
    lines = run_on_two_ts50_chains("head_context.py", "--tiles", "16,1000")
    assert lines[0].startswith("two: 2 chains (bundled default model)")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"short/P@L/5", "medium/P@L/5", "long/P@L/5", "medium_long/P@L/5", "bin/24-47/P@L/5",
                         "bin/48-95/P@L/5", "bin/96+/P@L/5"}
    defined = [row for row in rows.values() if row[1] != "nan"]
    assert len(defined) >= 4  # short, medium, long and medium+long exist on both chains
    for row in defined:  # a 1,000-residue tile spans both chains: the whole map again, difference 0
        assert row[-4:] == [row[1], "+0.0000", "[+0.0000,", "+0.0000]"]
