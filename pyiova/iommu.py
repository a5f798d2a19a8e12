"""IOMMU domains, their attributes and the driver interface.

The kernel splits this layer in two and so does pyiova:

* the core (drivers/iommu/iommu.c): IommuDomain. It checks arguments against
  the domain's type and geometry, cuts unmaps into unmap + iotlb_sync the way
  iommu_unmap() does, keeps the counters, and calls the driver for
  everything that touches hardware;
* the driver (struct iommu_ops): any object with the IommuOps methods. The
  model drivers live in pyiova.drivers and share the plumbing of
  pyiova.drivers.base.IommuDriver.

The hardware a driver programs is modelled in C: an IoPgtable per domain
(the context's page table) and an Iotlb per domain (the context's TLB
entries), so a device access (Device.dma_access) is served by whatever the
IOTLB still holds. Whether a driver's invalidation policy is safe is then an
observable: every stale IOTLB hit is recorded (stale_translations()).
"""
from __future__ import annotations

import array
import enum
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

from . import _state
from . import errors
from . import iommu_errors as ierr
from ._args import bad_argument, u64_buffer
from .iotlb import Iotlb, access_many, fault_error
from .pgtable import IoPgtable
from ._pyiova import ffi, lib
from .allocators import AllocatorType
from .device import Device, device_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from typing_extensions import Self

    from ._args import U64Batch
    from .cookie import DmaCookie
    from .pgtable import PgtableLeaf

__all__ = ["DomainType", "DomainAttr", "IovaAllocator", "Prot", "DomainGeometry",
           "IotlbGather", "IommuOps", "IommuDomain", "DomainCounters", "StaleTranslation"]

_U64_MAX = (1 << 64) - 1
_iotlb_access = lib.iotlb_access
_new = ffi.new


class DomainType(enum.IntEnum):
    """Domain types, with the kernel's flag values (bit 0: paging, bit 1: DMA
    API, bit 2: pass-through)."""
    UNMANAGED = 1  # caller-managed page table (VFIO, GPU drivers)
    DMA = 3        # page table managed by the DMA API (dma-iommu)
    IDENTITY = 4   # no translation: iova == physical address

    @property
    def paging(self) -> bool:
        return bool(self & 1)


class DomainAttr(enum.Enum):
    """Domain attributes (the kernel's enum iommu_attr, plus the allocator
    choice the 2017 review asked for instead of a geometry flag)."""
    GEOMETRY = "geometry"                      # read-only: DomainGeometry
    PAGING = "paging"                          # read-only: bool
    DMA_USE_FLUSH_QUEUE = "dma_use_flush_queue"  # bool, DMA domains
    IOVA_ALLOCATOR = "iova_allocator"          # AllocatorType


# Which IOVA allocator the domain's cookie should use: the allocator types
# themselves, under the name the IOVA_ALLOCATOR attribute's values have always
# had (an alias, for code that imports it). Only the choice is stored here;
# the cookie layer reads it.
IovaAllocator = AllocatorType


class Prot(enum.IntFlag):
    """Mapping rights, the kernel's IOMMU_* prot bits."""
    READ = 1
    WRITE = 2
    CACHE = 4
    NOEXEC = 8
    MMIO = 16
    PRIV = 32


_RW = int(Prot.READ | Prot.WRITE)


@dataclass(frozen=True)
class DomainGeometry:
    """struct iommu_domain_geometry: the input addresses the domain can
    translate; force_aperture means DMA is only allowed inside it."""
    aperture_start: int = 0
    aperture_end: int = 0
    force_aperture: bool = False

    def __setstate__(self, state: Any) -> None:
        _state.check_fields("a domain geometry", state, {
            "aperture_start": int, "aperture_end": int, "force_aperture": bool})
        for name in ("aperture_start", "aperture_end"):
            _state.check_int("the geometry's %s" % name, state[name], 0, _U64_MAX)
        if state["aperture_start"] > state["aperture_end"]:
            raise _state.fail("a domain geometry", "ends below its start")
        for name, value in state.items():
            object.__setattr__(self, name, value)


class StaleTranslation(NamedTuple):
    """A device access served by an IOTLB entry that no longer matched the
    page table."""
    iova: int
    stale_paddr: int            # where the access went
    current_paddr: Optional[int]  # where the table maps iova now (None: unmapped)
    op_index: int               # the domain's operation counter at the access
    write: bool
    device: Optional[str]       # the device's name

    @property
    def kind(self) -> str:
        """"unmapped" (DMA into a freed buffer) or "remapped" (into someone
        else's buffer)."""
        return "unmapped" if self.current_paddr is None else "remapped"


@dataclass(frozen=True)
class DomainCounters:
    """A snapshot of a domain's counters."""
    maps: int = 0                 # successful map calls
    unmaps: int = 0               # unmap calls (iommu_unmap and unmap_fast)
    short_unmaps: int = 0         # unmaps that met unmapped space
    pages_mapped: int = 0         # page-table leaves written (pages and blocks)
    bytes_mapped: int = 0
    pages_unmapped: int = 0       # leaves cleared
    bytes_unmapped: int = 0
    mapped_bytes: int = 0         # live
    syncs: int = 0                # iotlb_sync calls that invalidated something
    syncs_skipped: int = 0        # iotlb_sync calls the driver deliberately skipped
    range_invalidations: int = 0  # ranged IOTLB invalidations that took effect
    full_flushes: int = 0         # whole-context invalidations issued
    invalidations_lost: int = 0   # invalidations an erratum swallowed
    idle_flushes: int = 0         # flushes issued because nothing was left mapped
    resets: int = 0               # domain_reset calls
    accesses: int = 0             # device accesses through the IOTLB
    iotlb_hits: int = 0
    iotlb_misses: int = 0
    stale_hits: int = 0
    stale_unmapped: int = 0
    stale_remapped: int = 0
    faults: int = 0
    passthrough_accesses: int = 0  # accesses in identity domains
    tables_allocated: int = 0
    tables_freed: int = 0
    tables_live: int = 0
    block_splits: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Counts:
    """The counters kept in Python (the C structures keep the rest)."""
    __slots__ = ("maps", "unmaps", "short_unmaps", "syncs", "syncs_skipped", "full_flushes",
                 "invalidations_lost", "idle_flushes", "resets", "passthrough_accesses")
    maps: int
    unmaps: int
    short_unmaps: int
    syncs: int
    syncs_skipped: int
    full_flushes: int
    invalidations_lost: int
    idle_flushes: int
    resets: int
    passthrough_accesses: int

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def __getstate__(self) -> dict[str, Any]:
        return _state.slot_state(self)

    def __setstate__(self, state: Any) -> None:
        state = _state.old_slot_state(state)
        _state.check_fields("the domain counters", state, dict.fromkeys(self.__slots__, int))
        for name, value in state.items():
            _state.check_int("the domain counter %s" % name, value, 0)
        _state.set_fields(self, state)


class IotlbGather:
    """struct iommu_iotlb_gather: the range an unmap left to invalidate.

    start/end are inclusive; an empty gather has start = 2**64-1, end = 0.
    """
    __slots__ = ("start", "end", "pgsize", "queued")

    def __init__(self) -> None:
        self.start = _U64_MAX
        self.end = 0
        self.pgsize = 0
        self.queued = False

    def reset(self) -> None:
        self.start = _U64_MAX
        self.end = 0
        self.pgsize = 0

    @property
    def empty(self) -> bool:
        return self.end == 0 and self.start == _U64_MAX

    def add_range(self, iova: int, size: int) -> None:
        """Grow the range to cover [iova, iova+size)."""
        end = iova + size - 1
        if iova < self.start:
            self.start = iova
        if end > self.end:
            self.end = end

    def is_disjoint(self, iova: int, size: int) -> bool:
        """Whether [iova, iova+size) neither overlaps nor touches the range
        (the kernel then syncs the old range before gathering the new one)."""
        if self.empty:
            return False
        return iova + size < self.start or iova > self.end + 1

    def __repr__(self) -> str:
        if self.empty:
            return "<IotlbGather empty>"
        return "<IotlbGather %#x..%#x>" % (self.start, self.end)


@runtime_checkable
class IommuOps(Protocol):
    """The driver interface (struct iommu_ops + iommu_domain_ops).

    The core calls these; users call IommuDomain's methods instead.
    """

    name: str

    def domain_alloc(self, type: DomainType) -> IommuDomain:
        """A new domain of that type (IommuDomainTypeError if unsupported)."""

    def domain_free(self, domain: IommuDomain) -> None:
        """Release the domain's hardware resources."""

    def attach_dev(self, domain: IommuDomain, dev: Device) -> None:
        """Make dev translate through domain (IommuAttachError if it cannot)."""

    def detach_dev(self, domain: IommuDomain, dev: Device) -> None:
        """Stop dev translating through domain."""

    def map(self, domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> None:
        """Write the page-table entries for the range."""

    def unmap(self, domain: IommuDomain, iova: int, size: int, gather: IotlbGather) -> int:
        """Clear the entries; record what needs invalidating in gather;
        return the bytes unmapped."""

    def iotlb_sync(self, domain: IommuDomain, gather: IotlbGather) -> None:
        """Invalidate what gather describes, and wait for it."""

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        """Invalidate every TLB entry of the domain."""

    def iova_to_phys(self, domain: IommuDomain, iova: int) -> Optional[int]:
        """Walk the page table (None if unmapped)."""

    def domain_get_attr(self, domain: IommuDomain, attr: DomainAttr) -> Any:
        """Read a driver-handled attribute."""

    def domain_set_attr(self, domain: IommuDomain, attr: DomainAttr, value: Any) -> None:
        """Set a driver-handled attribute."""

    def domain_reset(self, domain: IommuDomain) -> None:
        """The hook the rejected 2017 reset-when-empty patch added: forget
        every cached translation because the IOVA space starts over."""


def _attr_key(attr: DomainAttr | str) -> DomainAttr:
    if isinstance(attr, DomainAttr):
        return attr
    if isinstance(attr, str):
        try:
            return DomainAttr(attr.lower())
        except ValueError:
            pass
        try:
            return DomainAttr[attr.upper()]
        except KeyError:
            pass
    raise ierr.IommuUnknownAttr("unknown domain attribute %r (known: %s)"
                                % (attr, ", ".join(a.name for a in DomainAttr)))


def _domain_type(type: DomainType | str | int) -> DomainType:
    if isinstance(type, DomainType):
        return type
    if isinstance(type, str):
        try:
            return DomainType[type.upper()]
        except KeyError:
            pass
    elif isinstance(type, int) and not isinstance(type, bool):
        try:
            return DomainType(type)
        except ValueError:
            pass
    raise ierr.IommuDomainTypeError("unknown domain type %r (known: %s)"
                                    % (type, ", ".join(t.name for t in DomainType)))


class IommuDomain:
    """An IOMMU domain (struct iommu_domain). Drivers create them
    (driver.domain_alloc(type)); users map, unmap and attach devices here.

    Attributes: type, ops (the driver), pgsize_bitmap, geometry, devices,
    pgtable / iotlb (the modelled hardware, None for identity domains and
    for IPMMU domains before their first attach).

    Threads: the page table and IOTLB lock themselves in C, so concurrent
    calls never corrupt them; the Python-side counters and operation clock
    of one domain are exact only when one thread at a time drives it.
    """

    __slots__ = ("ops", "type", "pgsize_bitmap", "name", "priv", "iova_cookie", "pgtable", "iotlb",
                 "_geometry", "_attrs", "_devices", "_op", "_pc", "_ptp", "_tlbp",
                 "_mappable", "_closed", "_ap_lo", "_ap_end", "_saved_names", "__weakref__")

    _serial = 0
    ops: IommuOps
    type: DomainType
    pgsize_bitmap: int
    name: str
    priv: Any
    iova_cookie: DmaCookie | None
    pgtable: IoPgtable | None
    iotlb: Iotlb | None
    _geometry: DomainGeometry
    _saved_names: tuple[int, int, dict[int, str | None]] | None

    def __init__(self, ops: IommuOps, type: DomainType | str | int, pgsize_bitmap: int, *,
                 geometry: DomainGeometry | None = None, name: str | None = None) -> None:
        dtype = _domain_type(type)
        IommuDomain._serial += 1
        self.ops = ops
        self.type = dtype
        self.pgsize_bitmap = pgsize_bitmap if dtype.paging else 0
        self.name = name or "%s-%s-%d" % (getattr(ops, "name", "iommu"), dtype.name.lower(),
                                          IommuDomain._serial)
        self.priv = None
        self.iova_cookie = None     # the dma-iommu cookie (pyiova.cookie), as in the kernel
        self.pgtable = None
        self.iotlb = None
        self._ptp = None
        self._tlbp = None
        self._geometry = None  # type: ignore[assignment]  # (set_geometry checks the argument)
        self.set_geometry(geometry or DomainGeometry())
        self._attrs: dict[DomainAttr, Any] = {}
        if dtype.paging:
            self._attrs[DomainAttr.IOVA_ALLOCATOR] = AllocatorType.IOVA
        if dtype is DomainType.DMA:
            self._attrs[DomainAttr.DMA_USE_FLUSH_QUEUE] = False
        self._devices: list[Device] = []
        self._op = 0
        self._pc = _Counts()
        self._mappable = dtype.paging
        self._closed = False
        self._saved_names = None

    # -- for drivers ---------------------------------------------------------
    def set_hardware(self, pgtable: IoPgtable, iotlb: Iotlb) -> None:
        """Give the domain its page table and IOTLB (drivers only)."""
        if not isinstance(pgtable, IoPgtable) or not isinstance(iotlb, Iotlb):
            raise errors.IovaTypeError("set_hardware takes an IoPgtable and an Iotlb")
        self.pgtable = pgtable
        self.iotlb = iotlb
        self._ptp = pgtable.ptr
        self._tlbp = iotlb.ptr

    def set_geometry(self, geometry: DomainGeometry) -> None:
        """Set the domain's geometry (drivers only: users read it)."""
        if not isinstance(geometry, DomainGeometry):
            raise errors.IovaTypeError("geometry must be a DomainGeometry")
        self._geometry = geometry
        # The bounds map/unmap test against: [start, end] when forced, else
        # nothing the page table would not refuse anyway.
        if geometry.force_aperture:
            self._ap_lo, self._ap_end = geometry.aperture_start, geometry.aperture_end + 1
        else:
            self._ap_lo, self._ap_end = 0, 1 << 66

    @property
    def counts(self) -> _Counts:
        """The Python-side counters, for drivers to bump."""
        return self._pc

    @property
    def attrs(self) -> dict[DomainAttr, Any]:
        """The stored attribute values, for drivers (users: get_attr)."""
        return self._attrs

    # -- state ---------------------------------------------------------------
    @property
    def geometry(self) -> DomainGeometry:
        return self._geometry

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(self._devices)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def op_count(self) -> int:
        """Operations so far (maps, unmaps, syncs, flushes, accesses): the
        clock stale records are stamped with."""
        return self._op

    @property
    def iova_allocator(self) -> AllocatorType | None:
        """The IOVA_ALLOCATOR attribute (None for identity domains)."""
        return self._attrs.get(DomainAttr.IOVA_ALLOCATOR)

    def _live(self) -> None:
        if self._closed:
            raise errors.IovaClosed("domain %s was freed" % self.name)

    def _not_mappable(self, what: str) -> errors.IovaError:
        self._live()
        return ierr.IommuDomainTypeError("cannot %s in %s: a %s domain has no page table"
                                         % (what, self.name, self.type.name))

    def _outside(self, iova: int, size: int) -> errors.IovaError:
        geo = self._geometry
        return ierr.IommuRangeError("iova range %#x+%#x is outside the aperture [%#x, %#x] of %s"
                                    % (iova, size, geo.aperture_start, geo.aperture_end,
                                       self.name))

    # -- the core's operations (drivers/iommu/iommu.c) -------------------------
    def map(self, iova: int, paddr: int, size: int, prot: int = _RW) -> None:
        """iommu_map(): map [iova, iova+size) to paddr with prot (Prot bits).

        The range is cut into the largest pages the alignment of iova and
        paddr allows. All or nothing: an overlap with an existing mapping is
        refused (IommuMappingExists) before anything changes."""
        if not self._mappable:
            raise self._not_mappable("map")
        try:
            if iova < self._ap_lo or iova + size > self._ap_end:
                raise self._outside(iova, size)
        except TypeError:
            raise bad_argument(iova=iova, paddr=paddr, size=size) from None
        self.ops.map(self, iova, paddr, size, prot)
        # counted once it is done: a refused map changes nothing
        self._op += 1
        self._pc.maps += 1

    def unmap(self, iova: int, size: int) -> int:
        """iommu_unmap(): unmap, then iotlb_sync. Returns the bytes unmapped,
        which is less than size when the walk met unmapped space (0 if
        nothing at iova was mapped)."""
        gather = IotlbGather()
        unmapped = self.unmap_fast(iova, size, gather)
        self.ops.iotlb_sync(self, gather)
        return unmapped

    def unmap_fast(self, iova: int, size: int, gather: IotlbGather) -> int:
        """iommu_unmap_fast(): unmap, gathering what to invalidate, without
        syncing. The caller syncs later (iotlb_sync) or relies on a flush."""
        if not self._mappable:
            raise self._not_mappable("unmap")
        if not isinstance(gather, IotlbGather):
            raise errors.IovaTypeError("gather must be an IotlbGather")
        try:
            if iova < self._ap_lo or iova + size > self._ap_end:
                raise self._outside(iova, size)
        except TypeError:
            raise bad_argument(iova=iova, size=size) from None
        unmapped = self.ops.unmap(self, iova, size, gather)
        self._op += 1
        self._pc.unmaps += 1
        if unmapped != size:
            self._pc.short_unmaps += 1
        return unmapped

    def iotlb_sync(self, gather: IotlbGather) -> None:
        """iommu_iotlb_sync(): have the driver invalidate the gathered range,
        then empty the gather."""
        self._live()
        if not isinstance(gather, IotlbGather):
            raise errors.IovaTypeError("gather must be an IotlbGather")
        self._op += 1
        self.ops.iotlb_sync(self, gather)
        gather.reset()

    def flush_iotlb_all(self) -> None:
        """iommu_flush_iotlb_all(): invalidate every IOTLB entry of the domain."""
        self._live()
        self._op += 1
        self.ops.flush_iotlb_all(self)

    def reset(self) -> None:
        """Call the driver's domain_reset (the 2017 reset-when-empty hook)."""
        self._live()
        self._op += 1
        self._pc.resets += 1
        self.ops.domain_reset(self)

    def iova_to_phys(self, iova: int) -> int | None:
        """iommu_iova_to_phys(): the physical address iova maps to, or None
        (identity domains: iova itself)."""
        self._live()
        if not self.type.paging:
            exc = bad_argument(iova=iova) if not isinstance(iova, int) else None
            if exc is not None:
                raise exc
            return iova
        return self.ops.iova_to_phys(self, iova)

    def map_many(self, iovas: Iterable[int], paddrs: Iterable[int], sizes: Iterable[int],
                 prot: int = _RW) -> int:
        """map() for each element, in order; stops at the first failure and
        raises it (its .done tells how many were mapped). Returns the count."""
        iova_list, paddr_list, size_list = list(iovas), list(paddrs), list(sizes)
        if not len(iova_list) == len(paddr_list) == len(size_list):
            raise errors.IovaValueError("iovas, paddrs and sizes differ in length (%d, %d, %d)"
                                        % (len(iova_list), len(paddr_list), len(size_list)))
        n = 0
        try:
            for iova, paddr, size in zip(iova_list, paddr_list, size_list):
                self.map(iova, paddr, size, prot)
                n += 1
        except errors.IovaError as exc:
            exc.done = n
            raise
        return n

    def unmap_many(self, iovas: Iterable[int], sizes: Iterable[int]) -> list[int]:
        """unmap() (with its sync) for each element; returns the list of
        bytes each unmapped."""
        iova_list, size_list = list(iovas), list(sizes)
        if len(iova_list) != len(size_list):
            raise errors.IovaValueError("iovas and sizes differ in length (%d, %d)"
                                        % (len(iova_list), len(size_list)))
        unmap = self.unmap
        return [unmap(iova, size) for iova, size in zip(iova_list, size_list)]

    # -- attributes ----------------------------------------------------------
    def get_attr(self, attr: DomainAttr | str) -> Any:
        """iommu_domain_get_attr(): GEOMETRY and PAGING are answered by the
        core, the rest by the driver."""
        self._live()
        key = _attr_key(attr)
        if key is DomainAttr.GEOMETRY:
            return self._geometry
        if key is DomainAttr.PAGING:
            return self.pgsize_bitmap != 0
        return self.ops.domain_get_attr(self, key)

    def set_attr(self, attr: DomainAttr | str, value: Any) -> None:
        """iommu_domain_set_attr(): the driver decides (GEOMETRY and PAGING
        are read-only)."""
        self._live()
        key = _attr_key(attr)
        if key in (DomainAttr.GEOMETRY, DomainAttr.PAGING):
            raise ierr.IommuReadOnlyAttr("domain attribute %s is read-only" % key.name)
        self.ops.domain_set_attr(self, key, value)

    # -- devices -------------------------------------------------------------
    def attach_device(self, dev: Device) -> None:
        """iommu_attach_device(): the driver may refuse (IommuAttachError,
        IommuBusy). A device is in at most one domain at a time."""
        self._live()
        if not isinstance(dev, Device):
            raise errors.IovaTypeError("attach_device takes a Device, not %s"
                                       % type(dev).__name__)
        cur = dev._domain
        if cur is self:
            return
        if cur is not None:
            raise ierr.IommuBusy("%s is attached to %s; detach it first" % (dev.name, cur.name))
        self.ops.attach_dev(self, dev)
        dev._domain = self
        self._devices.append(dev)

    def detach_device(self, dev: Device) -> None:
        """iommu_detach_device()."""
        self._live()
        if not isinstance(dev, Device) or dev._domain is not self:
            raise errors.IovaValueError("%r is not attached to %s" % (dev, self.name))
        self.ops.detach_dev(self, dev)
        dev._domain = None
        self._devices.remove(dev)

    def free(self) -> None:
        """iommu_domain_free(). Devices must be detached first (IommuBusy)."""
        if self._closed:
            return
        if self._devices:
            raise ierr.IommuBusy("%s still has devices attached: %s"
                                 % (self.name, ", ".join(d.name for d in self._devices)))
        self.ops.domain_free(self)
        self._closed = True
        self._mappable = False
        self.pgtable = self.iotlb = self._ptp = self._tlbp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for dev in list(self._devices):
            self.detach_device(dev)
        self.free()

    # -- device accesses (called by Device) -------------------------------------
    def _dma_access(self, iova: int, write: bool, dev: Device) -> int:
        self._live()
        self._op += 1
        tlb = self._tlbp
        if tlb is None:
            if self.type.paging:
                raise ierr.IommuNotReady("%s has no page table yet" % self.name)
            self._pc.passthrough_accesses += 1
            return iova
        res = _new("struct iotlb_result *")
        rc = _iotlb_access(tlb, self._ptp, iova, 1 if write else 0, self._op, dev.id, res)
        if rc:
            raise fault_error(rc, iova, bool(write), dev.name)
        return res.paddr

    def _dma_access_many(self, iovas: U64Batch, write: bool | Iterable[bool],
                         dev: Device) -> tuple[array.array[int], array.array[int]]:
        self._live()
        _, vals, n = u64_buffer("iovas", iovas)
        if n and max(vals) > dev.dma_mask:
            bad = next(v for v in vals if v > dev.dma_mask)
            raise ierr.IommuRangeError("%s cannot address iova %#x: above its DMA mask %#x"
                                       % (dev.name, bad, dev.dma_mask))
        if self._tlbp is None:
            if self.type.paging:
                raise ierr.IommuNotReady("%s has no page table yet" % self.name)
            self._op += n
            self._pc.passthrough_accesses += n
            return array.array("Q", vals), array.array("i", bytes(4 * n))
        result = access_many(self._tlbp, self._ptp, vals, write, self._op + 1, dev.id)
        self._op += n
        return result

    # -- observation ---------------------------------------------------------
    def counters(self) -> DomainCounters:
        """A DomainCounters snapshot."""
        pc = self._pc
        kw = {name: getattr(pc, name) for name in _Counts.__slots__}
        if self.pgtable is not None:
            s = self.pgtable.stats()
            kw.update(pages_mapped=s.leaves_installed, bytes_mapped=s.bytes_mapped_total,
                      pages_unmapped=s.leaves_removed, bytes_unmapped=s.bytes_unmapped_total,
                      mapped_bytes=s.mapped_bytes, tables_allocated=s.tables_allocated,
                      tables_freed=s.tables_freed, tables_live=s.live_tables,
                      block_splits=s.block_splits)
        if self.iotlb is not None:
            t = self.iotlb.stats()
            kw.update(accesses=t.accesses, iotlb_hits=t.hits, iotlb_misses=t.misses,
                      stale_hits=t.stale_hits, stale_unmapped=t.stale_unmapped,
                      stale_remapped=t.stale_remapped,
                      faults=t.translation_faults + t.permission_faults,
                      range_invalidations=t.range_invalidations)
        return DomainCounters(**kw)

    def stale_translations(self, start: int = 0,
                           limit: int | None = None) -> list[StaleTranslation]:
        """The recorded stale translations (StaleTranslation), oldest first."""
        self._live()
        if self.iotlb is None:
            return []
        name = self._record_namer()
        return [StaleTranslation(iova, stale, cur, op, write, name(i, dev_id))
                for i, (iova, stale, cur, op, dev_id, write)
                in enumerate(self.iotlb.stale_records(start, limit), start)]

    def _record_namer(self) -> Callable[[int, int], str | None]:
        """name(record index, dev_id): the device a stale record names.
        Records made before this domain was restored from a checkpoint carry
        the numbers of the devices of that time, which may mean nothing (or
        another device) in this process: their names travelled with the
        checkpoint, and serve until the records are cleared."""
        saved = self._saved_names
        if saved is None or self.iotlb is None:
            return lambda i, dev_id: device_name(dev_id)
        cleared_then, count, names = saved
        if _records_cleared(self.iotlb) != cleared_then:
            return lambda i, dev_id: device_name(dev_id)
        return lambda i, dev_id: names.get(dev_id) if i < count else device_name(dev_id)

    # -- pickling and deepcopy (checkpoints) -----------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Everything but the raw pointers; the page table and IOTLB pickle
        themselves (pyiova.checkpoint). A freed domain has nothing to save."""
        if self._closed:
            raise errors.IovaClosed("domain %s was freed: it cannot be saved" % self.name)
        state = {name: getattr(self, name) for name in self.__slots__
                 if name not in ("_ptp", "_tlbp", "_saved_names", "__weakref__")}
        if self.iotlb is not None:
            name = self._record_namer()
            records = self.iotlb.stale_records()
            state["_saved_names"] = (len(records),
                                     {r[4]: name(i, r[4]) for i, r in enumerate(records)})
        return state

    def __setstate__(self, state: Any) -> None:
        _check_domain_state(state)
        state = dict(state)
        saved = state.pop("_saved_names", None)
        for name, value in state.items():
            setattr(self, name, value)
        self.set_geometry(self._geometry)          # the aperture bounds, from the geometry
        self._ptp = self.pgtable.ptr if self.pgtable is not None else None
        self._tlbp = self.iotlb.ptr if self.iotlb is not None else None
        # the restored IOTLB starts with the cleared count the original had
        self._saved_names = None if saved is None or self.iotlb is None else \
            (_records_cleared(self.iotlb), saved[0], saved[1])

    def _check_restored(self) -> None:
        """After a checkpoint is loaded: the domain and its devices and
        cookie name each other."""
        for dev in self._devices:
            if dev._domain is not self:
                raise _state.fail("domain %s" % self.name,
                                  "lists device %s, which is not attached to it" % dev.name)
        cookie = self.iova_cookie
        if cookie is not None and cookie.domain is not self:
            raise _state.fail("domain %s" % self.name, "holds a cookie of another domain")

    def mappings(self, start: int = 0) -> Iterator[PgtableLeaf]:
        """Iterate over the page-table leaves (PgtableLeaf) from start on."""
        self._live()
        if self.pgtable is None:
            return iter(())
        return self.pgtable.leaves(start)

    def check(self) -> None:
        """Run the C validators of the page table and IOTLB (IovaCorrupted)."""
        if self.pgtable is not None:
            self.pgtable.check()
        if self.iotlb is not None:
            self.iotlb.check()

    def __repr__(self) -> str:
        state = "freed" if self._closed else "%d device(s)" % len(self._devices)
        return "<IommuDomain %s %s %s>" % (self.name, self.type.name, state)


def _check_domain_state(state: Any) -> None:
    """The state an IommuDomain is restored from, checked (see pyiova._state)."""
    from .cookie import DmaCookie
    spec: dict[str, Any] = {"ops": object, "type": DomainType, "pgsize_bitmap": int, "name": str,
            "priv": object, "iova_cookie": (DmaCookie, type(None)),
            "pgtable": (IoPgtable, type(None)), "iotlb": (Iotlb, type(None)),
            "_geometry": DomainGeometry, "_attrs": dict, "_devices": list, "_op": int,
            "_pc": _Counts, "_mappable": bool, "_closed": bool, "_ap_lo": int, "_ap_end": int,
            "_saved_names": (tuple, type(None))}
    _state.check_fields("an IOMMU domain", state, spec, optional=("_saved_names",))
    name = "domain %s" % state["name"]
    if state["ops"] is None:
        raise _state.fail(name, "has no driver")
    if state["_closed"]:
        raise _state.fail(name, "was freed")
    _state.check_int("%s's page sizes" % name, state["pgsize_bitmap"], 0, _U64_MAX)
    _state.check_int("%s's operation count" % name, state["_op"], 0)
    if (state["pgtable"] is None) != (state["iotlb"] is None):
        raise _state.fail(name, "has a page table without an IOTLB, or one without the other")
    if state["_mappable"] != (state["type"].paging):
        raise _state.fail(name, "is mappable against its type %s" % state["type"].name)
    for dev in state["_devices"]:
        _state.check_type("a device of %s" % name, dev, Device)
    for key, value in state["_attrs"].items():
        _state.check_type("an attribute of %s" % name, key, DomainAttr)
        if key is DomainAttr.IOVA_ALLOCATOR:
            _state.check_type("%s's IOVA_ALLOCATOR" % name, value, AllocatorType)
        elif key is DomainAttr.DMA_USE_FLUSH_QUEUE:
            _state.check_type("%s's DMA_USE_FLUSH_QUEUE" % name, value, bool)
        else:
            raise _state.fail(name, "stores the read-only attribute %s" % key.name)
    saved = state.get("_saved_names")
    if saved is not None:
        if len(saved) != 2 or type(saved[1]) is not dict:
            raise _state.fail(name, "has a damaged table of stale records' device names")
        if state["iotlb"] is None:
            raise _state.fail(name, "names the devices of stale records but has no IOTLB")
        _state.check_int("%s's named stale records" % name, saved[0], 0)


def _records_cleared(iotlb: Iotlb) -> int:
    """Stale records an IOTLB has dropped by clear_records so far."""
    t = iotlb.stats()
    return t.stale_hits - t.records_kept - t.records_dropped


# The driver base class and what drivers declare for the C engine live in
# pyiova.drivers.base; these names stay importable from here too.
_MOVED_TO_DRIVERS_BASE = ("IommuDriver", "EngineProfile", "ENGINE_METHODS", "declares_own")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_DRIVERS_BASE:
        from .drivers import base
        return getattr(base, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
