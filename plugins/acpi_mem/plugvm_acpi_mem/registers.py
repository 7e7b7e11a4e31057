"""The memory hotplug controller's registers, as cloud-hypervisor's MemoryManager serves
them (vmm/src/memory_manager.rs; shared/reference/cloud-hypervisor-notes.md §3c). The
AML that drives them is aml.py's \\_SB_.MHPC.

    0x00  read: the selected slot's base, low 32 bits   write: the slot selector (byte 0)
    0x04  base, high 32 bits
    0x08  length, low 32 bits
    0x0C  length, high 32 bits
    0x14  status byte; read: bit 0 enabled, bit 1 inserting, bit 2 removing
          write: bit 1 acks the insert, bit 2 acks a removal, bit 3 ejects (not supported:
          ACPI memory is never unplugged, as in cloud-hypervisor)

The DWord registers answer 4-byte reads only, the status byte 1-byte accesses; a guest
reading or writing anything else gets zeros and a log line, never an error.
"""

from __future__ import annotations

import threading

from plugvm.logs import get_logger

log = get_logger(__name__)

REGISTERS_SIZE = 0x18             # MEMORY_MANAGER_ACPI_SIZE
SLOTS = 8                         # HOTPLUG_COUNT: hot-adds per boot
SELECTOR, BASE_LOW, BASE_HIGH, LENGTH_LOW, LENGTH_HIGH, STATUS = 0x0, 0x0, 0x4, 0x8, 0xC, 0x14
ENABLED, INSERTING, REMOVING, EJECT = 0x1, 0x2, 0x4, 0x8


class _Slot:
    __slots__ = ("base", "length", "enabled", "inserting", "acked", "taken")

    def __init__(self):
        self.base = self.length = 0
        self.enabled = self.inserting = self.acked = False
        self.taken = threading.Event()      # the guest read the new DIMM's range after the scan


class MemoryHotplugRegisters:
    """The eight DIMM slots' registers. The method fills a slot with insert(); the guest's
    MSCN notifies and acks it, then Linux reads its _STA and _CRS (MCRS), which sets the
    event insert() returned."""

    def __init__(self, slots: int = SLOTS):
        self._slots = [_Slot() for _ in range(slots)]
        self._selected = 0
        self._lock = threading.Lock()

    def insert(self, slot: int, base: int, length: int) -> threading.Event:
        """Show DIMM `slot` at [base, +length), enabled and inserting, for the guest's next scan."""
        with self._lock:
            state = self._slots[slot]
            state.base, state.length = base, length
            state.enabled = state.inserting = True
            state.acked = False
            state.taken.clear()
            return state.taken

    # --- the guest's side (vCPU threads) -------------------------------------------------------

    def read(self, offset: int, data: memoryview) -> None:
        value = 0
        with self._lock:
            state = self._slots[self._selected] if self._selected < len(self._slots) else None
            if state is None:
                pass                        # a selector past the slots: everything reads 0
            elif len(data) == 4 and offset in (BASE_LOW, BASE_HIGH):
                value = state.base >> (32 if offset == BASE_HIGH else 0) & 0xFFFF_FFFF
            elif len(data) == 4 and offset in (LENGTH_LOW, LENGTH_HIGH):
                value = state.length >> (32 if offset == LENGTH_HIGH else 0) & 0xFFFF_FFFF
                if offset == LENGTH_HIGH and state.acked:
                    state.taken.set()       # MCRS reads the length last: the guest has the range
            elif len(data) == 1 and offset == STATUS:
                value = (ENABLED * state.enabled) | (INSERTING * state.inserting)
            else:
                log.debug("memory hotplug: read ignored", offset=offset, size=len(data))
        data[:] = value.to_bytes(len(data), "little") if len(data) in (1, 2, 4, 8) else bytes(len(data))

    def write(self, offset: int, data: memoryview) -> None:
        value = int.from_bytes(data, "little")
        with self._lock:
            if offset == SELECTOR and len(data) == 4:
                self._selected = value & 0xFF       # ch uses byte 0; past the slots: reads 0, writes nothing
                return
            if offset != STATUS or len(data) != 1 or self._selected >= len(self._slots):
                log.warning("memory hotplug: write ignored", offset=offset, size=len(data), selected=self._selected)
                return
            state = self._slots[self._selected]
            if value & INSERTING and state.inserting:
                state.inserting, state.acked = False, True
            if value & EJECT:
                log.warning("memory hotplug: eject is not supported (ACPI memory is not unplugged)",
                            slot=self._selected)
