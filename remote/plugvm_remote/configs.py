"""Device option strings → the JSON bodies ch-remote sends (vmm/src/config.rs ``*Config::parse``).

ch-remote serialises the whole parsed struct, so every field is present with
its default; fields follow the OpenAPI schemas (DiskConfig, NetConfig, ...).
Each builder returns ``(body, fds)``; fds go out of band as SCM_RIGHTS.
"""

from __future__ import annotations

import ipaddress
import re

from plugvm_remote.errors import ConfigSyntaxError
from plugvm_remote.options import (
    OptionParser,
    parse_byte_sized,
    parse_integer_list,
    parse_queue_affinity,
    parse_toggle,
    unsigned,
)

PCI_KEYS = ("id", "pci_segment", "pci_device_id")
PCI_IOMMU_KEYS = ("id", "iommu", "pci_segment", "pci_device_id")
RATE_LIMIT_KEYS = ("bw_size", "bw_one_time_burst", "bw_refill_time",
                   "ops_size", "ops_one_time_burst", "ops_refill_time")
# vhost_user::VIRTIO_FS_TAG_LEN
VIRTIO_FS_TAG_LEN = 36
IMAGE_TYPES = {"vmdk": "FlatVmdk", "vhd": "FixedVhd", "qcow2": "Qcow2", "raw": "Raw", "vhdx": "Vhdx"}
LOCK_GRANULARITIES = {"byte-range": "ByteRange", "full": "Full"}
_MAC = re.compile(r"^[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}$")


class ParseError(ConfigSyntaxError):
    """vmm::config::Error: ``Error parsing --disk`` and friends."""


def _parsed(text: str, keys, flag: str) -> OptionParser:
    parser = OptionParser(keys)
    try:
        return parser.parse(text)
    except ConfigSyntaxError as e:
        raise ParseError(f"Error parsing --{flag}") from e


def _convert(parser: OptionParser, flag: str, key: str, converter):
    try:
        return parser.convert(key, converter)
    except ConfigSyntaxError as e:
        raise ParseError(f"Error parsing --{flag}") from e


def _toggle(parser: OptionParser, flag: str, key: str, default: bool) -> bool:
    value = _convert(parser, flag, key, parse_toggle)
    return default if value is None else value


def _or(value, default):
    """The parsed value, or the default when the key was absent (0 stays 0)."""
    return default if value is None else value


def _pci_common(text: str, with_iommu: bool = True) -> dict:
    """PciDeviceCommonConfig::parse, a second pass over the same string."""
    parser = OptionParser(PCI_IOMMU_KEYS).parse(text, ignore_unknown=True)
    try:
        common = {"id": parser.get("id")}
        if with_iommu:
            common["iommu"] = parser.toggle("iommu", False)
        common["pci_segment"] = _or(parser.convert("pci_segment", unsigned(16)), 0)
        common["pci_device_id"] = parser.convert("pci_device_id", unsigned(8))
    except ConfigSyntaxError as e:
        raise ParseError("Error parsing common PCI device config") from e
    return common


def _rate_limiter(parser: OptionParser, flag: str) -> dict | None:
    v = {k: _convert(parser, flag, k, unsigned(64)) or 0 for k in RATE_LIMIT_KEYS}

    def bucket(prefix: str) -> dict | None:
        if v[f"{prefix}_size"] and v[f"{prefix}_refill_time"]:
            return {"size": v[f"{prefix}_size"], "one_time_burst": v[f"{prefix}_one_time_burst"],
                    "refill_time": v[f"{prefix}_refill_time"]}
        return None

    bandwidth, ops = bucket("bw"), bucket("ops")
    if bandwidth is None and ops is None:
        return None
    return {"bandwidth": bandwidth, "ops": ops}


def _choice(table: dict[str, str], lower: bool):
    def parse(value: str) -> str:
        key = value.lower() if lower else value
        if key not in table:
            raise ValueError(value)
        return table[key]
    return parse


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _mac(value: str) -> str:
    if not _MAC.match(value):
        raise ValueError(value)
    return ":".join(f"{int(part, 16):02x}" for part in value.split(":"))


def disk_body(text: str) -> tuple[dict, list[int]]:
    """add-disk: DiskConfig."""
    keys = ("path", "readonly", "direct", "queue_size", "num_queues", "vhost_user", "socket",
            *RATE_LIMIT_KEYS, "_disable_io_uring", "_disable_aio", "serial", "rate_limit_group",
            "queue_affinity", "backing_files", "sparse", "image_type", "lock_granularity",
            *PCI_IOMMU_KEYS)
    p = _parsed(text, keys, "disk")
    f = "disk"
    vhost_socket = p.get("socket")
    image_type = _convert(p, f, "image_type", _choice(IMAGE_TYPES, lower=True))
    body = {
        "path": p.get("path"),
        "readonly": _toggle(p, f, "readonly", False),
        "direct": _toggle(p, f, "direct", False),
        "num_queues": _or(_convert(p, f, "num_queues", unsigned(64)), 1),
        "queue_size": _or(_convert(p, f, "queue_size", unsigned(16)), 128),
        "vhost_user": _toggle(p, f, "vhost_user", False),
        "vhost_socket": vhost_socket,
        "rate_limit_group": p.get("rate_limit_group"),
        "rate_limiter_config": _rate_limiter(p, f),
        "serial": p.get("serial"),
        "queue_affinity": _convert(p, f, "queue_affinity", parse_queue_affinity),
        "backing_files": _toggle(p, f, "backing_files", False),
        "sparse": _toggle(p, f, "sparse", True),
        # A vhost-user disk has no image to probe: ch forces Unknown.
        "image_type": (image_type or "Unknown") if vhost_socket is None else "Unknown",
        "lock_granularity": _convert(p, f, "lock_granularity",
                                     _choice(LOCK_GRANULARITIES, lower=False)) or "ByteRange",
    }
    # _disable_io_uring/_disable_aio are test-only in ch; accepted, validated, not sent.
    _toggle(p, f, "_disable_io_uring", False)
    _toggle(p, f, "_disable_aio", False)
    return {**body, **_pci_common(text)}, []


def net_body(text: str) -> tuple[dict, list[int]]:
    """add-net: NetConfig; ``fd=[a,b]`` goes out as SCM_RIGHTS, never in the body."""
    keys = ("tap", "ip", "mask", "mac", "host_mac", "offload_tso", "offload_ufo", "offload_csum",
            "mtu", "queue_size", "num_queues", "vhost_user", "socket", "vhost_mode", "fd",
            *RATE_LIMIT_KEYS, *PCI_IOMMU_KEYS)
    p = _parsed(text, keys, "net")
    f = "net"
    body = {
        "tap": p.get("tap"),
        "ip": _convert(p, f, "ip", _ip),
        "mask": _convert(p, f, "mask", _ip),
        "mac": _convert(p, f, "mac", _mac),
        "host_mac": _convert(p, f, "host_mac", _mac),
        "mtu": _convert(p, f, "mtu", unsigned(16)),
        "num_queues": _or(_convert(p, f, "num_queues", unsigned(64)), 2),
        "queue_size": _or(_convert(p, f, "queue_size", unsigned(16)), 256),
        "vhost_user": _toggle(p, f, "vhost_user", False),
        "vhost_socket": p.get("socket"),
        "vhost_mode": _convert(p, f, "vhost_mode",
                               _choice({"client": "Client", "server": "Server"}, lower=True)) or "Client",
        "rate_limiter_config": _rate_limiter(p, f),
        "offload_tso": _toggle(p, f, "offload_tso", True),
        "offload_ufo": _toggle(p, f, "offload_ufo", True),
        "offload_csum": _toggle(p, f, "offload_csum", True),
    }
    fds = _or(_convert(p, f, "fd", _fd_list), [])
    return {**body, **_pci_common(text)}, [int(fd) for fd in fds]


def _fd_list(value: str) -> list[int]:
    """fd=[a,b]: file descriptors, which are C ints."""
    fds = parse_integer_list(value)
    for fd in fds:
        if fd > 2**31 - 1:
            raise ValueError(f"Invalid value: {fd} is not a file descriptor")
    return fds


def fs_body(text: str) -> tuple[dict, list[int]]:
    """add-fs: FsConfig (no iommu key: virtio-fs cannot sit behind the vIOMMU)."""
    p = _parsed(text, ("tag", "queue_size", "num_queues", "socket", *PCI_KEYS), "fs")
    tag = p.get("tag")
    if tag is None:
        raise ParseError("Error parsing --fs: tag missing")
    if len(tag.encode()) > VIRTIO_FS_TAG_LEN:
        raise ParseError(f"Error parsing --fs: max tag length is {VIRTIO_FS_TAG_LEN}")
    socket_path = p.get("socket")
    if socket_path is None:
        raise ParseError("Error parsing --fs: socket missing")
    body = {
        "tag": tag,
        "socket": socket_path,
        "num_queues": _or(_convert(p, "fs", "num_queues", unsigned(64)), 1),
        "queue_size": _or(_convert(p, "fs", "queue_size", unsigned(16)), 1024),
    }
    return {**body, **_pci_common(text, with_iommu=False)}, []


def pmem_body(text: str) -> tuple[dict, list[int]]:
    """add-pmem: PmemConfig."""
    p = _parsed(text, ("size", "file", "discard_writes", *PCI_IOMMU_KEYS), "pmem")
    common = _pci_common(text)
    file = p.get("file")
    if file is None:
        raise ParseError("Error parsing --pmem: file missing")
    body = {
        "file": file,
        "size": _convert(p, "pmem", "size", parse_byte_sized),
        "discard_writes": _toggle(p, "pmem", "discard_writes", False),
    }
    return {**body, **common}, []


def vsock_body(text: str) -> tuple[dict, list[int]]:
    """add-vsock: VsockConfig."""
    p = _parsed(text, ("socket", "cid", *PCI_IOMMU_KEYS), "vsock")
    common = _pci_common(text)
    socket_path = p.get("socket")
    if socket_path is None:
        raise ParseError("Error parsing --vsock: socket missing")
    cid = _convert(p, "vsock", "cid", unsigned(32))
    if cid is None:
        raise ParseError("Error parsing --vsock: cid missing")
    return {"cid": cid, "socket": socket_path, **common}, []


def device_body(text: str) -> tuple[dict, list[int]]:
    """add-device: DeviceConfig (VFIO); ``fd=N`` goes out as SCM_RIGHTS."""
    p = _parsed(text, ("path", "fd", *PCI_IOMMU_KEYS, "x_nv_gpudirect_clique",
                       "x_exclude_mmap_bars"), "device")
    common = _pci_common(text)
    fd = _convert(p, "device", "fd", _i32)
    body = {
        "path": p.get("path"),
        "x_nv_gpudirect_clique": _convert(p, "device", "x_nv_gpudirect_clique", unsigned(8)),
        "x_exclude_mmap_bars": _or(_convert(p, "device", "x_exclude_mmap_bars", parse_integer_list), []),
    }
    return {**body, **common}, [] if fd is None else [fd]


def _i32(value: str) -> int:
    number = int(value, 10)
    if not -(1 << 31) <= number < (1 << 31):
        raise ValueError(value)
    return number
