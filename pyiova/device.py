"""Devices that do DMA through an IOMMU domain.

A Device is what the kernel's struct device is to the IOMMU layer: a name,
its DMA masks, whether it is a PCI device, which IOMMU instance it sits
behind, and the domain it is attached to. dma_access() is the device doing
DMA: the address goes through the domain's IOTLB and page table.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from . import errors
from . import iommu_errors as ierr
from ._args import index_int

if TYPE_CHECKING:
    import array
    from collections.abc import Iterable
    from typing import SupportsIndex

    from ._args import U64Batch
    from .iommu import IommuDomain, IommuOps

__all__ = ["Device", "DMA_BIT_MASK", "device_name"]

_U64_MAX = (1 << 64) - 1


def DMA_BIT_MASK(n: int) -> int:
    """The kernel's DMA_BIT_MASK(n): the n low bits set (n = 64 gives ~0)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 64:
        raise errors.IovaValueError("DMA_BIT_MASK takes 0..64 bits, not %r" % (n,))
    return (1 << n) - 1


# dev_id -> name, so stale records (which carry only the number C was
# given) can name the device even after it is gone.
_ids = itertools.count(1)
_names: dict[int, str] = {}


def device_name(dev_id: int) -> str | None:
    """The name of the device with this id (None if unknown)."""
    return _names.get(dev_id)


def _mask(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.IovaTypeError("%s must be an integer, not %s" % (name, type(value).__name__))
    if not 0 <= value <= _U64_MAX:
        raise errors.IovaValueError("%s %#x is out of range (0..2**64-1)" % (name, value))
    return value


class Device:
    """A DMA-capable device.

    name               how it is shown in messages and stale records
    dma_mask           the highest address the device can put on the bus
                       for streaming DMA (default 32 bits)
    coherent_dma_mask  the same for coherent allocations (default 32 bits)
    is_pci             PCI devices get dma-iommu's 32-bit-first treatment
    iommu              the IOMMU instance (a driver object) the device sits
                       behind; None lets its first attach decide
    """

    def __init__(self, name: str, dma_mask: int = DMA_BIT_MASK(32),
                 coherent_dma_mask: int = DMA_BIT_MASK(32), is_pci: bool = False, *,
                 iommu: IommuOps | None = None) -> None:
        if not isinstance(name, str):
            raise errors.IovaTypeError("name must be a str, not %s" % type(name).__name__)
        if not isinstance(is_pci, bool):
            raise errors.IovaTypeError("is_pci must be a bool, not %s" % type(is_pci).__name__)
        self.name = name
        self.dma_mask = _mask("dma_mask", dma_mask)
        self.coherent_dma_mask = _mask("coherent_dma_mask", coherent_dma_mask)
        self.is_pci = is_pci
        self.iommu = iommu
        self._domain: IommuDomain | None = None
        self.id = next(_ids)
        _names[self.id] = name

    def set_dma_mask(self, mask: int) -> None:
        """dma_set_mask(): change the streaming DMA mask."""
        self.dma_mask = _mask("dma_mask", mask)

    def set_coherent_dma_mask(self, mask: int) -> None:
        """dma_set_coherent_mask()."""
        self.coherent_dma_mask = _mask("coherent_dma_mask", mask)

    @property
    def domain(self) -> IommuDomain | None:
        """The IOMMU domain the device is attached to, or None."""
        return self._domain

    def attach(self, domain: IommuDomain) -> None:
        """iommu_attach_device(domain, dev)."""
        from .iommu import IommuDomain
        if not isinstance(domain, IommuDomain):
            raise errors.IovaTypeError("%s: attach takes an IommuDomain, not %s (%r)"
                                       % (self.name, type(domain).__name__, domain))
        domain.attach_device(self)

    def detach(self) -> None:
        """iommu_detach_device(): leave the current domain (no-op if none)."""
        if self._domain is not None:
            self._domain.detach_device(self)

    def _not_attached(self) -> errors.IovaError:
        return ierr.IommuNotReady("%s is not attached to an IOMMU domain" % self.name)

    def dma_access(self, iova: SupportsIndex, write: bool = False) -> int:
        """The device reads (or writes) at iova; returns the physical address
        the access reached. Raises IommuFault if the IOMMU refuses it. A
        stale IOTLB hit is served like hardware serves it (at the stale
        address) and recorded in the domain."""
        dom = self._domain
        if dom is None:
            raise self._not_attached()
        if type(iova) is not int or not 0 <= iova <= self.dma_mask:
            iova = self._checked_iova(iova)
        return dom._dma_access(iova, write, self)

    def dma_access_many(self, iovas: U64Batch, write: bool | Iterable[bool] = False
                        ) -> tuple[array.array[int], array.array[int]]:
        """Many accesses in one call (write: a bool for all, or one per iova).
        Faults do not stop the batch. Returns (paddrs, status): array('Q')
        and array('i'), status holding IOTLB_* flags (>= 0) or, for a fault,
        pyiova.iotlb.FAULT_TRANSLATION / FAULT_PERMISSION (negative)."""
        dom = self._domain
        if dom is None:
            raise self._not_attached()
        return dom._dma_access_many(iovas, write, self)

    def _checked_iova(self, iova: Any) -> int:
        """iova as an int the device can emit, or the exception saying why not."""
        v = index_int(iova)
        if v is None:
            raise errors.IovaTypeError("iova must be an integer, not %s (%r)"
                                       % (type(iova).__name__, iova))
        iova = v
        if iova < 0:
            raise errors.IovaValueError("iova %d is negative" % iova)
        if iova > self.dma_mask:
            raise ierr.IommuRangeError("%s cannot address iova %#x: above its DMA mask %#x"
                                       % (self.name, iova, self.dma_mask))
        return iova

    # -- pickling and deepcopy (checkpoints) ------------------------------------
    def __setstate__(self, state: Any) -> None:
        """A restored device is a new device: it gets a number of its own
        (numbers label stale records, and the saved one may belong to
        another device in this process)."""
        from . import _state
        from .iommu import IommuDomain
        _state.check_fields("a device", state, {
            "name": str, "dma_mask": int, "coherent_dma_mask": int, "is_pci": bool,
            "iommu": object, "_domain": (IommuDomain, type(None)), "id": int,
            "bus_dma_limit": int}, optional=("bus_dma_limit",),
            extra_ok=not type(self).__module__.startswith("pyiova."))
        for name in ("dma_mask", "coherent_dma_mask", "bus_dma_limit"):
            if name in state:
                _state.check_int("device %s's %s" % (state["name"], name), state[name], 0,
                                 _U64_MAX)
        self.__dict__.update(state)
        self.id = next(_ids)
        _names[self.id] = self.name

    def _check_restored(self) -> None:
        """After a checkpoint is loaded: the domain it is attached to lists it."""
        from . import _state
        if self._domain is not None and self not in self._domain._devices:
            raise _state.fail("device %s" % self.name,
                              "is attached to %s, which does not list it" % self._domain.name)

    def __repr__(self) -> str:
        dom = "" if self._domain is None else " attached"
        return "<Device %s mask=%#x%s%s>" % (self.name, self.dma_mask,
                                            " pci" if self.is_pci else "", dom)
