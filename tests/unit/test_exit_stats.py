"""PLUGVM_EXIT_STATS: the counting bus counts and times accesses per device range, and
dispatches them as the bus does."""

from structlog.testing import capture_logs

from plugvm.bus import Bus
from plugvm.exit_stats import CountingBus


class Register:
    def __init__(self):
        self.written = []

    def read(self, offset, data):
        data[:] = bytes([offset]) * len(data)

    def write(self, offset, data):
        self.written.append((offset, bytes(data)))


def test_accesses_are_dispatched_counted_by_device_and_reported():
    bus = Bus("pio")
    uart = Register()
    bus.insert(0x3F8, 8, uart)
    counting = CountingBus(bus)
    for _ in range(3):
        assert counting.write(0x3F8, memoryview(bytearray(b"A")))
    data = memoryview(bytearray(1))
    assert counting.read(0x3FD, data) and data.tobytes() == b"\x05"
    assert not counting.read(0x80, memoryview(bytearray(1)))
    assert uart.written == [(0, b"A")] * 3
    assert {key: n for key, (n, _) in counting.counts.items()} == {
        ("Register@0x3f8", "w"): 3, ("Register@0x3f8", "r"): 1, ("nothing at 0x80", "r"): 1}
    with capture_logs() as logs:
        counting.report("pio")
    assert logs[0]["exits"] == 5 and {e.get("device") for e in logs[1:]} == {"Register@0x3f8", "nothing at 0x80"}
