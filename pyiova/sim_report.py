"""Simulation results as text: what `pyiova simulate`, `compare` and `bench`
print (trace replay's tables are pyiova.trace.report's).

    run_header(wl, driver, drop_rate, ops, seed, kernel)   the run's lines
    format_result(r)           one SimResult, measure by measure
    results_table(results)     several, a row each (a policy that could not
                               run: its reason across the columns)
    explain(r)                 the verdict as a sentence
    simulate_text / compare_text / bench_text   a command's whole report
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .allocators import AllocatorType
from .drivers.registry import DRIVERS
from .policies import POLICIES
from .tables import align

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .sim import SimResult
    from .workloads.base import Workload

__all__ = ["run_header", "format_result", "results_table", "explain", "simulate_text",
           "compare_text", "bench_text", "engine_line"]


def _num(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.2f" % v
    return format(v, ",")


def _space(pfns: int) -> str:
    size = pfns * 4096
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if size >= div:
            return "%.4g %s" % (size / div, unit)
    return "%d KiB" % (size >> 10)


def _allocator(r: SimResult) -> AllocatorType | None:
    """The allocator type the result's policy ran (None for a policy the
    table does not know)."""
    pol = POLICIES.get(r.policy)
    return pol.allocator if pol is not None else None


def run_header(wl: Workload, driver: str, drop_rate: float, ops: int, seed: Any,
               kernel: str) -> str:
    """The lines that say what ran: workload, device, driver, run."""
    drv = DRIVERS[driver]
    if driver == "ipmmu":
        drv += " (unmap-path flushes lost with probability %g)" % drop_rate
    dev = wl.device()
    return ("workload  %s: %s\ndevice    %s, %d-bit DMA mask, %s\ndriver    %s: %s\n"
            "run       %s ops, seed %d, kernel %s rules" % (
                wl.name, wl.summary, dev.name, wl.dma_bits,
                "PCI" if dev.is_pci else "platform device", driver, drv,
                format(ops, ","), seed, kernel))


_COLUMNS = (
    # header, function of a result, right-aligned
    ("policy", lambda r: r.policy, False),
    ("verdict", lambda r: r.verdict, False),
    ("ops/s", lambda r: format(int(r.ops_per_sec), ","), True),
    ("ops", lambda r: _num(r.ops), True),
    ("maps", lambda r: _num(r.maps), True),
    ("fails", lambda r: _num(r.failures), True),
    ("1st fail", lambda r: _num(r.first_failure_op), True),
    ("peak live", lambda r: _num(r.peak_live_pfns), True),
    ("frag", lambda r: "%.3f" % r.fragmentation, True),
    ("syncs", lambda r: _num(r.iotlb_syncs), True),
    ("flushes", lambda r: _num(r.full_flushes), True),
    ("hits", lambda r: _num(r.iotlb_hits), True),
    ("misses", lambda r: _num(r.iotlb_misses), True),
    ("stale", lambda r: _num(r.stale_translations), True),
    ("faults", lambda r: _num(r.faults), True),
)


def results_table(results: Iterable[SimResult]) -> str:
    """The results as a plain-text table; a policy that cannot run gets its
    reason across the measurement columns."""
    rows = [[f(r) for _, f, _ in _COLUMNS] if r.applicable else [r.policy, "n/a", r.note]
            for r in results]
    return align([h for h, _, _ in _COLUMNS], rows,
                 [i for i, (_, _, right) in enumerate(_COLUMNS) if right])


def _live_at_failure(r: SimResult) -> str:
    """What was mapped when the first map failed, next to the run's peak."""
    live = r.live_at_first_failure
    if live is None:                    # a result from before this was recorded
        return "with never more than %s pfns (%s) mapped at once" % (
            format(r.peak_live_pfns, ","), _space(r.peak_live_pfns))
    pfns = "%s pfn%s (%s)" % (format(live, ","), "" if live == 1 else "s", _space(live))
    if live == r.peak_live_pfns:
        return "with %s mapped, as many as were ever mapped at once" % pfns
    return "with %s mapped at the time (the run's peak: %s pfns, %s)" % (
        pfns, format(r.peak_live_pfns, ","), _space(r.peak_live_pfns))


def explain(r: SimResult) -> str:
    """One sentence on what a result means."""
    if not r.applicable:
        return "%s: not run (%s)." % (r.policy, r.note)
    if r.failures:
        s = ("%s FAILS: the first map failed at op %s, after %s good maps, %s; %s failed map%s "
             "in all" % (r.policy, format(r.first_failure_op, ","),
                         format(r.maps_before_failure, ","), _live_at_failure(r),
                         format(r.failures, ","), "" if r.failures == 1 else "s"))
        if r.stopped_early:
            s += ", after which the run gave up (a device that retries forever is hung by now)"
        if _allocator(r) is AllocatorType.RESET_WHEN_EMPTY:
            s += (". The space was never reset: something stayed mapped throughout"
                  if r.resets == 0 else ". The space was reset %d times" % r.resets)
        return s + "."
    if r.stale_translations or r.faults:
        s = ("%s UNSAFE: %s device accesses went through stale IOTLB entries (%s into freed "
             "buffers, %s into buffers now mapped for something else)"
             % (r.policy, format(r.stale_translations, ","), format(r.stale_unmapped, ","),
                format(r.stale_remapped, ",")))
        if r.faults:
            s += ", and %s accesses to live buffers were refused by stale rights" \
                 % format(r.faults, ",")
        if r.invalidations_lost:
            s += "; %s unmap-path flushes were lost to the erratum" \
                 % format(r.invalidations_lost, ",")
        return s + "."
    s = "%s ok: no failed map, no stale translation in %s ops" % (r.policy, format(r.ops, ","))
    if _allocator(r) is AllocatorType.WRAPAROUND:
        s += "; %d wraps, %s full flushes, %s per-unmap syncs skipped" % (
            r.wraps, format(r.full_flushes, ","), format(r.syncs_skipped, ","))
    else:
        s += "; %s full flushes" % format(r.full_flushes, ",")
    return s + "."


def format_result(r: SimResult) -> str:
    """One result as labelled lines (simulate's table)."""
    fail = "0"
    if r.failures:
        fail = "%s, the first at op %s after %s good maps%s%s" % (
            _num(r.failures), _num(r.first_failure_op), _num(r.maps_before_failure),
            "" if r.live_at_first_failure is None else
            ", %s pfns mapped then" % _num(r.live_at_first_failure),
            "; the run gave up after the last of them" if r.stopped_early else "")
    rows = [
        ("policy", "%s: %s" % (r.policy, r.verdict)),
        ("operations", "%s of %s in %.2f s (%s ops/s)" % (
            _num(r.ops), _num(r.ops_requested), r.elapsed_s, _num(int(r.ops_per_sec)))),
        ("maps / unmaps", "%s / %s" % (_num(r.maps), _num(r.unmaps))),
        ("failed maps", fail),
        ("skipped", "%s accesses and unmaps of failed mappings" % _num(r.skipped)),
        ("live pfns", "peak %s (%s), %s at the end" % (_num(r.peak_live_pfns),
                                                       _space(r.peak_live_pfns),
                                                       _num(r.live_pfns))),
        ("address space", "%s pfns (%s); at the end %s free, the largest free run %s "
                          "(fragmentation %.3f)" % (_num(r.space_pfns), _space(r.space_pfns),
                                                    _num(r.free_pfns),
                                                    _num(r.largest_free_pfns),
                                                    r.fragmentation)),
        ("IOTLB", "%s accesses: %s hits, %s misses" % (_num(r.accesses), _num(r.iotlb_hits),
                                                       _num(r.iotlb_misses))),
        ("invalidation", "%s syncs (%s skipped, %s lost to the erratum), %s full flushes" % (
            _num(r.iotlb_syncs), _num(r.syncs_skipped), _num(r.invalidations_lost),
            _num(r.full_flushes))),
        ("stale", "%s stale translations (%s into freed buffers, %s into remapped ones), "
                  "%s accesses refused by stale rights" % (
                      _num(r.stale_translations), _num(r.stale_unmapped),
                      _num(r.stale_remapped), _num(r.faults))),
        ("allocator", "%s wraps, %s resets" % (_num(r.wraps), _num(r.resets))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join("  %-*s  %s" % (width, k, v) for k, v in rows)


def simulate_text(header: str, r: SimResult) -> str:
    """`pyiova simulate`'s report: the run, its measures, its verdict."""
    return "\n".join([header, "", format_result(r), "", explain(r)])


def compare_text(header: str, results: Sequence[SimResult], took: float) -> str:
    """`pyiova compare`'s report: the run, the device's space, the table, a
    sentence per policy; took: the seconds it all ran."""
    space = next((r.space_pfns for r in results if r.applicable), 0)
    lines = [header, "the device's IOVA space: %s pfns (%s)" % (_num(space), _space(space)),
             "", results_table(results), ""]
    lines += [explain(r) for r in results]
    lines.append("\n(%.1f s; peak live and frag are in 4 KiB pfns: frag = 1 - largest free range "
                 "/ free space at the end)" % took)
    return "\n".join(lines)


def engine_line(r: SimResult, reference: SimResult | None = None) -> str:
    """The engines side by side on one run: r, and the same run again
    through the Python engine (`reference`; None when r ran there itself)."""
    if r.engine != "c":
        return "\nengine: the Python engine ran these (%s)" % r.engine_note
    ref: SimResult = reference  # type: ignore[assignment]  # (a C run comes with its reference)
    return ("\nengine: %s %s through the C engine %s ops/s, through the Python engine %s "
            "ops/s: %.1fx" % (r.workload, r.policy, format(int(r.ops_per_sec), ","),
                              format(int(ref.ops_per_sec), ","),
                              r.ops_per_sec / ref.ops_per_sec
                              if ref.ops_per_sec else 0.0))


def bench_text(results: Iterable[SimResult], workloads: Sequence[str],
               policies: Sequence[str], not_run: dict[str, str | None], ops: int, seed: Any,
               driver: str, kernel: str, engine: str | None, took: float) -> str:
    """`pyiova bench`'s report: operations per second (and the verdict when
    it is not ok) of each policy (rows) on each workload (columns).
    not_run: {policy: why it could not run}; engine: engine_line()'s text
    or None."""
    by = {(r.workload, r.policy): r for r in results}
    runnable = [p for p in policies if p not in not_run]
    lines = ["pyiova bench: %s ops per run, seed %d, driver %s, kernel %s rules; operations "
             "per second (verdict)" % (format(ops, ","), seed, driver, kernel), ""]
    rows = [[pol] + ["%s %s" % (format(int(by[n, pol].ops_per_sec), ","),
                                "" if by[n, pol].verdict == "ok" else "(%s)" % by[n, pol].verdict)
                     for n in workloads]
            for pol in runnable]
    lines.append(align(["policy"] + list(workloads), rows, range(1, len(workloads) + 1)))
    lines += ["%s: not run (%s)" % (pol, why) for pol, why in not_run.items()]
    if engine is not None:
        lines.append(engine)
    lines.append("\n(%.1f s in all)" % took)
    return "\n".join(lines)
