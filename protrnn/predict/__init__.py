"""FASTA -> contact files: what ``protrnn predict`` runs (see docs/predict.md).

* :mod:`protrnn.predict.run`: :func:`predict_fasta`, the resumable FASTA -> RR / npz / PNG / summary.tsv run;
* :mod:`protrnn.predict.writers`: the npz, PNG and summary writers (deterministic, atomic);
* :mod:`protrnn.predict.evaluate`: one record scored against its structure (``--structures``).

The predictor itself (cleaning with the model's alphabet, encoding, batching, tiled pair scoring) lives with the model,
:mod:`protrnn.model.predictor`; :func:`load_model` and :class:`Predictor` are re-exported here for convenience.
"""

from __future__ import annotations

from protrnn.model.predictor import Predictor, load_model
from protrnn.predict.run import PredictionRun, predict_fasta

__all__ = ["PredictionRun", "Predictor", "load_model", "predict_fasta"]
