"""What IovaDomain and DmaCookie take as an integer and as a batch, and
what a refused batch call leaves behind.

Integers: a plain int, or anything operator.index takes (numpy integers,
IntEnum, an object with __index__ alone), never a bool. Batches: an array or
any buffer of 8-byte native integers read in place, raw bytes, or an
iterable of integers. The bad-value side is tests/test_bad_input_catalogue.py.
"""
import array
import enum
import gc
import threading

import pytest

from pyiova import IovaClosed, IovaCpuError, IovaDomain, IovaTypeError, IovaValueError
from pyiova.cookie import DmaCookie

TOP32 = 0xFFFFF


class IndexOnly:
    """An integer through __index__ alone: cffi, which reads __int__, refuses it."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


class Pages(enum.IntEnum):
    ONE = 1
    FOUR = 4


def twin_domains():
    return IovaDomain(4096, 16, ncpus=2), IovaDomain(4096, 16, ncpus=2)


def test_index_only_integers_act_as_the_same_ints():
    a, b = twin_domains()
    I = IndexOnly
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
    assert a.alloc(3, TOP32, IndexOnly(7)) == b.alloc(3, TOP32, True)
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
    c = DmaCookie("iova").init_domain(4096, IndexOnly(0), IndexOnly((1 << 32) - 1),
                                      reserved=[(IndexOnly(0x1000), 0x1FFF)])
    iova = c.alloc_iova(None, IndexOnly(0x3000), IndexOnly((1 << 32) - 1))
    assert iova and c.dma_limit(None, IndexOnly(5)) == 5
    c.free_iova(IndexOnly(iova), IndexOnly(0x3000))
    c.advance(IndexOnly(3))
    assert c.clock_ms == 3
    c.check()
