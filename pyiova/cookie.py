"""The dma-iommu cookie: which IOVA allocator a domain uses, and the
kernel's rules for turning a DMA request into an allocation (README.md,
"Cookies, allocator types and the DMA API"; docs/kernels.md for what each
kernel version changes).

    cookie = get_dma_cookie(domain)                 # iommu_get_dma_cookie
    cookie = get_msi_cookie(domain, base)           # iommu_get_msi_cookie (unmanaged domains)
    put_dma_cookie(domain)                          # iommu_put_dma_cookie

    iova = cookie.alloc_iova(dev, size, dma_limit)  # iommu_dma_alloc_iova; 0 = failure
    cookie.free_iova(iova, size)                    # iommu_dma_free_iova

The allocation itself happens in C (pyiova.allocators); this layer holds
the byte <-> pfn arithmetic, the limit rules, the PCI 32-bit-first flag,
and hands the IOMMU driver the flushes and resets the allocators ask for.
A DmaCookie also works without an IommuDomain (trace replay): give
init_domain the granule and aperture directly.
"""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, NoReturn

from . import _state
from . import errors
from ._args import as_cpu as _as_cpu
from ._args import as_integer as _as_integer
from ._args import as_u64 as _as_u64
from ._args import granule_error as _granule_error
from ._args import granule_ok as _granule_ok
from .allocators import (EV_FLUSH, EV_NO_32BIT, EV_QUEUED, EV_RESET, AllocatorType, PfnAllocator,
                         allocator_type)
from .error_codes import error as _code_error
from ._pyiova import lib
from .iova import KERNELS, IovaDomain, kernel_rules
from .phys import PhysAllocator

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import SupportsIndex

    from typing_extensions import Self

    from .dma import _Mapping

__all__ = ["DmaCookie", "get_dma_cookie", "get_msi_cookie", "put_dma_cookie", "cookie_of",
           "FQ_SIZE", "FQ_TIMEOUT_MS"]

FQ_SIZE = 256          # slots per CPU ring (mainline); a ring holds FQ_SIZE - 1
FQ_TIMEOUT_MS = 10     # the flush queue's timer

_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1
_MAX_CPUS = lib.IOVA_MAX_CPUS
# Cookies of domains that have no iova_cookie slot (any object can hold one).
_cookies: weakref.WeakKeyDictionary[Any, DmaCookie | None] = weakref.WeakKeyDictionary()


def _flag(name: str, value: Any) -> bool:
    """A flag must be a bool: "no" is not False."""
    if not isinstance(value, bool):
        raise errors.IovaTypeError("%s must be a bool, not %s (%r)"
                                   % (name, type(value).__name__, value))
    return value


def _min_not_zero(a: int, b: int) -> int:
    if not a:
        return b
    if not b:
        return a
    return min(a, b)


def _regions(reserved: Iterable[tuple[SupportsIndex, SupportsIndex]]) -> list[tuple[int, int]]:
    """The reserved regions as (lo, hi) byte addresses, each checked, so that
    init_domain refuses a bad one before it builds anything."""
    try:
        items = list(reserved)
    except TypeError:
        raise errors.IovaTypeError("reserved must be an iterable of (lo, hi) pairs, not %s (%r)"
                                   % (type(reserved).__name__, reserved)) from None
    regions = []
    for i, region in enumerate(items):
        try:
            lo, hi = region
        except (TypeError, ValueError):
            raise errors.IovaTypeError("reserved[%d] must be a (lo, hi) pair, not %r"
                                       % (i, region)) from None
        regions.append((_as_u64("reserved[%d] lo" % i, lo), _as_u64("reserved[%d] hi" % i, hi)))
    return regions


class DmaCookie:
    """struct iommu_dma_cookie: an allocator type and its state.

    allocator  "iova" (the kernel's tree + rcache, the default), "msi",
               "wraparound" or "reset-when-empty"
    kernel     "6.12" (mainline dma-iommu), "6.1" (a PCI device tries below
               4 GiB on every allocation, not only until the first failure;
               6.1's iova.c depot) or "4.10" (the 4.10/4.11 path: tree only,
               32-bit attempt on every PCI allocation)
    ncpus      CPU slots of the rcache and the flush queue
    domain     the IommuDomain it belongs to (for flushes and resets), or None
    rcache     False: the "iova" allocator uses the tree alone (policy "iova-tree")
    """

    # The allocator is None until init_domain (the first attach); so are the
    # geometry's numbers, which only an initialised cookie's callers read.
    allocator: PfnAllocator | None
    granule: int
    shift: int
    start_pfn: int
    aperture_end: int

    def __init__(self, allocator: AllocatorType | str = AllocatorType.IOVA, *,
                 kernel: str = "6.12", ncpus: int = 1, domain: Any = None,
                 msi_base: SupportsIndex | None = None, forcedac: bool = False,
                 rcache: bool = True) -> None:
        self.type = allocator_type(allocator)
        kernel_rules(kernel)
        self.kernel = kernel
        self.ncpus = ncpus
        self.forcedac = _flag("forcedac", forcedac)
        self.rcache = _flag("rcache", rcache)
        self._domain = weakref.ref(domain) if domain is not None else None
        self.msi_base = msi_base
        self.allocator = None          # a PfnAllocator, once init_domain has run
        self.granule = self.shift = None  # type: ignore[assignment]
        self.start_pfn = None  # type: ignore[assignment]
        self.aperture_end = None  # type: ignore[assignment]
        self.force_aperture = False
        self.flush_queue = False
        self.clock_ms = 0              # the flush queue's simulated clock
        self._no_32bit: set[Any] = set()  # devices whose 32-bit-first attempt failed (6.12)
        self.flushes = 0               # full IOTLB flushes the cookie asked for
        self.resets = 0
        self.dma_mappings: dict[int, _Mapping] = {}   # live DMA API mappings (pyiova.dma)
        self.dma_phys = PhysAllocator()  # pages of its coherent buffers (pyiova.dma)
        self._init_lock = threading.Lock()   # devices may probe from several threads

    # ---- setup ----------------------------------------------------------------
    @property
    def domain(self) -> Any:
        return self._domain() if self._domain is not None else None

    @property
    def initialised(self) -> bool:
        return self.allocator is not None

    def init_domain(self, granule: int, aperture_start: SupportsIndex = 0,
                    aperture_end: SupportsIndex = (1 << 64) - 1, force_aperture: bool = False,
                    *, end_pfn: SupportsIndex | None = None, flush_queue: bool = False,
                    reserved: Iterable[tuple[SupportsIndex, SupportsIndex]] = ()) -> Self:
        """iommu_dma_init_domain: the first device attach. Re-initialising
        with another granule or start is refused, as in the kernel."""
        if isinstance(granule, bool) or not isinstance(granule, int) or not _granule_ok(granule):
            raise _granule_error(granule)
        # every argument is checked before the cookie changes at all
        force_aperture = _flag("force_aperture", force_aperture)
        flush_queue = _flag("flush_queue", flush_queue)
        aperture_start = _as_u64("aperture_start", aperture_start)
        aperture_end = _as_u64("aperture_end", aperture_end)
        if end_pfn is not None:
            end_pfn = _as_u64("end_pfn", end_pfn)
        msi_base = None
        if self.type is AllocatorType.MSI:
            msi_base = aperture_start if self.msi_base is None else \
                _as_u64("msi_base", self.msi_base)
            if msi_base >> (granule.bit_length() - 1) == 0:
                # alloc_iova answers 0 for "no space": a doorbell at IOVA 0
                # would read as a failure, and be leaked
                raise errors.IovaValueError(
                    "msi_base %#x is in the first %#x-byte page: IOVA 0 is what alloc_iova "
                    "returns for a failure" % (msi_base, granule))
        elif self.msi_base is not None:
            _as_u64("msi_base", self.msi_base)
        regions = _regions(reserved)
        with self._init_lock:
            return self._init_locked(granule, aperture_start, aperture_end, force_aperture,
                                     end_pfn, flush_queue, regions, msi_base)

    def _init_locked(self, granule: int, aperture_start: int, aperture_end: int,
                     force_aperture: bool, end_pfn: int | None, flush_queue: bool,
                     reserved: list[tuple[int, int]], msi_base: int | None) -> Self:
        shift = granule.bit_length() - 1
        if self.kernel == "6.12" or force_aperture:
            start_pfn = max(1, aperture_start >> shift)
        else:
            # 6.1 and 4.10 start at the device's DMA base (0 here: x86, and
            # arm64 without dma-ranges) and raise that to the aperture's
            # start only when the domain forces its aperture
            start_pfn = 1
        if self.initialised:
            if (granule, start_pfn) != (self.granule, self.start_pfn):
                raise errors.IovaValueError(
                    "cookie already initialised with granule %#x, start pfn %#x; not %#x, %#x"
                    % (self.granule, self.start_pfn, granule, start_pfn))
            return self
        # Build everything first and publish it last, the allocator at the
        # very end: a build that fails leaves the cookie as it was, and the
        # DMA layer's fast path reads the cookie without the lock once the
        # allocator is set.
        lazy = False
        allocator: PfnAllocator
        if self.type is AllocatorType.MSI:
            assert msi_base is not None        # (init_domain sets it for this type)
            allocator = PfnAllocator("msi", granule=granule, start_pfn=msi_base >> shift,
                                     end_pfn=min(aperture_end, (1 << 62) - 1) >> shift)
        elif self.type is AllocatorType.WRAPAROUND:
            top = aperture_end if force_aperture else _U32_MAX
            allocator = PfnAllocator("wraparound", granule=granule, start_pfn=start_pfn,
                                     end_pfn=top >> shift)
            for lo, hi in reserved:
                allocator.reserve(lo >> shift, hi >> shift)
        else:
            kw: dict[str, Any] = {}
            if self.kernel == "4.10":
                # 4.10 passes the domain's end pfn as its 32-bit boundary
                end = end_pfn if end_pfn is not None else (
                    min(aperture_end, _U32_MAX) if force_aperture else _U32_MAX) >> shift
                kw["dma_32bit_pfn"] = max(end, start_pfn)
            iovad = IovaDomain(granule, start_pfn, ncpus=self.ncpus, kernel=self.kernel, **kw)
            for lo, hi in reserved:
                iovad.reserve(lo >> shift, hi >> shift)
            allocator = PfnAllocator(self.type, iovad=iovad)
            if not self.rcache and self.type is AllocatorType.IOVA:
                allocator.bypass_rcache()
            if flush_queue and self.type is AllocatorType.IOVA and self.kernel != "4.10":
                allocator.enable_flush_queue(self.ncpus, FQ_SIZE, FQ_TIMEOUT_MS)
                lazy = True
        self.granule, self.shift, self.start_pfn = granule, shift, start_pfn
        self.aperture_end, self.force_aperture = aperture_end, force_aperture
        self.flush_queue = lazy
        self.allocator = allocator
        return self

    @property
    def iovad(self) -> IovaDomain | None:
        """The IovaDomain behind an "iova" or "reset-when-empty" cookie."""
        return self.allocator.iovad if self.allocator is not None else None

    def _need_init(self) -> None:
        if not self.initialised:
            self._not_initialised()

    def _not_initialised(self) -> NoReturn:
        raise errors.IovaError("the cookie's domain is not initialised: attach a device "
                               "(or call init_domain) first")

    # ---- events the allocators raise ------------------------------------------
    def _flush(self) -> None:
        self.flushes += 1
        dom = self.domain
        if dom is not None:
            dom.flush_iotlb_all()

    def _events(self, ev: int) -> None:
        if ev & EV_FLUSH:
            self._flush()
        if ev & EV_RESET:
            self.resets += 1
            dom = self.domain
            if dom is not None and hasattr(dom.ops, "domain_reset"):
                dom.ops.domain_reset(dom)

    # ---- iommu_dma_alloc_iova / iommu_dma_free_iova ----------------------------
    def dma_limit(self, dev: Any, dma_limit: SupportsIndex) -> int:
        """The limit the kernel applies: the device's bus limit, then the
        aperture when the domain forces it."""
        if type(dma_limit) is not int or dma_limit < 0 or dma_limit > _U64_MAX:
            dma_limit = _as_u64("dma_limit", dma_limit)
        bus = getattr(dev, "bus_dma_limit", 0)
        limit = _min_not_zero(dma_limit, bus) if bus else dma_limit
        if self.force_aperture and limit > self.aperture_end:
            limit = self.aperture_end
        return limit

    def alloc_iova(self, dev: Any, size: SupportsIndex, dma_limit: SupportsIndex, *,
                   cpu: SupportsIndex | None = None) -> int:
        """iommu_dma_alloc_iova: an IOVA (bytes) for `size` bytes, already
        rounded to the granule; 0 when no space is left."""
        allocator = self.allocator
        if allocator is None:
            self._not_initialised()
        granule = self.granule
        if type(size) is not int:
            size = _as_integer("size", size)
        if size <= 0 or size & (granule - 1):
            raise errors.IovaValueError("size %#x is not a positive multiple of the granule %#x"
                                        % (size, granule))
        shift = self.shift
        pages = size >> shift
        if self.type is AllocatorType.MSI:
            pfn, _ = allocator.alloc(pages, 0)
            return pfn << shift
        limit = self.dma_limit(dev, dma_limit)
        # a device without is_pci (None in trace replay) is not PCI
        try_32 = (limit > _U32_MAX and getattr(dev, "is_pci", False) and not self.forcedac
                  and dev not in self._no_32bit)
        try:
            pfn, ev = allocator.alloc(pages, limit >> shift, try_32bit=try_32, cpu=cpu)
        except errors.IovaExhausted as exc:
            ev = getattr(exc, "events", 0)
            if ev & EV_NO_32BIT and self.sticky_no_32bit:
                self._no_32bit.add(dev)
            self._events(ev)
            return 0
        if ev:
            if ev & EV_NO_32BIT and self.sticky_no_32bit:
                self._no_32bit.add(dev)       # sticky: "Using N-bit DMA addresses"
            self._events(ev)
        return pfn << shift

    def free_iova(self, iova: SupportsIndex, size: SupportsIndex, *, lazy: bool = False,
                  cpu: SupportsIndex | None = None) -> bool:
        """iommu_dma_free_iova: at once, or (lazy, with a flush queue)
        queued until a flush covers it. Returns True when queued."""
        if self.allocator is None:
            self._not_initialised()
        # the allocator checks the pfn and the page count against what it
        # handed out; a value no uint64_t can hold never reaches it
        if type(iova) is not int:
            iova = _as_integer("iova", iova)
        if type(size) is not int:
            size = _as_integer("size", size)
        pages = size >> self.shift
        pfn = iova >> self.shift
        if not 0 <= iova <= _U64_MAX:
            raise errors.IovaValueError("iova %#x (pfn %d) is not in 0..2**64-1" % (iova, pfn))
        if not 0 <= size <= _U64_MAX:
            raise errors.IovaValueError("size %#x (%d pages) is not in 0..2**64-1"
                                        % (size, pages))
        if lazy and self.flush_queue:
            for _ in range(2):
                ev = self.allocator.free_lazy(pfn, pages, self.clock_ms, cpu=cpu)
                if ev & EV_QUEUED:
                    return True
                self._flush()                      # ring full: flush, then queue
                self.allocator.fq_flushed()
            raise _code_error(lib.IOVA_E_FQ_FULL)            # as the C engine reports it
        ev = self.allocator.free(pfn, pages, cpu=cpu)
        if ev:
            self._events(ev)
        return False

    def advance(self, ms: SupportsIndex, *, cpu: SupportsIndex = 0) -> None:
        """Moves the cookie's clock; fires the flush-queue timer when due, and
        the depot trim work of its IOVA domain."""
        # checked before the clock moves: a refused call changes nothing
        if type(ms) is not int or ms < 0 or ms > _U64_MAX:
            ms = _as_u64("ms", ms)
        if self.flush_queue:
            ring = _as_cpu(cpu, self.ncpus, allow_none=False)
            if not 0 <= ring < self.ncpus:
                raise errors.IovaCpuError("cpu %r is not in 0..%d" % (cpu, self.ncpus - 1))
        self.clock_ms += ms
        if self.flush_queue and self.allocator is not None:
            due = self.allocator.fq_due
            if due is not None and due <= self.clock_ms:
                self._flush()
                self.allocator.fq_flushed(all_rings=True, cpu=cpu)
        if self.iovad is not None:
            self.iovad.advance(ms)

    @property
    def sticky_no_32bit(self) -> bool:
        """Whether a failed 32-bit-first attempt ends them for the device
        (6.12), rather than being made again on every allocation (6.1, 4.10)."""
        return self.kernel == "6.12"

    def uses_32bit_first(self, dev: Any) -> bool:
        """Whether the next allocation for dev tries below 4 GiB first."""
        return getattr(dev, "is_pci", False) and not self.forcedac and dev not in self._no_32bit

    def stats(self) -> dict[str, Any]:
        st: dict[str, Any] = self.allocator.stats() if self.allocator is not None else {}
        st.update(type=str(self.type), flushes=self.flushes, resets=self.resets)
        return st

    def check(self) -> None:
        if self.allocator is not None:
            self.allocator.check()

    # ---- quick copies (the candidate orders of trace replay) --------------------
    def allocator_state(self) -> tuple[Any, ...]:
        """What the allocator calls (alloc_iova, free_iova, the flush queue)
        depend on, for restored(): the allocator's and its IOVA domain's C
        words and the cookie's own counters. A fraction of a pickle's cost,
        and no checkpoint format: the DMA API's mappings are not in it, so
        a cookie that holds some is refused."""
        if self.allocator is None:
            self._not_initialised()
        if self.dma_mappings:
            raise errors.IovaError("the allocator state of a cookie with live DMA mappings "
                                   "would leave them out: pickle it instead")
        iovad = self.iovad
        return (iovad.save() if iovad is not None else None, self.allocator.save(),
                self.clock_ms, frozenset(self._no_32bit), self.flushes, self.resets)

    def restored(self, state: tuple[Any, ...]) -> DmaCookie:
        """A new cookie set up like this one (type, kernel, domain, aperture)
        whose allocator is in `state` (from allocator_state())."""
        self._need_init()
        if type(state) is not tuple or len(state) != 6:
            raise errors.IovaTypeError("a cookie's allocator state is what allocator_state() "
                                       "returns, not %s %r" % (type(state).__name__, state))
        iovad_words, words, clock_ms, no_32bit, flushes, resets = state
        for name, v in (("clock_ms", clock_ms), ("flushes", flushes), ("resets", resets)):
            if type(v) is not int or not 0 <= v <= _U64_MAX:
                raise errors.IovaValueError("the allocator state's %s %r is not in 0..2**64-1"
                                            % (name, v))
        if type(no_32bit) is not frozenset:
            raise errors.IovaTypeError("the allocator state's 32-bit-first devices are a "
                                       "frozenset, not %s %r" % (type(no_32bit).__name__,
                                                                 no_32bit))
        if (iovad_words is None) != (self.iovad is None):
            raise errors.IovaValueError("the allocator state %s an IOVA domain; this %s cookie "
                                        "%s one" % ("lacks" if iovad_words is None else "holds",
                                                    self.type, "has" if self.iovad else "has no"))
        c = DmaCookie.__new__(DmaCookie)
        c.__dict__.update(self.__dict__)
        iovad = IovaDomain.restore(iovad_words) if iovad_words is not None else None
        c.allocator = PfnAllocator.restore(words, iovad, type=self.type.value)
        c.clock_ms, c._no_32bit, c.flushes, c.resets = clock_ms, set(no_32bit), flushes, resets
        c.dma_mappings = {}
        c.dma_phys = PhysAllocator()
        c._init_lock = threading.Lock()
        return c

    # ---- pickling and deepcopy (checkpoints) -----------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_init_lock"]
        state["_domain"] = self.domain    # held strongly only inside the pickle
        return state

    def __setstate__(self, state: Any) -> None:
        _check_cookie_state(state)
        state = dict(state)            # in the saved order, the domain held weakly again
        domain = state["_domain"]
        state["_domain"] = weakref.ref(domain) if domain is not None else None
        state.setdefault("dma_phys", PhysAllocator())
        self.__dict__.update(state)
        self._init_lock = threading.Lock()

    def _check_restored(self) -> None:
        """After a checkpoint is loaded: its DMA mappings sit where their
        addresses say, for devices of its domain."""
        live = self.dma_mappings
        if not live:
            return
        domain = self.domain
        devices = getattr(domain, "devices", None)
        mask = ~(self.granule - 1)
        for iova, m in live.items():
            if m.addr & mask != iova or m.length % self.granule or m.length < m.size:
                raise _state.fail("a cookie", "holds a DMA mapping at %#x that does not fit it"
                                  % iova)
            if devices is not None and m.dev not in devices:
                raise _state.fail("a cookie", "holds a DMA mapping at %#x of %s, which is not "
                                  "attached to its domain" % (iova, m.dev.name))

    def __repr__(self) -> str:
        return "<DmaCookie %s kernel=%s%s>" % (self.type, self.kernel,
                                                "" if self.initialised else " uninitialised")


def _check_cookie_state(state: Any) -> None:
    """The state a DmaCookie is restored from, checked (see pyiova._state)."""
    from .dma import _Mapping
    opt_int = (int, type(None))
    _state.check_fields("a DMA cookie", state, {
        "type": AllocatorType, "kernel": str, "ncpus": int, "forcedac": bool, "rcache": bool,
        "_domain": object, "msi_base": opt_int, "allocator": (PfnAllocator, type(None)),
        "granule": opt_int, "shift": opt_int, "start_pfn": opt_int, "aperture_end": opt_int,
        "force_aperture": bool, "flush_queue": bool, "clock_ms": int, "_no_32bit": set,
        "flushes": int, "resets": int, "dma_mappings": dict, "dma_phys": PhysAllocator},
        optional=("dma_phys",))
    if state["kernel"] not in KERNELS:
        raise _state.fail("a DMA cookie", "of kernel %r" % (state["kernel"],))
    _state.check_int("a DMA cookie's ncpus", state["ncpus"], 1, _MAX_CPUS)
    for name in ("clock_ms", "flushes", "resets"):
        _state.check_int("a DMA cookie's %s" % name, state[name], 0, _U64_MAX)
    allocator = state["allocator"]
    geometry = ("granule", "shift", "start_pfn", "aperture_end")
    if allocator is None:
        if any(state[name] is not None for name in geometry) or state["flush_queue"] \
                or state["dma_mappings"]:
            raise _state.fail("a DMA cookie", "without an allocator has a geometry or mappings")
        return
    if any(state[name] is None for name in geometry):
        raise _state.fail("a DMA cookie", "with an allocator lacks part of its geometry")
    granule = state["granule"]
    if (not 2 <= granule <= 1 << 63 or granule & (granule - 1)
            or state["shift"] != granule.bit_length() - 1):
        raise _state.fail("a DMA cookie", "has granule %r and shift %r" % (granule,
                                                                           state["shift"]))
    if allocator.type is not state["type"]:
        raise _state.fail("a DMA cookie", "of type %s holds a %s allocator"
                          % (state["type"], allocator.type))
    if allocator.iovad is not None and allocator.iovad.granule != granule:
        raise _state.fail("a DMA cookie", "of granule %#x holds an IOVA domain of granule %#x"
                          % (granule, allocator.iovad.granule))
    _state.check_int("a DMA cookie's aperture_end", state["aperture_end"], 0, _U64_MAX)
    _state.check_int("a DMA cookie's start_pfn", state["start_pfn"], 0, _U64_MAX >> state["shift"])
    if state["msi_base"] is not None:
        _state.check_int("a DMA cookie's msi_base", state["msi_base"], 0, _U64_MAX)
    if state["flush_queue"] and not allocator._fq_rings:
        raise _state.fail("a DMA cookie", "uses a flush queue its allocator does not have")
    for iova, m in state["dma_mappings"].items():
        _state.check_int("a DMA mapping's iova", iova, 0, _U64_MAX)
        _state.check_type("the DMA mapping at %#x" % iova, m, _Mapping)


def cookie_of(domain: Any) -> DmaCookie | None:
    """The cookie a domain holds, or None."""
    try:
        return domain.iova_cookie
    except AttributeError:
        pass
    try:
        return _cookies.get(domain)
    except TypeError:
        raise errors.IovaTypeError("%r is not a domain (it cannot hold a cookie)"
                                   % (domain,)) from None


def _attach(domain: Any, cookie: DmaCookie | None) -> None:
    try:
        domain.iova_cookie = cookie
    except AttributeError:
        _cookies[domain] = cookie


def get_dma_cookie(domain: Any, allocator: AllocatorType | str | None = None,
                   **kw: Any) -> DmaCookie:
    """iommu_get_dma_cookie: attach an (uninitialised) cookie; the allocator
    type defaults to the domain's IOVA_ALLOCATOR attribute."""
    if cookie_of(domain) is not None:
        raise errors.IovaValueError("domain %s already has a cookie"
                                    % getattr(domain, "name", domain))
    if allocator is None:
        allocator = getattr(domain, "iova_allocator", None) or AllocatorType.IOVA
    if isinstance(allocator, str) and allocator == AllocatorType.MSI:
        raise errors.IovaValueError("a DMA cookie cannot use the msi allocator: MSI cookies come "
                                    "from get_msi_cookie, for unmanaged domains only")
    cookie = DmaCookie(str(allocator), domain=domain, **kw)
    _attach(domain, cookie)
    return cookie


def get_msi_cookie(domain: Any, base: SupportsIndex, **kw: Any) -> DmaCookie:
    """iommu_get_msi_cookie: only for unmanaged (caller-managed) domains."""
    dtype = getattr(domain, "type", None)
    if dtype is not None and getattr(dtype, "name", "") != "UNMANAGED":
        raise errors.IovaValueError("an MSI cookie is only for unmanaged domains, not %s"
                                    % getattr(dtype, "name", dtype))
    if cookie_of(domain) is not None:
        raise errors.IovaValueError("domain %s already has a cookie"
                                    % getattr(domain, "name", domain))
    cookie = DmaCookie(AllocatorType.MSI, domain=domain, msi_base=base, **kw)
    _attach(domain, cookie)
    return cookie


def put_dma_cookie(domain: Any) -> None:
    """iommu_put_dma_cookie: drop the cookie (its IOVA domain with it)."""
    cookie = cookie_of(domain)
    if cookie is None:
        raise errors.IovaValueError("domain %s has no cookie" % getattr(domain, "name", domain))
    _attach(domain, None)
    _cookies.pop(domain, None)
    if cookie.iovad is not None:
        cookie.iovad.close()
