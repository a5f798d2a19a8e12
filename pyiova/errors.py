"""pyiova's exceptions.

Every error pyiova raises is an ``IovaError``. Where a builtin exception is
the natural one, the class also derives from it, so ``except ValueError`` and
``except KeyError`` work as a Python programmer expects.
"""


class IovaError(Exception):
    """Base class of every pyiova error."""


class IovaExhausted(IovaError):
    """No free range satisfies the request (the kernel would return no iova / 0)."""


class IovaValueError(IovaError, ValueError):
    """An argument is out of range: size 0, a limit below start_pfn, a pfn the
    granule cannot address in 64 bits, a granule that is not a power of two..."""


class IovaTypeError(IovaError, TypeError):
    """An argument is not an integer (or not a buffer of integers)."""


class IovaNotFound(IovaError, KeyError):
    """No allocated range contains (or starts at) the pfn given."""

    def __str__(self):  # KeyError would quote the message
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


class DmaMappingError(IovaError):
    """A DMA API map failed (the kernel returns DMA_MAPPING_ERROR): no IOVA
    space was left, or the IOMMU refused the mapping."""


class DmaApiError(IovaError, ValueError):
    """The DMA API was misused in a way the kernel would WARN about: unmapping
    what was never mapped, or with another size or direction."""


class TraceError(IovaError, ValueError):
    """A trace cannot be read to its end: compressed data cut short or
    damaged. (Lines that are not events are counted, not raised.)"""
