"""The cookie's frees under misuse: the flush queue (a lazy free is checked
as the strict one is, and a range waits in the queue at most once), ranges
the cookie did not hand out (reserved regions), and what a retire does when
the domain was changed behind the queue. Each refusal raises the documented
exception naming the value, and leaves state that check() accepts."""
import random
import threading

import pytest

from pyiova.allocators import EV_QUEUED, EV_RESET, PfnAllocator
from pyiova.cookie import DmaCookie
from pyiova.errors import IovaClosed, IovaCpuError, IovaInvalidFree

TOP32 = 0xFFFFF
U32 = (1 << 32) - 1


def fq_allocator(ncpus=2, rings=2, size=8):
    a = PfnAllocator("iova", ncpus=ncpus)
    a.enable_flush_queue(ncpus=rings, size=size)
    return a


def uncached(a):
    return len(a.iovad) - len(a.iovad.cached_pfns())


def test_a_range_freed_behind_the_queue_is_reported_and_dropped():
    a = fq_allocator()
    p, _ = a.alloc(1, TOP32, cpu=0)
    q, _ = a.alloc(1, TOP32, cpu=0)
    assert a.free_lazy(p, 1, 0, cpu=0) & EV_QUEUED
    a.iovad.free(p)                                # the domain's own free, behind the queue
    with pytest.raises(IovaInvalidFree, match="flush queue"):
        a.fq_flushed(all_rings=True, cpu=0)
    st = a.stats()
    assert (st["fq_lost"], st["fq_queued"]) == (1, 0)
    a.check()
    assert a.free_lazy(q, 1, 1, cpu=0) & EV_QUEUED  # the queue goes on working
    a.fq_flushed(all_rings=True, cpu=0)
    assert a.iovad.cached_pfns() == {q} and a.stats()["fq_lost"] == 1


def test_a_closed_domain_says_so_and_keeps_its_entries():
    a = fq_allocator()
    p, _ = a.alloc(1, TOP32, cpu=0)
    q, _ = a.alloc(1, TOP32, cpu=0)
    a.free_lazy(p, 1, 0, cpu=0)
    a.iovad.close()
    with pytest.raises(IovaClosed):
        a.fq_flushed(all_rings=True, cpu=0)
    with pytest.raises(IovaClosed):
        a.free_lazy(q, 1, 1, cpu=0)
    assert a.stats()["fq_queued"] == 1 and a.stats()["fq_lost"] == 0


def test_many_entries_on_every_ring_each_queued_once():
    rng = random.Random(7)
    a = fq_allocator(ncpus=4, rings=4, size=16)
    live = {}
    queued = set()
    now = 0
    for step in range(3000):
        now += 1
        if live and rng.random() < 0.5:
            pfn = rng.choice(sorted(live))
            cpu = rng.randrange(4)
            ev = a.free_lazy(pfn, live[pfn], now, cpu=cpu)
            if not ev & EV_QUEUED:                 # the ring is full: flush, then again
                a.fq_flushed()
                ev = a.free_lazy(pfn, live[pfn], now, cpu=cpu)
            assert ev & EV_QUEUED
            queued.add(pfn)
            with pytest.raises(IovaInvalidFree, match="%#x" % pfn):
                a.free_lazy(pfn, live[pfn], now, cpu=(cpu + 1) % 4)
            del live[pfn]
        elif rng.random() < 0.05:
            a.fq_flushed(all_rings=True, cpu=rng.randrange(4))
            queued.clear()
        else:
            pages = rng.choice([1, 1, 2, 3, 4, 8, 40])
            pfn, _ = a.alloc(pages, TOP32, cpu=rng.randrange(4))
            assert pfn not in live
            queued.discard(pfn)                    # retired by a later queueing, if at all
            live[pfn] = pages
        if step % 250 == 0:
            a.check()
            st = a.stats()
            # queueing retires what a flush covers: some of `queued` may be back
            assert st["fq_queued"] <= len(queued)
            assert uncached(a) == len(live) + st["fq_queued"]
    a.fq_flushed(all_rings=True, cpu=0)
    a.check()
    st = a.stats()
    assert (st["fq_queued"], st["fq_lost"], st["live_ranges"]) == (0, 0, len(live))
    assert uncached(a) == len(live)


def test_a_lazy_free_on_a_tree_only_cookie_wants_the_size_handed_out():
    a = PfnAllocator("iova", ncpus=1)
    a.bypass_rcache()
    a.enable_flush_queue(ncpus=1, size=4)
    p, _ = a.alloc(3, TOP32)
    with pytest.raises(IovaInvalidFree, match="4 pages .*%#x" % p):
        a.free_lazy(p, 4, 0)                       # of its class, but the tree wants 3
    assert a.free_lazy(p, 3, 0) & EV_QUEUED
    a.fq_flushed(all_rings=True, cpu=0)
    assert len(a.iovad) == 0 and not a.iovad.cached_pfns()   # back to the tree, not cached
    a.check()


def test_a_thread_on_a_cpu_beyond_the_rings_queues_on_a_ring_of_its_own():
    a = fq_allocator(ncpus=4, rings=1, size=64)
    pfns = [a.alloc(1, TOP32, cpu=0)[0] for _ in range(8)]
    errors = []

    def free(pfn):
        try:
            assert a.free_lazy(pfn, 1, 0) & EV_QUEUED      # cpu=None: this thread's ring
        except Exception as e:                             # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=free, args=(p,)) for p in pfns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert a.stats()["fq_queued"] == 8
    with pytest.raises(IovaCpuError, match="cpu 1 .*rings"):
        a.free_lazy(a.alloc(1, TOP32, cpu=0)[0], 1, 0, cpu=1)
    a.check()


@pytest.mark.parametrize("kind", ["iova", "reset-when-empty"])
def test_a_reserved_region_is_not_the_cookies_to_free(kind):
    a = PfnAllocator(kind, ncpus=1)
    lo, hi = a.iovad.reserve(0x8000, 0x8003)
    held = [a.alloc(8, TOP32)[0] for _ in range(4)]   # enough live pfns to cover it
    before = a.stats()
    with pytest.raises(IovaInvalidFree, match="%#x" % lo):
        a.free(lo, hi - lo + 1)
    assert a.stats() == before and a.iovad.find(lo) == (lo, hi)
    for p in held:
        a.free(p, 8)
    assert a.stats()["resets"] == (1 if kind == "reset-when-empty" else 0)
    assert a.iovad.find(lo) == (lo, hi)            # kept through the reset too
    a.check()


def test_a_reserved_region_cannot_be_queued():
    a = fq_allocator()
    lo, hi = a.iovad.reserve(0x8000, 0x8003)
    a.alloc(8, TOP32, cpu=0)
    with pytest.raises(IovaInvalidFree, match="%#x" % lo):
        a.free_lazy(lo, 4, 0, cpu=0)
    assert a.stats()["fq_queued"] == 0
    a.check()


def test_a_dma_cookie_refuses_a_second_lazy_unmap():
    c = DmaCookie("iova", ncpus=2).init_domain(4096, 0, U32, flush_queue=True)
    iova = c.alloc_iova(None, 0x2000, U32, cpu=0)
    assert c.free_iova(iova, 0x2000, lazy=True, cpu=0) is True
    for lazy in (True, False):
        with pytest.raises(IovaInvalidFree, match="%#x .*flush queue" % (iova >> 12)):
            c.free_iova(iova, 0x2000, lazy=lazy, cpu=1)
    c.check()
    c.advance(11, cpu=0)                           # the timer: flushed and retired
    assert c.stats()["fq_queued"] == 0
    assert c.alloc_iova(None, 0x2000, U32, cpu=0) == iova    # from cpu 0's rcache


def test_reset_when_empty_holds_its_reserved_window_across_resets():
    c = DmaCookie("reset-when-empty").init_domain(4096, 0, U32,
                                                  reserved=[(0xFEE00000, 0xFEEFFFFF)])
    for _ in range(3):
        iovas = [c.alloc_iova(None, 0x100000 * k, U32) for k in (1, 2, 4)]
        assert all(iovas) and not any(0xFEE00000 <= i <= 0xFEEFFFFF for i in iovas)
        for i, k in zip(iovas, (1, 2, 4)):
            c.free_iova(i, 0x100000 * k)
        c.check()
    assert c.resets == 3
    assert c.stats()["held_pfns"] == 0x100 and c.iovad.ranges() == [(0xFEE00, 0xFEEFF)]


def test_msi_undoes_in_reverse_order_only():
    m = PfnAllocator("msi", start_pfn=0x100, end_pfn=0x1FF)
    pfns = [m.alloc(k, 0)[0] for k in (1, 2, 3)]
    for p, k in ((pfns[0], 1), (pfns[1], 2)):
        with pytest.raises(IovaInvalidFree, match="%#x" % p):
            m.free(p, k)
    for p, k in reversed(list(zip(pfns, (1, 2, 3)))):
        m.free(p, k)
        m.check()
    assert m.stats()["cursor"] == 0x100 and m.stats()["live_ranges"] == 0


def test_a_strict_free_after_the_reset_refuses_the_old_ranges():
    a = PfnAllocator("reset-when-empty", ncpus=1)
    p, _ = a.alloc(2, TOP32)
    assert a.free(p, 2) == EV_RESET
    with pytest.raises(IovaInvalidFree, match="%#x" % p):
        a.free(p, 2)                               # gone with the reset
    a.check()


def test_the_top_pfn_is_never_taken_for_a_queued_one():
    # 2**64 - 1 is the queue's set's mark for a free slot: a free naming it
    # must be judged as a pfn nothing holds, not as one waiting in the queue
    a = fq_allocator()
    p, _ = a.alloc(1, TOP32, cpu=0)
    a.free_lazy(p, 1, 0, cpu=0)
    top = (1 << 64) - 1
    for free in (lambda: a.free(top, 1), lambda: a.free_lazy(top, 1, 0, cpu=0)):
        with pytest.raises(IovaInvalidFree) as e:
            free()
        assert "queue" not in str(e.value)
    a.check()
