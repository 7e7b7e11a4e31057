"""AML named objects and the scopes that hold them (ACPI 6.5, 20.2.5.1 "Namespace
Modifier Objects Encoding" and 20.2.5.2 "Named Objects Encoding")."""

from __future__ import annotations

from plugvm.acpi.aml_base import Aml, with_pkg_length
from plugvm.acpi.aml_data import term_list, to_aml
from plugvm.acpi.aml_names import NameString, name_string
from plugvm.acpi.errors import AmlError

NAME_OP, SCOPE_OP, METHOD_OP = b"\x08", b"\x10", b"\x14"
DEVICE_OP = b"\x5b\x82"            # ExtOpPrefix 0x82
SERIALIZED = 1 << 3                # MethodFlags bit 3; bits 2:0 ArgCount, 7:4 SyncLevel


class Name(Aml):
    """Name (_UID, Zero): binds a name to a data object (an int, a str or any AML object)."""

    def __init__(self, name: str | NameString, value: object):
        self.name = name_string(name)
        self.value = to_aml(value)

    def to_bytes(self) -> bytes:
        return NAME_OP + self.name.to_bytes() + self.value.to_bytes()


class NamedContainer(Aml):
    """A named object that opens a scope: opcode PkgLength NameString [head] TermList.
    Subclasses set OPCODE and, when more than the name precedes the TermList, head()
    (Method's flags; later a Field's flags, a PowerResource's levels)."""

    OPCODE: bytes

    def __init__(self, name: str | NameString, *children: Aml):
        self.name = name_string(name)
        self.children = list(children)

    def head(self) -> bytes:
        """What follows PkgLength before the TermList."""
        return self.name.to_bytes()

    def to_bytes(self) -> bytes:
        return with_pkg_length(self.OPCODE, self.head() + term_list(self.children))


class Scope(NamedContainer):
    """Scope (\\_SB) {...}: adds the children to an existing scope."""

    OPCODE = SCOPE_OP


class Device(NamedContainer):
    """Device (COM1) {...}: a device object holding its _HID, _CRS and the like."""

    OPCODE = DEVICE_OP


class Method(NamedContainer):
    """Method (CSTA, 1, Serialized) {...}: a control method with 0-7 arguments; a
    serialized method runs one invocation at a time (ACPI 6.5, 19.6.85)."""

    OPCODE = METHOD_OP

    def __init__(self, name: str | NameString, args: int, *body: Aml, serialized: bool = False,
                 sync_level: int = 0):
        if not 0 <= args <= 7:
            raise AmlError(f"AML method {name}: {args} arguments is not 0-7")
        if not 0 <= sync_level <= 15:
            raise AmlError(f"AML method {name}: sync level {sync_level} is not 0-15")
        super().__init__(name, *body)
        self.flags = args | (SERIALIZED if serialized else 0) | (sync_level << 4)

    def head(self) -> bytes:
        return self.name.to_bytes() + bytes([self.flags])
