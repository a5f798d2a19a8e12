"""The DMA API on a device behind an IOMMU (kernel/dma/mapping.c through
drivers/iommu/dma-iommu.c).

    iova = map_page(dev, paddr, size, DmaDirection.TO_DEVICE)
    unmap_page(dev, iova, size, DmaDirection.TO_DEVICE)
    sg = map_sg(dev, [(paddr, length), ...], direction)    # one IOVA-contiguous range
    unmap_sg(dev, sg, direction)
    buf = alloc_coherent(dev, size)                         # buf.dma_addr, buf.paddr
    free_coherent(dev, buf)

Each call allocates through the domain's cookie (pyiova.cookie) and maps or
unmaps through the domain's driver ops; an unmap syncs the IOTLB before
the IOVA is freed (strict), or queues the IOVA until a flush covers it
(lazy: DMA_USE_FLUSH_QUEUE on a driver with deferred-flush support).
A domain gets its cookie at the first DMA call of a device attached to it,
as iommu_setup_dma_ops does at probe time.

Arguments are checked before anything changes (pyiova.dma_args has the
rules): a bad one raises DmaApiError (DmaApiTypeError for a wrong type).
So does misuse the kernel's DMA-API debugging reports: an unmap at an
address no map returned, of another size, direction or kind of mapping, or
by another device. A mapping that cannot be made raises DmaMappingError
(the kernel's DMA_MAPPING_ERROR). Either way the call has changed nothing
the kernel's own failed call would not have changed.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from . import _state
from . import dma_args as _args
from . import errors
from .cookie import cookie_of, get_dma_cookie
from .device import Device
from .iommu import DomainAttr, DomainType, IommuDomain, IotlbGather, Prot
from .phys import PHYS_END as _PHYS_END
from .phys import PhysAllocator

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import SupportsIndex

    from typing_extensions import TypeGuard

    from .cookie import DmaCookie

__all__ = ["DmaDirection", "SgMapping", "CoherentBuffer", "PhysAllocator", "map_page",
           "unmap_page", "map_sg", "unmap_sg", "alloc_coherent", "free_coherent",
           "dma_cookie", "mappings"]


class DmaDirection(enum.IntEnum):
    """enum dma_data_direction."""
    BIDIRECTIONAL = 0
    TO_DEVICE = 1
    FROM_DEVICE = 2
    NONE = 3


if TYPE_CHECKING:
    # A direction as the calls take it: a DmaDirection or its value.
    Direction = DmaDirection | int


_NONE = DmaDirection.NONE
_DMA = DomainType.DMA
_BIDIR = DmaDirection.BIDIRECTIONAL
_PROT = {DmaDirection.BIDIRECTIONAL: int(Prot.READ | Prot.WRITE),
         DmaDirection.TO_DEVICE: int(Prot.READ),
         DmaDirection.FROM_DEVICE: int(Prot.WRITE)}
_PROT_COHERENT = int(Prot.READ | Prot.WRITE | Prot.CACHE)
_U64_MAX = (1 << 64) - 1
_SG_MAX = _args.SG_LENGTH_MAX


class _Mapping:
    """What the DMA layer remembers of one live mapping (what the kernel's
    DMA-API debugging keeps in its dma_debug_entry)."""
    __slots__ = ("dev", "size", "direction", "kind", "length", "addr", "paddr")

    def __init__(self, dev: Device, size: int, direction: DmaDirection, kind: str, length: int,
                 addr: int, paddr: int) -> None:
        self.dev, self.size, self.direction, self.kind = dev, size, direction, kind
        self.length, self.addr, self.paddr = length, addr, paddr

    def __getstate__(self) -> dict[str, Any]:
        return _state.slot_state(self)

    def __setstate__(self, state: Any) -> None:
        _state.check_fields("a DMA mapping", state, {
            "dev": Device, "size": int, "direction": DmaDirection, "kind": str, "length": int,
            "addr": int, "paddr": int})
        if state["kind"] not in _MAPPED_BY:
            raise _state.fail("a DMA mapping", "of kind %r" % (state["kind"],))
        if state["direction"] is _NONE:
            raise _state.fail("a DMA mapping", "with direction NONE")
        for name, lo in (("size", 1), ("length", 1), ("addr", 0), ("paddr", 0)):
            _state.check_int("a DMA mapping's %s" % name, state[name], lo, _U64_MAX)
        _state.set_fields(self, state)


class SgMapping:
    """A mapped scatter-gather list: one IOVA range, segments back to back."""
    __slots__ = ("iova", "length", "segments", "dma_addrs")

    def __init__(self, iova: int, length: int, segments: Sequence[tuple[int, int]],
                 dma_addrs: list[int]) -> None:
        self.iova, self.length, self.segments, self.dma_addrs = iova, length, segments, dma_addrs

    def __getstate__(self) -> dict[str, Any]:
        return _state.slot_state(self)

    def __setstate__(self, state: Any) -> None:
        state = _state.old_slot_state(state)
        _state.check_fields("an SgMapping", state, {"iova": int, "length": int,
                                                    "segments": (tuple, list),
                                                    "dma_addrs": list})
        _state.check_int("an SgMapping's iova", state["iova"], 0, _U64_MAX)
        _state.check_int("an SgMapping's length", state["length"], 1, _U64_MAX)
        if len(state["dma_addrs"]) != len(state["segments"]):
            raise _state.fail("an SgMapping", "has %d segments but %d DMA addresses"
                              % (len(state["segments"]), len(state["dma_addrs"])))
        _state.set_fields(self, state)

    def __repr__(self) -> str:
        return "<SgMapping iova=%#x length=%#x segments=%d>" % (self.iova, self.length,
                                                                len(self.segments))


class CoherentBuffer:
    """A dma_alloc_coherent buffer: its physical pages and its DMA address."""
    __slots__ = ("paddr", "dma_addr", "size")

    def __init__(self, paddr: int, dma_addr: int, size: int) -> None:
        self.paddr, self.dma_addr, self.size = paddr, dma_addr, size

    def __getstate__(self) -> dict[str, Any]:
        return _state.slot_state(self)

    def __setstate__(self, state: Any) -> None:
        state = _state.old_slot_state(state)
        _state.check_fields("a CoherentBuffer", state, {"paddr": int, "dma_addr": int,
                                                        "size": int})
        for name, lo in (("paddr", 0), ("dma_addr", 0), ("size", 1)):
            _state.check_int("a CoherentBuffer's %s" % name, state[name], lo, _U64_MAX)
        _state.set_fields(self, state)

    def __repr__(self) -> str:
        return "<CoherentBuffer dma=%#x phys=%#x size=%#x>" % (self.dma_addr, self.paddr, self.size)


def _phys(cookie: DmaCookie) -> PhysAllocator:
    """The cookie's PhysAllocator (cookies made before it had one get it here)."""
    phys = cookie.__dict__.get("dma_phys")
    if phys is None:
        phys = cookie.__dict__.setdefault("dma_phys", PhysAllocator())
    return phys


def _live(cookie: DmaCookie) -> dict[int, _Mapping]:
    """Live mappings of a cookie's domain: iova -> _Mapping. The kernel keeps
    none; pyiova keeps them to refuse the unmaps the kernel would WARN about."""
    return cookie.dma_mappings


def mappings(domain: IommuDomain) -> dict[int, tuple[str, int, DmaDirection, str]]:
    """Live DMA mappings of a domain: {iova: (device name, bytes, direction, kind)}."""
    if not isinstance(domain, IommuDomain):
        raise errors.DmaApiTypeError("mappings: domain must be an IommuDomain, not %s (%r)"
                                     % (type(domain).__name__, domain))
    cookie = cookie_of(domain)
    return {} if cookie is None else {
        iova: (m.dev.name, m.size, m.direction, m.kind) for iova, m in _live(cookie).items()}


# ---- the device's domain and cookie ------------------------------------------------

def _dma_domain(dev: Device, call: str) -> IommuDomain:
    """dev's domain, if the DMA API can work in it."""
    domain = dev._domain
    if domain is None:
        raise errors.DmaApiError("%s: %s is not attached to an IOMMU domain" % (call, dev.name))
    if domain.type is not DomainType.DMA:
        raise errors.DmaApiError("%s: %s is in a %s domain: the DMA API needs a DMA domain"
                                 % (call, dev.name, domain.type.name))
    return domain


def dma_cookie(dev: Device, call: str = "dma_cookie") -> tuple[IommuDomain, DmaCookie]:
    """(domain, cookie) of dev's domain, the cookie set up
    (iommu_dma_init_domain) on first use."""
    domain = getattr(dev, "_domain", None)
    cookie = domain.iova_cookie if domain is not None else None
    if cookie is not None and cookie.allocator is not None:
        return domain, cookie  # type: ignore[return-value]  # the common case, kept short
    _args.device(call, dev)
    domain = _dma_domain(dev, call)
    cookie = cookie_of(domain)
    if cookie is None:
        cookie = get_dma_cookie(domain, ncpus=1)
    if not cookie.initialised:
        geo = domain.geometry
        granule = domain.pgsize_bitmap & -domain.pgsize_bitmap
        lazy = bool(domain.attrs.get(DomainAttr.DMA_USE_FLUSH_QUEUE)) and \
            getattr(domain.ops, "supports_flush_queue", False)
        cookie.init_domain(granule, geo.aperture_start, geo.aperture_end, geo.force_aperture,
                           flush_queue=lazy)
    return domain, cookie


def _cpu(call: str, dev: Device, cpu: Any) -> int | None:
    """cpu checked against the CPU slots of dev's cookie (the one dma_cookie
    would make has one), before anything is set up."""
    domain = dev._domain
    cookie = cookie_of(domain) if domain is not None else None
    return _args.cpu(call, cpu, cookie.ncpus if cookie is not None else 1)


def _mapped_cookie(dev: Device, call: str,
                   cpu: Any) -> tuple[IommuDomain, DmaCookie | None, int | None]:
    """(domain, cookie or None, cpu) for an unmap. Nothing is set up: an
    unmap in a domain without a cookie unmaps what was never mapped."""
    domain = dev._domain if type(dev) is Device else None
    cookie = domain.iova_cookie if domain is not None else None
    if cookie is not None and domain.type is _DMA and (  # type: ignore[union-attr]
            cpu is None or type(cpu) is int and 0 <= cpu < cookie.ncpus):
        return domain, cookie, cpu  # type: ignore[return-value]  # (a cookie: a domain)
    _args.device(call, dev)
    domain = _dma_domain(dev, call)
    cookie = cookie_of(domain)
    if cpu is not None:
        cpu = _args.cpu(call, cpu, cookie.ncpus if cookie is not None else 1)
    return domain, cookie, cpu


# ---- mapping -----------------------------------------------------------------------

def _unmappable(call: str, dev: Device, cookie: DmaCookie, length: int, limit: int,
                cause: BaseException) -> errors.IovaError:
    """The DmaMappingError for a request the allocator refused outright,
    before doing anything (a mask that leaves no IOVA space, a size no
    space could hold), in bytes."""
    shift = cookie.shift
    top = cookie.dma_limit(dev, limit) >> shift
    first = cookie.start_pfn
    if top < first:
        why = ("the DMA mask %#x leaves it no IOVA space: the domain hands out addresses from "
               "%#x up" % (limit, first << shift))
    elif length >> shift > top - first + 1:
        why = ("%#x bytes is more than the %#x bytes of IOVA space between %#x and its DMA "
               "limit %#x" % (length, (top - first + 1) << shift, first << shift, limit))
    else:
        why = str(cause)
    return errors.DmaMappingError("%s: no mapping for %s: %s" % (call, dev.name, why))


def _ready(call: str, dev: Device, cpu: Any) -> tuple[IommuDomain, DmaCookie, int | None]:
    """(domain, cookie, cpu) for a map: the cookie set up, cpu checked
    against its CPU slots (before anything is set up)."""
    domain = dev._domain
    cookie = domain.iova_cookie if domain is not None else None
    if cookie is not None and cookie.allocator is not None and (
            cpu is None or type(cpu) is int and 0 <= cpu < cookie.ncpus):
        return domain, cookie, cpu  # type: ignore[return-value]  # (a cookie: a domain)
    if cpu is not None:
        cpu = _cpu(call, dev, cpu)
    domain, cookie = dma_cookie(dev, call)
    return domain, cookie, cpu


def _map(call: str, dev: Device, domain: IommuDomain, cookie: DmaCookie, paddr: int, size: int,
         limit: int, prot: int, kind: str, direction: DmaDirection, cpu: int | None) -> int:
    g = cookie.granule
    off = paddr & (g - 1)
    base = paddr - off
    length = (size + off + g - 1) & -g
    try:
        iova = cookie.alloc_iova(dev, length, limit, cpu=cpu)
    except errors.IovaValueError as exc:         # refused outright: nothing was done
        raise _unmappable(call, dev, cookie, length, limit, exc) from None
    if not iova:
        raise errors.DmaMappingError("%s: no IOVA space left for %#x bytes below %#x in %s"
                                     % (call, length, limit, domain.name))
    try:
        domain.map(iova, base, length, prot)
    except errors.IovaError as exc:
        # as iommu_dma_map does: the IOVA goes back, the mapping error goes up
        cookie.free_iova(iova, length, cpu=cpu)
        raise errors.DmaMappingError("%s: the IOMMU refused to map %#x bytes at IOVA %#x for %s: "
                                     "%s" % (call, length, iova, dev.name, exc)) from exc
    addr = iova + off
    # (what the kernel's DMA-API debugging keeps: a coherent buffer's pages too)
    _live(cookie)[iova] = _Mapping(dev, size, direction, kind, length, addr,
                                   paddr if kind == "coherent" else 0)
    return addr


def _find(call: str, dev: Device, cookie: DmaCookie | None, dma_addr: int, size: int | None,
          direction: DmaDirection | None,
          kind: str) -> tuple[DmaCookie, int, _Mapping]:
    """(the cookie, iova, the _Mapping) that an unmap of dma_addr releases,
    or the DmaApiError the kernel's DMA-API debugging would report instead."""
    m = None
    if cookie is not None and cookie.granule is not None:
        iova = dma_addr & ~(cookie.granule - 1)
        m = _live(cookie).get(iova)
    if m is None or cookie is None:             # (no cookie: no mapping either)
        raise errors.DmaApiError("%s: %s: unmapping %#x, which was never mapped"
                                 % (call, dev.name, dma_addr))
    if m.dev is not dev:
        raise errors.DmaApiError("%s: %s: unmapping %#x, which %s mapped"
                                 % (call, dev.name, dma_addr, m.dev.name))
    if m.addr != dma_addr:
        raise errors.DmaApiError(
            "%s: %s: unmapping %#x, which is not an address a map returned: the mapping there "
            "was returned as %#x (the kernel's DMA-API debugging reports this as freeing DMA "
            "memory the driver has not allocated)" % (call, dev.name, dma_addr, m.addr))
    if m.kind != kind:
        raise errors.DmaApiError("%s: %s: %#x was mapped by %s, not %s"
                                 % (call, dev.name, dma_addr, _MAPPED_BY[m.kind],
                                    _MAPPED_BY[kind]))
    if size is not None and m.size != size:
        raise errors.DmaApiError("%s: %s: unmapping %#x with size %#x, mapped with %#x"
                                 % (call, dev.name, dma_addr, size, m.size))
    if direction is not None and m.direction != direction:
        raise errors.DmaApiError("%s: %s: unmapping %#x as %s, mapped as %s"
                                 % (call, dev.name, dma_addr, direction.name, m.direction.name))
    return cookie, iova, m


_MAPPED_BY = {"page": "map_page", "sg": "map_sg", "coherent": "alloc_coherent"}


def _release(domain: IommuDomain, cookie: DmaCookie, iova: int, m: _Mapping,
             cpu: int | None) -> None:
    """Unmap and free a mapping _find returned; it leaves the live set first,
    so that no other thread can release it too, and goes back if the
    unmap fails."""
    live = _live(cookie)
    if live.pop(iova, None) is not m:
        raise errors.DmaApiError("%s: %#x was unmapped by another thread meanwhile"
                                 % (m.dev.name, m.addr))
    try:
        gather = IotlbGather()
        domain.unmap_fast(iova, m.length, gather)
        lazy = cookie.flush_queue
        if not lazy:
            domain.iotlb_sync(gather)      # strict: invalidate before the IOVA can be reused
        cookie.free_iova(iova, m.length, lazy=lazy, cpu=cpu)
    except BaseException:
        live[iova] = m
        raise


# ---- the calls ---------------------------------------------------------------------

def _plain_segments(segments: object) -> TypeGuard[Sequence[tuple[int, int]]]:
    """Whether segments is a non-empty tuple or list of (paddr, length)
    tuples of plain ints that dma_args.segments would take as they are."""
    if (type(segments) is not tuple and type(segments) is not list) or not segments:
        return False
    for seg in segments:
        if type(seg) is not tuple or len(seg) != 2:
            return False
        p, n = seg
        if type(p) is not int or type(n) is not int or p < 0 or n <= 0 or n > _SG_MAX \
                or p + n > _PHYS_END:
            return False
    return True


def map_page(dev: Device, paddr: SupportsIndex, size: SupportsIndex,
             direction: Direction = DmaDirection.BIDIRECTIONAL, *,
             cpu: SupportsIndex | None = None) -> int:
    """dma_map_page / dma_map_phys: the DMA address of [paddr, paddr+size)."""
    if (type(paddr) is not int or type(size) is not int or type(direction) is not DmaDirection
            or type(dev) is not Device or paddr < 0 or size <= 0 or paddr + size > _PHYS_END
            or direction is _NONE):
        paddr, size, direction = _args.map_args("map_page", dev, paddr, size, direction)
    domain, cookie, cpu = _ready("map_page", dev, cpu)
    return _map("map_page", dev, domain, cookie, paddr, size, dev.dma_mask, _PROT[direction],
                "page", direction, cpu)


def unmap_page(dev: Device, dma_addr: SupportsIndex, size: SupportsIndex,
               direction: Direction = DmaDirection.BIDIRECTIONAL, *,
               cpu: SupportsIndex | None = None) -> None:
    """dma_unmap_page: at the address map_page returned, with the size and
    direction it was mapped with."""
    if (type(dma_addr) is not int or type(size) is not int or type(direction) is not DmaDirection
            or dma_addr < 0 or dma_addr > _U64_MAX or size <= 0 or size > _U64_MAX
            or direction is _NONE):
        dma_addr, size, direction = _args.unmap_args("unmap_page", dev, dma_addr, size,
                                                     direction)
    domain, maybe_cookie, cpu = _mapped_cookie(dev, "unmap_page", cpu)
    cookie, iova, m = _find("unmap_page", dev, maybe_cookie, dma_addr, size, direction, "page")
    _release(domain, cookie, iova, m, cpu)


def map_sg(dev: Device, segments: Sequence[tuple[SupportsIndex, SupportsIndex]],
           direction: Direction = DmaDirection.BIDIRECTIONAL, *,
           cpu: SupportsIndex | None = None) -> SgMapping:
    """dma_map_sg: segments [(paddr, length), ...] laid back to back in one
    IOVA range, each padded to the granule as iommu_dma_map_sg does."""
    if type(dev) is not Device or type(direction) is not DmaDirection or direction is _NONE \
            or not _plain_segments(segments):
        _args.device("map_sg", dev)
        segments = _args.segments("map_sg", segments)
        direction = _args.direction("map_sg", direction)
    domain, cookie, cpu = _ready("map_sg", dev, cpu)
    g = cookie.granule
    lengths = [((p & (g - 1)) + n + g - 1) & -g for p, n in segments]
    total = sum(lengths)
    try:
        iova = cookie.alloc_iova(dev, total, dev.dma_mask, cpu=cpu)
    except errors.IovaValueError as exc:
        raise _unmappable("map_sg", dev, cookie, total, dev.dma_mask, exc) from None
    if not iova:
        raise errors.DmaMappingError("map_sg: no IOVA space left for a %#x-byte scatter-gather "
                                     "list in %s" % (total, domain.name))
    done = 0
    addrs = []
    prot = _PROT[direction]
    try:
        for (p, _n), length in zip(segments, lengths):
            domain.map(iova + done, p & -g, length, prot)
            addrs.append(iova + done + (p & (g - 1)))
            done += length
    except errors.IovaError as exc:
        # as iommu_map_sg and iommu_dma_map_sg do: unmap what was mapped, free the IOVA
        if done:
            gather = IotlbGather()
            domain.unmap_fast(iova, done, gather)
            domain.iotlb_sync(gather)
        cookie.free_iova(iova, total, cpu=cpu)
        raise errors.DmaMappingError("map_sg: the IOMMU refused segment %d of %s's list at IOVA "
                                     "%#x: %s" % (len(addrs), dev.name, iova + done, exc)) from exc
    _live(cookie)[iova] = _Mapping(dev, total, direction, "sg", total, iova, 0)
    return SgMapping(iova, total, segments, addrs)


def unmap_sg(dev: Device, sg: SgMapping, direction: Direction = DmaDirection.BIDIRECTIONAL, *,
             cpu: SupportsIndex | None = None) -> None:
    """dma_unmap_sg: the mapping map_sg returned."""
    if not isinstance(sg, SgMapping):
        raise errors.DmaApiTypeError("unmap_sg: sg must be the SgMapping map_sg returned, not %s "
                                     "(%r)" % (type(sg).__name__, sg))
    iova, length = sg.iova, sg.length
    if type(iova) is not int or type(length) is not int or type(direction) is not DmaDirection \
            or direction is _NONE:
        iova = _args.dma_addr("unmap_sg", iova, "sg.iova")
        length = _args.size("unmap_sg", length, "sg.length")
        direction = _args.direction("unmap_sg", direction)
    domain, maybe_cookie, cpu = _mapped_cookie(dev, "unmap_sg", cpu)
    cookie, iova, m = _find("unmap_sg", dev, maybe_cookie, iova, length, direction, "sg")
    _release(domain, cookie, iova, m, cpu)


def alloc_coherent(dev: Device, size: SupportsIndex, *,
                   cpu: SupportsIndex | None = None) -> CoherentBuffer:
    """dma_alloc_coherent: pages, mapped for the device within its coherent mask."""
    if type(size) is not int or size <= 0 or size > _U64_MAX or type(dev) is not Device:
        _args.device("alloc_coherent", dev)
        size = _args.size("alloc_coherent", size)
    domain, cookie, cpu = _ready("alloc_coherent", dev, cpu)
    g = cookie.granule
    length = (size + g - 1) & -g
    phys = _phys(cookie)
    # pages first, then the mapping, as iommu_dma_alloc does; a failed
    # mapping gives the pages back as if they had never been taken
    paddr, reused = phys.take(length)
    try:
        # (the mapping records the whole pages, as dma-iommu maps them)
        dma = _map("alloc_coherent", dev, domain, cookie, paddr, length, dev.coherent_dma_mask,
                   _PROT_COHERENT, "coherent", _BIDIR, cpu)
    except BaseException:
        phys.undo(paddr, length, reused)
        raise
    return CoherentBuffer(paddr, dma, size)


def free_coherent(dev: Device, buf: CoherentBuffer, *,
                  cpu: SupportsIndex | None = None) -> None:
    """dma_free_coherent: the buffer alloc_coherent returned."""
    if not isinstance(buf, CoherentBuffer):
        raise errors.DmaApiTypeError("free_coherent: buf must be the CoherentBuffer "
                                     "alloc_coherent returned, not %s (%r)"
                                     % (type(buf).__name__, buf))
    addr = _args.dma_addr("free_coherent", buf.dma_addr, "buf.dma_addr")
    size = _args.size("free_coherent", buf.size, "buf.size")
    paddr = _args.phys_addr("free_coherent", buf.paddr, "buf.paddr")
    domain, maybe_cookie, cpu = _mapped_cookie(dev, "free_coherent", cpu)
    cookie, iova, m = _find("free_coherent", dev, maybe_cookie, addr, None, None, "coherent")
    if (size + cookie.granule - 1) & -cookie.granule != m.size:
        raise errors.DmaApiError("free_coherent: %s: freeing %#x with size %#x, allocated with "
                                 "%#x (whole pages)" % (dev.name, addr, size, m.size))
    if m.paddr != paddr:
        raise errors.DmaApiError("free_coherent: %s: the buffer at %#x is freed with physical "
                                 "address %#x, allocated with %#x"
                                 % (dev.name, addr, paddr, m.paddr))
    _release(domain, cookie, iova, m, cpu)
    _phys(cookie).free(m.paddr, m.length)
