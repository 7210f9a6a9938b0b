"""``protrnn train``: LightningCLI over ContactLightningModule + ContactDataModule, with protrnn's defaults.

Lightning's conventions hold: ``--config FILE`` (or the name of a bundled config: ``--config lstm``),
``--trainer.max_epochs 5``, ``--model.model.cell gru``, ``--data.crop_length 256``, ``--print_config``, and
``--ckpt_path last`` to resume. The run directory, loggers, checkpoints, precision, ``--num_threads``,
``--export_dir``, the malloc tuning and the one-line errors are :mod:`protrnn.training.cli`'s (``TRAIN``).
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point of ``protrnn train``; returns the exit status (InputError propagates to the CLI: status 2)."""
    from protrnn.training.cli import TRAIN, run_fit

    return run_fit(TRAIN, argv)
