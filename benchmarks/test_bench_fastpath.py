"""The rcache fast path against the tree path on the same churn, and the
rcache at its best (every alloc a magazine hit).

Group "fastpath-<live>": one churn sequence (sizes 1..64, 32-bit limit,
rounds of 100 frees then 100 allocs) through alloc/free and through
alloc_fast/free_fast, each as single calls and as batch calls. Sizes above
32 pages bypass the cache, as in the kernel. The magazine hit rate of the
fast rows is printed at the end of the run and saved as extra_info.

Group "rcache-hits": the same 64 sizes (1..32) allocated and freed over and
over on one CPU slot, so after the first round every alloc is a hit; the
saved pairs_per_s is the figure issue 7's ">= 10M pairs/s" is about.
"""
import array
import random

import pytest

import workloads
from workloads import Churn

ROUNDS = 10


@pytest.mark.parametrize("impl", ["tree-single", "fast-single", "tree-batch", "fast-batch"])
@pytest.mark.parametrize("live", ["1k", "100k"])
def test_fastpath_churn(benchmark, live, impl):
    churn = Churn(live, ROUNDS, seed=2)
    benchmark.group = "fastpath-%s" % live
    benchmark.extra_info.update(pairs=churn.pairs, live=churn.live)
    batch = impl.endswith("batch")
    fast = impl.startswith("fast")
    body = {(False, False): churn.run_single, (False, True): churn.run_batch,
            (True, False): churn.run_fast_single, (True, True): churn.run_fast_batch}[fast, batch]
    seen = {}

    def setup():
        d, live_set, sizes = churn.fresh_batch() if batch else churn.fresh()
        seen["d"], seen["nodes"] = d, len(d)
        return (d, live_set, sizes), {}

    benchmark.pedantic(body, setup=setup, rounds=5, iterations=1)
    if fast:
        hits = workloads.magazine_hits(churn.pairs, seen["nodes"], len(seen["d"]),
                                       churn.bypass_count())
        cacheable = churn.cacheable_allocs()
        benchmark.extra_info["magazine_hit_rate"] = round(hits / churn.pairs, 4)
        benchmark.extra_info["magazine_hit_rate_cacheable"] = round(hits / cacheable, 4)
        workloads.note(benchmark, "magazine hit rate %.1f%% of all allocs, %.1f%% of the %d "
                       "of size <= 32" % (100 * hits / churn.pairs, 100 * hits / cacheable,
                                          cacheable))
    seen["d"].check()


HIT_BATCH = 64
HIT_ROUNDS = 200          # 12,800 alloc+free pairs per timed body


def _hit_domain():
    rng = random.Random(3)
    sizes = array.array("Q", (rng.randint(1, 32) for _ in range(HIT_BATCH)))
    d = workloads.IovaDomain(4096, 1, ncpus=1)
    limit = workloads.LIMIT32_4K
    # The first round misses and stocks the magazines with exactly what every
    # later round asks for.
    d.free_fast_many(d.alloc_fast_many(sizes, limit, True, 0), sizes, 0)
    return d, sizes, limit


def _hits_batch(d, sizes, limit):
    alloc_many, free_many = d.alloc_fast_many, d.free_fast_many
    for _ in range(HIT_ROUNDS):
        free_many(alloc_many(sizes, limit, True, 0), sizes, 0)


def _hits_single(d, sizes, limit):
    alloc, free = d.alloc_fast, d.free_fast
    sl = list(sizes)
    for _ in range(HIT_ROUNDS):
        pfns = [alloc(s, limit, True, 0) for s in sl]
        for p, s in zip(pfns, sl):
            free(p, s, 0)


@pytest.mark.parametrize("impl", ["single", "batch"])
def test_rcache_hits(benchmark, impl):
    benchmark.group = "rcache-hits"
    pairs = HIT_ROUNDS * HIT_BATCH
    benchmark.extra_info["pairs"] = pairs
    state = {}

    def setup():
        state["d"], sizes, limit = _hit_domain()
        state["nodes"] = len(state["d"])
        return (state["d"], sizes, limit), {}

    body = _hits_batch if impl == "batch" else _hits_single
    benchmark.pedantic(body, setup=setup, rounds=10, iterations=1)
    assert len(state["d"]) == state["nodes"], "an alloc missed the cache"
    if benchmark.stats is not None:      # None under --benchmark-disable
        best = benchmark.stats.stats.min
        benchmark.extra_info["pairs_per_s"] = round(pairs / best)
        workloads.note(benchmark, "%.1fM alloc+free pairs/s (best round)" % (pairs / best / 1e6))
