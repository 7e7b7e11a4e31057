"""The platform's own DSDT fragments: COM1, the power button and the S5 sleep state."""

from __future__ import annotations

from plugvm import layout
from plugvm.acpi.aml import Aml, Device, EisaId, Io, IrqNoFlags, Name, Package, ResourceTemplate, Scope

SLP_TYP_S5 = 5     # written with SLP_EN to SLEEP_CONTROL_REG to power off (devices/acpi_pm.py)
COM1_PORTS = 8


def com1() -> Device:
    """The first 16550 UART. Linux's 8250_pnp driver then takes its IRQ from here: a
    hardware-reduced platform has no legacy PIC, so ISA IRQs are not assumed."""
    return Device("COM1",
                  Name("_HID", EisaId("PNP0501")),
                  Name("_UID", 0),
                  Name("_STA", 0x0F),     # present, enabled, shown in UI, functioning (6.3.7)
                  Name("_CRS", ResourceTemplate(
                      Io(layout.SERIAL_PORT_COM1, layout.SERIAL_PORT_COM1, 0, COM1_PORTS),
                      IrqNoFlags(layout.SERIAL_IRQ_COM1))))


def power_button() -> Device:
    """The control-method power button (4.8.2.2.1.2), which the GED notifies later."""
    return Device("PWRB", Name("_HID", EisaId("PNP0C0C")), Name("_UID", 0))


def sleep_state_s5() -> Name:
    """\\_S5_: SLP_TYPa, SLP_TYPb and two reserved values (7.4.2)."""
    return Name("\\_S5_", Package(SLP_TYP_S5, SLP_TYP_S5, 0, 0))


def platform_fragments(com1_present: bool = True) -> list[Aml]:
    """What every plugvm DSDT starts with; COM1 only when the serial port exists."""
    devices = ([com1()] if com1_present else []) + [power_button()]
    return [Scope("\\_SB_", *devices), sleep_state_s5()]
