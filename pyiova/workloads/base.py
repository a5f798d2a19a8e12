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
import itertools
import random
from typing import Any, Callable, Dict, Iterator, NamedTuple

from .. import errors
from ..device import DMA_BIT_MASK, Device

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


class WorkloadError(errors.IovaValueError):
    """An unknown workload, an unknown parameter or a bad parameter value."""


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(value):
    """Bytes from 4096, "4096", "4K", "2M", "64KiB" (binary units)."""
    if isinstance(value, bool):
        raise WorkloadError("%r is not a size" % (value,))
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().upper()
        num = text.rstrip("BKMGI")
        try:
            n = int(num, 0) * _UNITS[text[len(num):]]
        except (ValueError, KeyError):
            raise WorkloadError("%r is not a size (examples: 512, 4K, 2M)" % (value,)) from None
    if n <= 0:
        raise WorkloadError("size %r is not positive" % (value,))
    return n


def format_size(n):
    """4096 -> "4K", 1536 -> "1536" (the inverse of parse_size where exact)."""
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= mult and n % mult == 0:
            return "%d%s" % (n // mult, unit)
    return str(n)


def parse_list(item):
    """A parser for comma-separated lists (or sequences) of `item`."""
    def parse(value):
        parts = value.split(",") if isinstance(value, str) else list(value)
        out = tuple(item(p) for p in parts if not isinstance(p, str) or p.strip())
        if not out:
            raise WorkloadError("an empty list")
        return out
    parse.__name__ = "list of %s" % getattr(item, "__name__", "values")
    return parse


def _number(kind, lo=None, hi=None):
    def parse(value):
        if isinstance(value, bool):
            raise WorkloadError("%r is not a number" % (value,))
        try:
            v = kind(value)
        except (TypeError, ValueError):
            raise WorkloadError("%r is not %s" % (value, "an integer" if kind is int
                                                   else "a number")) from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise WorkloadError("%r is outside %s..%s" % (value, lo, hi))
        return v
    return parse


def integer(lo=None, hi=None):
    return _number(int, lo, hi)


def fraction():
    return _number(float, 0.0, 1.0)


def positive_float():
    return _number(float, 0.0, None)


def choice(*names):
    def parse(value):
        if value not in names:
            raise WorkloadError("%r is not one of %s" % (value, ", ".join(names)))
        return value
    return parse


def boolean(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise WorkloadError("%r is not a boolean (true/false)" % (value,))


class Param(NamedTuple):
    """One workload parameter: its default, the parser that turns a
    command-line string (or a Python value) into it, and what it means."""
    default: Any
    parse: Callable[[Any], Any]
    help: str


class Workload:
    """Base class. Subclasses set name, summary, PARAMS and the device, and
    write _generate(rng), an endless generator of operations.

        wl = get_workload("usb", inflight=8)
        for op in wl.ops(1000, seed=3): ...

    Parameters become attributes of the same name, parsed and checked.
    """

    name = ""
    summary = ""
    PARAMS: Dict[str, Param] = {}
    # The device: a name, its streaming and coherent DMA mask widths, PCI or not.
    device_name = "dev"
    dma_bits = 32
    coherent_bits = 32
    is_pci = False

    def __init__(self, **params):
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

    def _check(self):
        """Cross-parameter checks (subclasses)."""

    @property
    def ncpus(self):
        """CPU slots the workload's calls use (the cookie gets as many)."""
        return 1

    @property
    def params(self):
        return {key: getattr(self, key) for key in self.PARAMS}

    def device(self):
        """A fresh Device with this workload's masks."""
        return Device(self.device_name, DMA_BIT_MASK(self.dma_bits),
                      DMA_BIT_MASK(self.coherent_bits), self.is_pci)

    def ops(self, n, seed=1):
        """The first n operations for this seed (an iterator)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise WorkloadError("the number of operations must be an integer >= 0, not %r"
                                % (n,))
        return itertools.islice(self._generate(random.Random(seed)), n)

    def _generate(self, rng) -> Iterator[tuple]:
        raise NotImplementedError

    def __repr__(self):
        defaults = type(self)().params
        changed = ["%s=%r" % (k, v) for k, v in self.params.items() if v != defaults[k]]
        return "<%s workload%s>" % (self.name, (" " + " ".join(changed)) if changed else "")


def format_op(op):
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
