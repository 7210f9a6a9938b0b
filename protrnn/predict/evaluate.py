"""Per-record evaluation for ``protrnn predict --structures``: one prediction scored against its known structure.

Problems (no structure, an unreadable one, a different sequence) become a note in the summary, never an exception, so
one bad structure does not stop a prediction run.
"""

from __future__ import annotations

import numpy as np

from protrnn.conventions import HEADLINE_K
from protrnn.data.structure_index import StructureRef
from protrnn.errors import InputError
from protrnn.evaluation.metrics import chance_precision, evaluate_contacts, metric_keys

#: Prefix of the chance-level columns: ``chance/<key>`` is the expected value of ``<key>`` under a random ranking.
CHANCE_PREFIX = "chance/"


def evaluation_columns() -> list[str]:
    """Metric columns added to the summary with ``--structures``: every metric of ``evaluate_contacts`` for the ranges
    and the default separation bins, then the chance level of each range's and bin's top-L/5 precision
    (``chance/<key>``, :func:`~protrnn.evaluation.metrics.chance_precision`), so a record's precision can be read as
    a multiple of what a random ranking of its own pairs would score."""
    keys = [key for key in metric_keys() if key != "L"]
    return keys + [CHANCE_PREFIX + key for key in keys if key.endswith(f"/P@L/{HEADLINE_K}")]


def structure_label(ref: StructureRef) -> str:
    """What the summary's ``structure`` column names: the file, and the chain where the match chose one (``1abc.pdb
    chain A`` for a record ``1abcA`` found in a directory, or a map line's chain); a chain collection's file alone,
    as its chains carry the record's own ID."""
    if ref.chain is None or ref.loaded is not None:
        return ref.path.name
    return f"{ref.path.name} chain {ref.chain}"


def evaluate_record(probs: np.ndarray, sequence: str, ref: StructureRef | None) -> tuple[str, str, dict[str, float]]:
    """``(structure, note, metrics)`` for one record whose cleaned sequence is ``sequence`` (``structure``:
    :func:`structure_label`); contacts at ``ref.contact_cutoff`` (:class:`StructureRef`: the CASP 8 Å, or the cutoff
    stored with a prepared dataset)."""
    if ref is None:
        return "", "no structure found", {}
    label = structure_label(ref)
    try:
        chain = ref.read()
    except InputError as exc:
        return label, f"structure not read: {exc}", {}
    if chain.sequence != sequence:
        differ = next((k for k, (a, b) in enumerate(zip(chain.sequence, sequence, strict=False)) if a != b),
                      min(len(chain.sequence), len(sequence)))
        return label, (f"sequence mismatch: structure {len(chain.sequence)} residues, record "
                       f"{len(sequence)}, first difference at position {differ + 1}; not evaluated"), {}
    contacts = chain.contact_map(ref.contact_cutoff)  # a prepared dataset's stored cutoff, as protrnn evaluate
    try:
        metrics = evaluate_contacts(probs.astype(np.float32), contacts, chain.observed)
    except InputError as exc:
        return label, f"not evaluated: {exc}", {}
    chance = chance_precision(contacts, chain.observed, top_k=(HEADLINE_K,))
    return label, "ok", {**{key: value for key, value in metrics.items() if key != "L"},
                         **{CHANCE_PREFIX + key: value for key, value in chance.items()}}
