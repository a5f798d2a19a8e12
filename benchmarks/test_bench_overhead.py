"""What the Python layer costs per call.

Group "call-overhead": one alloc(1)+free pair on a nearly empty domain (the
cheapest work the core does), made three ways, next to an empty cffi call:

  empty-cffi      lib.iova_current_cpu(d): a C function that does nothing
                  worth timing; the floor of any call through cffi
  raw-lib         lib.iova_alloc + lib.iova_free called directly: the C work
                  plus two bare crossings
  IovaDomain      d.alloc + d.free: what a user writes

(IovaDomain - raw-lib) / 2 is the wrapper's own cost per call; issue 7 asks
that a single call cost at most about twice an empty cffi call.
bench_python_overhead.py prints these ratios directly.
"""
import pytest

from pyiova import IovaDomain
from pyiova._pyiova import lib

LIMIT = 0xFFFFF


@pytest.mark.parametrize("impl", ["empty-cffi", "raw-lib", "IovaDomain"])
def test_call_overhead(benchmark, impl):
    benchmark.group = "call-overhead"
    d = IovaDomain(4096, 1, ncpus=1)
    raw = d._d
    if impl == "empty-cffi":
        f = lib.iova_current_cpu
        benchmark(f, raw)
    elif impl == "raw-lib":
        alloc, free = lib.iova_alloc, lib.iova_free

        def pair():
            free(raw, alloc(raw, 1, LIMIT, 1))
        benchmark(pair)
    else:
        alloc, free = d.alloc, d.free

        def pair():
            free(alloc(1, LIMIT, True))
        benchmark(pair)
    assert len(d) == 0
