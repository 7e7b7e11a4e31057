"""--serial and --console (off|null|pty|tty|file=PATH|socket=PATH), or the JSON `serial` and
`console` objects: where the legacy COM1 port and the virtio-console send their output.

Syntax, rules and defaults are cloud-hypervisor's (vmm/src/config.rs CommonConsoleConfig::parse,
ConsoleConfig::parse; `--serial null --console tty` when neither is given). plugvm
implements off, null, tty and file for both (serial_port.py, builtin/console.py); pty and
socket are refused. The console also takes its PCI device's keys (id, pci_device_id; iommu
and pci_segment only at their defaults), read as every PCI device's are (device_config.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugvm import device_config      # the module, not its names: it imports plugvm.config itself

from plugvm.config.errors import Where
from plugvm.config.json_fields import ChEnum, JsonObject
from plugvm.config.options import Options



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
SERIAL_MODES = CONSOLE_MODES = (ConsoleMode.OFF, ConsoleMode.NULL, ConsoleMode.TTY, ConsoleMode.FILE)
# ch ≤ v36 refused this pair (ValidationError::DoubleTtyMode); since v37 it only warns, and so
# does plugvm when it opens them (serial_port.Consoles): both write to stdout, and what is
# typed goes to the serial port.
DOUBLE_TTY = "Console mode tty specified for both serial and console"


@dataclass(frozen=True)
class ConsoleConfig:
    """One console's mode, and its file or socket path for those modes (`serial`)."""

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
            names = ", ".join(m.json_name if where.json else m.value for m in available)
            shown = self.mode.json_name if where.json else self.mode.value
            raise where.error(f"{shown} is not available in plugvm (available: {names})")

    def to_json(self) -> dict:
        body = {"mode": self.mode.json_name, "file": _str(self.file), "socket": _str(self.socket)}
        return {key: value for key, value in body.items() if value is not None}


@dataclass(frozen=True, kw_only=True)
class VirtioConsoleConfig(ConsoleConfig):
    """The virtio-console's (`console`): a ConsoleConfig and the PCI fields plugvm supports.
    iommu and pci_segment are refused unless at their defaults, so they are not kept."""

    mode: ConsoleMode = ConsoleMode.TTY
    id: str | None = None
    pci_device_id: int | None = None

    def to_json(self) -> dict:
        pci = device_config.PciFields(id=self.id, pci_device_id=self.pci_device_id)
        return {**super().to_json(), **pci.pci_json()}


def parse_serial(text: str) -> ConsoleConfig:
    """The value of --serial."""
    where = Where("--serial")
    config = ConsoleConfig(**_parse(Options(text, where, PATH_KEYS, FLAGS), where))
    config.validate(where, SERIAL_MODES)
    return config


def parse_console(text: str) -> VirtioConsoleConfig:
    """The value of --console."""
    where = Where("--console")
    options = Options(text, where, PATH_KEYS + PCI_KEYS, FLAGS)
    config = VirtioConsoleConfig(**_parse(options, where), **_pci(device_config.pci_from_options(options), where))
    config.validate(where, CONSOLE_MODES)
    return config


def serial_from_json(j: JsonObject) -> ConsoleConfig:
    config = ConsoleConfig(**_from_json(j))
    # The spec's SerialConfig has no iommu; Kata's client, from v51.1's, sends `iommu: false`.
    j.lacking("iommu", "the serial port is not behind an IOMMU")
    j.close()
    config.validate(j.where, SERIAL_MODES)
    return config


def console_from_json(j: JsonObject) -> VirtioConsoleConfig:
    # ch sends the console's PCI fields too (iommu and pci_segment always).
    config = VirtioConsoleConfig(**_from_json(j), **_pci(device_config.pci_from_json(j), j.where))
    j.close()
    config.validate(j.where, CONSOLE_MODES)
    return config


def _parse(options: Options, where: Where) -> dict:
    modes = [key for key in FLAGS + PATH_KEYS if options.given(key)]
    if len(modes) != 1:
        # ch takes the first of several by a fixed order; plugvm refuses the ambiguity.
        raise where.error(f"expected one of off, null, pty, tty, file=PATH or socket=PATH, got "
                          f"{'nothing' if not modes else ' and '.join(modes)}")
    mode = ConsoleMode(modes[0])
    path = options.text(modes[0]) if modes[0] in PATH_KEYS else None
    if modes[0] in PATH_KEYS and path is None:
        raise where.error(f"{modes[0]} mode needs a path ({modes[0]}=PATH)")
    return {"mode": mode, "file": Path(path) if mode is ConsoleMode.FILE else None,
            "socket": Path(path) if mode is ConsoleMode.SOCKET else None}


def _from_json(j: JsonObject) -> dict:
    return {"mode": j.enum("mode", ConsoleMode), "file": j.path("file", None), "socket": j.path("socket", None)}


def _pci(fields: dict, where: Where) -> dict:
    # pci_from_* refused iommu=on; the console stays on segment 0; what is left to keep:
    if fields["pci_segment"] != 0:
        raise where.bad("pci_segment", fields["pci_segment"], "is not supported: the virtio-console is on segment 0")
    return {"id": fields["id"], "pci_device_id": fields["pci_device_id"]}


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
