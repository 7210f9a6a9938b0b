"""Atomic writes and safe file names: the guarantees every writer in protrnn relies on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protrnn.utils.io import (
    SafeNamer,
    atomic_path,
    atomic_write,
    control_character_position,
    escape_control_characters,
    safe_name,
    table_cell,
    unique_safe_names,
)


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("partial")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "no temporary file is left behind"
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"


def test_atomic_path_keeps_suffix_for_writers_that_need_it(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "arrays.npz"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == target.parent
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"


@pytest.mark.parametrize(
    "record_id",
    ["../../x", "/etc/passwd", "a/b\\c", "..", ".hidden", "tab\there", "nul\x00byte", "$(rm -rf ~)", "", "é" * 5],
)
def test_safe_name_cannot_escape_or_hide(record_id: str, tmp_path: Path) -> None:
    name = safe_name(record_id)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(c.isalnum() or c in "._+-" for c in name)
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_long_names_are_truncated_with_a_distinguishing_hash() -> None:
    a, b = safe_name("A" * 200 + "1"), safe_name("A" * 200 + "2")
    assert len(a) <= 80 and a != b
    # an ID read from bytes that are not UTF-8 holds surrogate escapes: it still gets a name, and a distinct one
    # (predict --skip-invalid used to crash here, after predicting every record, with UnicodeEncodeError)
    escaped = [b"A" * 100 + tail for tail in (b"\xe9", b"\xea")]
    c, d = (safe_name(raw.decode("utf-8", "surrogateescape")) for raw in escaped)
    assert len(c) <= 80 and c != d and c.startswith("A" * 71)


def test_collisions_resolved_deterministically_in_input_order() -> None:
    ids = ["a/b", "a_b", "A_B", "c"]
    assert unique_safe_names(ids) == ["a_b", "a_b~2", "A_B~3", "c"]
    namer = SafeNamer()
    assert [namer(i) for i in ids] == unique_safe_names(ids)


def test_pipeline_names_are_kept_by_a_second_namer() -> None:
    """The pipeline names a whole FASTA file's records, splits them into shards and predicts each shard apart, where
    predict names them again. With '~' names a shard renamed ``a_b~2`` to ``a_b_2``, the name of another record in
    another shard: gathered outputs collided. Names with ``_`` are safe names, so the second namer keeps them."""
    ids = ["a/b", "a_b", "A_B", "a_b_2", "c", "x" * 100 + "1", "x" * 100 + "1", "-c", "CON"]
    namer = SafeNamer(separator="_")
    names = [namer(i) for i in ids]
    assert names[:5] == ["a_b", "a_b_2", "A_B_3", "a_b_2_2", "c"]
    assert len({name.lower() for name in names}) == len(ids)
    assert all(safe_name(name) == name and len(name) <= 80 for name in names)
    for shard in (names[0::2], names[1::2]):
        again = SafeNamer()
        assert [again(name) for name in shard] == shard


def test_atomic_outputs_get_ordinary_file_mode(tmp_path: Path) -> None:
    """Results must be readable by collaborators like any file ``open()`` creates, not 0600 like a temp file."""
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as handle:
            handle.write("x")
        with atomic_path(tmp_path / "b.npz") as path:
            path.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.npz").stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM needs Linux /proc")
def test_peak_rss_follows_a_touched_allocation_and_resets() -> None:
    import mmap

    from protrnn.utils.resources import peak_rss_mib

    before = peak_rss_mib(reset=True)
    # Fresh anonymous pages straight from the kernel: a malloc'd block could reuse heap pages that are already resident
    # (CI runs with MALLOC_MMAP_MAX_=0 and a huge trim threshold, so freed heap stays in RSS) and never raise the peak.
    block = mmap.mmap(-1, 256 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1  # touch every page: 256 MiB resident
    grown = peak_rss_mib()
    block.close()
    after_reset = peak_rss_mib(reset=True)
    assert grown - before >= 200
    assert grown - after_reset >= 200  # the freed block no longer counts once the peak is reset


def test_read_json_document_names_file_position_format_and_version(tmp_path: Path) -> None:
    from protrnn.errors import InputError, read_json_document

    good = tmp_path / "good.json"
    good.write_text('{"format": "protrnn-x", "format_version": 2, "value": 3}')
    assert read_json_document(good, "protrnn-x", max_version=2)["value"] == 3
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "protrnn-x",\n "value": }')
    with pytest.raises(InputError, match=r"broken\.json.*not a thing: not valid JSON") as err:
        read_json_document(broken, "protrnn-x", what="thing")
    assert "at line 2, column 11)" in str(err.value)  # the "}" that stands where a value must: line 2, column 11
    with pytest.raises(InputError, match=r"format 'protrnn-y', expected 'protrnn-x'"):
        read_json_document(_write(tmp_path / "other.json", '{"format": "protrnn-y"}'), "protrnn-x")
    with pytest.raises(InputError, match=r"format 'list'"):
        read_json_document(_write(tmp_path / "list.json", "[1, 2]"), "protrnn-x")
    with pytest.raises(InputError, match=r"unsupported format_version 2 .*1\.\.1"):
        read_json_document(good, "protrnn-x", max_version=1)
    with pytest.raises(InputError, match=r"unsupported format_version True"):
        read_json_document(_write(tmp_path / "bool.json", '{"format": "protrnn-x", "format_version": true}'),
                           "protrnn-x", max_version=1)
    with pytest.raises(InputError, match=r"missing\.json.*file not found"):
        read_json_document(tmp_path / "missing.json", "protrnn-x")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_json_safe_gives_strict_json_types() -> None:
    import json
    import math

    import numpy as np

    from protrnn.utils.io import json_safe

    value = {1: (np.float32(0.5), math.nan, -math.inf), "a": np.arange(3), "p": Path("x/y"), "b": np.bool_(True),
             "i": np.int64(7), "o": object}
    out = json_safe(value)
    assert out == {"1": [0.5, None, None], "a": [0, 1, 2], "p": "x/y", "b": True, "i": 7, "o": object}
    assert type(out["i"]) is int and type(out["b"]) is bool and type(out["1"][0]) is float
    assert json_safe({"o": object}, stringify=True) == {"o": str(object)}
    json.dumps(json_safe({k: v for k, v in value.items() if k != "o"}), allow_nan=False)  # strict JSON


def test_read_tsv_skips_comments_above_the_header_and_blank_lines(tmp_path: Path) -> None:
    from protrnn.utils.io import read_tsv

    table = tmp_path / "t.tsv"
    table.write_text("# written by a test\n#\nchain_id\ttest_set\n\n1abc_A\tts50\n#7xyz_B\tpsicov150\n2xyz_B\tts50\n")
    # below the header a leading '#' is part of an ID (FASTA and structure IDs may start with one)
    assert read_tsv(table) == [{"chain_id": "1abc_A", "test_set": "ts50"}, {"chain_id": "#7xyz_B", "test_set": "psicov150"},
                               {"chain_id": "2xyz_B", "test_set": "ts50"}]
    quoted = tmp_path / "q.tsv"  # cells are written unquoted, so a leading quote is part of the value
    quoted.write_text('path\tstatus\n"odd.pdb\tkept\nb.pdb\tskipped\n')
    assert read_tsv(quoted) == [{"path": '"odd.pdb', "status": "kept"}, {"path": "b.pdb", "status": "skipped"}]
    (tmp_path / "empty.tsv").write_text("")
    assert read_tsv(tmp_path / "empty.tsv") == []
    with pytest.raises(FileNotFoundError):
        read_tsv(tmp_path / "missing.tsv")


def test_read_tsv_table_keeps_the_columns_of_a_table_without_rows(tmp_path: Path) -> None:
    from protrnn.utils.io import read_tsv_table

    (tmp_path / "header.tsv").write_text("id\tfile\tstatus\n")
    assert read_tsv_table(tmp_path / "header.tsv") == (["id", "file", "status"], [])
    (tmp_path / "empty.tsv").write_text("")
    assert read_tsv_table(tmp_path / "empty.tsv") == ([], [])


def test_a_tsv_cell_over_the_csv_field_limit_names_the_file_s_line(tmp_path: Path) -> None:
    """A cell over the csv module's 131,072-byte limit was a bare _csv.Error traceback: read_tsv names the line as
    the file numbers it (comment and blank lines above the header included) and ``reading`` makes it one line
    naming the file, for a cell in the header as for one in a row."""
    import csv

    from protrnn.errors import InputError, reading
    from protrnn.utils.io import read_tsv

    table = tmp_path / "t.tsv"
    table.write_text("# comment\n\nid\tcluster\na\tA\n\nb\t" + "x" * 140_000 + "\n")
    with pytest.raises(csv.Error, match=r"^line 6: field larger than field limit \(131072\)$"):
        read_tsv(table)
    with pytest.raises(InputError, match=r"t\.tsv: not a readable table \(line 6: field larger than field limit"), \
            reading(table):
        read_tsv(table)
    table.write_text("#\n" + "i" * 140_000 + "\tcluster\n")
    with pytest.raises(InputError, match=r"t\.tsv: not a readable table \(line 2: field larger"), reading(table):
        read_tsv(table)


def test_control_characters_are_found_and_escaped() -> None:
    assert control_character_position("plain text, é and ü") is None
    assert control_character_position("ab\x1bc") == 3
    assert control_character_position("\x7f") == 1  # DEL
    assert control_character_position("é\x85") == 2  # C1: NEXT LINE
    assert escape_control_characters("a\tb\x00c\x9fé") == "a\\x09b\\x00c\\x9fé"
    assert escape_control_characters("no escapes: \\x41 stays") == "no escapes: \\x41 stays"


@pytest.mark.parametrize(
    ("record_id", "stem"),
    [("CON", "_CON"), ("nul", "_nul"), ("Aux", "_Aux"), ("prn", "_prn"), ("COM1", "_COM1"), ("lpt9", "_lpt9"),
     ("con.txt", "_con.txt"), ("NUL.tar.gz", "_NUL.tar.gz"), ("con ", "_con"),  # trailing '_' is stripped first
     ("-rf", "rf"), ("--help", "help"), ("_-x", "x"), ("-.-x", "x"),
     # not reserved: a longer name, a reserved word later in the name, COM10
     ("CONSOLE", "CONSOLE"), ("my.con", "my.con"), ("COM10", "COM10"), ("a-b", "a-b")],
)
def test_safe_name_avoids_windows_device_names_and_leading_dashes(record_id: str, stem: str) -> None:
    """Windows opens the device for CON, NUL, COM1 ... whatever the extension (CON.rr too); a leading '-' makes a
    file name read as a command option (it goes, as leading dots and underscores do)."""
    assert safe_name(record_id) == stem
    assert safe_name(stem) == stem  # a fixed point: the pipeline's shards name records by safe name, predict again


def test_format_characters_are_escaped_like_control_characters() -> None:
    """A bidi override (U+202E) reorders what follows it on screen; zero-width and other format characters (Unicode
    category Cf), lone surrogates and U+2028/U+2029 hide or break a cell: each is written as its Python escape."""
    assert escape_control_characters("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert escape_control_characters("a\u200bb\ufeffc\u00add") == "a\\u200bb\\ufeffc\\xadd"  # U+00AD soft hyphen
    assert escape_control_characters("x\U000e0001y\udcffz") == "x\\U000e0001y\\udcffz"  # tag character, surrogate
    assert escape_control_characters("p\u2028q\u2029r\x1b") == "p\\u2028q\\u2029r\\x1b"
    assert escape_control_characters("é ü \u4e2d Ω") == "é ü \u4e2d Ω"  # printable letters stay
    assert table_cell("id\u202ex  y") == "id\\u202ex y"


def test_a_table_saved_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path: Path) -> None:
    """A TSV saved by a spreadsheet program starts with a UTF-8 byte-order mark: it is not part of the first column's
    name (``compare --clusters`` refused such a table: "no 'id' column")."""
    from protrnn.utils.io import read_tsv_table

    (tmp_path / "t.tsv").write_bytes("\ufeffid\tcluster\na\t1\n".encode())
    columns, rows = read_tsv_table(tmp_path / "t.tsv")
    assert columns == ["id", "cluster"] and rows == [{"id": "a", "cluster": "1"}]


@pytest.mark.parametrize(("text", "reason"), [
    ('{"n": 1' + "0" * 5000 + "}", "unreadable JSON (Exceeds the limit (4300 digits) for integer string conversion: "
                                   "value has 5001 digits)"),
    ("[" * 100_000 + "]" * 100_000, "unreadable JSON (arrays or objects nested too deeply)"),
    ('{"a": ' * 50_000 + "1" + "}" * 50_000, "unreadable JSON (arrays or objects nested too deeply)"),
], ids=["5001-digit-integer", "deep-arrays", "deep-objects"])
def test_json_python_cannot_hold_is_a_one_line_input_error(tmp_path: Path, text: str, reason: str) -> None:
    """An over-long integer (ValueError) and deep nesting (RecursionError) escaped as tracebacks."""
    from protrnn.errors import InputError, parse_json_bytes, read_json_document

    path = _write(tmp_path / "hostile.json", text)
    with pytest.raises(InputError) as info:
        read_json_document(path, "protrnn-x", what="thing")
    assert str(info.value) == f"{path}: not a thing: {reason}"
    with pytest.raises(InputError) as info:
        parse_json_bytes(text.encode(), "where", "list")
    assert str(info.value) == f"where: not a list: {reason}"
