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

Misuse the kernel would WARN about (unmapping what was never mapped, with
another size or direction) raises DmaApiError; a mapping that cannot be
made raises DmaMappingError (the kernel's DMA_MAPPING_ERROR).
"""
import enum

from . import errors
from .cookie import cookie_of, get_dma_cookie
from .iommu import DomainAttr, DomainType, IotlbGather, Prot

__all__ = ["DmaDirection", "SgMapping", "CoherentBuffer", "PhysAllocator", "map_page",
           "unmap_page", "map_sg", "unmap_sg", "alloc_coherent", "free_coherent",
           "dma_cookie", "mappings"]


class DmaDirection(enum.IntEnum):
    """enum dma_data_direction."""
    BIDIRECTIONAL = 0
    TO_DEVICE = 1
    FROM_DEVICE = 2
    NONE = 3


_PROT = {DmaDirection.BIDIRECTIONAL: int(Prot.READ | Prot.WRITE),
         DmaDirection.TO_DEVICE: int(Prot.READ),
         DmaDirection.FROM_DEVICE: int(Prot.WRITE)}


class _Mapping:
    """What the DMA layer remembers of one live mapping."""
    __slots__ = ("dev", "size", "direction", "kind", "length")

    def __init__(self, dev, size, direction, kind, length):
        self.dev, self.size, self.direction, self.kind, self.length = \
            dev, size, direction, kind, length


class SgMapping:
    """A mapped scatter-gather list: one IOVA range, segments back to back."""
    __slots__ = ("iova", "length", "segments", "dma_addrs")

    def __init__(self, iova, length, segments, dma_addrs):
        self.iova, self.length, self.segments, self.dma_addrs = iova, length, segments, dma_addrs

    def __repr__(self):
        return "<SgMapping iova=%#x length=%#x segments=%d>" % (self.iova, self.length,
                                                                len(self.segments))


class CoherentBuffer:
    """A dma_alloc_coherent buffer: its physical pages and its DMA address."""
    __slots__ = ("paddr", "dma_addr", "size")

    def __init__(self, paddr, dma_addr, size):
        self.paddr, self.dma_addr, self.size = paddr, dma_addr, size

    def __repr__(self):
        return "<CoherentBuffer dma=%#x phys=%#x size=%#x>" % (self.dma_addr, self.paddr, self.size)


class PhysAllocator:
    """Physical pages for coherent buffers: first free page run, reusing
    what was freed (the page allocator is not what pyiova models). Each
    domain's cookie has its own, so that a checkpointed domain carries the
    pages its coherent buffers hold and a restored copy gets the same
    addresses as the original."""

    def __init__(self, base=0x4000_0000, page=4096):
        self.base, self.page = base, page
        self._next = base
        self._free = {}               # pages -> [paddr, ...]

    def alloc(self, size):
        pages = -(-size // self.page)
        spare = self._free.get(pages)
        if spare:
            return spare.pop()
        paddr = self._next
        self._next += pages * self.page
        return paddr

    def free(self, paddr, size):
        self._free.setdefault(-(-size // self.page), []).append(paddr)


def _phys(cookie):
    """The cookie's PhysAllocator, made at its first coherent buffer."""
    phys = cookie.__dict__.get("dma_phys")
    if phys is None:
        phys = cookie.dma_phys = PhysAllocator()
    return phys


def _live(cookie):
    """Live mappings of a cookie's domain: iova -> _Mapping. The kernel keeps
    none; pyiova keeps them to refuse the unmaps the kernel would WARN about."""
    return cookie.dma_mappings


def _size(size):
    """size as a positive int, or the error naming it."""
    if isinstance(size, bool) or not hasattr(size, "__index__"):
        raise errors.IovaTypeError("size must be an integer, not %r" % (size,))
    size = size.__index__()
    if size <= 0:
        raise errors.IovaValueError("size %r is not a positive number of bytes" % (size,))
    return size


def mappings(domain):
    """Live DMA mappings of a domain: {iova: (device name, bytes, direction, kind)}."""
    cookie = cookie_of(domain)
    return {} if cookie is None else {
        iova: (m.dev.name, m.size, m.direction, m.kind) for iova, m in _live(cookie).items()}


def _direction(direction):
    if type(direction) is DmaDirection:
        return direction
    try:
        return DmaDirection(direction)
    except ValueError:
        raise errors.IovaValueError("direction %r is not a DmaDirection" % (direction,)) from None


def dma_cookie(dev):
    """The cookie of dev's domain, set up (iommu_dma_init_domain) on first use."""
    domain = dev._domain
    cookie = domain.iova_cookie if domain is not None else None
    if cookie is not None and cookie.allocator is not None:
        return domain, cookie                      # the common case, kept short
    if domain is None:
        raise errors.IovaError("%s is not attached to an IOMMU domain" % dev.name)
    if domain.type is not DomainType.DMA:
        raise errors.IovaError("%s is in a %s domain: the DMA API needs a DMA domain"
                               % (dev.name, domain.type.name))
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


def _align(size, granule):
    return (size + granule - 1) & ~(granule - 1)


def _map(dev, domain, cookie, paddr, size, limit, prot, kind, direction, cpu):
    g = cookie.granule
    off = paddr & (g - 1)
    length = _align(size + off, g)
    iova = cookie.alloc_iova(dev, length, limit, cpu=cpu)
    if not iova:
        raise errors.DmaMappingError("no IOVA space for %#x bytes below %#x in %s"
                                     % (length, limit, domain.name))
    try:
        domain.map(iova, paddr - off, length, prot)
    except errors.IovaError:
        cookie.free_iova(iova, length, cpu=cpu)
        raise
    _live(cookie)[iova] = _Mapping(dev, size, direction, kind, length)
    return iova + off


def _unmap(dev, domain, cookie, iova, length, cpu):
    gather = IotlbGather()
    domain.unmap_fast(iova, length, gather)
    lazy = cookie.flush_queue
    if not lazy:
        domain.iotlb_sync(gather)      # strict: invalidate before the IOVA can be reused
    cookie.free_iova(iova, length, lazy=lazy, cpu=cpu)


def _take(dev, cookie, dma_addr, size, direction, kind):
    iova = dma_addr & ~(cookie.granule - 1)
    live = _live(cookie)
    m = live.get(iova)
    if m is None or m.dev is not dev:
        raise errors.DmaApiError("%s: unmapping %#x, which was never mapped" % (dev.name, dma_addr))
    if m.kind != kind:
        raise errors.DmaApiError("%s: %#x was mapped by %s, not %s" % (dev.name, dma_addr,
                                                                       m.kind, kind))
    if size is not None and m.size != size:
        raise errors.DmaApiError("%s: unmapping %#x with size %#x, mapped with %#x"
                                 % (dev.name, dma_addr, size, m.size))
    if direction is not None and m.direction != direction:
        raise errors.DmaApiError("%s: unmapping %#x as %s, mapped as %s"
                                 % (dev.name, dma_addr, direction.name, m.direction.name))
    del live[iova]
    return iova, m.length


def map_page(dev, paddr, size, direction=DmaDirection.BIDIRECTIONAL, *, cpu=None):
    """dma_map_page / dma_map_phys: the DMA address of [paddr, paddr+size)."""
    direction = _direction(direction)
    if type(size) is not int or size <= 0:
        size = _size(size)
    if direction is DmaDirection.NONE:
        raise errors.DmaApiError("DMA_NONE is not a direction to map with")
    domain, cookie = dma_cookie(dev)
    return _map(dev, domain, cookie, paddr, size, dev.dma_mask, _PROT[direction], "page",
                direction, cpu)


def unmap_page(dev, dma_addr, size, direction=DmaDirection.BIDIRECTIONAL, *, cpu=None):
    """dma_unmap_page: size and direction must be the ones it was mapped with."""
    direction = _direction(direction)
    domain, cookie = dma_cookie(dev)
    iova, length = _take(dev, cookie, dma_addr, size, direction, "page")
    _unmap(dev, domain, cookie, iova, length, cpu)


def map_sg(dev, segments, direction=DmaDirection.BIDIRECTIONAL, *, cpu=None):
    """dma_map_sg: segments [(paddr, length), ...] laid back to back in one
    IOVA range, each padded to the granule as iommu_dma_map_sg does."""
    direction = _direction(direction)
    segments = [(int(p), int(n)) for p, n in segments]
    if not segments or any(n <= 0 for _, n in segments):
        raise errors.IovaValueError("a scatter-gather list needs segments of positive length")
    domain, cookie = dma_cookie(dev)
    g = cookie.granule
    lengths = [_align((p & (g - 1)) + n, g) for p, n in segments]
    total = sum(lengths)
    iova = cookie.alloc_iova(dev, total, dev.dma_mask, cpu=cpu)
    if not iova:
        raise errors.DmaMappingError("no IOVA space for a %#x-byte scatter-gather list in %s"
                                     % (total, domain.name))
    done = 0
    addrs = []
    try:
        for (p, n), length in zip(segments, lengths):
            domain.map(iova + done, p & ~(g - 1), length, _PROT[direction])
            addrs.append(iova + done + (p & (g - 1)))
            done += length
    except errors.IovaError:
        if done:
            gather = IotlbGather()
            domain.unmap_fast(iova, done, gather)
            domain.iotlb_sync(gather)
        cookie.free_iova(iova, total, cpu=cpu)
        raise
    _live(cookie)[iova] = _Mapping(dev, total, direction, "sg", total)
    return SgMapping(iova, total, segments, addrs)


def unmap_sg(dev, sg, direction=DmaDirection.BIDIRECTIONAL, *, cpu=None):
    """dma_unmap_sg: the mapping map_sg returned."""
    if not isinstance(sg, SgMapping):
        raise errors.IovaTypeError("unmap_sg takes the SgMapping map_sg returned")
    direction = _direction(direction)
    domain, cookie = dma_cookie(dev)
    iova, length = _take(dev, cookie, sg.iova, sg.length, direction, "sg")
    _unmap(dev, domain, cookie, iova, length, cpu)


def alloc_coherent(dev, size, *, cpu=None):
    """dma_alloc_coherent: pages, mapped for the device within its coherent mask."""
    size = _size(size)
    domain, cookie = dma_cookie(dev)
    length = _align(size, cookie.granule)
    paddr = _phys(cookie).alloc(length)
    try:
        dma = _map(dev, domain, cookie, paddr, length, dev.coherent_dma_mask,
                   int(Prot.READ | Prot.WRITE | Prot.CACHE), "coherent",
                   DmaDirection.BIDIRECTIONAL, cpu)
    except errors.IovaError:
        _phys(cookie).free(paddr, length)
        raise
    return CoherentBuffer(paddr, dma, size)


def free_coherent(dev, buf, *, cpu=None):
    """dma_free_coherent."""
    if not isinstance(buf, CoherentBuffer):
        raise errors.IovaTypeError("free_coherent takes the CoherentBuffer alloc_coherent returned")
    domain, cookie = dma_cookie(dev)
    iova, length = _take(dev, cookie, buf.dma_addr, None, None, "coherent")
    _unmap(dev, domain, cookie, iova, length, cpu)
    _phys(cookie).free(buf.paddr, length)
