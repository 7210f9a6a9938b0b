"""GPU readiness check (issue #13): one prepared script for a machine with CUDA.

It trains, for a fixed number of steps through the real training code (``ContactLightningModule`` under a Lightning
``Trainer``: loss, AdamW, warm-up/cosine schedule, gradient clipping) in ``bf16-mixed`` with cuDNN autotuning
(``benchmark=True``):

* ``default``: the default architecture (BiLSTM 2x64 + resnet2d 24 ch x 4 blocks), every pair of B=8 x T=128 crops;
* ``large``: a larger one (2x128, 48 ch x 8 blocks), the same batches;
* ``bundled``: the bundled model's architecture (its first member's ``model.json``; today 2x128, 32 ch x 6 blocks,
  log separation, distogram head) as ``longrange.yaml`` trains it: 512-residue encoder windows, the head on 4 sampled
  64 x 64 pair blocks per window, batches from the real data module (``ContactDataModule``) at the config's token
  budget and at ``--bundled-tokens`` (a GPU-sized batch).

Then it predicts a FASTA (default ``data/example.fasta``) and one long random chain with the bundled model, in float32
and bf16. It prints, per run, the batch shape (chains x padded residues: the bundled recipe's real batches, whose
chains may be shorter than its 512-residue windows), the median step time, scored pairs/s and residues/s (real
residues), and the peak memory of that run: the device's (``torch.cuda.max_memory_allocated``, reset before each run)
or on CPU the process's peak RSS during the run (``VmHWM``, reset to the current RSS before each run, so it includes
torch, the model and the data already held; where it cannot be reset, the process's peak so far, and the output says
so), and writes the same as JSON (``--json``, or ``$OUT/gpu_check.json`` when ``$OUT`` is set).

The whole-map recipes train on synthetic batches (random chains, ~3 % contacts): the speed of a step does not depend on
the labels. The bundled recipe reads ``--data DIR`` (a prepared ``train.npz``, e.g. ``results_bundle/data``) or,
without it, synthetic chains (random sequences on a random walk; 150-900 residues, 200-300 in the dry run) written to a
temporary prepared dataset, so the script needs no prepared data.

    python benchmarks/gpu_check.py                # on CUDA: 60 steps per run, a 5,000-residue chain
    python benchmarks/gpu_check.py --data results_bundle/data
    python benchmarks/gpu_check.py --dry-run      # the same code path on CPU, 2 tiny steps per run (tests run this)

Without CUDA the script falls back to the dry run (and says so).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from protrnn.utils.resources import peak_rss_mib  # noqa: E402

#: The whole-map architectures trained: the default config and the larger recipe of issue #13.
RECIPES = {
    "default": {"hidden_size": 64, "pair_dim": 24, "head_blocks": 4},
    "large": {"hidden_size": 128, "pair_dim": 48, "head_blocks": 8},
}
#: The bundled recipe: the shipped architecture trained on windows and sampled pair blocks (longrange.yaml's data).
BUNDLED = "bundled"
ALL_RECIPES = [*RECIPES, BUNDLED]


def _precision(device: torch.device) -> str:
    from protrnn.model.hardware import bf16_is_native

    if bf16_is_native(device):
        return "bf16-mixed"
    return "16-mixed" if device.type == "cuda" else "32-true"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> bool:
    """Start a new peak before a run: True when :func:`_peak_mib` will then give this run's own peak, False when it
    stays the process's peak so far (on CPU without a resettable ``VmHWM``: not Linux, or /proc/self/clear_refs not
    writable)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return True
    if not Path("/proc/self/clear_refs").exists():
        return False
    from protrnn.predict.memory import release_free_memory

    gc.collect()
    release_free_memory()  # freed heap back to the OS (glibc), so the run starts from what is really held
    with contextlib.suppress(OSError):
        peak_rss_mib(reset=True)  # VmHWM back to the current RSS
        return True
    return False


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def _peak_note(row: dict[str, Any]) -> str:
    """What a printed peak is when it is not the run's own: the process's peak so far (cumulative)."""
    return "" if row.get("peak_of") == "run" else " (process peak so far: cumulative)"


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


def synthetic_dataset(directory: Path, chains: int, lengths: tuple[int, int], seed: int = 0) -> Path:
    """A prepared dataset (``train.npz``, ``val.npz``) of random chains: random sequences on a random walk of 3.8 A
    steps whose direction turns a little at a time (a compact-ish trace with contacts at all separations); N, C and
    Cb are the Ca position (only Cb-Cb distances are read). Returns ``directory``."""
    import numpy as np

    from protrnn.data.chain import ProteinChain
    from protrnn.data.dataset import save_dataset

    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    made = []
    for k in range(chains):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        direction = rng.normal(size=3)
        trace = np.zeros((length, 3))
        for i in range(1, length):
            direction = direction / np.linalg.norm(direction) + rng.normal(scale=0.9, size=3)
            trace[i] = trace[i - 1] + 3.8 * direction / np.linalg.norm(direction)
        made.append(ProteinChain(id=f"synthetic{k}", sequence="".join(rng.choice(letters, length)),
                                 observed=np.ones(length, dtype=bool), coords=np.repeat(trace[:, None], 4, axis=1)))
    directory.mkdir(parents=True, exist_ok=True)
    save_dataset(made[: max(1, chains - 2)], directory / "train.npz")
    save_dataset(made[max(1, chains - 2):], directory / "val.npz")
    return directory


def _block_pairs(batch: dict[str, Any]) -> int:
    """Pairs the loss scores in a batch with sampled pair blocks (each block pair once per block, pair mask
    applied), as ``ContactLightningModule._training_loss`` counts them."""
    from protrnn.model.heads import BlockOutputs

    return int(BlockOutputs.positions(batch["blocks"], int(batch["block_size"])).scored(batch["pair_mask"]).sum())


def bundled_batches(data: Path, steps: int, max_tokens: int | None,
                    overrides: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list]:
    """The bundled architecture (with ``overrides`` of its keys), longrange.yaml's module and data settings
    (``max_tokens`` and ``max_pairs`` scaled together when ``max_tokens`` is given) and ``steps`` training batches of
    ``data/train.npz`` from the real data module, in its shuffled order."""
    import yaml

    from protrnn.model.io import load_networks
    from protrnn.training.datamodule import ContactDataModule

    spec = yaml.safe_load((REPO / "protrnn" / "configs" / "longrange.yaml").read_text())
    settings = {k: v for k, v in spec["data"].items() if k not in ("train_path", "val_path", "num_workers")}
    if max_tokens is not None:
        scale = max_tokens / settings["max_tokens"]
        settings["max_tokens"], settings["max_pairs"] = max_tokens, int(settings["max_pairs"] * scale)
    module = {k: v for k, v in spec["model"].items() if k != "model"}
    architecture = {**load_networks()[0].config.to_dict(), **(overrides or {})}
    dm = ContactDataModule(data / "train.npz", data / "val.npz", **settings)
    dm.setup("fit")
    batches: list = []
    epoch = 0
    while len(batches) < steps:
        loader = dm.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)  # as Lightning does before each epoch: new crops, blocks, order
        batches.extend(loader)
        epoch += 1
    return architecture, module, settings, batches[:steps]


def train_run(name: str, device: torch.device, steps: int, batch: int, length: int, warmup: int,
              data: Path | None = None, max_tokens: int | None = None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``steps`` optimiser steps of the real LightningModule on ``device``; median time of the steps after
    ``warmup``. ``name`` is a whole-map recipe of :data:`RECIPES` (synthetic ``batch`` x ``length`` batches) or
    :data:`BUNDLED` (real batches of ``data``, at ``max_tokens`` or the config's budget)."""
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
    settings: dict[str, Any] = {}
    if name == BUNDLED:
        if data is None:
            raise ValueError("the bundled recipe needs a prepared dataset directory")
        architecture, module_options, settings, batches = bundled_batches(data, steps, max_tokens, overrides)
        module = ContactLightningModule(architecture, **{**module_options, "warmup_steps": max(1, steps // 5)})
        pair_counts = [_block_pairs(b) for b in batches]
    else:
        module = ContactLightningModule(ModelConfig(**RECIPES[name]), warmup_steps=max(1, steps // 5))  # type: ignore[arg-type]
        batches = synthetic_batches(steps, batch, length)
        pair_counts = [int(scored_pairs(b["pair_mask"]).sum()) for b in batches]
    residue_counts = [int(b["mask"].sum()) for b in batches]
    timer = StepTimer()
    precision = _precision(device)
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
                         max_steps=steps, benchmark=device.type == "cuda", gradient_clip_val=1.0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    per_run = _reset_peak(device)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    wall = time.perf_counter() - start
    first = warmup if len(timer.times) > warmup else 0
    timed = timer.times[first:]
    seconds = sum(timed)
    label = f"train {name}" + (f" {settings['max_tokens']} tokens" if settings else "")
    label += "".join(f" {key}={value}" for key, value in (overrides or {}).items())
    # the batches' real shape: chains x padded residues (mean over the batches); the bundled recipe's windows
    # (crop_length) and pair blocks beside it
    shape = ({"batch": round(statistics.mean(len(b["lengths"]) for b in batches), 1),
              "length": round(statistics.mean(int(b["tokens"].shape[1]) for b in batches)),
              "window": settings["crop_length"], "pair_block": settings["pair_block"]} if settings
             else {"batch": batch, "length": length})
    return {"run": label, "precision": precision, "steps": len(timer.times), **shape,
            "step_s": statistics.median(timed), "pairs_per_s": sum(pair_counts[first:]) / seconds,
            "residues_per_s": sum(residue_counts[first:]) / seconds, "peak_mib": _peak_mib(device),
            "peak_of": "run" if per_run else "process so far", "wall_s": wall}


def predict_runs(device: torch.device, fasta: Path, long_length: int) -> list[dict[str, Any]]:
    """The bundled model on the FASTA records and on one ``long_length`` random chain, float32 and bf16 (set as
    ``Predictor.precision``, which ``predict_batch`` passes to the model's ``predict_maps``), tiles sized to the pair budget
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
            per_run = _reset_peak(device)
            _sync(device)
            start = time.perf_counter()
            predictor.predict(batch)
            _sync(device)
            seconds = time.perf_counter() - start
            residues = sum(map(len, batch))
            runs.append({"run": f"predict {label}", "precision": predictor.precision, "chains": len(batch),
                         "residues": residues, "seconds": seconds, "residues_per_s": residues / seconds,
                         "peak_mib": _peak_mib(device), "peak_of": "run" if per_run else "process so far"})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same code path on CPU, a couple of tiny steps")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 60; dry run 2)")
    parser.add_argument("--batch", type=int, default=None, help="chains per batch (default 8; dry run 2)")
    parser.add_argument("--length", type=int, default=None, help="residues per chain (default 128; dry run 40)")
    parser.add_argument("--long", type=int, default=None, help="long chain to predict (default 5000; dry run 300)")
    parser.add_argument("--fasta", type=Path, default=REPO / "data" / "example.fasta")
    parser.add_argument("--recipes", nargs="+", default=ALL_RECIPES, choices=ALL_RECIPES)
    parser.add_argument("--data", type=Path, default=None,
                        help="prepared dataset directory (train.npz, val.npz) for the bundled recipe (default: "
                             "synthetic chains in a temporary directory)")
    parser.add_argument("--bundled-tokens", type=int, nargs="+", default=None,
                        help="token budgets of the bundled recipe's batches; 0 = longrange.yaml's own (default on "
                             "CUDA: 0 8192; dry run: 0)")
    parser.add_argument("--bundled-set", nargs="+", default=[], metavar="KEY=INT",
                        help="architecture overrides of the bundled recipe, e.g. hidden_size=256 pair_dim=64 (sizing "
                             "a larger model)")
    parser.add_argument("--no-predict", action="store_true", help="train rows only")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.bundled_set:
        key, _, value = item.partition("=")
        if not value.isdigit():
            parser.error(f"--bundled-set {item}: expected KEY=INT")
        overrides[key] = int(value)
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
        from protrnn.model.hardware import cpu_bf16_flags

        print(f"device: CPU ({os.cpu_count()} CPUs, bf16 features: {', '.join(cpu_bf16_flags()) or 'none'}), "
              f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    warmup = 0 if dry else 10
    results = [train_run(name, device, steps, batch, length, warmup) for name in args.recipes if name != BUNDLED]
    if BUNDLED in args.recipes:
        with tempfile.TemporaryDirectory() as scratch:
            data = args.data or synthetic_dataset(Path(scratch), chains=8 if dry else 64,
                                                  lengths=(200, 300) if dry else (150, 900))
            for tokens in args.bundled_tokens or ([0] if dry else [0, 8192]):
                results.append(train_run(BUNDLED, device, steps, batch, length, warmup, data=data,
                                         max_tokens=tokens or None, overrides=overrides))
    print("peak: " + ("device memory allocated (torch.cuda.max_memory_allocated) during each run" if device.type ==
                      "cuda" else "process RSS (VmHWM) during each run, torch, model and data included"))
    for row in results:
        shape = f"{row['batch']}x{row['length']}"
        if "window" in row:
            shape += f" ({row['window']} windows, {row['pair_block']}^2 blocks)"
        print(f"{row['run']:26} {row['precision']:10} {row['steps']:3d} steps of {shape}: "
              f"{row['step_s'] * 1e3:8.1f} ms/step {row['pairs_per_s']:12,.0f} pairs/s {row['residues_per_s']:10,.0f} "
              f"res/s  peak {row['peak_mib']:8,.0f} MiB{_peak_note(row)}", flush=True)
    predictions = [] if args.no_predict else predict_runs(device, args.fasta, long_length)
    for row in predictions:
        print(f"{row['run']:28} {row['precision']:4} {row['chains']:3d} chains {row['residues']:6d} res "
              f"{row['seconds']:7.2f} s {row['residues_per_s']:10,.0f} res/s  peak {row['peak_mib']:8,.0f} MiB"
              f"{_peak_note(row)}", flush=True)
    out = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": str(device), "dry_run": dry, "train": results,
                                   "predict": predictions}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
