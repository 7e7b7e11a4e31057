"""VsockConfig: cloud-hypervisor's --vsock option and `vsock` JSON (notes §1.4, §2):
`cid` and `socket` required, and the PCI fields. One per VM (DeviceType.multiple=False)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import U32, Options
from plugvm.device_config import PCI_KEYS, PciFields, pci_from_json, pci_from_options

CLI = Where("--vsock")
JSON = Where("vsock", json=True)
MIN_CID = 3                 # 0 hypervisor, 1 local, 2 host (VMADDR_CID_HOST) are not a guest's
CID_ANY = 0xFFFF_FFFF       # VMADDR_CID_ANY (linux/vm_sockets.h): a wildcard, never an address
SUN_PATH_MAX = 107          # struct sockaddr_un.sun_path[108], NUL-terminated


@dataclass(frozen=True, kw_only=True)
class VsockConfig(PciFields):
    """The guest's CID and the unix socket the VMM binds for the host side."""

    cid: int
    socket: Path

    def to_json(self) -> dict:
        return {"cid": self.cid, "socket": str(self.socket), **self.pci_json()}


def parse(text: str) -> VsockConfig:
    o = Options(text, CLI, keys=("cid", "socket", *PCI_KEYS))
    if not o.given("cid"):
        raise CLI.error("cid is required (cid=N, the guest's context id, 3 or more)")
    if not o.text("socket"):
        raise CLI.error("socket is required (socket=PATH, the unix socket plugvm creates for the host side)")
    config = VsockConfig(cid=o.integer("cid", None, U32), socket=Path(o.text("socket")), **pci_from_options(o))
    return checked(config, CLI)


def from_json(body: object) -> VsockConfig:
    j = JsonObject(body, JSON)
    config = VsockConfig(cid=j.integer("cid", high=U32), socket=j.path("socket"), **pci_from_json(j))
    j.close()
    return checked(config, JSON)


def checked(config: VsockConfig, where: Where) -> VsockConfig:
    if config.cid < MIN_CID:
        raise where.bad("cid", config.cid, f"is reserved (0 hypervisor, 1 local, 2 host): a guest's CID is at "
                                           f"least {MIN_CID}")
    if config.cid == CID_ANY:
        raise where.bad("cid", config.cid, "is VMADDR_CID_ANY, a wildcard, not a guest's CID")
    path = str(config.socket)
    if not path:
        raise where.error("socket is empty")
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise where.bad("socket", path, f"is too long for a unix socket (at most {SUN_PATH_MAX} bytes)")
    check_free(config.socket, where)
    return config


def check_free(path: Path, where: Where) -> None:
    """cloud-hypervisor binds the socket itself and refuses a path that exists (notes §3g);
    checked when the config is read and again when the device binds."""
    if os.path.lexists(path):
        raise where.bad("socket", str(path), "already exists: plugvm creates the socket itself (and removes it "
                                             "when the device goes); remove it or choose another path")
