"""Iotlb: the binding of the C IOTLB model (csrc/iotlb.c), an IOMMU's
translation cache that notices stale translations.

As pgtable.py: arguments go straight to C, and only a refusal is examined
to name the offending value; the C core's codes become exceptions through
pyiova.error_codes.
"""
from __future__ import annotations

import array
from collections import namedtuple
from typing import TYPE_CHECKING, Any, NamedTuple

from . import errors
from ._args import bad_argument, check_u64, u64_buffer
from .error_codes import error as _code_error
from ._pyiova import ffi, lib
from ._words import save_words
from .pgtable import IoPgtable, restore_native, save_error, struct_fields, struct_to_tuple

if TYPE_CHECKING:
    from collections.abc import Iterable

    from typing_extensions import Self

    from ._args import U64Batch

__all__ = ["Iotlb", "TlbEntry", "Translation", "IotlbStats", "FAULT_TRANSLATION",
           "FAULT_PERMISSION"]

# An access's status in access_many() when it faults (the others are >= 0).
FAULT_TRANSLATION = lib.IOVA_E_FAULT
FAULT_PERMISSION = lib.IOVA_E_PERM

_tlb_access = lib.iotlb_access
_tlb_inval_range = lib.iotlb_invalidate_range
_tlb_inval_all = lib.iotlb_invalidate_all
_new = ffi.new

class TlbEntry(NamedTuple):
    """One IOTLB entry; rank 0 is the most recently used of its set."""
    iova: int
    paddr: int
    size: int
    prot: int
    set: int
    rank: int


class Translation(NamedTuple):
    """Where a device access went: paddr, whether the IOTLB served it (hit),
    whether that entry was stale, and the raw IOTLB_* flags."""
    paddr: int
    hit: bool
    stale: bool
    flags: int


if TYPE_CHECKING:
    # The fields of struct iotlb_stats (csrc), which the namedtuple takes at
    # run time (tests/test_typing.py checks they agree).
    class IotlbStats(NamedTuple):
        accesses: int
        hits: int
        misses: int
        fills: int
        evictions: int
        translation_faults: int
        permission_faults: int
        stale_hits: int
        stale_unmapped: int
        stale_remapped: int
        multi_hits: int
        range_invalidations: int
        full_invalidations: int
        entries_invalidated: int
        valid_entries: int
        records_kept: int
        records_dropped: int
else:
    IotlbStats = namedtuple("IotlbStats", struct_fields("struct iotlb_stats"))

# A stale record as stale_records() gives it: (iova, stale_paddr,
# current_paddr or None, op_index, dev_id, write).
StaleRecord = tuple[int, int, "int | None", int, int, bool]


class Iotlb:
    """A model of an IOMMU's TLB: `entries` entries in sets of `ways`
    (0: fully associative), least recently used replaced first. Device
    accesses go through access(), which serves hits from the cache even when
    the page table has changed since, and records each such stale hit.

    record_limit caps the stale records kept (their count goes on).
    """

    __slots__ = ("_p", "ptr", "entries", "ways", "sets", "record_limit", "__weakref__")
    entries: int
    ways: int
    sets: int
    record_limit: int

    def __init__(self, entries: int = 64, ways: int = 0, *, record_limit: int = 65536) -> None:
        for name, value in (("entries", entries), ("ways", ways),
                            ("record_limit", record_limit)):
            exc = check_u64(name, value)
            if exc is not None:
                raise exc
        out = ffi.new("iotlb **")
        ok = 0 < entries <= lib.IOTLB_MAX_ENTRIES and ways <= entries
        rc = lib.iotlb_create(entries, ways, record_limit, out) if ok else lib.IOVA_E_GEOMETRY
        if rc:
            raise _code_error(
                rc, where="creating an IOTLB of %d entries" % entries,
                what="IOTLB geometry: %r entries in sets of %r ways" % (entries, ways),
                rules="entries must be 1..%d and a multiple of ways; ways 0 means fully "
                      "associative" % lib.IOTLB_MAX_ENTRIES)
        self._adopt(out[0], record_limit)

    def _adopt(self, p: Any, record_limit: int) -> None:
        """Takes ownership of a C IOTLB and mirrors its geometry."""
        self._p = ffi.gc(p, lib.iotlb_destroy)
        self.ptr = p
        geo = ffi.new("uint32_t[3]")
        lib.iotlb_geometry(p, geo, geo + 1, geo + 2)
        self.entries, self.ways, self.sets = geo[0], geo[1], geo[2]
        self.record_limit = record_limit

    # -- saving, pickling, copying -------------------------------------------
    def save(self) -> bytes:
        """The whole IOTLB - entries in recency order, stale records and
        counters - as bytes."""
        return save_words(lib.iotlb_save, self.ptr, save_error)

    @classmethod
    def restore(cls, data: bytes | bytearray | memoryview) -> Self:
        """A new IOTLB from save()'s bytes: it hits, misses, evicts and
        records as the original would. IovaValueError if they are not a
        sound IOTLB."""
        p, record_limit = restore_native(data, "IOTLB", "an IOTLB", "iotlb **",
                                         lib.iotlb_restore)
        self = cls.__new__(cls)
        self._adopt(p, record_limit)
        return self

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (Iotlb.restore, (self.save(),))

    def __deepcopy__(self, memo: Any) -> Iotlb:
        return Iotlb.restore(self.save())

    def access(self, pgtable: IoPgtable, iova: int, write: bool = False, *, op_index: int = 0,
               dev_id: int = 0) -> Translation:
        """One device access through this IOTLB and then pgtable; returns a
        Translation, or raises IommuFault."""
        if not isinstance(pgtable, IoPgtable):
            raise errors.IovaTypeError("pgtable must be an IoPgtable, not %s"
                                       % type(pgtable).__name__)
        res = _new("struct iotlb_result *")
        try:
            rc = _tlb_access(self.ptr, pgtable.ptr, iova, 1 if write else 0, op_index,
                             dev_id, res)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, op_index=op_index, dev_id=dev_id) from None
        if rc:
            raise fault_error(rc, iova, write, None)
        f = res.flags
        return Translation(res.paddr, bool(f & lib.IOTLB_HIT), bool(f & lib.IOTLB_STALE), f)

    def access_many(self, pgtable: IoPgtable, iovas: U64Batch,
                    writes: bool | Iterable[bool] | None = None, *, op_base: int = 0,
                    dev_id: int = 0) -> tuple[array.array[int], array.array[int]]:
        """Many accesses in one C call; faults do not stop it. Returns
        (paddrs array('Q'), status array('i')): status is the access's
        IOTLB_* flags, or FAULT_TRANSLATION / FAULT_PERMISSION (negative)
        for a fault."""
        if not isinstance(pgtable, IoPgtable):
            raise errors.IovaTypeError("pgtable must be an IoPgtable, not %s"
                                       % type(pgtable).__name__)
        return access_many(self.ptr, pgtable.ptr, iovas, writes, op_base, dev_id)

    def invalidate_range(self, iova: int, size: int) -> int:
        """Drop every entry meeting [iova, iova+size); returns how many."""
        out = _new("uint64_t *")
        try:
            rc = _tlb_inval_range(self.ptr, iova, size, out)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, size=size) from None
        if rc:
            raise _code_error(rc, "zero", what="an IOTLB call")
        return out[0]

    def invalidate_all(self) -> int:
        """Drop every entry; returns how many."""
        out = _new("uint64_t *")
        _tlb_inval_all(self.ptr, out)
        return out[0]

    def stats(self) -> IotlbStats:
        st = ffi.new("struct iotlb_stats *")
        lib.iotlb_get_stats(self.ptr, st)
        return struct_to_tuple(IotlbStats, st)

    def stale_records(self, start: int = 0, limit: int | None = None) -> list[StaleRecord]:
        """The stored stale records from number start on, as cdata-free
        tuples (iova, stale_paddr, current_paddr or None, op_index, dev_id,
        write)."""
        out: list[StaleRecord] = []
        buf = ffi.new("struct iotlb_stale_record[]", 1024)
        count = ffi.new("size_t *")
        while limit is None or len(out) < limit:
            want = 1024 if limit is None else min(1024, limit - len(out))
            lib.iotlb_stale_records(self.ptr, start, buf, want, count)
            n = count[0]
            for i in range(n):
                r = buf[i]
                cur = None if r.current_paddr == lib.IOTLB_UNMAPPED else r.current_paddr
                out.append((r.iova, r.stale_paddr, cur, r.op_index, r.dev_id,
                            bool(r.flags & lib.IOTLB_RECORD_WRITE)))
            start += n
            if n < want:
                break
        return out

    def clear_records(self) -> None:
        lib.iotlb_clear_records(self.ptr)

    def dump(self) -> list[TlbEntry]:
        """The valid entries, set by set, most recently used first."""
        n = self.entries
        buf = ffi.new("struct iotlb_entry_info[]", n)
        count = ffi.new("size_t *")
        lib.iotlb_entries(self.ptr, buf, n, count)
        return [TlbEntry(e.iova, e.paddr, e.size, e.prot, e.set, e.rank)
                for e in (buf[i] for i in range(count[0]))]

    def check(self) -> None:
        """Recheck every invariant; raises IovaCorrupted."""
        msg = ffi.new("char[]", 256)
        rc = lib.iotlb_check(self.ptr, msg, 256)
        if rc:
            raise _code_error(rc, report=ffi.string(msg).decode(), what="an IOTLB call")

    def __len__(self) -> int:
        return self.stats().valid_entries

    def __repr__(self) -> str:
        return "<Iotlb entries=%d ways=%d sets=%d valid=%d>" % (
            self.entries, self.ways, self.sets, len(self))


def fault_error(rc: int, iova: int, write: bool, device: str | None) -> errors.IovaError:
    """The exception for a faulting access (code rc): IommuFault, which says
    where (iova), how (write), what kind ("translation" or "permission")
    and, if given, which device."""
    exc: Any = _code_error(rc, who="" if device is None else "%s: " % device,
                      rw="write" if write else "read", iova=iova, what="an IOTLB access")
    if rc in (lib.IOVA_E_FAULT, lib.IOVA_E_PERM):
        exc.iova, exc.write, exc.device = iova, write, device
        exc.kind = "translation" if rc == lib.IOVA_E_FAULT else "permission"
    return exc


def access_many(tlb_ptr: Any, pt_ptr: Any, iovas: U64Batch, writes: bool | Iterable[bool] | None,
                op_base: int, dev_id: int) -> tuple[array.array[int], array.array[int]]:
    ci, keep, n = u64_buffer("iovas", iovas)
    if writes is None or isinstance(writes, bool):
        cw, wkeep = (ffi.NULL, None)
        if writes:
            wkeep = bytes([1]) * n
            cw = ffi.from_buffer("uint8_t[]", wkeep)
    else:
        wkeep = bytes(1 if w else 0 for w in writes)
        if len(wkeep) != n:
            raise errors.IovaValueError("writes has %d elements for %d iovas" % (len(wkeep), n))
        cw = ffi.from_buffer("uint8_t[]", wkeep)
    paddrs = array.array("Q", bytes(8 * n))
    status = array.array("i", bytes(4 * n))
    try:
        lib.iotlb_access_many(tlb_ptr, pt_ptr, ci, cw, n, op_base, dev_id,
                              ffi.from_buffer("uint64_t[]", paddrs),
                              ffi.from_buffer("int32_t[]", status))
    except (TypeError, OverflowError):
        raise bad_argument(op_base=op_base, dev_id=dev_id) from None
    return paddrs, status
