"""free_fast's checks before a range goes into a magazine.

A range can only be cached if its pfn starts a live, uncached range of the
size's class. The C core proves that either by the node the pfn's last
allocation left in a small per-domain table (a guess, checked against the
node) or by a tree lookup. These tests make that table wrong on purpose -
slots reused by other ranges, pfns that collide in it, ranges freed through
the other path - and require the verdict and the domain to be exactly what
the lookup alone gives (the reference model's).
"""
import random

import pytest

from reference import ReferenceDomain

from pyiova import IovaDomain, IovaError, IovaInvalidFree

TOP32 = 0xFFFFF
HINT_BITS = 12             # csrc/iova_internal.h IOVA_LIVE_HINT_BITS


def hint_slot(pfn):
    """iova_live_hint_slot(): which table slot a pfn's node is noted in."""
    return ((pfn * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) >> (64 - HINT_BITS)


def outcome(fn, *args, **kw):
    try:
        return ("ok", fn(*args, **kw))
    except IovaError as e:
        return ("error", type(e).__name__)


def test_a_node_slot_reused_by_another_range_is_not_taken_for_the_old_pfn():
    dom = IovaDomain(4096, 1, ncpus=1)
    a = dom.alloc(2, TOP32, True)
    dom.free(a)                           # a's node slot goes back to the pool
    b = dom.alloc(8, TOP32, True)         # ... and holds [b, b+7], around a
    assert b <= a <= b + 7 and b != a
    before = dom.state()
    with pytest.raises(IovaInvalidFree, match="not its first pfn"):
        dom.free_fast(a, 2, cpu=0)
    assert dom.state() == before
    dom.free_fast(b, 8, cpu=0)
    assert dom.cached_pfns() == {b}
    dom.check()


def test_wrong_class_double_free_and_freed_ranges_are_refused_as_by_a_lookup():
    dom = IovaDomain(4096, 1, ncpus=1)
    a = dom.alloc_fast(4, TOP32, cpu=0)
    before = dom.state()
    with pytest.raises(IovaInvalidFree, match="size class"):
        dom.free_fast(a, 1, cpu=0)
    assert dom.state() == before
    dom.free_fast(a, 4, cpu=0)
    with pytest.raises(IovaInvalidFree, match="already freed"):
        dom.free_fast(a, 4, cpu=0)        # the node is still a's, now CACHED
    assert dom.alloc_fast(4, TOP32, cpu=0) == a
    dom.free(a)                           # gone through the tree instead
    with pytest.raises(IovaError):
        dom.free_fast(a, 4, cpu=0)
    assert len(dom) == 0
    dom.check()


@pytest.mark.parametrize("kernel", ["6.12", "6.1", "4.10"])
def test_long_churn_with_bad_frees_matches_the_reference(kernel):
    """Thousands of allocations over pfns that share table slots, with
    frees by both paths and bad free_fast calls mixed in."""
    rng = random.Random(7)
    c = IovaDomain(4096, 1, ncpus=2, kernel=kernel)
    py = ReferenceDomain(4096, 1, ncpus=2, kernel=kernel)
    live = {}                             # pfn -> size as handed out
    distinct = set()
    for step in range(12000):
        op = rng.random()
        if op < 0.45 or not live:
            size = rng.choice([1, 1, 2, 3, 4, 8, 16, 32, 33, 64])
            fast = rng.random() < 0.7
            name = "alloc_fast" if fast else "alloc"
            args = (size, TOP32) + (() if fast else (True,))
            kw = {"cpu": rng.randrange(2)} if fast else {}
            a, b = outcome(getattr(c, name), *args, **kw), outcome(getattr(py, name), *args, **kw)
            assert a == b, (step, name, args, a, b)
            if a[0] == "ok":
                live[a[1]] = size
                distinct.add(a[1])
            continue
        pfn = rng.choice(list(live))
        size = live[pfn]
        kind = rng.random()
        if kind < 0.15:                   # a pfn inside the range, or past it
            args = (pfn + rng.randrange(1, 3), size)
        elif kind < 0.25:                 # the wrong size class
            args = (pfn, 1 if size > 1 else 64)
        elif kind < 0.30:                 # a free range's pfn
            args = (pfn + 4096 + rng.randrange(64), 1)
        else:
            args = (pfn, size)
        cpu = rng.randrange(2)
        if rng.random() < 0.25 and args[0] == pfn and kind >= 0.30:
            a, b = outcome(c.free, pfn), outcome(py.free, pfn)
        else:
            a, b = outcome(c.free_fast, *args, cpu=cpu), outcome(py.free_fast, *args, cpu=cpu)
        assert a == b, (step, args, a, b)
        if a[0] == "ok" and args[0] == pfn:
            del live[pfn]
            if rng.random() < 0.3:        # and sometimes straight back: a double free
                a = outcome(c.free_fast, pfn, size, cpu=cpu)
                b = outcome(py.free_fast, pfn, size, cpu=cpu)
                assert a == b and a[0] == "error", (step, a, b)
        if step % 2000 == 0:
            c.check()
            assert c.ranges() == py.ranges()
            assert c.cached_pfns() == py.cached_pfns()
    # the table was wrong on purpose: pfns that were live met in one slot
    assert len({hint_slot(p) for p in distinct}) < len(distinct) - 100
    c.check()
    assert c.ranges() == py.ranges()
    assert c.cached_pfns() == py.cached_pfns()
