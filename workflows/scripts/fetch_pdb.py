"""Fetch one PDB entry as mmCIF with Biopython's PDBList (used by the pipeline's fetch_pdb_entry rule)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from Bio.PDB import PDBList


def main(pdb_id: str, output: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fetched = PDBList(verbose=False).retrieve_pdb_file(pdb_id, pdir=tmp, file_format="mmCif", overwrite=True)
        if not fetched or not Path(fetched).exists():
            print(f"fetch_pdb: could not download PDB entry {pdb_id!r} (no internet, or an obsolete ID)", file=sys.stderr)
            return 1
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(output).with_suffix(".cif.part")
        shutil.copyfile(fetched, partial)
        partial.replace(output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
