"""The fields cloud-hypervisor flattens into every PCI device's config (notes §1.4):
id, iommu, pci_segment and pci_device_id, read from the CLI or JSON alike, for plugins
to include in their own config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import U8, U16, Options

PCI_KEYS = ("id", "iommu", "pci_segment", "pci_device_id")
PCI_SLOTS = 32


@dataclass(frozen=True, kw_only=True)
class PciFields:
    id: str | None = None
    iommu: bool = False
    pci_segment: int = 0
    pci_device_id: int | None = None

    def pci_json(self) -> dict:
        body = {"iommu": self.iommu, "pci_segment": self.pci_segment}
        if self.id is not None:
            body["id"] = self.id
        if self.pci_device_id is not None:
            body["pci_device_id"] = self.pci_device_id
        return body


def pci_from_options(o: Options) -> dict:
    """The PCI fields of an option string, as keyword arguments for the config dataclass."""
    fields = {"id": o.text("id"), "iommu": o.toggle("iommu", False), "pci_segment": o.integer("pci_segment", 0, U16),
              "pci_device_id": o.integer("pci_device_id", None, U8) if o.given("pci_device_id") else None}
    return _check(fields, o.where)


def pci_from_json(j: JsonObject) -> dict:
    fields = {"id": j.string("id", None), "iommu": j.boolean("iommu", False),
              "pci_segment": j.integer("pci_segment", 0, U16), "pci_device_id": j.integer("pci_device_id", None, U8)}
    return _check(fields, j.where)


def _check(fields: dict, where: Where) -> dict:
    if fields["id"] is not None:
        if not fields["id"]:
            raise where.error("id is empty")
        if fields["id"].startswith("__"):
            raise where.bad("id", fields["id"], "may not start with '__' (reserved for built-in devices)")
        if fields["id"].startswith("_virtio-pci-"):
            raise where.bad("id", fields["id"], "may not start with '_virtio-pci-' (the device tree's name for a "
                            "device's PCI node)")
    if fields["iommu"]:
        raise where.error("iommu=on is not supported (plugvm has no virtual IOMMU)")
    # Whether the segment exists is the VM's to say (its platform's num_pci_segments):
    # device_manager.check_slots when a VM config is given, the device manager at a hot-add.
    slot = fields["pci_device_id"]
    if slot is not None and not 1 <= slot < PCI_SLOTS:
        raise where.bad("pci_device_id", slot, f"is not a free device slot (1 to {PCI_SLOTS - 1}; 0 is the host bridge)")
    return fields
