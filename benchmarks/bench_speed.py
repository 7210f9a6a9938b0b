"""Speed of the pair head's fast path against the reference (today's) path, side by side as ratios (issue #13).

One run measures, on one torch thread:

1. Training: scored pairs per CPU second ("per core") of a full step (forward + contact loss + backward + gradient
   clipping + AdamW), B = 8 chains x T = 128 residues, at the default size (BiLSTM 2x64, resnet2d 24 ch x 4 blocks),
   at the larger recipe (2x128, 48 ch x 8 blocks) and at the bundled model's (2x128, 32 ch x 6): reference fp32
   (``impl="reference"``, the code before issue #13), fast fp32, fast bf16-mixed (under autocast, as Lightning's
   ``bf16-mixed`` runs it); ``--narrow-pair-dims D`` adds the fast paths at a narrower head width.
2. Prediction on 1,000-residue chains (the bundled model): residues per CPU second of ``predict_proba``: reference
   fp32 with the model's tiles (today), fast fp32 with the same tiles, fast fp32 and bf16 with tiles sized to the
   Predictor's pair budget (``max_pair_floats``).
3. Many short chains (PSICOV150 from ``../shared/data`` when present): ``Predictor.predict`` end to end, in batches of
   8,192 padded residues (the default before issue #13, and still on a GPU), of 1,024 (the CPU default now), and one
   chain per batch.
4. Peak RSS of ``Predictor.predict`` on one 5,000-residue chain (``--long`` adds 10,000), each in a fresh
   subprocess (its ``VmHWM``, printed in MiB; the mark's figure in GB, 10^9 bytes, as the mark is stated), under the
   prediction parts' malloc settings (``--predict-malloc``).

Training runs with glibc malloc tuned as ``protrnn train`` runs it; the prediction parts run in a child process with
glibc's defaults, as ``protrnn predict`` ran before issue #13 (``--predict-malloc mallopt``: the ``mallopt`` settings
``protrnn predict`` now applies, :func:`protrnn.predict.memory.tune_malloc`; ``--predict-malloc tuned``: the
environment settings of ``protrnn train``).
Timings are CPU seconds of this process (``time.process_time``), not wall time, and old and new paths are
interleaved repeat by repeat with medians taken, so the ratios hold on a CPU shared with other jobs (wall times are
printed beside them). The CPU model and the bf16 features used are printed first.

    python benchmarks/bench_speed.py            # about 10-15 minutes on 2 shared cores
    python benchmarks/bench_speed.py --quick    # fewer repeats, no 5,000-residue run (a couple of minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.model.config import ModelConfig  # noqa: E402
from protrnn.model.contact_model import ContactModel  # noqa: E402
from protrnn.model.hardware import bf16_is_native, cpu_bf16_flags  # noqa: E402
from protrnn.utils.resources import peak_rss_mib  # noqa: E402

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
PSICOV_TAR = REPO / ".." / "shared" / "data" / "psicov150_gremlin_rf" / "psicov150_clean_chainA_pdb_fasta.tar.gz"
#: Architectures measured for training: the default config, the larger recipe of issue #13 and the bundled
#: model's (workflows/config.bundle.yaml).
SIZES = {
    "default (2x64, 24 ch x 4)": {"hidden_size": 64, "pair_dim": 24, "head_blocks": 4},
    "large (2x128, 48 ch x 8)": {"hidden_size": 128, "pair_dim": 48, "head_blocks": 8},
    "bundled (2x128, 32 ch x 6)": {"hidden_size": 128, "pair_dim": 32, "head_blocks": 6},
}
#: Issue #13's marks: training and prediction speed-ups over the reference path (x), and the peak RSS of one
#: 5,000-residue chain in GB (10^9 bytes, as the issue and docs/predict.md state it).
MARKS = {"train": 3.0, "predict": 2.0, "rss_5000_gb": 1.5}


def cpu_description() -> list[str]:
    """``lscpu``'s model name and what this run uses: torch's CPU capability, bf16 features, oneDNN, threads."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    flags = ", ".join(cpu_bf16_flags()) or "none"
    return [f"CPU: {model} ({os.cpu_count()} logical CPUs), torch {torch.__version__}, capability {capability}",
            f"bf16 matrix features: {flags}; oneDNN {torch.backends.mkldnn.is_available()}; bf16 native: "
            f"{bf16_is_native('cpu')}; torch threads {torch.get_num_threads()}; "
            f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"]


@contextlib.contextmanager
def _autocast(bf16: bool) -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        yield


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _interleave(variants: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (CPU s, wall s) per variant, running the variants in turn within each repeat."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for step in range(warmup + repeats):
        for name, fn in variants.items():
            measured = _timed(fn)
            if step >= warmup:
                times[name].append(measured)
    return {name: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for name, v in times.items()}


def best_ratio(medians: dict[str, tuple[float, float]], reference: str, exclude: Collection[str] = ()) -> float:
    """How many times faster than the ``reference`` row the fastest other row is: the reference's CPU seconds over the
    smallest CPU seconds among the rows that are neither the reference nor in ``exclude`` (so a new path slower than
    the reference gives a ratio below 1, never the reference's own 1.00x). NaN without such a row."""
    others = [cpu for label, (cpu, _) in medians.items() if label != reference and label not in exclude]
    return medians[reference][0] / min(others) if others else math.nan


def _training_batch(batch: int, steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-length random chains with a sparse symmetric contact map (~3 %) and the batch contract's pair mask."""
    from protrnn.conventions import MIN_SEPARATION

    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 22, (batch, steps), generator=generator)
    contacts = (torch.rand(batch, steps, steps, generator=generator) < 0.03).float()
    contacts = torch.maximum(contacts, contacts.transpose(1, 2))
    idx = torch.arange(steps)
    pair_mask = ((idx[:, None] - idx[None, :]).abs() >= MIN_SEPARATION).expand(batch, -1, -1).clone()
    return {"tokens": tokens, "mask": torch.ones(batch, steps, dtype=torch.bool), "contacts": contacts,
            "pair_mask": pair_mask}


def _training_step(model: ContactModel, optimiser: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                   bf16: bool) -> None:
    from protrnn.training.loss import contact_loss

    with _autocast(bf16):
        logits = model(batch["tokens"], batch["mask"])
        loss = contact_loss(logits, batch["contacts"], batch["pair_mask"], pos_weight=4.0)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()


def _variants(bf16: bool) -> list[tuple[str, str, bool]]:
    """(label, head implementation, bf16 autocast); the first is the reference the ratios divide by."""
    out = [("reference fp32 (before #13)", "reference", False), ("fast fp32", "fast", False)]
    if bf16:
        out.append(("fast bf16-mixed", "fast", True))
    return out


def bench_training(args: argparse.Namespace, bf16: bool) -> dict[str, float]:
    from protrnn.training.loss import scored_pairs

    batch = _training_batch(args.batch, args.length)
    pairs = int(scored_pairs(batch["pair_mask"]).sum())
    print(f"\n## Training step (B={args.batch}, T={args.length}, {pairs:,} scored pairs; forward + loss + backward + "
          f"clip + AdamW; median of {args.repeats}, interleaved)")
    print(f"{'size':27} {'path':28} {'CPU s/step':>10} {'wall s':>7} {'pairs/s/core':>13} {'ratio':>6}")
    ratios = {}
    for size, overrides in SIZES.items():
        runs: dict[str, Callable[[], Any]] = {}
        other: set[str] = set()  # rows of a narrower head: another architecture, so not part of the mark's ratio
        variants = [(label, impl, use_bf16, overrides) for label, impl, use_bf16 in _variants(bf16)]
        for dim in args.narrow_pair_dims:
            if dim < overrides["pair_dim"]:
                variants += [(f"{label}, pair_dim {dim}", impl, use_bf16, {**overrides, "pair_dim": dim})
                             for label, impl, use_bf16 in _variants(bf16) if impl == "fast"]
        for label, impl, use_bf16, architecture in variants:
            torch.manual_seed(0)
            model = ContactModel(ModelConfig(**architecture), head_impl=impl)  # type: ignore[arg-type]
            optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
            runs[label] = functools.partial(_training_step, model, optimiser, batch, use_bf16)
            if architecture is not overrides:
                other.add(label)
        medians = _interleave(runs, args.warmup, args.repeats)
        reference = variants[0][0]
        base = medians[reference][0]
        for label, (cpu, wall) in medians.items():
            print(f"{size:27} {label:28} {cpu:10.3f} {wall:7.3f} {pairs / cpu:13,.0f} {base / cpu:5.2f}x"
                  f"{'  (narrower head: not the mark)' if label in other else ''}", flush=True)
        ratios[size] = best_ratio(medians, reference, exclude=other)
    return ratios


def _bundled_network() -> tuple[ContactModel, str]:
    """The bundled model's network (an ensemble's first member: the per-pair cost is one network's)."""
    from protrnn.model.io import load_networks

    try:
        members = load_networks()
        source = "bundled default model" + (f", member 1 of {len(members)}" if len(members) > 1 else "")
        return members[0].network.eval(), source
    except Exception as exc:  # noqa: BLE001 - a missing bundle falls back to the same architecture, untrained
        torch.manual_seed(0)
        return ContactModel(ModelConfig(hidden_size=64, pair_dim=24, head_blocks=4)).eval(), f"random init ({exc})"


def bench_predict_long(args: argparse.Namespace, bf16: bool) -> float:
    from protrnn.model.predictor import PAIR_FEATURE_BUDGET

    network, source = _bundled_network()
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(2, 22, (args.predict_batch, args.predict_length), generator=generator)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    residues = tokens.numel()
    chunk = network.chunk_size_for(tokens.size(0), tokens.size(1), PAIR_FEATURE_BUDGET)
    print(f"\n## Prediction, {args.predict_batch} x {args.predict_length}-residue chains ({source}; predict_proba; "
          f"model tiles {network.config.pair_chunk_size}, budget tiles {chunk}; median of {args.repeats})")
    specs = [("reference fp32, model tiles (today)", "reference", "32", None),
             ("fast fp32, model tiles", "fast", "32", None),
             ("fast fp32, budget tiles", "fast", "32", PAIR_FEATURE_BUDGET)]
    if bf16:
        specs.append(("fast bf16, budget tiles", "fast", "bf16", PAIR_FEATURE_BUDGET))
    outputs: dict[str, torch.Tensor] = {}

    def run(label: str, impl: str, precision: str, budget: int | None) -> None:
        network.head.impl = impl
        outputs[label] = network.predict_proba(tokens, mask, precision=precision, max_pair_floats=budget)

    medians = _interleave({spec[0]: functools.partial(run, *spec) for spec in specs}, args.warmup, args.repeats)
    base = medians[specs[0][0]][0]
    reference = outputs[specs[0][0]]
    print(f"{'path':38} {'CPU s':>7} {'wall s':>7} {'res/s/core':>11} {'ratio':>6} {'max |dp|':>9}")
    for label, (cpu, wall) in medians.items():
        diff = float((outputs[label] - reference).abs().max())
        print(f"{label:38} {cpu:7.2f} {wall:7.2f} {residues / cpu:11,.0f} {base / cpu:5.2f}x {diff:9.1e}", flush=True)
    network.head.impl = "fast"
    return best_ratio(medians, specs[0][0])


def _psicov_sequences() -> list[str]:
    if not PSICOV_TAR.is_file():
        return []
    sequences = []
    with tarfile.open(PSICOV_TAR) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.startswith("psicov150/fasta/") and member.name.endswith(".fasta"):
                handle = tar.extractfile(member)
                if handle is not None:
                    sequences.append("".join(handle.read().decode().split()[1:]))
    return sequences


def _predictor(impl: str, precision: str, budget: int | None) -> Any:
    """The bundled Predictor on CPU with its model's head implementation, its arithmetic (``Predictor.precision``)
    and its pair budget (``Predictor.pair_floats``; None: the model's own ``pair_chunk_size`` tiles and batches
    under the uncapped budget, the path before budget-sized tiles) set. ``Predictor.predict_batch`` passes both to
    the model's ``predict_maps`` itself, so they are set on the Predictor, not by wrapping the model."""
    from protrnn.model.predictor import load_model

    predictor = load_model(device="cpu")
    for network in predictor.models:  # every member of an ensemble bundle
        network.head.impl = impl
    predictor.precision = precision
    predictor.pair_floats = budget
    return predictor


def bench_short_chains(args: argparse.Namespace, bf16: bool) -> None:
    from protrnn.model.predictor import PAIR_FEATURE_BUDGET

    sequences = _psicov_sequences()
    if not sequences:
        print(f"\n## Many short chains: skipped ({PSICOV_TAR} not found)")
        return
    residues = sum(map(len, sequences))
    print(f"\n## Many short chains: PSICOV150 ({len(sequences)} chains, {residues:,} residues, lengths "
          f"{min(map(len, sequences))}-{max(map(len, sequences))}), Predictor.predict end to end; median of "
          f"{max(1, args.repeats // 2)}")
    specs = [("reference fp32, 8192 tokens (today)", "reference", "32", None, 8192),
             ("fast fp32, 8192 tokens", "fast", "32", PAIR_FEATURE_BUDGET, 8192),
             ("fast fp32, 1024 tokens", "fast", "32", PAIR_FEATURE_BUDGET, 1024),
             ("fast fp32, one chain per batch", "fast", "32", PAIR_FEATURE_BUDGET, 1)]
    if bf16:
        specs.append(("fast bf16, 1024 tokens", "fast", "bf16", PAIR_FEATURE_BUDGET, 1024))
    runs = {}
    for label, impl, precision, budget, batch_tokens in specs:
        predictor = _predictor(impl, precision, budget)
        runs[label] = functools.partial(predictor.predict, sequences, batch_tokens=batch_tokens)
    medians = _interleave(runs, 1, max(1, args.repeats // 2))
    base = medians[specs[0][0]][0]
    print(f"{'path':38} {'CPU s':>7} {'wall s':>7} {'res/s/core':>11} {'ratio':>6}")
    for label, (cpu, wall) in medians.items():
        print(f"{label:38} {cpu:7.2f} {wall:7.2f} {residues / cpu:11,.0f} {base / cpu:5.2f}x", flush=True)


def _memory_worker(spec: dict[str, Any]) -> dict[str, float]:
    """One chain of ``spec['length']`` through ``Predictor.predict``: CPU/wall seconds and peak RSS (MiB)."""
    torch.set_num_threads(1)
    if spec.get("mallopt"):
        from protrnn.predict.memory import tune_malloc

        tune_malloc()
    predictor = _predictor(spec["impl"], spec["precision"], spec["budget"])
    generator = torch.Generator().manual_seed(2)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    sequence = "".join(letters[i] for i in torch.randint(0, 20, (spec["length"],), generator=generator).tolist())
    cpu, wall = _timed(lambda: predictor.predict([sequence]))
    return {"cpu_s": cpu, "wall_s": wall, "peak_rss_mib": peak_rss_mib()}


def bench_memory(args: argparse.Namespace, bf16: bool) -> float | None:
    from protrnn.model.predictor import PAIR_FEATURE_BUDGET

    lengths = [] if args.quick else [5000]
    if args.long:
        lengths.append(10000)
    if not lengths:
        return None
    malloc = {"mallopt": "protrnn predict's mallopt settings",
              "tuned": "protrnn train's malloc settings (" + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()) + ")",
              }.get(args.predict_malloc, "glibc malloc defaults")
    print(f"\n## Peak RSS of Predictor.predict on one chain (fresh process each, {malloc}; includes torch and the "
          "model)")
    print(f"{'length':>6} {'path':32} {'CPU s':>7} {'wall s':>7} {'peak RSS MiB':>13}")
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    if args.predict_malloc == "tuned":  # the same settings as the timed prediction parts, in every memory subprocess
        env.update(MALLOC_ENV)
    rss_5000 = None
    for length in lengths:
        specs = [("fast bf16, budget tiles", "fast", "bf16", PAIR_FEATURE_BUDGET)] if bf16 else []
        specs.insert(0, ("fast fp32, budget tiles", "fast", "32", PAIR_FEATURE_BUDGET))
        if length <= 5000:
            specs.insert(0, ("reference fp32, model tiles", "reference", "32", None))
        for label, impl, precision, budget in specs:
            spec = {"length": length, "impl": impl, "precision": precision, "budget": budget,
                    "mallopt": args.predict_malloc == "mallopt"}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)]
            result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                                .stdout.strip().splitlines()[-1])
            print(f"{length:6d} {label:32} {result['cpu_s']:7.1f} {result['wall_s']:7.1f} "
                  f"{result['peak_rss_mib']:13,.0f}", flush=True)
            if length == 5000 and impl == "fast":
                rss_5000 = max(rss_5000 or 0.0, result["peak_rss_mib"] * 2**20 / 1e9)  # GB, the mark's unit
    return rss_5000


def _prediction_child(argv: list[str], tuned: bool) -> dict[str, Any]:
    """Run the prediction parts in a child process with glibc's default malloc settings (as ``protrnn predict``
    runs) or the tuned ones; its output streams through, its marks come back as the last line."""
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    if tuned:
        env.update(MALLOC_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--prediction-child"]
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("{"):
                lines.append(line)
            else:
                print(line, end="", flush=True)
    if child.returncode:
        raise SystemExit(f"prediction benchmark failed with status {child.returncode}")
    return json.loads(lines[-1]) if lines else {}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (oneDNN primitive set-up)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--predict-length", type=int, default=1000)
    parser.add_argument("--predict-batch", type=int, default=1)
    parser.add_argument("--predict-malloc", choices=["default", "tuned", "mallopt"], default="default",
                        help="glibc malloc settings of the prediction parts (their timings and the memory "
                             "subprocesses): 'default' as protrnn predict ran before issue #13 (and runs with "
                             "PROTRNN_MALLOC_TUNING=0), 'mallopt' as protrnn predict runs now, 'tuned' as protrnn "
                             "train runs (MALLOC_MMAP_MAX_=0 ...)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, no 5,000-residue memory run")
    parser.add_argument("--long", action="store_true", help="also the 10,000-residue chain (fast paths only)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows even on a bf16-capable CPU")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "predict", "short", "memory"])
    parser.add_argument("--narrow-pair-dims", type=_positive_int, nargs="*", default=[], metavar="D",
                        help="also time the fast paths with the head narrowed to pair_dim D, for each size whose "
                             "pair_dim is larger (another architecture: printed beside the reference, left out of the "
                             "marks' ratios)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--prediction-child", action="store_true", help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.memory_worker:
        print(json.dumps(_memory_worker(json.loads(args.memory_worker))))
        return
    if args.quick:
        args.repeats = min(args.repeats, 3)
    torch.set_num_threads(1)
    bf16 = bf16_is_native("cpu") and not args.no_bf16
    results: dict[str, Any] = {}
    if args.prediction_child:
        if args.predict_malloc == "mallopt":
            from protrnn.predict.memory import tune_malloc

            tune_malloc()
        if "predict" not in args.skip:
            results["predict"] = bench_predict_long(args, bf16)
        if "short" not in args.skip:
            bench_short_chains(args, bf16)
        if "memory" not in args.skip:
            results["rss_5000_gb"] = bench_memory(args, bf16)
        print(json.dumps(results))
        return
    if any(os.environ.get(key) != value for key, value in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *raw],
                  {**os.environ, **MALLOC_ENV})
    print("\n".join(cpu_description()))
    print(f"paths: reference = head impl 'reference' in fp32 (the code before issue #13); fast = impl 'fast'"
          f"{'; bf16 = autocast bfloat16 (native on this CPU)' if bf16 else '; bf16 rows skipped (not native here)'}")
    print(f"training runs with tuned glibc malloc (as protrnn train); prediction parts with {args.predict_malloc} "
          f"settings (a child process)")
    if "train" not in args.skip:
        results["train"] = bench_training(args, bf16)
    if not {"predict", "short", "memory"} <= set(args.skip):
        results.update(_prediction_child(raw, args.predict_malloc == "tuned"))
    print("\n## Marks (issue #13)")
    for size, ratio in results.get("train", {}).items():
        print(f"training {size}: best {ratio:.2f}x the reference fp32 pairs/s/core (mark >= {MARKS['train']:.0f}x): "
              f"{'met' if ratio >= MARKS['train'] else 'NOT met'}")
    if "predict" in results:
        ratio = results["predict"]
        print(f"prediction {args.predict_length}-residue chains: best {ratio:.2f}x (mark >= {MARKS['predict']:.0f}x): "
              f"{'met' if ratio >= MARKS['predict'] else 'NOT met'}")
    if results.get("rss_5000_gb") is not None:
        rss = results["rss_5000_gb"]
        print(f"5,000-residue chain, fast paths: peak RSS {rss:.2f} GB ({rss * 1e9 / 2**20:,.0f} MiB; mark <= "
              f"{MARKS['rss_5000_gb']} GB): {'met' if rss <= MARKS['rss_5000_gb'] else 'NOT met'}")


if __name__ == "__main__":
    main()
