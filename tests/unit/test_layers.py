"""The layers, held by import-linter's contracts in pyproject.toml ([tool.importlinter]):
the core never imports a plugin, plugins never import each other, plugvm-remote imports
nothing of plugvm, only plugvm.kvm touches cffi and only plugvm.api falcon and waitress.
The compiled binding plugvm.kvm._kvm is no .py file, so the import graph cannot see it:
its importers are checked here from the source."""

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_are_kept():
    done = subprocess.run([LINT, "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_plugin_distribution_in_the_tree_is_under_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    packages = {p.parent.name for p in ROOT.glob("*/*/plugvm_*/__init__.py")}
    packages |= {p.parent.name for p in ROOT.glob("*/plugvm_*/__init__.py")}
    assert packages and packages <= set(config["root_packages"]), sorted(packages - set(config["root_packages"]))
    independent = next(c for c in config["contracts"] if c["type"] == "independence")["modules"]
    assert packages <= set(independent)


def test_only_plugvm_kvm_imports_the_compiled_binding():
    offenders = []
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "build" in path.parts or path.is_relative_to(ROOT / "core/plugvm/kvm"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith("plugvm.kvm._kvm") for n in names) or (
                    isinstance(node, ast.ImportFrom) and node.module == "plugvm.kvm"
                    and any(a.name == "_kvm" for a in node.names)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
