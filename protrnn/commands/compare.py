"""``protrnn compare``: paired differences between models scored by ``protrnn evaluate``."""

from __future__ import annotations

import argparse

from protrnn.commands.args import name_list, non_negative_int, positive_int, seed_int

DESCRIPTION = """\
Compare models with a reference on the proteins both were scored on (`protrnn evaluate` output folders): for each
test set and metric, the difference of their protein means with a paired bootstrap interval (one protein resample for
both models per replicate; runs named NAME@seedS are one model, their seeds resampled too). Pairing removes the
protein-to-protein variance two models share, so it separates models whose own intervals overlap. This is how to
choose between variants on a validation split (prepare's val.npz, passed to evaluate as --test-set val=...); never
choose on a test set.

--min-length and --min-contacts keep proteins by what their structures hold, never by how a model scored: e.g.
--far-rich (= --min-contacts long:1) keeps the chains with at least L true long-range contacts, where long-range
top-L/5 precision is not capped by a lack of far contacts (training logs the same chains' figure as
val/P@L5_long_far). Fix such a rule before the candidates' figures exist.

--clusters resamples homology clusters instead of proteins: a validation split can hold several members of one
family, whose differences go together, so a protein bootstrap makes the interval too narrow. prepare's manifest.tsv
(beside val.npz) gives each chain's cluster; proteins it does not list count as clusters of their own. Without
--clusters, stderr names the manifest evaluate found beside a test set whose chains share clusters.

examples:
  protrnn compare eval/val --reference current
  protrnn compare eval/val --reference current --methods ensemble --far-rich \\
      --keys long/P@L/5,medium_long/P@L/5 -o val_far.tsv
  protrnn compare eval/val --reference current --clusters results/data/manifest.tsv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("evaluations", nargs="+", metavar="EVAL_DIR",
                        help="output folder of `protrnn evaluate` (summary.json + per_protein.csv)")
    parser.add_argument("--reference", required=True, metavar="NAME",
                        help="the model every other is compared with (a method of per_protein.csv; NAME = all of "
                             "its NAME@seedS runs)")
    parser.add_argument("--methods", metavar="NAME,NAME",
                        help="models to compare (default: every method but the reference's model)")
    parser.add_argument("--keys", metavar="KEY,KEY",
                        help="per_protein.csv columns: RANGE/METRIC for the ranges short, medium, long, medium_long, "
                             "or bin/LO-HI/METRIC for the separation bins (bin/24-47/P@L/5, bin/96+/P@L/5); "
                             "default: medium_long/P@L/5,long/P@L/5")
    parser.add_argument("--test-sets", metavar="NAME,NAME",
                        help="test sets (default: each model against the reference on every test set both were "
                             "scored on; the others are named on stderr)")
    parser.add_argument("--min-length", type=non_negative_int, default=0, metavar="L",
                        help="keep proteins of at least L residues")
    parser.add_argument("--min-contacts", action="append", default=[], metavar="RANGE:FACTOR",
                        help="keep proteins with at least FACTOR x L true contacts in RANGE (short, medium, long, "
                             "medium_long); repeatable")
    parser.add_argument("--far-rich", action="store_true",
                        help="keep the chains with many far pairs only (at least L long-range contacts: the chains "
                             "of training's val/P@L5_long_far); the same as --min-contacts long:1")
    parser.add_argument("--clusters", metavar="FILE.tsv",
                        help="resample homology clusters, not proteins: a table with 'id' and 'cluster' columns "
                             "(prepare's manifest.tsv)")
    parser.add_argument("--bootstrap", type=positive_int, default=None, metavar="N",
                        help="bootstrap replicates (default 1000)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the bootstrap")
    parser.add_argument("-o", "--output", metavar="FILE.tsv", help="also write the table as TSV")


def run(args: argparse.Namespace) -> int:
    from protrnn.report.compare import (
        DEFAULT_KEYS,
        ContactFloor,
        cluster_hints,
        compare_methods,
        format_comparisons,
        read_clusters,
        write_comparisons,
    )
    from protrnn.report.inputs import load_evaluation
    from protrnn.utils.io import stderr_log

    floors = [ContactFloor.parse(text) for text in args.min_contacts]  # before any file is read
    if args.far_rich:
        floors.append(ContactFloor.far_rich())
    options = {} if args.bootstrap is None else {"n_boot": args.bootstrap}
    clusters = read_clusters(args.clusters) if args.clusters else None
    evaluations = [load_evaluation(path) for path in args.evaluations]
    comparisons = compare_methods(evaluations, args.reference,
                                  name_list(args.methods) or None, keys=name_list(args.keys) or DEFAULT_KEYS,
                                  test_sets=name_list(args.test_sets), min_length=args.min_length, floors=floors,
                                  seed=args.seed, clusters=clusters, **options)
    print(format_comparisons(comparisons))
    for hint in [] if clusters else cluster_hints(evaluations):
        stderr_log(hint)
    if args.output:
        stderr_log(f"protrnn: wrote {write_comparisons(args.output, comparisons)}")
    return 0
