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


def test_ci_runs_the_readmes_test_command() -> None:
    """The README's second set-up command ends in the test command, and `.ci/run` ends by running exactly it: CI
    checks what a user is told to run, worker count included."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, commands
    readme_tests = commands[1].split("&&")[-1].strip()
    assert readme_tests.startswith("python -m pytest"), commands[1]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    ci_commands = [line for line in ci if line and not line.startswith("#")]
    assert ci_commands[-1] == readme_tests
