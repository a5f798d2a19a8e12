"""Events -> each IOVA domain's allocations and frees, in trace order, as a
stream: what is held is a window of recent events and the live
allocations, never the whole trace.

The iommu: events say what was mapped where but not for whom; the dma:
events (6.12+) name the device and the call but are logged on the wrong
side of the work they describe. So, with dma: events:

* an allocation is a dma: map-type call (dma_map_page/_phys/_resource,
  dma_alloc/_pages/_sgt, dma_map_sg) together with the iommu:map lines it
  caused: the same CPU and task context, logged before it, inside its IOVA
  range. It takes its place at the first of those map lines: the
  allocation happened just before that line;
* a free is an iommu:unmap line; the dma: free-type call next to it (after
  it for dma_unmap_page/_phys/_resource, before it for dma_free* and
  dma_unmap_sg) names the device. The unmap line's IOVA then picks the live
  allocation, which is how a dma_unmap_sg (it records only physical
  addresses) finds its dma_map_sg even when one buffer is mapped twice;
* identity maps (paddr == iova, e.g. the 16 MiB ISA window at IOVA 0) and
  calls that never reached an IOMMU (dma_addr == phys_addr) are recognised
  and skipped.

Without dma: events (Linux 6.1 and older) the whole trace is one domain,
and allocations are recovered from the map lines alone: a map line
continues the open allocation of its task and irq context when it starts
where that allocation's last line ended and stays inside its known extent
(the size of the first later unmap line starting where it starts);
otherwise -- or when a later unmap line starts exactly at it -- it starts a
new allocation at its address. A range never unmapped has the extent of its
contiguous map lines.

Either way an allocation in task context whose first map line follows
lines of an interrupt that hit the same task carries that interrupt's
place (Op.block): the allocation may have come before the interrupt's
work. The ordering engine lets the record decide (engine.py).
"""
from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter, deque
from typing import Any

from .. import errors
from .engine import ALLOC, FREE, Op
from .parse import Trace, gc_paused, iter_events

__all__ = ["Allocation", "DeviceLifetimes", "Lifetimes", "Builder", "build_lifetimes",
           "ALL_DEVICES", "ALLOC_CALLS", "FREE_CALLS", "TraceDevice", "looks_pci"]

ALL_DEVICES = "(all)"     # the device name used when no dma: event names one
U64_MAX = (1 << 64) - 1

# dma: event -> (call, takes the coherent mask)
ALLOC_CALLS = {
    "dma_map_page": ("map_page", False),
    "dma_map_phys": ("map_phys", False),
    "dma_map_resource": ("map_resource", False),
    "dma_alloc": ("alloc", True),
    "dma_alloc_pages": ("alloc_pages", True),
    "dma_alloc_sgt": ("alloc_sgt", True),
    "dma_map_sg": ("map_sg", False),
}
_AFTER, _BEFORE = -1, 1
# dma: event -> on which side of its iommu:unmap line it is logged
FREE_CALLS = {
    "dma_unmap_page": _AFTER,
    "dma_unmap_phys": _AFTER,
    "dma_unmap_resource": _AFTER,
    "dma_free": _BEFORE,
    "dma_free_pages": _BEFORE,
    "dma_free_sgt": _BEFORE,
    "dma_unmap_sg": _BEFORE,
}
_SINGLE = ("map_page", "map_phys", "map_resource")
_COHERENT = ("alloc", "alloc_pages", "alloc_sgt")

# event kinds
_OTHER, _MAP, _UNMAP, _DMA_ALLOC, _DMA_FREE, _DMA_OTHER = range(6)
# (system, name) -> kind, for a trace with dma: events; other dma: events
# are _DMA_OTHER, other iommu: events _OTHER
_DMA_KINDS = dict([(("iommu", n), _OTHER) for n in ("io_page_fault", "add_device_to_group",
                                                      "remove_device_from_group",
                                                      "attach_device_to_domain",
                                                      "detach_device_from_domain")]
                  + [(("iommu", "map"), _MAP), (("iommu", "unmap"), _UNMAP)]
                  + [(("dma", n), _DMA_ALLOC) for n in ALLOC_CALLS]
                  + [(("dma", n), _DMA_FREE) for n in FREE_CALLS])

_PCI_NAME = re.compile(r"^[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$", re.A)
_EXAMPLES = 5             # line numbers kept per kind of skipped thing


def looks_pci(name):
    """Whether a device name is a PCI address (DDDD:BB:DD.F)."""
    return bool(_PCI_NAME.match(name))


class TraceDevice:
    """The device a cookie sees: a name, PCI or not, its bus limit."""

    __slots__ = ("name", "is_pci", "bus_dma_limit", "_hash")

    def __init__(self, name, is_pci, bus_dma_limit=0) -> None:
        self.name, self.is_pci, self.bus_dma_limit = name, is_pci, bus_dma_limit
        self._hash = hash((name, is_pci))       # asked at every allocation (sticky 32-bit)

    def __eq__(self, other):
        return isinstance(other, TraceDevice) and (self.name, self.is_pci) == \
            (other.name, other.is_pci)

    def __hash__(self):
        return self._hash

    def __reduce__(self):
        return (TraceDevice, (self.name, self.is_pci, self.bus_dma_limit))

    def __repr__(self) -> str:
        return "TraceDevice(%r, is_pci=%r)" % (self.name, self.is_pci)


class Allocation:
    """One IOVA allocation as the kernel made it.

    device      the device it was made for (ALL_DEVICES without dma: events)
    call        "map_page", "map_phys", "map_resource", "alloc", "alloc_pages",
                "alloc_sgt", "map_sg", or "iommu" (rebuilt from map lines)
    line        its place in the trace: its first iommu:map line
    dma_line    the dma: line that recorded it (None without dma: events)
    iova        the kernel's allocation (granule-aligned bytes)
    size        its length in bytes (granule multiple): what alloc and free take
    expected    the address the kernel recorded (dma_addr, keeping the
                buffer's offset in the page; for map_sg the first segment's)
    offset      expected - iova: the buffer's offset in the granule, which the
                kernel adds to the IOVA it allocated
    coherent    made through the coherent mask (dma_alloc*)
    mask        the device's DMA mask for this call, when known (else None)
    paddr       the physical address its first iommu:map line mapped (None
                when the line did not print one)
    dir         the DMA direction the dma: call named ("FROM_DEVICE"...), or None
    free_line   the iommu:unmap line that freed it (None: live at the end)
    inconsistent  its dma_addr does not lie in the map lines it was paired with
    """

    __slots__ = ("id", "device", "call", "line", "dma_line", "cpu", "ts", "pid", "irq", "iova",
                 "size", "expected", "offset", "coherent", "mask", "free_line", "free_cpu",
                 "free_ts", "inconsistent", "paddr", "dir")

    def __init__(self, id, device, call, first, dma_line, iova, size, expected, offset,
                 coherent=False, mask=None, inconsistent=False, paddr=None, dir=None) -> None:
        self.id, self.device, self.call = id, device, call
        self.line, self.cpu, self.ts = first.line, first.cpu, first.ts
        self.pid, self.irq = first.pid, first.irq
        self.paddr, self.dir = paddr, dir
        self.dma_line, self.iova, self.size = dma_line, iova, size
        self.expected, self.offset = expected, offset
        self.coherent, self.mask, self.inconsistent = coherent, mask, inconsistent
        self.free_line = self.free_cpu = self.free_ts = None

    @property
    def report_line(self):
        """The line a user looks at for this allocation: the dma: call if any."""
        return self.dma_line if self.dma_line is not None else self.line

    def to_dict(self):
        return {k: getattr(self, k) for k in ("id", "device", "call", "line", "dma_line", "cpu",
                                              "iova", "size", "expected", "coherent", "mask",
                                              "free_line", "inconsistent", "paddr", "dir")}

    def __repr__(self) -> str:
        return "<Allocation #%d %s %s line %d iova=%#x size=%#x expected=%#x%s>" % (
            self.id, self.device, self.call, self.line, self.iova, self.size, self.expected,
            "" if self.free_line is None else " freed line %d" % self.free_line)


class DeviceLifetimes:
    """What one device did. `allocations` and `ops` (engine.Op, in trace
    order) are filled only when the lifetimes are kept (build_lifetimes);
    a streaming replay only counts."""

    def __init__(self, name, is_pci, mask=None, coherent_mask=None) -> None:
        self.name = name
        self.is_pci = is_pci
        self.mask = mask
        self.coherent_mask = coherent_mask
        self.group = None
        self.calls = 0              # dma: map-type calls seen
        self.nallocs = 0
        self.allocations: list[Any] = []
        self.ops: list[Any] = []
        self.skipped: Counter[Any] = Counter()    # reason -> calls not replayed
        self.skipped_lines: list[Any] = []     # (line, reason), the first few
        self.tdev = TraceDevice(name, bool(is_pci))

    @property
    def domain(self):
        """Devices in one IOMMU group share a domain (and an IOVA space)."""
        return "group %d" % self.group if self.group is not None else self.name

    @property
    def skipped_total(self):
        return sum(self.skipped.values())

    def skip(self, line, reason) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_lines) < _EXAMPLES:
            self.skipped_lines.append((line, reason))

    def __repr__(self) -> str:
        return "<DeviceLifetimes %s: %d allocations, %d skipped>" % (
            self.name, self.nallocs, self.skipped_total)


class Lifetimes:
    """What a trace was turned into.

    devices        name -> DeviceLifetimes, in order of first appearance
    single_domain  True when no dma: event named a device
    counts         what was skipped or adjusted, by kind (see `examples`
                   for the first line numbers of each)
    notes          the same, as sentences for a report (after notes())
    """

    def __init__(self, trace, granule) -> None:
        self.trace = trace
        self.granule = granule
        self.devices: dict[Any, Any] = {}
        self.single_domain = False
        self.counts: Counter[Any] = Counter()
        self.examples: dict[Any, Any] = {}
        self.notes: list[Any] = []
        self.no_flags = 0

    def count(self, kind, line=None, n=1) -> None:
        self.counts[kind] += n
        if line is not None:
            ex = self.examples.setdefault(kind, [])
            if len(ex) < _EXAMPLES:
                ex.append(line)

    @property
    def allocations(self):
        return sum(d.nallocs for d in self.devices.values())

    def summary(self):
        return {"single_domain": self.single_domain, "granule": self.granule,
                "devices": list(self.devices), "allocations": self.allocations,
                "counts": dict(self.counts), "examples": dict(self.examples),
                "notes": list(self.notes), "trace": self.trace.summary()}

    def make_notes(self):
        """The counts as sentences (once the trace has been read)."""
        notes, c, tr = [], self.counts, self.trace

        def ex(kind) -> str:
            lines = self.examples.get(kind)
            return " (line %s)" % ", ".join(map(str, lines)) if lines else ""

        if self.single_domain and self.allocations:
            notes.append("no dma: event names a device: every iommu:map/unmap is treated as one "
                         "IOMMU domain, %s; allocations are rebuilt from the map and unmap lines"
                         % ALL_DEVICES)
        if self.no_flags:
            notes.append("%d lines carry no irq-info (flags) column (perf script, trace-cmd "
                         "report without -l): an interrupt taken between an allocation and its "
                         "map line cannot be recognised there" % self.no_flags)
        if tr.lost_events:
            notes.append("the trace lost %d events (line %s): exact replay is not possible"
                         % (tr.lost_events, ", ".join(map(str, tr.lost_lines[:_EXAMPLES]))))
        for kind, text in _COUNT_NOTES:
            if c.get(kind):
                notes.append("%d %s%s" % (c[kind], text, ex(kind)))
        if self.single_domain and c.get("remapped_while_live"):
            # one domain never maps a live IOVA again; two devices, each in
            # its own IOVA space, do all the time -- and map and unmap lines
            # alone do not say which device a line is for
            notes.append("an IOVA mapped while it is live is what two devices, each with its "
                         "own IOVA space, do: if several devices did DMA here, this trace "
                         "cannot be replayed as one domain; capture with dma: events (Linux "
                         "6.12 and later), which name the device")
        if tr.malformed:
            lines = [str(p.line) for p in tr.problems if p.kind == "malformed"][:_EXAMPLES]
            notes.append("%d malformed lines (line %s)" % (tr.malformed, ", ".join(lines)))
        if tr.unknown:
            notes.append("%d lines of other events (%s)" % (tr.unknown, ", ".join(
                "%s x%d" % kv for kv in tr.unknown_names.most_common(5))))
        self.notes = notes
        return notes

    def __repr__(self) -> str:
        return "<Lifetimes %d devices, %d allocations%s>" % (
            len(self.devices), self.allocations, " (one domain)" if self.single_domain else "")


_COUNT_NOTES = (
    ("identity_maps", "identity/direct maps skipped"),
    ("unattributed_maps", "iommu:map lines no traced DMA API call made, skipped"),
    ("maps_dropped", "maps dropped: their allocation's first iommu:map line is missing, so "
                     "their place in the allocator's order is unknown"),
    ("unknown_frees", "unmaps of mappings made before the trace began (or by no traced call), "
                      "skipped"),
    ("ambiguous_unmaps", "unmaps that no dma: call names and whose IOVA is live in several "
                         "domains, skipped"),
    ("frees_without_unmap", "dma: free calls with no iommu:unmap line"),
    ("remapped_while_live", "maps of an IOVA still live (a lost unmap?)"),
    ("length_disagreements", "unmaps whose length differs from the allocation's"),
    ("inconsistent_dma_addr", "dma: calls whose dma_addr lies outside their map lines"),
    ("dma_events_ignored", "dma: events after the first events had none: the trace is read as "
                           "one domain"),
)


def _lookup(table, name, default=None):
    if table is None:
        return default
    if isinstance(table, dict):
        return table.get(name, default)
    return table


class Builder:
    """Turns events, fed one at a time in file order, into operations:
    sink(device_lifetimes, op) is called for each, in trace order, once
    the events around it are known. How many events around it count is
    `window`; call finish() after the last event."""

    def __init__(self, lt, sink, *, page_size=4096, masks=None, coherent_masks=None, pci=None,
                 window=4096) -> None:
        granule = lt.granule
        if isinstance(granule, bool) or not isinstance(granule, int) or granule < 2 \
                or granule & (granule - 1):
            raise errors.IovaValueError("granule %r is not a power of two" % (granule,))
        self.lt, self.sink = lt, sink
        self.g, self.gmask = granule, granule - 1
        self.page = max(page_size, granule)
        self.masks = masks
        self.coherent_masks = masks if coherent_masks is None else coherent_masks
        self.pci = pci
        self.window = window
        self.groups: dict[Any, Any] = {}
        self.start: list[Any] = []             # events held until the kind of trace is known
        self.mode: Any = None
        self.nallocs = 0

    def feed(self, e) -> None:
        if self.mode is not None:
            self.mode.feed(e)
            return
        self.start.append(e)
        if e.system == "dma":
            self._choose(_DmaMode)
        elif len(self.start) >= self.window:
            self._choose(_MapsMode)

    def feed_many(self, events) -> None:
        """feed() for each of a list of events, with the same result: a
        mode that can takes them a batch at a time."""
        if self.mode is None:
            for i, e in enumerate(events):
                if self.mode is not None:
                    self.feed_many(events[i:])
                    return
                self.feed(e)
            return
        many = getattr(self.mode, "feed_many", None)
        if many is not None:
            many(events)
            return
        feed = self.mode.feed
        for e in events:
            feed(e)

    def finish(self) -> None:
        if self.mode is None:
            self._choose(_MapsMode)
        self.mode.finish()
        self.lt.make_notes()

    def _choose(self, mode) -> None:
        self.mode = mode(self)
        # from now on events go straight to it
        self.feed = self.mode.feed  # type: ignore[method-assign]
        start, self.start = self.start, []
        for e in start:
            self.mode.feed(e)

    # ---- shared helpers --------------------------------------------------------
    def up(self, x):
        return (x + self.gmask) & ~self.gmask

    def device(self, name):
        d = self.lt.devices.get(name)
        if d is None:
            pci = _lookup(self.pci, name)
            if pci is None:
                pci = name == ALL_DEVICES or looks_pci(name)
            d = DeviceLifetimes(name, bool(pci), _lookup(self.masks, name),
                                _lookup(self.coherent_masks, name))
            d.group = self.groups.get(name)
            self.lt.devices[name] = d
        return d

    def new_alloc(self, d, call, first, dma_line, iova, size, expected, coherent,
                  inconsistent=False, dir=None):
        mask = d.coherent_mask if coherent else d.mask
        a = Allocation(self.nallocs, d.name, call, first, dma_line, iova, size, expected,
                       expected & self.gmask, coherent, mask, inconsistent,
                       first.fields.get("paddr"), dir)
        self.nallocs += 1
        d.nallocs += 1
        return a

    def emit_alloc(self, d, a, block) -> None:
        self.sink(d, Op(ALLOC, a, d.tdev, a.line, a.ts, a.cpu if a.cpu is not None else 0,
                        a.pid, a.irq, block))

    def emit_free(self, d, a, e) -> None:
        a.free_line, a.free_cpu, a.free_ts = e.line, e.cpu, e.ts
        self.sink(d, Op(FREE, a, d.tdev, e.line, e.ts, e.cpu if e.cpu is not None else 0,
                        e.pid, e.irq))


class _Window:
    """The recent events, by absolute index (ev(i)); each CPU's sequence of
    them (for the interrupt lines just before a map line), and each
    context's -- CPU, task, irq-ness -- for the walks that pair lines
    logged near each other in one context (ctx[key] = [indices, the
    context position of the first]). An event carries its kind, its
    place in its CPU's sequence and in its context's (Event._k, _w, _c)."""

    def __init__(self, window) -> None:
        self.window = window
        self.evs: list[Any] = []               # events from absolute index `first` on
        self.first = 0
        self.seq: dict[Any, Any] = {}               # cpu -> [[indices], position of the first]
        # (cpu, pid, irq) -> [[indices], position of the first]
        self.ctx: dict[Any, Any] = {}
        self.n = 0

    def ev(self, i):
        return self.evs[i - self.first]

    def has(self, i):
        return self.first <= i < self.n

    def add(self, e, kind):
        i = self.n
        self.n = i + 1
        self.evs.append(e)
        e._k = kind
        cpu = e.cpu
        if cpu is None:
            cpu = -1
        s = self.seq.get(cpu)
        if s is None:
            s = self.seq[cpu] = [[], 0]
        lst = s[0]
        e._w = s[1] + len(lst)
        lst.append(i)
        key = (cpu, e.pid, e.irq)
        c = self.ctx.get(key)
        if c is None:
            c = self.ctx[key] = [[], 0]
        lst = c[0]
        e._c = c[1] + len(lst)
        lst.append(i)
        return i

    def forget(self, upto) -> None:
        """Drops events before absolute index `upto`."""
        upto = min(upto, self.n)
        if upto <= self.first:
            return
        del self.evs[:upto - self.first]
        self.first = upto
        for s in self.seq.values():
            k = bisect_left(s[0], upto)
            if k:
                del s[0][:k]
                s[1] += k
        for key in list(self.ctx):
            c = self.ctx[key]
            k = bisect_left(c[0], upto)
            if k == len(c[0]):
                del self.ctx[key]
            elif k:
                del c[0][:k]
                c[1] += k

    def block_before(self, i):
        """(cpu, pid, first line) of the interrupt lines of i's task logged
        just before i on its CPU (at most a window back), or None."""
        evs, first = self.evs, self.first
        e = evs[i - first]
        if e.irq:
            return None
        # The allocation and its map line are one call in one context: what
        # that context masks (the map line's flags) could not have come in
        # between. With interrupts off nothing could; with bottom halves off
        # no softirq could -- a line of one sits before the allocation, and
        # so does everything logged before it.
        mask = e.flags[:1]
        if mask in _IRQS_OFF:
            return None
        bh_off = mask in _BH_OFF
        s, base = self.seq[e.cpu if e.cpu is not None else -1]
        p = e._w - base - 1
        line = None
        # within a window before i, which the window always still holds (so
        # the answer does not depend on when old events were dropped)
        lowest = max(first, i - self.window)
        while p >= 0 and s[p] >= lowest:
            f = evs[s[p] - first]
            if not f.irq or f.pid != e.pid or (bh_off and f.flags[2:3] == "s"):
                break
            line = f.line
            p -= 1
        return None if line is None else (e.cpu if e.cpu is not None else 0, e.pid, line)


# The flags column's first character: interrupts off ("d"; "D": and bottom
# halves too), bottom halves off ("b"), or neither (".", or "X" where the
# kernel cannot tell).
_IRQS_OFF = frozenset("dD")
_BH_OFF = frozenset("b")


class _DmaMode:
    """Traces with dma: events: every dma: call is paired once the events
    `window` after it are read; every map/unmap line is settled (and its
    operations emitted, in order) once the events `window` after it could
    no longer pair with it."""

    def __init__(self, b) -> None:
        self.b = b
        self.lt = b.lt
        self.w = _Window(b.window)
        self.calls: deque[Any] = deque()        # dma: calls waiting for the events after them
        self.lines: deque[Any] = deque()        # map/unmap lines waiting to be settled
        self.claimed: set[Any] = set()
        self.paired: dict[Any, Any] = {}            # unmap index -> dma: free-call index
        self.alloc_at: dict[Any, Any] = {}          # map index -> [Allocation] starting there
        self.live: dict[Any, Any] = {}              # device -> {iova: Allocation}
        self.identity: dict[Any, Any] = {}          # iova -> iova_end of identity maps seen
        self.next_forget = 1024     # events added when the window next drops old ones

    def feed(self, e) -> None:
        k = _DMA_KINDS.get((e.system, e.name))
        if k is None:
            k = _OTHER if e.system == "iommu" else _DMA_OTHER
        if k == _OTHER:
            self._iommu_other(e)
            return
        if not e.flags:
            self.lt.no_flags += 1
        i = self.w.add(e, k)
        if k >= _DMA_ALLOC:
            if k != _DMA_OTHER:
                calls = self.calls
                calls.append(i)
                if len(calls) > 1 and i - calls[0] < self.w.window:
                    # the oldest call has not waited a window's worth, and
                    # the lines it holds back are as they were
                    return
        else:
            self.lines.append(i)
        self._progress(i)

    def feed_many(self, events) -> None:
        """Every event of the list added, then one progress step: pairing
        and settling later than feed() would, but -- the walks being bound
        to the window by index -- to the same effect. Events of no kind here
        (an IOMMU group's, say) first bring progress up to them, as feed()
        does."""
        w = self.w
        calls, lines = self.calls, self.lines
        add = w.add
        kinds = _DMA_KINDS
        lt = self.lt
        for e in events:
            k = kinds.get((e.system, e.name))
            if k is None:
                k = _OTHER if e.system == "iommu" else _DMA_OTHER
            if k == _OTHER:
                if w.n:
                    self._progress(w.n - 1)
                self._iommu_other(e)
                continue
            if not e.flags:
                lt.no_flags += 1
            i = add(e, k)
            if k >= _DMA_ALLOC:
                if k != _DMA_OTHER:
                    calls.append(i)
            else:
                lines.append(i)
        if w.n:
            self._progress(w.n - 1)

    def _iommu_other(self, e) -> None:
        f = e.fields
        if e.name == "add_device_to_group" and f.get("groupID") is not None:
            self.b.groups[f.get("device")] = f["groupID"]
            d = self.lt.devices.get(f.get("device"))
            if d is not None and d.group is None:
                d.group = f["groupID"]

    def finish(self) -> None:
        self._progress(None)

    def _progress(self, newest) -> None:
        """Pairs the calls that have waited a window's worth of events, then
        settles the lines no waiting call can pair any more; newest None:
        everything (the end of the trace)."""
        w = self.w
        win = w.window
        calls, lines = self.calls, self.lines
        final = newest is None
        if final:
            newest = w.n + win
        if calls and calls[0] + win <= newest:
            evs = w.evs
            while calls and calls[0] + win <= newest:
                i = calls.popleft()
                e = evs[i - w.first]
                if e._k == _DMA_ALLOC:
                    self._claim_maps(i, e)
                else:
                    self._pair_unmap(i, e)
        done = calls[0] if calls else newest + 1
        if lines and lines[0] + win < done:
            evs = w.evs
            while lines and lines[0] + win < done:
                j = lines.popleft()
                e = evs[j - w.first]
                if e._k == _MAP:
                    self._settle_map(j, e)
                else:
                    self._settle_unmap(j, e)
        if w.n >= self.next_forget and not final:
            self.next_forget = w.n + 1024
            # what a waiting call or line may still look at: a window back
            oldest = min(lines[0] if lines else w.n, calls[0] if calls else w.n)
            if oldest - win > 0:
                w.forget(oldest - win)

    # ---- a dma: call, with the events around it known ----------------------
    def _claim_maps(self, i, e) -> None:
        b, w = self.b, self.w
        f = e.fields
        call, coherent = ALLOC_CALLS[e.name]
        d = b.device(f["device"])
        d.calls += 1
        gmask = b.gmask
        if call == "map_sg":
            addrs, sizes = f["dma_addrs"], f["sizes"]
            if not addrs:
                d.skip(e.line, "maps no segment")
                return
            expected = addrs[0]
            lo = expected & ~gmask
            size = None
            if not f.get("truncated") and len(sizes) == len(addrs):
                # segments are laid back to back, each rounded to the
                # granule; the last one ends the allocation
                size = b.up(addrs[-1] + sizes[-1]) - lo
        else:
            expected = f["dma_addr"]
            if call in _COHERENT:
                if expected == 0:
                    d.skip(e.line, "the allocation failed (dma_addr=0)")
                    return
                size = b.up(-(-f["size"] // b.page) * b.page)
            else:
                if expected == U64_MAX:
                    d.skip(e.line, "the mapping failed (DMA_MAPPING_ERROR)")
                    return
                size = b.up((expected & gmask) + f["size"])
            lo = expected & ~gmask
        if size == 0:
            d.skip(e.line, "zero length")
            return
        hi = None if size is None else lo + size
        inside, loose = [], []
        ev, claimed = w.ev, self.claimed
        evs, base = w.evs, w.first
        # the map lines logged before it in its context (CPU, task,
        # irq-ness), within the window, back to the previous call there
        lst, pos = w.ctx[(e.cpu if e.cpu is not None else -1, e.pid, e.irq)]
        p = e._c - pos - 1
        lowest = max(i - w.window, base)
        while p >= 0:
            j = lst[p]
            if j < lowest:
                break
            m = evs[j - base]
            k = m._k
            if k >= _DMA_ALLOC:
                break                      # the previous call of this context
            if k == _MAP and j not in claimed:
                m = m.fields
                if lo <= m["iova"] and (hi is None or m["iova_end"] <= hi):
                    inside.append(j)
                else:
                    loose.append(j)
            p -= 1
        inconsistent = False
        if not inside:
            if not loose:
                self._skip_unmapped(d, e, call, expected)
                return
            # its dma_addr disagrees with the map lines its call made: keep
            # the kernel's placement, report the recorded address
            inside, inconsistent = loose, True
            self.lt.count("inconsistent_dma_addr", e.line)
        for j in inside:
            claimed.add(j)
        first = min(inside)
        iova = min(ev(j).fields["iova"] for j in inside) if inconsistent else lo
        if size is None:
            size = b.up(max(ev(j).fields["iova_end"] for j in inside) - iova)
        a = b.new_alloc(d, call, ev(first), e.line, iova, size, expected, coherent,
                        inconsistent, f.get("dir"))
        self.alloc_at.setdefault(first, []).append(a)

    def _skip_unmapped(self, d, e, call, expected) -> None:
        if call in _SINGLE and e.phys_addr == expected:
            reason = "direct (dma_addr == phys_addr: no IOMMU translation)"
        elif call == "map_sg" and e.phys_addrs and e.phys_addrs[0] == expected:
            reason = "direct (dma_addr == phys_addr: no IOMMU translation)"
        else:
            reason = "no iommu:map line for it"
            self.lt.count("maps_dropped", e.line)
        d.skip(e.line, reason)

    def _pair_unmap(self, i, e) -> None:
        w, paired = self.w, self.paired
        first = FREE_CALLS[e.name]
        addr = e.fields.get("dma_addr")
        evs, base = w.evs, w.first
        # the unmap lines next to it in its context (CPU, task, irq-ness),
        # within the window, up to the next call there: on the side the
        # call is logged first, then the other
        lst, pos = w.ctx[(e.cpu if e.cpu is not None else -1, e.pid, e.irq)]
        lowest, highest = max(i - w.window, base), i + w.window
        n = len(lst)
        for step in (first, -first):
            p = e._c - pos + step
            while 0 <= p < n:
                j = lst[p]
                if j < lowest or j > highest:
                    break
                u = evs[j - base]
                k = u._k
                if k >= _DMA_ALLOC:
                    break
                if k == _UNMAP and j not in paired:
                    f = u.fields
                    if addr is None or f["iova"] <= addr < f["iova_end"] or addr == f["iova"]:
                        paired[j] = i
                        return
                p += step
        self.b.device(e.fields["device"])
        self.lt.count("frees_without_unmap", e.line)

    # ---- a map or unmap line, settled ------------------------------------------
    def _settle_map(self, j, e) -> None:
        lt = self.lt
        starts = self.alloc_at.pop(j, None)
        if starts:
            b = self.b
            block = self.w.block_before(j)
            for a in starts:
                space = self.live.get(a.device)
                if space is None:
                    space = self.live[a.device] = {}
                if a.iova in space:
                    # its unmap was never seen (lost, or the trace
                    # mixes domains): the old one stays allocated
                    lt.count("remapped_while_live", e.line)
                space[a.iova] = a
                d = lt.devices[a.device]
                b.sink(d, Op(ALLOC, a, d.tdev, a.line, a.ts, a.cpu if a.cpu is not None else 0,
                             a.pid, a.irq, block))
            self.claimed.discard(j)
            return
        if j not in self.claimed:
            f = e.fields
            if f.get("paddr") is not None and f["paddr"] == f["iova"]:
                self.identity[f["iova"]] = f["iova_end"]
                lt.count("identity_maps", e.line)
            else:
                lt.count("unattributed_maps", e.line)
        self.claimed.discard(j)

    def _settle_unmap(self, j, e) -> None:
        w, b, lt = self.w, self.b, self.lt
        f = e.fields
        if self.identity and self.identity.get(f["iova"]) == f["iova_end"]:
            lt.count("identity_unmaps", e.line)
            self.paired.pop(j, None)
            return
        iova = f["iova"]
        i = self.paired.pop(j, None)
        if i is not None:
            dev = w.ev(i).fields["device"] if w.has(i) else None
        else:
            dev = None
        if dev is None:
            owners = [name for name, space in self.live.items() if iova in space]
            if len(owners) != 1:
                lt.count("ambiguous_unmaps" if owners else "unknown_frees", e.line)
                return
            dev = owners[0]
            lt.count("unmaps_attributed_by_address", e.line)
        space = self.live.get(dev)
        a = space.pop(iova, None) if space is not None else None
        if a is None:
            lt.count("unknown_frees", e.line)
            return
        if b.up(f["size"]) != a.size:
            lt.count("length_disagreements", e.line)
        d = lt.devices[dev]
        cpu = e.cpu
        a.free_line, a.free_cpu, a.free_ts = e.line, cpu, e.ts
        b.sink(d, Op(FREE, a, d.tdev, e.line, e.ts, cpu if cpu is not None else 0, e.pid, e.irq))


class _Open:
    """An allocation being rebuilt from map lines (no dma: events)."""
    __slots__ = ("first", "start", "end", "last", "extent", "ready", "block", "alloc", "phys")

    def __init__(self, first, start, end, last, extent, block, phys) -> None:
        self.first, self.start, self.end, self.last = first, start, end, last
        self.extent, self.block = extent, block
        self.ready = extent is not None     # its size is known already
        self.alloc = None
        self.phys = phys                    # its last line's physical range, or None


def _phys(f):
    """A map line's physical range [paddr, paddr + size), or None."""
    p = f.get("paddr")
    return None if p is None else (p, p + f["iova_end"] - f["iova"])


def _next_chunk(prev, cur):
    """Whether a map line mapping `cur` can be the chunk that follows one
    mapping `prev` in one call. The IOMMU core logs one map line per
    physically contiguous run of a call (a scatterlist's segments, a
    dma_alloc's pages), so the next run never starts where the last one
    ended; nor does it map the last one's pages again -- two small buffers
    in one page mapped one after the other (network receive buffers) do."""
    if prev is None or cur is None:
        return True
    return cur[0] != prev[1] and (cur[1] <= prev[0] or cur[0] >= prev[1])


class _MapsMode:
    """Traces without dma: events: one domain, allocations rebuilt from the
    map and unmap lines, each line settled once the `window` events after
    it (the later unmap lines that say where allocations start and how
    long they are) have been read."""

    def __init__(self, b) -> None:
        self.b = b
        self.lt = b.lt
        self.lt.single_domain = True
        self.d = None               # ALL_DEVICES, once something is allocated
        self.w = _Window(b.window)
        self.waiting: deque[Any] = deque()      # map/unmap indices not yet settled
        # iova -> deque of (index, size) of unmaps read, unsettled
        self.unmaps_ahead: dict[Any, Any] = {}
        # (cpu, pid, irq) -> _Open that map lines may extend
        self.open: dict[Any, Any] = {}
        self.live: dict[Any, Any] = {}              # iova -> _Open
        # (_Open, None) allocations and (_Open, event) frees, in order
        self.out: deque[Any] = deque()
        self.identity: dict[Any, Any] = {}

    def feed(self, e) -> None:
        if e.system != "iommu":
            if e.system == "dma":
                self.lt.count("dma_events_ignored", e.line)
            return
        if e.name == "map":
            k = _MAP
        elif e.name == "unmap":
            k = _UNMAP
        else:
            return
        if not e.flags:
            self.lt.no_flags += 1
        w = self.w
        i = w.add(e, k)
        self.waiting.append(i)
        if k == _UNMAP:
            self.unmaps_ahead.setdefault(e.fields["iova"], deque()).append(
                (i, e.fields["iova_end"] - e.fields["iova"]))
        while self.waiting and self.waiting[0] + w.window <= i:
            self._settle(self.waiting.popleft())
        if (i & 1023) == 0 and self.waiting:
            w.forget(self.waiting[0] - w.window)

    def finish(self) -> None:
        while self.waiting:
            self._settle(self.waiting.popleft())
        for o in self.open.values():
            o.ready = True
        self._flush()

    def _later_unmap(self, iova, after):
        """The size of the first unmap line read after index `after` that
        starts at iova, or None."""
        q = self.unmaps_ahead.get(iova)
        if q:
            for i, size in q:
                if i > after:
                    return size
        return None

    def _settle(self, j) -> None:
        w, lt = self.w, self.lt
        e = w.ev(j)
        f = e.fields
        iova = f["iova"]
        if e._k == _UNMAP:
            q = self.unmaps_ahead.get(iova)
            if q:
                q.popleft()
                if not q:
                    del self.unmaps_ahead[iova]
            if self.identity.get(iova) == f["iova_end"]:
                lt.count("identity_unmaps", e.line)
                return
            o = self.live.pop(iova, None)
            if o is None:
                lt.count("unknown_frees", e.line)
                return
            o.ready = True          # no map line extends it any more
            for ctx in [c for c, x in self.open.items() if x is o]:
                del self.open[ctx]
            self.out.append((o, e))
        elif f.get("paddr") is not None and f["paddr"] == iova:
            self.identity[iova] = f["iova_end"]
            lt.count("identity_maps", e.line)
            return
        else:
            self._map_line(j, e, f, iova)
        # an allocation of unknown extent that no line has extended for a
        # window's worth of events is as long as it will get
        out = self.out
        if out and not out[0][0].ready and out[0][0].last + w.window < j:
            out[0][0].ready = True
        self._flush()

    def _map_line(self, j, e, f, iova) -> None:
        ctx = (e.cpu, e.pid, e.irq)
        o = self.open.get(ctx)
        if o is not None and iova == o.end:
            if o.extent is not None:
                goes_on = f["iova_end"] <= o.start + o.extent
            else:
                # never unmapped: contiguous lines are one call, unless a
                # later unmap starts right here, or the line cannot be the
                # next chunk of one call (another allocation)
                goes_on = self._later_unmap(iova, j) is None and \
                    _next_chunk(o.phys, _phys(f))
            if goes_on:
                o.end, o.last, o.phys = f["iova_end"], j, _phys(f)
                return
        if o is not None:
            o.ready = True
        o = _Open(e, iova, f["iova_end"], j, self._later_unmap(iova, j), self.w.block_before(j),
                  _phys(f))
        self.open[ctx] = o
        if iova in self.live:
            self.lt.count("remapped_while_live", e.line)
        self.live[iova] = o
        self.out.append((o, None))

    def _flush(self) -> None:
        """Emits, in order, the allocations whose size is settled and the
        frees behind them."""
        out, b = self.out, self.b
        d = self.d
        if d is None and out:
            d = self.d = b.device(ALL_DEVICES)
        while out and out[0][0].ready:
            o, unmap = out.popleft()
            if unmap is None:
                size = b.up(o.extent if o.extent is not None else o.end - o.start)
                o.alloc = b.new_alloc(d, "iommu", o.first, None, o.start, size, o.start, False)
                b.emit_alloc(d, o.alloc, o.block)
            else:
                f = unmap.fields
                if b.up(f["iova_end"] - f["iova"]) != o.alloc.size:
                    self.lt.count("length_disagreements", unmap.line)
                b.emit_free(d, o.alloc, unmap)


def build_lifetimes(trace, *, granule=4096, page_size=4096, masks=None, coherent_masks=None,
                    pci=None, window=4096):
    """Every device's allocations and operations, kept in memory (for a
    look at them; replay and check stream instead).

    trace           a Trace, or anything read_trace accepts (path, file, lines)
    granule         the IOMMU domain's granule (bytes)
    page_size       the CPU page size (dma_alloc rounds to it first)
    masks           the devices' DMA masks: {name: mask}, or one mask for all;
                    unknown devices keep None (replay's default then applies)
    coherent_masks  the same for dma_alloc* (default: `masks`, as most drivers
                    set both with dma_set_mask_and_coherent)
    pci             {name: bool} or one bool; default: PCI-address names are PCI
    window          how many events around a line are looked at to pair it
    """
    if isinstance(trace, Trace):
        info, events = trace, trace.events
    else:
        info = Trace(trace if isinstance(trace, str) else None)
        events = iter_events(trace, info)
    lt = Lifetimes(info, granule)

    def keep(d, op) -> None:
        if op.kind == ALLOC:
            d.allocations.append(op.a)
        d.ops.append(op)

    b = Builder(lt, keep, page_size=page_size, masks=masks, coherent_masks=coherent_masks,
                pci=pci, window=window)
    with gc_paused():
        for e in events:
            b.feed(e)
        b.finish()
    return lt
