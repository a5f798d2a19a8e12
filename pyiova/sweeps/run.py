"""sweep(): a grid of simulations on every core or a Dask cluster."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import errors
from ..policies import DEFAULT_POLICIES
from ..sim import DEFAULT_MAX_FAILURES, ENGINES
from . import executors
from .cell import base_row, columns, plugins_for, reserved_columns
from .grid import expand
from .store import RowWriter, read_rows
from .table import SweepResult

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence
    from typing import Any, Callable

__all__ = ["sweep", "EXECUTORS", "DEFAULT_SEEDS", "DEFAULT_SWEEP_OPS"]

EXECUTORS = ("processes", "serial", "dask")
DEFAULT_SEEDS = range(1, 6)
DEFAULT_SWEEP_OPS = 200_000         # per cell: a sweep is many runs


def sweep(workloads: str | Sequence[str], policies: str | Sequence[str] = DEFAULT_POLICIES,
          drivers: str | Sequence[str] = "ipmmu", kernels: str | Sequence[str] = "6.12",
          params: dict[str, Any] | None = None, seeds: Any = DEFAULT_SEEDS,
          ops: int | Sequence[int] = DEFAULT_SWEEP_OPS,
          drop_rates: float | Sequence[float] = 1.0,
          max_failures: int = DEFAULT_MAX_FAILURES, *, engine: str = "auto",
          executor: str | None = None, workers: int | None = None, scheduler: Any = None,
          out: str | os.PathLike[str] | None = None, retry_failed: bool = False,
          progress: Callable[[int, int, dict[str, Any] | None], None] | None = None,
          mp_context: Any = None) -> SweepResult:
    """Runs simulate() for every cell of workloads x policies x drivers x
    kernels x parameter values x drop rates x ops x seeds; a SweepResult,
    one row per cell.

    workloads, policies, drivers, kernels
                  a name, "a,b,c" or a sequence of names
    params        {name: value or list of values}: each list is swept (a
                  parameter whose value is itself a list, such as usb's
                  sizes, takes a list of such lists); a parameter applies to
                  the workloads that have it
    seeds, ops, drop_rates
                  one value or a list (range) of values
    engine        simulate()'s: "auto" (the C engine where it can run the cell),
                  "c" or "python"; each row's `engine` says which ran it
    executor      "processes" (the default: `workers` local processes, all
                  cores when None), "serial" (this process), or "dask"
                  (the default when scheduler is given)
    scheduler     for Dask: "local" (a LocalCluster of `workers` processes),
                  an address such as "tcp://host:8786", or a distributed.Client
    out           a file (.csv, .jsonl, .parquet) the rows are written to as
                  they come; cells already in it are not run again (cells that
                  failed are, with retry_failed=True)
    progress      called as progress(cells done, cells in all, row) after
                  each cell (rows read from `out` count as done at the start)
    mp_context    the multiprocessing context of the local processes
                  (default: the platform's)

    A cell's row depends on nothing but the cell (timing columns aside:
    elapsed_s, ops_per_sec), whichever executor runs it."""
    if executor is None:
        executor = "dask" if scheduler is not None else "processes"
    if engine not in ENGINES:
        raise errors.IovaValueError("engine %r is not one of %s" % (engine, ", ".join(ENGINES)))
    if executor not in EXECUTORS:
        raise errors.IovaValueError("executor %r is not one of %s"
                                    % (executor, ", ".join(EXECUTORS)))
    if scheduler is not None and executor != "dask":
        raise errors.IovaValueError("a scheduler is for executor='dask', not %r" % executor)
    if executor == "dask":
        executors.require_distributed()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise errors.IovaValueError("workers must be an integer >= 1, not %r" % (workers,))
    params = dict(params or {})
    clash = sorted(set(params) & reserved_columns())
    if clash:
        raise errors.IovaValueError("parameter %s has the name of a column of the sweep's "
                                    "table" % ", ".join(map(repr, clash)))
    cells = expand(workloads, policies, drivers, kernels, params, seeds, ops, drop_rates,
                   max_failures)
    plugins = plugins_for(cells)
    cols = columns(list(params))

    found = {}
    if out is not None:
        found = {r["cell"]: r for r in read_rows(out)}
        if retry_failed:
            found = {k: r for k, r in found.items() if not r.get("error")}
    # a row read back keeps the cell's own columns as this sweep writes them
    # (a CSV file gives back text where a parameter was a list)
    rows = {c.key: dict(found[c.key], **base_row(c)) for c in cells if c.key in found}
    reused = len(rows)
    todo = [c for c in cells if c.key not in rows]
    total = len(cells)
    writer = RowWriter(out, cols) if out is not None else None

    def on_row(row: dict[str, Any]) -> None:
        rows[row["cell"]] = row
        if writer is not None:
            writer.write(row)
        if progress is not None:
            progress(len(rows), total, row)

    if progress is not None:
        progress(len(rows), total, None)
    t0 = time.perf_counter()
    finished = False
    try:
        if executor == "serial" or (executor == "processes" and len(todo) <= 1):
            executors.run_serial(todo, plugins, engine, on_row)
        elif executor == "processes":
            executors.run_processes(todo, plugins, engine, on_row, workers, mp_context)
        elif todo:
            executors.run_dask(todo, plugins, engine, on_row, scheduler or "local", workers)
        finished = True
    finally:
        if writer is not None:
            writer.close(finished)
    return SweepResult([rows[c.key] for c in cells], cols, list(params),
                       took=time.perf_counter() - t0, executor=executor, reused=reused)
