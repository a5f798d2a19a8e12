"""IovaDomain: the kernel's IOVA allocator (drivers/iommu/iova.c) over the C core.

This layer only checks types, converts buffers and turns the C core's error
codes into exceptions that name the offending value. Every allocation
decision is made in C, with the GIL released, under the domain's own locks.
"""
from __future__ import annotations

import array
import os
from typing import TYPE_CHECKING, Any

from . import errors
from .error_codes import error as _code_error
from .error_codes import template as _code_template
from ._args import U64_ARRAY as _U64A
from ._args import U64_CODES as _U64_CODES
from ._args import as_cpu as _as_cpu
from ._args import as_flag as _as_flag
from ._args import as_granule as _as_granule
from ._args import as_u64 as _as_u64
from ._args import release as _release
from ._args import u64_cdata as _u64_cdata
from ._pyiova import ffi, lib
from ._words import loaded_words

if TYPE_CHECKING:
    from typing import SupportsIndex

    from typing_extensions import Self

    from ._args import U64Batch

__all__ = ["IovaDomain", "KERNELS", "SEARCH_MODES", "IOVA_ANCHOR", "kernel_rules"]

# The kernels whose rules pyiova models, newest first: every kernel= argument
# (IovaDomain, PfnAllocator, DmaCookie, simulate, the command line) takes
# these names. 6.1 is 6.12's tree with a fixed 32-magazine depot.
KERNELS = {"6.12": lib.IOVA_KERNEL_6_12, "6.1": lib.IOVA_KERNEL_6_1,
           "4.10": lib.IOVA_KERNEL_4_10}
_KERNEL_NAMES = {v: k for k, v in KERNELS.items()}
SEARCH_MODES = {"augmented": lib.IOVA_SEARCH_AUGMENTED, "linear": lib.IOVA_SEARCH_LINEAR}
_SEARCH_NAMES = {v: k for k, v in SEARCH_MODES.items()}
CACHED_CLASSES = lib.IOVA_RANGE_CACHE_MAX_SIZE
_U64_MAX = (1 << 64) - 1
_UINT_MAX = (1 << 32) - 1

# Bound once: attribute lookups on `lib` and `ffi` cost more than the calls
# themselves, and a ctype object spares cffi parsing a type string per call.
_alloc = lib.iova_alloc
_free = lib.iova_free
_alloc_fast = lib.iova_rcache_alloc_fast
_free_fast = lib.iova_rcache_free_fast
_find = lib.iova_find
_alloc_many = lib.iova_alloc_many
_free_many = lib.iova_free_many
_alloc_fast_many = lib.iova_rcache_alloc_fast_many
_free_fast_many = lib.iova_rcache_free_fast_many
_new = ffi.new
_from_buffer = ffi.from_buffer
_array = array.array
_U64P = ffi.typeof("uint64_t *")
_INTP = ffi.typeof("int *")
_U64X2 = ffi.typeof("uint64_t[2]")
_E_NOSPC = lib.IOVA_E_NOSPC
_Exhausted, _NOSPC_MESSAGE = _code_template(_E_NOSPC)
_Later = errors.LaterMessage

# The batch calls' result: slicing a zeroed template copies it at memcpy
# speed, where array("Q", bytes(8 * n)) builds and copies a bytes object.
_ZN = 4096
_ZEROS = _array("Q", bytes(8 * _ZN))

# Out-parameter cells (a failing batch's index, its error code) for the batch
# calls to borrow: ffi.new costs more than a list pop and append. The C call
# runs without the GIL, so each call takes a cell of its own; list.pop and
# list.append are atomic, and an empty pool just means a new cell. A cell
# goes back only after a call that succeeded, which does not write it, so a
# pooled cell reads 0 as a new one does (the error paths read an index that
# the core may not have set).
_u64_cells: list[Any] = []
_int_cells: list[Any] = []


class _Anchor(int):
    """The pfn of the 6.12 anchor node: an int equal to 2**64-1 (the
    kernel's IOVA_ANCHOR, ~0UL), which reads as IOVA_ANCHOR, so that a state
    whose cached node is the anchor says so rather than show a large
    number. Arithmetic, comparisons, hex() and json see the plain int."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "IOVA_ANCHOR"

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        return (int, (int(self),))


IOVA_ANCHOR = _Anchor(_U64_MAX)


def _pfn(value: int) -> int:
    """A cached node's pfn_lo as state() shows it."""
    return IOVA_ANCHOR if value == _U64_MAX else value


def _choice(name: str, value: Any, table: dict[str, int]) -> int:
    """table[value], or IovaValueError naming value (unhashable ones too)."""
    try:
        return table[value]
    except (KeyError, TypeError):
        raise errors.IovaValueError("%s %r is not one of %s"
                                    % (name, value, ", ".join(map(repr, table)))) from None


def kernel_rules(kernel: str) -> int:
    """The C core's number for the kernel rules a kernel= argument names
    (one of KERNELS), or the IovaValueError naming it."""
    return _choice("kernel", kernel, KERNELS)


class IovaDomain:
    """An IOVA domain: init_iova_domain + the rcaches, with the kernel's calls.

    granule    the smallest page the IOMMU maps (a power of two, 2..65536)
    start_pfn  the lowest pfn that may be allocated
    ncpus      CPU slots of the per-CPU caches (default: this machine's CPUs)
    kernel     "6.12" (mainline rules, the default), "6.1" (6.12's tree, a
               fixed depot of 32 magazines that spills into the tree) or
               "4.10" (the seed's)
    dma_32bit_pfn  4.10 only: its inclusive 32-bit boundary
               (default 0xFFFFFFFF >> shift, what intel-iommu passed)
    search     "augmented" (O(log n), the default) or "linear" (the
               kernel's walk); both return the same pfns
    """

    __slots__ = ("_d", "granule", "shift", "start_pfn", "ncpus", "kernel",
                 "dma_32bit_pfn", "max_pfn", "__weakref__")
    granule: int
    shift: int
    start_pfn: int
    ncpus: int
    kernel: str
    dma_32bit_pfn: int
    max_pfn: int

    def __init__(self, granule: SupportsIndex = 4096, start_pfn: SupportsIndex = 1, *,
                 ncpus: SupportsIndex | None = None, kernel: str = "6.12",
                 dma_32bit_pfn: SupportsIndex | None = None, search: str = "augmented") -> None:
        granule = _as_granule(granule)
        start_pfn = _as_u64("start_pfn", start_pfn)
        kernel_id = kernel_rules(kernel)
        search_id = _choice("search", search, SEARCH_MODES)
        if ncpus is None:
            ncpus = min(os.cpu_count() or 1, lib.IOVA_MAX_CPUS)
        ncpus = _as_u64("ncpus", ncpus)
        if kernel != "4.10":
            if dma_32bit_pfn is not None:
                raise errors.IovaValueError(
                    "dma_32bit_pfn=%r: %s derives it from the granule (1 << (32 - shift))"
                    % (dma_32bit_pfn, kernel))
            dma32_arg = 0
        elif dma_32bit_pfn is None:
            dma32_arg = 0
        else:
            dma32_arg = _as_u64("dma_32bit_pfn", dma_32bit_pfn)
            if dma32_arg == 0:
                raise errors.IovaValueError("dma_32bit_pfn must be at least 1, not 0")
        err = ffi.new("int *")
        # An ncpus beyond C's unsigned goes in as the largest one, which the
        # core refuses as it refuses any count above IOVA_MAX_CPUS.
        d = lib.iova_domain_new(granule, start_pfn, min(ncpus, _UINT_MAX), kernel_id, dma32_arg,
                                err)
        if d == ffi.NULL:
            raise _code_error(err[0], where="creating an IOVA domain", granule=granule,
                              start_pfn=start_pfn, ncpus=ncpus, max_cpus=lib.IOVA_MAX_CPUS,
                              dma_32bit_pfn=dma32_arg, kernel=kernel, kernels=sorted(KERNELS))
        self._adopt(d)
        if search_id != lib.IOVA_SEARCH_AUGMENTED:
            lib.iova_set_search_mode(self._d, search_id)

    def _adopt(self, d: Any) -> None:
        """Takes ownership of a C domain and mirrors its constants."""
        self._d = ffi.gc(d, lib.iova_domain_destroy)
        st = self._state()
        self.granule = st.granule
        self.shift = st.shift
        self.start_pfn = st.start_pfn
        self.ncpus = st.ncpus
        self.kernel = _KERNEL_NAMES[st.kernel]
        self.dma_32bit_pfn = st.dma_32bit_pfn
        self.max_pfn = _U64_MAX >> st.shift

    # ---- errors ---------------------------------------------------------

    def _alloc_error(self, code: int, size: int, limit_pfn: int,
                     cpu: Any = None) -> errors.IovaError:
        """An allocation's failure; no room (the common one) is cheap: its
        message is formatted only if something reads it."""
        if code == _E_NOSPC:
            return _Exhausted(_Later(_NOSPC_MESSAGE, {"size": size, "limit_pfn": limit_pfn}))
        return self._error(code, size=size, limit_pfn=limit_pfn, cpu=cpu)

    def _error(self, code: int, variant: str = "", **named: Any) -> errors.IovaError:
        """The exception for the C core's code (pyiova.error_codes), naming
        the values of the call and the domain's limits. `name` says which
        argument a pfn error is about (pfn, lo or hi)."""
        name = named.get("name", "pfn")
        return _code_error(code, variant, **{
            "what": "the domain", "where": "in the IOVA domain", "max_size": self.max_pfn,
            "start_pfn": self.start_pfn, "max_pfn": self.max_pfn, "granule": self.granule,
            "max_cpu": self.ncpus - 1, "name": name, "value": named.get(name, named.get("pfn")),
            **named})

    # ---- the tree -------------------------------------------------------

    # Each call tries cffi with plain ints first (`type(x) is int` costs next
    # to nothing); cffi's TypeError or OverflowError sends it to the checks in
    # _args, which name the bad value, or convert an integer that is not a
    # plain int (numpy, IntEnum, __index__), after which C is called again.

    def alloc(self, size: SupportsIndex, limit_pfn: SupportsIndex,
              size_aligned: bool = False) -> int:
        """alloc_iova: the new range's pfn_lo. Raises IovaExhausted."""
        try:
            if type(size) is not int or type(limit_pfn) is not int:
                raise TypeError
            r = _alloc(self._d, size, limit_pfn, size_aligned)
        except (TypeError, OverflowError):
            size = _as_u64("size", size)
            limit_pfn = _as_u64("limit_pfn", limit_pfn)
            r = _alloc(self._d, size, limit_pfn, _as_flag("size_aligned", size_aligned))
        if r < 0:
            raise self._alloc_error(r, size, limit_pfn)
        return r

    def free(self, pfn: SupportsIndex) -> None:
        """free_iova: frees the range containing pfn. Raises IovaNotFound."""
        try:
            if type(pfn) is not int:
                raise TypeError
            r = _free(self._d, pfn)
        except (TypeError, OverflowError):
            pfn = _as_u64("pfn", pfn)
            r = _free(self._d, pfn)
        if r:
            raise self._error(r, pfn=pfn)

    def find(self, pfn: SupportsIndex) -> tuple[int, int] | None:
        """find_iova: (lo, hi) of the range containing pfn, or None."""
        out = _new(_U64X2)
        try:
            if type(pfn) is not int:
                raise TypeError
            r = _find(self._d, pfn, out)
        except (TypeError, OverflowError):
            pfn = _as_u64("pfn", pfn)
            r = _find(self._d, pfn, out)
        if r < 0:
            raise self._error(r, pfn=pfn)
        return (out[0], out[1]) if r else None

    def reserve(self, lo: SupportsIndex, hi: SupportsIndex) -> tuple[int, int]:
        """reserve_iova: the (lo, hi) of the range that now covers the top of
        [lo, hi] (a new node, or an existing one that was widened/covered)."""
        lo = _as_u64("lo", lo)
        hi = _as_u64("hi", hi)
        out = _new(_U64X2)
        r = lib.iova_reserve(self._d, lo, hi, out)
        if r:
            name = "lo" if lo > self.max_pfn else "hi"
            raise self._error(r, lo=lo, hi=hi, name=name)
        return (out[0], out[1])

    def ranges(self) -> list[tuple[int, int]]:
        """Every range in address order, as (lo, hi); the 6.12/6.1 anchor excluded."""
        while True:
            n = lib.iova_ranges(self._d, ffi.NULL, 0)
            if n < 0:
                raise self._error(n)
            buf = ffi.new("uint64_t[]", 2 * n + 2)
            m = lib.iova_ranges(self._d, buf, n + 1)
            if m < 0:
                raise self._error(m)
            if m <= n + 1:
                flat = ffi.unpack(buf, 2 * m)
                return list(zip(flat[0::2], flat[1::2]))

    def _state(self) -> Any:
        st = ffi.new("struct iova_state *")
        r = lib.iova_get_state(self._d, st)
        if r:
            raise self._error(r)
        return st

    def state(self) -> dict[str, int | None]:
        """The allocator's cached state, as the kernel holds it.

        6.12 and 6.1: {"cached", "cached32"} are the pfn_lo of the two
        cached nodes; the anchor node, where both start, reads IOVA_ANCHOR
        (an int equal to 2**64-1, the kernel's IOVA_ANCHOR); "max32" is
        max32_alloc_size and "dma32" the exclusive 32-bit boundary. 4.10:
        {"cached32": lo or None, "dma32": the inclusive boundary}.
        """
        st = self._state()
        if self.kernel == "4.10":
            return {"cached32": st.cached32_lo if st.has_cached32 else None,
                    "dma32": st.dma_32bit_pfn}
        return {"cached": _pfn(st.cached_lo), "cached32": _pfn(st.cached32_lo),
                "max32": st.max32_alloc_size, "dma32": st.dma_32bit_pfn}

    def stats(self) -> dict[str, Any]:
        """Counters: ranges, pages, cached ranges, node memory, search work."""
        st = self._state()
        return {"ranges": st.nodes, "used_pfns": st.used_pfns,
                "cached_ranges": st.cached_pfns, "node_bytes": st.node_bytes,
                "nodes_visited": st.nodes_visited, "clock_ms": st.clock_ms,
                "search": _SEARCH_NAMES[st.search_mode]}

    def __len__(self) -> int:
        return self._state().nodes

    @property
    def used_pfns(self) -> int:
        """Pages covered by ranges (allocated, reserved or cached)."""
        return self._state().used_pfns

    @property
    def search(self) -> str:
        return _SEARCH_NAMES[self._state().search_mode]

    @search.setter
    def search(self, mode: str) -> None:
        r = lib.iova_set_search_mode(self._d, _choice("search", mode, SEARCH_MODES))
        if r:
            raise self._error(r)

    def check(self) -> None:
        """Runs the C validator over every invariant; raises IovaCorrupted."""
        msg = ffi.new("char[]", 256)
        r = lib.iova_check(self._d, msg, 256)
        if r:
            raise self._error(r, report=ffi.string(msg).decode())

    # ---- batches --------------------------------------------------------
    #
    # A batch goes to C in place when it is an array of 8-byte integers (or
    # any such buffer: numpy, bytes); an iterable is copied once. The cffi
    # views over the caller's buffers are released before any raise: an
    # exception a caller keeps holds this frame, and CPython before 3.12.7
    # (gh-77894) can crash collecting a memoryview that a live export in such
    # a frame still points at.

    def _batch_closed(self) -> None:
        """For an empty batch, which the core returns from at once: a closed
        domain still raises IovaClosed, as for any other batch."""
        self._state()

    def _batch_alloc_error(self, r: int, i: int, size: int | None, out: array.array[int],
                           **ctx: Any) -> errors.IovaError:
        """The exception for a batch alloc that failed at sizes[i] with code r;
        what was allocated before the failure stays allocated, and the
        exception says what (.index, .done, .pfns)."""
        exc = self._error(r, "batch", size=size, index=i, **ctx)
        exc.index = exc.done = i
        exc.pfns = out
        return exc

    def alloc_many(self, sizes: U64Batch, limit_pfn: SupportsIndex,
                   size_aligned: bool = False) -> array.array[int]:
        """One alloc per size in one C call; an array('Q') of pfns, 0 where
        the allocation failed. Bad sizes are refused before anything is done."""
        if type(sizes) is _array and sizes.typecode in _U64_CODES:
            n = len(sizes)
            buf = _from_buffer(_U64A, sizes)
        else:
            buf, n = _u64_cdata("sizes", sizes)
        out = _ZEROS[:n] if n <= _ZN else _array("Q", bytes(8 * n))
        obuf = _from_buffer(_U64A, out)
        try:
            bad = _u64_cells.pop()
        except IndexError:
            bad = _new(_U64P)
        try:
            if type(limit_pfn) is not int:
                raise TypeError
            r = _alloc_many(self._d, buf, obuf, n, limit_pfn, size_aligned, bad)
        except (TypeError, OverflowError):
            try:
                limit_pfn = _as_u64("limit_pfn", limit_pfn)
                flag = _as_flag("size_aligned", size_aligned)
            except BaseException:
                _release(buf)
                _release(obuf)
                raise
            r = _alloc_many(self._d, buf, obuf, n, limit_pfn, flag, bad)
        if r < 0:
            i = bad[0]
            size = buf[i] if i < n else None
            _release(buf)
            _release(obuf)
            raise self._batch_alloc_error(r, i, size, out, limit_pfn=limit_pfn)
        _u64_cells.append(bad)
        return out

    def free_many(self, pfns: U64Batch) -> None:
        """free for each pfn in one C call. Stops at the first pfn it cannot
        free, raising what free would; `done` on the exception says how many
        were freed before it."""
        if type(pfns) is _array and pfns.typecode in _U64_CODES:
            n = len(pfns)
            buf = _from_buffer(_U64A, pfns)
        else:
            buf, n = _u64_cdata("pfns", pfns)
        try:
            err = _int_cells.pop()
        except IndexError:
            err = _new(_INTP)
        done = _free_many(self._d, buf, n, err)
        # the core sets *err only on a short count, or for a closed domain
        if done != n or not n:
            code = err[0]
            if code:
                pfn = buf[done] if done < n else None
                _release(buf)
                exc = self._error(code, pfn=pfn)
                exc.index = exc.done = done
                raise exc
        _int_cells.append(err)

    # ---- the rcache -----------------------------------------------------

    def alloc_fast(self, size: SupportsIndex, limit_pfn: SupportsIndex, flush_rcache: bool = True,
                   cpu: SupportsIndex | None = None) -> int:
        """alloc_iova_fast on `cpu` (None: this thread's slot). Raises
        IovaExhausted where the kernel returns 0."""
        try:
            if type(size) is not int or type(limit_pfn) is not int:
                raise TypeError
            if cpu is None:
                r = _alloc_fast(self._d, size, limit_pfn, flush_rcache, -1)
            elif type(cpu) is int and cpu >= 0:
                r = _alloc_fast(self._d, size, limit_pfn, flush_rcache, cpu)
            else:
                raise TypeError
        except (TypeError, OverflowError):
            size = _as_u64("size", size)
            limit_pfn = _as_u64("limit_pfn", limit_pfn)
            flag = _as_flag("flush_rcache", flush_rcache)
            r = _alloc_fast(self._d, size, limit_pfn, flag, _as_cpu(cpu, self.ncpus))
        if r <= 0:
            raise self._alloc_error(r or _E_NOSPC, size, limit_pfn, cpu)
        return r

    def free_fast(self, pfn: SupportsIndex, size: SupportsIndex,
                  cpu: SupportsIndex | None = None) -> None:
        """free_iova_fast: into `cpu`'s magazines, or the tree for big sizes."""
        try:
            if type(pfn) is not int or type(size) is not int:
                raise TypeError
            if cpu is None:
                r = _free_fast(self._d, pfn, size, -1)
            elif type(cpu) is int and cpu >= 0:
                r = _free_fast(self._d, pfn, size, cpu)
            else:
                raise TypeError
        except (TypeError, OverflowError):
            pfn = _as_u64("pfn", pfn)
            size = _as_u64("size", size)
            r = _free_fast(self._d, pfn, size, _as_cpu(cpu, self.ncpus))
        if r:
            raise self._error(r, pfn=pfn, size=size, cpu=cpu)

    def alloc_fast_many(self, sizes: U64Batch, limit_pfn: SupportsIndex, flush_rcache: bool = True,
                        cpu: SupportsIndex | None = None) -> array.array[int]:
        """alloc_fast per size in one C call; array('Q'), 0 where it failed."""
        if type(sizes) is _array and sizes.typecode in _U64_CODES:
            n = len(sizes)
            buf = _from_buffer(_U64A, sizes)
        else:
            buf, n = _u64_cdata("sizes", sizes)
        out = _ZEROS[:n] if n <= _ZN else _array("Q", bytes(8 * n))
        obuf = _from_buffer(_U64A, out)
        try:
            bad = _u64_cells.pop()
        except IndexError:
            bad = _new(_U64P)
        try:
            if type(limit_pfn) is not int:
                raise TypeError
            if cpu is None:
                r = _alloc_fast_many(self._d, buf, obuf, n, limit_pfn, flush_rcache, -1, bad)
            elif type(cpu) is int and cpu >= 0:
                r = _alloc_fast_many(self._d, buf, obuf, n, limit_pfn, flush_rcache, cpu, bad)
            else:
                raise TypeError
        except (TypeError, OverflowError):
            try:
                limit_pfn = _as_u64("limit_pfn", limit_pfn)
                flag = _as_flag("flush_rcache", flush_rcache)
                c = _as_cpu(cpu, self.ncpus)
            except BaseException:
                _release(buf)
                _release(obuf)
                raise
            r = _alloc_fast_many(self._d, buf, obuf, n, limit_pfn, flag, c, bad)
        if r < 0 or not n:
            i = bad[0]
            size = buf[i] if i < n else None
            _release(buf)
            _release(obuf)
            if not n and r >= 0:
                self._batch_closed()
                _u64_cells.append(bad)
                return out
            raise self._batch_alloc_error(r, i, size, out, limit_pfn=limit_pfn, cpu=cpu)
        _u64_cells.append(bad)
        return out

    def free_fast_many(self, pfns: U64Batch, sizes: U64Batch,
                       cpu: SupportsIndex | None = None) -> None:
        """free_fast(pfns[i], sizes[i]) in one C call; stops at the first
        failure like free_many."""
        if type(pfns) is _array and pfns.typecode in _U64_CODES:
            n = len(pfns)
            pbuf = _from_buffer(_U64A, pfns)
        else:
            pbuf, n = _u64_cdata("pfns", pfns)
        try:
            if type(sizes) is _array and sizes.typecode in _U64_CODES:
                m = len(sizes)
                sbuf = _from_buffer(_U64A, sizes)
            else:
                sbuf, m = _u64_cdata("sizes", sizes)
        except BaseException:
            _release(pbuf)
            raise
        if m != n:
            _release(pbuf)
            _release(sbuf)
            raise errors.IovaValueError("pfns has %d items but sizes has %d" % (n, m))
        try:
            err = _int_cells.pop()
        except IndexError:
            err = _new(_INTP)
        try:
            if cpu is None:
                done = _free_fast_many(self._d, pbuf, sbuf, n, -1, err)
            elif type(cpu) is int and cpu >= 0:
                done = _free_fast_many(self._d, pbuf, sbuf, n, cpu, err)
            else:
                raise TypeError
        except (TypeError, OverflowError):
            try:
                c = _as_cpu(cpu, self.ncpus)
            except BaseException:
                _release(pbuf)
                _release(sbuf)
                raise
            done = _free_fast_many(self._d, pbuf, sbuf, n, c, err)
        # the core sets *err only on a short count, or before the first item
        if done != n or not n:
            code = err[0]
            pfn, size = (pbuf[done], sbuf[done]) if done < n else (None, None)
            _release(pbuf)
            _release(sbuf)
            if code:
                exc = self._error(code, pfn=pfn, size=size, cpu=cpu)
                exc.index = exc.done = done
                raise exc
            self._batch_closed()
        _int_cells.append(err)

    def current_cpu(self) -> int:
        """The CPU slot this thread uses when cpu=None: threads get slots in
        the order they first use this domain (the first 0, the next 1...,
        modulo ncpus), whatever else the process ran."""
        r = lib.iova_rcache_current_cpu(self._d)
        if r < 0:
            raise self._error(r)
        return r

    def flush_cpu(self, cpu: SupportsIndex) -> None:
        """free_cpu_cached_iovas: every pfn in cpu's magazines back to the tree."""
        try:
            if type(cpu) is not int:
                raise TypeError
            r = lib.iova_rcache_flush_cpu(self._d, cpu)
        except (TypeError, OverflowError):
            r = lib.iova_rcache_flush_cpu(self._d, _as_cpu(cpu, self.ncpus, allow_none=False))
        if r:
            raise self._error(r, cpu=cpu)

    def flush_depot(self) -> None:
        """free_global_cached_iovas: every depot magazine back to the tree,
        the newest first under 6.12 (and 4.10), the oldest first under 6.1."""
        r = lib.iova_rcache_flush_depot(self._d)
        if r:
            raise self._error(r)

    def flush_rcaches(self) -> None:
        """Every CPU's caches, then the depot (what alloc_fast does before its retry)."""
        r = lib.iova_rcache_flush_all(self._d)
        if r:
            raise self._error(r)

    def run_pending_work(self) -> int:
        """Runs once each depot trim item pending now; returns how many ran
        (always 0 under 6.1 and 4.10, which have no trim work)."""
        r = lib.iova_rcache_run_pending_work(self._d)
        if r < 0:
            raise self._error(r)
        return r

    def advance(self, ms: SupportsIndex) -> int:
        """Moves the simulated clock by ms, running trim work as it falls due;
        returns how many items ran."""
        try:
            if type(ms) is not int:
                raise TypeError
            r = lib.iova_rcache_advance(self._d, ms)
        except (TypeError, OverflowError):
            r = lib.iova_rcache_advance(self._d, _as_u64("ms", ms))
        if r < 0:
            raise self._error(r)
        return r

    def trim_due(self) -> dict[int, int]:
        """{size class: clock ms when its pending depot trim item falls due}
        (empty under 6.1 and 4.10, which have no trim work)."""
        r = lib.iova_rcache_trim_due(self._d, ffi.NULL)   # how many, first: mostly none
        if r > 0:
            due = ffi.new("uint64_t[]", CACHED_CLASSES)
            r = lib.iova_rcache_trim_due(self._d, due)
            if r > 0:
                return {k: due[k] for k in range(CACHED_CLASSES) if due[k] != (1 << 64) - 1}
        if r < 0:
            raise self._error(r)
        return {}

    def run_trim(self, size_class: int) -> bool:
        """Runs size class `size_class`'s depot trim item now, if it is
        pending; True if it ran. For a caller that decides when trim work
        runs: set_clock() first, since a run that trims re-arms the item
        100 ms later on the clock."""
        if type(size_class) is not int:
            raise errors.IovaTypeError("size class must be an integer, not %s (%r)"
                                       % (type(size_class).__name__, size_class))
        if not 0 <= size_class < CACHED_CLASSES:
            raise errors.IovaValueError("size class %r is not in 0..%d"
                                        % (size_class, CACHED_CLASSES - 1))
        r = lib.iova_rcache_run_trim(self._d, size_class)
        if r < 0:
            raise self._error(r)
        return bool(r)

    def set_clock(self, ms: SupportsIndex) -> None:
        """Moves the simulated clock forward to `ms` (never back), running
        no work (advance() runs what falls due)."""
        r = lib.iova_rcache_set_clock(self._d, _as_u64("ms", ms))
        if r < 0:
            raise self._error(r)

    def rcache_stats(self) -> list[dict[str, Any]]:
        """Per size class: each CPU's loaded/prev fill, the depot length and
        whether its trim work is armed."""
        k, n = CACHED_CLASSES, self.ncpus
        loaded = ffi.new("uint32_t[]", k * n)
        prev = ffi.new("uint32_t[]", k * n)
        depot = ffi.new("uint64_t[]", k)
        pending = ffi.new("uint32_t[]", k)
        r = lib.iova_rcache_stats(self._d, loaded, prev, depot, pending)
        if r:
            raise self._error(r)
        return [{"bin": b, "size": 1 << b,
                 "loaded": ffi.unpack(loaded + b * n, n),
                 "prev": ffi.unpack(prev + b * n, n),
                 "depot": depot[b], "work_pending": bool(pending[b])}
                for b in range(k)]

    def cached_pfns(self) -> set[int]:
        """The set of pfns sitting in magazines or the depot."""
        while True:
            n = lib.iova_rcache_pfns(self._d, ffi.NULL, 0)
            if n < 0:
                raise self._error(n)
            buf = ffi.new("uint64_t[]", n + 64)
            m = lib.iova_rcache_pfns(self._d, buf, n + 64)
            if m < 0:
                raise self._error(m)
            if m <= n + 64:
                return set(ffi.unpack(buf, m))

    # ---- saving, pickling, copying ---------------------------------------

    def save(self) -> bytes:
        """The whole domain as bytes: ranges, cache pointers, max32, every
        magazine in order, the depot, trim work and clock. `restore` turns
        them back into a domain that makes the same allocations."""
        while True:
            n = lib.iova_save(self._d, ffi.NULL, 0)
            if n < 0:
                raise self._error(n)
            buf = ffi.new("uint64_t[]", n)
            m = lib.iova_save(self._d, buf, n)
            if m < 0:
                raise self._error(m)
            if m == n:
                return bytes(ffi.buffer(buf))

    @classmethod
    def restore(cls, data: bytes | bytearray | memoryview) -> Self:
        """A new domain from `save()`'s bytes; IovaValueError if they are not
        a consistent domain."""
        with loaded_words(data, "domain") as (words, n):
            err = ffi.new("int *")
            d = lib.iova_restore(words, n, err)
        if d == ffi.NULL:
            raise _code_error(err[0], where="restoring an IOVA domain", what="domain")
        self = cls.__new__(cls)
        self._adopt(d)
        return self

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (_restore, (self.save(),))

    def __copy__(self) -> IovaDomain:
        return IovaDomain.restore(self.save())

    def __deepcopy__(self, memo: Any) -> IovaDomain:
        return IovaDomain.restore(self.save())

    # ---- lifetime -------------------------------------------------------

    def close(self) -> None:
        """put_iova_domain. Idempotent; later calls raise IovaClosed."""
        lib.iova_domain_close(self._d)

    @property
    def closed(self) -> bool:
        return lib.iova_get_state(self._d, ffi.new("struct iova_state *")) == lib.IOVA_E_CLOSED

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<IovaDomain kernel=%s granule=%d closed>" % (self.kernel, self.granule)
        st = self._state()
        return "<IovaDomain kernel=%s granule=%d start_pfn=%#x ranges=%d pfns=%d>" % (
            self.kernel, self.granule, self.start_pfn, st.nodes, st.used_pfns)


def _restore(data: bytes) -> IovaDomain:
    """Unpickling entry point (kept at module level so pickle can name it)."""
    return IovaDomain.restore(data)
