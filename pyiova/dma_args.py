"""What the DMA API's calls accept: the argument checks of pyiova.dma, in one
place.

Every DMA call first tests its arguments inline for the common case (plain
ints, a DmaDirection, a Device, no cpu); anything else comes here, and is
either converted (an integer that is not a plain int: numpy's uint64, an
IntEnum, any __index__) or refused with the error that names the call, the
argument and the value. A refused call has changed nothing.

The rules are the kernel's types:

  dev        a Device (struct device)
  paddr      phys_addr_t: an integer in 0..2**64-1, and the buffer
             [paddr, paddr+size) must lie below 2**64
  size       size_t: an integer in 1..2**64-1 (0 maps nothing)
  dma_addr   dma_addr_t: an integer in 0..2**64-1
  direction  a DmaDirection (or its value) other than NONE: the kernel's
             valid_dma_direction()
  segments   a scatterlist: a non-empty sequence of (paddr, length) pairs,
             each length in 1..2**32-1 (struct scatterlist's unsigned int)
  cpu        None (the calling thread's CPU) or a CPU slot of the cookie

bool is not an integer here (True is not an address), and nothing with a
fractional part is truncated: 4095.9 bytes is an error, not 4095.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from ._args import index_int

if TYPE_CHECKING:
    from .device import Device
    from .dma import DmaDirection

__all__ = ["device", "integer", "phys_addr", "size", "dma_addr", "direction", "cpu",
           "buffer", "segments", "map_args", "unmap_args", "U64_MAX", "SG_LENGTH_MAX"]

U64_MAX = (1 << 64) - 1
SG_LENGTH_MAX = (1 << 32) - 1      # struct scatterlist's length is an unsigned int


def _type_error(call: str, name: str, value: Any, what: str) -> errors.IovaError:
    return errors.DmaApiTypeError("%s: %s must be %s, not %s (%r)"
                                  % (call, name, what, type(value).__name__, value))


def device(call: str, dev: Any) -> Device:
    """dev, if it is a Device."""
    from .device import Device
    if not isinstance(dev, Device):
        raise _type_error(call, "dev", dev, "a Device")
    return dev


def integer(call: str, name: str, value: Any) -> int:
    """value as an int through __index__ (numpy integers, IntEnum...); bool,
    float, str, None and the rest are refused."""
    v = index_int(value)
    if v is None:
        raise _type_error(call, name, value, "an integer")
    return v


def _u64(call: str, name: str, value: Any, what: str, lo: int = 0) -> int:
    v = integer(call, name, value)
    if v < lo or v > U64_MAX:
        raise errors.DmaApiError("%s: %s %s is not %s (%d..2**64-1)"
                                 % (call, name, _show(v), what, lo))
    return v


def _show(v: int) -> str:
    """An integer as a kernel engineer reads it: hex, with a sign if any."""
    return "-%#x" % -v if v < 0 else "%#x" % v


def phys_addr(call: str, value: Any, name: str = "paddr") -> int:
    return _u64(call, name, value, "a physical address")


def size(call: str, value: Any, name: str = "size") -> int:
    return _u64(call, name, value, "a size in bytes", lo=1)


def dma_addr(call: str, value: Any, name: str = "dma_addr") -> int:
    return _u64(call, name, value, "a DMA address")


def buffer(call: str, paddr: int, nbytes: int, name: str = "paddr") -> None:
    """[paddr, paddr+nbytes) must lie in the 64-bit physical address space."""
    if paddr + nbytes > U64_MAX + 1:
        raise errors.DmaApiError("%s: the buffer at %s %#x of %#x bytes runs past the top of the "
                                 "64-bit physical address space" % (call, name, paddr, nbytes))


def direction(call: str, value: Any) -> DmaDirection:
    """value as a DmaDirection a mapping can have (not NONE)."""
    from .dma import DmaDirection
    if type(value) is not DmaDirection:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(call, "direction", value, "a DmaDirection")
        try:
            value = DmaDirection(value)
        except ValueError:
            raise errors.DmaApiError("%s: direction %r is not a DmaDirection (%s)"
                                     % (call, value, ", ".join(
                                         "%s=%d" % (d.name, d) for d in DmaDirection))) from None
    if value is DmaDirection.NONE:
        raise errors.DmaApiError("%s: DMA_NONE is not a direction a mapping can have" % call)
    return value


def cpu(call: str, value: Any, ncpus: int) -> int | None:
    """None, or a CPU slot in 0..ncpus-1."""
    if value is None:
        return None
    v = integer(call, "cpu", value)
    if not 0 <= v < ncpus:
        raise errors.DmaApiError("%s: cpu %d is not in 0..%d (None: this thread's)"
                                 % (call, v, ncpus - 1))
    return v


def segments(call: str, value: Any) -> tuple[tuple[int, int], ...]:
    """A scatterlist as a tuple of (paddr, length) pairs of ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise _type_error(call, "segments", value, "a sequence of (paddr, length) pairs")
    out = []
    for i, seg in enumerate(value):
        try:
            p, n = seg
        except (TypeError, ValueError):
            raise _type_error(call, "segments[%d]" % i, seg, "a (paddr, length) pair") from None
        p = phys_addr(call, p, "segments[%d] paddr" % i)
        n = integer(call, "segments[%d] length" % i, n)
        if not 1 <= n <= SG_LENGTH_MAX:
            raise errors.DmaApiError("%s: segments[%d] length %s is not in 1..%#x (a scatterlist "
                                     "entry's length is an unsigned int)"
                                     % (call, i, _show(n), SG_LENGTH_MAX))
        buffer(call, p, n, "segments[%d] paddr" % i)
        out.append((p, n))
    if not out:
        raise errors.DmaApiError("%s: an empty scatterlist maps nothing" % call)
    return tuple(out)


def map_args(call: str, dev: Any, paddr: Any, nbytes: Any,
             dirn: Any) -> tuple[int, int, DmaDirection]:
    """(paddr, size, direction) of a map call, checked."""
    device(call, dev)
    paddr = phys_addr(call, paddr)
    nbytes = size(call, nbytes)
    buffer(call, paddr, nbytes)
    return paddr, nbytes, direction(call, dirn)


def unmap_args(call: str, dev: Any, addr: Any, nbytes: Any,
               dirn: Any) -> tuple[int, int, DmaDirection]:
    """(dma_addr, size, direction) of an unmap call, checked."""
    device(call, dev)
    return dma_addr(call, addr), size(call, nbytes), direction(call, dirn)
