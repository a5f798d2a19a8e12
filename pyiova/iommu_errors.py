"""Exceptions of the IOMMU layer (domains, drivers, page tables, IOTLB).

Each is an ``IovaError`` and, where Python has a natural builtin for the
situation, also that builtin, so ``except ValueError`` keeps working.
"""
from __future__ import annotations

from .errors import IovaError, IovaNoMemory, IovaValueError


class IommuAlignmentError(IovaValueError):
    """An iova, physical address or size is not a multiple of the domain's
    smallest page, or the size is 0 (the kernel's iommu_map/unmap refuse
    these with -EINVAL)."""


class IommuRangeError(IovaValueError):
    """An address range leaves what can be translated: outside a forced
    aperture, beyond the page table's input or output size, or above the
    device's DMA mask."""


class IommuMappingExists(IovaValueError):
    """A map would cover an address that is already mapped (-EEXIST). Nothing
    was mapped."""


class IommuDomainTypeError(IovaValueError):
    """The operation needs another kind of domain (e.g. a map on an identity
    domain, which has no page table), or the driver cannot allocate that
    kind."""


class IommuNotReady(IovaError, RuntimeError):
    """The domain or device is not set up for this yet: an IPMMU domain gets
    its page table at its first attach (-ENODEV before), a device must be
    attached before it can do DMA."""


class IommuBusy(IovaError, RuntimeError):
    """A resource is in use (-EBUSY): no free hardware context, a domain with
    devices still attached, a device attached to another domain."""


class IommuAttachError(IovaError, RuntimeError):
    """The driver refused to attach the device to the domain (e.g. the device
    sits behind a different IPMMU instance than the one the domain is bound
    to)."""


# The C core out of memory, wherever it is: one class (the name is kept for
# the IOMMU layer's callers).
IommuNoMemory = IovaNoMemory


class IommuFault(IovaError, RuntimeError):
    """A device access the IOMMU refused: nothing translates the address
    (kind "translation") or the translation forbids the access (kind
    "permission"). On hardware the device gets an abort and the IOMMU
    reports the fault."""

    def __init__(self, message: object, *, iova: int | None = None, write: bool = False,
                 kind: str = "translation", device: object = None) -> None:
        super().__init__(message)
        self.iova = iova
        self.write = write
        self.kind = kind
        self.device = device


class IommuAttrError(IovaError):
    """Base of the domain-attribute errors."""


class IommuUnknownAttr(IommuAttrError, KeyError):
    """The attribute does not exist, or not for this domain or driver."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IommuReadOnlyAttr(IommuAttrError, AttributeError):
    """The attribute can be read but not set (GEOMETRY, PAGING)."""


class IommuAttrValueError(IommuAttrError, ValueError):
    """The value is not one the attribute takes, or the driver cannot
    honour it."""


class IommuAttrBusy(IommuAttrError, RuntimeError):
    """The attribute can only change while no device is attached and
    nothing is mapped."""
