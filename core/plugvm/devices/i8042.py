"""The i8042 keyboard controller, only as far as a guest uses it to reset the machine."""

from __future__ import annotations

from typing import Callable

COMMAND_OFFSET = 3       # port 0x64 in the range that starts at 0x61
CMD_RESET_CPU = 0xFE     # pulse the CPU reset line


class I8042:
    def __init__(self, reset: Callable[[], None]):
        self._reset = reset

    def read(self, offset: int, data: memoryview) -> None:
        # Port B (0x61) and the status register read as zero: no data, input buffer empty.
        data[:] = b"\0" * len(data)

    def write(self, offset: int, data: memoryview) -> None:
        if offset == COMMAND_OFFSET and data[0] == CMD_RESET_CPU:
            self._reset()
