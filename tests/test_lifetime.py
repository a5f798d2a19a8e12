"""Lifetimes: closing a domain frees everything it held, and domains,
allocators and cookies dropped without close are reclaimed (their cffi
destructors run), however they were made and whatever they still held.

The C core's memory is observed through glibc's mallinfo2(): bytes in use by
malloc, exact and independent of how the allocator returns pages to the OS.
Where that does not see the process's allocations (ASan and valgrind bring
their own allocators) the byte counts are skipped and the loops shrink: those
tools report leaks themselves (tools/sanitize.sh, tools/leakcheck.sh python).
"""
import copy
import ctypes
import gc
import os
import pickle
import threading
import weakref

import pytest

from pyiova import IovaDomain, IovaError
from pyiova.allocators import PfnAllocator
from pyiova.cookie import DmaCookie, get_dma_cookie, get_msi_cookie, put_dma_cookie
from pyiova.faults import fail_allocations_after

TOP32 = 0xFFFFF


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _heap_counter():
    """A function returning the bytes malloc has handed out and not had back,
    or None where mallinfo2 cannot be trusted to see them."""
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    if hasattr(libc, "__asan_init"):
        return None
    mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def in_use():
        m = mallinfo2()
        return m.uordblks + m.hblkhd

    # Calibrate: a block straight from the C library's malloc must show.
    before = in_use()
    p = libc.malloc(1 << 20)
    seen = in_use() - before
    libc.free(p)
    return in_use if seen >= 1 << 20 else None


HEAP = _heap_counter()
# With a byte counter, enough rounds that leaking even one small block per
# round shows far above the noise; without one, a few rounds for the tools.
ROUNDS = 10000 if HEAP else 300
SLACK = 256 << 10          # bytes of Python-side noise tolerated per loop


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settle():
    for _ in range(3):
        gc.collect()


def heap_growth(fn, rounds):
    """Bytes still in use after calling fn() `rounds` times (after one
    warm-up call, which may fill one-off caches), or None without a counter."""
    fn()
    settle()
    before = HEAP() if HEAP else 0
    for _ in range(rounds):
        fn()
    settle()
    return HEAP() - before if HEAP else None


def assert_flat(fn, rounds=ROUNDS, slack=SLACK):
    growth = heap_growth(fn, rounds)
    if growth is not None:
        assert growth < slack, "%d bytes still in use after %d rounds" % (growth, rounds)


def busy(dom, n=3000):
    """Leaves ranges in the tree, pfns in magazines, the depot and trim work."""
    pfns = dom.alloc_many([1] * n, TOP32)
    dom.alloc_many([3] * 50, TOP32, True)
    for i, p in enumerate(pfns[: n // 2]):
        dom.free_fast(p, 1, cpu=i % dom.ncpus)
    dom.reserve(0x10, 0x1F)
    dom.advance(30)
    return dom


@pytest.fixture
def heap():
    if HEAP is None:
        pytest.skip("mallinfo2 does not see this process's allocations "
                    "(a sanitizer or valgrind run checks leaks itself)")
    return HEAP


# ---- close ----------------------------------------------------------------

def test_close_gives_back_every_range_magazine_and_node(heap):
    settle()
    base = heap()
    dom = busy(IovaDomain(4096, 1, ncpus=4), n=100000)
    assert dom.stats()["node_bytes"] >= 100000 * 48
    held = heap() - base
    assert held > 100000 * 48                      # the counter sees the pool
    dom.close()
    settle()
    after_close = heap() - base
    # what close keeps is the domain object itself: locks and the per-CPU
    # cache slots (the magazines are gone), a few KiB at most
    assert after_close < 16 << 10, (held, after_close)
    del dom
    settle()
    assert heap() - base < 8 << 10


def test_close_is_final_and_a_closed_domain_still_reclaims_on_drop():
    def once():
        dom = busy(IovaDomain(4096, 1, ncpus=2), n=300)
        dom.close()
        dom.close()
        with pytest.raises(IovaError):
            dom.alloc(1, TOP32)
    assert_flat(once, rounds=ROUNDS // 10)


def test_context_manager_closes():
    with IovaDomain() as dom:
        busy(dom, 200)
    assert dom.closed


# ---- dropped without close ------------------------------------------------

def test_a_dropped_domain_is_reclaimed(heap):
    settle()
    base = heap()
    dom = busy(IovaDomain(4096, 1, ncpus=4), n=50000)
    ref = weakref.ref(dom)
    assert heap() - base > 50000 * 48
    del dom
    settle()
    assert ref() is None
    assert heap() - base < 8 << 10


def test_ten_thousand_dropped_domains_leave_nothing_behind():
    # each holds ~50 KiB of magazines: a domain that is never destroyed
    # would show as hundreds of MiB
    refs = []

    def once():
        dom = IovaDomain(4096, 1, ncpus=4)
        p = dom.alloc_fast(1, TOP32, cpu=1)
        dom.free_fast(p, 1, cpu=1)
        dom.alloc(7, TOP32)
        if len(refs) < 50:
            refs.append(weakref.ref(dom))

    rss = rss_bytes()
    assert_flat(once)
    settle()
    assert all(r() is None for r in refs)
    if HEAP:        # (ASan's quarantine keeps freed memory resident on purpose)
        assert rss_bytes() - rss < 64 << 20


def test_domains_in_reference_cycles_are_collected():
    class Holder:
        pass

    def once():
        h = Holder()
        h.dom = busy(IovaDomain(4096, 1, ncpus=1), n=200)
        h.me = h                                   # only the cycle collector frees it
    assert_flat(once, rounds=ROUNDS // 10)


def test_domains_dropped_from_other_threads():
    def worker(i):
        for _ in range(ROUNDS // 40):
            dom = IovaDomain(4096, 1, ncpus=2)
            # explicit cpus: a thread that asks for its default slot takes one
            # from a process-wide counter, and other tests' slots would shift
            dom.free_fast(dom.alloc_fast(2, TOP32, cpu=i % 2), 2, cpu=i % 2)

    def once():
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert_flat(once, rounds=10)


# ---- failures on the way ----------------------------------------------------

def test_domains_that_fail_halfway_through_construction_leak_nothing():
    def once():
        for n in range(60):                        # every allocation of the constructor
            try:
                with fail_allocations_after(n):
                    IovaDomain(4096, 1, ncpus=4)
            except MemoryError:
                continue
            break
    assert_flat(once, rounds=ROUNDS // 100)


def test_refused_restores_leak_nothing():
    good = busy(IovaDomain(4096, 1, ncpus=2), n=500).save()
    words = len(good) // 8
    positions = [13, words // 2, words - 3]        # the range count, a range, the clock

    def once():
        for i in positions:
            for v in (0, 1, 2**64 - 1, 0x7FFFFFFF):
                bad = bytearray(good)
                bad[8 * i: 8 * i + 8] = v.to_bytes(8, "little")
                try:
                    IovaDomain.restore(bytes(bad))
                except IovaError:
                    pass
        try:
            IovaDomain.restore(good[:-16])
        except IovaError:
            pass
    assert_flat(once, rounds=ROUNDS // 100)


def test_allocations_that_run_out_of_memory_leak_nothing():
    dom = IovaDomain(4096, 1, ncpus=1)
    # the node pool keeps its high-water mark while the domain lives (as a
    # slab cache would): grow it first so that only a leak can grow it later
    dom.free_many(dom.alloc_many([1] * 6000, TOP32))

    def once():
        try:
            with fail_allocations_after(3):
                pfns = dom.alloc_many([1] * 5000, TOP32)
        except MemoryError as e:
            pfns = [p for p in e.pfns if p]
        for p in pfns:
            dom.free(p)
    assert_flat(once, rounds=ROUNDS // 100)
    dom.check()


# ---- copies ----------------------------------------------------------------

def test_pickled_and_copied_domains_are_reclaimed():
    dom = busy(IovaDomain(4096, 1, ncpus=2), n=2000)

    def once():
        pickle.loads(pickle.dumps(dom))
        copy.deepcopy(dom)
        copy.copy(dom).close()
    assert_flat(once, rounds=ROUNDS // 100)
    dom.check()


# ---- allocators and cookies -----------------------------------------------

@pytest.mark.parametrize("kind", ["iova", "msi", "wraparound", "reset-when-empty"])
def test_dropped_allocators_are_reclaimed(kind):
    refs = []

    def once():
        a = PfnAllocator(kind, start_pfn=1, end_pfn=4000, ncpus=2) \
            if kind in ("msi", "wraparound") else PfnAllocator(kind, ncpus=2)
        held = [a.alloc(1 + i % 4, 4000)[0] for i in range(20)]
        if kind != "msi":
            for i, p in enumerate(held[:10]):
                a.free(p, 1 + i % 4)
        if kind == "iova":
            a.enable_flush_queue(ncpus=2, size=8)
            a.free_lazy(held[10], 3, now_ms=0)     # left queued on purpose
        if len(refs) < 20:
            refs.append(weakref.ref(a))
            if a.iovad is not None:
                refs.append(weakref.ref(a.iovad))

    assert_flat(once, rounds=ROUNDS // 10)
    settle()
    assert all(r() is None for r in refs)


def test_an_allocator_keeps_the_domain_it_borrows_alive():
    dom = IovaDomain(4096, 1, ncpus=1)
    ref = weakref.ref(dom)
    a = PfnAllocator("reset-when-empty", iovad=dom)
    del dom
    settle()
    assert ref() is not None                       # the C cookie points into it
    p, _ = a.alloc(4, TOP32)
    a.free(p, 4)
    a.check()
    del a
    settle()
    assert ref() is None


@pytest.mark.parametrize("kind", ["iova", "msi", "wraparound", "reset-when-empty"])
def test_dropped_cookies_and_their_domains_are_reclaimed(kind):
    class Domain:
        """Stands in for an IommuDomain: the cookie only needs a weakref-able
        object it can ask to flush, and one without driver ops to reset."""
        name = "d"
        ops = None

        def flush_iotlb_all(self):
            pass

    refs = []

    def once():
        dom = Domain()
        # MSI cookies come from get_msi_cookie, with a doorbell base above IOVA 0
        cookie = get_msi_cookie(dom, 0x800_0000) if kind == "msi" else get_dma_cookie(dom, kind)
        cookie.init_domain(4096, 0, (1 << 32) - 1, flush_queue=True)
        iova = cookie.alloc_iova(None, 0x4000, (1 << 32) - 1)
        if kind != "msi":
            cookie.free_iova(iova, 0x4000, lazy=True)
        if len(refs) < 20:
            refs.append(weakref.ref(cookie))
        if len(refs) % 2:
            put_dma_cookie(dom)                    # half explicitly, half by dropping dom

    assert_flat(once, rounds=ROUNDS // 10)
    settle()
    assert all(r() is None for r in refs)


def test_a_bare_cookie_is_reclaimed():
    def once():
        c = DmaCookie("iova", ncpus=2).init_domain(4096, 0, (1 << 32) - 1, flush_queue=True)
        for _ in range(5):
            c.free_iova(c.alloc_iova(None, 0x2000, (1 << 32) - 1), 0x2000, lazy=True)
        c.advance(20)
    assert_flat(once, rounds=ROUNDS // 10)
