"""Speed and memory of the contact network, measured in one run so the ratios are comparable.

1. Training throughput (forward + backward, real residues per second) of the bidirectional encoder for each cell,
   on a batch of variable-length chains (lengths uniform in [T/2, T], the longest = T): the exact fast path
   (prefix reversal, fused one-way kernels), the packed reference (``pack_padded_sequence``), the fused padded
   bidirectional kernel (fast but *inexact*: the reverse direction reads padding; the speed ceiling), and the
   exact path with a gradient horizon.
2. Peak memory of a full model (encoder + head) per head and crop: one training step (forward + backward) and
   ``predict_proba`` (chunked). On CPU each configuration runs in a fresh subprocess and reports the growth of
   its peak RSS (VmHWM, reset after the model is built; ``ru_maxrss`` off Linux) over the RSS after building the
   model (tracemalloc does not see torch's CPU allocator); on CUDA ``torch.cuda.max_memory_allocated``.

Run training-like code on CPU with glibc's trimming disabled (it costs 1.6-2.4x here); this script re-executes
itself with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` unless they are already set:

    python benchmarks/bench_models.py                 # CPU, < 3 minutes on 2 cores
    python benchmarks/bench_models.py --device cuda   # same tables on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.model.config import ModelConfig  # noqa: E402
from protrnn.model.contact_model import ContactModel  # noqa: E402
from protrnn.model.encoder import RecurrentEncoder  # noqa: E402
from protrnn.utils.resources import peak_rss_mib  # noqa: E402

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(batch: int, steps: int, dim: int, device: torch.device, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    x = torch.randn(batch, steps, dim, generator=generator) * mask[..., None]
    return x.to(device), mask.to(device), int(lengths.sum())


class _PaddedBidirectional(nn.Module):
    """The inexact baseline: one fused bidirectional kernel per layer over the padded tensor."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        self.rnn = rnn(config.embed_dim, config.hidden_size, num_layers=config.num_layers, batch_first=True,
                       bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0] * mask.unsqueeze(-1)


def _time_training(module: nn.Module, x: torch.Tensor, mask: torch.Tensor, device: torch.device,
                   warmup: int, repeats: int) -> float:
    """Median seconds of one forward + backward + SGD step (mean squared output as the loss)."""
    optimiser = torch.optim.SGD(module.parameters(), lr=1e-4)
    times = []
    for step in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        out = module(x, mask)
        loss = out.float().square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_throughput(args: argparse.Namespace, device: torch.device) -> None:
    print(f"\n## Encoder training throughput ({device}, B={args.batch}, T={args.length}, "
          f"H={args.hidden}x2, {args.layers} layers; real residues / s, median of {args.repeats})")
    print(f"{'cell':5} {'path':22} {'res/s':>10} {'s/step':>8} {'vs exact':>9}")
    for cell in args.cells:
        config = ModelConfig(cell=cell, hidden_size=args.hidden, num_layers=args.layers, dropout=0.0)
        x, mask, residues = _batch(args.batch, args.length, config.embed_dim, device)
        variants: list[tuple[str, nn.Module]] = []
        torch.manual_seed(0)
        variants.append(("exact (prefix reverse)", RecurrentEncoder(config)))
        variants.append(("packed reference", RecurrentEncoder(config, exact_path="packed")))
        variants.append(("padded fused (INEXACT)", _PaddedBidirectional(config)))
        horizon = ModelConfig(cell=cell, hidden_size=args.hidden, num_layers=args.layers, dropout=0.0,
                              gradient_horizon=args.horizon)
        variants.append((f"exact, horizon k={args.horizon}", RecurrentEncoder(horizon)))
        exact_time = None
        for name, module in variants:
            seconds = _time_training(module.to(device), x, mask, device, args.warmup, args.repeats)
            exact_time = exact_time or seconds
            print(f"{cell:5} {name:22} {residues / seconds:10.0f} {seconds:8.3f} {seconds / exact_time:8.2f}x",
                  flush=True)


def _memory_worker(head: str, crop: int, batch: int, mode: str, device_name: str,
                   chunk: int | None = None) -> dict[str, float]:  # seconds include one-time kernel set-up
    """Peak memory growth (MiB) of one training step or one predict_proba call (tiles of ``chunk``)."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(head=head)).to(device)
    tokens = torch.randint(2, 22, (batch, crop), device=device)
    mask = torch.ones(batch, crop, dtype=torch.bool, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = peak_rss_mib(reset=True) * 2**20
    start = time.perf_counter()
    if mode == "train":
        model.train()
        model(tokens, mask).float().mean().backward()
    else:
        model.predict_proba(tokens, mask, chunk_size=chunk)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_mib() * 2**20
    return {"peak_mib": (peak - base) / 2**20, "seconds": seconds}


def bench_memory(args: argparse.Namespace, device: torch.device) -> None:
    chunk = ModelConfig().pair_chunk_size
    print(f"\n## Peak memory of the default model per head ({device}, B={args.memory_batch}, "
          f"pair_chunk_size={chunk}; growth over the built model, MiB)")
    small = args.small_chunk
    print(f"{'head':9} {'crop':>5} {'train step':>11} {'predict':>9} {f'predict c={small}':>14}")
    for head in ("pairwise", "resnet2d"):
        for crop in args.crops:
            row = {}
            for mode, tile in (("train", None), ("predict", None), ("predict_small", small)):
                spec = [head, crop, args.memory_batch, mode.split("_")[0], str(device), tile]
                cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)]
                result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
                row[mode] = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{head:9} {crop:5d} {row['train']['peak_mib']:11.0f} {row['predict']['peak_mib']:9.0f} "
                  f"{row['predict_small']['peak_mib']:14.0f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (oneDNN primitive set-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crops", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--memory-batch", type=int, default=2)
    parser.add_argument("--small-chunk", type=int, default=64, help="tile size of the bounded-memory predict column")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(_memory_worker(*json.loads(args.memory_worker))))
        return
    if any(os.environ.get(key) != value for key, value in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    device = torch.device(args.device)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {load}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    bench_throughput(args, device)
    if not args.skip_memory:
        bench_memory(args, device)


if __name__ == "__main__":
    main()
