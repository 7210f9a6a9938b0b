"""Split a FASTA file round-robin into shards for the pipeline's scattered prediction.

Every record is validated by protrnn's reader (a bad file fails here, naming record and position) and written as it
was read: cleaning is the predictor's, with the model's own alphabet, when each shard is predicted. Record IDs are
replaced by names that are safe as file names and unique over the WHOLE file (``a_b``, ``a_b_2``: safe names themselves,
so predict names each shard's records exactly so), so shards predicted apart can be gathered without collisions; ``names.tsv`` maps each name back to the original ID and its position in the file.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from protrnn.data.fasta import iter_fasta
from protrnn.errors import InputError
from protrnn.utils.io import SafeNamer, atomic_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fasta")
    parser.add_argument("--names", required=True, help="TSV written: index, safe name, original ID")
    parser.add_argument("shards", nargs="+", help="output FASTA files, one per shard")
    args = parser.parse_args(argv)
    try:
        records = iter_fasta(args.fasta)
        namer = SafeNamer(separator="_")  # names predict keeps as they are (no '~' to rename)
        with ExitStack() as stack:
            outs = [stack.enter_context(atomic_write(path, encoding="utf-8")) for path in args.shards]
            names = stack.enter_context(atomic_write(args.names, encoding="utf-8"))
            names.write("index\tname\tid\n")
            count = 0
            for count, record in enumerate(records, start=1):
                name = namer(record.id)
                outs[(count - 1) % len(outs)].write(f">{name}\n{record.sequence}\n")
                names.write(f"{count - 1}\t{name}\t{record.id}\n")
            if count == 0:
                raise InputError("no records", path=args.fasta)
        print(f"split {count} records of {args.fasta} into {len(args.shards)} shards")
    except InputError as exc:
        print(f"split_fasta: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
