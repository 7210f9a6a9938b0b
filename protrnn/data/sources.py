"""One entry point for every supported input, and the default training sources a fresh machine can get from PyPI.

:func:`iter_chains` turns a file, a directory (recursively) or an archive into a stream of :class:`LoadOutcome`: one per
chain read, or one per input that failed, with its one-line reason. Nothing is dropped silently, so ``prepare`` can
write a manifest of every input. Dispatch is by suffix (``.gz`` looked through), then by content:

=========================================== ===========================================================
``.pdb`` ``.ent`` ``.cif`` ``.mmcif`` (.gz)  :func:`protrnn.data.structure.read_structure`
``.json`` ``.jsonl`` (.gz)                   CATH-style or per-chain records (auto-detected per record)
``.txt``                                     one cgdms chain file
``.whl`` / ``.zip``                          the cgdms wheel, or the bioemu-benchmarks wheel
``.tar`` ``.tar.gz`` ``.tgz``                a cgdms tarball (with its split lists), or any of the above as members
``.npz`` (given directly)                    a dataset written by ``protrnn prepare`` (:mod:`protrnn.data.dataset`)
directory                                    a cgdms data directory (``protein_data/train_val``), else each file
=========================================== ===========================================================

:func:`read_collection` is the one "chains from a path" call: the chains of any of the above, failures reported to the
caller, and the contact cutoff they are scored at (a prepared dataset's stored one); :func:`read_chains` its list of
chains alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.data import formats
from protrnn.data.chain import ProteinChain
from protrnn.data.structure import (
    decode_text,
    detect_format,
    parse_structure_text,
    read_input_bytes,
    read_structure,
)
from protrnn.errors import InputError

#: The embedded default training set: what a fresh machine can fetch from PyPI alone.
DEFAULT_WHEELS = ("cgdms==1.0", "bioemu-benchmarks==0.0.2.post1")
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
JSON_SUFFIXES = (".json", ".jsonl")
FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".a3m", ".aln")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*$")


@dataclass(frozen=True)
class LoadOutcome:
    """What became of one input: a chain, or the one-line reason it was skipped (never both, never neither).

    ``contact_cutoff`` is the cutoff (Å) a chain's contacts are scored at where its source says so: a prepared
    dataset's (:attr:`~protrnn.data.dataset.ChainDataset.contact_cutoff`, as ``protrnn evaluate`` scores it); None
    for every other source (the CASP :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF`)."""

    source: str
    chain: ProteinChain | None
    error: str | None
    contact_cutoff: float | None = None

    @property
    def ok(self) -> bool:
        return self.chain is not None


def _failure(source: object, exc: BaseException) -> LoadOutcome:
    if isinstance(exc, InputError):
        message = str(exc)
        where = str(exc.path) if exc.path is not None else str(source)
        if exc.record is not None and "#" not in where:
            where = f"{where}#{exc.record}"
    else:  # a bug or an unforeseen malformation: still reported per input, never a crash of the whole run
        message = f"{source}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        where = str(source)
    return LoadOutcome(source=where, chain=None, error=" ".join(message.split()))


def _from_items(items: Iterator[formats.ChainOrError], source: object) -> Iterator[LoadOutcome]:
    """Outcomes from a reader running with ``errors="yield"``; a whole-input failure ends it with one outcome."""
    try:
        for item in items:
            if isinstance(item, InputError):
                yield _failure(source, item)
            else:
                yield LoadOutcome(source=item.source or str(source), chain=item, error=None)
    except Exception as exc:  # noqa: BLE001 - converted into an outcome, see module docstring
        yield _failure(source, exc)


def _kind(name: str) -> str:
    """Format kind from a file name: structure, json, cgdms, wheel, tar or unknown."""
    lower = name.lower()
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    if lower.endswith((".whl", ".zip")):
        return "wheel"
    lower = lower.removesuffix(".gz")
    if lower.endswith(STRUCTURE_SUFFIXES):
        return "structure"
    if lower.endswith(JSON_SUFFIXES):
        return "json"
    if lower.endswith(".txt"):
        return "cgdms"
    if lower.endswith(FASTA_SUFFIXES):
        return "sequence"
    return "unknown"


def iter_chains(path: str | os.PathLike[str], *, chain: str | None = None) -> Iterator[LoadOutcome]:
    """Every chain in ``path`` (file, directory or archive) as :class:`LoadOutcome`, errors caught per entry.

    ``chain`` selects the chain ID in PDB/mmCIF inputs (default: the first protein chain of each file). A prepared
    dataset (``.npz``) is read when named directly; inside a directory ``.npz`` files are not inputs.
    """
    path = Path(path)
    if path.is_file() and path.name.lower().endswith(".npz"):
        yield from _iter_dataset(path)
    elif path.is_dir():
        yield from _iter_directory(path, chain)
    elif not path.exists():
        yield _failure(path, InputError("file not found", path=path))
    else:
        yield from _iter_file(path, chain)


def _iter_dataset(path: Path) -> Iterator[LoadOutcome]:
    from protrnn.data.dataset import load_dataset

    try:
        chains = load_dataset(path)
    except Exception as exc:  # noqa: BLE001 - one outcome per failed input
        yield _failure(path, exc)
        return
    for chain in chains:
        yield LoadOutcome(source=f"{path}#{chain.id}", chain=chain, error=None, contact_cutoff=chains.contact_cutoff)


def read_chains(path: str | os.PathLike[str], *, chain: str | None = None,
                failures: list[LoadOutcome] | None = None, require: bool = True) -> list[ProteinChain]:
    """The chains of any input :func:`iter_chains` reads, in order; a prepared ``.npz`` dataset included.

    Inputs that fail are appended to ``failures`` when given (else dropped). With ``require`` (default), finding no
    chain at all is an :class:`InputError` that names ``path`` and the first failure's reason.
    """
    chains, failed, _ = read_collection(path, chain=chain)
    if failures is not None:
        failures.extend(failed)
    if require and not chains:
        reason = f": {failed[0].error}" if failed else ""
        raise InputError(f"no chain could be read{reason}", path=path)
    return chains


def read_collection(path: str | os.PathLike[str], *, chain: str | None = None,
                    default_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> tuple[list[ProteinChain], list[LoadOutcome],
                                                                             float]:
    """``(chains, failures, contact_cutoff)``: the chains of any input :func:`iter_chains` reads, in order, the inputs
    that failed, and the cutoff (Å) the chains' contacts are scored at: a prepared dataset's stored one
    (:attr:`LoadOutcome.contact_cutoff`, as ``protrnn evaluate`` scores it), ``default_cutoff`` (the CASP
    :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF` unless given) for any other input (one path is one prepared
    dataset at most: :func:`iter_chains` reads a ``.npz`` only when it is named)."""
    chains: list[ProteinChain] = []
    failed: list[LoadOutcome] = []
    cutoff: float | None = None
    for outcome in iter_chains(path, chain=chain):
        if outcome.chain is None:
            failed.append(outcome)
            continue
        chains.append(outcome.chain)
        if cutoff is None:
            cutoff = outcome.contact_cutoff
    return chains, failed, default_cutoff if cutoff is None else cutoff


def _iter_directory(root: Path, chain: str | None) -> Iterator[LoadOutcome]:
    cgdms_roots = sorted({p.parents[1] for p in root.glob(f"**/{formats.CGDMS_TRAIN_VAL.rstrip('/')}")
                          if p.is_dir()})
    consumed: set[Path] = set()  # read as part of a cgdms data directory, not on their own
    for cg_root in cgdms_roots:
        consumed.add(cg_root / formats.CGDMS_TRAIN_VAL.rstrip("/"))
        consumed.update(cg_root / rel for rel in formats.CGDMS_SPLIT_FILES.values())
        yield from _from_items(formats.iter_cgdms(cg_root, errors="yield"), cg_root)
    for dirpath, dirnames, filenames in os.walk(root):
        current = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and current / d not in consumed)
        for filename in sorted(filenames):
            if not filename.startswith(".") and current / filename not in consumed:
                yield from _iter_file(current / filename, chain)


def _iter_file(path: Path, chain: str | None) -> Iterator[LoadOutcome]:
    kind = _kind(path.name)
    try:
        if kind == "structure":
            chain_obj = read_structure(path, chain)
            yield LoadOutcome(source=str(path), chain=chain_obj, error=None)
        elif kind == "json":
            yield from _from_items(formats.iter_json_chains(path, errors="yield"), path)
        elif kind == "cgdms":
            yield from _from_items(formats.iter_cgdms(path, errors="yield"), path)
        elif kind == "wheel":
            yield from _iter_wheel(path)
        elif kind == "tar":
            yield from _iter_tar(path, chain)
        elif kind == "sequence":
            raise InputError("sequence-only file: no coordinates to take contacts from", path=path)
        else:
            yield from _iter_unknown(path, chain)
    except Exception as exc:  # noqa: BLE001 - one outcome per failed input
        yield _failure(path, exc)


def _iter_unknown(path: Path, chain: str | None) -> Iterator[LoadOutcome]:
    """No known suffix: read it as a structure if the content says so, else report it as unsupported."""
    text = decode_text(read_input_bytes(path), path)
    try:
        fmt = detect_format(text)
    except InputError:
        raise InputError("unsupported file type (expected PDB/mmCIF, JSON, cgdms .txt, wheel or tarball)",
                         path=path) from None
    yield LoadOutcome(str(path), parse_structure_text(text, source=str(path), chain=chain, fmt=fmt), None)


def _iter_wheel(path: Path) -> Iterator[LoadOutcome]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable zip/wheel ({exc})", path=path) from None
    if any(formats.CGDMS_TRAIN_VAL in n for n in names):
        yield from _from_items(formats.iter_cgdms(path, errors="yield"), path)
    elif any(formats.is_bioemu_member(n) for n in names):
        yield from _from_items(formats.iter_bioemu_wheel(path, errors="yield"), path)
    else:
        raise InputError("archive holds neither cgdms chain files nor bioemu reference PDBs", path=path)


def _iter_tar(path: Path, chain: str | None) -> Iterator[LoadOutcome]:
    try:
        with tarfile.open(path) as archive:
            names = [m.name for m in archive.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"truncated or corrupt tar archive ({exc})", path=path) from None
    if any(formats.CGDMS_TRAIN_VAL in f"/{n}" for n in names):
        yield from _from_items(formats.iter_cgdms(path, errors="yield"), path)
        return
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            base = PurePosixPath(member.name).name
            if not member.isfile() or base.startswith("."):
                continue
            source = f"{path}#{member.name}"
            try:
                handle = archive.extractfile(member)
                if handle is None:
                    raise InputError("unreadable archive member", path=source)
                text = formats.open_text_member(handle, source, member.size)
                yield from _iter_member_text(text, source, base, chain)
            except Exception as exc:  # noqa: BLE001 - one outcome per failed member
                yield _failure(source, exc)


def _iter_member_text(text: str, source: str, name: str, chain: str | None) -> Iterator[LoadOutcome]:
    kind = _kind(name)
    stem = PurePosixPath(name.removesuffix(".gz")).stem
    if kind == "structure":
        yield LoadOutcome(source, parse_structure_text(text, source=source, name=stem, chain=chain), None)
    elif kind == "json":
        yield from _from_items(formats._json_text_chains(text, source, "yield"), source)
    elif kind == "cgdms" and formats.looks_like_cgdms(text):
        yield LoadOutcome(source, formats.parse_cgdms_text(text, stem, source=source), None)
    else:
        raise InputError("unsupported archive member (expected PDB/mmCIF, JSON or cgdms .txt)", path=source)


# ------------------------------------------------------------------------------------------------ default sources
def _wheel_stem(requirement: str) -> tuple[str, str]:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise InputError(f"requirement {requirement!r} must pin one version as name==version")
    name = re.sub(r"[-_.]+", "_", match[1]).lower()
    return name, match[2]


def fetch_wheel(requirement: str, cache_dir: str | os.PathLike[str]) -> Path:
    """The wheel for a pinned requirement in ``cache_dir``, downloaded once with ``pip download --no-deps``.

    Idempotent: an existing wheel for that name and version is reused (no network). The download goes to a temporary
    folder and is moved into place, so an interrupted run never leaves a partial wheel behind.
    """
    name, version = _wheel_stem(requirement)
    cache = Path(cache_dir)
    found = _cached_wheel(cache, name, version)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "-q", requirement, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        downloaded = _cached_wheel(Path(tmp), name, version)
        if result.returncode != 0 or downloaded is None:
            tail = (result.stderr or result.stdout or "").strip().splitlines()
            reason = tail[-1] if tail else f"exit status {result.returncode}"
            raise InputError(f"could not download {requirement} with pip ({reason})", path=cache)
        target = cache / downloaded.name
        os.replace(downloaded, target)
    return target


def _cached_wheel(directory: Path, name: str, version: str) -> Path | None:
    if not directory.is_dir():
        return None
    for candidate in sorted(directory.glob("*.whl")):
        parts = candidate.name.split("-")
        if len(parts) >= 2 and parts[0].lower() == name and parts[1] == version and zipfile.is_zipfile(candidate):
            return candidate
    return None


def default_sources(cache_dir: str | os.PathLike[str], *, search_dirs: tuple[str | os.PathLike[str], ...] = ()
                    ) -> list[Path]:
    """Paths of the default training wheels (:data:`DEFAULT_WHEELS`), fetched into ``cache_dir`` when missing.

    ``search_dirs`` are looked in first (e.g. a folder of already-downloaded wheels); a hit there is copied into
    the cache so the cache is self-contained.
    """
    paths = []
    for requirement in DEFAULT_WHEELS:
        name, version = _wheel_stem(requirement)
        cached = _cached_wheel(Path(cache_dir), name, version)
        if cached is None:
            for directory in search_dirs:
                hit = _cached_wheel(Path(directory), name, version)
                if hit is not None:
                    Path(cache_dir).mkdir(parents=True, exist_ok=True)
                    partial = Path(cache_dir) / f".{hit.name}.part"
                    shutil.copyfile(hit, partial)
                    cached = Path(cache_dir) / hit.name
                    os.replace(partial, cached)
                    break
        paths.append(cached if cached is not None else fetch_wheel(requirement, cache_dir))
    return paths

