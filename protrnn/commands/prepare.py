"""``protrnn prepare``: arguments of the prepare pipeline (:mod:`protrnn.data.prepare`), which it then runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from protrnn.commands.args import (
    default_cache_dir,
    fraction,
    named_paths,
    positive_float,
    positive_int,
    recorded_arguments,
    seed_int,
)
from protrnn.conventions import (
    DEFAULT_CONTACT_CUTOFF,
    DEFAULT_COVERAGE,
    DEFAULT_FRACTIONS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_LENGTH,
    DEFAULT_MIN_SEQ_ID,
)
from protrnn.errors import InputError

DESCRIPTION = """\
Parse protein structures into compact contact datasets (one .npz per split, loaded by
protrnn.data.dataset.load_dataset), with splits by sequence cluster and training chains that overlap a test
set removed.

inputs (INPUT, and PATH of --test-set), any mix of:
  PDB / mmCIF files (.pdb .ent .cif .mmcif, plain or .gz; first protein chain unless --chain),
  CATH-style chain_set.jsonl / JSON records with backbone coords, per-chain JSONL (shared/data format),
  cgdms per-chain .txt files, a cgdms data directory, tarball or the cgdms==1.0 wheel,
  the bioemu-benchmarks wheel, .tar/.tar.gz archives of the above, and directories (searched recursively).
  --default-sources adds the embedded default training set from PyPI (cgdms==1.0 + bioemu-benchmarks==0.0.2.post1),
  downloaded once into --cache-dir.

processing, in order:
  1. every input is parsed; an entry that cannot be read is skipped with its one-line reason (never dropped);
  2. training candidates are filtered by --min-length/--max-length, need at least one scored pair (two observed
     residues >= 6 apart), and must have a unique ID (later duplicates are skipped); --limit samples a subset;
  3. every training candidate at >= --identity sequence identity to any chain of any --test-set, over >= --coverage
     of either chain, is removed: a longer chain that holds a test domain (a fusion, a complex's chain) counts, and
     so does a fragment or single domain of a test chain (kept until 2026-12-07, when only the test chain's coverage
     counted); searched in both directions (mmseqs2 easy-search, -e 1e-3 -s 7.5, and the candidates against the
     test chains once more with --exhaustive-search, when `mmseqs` is on PATH; else a logged, less sensitive fallback, see
     protrnn.data.splits);
  4. the remaining chains are clustered at --identity (mmseqs2 easy-cluster, --coverage of both sequences),
     clusters joined by a hit at --identity over --coverage of either chain are merged (one family, one cluster:
     a domain inside a longer chain counts), and whole clusters are
     assigned to splits by --split fractions, each to the split furthest below its share that has room for it (or
     chains follow their source's own split with --use-split-hints: cgdms train/val lists; chains without a hint
     go to train).

outputs in OUTDIR (each written atomically; a rerun replaces them and deletes datasets a previous run wrote
that this run does not):
  <split>.npz         one dataset per split (train.npz, val.npz by default)
  test_<NAME>.npz     one dataset per --test-set (all chains that parsed)
  manifest.tsv        one row per input entry: source, id, length, n_observed, status (kept | skipped | removed),
                      reason (parse error, filter, or the test chain it hit), split (the dataset it was written to),
                      cluster (representative ID of its sequence cluster); id and length are empty for an
                      input that could not be read
  leakage.tsv         one row per removed training chain: chain_id, source, test_set, test_id, identity,
                      aln_length, evalue, bits, test_coverage, chain_coverage
  prepare.json        parameters, homology method, counts and output files
A run that keeps no chain for the train split exits 2 and writes only manifest.failed.tsv (every entry's reason),
leaving an earlier run's outputs as they were.

examples:
  protrnn prepare structures/ -o data --test-set ts50=ts50.json.gz
  protrnn prepare --default-sources --use-split-hints -o data --test-set psicov=psicov150_org_pdb.tar.gz
"""


#: --split default: DEFAULT_FRACTIONS as NAME=FRAC text.
DEFAULT_SPLIT = ",".join(f"{name}={value:g}" for name, value in DEFAULT_FRACTIONS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="structure files, archives or directories")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output directory (created)")
    parser.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH",
                        help="held-out test set (any input format); repeat for several. Written as test_NAME.npz")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split", default=DEFAULT_SPLIT, metavar="NAME=FRAC,...",
                       help=f"split fractions by sequence cluster (default {DEFAULT_SPLIT})")
    split.add_argument("--use-split-hints", action="store_true",
                       help="keep the sources' own split (cgdms train/val lists); chains without a hint -> train")
    parser.add_argument("--min-length", type=positive_int, default=DEFAULT_MIN_LENGTH, metavar="N",
                        help=f"skip training chains shorter than N residues (default {DEFAULT_MIN_LENGTH})")
    parser.add_argument("--max-length", type=positive_int, default=DEFAULT_MAX_LENGTH, metavar="N",
                        help=f"skip training chains longer than N residues (default {DEFAULT_MAX_LENGTH}; "
                             "training crops anyway)")
    parser.add_argument("--identity", type=fraction, default=DEFAULT_MIN_SEQ_ID, metavar="F",
                        help="sequence identity for clustering and leakage removal "
                             f"(default {DEFAULT_MIN_SEQ_ID})")
    parser.add_argument("--coverage", type=fraction, default=DEFAULT_COVERAGE, metavar="F",
                        help="alignment coverage: of both sequences for clustering, of either chain for "
                             f"leakage removal (default {DEFAULT_COVERAGE})")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="keep a seeded random sample of at most N training candidates (tiny runs)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the cluster split and --limit (default 0)")
    parser.add_argument("--chain", metavar="ID", help="chain ID to take from PDB/mmCIF inputs (default: first protein)")
    parser.add_argument("--contact-cutoff", type=positive_float, default=DEFAULT_CONTACT_CUTOFF, metavar="A",
                        help="Cb-Cb contact cutoff in Angstrom stored with the datasets: evaluate and predict "
                             "--structures score their contacts at it, train needs the same --data.contact_cutoff "
                             f"(default {DEFAULT_CONTACT_CUTOFF})")
    parser.add_argument("--default-sources", action="store_true",
                        help="add the default training set from PyPI (cgdms==1.0, bioemu-benchmarks==0.0.2.post1)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), metavar="DIR",
                        help=f"where --default-sources wheels are kept (default {default_cache_dir()})")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="processes for parsing and threads for mmseqs2 (default: all cores)")


def run(args: argparse.Namespace) -> int:
    from protrnn.data import splits
    from protrnn.data.prepare import prepare_datasets, summary_text

    fractions = None if args.use_split_hints else splits.parse_fractions(args.split)
    if args.min_length and args.max_length and args.min_length > args.max_length:
        raise InputError(f"--min-length {args.min_length} exceeds --max-length {args.max_length}")
    inputs = [Path(p) for p in args.inputs]
    if args.default_sources:
        from protrnn.data.sources import default_sources

        inputs += default_sources(args.cache_dir)
    result = prepare_datasets(inputs, Path(args.outdir), test_sets=named_paths(args.test_set, "--test-set"),
                              fractions=fractions, use_split_hints=args.use_split_hints, min_length=args.min_length,
                              max_length=args.max_length, identity=args.identity, coverage=args.coverage,
                              limit=args.limit, seed=args.seed, chain=args.chain, contact_cutoff=args.contact_cutoff,
                              threads=args.threads, arguments=recorded_arguments(args))
    print(summary_text(result))
    return 0
