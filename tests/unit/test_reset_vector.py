"""The reset-vector stub: real-mode code that writes the FADT's reset register."""

import shutil
import subprocess

import pytest

from plugvm import layout
from plugvm.boot import reset_vector
from plugvm.memory import GuestMemory


def test_stub_fits_below_1mib_and_is_installed():
    assert reset_vector.RESET_VECTOR + len(reset_vector.STUB) <= 0x100000
    memory = GuestMemory(2 << 20)
    try:
        reset_vector.install(memory)
        assert memory.read(reset_vector.RESET_VECTOR, len(reset_vector.STUB)) == reset_vector.STUB
    finally:
        memory.close()


@pytest.mark.skipif(shutil.which("objdump") is None, reason="binutils' objdump is not installed")
def test_stub_disassembles_to_a_reset_register_write(tmp_path):
    code = tmp_path / "stub.bin"
    code.write_bytes(reset_vector.STUB)
    listing = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i8086", str(code)],
                             capture_output=True, text=True, check=True).stdout
    instructions = [" ".join(line.split("\t")[2].split()) for line in listing.splitlines() if line.count("\t") >= 2]
    assert instructions == ["mov $0x1,%al", f"mov ${layout.ACPI_SLEEP_PORT:#x},%dx", "out %al,(%dx)", "cli", "hlt",
                            "jmp 0x7"]
