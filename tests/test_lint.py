"""Style is part of the contract: `ruff check` over the whole repository runs with the test suite.

ruff is in the ``[test]`` extra, so it is run through this interpreter (``python -m ruff``): a missing ruff fails here
instead of skipping, whether or not the environment's scripts are on PATH.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
