"""The Differentiated System Description Table (ACPI 6.5, 5.2.11.1): the AML that
describes the platform, made of fragments each component hands in (cloud-hypervisor
style: the platform's devices, then later the CPU manager, PCI segments, the GED)."""

from __future__ import annotations

from typing import Iterable

from plugvm.acpi.aml_base import Aml
from plugvm.acpi.aml_data import term_list
from plugvm.acpi.sdt import SystemTable


class Dsdt(SystemTable):
    """DSDT, revision 2: the revision also makes AML integers 64 bits wide (5.2.11.1),
    which Ones and QWord constants rely on."""

    SIGNATURE, REVISION = b"DSDT", 2

    def __init__(self, fragments: Iterable[Aml]):
        self.fragments = list(fragments)

    def body(self) -> bytes:
        return term_list(self.fragments)
