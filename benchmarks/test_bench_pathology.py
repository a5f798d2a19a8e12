"""The linear walk's worst cases (c1-c3 of the kernel baseline,
benchmarks/README.md), augmented against linear. Each timed body is ONE allocation, so the table
reads directly as time per alloc (Python call included: ~0.3 us here).

  pathology-c1  200k one-page ranges, every other one freed; before each
                two-page aligned alloc the top range is freed and allocated
                again (in the untimed set-up), which sends the cached node
                back up: the kernel then walks ~100k nodes per alloc
  pathology-c2  the 32-bit region full of such holes (start_pfn chosen so
                the 200k ranges fill it); a failing two-page alloc right
                after a free below 4 GiB has reset max32_alloc_size, i.e.
                the one failure the kernel's shortcut does not save
  pathology-c3  the region above 4 GiB full up to the 64-bit limit, same
                holes: failing two-page allocs with the 64-bit limit, which
                no shortcut helps

The kernel's own code measured 0.52-0.57 ms (c1), 0.53 ms (c2, first) and
0.49-0.55 ms (c3) per alloc on a machine like this one.
"""
import pytest

import workloads
from pyiova import IovaExhausted

ROUNDS = 30


def _c1(search):
    d, pfns = workloads.fragmented(search)
    top = [pfns[0]]
    limit = workloads.LIMIT32_4K

    def setup():
        d.free(top[0])
        top[0] = d.alloc(1, limit, True)     # cached32_node is now the top range
        return (), {}

    def body():
        return d.alloc(2, limit, True)

    return d, setup, body


def _c2(search):
    start = workloads.LIMIT32_4K + 1 - workloads.FRAG_N
    d, pfns = workloads.fragmented(search, start_pfn=start)
    top = [pfns[0]]
    limit = workloads.LIMIT32_4K

    def setup():
        d.free(top[0])                       # resets max32_alloc_size
        top[0] = d.alloc(1, limit, True)
        return (), {}

    def body():
        try:
            d.alloc(2, limit, True)
        except IovaExhausted:
            return
        raise AssertionError("an alloc in a full region succeeded")

    return d, setup, body


def _c3(search):
    top = workloads.LIMIT32_4K + workloads.FRAG_N
    d, _ = workloads.fragmented(search, limit=top)
    # Fill everything else: below 4 GiB, and from the holes up to the
    # 64-bit limit, so the one-page holes are the only free space.
    d.reserve(1, workloads.LIMIT32_4K)
    d.reserve(top + 1, d.max_pfn)
    limit = d.max_pfn

    def body():
        try:
            d.alloc(2, limit, True)
        except IovaExhausted:
            return
        raise AssertionError("an alloc in a full region succeeded")

    return d, None, body


@pytest.mark.parametrize("search", ["augmented", "linear"])
@pytest.mark.parametrize("case", ["c1", "c2", "c3"])
def test_pathology(benchmark, case, search):
    d, setup, body = {"c1": _c1, "c2": _c2, "c3": _c3}[case](search)
    benchmark.group = "pathology-%s" % case
    before = d.stats()["nodes_visited"]
    kw = {"setup": setup} if setup else {}
    benchmark.pedantic(body, rounds=ROUNDS, iterations=1, **kw)
    runs = ROUNDS if benchmark.enabled else 1
    visited = (d.stats()["nodes_visited"] - before) / runs
    benchmark.extra_info["nodes_visited_per_alloc"] = round(visited)
    workloads.note(benchmark, "%.0f nodes visited per alloc (set-up included)" % visited)
    d.check()
