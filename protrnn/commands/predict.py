"""``protrnn predict``: FASTA in, CASP RR + npz probability matrices + summary TSV out (see docs/predict.md)."""

from __future__ import annotations

import argparse
import sys

from protrnn.commands.args import positive_int, probability

DESCRIPTION = """\
Predict residue-residue contacts for every record of a FASTA file (plain or .gz).

Per record, OUTDIR gets <name>.rr (CASP RR: top contacts with |i-j| >= 6, by default the top L of each
separation range, short 6-11, medium 12-23 and long >= 24, so that every range's top-L/k list is in the file),
<name>.npz (probs: float16 L x L symmetric matrix, sequence, id, method; np.load(..., allow_pickle=False); with
--distogram also each pair's distance distribution) and, with --png, <name>.png. <name> is the record ID made
safe as a file name. OUTDIR/summary.tsv lists every record.

Files are written atomically per record; rerun the same command after an interruption and completed records are
skipped, giving the same bytes as an uninterrupted run.

On Linux with glibc the command tunes malloc for the pair head's tile buffers (faster on CPU; set
PROTRNN_MALLOC_TUNING=0, or a MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_MAX_/MALLOC_TOP_PAD_ or
glibc.malloc tunable of your own, to keep glibc's defaults).

examples:
  protrnn predict proteins.fasta -o out/
  protrnn predict proteins.fasta.gz -o out/ --top 100 --png --skip-invalid
  protrnn predict targets.fasta -o out/ --structures pdb_dir/      # adds precision metrics to the summary
  protrnn predict ts50.fasta -o out/ --structures ts50.json.gz     # chains matched by record ID
  protrnn predict big.fasta -o out/ --precision auto               # bf16 where the CPU/GPU has it (faster)
  protrnn predict proteins.fasta -o out/ --model RUN --distogram   # + Cb-Cb distance distributions in the npz
                                                                   # (RUN: a model with a distogram head)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from protrnn.conventions import MIN_SEPARATION
    from protrnn.model.contact_model import PREDICT_PRECISIONS
    from protrnn.model.predictor import CPU_BATCH_TOKENS, DEFAULT_BATCH_TOKENS, DEFAULT_PRECISION

    parser.add_argument("input", metavar="INPUT.fasta", help="FASTA file (plain or gzip)")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output directory (created)")
    parser.add_argument("--model", metavar="PATH",
                        help="exported model (directory with model.json + model.safetensors, or either file), an "
                             "ensemble (`protrnn ensemble` directory or its ensemble.json) or a Lightning .ckpt of "
                             "`protrnn train`; default: the bundled model")
    select = parser.add_mutually_exclusive_group()
    select.add_argument("--top", type=positive_int, metavar="N",
                        help="write the top N pairs to each RR file, whatever their range (default: the top L of "
                             "each separation range, L the chain length)")
    select.add_argument("--threshold", type=probability, metavar="P",
                        help="write every pair with probability >= P instead of a fixed count")
    parser.add_argument("--min-separation", type=positive_int, default=MIN_SEPARATION, metavar="K",
                        help=f"only pairs with |i-j| >= K in RR files (default {MIN_SEPARATION}, CASP)")
    parser.add_argument("--png", action="store_true", help="also draw a contact-map PNG per record")
    parser.add_argument("--distogram", action="store_true",
                        help="also store each pair's predicted Cb-Cb distance distribution in <name>.npz "
                             "(distogram: float16 L x L x K class probabilities; distogram_edges: the class edges "
                             "in Angstrom); needs a --model with a distogram head, such as longrange.yaml's (18 classes: "
                             "36 MB for a 1,000-residue chain before compression); the bundled model has a binary "
                             "head")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip records with invalid letters, empty sequences or duplicate IDs (listed in the "
                             "summary) instead of stopping")
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--structures", metavar="DIR|FILE",
                       help="evaluate against structures in DIR (<id>.pdb/.cif[.gz], or 1abc.pdb for IDs 1abcA), or "
                            "the chains of FILE matched by record ID (a prepared .npz, chain_set.jsonl, per-chain "
                            "JSONL or cgdms .txt, archive), whatever its suffix")
    truth.add_argument("--structure-map", metavar="TSV", help="evaluate against structures listed as id<TAB>path"
                                                             "[<TAB>chain] in the file TSV (any suffix); relative "
                                                             "paths are from the TSV's folder")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    parser.add_argument("--precision", choices=PREDICT_PRECISIONS, default=DEFAULT_PRECISION,
                        help=f"arithmetic of the pair head (default {DEFAULT_PRECISION}): 32 = float32, the same "
                             "results on every machine; bf16 = bfloat16 autocast, faster where the hardware has it, "
                             "probabilities move by ~1e-3 (docs/predict.md); auto = bf16 where this CPU/GPU does "
                             "bf16 natively, else 32")
    parser.add_argument("--max-tokens", type=positive_int, default=None, metavar="N",
                        help=f"padded residues per batch (default {CPU_BATCH_TOKENS} on CPU, {DEFAULT_BATCH_TOKENS} "
                             "on GPU); lower it if memory is short")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from protrnn.model.predictor import load_model
    from protrnn.predict import predict_fasta
    from protrnn.predict.memory import tune_malloc

    tune_malloc()  # glibc: keep tile buffers for reuse (docs/predict.md); PROTRNN_MALLOC_TUNING=0 turns it off
    predictor = load_model(args.model, device=args.device, precision=args.precision)
    result = predict_fasta(args.input, args.outdir, predictor, top=args.top, threshold=args.threshold,
                           min_separation=args.min_separation, png=args.png, skip_invalid=args.skip_invalid,
                           structures=args.structures, structure_map=args.structure_map, progress=not args.no_progress,
                           batch_tokens=args.max_tokens, distogram=args.distogram)
    print(f"protrnn predict: {result.ok} record(s) done ({result.predicted} predicted, {result.resumed} already "
          f"complete), {result.skipped} skipped; summary: {result.summary_path}", file=sys.stderr)
    if result.ok == 0:
        print("protrnn predict: no record could be predicted (see the summary for reasons)", file=sys.stderr)
        return 1
    return 0
