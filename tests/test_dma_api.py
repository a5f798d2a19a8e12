"""The DMA API and the cookie calls: what they hand out, the kernel's
rules they follow, and the misuse they refuse."""
import pytest

from pyiova import dma
from pyiova.cookie import DmaCookie, cookie_of, get_dma_cookie, get_msi_cookie, put_dma_cookie
from pyiova.device import DMA_BIT_MASK, Device
from pyiova.dma import DmaDirection as D
from pyiova.drivers import GenericIommu, IpmmuVmsa
from pyiova.errors import DmaApiError, DmaMappingError, IovaError, IovaValueError
from pyiova.iommu import DomainAttr, DomainType


def setup(dev=None, driver=None, type=DomainType.DMA):
    driver = driver or GenericIommu("smmu", ias=40)
    dom = driver.domain_alloc(type)
    dev = dev or Device("dev0", is_pci=True, dma_mask=DMA_BIT_MASK(64))
    dev.attach(dom)
    return dom, dev


def test_map_page_keeps_the_offset_and_maps_whole_granules():
    dom, dev = setup()
    addr = dma.map_page(dev, 0x1234_5678, 0x2000, D.TO_DEVICE)
    assert addr & 0xFFF == 0x678                   # the buffer's offset in its page
    iova = addr & ~0xFFF
    assert dom.iova_to_phys(iova) == 0x1234_5000
    assert dom.iova_to_phys(iova + 0x2000) == 0x1234_7000   # offset + size spans 3 pages
    assert dma.mappings(dom)[iova][1] == 0x2000
    dma.unmap_page(dev, addr, 0x2000, D.TO_DEVICE)
    assert dom.iova_to_phys(iova) is None and not dma.mappings(dom)


def test_pci_devices_try_below_4g_first_then_stop_for_good():
    dom, dev = setup()
    first = dma.map_page(dev, 0x1000, 0x1000)
    assert first < 1 << 32                          # 32-bit first, top-down: 0xfffff000
    assert first == 0xFFFFF000
    cookie = cookie_of(dom)
    cookie.iovad.reserve(1, 0xFFFFF)                # the 32-bit space runs out
    high = dma.map_page(dev, 0x2000, 0x1000)
    assert high >= 1 << 32 and not cookie.uses_32bit_first(dev)
    plat = Device("platform", dma_mask=DMA_BIT_MASK(64))
    plat.attach(dom)
    assert cookie.uses_32bit_first(plat) is False   # only PCI devices get the trick


def test_the_forced_aperture_clamps_the_limit():
    ipmmu = IpmmuVmsa("ipmmu")
    dom = ipmmu.domain_alloc(DomainType.DMA)
    dev = Device("sdhi", dma_mask=DMA_BIT_MASK(40))
    dev.attach(dom)
    addr = dma.map_page(dev, 0x4000_0000, 0x1000)
    assert addr == 0xFFFFF000                       # 40-bit mask, 32-bit aperture


def test_map_sg_is_one_iova_contiguous_range():
    dom, dev = setup()
    sg = dma.map_sg(dev, [(0x10_0100, 0x100), (0x20_0000, 0x1800), (0x30_0000, 0x1000)],
                    D.FROM_DEVICE)
    assert sg.length == 0x1000 + 0x2000 + 0x1000
    assert sg.dma_addrs[0] == sg.iova + 0x100
    assert sg.dma_addrs[1] == sg.iova + 0x1000 and sg.dma_addrs[2] == sg.iova + 0x3000
    assert dom.iova_to_phys(sg.iova + 0x3000) == 0x30_0000
    dma.unmap_sg(dev, sg, D.FROM_DEVICE)
    assert dom.iova_to_phys(sg.iova) is None


def test_coherent_buffers_use_the_coherent_mask():
    dev = Device("old", dma_mask=DMA_BIT_MASK(64), coherent_dma_mask=DMA_BIT_MASK(30))
    dom, dev = setup(dev)
    buf = dma.alloc_coherent(dev, 100)
    assert buf.dma_addr < 1 << 30 and buf.size == 100
    assert dom.iova_to_phys(buf.dma_addr) == buf.paddr
    dma.free_coherent(dev, buf)
    with pytest.raises(DmaApiError):
        dma.free_coherent(dev, buf)


def test_unmap_misuse_is_refused_and_changes_nothing():
    dom, dev = setup()
    addr = dma.map_page(dev, 0x5000, 0x800, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="never mapped"):
        dma.unmap_page(dev, addr + 0x10000, 0x800, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="size"):
        dma.unmap_page(dev, addr, 0x1000, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="FROM_DEVICE"):
        dma.unmap_page(dev, addr, 0x800, D.FROM_DEVICE)
    other = Device("other", is_pci=True)
    other.attach(dom)
    with pytest.raises(DmaApiError):
        dma.unmap_page(other, addr, 0x800, D.TO_DEVICE)
    assert dom.iova_to_phys(addr & ~0xFFF) == 0x5000
    dma.unmap_page(dev, addr, 0x800, D.TO_DEVICE)
    with pytest.raises(DmaApiError):
        dma.unmap_page(dev, addr, 0x800, D.TO_DEVICE)  # a double unmap
    with pytest.raises(DmaApiError):
        dma.map_page(dev, 0x5000, 0x10, D.NONE)
    with pytest.raises(IovaValueError):
        dma.map_page(dev, 0x5000, 0, D.TO_DEVICE)
    with pytest.raises(IovaValueError):
        dma.map_page(dev, 0x5000, 16, 7)
    cookie_of(dom).check()
    dom.check()


def test_exhaustion_is_a_mapping_error_and_leaves_nothing_behind():
    ipmmu = IpmmuVmsa("ipmmu")
    dom = ipmmu.domain_alloc(DomainType.DMA)
    dev = Device("big")
    dev.attach(dom)
    dma.map_page(dev, 0, 1 << 31)                    # half the aperture
    with pytest.raises(DmaMappingError):
        dma.map_page(dev, 0, 1 << 31)
    assert len(dma.mappings(dom)) == 1


def test_cookie_lifecycle_errors():
    driver = GenericIommu("smmu")
    dom = driver.domain_alloc(DomainType.DMA)
    cookie = get_dma_cookie(dom)
    assert cookie_of(dom) is cookie and str(cookie.type) == "iova"
    with pytest.raises(IovaValueError, match="already"):
        get_dma_cookie(dom)
    put_dma_cookie(dom)
    with pytest.raises(IovaValueError, match="no cookie"):
        put_dma_cookie(dom)
    with pytest.raises(IovaValueError, match="unmanaged"):
        get_msi_cookie(dom, 0x800_0000)              # MSI cookies: unmanaged domains only
    un = driver.domain_alloc(DomainType.UNMANAGED)
    msi = get_msi_cookie(un, 0x800_0000).init_domain(4096)
    with pytest.raises(IovaValueError, match="already"):
        get_msi_cookie(un, 0x900_0000)
    dev = Device("vfio")
    assert msi.alloc_iova(dev, 0x1000, 0) == 0x800_0000
    assert msi.alloc_iova(dev, 0x1000, 0) == 0x800_1000
    with pytest.raises(IovaValueError, match="granule"):
        msi.alloc_iova(dev, 0x800, 0)
    with pytest.raises(IovaError, match="initialised"):
        DmaCookie().alloc_iova(dev, 0x1000, 1 << 32)
    with pytest.raises(IovaValueError):
        DmaCookie("best-fit")
    c = DmaCookie().init_domain(4096)
    with pytest.raises(IovaValueError, match="already initialised"):
        c.init_domain(16384)


def test_the_allocator_attribute_picks_the_cookie_type():
    ipmmu = IpmmuVmsa("ipmmu")
    for name in ("wraparound", "reset-when-empty", "iova"):
        dom = ipmmu.domain_alloc(DomainType.DMA)
        dom.set_attr(DomainAttr.IOVA_ALLOCATOR, name)
        dev = Device("d-" + name)
        dev.attach(dom)
        dma.map_page(dev, 0x1000, 0x1000)
        assert str(cookie_of(dom).type) == name


def test_410_cookie_follows_the_seeds_dma_iommu():
    c = DmaCookie("iova", kernel="4.10").init_domain(4096, 0, 0xFFFFFFFF, True)
    dev = Device("usb")
    a = c.alloc_iova(dev, 5 * 4096, 0xFFFFFFFF)
    assert c.iovad.find(a >> 12) == (a >> 12, (a >> 12) + 4)     # no rounding to 8
    assert c.iovad.state()["dma32"] == 0xFFFFF                    # 4.10: the end pfn
    c.free_iova(a, 5 * 4096)
    assert c.iovad.find(a >> 12) is None                         # straight to the tree


@pytest.mark.parametrize("kernel, sticky", [("6.12", True), ("6.1", False), ("4.10", False)])
def test_only_612_stops_trying_below_4g_after_a_failure(kernel, sticky):
    """6.12 gives a PCI device's below-4 GiB attempts up for good once one
    fails; 6.1 (and 4.10/4.11) try below 4 GiB on every allocation."""
    c = DmaCookie("iova", kernel=kernel).init_domain(4096, 0, (1 << 39) - 1, True)
    dev = Device("nvme", is_pci=True, dma_mask=DMA_BIT_MASK(64))
    low = c.alloc_iova(dev, 4096, DMA_BIT_MASK(64))
    assert low == 0xFFFFF000                        # below 4 GiB first, top-down
    c.iovad.reserve(1, 0xFFFFE)                     # the rest of the 32-bit space
    high = c.alloc_iova(dev, 4096, DMA_BIT_MASK(64))
    assert high >= 1 << 32                          # the attempt below 4 GiB failed
    c.free_iova(low, 4096)
    c.iovad.flush_rcaches()                         # 0xfffff is free in the tree again
    again = c.alloc_iova(dev, 4096, DMA_BIT_MASK(64))
    assert (again >= 1 << 32) == sticky
    assert c.uses_32bit_first(dev) == (not sticky)
    c.check()


def test_61_forcedac_never_tries_below_4g():
    c = DmaCookie("iova", kernel="6.1", forcedac=True).init_domain(4096, 0, (1 << 39) - 1, True)
    dev = Device("nvme", is_pci=True, dma_mask=DMA_BIT_MASK(64))
    assert c.alloc_iova(dev, 4096, DMA_BIT_MASK(64)) == (1 << 39) - 4096
    assert not c.uses_32bit_first(dev)


def test_61_cookie_has_the_flush_queue_and_the_fixed_depot():
    c = DmaCookie("iova", kernel="6.1", ncpus=1).init_domain(4096, 0, (1 << 32) - 1, True,
                                                             flush_queue=True)
    assert c.flush_queue and c.iovad.kernel == "6.1"
    dev = Device("nic", is_pci=True, dma_mask=DMA_BIT_MASK(64))
    # 2 full magazines and 32 in the depot, and one more free to spill
    n = 127 * 34 + 1
    addrs = [c.alloc_iova(dev, 4096, DMA_BIT_MASK(32), cpu=0) for _ in range(n)]
    queued = [c.free_iova(a, 4096, lazy=True, cpu=0) for a in addrs]
    assert all(queued)
    c.advance(10)                                   # the timer: everything to the rcache
    st = c.iovad.rcache_stats()[0]
    assert (st["loaded"], st["prev"], st["depot"]) == ([1], [127], 32)
    assert len(c.iovad) == n - 127                  # one magazine spilled into the tree
    c.check()


@pytest.mark.parametrize("kernel, start", [("6.12", 0x100), ("6.1", 1), ("4.10", 1)])
def test_an_unforced_aperture_start_binds_only_612(kernel, start):
    """6.1 and 4.10 start the space at the device's DMA base (0) and take
    the aperture's start only when the aperture is forced; 6.12 always."""
    c = DmaCookie("iova", kernel=kernel).init_domain(4096, 0x100000, (1 << 32) - 1, False)
    assert c.start_pfn == start
    forced = DmaCookie("iova", kernel=kernel).init_domain(4096, 0x100000, (1 << 32) - 1, True)
    assert forced.start_pfn == 0x100
