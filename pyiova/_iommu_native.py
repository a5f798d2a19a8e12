"""Thin wrappers over the C page table (csrc/io_pgtable.c) and IOTLB
(csrc/iotlb.c).

They check nothing on the success path that C checks anyway: arguments go
straight to C, and only when C (or cffi's integer conversion) refuses them is
the call examined to name the offending value. That keeps one operation at
roughly one cffi crossing.
"""
import array
import errno
from collections import namedtuple

from . import errors
from ._args import bad_argument, check_u64, u64_buffer  # noqa: F401 (re-exported)
from . import iommu_errors as ierr
from ._pyiova import ffi, lib
from ._words import loaded_words, save_words

__all__ = ["IoPgtable", "Iotlb", "PgtableLeaf", "TlbEntry", "Translation",
           "PgtableStats", "IotlbStats", "SZ_4K", "SZ_16K", "SZ_64K", "SZ_2M",
           "SZ_32M", "SZ_512M", "SZ_1G", "LPAE_4K_PGSIZES"]

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
_tlb_access = lib.iotlb_access
_tlb_inval_range = lib.iotlb_invalidate_range
_tlb_inval_all = lib.iotlb_invalidate_all
_new = ffi.new

PgtableLeaf = namedtuple("PgtableLeaf", "iova paddr size prot level")
PgtableLeaf.__doc__ = "One leaf of a page table: [iova, iova+size) -> paddr with prot, at level."

TlbEntry = namedtuple("TlbEntry", "iova paddr size prot set rank")
TlbEntry.__doc__ = "One IOTLB entry; rank 0 is the most recently used of its set."

Translation = namedtuple("Translation", "paddr hit stale flags")
Translation.__doc__ = ("Where a device access went: paddr, whether the IOTLB served it (hit), "
                       "whether that entry was stale, and the raw IOTLB_* flags.")


def _struct_fields(ctype):
    return [name for name, _ in ffi.typeof(ctype).fields]


PgtableStats = namedtuple("PgtableStats", _struct_fields("struct io_pgtable_stats"))
IotlbStats = namedtuple("IotlbStats", _struct_fields("struct iotlb_stats"))


def _struct_to_tuple(cls, obj):
    vals = []
    for name in cls._fields:
        v = getattr(obj, name)
        if not isinstance(v, int):  # an array field
            v = tuple(v)
        vals.append(v)
    return cls(*vals)


def _fmt(x):
    return "%#x" % x if isinstance(x, int) else repr(x)


def _restore_native(data, what, a_what, ctype, restore):
    """restore(words, n, out) over save()'s bytes, the errors mapped:
    (the new C object, the saved words' fifth word)."""
    with loaded_words(data, what) as (words, n):
        out = ffi.new(ctype)
        rc = restore(words, n, out)
        if rc == -errno.ENOMEM:
            raise ierr.IommuNoMemory("no memory to restore %s" % a_what)
        if rc:
            raise errors.IovaValueError("the saved %s is corrupt or inconsistent" % what)
        return out[0], words[4]


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

    def __init__(self, pgsize_bitmap=LPAE_4K_PGSIZES, *, ias=48, oas=48, granule=None):
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
            if ias < 256 and oas < 256 else -errno.EINVAL
        if rc == -errno.ENOMEM:
            raise ierr.IommuNoMemory("no memory for a page table")
        if rc:
            raise errors.IovaValueError(
                "bad page-table geometry: granule %s, ias %r, oas %r, pgsize_bitmap %s (ias "
                "must exceed the granule's bits and be <= %d, oas <= %d; the bitmap must be "
                "the granule plus block sizes of consecutive levels above it, e.g. 4K|2M|1G)"
                % (_fmt(granule), ias, oas, _fmt(pgsize_bitmap), lib.IO_PGTABLE_MAX_IAS,
                   lib.IO_PGTABLE_MAX_OAS))
        self._adopt(out[0])

    def _adopt(self, p):
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
    def save(self):
        """The whole table - geometry, leaves and counters - as bytes."""
        return save_words(lib.io_pgtable_save, self.ptr, _save_error)

    @classmethod
    def restore(cls, data):
        """A new table from save()'s bytes: it translates, counts and changes
        as the original would. IovaValueError if they are not a sound table."""
        p, _ = _restore_native(data, "page table", "a page table", "io_pgtable **",
                               lib.io_pgtable_restore)
        self = cls.__new__(cls)
        self._adopt(p)
        return self

    def __reduce__(self):
        return (IoPgtable.restore, (self.save(),))

    def __deepcopy__(self, memo):
        return IoPgtable.restore(self.save())

    # -- errors -----------------------------------------------------------
    def _map_error(self, rc, iova, paddr, size, prot):
        g = self.granule
        if rc == -errno.EINVAL:
            if size == 0:
                return ierr.IommuAlignmentError("size must not be 0")
            for name, v in (("iova", iova), ("paddr", paddr), ("size", size)):
                if v % g:
                    return ierr.IommuAlignmentError(
                        "%s %#x is not a multiple of the %#x-byte granule" % (name, v, g))
            return errors.IovaValueError(
                "prot %r must hold READ (1) or WRITE (2) and only bits of 0x%x"
                % (prot, lib.IO_PGTABLE_PROT_ALL))
        if rc == -errno.ERANGE:
            if iova + size > 1 << self.ias:
                return ierr.IommuRangeError(
                    "iova range %#x+%#x goes beyond the %d-bit input address size"
                    % (iova, size, self.ias))
            return ierr.IommuRangeError(
                "physical range %#x+%#x goes beyond the %d-bit output address size"
                % (paddr, size, self.oas))
        if rc == -errno.EEXIST:
            first = next(self.leaves(iova), None)
            where = ("" if first is None else
                     "; %#x+%#x is mapped to %#x" % (first.iova, first.size, first.paddr))
            return ierr.IommuMappingExists(
                "iova range %#x+%#x overlaps an existing mapping%s" % (iova, size, where))
        if rc == -errno.ENOMEM:
            return ierr.IommuNoMemory("no memory for a page table (nothing was mapped)")
        return errors.IovaError("io_pgtable_map failed with %d" % rc)

    def _unmap_error(self, rc, iova, size, unmapped):
        g = self.granule
        if rc == -errno.EINVAL:
            if size == 0:
                return ierr.IommuAlignmentError("size must not be 0")
            name, v = ("iova", iova) if iova % g else ("size", size)
            return ierr.IommuAlignmentError(
                "%s %#x is not a multiple of the %#x-byte granule" % (name, v, g))
        if rc == -errno.ERANGE:
            return ierr.IommuRangeError("iova range %#x+%#x goes beyond the %d-bit input "
                                        "address size" % (iova, size, self.ias))
        if rc == -errno.ENOMEM:
            exc = ierr.IommuNoMemory("no memory to split a block; %#x bytes were unmapped "
                                     "before it" % unmapped)
            exc.unmapped = unmapped
            return exc
        return errors.IovaError("io_pgtable_unmap failed with %d" % rc)

    # -- operations -------------------------------------------------------
    def map(self, iova, paddr, size, prot=PROT_RW):
        """Map [iova, iova+size) to [paddr, paddr+size) with prot (READ 1, WRITE 2...)."""
        try:
            rc = _pt_map(self.ptr, iova, paddr, size, prot)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, paddr=paddr, size=size, prot=prot) from None
        if rc:
            raise self._map_error(rc, iova, paddr, size, prot)

    def unmap(self, iova, size):
        """Unmap [iova, iova+size); returns the bytes unmapped, as iommu_unmap()."""
        out = _new("uint64_t *")
        try:
            rc = _pt_unmap(self.ptr, iova, size, out)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, size=size) from None
        if rc:
            raise self._unmap_error(rc, iova, size, out[0])
        return out[0]

    def iova_to_phys(self, iova):
        """The physical address iova translates to, or None."""
        out = _new("uint64_t *")
        try:
            rc = _pt_iova_to_phys(self.ptr, iova, out)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova) from None
        return out[0] if rc == 0 else None

    def lookup(self, iova):
        """The PgtableLeaf translating iova, or None."""
        leaf = _new("struct io_pgtable_leaf *")
        try:
            rc = _pt_lookup(self.ptr, iova, leaf)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova) from None
        if rc:
            return None
        return PgtableLeaf(leaf.iova, leaf.paddr, leaf.size, leaf.prot, leaf.level)

    def leaves(self, start=0):
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

    def map_many(self, iovas, paddrs, sizes, prot=PROT_RW):
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

    def unmap_many(self, iovas, sizes):
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
            exc = self._unmap_error(rc, ci[i], cs[i], out[i])
            exc.done = i
            exc.unmapped = out
            raise exc
        return out

    # -- state ------------------------------------------------------------
    def stats(self):
        """A PgtableStats snapshot (live_leaves is a tuple indexed by level)."""
        st = ffi.new("struct io_pgtable_stats *")
        lib.io_pgtable_get_stats(self.ptr, st)
        return _struct_to_tuple(PgtableStats, st)

    @property
    def mapped_bytes(self):
        st = ffi.new("struct io_pgtable_stats *")
        lib.io_pgtable_get_stats(self.ptr, st)
        return st.mapped_bytes

    def check(self):
        """Walk the whole table and recheck every invariant; raises IovaCorrupted."""
        inv = ffi.new("uint32_t *")
        if lib.io_pgtable_check(self.ptr, inv):
            raise errors.IovaCorrupted("io_pgtable invariant %d is broken (see csrc/io_pgtable.c)"
                                       % inv[0])

    def __len__(self):
        return sum(self.stats().live_leaves)

    def __repr__(self):
        return "<IoPgtable granule=%#x ias=%d oas=%d pgsizes=%#x mapped=%#x>" % (
            self.granule, self.ias, self.oas, self.pgsize_bitmap, self.mapped_bytes)


class Iotlb:
    """A model of an IOMMU's TLB: `entries` entries in sets of `ways`
    (0: fully associative), least recently used replaced first. Device
    accesses go through access(), which serves hits from the cache even when
    the page table has changed since, and records each such stale hit.

    record_limit caps the stale records kept (their count goes on).
    """

    __slots__ = ("_p", "ptr", "entries", "ways", "sets", "record_limit", "__weakref__")

    def __init__(self, entries=64, ways=0, *, record_limit=65536):
        for name, value in (("entries", entries), ("ways", ways),
                            ("record_limit", record_limit)):
            exc = check_u64(name, value)
            if exc is not None:
                raise exc
        out = ffi.new("iotlb **")
        ok = 0 < entries <= lib.IOTLB_MAX_ENTRIES and ways <= entries
        rc = lib.iotlb_create(entries, ways, record_limit, out) if ok else -errno.EINVAL
        if rc == -errno.ENOMEM:
            raise ierr.IommuNoMemory("no memory for an IOTLB of %d entries" % entries)
        if rc:
            raise errors.IovaValueError(
                "bad IOTLB geometry: %r entries in sets of %r ways (entries must be 1..%d and "
                "a multiple of ways; ways 0 means fully associative)"
                % (entries, ways, lib.IOTLB_MAX_ENTRIES))
        self._adopt(out[0], record_limit)

    def _adopt(self, p, record_limit):
        """Takes ownership of a C IOTLB and mirrors its geometry."""
        self._p = ffi.gc(p, lib.iotlb_destroy)
        self.ptr = p
        geo = ffi.new("uint32_t[3]")
        lib.iotlb_geometry(p, geo, geo + 1, geo + 2)
        self.entries, self.ways, self.sets = geo[0], geo[1], geo[2]
        self.record_limit = record_limit

    # -- saving, pickling, copying -------------------------------------------
    def save(self):
        """The whole IOTLB - entries in recency order, stale records and
        counters - as bytes."""
        return save_words(lib.iotlb_save, self.ptr, _save_error)

    @classmethod
    def restore(cls, data):
        """A new IOTLB from save()'s bytes: it hits, misses, evicts and
        records as the original would. IovaValueError if they are not a
        sound IOTLB."""
        p, record_limit = _restore_native(data, "IOTLB", "an IOTLB", "iotlb **",
                                          lib.iotlb_restore)
        self = cls.__new__(cls)
        self._adopt(p, record_limit)
        return self

    def __reduce__(self):
        return (Iotlb.restore, (self.save(),))

    def __deepcopy__(self, memo):
        return Iotlb.restore(self.save())

    def access(self, pgtable, iova, write=False, *, op_index=0, dev_id=0):
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

    def access_many(self, pgtable, iovas, writes=None, *, op_base=0, dev_id=0):
        """Many accesses in one C call; faults do not stop it. Returns
        (paddrs array('Q'), status array('i')): status is the access's
        IOTLB_* flags, or -EFAULT / -EACCES for a fault."""
        if not isinstance(pgtable, IoPgtable):
            raise errors.IovaTypeError("pgtable must be an IoPgtable, not %s"
                                       % type(pgtable).__name__)
        return access_many(self.ptr, pgtable.ptr, iovas, writes, op_base, dev_id)

    def invalidate_range(self, iova, size):
        """Drop every entry meeting [iova, iova+size); returns how many."""
        out = _new("uint64_t *")
        try:
            rc = _tlb_inval_range(self.ptr, iova, size, out)
        except (TypeError, OverflowError):
            raise bad_argument(iova=iova, size=size) from None
        if rc:
            raise ierr.IommuAlignmentError("size must not be 0")
        return out[0]

    def invalidate_all(self):
        """Drop every entry; returns how many."""
        out = _new("uint64_t *")
        _tlb_inval_all(self.ptr, out)
        return out[0]

    def stats(self):
        st = ffi.new("struct iotlb_stats *")
        lib.iotlb_get_stats(self.ptr, st)
        return _struct_to_tuple(IotlbStats, st)

    def stale_records(self, start=0, limit=None):
        """The stored stale records from number start on, as cdata-free
        tuples (iova, stale_paddr, current_paddr or None, op_index, dev_id,
        write)."""
        out = []
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

    def clear_records(self):
        lib.iotlb_clear_records(self.ptr)

    def dump(self):
        """The valid entries, set by set, most recently used first."""
        n = self.entries
        buf = ffi.new("struct iotlb_entry_info[]", n)
        count = ffi.new("size_t *")
        lib.iotlb_entries(self.ptr, buf, n, count)
        return [TlbEntry(e.iova, e.paddr, e.size, e.prot, e.set, e.rank)
                for e in (buf[i] for i in range(count[0]))]

    def check(self):
        """Recheck every invariant; raises IovaCorrupted."""
        inv = ffi.new("uint32_t *")
        if lib.iotlb_check(self.ptr, inv):
            raise errors.IovaCorrupted("iotlb invariant %d is broken (see csrc/iotlb.c)"
                                       % inv[0])

    def __len__(self):
        return self.stats().valid_entries

    def __repr__(self):
        return "<Iotlb entries=%d ways=%d sets=%d valid=%d>" % (
            self.entries, self.ways, self.sets, len(self))


def _save_error(rc):
    return errors.IovaError("saving failed with %d" % rc)


def fault_error(rc, iova, write, device):
    who = "" if device is None else "%s: " % device
    rw = "write" if write else "read"
    if rc == -errno.EFAULT:
        return ierr.IommuFault("%stranslation fault on %s of iova %#x: nothing maps it"
                               % (who, rw, iova), iova=iova, write=write, kind="translation",
                               device=device)
    if rc == -errno.EACCES:
        return ierr.IommuFault("%spermission fault on %s of iova %#x" % (who, rw, iova),
                               iova=iova, write=write, kind="permission", device=device)
    return errors.IovaError("iotlb_access failed with %d" % rc)


def access_many(tlb_ptr, pt_ptr, iovas, writes, op_base, dev_id):
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
