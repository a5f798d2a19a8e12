"""Model IOMMU drivers.

GenericIommu  a strict driver: every unmap invalidates exactly the range it
              unmapped, and the core syncs after every unmap.
IpmmuVmsa     Renesas IPMMU-VMSA (drivers/iommu/ipmmu-vmsa.c): LPAE 4K/2M/1G
              pages, a forced 32-bit aperture, whole-context invalidation
              only, and its TLB-flush erratum as a switchable quirk.

Both implement pyiova.iommu.IommuOps on top of pyiova.iommu.IommuDriver.
"""
from ..iommu import IommuDriver
from .generic import GenericIommu
from .ipmmu import IpmmuVmsa

__all__ = ["IommuDriver", "GenericIommu", "IpmmuVmsa"]
