"""GPU readiness check (issue #13): one prepared script for a machine with CUDA.

It trains the default architecture (BiLSTM 2x64 + resnet2d 24 ch x 4 blocks) and a larger recipe (2x128, 48 ch x 8
blocks) for a fixed number of steps through the real training code (``ContactLightningModule`` under a Lightning
``Trainer``: contact loss, AdamW, warm-up/cosine schedule, gradient clipping) in ``bf16-mixed`` with cuDNN autotuning
(``benchmark=True``), then predicts a FASTA (default ``data/example.fasta``) and one long random chain with the bundled
model, in float32 and bf16. It prints, per run, the median step time, scored pairs/s and residues/s, and the peak
device memory (``torch.cuda.max_memory_allocated``; peak RSS on CPU), and writes the same as JSON (``--json``, or
``$OUT/gpu_check.json`` when ``$OUT`` is set).

Batches are synthetic (random chains, ~3 % contacts) so the script needs no prepared dataset; the speed of a step does
not depend on the labels.

    python benchmarks/gpu_check.py                # on CUDA: 60 steps per run, B=8 x T=128, a 5,000-residue chain
    python benchmarks/gpu_check.py --dry-run      # the same code path on CPU, 2 tiny steps per run (tests run this)

Without CUDA the script falls back to the dry run (and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from protrnn.utils.resources import peak_rss_mib  # noqa: E402

#: The two architectures trained: the default config and the larger recipe of issue #13.
RECIPES = {
    "default": {"hidden_size": 64, "pair_dim": 24, "head_blocks": 4},
    "large": {"hidden_size": 128, "pair_dim": 48, "head_blocks": 8},
}


def _precision(device: torch.device) -> str:
    from protrnn.model.contact_model import bf16_is_native

    if bf16_is_native(device):
        return "bf16-mixed"
    return "16-mixed" if device.type == "cuda" else "32-true"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def synthetic_batches(count: int, batch: int, length: int, seed: int = 0) -> list[dict[str, Any]]:
    """Batches in the training batch contract (docs/ARCHITECTURE.md): random full-length chains, sparse symmetric
    contacts, pair mask |i - j| >= 6."""
    from protrnn.conventions import MIN_SEPARATION

    generator = torch.Generator().manual_seed(seed)
    idx = torch.arange(length)
    separated = (idx[:, None] - idx[None, :]).abs() >= MIN_SEPARATION
    out = []
    for _ in range(count):
        contacts = (torch.rand(batch, length, length, generator=generator) < 0.03).float()
        out.append({
            "tokens": torch.randint(2, 22, (batch, length), generator=generator),
            "mask": torch.ones(batch, length, dtype=torch.bool),
            "contacts": torch.maximum(contacts, contacts.transpose(1, 2)),
            "pair_mask": separated.expand(batch, -1, -1).clone(),
            "lengths": torch.full((batch,), length, dtype=torch.long),
        })
    return out


def train_run(name: str, device: torch.device, steps: int, batch: int, length: int, warmup: int) -> dict[str, Any]:
    """``steps`` optimiser steps of the real LightningModule on ``device``; median time of the steps after
    ``warmup``."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from protrnn.model.config import ModelConfig
    from protrnn.training.loss import scored_pairs
    from protrnn.training.module import ContactLightningModule

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, *args: Any) -> None:
            _sync(device)
            self._start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            _sync(device)
            self.times.append(time.perf_counter() - self._start)

    pl.seed_everything(0, verbose=False)
    module = ContactLightningModule(ModelConfig(**RECIPES[name]), warmup_steps=max(1, steps // 5))  # type: ignore[arg-type]
    batches = synthetic_batches(steps, batch, length)
    pairs = int(scored_pairs(batches[0]["pair_mask"]).sum())
    timer = StepTimer()
    precision = _precision(device)
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
                         max_steps=steps, benchmark=device.type == "cuda", gradient_clip_val=1.0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    _reset_peak(device)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    wall = time.perf_counter() - start
    timed = timer.times[warmup:] or timer.times
    step = statistics.median(timed)
    return {"run": f"train {name}", "precision": precision, "steps": len(timer.times), "batch": batch,
            "length": length, "step_s": step, "pairs_per_s": pairs / step, "residues_per_s": batch * length / step,
            "peak_mib": _peak_mib(device), "wall_s": wall}


def predict_runs(device: torch.device, fasta: Path, long_length: int) -> list[dict[str, Any]]:
    """The bundled model on the FASTA records and on one ``long_length`` random chain, float32 and bf16 (set as
    ``Predictor.precision``, which ``predict_batch`` passes to ``predict_proba``), tiles sized to the pair budget
    ``PAIR_FEATURE_BUDGET`` (``Predictor.pair_floats``) and the Predictor's default batch size for ``device``."""
    from protrnn.data.fasta import read_fasta
    from protrnn.model.predictor import PAIR_FEATURE_BUDGET, load_model

    sequences = [record.sequence for record in read_fasta(fasta)]
    generator = torch.Generator().manual_seed(3)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    long_chain = "".join(letters[i] for i in torch.randint(0, 20, (long_length,), generator=generator).tolist())
    predictor = load_model(device=device)
    predictor.pair_floats = PAIR_FEATURE_BUDGET
    predictor.predict(sequences[:1])  # warm-up: kernels, cuDNN autotuning
    runs = []
    for precision in ("32", "bf16"):
        predictor.precision = precision
        for label, batch in ((fasta.name, sequences), (f"{long_length}-residue chain", [long_chain])):
            _reset_peak(device)
            _sync(device)
            start = time.perf_counter()
            predictor.predict(batch)
            _sync(device)
            seconds = time.perf_counter() - start
            residues = sum(map(len, batch))
            runs.append({"run": f"predict {label}", "precision": predictor.precision, "chains": len(batch),
                         "residues": residues, "seconds": seconds, "residues_per_s": residues / seconds,
                         "peak_mib": _peak_mib(device)})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same code path on CPU, a couple of tiny steps")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 60; dry run 2)")
    parser.add_argument("--batch", type=int, default=None, help="chains per batch (default 8; dry run 2)")
    parser.add_argument("--length", type=int, default=None, help="residues per chain (default 128; dry run 40)")
    parser.add_argument("--long", type=int, default=None, help="long chain to predict (default 5000; dry run 300)")
    parser.add_argument("--fasta", type=Path, default=REPO / "data" / "example.fasta")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.dry_run:
        print("no CUDA device: running the CPU dry run")
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        torch.set_num_threads(1)  # a CPU dry run shares the machine (tests run it): one thread is fastest there
    steps = args.steps or (2 if dry else 60)
    batch, length = args.batch or (2 if dry else 8), args.length or (40 if dry else 128)
    long_length = args.long or (300 if dry else 5000)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        print(f"device: {name} ({total:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}")
    else:
        from protrnn.model.contact_model import cpu_bf16_flags

        print(f"device: CPU ({os.cpu_count()} CPUs, bf16 features: {', '.join(cpu_bf16_flags()) or 'none'}), "
              f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    results = [train_run(name, device, steps, batch, length, warmup=0 if dry else 10) for name in args.recipes]
    for row in results:
        print(f"{row['run']:14} {row['precision']:10} {row['steps']:3d} steps of {row['batch']}x{row['length']}: "
              f"{row['step_s'] * 1e3:8.1f} ms/step {row['pairs_per_s']:12,.0f} pairs/s {row['residues_per_s']:10,.0f} "
              f"res/s  peak {row['peak_mib']:8,.0f} MiB", flush=True)
    predictions = predict_runs(device, args.fasta, long_length)
    for row in predictions:
        print(f"{row['run']:28} {row['precision']:4} {row['chains']:3d} chains {row['residues']:6d} res "
              f"{row['seconds']:7.2f} s {row['residues_per_s']:10,.0f} res/s  peak {row['peak_mib']:8,.0f} MiB",
              flush=True)
    out = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": str(device), "dry_run": dry, "train": results,
                                   "predict": predictions}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
