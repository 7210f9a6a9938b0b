"""The scoring conventions every layer shares, defined once (the reasoning is in docs/conventions.md).

* a contact is Cβ–Cβ < :data:`DEFAULT_CONTACT_CUTOFF` Å (Cα for glycine, virtual Cβ where Cβ is missing);
* pairs closer than :data:`MIN_SEPARATION` in sequence are never scored (CASP);
* separation ranges (:data:`RANGES`, inclusive, ``None`` = open) and the finer :data:`DEFAULT_BINS`;
* ``k`` of top-L/k precision (:data:`TOP_K`; the headline figure's :data:`HEADLINE_K`);
* the data-preparation defaults: relatives by identity / coverage, length limits, split fractions.

Torch-free and import-free, so every layer (data, model, training, evaluation, diagnostics, report) may use it.
"""

from __future__ import annotations

#: Cβ–Cβ distance (Å) below which two residues are in contact (CASP).
DEFAULT_CONTACT_CUTOFF = 8.0
#: Pairs with |i - j| below this are never scored in training, evaluation or RR output (CASP).
MIN_SEPARATION = 6
#: Separation ranges ``(low, high)``, inclusive; ``None`` means unbounded. medium_long is TAPE's metric.
RANGES: dict[str, tuple[int, int | None]] = {
    "short": (6, 11),
    "medium": (12, 23),
    "long": (24, None),
    "medium_long": (12, None),
}
#: The chains with many far pairs: at least FAR_RICH_PER_LENGTH x L true contacts in range FAR_RICH_RANGE (long:
#: |i - j| >= 24). On them long-range top-L/5 precision is not capped by a lack of far contacts, and they hold most
#: of a split's far contacts (81 % of EN's validation split, in 159 of its 487 chains; EN was the bundled model until
#: session 27). Fewer chains make its interval wider, not narrower. Training logs it as ``val/P@L5_long_far``;
#: ``protrnn compare --far-rich`` selects the same chains from an evaluation.
FAR_RICH_RANGE = "long"
FAR_RICH_PER_LENGTH = 1.0
#: Finer separation bins for "precision by separation" plots (configurable per call).
DEFAULT_BINS: list[tuple[int, int | None]] = [(6, 11), (12, 23), (24, 47), (48, 95), (96, None)]
#: k in top-L/k precision.
TOP_K: tuple[int, ...] = (1, 2, 5, 10)
#: k of the headline figure, top-L/5 (training's validation precision, usage ablation, findings, the report).
HEADLINE_K = 5

# Data preparation (protrnn prepare, protrnn pretrain prepare and the pipeline use these as their defaults).
#: Sequence identity and alignment coverage at which two chains count as relatives: the clusters that splits keep
#: together, and the training chains removed for a relative in a test set.
DEFAULT_MIN_SEQ_ID = 0.3
DEFAULT_COVERAGE = 0.5
#: Chains shorter / longer than these are not training candidates (contact data and pretraining labels).
DEFAULT_MIN_LENGTH = 20
DEFAULT_MAX_LENGTH = 1000
#: The split that training reads (``train.npz``); prepare refuses a run that would leave it out or empty.
TRAIN_SPLIT = "train"
#: Split fractions of the contact data, by sequence cluster.
DEFAULT_FRACTIONS = {TRAIN_SPLIT: 0.9, "val": 0.1}
#: Share of the pretraining labels' clusters held out for validation (Q8 / Q3, checkpoint selection).
DEFAULT_LABEL_VAL_FRACTION = 0.02
#: A prepared test set NAME is the split ``test_NAME``: its file is ``test_NAME.npz`` and the manifest's ``split``
#: column says ``test_NAME`` for its chains (leakage.tsv's ``test_set`` column holds the bare NAME).
TEST_SPLIT_PREFIX = "test_"


def split_of_test_set(name: str) -> str:
    """The split (and file stem) of prepared test set ``name``: ``ts50`` -> ``test_ts50``."""
    return TEST_SPLIT_PREFIX + name


def named_test_set(split: str) -> str | None:
    """The test set a split (or file stem) holds, or None for a training split: ``test_ts50`` -> ``ts50``."""
    return split[len(TEST_SPLIT_PREFIX):] if split.startswith(TEST_SPLIT_PREFIX) else None
