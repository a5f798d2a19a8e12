"""Sweeps: what running cells on every core, or on a Dask cluster, gains.

Group "sweep-cores": the same grid - usb on ipmmu, 4 policies x 5 ring
sizes x seeds - run one cell after another in this process (serial) and on
every core (processes, pyiova.sweep's default), chunk by chunk of seeds in
turn. The figure is processes / serial, in the same run; the target is
<= 0.6 on 2 cores. The quick grid (4 seeds, 50k operations) runs by
default; --run-slow adds the full one (20 seeds, 200k operations: 400 cells
each way). The machine is shared: the note says how many cores were free
for us (a fixed loop on every core at once against the same loop alone),
since no sweep runs faster than the cores it is given.

Group "sweep-dask": cells of about 1.5 s each (the operation count is
calibrated on this machine), run on local processes and on a Dask
LocalCluster with as many worker processes, started beforehand (as a
cluster one connects to with --scheduler tcp://... would be), chunk by
chunk in turn. The figure is dask / processes; the target is <= 1.2.
Skipped without distributed.

Both groups check that the rows are the same, timing columns aside, and
note the figure with its verdict (a loaded machine is no test failure).

    pytest benchmarks/test_bench_sweep.py --benchmark-only [--run-slow]
"""
import resource
import time

import pytest

from pyiova.sim import simulate
from pyiova.sweeps import sweep
from pyiova.sweeps.cell import TIMING_COLUMNS
from pyiova.sweeps.executors import default_workers
from workloads import note

GRID = dict(policies="iova,iova-tree,wraparound,reset-when-empty", drivers="ipmmu",
            params={"ring_size": ["4K", "64K", "256K", "1M", "4M"]})
# seeds, split into the chunks that alternate between the two ways of running
SIZES = {"quick": dict(seeds=[[1], [2], [3], [4]], ops=50_000),
         "full": dict(seeds=[list(range(k, k + 4)) for k in range(1, 21, 4)], ops=200_000)}
CORES_TARGET = 0.6
DASK_TARGET = 1.2


def _model(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _verdict(ratio, target):
    return "met" if ratio <= target else "NOT met"


def _spin(n):
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t0


def cores_free(n=3_000_000):
    """How many cores this machine gave us just now (it is shared): a fixed
    loop on every core at once against the same loop alone."""
    from concurrent.futures import ProcessPoolExecutor
    workers = default_workers()
    with ProcessPoolExecutor(workers) as ex:
        alone = min(ex.submit(_spin, n).result() for _ in range(2))
        t0 = time.perf_counter()
        list(ex.map(_spin, [n] * workers))
        together = time.perf_counter() - t0
    return min(float(workers), workers * alone / together)


def _cpu_seconds():
    """CPU time of this process and of its finished children (a process
    pool's workers, once it is shut down)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _interleaved(ways, chunks, **kw):
    """{way: (seconds, CPU seconds, rows)}: the sweep of each chunk of seeds
    run each way in turn, the first way alternating, so that a machine whose
    speed drifts (it is shared) weighs on both alike."""
    took = {w: 0.0 for w in ways}
    cpu = {w: 0.0 for w in ways}
    rows = {w: [] for w in ways}
    for i, seeds in enumerate(chunks):
        order = list(ways)
        for way in (order if i % 2 == 0 else order[::-1]):
            t0, c0 = time.perf_counter(), _cpu_seconds()
            result = sweep("usb", seeds=seeds, **dict(kw, **ways[way]))
            took[way] += time.perf_counter() - t0
            cpu[way] += _cpu_seconds() - c0
            assert not result.errors
            rows[way] += _model(result.rows)
    return {w: (took[w], cpu[w], rows[w]) for w in ways}


@pytest.mark.parametrize("size", ["quick", pytest.param("full", marks=pytest.mark.slow)])
def test_sweep_on_every_core(benchmark, size):
    benchmark.group = "sweep-cores"
    chunks, ops = SIZES[size]["seeds"], SIZES[size]["ops"]
    ways = {"serial": dict(executor="serial"), "processes": dict(executor="processes")}
    free = cores_free()
    got = benchmark.pedantic(_interleaved, args=(ways, chunks), kwargs=dict(GRID, ops=ops),
                             rounds=1, iterations=1)
    free = (free + cores_free()) / 2
    (serial, serial_cpu, serial_rows) = got["serial"]
    (procs, procs_cpu, procs_rows) = got["processes"]
    cells = 4 * 5 * sum(map(len, chunks))
    assert len(procs_rows) == cells and procs_rows == serial_rows
    ratio = procs / serial
    benchmark.extra_info.update(cells=cells, ops=ops, workers=default_workers(),
                                serial_s=serial, processes_s=procs, processes_over_serial=ratio,
                                serial_cpu_s=serial_cpu, processes_cpu_s=procs_cpu,
                                cores_free=free)
    note(benchmark, "%d cells of %s ops on %d processes: %.1f s against %.1f s one after "
                    "another in this process, %.2fx (target <= %.1f: %s); CPU time %.1f s "
                    "against %.1f s (%.2fx: what the processes add); cores free for us "
                    "before and after: %.1f of %d"
         % (cells, format(ops, ","), default_workers(), procs, serial, ratio, CORES_TARGET,
            _verdict(ratio, CORES_TARGET), procs_cpu, serial_cpu, procs_cpu / serial_cpu, free,
            default_workers()))


def _ops_for(seconds):
    """Operations that make a usb cell under iova (the slowest policy) take
    about `seconds` here."""
    t0 = time.perf_counter()
    simulate("usb", "iova", "ipmmu", ops=100_000, seed=1)
    per_op = (time.perf_counter() - t0) / 100_000
    return int(seconds / per_op)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=default_workers(), threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    client.wait_for_workers(default_workers())
    started = time.perf_counter() - t0
    yield client, started
    client.close()
    cluster.close()


@pytest.mark.parametrize("size", ["quick", pytest.param("full", marks=pytest.mark.slow)])
def test_dask_against_local_processes(benchmark, dask_client, size):
    client, started = dask_client
    benchmark.group = "sweep-dask"
    # cells of a second and more, as the target says; a tenth of that when the
    # body only runs once as a test (--benchmark-disable)
    seconds = 0.15 if benchmark.disabled else 1.5
    ops = _ops_for(seconds)
    chunks = [[1, 2], [3, 4]] if size == "quick" else [[k, k + 1] for k in range(1, 9, 2)]
    ways = {"processes": dict(workers=default_workers()), "dask": dict(scheduler=client)}
    got = benchmark.pedantic(_interleaved, args=(ways, chunks),
                             kwargs=dict(policies="iova,wraparound", ops=ops),
                             rounds=1, iterations=1)
    (local, _, local_rows), (dask, _, dask_rows) = got["processes"], got["dask"]
    assert dask_rows == local_rows
    ratio = dask / local
    benchmark.extra_info.update(cells=len(local_rows), ops=ops, processes_s=local, dask_s=dask,
                                dask_over_processes=ratio, cluster_start_s=started)
    note(benchmark, "%d cells of %s ops (about %.1f s each) on a %d-worker LocalCluster: "
                    "%.1f s against %.1f s on as many local processes, %.2fx (target <= %.1f: "
                    "%s); the cluster took %.1f s to start"
         % (len(local_rows), format(ops, ","), seconds, default_workers(), dask, local, ratio,
            DASK_TARGET, _verdict(ratio, DASK_TARGET), started))
