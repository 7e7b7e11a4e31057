"""--serial and --console (off|null|pty|tty|file=PATH|socket=PATH), or the JSON `serial` and
`console` objects: where the legacy COM1 port and the virtio-console send their output.

Syntax and rules are cloud-hypervisor's (vmm/src/config.rs CommonConsoleConfig::parse).
plugvm's serial port (serial_port.py) implements off, null, tty and file; it has no
virtio-console yet, so the console must be off (ch's default would be tty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.json_fields import ChEnum, JsonObject
from plugvm.config.options import U8, U16, Options


class ConsoleMode(ChEnum):
    """Where a console's output goes."""

    OFF = "off"     # no device at all
    PTY = "pty"
    TTY = "tty"     # plugvm's own stdin/stdout
    FILE = "file"
    SOCKET = "socket"
    NULL = "null"   # the device exists; output is discarded


FLAGS = ("off", "pty", "tty", "null")
PATH_KEYS = ("file", "socket")
# ch's virtio-console also takes its PCI device's keys (PciDeviceCommonConfig::OPTIONS_IOMMU).
PCI_KEYS = ("iommu", "id", "pci_segment", "pci_device_id")
_PCI_DEFAULTS = {"iommu": False, "id": None, "pci_segment": 0, "pci_device_id": None}
SERIAL_MODES = (ConsoleMode.OFF, ConsoleMode.NULL, ConsoleMode.TTY, ConsoleMode.FILE)
CONSOLE_MODES = (ConsoleMode.OFF,)


@dataclass(frozen=True)
class ConsoleConfig:
    """One console's mode, and its file or socket path for those modes."""

    mode: ConsoleMode = ConsoleMode.NULL
    file: Path | None = None
    socket: Path | None = None

    def validate(self, where: Where, available: tuple[ConsoleMode, ...]) -> None:
        if self.mode is ConsoleMode.FILE and self.file is None:
            raise where.error("file mode needs a path (file=PATH)")
        if self.mode is ConsoleMode.SOCKET and self.socket is None:
            raise where.error("socket mode needs a path (socket=PATH)")
        for name in PATH_KEYS:
            if getattr(self, name) is not None and self.mode.value != name:
                raise where.error(f"{name} is given but the mode is {self.mode.value}")
        if self.mode not in available:
            raise where.error(_unavailable(where, self.mode, available))

    def to_json(self) -> dict:
        body = {"mode": self.mode.json_name, "file": _str(self.file), "socket": _str(self.socket)}
        return {key: value for key, value in body.items() if value is not None}


def parse_serial(text: str) -> ConsoleConfig:
    """The value of --serial."""
    where = Where("--serial")
    config = _parse(Options(text, where, PATH_KEYS, FLAGS), where)
    config.validate(where, SERIAL_MODES)
    return config


def parse_console(text: str) -> ConsoleConfig:
    """The value of --console; only `off` while plugvm has no virtio-console."""
    where = Where("--console")
    options = Options(text, where, PATH_KEYS + PCI_KEYS, FLAGS)
    config = _parse(options, where)
    pci = [key for key in PCI_KEYS if options.given(key)]
    if pci and config.mode in CONSOLE_MODES:
        raise where.error(f"{pci[0]}: virtio-console is not available yet in plugvm; use --console off")
    config.validate(where, CONSOLE_MODES)
    return config


def serial_from_json(j: JsonObject) -> ConsoleConfig:
    config = _from_json(j)
    j.close()
    config.validate(j.where, SERIAL_MODES)
    return config


def console_from_json(j: JsonObject) -> ConsoleConfig:
    config = _from_json(j)
    # ch sends the console's PCI fields too (iommu and pci_segment always); at their defaults
    # they ask for nothing, so a config written by ch for a console that is Off is accepted.
    pci = {"iommu": j.boolean("iommu", False), "pci_segment": j.integer("pci_segment", 0, high=U16),
           "id": j.string("id", None), "pci_device_id": j.integer("pci_device_id", None, high=U8)}
    for key, value in pci.items():
        if value != _PCI_DEFAULTS[key]:
            raise j.where.error(f"{key}: virtio-console is not available yet in plugvm; mode must be Off")
    j.close()
    config.validate(j.where, CONSOLE_MODES)
    return config


def _parse(options: Options, where: Where) -> ConsoleConfig:
    modes = [key for key in FLAGS + PATH_KEYS if options.given(key)]
    if len(modes) != 1:
        # ch takes the first of several by a fixed order; plugvm refuses the ambiguity.
        raise where.error(f"expected one of off, null, pty, tty, file=PATH or socket=PATH, got "
                          f"{'nothing' if not modes else ' and '.join(modes)}")
    mode = ConsoleMode(modes[0])
    path = options.text(modes[0]) if modes[0] in PATH_KEYS else None
    if modes[0] in PATH_KEYS and path is None:
        raise where.error(f"{modes[0]} mode needs a path ({modes[0]}=PATH)")
    return ConsoleConfig(mode=mode, file=Path(path) if mode is ConsoleMode.FILE else None,
                         socket=Path(path) if mode is ConsoleMode.SOCKET else None)


def _from_json(j: JsonObject) -> ConsoleConfig:
    return ConsoleConfig(mode=j.enum("mode", ConsoleMode), file=j.path("file", None), socket=j.path("socket", None))


def _unavailable(where: Where, mode: ConsoleMode, available: tuple[ConsoleMode, ...]) -> str:
    shown = mode.json_name if where.json else mode.value
    if available == CONSOLE_MODES:
        hint = "mode must be Off" if where.json else "use --console off"
        return f"{shown}: virtio-console is not available yet in plugvm; {hint}"
    names = ", ".join(m.json_name if where.json else m.value for m in available)
    return f"{shown} is not available yet in plugvm's serial port (available: {names})"


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
