"""Which blocks of the virtio-mem region are plugged: a pure bookkeeping object, with
no lock and no guest memory (region.py holds both).

A request names its blocks by guest address and count; range() turns that into block
indices once, refusing anything not wholly inside the usable region, so that nothing
after it can reach outside the region.
"""

from __future__ import annotations

BLOCK_SIZE = 2 << 20        # ch's VIRTIO_MEM_DEFAULT_BLOCK_SIZE; a THP on x86-64

# virtio 1.2 §5.15.6.2 (struct virtio_mem_resp_state.state)
PLUGGED, UNPLUGGED, MIXED = 0, 1, 2


class Blocks:
    """One byte per block, 1 when plugged (an 8 GiB region: 4 KiB). Counting and
    marking a range are slice operations, not Python loops over blocks."""

    def __init__(self, addr: int, size: int, block_size: int = BLOCK_SIZE):
        if addr % block_size or size % block_size or size <= 0:
            raise ValueError(f"a virtio-mem region at {addr:#x} of {size:#x} bytes is not made of "
                             f"{block_size:#x}-byte blocks")
        self.addr, self.size, self.block_size = addr, size, block_size
        self._plugged = bytearray(size // block_size)
        self.plugged_blocks = 0

    @property
    def plugged_size(self) -> int:
        return self.plugged_blocks * self.block_size

    def range(self, addr: int, nb_blocks: int) -> tuple[int, int] | None:
        """(first block index, block count) of [addr, +nb_blocks blocks), or None when the
        range is empty, not block-aligned or not wholly inside the region."""
        if nb_blocks <= 0 or addr < self.addr or (addr - self.addr) % self.block_size:
            return None
        first = (addr - self.addr) // self.block_size
        # Python ints do not wrap; a u64 address near 2^64 is simply past the end.
        if first + nb_blocks > len(self._plugged):
            return None
        return first, nb_blocks

    def state(self, first: int, count: int) -> int:
        """PLUGGED, UNPLUGGED or MIXED for blocks [first, +count)."""
        plugged = self._plugged.count(1, first, first + count)
        return PLUGGED if plugged == count else UNPLUGGED if plugged == 0 else MIXED

    def mark(self, first: int, count: int, plugged: bool) -> None:
        """Set blocks [first, +count), which the caller found all in the other state."""
        self._plugged[first:first + count] = (b"\1" if plugged else b"\0") * count
        self.plugged_blocks += count if plugged else -count

    def clear(self) -> None:
        """Every block unplugged (UNPLUG_ALL)."""
        self._plugged = bytearray(len(self._plugged))
        self.plugged_blocks = 0

    def address(self, first: int) -> int:
        return self.addr + first * self.block_size
