"""benchmarks/pick_distances.py: the true distances of each band's top-L/k picks, checked against a brute-force
ranking over real TS50 chains, and the script run end to end."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np

from protrnn.data.formats import iter_json_chains

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("pick_distances", REPO / "benchmarks" / "pick_distances.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_picks_and_shells_equal_a_brute_force_ranking(shared_data: Path) -> None:
    """Random probabilities on 3 TS50 chains: per band, each chain's L/k highest-probability pairs among those with
    both residues observed and j - i in the band, their Cb-Cb distances from the coordinates (sorted here, not by the
    script's ranking), and the shell fractions counted one distance at a time."""
    chains = list(itertools.islice(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"), 3))
    rng = np.random.default_rng(0)
    probabilities = [rng.random((len(c), len(c))) for c in chains]
    bands = [(6, 23), (24, None)]
    module = _script()
    rows = module.pick_distances(chains, probabilities, bands, k=5)
    for (low, high), row in zip(bands, rows, strict=True):
        expected_picked: list[float] = []
        expected_all: list[float] = []
        for chain, probs in zip(chains, probabilities, strict=True):
            cb = chain.coords[:, 3].astype(np.float64)
            pairs = [(probs[i, j], i, j) for i in range(len(chain))
                     for j in range(i + low, len(chain) if high is None else min(len(chain), i + high + 1))
                     if chain.observed[i] and chain.observed[j]]
            pairs.sort(key=lambda t: -t[0])
            distances = [float(np.linalg.norm(cb[i] - cb[j])) for _, i, j in pairs]
            expected_all += distances
            expected_picked += distances[:max(1, len(chain) // 5)]
        np.testing.assert_allclose(row["picked"], expected_picked, rtol=1e-5)
        np.testing.assert_allclose(np.sort(row["all"]), np.sort(expected_all), rtol=1e-5)
        assert row["chains"] == 3
        by_hand = [sum(a <= d < b for d in expected_picked) / len(expected_picked)
                   for a, b in zip([0.0, 8.0, 12.0, 16.0, 24.0], [8.0, 12.0, 16.0, 24.0, np.inf], strict=True)]
        np.testing.assert_allclose(module.shell_fractions(row["picked"]), by_hand, rtol=1e-12)
    assert [row["band"] for row in rows] == ["6-23", "24+"]
    assert module.shell_labels() == ["0-8", "8-12", "12-16", "16-24", ">=24"]

    # --near 2: non-contact picks (and non-contact pairs) with a scored contact a < b within 2 residues of i and of j
    near_rows = module.pick_distances(chains, probabilities, bands, k=5, near=2)
    for (low, high), row in zip(bands, near_rows, strict=True):
        counts = {"picked": [0, 0], "all": [0, 0]}
        for chain, probs in zip(chains, probabilities, strict=True):
            n = len(chain)
            contact = chain.contact_map(8.0)
            scored = {(a, b) for a in range(n) for b in range(a + 6, n)
                      if chain.observed[a] and chain.observed[b] and contact[a, b]}
            pairs = sorted(((probs[i, j], i, j) for i in range(n)
                            for j in range(i + low, n if high is None else min(n, i + high + 1))
                            if chain.observed[i] and chain.observed[j]), key=lambda t: -t[0])
            for rank, (_, i, j) in enumerate(pairs):
                if (i, j) in scored:
                    continue
                close = any((a, b) in scored for a in range(i - 2, i + 3) for b in range(j - 2, j + 3))
                for which in (["picked", "all"] if rank < max(1, n // 5) else ["all"]):
                    counts[which][0] += close
                    counts[which][1] += 1
        assert row["near_picked"] == tuple(counts["picked"]) and row["near_all"] == tuple(counts["all"])
        assert counts["all"][0] > 0


def test_the_script_prints_picked_and_all_rows(run_on_two_ts50_chains) -> None:
    lines = run_on_two_ts50_chains("pick_distances.py", "--bands", "6-23,24+")
    assert lines[0].startswith("two: 2 chains (bundled default model)")
    assert [line.split()[:4:3] for line in lines[2:]] == [["6-23", "picked"], ["6-23", "all"], ["24+", "picked"],
                                                          ["24+", "all"]]
    for line in lines[2:]:
        fractions = [float(v) for v in line.split()[4:9]]
        assert abs(sum(fractions) - 1.0) < 2e-3 and int(line.split()[1]) > 0
