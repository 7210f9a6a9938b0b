"""Property-based tests (hypothesis) of the parsers and writers that face users: the FASTA reader, the RR writer and
reader, and the safe file names derived from record IDs. Each property states what must hold for every input of a
kind, and the expected value is worked out independently of the code under test."""

from __future__ import annotations

import gzip
import re
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protrnn.data.fasta import read_fasta
from protrnn.errors import InputError
from protrnn.rr import read_rr_document, write_rr
from protrnn.utils.io import SafeNamer, safe_name

#: No deadline (a shared CI core can stall any single example) and no example database written into the checkout.
PROPERTY = settings(deadline=None, database=None, max_examples=150,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

STANDARD = "ACDEFGHIKLMNPQRSTVWY"
#: Text that is a single word in a FASTA header: no whitespace (Unicode's included), no control or format characters.
WORD = st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=20)


def _scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="protrnn-property-")


# -------------------------------------------------------------------------------------------------------------- FASTA
@st.composite
def fasta_records(draw: st.DrawFn, min_size: int = 1) -> list[tuple[str, str, str]]:
    """(id, sequence, description) records with unique IDs and upper-case 20-letter sequences."""
    ids = draw(st.lists(WORD, min_size=min_size, max_size=6, unique=True))
    records = []
    for record_id in ids:
        sequence = draw(st.text(st.sampled_from(STANDARD), min_size=1, max_size=300))
        description = " ".join(draw(st.lists(WORD, max_size=3)))
        records.append((record_id, sequence, description))
    return records


@st.composite
def fasta_layouts(draw: st.DrawFn) -> dict[str, object]:
    """How a file is laid out: line width, line ending, blank lines, gzip."""
    return {"width": draw(st.integers(1, 80)), "newline": draw(st.sampled_from(["\n", "\r\n", "\r"])),
            "blank_lines": draw(st.booleans()), "gzip": draw(st.booleans())}


def _write_fasta(path: Path, records: list[tuple[str, str, str]], layout: dict[str, object]) -> Path:
    width, newline = int(layout["width"]), str(layout["newline"])
    lines = [""] if layout["blank_lines"] else []
    for record_id, sequence, description in records:
        lines.append(f">{record_id} {description}".rstrip())
        lines += [sequence[k:k + width] for k in range(0, len(sequence), width)]
        if layout["blank_lines"]:
            lines.append("")
    data = (newline.join(lines) + newline).encode("utf-8")
    path.write_bytes(gzip.compress(data) if layout["gzip"] else data)
    return path


@PROPERTY
@given(records=fasta_records(), layout=fasta_layouts())
def test_fasta_records_round_trip_through_a_written_file(records: list[tuple[str, str, str]],
                                                         layout: dict[str, object]) -> None:
    """IDs, sequences and descriptions come back in order, whatever the line width, line ending, blank lines or
    compression; valid upper-case sequences read the same whether the reader returns them as written or cleaned."""
    with _scratch() as tmp:
        path = _write_fasta(Path(tmp) / "records.fasta", records, layout)
        read = [(r.id, r.sequence, r.description) for r in read_fasta(path)]
    assert read == records


#: Characters no FASTA sequence may hold: digits, punctuation other than the gaps '-' '.' and the stop '*', and
#: non-ASCII letters (every ASCII letter is a residue, an ambiguity code or a parent-mapped residue). '>' and ';'
#: are left out: at the start of a line they are a header or a comment, not a letter of the sequence.
INVALID_LETTERS = st.one_of(
    st.sampled_from([c for c in string.digits + string.punctuation if c not in "-.*>;"]),
    st.characters(whitelist_categories=("Lu", "Ll", "Lo"), min_codepoint=0x80),
)


@PROPERTY
@given(records=fasta_records(min_size=1), data=st.data())
def test_an_invalid_letter_is_rejected_naming_its_record_and_position(records: list[tuple[str, str, str]],
                                                                      data: st.DataObject) -> None:
    """One bad letter anywhere in any record: InputError naming that record and the letter's 1-based position in
    the record's sequence as written (lines joined); with skip_invalid the other records still come back."""
    index = data.draw(st.integers(0, len(records) - 1), label="bad record")
    record_id, sequence, description = records[index]
    position = data.draw(st.integers(1, len(sequence) + 1), label="1-based position of the bad letter")
    letter = data.draw(INVALID_LETTERS, label="bad letter")
    bad = sequence[:position - 1] + letter + sequence[position - 1:]
    records = [*records[:index], (record_id, bad, description), *records[index + 1:]]
    layout = data.draw(fasta_layouts(), label="layout")
    with _scratch() as tmp:
        path = _write_fasta(Path(tmp) / "records.fasta", records, layout)
        with pytest.raises(InputError) as info:
            read_fasta(path)
        skipped: list[tuple[str, str]] = []
        kept = read_fasta(path, skip_invalid=True, skipped=skipped)
    assert (info.value.record, info.value.position) == (record_id, position)
    assert f"record {record_id!r}" in str(info.value) and f"position {position}" in str(info.value)
    assert "\n" not in str(info.value)
    assert [(r.id, r.sequence) for r in kept] == [(i, s) for i, s, _ in records if i != record_id]
    assert [name for name, _ in skipped] == [record_id] and skipped[0][1].endswith(f"at position {position}")


# ----------------------------------------------------------------------------------------------------------------- RR
@st.composite
def contact_maps(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """A cleaned sequence and an L x L float32 probability matrix: uniform values, or values on a few levels (many
    exact ties) including 0, 1 and values that round up at the fourth decimal."""
    length = draw(st.integers(1, 60))
    sequence = draw(st.text(st.sampled_from(STANDARD + "X"), min_size=length, max_size=length))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    levels = draw(st.none() | st.lists(st.floats(0.0, 1.0, width=32) | st.sampled_from([0.0, 0.99995, 1.0]),
                                       min_size=1, max_size=4), label="levels")
    if levels is None:
        probs = rng.random((length, length), dtype=np.float32)
    else:
        probs = np.array(levels, dtype=np.float32)[rng.integers(0, len(levels), size=(length, length))]
    return sequence, probs


#: METHOD/REMARK text as the predictor writes it: printable ASCII on one line.
HEADER_TEXT = st.text(st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " "), max_size=60)


def _expected_contacts(probs: np.ndarray, top: int | None, threshold: float | None,
                       min_separation: int) -> list[tuple[int, int, float, float, float]]:
    """The RR contact lines the module docstring promises, by brute force: pairs i < j with j - i >= min_separation
    and p >= threshold, ordered by decreasing p then (i, j), the first ``top``; with neither option, the first L of
    each separation range (6-11, 12-23, >= 24, and min_separation-5 when it is below 6) cut at min_separation,
    ranked together; 1-based, d1 = 0, d2 = 8 and p printed with four decimals."""
    length = probs.shape[0]
    pairs = [(i, j, float(probs[i, j])) for i in range(length) for j in range(i + min_separation, length)]
    if threshold is not None:
        pairs = [pair for pair in pairs if pair[2] >= threshold]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    if top is None and threshold is None:
        bounds = [(6, 11), (12, 23), (24, length)] + ([(min_separation, 5)] if min_separation < 6 else [])
        chosen = []
        for low, high in bounds:
            chosen += [pair for pair in pairs if max(low, min_separation) <= pair[1] - pair[0] <= high][:length]
        pairs = sorted(chosen, key=lambda pair: (-pair[2], pair[0], pair[1]))
    elif top is not None:
        pairs = pairs[:top]
    return [(i + 1, j + 1, 0.0, 8.0, float(f"{p:.4f}")) for i, j, p in pairs]


@PROPERTY
@given(chain=contact_maps(), target=st.text(max_size=30), methods=st.lists(HEADER_TEXT, min_size=1, max_size=3),
       remarks=st.lists(HEADER_TEXT, max_size=3), top=st.none() | st.integers(0, 80),
       threshold=st.none() | st.floats(0.0, 1.0), min_separation=st.integers(1, 12))
def test_rr_files_read_back_as_written(chain: tuple[str, np.ndarray], target: str, methods: list[str],
                                       remarks: list[str], top: int | None, threshold: float | None,
                                       min_separation: int) -> None:
    sequence, probs = chain
    with _scratch() as tmp:
        path = Path(tmp) / "chain.rr"
        write_rr(path, target, sequence, probs, method_lines=methods, remarks=remarks, top=top,
                 threshold=threshold, min_separation=min_separation)
        document = read_rr_document(path)
    assert document.sequence == sequence
    assert document.author == "protrnn"
    assert document.methods == [text.strip() for text in methods]
    assert document.remarks == [text.strip() for text in remarks]
    assert [tuple(contact) for contact in document.contacts] == _expected_contacts(probs, top, threshold,
                                                                                 min_separation)
    # TARGET is one space-free printable ASCII token: the record ID with every other character replaced by '_'.
    assert len(document.target) == max(1, len(target))
    for written, given_char in zip(document.target, target, strict=False):
        safe = given_char.isascii() and given_char.isprintable() and not given_char.isspace()
        assert written == (given_char if safe else "_")


# -------------------------------------------------------------------------------------------------------- safe names
SAFE_STEM = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")
#: Record IDs as found in the wild and as an attacker would write them: any text, path-like text, dots.
RECORD_IDS = st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "B", " ", "~", "_", "-", "é", "\x00"]), max_size=12).map("".join),
)


@PROPERTY
@given(record_id=RECORD_IDS)
def test_safe_name_is_always_a_plain_file_name(record_id: str) -> None:
    """One path component that can be created in any folder: allowed characters only, no separator, no leading dot
    (so neither '.', '..' nor a hidden file), at most 80 characters, and it stays inside the folder it is joined to."""
    name = safe_name(record_id)
    assert SAFE_STEM.fullmatch(name), name
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert 1 <= len(name) <= 80
    with _scratch() as tmp:
        target = Path(tmp) / f"{name}.rr"
        assert target.resolve().parent == Path(tmp).resolve()
        target.write_text("x")  # a valid file name on this file system
        assert [p.name for p in Path(tmp).iterdir()] == [f"{name}.rr"]


#: Lists of distinct IDs rich in collisions: IDs that differ only in case, or only in the characters replaced by '_'.
COLLIDING_IDS = st.lists(RECORD_IDS, max_size=12).map(
    lambda ids: list(dict.fromkeys(ids + [i.swapcase() for i in ids] + [i.replace("_", "/") for i in ids])))


@PROPERTY
@given(record_ids=st.lists(RECORD_IDS, unique=True, max_size=25) | COLLIDING_IDS)
def test_safe_namer_gives_distinct_inputs_distinct_names_in_a_stable_way(record_ids: list[str]) -> None:
    """Within one SafeNamer, distinct IDs never share a file name, not even on a case-insensitive file system; the
    names are safe; a fresh namer given the same IDs in the same order gives the same names."""
    namer = SafeNamer()
    names = [namer(record_id) for record_id in record_ids]
    assert len({name.lower() for name in names}) == len(names)
    for name in names:
        stem, _, count = name.partition("~")
        assert SAFE_STEM.fullmatch(stem) and (count == "" or (count.isdigit() and int(count) >= 2)), name
    again = SafeNamer()
    assert [again(record_id) for record_id in record_ids] == names
