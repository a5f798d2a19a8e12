"""A small simulated system for the tests of failed DMA calls: a driver, a
DMA domain with a cookie, devices, live mappings of every kind and the odd
devices out; its state as bytes (a checkpoint of the whole graph); and its
twin (the same system restored from such bytes), on which the tests replay
what the kernel itself does when such a call fails, as the reference.
"""
import enum
import types

from pyiova import checkpoint, dma
from pyiova.cookie import cookie_of, get_dma_cookie
from pyiova.device import DMA_BIT_MASK, Device
from pyiova.dma import DmaDirection
from pyiova.drivers import GenericIommu, IpmmuVmsa
from pyiova.iommu import DomainAttr, DomainType, IotlbGather

TO, FROM, BI, NONE = (DmaDirection.TO_DEVICE, DmaDirection.FROM_DEVICE,
                      DmaDirection.BIDIRECTIONAL, DmaDirection.NONE)

_NAMES = ("drv", "dom", "idom", "udom", "pci", "plat", "zero", "lone", "idev")
_DEVICES = ("pci", "plat", "zero", "lone", "idev")


class World:
    """A driver, a DMA domain with a cookie of two CPU slots, devices, live
    mappings of every kind, and the odd ones out (a device attached
    nowhere, one in an identity domain, one whose masks leave no IOVA
    space). policy: the domain's IOVA_ALLOCATOR ("iova", "wraparound",
    "reset-when-empty"), lazy: the flush queue (drivers that have one)."""

    def __init__(self, driver, policy="iova", lazy=False, mappings=True):
        self.drv = driver
        self.dom = driver.domain_alloc(DomainType.DMA)
        self.dom.set_attr(DomainAttr.IOVA_ALLOCATOR, policy)
        if lazy:
            self.dom.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
        get_dma_cookie(self.dom, ncpus=2)
        self.pci = Device("pci0", dma_mask=DMA_BIT_MASK(64), is_pci=True)
        self.plat = Device("plat0")
        self.zero = Device("zero", dma_mask=0, coherent_dma_mask=0xFFF)
        for dev in (self.pci, self.plat, self.zero):
            dev.attach(self.dom)
        dma.dma_cookie(self.pci)
        if mappings:
            self.page = dma.map_page(self.pci, 0x1234_5678, 0x2000, TO)
            self.sg = dma.map_sg(self.plat, [(0x10_0100, 0x100), (0x20_0000, 0x1800)], FROM,
                                 cpu=1)
            self.coh = dma.alloc_coherent(self.plat, 100)
            self.gone = dma.alloc_coherent(self.plat, 4096)
            dma.free_coherent(self.plat, self.gone)
            self.pci.dma_access(self.page)
            self.plat.dma_access(self.coh.dma_addr, True)
        self.lone = Device("lone")
        self.idom = driver.domain_alloc(DomainType.IDENTITY)
        self.idev = Device("idev")
        self.idev.attach(self.idom)
        self.udom = driver.domain_alloc(DomainType.UNMANAGED)

    @property
    def cookie(self):
        return cookie_of(self.dom)

    def graph(self):
        return tuple(getattr(self, name) for name in _NAMES)

    def snapshot(self):
        """The whole system as bytes."""
        return checkpoint.dumps(self.graph())

    def content(self):
        """What a checkpoint of the system holds, as plain nested values:
        equal for two systems in the same state even where the bytes of
        their pickles differ (pickle shares a str object where the objects
        do, and a restored system shares fewer than the original)."""
        return canonical(self.graph(), {})

    def twin(self, blob):
        """The system as `blob` saved it, its devices numbered as this
        one's (a restored device gets a new number, which the checkpoint
        would show)."""
        t = World.__new__(World)
        for name, value in zip(_NAMES, checkpoint.loads(blob)):
            setattr(t, name, value)
        for name in _DEVICES:
            getattr(t, name).id = getattr(self, name).id
        for name in ("page", "sg", "coh", "gone"):
            if name in self.__dict__:
                setattr(t, name, getattr(self, name))
        return t

    def parts(self):
        """The state in named parts, to say which one differs."""
        c = self.cookie
        al = c.allocator
        return {
            "allocator": al.save() if al is not None else None,
            "iova domain": c.iovad.save() if c.iovad is not None else None,
            "cookie": (c.flushes, c.resets, c.clock_ms, sorted(d.name for d in c._no_32bit)),
            "mappings": [(iova, m.dev.name, m.size, m.direction, m.kind, m.length, m.addr,
                          m.paddr) for iova, m in c.dma_mappings.items()],
            "coherent pages": c.dma_phys.__getstate__(),
            "page table": self.dom.pgtable.save(),
            "iotlb": self.dom.iotlb.save(),
            "counters": self.dom.counters(),
            "operations": self.dom.op_count,
        }

    def check(self):
        self.dom.check()
        self.cookie.check()


def generic(**kw):
    return World(GenericIommu("smmu", ias=40), **kw)


def ipmmu(**kw):
    return World(IpmmuVmsa("ipmmu", erratum=True, erratum_drop_rate=0.5, seed=3), **kw)


def canonical(obj, seen):
    """obj as pickle sees it, as nested tuples: what a pyiova object saves
    (its reduce: the C words, or its state), containers item by item, a
    second reference to an object as ("ref", its number)."""
    if obj is None or type(obj) in (int, float, str, bytes, bool):
        return (type(obj).__name__, obj)
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        return ("global", obj.__module__, obj.__qualname__)
    if id(obj) in seen:
        return ("ref", seen[id(obj)][0])
    seen[id(obj)] = (len(seen), obj)                 # (keeps obj alive: ids stay unique)
    if isinstance(obj, enum.Enum):
        return (type(obj).__name__, obj.value)
    if type(obj) in (list, tuple):
        return (type(obj).__name__, tuple(canonical(x, seen) for x in obj))
    if type(obj) is dict:
        return ("dict", tuple((canonical(k, seen), canonical(v, seen)) for k, v in obj.items()))
    if type(obj) in (set, frozenset):
        return (type(obj).__name__, tuple(sorted(repr(canonical(x, seen)) for x in obj)))
    reduced = obj.__reduce_ex__(5)
    return (type(obj).__qualname__,) + tuple(canonical(x, seen) for x in reduced[1:3])


def assert_same(world, expected_blob, expected_parts=None, what="the call", content=None):
    """The system's bytes equal expected_blob (or, given content, what it
    holds equals content), or the error names the parts that differ."""
    if content is not None:
        if world.content() == content:
            return
    elif world.snapshot() == expected_blob:
        return
    if expected_parts is None:
        raise AssertionError("%s changed the system" % what)
    now = world.parts()
    diff = [k for k in now if now[k] != expected_parts[k]]
    raise AssertionError("%s changed the system: %s" % (what, ", ".join(diff) or
                                                        "(something outside the parts)"))


# ---- what the kernel does when these calls fail ------------------------------------
#
# Each step is run on a twin of the system instead of the DMA call. The DMA
# call must leave the system exactly as the step leaves the twin: what the
# kernel's own failure changes (a failed IOVA allocation still flushes the
# rcaches and records max32_alloc_size; an IOVA whose iommu_map failed goes
# back through iommu_dma_free_iova), and nothing else.

def failed_alloc(dev, length, limit=None, cpu=None):
    """iommu_dma_alloc_iova fails (dma_map_page, dma_alloc_coherent, dma_map_sg)."""
    def step(t):
        d = getattr(t, dev)
        top = d.dma_mask if limit is None else getattr(d, limit)
        assert t.cookie.alloc_iova(d, length, top, cpu=cpu) == 0
    return step


def refused_map(dev, paddr, length, segments=None, limit=None, cpu=None, prot=1):
    """The IOVA is allocated, iommu_map (or iommu_map_sg, after `segments`
    of its lengths mapped) fails, what was mapped is unmapped and synced,
    and the IOVA is freed."""
    def step(t):
        d = getattr(t, dev)
        top = d.dma_mask if limit is None else getattr(d, limit)
        iova = t.cookie.alloc_iova(d, length, top, cpu=cpu)
        assert iova
        done = 0
        for seg_paddr, seg_len in segments or ():
            t.dom.map(iova + done, seg_paddr, seg_len, prot)
            done += seg_len
        try:
            t.dom.map(iova + done, paddr, length - done, prot)
        except Exception:
            pass
        else:
            raise AssertionError("the IOMMU took the map")
        if done:
            gather = IotlbGather()
            t.dom.unmap_fast(iova, done, gather)
            t.dom.iotlb_sync(gather)
        t.cookie.free_iova(iova, length, cpu=cpu)
    return step
