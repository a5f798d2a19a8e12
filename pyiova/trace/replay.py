"""A trace replayed: the kernel's own allocator, the record deciding what the
trace leaves open, and other policies run on the same lifetimes.

check(trace)                 does pyiova hand out exactly what the kernel
                             did? Every recorded address against pyiova's
replay(trace, "wraparound")  what if this device had run with another
                             allocator (or kernel)? The kernel's replay
                             beside it, and what would have changed

Both read the trace once, as a stream (trace -> lifetimes.Builder ->
engine.Engine per IOVA domain -> the policies): memory holds the live
mappings and the choices still open, not the trace.

Each IOVA domain (a device, or an IOMMU group when the trace shows one)
gets its own KernelDomain (kernel.py): strict or lazy as the trace shows --
a lazy kernel never hands out an IOVA between its unmap and the next flush,
a strict one often does at once, so a strict and a lazy replay run side by
side until the record rules one out -- unless `mode` says which.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .. import errors
from .. import sim_args
from ..allocators import AllocatorType
from ..policies import DMA_API_POLICIES
from ..policies import POLICIES as _POLICY_TABLE
from ..sim import ENGINES, free_space
from ..sim_args import aperture_bits as sim_aperture_bits
from .engine import ALLOC, FIRE, Engine
from .kernel import (DEFAULT_RESERVED, KERNELS, U64_MAX, VTD_RESERVED, KernelDomain,
                     TimerRules)
from .lifetimes import Builder, Lifetimes, build_lifetimes
from .parse import Trace, gc_paused, iter_event_batches
from .whatif import DEFAULT_DRIVER, NO_DRIVER, RESULT_FIELDS, DriverModel, check_driver

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["POLICIES", "MODES", "VTD_RESERVED", "DeviceReplay", "ReplayResult", "DeviceCheck",
           "CheckResult", "replay", "check", "load", "parse_policy"]

POLICIES = DMA_API_POLICIES
MODES = ("auto", "strict", "lazy")
_PROGRESS_EVERY = 4096
_BATCH = 1024               # events of a kept Trace the builder takes at a time
_U32_PFN_BYTES = 1 << 32


def parse_policy(text: str) -> tuple[str, str | None]:
    """"POLICY" or "POLICY@KERNEL" -> (policy, kernel or None)."""
    policy, _, kernel = text.partition("@")
    if policy not in POLICIES:
        raise errors.IovaValueError("policy %r is not one of %s" % (policy, ", ".join(POLICIES)))
    if kernel and kernel not in KERNELS:
        raise errors.IovaValueError("kernel %r (in %r) is not one of %s"
                                    % (kernel, text, ", ".join(KERNELS)))
    return policy, kernel or None


# ---- results ----------------------------------------------------------------------

@dataclass
class DeviceCheck:
    """One device's replay through the kernel's allocator: recorded
    addresses against pyiova's, and what the record decided (counted on the
    first device of each domain: the choices are the domain's)."""
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
    mode: str = "strict"                       # the domain's TLB invalidation, as replayed
    interrupt_choices: int = 0                 # allocations that may precede an interrupt's work
    interrupt_orders_decided: int = 0          # ...that the record moved before it
    fires: int = 0                             # flush-queue timer fires
    fires_single: int = 0                      # ...with one possible moment
    fires_earliest: int = 0                    # ...at the earliest possible moment
    fires_decided: int = 0                     # ...at a later one the record chose
    trims: int = 0                             # depot trim work runs (6.12)
    trims_single: int = 0
    trims_earliest: int = 0
    trims_decided: int = 0
    peak_live_pages: int = 0
    flushes: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatched == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    kernel: str
    devices: list
    notes: list = field(default_factory=list)
    trace: dict = field(default_factory=dict)
    mode: str = "strict"
    mode_reason: str = ""

    @property
    def matched(self) -> int:
        return sum(d.matched for d in self.devices)

    @property
    def mismatched(self) -> int:
        return sum(d.mismatched for d in self.devices)

    @property
    def ok(self) -> bool:
        """Every compared address matched, and there was something to compare."""
        return self.mismatched == 0 and self.matched > 0

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        """The earliest divergence over all devices (by line), or None."""
        firsts = [d.first_divergence for d in self.devices if d.first_divergence]
        return min(firsts, key=lambda f: f["line"]) if firsts else None

    @property
    def decided(self) -> dict[str, int]:
        """What the record decided, summed over the domains."""
        keys = ("interrupt_choices", "interrupt_orders_decided", "fires", "fires_single",
                "fires_earliest", "fires_decided", "trims", "trims_single", "trims_earliest",
                "trims_decided")
        return {k: sum(getattr(d, k) for d in self.devices) for k in keys}

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-ready object per device."""
        return [d.to_dict() for d in self.devices]

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "mode": self.mode, "mode_reason": self.mode_reason,
                "ok": self.ok, "decided": self.decided, "devices": self.to_dicts(),
                "notes": list(self.notes), "trace": self.trace}


@dataclass
class DeviceReplay:
    """One device's lifetimes through one policy, beside the kernel's."""
    device: str
    domain: str
    policy: str
    kernel: str = "6.12"
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
    invalidations: int = 0                     # IOTLB invalidations: per unmap when strict,
                                               # else the flushes and resets
    fragmentation: float = 0.0                 # at the end, below 4 GiB: 1 - largest free / free
    changed: int = 0                           # allocations at another address than the kernel's
    kernel_failures: int = 0                   # the kernel's replay, for comparison
    kernel_peak_live_pages: int = 0
    kernel_flushes: int = 0
    kernel_invalidations: int = 0
    kernel_fragmentation: float = 0.0
    # through the driver model (whatif.py): simulate()'s figures for the same lifetimes
    driver: Optional[str] = None               # the driver model, None: cookies only
    engine: Optional[str] = None               # "c" or "python": which engine ran it
    driver_note: Optional[str] = None          # why it did not run, when it did not
    driver_maps: Optional[int] = None          # maps and failed maps as the DMA API counted
    driver_failures: Optional[int] = None
    accesses: Optional[int] = None             # device accesses (every page, once mapped)
    iotlb_hits: Optional[int] = None
    iotlb_misses: Optional[int] = None
    stale_translations: Optional[int] = None   # accesses served by a stale IOTLB entry:
    stale_unmapped: Optional[int] = None       # ...into a freed buffer
    stale_remapped: Optional[int] = None       # ...into a buffer mapped for something else
    faults: Optional[int] = None               # accesses to live mappings the IOMMU refused
    iotlb_syncs: Optional[int] = None          # invalidations the unmap path issued
    syncs_skipped: Optional[int] = None
    full_flushes: Optional[int] = None
    invalidations_lost: Optional[int] = None   # unmap-path flushes lost (the IPMMU erratum)
    # with record=True: (op, line, "alloc" | "fail" | "free", iova, pages) per operation
    timeline: Optional[list] = None

    def to_dict(self) -> dict[str, Any]:
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
    check: Optional[CheckResult] = None        # the kernel's own replay of the same trace

    @property
    def ops_per_sec(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-ready object per device."""
        return [d.to_dict() for d in self.devices]

    def to_dict(self) -> dict[str, Any]:
        out = {"policy": self.policy, "kernel": self.kernel, "ops": self.ops,
               "seconds": self.seconds, "ops_per_sec": self.ops_per_sec,
               "devices": self.to_dicts(), "notes": list(self.notes), "trace": self.trace}
        if self.check is not None:
            out["kernel_replay"] = {"mode": self.check.mode, "ok": self.check.ok,
                                    "matched": self.check.matched,
                                    "mismatched": self.check.mismatched,
                                    "decided": self.check.decided}
        return out


# ---- the run ------------------------------------------------------------------------

class _Stats:
    """Per device, from the final operations of one allocator."""
    __slots__ = ("ops", "maps", "frees", "failures", "first_fail_op", "first_fail_line", "live",
                 "peak", "matched", "mismatched", "first_divergence", "timeline", "changed")

    def __init__(self, record=False) -> None:
        self.ops = self.maps = self.frees = self.failures = 0
        self.first_fail_op: int | None = None
        self.first_fail_line: int | None = None
        self.live = self.peak = self.matched = self.mismatched = self.changed = 0
        self.first_divergence = None
        self.timeline: list[Any] | None = [] if record else None


class _Policy:
    """A what-if policy on one domain: its own allocator, fed the kernel's
    final operations (allocations, frees, and -- for a lazy policy on a
    lazy trace -- the timer fires the record decided)."""

    def __init__(self, run, policy, kernel, devices, device) -> None:
        self.policy, self.kernel = policy, kernel
        # through the driver model too, when there is one: the cookie-level
        # model below is set up as that driver sets its domain up
        self.driver = None
        setup = {}
        if run.driver != NO_DRIVER:
            self.driver = DriverModel(run, run.driver, policy, kernel, device)
            bits, reserved = self.driver.aperture
            if bits is not None:
                setup = dict(aperture_bits=bits, reserved=reserved)
        pol = _POLICY_TABLE[policy]
        self.model = run.model(kernel, lazy=pol.lazy, allocator=pol.allocator, rcache=pol.rcache,
                               **setup)
        self.record = run.record
        self.stats = {name: _Stats(run.record) for name in devices}
        self.got: dict[Any, Any] = {}
        self.shift = run.shift
        self.nominal = run.timer.latest - run.timer.late_ms / 1000.0
        self.kernel_fires = False

    def op(self, kind, op, kernel_iova) -> None:
        if self.driver is not None and kind != FIRE:
            self.driver.op(kind, op)
        m = self.model
        t = m.timer
        if kind == FIRE:
            self.kernel_fires = True
            if t is not None:
                m.fire()
            return
        if t is not None and not self.kernel_fires and op.ts - t[0] >= self.nominal:
            m.fire()                    # the kernel was strict: the nominal moment
        m.at(op.ts)
        a = op.a
        st = self.stats.get(a.device)
        if st is None:
            st = self.stats[a.device] = _Stats(self.record)
        n = st.ops
        st.ops += 1
        pages = a.size >> self.shift
        if kind == ALLOC:
            got = m.alloc(op.dev, a, op.cpu)
            st.maps += 1
            if got:
                self.got[a.id] = got
                st.live += pages
                if st.live > st.peak:
                    st.peak = st.live
                if got != kernel_iova:
                    st.changed += 1
            else:
                st.failures += 1
                if kernel_iova:
                    st.changed += 1
                if st.first_fail_op is None:
                    st.first_fail_op, st.first_fail_line = n, a.report_line
            if st.timeline is not None:
                st.timeline.append((n, a.line, "alloc" if got else "fail", got, pages))
            return
        g = self.got.pop(a.id, 0)
        if g:
            m.free(g, a.size, op.cpu, op.ts)
            st.frees += 1
            st.live -= pages
            if st.timeline is not None:
                st.timeline.append((n, op.line, "free", g, pages))



class _Domain:
    """One IOVA domain: the kernel's replay (two, strict and lazy, until the
    record rules one out) and the what-if policies behind it."""

    def __init__(self, run, key) -> None:
        self.run = run
        self.key = key
        self.devices: list[Any] = []
        self.engines = {}
        # mode -> final entries held until the mode is known
        self.pending: dict[Any, Any] = {}
        modes = ("strict", "lazy") if run.mode == "auto" else (run.mode,)
        if run.kernel == "4.10":
            modes = ("strict",)     # 4.10 has no flush queue
        for mode in modes:
            model = run.model(run.kernel, lazy=mode == "lazy", trim="record")
            eng = Engine(model, timer=run.timer, **run.engine_options)
            if len(modes) > 1:
                held = self.pending[mode] = []
                eng.listener = lambda kind, op, x, held=held: held.append((kind, op, x))
            else:
                eng.listener = self._final
            self.engines[mode] = eng
        self.mode = modes[0] if len(modes) == 1 else None
        self.mode_reason = "given" if run.mode != "auto" else ""
        if run.kernel == "4.10" and run.mode != "strict":
            self.mode_reason = "4.10 has no flush queue"
        self.kernel_stats: dict[Any, Any] = {}
        self.policies: list[Any] = []
        self.device_lifetimes: list[Any] = []
        self.first_op = True

    def add_device(self, d) -> None:
        self.devices.append(d.name)
        self.device_lifetimes.append(d)
        self.kernel_stats[d.name] = _Stats()
        for p in self.policies:
            p.stats.setdefault(d.name, _Stats(self.run.record))
            if p.driver is not None and p.driver.note is None:
                p.driver.abandon("the driver model runs one device per domain; %s has %s too"
                                 % (self.key, d.name))

    def start_policies(self) -> None:
        run = self.run
        for policy, kernel in run.policies:
            self.policies.append(_Policy(run, policy, kernel or run.kernel, self.devices,
                                         self.device_lifetimes[0]))

    def feed(self, op) -> None:
        if self.first_op:
            self.first_op = False
            self.start_policies()
        if self.mode is not None:
            # the mode is known: from now on operations go straight to its engine
            self.feed = self.engines[self.mode].feed  # type: ignore[method-assign]
            self.feed(op)
            return
        for eng in self.engines.values():
            eng.feed(op)
        self._decide(final=False)

    def _decide(self, final) -> None:
        s, lz = self.engines["strict"], self.engines["lazy"]
        ds, dl = s.hyps[0].first_divergence, lz.hyps[0].first_divergence
        if not final and not ds and not dl:
            return
        if ds and not dl:
            mode, why = "lazy", "detected: the strict replay diverges at line %d, the lazy one " \
                                "does not" % ds["line"]
        elif dl and not ds:
            mode, why = "strict", "detected: an unmapped IOVA is handed out again before any " \
                                  "flush could release it (the lazy replay diverges at line %d)" \
                                  % dl["line"]
        elif ds and dl:
            mode = "lazy" if dl["line"] > ds["line"] else "strict"
            why = "neither a strict nor a lazy replay reproduces every address; %s goes " \
                  "further (strict diverges at line %d, lazy at line %d)" \
                  % (mode, ds["line"], dl["line"])
        else:
            mode, why = "strict", "undetected: strict and lazy replays hand out the same " \
                                  "addresses here (strict assumed; --mode says otherwise)"
        self.mode, self.mode_reason = mode, why
        winner = self.engines[mode]
        for other in [m for m in self.engines if m != mode]:
            if not final:
                self.engines[other].model.close()
            del self.engines[other]
        for kind, op, x in self.pending.pop(mode):
            self._final(kind, op, x)
        winner.listener = self._final
        self.pending.clear()

    def finish(self) -> None:
        for eng in self.engines.values():
            eng.finish()
        if self.mode is None:
            self._decide(final=True)

    def _final(self, kind, op, x) -> None:
        """An operation of the kernel's replay that is final."""
        for p in self.policies:
            p.op(kind, op, x)
        if kind == FIRE:
            return
        a = op.a
        st = self.kernel_stats.get(a.device)
        if st is None:
            st = self.kernel_stats[a.device] = _Stats()
        n = st.ops
        st.ops += 1
        pages = a.size >> self.run.shift
        if kind == ALLOC:
            st.maps += 1
            answer = x + a.offset if x else 0
            if x:
                st.live += pages
                if st.live > st.peak:
                    st.peak = st.live
            else:
                st.failures += 1
            if answer == a.expected:
                st.matched += 1
            else:
                st.mismatched += 1
                if st.first_divergence is None:
                    st.first_divergence = {"line": a.report_line, "expected": a.expected,
                                           "got": answer, "call": a.call, "op": n}
        elif x:
            st.frees += 1
            st.live -= pages


class _Run:
    def __init__(self, *, kernel, mode, policies, granule, aperture_bits, reserved,
                 default_mask, timer, record, engine_options, progress, driver=NO_DRIVER,
                 engine="auto", drop_rate=1.0, driver_seed=1) -> None:
        if mode not in MODES:
            raise errors.IovaValueError("mode %r is not one of %s" % (mode, ", ".join(MODES)))
        self.driver, self.engine = driver, engine
        self.drop_rate, self.driver_seed = drop_rate, driver_seed
        self.kernel = kernel
        self.mode = mode
        self.policies = policies
        self.granule = granule
        self.shift = granule.bit_length() - 1
        self.aperture_bits, self.reserved = aperture_bits, tuple(reserved)
        self.default_mask = default_mask
        self.timer = timer or TimerRules()
        self.record = record
        self.engine_options = engine_options or {}
        self.progress = progress
        self.domains: dict[Any, Any] = {}
        self.ncpus = 1
        self.use_clock = True
        self.lt: Any = None
        # DeviceLifetimes -> (its group then, its _Domain)
        self.feeds: dict[Any, Any] = {}

    def model(self, kernel, **kw):
        setup = dict(aperture_bits=self.aperture_bits, reserved=self.reserved)
        setup.update(kw)
        return KernelDomain(kernel, granule=self.granule, ncpus=self.ncpus,
                            default_mask=self.default_mask, use_clock=self.use_clock, **setup)

    def sink(self, d, op) -> None:
        seen = self.feeds.get(d)
        if seen is not None and seen[0] is d.group:
            seen[1].feed(op)
            return
        if self.lt is not None:
            # the first operation: the trace's start says which kernel, how many CPUs
            lt, self.lt = self.lt, None
            self.ncpus = _slots(lt.trace.ncpus)
            # a counter clock (whole-number timestamps) is not in seconds
            self.use_clock = lt.trace.clock_in_seconds
            self.kernel = _kernel_for(self.kernel, lt)
        dom = self.domains.get(d.domain)
        if dom is None:
            dom = self.domains[d.domain] = _Domain(self, d.domain)
        if d.name not in dom.kernel_stats:
            dom.add_device(d)
        dom.feed(op)
        # its next operations go straight to its domain while it stays in
        # this group (or in none: a device may join a group later)
        self.feeds[d] = (d.group, dom)

    def finish(self) -> None:
        for dom in self.domains.values():
            dom.finish()


def load(trace: Any, **options: Any) -> Lifetimes:
    """A trace (path, file, lines, Trace) -> Lifetimes with every allocation
    kept (build_lifetimes); options: granule, masks, coherent_masks, pci,
    window. A Lifetimes is returned as it is."""
    if isinstance(trace, Lifetimes):
        if options:
            raise errors.IovaValueError("%s apply when the trace is read; this one is already "
                                        "built" % ", ".join(sorted(options)))
        return trace
    return build_lifetimes(trace, **options)


def _execute(trace, *, kernel, mode, policies, granule, aperture_bits, reserved, default_mask,
             timer, record, progress, engine_options, driver=NO_DRIVER, engine="auto",
             drop_rate=1.0, page_size=4096, masks=None, coherent_masks=None, pci=None,
             window=4096):
    if kernel not in KERNELS + ("auto",):
        raise errors.IovaValueError("kernel %r is not one of auto, %s"
                                    % (kernel, ", ".join(KERNELS)))
    aperture_bits = sim_aperture_bits(aperture_bits)
    driver = check_driver(driver)
    if not isinstance(engine, str) or engine not in ENGINES:
        raise errors.IovaValueError("engine %r is not one of %s" % (engine, ", ".join(ENGINES)))
    drop_rate = sim_args.run_args(1, 1, 1, drop_rate)[3]
    run = _Run(kernel=kernel, mode=mode, policies=policies, granule=granule,
               aperture_bits=aperture_bits, reserved=reserved, default_mask=default_mask,
               timer=timer, record=record, engine_options=engine_options, progress=progress,
               driver=driver, engine=engine, drop_rate=drop_rate)
    if isinstance(trace, Lifetimes):
        if trace.granule != granule:
            raise errors.IovaValueError("the trace was built for granule %#x, not %#x"
                                        % (trace.granule, granule))
        run.lt = lt = trace
        for d, op in _kept_ops(lt):
            run.sink(d, op)
        run.finish()
        return run, lt
    info = trace if isinstance(trace, Trace) else Trace(_name(trace))
    if isinstance(trace, Trace):
        batches = (trace.events[i:i + _BATCH] for i in range(0, len(trace.events), _BATCH))
    else:
        batches = iter_event_batches(trace, info)
    run.lt = lt = Lifetimes(info, granule)
    b = Builder(lt, run.sink, page_size=page_size, masks=masks, coherent_masks=coherent_masks,
                pci=pci, window=window)
    with gc_paused():
        # the builder takes events a batch at a time: the same result, and
        # an interpreter that does one kind of work at a time does it faster
        read = 0
        for events in batches:
            if info is not trace:
                info.nevents += len(events)
            b.feed_many(events)
            read += len(events)
            if progress is not None and read >= _PROGRESS_EVERY:
                read = 0
                _report(progress, info)
        b.finish()
        run.finish()
    if run.kernel == "auto":
        run.kernel = _kernel_for("auto", lt)
    if progress is not None:
        _report(progress, info, done=True)
    return run, lt


def _report(progress, info, done=False) -> None:
    total = getattr(info, "size", None)
    if total:
        progress(total if done else min(info.position(), total), total)


def _name(source):
    return source if isinstance(source, str) else None


def _slots(ncpus):
    from .._pyiova import lib
    return max(1, min(ncpus, lib.IOVA_MAX_CPUS))


def _kernel_for(kernel, lt):
    """`auto`: 6.12 when dma: events name the devices (they first appear in
    6.12), else 6.1, the last long-term kernel before them."""
    if kernel != "auto":
        return kernel
    return "6.1" if lt.single_domain else "6.12"


def _kept_ops(lt):
    """The operations of kept lifetimes again, in trace order."""
    out = [(op.line, op.kind, n, d, op) for d in lt.devices.values()
           for n, op in enumerate(d.ops)]
    out.sort(key=lambda t: t[:3])
    return [(d, op) for _, _, _, d, op in out]


def _checks(run, lt):
    devices = []
    mode = None
    reasons = []
    for name, d in lt.devices.items():
        dom = run.domains.get(d.domain)
        st = dom.kernel_stats.get(name) if dom is not None else None
        c = DeviceCheck(name, d.domain, skipped=d.skipped_total, skip_reasons=dict(d.skipped))
        if st is not None:
            c.allocations, c.matched, c.mismatched = st.maps, st.matched, st.mismatched
            c.frees, c.failures, c.first_divergence = st.frees, st.failures, st.first_divergence
            c.peak_live_pages = st.peak
            c.mode = dom.mode
            if dom.devices and dom.devices[0] == name:
                eng = next(iter(dom.engines.values()))
                counts = eng.counts
                c.interrupt_choices = counts["interrupt_choices"]
                c.interrupt_orders_decided = counts["interrupt_orders_decided"]
                c.fires_single = counts["fires_single"]
                c.fires_earliest = counts["fires_earliest"]
                c.fires_decided = counts["fires_decided"]
                c.fires = c.fires_single + c.fires_earliest + c.fires_decided
                c.trims_single = counts["trims_single"]
                c.trims_earliest = counts["trims_earliest"]
                c.trims_decided = counts["trims_decided"]
                c.trims = c.trims_single + c.trims_earliest + c.trims_decided
                c.flushes = eng.model.cookie.flushes
                if dom.mode_reason:
                    reasons.append((dom.key, dom.mode_reason))
                mode = dom.mode if mode in (None, dom.mode) else "mixed"
        devices.append(c)
    if len({r for _, r in reasons}) <= 1:
        why = reasons[0][1] if reasons else ""
    else:
        why = "; ".join("%s: %s" % kv for kv in reasons)
    return devices, mode or "strict", why


def _notes(run, lt, refused_policies=()):
    notes = list(lt.notes)
    if lt.trace.ncpus > 1:
        notes.append("the capture has %d CPUs: per-CPU caches and flush queues are modelled "
                     "from each line's CPU, but only a one-CPU capture is fully determined by "
                     "its calls" % lt.trace.ncpus)
    for dom in run.domains.values():
        for eng in dom.engines.values():
            st = eng.stats
            if st["width_cuts"] and any(s.mismatched for s in dom.kernel_stats.values()):
                notes.append("%s: %d candidate orders were not followed (more than %d at once)"
                             % (dom.key, st["width_cuts"], eng.width))
    for dom in run.domains.values():
        models = [(None, e.model) for e in dom.engines.values()] + \
            [(p.policy, p.model) for p in dom.policies]
        for policy, m in models:
            if m.refused:
                notes.append("%s: %d allocations the %s allocator refused outright, counted as "
                             "failures (first: %s)" % (dom.key, m.refused,
                                                      policy or "kernel's", m.refused_first))
    content = lt.trace.content
    if content:
        notes.append(_content_note(content, lt.trace.name))
    return notes


def _content_note(content, name) -> str:
    name = name or "the input"
    if content.startswith("trace-cmd .dat"):
        if "read through" in content:
            return "%s is a trace-cmd .dat file, read through `trace-cmd report`" % name
        return ("%s is a trace-cmd .dat file, which is binary: run `trace-cmd report -l -i %s > "
                "trace.txt` and replay trace.txt -- trace-cmd is not installed here"
                % (name, name))
    if content == "UTF-16 text":
        return "%s is UTF-16 text: convert it first, iconv -f UTF-16 -t UTF-8" % name
    if content == "binary":
        return "%s is not text: it holds NUL bytes" % name
    if content == "empty":
        return "%s is empty" % name
    return "%s: %s" % (name, content)


def check(trace: Any, *, kernel: str = "auto", mode: str = "auto", granule: int = 4096,
          aperture_bits: int | None = 39, reserved: Iterable[tuple[int, int]] = DEFAULT_RESERVED,
          default_mask: int = U64_MAX, timer: TimerRules | None = None,
          progress: Callable[[int, int], None] | None = None,
          engine_options: dict[str, Any] | None = None, **options: Any) -> CheckResult:
    """Replays a capture through the kernel's own allocator and compares
    every address the kernel recorded with pyiova's.

    trace          a path (compressed or not), file, bytes, list of lines,
                   Trace or Lifetimes
    kernel         "6.12", "6.1" or "4.10" rules; "auto": 6.12 when the trace
                   has dma: events, else 6.1
    mode           "strict" or "lazy" TLB invalidation (the flush queue), or
                   "auto": the record decides
    granule, aperture_bits, reserved, default_mask   the domain's setup
                   (VT-d: 4 KiB, 39 bits, the IOAPIC/MSI window and the
                   PCI host bridge's memory windows, QEMU q35's by default;
                   devices of unknown mask: 64 bits)
    timer          TimerRules: when the flush queue's timer can fire
    progress       called as progress(done, total) now and then
    options        for reading the trace (page_size, masks, coherent_masks,
                   pci, window)

    Returns a CheckResult: .devices (DeviceCheck per device: matched,
    mismatched, skipped, first_divergence, and what the record decided),
    .ok, .mode, .to_dicts() for JSON.
    """
    run, lt = _execute(trace, kernel=kernel, mode=mode, policies=(), granule=granule,
                       aperture_bits=aperture_bits, reserved=reserved,
                       default_mask=default_mask, timer=timer, record=False, progress=progress,
                       engine_options=engine_options, **options)
    devices, mode_used, why = _checks(run, lt)
    return CheckResult(run.kernel, devices, _notes(run, lt), lt.trace.summary(), mode_used, why)


def replay(trace: Any, policy: str | Sequence[str] = "iova", *, kernel: str = "auto",
           mode: str = "auto", granule: int = 4096, aperture_bits: int | None = 39,
           reserved: Iterable[tuple[int, int]] = DEFAULT_RESERVED, default_mask: int = U64_MAX,
           timer: TimerRules | None = None, progress: Callable[[int, int], None] | None = None,
           record: bool = False, engine_options: dict[str, Any] | None = None,
           driver: str = DEFAULT_DRIVER, engine: str = "auto", drop_rate: float = 1.0,
           **options: Any) -> ReplayResult | list[ReplayResult]:
    """Runs a trace's lifetimes through other allocators: what would have
    changed?

    policy         one of POLICIES, "POLICY@KERNEL" (another kernel's rules),
                   or a list of them: "iova" (the kernel's default, strict),
                   "iova-lazy" (with the flush queue), "iova-tree" (the
                   rcache bypassed), "wraparound", "reset-when-empty"
    record         keep each device's timeline of (op, line, what, iova, pages)
    driver         the IOMMU driver model the lifetimes also run through
                   (whatif.py): "generic" (the traced IOMMU as the replay sets
                   it up: strict ranged invalidation, or the flush queue for
                   iova-lazy), "ipmmu" (the IPMMU with its erratum: an
                   unmap-path flush is lost with probability drop_rate), any
                   registered driver, or "none" (the cookies alone)
    engine         which of simulate()'s engines runs the driver model: "auto"
                   (the C engine), "c" or "python"
    the rest       as for check(): the kernel's own replay (check) runs
                   beside the policies and decides the order they all see

    Returns a ReplayResult (one per policy when given a list): .devices
    (DeviceReplay per device, with the kernel's figures beside the
    policy's), .check (the kernel's replay), .to_dicts() for JSON.
    """
    many = isinstance(policy, (list, tuple))
    wanted = [parse_policy(p) if isinstance(p, str) else p
              for p in (policy if many else [policy])]
    start = time.perf_counter()
    run, lt = _execute(trace, kernel=kernel, mode=mode, policies=wanted, granule=granule,
                       aperture_bits=aperture_bits, reserved=reserved,
                       default_mask=default_mask, timer=timer, record=record, progress=progress,
                       engine_options=engine_options, driver=driver, engine=engine,
                       drop_rate=drop_rate, **options)
    for dom in run.domains.values():
        for p in dom.policies:
            if p.driver is not None:
                p.driver.finish()
    seconds = time.perf_counter() - start
    devices, mode_used, why = _checks(run, lt)
    chk = CheckResult(run.kernel, devices, _notes(run, lt), lt.trace.summary(), mode_used, why)
    results = []
    for n, (pol, k) in enumerate(wanted):
        rows = []
        ops = 0
        for name, d in lt.devices.items():
            dom = run.domains.get(d.domain)
            row = DeviceReplay(name, d.domain, pol, k or run.kernel, skipped=d.skipped_total,
                               timeline=[] if record else None)
            if dom is not None and dom.policies:
                p = dom.policies[n]
                st = p.stats.get(name)
                kst = dom.kernel_stats.get(name)
                if st is not None:
                    row.ops, row.maps, row.frees, row.failures = st.ops, st.maps, st.frees, \
                        st.failures
                    row.first_failure_op, row.first_failure_line = st.first_fail_op, \
                        st.first_fail_line
                    row.peak_live_pages, row.changed = st.peak, st.changed
                    row.timeline = st.timeline
                    ops += st.ops
                row.flushes, row.resets = p.model.cookie.flushes, p.model.cookie.resets
                row.invalidations = _invalidations(pol, row.frees, p.model)
                row.fragmentation = _fragmentation(p.model, d)
                eng = next(iter(dom.engines.values()))
                row.kernel_flushes = eng.model.cookie.flushes
                if kst is not None:
                    row.kernel_failures, row.kernel_peak_live_pages = kst.failures, kst.peak
                    row.kernel_invalidations = _invalidations(
                        "iova-lazy" if dom.mode == "lazy" else "iova", kst.frees, eng.model)
                row.kernel_fragmentation = _fragmentation(eng.model, d)
                if p.driver is not None and dom.devices[0] == name:
                    _driver_fields(row, p.driver)
            elif run.driver != NO_DRIVER:
                row.driver = run.driver
            rows.append(row)
        label = pol if k is None else "%s@%s" % (pol, k)
        results.append(ReplayResult(label, k or run.kernel, rows, list(chk.notes),
                                    lt.trace.summary(), ops, seconds, chk))
    for dom in run.domains.values():
        for p in dom.policies:
            p.model.close()
            if p.driver is not None:
                p.driver.close()
        for eng in dom.engines.values():
            eng.model.close()
    return results if many else results[0]


def _driver_fields(row, model) -> None:
    """The driver model's figures into a what-if row."""
    row.driver = model.driver
    res = model.finish()
    if res is None:
        row.driver_note = model.note
        return
    row.engine = res.engine
    row.driver_maps, row.driver_failures = res.maps, res.failures
    for name in RESULT_FIELDS:
        setattr(row, name, getattr(res, name))


def _invalidations(policy, frees, model):
    """IOTLB invalidations: a strict policy invalidates at every unmap; the
    others only when they flush (the timer, a full ring, a wrap) or reset."""
    c = model.cookie
    pol = _POLICY_TABLE[policy]
    strict = pol.allocator is AllocatorType.IOVA and not pol.lazy
    return (frees if strict else 0) + c.flushes + c.resets


def _fragmentation(model, d):
    """1 - largest free run / free pfns, below 4 GiB (where a PCI device
    allocates first), at the end of the trace."""
    cookie = model.cookie
    if cookie.allocator is None:
        return 0.0
    if cookie.type.value == "wraparound":
        ranges = [(lo, hi) for lo, hi, _ in cookie.allocator.ranges()]
    elif cookie.iovad is not None and not cookie.iovad.closed:
        ranges = cookie.iovad.ranges()
    else:
        return 0.0
    first = cookie.start_pfn
    last = (_U32_PFN_BYTES - 1) >> cookie.shift
    free, largest = free_space(ranges, first, last)
    return round(1.0 - largest / free, 6) if free else 0.0



