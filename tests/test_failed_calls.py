"""A failed call changes nothing: good DMA calls interleaved with failing
ones, on systems of every driver and allocator policy.

After each call that raises, the whole system (mappings, the coherent page
allocator, the cookie's counters and sticky flags, page tables, IOTLBs, the
domain's counters and operation clock: everything a checkpoint holds) must
be exactly as it was before it:

* a call refused for its arguments, or as misuse the kernel's DMA-API
  debugging reports, leaves the checkpoint's bytes unchanged;
* a mapping that cannot be made (DmaMappingError) leaves the system exactly
  as the kernel's own failure leaves it, which is checked against a twin of
  the system on which only the kernel's steps were run
  (tests/dma_world.py): a failed IOVA allocation still flushes the rcaches
  and records max32_alloc_size, a PCI device's failed 32-bit attempt still
  drops its 32-bit-first flag, the wraparound allocator may still wrap and
  flush; nothing of the DMA layer's own work (pages for a coherent
  buffer, a live-mapping record) may remain.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dma_world import FROM, TO, BI, NONE, World, assert_same, failed_alloc
from pyiova import dma
from pyiova.cookie import cookie_of
from pyiova.dma import CoherentBuffer, SgMapping
from pyiova.drivers import GenericIommu, IpmmuVmsa
from pyiova.errors import DmaApiError, DmaMappingError, IovaError

SYSTEMS = [("generic", "iova", False), ("generic", "iova", True), ("generic", "wraparound", False),
           ("generic", "reset-when-empty", False), ("ipmmu", "iova", False),
           ("ipmmu", "wraparound", False), ("ipmmu", "reset-when-empty", False)]
DIRECTIONS = st.sampled_from([TO, FROM, BI])
# sizes from a few bytes to a GiB: enough of the large ones fill a 32-bit
# device's 4 GiB and make maps fail for want of space
SIZES = st.one_of(st.integers(1, 0x3000), st.integers(0x4000, 1 << 20),
                  st.sampled_from([1 << 28, 1 << 29, 1 << 30, 1 << 31, (1 << 32) + 1]))


def _paddr(size):
    """Where a buffer of size bytes starts: anywhere for small ones, on a
    1 GiB boundary for large ones (block mappings: a GiB mapped page by
    page would make every snapshot slow)."""
    if size < 1 << 24:
        return st.integers(0, 1 << 36)
    return st.integers(0, 64).map(lambda k: k << 30)


def make(system):
    driver, policy, lazy = system
    drv = GenericIommu("smmu", ias=40) if driver == "generic" else \
        IpmmuVmsa("ipmmu", erratum=True, erratum_drop_rate=0.5, seed=7)
    return World(drv, policy, lazy)


def _align(n, g):
    return (n + g - 1) & -g


class Run:
    """The system, and what the test knows is live in it."""

    def __init__(self, w, data):
        self.w, self.data = w, data
        self.pages = [(w.pci, w.page, 0x2000, TO)]         # (dev, addr, size, direction)
        self.sgs = [(w.plat, w.sg, FROM)]
        self.bufs = [(w.plat, w.coh)]
        self.gone = [(w.plat, w.gone)]
        self.failed = {"argument": 0, "mapping": 0}

    def draw(self, strategy, label):
        return self.data.draw(strategy, label=label)

    def dev(self):
        return self.draw(st.sampled_from([self.w.pci, self.w.plat]), "device")

    def cpu(self):
        return self.draw(st.sampled_from([None, None, 0, 1]), "cpu")

    # -- good calls (a map may still fail for want of space) -------------------
    def good(self):
        kind = self.draw(st.sampled_from(["map_page", "map_page", "unmap_page", "map_sg", "big",
                                          "unmap_sg", "alloc_coherent", "free_coherent",
                                          "access", "advance"]), "good call")
        w, g = self.w, self.w.cookie.granule
        if kind in ("map_page", "big"):
            dev, d, cpu = self.dev(), self.draw(DIRECTIONS, "dir"), self.cpu()
            size = self.draw(SIZES if kind == "map_page" else
                             st.integers(1 << 30, 1 << 33), "size")
            paddr = self.draw(_paddr(size), "paddr")
            length = _align((paddr & (g - 1)) + size, g)
            a = self.mapping(lambda: dma.map_page(dev, paddr, size, d, cpu=cpu),
                             failed_alloc(_name(w, dev), length, cpu=cpu))
            if a is not None:
                self.pages.append((dev, a, size, d))
        elif kind == "unmap_page" and self.pages:
            dev, a, size, d = self.pages.pop(self.draw(st.integers(0, len(self.pages) - 1), "i"))
            dma.unmap_page(dev, a, size, d, cpu=self.cpu())
        elif kind == "map_sg":
            dev, d, cpu = self.dev(), self.draw(DIRECTIONS, "dir"), self.cpu()
            segs = self.draw(st.lists(st.tuples(st.integers(0, 1 << 36),
                                                SIZES.filter(lambda n: n < 1 << 24)),
                                      min_size=1, max_size=4), "segments")
            total = sum(_align((p & (g - 1)) + n, g) for p, n in segs)
            sg = self.mapping(lambda: dma.map_sg(dev, segs, d, cpu=cpu),
                              failed_alloc(_name(w, dev), total, cpu=cpu))
            if sg is not None:
                self.sgs.append((dev, sg, d))
        elif kind == "unmap_sg" and self.sgs:
            dev, sg, d = self.sgs.pop(self.draw(st.integers(0, len(self.sgs) - 1), "i"))
            dma.unmap_sg(dev, sg, d, cpu=self.cpu())
        elif kind == "alloc_coherent":
            dev, size, cpu = self.dev(), self.draw(SIZES, "size"), self.cpu()
            buf = self.mapping(lambda: dma.alloc_coherent(dev, size, cpu=cpu),
                               failed_alloc(_name(w, dev), _align(size, g), "coherent_dma_mask",
                                            cpu=cpu))
            if buf is not None:
                self.bufs.append((dev, buf))
        elif kind == "free_coherent" and self.bufs:
            dev, buf = self.bufs.pop(self.draw(st.integers(0, len(self.bufs) - 1), "i"))
            dma.free_coherent(dev, buf, cpu=self.cpu())
            self.gone.append((dev, buf))
        elif kind == "access" and self.pages:
            dev, a, size, d = self.draw(st.sampled_from(self.pages), "mapping")
            try:
                dev.dma_access(a, d is not TO)
            except IovaError:
                pass                     # a fault through a stale entry is a result
        elif kind == "advance":
            w.cookie.advance(self.draw(st.integers(0, 50), "ms"))

    def mapping(self, call, kernel_step):
        """call() may fail for want of space: then the system must be as the
        kernel's failed allocation leaves it."""
        blob = self.w.snapshot()
        try:
            return call()
        except DmaMappingError:
            pass
        self.failed["mapping"] += 1
        twin = self.w.twin(blob)
        kernel_step(twin)
        assert_same(self.w, None, twin.parts(), "a failed map", twin.content())
        return None

    # -- calls refused for their arguments, or as misuse --------------------------
    def bad(self):
        w, g = self.w, self.w.cookie.granule
        options = [
            lambda: dma.map_page(self.dev(), self.draw(st.sampled_from(
                [True, None, 1.5, "4096", -1, 2**64]), "paddr"), 4096),
            lambda: dma.map_page(self.dev(), 0x1000, self.draw(st.sampled_from(
                [0, -1, 2**64, 4095.9, "4096", True]), "size")),
            lambda: dma.map_page(self.dev(), 0x1000, 4096, self.draw(st.sampled_from(
                [NONE, 7, "TO_DEVICE", None]), "direction")),
            lambda: dma.map_page(self.dev(), 0x1000, 4096, TO, cpu=self.draw(st.sampled_from(
                [-1, 2, 99, "0"]), "cpu")),
            lambda: dma.map_page(w.zero, 0x1000, 4096),
            lambda: dma.alloc_coherent(w.zero, 4096),
            lambda: dma.alloc_coherent(self.dev(), self.draw(st.sampled_from(
                [0, 2**64, 1.0, None]), "size")),
            lambda: dma.map_sg(self.dev(), self.draw(st.sampled_from(
                [None, [], [(0x1000, 4095.9)], [("4096", "4096")], [(True, True)],
                 [(0x1000, 2**32)], [(0x1000, 4096), None]]), "segments")),
            lambda: dma.unmap_page(w.pci, 0x7777000, 4096),
        ]
        if self.pages:
            options += self._bad_unmaps(*self.draw(st.sampled_from(self.pages), "mapping"),
                                        self.draw(st.integers(1, g - 1), "offset"))
        if self.sgs:
            dev, sg, d = self.draw(st.sampled_from(self.sgs), "sg")
            forged = SgMapping(sg.iova + 0x10, sg.length, sg.segments, sg.dma_addrs)
            options += [lambda: dma.unmap_sg(dev, forged, d),
                        lambda: dma.unmap_page(dev, sg.iova, sg.length, d)]
        if self.bufs:
            options += self._bad_frees(*self.draw(st.sampled_from(self.bufs), "buffer"), g)
        # a freed buffer whose address and pages were handed out again is
        # live: freeing it is a good call, not misuse
        def key(dev, buf):
            return id(dev), buf.dma_addr, buf.paddr, _align(buf.size, g)
        live = {key(dev, buf) for dev, buf in self.bufs}
        gone = [(dev, buf) for dev, buf in self.gone if key(dev, buf) not in live]
        if gone:
            freed = self.draw(st.sampled_from(gone), "freed buffer")
            options.append(lambda: dma.free_coherent(*freed))
        call = options[self.draw(st.integers(0, len(options) - 1), "bad call")]
        before = w.snapshot()
        parts = w.parts()
        with pytest.raises((DmaApiError, DmaMappingError)):
            call()
        self.failed["argument"] += 1
        assert_same(w, before, parts, "a refused call")


    def _bad_unmaps(self, dev, a, size, d, off):
        other = self.w.plat if dev is self.w.pci else self.w.pci
        return [lambda: dma.unmap_page(dev, a + off, size, d),
                lambda: dma.unmap_page(dev, a - off, size, d),
                lambda: dma.unmap_page(dev, a, size + 1, d),
                lambda: dma.unmap_page(dev, a, size, FROM if d is not FROM else TO),
                lambda: dma.unmap_page(other, a, size, d),
                lambda: dma.unmap_page(dev, a, size, d, cpu=5)]

    @staticmethod
    def _bad_frees(dev, buf, g):
        return [lambda: dma.free_coherent(dev, CoherentBuffer(buf.paddr, buf.dma_addr,
                                                              buf.size + g)),
                lambda: dma.free_coherent(dev, CoherentBuffer(buf.paddr + g, buf.dma_addr,
                                                              buf.size))]


def _name(w, dev):
    return "pci" if dev is w.pci else "plat"


@pytest.mark.parametrize("system", SYSTEMS, ids=["-".join(map(str, s)) for s in SYSTEMS])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_failing_calls_change_nothing(system, data):
    run = Run(make(system), data)
    for _ in range(data.draw(st.integers(5, 30), label="calls")):
        if data.draw(st.integers(0, 2), label="fail?") == 0:
            run.bad()
        else:
            run.good()
    run.w.check()
    assert cookie_of(run.w.dom).allocator is not None


def test_a_failed_coherent_allocation_leaves_the_next_buffer_its_address():
    """alloc_coherent(dev, 2**40) fails on a 32-bit IPMMU; the next buffer
    gets the pages it would have got (0x40000000 here, the first), and a
    failed 2**64 or 2**48 request poisons nothing."""
    for big in (2**40, 2**48, 2**64, 2**64 - 1):
        w = World(IpmmuVmsa("ipmmu"), mappings=False)
        with pytest.raises((DmaMappingError, DmaApiError)):
            dma.alloc_coherent(w.plat, big)
        buf = dma.alloc_coherent(w.plat, 4096)
        assert buf.paddr == 0x4000_0000
        again = dma.alloc_coherent(w.plat, 8192)
        assert again.paddr == 0x4000_1000
        dma.free_coherent(w.plat, buf)
        assert dma.alloc_coherent(w.plat, 4096).paddr == 0x4000_0000   # freed pages reused
