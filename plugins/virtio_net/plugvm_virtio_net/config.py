"""NetConfig: cloud-hypervisor's --net option and `net` JSON (notes §1.4, §2.1)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import U16, Options
from plugvm.device_config import PCI_KEYS, PciFields, pci_from_json, pci_from_options

CLI = Where("--net")
JSON = Where("net", json=True)
NUM_QUEUES = 2           # one RX/TX pair: ch's default, and all plugvm-virtio-net does so far
QUEUE_SIZE = 256
MTU_MIN = 68             # IPv4's minimum (RFC 791); the kernel refuses less on a tap
IFNAMSIZ = 16            # including the NUL
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
# ch fields not implemented, with ch's defaults (accepted at those, since ch-remote sends them all).
UNSUPPORTED_JSON = {"vhost_user": False, "vhost_socket": None, "vhost_mode": "Client", "rate_limiter_config": None}
UNSUPPORTED = ("fd", "vhost_user", "socket", "vhost_mode", "bw_size", "bw_one_time_burst", "bw_refill_time",
               "ops_size", "ops_one_time_burst", "ops_refill_time")
OFFLOADS = ("offload_tso", "offload_ufo", "offload_csum")
KEYS = ("tap", "mac", "host_mac", "ip", "mask", "mtu", "num_queues", "queue_size", *OFFLOADS, *PCI_KEYS, *UNSUPPORTED)


def random_mac() -> str:
    """A random unicast, locally administered MAC (IEEE 802: bit 0 of octet 0 is
    multicast, bit 1 local), as ch's MacAddr::local_random()."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


@dataclass(frozen=True, kw_only=True)
class NetConfig(PciFields):
    """One virtio-net device on a host tap (created as vmtap%d when `tap` is None)."""

    tap: str | None = None
    mac: str
    host_mac: str | None = None
    ip: str | None = None
    mask: str | None = None
    mtu: int | None = None
    num_queues: int = NUM_QUEUES
    queue_size: int = QUEUE_SIZE
    offload_tso: bool = True
    offload_ufo: bool = True
    offload_csum: bool = True
    # Tap fds the VMM owns, sent by the client with vm.add-net over SCM_RIGHTS (the API puts
    # them here); the device uses a dup of the first, the VM config keeps these until the
    # device leaves it.
    fds: tuple[int, ...] | None = None

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    def to_json(self) -> dict:
        body = {"tap": self.tap, "mac": self.mac, "num_queues": self.num_queues, "queue_size": self.queue_size,
                "offload_tso": self.offload_tso, "offload_ufo": self.offload_ufo,
                "offload_csum": self.offload_csum, "vhost_user": False, **self.pci_json()}
        for key in ("host_mac", "ip", "mask", "mtu"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.fds is not None:
            body["fds"] = list(self.fds)
        return body


def parse(text: str) -> NetConfig:
    o = Options(text, CLI, keys=KEYS)
    for key in UNSUPPORTED:
        if o.given(key) and not (key == "vhost_user" and not o.toggle(key, False)):
            raise CLI.error(f"{key} is not supported by plugvm-virtio-net"
                            + (" (vhost-user networking)" if key in ("vhost_user", "socket", "vhost_mode") else ""))
    config = NetConfig(tap=o.text("tap"), mac=o.text("mac") or random_mac(), host_mac=o.text("host_mac"),
                       ip=o.text("ip"), mask=o.text("mask"),
                       mtu=o.integer("mtu", None, U16) if o.given("mtu") and o.raw["mtu"] else None,
                       num_queues=o.integer("num_queues", NUM_QUEUES, U16),
                       queue_size=o.integer("queue_size", QUEUE_SIZE, U16),
                       **{key: o.toggle(key, True) for key in OFFLOADS}, **pci_from_options(o))
    return _checked(config, CLI)


def from_json(body: object) -> NetConfig:
    j = JsonObject(body, JSON)
    for key, default in UNSUPPORTED_JSON.items():
        j.unsupported(key, default, "plugvm-virtio-net")
    config = NetConfig(tap=j.string("tap", None) or None, mac=j.string("mac", None) or random_mac(),
                       host_mac=j.string("host_mac", None), ip=j.string("ip", None), mask=j.string("mask", None),
                       mtu=j.integer("mtu", None, U16), num_queues=j.integer("num_queues", NUM_QUEUES, U16),
                       queue_size=j.integer("queue_size", QUEUE_SIZE, U16),
                       **{key: j.boolean(key, True) for key in OFFLOADS}, fds=_fds(j), **pci_from_json(j))
    j.close()
    return _checked(config, JSON)


def _fds(j: JsonObject) -> tuple[int, ...] | None:
    fds = j.array("fds", None)
    if fds is None:
        return None
    if not fds or not all(isinstance(fd, int) and not isinstance(fd, bool) and fd >= 0 for fd in fds):
        raise j.where.bad("fds", fds, "is not a list of file descriptors")
    return tuple(fds)


def _checked(config: NetConfig, where: Where) -> NetConfig:
    if config.fds is not None and config.tap is not None:
        raise where.error(f"tap={config.tap!r} and fds are exclusive: the fds are the tap")
    if config.fds is not None and len(config.fds) != 1:
        raise where.bad("fds", list(config.fds), "is not one tap fd (one RX/TX queue pair: multiqueue is not "
                                                 "supported yet)")
    if config.tap is not None and (len(config.tap.encode()) >= IFNAMSIZ or "/" in config.tap or config.tap.isspace()):
        raise where.bad("tap", config.tap, f"is not an interface name (at most {IFNAMSIZ - 1} bytes, no '/')")
    for key in ("mac", "host_mac"):
        value = getattr(config, key)
        if value is not None and not _MAC.fullmatch(value):
            raise where.bad(key, value, "is not a MAC address (six hex octets: 12:34:56:78:9a:bc)")
    for key in ("ip", "mask"):
        value = getattr(config, key)
        if value is not None:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise where.bad(key, value, "is not an IPv4 address (IPv6 is not supported yet)") from None
    if config.mask is not None:
        bits = int(ipaddress.IPv4Address(config.mask))
        if bits and (bits | (bits - 1)) != 0xFFFF_FFFF:       # ones, then zeros
            raise where.bad("mask", config.mask, "is not a netmask (contiguous ones, e.g. 255.255.255.0)")
        if config.ip is None:
            raise where.error("mask needs ip (the host address of the tap)")
    if config.mtu is not None and config.mtu < MTU_MIN:
        raise where.bad("mtu", config.mtu, f"is too small (at least {MTU_MIN})")
    if config.num_queues != NUM_QUEUES:
        raise where.bad("num_queues", config.num_queues,
                        f"is not supported: multiqueue is not supported yet (num_queues must be {NUM_QUEUES}, "
                        "one RX/TX pair)")
    size = config.queue_size
    if not 2 <= size <= 32768 or size & (size - 1):
        raise where.bad("queue_size", size, "must be a power of two from 2 to 32768")
    return config
