"""AML statements, the Type1 opcodes of a method body (ACPI 6.5, 20.2.5.3
"Statement Opcodes Encoding"). If, Notify, Store and friends join Return here."""

from __future__ import annotations

from plugvm.acpi.aml_base import Aml
from plugvm.acpi.aml_data import to_aml

RETURN_OP = b"\xa4"


class Return(Aml):
    """Return (value): value is an int, a str, a name or any other AML term."""

    def __init__(self, value: object):
        self.value = to_aml(value)

    def to_bytes(self) -> bytes:
        return RETURN_OP + self.value.to_bytes()
