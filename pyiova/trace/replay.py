"""A trace's allocations and frees run through a dma-iommu cookie.

replay(trace, policy=...)   "what if this device had run with another
                            allocator?": maps, frees, failures, peak use
check(trace)                does pyiova hand out exactly what the kernel
                            did? Every recorded dma_addr against pyiova's

Each IOVA domain (a device, or an IOMMU group when the trace shows one)
gets its own cookie, set up as dma-iommu sets up a DMA domain: the
granule, start pfn max(1, aperture_start >> shift), the aperture forced
(VT-d: 39 bits), and the reserved regions -- for VT-d the IOAPIC/MSI
window -- before the first allocation. Allocation and free go through
DmaCookie.alloc_iova/free_iova, so the limit rules, the PCI 32-bit-first
attempt and its sticky failure are the kernel's (kernel-iova-semantics.md
§7). The cookie's clock follows the trace's timestamps, so deferred work
(the rcache depot trim, a flush queue's timer) runs when it would have.
"""
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from .. import errors
from .._pyiova import lib
from ..cookie import DmaCookie
from .lifetimes import Lifetimes, build_lifetimes

__all__ = ["POLICIES", "VTD_RESERVED", "TraceDevice", "DeviceReplay", "ReplayResult",
           "DeviceCheck", "CheckResult", "replay", "check", "load"]

POLICIES = ("iova", "iova-lazy", "iova-tree", "wraparound", "reset-when-empty")
# VT-d reserves the IOAPIC/MSI window in every DMA domain
VTD_RESERVED = ((0xFEE00000, 0xFEEFFFFF),)
U64_MAX = (1 << 64) - 1
_COOKIE_TYPE = {"iova": "iova", "iova-lazy": "iova", "iova-tree": "iova",
                "wraparound": "wraparound", "reset-when-empty": "reset-when-empty"}
_MAX_SLOTS = lib.IOVA_MAX_CPUS      # CPU slots the C core's rcache supports
_PROGRESS_EVERY = 8192


@dataclass(frozen=True)
class TraceDevice:
    """The device the cookie sees: a name, PCI or not, its bus limit."""
    name: str
    is_pci: bool
    bus_dma_limit: int = 0


@dataclass
class DeviceReplay:
    """One device's replay through one policy."""
    device: str
    domain: str
    policy: str
    ops: int = 0
    maps: int = 0
    frees: int = 0
    failures: int = 0
    first_failure_op: Optional[int] = None     # index in this device's operations
    first_failure_line: Optional[int] = None   # the trace line of that allocation
    peak_live_pages: int = 0
    skipped: int = 0                           # dma: calls not replayed (see notes)
    flushes: int = 0                           # full IOTLB flushes (its domain's)
    resets: int = 0
    # with record=True: (op, line, "alloc" | "free" | "fail", iova, pages) per operation
    timeline: Optional[list] = None

    def to_dict(self):
        d = asdict(self)
        if d["timeline"] is None:
            del d["timeline"]
        return d


@dataclass
class ReplayResult:
    policy: str
    kernel: str
    devices: list
    notes: list = field(default_factory=list)
    trace: dict = field(default_factory=dict)
    ops: int = 0
    seconds: float = 0.0

    @property
    def ops_per_sec(self):
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def to_dicts(self):
        """One JSON-ready object per device."""
        return [d.to_dict() for d in self.devices]

    def to_dict(self):
        return {"policy": self.policy, "kernel": self.kernel, "ops": self.ops,
                "seconds": self.seconds, "ops_per_sec": self.ops_per_sec,
                "devices": self.to_dicts(), "notes": list(self.notes), "trace": self.trace}


@dataclass
class DeviceCheck:
    """One device's --check: recorded dma_addrs against pyiova's."""
    device: str
    domain: str
    allocations: int = 0
    matched: int = 0
    mismatched: int = 0
    skipped: int = 0
    first_divergence: Optional[dict] = None    # {"line", "expected", "got", "call", "op"}
    frees: int = 0
    failures: int = 0
    skip_reasons: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.mismatched == 0

    def to_dict(self):
        return asdict(self)


@dataclass
class CheckResult:
    kernel: str
    devices: list
    notes: list = field(default_factory=list)
    trace: dict = field(default_factory=dict)

    @property
    def matched(self):
        return sum(d.matched for d in self.devices)

    @property
    def mismatched(self):
        return sum(d.mismatched for d in self.devices)

    @property
    def ok(self):
        """Every compared address matched, and there was something to compare."""
        return self.mismatched == 0 and self.matched > 0

    @property
    def first_divergence(self):
        """The earliest divergence over all devices (by line), or None."""
        firsts = [d.first_divergence for d in self.devices if d.first_divergence]
        return min(firsts, key=lambda f: f["line"]) if firsts else None

    def to_dicts(self):
        """One JSON-ready object per device."""
        return [d.to_dict() for d in self.devices]

    def to_dict(self):
        return {"kernel": self.kernel, "ok": self.ok, "devices": self.to_dicts(),
                "notes": list(self.notes), "trace": self.trace}


def load(trace, **options):
    """A trace (path, file, lines, Trace) -> Lifetimes; options go to
    build_lifetimes (granule, masks, coherent_masks, pci, irq_reorder...).
    Build once, then replay it through as many policies as you like."""
    if isinstance(trace, Lifetimes):
        if options:
            raise ValueError("%s apply when the trace is read; this one is already built"
                             % ", ".join(sorted(options)))
        return trace
    return build_lifetimes(trace, **options)


class _Domain:
    """One cookie and the operations of the devices sharing it."""

    def __init__(self, policy, kernel, granule, aperture_bits, reserved, nslots):
        # "iova-tree": the kernel's IOVA type with the rcache bypassed, the
        # tree alone (size-aligned alloc_iova / free_iova)
        self.cookie = DmaCookie(_COOKIE_TYPE[policy], kernel=kernel, ncpus=nslots,
                                rcache=policy != "iova-tree")
        if aperture_bits:
            end, force = (1 << aperture_bits) - 1, True
        else:
            end, force = U64_MAX, False
        self.cookie.init_domain(granule, 0, end, force, reserved=tuple(reserved),
                                flush_queue=policy == "iova-lazy")
        self.lazy = policy == "iova-lazy" and self.cookie.flush_queue
        self.clock_ms = 0

    def advance_to(self, ms):
        if ms > self.clock_ms:
            self.cookie.advance(ms - self.clock_ms)
            self.clock_ms = ms


def _run(lt, policy, *, kernel, aperture_bits, reserved, default_mask, use_timestamps,
         compare, progress, record=False):
    if policy not in POLICIES:
        raise errors.IovaValueError("policy %r is not one of %s" % (policy, ", ".join(POLICIES)))
    granule = lt.granule
    shift = granule.bit_length() - 1
    nslots = max(1, min(lt.trace.ncpus, _MAX_SLOTS))
    t0 = lt.trace.events[0].ts if lt.trace.events else 0.0
    # a counter or TSC clock ticks in no known unit: deferred work then waits
    use_timestamps = use_timestamps and lt.trace.clock_in_seconds
    domains = {}
    for d in lt.devices.values():
        domains.setdefault(d.domain, []).append(d)
    total = sum(len(d.ops) for d in lt.devices.values())
    done = 0
    out = {}
    refused = []
    for key, devs in domains.items():
        dom = _Domain(policy, kernel, granule, aperture_bits, reserved, nslots)
        cookie = dom.cookie
        if len(devs) == 1:
            ops = devs[0].ops
        else:
            ops = sorted((o for d in devs for o in d.ops), key=lambda o: (o[0], o[2].id))
        tdev = {d.name: TraceDevice(d.name, d.is_pci) for d in devs}
        stats = {}
        for d in devs:
            if compare:
                stats[d.name] = DeviceCheck(d.name, key, skipped=d.skipped_total,
                                            skip_reasons=dict(d.skipped))
            else:
                stats[d.name] = DeviceReplay(d.name, key, policy, skipped=d.skipped_total,
                                             timeline=[] if record else None)
        opn = dict.fromkeys(tdev, 0)
        live = dict.fromkeys(tdev, 0)
        got_iova = {}
        for _, kind, a in ops:
            done += 1
            if progress is not None and done % _PROGRESS_EVERY == 0:
                progress(done, total)
            st = stats[a.device]
            n = opn[a.device]
            opn[a.device] = n + 1
            if kind == "alloc":
                ts, cpu = a.ts, a.cpu
            else:
                ts, cpu = a.free_ts, a.free_cpu
            if use_timestamps:
                dom.advance_to(int((ts - t0) * 1000))
            cpu = (cpu or 0) % nslots
            if kind == "alloc":
                limit = a.mask if a.mask is not None else default_mask
                try:
                    got = cookie.alloc_iova(tdev[a.device], a.size, limit, cpu=cpu)
                except errors.IovaError as exc:
                    # a request this allocator refuses outright (a limit below
                    # its space, say): the call fails, as it would for a driver
                    got = 0
                    _remember(refused, a, exc)
                if compare:
                    st.allocations += 1
                    answer = got + a.offset if got else 0
                    if got and answer == a.expected:
                        st.matched += 1
                    else:
                        st.mismatched += 1
                        if st.first_divergence is None:
                            st.first_divergence = {"line": a.report_line, "expected": a.expected,
                                                   "got": answer, "call": a.call, "op": n}
                else:
                    st.maps += 1
                if record:
                    st.timeline.append((n, a.line, "alloc" if got else "fail", got,
                                        a.size >> shift))
                if got:
                    got_iova[a.id] = got
                    lv = live[a.device] + (a.size >> shift)
                    live[a.device] = lv
                    if not compare and lv > st.peak_live_pages:
                        st.peak_live_pages = lv
                else:
                    st.failures += 1
                    if not compare and st.first_failure_op is None:
                        st.first_failure_op = n
                        st.first_failure_line = a.report_line
            else:
                g = got_iova.pop(a.id, None)
                if g is None:
                    continue            # its allocation failed here: nothing to free
                try:
                    cookie.free_iova(g, a.size, lazy=dom.lazy, cpu=cpu)
                except errors.IovaError as exc:     # pragma: no cover - a model bug
                    _remember(refused, a, exc)
                    continue
                live[a.device] -= a.size >> shift
                st.frees += 1
                if record:
                    st.timeline.append((n, a.free_line, "free", g, a.size >> shift))
        if not compare:
            for d in devs:
                st = stats[d.name]
                st.ops = opn[d.name]
                st.flushes, st.resets = cookie.flushes, cookie.resets
        out.update(stats)
        if cookie.iovad is not None:
            cookie.iovad.close()
    if progress is not None:
        progress(done, total)
    return [out[name] for name in lt.devices], done, refused


def _remember(refused, a, exc):
    if len(refused) < 5:
        refused.append("line %d (%s): %s" % (a.report_line, a.device, exc))
    else:
        refused.append(None)


def _notes(lt, policy, kernel, aperture_bits, reserved, refused=()):
    notes = list(lt.notes)
    if refused:
        shown = [r for r in refused if r]
        notes.append("%d operations the %s allocator refused, counted as failures: %s"
                     % (len(refused), policy, "; ".join(shown)))
    if policy == "iova-lazy" and kernel == "4.10":
        notes.append("kernel %s has no flush queue: iova-lazy frees at once" % kernel)
    return notes


def replay(trace, policy="iova", *, kernel="6.12", aperture_bits=39, reserved=VTD_RESERVED,
           default_mask=U64_MAX, use_timestamps=True, progress=None, record=False, **options):
    """Runs a trace's per-device operations through `policy`.

    trace          a path, file, list of lines, Trace or Lifetimes (see load)
    policy         one of POLICIES: "iova" (the kernel's default: tree + rcache,
                   strict), "iova-lazy" (the same with the flush queue),
                   "iova-tree" (the rcache bypassed), "wraparound",
                   "reset-when-empty"
    kernel         "6.12" or "4.10" dma-iommu rules
    aperture_bits  the IOMMU's input address width, forced as the aperture
                   (39 for the emulated VT-d); 0 or None: no aperture limit
    reserved       (first_byte, last_byte) windows reserved before the first
                   allocation; default the VT-d IOAPIC/MSI window
    default_mask   the DMA mask of a device whose mask is not known (64 bits)
    use_timestamps let the trace's clock drive deferred work (ignored when the
                   capture used a counter clock: integer timestamps)
    progress       called as progress(done, total) now and then
    record         keep each device's timeline of (op, line, what, iova, pages)
    options        passed to build_lifetimes when the trace is not built yet
                   (granule=4096, masks=, coherent_masks=, pci=, irq_reorder=)

    Returns a ReplayResult: .devices (DeviceReplay per device), .notes,
    .to_dicts() for JSON.
    """
    lt = load(trace, **options)
    start = time.perf_counter()
    devices, n, refused = _run(lt, policy, kernel=kernel, aperture_bits=aperture_bits,
                               reserved=reserved, default_mask=default_mask,
                               use_timestamps=use_timestamps, compare=False, progress=progress,
                               record=record)
    notes = _notes(lt, policy, kernel, aperture_bits, reserved, refused)
    return ReplayResult(policy, kernel, devices, notes, lt.trace.summary(), n,
                        time.perf_counter() - start)


def check(trace, *, kernel="6.12", granule=4096, aperture_bits=39, reserved=VTD_RESERVED,
          default_mask=U64_MAX, use_timestamps=True, progress=None, **options):
    """Replays a strict capture through "iova" and compares every address
    the kernel recorded with pyiova's.

    For a trace from a kernel running the default allocator in strict mode,
    ideally on one CPU. Arguments as for replay(); `granule` is the
    domain's granule. Returns a CheckResult: .devices (DeviceCheck per
    device: matched, mismatched, skipped, first_divergence as
    {"line", "expected", "got", "call", "op"}), .ok, .to_dicts() for JSON.
    """
    if isinstance(trace, Lifetimes):
        if trace.granule != granule:
            raise ValueError("the trace was built for granule %#x, not %#x"
                             % (trace.granule, granule))
        lt = load(trace, **options)
    else:
        lt = load(trace, granule=granule, **options)
    devices, _, refused = _run(lt, "iova", kernel=kernel, aperture_bits=aperture_bits,
                               reserved=reserved, default_mask=default_mask,
                               use_timestamps=use_timestamps, compare=True, progress=progress)
    notes = _notes(lt, "iova", kernel, aperture_bits, reserved, refused)
    if lt.trace.ncpus > 1:
        notes.append("the capture has %d CPUs: per-CPU caches are modelled from each line's "
                     "CPU, but only a one-CPU capture is fully determined by its calls"
                     % lt.trace.ncpus)
    return CheckResult(kernel, devices, notes, lt.trace.summary())
