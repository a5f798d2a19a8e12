"""Run a workload through an IOVA policy on a model IOMMU and measure it.

    from pyiova.sim import simulate, compare
    r = simulate("usb", policy="wraparound", driver="ipmmu", ops=200_000, seed=1)
    r.failures, r.stale_translations, r.ops_per_sec, r.as_dict()
    for r in compare("usb", driver="ipmmu"): print(r.policy, r.verdict)

Each run builds a fresh IOMMU (driver), one DMA domain with the policy's
allocator, and the workload's device, then turns every operation of the
workload into a DMA API call (pyiova.dma) or a device access through the
IOTLB (Device.dma_access). The same seed gives every policy the same
operations.

Two engines do that and give the same results (docs/engine.md): _run, the
Python loop through the DMA API (engine="python": the reference, and the
engine for drivers written in Python), and _run_native, the C engine
(csrc/sim_engine.c) over the same C structures, the default wherever the
driver declares its behaviour (IommuDriver.engine_profile).

Policies (the same names on the command line) are pyiova.policies' table.

Drivers: "ipmmu" (Renesas IPMMU-VMSA with its TLB-invalidation erratum on:
every flush issued on the unmap path is lost with probability drop_rate)
and "generic" (a strict IOMMU with ranged invalidation and deferred-flush
support); drivers and workloads of your own are used by name once
registered (pyiova.drivers.registry, pyiova.workloads.custom).

After a failed map (DMA_MAPPING_ERROR) the run goes on, as the USB core
does ("keep trying indefinitely"): the failure is counted, the operations
that name the failed mapping (its accesses and unmap) are skipped, and the
workload's next transfer is the retry. After max_failures failures the run
stops and is marked stopped_early: the device would be hung by then, and
the remaining operations would only add failures.
"""
from __future__ import annotations

import copy
import itertools
import time
import warnings
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from . import dma, errors, sim_args
from .allocators import AllocatorType
from .cookie import get_dma_cookie, put_dma_cookie
from .drivers.registry import DRIVER_SPECS, DRIVERS
from .iommu import DomainAttr, DomainType
from ._pyiova import lib
from .engine.native import NativeEngine, NotExpressible, why_not
from .engine.streams import NativeStream, stream_for
from .iommu_errors import IommuFault
from .iova import kernel_rules
from .policies import DEFAULT_POLICIES, POLICIES, Policy, PolicyNotApplicable, not_applicable
from .tables import ResultList
from .workloads import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE, MAP_SG,
                        UNMAP_PAGE, UNMAP_SG, WorkloadError, get_workload)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .cookie import DmaCookie
    from .device import Device
    from .drivers.base import IommuDriver
    from .iommu import IommuDomain
    from .workloads.base import Workload

    # progress(operations done, policy name)
    Progress = Callable[[int, str], None]

__all__ = ["simulate", "Simulation", "compare", "SimResult", "Sample", "Policy", "POLICIES",
           "DRIVERS", "DEFAULT_POLICIES", "DEFAULT_OPS", "PolicyNotApplicable", "not_applicable",
           "ENGINES", "EngineFallback"]

DEFAULT_OPS = 400_000
DEFAULT_MAX_FAILURES = 1000
FAILURE_OPS_KEPT = 10000      # op indexes of failed maps a result keeps
ENGINES = ("auto", "c", "python")
TIMELINE_SAMPLES = 200


# DRIVERS: name -> summary of every driver a run may name (built-in or registered)


class Sample(NamedTuple):
    """One point of a run's timeline (simulate(..., timeline=True))."""
    op: int                 # operations done
    live_pfns: int          # pfns mapped for the device
    held_pfns: int          # pfns the allocator does not consider free
    failures: int
    full_flushes: int
    stale: int              # stale translations so far
    runs: tuple             # ((lo_pfn, hi_pfn, held pfns in it), ...): the held space,
                            # neighbouring ranges merged (for drawing)


@dataclass
class SimResult:
    """What one run measured. as_dict() gives the JSON form."""
    workload: str
    policy: str
    driver: str
    seed: int
    kernel: str = "6.12"
    applicable: bool = True
    note: str = ""
    engine: str = ""                # "c" or "python": which engine ran
    engine_note: str = ""           # why the Python engine ran, when it did
    ops_requested: int = 0
    ops: int = 0                    # operations executed
    elapsed_s: float = 0.0
    ops_per_sec: float = 0.0
    maps: int = 0                   # successful map_page / map_sg / alloc_coherent calls
    unmaps: int = 0
    failures: int = 0               # DMA_MAPPING_ERROR results
    first_failure_op: Optional[int] = None   # index (from 0) of the op that first failed
    maps_before_failure: Optional[int] = None
    live_at_first_failure: Optional[int] = None   # pfns mapped when the first map failed
    stopped_early: bool = False     # max_failures reached: the device is hung
    skipped: int = 0                # accesses and unmaps of mappings that failed
    peak_live_pfns: int = 0
    live_pfns: int = 0              # at the end
    space_pfns: int = 0             # pfns the device can be given
    free_pfns: int = 0              # of those, not held by the allocator at the end
    largest_free_pfns: int = 0
    fragmentation: float = 0.0      # 1 - largest_free / free (0: free space in one piece)
    full_flushes: int = 0
    iotlb_syncs: int = 0
    syncs_skipped: int = 0
    invalidations_lost: int = 0
    accesses: int = 0
    iotlb_hits: int = 0
    iotlb_misses: int = 0
    stale_translations: int = 0
    stale_unmapped: int = 0         # DMA into a freed buffer
    stale_remapped: int = 0         # DMA into a buffer mapped for something else
    faults: int = 0                 # device accesses to live mappings the IOMMU refused
                                    # (a stale entry with the old mapping's rights)
    wraps: int = 0
    resets: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    timeline: list[Sample] = field(default_factory=list, repr=False)
    failure_ops: list[int] = field(default_factory=list, repr=False)

    @property
    def verdict(self) -> str:
        """"n/a", "FAILS", "UNSAFE" (stale translations, or faults on live
        mappings) or "ok"."""
        if not self.applicable:
            return "n/a"
        if self.failures:
            return "FAILS"
        if self.stale_translations or self.faults:
            return "UNSAFE"
        return "ok"

    def __setstate__(self, state: Any) -> None:
        from .sim_checkpoint import check_result_state
        state = check_result_state(SimResult, state)
        self.__dict__.update(state)
        self.__dict__.setdefault("live_at_first_failure", None)

    def as_dict(self, timeline: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("timeline", "failure_ops"):
                continue
            v = getattr(self, f.name)
            if f.name == "params":
                v = {k: (list(x) if isinstance(x, tuple) else x) for k, x in v.items()}
            out[f.name] = v
        if not self.applicable:
            for key in _MEASURED:
                out[key] = None
        out["verdict"] = self.verdict
        if timeline:
            out["timeline"] = [s._asdict() for s in self.timeline]
            out["failure_ops"] = list(self.failure_ops)
        return out

    def _repr_html_(self) -> str:
        from .tables import result_html
        return result_html(self)


_MEASURED = ("ops", "elapsed_s", "ops_per_sec", "maps", "unmaps", "failures", "first_failure_op",
             "maps_before_failure", "live_at_first_failure", "skipped", "peak_live_pfns",
             "live_pfns", "space_pfns", "free_pfns", "largest_free_pfns", "fragmentation",
             "full_flushes", "iotlb_syncs", "syncs_skipped", "invalidations_lost", "accesses",
             "iotlb_hits", "iotlb_misses", "stale_translations", "stale_unmapped", "stale_remapped",
             "faults", "wraps", "resets")


# ---- setting a run up ---------------------------------------------------------------

def _make_iommu(driver: str, seed: Any, drop_rate: float) -> IommuDriver:
    return DRIVER_SPECS[driver].make(seed, drop_rate)


def policy_domain(pol: Policy, driver: str, seed: Any, kernel: str, drop_rate: float,
                  ncpus: int) -> tuple[IommuDomain, DmaCookie]:
    """A fresh IOMMU's DMA domain set up for the policy, with its cookie (not
    initialised yet: the first device attached decides its geometry)."""
    iommu = _make_iommu(driver, seed, drop_rate)
    dom = iommu.domain_alloc(DomainType.DMA)
    # The attribute is what the IPMMU reads to skip its per-unmap syncs under
    # wraparound; it must be set before the first attach.
    dom.set_attr(DomainAttr.IOVA_ALLOCATOR, pol.allocator)
    if pol.lazy:
        dom.set_attr(DomainAttr.DMA_USE_FLUSH_QUEUE, True)
    cookie = get_dma_cookie(dom, allocator=pol.allocator, rcache=pol.rcache, kernel=kernel,
                            ncpus=ncpus)
    return dom, cookie


def _setup(wl: Workload, pol: Policy, driver: str, seed: Any, kernel: str,
           drop_rate: float) -> tuple[IommuDomain, Device, DmaCookie]:
    """A fresh IOMMU, a DMA domain set up for the policy, the device attached."""
    dom, cookie = policy_domain(pol, driver, seed, kernel, drop_rate, wl.ncpus)
    dev = wl.device()
    dev.attach(dom)
    dma.dma_cookie(dev)        # iommu_dma_init_domain now, not inside the timed loop
    return dom, dev, cookie


def _teardown(dom: IommuDomain, dev: Device) -> None:
    dev.detach()
    put_dma_cookie(dom)
    dom.free()


# ---- the allocator's view of the space ----------------------------------------------

def _held_ranges(cookie: DmaCookie) -> list[tuple[int, int]]:
    """(lo, hi) pfn ranges the allocator holds (live, cached, retired), in order."""
    if cookie.type is AllocatorType.WRAPAROUND:
        # (a run's cookie is initialised: it has an allocator)
        return [(lo, hi) for lo, hi, _ in cookie.allocator.ranges()]  # type: ignore[union-attr]
    iovad = cookie.iovad
    return iovad.ranges() if iovad is not None else []


def _device_space(cookie: DmaCookie, dev: Device) -> tuple[int, int]:
    """[first, last] pfn the allocator may give this device."""
    first = cookie.stats().get("start_pfn", cookie.start_pfn)
    last = cookie.dma_limit(dev, min(dev.dma_mask, dev.coherent_dma_mask)) >> cookie.shift
    if cookie.type is AllocatorType.WRAPAROUND:
        last = min(last, cookie.stats()["end_pfn"])
    return first, last


def free_space(ranges: Iterable[tuple[int, int]], first: int, last: int) -> tuple[int, int]:
    """(free pfns, largest free run) in [first, last] around sorted, disjoint ranges."""
    free = largest = 0
    cur = first
    for lo, hi in ranges:
        if hi < cur:
            continue
        if lo > last:
            break
        if lo > cur:
            gap = lo - cur
            free += gap
            if gap > largest:
                largest = gap
        cur = hi + 1
    if cur <= last:
        gap = last - cur + 1
        free += gap
        if gap > largest:
            largest = gap
    return free, largest


def _runs(ranges: Sequence[tuple[int, int]], first: int, last: int,
          max_runs: int = 2048) -> tuple[tuple[tuple[int, int, int], ...], int]:
    """The held ranges merged into at most about max_runs runs: ranges closer
    than 1/max_runs of the extent in use are joined, each run keeping how many
    pfns it really holds."""
    if not ranges:
        return (), 0
    top = min(last, ranges[-1][1])
    join = max(1, (top - first + 1) // max_runs)
    out = []
    held = 0
    run_lo, run_hi, run_n = ranges[0][0], ranges[0][1], 0
    for lo, hi in ranges:
        n = hi - lo + 1
        held += n
        if lo - run_hi <= join:
            if hi > run_hi:
                run_hi = hi
            run_n += n
        else:
            out.append((run_lo, run_hi, run_n))
            run_lo, run_hi, run_n = lo, hi, n
    out.append((run_lo, run_hi, run_n))
    return tuple(out), held


# ---- the run ------------------------------------------------------------------------

class _RunState:
    """What the loop carries from one operation to the next, kept between
    the chunks of a Simulation (and in its checkpoints)."""
    __slots__ = ("pos", "addr", "objs", "live", "peak", "maps", "unmaps", "failures",
                 "skipped", "faults", "first_fail", "maps_before", "live_at_fail", "stopped")

    def __init__(self) -> None:
        self.pos = 0           # operations done
        self.addr: dict[Any, int] = {}   # handle -> DMA address
        self.objs: dict[Any, Any] = {}   # handle -> SgMapping / CoherentBuffer
        self.live = self.peak = self.maps = self.unmaps = self.failures = 0
        self.skipped = self.faults = 0
        self.first_fail: int | None = None
        self.maps_before: int | None = None
        self.live_at_fail: int | None = None
        self.stopped = False

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: Any) -> None:
        from .sim_checkpoint import check_run_state
        for name, value in check_run_state(state, self.__slots__).items():
            setattr(self, name, value)


class _Clock:
    """A run's timing: time spent sampling is kept out of ops/s."""
    __slots__ = ("t0", "sampling")

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.sampling = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.sampling


def _sampler(res: SimResult, cookie: DmaCookie, dom: IommuDomain, first: int, last: int,
             clock: _Clock) -> Callable[[int, int, int, int], None]:
    """sample(at, live, failures, full_flushes): appends a Sample to the
    timeline, the address space read from the allocator now."""
    iotlb = dom.iotlb

    def sample(at: int, live: int, failures: int, full_flushes: int) -> None:
        t = time.perf_counter()
        runs, held = _runs(_held_ranges(cookie), first, last)
        res.timeline.append(Sample(at, live, held, failures, full_flushes,
                                   iotlb.stats().stale_hits if iotlb is not None else 0, runs))
        clock.sampling += time.perf_counter() - t
    return sample


def _ticks(n: int, start: int, timeline: bool) -> tuple[int, int]:
    """(tick, first tick at or after start): progress is reported, and the
    timeline sampled, at multiples of tick (0 excluded)."""
    tick = max(1, min(4096, n // TIMELINE_SAMPLES)) if timeline else 4096
    return tick, max(tick, -(-start // tick) * tick)


def _live_handle(i: int, h: Any) -> WorkloadError:
    return WorkloadError("operation %d maps handle %r, which is still mapped (a workload "
                         "names a mapping again only once it is unmapped)" % (i, h))


def _run(ops: Iterable[tuple[Any, ...]], n: int, dev: Device, dom: IommuDomain,
         cookie: DmaCookie, res: SimResult, max_failures: int, progress: Progress | None,
         timeline: bool, first: int, last: int, state: _RunState | None = None) -> None:
    """The Python engine: executes the operations through the DMA API, one
    call at a time; fills res. The loop binds everything it calls to locals,
    keeps its counters in locals, and makes no objects of its own per
    operation: a million operations spend their time in the DMA API.

    ops are the operations from number state.pos on (state: a _RunState,
    fresh when None); n is the run's total, which the timeline's spacing
    depends on. The state is brought up to date at the end, so a run may be
    cut into chunks that together do exactly what one call would. An
    operation that raises leaves the state at the operations before it
    (state.pos is its index) and changes nothing itself when the DMA API
    refuses it before acting (misuse, bad arguments)."""
    if state is None:
        state = _RunState()
    start = state.pos
    map_page, unmap_page = dma.map_page, dma.unmap_page
    map_sg, unmap_sg = dma.map_sg, dma.unmap_sg
    alloc_coherent, free_coherent = dma.alloc_coherent, dma.free_coherent
    access = dev.dma_access
    advance = cookie.advance
    MappingError = errors.DmaMappingError
    Fault = IommuFault
    shift = cookie.shift
    gmask = cookie.granule - 1
    counts = dom.counts

    addr = state.addr
    objs = state.objs
    live, peak, maps, unmaps = state.live, state.peak, state.maps, state.unmaps
    failures, skipped, faults = state.failures, state.skipped, state.faults
    first_fail, maps_before = state.first_fail, state.maps_before
    live_at_fail = state.live_at_fail
    fail_ops = res.failure_ops
    label = res.policy

    tick, next_tick = _ticks(n, start, timeline)
    i = start - 1
    stopped = state.stopped
    raised = True
    sg: Any             # an SgMapping, or what a handle of another kind holds
    buf: Any            # a CoherentBuffer, likewise

    def failed(at: int, maps_so_far: int) -> bool:
        """Counts a failed map at op `at`; True when the run must stop."""
        nonlocal failures, first_fail, maps_before, live_at_fail, stopped
        failures += 1
        if first_fail is None:
            first_fail, maps_before, live_at_fail = at, maps_so_far, live
        if failures <= FAILURE_OPS_KEPT:
            fail_ops.append(at)
        stopped = failures >= max_failures
        return stopped

    clock = _Clock()
    sample = _sampler(res, cookie, dom, first, last, clock)
    if timeline and start == 0:
        sample(0, live, failures, counts.full_flushes)
        clock.sampling = 0.0
    try:
        for i, op in enumerate(ops, start):
            if i == next_tick:
                next_tick += tick
                if progress is not None:
                    progress(i, label)
                if timeline:
                    sample(i, live, failures, counts.full_flushes)
            code = op[0]
            if code == ACCESS:
                a = addr.get(op[1])
                if a is None:
                    skipped += 1
                else:
                    try:
                        access(a + op[2], op[3])
                    except Fault:
                        # Only a stale IOTLB entry can refuse an access to a live
                        # mapping made with the right direction: one left by an
                        # earlier mapping of the same IOVA with other rights.
                        faults += 1
            elif code == MAP_PAGE:
                _, h, paddr, size, d, cpu = op
                if h in addr:
                    raise _live_handle(i, h)
                try:
                    if cpu is None:
                        a = map_page(dev, paddr, size, d)
                    else:
                        a = map_page(dev, paddr, size, d, cpu=cpu)
                except MappingError:
                    if failed(i, maps):
                        break
                    continue
                addr[h] = a
                maps += 1
                live += ((a & gmask) + size + gmask) >> shift
                if live > peak:
                    peak = live
            elif code == UNMAP_PAGE:
                _, h, size, d, cpu = op
                a = addr.get(h)
                if a is None:
                    skipped += 1
                    continue
                if cpu is None:
                    unmap_page(dev, a, size, d)
                else:
                    unmap_page(dev, a, size, d, cpu=cpu)
                del addr[h]
                unmaps += 1
                live -= ((a & gmask) + size + gmask) >> shift
            elif code == ADVANCE:
                advance(op[1])
            elif code == MAP_SG:
                _, h, segs, d, cpu = op
                if h in addr:
                    raise _live_handle(i, h)
                try:
                    sg = map_sg(dev, segs, d, cpu=cpu)
                except MappingError:
                    if failed(i, maps):
                        break
                    continue
                addr[h] = sg.iova
                objs[h] = sg
                maps += 1
                live += sg.length >> shift
                if live > peak:
                    peak = live
            elif code == UNMAP_SG:
                _, h, d, cpu = op
                if h not in addr:
                    skipped += 1
                    continue
                sg = objs.get(h)        # a handle of another kind: unmap_sg refuses it
                unmap_sg(dev, sg, d, cpu=cpu)
                del addr[h], objs[h]
                unmaps += 1
                live -= sg.length >> shift
            elif code == ALLOC_COHERENT:
                _, h, size, cpu = op
                if h in addr:
                    raise _live_handle(i, h)
                try:
                    buf = alloc_coherent(dev, size, cpu=cpu)
                except MappingError:
                    if failed(i, maps):
                        break
                    continue
                addr[h] = buf.dma_addr
                objs[h] = buf
                maps += 1
                live += (size + gmask) >> shift
                if live > peak:
                    peak = live
            elif code == FREE_COHERENT:
                _, h, cpu = op
                if h not in addr:
                    skipped += 1
                    continue
                buf = objs.get(h)       # a handle of another kind: free_coherent refuses it
                free_coherent(dev, buf, cpu=cpu)
                del addr[h], objs[h]
                unmaps += 1
                live -= (buf.size + gmask) >> shift
            else:
                raise errors.IovaValueError("operation %d: unknown opcode %r" % (i, code))
        raised = False
    finally:
        done = i if raised else i + 1
        res.elapsed_s += clock.elapsed()
        state.pos = done
        state.live, state.peak, state.maps, state.unmaps = live, peak, maps, unmaps
        state.failures, state.skipped, state.faults = failures, skipped, faults
        state.first_fail, state.maps_before = first_fail, maps_before
        state.live_at_fail = live_at_fail
        state.stopped = stopped
        _results(res, state)
    if timeline and (done >= n or stopped) and (not res.timeline or
                                                res.timeline[-1].op != done):
        sample(done, live, failures, counts.full_flushes)
    if progress is not None:
        progress(done, label)


def _results(res: SimResult, state: _RunState) -> None:
    """The run's own counters, from its state, into res."""
    res.ops = state.pos
    res.ops_per_sec = state.pos / res.elapsed_s if res.elapsed_s > 0 else 0.0
    res.maps, res.unmaps, res.failures, res.skipped = (state.maps, state.unmaps,
                                                       state.failures, state.skipped)
    res.first_failure_op, res.maps_before_failure = state.first_fail, state.maps_before
    res.live_at_first_failure = state.live_at_fail
    res.stopped_early = state.stopped
    res.peak_live_pfns, res.live_pfns = state.peak, state.live
    res.faults = state.faults


def _run_native(stream: Any, count: int, n: int, dev: Device, dom: IommuDomain,
                cookie: DmaCookie, res: SimResult, max_failures: int,
                progress: Progress | None, timeline: bool, first: int, last: int,
                state: _RunState) -> None:
    """The C engine: the next `count` operations of `stream` (a NativeStream
    or PackedStream positioned at state.pos), with what _run does - the same
    ticks, samples, progress calls and counters. An operation the engine
    leaves to Python runs through _run; a run whose state the engine cannot
    take goes on in _run altogether."""
    start = state.pos
    end = start + count
    label = res.policy
    tick, next_tick = _ticks(n, start, timeline)
    clock = _Clock()
    sample = _sampler(res, cookie, dom, first, last, clock)
    eng = NativeEngine(dom, dev, cookie, max_failures, FAILURE_OPS_KEPT)
    loaded = python_rest = False
    try:
        eng.load(state)
        loaded = True
        if timeline and start == 0:
            sample(0, state.live, state.failures, dom.counts.full_flushes)
            clock.sampling = 0.0
        pos = start
        while pos < end and not state.stopped:
            if pos == next_tick:
                next_tick += tick
                if progress is not None:
                    progress(pos, label)
                if timeline:
                    st = eng.counters()
                    sample(pos, st.live, st.failures, st.full_flushes)
            run = eng.run(stream, min(end, next_tick) - pos)
            eng.take_failure_ops(res.failure_ops)
            pos += run.ops
            if run.status == lib.SIM_FALLBACK:
                # the operation at pos is the Python engine's to run
                eng.store(state)
                loaded = False
                op = stream.current()
                stream.skip(1)
                res.elapsed_s += clock.elapsed()
                _run((op,), n, dev, dom, cookie, res, max_failures, None, False, first, last,
                     state)
                clock = _Clock()
                eng.load(state)
                loaded = True
                pos = state.pos
            elif run.status == lib.SIM_RAISE:
                eng.store(state)
                loaded = False
                raise eng.exception(run)
            elif run.status == lib.SIM_STOPPED:
                eng.store(state)
                loaded = False
                break
            elif run.ops == 0 and stream.exhausted:
                break
    except NotExpressible:
        python_rest = True
    finally:
        if loaded:
            eng.store(state)
        eng.close()
        res.elapsed_s += clock.elapsed()
        _results(res, state)
    if python_rest:
        # the rest on the Python engine, from where the state stands
        _run(itertools.islice(stream.tuples(), end - state.pos), n, dev, dom, cookie, res,
             max_failures, progress, timeline, first, last, state)
        return
    done = state.pos
    if timeline and (done >= n or state.stopped) and (not res.timeline or
                                                      res.timeline[-1].op != done):
        sample(done, state.live, state.failures, dom.counts.full_flushes)
    if progress is not None:
        progress(done, label)


def _fill_counters(res: SimResult, dom: IommuDomain, cookie: DmaCookie, first: int,
                   last: int) -> None:
    c = dom.counters()
    res.full_flushes = c.full_flushes
    res.iotlb_syncs = c.syncs
    res.syncs_skipped = c.syncs_skipped
    res.invalidations_lost = c.invalidations_lost
    res.accesses = c.accesses
    res.iotlb_hits = c.iotlb_hits
    res.iotlb_misses = c.iotlb_misses
    res.stale_translations = c.stale_hits
    res.stale_unmapped = c.stale_unmapped
    res.stale_remapped = c.stale_remapped
    st = cookie.stats()
    res.wraps = st.get("wraps", 0)
    res.resets = cookie.resets
    res.space_pfns = last - first + 1
    res.free_pfns, res.largest_free_pfns = free_space(_held_ranges(cookie), first, last)
    res.fragmentation = (1.0 - res.largest_free_pfns / res.free_pfns) if res.free_pfns else 0.0


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    """The params argument as keywords for get_workload."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise errors.IovaTypeError("params must be a dict of workload parameters, not %s (%r)"
                                   % (type(params).__name__, params))
    return params


def _checked_run(workload: str | Workload, policy: str, driver: str, ops: int,
                 params: dict[str, Any] | None, kernel: str, max_failures: int,
                 engine: str = "auto", seed: Any = 1, drop_rate: float = 1.0,
                 timeline: bool = False, progress: Progress | None = None
                 ) -> tuple[Workload, int, Any, int, float]:
    """(the workload, ops, seed, max_failures, drop_rate) that simulate()
    and Simulation run, once every argument is known to be sound (see
    pyiova.sim_args); IovaValueError or PolicyNotApplicable otherwise."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise errors.IovaValueError("engine %r is not one of %s" % (engine, ", ".join(ENGINES)))
    wl = get_workload(workload, **_params(params))
    ops, seed, max_failures, drop_rate = sim_args.run_args(ops, seed, max_failures, drop_rate,
                                                           timeline, progress)
    kernel_rules(kernel)
    why = not_applicable(policy, driver, kernel)
    if why:
        raise PolicyNotApplicable("%s on %s: %s" % (policy, driver, why))
    return wl, ops, seed, max_failures, drop_rate


class EngineFallback(UserWarning):
    """engine="c" was asked for, and the Python engine ran instead (the
    message says why)."""


def _choose_engine(engine: str, dom: IommuDomain, dev: Device,
                   cookie: DmaCookie) -> tuple[str, str]:
    """(the engine that runs, why not the C one)."""
    if engine == "python":
        return "python", "asked for"
    why = why_not(dom, dev, cookie)
    if why is None:
        return "c", ""
    if engine == "c":
        warnings.warn(EngineFallback("the C engine cannot run this (%s): the Python engine "
                                     "runs it" % why), stacklevel=3)
    return "python", why


def simulate(workload: str | Workload, policy: str = "iova", driver: str = "ipmmu",
             ops: int = DEFAULT_OPS, seed: Any = 1, progress: Progress | None = None, *,
             params: dict[str, Any] | None = None, kernel: str = "6.12",
             max_failures: int = DEFAULT_MAX_FAILURES, drop_rate: float = 1.0,
             timeline: bool = False, engine: str = "auto") -> SimResult:
    """Runs `ops` operations of a workload through one policy; a SimResult.

    workload      a name ("usb", "nic", "nvme", "random") or a Workload
    params        the workload's parameters, when it is given by name
    policy        see the module's docstring; PolicyNotApplicable when it
                  cannot run on this driver (not_applicable() says why)
    driver        "ipmmu", "generic" or a registered driver's name
    kernel        "6.12", "6.1" or "4.10" dma-iommu and iova.c rules
    max_failures  failed maps after which the run stops (stopped_early)
    drop_rate     ipmmu: probability that an unmap-path flush is lost
    progress      called now and then as progress(operations done, policy name)
    timeline      record TIMELINE_SAMPLES samples of the address space (for plots)
    engine        "auto" (the C engine when the driver declares its behaviour,
                  else the Python engine), "c" (the same, with an
                  EngineFallback warning when it cannot) or "python" (the
                  reference loop); both give the same result (res.engine says
                  which ran, res.engine_note why not the C one)
    """
    wl, ops, seed, max_failures, drop_rate = _checked_run(
        workload, policy, driver, ops, params, kernel, max_failures, engine, seed, drop_rate,
        timeline, progress)
    res = SimResult(wl.name, policy, driver, seed, kernel=kernel, ops_requested=ops,
                    params=wl.params)
    dom, dev, cookie = _setup(wl, POLICIES[policy], driver, seed, kernel, drop_rate)
    try:
        first, last = _device_space(cookie, dev)
        res.engine, res.engine_note = _choose_engine(engine, dom, dev, cookie)
        if res.engine == "c":
            _run_native(stream_for(wl, seed, lambda: wl.ops(ops, seed)), ops, ops, dev, dom,
                        cookie, res, max_failures, progress, timeline, first, last,
                        _RunState())
        else:
            _run(wl.ops(ops, seed), ops, dev, dom, cookie, res, max_failures, progress,
                 timeline, first, last)
        _fill_counters(res, dom, cookie, first, last)
    finally:
        _teardown(dom, dev)
    return res


class Simulation:
    """simulate(), one chunk at a time, with checkpoints in between.

        s = Simulation("usb", policy="wraparound", driver="ipmmu", ops=200_000, seed=1)
        s.run(50_000)                       # the first 50 000 operations
        blob = pickle.dumps(s)              # a checkpoint (or copy.deepcopy(s))
        r = s.run().result()                # on to the end
        r2 = pickle.loads(blob).run().result()    # the same SimResult, timing aside

    The arguments are simulate()'s. A checkpoint holds the whole simulated
    system - driver, domain, cookie, device, the DMA addresses the
    workload's handles hold, the counters - and where the run stands; the
    workload's operations are not stored but generated again from the seed.
    close() releases the domain (result() stays readable).
    """

    def __init__(self, workload: str | Workload, policy: str = "iova", driver: str = "ipmmu",
                 ops: int = DEFAULT_OPS, seed: Any = 1, *,
                 params: dict[str, Any] | None = None, kernel: str = "6.12",
                 max_failures: int = DEFAULT_MAX_FAILURES, drop_rate: float = 1.0,
                 timeline: bool = False, engine: str = "auto") -> None:
        wl, ops, seed, max_failures, drop_rate = _checked_run(
            workload, policy, driver, ops, params, kernel, max_failures, engine, seed, drop_rate,
            timeline)
        self.workload = wl
        self.seed = seed
        self.total = ops
        self.max_failures = max_failures
        self.timeline = timeline
        self._res = SimResult(wl.name, policy, driver, seed, kernel=kernel, ops_requested=ops,
                              params=wl.params)
        self._dom, self._dev, self._cookie = _setup(wl, POLICIES[policy], driver, seed, kernel,
                                                    drop_rate)
        self._first, self._last = _device_space(self._cookie, self._dev)
        self._res.engine, self._res.engine_note = _choose_engine(engine, self._dom, self._dev,
                                                                 self._cookie)
        self._state = _RunState()
        self._ops: Any = None      # the operation stream, positioned at _state.pos
        self._closed = False

    @property
    def done(self) -> int:
        """Operations executed so far."""
        return self._state.pos

    @property
    def finished(self) -> bool:
        """All operations done, or the run stopped early."""
        return self._state.pos >= self.total or self._state.stopped

    @property
    def domain(self) -> IommuDomain:
        return self._dom

    @property
    def device(self) -> Device:
        return self._dev

    def run(self, n: int | None = None, progress: Progress | None = None) -> Simulation:
        """Executes the next n operations (all that are left when None);
        returns self."""
        if self._closed:
            raise errors.IovaClosed("the simulation was closed")
        left = self.total - self._state.pos
        if n is not None:
            n = sim_args.op_count(n, "n")
        sim_args.progress_callback(progress)
        if n is None or n > left:
            n = left
        if n == 0 or self._state.stopped:
            return self
        if self._ops is None:
            # a new or restored run: the stream again from the seed, up to where it stands
            self._ops = self._stream()
        try:
            if self._res.engine == "c":
                _run_native(self._ops, n, self.total, self._dev, self._dom, self._cookie,
                            self._res, self.max_failures, progress, self.timeline,
                            self._first, self._last, self._state)
            else:
                _run(itertools.islice(self._ops, n), self.total, self._dev, self._dom,
                     self._cookie, self._res, self.max_failures, progress, self.timeline,
                     self._first, self._last, self._state)
        except BaseException:
            # the operation that raised is not done: a later run starts with it again
            self._ops = None
            raise
        return self

    def _stream(self) -> Iterator[Any]:
        """The workload's operations from number _state.pos on: tuples for
        the Python engine, records for the C engine."""
        wl, pos = self.workload, self._state.pos
        if self._res.engine != "c":
            return itertools.islice(wl.ops(self.total, self.seed), pos, None)
        stream = stream_for(wl, self.seed,
                            lambda: itertools.islice(wl.ops(self.total, self.seed), pos, None))
        if isinstance(stream, NativeStream):
            stream.skip(pos)
        return stream

    def result(self) -> SimResult:
        """A SimResult of the run so far (a copy: later chunks do not change it)."""
        res = copy.deepcopy(self._res)
        if not self._closed:
            _fill_counters(res, self._dom, self._cookie, self._first, self._last)
        return res

    def close(self) -> None:
        """Detaches the device and frees the domain; idempotent."""
        if not self._closed:
            self._res = self.result()
            self._closed = True
            _teardown(self._dom, self._dev)

    # -- pickling and deepcopy (checkpoints) ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        if self._closed:
            raise errors.IovaClosed("the simulation was closed: there is nothing to save")
        state = self.__dict__.copy()
        state["_ops"] = None       # a generator: made again from the seed when resumed
        return state

    def __setstate__(self, state: Any) -> None:
        from .sim_checkpoint import check_simulation_state
        check_simulation_state(state, SimResult, _RunState)
        self.__dict__.update(state)

    def _check_restored(self) -> None:
        from .sim_checkpoint import check_simulation
        check_simulation(self)

    def __repr__(self) -> str:
        r = self._res
        return "<Simulation %s %s on %s: %d/%d ops%s>" % (
            r.workload, r.policy, r.driver, self._state.pos, self.total,
            " closed" if self._closed else "")


def _offset(progress: Progress | None, base: int) -> Progress | None:
    """progress, shifted by the operations of the runs before this one."""
    if progress is None:
        return None
    return lambda done, label: progress(base + done, label)


_COMPARE_KEYWORDS = frozenset(("params", "kernel", "max_failures", "drop_rate", "timeline",
                               "engine"))


def compare(workload: str | Workload, policies: str | Iterable[str] = DEFAULT_POLICIES,
            driver: str = "ipmmu", ops: int = DEFAULT_OPS, seed: Any = 1,
            progress: Progress | None = None, **kw: Any) -> ResultList:
    """simulate() for each policy, same workload and seed; a list of
    SimResult in the order given (a ResultList: a table in Jupyter,
    .to_pandas()). A policy that cannot run on the driver
    gets a result with applicable=False and the reason in .note. progress
    is called as progress(operations done across all runs, policy name)."""
    unknown = sorted(set(kw) - _COMPARE_KEYWORDS)
    if unknown:
        raise errors.IovaTypeError("compare() takes no argument %s (it passes on: %s)"
                                   % (", ".join(unknown), ", ".join(sorted(_COMPARE_KEYWORDS))))
    wl = get_workload(workload, **_params(kw.pop("params", None)))
    kernel = kw.get("kernel", "6.12")
    # a name or "a,b" is a list of names; unknown ones fail before anything runs
    policies = sim_args.policy_names(policies, POLICIES)
    for p in policies:
        not_applicable(p, driver, kernel)
    out = ResultList()
    offset = 0
    for p in policies:
        why = not_applicable(p, driver, kernel)
        if why:
            out.append(SimResult(wl.name, p, driver, seed, kernel=kernel, applicable=False,
                                 note=why, ops_requested=ops, params=wl.params))
            continue
        r = simulate(wl, p, driver, ops, seed, _offset(progress, offset), **kw)
        offset += ops
        if progress is not None:
            progress(offset, p)
        out.append(r)
    return out
