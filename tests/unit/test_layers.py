"""The layers, held by import-linter's contracts in pyproject.toml ([tool.importlinter]):
the core never imports a plugin, plugins never import each other, plugvm-remote imports
nothing of plugvm, only plugvm.kvm and the builders of the C fast paths touch cffi, and
only plugvm.api imports falcon and waitress. The compiled modules (the binding
plugvm.kvm._kvm, the chain walk plugvm.virtio._ring, virtio-blk's plugvm_virtio_blk._fast)
are no .py files, so the import graph cannot see them: their importers are checked here
from the source."""

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


def importers_of(package: str, module: str, allowed: list[Path]) -> list[str]:
    """Files outside `allowed` that import the compiled `package`.`module`."""
    offenders = []
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "build" in path.parts or any(path.is_relative_to(a) for a in allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(f"{package}.{module}") for n in names) or (
                    isinstance(node, ast.ImportFrom) and node.module == package
                    and any(a.name == module for a in node.names)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return offenders


def test_only_plugvm_kvm_imports_the_compiled_binding():
    assert importers_of("plugvm.kvm", "_kvm", [ROOT / "core/plugvm/kvm"]) == []


def test_only_c_ring_imports_the_compiled_chain_walk():
    """plugvm.virtio._ring (ring.c) is reached through plugvm.virtio.c_ring, which holds
    what its C may be given (the queue's indices and guest RAM for one call)."""
    assert importers_of("plugvm.virtio", "_ring", [ROOT / "core/plugvm/virtio/c_ring.py"]) == []


def test_only_the_blk_fast_path_imports_blk_c():
    assert importers_of("plugvm_virtio_blk", "_fast", [ROOT / "plugins/virtio_blk/plugvm_virtio_blk/fast.py"]) == []
