"""The VM's platform (`--platform`, the JSON `platform`): cloud-hypervisor's
PlatformConfig, of which plugvm implements the PCI segment count; the fields for what
it lacks (TDX, SEV-SNP, SMBIOS strings, IOMMU segments) are refused unless they ask for
nothing."""

from __future__ import annotations

from dataclasses import dataclass

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import U16, Options

CLI = Where("--platform")
JSON = Where("platform", json=True)
# cloud-hypervisor allows 96; plugvm's 64 GiB 64-bit window holds 16 segments of 4 GiB.
MAX_PCI_SEGMENTS = 16

LACKING = {
    "iommu_segments": "plugvm has no virtual IOMMU",
    "iommu_address_width_bits": "plugvm has no virtual IOMMU",
    "tdx": "plugvm has no TDX guests",
    "sev_snp": "plugvm has no SEV-SNP guests",
    "iommufd": "plugvm has no VFIO (iommufd)",
    **{key: "plugvm has no SMBIOS tables" for key in (
        "system_serial_number", "serial_number", "system_uuid", "uuid", "oem_strings", "system_manufacturer",
        "system_product_name", "system_version", "system_family", "system_sku_number", "chassis_asset_tag")},
}


@dataclass(frozen=True)
class PlatformConfig:
    num_pci_segments: int = 1

    @classmethod
    def parse(cls, text: str) -> PlatformConfig:
        """The value of --platform (ch's other keys are refused as unknown, as plugvm lacks them)."""
        o = Options(text, CLI, ("num_pci_segments",))
        config = cls(num_pci_segments=o.integer("num_pci_segments", 1, U16))
        config.validate(CLI)
        return config

    @classmethod
    def from_json(cls, j: JsonObject) -> PlatformConfig:
        config = cls(num_pci_segments=j.integer("num_pci_segments", 1, high=0xFFFF))
        for key, why in LACKING.items():
            j.lacking(key, why)
        j.boolean("vfio_p2p_dma", True)         # peer-to-peer DMA between VFIO devices: with none, moot
        j.close()
        config.validate(j.where)
        return config

    def validate(self, where: Where) -> None:
        if not 1 <= self.num_pci_segments <= MAX_PCI_SEGMENTS:
            raise where.bad("num_pci_segments", self.num_pci_segments,
                            f"is out of range: plugvm builds 1 to {MAX_PCI_SEGMENTS} PCI segments")

    def to_json(self) -> dict:
        return {"num_pci_segments": self.num_pci_segments}
