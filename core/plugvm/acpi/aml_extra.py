"""AML constructs that method bodies and hardware registers need (ACPI 6.5, 20.2.5
and 20.2.6): locals and arguments, method calls, Store/And/Or/ShiftLeft/Add/Subtract,
CreateQWordField,
LEqual/LLess, If/While, Notify, Mutex/Acquire/Release, OperationRegion and Field,
and ToUUID. They live beside aml.py's classes rather than in it so that modules
importing aml.py are not disturbed; each is one class per ASL construct, like the
rest of the builder."""

from __future__ import annotations

import uuid
from enum import IntEnum

from plugvm.acpi.aml_base import Aml, encode_pkg_length, with_pkg_length
from plugvm.acpi.aml_data import Buffer, term_list, to_aml
from plugvm.acpi.aml_names import NameString, name_seg, name_string
from plugvm.acpi.errors import AmlError

LOCAL0_OP, ARG0_OP = 0x60, 0x68
STORE_OP, SHIFT_LEFT_OP, AND_OP, NOTIFY_OP, LEQUAL_OP, IF_OP = b"\x70", b"\x79", b"\x7b", b"\x86", b"\x93", b"\xa0"
ADD_OP, LLESS_OP, WHILE_OP = b"\x72", b"\x95", b"\xa2"
SUBTRACT_OP, OR_OP, CREATE_QWORD_FIELD_OP = b"\x74", b"\x7d", b"\x8f"
MUTEX_OP, ACQUIRE_OP, RELEASE_OP = b"\x5b\x01", b"\x5b\x23", b"\x5b\x27"
OP_REGION_OP, FIELD_OP = b"\x5b\x80", b"\x5b\x81"
NULL_TARGET = b"\x00"          # NullName: the result is not stored (20.2.2 Target)
WAIT_FOREVER = 0xFFFF          # Acquire's timeout that never expires (19.6.2)


def _operand(value: object) -> Aml:
    """A TermArg: an int, a str naming an object (not a String!), or any AML object.
    Strings are names here because that is what method bodies mostly refer to."""
    return name_string(value) if isinstance(value, str) else to_aml(value)


def _target(target: object) -> bytes:
    return NULL_TARGET if target is None else _operand(target).to_bytes()


class Local(Aml):
    """Local0..Local7."""

    def __init__(self, index: int):
        if not 0 <= index <= 7:
            raise AmlError(f"AML Local{index} does not exist (Local0-Local7)")
        self.index = index

    def to_bytes(self) -> bytes:
        return bytes([LOCAL0_OP + self.index])


class Arg(Aml):
    """Arg0..Arg6."""

    def __init__(self, index: int):
        if not 0 <= index <= 6:
            raise AmlError(f"AML Arg{index} does not exist (Arg0-Arg6)")
        self.index = index

    def to_bytes(self) -> bytes:
        return bytes([ARG0_OP + self.index])


class MethodCall(Aml):
    """PCEJ (_SUN, _SEG): a method invocation, the name followed by its arguments
    (20.2.5.4 MethodInvocation). The method must be declared before its first call
    in the table, or a parser cannot know how many arguments follow."""

    def __init__(self, name: str | NameString, *args: object):
        self.name = name_string(name)
        self.args = [_operand(a) for a in args]

    def to_bytes(self) -> bytes:
        return self.name.to_bytes() + term_list(self.args)


class Store(Aml):
    """Store (source, target)."""

    def __init__(self, source: object, target: object):
        self.source, self.target = _operand(source), _operand(target)

    def to_bytes(self) -> bytes:
        return STORE_OP + self.source.to_bytes() + self.target.to_bytes()


class _Binary(Aml):
    OPCODE: bytes

    def __init__(self, left: object, right: object, target: object = None):
        self.left, self.right, self.target = _operand(left), _operand(right), target

    def to_bytes(self) -> bytes:
        return self.OPCODE + self.left.to_bytes() + self.right.to_bytes() + _target(self.target)


class And(_Binary):
    """And (left, right, target): bitwise and, stored in target (if any)."""

    OPCODE = AND_OP


class ShiftLeft(_Binary):
    """ShiftLeft (value, count, target)."""

    OPCODE = SHIFT_LEFT_OP


class Add(_Binary):
    """Add (left, right, target), or target = left + right in ASL 2.0 (20.2.5.4 DefAdd)."""

    OPCODE = ADD_OP


class Subtract(_Binary):
    """Subtract (left, right, target), or target = left - right (20.2.5.4 DefSubtract)."""

    OPCODE = SUBTRACT_OP


class Or(_Binary):
    """Or (left, right, target): bitwise or (20.2.5.4 DefOr)."""

    OPCODE = OR_OP


class CreateQWordField(Aml):
    """CreateQWordField (buffer, byte_index, name) (20.2.5.2 DefCreateQWordField): names
    the 8 bytes at byte_index of a buffer, e.g. the minimum of a QWord address
    descriptor in a ResourceTemplate a method fills in."""

    def __init__(self, buffer: str | NameString, byte_index: object, name: str | NameString):
        self.buffer, self.index, self.name = name_string(buffer), _operand(byte_index), name_string(name)

    def to_bytes(self) -> bytes:
        return CREATE_QWORD_FIELD_OP + self.buffer.to_bytes() + self.index.to_bytes() + self.name.to_bytes()


class LEqual(Aml):
    """LEqual (left, right), or (left == right) in ASL 2.0."""

    def __init__(self, left: object, right: object):
        self.left, self.right = _operand(left), _operand(right)

    def to_bytes(self) -> bytes:
        return LEQUAL_OP + self.left.to_bytes() + self.right.to_bytes()


class If(Aml):
    """If (predicate) {body}."""

    def __init__(self, predicate: object, *body: Aml):
        self.predicate, self.body = _operand(predicate), list(body)

    def to_bytes(self) -> bytes:
        return with_pkg_length(IF_OP, self.predicate.to_bytes() + term_list(self.body))


class LLess(Aml):
    """LLess (left, right), or (left < right) in ASL 2.0 (20.2.5.4 DefLLess)."""

    def __init__(self, left: object, right: object):
        self.left, self.right = _operand(left), _operand(right)

    def to_bytes(self) -> bytes:
        return LLESS_OP + self.left.to_bytes() + self.right.to_bytes()


class While(Aml):
    """While (predicate) {body} (20.2.5.3 DefWhile): WhileOp PkgLength Predicate
    TermList, the shape of If."""

    def __init__(self, predicate: object, *body: Aml):
        self.predicate, self.body = _operand(predicate), list(body)

    def to_bytes(self) -> bytes:
        return with_pkg_length(WHILE_OP, self.predicate.to_bytes() + term_list(self.body))


class Notify(Aml):
    """Notify (object, value): 1 is Device Check, 3 Eject Request (5.6.6)."""

    def __init__(self, obj: str | NameString, value: object):
        self.obj, self.value = name_string(obj), _operand(value)

    def to_bytes(self) -> bytes:
        return NOTIFY_OP + self.obj.to_bytes() + self.value.to_bytes()


class Mutex(Aml):
    """Mutex (BLCK, sync_level)."""

    def __init__(self, name: str | NameString, sync_level: int = 0):
        if not 0 <= sync_level <= 15:
            raise AmlError(f"AML mutex {name}: sync level {sync_level} is not 0-15")
        self.name, self.sync_level = name_string(name), sync_level

    def to_bytes(self) -> bytes:
        return MUTEX_OP + self.name.to_bytes() + bytes([self.sync_level])


class Acquire(Aml):
    """Acquire (mutex, timeout in ms); 0xFFFF waits forever."""

    def __init__(self, mutex: str | NameString, timeout: int = WAIT_FOREVER):
        if not 0 <= timeout <= 0xFFFF:
            raise AmlError(f"AML Acquire timeout {timeout} is not 0-0xFFFF")
        self.mutex, self.timeout = name_string(mutex), timeout

    def to_bytes(self) -> bytes:
        return ACQUIRE_OP + self.mutex.to_bytes() + self.timeout.to_bytes(2, "little")


class Release(Aml):
    """Release (mutex)."""

    def __init__(self, mutex: str | NameString):
        self.mutex = name_string(mutex)

    def to_bytes(self) -> bytes:
        return RELEASE_OP + self.mutex.to_bytes()


class RegionSpace(IntEnum):
    """OperationRegion's address space (Table 19.33)."""

    SYSTEM_MEMORY = 0
    SYSTEM_IO = 1
    PCI_CONFIG = 2


class OperationRegion(Aml):
    """OperationRegion (PCST, SystemMemory, offset, length)."""

    def __init__(self, name: str | NameString, space: RegionSpace, offset: object, length: object):
        self.name, self.space = name_string(name), RegionSpace(space)
        self.offset, self.length = _operand(offset), _operand(length)

    def to_bytes(self) -> bytes:
        return (OP_REGION_OP + self.name.to_bytes() + bytes([self.space]) + self.offset.to_bytes()
                + self.length.to_bytes())


class FieldAccess(IntEnum):
    """Field's AccessType (FieldFlags bits 3:0)."""

    ANY, BYTE, WORD, DWORD, QWORD, BUFFER = range(6)


class FieldUpdate(IntEnum):
    """Field's UpdateRule (FieldFlags bits 6:5)."""

    PRESERVE, WRITE_AS_ONES, WRITE_AS_ZEROS = range(3)


class Field(Aml):
    """Field (PCST, DWordAcc, NoLock, WriteAsZeros) {PCIU, 32, ...}: entries are
    (name, bits) pairs, or (None, bits) for an Offset-style gap of reserved bits."""

    def __init__(self, region: str | NameString, entries: list[tuple[str | None, int]], *,
                 access: FieldAccess = FieldAccess.ANY, lock: bool = False,
                 update: FieldUpdate = FieldUpdate.PRESERVE):
        self.region = name_string(region)
        self.entries = list(entries)
        for name, bits in self.entries:
            if not 0 < bits < 1 << 28:
                raise AmlError(f"AML field {name}: {bits} bits is not 1..2**28-1")
        self.flags = FieldAccess(access) | int(lock) << 4 | FieldUpdate(update) << 5

    def to_bytes(self) -> bytes:
        # NamedField := NameSeg PkgLength, ReservedField := 0x00 PkgLength; here the
        # PkgLength is the width in bits and does not count itself (20.2.5.2).
        fields = b"".join((name_seg(name) if name else b"\x00") + encode_pkg_length(bits)
                          for name, bits in self.entries)
        return with_pkg_length(FIELD_OP, self.region.to_bytes() + bytes([self.flags]) + fields)


class ToUuid(Buffer):
    """ToUUID ("e5c937d0-...") (19.6.142): the 16-byte buffer of a UUID, its first
    three fields little-endian and the rest in order (Microsoft GUID byte order)."""

    def __init__(self, text: str):
        try:
            self.uuid = uuid.UUID(text)
        except ValueError as error:
            raise AmlError(f"ToUUID: {text!r} is not a UUID") from error
        super().__init__(self.uuid.bytes_le)
