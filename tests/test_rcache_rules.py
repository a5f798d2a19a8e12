"""The rcache rules (README "The IOVA domain", docs/kernels.md), one example
each: 6.12, 6.1 and 4.10."""
import copy
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyiova import IovaCpuError, IovaDomain, IovaExhausted

TOP32 = 0xFFFFF


def stats(dom, k=0, cpu=0):
    s = dom.rcache_stats()[k]
    return s["loaded"][cpu], s["prev"][cpu], s["depot"]


def fill(dom, n, size=1, limit=TOP32):
    return [dom.alloc(size, limit) for _ in range(n)]


# ---- 6.12 ------------------------------------------------------------------

def test_magazine_fills_then_moves_to_prev_then_to_the_depot():
    dom = IovaDomain(4096, 1, ncpus=1)
    pfns = fill(dom, 638)
    for p in pfns:
        dom.free_fast(p, 1, cpu=0)
    assert stats(dom) == (3, 127, 4)
    assert dom.cached_pfns() == set(pfns)
    assert len(dom) == 638                        # cached ranges stay in the tree
    assert dom.rcache_stats()[0]["work_pending"]  # a depot push armed the trim
    dom.check()


def test_a_cached_range_is_handed_out_again_without_touching_the_tree():
    dom = IovaDomain(4096, 1, ncpus=2)
    p = dom.alloc_fast(1, TOP32, cpu=0)
    dom.free_fast(p, 1, cpu=0)
    before = dom.state()
    assert dom.alloc_fast(1, TOP32, cpu=0) == p   # LIFO: the newest comes back
    assert dom.state() == before
    dom.free_fast(p, 1, cpu=0)
    assert dom.alloc_fast(1, TOP32, cpu=1) != p   # another CPU's cache is its own
    dom.check()


def test_pop_scans_newest_to_oldest_for_a_pfn_under_the_limit_and_swap_removes():
    dom = IovaDomain(4096, 1, ncpus=1)
    high = fill(dom, 2)                          # 0xFFFFF, 0xFFFFE
    low = dom.alloc(1, 0xFFF)                    # 0xFFF
    for p in (high[0], low, high[1]):
        dom.free_fast(p, 1, cpu=0)
    assert dom.alloc_fast(1, 0x1000, cpu=0) == low   # the newest (high[1]) is above
    # the newest pfn filled the hole: the magazine is now [high0, high1]
    assert dom.alloc_fast(1, TOP32, cpu=0) == high[1]
    assert dom.alloc_fast(1, TOP32, cpu=0) == high[0]
    dom.check()


def test_only_the_loaded_magazine_is_searched():
    dom = IovaDomain(4096, 1, ncpus=1)
    low = dom.alloc(1, 0xFFF)
    highs = fill(dom, 127)
    dom.free_fast(low, 1, cpu=0)
    for p in highs:
        dom.free_fast(p, 1, cpu=0)               # the 127th swaps: low now sits in prev
    assert stats(dom) == (1, 127, 0)
    got = dom.alloc_fast(1, 0x1000, cpu=0)
    assert got != low and low in dom.cached_pfns()   # taken from the tree instead
    dom.check()


def test_small_sizes_are_rounded_to_their_class_and_big_ones_bypass_the_cache():
    dom = IovaDomain(4096, 1, ncpus=1)
    p = dom.alloc_fast(5, TOP32, cpu=0)
    assert dom.find(p) == (p, p + 7)             # 5 -> an 8-page range
    p32 = dom.alloc_fast(32, TOP32, cpu=0)
    dom.free_fast(p32, 32, cpu=0)
    assert p32 in dom.cached_pfns()              # 32 pages: the largest cached class
    p40 = dom.alloc_fast(40, TOP32, cpu=0)
    assert dom.find(p40) == (p40, p40 + 39) and p40 % 64 == 0   # not rounded, but 64-aligned
    dom.free_fast(p40, 40, cpu=0)
    assert dom.find(p40) is None                 # straight back to the tree
    dom.check()


def test_flush_returns_every_cached_pfn_to_the_tree():
    dom = IovaDomain(4096, 1, ncpus=2)
    keep = dom.alloc(3, TOP32)
    pfns = [dom.alloc_fast(s, TOP32, cpu=0) for s in (1, 2, 4, 8, 16, 32) * 60]
    for i, p in enumerate(pfns):
        dom.free_fast(p, (1, 2, 4, 8, 16, 32)[i % 6], cpu=i % 2)
    assert dom.cached_pfns() == set(pfns)
    dom.flush_cpu(0)
    assert all(s["loaded"][0] == s["prev"][0] == 0 for s in dom.rcache_stats())
    dom.flush_rcaches()
    assert dom.cached_pfns() == set()
    assert dom.ranges() == [(keep, keep + 2)]
    dom.check()


def test_an_exhausted_tree_succeeds_after_the_flush_and_retry():
    dom = IovaDomain(4096, 1, ncpus=2)
    pfns = [dom.alloc_fast(1, 16, cpu=0) for _ in range(16)]
    assert sorted(pfns) == list(range(1, 17))
    dom.free_fast(pfns[3], 1, cpu=1)             # cached on CPU 1 only
    with pytest.raises(IovaExhausted):
        dom.alloc_fast(1, 16, flush_rcache=False, cpu=0)
    assert dom.alloc_fast(1, 16, flush_rcache=True, cpu=0) == pfns[3]
    assert dom.cached_pfns() == set()
    dom.check()


def test_depot_trim_work_frees_one_magazine_per_run_down_to_one_per_cpu():
    dom = IovaDomain(4096, 1, ncpus=1)
    pfns = fill(dom, 127 * 4 + 1)                # loaded 1, prev 127, depot 3
    for p in pfns:
        dom.free_fast(p, 1, cpu=0)
    assert stats(dom) == (1, 127, 3)
    assert dom.advance(99) == 0                  # not due yet
    assert dom.advance(1) == 1                   # 100 ms after the first push
    assert stats(dom)[2] == 2
    assert len(dom) == len(pfns) - 127           # that magazine went back to the tree
    assert dom.run_pending_work() == 1           # re-armed: runs now on request
    assert stats(dom)[2] == 1
    assert dom.run_pending_work() == 1           # runs, finds depot == ncpus: no re-arm
    assert stats(dom)[2] == 1
    assert dom.run_pending_work() == 0
    assert dom.advance(10_000) == 0
    dom.check()


def test_advance_runs_rearmed_work_as_it_falls_due():
    dom = IovaDomain(4096, 1, ncpus=1)
    for p in fill(dom, 127 * 5 + 1):
        dom.free_fast(p, 1, cpu=0)
    assert stats(dom)[2] == 4
    assert dom.advance(350) == 3                 # at 100, 200, 300 ms
    assert stats(dom)[2] == 1
    assert dom.stats()["clock_ms"] == 350


def _slot_in_new_thread(dom):
    seen = []
    t = threading.Thread(target=lambda: seen.append(dom.current_cpu()))
    t.start()
    t.join()
    return seen[0]


def test_cpu_none_is_the_threads_own_stable_slot_and_bad_cpus_are_refused():
    dom = IovaDomain(4096, 1, ncpus=4)
    assert dom.current_cpu() == 0 and dom.current_cpu() == 0   # the first to ask
    p = dom.alloc_fast(1, TOP32)
    dom.free_fast(p, 1)
    assert dom.rcache_stats()[0]["loaded"][0] == 1
    assert [_slot_in_new_thread(dom) for _ in range(4)] == [1, 2, 3, 0]   # modulo ncpus
    assert dom.current_cpu() == 0
    for bad in (4, -2, 1000):
        with pytest.raises(IovaCpuError, match=str(bad)):
            dom.alloc_fast(1, TOP32, cpu=bad)
        with pytest.raises(IovaCpuError):
            dom.flush_cpu(bad)
    dom.check()


def test_cpu_none_slots_follow_first_use_of_each_domain_not_the_threads_started_before():
    # Threads that ran earlier, and that used other domains, change nothing:
    # the first thread to use a domain gets slot 0 there.
    other = IovaDomain(4096, 1, ncpus=8)
    for _ in range(3):
        _slot_in_new_thread(other)
    dom = IovaDomain(4096, 1, ncpus=4)
    assert _slot_in_new_thread(dom) == 0                  # a new thread, first on dom
    assert dom.current_cpu() == 1                         # this one asks second
    p = dom.alloc_fast(1, TOP32)                          # cpu=None is that slot
    dom.free_fast(p, 1)
    assert dom.rcache_stats()[0]["loaded"] == [0, 1, 0, 0]
    fresh = IovaDomain(4096, 1, ncpus=4)
    q = fresh.alloc_fast(1, TOP32)                        # first use: slot 0
    fresh.free_fast(q, 1)
    assert fresh.rcache_stats()[0]["loaded"] == [1, 0, 0, 0]
    assert other.current_cpu() == 3                       # fourth on other


def test_cpu_none_in_a_copy_starts_a_new_order():
    dom = IovaDomain(4096, 1, ncpus=2)
    _slot_in_new_thread(dom)
    assert dom.current_cpu() == 1
    assert copy.deepcopy(dom).current_cpu() == 0


# ---- 4.10 ------------------------------------------------------------------

def old(ncpus=1):
    return IovaDomain(4096, 1, ncpus=ncpus, kernel="4.10", dma_32bit_pfn=TOP32)


def test_410_magazines_of_128_and_a_depot_of_32_that_overflows_into_the_tree():
    dom = old()
    pfns = [dom.alloc(1, TOP32 - 1) for _ in range(128 * 35 + 1)]
    for p in pfns[: 128 * 34]:
        dom.free_fast(p, 1, cpu=0)
    assert stats(dom) == (128, 128, 32)
    dom.free_fast(pfns[128 * 34], 1, cpu=0)      # depot full: the loaded magazine is freed
    assert stats(dom) == (1, 128, 32)
    assert len(dom.cached_pfns()) == 128 * 33 + 1
    assert len(dom) == len(pfns) - 128
    assert dom.run_pending_work() == 0           # 4.10 had no trim work
    dom.check()


def test_410_pop_looks_at_the_newest_pfn_only():
    dom = old()
    high = dom.alloc(1, TOP32 - 1)
    low = dom.alloc(1, 0xFFF)
    dom.free_fast(high, 1, cpu=0)
    dom.free_fast(low, 1, cpu=0)
    assert dom.alloc_fast(1, 0x1000, cpu=0) == low   # newest, and below the limit
    dom.free_fast(low, 1, cpu=0)
    dom.free_fast(high, 1, cpu=0) if high not in dom.cached_pfns() else None
    dom.free_fast(dom.alloc(1, TOP32 - 1), 1, cpu=0)  # a high pfn is now the newest
    got = dom.alloc_fast(1, 0x1000, cpu=0)
    assert got == 0x1000                              # so the tree answers,
    assert low in dom.cached_pfns()                   # though low would have fitted
    dom.check()


def test_410_sizes_are_not_rounded():
    dom = old()
    p = dom.alloc_fast(5, TOP32, cpu=0)
    assert dom.find(p) == (p, p + 4) and p % 8 == 0


def test_410_retry_flushes_cpu_caches_but_not_the_depot():
    dom = old()
    pfns = [dom.alloc(1, 300) for _ in range(299)]   # 300 down to 2: 4.10 keeps pfn 1 free
    assert pfns == list(range(300, 1, -1))
    for p in pfns[:257]:
        dom.free_fast(p, 1, cpu=0)                   # prev: 300..173, depot: 172..45, loaded: 44
    assert stats(dom) == (1, 128, 1)
    # class 1 has nothing cached and the tree is full: flush the CPU caches, retry
    assert dom.alloc_fast(2, 300, cpu=0) == 298
    assert stats(dom) == (0, 0, 1)                   # the depot was not flushed
    assert dom.cached_pfns() == set(range(45, 173))
    dom.check()


# ---- 6.1 -------------------------------------------------------------------
# 6.12's tree, magazines of 127, pop and flush-and-retry; a depot of 32
# magazines that spills into the tree, no trim work.

def v61(ncpus=1):
    return IovaDomain(4096, 1, ncpus=ncpus, kernel="6.1")


# After 127 * 34 frees on one CPU: prev holds the first 127, the depot the
# next 32 * 127 (oldest first), loaded the last 127.
FULL_61 = 127 * 34


def test_61_magazines_of_127_and_a_depot_of_32_that_spills_into_the_tree():
    dom = v61()
    pfns = fill(dom, FULL_61 + 2)
    for p in pfns[:FULL_61]:
        dom.free_fast(p, 1, cpu=0)
    assert stats(dom) == (127, 127, 32)
    assert len(dom) == len(pfns)
    dom.free_fast(pfns[FULL_61], 1, cpu=0)
    # depot full: the loaded magazine (the 127 frees before this one) goes
    # back to the tree; this pfn starts a fresh loaded magazine
    assert stats(dom) == (1, 127, 32)
    spilled = set(pfns[FULL_61 - 127:FULL_61])
    assert all(dom.find(p) is None for p in spilled)
    assert dom.cached_pfns() == set(pfns[:FULL_61 + 1]) - spilled
    assert len(dom) == len(pfns) - 127
    dom.check()


def test_61_has_no_depot_trim_work():
    dom = v61()
    for p in fill(dom, FULL_61 + 1):
        dom.free_fast(p, 1, cpu=0)
    assert stats(dom) == (1, 127, 32)
    assert not any(s["work_pending"] for s in dom.rcache_stats())
    assert dom.run_pending_work() == 0
    assert dom.advance(10_000) == 0
    assert stats(dom) == (1, 127, 32)            # nothing trimmed, ever
    dom.check()


def test_61_the_depot_hands_out_its_newest_magazine_first():
    dom = v61()
    pfns = fill(dom, 127 * 4 + 1)
    for p in pfns:
        dom.free_fast(p, 1, cpu=0)
    # loaded: the last pfn; prev: the first 127; depot: three magazines
    assert stats(dom) == (1, 127, 3)
    got = [dom.alloc_fast(1, TOP32, cpu=0) for _ in range(1 + 127 + 1)]
    assert got[0] == pfns[-1]
    assert got[1:128] == pfns[126::-1]           # prev swapped in, newest first
    assert got[128] == pfns[-2]                  # the newest depot magazine's newest pfn
    assert stats(dom) == (126, 0, 2)
    dom.check()


def test_61_rounds_small_sizes_as_612_does():
    dom = v61()
    p = dom.alloc_fast(5, TOP32, cpu=0)
    assert dom.find(p) == (p, p + 7)


def test_61_retry_flushes_the_cpu_caches_and_the_depot():
    dom = v61()
    pfns = [dom.alloc(1, 300) for _ in range(300)]   # 300 down to 1: 6.1 uses start_pfn
    assert pfns == list(range(300, 0, -1))
    for p in pfns[:255]:
        dom.free_fast(p, 1, cpu=0)               # prev: 300..174, depot: 173..47, loaded: 46
    assert stats(dom) == (1, 127, 1)
    # class 1 has nothing cached and the tree is full: every cache goes back
    assert dom.alloc_fast(2, 300, cpu=0) == 298        # 2-aligned, just under the limit
    assert stats(dom) == (0, 0, 0)
    assert dom.cached_pfns() == set()
    assert dom.ranges() == [(p, p) for p in range(1, 46)] + [(298, 299)]
    dom.check()


def test_61_without_flush_fails_where_612_would_too():
    dom = v61()
    pfns = [dom.alloc(1, 16) for _ in range(16)]
    dom.free_fast(pfns[3], 1, cpu=0)
    with pytest.raises(IovaExhausted):
        dom.alloc_fast(2, 16, flush_rcache=False, cpu=0)
    assert pfns[3] in dom.cached_pfns()


def test_61_and_612_differ_only_once_the_depot_is_full():
    """The same calls give the same pfns until 6.12's depot would take a
    33rd magazine; from then 6.1 has given 127 ranges back to the tree."""
    a, b = v61(), IovaDomain(4096, 1, ncpus=1, kernel="6.12")
    for dom in (a, b):
        for p in fill(dom, FULL_61):
            dom.free_fast(p, 1, cpu=0)
    assert a.ranges() == b.ranges() and a.state() == b.state()
    assert stats(a) == stats(b) == (127, 127, 32)
    for dom in (a, b):
        dom.free_fast(dom.alloc(1, TOP32), 1, cpu=0)
    assert stats(a) == (1, 127, 32) and stats(b) == (1, 127, 33)
    assert len(b) - len(a) == 127


# ---- the order of a flush ----------------------------------------------------
# 6.12 flushes its depot newest magazine first, 6.1 oldest first, and a
# spilled magazine goes back oldest pfn first. Under the 6.12/6.1 removal
# rule (a cached node moves up to the freed node's successor) the order of
# an uninterrupted run of frees leaves the same cache pointers and
# max32_alloc_size in any order, so no answer can show it; pyiova keeps the
# kernel's order anyway. This pins the property down.

@pytest.mark.parametrize("kernel", ["6.12", "6.1"])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_run_of_frees_leaves_the_same_state_in_any_order(kernel, seed):
    rng = random.Random(seed)
    dom = IovaDomain(4096, 1, ncpus=1, kernel=kernel)
    live = []
    for _ in range(rng.randint(4, 40)):
        limit = rng.choice([TOP32, (1 << 28) - 1, rng.randint(64, 0x100040)])
        try:
            live.append(dom.alloc(rng.randint(1, 9), limit, rng.random() < 0.5))
        except IovaExhausted:
            pass
    for p in rng.sample(live, len(live) // 3):   # move the cache pointers about
        dom.free(p)
        live.remove(p)
    batch = rng.sample(live, min(len(live), rng.randint(2, 12)))
    results = set()
    for order in (batch, batch[::-1], rng.sample(batch, len(batch))):
        twin = copy.deepcopy(dom)
        for p in order:
            twin.free(p)
        results.add((tuple(sorted(twin.state().items())), twin.alloc_fast(4, TOP32, cpu=0)))
    assert len(results) == 1


# ---- a range at pfn 0 ------------------------------------------------------

@pytest.mark.parametrize("kernel", ["6.12", "6.1", "4.10"])
def test_a_range_at_pfn_0_is_cached_and_read_back_as_a_miss(kernel):
    # reserve() can put a range at pfn 0 (or widen one down to it); free_fast
    # caches it as
    # the kernel does, and the pop that finds 0 later is the fast path's
    # "nothing": the tree allocates instead and the range at 0 stays, in no
    # magazine. The reference model is the judge, call by call.
    import reference
    doms = [IovaDomain(4096, 1, ncpus=1, kernel=kernel),
            reference.ReferenceDomain(4096, 1, ncpus=1, kernel=kernel)]
    answers = []
    for d in doms:
        out = []

        def call(f, *a, **kw):
            try:
                out.append(f(*a, **kw))
            except Exception as exc:           # the class is the answer
                out.append(type(exc).__name__)
        low = d.alloc(2, 6)
        call(d.reserve, 0, low - 1)
        call(d.free_fast, 0, 7, cpu=0)       # [0, 4]: 5 pages, class 3 as 7
        call(d.free_fast, 0, 8, cpu=0)       # a double free, refused
        call(d.free_fast, 0, 1, cpu=0)       # and in another class too
        out.append(sorted(d.cached_pfns()))
        call(d.alloc_fast, 8, TOP32, cpu=0)  # pops 0: a miss
        out.append(sorted(d.cached_pfns()))
        out.append(list(d.ranges()))
        call(d.free, 0)                       # the range at 0 is live again
        out.append(list(d.ranges()))
        answers.append(out)
    assert answers[0][1:4] == [None, "IovaInvalidFree", "IovaInvalidFree"]
    assert answers[0][4] == [0]
    assert answers[0] == answers[1]
    doms[0].check()
