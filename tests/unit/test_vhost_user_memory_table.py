"""The memory table a vhost-user backend gets from a GuestMemory: shared memfds only,
our mapping's address as the user address, and guest-to-user translation."""

import ctypes

import pytest

from plugvm import layout
from plugvm.memory import Backing, GuestMemory
from plugvm.vhost_user import MemoryTable, MemoryTableError
from plugvm.vhost_user.memory_table import host_address

MiB = 1 << 20


def test_regions_carry_the_memfd_offset_and_our_mapping():
    with_hole = layout.MEM_32BIT_RESERVED_START + 2 * MiB     # boot RAM split around the 32-bit hole
    memory = GuestMemory(with_hole, backing=Backing(shared=True))
    try:
        table = MemoryTable.of(memory)
        low, high = table.regions
        assert (low.guest_addr, low.size, low.mmap_offset, low.fd) == (0, layout.MEM_32BIT_RESERVED_START, 0,
                                                                       memory.fd)
        assert (high.guest_addr, high.size, high.mmap_offset, high.fd) == (
            layout.RAM_64BIT_START, 2 * MiB, layout.MEM_32BIT_RESERVED_START, memory.fd)
        memory.write(layout.RAM_64BIT_START + 8, b"ring")
        assert ctypes.string_at(table.user_address(layout.RAM_64BIT_START + 8, 4), 4) == b"ring"
        assert table.user_address(4096) == low.user_addr + 4096
    finally:
        memory.close()      # host_address left no export behind that would pin the mapping


def test_private_memory_is_refused_with_the_option_to_use():
    for backing in (Backing(), Backing(hugepages=False, shared=False, prefault=True)):
        memory = GuestMemory(4 * MiB, backing=backing)
        with pytest.raises(MemoryTableError, match="needs --memory shared=on"):
            MemoryTable.of(memory)
        memory.close()


def test_addresses_outside_guest_ram_are_refused():
    memory = GuestMemory(4 * MiB, backing=Backing(shared=True))
    table = MemoryTable.of(memory)
    with pytest.raises(MemoryTableError, match="0x400000 .\\+0x1. is not in guest RAM"):
        table.user_address(4 * MiB)
    with pytest.raises(MemoryTableError, match="not in guest RAM"):
        table.user_address(4 * MiB - 8, 16)     # straddles the end
    assert table.user_address(4 * MiB - 16, 16) == host_address(memory.regions[0].mapping) + 4 * MiB - 16
    memory.close()


def test_added_regions_join_the_table():
    memory = GuestMemory(4 * MiB, backing=Backing(shared=True))
    table = MemoryTable.of(memory)
    added = table.add(memory, memory.add_region(1 << 32, 2 * MiB))
    assert table.regions[-1] == added and added.fd == memory.regions[1].fd
    assert table.user_address((1 << 32) + 5) == added.user_addr + 5
    memory.close()
