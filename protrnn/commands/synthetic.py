"""``protrnn synthetic``: a recurrent cell's reach on a planted-distance recall task (docs/synthetic.md)."""

from __future__ import annotations

import argparse
import shlex
import sys

from protrnn.commands.args import (
    int_list,
    non_negative_float,
    non_negative_int,
    optional_float,
    positive_float,
    positive_int,
    seed_int,
)

DESCRIPTION = """\
Each sequence holds random distractor tokens, one key token (one of K symbols) at a random position s and a query
marker at s + d; the label at the query is the key's symbol (chance 1/K), every other position is unscored. The
key lies before the query, so only the forward recurrence carrying it d steps can answer (docs/synthetic.md).

For every distance d a fresh model (embedding + the project's bidirectional RecurrentEncoder + a per-residue
linear classifier; same seed, so the same initial weights) trains for --steps Adam steps on fresh batches, then
is scored on --eval-queries held-out queries (Wilson 95 % interval). Every step's total gradient norm (before
clipping) and the first layer's recurrent Jacobian norms ||dz_t/dz_s|| (at init and after training) are recorded.

OUT/result.json: per distance `distance`, `accuracy`, `chance`, `interval`, `steps`, `train_seconds`, gradient
norm summary and Jacobian curve; with the settings, the model config and the command. OUT/accuracy.png: accuracy
versus distance with the chance line.

examples:
  protrnn synthetic --cell lstm --distances 8,16,32,64,128 --seed 0 -o synth/lstm
  protrnn synthetic --cell rnn --gradient-horizon 16 --distances 8,16,32,64,128 -o synth/rnn_k16
  protrnn synthetic --cell lstm --chrono-init --gradient-clip 0 -o synth/lstm_chrono_noclip
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model (protrnn.model.config.ModelConfig knobs)")
    model.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm", help="recurrent cell (lstm)")
    model.add_argument("--gradient-horizon", type=positive_int, default=None, metavar="K",
                       help="truncated BPTT window: gradient cut at positions m*K (default: none)")
    model.add_argument("--hidden-size", type=positive_int, default=32, help="units per direction (32)")
    model.add_argument("--num-layers", type=positive_int, default=1, help="bidirectional layers (1)")
    model.add_argument("--embed-dim", type=positive_int, default=16, help="token embedding size (16)")
    model.add_argument("--forget-bias", type=optional_float, default=1.0, metavar="B|none",
                       help="LSTM forget-gate bias at init, or 'none' for PyTorch's (1.0)")
    model.add_argument("--chrono-init", action=argparse.BooleanOptionalAction, default=False,
                       help="LSTM chrono init b_f ~ log U(1, T_max-1) (off)")
    model.add_argument("--chrono-tmax", type=positive_int, default=200, help="T_max of chrono init (200)")
    model.add_argument("--orthogonal-init", action=argparse.BooleanOptionalAction, default=True,
                       help="orthogonal recurrent matrices at init (on)")
    model.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True,
                       help="residual connections between layers (on; needs 2 or more layers to act)")
    model.add_argument("--layer-norm", action=argparse.BooleanOptionalAction, default=True,
                       help="layer norm on every layer's output (on)")
    model.add_argument("--dropout", type=non_negative_float, default=0.0, help="dropout between layers (0)")
    task = parser.add_argument_group("task and training")
    task.add_argument("--distances", type=int_list, default=[8, 16, 32, 64, 128], metavar="LIST",
                      help="key-to-query distances, one model each (8,16,32,64,128)")
    task.add_argument("--symbols", type=positive_int, default=4, metavar="K", help="key symbols; chance 1/K (4)")
    task.add_argument("--distractors", type=positive_int, default=8, help="distractor token types (8)")
    task.add_argument("--margin", type=positive_int, default=16,
                      help="sequence length = distance + margin; the key position is uniform over the margin (16)")
    task.add_argument("--steps", type=positive_int, default=1000, help="optimiser steps per distance (1000)")
    task.add_argument("--batch-size", type=positive_int, default=32, help="sequences per step (32)")
    task.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate (0.003)")
    task.add_argument("--gradient-clip", type=non_negative_float, default=1.0, metavar="C",
                      help="clip the total gradient norm at C; 0 = no clipping (1.0)")
    task.add_argument("--eval-queries", type=positive_int, default=4000, help="held-out queries per distance (4000)")
    task.add_argument("--jacobian-max-lag", type=non_negative_int, default=None, metavar="LAG",
                      help="largest lag of the Jacobian curves; 0 = skip them (default: the largest distance)")
    task.add_argument("--seed", type=seed_int, default=0,
                      help="seed of the weights and the generated data, 0 to 2**63 - 1 (0)")
    task.add_argument("--threads", type=positive_int, default=None,
                      help="torch CPU threads (default: torch's choice); 1 for the documented timings")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUT", help="output directory (created)")


def command_line(args: argparse.Namespace) -> str:
    """The equivalent command with every option spelled out (recorded in result.json)."""
    def flag(name: str, on: bool) -> str:
        return f"--{name}" if on else f"--no-{name}"

    parts = ["protrnn", "synthetic", "--cell", args.cell]
    if args.gradient_horizon is not None:
        parts += ["--gradient-horizon", str(args.gradient_horizon)]
    parts += ["--hidden-size", str(args.hidden_size), "--num-layers", str(args.num_layers),
              "--embed-dim", str(args.embed_dim), "--forget-bias", "none" if args.forget_bias is None
              else repr(args.forget_bias), flag("chrono-init", args.chrono_init), "--chrono-tmax", str(args.chrono_tmax),
              flag("orthogonal-init", args.orthogonal_init), flag("residual", args.residual),
              flag("layer-norm", args.layer_norm), "--dropout", repr(args.dropout),
              "--distances", ",".join(map(str, args.distances)), "--symbols", str(args.symbols),
              "--distractors", str(args.distractors), "--margin", str(args.margin), "--steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--lr", repr(args.lr), "--gradient-clip", repr(args.gradient_clip),
              "--eval-queries", str(args.eval_queries)]
    if args.jacobian_max_lag is not None:
        parts += ["--jacobian-max-lag", str(args.jacobian_max_lag)]
    parts += ["--seed", str(args.seed)]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    return shlex.join([*parts, "-o", args.outdir])


def run(args: argparse.Namespace) -> int:
    import torch

    from protrnn.diagnostics.synthetic import SyntheticSettings, recall_model_config, run_synthetic

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = SyntheticSettings(
        distances=args.distances, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        gradient_clip=args.gradient_clip or None, symbols=args.symbols, distractors=args.distractors,
        margin=args.margin, eval_queries=args.eval_queries, seed=args.seed, jacobian_max_lag=args.jacobian_max_lag)
    config = recall_model_config(
        settings, cell=args.cell, embed_dim=args.embed_dim, hidden_size=args.hidden_size,
        num_layers=args.num_layers, dropout=args.dropout, residual=args.residual, layer_norm=args.layer_norm,
        orthogonal_init=args.orthogonal_init, forget_bias=args.forget_bias, chrono_init=args.chrono_init,
        chrono_tmax=args.chrono_tmax, gradient_horizon=args.gradient_horizon)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run_synthetic(config, settings, args.outdir, command=command_line(args), threads=torch.get_num_threads(), log=log)
    log(f"protrnn synthetic: reach {result['reach']} (largest distance with every shorter one above chance); "
        f"{result['total_seconds']:.0f} s; wrote {args.outdir}/result.json and accuracy.png")
    return 0
