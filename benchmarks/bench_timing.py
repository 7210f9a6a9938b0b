"""Timings that used to be asserts in the test suite, printed as figures (a busy CI core must not fail a test).

1. ``evaluate_contacts`` on one random protein of each length (default 250, 500, 1000, 2000 residues): median
   seconds of several calls after a warm-up. Reference: scoring a 1000-residue protein took well under the 1.5 s
   that tests/test_metrics.py once allowed.
2. ``load_dataset`` of a prepared file of 10,000 chains (synthetic chains with the length distribution of real
   proteins), including reading every length and materialising the last chain. Reference: ~0.05 s, against the 5 s
   that tests/test_dataset.py once allowed; benchmarks/bench_data.py times the real cgdms set.

    python benchmarks/bench_timing.py [--lengths 250 500 1000 2000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.data.chain import ProteinChain  # noqa: E402
from protrnn.data.dataset import load_dataset, save_dataset  # noqa: E402
from protrnn.evaluation.metrics import evaluate_contacts  # noqa: E402


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_metrics(lengths: list[int], repeats: int) -> dict[int, float]:
    """Median seconds of ``evaluate_contacts`` per chain length (random float32 scores, 2% true contacts)."""
    rng = np.random.default_rng(0)
    evaluate_contacts(rng.random((100, 100)), rng.random((100, 100)) < 0.02)  # warm imports and caches
    figures = {}
    for length in lengths:
        probs = rng.random((length, length), dtype=np.float32)
        truth = rng.random((length, length)) < 0.02
        figures[length] = _median_seconds(lambda p=probs, t=truth: evaluate_contacts(p, t), repeats)
    return figures


def _synthetic_chains(count: int, seed: int = 0) -> list[ProteinChain]:
    """``count`` chains with log-normal lengths (median ~200, as in the PDB) and random-walk backbones."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    chains = []
    for index in range(count):
        length = int(np.clip(rng.lognormal(np.log(200), 0.5), 30, 1000))
        steps = rng.normal(size=(length, 3))
        trace = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)  # a C-alpha walk
        coords = (trace[:, None, :] + rng.normal(scale=1.5, size=(length, 4, 3))).astype(np.float32)  # N CA C CB
        chains.append(ProteinChain(f"synthetic{index}", "".join(rng.choice(letters, length)),
                                   np.ones(length, dtype=bool), coords))
    return chains


def bench_loading(count: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds to load a ``count``-chain dataset, read its lengths and build its last chain."""
    chains = _synthetic_chains(count)
    with tempfile.TemporaryDirectory(prefix="bench-timing-") as tmp:
        path = save_dataset(chains, Path(tmp) / "chains.npz")
        size_mb = path.stat().st_size / 1e6

        def load() -> None:
            dataset = load_dataset(path)
            _ = int(dataset.lengths.sum()), dataset[len(dataset) - 1]

        best = min(_median_seconds(load, 1) for _ in range(repeats))  # best of: the least disturbed run
    return {"chains": count, "residues": sum(len(c) for c in chains), "file_mb": size_mb, "load_s": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--chains", type=int, default=10_000, help="chains in the dataset-loading benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    metrics = bench_metrics(args.lengths, args.repeats)
    print(f"evaluate_contacts, median of {args.repeats} calls:")
    for length, seconds in metrics.items():
        print(f"  L = {length:5d}: {seconds * 1e3:8.1f} ms")
    loading = bench_loading(args.chains, args.repeats)
    print(f"load_dataset of {loading['chains']} chains ({loading['residues']} residues, {loading['file_mb']:.1f} MB), "
          f"incl. lengths + last chain, best of {args.repeats}: {loading['load_s'] * 1e3:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"evaluate_contacts_s": metrics, "load_dataset": loading}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
