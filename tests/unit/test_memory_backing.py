"""Guest RAM's backing, as cloud-hypervisor's --memory options ask for it, for boot RAM
and hot-added regions alike: read back from what the kernel says of this process's
mappings (/proc/self/smaps: VmFlags, Rss, page sizes), not from our own fields."""

import ctypes
import mmap
import os
import re

import pytest

from plugvm.config import MemoryConfig
from plugvm.memory import Backing, GuestMemory, GuestMemoryAllocationError, GuestMemoryError

MiB, GiB = 1 << 20, 1 << 30
HIGH = 4 * GiB


def mapping_of(memory, region):
    """The smaps entry of a region's mapping: {field: kB}, and its VmFlags."""
    view = memory.view(region.guest_addr, 1)
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))       # the region's first byte in this process
    view.release()
    for entry in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", open("/proc/self/smaps").read()):
        low, high = (int(x, 16) for x in entry.split(" ", 1)[0].split("-"))
        if low <= address < high:
            fields = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", entry, re.M)}
            flags = set(re.search(r"^VmFlags:(.*)$", entry, re.M)[1].split())
            return fields, flags, entry.splitlines()[0]
    raise AssertionError("mapping not found")


def each_region(backing, size=64 * MiB):
    """A GuestMemory with that backing and a hot-added region: both must be backed alike."""
    memory = GuestMemory(size, backing=backing)
    memory.add_region(HIGH, 32 * MiB)
    return memory


def test_the_default_is_private_anonymous_memory_advised_for_thp_as_cloud_hypervisors():
    memory = each_region(Backing.of(MemoryConfig()))
    try:
        assert memory.fd == -1
        for region in memory.regions:
            _, flags, header = mapping_of(memory, region)
            assert "sh" not in flags and "hg" in flags and "mg" not in flags, (flags, header)
            assert "memfd" not in header and "nr" in flags          # MAP_NORESERVE
    finally:
        memory.close()


def test_thp_off_leaves_the_advice_out():
    memory = each_region(Backing(thp=False))
    try:
        for region in memory.regions:
            assert "hg" not in mapping_of(memory, region)[1]
    finally:
        memory.close()


def test_shared_memory_is_a_memfd_mapped_shared_and_its_fds_are_closed():
    memory = each_region(Backing(shared=True))
    fds = [r.fd for r in memory.regions]
    try:
        assert all(fd >= 0 for fd in fds) and fds[0] != fds[1]         # a hot-added region has its own memfd
        for region in memory.regions:
            _, flags, header = mapping_of(memory, region)
            assert "sh" in flags and "memfd:plugvm-ram" in header, (flags, header)
        assert os.readlink(f"/proc/self/fd/{fds[1]}").startswith("/memfd:plugvm-ram-")
    finally:
        memory.close()
    for fd in set(fds):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_mergeable_memory_is_offered_to_ksm():
    memory = each_region(Backing(mergeable=True))
    try:
        for region in memory.regions:
            assert "mg" in mapping_of(memory, region)[1]
    finally:
        memory.close()


def test_prefault_populates_the_whole_mapping_at_once():
    memory = each_region(Backing(prefault=True, thp=False), size=16 * MiB)
    try:
        for region in memory.regions:
            fields, _, _ = mapping_of(memory, region)       # (the kernel may merge it with its neighbours)
            assert fields["Rss"] >= region.size // 1024, fields
    finally:
        memory.close()


@pytest.fixture
def hugepages():
    """Reserve 2 MiB huge pages for the test (CI runs as root), as a host would for ch."""
    path = "/proc/sys/vm/nr_hugepages"
    before = int(open(path).read())
    try:
        with open(path, "w") as f:
            f.write(str(before + 48))
    except OSError as e:
        pytest.fail(f"cannot reserve huge pages ({e}): this test needs root, as CI has")
    yield
    with open(path, "w") as f:
        f.write(str(before))


def test_hugepages_back_guest_ram_with_a_hugetlbfs_memfd(hugepages):
    memory = each_region(Backing(hugepages=True, hugepage_size=2 * MiB, prefault=True), size=32 * MiB)
    try:
        for region in memory.regions:
            fields, flags, header = mapping_of(memory, region)
            assert fields["KernelPageSize"] == 2048 and "ht" in flags, (fields, flags, header)
    finally:
        memory.close()


def test_hugepages_without_enough_reserved_is_a_clear_error():
    with pytest.raises(GuestMemoryAllocationError, match="--memory: cannot allocate"):
        GuestMemory(1 << 40, backing=Backing(hugepages=True, hugepage_size=2 * MiB, prefault=True))


@pytest.mark.parametrize("backing", [Backing(thp=False), Backing(shared=True)], ids=["private", "shared"])
def test_discard_gives_pages_back_to_the_host_and_the_guest_reads_zeros(backing):
    memory = each_region(backing)
    try:
        region = memory.regions[-1]
        memory.view(HIGH, 16 * MiB)[:] = b"\x5a" * (16 * MiB)
        touched = mapping_of(memory, region)[0]["Rss"]
        assert touched >= 16 * 1024
        memory.discard(HIGH, 8 * MiB)
        assert touched - mapping_of(memory, region)[0]["Rss"] >= 8 * 1024      # (its neighbours may share the entry)
        assert memory.read(HIGH, 4) == bytes(4) and memory.read(HIGH + 8 * MiB, 4) == b"\x5a" * 4
        if backing.shared:
            assert os.fstat(region.fd).st_blocks * 512 <= 8 * MiB + mmap.PAGESIZE     # punched out of the memfd
        with pytest.raises(GuestMemoryError):
            memory.discard(HIGH + 24 * MiB, 16 * MiB)        # past the region's end
    finally:
        memory.close()


def test_a_region_that_overlaps_ram_or_is_unaligned_is_refused():
    from plugvm.layout import LayoutError
    memory = GuestMemory(64 * MiB)
    try:
        memory.add_region(HIGH, 32 * MiB)
        for addr, size in ((HIGH + 16 * MiB, 32 * MiB), (32 * MiB, 64 * MiB), (HIGH + 64 * MiB + 1, 4096),
                           (HIGH + 64 * MiB, 100)):
            with pytest.raises(LayoutError):
                memory.add_region(addr, size)
        assert len(memory.regions) == 2 and memory.boot_regions == memory.regions[:1]
    finally:
        memory.close()
