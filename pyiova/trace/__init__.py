"""Kernel traces of IOMMU and DMA API events, read and replayed.

    from pyiova import trace
    res = trace.check("trace.txt.gz")           # does pyiova fit this kernel?
    print(trace.format_check(res))
    lt = trace.load("trace.txt.gz")             # parse once...
    for policy in trace.POLICIES:               # ...replay many times
        print(trace.format_replay(trace.replay(lt, policy)))

Modules, one concern each:
  parse      line formats (ftrace text, trace-cmd report, perf script) -> Events
  lifetimes  Events -> per-device allocations and frees in allocator order
  replay     those operations through a policy's cookie; check()
  report     the tables
"""
from .lifetimes import (ALL_DEVICES, Allocation, DeviceLifetimes, Lifetimes,  # noqa: F401
                        build_lifetimes)
from .parse import Event, Problem, Trace, open_trace, parse_line, read_trace  # noqa: F401
from .replay import (POLICIES, VTD_RESERVED, CheckResult, DeviceCheck,  # noqa: F401
                     DeviceReplay, ReplayResult, TraceDevice, check, load, replay)
from .report import format_check, format_replay  # noqa: F401

__all__ = ["read_trace", "parse_line", "open_trace", "Event", "Problem", "Trace",
           "build_lifetimes", "Lifetimes", "DeviceLifetimes", "Allocation", "ALL_DEVICES",
           "load", "replay", "check", "POLICIES", "VTD_RESERVED", "TraceDevice",
           "ReplayResult", "DeviceReplay", "CheckResult", "DeviceCheck",
           "format_check", "format_replay"]
