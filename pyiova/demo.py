"""The built-in demo: a domain, a churn, and what came of it.

Runs on defaults in a few seconds and prints what a newcomer wants to see:
the kernel's rules at work (the same pfns Linux hands out), how fast the C
core churns through single and batch calls and through the per-CPU caches,
and what the O(log n) search buys on a fragmented space.
"""
from __future__ import annotations

import random
import time
from typing import Any

from .iova import IOVA_ANCHOR, IovaDomain

TOP32 = 0xFFFFF


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _churn_single(dom, ops, seed):
    rng = random.Random(seed)
    live: list[Any] = []
    for _ in range(ops):
        if len(live) >= 1000:
            dom.free(live.pop(rng.randrange(len(live))))
        live.append(dom.alloc(rng.randint(1, 64), TOP32, True))
    return live


def _churn_fast(dom, ops, seed):
    rng = random.Random(seed)
    live: list[Any] = []
    for _ in range(ops):
        if len(live) >= 1000:
            pfn, size = live.pop(rng.randrange(len(live)))
            dom.free_fast(pfn, size, cpu=0)
        size = rng.randint(1, 64)
        live.append((dom.alloc_fast(size, TOP32, cpu=0), size))
    return live


def _fragment(search, n):
    dom = IovaDomain(4096, 1, ncpus=1, search=search)
    pfns = dom.alloc_many([1] * n, TOP32)
    dom.free_many(pfns[1::2])
    top = dom.ranges()[-1][0]

    def allocs() -> None:
        for _ in range(200):
            dom.free(top)                 # sends the cached node back to the top
            dom.alloc(1, TOP32)
            dom.alloc(2, TOP32, True)
    _, secs = _timed(allocs)
    return dom, secs / 200


def run(ops=200_000, seed=1, out=print) -> int:
    out("pyiova demo: the Linux IOVA allocator (mainline 6.12 rules), 4K granule, start_pfn 1")
    out("")
    dom = IovaDomain(4096, 1, ncpus=1)
    first = [dom.alloc(1, TOP32), dom.alloc(1, TOP32), dom.alloc(3, TOP32, True),
             dom.alloc(4, TOP32, True), dom.alloc(5, TOP32, True), dom.alloc(5, TOP32)]
    out("first allocations below 4 GiB, top-down: " + " ".join(hex(p) for p in first))
    out("state (cached nodes, max32_alloc_size): %s" % {
        k: (v if v is IOVA_ANCHOR else hex(v) if isinstance(v, int) else v)
        for k, v in dom.state().items()})
    dom.close()
    out("")

    rows = []
    dom = IovaDomain(4096, 1, ncpus=1)
    live, secs = _timed(lambda: _churn_single(dom, ops, seed))
    rows.append(("alloc/free, one call each", ops, secs, dom))
    dom.check()

    bdom = IovaDomain(4096, 1, ncpus=1)
    rng = random.Random(seed)
    sizes = [rng.randint(1, 64) for _ in range(ops)]

    def batches() -> None:
        live = bdom.alloc_many(sizes[:1000], TOP32, True)
        for i in range(1000, ops, 1000):
            bdom.free_many(live)
            live = bdom.alloc_many(sizes[i:i + 1000], TOP32, True)
    _, bsecs = _timed(batches)
    rows.append(("alloc_many/free_many, 1000 a call", ops, bsecs, bdom))
    bdom.check()

    fdom = IovaDomain(4096, 1, ncpus=1)
    _, fsecs = _timed(lambda: _churn_fast(fdom, ops, seed))
    rows.append(("alloc_fast/free_fast (rcache)", ops, fsecs, fdom))
    fdom.check()

    out("churn: %d allocations, sizes 1-64 pages, 1000 ranges live, 32-bit limit" % ops)
    out("  %-36s %10s %10s %8s %10s" % ("calls", "ns/alloc", "allocs/s", "ranges", "pages"))
    for name, n, secs, d in rows:
        out("  %-36s %10.0f %10.0f %8d %10d" % (name, secs / n * 1e9, n / secs, len(d),
                                                 d.used_pfns))
    cached = len(fdom.cached_pfns())
    out("  rcache now holds %d ranges; per class: %s" % (cached, [
        sum(s["loaded"]) + sum(s["prev"]) + s["depot"] * 127 for s in fdom.rcache_stats()]))
    out("")

    n = 100_000
    out("fragmented space: %d one-page ranges, every other one freed, the cached node" % n)
    out("sent back to the top before each two-page request (the kernel's worst case)")
    res = {}
    for search in ("linear", "augmented"):
        d, per = _fragment(search, n)
        res[search] = (d, per)
        out("  %-10s search: %9.1f us per allocation" % (search, per * 1e6))
    same = res["linear"][0].ranges() == res["augmented"][0].ranges()
    out("  same pfns from both: %s; the augmented search is %.0fx faster"
        % ("yes" if same else "NO", res["linear"][1] / res["augmented"][1]))
    return 0 if same else 1
