"""The cookie's allocator types in pfn units: wraparound, reset-when-empty,
MSI, the IOVA type's 32-bit-first attempt, and the flush queue."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyiova import IovaExhausted, IovaInvalidFree, IovaNotFound, IovaValueError
from pyiova.allocators import EV_FLUSH, EV_NO_32BIT, EV_QUEUED, EV_RESET, PfnAllocator


def pow2(n):
    return 1 << (n - 1).bit_length()


class WrapModel:
    """The wraparound policy stated pfn by pfn: obviously right, slow."""

    def __init__(self, start, end):
        self.start, self.end, self.cursor = start, end, start
        self.taken = {}                       # pfn -> "live" | "dirty"
        self.wraps = 0

    def _find(self, frm, top, size):
        align = pow2(size)
        p = -(-frm // align) * align
        while p + size - 1 <= top:
            if all(q not in self.taken for q in range(p, p + size)):
                return p
            p += align
        return None

    def alloc(self, size, limit):
        top = min(limit, self.end)
        flushed = False
        p = self._find(self.cursor, top, size)
        if p is None:
            self.taken = {q: s for q, s in self.taken.items() if s == "live"}
            self.cursor = self.start
            self.wraps += 1
            flushed = True
            p = self._find(self.cursor, top, size)
        if p is not None:
            for q in range(p, p + size):
                self.taken[q] = "live"
            self.cursor = p + size
        return p, flushed

    def free(self, pfn, size):
        for q in range(pfn, pfn + size):
            self.taken[q] = "dirty"


class Wraparound(RuleBasedStateMachine):
    @initialize(start=st.integers(1, 8), length=st.integers(16, 200))
    def setup(self, start, length):
        self.end = start + length - 1
        self.w = PfnAllocator("wraparound", start_pfn=start, end_pfn=self.end)
        self.model = WrapModel(start, self.end)
        self.live = {}
        self.freed_since_flush = set()

    @rule(size=st.integers(1, 20), cut=st.integers(0, 30))
    def alloc(self, size, cut):
        limit = self.end - cut
        if limit < self.model.start:
            with pytest.raises(IovaValueError):
                self.w.alloc(size, limit)
            return
        expect, model_flushed = self.model.alloc(size, limit)
        try:
            pfn, ev = self.w.alloc(size, limit)
        except IovaExhausted as e:
            assert expect is None
            assert bool(e.events & EV_FLUSH) == model_flushed
            self.freed_since_flush.clear()
            return
        assert pfn == expect
        assert bool(ev & EV_FLUSH) == model_flushed          # flushes exactly at wraps
        if ev & EV_FLUSH:
            self.freed_since_flush.clear()
        span = set(range(pfn, pfn + size))
        assert pfn % pow2(size) == 0 and pfn + size - 1 <= limit
        assert not span & self.freed_since_flush              # no reuse before a flush
        for lo, sz in self.live.items():
            assert not span & set(range(lo, lo + sz))          # disjoint from live ranges
        self.live[pfn] = size

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 10**6))
    def free(self, i):
        pfn = sorted(self.live)[i % len(self.live)]
        size = self.live.pop(pfn)
        assert self.w.free(pfn, size) == 0
        self.model.free(pfn, size)
        self.freed_since_flush |= set(range(pfn, pfn + size))

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 10**6))
    def bad_frees(self, i):
        pfn = sorted(self.live)[i % len(self.live)]
        with pytest.raises(IovaInvalidFree):
            self.w.free(pfn, self.live[pfn] + 1)
        if self.live[pfn] > 1:
            with pytest.raises(IovaNotFound):
                self.w.free(pfn + 1, 1)

    @invariant()
    def consistent(self):
        if not hasattr(self, "w"):
            return
        self.w.check()
        st_ = self.w.stats()
        assert st_["wraps"] == self.model.wraps
        assert st_["cursor"] == self.model.cursor
        assert st_["live_pfns"] == sum(self.live.values())


Wraparound.TestCase.settings = settings(max_examples=80, stateful_step_count=60, deadline=None)
TestWraparound = Wraparound.TestCase


def test_wraparound_fails_only_when_live_ranges_fill_the_space():
    w = PfnAllocator("wraparound", start_pfn=0, end_pfn=15)
    pfns = [w.alloc(1, 15)[0] for _ in range(16)]
    with pytest.raises(IovaExhausted):
        w.alloc(1, 15)                         # 16 live pages: really full
    w.free(pfns[5], 1)
    pfn, ev = w.alloc(1, 15)
    assert pfn == pfns[5] and ev & EV_FLUSH    # reused only after the flush at the wrap


def test_reset_when_empty_never_reuses_until_everything_is_unmapped():
    r = PfnAllocator("reset-when-empty", granule=4096, start_pfn=1)
    keep, _ = r.alloc(1, 0xFFFFF)               # a long-lived buffer
    seen = set()
    for _ in range(200):
        pfn, ev = r.alloc(4, 0xFFFFF)
        assert pfn not in seen and ev == 0
        seen.add(pfn)
        assert r.free(pfn, 4) == 0              # counted, never reused
    assert r.stats()["resets"] == 0
    assert r.stats()["held_pfns"] == 1 + 200 * 4
    assert r.free(keep, 1) == EV_RESET          # the count reaches zero: reset
    assert r.iovad.ranges() == [] and r.stats()["resets"] == 1
    assert r.alloc(1, 0xFFFFF)[0] == keep       # a fresh space again
    r.check()


def test_reset_when_empty_runs_out_with_one_buffer_kept():
    r = PfnAllocator("reset-when-empty", granule=65536, start_pfn=1)   # 65535 usable pfns
    r.alloc(1, 0xFFFF)
    maps = 0
    with pytest.raises(IovaExhausted):
        while True:
            pfn, _ = r.alloc(16, 0xFFFF)
            r.free(pfn, 16)
            maps += 1
    assert maps == (0xFFFF - 16) // 16          # aligned 16-page blocks below the kept page


def test_msi_is_a_bump_pointer_with_undo():
    m = PfnAllocator("msi", start_pfn=0x8000, end_pfn=0xFFFFF)
    a, _ = m.alloc(1, 0)                        # no limit check, as the kernel's
    b, _ = m.alloc(2, 0)
    assert (a, b) == (0x8000, 0x8001)
    m.free(b, 2)                                # undoes the latest
    assert m.alloc(1, 0)[0] == 0x8001
    with pytest.raises(IovaInvalidFree):
        m.free(a, 1)                            # not the latest: refused


def test_iova_type_tries_32bit_first_and_reports_when_it_fails():
    i = PfnAllocator("iova", granule=4096, start_pfn=1, ncpus=1)
    i.iovad.reserve(1, 0xFFFFF)                 # nothing left below 4 GiB
    pfn, ev = i.alloc(1, (1 << 36) - 1, try_32bit=True)
    assert pfn > 0xFFFFF and ev & EV_NO_32BIT
    i.free(pfn, 1)
    assert pfn in i.iovad.cached_pfns()


def test_iova_type_on_410_is_the_tree_only():
    i = PfnAllocator("iova", granule=4096, start_pfn=1, kernel="4.10")
    pfn, _ = i.alloc(5, 0xFFFFF)
    assert i.iovad.find(pfn) == (pfn, pfn + 4) and pfn % 8 == 0   # not rounded, aligned
    i.free(pfn, 5)
    assert i.iovad.find(pfn) is None and not i.iovad.cached_pfns()


def test_flush_queue_never_hands_out_what_a_flush_does_not_cover():
    i = PfnAllocator("iova", granule=4096, start_pfn=1, ncpus=1)
    i.enable_flush_queue(ncpus=1, size=5, timeout_ms=10)
    pfns = [i.alloc(1, 0xFFFFF, cpu=0)[0] for _ in range(8)]
    for n, p in enumerate(pfns[:4]):
        assert i.free_lazy(p, 1, now_ms=n, cpu=0) == EV_QUEUED
    assert i.fq_due == 10
    # queued, so not in the rcache: fresh allocations come from the tree
    fresh = i.alloc(1, 0xFFFFF, cpu=0)[0]
    assert fresh not in pfns
    ev = i.free_lazy(pfns[4], 1, now_ms=5, cpu=0)
    assert ev == EV_FLUSH                       # ring full: the caller must flush first
    i.fq_flushed()
    assert i.free_lazy(pfns[4], 1, now_ms=5, cpu=0) == EV_QUEUED
    assert i.iovad.cached_pfns() == set(pfns[:4])   # the flush covered those four
    i.fq_flushed(all_rings=True, cpu=0)          # the timer
    assert i.fq_due is None and i.stats()["fq_queued"] == 0
    assert pfns[4] in i.iovad.cached_pfns()
    i.check()


def test_bad_allocator_arguments():
    with pytest.raises(IovaValueError):
        PfnAllocator("best-fit")
    with pytest.raises(IovaValueError):
        PfnAllocator("wraparound", start_pfn=10, end_pfn=5)
    w = PfnAllocator("wraparound", start_pfn=10, end_pfn=50)
    with pytest.raises(IovaValueError):
        w.alloc(0, 50)
    with pytest.raises(IovaValueError):
        w.alloc(1, 5)                            # limit below the space
    with pytest.raises(IovaValueError):
        w.enable_flush_queue()                   # only the IOVA type has one
    w.check()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 64), min_size=1, max_size=60))
def test_iova_type_matches_the_iova_domains_fast_path(sizes):
    from pyiova import IovaDomain
    a = PfnAllocator("iova", granule=4096, start_pfn=1, ncpus=1)
    b = IovaDomain(4096, 1, ncpus=1)
    for s in sizes:
        assert a.alloc(s, 0xFFFFF, cpu=0)[0] == b.alloc_fast(s, 0xFFFFF, cpu=0)
    assert a.iovad.ranges() == b.ranges()


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 64), min_size=1, max_size=40), data=st.data())
def test_iova_tree_policy_is_the_tree_alone(sizes, data):
    from pyiova import IovaDomain
    a = PfnAllocator("iova", granule=4096, start_pfn=1, ncpus=1)
    a.bypass_rcache()
    b = IovaDomain(4096, 1, ncpus=1)
    live = []
    for s in sizes:
        p, _ = a.alloc(s, 0xFFFFF)
        assert p == b.alloc(s, 0xFFFFF, size_aligned=True)   # no rounding to a class
        live.append((p, s))
        if data.draw(st.booleans()):
            p, s = live.pop(data.draw(st.integers(0, len(live) - 1)))
            a.free(p, s)
            b.free(p)
    assert a.iovad.ranges() == b.ranges() and not a.iovad.cached_pfns()
    if live:
        with pytest.raises(IovaValueError):
            a.bypass_rcache()                  # not while ranges are live


def test_wraparound_keeps_reserved_regions_out_for_good():
    w = PfnAllocator("wraparound", start_pfn=1, end_pfn=31)
    w.reserve(8, 15)
    w.reserve(100, 200)                          # outside the space: nothing to do
    got = []
    for _ in range(12):
        p, _ = w.alloc(4, 31)
        got.append(p)
        w.free(p, 4)
    assert all(not 8 <= p <= 15 for p in got)    # across wraps too
    assert w.stats()["wraps"] >= 1
    assert (8, 15, False) in w.ranges()
    with pytest.raises(IovaValueError):
        w.reserve(20, 10)
    p, _ = w.alloc(4, 31)
    with pytest.raises(IovaValueError, match="overlaps"):
        w.reserve(p, p)
    w.check()
