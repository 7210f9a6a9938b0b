"""Data-layer figures: structure parsing throughput, dataset load time, and how much of a batch is real tokens.

1. Structures parsed per second: the PSICOV150 original PDB entries (``shared/data/psicov150_gremlin_rf``) extracted to
   a temporary folder and read with :func:`protrnn.read_structure`, on one process and on every core
   (``multiprocessing.Pool``).
2. Dataset load time: the cgdms set (2,204 chains) written with :func:`save_dataset` and read back with
   :func:`load_dataset` (best of several runs, including reading every chain's length and building one chain), and the
   same set replicated to 10,000 chains.
3. Real-token fraction: real residues / padded slots of :class:`TokenBudgetBatchSampler` batches vs naive fixed-size
   random batches of the same mean batch size (target >= 90 %), plus the collate throughput of the DataLoader path.

    python benchmarks/bench_data.py            # about a minute on 2 cores
    python benchmarks/bench_data.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.data.batching import (  # noqa: E402
    ContactExampleDataset,
    TokenBudgetBatchSampler,
    collate_contacts,
)
from protrnn.data.chain import ProteinChain  # noqa: E402
from protrnn.data.dataset import load_dataset, save_dataset  # noqa: E402
from protrnn.data.packing import fixed_size_batches, real_token_fraction  # noqa: E402

SHARED = REPO / ".." / "shared" / "data"


def _parse(path: str) -> int:
    from protrnn.data.structure import read_structure

    return len(read_structure(path))


def bench_parsing(tarball: Path, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-pdb-") as tmp:
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="data")
        files = sorted(str(p) for p in Path(tmp).rglob("*.pdb"))
        results: dict[str, float] = {"files": len(files)}
        start = time.perf_counter()
        residues = sum(_parse(f) for f in files)
        results["per_second_1_process"] = len(files) / (time.perf_counter() - start)
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with context.Pool(workers) as pool:
            pool.map(_parse, files[:workers])  # warm the workers (imports)
            start = time.perf_counter()
            parallel = sum(pool.map(_parse, files, chunksize=4))
            results[f"per_second_{workers}_processes"] = len(files) / (time.perf_counter() - start)
        assert parallel == residues
        results["residues"] = residues
    return results


def _timed_load(path: Path, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dataset = load_dataset(path)
        _ = dataset.lengths.sum(), dataset[len(dataset) - 1]
        best = min(best, time.perf_counter() - start)
    return best


def bench_loading(chains: list[ProteinChain], workdir: Path) -> dict[str, float]:
    small = save_dataset(chains, workdir / "cgdms.npz")
    copies = -(-10_000 // len(chains))
    big_chains = [ProteinChain(f"{c.id}~{k}", c.sequence, c.observed, c.coords, c.source, c.meta)
                  for k in range(copies) for c in chains][:10_000]
    big = save_dataset(big_chains, workdir / "cgdms10k.npz")
    return {"chains": len(chains), "load_s": _timed_load(small), "file_mb": small.stat().st_size / 1e6,
            "chains_10k": len(big_chains), "load_10k_s": _timed_load(big), "file_10k_mb": big.stat().st_size / 1e6}


def bench_batches(path: Path, budgets: list[int], crop: int | None) -> dict[str, object]:
    dataset = load_dataset(path)
    examples = ContactExampleDataset(dataset, crop_length=crop, random_crop=crop is not None)
    lengths = examples.lengths
    rows = []
    for max_tokens in budgets:
        budget = list(TokenBudgetBatchSampler(lengths, max_tokens=max_tokens, seed=0))
        bucketed = list(TokenBudgetBatchSampler(lengths, max_tokens=max_tokens, seed=0, bucket_size=512))
        mean_size = int(round(np.mean([len(b) for b in budget])))
        naive = fixed_size_batches(len(lengths), mean_size, seed=0)
        rows.append({"max_tokens": max_tokens, "batches": len(budget), "mean_batch_size": mean_size,
                     "budget_real_fraction": real_token_fraction(budget, lengths),
                     "bucketed512_real_fraction": real_token_fraction(bucketed, lengths),
                     "naive_real_fraction": real_token_fraction(naive, lengths)})
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=budgets[0], seed=0)
    start = time.perf_counter()
    n = 0
    for batch in sampler:
        n += len(collate_contacts([examples[i] for i in batch])["ids"])
    elapsed = time.perf_counter() - start
    return {"crop": crop, "rows": rows, "collate_examples_per_s": n / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psicov", type=Path, default=SHARED / "psicov150_gremlin_rf" / "psicov150_org_pdb.tar.gz")
    parser.add_argument("--cgdms", type=Path, default=SHARED / "cgdms" / "cgdms_train_val.tar.gz")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budgets", default="4096,8192,16384", help="max_tokens values (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    from protrnn.data.sources import iter_chains

    figures: dict[str, object] = {"cpus": os.cpu_count()}
    if args.psicov.is_file():
        parsing = bench_parsing(args.psicov, args.workers)
        figures["parsing"] = parsing
        print(f"structures parsed per second (PSICOV150 original PDB entries, {parsing['files']:.0f} files): "
              + ", ".join(f"{v:.1f} ({k.removeprefix('per_second_').replace('_', ' ')})"
                          for k, v in parsing.items() if k.startswith("per_second")))
    else:
        print(f"skipping parsing benchmark: {args.psicov} not found")
    start = time.perf_counter()
    chains = [o.chain for o in iter_chains(args.cgdms) if o.chain is not None]
    print(f"cgdms: {len(chains)} chains read from {args.cgdms.name} in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        loading = bench_loading(chains, Path(tmp))
        figures["loading"] = loading
        print(f"dataset load (best of 5, incl. lengths + one chain): {loading['chains']} chains "
              f"{loading['load_s'] * 1e3:.1f} ms ({loading['file_mb']:.1f} MB); {loading['chains_10k']} chains "
              f"{loading['load_10k_s'] * 1e3:.1f} ms ({loading['file_10k_mb']:.1f} MB)")
        budgets = [int(b) for b in args.budgets.split(",")]
        batches = bench_batches(Path(tmp) / "cgdms.npz", budgets, crop=None)
        figures["batches"] = batches
    print("real-token fraction on cgdms (no crop; naive = random batches of the same mean size):")
    print(f"  {'max_tokens':>10} {'batches':>8} {'mean B':>7} {'budget':>8} {'bucket512':>10} {'naive':>8}")
    for row in batches["rows"]:
        print(f"  {row['max_tokens']:>10} {row['batches']:>8} {row['mean_batch_size']:>7} "
              f"{row['budget_real_fraction']:>8.1%} {row['bucketed512_real_fraction']:>10.1%} "
              f"{row['naive_real_fraction']:>8.1%}")
    print(f"example + collate throughput: {batches['collate_examples_per_s']:.0f} chains/s (one process)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
