"""Readers for the non-PDB structure formats protrnn trains and tests on; each yields :class:`ProteinChain`.

* CATH-style JSON (Ingraham's ``chain_set.jsonl``, GVP's ``ts50.json``): ``name``, ``seq``, backbone ``coords`` either
  as a dict ``{"N": [[x, y, z], ...], "CA": ..., "C": ..., "O": ...}`` or an L×4×3 list (N, CA, C, O).
  NaN or null marks a missing atom. There is no residue numbering, so no gap can be recovered: the record is taken as is.
* Per-chain JSONL from ``shared/data`` (db55, abag, bioemu, rosetta): ``id``, ``seq``, ``resnum`` (author number +
  insertion code), ``atoms`` (e.g. N, CA, C, O, CB), ``coords`` L×len(atoms)×3 with null. Numbering gaps at physical
  breaks become masked residues, exactly as for PDB files without SEQRES, so separation is true separation.
* cgdms per-chain text files (line 1 sequence, line 2 predicted SS, then 12 floats per residue: N, CA, C and the
  side-chain *centroid*, which is not Cβ and is therefore ignored; Cβ is built virtually). Read from a directory, a
  tarball or the PyPI wheel ``cgdms==1.0`` without extracting; ``meta['split_hint']`` is ``train``/``val`` from the set's
  own lists.
* The bioemu-benchmarks wheel: backbone PDB files inside the zip, parsed by :mod:`protrnn.data.structure`.

Every iterator takes ``errors``: ``"raise"`` (default) stops at the first bad record with a one-line
:class:`InputError`; ``"yield"`` yields the InputError in the record's place and goes on, so batch jobs can report it.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Literal

import numpy as np

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.data.chain import ProteinChain
from protrnn.data.structure import (
    ObservedResidue,
    build_chain,
    decode_text,
    gunzip_if_needed,
    numbering_layout,
    parse_structure_text,
    read_bounded,
    read_input_bytes,
    read_zip_member,
)
from protrnn.errors import InputError, reading

Errors = Literal["raise", "yield"]
ChainOrError = ProteinChain | InputError

#: Backbone atom order of CATH-style list coordinates (GVP / Ingraham convention).
CATH_LIST_ATOMS = ("N", "CA", "C", "O")
CGDMS_TRAIN_VAL = "protein_data/train_val/"
CGDMS_SPLIT_FILES = {"train": "datasets/train.txt", "val": "datasets/val.txt"}
BIOEMU_PATTERNS = (
    re.compile(r"^bioemu_benchmarks/assets/multiconf_benchmark_[^/]+/[^/]+/reference/[^/]+/[^/]+\.pdb$"),
    re.compile(r"^bioemu_benchmarks/assets/folding_free_energies_benchmark_[^/]+/folding_free_energies/"
               r"reference_wildtypes/[^/]+\.pdb$"),
)
#: bioemu references left out of the curated set (shared/data/bioemu_benchmarks_pypi/PROVENANCE.md: 253 -> 250).
BIOEMU_EXCLUDED = frozenset({"6PSH_A", "6PX4_A", "6UF2_A"})
_RESNUM = re.compile(r"^\s*(-?\d+)\s*([A-Za-z]?)\s*$")


def _emit(exc: InputError, errors: Errors) -> InputError:
    if errors == "raise":
        raise exc
    return exc


def _guard(make: Callable[[], ProteinChain], errors: Errors, path: object, record: str) -> ChainOrError:
    """Run one record's conversion; turn any malformed-data exception into an InputError for that record."""
    try:
        return make()
    except InputError as exc:
        return _emit(exc, errors)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        reason = f"malformed record ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
        return _emit(InputError(reason, path=path, record=record), errors)


# --------------------------------------------------------------------------------------------------------------- JSON
def _xyz(value: object, length: int, path: object, record: str, atom: str) -> np.ndarray:
    """(length, 3) float array from nested lists with null/NaN anywhere (residue or coordinate level)."""
    if not isinstance(value, list):
        raise InputError(f"coords[{atom!r}] is not a list", path=path, record=record)
    if len(value) != length:
        raise InputError(f"coords[{atom!r}] has {len(value)} residues but seq has {length}", path=path, record=record)
    try:
        return np.asarray(value, dtype=np.float64).reshape(length, 3)
    except (TypeError, ValueError):
        rows = [[math.nan] * 3 if v is None else [math.nan if c is None else c for c in v] for v in value]
        return np.asarray(rows, dtype=np.float64).reshape(length, 3)


def _residue_atoms(value: object, length: int, n_atoms: int, path: object, record: str) -> np.ndarray:
    """(length, n_atoms, 3) float array from a per-residue list of per-atom [x, y, z] (null allowed at any level)."""
    if not isinstance(value, list):
        raise InputError("coords is not a list", path=path, record=record)
    if len(value) != length:
        raise InputError(f"coords has {len(value)} residues but seq has {length}", path=path, record=record)
    try:
        return np.asarray(value, dtype=np.float64).reshape(length, n_atoms, 3)
    except (TypeError, ValueError):
        rows = []
        for k, residue in enumerate(value):
            if residue is None:
                rows.append([[math.nan] * 3] * n_atoms)
                continue
            if not isinstance(residue, list) or len(residue) != n_atoms:
                raise InputError(f"residue {k + 1} does not have {n_atoms} atoms", path=path, record=record) from None
            rows.append([[math.nan] * 3 if a is None else [math.nan if c is None else c for c in a] for a in residue])
        return np.asarray(rows, dtype=np.float64).reshape(length, n_atoms, 3)


def _clean_same_length(raw: object, path: object, record: str) -> str:
    if not isinstance(raw, str):
        raise InputError("missing or non-string 'seq'", path=path, record=record)
    sequence = DEFAULT_ALPHABET.clean(raw, record=record, path=path)
    if len(sequence) != len(raw.strip()):
        raise InputError("sequence contains gaps or a stop, which cannot be matched to coordinates",
                         path=path, record=record)
    if not sequence:
        raise InputError("empty sequence", path=path, record=record)
    return sequence


def chain_from_cath_record(record: dict, *, path: object = None) -> ProteinChain:
    """CATH/GVP backbone record (``name``, ``seq``, ``coords`` dict or L×4×3 list) -> chain with virtual Cβ."""
    name = str(record.get("name") or record.get("id") or "")
    if not name:
        raise InputError("record has no 'name'", path=path)
    raw = record.get("seq")
    coords_in = record.get("coords")
    if isinstance(raw, str) and isinstance(coords_in, list) and len(coords_in) != len(raw.strip()):
        raise InputError(f"coords have {len(coords_in)} residues but seq has {len(raw.strip())}",
                         path=path, record=name)
    sequence = _clean_same_length(raw, path, name)
    length = len(sequence)
    coords = np.full((length, 4, 3), np.nan)
    if isinstance(coords_in, dict):
        for k, atom in enumerate(("N", "CA", "C")):
            if atom not in coords_in:
                raise InputError(f"coords lack atom {atom!r}", path=path, record=name)
            coords[:, k] = _xyz(coords_in[atom], length, path, name, atom)
        if "CB" in coords_in:
            coords[:, 3] = _xyz(coords_in["CB"], length, path, name, "CB")
    elif isinstance(coords_in, list):
        block = _residue_atoms(coords_in, length, len(CATH_LIST_ATOMS), path, name)
        coords[:, :3] = block[:, :3]
    else:
        raise InputError("missing 'coords' (dict of atoms or L x 4 x 3 list)", path=path, record=name)
    source = f"{path}#{name}" if path is not None else name
    return build_chain(name, sequence, coords, source=source, meta={"format": "cath"})


def chain_from_perchain_record(record: dict, *, path: object = None) -> ProteinChain:
    """shared/data per-chain record (``id``, ``seq``, ``resnum``, ``atoms``, ``coords``) -> chain; numbering gaps at
    physical breaks become masked residues."""
    name = str(record.get("id") or "")
    if not name:
        raise InputError("record has no 'id'", path=path)
    raw = record.get("seq")
    coords_in, resnum, atoms = record.get("coords"), record.get("resnum"), record.get("atoms")
    if isinstance(raw, str) and isinstance(coords_in, list) and len(coords_in) != len(raw.strip()):
        raise InputError(f"coords have {len(coords_in)} residues but seq has {len(raw.strip())}",
                         path=path, record=name)
    letters = _clean_same_length(raw, path, name)
    if not isinstance(atoms, list) or not all(a in atoms for a in ("N", "CA", "C")):
        raise InputError(f"'atoms' must list N, CA and C (got {atoms!r})", path=path, record=name)
    if not isinstance(resnum, list) or len(resnum) != len(letters):
        got = len(resnum) if isinstance(resnum, list) else type(resnum).__name__
        raise InputError(f"'resnum' has {got} entries but seq has {len(letters)}", path=path, record=name)
    block = _residue_atoms(coords_in, len(letters), len(atoms), path, name)
    residues = []
    for k, (letter, label) in enumerate(zip(letters, resnum, strict=True)):
        match = _RESNUM.match(str(label))
        if match is None:
            raise InputError(f"bad residue number {label!r}", path=path, record=name, position=k + 1)
        xyz = np.full((4, 3), np.nan)
        for slot, atom in enumerate(("N", "CA", "C", "CB")):
            if atom in atoms:
                xyz[slot] = block[k, atoms.index(atom)]
        residues.append(ObservedResidue(letter, f"{match[1]}{match[2]}", int(match[1]), xyz, hetero=False))
    mapping, sequence, unknown = numbering_layout(residues)
    coords = np.full((len(sequence), 4, 3), np.nan)
    numbering = [""] * len(sequence)
    for residue, index in zip(residues, mapping, strict=True):
        coords[index] = residue.coords
        numbering[index] = residue.label
    meta: dict[str, object] = {"format": "perchain_jsonl", "sequence_source": "numbering", "numbering": numbering}
    for key in ("chain", "origin", "path"):
        if key in record:
            meta[key] = record[key]
    if unknown:
        meta["unknown_gaps"] = unknown
    source = f"{path}#{name}" if path is not None else name
    return build_chain(name, sequence, coords, source=source, meta=meta)


def chain_from_json_record(record: object, *, path: object = None, index: int = 0) -> ProteinChain:
    """Either JSON record kind, told apart by its keys (``resnum``+``atoms`` = per-chain, else CATH)."""
    if not isinstance(record, dict):
        raise InputError(f"record {index} is a JSON {type(record).__name__}, not an object", path=path)
    if "resnum" in record and "atoms" in record:
        return chain_from_perchain_record(record, path=path)
    return chain_from_cath_record(record, path=path)


def _json_records(text: str, path: object) -> Iterator[tuple[int, object]]:
    """(1-based index, record) from JSON Lines, a JSON list, or a dict of records (``{name: record}``)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = _loads(text, path, None)
        yield from enumerate(data, start=1)
        return
    first = stripped.split("\n", 1)[0]
    try:
        json.loads(first)
        is_lines = True
    except json.JSONDecodeError:
        is_lines = False
    if not is_lines:
        data = _loads(text, path, None)
        if isinstance(data, dict) and "coords" not in data:
            for k, (key, value) in enumerate(data.items(), start=1):
                if isinstance(value, dict):
                    value = {"name": key, **value}
                yield k, value
        else:
            yield 1, data
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, InputError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path,
                                         record=f"line {lineno}")


def _loads(text: str, path: object, record: str | None) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid or truncated JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                         path=path, record=record) from None


def iter_json_chains(path: str | os.PathLike[str], *, errors: Errors = "raise") -> Iterator[ChainOrError]:
    """Chains from a JSON / JSON Lines file (plain or gzip), CATH-style or per-chain records (auto-detected)."""
    text = decode_text(read_input_bytes(path), path)
    yield from _json_text_chains(text, path, errors)


def _json_text_chains(text: str, path: object, errors: Errors) -> Iterator[ChainOrError]:
    for index, record in _json_records(text, path):
        if isinstance(record, InputError):
            yield _emit(record, errors)
            continue
        label = str(record.get("name") or record.get("id") or f"#{index}") if isinstance(record, dict) else f"#{index}"
        yield _guard(lambda r=record, i=index: chain_from_json_record(r, path=path, index=i), errors, path, label)


# --------------------------------------------------------------------------------------------------------------- cgdms
def parse_cgdms_text(text: str, record_id: str, *, source: str = "", split_hint: str | None = None) -> ProteinChain:
    """One cgdms chain file: sequence, predicted SS, then N/CA/C/centroid (12 floats) per residue."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = source or record_id
    if len(lines) < 3:
        raise InputError("truncated cgdms file (needs sequence, SS and coordinate lines)", path=where)
    sequence = _clean_same_length(lines[0], where, record_id)
    if len(lines[1]) != len(sequence):
        raise InputError(f"SS string has {len(lines[1])} letters but sequence has {len(sequence)}",
                         path=where, record=record_id)
    rows = lines[2:]
    if len(rows) != len(sequence):
        raise InputError(f"{len(rows)} coordinate lines but sequence has {len(sequence)} residues",
                         path=where, record=record_id)
    try:
        values = np.array([row.split() for row in rows], dtype=np.float64)
    except ValueError:
        raise InputError("coordinate lines must hold 12 numbers each", path=where, record=record_id) from None
    if values.shape != (len(sequence), 12):
        raise InputError("coordinate lines must hold 12 numbers each", path=where, record=record_id)
    coords = np.full((len(sequence), 4, 3), np.nan)
    coords[:, :3] = values.reshape(-1, 4, 3)[:, :3]  # the 4th point is the side-chain centroid, not CB
    meta: dict[str, object] = {"format": "cgdms", "ss_predicted": lines[1]}
    if split_hint is not None:
        meta["split_hint"] = split_hint
    return build_chain(record_id, sequence, coords, source=where, meta=meta)


def looks_like_cgdms(text: str) -> bool:
    """Cheap content test used when dispatching a loose ``.txt`` file."""
    lines = text.splitlines()
    if len(lines) < 3:
        return False
    return (lines[0].strip().isalpha() and set(lines[1].strip()) <= set("HEC")
            and len(lines[2].split()) == 12)


def _split_lists(read: Callable[[str], str | None]) -> dict[str, str]:
    hints: dict[str, str] = {}
    for split, rel in CGDMS_SPLIT_FILES.items():
        text = read(rel)
        for line in (text or "").splitlines():
            if line.strip():
                hints[line.strip()] = split
    return hints


def _cgdms_entries(entries: Iterable[tuple[str, Callable[[], bytes]]], hints: dict[str, str], container: str,
                   errors: Errors) -> Iterator[ChainOrError]:
    for member, read in entries:
        record_id = PurePosixPath(member).stem
        source = f"{container}#{member}"

        def make(read: Callable[[], bytes] = read, record_id: str = record_id, source: str = source) -> ProteinChain:
            text = decode_text(read(), source)
            return parse_cgdms_text(text, record_id, source=source, split_hint=hints.get(record_id))

        yield _guard(make, errors, source, record_id)


def iter_cgdms(path: str | os.PathLike[str], *, errors: Errors = "raise") -> Iterator[ChainOrError]:
    """cgdms chains from the wheel (``.whl``), a tarball, a data directory, or a single text file, in name order."""
    path = Path(path)
    if path.is_dir():
        root = path
        files = sorted(root.glob(f"**/{CGDMS_TRAIN_VAL}*.txt")) or sorted(
            p for p in root.glob("*.txt") if p.name not in ("train.txt", "val.txt"))
        base = files[0].parents[2] if files and files[0].parent.name == "train_val" else root

        def read_dir(rel: str) -> str | None:
            target = base / rel
            if not target.is_file():
                return None
            with reading(target), open(target, "rb") as handle:  # a split list may be empty: no emptiness check
                return read_bounded(handle, target).decode("utf-8")

        hints = _split_lists(read_dir)
        entries = ((str(p.relative_to(root)), lambda p=p: read_input_bytes(p)) for p in files)
        yield from _cgdms_entries(entries, hints, str(root), errors)
        return
    if path.suffix == ".whl" or zipfile.is_zipfile(path):
        yield from _iter_cgdms_zip(path, errors)
        return
    if _is_tar(path):
        yield from _iter_cgdms_tar(path, errors)
        return
    text = decode_text(read_input_bytes(path), path)
    yield _guard(lambda: parse_cgdms_text(text, path.stem, source=str(path)), errors, path, path.stem)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _iter_cgdms_zip(path: Path, errors: Errors) -> Iterator[ChainOrError]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        yield _emit(InputError(f"not a readable zip/wheel ({exc})", path=path), errors)
        return
    with archive:
        names = archive.namelist()
        prefix = next((n[: n.index(CGDMS_TRAIN_VAL)] for n in names if CGDMS_TRAIN_VAL in n), None)
        if prefix is None:
            yield _emit(InputError(f"no {CGDMS_TRAIN_VAL}*.txt members (not the cgdms wheel)", path=path), errors)
            return

        def read_member(rel: str) -> str | None:
            name = prefix + rel
            return read_zip_member(archive, name, f"{path}#{name}").decode("utf-8") if name in names else None

        hints = _split_lists(read_member)
        members = sorted(n for n in names if n.startswith(prefix + CGDMS_TRAIN_VAL) and n.endswith(".txt"))
        entries = ((m, lambda m=m: read_zip_member(archive, m, f"{path}#{m}")) for m in members)
        yield from _cgdms_entries(entries, hints, str(path), errors)


def _iter_cgdms_tar(path: Path, errors: Errors) -> Iterator[ChainOrError]:
    """One sequential pass (random access into a compressed tar re-decompresses it every time), then name order."""
    texts: dict[str, bytes | InputError] = {}  # an over-large member is its error, raised where it is read
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                wanted = (CGDMS_TRAIN_VAL in f"/{name}" and name.endswith(".txt")) or any(
                    name == rel or name.endswith("/" + rel) for rel in CGDMS_SPLIT_FILES.values())
                handle = archive.extractfile(member) if member.isfile() and wanted else None
                if handle is not None:
                    try:
                        texts[name] = read_bounded(handle, f"{path}#{name}", size=member.size, what="archive member")
                    except InputError as exc:
                        texts[name] = exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        yield _emit(InputError(f"truncated or corrupt tar archive ({exc})", path=path), errors)
        return

    def member_bytes(name: str) -> bytes:
        value = texts[name]
        if isinstance(value, InputError):
            raise value
        return value

    def read_split(rel: str) -> str | None:
        hit = next((n for n in texts if n == rel or n.endswith("/" + rel)), None)
        return member_bytes(hit).decode("utf-8") if hit is not None else None

    hints = _split_lists(read_split)
    chosen = sorted(n for n in texts if CGDMS_TRAIN_VAL in f"/{n}")
    yield from _cgdms_entries(((n, lambda n=n: member_bytes(n)) for n in chosen), hints, str(path), errors)


# --------------------------------------------------------------------------------------------------------------- bioemu
def is_bioemu_member(name: str) -> bool:
    """Whether a wheel member is one of the reference PDB files used for training."""
    return any(pattern.match(name) for pattern in BIOEMU_PATTERNS)


def iter_bioemu_wheel(path: str | os.PathLike[str], *, errors: Errors = "raise",
                      exclude: frozenset[str] = BIOEMU_EXCLUDED) -> Iterator[ChainOrError]:
    """Reference backbones from the bioemu-benchmarks wheel, parsed from the zip without extracting.

    IDs are ``bioemu_benchmarks|<member>|<chain>`` (the same protein appears in several conformations and
    categories, so the member path is what makes an ID unique). Members whose stem is in ``exclude``, and later
    copies of a ``<PDB>_<chain>`` file already read under another category, yield an InputError saying so (with
    ``errors="yield"``) rather than vanishing.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        yield _emit(InputError(f"not a readable zip/wheel ({exc})", path=path), errors)
        return
    with archive:
        members = sorted(n for n in archive.namelist() if is_bioemu_member(n))
        if not members:
            yield _emit(InputError("no bioemu reference PDB members (not the bioemu-benchmarks wheel)", path=path),
                        errors)
            return
        first_member: dict[str, str] = {}
        for member in members:
            source = f"{path}#{member}"
            stem = PurePosixPath(member).stem
            if stem in exclude:
                yield _emit(InputError("excluded: left out of the curated bioemu reference set", path=source),
                            errors)
                continue
            if stem in first_member:  # the same PDB chain listed under several benchmark categories
                yield _emit(InputError(f"duplicate: the same PDB chain ({stem}) was read from {first_member[stem]}",
                                       path=source), errors)
                continue
            first_member[stem] = member

            def make(member: str = member, source: str = source, stem: str = stem) -> ProteinChain:
                text = decode_text(read_zip_member(archive, member, source), source)
                chain = parse_structure_text(text, source=source, name=stem, fmt="pdb", require_sequence=False)
                chain.id = f"bioemu_benchmarks|{member}|{chain.meta['chain']}"
                chain.meta["benchmark"] = member.split("/")[2]
                return chain

            yield _guard(make, errors, source, stem)


def parse_pdb_stream(handle: io.TextIOBase | Iterable[str], *, source: str, name: str | None = None,
                     chain: str | None = None) -> ProteinChain:
    """Parse a PDB given as a text stream (e.g. a member of an archive); see :func:`read_structure`."""
    text = handle.read() if hasattr(handle, "read") else "".join(handle)
    return parse_structure_text(text, source=source, name=name, chain=chain, fmt="pdb")


def open_text_member(handle: IO[bytes], source: str, size: int | None = None) -> str:
    """The text of an open archive member (gunzipped when gzip), read within the bound of every input
    (:func:`~protrnn.data.structure.read_bounded`: ``size``, its declared size, is checked before anything is read),
    with the usual one-line errors."""
    data = read_bounded(handle, source, size=size, what="archive member")
    return decode_text(gunzip_if_needed(data, source), source)
