"""Checkpoints: cookies of every allocator type, page tables, IOTLBs, IOMMU
domains with their drivers and devices, and whole simulations survive
pickle and copy.deepcopy, and the copies then do exactly what the original
does; damaged checkpoints are refused with an IovaError and nothing leaks."""
import copy
import pickle
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultpoints import each_failure_point
from test_lifetime import ROUNDS, assert_flat

from pyiova import IovaDomain, IovaError, IovaValueError, checkpoint, dma
from pyiova import device as device_module
from pyiova.iotlb import Iotlb
from pyiova.pgtable import IoPgtable
from pyiova._pyiova import lib
from pyiova.allocators import EV_QUEUED, EV_RESET, PfnAllocator
from pyiova.checkpoint import CheckpointError, _restore_allocator
from pyiova.cookie import DmaCookie, put_dma_cookie
from pyiova.device import DMA_BIT_MASK, Device
from pyiova.drivers import GenericIommu, IpmmuVmsa
from pyiova.errors import IovaClosed, IovaExhausted, IovaInvalidFree
from pyiova.iommu import DomainAttr, DomainType, IommuDomain, IovaAllocator
from pyiova.sim import Simulation, simulate

PAGE = 4096
TOP32 = (1 << 32) - 1


def pickled(obj):
    return pickle.loads(pickle.dumps(obj))


COPIES = {"pickle": pickled, "deepcopy": copy.deepcopy,
          "checkpoint": lambda o: checkpoint.loads(checkpoint.dumps(o))}


# ---- cookies ------------------------------------------------------------------

# name -> (DmaCookie arguments, init_domain arguments). The wraparound and
# reset-when-empty spaces are small so that a few hundred operations wrap
# them and empty them.
COOKIES = {
    "iova": ({}, {}),
    "iova-lazy": ({}, {"flush_queue": True}),
    "iova-tree": ({"rcache": False}, {}),
    "iova-4.10": ({"kernel": "4.10"}, {}),
    "iova-6.1": ({"kernel": "6.1"}, {}),
    "iova-lazy-6.1": ({"kernel": "6.1"}, {"flush_queue": True}),
    "wraparound": ({"allocator": "wraparound"},
                   {"aperture_end": (1 << 22) - 1, "reserved": [(0x80000, 0xfffff)]}),
    "reset-when-empty": ({"allocator": "reset-when-empty"}, {}),
}


class Pci(Device):
    """A PCI device with a 64-bit mask: the 32-bit-first attempt applies."""

    def __init__(self, name="pci"):
        super().__init__(name, DMA_BIT_MASK(64), DMA_BIT_MASK(64), True)


def make_cookie(kind):
    kw, init = COOKIES[kind]
    init = dict(init)
    cookie = DmaCookie(ncpus=2, **kw)
    cookie.init_domain(PAGE, 0, init.pop("aperture_end", (1 << 48) - 1), True, **init)
    return cookie


def drive(cookie, dev, seed, n, live):
    """n operations; returns what each produced. Frees now and then empty
    the space entirely (so that reset-when-empty resets)."""
    rng = random.Random(seed)
    lazy = cookie.flush_queue
    out = []
    for i in range(n):
        if live and (rng.random() < 0.45 or i % 97 == 96):
            drain = i % 97 == 96
            for iova, size in (list(live) if drain else [live.pop(rng.randrange(len(live)))]):
                out.append(cookie.free_iova(iova, size, lazy=lazy, cpu=i % 2))
            if drain:
                live.clear()
        else:
            size = rng.choice((1, 1, 2, 3, 8, 17, 32)) * PAGE
            iova = cookie.alloc_iova(dev, size, rng.choice((TOP32, (1 << 40) - 1)), cpu=i % 2)
            out.append(iova)
            if iova:
                live.append((iova, size))
        if i % 11 == 0:
            cookie.advance(rng.randrange(1, 8), cpu=i % 2)
    return out


def same_cookie(a, b):
    assert a.stats() == b.stats()
    assert (a.flushes, a.resets, a.clock_ms) == (b.flushes, b.resets, b.clock_ms)
    assert a.allocator.fq_due == b.allocator.fq_due
    if a.iovad is not None:
        assert a.iovad.ranges() == b.iovad.ranges()
        assert a.iovad.cached_pfns() == b.iovad.cached_pfns()
    if a.type.value == "wraparound":
        assert a.allocator.ranges() == b.allocator.ranges()
    a.check()
    b.check()


@pytest.mark.parametrize("kind", sorted(COOKIES))
@settings(max_examples=12, deadline=None)
@given(cut=st.integers(0, 600))
def test_cookie_copies_continue_like_the_original(kind, cut):
    cookie, dev = make_cookie(kind), Pci()
    live = []
    drive(cookie, dev, 1, cut, live)
    # the sticky 32-bit-first state is keyed by device: the copies bring
    # their own copy of it, found through the copied device
    copies = [(COPIES[how]((cookie, dev, live))) for how in sorted(COPIES)]
    # the allocator's quick copy (trace replay's candidate orders): the same
    # devices, a cookie of its own
    copies.append((cookie.restored(cookie.allocator_state()), dev, list(live)))
    for c, _, _ in copies:
        same_cookie(cookie, c)
    expected = drive(cookie, dev, 2, 600, live)
    for c, d, l in copies:
        assert drive(c, d, 2, 600, l) == expected
        same_cookie(cookie, c)


@pytest.mark.parametrize("kind", ["wraparound", "reset-when-empty", "iova-lazy"])
def test_the_interesting_state_is_there_at_the_cut(kind):
    """The continuation test above only means something if wraps, resets
    and queued frees happen before and after the cut."""
    cookie, dev = make_cookie(kind), Pci()
    live = []
    drive(cookie, dev, 1, 400, live)
    st = cookie.stats()
    assert {"wraparound": st["wraps"], "reset-when-empty": st["resets"],
            "iova-lazy": st["fq_queued"]}[kind] > 0
    twin, twin_dev, twin_live = pickled((cookie, dev, live))
    drive(cookie, dev, 2, 400, live)
    drive(twin, twin_dev, 2, 400, twin_live)
    assert twin.stats() == cookie.stats()
    assert {"wraparound": cookie.stats()["wraps"], "reset-when-empty": cookie.stats()["resets"],
            "iova-lazy": cookie.stats()["fq_flushes"] + cookie.flushes}[kind] > \
        {"wraparound": st["wraps"], "reset-when-empty": st["resets"],
         "iova-lazy": st["fq_flushes"]}[kind]


def test_the_quick_copy_leaves_nothing_shared_and_refuses_dma_mappings():
    cookie, dev = make_cookie("iova-lazy"), Pci()
    live = []
    drive(cookie, dev, 1, 300, live)
    state = cookie.allocator_state()
    twin = cookie.restored(state)
    assert twin.allocator is not cookie.allocator and twin.iovad is not cookie.iovad
    twin._no_32bit.add("another")
    assert "another" not in cookie._no_32bit
    # the state is bytes and numbers: restoring it twice gives two cookies
    assert drive(cookie.restored(state), dev, 3, 200, list(live)) == \
        drive(cookie.restored(state), dev, 3, 200, list(live))
    cookie.dma_mappings[0x1000] = object()
    with pytest.raises(IovaError, match="DMA mappings"):
        cookie.allocator_state()


def test_msi_cookie_round_trip():
    cookie = DmaCookie("msi", msi_base=0x8000000)
    cookie.init_domain(PAGE, 0, TOP32, True)
    dev = Device("its")
    first = [cookie.alloc_iova(dev, PAGE * (1 + i % 3), 0) for i in range(20)]
    cookie.free_iova(first[-1], PAGE * (1 + 19 % 3))
    for how in sorted(COPIES):
        twin = COPIES[how](cookie)
        assert [twin.alloc_iova(dev, PAGE, 0) for _ in range(5)] == \
            [cookie.alloc_iova(dev, PAGE, 0) for _ in range(5)]
        assert twin.stats() == cookie.stats()


def test_a_restored_allocator_shares_its_domain_through_the_memo():
    cookie = make_cookie("iova")
    copy_ = pickled(cookie)
    assert copy_.iovad is copy_.allocator.iovad
    assert copy_.iovad is not cookie.iovad


# ---- closed things are not saved --------------------------------------------------

def test_closed_objects_refuse_to_be_saved():
    dom = GenericIommu().domain_alloc(DomainType.DMA)
    dev = Device("d")
    dev.attach(dom)
    dma.map_page(dev, 0x1000_0000, PAGE)
    cookie = dom.iova_cookie
    dev.detach()
    put_dma_cookie(dom)
    for obj in (cookie, cookie.allocator):
        with pytest.raises(IovaClosed):
            pickle.dumps(obj)
        with pytest.raises(IovaClosed):
            copy.deepcopy(obj)
    dom.free()
    with pytest.raises(IovaClosed):
        pickle.dumps(dom)
    s = Simulation("usb", ops=100)
    s.run(50)
    s.close()
    with pytest.raises(IovaClosed):
        pickle.dumps(s)


# ---- page tables and IOTLBs ----------------------------------------------------------

def busy_hardware(seed=3):
    pt, tlb = IoPgtable(), Iotlb(32, 4, record_limit=50)
    rng = random.Random(seed)
    mapped = []
    for i in range(400):
        if mapped and rng.random() < 0.4:
            iova, size = mapped.pop(rng.randrange(len(mapped)))
            pt.unmap(iova, size if rng.random() < 0.8 else PAGE)
            if rng.random() < 0.3:
                tlb.invalidate_range(iova, PAGE)
        else:
            size = rng.choice((PAGE, 2 * PAGE, 1 << 21))
            iova = rng.randrange(0, 1 << 30, size)
            try:
                pt.map(iova, rng.randrange(0, 1 << 36, 1 << 21), size, rng.choice((1, 2, 3)))
                mapped.append((iova, size))
            except IovaError:
                pass
        if mapped:
            try:
                tlb.access(pt, rng.choice(mapped)[0] + rng.randrange(PAGE), rng.random() < 0.5,
                           op_index=i, dev_id=7)
            except IovaError:
                pass
    return pt, tlb


def test_page_table_and_iotlb_round_trip_then_behave_the_same():
    pt, tlb = busy_hardware()
    assert tlb.stats().stale_hits and tlb.stats().evictions and pt.stats().block_splits
    for how in ("pickle", "deepcopy"):
        pt2, tlb2 = COPIES[how]((pt, tlb))
        pt2.check()
        tlb2.check()
        assert list(pt2.leaves()) == list(pt.leaves()) and pt2.stats() == pt.stats()
        assert tlb2.dump() == tlb.dump() and tlb2.stats() == tlb.stats()
        assert tlb2.stale_records() == tlb.stale_records()
        assert tlb2.record_limit == tlb.record_limit == 50
        for i in range(300):
            iova = (i * 0x3001000) % (1 << 30)
            for t, p in ((tlb, pt), (tlb2, pt2)):
                try:
                    t.access(p, iova, i % 2 == 0, op_index=i)
                except IovaError:
                    pass
            if i % 50 == 0:
                assert pt.unmap(iova & ~0xfff, PAGE) == pt2.unmap(iova & ~0xfff, PAGE)
        assert tlb2.stats() == tlb.stats() and tlb2.dump() == tlb.dump()
        assert tlb2.stale_records() == tlb.stale_records()
        assert pt2.stats() == pt.stats()


SAVED_HW = tuple(x.save() for x in busy_hardware(5))     # (page table, IOTLB) words


@settings(max_examples=150, deadline=None)
@given(which=st.sampled_from((0, 1)), data=st.data())
def test_damaged_hardware_saves_are_refused_or_sound(which, data):
    cls = (IoPgtable, Iotlb)[which]
    good = bytearray(SAVED_HW[which])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] = data.draw(st.integers(0, 255))
    try:
        obj = cls.restore(bytes(good))
    except IovaValueError:
        return
    obj.check()                      # accepted: then it is sound, and usable
    pt = obj if which == 0 else IoPgtable.restore(SAVED_HW[0])
    tlb = obj if which == 1 else Iotlb(16)
    for iova in range(0, 1 << 30, 1 << 21):
        try:
            tlb.access(pt, iova + PAGE)
            pt.unmap(iova, PAGE)
        except IovaError:
            pass
    obj.check()


@pytest.mark.parametrize("cls", [IoPgtable, Iotlb])
def test_truncated_or_foreign_hardware_saves_are_refused(cls):
    good = SAVED_HW[cls is Iotlb]
    for bad in (good[:-8], good + bytes(8), good[:8], bytes(len(good)),
                IovaDomain().save()):
        with pytest.raises(IovaValueError):
            cls.restore(bad)
    with pytest.raises(IovaValueError):
        cls.restore(good[:-3])
    with pytest.raises(IovaError):
        cls.restore("not bytes")


# ---- saved allocator words ------------------------------------------------------------

def allocator_reduce(kind):
    cookie, dev = make_cookie(kind), Pci()
    drive(cookie, dev, 4, 300, [])
    fn, (atype, iovad, words) = cookie.allocator.__reduce__()
    return fn, atype, iovad, words


SAVED_ALLOCATORS = {kind: allocator_reduce(kind) for kind in sorted(COOKIES)}


@pytest.mark.parametrize("kind", sorted(COOKIES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_damaged_allocator_saves_are_refused_or_sound(kind, data):
    fn, atype, iovad, words = SAVED_ALLOCATORS[kind]
    bad = bytearray(words)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(bad) - 1))
        bad[i] = data.draw(st.integers(0, 255))
    dom = copy.deepcopy(iovad) if iovad is not None else None
    before = dom.save() if dom is not None else None
    try:
        allocator = fn(atype, dom, bytes(bad))
    except IovaValueError:
        # refused: the domain it was given is exactly as it was
        assert (dom.save() if dom is not None else None) == before
        return
    allocator.check()
    for i in range(50):
        try:
            allocator.alloc(1 + i % 5, (1 << 20) - 1)
        except IovaError:
            pass
    allocator.check()


def test_allocator_saves_fit_only_their_own_domain():
    fn, atype, iovad, words = SAVED_ALLOCATORS["reset-when-empty"]
    assert fn(atype, copy.deepcopy(iovad), words).stats()["resets"] > 0
    with pytest.raises(IovaValueError):
        fn(atype, IovaDomain(4096, 1, ncpus=2), words)       # its retired ranges are not there
    with pytest.raises(IovaValueError):
        fn(atype, None, words)
    with pytest.raises(IovaValueError):
        fn("wraparound", copy.deepcopy(iovad), words)
    with pytest.raises(IovaValueError):
        fn(atype, copy.deepcopy(iovad), words[:-8])



@pytest.mark.parametrize("kind", sorted(COOKIES))
def test_a_copy_saves_to_the_same_words(kind):
    """The words are canonical: a copy's own save is the original's, so
    nothing the restore rebuilt (pfn sets, ring heads, tree shapes) differs
    in what it decides."""
    fn, atype, iovad, words = SAVED_ALLOCATORS[kind]
    twin = fn(atype, copy.deepcopy(iovad), words)
    assert twin.__reduce__()[1][2] == words
    assert pickled(twin).__reduce__()[1][2] == words


@pytest.mark.parametrize("kind", sorted(COOKIES))
def test_save_and_restore_without_pickle(kind):
    """PfnAllocator.save / restore, as IovaDomain's: the type comes from the
    saved state when not named, and a named type must match it."""
    fn, atype, iovad, words = SAVED_ALLOCATORS[kind]
    twin = PfnAllocator.restore(words, copy.deepcopy(iovad))
    assert twin.type == atype and twin.save() == words
    other = next(t for t in ("msi", "wraparound") if t != atype)
    with pytest.raises(IovaValueError):
        PfnAllocator.restore(words, copy.deepcopy(iovad), type=other)


def test_checkpoints_that_name_the_older_restore_function_still_load():
    """Checkpoints written before PfnAllocator.restore name
    pyiova.checkpoint._restore_allocator: it still rebuilds the allocator."""
    fn, atype, iovad, words = SAVED_ALLOCATORS["wraparound"]

    class Older:
        def __reduce__(self):
            return (_restore_allocator, (atype, iovad, words))

    twin = pickle.loads(pickle.dumps(Older()))
    assert type(twin) is PfnAllocator and twin.type == atype
    assert twin.save() == words


# ---- what the cookie's frees check survives a checkpoint -----------------------------------

TOP_PFN = (1 << 40) - 1
# A reserved region of the domain: never the cookie's. Two pages, the size
# of the lazy ranges and below what is live, so that only whose it is
# refuses its free.
RESERVED = (0x80000, 0x80001)


def attempt(fn, *args, **kw):
    """What a call did: its result, or the class and message of its refusal."""
    try:
        return ("ok", fn(*args, **kw))
    except IovaError as exc:
        return (type(exc).__name__, str(exc))


def lazy_allocator():
    """An IOVA allocator with a flush queue: one range cached, six queued
    over two rings, seventeen live, and a reserved region. Every range is 2
    pages, so that a range of the words can stand in for another."""
    a = PfnAllocator("iova", ncpus=2)
    a.iovad.reserve(*RESERVED)
    a.enable_flush_queue(2, 8, 10)
    pfns = [a.alloc(2, TOP_PFN, cpu=i % 2)[0] for i in range(24)]
    a.free(pfns[0], 2, cpu=0)
    for i, p in enumerate(pfns[1:7]):
        assert a.free_lazy(p, 2, i, cpu=i % 2) & EV_QUEUED
    return a, pfns[0], pfns[1:7], pfns[7:]


def lazy_script(a, cached, queued, live):
    """Refusals first, then the queue drains, is flushed, and is reused."""
    out = [attempt(a.free_lazy, queued[0], 2, 20, cpu=1),   # queued already
           attempt(a.free, queued[1], 2, cpu=0),            # ...and a strict free of one
           attempt(a.free, RESERVED[0], RESERVED[1] - RESERVED[0] + 1),
           attempt(a.free_lazy, RESERVED[0], RESERVED[1] - RESERVED[0] + 1, 20),
           attempt(a.free, cached, 2),
           attempt(a.free, live[0] + 1, 1),
           attempt(a.free_lazy, live[0], 4, 20),           # another size class
           attempt(a.free_lazy, live[0], 2, 20, cpu=5)]    # no such ring
    for i, p in enumerate(live):
        ev = a.free_lazy(p, 2, 30 + i, cpu=i % 2)
        if not ev & EV_QUEUED:                              # ring full: flush, retry
            a.fq_flushed()
            ev = a.free_lazy(p, 2, 30 + i, cpu=i % 2)
        out.append(ev)
    out += [a.fq_due, attempt(a.fq_flushed, True, 1), a.fq_due,
            attempt(a.free_lazy, queued[0], 2, 60)]        # retired: in an rcache now
    out += [attempt(a.alloc, 1 + i % 3, TOP_PFN, cpu=i % 2) for i in range(30)]
    out += [a.stats(), a.iovad.ranges(), a.iovad.cached_pfns()]
    a.check()
    return out


def msi_allocator():
    """Six live MSI allocations of 1, 2, 3, 1, 2, 3 pages (a seventh undone)."""
    a = PfnAllocator("msi", start_pfn=0x8000, end_pfn=0x8fff)
    starts = [a.alloc(1 + i % 3, 0)[0] for i in range(7)]
    a.free(starts[-1], 1 + 6 % 3)
    return a, starts[:-1], [1 + i % 3 for i in range(6)]


def msi_script(a, starts, sizes):
    """Only the latest allocation can be undone, whole; then in order."""
    out = [attempt(a.free, starts[0], sizes[0]),
           attempt(a.free, starts[-1] + 1, sizes[-1] - 1),
           attempt(a.free, starts[-1], sizes[-1] + 1)]
    for p, n in reversed(list(zip(starts, sizes))[2:]):
        out.append(attempt(a.free, p, n))
    out.append(attempt(a.free, starts[0], sizes[0]))      # still not the latest
    out += [attempt(a.alloc, 2, 0) for _ in range(5)]
    out.append(a.stats())
    a.check()
    return out


def reset_allocator():
    """Reset-when-empty: ten 3-page ranges, the first three freed (retired,
    not reused), and a reserved region."""
    a = PfnAllocator("reset-when-empty", ncpus=1)
    a.iovad.reserve(*RESERVED)
    pfns = [a.alloc(3, TOP_PFN)[0] for _ in range(10)]
    for p in pfns[:3]:
        a.free(p, 3)
    return a, pfns[:3], pfns[3:]


def reset_script(a, retired, live):
    out = [attempt(a.free, RESERVED[0], RESERVED[1] - RESERVED[0] + 1),
           attempt(a.free, retired[0], 3),
           attempt(a.free, live[0], 2)]
    out += [attempt(a.free, p, 3) for p in live]           # the last one resets
    out += [attempt(a.alloc, 3, TOP_PFN) for _ in range(4)]
    out += [a.stats(), a.iovad.ranges()]
    a.check()
    return out


def continues_alike(make, script):
    """The copies, taken after make(), give the very answers the original
    gives to script; returns them."""
    a, *args = make()
    copies = [COPIES[how](a) for how in sorted(COPIES)]
    expected = script(a, *args)
    for twin in copies:
        assert script(twin, *args) == expected
    return expected


def refused(outcome, cls):
    return outcome[0] == cls.__name__


def test_a_lazy_copy_refuses_what_the_original_refuses():
    out = continues_alike(lazy_allocator, lazy_script)
    assert [o[0] for o in out[:8]] == ["IovaInvalidFree"] * 7 + ["IovaCpuError"]
    assert "flush queue" in out[0][1] and "not handed out" in out[2][1]
    assert all(ev & EV_QUEUED for ev in out[8:25])
    assert out[25] is not None and out[26] == ("ok", None) and out[27] is None
    assert out[28][0] != "ok"


def test_an_msi_copy_undoes_in_the_original_order():
    out = continues_alike(msi_allocator, msi_script)
    assert [o[0] for o in out[:3]] == ["IovaInvalidFree"] * 3
    assert out[3:7] == [("ok", 0)] * 4                     # the four latest undone
    assert refused(out[7], IovaInvalidFree)
    _, starts, _ = msi_allocator()
    assert out[8] == ("ok", (starts[2], 0))                # the space is reused at once


def test_a_reset_when_empty_copy_refuses_and_resets_like_the_original():
    out = continues_alike(reset_allocator, reset_script)
    assert all(o[0] != "ok" for o in out[:3])
    assert "not handed out" in out[0][1] and "not handed out" in out[1][1]
    assert [o[1] & EV_RESET for o in out[3:10]] == [0] * 6 + [EV_RESET]
    assert out[-2]["resets"] == 1


def test_lost_flush_queue_entries_are_counted_in_the_copy_too():
    a = PfnAllocator("iova", ncpus=1)
    a.enable_flush_queue(1, 4, 10)
    p = a.alloc(2, TOP_PFN)[0]
    a.free_lazy(p, 2, 0)
    a.iovad.free(p)                                        # behind the queue's back
    with pytest.raises(IovaInvalidFree):
        a.fq_flushed(all_rings=True)
    assert a.stats()["fq_lost"] == 1
    for how in sorted(COPIES):
        twin = COPIES[how](a)
        assert twin.stats() == a.stats()
        twin.check()


# Saved words of the three states above; `layout` finds their parts.
LAZY = lazy_allocator()
SAVED_STATES = {"lazy": LAZY[0].__reduce__()[1], "msi": msi_allocator()[0].__reduce__()[1],
                "reset": reset_allocator()[0].__reduce__()[1]}


def as_words(data):
    return list(struct.unpack("<%dQ" % (len(data) // 8), data))


def layout(w):
    """Where each part of a saved cookie starts, following the layout
    csrc/iova_cookie_save.c documents (version 2)."""
    assert w[1] == 2
    pos, at = 15, {}
    if w[2] == lib.IOVA_COOKIE_WRAPAROUND:
        pos += 3 + 3 * w[pos + 2]
    if w[2] == lib.IOVA_COOKIE_RESET_WHEN_EMPTY:
        at["retired"] = pos
        pos += 1 + w[pos]
    if w[2] == lib.IOVA_COOKIE_MSI:
        at["msi"] = pos
        pos += 1 + w[pos]
    if w[2] in (lib.IOVA_COOKIE_IOVA, lib.IOVA_COOKIE_RESET_WHEN_EMPTY):
        at["live"] = pos
        pos += 1 + w[pos]
    at["fq"], at["rings"] = pos, []              # has_fq, then ten words when 1
    if w[pos]:
        ncpus, pos = w[pos + 1], pos + 11
    else:
        pos += 1
    for _ in range(ncpus if w[at["fq"]] else 0):
        at["rings"].append(pos)
        pos += 1 + 3 * w[pos]
    assert pos == len(w)
    return at


def members(w, at):
    """The members of the counted part whose count is at w[at], as a slice."""
    return slice(at + 1, at + 1 + w[at])


def entry(at, ring, k):
    """Where the k-th queued entry (pfn, pages, counter) of a ring starts."""
    return at["rings"][ring] + 1 + 3 * k


def replace_live(w, at, pfn):
    """The live set with its last member swapped for pfn, still ascending:
    every other word stays consistent, only pfn is wrong."""
    live = members(w, at["live"])
    w[live] = sorted(w[live][:-1] + [pfn])


def drop_last(w, count_at):
    """One member fewer in the part counted at count_at, count included."""
    del w[members(w, count_at).stop - 1]
    w[count_at] -= 1


CORRUPTIONS = {}       # name: (state, change(words, layout))


def corruption(name, state):
    def register(change):
        CORRUPTIONS[name] = (state, change)
        return change
    return register


@corruption("version 1", "lazy")
def _(w, at):
    w[1] = 1


@corruption("a live range left out", "lazy")
def _(w, at):
    drop_last(w, at["live"])


@corruption("a live pfn inside a range", "lazy")
def _(w, at):
    w[at["live"] + 1] += 1


@corruption("live pfns out of order", "lazy")
def _(w, at):
    i = at["live"] + 1
    w[i], w[i + 1] = w[i + 1], w[i]


@corruption("a live pfn twice", "lazy")
def _(w, at):
    w[at["live"] + 2] = w[at["live"] + 1]


@corruption("a queued range also live", "lazy")
def _(w, at):
    replace_live(w, at, w[entry(at, 0, 0)])


@corruption("a cached range live", "lazy")
def _(w, at):
    replace_live(w, at, LAZY[1])


@corruption("a live range also queued", "lazy")
def _(w, at):
    w[entry(at, 0, 0)] = w[at["live"] + 1]


@corruption("queued twice in a ring", "lazy")
def _(w, at):
    first, second = entry(at, 0, 0), entry(at, 0, 1)
    w[second:second + 2] = w[first:first + 2]


@corruption("queued in two rings", "lazy")
def _(w, at):
    first, other = entry(at, 0, 0), entry(at, 1, 0)
    w[other:other + 2] = w[first:first + 2]


@corruption("queued with another size class", "lazy")
def _(w, at):
    w[entry(at, 0, 0) + 1] = 4                   # the range is 2 pages


@corruption("queued count off", "lazy")
def _(w, at):
    w[at["fq"] + 8] += 1


@corruption("MSI stack one short", "msi")
def _(w, at):
    drop_last(w, at["msi"])


@corruption("MSI stack one long", "msi")
def _(w, at):
    w.insert(members(w, at["msi"]).stop, w[6] - 1)
    w[at["msi"]] += 1


@corruption("MSI first not at the start", "msi")
def _(w, at):
    w[at["msi"] + 1] = w[4] + 1


@corruption("MSI stack out of order", "msi")
def _(w, at):
    i = at["msi"] + 2
    w[i], w[i + 1] = w[i + 1], w[i]


@corruption("MSI latest at the bump pointer", "msi")
def _(w, at):
    w[members(w, at["msi"]).stop - 1] = w[6]


@corruption("MSI bump pointer moved", "msi")
def _(w, at):
    w[6] += 1


@corruption("a retired range live", "reset")
def _(w, at):
    replace_live(w, at, w[at["retired"] + 1])


@corruption("reset live count off", "reset")
def _(w, at):
    w[at["live"]] += 1


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_words_of_the_new_parts_are_refused(name):
    state, change = CORRUPTIONS[name]
    atype, iovad, data = SAVED_STATES[state]
    good = as_words(data)
    bad = list(good)
    change(bad, layout(good))
    assert bad != good
    dom = copy.deepcopy(iovad) if iovad is not None else None
    before = dom.save() if dom is not None else None
    with pytest.raises(IovaValueError):
        PfnAllocator.restore(struct.pack("<%dQ" % len(bad), *bad), dom, type=atype)
    assert (dom.save() if dom is not None else None) == before
    PfnAllocator.restore(data, dom, type=atype).check()   # the words as saved are fine on it


@pytest.mark.parametrize("state", sorted(SAVED_STATES))
def test_out_of_memory_while_restoring_the_new_parts(state):
    """Each allocation of a restore (the live set, the MSI stack, the rings
    and their set) failing in turn: a MemoryError, the domain untouched."""
    atype, iovad, data = SAVED_STATES[state]
    dom = copy.deepcopy(iovad) if iovad is not None else None
    before = dom.save() if dom is not None else None
    # the scenario ends with the first restore that meets no failure
    twin = []
    assert each_failure_point(
        lambda: twin.append(PfnAllocator.restore(data, dom, type=atype))) > 0
    assert len(twin) == 1
    assert (dom.save() if dom is not None else None) == before
    twin[0].check()


# ---- IOMMU domains, drivers, devices: the simulated system as a graph ---------------------

DRIVERS = {
    "generic": lambda: GenericIommu("g", tlb_entries=16, tlb_ways=4),
    "ipmmu": lambda: IpmmuVmsa("i", erratum=True, erratum_drop_rate=0.5, seed=9,
                               flush_when_idle=True, tlb_entries=16),
}


def dma_system(driver, allocator):
    iommu = DRIVERS[driver]()
    dom = iommu.domain_alloc(DomainType.DMA)
    dom.set_attr(DomainAttr.IOVA_ALLOCATOR, IovaAllocator(allocator))
    devs = [Device("a", DMA_BIT_MASK(32)), Device("b", DMA_BIT_MASK(32))]
    for d in devs:
        d.attach(dom)
    return iommu, dom, devs


def dma_traffic(devs, seed, n, held):
    """Maps, accesses and unmaps from two devices, and accesses to what was
    unmapped lately (stale when an invalidation was lost); what each access
    reached or why it failed. held: {"live": [...], "gone": [...]}."""
    rng = random.Random(seed)
    live, gone = held["live"], held["gone"]
    out = []
    for i in range(n):
        dev = devs[i % 2]
        r = rng.random()
        if live and r < 0.35:
            d, kind, what = live.pop(rng.randrange(len(live)))
            if kind == "page":
                dma.unmap_page(d, what[0], what[1])
                gone.append((d, what[0]))
            else:
                dma.free_coherent(d, what)
                gone.append((d, what.dma_addr))
            del gone[:-8]
        elif r < 0.7 and (live or gone):
            if live and (r < 0.55 or not gone):
                d, kind, what = rng.choice(live)
                iova = what[0] if kind == "page" else what.dma_addr
            else:
                d, iova = rng.choice(gone)
            try:
                out.append(d.dma_access(iova + rng.randrange(PAGE), rng.random() < 0.5))
            except IovaError as exc:
                out.append(type(exc).__name__)
        elif r < 0.9:
            size = rng.choice((1, 2, 5)) * PAGE
            iova = dma.map_page(dev, rng.randrange(1 << 20) * PAGE, size)
            live.append((dev, "page", (iova, size)))
            out.append(iova)
        else:
            buf = dma.alloc_coherent(dev, PAGE * rng.choice((1, 3)))
            live.append((dev, "coherent", buf))
            out.append((buf.dma_addr, buf.paddr))
    return out


def same_domain(a, b):
    assert a.counters() == b.counters()
    assert a.stale_translations() == b.stale_translations()
    assert list(a.mappings()) == list(b.mappings())
    assert a.iotlb.dump() == b.iotlb.dump()
    assert dma.mappings(a) == dma.mappings(b)
    if a.iova_cookie is not None:
        assert a.iova_cookie.stats() == b.iova_cookie.stats()
    assert [d.name for d in a.devices] == [d.name for d in b.devices]
    a.check()
    b.check()


@pytest.mark.parametrize("driver", sorted(DRIVERS))
@pytest.mark.parametrize("allocator", ["iova", "wraparound", "reset-when-empty"])
@settings(max_examples=6, deadline=None)
@given(cut=st.integers(0, 300))
def test_domain_graphs_continue_like_the_original(driver, allocator, cut):
    iommu, dom, devs = dma_system(driver, allocator)
    held = {"live": [], "gone": []}
    dma_traffic(devs, 1, cut, held)
    for how in sorted(COPIES):
        iommu2, dom2, devs2, held2 = COPIES[how]((iommu, dom, devs, held))
        # one graph: the references between the objects point into the copy
        assert all(d.domain is dom2 for d in devs2) and list(dom2.devices) == devs2
        assert dom2.ops is iommu2
        assert (dom.iova_cookie is None) == (dom2.iova_cookie is None)
        assert dom2.iova_cookie is None or dom2.iova_cookie.domain is dom2
        assert all(h[0] in devs2 for h in held2["live"] + held2["gone"])
        if driver == "ipmmu":
            assert dom2.priv.mmu is iommu2 and iommu2._contexts[dom2.priv.context] is dom2
        same_domain(dom, dom2)
    copies = [COPIES[how]((dom, devs, held)) for how in sorted(COPIES)]
    expected = dma_traffic(devs, 2, 300, held)
    for dom2, devs2, held2 in copies:
        assert dma_traffic(devs2, 2, 300, held2) == expected
        same_domain(dom, dom2)


def test_stale_records_keep_their_device_names(monkeypatch):
    iommu, dom, devs = dma_system("ipmmu", "iova")
    dma_traffic(devs, 1, 400, {"live": [], "gone": []})
    before = dom.stale_translations()
    assert before and {s.device for s in before} <= {"a", "b"}
    blob = pickle.dumps((iommu, dom, devs))
    # as in a fresh process: the device numbers of the records mean nothing
    monkeypatch.setattr(device_module, "_names", {})
    twin, twin_devs = pickle.loads(blob)[1:]
    assert twin.stale_translations() == before
    assert all(d.id not in {e.id for e in devs} for d in twin_devs)
    assert device_module.device_name(twin_devs[0].id) == "a"
    # once the old records are cleared, the saved names no longer apply
    twin.iotlb.clear_records()
    assert twin.stale_translations() == []


def test_the_erratum_random_state_travels():
    iommu, dom, devs = dma_system("ipmmu", "iova")
    twin = pickled(iommu)
    assert [twin._rng.random() for _ in range(5)] == [iommu._rng.random() for _ in range(5)]
    assert twin.erratum and twin.erratum_drop_rate == 0.5 and twin.flush_when_idle


# ---- a whole simulation -----------------------------------------------------------------

def outcome(result):
    out = result.as_dict(timeline=True)
    del out["elapsed_s"], out["ops_per_sec"]
    return out


@pytest.mark.parametrize("workload,policy,driver", [
    ("usb", "iova", "ipmmu"),
    ("usb", "wraparound", "ipmmu"),
    ("nic", "iova-lazy", "generic"),
    ("nvme", "reset-when-empty", "generic"),
    ("random", "iova-tree", "ipmmu"),
])
@settings(max_examples=3, deadline=None)
@given(cut=st.integers(0, 4000))
def test_a_checkpointed_simulation_resumes_to_the_same_result(workload, policy, driver, cut):
    kw = dict(ops=4000, seed=2, drop_rate=0.5, timeline=True)
    reference = outcome(simulate(workload, policy, driver, **kw))
    s = Simulation(workload, policy, driver, **kw)
    s.run(cut)
    blob = checkpoint.dumps(s)
    twin = copy.deepcopy(s)
    assert outcome(s.run().result()) == reference
    resumed = checkpoint.loads(blob)
    assert resumed.done == cut
    assert outcome(resumed.run(1000).run().result()) == reference
    assert outcome(twin.run().result()) == reference
    resumed.domain.check()


def test_simulation_chunks_and_results():
    s = Simulation("usb", "iova", "ipmmu", ops=3000, seed=1)
    assert not s.finished and s.done == 0
    s.run(1000)
    mid = s.result()
    assert mid.ops == 1000 and s.done == 1000
    s.run()
    assert s.finished and s.result().ops == 3000 and mid.ops == 1000
    s.close()
    assert s.result().ops == 3000
    with pytest.raises(IovaClosed):
        s.run(1)


# ---- damaged checkpoints ----------------------------------------------------------------

CHECKPOINT = checkpoint.dumps(Simulation("usb", "iova", "ipmmu", ops=2000, seed=1).run(1500))


def test_truncated_checkpoints_raise_a_clear_error():
    for cut in (0, 1, 10, len(CHECKPOINT) // 3, len(CHECKPOINT) // 2, len(CHECKPOINT) - 1):
        with pytest.raises(CheckpointError):
            checkpoint.loads(CHECKPOINT[:cut])
    with pytest.raises(IovaError):
        checkpoint.loads("a str")
    assert checkpoint.loads(CHECKPOINT).done == 1500


def test_a_damaged_memo_index_is_a_checkpoint_error_not_a_memory_error():
    """LONG_BINPUT of index 2**32 - 1 makes pickle size its memo for it
    (64 GiB): a damaged byte turned a MEMOIZE into one in a fuzzed run."""
    with pytest.raises(CheckpointError, match="memory"):
        checkpoint.loads(b"\x80\x04N" + b"r\xff\xff\xff\xff" + b".")


def test_running_out_of_memory_while_restoring_is_still_a_memory_error():
    blob = checkpoint.dumps(make_cookie("iova-lazy"))
    assert each_failure_point(lambda: checkpoint.loads(blob)) > 0


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_checkpoints_raise_an_iova_error_or_load(data):
    bad = bytearray(CHECKPOINT)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(bad) - 1))
        bad[i] = data.draw(st.integers(0, 255))
    try:
        checkpoint.loads(bytes(bad))
    except IovaError:
        pass


def test_every_damaged_byte_of_a_sealed_checkpoint_is_refused():
    """dumps() seals the pickle: whichever byte is damaged, to whatever
    value (0x71 is pickle's BINPUT, which can turn what loads into a tuple
    when nothing checks), loads() refuses it."""
    rng = random.Random(5)
    for i in range(len(CHECKPOINT)):
        for value in (0x71, rng.randrange(256)):
            if CHECKPOINT[i] == value:
                continue
            bad = bytearray(CHECKPOINT)
            bad[i] = value
            with pytest.raises(CheckpointError):
                checkpoint.loads(bytes(bad))


def test_the_seal():
    body = CHECKPOINT[:CHECKPOINT.rfind(checkpoint.SEAL)]
    assert pickle.loads(CHECKPOINT).done == 1500             # pickle reads it too
    assert checkpoint.loads(body).done == 1500                # a plain pickle loads
    for bad in (CHECKPOINT + b"\0", CHECKPOINT[:-3], body + b"junk", body[:-1]):
        with pytest.raises(CheckpointError):
            checkpoint.loads(bad)
    assert checkpoint.loads(bytearray(CHECKPOINT)).done == 1500
    assert checkpoint.loads(memoryview(CHECKPOINT)).done == 1500


UNSEALED = pickle.dumps(Simulation("usb", "iova", "ipmmu", ops=2000, seed=1).run(1500))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_damaged_unsealed_checkpoint_is_refused_or_runs(data):
    """Without the seal the states are checked as they are rebuilt: a
    damaged pickle is refused with an IovaError, or what it decodes to is
    sound enough to run to its end, raising nothing but pyiova errors."""
    bad = bytearray(UNSEALED)
    for _ in range(data.draw(st.integers(1, 3))):
        bad[data.draw(st.integers(0, len(bad) - 1))] = data.draw(st.integers(0, 255))
    try:
        sim = checkpoint.loads(bytes(bad))
    except IovaError:
        return
    if isinstance(sim, Simulation):
        try:
            sim.run().result()
        except IovaError:
            pass


def _damaged(mutate):
    """A checkpoint of a simulation that mutate(simulation) damaged."""
    s = Simulation("usb", "iova", "ipmmu", ops=2000, seed=1).run(700)
    mutate(s)
    return pickle.dumps(s)


@pytest.mark.parametrize("what,mutate", [
    ("a count that is a str", lambda s: setattr(s, "total", "2000")),
    ("a field missing", lambda s: delattr(s, "max_failures")),
    ("an unknown field", lambda s: setattr(s, "colour", 1)),
    ("a workload parameter its parser refuses", lambda s: setattr(s.workload, "inflight", 0)),
    ("a workload parameter that is nan", lambda s: setattr(s.workload, "in_ratio",
                                                           float("nan"))),
    ("a position past the end", lambda s: setattr(s._state, "pos", 5000)),
    ("a negative live count", lambda s: setattr(s._state, "live", -1)),
    ("a handle holding an address never mapped", lambda s: s._state.addr.update({99: 0x7000})),
    ("a result field of the wrong type", lambda s: setattr(s._res, "elapsed_s", "fast")),
    ("a timeline sample of the wrong type", lambda s: s._res.timeline.append((1, 2))),
    ("a cookie of another domain", lambda s: setattr(s._dom, "iova_cookie", DmaCookie())),
    ("a device the domain does not list", lambda s: s._dom._devices.clear()),
    ("a counter that is negative", lambda s: setattr(s._dom._pc, "maps", -5)),
    ("a DMA mapping at the wrong address", lambda s: s._cookie.dma_mappings.update(
        {0x5000: next(iter(s._cookie.dma_mappings.values()))})),
    ("a coherent page allocator of the wrong type", lambda s: setattr(s._cookie, "dma_phys", {})),
    ("a driver configuration its constructor refuses", lambda s: setattr(
        s._dom.ops, "tlb_entries", 0)),
    ("an IPMMU context given to a domain bound elsewhere", lambda s: setattr(
        s._dom.priv, "context", (s._dom.priv.context + 1) % 8)),
    ("an erratum drop rate above 1", lambda s: setattr(s._dom.ops, "erratum_drop_rate", 1.5)),
    ("a device mask beyond 64 bits", lambda s: setattr(s._dev, "dma_mask", 1 << 64)),
    ("a cookie aperture end that is negative", lambda s: setattr(s._cookie, "aperture_end", -1)),
    ("a cookie start pfn beyond 64 bits", lambda s: setattr(s._cookie, "start_pfn", 1 << 60)),
    ("a cookie granule beyond 64 bits", lambda s: (setattr(s._cookie, "granule", 1 << 64),
                                                   setattr(s._cookie, "shift", 64))),
])
def test_damaged_states_are_refused_at_load_time(what, mutate):
    try:
        blob = _damaged(mutate)
    except IovaError:
        return                           # refused already when saved: just as good
    with pytest.raises(CheckpointError):
        checkpoint.loads(blob)


# ---- memory ------------------------------------------------------------------------------

def test_round_trips_leak_nothing():
    iommu, dom, devs = dma_system("ipmmu", "wraparound")
    held = {"live": [], "gone": []}
    dma_traffic(devs, 1, 200, held)
    cookie = make_cookie("iova-lazy")
    drive(cookie, Pci(), 1, 200, [])
    graph = (iommu, dom, devs, held, cookie, make_cookie("reset-when-empty"))

    def once():
        pickled(graph)
        copy.deepcopy(graph)
    assert_flat(once, rounds=max(20, ROUNDS // 500))


def test_refused_restores_leak_nothing():
    fn, atype, iovad, words = SAVED_ALLOCATORS["iova-lazy"]
    bad = words[:-8] + b"\xff" * 8
    pt_words, tlb_words = SAVED_HW

    def once():
        for call, arg in ((lambda w: fn(atype, copy.deepcopy(iovad), w), bad),
                          (IoPgtable.restore, pt_words[:-8] + b"\x07" * 8),
                          (Iotlb.restore, tlb_words[:-8] + b"\xff" * 8)):
            with pytest.raises(IovaValueError):
                call(arg)
    assert_flat(once, rounds=max(20, ROUNDS // 100))


@pytest.mark.parametrize("what", ["allocator", "pgtable", "iotlb"])
def test_out_of_memory_while_restoring(what):
    fn, atype, iovad, words = SAVED_ALLOCATORS["wraparound" if what == "allocator" else "iova"]
    restore = {"allocator": lambda: fn(atype, None, words),
               "pgtable": lambda: IoPgtable.restore(SAVED_HW[0]),
               "iotlb": lambda: Iotlb.restore(SAVED_HW[1])}[what]
    assert each_failure_point(restore) > 0
    restore().check()


def test_exhaustion_survives_a_checkpoint():
    cookie = make_cookie("wraparound")
    with pytest.raises(IovaExhausted):
        for _ in range(100000):
            cookie.allocator.alloc(64, (1 << 12) - 1)
    twin = pickled(cookie)
    with pytest.raises(IovaExhausted):
        twin.allocator.alloc(64, (1 << 12) - 1)


def test_checkpoints_that_name_the_bindings_former_module_still_load():
    # Page tables and IOTLBs pickled before their bindings had modules of
    # their own name pyiova._iommu_native; such checkpoints still load.
    pt = IoPgtable()
    pt.map(0x1000, 0x5000, 0x2000)
    tlb = Iotlb(8)
    tlb.access(pt, 0x1000)
    modules = {c: c.__module__ for c in (IoPgtable, Iotlb)}
    try:
        for c in modules:
            c.__module__ = "pyiova._iommu_native"
        blob = pickle.dumps((pt, tlb))
    finally:
        for c, m in modules.items():
            c.__module__ = m
    assert b"pyiova._iommu_native" in blob and b"pyiova.pgtable" not in blob
    pt2, tlb2 = pickle.loads(blob)
    assert type(pt2) is IoPgtable and type(tlb2) is Iotlb
    assert pt2.iova_to_phys(0x1800) == 0x5800 and tlb2.stats() == tlb.stats()


def test_stale_record_names_without_an_iotlb_are_a_checkpoint_error():
    # The saved device names of stale records belong to the domain's IOTLB;
    # a damaged state that keeps the names but lost the IOTLB is refused at
    # load, not left to fail later with an AttributeError.
    s = Simulation("usb", "iova", "ipmmu", ops=2000, seed=1).run(700)
    state = s._dom.__getstate__()
    assert state.get("_saved_names") is not None
    state.update(pgtable=None, iotlb=None)
    with pytest.raises(CheckpointError, match="no IOTLB"):
        IommuDomain.__new__(IommuDomain).__setstate__(state)
