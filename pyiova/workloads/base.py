"""What a workload is: a device, some parameters, and a seeded stream of
operations in a small vocabulary that the simulator turns into DMA API
calls and device accesses.

A workload never calls the DMA API itself. It names each mapping by a
*handle* (a small integer it chooses and may reuse once the mapping is
gone), and the simulator remembers which DMA address each handle got. So the
same seed gives the same stream whatever policy runs it, the stream can be
checked on its own (tests walk it without any IOMMU), and a map that fails
under one policy simply leaves its handle empty: the accesses and the unmap
that name it are skipped.

Operations are plain tuples, the first element an opcode:

    (MAP_PAGE, h, paddr, size, direction, cpu)      dma_map_page
    (UNMAP_PAGE, h, size, direction, cpu)           dma_unmap_page
    (MAP_SG, h, segments, direction, cpu)           dma_map_sg; segments: ((paddr, len), ...)
    (UNMAP_SG, h, direction, cpu)                   dma_unmap_sg
    (ALLOC_COHERENT, h, size, cpu)                  dma_alloc_coherent
    (FREE_COHERENT, h, cpu)                         dma_free_coherent
    (ACCESS, h, offset, write)                      the device reads/writes at dma_addr + offset
    (ADVANCE, ms)                                   simulated time passes (flush-queue timer,
                                                    rcache depot trim)

cpu is None (the one CPU) or the CPU slot the call runs on; direction is a
DmaDirection. Tuples rather than objects because a million of them are made
per simulated million operations.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

from ..device import DMA_BIT_MASK, Device
from .params import (Param, WorkloadError, boolean, choice, format_size, fraction,  # noqa: F401
                     integer, non_negative, number, op_count, parse_list, parse_size, seed)

__all__ = ["MAP_PAGE", "UNMAP_PAGE", "MAP_SG", "UNMAP_SG", "ALLOC_COHERENT", "FREE_COHERENT",
           "ACCESS", "ADVANCE", "OP_NAMES", "Param", "Workload", "WorkloadError", "parse_size",
           "parse_list", "format_size", "format_op"]

# Opcodes. ACCESS is 0 because it is the most frequent and the simulator
# tests for it first.
ACCESS = 0
MAP_PAGE = 1
UNMAP_PAGE = 2
MAP_SG = 3
UNMAP_SG = 4
ALLOC_COHERENT = 5
FREE_COHERENT = 6
ADVANCE = 7

OP_NAMES = ("access", "map_page", "unmap_page", "map_sg", "unmap_sg", "alloc_coherent",
            "free_coherent", "advance")

PAGE = 4096
_seed = seed


class Workload:
    """Base class. Subclasses set name, summary, PARAMS and the device, and
    write _generate(rng), an endless generator of operations.

        wl = get_workload("usb", inflight=8)
        for op in wl.ops(1000, seed=3): ...

    Parameters become attributes of the same name, parsed and checked
    (pyiova.workloads.params has the parsers).
    """

    name = ""
    summary = ""
    PARAMS: dict[str, Param] = {}
    # The device: a name, its streaming and coherent DMA mask widths, PCI or not.
    device_name = "dev"
    dma_bits = 32
    coherent_bits = 32
    is_pci = False

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise WorkloadError("%s has no parameter %s (it has: %s)"
                                % (self.name, ", ".join(unknown), ", ".join(self.PARAMS)))
        for key, spec in self.PARAMS.items():
            value = params.get(key, spec.default)
            try:
                setattr(self, key, spec.parse(value))
            except WorkloadError as exc:
                raise WorkloadError("%s %s: %s" % (self.name, key, exc)) from None
        self._check()

    def _check(self) -> None:
        """Cross-parameter checks (subclasses)."""

    @property
    def ncpus(self) -> int:
        """CPU slots the workload's calls use (the cookie gets as many)."""
        return 1

    @property
    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.PARAMS}

    def device(self) -> Device:
        """A fresh Device with this workload's masks."""
        return Device(self.device_name, DMA_BIT_MASK(self.dma_bits),
                      DMA_BIT_MASK(self.coherent_bits), self.is_pci)

    def ops(self, n: int, seed: Any = 1) -> Iterator[tuple[Any, ...]]:
        """The first n operations for this seed (an iterator)."""
        n = op_count(n, "the number of operations")
        return itertools.islice(self._generate(random.Random(_seed(seed))), n)

    # -- pickling and deepcopy (checkpoints) ------------------------------------
    def __setstate__(self, state: Any) -> None:
        """A restored workload is built again from its parameters, so that a
        damaged checkpoint cannot give it values its parsers would refuse."""
        from .._state import CheckpointError, check_type
        check_type("the state of a %s workload" % self.name, state, dict)
        missing = sorted(set(self.PARAMS) - set(state))
        if missing:
            raise CheckpointError("damaged checkpoint: the %s workload lacks %s"
                                  % (self.name, ", ".join(missing)))
        try:
            fresh = type(self)(**{key: state[key] for key in self.PARAMS})
        except WorkloadError as exc:
            raise CheckpointError("damaged checkpoint: %s" % exc) from None
        extra = sorted(map(repr, set(state) - set(fresh.__dict__)))
        if extra:
            raise CheckpointError("damaged checkpoint: the %s workload has unknown fields %s"
                                  % (self.name, ", ".join(extra)))
        self.__dict__.update(fresh.__dict__)

    def _generate(self, rng: random.Random) -> Iterator[tuple[Any, ...]]:
        raise WorkloadError("the %s workload does not define _generate(rng), the stream of "
                            "its operations" % self.name)

    def __repr__(self) -> str:
        defaults = type(self)().params
        changed = ["%s=%r" % (k, v) for k, v in self.params.items() if v != defaults[k]]
        return "<%s workload%s>" % (self.name, (" " + " ".join(changed)) if changed else "")


def format_op(op: tuple[Any, ...]) -> str:
    """One operation as text, for debugging and error messages."""
    name = OP_NAMES[op[0]]
    args = []
    for v in op[1:]:
        if isinstance(v, int) and not isinstance(v, bool) and v > 4096:
            args.append("%#x" % v)
        elif isinstance(v, tuple):
            args.append("[%d segments]" % len(v))
        else:
            args.append(getattr(v, "name", None) or repr(v))
    return "%s(%s)" % (name, ", ".join(args))
