"""The C simulation engine (csrc/sim_engine.c) seen from Python: what it
needs to know of a run's objects, and the state it takes in and gives back.

Between runs the Python objects hold the state - the domain's counters and
clock, the cookie's clock, counts and live DMA mappings, the coherent pages'
allocator, the IPMMU's random state and dirty flag, the run's handles - so a
Simulation pickles as it always did and either engine can carry on from it.
NativeEngine.load copies that state into a new C engine; store copies the
engine's back. The C structures (allocator, page table, IOTLB) are shared.

why_not(dom, dev, cookie) says why a run cannot go through the C engine
(None when it can): a driver that declares no EngineProfile, a subclassed
domain, device or cookie, a cookie that is not set up.
"""
from __future__ import annotations

from ..error_codes import error as _code_error
from .._pyiova import ffi, lib
from ..allocators import AllocatorType
from ..cookie import DmaCookie
from ..device import Device
from ..dma import CoherentBuffer, PhysAllocator, SgMapping, _Mapping
from ..iommu import IommuDomain
from ..iotlb import fault_error
from .records import DIRECTIONS, is_u64

__all__ = ["NativeEngine", "why_not", "NotExpressible"]

_U64 = 1 << 64
_NONE = lib.SIM_NONE
_KINDS = {"page": lib.SIM_KIND_PAGE, "sg": lib.SIM_KIND_SG, "coherent": lib.SIM_KIND_COHERENT}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
_OBJ_KINDS = {SgMapping: "sg", CoherentBuffer: "coherent"}
_COUNTS = ("maps", "unmaps", "short_unmaps", "syncs", "syncs_skipped", "full_flushes",
           "invalidations_lost", "idle_flushes")
_STATE_COUNTS = ("dom_maps", "dom_unmaps", "short_unmaps", "syncs", "syncs_skipped",
                 "full_flushes", "invalidations_lost", "idle_flushes")


class NotExpressible(Exception):
    """The run's state holds something the C engine cannot take (a handle
    that is not a 64-bit integer, a clock past 2**64...)."""


def why_not(dom, dev, cookie) -> str | None:
    """Why this domain, device and cookie cannot run on the C engine, or None."""
    if type(dom) is not IommuDomain or dom.closed or dom.pgtable is None or dom.iotlb is None:
        return "the domain is not a plain IommuDomain with a page table and an IOTLB"
    if type(dev) is not Device or dev.domain is not dom:
        return "the device is not a plain Device attached to the domain"
    if type(cookie) is not DmaCookie or not cookie.initialised:
        return "the domain's cookie is not a plain, initialised DmaCookie"
    if dom.ops.engine_profile(dom) is None:  # type: ignore[attr-defined]  # (IommuDriver's)
        return "the driver %s declares no engine profile" % type(dom.ops).__name__
    return None


class NativeEngine:
    """One C engine over a run's objects, loaded from their state."""

    def __init__(self, dom, dev, cookie, max_failures, failure_ops_cap) -> None:
        self.dom, self.dev, self.cookie = dom, dev, cookie
        self.profile = dom.ops.engine_profile(dom)
        self.max_failures = max_failures
        self.failure_ops_cap = failure_ops_cap
        self._e = None
        self._run = ffi.new("struct sim_run *")
        # iovas of the mappings handed to the engine
        self._imported: tuple[int, ...] | list[int] = ()
        self._fail_buf = ffi.new("uint64_t[]", 1024)

    # ---- state in ------------------------------------------------------------
    def _config(self):
        dom, dev, cookie, prof = self.dom, self.dev, self.cookie, self.profile
        geo = dom.geometry
        phys = cookie.__dict__.get("dma_phys")
        iovad = cookie.iovad
        return ffi.new("struct sim_config *", dict(
            cookie=cookie.allocator._c, iovad=iovad._d if iovad is not None else ffi.NULL,
            pgtable=dom.pgtable.ptr, iotlb=dom.iotlb.ptr,
            msi=cookie.type is AllocatorType.MSI, lazy=bool(cookie.flush_queue),
            shift=cookie.shift,
            stream_limit=cookie.dma_limit(dev, dev.dma_mask),
            coherent_limit=cookie.dma_limit(dev, dev.coherent_dma_mask),
            try_32bit=bool(getattr(dev, "is_pci", False)) and not cookie.forcedac,
            sticky_no32=cookie.sticky_no_32bit, dma_mask=dev.dma_mask, dev_id=dev.id,
            aperture_forced=geo.force_aperture, ap_start=geo.aperture_start,
            ap_end=geo.aperture_end,
            invalidation=lib.SIM_INVAL_RANGE if prof.invalidation == "range"
            else lib.SIM_INVAL_CONTEXT,
            skip_syncs=prof.skip_syncs, erratum=prof.erratum, drop_rate=prof.drop_rate,
            flush_when_idle=prof.flush_when_idle, max_failures=self.max_failures,
            failure_ops_cap=self.failure_ops_cap,
            phys_base=phys.base if phys is not None else PhysAllocator().base,
            phys_page=phys.page if phys is not None else PhysAllocator().page,
            ncpus=cookie.ncpus))

    def load(self, state) -> None:
        """A new C engine from the Python objects and the run's _RunState."""
        self.close()
        # read again: what it says of the driver's state changes between runs
        self.profile = self.dom.ops.engine_profile(self.dom)
        dom, cookie, prof = self.dom, self.cookie, self.profile
        phys = cookie.__dict__.get("dma_phys")
        st = ffi.new("struct sim_state *")
        for name in ("pos", "live", "peak", "maps", "unmaps", "failures", "skipped", "faults"):
            setattr(st, name, getattr(state, name))
        st.first_fail = _NONE if state.first_fail is None else state.first_fail
        st.maps_before = state.maps_before or 0
        st.live_at_fail = state.live_at_fail or 0
        st.stopped = state.stopped
        st.op_count = dom._op
        for py, c in zip(_COUNTS, _STATE_COUNTS):
            setattr(st, c, getattr(dom.counts, py))
        st.dirty = prof.dirty
        st.no32 = self.dev in cookie._no_32bit
        st.cookie_flushes, st.cookie_resets = cookie.flushes, cookie.resets
        st.phys_next = phys._next if phys is not None else PhysAllocator().base
        if prof.rng is not None:
            words = prof.rng.getstate()[1]
            st.rng.mt = list(words[:624])
            st.rng.index = words[624]
        try:
            st.clock_ms = cookie.clock_ms
        except OverflowError:
            raise NotExpressible("the cookie's clock is past 2**64 ms") from None
        err = ffi.new("int *")
        e = lib.sim_engine_new(self._config(), st, err)
        if e == ffi.NULL:
            if err[0] != lib.IOVA_E_ARG:
                raise _code_error(err[0], where="creating the simulation engine")
            raise NotExpressible("the engine refused the run's configuration")
        self._e = ffi.gc(e, lib.sim_engine_destroy)
        self._load_mappings(state)
        if phys is not None:
            for pages, spare in phys._free.items():
                for paddr in spare:
                    if not is_u64(paddr) or lib.sim_engine_push_spare(self._e, pages, paddr):
                        raise NotExpressible("a spare coherent page the engine cannot hold")

    def _load_mappings(self, state) -> None:
        live = self.cookie.dma_mappings
        gmask = self.cookie.granule - 1
        shift = self.cookie.shift
        imported = []
        m = ffi.new("struct sim_mapping *")
        for h, a in state.addr.items():
            obj = state.objs.get(h)
            kind = _OBJ_KINDS.get(type(obj), "page" if obj is None else None)
            if kind is None or not is_u64(h) or not is_u64(a):
                raise NotExpressible("handle %r holds what the engine cannot" % (h,))
            iova = a & ~gmask
            dm = live.get(iova)
            orphan = dm is None or dm.dev is not self.dev or dm.kind != kind
            segs = ffi.NULL
            ffi.buffer(m)[:] = bytes(ffi.sizeof(m[0]))
            m.handle, m.kind, m.dma_addr, m.iova, m.orphan = h, _KINDS[kind], a, iova, orphan
            if not orphan:
                m.dir, m.size, m.length = int(dm.direction), dm.size, dm.length
                imported.append(iova)
            if kind == "page":
                m.live_pfns = (m.length >> shift) if not orphan else 0
            elif kind == "sg":
                m.live_pfns = obj.length >> shift
                flat = [v for seg in obj.segments for v in seg]
                m.nsegs = len(obj.segments)
                segs = ffi.new("uint64_t[]", flat)
            else:
                m.buf_size, m.paddr = obj.size, obj.paddr
                m.live_pfns = (obj.size + gmask) >> shift
            r = lib.sim_engine_add_mapping(self._e, m, segs)
            if r and r != lib.IOVA_E_ARG:
                raise _code_error(r, where="in the simulation engine's handles")
            if r:
                raise NotExpressible("handle %r: a mapping the engine cannot take" % (h,))
        self._imported = imported

    # ---- running ---------------------------------------------------------------
    def run(self, stream, max_ops):
        """Runs up to max_ops operations of stream; the struct sim_run."""
        r = stream.run(self._e, max_ops, self._run)
        if r:
            raise _code_error(r, where="in the simulation engine", what="a chunk of operation "
                              "records")
        return self._run

    def counters(self):
        """The engine's struct sim_state now (for samples between runs)."""
        st = ffi.new("struct sim_state *")
        lib.sim_engine_get_state(self._e, st)
        return st

    def take_failure_ops(self, out) -> None:
        while True:
            n = lib.sim_engine_take_failure_ops(self._e, self._fail_buf, 1024)
            if n <= 0:
                return
            out.extend(self._fail_buf[0:n])

    def check(self) -> None:
        msg = ffi.new("char[]", 256)
        r = lib.sim_engine_check(self._e, msg, 256)
        if r:
            raise _code_error(r, report=ffi.string(msg).decode(), what="the engine")

    # ---- state out -------------------------------------------------------------
    def store(self, state) -> None:
        """Copies the engine's state back into the Python objects and state."""
        dom, cookie, dev = self.dom, self.cookie, self.dev
        st = self.counters()
        for name in ("pos", "live", "peak", "maps", "unmaps", "failures", "skipped", "faults"):
            setattr(state, name, getattr(st, name))
        state.first_fail = None if st.first_fail == _NONE else st.first_fail
        state.maps_before = None if st.first_fail == _NONE else st.maps_before
        state.live_at_fail = None if st.first_fail == _NONE else st.live_at_fail
        state.stopped = bool(st.stopped)
        dom._op = st.op_count
        for py, c in zip(_COUNTS, _STATE_COUNTS):
            setattr(dom.counts, py, getattr(st, c))
        dom.ops.engine_store(dom, bool(st.dirty))
        if self.profile.rng is not None:
            old = self.profile.rng.getstate()
            self.profile.rng.setstate((old[0], tuple(st.rng.mt) + (st.rng.index,), old[2]))
        if st.no32:
            cookie._no_32bit.add(dev)
        else:
            cookie._no_32bit.discard(dev)
        cookie.flushes, cookie.resets, cookie.clock_ms = (st.cookie_flushes, st.cookie_resets,
                                                          st.clock_ms)
        self._store_phys(st)
        self._store_mappings(state)

    def _store_phys(self, st) -> None:
        phys = self.cookie.__dict__.get("dma_phys")
        n = lib.sim_engine_spares(self._e, ffi.NULL, 0)
        buf = ffi.new("uint64_t[]", 2 * n + 2)
        n = lib.sim_engine_spares(self._e, buf, n)
        if phys is None:
            if not n and st.phys_next == PhysAllocator().base:
                return                        # no coherent buffer yet: none made
            phys = self.cookie.dma_phys = PhysAllocator()
        phys._next = st.phys_next
        # (the emptied lists stay)
        spares: dict[int, list[int]] = {pages: [] for pages in phys._free}
        for i in range(n):
            spares.setdefault(buf[2 * i], []).append(buf[2 * i + 1])
        phys._free = spares

    def _store_mappings(self, state) -> None:
        live = self.cookie.dma_mappings
        for imported in self._imported:
            live.pop(imported, None)
        n = lib.sim_engine_mappings(self._e, ffi.NULL, 0)
        out = ffi.new("struct sim_mapping[]", n + 1)
        n = lib.sim_engine_mappings(self._e, out, n)
        addr, objs = {}, {}
        gmask = self.cookie.granule - 1
        dev = self.dev
        for i in range(n):
            m = out[i]
            kind = _KIND_NAMES[m.kind]
            h = m.handle
            addr[h] = m.dma_addr
            if kind == "sg":
                words = ffi.new("uint64_t[]", 2 * m.nsegs)
                lib.sim_engine_segments(self._e, h, words, 2 * m.nsegs)
                segs, dma_addrs, done = [], [], 0
                for k in range(m.nsegs):
                    p, length = words[2 * k], words[2 * k + 1]
                    segs.append((p, length))
                    dma_addrs.append(m.iova + done + (p & gmask))
                    done += ((p & gmask) + length + gmask) & ~gmask
                objs[h] = SgMapping(m.iova, m.length, segs, dma_addrs)
            elif kind == "coherent":
                objs[h] = CoherentBuffer(m.paddr, m.dma_addr,  # type: ignore[assignment]
                                         m.buf_size)
            if not m.orphan:
                live[m.iova] = _Mapping(dev, m.size, DIRECTIONS[m.dir], kind, m.length,
                                        m.dma_addr, m.paddr if kind == "coherent" else 0)
        state.addr, state.objs = addr, objs

    def exception(self, run):
        """What the Python path raises where the engine reported SIM_RAISE."""
        where, code = run.where, run.code
        a0, a1, a2, a3 = run.a0, run.a1, run.a2, run.a3
        allocator = self.cookie.allocator
        cpu = None if a2 == _U64 - 1 else a2
        if where == lib.SIM_AT_APERTURE:
            return self.dom._outside(a0, a1)
        if where == lib.SIM_AT_PT_MAP:
            return self.dom.pgtable._map_error(code, a0, a1, a2, a3)
        if where == lib.SIM_AT_PT_UNMAP:
            return self.dom.pgtable._unmap_error(code, a0, a1, a2)
        if where == lib.SIM_AT_FREE:
            return allocator._error(code, pfn=a0, pages=a1, cpu=cpu)
        if where == lib.SIM_AT_FREE_LAZY:
            return allocator._free_lazy_error(code, a0, a1, cpu)
        if where == lib.SIM_AT_FQ_FLUSHED:
            return allocator._fq_flushed_error(code, a1)
        if where == lib.SIM_AT_FQ_FULL:
            return _code_error(lib.IOVA_E_FQ_FULL)
        if where == lib.SIM_AT_ACCESS:
            return fault_error(code, a0, bool(a1), self.dev.name)
        if where == lib.SIM_AT_ADVANCE:
            return self.cookie.iovad._error(code)
        if where == lib.SIM_AT_NOMEM:
            return _code_error(lib.IOVA_E_NOMEM, where="in the simulation engine")
        return _code_error(code, where="in the simulation engine", what="the engine")

    def close(self) -> None:
        if self._e is not None:
            ffi.release(self._e)
            self._e = None
