"""A short pass of fuzz/fuzz_iova.py, and a regression test for everything
the fuzzer has found.

The short pass runs each fuzz property for PYIOVA_FUZZ_EXAMPLES examples
(default here: 20, a few seconds in all); fuzz/README.md has the long runs.

Each finding below reproduces one bug in its smallest form. Where the bug is
still there the test is a strict xfail: it fails for the reason named, and
once the bug is fixed it passes, which strict mode turns into a failure so
that the marker (and the matching entry of fuzz_iova.KNOWN_ISSUES) is removed.
"""
import importlib.util
import os
import struct
import subprocess
import sys
import textwrap

import pytest

from bad_input import Index
from pyiova import IovaDomain, IovaError
from pyiova.allocators import EV_QUEUED, EV_RESET, PfnAllocator
from pyiova.errors import IovaClosed, IovaCpuError, IovaInvalidFree, IovaTypeError, IovaValueError
from pyiova.cookie import DmaCookie

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("PYIOVA_FUZZ_EXAMPLES", "20")


def _load_fuzzer():
    path = os.path.join(HERE, "..", "fuzz", "fuzz_iova.py")
    spec = importlib.util.spec_from_file_location("fuzz_iova", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_iova"] = mod
    spec.loader.exec_module(mod)
    return mod


fuzz_iova = _load_fuzzer()
TOP32 = 0xFFFFF


# ---- the short fuzz pass ----------------------------------------------------

@pytest.mark.parametrize("prop", fuzz_iova.PROPERTIES, ids=lambda p: p.__name__)
def test_fuzz(prop):
    prop()


def test_every_known_issue_has_a_regression_test_here():
    names = {name for name, _ in fuzz_iova.KNOWN_ISSUES}
    with open(__file__) as f:
        text = f.read()
    missing = [n for n in names if '"%s"' % n not in text]
    assert not missing, "known issues without a regression test: %s" % missing


def known(name, raises=None):
    """xfail(strict) for a bug the fuzzer found and KNOWN_ISSUES tolerates."""
    assert name in {n for n, _ in fuzz_iova.KNOWN_ISSUES}, name
    return pytest.mark.xfail(strict=True, raises=raises, reason='known issue "%s"' % name)


# ---- crashes ----------------------------------------------------------------

MEMORYVIEW_CRASH = """
    import array, gc
    from pyiova import IovaDomain, IovaError
    d = IovaDomain(4096, 1, ncpus=1)
    kept = []
    for call in ({call}):
        mv = memoryview(array.array("Q", [1, 0]))
        try:
            call(d, mv)
        except IovaError as e:
            kept.append(e)        # a caller keeping its errors: a cycle through this frame
        del mv
    kept.clear()
    gc.collect()
    print("survived")
"""


@pytest.mark.parametrize("call", [
    "lambda d, mv: d.alloc_many(mv, 0xFFFFF)",          # sizes[1] = 0
    "lambda d, mv: d.free_many(mv)",                    # pfn 1 was never allocated
    "lambda d, mv: d.free_fast_many(mv, [1, 1])",
])
def test_a_failed_batch_call_on_a_memoryview_does_not_crash_the_interpreter(call):
    code = textwrap.dedent(MEMORYVIEW_CRASH.format(call="[%s] * 20" % call))
    # Under tools/sanitize.sh the crash is a sanitizer report; while the bug
    # stands it is this test's expected result, so it goes to the child's
    # stderr (checked here) rather than to the run's report files.
    env = dict(os.environ)
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if var in env:
            env[var] = ":".join(o for o in env[var].split(":") if not o.startswith("log_path="))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0 and "survived" in r.stdout, (r.returncode, r.stderr[-2000:])


# ---- the flush queue ----------------------------------------------------------

def test_a_flush_queue_ring_beyond_the_domains_cpus_is_refused():
    # found as "fq-ring-beyond-domain-cpus": a ring with no CPU of its own
    # retired into free_fast(cpu=ring), which failed, and the range was lost
    a = PfnAllocator("iova", ncpus=1)
    with pytest.raises(IovaCpuError, match="ncpus 4"):
        a.enable_flush_queue(ncpus=4, size=4)
    a.enable_flush_queue(ncpus=1, size=4)          # the refusal left no queue behind
    p, _ = a.alloc(1, TOP32)
    q, _ = a.alloc(1, TOP32)
    a.free_lazy(p, 1, now_ms=0, cpu=0)
    a.fq_flushed()                                 # a flush covers p's entry
    a.free_lazy(q, 1, now_ms=1, cpu=0)             # retires p
    a.fq_flushed(all_rings=True, cpu=0)            # and q
    a.check()
    held = len(a.iovad) - len(a.iovad.cached_pfns())
    assert held == 0, "%d range(s) freed through the flush queue never came back" % held
    assert a.iovad.cached_pfns() == {p, q} and a.stats()["fq_lost"] == 0


def test_a_range_already_queued_cannot_be_queued_again():
    # found as "fq-free-lazy-unchecked": the second entry's retire freed p
    # again, after it had been handed out anew
    a = PfnAllocator("iova", ncpus=2)
    a.enable_flush_queue(ncpus=2, size=8)
    p, _ = a.alloc(1, TOP32, cpu=0)
    a.alloc(1, TOP32, cpu=0)
    a.free_lazy(p, 1, 0, cpu=0)
    a.fq_flushed()
    before = a.stats()
    with pytest.raises(IovaInvalidFree, match="%#x .*flush queue" % p):
        a.free_lazy(p, 1, 1, cpu=1)                # a double free, on another ring
    with pytest.raises(IovaInvalidFree, match="%#x .*flush queue" % p):
        a.free(p, 1, cpu=1)                        # or a strict one
    assert a.stats() == before
    a.check()
    a.fq_flushed(all_rings=True, cpu=1)
    assert a.iovad.cached_pfns() == {p}            # back once
    again = {a.alloc(1, TOP32, cpu=1)[0], a.alloc(1, TOP32, cpu=1)[0]}
    assert p in again and len(again) == 2


def test_a_lazy_free_checks_the_size_class_as_free_fast_does():
    # found as "fq-free-lazy-unchecked": queued with the wrong size, the
    # range was refused at retire and lost
    a = PfnAllocator("iova", ncpus=1)
    a.enable_flush_queue(ncpus=1, size=8)
    p, _ = a.alloc(3, TOP32)                       # 4 pages
    a.alloc(1, TOP32)
    with pytest.raises(IovaInvalidFree, match="size 1 .*%#x" % p):
        a.free_lazy(p, 1, now_ms=0)
    assert a.stats()["fq_queued"] == 0
    assert a.free_lazy(p, 3, now_ms=0) & EV_QUEUED     # its own size, as dma-iommu passes it
    a.fq_flushed(all_rings=True, cpu=0)
    assert len(a.iovad) - len(a.iovad.cached_pfns()) == 1 and a.iovad.cached_pfns() == {p}
    a.check()


# ---- the cookie's free path -------------------------------------------------
# found as "cookie-free-ignores-pages"

def test_reset_when_empty_refuses_a_free_of_the_wrong_size():
    a = PfnAllocator("reset-when-empty", ncpus=1)
    p, _ = a.alloc(4, TOP32)
    q, _ = a.alloc(1, TOP32)
    with pytest.raises(IovaInvalidFree, match="5 pages .*%#x" % p):
        a.free(p, 5)                               # the count would reach zero: a reset
    assert a.iovad.find(q) is not None and a.stats()["resets"] == 0
    assert a.free(p, 4) == 0 and a.free(q, 1) == EV_RESET
    a.check()


@pytest.mark.parametrize("how", ["4.10", "tree-only"])
def test_a_tree_only_iova_cookie_refuses_a_free_of_the_wrong_size(how):
    a = PfnAllocator("iova", ncpus=1, kernel="4.10" if how == "4.10" else "6.12")
    if how == "tree-only":
        a.bypass_rcache()
    p, _ = a.alloc(3, TOP32)
    q, _ = a.alloc(1, TOP32)
    for wrong in (4, 2):                           # 4 is of its class: the tree path wants 3
        with pytest.raises(IovaInvalidFree, match="%d pages .*%#x" % (wrong, p)):
            a.free(p, wrong)
    a.free(q, 1)                                   # the counts did not drift
    a.free(p, 3)
    a.check()
    assert len(a.iovad) == 0 and a.stats()["live_pfns"] == 0


def test_a_rcache_iova_cookie_takes_any_size_of_the_class_and_counts_the_range():
    a = PfnAllocator("iova", ncpus=1)
    p, _ = a.alloc(3, TOP32)                       # alloc_iova_fast makes it 4 pages
    q, _ = a.alloc(1, TOP32)
    r, _ = a.alloc(40, TOP32)                      # beyond the cached classes: 40 pages
    assert a.stats()["live_pfns"] == 4 + 1 + 40
    with pytest.raises(IovaInvalidFree, match="33 pages .*%#x" % r):
        a.free(r, 33)                              # of its (tree) class, not its size
    a.free(p, 4)                                   # free_iova_fast's rule: the class
    a.free(q, 1)
    a.free(r, 40)
    assert a.stats()["live_pfns"] == 0
    a.check()


def test_msi_refuses_a_partial_undo():
    m = PfnAllocator("msi", start_pfn=0x100, end_pfn=0x1FF)
    p, _ = m.alloc(4, 0)
    q, _ = m.alloc(2, 0)
    with pytest.raises(IovaInvalidFree, match="%#x" % (q + 1)):
        m.free(q + 1, 1)                           # the end of the latest allocation
    with pytest.raises(IovaInvalidFree, match="1 pages .*%#x" % q):
        m.free(q, 1)
    with pytest.raises(IovaInvalidFree, match="%#x" % p):
        m.free(p, 4)                               # not the latest
    st = m.stats()
    assert (st["live_ranges"], st["live_pfns"], st["cursor"]) == (2, 6, q + 2), st
    m.free(q, 2)
    m.free(p, 4)                                   # now it is the latest
    assert m.alloc(1, 0)[0] == p
    m.check()


# ---- reserved regions and reset-when-empty ------------------------------------
# found as "reset-when-empty-drops-reserved"

WINDOW = (0xFEE00000, 0xFEEFFFFF)                 # the MSI doorbells


def test_reset_when_empty_checks_out_with_a_reserved_window():
    c = DmaCookie("reset-when-empty").init_domain(4096, 0, (1 << 32) - 1, reserved=[WINDOW])
    c.check()
    assert c.stats()["held_pfns"] == 0x100         # the window is held from the start


def test_reset_when_empty_never_hands_out_the_reserved_window():
    c = DmaCookie("reset-when-empty").init_domain(4096, 0, (1 << 32) - 1, reserved=[WINDOW])
    c.free_iova(c.alloc_iova(None, 4096, (1 << 32) - 1), 4096)   # the reset
    assert c.resets == 1
    c.check()
    assert c.iovad.find(0xFEE00) == (0xFEE00, 0xFEEFF)
    iova = c.alloc_iova(None, 0x100000, 0xFEEFFFFF)
    assert iova and not WINDOW[0] <= iova <= WINDOW[1], "got %#x, in the MSI window" % iova


# ---- restoring a saved state --------------------------------------------------
# found as "restore-accepts-bad-magazine"

def _words(dom):
    b = dom.save()
    return list(struct.unpack("<%dQ" % (len(b) // 8), b))


def _bytes(words):
    return struct.pack("<%dQ" % len(words), *words)


def _ranges_at(words):
    """(index of each range's flags word, lo) in a version-1 save."""
    n = words[13]
    return [(16 + 3 * k, words[14 + 3 * k]) for k in range(n)]


def _mag_slot(words, pfn):
    n = words[13]
    return words.index(pfn, 14 + 3 * n)


def _refused(words):
    with pytest.raises(IovaValueError, match="corrupt or inconsistent"):
        IovaDomain.restore(_bytes(words))


def test_restore_refuses_a_cached_pfn_that_does_not_start_its_range():
    d = IovaDomain(4096, 1, ncpus=1)
    p = d.alloc_fast(2, TOP32, cpu=0)
    d.free_fast(p, 2, cpu=0)
    w = _words(d)
    IovaDomain.restore(_bytes(w)).check()          # as saved, it is fine
    w[_mag_slot(w, p)] = p + 1                     # the second page of the range
    _refused(w)


def test_restore_refuses_a_range_cached_under_another_size_class():
    d = IovaDomain(4096, 1, ncpus=1)
    big = d.alloc(32, TOP32, True)
    small = d.alloc_fast(1, TOP32, cpu=0)
    d.free_fast(small, 1, cpu=0)
    w = _words(d)
    for flags_at, lo in _ranges_at(w):
        w[flags_at] = 1 if lo == big else 0
    w[_mag_slot(w, small)] = big                   # a 32-page range cached as 1 page
    _refused(w)


def test_restore_keeps_a_cached_range_at_pfn_0():
    # The kernel caches pfn 0 like any other pfn (a reserve widened down to
    # 0 is how a range gets there), so a saved state may hold it.
    d = IovaDomain(4096, 0, ncpus=1)
    d.reserve(0, 0)
    d.free_fast(0, 1, cpu=0)
    w = _words(d)
    assert w[_mag_slot(w, 0)] == 0
    r = IovaDomain.restore(_bytes(w))
    r.check()
    assert sorted(r.cached_pfns()) == sorted(d.cached_pfns()) == [0]
    # both read the popped 0 as a miss, and the range at 0 stays allocated
    assert r.alloc_fast(1, TOP32, cpu=0) == d.alloc_fast(1, TOP32, cpu=0) == TOP32
    assert r.ranges() == d.ranges() and (0, 0) in d.ranges()
    assert list(r.cached_pfns()) == list(d.cached_pfns()) == []


# ---- undocumented exceptions ----------------------------------------------------

def _closed_domain():
    d = IovaDomain(4096, 1, ncpus=1)
    d.close()
    return d


def _pfn_allocator():
    return PfnAllocator("iova", ncpus=1)


def _cookie():
    return DmaCookie("iova").init_domain(4096, 0, (1 << 64) - 1)


def _set_search(value):
    d = IovaDomain()
    d.search = value


def _advance_by_index_only():
    d = IovaDomain()
    ran = d.advance(Index(3))
    return ran, d.stats()["clock_ms"]


# Calls that once let the named undocumented exception out (the fuzzer's
# finding), and what each must do now: raise the documented error given, or
# return the result given (worked out from the kernel's rules, not read
# off pyiova's output).
UNDOCUMENTED = [
    ("unchecked-int-arguments", OverflowError, lambda: IovaDomain(4096, 1, ncpus=2**40),
     IovaValueError),
    ("unhashable-choice", TypeError, lambda: IovaDomain(4096, 1, kernel=[]), IovaValueError),
    ("unhashable-choice", TypeError, lambda: IovaDomain(4096, 1, search={}), IovaValueError),
    ("unhashable-choice", TypeError, lambda: _set_search([]), IovaValueError),
    # 3 ms through __index__; nothing was cached, so no trim work ran
    ("index-only-integers", TypeError, _advance_by_index_only, (0, 3)),
    ("free-many-empty-closed", IndexError, lambda: _closed_domain().free_many([]), IovaClosed),
    # no device: no 32-bit-first attempt, so the empty domain hands out the
    # highest page at or below the limit's pfn, (1 << 40) >> 12
    ("cookie-unchecked-arguments", AttributeError,
     lambda: _cookie().alloc_iova(None, 4096, 1 << 40), 1 << 40),
    ("cookie-unchecked-arguments", TypeError, lambda: _cookie().alloc_iova(None, "x", 1 << 32),
     IovaTypeError),
    ("cookie-unchecked-arguments", TypeError,
     lambda: _cookie().alloc_iova(None, 4096.0, 1 << 32), IovaTypeError),
    ("cookie-unchecked-arguments", TypeError, lambda: _cookie().free_iova("x", 4096),
     IovaTypeError),
    ("cookie-unchecked-arguments", TypeError, lambda: _cookie().advance("x"), IovaTypeError),
    ("cookie-unchecked-arguments", TypeError,
     lambda: DmaCookie("iova").init_domain(4096, "x"), IovaTypeError),
    ("cookie-unchecked-arguments", ValueError,
     lambda: DmaCookie("iova").init_domain(4096, reserved=[(5,)]), IovaTypeError),
]


@pytest.mark.parametrize("name, undocumented, call, expected", [
    pytest.param(*row, id="%s-%d" % (row[0], i)) for i, row in enumerate(UNDOCUMENTED)])
def test_what_once_raised_an_undocumented_error_now_does_what_it_should(
        name, undocumented, call, expected):
    if isinstance(expected, type) and issubclass(expected, BaseException):
        assert issubclass(expected, IovaError)
        with pytest.raises(expected) as e:
            call()
        # the documented error may derive from the builtin (IovaTypeError is
        # a TypeError), but it is never the bare builtin the fuzzer saw
        assert type(e.value) is not undocumented and isinstance(e.value, IovaError)
    else:
        assert call() == expected


def _fq_allocator():
    a = PfnAllocator("iova", ncpus=2)
    a.enable_flush_queue(ncpus=2, size=4)
    a.alloc(1, TOP32)
    return a


# What PfnAllocator once let through as a bare OverflowError / TypeError /
# KeyError / ValueError ("unchecked-int-arguments", "unhashable-choice",
# "fq-init-error-keyerror", "pfnallocator-huge-granule"), and bools it took
# for integers: (call on an allocator, or None for a constructor; the
# exception; what its message must name).
PFN_ALLOCATOR_BAD_ARGUMENTS = {
    "start_pfn -1": (None, lambda _: PfnAllocator("wraparound", start_pfn=-1),
                     IovaValueError, "-1"),
    "granule str": (None, lambda _: PfnAllocator("wraparound", granule="x"), IovaTypeError,
                    "'x'"),
    "end_pfn 2**64": (None, lambda _: PfnAllocator("wraparound", end_pfn=2**64),
                      IovaValueError, str(2**64)),
    "huge granule": (None, lambda _: PfnAllocator("wraparound", granule=1 << 40),
                     IovaValueError, str(1 << 40)),
    "granule True": (None, lambda _: PfnAllocator("msi", granule=True), IovaTypeError, "True"),
    "start_pfn True": (None, lambda _: PfnAllocator("wraparound", start_pfn=True),
                       IovaTypeError, "True"),
    "ncpus 2**40": (None, lambda _: PfnAllocator("iova", ncpus=2**40), IovaValueError,
                    str(2**40)),
    "kernel unhashable": (None, lambda _: PfnAllocator("iova", kernel=[]), IovaValueError,
                          "[]"),
    "type unhashable": (None, lambda _: PfnAllocator({}), IovaValueError, "{}"),
    "fq ncpus -1": (_pfn_allocator, lambda a: a.enable_flush_queue(ncpus=-1),
                    IovaValueError, "-1"),
    "fq ncpus 0": (_pfn_allocator, lambda a: a.enable_flush_queue(ncpus=0), IovaValueError,
                   "ncpus 0"),
    "fq ncpus 2**32": (_pfn_allocator, lambda a: a.enable_flush_queue(ncpus=2**32),
                       IovaCpuError, str(2**32)),
    "fq size str": (_pfn_allocator, lambda a: a.enable_flush_queue(size="x"), IovaTypeError,
                    "'x'"),
    "fq size 0": (_pfn_allocator, lambda a: a.enable_flush_queue(size=0), IovaValueError,
                  "size 0"),
    "fq size 2**21": (_pfn_allocator, lambda a: a.enable_flush_queue(size=2**21),
                      IovaValueError, str(2**21)),
    "fq size True": (_pfn_allocator, lambda a: a.enable_flush_queue(size=True),
                     IovaTypeError, "True"),
    "free_lazy pfn str": (_fq_allocator, lambda a: a.free_lazy("x", 1, 0), IovaTypeError,
                          "'x'"),
    "free_lazy now -1": (_fq_allocator, lambda a: a.free_lazy(1, 1, -1), IovaValueError, "-1"),
    "free_lazy pages True": (_fq_allocator, lambda a: a.free_lazy(1, True, 0), IovaTypeError,
                             "True"),
    "free_lazy cpu -3": (_fq_allocator, lambda a: a.free_lazy(1, 1, 0, cpu=-3), IovaCpuError,
                         "-3"),
    "fq_flushed cpu str": (_fq_allocator, lambda a: a.fq_flushed(True, "x"), IovaTypeError,
                           "'x'"),
    "fq_flushed cpu True": (_fq_allocator, lambda a: a.fq_flushed(True, True), IovaTypeError,
                            "True"),
    "fq_flushed cpu None": (_fq_allocator, lambda a: a.fq_flushed(True, None), IovaCpuError,
                            "None"),
    "fq_flushed cpu 2": (_fq_allocator, lambda a: a.fq_flushed(True, 2), IovaCpuError, "2"),
    "alloc pages True": (_pfn_allocator, lambda a: a.alloc(True, TOP32), IovaTypeError,
                         "True"),
    "alloc limit True": (_pfn_allocator, lambda a: a.alloc(1, True), IovaTypeError, "True"),
    "alloc cpu True": (_pfn_allocator, lambda a: a.alloc(1, TOP32, cpu=True), IovaTypeError,
                       "True"),
    "alloc cpu -1": (_pfn_allocator, lambda a: a.alloc(1, TOP32, cpu=-1), IovaCpuError, "-1"),
    "alloc cpu 2**40": (_pfn_allocator, lambda a: a.alloc(1, TOP32, cpu=2**40), IovaCpuError,
                        str(2**40)),
    "free pfn True": (_fq_allocator, lambda a: a.free(True, 1), IovaTypeError, "True"),
    "free pages False": (_fq_allocator, lambda a: a.free(1, False), IovaTypeError, "False"),
    "reserve lo True": (lambda: PfnAllocator("wraparound"), lambda a: a.reserve(True, 5),
                        IovaTypeError, "True"),
}


@pytest.mark.parametrize("make, call, exc, named", PFN_ALLOCATOR_BAD_ARGUMENTS.values(),
                         ids=list(PFN_ALLOCATOR_BAD_ARGUMENTS))
def test_pfn_allocator_refuses_bad_arguments_naming_them(make, call, exc, named):
    a = make() if make is not None else None
    before = a.stats() if a is not None else None
    with pytest.raises(exc) as e:
        call(a)
    assert isinstance(e.value, IovaError) and named in str(e.value), str(e.value)
    if a is not None:
        assert a.stats() == before
        a.check()


def test_pfn_allocator_takes_integers_through_index():
    a = PfnAllocator("iova", ncpus=Index(2), granule=Index(4096))
    p, _ = a.alloc(Index(3), Index(TOP32), cpu=Index(1))
    assert a.iovad.find(p) == (p, p + 3)           # alloc_iova_fast made it 4 pages
    a.free(Index(p), Index(3), cpu=Index(1))
    assert a.iovad.cached_pfns() == {p}
    w = PfnAllocator("wraparound", start_pfn=Index(0x100), end_pfn=Index(0x1FF))
    w.reserve(Index(0x100), Index(0x10F))
    assert w.alloc(1, 0x1FF)[0] == 0x110


def test_a_refused_advance_leaves_the_cookies_clock_alone():
    c = _cookie()
    try:
        c.advance(-5)
    except IovaError:
        pass
    assert c.clock_ms == 0, "clock moved to %r by a refused call" % c.clock_ms
