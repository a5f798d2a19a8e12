"""The checks a Simulation checkpoint passes when it is loaded: the state of
a Simulation, of where its run stands (_RunState) and of its SimResult,
each field of the right type and range, and the simulated system it holds
in one piece (its device attached to its domain, the domain's cookie, the
DMA addresses the workload's handles hold live in that cookie). See
pyiova._state for why.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

from . import _state
from .cookie import DmaCookie
from .device import Device
from .dma import CoherentBuffer, SgMapping
from .iommu import IommuDomain
from .workloads import Workload
from .workloads.params import SEED_TYPES

if TYPE_CHECKING:
    from .sim import Simulation

__all__ = ["check_run_state", "check_simulation_state", "check_result_state",
           "check_simulation"]

_COUNTS = ("live", "peak", "maps", "unmaps", "failures", "skipped", "faults")
_OPTIONAL = ("first_fail", "maps_before", "live_at_fail")


def check_run_state(state: Any, slots: tuple[str, ...]) -> dict[str, Any]:
    """_RunState's state (live_at_fail may be missing: older checkpoints)."""
    state = dict(state) if type(state) is dict else state
    _state.check_fields("a run", state, dict.fromkeys(slots, object),
                        optional=("live_at_fail",))
    state.setdefault("live_at_fail", None)
    _state.check_int("the run's position", state["pos"], 0, sys.maxsize)
    for name in _COUNTS:
        _state.check_int("the run's %s" % name, state[name], 0)
    for name in _OPTIONAL:
        if state[name] is not None:
            _state.check_int("the run's %s" % name, state[name], 0)
    _state.check_type("the run's stopped flag", state["stopped"], bool)
    for name, kinds in (("addr", int), ("objs", (SgMapping, CoherentBuffer))):
        _state.check_type("the run's %s" % name, state[name], dict)
        for handle, value in state[name].items():
            _state.check_type("a handle", handle, int)
            _state.check_type("the run's %s[%r]" % (name, handle), value, kinds)
    return state


def _hint_types(hint: Any) -> tuple[type, ...]:
    """The isinstance() types of a dataclass field's annotation."""
    if hint is float:
        return (int, float)
    origin = get_origin(hint)
    if origin is not None and type(None) in get_args(hint):        # Optional[X]
        return _hint_types(get_args(hint)[0]) + (type(None),)
    if origin is not None:
        return (origin,)
    return (hint,)


def check_result_state(cls: type, state: Any) -> dict[str, Any]:
    """A SimResult's state: every field there, of its annotated type."""
    hints = get_type_hints(cls)
    spec = {f.name: _hint_types(hints[f.name]) for f in fields(cls)}
    spec["seed"] = SEED_TYPES
    newer = [f.name for f in fields(cls) if f.name == "live_at_first_failure"]
    _state.check_fields("a SimResult", state, spec, optional=newer)
    for name in ("ops", "ops_requested", "maps", "unmaps", "failures", "skipped"):
        _state.check_int("the result's %s" % name, state[name], 0)
    from .sim import Sample
    for sample in state["timeline"]:
        _state.check_type("a timeline sample", sample, Sample)
        for name in Sample._fields[:-1]:
            _state.check_int("a timeline sample's %s" % name, getattr(sample, name), 0)
        _state.check_type("a timeline sample's runs", sample.runs, tuple)
    for op in state["failure_ops"]:
        _state.check_int("a failed op's index", op, 0)
    return state


def check_simulation_state(state: Any, result_cls: type, run_state_cls: type) -> None:
    """A Simulation's state, field by field."""
    _state.check_fields("a Simulation", state, {
        "workload": Workload, "seed": SEED_TYPES, "total": int, "max_failures": int,
        "timeline": bool, "_res": result_cls, "_dom": IommuDomain, "_dev": Device,
        "_cookie": DmaCookie, "_first": int, "_last": int, "_state": run_state_cls,
        "_ops": type(None), "_closed": bool})
    _state.check_int("the simulation's total", state["total"], 0, sys.maxsize)
    _state.check_int("the simulation's max_failures", state["max_failures"], 1)
    if state["_closed"]:
        raise _state.fail("a Simulation", "was closed")
    if not 0 <= state["_first"] <= state["_last"]:
        raise _state.fail("a Simulation", "has the device space %r..%r"
                          % (state["_first"], state["_last"]))


def check_simulation(sim: Simulation) -> None:
    """The system a restored Simulation holds, in one piece (every object in
    it restored by now)."""
    dom, dev, cookie, run = sim._dom, sim._dev, sim._cookie, sim._state

    def fail(why: str) -> Exception:
        return _state.fail("a Simulation", why)
    if dev._domain is not dom or dev not in dom._devices:
        raise fail("whose device is not attached to its domain")
    if dom.iova_cookie is not cookie or cookie.domain is not dom or not cookie.initialised:
        raise fail("whose domain does not hold its cookie")
    if run.pos > sim.total or sim._res.ops != run.pos:
        raise fail("that stands at op %d of %d with %d ops in its result"
                   % (run.pos, sim.total, sim._res.ops))
    if sim._res.workload != sim.workload.name:
        raise fail("of workload %r whose result is of %r" % (sim.workload.name,
                                                             sim._res.workload))
    live = cookie.dma_mappings
    mask = ~(cookie.granule - 1)
    for handle, addr in run.addr.items():
        m = live.get(addr & mask)
        if m is None or m.addr != addr or m.dev is not dev:
            raise fail("whose handle %r holds %#x, which is not mapped" % (handle, addr))
    for handle, obj in run.objs.items():
        addr = obj.iova if isinstance(obj, SgMapping) else obj.dma_addr
        if run.addr.get(handle) != addr:
            raise fail("whose handle %r holds a buffer at another address" % (handle,))
