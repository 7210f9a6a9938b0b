"""Per-record evaluation for ``protrnn predict --structures``: one prediction scored against its known structure.

Problems (no structure, an unreadable one, a different sequence) become a note in the summary, never an exception, so
one bad structure does not stop a prediction run.
"""

from __future__ import annotations

import numpy as np

from protrnn.data.structure_index import StructureRef
from protrnn.errors import InputError
from protrnn.evaluation.metrics import evaluate_contacts, metric_keys


def evaluation_columns() -> list[str]:
    """Metric columns added to the summary with ``--structures`` (the range metrics of ``evaluate_contacts``)."""
    return [key for key in metric_keys(bins=()) if key != "L"]


def evaluate_record(probs: np.ndarray, sequence: str, ref: StructureRef | None) -> tuple[str, str, dict[str, float]]:
    """``(structure file, note, metrics)`` for one record whose cleaned sequence is ``sequence``."""
    if ref is None:
        return "", "no structure found", {}
    try:
        chain = ref.read()
    except InputError as exc:
        return ref.path.name, f"structure not read: {exc}", {}
    if chain.sequence != sequence:
        differ = next((k for k, (a, b) in enumerate(zip(chain.sequence, sequence, strict=False)) if a != b),
                      min(len(chain.sequence), len(sequence)))
        return ref.path.name, (f"sequence mismatch: structure {len(chain.sequence)} residues, record "
                               f"{len(sequence)}, first difference at position {differ + 1}; not evaluated"), {}
    try:
        metrics = evaluate_contacts(probs.astype(np.float32), chain.contact_map(), chain.observed, bins=())
    except InputError as exc:
        return ref.path.name, f"not evaluated: {exc}", {}
    return ref.path.name, "ok", {key: value for key, value in metrics.items() if key != "L"}
