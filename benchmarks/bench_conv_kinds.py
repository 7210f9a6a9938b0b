"""Cost of the pair head's 3x3 dilated convolution against cheaper-arithmetic alternatives (issue #13).

The resnet2d head's dilated 3x3 convolutions are most of a training step, so the only way to a much cheaper pair is
fewer multiply-adds per pair. This measures, on one torch thread, forward + backward of one convolution layer on a
channels-last ``[B, C, T, T]`` map (B = 8, T = 128, dilation 2, as in the head), in float32 and bfloat16:

* ``dense 3x3``: what the head runs (9 C^2 multiply-adds per pair);
* ``depthwise 3x3 + 1x1``: a depthwise-separable layer (9 C + C^2 per pair: 6.5x fewer at C = 24);
* ``1x3 + 3x1``: an axial factorisation with the same 3x3 reach (6 C^2 per pair: 1.5x fewer);
* ``space-to-batch 3x3``: the dense layer's exact arithmetic with the dilation taken out: the map is split into its
  dilation^2 interleaved subgrids, each convolved with an undilated 3x3, and put back (same weights, same result;
  it pays only if oneDNN's dilated kernels are slower than its plain ones).

Each is timed in CPU seconds (``time.process_time``, median of ``--repeats``, the kinds interleaved repeat by
repeat), so the ratios hold on a shared CPU. Fewer multiply-adds only pay if oneDNN runs the kernel near the dense
kernel's throughput; this shows whether it does on the CPU at hand.

    python benchmarks/bench_conv_kinds.py               # about a minute
    python benchmarks/bench_conv_kinds.py --channels 24,48 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protrnn.model.hardware import cpu_bf16_flags  # noqa: E402


def _layer(kind: str, channels: int, dilation: int) -> nn.Module:
    if kind == "dense 3x3":
        return nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
    if kind == "depthwise 3x3 + 1x1":
        return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels),
                             nn.Conv2d(channels, channels, 1))
    if kind == "1x3 + 3x1":
        return nn.Sequential(nn.Conv2d(channels, channels, (1, 3), padding=(0, dilation), dilation=dilation),
                             nn.Conv2d(channels, channels, (3, 1), padding=(dilation, 0), dilation=dilation))
    if kind == "space-to-batch 3x3":
        return SpaceToBatchConv(channels, dilation)
    raise ValueError(kind)


class SpaceToBatchConv(nn.Module):
    """A dilated 3x3 convolution computed as an undilated one on the map's dilation^2 interleaved subgrids."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        b, c, h, w = x.shape
        hp, wp = -(-h // d) * d, -(-w // d) * d  # pad to a multiple of the dilation; zeros = the conv's own padding
        x = nn.functional.pad(x, (0, wp - w, 0, hp - h))
        grids = x.reshape(b, c, hp // d, d, wp // d, d).permute(0, 3, 5, 1, 2, 4).reshape(b * d * d, c, hp // d, wp // d)
        y = self.conv(grids.contiguous(memory_format=torch.channels_last))
        y = y.reshape(b, d, d, c, hp // d, wp // d).permute(0, 3, 4, 1, 5, 2).reshape(b, c, hp, wp)
        return y[:, :, :h, :w].contiguous(memory_format=torch.channels_last)


KINDS = {"dense 3x3": lambda c: 9 * c * c, "depthwise 3x3 + 1x1": lambda c: 9 * c + c * c,
         "1x3 + 3x1": lambda c: 6 * c * c, "space-to-batch 3x3": lambda c: 9 * c * c}


def _step(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).float().sum().backward()
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="24,32,48", help="channel counts (24 = default head, 48 = large)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dilation", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, 1 thread, bf16 features: {', '.join(cpu_bf16_flags()) or 'none'}; "
          f"B={args.batch}, T={args.length}, dilation {args.dilation}; forward + backward of one layer, CPU ms "
          f"(median of {args.repeats})")
    print(f"{'C':>3}  {'dtype':9}  {'kind':22} {'MACs/pair':>9} {'ms':>8} {'vs dense':>9}")
    for channels in (int(c) for c in args.channels.split(",")):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(args.batch, channels, args.length, args.length).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
            steps = {}
            for kind in KINDS:
                layer = _layer(kind, channels, args.dilation).to(dtype).to(memory_format=torch.channels_last)
                steps[kind] = _step(layer, x)
                steps[kind]()  # warm-up: oneDNN builds its kernels on first use
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for _ in range(args.repeats):
                for kind, run in steps.items():
                    start = time.process_time()
                    run()
                    times[kind].append(time.process_time() - start)
            dense = statistics.median(times["dense 3x3"])
            for kind, macs in KINDS.items():
                ms = statistics.median(times[kind])
                print(f"{channels:>3}  {str(dtype).removeprefix('torch.'):9}  {kind:22} {macs(channels):>9,} "
                      f"{1e3 * ms:>8.1f} {dense / max(ms, 1e-9):>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
