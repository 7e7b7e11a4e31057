"""The CPU hotplug controller's register protocol (devices/cpu_hotplug.py), played by a
test as the guest's AML would, and as a hostile guest would."""

from plugvm.devices.cpu_hotplug import EJECT, ENABLED, INSERTING, REMOVING, SELECTOR, STATUS, CpuHotplugController


class Guest:
    def __init__(self, controller):
        self.c = controller

    def select(self, cpu, size=4):
        self.c.write(SELECTOR, memoryview(bytearray(cpu.to_bytes(size, "little"))))

    def status(self, size=1):
        data = memoryview(bytearray(size))
        self.c.read(STATUS, data)
        return int.from_bytes(data, "little")

    def write_status(self, value, size=1):
        self.c.write(STATUS, memoryview(bytearray(value.to_bytes(size, "little"))))


def controller(max_vcpus=4, enabled=2):
    ejected = []
    return CpuHotplugController(max_vcpus, enabled, ejected.append), ejected


def test_boot_cpus_are_enabled_and_the_others_not():
    c, _ = controller()
    g = Guest(c)
    assert [(g.select(i), g.status())[1] for i in range(4)] == [ENABLED, ENABLED, 0, 0]


def test_an_insert_is_scanned_acked_and_then_seen_by_its_sta():
    c, _ = controller()
    g = Guest(c)
    seen = c.insert(2)
    g.select(2)
    assert g.status() == ENABLED | INSERTING           # CSCN finds it
    assert not seen.is_set()
    g.write_status(INSERTING)                          # CSCN's ack after the Notify
    assert g.status() == ENABLED and seen.is_set()     # the next look is _STA's


def test_a_removal_is_acked_by_the_scan_and_stays_pending_until_the_eject():
    c, ejected = controller()
    g = Guest(c)
    gone = c.remove(1)
    g.select(1)
    assert g.status() == ENABLED | REMOVING
    g.write_status(REMOVING)
    assert g.status() == ENABLED and c.removing() == [1]    # a later scan does not ask again
    g.write_status(EJECT)
    assert ejected == [1] and gone.is_set() and c.removing() == [] and g.status() == 0


def test_a_hostile_guest_ejects_nothing_it_was_not_asked_to():
    c, ejected = controller()
    g = Guest(c)
    for cpu in (0, 1, 2, 3, 4, 0xFFFF_FFFF):            # CPU 0, running, absent, past the end
        g.select(cpu)
        g.write_status(EJECT)
    c.remove(0)                                         # even when the VMM asked: never CPU 0
    g.select(0)
    g.write_status(EJECT)
    assert ejected == []
    g.select(1)
    g.write_status(EJECT, size=4)                       # wrong sizes are ignored
    g.select(1, size=2)
    assert ejected == [] and g.status(size=4) == 0
    g.select(9)
    assert g.status() == 0                              # a selector past the CPUs reads nothing
    data = memoryview(bytearray(4))
    c.read(0x8, data)
    assert bytes(data) == bytes(4)


def test_an_eject_twice_stops_the_cpu_once():
    c, ejected = controller()
    g = Guest(c)
    c.remove(1)
    g.select(1)
    g.write_status(EJECT)
    g.write_status(EJECT)
    assert ejected == [1]
    assert c.insert(1) is not None and c.enabled() == [0, 1]    # it can come back
