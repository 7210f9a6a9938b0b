"""Compact dataset files: every chain of a split in ONE uncompressed ``.npz`` that loads in milliseconds.

Why this layout: a dataset of 10,000 chains stored as 10,000 objects (or pickles) takes seconds to load and cannot be
read safely from an untrusted file. Here the whole split is a handful of flat arrays, concatenated over residues:

=============  ==========================  =====================================================================
key            dtype / shape               meaning
=============  ==========================  =====================================================================
``sequences``  uint8 (R,)                  ASCII letters of all chains back to back (R = total residues)
``offsets``    int64 (N + 1,)              chain ``i`` is residues ``offsets[i]:offsets[i + 1]``
``observed``   bool (R,)                   residue has coordinates
``coords``     float32 (R, 4, 3)           N, Cα, C, Cβ (Cβ completed; NaN where unobserved)
``ids``        fixed-width unicode (N,)    chain IDs (unique within the file)
``sources``    fixed-width unicode (N,)    where each chain came from (manifests, error messages)
``chain_meta`` uint8 (JSON bytes)          per-chain ``meta`` dicts as one JSON list (parsed on first use)
``metadata``   uint8 (JSON bytes)          ``{"format": "protrnn-dataset", "format_version", "contact_cutoff", ...}``
=============  ==========================  =====================================================================

The file is read with ``np.load(allow_pickle=False)``; :class:`ChainDataset` keeps the flat arrays (read-only) and builds
a :class:`~protrnn.data.chain.ProteinChain` whose arrays are *views* only when an item is asked for. Contact maps are
computed on access from the Cβ column, so the cutoff can change without rewriting the file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

import numpy as np

from protrnn.alphabet import DEFAULT_ALPHABET, GAP_LETTERS, PARENT_LETTER, UNKNOWN_LETTERS, shown_letter
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.data.chain import ProteinChain, check_contact_cutoff
from protrnn.errors import InputError, parse_json_bytes, parse_json_document, reading
from protrnn.utils.io import atomic_path

FORMAT_NAME = "protrnn-dataset"
FORMAT_VERSION = 1
#: The metadata key of the contact cutoff (Å) a dataset was prepared at.
CONTACT_CUTOFF_KEY = "contact_cutoff"
_REQUIRED_KEYS = ("sequences", "offsets", "observed", "coords", "ids", "sources", "chain_meta")
#: The letters a dataset's sequences may hold, one per residue: those the model alphabet reads as a residue
#: (:meth:`~protrnn.alphabet.Alphabet.clean` without dropping any), either case.
RESIDUE_LETTERS = "".join(sorted(set(DEFAULT_ALPHABET.residues) | UNKNOWN_LETTERS | set(PARENT_LETTER)))
_RESIDUE_BYTE = np.zeros(256, dtype=bool)
_RESIDUE_BYTE[np.frombuffer((RESIDUE_LETTERS + RESIDUE_LETTERS.lower()).encode("ascii"), dtype=np.uint8)] = True


def _json_default(value: object) -> object:
    """Make numpy scalars/arrays in ``meta`` JSON-serialisable; anything else is a caller bug worth naming."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def _json_bytes(value: object) -> np.ndarray:
    return np.frombuffer(json.dumps(value, default=_json_default, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _unicode_array(values: Sequence[str]) -> np.ndarray:
    width = max((len(v) for v in values), default=1) or 1
    return np.array(list(values), dtype=f"<U{width}")


def _check_residue_letters(sequences: np.ndarray, offsets: np.ndarray, ids: Sequence[str] | np.ndarray,
                           path: Path | None) -> None:
    """Every byte of ``sequences`` (uint8, chains back to back at ``offsets``) is one of :data:`RESIDUE_LETTERS`;
    otherwise a one-line :class:`InputError` naming the file, the chain ID and the 1-based position of the first
    one that is not (a vectorised pass over the residues: milliseconds for millions)."""
    bad = np.flatnonzero(~_RESIDUE_BYTE[sequences])
    if not bad.size:
        return
    residue = int(bad[0])
    chain = int(np.searchsorted(offsets, residue, side="right")) - 1  # the chain whose span holds the residue
    byte = int(sequences[residue])
    if byte >= 0x80:
        reason = f"invalid residue byte 0x{byte:02x} (not ASCII)"
    else:
        letter = chr(byte)
        gap = (" (an alignment gap or stop: a dataset holds one letter per residue)"
               if letter in {*GAP_LETTERS, "*"} else "")
        reason = f"invalid residue letter {shown_letter(letter)}{gap}"
    more = f"; {bad.size - 1} more invalid residue(s) in the file" if bad.size > 1 else ""
    raise InputError(f"{reason}{more}", path=path, record=str(ids[chain]), position=residue - int(offsets[chain]) + 1)


def _check_observed_cb(coords: np.ndarray, observed: np.ndarray, offsets: np.ndarray,
                       ids: Sequence[str] | np.ndarray, path: Path | None) -> None:
    """Every observed residue has a finite Cβ (the column contacts are computed from); otherwise a one-line
    :class:`InputError` naming the file, the chain ID and the 1-based position of the first that has not (an infinite
    coordinate made every distance to it infinite or NaN, so its contacts silently read as absent)."""
    bad = np.flatnonzero(observed & ~np.isfinite(coords[:, 3]).all(axis=1))
    if not bad.size:
        return
    residue = int(bad[0])
    chain = int(np.searchsorted(offsets, residue, side="right")) - 1
    more = f"; {bad.size - 1} more in the file" if bad.size > 1 else ""
    raise InputError(f"observed residue with a non-finite Cb coordinate{more}", path=path, record=str(ids[chain]),
                     position=residue - int(offsets[chain]) + 1)


def _stored_contact_cutoff(metadata: dict[str, Any], path: Path | None) -> float | None:
    """The contact cutoff in a dataset's ``metadata`` (None where it holds none), checked to be a finite distance > 0
    (a one-line :class:`InputError` naming the file and the key)."""
    value = metadata.get(CONTACT_CUTOFF_KEY)
    if value is None:
        return None
    return check_contact_cutoff(value, f"metadata key {CONTACT_CUTOFF_KEY!r}", path=path)


def _check_unique_ids(ids: Sequence[str], path: Path) -> None:
    """A one-line :class:`InputError` naming the first chain ID that is empty or occurs twice (the dataset is indexed
    by ID)."""
    seen: dict[str, int] = {}
    for index, chain_id in enumerate(ids):
        if not chain_id:
            raise InputError(f"chain #{index + 1} has an empty ID; a dataset's IDs must be non-empty and unique",
                             path=path)
        first = seen.setdefault(chain_id, index)
        if first != index:
            raise InputError(f"duplicate chain ID (chains #{first + 1} and #{index + 1}); a dataset's IDs must be "
                             "unique", path=path, record=chain_id)


def save_dataset(chains: Iterable[ProteinChain], path: str | Path, *, contact_cutoff: float = DEFAULT_CONTACT_CUTOFF,
                 info: dict[str, Any] | None = None) -> Path:
    """Write ``chains`` to ``path`` (a ``.npz``) atomically; returns the path.

    ``info`` is free-form creation information (command line, inputs, split) stored in the JSON metadata.
    IDs must be unique (the dataset is indexed by them) and sequences ASCII; ``contact_cutoff`` a finite distance > 0
    (:func:`~protrnn.data.chain.check_contact_cutoff`).
    """
    chain_list = list(chains)
    target = Path(path)
    contact_cutoff = check_contact_cutoff(contact_cutoff, "contact cutoff", path=target)
    seen: dict[str, int] = {}
    for index, chain in enumerate(chain_list):
        if chain.id in seen:
            raise InputError(f"duplicate chain ID (also chain #{seen[chain.id] + 1})", path=target, record=chain.id)
        seen[chain.id] = index
        if not chain.sequence.isascii():
            raise InputError("sequence is not ASCII", path=target, record=chain.id)
    lengths = np.array([len(c) for c in chain_list], dtype=np.int64)
    offsets = np.zeros(len(chain_list) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    sequences = np.frombuffer("".join(c.sequence for c in chain_list).encode("ascii"), dtype=np.uint8)
    observed = np.concatenate([c.observed for c in chain_list]) if chain_list else np.zeros(0, dtype=bool)
    coords = (np.concatenate([c.coords for c in chain_list]).astype(np.float32, copy=False) if chain_list
              else np.zeros((0, 4, 3), dtype=np.float32))
    assert sequences.shape == (total,) and observed.shape == (total,) and coords.shape == (total, 4, 3)
    _check_residue_letters(sequences, offsets, [c.id for c in chain_list], target)  # what load_dataset reads
    _check_observed_cb(coords, observed, offsets, [c.id for c in chain_list], target)
    try:
        chain_meta = _json_bytes([c.meta for c in chain_list])
    except TypeError as exc:
        raise InputError(f"chain meta cannot be stored: {exc}", path=target) from None
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        CONTACT_CUTOFF_KEY: contact_cutoff,
        "n_chains": len(chain_list),
        "n_residues": total,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "info": info or {},
    }
    # Writing through a handle: np.savez would append ".npz" to a temporary name that lacks it.
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, sequences=sequences, offsets=offsets, observed=observed, coords=coords,
                 ids=_unicode_array([c.id for c in chain_list]),
                 sources=_unicode_array([c.source for c in chain_list]),
                 chain_meta=chain_meta, metadata=_json_bytes(metadata))
    return target


class ChainDataset(Sequence[ProteinChain]):
    """All chains of one dataset file, as a read-only sequence of :class:`ProteinChain` views.

    Indexing with an int builds one chain (arrays are views into the flat storage, marked read-only); indexing with a
    slice or :meth:`subset` gives another :class:`ChainDataset`. :attr:`lengths` and :meth:`tokens` need no chain
    objects, so samplers and collate functions stay cheap.
    """

    def __init__(self, sequences: np.ndarray, offsets: np.ndarray, observed: np.ndarray, coords: np.ndarray,
                 ids: np.ndarray, sources: np.ndarray, chain_meta: list[dict[str, Any]] | np.ndarray,
                 metadata: dict[str, Any], path: Path | None = None) -> None:
        self._sequences = sequences
        self._offsets = offsets
        self._observed = observed
        self._coords = coords
        self._ids = ids
        self._sources = sources
        self._chain_meta_raw = chain_meta
        self._chain_meta: list[dict[str, Any]] | None = chain_meta if isinstance(chain_meta, list) else None
        self._tokens: np.ndarray | None = None
        self._id_index: dict[str, int] | None = None
        self._lengths: np.ndarray | None = None
        self.metadata = metadata
        self.path = path
        for array in (sequences, offsets, observed, coords, ids, sources):
            array.flags.writeable = False

    # -- sizes and cheap per-chain fields -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def lengths(self) -> np.ndarray:
        """Residues per chain (int64, read-only)."""
        if self._lengths is None:
            lengths = np.diff(self._offsets)
            lengths.flags.writeable = False
            self._lengths = lengths
        return self._lengths

    @property
    def ids(self) -> list[str]:
        return self._ids.tolist()

    @property
    def sources(self) -> list[str]:
        return self._sources.tolist()

    @property
    def stored_contact_cutoff(self) -> float | None:
        """The contact cutoff (Å) stored with the dataset (``protrnn prepare --contact-cutoff``), or None for a file
        whose metadata holds none; one that is not a finite distance > 0 is a one-line :class:`InputError` naming the
        file and the key (:func:`load_dataset` checks it when it reads the file)."""
        return _stored_contact_cutoff(self.metadata, self.path)

    @property
    def contact_cutoff(self) -> float:
        """The cutoff the dataset's contacts are scored at: the stored one, else the CASP
        :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF` (what ``protrnn evaluate`` and ``protrnn predict
        --structures`` use)."""
        stored = self.stored_contact_cutoff
        return DEFAULT_CONTACT_CUTOFF if stored is None else stored

    @property
    def n_residues(self) -> int:
        return int(self._offsets[-1])

    def index_of(self, chain_id: str) -> int:
        """Position of ``chain_id``; KeyError when absent."""
        if self._id_index is None:
            self._id_index = {name: i for i, name in enumerate(self._ids.tolist())}
        return self._id_index[chain_id]

    def _span(self, index: int) -> slice:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"chain index {index} out of range for {n} chains")
        index %= n
        return slice(int(self._offsets[index]), int(self._offsets[index + 1]))

    def chain_id(self, index: int) -> str:
        return str(self._ids[index])

    def _decoded(self, index: int, span: slice) -> str:
        """The letters of chain ``index`` (``span`` of the residues) as text; a byte that is not ASCII (a file that
        :func:`load_dataset` did not check) is a one-line :class:`InputError` naming the file, chain and position."""
        raw = self._sequences[span].tobytes()
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InputError(f"invalid residue byte 0x{raw[exc.start]:02x} (not ASCII)", path=self.path,
                             record=self.chain_id(index), position=exc.start + 1) from None

    def sequence(self, index: int) -> str:
        return self._decoded(index, self._span(index))

    def tokens(self, index: int) -> np.ndarray:
        """Model tokens (uint8, read-only view) of chain ``index``; the whole dataset is tokenised once, on first use."""
        if self._tokens is None:
            try:
                text = self._sequences.tobytes().decode("ascii")
            except UnicodeDecodeError:  # a file load_dataset did not check: name the chain and position
                _check_residue_letters(self._sequences, self._offsets, self._ids, self.path)
                raise
            tokens = DEFAULT_ALPHABET.encode(text)
            tokens.flags.writeable = False
            self._tokens = tokens
        return self._tokens[self._span(index)]

    def observed(self, index: int) -> np.ndarray:
        return self._observed[self._span(index)]

    def coords(self, index: int) -> np.ndarray:
        return self._coords[self._span(index)]

    def meta(self, index: int) -> dict[str, Any]:
        if self._chain_meta is None:
            self._chain_meta = self._parsed_chain_meta()
        return self._chain_meta[index]

    def check_meta(self) -> None:
        """Parse and check ``chain_meta`` now rather than on first use, so that a caller about to start long work
        (``protrnn evaluate``) finds a bad file before it (one-line :class:`InputError`, see :meth:`meta`)."""
        if self._chain_meta is None:
            self._chain_meta = self._parsed_chain_meta()

    def _parsed_chain_meta(self) -> list[dict[str, Any]]:
        """``chain_meta`` parsed (on first use: it may be large), checked to be one JSON object per chain. Problems
        are one-line :class:`InputError` messages naming the file and, for an entry, the chain."""
        raw = self._chain_meta_raw
        where = f"{self.path} (chain_meta)" if self.path is not None else "chain_meta"
        parsed = parse_json_bytes(raw.tobytes(), where, "list of per-chain meta objects") if isinstance(
            raw, np.ndarray) else raw
        if not isinstance(parsed, list) or len(parsed) != len(self):
            found = f"a list of {len(parsed)}" if isinstance(parsed, list) else type(parsed).__name__
            raise InputError(f"chain_meta holds {found}, not a list of {len(self)} objects (one per chain)",
                             path=self.path)
        for position, entry in enumerate(parsed):
            if not isinstance(entry, dict):
                raise InputError(f"chain_meta entry #{position + 1} is {type(entry).__name__}, not an object",
                                 path=self.path, record=self.chain_id(position))
        return parsed

    # -- Sequence protocol ----------------------------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> ProteinChain: ...

    @overload
    def __getitem__(self, index: slice) -> ChainDataset: ...

    def __getitem__(self, index: int | slice) -> ProteinChain | ChainDataset:
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        index = int(index)
        span = self._span(index)
        i = index % len(self)
        return ProteinChain(id=str(self._ids[i]), sequence=self._decoded(i, span),
                            observed=self._observed[span], coords=self._coords[span], source=str(self._sources[i]),
                            meta=dict(self.meta(i)))

    def __iter__(self) -> Iterator[ProteinChain]:
        for index in range(len(self)):
            yield self[index]

    def subset(self, indices: Iterable[int]) -> ChainDataset:
        """A new dataset holding ``indices`` in the given order (arrays copied, so it can be saved on its own)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for {len(self)} chains")
        idx %= max(len(self), 1)
        lengths = np.diff(self._offsets)[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        residue_index = (np.concatenate([np.arange(self._offsets[i], self._offsets[i + 1]) for i in idx])
                         if idx.size else np.zeros(0, dtype=np.int64))
        return ChainDataset(self._sequences[residue_index], offsets, self._observed[residue_index],
                            self._coords[residue_index], self._ids[idx], self._sources[idx],
                            [self.meta(int(i)) for i in idx], dict(self.metadata), path=self.path)

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"ChainDataset({len(self)} chains, {self.n_residues} residues{where})"


#: The first bytes of a zip archive (an ``.npz``): a local file header, or the end record of an empty archive.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def check_zip_magic(source: Path, prefix: str = "") -> None:
    """A one-line :class:`InputError` naming ``source`` (after ``prefix``) unless it starts like a zip archive.

    Checked before ``np.load``, which reads any other file as a pickle or ``.npy`` and then blames pickling (a text
    file was "pickled (object) data")."""
    with reading(source), open(source, "rb") as handle:
        magic = handle.read(4)
    if magic not in ZIP_MAGIC:
        raise InputError(f"{prefix}not an .npz (zip) archive; it starts with {magic!r}", path=source)


def read_npz_file(path: str | Path, keys: Sequence[str], *, format_name: str, max_version: int, what: str,
                  hint: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays ``keys`` and the parsed JSON ``metadata`` of one of protrnn's flat ``.npz`` files, after the checks
    every such file shares (never unpickles): it exists, is a readable archive holding ``keys`` and ``metadata``,
    and its metadata names ``format_name`` at a version 1..``max_version`` (:func:`protrnn.errors.check_document`;
    a reader that cannot read an older version must say so itself).

    ``what`` names the kind of file in messages ("dataset file"), ``hint`` follows "not found" (how to make one).
    Every problem is a one-line :class:`InputError` naming the file; the caller checks the arrays' shapes.
    """
    source = Path(path)
    if source.is_dir():
        inside = sorted(entry.name for entry in source.glob("*.npz"))
        listed = (f"; give one of its .npz files: {', '.join(inside[:4])}{', ...' if len(inside) > 4 else ''}"
                  if inside else hint)
        raise InputError(f"is a directory, not a {what}{listed}", path=source)
    if not source.is_file():
        raise InputError(f"{what} not found{hint}", path=source)
    wanted = [*keys, "metadata"]
    check_zip_magic(source, f"not a {what}: ")
    try:
        with np.load(source, allow_pickle=False) as archive:
            missing = [key for key in wanted if key not in archive.files]
            if missing:
                raise InputError(f"not a {what} (missing {', '.join(missing)})", path=source)
            arrays = {key: archive[key] for key in wanted}
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:  # zlib: a damaged compressed entry
        raise InputError(f"cannot read {what} ({exc.__class__.__name__}: {exc})", path=source) from None
    # the metadata entry is the JSON text of the document: errors name its position in that entry
    metadata = parse_json_document(arrays.pop("metadata").tobytes(), f"{source} (metadata)", format_name,
                                   max_version=max_version, what=what)
    return arrays, metadata


#: Arrays of a protrnn ``.npz`` that :func:`content_sha256` leaves out: how the file was made, not what it holds.
CONTENT_DIGEST_LEFT_OUT = frozenset({"metadata", "sources"})


def content_sha256(path: str | Path) -> str:
    """SHA-256 of one of protrnn's ``.npz`` files' contents: every array but ``metadata`` (its creation time and
    command line) and ``sources`` (the input paths as given), by name, dtype, shape and bytes. Two ``protrnn prepare``
    runs that write the same chains agree, wherever their inputs were read from; a training checkpoint records it to
    tell a resume that its data changed. Never unpickles; problems are one-line :class:`InputError` (a file that is
    no zip archive as in :func:`read_npz_file`)."""
    source = Path(path)
    digest = hashlib.sha256()
    check_zip_magic(source)
    try:
        with np.load(source, allow_pickle=False) as archive:
            for name in sorted(archive.files):
                if name in CONTENT_DIGEST_LEFT_OUT:
                    continue
                array = np.ascontiguousarray(archive[name])
                digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
                digest.update(array.tobytes())
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read the .npz file ({exc.__class__.__name__}: {exc})", path=source) from None
    return digest.hexdigest()


def load_dataset(path: str | Path) -> ChainDataset:
    """Read a file written by :func:`save_dataset` (never unpickles); InputError names the file and the problem.

    Checked here, at a cost of milliseconds: every array's dtype and shape against the offsets (one-dimensional
    ``ids``, ``sources`` and ``offsets``; integer offsets from 0, never decreasing, ending at the residue count),
    chain IDs non-empty and unique, every sequence byte one of :data:`RESIDUE_LETTERS` and every observed residue's
    Cβ finite (the messages name the chain ID and the position), a stored contact cutoff a finite distance > 0 (a
    file without one is read, at the default 8 Å: :attr:`ChainDataset.contact_cutoff`). ``chain_meta`` is parsed,
    and checked, on first use (:meth:`ChainDataset.meta`)."""
    source = Path(path)
    arrays, metadata = read_npz_file(source, _REQUIRED_KEYS, format_name=FORMAT_NAME, max_version=FORMAT_VERSION,
                                     what="dataset file")

    def corrupt(problem: str) -> InputError:
        return InputError(f"corrupt dataset: {problem}", path=source)

    ids, sources, offsets = arrays["ids"], arrays["sources"], arrays["offsets"]
    if ids.ndim != 1 or sources.shape != ids.shape or ids.dtype.kind != "U" or sources.dtype.kind != "U":
        raise corrupt(f"ids/sources are not unicode arrays of one entry per chain (ids {ids.dtype} {ids.shape}, "
                      f"sources {sources.dtype} {sources.shape})")
    n = len(ids)
    if offsets.shape != (n + 1,) or offsets.dtype.kind not in "iu":
        raise corrupt(f"offsets are not {n + 1} integers, one more than the {n} chains ({offsets.dtype} "
                      f"{offsets.shape})")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise corrupt("offsets are not a cumulative length table (from 0, never decreasing)")
    total = int(offsets[-1])
    problems = []
    if arrays["sequences"].dtype != np.uint8 or arrays["sequences"].shape != (total,):
        problems.append("sequences do not match offsets")
    if arrays["observed"].dtype != np.bool_ or arrays["observed"].shape != (total,):
        problems.append("observed does not match offsets")
    if arrays["coords"].dtype != np.float32 or arrays["coords"].shape != (total, 4, 3):
        problems.append("coords do not match offsets")
    if arrays["chain_meta"].dtype != np.uint8 or arrays["chain_meta"].ndim != 1:
        problems.append("chain_meta is not JSON text (one-dimensional uint8)")
    if problems:
        raise corrupt("; ".join(problems))
    id_list = ids.tolist()
    _check_unique_ids(id_list, source)
    _check_residue_letters(arrays["sequences"], offsets, id_list, source)
    _check_observed_cb(arrays["coords"], arrays["observed"], offsets, id_list, source)
    _stored_contact_cutoff(metadata, source)
    return ChainDataset(arrays["sequences"], offsets, arrays["observed"], arrays["coords"], ids,
                        sources, arrays["chain_meta"], metadata, path=source)
