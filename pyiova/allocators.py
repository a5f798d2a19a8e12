"""The cookie's IOVA allocators in pfn units: one alloc/free interface over
the C core's allocator types (the review's "PFN-based alloc and free
helpers"). dma-iommu's byte-level rules live in cookie.py on top of this.

Events the C core reports (it cannot call the IOMMU driver itself):
EV_FLUSH - flush the whole IOTLB before using the result (a wraparound
allocator wrapped, or a flush queue is full); EV_RESET - the space was reset
(call the driver's domain_reset); EV_NO_32BIT - a 32-bit-first attempt
failed; EV_QUEUED - a free went into the flush queue.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from . import errors
from .error_codes import error as _code_error
from ._pyiova import ffi, lib
from ._args import as_cpu as _as_cpu
from ._args import as_granule as _as_granule
from ._args import as_u64 as _as_u64
from ._args import bad_argument as _bad_argument
from ._words import loaded_words, save_words
from .iova import IovaDomain, kernel_rules

if TYPE_CHECKING:
    from typing import SupportsIndex

    from typing_extensions import Self

__all__ = ["AllocatorType", "PfnAllocator", "allocator_type", "EV_FLUSH", "EV_RESET", "EV_NO_32BIT",
           "EV_QUEUED"]

EV_FLUSH = lib.IOVA_EV_FLUSH
EV_RESET = lib.IOVA_EV_RESET
EV_NO_32BIT = lib.IOVA_EV_NO_32BIT
EV_QUEUED = lib.IOVA_EV_QUEUED


class AllocatorType(str, enum.Enum):
    """Allocator types a cookie can use (values as on the command line): a
    PfnAllocator's type, a DmaCookie's, and the value of an IOMMU domain's
    IOVA_ALLOCATOR attribute.

    The same class is also public as IovaAllocator (pyiova.IovaAllocator,
    pyiova.iommu.IovaAllocator), the name the domain attribute's values have
    always had: code that imports either name keeps working, and the two
    compare identical (IovaAllocator.IOVA is AllocatorType.IOVA)."""
    IOVA = "iova"                          # the kernel's tree + rcache
    MSI = "msi"                            # the MSI cookie's bump pointer
    WRAPAROUND = "wraparound"              # one-way, flush at the wrap
    RESET_WHEN_EMPTY = "reset-when-empty"  # the rejected 2017 patch

    def __str__(self) -> str:
        return self.value


def allocator_type(value: AllocatorType | str) -> AllocatorType:
    """The AllocatorType a name or member names, or the IovaValueError
    naming value."""
    try:
        return AllocatorType(value)
    except (ValueError, TypeError):
        raise errors.IovaValueError("allocator %r is not one of %s"
                                    % (value, [t.value for t in AllocatorType])) from None


# each type's number in the C core (struct iova_cookie_stats.type)
_C_TYPES = {AllocatorType.IOVA: lib.IOVA_COOKIE_IOVA, AllocatorType.MSI: lib.IOVA_COOKIE_MSI,
            AllocatorType.WRAPAROUND: lib.IOVA_COOKIE_WRAPAROUND,
            AllocatorType.RESET_WHEN_EMPTY: lib.IOVA_COOKIE_RESET_WHEN_EMPTY}

_cookie_alloc = lib.iova_cookie_alloc
_cookie_free = lib.iova_cookie_free
_cookie_free_lazy = lib.iova_cookie_free_lazy
_new_events = ffi.new
_INT_MAX = (1 << 31) - 1          # the C core's cpu arguments are ints
_UINT_MAX = (1 << 32) - 1         # and its ring counts and sizes unsigned ints


class PfnAllocator:
    """One allocator of a given type.

    IOVA and RESET_WHEN_EMPTY run on an IovaDomain (made here unless one is
    given: `iovad`, then reachable as .iovad); WRAPAROUND and MSI manage
    [start_pfn, end_pfn] themselves.
    """

    __slots__ = ("type", "iovad", "_c", "_fq_rings", "__weakref__")
    type: AllocatorType
    iovad: IovaDomain | None

    def __init__(self, type: AllocatorType | str, *, iovad: IovaDomain | None = None,
                 granule: SupportsIndex = 4096, start_pfn: SupportsIndex = 1,
                 end_pfn: SupportsIndex | None = None, ncpus: SupportsIndex = 1,
                 kernel: str = "6.12") -> None:
        self.type = allocator_type(type)
        # Every argument is checked before any is used, whether or not this
        # type needs it: a bad value is a mistake either way.
        granule = _as_granule(granule)
        start_pfn = _as_u64("start_pfn", start_pfn)
        if end_pfn is not None:
            end_pfn = _as_u64("end_pfn", end_pfn)
        ncpus = _as_u64("ncpus", ncpus)
        if not 1 <= ncpus <= lib.IOVA_MAX_CPUS:
            raise errors.IovaValueError("ncpus %r is not in 1..%d" % (ncpus, lib.IOVA_MAX_CPUS))
        kernel_rules(kernel)
        self._fq_rings = 0
        if self.type in (AllocatorType.IOVA, AllocatorType.RESET_WHEN_EMPTY):
            if iovad is None:
                iovad = IovaDomain(granule, start_pfn, ncpus=ncpus, kernel=kernel)
            elif not isinstance(iovad, IovaDomain):
                raise errors.IovaTypeError("iovad must be an IovaDomain")
        elif iovad is not None:
            raise errors.IovaValueError("a %s allocator manages its own space; iovad is for "
                                        "iova and reset-when-empty" % self.type)
        self.iovad = iovad
        if end_pfn is None:
            end_pfn = (1 << 32) // granule - 1                    # the last pfn below 4 GiB
        err = ffi.new("int *")
        c = lib.iova_cookie_new(_C_TYPES[self.type], iovad._d if iovad is not None else ffi.NULL,
                                granule, start_pfn, end_pfn, err)
        if c == ffi.NULL:
            raise _code_error(err[0], "space", where="creating a %s allocator" % self.type,
                              granule=granule, start_pfn=start_pfn, end_pfn=end_pfn,
                              type=self.type)
        self._c = ffi.gc(c, lib.iova_cookie_destroy)

    def _cpu(self, cpu: Any) -> int:
        """The C core's cpu argument: -1 for None (this thread's slot), else
        a slot number (the core checks it against its slots)."""
        return _as_cpu(cpu, self.iovad.ncpus if self.iovad is not None else None)

    # Where the allocator keeps a space of its own (WRAPAROUND, MSI), its
    # messages say "handed out" and "the allocator's space" where a domain's
    # say "allocated" and "start_pfn".
    _OWN_SPACE_VARIANTS = {lib.IOVA_E_NOTFOUND: "start", lib.IOVA_E_LIMIT: "space"}

    def _error(self, code: int, variant: str = "", **named: Any) -> errors.IovaError:
        """The exception for the C core's code (pyiova.error_codes), naming
        the values of the call (pfn, pages, limit_pfn, cpu, lo, hi) and the
        allocator's limits, or its domain's. variant "ring": a cpu names a
        flush queue ring."""
        named.setdefault("size", named.get("pages"))
        named.setdefault("where", "in the %s allocator" % self.type)
        if variant == "ring" and self._fq_rings:
            named["max_cpu"] = self._fq_rings - 1
        if self.iovad is not None:
            return self.iovad._error(code, variant, type=self.type, **named)
        stats = ffi.new("struct iova_cookie_stats *")
        lib.iova_cookie_get_stats(self._c, stats)
        return _code_error(code, self._OWN_SPACE_VARIANTS.get(code, variant), **{
            "what": "the allocator", "type": self.type, "max_size": (1 << 62) - 1,
            "start_pfn": stats.start_pfn, "max_pfn": stats.end_pfn, "max_cpu": 0, **named})

    def alloc(self, pages: SupportsIndex, limit_pfn: SupportsIndex, *, try_32bit: bool = False,
              cpu: SupportsIndex | None = None) -> tuple[int, int]:
        """(pfn, events): `pages` pfns at or below limit_pfn. Raises
        IovaExhausted (events are still on .last_events)."""
        if type(pages) is int and type(limit_pfn) is int and (
                cpu is None or (type(cpu) is int and 0 <= cpu <= _INT_MAX)):
            c = -1 if cpu is None else cpu         # the common cases, checked by cffi
        else:
            pages, limit_pfn = _as_u64("pages", pages), _as_u64("limit_pfn", limit_pfn)
            c = self._cpu(cpu)
        ev = _new_events("uint32_t *")
        try:
            r = _cookie_alloc(self._c, pages, limit_pfn, 1 if try_32bit else 0, c, ev)
        except (TypeError, OverflowError):
            raise _bad_argument(pages=pages, limit_pfn=limit_pfn, cpu=cpu) from None
        if r < 0:
            exc = self._error(r, pages=pages, limit_pfn=limit_pfn, cpu=cpu)
            exc.events = ev[0]
            raise exc
        return r, ev[0]

    def free(self, pfn: SupportsIndex, pages: SupportsIndex, *,
             cpu: SupportsIndex | None = None) -> int:
        """Frees what alloc returned, at once; returns the events."""
        if type(pfn) is int and type(pages) is int and (
                cpu is None or (type(cpu) is int and 0 <= cpu <= _INT_MAX)):
            c = -1 if cpu is None else cpu
        else:
            pfn, pages, c = _as_u64("pfn", pfn), _as_u64("pages", pages), self._cpu(cpu)
        ev = _new_events("uint32_t *")
        try:
            r = _cookie_free(self._c, pfn, pages, c, ev)
        except (TypeError, OverflowError):
            raise _bad_argument(pfn=pfn, pages=pages, cpu=cpu) from None
        if r:
            raise self._error(r, pfn=pfn, pages=pages, cpu=cpu)
        return ev[0]

    def reserve(self, lo: SupportsIndex, hi: SupportsIndex) -> None:
        """WRAPAROUND: keep pfns [lo, hi] out of use for good (reserved
        regions; the IOVA types reserve on their .iovad)."""
        lo, hi = _as_u64("lo", lo), _as_u64("hi", hi)
        try:
            r = lib.iova_cookie_reserve(self._c, lo, hi)
        except (TypeError, OverflowError):
            raise _bad_argument(lo=lo, hi=hi) from None
        if r:
            raise self._error(r, lo=lo, hi=hi)

    def bypass_rcache(self) -> None:
        """IOVA type: allocate and free through the tree alone (the
        "iova-tree" policy). Only before anything is allocated."""
        r = lib.iova_cookie_set_tree_only(self._c, 1)
        if r:
            raise self._error(r)

    # -- flush queue (IOVA type, 6.12 and 6.1) -------------------------------
    def enable_flush_queue(self, ncpus: SupportsIndex = 1, size: SupportsIndex = 256,
                           timeout_ms: SupportsIndex = 10) -> None:
        """IOVA type, 6.12 and 6.1: `ncpus` rings (at most the domain's CPU
        slots: a ring retires into its CPU's rcache) of `size` slots
        (2..2**20) that hold size - 1 entries, as the kernel's rings do, and
        a timer of timeout_ms."""
        ncpus, size = _as_u64("ncpus", ncpus), _as_u64("size", size)
        timeout_ms = _as_u64("timeout_ms", timeout_ms)
        # counts beyond C's unsigned int are refused as the core refuses them
        r = (lib.IOVA_E_CPU if ncpus > _UINT_MAX else lib.IOVA_E_GEOMETRY if size > _UINT_MAX
             else lib.iova_cookie_fq_init(self._c, ncpus, size, timeout_ms))
        if r:
            raise self._error(r, "rings", ncpus=ncpus, size=size,
                              slots=self.iovad.ncpus if self.iovad is not None else 0,
                              what="flush queue: ncpus %r, size %r" % (ncpus, size),
                              rules="at least one ring, of 2..%d slots" % (1 << 20))
        self._fq_rings = ncpus

    def free_lazy(self, pfn: SupportsIndex, pages: SupportsIndex, now_ms: SupportsIndex, *,
                  cpu: SupportsIndex | None = None) -> int:
        """Queues a free: (pfn, pages) as free() would take it now, not queued
        already. Returns the events; EV_FLUSH without EV_QUEUED means the
        ring was full: flush the IOTLB, call fq_flushed(), and retry."""
        pfn, pages, now_ms = _as_u64("pfn", pfn), _as_u64("pages", pages), _as_u64("now_ms", now_ms)
        c = self._cpu(cpu)
        ev = _new_events("uint32_t *")
        r = _cookie_free_lazy(self._c, pfn, pages, c, now_ms, ev)
        if r and r != lib.IOVA_E_FQ_FULL:
            raise self._free_lazy_error(r, pfn, pages, cpu)
        return ev[0]

    def _free_lazy_error(self, code: int, pfn: int, pages: int, cpu: Any) -> errors.IovaError:
        """The exception for free_lazy's C code `code` (a cpu names a ring)."""
        return self._error(code, "ring", pfn=pfn, pages=pages, cpu=cpu)

    def fq_flushed(self, all_rings: bool = False, cpu: SupportsIndex | None = 0) -> None:
        """Counts a full IOTLB flush; with all_rings (the timer) retires every
        queued entry into `cpu`'s rcache."""
        c = self._cpu(cpu)
        if c < 0:
            if all_rings:
                raise errors.IovaCpuError("cpu %r: the timer retires into one CPU's rcache; "
                                          "name it" % (cpu,))
            c = 0                                  # not used without all_rings
        r = lib.iova_cookie_fq_flushed(self._c, 1 if all_rings else 0, c)
        if r:
            raise self._fq_flushed_error(r, cpu)

    def _fq_flushed_error(self, code: int, cpu: Any) -> errors.IovaError:
        """The exception for fq_flushed's C code `code` (a cpu names a ring)."""
        return self._error(code, "ring", cpu=cpu)

    @property
    def fq_due(self) -> int | None:
        """When the flush queue's timer fires (None when not armed)."""
        due = lib.iova_cookie_fq_due(self._c)
        return None if due == (1 << 64) - 1 else due

    # -- introspection --------------------------------------------------------
    def stats(self) -> dict[str, int]:
        st = ffi.new("struct iova_cookie_stats *")
        lib.iova_cookie_get_stats(self._c, st)
        return {k: getattr(st, k) for k in (
            "start_pfn", "end_pfn", "allocs", "frees", "failures", "live_ranges", "live_pfns",
            "held_pfns", "cursor", "wraps", "resets", "fq_queued", "fq_flushes",
            "fq_started", "fq_finished", "fq_lost")}

    def ranges(self) -> list[tuple[int, int, bool]]:
        """WRAPAROUND: every (lo, hi, awaiting_flush) it holds, reserved
        regions included (awaiting_flush False)."""
        n = lib.iova_cookie_wrap_ranges(self._c, ffi.NULL, 0)
        if n < 0:
            raise self._error(n)
        buf = ffi.new("uint64_t[]", 3 * n + 3)
        n = lib.iova_cookie_wrap_ranges(self._c, buf, n + 1)
        flat = ffi.unpack(buf, 3 * n)
        return [(flat[i], flat[i + 1], bool(flat[i + 2])) for i in range(0, len(flat), 3)]

    def check(self) -> None:
        msg = ffi.new("char[]", 256)
        r = lib.iova_cookie_check(self._c, msg, 256)
        if r:
            raise self._error(r, report=ffi.string(msg).decode())

    # -- saving (checkpoints) -------------------------------------------------
    def save(self) -> bytes:
        """The allocator's own C state as bytes (its IovaDomain, if it runs
        on one, saves itself): `restore` turns them back into an allocator
        that makes the same allocations."""
        return save_words(lib.iova_cookie_save, self._c, _save_error)

    @classmethod
    def restore(cls, data: bytes | bytearray | memoryview, iovad: IovaDomain | None = None, *,
                type: AllocatorType | str | None = None) -> Self:
        """A new allocator from `save()`'s bytes, running on `iovad` (the
        iova and reset-when-empty types: the IovaDomain restored beside it;
        the others: None). `type`, when given, is the type the saved
        allocator must have. IovaValueError when the bytes are not a
        consistent allocator of that type on that domain."""
        atype = None
        if type is not None:
            try:
                atype = AllocatorType(type)
            except ValueError:
                raise errors.IovaValueError("saved allocator type %r is unknown" % (type,)) \
                    from None
        if iovad is not None and not isinstance(iovad, IovaDomain):
            raise errors.IovaTypeError("a saved allocator's iovad must be an IovaDomain")
        what = "%s allocator" % atype if atype is not None else "allocator"
        err = ffi.new("int *")
        with loaded_words(data, "allocator") as (words, n):
            c = lib.iova_cookie_restore(words, n, iovad._d if iovad is not None else ffi.NULL,
                                        err)
        if c == ffi.NULL:
            raise _code_error(err[0], "lent", what=what, where="restoring a %s" % what)
        c = ffi.gc(c, lib.iova_cookie_destroy)
        st = ffi.new("struct iova_cookie_stats *")
        lib.iova_cookie_get_stats(c, st)
        if atype is not None and st.type != _C_TYPES[atype]:
            raise errors.IovaValueError("the saved allocator is a %d, not a %s" % (st.type, atype))
        allocator = cls.__new__(cls)
        allocator.type = atype if atype is not None else _TYPES[st.type]
        allocator.iovad = iovad
        allocator._c = c
        allocator._fq_rings = lib.iova_cookie_fq_rings(c)   # for free_lazy's CPU errors
        return allocator

    def __reduce__(self) -> tuple[Any, tuple[str, IovaDomain | None, bytes]]:
        """pickle and copy.deepcopy (pyiova.checkpoint): the C state as
        words; the IovaDomain it runs on travels beside them (pickled on its
        own, shared through the memo)."""
        return (_restore, (self.type.value, self.iovad, self.save()))

    def __repr__(self) -> str:
        st = self.stats()
        return "<PfnAllocator %s live=%d ranges/%d pfns>" % (self.type, st["live_ranges"],
                                                             st["live_pfns"])


_TYPES = {c: t for t, c in _C_TYPES.items()}


def _save_error(code: int) -> errors.IovaError:
    return _code_error(code, what="the allocator's IOVA domain", where="saving an allocator")


def _restore(type_name: str, iovad: IovaDomain | None, data: bytes) -> PfnAllocator:
    """Unpickling entry point (kept at module level so pickle can name it)."""
    return PfnAllocator.restore(data, iovad, type=type_name)
