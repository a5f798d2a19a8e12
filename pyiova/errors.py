"""pyiova's exceptions.

Every error pyiova raises is an ``IovaError`` (besides AttributeError for an
attribute that does not exist, which Python's attribute protocol requires).
Where a builtin exception is the natural one, the class also derives from
it, so ``except ValueError``, ``except KeyError`` or ``except MemoryError``
work as a Python programmer expects. Which class each of
the C core's error codes raises is one table, pyiova.error_codes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self


class LaterMessage:
    """A message formatted when it is first read (str), for errors a caller
    expects and catches by the thousand: a failing call then costs about
    what a succeeding one does. IovaError.args gives it as the string."""
    __slots__ = ("fmt", "values")

    def __init__(self, fmt: str, values: Any) -> None:
        self.fmt, self.values = fmt, values

    def __str__(self) -> str:
        return self.fmt % self.values

    def __repr__(self) -> str:
        return repr(self.fmt % self.values)

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return (str, (self.fmt % self.values,))


class IovaError(Exception):
    """Base class of every pyiova error.

    An error made with later() (or with a LaterMessage as its argument)
    formats its message only when something reads it: str, repr, args, a
    traceback or a pickle all see the same text.
    """

    # Set on the error of a batch call (alloc_many, map_sg...): the index of
    # the item that failed, how many were done before it, and the pfns handed
    # out so far (README, "Errors").
    index: int
    done: int
    pfns: Any
    # Set on a PfnAllocator's error: the events the failed call reported.
    events: int

    @classmethod
    def later(cls, fmt: str, *values: Any) -> Self:
        """An exception of this class whose message is fmt % values."""
        return cls(LaterMessage(fmt, values))

    # (typeshed declares BaseException.args a plain tuple; at run time it is
    # the getset descriptor whose __get__ and __set__ these call)
    @property
    def args(self) -> tuple[Any, ...]:
        args = BaseException.args.__get__(self)  # type: ignore[attr-defined]
        if args and type(args[0]) is LaterMessage:
            args = (str(args[0]),) + args[1:]
            BaseException.args.__set__(self, args)  # type: ignore[attr-defined]
        return args

    @args.setter
    def args(self, value: tuple[Any, ...]) -> None:
        BaseException.args.__set__(self, value)  # type: ignore[attr-defined]


class IovaExhausted(IovaError):
    """No free range satisfies the request (the kernel would return no iova / 0)."""


class IovaValueError(IovaError, ValueError):
    """An argument is out of range: size 0, a limit below start_pfn, a pfn the
    granule cannot address in 64 bits, a granule that is not a power of two..."""


class IovaTypeError(IovaError, TypeError):
    """An argument is not an integer (or not a buffer of integers)."""


class IovaNotFound(IovaError, KeyError):
    """No allocated range contains (or starts at) the pfn given."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IovaInvalidFree(IovaError, ValueError):
    """A free the kernel would corrupt itself on: the range already sits in an
    rcache magazine (a double free), the size names another size class, or the
    pfn is the anchor. The domain is left unchanged."""


class IovaCpuError(IovaValueError):
    """A CPU slot outside 0..ncpus-1."""


class IovaClosed(IovaError, RuntimeError):
    """The domain was closed (put_iova_domain); it cannot be used any more."""


class IovaCorrupted(IovaError, AssertionError):
    """check() found an invariant that does not hold (a bug in pyiova)."""


class IovaNoMemory(IovaError, MemoryError):
    """The C core could not allocate memory (or a domain ran out of node
    indices). The structure is unchanged."""


class DmaMappingError(IovaError):
    """A DMA API map failed (the kernel returns DMA_MAPPING_ERROR, or NULL
    from dma_alloc_coherent): no IOVA space was left below the device's DMA
    mask, the request is larger than the space could ever hold, the mask
    leaves no space at all, or the IOMMU refused the mapping. Nothing was
    mapped and nothing else changed but what the kernel's own failed
    allocation changes (see README, "Errors of the DMA API")."""


class DmaApiError(IovaValueError):
    """The DMA API was misused: an argument that is not a device, an address,
    a size or a direction the kernel's DMA API takes, or an unmap the
    kernel's DMA-API debugging would report (an address map returned no
    mapping at, another size, direction or kind of mapping, another
    device). Nothing changed."""


class DmaApiTypeError(DmaApiError, IovaTypeError):
    """A DMA API argument of the wrong type (a str or a float where an
    address or a size belongs, None for a device...): a DmaApiError that
    is also a TypeError."""


class MissingDependency(IovaError, ImportError):
    """An optional package a call needs is not installed (matplotlib for a
    plot, pandas for a DataFrame); the message says how to install it."""


class CheckpointError(IovaValueError):
    """The bytes given to checkpoint.loads() are not a sound pyiova
    checkpoint: truncated, damaged, or something else altogether."""


class TraceError(IovaValueError):
    """A trace cannot be read to its end: compressed data cut short or
    damaged. (Lines that are not events are counted, not raised.)"""
