"""pyiova: a fast, faithful userspace model of the Linux IOMMU IOVA allocator.

    >>> from pyiova import IovaDomain
    >>> d = IovaDomain(granule=4096, start_pfn=1)
    >>> hex(d.alloc(1, 0xFFFFF))
    '0xfffff'
"""
from .errors import (IovaClosed, IovaCorrupted, IovaCpuError, IovaError,  # noqa: F401
                     IovaExhausted, IovaInvalidFree, IovaNotFound, IovaTypeError,
                     IovaValueError)
from .iova import IovaDomain  # noqa: F401

__version__ = "0.1.0"
