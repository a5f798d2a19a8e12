"""The reference model must reproduce every answer recorded from the kernel.

This is what makes ReferenceDomain trustworthy as the oracle for the C core:
each recorded sequence of both kernels is replayed in full, and the model's
own invariants are checked along the way.

The 6.12 and 4.10 recordings never fill an rcache magazine (at most 6 pfns
sit in one); the 6.1 recording's bursts fill magazines and the depot and
spill into the tree, so 6.1's depot is pinned by the kernel's answers. The
second half of this file pins the other paths (6.12's depot and its trim
work, 4.10's overflow) down with examples checked against the kernel, plus
small cases worked out by hand from its rules.
"""

import os

import pytest

from reference import (IovaExhausted, IovaInvalidFree, IovaNotFound,
                       IovaValueError, ReferenceDomain)
from vectors import VECTOR_DIR, VECTOR_FILES, load_sequences, replay

# check() walks every node and magazine, so it runs only now and then.
CHECK_EVERY = 250

_loaded = {}


def _sequences(path):
    """Parse each file once per session (collection and tests share it)."""
    if path not in _loaded:
        _loaded[path] = load_sequences(path)
    return _loaded[path]


def _all_sequences():
    params = []
    for name in VECTOR_FILES:
        path = os.path.join(VECTOR_DIR, name)
        if not os.path.exists(path):
            params.append(pytest.param(None, id=name, marks=pytest.mark.skip(
                reason="%s not found" % path)))
            continue
        for seq in _sequences(path):
            params.append(pytest.param(seq, id=seq.name))
    return params


@pytest.mark.parametrize("seq", _all_sequences())
def test_replay(seq):
    mismatch = replay(seq, ReferenceDomain, check_every=CHECK_EVERY)
    assert mismatch is None, (
        "%s line %d: %s => expected %r, got %r"
        % (os.path.basename(seq.path), mismatch.line, mismatch.command,
           mismatch.expected, mismatch.got))


def test_every_file_has_sequences():
    # Guard against a silently empty parametrisation (a truncated file).
    for name in VECTOR_FILES:
        path = os.path.join(VECTOR_DIR, name)
        if os.path.exists(path):
            seqs = _sequences(path)
            assert len(seqs) >= 1
            assert all(s.ops for s in seqs)


# ----------------------------------------------------------------------
# Examples checked against the kernel's own code.

def test_612_next_fit_below_cached32():
    d = ReferenceDomain(4096, 1)
    assert d.alloc(1, 0xFFFFF) == 0xFFFFF
    assert d.alloc(1, 0xFFF) == 0xFFF
    # The search starts below the cached node, not from the limit.
    assert d.alloc_fast(4, 0xFFFFF) == 0xFF8


def test_612_top_down_packing():
    d = ReferenceDomain(4096, 1)
    got = [d.alloc(1, 0xFFFFF), d.alloc(1, 0xFFFFF),
           d.alloc(3, 0xFFFFF, True), d.alloc(4, 0xFFFFF, True),
           d.alloc(5, 0xFFFFF, True), d.alloc(5, 0xFFFFF, False)]
    assert got == [0xFFFFF, 0xFFFFE, 0xFFFF8, 0xFFFF4, 0xFFFE8, 0xFFFE3]


def test_612_start_pfn_is_usable():
    assert ReferenceDomain(4096, 5).alloc(4, 8) == 5


@pytest.mark.parametrize("kernel", ["6.12", "4.10"])
def test_reserve_widens_in_place(kernel):
    d = ReferenceDomain(4096, 1, kernel=kernel)
    for lo, hi in [(0xFFFE3, 0xFFFE7), (0xFFFE8, 0xFFFEC), (0xFFFF0, 0xFFFF3),
                   (0xFFFF4, 0xFFFF7), (0xFFFF8, 0xFFFFA)]:
        assert d.reserve(lo, hi) == (lo, hi)
    assert d.reserve(0xFFFE0, 0xFFFF8) == (0xFFFF8, 0xFFFFA)
    assert d.ranges() == [(0xFFFE0, 0xFFFE7), (0xFFFE8, 0xFFFEC),
                          (0xFFFED, 0xFFFF3), (0xFFFF4, 0xFFFF7),
                          (0xFFFF8, 0xFFFFA)]
    d.check()


def test_612_magazines_and_depot_fill():
    d = ReferenceDomain(4096, 1)
    pfns = [d.alloc(1, 0xFFFFF) for _ in range(638)]
    for pfn in pfns:
        d.free_fast(pfn, 1)
    assert d.rcache_stats()[0] == {"bin": 0, "loaded": [3], "prev": [127],
                                   "depot": 4}
    assert len(d.cached_pfns()) == 638 and len(d) == 638
    d.check()


def test_410_pop_ignores_size():
    d = ReferenceDomain(4096, 1, kernel="4.10")
    assert d.alloc_fast(4, 0xFFFFF) == 0xFFFFC
    assert d.alloc_fast(4, 0xFFFFF) == 0xFFFF8
    d.free_fast(0xFFFF8, 4)
    # The cached [0xFFFF8, 0xFFFFB] ends above the limit, yet is handed out.
    assert d.alloc_fast(4, 0xFFFFA) == 0xFFFF8


def test_410_off_by_one_at_the_bottom():
    with pytest.raises(IovaExhausted):
        ReferenceDomain(4096, 5, kernel="4.10").alloc(4, 8)
    assert ReferenceDomain(4096, 5, kernel="4.10").alloc(4, 9) == 6


def test_410_cached_node_overrides_limit():
    d = ReferenceDomain(4096, 1, kernel="4.10")
    assert d.alloc(1, 0xFFFFF) == 0xFFFFF
    assert d.alloc(1, 0xFFF) == 0xFFFFE


# ----------------------------------------------------------------------
# Paths the recorded sequences do not reach, worked out from the rules.

def _full_depot_612():
    """638 size-1 frees on one CPU: magazines of 127, so prev holds frees
    0-126, the depot frees 127-253, 254-380, 381-507 and 508-634 (newest
    last) and loaded frees 635-637."""
    d = ReferenceDomain(4096, 1)
    pfns = [d.alloc(1, 0xFFFFF) for _ in range(638)]
    for pfn in pfns:
        d.free_fast(pfn, 1)
    return d, pfns


def test_612_trim_work_runs_once_per_call():
    d, pfns = _full_depot_612()
    # Each run trims one magazine while the depot holds more than one per
    # CPU and re-arms; the run that finds nothing to do does not re-arm.
    assert [d.run_pending_work() for _ in range(6)] == [1, 1, 1, 1, 0, 0]
    assert d.rcache_stats()[0]["depot"] == 1
    # Newest first: the magazines of frees 508-634, 381-507, 254-380 went.
    assert len(d) == 638 - 3 * 127
    assert d.find(pfns[254]) is None and d.find(pfns[253]) is not None
    d.check()


def test_612_trim_work_follows_the_clock():
    d, pfns = _full_depot_612()
    assert d.advance(99) == 0
    assert d.advance(1) == 1            # due at t=100; trims, re-arms for 200
    assert d.rcache_stats()[0]["depot"] == 3
    assert d.advance(250) == 2          # t=200 and t=300; re-armed for 400
    assert d.rcache_stats()[0]["depot"] == 1
    assert d.advance(100) == 1          # t=400: nothing to trim, not re-armed
    assert d.advance(10_000) == 0
    d.check()


def test_612_depot_flush_newest_first_then_pop_uses_depot():
    d, pfns = _full_depot_612()
    d.flush_cpu(0)
    assert d.rcache_stats()[0] == {"bin": 0, "loaded": [0], "prev": [0],
                                   "depot": 4}
    # Loaded and prev are empty, so the newest depot magazine becomes
    # loaded and its newest pfn is popped.
    assert d.alloc_fast(1, 0xFFFFF) == pfns[634]
    assert d.rcache_stats()[0] == {"bin": 0, "loaded": [126], "prev": [0],
                                   "depot": 3}
    d.flush_depot()
    assert d.rcache_stats()[0]["depot"] == 0
    assert len(d.cached_pfns()) == 126
    d.check()


def test_612_pop_scans_newest_first_and_swap_removes():
    d = ReferenceDomain(4096, 1)
    for _ in range(4):
        d.alloc(1, 0xFFFFF)             # 0xFFFFF down to 0xFFFFC
    for pfn in (0xFFFFE, 0xFFFFC, 0xFFFFF, 0xFFFFD):
        d.free_fast(pfn, 1)             # loaded, oldest first
    # Nothing in the magazine fits under 0xFFFFB: the cache misses and the
    # tree allocates below the cached node.
    assert d.alloc_fast(1, 0xFFFFB) == 0xFFFFB
    # 0xFFFFD and 0xFFFFF are too high; 0xFFFFC is taken and the newest
    # pfn (0xFFFFD) moves into its slot: [0xFFFFE, 0xFFFFD, 0xFFFFF].
    assert d.alloc_fast(1, 0xFFFFC) == 0xFFFFC
    assert d.alloc_fast(1, 0xFFFFF) == 0xFFFFF
    assert d.alloc_fast(1, 0xFFFFF) == 0xFFFFD
    d.check()


def test_410_depot_overflow_frees_to_tree():
    d = ReferenceDomain(4096, 1, kernel="4.10")
    n = 128 + 128 + 32 * 128 + 1
    pfns = [d.alloc(1, 0xFFFFF) for _ in range(n)]
    for pfn in pfns:
        d.free_fast(pfn, 1)
    # The last free found both magazines full and the 32-slot depot full:
    # the displaced loaded magazine went back to the tree.
    assert d.rcache_stats()[0] == {"bin": 0, "loaded": [1], "prev": [128],
                                   "depot": 32}
    assert len(d) == n - 128
    assert len(d.cached_pfns()) == n - 128
    d.check()


def test_612_landing_place_picks_the_pointer():
    d = ReferenceDomain(4096, 1)
    d.reserve(0x100000, 0xFFFFFF)       # fill 4 GiB .. 64 GiB
    lo = d.alloc(1, 0xFFFFFF)           # 64-bit limit, lands below 4 GiB
    assert lo == 0xFFFFF
    st = d.state()
    assert st["cached32"] == lo and st["cached"] == 2 ** 64 - 1


def test_612_max32_set_by_64bit_failure():
    d = ReferenceDomain(4096, 1)
    d.reserve(1, 0xFFFFFF)
    with pytest.raises(IovaExhausted):
        d.alloc(7, 0xFFFFFF)
    assert d.state()["max32"] == 7


def test_refused_frees_leave_domain_unchanged():
    d = ReferenceDomain(4096, 1)
    a = d.alloc_fast(5, 0xFFFFF)        # an 8-page range
    before = (d.ranges(), d.state(), d.rcache_stats())
    with pytest.raises(IovaInvalidFree):
        d.free_fast(a, 16)              # wrong size class
    with pytest.raises(IovaInvalidFree):
        d.free_fast(a + 1, 8)           # not the start
    with pytest.raises(IovaNotFound):
        d.free_fast(5, 1)               # no range at all
    assert (d.ranges(), d.state(), d.rcache_stats()) == before
    d.free_fast(a, 5)                   # 5 and 8 share a size class
    before = (d.ranges(), d.state(), d.rcache_stats())
    with pytest.raises(IovaInvalidFree):
        d.free_fast(a, 8)               # double free into the cache
    with pytest.raises(IovaInvalidFree):
        d.free(a)                       # tree free of a cached range
    assert (d.ranges(), d.state(), d.rcache_stats()) == before
    with pytest.raises(IovaValueError):
        d.reserve(10, 9)
    d.check()


def test_replay_reports_a_wrong_answer():
    # The replayer must not be vacuous: a domain that is off by one page on
    # tree allocations is caught, at the line of the first alloc.
    class OffByOne(ReferenceDomain):
        def alloc(self, size, limit_pfn, size_aligned=False):
            return super().alloc(size, limit_pfn, size_aligned) + 1

    path = os.path.join(VECTOR_DIR, VECTOR_FILES[0])
    if not os.path.exists(path):
        pytest.skip("%s not found" % path)
    seq = _sequences(path)[0]
    first = next(op for op in seq.ops if op.cmd == "alloc" and op.expected != "0")
    mismatch = replay(seq, OffByOne)
    assert mismatch is not None and mismatch.line == first.line
    assert mismatch.got == str(int(first.expected) + 1)
