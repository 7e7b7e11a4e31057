"""Each ch-remote subcommand → the HTTP request it makes (cloud-hypervisor/src/bin/ch-remote.rs).

Building a request can fail (bad size, bad device string, unreadable file);
those errors carry ch-remote's top-level message and chain to the cause.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Callable

from plugvm_remote import configs
from plugvm_remote.errors import CommandError, ConfigSyntaxError, IoError, RemoteError
from plugvm_remote.options import parse_byte_sized, unsigned


@dataclass(frozen=True)
class Request:
    """One API call: ``method /api/v1/<command>`` with an optional JSON body and fds."""

    method: str
    command: str
    body: str | None = None
    fds: list[int] = field(default_factory=list)


# Subcommands without arguments: name → (method, full API command).
SIMPLE = {
    "ping": ("GET", "vmm.ping"),
    "shutdown-vmm": ("PUT", "vmm.shutdown"),
    "info": ("GET", "vm.info"),
    "counters": ("GET", "vm.counters"),
    "boot": ("PUT", "vm.boot"),
    "delete": ("PUT", "vm.delete"),
    "shutdown": ("PUT", "vm.shutdown"),
    "reboot": ("PUT", "vm.reboot"),
    "pause": ("PUT", "vm.pause"),
    "resume": ("PUT", "vm.resume"),
    "power-button": ("PUT", "vm.power-button"),
    "nmi": ("PUT", "vm.nmi"),
}

# add-* subcommands: name → (body builder, ch-remote's message for a syntax error).
ADD = {
    "add-disk": (configs.disk_body, "Error parsing disk syntax"),
    "add-net": (configs.net_body, "Error parsing network syntax"),
    "add-fs": (configs.fs_body, "Error parsing filesystem syntax"),
    "add-pmem": (configs.pmem_body, "Error parsing persistent memory syntax"),
    "add-vsock": (configs.vsock_body, "Error parsing vsock syntax"),
    "add-device": (configs.device_body, "Error parsing device syntax"),
}


class ValueSyntaxError(ConfigSyntaxError):
    """A count or size argument that does not parse (Rust's message for it)."""


def _dumps(body: dict) -> str:
    # serde_json's compact form: no spaces after separators.
    return json.dumps(body, separators=(",", ":"))


def _value(text: str, parse: Callable[[str], int], message: str) -> int:
    try:
        return parse(text)
    except ValueError as e:
        raise CommandError(message) from ValueSyntaxError(str(e))


def resize(args) -> Request:
    body = {
        "desired_vcpus": None if args.cpus is None else _value(args.cpus, unsigned(32), "Error parsing CPU count"),
        "desired_ram": None if args.memory is None else _value(args.memory, parse_byte_sized, "Error parsing memory size"),
        "desired_balloon": None if args.balloon is None else _value(args.balloon, parse_byte_sized, "Error parsing balloon size"),
    }
    return Request("PUT", "vm.resize", _dumps(body))


def resize_zone(args) -> Request:
    size = _value(args.size, parse_byte_sized, "Error parsing memory size")
    return Request("PUT", "vm.resize-zone", _dumps({"id": args.id, "desired_ram": size}))


def resize_disk(args) -> Request:
    size = _value(args.size, parse_byte_sized, "Invalid disk size")
    return Request("PUT", "vm.resize-disk", _dumps({"id": args.disk, "desired_size": size}))


def remove_device(args) -> Request:
    return Request("PUT", "vm.remove-device", _dumps({"id": args.id}))


def create(args) -> Request:
    """The file (or stdin for ``-``) is sent as-is, unvalidated, as ch-remote does."""
    message = "Error reading from stdin" if args.path == "-" else "Error reading from file"
    try:
        if args.path == "-":
            stream = getattr(sys.stdin, "buffer", None)      # a text stream without one (tests)
            raw = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
        else:
            with open(args.path, "rb") as f:
                raw = f.read()
        data = raw.decode("utf-8")
    except OSError as e:
        raise CommandError(message) from IoError(e)
    except UnicodeDecodeError as e:
        raise CommandError(message) from RemoteError(f"stream did not contain valid UTF-8 (byte {e.start})")
    return Request("PUT", "vm.create", data)


def add(args) -> Request:
    build, message = ADD[args.command]
    try:
        body, fds = build(args.config)
    except ConfigSyntaxError as e:
        raise CommandError(message) from e
    return Request("PUT", "vm." + args.command, _dumps(body), fds)


BUILDERS: dict[str, Callable[..., Request]] = {
    "resize": resize,
    "resize-zone": resize_zone,
    "resize-disk": resize_disk,
    "remove-device": remove_device,
    "create": create,
    **dict.fromkeys(ADD, add),
}


def build_request(args) -> Request:
    """The request for the parsed command line ``args`` (``args.command`` names the subcommand)."""
    if args.command in SIMPLE:
        method, command = SIMPLE[args.command]
        return Request(method, command)
    return BUILDERS[args.command](args)
