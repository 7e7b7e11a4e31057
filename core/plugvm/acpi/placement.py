"""Where the tables go in guest memory: one after another from a base address, each
on a 16-byte boundary, gathered into one blob to copy there."""

from __future__ import annotations

ALIGNMENT = 16     # the RSDP must sit on one (5.2.5.1); the tables, for tidy dumps


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return -(-value // alignment) * alignment


class Placement:
    """Hands out addresses from base upwards and remembers what went where."""

    def __init__(self, base: int):
        self.base = base
        self.cursor = base
        self.placed: list[tuple[int, bytes]] = []

    def place(self, data: bytes) -> int:
        """The address data goes to; the next item starts at the next boundary after it."""
        addr = align_up(self.cursor)
        self.placed.append((addr, data))
        self.cursor = addr + len(data)
        return addr

    @property
    def end(self) -> int:
        """The first byte past the last item."""
        return self.cursor

    def blob(self) -> bytes:
        """Everything from base to end, the gaps zeroed."""
        out = bytearray(self.end - self.base)
        for addr, data in self.placed:
            out[addr - self.base:addr - self.base + len(data)] = data
        return bytes(out)
