"""The 2017 review, as tests: a USB-style device (a coherent descriptor
buffer mapped for its whole life, plus streaming map/unmap churn) on a
Renesas IPMMU whose unmap-path TLB invalidation is unreliable."""
import os

import pytest

from pyiova import dma
from pyiova.cookie import cookie_of
from pyiova.device import Device
from pyiova.dma import DmaDirection
from pyiova.drivers import GenericIommu, IpmmuVmsa
from pyiova.errors import DmaMappingError
from pyiova.iommu import DomainAttr, DomainType
from pyiova.iommu_errors import IommuAttrValueError

LONG = int(os.environ.get("PYIOVA_LONG_MAPS", "30000"))
BUF = 0x8000_0000


def usb_on_ipmmu(allocator, **ipmmu_kw):
    ipmmu = IpmmuVmsa("ipmmu-hc", erratum=True, **ipmmu_kw)
    dom = ipmmu.domain_alloc(DomainType.DMA)
    dom.set_attr(DomainAttr.IOVA_ALLOCATOR, allocator)
    dev = Device("ehci")
    dev.attach(dom)
    ring = dma.alloc_coherent(dev, 4096)          # lives as long as the device
    return dom, dev, ring


def stream(dev, ring, n, pages=1):
    """n bulk transfers: map, the device reads the buffer and the ring,
    unmap. Returns how many maps succeeded before the first failure."""
    for i in range(n):
        try:
            addr = dma.map_page(dev, BUF + (i % 256) * 0x100000, pages * 4096,
                                DmaDirection.TO_DEVICE)
        except DmaMappingError:
            return i
        dev.dma_access(addr)
        dev.dma_access(ring.dma_addr)
        dma.unmap_page(dev, addr, pages * 4096, DmaDirection.TO_DEVICE)
    return n


def test_reset_when_empty_never_resets_and_runs_out_after_a_bounded_number_of_maps():
    dom, dev, ring = usb_on_ipmmu("reset-when-empty")
    pages = 64                                     # 256 KiB transfers, 64-page aligned
    maps = stream(dev, ring, 10**6, pages=pages)
    # The 32-bit aperture holds 2^20 pages = 16384 aligned 64-page blocks: the
    # one holding pfn 0 (below start_pfn) and the one under the coherent ring
    # at the top are never usable, and nothing freed is ever reused.
    assert maps == (1 << 20) // pages - 2
    cookie = cookie_of(dom)
    assert cookie.resets == 0                      # the ring keeps the count above zero
    assert dom.counters().stale_hits == 0
    dma.free_coherent(dev, ring)                   # only now does the space reset
    assert cookie.resets == 1


def test_wraparound_without_tlb_syncs_never_fails_and_is_never_stale():
    dom, dev, ring = usb_on_ipmmu("wraparound")
    assert ring.dma_addr == 0x1000                 # one-way from the bottom: pfn 1
    assert stream(dev, ring, LONG, pages=64) == LONG
    c = dom.counters()
    cookie = cookie_of(dom)
    assert c.stale_hits == 0
    assert c.syncs == 0                            # no per-unmap invalidation at all
    # 64-page aligned blocks: 2^20 / 64 in the aperture, less the one under
    # the ring; the map after each full pass wraps, with one flush
    per_pass = (1 << 20) // 64 - 1
    assert cookie.stats()["wraps"] == (LONG - 1) // per_pass >= 1
    assert c.full_flushes == cookie.stats()["wraps"]
    cookie.check()


def test_the_plain_tree_allocator_on_the_same_ipmmu_gives_stale_translations():
    dom, dev, ring = usb_on_ipmmu("iova")
    assert stream(dev, ring, 2000) == 2000
    c = dom.counters()
    assert c.stale_hits > 0                        # freed IOVAs came straight back
    rec = dom.stale_translations(limit=1)[0]
    assert rec.kind == "remapped" and rec.device == "ehci"


def test_strict_generic_driver_never_stale_under_heavy_reuse():
    iommu = GenericIommu("smmu")
    dom = iommu.domain_alloc(DomainType.DMA)
    dev = Device("nic", is_pci=True)
    dev.attach(dom)
    assert stream(dev, dma.alloc_coherent(dev, 8192), 3000) == 3000
    assert dom.counters().stale_hits == 0


def test_wraparound_flushes_exactly_at_wraps():
    dom, dev, ring = usb_on_ipmmu("wraparound")
    cookie = cookie_of(dom)
    space = cookie.stats()["end_pfn"] - cookie.stats()["start_pfn"] + 1
    pages = 4096
    per_wrap = space // pages                      # 16 MiB transfers
    n = 3 * per_wrap + 2
    assert stream(dev, ring, n, pages=pages) == n
    wraps = cookie.stats()["wraps"]
    assert wraps == 3
    assert dom.counters().full_flushes == wraps


def test_flush_queue_never_reuses_before_the_covering_flush():
    iommu = GenericIommu("smmu")
    dom = iommu.domain_alloc(DomainType.DMA)
    dom.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
    dev = Device("nvme", is_pci=True)
    dev.attach(dom)
    freed = set()
    flushes = dom.counters().full_flushes
    for i in range(2000):
        addr = dma.map_page(dev, BUF + i * 4096, 4096, DmaDirection.FROM_DEVICE)
        if dom.counters().full_flushes != flushes:
            flushes = dom.counters().full_flushes
            freed.clear()                          # a flush covers all that was queued
        assert addr not in freed
        dev.dma_access(addr, write=True)
        dma.unmap_page(dev, addr, 4096, DmaDirection.FROM_DEVICE)
        freed.add(addr)
        if i % 300 == 299:
            cookie_of(dom).advance(10)            # the timer fires
    cookie = cookie_of(dom)
    assert cookie.flush_queue and cookie.stats()["fq_started"] > 0
    assert dom.counters().syncs == 0               # lazy: no per-unmap sync
    assert dom.counters().stale_hits == 0


def test_ipmmu_cannot_use_a_flush_queue():
    ipmmu = IpmmuVmsa("ipmmu")
    dom = ipmmu.domain_alloc(DomainType.DMA)
    with pytest.raises(IommuAttrValueError, match="no deferred-flush support"):
        dom.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
