"""Bad input never crashes and never corrupts: each call raises a clear
pyiova error naming the bad value, and the domain still checks out."""
import array

import pytest

import pyiova
from pyiova import (IovaClosed, IovaCpuError, IovaDomain, IovaError, IovaInvalidFree,
                    IovaNotFound, IovaTypeError, IovaValueError)

TOP32 = 0xFFFFF


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
    assert issubclass(pyiova.IovaExhausted, IovaError)


@pytest.mark.parametrize("size", [0, -1, 2**64, 2**52])
def test_bad_sizes(d, size):
    for call in (lambda: d.alloc(size, TOP32), lambda: d.alloc_fast(size, TOP32)):
        with pytest.raises(IovaValueError, match=str(size)):
            call()


@pytest.mark.parametrize("limit", [0, 15, -5, 2**52, 2**64 + 3])
def test_bad_limits(d, limit):
    for call in (lambda: d.alloc(1, limit), lambda: d.alloc_fast(1, limit),
                 lambda: d.alloc_many([1, 2], limit)):
        with pytest.raises(IovaValueError) as e:
            call()
        assert str(limit) in str(e.value) or hex(limit) in str(e.value)


@pytest.mark.parametrize("bad", [1.5, "3", None, b"\x01", [1]])
def test_non_integers(d, bad):
    with pytest.raises(IovaTypeError, match="integer"):
        d.alloc(bad, TOP32)
    with pytest.raises(IovaTypeError):
        d.alloc(1, bad)
    with pytest.raises(IovaTypeError):
        d.free(bad)
    with pytest.raises(IovaTypeError):
        d.find(bad)
    with pytest.raises(IovaTypeError):
        d.reserve(bad, 10)
    with pytest.raises(IovaTypeError):
        d.free_fast(bad, 1)


@pytest.mark.parametrize("granule", [0, 1, 3, 4095, 4097, 2**17, 2**20])
def test_bad_granules(granule):
    with pytest.raises(IovaValueError, match=str(granule)):
        IovaDomain(granule, 1)


def test_bad_constructor_arguments():
    with pytest.raises(IovaValueError, match="start_pfn"):
        IovaDomain(4096, 2**52)
    with pytest.raises(IovaValueError, match="ncpus"):
        IovaDomain(4096, 1, ncpus=0)
    with pytest.raises(IovaValueError, match="kernel"):
        IovaDomain(4096, 1, kernel="5.4")
    with pytest.raises(IovaValueError, match="dma_32bit_pfn"):
        IovaDomain(4096, 1, dma_32bit_pfn=0xFFFFF)           # 6.12 derives it
    with pytest.raises(IovaValueError, match="search"):
        IovaDomain(4096, 1, search="fast")
    with pytest.raises(IovaTypeError):
        IovaDomain("4096", 1)


@pytest.mark.parametrize("pfn", [2**52, 2**60])
def test_pfns_beyond_the_granules_reach(d, pfn):
    with pytest.raises(IovaValueError, match="granule"):
        d.free(pfn)
    with pytest.raises(IovaValueError, match="granule"):
        d.free_fast(pfn, 1)
    with pytest.raises(IovaValueError, match="granule"):
        d.reserve(pfn, pfn)
    with pytest.raises(IovaValueError, match="granule"):
        d.reserve(1, pfn)


def test_freeing_what_is_not_allocated(d):
    with pytest.raises(IovaNotFound, match="0x100"):
        d.free(0x100)
    with pytest.raises(KeyError):
        d.free_fast(0x100, 1)


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


def test_the_anchor_cannot_be_freed(d):
    with pytest.raises(IovaValueError):
        d.free(2**64 - 1)                           # beyond the granule's reach anyway


def test_reserve_with_lo_above_hi(d):
    with pytest.raises(IovaValueError, match="0x20"):
        d.reserve(0x20, 0x10)


def test_bad_cpus(d):
    for cpu in (2, -2, 99):
        with pytest.raises(IovaCpuError, match=str(cpu)):
            d.alloc_fast(1, TOP32, cpu=cpu)
        with pytest.raises(IovaCpuError):
            d.free_fast(1, 1, cpu=cpu)
        with pytest.raises(IovaCpuError):
            d.flush_cpu(cpu)
    with pytest.raises(IovaTypeError):
        d.alloc_fast(1, TOP32, cpu="0")


def test_bad_batches(d):
    with pytest.raises(IovaValueError, match=r"sizes\[2\] = 0"):
        d.alloc_many([1, 2, 0, 4], TOP32)
    with pytest.raises(IovaValueError, match=r"sizes\[1\]"):
        d.alloc_many([1, -1], TOP32)
    with pytest.raises(IovaTypeError, match="format"):
        d.alloc_many(array.array("d", [1.0, 2.0]), TOP32)
    with pytest.raises(IovaTypeError):
        d.alloc_many("abc", TOP32)
    with pytest.raises(IovaValueError, match="items"):
        d.free_fast_many([1, 2], [1])


def test_free_many_stops_at_the_first_bad_pfn_and_says_how_far_it_got():
    dom = IovaDomain(4096, 1)
    pfns = list(dom.alloc_many([1, 1, 1, 1], TOP32))
    with pytest.raises(IovaNotFound) as e:
        dom.free_many([pfns[0], pfns[1], 0x42, pfns[2]])
    assert e.value.done == 2 and e.value.index == 2
    assert [r[0] for r in dom.ranges()] == sorted(pfns[2:])
    dom.check()


def test_every_call_after_close_raises_closed():
    dom = IovaDomain(4096, 1, ncpus=1)
    p = dom.alloc(1, TOP32)
    with dom:
        pass                                        # __exit__ closes
    assert dom.closed
    calls = [lambda: dom.alloc(1, TOP32), lambda: dom.free(p), lambda: dom.find(p),
             lambda: dom.reserve(1, 2), lambda: dom.ranges(), lambda: dom.state(),
             lambda: len(dom), lambda: dom.check(), lambda: dom.alloc_fast(1, TOP32),
             lambda: dom.free_fast(p, 1), lambda: dom.flush_cpu(0), lambda: dom.flush_depot(),
             lambda: dom.flush_rcaches(), lambda: dom.run_pending_work(),
             lambda: dom.advance(5), lambda: dom.rcache_stats(), lambda: dom.cached_pfns(),
             lambda: dom.alloc_many([1], TOP32), lambda: dom.free_many([p]),
             lambda: dom.alloc_fast_many([1], TOP32), lambda: dom.free_fast_many([p], [1])]
    for call in calls:
        with pytest.raises(IovaClosed):
            call()
    dom.close()                                     # closing twice is harmless
    assert "closed" in repr(dom)
