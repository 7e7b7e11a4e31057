"""plugvm's AML builder, in one import: one class per ASL construct, each rendering
its bytes with to_bytes() (or bytes(obj)).

    Scope("\\\\_SB_", Device("COM1", Name("_HID", EisaId("PNP0501")), Name("_UID", 0)))

Plain ints and strs are accepted wherever AML wants data. The modules behind it:
aml_base (the Aml base class, PkgLength), aml_names (NameString), aml_data (integers,
strings, buffers, packages), aml_objects (Name, Scope, Device, Method), aml_statements
(Return; later If, Notify, Store...), aml_resources, aml_descriptors and aml_address
(ResourceTemplate and what goes in it). A new construct is a new class in the module
of its grammar section (ACPI 6.5, chapter 20), re-exported here.
"""

from plugvm.acpi.aml_address import (Cacheability, DWordIo, DWordMemory, IsaRanges, QWordMemory, WordBusNumber,
                                     WordIo)
from plugvm.acpi.aml_base import Aml, encode_pkg_length, pkg_length
from plugvm.acpi.aml_data import Buffer, EisaId, Integer, One, Ones, Package, String, Zero, to_aml
from plugvm.acpi.aml_descriptors import Interrupt, Io, Irq, IrqNoFlags, Memory32Fixed
from plugvm.acpi.aml_names import NameString
from plugvm.acpi.aml_objects import Device, Method, Name, Scope
from plugvm.acpi.aml_resources import Descriptor, EndTag, ResourceTemplate
from plugvm.acpi.aml_statements import Return

__all__ = [
    "Aml", "encode_pkg_length", "pkg_length", "to_aml",
    "NameString",
    "Integer", "Zero", "One", "Ones", "EisaId", "String", "Buffer", "Package",
    "Name", "Scope", "Device", "Method", "Return",
    "ResourceTemplate", "Descriptor", "EndTag", "Io", "IrqNoFlags", "Irq", "Interrupt", "Memory32Fixed",
    "WordBusNumber", "WordIo", "DWordIo", "DWordMemory", "QWordMemory", "Cacheability", "IsaRanges",
]
