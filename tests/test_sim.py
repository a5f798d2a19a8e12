"""The simulator: the review's argument as numbers, the failure rule, the
counters, and results that do not depend on anything but the seed."""
import pytest

from pyiova import sim
from pyiova.cookie import cookie_of
from pyiova.sim import (DEFAULT_POLICIES, POLICIES, PolicyNotApplicable, compare, free_space,
                        not_applicable, simulate)
from pyiova.workloads import get_workload

# 1 MiB transfers, one at a time, page-aligned: every transfer takes one
# 256-page aligned block of the 2^20-page (4 GiB) space, so the arithmetic
# can be done by hand.
BIG = dict(sizes="1M", inflight=1, unaligned=0)
BLOCKS = (1 << 20) // 256


def transfer_op_index(k):
    """The index of the k-th transfer's map (from 0) in a BIG stream: the ring
    first, then 6 operations per transfer (map, descriptor fetch, first and
    last byte, status write-back, unmap) and an advance after every 8th."""
    return 1 + 6 * k + k // 8


def test_reset_when_empty_runs_out_after_a_bounded_number_of_maps():
    r = simulate("usb", "reset-when-empty", "ipmmu", ops=40_000, params=BIG)
    # All 4096 blocks but the one holding pfn 0 (below start_pfn) and the one
    # under the descriptor ring, which stays mapped so the space never resets.
    transfers = BLOCKS - 2
    assert r.maps_before_failure == 1 + transfers
    assert r.first_failure_op == transfer_op_index(transfers)
    assert r.resets == 0 and r.stale_translations == 0 and r.faults == 0
    assert r.verdict == "FAILS" and r.stopped_early
    assert r.failures == sim.DEFAULT_MAX_FAILURES
    assert r.peak_live_pfns == 1 + 256                      # the ring and one transfer
    assert r.skipped > 0                                     # the failed maps' accesses


def test_wraparound_never_fails_never_stale_and_flushes_once_per_wrap():
    ops = transfer_op_index(5000)
    r = simulate("usb", "wraparound", "ipmmu", ops=ops, params=BIG)
    assert r.failures == 0 and r.stale_translations == 0 and r.faults == 0
    per_pass = BLOCKS - 1                                    # less the ring's block
    assert r.wraps == (5000 - 1) // per_pass == 1
    assert r.full_flushes == r.wraps
    assert r.iotlb_syncs == 0 and r.syncs_skipped == r.unmaps   # no per-unmap invalidation
    assert r.verdict == "ok"


def test_the_kernel_allocator_on_the_erratum_ipmmu_is_unsafe():
    r = simulate("usb", "iova", "ipmmu", ops=20_000)
    assert r.failures == 0
    assert r.stale_translations > 0 and r.stale_remapped > 0
    assert r.invalidations_lost == r.iotlb_syncs > 0
    assert r.verdict == "UNSAFE"
    fixed = simulate("usb", "iova", "ipmmu", ops=20_000, drop_rate=0.0)
    assert fixed.stale_translations == fixed.faults == 0 and fixed.verdict == "ok"


def test_compare_tells_the_reviews_story_on_the_default_usb_workload():
    results = compare("usb", ops=200_000)
    by = {r.policy: r for r in results}
    assert [r.policy for r in results] == list(DEFAULT_POLICIES)
    assert by["reset-when-empty"].verdict == "FAILS"
    assert by["wraparound"].verdict == "ok" and by["wraparound"].wraps >= 1
    assert by["iova"].verdict == "UNSAFE"
    assert not by["iova-lazy"].applicable and "deferred-flush" in by["iova-lazy"].note
    # the same operations for every policy until one stops
    assert by["iova"].maps == by["wraparound"].maps == by["iova-tree"].maps


def test_the_strict_generic_iommu_is_safe_and_the_flush_queue_defers():
    strict = simulate("usb", "iova", "generic", ops=20_000)
    lazy = simulate("usb", "iova-lazy", "generic", ops=20_000)
    for r in (strict, lazy):
        assert r.verdict == "ok"
    assert strict.iotlb_syncs == strict.unmaps and strict.full_flushes == 0
    assert lazy.iotlb_syncs == 0 and lazy.full_flushes > 0   # the timer's flushes


@pytest.mark.parametrize("name", ["nic", "nvme", "random"])
@pytest.mark.parametrize("driver", ["ipmmu", "generic"])
def test_every_workload_runs_on_both_drivers(name, driver):
    r = simulate(name, "wraparound", driver, ops=4000, seed=3)
    assert r.ops == 4000 and r.maps > 0 and r.unmaps > 0 and r.failures == 0
    assert r.skipped == 0 and r.stale_translations == 0
    assert r.accesses == r.iotlb_hits + r.iotlb_misses > 0


def test_sixty_four_bit_devices_get_the_whole_aperture_on_the_generic_iommu():
    r = simulate("nvme", "iova", "generic", ops=2000)
    assert r.space_pfns == (1 << 36) - 1                    # 48-bit aperture, pfn 0 excluded
    ipmmu = simulate("nvme", "iova", "ipmmu", ops=2000)
    assert ipmmu.space_pfns == (1 << 20) - 1                 # the IPMMU's 32-bit aperture


def test_results_depend_only_on_the_seed():
    timing = ("elapsed_s", "ops_per_sec")
    a, b = (simulate("nvme", "iova", "generic", ops=5000, seed=5).as_dict() for _ in range(2))
    c = simulate("nvme", "iova", "generic", ops=5000, seed=6).as_dict()
    for d in (a, b, c):
        for key in timing:
            d.pop(key)
    assert a == b
    assert a != c


def test_live_pfns_match_the_allocator(monkeypatch):
    seen = {}
    teardown = sim._teardown

    def spy(dom, dev):
        seen.update(cookie_of(dom).stats())
        teardown(dom, dev)

    monkeypatch.setattr(sim, "_teardown", spy)
    for name in ("usb", "nvme", "random"):
        params = {"coherent_ratio": 0.2, "sg_ratio": 0.2} if name == "random" else None
        r = simulate(name, "wraparound", "generic", ops=6000, params=params)
        assert r.live_pfns == seen["live_pfns"] > 0
        assert r.peak_live_pfns >= r.live_pfns


def test_max_failures_stops_the_run():
    r = simulate("usb", "reset-when-empty", "ipmmu", ops=40_000, params=BIG, max_failures=3)
    assert r.failures == 3 and r.stopped_early
    assert r.ops < 40_000 and r.ops - 1 == r.failure_ops[-1]
    assert r.failure_ops[0] == r.first_failure_op


def test_policies_that_cannot_run_say_why():
    assert not_applicable("iova", "ipmmu") is None
    assert "deferred-flush" in not_applicable("iova-lazy", "ipmmu")
    assert "4.14" in not_applicable("iova-lazy", "generic", "4.10")
    assert "MSI" in not_applicable("msi", "generic")
    with pytest.raises(PolicyNotApplicable, match="deferred-flush"):
        simulate("usb", "iova-lazy", "ipmmu", ops=10)
    with pytest.raises(ValueError, match="unknown policy"):
        simulate("usb", "best-fit", ops=10)
    with pytest.raises(ValueError, match="unknown driver"):
        simulate("usb", "iova", "amd", ops=10)
    r = compare("usb", policies=("msi", "wraparound"), driver="generic", ops=500)
    assert [x.applicable for x in r] == [False, True]
    d = r[0].as_dict()
    assert d["verdict"] == "n/a" and d["maps"] is None and d["policy"] == "msi"


def test_kernel_4_10_rules_run():
    r = simulate("usb", "iova", "generic", ops=5000, kernel="4.10")
    assert r.kernel == "4.10" and r.verdict == "ok"


def test_kernel_6_1_rules_run_with_the_flush_queue():
    assert not_applicable("iova-lazy", "generic", "6.1") is None
    for policy in ("iova", "iova-lazy"):
        r = simulate("nvme", policy, "generic", ops=5000, kernel="6.1")
        assert r.kernel == "6.1" and r.verdict == "ok" and r.maps > 0
    with pytest.raises(ValueError, match="'6.2'"):
        simulate("usb", "iova", ops=10, kernel="6.2")


def test_as_dict_carries_the_json_fields():
    d = simulate("usb", "iova", ops=1000).as_dict()
    for key in ("policy", "ops", "maps", "failures", "first_failure_op", "peak_live_pfns",
                "full_flushes", "iotlb_hits", "iotlb_misses", "stale_translations",
                "ops_per_sec", "fragmentation", "verdict", "workload", "driver", "seed"):
        assert key in d
    assert "timeline" not in d
    assert d["params"]["sizes"] == list(get_workload("usb").sizes)


def test_timeline_samples_the_space():
    r = simulate("usb", "wraparound", "ipmmu", ops=30_000, params=BIG, timeline=True)
    ops = [s.op for s in r.timeline]
    assert ops[0] == 0 and ops[-1] == r.ops and ops == sorted(ops)
    assert len(r.timeline) >= sim.TIMELINE_SAMPLES
    last = r.timeline[-1]
    assert last.held_pfns == sum(n for _, _, n in last.runs) >= last.live_pfns
    assert max(s.full_flushes for s in r.timeline) == r.full_flushes


def test_free_space_by_hand():
    # space [1, 100]; held 1-9, 20-29, 95-100 -> free 10-19 (10), 30-94 (65)
    assert free_space([(1, 9), (20, 29), (95, 100)], 1, 100) == (75, 65)
    assert free_space([], 1, 100) == (100, 100)
    assert free_space([(0, 200)], 1, 100) == (0, 0)
    assert free_space([(50, 60)], 1, 55) == (49, 49)


def test_progress_is_reported_with_the_policy_name():
    seen = []
    compare("usb", policies=("iova", "wraparound"), ops=9000,
            progress=lambda done, label: seen.append((done, label)))
    assert seen[-1] == (18_000, "wraparound")
    assert {label for _, label in seen} == {"iova", "wraparound"}
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_every_policy_has_a_summary():
    for name, pol in POLICIES.items():
        assert pol.name == name and pol.summary
