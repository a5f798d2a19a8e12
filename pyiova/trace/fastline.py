"""The lines that make up nearly all of a capture, read with one pattern.

A capture is mostly four events -- iommu:map, iommu:unmap, and the dma:
map_page / unmap_page class -- in /sys/kernel/tracing/trace's framing
(TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: MESSAGE). One pattern over the
whole line reads those: it is a narrowing of parse.parse_line's frame and
message patterns (literal single spaces, the irq-info column present, no
TGID column or TID), so a line it takes is read the same as parse_line
reads it, and a line it refuses goes to parse_line, which reads -- or
reports -- everything else. Numbers follow the shared digit rules: ASCII
digits, at most 16 hex digits, a decimal above 2**64-1 left to the slow
reader.
"""
from __future__ import annotations

import re
from typing import Any

from .parse import _IRQ_MARKS, U64_MAX, Event, _attrs

__all__ = ["fast_event"]

_H = r"([0-9a-fA-F]{1,16})"
_D = r"([0-9]{1,20})"
_LINE = re.compile(
    r" *(?![\s#])(.+?)-(\d+) +\[(\d+)\] ([A-Za-z0-9.]{2,10}) +(\d+\.\d+): (?:"
    r"(map): IOMMU: iova=0x%s - 0x%s paddr=0x%s size=%s"
    r"|(unmap): IOMMU: iova=0x%s - 0x%s size=%s unmapped_size=%s"
    r"|(dma_map_page|dma_map_phys|dma_map_resource): (\S+) dir=(\w+) dma_addr=%s size=%s "
    r"phys_addr=%s attrs=(\S*)"
    r"|(dma_unmap_page|dma_unmap_phys|dma_unmap_resource): (\S+) dir=(\w+) dma_addr=%s "
    r"size=%s attrs=(\S*)"
    r") *\r?$" % (_H, _H, _H, _D, _H, _H, _D, _D, _H, _D, _H, _H, _D), re.A)
_MATCH = _LINE.match
# The few task, flags, device and direction strings, and pid and CPU
# numbers, a capture repeats, kept once: a window of events that shares
# them is smaller, and faster to fill and to drop. (Bounded: a capture of
# very many tasks starts them again.)
_TEXT: dict[Any, Any] = {}
_NUMBER: dict[Any, Any] = {}
_KEPT_MAX = 4096


def _text(s):
    if len(_TEXT) >= _KEPT_MAX:
        _TEXT.clear()
    _TEXT[s] = s
    return s


def _number(s):
    if len(_NUMBER) >= _KEPT_MAX:
        _NUMBER.clear()
    v = _NUMBER[s] = int(s)
    return v


def fast_event(text, lineno):
    """The Event of a common line, or None: then parse_line reads it."""
    m = _MATCH(text)
    if m is None:
        return None
    last = m.lastindex          # the last group of the alternative that matched
    if last == 10:
        task, pid, cpu, flags, ts, iova, end, paddr, size = m.group(1, 2, 3, 4, 5, 7, 8, 9, 10)
        size = int(size)
        if size > U64_MAX:
            return None
        fields: dict[str, Any] = {"iova": int(iova, 16), "iova_end": int(end, 16),
                                  "paddr": int(paddr, 16), "size": size}
        system, name = "iommu", "map"
    elif last == 15:
        task, pid, cpu, flags, ts, iova, end, size, unmapped = m.group(1, 2, 3, 4, 5, 12, 13, 14,
                                                                      15)
        size, unmapped = int(size), int(unmapped)
        if size > U64_MAX or unmapped > U64_MAX:
            return None
        fields = {"iova": int(iova, 16), "iova_end": int(end, 16), "size": size,
                  "unmapped_size": unmapped}
        system, name = "iommu", "unmap"
    elif last == 22:
        task, pid, cpu, flags, ts, name, dev, dr, addr, size, phys, attrs = m.group(
            1, 2, 3, 4, 5, 16, 17, 18, 19, 20, 21, 22)
        size = int(size)
        if size > U64_MAX:
            return None
        fields = {"device": _TEXT.get(dev) or _text(dev), "dir": _TEXT.get(dr) or _text(dr),
                  "dma_addr": int(addr, 16), "size": size, "phys_addr": int(phys, 16),
                  "attrs": _attrs(attrs, "attrs") if attrs else ()}
        system = "dma"
    else:
        task, pid, cpu, flags, ts, name, dev, dr, addr, size, attrs = m.group(
            1, 2, 3, 4, 5, 23, 24, 25, 26, 27, 28)
        size = int(size)
        if size > U64_MAX:
            return None
        fields = {"device": _TEXT.get(dev) or _text(dev), "dir": _TEXT.get(dr) or _text(dr),
                  "dma_addr": int(addr, 16), "size": size,
                  "attrs": _attrs(attrs, "attrs") if attrs else ()}
        system = "dma"
    task = _TEXT.get(task) or _text(task.strip())
    p = _NUMBER.get(pid)
    if p is None:
        p = _number(pid)
    c = _NUMBER.get(cpu)
    if c is None:
        c = _number(cpu)
    return Event(lineno, float(ts), c, task, p, _TEXT.get(flags) or _text(flags),
                 len(flags) >= 3 and flags[2] in _IRQ_MARKS, system, name, fields)
