"""Baselines that tell learned context from simple statistics; all are scored by :mod:`protrnn.evaluation.metrics`.

Every baseline has ``predict(sequence) -> L x L`` contact probabilities (symmetric, zero diagonal); those that learn
from data have ``fit(chains)`` taking :class:`~protrnn.data.chain.ProteinChain` objects of the training split only,
and learn contacts at the cutoff of the dataset they come from (:func:`training_cutoff`: a prepared
:class:`~protrnn.data.dataset.ChainDataset`'s stored cutoff, as ``protrnn evaluate`` scores its test sets).

* :class:`RandomBaseline` - uniform noise; the floor every method must clear.
* :class:`SeparationPrior` - contact frequency as a function of sequence separation alone.
* :class:`PairPropensityBaseline` - the prior plus an amino-acid-pair x separation-bin log-odds table.
* :class:`FreeContactBaseline` - coevolution from a multiple sequence alignment (Debian ``freecontact``), with the
  Ollikainen-40 helpers that map structure residues to alignment columns.

Conventions (smoothing, extrapolation, score-to-probability rules) are documented in docs/conventions.md.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.isotonic import IsotonicRegression

from protrnn.alphabet import DEFAULT_ALPHABET, PARENT_LETTER, STANDARD_AMINO_ACIDS
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.data.chain import ProteinChain, check_contact_cutoff
from protrnn.data.dataset import ChainDataset
from protrnn.data.structure import read_bounded
from protrnn.errors import InputError, decode_text, reading
from protrnn.evaluation.metrics import in_range, scored_pairs
from protrnn.utils.io import csv_records

log = logging.getLogger(__name__)

_N_AA = len(STANDARD_AMINO_ACIDS)
#: Separation bins of the pair-propensity table (inclusive; the last is open).
PROPENSITY_BINS: tuple[tuple[int, int | None], ...] = ((6, 11), (12, 23), (24, 47), (48, None))


def _separation(length: int) -> np.ndarray:
    idx = np.arange(length)
    return np.abs(idx[:, None] - idx[None, :])


def _upper_pairs(chain: ProteinChain, min_separation: int,
                 contact_cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and contact flag (Cβ-Cβ < ``contact_cutoff`` Å) of the scored upper-triangle pairs of a training
    chain."""
    rows, cols = scored_pairs(chain.observed, min_separation)
    return rows, cols, chain.contact_map(contact_cutoff)[rows, cols]


def training_cutoff(chains: Iterable[ProteinChain], contact_cutoff: float | None = None) -> float:
    """The cutoff (Å) a baseline learns contacts at from ``chains``: ``contact_cutoff`` when given (a finite distance
    > 0), else the cutoff of the prepared dataset the chains are (:attr:`ChainDataset.contact_cutoff`: the one
    ``protrnn prepare --contact-cutoff`` stored, 8 Å for a file that stores none), else the CASP
    :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF`. A rate learnt at 8 Å from data prepared at 6 Å scores its
    contacts at neither."""
    if contact_cutoff is not None:
        return check_contact_cutoff(contact_cutoff, "contact cutoff")
    if isinstance(chains, ChainDataset):
        return chains.contact_cutoff
    return DEFAULT_CONTACT_CUTOFF


def _require_chains(chains: Iterable[ProteinChain], who: str) -> list[ProteinChain]:
    chains = list(chains)
    if not chains:
        raise InputError(f"{who}.fit needs at least one training chain")
    return chains


class RandomBaseline:
    """Uniform random symmetric probabilities.

    The noise depends on ``seed`` and the sequence only (not on call order), so repeated evaluations agree.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def fit(self, chains: Iterable[ProteinChain]) -> RandomBaseline:
        """Nothing to learn; present so every baseline can be driven the same way."""
        return self

    def predict(self, sequence: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(sequence.encode("utf-8"))])
        upper = np.triu(rng.random((len(sequence), len(sequence))), k=1)
        return (upper + upper.T).astype(np.float32)


@dataclass
class SeparationPrior:
    """P(contact | separation s), learned on training chains.

    Counts at each separation are pooled over a window of +/- ``floor(window * s)`` separations (fine where
    contacts change fast, wide where data thin out), shrunk toward the overall rate with ``pseudocount`` pairs,
    made non-increasing for s >= 6 (weighted isotonic regression, see ``fit``), and extrapolated past the last separation with at least ``min_pairs`` pooled pairs by a power law
    ``p(s) ~ s**slope`` fitted on separations >= 24 (slope clipped to <= 0; 0 when fewer than 3 points).
    """

    window: float = 0.1
    pseudocount: float = 1.0
    min_pairs: int = 200
    table: np.ndarray | None = field(default=None, repr=False)  # p(s) for s = 0 .. last
    slope: float = 0.0
    #: The cutoff (Å) the table was learnt at (set by ``fit``; :func:`training_cutoff`).
    contact_cutoff: float | None = field(default=None, init=False)

    def fit(self, chains: Iterable[ProteinChain], contact_cutoff: float | None = None) -> SeparationPrior:
        """Learn p(s) from ``chains``, contacts at ``contact_cutoff`` (default: :func:`training_cutoff`, the cutoff
        stored with a prepared dataset)."""
        cutoff = training_cutoff(chains, contact_cutoff)
        chains = _require_chains(chains, "SeparationPrior")
        longest = max(len(chain) for chain in chains)
        pairs = np.zeros(longest, dtype=np.float64)
        hits = np.zeros(longest, dtype=np.float64)
        for chain in chains:
            rows, cols, truth = _upper_pairs(chain, 1, cutoff)
            sep = cols - rows
            pairs += np.bincount(sep, minlength=longest)
            hits += np.bincount(sep, weights=truth.astype(np.float64), minlength=longest)
        scored = slice(MIN_SEPARATION, None)
        if pairs[scored].sum() == 0:
            raise InputError("SeparationPrior.fit: the training chains have no observed pair at separation >= 6")
        overall = hits[scored].sum() / pairs[scored].sum()

        cum_pairs = np.concatenate([[0.0], np.cumsum(pairs)])
        cum_hits = np.concatenate([[0.0], np.cumsum(hits)])
        seps = np.arange(longest)
        half = np.floor(self.window * seps).astype(int)
        low = np.clip(seps - half, 0, longest)
        high = np.clip(seps + half + 1, 0, longest)
        pooled_pairs = cum_pairs[high] - cum_pairs[low]
        pooled_hits = cum_hits[high] - cum_hits[low]
        smoothed = (pooled_hits + self.pseudocount * overall) / (pooled_pairs + self.pseudocount)
        # Contact frequency falls with separation; in short training chains it rises again near s ~ L because
        # chain termini often pair. That finite-length artefact would rank the longest pairs first on longer test
        # chains, so the curve is made non-increasing from s = 6 on (weighted isotonic regression).
        scored_seps = seps[MIN_SEPARATION:]
        if scored_seps.size:
            iso = IsotonicRegression(increasing=False, out_of_bounds="clip")
            smoothed[MIN_SEPARATION:] = iso.fit_transform(scored_seps, smoothed[MIN_SEPARATION:],
                                                          sample_weight=pairs[MIN_SEPARATION:] + 1e-9)

        reliable = pooled_pairs >= self.min_pairs
        reliable[0] = True  # separation 0 (the diagonal) is never predicted; keep the table contiguous from 0
        last = int(np.argmin(reliable)) - 1 if not reliable.all() else longest - 1
        last = max(last, MIN_SEPARATION)
        self.table = smoothed[: last + 1].copy()
        self.table[0] = 0.0
        self.contact_cutoff = cutoff

        fit_seps = np.arange(24, last + 1)
        fit_seps = fit_seps[(pairs[fit_seps] > 0) & (self.table[fit_seps] > 0)]
        if fit_seps.size >= 3:
            slope, _ = np.polyfit(np.log(fit_seps), np.log(self.table[fit_seps]), 1, w=np.sqrt(pairs[fit_seps]))
            self.slope = float(min(slope, 0.0))
        else:
            self.slope = 0.0
        return self

    def _check_fitted(self) -> np.ndarray:
        if self.table is None:
            raise InputError("SeparationPrior is not fitted: call fit(training_chains) first")
        return self.table

    def probability(self, separation: np.ndarray) -> np.ndarray:
        """p(s) for an integer array of separations (any shape); 0 at s = 0."""
        table = self._check_fitted()
        separation = np.abs(np.asarray(separation, dtype=np.int64))
        last = table.size - 1
        within = table[np.minimum(separation, last)]
        beyond = table[last] * (np.maximum(separation, 1) / last) ** self.slope
        return np.where(separation <= last, within, np.clip(beyond, 1e-6, 1.0))

    def predict(self, sequence: str) -> np.ndarray:
        return self.probability(_separation(len(sequence))).astype(np.float32)


def _residue_index(sequence: str) -> np.ndarray:
    """0..19 for the standard amino acids, -1 for anything else (unknown residues carry no pair statistics)."""
    return DEFAULT_ALPHABET.encode(sequence).astype(np.int64) - 2


def _bin_index(separation: np.ndarray, bins: Sequence[tuple[int, int | None]]) -> np.ndarray:
    """Bin number per separation; -1 below the first bin or between bins."""
    out = np.full(separation.shape, -1, dtype=np.int64)
    for number, (low, high) in enumerate(bins):
        out[in_range(separation, low, high)] = number
    return out


@dataclass
class PairPropensityBaseline:
    """Separation prior combined with an amino-acid-pair x separation-bin log-likelihood ratio.

    ``logit p(contact | s, a, b) = logit p(s) + log P(a,b | contact, bin) - log P(a,b | no contact, bin)``, the
    naive-Bayes update of the prior by the residue pair. Pair frequencies are counted over ordered pairs (so the table
    is symmetric) with ``pseudocount`` added to each of the 400 cells. Pairs involving a non-standard residue, and
    separations outside every bin, keep the prior.
    """

    pseudocount: float = 1.0
    bins: tuple[tuple[int, int | None], ...] = PROPENSITY_BINS
    prior: SeparationPrior = field(default_factory=SeparationPrior)
    log_odds: np.ndarray | None = field(default=None, repr=False)  # bins x 20 x 20
    #: The cutoff (Å) the prior and the table were learnt at (set by ``fit``; :func:`training_cutoff`).
    contact_cutoff: float | None = field(default=None, init=False)

    def fit(self, chains: Iterable[ProteinChain], contact_cutoff: float | None = None) -> PairPropensityBaseline:
        """Learn the prior and the log-odds table from ``chains``, contacts at ``contact_cutoff`` (default:
        :func:`training_cutoff`, the cutoff stored with a prepared dataset)."""
        cutoff = training_cutoff(chains, contact_cutoff)
        chains = _require_chains(chains, "PairPropensityBaseline")
        self.prior.fit(chains, cutoff)
        n_bins = len(self.bins)
        cells = n_bins * _N_AA * _N_AA
        contact_counts = np.zeros(cells, dtype=np.float64)
        other_counts = np.zeros(cells, dtype=np.float64)
        min_sep = min(low for low, _ in self.bins)
        for chain in chains:
            rows, cols, truth = _upper_pairs(chain, min_sep, cutoff)
            aa = _residue_index(chain.sequence)
            a, b = aa[rows], aa[cols]
            number = _bin_index(cols - rows, self.bins)
            keep = (a >= 0) & (b >= 0) & (number >= 0)
            a, b, number, truth = a[keep], b[keep], number[keep], truth[keep]
            base = number * _N_AA * _N_AA
            for first, second in ((a, b), (b, a)):
                cell = base + first * _N_AA + second
                contact_counts += np.bincount(cell[truth], minlength=cells)
                other_counts += np.bincount(cell[~truth], minlength=cells)
        contact_counts = contact_counts.reshape(n_bins, _N_AA * _N_AA) + self.pseudocount
        other_counts = other_counts.reshape(n_bins, _N_AA * _N_AA) + self.pseudocount
        ratio = (np.log(contact_counts / contact_counts.sum(axis=1, keepdims=True))
                 - np.log(other_counts / other_counts.sum(axis=1, keepdims=True)))
        self.log_odds = ratio.reshape(n_bins, _N_AA, _N_AA)
        self.contact_cutoff = cutoff
        return self

    def predict(self, sequence: str) -> np.ndarray:
        if self.log_odds is None:
            raise InputError("PairPropensityBaseline is not fitted: call fit(training_chains) first")
        separation = _separation(len(sequence))
        prior = np.clip(self.prior.probability(separation), 1e-6, 1 - 1e-6)
        logit = np.log(prior) - np.log1p(-prior)
        aa = _residue_index(sequence)
        number = _bin_index(separation, self.bins)
        usable = (aa[:, None] >= 0) & (aa[None, :] >= 0) & (number >= 0)
        update = self.log_odds[np.maximum(number, 0), np.maximum(aa, 0)[:, None], np.maximum(aa, 0)[None, :]]
        logit = logit + np.where(usable, update, 0.0)
        probs = 1.0 / (1.0 + np.exp(-logit))
        np.fill_diagonal(probs, 0.0)
        return probs.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# FreeContact (coevolution) and the Ollikainen-40 alignment set
# --------------------------------------------------------------------------------------------------------------


class FreeContactUnavailable(RuntimeError):
    """The ``freecontact`` binary is not installed (Debian package ``freecontact``)."""


class FreeContactError(RuntimeError):
    """``freecontact`` failed, timed out, or printed output that could not be read."""


_FLAT_LETTERS = frozenset(STANDARD_AMINO_ACIDS + "-")
_AS_GAP = frozenset("XBZJ.")


def read_alignment(path: str | Path) -> list[tuple[str, str]]:
    """Aligned FASTA (or flat, one sequence per line) -> ``[(name, row)]`` in freecontact's alphabet.

    Rows are upper-cased; ``U``/``O`` become ``C``/``K`` (as in :mod:`protrnn.alphabet`); ``X``, ``B``, ``Z``,
    ``J`` and ``.`` become gaps (an unknown letter carries no covariation signal). Every row must have the same
    length; anything else is an :class:`InputError` naming the file, record and position.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            text = read_bounded(handle, path).decode("ascii")
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode read it (universal newlines)
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read alignment: {error}", path=path) from error
    records: list[tuple[str, list[str]]] = []
    if text.lstrip().startswith(">"):  # aligned FASTA, read by Biopython
        import io

        from Bio import SeqIO

        for number, record in enumerate(SeqIO.parse(io.StringIO(text.lstrip()), "fasta"), start=1):
            records.append((record.id or f"record{number}", [str(record.seq)]))
    else:  # flat: one aligned sequence per line
        records = [(f"line{number}", [line.strip()]) for number, line in enumerate(text.splitlines(), start=1)
                   if line.strip()]
    rows: list[tuple[str, str]] = []
    for name, parts in records:
        letters = []
        for position, letter in enumerate("".join(parts).upper(), start=1):
            letter = PARENT_LETTER.get(letter, letter)
            if letter in _AS_GAP:
                letter = "-"
            elif letter not in _FLAT_LETTERS:
                raise InputError(f"invalid alignment letter {letter!r}", path=path, record=name, position=position)
            letters.append(letter)
        rows.append((name, "".join(letters)))
    if not rows:
        raise InputError("alignment has no sequences", path=path)
    width = len(rows[0][1])
    for name, row in rows:
        if len(row) != width or not row:
            raise InputError(f"aligned row has {len(row)} columns, expected {width}", path=path, record=name)
    return rows


@dataclass
class FreeContactBaseline:
    """Coevolution contacts from an alignment by ``freecontact`` (EVfold-mfDCA by default).

    ``predict(sequence, alignment=..., columns=...)`` maps alignment-column scores onto the residues: ``columns[i]`` is
    the 0-based alignment column of residue ``i`` (-1 if unmapped). freecontact's APC-corrected score (last column of
    its EVfold output) ranks the pairs with separation >= 6 between mapped residues; rank ``r`` (0-based; tied
    scores share the best rank) becomes ``p = L / (L + r + 1)``, so exactly the top L pairs reach 0.5 and F1/MCC at
    the default threshold score the usual top-L prediction. Other pairs (unmapped, separation < 6, not reported)
    get 0.
    """

    threads: int = 2
    parprof: str = "default"
    timeout: float = 1800.0
    executable: str | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("freecontact") is not None

    def _binary(self) -> str:
        binary = self.executable or shutil.which("freecontact")
        if binary is None:
            raise FreeContactUnavailable("freecontact is not installed (Debian: apt-get install freecontact); "
                                         "the FreeContact baseline is skipped")
        return binary

    def column_scores(self, alignment: str | Path) -> np.ndarray:
        """Run freecontact on an aligned FASTA/flat file; symmetric ncol x ncol scores, NaN where not reported."""
        binary = self._binary()
        rows = read_alignment(alignment)
        width = len(rows[0][1])
        with tempfile.TemporaryDirectory(prefix="protrnn-freecontact-") as tmp:
            flat = Path(tmp) / "alignment.flat"
            flat.write_text("".join(row + "\n" for _, row in rows), encoding="ascii")
            command = [binary, "--parprof", self.parprof, "--threads", str(self.threads),
                       "--output-format", "evfold", "--ali", str(flat)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired as error:
                raise FreeContactError(f"freecontact timed out after {self.timeout:g} s on {alignment}") from error
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise FreeContactError(f"freecontact failed on {alignment} (exit {done.returncode}): {message}")
        scores = np.full((width, width), np.nan)
        for line in done.stdout.splitlines():
            fields = line.split()
            if not fields:
                continue
            try:
                i, j, score = int(fields[0]) - 1, int(fields[2]) - 1, float(fields[-1])
            except (ValueError, IndexError) as error:
                raise FreeContactError(f"unreadable freecontact output line {line!r} for {alignment}") from error
            if not (0 <= i < width and 0 <= j < width):
                raise FreeContactError(f"freecontact reported column pair ({i + 1}, {j + 1}) outside 1..{width}")
            scores[i, j] = scores[j, i] = score
        return scores

    def predict(self, sequence: str, *, alignment: str | Path, columns: Sequence[int] | np.ndarray) -> np.ndarray:
        columns = np.asarray(columns, dtype=np.int64)
        length = len(sequence)
        if columns.shape != (length,):
            raise InputError(f"column map has {columns.size} entries for a sequence of {length} residues",
                             path=alignment)
        scores = self.column_scores(alignment)
        if columns.max(initial=-1) >= scores.shape[0]:
            raise InputError(f"column map points past the alignment's {scores.shape[0]} columns", path=alignment)
        return scores_to_probabilities(scores, columns)


def scores_to_probabilities(column_scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Rank-based probabilities ``L / (L + r + 1)`` for residue pairs (see :class:`FreeContactBaseline`)."""
    length = columns.size
    rows, cols = scored_pairs(columns >= 0)  # pairs whose residues both map to an alignment column
    values = column_scores[columns[rows], columns[cols]]
    reported = ~np.isnan(values)
    rows, cols, values = rows[reported], cols[reported], values[reported]
    probs = np.zeros((length, length), dtype=np.float64)
    if values.size:
        ordered = np.sort(-values)
        rank = np.searchsorted(ordered, -values, side="left")  # number of strictly better scores
        probs[rows, cols] = length / (length + rank + 1.0)
    probs = probs + probs.T
    return probs.astype(np.float32)


@dataclass(frozen=True)
class OllikainenCase:
    """One Ollikainen-40 domain: the structure, its Pfam alignment, and residue -> alignment column map.

    ``residue_numbers[n]`` (PDB author number with insertion code, as a string) and ``residue_letters[n]`` describe the
    n-th mapped residue, whose 0-based alignment column is ``columns[n]`` (field 1 of the ``.indices`` file).
    """

    pdb_id: str
    chain: str
    pfam: str
    structure_path: Path
    alignment_path: Path
    residue_numbers: tuple[str, ...]
    residue_letters: str
    columns: tuple[int, ...]


@contextlib.contextmanager
def ollikainen_folder(root: str | Path | None) -> Iterator[str | Path | None]:
    """``root`` as given, or, when it is a file (the shipped ``ollikainen40_pdb_msa_indices.tar.gz``), the folder it
    is unpacked into for the duration of the ``with`` block (a temporary directory, removed afterwards)."""
    if not root or not Path(root).is_file():
        yield root
        return
    with tempfile.TemporaryDirectory() as into:
        try:
            with tarfile.open(root) as tar:
                tar.extractall(into, filter="data")  # no absolute paths, links out of the tree or device files
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"--ollikainen-root: not a readable tar archive ({exc})", path=Path(root)) from None
        yield Path(into)


def _ollikainen_root(root: str | Path) -> Path:
    root = Path(root)
    if (root / "ollikainen40" / "domains.csv").is_file():
        root = root / "ollikainen40"
    if not (root / "domains.csv").is_file():
        raise InputError("not an Ollikainen-40 folder (domains.csv missing); extract "
                         "ollikainen40_pdb_msa_indices.tar.gz and pass its ollikainen40/ folder", path=root)
    return root


def ollikainen_domains(root: str | Path) -> dict[str, str]:
    """``{PDB ID (upper case): Pfam accession}`` from domains.csv."""
    path = _ollikainen_root(root) / "domains.csv"
    numbered = [(number, line) for number, line in enumerate(_read_text(path, "utf-8").splitlines(), start=1)
                if line and not line.startswith("#")]
    domains = {}
    reader = csv.reader(line for _, line in numbered)
    with reading(path):  # a field over the csv module's limit: one line naming the file and the line
        for row in csv_records(reader, lambda: numbered[reader.line_num - 1][0]):
            if len(row) < 4:
                raise InputError(f"expected at least 4 comma-separated fields, got {len(row)}", path=path,
                                 position=numbered[reader.line_num - 1][0])
            domains[row[3].strip().upper()] = row[0].strip()
    return domains


def _read_text(path: Path, encoding: str) -> str:
    """The text of one of the Ollikainen-40 files; unreadable, and a byte that is not ``encoding``, are one-line
    :class:`InputError` messages naming the file (and the byte's line and column)."""
    with reading(path), open(path, "rb") as handle:
        raw = read_bounded(handle, path)
    return decode_text(raw, path, encoding)


def load_ollikainen_case(root: str | Path, pdb_id: str) -> OllikainenCase:
    """Paths and the residue -> alignment column map of one domain (``pdb_id`` like ``1CTF`` or ``1ctf_A``)."""
    root = _ollikainen_root(root)
    code, _, chain_id = pdb_id.strip().partition("_")
    code = code.upper()
    pfam = ollikainen_domains(root).get(code)
    if pfam is None:
        raise InputError(f"{pdb_id!r} is not one of the Ollikainen-40 domains", path=root / "domains.csv")
    chain_id = chain_id or "A"
    structure = root / "pdb" / pfam / f"{code}_{chain_id}.pdb"
    alignment = root / "natural_alignments" / f"{pfam}.align.80"
    indices = root / "indices" / f"{code}_{chain_id}.indices"
    for path in (structure, alignment, indices):
        if not path.is_file():
            raise InputError("file missing from the Ollikainen-40 folder", path=path)
    numbers, letters, columns = [], [], []
    for number, line in enumerate(_read_text(indices, "ascii").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            column = int(fields[0])
            residue, chain_field = fields[3].split()
        except (ValueError, IndexError) as error:
            raise InputError("expected 'column<TAB>letter<TAB>n<TAB>resnum chain<TAB>...'", path=indices,
                             position=number) from error
        if column < 0 or chain_field != chain_id or len(fields[1]) != 1:
            raise InputError(f"bad column {column}, chain {chain_field!r} or letter {fields[1]!r}", path=indices,
                             position=number)
        numbers.append(residue)
        letters.append(fields[1].upper())
        columns.append(column)
    if not columns:
        raise InputError("no residues in the index file", path=indices)
    if len(set(numbers)) != len(numbers):
        raise InputError("a residue number occurs twice", path=indices)
    return OllikainenCase(code, chain_id, pfam, structure, alignment, tuple(numbers), "".join(letters),
                          tuple(columns))


def load_ollikainen_chain(case: OllikainenCase) -> ProteinChain:
    """The structure chain of a case, read by :func:`protrnn.data.structure.read_structure`."""
    from protrnn.data.structure import read_structure

    return read_structure(case.structure_path, chain=case.chain)


def _numbering_strings(numbering: object, length: int, chain: ProteinChain) -> list[str | None]:
    entries = list(numbering)  # type: ignore[call-overload]
    if len(entries) != length:
        raise InputError(f"meta['numbering'] has {len(entries)} entries for {length} residues", record=chain.id)
    out: list[str | None] = []
    for entry in entries:
        if isinstance(entry, (tuple, list)):
            label = "".join(str(part).strip() for part in entry)
        else:
            label = "" if entry is None else str(entry).strip()
        out.append(label or None)  # "" / None: a residue without coordinates has no author number
    return out


def ollikainen_columns(case: OllikainenCase, chain: ProteinChain) -> np.ndarray:
    """Alignment column of each residue of ``chain`` (-1 where the domain map has none).

    Residues are matched by author residue number (``chain.meta["numbering"]``: strings such as ``"53"`` or
    ``"52A"``, or ``(number, insertion code)`` pairs). Without numbering, the map's residue letters are aligned to the
    chain sequence (identities only). Either way every matched letter must agree, or it is an :class:`InputError`.
    """
    length = len(chain)
    columns = np.full(length, -1, dtype=np.int64)
    by_number = dict(zip(case.residue_numbers, range(len(case.columns)), strict=True))
    numbering = chain.meta.get("numbering")
    if numbering is not None:
        for position, label in enumerate(_numbering_strings(numbering, length, chain)):
            entry = by_number.get(label) if label is not None else None
            if entry is not None:
                columns[position] = case.columns[entry]
                if chain.sequence[position] != case.residue_letters[entry]:
                    raise InputError(f"residue {label} is {chain.sequence[position]} in the structure but "
                                     f"{case.residue_letters[entry]} in the index file", record=chain.id)
        mapped = int(np.count_nonzero(columns >= 0))
        if mapped != len(case.columns):
            raise InputError(f"only {mapped} of {len(case.columns)} indexed residues were found by residue number",
                             record=chain.id)
        return columns
    from Bio import Align

    aligner = Align.PairwiseAligner(mode="global", match_score=1.0, mismatch_score=-1000.0,
                                    open_gap_score=-2.0, extend_gap_score=-0.1)
    aligner.end_gap_score = 0.0  # the domain may start and end anywhere in the chain
    alignment = aligner.align(chain.sequence, case.residue_letters)[0]
    for (t_start, t_end), (q_start, _q_end) in zip(*alignment.aligned, strict=True):
        for offset in range(t_end - t_start):
            if chain.sequence[t_start + offset] != case.residue_letters[q_start + offset]:
                raise InputError("index-file letters do not match the chain sequence", record=chain.id)
            columns[t_start + offset] = case.columns[q_start + offset]
    if int(np.count_nonzero(columns >= 0)) != len(case.columns):
        raise InputError("the index-file residues are not a subsequence of the chain sequence", record=chain.id)
    return columns


def freecontact_ollikainen(case: OllikainenCase, chain: ProteinChain,
                           baseline: FreeContactBaseline | None = None) -> tuple[np.ndarray, list[int]]:
    """FreeContact probabilities for the structure chain of ``case`` and the 0-based residues left unmapped.

    Unmapped residues (outside the Pfam domain) get probability 0; they are returned so callers can report them.
    """
    baseline = baseline or FreeContactBaseline()
    columns = ollikainen_columns(case, chain)
    unmapped = np.flatnonzero(columns < 0).tolist()
    if unmapped:
        log.info("%s: %d of %d residues have no alignment column and get probability 0",
                 case.pdb_id, len(unmapped), len(chain))
    probs = baseline.predict(chain.sequence, alignment=case.alignment_path, columns=columns)
    return probs, unmapped


__all__ = [
    "FreeContactBaseline",
    "FreeContactError",
    "FreeContactUnavailable",
    "OllikainenCase",
    "PairPropensityBaseline",
    "RandomBaseline",
    "SeparationPrior",
    "freecontact_ollikainen",
    "load_ollikainen_case",
    "load_ollikainen_chain",
    "ollikainen_columns",
    "ollikainen_domains",
    "ollikainen_folder",
    "read_alignment",
    "scores_to_probabilities",
    "training_cutoff",
]

