"""Layers import downwards only, and the torch-free modules stay torch-free: the import-linter contracts of
pyproject.toml ([tool.importlinter]) run on the package, and are shown to fail on a deliberately broken copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: import-linter has no ``python -m`` entry point; its console script calls this function.
LINT_IMPORTS = "from importlinter.cli import lint_imports_command; lint_imports_command()"
#: Modules that must be importable without torch (the forbidden contract's source modules).
TORCH_FREE = ("protrnn.report", "protrnn.diagnostics.results", "protrnn.evaluation.results",
              "protrnn.evaluation.metrics", "protrnn.conventions", "protrnn.alphabet", "protrnn.rr")


def lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the pyproject.toml in ``root`` on the ``protrnn`` package in ``root`` (not an installed
    one: ``root`` leads the subprocess's import path)."""
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return subprocess.run([sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo", *selected], cwd=root,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=300)


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"import-linter exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"


def test_configured_contracts_are_the_layers_and_the_torch_free_modules() -> None:
    """Guard against the contracts being dropped or emptied (an empty list would lint clean)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contracts = {contract["id"]: contract for contract in config["contracts"]}
    assert set(contracts) == {"layers", "torch-free"}
    layers = contracts["layers"]
    assert layers["containers"] == ["protrnn"] and layers["exhaustive"] is True
    assert layers["layers"][0] == "__main__" and layers["layers"][-1] == "errors | utils"
    assert not any(layer.startswith("(") for layer in layers["layers"]), "a layer was made optional"
    assert config["include_external_packages"] is True
    assert contracts["torch-free"]["forbidden_modules"] == ["torch"]
    assert tuple(contracts["torch-free"]["source_modules"]) == TORCH_FREE


def test_layers_import_downwards_only() -> None:
    result = lint_imports(REPO, "layers")
    assert result.returncode == 0, _report(result)
    assert "protrnn layers import downwards only KEPT" in result.stdout, _report(result)


def test_torch_free_modules_do_not_import_torch() -> None:
    result = lint_imports(REPO, "torch-free")
    assert result.returncode == 0, _report(result)
    assert "torch-free modules never import torch KEPT" in result.stdout, _report(result)


def _copy_package(target: Path) -> None:
    """The Python source of protrnn and the pyproject.toml that holds the contracts, nothing else."""
    def not_source(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]

    shutil.copytree(REPO / "protrnn", target / "protrnn", ignore=not_source)
    shutil.copy2(REPO / "pyproject.toml", target / "pyproject.toml")


def test_the_contracts_fail_on_an_upward_import_and_on_a_lazy_torch_import(tmp_path: Path) -> None:
    """The checker bites: a copy of the package with one upward import (data -> commands, at module level) and one
    function-level ``import torch`` in rr.py fails both contracts, naming each import and its line."""
    _copy_package(tmp_path)
    chain = tmp_path / "protrnn" / "data" / "chain.py"
    text = chain.read_text(encoding="utf-8")
    chain.write_text(text + "\nimport protrnn.commands  # deliberate upward import\n", encoding="utf-8")
    upward_line = len(text.splitlines()) + 2
    rr = tmp_path / "protrnn" / "rr.py"
    text = rr.read_text(encoding="utf-8")
    rr.write_text(text + "\n\ndef _needs_torch():\n    import torch\n\n    return torch\n", encoding="utf-8")
    torch_line = len(text.splitlines()) + 4

    result = lint_imports(tmp_path)
    assert result.returncode == 1, _report(result)
    report = result.stdout
    assert "protrnn layers import downwards only BROKEN" in report, _report(result)
    assert "protrnn.data is not allowed to import protrnn.commands" in report, _report(result)
    assert f"protrnn.data.chain -> protrnn.commands (l.{upward_line})" in report, _report(result)
    assert "torch-free modules never import torch BROKEN" in report, _report(result)
    assert "protrnn.rr is not allowed to import torch" in report, _report(result)
    assert f"protrnn.rr -> torch (l.{torch_line})" in report, _report(result)

    # Without the two additions the same copy lints clean, so it was those imports that broke the contracts.
    chain.write_text(chain.read_text(encoding="utf-8").replace("\nimport protrnn.commands  # deliberate upward "
                                                               "import\n", ""), encoding="utf-8")
    rr.write_text(text, encoding="utf-8")
    assert lint_imports(tmp_path).returncode == 0


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_a_torch_free_module_leaves_torch_unloaded(module: str) -> None:
    """At run time too (the contract reads the source; this imports it): reading results or writing the report
    never loads torch."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {module} loaded torch"


def test_the_lazy_public_api_is_listed_by_dir_before_use() -> None:
    """`dir(protrnn)` (tab completion, help()) showed only typing names: the public API is imported on first use."""
    code = ("import sys, protrnn; names = dir(protrnn); "
            "print(sorted(set(protrnn.__all__) - set(names)), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False"]
