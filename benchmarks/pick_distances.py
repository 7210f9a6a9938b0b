"""Where a model's top-L/k picks land in space, per separation band: the true Cβ-Cβ distance of every pair a model
ranks among a chain's top L/k of the band (ranked as top-L/k precision ranks them), pooled over chains, as fractions in
distance shells, beside the same fractions over all the band's scored pairs (what a random ranking picks on average).
The shells below the test set's stored contact cutoff are what precision counts (at 8 Å the first shell; another
cutoff is added as a shell edge); the next ones tell near misses (pairs close in space that do not touch) from picks
with no spatial basis. ``--near W`` adds, for the picks that are not contacts, the fraction with a
true contact within W residues in both i and j (a shifted register), beside the same fraction over all the band's
non-contacts. A diagnostic: nothing is selected on it.

    python benchmarks/pick_distances.py --test-set psicov150=results/data/test_psicov150.npz
    python benchmarks/pick_distances.py --model runs/mymodel --test-set val=results/data/val.npz --bands 24-95,96+ --k 2
    python benchmarks/pick_distances.py --test-set psicov150=results/data/test_psicov150.npz --near 2

Probabilities come from :func:`protrnn.load_model` (the bundled model unless ``--model``), on the CPU unless
``--device``. Pooling weighs a chain by its picks (L/k of them), so long chains count more than in the per-protein
mean that precision reports.
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
from protrnn.conventions import DEFAULT_CONTACT_CUTOFF  # noqa: E402
from protrnn.data.chain import ProteinChain  # noqa: E402
from protrnn.evaluation.evaluate import load_test_set, parse_bins  # noqa: E402
from protrnn.evaluation.metrics import bin_label, in_range, rank_pairs, scored_pairs, top_count  # noqa: E402

DEFAULT_BANDS = "24-95,96+"
#: Upper edges (Å) of the distance shells; the last shell is everything farther.
SHELLS = (8.0, 12.0, 16.0, 24.0)


def shell_labels(shells: Sequence[float] = SHELLS) -> list[str]:
    edges = [0.0, *shells]
    return [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:], strict=False)] + [f">={shells[-1]:g}"]


def shell_fractions(distances: np.ndarray, shells: Sequence[float] = SHELLS) -> list[float]:
    """Fraction of ``distances`` in each shell ``[0, s0), [s0, s1), ..., [s_last, inf)``; NaN for no distances."""
    if distances.size == 0:
        return [float("nan")] * (len(shells) + 1)
    counts = np.bincount(np.searchsorted(np.asarray(shells), distances, side="right"), minlength=len(shells) + 1)
    return (counts / distances.size).tolist()


def near_contact(contacts: np.ndarray, width: int) -> np.ndarray:
    """Bool L x L: some ``contacts[a, b]`` with ``|a - i| <= width`` and ``|b - j| <= width`` (a (2w+1)^2 window)."""
    length = contacts.shape[0]
    padded = np.zeros((length + 2 * width, length + 2 * width), dtype=bool)
    padded[width:width + length, width:width + length] = contacts
    near = np.zeros_like(contacts, dtype=bool)
    for di in range(2 * width + 1):
        for dj in range(2 * width + 1):
            near |= padded[di:di + length, dj:dj + length]
    return near


def pick_distances(chains: Sequence[ProteinChain], probabilities: Sequence[np.ndarray],
                   bands: Sequence[tuple[int, int | None]], k: int,
                   near: int | None = None, cutoff: float = DEFAULT_CONTACT_CUTOFF) -> list[dict[str, object]]:
    """One row per band: the chains with scored pairs in it, the true distances of each chain's top-L/k picks in the
    band (``picked``) and of all its scored pairs there (``all``), both pooled over chains. With ``near`` = W also
    ``near_picked`` / ``near_all``: (non-contacts with a scored contact within W residues in both i and j,
    non-contacts) among the picks and among all the band's pairs; contacts are pairs closer than ``cutoff`` Å
    (:func:`main` passes the test set's stored cutoff, as ``protrnn evaluate`` scores it)."""
    picked: list[list[np.ndarray]] = [[] for _ in bands]
    every: list[list[np.ndarray]] = [[] for _ in bands]
    chains_with_pairs = [0] * len(bands)
    near_counts = np.zeros((len(bands), 2, 2), dtype=np.int64)  # band, (picked, all), (near, non-contacts)
    for chain, probs in zip(chains, probabilities, strict=True):
        distance = chain.distance_map()
        rows, cols = scored_pairs(chain.observed)
        contacts = np.zeros(distance.shape, dtype=bool)
        contacts[rows, cols] = chain.contact_map(cutoff)[rows, cols]
        shifted = near_contact(contacts, near) if near is not None else None
        order = rank_pairs(probs[rows, cols], rows, cols)
        ranked_rows, ranked_cols = rows[order], cols[order]
        for b, (low, high) in enumerate(bands):
            member = in_range(ranked_cols - ranked_rows, low, high)
            if not member.any():
                continue
            chains_with_pairs[b] += 1
            band_rows, band_cols = ranked_rows[member], ranked_cols[member]
            band_distances = distance[band_rows, band_cols].astype(np.float64)
            count = top_count(len(chain), k)
            picked[b].append(band_distances[:count])
            every[b].append(band_distances)
            if shifted is not None:
                miss = ~contacts[band_rows, band_cols]
                close = shifted[band_rows, band_cols] & miss
                near_counts[b, 0] += (int(close[:count].sum()), int(miss[:count].sum()))
                near_counts[b, 1] += (int(close.sum()), int(miss.sum()))
    rows_out: list[dict[str, object]] = []
    for b, (low, high) in enumerate(bands):
        row: dict[str, object] = {"band": bin_label(low, high), "chains": chains_with_pairs[b],
                                  "picked": np.concatenate(picked[b]) if picked[b] else np.zeros(0),
                                  "all": np.concatenate(every[b]) if every[b] else np.zeros(0)}
        if near is not None:
            row["near_picked"] = tuple(int(v) for v in near_counts[b, 0])
            row["near_all"] = tuple(int(v) for v in near_counts[b, 1])
        rows_out.append(row)
    return rows_out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model or ensemble directory (default: the bundled model)")
    parser.add_argument("--test-set", action="append", required=True, metavar="NAME=PATH.npz",
                        help="a prepared dataset (repeatable)")
    parser.add_argument("--bands", default=DEFAULT_BANDS, help=f"separation bands (default {DEFAULT_BANDS})")
    parser.add_argument("--k", type=int, default=5, help="top-L/k picks per chain and band (default 5)")
    parser.add_argument("--near", type=int, default=None, metavar="W",
                        help="also the fraction of non-contact picks with a contact within W residues in i and j")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.k < 1 or (args.near is not None and args.near < 0):
        parser.error(f"--k must be at least 1 and --near at least 0 (got {args.k}, {args.near})")
    from protrnn.model.predictor import load_model

    model = load_model(args.model, device=args.device)
    bands = parse_bins(args.bands)
    for name, path in named_paths(args.test_set, "--test-set").items():
        test_set = load_test_set(name, path)
        if test_set.contact_cutoff != model.contact_cutoff:
            print(f"note: {name} stores contacts at {test_set.contact_cutoff:g} A, the model was trained at "
                  f"{model.contact_cutoff:g} A (protrnn evaluate refuses this pair)", file=sys.stderr)
        shells = tuple(sorted({*SHELLS, test_set.contact_cutoff}))  # the cutoff is always a shell edge
        labels = shell_labels(shells)
        rows = pick_distances(test_set.chains, model.predict([chain.sequence for chain in test_set.chains]), bands,
                              args.k, args.near, cutoff=test_set.contact_cutoff)
        print(f"{name}: {len(test_set.chains)} chains ({model.source}); top-L/{args.k} picks per chain and band; "
              f"fractions by true Cb-Cb distance (A); contacts < {test_set.contact_cutoff:g} A")
        near_header = f" {'near+-' + str(args.near):>9}" if args.near is not None else ""
        print(f"{'band':>7} {'pairs':>8} {'chains':>6} {'of':>6} " + " ".join(f"{label:>7}" for label in labels)
              + f" {'median':>7}" + near_header)
        for row in rows:
            for which in ("picked", "all"):
                values = row[which]
                assert isinstance(values, np.ndarray)
                median = float(np.median(values)) if values.size else float("nan")
                extra = ""
                if args.near is not None:
                    close, misses = row[f"near_{which}"]  # type: ignore[misc]
                    extra = f" {close / misses if misses else float('nan'):>9.3f}"
                print(f"{row['band']:>7} {values.size:>8} {row['chains']:>6} {which:>6} "
                      + " ".join(f"{f:>7.3f}" for f in shell_fractions(values, shells)) + f" {median:>7.1f}" + extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
