"""Kernel trace text -> event records.

Three framings carry the same event messages:

  /sys/kernel/tracing/trace   TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: MESSAGE
                              (FLAGS 4, 5 or 7 characters wide, absent when
                              irq-info is off; an optional "(TGID)" column)
  trace-cmd report            the same, no FLAGS unless -l, the event name
                              padded to a fixed width, "cpus=N" first
  perf script                 COMM PID [CPU] TIMESTAMP: SYSTEM:EVENT: MESSAGE

The framing is recognised line by line, so concatenated or mixed files
parse too. Messages are read as `key=value` tokens after the device name
(dma:) or the "IOMMU:" tag (iommu:), never by position: the dma: formats
changed between releases and will again.

Nothing in here raises on bad input: a line that does not fit, or a known
event whose message lacks what it must carry, is counted as malformed; a
well-framed event of another subsystem is counted as unknown. Both keep
their line numbers for the report.
"""
from __future__ import annotations

import bz2
import contextlib
import gc
import gzip
import io
import lzma
import os
import re
import shutil
import subprocess
import zlib
from collections import Counter
from itertools import islice
from typing import Any

from ..errors import TraceError

__all__ = ["Event", "Trace", "read_trace", "iter_events", "iter_event_batches", "parse_line",
           "open_trace", "read_number", "sniff", "IOMMU_EVENTS", "DMA_EVENTS", "Problem",
           "gc_paused"]


@contextlib.contextmanager
def gc_paused():
    """Builds millions of small acyclic records without the cyclic
    collector rescanning all of them again and again (it doubled the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

# What each event must carry to be of any use; anything else it prints is
# kept as well, typed where the key is known.
IOMMU_EVENTS = {
    "map": ("iova", "size"),
    "unmap": ("iova", "size"),
    "io_page_fault": ("iova",),
    "add_device_to_group": ("device",),
    "remove_device_from_group": ("device",),
    "attach_device_to_domain": ("device",),
    "detach_device_from_domain": ("device",),
}
DMA_EVENTS = {
    # 6.12 names, then the map_phys series' renames
    "dma_map_page": ("dma_addr", "size"),
    "dma_map_resource": ("dma_addr", "size"),
    "dma_map_phys": ("dma_addr", "size"),
    "dma_unmap_page": ("dma_addr", "size"),
    "dma_unmap_resource": ("dma_addr", "size"),
    "dma_unmap_phys": ("dma_addr", "size"),
    "dma_alloc": ("dma_addr", "size"),
    "dma_alloc_pages": ("dma_addr", "size"),
    "dma_alloc_sgt": ("dma_addr", "size"),
    "dma_alloc_sgt_err": ("size",),
    "dma_free": ("dma_addr", "size"),
    "dma_free_pages": ("dma_addr", "size"),
    "dma_free_sgt": ("dma_addr", "size"),
    "dma_map_sg": ("dma_addrs", "sizes"),
    "dma_map_sg_err": (),
    "dma_unmap_sg": ("phys_addrs",),
    "dma_sync_single_for_cpu": ("dma_addr", "size"),
    "dma_sync_single_for_device": ("dma_addr", "size"),
    "dma_sync_sg_for_cpu": ("dma_addrs", "sizes"),
    "dma_sync_sg_for_device": ("dma_addrs", "sizes"),
}

# Keys whose printed form is known. iommu: prints 0x-prefixed hex and
# decimal sizes; dma: prints %llx (hex, no prefix), decimal %zu sizes, and
# __print_array's {0x..,0x..} -- hex even for sizes. virt_addr is a hashed
# %p (or "(____ptrval____)" early in boot): kept as text.
_HEX = frozenset(("iova", "iova_end", "paddr", "dma_addr", "phys_addr"))
_DEC = frozenset(("size", "unmapped_size", "groupID"))
_SIGNED = frozenset(("err",))       # an errno, printed with %d
_ARRAYS = frozenset(("dma_addrs", "sizes", "phys_addrs"))
_FRACTIONS = frozenset(("nents", "ents"))

# The framing. The CPU is "[007]", absent (perf without -a), or -- in the
# latency layout of older trace-cmd -l -- a bare number glued to the flags
# ("  0d.h1"); the flags' first column is never a digit. The task is matched
# lazily up to the first "-PID" (or, for perf, " PID") that the rest of the
# frame accepts, so task names holding spaces, dashes and digits --
# "irq/26-AMD-Vi-154", "Web Content-4120" -- split where the kernel put the
# separator.
_FRAME = re.compile(r"""
    ^\s*(?P<task>.+?)(?:-|\s+)(?P<pid>\d+)(?:/(?P<tid>\d+))?\s+
    (?:\(\s*(?P<tgid>-+|\d+)\)\s+)?
    (?:\[(?P<cpu>\d+)\]\s+(?:(?P<flags>[A-Za-z0-9.]{2,10})\s+)?
       |(?P<lcpu>\d+)(?P<lflags>[A-Za-z.][A-Za-z0-9.]{2,9})\s+)?
    (?P<ts>\d+(?:\.\d+)?):\s+
    (?:\d+\s+)?
    (?P<event>[A-Za-z_]\w*(?::[A-Za-z_]\w*)?):
    (?:\s+(?P<msg>.*))?$
""", re.X | re.A)
# iommu:map / iommu:unmap as every kernel since the range was added prints them
#
# Numbers: what read_number accepts, as patterns -- ASCII digits, at most 16
# hex digits (so below 2**64), decimal checked against 2**64-1 -- shared by
# the fast patterns below; a line they refuse goes the slow way, through
# read_number, which says what is wrong with it.
_HEX64 = r"([0-9a-fA-F]{1,16})"
_DEC64 = r"([0-9]{1,20})"
_MAP_MSG = re.compile(r"IOMMU: iova=0x%s - 0x%s paddr=0x%s size=%s$"
                      % (_HEX64, _HEX64, _HEX64, _DEC64), re.A)
_UNMAP_MSG = re.compile(r"IOMMU: iova=0x%s - 0x%s size=%s unmapped_size=%s$"
                        % (_HEX64, _HEX64, _DEC64, _DEC64), re.A)
# the dma_map / dma_unmap classes, the bulk of any capture (6.12 and mainline print
# the same fields in the same order)
_DMA_MAP_MSG = re.compile(r"(\S+) dir=(\w+) dma_addr=%s size=%s phys_addr=%s attrs=(\S*)$"
                          % (_HEX64, _DEC64, _HEX64), re.A)
_DMA_UNMAP_MSG = re.compile(r"(\S+) dir=(\w+) dma_addr=%s size=%s attrs=(\S*)$"
                            % (_HEX64, _DEC64), re.A)
_DMA_MAP_NAMES = frozenset(("dma_map_page", "dma_map_phys", "dma_map_resource"))
_DMA_UNMAP_NAMES = frozenset(("dma_unmap_page", "dma_unmap_phys", "dma_unmap_resource"))
_FRAME_MATCH = _FRAME.match
_KV = re.compile(r"(\w+)=(\{[^}]*\}|[^\s{]*)", re.A)
_IOMMU_RANGE = re.compile(r"iova=(\S+)\s+-\s+(\S+)", re.A)
_PAGE_FAULT = re.compile(r"^IOMMU:\s*(?P<driver>\S+)\s+(?P<device>\S+)\s+iova=", re.A)
_NCPUS_HEADER = re.compile(r"#P:(\d+)", re.A)
_CPUS_LINE = re.compile(r"^cpus=(\d+)\s*$", re.A)
_LOST = re.compile(r"CPU:?\s*(\d+)\s*\[(?:LOST\s+)?(\d+)\s+EVENTS(?:\s+DROPPED)?\]", re.A)
_BENIGN = re.compile(r"^(?:CPU\s*\d+\s+is empty|version\s*=.*|trace-cmd:.*)$", re.A)

# Flags column, third character: the hardirq/softirq/NMI marker
# (H/h hardirq, s softirq, Z/z NMI). The other columns never use these
# letters, so the 4-, 5- and 7-wide layouts all read the same way.
_IRQ_MARKS = frozenset("hHsZz")


class Problem:
    """A line that was not used: `kind` is "malformed" or "unknown"."""

    __slots__ = ("line", "kind", "reason", "text")

    def __init__(self, line, kind, reason, text) -> None:
        self.line, self.kind, self.reason, self.text = line, kind, reason, text

    def to_dict(self):
        return {"line": self.line, "kind": self.kind, "reason": self.reason, "text": self.text}

    def __repr__(self) -> str:
        return "<Problem line %d %s: %s>" % (self.line, self.kind, self.reason)


class Event:
    """One traced event.

    line    1-based line number in the input
    ts      timestamp (seconds)
    cpu     CPU number (None when the framing has no CPU column)
    task, pid
    flags   the irq-info column as printed ("" when absent)
    irq     True when logged from hardirq, softirq or NMI context
    system  "iommu" or "dma" (perf's prefix, else inferred from the name)
    name    the event name without its system ("map", "dma_map_sg", ...)
    fields  every key=value the message carried, typed where known

    Fields read as attributes: ev.iova, ev.size, ev.dma_addrs, ev.device...
    (None when the event did not print that key).
    """

    __slots__ = ("line", "ts", "cpu", "task", "pid", "flags", "irq", "system", "name", "fields",
                 "style", "_k", "_w", "_c")
    _PUBLIC = ("line", "ts", "cpu", "task", "pid", "flags", "irq", "system", "name", "fields",
               "style")     # _k, _w, _c: the lifetime builder's bookkeeping

    _FIELD_NAMES = frozenset(("iova", "iova_end", "size", "paddr", "unmapped_size", "device",
                              "dma_addr", "phys_addr", "dir", "attrs", "dma_addrs", "sizes",
                              "phys_addrs", "nents", "ents", "truncated", "virt_addr", "flags_gfp",
                              "driver", "groupID", "err", "fault_flags"))

    def __init__(self, line, ts, cpu, task, pid, flags, irq, system, name, fields,
                 style="ftrace") -> None:
        self.line, self.ts, self.cpu, self.task, self.pid = line, ts, cpu, task, pid
        self.flags, self.irq, self.system, self.name, self.fields = flags, irq, system, name, fields
        self.style = style


    @property
    def full_name(self) -> str:
        return "%s:%s" % (self.system, self.name)

    def to_dict(self):
        d = {"line": self.line, "ts": self.ts, "cpu": self.cpu, "task": self.task,
             "pid": self.pid, "flags": self.flags, "irq": self.irq, "event": self.full_name}
        for k, v in self.fields.items():
            d[k] = list(v) if isinstance(v, tuple) else v
        return d

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in Event._PUBLIC)

    __hash__ = None  # type: ignore[assignment]  # (mutable: not hashable)

    def __repr__(self) -> str:
        return "<Event line %d %s cpu=%s pid=%d%s %s>" % (
            self.line, self.full_name, self.cpu, self.pid, " irq" if self.irq else "",
            " ".join("%s=%s" % (k, hex(v) if isinstance(v, int) and k in _HEX else v)
                     for k, v in self.fields.items()))


def _field_property(key):
    return property(lambda self: self.fields.get(key), doc="the %s field, or None" % key)


# Fields read as attributes are properties, not a __getattr__ hook: a class
# with one pays for it on every attribute read, its slots' included
for _key in Event._FIELD_NAMES:
    setattr(Event, _key, _field_property(_key))
del _key


class _Malformed(Exception):
    pass


U64_MAX = (1 << 64) - 1
# A number as the kernel prints one: ASCII digits only (str.isdigit and
# int() take other scripts' digits too), no sign, no separators.
_HEX_NUMBER = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)\Z", re.A)
_DEC_NUMBER = re.compile(r"[0-9]+\Z", re.A)


def read_number(text, key, base, signed=False):
    """The one reader of every number in a trace line: `text` in `base` (16:
    hex with or without 0x; 10: decimal, or hex with 0x as some tools print
    sizes). A value no kernel prints -- negative (unless the field is
    `signed`, an errno), 2**64 or more, digits outside ASCII -- raises
    _Malformed naming the key and the text."""
    if signed and text[:1] == "-":
        return -read_number(text[1:], key, base)
    if base == 10 and text[:2] not in ("0x", "0X"):
        m = _DEC_NUMBER.match(text)
        digits = text
    else:
        m = _HEX_NUMBER.match(text)
        digits = m.group(1) if m else text
        base = 16
    if m is None:
        if text[:1] == "-" and read_number_or_none(text[1:], base) is not None:
            raise _Malformed("%s=%s is negative: no kernel prints that" % (key, text))
        raise _Malformed("%s=%r is not a number" % (key, text))
    v = int(digits, base)
    if v > U64_MAX:
        raise _Malformed("%s=%s is beyond 2**64-1: no kernel prints that" % (key, text))
    return v


def read_number_or_none(text, base):
    try:
        return read_number(text, "", base)
    except _Malformed:
        return None


def _array(text, key):
    if not (text.startswith("{") and text.endswith("}")):
        raise _Malformed("%s=%r is not a {..} array" % (key, text))
    body = text[1:-1].strip()
    if not body:
        return ()
    # __print_array prints hex with a 0x prefix; a bare number would be a
    # libtraceevent variant printing decimal
    return tuple(read_number(item.strip(), key, 10) for item in body.split(","))


def _hex(value, key):
    if not value:
        raise _Malformed("%s is empty" % key)
    return read_number(value, key, 16)


def _dec(value, key):
    return read_number(value, key, 10)


def _signed(value, key):
    return read_number(value, key, 10, signed=True)


def _fraction(value, key):
    a, sep, b = value.partition("/")
    return (read_number(a, key, 10), read_number(b, key, 10)) if sep \
        else (read_number(a, key, 10),) * 2


def _attrs(value, key):
    return tuple(a for a in value.split("|") if a) if value else ()


_CONVERT = dict([(k, _hex) for k in _HEX] + [(k, _dec) for k in _DEC]
                + [(k, _signed) for k in _SIGNED]
                + [(k, _array) for k in _ARRAYS] + [(k, _fraction) for k in _FRACTIONS]
                + [("attrs", _attrs)])


def _store(into, k, v) -> None:
    if k == "flags":
        # dma_alloc's gfp flags and io_page_fault's fault flags share a key
        into["flags_gfp" if not v.startswith("0x") else "fault_flags"] = v
        return
    conv = _CONVERT.get(k)
    into[k] = conv(v, k) if conv is not None else v


def _key_values(text, into):
    if "{" in text and " " in text[text.index("{"):]:
        # an array printed with spaces (not the kernel's own rendering): the
        # slower tokenizer keeps {..} together
        for m in _KV.finditer(text):
            _store(into, m.group(1), m.group(2))
        return into
    for tok in text.split():
        k, sep, v = tok.partition("=")
        if sep and k.isidentifier():
            _store(into, k, v)
    return into


def _iommu_message(name, msg):
    if name == "map":
        m = _MAP_MSG.match(msg)
        if m:
            iova, end, paddr, size = m.groups()
            size = int(size)
            if size <= U64_MAX:
                return {"iova": int(iova, 16), "iova_end": int(end, 16),
                        "paddr": int(paddr, 16), "size": size}
    elif name == "unmap":
        m = _UNMAP_MSG.match(msg)
        if m:
            iova, end, size, unmapped = m.groups()
            size, unmapped = int(size), int(unmapped)
            if size <= U64_MAX and unmapped <= U64_MAX:
                return {"iova": int(iova, 16), "iova_end": int(end, 16), "size": size,
                        "unmapped_size": unmapped}
    fields = {}
    if not msg.startswith("IOMMU:"):
        raise _Malformed("an iommu:%s message starts with 'IOMMU:'" % name)
    if name == "io_page_fault":
        m = _PAGE_FAULT.match(msg)
        if m:
            fields["driver"], fields["device"] = m.group("driver"), m.group("device")
    _key_values(msg[6:], fields)
    if name in ("map", "unmap"):
        m = _IOMMU_RANGE.search(msg)
        if m:
            fields["iova_end"] = read_number(m.group(2), "iova", 16)
        elif "iova" in fields and "size" in fields:
            # kernels before the range was printed: iova=.. paddr=.. size=..
            fields["iova_end"] = fields["iova"] + fields["size"]
    return fields


def _dma_message(name, msg):
    if name in _DMA_MAP_NAMES:
        m = _DMA_MAP_MSG.match(msg)
        if m:
            dev, d, addr, size, phys, attrs = m.groups()
            size = int(size)
            if size <= U64_MAX:
                return {"device": dev, "dir": d, "dma_addr": int(addr, 16), "size": size,
                        "phys_addr": int(phys, 16), "attrs": _attrs(attrs, "attrs")}
    elif name in _DMA_UNMAP_NAMES:
        m = _DMA_UNMAP_MSG.match(msg)
        if m:
            dev, d, addr, size, attrs = m.groups()
            size = int(size)
            if size <= U64_MAX:
                return {"device": dev, "dir": d, "dma_addr": int(addr, 16), "size": size,
                        "attrs": _attrs(attrs, "attrs")}
    fields = {}
    head, _, _ = msg.partition(" ")
    if not head or "=" in head:
        raise _Malformed("a dma: message starts with the device name")
    fields["device"] = head
    _key_values(msg[len(head):], fields)
    if "[TRUNCATED]" in msg:
        fields["truncated"] = True
    elif name == "dma_map_sg":
        fields["truncated"] = False
    return fields


def _no_event(s, lineno):
    """A line the frame pattern refused: header, blank, or not an event."""
    stripped = s.strip()
    if not stripped or stripped[0] == "#" or _CPUS_LINE.match(stripped) or _BENIGN.match(stripped):
        return None
    if "EVENTS" in stripped and _LOST.search(stripped):
        return Problem(lineno, "lost", "events lost: " + stripped, s)
    return Problem(lineno, "malformed", "not a trace event line", s)


_KNOWN = {}
for _n, _req in IOMMU_EVENTS.items():
    _KNOWN["iommu:" + _n] = _KNOWN[_n] = ("iommu", _n, _req)
for _n, _req in DMA_EVENTS.items():
    _KNOWN["dma:" + _n] = _KNOWN[_n] = ("dma", _n, _req)
_GROUPS = ("task", "pid", "tid", "cpu", "flags", "lcpu", "lflags", "ts", "event", "msg")


def parse_line(text, lineno=0):
    """One line -> an Event, None for a line that carries no event (blank,
    header, comment), or a Problem (malformed or unknown). Never raises on
    what the line holds."""
    s = text.rstrip("\r\n")
    m = _FRAME_MATCH(s)
    if m is None:
        return _no_event(s, lineno)
    task, pid, tid, cpu, flags, lcpu, lflags, ts, event, msg = m.group(*_GROUPS)
    if task.lstrip()[:1] == "#":
        return _no_event(s, lineno)
    known = _KNOWN.get(event)
    if known is None:
        return Problem(lineno, "unknown", "event %s is not an iommu: or dma: event" % event, s)
    system, name, required = known
    msg = msg.rstrip() if msg else ""
    if "[FAILED TO PARSE]" in msg:
        # trace-cmd/perf could not render it and dumped raw fields instead
        return Problem(lineno, "malformed", "%s: the tool failed to render it" % event, s)
    try:
        fields = _iommu_message(name, msg) if system == "iommu" else _dma_message(name, msg)
    except _Malformed as exc:
        return Problem(lineno, "malformed", "%s: %s" % (event, exc), s)
    for k in required:
        if k not in fields:
            missing = [k for k in required if k not in fields]
            return Problem(lineno, "malformed", "%s without %s" % (event, ", ".join(missing)), s)
    flags = flags or lflags or ""
    cpu = cpu or lcpu
    return Event(lineno, float(ts), int(cpu) if cpu is not None else None, task.strip(),
                 int(tid or pid), flags, len(flags) >= 3 and flags[2] in _IRQ_MARKS, system,
                 name, fields, "perf" if ":" in event else "ftrace")


# ---- files --------------------------------------------------------------------

_MAGIC = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))
# trace-cmd record's binary file: run `trace-cmd report` on it for text
TRACE_DAT_MAGIC = b"\x17\x08\x44tracing"
_SNIFF = 4096
# what decompressors raise on damaged or cut input
_READ_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


def _decompressor(head):
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener
    return None


def sniff(head) -> str | None:
    """What the first bytes of a (decompressed) file say it is: None for
    text, else "trace-cmd .dat", "UTF-16 text" or "binary"."""
    if head.startswith(TRACE_DAT_MAGIC):
        return "trace-cmd .dat"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16 text"
    if b"\x00" in head:
        # UTF-16 without a byte-order mark: every other byte is NUL
        if len(head) >= 8 and (head[1::2].count(0) > len(head) // 4
                               or head[0::2].count(0) > len(head) // 4):
            return "UTF-16 text"
        return "binary"
    return None


def open_trace(source):
    """A text stream over `source`: a path, a binary or text file object,
    or bytes. Compressed input (gzip, bzip2, xz) is recognised by its
    magic bytes, whatever the file is called."""
    stream, _, _ = _open(source)
    return stream


def _peek(source, n):
    """The first n bytes of a binary stream, and a stream that still
    yields them."""
    if hasattr(source, "peek"):
        head = source.peek(n)[:n]
        if len(head) < n:
            buffered = source.read(n)
            return buffered, io.BufferedReader(_Prefixed(buffered, source))
        return head, source
    if hasattr(source, "seekable") and source.seekable():
        pos = source.tell()
        head = source.read(n)
        source.seek(pos)
        return head, source
    source = io.BufferedReader(source)
    return source.peek(n)[:n], source


class _Prefixed(io.RawIOBase):
    """A raw stream that yields `prefix`, then the rest of `rest`."""

    def __init__(self, prefix, rest) -> None:
        self.prefix, self.rest = prefix, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b):
        if self.prefix:
            n = min(len(b), len(self.prefix))
            b[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.rest.read(len(b))
        b[:len(data)] = data
        return len(data)


class _Failing(io.RawIOBase):
    """A raw stream whose first read raises `exc`."""

    def __init__(self, exc):
        self.exc = exc

    def readable(self):
        return True

    def readinto(self, b):
        raise self.exc


def _open(source):
    """(text stream, what the content looks like: see sniff)."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(bytes(source))
    raw = None
    if isinstance(source, (str, os.PathLike)):
        source = raw = open(source, "rb")
    elif isinstance(source, io.TextIOBase):
        return source, None, None
    head, source = _peek(source, 6)
    opener = _decompressor(head)
    if opener is not None:
        source = opener(source, "rb")
        try:
            head, source = _peek(source, _SNIFF)
        except _READ_ERRORS as exc:
            # Damaged before the first line: the reader raises it as it
            # would further on, so it is reported, not taken for an empty file.
            return io.TextIOWrapper(io.BufferedReader(_Failing(exc))), None, raw
    else:
        head, source = _peek(source, _SNIFF)
    kind = sniff(head)
    if not head:
        kind = "empty"
    return io.TextIOWrapper(source, encoding="utf-8", errors="replace", newline=""), kind, raw


class Trace:
    """What was read from a trace.

    events       the Events, in file order (read_trace; a streaming reader
                 keeps none)
    lines        lines read
    ncpus        CPU count from the header (#P:N, cpus=N), else highest CPU + 1
    format       "ftrace", "trace-cmd", "perf", or "mixed"
    content      None for text, else what the file is instead: "empty",
                 "binary", "UTF-16 text", "trace-cmd .dat"
    malformed, unknown, lost_events   counts
    problems     the first `max_problems` unused lines (Problem records)
    """

    def __init__(self, name=None, max_problems=20) -> None:
        self.name = name
        self.events: list[Any] = []
        self.nevents = 0
        self.lines = 0
        self.header_ncpus = None
        self.max_cpu = -1
        self.malformed = 0
        self.unknown = 0
        self.lost_events = 0
        self.lost_lines: list[Any] = []
        self.problems: list[Any] = []
        self.max_problems = max_problems
        self.tracer = None
        self.content = None
        self.styles: Counter[Any] = Counter()
        self.unknown_names: Counter[Any] = Counter()
        self.fractional_ts = False
        self._trace_cmd = False
        self.size = None            # bytes in the file read (for progress), if known
        self.position = None        # () -> bytes of it read so far

    @property
    def ncpus(self):
        return max(self.header_ncpus or 0, self.max_cpu + 1, 1)

    @property
    def clock_in_seconds(self):
        """False when every timestamp is a whole number: a counter or TSC
        clock (trace_clock), whose ticks are not seconds."""
        return self.fractional_ts

    @property
    def format(self):
        kinds = set(self.styles)
        if not kinds:
            return "trace-cmd" if self._trace_cmd else ("ftrace" if self.tracer else "unknown")
        if len(kinds) > 1:
            return "mixed"
        kind = kinds.pop()
        if kind == "ftrace" and self._trace_cmd:
            return "trace-cmd"
        return kind

    def summary(self):
        """A JSON-ready description of what was read."""
        return {"name": self.name, "format": self.format, "lines": self.lines,
                "events": self.nevents, "ncpus": self.ncpus, "malformed": self.malformed,
                "unknown": self.unknown, "lost_events": self.lost_events,
                "content": self.content,
                "problems": [p.to_dict() for p in self.problems]}

    def __repr__(self) -> str:
        return "<Trace %s: %d events from %d lines, %d malformed, %d unknown>" % (
            self.format, self.nevents, self.lines, self.malformed, self.unknown)


def read_trace(source, *, max_problems=20, name=None):
    """Parses a whole trace: a path, file object, bytes, or an iterable of
    lines. Returns a Trace with every event (bad lines are counted there,
    never raised); a damaged compressed file raises TraceError."""
    trace = Trace(_name(source, name), max_problems)
    with gc_paused():
        trace.events.extend(iter_events(source, trace))
    return trace


def _name(source, name):
    if name is None and isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return name


def iter_events(source, trace):
    """The events of `source` (a path, file object, bytes, or an iterable of
    lines) one at a time, in file order; `trace` (a Trace) counts the rest
    as it goes. Only the lines being read are held. A trace-cmd .dat file
    is read through `trace-cmd report` when that is installed."""
    for events in iter_event_batches(source, trace):
        for e in events:
            trace.nevents += 1
            trace.lines = e.line
            yield e


def iter_event_batches(source, trace):
    """iter_events(), a list of events at a time (as the replay reads them);
    trace.nevents is the caller's to count."""
    stream = None
    if isinstance(source, (str, os.PathLike, bytes, bytearray)) or hasattr(source, "read"):
        stream, trace.content, raw = _open(source)
        if raw is not None:
            trace.size = os.fstat(raw.fileno()).st_size
            trace.position = raw.tell
        lines = stream
        if trace.content == "trace-cmd .dat":
            lines = _trace_cmd_report(source, trace)
    else:
        lines = source
    try:
        yield from _event_batches(lines, trace)
    except _READ_ERRORS as exc:
        raise TraceError("%s: the data ends or breaks after line %d (%s): a truncated or "
                         "damaged file?" % (trace.name or "the trace", trace.lines,
                                            exc or type(exc).__name__)) from None
    finally:
        if stream is not None:
            _release(stream, source)


def _trace_cmd_report(source, trace):
    """`trace-cmd report` of a .dat file, as lines; none (and a note in
    trace.content) when trace-cmd is not installed or the source is no file."""
    exe = shutil.which("trace-cmd")
    if exe is None or not isinstance(source, (str, os.PathLike)):
        return iter(())
    trace.content = "trace-cmd .dat (read through trace-cmd report)"
    return _command_lines([exe, "report", "-l", "-i", os.fspath(source)])


def _command_lines(argv):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield from io.TextIOWrapper(proc.stdout,  # type: ignore[type-var]  # (a PIPE)
                                    encoding="utf-8", errors="replace", newline="")
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.wait()


def _release(stream, source) -> None:
    """Closes what iter_events opened; a caller's own file stays open."""
    if stream is source:
        return
    if isinstance(source, (str, os.PathLike, bytes, bytearray)):
        stream.close()
        return
    buf = stream.buffer
    if buf is source or getattr(buf, "raw", None) is source:
        stream.detach()
    else:
        try:
            stream.close()      # a decompressor over the caller's file leaves it open
        except _READ_ERRORS:
            pass


_CHUNK = 1024               # lines read ahead and put through the common-line reader at once


def _chunks(lines):
    """Lists of up to _CHUNK lines. A read error is raised once the lines
    before it have been handed on."""
    it = iter(lines)
    while True:
        chunk: list[Any] = []
        try:
            # (list.extend keeps what it appended before an error)
            chunk.extend(islice(it, _CHUNK))
        except _READ_ERRORS:
            if chunk:
                yield chunk
            raise
        if not chunk:
            return
        yield chunk


def _event_batches(lines, trace):
    """The events of each chunk of lines, a list at a time; `trace` counts
    what else the lines held (problems, lost events, CPUs, framings) as it
    goes. How many events were handed on is for the consumer to count."""
    from .fastline import fast_event
    problems = trace.problems
    max_problems = trace.max_problems
    styles: dict[Any, Any] = {}
    fast = 0                    # events the one-pattern reader took (ftrace style)
    n = trace.lines
    try:
        for chunk in _chunks(lines):
            # the common lines of a chunk are read in one tight loop, then
            # handed on: an interpreter runs one kind of work at a time
            # faster than all of them in turn
            read = list(map(fast_event, chunk, range(n + 1, n + 1 + len(chunk))))
            events = list(filter(None, read))
            if len(events) == len(chunk):
                # every line a common event: the whole chunk at once
                n += len(chunk)
                fast += len(events)
                _note_events(events, trace)
                yield events
                continue
            events = []
            for text, r in zip(chunk, read):
                n += 1
                if r is not None:
                    fast += 1
                    events.append(r)
                    continue
                r = parse_line(text, n)
                if r is None:
                    _header(text, trace)
                elif type(r) is Event:
                    styles[r.style] = styles.get(r.style, 0) + 1
                    events.append(r)
                elif r.kind == "lost":
                    m = _LOST.search(r.text)
                    trace.lost_events += int(m.group(2))  # type: ignore[union-attr]
                    trace.lost_lines.append(n)
                else:
                    if r.kind == "unknown":
                        trace.unknown += 1
                        trace.unknown_names[r.reason.split()[1]] += 1
                    else:
                        trace.malformed += 1
                    if len(problems) < max_problems:
                        problems.append(r)
            if events:
                _note_events(events, trace)
                yield events
    finally:
        trace.lines = n
        if fast:
            styles["ftrace"] = styles.get("ftrace", 0) + fast
        trace.styles.update(styles)


def _note_events(events, trace) -> None:
    """The highest CPU and whether the clock counts seconds, from a batch."""
    cpus = [e.cpu for e in events if e.cpu is not None]
    if cpus:
        top = max(cpus)
        if top > trace.max_cpu:
            trace.max_cpu = top
    if not trace.fractional_ts and not all(e.ts.is_integer() for e in events):
        trace.fractional_ts = True


def _header(text, trace) -> None:
    """What a line that carries no event says about the trace (#P:N, cpus=N,
    the tracer)."""
    head = text.lstrip()
    if head.startswith("#"):
        if trace.header_ncpus is None:
            m = _NCPUS_HEADER.search(head)
            if m:
                trace.header_ncpus = int(m.group(1))
        if head.startswith("# tracer:"):
            trace.tracer = head[9:].strip()
    else:
        m = _CPUS_LINE.match(head.strip())
        if m:
            trace._trace_cmd = True
            if trace.header_ncpus is None:
                trace.header_ncpus = int(m.group(1))
