"""Whole simulations: a workload through the DMA API, the driver, the page
table and the IOTLB (on the default engine, the C one; test_bench_engine.py
sets the engines side by side). One group per workload, one row per policy,
so the policies' costs are read off one table; the 1M-operation run is the
slow case.

    pytest benchmarks/test_bench_sim.py --benchmark-only [--run-slow]
"""
import pytest

from pyiova.sim import simulate

POLICIES = ["iova", "iova-tree", "wraparound", "reset-when-empty"]


def _run(benchmark, workload, policy, driver, ops):
    benchmark.group = "sim-%s-%s-%dk" % (workload, driver, ops // 1000)
    result = benchmark.pedantic(simulate, args=(workload,),
                                kwargs=dict(policy=policy, driver=driver, ops=ops, seed=1),
                                rounds=1, iterations=1)
    benchmark.extra_info.update(ops=result.ops, maps=result.maps, failures=result.failures,
                                stale=result.stale_translations)
    assert result.ops > 0 and result.maps > 0
    return result


@pytest.mark.parametrize("policy", POLICIES)
def test_usb_on_ipmmu(benchmark, policy):
    r = _run(benchmark, "usb", policy, "ipmmu", 50_000)
    if policy == "wraparound":
        assert r.failures == 0 and r.stale_translations == 0


@pytest.mark.parametrize("policy", ["iova", "iova-lazy", "wraparound"])
def test_nic_on_generic(benchmark, policy):
    r = _run(benchmark, "nic", policy, "generic", 50_000)
    assert r.stale_translations == 0          # a strict (or lazily flushed) IOMMU


@pytest.mark.slow
def test_a_million_usb_operations(benchmark):
    r = _run(benchmark, "usb", "wraparound", "ipmmu", 1_000_000)
    assert r.ops == 1_000_000 and r.failures == 0 and r.stale_translations == 0
