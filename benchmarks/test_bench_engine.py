"""The two simulation engines side by side: one group per workload and
policy, a row per engine (c, python), the same run through each. The C
engine's speed-up, ops/s over ops/s of the same run, is printed per group
under "benchmark notes".

    pytest benchmarks/test_bench_engine.py --benchmark-only              100k operations
    pytest benchmarks/test_bench_engine.py --benchmark-only --run-slow   1M operations

Both drivers: the generic one (every policy runs) and the IPMMU (all but
iova-lazy).
"""
import pytest

import workloads
from pyiova.sim import DEFAULT_POLICIES, not_applicable, simulate

WORKLOADS = ("usb", "nic", "nvme", "random")
_seen = {}


def _outcome(r):
    d = r.as_dict()
    for key in ("elapsed_s", "ops_per_sec", "engine", "engine_note"):
        del d[key]
    return d


@pytest.mark.parametrize("engine", ["c", "python"])
@pytest.mark.parametrize("policy", DEFAULT_POLICIES)
@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("driver", ["generic", "ipmmu"])
def test_engines(benchmark, request, driver, workload, policy, engine):
    if not_applicable(policy, driver):
        pytest.skip(not_applicable(policy, driver))
    ops = 1_000_000 if request.config.getoption("--run-slow") else 100_000
    benchmark.group = "engine-%s-%s-%s-%dk" % (driver, workload, policy, ops // 1000)
    r = benchmark.pedantic(simulate, args=(workload, policy, driver),
                           kwargs=dict(ops=ops, seed=1, engine=engine), rounds=1, iterations=1)
    assert r.engine == engine
    benchmark.extra_info.update(ops=r.ops, ops_per_sec=r.ops_per_sec, verdict=r.verdict)
    key = (driver, workload, policy, ops)
    other = _seen.setdefault(key, {})
    other[engine] = r
    if len(other) == 2:
        c, py = other["c"], other["python"]
        assert _outcome(c) == _outcome(py)            # the same run, whichever engine
        workloads.NOTES.append("engine %-7s %-7s %-17s %dk ops: C %11s ops/s, Python %9s "
                               "ops/s: %5.1fx" % (driver, workload, policy, ops // 1000,
                                           format(int(c.ops_per_sec), ","),
                                           format(int(py.ops_per_sec), ","),
                                           c.ops_per_sec / py.ops_per_sec))
