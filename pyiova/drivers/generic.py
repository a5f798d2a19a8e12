"""A generic strict IOMMU driver.

It stands for IOMMUs that can invalidate by address (SMMUv3, VT-d, AMD-Vi)
run in strict mode: unmap gathers exactly the range it cleared, and
iotlb_sync (which the core calls after every unmap) invalidates that range.
No stale translation can outlive an unmap, whatever the allocator does with
the freed addresses: the reference against which lazier policies are judged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import errors
from .. import iommu_errors as ierr
from ..pgtable import LPAE_4K_PGSIZES
from ..iommu import DomainGeometry
from .base import EngineProfile, IommuDriver, declares_own

if TYPE_CHECKING:
    from ..device import Device
    from ..iommu import IommuDomain, IotlbGather

__all__ = ["GenericIommu"]


class GenericIommu(IommuDriver):
    """A strict IOMMU with ranged invalidation.

    Each paging domain gets its page table and IOTLB at allocation, and the
    geometry [0, 2^ias - 1] with a forced aperture (as arm-smmu sets it).
    deferred_flush says whether DMA domains may use a flush queue (the
    attribute is stored; the cookie layer acts on it).
    """

    def __init__(self, name: str = "generic-iommu", *, pgsize_bitmap: int = LPAE_4K_PGSIZES,
                 ias: int = 48, oas: int = 48, tlb_entries: int = 64, tlb_ways: int = 0,
                 record_limit: int = 65536, deferred_flush: bool = True) -> None:
        super().__init__(name, pgsize_bitmap=pgsize_bitmap, ias=ias, oas=oas,
                         tlb_entries=tlb_entries, tlb_ways=tlb_ways, record_limit=record_limit)
        if not isinstance(deferred_flush, bool):
            raise errors.IovaTypeError("deferred_flush must be a bool, not %s (%r)"
                                       % (type(deferred_flush).__name__, deferred_flush))
        self.supports_flush_queue = deferred_flush

    _STATE = dict(IommuDriver._STATE, supports_flush_queue=bool)

    def _init_domain(self, domain: IommuDomain) -> None:
        if domain.type.paging:
            domain.set_hardware(self.new_pgtable(), self.new_iotlb())
            domain.set_geometry(DomainGeometry(0, (1 << self.ias) - 1, True))

    def attach_dev(self, domain: IommuDomain, dev: Device) -> None:
        if dev.iommu is None:
            dev.iommu = self
        elif dev.iommu is not self:
            raise ierr.IommuAttachError("%s sits behind %s, not %s"
                                        % (dev.name, getattr(dev.iommu, "name", dev.iommu),
                                           self.name))

    def unmap(self, domain: IommuDomain, iova: int, size: int, gather: IotlbGather) -> int:
        # (a paging domain has its page table from domain_alloc on; the
        # core unmaps in no other)
        unmapped = domain.pgtable.unmap(iova, size)  # type: ignore[union-attr]
        if unmapped:
            # As iommu_iotlb_gather_add_page: a range that cannot merge with
            # what is gathered gets the old range synced first.
            if gather.is_disjoint(iova, unmapped):
                domain.iotlb_sync(gather)
            gather.add_range(iova, unmapped)
        return unmapped

    def iotlb_sync(self, domain: IommuDomain, gather: IotlbGather) -> None:
        if gather.empty:
            return
        domain.counts.syncs += 1
        domain.iotlb.invalidate_range(  # type: ignore[union-attr]  # (as for unmap)
            gather.start, gather.end - gather.start + 1)

    def engine_profile(self, domain: IommuDomain) -> EngineProfile | None:
        if not declares_own(self, GenericIommu) or domain.pgtable is None or \
                domain.iotlb is None:
            return None
        return EngineProfile("range")
