"""The augmented O(log n) search against the kernel's node-by-node walk:
allocator x workload x live-set size.

Group "search-<workload>-<live>", one row per search mode, both fed the same
sequence through batch calls (so the C core, not Python, is what is timed);
they return the same pfns, which the test checks. Workloads:

  random   free 100 random live ranges, allocate 100 new ones (sizes 1..64,
           size-aligned, 32-bit limit)
  fifo     free the 100 oldest, allocate 100 new: a ring buffer's order

Live sets: 1k, 100k and 1M ranges (1M is marked slow: about 0.5 s of set-up
per round). nodes visited per alloc is saved as extra_info and printed.
"""
import pytest

import workloads
from workloads import Churn

ROUNDS = 10                       # 1000 alloc+free pairs per timed body
_digests = {}


@pytest.mark.parametrize("search", ["augmented", "linear"])
@pytest.mark.parametrize("live", ["1k", "100k", pytest.param("1M", marks=pytest.mark.slow)])
@pytest.mark.parametrize("workload", ["random", "fifo"])
def test_search(benchmark, workload, live, search):
    pytest.importorskip("numpy")
    churn = Churn(live, ROUNDS, seed=4, kind=workload)
    benchmark.group = "search-%s-%s" % (workload, live)
    benchmark.extra_info.update(pairs=churn.pairs, live=churn.live, granule=churn.granule)
    holder = {}

    def setup():
        d, pfns, _ = churn.fresh_batch(search=search)
        holder["d"], holder["visited"] = d, d.stats()["nodes_visited"]
        return (d, pfns), {}

    rounds = 3 if live == "1M" else 5
    final = benchmark.pedantic(churn.run_batch, setup=setup, rounds=rounds, iterations=1)

    visited = (holder["d"].stats()["nodes_visited"] - holder["visited"]) / churn.pairs
    benchmark.extra_info["nodes_visited_per_alloc"] = round(visited, 1)
    workloads.note(benchmark, "%.1f nodes visited per alloc" % visited)
    key = (workload, live)
    fp = workloads.digest(final)
    assert _digests.setdefault(key, fp) == fp, "the two searches handed out other pfns"
