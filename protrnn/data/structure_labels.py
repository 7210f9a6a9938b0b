"""Per-residue structure labels (8-state DSSP) for sequence-only pretraining, stored like the contact datasets: one
uncompressed ``.npz`` of flat arrays per split, read with ``np.load(allow_pickle=False)``.

Label conventions (one place; the pretraining losses, metrics and tests import them from here):

* the 8 DSSP states are :data:`SS8_STATES` = ``HGIEBTSL`` (``L`` is DSSP's blank: loop / irregular); a label is the
  index of its letter (H = 0 ... L = 7);
* the 3-state reduction is the standard one (:data:`SS8_TO_SS3`): H, G, I -> H; E, B -> E; T, S, L -> C;
* :data:`MASKED` (-1) marks a residue without a usable label: a DSSP letter outside :data:`SS8_STATES` (``-``, ``?``,
  a blank, ...) or a residue that is not one of the 20 standard amino acids (its token is ``<unk>``).

File layout (R = total residues, N = chains):

==============  ==========================  ============================================================
key             dtype / shape               meaning
==============  ==========================  ============================================================
``tokens``      uint8 (R,)                  model tokens (:data:`protrnn.alphabet.DEFAULT_ALPHABET`)
``ss8``         int8 (R,)                   8-state label 0..7, or -1 (:data:`MASKED`)
``label_mask``  bool (R,)                   True where ``ss8`` is a label (stored explicitly; checked on load)
``offsets``     int64 (N + 1,)              chain ``i`` is residues ``offsets[i]:offsets[i + 1]``
``ids``         unicode (N,)                chain IDs (unique)
``clusters``    unicode (N,)                representative ID of each chain's sequence cluster
``metadata``    uint8 (JSON bytes)          ``{"format": "protrnn-structure-labels", "format_version": 1, ...}``
==============  ==========================  ============================================================
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.alphabet import DEFAULT_ALPHABET, UNK_TOKEN
from protrnn.data.dataset import read_npz_file
from protrnn.errors import InputError
from protrnn.utils.io import atomic_path

FORMAT_NAME = "protrnn-structure-labels"
FORMAT_VERSION = 1
#: DSSP's 8 states, in label order (``L`` = DSSP's blank, loop).
SS8_STATES = "HGIEBTSL"
SS3_STATES = "HEC"
#: 8-state label -> 3-state label (H, G, I -> H; E, B -> E; T, S, L -> C).
SS8_TO_SS3 = np.array([0, 0, 0, 1, 1, 2, 2, 2], dtype=np.int64)
#: Label of a residue without one (unknown DSSP letter or non-standard residue).
MASKED = -1
_KEYS = ("tokens", "ss8", "label_mask", "offsets", "ids", "clusters")
_LETTER_TABLE = np.full(256, MASKED, dtype=np.int8)
for _index, _letter in enumerate(SS8_STATES):
    _LETTER_TABLE[ord(_letter)] = _index


def encode_dssp(dssp: str) -> np.ndarray:
    """8-state labels (int8) of a DSSP string; letters outside :data:`SS8_STATES` become :data:`MASKED`."""
    raw = np.frombuffer(dssp.encode("ascii", errors="replace"), dtype=np.uint8)
    return _LETTER_TABLE[raw]


def residue_labels(tokens: np.ndarray, dssp: str) -> np.ndarray:
    """Labels of one chain: :func:`encode_dssp`, masked where the residue token is ``<unk>`` (X, B, Z, J)."""
    labels = encode_dssp(dssp)
    if labels.shape != tokens.shape:
        raise ValueError(f"{len(dssp)} DSSP letters for {len(tokens)} residues")
    labels[tokens == UNK_TOKEN] = MASKED
    return labels


def ss8_to_ss3(labels: np.ndarray) -> np.ndarray:
    """3-state labels of 8-state labels (int64); :data:`MASKED` stays masked."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, SS8_TO_SS3[np.clip(labels, 0, 7)], MASKED)


@dataclass
class LabelledSequence:
    """One chain to store: its ID, cleaned sequence, 8-state labels (int8, :data:`MASKED` allowed) and cluster."""

    id: str
    sequence: str
    ss8: np.ndarray
    cluster: str = ""


def _json_bytes(value: object) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _unicode(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=f"<U{max((len(v) for v in values), default=1) or 1}")


def save_structure_labels(records: Sequence[LabelledSequence], path: str | Path, *,
                          info: dict[str, Any] | None = None) -> Path:
    """Write ``records`` to ``path`` (``.npz``) atomically; IDs must be unique and labels match the sequences."""
    target = Path(path)
    seen: set[str] = set()
    tokens, labels = [], []
    for record in records:
        if record.id in seen:
            raise InputError("duplicate chain ID", path=target, record=record.id)
        seen.add(record.id)
        chain_tokens = DEFAULT_ALPHABET.encode(record.sequence)
        ss8 = np.asarray(record.ss8, dtype=np.int8)
        if ss8.shape != chain_tokens.shape or ss8.min(initial=0) < MASKED or ss8.max(initial=0) >= len(SS8_STATES):
            raise InputError(f"labels of shape {ss8.shape} / out of range for {len(chain_tokens)} residues",
                             path=target, record=record.id)
        tokens.append(chain_tokens)
        labels.append(ss8)
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in tokens], out=offsets[1:])
    flat_tokens = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.uint8)
    flat_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int8)
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "ss8_states": SS8_STATES,
                "alphabet": DEFAULT_ALPHABET.to_dict(), "n_chains": len(tokens), "n_residues": int(offsets[-1]),
                "n_labelled": int((flat_labels >= 0).sum()),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "info": info or {}}
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, tokens=flat_tokens, ss8=flat_labels, label_mask=flat_labels >= 0, offsets=offsets,
                 ids=_unicode([r.id for r in records]), clusters=_unicode([r.cluster for r in records]),
                 metadata=_json_bytes(metadata))
    return target


class StructureLabelSet:
    """The chains of one label file: cheap per-chain views (``tokens(i)``, ``ss8(i)``) over the flat arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], metadata: dict[str, Any], path: Path | None = None) -> None:
        self._tokens = arrays["tokens"]
        self._ss8 = arrays["ss8"]
        self._offsets = arrays["offsets"]
        self._ids = arrays["ids"]
        self._clusters = arrays["clusters"]
        self.metadata = metadata
        self.path = path
        for array in arrays.values():
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self._offsets)

    @property
    def ids(self) -> list[str]:
        return self._ids.tolist()

    @property
    def clusters(self) -> list[str]:
        return self._clusters.tolist()

    @property
    def n_residues(self) -> int:
        return int(self._offsets[-1])

    def _span(self, index: int) -> slice:
        return slice(int(self._offsets[index]), int(self._offsets[index + 1]))

    def tokens(self, index: int) -> np.ndarray:
        """Model tokens (uint8, read-only view) of chain ``index``."""
        return self._tokens[self._span(index)]

    def ss8(self, index: int) -> np.ndarray:
        """8-state labels (int8, read-only view; :data:`MASKED` where there is none) of chain ``index``."""
        return self._ss8[self._span(index)]

    def sequence(self, index: int) -> str:
        return DEFAULT_ALPHABET.decode(self.tokens(index))

    def __repr__(self) -> str:
        return f"StructureLabelSet({len(self)} chains, {self.n_residues} residues)"


def load_structure_labels(path: str | Path) -> StructureLabelSet:
    """Read a file written by :func:`save_structure_labels` (never unpickles); InputError names file and problem."""
    source = Path(path)
    arrays, metadata = read_npz_file(source, _KEYS, format_name=FORMAT_NAME, max_version=FORMAT_VERSION,
                                     what="structure-label file",
                                     hint=" (make one with `protrnn pretrain prepare`)")
    if metadata.get("ss8_states") != SS8_STATES:
        raise InputError(f"unsupported state order {metadata.get('ss8_states')!r} (expected {SS8_STATES!r})",
                         path=source)
    offsets, n = arrays["offsets"], len(arrays["ids"])
    total = int(offsets[-1]) if offsets.size else -1
    ok = (offsets.shape == (n + 1,) and offsets[0] == 0 and bool(np.all(np.diff(offsets) >= 0))
          and arrays["tokens"].dtype == np.uint8 and arrays["tokens"].shape == (total,)
          and arrays["ss8"].dtype == np.int8 and arrays["ss8"].shape == (total,)
          and arrays["clusters"].shape == (n,)
          and np.array_equal(arrays["label_mask"], arrays["ss8"] >= 0)
          and int(arrays["ss8"].min(initial=0)) >= MASKED and int(arrays["ss8"].max(initial=0)) < len(SS8_STATES)
          and int(arrays["tokens"].max(initial=0)) < DEFAULT_ALPHABET.size)
    if not ok:
        raise InputError("corrupt structure-label file (arrays do not match their offsets or value ranges)",
                         path=source)
    return StructureLabelSet(arrays, metadata, path=source)
