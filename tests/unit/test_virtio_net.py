"""plugvm-virtio-net: its config (CLI and JSON), and a real tap driven through split queues
laid out by hand in guest memory, with the host side seen through an AF_PACKET socket."""

from __future__ import annotations

import os
import select
import socket
import struct
from pathlib import Path

import pytest

from plugvm.config.errors import ConfigError
from plugvm.memory import GuestMemory
from plugvm.plugins import Registry
from plugvm.virtio.device import VIRTIO_F_VERSION_1
from plugvm.virtio.queue import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, SplitQueue

import plugvm_virtio_net
from plugvm_virtio_net import TapError, VirtioNet, from_json, parse
from plugvm_virtio_net.device import (F_CSUM, F_GUEST_TSO4, F_GUEST_UFO, F_HOST_TSO4, F_MAC, F_MTU, F_STATUS,
                                      offered_features, tun_offloads, write_at)
from plugvm_virtio_net.tap import TUN_F_CSUM, TUN_F_TSO4

DESC = struct.Struct("<QIHH")
HDR = 12
ETH_P_ALL = 0x0003
ETHERTYPE = 0x88B5          # IEEE 802 "local experimental": nothing on the host answers it
GUEST_MAC = "52:54:00:12:34:56"


# --- config -------------------------------------------------------------------------------

def test_cli_defaults():
    c = parse("tap=mytap0")
    assert (c.tap, c.num_queues, c.queue_size, c.ip, c.mask, c.mtu, c.host_mac) == ("mytap0", 2, 256, None, None,
                                                                                   None, None)
    assert c.offload_tso and c.offload_ufo and c.offload_csum
    octet0 = int(c.mac[:2], 16)
    assert octet0 & 0x02 and not octet0 & 0x01          # locally administered unicast
    assert parse("").tap is None and parse("tap=").tap is None
    assert parse("").mac != parse("").mac


def test_cli_all_keys():
    c = parse(f"tap=t0,mac={GUEST_MAC},host_mac=12:34:56:78:9a:bc,ip=10.0.0.1,mask=255.255.255.128,mtu=9000,"
              "num_queues=2,queue_size=1024,offload_tso=off,offload_ufo=off,offload_csum=on,id=n0,iommu=off,"
              "pci_segment=0,pci_device_id=7,vhost_user=off")
    assert (c.mac, c.host_mac, c.ip, c.mask, c.mtu, c.queue_size) == (GUEST_MAC, "12:34:56:78:9a:bc", "10.0.0.1",
                                                                      "255.255.255.128", 9000, 1024)
    assert (c.offload_tso, c.offload_ufo, c.offload_csum, c.id, c.pci_device_id) == (False, False, True, "n0", 7)
    assert c.mac_bytes == bytes.fromhex("525400123456")


def test_json_round_trip_and_ch_remote_fields():
    c = parse(f"tap=t0,mac={GUEST_MAC},ip=10.0.0.1,mask=255.255.255.0,mtu=1400,id=n0")
    assert from_json(c.to_json()) == c
    # ch-remote sends every field of ch's NetConfig, at ch's defaults where unused.
    body = {"tap": None, "ip": "192.168.249.1", "mask": "255.255.255.0", "mac": GUEST_MAC, "host_mac": None,
            "mtu": None, "iommu": False, "num_queues": 2, "queue_size": 256, "vhost_user": False,
            "vhost_socket": None, "vhost_mode": "Client", "id": "test0", "fds": None, "rate_limiter_config": None,
            "pci_segment": 0, "offload_tso": True, "offload_ufo": True, "offload_csum": True}
    j = from_json(body)
    assert (j.tap, j.id, j.mac, j.ip) == (None, "test0", GUEST_MAC, "192.168.249.1")
    assert from_json({}).num_queues == 2


@pytest.mark.parametrize("text, message", [
    ("tap=t0,colour=red", "unknown key 'colour'"),
    ("mac=12:34:56", "mac='12:34:56' is not a MAC address"),
    ("host_mac=zz:34:56:78:9a:bc", "host_mac='zz:34:56:78:9a:bc' is not a MAC address"),
    ("ip=10.0.0.300", "ip='10.0.0.300' is not an IPv4 address"),
    ("ip=fe80::1", "is not an IPv4 address"),
    ("ip=10.0.0.1,mask=255.0.255.0", "is not a netmask"),
    ("mask=255.255.255.0", "mask needs ip"),
    ("num_queues=4", "multiqueue is not supported yet"),
    ("num_queues=1", "multiqueue is not supported yet"),
    ("queue_size=100", "power of two"),
    ("mtu=20", "too small"),
    ("tap=a_name_far_too_long", "is not an interface name"),
    ("vhost_user=on,socket=/tmp/s", "vhost_user is not supported"),
    ("fd=[3,4]", "fd is not supported"),
    ("iommu=on", "iommu=on is not supported"),
    ("offload_tso=maybe", "offload_tso='maybe' is not on/off"),
])
def test_cli_refuses(text, message):
    with pytest.raises(ConfigError, match="^--net: .*" + message.replace("[", r"\[").replace("(", r"\(")):
        parse(text)


@pytest.mark.parametrize("body, message", [
    ({"mac": "nope"}, "is not a MAC address"),
    ({"ip": 5}, "is not a string"),
    ({"num_queues": 4}, "multiqueue is not supported yet"),
    ({"vhost_user": True}, "vhost_user=true is not supported"),
    ({"fds": [3, 4]}, "fds=[3, 4] is not one tap fd"),
    ({"fds": [-1]}, "is not a list of file descriptors"),
    ({"fds": [True]}, "is not a list of file descriptors"),
    ({"tap": "t0", "fds": [3]}, "tap='t0' and fds are exclusive"),
    ({"mtu": "1500"}, "is not an integer"),
])
def test_json_refuses(body, message):
    with pytest.raises(ConfigError, match="^net: .*" + message.replace("[", r"\[")):
        from_json(body)


def test_device_type_registers():
    registry = Registry()
    registry.register(plugvm_virtio_net, "plugvm-virtio-net", "0.1.0")
    t = registry.by_option("--net")
    assert (t.name, t.kind, t.config_key, t.api_verb, t.id_prefix, t.order, t.multiple) == (
        "net", "virtio", "net", "vm.add-net", "_net", 20, True)
    assert registry.by_verb("vm.add-net") is t and registry.by_key("net") is t


def test_features_follow_offloads():
    base = F_MAC | F_STATUS
    assert offered_features(parse("offload_csum=off")) == base          # TSO/UFO need checksum offload
    assert offered_features(parse("mtu=1400,offload_csum=off")) == base | F_MTU
    full = offered_features(parse(""))
    assert full & F_CSUM and full & F_HOST_TSO4 and full & F_GUEST_UFO
    assert not offered_features(parse("offload_tso=off")) & F_GUEST_TSO4
    assert tun_offloads(full) & TUN_F_TSO4 and tun_offloads(F_CSUM) == 0
    assert tun_offloads(1 << 1) == TUN_F_CSUM


def test_write_at_straddles_views():
    a, b = bytearray(11), bytearray(4)
    write_at([memoryview(a), memoryview(b)], 10, b"\x01\x02")
    assert a[10] == 1 and b[0] == 2


# --- a real tap, driven through hand-made split queues ------------------------------------

needs_tun = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
                               reason="creating a tap needs root (CAP_NET_ADMIN) and /dev/net/tun")


class Driver:
    """The driver side of one split queue (virtio 1.2 §2.7) at `base` in guest memory:
    descriptor table, avail ring at +0x1000, used ring at +0x2000."""

    def __init__(self, memory: GuestMemory, base: int, heap: int, size: int = 16):
        self.memory, self.base, self.size = memory, base, size
        self.desc, self.avail, self.used = base, base + 0x1000, base + 0x2000
        self.heap, self.free, self.avail_idx, self.used_seen = heap, 0, 0, 0

    def queue(self) -> SplitQueue:
        return SplitQueue(self.memory, self.size, self.desc, self.avail, self.used)

    def add(self, bufs: list[tuple[bytes | int, bool]]) -> int:
        """Make a chain of buffers (data or a length, writable?) available; returns its head."""
        slots = [(self.free + i) % self.size for i in range(len(bufs))]
        self.free += len(bufs)
        for i, (data, writable) in enumerate(bufs):
            data = bytes(data) if isinstance(data, int) else data
            addr, self.heap = self.heap, self.heap + (len(data) + 0xFFF) // 0x1000 * 0x1000
            self.memory.write(addr, data)
            more = i + 1 < len(bufs)
            flags = (VIRTQ_DESC_F_WRITE if writable else 0) | (VIRTQ_DESC_F_NEXT if more else 0)
            self.memory.write(self.desc + 16 * slots[i], DESC.pack(addr, len(data), flags, slots[i + 1] if more else 0))
        self.memory.write(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", slots[0]))
        self.avail_idx += 1
        self.memory.write(self.avail + 2, struct.pack("<H", self.avail_idx & 0xFFFF))
        return slots[0]

    def used_elements(self) -> list[tuple[int, int]]:
        """The (id, len) pairs the device added since the last call."""
        idx = struct.unpack("<H", self.memory.read(self.used + 2, 2))[0]
        out = []
        while self.used_seen != idx:
            slot = self.used + 4 + 8 * (self.used_seen % self.size)
            out.append(struct.unpack("<II", self.memory.read(slot, 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return out

    def buffer_of(self, head: int) -> bytes:
        """The bytes of every buffer of the chain at head, joined."""
        out, index = b"", head
        while True:
            addr, length, flags, nxt = DESC.unpack(self.memory.read(self.desc + 16 * index, 16))
            out += self.memory.read(addr, length)
            if not flags & VIRTQ_DESC_F_NEXT:
                return out
            index = nxt


class FakeContext:
    """A DeviceContext that records what the device asked for."""

    def __init__(self):
        self.interrupts: list[int] = []
        self.watched: dict = {}

    def interrupt_queue(self, index: int) -> None:
        self.interrupts.append(index)

    def interrupt_config(self) -> None:
        raise AssertionError("virtio-net never changes its config space here")

    def watch(self, fd, callback) -> None:
        self.watched[fd] = callback

    def unwatch(self, fd) -> None:
        del self.watched[fd]


@pytest.fixture
def net():
    """An active VirtioNet on a fresh vmtapN (192.168.249.1/24) with RX and TX queues of 16."""
    memory = GuestMemory(4 << 20)
    device = VirtioNet(parse(f"mac={GUEST_MAC},ip=192.168.249.1,mask=255.255.255.0,queue_size=16"))
    # The host's own IPv6 chatter on a new link (router solicitations, MLD) would land in RX
    # buffers the tests count.
    ipv6 = Path(f"/proc/sys/net/ipv6/conf/{device.tap_name}/disable_ipv6")
    if ipv6.exists():
        ipv6.write_text("1")
    rx, tx = Driver(memory, 0x0, 0x10000), Driver(memory, 0x4000, 0x100000)
    queues = [rx.queue(), tx.queue()]
    context = FakeContext()
    device.activate(memory, queues, device.device_features() | VIRTIO_F_VERSION_1, context)
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniffer.bind((device.tap_name, 0))
    sniffer.settimeout(5)
    yield device, rx, tx, context, sniffer
    sniffer.close()
    device.reset()
    for q in queues:
        q.close()
    device.close()
    memory.close()


def frame(payload: bytes, dst: bytes = b"\xff" * 6, src: str = GUEST_MAC) -> bytes:
    return dst + bytes.fromhex(src.replace(":", "")) + struct.pack(">H", ETHERTYPE) + payload


@needs_tun
def test_tap_is_configured(net):
    device, *_ = net
    assert device.tap_name.startswith("vmtap")
    with open(f"/sys/class/net/{device.tap_name}/flags") as f:
        assert int(f.read(), 16) & 1                      # IFF_UP
    with open(f"/sys/class/net/{device.tap_name}/tun_flags") as f:
        assert int(f.read(), 16) & 0x4000                 # IFF_VNET_HDR
    assert device.config_bytes() == bytes.fromhex("525400123456") + struct.pack("<HHH", 1, 1, 0)
    device.tap.set_offload(tun_offloads(device.device_features()))     # every offload we offer, or TapError
    device.tap.set_offload(0)


@needs_tun
def test_tx_reaches_the_host(net):
    device, _, tx, context, sniffer = net
    sent = frame(b"hello from the guest".ljust(46, b"\0"))
    head = tx.add([(bytes(HDR), False), (sent, False)])     # header and frame in separate buffers
    device.queue_notify(1)
    assert tx.used_elements() == [(head, 0)]
    assert context.interrupts == [1]
    while (got := sniffer.recv(65536)) != sent:           # skip the host's own IPv6 chatter
        pass
    assert device.counters["tx_frames"] == 1 and device.counters["tx_bytes"] == len(sent)


@needs_tun
def test_rx_reaches_the_guest(net):
    device, rx, _, context, sniffer = net
    heads = [rx.add([(HDR, True), (2048, True)]) for _ in range(4)]
    device.queue_notify(0)
    sent = frame(b"hello from the host".ljust(46, b"\0"), dst=bytes.fromhex("525400123456"), src="02:00:00:00:00:01")
    sniffer.send(sent)
    fd = device.tap.fd
    callback = context.watched[fd]
    found = None
    while found is None:
        assert select.select([fd], [], [], 5)[0], "the frame never reached the tap"
        callback()
        for head, length in rx.used_elements():
            data = rx.buffer_of(head)[:length]
            if data[HDR:] == sent:
                found = (head, data)
    head, data = found
    assert head in heads
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers = struct.unpack("<BBHHHHH", data[:HDR])
    assert (flags, gso_type, num_buffers) == (0, 0, 1)      # a plain frame, in one buffer
    assert 0 in context.interrupts


@needs_tun
def test_rx_stops_watching_without_buffers(net):
    device, rx, _, context, sniffer = net
    fd = device.tap.fd
    assert fd in context.watched                          # watched from activate on
    sniffer.send(frame(b"x" * 46, dst=bytes.fromhex("525400123456")))
    assert select.select([fd], [], [], 5)[0]
    context.watched[fd]()                                 # readable, but the RX queue is empty
    assert fd not in context.watched                      # so a busy tap does not spin the I/O thread
    rx.add([(HDR + 2048, True)])
    rx.add([(HDR + 2048, True)])
    device.queue_notify(0)                                # the guest added buffers and kicked
    used = rx.used_elements()
    assert HDR + 60 in [length for _, length in used]     # the waiting frame landed
    if len(used) == 1:                                    # (the host may have sent a frame of its own)
        assert fd in context.watched                      # and the second buffer waits for the next one


@needs_tun
def test_short_rx_buffer_is_returned_empty(net):
    device, rx, _, context, sniffer = net
    head = rx.add([(4, True)])                            # less than the 12-byte header
    device.queue_notify(0)
    assert rx.used_elements() == [(head, 0)]


@needs_tun
def test_bad_tap_name_is_a_typed_error_and_leaks_nothing():
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(TapError, match=r"^--net: cannot open tap 'lo': ") as info:
        VirtioNet(parse("tap=lo"))
    assert info.value.errno is not None
    assert set(os.listdir("/proc/self/fd")) == before
