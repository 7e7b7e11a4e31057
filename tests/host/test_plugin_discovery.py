"""Device types come from installed distributions: pip-uninstalling plugvm-virtio-net
takes --net away (with a clear message), reinstalling brings it back."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def plugvm(*args):
    return subprocess.run([BIN / "plugvm", *args], capture_output=True, text=True, timeout=60)


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True, timeout=600)


def test_uninstalling_a_plugin_removes_its_option_and_reinstalling_restores_it(tmp_path):
    kernel = tmp_path / "k"
    kernel.write_bytes(b"\0" * 4096)
    listed = plugvm("--list-plugins")
    assert listed.returncode == 0
    assert any(line.startswith("net ") and "plugvm-virtio-net" in line and "--net" in line and "vm.add-net" in line
               for line in listed.stdout.splitlines()), listed.stdout
    pip("uninstall", "-y", "plugvm-virtio-net")
    try:
        gone = plugvm("--kernel", str(kernel), "--net", "tap=plugvmx0")
        assert gone.returncode == 1
        assert gone.stderr.strip().splitlines() == [
            "plugvm: error: --net: unknown option (no installed plugin provides it; it comes with the "
            "plugvm-virtio-net distribution, which is not installed (plugvm --list-plugins shows the installed ones))"]
        assert "--net" not in plugvm("--list-plugins").stdout
        assert "--net" not in plugvm("--help").stdout
    finally:
        pip("install", "-e", str(ROOT / "plugins" / "virtio_net"))
    back = plugvm("--list-plugins")
    assert "plugvm-virtio-net" in back.stdout and "--net" in plugvm("--help").stdout
