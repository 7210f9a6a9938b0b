"""protrnn compare: paired differences between evaluated models, protein floors, seeds, the command."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from protrnn.cli import main
from protrnn.errors import InputError
from protrnn.evaluation.metrics import bootstrap_ci
from protrnn.report.compare import ContactFloor, compare_methods, format_comparisons
from protrnn.report.inputs import load_evaluation

ML, LONG = "medium_long/P@L/5", "long/P@L/5"


def _write_eval(directory: Path, rows: list[dict]) -> Path:
    """An evaluation folder as `protrnn evaluate` writes it (summary.json + per_protein.csv)."""
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps({"format": "protrnn-evaluation", "format_version": 1,
                                                        "command": "protrnn evaluate", "results": {}}))
    columns = ["method", "test_set", "protein", "L", ML, LONG, "long/n_contacts"]
    with open(directory / "per_protein.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "nan") for c in columns])
    return directory


def _proteins(n: int, seed: int = 0) -> list[dict]:
    """n proteins of lengths 50..; protein k holds 2k long-range contacts, so those with 2k >= L pass long:1."""
    rng = np.random.default_rng(seed)
    return [{"protein": f"p{k}", "L": 50 + k, "long/n_contacts": 2 * k, "base": float(rng.uniform(0.0, 0.6))}
            for k in range(n)]


def _rows(method: str, proteins: list[dict], values: list[float], test_set: str = "val",
          long_values: list[float] | None = None) -> list[dict]:
    long_values = values if long_values is None else long_values
    return [{"method": method, "test_set": test_set, "protein": p["protein"], "L": p["L"],
             "long/n_contacts": p["long/n_contacts"], ML: v, LONG: lv}
            for p, v, lv in zip(proteins, values, long_values, strict=True)]


def test_a_constant_gain_is_found_although_the_models_own_intervals_overlap(tmp_path: Path) -> None:
    proteins = _proteins(60)
    base = [p["base"] for p in proteins]
    rows = _rows("ref", proteins, base) + _rows("better", proteins, [b + 0.01 for b in base])
    [c_ml, c_long] = compare_methods([load_evaluation(_write_eval(tmp_path / "e", rows))], "ref")
    assert c_ml.key == ML and c_long.key == LONG
    for c in (c_ml, c_long):
        assert c.method == "better" and c.reference == "ref" and c.proteins == 60
        assert c.difference == pytest.approx(0.01)
        # Every paired replicate sees the same +0.01 on each protein.
        assert c.low == pytest.approx(0.01) and c.high == pytest.approx(0.01)
        assert c.mean == pytest.approx(np.mean(base) + 0.01) and c.reference_mean == pytest.approx(np.mean(base))
        assert c.verdict == "higher"
    # Each model's own interval over proteins (what `protrnn evaluate` reports) overlaps the other's.
    own = [bootstrap_ci([{ML: v} for v in values])[ML] for values in (base, [b + 0.01 for b in base])]
    assert own[1][0] < own[0][1]


def test_noisy_differences_match_an_independent_paired_bootstrap(tmp_path: Path) -> None:
    proteins = _proteins(80, seed=1)
    rng = np.random.default_rng(5)
    base = np.array([p["base"] for p in proteins])
    variant = np.clip(base + rng.normal(0.0, 0.05, size=80), 0, 1)
    rows = _rows("ref", proteins, list(base)) + _rows("var", proteins, list(variant))
    [c] = compare_methods([load_evaluation(_write_eval(tmp_path / "e", rows))], "ref", keys=[ML], n_boot=4000)
    d = variant - base
    assert c.difference == pytest.approx(d.mean(), abs=1e-12)
    draws = np.random.default_rng(123).integers(0, 80, size=(4000, 80))
    low, high = np.quantile(d[draws].mean(axis=1), [0.025, 0.975])
    assert c.low == pytest.approx(low, abs=0.003) and c.high == pytest.approx(high, abs=0.003)


def test_contact_floor_keeps_only_chains_with_enough_far_contacts(tmp_path: Path) -> None:
    proteins = _proteins(80, seed=2)
    # 2k >= 50 + k <=> k >= 50: proteins p50..p79 (30 of them) hold at least L long-range contacts.
    far = [p["long/n_contacts"] >= p["L"] for p in proteins]
    assert sum(far) == 30
    base = [p["base"] for p in proteins]
    gain = [b + (0.1 if f else 0.0) for b, f in zip(base, far, strict=True)]
    rows = _rows("ref", proteins, base) + _rows("var", proteins, gain)
    evaluation = [load_evaluation(_write_eval(tmp_path / "e", rows))]
    [everyone] = compare_methods(evaluation, "ref", keys=[LONG])
    [rich] = compare_methods(evaluation, "ref", keys=[LONG], floors=[ContactFloor.parse("long:1")])
    assert everyone.proteins == 80 and everyone.difference == pytest.approx(0.1 * 30 / 80)
    assert rich.proteins == 30 and rich.difference == pytest.approx(0.1)
    [long_only] = compare_methods(evaluation, "ref", keys=[LONG], min_length=120)  # L = 50..129: p70..p79
    assert long_only.proteins == 10 and long_only.difference == pytest.approx(0.1)


def test_seeds_are_one_model_and_missing_values_are_not_counted(tmp_path: Path) -> None:
    proteins = _proteins(20, seed=3)
    base = [p["base"] for p in proteins]
    long_ref = [math.nan if k < 4 else b for k, b in enumerate(base)]  # 4 chains without long-range pairs
    rows = (_rows("ref", proteins, base, long_values=long_ref)
            + _rows("gru@seed0", proteins, [b + 0.02 for b in base], long_values=[v + 0.02 for v in long_ref])
            + _rows("gru@seed1", proteins, [b + 0.04 for b in base], long_values=[v + 0.04 for v in long_ref]))
    evaluation = [load_evaluation(_write_eval(tmp_path / "e", rows))]
    ml, long = compare_methods(evaluation, "ref")
    assert ml.method == "gru" and ml.seeds == 2 and ml.reference_seeds == 1
    assert ml.difference == pytest.approx(0.03) and ml.proteins == 20
    assert long.proteins == 16 and long.difference == pytest.approx(0.03)
    [one] = compare_methods(evaluation, "ref", ["gru@seed1"], keys=[ML])
    assert one.seeds == 1 and one.difference == pytest.approx(0.04)
    text = format_comparisons([ml, long])
    assert "gru" in text and "+0.0300" in text and "higher" in text


def test_test_sets_are_compared_separately(tmp_path: Path) -> None:
    proteins = _proteins(10)
    base = [p["base"] for p in proteins]
    rows = (_rows("ref", proteins, base, "a") + _rows("m", proteins, [b - 0.05 for b in base], "a")
            + _rows("ref", proteins, base, "b") + _rows("m", proteins, [b + 0.05 for b in base], "b"))
    out = compare_methods([load_evaluation(_write_eval(tmp_path / "e", rows))], "ref", keys=[ML])
    assert [(c.test_set, round(c.difference, 9), c.verdict) for c in out] == [("a", -0.05, "lower"),
                                                                              ("b", 0.05, "higher")]
    [only_b] = compare_methods([load_evaluation(tmp_path / "e")], "ref", keys=[ML], test_sets=["b"])
    assert only_b.test_set == "b"


@pytest.mark.parametrize(("call", "message"), [
    (lambda ev: compare_methods(ev, "nope"), "no method 'nope'"),
    (lambda ev: compare_methods(ev, "ref", ["other"]), "no method 'other'"),
    (lambda ev: compare_methods(ev, "ref", keys=["long/P@L/7"]),
     r"no column 'long/P@L/7' .*RANGE/METRIC or bin/LO-HI/METRIC; those of P@L/5 here: .*long/P@L/5"),
    (lambda ev: compare_methods(ev, "ref", test_sets=["ts50"]), "not scored on test set 'ts50'"),
    (lambda ev: compare_methods(ev, "ref", min_length=10_000), "has a medium_long/P@L/5 value for both .* floors"),
    (lambda ev: compare_methods(ev, "ref", floors=[ContactFloor("medium", 1.0)]), "no 'medium/n_contacts' value"),
    (lambda ev: compare_methods(ev, "ref", keys=["protein"]), "identity column"),
    (lambda ev: compare_methods(ev, "ref", ["ref"]), "share runs"),
])
def test_mistakes_are_named(tmp_path: Path, call, message: str) -> None:
    proteins = _proteins(5)
    rows = _rows("ref", proteins, [0.1] * 5) + _rows("m", proteins, [0.2] * 5)
    with pytest.raises(InputError, match=message):
        call([load_evaluation(_write_eval(tmp_path / "e", rows))])


@pytest.mark.parametrize("text", ["long", "far:1", "long:x", "long:-1", "long:nan"])
def test_contact_floor_syntax(text: str) -> None:
    with pytest.raises(InputError, match="contact floor"):
        ContactFloor.parse(text)
    assert ContactFloor.parse("medium_long:0.5") == ContactFloor("medium_long", 0.5)


def test_command_prints_and_writes_the_table(tmp_path: Path, capsys) -> None:
    proteins = _proteins(30)
    base = [p["base"] for p in proteins]
    _write_eval(tmp_path / "e", _rows("ref", proteins, base) + _rows("m", proteins, [b + 0.02 for b in base]))
    out = tmp_path / "cmp.tsv"
    assert main(["compare", str(tmp_path / "e"), "--reference", "ref", "--keys", ML, "--min-contacts", "long:0",
                 "--bootstrap", "200", "-o", str(out)]) == 0
    assert "higher" in capsys.readouterr().out
    with open(out, newline="") as handle:
        [row] = list(csv.DictReader(handle, delimiter="\t"))
    assert row["method"] == "m" and row["reference"] == "ref" and int(row["proteins"]) == 30
    assert float(row["difference"]) == pytest.approx(0.02, abs=1e-6) and row["verdict"] == "higher"
    assert main(["compare", str(tmp_path / "e"), "--reference", "missing"]) == 2
    assert "no method 'missing'" in capsys.readouterr().err


def test_proteins_without_a_value_for_either_model_leave_both_means(tmp_path: Path) -> None:
    """MCC or F1 is NaN when a model predicts no contact: such a protein must leave both sides of the difference."""
    proteins = _proteins(12)
    ref = [0.5] * 12
    variant = [0.5] * 11 + [math.nan]
    ref_with_zero = ref[:11] + [0.0]
    rows = _rows("ref", proteins, ref_with_zero) + _rows("m", proteins, variant)
    [c] = compare_methods([load_evaluation(_write_eval(tmp_path / "e", rows))], "ref", keys=[ML])
    assert c.proteins == 11 and c.difference == 0.0 and c.mean == c.reference_mean == 0.5


def test_a_single_seed_reference_is_not_compared_with_its_own_model(tmp_path: Path) -> None:
    proteins = _proteins(12)
    base = [p["base"] for p in proteins]
    rows = (_rows("lstm@seed0", proteins, base) + _rows("lstm@seed1", proteins, [b + 0.1 for b in base])
            + _rows("gru", proteins, [b + 0.2 for b in base]))
    out = compare_methods([load_evaluation(_write_eval(tmp_path / "e", rows))], "lstm@seed0", keys=[ML])
    assert [(c.method, c.reference, round(c.difference, 9)) for c in out] == [("gru", "lstm@seed0", 0.2)]
    [seed1] = compare_methods([load_evaluation(tmp_path / "e")], "lstm@seed0", ["lstm@seed1"], keys=[ML])
    assert seed1.difference == pytest.approx(0.1)


def test_a_model_missing_a_test_set_is_compared_on_the_others(tmp_path: Path, capsys) -> None:
    proteins = _proteins(10)
    base = [p["base"] for p in proteins]
    rows = (_rows("ref", proteins, base, "a") + _rows("ref", proteins, base, "b")
            + _rows("m", proteins, [b + 0.05 for b in base], "b"))
    evaluation = [load_evaluation(_write_eval(tmp_path / "e", rows))]
    [c] = compare_methods(evaluation, "ref", keys=[ML])
    assert c.test_set == "b" and "m was not scored on a" in capsys.readouterr().err
    with pytest.raises(InputError, match="'m' was not scored on test set 'a'"):
        compare_methods(evaluation, "ref", keys=[ML], test_sets=["a"])


def test_rows_that_disagree_on_the_structure_are_refused(tmp_path: Path) -> None:
    proteins = _proteins(10)
    other = [dict(p, L=p["L"] + 1) if p["protein"] == "p3" else p for p in proteins]
    rows = _rows("ref", proteins, [0.1] * 10) + _rows("m", other, [0.2] * 10)
    with pytest.raises(InputError, match="'p3' of test set 'val': two methods' rows disagree"):
        compare_methods([load_evaluation(_write_eval(tmp_path / "e", rows))], "ref", keys=[ML])


def test_few_proteins_get_no_verdict(tmp_path: Path) -> None:
    proteins = _proteins(30)
    base = [p["base"] for p in proteins]
    rows = _rows("ref", proteins, base) + _rows("m", proteins, [b + 0.1 for b in base])
    evaluation = [load_evaluation(_write_eval(tmp_path / "e", rows))]
    # L = 50..79: 9 chains of at least 71 residues.
    [few] = compare_methods(evaluation, "ref", keys=[ML], min_length=71)
    [enough] = compare_methods(evaluation, "ref", keys=[ML], min_length=70)
    assert few.proteins == 9 and few.verdict == "too few proteins" and few.low > 0
    assert enough.proteins == 10 and enough.verdict == "higher"


def test_far_rich_flag_is_the_long_floor(tmp_path: Path, capsys) -> None:
    assert ContactFloor.far_rich() == ContactFloor("long", 1.0)
    proteins = _proteins(80, seed=2)
    base = [p["base"] for p in proteins]
    gain = [b + (0.1 if p["long/n_contacts"] >= p["L"] else 0.0) for p, b in zip(proteins, base, strict=True)]
    _write_eval(tmp_path / "e", _rows("ref", proteins, base) + _rows("m", proteins, gain))
    assert main(["compare", str(tmp_path / "e"), "--reference", "ref", "--keys", LONG, "--far-rich"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("val")]
    assert "+0.1000 [+0.1000, +0.1000]" in line and " 30 " in line
    assert main(["compare", str(tmp_path / "e"), "--reference", "ref", "--min-contacts", "far:1"]) == 2
    assert "contact floor 'far:1'" in capsys.readouterr().err


def test_a_protein_scored_twice_for_one_method_is_refused(tmp_path: Path) -> None:
    proteins = _proteins(10)
    base = [p["base"] for p in proteins]
    first = _write_eval(tmp_path / "a", _rows("ref", proteins, base) + _rows("m", proteins, base))
    second = _write_eval(tmp_path / "b", _rows("ref", proteins, [b + 0.1 for b in base]))
    with pytest.raises(InputError, match="'ref' scored protein 'p0' of test set 'val' in two evaluations"):
        compare_methods([load_evaluation(first), load_evaluation(second)], "ref", keys=[ML])
    # Different methods in different folders are what several folders are for.
    third = _write_eval(tmp_path / "c", _rows("n", proteins, [b + 0.1 for b in base]))
    out = compare_methods([load_evaluation(first), load_evaluation(third)], "ref", keys=[ML])
    assert [(c.method, round(c.difference, 9)) for c in out] == [("m", 0.0), ("n", 0.1)]


# ---- cluster bootstrap (--clusters) --------------------------------------------------------------------------------


def _clustered(tmp_path: Path, n_clusters: int, copies: int, seed: int = 7) -> tuple[Path, Path, np.ndarray]:
    """An evaluation where each of n_clusters families has `copies` members with the same difference (a homolog
    family that moves together), and its cluster table (manifest.tsv's id and cluster columns)."""
    rng = np.random.default_rng(seed)
    family_diff = rng.normal(0.01, 0.05, size=n_clusters)
    proteins = [{"protein": f"f{f}m{m}", "L": 60, "long/n_contacts": 0, "base": float(rng.uniform(0.1, 0.5))}
                for f in range(n_clusters) for m in range(copies)]
    base = [p["base"] for p in proteins]
    diffs = np.repeat(family_diff, copies)
    rows = _rows("ref", proteins, base) + _rows("m", proteins, list(np.array(base) + diffs))
    evaluation = _write_eval(tmp_path / "e", rows)
    table = tmp_path / "manifest.tsv"
    table.write_text("source\tid\tsplit\tcluster\n" + "".join(
        f"src\t{p['protein']}\tval\tfam{k // copies}\n" for k, p in enumerate(proteins))
        + "src\tremoved_chain\t\t\n")  # removed chains have no cluster
    return evaluation, table, family_diff


def test_cluster_bootstrap_counts_a_family_once_and_matches_an_independent_one(tmp_path: Path) -> None:
    from protrnn.report.compare import read_clusters

    evaluation, table, family_diff = _clustered(tmp_path, n_clusters=40, copies=4)
    clusters = read_clusters(table)
    assert len(clusters) == 161 and clusters["f3m2"] == "fam3"
    assert clusters["removed_chain"] not in {f"fam{k}" for k in range(40)}  # listed without a cluster: its own
    [naive] = compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], n_boot=4000)
    [grouped] = compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], n_boot=4000, clusters=clusters)
    assert grouped.difference == pytest.approx(family_diff.mean()) == pytest.approx(naive.difference)
    assert grouped.clusters == 40 and naive.clusters is None and grouped.proteins == 160
    # Independently: draw 40 families with replacement; every family's 4 copies share its difference.
    draws = np.random.default_rng(99).integers(0, 40, size=(4000, 40))
    low, high = np.quantile(family_diff[draws].mean(axis=1), [0.025, 0.975])
    assert grouped.low == pytest.approx(low, abs=0.003) and grouped.high == pytest.approx(high, abs=0.003)
    # Treating the 160 copies as independent proteins halves the interval (sqrt of 4 copies).
    ratio = (naive.high - naive.low) / (grouped.high - grouped.low)
    assert 0.4 < ratio < 0.6


def test_cluster_verdict_needs_enough_clusters_and_unlisted_proteins_stand_alone(tmp_path: Path, capsys) -> None:
    from protrnn.report.compare import read_clusters

    evaluation, table, _ = _clustered(tmp_path, n_clusters=5, copies=6)
    clusters = read_clusters(table)
    [c] = compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], clusters=clusters)
    assert c.proteins == 30 and c.clusters == 5 and c.verdict == "too few proteins"
    partial = {k: v for k, v in clusters.items() if not k.startswith("f0")}  # family 0's 6 chains unlisted
    [p] = compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], clusters=partial)
    assert p.clusters == 4 + 6
    assert "6 of 30 proteins of val are not in the cluster table" in capsys.readouterr().err
    with pytest.raises(InputError, match="names no protein of test set 'val'"):
        compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], clusters={"x": "y"})


def test_a_manifest_that_lists_test_chains_without_clusters_serves_validation_and_test_sets_together(
        tmp_path: Path, capsys) -> None:
    """prepare's manifest.tsv gives validation chains clusters and leaves the cluster cell of test-set chains empty:
    comparing on both sets with it resamples the validation families and counts each test chain alone."""
    from protrnn.report.compare import read_clusters

    rng = np.random.default_rng(5)
    val = [{"protein": f"v{k}", "L": 60, "long/n_contacts": 0, "base": float(rng.uniform(0.1, 0.5))} for k in range(24)]
    test = [{"protein": f"t{k}", "L": 60, "long/n_contacts": 0, "base": float(rng.uniform(0.1, 0.5))} for k in range(9)]
    rows = []
    for name, proteins in (("val", val), ("psi", test)):
        base = [p["base"] for p in proteins]
        rows += _rows("ref", proteins, base, test_set=name)
        rows += _rows("m", proteins, [b + 0.02 * (k % 2) for k, b in enumerate(base)], test_set=name)
    evaluation = _write_eval(tmp_path / "e", rows)
    table = tmp_path / "manifest.tsv"
    table.write_text("source\tid\tsplit\tcluster\n"
                     + "".join(f"src\tv{k}\tval\tfam{k // 3}\n" for k in range(24))  # 8 families of 3
                     + "".join(f"psi\tt{k}\ttest_psi\t\n" for k in range(9)), encoding="utf-8")
    out = compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], clusters=read_clusters(table))
    by_set = {c.test_set: c for c in out}
    assert (by_set["val"].proteins, by_set["val"].clusters) == (24, 8)
    assert (by_set["psi"].proteins, by_set["psi"].clusters) == (9, 9)
    assert "not in the cluster table" not in capsys.readouterr().err
    assert main(["compare", str(evaluation), "--reference", "ref", "--keys", ML, "--clusters", str(table)]) == 0


def test_ids_the_manifest_writes_escaped_or_starting_with_a_hash_keep_their_cluster(tmp_path: Path, capsys) -> None:
    from protrnn.report.compare import read_clusters

    # Raw IDs as a dataset holds them, and the cells prepare's manifest.tsv writes for them (whitespace runs
    # collapsed, control characters as \xNN, written out here by hand): all three chains are one family.
    raw = ["#1abc_A", "2xyz  B", "3pqr\x1b[0m_C"]
    cells = ["#1abc_A", "2xyz B", "3pqr\\x1b[0m_C"]
    rng = np.random.default_rng(3)
    proteins = [{"protein": name, "L": 60, "long/n_contacts": 0, "base": float(rng.uniform(0.1, 0.5))}
                for name in raw + [f"p{k}" for k in range(12)]]
    base = [p["base"] for p in proteins]
    evaluation = _write_eval(tmp_path / "e", _rows("ref", proteins, base)
                             + _rows("m", proteins, [b + 0.01 * (k % 3) for k, b in enumerate(base)]))
    table = tmp_path / "manifest.tsv"
    table.write_text("source\tid\tsplit\tcluster\n" + "".join(f"src\t{c}\tval\tfamily\n" for c in cells)
                     + "".join(f"src\tp{k}\tval\tc{k}\n" for k in range(12)), encoding="utf-8")
    [c] = compare_methods([load_evaluation(evaluation)], "ref", keys=[ML], clusters=read_clusters(table))
    assert c.proteins == 15 and c.clusters == 13  # the family once, and each of the 12 others
    assert "not in the cluster table" not in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("id\tsplit\nf0m0\tval\n", "has no 'cluster' column"),
    ("id\tcluster\nf0m0\tA\nf0m0\tB\n", "row 3: id 'f0m0' is in cluster 'B' and, above, in 'A'"),
    ("id\tcluster\nf0m0\t\n", "assigns no protein to a cluster"),
])
def test_cluster_table_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    from protrnn.report.compare import read_clusters

    path = tmp_path / "clusters.tsv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_clusters(path)
    assert "clusters.tsv" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="missing.tsv: file not found"):
        read_clusters(tmp_path / "missing.tsv")


def test_command_resamples_clusters(tmp_path: Path, capsys) -> None:
    evaluation, table, _ = _clustered(tmp_path, n_clusters=40, copies=4)
    out = tmp_path / "cmp.tsv"
    assert main(["compare", str(evaluation), "--reference", "ref", "--keys", ML, "--clusters", str(table),
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clusters" in text.splitlines()[0] and "resample the clusters" in text
    with open(out, newline="") as handle:
        [row] = list(csv.DictReader(handle, delimiter="\t"))
    assert int(row["proteins"]) == 160 and int(row["clusters"]) == 40
    assert main(["compare", str(evaluation), "--reference", "ref", "--clusters", str(tmp_path / "nope.tsv")]) == 2
    assert "nope.tsv: file not found" in capsys.readouterr().err


def test_command_points_to_the_clusters_of_a_test_sets_manifest(tmp_path: Path, capsys) -> None:
    evaluation, table, _ = _clustered(tmp_path, n_clusters=40, copies=4)
    summary = json.loads((evaluation / "summary.json").read_text())
    summary["test_sets"] = {"val": {"path": "data/val.npz", "manifest_tsv": str(table)}}
    (evaluation / "summary.json").write_text(json.dumps(summary))
    args = ["compare", str(evaluation), "--reference", "ref", "--keys", ML, "--bootstrap", "50"]
    assert main(args) == 0
    assert f"160 proteins of val form 40 homology clusters ({table}); --clusters {table}" in capsys.readouterr().err
    assert main([*args, "--clusters", str(table)]) == 0  # already resampling clusters: no hint
    assert "homology clusters" not in capsys.readouterr().err
    singletons = tmp_path / "singletons.tsv"  # one chain per cluster (a test set): nothing to point at
    singletons.write_text("id\tcluster\n" + "".join(f"f{f}m{m}\tc{f}_{m}\n" for f in range(40) for m in range(4)))
    summary["test_sets"]["val"]["manifest_tsv"] = str(singletons)
    (evaluation / "summary.json").write_text(json.dumps(summary))
    assert main(args) == 0
    assert "homology clusters" not in capsys.readouterr().err
    summary["test_sets"]["val"]["manifest_tsv"] = str(tmp_path / "gone.tsv")  # moved since: no hint, no error
    (evaluation / "summary.json").write_text(json.dumps(summary))
    assert main(args) == 0
    assert "homology clusters" not in capsys.readouterr().err
    summary["test_sets"] = ["val"]  # a hand-edited summary of another shape: one line naming it, no traceback
    (evaluation / "summary.json").write_text(json.dumps(summary))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'test_sets' is not an object (edited by hand?)" in err and len(err.strip().splitlines()) == 1


def _evaluation_with_lines(directory: Path, lines: list[str]) -> Path:
    """An evaluation folder whose per_protein.csv holds ``lines`` after a valid header and first row."""
    _write_eval(directory, _rows("ref", _proteins(1), [0.5]))
    table = directory / "per_protein.csv"
    table.write_text(table.read_text() + "".join(line + "\n" for line in lines))
    return directory


@pytest.mark.parametrize(("line", "message"), [
    pytest.param("m,val,p0,50,0.5,0.5,0,extra,cells", r"line 3 has 9 fields, but the header names 7 columns",
                 id="extra-fields"),  # was a TypeError: csv.DictReader put the extra cells in a list
    pytest.param("m,val,p0,50,0.5", r"line 3 has 5 fields, but the header names 7 columns",
                 id="missing-fields"),  # were read as NaN
    pytest.param("m,val,p0,50," + "9" * 140_000 + ",0.5,0",  # over the csv module's 131,072-byte field limit
                 r"not a readable table \(line 3: field larger than field limit \(131072\)\)", id="huge-field"),
])
def test_a_malformed_per_protein_row_is_one_line_naming_file_and_line(tmp_path: Path, line: str, message: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    evaluation = _evaluation_with_lines(tmp_path / "e", [line])
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path / 'e' / 'per_protein.csv'))}: {message}$"):
        load_evaluation(evaluation)
    assert main(["compare", str(evaluation), "--reference", "ref"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("protrnn: error: ") and err.count("\n") == 1 and "per_protein.csv" in err


def test_a_cluster_cell_over_the_csv_field_limit_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    """The line is the file's: comment and blank lines above the header count (read_tsv skips them)."""
    from protrnn.report.compare import read_clusters

    table = tmp_path / "clusters.tsv"
    table.write_text("# written by hand\n\nid\tcluster\np0\tA\n" + "p1\t" + "c" * 140_000 + "\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(table))}: not a readable table \(line 5: field larger than field limit "
                                         r"\(131072\)\)$"):
        read_clusters(table)


def test_one_test_set_name_scored_at_two_cutoffs_is_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two evaluations of one test-set name whose files were prepared at different contact cutoffs (6 and 8 Å) hold
    different contacts: compare had paired them, and the report set them side by side, as one set."""
    from protrnn.report import build_report, load_inputs

    proteins = _proteins(20)
    folders = []
    for name, cutoff in (("at8", 8.0), ("at6", 6.0)):
        folder = _write_eval(tmp_path / name, _rows(name, proteins, [p["base"] for p in proteins]))
        summary = json.loads((folder / "summary.json").read_text())
        summary["test_sets"] = {"val": {"path": f"{name}/val.npz", "n_chains": 20, "contact_cutoff": cutoff}}
        (folder / "summary.json").write_text(json.dumps(summary))
        folders.append(folder)
    evaluations = [load_evaluation(folder) for folder in folders]
    with pytest.raises(InputError, match=r"test set 'val' is scored at contact cutoff 8 Å in .*at8 but 6 Å here"):
        compare_methods(evaluations, "at8")
    assert main(["compare", str(folders[0]), str(folders[1]), "--reference", "at8"]) == 2
    assert "two different sets of contacts under one name" in capsys.readouterr().err
    with pytest.raises(InputError, match="contact cutoff 8 Å"):
        build_report(load_inputs(evaluations=[str(f) for f in folders]), tmp_path / "r", log=lambda _: None)
    # the same cutoff (or none recorded, an older evaluation) passes
    summary = json.loads((folders[1] / "summary.json").read_text())
    summary["test_sets"]["val"]["contact_cutoff"] = 8.0
    (folders[1] / "summary.json").write_text(json.dumps(summary))
    assert compare_methods([load_evaluation(folder) for folder in folders], "at8")
