"""Kernel traces of IOMMU and DMA API events, read and replayed.

    from pyiova import trace
    res = trace.check("trace.txt.gz")            # does pyiova fit this kernel?
    print(trace.format_check(res))
    r = trace.replay("trace.txt.gz", ["wraparound", "iova-tree"])   # what if...?
    print(trace.format_replay(r))

Modules, one concern each:
  parse      line formats (ftrace text, trace-cmd report, perf script) -> Events
  lifetimes  Events -> each domain's allocations and frees, in trace order
  kernel     one domain as the traced kernel ran it (strict or lazy)
  engine     where the trace leaves the order open, the record decides
  replay     check() and replay(): the stream through all of them
  whatif     the settled lifetimes through simulate()'s engines on a driver model
  report     the tables
"""
from .engine import Engine, Op  # noqa: F401
from .kernel import (DEFAULT_RESERVED, KERNELS, Q35_PCI_WINDOWS, VTD_RESERVED,  # noqa: F401
                     KernelDomain, TimerRules)
from .lifetimes import (ALL_DEVICES, Allocation, DeviceLifetimes, Lifetimes,  # noqa: F401
                        TraceDevice, build_lifetimes)
from .parse import (Event, Problem, Trace, iter_events, open_trace, parse_line,  # noqa: F401
                    read_trace)
from .replay import (MODES, POLICIES, CheckResult, DeviceCheck, DeviceReplay,  # noqa: F401
                     ReplayResult, check, load, parse_policy, replay)
from .report import format_check, format_replay  # noqa: F401
from .whatif import DEFAULT_DRIVER, NO_DRIVER, driver_names  # noqa: F401

__all__ = ["read_trace", "iter_events", "parse_line", "open_trace", "Event", "Problem", "Trace",
           "build_lifetimes", "Lifetimes", "DeviceLifetimes", "Allocation", "TraceDevice",
           "ALL_DEVICES", "load", "replay", "check", "POLICIES", "MODES", "KERNELS",
           "VTD_RESERVED", "Q35_PCI_WINDOWS", "DEFAULT_RESERVED", "TimerRules", "KernelDomain",
           "Engine", "Op", "parse_policy",
           "ReplayResult", "DeviceReplay", "CheckResult", "DeviceCheck", "format_check",
           "format_replay", "DEFAULT_DRIVER", "NO_DRIVER", "driver_names"]
