"""Model IOMMU drivers.

GenericIommu  a strict driver: every unmap invalidates exactly the range it
              unmapped, and the core syncs after every unmap.
IpmmuVmsa     Renesas IPMMU-VMSA (drivers/iommu/ipmmu-vmsa.c): LPAE 4K/2M/1G
              pages, a forced 32-bit aperture, whole-context invalidation
              only, and its TLB-flush erratum as a switchable quirk.

Both implement pyiova.iommu.IommuOps on top of IommuDriver (base.py), the
plumbing drivers share.

Simulations name their driver: the built-in names, and drivers of your own
added by register_driver() or another package's "pyiova.drivers" entry
points, are in DRIVER_SPECS (pyiova.drivers.registry).
"""
from .base import EngineProfile, IommuDriver
from .generic import GenericIommu
from .ipmmu import IpmmuVmsa
from .registry import DRIVER_SPECS, DriverSpec, register_driver

__all__ = ["IommuDriver", "EngineProfile", "GenericIommu", "IpmmuVmsa", "DRIVER_SPECS",
           "DriverSpec", "register_driver"]
