"""benchmarks/calibration_by_separation.py: pooled mean predicted probability and true contact rate per separation
band, checked against a brute-force count over real TS50 chains, and the script run end to end."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np

from protrnn.data.formats import iter_json_chains

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("calibration_by_separation",
                                                  REPO / "benchmarks" / "calibration_by_separation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_band_rates_equal_a_brute_force_count(shared_data: Path) -> None:
    """Random probabilities on 3 TS50 chains: each band's pair count, mean probability and contact rate equal a
    double loop over i < j with both residues observed and j - i in the band (Cb-Cb < 8 A from the coordinates)."""
    chains = list(itertools.islice(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"), 3))
    rng = np.random.default_rng(0)
    probabilities = [rng.random((len(c), len(c))) for c in chains]
    bands = [(6, 11), (12, 40), (41, None)]
    rows = _script().calibration(chains, probabilities, bands, 8.0)
    for (low, high), row in zip(bands, rows, strict=True):
        picked, hits = [], 0
        for chain, probs in zip(chains, probabilities, strict=True):
            truth = chain.contact_map(8.0)
            for i in range(len(chain)):
                for j in range(i + low, len(chain) if high is None else min(len(chain), i + high + 1)):
                    if chain.observed[i] and chain.observed[j]:
                        picked.append(probs[i, j])
                        hits += int(truth[i, j])
        assert row["pairs"] == len(picked) > 0
        assert math.isclose(row["mean_probability"], float(np.mean(picked)), rel_tol=1e-12)
        assert math.isclose(row["contact_rate"], hits / len(picked), rel_tol=1e-12)
    assert [row["band"] for row in rows] == ["6-11", "12-40", "41+"]


def test_the_script_prints_one_row_per_band(run_on_two_ts50_chains) -> None:
    lines = run_on_two_ts50_chains("calibration_by_separation.py", "--bands", "6-23,24+")
    assert lines[0].startswith("two: 2 chains of >= 0 residues (bundled default model)")
    assert [line.split()[0] for line in lines[2:]] == ["6-23", "24+"]
    for line in lines[2:]:
        _, pairs, predicted, rate, _ = line.split()
        assert int(pairs) > 0 and 0 < float(predicted) < 1 and 0 <= float(rate) < 1
