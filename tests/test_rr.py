"""CASP RR writer and strict parser: layout, top-k selection matching the matrix, and clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from protrnn import rr as rr_module
from protrnn.errors import InputError
from protrnn.rr import format_rr, read_rr, read_rr_document, rr_target, select_contacts, write_rr


def _symmetric(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    upper = rng.random((length, length), dtype=np.float32)
    return np.triu(upper, 1) + np.triu(upper, 1).T


def _brute_force_top(probs: np.ndarray, k: int, min_sep: int) -> list[tuple[int, int]]:
    """Independent reference: every upper-triangle pair, sorted by (-p, i, j) in plain Python."""
    length = probs.shape[0]
    pairs = [(-float(probs[i, j]), i, j) for i in range(length) for j in range(i + min_sep, length)]
    pairs.sort()
    return [(i + 1, j + 1) for _, i, j in pairs[:k]]


def test_rr_parses_back_to_matrix_top_k(tmp_path) -> None:
    sequence = "ACDEFGHIKLMNPQRSTVWY" * 6 + "ACD"  # 123 residues: 3 sequence lines
    probs = _symmetric(len(sequence), seed=1)
    path = tmp_path / "t.rr"
    write_rr(path, "T0001", sequence, probs, method_lines=["test model"], top=40)
    target, seq, contacts = read_rr(path)
    assert target == "T0001"
    assert seq == sequence
    assert [(c.i, c.j) for c in contacts] == _brute_force_top(probs, 40, 6)
    for c in contacts:
        assert (c.d1, c.d2) == (0, 8)
        assert c.p == pytest.approx(float(probs[c.i - 1, c.j - 1]), abs=5e-5)
    lines = path.read_text().splitlines()
    model_at = lines.index("MODEL  1")
    assert lines[:3] == ["PFRMAT RR", "TARGET T0001", "AUTHOR protrnn"]
    assert "METHOD test model" in lines[:model_at]
    assert [len(x) for x in lines[model_at + 1:model_at + 4]] == [50, 50, 23]
    assert lines[-1] == "END"


def _windows(min_sep: int) -> list[tuple[int, float]]:
    """CASP's ranges (short 6-11, medium 12-23, long >= 24) from min_sep on, and min_sep-5 when min_sep < 6."""
    casp = [(6, 11), (12, 23), (24, float("inf"))]
    below = [(min_sep, 5)] if min_sep < 6 else []
    return below + [(max(low, min_sep), high) for low, high in casp if high >= min_sep]


def _brute_force_default(probs: np.ndarray, min_sep: int) -> list[tuple[int, int]]:
    """Independent reference for the default selection: the top L pairs of each window, ranked together."""
    length = probs.shape[0]
    chosen = []
    for low, high in _windows(min_sep):
        pairs = sorted((-float(probs[i, j]), i, j) for i in range(length) for j in range(i + low, length)
                       if j - i <= high)
        chosen += pairs[:length]
    return [(i + 1, j + 1) for _, i, j in sorted(chosen)]


def test_default_is_the_top_l_of_each_separation_range() -> None:
    """Short-range pairs, the most probable, no longer crowd long-range ones out of the default RR: every range's
    top L (so its top L/5, L/2 and L) is in the file, ranked as one list."""
    length = 60
    sequence = "A" * length
    probs = _symmetric(length, seed=2) * 0.5
    i, j = np.triu_indices(length, 6)
    near = j - i < 12
    probs[i[near], j[near]] += 0.5  # every short-range pair outranks every other pair
    probs[j[near], i[near]] += 0.5
    _, _, contacts = read_rr(io.StringIO(format_rr("x", sequence, probs, method_lines=["m"])))
    pairs = [(c.i, c.j) for c in contacts]
    assert pairs == _brute_force_default(probs, 6)
    assert len(pairs) == 3 * length  # every range has at least L pairs at L = 60
    assert all(c.j - c.i >= 6 for c in contacts)
    values = [c.p for c in contacts]
    assert values == sorted(values, reverse=True)
    long_pairs = [(a, b) for a, b in pairs if b - a >= 24]
    assert long_pairs[:length // 5] == [(a, b) for a, b in _brute_force_top(probs, 10 * length, 24)][:length // 5]
    # the old default, the top L over all ranges, held short-range pairs only
    assert all(b - a < 12 for a, b in _brute_force_top(probs, length, 6))
    for min_sep in (1, 12, 30):
        _, _, other = read_rr(io.StringIO(format_rr("x", sequence, probs, method_lines=["m"],
                                                    min_separation=min_sep)))
        assert [(c.i, c.j) for c in other] == _brute_force_default(probs, min_sep), min_sep


def test_threshold_and_cap() -> None:
    probs = _symmetric(40, seed=3)
    rows, cols, values = select_contacts(probs, threshold=0.9)
    expected = {(i, j) for i in range(40) for j in range(i + 6, 40) if probs[i, j] >= 0.9}
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected
    assert np.all(np.diff(values) <= 0)
    rows, cols, _ = select_contacts(probs, threshold=0.9, top=5)
    assert len(rows) == 5
    assert [(i + 1, j + 1) for i, j in zip(rows.tolist(), cols.tolist(), strict=True)] == _brute_force_top(
        np.where(probs >= 0.9, probs, 0), 5, 6)
    assert len(select_contacts(probs, top=0)[0]) == 0


def test_ties_break_by_index_and_probabilities_clamped() -> None:
    probs = np.full((20, 20), 0.5, dtype=np.float32)
    probs[2, 15] = probs[15, 2] = 1.2  # out of range input is clamped on output
    text = format_rr("tie", "G" * 20, probs, method_lines=["m"], top=4)
    body = [line for line in text.splitlines() if line[0].isdigit()]
    assert body == ["3 16 0 8 1.0000", "1 7 0 8 0.5000", "1 8 0 8 0.5000", "1 9 0 8 0.5000"]


def _reference_selection(probs: np.ndarray, top: int | None, min_sep: int,
                         threshold: float | None) -> list[tuple[int, int, float]]:
    """Independent reference for select_contacts: every pair in plain Python, filtered, sorted by (-p, i, j), cut."""
    length = probs.shape[0]
    pairs = [(-float(probs[i, j]), i, j) for i in range(length) for j in range(i + min_sep, length)]
    if threshold is not None:
        pairs = [pair for pair in pairs if -pair[0] >= threshold]
    pairs.sort()
    if top is None and threshold is None:
        default = _brute_force_default(probs, min_sep)
        return [(i - 1, j - 1, float(probs[i - 1, j - 1])) for i, j in default]
    return [(i, j, -p) for p, i, j in (pairs if top is None else pairs[:top])]


@pytest.mark.parametrize("block_pairs", [1, 13, 1 << 20])  # one row a block, a few rows a block, one block
@pytest.mark.parametrize("kind", ["random", "tied", "constant"])
def test_select_contacts_matches_plain_reference(monkeypatch, block_pairs: int, kind: str) -> None:
    # select_contacts reads the triangle in blocks of rows and prunes to the running top; the result must be what
    # sorting every pair at once gives, ties at the cut included.
    monkeypatch.setattr(rr_module, "_BLOCK_PAIRS", block_pairs)
    rng = np.random.default_rng(7)
    options = [{}, {"top": 0}, {"top": 1}, {"top": 9}, {"top": 10_000}, {"threshold": 0.5}, {"threshold": 0.0},
               {"threshold": 1.0}, {"top": 4, "threshold": 0.3}, {"min_separation": 1, "top": 25},
               {"min_separation": 12}, {"min_separation": 30, "threshold": 0.2}]
    for length in (0, 1, 6, 7, 8, 23, 61):
        probs = rng.random((length, length)).astype(np.float32)
        if kind == "tied":
            probs = probs.round(1)  # many equal values, so the top-N cut falls inside a run of ties
        elif kind == "constant":
            probs = np.full((length, length), 0.5, dtype=np.float32)
        for kwargs in options:
            rows, cols, values = select_contacts(probs, **kwargs)
            expected = _reference_selection(probs, kwargs.get("top"), kwargs.get("min_separation", 6),
                                            kwargs.get("threshold"))
            got = list(zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True))
            assert got == expected, (length, kwargs)
            assert rows.dtype == cols.dtype == np.intp and values.dtype == np.float64


def test_select_contacts_rejects_nan_in_any_block(monkeypatch) -> None:
    monkeypatch.setattr(rr_module, "_BLOCK_PAIRS", 90)
    probs = _symmetric(30, seed=5)
    probs[22, 29] = np.nan  # in the last block of rows (L = 30, three rows a block)
    with pytest.raises(ValueError, match="NaN"):
        select_contacts(probs, top=3)
    probs[22, 29] = 0.0
    probs[29, 22] = probs[25, 29] = np.inf  # lower triangle and j - i < 6: never read
    assert len(select_contacts(probs, top=3)[0]) == 3


def test_output_is_deterministic_and_target_sanitised() -> None:
    probs = _symmetric(25, seed=4)
    first = format_rr("a b\tc\x01", "M" * 25, probs, method_lines=["m"], remarks=["top=25"])
    second = format_rr("a b\tc\x01", "M" * 25, probs.copy(), method_lines=["m"], remarks=["top=25"])
    assert first == second
    doc = read_rr_document(io.StringIO(first))
    assert doc.target == rr_target("a b\tc\x01") == "a_b_c_"
    assert doc.methods == ["m"] and doc.remarks == ["top=25"] and doc.author == "protrnn"


def test_writer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        format_rr("x", "AAAA", np.zeros((3, 3)), method_lines=["m"])
    with pytest.raises(ValueError, match="NaN"):
        format_rr("x", "A" * 10, np.full((10, 10), np.nan), method_lines=["m"])
    with pytest.raises(ValueError, match="METHOD"):
        format_rr("x", "A" * 10, np.zeros((10, 10)), method_lines=[])


GOOD = ["PFRMAT RR", "TARGET t", "METHOD m", "MODEL  1", "ACDEFGHIKL", "1 7 0 8 0.9", "2 9 0 8 0.5", "END"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["PFRMAT TS"] + GOOD[1:], "line 1: expected 'PFRMAT RR'"),
        (GOOD[:-1], "missing END"),
        (GOOD[:5] + ["7 1 0 8 0.9"] + GOOD[6:], "line 6: residue indices"),
        (GOOD[:5] + ["1 7 0 8 1.5"] + GOOD[6:], "line 6: probability 1.5 outside"),
        (GOOD[:6] + ["2 9 0 8 0.95"] + GOOD[7:], "line 7: contacts are not sorted"),
        (GOOD[:6] + ["1 7 0 8 0.5"] + GOOD[7:], "line 7: pair 1 7 listed twice"),
        (GOOD[:5] + ["1 x 0 8 0.9"] + GOOD[6:], "line 6: residue index 'x' is not an integer"),
        (GOOD[:5] + ["1 70 0 8 0.9"] + GOOD[6:], "beyond the sequence length 10"),
        (GOOD[:5] + ["1 7 0.9"] + GOOD[6:] + ["2 9 0 8 0.1"], "content after END"),
        (GOOD[:3] + ["MODEL  2"] + GOOD[4:], "single-model"),
        (GOOD[:2] + ["BOGUS x"] + GOOD[3:], "line 3: unexpected header line"),
        (GOOD[:6] + ["ACD"] + GOOD[6:], "line 7: sequence line after contact lines"),
        (GOOD[:5] + ["1 7 8 0 0.9"] + GOOD[6:], "d1 < d2"),
        ([], "empty RR file"),
    ],
)
def test_parser_errors_name_the_line(tmp_path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.rr"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message) as info:
        read_rr(path)
    assert str(path) in str(info.value)


def test_parser_accepts_short_form_and_blank_lines() -> None:
    text = "PFRMAT RR\r\nTARGET t\r\n\r\nMODEL 1\r\nACDEFGHIKL\r\n1 7 0.9\r\n2 9 0 8 0.5\r\nEND\r\n"
    target, sequence, contacts = read_rr(io.StringIO(text))
    assert (target, sequence) == ("t", "ACDEFGHIKL")
    assert contacts[0] == (1, 7, 0.0, 8.0, 0.9)
    assert contacts[1].p == 0.5


def test_non_ascii_record_id_is_written_as_ascii_target(tmp_path) -> None:
    # FASTA headers are read as UTF-8; the RR file is ASCII, so a non-ASCII ID must not crash the writer.
    path = tmp_path / "x.rr"
    write_rr(path, "prot\u00e9ine", "A" * 10, np.zeros((10, 10)), method_lines=["m"])
    assert read_rr(path).target == rr_target("prot\u00e9ine") == "prot_ine"


def test_missing_rr_file_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_rr(tmp_path / "absent.rr")


@pytest.mark.parametrize("sequence", ["A" * 50 + "END", "END", "C" * 100 + "END"])
@pytest.mark.parametrize("threshold", [None, 0.99])
def test_a_sequence_line_reading_end_round_trips(sequence: str, threshold: float | None) -> None:
    # E, N and D are residues: a sequence of length 3 mod 50 wraps to a last line "END", and with a threshold above
    # every probability no contact line stands between it and the file's own END.
    length = len(sequence)
    probs = np.fromfunction(lambda i, j: (i + j) / (2 * length), (length, length))  # all below 0.99
    text = format_rr("t", sequence, probs, method_lines=["m"], threshold=threshold)
    lines = text.splitlines()
    assert lines[lines.index("MODEL  1") + 1 + (length - 1) // 50] == "END"  # the last sequence line reads END
    parsed = read_rr(io.StringIO(text))
    assert parsed.sequence == sequence
    # the default keeps min(L, pairs at separation d in the range) per range: sum of (L - d) over its d
    per_range = [sum(length - d for d in range(low, min(high, length - 1) + 1)) for low, high in _windows(6)]
    assert len(parsed.contacts) == (0 if threshold is not None else sum(min(length, n) for n in per_range))
