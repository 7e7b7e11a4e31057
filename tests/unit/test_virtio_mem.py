"""virtio-mem driven in-process: the method attached to a GuestMemory by hand (a 256 MiB
window at 4 GiB), its device on a real split queue (no guest), and the host memory
that unplugging gives back."""

import mmap
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plugvm_virtio_mem import VirtioMem, VirtioMemMethod, plugvm_device_types

from plugvm.config import ConfigError
from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.memory import CLI, MemoryConfig
from plugvm.device_manager import DeviceEnv
from plugvm.memory import Backing, GuestMemory
from plugvm.memory_hotplug import MemoryHotplugEnv, ResizeRefused
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext
from plugvm.virtio.device import DeviceError

MiB, GiB = 1 << 20, 1 << 30
BOOT = 4 * MiB
BASE = 4 * GiB                  # window_start() of boot RAM below the 32-bit hole
REGION = 256 * MiB
BLOCK = 2 * MiB
PLUG, UNPLUG, UNPLUG_ALL, STATE = 0, 1, 2, 3
ACK, NACK, ERROR = 0, 1, 3
PLUGGED, UNPLUGGED, MIXED = 0, 1, 2


def config(**kw):
    return MemoryConfig(size=BOOT, hotplug_method="virtio-mem", hotplug_size=REGION, **kw)


class Vm:
    """One boot's worth: guest memory, the method's hotplug, the device, a driver queue."""

    def __init__(self, backing=Backing(), **kw):
        self.memory = GuestMemory(BOOT, backing=backing)
        self.config = config(**kw)
        method = VirtioMemMethod()
        window = method.reserve(self.memory.boot_end, self.config)
        self.notified = []
        self.hotplug = method.attach(MemoryHotplugEnv(
            memory=self.memory, config=self.config, window=window, registers_addr=None,
            add_region=self.memory.add_region, notify_guest=lambda: self.notified.append(1)))
        (device_type,) = plugvm_device_types()
        self.device = device_type.create(self.config, DeviceEnv(vm_config=None, memory_hotplug=self.hotplug))
        self.context = RecordingContext()
        self.start()

    def start(self):
        self.driver = DriverQueue(self.memory, 0x10000, 128)
        self.device.activate(self.memory, [self.driver.device_queue()], 0, self.context)

    def config_space(self):
        return struct.unpack("<QH6xQQQQQ", self.device.config_bytes())

    def send(self, *requests, writable=(10,)):
        """Each request (type, addr, nb_blocks) or raw bytes; returns [(type, state)]."""
        self.driver.recycle()
        chains = []
        for r in requests:
            body = r if isinstance(r, bytes) else struct.pack("<H6xQH6x", *r)
            chains.append(self.driver.add([body], list(writable)))
        self.device.queue_notify(0)
        used = dict(self.driver.take_used())
        out = []
        for head, bufs in chains:
            assert used[head] == 10
            data = b"".join(self.memory.read(a, n) for a, n in bufs)
            out.append(struct.unpack("<H6xH", data[:10]))
        return out

    def close(self):
        self.device.close()
        self.hotplug.close()
        self.memory.close()


@pytest.fixture
def vm():
    v = Vm()
    yield v
    v.close()


def test_the_window_is_guest_ram_from_boot_but_not_boot_ram(vm):
    (region,) = [r for r in vm.memory.regions if not r.boot]
    assert (region.guest_addr, region.size) == (BASE, REGION)
    vm.memory.write(BASE + REGION - 8, b"12345678")          # mapped, though nothing is plugged
    assert vm.notified == []                                  # no GED: virtio-mem has no ACPI part


def test_device_identity_and_config_space(vm):
    assert (vm.device.device_type, vm.device.queue_sizes, vm.device.device_features()) == (24, (128,), 0)
    raw = vm.device.config_bytes()
    assert len(raw) == 56
    assert raw == struct.pack("<QH6xQQQQQ", BLOCK, 0, BASE, REGION, REGION, 0, 0)
    assert raw[8:16] == bytes(8)                              # node_id 0 and the padding


def test_hotplugged_size_is_what_the_guest_is_asked_for_after_a_reboot():
    v = Vm(hotplugged_size=64 * MiB)
    try:
        assert v.config_space()[-2:] == (0, 64 * MiB)         # plugged 0, requested 64M
        assert v.hotplug.actual_size() == BOOT
    finally:
        v.close()


def test_resize_plug_state_unplug_and_unplug_all(vm):
    resized = vm.hotplug.resize(BOOT + 8 * MiB)
    assert vm.context.config_interrupts == 1
    assert vm.config_space()[-1] == 8 * MiB
    assert not resized.done.is_set()
    assert resized.config == config(hotplugged_size=8 * MiB)
    assert vm.send((PLUG, BASE, 2), (PLUG, BASE + 4 * MiB, 2)) == [(ACK, 0), (ACK, 0)]
    assert resized.done.is_set()
    assert vm.config_space()[-2:] == (8 * MiB, 8 * MiB)
    assert vm.hotplug.actual_size() == BOOT + 8 * MiB
    assert vm.context.interrupts == [0]
    assert vm.send((STATE, BASE, 4), (STATE, BASE, 8), (STATE, BASE + 8 * MiB, 4)) == [
        (ACK, PLUGGED), (ACK, MIXED), (ACK, UNPLUGGED)]

    shrunk = vm.hotplug.resize(BOOT + 4 * MiB)
    assert vm.context.config_interrupts == 2
    assert shrunk.config.hotplugged_size == 4 * MiB
    assert vm.send((UNPLUG, BASE + 2 * MiB, 2)) == [(ACK, 0)]
    assert shrunk.done.is_set()
    assert vm.send((STATE, BASE, 1), (STATE, BASE + 2 * MiB, 2), (STATE, BASE + 6 * MiB, 1)) == [
        (ACK, PLUGGED), (ACK, UNPLUGGED), (ACK, PLUGGED)]
    assert vm.hotplug.actual_size() == BOOT + 4 * MiB

    gone = vm.hotplug.resize(BOOT)
    assert gone.config.hotplugged_size is None                # as ch: no hotplugged memory
    assert vm.send((UNPLUG_ALL, 0, 0)) == [(ACK, 0)]
    assert gone.done.is_set()
    assert vm.config_space()[-2:] == (0, 0)
    assert vm.send((STATE, BASE, REGION // BLOCK)) == [(ACK, UNPLUGGED)]


def test_resized_configs_round_trip_through_validation(vm):
    for desired in (BOOT + REGION, BOOT + 2 * MiB, BOOT):
        c = vm.hotplug.resize(desired).config
        again = MemoryConfig.from_json(JsonObject(c.to_json(), Where("memory", json=True)))
        assert again == c
        VirtioMemMethod().validate(again, CLI)


def test_plugging_beyond_requested_size_is_nacked(vm):
    vm.hotplug.resize(BOOT + 4 * MiB)
    assert vm.send((PLUG, BASE, 3)) == [(NACK, 0)]
    assert vm.send((PLUG, BASE, 2), (PLUG, BASE + 4 * MiB, 1)) == [(ACK, 0), (NACK, 0)]
    assert vm.config_space()[-2] == 4 * MiB


@pytest.mark.parametrize("request_", [
    (PLUG, BASE + 4096, 1),                       # not block-aligned
    (PLUG, BASE - BLOCK, 1),                      # below the region
    (PLUG, BASE + REGION, 1),                     # at its end
    (PLUG, BASE + REGION - BLOCK, 2),             # nb_blocks runs past the end
    (PLUG, BASE, 0),                              # no blocks
    (PLUG, BASE, REGION // BLOCK + 1),            # more blocks than the region has
    (PLUG, (1 << 64) - BLOCK, 0xFFFF),            # wraps a u64: past the end, not around
    (UNPLUG, BASE + 8 * MiB, 1),                  # not plugged
    (UNPLUG, BASE + 4 * MiB, 4),                  # mixed
    (PLUG, BASE + 4 * MiB, 4),                    # mixed
    (STATE, BASE + REGION - BLOCK, 2),            # STATE checks the range too
    (UNPLUG, BASE - BLOCK, 2),
    (7, BASE, 1),                                 # no such request type
    (0xFFFF, 0, 0),
])
def test_bad_requests_get_error_and_change_nothing(vm, request_):
    vm.hotplug.resize(BOOT + 64 * MiB)
    assert vm.send((PLUG, BASE + 4 * MiB, 2)) == [(ACK, 0)]
    before = vm.device.config_bytes()
    assert vm.send(request_) == [(ERROR, 0)]
    assert vm.device.config_bytes() == before
    assert vm.send((STATE, BASE + 4 * MiB, 2), (STATE, BASE + 8 * MiB, 1)) == [(ACK, PLUGGED), (ACK, UNPLUGGED)]


def test_a_short_request_gets_error(vm):
    vm.hotplug.resize(BOOT + 64 * MiB)
    short = struct.pack("<H6xQH6x", PLUG, BASE, 1)[:23]
    assert vm.send(short, b"") == [(ERROR, 0), (ERROR, 0)]
    assert vm.config_space()[-2] == 0


def test_requests_and_responses_may_be_split_across_buffers(vm):
    vm.hotplug.resize(BOOT + 64 * MiB)
    body = struct.pack("<H6xQH6x", PLUG, BASE, 1)
    head, bufs = vm.driver.add([body[:5], body[5:17], body[17:], b"extra"], [3, 3, 4, 100])
    vm.device.queue_notify(0)
    assert vm.driver.take_used() == [(head, 10)]
    assert b"".join(vm.memory.read(a, n) for a, n in bufs)[:10] == struct.pack("<H6xH", ACK, 0)
    assert vm.config_space()[-2] == BLOCK


def test_no_room_for_the_response_is_a_device_error(vm):
    vm.hotplug.resize(BOOT + 64 * MiB)
    ok, _ = vm.driver.add([struct.pack("<H6xQH6x", PLUG, BASE, 1)], [10])
    vm.driver.add([struct.pack("<H6xQH6x", PLUG, BASE + BLOCK, 1)], [9])
    with pytest.raises(DeviceError):
        vm.device.queue_notify(0)
    assert vm.driver.take_used() == [(ok, 10)]                # the chain before it was answered
    assert vm.config_space()[-2] == BLOCK                      # the bad one did nothing


def test_check_resize_refuses_what_virtio_mem_cannot_give(vm):
    for desired in (BOOT - BLOCK, BOOT + REGION + BLOCK, BOOT + MiB):
        with pytest.raises(ResizeRefused, match=rf"^desired_ram={desired} "):
            vm.hotplug.check_resize(desired)
        with pytest.raises(ResizeRefused):
            vm.hotplug.resize(desired)
    assert vm.context.config_interrupts == 0
    assert vm.config_space()[-1] == 0
    vm.hotplug.check_resize(BOOT + REGION)
    vm.hotplug.check_resize(BOOT)


def test_resizing_to_the_current_size_is_done_at_once(vm):
    resized = vm.hotplug.resize(BOOT)
    assert resized.done.is_set()
    assert vm.context.config_interrupts == 0


def test_a_later_resize_releases_an_earlier_waiter_once_reached(vm):
    first = vm.hotplug.resize(BOOT + 8 * MiB)
    second = vm.hotplug.resize(BOOT + 2 * MiB)
    assert vm.send((PLUG, BASE, 1)) == [(ACK, 0)]
    assert first.done.is_set() and second.done.is_set()


def test_reset_keeps_the_blocks_and_stops_config_interrupts(vm):
    vm.hotplug.resize(BOOT + 8 * MiB)
    vm.send((PLUG, BASE, 4))
    vm.device.reset()
    assert vm.config_space()[-2:] == (8 * MiB, 8 * MiB)
    vm.hotplug.resize(BOOT + 16 * MiB)                         # no driver: nothing to interrupt
    assert vm.context.config_interrupts == 1
    vm.start()
    assert vm.send((UNPLUG_ALL, 0, 0), (PLUG, BASE, 8)) == [(ACK, 0), (ACK, 0)]
    assert vm.config_space()[-2:] == (16 * MiB, 16 * MiB)


def test_resize_from_another_thread_while_the_guest_plugs(vm):
    # The API thread resizes while the I/O thread runs requests: the lock keeps
    # plugged_size within every requested_size the guest could have seen.
    def api():
        for n in range(1, 65):
            vm.hotplug.resize(BOOT + n * BLOCK)

    thread = threading.Thread(target=api)
    thread.start()
    for n in range(64):
        vm.send((PLUG, BASE + n * BLOCK, 1))
        plugged, requested = vm.config_space()[-2:]
        assert plugged <= requested
    thread.join()
    vm.send(*[(PLUG, BASE + n * BLOCK, 1) for n in range(64)])
    assert vm.config_space()[-2:] == (64 * BLOCK, 64 * BLOCK)


@pytest.mark.parametrize("where, text, message", [
    (CLI, "hotplug_size=100M", "--memory: hotplug_size=100M is not a multiple of 128M, as virtio-mem needs"),
    (CLI, "hotplug_size=1G,hotplugged_size=3M",
     "--memory: hotplugged_size=3M is not a multiple of virtio-mem's 2M block"),
    (CLI, "size=1G,hotplug_size=1G,hugepages=on,hugepage_size=1G",
     "--memory: hugepage_size=1G is larger than virtio-mem's 2M block"),
    (Where("memory", json=True), "hotplug_size=100M",
     "memory: hotplug_size=104857600 is not a multiple of 134217728, as virtio-mem needs"),
])
def test_validate_names_the_key_and_the_value(where, text, message):
    c = MemoryConfig.parse("hotplug_method=virtio-mem," + text)
    with pytest.raises(ConfigError) as e:
        VirtioMemMethod().validate(c, where)
    assert str(e.value) == message


def test_validate_takes_what_virtio_mem_can_do():
    for text in ("hotplug_size=8G,hotplugged_size=1G", "size=1G", "hotplug_size=128M,hugepages=on"):
        VirtioMemMethod().validate(MemoryConfig.parse("hotplug_method=virtio-mem," + text), CLI)


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("backing", [Backing(thp=False), Backing(shared=True, thp=False)],
                         ids=["private", "shared"])
def test_unplugging_gives_the_memory_back_to_the_host(backing):
    touched = 64 * MiB
    v = Vm(backing=backing)
    try:
        (region,) = [r for r in v.memory.regions if not r.boot]
        # The host's THP may be "always": keep to 4 KiB pages so RSS moves by exactly what is touched.
        region.mapping.madvise(mmap.MADV_NOHUGEPAGE)
        v.hotplug.resize(BOOT + touched)
        assert v.send((PLUG, BASE, touched // BLOCK)) == [(ACK, 0)]
        before = rss()
        view = v.memory.view(BASE, touched)
        view[::mmap.PAGESIZE] = b"\x01" * (touched // mmap.PAGESIZE)     # one write per page
        view.release()
        grown = rss()
        assert grown - before >= 0.8 * touched
        v.hotplug.resize(BOOT)
        assert v.send((UNPLUG, BASE, touched // BLOCK)) == [(ACK, 0)]
        assert grown - rss() >= 0.8 * touched
        assert v.memory.read(BASE, 8) == bytes(8)                 # what the guest reads there now
    finally:
        v.close()


# --- a hostile guest, against a model of the blocks -------------------------------------------

NB = REGION // BLOCK
addresses = st.one_of(st.integers(0, (1 << 64) - 1),
                      st.integers(-4, NB + 4).map(lambda n: BASE + n * BLOCK),
                      st.integers(BASE - BLOCK, BASE + REGION + BLOCK))
requests = st.tuples(st.one_of(st.integers(0, 3), st.integers(0, 0xFFFF)), addresses,
                     st.one_of(st.integers(0, 8), st.integers(0, 0xFFFF)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(requests, st.integers(0, NB).map(lambda n: ("resize", n))), max_size=40))
def test_a_hostile_guest_gets_answers_and_never_reaches_outside_the_region(steps):
    v = Vm()
    discarded = []
    real_discard = v.memory.discard
    v.memory.discard = lambda addr, size: (discarded.append((addr, size)), real_discard(addr, size))
    plugged, requested = set(), 0          # the model: plugged block indices, requested blocks
    try:
        for step in steps:
            if step[0] == "resize":
                requested = step[1]
                v.hotplug.resize(BOOT + requested * BLOCK)
                continue
            kind, addr, nb = step
            ((resp, state),) = v.send((kind, addr, nb))
            first = (addr - BASE) // BLOCK
            valid = nb > 0 and addr >= BASE and (addr - BASE) % BLOCK == 0 and first + nb <= NB
            span = set(range(first, first + nb)) if valid else set()
            if kind == UNPLUG_ALL:
                expected, plugged = (ACK, 0), set()
            elif kind not in (PLUG, UNPLUG, STATE) or not valid:
                expected = (ERROR, 0)
            elif kind == STATE:
                expected = (ACK, PLUGGED if span <= plugged else UNPLUGGED if not span & plugged else MIXED)
            elif kind == PLUG:
                if span & plugged:
                    expected = (ERROR, 0)
                elif len(plugged) + nb > requested:
                    expected = (NACK, 0)
                else:
                    expected, plugged = (ACK, 0), plugged | span
            else:
                expected = (ERROR, 0) if not span <= plugged else (ACK, 0)
                plugged = plugged - span if expected == (ACK, 0) else plugged
            assert (resp, state) == expected, step
            assert v.config_space()[-2:] == (len(plugged) * BLOCK, requested * BLOCK)
        assert all(BASE <= a and a + n <= BASE + REGION for a, n in discarded), discarded
    finally:
        v.close()
