"""Guest memory: memfd-backed shared mappings, and checked guest-physical access.

memfd, not anonymous memory, because virtio-fs (vhost-user) hands the fds to
virtiofsd. Guest addresses are checked here, once; callers then work on
memoryviews without further checks.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from plugvm import layout
from plugvm.errors import PlugvmError


class GuestMemoryAllocationError(PlugvmError, MemoryError):
    """The host would not give the guest its RAM (the memfd or its mappings)."""


class GuestMemoryError(PlugvmError, ValueError):
    """A guest-physical range is not (wholly) inside one RAM region."""

    def __init__(self, addr: int, length: int):
        super().__init__(f"guest range [{addr:#x}, +{length:#x}) is not in guest RAM")
        self.addr = addr
        self.length = length


@dataclass
class Region:
    """One contiguous range of guest RAM and its host mapping."""

    guest_addr: int
    size: int
    fd: int
    offset: int            # within the memfd
    mapping: mmap.mmap

    @property
    def end(self) -> int:
        return self.guest_addr + self.size


class GuestMemory:
    """Guest RAM as memfd-backed regions (boot RAM split around the 32-bit hole)."""

    def __init__(self, size: int, name: str = "plugvm-ram"):
        if size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"guest memory size {size} is not a positive multiple of the page size")
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self.size = size
        self.regions: list[Region] = []
        self._spans: list[tuple[int, int, memoryview]] = []    # (start, end, view of the whole region)
        try:
            os.ftruncate(self.fd, size)
            low = min(size, layout.MEM_32BIT_RESERVED_START)
            self._add(0, low, 0)
            if size > low:
                self._add(layout.RAM_64BIT_START, size - low, low)
        except (OSError, OverflowError) as e:
            self.close()
            raise GuestMemoryAllocationError(f"--memory: cannot allocate size={size} bytes of guest RAM: "
                                             f"{getattr(e, 'strerror', None) or e}") from e

    def _add(self, guest_addr: int, size: int, offset: int) -> None:
        mapping = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self.regions.append(Region(guest_addr, size, self.fd, offset, mapping))
        self._spans.append((guest_addr, guest_addr + size, memoryview(mapping)))

    def view(self, addr: int, length: int) -> memoryview:
        """A writable view of [addr, addr+length) in guest RAM; GuestMemoryError if
        the range is not wholly inside one region (ranges never straddle regions)."""
        # A hot path (every virtqueue buffer): slices of views made once per region.
        if addr >= 0 and length >= 0:
            for start, end, whole in self._spans:
                if start <= addr and addr + length <= end:
                    offset = addr - start
                    return whole[offset:offset + length]
        raise GuestMemoryError(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self.view(addr, len(data))[:] = data

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    @property
    def end(self) -> int:
        """The guest-physical end of the highest RAM region."""
        return max(r.end for r in self.regions)

    @property
    def low_end(self) -> int:
        """End of the RAM below the 32-bit hole."""
        return self.regions[0].end

    def close(self) -> None:
        for _, _, whole in self._spans:
            whole.release()
        self._spans.clear()
        for r in self.regions:
            try:
                r.mapping.close()
            except BufferError:
                # A view is still exported (a device holding a buffer): the mapping is
                # unmapped when the last view goes, instead of failing the VM's teardown.
                pass
        self.regions.clear()
        os.close(self.fd)
