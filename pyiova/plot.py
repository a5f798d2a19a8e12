"""Drawing a run's address space over time (needs matplotlib: pyiova[plot]).

    from pyiova.sim import compare
    from pyiova.plot import plot_results
    plot_results(compare("usb", ops=200_000, timeline=True), "usb.png")

One panel per policy, stacked, sharing the time axis: operations run left
to right, IOVAs bottom to top, and the shade of each cell is the fraction
of that address range the allocator held then (live mappings, and what it
keeps back: rcache magazines, retired wraparound ranges, reset-when-empty's
never-reused space). Each panel shows the aligned power-of-two window of
the space its run used, so the 4 GiB a 32-bit device can reach appears
whole when a policy sweeps it, and a policy that lives in a thin band at
the top is drawn large enough to see. Over it: full IOTLB flushes
so far (orange, right axis), and each failed map as a red tick on the top
edge.

matplotlib is imported only when a plot is drawn, and through its
object-oriented API (no pyplot, no global backend), so drawing works
headless and leaves a caller's own matplotlib state alone.
"""
from __future__ import annotations

import os

from . import errors

__all__ = ["plot_results", "plot_path", "have_matplotlib", "MISSING_MATPLOTLIB"]

MISSING_MATPLOTLIB = ("drawing a plot needs matplotlib, which is not installed; "
                      "install it with:  pip install 'pyiova[plot]'  (or: pip install matplotlib)")

_BINS = 256


def have_matplotlib():
    """Whether matplotlib can be imported (without importing it)."""
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None


def plot_file_name(path):
    """The file plot_results(results, path) writes: path itself, or path +
    ".png" when it has no suffix (as matplotlib does). Needs no matplotlib,
    so a wrong place to write is found whether or not it is installed."""
    if not isinstance(path, (str, os.PathLike)):
        raise errors.IovaTypeError("the plot's path must be a str, not %s (%r)"
                                   % (type(path).__name__, path))
    path = os.fspath(path)
    return path if os.path.splitext(path)[1] else path + ".png"


def plot_path(path):
    """plot_file_name(path), checked against the formats matplotlib writes:
    IovaValueError when it cannot write a file of that suffix. Needs
    matplotlib."""
    from matplotlib.figure import Figure
    path = plot_file_name(path)
    suffix = os.path.splitext(path)[1][1:].lower()
    formats = Figure().canvas.get_supported_filetypes()
    if suffix not in formats:
        raise errors.IovaValueError("cannot draw the plot as %s: matplotlib writes no .%s files "
                                    "(it writes %s)" % (path, suffix,
                                                        ", ".join("." + f for f in formats)))
    return path


def _occupancy(np, samples, first, top, bins):
    """bins x len(samples) array: the fraction of each address bin held."""
    edges = np.linspace(first, top + 1, bins + 1)
    width = edges[1] - edges[0]
    grid = np.zeros((bins, len(samples)))
    for col, s in enumerate(samples):
        if not s.runs:
            continue
        runs = np.array(s.runs, dtype=np.float64)
        lo, hi, held = runs[:, 0], runs[:, 1] + 1, runs[:, 2]
        before = np.concatenate(([0.0], np.cumsum(held)))
        # held pfns below each edge: the runs wholly below it, plus the part
        # of the run it cuts (a run's pfns taken as spread evenly over it)
        k = np.searchsorted(lo, edges, side="right") - 1
        kk = np.clip(k, 0, len(lo) - 1)
        part = np.clip((edges - lo[kk]) / (hi[kk] - lo[kk]), 0.0, 1.0) * held[kk]
        below = np.where(k >= 0, before[kk] + part, 0.0)
        grid[:, col] = np.diff(below) / width
    return np.clip(grid, 0.0, 1.0)


def _window(result):
    """(first, last) pfn of the part of the space the run used: the smallest
    power-of-two sized, aligned window holding everything it ever held, so a
    policy that lives in a thin band (the kernel's top-down allocator) is
    drawn large enough to see, and one that sweeps the space shows all of it."""
    lo = min((s.runs[0][0] for s in result.timeline if s.runs), default=0)
    hi = max((s.runs[-1][1] for s in result.timeline if s.runs), default=0)
    span = max(256, 1 << (hi - lo).bit_length())
    while (lo // span) * span + span <= hi:
        span <<= 1
    first = (lo // span) * span
    return first, first + span - 1


def plot_results(results, path, title=None):
    """Draws each applicable result that has a timeline into one PNG (or any
    format matplotlib knows from the file name; a name without a suffix
    gets ".png"). Returns the path of the file written."""
    try:
        import numpy as np
        from matplotlib.figure import Figure
    except ImportError:
        raise errors.MissingDependency(MISSING_MATPLOTLIB) from None
    path = plot_path(path)
    runs = [r for r in results if r.applicable and r.timeline]
    if not runs:
        raise errors.IovaValueError("no result has a timeline to draw (simulate with "
                                    "timeline=True)")
    from matplotlib.ticker import FuncFormatter, MultipleLocator
    as_address = FuncFormatter(lambda pfn, _: "%#x" % (int(pfn) << 12))
    fig = Figure(figsize=(11, 1.0 + 2.1 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, r in zip(axes, runs):
        first, top = _window(r)
        ops = np.array([s.op for s in r.timeline], dtype=np.float64)
        grid = _occupancy(np, r.timeline, first, top, _BINS)
        x_end = ops[-1] if ops[-1] > 0 else 1.0
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="Blues", vmin=0.0, vmax=1.0,
                          extent=(0.0, x_end, first, top + 1), interpolation="nearest")
        # the window is a power of two: eighths of it are round hex addresses
        ax.yaxis.set_major_locator(MultipleLocator((top + 1 - first) / 8))
        ax.yaxis.set_major_formatter(as_address)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("IOVA", fontsize=8)
        bits = ["%s  %s" % (r.policy, r.verdict)]
        if r.failures:
            bits.append("%d failed maps, first at op %s" % (r.failures,
                                                            format(r.first_failure_op, ",")))
        if r.stale_translations:
            bits.append("%s stale translations" % format(r.stale_translations, ","))
        if r.faults:
            bits.append("%s accesses refused by stale rights" % format(r.faults, ","))
        bits.append("peak %s pfns live" % format(r.peak_live_pfns, ","))
        bits.append("%s full flushes" % format(r.full_flushes, ","))
        ax.set_title(" - ".join(bits), loc="left", fontsize=10)
        flush = ax.twinx()
        flush.plot(ops, [s.full_flushes for s in r.timeline], color="tab:orange", lw=1.2)
        flush.set_ylabel("full flushes", color="tab:orange", fontsize=8)
        flush.tick_params(axis="y", colors="tab:orange", labelsize=7)
        flush.set_ylim(bottom=0)
        if r.stopped_early:
            ax.axvline(ops[-1], color="tab:red", lw=1, ls="--")
            ax.annotate(" gave up after %s failed maps" % format(r.failures, ","),
                        (ops[-1], (first + top + 1) / 2), color="tab:red", fontsize=8)
        if r.failure_ops:
            ax.plot(r.failure_ops, [top + 1] * len(r.failure_ops), linestyle="none",
                    marker="|", markersize=9, color="tab:red", clip_on=False)
    axes[-1].set_xlabel("operations")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the range held")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=100)
    return path
