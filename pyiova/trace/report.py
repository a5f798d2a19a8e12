"""Readable tables for replay and check results."""

__all__ = ["format_check", "format_replay", "format_table"]


def format_table(header, rows, right=()):
    """Columns sized to their contents; column indices in `right` are
    right-aligned (numbers)."""
    cols = len(header)
    text = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(cols)]
    out = []
    for n, r in enumerate(text):
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i])
                 for i in range(cols)]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _notes(notes):
    if not notes:
        return []
    return ["", "notes:"] + ["  - " + n for n in notes]


def _divergence(f):
    if not f:
        return "-"
    got = "allocation failed" if not f["got"] else "got %#x" % f["got"]
    return "line %d: expected %#x, %s (%s)" % (f["line"], f["expected"], got, f["call"])


def format_check(result):
    """The table `pyiova replay --check` prints."""
    rows = [(d.device, d.allocations, d.matched, d.mismatched, d.skipped,
             _divergence(d.first_divergence)) for d in result.devices]
    lines = ["check against kernel %s (policy iova, strict)" % result.kernel, ""]
    lines.append(format_table(("device", "allocations", "matched", "mismatched", "skipped",
                               "first divergence"), rows, right=(1, 2, 3, 4)))
    total = result.matched + result.mismatched
    lines.append("")
    if result.ok:
        lines.append("all %d recorded addresses matched" % total)
    elif total == 0:
        lines.append("no recorded address could be compared")
    else:
        first = result.first_divergence
        lines.append("%d of %d recorded addresses matched; first divergence at line %d"
                     % (result.matched, total, first["line"]))
    lines += _notes(result.notes)
    return "\n".join(lines)


def format_replay(results):
    """The table `pyiova replay` prints: one ReplayResult or several (one
    per policy), a row per device and policy."""
    if not isinstance(results, (list, tuple)):
        results = [results]
    rows = []
    for r in results:
        for d in r.devices:
            first = ("-" if d.first_failure_op is None
                     else "op %d (line %d)" % (d.first_failure_op, d.first_failure_line))
            rows.append((r.policy, d.device, d.maps, d.frees, d.failures, first,
                         d.peak_live_pages, d.flushes, d.skipped))
    lines = [format_table(("policy", "device", "maps", "frees", "failures", "first failure",
                           "peak live pages", "flushes", "skipped"), rows,
                          right=(2, 3, 4, 6, 7, 8))]
    notes = []
    for r in results:
        for n in r.notes:
            if n not in notes:
                notes.append(n)
    lines += _notes(notes)
    return "\n".join(lines)
