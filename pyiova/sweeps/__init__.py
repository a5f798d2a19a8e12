"""Sweeps: many simulations over a grid of workloads, policies, drivers,
kernels, workload parameters and seeds, on every core or a Dask cluster,
with the results as a tidy table.

    import pyiova
    r = pyiova.sweep("usb", policies="iova,wraparound,reset-when-empty",
                     params={"ring_size": ["64K", "256K", "1M"]}, seeds=range(1, 21),
                     ops=200_000)
    print(r.summary())          # mean, min, max, 95% interval over the seeds
    df = r.to_pandas()          # one row per cell

The modules: grid (the cells), cell (one cell -> one row), executors
(serial, local processes, Dask), store (files, resuming), table
(SweepResult), summary, plot, command (`pyiova sweep`).
"""
from .grid import Cell, param_alternatives, parse_seeds
from .run import DEFAULT_SEEDS, DEFAULT_SWEEP_OPS, EXECUTORS, sweep
from .summary import SweepSummary
from .table import SweepResult

__all__ = ["sweep", "SweepResult", "SweepSummary", "Cell", "parse_seeds", "param_alternatives",
           "EXECUTORS", "DEFAULT_SEEDS", "DEFAULT_SWEEP_OPS"]
