"""pyiova: a fast, faithful userspace model of the Linux IOMMU IOVA allocator.

    >>> from pyiova import IovaDomain
    >>> d = IovaDomain(granule=4096, start_pfn=1)
    >>> hex(d.alloc(1, 0xFFFFF))
    '0xfffff'
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (DmaApiError, DmaMappingError, IovaClosed, IovaCorrupted,  # noqa: F401
                     IovaCpuError, IovaError, IovaExhausted, IovaInvalidFree, IovaNoMemory,
                     IovaNotFound, IovaTypeError, IovaValueError)
from .iova import IOVA_ANCHOR, IovaDomain  # noqa: F401
from .allocators import AllocatorType, PfnAllocator  # noqa: F401
from .iommu import (DomainAttr, DomainCounters, DomainGeometry, DomainType,  # noqa: F401
                    IommuDomain, IommuOps, IotlbGather, IovaAllocator, Prot, StaleTranslation)
from .device import DMA_BIT_MASK, Device  # noqa: F401
from .drivers import GenericIommu, IommuDriver, IpmmuVmsa  # noqa: F401
from .cookie import DmaCookie, get_dma_cookie, get_msi_cookie, put_dma_cookie  # noqa: F401
from .dma import DmaDirection  # noqa: F401
from . import dma  # noqa: F401

if TYPE_CHECKING:
    from .sweeps import sweep  # noqa: F401  (at run time: __getattr__, on first use)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # pyiova.sweep(...) without importing the simulator on `import pyiova`
    if name == "sweep":
        from .sweeps import sweep
        return sweep
    raise AttributeError("module 'pyiova' has no attribute %r" % name)
