"""``protrnn ensemble``: exported models -> one ensemble directory whose prediction is the mean of theirs."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Combine exported models into an ensemble: OUTDIR/member-1, member-2, ... (copies of each model.json +
model.safetensors, checked to load first) and OUTDIR/ensemble.json, written last; OUTDIR is built aside and swapped in
whole. `protrnn predict --model OUTDIR`, `protrnn evaluate --model NAME=OUTDIR` and protrnn.load_model(OUTDIR) run every
member on each batch and return the mean of their contact probabilities, so prediction costs the members' times added
up. Averaging runs of one recipe at different seeds removes part of the seed-to-seed variance (docs/training.md,
"Seed ensembles"). `protrnn diagnose` diagnoses each member; `protrnn export` takes one member's directory.

examples:
  protrnn ensemble runs/longrange_s0/export runs/longrange_s1/export -o models/longrange_x2
  protrnn predict seqs.fasta --model models/longrange_x2 -o predictions
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="exported model directory, model.json or model.safetensors (export a checkpoint first)")
    parser.add_argument("-o", "--outdir", required=True, metavar="DIR",
                        help="ensemble directory: new or empty, or an ensemble, which is replaced whole")


def run(args: argparse.Namespace) -> int:
    from protrnn.model.io import save_ensemble

    json_path = save_ensemble(args.models, args.outdir, extra={"sources": list(args.models)})
    print(f"protrnn: wrote an ensemble of {len(args.models)} models to {json_path.parent}", file=sys.stderr)
    return 0
