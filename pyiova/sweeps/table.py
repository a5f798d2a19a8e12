"""SweepResult: a sweep's tidy table, one row per cell.

    result.rows                  the rows (dicts), in the grid's order
    result.columns               their columns, in order
    result.errors                the rows of cells that failed
    result.summary()             over seeds: a SweepSummary
    result.to_pandas()           a DataFrame (pandas optional)
    result.write("out.csv")      .csv, .jsonl or .parquet (pyarrow)
    SweepResult.read("out.csv")  a table written before
    result.plot("sweep.png")     each metric against the swept parameter

In Jupyter a SweepResult shows as a table (its first and last rows).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..tables import html_table, to_pandas
from .cell import CELL_COLUMNS, RUN_COLUMNS
from .store import RowWriter, read_rows
from .summary import summarize

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .summary import SweepSummary

    # One row of a sweep's table: its columns' values by name.
    Row = dict[str, Any]

__all__ = ["SweepResult"]

# Columns that say what a cell is rather than what it measured, besides its
# parameters: a summary groups by them (all but the seed).
_KEY_COLUMNS = CELL_COLUMNS + RUN_COLUMNS

# The columns _repr_html_ shows, after the cell's own.
_SHOWN = ("verdict", "ops", "failures", "first_failure_op", "peak_live_pfns", "fragmentation",
          "full_flushes", "stale_translations", "faults", "ops_per_sec", "engine", "error")


class SweepResult:
    def __init__(self, rows: Iterable[Row], columns: Iterable[str], param_names: Iterable[str] = (),
                 took: float | None = None, executor: str | None = None, reused: int = 0) -> None:
        self.rows = list(rows)
        self.columns = list(columns)
        self.param_names = list(param_names)
        self.took = took              # seconds the sweep ran (None when read from a file)
        self.executor = executor
        self.reused = reused          # rows found in the output file, not run again

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SweepResult:
        """The table in a file a sweep wrote (the last row of each cell)."""
        rows = list({r["cell"]: r for r in read_rows(path)}.values())
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        fixed = set(_KEY_COLUMNS) | _result_columns(columns)
        params = [c for c in columns if c not in fixed]
        return cls(rows, columns, params)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]

    @property
    def errors(self) -> list[Row]:
        return [r for r in self.rows if r.get("error")]

    @property
    def group_columns(self) -> list[str]:
        """What a summary groups by: every column naming the cell but the
        seed (and the cell's key)."""
        return (["workload", "policy", "driver", "kernel"] + self.param_names +
                ["ops_requested", "drop_rate", "max_failures"])

    def summary(self) -> SweepSummary:
        return summarize(self.rows, self.group_columns,
                         exclude=("cell", "seed", "params", "pyiova_version"))

    def to_dicts(self) -> list[Row]:
        return [dict(r) for r in self.rows]

    def to_pandas(self) -> Any:
        return to_pandas(self.rows, self.columns)

    def write(self, path: str) -> str:
        """Writes the whole table to path (format by its name); returns path."""
        if os.path.exists(path):
            os.remove(path)
        w = RowWriter(path, self.columns)
        try:
            for r in self.rows:
                w.write(r)
        finally:
            w.close()
        return path

    def plot(self, path: str, x: str | None = None, metrics: Sequence[str] | None = None,
             title: str | None = None) -> str:
        from .plot import plot_sweep
        return plot_sweep(self, path, x=x, metrics=metrics, title=title)

    def swept(self) -> list[str]:
        """The columns whose values differ between cells (the seed aside)."""
        return [c for c in self.group_columns
                if len({repr(r.get(c)) for r in self.rows}) > 1]

    def _repr_html_(self) -> str:
        varying = [c for c in self.group_columns if c == "policy" or c in self.swept()]
        cols = varying + ["seed"] + [c for c in _SHOWN if c in self.columns]
        n = len(self.rows)
        return html_table(cols, [[r.get(c) for c in cols] for r in self.rows],
                          caption="%d cell%s%s" % (n, "" if n == 1 else "s",
                                                   ", %d failed" % len(self.errors)
                                                   if self.errors else ""))

    def __repr__(self) -> str:
        return "<SweepResult %d cells, %d columns%s>" % (
            len(self.rows), len(self.columns),
            ", %d failed" % len(self.errors) if self.errors else "")


def _result_columns(columns: Iterable[str]) -> set[str]:
    from .cell import columns as all_columns
    return set(all_columns(())) & set(columns)
