"""The vhost-user wire format against the layouts in QEMU docs/interop/vhost-user.rst
("Message Specification"), byte for byte, and the decoding errors. Native order is
little-endian on the x86-64 hosts plugvm runs on."""

import struct

import pytest

from plugvm.vhost_user import protocol as p
from plugvm.vhost_user.errors import MessageError


def test_request_codes_and_flags_are_the_spec_ids():
    assert (p.Request.GET_FEATURES, p.Request.SET_FEATURES, p.Request.SET_OWNER, p.Request.RESET_OWNER,
            p.Request.SET_MEM_TABLE) == (1, 2, 3, 4, 5)
    assert (p.Request.SET_VRING_NUM, p.Request.SET_VRING_ADDR, p.Request.SET_VRING_BASE,
            p.Request.GET_VRING_BASE, p.Request.SET_VRING_KICK, p.Request.SET_VRING_CALL,
            p.Request.SET_VRING_ERR) == (8, 9, 10, 11, 12, 13, 14)
    assert (p.Request.GET_PROTOCOL_FEATURES, p.Request.SET_PROTOCOL_FEATURES, p.Request.GET_QUEUE_NUM,
            p.Request.SET_VRING_ENABLE) == (15, 16, 17, 18)
    assert (p.Request.GET_CONFIG, p.Request.SET_CONFIG) == (24, 25)
    assert (p.Request.GET_MAX_MEM_SLOTS, p.Request.ADD_MEM_REG, p.Request.REM_MEM_REG) == (36, 37, 38)
    assert (p.VERSION, p.FLAG_REPLY, p.FLAG_NEED_REPLY) == (0x1, 0x4, 0x8)
    assert p.F_PROTOCOL_FEATURES == 1 << 30
    assert (p.ProtocolFeature.MQ, p.ProtocolFeature.REPLY_ACK, p.ProtocolFeature.CONFIGURE_MEM_SLOTS) == (0, 3, 15)
    assert p.protocol_feature_names(0b1001 | 1 << 15 | 1 << 40) == ["MQ", "REPLY_ACK", "CONFIGURE_MEM_SLOTS", "40"]


def test_header_is_request_flags_size_in_12_bytes():
    # | request u32 | flags u32 | size u32 |
    assert p.pack_header(p.Request.SET_VRING_NUM, p.VERSION | p.FLAG_NEED_REPLY, 8) == \
        bytes.fromhex("08000000" "09000000" "08000000")
    h = p.unpack_header(bytes.fromhex("0f000000" "05000000" "08000000"))
    assert (h.request, h.flags, h.size, h.version) == (15, 5, 8, 1)


def test_u64_and_vring_state():
    assert p.pack_u64(0x0123456789ABCDEF) == bytes.fromhex("efcdab8967452301")
    assert p.unpack_u64(bytes.fromhex("efcdab8967452301")) == 0x0123456789ABCDEF
    # | index u32 | num u32 |
    assert p.pack_vring_state(1, 256) == bytes.fromhex("01000000" "00010000")
    assert p.unpack_vring_state(bytes.fromhex("02000000" "07000000")) == (2, 7)


def test_vring_address_is_index_flags_desc_used_avail_log():
    # struct vhost_vring_addr: index u32, flags u32, desc/used/avail user u64, log guest u64 = 40 bytes
    a = p.VringAddress(index=1, desc_user=0x1000, used_user=0x3000, avail_user=0x2000, log_guest=0x4000, flags=1)
    data = p.pack_vring_address(a)
    assert data == (bytes.fromhex("01000000" "01000000") + struct.pack("<QQQQ", 0x1000, 0x3000, 0x2000, 0x4000))
    assert len(data) == 40
    assert p.unpack_vring_address(data) == a


def test_memory_table_is_nregions_padding_and_eight_regions():
    regions = [p.MemoryRegion(0, 0xC000_0000, 0x7F00_0000_0000, 0),
               p.MemoryRegion(0x1_0000_0000, 0x4000_0000, 0x7F10_0000_0000, 0xC000_0000)]
    data = p.pack_memory_table(regions)
    expected = (struct.pack("<II", 2, 0)
                + struct.pack("<QQQQ", 0, 0xC000_0000, 0x7F00_0000_0000, 0)
                + struct.pack("<QQQQ", 0x1_0000_0000, 0x4000_0000, 0x7F10_0000_0000, 0xC000_0000)
                + bytes(32 * 6))
    assert data == expected and len(data) == 8 + 8 * 32
    assert p.unpack_memory_table(data) == regions


def test_single_region_has_eight_bytes_of_padding_first():
    r = p.MemoryRegion(0x1_0000_0000, 0x800_0000, 0x7F20_0000_0000, 0)
    data = p.pack_single_region(r)
    assert data == bytes(8) + struct.pack("<QQQQ", 0x1_0000_0000, 0x800_0000, 0x7F20_0000_0000, 0)
    assert p.unpack_single_region(data) == r


def test_vring_fd_payload_has_the_index_and_the_nofd_bit():
    assert p.pack_vring_fd(3, has_fd=True) == struct.pack("<Q", 3)
    assert p.pack_vring_fd(3, has_fd=False) == struct.pack("<Q", 0x103)
    assert p.unpack_vring_fd(struct.pack("<Q", 0x1FF)) == (255, False)
    assert p.unpack_vring_fd(struct.pack("<Q", 0x02)) == (2, True)


def test_config_is_offset_size_flags_then_the_bytes():
    assert p.pack_config(4, 2, 1, b"\xAA\xBB") == struct.pack("<III", 4, 2, 1) + b"\xAA\xBB"
    assert p.pack_config(0, 3) == struct.pack("<III", 0, 3, 0) + bytes(3)
    assert p.unpack_config(struct.pack("<III", 8, 2, 0) + b"hi") == (8, 0, b"hi")


@pytest.mark.parametrize("call", [
    lambda: p.unpack_header(b"\x00" * 11),
    lambda: p.unpack_u64(b"\x00" * 7),
    lambda: p.unpack_u64(b"\x00" * 9),
    lambda: p.unpack_vring_state(b"\x00" * 4),
    lambda: p.unpack_vring_address(b"\x00" * 32),
    lambda: p.unpack_memory_table(b"\x00" * 4),
    lambda: p.unpack_memory_table(struct.pack("<II", 9, 0) + bytes(256)),
    lambda: p.unpack_memory_table(struct.pack("<II", 1, 0) + bytes(32)),
    lambda: p.unpack_single_region(bytes(32)),
    lambda: p.unpack_vring_fd(struct.pack("<Q", 0x200)),
    lambda: p.unpack_config(b"\x00" * 8),
    lambda: p.unpack_config(struct.pack("<III", 0, 4, 0) + b"ab"),
])
def test_malformed_payloads_raise_message_error(call):
    with pytest.raises(MessageError):
        call()


@pytest.mark.parametrize("call", [
    lambda: p.pack_memory_table([]),
    lambda: p.pack_memory_table([p.MemoryRegion(0, 4096, 0, 0)] * 9),
    lambda: p.pack_vring_fd(256, True),
    lambda: p.pack_vring_fd(-1, True),
    lambda: p.pack_u64(-1),
    lambda: p.pack_u64(1 << 64),
    lambda: p.pack_vring_state(1 << 32, 0),
    lambda: p.pack_config(0, 257),
    lambda: p.pack_config(0, 2, 0, b"abc"),
])
def test_values_that_do_not_fit_raise_message_error(call):
    with pytest.raises(MessageError, match="vhost-user"):
        call()


def test_message_error_is_a_value_error():
    assert issubclass(MessageError, ValueError)
