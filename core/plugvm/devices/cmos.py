"""The CMOS RTC (MC146818) at ports 0x70/0x71, giving the guest the host's UTC time.

Linux reads the wall clock from it at boot; without it the guest's clock starts
in 1970 and it spins on an update-in-progress bit that never clears.
"""

from __future__ import annotations

import threading
import time

INDEX_MASK = 0x7F        # bit 7 of the index port is the NMI mask
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
REG_A_DIVIDER = 0x26     # 32.768 kHz time base, 1024 Hz rate; UIP clear
REG_B_24H = 0x02         # 24-hour mode, BCD, no interrupts
REG_D_VRT = 0x80         # the battery is good
CENTURY = 0x32


def _bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


class Cmos:
    def __init__(self):
        self._index = 0
        self._ram = bytearray(128)
        self._lock = threading.Lock()

    def _clock(self, reg: int) -> int | None:
        t = time.gmtime()
        fields = {0x00: t.tm_sec, 0x02: t.tm_min, 0x04: t.tm_hour, 0x06: (t.tm_wday + 1) % 7 + 1,
                  0x07: t.tm_mday, 0x08: t.tm_mon, 0x09: t.tm_year % 100, CENTURY: t.tm_year // 100}
        if reg in fields:
            return _bcd(fields[reg])
        return {REG_A: REG_A_DIVIDER, REG_B: REG_B_24H, REG_C: 0, REG_D: REG_D_VRT}.get(reg)

    def read(self, offset: int, data: memoryview) -> None:
        with self._lock:
            if offset == 0:
                value = self._index
            else:
                clock = self._clock(self._index)
                value = self._ram[self._index] if clock is None else clock
        data[:] = bytes([value]) + b"\0" * (len(data) - 1)

    def write(self, offset: int, data: memoryview) -> None:
        with self._lock:
            if offset == 0:
                self._index = data[0] & INDEX_MASK
            elif self._clock(self._index) is None:
                self._ram[self._index] = data[0]
