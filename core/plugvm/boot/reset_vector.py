"""A firmware stand-in at the x86 reset vector, so that a guest which reboots by
jumping there (rather than through a reset register) still resets.

Linux on a hardware-reduced ACPI machine picks the EFI reboot method, and without
EFI runtime services falls back to BIOS: machine_real_restart() drops to real mode
and far-jumps to F000:FFF0. With no BIOS, that ran whatever bytes were there and
the guest never came back. These few bytes do what a PC BIOS's reset path ends in:
write the FADT's reset register, which the VMM turns into a reset.
"""

from __future__ import annotations

from plugvm import layout

RESET_VECTOR = 0xFFFF0          # F000:FFF0 in real mode

# 16-bit real-mode code (assembled by hand; a unit test disassembles it with objdump):
STUB = bytes([
    0xB0, 0x01,                 # mov al, 1           ; the FADT's RESET_VALUE
    0xBA, *layout.ACPI_SLEEP_PORT.to_bytes(2, "little"),   # mov dx, 0x600 ; RESET_REG
    0xEE,                       # out dx, al
    0xFA,                       # cli
    0xF4,                       # hlt                 ; not reached: the VM is rebuilt
    0xEB, 0xFD,                 # jmp short hlt
])


def install(memory) -> None:
    """Write the stub at the reset vector (below 1 MiB; e820 does not give it to the guest as RAM)."""
    memory.write(RESET_VECTOR, STUB)
