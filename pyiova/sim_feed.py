"""simulate()'s engines fed by any producer, a chunk at a time.

simulate() pulls its operations from a workload's generator. A producer
that pushes them as they come - a trace replay hands on each operation once
the record has settled it - feeds a FedRun instead:

    run = FedRun(dom, dev, cookie, workload="trace", policy="iova", driver="ipmmu")
    run.feed(ops)           # a list of operation tuples (pyiova.workloads.base)
    ...
    res = run.result()      # a SimResult, counted as simulate() counts

The domain, device and cookie are the caller's, set up (the cookie
initialised) and attached; FedRun runs each chunk through the C engine
(csrc/sim_engine.c, over PackedStream records) when it can take the run, or
through the Python engine (engine="python", or a driver that declares no
EngineProfile), exactly as simulate() does: the two give the same results.
A run is never stopped early here: every failed map is counted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine.streams import PackedStream
from .sim import (SimResult, _choose_engine, _device_space, _fill_counters,
                  _run, _run_native, _RunState)

if TYPE_CHECKING:
    from .cookie import DmaCookie
    from .device import Device
    from .iommu import IommuDomain

__all__ = ["FedRun"]

NO_STOP = 1 << 62           # max_failures: never reached


class FedRun:
    """Operations pushed in chunks through one simulation's engine."""

    def __init__(self, dom: IommuDomain, dev: Device, cookie: DmaCookie, *, workload: str,
                 policy: str, driver: str, seed: Any = 1, kernel: str = "6.12",
                 engine: str = "auto") -> None:
        self.dom, self.dev, self.cookie = dom, dev, cookie
        self.res = SimResult(workload, policy, driver, seed, kernel=kernel)
        self.res.engine, self.res.engine_note = _choose_engine(engine, dom, dev, cookie)
        self.first, self.last = _device_space(cookie, dev)
        self.state = _RunState()

    @property
    def done(self) -> int:
        """Operations executed so far."""
        return self.state.pos

    def feed(self, ops: list[tuple[Any, ...]]) -> None:
        """Runs the operations of the list `ops` now."""
        n = len(ops)
        if not n:
            return
        total = self.state.pos + n
        args = (self.dev, self.dom, self.cookie, self.res, NO_STOP, None, False, self.first,
                self.last, self.state)
        if self.res.engine == "c":
            _run_native(PackedStream(ops), n, total, *args)
        else:
            _run(iter(ops), total, *args)
        self.res.ops_requested = self.state.pos

    def result(self) -> SimResult:
        """The SimResult so far, with the domain's and the allocator's counters."""
        _fill_counters(self.res, self.dom, self.cookie, self.first, self.last)
        return self.res
