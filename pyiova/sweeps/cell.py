"""One cell of a sweep, run wherever it is sent: a row of the sweep's table.

run_cell is what every executor calls (in this process, in a worker
process, on a Dask worker). It never raises for the cell's own sake: a
policy that cannot run gives an n/a row, as compare() does, and any error
gives a row with the error's text in `error`, so one bad cell never costs
the sweep.

The row: the cell's own columns (cell, workload, policy, driver, kernel,
the parameters given, seed, ops_requested, drop_rate, max_failures), then
every field of SimResult (params as JSON text: all the workload's
parameters, defaults too), verdict, the engine that ran the cell, the
pyiova version and error (None when the cell ran).
"""
from __future__ import annotations

import dataclasses
import json
import traceback
import typing
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..drivers.registry import DRIVER_SPECS
from ..sim import PolicyNotApplicable, SimResult, not_applicable, simulate
from ..workloads import WORKLOADS, get_workload
from .grid import canonical

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .grid import Cell

__all__ = ["run_cell", "error_row", "base_row", "columns", "reserved_columns", "plugins_for",
           "column_kinds", "numeric_columns", "CELL_COLUMNS",
           "TIMING_COLUMNS"]

CELL_COLUMNS = ("cell", "workload", "policy", "driver", "kernel")
RUN_COLUMNS = ("seed", "ops_requested", "drop_rate", "max_failures")
TAIL_COLUMNS = ("verdict", "engine", "pyiova_version", "error")
# Text columns of a result (note, engine, engine_note): never None, "" when
# there is nothing to say, so that an empty CSV field reads back as it was
TEXT_COLUMNS = tuple(f.name for f in dataclasses.fields(SimResult)
                     if f.type in (str, "str") and f.default == "")
# Columns that measure time, not the model: they differ between two runs of
# the same cell, every other column is equal.
TIMING_COLUMNS = ("elapsed_s", "ops_per_sec")

_SKIPPED_FIELDS = ("timeline", "failure_ops")


def _result_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(SimResult) if f.name not in _SKIPPED_FIELDS]


def column_kinds() -> dict[str, Any]:
    """{column: bool, int, float or str} for the columns every sweep has."""
    kinds = {}
    for name, hint in typing.get_type_hints(SimResult).items():
        if name in _SKIPPED_FIELDS:
            continue
        kind = hint
        if typing.get_origin(hint) is typing.Union:         # Optional[int]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kind = args[0] if len(args) == 1 else hint
        kinds[name] = kind if kind in (bool, int, float) else str
    kinds.update(cell=str, workload=str, policy=str, driver=str, kernel=str, seed=int,
                 ops_requested=int, drop_rate=float, max_failures=int, params=str, verdict=str,
                 engine=str, pyiova_version=str, error=str)
    return kinds


def numeric_columns() -> list[str]:
    """The columns every sweep has that hold measured numbers (what a
    summary summarises, the cell's own columns aside)."""
    return [c for c, k in column_kinds().items()
            if k in (int, float) and c not in RUN_COLUMNS]


def columns(param_names: Iterable[str]) -> list[str]:
    """The table's columns, in order, for a sweep giving these parameters."""
    out = list(CELL_COLUMNS) + list(param_names) + list(RUN_COLUMNS)
    out += [f for f in _result_fields() if f not in out and f not in TAIL_COLUMNS]
    out += [c for c in TAIL_COLUMNS if c not in out]
    return out


def reserved_columns() -> set[str]:
    """Column names a workload parameter cannot take."""
    return set(columns(()))


def plugins_for(cells: Iterable[Cell]) -> tuple[tuple[str, str, Any], ...]:
    """(kind, name, object) for each workload and driver the cells use that
    is not built in: sent with each cell so a worker process knows them."""
    out = []
    for kind, registry, used in (("workload", WORKLOADS, {c.workload for c in cells}),
                                 ("driver", DRIVER_SPECS, {c.driver for c in cells})):
        for name in sorted(used):
            if registry.origin(name) != "built-in":
                out.append((kind, name, registry[name] if kind == "workload"
                            else registry.source(name)))
    return tuple(out)


def _adopt(plugins: Iterable[tuple[str, str, Any]]) -> None:
    for kind, name, obj in plugins:
        (WORKLOADS if kind == "workload" else DRIVER_SPECS).adopt(name, obj)


def base_row(cell: Cell) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(CELL_COLUMNS, (cell.key, cell.workload, cell.policy, cell.driver,
                                  cell.kernel)))
    for name, value in cell.params:
        row[name] = canonical(value) if isinstance(value, (tuple, list)) else value
    row.update(seed=cell.seed, ops_requested=cell.ops, drop_rate=cell.drop_rate,
               max_failures=cell.max_failures)
    return row


def _result(cell: Cell, engine: str) -> SimResult:
    params = dict(cell.params)
    why = not_applicable(cell.policy, cell.driver, cell.kernel)
    if why:
        wl = get_workload(cell.workload, **params)
        return SimResult(wl.name, cell.policy, cell.driver, cell.seed, kernel=cell.kernel,
                         applicable=False, note=why, ops_requested=cell.ops, params=wl.params)
    try:
        return simulate(cell.workload, cell.policy, cell.driver, cell.ops, cell.seed,
                        params=params, kernel=cell.kernel, max_failures=cell.max_failures,
                        drop_rate=cell.drop_rate, engine=engine)
    except PolicyNotApplicable as exc:      # a registered driver may refuse at set-up
        wl = get_workload(cell.workload, **params)
        return SimResult(wl.name, cell.policy, cell.driver, cell.seed, kernel=cell.kernel,
                         applicable=False, note=str(exc), ops_requested=cell.ops,
                         params=wl.params)


def run_cell(cell: Cell, plugins: Iterable[tuple[str, str, Any]] = (),
             engine: str = "auto") -> dict[str, Any]:
    """The row of one cell (see the module's docstring)."""
    try:
        _adopt(plugins)
        result = _result(cell, engine)
    except Exception as exc:        # the cell's error is its row, not the sweep's end
        return error_row(cell, _error_text(exc))
    row = base_row(cell)
    d = result.as_dict()
    for name, value in d.items():
        if name == "params":
            value = json.dumps(value, sort_keys=True)
        row.setdefault(name, value)
    row.update(pyiova_version=__version__, error=None)
    return row


def error_row(cell: Cell, error: str) -> dict[str, Any]:
    """The row of a cell that did not run: its own columns, the error's text,
    nothing measured."""
    row = base_row(cell)
    for name in _result_fields():
        row.setdefault(name, None)
    row.update({c: "" for c in TEXT_COLUMNS})
    row.update(verdict="error", pyiova_version=__version__, error=error)
    return row


def _error_text(exc: BaseException) -> str:
    """The error and where it was raised (the innermost frame), on one line."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = " (%s:%s in %s)" % (tb[-1].filename, tb[-1].lineno, tb[-1].name) if tb else ""
    return "%s: %s%s" % (type(exc).__name__, exc, where)
