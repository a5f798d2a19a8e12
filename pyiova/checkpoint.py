"""Checkpoints of a simulation: every stateful pyiova object pickles and
deep-copies, and the copy then behaves exactly as the original would.

    blob = checkpoint.dumps((domain, device))     # or pickle.dumps
    domain2, device2 = checkpoint.loads(blob)     # or pickle.loads

What round-trips: IovaDomain (iova.py), PfnAllocator and DmaCookie (the
allocator's C state, the flush queue with its timer and queued entries, the
wraparound and reset-when-empty state, the cookie's flush and reset counts,
its sticky 32-bit-first devices and the DMA API's live mappings),
IoPgtable and Iotlb (leaves, entries in recency order, stale records,
counters), IommuDomain with its attributes and devices, the drivers
(including the IPMMU's erratum random state and its hardware contexts) and
Device. Pickle's memo keeps shared references shared, so a graph saved in
one call - a domain, its devices and its driver - comes back as one graph.

The C states travel as words the C core checks one by one when restoring,
so a damaged checkpoint is refused with an IovaValueError, never loaded
half-way. loads() also turns what pickle itself raises on damaged bytes
into CheckpointError. Like any pickle, a checkpoint must come from a
trusted source: unpickling can run code named in the data.
"""
import pickle

from . import errors
from ._pyiova import ffi, lib
from ._words import load_words, save_words
from .allocators import AllocatorType, PfnAllocator

__all__ = ["dumps", "loads", "CheckpointError"]

_C_TYPES = {AllocatorType.IOVA: lib.IOVA_COOKIE_IOVA, AllocatorType.MSI: lib.IOVA_COOKIE_MSI,
            AllocatorType.WRAPAROUND: lib.IOVA_COOKIE_WRAPAROUND,
            AllocatorType.RESET_WHEN_EMPTY: lib.IOVA_COOKIE_RESET_WHEN_EMPTY}


class CheckpointError(errors.IovaValueError):
    """The bytes given to loads() are not a pyiova checkpoint (truncated,
    damaged, or something else altogether)."""


def dumps(obj):
    """obj (any graph of pyiova objects, plain data around them) as bytes."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data):
    """The graph dumps() saved. CheckpointError when the bytes are not a
    readable pickle; the IovaError a restore raised when a saved state in
    it is inconsistent."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise errors.IovaTypeError("loads() needs bytes, not %s" % type(data).__name__)
    try:
        return pickle.loads(data)
    except errors.IovaError:
        raise
    except MemoryError as exc:
        # A restore running out of memory raises from a Python frame below
        # this one; pickle's own MemoryError, with none below, comes from a
        # damaged length or memo index asking for absurd amounts.
        if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
            raise
        raise CheckpointError("not a readable checkpoint: a damaged size asks for more "
                              "memory than there is") from exc
    except Exception as exc:
        raise CheckpointError("not a readable checkpoint: %s: %s"
                              % (type(exc).__name__, exc)) from exc


# ---- PfnAllocator (its __reduce__ delegates here) -------------------------------

def _allocator_error(code):
    if code == lib.IOVA_E_CLOSED:
        return errors.IovaClosed("the allocator's IOVA domain is closed")
    return errors.IovaError("saving the allocator failed with code %d" % code)


def reduce_allocator(allocator):
    """PfnAllocator.__reduce__: the C state as words; the IovaDomain it runs
    on travels beside them (pickled on its own, shared through the memo)."""
    words = save_words(lib.iova_cookie_save, allocator._c, _allocator_error)
    return (_restore_allocator, (allocator.type.value, allocator.iovad, words))


def _restore_allocator(type_name, iovad, data):
    from .iova import IovaDomain
    try:
        atype = AllocatorType(type_name)
    except ValueError:
        raise errors.IovaValueError("saved allocator type %r is unknown" % (type_name,)) \
            from None
    if iovad is not None and not isinstance(iovad, IovaDomain):
        raise errors.IovaTypeError("a saved allocator's iovad must be an IovaDomain")
    words, n, keep = load_words(data, "allocator")
    err = ffi.new("int *")
    c = lib.iova_cookie_restore(words, n, iovad._d if iovad is not None else ffi.NULL, err)
    if c == ffi.NULL:
        if err[0] == lib.IOVA_E_NOMEM:
            raise MemoryError("out of memory restoring a %s allocator" % atype)
        raise errors.IovaValueError("the saved %s allocator is corrupt or inconsistent, or "
                                    "does not fit its IOVA domain" % atype)
    c = ffi.gc(c, lib.iova_cookie_destroy)
    st = ffi.new("struct iova_cookie_stats *")
    lib.iova_cookie_get_stats(c, st)
    if st.type != _C_TYPES[atype]:
        raise errors.IovaValueError("the saved allocator is a %d, not a %s" % (st.type, atype))
    allocator = PfnAllocator.__new__(PfnAllocator)
    allocator.type = atype
    allocator.iovad = iovad
    allocator._c = c
    allocator._fq_rings = lib.iova_cookie_fq_rings(c)   # for free_lazy's CPU errors
    return allocator
