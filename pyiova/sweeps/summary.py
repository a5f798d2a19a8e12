"""A sweep summarised over its seeds: for each group of cells that differ
only by seed, and each numeric column, the count, mean, min, max and a 95%
confidence interval of the mean (Student's t: mean +- t * sd / sqrt(n)).

Values that are None are left out (a policy that never failed has no
first_failure_op; an n/a or failed cell measures nothing), so n may be
less than the seeds run; an interval needs n >= 2.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .. import errors
from ..tables import cell_text, html_table, is_number, text_table, to_pandas

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from .table import Row

__all__ = ["summarize", "SweepSummary", "t_975", "HEADLINE_METRICS"]

# The columns printed by default: the ones a policy is judged by.
HEADLINE_METRICS = ("failures", "first_failure_op", "peak_live_pfns", "fragmentation",
                    "full_flushes", "stale_translations", "faults", "ops_per_sec")

# Student's t, 0.975 quantile, by degrees of freedom (1..30, then 40, 60, 120, infinity)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_T975_TAIL = ((30, 2.0423), (40, 2.0211), (60, 2.0003), (120, 1.9799), (math.inf, 1.9600))


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (a table,
    interpolated in 1/df above 30: within 1e-4)."""
    if df < 1:
        raise errors.IovaValueError("df must be >= 1")
    if df <= 30:
        return _T975[int(df) - 1]
    for (d0, t0), (d1, t1) in zip(_T975_TAIL, _T975_TAIL[1:]):
        if df <= d1:
            x0, x1, x = 1 / d0, 1 / d1, 1 / df
            return t0 + (t1 - t0) * (x - x0) / (x1 - x0)
    return 1.96


def _stats(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    if not n:
        return dict(n=0, mean=None, min=None, max=None, ci95_low=None, ci95_high=None)
    mean = math.fsum(values) / n
    low = high = None
    if n >= 2:
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
        half = t_975(n - 1) * math.sqrt(var / n)
        low, high = mean - half, mean + half
    return dict(n=n, mean=mean, min=min(values), max=max(values), ci95_low=low, ci95_high=high)


def numeric_columns(rows: Iterable[Row], exclude: Collection[str]) -> list[str]:
    """Columns (in first-seen order) whose values are numbers or None, with
    at least one number."""
    seen: dict[Any, Any] = {}
    for row in rows:
        for k, v in row.items():
            if k in exclude or v is None:
                continue
            seen[k] = seen.get(k, True) and is_number(v)
    return [k for k, ok in seen.items() if ok]


class SweepSummary:
    """The summary of a sweep. rows: one dict per group and metric (the
    group's columns, metric, n, mean, min, max, ci95_low, ci95_high);
    groups: one dict per group (its columns, cells, errors, verdicts)."""

    def __init__(self, group_columns: Iterable[str], metrics: Iterable[str], rows: list[Row],
                 groups: list[Row]) -> None:
        self.group_columns = list(group_columns)
        self.metrics = list(metrics)
        self.rows = rows
        self.groups = groups

    STAT_COLUMNS = ("metric", "n", "mean", "min", "max", "ci95_low", "ci95_high")

    def _shown_columns(self) -> list[str]:
        """The group columns worth printing: policy, and those that vary."""
        return [c for c in self.group_columns
                if c == "policy" or len({repr(g.get(c)) for g in self.groups}) > 1]

    def format(self, metrics: Sequence[str] | str | None = None) -> str:
        """Text: the groups (cells, errors, verdicts over seeds), then a table
        per metric (the headline metrics by default; "all" for every one)."""
        if metrics is None:
            metrics = [m for m in HEADLINE_METRICS if m in self.metrics]
        elif metrics == "all":
            metrics = self.metrics
        cols = self._shown_columns()
        out = [text_table(cols + ["cells", "errors", "verdicts"],
                          [[g.get(c) for c in cols] + [g["cells"], g["errors"], g["verdicts"]]
                           for g in self.groups])]
        for m in metrics:
            rows = [r for r in self.rows if r["metric"] == m]
            out.append("\n%s: mean over seeds, min, max, 95%% confidence interval of the mean"
                       % m)
            out.append(text_table(
                cols + ["n", "mean", "min", "max", "95% interval"],
                [[r.get(c) for c in cols] + [r["n"], r["mean"], r["min"], r["max"],
                                             _interval(r)] for r in rows]))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()

    def to_dicts(self) -> list[Row]:
        return [dict(r) for r in self.rows]

    def to_pandas(self) -> Any:
        return to_pandas(self.rows, self.group_columns + list(self.STAT_COLUMNS))

    def _repr_html_(self) -> str:
        cols = self._shown_columns() + list(self.STAT_COLUMNS)
        return html_table(cols, [[r.get(c) for c in cols] for r in self.rows],
                          caption="over seeds: mean, min, max, 95% confidence interval")


def _interval(r: Row) -> str | None:
    if r["ci95_low"] is None:
        return None
    return "%s .. %s" % (cell_text(r["ci95_low"]), cell_text(r["ci95_high"]))


def summarize(rows: Iterable[Row], group_columns: Sequence[str],
              exclude: Collection[str] = ()) -> SweepSummary:
    """A SweepSummary of rows grouped by group_columns, every numeric column
    not in group_columns or exclude summarised. Rows with an error count in
    their group's errors and add no values."""
    skip = set(group_columns) | set(exclude)
    metrics = numeric_columns(rows, skip)
    order: list[Any] = []
    members: dict[Any, list[Any]] = {}
    for row in rows:
        key = tuple(repr(row.get(c)) for c in group_columns)
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(row)
    out, groups = [], []
    for key in order:
        rs = members[key]
        head = {c: rs[0].get(c) for c in group_columns}
        counts: dict[Any, int] = {}
        for r in rs:
            counts[r.get("verdict")] = counts.get(r.get("verdict"), 0) + 1
        groups.append(dict(head, cells=len(rs), errors=sum(1 for r in rs if r.get("error")),
                           verdicts=", ".join("%d %s" % (n, v) for v, n in counts.items())))
        ok = [r for r in rs if not r.get("error")]
        for m in metrics:
            values = [r[m] for r in ok if is_number(r.get(m))]
            out.append(dict(head, metric=m, **_stats(values)))
    return SweepSummary(group_columns, metrics, out, groups)
