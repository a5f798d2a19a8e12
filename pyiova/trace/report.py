"""Readable tables for replay and check results."""
from __future__ import annotations

from ..tables import align

__all__ = ["format_check", "format_replay", "format_decided", "kernel_only", "no_events",
           "NO_EVENTS"]

NO_EVENTS = "no iommu:map/unmap or dma: events found"


def _as_traced(chk) -> str:
    """The kernel's own replay, named as a policy row is."""
    return "as traced (%s)" % ("iova-lazy" if chk.mode == "lazy" else "iova")


def no_events(chk):
    """Why a replay compared no address: NO_EVENTS, with the note that
    says what the file was when one does (trace-cmd's binary, UTF-16...)."""
    for n in chk.notes:
        if " is " in n and ("trace-cmd" in n or "UTF-16" in n or "not text" in n
                            or "empty" in n):
            return "%s: %s" % (NO_EVENTS, n)
    return NO_EVENTS


def kernel_only(chk):
    """`pyiova replay --json` without --policy: the kernel's replay alone,
    as a policy row."""
    return {"policy": _as_traced(chk),
            "kernel": chk.kernel, "mode": chk.mode, "mode_reason": chk.mode_reason,
            "ok": chk.ok, "decided": chk.decided, "devices": chk.to_dicts(),
            "notes": chk.notes, "trace": chk.trace}


def _table(header, rows, right):
    """Plain str() cells (no thousands separators), a rule under the header."""
    return align(header, [["" if c is None else str(c) for c in r] for r in rows], right,
                 rule=True)


def _notes(notes):
    if not notes:
        return []
    return ["", "notes:"] + ["  - " + n for n in notes]


def _divergence(f) -> str:
    if not f:
        return "-"
    got = "allocation failed" if not f["got"] else "got %#x" % f["got"]
    return "line %d: expected %#x, %s (%s)" % (f["line"], f["expected"], got, f["call"])


def _mode(result):
    text = "%s TLB invalidation" % result.mode
    if result.mode == "lazy":
        text = "lazy TLB invalidation (the flush queue)"
    if result.mode_reason:
        text += " -- %s" % result.mode_reason
    return text


def format_decided(d):
    """What the record decided, as a sentence."""
    parts = ["%d of %d interrupt orders (the allocation came before the interrupt's frees)"
             % (d["interrupt_orders_decided"], d["interrupt_choices"])]
    if d["fires"]:
        parts.append("the moment of %d of %d flush-queue timer fires (%d had one possible "
                     "moment, %d came at the earliest)"
                     % (d["fires_decided"], d["fires"], d["fires_single"], d["fires_earliest"]))
    if d.get("trims"):
        parts.append("the moment of %d of %d depot trims (%d had one possible moment, %d came "
                     "at the earliest)" % (d["trims_decided"], d["trims"], d["trims_single"],
                                           d["trims_earliest"]))
    return "decided by the record: " + "; ".join(parts)


def format_check(result):
    """The table `pyiova replay --check` prints."""
    rows = [(d.device, d.mode, d.allocations, d.matched, d.mismatched, d.skipped,
             _divergence(d.first_divergence)) for d in result.devices]
    lines = ["check against kernel %s rules, %s" % (result.kernel, _mode(result)), ""]
    lines.append(_table(("device", "mode", "allocations", "matched", "mismatched",
                         "skipped", "first divergence"), rows, right=(2, 3, 4, 5)))
    total = result.matched + result.mismatched
    lines.append("")
    if result.ok:
        lines.append("all %d recorded addresses matched" % total)
    elif total == 0:
        lines.append("no recorded address could be compared"
                     + ("" if result.trace.get("events") else ": " + NO_EVENTS))
    else:
        first = result.first_divergence
        lines.append("%d of %d recorded addresses matched; first divergence at line %d"
                     % (result.matched, total, first["line"]))
    if total:
        lines.append(format_decided(result.decided))
    lines += _notes(result.notes)
    return "\n".join(lines)


def _frag(x) -> str:
    return "%.3f" % x


def _driver_table(results):
    """What the driver model saw, a row per policy and device it ran."""
    rows, notes, drivers, engines = [], [], [], set()
    for r in results:
        for d in r.devices:
            if d.driver is None:
                continue
            if d.driver not in drivers:
                drivers.append(d.driver)
            if d.accesses is None:
                if d.driver_note:
                    notes.append("%s on %s: not run through the %s driver model: %s"
                                 % (r.policy, d.device, d.driver, d.driver_note))
                continue
            engines.add(d.engine)
            rows.append((r.policy, d.device, d.driver_failures, d.accesses,
                         d.stale_translations, d.stale_remapped, d.stale_unmapped, d.faults,
                         d.iotlb_syncs, d.syncs_skipped, d.full_flushes, d.invalidations_lost))
    if not rows and not notes:
        return []
    out = ["", "through the %s driver model (%s engine; the device touches every page of a "
               "buffer once, right after it is mapped):"
           % (", ".join(drivers), "/".join(sorted(engines)) or "no")]
    if rows:
        out.append(_table(("policy", "device", "failures", "accesses", "stale",
                           "stale remapped", "stale freed", "faults", "syncs", "syncs skipped",
                           "full flushes", "lost"), rows, right=tuple(range(2, 12))))
    out += ["  - " + n for n in notes]
    return out


def _driver_change(d) -> str:
    if d.accesses is None:
        return ""
    return ("; through the %s driver model %d stale translations (%d into buffers mapped for "
            "something else, %d into freed ones), %d faults, %d of %d unmap-path "
            "invalidations lost" % (d.driver, d.stale_translations, d.stale_remapped,
                                    d.stale_unmapped, d.faults, d.invalidations_lost,
                                    d.iotlb_syncs))


def format_replay(results):
    """The table `pyiova replay` prints: one ReplayResult or several (one
    per policy), a row per device for the kernel's own replay and for each
    policy, then what each policy would have changed."""
    if not isinstance(results, (list, tuple)):
        results = [results]
    lines = []
    chk = results[0].check if results else None
    rows = []
    if chk is not None:
        total = chk.matched + chk.mismatched
        lines.append("the kernel's replay: %s rules, %s" % (chk.kernel, _mode(chk)))
        if total:
            lines.append("  %d of %d recorded addresses reproduced%s; %s"
                         % (chk.matched, total,
                            "" if chk.ok else " (first divergence at line %d)"
                            % chk.first_divergence["line"], format_decided(chk.decided)))
        else:
            lines.append("  " + NO_EVENTS)
        lines.append("")
        traced = _as_traced(chk)
        r0 = results[0]
        for d in r0.devices:
            kd = {c.device: c for c in chk.devices}.get(d.device)
            rows.append((traced, d.device, kd.allocations if kd else 0, kd.frees if kd else 0,
                         d.kernel_failures, "-", d.kernel_peak_live_pages,
                         d.kernel_invalidations, _frag(d.kernel_fragmentation), "-", d.skipped))
    for r in results:
        for d in r.devices:
            first = ("-" if d.first_failure_op is None
                     else "op %d (line %d)" % (d.first_failure_op, d.first_failure_line))
            rows.append((r.policy, d.device, d.maps, d.frees, d.failures, first,
                         d.peak_live_pages, d.invalidations, _frag(d.fragmentation), d.changed,
                         d.skipped))
    lines.append(_table(("policy", "device", "maps", "frees", "failures", "first failure",
                         "peak live pages", "invalidations", "frag <4G", "changed", "skipped"),
                        rows, right=(2, 3, 4, 6, 7, 8, 9, 10)))
    lines += _driver_table(results)
    changes = []
    for r in results:
        for d in r.devices:
            if not d.maps:
                continue
            changes.append(
                "%s on %s: %d of %d allocations at another address; failures %d (as traced "
                "%d); peak %d live pages (as traced %d); %d IOTLB invalidations (as traced "
                "%d); fragmentation below 4 GiB %s (as traced %s)%s"
                % (r.policy, d.device, d.changed, d.maps, d.failures, d.kernel_failures,
                   d.peak_live_pages, d.kernel_peak_live_pages, d.invalidations,
                   d.kernel_invalidations, _frag(d.fragmentation),
                   _frag(d.kernel_fragmentation), _driver_change(d)))
    if changes:
        lines += ["", "what would have changed:"] + ["  - " + c for c in changes]
    notes = []
    for r in results:
        for n in r.notes:
            if n not in notes:
                notes.append(n)
    lines += _notes(notes)
    return "\n".join(lines)
