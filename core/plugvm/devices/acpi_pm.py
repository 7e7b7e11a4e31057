"""The hardware-reduced ACPI registers the FADT points at: sleep control/status and
reset at port 0x600, and the PM timer at 0x608 (ACPI 6.3, 4.8.3.7 and 4.8.2.1)."""

from __future__ import annotations

import struct
import time
from typing import Callable

SLP_EN = 1 << 5
SLP_TYP_SHIFT, SLP_TYP_MASK = 2, 0x7
S5 = 5                   # the _S5_ package's SLP_TYP
RESET_VALUE = 1          # the FADT's RESET_VALUE
PM_TIMER_HZ = 3_579_545


class SleepResetRegister:
    """Writing SLP_TYP=S5 with SLP_EN powers off; writing the reset value resets."""

    def __init__(self, shutdown: Callable[[], None], reset: Callable[[], None]):
        self._shutdown = shutdown
        self._reset = reset

    def read(self, offset: int, data: memoryview) -> None:
        data[:] = b"\0" * len(data)

    def write(self, offset: int, data: memoryview) -> None:
        value = data[0]
        if value == RESET_VALUE:
            self._reset()
        elif value & SLP_EN and (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5:
            self._shutdown()


class PmTimer:
    """A free-running 32-bit counter at 3.579545 MHz (TMR_VAL_EXT)."""

    def __init__(self):
        self._start = time.monotonic_ns()

    def read(self, offset: int, data: memoryview) -> None:
        ticks = (time.monotonic_ns() - self._start) * PM_TIMER_HZ // 1_000_000_000
        raw = struct.pack("<I", ticks & 0xFFFFFFFF)
        data[:] = raw[offset:offset + len(data)].ljust(len(data), b"\0")

    def write(self, offset: int, data: memoryview) -> None:
        pass
