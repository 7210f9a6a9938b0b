"""``protrnn`` console script: a thin dispatcher to one module per sub-command in :mod:`protrnn.commands`.

Each command module exposes ``add_arguments(parser)``, ``run(args) -> int`` and optionally ``DESCRIPTION``; the
one-line summaries live here only (``COMMANDS``), so ``protrnn --help`` imports no command module.
Imports are lazy so ``protrnn --help`` stays fast and a command's heavy dependencies load only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from protrnn.errors import InputError

COMMANDS = {
    "prepare": "Parse structures into contact datasets with homology-aware splits and a manifest.",
    "train": "Train a recurrent contact model with PyTorch Lightning (YAML configs, LightningCLI conventions).",
    "export": "Export a checkpoint as safetensors weights plus a JSON architecture file.",
    "ensemble": "Combine exported models (one recipe at several seeds) into one that averages their probabilities.",
    "evaluate": "Evaluate a model and baselines on prepared test sets: per-protein CSV + JSON summary.",
    "compare": "Paired differences between models scored by `protrnn evaluate` (e.g. variants on validation).",
    "diagnose": "Measure gradient flow vs sequence distance and the effective gradient horizon of a model.",
    "report": "Build a self-contained HTML report from evaluation and diagnostic outputs.",
    "predict": "Predict contacts for a FASTA file: CASP RR, npz probability matrices and a summary TSV.",
    "synthetic": "Measure a recurrent cell's reach on a planted-distance recall task (accuracy vs distance).",
    "pretrain": "Pretrain the recurrent encoder on secondary structure and masked residues (sidechainnet DSSP).",
}


def _command_module(name: str):
    return importlib.import_module(f"protrnn.commands.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        # LightningCLI owns the argument parsing of `train` (configs, --trainer.*, --ckpt_path).
        return _run_guarded(lambda: _command_module("train").main(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="protrnn", description="Protein residue-residue contacts from sequence with recurrent networks, and "
        "where their training stops seeing far-apart residues. `protrnn COMMAND --help` describes each command.")
    from protrnn import __version__

    parser.add_argument("--version", action="version", version=f"protrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, summary in COMMANDS.items():
        if name == "train":
            sub.add_parser(name, help=summary, add_help=False)
            continue
        if argv and argv[0] == name:
            module = _command_module(name)
            cmd = sub.add_parser(name, help=summary, description=getattr(module, "DESCRIPTION", summary),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=summary)
    args = parser.parse_args(argv)
    return _run_guarded(lambda: args._run(args))


def _run_guarded(call) -> int:
    try:
        return int(call() or 0)
    except InputError as exc:
        print(f"protrnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a path: a real fault, keep the traceback
            raise
        # a path the file system refuses (mostly outputs: a file or directory in the way, no permission, disk full;
        # inputs are read under errors.reading): one line naming it; for a rename, filename2 is the destination
        target = exc.filename2 if exc.filename2 is not None else exc.filename
        print(f"protrnn: error: {target}: cannot use this path ({exc.strerror or type(exc).__name__})",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("protrnn: interrupted; completed outputs are kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
