"""Address space descriptors (ACPI 6.5, 6.4.3.5): the windows a bridge decodes, as a
PCI host bridge's _CRS lists them. All are fixed windows (_MIF and _MAF set, length
max - min + 1, granularity 0: the "fixed size, fixed location" row of Table 6.42)."""

from __future__ import annotations

import struct
from enum import IntEnum

from plugvm.acpi.aml_resources import Descriptor, check_range, large_item
from plugvm.acpi.errors import AmlError

MEMORY_RANGE, IO_RANGE, BUS_NUMBER_RANGE = 0, 1, 2                 # Resource Type
CONSUMER, MIN_FIXED, MAX_FIXED = 1 << 0, 1 << 2, 1 << 3           # General Flags
READ_WRITE = 1 << 0                                                # memory Type Specific Flags


class Cacheability(IntEnum):
    """The _MEM field of a memory range (Table 6.50, bits 2:1)."""

    NON_CACHEABLE = 0
    CACHEABLE = 1
    WRITE_COMBINING = 2
    PREFETCHABLE = 3


class IsaRanges(IntEnum):
    """The _RNG field of an I/O range (Table 6.51, bits 1:0)."""

    NON_ISA_ONLY = 1
    ISA_ONLY = 2
    ENTIRE_RANGE = 3


class _AddressSpace(Descriptor):
    """The layout every Word/DWord/QWord descriptor shares; WIDTH is its field size."""

    ITEM: int
    WIDTH: int
    RESOURCE_TYPE: int

    def __init__(self, minimum: int, maximum: int, *, producer: bool, translation: int, type_flags: int):
        bits = 8 * self.WIDTH
        name = type(self).__name__
        self.minimum = check_range(f"{name} minimum", minimum, bits)
        self.maximum = check_range(f"{name} maximum", maximum, bits)
        self.translation = check_range(f"{name} translation", translation, bits)
        if maximum < minimum:
            raise AmlError(f"{name}: maximum {maximum:#x} is below minimum {minimum:#x}")
        self.length = check_range(f"{name} length", maximum - minimum + 1, bits)
        self.general_flags = MIN_FIXED | MAX_FIXED | (0 if producer else CONSUMER)
        self.type_flags = type_flags

    def to_bytes(self) -> bytes:
        fields = (0, self.minimum, self.maximum, self.translation, self.length)   # _GRA first
        size = {2: "H", 4: "I", 8: "Q"}[self.WIDTH]
        data = struct.pack(f"<BBB5{size}", self.RESOURCE_TYPE, self.general_flags, self.type_flags, *fields)
        return large_item(self.ITEM, data)


class _Memory(_AddressSpace):
    RESOURCE_TYPE = MEMORY_RANGE

    def __init__(self, minimum: int, maximum: int, *, cacheability: Cacheability = Cacheability.NON_CACHEABLE,
                 read_write: bool = True, producer: bool = True, translation: int = 0):
        flags = (READ_WRITE if read_write else 0) | Cacheability(cacheability) << 1
        super().__init__(minimum, maximum, producer=producer, translation=translation, type_flags=flags)


class _Io(_AddressSpace):
    RESOURCE_TYPE = IO_RANGE

    def __init__(self, minimum: int, maximum: int, *, ranges: IsaRanges = IsaRanges.ENTIRE_RANGE,
                 producer: bool = True, translation: int = 0):
        super().__init__(minimum, maximum, producer=producer, translation=translation,
                         type_flags=IsaRanges(ranges))


class WordBusNumber(_AddressSpace):
    """WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len)."""

    ITEM, WIDTH, RESOURCE_TYPE = 0x08, 2, BUS_NUMBER_RANGE

    def __init__(self, minimum: int, maximum: int, *, producer: bool = True):
        super().__init__(minimum, maximum, producer=producer, translation=0, type_flags=0)


class WordIo(_Io):
    """WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len)."""

    ITEM, WIDTH = 0x08, 2


class DWordIo(_Io):
    """DWordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len)."""

    ITEM, WIDTH = 0x07, 4


class DWordMemory(_Memory):
    """DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
    0, min, max, 0, len)."""

    ITEM, WIDTH = 0x07, 4


class QWordMemory(_Memory):
    """QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
    0, min, max, 0, len)."""

    ITEM, WIDTH = 0x0A, 8
