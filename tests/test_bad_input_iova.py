"""The bad-input catalogue of the allocator objects over the C core:
IovaDomain, PfnAllocator and DmaCookie.

Each row names a call, a bad argument, the exception it must raise (an
IovaError subclass, and the builtin where one is natural) and what the
message must name; the call must leave the object as it was, check()
passing. Then the refusals that take more than one call to set up (double
frees, a batch that stops half way), and what the calls take as an integer
and as a batch: a plain int, or anything operator.index takes (numpy
integers, IntEnum, an object with __index__ alone), never a bool; an array
or any buffer of 8-byte native integers read in place, raw bytes, or an
iterable of integers.

The crashes and undocumented exceptions the fuzzer found are in
tests/test_fuzz.py and not repeated here. The other layers' catalogues:
tests/test_bad_input_dma.py (the DMA API, IOMMU domains, drivers, devices)
and tests/test_bad_input_runs.py (workloads, runs, the command line).
"""
import array
import decimal
import enum
import gc
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from bad_input import NOT_NAMED, Index, named
from pyiova import (IovaClosed, IovaCpuError, IovaDomain, IovaError, IovaExhausted,
                    IovaInvalidFree, IovaNotFound, IovaTypeError, IovaValueError)
from pyiova.allocators import PfnAllocator
from pyiova.cookie import DmaCookie, put_dma_cookie

TOP32 = 0xFFFFF
U32 = (1 << 32) - 1


@dataclass
class Case:
    target: str                  # which fixture object the call gets (see make())
    call: Callable[[Any], Any]
    exc: type
    value: Any                   # what the message must name (None: nothing checked)
    xfail: str = ""              # why the binding gets it wrong today


# ---- the objects ------------------------------------------------------------

class Live:
    """A fixture object and the pfns/iovas it handed out."""

    def __init__(self, obj, **held):
        self.obj = obj
        self.__dict__.update(held)


def make(target):
    if target == "none":
        return Live(None)
    if target in ("domain", "domain410"):
        d = IovaDomain(4096, 16, ncpus=2, kernel="4.10" if target == "domain410" else "6.12")
        p = d.alloc(4, TOP32)
        q = d.alloc_fast(2, TOP32, cpu=0)
        c = d.alloc_fast(1, TOP32, cpu=1)
        d.free_fast(c, 1, cpu=1)                  # something cached
        return Live(d, p=p, q=q, cached=c)
    if target == "closed":
        d = IovaDomain(4096, 16, ncpus=2)
        p = d.alloc(1, TOP32)
        d.close()
        return Live(d, p=p)
    if target in ("iova", "iova410", "reset"):
        kind = "reset-when-empty" if target == "reset" else "iova"
        a = PfnAllocator(kind, ncpus=2, kernel="4.10" if target == "iova410" else "6.12")
        return Live(a, p=a.alloc(2, TOP32)[0], q=a.alloc(1, TOP32)[0])
    if target == "iova_fq":
        a = PfnAllocator("iova", ncpus=2)
        a.enable_flush_queue(ncpus=2, size=4)
        return Live(a, p=a.alloc(2, TOP32)[0], q=a.alloc(1, TOP32)[0])
    if target in ("msi", "wrap"):
        a = PfnAllocator("msi" if target == "msi" else "wraparound", start_pfn=0x100,
                         end_pfn=0x1FF)
        return Live(a, p=a.alloc(2, 0x1FF)[0], q=a.alloc(1, 0x1FF)[0])
    if target == "cookie":
        c = DmaCookie("iova", ncpus=2).init_domain(4096, 0, U32, flush_queue=True)
        return Live(c, iova=c.alloc_iova(None, 0x2000, U32))
    if target == "bare_cookie":
        return Live(DmaCookie("iova"))
    raise AssertionError(target)


def snapshot(live):
    o = live.obj
    if isinstance(o, IovaDomain):
        return None if o.closed else (o.ranges(), o.state(), o.cached_pfns(), o.rcache_stats())
    if isinstance(o, PfnAllocator):
        st = o.stats()
        inner = (o.iovad.ranges(), o.iovad.cached_pfns()) if o.iovad is not None else None
        return st, inner, o.fq_due
    if isinstance(o, DmaCookie):
        return o.stats(), (o.iovad.ranges() if o.iovad is not None else None), o.clock_ms
    return None


def check(live):
    o = live.obj
    if isinstance(o, IovaDomain) and o.closed:
        return
    if o is not None:
        o.check()


def _set_search(d, value):
    d.search = value


# ---- the catalogue ----------------------------------------------------------

D, D4, CL = "domain", "domain410", "closed"
CASES = {
    # sizes, limits and non-integers of the tree and fast-path calls
    **{"%s size %r" % (call, size): Case(D, lambda l, f=f, size=size: f(l.obj, size),
                                         IovaValueError, str(size))
       for size in (0, -1, 2**64, 2**52)
       for call, f in (("alloc", lambda d, s: d.alloc(s, TOP32)),
                       ("alloc_fast", lambda d, s: d.alloc_fast(s, TOP32)))},
    # 15 is below the domain's start_pfn (16)
    **{"%s limit %r" % (call, limit): Case(D, lambda l, f=f, limit=limit: f(l.obj, limit),
                                           IovaValueError, limit)
       for limit in (0, 15, -5, 2**52, 2**64 + 3)
       for call, f in (("alloc", lambda d, v: d.alloc(1, v)),
                       ("alloc_fast", lambda d, v: d.alloc_fast(1, v)),
                       ("alloc_many", lambda d, v: d.alloc_many([1, 2], v)))},
    **{"%s %s %r" % (call, arg, bad): Case(D, lambda l, f=f, bad=bad: f(l.obj, bad),
                                           IovaTypeError,
                                           "integer" if call == "alloc" and arg == "size"
                                           else "None" if bad is None else bad)
       for bad in (1.5, "3", None, b"\x01", [1])
       for call, arg, f in (("alloc", "size", lambda d, v: d.alloc(v, TOP32)),
                            ("alloc", "limit", lambda d, v: d.alloc(1, v)),
                            ("free", "pfn", lambda d, v: d.free(v)),
                            ("find", "pfn", lambda d, v: d.find(v)),
                            ("reserve", "lo", lambda d, v: d.reserve(v, 10)),
                            ("free_fast", "pfn", lambda d, v: d.free_fast(v, 1)))},
    # pfns no byte address of 64 bits reaches with a 4K granule
    **{"%s %s %#x" % (call, arg, pfn): Case(D, lambda l, f=f, pfn=pfn: f(l.obj, pfn),
                                            IovaValueError, "granule")
       for pfn in (2**52, 2**60)
       for call, arg, f in (("free", "pfn", lambda d, p: d.free(p)),
                            ("free_fast", "pfn", lambda d, p: d.free_fast(p, 1)),
                            ("reserve", "lo", lambda d, p: d.reserve(p, p)),
                            ("reserve", "hi", lambda d, p: d.reserve(1, p)))},
    "free never allocated": Case(D, lambda l: l.obj.free(0x100), IovaNotFound, "0x100"),
    "free_fast never allocated": Case(D, lambda l: l.obj.free_fast(0x100, 1), IovaNotFound,
                                      0x100),
    "free the anchor": Case(D, lambda l: l.obj.free(2**64 - 1), IovaValueError, 2**64 - 1),
    "reserve lo above hi": Case(D, lambda l: l.obj.reserve(0x20, 0x10), IovaValueError, "0x20"),
    # the domain has CPUs 0 and 1
    **{"%s cpu %d" % (call, cpu): Case(D, lambda l, f=f, cpu=cpu: f(l.obj, cpu), IovaCpuError,
                                       str(cpu))
       for cpu in (2, -2, 99)
       for call, f in (("alloc_fast", lambda d, c: d.alloc_fast(1, TOP32, cpu=c)),
                       ("free_fast", lambda d, c: d.free_fast(1, 1, cpu=c)),
                       ("flush_cpu", lambda d, c: d.flush_cpu(c)))},
    "alloc_fast cpu str": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, cpu="0"), IovaTypeError,
                               "0"),
    "alloc_many item 0": Case(D, lambda l: l.obj.alloc_many([1, 2, 0, 4], TOP32),
                              IovaValueError, "sizes[2] = 0"),
    "alloc_many item negative": Case(D, lambda l: l.obj.alloc_many([1, -1], TOP32),
                                     IovaValueError, "sizes[1]"),
    "alloc_many double buffer": Case(D, lambda l: l.obj.alloc_many(array.array("d", [1.0, 2.0]),
                                                                   TOP32),
                                     IovaTypeError, "format"),
    "alloc_many str": Case(D, lambda l: l.obj.alloc_many("abc", TOP32), IovaTypeError, "str"),
    "free_fast_many lengths differ": Case(D, lambda l: l.obj.free_fast_many([1, 2], [1]),
                                          IovaValueError, "items"),

    # IovaDomain(...)
    **{"ctor granule %d" % g: Case("none", lambda _, g=g: IovaDomain(g, 1), IovaValueError,
                                   str(g))
       for g in (0, 1, 3, 4095, 4097, 2**17, 2**20)},
    "ctor start beyond reach": Case("none", lambda _: IovaDomain(4096, 2**52), IovaValueError,
                                    "start_pfn"),
    "ctor ncpus 0": Case("none", lambda _: IovaDomain(4096, 1, ncpus=0), IovaValueError,
                         "ncpus"),
    "ctor kernel unknown": Case("none", lambda _: IovaDomain(4096, 1, kernel="5.4"),
                                IovaValueError, "kernel"),
    # 6.12 derives it from the granule
    "ctor dma32 on 6.12": Case("none", lambda _: IovaDomain(4096, 1, dma_32bit_pfn=0xFFFFF),
                               IovaValueError, "dma_32bit_pfn"),
    "ctor search unknown": Case("none", lambda _: IovaDomain(4096, 1, search="fast"),
                                IovaValueError, "search"),
    "ctor granule str": Case("none", lambda _: IovaDomain("4096", 1), IovaTypeError, "4096"),
    "ctor granule None": Case("none", lambda _: IovaDomain(None), IovaTypeError, None),
    "ctor granule negative": Case("none", lambda _: IovaDomain(-4096), IovaValueError, -4096),
    "ctor granule 2**64": Case("none", lambda _: IovaDomain(2**64), IovaValueError, 2**64),
    "ctor granule bool": Case("none", lambda _: IovaDomain(True), IovaTypeError, True),
    "ctor granule float": Case("none", lambda _: IovaDomain(4096.0), IovaTypeError, 4096.0),
    "ctor start negative": Case("none", lambda _: IovaDomain(4096, -1), IovaValueError, -1),
    "ctor start 2**64": Case("none", lambda _: IovaDomain(4096, 2**64), IovaValueError, 2**64),
    "ctor start str": Case("none", lambda _: IovaDomain(4096, "1"), IovaTypeError, "1"),
    "ctor ncpus negative": Case("none", lambda _: IovaDomain(ncpus=-1), IovaValueError, -1),
    "ctor ncpus too many": Case("none", lambda _: IovaDomain(ncpus=1025), IovaValueError, 1025),
    "ctor ncpus str": Case("none", lambda _: IovaDomain(ncpus="2"), IovaTypeError, "2"),
    "ctor ncpus float": Case("none", lambda _: IovaDomain(ncpus=1.5), IovaTypeError, 1.5),
    "ctor ncpus beyond unsigned": Case("none", lambda _: IovaDomain(ncpus=2**40), IovaValueError,
                                       2**40),
    "ctor ncpus bool": Case("none", lambda _: IovaDomain(ncpus=True), IovaTypeError, True),
    "ctor kernel None": Case("none", lambda _: IovaDomain(kernel=None), IovaValueError, None),
    "ctor kernel int": Case("none", lambda _: IovaDomain(kernel=612), IovaValueError, 612),
    "ctor search None": Case("none", lambda _: IovaDomain(search=None), IovaValueError, None),
    "ctor kernel unhashable": Case("none", lambda _: IovaDomain(kernel=[]), IovaValueError, []),
    "ctor search unhashable": Case("none", lambda _: IovaDomain(search={}), IovaValueError, {}),
    "ctor dma32 zero": Case("none", lambda _: IovaDomain(kernel="4.10", dma_32bit_pfn=0),
                            IovaValueError, 0),
    "ctor dma32 negative": Case("none", lambda _: IovaDomain(kernel="4.10", dma_32bit_pfn=-1),
                                IovaValueError, -1),
    "ctor dma32 beyond reach": Case("none", lambda _: IovaDomain(kernel="4.10",
                                                                 dma_32bit_pfn=2**52),
                                    IovaValueError, 2**52),
    "ctor dma32 str": Case("none", lambda _: IovaDomain(kernel="4.10", dma_32bit_pfn="x"),
                           IovaTypeError, "x"),

    # alloc / alloc_fast
    "alloc size float": Case(D, lambda l: l.obj.alloc(2.0, TOP32), IovaTypeError, 2.0),
    "alloc size bool": Case(D, lambda l: l.obj.alloc(True, TOP32), IovaTypeError, True),
    "alloc aligned str": Case(D, lambda l: l.obj.alloc(1, TOP32, "yes"), IovaTypeError, "yes"),
    "alloc aligned None": Case(D, lambda l: l.obj.alloc(1, TOP32, None), IovaTypeError,
                               "size_aligned"),
    # cffi would truncate anything with __int__: 1.5 pages must not become 1
    "alloc size Decimal": Case(D, lambda l: l.obj.alloc(decimal.Decimal("1.5"), TOP32),
                               IovaTypeError, "Decimal"),
    "alloc limit bool": Case(D, lambda l: l.obj.alloc(1, True), IovaTypeError, True),
    "alloc size index-only negative": Case(D, lambda l: l.obj.alloc(Index(-1), TOP32),
                                           IovaValueError, -1),
    "alloc_fast size bool": Case(D, lambda l: l.obj.alloc_fast(True, TOP32), IovaTypeError,
                                 True),
    "alloc_fast cpu bool": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, cpu=True),
                                IovaTypeError, True),
    "alloc_fast cpu -2**40": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, cpu=-2**40),
                                  IovaCpuError, -2**40),
    "alloc_fast size str": Case(D, lambda l: l.obj.alloc_fast("x", TOP32), IovaTypeError, "x"),
    "alloc_fast limit str": Case(D, lambda l: l.obj.alloc_fast(1, "x"), IovaTypeError, "x"),
    "alloc_fast cpu float": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, cpu=1.5),
                                 IovaTypeError, 1.5),
    "alloc_fast cpu beyond int": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, cpu=2**40),
                                      IovaCpuError, 2**40),
    # -1 is the core's "this thread's slot", which only None may ask for
    "alloc_fast cpu -1": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, cpu=-1), IovaCpuError, -1),
    "free_fast cpu -1": Case(D, lambda l: l.obj.free_fast(l.q, 2, cpu=-1), IovaCpuError, -1),
    "alloc_fast_many cpu -1": Case(D, lambda l: l.obj.alloc_fast_many([1], TOP32, cpu=-1),
                                   IovaCpuError, -1),
    "free_fast_many cpu -1": Case(D, lambda l: l.obj.free_fast_many([l.q], [2], cpu=-1),
                                  IovaCpuError, -1),
    "alloc_fast flush None": Case(D, lambda l: l.obj.alloc_fast(1, TOP32, None), IovaTypeError,
                                  "flush_rcache"),
    "alloc_fast 4.10 size 0": Case(D4, lambda l: l.obj.alloc_fast(0, TOP32), IovaValueError, 0),

    # free / find / reserve
    "free negative": Case(D, lambda l: l.obj.free(-1), IovaValueError, -1),
    "free 2**64": Case(D, lambda l: l.obj.free(2**64), IovaValueError, 2**64),
    "free bool": Case(D, lambda l: l.obj.free(True), IovaTypeError, True),
    "free cached range": Case(D, lambda l: l.obj.free(l.cached), IovaInvalidFree, None),
    "free 4.10 never allocated": Case(D4, lambda l: l.obj.free(0x20), IovaNotFound, 0x20),
    "find negative": Case(D, lambda l: l.obj.find(-1), IovaValueError, -1),
    "find 2**64": Case(D, lambda l: l.obj.find(2**64), IovaValueError, 2**64),
    "find str": Case(D, lambda l: l.obj.find("1"), IovaTypeError, "1"),
    "reserve hi str": Case(D, lambda l: l.obj.reserve(1, "x"), IovaTypeError, "x"),
    "reserve lo negative": Case(D, lambda l: l.obj.reserve(-1, 5), IovaValueError, -1),
    "reserve hi 2**64": Case(D, lambda l: l.obj.reserve(1, 2**64), IovaValueError, 2**64),
    "reserve hi None": Case(D, lambda l: l.obj.reserve(1, None), IovaTypeError, None),

    # free_fast
    "free_fast size 0": Case(D, lambda l: l.obj.free_fast(l.q, 0), IovaValueError, 0),
    "free_fast size negative": Case(D, lambda l: l.obj.free_fast(l.q, -1), IovaValueError, -1),
    "free_fast size 2**64": Case(D, lambda l: l.obj.free_fast(l.q, 2**64), IovaValueError,
                                 2**64),
    "free_fast size str": Case(D, lambda l: l.obj.free_fast(l.q, "2"), IovaTypeError, "2"),
    "free_fast cpu str": Case(D, lambda l: l.obj.free_fast(l.q, 2, cpu="x"), IovaTypeError, "x"),
    "free_fast cpu beyond int": Case(D, lambda l: l.obj.free_fast(l.q, 2, cpu=2**40),
                                     IovaCpuError, 2**40),
    "free_fast size bool": Case(D, lambda l: l.obj.free_fast(l.q, True), IovaTypeError, True),
    "free_fast cached": Case(D, lambda l: l.obj.free_fast(l.cached, 1, cpu=0), IovaInvalidFree,
                             None),
    "free_fast inside a range": Case(D, lambda l: l.obj.free_fast(l.p + 1, 4), IovaInvalidFree,
                                     None),
    "free_fast 4.10 wrong class": Case(D4, lambda l: l.obj.free_fast(l.q, 9), IovaInvalidFree,
                                       9),

    # batches
    "alloc_many None": Case(D, lambda l: l.obj.alloc_many(None, TOP32), IovaTypeError, "None"),
    "alloc_many int": Case(D, lambda l: l.obj.alloc_many(5, TOP32), IovaTypeError, "int"),
    "alloc_many item str": Case(D, lambda l: l.obj.alloc_many([1, "x"], TOP32), IovaTypeError,
                                "sizes[1]"),
    "alloc_many item 2**64": Case(D, lambda l: l.obj.alloc_many([2**64], TOP32), IovaValueError,
                                  2**64),
    "alloc_many item beyond reach": Case(D, lambda l: l.obj.alloc_many([1, 2**60], TOP32),
                                         IovaValueError, "sizes[1]"),
    "alloc_many limit str": Case(D, lambda l: l.obj.alloc_many([1], "x"), IovaTypeError, "x"),
    "alloc_many limit bool": Case(D, lambda l: l.obj.alloc_many([1], True), IovaTypeError, True),
    "alloc_many limit negative": Case(D, lambda l: l.obj.alloc_many([1], -1), IovaValueError,
                                      -1),
    "alloc_many item bool": Case(D, lambda l: l.obj.alloc_many([1, True], TOP32), IovaTypeError,
                                 "sizes[1]"),
    "alloc_many aligned str": Case(D, lambda l: l.obj.alloc_many([1], TOP32, "x"),
                                   IovaTypeError, "size_aligned"),
    "alloc_many float buffer": Case(D, lambda l: l.obj.alloc_many(array.array("f", [1] * 2),
                                                                  TOP32),
                                    IovaTypeError, "'f'"),
    "alloc_many odd bytes": Case(D, lambda l: l.obj.alloc_many(b"\x01" * 12, TOP32),
                                 IovaTypeError, "'B'"),
    # only raw bytes are read as 8-byte words: typed buffers of 1-, 2- or
    # 4-byte items hold items of that size
    "alloc_many array('B') of 8": Case(D, lambda l: l.obj.alloc_many(
        array.array("B", [1, 0, 0, 0, 0, 0, 0, 0]), TOP32), IovaTypeError, "1-byte"),
    "alloc_many array('b') of 8": Case(D, lambda l: l.obj.alloc_many(
        array.array("b", [1, 0, 0, 0, 0, 0, 0, 0]), TOP32), IovaTypeError, "1-byte"),
    "alloc_fast_many array('H') of 4": Case(D, lambda l: l.obj.alloc_fast_many(
        array.array("H", [1, 0, 0, 0]), TOP32), IovaTypeError, "2-byte"),
    "free_many array('I') of 2": Case(D, lambda l: l.obj.free_many(array.array("I", [1, 0])),
                                      IovaTypeError, "4-byte"),
    "free_fast_many sizes array('B')": Case(D, lambda l: l.obj.free_fast_many(
        [l.q], array.array("B", [2, 0, 0, 0, 0, 0, 0, 0])), IovaTypeError, "1-byte"),
    "alloc_fast_many zero": Case(D, lambda l: l.obj.alloc_fast_many([1, 0], TOP32),
                                 IovaValueError, "sizes[1]"),
    "alloc_fast_many limit 0": Case(D, lambda l: l.obj.alloc_fast_many([1], 0), IovaValueError,
                                    0),
    "alloc_fast_many cpu 99": Case(D, lambda l: l.obj.alloc_fast_many([1], TOP32, cpu=99),
                                   IovaCpuError, 99),
    "alloc_fast_many cpu negative": Case(D, lambda l: l.obj.alloc_fast_many([1], TOP32, cpu=-2),
                                         IovaCpuError, -2),
    "alloc_fast_many cpu str": Case(D, lambda l: l.obj.alloc_fast_many([1], TOP32, cpu="0"),
                                    IovaTypeError, "0"),
    "alloc_fast_many cpu beyond int": Case(D, lambda l: l.obj.alloc_fast_many([1], TOP32,
                                                                              cpu=2**40),
                                           IovaCpuError, 2**40),
    "alloc_fast_many flush None": Case(D, lambda l: l.obj.alloc_fast_many([1], TOP32, None),
                                       IovaTypeError, "flush_rcache"),
    "alloc_fast_many limit bool": Case(D, lambda l: l.obj.alloc_fast_many([1], False),
                                       IovaTypeError, False),
    "alloc_fast_many None": Case(D, lambda l: l.obj.alloc_fast_many(None, TOP32), IovaTypeError,
                                 "None"),
    "free_many None": Case(D, lambda l: l.obj.free_many(None), IovaTypeError, "None"),
    "free_many str": Case(D, lambda l: l.obj.free_many("abc"), IovaTypeError, "str"),
    "free_many item negative": Case(D, lambda l: l.obj.free_many([l.p, -1]), IovaValueError,
                                    "pfns[1]"),
    "free_many item 2**64": Case(D, lambda l: l.obj.free_many([2**64]), IovaValueError, 2**64),
    "free_many float buffer": Case(D, lambda l: l.obj.free_many(array.array("d", [1.0])),
                                   IovaTypeError, "'d'"),
    "free_many beyond reach": Case(D, lambda l: l.obj.free_many([2**60]), IovaValueError,
                                   2**60),
    "free_many cached first": Case(D, lambda l: l.obj.free_many([l.cached, l.p]),
                                   IovaInvalidFree, None),
    "free_fast_many size 0": Case(D, lambda l: l.obj.free_fast_many([l.q], [0]),
                                  IovaValueError, 0),
    "free_fast_many pfns None": Case(D, lambda l: l.obj.free_fast_many(None, [1]),
                                     IovaTypeError, "None"),
    "free_fast_many sizes str": Case(D, lambda l: l.obj.free_fast_many([l.q], "x"),
                                     IovaTypeError, "str"),
    "free_fast_many cpu 9": Case(D, lambda l: l.obj.free_fast_many([l.q], [2], cpu=9),
                                 IovaCpuError, 9),
    "free_fast_many cpu beyond int": Case(D, lambda l: l.obj.free_fast_many([l.q], [2],
                                                                            cpu=2**40),
                                          IovaCpuError, 2**40),
    "free_fast_many cpu float": Case(D, lambda l: l.obj.free_fast_many([l.q], [2], cpu=0.0),
                                     IovaTypeError, 0.0),
    "free_fast_many sizes float buffer": Case(D, lambda l: l.obj.free_fast_many(
        [l.q], array.array("d", [2.0])), IovaTypeError, "'d'"),
    "free_fast_many beyond reach": Case(D, lambda l: l.obj.free_fast_many([2**60], [1]),
                                        IovaValueError, 2**60),
    "free_fast_many never allocated": Case(D, lambda l: l.obj.free_fast_many([0x20], [1]),
                                           IovaNotFound, 0x20),

    # the caches and the clock
    "flush_cpu str": Case(D, lambda l: l.obj.flush_cpu("0"), IovaTypeError, "0"),
    "flush_cpu float": Case(D, lambda l: l.obj.flush_cpu(1.5), IovaTypeError, 1.5),
    "flush_cpu None": Case(D, lambda l: l.obj.flush_cpu(None), IovaTypeError, None),
    "flush_cpu -1": Case(D, lambda l: l.obj.flush_cpu(-1), IovaCpuError, -1),
    "flush_cpu beyond int": Case(D, lambda l: l.obj.flush_cpu(2**40), IovaCpuError, 2**40),
    "advance negative": Case(D, lambda l: l.obj.advance(-1), IovaValueError, -1),
    "advance 2**64": Case(D, lambda l: l.obj.advance(2**64), IovaValueError, 2**64),
    "advance str": Case(D, lambda l: l.obj.advance("5"), IovaTypeError, "5"),
    "advance None": Case(D, lambda l: l.obj.advance(None), IovaTypeError, None),
    "advance float": Case(D, lambda l: l.obj.advance(1.5), IovaTypeError, 1.5),
    "advance bool": Case(D, lambda l: l.obj.advance(True), IovaTypeError, True),
    "run_trim class 6": Case(D, lambda l: l.obj.run_trim(6), IovaValueError, 6),
    "run_trim class -1": Case(D, lambda l: l.obj.run_trim(-1), IovaValueError, -1),
    "run_trim str": Case(D, lambda l: l.obj.run_trim("0"), IovaTypeError, "0"),
    "run_trim bool": Case(D, lambda l: l.obj.run_trim(True), IovaTypeError, True),
    "set_clock negative": Case(D, lambda l: l.obj.set_clock(-1), IovaValueError, -1),
    "set_clock 2**64": Case(D, lambda l: l.obj.set_clock(2**64), IovaValueError, 2**64),
    "set_clock float": Case(D, lambda l: l.obj.set_clock(1.5), IovaTypeError, 1.5),
    "flush_cpu bool": Case(D, lambda l: l.obj.flush_cpu(False), IovaTypeError, False),
    "search set unknown": Case(D, lambda l: _set_search(l.obj, "fast"), IovaValueError, "fast"),
    "search set None": Case(D, lambda l: _set_search(l.obj, None), IovaValueError, None),
    "search set int": Case(D, lambda l: _set_search(l.obj, 1), IovaValueError, 1),
    "search set unhashable": Case(D, lambda l: _set_search(l.obj, []), IovaValueError, []),

    # restore
    "restore None": Case("none", lambda _: IovaDomain.restore(None), IovaTypeError, "None"),
    "restore int": Case("none", lambda _: IovaDomain.restore(5), IovaTypeError, "int"),
    "restore zeros": Case("none", lambda _: IovaDomain.restore(bytes(160)), IovaValueError,
                          NOT_NAMED),
    "restore floats": Case("none", lambda _: IovaDomain.restore(array.array("d", [1.0] * 20)),
                           IovaValueError, NOT_NAMED),

    # calls on a closed domain
    **{"closed %s" % name: Case(CL, call, IovaClosed, NOT_NAMED) for name, call in (
        ("alloc", lambda l: l.obj.alloc(1, TOP32)), ("free", lambda l: l.obj.free(l.p)),
        ("find", lambda l: l.obj.find(l.p)), ("reserve", lambda l: l.obj.reserve(1, 2)),
        ("ranges", lambda l: l.obj.ranges()), ("state", lambda l: l.obj.state()),
        ("len", lambda l: len(l.obj)), ("check", lambda l: l.obj.check()),
        ("alloc_fast", lambda l: l.obj.alloc_fast(1, TOP32)),
        ("free_fast", lambda l: l.obj.free_fast(l.p, 1)),
        ("flush_cpu", lambda l: l.obj.flush_cpu(0)), ("flush_depot", lambda l: l.obj.flush_depot()),
        ("flush_rcaches", lambda l: l.obj.flush_rcaches()),
        ("run_pending_work", lambda l: l.obj.run_pending_work()),
        ("advance", lambda l: l.obj.advance(5)), ("rcache_stats", lambda l: l.obj.rcache_stats()),
        ("cached_pfns", lambda l: l.obj.cached_pfns()),
        ("alloc_many", lambda l: l.obj.alloc_many([1], TOP32)),
        ("free_many", lambda l: l.obj.free_many([l.p])),
        ("alloc_fast_many", lambda l: l.obj.alloc_fast_many([1], TOP32)),
        ("free_fast_many", lambda l: l.obj.free_fast_many([l.p], [1])))},
    "closed stats": Case(CL, lambda l: l.obj.stats(), IovaClosed, NOT_NAMED),
    "closed used_pfns": Case(CL, lambda l: l.obj.used_pfns, IovaClosed, NOT_NAMED),
    "closed search": Case(CL, lambda l: l.obj.search, IovaClosed, NOT_NAMED),
    "closed set search": Case(CL, lambda l: _set_search(l.obj, "linear"), IovaClosed, NOT_NAMED),
    "closed save": Case(CL, lambda l: l.obj.save(), IovaClosed, NOT_NAMED),
    "closed copy": Case(CL, lambda l: __import__("copy").deepcopy(l.obj), IovaClosed, NOT_NAMED),
    "closed alloc_fast_many empty": Case(CL, lambda l: l.obj.alloc_fast_many([], TOP32),
                                         IovaClosed, NOT_NAMED),
    "closed free_fast_many empty": Case(CL, lambda l: l.obj.free_fast_many([], []), IovaClosed,
                                        NOT_NAMED),
    "closed free_many empty": Case(CL, lambda l: l.obj.free_many([]), IovaClosed, NOT_NAMED),
    "closed alloc_many empty": Case(CL, lambda l: l.obj.alloc_many([], TOP32), IovaClosed,
                                    NOT_NAMED),

    # PfnAllocator(...)
    "allocator iovad wrong type": Case("none", lambda _: PfnAllocator("iova", iovad=object()),
                                       IovaTypeError, "iovad"),
    "allocator iovad for msi": Case("none", lambda _: PfnAllocator("msi", iovad=IovaDomain()),
                                    IovaValueError, "iovad"),
    "allocator kernel unknown": Case("none", lambda _: PfnAllocator("iova", kernel="5.4"),
                                     IovaValueError, "5.4"),
    "allocator ncpus str": Case("none", lambda _: PfnAllocator("iova", ncpus="x"),
                                IovaTypeError, "x"),
    "allocator ncpus 0": Case("none", lambda _: PfnAllocator("iova", ncpus=0), IovaValueError,
                              0),
    "allocator msi granule 3": Case("none", lambda _: PfnAllocator("msi", granule=3),
                                    IovaValueError, 3),
    "allocator wrap end 2**63": Case("none", lambda _: PfnAllocator("wraparound",
                                                                    end_pfn=2**63),
                                     IovaValueError, 2**63),

    # PfnAllocator.alloc, by type
    **{"%s alloc pages %r" % (t, v): Case(t, lambda l, v=v: l.obj.alloc(v, 0x1FF), e, v)
       for t in ("iova", "msi", "wrap", "reset")
       for v, e in ((-1, IovaValueError), (2**64, IovaValueError), ("x", IovaTypeError),
                    (0, IovaValueError), (2**63, IovaValueError))},
    **{"%s alloc limit %r" % (t, v): Case(t, lambda l, v=v: l.obj.alloc(1, v), e, v)
       for t in ("iova", "wrap", "reset")
       for v, e in ((-1, IovaValueError), ("x", IovaTypeError), (0, IovaValueError))},
    "iova alloc cpu 99": Case("iova", lambda l: l.obj.alloc(1, TOP32, cpu=99), IovaCpuError, 99),
    "iova alloc cpu negative": Case("iova", lambda l: l.obj.alloc(1, TOP32, cpu=-2),
                                    IovaCpuError, -2),
    "iova alloc cpu str": Case("iova", lambda l: l.obj.alloc(1, TOP32, cpu="1"), IovaTypeError,
                               "1"),

    # PfnAllocator.free, by type
    **{"%s free never handed out" % t: Case(t, lambda l: l.obj.free(0x1F0, 1), e, 0x1F0)
       for t, e in (("iova", IovaNotFound), ("msi", IovaInvalidFree), ("wrap", IovaNotFound),
                    ("reset", IovaNotFound))},
    **{"%s free pages 0" % t: Case(t, lambda l: l.obj.free(l.q, 0), IovaInvalidFree, 0)
       for t in ("iova", "msi", "wrap", "reset")},
    **{"%s free pages negative" % t: Case(t, lambda l: l.obj.free(l.q, -1), IovaValueError, -1)
       for t in ("iova", "msi", "wrap", "reset")},
    **{"%s free pfn str" % t: Case(t, lambda l: l.obj.free("x", 1), IovaTypeError, "x")
       for t in ("iova", "msi", "wrap", "reset")},
    **{"%s free inside a range" % t: Case(t, lambda l: l.obj.free(l.p + 1, 1), e, None)
       for t, e in (("iova", IovaInvalidFree), ("wrap", IovaNotFound),
                    ("reset", IovaInvalidFree))},
    "iova free cpu 99": Case("iova", lambda l: l.obj.free(l.q, 1, cpu=99), IovaCpuError, 99),
    "iova free wrong class": Case("iova", lambda l: l.obj.free(l.p, 3), IovaInvalidFree, 3),
    "wrap free wrong size": Case("wrap", lambda l: l.obj.free(l.p, 1), IovaInvalidFree, 1),
    "msi free not the latest": Case("msi", lambda l: l.obj.free(l.p, 2), IovaInvalidFree, None),
    "reset free wrong size": Case("reset", lambda l: l.obj.free(l.p, 1), IovaInvalidFree, 1),
    "iova410 free wrong size": Case("iova410", lambda l: l.obj.free(l.p, 1), IovaInvalidFree, 1),

    # reserve / bypass_rcache / the flush queue, where they do not apply
    **{"%s reserve" % t: Case(t, lambda l: l.obj.reserve(0x1F0, 0x1F1), IovaValueError, None)
       for t in ("iova", "msi", "reset")},
    "wrap reserve lo str": Case("wrap", lambda l: l.obj.reserve("x", 0x1F0), IovaTypeError, "x"),
    "wrap reserve hi negative": Case("wrap", lambda l: l.obj.reserve(0x1F0, -1), IovaValueError,
                                     -1),
    "wrap reserve over a live range": Case("wrap", lambda l: l.obj.reserve(l.p, l.p),
                                           IovaValueError, "overlaps"),
    **{"%s bypass_rcache" % t: Case(t, lambda l: l.obj.bypass_rcache(), IovaValueError, None)
       for t in ("msi", "wrap", "reset")},
    "iova bypass_rcache with ranges live": Case("iova", lambda l: l.obj.bypass_rcache(),
                                                IovaValueError, None),
    **{"%s enable_flush_queue" % t: Case(t, lambda l: l.obj.enable_flush_queue(),
                                         IovaValueError, None)
       for t in ("msi", "wrap", "reset", "iova410")},
    "iova_fq enable twice": Case("iova_fq", lambda l: l.obj.enable_flush_queue(), IovaValueError,
                                 None),
    **{"%s free_lazy without a queue" % t: Case(t, lambda l: l.obj.free_lazy(l.q, 1, 0),
                                                IovaValueError, None)
       for t in ("iova", "msi", "wrap", "reset")},
    **{"%s fq_flushed without a queue" % t: Case(t, lambda l: l.obj.fq_flushed(),
                                                 IovaValueError, None)
       for t in ("iova", "msi", "wrap", "reset")},
    **{"%s ranges" % t: Case(t, lambda l: l.obj.ranges(), IovaValueError, None)
       for t in ("iova", "msi", "reset")},

    # the flush queue
    "fq free_lazy never handed out": Case("iova_fq", lambda l: l.obj.free_lazy(0x20, 1, 0),
                                          IovaNotFound, 0x20),
    "fq free_lazy inside a range": Case("iova_fq", lambda l: l.obj.free_lazy(l.p + 1, 1, 0),
                                        IovaError, None),
    "fq free_lazy pages 0": Case("iova_fq", lambda l: l.obj.free_lazy(l.q, 0, 0),
                                 IovaInvalidFree, 0),
    "fq free_lazy cpu 5": Case("iova_fq", lambda l: l.obj.free_lazy(l.q, 1, 0, cpu=5),
                               IovaCpuError, 5),
    "fq free_lazy wrong class": Case("iova_fq", lambda l: l.obj.free_lazy(l.p, 1, 0),
                                     IovaInvalidFree, 1),
    "fq fq_flushed all rings cpu 7": Case("iova_fq", lambda l: l.obj.fq_flushed(True, 7),
                                          IovaCpuError, 7),
    "fq fq_flushed all rings cpu -1": Case("iova_fq", lambda l: l.obj.fq_flushed(True, -1),
                                           IovaCpuError, -1),

    # DmaCookie
    "cookie kernel unknown": Case("none", lambda _: DmaCookie("iova", kernel="5.4"),
                                  IovaValueError, "5.4"),
    "cookie allocator unknown": Case("none", lambda _: DmaCookie("best-fit"), IovaValueError,
                                     "best-fit"),
    "cookie ncpus 0": Case("none", lambda _: DmaCookie("iova", ncpus=0).init_domain(4096),
                           IovaValueError, 0),
    "cookie ncpus str": Case("none", lambda _: DmaCookie("iova", ncpus="x").init_domain(4096),
                             IovaTypeError, "x"),
    **{"cookie init_domain granule %r" % (g,): Case("none", lambda _, g=g: DmaCookie().init_domain(g),
                                        IovaValueError, g)
       for g in (0, None, True, 2**20, -4096, "4096", 4096.0)},
    "cookie init_domain aperture end negative": Case("none", lambda _: DmaCookie().init_domain(4096, 0, -1),
                                         IovaValueError, -1),
    "cookie init_domain aperture start str": Case("none", lambda _: DmaCookie().init_domain(4096, "x"),
                                                  IovaTypeError, "x"),
    "cookie init_domain msi granule 2**64": Case("none", lambda _: DmaCookie("msi").init_domain(2**64),
                                                 IovaValueError, 2**64),
    "cookie init_domain aperture end 2**64": Case("none", lambda _: DmaCookie().init_domain(
        4096, 0, 2**64), IovaValueError, 2**64),
    "cookie init_domain end_pfn negative": Case("none", lambda _: DmaCookie(kernel="4.10").init_domain(
        4096, end_pfn=-5), IovaValueError, -5),
    "cookie init_domain reserved not pairs": Case("none", lambda _: DmaCookie().init_domain(
        4096, reserved=[(5,)]), IovaTypeError, "reserved[0]"),
    "cookie init_domain reserved not iterable": Case("none", lambda _: DmaCookie().init_domain(
        4096, reserved=5), IovaTypeError, "reserved"),
    "cookie init_domain reserved hi str": Case("none", lambda _: DmaCookie("wraparound").init_domain(
        4096, reserved=[(0x1000, "x")]), IovaTypeError, "x"),
    "cookie init_domain msi base negative": Case("none", lambda _: DmaCookie("msi", msi_base=-1).init_domain(
        4096), IovaValueError, -1),
    "cookie init_domain again, bad reserved": Case("cookie", lambda l: l.obj.init_domain(
        4096, 0, U32, reserved=[("x", 1)]), IovaTypeError, "x"),
    "cookie init_domain again, another granule": Case("cookie", lambda l: l.obj.init_domain(65536),
                                        IovaValueError, "0x10000"),
    **{"cookie alloc_iova size %r" % (s,): Case("cookie", lambda l, s=s: l.obj.alloc_iova(None, s, U32),
                                           IovaValueError, hex(s))
       for s in (0, -4096, 4097)},
    "cookie alloc_iova limit negative": Case("cookie", lambda l: l.obj.alloc_iova(None, 4096, -1),
                                        IovaValueError, -1),
    "cookie alloc_iova limit 0": Case("cookie", lambda l: l.obj.alloc_iova(None, 4096, 0),
                                 IovaValueError, 0),
    "cookie alloc_iova cpu 9": Case("cookie", lambda l: l.obj.alloc_iova(None, 4096, U32, cpu=9),
                               IovaCpuError, 9),
    "cookie alloc_iova size str": Case("cookie", lambda l: l.obj.alloc_iova(None, "x", U32),
                                       IovaTypeError, "x"),
    "cookie alloc_iova size float": Case("cookie", lambda l: l.obj.alloc_iova(None, 4096.0, U32),
                                         IovaTypeError, 4096.0),
    "cookie alloc_iova size bool": Case("cookie", lambda l: l.obj.alloc_iova(None, True, U32),
                                        IovaTypeError, True),
    "cookie alloc_iova limit str": Case("cookie", lambda l: l.obj.alloc_iova(None, 4096, "x"),
                                        IovaTypeError, "x"),
    "cookie alloc_iova limit 2**64": Case("cookie", lambda l: l.obj.alloc_iova(None, 4096, 2**64),
                                          IovaValueError, 2**64),
    "cookie free_iova never mapped": Case("cookie", lambda l: l.obj.free_iova(0x777000, 4096),
                                     IovaNotFound, 0x777),
    "cookie free_iova wrong size": Case("cookie", lambda l: l.obj.free_iova(l.iova, 0x3000),
                                   IovaInvalidFree, 3),
    "cookie free_iova size 0": Case("cookie", lambda l: l.obj.free_iova(l.iova, 0), IovaInvalidFree,
                               0),
    "cookie free_iova negative": Case("cookie", lambda l: l.obj.free_iova(-4096, 4096),
                                 IovaValueError, -1),
    "cookie free_iova iova str": Case("cookie", lambda l: l.obj.free_iova("x", 4096),
                                      IovaTypeError, "x"),
    "cookie free_iova size None": Case("cookie", lambda l: l.obj.free_iova(l.iova, None),
                                       IovaTypeError, None),
    "cookie free_iova lazy, size float": Case("cookie", lambda l: l.obj.free_iova(l.iova, 8192.0,
                                                                                 lazy=True),
                                              IovaTypeError, 8192.0),
    "cookie free_iova lazy, size negative": Case("cookie", lambda l: l.obj.free_iova(l.iova, -0x2000,
                                                                                    lazy=True),
                                                 IovaValueError, "-0x2000"),
    "cookie free_iova lazy, iova 2**64": Case("cookie", lambda l: l.obj.free_iova(2**64, 0x2000,
                                                                                 lazy=True),
                                              IovaValueError, 2**64),
    "cookie free_iova cpu 9": Case("cookie", lambda l: l.obj.free_iova(l.iova, 0x2000, cpu=9),
                              IovaCpuError, 9),
    "cookie free_iova lazy, cpu 9": Case("cookie", lambda l: l.obj.free_iova(l.iova, 0x2000, lazy=True,
                                                                       cpu=9),
                                   IovaCpuError, 9),
    "cookie restored not a state": Case("cookie", lambda l: l.obj.restored("state"),
                                        IovaTypeError, "state"),
    "cookie restored clock negative": Case("cookie", lambda l: l.obj.restored(
        l.obj.allocator_state()[:2] + (-5,) + l.obj.allocator_state()[3:]), IovaValueError, -5),
    "cookie restored devices a list": Case("cookie", lambda l: l.obj.restored(
        l.obj.allocator_state()[:3] + (["dev"],) + l.obj.allocator_state()[4:]), IovaTypeError,
        "dev"),
    "cookie restored damaged words": Case("cookie", lambda l: l.obj.restored(
        (b"\x01" * 8,) + l.obj.allocator_state()[1:]), IovaValueError, NOT_NAMED),
    "cookie restored without its domain": Case("cookie", lambda l: l.obj.restored(
        (None,) + l.obj.allocator_state()[1:]), IovaValueError, NOT_NAMED),
    "cookie allocator_state uninitialised": Case("bare_cookie",
                                                 lambda l: l.obj.allocator_state(), IovaError,
                                                 NOT_NAMED),
    "cookie advance negative": Case("cookie", lambda l: l.obj.advance(-1), IovaValueError, -1),
    "cookie advance str": Case("cookie", lambda l: l.obj.advance("x"), IovaTypeError, "x"),
    "cookie advance 2**64": Case("cookie", lambda l: l.obj.advance(2**64), IovaValueError, 2**64),
    "cookie advance cpu 9": Case("cookie", lambda l: l.obj.advance(20, cpu=9), IovaCpuError, 9),
    "cookie advance cpu None": Case("cookie", lambda l: l.obj.advance(20, cpu=None),
                                    IovaTypeError, None),
    "cookie alloc_iova before init_domain": Case("bare_cookie", lambda l: l.obj.alloc_iova(None, 4096, U32),
                                     IovaError, "init"),
    "cookie free_iova before init_domain": Case("bare_cookie", lambda l: l.obj.free_iova(4096, 4096),
                                    IovaError, "init"),
    "cookie dma_limit negative": Case("cookie", lambda l: l.obj.dma_limit(None, -1),
                                      IovaValueError, -1),
    "cookie dma_limit None": Case("cookie", lambda l: l.obj.dma_limit(None, None),
                                  IovaTypeError, None),
    "cookie dma_limit 2**64": Case("cookie", lambda l: l.obj.dma_limit(None, 2**64),
                                   IovaValueError, 2**64),
    "put_dma_cookie without one": Case("none", lambda _: put_dma_cookie(type("D", (), {})()),
                                       IovaValueError, "no cookie"),
}


@pytest.mark.parametrize("case", [
    pytest.param(c, id=name,
                 marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
    for name, c in CASES.items()])
def test_bad_input(case):
    live = make(case.target)
    before = snapshot(live)
    with pytest.raises(case.exc) as e:
        case.call(live)
    assert isinstance(e.value, IovaError)
    if case.value is not None:
        assert named(case.value, str(e.value)), \
            "%r is not named in %r" % (case.value, str(e.value))
    check(live)
    assert snapshot(live) == before, "the refused call changed the object"


def test_every_public_call_has_a_row():
    """Keeps the catalogue whole: a new public method needs rows here."""
    covered = " ".join(CASES)
    public = {
        IovaDomain: ["ctor", "alloc", "alloc_fast", "free", "find", "reserve", "free_fast",
                     "alloc_many", "alloc_fast_many", "free_many", "free_fast_many",
                     "flush_cpu", "advance", "search", "restore"],
        PfnAllocator: ["allocator", "alloc", "free", "reserve", "bypass_rcache",
                       "enable_flush_queue", "free_lazy", "fq_flushed", "ranges"],
        DmaCookie: ["cookie"],
    }
    missing = [(cls.__name__, m) for cls, ms in public.items() for m in ms if m not in covered]
    assert not missing, missing
    # the argument-taking methods of each class, as the class defines them today
    no_bad_input = {"uses_32bit_first"}            # any object may stand for a device
    for cls in public:
        for name, v in vars(cls).items():
            if name.startswith("_") or not callable(v) or name in no_bad_input:
                continue
            if v.__code__.co_argcount > 1 and not any(name in k for k in CASES):
                raise AssertionError("%s.%s takes arguments but has no row" % (cls.__name__, name))


# ---- refusals that take more than one call ------------------------------------

@pytest.fixture
def d():
    dom = IovaDomain(4096, 16, ncpus=2)
    dom.alloc(4, TOP32)
    dom.alloc_fast(2, TOP32, cpu=0)
    snapshot = (dom.ranges(), dom.state(), dom.cached_pfns())
    yield dom
    # whatever the test threw at it, the domain is unchanged and consistent
    dom.check()
    assert (dom.ranges(), dom.state(), dom.cached_pfns()) == snapshot


def test_errors_are_iova_errors_and_natural_builtins():
    assert issubclass(IovaValueError, ValueError) and issubclass(IovaValueError, IovaError)
    assert issubclass(IovaNotFound, KeyError) and issubclass(IovaTypeError, TypeError)
    assert issubclass(IovaInvalidFree, ValueError) and issubclass(IovaClosed, IovaError)
    assert issubclass(IovaExhausted, IovaError)


def test_double_free_through_the_tree():
    dom = IovaDomain(4096, 1)
    p = dom.alloc(2, TOP32)
    dom.free(p)
    with pytest.raises(IovaNotFound, match=hex(p)):
        dom.free(p)
    dom.check()


def test_double_free_through_the_rcache(d):
    p = d.alloc_fast(1, TOP32, cpu=1)
    d.free_fast(p, 1, cpu=1)
    with pytest.raises(IovaInvalidFree, match="already freed"):
        d.free_fast(p, 1, cpu=0)
    with pytest.raises(IovaInvalidFree, match="already freed"):
        d.free(p)
    assert d.alloc_fast(1, TOP32, cpu=1) == p       # put the fixture back as it was
    d.free(p)


def test_free_fast_must_name_the_start_and_the_size_class(d):
    p = d.alloc_fast(8, TOP32, cpu=0)
    with pytest.raises(IovaInvalidFree, match="not its first pfn"):
        d.free_fast(p + 1, 8)
    with pytest.raises(IovaInvalidFree, match="size class"):
        d.free_fast(p, 16)
    with pytest.raises(IovaInvalidFree, match="size class"):
        d.free_fast(p, 64)
    d.free_fast(p, 5, cpu=0)                        # 5 rounds to 8: the same class
    assert d.alloc_fast(5, TOP32, cpu=0) == p
    d.free(p)


def test_free_many_stops_at_the_first_bad_pfn_and_says_how_far_it_got():
    dom = IovaDomain(4096, 1)
    pfns = list(dom.alloc_many([1, 1, 1, 1], TOP32))
    with pytest.raises(IovaNotFound) as e:
        dom.free_many([pfns[0], pfns[1], 0x42, pfns[2]])
    assert e.value.done == 2 and e.value.index == 2
    assert [r[0] for r in dom.ranges()] == sorted(pfns[2:])
    dom.check()


def test_a_domain_closed_by_with_stays_closed():
    """The calls a closed domain refuses are rows above (target "closed");
    here the ways of closing it."""
    dom = IovaDomain(4096, 1, ncpus=1)
    p = dom.alloc(1, TOP32)
    with dom:
        pass                                        # __exit__ closes
    assert dom.closed
    for call in (lambda: dom.alloc(1, TOP32), lambda: dom.free(p), lambda: len(dom)):
        with pytest.raises(IovaClosed):
            call()
    dom.close()                                     # closing twice is harmless
    assert dom.closed and "closed" in repr(dom)


# ---- what the calls take: integers and batches --------------------------------

class Pages(enum.IntEnum):
    ONE = 1
    FOUR = 4


def twin_domains():
    return IovaDomain(4096, 16, ncpus=2), IovaDomain(4096, 16, ncpus=2)


def test_index_only_integers_act_as_the_same_ints():
    a, b = twin_domains()
    I = Index
    assert a.alloc(I(4), I(TOP32), True) == b.alloc(4, TOP32, True)
    assert a.alloc(Pages.FOUR, TOP32) == b.alloc(4, TOP32)
    p = a.alloc_fast(I(2), I(TOP32), I(1), cpu=I(1))
    assert p == b.alloc_fast(2, TOP32, True, cpu=1)
    assert a.find(I(p)) == b.find(p)
    a.free_fast(I(p), I(2), cpu=I(0))
    b.free_fast(p, 2, cpu=0)
    assert a.reserve(I(0x100), I(0x1FF)) == b.reserve(0x100, 0x1FF)
    assert a.advance(I(20)) == b.advance(20)
    a.flush_cpu(I(0))
    b.flush_cpu(0)
    assert list(a.alloc_many([I(1), Pages.ONE], I(TOP32), I(0))) == \
        list(b.alloc_many([1, 1], TOP32))
    assert list(a.alloc_fast_many([I(3)], TOP32, cpu=I(1))) == \
        list(b.alloc_fast_many([3], TOP32, cpu=1))
    for d in (a, b):
        d.check()
    assert a.ranges() == b.ranges() and a.cached_pfns() == b.cached_pfns()
    assert IovaDomain(I(4096), I(16), ncpus=I(2)).ncpus == 2


def test_numpy_integers_are_integers_and_numpy_floats_are_not():
    np = pytest.importorskip("numpy")
    a, b = twin_domains()
    assert a.alloc(np.uint64(3), np.int64(TOP32)) == b.alloc(3, TOP32)
    a.free_fast(a.alloc_fast(np.uint32(1), TOP32, cpu=np.int8(0)), 1, cpu=0)
    # cffi would truncate these (they have __int__): 1.5 pages is no size
    for bad in (np.float32(1.5), np.float64(2.0)):
        with pytest.raises(IovaTypeError):
            a.alloc(bad, TOP32)
    a.check()


def test_bools_are_not_integers():
    d = IovaDomain(4096, 1, ncpus=1)
    for call in (lambda: d.alloc(True, TOP32), lambda: d.alloc(1, True),
                 lambda: d.alloc_fast(True, TOP32), lambda: d.free(True),
                 lambda: d.alloc_many([True], TOP32), lambda: d.advance(False),
                 lambda: d.flush_cpu(False), lambda: d.alloc_fast(1, TOP32, cpu=True)):
        with pytest.raises(IovaTypeError, match="bool"):
            call()
    assert len(d) == 0
    d.check()


def test_flags_take_bools_and_integers_and_nothing_else():
    a, b = twin_domains()
    assert a.alloc(4, TOP32, 1) == b.alloc(4, TOP32, True)
    assert a.alloc(3, TOP32, Index(7)) == b.alloc(3, TOP32, True)
    assert a.alloc(3, TOP32, 0) == b.alloc(3, TOP32, False)
    for flag in (None, "yes", 1.0, []):
        with pytest.raises(IovaTypeError, match="size_aligned"):
            a.alloc(1, TOP32, flag)
        with pytest.raises(IovaTypeError, match="flush_rcache"):
            a.alloc_fast(1, TOP32, flag)
    assert a.ranges() == b.ranges()


def test_cpus_beyond_a_c_int_are_cpu_errors_naming_them():
    d = IovaDomain(4096, 1, ncpus=2)
    for cpu in (2**31, 2**40, -2**31 - 1, 2**64):
        for call in (lambda: d.alloc_fast(1, TOP32, cpu=cpu),
                     lambda: d.free_fast(1, 1, cpu=cpu), lambda: d.flush_cpu(cpu),
                     lambda: d.alloc_fast_many([1], TOP32, cpu=cpu),
                     lambda: d.free_fast_many([1], [1], cpu=cpu)):
            with pytest.raises(IovaCpuError, match=str(cpu)):
                call()
    assert len(d) == 0
    d.check()


@pytest.mark.parametrize("kind", ["array-Q", "array-q", "bytes", "bytearray", "memoryview",
                                  "strided", "list", "tuple", "generator"])
def test_every_batch_form_gives_the_same_pfns(kind):
    sizes = [1, 2, 3, 8, 1, 64, 5]
    make = {
        "array-Q": lambda v: array.array("Q", v),
        "array-q": lambda v: array.array("q", v),
        "bytes": lambda v: array.array("Q", v).tobytes(),
        "bytearray": lambda v: bytearray(array.array("Q", v).tobytes()),
        "memoryview": lambda v: memoryview(array.array("Q", v)),
        "strided": lambda v: memoryview(array.array("Q", [x for s in v for x in (s, 99)]))[::2],
        "list": list, "tuple": tuple, "generator": lambda v: (x for x in v),
    }[kind]
    a, b = twin_domains()
    pfns = a.alloc_fast_many(make(sizes), TOP32, cpu=0)
    assert type(pfns) is array.array and pfns.typecode == "Q"
    assert list(pfns) == list(b.alloc_fast_many(sizes, TOP32, cpu=0))
    a.free_fast_many(make(list(pfns)), make(sizes), cpu=0)
    b.free_fast_many(list(pfns), sizes, cpu=0)
    tree = a.alloc_many(make(sizes), TOP32)
    assert list(tree) == list(b.alloc_many(sizes, TOP32))
    a.free_many(make(list(tree[:3])))
    b.free_many(tree[:3])
    a.check()
    assert a.ranges() == b.ranges() and not any(a.find(p) for p in tree[:3])


def test_numpy_batches_in_native_order_only():
    np = pytest.importorskip("numpy")
    a, b = twin_domains()
    for dt in (np.uint64, np.int64):
        assert list(a.alloc_many(np.array([1, 2], dtype=dt), TOP32)) == \
            list(b.alloc_many([1, 2], TOP32))
    # a big-endian buffer read as native would ask for 2**56 pages
    swapped = ">u8" if np.little_endian else "<u8"
    with pytest.raises(IovaTypeError, match="format"):
        a.alloc_many(np.array([1], dtype=swapped), TOP32)
    assert a.ranges() == b.ranges()


def test_large_batches_beyond_the_zeroed_template():
    d = IovaDomain(4096, 1, ncpus=1)
    n = 5000                      # more than iova.py's preset result buffer
    pfns = d.alloc_many(array.array("Q", [1]) * n, TOP32)
    assert len(pfns) == n and len(set(pfns)) == n and 0 not in pfns
    d.free_many(pfns)
    assert len(d) == 0
    assert len(d.alloc_many([], TOP32)) == 0


@pytest.mark.parametrize("call", [
    lambda d, mv: d.alloc_many(mv, TOP32),                # sizes[1] = 0
    lambda d, mv: d.alloc_fast_many(mv, TOP32),
    lambda d, mv: d.alloc_many(mv, -1),                   # refused limit
    lambda d, mv: d.alloc_fast_many(mv, TOP32, "x"),      # refused flag
    lambda d, mv: d.alloc_fast_many(mv, TOP32, cpu=2**40),
    lambda d, mv: d.free_many(mv),                        # pfn 1 never allocated
    lambda d, mv: d.free_fast_many(mv, [1, 1]),
    lambda d, mv: d.free_fast_many([1, 1], mv),
    lambda d, mv: d.free_fast_many(mv, [1]),              # lengths differ
    lambda d, mv: d.free_fast_many(mv, "x"),              # sizes refused
    lambda d, mv: d.free_fast_many(mv, mv, cpu=7),
])
def test_a_refused_batch_leaves_no_export_of_the_callers_buffer(call):
    """A kept exception holds the raising frame; no view of the caller's
    memoryview may live on in it (CPython < 3.12.7 can crash collecting the
    memoryview, gh-77894; any version refuses to release or resize it)."""
    d = IovaDomain(4096, 1, ncpus=1)
    backing = array.array("Q", [1, 0])
    mv = memoryview(backing)
    try:
        call(d, mv)
    except (IovaValueError, IovaTypeError, KeyError) as exc:
        kept = exc
    else:
        pytest.fail("the call was not refused")
    assert kept.__traceback__ is not None
    try:
        mv.release()              # BufferError while an export is alive
        backing.append(7)         # likewise for the array under it
        pfns = getattr(kept, "pfns", None)
        if pfns is not None:
            pfns.append(0)        # the result array carries no export either
    except BufferError as exc:
        # drop the frames holding the export before failing, so that a
        # regression fails here rather than crashing the run in the GC
        _drop_frames(kept)
        pytest.fail("an export outlived the refused call: %s" % exc)
    del kept
    gc.collect()
    d.check()


def _drop_frames(e):
    while e is not None:
        e.__traceback__ = None
        e = e.__context__


def test_out_parameter_cells_do_not_carry_an_index_from_an_earlier_failure():
    d = IovaDomain(4096, 1, ncpus=1)
    with pytest.raises(IovaValueError) as e:
        d.alloc_fast_many([1, 1, 1, 0], TOP32)
    assert e.value.index == 3
    for _ in range(3):
        d.free_fast_many(d.alloc_fast_many([1, 2], TOP32), [1, 2])
    with pytest.raises(IovaValueError) as e:
        d.alloc_fast_many([1, 1], 0)                  # refused before any size is looked at
    assert e.value.index == 0 and list(e.value.pfns) == [0, 0]
    with pytest.raises(IovaCpuError) as e:
        d.alloc_many([1], TOP32) and d.alloc_fast_many([1, 1], TOP32, cpu=5)
    assert e.value.index == 0


def test_batch_calls_from_threads_each_get_their_own_result():
    d = IovaDomain(4096, 1, ncpus=4)
    errors = []

    def work(k):
        try:
            sizes = array.array("Q", [1 + k] * 16)
            for _ in range(300):
                pfns = d.alloc_fast_many(sizes, TOP32)
                assert 0 not in pfns
                d.free_fast_many(pfns, sizes)
                with pytest.raises(IovaValueError) as e:
                    d.alloc_many([1] * k + [0], TOP32)
                assert e.value.index == k
        except BaseException as exc:      # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    d.check()


def test_empty_batches_on_a_closed_domain_raise_closed():
    d = IovaDomain(4096, 1, ncpus=1)
    d.close()
    for call in (lambda: d.alloc_many([], TOP32), lambda: d.free_many([]),
                 lambda: d.alloc_fast_many([], TOP32), lambda: d.free_fast_many([], [])):
        with pytest.raises(IovaClosed):
            call()
    live = IovaDomain(4096, 1, ncpus=1)
    assert len(live.alloc_fast_many([], TOP32)) == 0 and live.free_fast_many([], []) is None


def test_unhashable_choices_are_value_errors():
    for kw in ({"kernel": []}, {"search": {}}):
        with pytest.raises(IovaValueError):
            IovaDomain(**kw)
    d = IovaDomain()
    with pytest.raises(IovaValueError, match=r"\[\]"):
        d.search = []
    assert d.search == "augmented"


def test_a_cookie_allocates_for_no_device_under_a_64_bit_limit():
    c = DmaCookie("iova").init_domain(4096, 0, (1 << 64) - 1)
    iova = c.alloc_iova(None, 0x2000, 1 << 40)
    assert iova and iova + 0x2000 - 1 <= 1 << 40
    c.free_iova(iova, 0x2000)
    c.check()


def test_a_cookie_takes_index_only_integers():
    c = DmaCookie("iova").init_domain(4096, Index(0), Index((1 << 32) - 1),
                                      reserved=[(Index(0x1000), 0x1FFF)])
    iova = c.alloc_iova(None, Index(0x3000), Index((1 << 32) - 1))
    assert iova and c.dma_limit(None, Index(5)) == 5
    c.free_iova(Index(iova), Index(0x3000))
    c.advance(Index(3))
    assert c.clock_ms == 3
    c.check()
