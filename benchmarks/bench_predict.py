"""Prediction throughput on real sequences and peak memory vs chain length.

1. Throughput: residues/s of ``Predictor.predict`` (model only) and of ``predict_fasta`` (end to end: batching, npz + RR
   writing, summary) on the PSICOV150 FASTA records, after a warm-up batch (the first CPU call of a recurrent layer
   pays a one-off initialisation, reported separately). Batches hold ``--max-tokens`` padded residues, by default
   what ``protrnn predict`` uses on the device (:func:`protrnn.model.predictor.default_batch_tokens`: 1,024 on a CPU,
   8,192 on a GPU); the value used is printed.
2. Memory: for each length (default 100, 250, 500, 1000, 2000) a fresh subprocess loads the model, warms up on 20
   residues and predicts one random chain of that length, and reports its own peak RSS (``VmHWM``): ``peak_rss_MB``
   over the whole process, and ``peak_rss_to_warmup_MB``, the peak up to the end of loading and warm-up (the model
   and torch before the measured chain; a peak, not the resident memory then), so each figure belongs to one length
   only.

Model: ``--model PATH``; by default the bundled model if present, else a randomly initialised default-config
``ContactModel`` (same architecture cost as a trained one of that config; stated in the output). Every process sets
glibc's malloc as ``protrnn predict`` does (:func:`protrnn.predict.memory.tune_malloc`: not when the environment sets
``MALLOC_*`` variables or ``PROTRNN_MALLOC_TUNING=0``, as for ``protrnn predict``); the output says whether it did.

Usage::

    python benchmarks/bench_predict.py [--model DIR]
        [--records 150] [--max-tokens N] [--lengths 100 250 500 1000 2000] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.commands.args import positive_int  # noqa: E402
from protrnn.utils.resources import peak_rss_mib  # noqa: E402

PSICOV_TAR = REPO / ".." / "shared" / "data" / "psicov150_gremlin_rf" / "psicov150_clean_chainA_pdb_fasta.tar.gz"


def _model_dir(requested: str | None, scratch: Path) -> tuple[Path, str]:
    """The model directory to benchmark and a description of it."""
    from protrnn.errors import InputError
    from protrnn.model.io import bundled_model_dir

    if requested:
        return Path(requested).resolve(), f"exported model {requested}"  # resolved: the memory children run in REPO
    try:
        bundled = bundled_model_dir()  # one export or an ensemble
        return bundled, f"bundled default model ({bundled})"
    except InputError:
        pass
    import torch

    from protrnn.model.config import ModelConfig
    from protrnn.model.contact_model import ContactModel
    from protrnn.model.io import save_model

    torch.manual_seed(0)
    config = ModelConfig()
    save_model(ContactModel(config), scratch / "random-default")
    return scratch / "random-default", (f"RANDOMLY INITIALISED default-config model (no bundled model found): "
                                        f"{config.cell} x{config.num_layers} h{config.hidden_size}, {config.head} head")


def _psicov_records(limit: int) -> list[tuple[str, str]]:
    if not PSICOV_TAR.is_file():
        raise SystemExit(f"PSICOV150 data not found at {PSICOV_TAR}")
    records = []
    with tarfile.open(PSICOV_TAR) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.startswith("psicov150/fasta/") and member.name.endswith(".fasta"):
                handle = tar.extractfile(member)
                assert handle is not None
                lines = handle.read().decode().split()
                records.append((lines[0].lstrip(">"), "".join(lines[1:])))
    return records[:limit]


def throughput(model_dir: Path, device: str, records: list[tuple[str, str]],
               max_tokens: int | None = None) -> dict[str, float]:
    """Warm-up, model-only and end-to-end seconds and rates on ``records``, in batches of ``max_tokens`` padded
    residues (None: what ``protrnn predict`` uses on the predictor's device, returned as ``max_tokens``)."""
    from protrnn.model.predictor import default_batch_tokens, load_model
    from protrnn.predict.run import predict_fasta

    predictor = load_model(model_dir, device=device)
    if max_tokens is None:
        max_tokens = default_batch_tokens(predictor.device)
    sequences = [seq for _, seq in records]
    residues = sum(map(len, sequences))
    start = time.perf_counter()
    predictor.predict(sequences[:4], batch_tokens=max_tokens)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    predictor.predict(sequences, batch_tokens=max_tokens)
    model_only = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "in.fasta"
        fasta.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in records))
        start = time.perf_counter()
        predict_fasta(fasta, Path(tmp) / "out", predictor, progress=False, batch_tokens=max_tokens)
        end_to_end = time.perf_counter() - start
    return {"records": len(records), "residues": residues, "max_tokens": max_tokens, "warmup_s": warmup,
            "model_only_s": model_only,
            "model_only_res_per_s": residues / model_only, "end_to_end_s": end_to_end,
            "end_to_end_res_per_s": residues / end_to_end, "end_to_end_rec_per_s": len(records) / end_to_end}


def _child(model_dir: str, device: str, length: int) -> None:
    """Runs in a fresh process: warm up, predict one chain of ``length``, print timing JSON."""
    import numpy as np

    from protrnn.model.predictor import load_model

    predictor = load_model(model_dir, device=device)
    rng = np.random.default_rng(length)
    letters = list("ACDEFGHIKLMNPQRSTVWY")
    predictor.predict(["".join(rng.choice(letters, size=20))])
    warmup_peak_mb = peak_rss_mib()  # VmHWM: the peak so far (load + warm-up), not the resident memory now
    sequence = "".join(rng.choice(letters, size=length))
    start = time.perf_counter()
    (probs,) = predictor.predict([sequence])
    seconds = time.perf_counter() - start
    assert probs.shape == (length, length)
    figures = {"seconds": seconds, "peak_rss_to_warmup_mb": warmup_peak_mb, "peak_rss_mb": peak_rss_mib()}
    if predictor.device.type == "cuda":
        import torch

        figures["gpu_peak_mb"] = torch.cuda.max_memory_allocated(predictor.device) / 2**20
    print(json.dumps(figures))


def memory_curve(model_dir: Path, device: str, lengths: list[int], timeout: float,
                 threads: int) -> list[dict[str, float]]:
    rows = []
    for length in lengths:
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(length), "--model", str(model_dir),
                                 "--device", device, "--threads", str(threads)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            rows.append({"length": length, "error": f"timed out after {timeout:.0f} s"})
            continue
        if proc.returncode != 0:
            rows.append({"length": length, "error": err.strip().splitlines()[-1] if err.strip() else "failed"})
            continue
        rows.append({"length": length, **json.loads(out.strip().splitlines()[-1])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="exported model directory (default: bundled, else random default config)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--records", type=int, default=150, help="PSICOV150 records for the throughput figure")
    parser.add_argument("--max-tokens", type=positive_int, default=None,
                        help="padded residues per batch (default: what protrnn predict uses on --device, "
                             "protrnn.model.predictor.default_batch_tokens: 1024 on CPU, 8192 on a GPU)")
    parser.add_argument("--lengths", type=int, nargs="*", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per memory subprocess")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    from protrnn.predict.memory import tune_malloc

    tuned = tune_malloc()  # as protrnn predict does, before anything is allocated
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        _child(args.model, args.device, args.child)
        return

    with tempfile.TemporaryDirectory() as scratch:
        model_dir, description = _model_dir(args.model, Path(scratch))
        print(f"model: {description}")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (load average "
              f"{load:.1f} at start), torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
        malloc = ("protrnn predict's mallopt settings" if tuned else
                  "not tuned, as protrnn predict leaves it here (MALLOC_* variables set, PROTRNN_MALLOC_TUNING=0 or not "
                  "glibc)")
        print(f"malloc: {malloc}")
        result: dict[str, object] = {"model": description, "device": args.device,
                                     "torch_threads": torch.get_num_threads(), "malloc_tuned": tuned}
        if args.records > 0:
            records = _psicov_records(args.records)
            figures = throughput(model_dir, args.device, records, args.max_tokens)
            result["throughput"] = figures
            how = "given" if args.max_tokens is not None else f"protrnn predict's default on {args.device}"
            print(f"throughput on {figures['records']} PSICOV150 chains ({figures['residues']} residues, "
                  f"--max-tokens {figures['max_tokens']}, {how}): warm-up {figures['warmup_s']:.1f} s; model only "
                  f"{figures['model_only_res_per_s']:.0f} res/s; end to end (npz + RR + summary) "
                  f"{figures['end_to_end_res_per_s']:.0f} res/s, {figures['end_to_end_rec_per_s']:.2f} rec/s")
        if args.lengths:
            rows = memory_curve(model_dir, args.device, args.lengths, args.timeout, args.threads)
            result["memory"] = rows
            print("length  seconds  peak_rss_MB  peak_rss_to_warmup_MB")
            for row in rows:
                if "error" in row:
                    print(f"{row['length']:>6}  {row['error']}")
                else:
                    print(f"{row['length']:>6}  {row['seconds']:7.2f}  {row['peak_rss_mb']:11.0f}  "
                          f"{row['peak_rss_to_warmup_mb']:21.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
