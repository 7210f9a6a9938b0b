"""Gather the pipeline's prediction shards: one contacts directory and one summary in the original record order.

Shard FASTA headers are the safe names written by split_fasta.py, so the shard summaries are keyed by those names;
the gathered summary restores each record's original ID (column ``id``) beside its file name (column ``name``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from protrnn.utils.io import atomic_path, atomic_write, read_tsv, read_tsv_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", required=True, help="names.tsv from split_fasta.py")
    parser.add_argument("--summary", required=True, help="gathered summary TSV to write")
    parser.add_argument("--contacts", required=True, help="directory to fill with every record's output files")
    parser.add_argument("shards", nargs="+", help="shard output directories of `protrnn predict`")
    args = parser.parse_args(argv)

    # names.tsv and the shard summaries are written cell by cell, unquoted: read them literally (an ID may start with
    # a quote character)
    names = {row["name"]: (int(row["index"]), row["id"]) for row in read_tsv(args.names)}
    rows: list[tuple[int, dict[str, str]]] = []
    fieldnames: list[str] = []
    contacts = Path(args.contacts)
    contacts.mkdir(parents=True, exist_ok=True)
    for shard in map(Path, args.shards):
        # Snakemake marks a directory output with a hidden .snakemake_timestamp; protrnn predict writes no hidden file
        files = [path for path in shard.iterdir() if path.is_file() and not path.name.startswith(".")]
        if not files:
            continue  # an empty shard (fewer records than shards); the count check below still sees every record
        columns, shard_rows = read_tsv_table(shard / "summary.tsv")
        fieldnames = fieldnames or columns
        for row in shard_rows:
            if row["id"] not in names:
                print(f"gather_predictions: error: {shard}/summary.tsv: unknown record {row['id']!r}", file=sys.stderr)
                return 2
            index, original = names[row["id"]]
            rows.append((index, {**row, "id": original, "name": row["id"]}))
        for path in files:
            if path.name != "summary.tsv":
                target = contacts / path.name
                if target.exists():
                    target.unlink()
                try:
                    os.link(path, target)
                except OSError:  # another file system: copy, atomically so a killed run leaves no partial file
                    with atomic_path(target) as tmp:
                        shutil.copyfile(path, tmp)
    if len(rows) != len(names):
        print(f"gather_predictions: error: {len(rows)} summary rows for {len(names)} records", file=sys.stderr)
        return 2
    columns = ["id", "name", *[c for c in fieldnames if c not in ("id", "name")]]
    with atomic_write(args.summary, newline="", encoding="utf-8") as handle:  # cells as read: literal, unquoted
        handle.write("\t".join(columns) + "\n")
        for _, row in sorted(rows, key=lambda item: item[0]):
            handle.write("\t".join(row.get(c) or "" for c in columns) + "\n")
    print(f"gathered {len(rows)} records from {len(args.shards)} shards into {args.contacts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
