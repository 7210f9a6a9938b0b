"""Argument types and helpers shared by the sub-commands (one place, so every command parses the same way)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

from protrnn.conventions import named_test_set
from protrnn.errors import InputError

#: A name given on the command line that becomes a file name or a CSV value (``--test-set``, ``--model``).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


#: Largest seed the commands accept: 2**63 - 1, a signed 64-bit integer (what torch.manual_seed, NumPy's generators
#: and the recorded JSON all hold).
MAX_SEED = 2**63 - 1


def seed_int(text: str) -> int:
    """A seed: an integer in [0, 2**63 - 1] (:data:`MAX_SEED`)."""
    value = int(_number(text, int))
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = float(_number(text, float))
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number in (0, 1)."""
    value = float(_number(text, float))
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = float(_number(text, float))
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = float(_number(text, float))
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(_number(text, float))
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def optional_float(text: str) -> float | None:
    """A number, or ``none`` (``null``) for a library default."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def name_list(text: str | None) -> list[str]:
    """Comma-separated names, blanks around and between them dropped (``"a, b,"`` -> ``["a", "b"]``; None -> [])."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


def _integers(text: str, minimum: int, kind: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected {kind} separated by commas, got {text!r}")
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:  # distances, radii and bin edges: one model or one measurement each
        raise argparse.ArgumentTypeError(f"{', '.join(map(str, twice))} given more than once in {text!r}")
    return values


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``8,16,32``."""
    return _integers(text, 1, "positive integers")


def non_negative_int_list(text: str) -> list[int]:
    """Comma-separated integers >= 0, e.g. context radii ``0,4,16`` (0 keeps only a pair's two residues)."""
    return _integers(text, 0, "integers >= 0")


def model_spec(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the model directory, or the checkpoint's stem)."""
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name and path:
            return name, Path(path)
    path = Path(text)
    if path.suffix == ".ckpt":
        return path.stem, path
    resolved = path if path.is_dir() else path.parent
    return resolved.resolve().name or str(path), path


def default_cache_dir() -> Path:
    """Where downloaded default-data wheels are cached: ``$XDG_CACHE_HOME/protrnn/wheels`` (``~/.cache`` default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "protrnn" / "wheels"


def named_paths(values: Sequence[str] | None, option: str, *, bare: bool = False) -> dict[str, Path]:
    """``["NAME=PATH", ...]`` -> ``{NAME: Path}`` (``--test-set``, ``--model``: one parser for every command).

    Names become file names and CSV values, so they must be unique and safe (:data:`SAFE_NAME`: letters, digits,
    '_', '.', '-', '@' or '+', starting with a letter or digit; ``lstm@seed0`` names one seed of a model). With
    ``bare``, a plain PATH is allowed and named after its stem (``test_`` prefix and ``.npz`` suffix dropped:
    ``results/data/test_ts50.npz`` -> ``ts50``).
    """
    named: dict[str, Path] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep and bare:
            path = value
            stem = Path(value).name.removesuffix(".npz")
            name = named_test_set(stem) or stem
        name = name.strip()
        if (not sep and not bare) or not name or not path:
            raise InputError(f"{option} {value!r}: expected NAME=PATH")
        if not SAFE_NAME.match(name):
            raise InputError(f"{option} {value!r}: the name {name!r} must be letters, digits, '_', '.', '-', '@' or "
                             "'+', starting with a letter or digit")
        if name in named:
            raise InputError(f"{option} {value!r}: the name {name!r} is given twice")
        named[name] = Path(path)
    return named


def recorded_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The parsed arguments as JSON values (paths as strings), for the provenance files commands write."""
    return {key: value if isinstance(value, (bool, int, float, type(None))) else
            [str(v) for v in value] if isinstance(value, list) else str(value)
            for key, value in vars(args).items() if not key.startswith("_")}
