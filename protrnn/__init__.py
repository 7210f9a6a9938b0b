"""protrnn: protein contact prediction with recurrent networks, and measurements of how far BPTT sees.

Public, stable API (README.md "What you can do with it"; docs/predict.md, docs/conventions.md):

* :func:`read_structure` – PDB/mmCIF (plain or .gz) → :class:`ProteinChain`
* :func:`read_fasta` – FASTA (plain or .gz) → list of validated records with ``id`` and ``sequence`` (as written)
* :func:`evaluate_contacts` – CASP-convention precision by separation range for one protein
* :func:`load_model` – the bundled default model, or an exported one; ``model.predict(sequences)``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Alphabet",
    "InputError",
    "ProteinChain",
    "evaluate_contacts",
    "load_model",
    "read_fasta",
    "read_structure",
    "__version__",
]

_LAZY = {
    "Alphabet": ("protrnn.alphabet", "Alphabet"),
    "InputError": ("protrnn.errors", "InputError"),
    "ProteinChain": ("protrnn.data.chain", "ProteinChain"),
    "read_structure": ("protrnn.data.structure", "read_structure"),
    "read_fasta": ("protrnn.data.fasta", "read_fasta"),
    "evaluate_contacts": ("protrnn.evaluation.metrics", "evaluate_contacts"),
    "load_model": ("protrnn.model.predictor", "load_model"),
}

if TYPE_CHECKING:  # pragma: no cover
    from protrnn.alphabet import Alphabet
    from protrnn.data.chain import ProteinChain
    from protrnn.data.fasta import read_fasta
    from protrnn.data.structure import read_structure
    from protrnn.errors import InputError
    from protrnn.evaluation.metrics import evaluate_contacts
    from protrnn.model.predictor import load_model


def __getattr__(name: str) -> Any:
    """Import on first use, so ``import protrnn`` does not pull in torch or Biopython."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'protrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API too (it is imported lazily, so ``dir(protrnn)`` and tab completion would not show it)."""
    return sorted(set(globals()) | set(__all__))
