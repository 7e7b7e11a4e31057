"""A third-party plugin is an ordinary distribution: in a fresh venv, `pip install` of the
core and of examples/plugvm-virtio-pmem from their folders (not editable) adds --pmem
and vm.add-pmem, the example passes its own conformance tests there, and
`pip uninstall` takes both away again.

The index is used only for the core's dependencies and pytest; PIP_CACHE_DIR is one
folder shared by every run, so after the first run they come from its wheel cache."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugvm-virtio-pmem"
CACHE = Path(os.environ.get("PLUGVM_PIP_CACHE", Path(tempfile.gettempdir()) / "plugvm-pip-cache"))


def run(*argv, timeout=600, **kw):
    env = {**os.environ, "PIP_CACHE_DIR": str(CACHE), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def test_the_example_installs_passes_conformance_and_uninstalls(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, plugvm = venv / "bin" / "python", venv / "bin" / "plugvm"
    # The core with its `conformance` extra (pytest, hypothesis): what an author installs.
    installed = run(python, "-m", "pip", "install", "--quiet", f"{ROOT}[conformance]", EXAMPLE)
    assert installed.returncode == 0, installed.stderr

    listed = run(plugvm, "--list-plugins")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("pmem ") and "plugvm-virtio-pmem 0.1.0" in line and "--pmem" in line
               and "API vm.add-pmem" in line for line in listed.stdout.splitlines()), listed.stdout
    assert "--pmem" in run(plugvm, "--help").stdout
    # Not the checkout's: the venv has its own copies.
    where = run(python, "-c", "import plugvm, plugvm_virtio_pmem; print(plugvm.__file__, plugvm_virtio_pmem.__file__)")
    assert str(ROOT) not in where.stdout and str(venv) in where.stdout, where.stdout

    # The example's own tests, run from a copy so that nothing of the checkout is imported.
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_conformance.py").write_bytes((EXAMPLE / "tests" / "test_conformance.py").read_bytes())
    conformance = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", tests, cwd=tmp_path)
    assert conformance.returncode == 0, conformance.stdout + conformance.stderr
    # Every part of the suite ran: DeviceTypeTests to HotplugTests (only the tests for what
    # pmem does not declare skip, each saying why).
    summary = conformance.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, conformance.stdout
    for skipped in (line for line in conformance.stdout.splitlines() if line.startswith("SKIPPED")):
        assert "declares 'remove'" in skipped or "gives none" in skipped, skipped

    removed = run(python, "-m", "pip", "uninstall", "--quiet", "-y", "plugvm-virtio-pmem")
    assert removed.returncode == 0, removed.stderr
    after = run(plugvm, "--list-plugins")
    assert after.returncode == 0 and "--pmem" not in after.stdout and "vm.add-pmem" not in after.stdout
    assert "--pmem" not in run(plugvm, "--help").stdout
    gone = run(plugvm, "--kernel", python, "--pmem", "file=x")
    assert gone.returncode == 1 and "plugvm-virtio-pmem distribution, which is not installed" in gone.stderr
