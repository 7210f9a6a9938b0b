"""CASP contact metrics on hand-built cases whose answers are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef

from protrnn.errors import InputError
from protrnn.evaluation.metrics import (
    DEFAULT_BINS,
    RANGES,
    TOP_K,
    average_metrics,
    bootstrap_ci,
    chance_precision,
    evaluate_contacts,
    in_range,
    metric_keys,
    rank_pairs,
    scored_pairs,
    summarize,
    top_count,
)


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    upper = np.triu(matrix, k=1)
    return upper + upper.T


def _contacts(length: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros((length, length), dtype=bool)
    for i, j in pairs:
        out[i, j] = out[j, i] = True
    return out


def test_constants_are_the_documented_conventions() -> None:
    assert RANGES == {"short": (6, 11), "medium": (12, 23), "long": (24, None), "medium_long": (12, None)}
    assert DEFAULT_BINS == [(6, 11), (12, 23), (24, 47), (48, 95), (96, None)]
    assert TOP_K == (1, 2, 5, 10)


def test_top_l_over_k_by_hand_and_empty_ranges_are_nan() -> None:
    # L = 12: only short pairs (separation 6..11) exist; there are 6+5+4+3+2+1 = 21 of them.
    length = 12
    probs = np.full((length, length), 0.1)
    for (i, j), p in {(0, 6): 0.9, (1, 8): 0.8, (2, 9): 0.7, (0, 11): 0.6}.items():
        probs[i, j] = p
    probs = _symmetric(probs)
    truth = _contacts(length, [(0, 6), (2, 9), (0, 11), (0, 7), (3, 10)])
    result = evaluate_contacts(probs, truth)
    # Ranking: 0.9 (0,6)+, 0.8 (1,8)-, 0.7 (2,9)+, 0.6 (0,11)+, then the 0.1 ties in row-major order:
    # (0,7)+ (0,8) (0,9) (0,10) (1,7) (1,9) (1,10) (1,11) (2,8) ... (3,10)+ comes later.
    assert result["short/P@L/10"] == 1.0  # top max(1, 12//10) = 1: (0,6)
    assert result["short/P@L/5"] == 0.5  # top 2: (0,6)+ (1,8)-
    assert result["short/P@L/2"] == pytest.approx(4 / 6)  # top 6: 3 scored + (0,7)+ + (0,8)-
    assert result["short/P@L/1"] == pytest.approx(4 / 12)  # top 12 stops at (1,11); (3,10) is not reached
    assert result["short/n_pairs"] == 21 and result["short/n_contacts"] == 5
    assert result["L"] == 12
    for name in ("medium", "long", "medium_long"):
        for k in TOP_K:
            assert math.isnan(result[f"{name}/P@L/{k}"])
        assert math.isnan(result[f"{name}/AUPR"]) and result[f"{name}/n_pairs"] == 0
        assert math.isnan(result[f"{name}/F1"]) and math.isnan(result[f"{name}/MCC"])
    assert result["bin/6-11/P@L/5"] == result["short/P@L/5"]
    assert math.isnan(result["bin/96+/P@L/1"])
    assert list(result) == metric_keys()


def test_ties_are_broken_by_row_then_column() -> None:
    length = 40  # long range: top max(1, 40//10) = 4 pairs for k = 10
    probs = np.full((length, length), 0.5)
    # All tied: the first four long-range candidates in row-major order are (0,24) (0,25) (0,26) (0,27).
    first = evaluate_contacts(probs, _contacts(length, [(0, 25)]))
    assert first["long/P@L/10"] == 0.25
    # (1, 25) is the first long pair of row 1, after all 16 long pairs of row 0: outside the top 4 and top 8.
    later = evaluate_contacts(probs, _contacts(length, [(1, 25)]))
    assert later["long/P@L/10"] == 0.0 and later["long/P@L/5"] == 0.0
    # ... but inside the top 20 (k = 2): 16 pairs of row 0, then (1,25).
    assert later["long/P@L/2"] == pytest.approx(1 / 20)
    # Deterministic: the same input always gives the same numbers.
    again = evaluate_contacts(probs.copy(), _contacts(length, [(1, 25)]))
    assert again == later


def test_short_chain_denominator_is_at_least_one_and_stays_l_over_k() -> None:
    # L = 8: short candidates (0,6) (0,7) (1,7); L//5 = 1 and L//10 = 0 -> denominator 1.
    length = 8
    probs = np.zeros((length, length))
    probs[1, 7] = 0.9
    result = evaluate_contacts(_symmetric(probs), _contacts(length, [(1, 7)]))
    assert result["short/P@L/10"] == 1.0
    assert result["short/P@L/5"] == 1.0
    # L//2 = 4 > 3 candidates: the denominator is still 4 (CASP), not the 3 pairs available.
    assert result["short/P@L/2"] == 0.25
    assert result["short/P@L/1"] == 1 / 8


def test_unobserved_residues_are_excluded() -> None:
    length = 30
    probs = np.full((length, length), 0.2)
    probs[2, 28] = probs[28, 2] = 0.99  # best-scoring pair, but residue 28 is unobserved
    probs[28, :] = probs[:, 28] = np.nan  # a model may emit anything there
    truth = _contacts(length, [(0, 26)])
    observed = np.ones(length, dtype=bool)
    observed[28] = False
    result = evaluate_contacts(probs, truth, observed)
    # Long pairs: j - i >= 24 among 0..29 without residue 28: (0,24..27,29) (1,25..27,29) (2,26,27,29)
    # (3,27,29) (4,29) (5,29) = 5+4+3+2+1+1 = 16.
    assert result["long/n_pairs"] == 16
    # Top 3 (L//10 = 3) of tied 0.2 in row-major order: (0,24) (0,25) (0,26)+ -> 1/3.
    assert result["long/P@L/10"] == pytest.approx(1 / 3)
    all_observed = evaluate_contacts(np.nan_to_num(probs, nan=0.0), truth)
    assert all_observed["long/n_pairs"] == 21


def test_only_the_upper_triangle_is_read() -> None:
    rng = np.random.default_rng(3)
    length = 50
    probs = rng.random((length, length))
    truth = _contacts(length, [(i, i + s) for i in range(0, 20, 3) for s in (7, 15, 30) if i + s < length])
    base = evaluate_contacts(probs, truth)
    scrambled = probs.copy()
    lower = np.tril_indices(length, k=-1)
    scrambled[lower] = rng.random(lower[0].size)
    assert evaluate_contacts(scrambled, truth) == base


def _reference_pairs(length: int, observed: np.ndarray, low: int, high: int | None) -> list[tuple[int, int]]:
    """Candidate pairs by plain loops, independent of the vectorised code."""
    pairs = []
    for i in range(length):
        for j in range(i + 1, length):
            sep = j - i
            if sep >= low and (high is None or sep <= high) and observed[i] and observed[j]:
                pairs.append((i, j))
    return pairs


@pytest.mark.parametrize("decimals", [None, 1])
def test_aupr_f1_mcc_and_precision_agree_with_references(decimals: int | None) -> None:
    rng = np.random.default_rng(7)
    length = 90
    probs = _symmetric(rng.random((length, length)))
    if decimals is not None:  # heavy ties: AUPR must group equal scores exactly as scikit-learn does
        probs = np.round(probs, decimals)
    truth = _symmetric(rng.random((length, length)) < 0.08).astype(bool)
    observed = rng.random(length) > 0.1
    result = evaluate_contacts(probs, truth, observed, threshold=0.7)
    for name, (low, high) in RANGES.items():
        pairs = _reference_pairs(length, observed, low, high)
        y = np.array([truth[i, j] for i, j in pairs])
        p = np.array([probs[i, j] for i, j in pairs])
        assert result[f"{name}/n_pairs"] == len(pairs)
        assert result[f"{name}/AUPR"] == pytest.approx(average_precision_score(y, p))
        assert result[f"{name}/F1"] == pytest.approx(f1_score(y, p >= 0.7))
        assert result[f"{name}/MCC"] == pytest.approx(matthews_corrcoef(y, p >= 0.7))
        ranked = sorted(range(len(pairs)), key=lambda n: (-p[n], pairs[n]))  # ties: row, then column
        for k in TOP_K:
            top = max(1, length // k)
            assert result[f"{name}/P@L/{k}"] == pytest.approx(sum(y[n] for n in ranked[:top]) / top)


def test_bad_input_is_an_input_error_naming_the_protein() -> None:
    truth = np.zeros((20, 20), dtype=bool)
    with pytest.raises(InputError, match=r"1abcA.*\(19, 19\).*20 residues"):
        evaluate_contacts(np.zeros((19, 19)), truth, name="1abcA")
    with pytest.raises(InputError, match="1abcA"):
        evaluate_contacts(np.zeros((20, 20)), truth, np.ones(19, dtype=bool), name="1abcA")
    probs = np.zeros((20, 20))
    probs[0, 10] = 1.5
    with pytest.raises(InputError, match=r"xyz.*pair \(1, 11\).*not in \[0, 1\]"):
        evaluate_contacts(probs, truth, name="xyz")
    probs[0, 10] = np.nan
    with pytest.raises(InputError, match=r"probability nan at pair \(1, 11\) is not in"):  # not np.float64(nan)
        evaluate_contacts(probs, truth, name="xyz")
    observed = np.ones(20, dtype=bool)
    observed[0] = False  # NaN on an unobserved residue is fine
    assert evaluate_contacts(probs, truth, observed)["short/n_pairs"] > 0
    with pytest.raises(InputError, match="0/1"):
        evaluate_contacts(np.zeros((20, 20)), np.full((20, 20), 2))
    # a fractional observed mask is not a mask (astype(bool) made 0.3 "observed")
    with pytest.raises(InputError, match="observed mask must hold only 0/1"):
        evaluate_contacts(np.zeros((20, 20)), truth, np.full(20, 0.3))
    assert evaluate_contacts(np.zeros((20, 20)), truth, np.ones(20))["short/n_pairs"] > 0  # 0/1 numbers are fine


def test_bins_closer_than_six_are_refused_not_scored() -> None:
    # CASP never scores |i - j| < 6; a bin reaching below that must be an error, not extra pairs.
    truth = _symmetric(np.ones((20, 20), dtype=bool))
    probs = np.full((20, 20), 0.5)
    for bins in ([(1, 5)], [(5, None)], [(6, 11), (3, 8)]):
        with pytest.raises(InputError, match="need 6 <= low"):
            evaluate_contacts(probs, truth, bins=bins)
        with pytest.raises(InputError, match="need 6 <= low"):
            chance_precision(truth, bins=bins)
    # the lowest admissible bin scores exactly the pairs 6 apart: 20 - 6 = 14 of them
    assert evaluate_contacts(probs, truth, bins=[(6, 6)])["bin/6-6/n_pairs"] == 14


def test_a_1000_residue_protein_matches_a_brute_force_ranking() -> None:
    """At full size (ties among ~500k float32 scores included), the top-L/5 precision and the pair counts equal a
    plain-Python ranking by (-p, i, j). Its speed is measured in benchmarks/bench_timing.py."""
    rng = np.random.default_rng(0)
    length = 1000
    probs = rng.random((length, length), dtype=np.float32)
    probs[rng.random((length, length)) < 0.01] = 0.5  # a block of exact ties, broken by (i, j)
    truth = rng.random((length, length)) < 0.02
    result = evaluate_contacts(probs, truth)
    top = length // 5
    for name, low, high in (("long", 24, length), ("medium", 12, 23)):
        pairs = [(-float(probs[i, j]), i, j) for i in range(length) for j in range(i + low, min(length, i + high + 1))]
        ranked = sorted(pairs)
        assert result[f"{name}/n_pairs"] == len(pairs)
        assert result[f"{name}/n_contacts"] == sum(bool(truth[i, j]) for _, i, j in pairs)
        assert result[f"{name}/P@L/5"] == sum(bool(truth[i, j]) for _, i, j in ranked[:top]) / top
    assert result["long/n_pairs"] == (length - 24) * (length - 23) / 2  # pairs with j - i >= 24, counted by hand


def test_average_skips_nan_and_counts_proteins() -> None:
    per = [{"a": 1.0, "b": math.nan}, {"a": 3.0, "b": 4.0}, {"a": math.nan, "b": math.nan, "c": 2.0}]
    summary = average_metrics(per)
    assert summary["a"] == {"mean": 2.0, "n": 2}
    assert summary["b"] == {"mean": 4.0, "n": 1}
    assert summary["c"] == {"mean": 2.0, "n": 1}  # missing from two proteins = NaN for them
    nothing = average_metrics([{"x": math.nan}])
    assert math.isnan(nothing["x"]["mean"]) and nothing["x"]["n"] == 0
    with pytest.raises(InputError, match="empty"):
        average_metrics([])


def test_bootstrap_interval_contains_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    per = [{"p": float(v), "q": math.nan} for v in rng.random(40)]
    first = bootstrap_ci(per, n_boot=500, seed=11)
    low, high = first["p"]
    mean = average_metrics(per)["p"]["mean"]
    assert low < mean < high
    assert 0.0 < high - low < 0.4
    assert bootstrap_ci(per, n_boot=500, seed=11) == first
    assert bootstrap_ci(per, n_boot=500, seed=12)["p"] != first["p"]
    assert all(math.isnan(v) for v in first["q"])
    wider = bootstrap_ci(per, n_boot=500, seed=11, alpha=0.01)["p"]
    assert wider[0] <= low and wider[1] >= high
    table = summarize(per, n_boot=200, seed=0)
    assert table["p"]["low"] < table["p"]["mean"] < table["p"]["high"] and table["p"]["n"] == 40
    with pytest.raises(InputError):
        bootstrap_ci(per, n_boot=0)


def test_scored_pairs_ranking_ranges_and_top_count_by_hand() -> None:
    observed = np.array([True, True, False, True, True, True, True, True, True, True])
    rows, cols = scored_pairs(observed, 6)
    expected = [(i, j) for i in range(10) for j in range(i + 6, 10) if observed[i] and observed[j]]
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == expected  # row-major, residue 2 dropped
    assert expected == [(0, 6), (0, 7), (0, 8), (0, 9), (1, 7), (1, 8), (1, 9), (3, 9)]
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5, 0.2, 0.5])
    # decreasing score; ties by i, then j
    assert [expected[k] for k in rank_pairs(scores, rows, cols)] == [
        (0, 7), (1, 7), (0, 6), (0, 8), (1, 8), (3, 9), (1, 9), (0, 9)]
    separation = np.array([5, 6, 11, 12, 23, 24, 100])
    assert in_range(separation, 12, 23).tolist() == [False, False, False, True, True, False, False]
    assert in_range(separation, 24, None).tolist() == [False] * 5 + [True, True]
    assert (top_count(4), top_count(5), top_count(64), top_count(64, 1)) == (1, 1, 12, 64)


def test_chance_precision_by_hand() -> None:
    """L = 20, contacts (0,12), (2,19), (0,19): medium (12..23) has 8+7+...+1 = 36 candidates, 3 of them contacts, and
    top-L/5 looks at 4: 4 x 3 / (36 x 4) = 1/12. Short (6..11) has 69 candidates and no contact: 0; long has no
    candidate: NaN. The open bin 18+ has 3 candidates (0,18), (1,19), (0,19), one a contact, fewer than the 4 looked
    at: the 3 ranked pairs hold the contact, over a divisor of 4 -> 1/4. With residue 19 unobserved: medium keeps 28
    candidates and 1 contact -> 1/28; the bin keeps (0,18), no contact -> 0."""
    contacts = np.zeros((20, 20), dtype=bool)
    for i, j in ((0, 12), (2, 19), (0, 19)):
        contacts[i, j] = contacts[j, i] = True
    chance = chance_precision(contacts, bins=[(18, None)], top_k=(5, 1))
    assert chance["medium/P@L/5"] == pytest.approx(1 / 12, abs=1e-15)
    assert chance["medium_long/P@L/5"] == pytest.approx(1 / 12, abs=1e-15)
    assert chance["medium/P@L/1"] == pytest.approx(20 * 3 / (36 * 20), abs=1e-15)
    assert chance["short/P@L/5"] == 0.0
    assert math.isnan(chance["long/P@L/5"])
    assert chance["bin/18+/P@L/5"] == pytest.approx(1 / 4, abs=1e-15)
    observed = np.ones(20, dtype=bool)
    observed[19] = False
    masked = chance_precision(contacts, observed, bins=[(18, None)], top_k=(5,))
    assert masked["medium/P@L/5"] == pytest.approx(1 / 28, abs=1e-15)
    assert masked["bin/18+/P@L/5"] == 0.0
    keys = [k for k in metric_keys(bins=[(18, None)], top_k=(5, 1)) if "/P@L/" in k]
    assert sorted(chance) == sorted(keys)  # exactly the precision keys of evaluate_contacts
    with pytest.raises(InputError, match="chain7"):
        chance_precision(np.zeros((20, 19)), name="chain7")


def test_chance_precision_is_the_mean_over_random_rankings() -> None:
    """The mean of evaluate_contacts' top-L/k precision over 3,000 uniformly random rankings lies within 4 standard
    errors of the chance level, in every range and in a bin with fewer candidates than L/5."""
    rng = np.random.default_rng(3)
    length = 40
    upper = np.triu(rng.random((length, length)) < 0.08, k=6)
    contacts = upper | upper.T
    observed = rng.random(length) > 0.1
    bins = [(6, 11), (30, None)]
    chance = chance_precision(contacts, observed, bins=bins, top_k=(5, 2))
    draws = []
    for _ in range(3000):
        probs = rng.random((length, length))
        result = evaluate_contacts(probs, contacts, observed, bins=bins, top_k=(5, 2))
        draws.append([result[key] for key in chance])
    draws_arr = np.array(draws)
    checked = 0
    for column, key in enumerate(chance):
        values = draws_arr[:, column]
        if math.isnan(chance[key]):
            assert np.isnan(values).all(), key
            continue
        error = values.std() / math.sqrt(values.size)
        assert abs(values.mean() - chance[key]) <= 4 * error + 1e-12, (key, values.mean(), chance[key])
        checked += values.std() > 0
    assert checked >= 6
