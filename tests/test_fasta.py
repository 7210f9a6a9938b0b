"""FASTA reading: gzip, CRLF, cleaning, and one-line errors (or skip-and-report) for every bad case."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from protrnn.data.fasta import FastaRecord, iter_fasta, read_fasta
from protrnn.errors import InputError


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_multi_record_crlf_lowercase_gaps_and_stop_come_back_as_written(tmp_path: Path) -> None:
    """Records carry the sequence as written (lines joined, line endings dropped); cleaning is the predictor's."""
    path = _write(tmp_path / "a.fasta", ">p1 first protein\r\nmkv-LA\r\nGG*\r\n\r\n>p2\r\nAC.D\r\n>p3\nuO\n")
    records = read_fasta(path)
    assert records == [FastaRecord("p1", "mkv-LAGG*", "first protein"), FastaRecord("p2", "AC.D", ""),
                       FastaRecord("p3", "uO", "")]


def test_gzip_is_detected_by_content_not_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path / "seqs.txt", gzip.compress(b">x\nACDE\n>y\nKK\n"))
    assert [(r.id, r.sequence) for r in read_fasta(path)] == [("x", "ACDE"), ("y", "KK")]


def test_streaming_yields_before_reading_the_whole_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.fa", ">a\nAC\n>b\nA1C\n")
    stream = iter_fasta(path)
    assert next(stream).id == "a", "the first record arrives before the bad second one is parsed"
    with pytest.raises(InputError):
        next(stream)


def test_real_fasta_from_shared_data(shared_data: Path) -> None:
    records = read_fasta(shared_data / "db55_dips_equidock" / "db55_dips_equidock_chains.fasta.gz")
    assert len(records) == 1216
    assert all(r.sequence and r.sequence.isupper() for r in records)
    assert len({r.id for r in records}) == len(records)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (">a\nACD\n>a\nKK\n", r"record 'a'.*duplicate record ID \(header at line 3; first seen as record 1, line 1\)"),
        (">x\nK\n\n>a\nACD\n>a\nKK\n", r"record 'a'.*header at line 6; first seen as record 2, line 4\)"),
        (">a\n>b\nKK\n", r"record 'a'.*empty sequence \(header at line 1\)"),
        (">z\nK\n>a\n-.-*\n", r"record 'a'.*empty sequence \(header at line 3\)"),  # nothing left once cleaned
        (">a\nAC\n>b\nac-dj7k\n", r"record 'b', position 6: invalid residue letter '7'"),  # position as written
        (">a\nAC\n>b\nACDJ7K\n", r"record 'b', position 5: invalid residue letter '7'"),
        (">a\nAC*DE\n", r"record 'a', position 3: invalid residue letter '\*'"),
    ],
)
def test_bad_records_raise_one_line_errors(tmp_path: Path, text: str, pattern: str) -> None:
    path = _write(tmp_path / "bad.fasta", text)
    with pytest.raises(InputError, match=pattern) as info:
        read_fasta(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_control_characters_in_an_id_are_refused_or_skipped(tmp_path: Path) -> None:
    # a terminal escape or a NUL in an ID would land raw in summary tables; it is refused like a bad letter
    # (a NUL within the first 4 KiB makes the whole file "binary"; this one lies beyond)
    path = _write(tmp_path / "ctl.fasta",
                  ">ok\nAC\n>b\x1b[31mad\nKK\n>pad\n" + "A" * 5000 + "\n>n\x00ul\nLL\n>z\x7f\nWW\n")
    with pytest.raises(InputError, match=r"record 'b\\x1b\[31mad': record ID has a control character \(U\+001B\) "
                                         r"at position 2 of the header") as info:
        read_fasta(path)
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)
    skipped: list[tuple[str, str]] = []
    assert [r.id for r in read_fasta(path, skip_invalid=True, skipped=skipped)] == ["ok", "pad"]
    assert [s[0] for s in skipped] == ["b\x1b[31mad", "n\x00ul", "z\x7f"]  # as read; tables escape them
    assert [s[1][-36:] for s in skipped] == ["(U+001B) at position 2 of the header",
                                            "(U+0000) at position 2 of the header",
                                            "(U+007F) at position 2 of the header"]


def test_skip_invalid_reports_every_skipped_record(tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.fasta", ">ok1\nAC\n>dup\nKK\n>empty\n>dup\nLL\n>bad\nA9\n>ok2\nWW\n")
    skipped: list[tuple[str, str]] = []
    records = read_fasta(path, skip_invalid=True, skipped=skipped)
    assert [r.id for r in records] == ["ok1", "dup", "ok2"]
    assert [s[0] for s in skipped] == ["empty", "dup", "bad"]
    assert skipped[2][1] == "invalid residue letter '9' at position 2"


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "no FASTA records"),
        (b"\n\n", "no FASTA records"),
        (b"HEADER    TRANSFERASE\nATOM      1  N   MET A   1\n", "not a FASTA file: first line 'HEADER"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        (b">a\nAC\xff\xfeDE\n", r"record 'a', position 3: invalid residue letter \(byte 0xff, not UTF-8\)"),
        (gzip.compress(b">a\nACDEFGHIKL\n" * 200, mtime=0)[:-20], "truncated or corrupt gzip"),
    ],
)
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = _write(tmp_path / "input.fa", content)
    with pytest.raises(InputError, match=pattern) as info:
        read_fasta(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_fasta(tmp_path / "nope.fasta")
    with pytest.raises(InputError, match="is a directory"):
        read_fasta(tmp_path)


def test_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    """Windows editors start UTF-8 files with a BOM; it is not part of the first header (regression)."""
    plain = _write(tmp_path / "bom.fa", "\ufeff>a\r\nACD\r\n>b\r\nKK\r\n")
    zipped = _write(tmp_path / "bom.fa.gz", gzip.compress("\ufeff\n>a\nACD\n".encode()))
    assert [(r.id, r.sequence) for r in read_fasta(plain)] == [("a", "ACD"), ("b", "KK")]
    assert [(r.id, r.sequence) for r in read_fasta(zipped)] == [("a", "ACD")]


def test_non_ascii_letter_names_record_and_position(tmp_path: Path) -> None:
    """A valid UTF-8 but non-ASCII letter is an invalid residue, not 'binary content' (regression)."""
    path = _write(tmp_path / "u.fa", ">ok\nAC\n>bad\nACD\u00e9K\n")
    with pytest.raises(InputError, match=r"u\.fa, record 'bad', position 4: invalid residue letter 'é'"):
        read_fasta(path)
    skipped: list[tuple[str, str]] = []
    assert [r.id for r in iter_fasta(path, skip_invalid=True, skipped=skipped)] == ["ok"]
    assert skipped == [("bad", "invalid residue letter 'é' at position 4")]


def test_a_header_behind_a_byte_order_mark_or_indent_starts_its_own_record(tmp_path: Path) -> None:
    """`cat` of files saved with a BOM leaves U+FEFF at the start of a header mid-file, and an indented '>' is a
    header too: each starts its own record (it was merged into the record before, which then failed, or with
    --skip-invalid vanished together with it)."""
    path = _write(tmp_path / "cat.fa", ">a\nMKV\n\ufeff>b desc\r\nACDE\n  >c\nGG\n\t\ufeff\ufeff>d\n\ufeffWW\n")
    assert read_fasta(path) == [FastaRecord("a", "MKV"), FastaRecord("b", "ACDE", "desc"), FastaRecord("c", "GG"),
                                FastaRecord("d", "WW")]
    # an invalid record beside such a header: it alone is skipped, the record after it is kept
    bad = _write(tmp_path / "bad.fa", ">a\nMK7V\n\ufeff>b\nACDE\n")
    skipped: list[tuple[str, str]] = []
    assert read_fasta(bad, skip_invalid=True, skipped=skipped) == [FastaRecord("b", "ACDE")]
    assert skipped == [("a", "invalid residue letter '7' at position 3")]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (">x\nMKTAYQ>r0\nACDE\n", r"line 2, column 7: '>' after 'Q'"),  # a file without its final newline, cat'ed
        (">x\nMKT\n\u200b>r0\nACDE\n", r"line 3, column 2: '>' after \\u200b"),  # an invisible character first
        (b">x\nMKT\n\xff>r0\nACDE\n", r"line 3, column 2: '>' after \(byte 0xff, not UTF-8\)"),
    ],
)
def test_a_greater_than_sign_inside_a_sequence_line_is_a_file_error(tmp_path: Path, text: str | bytes,
                                                                    where: str) -> None:
    """Which record the text after such a '>' belongs to cannot be told: one line naming the line, also with
    skip_invalid (which would otherwise drop both records, the second one unlisted)."""
    path = _write(tmp_path / "joined.fa", text)
    for skip in (False, True):
        with pytest.raises(InputError, match=rf"joined\.fa: {where} \(a header must start its line") as info:
            read_fasta(path, skip_invalid=skip, skipped=[])
        assert "\n" not in str(info.value)


def test_bytes_that_are_not_utf8_are_invalid_letters_of_their_record(tmp_path: Path) -> None:
    """A Latin-1 byte is an invalid letter of its record at its position (skippable), not the end of the whole file;
    in an ID it invalidates the record, in a description it becomes U+FFFD."""
    path = _write(tmp_path / "latin1.fa", b">ok1\nMKV\n>bad\nACD\xe9K\n>ok2 caf\xe9 au lait\nWW\n>b\xe9d\nGG\n>ok3\nHH\n")
    with pytest.raises(InputError, match=r"latin1\.fa, record 'bad', position 4: invalid residue letter "
                                         r"\(byte 0xe9, not UTF-8\)$"):
        read_fasta(path)
    skipped: list[tuple[str, str]] = []
    assert read_fasta(path, skip_invalid=True, skipped=skipped) == [
        FastaRecord("ok1", "MKV"), FastaRecord("ok2", "WW", "caf\ufffd au lait"), FastaRecord("ok3", "HH")]
    assert skipped == [("bad", "invalid residue letter (byte 0xe9, not UTF-8) at position 4"),
                       ("b\udce9d", "record ID has a byte that is not UTF-8 (0xe9) at position 2 of the header")]
    # gzip too, and beyond the first block of text
    zipped = _write(tmp_path / "latin1.fa.gz", gzip.compress(b">pad\n" + b"A" * 70_000 + b"\n>bad\nAC\xffD\n"))
    with pytest.raises(InputError, match=r"record 'bad', position 3: invalid residue letter \(byte 0xff"):
        read_fasta(zipped)
