"""How much 2D context a trained pair head uses: top-L/k precision when the head sees only square tiles of the map
(``tile x tile`` pairs, nothing around them, as training blocks without ``data.block_context`` are scored) against the
whole map, per range and separation bin, with the paired difference and its bootstrap interval over chains.

    python benchmarks/head_context.py --test-set val=results/data/val.npz
    python benchmarks/head_context.py --model runs/mymodel --test-set val=results/data/val.npz --tiles 32,64,128

The encoder reads the whole chain in every view; only the head's view is cut (each member's
``ContactModel.predict_maps(..., chunk_size=tile, head_halo=0)``; an ensemble averages its members' probabilities
as ``protrnn predict`` does). A tile at least as long as a chain is that chain's whole map. A head without 2D
context (``pairwise``) scores the same in every view. Select nothing on a test set with it: it is a diagnostic.

Cost: one whole-map prediction per view. Small tiles cost more than the whole map on long chains (each tile is a
separate pass through the head): on the 487 validation chains (up to 1,000 residues) with the bundled model, 2 CPU
cores, the whole map and the 64- and 128-residue views took about 14 minutes together, while a run that added 16-
and 32-residue views had not finished after 28 minutes.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.commands.args import named_paths  # noqa: E402
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF, HEADLINE_K  # noqa: E402
from protrnn.data.chain import ProteinChain  # noqa: E402
from protrnn.evaluation.evaluate import load_test_set, parse_bins  # noqa: E402
from protrnn.evaluation.metrics import bin_label, evaluate_contacts  # noqa: E402
from protrnn.model.predictor import Predictor, load_model  # noqa: E402
from protrnn.report.aggregate import paired_difference_bootstrap  # noqa: E402

DEFAULT_BINS = "24-47,48-95,96+"
RANGE_KEYS = ("short", "medium", "long", "medium_long")


def tiled_probabilities(predictor: Predictor, sequence: str, tile: int | None) -> np.ndarray:
    """L x L contact probabilities of one chain, the members' mean; ``tile`` None: the whole map (exact inference),
    else the head sees ``tile``-residue tiles without context (:meth:`Predictor.predict_batch`)."""
    return predictor.predict_batch([predictor.clean(sequence)], tile=tile)[0]


def scores(chains: Sequence[ProteinChain], probabilities: Sequence[np.ndarray],
           bins: Sequence[tuple[int, int | None]], k: int,
           cutoff: float = DEFAULT_CONTACT_CUTOFF) -> dict[str, np.ndarray]:
    """Per-chain top-L/k precision (NaN where a chain has no scored pair there) for each range and bin, contacts at
    ``cutoff`` Å (:func:`main` passes the test set's stored cutoff, as ``protrnn evaluate`` scores it)."""
    keys = [f"{name}/P@L/{k}" for name in RANGE_KEYS] + [f"bin/{bin_label(lo, hi)}/P@L/{k}" for lo, hi in bins]
    rows = [evaluate_contacts(probs, chain.contact_map(cutoff), chain.observed, bins=bins, top_k=(k,), name=chain.id)
            for chain, probs in zip(chains, probabilities, strict=True)]
    return {key: np.array([row.get(key, math.nan) for row in rows], dtype=np.float64) for key in keys}


def compare(view: np.ndarray, whole: np.ndarray, seed: int = 0) -> tuple[float, float, float, float, int]:
    """(mean of ``view``, mean difference to ``whole``, its interval's low and high ends, chains) over the chains
    where both are defined; the interval is the paired bootstrap over chains of protrnn's report."""
    both = np.isfinite(view) & np.isfinite(whole)
    if not both.any():
        return math.nan, math.nan, math.nan, math.nan, 0
    diff = paired_difference_bootstrap(view[both][None, :], whole[both][None, :], seed=seed)
    return float(view[both].mean()), float(diff["mean"]), float(diff["low"]), float(diff["high"]), int(both.sum())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model or ensemble directory (default: the bundled model)")
    parser.add_argument("--test-set", action="append", required=True, metavar="NAME=PATH.npz",
                        help="a prepared dataset (repeatable)")
    parser.add_argument("--tiles", default="64,128", help="tile sides to cut the head's view to (default 64,128)")
    parser.add_argument("--bins", default=DEFAULT_BINS, help=f"separation bins (default {DEFAULT_BINS})")
    parser.add_argument("--k", type=int, default=HEADLINE_K, help=f"top-L/k (default {HEADLINE_K})")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        tiles = sorted({int(t) for t in args.tiles.split(",")})
    except ValueError:
        parser.error(f"--tiles must be comma-separated integers, got {args.tiles!r}")
    if tiles[0] < 1 or args.k < 1:
        parser.error(f"tiles and --k must be at least 1 (got {args.tiles}, {args.k})")
    model = load_model(args.model, device=args.device)
    bins = parse_bins(args.bins)
    for name, path in named_paths(args.test_set, "--test-set").items():
        test_set = load_test_set(name, path)
        sequences = [chain.sequence for chain in test_set.chains]
        cutoff = test_set.contact_cutoff  # the cutoff the set was prepared at, as protrnn evaluate scores it
        if cutoff != model.contact_cutoff:
            print(f"note: {name} stores contacts at {cutoff:g} A, the model was trained at {model.contact_cutoff:g} A "
                  "(protrnn evaluate refuses this pair)", file=sys.stderr)
        whole = scores(test_set.chains, [tiled_probabilities(model, s, None) for s in sequences], bins, args.k,
                       cutoff)
        print(f"{name}: {len(sequences)} chains ({model.source}); mean top-L/{args.k} precision (contacts < "
              f"{cutoff:g} A) with the head's view cut to tiles, and the paired difference to the whole map [95 % "
              f"interval over chains]")
        print(f"{'metric':>22} {'whole map':>10} " + " ".join(f"{'tile ' + str(t):>28}" for t in tiles))
        views = {t: scores(test_set.chains, [tiled_probabilities(model, s, t) for s in sequences], bins, args.k,
                           cutoff)
                 for t in tiles}
        for key, reference in whole.items():
            cells = []
            for t in tiles:
                mean, diff, low, high, _ = compare(views[t][key], reference)
                cells.append(f"{mean:.3f} {diff:+.4f} [{low:+.4f}, {high:+.4f}]")
            defined = reference[np.isfinite(reference)]
            print(f"{key:>22} {defined.mean() if defined.size else math.nan:>10.3f} "
                  + " ".join(f"{cell:>28}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
