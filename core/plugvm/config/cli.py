"""plugvm's command line, in cloud-hypervisor's syntax (notes §2.2), into a CliConfig.

argparse reads the options; its errors become ConfigError instead of usage-and-exit-2,
so the caller prints one line and exits 1. -h/--help and --version print and exit 0.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from plugvm import __version__
from plugvm.config.api_socket import ApiSocketConfig, parse_api_socket
from plugvm.config.console import parse_console, parse_serial
from plugvm.config.errors import ConfigError, Where
from plugvm.config.event_monitor import EventMonitorConfig, parse_event_monitor
from plugvm.config.cpus import CpusConfig
from plugvm.config.memory import CLI as MEMORY_CLI, MemoryConfig, check_method
from plugvm.config.payload import CLI_NAMES, PayloadConfig
from plugvm.config.platform import PlatformConfig
from plugvm.config.vm import VmConfig

# ch's clap group "vm-config", which requires a payload (--kernel).
VM_OPTIONS = ("--cpus", "--memory", "--initramfs", "--cmdline", "--serial", "--console", "--platform")


@dataclass(frozen=True)
class CliConfig:
    """What plugvm was asked to do. vm is None without --kernel: as with ch, the VMM then
    only serves the API (a VM may be created through it)."""

    vm: VmConfig | None
    api_socket: ApiSocketConfig | None = None
    event_monitor: EventMonitorConfig | None = None
    log_file: Path | None = None
    verbosity: int = 0
    list_plugins: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(message.removeprefix("argument "))


class _Once(argparse.Action):
    """Stores the value, refusing a second one as clap does for ch's single-valued options."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not None:
            raise ConfigError(f"{option_string}: given more than once ({getattr(namespace, self.dest)!r}, "
                              f"then {values!r})")
        setattr(namespace, self.dest, values)


def _parser(registry) -> _Parser:
    p = _Parser(prog="plugvm", allow_abbrev=False,
                description="A virtual machine monitor for Linux/KVM in which every device type is a plugin. "
                            "Options as cloud-hypervisor's. Without --kernel, only the API is served.")
    once = {"action": _Once, "default": None}
    p.add_argument("--kernel", **once, metavar="PATH", help="bzImage, or ELF vmlinux with a PVH note")
    p.add_argument("--initramfs", **once, metavar="PATH", help="initramfs image")
    p.add_argument("--cmdline", **once, metavar="STR", help="kernel command line")
    p.add_argument("--cpus", **once, help="boot=N,max=N,topology=T:C:D:P,kvm_hyperv=on|off,max_phys_bits=N,"
                                          "affinity=[V@[CPUS],...],features=[amx],nested=on|off,"
                                          "core_scheduling=vm|vcpu|off (default boot=1,max_phys_bits=46)")
    p.add_argument("--memory", **once, help="size=SIZE,mergeable=on|off,shared=on|off,hugepages=on|off,"
                                            "hugepage_size=SIZE,hotplug_method=METHOD,hotplug_size=SIZE,"
                                            "hotplugged_size=SIZE,prefault=on|off,reserve=on|off,thp=on|off "
                                            "(default size=512M,hotplug_method=acpi; methods: "
                                            f"{', '.join(sorted(registry.memory_methods)) or 'none installed'})")
    p.add_argument("--serial", **once, help="off|null|tty|file=PATH: the COM1 port (default null; ch's pty "
                                            "and socket=PATH are not available)")
    p.add_argument("--console", **once, help="off|null|tty|file=PATH[,id=ID,pci_device_id=SLOT]: the "
                                             "virtio-console, hvc0 in the guest (default tty; not tty with "
                                             "--serial tty; ch's pty and socket=PATH are not available)")
    p.add_argument("--platform", **once, help="num_pci_segments=N: PCI segments 0..N-1 (default 1, at most "
                                              "16); ch's iommu_segments and SMBIOS strings are not available")
    for t in _optioned(registry):
        if t.multiple:
            p.add_argument(t.cli_option, action="extend", nargs="+", default=None, metavar="CONFIG",
                           dest=_device_dest(t), help=f"{t.help} [plugin {t.distribution or t.name}]")
        else:
            # A device that exists by default (rng) may be named bare: `--rng`, as in the
            # hotplug guide's command lines, means its defaults.
            bare = {"nargs": "?", "const": ""} if t.default is not None else {}
            p.add_argument(t.cli_option, **once, **bare, metavar="CONFIG", dest=_device_dest(t),
                           help=f"{t.help} [plugin {t.distribution or t.name}]")
    p.add_argument("--list-plugins", action="store_true", help="list the installed device plugins and exit")
    p.add_argument("--api-socket", **once, metavar="path=PATH|fd=N|PATH", help="HTTP API on a UNIX socket")
    p.add_argument("--event-monitor", **once, metavar="path=PATH|fd=N",
                   help="report the VMM's events (booted, device-added, resized, ...) there as JSON")
    p.add_argument("--log-file", **once, metavar="PATH", help="log here instead of standard error")
    p.add_argument("-v", action="count", default=0, dest="verbosity", help="more log output (-vv: debug)")
    p.add_argument("--version", action="version", version=f"plugvm {__version__}")
    return p


def parse_cli(argv: list[str], registry=None) -> CliConfig:
    """argv without the program name. Raises ConfigError naming the option for any bad input.
    Device options are those of the plugins in `registry` (default: every installed one)."""
    if registry is None:
        from plugvm import plugins
        registry = plugins.load()
    args, extra = _parser(registry).parse_known_args(argv)
    if args.list_plugins:
        return CliConfig(vm=None, list_plugins=True)
    if extra:
        if extra[0].startswith("-"):
            from plugvm import plugins
            option = extra[0].split('=')[0]
            raise ConfigError(f"{option}: unknown option ({plugins.missing(option)})")
        raise ConfigError(f"{extra[0]!r}: unexpected argument (plugvm takes only options)")
    api_socket = None if args.api_socket is None else parse_api_socket(args.api_socket)
    log_file = _path("--log-file", args.log_file)
    monitor = None if args.event_monitor is None else parse_event_monitor(args.event_monitor)
    devices = {}
    for t in _optioned(registry):
        value = getattr(args, _device_dest(t))
        if value is not None:
            devices[t.config_key] = tuple(t.parse(v) for v in value) if t.multiple else t.parse(value)
    if args.kernel is None:
        given = [option for option in VM_OPTIONS if getattr(args, _dest(option)) is not None]
        given += [t.cli_option for t in _optioned(registry) if t.config_key in devices]
        if given:
            raise ConfigError(f"--kernel: required with {', '.join(given)} (VM options need a kernel to boot)")
        return CliConfig(vm=None, api_socket=api_socket, event_monitor=monitor, log_file=log_file,
                         verbosity=args.verbosity)
    cpus = CpusConfig() if args.cpus is None else CpusConfig.parse(args.cpus)
    memory = MemoryConfig() if args.memory is None else MemoryConfig.parse(args.memory)
    check_method(memory, registry, MEMORY_CLI)
    serial = parse_serial("null" if args.serial is None else args.serial)
    console = parse_console("tty" if args.console is None else args.console)
    payload = PayloadConfig(kernel=_path("--kernel", args.kernel), initramfs=_path("--initramfs", args.initramfs),
                            cmdline=args.cmdline)
    payload.validate(CLI_NAMES)
    platform = PlatformConfig() if args.platform is None else PlatformConfig.parse(args.platform)
    vm = VmConfig(payload=payload, cpus=cpus, memory=memory, serial=serial, console=console, platform=platform,
                  devices=devices)
    from plugvm.device_manager import check_slots
    check_slots(registry, vm, "plugvm")
    return CliConfig(vm=vm, api_socket=api_socket, event_monitor=monitor, log_file=log_file,
                     verbosity=args.verbosity)


def _optioned(registry) -> list:
    # Device types with options of their own (not the console, which the core's --console sets).
    return [t for t in registry.ordered() if t.configured_by is None]


def _device_dest(device_type) -> str:
    return "device_" + device_type.name.replace("-", "_")


def _dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _path(option: str, value: str | None) -> Path | None:
    if value == "":
        raise ConfigError(f"{option}: the path is empty")
    return None if value is None else Path(value)
