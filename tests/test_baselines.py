"""Baselines: hand-checked pieces, then real shared data (cgdms -> TS50; Ollikainen-40 with FreeContact)."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from protrnn.alphabet import STANDARD_AMINO_ACIDS
from protrnn.data.chain import ProteinChain, complete_cb
from protrnn.errors import InputError
from protrnn.evaluation import baselines as bl
from protrnn.evaluation.baselines import (
    FreeContactBaseline,
    FreeContactError,
    FreeContactUnavailable,
    PairPropensityBaseline,
    RandomBaseline,
    SeparationPrior,
    freecontact_ollikainen,
    load_ollikainen_case,
    ollikainen_columns,
    read_alignment,
    scores_to_probabilities,
)
from protrnn.evaluation.metrics import average_metrics, evaluate_contacts

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
N_TRAIN = 300


def _extract(archive: Path, dest: Path) -> Path:
    if not archive.is_file():
        pytest.skip(f"shared data not found: {archive}")
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest)
    return dest


def _cgdms_chain(path: Path) -> ProteinChain:
    """cgdms text: sequence, SS, then per residue 12 floats (N, CA, C, side-chain centroid); centroid is not CB."""
    lines = path.read_text().splitlines()
    sequence = lines[0].strip()
    xyz = np.array([[float(v) for v in line.split()] for line in lines[2:2 + len(sequence)]], dtype=np.float32)
    coords = xyz.reshape(len(sequence), 4, 3)
    coords[:, 3] = np.nan
    return ProteinChain(path.stem, sequence, np.ones(len(sequence), dtype=bool), complete_cb(sequence, coords),
                        source=str(path))


@pytest.fixture(scope="module")
def cgdms_train(tmp_path_factory: pytest.TempPathFactory) -> list[ProteinChain]:
    root = _extract(DATA / "cgdms" / "cgdms_train_val.tar.gz", tmp_path_factory.mktemp("cgdms"))
    overlap = DATA / "OVERLAP_tests_vs_cgdms_mmseqs.tsv"
    leaked = {line.split("\t")[1].split("|")[1] for line in overlap.read_text().splitlines()[1:]
              if line.startswith("ts50|")}
    ids = [i for i in (root / "datasets" / "train.txt").read_text().split() if i not in leaked]
    assert len(leaked) >= 4 and len(ids) > N_TRAIN
    return [_cgdms_chain(root / "protein_data" / "train_val" / f"{i}.txt") for i in ids[:N_TRAIN]]


@pytest.fixture(scope="module")
def ts50() -> list[ProteinChain]:
    path = DATA / "ts50_gvp" / "ts50.json.gz"
    if not path.is_file():
        pytest.skip(f"shared data not found: {path}")
    chains = []
    for record in json.loads(gzip.decompress(path.read_bytes())):
        coords = np.array(record["coords"], dtype=np.float32)  # N, CA, C, O
        coords[:, 3] = np.nan
        chains.append(ProteinChain(record["name"], record["seq"], np.ones(len(record["seq"]), dtype=bool),
                                   complete_cb(record["seq"], coords)))
    assert len(chains) == 50
    return chains


@pytest.fixture(scope="module")
def ollikainen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive = DATA / "ollikainen40_covariation" / "ollikainen40_pdb_msa_indices.tar.gz"
    return _extract(archive, tmp_path_factory.mktemp("ollik")) / "ollikainen40"


def _mean(baseline: object, chains: list[ProteinChain], key: str) -> float:
    per = [evaluate_contacts(baseline.predict(chain.sequence), chain.contact_map(), chain.observed, name=chain.id)
           for chain in chains]
    return average_metrics(per)[key]["mean"]


# ---- hand-checked pieces ---------------------------------------------------------------------------------------


def test_random_baseline_is_a_deterministic_symmetric_probability_map() -> None:
    first = RandomBaseline(seed=5).predict("ACDEFGHIKL" * 3)
    assert first.shape == (30, 30) and np.allclose(first, first.T) and np.all(np.diag(first) == 0)
    assert first.min() >= 0 and first.max() <= 1
    assert np.array_equal(RandomBaseline(seed=5).predict("ACDEFGHIKL" * 3), first)
    assert not np.array_equal(RandomBaseline(seed=6).predict("ACDEFGHIKL" * 3), first)


def test_unfitted_baselines_say_so() -> None:
    with pytest.raises(InputError, match="not fitted"):
        SeparationPrior().predict("ACDEFGHIK")
    with pytest.raises(InputError, match="not fitted"):
        PairPropensityBaseline().predict("ACDEFGHIK")
    with pytest.raises(InputError, match="at least one"):
        SeparationPrior().fit([])


def test_scores_to_probabilities_ranks_top_l_above_one_half() -> None:
    # 10 residues; residues 8 and 9 unmapped. Alignment has 8 columns; residue k -> column k.
    columns = np.array([0, 1, 2, 3, 4, 5, 6, 7, -1, -1])
    scores = np.zeros((8, 8))
    scores[0, 6] = scores[6, 0] = 3.0
    scores[1, 7] = scores[7, 1] = 3.0  # tie with (0, 6): both rank 0
    scores[0, 7] = scores[7, 0] = 1.0
    scores[0, 1] = scores[1, 0] = 99.0  # separation 1: never scored
    probs = scores_to_probabilities(scores, columns)
    length = 10
    assert probs[0, 6] == probs[1, 7] == pytest.approx(length / (length + 1))
    assert probs[0, 7] == pytest.approx(length / (length + 2 + 1))  # two strictly better pairs
    assert probs[0, 1] == 0 and np.all(probs[8] == 0) and np.all(probs[:, 9] == 0)
    assert np.allclose(probs, probs.T)
    # Only the three pairs with separation >= 6 between mapped residues are scored: all within the top L.
    assert np.count_nonzero(np.triu(probs) >= 0.5) == 3


def test_read_alignment_flattens_and_validates(tmp_path: Path) -> None:
    good = tmp_path / "good.fasta"
    good.write_text(">a/1-5 desc\nAC-xU\n>b\nac\nbO.\n")
    assert read_alignment(good) == [("a/1-5", "AC--C"), ("b", "AC-K-")]
    ragged = tmp_path / "ragged.fasta"
    ragged.write_text(">a\nACDE\n>b\nACD\n")
    with pytest.raises(InputError, match=r"ragged\.fasta.*record 'b'.*3 columns, expected 4"):
        read_alignment(ragged)
    invalid = tmp_path / "invalid.fasta"
    invalid.write_text(">a\nAC1E\n")
    with pytest.raises(InputError, match=r"record 'a', position 3: invalid alignment letter '1'"):
        read_alignment(invalid)


def test_freecontact_missing_or_failing_binary_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    alignment = tmp_path / "a.fasta"
    alignment.write_text(">a\nACDEFGHIK\n>b\nACDEFGHIK\n")
    false = tmp_path / "failing-freecontact"  # stands in for a freecontact that exits 1
    false.write_text("#!/bin/sh\nexit 1\n")
    false.chmod(0o755)
    monkeypatch.setattr(bl.shutil, "which", lambda name: None)
    assert not FreeContactBaseline.available()
    with pytest.raises(FreeContactUnavailable, match="not installed"):
        FreeContactBaseline().column_scores(alignment)
    monkeypatch.undo()
    with pytest.raises(FreeContactError, match="exit 1"):
        FreeContactBaseline(executable=str(false)).column_scores(alignment)


def _line_chain(name: str, length: int, spacing: float = 0.9) -> ProteinChain:
    """All-alanine chain whose Cβ lie on a line, ``spacing`` Å apart: residues s apart are ``spacing * s`` Å apart,
    so with 0.9 Å the pairs at separation >= 6 that touch are s = 6 below 6 Å (5.4; 6.3 at s = 7) and s = 6, 7, 8
    below 8 Å (7.2; 8.1 at s = 9)."""
    coords = np.zeros((length, 4, 3), dtype=np.float32)
    coords[:, :, 0] = (spacing * np.arange(length))[:, None]
    coords[:, :3, 1] = [-1.0, 0.0, 1.0]  # N, Cα, C off the line; the Cβ (slot 3) on it
    return ProteinChain(name, "A" * length, np.ones(length, dtype=bool), coords)


@pytest.mark.parametrize("cutoff, touching", [(6.0, {6}), (8.0, {6, 7, 8})])
def test_learned_baselines_learn_contacts_at_the_training_sets_stored_cutoff(tmp_path: Path, cutoff: float,
                                                                              touching: set[int]) -> None:
    """The separation and propensity baselines learnt their rates at 8 Å whatever cutoff the training set was prepared
    at (`protrnn prepare --contact-cutoff 6`), so evaluate scored, at 6 Å, rates of contacts below 8 Å. Expected
    values from the line geometry of :func:`_line_chain`, not from the code: the rate at separation s is 1 where
    0.9 s < cutoff, else 0 (window 0 and a negligible pseudocount leave the raw rates; they already fall with s),
    and the propensity's A-A log-odds of bin 6-11 is log((2c + 1) / (2c + 400)) - log((2n + 1) / (2n + 400)), with c
    and n the pairs of the bin that do and do not touch (ordered pairs counted both ways, a pseudocount of 1 in each
    of the 400 cells)."""
    from protrnn.data.dataset import load_dataset, save_dataset

    lengths = (40, 40, 50)
    dataset = load_dataset(save_dataset([_line_chain(f"c{k}", n) for k, n in enumerate(lengths)],
                                        tmp_path / "train.npz", contact_cutoff=cutoff))
    expected = np.array([0.0] + [1.0 if s < 6 or s in touching else 0.0 for s in range(1, max(lengths))])
    pairs = {s: sum(n - s for n in lengths) for s in range(6, 12)}
    c = sum(count for s, count in pairs.items() if s in touching)
    n = sum(count for s, count in pairs.items() if s not in touching)
    alanine = STANDARD_AMINO_ACIDS.index("A")
    for chains, given in ((dataset, None), (list(dataset), cutoff)):  # the stored cutoff, or one given to fit
        keywords = {} if given is None else {"contact_cutoff": given}
        prior = SeparationPrior(window=0.0, pseudocount=1e-12, min_pairs=1).fit(chains, **keywords)
        np.testing.assert_allclose(prior.table, expected, atol=1e-9)
        model = PairPropensityBaseline().fit(chains, **keywords)
        assert model.log_odds[0, alanine, alanine] == pytest.approx(
            np.log((2 * c + 1) / (2 * c + 400)) - np.log((2 * n + 1) / (2 * n + 400)), rel=1e-12)
        assert prior.contact_cutoff == model.contact_cutoff == model.prior.contact_cutoff == cutoff
    # chains that are no prepared dataset (structures, a list) learn at the CASP 8 Å, as before
    plain = SeparationPrior(window=0.0, pseudocount=1e-12, min_pairs=1).fit(list(dataset))
    assert plain.contact_cutoff == 8.0
    np.testing.assert_allclose(plain.table, [0.0] + [1.0 if s <= 8 else 0.0 for s in range(1, max(lengths))],
                               atol=1e-9)


# ---- real data -------------------------------------------------------------------------------------------------


def test_separation_prior_is_smooth_decreasing_and_extrapolates(cgdms_train: list[ProteinChain]) -> None:
    prior = SeparationPrior().fit(cgdms_train)
    seps = np.arange(6, 400)
    p = prior.probability(seps)
    assert np.all(np.diff(p) <= 1e-12), "contact frequency must not rise with separation"
    assert np.all(p > 0) and p[0] > p[-1]
    near = prior.probability(np.array([1, 4, 6, 24]))
    assert near[0] > 0.95  # consecutive Cb are always within 8 A
    assert near[1] > near[2] > near[3] > 0.01  # i+4 (helix) touches far more often than i+6
    # cgdms chains are at most 100 long: separations past the table are extrapolated, never above the last value.
    last = prior.table.size - 1
    assert last < 100 and prior.probability(np.array([300]))[0] <= prior.probability(np.array([last]))[0]
    matrix = prior.predict("A" * 150)
    assert matrix.shape == (150, 150) and np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 0)


def test_pair_propensity_is_symmetric_and_neutral_for_unknown_residues(cgdms_train: list[ProteinChain]) -> None:
    model = PairPropensityBaseline().fit(cgdms_train[:100])
    assert model.log_odds.shape == (4, 20, 20) and np.allclose(model.log_odds, model.log_odds.transpose(0, 2, 1))
    sequence = "MKVLAXCWGDEFHIKLMNPQRSTVWY"
    probs = model.predict(sequence)
    assert np.allclose(probs, probs.T) and probs.min() >= 0 and probs.max() <= 1
    x = sequence.index("X")
    prior = model.prior.predict(sequence)
    assert np.allclose(probs[x], prior[x], atol=1e-6)  # X carries no pair statistics: the prior is kept
    assert not np.allclose(probs[0], prior[0], atol=1e-3)


def test_learned_baselines_beat_random_on_ts50(cgdms_train: list[ProteinChain], ts50: list[ProteinChain]) -> None:
    key = "medium_long/P@L/5"
    random_score = _mean(RandomBaseline(seed=0), ts50, key)
    prior_score = _mean(SeparationPrior().fit(cgdms_train), ts50, key)
    pair_score = _mean(PairPropensityBaseline().fit(cgdms_train), ts50, key)
    assert prior_score > random_score + 0.01
    assert pair_score > prior_score + 0.03


def test_ollikainen_case_maps_residues_to_columns(ollikainen: Path) -> None:
    case = load_ollikainen_case(ollikainen, "1guu_A")
    assert (case.pdb_id, case.chain, case.pfam) == ("1GUU", "A", "PF00249")
    assert case.residue_numbers[0] == "40" and case.columns[0] == 0 and len(case.columns) == 47
    with pytest.raises(InputError, match="not one of the Ollikainen-40"):
        load_ollikainen_case(ollikainen, "9XYZ")
    with pytest.raises(InputError, match="domains.csv missing"):
        load_ollikainen_case(ollikainen / "pdb", "1GUU")
    chain = bl.load_ollikainen_chain(case)
    by_number = ollikainen_columns(case, chain)
    assert np.count_nonzero(by_number >= 0) == 47 and list(by_number[-3:]) == [-1, -1, -1]
    # Without author numbering the index letters are aligned to the sequence: the same map.
    bare = ProteinChain(chain.id, chain.sequence, chain.observed, chain.coords)
    assert np.array_equal(ollikainen_columns(case, bare), by_number)
    wrong = ProteinChain(chain.id, "W" + chain.sequence[1:], chain.observed, chain.coords, meta=dict(chain.meta))
    with pytest.raises(InputError, match="residue 40 is W in the structure but K"):
        ollikainen_columns(case, wrong)


@pytest.mark.slow
@pytest.mark.usefixtures("freecontact")  # fails, not skips, without it (conftest.require_tool)
def test_freecontact_beats_random_on_ollikainen_domains(ollikainen: Path) -> None:
    fc_scores, random_scores = [], []
    for pdb_id in ("1GUU", "1BXY", "1CTF"):
        case = load_ollikainen_case(ollikainen, pdb_id)
        chain = bl.load_ollikainen_chain(case)
        probs, unmapped = freecontact_ollikainen(case, chain, FreeContactBaseline(threads=2, timeout=300))
        assert probs.shape == (len(chain), len(chain)) and np.allclose(probs, probs.T)
        assert all(np.all(probs[k] == 0) for k in unmapped)
        assert len(unmapped) == len(chain) - len(case.columns)
        truth = chain.contact_map()
        fc_scores.append(evaluate_contacts(probs, truth, chain.observed, name=pdb_id)["long/P@L/5"])
        noise = RandomBaseline(seed=0).predict(chain.sequence)
        random_scores.append(evaluate_contacts(noise, truth, chain.observed, name=pdb_id)["long/P@L/5"])
    assert np.mean(fc_scores) > np.mean(random_scores) + 0.3
    assert min(fc_scores) >= 0.5


def _ollikainen_folder(root: Path, *, domains: bytes, indices: bytes) -> Path:
    """A minimal Ollikainen-40 folder for domain 1CTF (PF00542): the files load_ollikainen_case opens or checks."""
    (root / "pdb" / "PF00542").mkdir(parents=True)
    (root / "pdb" / "PF00542" / "1CTF_A.pdb").write_text("END\n")
    (root / "natural_alignments").mkdir()
    (root / "natural_alignments" / "PF00542.align.80").write_text(">s\nEFD\n")
    (root / "indices").mkdir()
    (root / "indices" / "1CTF_A.indices").write_bytes(indices)
    (root / "domains.csv").write_bytes(domains)
    return root


_DOMAINS = b"# comment\n#Pfam ID,Pfam Name,Total # of sequences,PDB ID,Amino acid length,SCOP class\n" \
           b"PF00542,Ribosomal_L12,5000,1CTF,68,d\n"
_INDICES = b"0\tE\t1\t53 A\t6\n1\tF\t2\t54 A\t11\n2\tD\t3\t55 A\t12\n"


def test_ollikainen_files_with_bad_bytes_are_one_line_naming_file_line_and_byte(tmp_path: Path) -> None:
    """A byte that is not ASCII in an .indices file, or not UTF-8 in domains.csv, was a UnicodeDecodeError
    traceback out of ``evaluate --baselines freecontact``; a field over the csv module's limit in domains.csv was
    a _csv.Error."""
    good = _ollikainen_folder(tmp_path / "good", domains=_DOMAINS, indices=_INDICES)
    case = load_ollikainen_case(good, "1CTF")
    assert (case.pfam, case.residue_numbers, case.residue_letters, case.columns) == (
        "PF00542", ("53", "54", "55"), "EFD", (0, 1, 2))
    accented = _INDICES.replace(b"1\tF\t2\t54 A\t11", b"1\tF\t2\t54 A\t11\t\xe9")  # line 2, after 14 bytes
    root = _ollikainen_folder(tmp_path / "indices", domains=_DOMAINS, indices=accented)
    with pytest.raises(InputError, match=r"1CTF_A\.indices: not ASCII text: byte 0xe9 at line 2, column 15$"):
        load_ollikainen_case(root, "1CTF")
    broken = _DOMAINS.replace(b"Ribosomal_L12", b"Ribosomal\xff_L12")  # line 3, the 18th byte
    root = _ollikainen_folder(tmp_path / "domains", domains=broken, indices=_INDICES)
    with pytest.raises(InputError, match=r"domains\.csv: not UTF-8 text: byte 0xff at line 3, column 18$"):
        bl.ollikainen_domains(root)
    huge = _DOMAINS + b"PF00001,x," + b"9" * 140_000 + b",1ABC,60,a\n"  # line 4
    root = _ollikainen_folder(tmp_path / "huge", domains=huge, indices=_INDICES)
    with pytest.raises(InputError, match=r"domains\.csv: not a readable table \(line 4: field larger than field "
                                         r"limit \(131072\)\)$"):
        bl.ollikainen_domains(root)


def test_ollikainen_files_are_read_within_the_input_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """domains.csv and the .indices files were read whole whatever their size; like every input, they are refused
    past MAX_INPUT_BYTES (set to 1,000 bytes here) in one line naming the file."""
    from protrnn.data import structure

    monkeypatch.setattr(structure, "MAX_INPUT_BYTES", 1000)
    padded = _DOMAINS + b"".join(b"PF%05d,x,y,9ABC,1,a\n" % k for k in range(60))
    assert len(padded) > 1000
    root = _ollikainen_folder(tmp_path / "domains", domains=padded, indices=_INDICES)
    with pytest.raises(InputError, match=r"domains\.csv: .*larger than"):
        bl.ollikainen_domains(root)
    long_indices = _INDICES * 30
    assert len(long_indices) > 1000
    root = _ollikainen_folder(tmp_path / "indices", domains=_DOMAINS, indices=long_indices)
    with pytest.raises(InputError, match=r"1CTF_A\.indices: .*larger than"):
        load_ollikainen_case(root, "1CTF")
    assert load_ollikainen_case(_ollikainen_folder(tmp_path / "good", domains=_DOMAINS, indices=_INDICES),
                                "1CTF").columns == (0, 1, 2)
    alignment = tmp_path / "long.aln"
    alignment.write_text("".join(f">s{k}\nACDE-FGHIK\n" for k in range(100)))
    with pytest.raises(InputError, match=r"long\.aln: file larger than"):
        bl.read_alignment(alignment)
    alignment.write_text(">a\r\nAC-D\r\n>b\rACEE\r", newline="")  # every line ending, as text mode read it
    assert bl.read_alignment(alignment) == [("a", "AC-D"), ("b", "ACEE")]
