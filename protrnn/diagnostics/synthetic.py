"""A planted-distance recall task: how far a recurrent encoder carries one symbol, free of the confounds of proteins.

Task (one query per sequence, docs/synthetic.md)
    A sequence of length ``T = distance + margin`` holds uniform random *distractor* tokens, except one *key* token
    (one of K symbols) at a uniform random position ``s`` and one *query marker* at ``q = s + distance``. The label at
    the query position is the key's symbol; every other position is unscored. Chance is ``1/K``. The distractors
    and the key's position carry no information about the symbol, and the key lies *before* the query, so the
    symbol reaches the query's features only through the forward recurrence carrying it ``distance`` steps (the
    reverse direction reads positions ``≥ q`` only; the argument for several layers is in docs/synthetic.md).

Model
    The project's own embedding + :class:`~protrnn.model.encoder.RecurrentEncoder` built from a
    :class:`~protrnn.model.config.ModelConfig` (so cell, sizes, gradient horizon, forget bias, chrono and
    orthogonal init and layer norm all apply; the residual only where a layer's input and output widths match, so
    not in a one-layer encoder under a narrower embedding, the defaults) and a per-residue linear classifier over
    ``h [B, T, 2H]``.

Protocol
    One fresh model per distance, the same seed (so the same initial weights for every distance), a fixed number of
    Adam steps on freshly generated batches (a matched budget: no distance or cell gets more updates), then accuracy
    on a held-out generated set with a Wilson 95 % interval. Every step's total gradient norm (before clipping) is
    kept, and the first layer's recurrent Jacobian norms are measured at initialisation and after training
    (:mod:`protrnn.diagnostics.jacobians`).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from protrnn.diagnostics.jacobians import clip_and_measure, recurrent_jacobian_norms, summarise_gradient_norms
from protrnn.diagnostics.results import SYNTHETIC_FORMAT, SYNTHETIC_FORMAT_VERSION
from protrnn.errors import InputError
from protrnn.evaluation.metrics import INTERVAL_ALPHA
from protrnn.model.config import ModelConfig
from protrnn.model.encoder import RecurrentEncoder
from protrnn.utils.io import atomic_path, atomic_write

FORMAT = SYNTHETIC_FORMAT
FORMAT_VERSION = SYNTHETIC_FORMAT_VERSION
PAD_TOKEN = 0
QUERY_TOKEN = 1
FIRST_KEY_TOKEN = 2
IGNORE_LABEL = -100
#: z of the two-sided Wilson interval at evaluation.metrics.INTERVAL_ALPHA (95 %: 1.95996...).
Z95 = statistics.NormalDist().inv_cdf(1.0 - INTERVAL_ALPHA / 2)

Log = Callable[[str], None]


@dataclass(frozen=True)
class RecallTask:
    """Token layout: 0 padding (unused: all rows are full length), 1 query marker, ``2 … K+1`` key symbols,
    ``K+2 … K+1+distractors`` distractors."""

    distance: int
    length: int
    symbols: int = 4
    distractors: int = 8

    def __post_init__(self) -> None:
        if self.distance < 1:
            raise InputError(f"distance must be at least 1, got {self.distance}")
        if self.length < self.distance + 1:
            raise InputError(f"length {self.length} leaves no room for a key and a query {self.distance} apart")
        if self.symbols < 2:
            raise InputError(f"need at least 2 key symbols, got {self.symbols}")
        if self.distractors < 1:
            raise InputError(f"need at least 1 distractor token, got {self.distractors}")

    @property
    def vocab_size(self) -> int:
        return FIRST_KEY_TOKEN + self.symbols + self.distractors

    @property
    def chance(self) -> float:
        """Accuracy of guessing: the symbol is uniform and independent of everything else in the sequence."""
        return 1.0 / self.symbols

    def sample(self, n: int, rng: np.random.Generator) -> RecallBatch:
        """``n`` independent sequences (key position uniform over the ``length - distance`` places it fits)."""
        first_distractor = FIRST_KEY_TOKEN + self.symbols
        tokens = rng.integers(first_distractor, first_distractor + self.distractors, size=(n, self.length))
        key_pos = rng.integers(0, self.length - self.distance, size=n)
        query_pos = key_pos + self.distance
        keys = rng.integers(0, self.symbols, size=n)
        rows = np.arange(n)
        tokens[rows, key_pos] = FIRST_KEY_TOKEN + keys
        tokens[rows, query_pos] = QUERY_TOKEN
        labels = np.full((n, self.length), IGNORE_LABEL)
        labels[rows, query_pos] = keys
        return RecallBatch(tokens=torch.from_numpy(tokens).long(), labels=torch.from_numpy(labels).long(),
                           key_pos=torch.from_numpy(key_pos).long(), query_pos=torch.from_numpy(query_pos).long())


@dataclass
class RecallBatch:
    """``tokens``/``labels [N, T]`` (labels ``IGNORE_LABEL`` except at the query), key and query positions ``[N]``."""

    tokens: Tensor
    labels: Tensor
    key_pos: Tensor
    query_pos: Tensor

    @property
    def mask(self) -> Tensor:
        return self.tokens != PAD_TOKEN

    @property
    def keys(self) -> Tensor:
        """The planted symbol of each row (0 … K-1)."""
        return self.labels.gather(1, self.query_pos[:, None])[:, 0]


class RecallModel(nn.Module):
    """Embedding + the project's bidirectional :class:`RecurrentEncoder` + a per-residue linear classifier."""

    def __init__(self, config: ModelConfig, symbols: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_TOKEN)
        self.encoder = RecurrentEncoder(config)
        self.classifier = nn.Linear(self.encoder.output_size, symbols)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.embedding(tokens)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Per-residue symbol logits ``[B, T, K]``."""
        return self.classifier(self.encoder(self.embed(tokens), mask))

    def query_logits(self, batch: RecallBatch) -> Tensor:
        """Logits at each row's query position ``[B, K]`` (the classifier applied where a label is scored)."""
        h = self.encoder(self.embed(batch.tokens), batch.mask)
        rows = torch.arange(h.size(0), device=h.device)
        return self.classifier(h[rows, batch.query_pos.to(h.device)])


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default 95 %)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The bounds at 0 and n successes are exactly 0 and 1; the formula gets there only up to rounding.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


@dataclass
class SyntheticSettings:
    """Everything about a synthetic run that is not the architecture (recorded in result.json)."""

    distances: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    gradient_clip: float | None = 1.0
    symbols: int = 4
    distractors: int = 8
    margin: int = 16
    eval_queries: int = 4000
    seed: int = 0
    jacobian_max_lag: int | None = None
    jacobian_sequences: int = 4
    jacobian_starts: int = 4

    def validate(self) -> None:
        for key in ("steps", "batch_size", "symbols", "distractors", "margin", "eval_queries",
                    "jacobian_sequences", "jacobian_starts"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{key} must be a positive integer, got {value!r}")
        if not self.distances or any(d < 1 for d in self.distances):
            raise InputError(f"distances must be positive integers, got {self.distances!r}")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr!r}")
        if self.gradient_clip is not None and not self.gradient_clip >= 0:
            raise InputError(f"gradient clip must be >= 0 (0 = off), got {self.gradient_clip!r}")

    @property
    def max_lag(self) -> int:
        """Largest lag of the Jacobian curves: ``jacobian_max_lag``, else the largest distance (0 = none)."""
        return max(self.distances) if self.jacobian_max_lag is None else self.jacobian_max_lag


def task_for(distance: int, settings: SyntheticSettings) -> RecallTask:
    return RecallTask(distance=distance, length=distance + settings.margin, symbols=settings.symbols,
                      distractors=settings.distractors)


def recall_model_config(settings: SyntheticSettings, **knobs: Any) -> ModelConfig:
    """The model configuration of a run: ``knobs`` (cell, sizes, inits, gradient horizon, ...: any
    :class:`~protrnn.model.config.ModelConfig` field) with the vocabulary of the task ``settings`` describe
    (2 + symbols + distractors tokens)."""
    vocab = RecallTask(distance=1, length=2, symbols=settings.symbols, distractors=settings.distractors).vocab_size
    return ModelConfig(vocab_size=vocab, **knobs)


def build_model(config: ModelConfig, task: RecallTask, seed: int) -> RecallModel:
    """A freshly initialised model; the same seed gives the same weights for every distance."""
    torch.manual_seed(seed)
    return RecallModel(config, task.symbols)


def _accuracy_block(correct: np.ndarray, select: np.ndarray) -> dict[str, object]:
    n = int(select.sum())
    hits = int(correct[select].sum())
    return {"n": n, "correct": hits, "accuracy": hits / n if n else None, "interval": list(wilson_interval(hits, n))}


@torch.no_grad()
def evaluate(model: RecallModel, task: RecallTask, n: int, rng: np.random.Generator,
             horizon: int | None, chunk: int = 500) -> dict[str, object]:
    """Accuracy on ``n`` fresh queries with a Wilson 95 % interval, and ``constant_accuracy``: the best a constant
    answer scores on these queries (the most frequent symbol's share; above the nominal chance 1/K by sampling
    noise, e.g. 0.269 for K = 4 and 2,000 queries). With a gradient horizon k also split by whether key and query lie
    in one block ``[m*k, (m+1)*k)`` (the only pairs whose gradient connects them in training)."""
    was_training = model.training
    model.eval()
    correct_parts, same_parts, key_parts = [], [], []
    try:
        for begin in range(0, n, chunk):
            batch = task.sample(min(chunk, n - begin), rng)
            predicted = model.query_logits(batch).argmax(-1)
            correct_parts.append((predicted == batch.keys).numpy())
            key_parts.append(batch.keys.numpy())
            if horizon is not None:
                same_parts.append((batch.key_pos // horizon == batch.query_pos // horizon).numpy())
    finally:
        model.train(was_training)
    correct = np.concatenate(correct_parts)
    hits = int(correct.sum())
    keys = np.concatenate(key_parts)
    constant = int(np.bincount(keys, minlength=task.symbols).max())
    result: dict[str, object] = {"n_queries": int(n), "correct": hits, "accuracy": hits / n,
                                 "interval": list(wilson_interval(hits, n)), "interval_method": "wilson 95%",
                                 "constant_accuracy": constant / n}
    if horizon is not None:
        same = np.concatenate(same_parts)
        result["same_block"] = _accuracy_block(correct, same)
        result["split_block"] = _accuracy_block(correct, ~same)
    else:
        result["same_block"] = result["split_block"] = None
    return result


def jacobian_probe(settings: SyntheticSettings) -> RecallBatch | None:
    """Fixed task sequences on which every Jacobian curve of a run is measured (None when curves are off)."""
    if settings.max_lag < 1:
        return None
    length = settings.max_lag + 1 + settings.margin
    distance = min(max(settings.distances), length - 1)
    task = RecallTask(distance=distance, length=length, symbols=settings.symbols, distractors=settings.distractors)
    return task.sample(settings.jacobian_sequences, np.random.default_rng([settings.seed, 2]))


def _curve(model: RecallModel, probe: RecallBatch | None, settings: SyntheticSettings) -> dict[str, object] | None:
    if probe is None:
        return None
    was_training = model.training
    model.eval()
    try:
        return recurrent_jacobian_norms(model, probe.tokens, probe.mask, settings.max_lag,
                                        max_starts=settings.jacobian_starts).to_dict()
    finally:
        model.train(was_training)


def train_distance(config: ModelConfig, settings: SyntheticSettings, distance: int,
                   probe: RecallBatch | None = None, log: Log | None = None) -> dict[str, object]:
    """Train one fresh model for ``distance`` with the matched step budget and evaluate it (one result row)."""
    task = task_for(distance, settings)
    model = build_model(config, task, settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    rng = np.random.default_rng([settings.seed, distance, 0])
    clip = settings.gradient_clip or None
    norms: list[float] = []
    losses: list[float] = []
    hits: list[float] = []
    skipped = 0
    model.train()
    started = time.perf_counter()
    for _ in range(settings.steps):
        batch = task.sample(settings.batch_size, rng)
        logits = model.query_logits(batch)
        loss = nn.functional.cross_entropy(logits, batch.keys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_and_measure(model.parameters(), clip)
        norms.append(norm)
        loss_value = float(loss.detach())
        if math.isfinite(norm) and math.isfinite(loss_value):
            optimizer.step()
        else:
            skipped += 1  # a non-finite gradient would poison Adam's moments: the step is dropped and counted
        losses.append(loss_value)
        hits.append(float((logits.argmax(-1) == batch.keys).float().mean()))
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    row: dict[str, object] = {"distance": distance, "length": task.length, "chance": task.chance}
    row.update(evaluate(model, task, settings.eval_queries, np.random.default_rng([settings.seed, distance, 1]),
                        config.gradient_horizon))
    eval_seconds = time.perf_counter() - started
    interval = row["interval"]
    tail = max(1, settings.steps // 10)
    row.update({
        "above_chance": beats_chance(row, task.chance),
        "steps": settings.steps,
        "skipped_steps": skipped,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "train_loss_last": float(np.mean(losses[-tail:])),
        "train_accuracy_last": float(np.mean(hits[-tail:])),
        "grad_norm": summarise_gradient_norms(norms, clip),
        "grad_norms": [round(v, 6) if math.isfinite(v) else None for v in norms],
    })
    started = time.perf_counter()
    row["jacobian_trained"] = _curve(model, probe, settings)
    row["jacobian_seconds"] = round(time.perf_counter() - started, 3)
    if log:
        lo, hi = interval  # type: ignore[misc]
        log(f"  d={distance:4d}: accuracy {row['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (chance {task.chance:.3f}), "
            f"train {train_seconds:.1f} s, grad-norm median {row['grad_norm']['q50']:.3g} "  # type: ignore[index]
            f"max {row['grad_norm']['max']:.3g}")  # type: ignore[index]
    return row


def beats_chance(row: dict[str, object], chance: float) -> bool:
    """Whether an evaluation row's accuracy is above chance: the lower bound of its interval beats both ``chance``
    (1/K) and ``constant_accuracy``, what the best constant answer scores on the same queries (when recorded)."""
    low = float(row["interval"][0])  # type: ignore[index]
    return low > max(chance, float(row.get("constant_accuracy", chance)))  # type: ignore[arg-type]


def reach(rows: Sequence[dict[str, object]]) -> int | None:
    """The largest distance d such that every measured distance ≤ d is above chance (lower bound > chance)."""
    best = None
    for row in sorted(rows, key=lambda r: r["distance"]):  # type: ignore[arg-type,return-value]
        if not row["above_chance"]:
            break
        best = int(row["distance"])  # type: ignore[call-overload]
    return best


def run_synthetic(config: ModelConfig, settings: SyntheticSettings, outdir: str | Path, command: str = "",
                  threads: int | None = None, log: Log | None = None) -> dict[str, object]:
    """Train and evaluate one model per distance; write ``OUTDIR/result.json`` and ``OUTDIR/accuracy.png``."""
    settings.validate()
    task0 = task_for(min(settings.distances), settings)
    if config.vocab_size != task0.vocab_size:
        raise InputError(f"model vocab_size {config.vocab_size} != task vocabulary {task0.vocab_size} "
                         f"(2 + symbols + distractors)")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    probe = jacobian_probe(settings)
    if log:
        log(f"protrnn synthetic: {config.cell}, horizon {config.gradient_horizon}, hidden {config.hidden_size} x "
            f"{config.num_layers} layers, {settings.steps} steps of {settings.batch_size}, distances "
            f"{','.join(map(str, settings.distances))}")
    init_model = build_model(config, task0, settings.seed)
    jacobian_init = _curve(init_model, probe, settings)
    rows = [train_distance(config, settings, d, probe, log) for d in settings.distances]
    result: dict[str, object] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "command": command,
        "cell": config.cell,
        "gradient_horizon": config.gradient_horizon,
        "chance": task0.chance,
        "reach": reach(rows),
        "settings": {**asdict(settings), "threads": threads if threads is not None else torch.get_num_threads(),
                     "optimizer": "adam", "jacobian_max_lag": settings.max_lag},
        "model": config.to_dict(),
        "parameters": sum(p.numel() for p in init_model.parameters()),
        "jacobian_init": jacobian_init,
        "distances": rows,
        "total_seconds": round(time.perf_counter() - started, 3),
        "torch_version": torch.__version__,
        "machine": platform.machine(),
    }
    with atomic_write(outdir / "result.json") as handle:
        json.dump(result, handle, indent=1)
        handle.write("\n")
    plot_accuracy([(run_label(result), result)], outdir / "accuracy.png")
    return result


def run_label(result: dict[str, object]) -> str:
    """``lstm``, ``lstm, k=16`` …: a legend label for a run."""
    horizon = result.get("gradient_horizon")
    return f"{result['cell']}" + (f", k={horizon}" if horizon else "")


CELL_COLOURS = {"lstm": "C0", "gru": "C1", "rnn": "C2"}


def draw_accuracy(ax: object, runs: Sequence[tuple[str, dict[str, object]]],
                  styles: Sequence[dict[str, object]] | None = None) -> None:
    """Accuracy against distance (log2 axis) with 95 % intervals on a matplotlib ``ax``: colour by cell, dashed with
    a gradient horizon (unless ``styles`` gives per-run keyword arguments), a chance line and the horizons."""
    chances: set[float] = set()
    horizons: set[int] = set()
    distances: set[int] = set()
    for i, (label, result) in enumerate(runs):
        rows = sorted(result["distances"], key=lambda r: r["distance"])  # type: ignore[arg-type,index]
        x = [r["distance"] for r in rows]
        distances.update(x)
        y = [r["accuracy"] for r in rows]
        err = [[max(0.0, r["accuracy"] - r["interval"][0]) for r in rows],
               [max(0.0, r["interval"][1] - r["accuracy"]) for r in rows]]
        style: dict[str, object] = {"marker": "o", "capsize": 3,
                                    "color": CELL_COLOURS.get(str(result["cell"]), f"C{i % 10}"),
                                    "linestyle": "--" if result.get("gradient_horizon") else "-"}
        if styles is not None:
            style.update(styles[i])
        ax.errorbar(x, y, yerr=err, label=label, **style)  # type: ignore[attr-defined]
        chances.add(float(result["chance"]))  # type: ignore[arg-type]
        if result.get("gradient_horizon"):
            horizons.add(int(result["gradient_horizon"]))  # type: ignore[call-overload]
    for chance in sorted(chances):
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:.3g}")  # type: ignore[attr-defined]
    for horizon in sorted(horizons):
        ax.axvline(horizon, color="black", alpha=0.3, linewidth=1,  # type: ignore[attr-defined]
                   label=f"horizon k={horizon}")
    ax.set_xscale("log", base=2)  # type: ignore[attr-defined]
    ax.set_xticks(sorted(distances), [str(d) for d in sorted(distances)])  # type: ignore[attr-defined]
    ax.minorticks_off()  # type: ignore[attr-defined]
    ax.set_xlabel("distance key → query (residues)")  # type: ignore[attr-defined]
    ax.set_ylabel("recall accuracy (95 % Wilson interval)")  # type: ignore[attr-defined]
    ax.set_ylim(0, 1.02)  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    ax.legend(fontsize=8)  # type: ignore[attr-defined]


def plot_accuracy(runs: Sequence[tuple[str, dict[str, object]]], path: str | Path, title: str | None = None) -> None:
    """One-panel PNG of :func:`draw_accuracy` (matplotlib Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    draw_accuracy(ax, runs)
    ax.set_title(title or "Planted-distance recall")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
