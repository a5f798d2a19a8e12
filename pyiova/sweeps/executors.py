"""Where a sweep's cells run. Each executor calls run_cell(cell, plugins,
engine) for every cell and hands each row to on_row as it arrives (in
completion order, not the cells' order).

    run_serial      one after another, in this process
    run_processes   on `workers` local processes (concurrent.futures); a
                    worker process that dies (killed, out of memory, a crash)
                    is replaced, the cells it was running are tried again
                    one at a time, and a cell that takes a worker down on
                    its own becomes a row with that error
    run_dask        as tasks of a Dask cluster (distributed's Client): an
                    address ("tcp://host:8786"), "local" for a LocalCluster
                    on this machine, or a Client you made
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from .. import errors
from .cell import error_row, run_cell

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from .grid import Cell

    # (kind, name, object) of each workload and driver a worker must register
    Plugins = Iterable[tuple[str, str, Any]]
    # called with each row as it comes
    OnRow = Callable[[dict[str, Any]], None]

__all__ = ["run_serial", "run_processes", "run_dask", "default_workers", "require_distributed",
           "MISSING_DISTRIBUTED"]

MISSING_DISTRIBUTED = ("running on a Dask cluster needs distributed, which is not installed; "
                       "install it with:  pip install 'pyiova[dask]'  (or: pip install "
                       "distributed)")

IN_FLIGHT_PER_WORKER = 2

# Times a cell may be running when its worker process dies before it is
# given up (the second time it is no accident).
WORKER_DEATHS_ALLOWED = 1


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_serial(cells: Iterable[Cell], plugins: Plugins, engine: str, on_row: OnRow) -> None:
    for cell in cells:
        on_row(run_cell(cell, plugins, engine))


def run_processes(cells: Sequence[Cell], plugins: Plugins, engine: str, on_row: OnRow,
                  workers: int | None = None, mp_context: Any = None) -> None:
    """At most IN_FLIGHT_PER_WORKER cells per worker in flight (one running,
    the next ready, so a worker never waits for this process), so the cells
    a dying worker may have taken with it are known. Those are suspects:
    each is tried again alone, and one that takes its worker down then is
    the cause."""
    workers = workers or default_workers()
    todo = list(reversed(cells))
    deaths: dict[Any, Any] = {}
    running: dict[Any, Any] = {}
    pool = ProcessPoolExecutor(workers, mp_context=mp_context)
    try:
        while todo or running:
            _submit(pool, todo, running, deaths, workers, plugins, engine)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = any(isinstance(f.exception(), BrokenProcessPool) for f in done)
            if broken:
                done, _ = wait(running)     # the pool is gone: every future ends now
            for fut in done:
                cell = running.pop(fut)
                try:
                    row = fut.result()
                except BrokenProcessPool:
                    _died(cell, deaths, todo, on_row)
                    continue
                except Exception as exc:    # the cell could not reach run_cell (pickling)
                    row = error_row(cell, "%s: %s" % (type(exc).__name__, exc))
                on_row(row)
            if broken:
                pool.shutdown(wait=True)
                pool = ProcessPoolExecutor(workers, mp_context=mp_context)
    finally:
        for fut in running:
            fut.cancel()
        pool.shutdown(wait=not running, cancel_futures=True)


def _submit(pool: Any, todo: Any, running: dict[Any, Any], deaths: dict[Any, Any],
            workers: int, plugins: Plugins, engine: str) -> None:
    """Fills the free workers from todo; a suspect cell runs alone."""
    while todo and len(running) < workers * IN_FLIGHT_PER_WORKER:
        if any(c.key in deaths for c in running.values()):
            return
        if todo[-1].key in deaths and running:
            return
        cell = todo.pop()
        running[pool.submit(run_cell, cell, plugins, engine)] = cell


def _died(cell: Cell, deaths: dict[Any, Any], todo: Any, on_row: OnRow) -> None:
    deaths[cell.key] = deaths.get(cell.key, 0) + 1
    if deaths[cell.key] > WORKER_DEATHS_ALLOWED:
        on_row(error_row(cell, "WorkerDied: the worker process running this cell died, "
                              "also when it ran alone (killed, out of memory, or a crash)"))
    else:
        todo.append(cell)


def require_distributed() -> Any:
    """distributed, or the IovaValueError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise errors.IovaValueError(MISSING_DISTRIBUTED) from None
    return distributed


def dask_client(scheduler: Any, workers: int | None = None) -> tuple[Any, Any]:
    """(a distributed.Client, the LocalCluster to close or None)."""
    distributed = require_distributed()
    if isinstance(scheduler, distributed.Client):
        return scheduler, None
    if scheduler == "local":
        cluster = distributed.LocalCluster(n_workers=workers or default_workers(),
                                           threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        return distributed.Client(cluster), cluster
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise errors.IovaValueError("a scheduler is 'local', an address such as "
                                    "tcp://host:8786, or a distributed.Client; not %r"
                                    % (scheduler,))
    try:
        return distributed.Client(scheduler, timeout="30s"), None
    except OSError as exc:
        raise errors.IovaValueError("cannot reach the Dask scheduler at %s: %s"
                                    % (scheduler, exc)) from None


def run_dask(cells: Iterable[Cell], plugins: Plugins, engine: str, on_row: OnRow,
             scheduler: Any = "local", workers: int | None = None) -> None:
    client, cluster = dask_client(scheduler, workers)
    from distributed import as_completed
    futures = {}
    try:
        for cell in cells:
            # pure=False: a cell is a run, not a value to share between equal calls
            futures[client.submit(run_cell, cell, plugins, engine, pure=False,
                                  key="pyiova-cell-%s" % _task_key(cell))] = cell
        for fut in as_completed(futures):
            cell = futures.pop(fut)
            try:
                row = fut.result()
            except Exception as exc:       # a worker lost (KilledWorker) and the like
                row = error_row(cell, "%s: %s" % (type(exc).__name__, exc))
            on_row(row)
    finally:
        if futures:
            client.cancel(list(futures))
        if cluster is not None:
            client.close()
            cluster.close()


def _task_key(cell: Cell) -> str:
    import hashlib
    import uuid
    return "%s-%s" % (hashlib.sha1(cell.key.encode()).hexdigest()[:16], uuid.uuid4().hex[:8])
