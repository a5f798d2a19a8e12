"""Tables of results: plain text for the terminal, HTML for Jupyter, pandas
when it is installed.

    align(headers, rows, right)        cells that are already text, in columns
                                       sized to their contents (every text
                                       table pyiova prints is laid out here)
    text_table(headers, rows)          values in aligned columns, numbers to
                                       the right
    html_table(headers, rows)          what _repr_html_ returns (long tables
                                       show their first and last rows)
    to_pandas(dicts, columns)          a DataFrame (ImportError naming the
                                       extra when pandas is missing)
    ResultList                         a list of SimResult (compare()'s
                                       answer) that shows as a table
    result_html(r)                     one SimResult, measure by measure

Every cell is formatted by cell_text: integers with thousands separators,
floats to 4 significant digits, None as "-".
"""
from __future__ import annotations

import html
import numbers
from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from .sim import SimResult

__all__ = ["align", "text_table", "html_table", "cell_text", "is_number", "to_pandas",
           "ResultList", "result_html", "MISSING_PANDAS", "HTML_MAX_ROWS"]

MISSING_PANDAS = ("to_pandas() needs pandas, which is not installed; install it with:  "
                  "pip install pandas")
HTML_MAX_ROWS = 60


def cell_text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return format(int(value), ",")
    if isinstance(value, numbers.Real):
        v = float(value)
        if v != v:
            return "nan"
        if v == int(v) and abs(v) < 1e15:
            return format(int(v), ",")
        if abs(v) >= 1000:
            return format(v, ",.0f")
        return "%.4g" % v
    if isinstance(value, (list, tuple)):
        return ",".join(cell_text(v) for v in value)
    return str(value)


def is_number(value: object) -> bool:
    """A number a table right-aligns (bools are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def align(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[int] = (),
          rule: bool = False, indent: str = "") -> str:
    """Text cells in columns two spaces apart, each as wide as its widest
    cell; the columns whose indices are in `right` right-aligned. rule: a
    line of dashes under the headers. A row with fewer cells than there are
    headers ends in a cell that runs on across the columns it lacks (a note
    in place of measurements): it is not counted in the widths."""
    table = [list(headers)] + [list(row) for row in rows]
    widths = [max([len(row[i]) for row in table if i < len(row) - (len(row) < len(headers))]
                  or [0]) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(table):
        ends = len(row) < len(headers)
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(row[:len(row) - 1] if ends else row)]
        if ends:
            cells.append(row[-1])
        lines.append(indent + "  ".join(cells).rstrip())
        if rule and n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """rows (sequences of values) under headers, aligned; a column whose
    values are all numbers (or None) is right-aligned."""
    cells = [[cell_text(v) for v in row] for row in rows]
    right = [i for i in range(len(headers))
             if rows and all(is_number(row[i]) or row[i] is None for row in rows)]
    return align(headers, cells, right, indent=indent)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None,
               max_rows: int = HTML_MAX_ROWS) -> str:
    """An HTML table; more than max_rows rows show as the first and last
    max_rows // 2 with a row saying how many are left out."""
    esc = html.escape
    out = ["<table>"]
    if caption:
        out.append("<caption>%s</caption>" % esc(caption))
    out.append("<thead><tr>%s</tr></thead><tbody>"
               % "".join("<th>%s</th>" % esc(str(h)) for h in headers))
    rows = list(rows)
    shown = rows
    cut = None
    if len(rows) > max_rows:
        half = max_rows // 2
        shown = rows[:half] + rows[-half:]
        cut = half
    for k, row in enumerate(shown):
        if k == cut:
            out.append('<tr><td colspan="%d">... %d more rows ...</td></tr>'
                       % (len(headers), len(rows) - 2 * cut))
        out.append("<tr>%s</tr>" % "".join(
            '<td style="text-align:%s">%s</td>' % ("right" if is_number(v) else "left",
                                                   esc(cell_text(v)))
            for v in row))
    out.append("</tbody></table>")
    return "".join(out)


def to_pandas(dicts: list[dict[str, Any]], columns: list[str] | None = None) -> Any:
    """A pandas DataFrame of the dicts, in the given column order."""
    try:
        import pandas
    except ImportError:
        raise errors.MissingDependency(MISSING_PANDAS) from None
    return pandas.DataFrame.from_records(list(dicts), columns=columns)


# The columns a list of results shows (as_dict keys), in this order.
RESULT_COLUMNS = ("workload", "policy", "driver", "kernel", "seed", "verdict", "ops",
                  "ops_per_sec", "maps", "failures", "first_failure_op", "peak_live_pfns",
                  "fragmentation", "iotlb_syncs", "full_flushes", "iotlb_hits", "iotlb_misses",
                  "stale_translations", "faults", "note")


def result_html(result: SimResult) -> str:
    """One result as a two-column table, measure and value."""
    d = result.as_dict()
    return html_table(("measure", "value"), list(d.items()),
                      caption="%s %s on %s: %s" % (result.workload, result.policy, result.driver,
                                                   result.verdict),
                      max_rows=len(d) + 1)


def results_html(results: Iterable[SimResult]) -> str:
    dicts = [r.as_dict() for r in results]
    cols = [c for c in RESULT_COLUMNS if any(c in d for d in dicts)]
    return html_table(cols, [[d.get(c) for c in cols] for d in dicts])


class ResultList(list["SimResult"]):
    """A list of SimResult (what compare() returns) that shows as a table
    in Jupyter and converts to pandas."""

    def as_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self]

    def to_pandas(self) -> Any:
        dicts = self.as_dicts()
        return to_pandas(dicts, list(dicts[0]) if dicts else None)

    def _repr_html_(self) -> str:
        return results_html(self)
