"""Events -> the allocation and free operations each IOVA domain saw, in
the order its allocator saw them (trace-formats.md §4f).

The iommu: events say what was mapped where but not for whom; the dma:
events (6.12+) name the device and the call but are logged on the wrong
side of the work they describe. So:

* an allocation is the dma: map-type call (dma_map_page/_phys/_resource,
  dma_alloc/_pages/_sgt, dma_map_sg) together with the iommu:map lines it
  caused: the same CPU and task context, logged before it, inside its
  IOVA range. It takes its place in allocator order at the first of those
  map lines -- the allocation happened just before that line;
* a free is an iommu:unmap line; the dma: free-type call next to it
  (after it for dma_unmap_page/_phys/_resource, before it for dma_free*
  and dma_unmap_sg) names the device. The unmap line's IOVA then picks the
  live allocation, which is how a dma_unmap_sg (it records only physical
  addresses) finds its dma_map_sg even when one buffer is mapped twice;
* an interrupt taken between a task's allocation and its first map line
  logs its own work first, under the task's pid with the irq flag set.
  Everything such an interrupt did is moved after the task's allocation;
* identity maps (paddr == iova, e.g. the 16 MiB ISA window at IOVA 0)
  and calls that never reached an IOMMU (dma_addr == phys_addr) are
  recognised and skipped.

Without any dma: events the whole trace is one domain: allocations are
rebuilt from map lines and the unmap lines that cover them.
"""
import re
from collections import Counter

from .parse import Trace, gc_paused, read_trace

__all__ = ["Allocation", "DeviceLifetimes", "Lifetimes", "build_lifetimes", "ALL_DEVICES",
           "ALLOC_CALLS", "FREE_CALLS"]

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

_PCI_NAME = re.compile(r"^[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_EXAMPLES = 5             # line numbers kept per kind of skipped thing


def looks_pci(name):
    """Whether a device name is a PCI address (DDDD:BB:DD.F)."""
    return bool(_PCI_NAME.match(name))


class Allocation:
    """One IOVA allocation as the kernel made it.

    device      the device it was made for (ALL_DEVICES without dma: events)
    call        "map_page", "map_phys", "map_resource", "alloc", "alloc_pages",
                "alloc_sgt", "map_sg", or "iommu" (rebuilt from map lines)
    line        its place in allocator order: the first iommu:map line of it
    dma_line    the dma: line that recorded it (None without dma: events)
    iova        the kernel's allocation (granule-aligned bytes)
    size        its length in bytes (granule multiple): what alloc and free take
    expected    the address the kernel recorded (dma_addr, keeping the
                buffer's offset in the page; for map_sg the first segment's)
    offset      expected - iova: the buffer's offset in the granule, which the
                kernel adds to the IOVA it allocated
    coherent    made through the coherent mask (dma_alloc*)
    mask        the device's DMA mask for this call, when known (else None)
    free_line   the iommu:unmap line that freed it (None: live at the end)
    inconsistent  its dma_addr does not lie in the map lines it was paired with
    """

    __slots__ = ("id", "device", "call", "line", "dma_line", "cpu", "ts", "pid", "irq", "iova",
                 "size", "expected", "offset", "coherent", "mask", "free_line", "free_cpu",
                 "free_ts", "inconsistent", "alloc_key", "free_key")

    def __init__(self, id, device, call, first, dma_line, iova, size, expected, offset,
                 coherent=False, mask=None, inconsistent=False):
        self.id, self.device, self.call = id, device, call
        self.line, self.cpu, self.ts = first.line, first.cpu, first.ts
        self.pid, self.irq = first.pid, first.irq
        self.dma_line, self.iova, self.size = dma_line, iova, size
        self.expected, self.offset = expected, offset
        self.coherent, self.mask, self.inconsistent = coherent, mask, inconsistent
        self.free_line = self.free_cpu = self.free_ts = None
        self.alloc_key = (self.line, 0, self.line, 0)
        self.free_key = None

    @property
    def report_line(self):
        """The line a user looks at for this allocation: the dma: call if any."""
        return self.dma_line if self.dma_line is not None else self.line

    def to_dict(self):
        return {k: getattr(self, k) for k in ("id", "device", "call", "line", "dma_line", "cpu",
                                              "iova", "size", "expected", "coherent", "mask",
                                              "free_line", "inconsistent")}

    def __repr__(self):
        return "<Allocation #%d %s %s line %d iova=%#x size=%#x expected=%#x%s>" % (
            self.id, self.device, self.call, self.line, self.iova, self.size, self.expected,
            "" if self.free_line is None else " freed line %d" % self.free_line)


class DeviceLifetimes:
    """What one device did: its allocations and, in allocator order, `ops`
    -- (key, kind, Allocation) with kind "alloc" or "free"."""

    def __init__(self, name, is_pci, mask=None, coherent_mask=None):
        self.name = name
        self.is_pci = is_pci
        self.mask = mask
        self.coherent_mask = coherent_mask
        self.group = None
        self.calls = 0              # dma: map-type calls seen
        self.allocations = []
        self.ops = []
        self.skipped = Counter()    # reason -> calls not replayed
        self.skipped_lines = []     # (line, reason), the first few

    @property
    def domain(self):
        """Devices in one IOMMU group share a domain (and an IOVA space)."""
        return "group %d" % self.group if self.group is not None else self.name

    @property
    def skipped_total(self):
        return sum(self.skipped.values())

    def skip(self, line, reason):
        self.skipped[reason] += 1
        if len(self.skipped_lines) < _EXAMPLES:
            self.skipped_lines.append((line, reason))

    def __repr__(self):
        return "<DeviceLifetimes %s: %d allocations, %d ops, %d skipped>" % (
            self.name, len(self.allocations), len(self.ops), self.skipped_total)


class Lifetimes:
    """A trace turned into per-device operations.

    devices        name -> DeviceLifetimes, in order of first appearance
    single_domain  True when no dma: event named a device
    counts         what was skipped or adjusted, by kind (see `examples`
                   for the first line numbers of each)
    notes          the same, as sentences for a report
    """

    def __init__(self, trace, granule):
        self.trace = trace
        self.granule = granule
        self.devices = {}
        self.single_domain = False
        self.counts = Counter()
        self.examples = {}
        self.notes = []

    def count(self, kind, line=None, n=1):
        self.counts[kind] += n
        if line is not None:
            ex = self.examples.setdefault(kind, [])
            if len(ex) < _EXAMPLES:
                ex.append(line)

    @property
    def allocations(self):
        return sum(len(d.allocations) for d in self.devices.values())

    def summary(self):
        return {"single_domain": self.single_domain, "granule": self.granule,
                "devices": list(self.devices), "allocations": self.allocations,
                "counts": dict(self.counts), "examples": dict(self.examples),
                "notes": list(self.notes), "trace": self.trace.summary()}

    def __repr__(self):
        return "<Lifetimes %d devices, %d allocations%s>" % (
            len(self.devices), self.allocations, " (one domain)" if self.single_domain else "")


def _alloc_key(a):
    return a.alloc_key


def _op_key(op):
    return op[0]


def _lookup(table, name, default=None):
    if table is None:
        return default
    if isinstance(table, dict):
        return table.get(name, default)
    return table


class _Builder:
    def __init__(self, trace, granule, page_size, masks, coherent_masks, pci, window):
        if isinstance(granule, bool) or not isinstance(granule, int) or granule < 2 \
                or granule & (granule - 1):
            raise ValueError("granule %r is not a power of two" % (granule,))
        self.trace = trace
        self.g = granule
        self.gmask = granule - 1
        self.page = max(page_size, granule)
        self.masks, self.coherent_masks, self.pci = masks, coherent_masks, pci
        self.window = window
        self.lt = Lifetimes(trace, granule)
        ev = self.events = trace.events
        n = len(ev)
        self.kind = kind = [_OTHER] * n
        self.seq = seq = {}
        self.where = where = [0] * n
        self.groups = {}
        self.no_flags = 0
        # indices of the events each pass needs, in file order
        self.maps_unmaps, self.alloc_calls, self.free_calls = [], [], []
        for i, e in enumerate(ev):
            name = e.name
            if e.system == "iommu":
                if name == "map":
                    k = _MAP
                elif name == "unmap":
                    k = _UNMAP
                else:
                    f = e.fields
                    if name == "add_device_to_group" and f.get("groupID") is not None:
                        self.groups[f.get("device")] = f["groupID"]
                    continue
                self.maps_unmaps.append(i)
            elif name in ALLOC_CALLS:
                k = _DMA_ALLOC
                self.alloc_calls.append(i)
            elif name in FREE_CALLS:
                k = _DMA_FREE
                self.free_calls.append(i)
            else:
                k = _DMA_OTHER
            kind[i] = k
            if not e.flags:
                self.no_flags += 1
            cpu = e.cpu if e.cpu is not None else -1
            s = seq.get(cpu)
            if s is None:
                s = seq[cpu] = []
            where[i] = len(s)
            s.append(i)
        self.claimed = [False] * n
        self.paired = {}            # unmap index -> dma: free-call index
        self.alloc_at = {}          # map index -> [Allocation] starting there
        self.free_at = {}           # unmap index -> Allocation freed there
        self.identity = {}          # iova -> iova_end of identity maps seen
        self.allocs = []

    # ---- helpers --------------------------------------------------------
    def down(self, x):
        return x & ~self.gmask

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

    def walk(self, i, step):
        """Indices of the events logged in i's context (CPU, task, irq-ness),
        going away from i in direction `step`, up to a dma: call of that
        context (included, so callers see where their search ends)."""
        ev = self.events
        e = ev[i]
        s = self.seq[e.cpu if e.cpu is not None else -1]
        p = self.where[i] + step
        if step < 0:
            stop = p - self.window
            if stop < -1:
                stop = -1
        else:
            stop = p + self.window
            if stop > len(s):
                stop = len(s)
        pid, irq = e.pid, e.irq
        out = []
        kind = self.kind
        while p != stop:
            j = s[p]
            f = ev[j]
            if f.pid == pid and f.irq == irq:
                out.append(j)
                if kind[j] >= _DMA_ALLOC:
                    break
            p += step
        return out

    def new_alloc(self, dev, call, first, dma_line, iova, size, expected, coherent,
                  inconsistent=False):
        d = self.device(dev)
        mask = d.coherent_mask if coherent else d.mask
        # the sub-granule offset the kernel adds to the IOVA it allocated
        a = Allocation(len(self.allocs), dev, call, self.events[first], dma_line, iova, size,
                       expected, expected & self.gmask, coherent, mask, inconsistent)
        self.allocs.append(a)
        self.alloc_at.setdefault(first, []).append(a)
        d.allocations.append(a)
        return a

    # ---- with dma: events -----------------------------------------------
    def claim_maps(self):
        ev, kind, claimed = self.events, self.kind, self.claimed
        gmask, up, page = self.gmask, self.up, self.page
        for i in self.alloc_calls:
            e = ev[i]
            f = e.fields
            call, coherent = ALLOC_CALLS[e.name]
            dev = f["device"]
            d = self.lt.devices.get(dev) or self.device(dev)
            d.calls += 1
            if call == "map_sg":
                addrs, sizes = f["dma_addrs"], f["sizes"]
                if not addrs:
                    d.skip(e.line, "maps no segment")
                    continue
                expected = addrs[0]
                lo = expected & ~gmask
                size = None
                if not f.get("truncated") and len(sizes) == len(addrs):
                    # segments are laid back to back, each rounded to the
                    # granule; the last one ends the allocation
                    size = up(addrs[-1] + sizes[-1]) - lo
            else:
                expected = f["dma_addr"]
                if call in _COHERENT:
                    if expected == 0:
                        d.skip(e.line, "the allocation failed (dma_addr=0)")
                        continue
                    size = up(-(-f["size"] // page) * page)
                else:
                    if expected == U64_MAX:
                        d.skip(e.line, "the mapping failed (DMA_MAPPING_ERROR)")
                        continue
                    size = up((expected & gmask) + f["size"])
                lo = expected & ~gmask
            if size == 0:
                d.skip(e.line, "zero length")
                continue
            hi = None if size is None else lo + size
            inside, loose = [], []
            for j in self.walk(i, -1):
                k = kind[j]
                if k >= _DMA_ALLOC:
                    break                      # the previous call of this context
                if k == _MAP and not claimed[j]:
                    m = ev[j].fields
                    if lo <= m["iova"] and (hi is None or m["iova_end"] <= hi):
                        inside.append(j)
                    else:
                        loose.append(j)
            inconsistent = False
            if not inside:
                if not loose:
                    self.skip_unmapped(d, e, call, expected)
                    continue
                # its dma_addr disagrees with the map lines its call made:
                # keep the kernel's placement, report the recorded address
                inside, inconsistent = loose, True
                self.lt.count("inconsistent_dma_addr", e.line)
            for j in inside:
                claimed[j] = True
            first = min(inside)
            iova = min(ev[j].fields["iova"] for j in inside) if inconsistent else lo
            if size is None:
                size = up(max(ev[j].fields["iova_end"] for j in inside) - iova)
            self.new_alloc(dev, call, first, e.line, iova, size, expected, coherent,
                           inconsistent)

    def skip_unmapped(self, d, e, call, expected):
        if call in _SINGLE and e.phys_addr == expected:
            reason = "direct (dma_addr == phys_addr: no IOMMU translation)"
        elif call == "map_sg" and e.phys_addrs and e.phys_addrs[0] == expected:
            reason = "direct (dma_addr == phys_addr: no IOMMU translation)"
        else:
            reason = "no iommu:map line for it"
        d.skip(e.line, reason)

    def pair_unmaps(self):
        ev, kind, paired = self.events, self.kind, self.paired
        for i in self.free_calls:
            e = ev[i]
            first = FREE_CALLS[e.name]
            addr = e.fields.get("dma_addr")
            found = None
            for step in (first, -first):
                for j in self.walk(i, step):
                    k = kind[j]
                    if k >= _DMA_ALLOC:
                        break
                    if k == _UNMAP and j not in paired:
                        f = ev[j].fields
                        if addr is None or f["iova"] <= addr < f["iova_end"] \
                                or addr == f["iova"]:
                            found = j
                            break
                if found is not None:
                    break
            if found is not None:
                paired[found] = i
            else:
                self.device(e.fields["device"])
                self.lt.count("frees_without_unmap", e.line)

    def identity_maps(self):
        ev, kind, claimed = self.events, self.kind, self.claimed
        for j in self.maps_unmaps:
            if kind[j] == _MAP and not claimed[j]:
                f = ev[j].fields
                if f.get("paddr") is not None and f["paddr"] == f["iova"]:
                    claimed[j] = True
                    self.identity[f["iova"]] = f["iova_end"]
                    self.lt.count("identity_maps", ev[j].line)

    def is_identity_unmap(self, f):
        return self.identity.get(f["iova"]) == f["iova_end"]

    def live_pass(self):
        ev, kind, claimed, alloc_at, paired = (self.events, self.kind, self.claimed,
                                               self.alloc_at, self.paired)
        count = self.lt.count
        live = {}
        for idx in self.maps_unmaps:
            e = ev[idx]
            if kind[idx] == _MAP:
                starts = alloc_at.get(idx)
                if starts:
                    for a in starts:
                        space = live.get(a.device)
                        if space is None:
                            space = live[a.device] = {}
                        if a.iova in space:
                            # its unmap was never seen (lost, or the trace
                            # mixes domains): the old one stays allocated
                            count("remapped_while_live", e.line)
                        space[a.iova] = a
                if not claimed[idx]:
                    count("unattributed_maps", e.line)
                continue
            f = e.fields
            if self.identity and self.is_identity_unmap(f):
                count("identity_unmaps", e.line)
                continue
            iova = f["iova"]
            i = paired.get(idx)
            if i is not None:
                dev = ev[i].fields["device"]
            else:
                owners = [d for d, space in live.items() if iova in space]
                if len(owners) != 1:
                    count("ambiguous_unmaps" if owners else "unknown_frees", e.line)
                    continue
                dev = owners[0]
                count("unmaps_attributed_by_address", e.line)
            space = live.get(dev)
            a = space.pop(iova, None) if space is not None else None
            if a is None:
                count("unknown_frees", e.line)
                continue
            self.set_free(a, idx, e)

    def set_free(self, a, idx, e):
        f = e.fields
        if self.up(f["size"]) != a.size:
            self.lt.count("length_disagreements", e.line)
        a.free_line, a.free_cpu, a.free_ts = e.line, e.cpu, e.ts
        a.free_key = (e.line, 0, e.line, 1)
        self.free_at[idx] = a

    # ---- without dma: events ----------------------------------------------
    def single_domain(self):
        ev, kind = self.events, self.kind
        self.lt.single_domain = True
        self.device(ALL_DEVICES)
        live = {}                      # iova -> index of the map line
        for idx in self.maps_unmaps:
            e = ev[idx]
            f = e.fields
            if kind[idx] == _MAP:
                if f.get("paddr") is not None and f["paddr"] == f["iova"]:
                    self.identity[f["iova"]] = f["iova_end"]
                    self.lt.count("identity_maps", e.line)
                    continue
                if f["iova"] in live:
                    self.lt.count("remapped_while_live", e.line)
                live[f["iova"]] = idx
                continue
            if self.is_identity_unmap(f):
                self.lt.count("identity_unmaps", e.line)
                continue
            if f["iova"] not in live:
                self.lt.count("unknown_frees", e.line)
                continue
            # the unmap covers the whole allocation: gather its chunks
            got = []
            p, end = f["iova"], f["iova_end"]
            while p < end:
                j = live.pop(p, None)
                if j is None:
                    p += self.g
                else:
                    got.append(j)
                    p = max(ev[j].fields["iova_end"], p + 1)
            first = min(got)
            a = self.new_alloc(ALL_DEVICES, "iommu", first, None, f["iova"],
                               self.up(end - f["iova"]), f["iova"], False)
            self.set_free(a, idx, e)
        # still mapped at the end: chunks of one call are consecutive lines
        # of one context, each starting where the previous one ended
        groups = []
        last = {}
        for idx in sorted(live.values()):
            e = ev[idx]
            ctx = (e.cpu, e.pid, e.irq)
            g = last.get(ctx)
            if g is not None and ev[g[-1]].fields["iova_end"] == e.fields["iova"]:
                g.append(idx)
            else:
                g = [idx]
                groups.append(g)
            last[ctx] = g
        for g in groups:
            f0 = ev[g[0]].fields
            end = max(ev[j].fields["iova_end"] for j in g)
            self.new_alloc(ALL_DEVICES, "iommu", g[0], None, f0["iova"],
                           self.up(end - f0["iova"]), f0["iova"], False)

    # ---- common ---------------------------------------------------------
    def interrupts(self):
        """Work an interrupt logged just before a task's first map line is
        moved after that task's allocation."""
        ev, seq, where = self.events, self.seq, self.where
        for idx in sorted(self.alloc_at):
            e = ev[idx]
            if e.irq:
                continue
            anchor = e.line
            s = seq[e.cpu if e.cpu is not None else -1]
            p = where[idx] - 1
            block = []
            while p >= 0:
                j = s[p]
                f = ev[j]
                if not f.irq or f.pid != e.pid:
                    break
                block.append(j)
                p -= 1
            for j in reversed(block):
                line = ev[j].line
                for a in self.alloc_at.get(j, ()):
                    a.alloc_key = (anchor, 1, line, 0)
                    self.lt.count("irq_ops_moved", line)
                a = self.free_at.get(j)
                if a is not None:
                    a.free_key = (anchor, 1, line, 1)
                    self.lt.count("irq_ops_moved", line)

    def ops(self):
        # keys are unique: one allocation starts at a map line, one free
        # happens at an unmap line, and moved operations keep their own line
        for d in self.lt.devices.values():
            allocs = d.allocations
            allocs.sort(key=_alloc_key)
            ops = [(a.alloc_key, "alloc", a) for a in allocs]
            ops += [(a.free_key, "free", a) for a in allocs if a.free_key is not None]
            ops.sort(key=_op_key)
            d.ops = ops

    def notes(self):
        lt, c, tr = self.lt, self.lt.counts, self.trace
        notes = lt.notes

        def ex(kind):
            lines = lt.examples.get(kind)
            return " (line %s)" % ", ".join(map(str, lines)) if lines else ""

        if lt.single_domain:
            notes.append("no dma: event names a device: every iommu:map/unmap is treated as one "
                         "IOMMU domain, %s; expected addresses come from the map lines"
                         % ALL_DEVICES)
        if self.no_flags:
            notes.append("%d lines carry no irq-info (flags) column (perf script, trace-cmd "
                         "report without -l): an interrupt taken between an allocation and its "
                         "map line cannot be recognised there" % self.no_flags)
        if tr.lost_events:
            notes.append("the trace lost %d events (line %s): exact replay is not possible"
                         % (tr.lost_events, ", ".join(map(str, tr.lost_lines[:_EXAMPLES]))))
        for kind, text in (
                ("identity_maps", "identity/direct maps skipped"),
                ("unattributed_maps", "iommu:map lines no traced DMA API call made, skipped"),
                ("unknown_frees", "unmaps of mappings made before the trace began (or by "
                                  "no traced call), skipped"),
                ("ambiguous_unmaps", "unmaps that no dma: call names and whose IOVA is live "
                                     "in several domains, skipped"),
                ("frees_without_unmap", "dma: free calls with no iommu:unmap line"),
                ("remapped_while_live", "maps of an IOVA still live (a lost unmap?)"),
                ("length_disagreements", "unmaps whose length differs from the allocation's"),
                ("inconsistent_dma_addr", "dma: calls whose dma_addr lies outside their map "
                                          "lines"),
                ("irq_ops_moved", "interrupt operations moved after the allocation they "
                                  "interrupted")):
            if c.get(kind):
                notes.append("%d %s%s" % (c[kind], text, ex(kind)))
        if tr.malformed:
            lines = [str(p.line) for p in tr.problems if p.kind == "malformed"][:_EXAMPLES]
            notes.append("%d malformed lines (line %s)" % (tr.malformed, ", ".join(lines)))
        if tr.unknown:
            notes.append("%d lines of other events (%s)" % (tr.unknown, ", ".join(
                "%s x%d" % kv for kv in tr.unknown_names.most_common(5))))


def build_lifetimes(trace, *, granule=4096, page_size=4096, masks=None, coherent_masks=None,
                    pci=None, irq_reorder=True, window=4096):
    """Per-device operations in allocator order.

    trace           a Trace, or anything read_trace accepts (path, file, lines)
    granule         the IOMMU domain's granule (bytes)
    page_size       the CPU page size (dma_alloc rounds to it first)
    masks           the devices' DMA masks: {name: mask}, or one mask for all;
                    unknown devices keep None (replay's default then applies)
    coherent_masks  the same for dma_alloc* (default: `masks`, as most drivers
                    set both with dma_set_mask_and_coherent)
    pci             {name: bool} or one bool; default: PCI-address names are PCI
    irq_reorder     move interrupts' work after the allocation they interrupted
    window          how many events of one CPU to look through for a pairing
    """
    if not isinstance(trace, Trace):
        trace = read_trace(trace)
    if coherent_masks is None:
        coherent_masks = masks
    with gc_paused():
        return _build(trace, granule, page_size, masks, coherent_masks, pci, irq_reorder, window)


def _build(trace, granule, page_size, masks, coherent_masks, pci, irq_reorder, window):
    b = _Builder(trace, granule, page_size, masks, coherent_masks, pci, window)
    if b.alloc_calls or b.free_calls:
        b.claim_maps()
        b.pair_unmaps()
        b.identity_maps()
        b.live_pass()
    else:
        b.single_domain()
    if irq_reorder:
        b.interrupts()
    b.ops()
    b.notes()
    return b.lt
