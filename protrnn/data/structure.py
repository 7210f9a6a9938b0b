"""PDB / mmCIF (plain or gzip) -> :class:`~protrnn.data.chain.ProteinChain`, with true sequence separation.

Why this is more than "read the CA atoms": contacts are scored by sequence separation, so a residue missing from the
coordinates must stay in the sequence (masked), not vanish. The reader therefore

* takes the *deposited* sequence where the file has one (PDB ``SEQRES``; mmCIF ``_entity_poly_seq`` or
  ``_entity_poly.pdbx_seq_one_letter_code_can``) and places the residues that are in the file on it. Residues are
  cut into fragments where the backbone is physically broken; a fragment's residues take consecutive positions, and
  the fragments are placed in order by dynamic programming on their letters, with the author-numbering jump breaking
  ties between equal-letter placements (``_align_to_deposited``; the jump is counted as below, so insertion codes
  count within one number: 52A -> 52D misses two). If fewer than 90 % of the placed residues agree, the deposited
  sequence is not trusted and numbering is used instead (``meta['seqres_rejected']``);
* without a deposited sequence, turns gaps in author numbering into masked ``X`` residues, but only where the backbone is
  physically broken (so insertion-code schemes such as chymotrypsin numbering, which skip numbers between bonded
  residues, add nothing; insertion codes count at a break, 100D -> 100F adds one). A jump of more than :data:`MAX_NUMBERING_GAP` residues is not trusted: it is kept as a chain break
  of unknown length (nothing inserted) and listed in ``meta['unknown_gaps']``.

Residue rules: first model (or ``model``), highest-occupancy altloc per atom (Bio.PDB's choice) and per residue (for
point-mutation microheterogeneity), modified residues mapped to their parent letter (:data:`MODIFIED_RESIDUES`, then
Biopython's extended table), unknown amino acids -> ``X``; insertion codes kept in file order; one position written twice in a row (ATOM MET and
HETATM MSE) is one residue, the variant whose Cα has the higher occupancy. Atoms with occupancy 0
were not located experimentally and count as absent (unless the whole chain has occupancy 0, as some tools write). HETATM amino acids count
when peptide-bonded to the chain, or, with no bonded neighbour (a modified residue between gaps, or between a chain end
and a gap), when the file places them in the polymer: mmCIF by entity (``label_entity_id`` a polymer entity with a
``label_seq_id``; a non-polymer entity is a ligand), otherwise by author numbering strictly between the neighbouring
polymer residues, or in a PDB file, at a chain end before the chain's TER record with room in SEQRES; a PDB residue
after its chain's TER record is a ligand (``_lone_hetero_kept``). So a free amino-acid ligand (after TER, numbered
outside the polymer, or reusing a polymer number) is not appended. A residue is observed when it has a
Cα and a Cβ can be placed: a real Cβ, a virtual one from N, Cα and C, or Cα for glycine (CASP).

Truncation, which Bio.PDB would read as a shorter chain, is refused with one line: a PDB file whose last line is a cut
coordinate record, a wwPDB entry without its final ``END``, and an mmCIF file that closes its categories with ``#``
lines (the wwPDB archive and Bio.PDB's writer do) but does not end with one.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from Bio.Data.PDBData import protein_letters_3to1_extended

from protrnn.alphabet import STANDARD_AMINO_ACIDS
from protrnn.data.chain import ProteinChain, complete_cb
from protrnn.errors import InputError, reading

#: Common modified residues -> parent amino acid (checked first; Biopython's extended table covers the rest).
MODIFIED_RESIDUES: dict[str, str] = {
    "MSE": "M", "FME": "M", "SEP": "S", "TPO": "T", "PTR": "Y", "CSO": "C", "CSD": "C", "CSS": "C", "CME": "C",
    "CSX": "C", "CAS": "C", "OCS": "C", "SMC": "C", "MLY": "K", "M3L": "K", "MLZ": "K", "ALY": "K", "KCX": "K",
    "LLP": "K", "HYP": "P", "PCA": "Q", "MEN": "N", "CGU": "E", "NEP": "H", "HIC": "H", "TYS": "Y", "AGM": "R",
    "DAL": "A", "SAC": "S", "SEC": "C", "PYL": "K", "TRQ": "W", "TPQ": "Y", "CRO": "G", "GYS": "G",
    "UNK": "X", "ASX": "X", "GLX": "X", "XLE": "X", "XAA": "X",
}
#: Largest numbering jump turned into masked residues when the file has no deposited sequence.
MAX_NUMBERING_GAP = 1000
#: Minimum fraction of aligned observed residues whose letter matches the deposited sequence.
MIN_DEPOSITED_IDENTITY = 0.9
#: Largest structure or chain file read (after gunzip): files are read whole, so a device or a gzip bomb must stop.
MAX_INPUT_BYTES = 2 << 30
_PEPTIDE_BOND_MAX = 2.0  # C(i)-N(i+1), Angstrom
_CA_CA_BONDED_MAX = 4.2
_PDB_SUFFIXES = {".pdb", ".ent", ".pdb1"}
_CIF_SUFFIXES = {".cif", ".mmcif"}
_BACKBONE = ("N", "CA", "C", "CB")


def residue_letter(resname: str) -> str | None:
    """One-letter code of an amino-acid residue name (parent letter for modified ones, ``X`` if unknown);
    ``None`` when the name is not an amino acid (water, ligand, nucleotide, cap)."""
    name = resname.strip().upper()
    letter = MODIFIED_RESIDUES.get(name) or protein_letters_3to1_extended.get(name)
    if letter is None:
        return None
    return letter if letter in STANDARD_AMINO_ACIDS else "X"


def _too_large(path: object, what: str) -> InputError:
    return InputError(f"{what} larger than {MAX_INPUT_BYTES / 2**30:g} GiB, the bound of every input protrnn reads "
                      "whole (a structure, chain, annotation or map file)", path=path)


def read_input_bytes(path: str | os.PathLike[str]) -> bytes:
    """File content, gunzipped when it starts with the gzip magic (whatever its suffix); missing, unreadable,
    truncated-gzip, empty and over-large (:data:`MAX_INPUT_BYTES`, before or after gunzip: a device such as
    /dev/zero, a gzip bomb) files raise :class:`InputError` naming the file."""
    with reading(path), open(path, "rb") as handle:
        data = read_bounded(handle, path)
    return gunzip_if_needed(data, path)


def read_bounded(handle: IO[bytes], path: object, *, size: int | None = None, what: str = "file") -> bytes:
    """The bytes of an open binary stream (a file, a tar or zip member; not gunzipped), read no further than
    :data:`MAX_INPUT_BYTES`: more, or a declared ``size`` over the bound (an archive member's header, checked before
    anything is read), is an :class:`InputError` naming ``path`` (``what`` says what it is: file, archive member)."""
    if size is not None and size > MAX_INPUT_BYTES:
        raise _too_large(path, what)
    data = handle.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise _too_large(path, what)
    return data


def read_zip_member(archive: zipfile.ZipFile, name: str, path: object) -> bytes:
    """The bytes of member ``name`` of an open zip (not gunzipped), bounded as :func:`read_bounded` (the declared size
    checked before anything is inflated); errors name ``path`` (``archive#member``)."""
    info = archive.getinfo(name)
    with archive.open(info) as handle:
        return read_bounded(handle, path, size=info.file_size, what="archive member")


def gunzip_if_needed(data: bytes, path: object) -> bytes:
    """Decompress gzip data (detected by magic bytes; at most :data:`MAX_INPUT_BYTES` of output); a truncated or
    corrupt stream, or one that inflates beyond the bound, is an :class:`InputError`."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                data = stream.read(MAX_INPUT_BYTES + 1)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"truncated or corrupt gzip data ({exc})", path=path) from None
        if len(data) > MAX_INPUT_BYTES:
            raise _too_large(path, "gzip content")
    if not data.strip():
        raise InputError("empty file", path=path)
    return data


def decode_text(data: bytes, path: object) -> str:
    """Text of a structure/sequence file; NUL bytes or non-UTF-8 content mean a binary file (an :class:`InputError`)."""
    if b"\x00" in data[:65536]:
        raise InputError("binary file, not text", path=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"binary or non-UTF-8 file (byte {exc.start + 1})", path=path) from None


def _stem(path: object) -> str:
    name = Path(str(path)).name
    for suffix in (".gz", ".pdb", ".ent", ".cif", ".mmcif", ".pdb1"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "structure"


def detect_format(text: str, name: str = "") -> str:
    """``"pdb"`` or ``"mmcif"`` from the file name (``.gz`` ignored) or, failing that, the content."""
    lower = name.lower().removesuffix(".gz")
    suffix = Path(lower).suffix
    if suffix in _CIF_SUFFIXES:
        return "mmcif"
    if suffix in _PDB_SUFFIXES:
        return "pdb"
    for line in io.StringIO(text[:200_000]):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("data_"):
            return "mmcif"
        if line[:6].rstrip() in {"HEADER", "ATOM", "HETATM", "MODEL", "CRYST1", "REMARK", "SEQRES", "TITLE", "COMPND"}:
            return "pdb"
        break
    raise InputError("neither a PDB nor an mmCIF file (no data_ block or ATOM/HEADER records)", path=name or None)


def read_structure(path: str | os.PathLike[str], chain: str | None = None, *, model: int = 0,
                   require_sequence: bool | None = None) -> ProteinChain:
    """Read one protein chain from a PDB or mmCIF file (plain or gzip).

    Args:
        path: the file. Format from the suffix (``.pdb``/``.ent``/``.cif``/``.mmcif``, optionally ``.gz``) or content.
        chain: author chain ID; default the first chain with amino-acid residues.
        model: 0-based model index (NMR ensembles); default the first model.
        require_sequence: demand a deposited sequence (SEQRES / entity_poly). ``None`` (default) demands it for
            mmCIF only (a deposited mmCIF always has entity_poly; one without it was stripped or is not an entry),
            and lets PDB files fall back to author numbering.

    Raises:
        InputError: one line naming the file (and chain) and the reason.
    """
    text = decode_text(read_input_bytes(path), path)
    return parse_structure_text(text, source=str(path), name=_stem(path), chain=chain, model=model,
                                fmt=detect_format(text, str(path)), require_sequence=require_sequence)


def parse_structure_text(text: str, *, source: str, name: str | None = None, chain: str | None = None,
                         model: int = 0, fmt: str | None = None,
                         require_sequence: bool | None = None) -> ProteinChain:
    """Parse structure text already in memory (e.g. a PDB file inside a wheel); see :func:`read_structure`.

    ``source`` names the input in errors and in :attr:`ProteinChain.source`; ``name`` is the chain-ID prefix.
    """
    fmt = fmt or detect_format(text, source)
    name = name or _stem(source)
    if fmt == "pdb":
        _check_pdb_complete(text, source)
        structure, deposited, membership = _parse_pdb(text, source, name)
    elif fmt == "mmcif":
        _check_mmcif_complete(text, source)
        structure, deposited, membership = _parse_mmcif(text, source, name)
    else:
        raise InputError(f"unknown structure format {fmt!r}", path=source)
    models = list(structure)
    if not models:
        raise InputError("no protein chain: no ATOM/HETATM coordinate records", path=source)
    if not 0 <= model < len(models):
        raise InputError(f"model index {model} out of range (file has {len(models)})", path=source)
    chain_id, residues = _pick_chain(models[model], chain, source, lambda: membership().get(model, {}), deposited)
    # A blank chain ID (old or hand-written PDB files) must not leave a trailing space in the ID: IDs end up in
    # FASTA headers, TSV cells and file names, where whitespace is lost.
    record = f"{name}_{chain_id}" if chain_id.strip() else name
    if not any(not math.isnan(r.coords[1, 0]) for r in residues):
        raise InputError(f"chain {chain_id!r} has no CA atoms", path=source, record=record)

    required = (fmt == "mmcif") if require_sequence is None else require_sequence
    dep = deposited.get(chain_id)
    meta: dict[str, object] = {"format": fmt, "chain": chain_id, "model": model}
    mapping: list[int] | None = None
    if dep is not None:
        mapping, reason = _align_to_deposited(residues, dep)
        if mapping is None:
            meta["seqres_rejected"] = reason
            if required:
                raise InputError(f"observed residues do not match the deposited sequence ({reason})",
                                 path=source, record=record)
    elif required:
        what = "entity_poly" if fmt == "mmcif" else "SEQRES"
        raise InputError(f"no {what} sequence for chain {chain_id!r}; it is required to place unobserved residues",
                         path=source, record=record)
    if mapping is not None and dep is not None:
        sequence = dep
        meta["sequence_source"] = "entity_poly" if fmt == "mmcif" else "seqres"
    else:
        mapping, sequence, unknown = numbering_layout(residues)
        meta["sequence_source"] = "numbering"
        if unknown:
            meta["unknown_gaps"] = unknown

    length = len(sequence)
    coords = np.full((length, 4, 3), np.nan, dtype=np.float32)
    numbering = [""] * length
    letters = list(sequence)
    glycine = np.array([letter == "G" for letter in letters], dtype=bool)
    for residue, index in zip(residues, mapping, strict=True):
        coords[index] = residue.coords
        numbering[index] = residue.label
        if letters[index] == "X" and residue.letter != "X":
            letters[index] = residue.letter  # deposited UNK but a known residue in the coordinates
        if residue.letter != "X":  # Cβ by the residue whose atoms these are (a deposited GLY written ALA has a Cβ)
            glycine[index] = residue.letter == "G"
    meta["numbering"] = numbering
    return build_chain(record, "".join(letters), coords, source=source, meta=meta, glycine=glycine)


def build_chain(chain_id: str, sequence: str, coords: np.ndarray, *, source: str = "",
                meta: dict[str, object] | None = None, glycine: np.ndarray | None = None) -> ProteinChain:
    """ProteinChain from raw N, Cα, C, Cβ coordinates (L×4×3, NaN = absent atom; a non-finite or float32-overflowing
    coordinate counts as absent too), applying the one observed rule.

    Cβ is completed (real, virtual from N/Cα/C, or Cα for glycine: the ``G`` of ``sequence``, or ``glycine`` where
    given, see :func:`~protrnn.data.chain.complete_cb`); a residue is observed when it has a Cα and a Cβ, and
    unobserved rows are all NaN so no consumer can use a half-present residue by accident.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 overflows to inf in float32: no warning, then NaN
        coords = np.asarray(coords, dtype=np.float32)
    coords = np.where(np.isfinite(coords), coords, np.float32(np.nan))  # an infinite atom is an absent atom
    with np.errstate(invalid="ignore"):
        coords = complete_cb(sequence, coords, glycine)
    observed = ~np.isnan(coords[:, 1]).any(axis=1) & ~np.isnan(coords[:, 3]).any(axis=1)
    coords[~observed] = np.nan
    return ProteinChain(id=chain_id, sequence=sequence, observed=observed, coords=coords, source=source,
                        meta=dict(meta or {}))


@dataclass
class ObservedResidue:
    """A residue present in the coordinates, in file order (input to alignment and numbering layout)."""

    letter: str
    label: str  # author number + insertion code, e.g. "52A"
    resseq: int
    coords: np.ndarray  # (4, 3) float64: N, CA, C, CB; NaN where absent
    hetero: bool


def _check_pdb_complete(text: str, source: str) -> None:
    """Catch truncation that Bio.PDB would silently accept: a cut coordinate line, or a wwPDB entry without END. And
    check the fixed columns of every coordinate record (:func:`_check_pdb_record`), so a damaged one is named by its
    line."""
    lines = text.rstrip("\r\n").splitlines()
    last = lines[-1] if lines else ""
    if last[:6] in ("ATOM  ", "HETATM") and len(last.rstrip()) < 54:
        raise InputError(f"truncated file: last line {len(lines)} is an incomplete coordinate record", path=source)
    if text.startswith("HEADER") and not any(line[:6].rstrip() in ("END", "MASTER") for line in lines[-3:]):
        raise InputError("truncated file: wwPDB entry without the final END record", path=source)
    for number, line in enumerate(lines, 1):
        if line[:6] in ("ATOM  ", "HETATM"):
            problem = _check_pdb_record(line)
            if problem:
                raise InputError(f"line {number}: {problem}", path=source)


def _check_pdb_record(line: str) -> str:
    """What is wrong with the fixed columns of one ATOM/HETATM record, or ``""``: the residue number (columns 23-26)
    must be an integer, x, y, z (31-54) numbers, and the occupancy (55-60), where present, a number. Bio.PDB names no
    line for a bad residue number, and reads a damaged occupancy as 0, which made the atom silently absent."""
    def number(start: int, stop: int) -> bool:
        try:
            float(line[start:stop])
        except ValueError:
            return False
        return True

    resseq = line[22:26].strip()
    if not resseq.lstrip("-").isdigit():
        return f"residue number {resseq!r} (columns 23-26) is not an integer"
    for axis, start in (("x", 30), ("y", 38), ("z", 46)):
        if not number(start, start + 8):
            return f"{axis} coordinate {line[start:start + 8].strip()!r} (columns {start + 1}-{start + 8}) is not a number"
    occupancy = line[54:60]
    if occupancy.strip() and not number(54, 60):
        return f"occupancy {occupancy.strip()!r} (columns 55-60) is not a number"
    return ""


_CIF_CATEGORY_END = re.compile(r"^#[ \t]*\r?$", re.MULTILINE)


def _check_mmcif_complete(text: str, source: str) -> None:
    """Catch truncation at a line boundary, which Bio.PDB would read as a shorter chain (its missing residues as
    unobserved): PDBx/mmCIF writers that close categories with a ``#`` line (the wwPDB archive, Bio.PDB's MMCIFIO)
    close the last one too, so a file with such lines whose last line is not one was cut."""
    lines = text.rstrip().splitlines()
    if lines and lines[-1].strip() != "#" and _CIF_CATEGORY_END.search(text):
        raise InputError(f"truncated file: it closes categories with '#' lines, but its last line ({len(lines)}) "
                         "is not one", path=source)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _parse_pdb(text: str, source: str, name: str) -> tuple[object, dict[str, str], Callable[[], _Membership]]:
    """Structure, SEQRES sequences and the (lazily scanned, once) TER evidence for HETATM amino acids."""
    from Bio.PDB import PDBParser

    parser = PDBParser(QUIET=True, PERMISSIVE=True, get_header=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = parser.get_structure(name, io.StringIO(text))
    except Exception as exc:  # Bio.PDB raises assorted types on malformed records
        raise InputError(f"cannot parse PDB ({_one_line(exc)})", path=source) from None
    return structure, _pdb_seqres(text), functools.cache(lambda: _pdb_membership(text))


def _pdb_seqres(text: str) -> dict[str, str]:
    """Deposited sequences per chain from SEQRES records (header only; stops at the first coordinate record)."""
    names: dict[str, list[str]] = {}
    for line in io.StringIO(text):
        head = line[:6]
        if head == "SEQRES":
            names.setdefault(line[11:12].strip() or " ", []).extend(line[19:80].split())
        elif head in ("ATOM  ", "HETATM", "MODEL "):
            break
    out = {}
    for chain_id, residue_names in names.items():
        letters = [residue_letter(n) for n in _without_caps(residue_names)]
        if any(letter is not None for letter in letters):  # skip nucleic-acid chains
            out[chain_id] = "".join(letter or "X" for letter in letters)
    return out


#: Terminal capping groups listed in deposited sequences but not residues of the chain (no Cα): acetyl, amide,
#: N-methylamide, formyl. At either end of SEQRES / entity_poly_seq they are dropped; kept, they became masked ``X``
#: residues that lengthen L.
TERMINAL_CAPS = frozenset({"ACE", "NH2", "NME", "FOR"})


def _without_caps(names: list[str]) -> list[str]:
    """Residue names of a deposited sequence without the :data:`TERMINAL_CAPS` at its ends."""
    start, stop = 0, len(names)
    while start < stop and names[start].upper() in TERMINAL_CAPS:
        start += 1
    while stop > start and names[stop - 1].upper() in TERMINAL_CAPS:
        stop -= 1
    return names[start:stop]


def _parse_mmcif(text: str, source: str, name: str) -> tuple[object, dict[str, str], Callable[[], _Membership]]:
    """Structure, entity_poly sequences and the (lazily read, once) entity evidence for HETATM amino acids."""
    from Bio.PDB import MMCIFParser
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    parser = MMCIFParser(QUIET=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = parser.get_structure(name, io.StringIO(text))
            mmcif = getattr(parser, "_mmcif_dict", None) or MMCIF2Dict(io.StringIO(text))
    except KeyError as exc:  # Bio.PDB indexes the _atom_site columns it reads: a missing one is a KeyError
        field = str(exc.args[0]) if exc.args else ""
        if not field.startswith("_"):
            raise InputError(f"cannot parse mmCIF ({_one_line(exc)})", path=source) from None
        why = (" (author chain IDs and residue numbers are read, as the wwPDB archive gives them)"
               if field.startswith("_atom_site.auth_") else "")
        raise InputError(f"cannot parse mmCIF: it has no {field} field{why}", path=source) from None
    except Exception as exc:
        raise InputError(f"cannot parse mmCIF ({_one_line(exc)})", path=source) from None
    return structure, _entity_poly_sequences(mmcif), functools.cache(lambda: _mmcif_membership(mmcif))


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]


def _entity_poly_sequences(mmcif: dict[str, object]) -> dict[str, str]:
    """Deposited sequence per author chain: ``_entity_poly_seq`` (residue names, first of heterogeneous ones), else
    ``_entity_poly.pdbx_seq_one_letter_code_can``; polypeptide entities only."""
    entity_ids = _as_list(mmcif.get("_entity_poly.entity_id"))
    strands = _as_list(mmcif.get("_entity_poly.pdbx_strand_id"))
    types = _as_list(mmcif.get("_entity_poly.type")) or ["polypeptide(L)"] * len(entity_ids)
    can = _as_list(mmcif.get("_entity_poly.pdbx_seq_one_letter_code_can"))
    seq_entity = _as_list(mmcif.get("_entity_poly_seq.entity_id"))
    seq_num = _as_list(mmcif.get("_entity_poly_seq.num"))
    seq_mon = _as_list(mmcif.get("_entity_poly_seq.mon_id"))
    monomers: dict[str, list[str]] = {}
    last: dict[str, str] = {}
    for entity, num, mon in zip(seq_entity, seq_num, seq_mon, strict=False):
        if last.get(entity) == num:
            continue  # heterogeneity: keep the first monomer at this position
        last[entity] = num
        monomers.setdefault(entity, []).append(mon)
    from_seq = {entity: [residue_letter(mon) or "X" for mon in _without_caps(names)]
                for entity, names in monomers.items()}
    out: dict[str, str] = {}
    for k, entity in enumerate(entity_ids):
        if k < len(types) and "polypeptide" not in types[k].lower():
            continue
        if entity in from_seq:
            sequence = "".join(from_seq[entity])
        elif k < len(can) and can[k] not in ("?", "."):
            sequence = "".join(can[k].split()).upper()
            sequence = "".join(c if c in STANDARD_AMINO_ACIDS else "X" for c in sequence)
        else:
            continue
        for strand in (strands[k] if k < len(strands) else "").split(","):
            if strand.strip() and strand.strip() not in ("?", "."):
                out[strand.strip()] = sequence
    return out


#: What a file says about a HETATM amino acid (see :func:`_chain_residues`): part of the polymer (mmCIF: a residue of a
#: polymer entity), a ligand (mmCIF: of a non-polymer entity; PDB: after its chain's TER record), or, weaker, before
#: its chain's TER record in a PDB file (which Bio.PDB's and other writers also put after the chain's ligands).
_POLYMER, _LIGAND, _BEFORE_TER = "polymer", "ligand", "before TER"
#: Residue key (author number, insertion code, residue name) -> what the file says about it.
_ResidueStatus = dict[tuple[int, str, str], str]
#: model index (Bio.PDB's order) -> author chain ID -> :data:`_ResidueStatus`; HETATM amino acids only.
_Membership = dict[int, dict[str, _ResidueStatus]]
_WATER = frozenset({"HOH", "WAT", "DOD"})


def _record_status(membership: _Membership, model: int, chain: str, key: tuple[int, str, str], status: str,
                   conflicts: set[tuple[int, str, tuple[int, str, str]]]) -> None:
    """Enter one atom's status; a residue key whose atoms disagree (a ligand reusing a residue's name and number,
    which Bio.PDB merges into one residue) says nothing."""
    if (model, chain, key) in conflicts:
        return
    statuses = membership.setdefault(model, {}).setdefault(chain, {})
    if statuses.setdefault(key, status) != status:
        del statuses[key]
        conflicts.add((model, chain, key))


def _pdb_membership(text: str) -> _Membership:
    """TER evidence for the HETATM amino acids of a PDB file, per model (counted as Bio.PDB counts them) and chain.

    A chain's polymer ends at the first TER record after its last ATOM record (a TER belongs to the chain of the
    coordinate record before it); its HETATM amino acids after that TER are :data:`_LIGAND`, those before it
    :data:`_BEFORE_TER`. A chain without such a TER (or without ATOM records) gets no entries."""
    model, model_open, chain = -1, False, None
    last_atom: dict[tuple[int, str], int] = {}
    ters: dict[tuple[int, str], list[int]] = {}
    hetero: list[tuple[int, int, str, tuple[int, str, str]]] = []  # (line, model, chain, key)
    for number, line in enumerate(text.splitlines()):
        record = line[:6]
        if record in ("ATOM  ", "HETATM"):
            if not model_open:
                model, model_open = model + 1, True
            chain = line[21]
            if record == "ATOM  ":
                last_atom[(model, chain)] = number
            else:
                name = line[17:20].strip()
                if name.upper() not in _WATER and residue_letter(name) is not None:
                    hetero.append((number, model, chain, (int(line[22:26]), line[26].strip(), name)))
        elif record == "MODEL ":
            model, model_open, chain = model + 1, True, None
        elif record == "ENDMDL":
            model_open, chain = False, None
        elif record.startswith("TER") and chain is not None:
            ters.setdefault((model, chain), []).append(number)
        elif record in ("END   ", "CONECT"):  # Bio.PDB stops reading coordinates here
            break
    ends = {}
    for where, last in last_atom.items():
        after = [t for t in ters.get(where, []) if t > last]
        if after:
            ends[where] = after[0]
    membership: _Membership = {}
    conflicts: set[tuple[int, str, tuple[int, str, str]]] = set()
    for number, model, chain, key in hetero:
        end = ends.get((model, chain))
        if end is not None:
            _record_status(membership, model, chain, key, _LIGAND if number > end else _BEFORE_TER, conflicts)
    return membership


def _mmcif_membership(mmcif: dict[str, object]) -> _Membership:
    """Entity evidence for the HETATM amino acids of an mmCIF file, per model (Bio.PDB's order) and author chain.

    :data:`_POLYMER` where ``_atom_site.label_entity_id`` is a polymer entity (``_entity_poly``, or ``_entity.type``
    polymer) and ``label_seq_id``, where given, a number; :data:`_LIGAND` where it is another entity that the file
    lists. Nothing where the entity is not given (Bio.PDB's writer puts ``?``) or not listed."""
    group = _as_list(mmcif.get("_atom_site.group_PDB"))
    entity = _as_list(mmcif.get("_atom_site.label_entity_id"))
    entity_ids = _as_list(mmcif.get("_entity.id"))
    entity_types = _as_list(mmcif.get("_entity.type"))
    polymers = set(_as_list(mmcif.get("_entity_poly.entity_id")))
    polymers |= {e for e, kind in zip(entity_ids, entity_types, strict=False) if kind.lower() == "polymer"}
    others = set(entity_ids) - polymers
    columns = [_as_list(mmcif.get(f"_atom_site.{field}")) for field in
               ("auth_asym_id", "auth_seq_id", "pdbx_PDB_ins_code", "label_comp_id")]
    if not polymers or len(entity) != len(group) or any(len(column) != len(group) for column in columns):
        return {}
    seq_ids = _as_list(mmcif.get("_atom_site.label_seq_id"))
    models = _as_list(mmcif.get("_atom_site.pdbx_PDB_model_num"))
    membership: _Membership = {}
    conflicts: set[tuple[int, str, tuple[int, str, str]]] = set()
    model, serial = -1, None
    for k, (record, chain, number, icode, name) in enumerate(zip(group, *columns, strict=True)):
        if number in (".", "?"):
            continue  # Bio.PDB skips the atom
        current = models[k] if len(models) == len(group) else "1"
        if current != serial:  # Bio.PDB starts a model where the model number changes
            model, serial = model + 1, current
        if record != "HETATM" or name.upper() in _WATER or residue_letter(name) is None:
            continue
        if entity[k] in polymers and (len(seq_ids) != len(group) or seq_ids[k].isdigit()):
            status = _POLYMER
        elif entity[k] in others:
            status = _LIGAND
        else:
            continue
        key = (int(number), "" if icode in (".", "?") else icode.strip(), name)
        _record_status(membership, model, chain, key, status, conflicts)
    return membership


def _select_residue(residue: object) -> object:
    """For point-mutation microheterogeneity pick the variant whose CA has the highest occupancy."""
    if getattr(residue, "is_disordered", lambda: 0)() == 2:
        variants = list(residue.child_dict.values())  # type: ignore[attr-defined]

        def occupancy(variant: object) -> float:
            atom = variant.child_dict.get("CA")  # type: ignore[attr-defined]
            return -1.0 if atom is None else float(atom.get_occupancy() or 0.0)

        return max(variants, key=occupancy)
    return residue


def _chain_residues(chain: object, statuses: Callable[[], Mapping[tuple[int, str, str], str]] | None = None,
                    deposited_length: int | None = None) -> list[ObservedResidue]:
    """Amino-acid residues of a chain in file order; HETATM ones only when they belong to the polymer.

    A HETATM amino acid peptide-bonded to a neighbour belongs to it. One that is not (a modified residue with missing
    residues on both sides, or between a chain end and a gap) belongs to it by what the file says (``statuses()``,
    from :func:`_pdb_membership` / :func:`_mmcif_membership`; called only for such a residue) and by its numbering
    (:func:`_lone_hetero_kept`).
    ``deposited_length`` is the length of the chain's deposited sequence, where the file has one."""
    # Zero occupancy marks atoms placed without experimental support; ignore them, unless the whole chain is written
    # with occupancy 0 (some modelling tools do that), where the column carries no information.
    informative = any((atom.get_occupancy() or 0.0) > 0.0 for atom in chain.get_atoms())  # type: ignore[attr-defined]
    candidates: list[ObservedResidue] = []
    occupancies: list[float] = []
    keys: list[tuple[int, str, str]] = []  # (author number, insertion code, residue name), to look up statuses
    for raw in chain:  # type: ignore[attr-defined]
        residue = _select_residue(raw)
        hetflag, resseq, icode = residue.id  # type: ignore[attr-defined]
        if hetflag == "W":
            continue
        letter = residue_letter(residue.get_resname())  # type: ignore[attr-defined]
        if letter is None:
            continue
        coords = np.full((4, 3), np.nan)
        for k, atom_name in enumerate(_BACKBONE):
            atom = residue.child_dict.get(atom_name)  # type: ignore[attr-defined]
            if atom is not None and (not informative or (atom.get_occupancy() or 0.0) > 0.0):
                coords[k] = atom.get_coord()
        label = f"{resseq}{icode.strip()}"
        key = (int(resseq), icode.strip(), residue.get_resname())  # type: ignore[attr-defined]
        ca = residue.child_dict.get("CA")  # type: ignore[attr-defined]
        occupancy = -1.0 if ca is None else float(ca.get_occupancy() or 0.0)
        observed = ObservedResidue(letter, label, int(resseq), coords, hetero=hetflag.startswith("H_"))
        if candidates and candidates[-1].label == label:
            # One position written twice in a row, as ATOM and HETATM (MET / MSE microheterogeneity): Bio.PDB keeps
            # two residues, which would shift every later one. Keep the variant whose CA has the higher occupancy.
            # Only in a row: a free amino-acid ligand elsewhere in the chain that reuses a residue's number must not
            # replace it (it is dropped below: not peptide-bonded, and not placed in the polymer by the file).
            if occupancy > occupancies[-1]:
                candidates[-1], occupancies[-1] = observed, occupancy
                keys[-1] = key
            continue
        candidates.append(observed)
        occupancies.append(occupancy)
        keys.append(key)
    bonded = [not res.hetero or (k > 0 and _peptide_bonded(candidates[k - 1], res)) or (
        k + 1 < len(candidates) and _peptide_bonded(res, candidates[k + 1])) for k, res in enumerate(candidates)]
    polymer = [res for res, keep in zip(candidates, bonded, strict=True) if keep]
    numbers = (min(r.resseq for r in polymer), max(r.resseq for r in polymer)) if polymer else None
    kept = []
    for k, res in enumerate(candidates):
        if not bonded[k]:
            before = next((candidates[j] for j in range(k - 1, -1, -1) if bonded[j]), None)
            after = next((candidates[j] for j in range(k + 1, len(candidates)) if bonded[j]), None)
            status = statuses().get(keys[k]) if statuses is not None else None
            if not _lone_hetero_kept(res, status, before, after, numbers, deposited_length):
                continue
        kept.append(res)
    return kept


def _numbering_order(residue: ObservedResidue) -> tuple[int, int]:
    return residue.resseq, _insertion_rank(residue)


def _lone_hetero_kept(residue: ObservedResidue, status: str | None, before: ObservedResidue | None,
                      after: ObservedResidue | None, numbers: tuple[int, int] | None,
                      deposited_length: int | None) -> bool:
    """Whether a HETATM amino acid bonded to no neighbour is a residue of the polymer (else a ligand).

    ``before`` and ``after`` are the nearest bonded residues (ATOM ones, or HETATM ones bonded to a neighbour) in file
    order, ``numbers`` the lowest and highest author number among them. The file decides where it says polymer or
    ligand (mmCIF entities; in a PDB file, a residue after its chain's TER record is a ligand). Otherwise the residue
    is kept when its author number lies strictly between those of ``before`` and ``after`` (insertion codes ordered),
    or, before its chain's TER record in a PDB file, when it extends the numbering at a chain end and the deposited
    sequence (SEQRES, required) has room for the numbering span with it. Writers such as Bio.PDB's put a chain's
    ligands before its TER record and write no SEQRES, so TER alone does not make an end residue polymer. A ligand
    after the polymer (a free MSE, a residue numbered outside the polymer or reusing one of its numbers) is kept by
    none of these."""
    if status in (_POLYMER, _LIGAND):
        return status == _POLYMER
    order = _numbering_order(residue)
    if before is not None and after is not None:
        return _numbering_order(before) < order < _numbering_order(after)
    if status != _BEFORE_TER or deposited_length is None or numbers is None:
        return False
    if after is None and before is not None:
        extends = order > _numbering_order(before)
    elif before is None and after is not None:
        extends = order < _numbering_order(after)
    else:
        return False
    span = max(numbers[1], residue.resseq) - min(numbers[0], residue.resseq) + 1
    return extends and span <= deposited_length


def _peptide_bonded(a: ObservedResidue, b: ObservedResidue) -> bool:
    """Whether ``b`` follows ``a`` directly in the polymer (C–N bond, or Cα–Cα ≤ 4.2 Å when C or N is absent)."""
    c, n = a.coords[2], b.coords[0]
    if not (np.isnan(c).any() or np.isnan(n).any()):
        return float(np.linalg.norm(c - n)) < _PEPTIDE_BOND_MAX
    ca_a, ca_b = a.coords[1], b.coords[1]
    if not (np.isnan(ca_a).any() or np.isnan(ca_b).any()):
        return float(np.linalg.norm(ca_a - ca_b)) <= _CA_CA_BONDED_MAX
    return False


def _pick_chain(model: object, chain: str | None, source: str,
                membership: Callable[[], Mapping[str, _ResidueStatus]] = dict,
                deposited: Mapping[str, str] | None = None) -> tuple[str, list[ObservedResidue]]:
    """The requested chain, or the first one with amino-acid residues (only chains up to it are examined).

    ``membership()``: what the file says about each chain's HETATM amino acids; ``deposited``: deposited sequences."""
    chains = {ch.id: ch for ch in model}  # type: ignore[attr-defined]
    listed = ", ".join(repr(c) for c in chains) or "none"

    def residues_of(chain_id: str) -> list[ObservedResidue]:
        sequence = (deposited or {}).get(chain_id)
        return _chain_residues(chains[chain_id], lambda: membership().get(chain_id, {}),
                               None if sequence is None else len(sequence))

    if chain is None:
        for chain_id in chains:
            residues = residues_of(chain_id)
            if residues:
                return chain_id, residues
        raise InputError(f"no protein chain (chains: {listed})", path=source)
    if chain not in chains:
        raise InputError(f"chain {chain!r} not found (available: {listed})", path=source)
    residues = residues_of(chain)
    if not residues:
        raise InputError(f"chain {chain!r} has no amino-acid residues (chains: {listed})", path=source)
    return chain, residues


#: Letter scores of the placement of observed fragments on the deposited sequence (an ``X`` on either side scores 0).
_MATCH, _MISMATCH = 4.0, -6.0
#: Two fragments (runs of peptide-bonded residues) placed side by side although their backbone is broken: allowed (a
#: stretched bond in a poorly modelled region), but less likely than a missing residue between them.
_ADJACENT_BREAK = -1.0
#: A gap between two fragments that equals their author-numbering jump (what breaks ties between equal-letter
#: placements; larger than :data:`_ADJACENT_BREAK` so that a genuinely stretched bond, numbered consecutively, stays
#: closed, and far smaller than a match against a mismatch (10), so numbering never overrides a letter that disagrees.
#: Against an ``X`` in the deposited sequence (0) a match counts 4, so three agreeing numbering gaps outweigh it).
_NUMBERING_AGREES = 2.0


def _fragments(residues: Sequence[ObservedResidue]) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of residues each peptide-bonded to the next."""
    if not residues:
        return []
    bounds = [0] + [k + 1 for k in range(len(residues) - 1) if not _peptide_bonded(residues[k], residues[k + 1])]
    return list(zip(bounds, bounds[1:] + [len(residues)], strict=True))


def _placement_scores(fragment: str, deposited: np.ndarray) -> np.ndarray:
    """Letter score of ``fragment`` placed at every start of ``deposited`` (uint8 codes): ``[len(deposited) - m + 1]``."""
    query = np.frombuffer(fragment.encode("ascii"), dtype=np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(deposited, len(query))
    known = (windows != ord("X")) & (query != ord("X"))
    equal = windows == query
    return (np.where(equal, _MATCH, _MISMATCH) * known).sum(axis=1)


def _align_to_deposited(residues: Sequence[ObservedResidue], deposited: str) -> tuple[list[int] | None, str]:
    """Monotonic map observed residue -> deposited index, or (None, reason) when it cannot be trusted.

    The observed residues are cut into fragments where the backbone is broken (:func:`_fragments`). Residues of one
    fragment are bonded, so they take consecutive deposited positions; only the fragments are placed, in order and
    without overlap, by dynamic programming over their start positions. A placement scores its letters
    (:data:`_MATCH`, :data:`_MISMATCH`), :data:`_ADJACENT_BREAK` for two fragments left side by side and
    :data:`_NUMBERING_AGREES` for a gap equal to the author-numbering jump. A per-residue global alignment (free end
    gaps, penalised internal ones) could not keep bonded residues together: it pulled a short fragment onto a matching
    stretch next to its neighbour, or moved one residue off a mismatched letter beside a gap, and so stored true
    long-range pairs at short separations."""
    observed = "".join(r.letter for r in residues)
    if len(observed) > len(deposited):
        return None, f"{len(observed)} residues in coordinates but {len(deposited)} in the deposited sequence"
    if not (observed + deposited).isascii():
        return None, "non-ASCII residue letters"
    dep = np.frombuffer(deposited.encode("ascii"), dtype=np.uint8)
    size = len(deposited)
    fragments = _fragments(residues)
    best = np.full(size + 1, -np.inf)  # best[s]: score of fragments so far, the last one ending at s
    back: list[np.ndarray] = []  # per fragment: the previous fragment's end for each start
    for f, (a, b) in enumerate(fragments):
        length = b - a
        place = _placement_scores(observed[a:b], dep)  # start s in [0, size - length]
        starts = np.arange(size - length + 1)
        if f == 0:
            total, came = place, np.zeros(len(starts), dtype=np.int32)
        else:
            # previous end e <= s: any gap (prefix maximum), with the two special gaps scored apart
            prefix = np.maximum.accumulate(best)
            improved = np.r_[True, best[1:] > prefix[:-1]]
            arg = np.maximum.accumulate(np.where(improved, np.arange(len(best)), 0))
            e_any = np.clip(starts - 1, 0, None)
            cand = np.where(starts >= 1, prefix[e_any], -np.inf)
            came = arg[e_any].astype(np.int32)
            adjacent = best[starts] + _ADJACENT_BREAK
            take = adjacent > cand
            cand, came = np.where(take, adjacent, cand), np.where(take, starts, came)
            jump = _numbering_gap(residues[a - 1], residues[a])
            if jump >= 0:
                e_num = starts - jump
                ok = e_num >= 0
                numbered = np.where(ok, best[np.clip(e_num, 0, None)], -np.inf) + _NUMBERING_AGREES
                numbered += np.where(jump == 0, _ADJACENT_BREAK, 0.0)
                take = numbered > cand
                cand, came = np.where(take, numbered, cand), np.where(take, e_num, came)
            total = place + cand
        back.append(came)
        best = np.full(size + 1, -np.inf)
        best[starts + length] = total
    end = int(np.argmax(best))  # a placement exists: the observed residues are no more than the deposited ones
    mapping = [-1] * len(residues)
    for f in range(len(fragments) - 1, -1, -1):
        a, b = fragments[f]
        start = end - (b - a)
        for k in range(a, b):
            mapping[k] = start + (k - a)
        end = int(back[f][start])
    pairs = [(deposited[t], r.letter) for r, t in zip(residues, mapping, strict=True)]
    known = [(x, y) for x, y in pairs if x != "X" and y != "X"]
    identity = sum(x == y for x, y in known) / len(known) if known else 1.0
    if identity < MIN_DEPOSITED_IDENTITY:
        return None, f"identity {identity:.2f} < {MIN_DEPOSITED_IDENTITY}"
    return mapping, ""


def _insertion_rank(residue: ObservedResidue) -> int:
    """0 without an insertion code, 1 for A, 2 for B, ... (0 for a code that is not one letter)."""
    code = residue.label.lstrip("-+0123456789")
    return ord(code.upper()) - ord("A") + 1 if len(code) == 1 and code.isascii() and code.isalpha() else 0


def _numbering_gap(prev: ObservedResidue, residue: ObservedResidue) -> int:
    """Residues missing between two by author numbering (negative where it goes back): within one number the
    insertion codes count (100D -> 100F: 1, 100 -> 100B: 1, 100A -> 100B: 0), between numbers only the number jump
    (99 -> 100B: 0, 100C -> 102: 1); see :func:`numbering_layout`."""
    if residue.resseq == prev.resseq:
        return _insertion_rank(residue) - _insertion_rank(prev) - 1
    return residue.resseq - prev.resseq - 1


def numbering_layout(residues: Sequence[ObservedResidue]) -> tuple[list[int], str, list[str]]:
    """Place residues by author numbering where the backbone is broken; returns (mapping, sequence, unknown gaps).

    Between residues that are not peptide-bonded, ``resseq`` jump − 1 masked ``X`` residues are inserted (none for a
    jump above :data:`MAX_NUMBERING_GAP`, reported as ``"label-label"`` in the third value). Within one number,
    insertion codes count: 100D -> 100F inserts one (100E), 100 -> 100B one (100A). Between numbers only the jump
    counts (99 -> 100B inserts nothing, 100C -> 102 one): whether 100 and 100A exist, or later insertion letters,
    cannot be known, and some files give every residue a code (5A, 6A, ...). ``mapping[k]`` is the
    index of ``residues[k]`` in the returned sequence.
    """
    mapping: list[int] = []
    letters: list[str] = []
    unknown: list[str] = []
    for k, residue in enumerate(residues):
        if k:
            prev = residues[k - 1]
            missing = 0
            if not _peptide_bonded(prev, residue):
                # within an insertion run 100D -> 100F lost 100E; between numbers only the jump counts: schemes
                # differ on whether 100 precedes 100A (some code every residue)
                missing = max(0, _numbering_gap(prev, residue))
                if missing > MAX_NUMBERING_GAP:
                    unknown.append(f"{prev.label}-{residue.label}")
                    missing = 0
            letters.extend("X" * missing)
        mapping.append(len(letters))
        letters.append(residue.letter)
    return mapping, "".join(letters), unknown
