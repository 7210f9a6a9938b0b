"""Small file-system helpers shared by every command that writes output: atomic writes (files and whole
directories) and safe names."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import re
import shutil
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

_Record = TypeVar("_Record")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
#: Control characters: C0, DEL and C1 (what :func:`control_character_position` finds).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Unicode categories escaped in tables and messages besides the control characters: format characters (bidi
#: overrides such as U+202E, zero-width characters, U+FEFF), lone surrogates (a byte that was not UTF-8, read with
#: ``errors="surrogateescape"``) and the line and paragraph separators U+2028 / U+2029.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Device names Windows reserves whatever the extension (``con.txt`` is the console too), compared upper-cased.
WINDOWS_RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{d}" for d in range(10)),
                                    *(f"LPT{d}" for d in range(10))})


def _umask() -> int:
    """The process umask (reading it means setting it, so it is put straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    """Mode a plain ``open()`` would give a new file (0o666 minus the umask); ``mkstemp`` alone gives 0o600."""
    return 0o666 & ~_umask()


def _temporary_beside(target: Path, suffix: str) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.chmod(tmp, _default_file_mode())
    return tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    A reader (or a rerun) therefore never sees a partial file: either the old content, or the complete new one.
    """
    target = Path(path)
    tmp = _temporary_beside(target, ".part")
    try:
        with open(tmp, mode, **kwargs) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def swapped_directory(target: Path) -> Iterator[Path]:
    """Build a directory beside ``target`` and swap it in only on success (a rerun replaces it whole)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide results from other users of a shared folder
    try:
        yield staging
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_path(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Like :func:`atomic_write` for writers that want a path (``np.savez``, ``safetensors``, matplotlib)."""

    @contextlib.contextmanager
    def _ctx() -> Iterator[Path]:
        target = Path(path)
        tmp = _temporary_beside(target, ".part" + target.suffix)
        try:
            yield Path(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    return _ctx()


def safe_name(record_id: str, max_length: int = 80) -> str:
    """A file-name stem derived from a record ID that cannot escape a directory or hide.

    Characters outside ``[A-Za-z0-9._+-]`` become ``_`` (so ``/``, ``\\``, spaces and control characters go),
    leading dots, underscores and dashes are removed (no ``..``, no hidden files, no name read as a command option),
    a name whose part before the first dot is a device name Windows reserves (``CON``, ``nul``, ``com1.txt``:
    :data:`WINDOWS_RESERVED_NAMES`) gets a ``_`` in front, and long names are truncated with a hash suffix. A safe
    name is its own safe name (the pipeline names shards' records with safe names, which predict names again).
    Callers that need uniqueness use :func:`unique_safe_names`.
    """
    stem = _UNSAFE.sub("_", record_id).lstrip("._-").rstrip("_") or "record"
    if stem.split(".", 1)[0].upper() in WINDOWS_RESERVED_NAMES:
        stem = "_" + stem
    if len(stem) > max_length:
        # surrogatepass: an ID read from undecodable bytes (surrogate escapes) still hashes, to a stable digest
        digest = hashlib.sha1(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        stem = f"{stem[: max_length - 9]}_{digest}"
    return stem


class SafeNamer:
    """Streaming :func:`safe_name` that keeps names unique: collisions (case-insensitive, for case-insensitive file
    systems) get ``~2``, ``~3`` … in the order IDs arrive, so the same input always yields the same names.

    ``separator="_"`` gives names that are safe names themselves (``a_b_2``, never an ``~``; truncated like any safe
    name), so a second namer given them keeps every one: the pipeline names the records of a whole FASTA file this way
    before splitting it into shards that are predicted (and so named again) apart."""

    def __init__(self, separator: str = "~") -> None:
        if separator not in ("~", "_"):
            raise ValueError(f"separator must be '~' or '_', got {separator!r}")
        self._separator = separator
        self._seen: dict[str, int] = {}
        self._used: set[str] = set()

    def __call__(self, record_id: str) -> str:
        stem = safe_name(record_id)
        count = self._seen.get(stem.lower(), 0)
        while True:
            count += 1
            if count == 1:
                name = stem
            else:
                name = safe_name(f"{stem}_{count}") if self._separator == "_" else f"{stem}~{count}"
            if name.lower() not in self._used:
                break
        self._seen[stem.lower()] = count
        self._used.add(name.lower())
        return name


def unique_safe_names(record_ids: list[str]) -> list[str]:
    """Safe, unique names for IDs in order (see :class:`SafeNamer`)."""
    namer = SafeNamer()
    return [namer(record_id) for record_id in record_ids]


def control_character_position(text: str) -> int | None:
    """1-based position of the first control character (C0, DEL or C1) in ``text``, or None."""
    match = _CONTROL.search(text)
    return None if match is None else match.start() + 1


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def undecoded_byte(character: str) -> int | None:
    """The byte that ``errors="surrogateescape"`` decoding turned into ``character`` (a lone surrogate U+DC80..U+DCFF:
    a byte that was not UTF-8), or None for any other character."""
    code = ord(character)
    return code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else None


def escape_code_point(character: str) -> str:
    """One character as a Python-style escape: ``\\xNN`` up to U+00FF, ``\\uNNNN`` up to U+FFFF, else
    ``\\UNNNNNNNN``."""
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def is_invisible(character: str) -> bool:
    """Whether :func:`escape_control_characters` escapes ``character``: a control character (C0, DEL, C1), a format
    character (Unicode category Cf: bidi overrides, zero-width characters, U+FEFF), a lone surrogate or U+2028 /
    U+2029."""
    return unicodedata.category(character) in _INVISIBLE_CATEGORIES


def escape_control_characters(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1), format character (category Cf, such as the bidi override
    U+202E that would reorder what follows it on screen), lone surrogate and line / paragraph separator written as
    an escape (:func:`escape_code_point`: ``\\x1b``, ``\\u202e``): the one way IDs and messages from input files
    are made safe for tables and terminals (tabs and line breaks included, so callers that keep those another way
    replace them first)."""
    if text.isascii():
        return _CONTROL.sub(lambda match: escape_code_point(match.group()), text)
    return "".join(escape_code_point(ch) if is_invisible(ch) else ch for ch in text)


def table_cell(value: object) -> str:
    """A value as a cell of the data tables prepare writes (``manifest.tsv``, ``leakage.tsv``): runs of whitespace,
    tabs and line breaks included, become one space, and any other control or format character an escape
    (:func:`escape_control_characters`); ``None`` is empty. Readers that match such a cell against an ID held
    elsewhere (a dataset's raw ID) compare this form."""
    return escape_control_characters(" ".join(str(value).replace("\t", " ").split())) if value is not None else ""


def read_tsv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a tab-separated table with a header line (``manifest.tsv``, ``leakage.tsv``, mmseqs overlap tables
    with a header), as dicts, every cell taken literally (quotes included); blank lines, and lines starting with
    ``#`` above the header (a comment block), are skipped; below the header a ``#`` is data (an ID may start with
    one); ``[]`` for an empty file. The one TSV reader of the project's data tables (OSError for a missing
    file: callers word their own message)."""
    return read_tsv_table(path)[1]


def read_tsv_table(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(column names, rows) of a table read as :func:`read_tsv` reads it; the columns also when there are no rows
    (``[]`` for an empty file). For readers that write the table out again (the pipeline's prediction summaries).
    A line the :mod:`csv` module cannot parse (a cell over its field size limit) is a :class:`csv.Error` naming
    the line (:func:`csv_records`), which :func:`protrnn.errors.reading` turns into a one-line message."""
    lines: list[str] = []
    numbers: list[int] = []  # the file's line number of each kept line, for messages
    with open(path, newline="", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.removeprefix("\ufeff") if number == 1 else raw  # a byte-order mark is not part of a name
            if line.strip() and (lines or not line.startswith("#")):
                lines.append(line)
                numbers.append(number)
    reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)  # cells are written unquoted
    # DictReader's own line_num is updated only after a row parses: the inner reader's names the failing line
    rows = list(csv_records(reader, lambda: numbers[max(reader.reader.line_num, 1) - 1]))
    return list(reader.fieldnames or []), rows


def csv_records(reader: Iterable[_Record], line: Callable[[], int]) -> Iterator[_Record]:
    """The records of a :mod:`csv` reader, with a :class:`csv.Error` (a field over the module's size limit) raised
    again naming the line ``line()`` says the reader was on; :func:`protrnn.errors.reading` makes it a one-line
    error naming the file too."""
    iterator = iter(reader)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except csv.Error as exc:
            raise csv.Error(f"line {line()}: {exc}") from None
        yield record


def stderr_log(message: str) -> None:
    """Progress and skip messages go to stderr, keeping stdout free for pipelines."""
    print(message, file=sys.stderr, flush=True)


def json_safe(value: Any, *, stringify: bool = False) -> Any:
    """``value`` as strict-JSON types, recursively: mappings -> dicts (keys as text), lists / tuples / arrays (anything
    with ``tolist``) -> lists, numpy scalars (``item``) -> Python numbers, NaN / inf -> None, paths -> text. Any
    other object is kept as it is, or with ``stringify`` written as ``str(value)``. Used for the JSON built from
    computed values (evaluation summaries, diagnostics, findings, the training record of model metadata); other
    writers (prepare.json, the labels' manifest.json, ...) dump their plain values with ``json.dump``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, stringify=stringify) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, stringify=stringify) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):  # numpy arrays and scalars
        return json_safe(value.tolist(), stringify=stringify)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value) if stringify else value
