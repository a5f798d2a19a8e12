"""Drawing a sweep (needs matplotlib: pyiova[plot]).

One row of panels per metric, each metric against the swept parameter (x):
one line per policy through the mean over seeds, the spread over seeds
(min to max) shaded around it. When something else is swept too (a second
parameter, drivers, kernels, workloads), each of its values gets a column
of panels; the panels of one metric share one y-scale, so they compare at
a glance. Failed and n/a cells are left out.

As pyiova.plot: matplotlib's object-oriented API only (no pyplot, no global
backend), imported when a plot is drawn.
"""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from .. import errors
from ..plot import MISSING_MATPLOTLIB
from .summary import HEADLINE_METRICS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .table import SweepResult

__all__ = ["plot_sweep", "x_column", "NOTHING_SWEPT"]

NOTHING_SWEPT = ("nothing is swept but the seeds and the policies: a sweep's plot draws each "
                 "metric against a swept parameter (-p NAME=V1,V2,..., or several --drop-rate "
                 "or --ops values)")


def x_column(result: SweepResult, x: str | None = None) -> str:
    """The column to draw along x: x when given (it must be swept), else the
    first swept parameter, then drop_rate, then ops_requested."""
    swept = result.swept()
    if x is not None:
        if x not in swept:
            raise errors.IovaValueError("%r is not swept here (swept: %s)"
                                        % (x, ", ".join(swept) or "nothing"))
        return x
    for c in list(result.param_names) + ["drop_rate", "ops_requested"]:
        if c in swept:
            return c
    raise errors.IovaValueError(NOTHING_SWEPT)


def _number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _x_axis(values: Iterable[Any]) -> tuple[dict[Any, Any], list[Any] | None, str]:
    """(position of each value, tick labels or None, scale)."""
    if all(_number(v) for v in values):
        lo, hi = min(values), max(values)
        scale = "linear"
        if lo > 0 and hi / lo >= 10:
            pow2 = all(float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in values)
            scale = "log2" if pow2 else "log"
        return {v: v for v in values}, None, scale
    order = list(dict.fromkeys(values))
    return {v: i for i, v in enumerate(order)}, order, "linear"


def plot_sweep(result: SweepResult, path: str, x: str | None = None,
               metrics: Sequence[str] | None = None, title: str | None = None) -> str:
    """Draws the result into path (PNG, or any format matplotlib knows from
    the name); returns path."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise errors.MissingDependency(MISSING_MATPLOTLIB) from None
    from ..tables import cell_text
    xcol = x_column(result, x)
    rows = [r for r in result.rows if not r.get("error") and r.get("applicable")]
    summary = result.summary()
    if metrics is None:
        metrics = [m for m in HEADLINE_METRICS if m in summary.metrics]
    else:
        bad = [m for m in metrics if m not in summary.metrics]
        if bad:
            raise errors.IovaValueError("no numeric column %s (there are: %s)"
                                        % (", ".join(bad), ", ".join(summary.metrics)))
    if not rows or not metrics:
        raise errors.IovaValueError("no cell ran: there is nothing to draw")
    facets_by = [c for c in result.swept() if c not in (xcol, "policy")]
    facet_of = {id(r): tuple(r.get(c) for c in facets_by) for r in rows}
    facets = list(dict.fromkeys(facet_of[id(r)] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    pos, labels, scale = _x_axis(list(dict.fromkeys(r[xcol] for r in rows)))
    colors = {p: "C%d" % (i % 10) for i, p in enumerate(policies)}
    from matplotlib.ticker import FuncFormatter

    from ..workloads import format_size
    as_size = FuncFormatter(lambda v, _: format_size(int(v)) if v >= 1 else "")

    fig = Figure(figsize=(3.6 * len(facets) + 1.5, 2.4 * len(metrics) + 0.8),
                 layout="constrained")
    axes = fig.subplots(len(metrics), len(facets), sharex=True, sharey="row", squeeze=False)
    for i, metric in enumerate(metrics):
        for j, facet in enumerate(facets):
            ax = axes[i][j]
            for pol in policies:
                points: dict[Any, Any] = {}
                for r in rows:
                    if r["policy"] == pol and facet_of[id(r)] == facet and _number(r.get(metric)):
                        points.setdefault(pos[r[xcol]], []).append(r[metric])
                if not points:
                    continue
                xs = sorted(points)
                mean = [sum(points[v]) / len(points[v]) for v in xs]
                ax.plot(xs, mean, marker="o", ms=3, lw=1.4, color=colors[pol], label=pol)
                ax.fill_between(xs, [min(points[v]) for v in xs], [max(points[v]) for v in xs],
                                color=colors[pol], alpha=0.18, lw=0)
            if scale == "log2":
                ax.set_xscale("log", base=2)
                if min(pos) >= 1024:            # sizes: 64K, 1M rather than 2^16, 2^20
                    ax.xaxis.set_major_formatter(as_size)
            elif scale == "log":
                ax.set_xscale("log")
            if labels is not None:
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels([cell_text(v) for v in labels], fontsize=7)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(metric, fontsize=8)
            if i == 0 and facets_by:
                ax.set_title(", ".join("%s=%s" % (c, cell_text(v))
                                       for c, v in zip(facets_by, facet)), fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel(xcol, fontsize=8)
    axes[0][-1].legend(fontsize=7, title="policy: mean over seeds,\nshaded: min to max",
                       title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)
    return path
