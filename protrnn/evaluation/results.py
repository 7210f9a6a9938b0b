"""The files ``protrnn evaluate`` writes, and their readers: torch-free, so the report and the workflow scripts can
read results without loading the model stack.

* ``per_protein.csv`` (:data:`PER_PROTEIN_FILE`): ``method, test_set, protein`` (:data:`ID_COLUMNS`) then every
  metric key, NaN written as ``nan``; floats in their shortest round-trip text, so the CSV matches summary.json.
* ``summary.json`` (:data:`SUMMARY_FILE`): ``{"format": "protrnn-evaluation", ...}``, strict JSON (NaN -> null).
* ``predictions/<method>/<test set>/<protein>.npz`` (:data:`PREDICTIONS_DIR`): ``probs``, ``contacts``,
  ``observed``, ``sequence``, ``id``, readable with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protrnn.data.chain import ProteinChain
from protrnn.errors import InputError, read_json_document, reading
from protrnn.utils.io import atomic_path, atomic_write, csv_records, json_safe

SUMMARY_FORMAT = "protrnn-evaluation"
SUMMARY_FORMAT_VERSION = 1
PER_PROTEIN_FILE = "per_protein.csv"
SUMMARY_FILE = "summary.json"
PREDICTIONS_DIR = "predictions"
ID_COLUMNS = ("method", "test_set", "protein")
#: The baselines `protrnn evaluate` knows, in the order tables and legends list them (after the models).
BASELINE_NAMES = ("random", "separation", "propensity", "freecontact")
#: How tables, legends and the bundle card name a test set's chance level (summary.json's ``chance``).
CHANCE_NAME = "chance (random ranking, expected)"


# ------------------------------------------------------------------------------------------------- per-protein table
def _format_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)  # shortest text that reads back to the same float: the CSV matches summary.json
    return str(value)


def write_per_protein_csv(path: Path, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """The per-protein table: identity columns then metric keys, in a fixed order. A protein ID holding bytes that
    were not UTF-8 (lone surrogates U+DC80..U+DCFF, from a file name read by ``protrnn prepare``) is written as
    their escapes (``\\udce9``: the form ``manifest.tsv`` gives them), so the file stays UTF-8 and reads back."""
    columns = [*ID_COLUMNS, *keys]
    with atomic_write(path, newline="", encoding="utf-8", errors="backslashreplace") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_format_value(row.get(column, math.nan)) for column in columns])


def read_per_protein_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read ``per_protein.csv`` back: identity columns as strings, everything else as float (``nan`` allowed). A row
    whose field count differs from the header's, and a field the :mod:`csv` module refuses (over its size limit),
    are one-line :class:`InputError` messages naming the file and the line."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, ...], int] = {}
    with reading(path), open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        records = csv_records(reader, lambda: reader.line_num)
        header = next(records, [])
        missing = [c for c in ID_COLUMNS if c not in header]
        if missing:
            raise InputError(f"not a per-protein table: missing column {missing[0]!r}", path=path)
        for fields in records:
            if not fields:  # a blank line
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise InputError(f"line {line} has {len(fields)} fields, but the header names {len(header)} columns",
                                 path=path)
            record = dict(zip(header, fields, strict=True))
            identity = tuple(record[c] for c in ID_COLUMNS)
            if identity in seen:  # a second row would silently replace the first in every mean
                raise InputError(f"{', '.join(f'{c} {v!r}' for c, v in zip(ID_COLUMNS, identity, strict=True))} "
                                 f"is listed twice (line {seen[identity]} and here)", path=path, position=line)
            seen[identity] = line
            row: dict[str, Any] = {}
            for key, value in record.items():
                if key in ID_COLUMNS:
                    row[key] = value
                    continue
                try:
                    row[key] = float(value) if value != "" else math.nan
                except ValueError:
                    raise InputError(f"column {key!r}: {value!r} is not a number", path=path,
                                     position=line) from None
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------- summary
def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` atomically as strict JSON (see :func:`json_safe`)."""
    with atomic_write(path, encoding="utf-8") as handle:
        json.dump(json_safe(summary), handle, indent=1, allow_nan=False)
        handle.write("\n")


def read_summary(directory: str | Path) -> dict[str, Any]:
    """Load ``summary.json`` from an evaluation directory (or the file itself), checking its format."""
    path = Path(directory)
    if path.is_dir():
        path = path / SUMMARY_FILE
    if not path.is_file():
        raise InputError("evaluation summary not found (run `protrnn evaluate` first)", path=path)
    summary = read_json_document(path, SUMMARY_FORMAT, max_version=SUMMARY_FORMAT_VERSION,
                                 what="protrnn evaluation summary")
    _check_summary_shape(summary, path)
    return summary


def _check_summary_shape(summary: Mapping[str, Any], path: Path) -> None:
    """The nesting readers rely on (a hand-edited summary.json failed deep inside the report with an AttributeError):
    ``results`` and ``chance`` map method / test set to ``{"metrics": {KEY: {"mean": number or null, ...}}}``,
    ``methods`` and ``test_sets`` map names to objects. One-line InputError naming the first entry that is not."""
    def fail(where: str, what: str) -> None:
        raise InputError(f"summary.json: {where} is not {what} (edited by hand?)", path=path)

    def metrics(where: str, entry: object) -> None:
        if not isinstance(entry, Mapping):
            fail(where, "an object")
        table = entry.get("metrics", {})
        if not isinstance(table, Mapping):
            fail(f"{where}.metrics", "an object")
        for key, stats in table.items():
            if not isinstance(stats, Mapping) or not isinstance(stats.get("mean"), (int, float, type(None))):
                fail(f"{where}.metrics.{key}", "an object with a numeric 'mean'")

    if "results" not in summary:
        fail("'results'", "present")
    for key in ("results", "methods", "test_sets", "chance"):
        value = summary.get(key, {})
        if not isinstance(value, Mapping):
            fail(f"{key!r}", "an object")
        for name, entry in value.items():
            if not isinstance(entry, Mapping):
                fail(f"{key}.{name}", "an object")
            if key == "results":
                for test_set, cell in entry.items():
                    metrics(f"results.{name}.{test_set}", cell)
            elif key == "chance":
                metrics(f"chance.{name}", entry)


# ------------------------------------------------------------------------------------------------------- predictions
def save_prediction(path: Path, chain: ProteinChain, probs: np.ndarray, contacts: np.ndarray) -> None:
    """One protein's predicted and true maps, readable with ``np.load(allow_pickle=False)``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, probs=probs.astype(np.float32), contacts=contacts.astype(bool),
                            observed=np.asarray(chain.observed, dtype=bool), sequence=np.array(chain.sequence),
                            id=np.array(chain.id))
