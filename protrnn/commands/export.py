"""``protrnn export``: Lightning checkpoint -> ``model.safetensors`` + ``model.json`` (loadable without unpickling)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Export the network of a `protrnn train` checkpoint (.ckpt) as OUTDIR/model.safetensors + OUTDIR/model.json.

The checkpoint is read with torch.load(weights_only=True), so it can hold only tensors and plain values: nothing in
it is executed. model.json records the architecture, the alphabet, the checkpoint's epoch / global step, the
validation metrics of that epoch, the training hyper-parameters and, as the export at the end of `protrnn train`
does, the run's resolved config (training_config: callbacks such as a pretrained encoder included). The config is
read from the checkpoint, or for a checkpoint written before checkpoints held it, from the config.yaml of its run
directory (RUN/logs/version_N/ beside RUN/checkpoints/) that has its run's settings; training_config_source says
which. Where neither has it, model.json has no training_config and training_config_source says why (protrnn diagnose
then reads whether it was pretrained as unknown). Load the result with protrnn.load_model(OUTDIR) or
`protrnn predict --model OUTDIR`.

examples:
  protrnn export runs/default/checkpoints/last.ckpt -o models/lstm
  protrnn export runs/default/checkpoints/best-epoch012-step004200.ckpt -o models/best
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="Lightning checkpoint written by protrnn train")
    parser.add_argument("-o", "--outdir", required=True, metavar="DIR",
                        help="output directory (created; existing model files are replaced atomically)")


def run(args: argparse.Namespace) -> int:
    from protrnn.training.callbacks import EXPORT_COMMAND, export_checkpoint

    json_path = export_checkpoint(args.checkpoint, args.outdir, extra={"exported_by": EXPORT_COMMAND})
    print(f"protrnn: exported {args.checkpoint} to {json_path.parent}", file=sys.stderr)
    return 0
