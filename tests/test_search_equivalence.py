"""The augmented O(log n) search and the kernel's node-by-node walk must give
the same pfns, always: on random sequences and on the fragmented spaces
where they differ most in cost."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyiova import IovaDomain, IovaError, IovaExhausted

GRANULES = (4096, 16384, 65536)


def twins(granule, start, kernel, ncpus=2):
    kw = dict(ncpus=ncpus, kernel=kernel)
    return (IovaDomain(granule, start, search="augmented", **kw),
            IovaDomain(granule, start, search="linear", **kw))


def apply(dom, op):
    """Runs one operation; returns its answer, exceptions included, as data."""
    name, args = op[0], op[1:]
    try:
        if name == "alloc":
            return dom.alloc(*args)
        if name == "alloc_fast":
            return dom.alloc_fast(*args)
        if name == "free_nth":
            ranges = dom.ranges()
            if not ranges:
                return None
            lo = ranges[args[0] % len(ranges)][0]
            dom.free(lo)
            return lo
        if name == "reserve":
            return dom.reserve(args[0], args[0] + args[1])
        if name == "flush":
            return dom.flush_rcaches()
    except IovaExhausted:
        return "exhausted"
    except IovaError as e:
        return type(e).__name__


def limits_for(dom):
    dma32 = 1 << (32 - dom.shift)
    return st.sampled_from([dma32 - 1, dma32 // 2 - 1, (1 << (40 - dom.shift)) - 1,
                            dom.start_pfn + 40, dma32 + 1000])


ops = st.lists(st.one_of(
    st.tuples(st.just("alloc"), st.integers(1, 300), st.integers(0, 4), st.booleans()),
    st.tuples(st.just("alloc_fast"), st.integers(1, 70), st.integers(0, 4)),
    st.tuples(st.just("free_nth"), st.integers(0, 10**6)),
    st.tuples(st.just("reserve"), st.integers(1, 1 << 21), st.integers(0, 64)),
    st.tuples(st.just("flush")),
), max_size=120)


@settings(max_examples=120, deadline=None)
@given(ops=ops, granule=st.sampled_from(GRANULES), start=st.sampled_from([1, 3, 64]),
       kernel=st.sampled_from(["6.12", "4.10"]))
def test_random_sequences_give_identical_answers(ops, granule, start, kernel):
    a, b = twins(granule, start, kernel)
    dma32 = a.state()["dma32"]
    limits = [dma32 - 1, dma32 // 2 - 1, (1 << (40 - a.shift)) - 1, start + 40, dma32 + 1000]
    for op in ops:
        if op[0] in ("alloc", "alloc_fast"):
            op = (op[0], op[1], limits[op[2]]) + op[3:]
        assert apply(a, op) == apply(b, op), op
        assert a.state() == b.state()
    assert a.ranges() == b.ranges()
    a.check()
    b.check()


@pytest.mark.parametrize("kernel", ["6.12", "4.10"])
def test_fragmented_space_with_the_cache_sent_back_up(kernel):
    """Every other one-page range freed, then two-page aligned requests after
    a free + realloc at the top, which sends the cached node back up so each
    search must cross the whole fragmented run."""
    a, b = twins(4096, 1, kernel)
    top = 0xFFFFF
    for dom in (a, b):
        pfns = list(dom.alloc_many([1] * 20000, top))
        dom.free_many(pfns[1::2])
    rng = random.Random(7)
    visited = [dom.stats()["nodes_visited"] for dom in (a, b)]
    for _ in range(400):
        for dom in (a, b):
            hi = dom.ranges()[-1][0]
            dom.free(hi)
            dom.alloc(1, top)
        size = rng.choice((1, 2, 2, 3, 5))
        assert apply(a, ("alloc", size, top, True)) == apply(b, ("alloc", size, top, True))
    assert a.ranges() == b.ranges() and a.state() == b.state()
    work = [dom.stats()["nodes_visited"] - v for dom, v in zip((a, b), visited)]
    assert work[0] * 50 < work[1]                   # O(log n) against a walk of ~10k gaps
    a.check()


def test_full_64bit_region_fails_identically_without_walking():
    a, b = twins(4096, 1, "6.12")
    lo64 = 1 << 20
    for dom in (a, b):
        dom.reserve(lo64, (1 << 32) - 1)
        dom.alloc_many([1] * 5000, 0xFFFFF)          # plenty of nodes below 4 GiB
        pfns = list(dom.alloc_many([1] * 6000, (1 << 32) - 1))
        dom.free_many(pfns[::2])
    for size in (2, 4, 8, 3):
        assert apply(a, ("alloc", size, (1 << 32) - 1, True)) == \
            apply(b, ("alloc", size, (1 << 32) - 1, True))
    assert a.ranges() == b.ranges() and a.state() == b.state()


def test_switching_the_search_mode_midway_changes_nothing():
    a, b = twins(4096, 1, "6.12")
    rng = random.Random(3)
    for i in range(3000):
        if i % 500 == 0:
            a.search = "linear" if a.search == "augmented" else "augmented"
        op = ("alloc", rng.randint(1, 40), 0xFFFFF, rng.random() < 0.5) if rng.random() < 0.6 \
            else ("free_nth", rng.randrange(10**6))
        assert apply(a, op) == apply(b, op)
    assert a.ranges() == b.ranges()
