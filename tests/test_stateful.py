"""Differential test: the C core against the pure-Python reference model.

A hypothesis state machine drives an IovaDomain and a ReferenceDomain
through the same random calls - tree and fast paths, several CPUs, bad
frees, reservations, batches, flushes, depot trims and bursts that fill the
depot (6.1's and 4.10's 32 magazines then spill into the tree) - on
4K/16K/64K granules, 32- and 64-bit limits, all three kernels (6.12, 6.1,
4.10). After every step the answers
must be identical, check() must pass, and every pfn must be in exactly one
place: handed out (live), cached in a magazine or the depot, or free.
"""
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from reference import ReferenceDomain

from pyiova import IovaDomain, IovaError


def outcome(fn, *args, **kw):
    """A call's result, or the name of the pyiova error it raised."""
    try:
        r = fn(*args, **kw)
    except IovaError as e:
        return ("error", type(e).__name__)
    return ("ok", list(r) if hasattr(r, "tolist") or type(r).__name__ == "array" else r)


class Allocators(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.live = {}            # pfn -> size, as handed out (fast-path sizes as asked)
        self.filled = False       # fill_depot has run

    @initialize(granule=st.sampled_from([4096, 16384, 65536]),
                start=st.sampled_from([1, 2, 64]),
                ncpus=st.integers(1, 3),
                kernel=st.sampled_from(["6.12", "6.1", "4.10"]),
                search=st.sampled_from(["augmented", "linear"]))
    def setup(self, granule, start, ncpus, kernel, search):
        self.c = IovaDomain(granule, start, ncpus=ncpus, kernel=kernel, search=search)
        self.py = ReferenceDomain(granule, start, ncpus=ncpus, kernel=kernel)
        self.ncpus = ncpus
        dma32 = self.c.state()["dma32"]
        self.limits = [dma32 - 1, dma32, start + 200, (1 << (40 - self.c.shift)) - 1,
                       start + 5]

    def both(self, name, *args, **kw):
        a = outcome(getattr(self.c, name), *args, **kw)
        b = outcome(getattr(self.py, name), *args, **kw)
        assert a == b, (name, args, kw, a, b)
        return a

    def limit(self, i):
        return self.limits[i % len(self.limits)]

    @rule(size=st.integers(1, 80), li=st.integers(0, 9), aligned=st.booleans())
    def alloc(self, size, li, aligned):
        kind, pfn = self.both("alloc", size, self.limit(li), aligned)
        if kind == "ok":
            self.live[pfn] = size

    @rule(size=st.integers(1, 70), li=st.integers(0, 9), flush=st.booleans(),
          cpu=st.integers(0, 2))
    def alloc_fast(self, size, li, flush, cpu):
        kind, pfn = self.both("alloc_fast", size, self.limit(li), flush, cpu=cpu % self.ncpus)
        if kind == "ok":
            self.live[pfn] = size

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 10**6), offset=st.integers(0, 3))
    def free(self, i, offset):
        pfn = sorted(self.live)[i % len(self.live)]
        kind, _ = self.both("free", pfn + offset % self.live[pfn])
        if kind == "ok":
            del self.live[pfn]

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 10**6), cpu=st.integers(0, 2), wrong=st.sampled_from([0, 0, 0, 1, 2]))
    def free_fast(self, i, cpu, wrong):
        pfn = sorted(self.live)[i % len(self.live)]
        size = self.live[pfn]
        if wrong == 1:
            size = size * 2 + 1          # another size class: refused
        elif wrong == 2:
            pfn += 1                     # not the start: refused
        kind, _ = self.both("free_fast", pfn, size, cpu=cpu % self.ncpus)
        if kind == "ok":
            del self.live[pfn]

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 10**6))
    def double_free(self, i):
        pfn = sorted(self.live)[i % len(self.live)]
        kind, _ = self.both("free_fast", pfn, self.live[pfn], cpu=0)
        if kind == "ok":
            del self.live[pfn]
            self.both("free_fast", pfn, self.live.get(pfn, 1), cpu=0)
            self.both("free", pfn)

    @rule(n=st.integers(120, 260), cpu=st.integers(0, 2))
    def burst(self, n, cpu):
        """Fill and spill magazines: n one-page ranges freed on one CPU."""
        cpu %= self.ncpus
        got = []
        for _ in range(n):
            kind, pfn = self.both("alloc_fast", 1, self.limits[0], True, cpu=cpu)
            if kind == "ok":
                got.append(pfn)
        for pfn in got:
            self.both("free_fast", pfn, 1, cpu=cpu)

    @precondition(lambda self: not self.filled)
    @rule(size=st.sampled_from([1, 2]), cpu=st.integers(0, 2), extra=st.integers(0, 400))
    def fill_depot(self, size, cpu, extra):
        """Enough frees of one class on one CPU to fill both magazines and a
        32-magazine depot, and then some: 6.1 and 4.10 spill the loaded
        magazine into the tree from here on, 6.12 keeps pushing. Once per
        run (later bursts on the same CPU and class spill again)."""
        self.filled = True
        cpu %= self.ncpus
        # the 32-bit limit the kernel's cache pointer follows: 4.10 caches
        # only allocations made with exactly its (inclusive) dma_32bit_pfn,
        # and the reference's walk from the top would make this quadratic
        limit = self.limits[1] if self.c.kernel == "4.10" else self.limits[0]
        got = []
        for _ in range(2 * 128 + 32 * 128 + extra):
            kind, pfn = self.both("alloc_fast", size, limit, True, cpu=cpu)
            if kind == "ok":
                got.append(pfn)
        for pfn in got:
            self.both("free_fast", pfn, size, cpu=cpu)

    @rule(lo=st.integers(0, 1 << 21), length=st.integers(0, 300))
    def reserve(self, lo, length):
        before = set(r for r in self.c.ranges())
        self.both("reserve", lo, lo + length)
        # a reservation may widen live ranges downward in place: keep track
        # of them by the range that now holds their pfn
        if before != set(self.c.ranges()):
            for pfn in list(self.live):
                r = self.c.find(pfn)
                if r and r[0] != pfn:
                    self.live[r[0]] = self.live.pop(pfn) + (pfn - r[0])

    @rule(pfn=st.integers(0, 1 << 21))
    def find(self, pfn):
        self.both("find", pfn)

    @rule(sizes=st.lists(st.integers(1, 40), max_size=12), li=st.integers(0, 9),
          aligned=st.booleans())
    def alloc_many(self, sizes, li, aligned):
        kind, pfns = self.both("alloc_many", sizes, self.limit(li), aligned)
        if kind == "ok":
            for pfn, size in zip(pfns, sizes):
                if pfn:
                    self.live[pfn] = size

    @precondition(lambda self: self.live)
    @rule(k=st.integers(1, 6))
    def free_many(self, k):
        pfns = sorted(self.live)[:k]
        kind, _ = self.both("free_many", pfns)
        assert kind == "ok"
        for pfn in pfns:
            del self.live[pfn]

    @rule(cpu=st.integers(0, 2))
    def flush_cpu(self, cpu):
        self.both("flush_cpu", cpu % self.ncpus)

    @rule()
    def flush_depot(self):
        self.both("flush_depot")

    @rule()
    def flush_rcaches(self):
        self.both("flush_rcaches")

    @rule()
    def run_pending_work(self):
        self.both("run_pending_work")

    @rule(ms=st.sampled_from([1, 50, 100, 250]))
    def advance(self, ms):
        self.both("advance", ms)

    @invariant()
    def same_state_and_consistent(self):
        if not hasattr(self, "c"):
            return
        self.c.check()
        assert self.c.state() == self.py.state()
        ranges = self.c.ranges()
        assert ranges == self.py.ranges()
        cached = self.c.cached_pfns()
        assert cached == self.py.cached_pfns()
        # every range is exactly one of: live, cached, or reserved; no pfn is
        # both live and cached
        live_starts = set(self.live)
        assert not (cached & live_starts)
        starts = {lo for lo, _ in ranges}
        assert live_starts <= starts
        assert len(self.c) == len(ranges)
        stats = self.c.rcache_stats()
        ref = self.py.rcache_stats()
        assert [(s["loaded"], s["prev"], s["depot"]) for s in stats] == \
            [(s["loaded"], s["prev"], s["depot"]) for s in ref]


Allocators.TestCase.settings = settings(
    max_examples=int(os.environ.get("PYIOVA_STATEFUL_EXAMPLES", "60")),
    stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestAllocators = Allocators.TestCase
