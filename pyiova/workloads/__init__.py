"""Seeded, reproducible device workloads for the simulator.

    from pyiova.workloads import get_workload
    wl = get_workload("usb", inflight=8)        # parameters as keywords (or strings: "8")
    ops = wl.ops(100_000, seed=1)               # an iterator of operation tuples

Workloads (`describe()` prints each one's parameters and defaults):

    usb     a coherent descriptor ring for the device's life plus bulk
            streaming transfers of varying size: the 2017 review's scenario
    nic     rx/tx descriptor rings, a map per packet, unmap on completion, bursts
    nvme    per-CPU queue pairs, 4 KiB-2 MiB transfers, scatter-gather lists
    random  sizes and lifetimes drawn from distributions given as parameters

The operation vocabulary is in pyiova.workloads.base. Workloads of your
own (a Workload subclass, or a generator function of operations) are added
by register_workload() or, from another package, under the
"pyiova.workloads" entry-point group (pyiova.registry, .custom).
"""
from __future__ import annotations

from typing import Any

from .base import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE, MAP_SG, OP_NAMES,
                   UNMAP_PAGE, UNMAP_SG, Param, Workload, WorkloadError, format_op, format_size,
                   parse_size)
from ..registry import WORKLOAD_GROUP, Registry
from .custom import as_workload_class, generator_workload
from .nic import NicWorkload
from .nvme import NvmeWorkload
from .randomized import RandomWorkload
from .usb import UsbWorkload

__all__ = ["WORKLOADS", "get_workload", "describe", "register_workload", "generator_workload",
           "Workload", "WorkloadError", "Param",
           "UsbWorkload", "NicWorkload", "NvmeWorkload", "RandomWorkload", "OP_NAMES",
           "format_op", "format_size", "parse_size", "ACCESS", "MAP_PAGE", "UNMAP_PAGE",
           "MAP_SG", "UNMAP_SG", "ALLOC_COHERENT", "FREE_COHERENT", "ADVANCE"]

# name -> Workload class: the built-ins, then other packages' entry points
# (found on first use), then what register_workload() adds
WORKLOADS = Registry(WORKLOAD_GROUP, "workload", as_workload_class)
for _cls in (UsbWorkload, NicWorkload, NvmeWorkload, RandomWorkload):
    WORKLOADS.add_builtin(_cls.name, _cls)


def register_workload(obj: Any = None, name: str | None = None, *, replace: bool = False,
                      **options: Any) -> Any:
    """Makes a workload usable by name (simulate, compare, sweep, the pyiova
    command); returns obj, so it also works as a decorator, bare or called:

        register_workload(MyWorkload)            # a Workload subclass: its name
        @register_workload                       # a generator function
        def bursty(rng, burst=8): ...
        @register_workload(name="nic2", dma_bits=64, is_pci=True)
        def nic2(rng, size=1500): ...

    options (for a generator function) are generator_workload()'s."""
    if obj is None:
        return lambda fn: register_workload(fn, name, replace=replace, **options)
    if isinstance(obj, type):
        if options:
            raise WorkloadError("options (%s) are for generator functions; a Workload "
                                "subclass sets them as class attributes" % ", ".join(options))
        WORKLOADS.register(obj, name, replace=replace)
    else:
        WORKLOADS.register(generator_workload(obj, name, **options), name, replace=replace)
    return obj


def get_workload(workload: str | Workload, **params: Any) -> Workload:
    """A Workload from its name and parameters (a Workload is returned as is,
    and then takes no parameters)."""
    if isinstance(workload, Workload):
        if params:
            raise WorkloadError("parameters go to the workload's constructor, not here")
        return workload
    cls = WORKLOADS.get(workload) if isinstance(workload, str) else None
    if cls is None:
        raise WorkloadError("unknown workload %r (known: %s)" % (workload, ", ".join(WORKLOADS)))
    return cls(**params)


def _default_text(spec: Param) -> str:
    if spec.default == "":
        return "see right"
    value = spec.parse(spec.default)
    if isinstance(value, tuple):
        return ",".join(format_size(v) if isinstance(v, int) and v >= 512 else str(v)
                        for v in value)
    if isinstance(spec.default, str):
        return spec.default
    return str(value)


def describe(name: str | None = None) -> str:
    """Text listing each workload (or one), its device and its parameters."""
    out = []
    if name is not None and (not isinstance(name, str) or name not in WORKLOADS):
        raise WorkloadError("unknown workload %r (known: %s)" % (name, ", ".join(WORKLOADS)))
    for cls in ([WORKLOADS[name]] if name else WORKLOADS.values()):
        wl = cls()
        out.append("%s: %s" % (cls.name, cls.summary))
        out.append("    device %s: %d-bit DMA mask, %s" % (
            wl.device_name, wl.dma_bits, "PCI" if wl.is_pci else "platform device"))
        for key, spec in cls.PARAMS.items():
            out.append("    %-15s %-22s %s" % (key, "(" + _default_text(spec) + ")", spec.help))
    return "\n".join(out)
