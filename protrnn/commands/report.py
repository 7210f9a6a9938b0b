"""``protrnn report``: evaluation, diagnostics and training runs -> one self-contained HTML report + figures."""

from __future__ import annotations

import argparse

from protrnn.commands.args import name_list

DESCRIPTION = """\
Build OUTDIR/report.html (opens offline: figures embedded as PNG, no external CSS, scripts or links) and
OUTDIR/figures/*.png + *.svg from the outputs of the other commands:

  the findings table: each knob (cell, gradient horizon, forget bias / chrono init, orthogonal init, residual,
  layer norm, clipping, pretraining) against the reference model, its effect on synthetic reach, usage and gradient
  horizons and long-range precision with 95 % intervals, and which knobs matter (also OUTDIR/summary.json);
  precision by separation bin for every model and baseline (one panel per test set, bootstrap error bars);
  gradient sensitivity and context usage vs distance per model with their horizons; the synthetic reach task;
  training and validation curves; predicted vs true contact maps; a table of all metrics with diagnosis
  labels; the overlap/leakage that `protrnn prepare` removed from training.

Runs named NAME@seedS (evaluation methods, diagnostics, --runs) are one model over seeds: means over seeds with
95 % intervals (t over seeds; bootstrap over proteins and seeds for precision).

examples:
  protrnn report --evaluation results/evaluation/lstm --evaluation results/evaluation/baselines \\
      --diagnostics results/diagnostics/lstm.json --runs results/models/lstm \\
      --leakage results/data/leakage.tsv -o results/report
  protrnn report --evaluation eval/ --proteins 1ctf_A,2gb1_A -o report/
  protrnn report --evaluation results/evaluation/lstm/seed0 results/evaluation/lstm/seed1 \\
      --diagnostics results/diagnostics/lstm/seed0.json results/diagnostics/lstm/seed1.json \\
      --synthetic lstm=results/synthetic/lstm/seed0 gru=results/synthetic/gru/seed0 -o results/report
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--evaluation", action="extend", nargs="+", default=[], metavar="DIR",
                        help="output folder of `protrnn evaluate` (summary.json, per_protein.csv); repeatable")
    parser.add_argument("--diagnostics", action="extend", nargs="+", default=[], metavar="FILE.json",
                        help="output of `protrnn diagnose`; repeatable")
    parser.add_argument("--runs", action="extend", nargs="+", default=[], metavar="[NAME=]RUN_DIR",
                        help="training run folders holding a Lightning metrics.csv; repeatable")
    parser.add_argument("--synthetic", action="extend", nargs="+", default=[], metavar="[NAME=]OUT",
                        help="output folder (result.json) of `protrnn synthetic`, named by its variant; repeatable "
                             "(one per variant and seed)")
    parser.add_argument("--reference", metavar="MODEL",
                        help="the model (and synthetic variant) the findings table compares every knob against "
                             "(default: lstm when present, else the first model)")
    parser.add_argument("--proteins", metavar="ID,ID",
                        help="proteins whose contact maps to draw (need saved predictions; default: two per test set)")
    parser.add_argument("--leakage", action="extend", nargs="+", default=[], metavar="TSV",
                        help="prepare's leakage.tsv (test-set overlap removed from training); repeatable")
    parser.add_argument("--title", default="protrnn: how far does each recurrent model see?",
                        help="report title")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output directory (created)")


def run(args: argparse.Namespace) -> int:
    from protrnn.report import build_report, load_inputs
    from protrnn.utils.io import stderr_log

    proteins = name_list(args.proteins) or None
    build_report(load_inputs(evaluations=args.evaluation, diagnostics=args.diagnostics, runs=args.runs,
                             leakage=args.leakage, proteins=proteins, synthetic=args.synthetic,
                             reference=args.reference),
                 args.outdir, title=args.title, log=stderr_log)
    return 0
