"""1 thread against 2 threads on the same total work.

Two churn workloads (each its own live set of 1k ranges, its own seed, its
own CPU slot via cpu=) run either one after the other on one thread, or at
once on two threads. The operations are identical; only the concurrency
differs, so within a group the 2-thread time over the 1-thread time is the
scaling (1.0 = none, 0.5 = perfect on this 2-core machine).

Groups:
  threads-fast-batch   alloc_fast_many/free_fast_many: per-CPU magazines,
                       the tree lock only on misses; the GIL is released
                       for the whole batch
  threads-fast-single  alloc_fast/free_fast, one call per operation: the
                       Python between calls holds the GIL
  threads-tree-batch   alloc_many/free_many: every operation takes the one
                       tree lock, as iova_rbtree_lock does in the kernel
"""
import threading

import pytest

from workloads import Churn, IovaDomain

ROUNDS = 20          # per workload: 2000 pairs, 4000 in all


def _bodies(kind, churns):
    """One callable per workload, each bound to its own CPU slot."""
    bodies = []
    for cpu, churn in enumerate(churns):
        if kind == "fast-batch":
            bodies.append(lambda d, live, sizes, c=churn, cpu=cpu:
                          _fast_batch(c, d, live, sizes, cpu))
        elif kind == "fast-single":
            bodies.append(lambda d, live, sizes, c=churn, cpu=cpu:
                          _fast_single(c, d, live, sizes, cpu))
        else:
            bodies.append(lambda d, live, sizes, c=churn: c.run_batch(d, live))
    return bodies


def _fast_batch(churn, d, live, sizes, cpu):
    import numpy as np
    free_many, alloc_many, limit = d.free_fast_many, d.alloc_fast_many, churn.limit
    for v, new in zip(churn.victims_np, churn.sizes_np):
        free_many(live[v], sizes[v], cpu)
        live[v] = np.frombuffer(alloc_many(new, limit, True, cpu), dtype=np.uint64)
        sizes[v] = new


def _fast_single(churn, d, live, sizes, cpu):
    free, alloc, limit = d.free_fast, d.alloc_fast, churn.limit
    for victims, new in zip(churn.victims, churn.sizes):
        for k in victims:
            free(live[k], sizes[k], cpu)
        for k, s in zip(victims, new):
            live[k] = alloc(s, limit, True, cpu)
            sizes[k] = s


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["fast-batch", "fast-single", "tree-batch"])
def test_threads(benchmark, kind, threads):
    if kind != "fast-single":
        pytest.importorskip("numpy")
    churns = [Churn("1k", ROUNDS, seed=10 + i) for i in range(2)]
    bodies = _bodies(kind, churns)
    benchmark.group = "threads-%s" % kind
    benchmark.extra_info["pairs"] = sum(c.pairs for c in churns)
    holder = {}

    def setup():
        # One domain with two CPU slots; both live sets are carved from it,
        # so the second fills in below the first (as two devices sharing a
        # domain would).
        d = IovaDomain(4096, 1, ncpus=2)
        states = []
        for c in churns:
            live = list(d.alloc_many(c.init_sizes, c.limit, True))
            sizes = list(c.init_sizes)
            if kind != "fast-single":
                import numpy as np
                live = np.array(live, dtype=np.uint64)
                sizes = np.array(sizes, dtype=np.uint64)
            states.append((live, sizes))
        holder["d"] = d
        return (d, states), {}

    def run(d, states):
        if threads == 1:
            for body, (live, sizes) in zip(bodies, states):
                body(d, live, sizes)
            return
        errors = []

        def guarded(body, live, sizes):
            try:
                body(d, live, sizes)
            except BaseException as e:   # surfaced below, not lost in a thread
                errors.append(e)

        ts = [threading.Thread(target=guarded, args=(b, live, sizes))
              for b, (live, sizes) in zip(bodies, states)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    holder["d"].check()
