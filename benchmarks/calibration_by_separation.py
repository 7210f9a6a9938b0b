"""Mean predicted contact probability against the true contact rate, by sequence-separation band (issue #11's "Why":
a model whose separation embedding stops at a cap extrapolates beyond it, and predicts far pairs as often as near
ones). Pooled over every scored pair (both residues observed, |i - j| >= 6) of the chosen chains; a ratio near 1 means
the model's probabilities follow the true rate in that band, above 1 over-prediction.

    python benchmarks/calibration_by_separation.py --test-set psicov150=results/data/test_psicov150.npz --min-length 200
    python benchmarks/calibration_by_separation.py --model runs/mymodel --test-set val=results/data/val.npz

The bands default to the ones the issue measured (64-127 and >= 128 split further); ``--bands 6-11,12-23,24+`` sets
others. Probabilities come from :func:`protrnn.load_model` (the bundled model unless ``--model``), on the CPU unless
``--device``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.commands.args import named_paths  # noqa: E402
from protrnn.data.chain import ProteinChain  # noqa: E402
from protrnn.evaluation.evaluate import load_test_set, parse_bins  # noqa: E402
from protrnn.evaluation.metrics import bin_label, in_range, scored_pairs  # noqa: E402

DEFAULT_BANDS = "6-11,12-23,24-63,64-127,128-255,256+"


def calibration(chains: Sequence[ProteinChain], probabilities: Sequence[np.ndarray], bands: Sequence[tuple[int, int | None]],
                cutoff: float) -> list[dict[str, float | str]]:
    """One row per band: scored pairs, mean predicted probability, true contact rate (NaN without pairs)."""
    sums = np.zeros(len(bands))
    pairs = np.zeros(len(bands), dtype=np.int64)
    contacts = np.zeros(len(bands), dtype=np.int64)
    for chain, probs in zip(chains, probabilities, strict=True):
        truth = chain.contact_map(cutoff)
        rows, cols = scored_pairs(chain.observed)
        separation = cols - rows
        for k, (low, high) in enumerate(bands):
            member = in_range(separation, low, high)
            sums[k] += float(probs[rows[member], cols[member]].astype(np.float64).sum())
            pairs[k] += int(member.sum())
            contacts[k] += int(truth[rows[member], cols[member]].sum())
    return [{"band": bin_label(low, high), "pairs": int(n),
             "mean_probability": s / n if n else float("nan"), "contact_rate": c / n if n else float("nan")}
            for (low, high), s, n, c in zip(bands, sums, pairs, contacts, strict=True)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model or ensemble directory (default: the bundled model)")
    parser.add_argument("--test-set", action="append", required=True, metavar="NAME=PATH.npz",
                        help="a prepared dataset (repeatable)")
    parser.add_argument("--min-length", type=int, default=0, help="only chains of at least this many residues")
    parser.add_argument("--bands", default=DEFAULT_BANDS, help=f"separation bands (default {DEFAULT_BANDS})")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from protrnn.model.predictor import load_model

    model = load_model(args.model, device=args.device)
    bands = parse_bins(args.bands)
    for name, path in named_paths(args.test_set, "--test-set").items():
        test_set = load_test_set(name, path)
        chains = [chain for chain in test_set.chains if len(chain) >= args.min_length]
        rows = calibration(chains, model.predict([chain.sequence for chain in chains]), bands, test_set.contact_cutoff)
        print(f"{name}: {len(chains)} chains of >= {args.min_length} residues ({model.source})")
        print(f"{'band':>8} {'pairs':>10} {'mean predicted':>15} {'true rate':>10} {'ratio':>6}")
        for row in rows:
            ratio = row["mean_probability"] / row["contact_rate"] if row["contact_rate"] else float("nan")
            print(f"{row['band']:>8} {row['pairs']:>10} {row['mean_probability']:>15.4f} {row['contact_rate']:>10.4f} "
                  f"{ratio:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
