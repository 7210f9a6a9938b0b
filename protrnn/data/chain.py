"""The protein chain object every reader returns and every dataset, metric and model consumes."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, MIN_SEPARATION
from protrnn.errors import InputError

#: Atom order in :attr:`ProteinChain.coords`.
ATOMS = ("N", "CA", "C", "CB")


def check_contact_cutoff(value: Any, what: str, *, path: object | None = None) -> float:
    """``value`` as a contact cutoff in Å: a finite number > 0 (the one check of every cutoff protrnn is given or
    reads: ``prepare --contact-cutoff``, a dataset's stored cutoff, ``data.contact_cutoff``). Anything else (NaN,
    infinity, zero, a negative number, a bool, text) is a one-line :class:`InputError` "``what``: must be a finite
    distance > 0 Å, got ..." naming ``path`` where given: an infinite cutoff made every observed pair a contact (a
    top-L/5 precision of 1.0) and reached the JSON files as ``Infinity``, which is not JSON."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        shown = repr(float(value)) if number else repr(value)
        raise InputError(f"{what}: must be a finite distance > 0 Å, got {shown}", path=path)
    return float(value)


def virtual_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal-geometry Cβ from backbone atoms (the trRosetta/CASP constants); arrays of shape (..., 3)."""
    b = ca - n
    cc = c - ca
    a = np.cross(b, cc)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca


def complete_cb(sequence: str, coords: np.ndarray, glycine: np.ndarray | None = None) -> np.ndarray:
    """Fill the Cβ slot of an L×4×3 array: real Cβ kept, Cα for glycine, virtual Cβ where Cβ is missing.

    Glycine uses Cα by the CASP definition even when a (virtual) Cβ could be built. ``glycine`` (bool, L) says which
    residues are glycines when that is known better than from ``sequence``'s letters: a structure reader passes the
    residues of the coordinates, whose deposited letter may differ.
    """
    coords = np.array(coords, dtype=np.float32, copy=True)
    n, ca, c, cb = (coords[:, k] for k in range(4))
    missing = np.isnan(cb).any(axis=1)
    built = virtual_cb(n.astype(np.float64), ca.astype(np.float64), c.astype(np.float64)).astype(np.float32)
    cb[missing] = built[missing]
    if glycine is None:
        glycine = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8) == ord("G")
    elif np.shape(glycine) != (len(coords),):
        raise ValueError(f"glycine mask of shape {np.shape(glycine)} for {len(coords)} residues")
    cb[glycine] = ca[glycine]
    coords[:, 3] = cb
    return coords


@dataclass
class ProteinChain:
    """One protein chain.

    Attributes:
        id: identifier (file stem + chain, or the record ID).
        sequence: the full sequence (deposited sequence where the file has one), canonical letters.
        observed: bool (L,), True where the residue has usable coordinates (a Cβ, real or virtual).
        coords: float32 (L, 4, 3): N, Cα, C, Cβ; NaN where unobserved. Cβ is already completed
            (real, virtual, or Cα for glycine), so contacts need only this column.
        source: where the chain came from (path, ``path#record``), for manifests and error messages.
    """

    id: str
    sequence: str
    observed: np.ndarray
    coords: np.ndarray
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        length = len(self.sequence)
        self.observed = np.asarray(self.observed, dtype=bool)
        self.coords = np.asarray(self.coords, dtype=np.float32)
        if self.observed.shape != (length,):
            raise InputError(f"observed mask has shape {self.observed.shape}, expected ({length},)",
                             path=self.source or None, record=self.id)
        if self.coords.shape != (length, 4, 3):
            raise InputError(f"coords have shape {self.coords.shape}, expected ({length}, 4, 3)",
                             path=self.source or None, record=self.id)

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def cb(self) -> np.ndarray:
        """Cβ coordinates (L, 3); NaN where unobserved."""
        return self.coords[:, 3]

    def distance_map(self) -> np.ndarray:
        """Cβ–Cβ distances (L×L, float32); NaN where either residue is unobserved."""
        cb = self.cb.astype(np.float32)
        diff = cb[:, None, :] - cb[None, :, :]
        dist = np.sqrt((diff * diff).sum(-1))
        unobserved = ~self.observed
        dist[unobserved, :] = np.nan
        dist[:, unobserved] = np.nan
        return dist

    def contact_map(self, cutoff: float = DEFAULT_CONTACT_CUTOFF) -> np.ndarray:
        """Bool L×L, True where Cβ–Cβ < cutoff; False wherever a residue is unobserved. Symmetric.

        The diagonal and short separations are not removed here: scoring masks them (see ``pair_mask``).
        """
        with np.errstate(invalid="ignore"):
            return self.distance_map() < cutoff

    def pair_mask(self, min_separation: int = MIN_SEPARATION) -> np.ndarray:
        """Bool L×L of pairs that are scored: both residues observed and |i − j| ≥ min_separation."""
        idx = np.arange(len(self))
        sep = np.abs(idx[:, None] - idx[None, :]) >= min_separation
        return sep & self.observed[:, None] & self.observed[None, :]
