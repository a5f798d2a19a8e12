"""The what-if through a driver model (trace/whatif.py, sim_feed.py): the
settled lifetimes of a real capture as the workload vocabulary, through
simulate()'s engines -- the C engine and the Python reference must agree on
every figure -- with stale translations where the driver loses flushes."""
import json
import os
import random

import pytest

from test_trace_cli import run

from pyiova import errors
from pyiova import trace as T
from pyiova.sim import POLICIES, _setup, _teardown, simulate
from pyiova.sim_feed import FedRun
from pyiova.trace.whatif import RESULT_FIELDS
from pyiova.workloads import get_workload

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")
LAZY = os.path.join(DATA, "nvme-lazy-6.12.107.trace.gz")
STRICT = os.path.join(DATA, "nvme-strict-6.12.107.trace.gz")
LAZY61 = os.path.join(DATA, "nvme-lazy-6.1.0-56.trace.gz")
CHECK = os.path.join(DATA, "vtd-6.12-strict.trace")
POLICY_LIST = ["iova", "iova-lazy", "iova-tree", "wraparound", "reset-when-empty"]
DRIVER_FIELDS = ("driver", "engine", "driver_note", "driver_maps", "driver_failures") \
    + RESULT_FIELDS


def _rows(results):
    return {(r.policy, d.device): d.to_dict() for r in results for d in r.devices}


@pytest.fixture(scope="module")
def lazy_ipmmu():
    return {eng: T.replay(LAZY, ["iova", "wraparound", "reset-when-empty"], driver="ipmmu",
                          engine=eng) for eng in ("c", "python")}


def test_both_engines_give_identical_results_on_a_capture(lazy_ipmmu):
    c, py = _rows(lazy_ipmmu["c"]), _rows(lazy_ipmmu["python"])
    assert set(c) == set(py)
    for key in c:
        assert c[key]["engine"] == "c" and py[key]["engine"] == "python"
        c[key].pop("engine")
        py[key].pop("engine")
        assert c[key] == py[key], key


@pytest.mark.parametrize("trace,driver", [(LAZY61, "generic"), (CHECK, "ipmmu")])
def test_both_engines_agree_on_other_captures_and_drivers(trace, driver):
    out = []
    for eng in ("c", "python"):
        rows = _rows(T.replay(trace, POLICY_LIST, driver=driver, engine=eng))
        for row in rows.values():
            row.pop("engine")
        out.append(rows)
    assert out[0] == out[1]


def test_the_erratum_leaves_stale_translations_and_wraparound_none(lazy_ipmmu):
    by = {r.policy: r.devices[0] for r in lazy_ipmmu["c"]}
    iova, wrap = by["iova"], by["wraparound"]
    # the kernel's allocator hands freed IOVAs straight back out; the IPMMU's
    # unmap-path flush is lost every time (drop rate 1): the device reaches
    # new buffers through entries the old mappings left
    assert iova.invalidations_lost == iova.iotlb_syncs == iova.frees > 0
    assert iova.stale_translations > 0
    assert iova.stale_translations == iova.stale_remapped + iova.stale_unmapped
    # the review's wraparound never reuses an IOVA before a flush, and the
    # IPMMU skips its syncs under it
    assert wrap.stale_translations == 0 and wrap.faults == 0
    assert wrap.syncs_skipped == wrap.frees and wrap.iotlb_syncs == 0


def test_no_lost_flush_no_stale_translation():
    lost = T.replay(CHECK, "iova", driver="ipmmu").devices[0]
    assert lost.stale_translations > 0          # the capture reuses freed IOVAs
    d = T.replay(CHECK, "iova", driver="ipmmu", drop_rate=0.0).devices[0]
    assert d.invalidations_lost == 0 and d.stale_translations == 0 and d.faults == 0
    assert d.iotlb_syncs == d.frees


def test_every_page_of_every_buffer_is_accessed_once():
    lt = T.load(STRICT)
    pages = sum(a.size >> 12 for d in lt.devices.values() for a in d.allocations)
    r = T.replay(STRICT, "iova", driver="generic")
    d = r.devices[0]
    assert d.failures == 0 and d.accesses == pages
    assert d.iotlb_hits + d.iotlb_misses == d.accesses


@pytest.mark.parametrize("trace", [STRICT, CHECK])
def test_the_generic_driver_is_the_traced_iommu(trace):
    """Under the generic driver (the replay's own setup) the driver model
    maps what the cookie-level what-if maps, and strict invalidation leaves
    nothing stale."""
    for r in T.replay(trace, POLICY_LIST, driver="generic"):
        for d in r.devices:
            if d.driver_maps is None:
                continue
            assert d.driver == "generic" and d.engine == "c"
            assert (d.driver_maps, d.driver_failures) == (d.maps - d.failures, d.failures)
            assert d.stale_translations == 0 and d.faults == 0


def test_the_kernels_own_policy_changes_nothing_through_the_generic_driver():
    r = T.replay(STRICT, "iova", driver="generic")
    d = r.devices[0]
    assert r.check.ok and d.changed == 0 and d.failures == 0
    assert d.iotlb_syncs == d.frees


def test_without_a_driver_model_the_fields_stay_empty():
    d = T.replay(CHECK, "iova", driver="none").devices[0]
    assert all(getattr(d, f) is None for f in DRIVER_FIELDS)
    assert d.maps == 14


def test_a_policy_the_driver_cannot_run_is_noted():
    r = T.replay(CHECK, "iova-lazy", driver="ipmmu")
    d = r.devices[0]
    assert d.accesses is None and "deferred-flush" in d.driver_note
    assert d.maps == 14             # the cookie-level what-if still runs
    assert "not run through the ipmmu driver model" in T.format_replay(r)


def ft(task, pid, cpu, ts, event, msg, flags="....."):
    return "%16s-%-5d [%03d] %s %12.6f: %s: %s" % (task, pid, cpu, flags, ts, event, msg)


def test_a_domain_of_several_devices_is_noted_not_run():
    lines = [
        ft("swapper/0", 1, 0, 0.1, "add_device_to_group", "IOMMU: groupID=3 device=0000:00:1c.0"),
        ft("swapper/0", 1, 0, 0.2, "add_device_to_group", "IOMMU: groupID=3 device=0000:00:1c.1"),
        ft("fio", 300, 0, 1.0, "map", "IOMMU: iova=0x00000000fffff000 - 0x0000000100000000 "
           "paddr=0x0000000000001000 size=4096"),
        ft("fio", 300, 0, 1.1, "dma_map_page", "0000:00:1c.0 dir=FROM_DEVICE dma_addr=fffff000 "
           "size=4096 phys_addr=1000 attrs="),
        ft("fio", 300, 0, 1.2, "map", "IOMMU: iova=0x00000000ffffe000 - 0x00000000fffff000 "
           "paddr=0x0000000000002000 size=4096"),
        ft("fio", 300, 0, 1.3, "dma_map_page", "0000:00:1c.1 dir=FROM_DEVICE dma_addr=ffffe000 "
           "size=4096 phys_addr=2000 attrs="),
    ]
    r = T.replay(lines, "iova", driver="ipmmu")
    assert r.check.ok
    first = r.devices[0]
    assert first.accesses is None and "one device per domain" in first.driver_note


def test_bad_driver_engine_and_drop_rate_are_refused():
    with pytest.raises(errors.IovaValueError, match="driver 'bogus'"):
        T.replay(CHECK, "iova", driver="bogus")
    with pytest.raises(errors.IovaValueError, match="engine"):
        T.replay(CHECK, "iova", engine="java")
    with pytest.raises(errors.IovaValueError):
        T.replay(CHECK, "iova", driver="ipmmu", drop_rate=float("nan"))


# ---- the command line --------------------------------------------------------------

def test_cli_driver_table_and_json(capsys):
    code, out, err = run(capsys, LAZY, "--policy", "iova,wraparound", "--driver", "ipmmu")
    assert code == 0 and err == ""
    assert "through the ipmmu driver model (c engine" in out
    assert "stale translations" in out
    code, out, _ = run(capsys, CHECK, "--policy", "iova", "--driver", "ipmmu", "--json",
                       "--engine", "python")
    row = json.loads(out)[0]["devices"][0]
    assert row["driver"] == "ipmmu" and row["engine"] == "python"
    assert row["stale_translations"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--policy", "iova", "--driver", "bogus"], "driver 'bogus'"),
    (["--check", "--driver", "ipmmu"], "--driver is for the what-if"),
    (["--policy", "iova", "--drop-rate", "2"], "drop"),
])
def test_cli_refuses_bad_driver_arguments(capsys, argv, message):
    code, out, err = run(capsys, CHECK, *argv)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


# ---- any producer: a FedRun in chunks is one run ---------------------------------------

@pytest.mark.parametrize("engine", ["c", "python"])
@pytest.mark.parametrize("driver,policy", [("ipmmu", "iova"), ("generic", "iova-lazy"),
                                           ("ipmmu", "wraparound")])
def test_chunks_of_a_fed_run_add_up_to_simulate(engine, driver, policy):
    wl = get_workload("random")
    ops = list(wl.ops(6000, seed=4))
    whole = simulate(wl, policy, driver, ops=len(ops), seed=4, engine=engine)
    assert whole.failures == 0
    dom, dev, cookie = _setup(wl, POLICIES[policy], driver, 4, "6.12", 1.0)
    try:
        run = FedRun(dom, dev, cookie, workload=wl.name, policy=policy, driver=driver, seed=4,
                     engine=engine)
        rng = random.Random(7)
        i = 0
        while i < len(ops):
            n = rng.choice((1, 2, 17, 300, 1500))
            run.feed(ops[i:i + n])
            i += n
        got = run.result()
    finally:
        _teardown(dom, dev)
    assert run.done == len(ops) and got.engine == engine
    skip = {"elapsed_s", "ops_per_sec", "ops_requested", "params", "workload"}
    a = {k: v for k, v in got.as_dict().items() if k not in skip}
    b = {k: v for k, v in whole.as_dict().items() if k not in skip}
    assert a == b
