"""Homology splits and leakage removal on real data (cgdms vs TS50), with mmseqs2 and with the fallback."""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path

import pytest

from protrnn.data import splits
from protrnn.data.chain import ProteinChain
from protrnn.errors import InputError

needs_mmseqs = pytest.mark.usefixtures("mmseqs")  # fails, not skips, without mmseqs2 (conftest.require_tool)
#: Names that must never reach a shell or a path: mmseqs sees only index-based names.
HOSTILE_IDS = ["a b; rm -rf /", "../../etc/passwd", "$(touch pwned)", "tab\there", "-v"]


@pytest.fixture(scope="module")
def cgdms(shared_data: Path) -> list[ProteinChain]:
    from protrnn.data.sources import iter_chains

    return [o.chain for o in iter_chains(shared_data / "cgdms" / "cgdms_train_val.tar.gz")]


@pytest.fixture(scope="module")
def ts50(shared_data: Path) -> list[tuple[str, str]]:
    with gzip.open(shared_data / "ts50_gvp" / "ts50.json.gz", "rt") as handle:
        return [(record["name"], record["seq"]) for record in json.load(handle)]


@pytest.fixture(scope="module")
def table_ts50(shared_data: Path) -> dict[tuple[str, str], float]:
    """TS50 rows of the shared mmseqs2 overlap table: (ts50 id, cgdms id) -> identity."""
    with open(shared_data / "OVERLAP_tests_vs_cgdms_mmseqs.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {(r["query_test_chain"].split("|")[1], r["target_cgdms_chain"].split("|")[1]): float(r["fident"])
            for r in rows if r["query_test_chain"].startswith("ts50|")}


def _test_chain(name: str, seq: str) -> ProteinChain:
    import numpy as np

    return ProteinChain(name, seq, np.zeros(len(seq), bool), np.full((len(seq), 4, 3), np.nan, np.float32))


@needs_mmseqs
def test_leakage_against_ts50_matches_shared_table(cgdms: list[ProteinChain], ts50: list[tuple[str, str]],
                                                   table_ts50: dict[tuple[str, str], float]) -> None:
    kept, removed = splits.remove_leakage(cgdms, {"ts50": [_test_chain(n, s) for n, s in ts50]})
    removed_ids = {hit.chain_id for hit in removed}
    assert {"1LPB_A", "2CVI_A"} <= removed_ids  # identical to TS50 1lpbA and 2cviA
    # The shared table asks for coverage of both sequences, removal for coverage of either chain (a longer chain
    # holding a test chain, a fragment or domain of one), so removal finds every chain of the table and more; each
    # further one is a relative by the rule though under half of one of the two chains is aligned.
    table = {target for _, target in table_ts50}
    assert table <= removed_ids
    by_id = {hit.chain_id: hit for hit in removed}
    extra = removed_ids - table
    assert extra  # the rule of either chain's coverage removes chains the table's rule of both keeps
    for chain_id in extra:
        hit = by_id[chain_id].hit
        assert hit.identity >= 0.3 and hit.evalue <= 1e-3
        assert max(hit.query_coverage, hit.target_coverage) >= 0.5 > min(hit.query_coverage, hit.target_coverage)
    assert len(kept) + len(removed) == len(cgdms) and not removed_ids & {c.id for c in kept}
    assert by_id["1LPB_A"].test_id == "1lpbA" and by_id["1LPB_A"].identity == 1.0
    for hit in removed:
        assert hit.test_set == "ts50"
        if hit.chain_id in table:
            assert hit.identity == pytest.approx(table_ts50[(hit.test_id, hit.chain_id)], abs=0.005)
        assert hit.hit.query == hit.test_id and hit.hit.target == hit.chain_id
        assert max(hit.hit.query_coverage, hit.hit.target_coverage) >= 0.5 and hit.hit.evalue <= 1e-3


@pytest.mark.parametrize("method", ["mmseqs2", "fallback"])
def test_leakage_removes_a_longer_chain_that_holds_a_test_chain(method: str, ts50: list[tuple[str, str]],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 request: pytest.FixtureRequest) -> None:
    """A test chain inside a longer training construct (a fusion protein, a complex's longer chain) covers less than
    half of that chain; it is leakage all the same. A chimera holding a third of the test chain inside a longer
    unrelated construct covers under half of either chain, and stays."""
    import numpy as np

    if method == "mmseqs2":
        request.getfixturevalue("mmseqs")
    else:
        monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    rng = np.random.default_rng(1)
    name, seq = max(ts50, key=lambda item: len(item[1]))
    linker = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 2 * len(seq)))
    fusion = _test_chain("fusion", linker + seq)  # the test chain is a third of it
    fragment = _test_chain("fragment", linker + seq[: len(seq) // 3])  # a third of the test chain
    unrelated = _test_chain("unrelated", linker)
    kept, removed = splits.remove_leakage([fusion, fragment, unrelated], {"ts50": [_test_chain(name, seq)]})
    assert [c.id for c in kept] == ["fragment", "unrelated"]
    assert [(r.chain_id, r.test_id, r.identity) for r in removed] == [("fusion", name, 1.0)]
    assert removed[0].hit.query_coverage == 1.0 and removed[0].hit.target_coverage == pytest.approx(1 / 3, abs=0.01)


def test_fallback_search_finds_the_identical_chains(monkeypatch: pytest.MonkeyPatch, cgdms: list[ProteinChain],
                                                     ts50: list[tuple[str, str]],
                                                     table_ts50: dict[tuple[str, str], float],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    wanted = {target for _, target in table_ts50}
    pool = [c for c in cgdms if c.id in wanted] + cgdms[:300]
    hits = splits.search_overlap([n for n, _ in ts50], [s for _, s in ts50], [c.id for c in pool],
                                 [c.sequence for c in pool])
    assert "fallback" in caplog.text
    pairs = {(h.query, h.target): h for h in hits}
    assert pairs[("1lpbA", "1LPB_A")].identity == 1.0 and pairs[("2cviA", "2CVI_A")].identity == 1.0
    for hit in hits:
        assert hit.identity >= 0.3 and min(hit.query_coverage, hit.target_coverage) >= 0.5 and hit.evalue <= 1e-3
    # no spurious hit: everything found is in the mmseqs2 table (the fallback is the less sensitive of the two)
    assert set(pairs) <= set(table_ts50)


@needs_mmseqs
def test_hostile_ids_never_reach_mmseqs(cgdms: list[ProteinChain], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seqs = [cgdms[0].sequence, cgdms[0].sequence, cgdms[1].sequence, cgdms[2].sequence, cgdms[3].sequence]
    hits = splits.search_overlap(HOSTILE_IDS[:2], seqs[:2], HOSTILE_IDS, seqs)
    assert {(h.query, h.target) for h in hits} >= {(HOSTILE_IDS[0], HOSTILE_IDS[0]), (HOSTILE_IDS[0], HOSTILE_IDS[1])}
    assert list(tmp_path.iterdir()) == [] and not Path("pwned").exists()


def _identical_groups(chains: list[ProteinChain]) -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for chain in chains:
        groups[chain.sequence].append(chain.id)
    return [ids for ids in groups.values() if len(ids) > 1]


@pytest.mark.parametrize("method", [pytest.param("mmseqs", marks=pytest.mark.slow), "fallback"])
def test_clusters_keep_identical_sequences_together(method: str, monkeypatch: pytest.MonkeyPatch,
                                                    cgdms: list[ProteinChain], request: pytest.FixtureRequest) -> None:
    if method == "mmseqs":
        request.getfixturevalue("mmseqs")
    if method == "fallback":
        monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    groups = _identical_groups(cgdms)
    members = {i for group in groups for i in group}
    subset = [c for c in cgdms if c.id in members] + [c for c in cgdms[:120] if c.id not in members]
    ids = [c.id for c in subset]
    ids[-1] = HOSTILE_IDS[0]
    clusters = splits.cluster_sequences(ids, [c.sequence for c in subset])
    assert set(clusters) == set(ids) and set(clusters.values()) <= set(ids)
    for group in groups:
        assert len({clusters[i] for i in group}) == 1, group
    for rep in set(clusters.values()):
        assert clusters[rep] == rep  # a representative is in its own cluster
    assert len(set(clusters.values())) > 0.8 * len(set(c.sequence for c in subset))  # mostly unrelated chains


def test_split_by_cluster_never_splits_a_cluster() -> None:
    clusters = {f"c{i}": f"r{i // 3}" if i < 60 else f"c{i}" for i in range(300)}
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = splits.split_by_cluster(clusters, fractions, seed=1)
    assert first == splits.split_by_cluster(clusters, fractions, seed=1)
    assert first != splits.split_by_cluster(clusters, fractions, seed=2)
    assert set(first) == set(clusters)
    by_cluster: dict[str, set[str]] = defaultdict(set)
    for chain_id, split in first.items():
        by_cluster[clusters[chain_id]].add(split)
    assert all(len(s) == 1 for s in by_cluster.values())
    counts = {name: sum(v == name for v in first.values()) for name in fractions}
    for name, fraction in fractions.items():
        assert abs(counts[name] - fraction * 300) <= 3


def test_fraction_parsing() -> None:
    assert splits.parse_fractions("train=0.9, val=0.1") == {"train": 0.9, "val": 0.1}
    for bad, message in (("train=0.9", "sum to"), ("train=1.2,val=-0.2", "positive"), ("train", "NAME=FRACTION"),
                         ("train=a,val=0.5", "not a number"), ("train=0.5,train=0.5", "twice")):
        with pytest.raises(InputError, match=message):
            splits.parse_fractions(bad)
    with pytest.raises(InputError):
        splits.search_overlap(["a"], ["ACDE"], ["b"], ["ACDE"], min_seq_id=1.5)


@needs_mmseqs
def test_leakage_finds_every_relative_beyond_mmseqs_prefilter_cap(ts50: list[tuple[str, str]]) -> None:
    """A test chain with more training relatives than mmseqs' default prefilter keeps (--max-seqs 300) loses none."""
    import numpy as np

    rng = np.random.default_rng(0)
    name, seq = max(ts50, key=lambda item: len(item[1]))
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    relatives = []
    for k in range(420):  # ~80 % identical to the test chain, each differently mutated
        residues = np.array(list(seq))
        hit = rng.random(len(seq)) < 0.2
        residues[hit] = rng.choice(letters, int(hit.sum()))
        relatives.append(_test_chain(f"rel{k}", "".join(residues)))
    kept, removed = splits.remove_leakage(relatives, {"ts50": [_test_chain(name, seq)]}, min_seq_id=0.3,
                                          coverage=0.5)
    assert kept == []
    assert len(removed) == 420


def test_best_test_hits_picks_identity_then_bits_and_records_each_removed_chain_once() -> None:
    """The one best-hit rule of both leakage searches: highest identity, then bits, then the lower test index, in
    any order of the hits (mmseqs2 reports ties in varying order); the records come in chain order, written from the
    test chain to the training chain."""
    import dataclasses
    import itertools
    from types import SimpleNamespace

    def hit(identity: float, bits: float, tag: str) -> splits.Hit:
        return splits.Hit(tag, "t", identity, 50, 1, 50, 60, 1, 50, 80, 1e-9, bits)

    hits = [
        (2, 1, hit(0.40, 90.0, "c2-fewer-bits")),
        (0, 1, hit(0.35, 200.0, "c0-low-identity")),
        (0, 1, hit(0.50, 50.0, "c0-best")),        # higher identity wins over more bits
        (2, 1, hit(0.40, 120.0, "c2-more-bits")),  # same identity, more bits wins ...
        (2, 2, hit(0.40, 120.0, "c2-tie-later")),  # ... and on a full tie the lower test index
        (0, 0, hit(0.50, 40.0, "c0-fewer-bits")),
    ]
    for order in itertools.permutations(hits):
        best = splits.best_test_hits(order)
        assert {chain: (test, h.query) for chain, (test, h) in best.items()} == {0: (1, "c0-best"),
                                                                                 2: (1, "c2-more-bits")}
    tests = [("ts50", SimpleNamespace(id="T0")), ("psicov150", SimpleNamespace(id="P1")),
             ("olk40", SimpleNamespace(id="O2"))]
    records = splits.leakage_records(best, ["a", "b", "c"], tests,
                                     lambda h, chain_id, test_id: dataclasses.replace(h, query=test_id, target=chain_id))
    assert [(r.chain_id, r.test_set, r.test_id, r.identity, r.hit.query, r.hit.target) for r in records] == [
        ("a", "psicov150", "P1", 0.50, "P1", "a"), ("c", "psicov150", "P1", 0.40, "P1", "c")]


def test_split_with_fit_keeps_a_family_larger_than_a_split_out_of_it() -> None:
    """A 30-chain family with a 20-chain validation target (20 other chains): by order alone it lands in val for
    some seeds (val then 30 chains of one family); with ``fit`` it goes to train for every seed, and val never
    exceeds its target."""
    clusters = {f"c{i}": "big" if i < 30 else f"c{i}" for i in range(50)}
    fractions = {"train": 0.6, "val": 0.4}
    by_order = [splits.split_by_cluster(clusters, fractions, seed=seed)["c0"] for seed in range(40)]
    assert "val" in by_order
    for seed in range(40):
        assignment = splits.split_by_cluster(clusters, fractions, seed=seed, fit=True)
        assert all(assignment[f"c{i}"] == "train" for i in range(30))
        assert 1 <= sum(split == "val" for split in assignment.values()) <= 20


@pytest.mark.parametrize("method", ["mmseqs2", "fallback"])
def test_link_clusters_merges_clusters_joined_by_a_hit(method: str, ts50: list[tuple[str, str]],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       request: pytest.FixtureRequest) -> None:
    """A set-cover clustering tied B to A but left C, a close relative of B, as a cluster of its own; B and C would
    then sit on two sides of a split. Linking merges C's cluster into A's (named after the larger), and D's, a longer
    chain holding C (covered over a third of its length); an unrelated chain keeps its own."""
    import numpy as np

    if method == "mmseqs2":
        request.getfixturevalue("mmseqs")
    else:
        monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    rng = np.random.default_rng(5)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))

    def mutant(seq: str, rate: float) -> str:
        residues = np.array(list(seq))
        hit = rng.random(len(seq)) < rate
        residues[hit] = rng.choice(letters, int(hit.sum()))
        return "".join(residues)

    a = max(ts50, key=lambda item: len(item[1]))[1]
    b = mutant(a, 0.2)
    c = mutant(b, 0.2)
    unrelated = "".join(rng.choice(letters, len(a)))
    fusion = "".join(rng.choice(letters, 2 * len(a))) + c  # C inside a longer chain: a third of it
    ids = ["A", "B", "C", "D", "U"]
    linked = splits.link_clusters(ids, [a, b, c, fusion, unrelated],
                                  {"A": "A", "B": "A", "C": "C", "D": "D", "U": "U"})
    assert linked == {"A": "A", "B": "A", "C": "A", "D": "A", "U": "U"}


@needs_mmseqs
def test_a_relative_found_from_either_side_is_removed(cgdms: list[ProteinChain], shared_data: Path) -> None:
    """Near 30 % identity the alignment from one side can fall below the threshold from the other: cgdms 4CC2_A is
    41 % identical over 86 % of PSICOV150 1jo8_A searched from the test chain, and not found from 4CC2_A. A pair found
    either way counts (searching from the training chains alone kept it)."""
    import io
    import tarfile

    from protrnn.data.structure import parse_structure_text

    with tarfile.open(shared_data / "psicov150_gremlin_rf" / "psicov150_org_pdb.tar.gz") as archive:
        member = archive.extractfile("psicov150/org_pdb/1jo8.pdb")
        assert member is not None
        text = io.TextIOWrapper(member, encoding="utf-8").read()
    test = parse_structure_text(text, source="1jo8.pdb", chain="A")
    chain = next(c for c in cgdms if c.id == "4CC2_A")
    kept, removed = splits.remove_leakage([chain], {"psicov150": [test]})
    assert kept == [] and [(r.chain_id, r.test_id) for r in removed] == [("4CC2_A", test.id)]
    assert removed[0].identity >= 0.3 and removed[0].hit.query_coverage >= 0.5


@pytest.mark.parametrize("method", ["mmseqs2", "fallback"])
def test_leakage_removes_fragments_and_domains_of_a_test_chain(method: str, ts50: list[tuple[str, str]],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               request: pytest.FixtureRequest) -> None:
    """A training chain that is a piece of a test chain (its first 45 %, a middle third like a SCOPe domain of it,
    the short chain of a two-chain protein) covers under half of the test chain, and was kept: an exact half of
    TS50's 1h4aX stayed in training. Coverage of either chain counts now, so each is removed, with its coverage of
    itself 1.0 and of the test chain what it holds of it."""
    if method == "mmseqs2":
        request.getfixturevalue("mmseqs")
    else:
        monkeypatch.setattr(splits, "mmseqs_path", lambda: None)
    name, seq = max(ts50, key=lambda item: len(item[1]))
    length = len(seq)
    pieces = {"head": seq[: int(0.45 * length)], "domain": seq[length // 3: 2 * length // 3]}
    chains = [_test_chain(piece, text) for piece, text in pieces.items()]
    kept, removed = splits.remove_leakage(chains, {"ts50": [_test_chain(name, seq)]})
    assert kept == []
    by_id = {hit.chain_id: hit for hit in removed}
    assert sorted(by_id) == ["domain", "head"]
    for piece, text in pieces.items():
        hit = by_id[piece]
        assert (hit.test_id, hit.identity) == (name, 1.0)
        # seen from the test chain: the query is the test chain, the target the piece
        assert hit.hit.target_coverage == 1.0
        assert hit.hit.query_coverage == pytest.approx(len(text) / length, abs=0.01) and hit.hit.query_coverage < 0.5


@needs_mmseqs
def test_leakage_search_finds_a_pair_both_prefiltered_searches_miss(shared_data: Path,
                                                                   cgdms: list[ProteinChain]) -> None:
    """cgdms 1JB0_C (80 residues) and PSICOV150's 1h98_A: 33 % identity over a 55-residue alignment, E about 2e-4,
    over more than half of each chain, so a relative by the rule. mmseqs2's k-mer prefilter at -s 7.5 does not pass
    the pair from the chain's side, and from the test chain's side, searched against every cgdms chain, the E-value
    of the same alignment grows with the database past 1e-3: the chain stayed in the bundled model's training data.
    A third search, mmseqs2's exhaustive mode from the chains' side, finds it."""
    from protrnn.data.sources import read_chains

    chain = next(c for c in cgdms if c.id == "1JB0_C")
    test = next(c for c in read_chains(shared_data / "psicov150_gremlin_rf" / "psicov150_org_pdb.tar.gz")
                if c.id == "1h98_A")
    prefiltered = splits.search_overlap(["1JB0_C"], [chain.sequence], ["1h98_A"], [test.sequence], coverage=0.0)
    assert prefiltered == []  # the chain's side without the exhaustive search: nothing
    # a training set of the bundle data's size (about 4,000 chains; cgdms twice): the E-value of the test chain's
    # side grows with it, and at 2,204 chains it is still 7e-4
    twice = cgdms + [ProteinChain(f"{c.id}.copy", c.sequence, c.observed, c.coords) for c in cgdms]
    kept, removed = splits.remove_leakage(twice, {"psicov150": [test]})
    by_id = {hit.chain_id: hit for hit in removed}
    assert "1JB0_C" in by_id and "1JB0_C" not in {c.id for c in kept}
    hit = by_id["1JB0_C"].hit
    assert 0.3 <= hit.identity < 0.4 and hit.evalue <= 1e-3 and hit.aln_length >= 50
    assert min(hit.query_coverage, hit.target_coverage) >= 0.5


@needs_mmseqs
def test_leakage_removes_every_relative_the_plain_searches_find(shared_data: Path, cgdms: list[ProteinChain]) -> None:
    """The exhaustive search is added to the two prefiltered ones, never substituted for one: on mmseqs2 14 it has a
    prefilter of its own and misses pairs the plain search from the chains' side finds (10 of the bundle data's
    removals, 173 of the labels'). Every cgdms chain that the two plain searches (chains against PSICOV150, PSICOV150
    against chains) relate to a PSICOV150 chain by the rule is removed."""
    from protrnn.data.sources import read_chains

    tests = read_chains(shared_data / "psicov150_gremlin_rf" / "psicov150_org_pdb.tar.gz")
    ids, seqs = [c.id for c in cgdms], [c.sequence for c in cgdms]
    test_ids, test_seqs = [c.id for c in tests], [c.sequence for c in tests]
    related = {hit.query for hit in splits.search_overlap(ids, seqs, test_ids, test_seqs, coverage=0.0)
               if hit.identity >= 0.3 and max(hit.query_coverage, hit.target_coverage) >= 0.5}
    related |= {hit.target for hit in splits.search_overlap(test_ids, test_seqs, ids, seqs, coverage=0.0)
                if hit.identity >= 0.3 and max(hit.query_coverage, hit.target_coverage) >= 0.5}
    assert len(related) > 20
    kept, removed = splits.remove_leakage(cgdms, {"psicov150": tests})
    assert related <= {hit.chain_id for hit in removed}
