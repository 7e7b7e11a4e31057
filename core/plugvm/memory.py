"""Guest memory: its backing (cloud-hypervisor's --memory shared/hugepages/prefault/
mergeable/thp), regions added at run time, and checked guest-physical access.

As in cloud-hypervisor (vmm/src/memory_manager.rs), RAM is anonymous private memory
unless it must be a file: shared=on (vhost-user backends such as virtiofsd map the
memfds) or hugepages=on (a hugetlbfs memfd). Every region, at boot or hot-added,
gets the same backing. Guest addresses are checked here, once; callers then work
on memoryviews without further checks.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from plugvm import layout
from plugvm.errors import PlugvmError

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)     # Linux's value; Python 3.11 lacks the name


class GuestMemoryAllocationError(PlugvmError, MemoryError):
    """The host would not give the guest its RAM (the memfd or its mappings)."""


class GuestMemoryError(PlugvmError, ValueError):
    """A guest-physical range is not (wholly) inside one RAM region."""

    def __init__(self, addr: int, length: int):
        super().__init__(f"guest range [{addr:#x}, +{length:#x}) is not in guest RAM")
        self.addr = addr
        self.length = length


@dataclass(frozen=True)
class Backing:
    """How guest RAM is backed on the host: the --memory options that say so."""

    shared: bool = False            # a memfd mapped MAP_SHARED, which other processes can map
    hugepages: bool = False         # a hugetlbfs memfd
    hugepage_size: int | None = None
    prefault: bool = False          # populate at mmap time (MAP_POPULATE)
    mergeable: bool = False         # offered to KSM (MADV_MERGEABLE)
    thp: bool = True                # transparent huge pages (MADV_HUGEPAGE) for anonymous memory

    @classmethod
    def of(cls, memory_config) -> Backing:
        c = memory_config
        return cls(shared=c.shared, hugepages=c.hugepages, hugepage_size=c.hugepage_size, prefault=c.prefault,
                   mergeable=c.mergeable, thp=c.thp)

    @property
    def uses_file(self) -> bool:
        return self.shared or self.hugepages


@dataclass
class Region:
    """One contiguous range of guest RAM and its host mapping. fd is -1 for anonymous
    memory; boot is False for RAM added by a memory-hotplug method (not in the e820 map)."""

    guest_addr: int
    size: int
    fd: int
    offset: int            # within the fd
    mapping: mmap.mmap
    boot: bool = True
    slot: int = -1         # its KVM memory slot, once registered

    @property
    def end(self) -> int:
        return self.guest_addr + self.size


class GuestMemory:
    """Guest RAM as regions: boot RAM split around the 32-bit hole, then any region a
    memory-hotplug method adds (add_region)."""

    def __init__(self, size: int, name: str = "plugvm-ram", backing: Backing = Backing()):
        if size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"guest memory size {size} is not a positive multiple of the page size")
        self.size = size
        self.backing = backing
        self.name = name
        self.regions: list[Region] = []
        self._fds: list[int] = []
        self._spans: list[tuple[int, int, memoryview]] = []    # (start, end, view of the whole region)
        try:
            fd = self._new_fd(size, name)
            low = min(size, layout.MEM_32BIT_RESERVED_START)
            self._add(0, low, fd, 0, boot=True)
            if size > low:
                self._add(layout.RAM_64BIT_START, size - low, fd, low, boot=True)
        except (OSError, OverflowError, ValueError) as e:
            self.close()
            raise GuestMemoryAllocationError(f"--memory: cannot allocate size={size} bytes of guest RAM: "
                                             f"{getattr(e, 'strerror', None) or e}") from e
        self.boot_end = self.end

    @property
    def fd(self) -> int:
        """The boot RAM's memfd (-1 when anonymous)."""
        return self.regions[0].fd if self.regions else -1

    def _new_fd(self, size: int, name: str) -> int:
        if not self.backing.uses_file:
            return -1
        flags = os.MFD_CLOEXEC
        if self.backing.hugepages:
            flags |= os.MFD_HUGETLB
            if self.backing.hugepage_size:
                flags |= (self.backing.hugepage_size.bit_length() - 1) << os.MFD_HUGE_SHIFT
        fd = os.memfd_create(name, flags)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)        # not yet ours to close at teardown: a failed hot-add leaks nothing
            raise
        self._fds.append(fd)
        return fd

    def _add(self, guest_addr: int, size: int, fd: int, offset: int, boot: bool) -> Region:
        b = self.backing
        flags = (mmap.MAP_SHARED if b.shared else mmap.MAP_PRIVATE) | (mmap.MAP_POPULATE if b.prefault else 0)
        if fd < 0:
            flags |= MAP_NORESERVE      # as ch: RAM is committed as the guest touches it
        mapping = mmap.mmap(fd, size, flags, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        if fd < 0 and b.thp:
            try:
                mapping.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass            # a host kernel without THP: ch goes on too
        if b.mergeable:
            mapping.madvise(mmap.MADV_MERGEABLE)
        region = Region(guest_addr, size, fd, offset, mapping, boot)
        self.regions.append(region)
        # Copy-on-write: vCPU and I/O threads look regions up without a lock.
        self._spans = self._spans + [(guest_addr, guest_addr + size, memoryview(mapping))]
        return region

    def add_region(self, guest_addr: int, size: int) -> Region:
        """New RAM at [guest_addr, +size), backed as boot RAM is (its own memfd when the
        backing uses files). The caller registers it with KVM. Raises
        GuestMemoryAllocationError when the host refuses, LayoutError when it overlaps."""
        if size <= 0 or size % mmap.PAGESIZE or guest_addr % mmap.PAGESIZE:
            raise layout.LayoutError(f"a RAM region at {guest_addr:#x} of {size:#x} bytes is not page-aligned")
        if any(r.guest_addr < guest_addr + size and guest_addr < r.end for r in self.regions):
            raise layout.LayoutError(f"a RAM region at {guest_addr:#x} of {size:#x} bytes overlaps guest RAM")
        fd = -1
        try:
            fd = self._new_fd(size, f"{self.name}-{len(self.regions)}")
            return self._add(guest_addr, size, fd, 0, boot=False)
        except (OSError, OverflowError, ValueError) as e:
            if fd >= 0:
                self._fds.remove(fd)
                os.close(fd)
            raise GuestMemoryAllocationError(f"cannot allocate {size >> 20} MiB of guest RAM: "
                                             f"{getattr(e, 'strerror', None) or e}") from e

    def remove_region(self, region: Region) -> None:
        """Take back a region add_region() made, which the guest was never told of (a
        hot-add that failed half-way)."""
        self.regions.remove(region)
        kept = [span for span in self._spans if span[0] != region.guest_addr]
        gone = [span for span in self._spans if span[0] == region.guest_addr]
        self._spans = kept
        for _, _, whole in gone:
            whole.release()
        region.mapping.close()
        if region.fd >= 0 and region.fd != self.fd:
            self._fds.remove(region.fd)
            os.close(region.fd)

    def discard(self, addr: int, length: int) -> None:
        """Give [addr, +length) back to the host: the guest reads zeros there next time.
        Shared memory is punched out of its memfd (MADV_REMOVE), private memory dropped
        (MADV_DONTNEED). GuestMemoryError if the range is not inside one region."""
        for region in self.regions:
            if region.guest_addr <= addr and addr + length <= region.end:
                advice = mmap.MADV_REMOVE if self.backing.shared else mmap.MADV_DONTNEED
                region.mapping.madvise(advice, addr - region.guest_addr, length)
                return
        raise GuestMemoryError(addr, length)

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

    @property
    def spans(self) -> list[tuple[int, int, memoryview]]:
        """(start, end, view of the whole region) for every region. The list is replaced,
        never changed, when a region comes or goes: a reader may keep it and compare it
        (`is`) with the current one to see whether anything changed."""
        return self._spans

    def write(self, addr: int, data: bytes) -> None:
        self.view(addr, len(data))[:] = data

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    @property
    def end(self) -> int:
        """The guest-physical end of the highest RAM region."""
        return max(r.end for r in self.regions)

    @property
    def boot_regions(self) -> list[Region]:
        return [r for r in self.regions if r.boot]

    @property
    def low_end(self) -> int:
        """End of the RAM below the 32-bit hole."""
        return self.regions[0].end

    def close(self) -> None:
        for _, _, whole in self._spans:
            whole.release()
        self._spans = []
        for r in self.regions:
            try:
                r.mapping.close()
            except BufferError:
                # A view is still exported (a device holding a buffer): the mapping is
                # unmapped when the last view goes, instead of failing the VM's teardown.
                pass
        self.regions.clear()
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
