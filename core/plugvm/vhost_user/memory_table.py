"""Guest RAM as a vhost-user backend must see it: each region's memfd, its offset there,
and where plugvm maps it (the "user address" that ring addresses are given in).

A device builds a MemoryTable from its VM's GuestMemory when it activates, hands
table.regions to Frontend.activate, turns ring addresses into user addresses with
table.user_address, and on plugvm_memory_added passes table.add(region) to
Frontend.add_region. The fds stay GuestMemory's: nothing here closes them.
"""

from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass

from plugvm.memory import GuestMemory, Region
from plugvm.vhost_user.errors import MemoryTableError
from plugvm.vhost_user.protocol import MemoryRegion


@dataclass(frozen=True)
class SharedRegion:
    """One guest RAM region a backend can map: the memfd (borrowed) and the wire fields."""

    guest_addr: int
    size: int
    user_addr: int          # the host virtual address of plugvm's mapping
    fd: int
    mmap_offset: int

    @property
    def wire(self) -> MemoryRegion:
        return MemoryRegion(self.guest_addr, self.size, self.user_addr, self.mmap_offset)


def host_address(mapping: mmap.mmap) -> int:
    """The address of an mmap in this process. The ctypes view is dropped at once, so
    that the mapping can still be closed (an exported buffer would pin it)."""
    anchor = ctypes.c_char.from_buffer(mapping)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def shared_region(memory: GuestMemory, region: Region) -> SharedRegion:
    """The backend's view of one of memory's regions. MemoryTableError unless the RAM is
    a memfd mapped MAP_SHARED: a backend maps the fd, and with a private mapping (or
    none) it would not see what the guest writes."""
    if region.fd < 0 or not memory.backing.shared:
        raise MemoryTableError(f"guest RAM at {region.guest_addr:#x} (+{region.size:#x}) is not shared memory: "
                               f"a vhost-user backend needs --memory shared=on")
    return SharedRegion(region.guest_addr, region.size, host_address(region.mapping), region.fd, region.offset)


class MemoryTable:
    """The regions of guest RAM a backend is told of, and guest-to-user address translation."""

    def __init__(self, regions: list[SharedRegion]):
        self.regions = list(regions)

    @classmethod
    def of(cls, memory: GuestMemory) -> MemoryTable:
        """Every region of `memory` (MemoryTableError if any is not shared)."""
        return cls([shared_region(memory, r) for r in memory.regions])

    def add(self, memory: GuestMemory, region: Region) -> SharedRegion:
        """Take in a region added at run time; returns it for Frontend.add_region."""
        shared = shared_region(memory, region)
        self.regions.append(shared)
        return shared

    def user_address(self, guest_addr: int, length: int = 1) -> int:
        """The user address of [guest_addr, +length), which must lie inside one region
        (a ring does); MemoryTableError otherwise, naming the address."""
        for r in self.regions:
            if r.guest_addr <= guest_addr and guest_addr + length <= r.guest_addr + r.size and length >= 0:
                return r.user_addr + (guest_addr - r.guest_addr)
        raise MemoryTableError(f"guest address {guest_addr:#x} (+{length:#x}) is not in guest RAM")
