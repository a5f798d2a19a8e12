"""Operation records: the workload vocabulary as fixed-width records over a
buffer, the form the C simulation engine reads (csrc/sim_engine.h).

One record is 32 bytes, little-endian, `struct sim_op`:

    offset  size  field   meaning
    0       1     code    opcode: the vocabulary's (ACCESS 0 .. ADVANCE 7),
                          SEGMENT 8, PYTHON 9
    1       1     dir     DMA direction (0 bidirectional, 1 to device, 2 from device)
    2       1     write   ACCESS: 1 when the device writes
    3       1     -       zero
    4       4     cpu     int32: the CPU slot, -1 for None
    8       8     handle  the mapping's handle
    16      8     arg     MAP_PAGE, SEGMENT: physical address; ACCESS: offset;
                          ADVANCE: milliseconds; MAP_SG: segments that follow;
                          PYTHON: index of the operation in the producer's list
    24      8     size    MAP_PAGE, UNMAP_PAGE, ALLOC_COHERENT: bytes;
                          SEGMENT: its length

A MAP_SG record is followed by one SEGMENT record per segment; a chunk of
records holds whole operations. An operation the records cannot carry (a
handle that is not a 64-bit integer, a float size, a malformed tuple...)
becomes a PYTHON record: the engine stops there and the Python engine runs
the original tuple, which then fails or succeeds as it always would.

    buf, extra, n = pack(ops)         # a list/iterator of operation tuples
    unpack(buf, extra) == list(ops)   # the same operations back
"""
from __future__ import annotations

import struct
from typing import Any

from .. import errors
from ..dma import DmaDirection
from ..workloads.base import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE,
                              MAP_SG, UNMAP_PAGE, UNMAP_SG)

__all__ = ["RECORD", "RECORD_SIZE", "SEGMENT", "PYTHON", "DIRECTIONS", "pack", "unpack",
           "records_of", "is_u64"]

RECORD = struct.Struct("<BBBBiQQQ")
RECORD_SIZE = RECORD.size
SEGMENT = 8
PYTHON = 9

_U64 = 1 << 64
_INT_MAX = (1 << 31) - 1
DIRECTIONS = tuple(DmaDirection)     # a record's direction number -> DmaDirection


def is_u64(v):
    """Whether a record's 64-bit field can hold v as it is."""
    return type(v) is int and 0 <= v < _U64


def _cpu(cpu):
    """The record's cpu, or None when a record cannot hold it."""
    if cpu is None:
        return -1
    if type(cpu) is int and 0 <= cpu <= _INT_MAX:
        return cpu
    return None


def _direction(d):
    if type(d) is DmaDirection:
        return int(d)
    if type(d) is int and 0 <= d <= 3:
        return d
    return None


def _encode(op, out) -> bool:
    """Appends op's records to out (a list of record tuples); False when the
    records cannot carry it."""
    try:
        code = op[0]
        if code == ACCESS:
            _, h, off, write = op
            if is_u64(h) and is_u64(off) and type(write) in (bool, int) and write in (0, 1):
                out.append((ACCESS, 0, 1 if write else 0, 0, -1, h, off, 0))
                return True
        elif code == MAP_PAGE:
            _, h, paddr, size, d, cpu = op
            d, c = _direction(d), _cpu(cpu)
            if is_u64(h) and is_u64(paddr) and is_u64(size) and d is not None and c is not None:
                out.append((MAP_PAGE, d, 0, 0, c, h, paddr, size))
                return True
        elif code == UNMAP_PAGE:
            _, h, size, d, cpu = op
            d, c = _direction(d), _cpu(cpu)
            if is_u64(h) and is_u64(size) and d is not None and c is not None:
                out.append((UNMAP_PAGE, d, 0, 0, c, h, 0, size))
                return True
        elif code == MAP_SG:
            _, h, segs, d, cpu = op
            d, c = _direction(d), _cpu(cpu)
            if is_u64(h) and d is not None and c is not None and type(segs) in (tuple, list):
                recs = [(MAP_SG, d, 0, 0, c, h, len(segs), 0)]
                for seg in segs:
                    if type(seg) is not tuple or len(seg) != 2 or not is_u64(seg[0]) \
                            or not is_u64(seg[1]):
                        return False
                    recs.append((SEGMENT, 0, 0, 0, -1, 0, seg[0], seg[1]))
                out.extend(recs)
                return True
        elif code == UNMAP_SG:
            _, h, d, cpu = op
            d, c = _direction(d), _cpu(cpu)
            if is_u64(h) and d is not None and c is not None:
                out.append((UNMAP_SG, d, 0, 0, c, h, 0, 0))
                return True
        elif code == ALLOC_COHERENT:
            _, h, size, cpu = op
            c = _cpu(cpu)
            if is_u64(h) and is_u64(size) and c is not None:
                out.append((ALLOC_COHERENT, 0, 0, 0, c, h, 0, size))
                return True
        elif code == FREE_COHERENT:
            _, h, cpu = op
            c = _cpu(cpu)
            if is_u64(h) and c is not None:
                out.append((FREE_COHERENT, 0, 0, 0, c, h, 0, 0))
                return True
        elif code == ADVANCE:
            _, ms = op
            if is_u64(ms):
                out.append((ADVANCE, 0, 0, 0, -1, 0, ms, 0))
                return True
    except (TypeError, ValueError, IndexError, KeyError):
        pass
    return False


def pack(ops, limit=None):
    """The operations of `ops` (at most `limit`) as records: (bytearray,
    extra, n) where extra holds the operations that went as PYTHON records
    (record arg = their index) and n is how many operations were packed."""
    recs: list[Any] = []
    extra: list[Any] = []
    n = 0
    for op in ops:
        if not _encode(op, recs):
            recs.append((PYTHON, 0, 0, 0, -1, 0, len(extra), 0))
            extra.append(op)
        n += 1
        if limit is not None and n >= limit:
            break
    buf = bytearray(RECORD_SIZE * len(recs))
    pack_into = RECORD.pack_into
    for i, r in enumerate(recs):
        pack_into(buf, RECORD_SIZE * i, *r)
    return buf, extra, n


def records_of(buf, i):
    """How many records the operation starting at record i takes."""
    code, _, _, _, _, _, arg, _ = RECORD.unpack_from(buf, RECORD_SIZE * i)
    return 1 + arg if code == MAP_SG else 1


def decode(buf, i, extra=()):
    """The operation tuple starting at record i (as the workload generators
    write them: DmaDirection members, None for no cpu)."""
    code, d, write, _, cpu, h, arg, size = RECORD.unpack_from(buf, RECORD_SIZE * i)
    c = None if cpu == -1 else cpu
    if code == ACCESS:
        return (ACCESS, h, arg, bool(write))
    if code == MAP_PAGE:
        return (MAP_PAGE, h, arg, size, DIRECTIONS[d], c)
    if code == UNMAP_PAGE:
        return (UNMAP_PAGE, h, size, DIRECTIONS[d], c)
    if code == MAP_SG:
        segs = tuple(RECORD.unpack_from(buf, RECORD_SIZE * (i + 1 + k))[6:8] for k in range(arg))
        return (MAP_SG, h, segs, DIRECTIONS[d], c)
    if code == UNMAP_SG:
        return (UNMAP_SG, h, DIRECTIONS[d], c)
    if code == ALLOC_COHERENT:
        return (ALLOC_COHERENT, h, size, c)
    if code == FREE_COHERENT:
        return (FREE_COHERENT, h, c)
    if code == ADVANCE:
        return (ADVANCE, arg)
    if code == PYTHON:
        return extra[arg]
    raise errors.IovaValueError("record %d: code %d does not start an operation" % (i, code))


def unpack(buf, extra=()):
    """Every operation in buf, as tuples."""
    out = []
    i, n = 0, len(buf) // RECORD_SIZE
    while i < n:
        out.append(decode(buf, i, extra))
        i += records_of(buf, i)
    return out
