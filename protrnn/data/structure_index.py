"""Structure lookup by record ID: which structure (file and chain, or chain already read) belongs to a FASTA record.

Used by ``protrnn predict --structures / --structure-map`` to evaluate predictions against known structures. Three
kinds of source; which one is the caller's ``kind`` (the option used), never the file name:

* ``kind="map"`` (``--structure-map``): a file, whatever its suffix, of ``id<TAB>path[<TAB>chain]`` lines, ``#``
  comments, relative paths taken from the map's folder;
* ``kind="structures"`` (``--structures``) and a directory: ``<id>.pdb|.ent|.cif|.mmcif[.gz]`` files
  (case-insensitive), also found by the record's safe name, or, for IDs like ``1abcA`` / ``1abc_A``, ``1abc.*`` with
  chain ``A``;
* ``kind="structures"`` and a file: a collection of chains matched by ID (and, for IDs like ``1abcA``, the chain
  read as ``1abc_A``: the PDB code in any case, the chain ID as written), read with
  :func:`protrnn.data.sources.read_collection` (a prepared ``.npz``, a CATH-style ``chain_set.jsonl`` / JSON, per-chain
  JSONL, a cgdms per-chain ``.txt``, an archive: every input ``protrnn prepare`` reads).

A structure's contacts are scored at :attr:`StructureRef.contact_cutoff`: the index's ``contact_cutoff`` (the
predicting model's training cutoff; the CASP :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF` unless given). A
prepared dataset stores the cutoff its contacts were defined at; one stored at another cutoff is refused in one line
(``protrnn evaluate`` refuses the same pairing).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.data.chain import ProteinChain, check_contact_cutoff
from protrnn.data.sources import STRUCTURE_SUFFIXES, read_collection
from protrnn.data.structure import read_bounded, read_structure
from protrnn.errors import InputError, reading
from protrnn.utils.io import safe_name

#: File endings recognised in a structure directory (matched case-insensitively).
DIRECTORY_SUFFIXES = STRUCTURE_SUFFIXES + tuple(f"{suffix}.gz" for suffix in STRUCTURE_SUFFIXES)
#: The kinds of source: ``--structures`` (a directory or a chain collection) and ``--structure-map`` (a TSV map).
KINDS = ("structures", "map")
#: Record IDs shaped like a PDB code plus a chain: ``1abcA``, ``1abc_A``, ``1abc:A``, ``1abc.A``, ``1abc|A``, ``1abc-A``.
_PDB_CHAIN_ID = re.compile(r"([0-9][A-Za-z0-9]{3})[_:.|-]?([A-Za-z0-9]{1,4})")


@dataclass(frozen=True)
class StructureRef:
    """Where a record's structure is: a file (and chain ID) to parse, or a chain already read from a collection;
    ``contact_cutoff``: the cutoff (Å) its contacts are scored at (a prepared dataset's stored one, else 8 Å)."""

    path: Path
    chain: str | None = None
    loaded: ProteinChain | None = None
    contact_cutoff: float = DEFAULT_CONTACT_CUTOFF

    def read(self) -> ProteinChain:
        """The chain: the one already read, or parsed from ``path`` now (:class:`InputError` if that fails)."""
        if self.loaded is not None:
            return self.loaded
        return read_structure(self.path, chain=self.chain)


class StructureIndex:
    """Finds the structure of a record by its ID, from a TSV map (``kind="map"``), or a directory of structure files or
    a collection of chains (``kind="structures"``; see the module docstring). Problems with the source itself raise
    :class:`InputError` at construction, as does a prepared dataset stored at a cutoff other than ``contact_cutoff``
    (the one its structures are scored at)."""

    def __init__(self, source: str | os.PathLike[str], *, kind: str = "structures",
                 contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.contact_cutoff = check_contact_cutoff(contact_cutoff, "contact_cutoff")
        self.source = Path(source)
        self.kind = kind
        self._map: dict[str, StructureRef] = {}
        self._files: dict[str, Path] = {}
        self._chains: dict[str, ProteinChain] = {}
        self._pdb_chains: dict[tuple[str, str], ProteinChain] = {}  # (PDB code lower-cased, chain ID) -> chain
        if kind == "map":
            if self.source.is_dir():
                raise InputError("--structure-map: a directory, not a map file (id<TAB>path[<TAB>chain] per line; "
                                 "a directory of structures is --structures DIR)", path=self.source)
            if not self.source.is_file():
                raise InputError("--structure-map: no such file", path=self.source)
            self._read_map()
        elif self.source.is_dir():
            self._scan_directory()
        elif self.source.is_file():
            self._read_collection()
        else:
            raise InputError("--structures: no such directory or file", path=self.source)

    def _scan_directory(self) -> None:
        for entry in sorted(self.source.iterdir()):
            name = entry.name.lower()
            suffix = next((s for s in DIRECTORY_SUFFIXES if name.endswith(s)), None)
            if suffix is not None and entry.is_file():
                self._files.setdefault(name[: -len(suffix)], entry)

    def _read_map(self) -> None:
        try:
            with reading(self.source), open(self.source, "rb") as handle:
                raw = read_bounded(handle, self.source)  # no larger than any structure input
            lines = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines
            lines[0] = lines[0].removeprefix("\ufeff")  # a byte-order mark is not part of the first id
        except UnicodeDecodeError as exc:
            raise InputError(f"structure map is not UTF-8 text (byte {exc.start + 1})", path=self.source) from None
        for line_no, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                continue
            fields = text.split("\t")
            if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
                raise InputError(f"line {line_no}: expected 'id<TAB>path[<TAB>chain]'", path=self.source)
            if fields[0] in self._map:
                raise InputError(f"line {line_no}: id {fields[0]!r} mapped twice", path=self.source)
            path = Path(fields[1])
            if not path.is_absolute():
                path = self.source.parent / path
            chain = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
            self._map[fields[0]] = StructureRef(path, chain, contact_cutoff=self.contact_cutoff)

    def _read_collection(self) -> None:
        chains, failures, stored = read_collection(self.source, default_cutoff=self.contact_cutoff)
        if stored != self.contact_cutoff:
            raise InputError(f"structures: the dataset was prepared at contact cutoff {stored:g} Å, but the model "
                             f"was trained at {self.contact_cutoff:g} Å; its probabilities are not for these contacts "
                             f"(prepare the structures again with --contact-cutoff {self.contact_cutoff:g})",
                             path=self.source)
        if not chains:
            reason = f" ({failures[0].error})" if failures else ""
            hint = (" (a map of id<TAB>path lines is --structure-map FILE)"
                    if self.source.suffix.lower() in (".tsv", ".tab") else "")
            raise InputError(f"structures: no chain could be read from this file{reason}{hint}", path=self.source)
        for chain in chains:
            self._chains.setdefault(chain.id, chain)
            match = _PDB_CHAIN_ID.fullmatch(chain.id)
            if match:  # `1abc_A` (what prepare and the archives' readers name a PDB file's chain) also as 1abcA, ...
                self._pdb_chains.setdefault((match.group(1).lower(), match.group(2)), chain)

    def find(self, record_id: str) -> StructureRef | None:
        """The structure of ``record_id``, or None when the source has none for it."""
        if self._chains:
            chain = self._chains.get(record_id)
            match = _PDB_CHAIN_ID.fullmatch(record_id) if chain is None else None
            if match:  # as in a directory: 1abcA, 1ABC:A, ... find the chain read as 1abc_A
                chain = self._pdb_chains.get((match.group(1).lower(), match.group(2)))
            return (StructureRef(self.source, chain.id, loaded=chain, contact_cutoff=self.contact_cutoff)
                    if chain is not None else None)
        if not self._files:
            return self._map.get(record_id)
        for key in (record_id.lower(), safe_name(record_id).lower()):
            if key in self._files:
                return StructureRef(self._files[key], contact_cutoff=self.contact_cutoff)
        match = _PDB_CHAIN_ID.fullmatch(record_id)
        if match and match.group(1).lower() in self._files:
            return StructureRef(self._files[match.group(1).lower()], match.group(2),
                                contact_cutoff=self.contact_cutoff)
        return None
