"""The C simulation engine's Python side (docs/engine.md).

    records   the operation record layout, and tuples packed into it
    streams   where a run's records come from: the built-in workloads'
              generators in C, or any iterator of tuples, packed
    native    NativeEngine: the run's state copied into a C engine and back,
              and why_not() a run cannot use one

pyiova.sim picks the engine; nothing here is needed to run a simulation.
"""
