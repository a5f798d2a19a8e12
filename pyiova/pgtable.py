"""IoPgtable: the binding of the C page table (csrc/io_pgtable.c), LPAE-style
I/O page tables.

It checks nothing on the success path that C checks anyway: arguments go
straight to C, and only when C (or cffi's integer conversion) refuses them is
the call examined to name the offending value. That keeps one operation at
roughly one cffi crossing. The C core's codes become exceptions through
pyiova.error_codes.
"""
from __future__ import annotations

import array
from collections import namedtuple
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from . import errors
from ._args import bad_argument, check_u64, u64_buffer
from .error_codes import error as _code_error
from ._pyiova import ffi, lib
from ._words import loaded_words, save_words

if TYPE_CHECKING:
    from collections.abc import Iterator

    from typing_extensions import Self

    from ._args import U64Batch

__all__ = ["IoPgtable", "PgtableLeaf", "PgtableStats", "SZ_4K", "SZ_16K", "SZ_64K", "SZ_2M",
           "SZ_32M", "SZ_512M", "SZ_1G", "LPAE_4K_PGSIZES", "PROT_READ", "PROT_WRITE",
           "PROT_RW"]

SZ_4K = 1 << 12
SZ_16K = 1 << 14
SZ_64K = 1 << 16
SZ_2M = 1 << 21
SZ_32M = 1 << 25
SZ_512M = 1 << 29
SZ_1G = 1 << 30
LPAE_4K_PGSIZES = SZ_4K | SZ_2M | SZ_1G

_U64_MAX = (1 << 64) - 1
PROT_READ = lib.IO_PGTABLE_PROT_READ
PROT_WRITE = lib.IO_PGTABLE_PROT_WRITE
PROT_RW = PROT_READ | PROT_WRITE

# Bound once: an attribute lookup on `lib` costs about as much as a call.
_pt_map = lib.io_pgtable_map
_pt_unmap = lib.io_pgtable_unmap
_pt_iova_to_phys = lib.io_pgtable_iova_to_phys
_pt_lookup = lib.io_pgtable_lookup
_new = ffi.new

class PgtableLeaf(NamedTuple):
    """One leaf of a page table: [iova, iova+size) -> paddr with prot, at level."""
    iova: int
    paddr: int
    size: int
    prot: int
    level: int


def struct_fields(ctype: str) -> list[str]:
    """The field names of a C struct, for a namedtuple of its values."""
    return [name for name, _ in ffi.typeof(ctype).fields]


if TYPE_CHECKING:
    # The fields of struct io_pgtable_stats (csrc), which the namedtuple
    # takes at run time (tests/test_typing.py checks they agree).
    class PgtableStats(NamedTuple):
        mapped_bytes: int
        live_leaves: tuple[int, ...]
        live_tables: tuple[int, ...]
        tables_allocated: int
        tables_freed: int
        leaves_installed: int
        leaves_removed: int
        bytes_mapped_total: int
        bytes_unmapped_total: int
        block_splits: int
        map_calls: int
        unmap_calls: int
        map_failures: int
else:
    PgtableStats = namedtuple("PgtableStats", struct_fields("struct io_pgtable_stats"))


def struct_to_tuple(cls: Any, obj: Any) -> Any:
    """The namedtuple cls of a C struct's values (array fields as tuples)."""
    vals = []
    for name in cls._fields:
        v = getattr(obj, name)
        if not isinstance(v, int):  # an array field
            v = tuple(v)
        vals.append(v)
    return cls(*vals)


def _fmt(x: object) -> str:
    return "%#x" % x if isinstance(x, int) else repr(x)


def restore_native(data: Any, what: str, a_what: str, ctype: str,
                   restore: Callable[[Any, int, Any], int]) -> tuple[Any, int]:
    """restore(words, n, out) over save()'s bytes, the errors mapped:
    (the new C object, the saved words' fifth word)."""
    with loaded_words(data, what) as (words, n):
        out = ffi.new(ctype)
        rc = restore(words, n, out)
        if rc:
            raise _code_error(rc, what=what, where="restoring %s" % a_what)
        return out[0], words[4]


def save_error(code: int) -> errors.IovaError:
    """The exception for a save's negative return."""
    return _code_error(code, what="the structure", where="saving it")


class IoPgtable:
    """An LPAE-style I/O page table: iova -> physical address, with pages and
    blocks of the sizes in pgsize_bitmap.

    pgsize_bitmap  page sizes, one bit each (default 4K | 2M | 1G); must be
                   the granule and block sizes of consecutive levels above it
    ias, oas       input and output address sizes in bits (default 48, 48)
    granule        4096, 16384 or 65536 (default: the smallest page size)

    map() cuts a range into the largest pages the alignment allows, as
    iommu_map() does, all or nothing; unmap() walks as iommu_unmap() does,
    splitting blocks when needed, and returns the bytes unmapped (less than
    asked when it meets unmapped space). Tables that empty out are freed.
    """

    __slots__ = ("_p", "ptr", "granule", "ias", "oas", "pgsize_bitmap", "start_level",
                 "__weakref__")
    granule: int
    ias: int
    oas: int
    pgsize_bitmap: int
    start_level: int

    def __init__(self, pgsize_bitmap: int = LPAE_4K_PGSIZES, *, ias: int = 48, oas: int = 48,
                 granule: int | None = None) -> None:
        for name, value in (("pgsize_bitmap", pgsize_bitmap), ("ias", ias), ("oas", oas)):
            exc = check_u64(name, value)
            if exc is not None:
                raise exc
        if pgsize_bitmap == 0:
            raise errors.IovaValueError("pgsize_bitmap must name at least one page size")
        if granule is None:
            granule = pgsize_bitmap & -pgsize_bitmap
        exc = check_u64("granule", granule)
        if exc is not None:
            raise exc
        if granule not in (SZ_4K, SZ_16K, SZ_64K):
            raise errors.IovaValueError("granule %r must be 4K, 16K or 64K" % (granule,))
        out = ffi.new("io_pgtable **")
        rc = lib.io_pgtable_create(granule.bit_length() - 1, ias, oas, pgsize_bitmap, out) \
            if ias < 256 and oas < 256 else lib.IOVA_E_GEOMETRY
        if rc:
            raise _code_error(
                rc, where="creating a page table",
                what="page-table geometry: granule %s, ias %r, oas %r, pgsize_bitmap %s"
                     % (_fmt(granule), ias, oas, _fmt(pgsize_bitmap)),
                rules="ias must exceed the granule's bits and be <= %d, oas <= %d; the bitmap "
                      "must be the granule plus block sizes of consecutive levels above it, "
                      "e.g. 4K|2M|1G" % (lib.IO_PGTABLE_MAX_IAS, lib.IO_PGTABLE_MAX_OAS))
        self._adopt(out[0])

    def _adopt(self, p: Any) -> None:
        """Takes ownership of a C table and mirrors its geometry."""
        self._p = ffi.gc(p, lib.io_pgtable_destroy)
        self.ptr = p
        geo = ffi.new("uint32_t[4]")
        bitmap = ffi.new("uint64_t *")
        lib.io_pgtable_geometry(p, geo, geo + 1, geo + 2, bitmap, geo + 3)
        self.granule = 1 << geo[0]
        self.ias = geo[1]
        self.oas = geo[2]
        self.pgsize_bitmap = bitmap[0]
        self.start_level = geo[3]

    # -- saving, pickling, copying -------------------------------------------
    def save(self) -> bytes:
        """The whole table - geometry, leaves and counters - as bytes."""
        return save_words(lib.io_pgtable_save, self.ptr, save_error)

    @classmethod
    def restore(cls, data: bytes | bytearray | memoryview) -> Self:
        """A new table from save()'s bytes: it translates, counts and changes
        as the original would. IovaValueError if they are not a sound table."""
        p, _ = restore_native(data, "page table", "a page table", "io_pgtable **",
                              lib.io_pgtable_restore)
        self = cls.__new__(cls)
        self._adopt(p)
        return self

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (IoPgtable.restore, (self.save(),))

    def __deepcopy__(self, memo: Any) -> IoPgtable:
        return IoPgtable.restore(self.save())

    # -- errors -----------------------------------------------------------
    def _map_error(self, rc: int, iova: int, paddr: int, size: int,
                   prot: int) -> errors.IovaError:
        """The exception for io_pgtable_map's code rc: which value it names
        is worked out here, the class and the wording are error_codes'."""
        variant, name, value = "", "size", size
        if rc == lib.IOVA_E_ALIGN:
            if size == 0:
                variant = "zero"
            else:
                name, value = next((n, v) for n, v in (("iova", iova), ("paddr", paddr),
                                                       ("size", size)) if v % self.granule)
        elif rc == lib.IOVA_E_ADDR:
            variant = "in" if iova + size > 1 << self.ias else "out"
        held = ""
        if rc == lib.IOVA_E_EXISTS:
            first = next(self.leaves(iova), None)
            if first is not None:
                held = "; %#x+%#x is mapped to %#x" % (first.iova, first.size, first.paddr)
        return _code_error(rc, variant, name=name, value=value, granule=self.granule,
                           iova=iova, paddr=paddr, size=size, prot=prot,
                           prot_all=lib.IO_PGTABLE_PROT_ALL, ias=self.ias, oas=self.oas,
                           held=held, what="a page table call",
                           where="for a page table (nothing was mapped)")

    def _unmap_error(self, rc: int, iova: int, size: int, unmapped: int) -> errors.IovaError:
        """The exception for io_pgtable_unmap's code rc (.unmapped: the bytes
        unmapped before the failure, when it ran out of memory)."""
        variant, name, value = "in", "size", size
        if rc == lib.IOVA_E_ALIGN:
            variant = "zero" if size == 0 else ""
            name, value = ("iova", iova) if iova % self.granule else ("size", size)
        exc: Any = _code_error(rc, variant, name=name, value=value, granule=self.granule, iova=iova,
                          size=size, ias=self.ias, what="a page table call",
                          where="to split a block; %#x bytes were unmapped before it"
                                % unmapped)
        if rc == lib.IOVA_E_NOMEM:
            exc.unmapped = unmapped
        return exc

    # -- operations -------------------------------------------------------
    def map(self, iova: int, paddr: int, size: int, prot: int = PROT_RW) -> None:
        """Map [iova, iova+size) to [paddr, paddr+size) with prot (READ 1, WRITE 2...)."""
        try:
            rc = _pt_map(self.ptr, iova, paddr, size, prot)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, paddr=paddr, size=size, prot=prot) from None
        if rc:
            raise self._map_error(rc, iova, paddr, size, prot)

    def unmap(self, iova: int, size: int) -> int:
        """Unmap [iova, iova+size); returns the bytes unmapped, as iommu_unmap()."""
        out = _new("uint64_t *")
        try:
            rc = _pt_unmap(self.ptr, iova, size, out)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, size=size) from None
        if rc:
            raise self._unmap_error(rc, iova, size, out[0])
        return out[0]

    def iova_to_phys(self, iova: int) -> int | None:
        """The physical address iova translates to, or None."""
        out = _new("uint64_t *")
        try:
            rc = _pt_iova_to_phys(self.ptr, iova, out)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova) from None
        return out[0] if rc == 0 else None

    def lookup(self, iova: int) -> PgtableLeaf | None:
        """The PgtableLeaf translating iova, or None."""
        leaf = _new("struct io_pgtable_leaf *")
        try:
            rc = _pt_lookup(self.ptr, iova, leaf)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova) from None
        if rc:
            return None
        return PgtableLeaf(leaf.iova, leaf.paddr, leaf.size, leaf.prot, leaf.level)

    def leaves(self, start: int = 0) -> Iterator[PgtableLeaf]:
        """Iterate over the leaves in iova order, from the one containing start."""
        exc = check_u64("start", start)
        if exc is not None:
            raise exc
        buf = ffi.new("struct io_pgtable_leaf[]", 256)
        count = ffi.new("size_t *")
        while True:
            lib.io_pgtable_leaves(self.ptr, start, buf, 256, count)
            n = count[0]
            for i in range(n):
                x = buf[i]
                yield PgtableLeaf(x.iova, x.paddr, x.size, x.prot, x.level)
            if n < 256:
                return
            last = buf[n - 1]
            start = last.iova + last.size
            if start > _U64_MAX:
                return

    def map_many(self, iovas: U64Batch, paddrs: U64Batch, sizes: U64Batch,
                 prot: int = PROT_RW) -> int:
        """Map element by element in one C call. Stops at the first failure
        and raises its error, with .done = the elements mapped before it."""
        ci, ki, n = u64_buffer("iovas", iovas)
        cp, kp, n2 = u64_buffer("paddrs", paddrs)
        cs, ks, n3 = u64_buffer("sizes", sizes)
        if not n == n2 == n3:
            raise errors.IovaValueError("iovas, paddrs and sizes differ in length (%d, %d, %d)"
                                        % (n, n2, n3))
        done = ffi.new("size_t *")
        try:
            rc = lib.io_pgtable_map_many(self.ptr, ci, cp, cs, prot, n, done)
        except (TypeError, OverflowError):
            raise bad_argument(prot=prot) from None
        if rc:
            i = done[0]
            exc = self._map_error(rc, ci[i], cp[i], cs[i], prot)
            exc.done = i
            raise exc
        return n

    def unmap_many(self, iovas: U64Batch, sizes: U64Batch) -> array.array[int]:
        """Unmap element by element in one C call; returns array('Q') of the
        bytes each unmapped. Raises at the first bad element (.done, .unmapped
        tell how far it got)."""
        ci, ki, n = u64_buffer("iovas", iovas)
        cs, ks, n2 = u64_buffer("sizes", sizes)
        if n != n2:
            raise errors.IovaValueError("iovas and sizes differ in length (%d, %d)" % (n, n2))
        out = array.array("Q", bytes(8 * n))
        done = ffi.new("size_t *")
        rc = lib.io_pgtable_unmap_many(self.ptr, ci, cs, n, ffi.from_buffer("uint64_t[]", out),
                                       done)
        if rc:
            i = done[0]
            exc: Any = self._unmap_error(rc, ci[i], cs[i], out[i])
            exc.done = i
            exc.unmapped = out
            raise exc
        return out

    # -- state ------------------------------------------------------------
    def stats(self) -> PgtableStats:
        """A PgtableStats snapshot (live_leaves is a tuple indexed by level)."""
        st = ffi.new("struct io_pgtable_stats *")
        lib.io_pgtable_get_stats(self.ptr, st)
        return struct_to_tuple(PgtableStats, st)

    @property
    def mapped_bytes(self) -> int:
        st = ffi.new("struct io_pgtable_stats *")
        lib.io_pgtable_get_stats(self.ptr, st)
        return st.mapped_bytes

    def check(self) -> None:
        """Walk the whole table and recheck every invariant; raises IovaCorrupted."""
        msg = ffi.new("char[]", 256)
        rc = lib.io_pgtable_check(self.ptr, msg, 256)
        if rc:
            raise _code_error(rc, report=ffi.string(msg).decode(), what="a page table call")

    def __len__(self) -> int:
        return sum(self.stats().live_leaves)

    def __repr__(self) -> str:
        return "<IoPgtable granule=%#x ias=%d oas=%d pgsizes=%#x mapped=%#x>" % (
            self.granule, self.ias, self.oas, self.pgsize_bitmap, self.mapped_bytes)
