"""The Fixed ACPI Description Table, revision 6.3 (ACPI 6.5, 5.2.9), of a
hardware-reduced platform (4.1): no SCI, no PM1 blocks, no FACS. Its registers are
cloud-hypervisor's: sleep control/status and reset at I/O port 0x600 and the PM timer
at 0x608 (devices/acpi_pm.py implements them)."""

from __future__ import annotations

import struct

from plugvm import layout
from plugvm.acpi.gas import GenericAddress
from plugvm.acpi.sdt import SdtHeader, SystemTable

LENGTH = 276                 # revision 6 (ACPI 6.0 and later)
MINOR_VERSION = 3            # ACPI 6.3
TMR_VAL_EXT = 1 << 8         # Table 5.10: the PM timer is 32 bits wide
RESET_REG_SUP = 1 << 10      # RESET_REG and RESET_VALUE are valid
HW_REDUCED_ACPI = 1 << 20
RESET_VALUE = 1              # what the guest writes to RESET_REG to reset
PM_TMR_LEN = 4               # must be 4 when there is a PM timer
HYPERVISOR_VENDOR = b"CLOUDHYP"
# Field offsets (Table 5.9).
PM_TMR_LEN_AT, FLAGS_AT, RESET_REG_AT, RESET_VALUE_AT, MINOR_VERSION_AT = 91, 112, 116, 128, 131
X_DSDT_AT, X_PM_TMR_BLK_AT, SLEEP_CONTROL_REG_AT, SLEEP_STATUS_REG_AT = 140, 208, 244, 256
HYPERVISOR_VENDOR_AT = 268


class Fadt(SystemTable):
    """FACP, revision 6, minor 3: points at the DSDT (64-bit X_DSDT only; the 32-bit DSDT,
    FIRMWARE_CTRL and PM_TMR_BLK fields stay 0 as their X_ fields supersede them).
    IAPC_BOOT_ARCH is 0: no ISA devices to enumerate, no 8042 keyboard (ours only
    resets), but a CMOS RTC, VGA probing and MSI allowed."""

    SIGNATURE, REVISION = b"FACP", 6

    def __init__(self, dsdt_addr: int, sleep_port: int = layout.ACPI_SLEEP_PORT,
                 pm_timer_port: int = layout.ACPI_PM_TIMER_PORT):
        self.dsdt_addr = dsdt_addr
        self.sleep_port = sleep_port
        self.pm_timer_port = pm_timer_port

    def body(self) -> bytes:
        table = bytearray(LENGTH)      # offsets are the spec's, from the start of the table
        sleep_reg = GenericAddress.io_port(self.sleep_port, 8).to_bytes()
        struct.pack_into("<B", table, PM_TMR_LEN_AT, PM_TMR_LEN)
        struct.pack_into("<I", table, FLAGS_AT, HW_REDUCED_ACPI | RESET_REG_SUP | TMR_VAL_EXT)
        table[RESET_REG_AT:RESET_REG_AT + GenericAddress.SIZE] = sleep_reg
        struct.pack_into("<B", table, RESET_VALUE_AT, RESET_VALUE)
        struct.pack_into("<B", table, MINOR_VERSION_AT, MINOR_VERSION)
        struct.pack_into("<Q", table, X_DSDT_AT, self.dsdt_addr)
        timer = GenericAddress.io_port(self.pm_timer_port, 32).to_bytes()
        table[X_PM_TMR_BLK_AT:X_PM_TMR_BLK_AT + GenericAddress.SIZE] = timer
        table[SLEEP_CONTROL_REG_AT:SLEEP_CONTROL_REG_AT + GenericAddress.SIZE] = sleep_reg
        table[SLEEP_STATUS_REG_AT:SLEEP_STATUS_REG_AT + GenericAddress.SIZE] = sleep_reg
        table[HYPERVISOR_VENDOR_AT:HYPERVISOR_VENDOR_AT + len(HYPERVISOR_VENDOR)] = HYPERVISOR_VENDOR
        return bytes(table[SdtHeader.SIZE:])
