"""IOMMU domains, attributes, devices and the two model drivers.

The heart of it: a strict driver never lets a device reach a page through a
stale IOTLB entry, however fast freed addresses are reused; the IPMMU with
its flush erratum does, and pyiova catches each such access.
"""
import random
import time

import pytest

from pyiova.pgtable import SZ_1G, SZ_2M, SZ_4K
from pyiova.device import DMA_BIT_MASK, Device
from pyiova.drivers import GenericIommu, IommuDriver, IpmmuVmsa
from pyiova.errors import IovaClosed, IovaError, IovaTypeError, IovaValueError
from pyiova.iommu import (DomainAttr, DomainGeometry, DomainType, IommuDomain, IommuOps,
                          IotlbGather, IovaAllocator, Prot, StaleTranslation)
from pyiova.iommu_errors import (IommuAlignmentError, IommuAttachError, IommuAttrBusy,
                                 IommuAttrValueError, IommuBusy, IommuDomainTypeError,
                                 IommuFault, IommuMappingExists, IommuNotReady,
                                 IommuRangeError, IommuReadOnlyAttr, IommuUnknownAttr)


def dma_domain(driver, *names, type="DMA"):
    domain = driver.domain_alloc(type)
    devs = [Device(n) for n in names or ("dev0",)]
    for dev in devs:
        dev.attach(domain)
    return domain, devs


# ---- the driver interface ------------------------------------------------------------

@pytest.mark.parametrize("driver", [GenericIommu(), IpmmuVmsa()])
def test_drivers_implement_the_ops_protocol(driver):
    assert isinstance(driver, IommuOps)
    assert isinstance(driver, IommuDriver)
    for name in ("domain_alloc", "domain_free", "attach_dev", "detach_dev", "map", "unmap",
                 "iotlb_sync", "flush_iotlb_all", "iova_to_phys", "domain_get_attr",
                 "domain_set_attr", "domain_reset"):
        assert callable(getattr(driver, name))


@pytest.mark.parametrize("type", ["DMA", "dma", DomainType.UNMANAGED, 4])
def test_domain_types(type):
    d = GenericIommu().domain_alloc(type)
    assert isinstance(d, IommuDomain) and d.type in DomainType
    assert d.get_attr(DomainAttr.PAGING) == d.type.paging


def test_unknown_domain_type():
    with pytest.raises(IommuDomainTypeError):
        GenericIommu().domain_alloc("BLOCKED")
    with pytest.raises(IommuDomainTypeError):
        GenericIommu().domain_alloc(2)


# ---- attributes ------------------------------------------------------------------------

def test_geometry_and_paging_are_read_only():
    d = GenericIommu(ias=40).domain_alloc("DMA")
    assert d.get_attr(DomainAttr.GEOMETRY) == DomainGeometry(0, (1 << 40) - 1, True)
    assert d.get_attr("paging") is True
    with pytest.raises(IommuReadOnlyAttr):
        d.set_attr(DomainAttr.GEOMETRY, DomainGeometry(0, 1 << 32, True))
    with pytest.raises(AttributeError):
        d.set_attr("PAGING", False)


def test_unknown_attribute():
    d = GenericIommu().domain_alloc("DMA")
    for bad in ("force_reset_when_empty", 7, None):
        with pytest.raises(IommuUnknownAttr, match="unknown domain attribute"):
            d.get_attr(bad)
        with pytest.raises(KeyError):
            d.set_attr(bad, True)


def test_iova_allocator_attribute():
    d = GenericIommu().domain_alloc("DMA")
    assert d.get_attr(DomainAttr.IOVA_ALLOCATOR) is IovaAllocator.IOVA
    for value in (IovaAllocator.WRAPAROUND, "reset-when-empty", "iova"):
        d.set_attr("iova_allocator", value)
        assert d.get_attr(DomainAttr.IOVA_ALLOCATOR) == value
        assert isinstance(d.get_attr(DomainAttr.IOVA_ALLOCATOR), IovaAllocator)
    # MSI cookies are for unmanaged domains only (iommu_get_msi_cookie)
    with pytest.raises(IommuAttrValueError, match="unmanaged"):
        d.set_attr(DomainAttr.IOVA_ALLOCATOR, "msi")
    assert d.get_attr(DomainAttr.IOVA_ALLOCATOR) is IovaAllocator.IOVA
    un = GenericIommu().domain_alloc("UNMANAGED")
    un.set_attr(DomainAttr.IOVA_ALLOCATOR, "msi")
    assert un.get_attr(DomainAttr.IOVA_ALLOCATOR) is IovaAllocator.MSI
    with pytest.raises(IommuAttrValueError, match="wraparound"):
        d.set_attr(DomainAttr.IOVA_ALLOCATOR, "one-way")
    with pytest.raises(IovaTypeError):
        d.set_attr(DomainAttr.IOVA_ALLOCATOR, 2)
    # the allocator is an attribute, never geometry
    assert d.geometry == d.get_attr(DomainAttr.GEOMETRY)
    assert not hasattr(d.geometry, "force_reset_when_empty")


def test_flush_queue_attribute():
    d = GenericIommu().domain_alloc("DMA")
    assert d.get_attr(DomainAttr.DMA_USE_FLUSH_QUEUE) is False
    d.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
    assert d.get_attr(DomainAttr.DMA_USE_FLUSH_QUEUE) is True
    with pytest.raises(IovaTypeError):
        d.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, 1)
    strict_only = GenericIommu(deferred_flush=False).domain_alloc("DMA")
    with pytest.raises(IommuAttrValueError):
        strict_only.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
    ipmmu = IpmmuVmsa().domain_alloc("DMA")
    with pytest.raises(IommuAttrValueError, match="always strict"):
        ipmmu.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
    ipmmu.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, False)
    # only DMA domains have a flush queue; identity domains no IOVA space
    with pytest.raises(IommuUnknownAttr):
        GenericIommu().domain_alloc("UNMANAGED").get_attr(DomainAttr.DMA_USE_FLUSH_QUEUE)
    ident = GenericIommu().domain_alloc("IDENTITY")
    with pytest.raises(IommuUnknownAttr):
        ident.set_attr(DomainAttr.IOVA_ALLOCATOR, "iova")
    assert ident.get_attr(DomainAttr.PAGING) is False


def test_attributes_freeze_once_in_use():
    d, (dev,) = dma_domain(GenericIommu())
    with pytest.raises(IommuAttrBusy):
        d.set_attr(DomainAttr.IOVA_ALLOCATOR, "wraparound")
    d.set_attr(DomainAttr.IOVA_ALLOCATOR, "iova")  # unchanged value: fine
    dev.detach()
    d.map(0, 0, SZ_4K)
    with pytest.raises(RuntimeError):
        d.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
    d.unmap(0, SZ_4K)
    d.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)


# ---- mapping through a domain ---------------------------------------------------------------

@pytest.fixture(params=["generic", "ipmmu"])
def domain(request):
    driver = GenericIommu() if request.param == "generic" else IpmmuVmsa()
    d, _ = dma_domain(driver)
    yield d
    d.check()


def test_map_translate_unmap(domain):
    domain.map(0x100000, 0x80000000, 2 * SZ_2M + SZ_4K, Prot.READ | Prot.WRITE)
    assert domain.iova_to_phys(0x100000 + SZ_2M) == 0x80000000 + SZ_2M
    assert domain.iova_to_phys(0x100000 + 2 * SZ_2M + SZ_4K) is None
    assert [m.size for m in domain.mappings()][:3] == [SZ_4K] * 3
    assert domain.unmap(0x100000, 2 * SZ_2M + SZ_4K) == 2 * SZ_2M + SZ_4K
    assert list(domain.mappings()) == []
    assert domain.unmap(0x100000, SZ_4K) == 0  # nothing there: reported, not raised
    c = domain.counters()
    assert (c.maps, c.unmaps, c.short_unmaps, c.mapped_bytes) == (1, 2, 1, 0)
    assert c.bytes_mapped == c.bytes_unmapped == 2 * SZ_2M + SZ_4K


@pytest.mark.parametrize("args,exc", [
    ((0x10800, 0x20000, SZ_4K), IommuAlignmentError),                 # unaligned iova
    ((0x10000, 0x20800, SZ_4K), IommuAlignmentError),                 # unaligned paddr
    ((0x10000, 0x20000, 0x1800), IommuAlignmentError),                # size not a page multiple
    ((0x10000, 0x20000, 0), IommuAlignmentError),
    ((0x8000, 0x20000, 2 * SZ_4K), IommuMappingExists),               # double map
    ((1 << 32, 0x20000, SZ_4K), IommuRangeError),                     # outside the aperture
    ((0xFFFFF000, 0x20000, 2 * SZ_4K), IommuRangeError),
    ((0x10000, 1 << 48, SZ_4K), IommuRangeError),                     # beyond oas
    ((0x10000, 0x20000, SZ_4K, 0), IovaValueError),                   # no rights
    (("0x10000", 0x20000, SZ_4K), IovaTypeError),                     # non-int
    ((0x10000, 131072.0, SZ_4K), IovaTypeError),
    ((0x10000, 0x20000, None), IovaTypeError),
    ((-SZ_4K, 0x20000, SZ_4K), IovaValueError),
])
def test_bad_map_arguments_leave_everything_intact(args, exc):
    # the IPMMU's forced 32-bit aperture makes 1 << 32 "outside"; the
    # generic driver gets the same aperture here for the same answers
    driver = IpmmuVmsa()
    d, _ = dma_domain(driver)
    d.map(0x8000, 0x9000, SZ_4K)
    before = list(d.mappings())
    with pytest.raises(exc) as info:
        d.map(*args)
    assert isinstance(info.value, IovaError)
    d.check()
    assert list(d.mappings()) == before
    assert d.counters().maps == 1


@pytest.mark.parametrize("args,exc", [
    ((0x8800, SZ_4K), IommuAlignmentError),
    ((0x8000, 0x800), IommuAlignmentError),
    ((1 << 32, SZ_4K), IommuRangeError),
    ((0x8000, "4K"), IovaTypeError),
])
def test_bad_unmap_arguments_leave_everything_intact(args, exc):
    d, _ = dma_domain(IpmmuVmsa())
    d.map(0x8000, 0x9000, SZ_4K)
    with pytest.raises(exc):
        d.unmap(*args)
    d.check()
    assert d.iova_to_phys(0x8000) == 0x9000


def test_identity_domain_passes_through():
    d, (dev,) = dma_domain(IpmmuVmsa(), type="IDENTITY")
    assert dev.dma_access(0x1234_5000) == 0x1234_5000
    assert d.iova_to_phys(0x42) == 0x42
    with pytest.raises(IommuDomainTypeError):
        d.map(0, 0, SZ_4K)
    with pytest.raises(IommuDomainTypeError):
        d.unmap(0, SZ_4K)
    paddrs, status = dev.dma_access_many([1, 2, 3])
    assert list(paddrs) == [1, 2, 3] and list(status) == [0, 0, 0]
    assert d.counters().passthrough_accesses == 4


# ---- devices -------------------------------------------------------------------------------

def test_device_arguments():
    dev = Device("ehci0", DMA_BIT_MASK(32), DMA_BIT_MASK(32), False)
    assert (dev.dma_mask, dev.coherent_dma_mask, dev.is_pci) == (0xFFFFFFFF,) * 2 + (False,)
    with pytest.raises(IovaTypeError):
        Device(3)
    with pytest.raises(IovaValueError):
        Device("x", dma_mask=1 << 64)
    with pytest.raises(IovaTypeError):
        Device("x", is_pci="yes")
    with pytest.raises(IovaValueError):
        DMA_BIT_MASK(65)
    assert DMA_BIT_MASK(64) == (1 << 64) - 1


def test_dma_access_checks():
    d, (dev,) = dma_domain(GenericIommu())
    d.map(0x10000, 0x20000, SZ_4K, Prot.READ)
    assert dev.dma_access(0x10004) == 0x20004
    with pytest.raises(IommuFault) as info:
        dev.dma_access(0x10004, write=True)
    assert info.value.kind == "permission" and info.value.device == "dev0"
    with pytest.raises(IommuFault, match="translation fault"):
        dev.dma_access(0x30000)
    dev.set_dma_mask(DMA_BIT_MASK(16))
    with pytest.raises(IommuRangeError, match="DMA mask"):
        dev.dma_access(0x10004)
    with pytest.raises(IommuRangeError):
        dev.dma_access_many([0x10004])
    with pytest.raises(IovaTypeError):
        dev.dma_access("0x10")
    with pytest.raises(IovaValueError):
        dev.dma_access(-1)
    assert d.counters().faults == 2
    idle = Device("idle")
    with pytest.raises(IommuNotReady):
        idle.dma_access(0)


def test_attach_detach_rules():
    drv = GenericIommu()
    a, b = drv.domain_alloc("DMA"), drv.domain_alloc("DMA")
    dev = Device("nic")
    dev.attach(a)
    dev.attach(a)  # already there: nothing to do
    with pytest.raises(IommuBusy, match="detach it first"):
        b.attach_device(dev)
    with pytest.raises(IommuBusy):
        a.free()
    with pytest.raises(IovaValueError):
        b.detach_device(dev)
    dev.detach()
    assert dev.domain is None and a.devices == ()
    dev.attach(b)
    assert b.devices == (dev,)
    a.free()
    a.free()  # twice is harmless
    with pytest.raises(IovaClosed):
        a.map(0, 0, SZ_4K)
    with pytest.raises(IovaClosed):
        a.get_attr(DomainAttr.PAGING)
    other = GenericIommu("other")
    with pytest.raises(IommuAttachError, match="sits behind"):
        other.domain_alloc("DMA").attach_device(Device("nic2", iommu=drv))
    with pytest.raises(IovaTypeError):
        b.attach_device("nic")


def test_domain_context_manager():
    drv = IpmmuVmsa(num_contexts=1)
    with drv.domain_alloc("DMA") as d:
        Device("a").attach(d)
        assert drv.contexts_in_use == 1
    assert d.closed and drv.contexts_in_use == 0


# ---- the generic strict driver -----------------------------------------------------------------

def test_strict_unmap_invalidates_exactly_what_it_unmapped():
    d, (dev,) = dma_domain(GenericIommu())
    d.map(0x10000, 0xA0000, 4 * SZ_4K)
    for off in range(4):
        dev.dma_access(0x10000 + off * SZ_4K)
    assert d.unmap(0x11000, SZ_4K) == SZ_4K
    assert sorted(e.iova for e in d.iotlb.dump()) == [0x10000, 0x12000, 0x13000]
    c = d.counters()
    assert (c.syncs, c.range_invalidations, c.full_flushes) == (1, 1, 0)


def test_gather_and_unmap_fast():
    d, (dev,) = dma_domain(GenericIommu())
    d.map(0, 0x100000, 16 * SZ_4K)
    for page in range(16):
        dev.dma_access(page * SZ_4K)
    g = IotlbGather()
    assert g.empty
    d.unmap_fast(0, SZ_4K, g)
    d.unmap_fast(SZ_4K, SZ_4K, g)        # touches: merged
    assert (g.start, g.end) == (0, 2 * SZ_4K - 1)
    assert d.counters().syncs == 0
    d.unmap_fast(8 * SZ_4K, SZ_4K, g)    # disjoint: the old range is synced first
    assert d.counters().syncs == 1 and (g.start, g.end) == (8 * SZ_4K, 9 * SZ_4K - 1)
    assert dev.dma_access(8 * SZ_4K + 4) == 0x108004  # not synced yet: still cached
    assert d.counters().stale_unmapped == 1
    d.iotlb_sync(g)
    assert g.empty and d.counters().syncs == 2
    with pytest.raises(IommuFault):
        dev.dma_access(8 * SZ_4K)
    with pytest.raises(IovaTypeError):
        d.unmap_fast(0, SZ_4K, None)


def lifo_reuse_workload(domain, devices, rounds, seed=1):
    """A DMA workload whose freed addresses come straight back (like the
    rcache's LIFO magazines): each round unmaps a live buffer, maps a new
    buffer (another physical page) at the address just freed, and has
    devices read every live buffer. Returns how many accesses reached a page
    other than the one currently mapped."""
    rng = random.Random(seed)
    free = [0x10000 + i * SZ_2M for i in range(31)][::-1]
    live = {}
    next_page = 0x100000000
    wrong = 0
    for _ in range(rounds):
        if live and (len(live) > 8 or rng.random() < 0.5):
            iova = rng.choice(sorted(live))
            size = live.pop(iova)[1]
            assert domain.unmap(iova, size) == size
            free.append(iova)
        iova = free.pop()
        size = rng.choice([SZ_4K, 3 * SZ_4K, SZ_2M - 0x10000])
        domain.map(iova, next_page, size)
        live[iova] = (next_page, size)
        next_page += SZ_2M
        for base, (paddr, size) in live.items():
            for dev in devices:
                off = rng.randrange(0, size, 8)
                wrong += dev.dma_access(base + off, rng.random() < 0.5) != paddr + off
    return wrong


def test_strict_driver_never_serves_stale_translations():
    d, devs = dma_domain(GenericIommu(tlb_entries=32, tlb_ways=4), "nic", "disk")
    assert lifo_reuse_workload(d, devs, 1500) == 0
    c = d.counters()
    assert c.stale_hits == 0 and d.stale_translations() == []
    assert c.iotlb_hits > 1000 and c.syncs == c.unmaps > 500
    d.check()


@pytest.mark.parametrize("erratum,drop_rate", [(False, 1.0), (True, 0.0)])
def test_ipmmu_without_lost_flushes_is_safe(erratum, drop_rate):
    d, devs = dma_domain(IpmmuVmsa(erratum=erratum, erratum_drop_rate=drop_rate), "sdhi0")
    assert lifo_reuse_workload(d, devs, 800) == 0
    c = d.counters()
    assert c.stale_hits == 0 and c.full_flushes == c.syncs == c.unmaps
    assert c.range_invalidations == 0  # whole-context flushes only


# ---- the IPMMU erratum -----------------------------------------------------------------------

def test_ipmmu_erratum_stale_translation_proof():
    """Map A at X, let the device fill its IOTLB entry, unmap (the sync's
    flush is lost), map B at X: the device's next access goes to A."""
    ipmmu = IpmmuVmsa("ipmmu-hc0", erratum=True)
    d, (dev,) = dma_domain(ipmmu, "ehci0")
    X, A, B = 0x40000, 0x7000_0000, 0x7100_0000
    d.map(X, A, SZ_4K)
    assert dev.dma_access(X + 0x10) == A + 0x10       # miss: IOTLB filled
    assert d.unmap(X, SZ_4K) == SZ_4K                  # sync issued, flush lost
    d.map(X, B, SZ_4K)                                 # the allocator reuses X
    assert d.iova_to_phys(X + 0x20) == B + 0x20        # the table is right...
    assert dev.dma_access(X + 0x20, write=True) == A + 0x20  # ...the device is not
    (rec,) = d.stale_translations()
    assert rec == StaleTranslation(X + 0x20, A + 0x20, B + 0x20, d.op_count, True, "ehci0")
    assert rec.kind == "remapped"
    c = d.counters()
    assert (c.stale_hits, c.stale_remapped, c.invalidations_lost, c.syncs) == (1, 1, 1, 1)
    # flush_iotlb_all does take effect
    d.flush_iotlb_all()
    assert dev.dma_access(X) == B
    assert d.counters().stale_hits == 1


def test_ipmmu_erratum_under_reuse_is_caught():
    d, devs = dma_domain(IpmmuVmsa(erratum=True), "usb")
    wrong = lifo_reuse_workload(d, devs, 400)
    c = d.counters()
    assert wrong > 0
    assert c.stale_remapped > 0 and c.stale_hits == len(d.stale_translations())
    assert c.invalidations_lost == c.syncs == c.unmaps
    # every recorded remapped access is one the workload saw go astray
    assert c.stale_remapped <= wrong <= c.stale_hits


def test_ipmmu_erratum_drop_rate_is_reproducible():
    runs = []
    for _ in range(2):
        d, devs = dma_domain(IpmmuVmsa(erratum=True, erratum_drop_rate=0.3, seed=5), "usb")
        lifo_reuse_workload(d, devs, 300)
        c = d.counters()
        runs.append((c.invalidations_lost, c.stale_hits))
    assert runs[0] == runs[1]
    assert 0 < runs[0][0] < 300


def test_ipmmu_wraparound_skips_syncs():
    """With the wraparound allocator the driver skips every sync. A one-way
    allocator never reuses an address before its wrap flush, so the device
    only ever sees current mappings; the window that remains is an access
    to a buffer already unmapped (recorded as "unmapped")."""
    d, (dev,) = dma_domain(IpmmuVmsa(erratum=True), "usb", type="DMA")
    dev.detach()
    d.set_attr(DomainAttr.IOVA_ALLOCATOR, "wraparound")
    dev.attach(d)
    space = [0x10000 + i * SZ_4K for i in range(64)]
    for lap in range(3):
        for i, iova in enumerate(space):
            paddr = 0x1_0000_0000 + (lap * 64 + i) * SZ_4K
            d.map(iova, paddr, SZ_4K)
            assert dev.dma_access(iova + 4) == paddr + 4
            d.unmap(iova, SZ_4K)
        d.flush_iotlb_all()  # the allocator wraps
    c = d.counters()
    assert c.stale_hits == 0 and c.syncs == 0 and c.syncs_skipped == 3 * 64
    assert c.full_flushes == 3 and c.invalidations_lost == 0
    # the remaining window: the device touches a buffer after its unmap
    d.map(space[0], 0x5000, SZ_4K)
    dev.dma_access(space[0])
    d.unmap(space[0], SZ_4K)
    assert dev.dma_access(space[0]) == 0x5000
    assert [s.kind for s in d.stale_translations()] == ["unmapped"]


def test_ipmmu_wraparound_with_a_reusing_allocator_is_unsafe():
    """Skipping syncs is only safe with a one-way allocator: reuse the
    addresses at once (the rbtree/rcache way) and stale hits appear even
    without the erratum."""
    d = IpmmuVmsa().domain_alloc("DMA")
    d.set_attr(DomainAttr.IOVA_ALLOCATOR, IovaAllocator.WRAPAROUND)
    dev = Device("usb")
    dev.attach(d)
    assert lifo_reuse_workload(d, [dev], 300) > 0
    assert d.counters().stale_remapped > 0


def test_ipmmu_flush_when_idle():
    ipmmu = IpmmuVmsa(flush_when_idle=True)
    d = ipmmu.domain_alloc("DMA")
    d.set_attr(DomainAttr.IOVA_ALLOCATOR, "wraparound")
    dev = Device("usb")
    dev.attach(d)
    d.map(0x1000, 0xA000, SZ_4K)
    d.map(0x2000, 0xB000, SZ_4K)
    dev.dma_access(0x1000)
    dev.dma_access(0x2000)
    d.unmap(0x1000, SZ_4K)
    assert d.counters().idle_flushes == 0  # 0x2000 still mapped
    d.unmap(0x2000, SZ_4K)
    assert d.counters().idle_flushes == 1 and len(d.iotlb) == 0
    d.map(0x1000, 0xC000, SZ_4K)
    assert dev.dma_access(0x1000) == 0xC000
    d.unmap(0x1000, SZ_4K)
    d.unmap(0x1000, SZ_4K)  # nothing unmapped: nothing left to flush
    c = d.counters()
    assert (c.idle_flushes, c.stale_hits, c.syncs_skipped) == (2, 0, 4)


def test_domain_reset_hook_flushes():
    d, (dev,) = dma_domain(IpmmuVmsa(erratum=True))
    d.map(0, 0x1000, SZ_4K)
    dev.dma_access(0)
    d.unmap(0, SZ_4K)
    d.map(0, 0x2000, SZ_4K)
    d.reset()
    assert dev.dma_access(0) == 0x2000
    c = d.counters()
    assert (c.resets, c.stale_hits) == (1, 0)


# ---- IPMMU binding and contexts ------------------------------------------------------------------

def test_ipmmu_is_set_up_at_first_attach():
    ipmmu = IpmmuVmsa("ipmmu-ds0")
    d = ipmmu.domain_alloc("DMA")
    assert d.geometry == DomainGeometry() and d.pgtable is None
    with pytest.raises(IommuNotReady):
        d.map(0, 0, SZ_4K)
    assert d.iova_to_phys(0) is None
    d.flush_iotlb_all()  # unbound: nothing to flush
    Device("sata").attach(d)
    assert d.geometry == DomainGeometry(0, 0xFFFFFFFF, True)
    assert d.pgsize_bitmap == SZ_4K | SZ_2M | SZ_1G
    assert (d.pgtable.ias, d.pgtable.oas) == (32, 40)
    d.map(SZ_1G, 0xFF_0000_0000, SZ_1G)  # a 1G block at the top of the 40-bit output
    assert [m.level for m in d.mappings()] == [1]
    with pytest.raises(IommuRangeError, match="aperture"):
        d.map(0xFFFFF000, 0, 2 * SZ_4K)


def test_ipmmu_instances_and_contexts():
    a, b = IpmmuVmsa("ipmmu-a", num_contexts=2), IpmmuVmsa("ipmmu-b")
    dom = a.domain_alloc("DMA")
    Device("d0", iommu=a).attach(dom)
    with pytest.raises(IommuAttachError, match="bound to IPMMU ipmmu-a"):
        dom.attach_device(Device("d1", iommu=b))
    Device("d2", iommu=a).attach(dom)          # same instance: fine
    assert a.contexts_in_use == 1
    # a domain allocated through one instance binds to the device's instance
    dom_b = a.domain_alloc("UNMANAGED")
    Device("d3", iommu=b).attach(dom_b)
    assert (a.contexts_in_use, b.contexts_in_use) == (1, 1)
    dom2 = a.domain_alloc("DMA")
    Device("d4", iommu=a).attach(dom2)
    with pytest.raises(IommuBusy, match="no free context"):
        a.domain_alloc("DMA").attach_device(Device("d5", iommu=a))
    for dev in list(dom2.devices):
        dev.detach()
    dom2.free()
    a.domain_alloc("DMA").attach_device(Device("d6", iommu=a))
    assert a.contexts_in_use == 2
    with pytest.raises(IommuAttachError, match="not an IPMMU"):
        dom.attach_device(Device("d7", iommu=GenericIommu()))
    with pytest.raises(IovaValueError):
        IpmmuVmsa(num_contexts=17)
    with pytest.raises(IovaValueError):
        IpmmuVmsa(erratum_drop_rate=1.5)


# ---- counters and speed --------------------------------------------------------------------------

def test_counters():
    d, (dev,) = dma_domain(GenericIommu())
    d.map(0, SZ_2M, SZ_2M + SZ_4K)        # one block + one page
    dev.dma_access(0)
    dev.dma_access(8)
    dev.dma_access(SZ_2M)
    d.unmap(0, SZ_4K)                       # splits the block
    d.flush_iotlb_all()
    c = d.counters()
    assert (c.maps, c.unmaps, c.pages_mapped, c.bytes_mapped) == (1, 1, 2, SZ_2M + SZ_4K)
    assert (c.pages_unmapped, c.bytes_unmapped, c.block_splits) == (1, SZ_4K, 1)
    assert (c.iotlb_hits, c.iotlb_misses, c.accesses) == (1, 2, 3)
    assert (c.syncs, c.full_flushes, c.stale_hits) == (1, 1, 0)
    assert c.mapped_bytes == SZ_2M
    assert c.as_dict()["maps"] == 1
    assert d.op_count == 6  # map, three accesses, unmap (with its sync), flush


def test_batches_through_the_domain():
    d, (dev,) = dma_domain(GenericIommu())
    iovas = [i * SZ_4K for i in range(64)]
    assert d.map_many(iovas, [0x1_0000_0000 + i for i in iovas], [SZ_4K] * 64) == 64
    paddrs, status = dev.dma_access_many(iovas + iovas, write=True)
    assert list(paddrs[:64]) == [0x1_0000_0000 + i for i in iovas]
    assert sum(1 for s in status if s == 1) == 64
    assert d.unmap_many(iovas, [SZ_4K] * 64) == [SZ_4K] * 64
    with pytest.raises(IommuMappingExists) as info:
        d.map_many([0, SZ_4K, 0], [0, 0, 0], [SZ_4K] * 3)
    assert info.value.done == 2
    assert d.counters().syncs == 64


def test_million_operation_simulation_takes_seconds():
    """map / device access / unmap, a million operations through the
    per-call Python API, on the IPMMU with the erratum (so every unmap
    takes the flush path)."""
    d, (dev,) = dma_domain(IpmmuVmsa(erratum=True, tlb_entries=128), "usb")
    m, u, a = d.map, d.unmap, dev.dma_access
    t0 = time.perf_counter()
    for i in range(333_334):
        iova = (i % 1024) << 12
        m(iova, iova + 0x8000_0000, SZ_4K)
        a(iova + 8)
        u(iova, SZ_4K)
    elapsed = time.perf_counter() - t0
    c = d.counters()
    assert c.maps + c.accesses + c.unmaps == 1_000_002
    assert elapsed < 20, elapsed
    d.check()
