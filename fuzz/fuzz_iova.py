"""A fuzzer for pyiova's public API: IovaDomain, PfnAllocator and DmaCookie.

Each example is a program: a sequence of calls, drawn by hypothesis, on a
small world of live objects. Arguments are mostly plausible (pfns that were
handed out, sizes of the right class, limits near the 32-bit boundary) so
the objects get into interesting states, and often hostile: huge, negative,
zero, unaligned, of the wrong type, pfns already freed, objects already
closed, saved states with words changed, calls from several threads.

After every call it asserts:
  * the call returned, or raised a documented exception: an
    pyiova.errors.IovaError subclass or MemoryError (or the exception a
    hostile argument's own __index__ raised, passed through);
  * check() passes on every object still open;
  * nothing handed out is handed out again while still held, a free that
    succeeds named something handed out, a free of exactly what was handed
    out succeeds, and an allocator's counts add up (its IOVA domain holds
    exactly what is live, queued for a flush, or cached).
A violation raises Finding. Findings the core is known to have (KNOWN_ISSUES,
each with an xfail regression test in tests/test_fuzz.py) are tolerated and
the object they hit is dropped from the world, unless PYIOVA_FUZZ_STRICT=1.

Run it:
  python fuzz/fuzz_iova.py                       # all properties, once each
  PYIOVA_FUZZ_EXAMPLES=5000 python fuzz/fuzz_iova.py
  python fuzz/fuzz_iova.py --atheris [libFuzzer flags]   # needs `pip install atheris`
tests/test_fuzz.py runs a short pass in the default test suite; fuzz/README.md
has the long runs, including under the sanitizer build.

Environment:
  PYIOVA_FUZZ_EXAMPLES  examples per property (default 40)
  PYIOVA_FUZZ_OPS       most calls in one program (default 40)
  PYIOVA_FUZZ_STRICT=1  known issues fail too
  PYIOVA_FUZZ_DERANDOMIZE  1: the same examples every run (the default
                        where CI is set), 0: new ones each run
"""
import array
import copy
import operator
import os
import pickle
import sys
import threading
import traceback

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyiova import IovaDomain
from pyiova.allocators import EV_QUEUED, EV_RESET, PfnAllocator
from pyiova.cookie import DmaCookie
from pyiova.errors import IovaClosed, IovaCorrupted, IovaError

EXAMPLES = int(os.environ.get("PYIOVA_FUZZ_EXAMPLES", "40"))
MAX_OPS = int(os.environ.get("PYIOVA_FUZZ_OPS", "40"))
STRICT = os.environ.get("PYIOVA_FUZZ_STRICT", "") not in ("", "0")
# CI gates merges on the short run, so there the same examples run every
# time; everywhere else each run explores new ones.
DERANDOMIZE = os.environ.get("PYIOVA_FUZZ_DERANDOMIZE",
                             "1" if os.environ.get("CI") else "0") not in ("", "0")

U64 = (1 << 64) - 1
TOP32 = 0xFFFFF                 # the last 4 KiB pfn below 4 GiB
DOCUMENTED = (IovaError, MemoryError)


# ---- what counts as a bug ---------------------------------------------------

class Finding(AssertionError):
    """A crash-free misbehaviour: an undocumented exception or a broken
    invariant. `tag` names the kind, `where` the call."""

    def __init__(self, tag, where, detail=""):
        super().__init__("%s in %s: %s" % (tag, where, detail))
        self.tag = tag
        self.where = where


class HostileError(Exception):
    """What a hostile argument's __index__ raises: the caller's own error,
    which pyiova may let through."""


# Findings the core and bindings are known to produce (reported; each has a
# strict xfail regression test in tests/test_fuzz.py). Each entry: a name and
# a predicate over the Finding. Remove an entry when its bug is fixed.
def _call(f):
    return f.where.split("(")[0]


KNOWN_ISSUES = [
    # (name, predicate on a Finding): every issue found so far is fixed; each
    # keeps a regression test in tests/test_fuzz.py. A new finding that
    # cannot be fixed at once goes here, with a strict-xfail test there.
]


# CPython before 3.12.7 (gh-77894) crashes when the GC clears a memoryview
# that something still holds a buffer export of. IovaDomain's batch calls
# release their exports before raising, so a kept exception is harmless;
# the harness still cuts its findings loose from their frames (below) as a
# safeguard, since a crash would end the run. tests/test_fuzz.py keeps the
# reproduction, in a subprocess.
MEMORYVIEW_CYCLE_CRASH = sys.version_info < (3, 12, 7)


def _without_frames(e):
    """The exception, with the tracebacks of it and of every exception it
    chains to dropped where the memoryview crash is possible: that frees the
    raising frames, and with them any cffi export of a memoryview batch,
    before the GC can meet them in a cycle. (A chained exception counts: a
    binding that re-raises `from None` still keeps __context__.) Done in
    strict mode too: the crash would end the run, and its own regression
    test in tests/test_fuzz.py already fails on it."""
    if MEMORYVIEW_CYCLE_CRASH:
        seen = set()
        x = e
        while x is not None and id(x) not in seen:
            seen.add(id(x))
            x.__traceback__ = None
            if x.__cause__ is not None:
                x.__cause__.__traceback__ = None
            x = x.__context__
    return e


def _finding(tag, where, e):
    """A Finding for exception e. The traceback goes into the message as
    text and e is cut loose from its frames, so that no frame of the call
    (which may hold a buffer export, see _without_frames) outlives it."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:])
    f = Finding(tag, where, "%s: %s\n%s" % (type(e).__name__, e, tb))
    f.exc_name = type(e).__name__
    _without_frames(e)
    return f


def known_issue(f):
    for name, matches in KNOWN_ISSUES:
        try:
            if matches(f):
                return name
        except AttributeError:
            continue
    return None


# ---- hostile values ---------------------------------------------------------

class BadIndex:
    def __index__(self):
        raise HostileError("hostile __index__")

    def __repr__(self):
        return "BadIndex()"


class HugeIndex:
    def __index__(self):
        return 1 << 80

    def __repr__(self):
        return "HugeIndex()"


class IntLike:
    """Not an int, but an integer all the same (numpy scalars are like this)."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v

    def __repr__(self):
        return "IntLike(%d)" % self.v


EDGE_INTS = [0, 1, -1, 2, 3, 31, 32, 33, 63, 64, 65, 127, 128, 2**31 - 1, 2**31, 2**32 - 1,
             2**32, 2**52 - 1, 2**52, 2**62, 2**63 - 1, 2**63, U64 - 1, U64, 2**64, 2**100,
             -2**63, -2**64, TOP32, TOP32 + 1]
NON_INTS = [None, 1.5, float("nan"), float("inf"), "3", b"\x01\x00", [1], (1,), {}, object(),
            True, False, 3 + 0j, BadIndex(), HugeIndex(), IntLike(3), IntLike(-1)]


def hostile_int():
    return st.one_of(st.sampled_from(EDGE_INTS), st.integers(-2**70, 2**70))


def hostile():
    return st.one_of(hostile_int(), st.sampled_from(NON_INTS))


def arg(data, plausible, hostile_share=12):
    """A plausible value (a strategy) most of the time, else a hostile one."""
    if data.draw(st.integers(0, 99), label="hostile?") < hostile_share:
        return data.draw(hostile(), label="hostile")
    return data.draw(plausible)


def size_strategy():
    return st.one_of(st.integers(1, 9), st.sampled_from([16, 31, 32, 33, 63, 64, 65, 100, 300]))


def as_int(v):
    """v as the integer cffi would pass to C (bools and __index__ objects
    included), or None if it is not one."""
    try:
        return int(operator.index(v))    # exact int (3.9 returns int subclasses as they are)
    except Exception:
        return None


def order_base_2(n):
    return 0 if n <= 1 else (n - 1).bit_length()


def size_class(n):
    return min(order_base_2(n), 6)


# ---- bookkeeping ------------------------------------------------------------

class Claims:
    """Ranges handed out and not given back: lo -> (hi, size asked for)."""

    def __init__(self):
        self.by_lo = {}

    def overlapping(self, lo, hi):
        return [(a, b) for a, (b, _) in self.by_lo.items() if a <= hi and lo <= b]

    def add(self, lo, hi, size):
        self.by_lo[lo] = (hi, size)

    def drop_within(self, lo, hi):
        for a in [a for a, (b, _) in self.by_lo.items() if lo <= a and b <= hi]:
            del self.by_lo[a]

    def __len__(self):
        return len(self.by_lo)


class Dev:
    """A device as the cookie sees one."""

    def __init__(self, is_pci, bus_dma_limit):
        self.is_pci = is_pci
        self.bus_dma_limit = bus_dma_limit

    def __repr__(self):
        return "Dev(pci=%s, bus=%#x)" % (self.is_pci, self.bus_dma_limit)


class Target:
    """An object of the world plus what the fuzzer knows about it."""

    def __init__(self, obj, label, restored=False):
        self.obj = obj
        self.label = label
        self.claims = Claims()
        self.seen = set()          # every pfn (or iova) ever handed out
        self.restored = restored   # came from a saved state with words changed
        self.reserved_over = False  # a reserve widened ranges in place
        self.closed = False
        self.flags = {}            # extra context copied onto findings


class World:
    def __init__(self, data):
        self.data = data
        self.domains = []
        self.allocators = []
        self.cookies = []
        self.tolerated = []        # (known issue, finding) pairs met
        self.current = None        # the object the running op works on

    # -- calling ------------------------------------------------------------
    def call(self, where, fn, *args, **kw):
        """(True, result) or (False, documented exception). Anything else
        becomes a Finding."""
        try:
            return True, fn(*args, **kw)
        except DOCUMENTED as e:
            if not isinstance(e, IovaCorrupted):
                return False, _without_frames(e)
            raise _finding("check-failed", where, e) from None
        except HostileError as e:
            return False, _without_frames(e)
        except Finding:
            raise
        except Exception as e:
            raise _finding("undocumented", where, e) from None

    def pick(self, pool):
        self.current = self.data.draw(st.sampled_from(pool), label="target") if pool else None
        return self.current

    def judge(self, f, target):
        """A finding is fatal unless it is a known issue; then the object it
        hit leaves the world (its state can no longer be trusted)."""
        if target is not None:
            f.restored = target.restored
            for k, v in target.flags.items():
                setattr(f, k, v)
        name = None if STRICT else known_issue(f)
        if name is None:
            raise f
        self.tolerated.append((name, str(f)))
        if target is not None:
            self.drop(target)

    def drop(self, target):
        for pool in (self.domains, self.allocators, self.cookies):
            if target in pool:
                pool.remove(target)

    # -- checks after each call ----------------------------------------------
    def check_all(self):
        for t in list(self.domains):
            self.guard(t, self.check_domain, t)
        for t in list(self.allocators):
            self.guard(t, self.check_allocator, t)
        for t in list(self.cookies):
            self.guard(t, self.check_cookie, t)

    def check_domain(self, t):
        ok, e = self.call("IovaDomain.check", t.obj.check)
        if not ok and not isinstance(e, IovaClosed):
            raise Finding("check-raised", "IovaDomain.check", repr(e))

    def check_allocator(self, t):
        a = t.obj
        ok, e = self.call("PfnAllocator.check", a.check)
        if not ok:
            if isinstance(e, IovaClosed):
                return
            raise Finding("check-raised", "PfnAllocator.check", repr(e))
        st_ = a.stats()
        live = sum(1 for _, size in t.claims.by_lo.values() if size)    # reserved: size 0
        if st_["live_ranges"] != live:
            raise Finding("counts-disagree", "PfnAllocator.stats",
                          "live_ranges %d, handed out %d" % (st_["live_ranges"], live))
        if a.iovad is not None and t.flags.get("own_domain") and not a.iovad.closed:
            # every range of the domain is live, queued for a flush, or cached;
            # reset-when-empty also keeps freed ranges until its reset
            held = len(a.iovad) - len(a.iovad.cached_pfns())
            expect = live + st_["fq_queued"] + t.flags.get("retired", 0)
            if held != expect:
                raise Finding("counts-disagree", "PfnAllocator.stats",
                              "domain holds %d uncached ranges, expected %d" % (held, expect))

    def check_cookie(self, t):
        ok, e = self.call("DmaCookie.check", t.obj.check)
        if not ok and not isinstance(e, IovaClosed):
            raise Finding("check-raised", "DmaCookie.check", repr(e))

    def guard(self, target, fn, *args):
        """Runs fn; a known issue drops the target instead of failing."""
        try:
            return fn(*args)
        except Finding as f:
            self.judge(f, target)
            return None


# ---- IovaDomain -------------------------------------------------------------

def plausible_pfn(t, data):
    """A pfn near what the target has handed out (live, freed, inside or
    just past a range), or a boundary of its space."""
    dom = t.obj
    choices = sorted(t.seen)
    if choices and data.draw(st.booleans(), label="known pfn?"):
        base = data.draw(st.sampled_from(choices), label="known pfn")
        return base + data.draw(st.sampled_from([0, 0, 0, 1, -1, 2]), label="delta")
    return data.draw(st.sampled_from([dom.start_pfn, TOP32, TOP32 + 1, dom.max_pfn,
                                      dom.max_pfn + 1, 0]), label="edge pfn")


def plausible_limit(t, data):
    dom = t.obj
    return data.draw(st.sampled_from([TOP32, TOP32, TOP32 >> 4, 0xFFFFFFF, dom.max_pfn,
                                      dom.start_pfn, max(dom.start_pfn - 1, 0)]),
                     label="limit")


def plausible_cpu(t, data):
    return data.draw(st.one_of(st.none(), st.integers(0, max(t.obj.ncpus - 1, 0))), label="cpu")


def new_domain_args(data):
    # one constructor in five gets hostile arguments; the rest make domains
    # for the other calls to work on
    bad = 30 if data.draw(st.integers(0, 4), label="hostile ctor?") == 0 else 0
    kw = {}
    kw["granule"] = arg(data, st.sampled_from([4096, 4096, 4096, 65536, 2, 512]), bad)
    kw["start_pfn"] = arg(data, st.sampled_from([1, 1, 1, 0, 16, 0x1000]), bad)
    kw["ncpus"] = arg(data, st.sampled_from([1, 2, 3]), bad)
    kernels = ["6.12", "6.12", "6.1", "4.10"] + (["5.4", "6.10", None, [], 612] if bad else [])
    kw["kernel"] = data.draw(st.sampled_from(kernels), label="kernel")
    if kw["kernel"] == "4.10" and data.draw(st.booleans(), label="dma32?"):
        kw["dma_32bit_pfn"] = arg(data, st.sampled_from([TOP32, 0xFFFF, 1]), bad)
    searches = ["augmented", "linear"] + (["fast", {}] if bad else [])
    kw["search"] = data.draw(st.sampled_from(searches), label="search")
    return kw


def op_new_domain(w):
    kw = new_domain_args(w.data)
    where = "IovaDomain(%s)" % ", ".join("%s=%r" % kv for kv in kw.items())
    ok, dom = w.call(where, IovaDomain, **kw)
    if ok:
        w.current = Target(dom, where)
        w.domains.append(w.current)


def claim(w, t, where, pfn, size, fast):
    """Records a pfn an alloc returned, checking it is new and whole."""
    dom = t.obj
    size = as_int(size)
    if not pfn:
        return
    ext = dom.find(pfn)
    if ext is not None and ext[0] == pfn:
        lo, hi = ext                     # what the domain really handed out
        n = hi - lo + 1
        # the tree gives exactly the size asked; a cache gives a range of
        # the same size class (free_fast accepts any size of the class)
        if (n != size if size > 32 or not fast else size_class(n) != size_class(size)) \
                and not t.reserved_over:
            raise Finding("wrong-size-handed-out", where, "%#x..%#x for %d pages" % (lo, hi, size))
    elif t.reserved_over:
        lo, hi = pfn, pfn + size - 1     # a reserve moved the range's start
    else:
        raise Finding("not-a-range-start", where, "%#x lies in %r" % (pfn, ext))
    clash = t.claims.overlapping(lo, hi)
    if clash:
        raise Finding("handed-out-twice", where, "[%#x, %#x] overlaps %s" % (lo, hi, clash))
    t.claims.add(lo, hi, size)
    t.seen.add(pfn)


def released(t, ext):
    if ext is not None:
        t.claims.drop_within(*ext)


def op_domain_alloc(w):
    t = w.pick(w.domains)
    if t is None:
        return op_new_domain(w)
    d = w.data
    size = arg(d, size_strategy())
    limit = arg(d, st.just(plausible_limit(t, d)))
    aligned = d.draw(st.sampled_from([False, True, 0, 1, "yes", None]), label="aligned")
    where = "IovaDomain.alloc(%r, %r, %r)" % (size, limit, aligned)
    ok, pfn = w.call(where, t.obj.alloc, size, limit, aligned)
    if ok:
        claim(w, t, where, pfn, size, False)


def op_domain_alloc_fast(w):
    t = w.pick(w.domains)
    if t is None:
        return op_new_domain(w)
    d = w.data
    size = arg(d, size_strategy())
    limit = arg(d, st.just(plausible_limit(t, d)))
    cpu = arg(d, st.just(plausible_cpu(t, d)), 15)
    flush = d.draw(st.sampled_from([True, False, 1, None]), label="flush")
    where = "IovaDomain.alloc_fast(%r, %r, %r, cpu=%r)" % (size, limit, flush, cpu)
    ok, pfn = w.call(where, t.obj.alloc_fast, size, limit, flush, cpu=cpu)
    if ok:
        claim(w, t, where, pfn, size, True)


def op_domain_free(w):
    t = w.pick(w.domains)
    if t is None:
        return
    d = w.data
    pfn = arg(d, st.just(plausible_pfn(t, d)))
    fast = d.draw(st.booleans(), label="fast?")
    p = as_int(pfn)
    ext = t.obj.find(p) if p is not None and 0 <= p <= U64 and not t.obj.closed else None
    if fast:
        size = arg(d, st.just(t.claims.by_lo[p][1] if p in t.claims.by_lo
                              else d.draw(size_strategy())))
        cpu = arg(d, st.just(plausible_cpu(t, d)), 15)
        where = "IovaDomain.free_fast(%r, %r, cpu=%r)" % (pfn, size, cpu)
        ok, e = w.call(where, t.obj.free_fast, pfn, size, cpu=cpu)
        legit = p in t.claims.by_lo and type(size) is int and type(pfn) is int and \
            size == t.claims.by_lo[p][1] and \
            (cpu is None or type(cpu) is int and 0 <= cpu < t.obj.ncpus)
    else:
        where = "IovaDomain.free(%r)" % (pfn,)
        ok, e = w.call(where, t.obj.free, pfn)
        legit = p in t.claims.by_lo and type(pfn) is int
    if ok:
        released(t, ext)
    elif legit and not t.obj.closed and not t.reserved_over:
        raise Finding("legit-free-refused", where, repr(e))


def op_domain_find(w):
    t = w.pick(w.domains)
    if t is not None:
        pfn = arg(w.data, st.just(plausible_pfn(t, w.data)))
        w.call("IovaDomain.find(%r)" % (pfn,), t.obj.find, pfn)


def op_domain_reserve(w):
    t = w.pick(w.domains)
    if t is None:
        return
    d = w.data
    lo = arg(d, st.just(plausible_pfn(t, d)))
    hi = arg(d, st.one_of(st.just(lo), st.integers(0, 64).map(
        lambda k: lo + k if isinstance(lo, int) else k)))
    where = "IovaDomain.reserve(%r, %r)" % (lo, hi)
    before = t.obj.ranges() if not t.obj.closed else []
    cached = t.obj.cached_pfns() if not t.obj.closed else set()
    ok, res = w.call(where, t.obj.reserve, lo, hi)
    if ok:
        lo_i, hi_i = as_int(lo), as_int(hi)
        hit = [(a, b) for a, b in before if a <= hi_i and lo_i <= b]
        if hit:
            t.reserved_over = True     # ranges widened in place: starts move
        # As in the kernel, reserve_iova knows nothing of the rcache: a range
        # sitting in a magazine stays there, reserved or not, and alloc_fast
        # hands it out again. Only a reserve that took in no cached range
        # keeps its pfns out of use.
        if not any(a in cached for a, _ in hit):
            t.claims.add(res[0], res[1], res[1] - res[0] + 1)


BAD_BATCHES = [lambda: None, lambda: "abc", lambda: 5, lambda: array.array("d", [1.0]),
               lambda: b"\x01\x02", lambda: [1, "x"], lambda: [1, -1], lambda: [2**64],
               lambda: iter([1, 2]), lambda: memoryview(bytes(16))[::2],
               lambda: memoryview(array.array("Q", [1, 2, 3, 4]))[::2], lambda: [BadIndex()]]


def batch(d, items, hostile_share=10):
    """(a batch argument, the items it holds in order): a list, an
    array('Q'), raw bytes, a strided view, or something wrong (items None)."""
    how = d.draw(st.integers(0, 99), label="batch form")
    if how < hostile_share:
        return d.draw(st.sampled_from(BAD_BATCHES), label="bad batch")(), None
    if how < 20:
        return items, items                # as drawn, poison and all
    items = [v for v in items if type(v) is int and 0 <= v <= U64]
    if how < 45:
        return array.array("Q", items), items
    if how < 55:
        return array.array("Q", items).tobytes(), items
    if how < 60:
        doubled = array.array("Q", [x for v in items for x in (v, 0)])
        return memoryview(doubled)[::2], items
    return items, items


def op_domain_batches(w):
    t = w.pick(w.domains)
    if t is None:
        return
    d = w.data
    dom = t.obj
    n = d.draw(st.integers(0, 12), label="batch size")
    sizes = [d.draw(size_strategy()) for _ in range(n)]
    if d.draw(st.integers(0, 9), label="poison?") == 0 and sizes:
        sizes[d.draw(st.integers(0, n - 1))] = d.draw(st.sampled_from([0, -1, 2**64, 2**60]))
    limit = arg(d, st.just(plausible_limit(t, d)), 10)
    which = d.draw(st.sampled_from(["alloc_many", "alloc_fast_many", "free_many",
                                    "free_fast_many"]), label="batch call")
    if which in ("alloc_many", "alloc_fast_many"):
        buf, sizes = batch(d, sizes)
        if which == "alloc_many":
            where = "IovaDomain.alloc_many(%r, %r)" % (buf, limit)
            ok, out = w.call(where, dom.alloc_many, buf, limit)
        else:
            cpu = arg(d, st.just(plausible_cpu(t, d)), 10)
            where = "IovaDomain.alloc_fast_many(%r, %r, cpu=%r)" % (buf, limit, cpu)
            ok, out = w.call(where, dom.alloc_fast_many, buf, limit, cpu=cpu)
        if not ok:
            out = getattr(out, "pfns", None) or []      # what was made before the failure
        for p, s in zip(out, sizes or []):
            if p:
                claim(w, t, where, p, s, which == "alloc_fast_many")
        return
    live = list(t.claims.by_lo.items())
    picks = [d.draw(st.sampled_from(live)) for _ in range(min(n, len(live)))] if live else []
    pfns = [lo for lo, _ in picks] + [plausible_pfn(t, d) for _ in range(d.draw(st.integers(0, 2)))]
    if which == "free_many":
        buf, pfns = batch(d, pfns)
        where = "IovaDomain.free_many(%r)" % (buf,)
    else:
        szs = [v[1] for _, v in picks] + [d.draw(size_strategy()) for _ in pfns[len(picks):]]
        if d.draw(st.integers(0, 9), label="uneven?") == 0:
            szs = szs[:-1]
        cpu = arg(d, st.just(plausible_cpu(t, d)), 10)
        buf, pfns = batch(d, pfns)
        sbuf, _ = batch(d, szs, 5)
        where = "IovaDomain.free_fast_many(%r, %r, cpu=%r)" % (buf, sbuf, cpu)
    exts = [dom.find(p) if not dom.closed and 0 <= p <= U64 else None for p in pfns or []]
    if which == "free_many":
        ok, e = w.call(where, dom.free_many, buf)
    else:
        ok, e = w.call(where, dom.free_fast_many, buf, sbuf, cpu=cpu)
    done = len(exts) if ok else getattr(e, "done", 0)
    for ext in exts[:done]:
        released(t, ext)


def op_domain_cache_calls(w):
    t = w.pick(w.domains)
    if t is None:
        return
    d, dom = w.data, t.obj
    which = d.draw(st.sampled_from(["flush_cpu", "flush_depot", "flush_rcaches",
                                    "run_pending_work", "advance", "introspect", "search"]))
    if which == "flush_cpu":
        cpu = arg(d, st.just(plausible_cpu(t, d)), 30)
        w.call("IovaDomain.flush_cpu(%r)" % (cpu,), dom.flush_cpu, cpu)
    elif which == "advance":
        ms = arg(d, st.sampled_from([0, 1, 50, 100, 101, 10**6, U64]), 20)
        w.call("IovaDomain.advance(%r)" % (ms,), dom.advance, ms)
    elif which == "search":
        mode = d.draw(st.sampled_from(["augmented", "linear", "bogus", [], None]))
        w.call("IovaDomain.search=(%r)" % (mode,), setattr, dom, "search", mode)
    elif which == "introspect":
        for name in ("ranges", "state", "stats", "rcache_stats", "cached_pfns",
                     "current_cpu", "__len__", "__repr__"):
            w.call("IovaDomain.%s" % name, getattr(dom, name))
        w.call("IovaDomain.used_pfns", getattr, dom, "used_pfns")
        w.call("IovaDomain.search", getattr, dom, "search")
    else:
        w.call("IovaDomain.%s" % which, getattr(dom, which))


def op_domain_close(w):
    t = w.pick(w.domains)
    if t is not None and w.data.draw(st.integers(0, 2), label="close?") == 0:
        w.call("IovaDomain.close", t.obj.close)
        t.closed = True


def mutate(d, words):
    """A saved state with a few words changed, cut short or made longer."""
    words = list(words)
    for _ in range(d.draw(st.integers(1, 3), label="edits")):
        how = d.draw(st.integers(0, 7), label="edit")
        if how == 6 and words:
            del words[d.draw(st.integers(0, len(words) - 1)):]
            continue
        if how == 7:
            words += [d.draw(st.sampled_from([0, 1, U64]))] * d.draw(st.integers(1, 3))
            continue
        if not words:
            continue
        i = d.draw(st.integers(0, len(words) - 1), label="word")
        v = words[i]
        words[i] = [v ^ (1 << d.draw(st.integers(0, 63))), v + 1 & U64, v - 1 & U64, 0, U64,
                    d.draw(st.integers(0, U64)),
                    words[d.draw(st.integers(0, len(words) - 1))]][min(how, 6)]
    return array.array("Q", words).tobytes()


def op_domain_save_restore(w):
    t = w.pick(w.domains)
    if t is None:
        return
    d, dom = w.data, t.obj
    how = d.draw(st.sampled_from(["pickle", "deepcopy", "copy", "mutated", "mutated",
                                  "garbage"]), label="round trip")
    if how == "garbage":
        data = d.draw(st.one_of(st.binary(max_size=200), st.sampled_from(NON_INTS)))
        ok, twin = w.call("IovaDomain.restore(%r)" % (data,), IovaDomain.restore, data)
        if ok:
            w.domains.append(Target(twin, "restored garbage", restored=True))
        return
    if how in ("pickle", "deepcopy", "copy"):
        fn = {"pickle": lambda x: pickle.loads(pickle.dumps(x)), "deepcopy": copy.deepcopy,
              "copy": copy.copy}[how]
        ok, twin = w.call("IovaDomain %s" % how, fn, dom)
        if ok:
            if twin.ranges() != dom.ranges() or twin.cached_pfns() != dom.cached_pfns():
                raise Finding("copy-differs", "IovaDomain %s" % how)
            nt = Target(twin, "%s of %s" % (how, t.label), restored=t.restored)
            nt.claims.by_lo = dict(t.claims.by_lo)
            nt.seen = set(t.seen)
            nt.reserved_over = t.reserved_over
            w.domains.append(nt)
        return
    ok, saved = w.call("IovaDomain.save", dom.save)
    if not ok:
        return
    bad = mutate(d, array.array("Q", saved))
    ok, twin = w.call("IovaDomain.restore(mutated)", IovaDomain.restore, bad)
    if ok:
        nt = Target(twin, "mutated restore of %s" % t.label, restored=True)
        # whatever it holds that is not cached belongs to someone
        cached = twin.cached_pfns()
        for lo, hi in twin.ranges():
            if lo not in cached:
                nt.claims.add(lo, hi, hi - lo + 1)
                nt.seen.add(lo)
        nt.seen |= cached
        nt.reserved_over = t.reserved_over
        w.domains.append(nt)


# ---- threads ----------------------------------------------------------------
#
# Thread interleavings are not reproducible, so a threaded program draws
# everything first and nothing after: hypothesis then sees the same draws
# whatever the threads did. Each thread works on its own ranges; its hostile
# pfns are ones no allocation can return (beyond every limit used, or not
# integers), so a free that succeeds can only have freed the thread's own.

THREAD_CALLS = ["alloc", "alloc", "alloc_fast", "alloc_fast", "free", "free_fast", "free_fast",
                "alloc_fast_many", "free_fast_many", "flush_cpu", "flush_depot",
                "run_pending_work", "advance", "check", "cached_pfns", "hostile"]
NEVER_ALLOCATED = [TOP32 + 1, TOP32 + 7, 2**52, 2**64, -1, 0, None, "7", 1.0, BadIndex(),
                   HugeIndex()]
BAD_LIMITS = [0, -1, 2**60, 2**64, None, "x", BadIndex()]


def thread_program(data, ncpus):
    steps = []
    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        call = data.draw(st.sampled_from(THREAD_CALLS), label="call")
        steps.append((call, data.draw(size_strategy()), data.draw(st.integers(0, 2**16)),
                      data.draw(st.one_of(st.none(), st.integers(0, ncpus - 1),
                                          st.sampled_from([ncpus, -2, 2**40, "0"])))))
    return steps


def run_thread(dom, steps, mine, failures):
    for call, size, k, cpu in steps:
        try:
            if call in ("free", "free_fast") and mine:
                pfn, sz = mine[k % len(mine)]
                if call == "free":
                    dom.free(pfn)
                else:
                    dom.free_fast(pfn, sz, cpu=cpu)
                mine.remove((pfn, sz))
            elif call == "alloc":
                mine.append((dom.alloc(size, TOP32 >> (k % 3), bool(k & 4)), size))
            elif call == "alloc_fast":
                mine.append((dom.alloc_fast(size, TOP32 >> (k % 3), bool(k & 4), cpu=cpu), size))
            elif call == "alloc_fast_many":
                sizes = [size, 1 + k % 9, 2]
                mine.extend((p, s) for p, s in zip(dom.alloc_fast_many(sizes, TOP32, cpu=cpu),
                                                   sizes) if p)
            elif call == "free_fast_many" and mine:
                batch_ = mine[: 1 + k % len(mine)]
                try:
                    dom.free_fast_many([p for p, _ in batch_], [s for _, s in batch_], cpu=cpu)
                    done = len(batch_)
                except IovaError as e:
                    done = getattr(e, "done", 0)
                    raise
                finally:
                    del mine[:done]
            elif call == "flush_cpu":
                dom.flush_cpu(cpu if cpu is not None else k % dom.ncpus)
            elif call == "advance":
                dom.advance(k % 250)
            elif call == "hostile":
                bad = NEVER_ALLOCATED[k % len(NEVER_ALLOCATED)]
                lim = BAD_LIMITS[k % len(BAD_LIMITS)]
                [dom.free, lambda p: dom.free_fast(p, size, cpu=cpu), dom.find,
                 lambda p: dom.alloc(p, TOP32), lambda p: dom.alloc_fast(size, lim, cpu=cpu),
                 lambda p: dom.free_many([p])][k % 6](bad)
            elif call in ("flush_depot", "run_pending_work", "check", "cached_pfns"):
                getattr(dom, call)()
        except IovaCorrupted as e:
            failures.append(Finding("check-failed", "IovaDomain.%s in a thread" % call, str(e)))
        except (IovaError, MemoryError, HostileError):
            pass
        except BaseException as e:
            f = Finding("undocumented", "IovaDomain.%s in a thread" % call,
                        "%s: %s" % (type(e).__name__, e))
            f.exc_name = type(e).__name__
            failures.append(f)


@settings(max_examples=max(EXAMPLES // 4, 5), deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(st.data())
def fuzz_threads(data):
    kernel = data.draw(st.sampled_from(["6.12", "6.1", "4.10"]), label="kernel")
    ncpus = data.draw(st.integers(1, 4), label="ncpus")
    nthreads = data.draw(st.integers(2, 4), label="threads")
    programs = [thread_program(data, ncpus) for _ in range(nthreads)]
    dom = IovaDomain(4096, 1, ncpus=ncpus, kernel=kernel)
    # ranges nobody frees, and pfns in every CPU's magazines and the depot,
    # before the threads start
    held = dom.alloc_many([1] * 300 + [2] * 300, TOP32)
    for i, p in enumerate(dom.alloc_many([1] * 400, TOP32)):
        dom.free_fast(p, 1, cpu=i % ncpus)
    mine = [[] for _ in range(nthreads)]
    failures = []
    threads = [threading.Thread(target=run_thread, args=(dom, programs[i], mine[i], failures))
               for i in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        for f in failures:
            name = None if STRICT else known_issue(f)
            if name is None:
                raise f
        dom.check()
        live = [p for m in mine for p, _ in m]
        if len(live) != len(set(live)):
            raise Finding("handed-out-twice", "IovaDomain threads", "a pfn held by two threads")
        cached = dom.cached_pfns()
        if cached & set(live):
            raise Finding("handed-out-twice", "IovaDomain threads", "a live pfn is also cached")
        expected = len(live) + len(cached) + len(held)
        if len(dom) != expected:
            raise Finding("counts-disagree", "IovaDomain threads",
                          "%d ranges, %d accounted for" % (len(dom), expected))
    finally:
        dom.close()


DOMAIN_OPS = [op_new_domain] + [op_domain_alloc] * 3 + [op_domain_alloc_fast] * 3 + \
    [op_domain_free] * 4 + [op_domain_find, op_domain_reserve, op_domain_close] + \
    [op_domain_batches, op_domain_cache_calls, op_domain_save_restore] * 2


# ---- PfnAllocator -----------------------------------------------------------

KINDS = ["iova", "msi", "wraparound", "reset-when-empty"]


def op_new_allocator(w):
    d = w.data
    # one constructor in five gets hostile arguments
    bad = 30 if d.draw(st.integers(0, 4), label="hostile ctor?") == 0 else 0
    kind = d.draw(st.sampled_from(KINDS + (["bogus", None] if bad else ["iova"])), label="kind")
    kw = {}
    own = True
    if kind in ("iova", "reset-when-empty"):
        kernel = d.draw(st.sampled_from(["6.12", "6.12", "6.1", "4.10"]), label="kernel")
        if d.draw(st.booleans(), label="lend a domain?"):
            ok, dom = w.call("IovaDomain", IovaDomain, 4096, 1, ncpus=2, kernel=kernel)
            kw["iovad"] = dom
        else:
            kw["kernel"] = kernel
            kw["ncpus"] = arg(d, st.sampled_from([1, 2]), bad)
            kw["granule"] = arg(d, st.sampled_from([4096, 65536]), bad)
    else:
        kw["granule"] = arg(d, st.sampled_from([4096, 4096, 65536]), bad)
        kw["start_pfn"] = arg(d, st.sampled_from([1, 16, 0x100]), bad)
        kw["end_pfn"] = arg(d, st.sampled_from([None, 0x1FF, 4000, TOP32]), bad)
    if bad and d.draw(st.integers(0, 3), label="bad iovad?") == 0:
        kw["iovad"] = d.draw(st.sampled_from([object(), 5]))
        own = False
    where = "PfnAllocator(%r, %s)" % (kind, ", ".join("%s=%r" % kv for kv in kw.items()))
    ok, a = w.call(where, PfnAllocator, kind, **kw)
    if not ok:
        return
    t = w.current = Target(a, where)
    t.flags["own_domain"] = own
    if kind == "wraparound":
        # the pfns it hands out; a reserve outside them keeps nothing out
        granule = as_int(kw["granule"])
        end = kw["end_pfn"]
        t.flags["space"] = (as_int(kw["start_pfn"]),
                            (1 << 32) // granule - 1 if end is None else as_int(end))
    kernel = a.iovad.kernel if a.iovad is not None else None
    if kind == "iova" and kernel == "6.12" and d.draw(st.integers(0, 4), label="tree only?") == 0:
        ok, _ = w.call("PfnAllocator.bypass_rcache", a.bypass_rcache)
        t.flags["tree_only"] = ok
    if kind == "iova" and kernel == "6.12" and not t.flags.get("tree_only") and \
            d.draw(st.booleans(), label="flush queue?"):
        ncpus = d.draw(st.sampled_from([1, 2, 2, 2, 4]), label="rings")
        size = d.draw(st.sampled_from([2, 4, 16]), label="ring size")
        ok, _ = w.call("PfnAllocator.enable_flush_queue(%d, %d)" % (ncpus, size),
                       a.enable_flush_queue, ncpus, size, 10)
        if ok:
            t.flags["fq"] = True
            t.flags["fq_rings"] = ncpus
        elif ncpus <= a.iovad.ncpus:
            raise Finding("legit-call-refused", "PfnAllocator.enable_flush_queue", repr(_))
    w.allocators.append(t)


def pfn_for(t, d):
    """Mostly the start of something live; else something seen (perhaps
    freed), maybe off by one; else an edge."""
    live = sorted(lo for lo, (_, size) in t.claims.by_lo.items() if size)
    seen = sorted(t.seen)
    how = d.draw(st.integers(0, 9), label="which pfn")
    if live and how < 6:
        return d.draw(st.sampled_from(live))
    if seen and how < 9:
        return d.draw(st.sampled_from(seen)) + d.draw(st.sampled_from([0, 0, 1, -1]))
    return d.draw(st.sampled_from([0, 1, TOP32, 0x1FF, 0x100]))


def alloc_cpu(t, d):
    a = t.obj
    n = a.iovad.ncpus if a.iovad is not None else 1
    return arg(d, st.one_of(st.none(), st.integers(0, n - 1)), 10)


def op_alloc_alloc(w):
    t = w.pick(w.allocators)
    if t is None:
        return op_new_allocator(w)
    d, a = w.data, t.obj
    pages = arg(d, size_strategy(), 15)
    limit = arg(d, st.sampled_from([TOP32, TOP32, 4000, 0x1FF, 0xFFFFFFF, 0]), 15)
    try32 = d.draw(st.booleans(), label="try32")
    cpu = alloc_cpu(t, d)
    where = "PfnAllocator.alloc(%r, %r, try_32bit=%r, cpu=%r)" % (pages, limit, try32, cpu)
    ok, res = w.call(where, a.alloc, pages, limit, try_32bit=try32, cpu=cpu)
    if not ok:
        return
    pfn, pages = res[0], as_int(pages)
    lo, hi = pfn, pfn + pages - 1
    if a.iovad is not None and not a.iovad.closed:
        ext = a.iovad.find(pfn)
        if ext is None or ext[0] != pfn:
            raise Finding("not-a-range-start", where, "%#x lies in %r" % (pfn, ext))
        hi = max(hi, ext[1])
    clash = t.claims.overlapping(lo, hi)
    if clash:
        raise Finding("handed-out-twice", where, "[%#x, %#x] overlaps %s" % (lo, hi, clash))
    t.claims.add(lo, hi, pages)
    t.seen.add(pfn)


def free_rule_ok(t, pfn, pages):
    """Whether freeing (pfn, pages) names what was handed out, as strictly
    as the allocator type promises."""
    if pfn not in t.claims.by_lo or not t.claims.by_lo[pfn][1]:
        return False                                       # nothing, or reserved
    if pages < 1:
        return False                                       # no range has no pages
    want = t.claims.by_lo[pfn][1]
    a = t.obj
    if a.type.value == "iova" and a.iovad is not None and a.iovad.kernel in ("6.12", "6.1") \
            and not t.flags.get("tree_only"):
        # free_iova_fast's rule (6.1 and 6.12 alike, both round the size a
        # cached allocation is given): any size of the range's class; beyond the
        # cached classes, where the class says nothing, the size handed out
        if want > 32 or pages > 32:
            return pages == want
        return size_class(pages) == size_class(want)
    if a.type.value == "msi" and pfn != max(t.claims.by_lo):
        return False                                       # only the latest can be undone
    return pages == want


def op_alloc_free(w):
    t = w.pick(w.allocators)
    if t is None:
        return
    d, a = w.data, t.obj
    pfn = arg(d, st.just(pfn_for(t, d)), 15)
    p = as_int(pfn)
    pages = arg(d, st.just(t.claims.by_lo[p][1] if p in t.claims.by_lo and
                           d.draw(st.integers(0, 4)) else d.draw(size_strategy())), 10)
    n = as_int(pages)
    lazy = d.draw(st.integers(0, 9), label="lazy?") < (5 if t.flags.get("fq") else 1)
    cpu = alloc_cpu(t, d)
    ncpus = a.iovad.ncpus if a.iovad is not None else 1
    legal = p is not None and n is not None and free_rule_ok(t, p, n)
    plain = type(pfn) is int and type(pages) is int and \
        (cpu is None or type(cpu) is int and 0 <= cpu < ncpus)
    if lazy:
        now = arg(d, st.integers(0, 100), 10)
        # a lazy free is checked as the strict one is, on one of the rings
        plain = plain and type(now) is int and now >= 0 and t.flags.get("fq") and \
            (cpu is None or cpu < t.flags.get("fq_rings", 0))
        where = "PfnAllocator.free_lazy(%r, %r, %r, cpu=%r)" % (pfn, pages, now, cpu)
        ok, ev = w.call(where, a.free_lazy, pfn, pages, now, cpu=cpu)
        if ok and not ev & EV_QUEUED:
            return                                         # ring full: nothing happened
    else:
        where = "PfnAllocator.free(%r, %r, cpu=%r)" % (pfn, pages, cpu)
        ok, ev = w.call(where, a.free, pfn, pages, cpu=cpu)

    if ok:
        if not legal:
            tag = "free-wrong-size-accepted" if p in t.claims.by_lo \
                else "free-of-nothing-handed-out"
            raise Finding(tag, where, "claims %s" % sorted(t.claims.by_lo.items())[:8])
        del t.claims.by_lo[p]
        if a.type.value == "reset-when-empty":
            t.flags["retired"] = 0 if ev & EV_RESET else t.flags.get("retired", 0) + 1
    elif legal and plain and not (a.iovad is not None and a.iovad.closed):
        raise Finding("legit-free-refused", where, repr(ev))


def op_alloc_fq(w):
    t = w.pick(w.allocators)
    if t is None:
        return
    d, a = w.data, t.obj
    which = d.draw(st.sampled_from(["enable", "flushed", "due", "introspect", "close-domain",
                                    "reserve", "reserve"]))
    if which == "reserve":
        lo = arg(d, st.sampled_from([0x100, 0x180, 0x1F0, 1, TOP32 - 8]), 15)
        hi = arg(d, st.integers(0, 16).map(lambda k: lo + k if type(lo) is int else k), 15)
        where = "PfnAllocator.reserve(%r, %r)" % (lo, hi)
        ok, _ = w.call(where, a.reserve, lo, hi)
        if ok and a.type.value != "wraparound":
            raise Finding("reserve-accepted", where, "only the wraparound type reserves")
        start, end = t.flags.get("space", (0, (1 << 64) - 1))
        if ok and max(as_int(lo), start) <= min(as_int(hi), end):
            lo, hi = max(as_int(lo), start), min(as_int(hi), end)
            clash = t.claims.overlapping(lo, hi)
            if clash:
                raise Finding("reserve-over-live", where, "overlaps %s" % clash)
            t.claims.add(lo, hi, 0)                     # never to be handed out
            t.flags["reserved"] = t.flags.get("reserved", 0) + 1
    elif which == "enable":
        ncpus = arg(d, st.sampled_from([1, 2, 4]), 15)
        size = arg(d, st.sampled_from([1, 4, 256]), 15)
        timeout = arg(d, st.sampled_from([0, 10]), 10)
        where = "PfnAllocator.enable_flush_queue(%r, %r, %r)" % (ncpus, size, timeout)
        ok, _ = w.call(where, a.enable_flush_queue, ncpus, size, timeout)
        n = as_int(ncpus)
        if ok:
            if t.flags.get("fq") or a.iovad is None or type(ncpus) is bool or n is None or \
                    not 1 <= n <= a.iovad.ncpus:
                raise Finding("bad-flush-queue-accepted", where,
                              "a second queue, or rings beyond the domain's CPUs")
            t.flags["fq"] = True
            t.flags["fq_rings"] = n
    elif which == "flushed":
        all_rings = d.draw(st.booleans())
        cpu = arg(d, st.sampled_from([0, 1]), 15)
        w.call("PfnAllocator.fq_flushed(%r, %r)" % (all_rings, cpu), a.fq_flushed, all_rings, cpu)
    elif which == "due":
        w.call("PfnAllocator.fq_due", getattr, a, "fq_due")
    elif which == "introspect":
        for name in ("stats", "ranges", "check", "__repr__"):
            w.call("PfnAllocator.%s" % name, getattr(a, name))
    elif a.iovad is not None:
        w.call("IovaDomain.close", a.iovad.close)


ALLOCATOR_OPS = [op_new_allocator, op_alloc_alloc, op_alloc_alloc, op_alloc_alloc,
                 op_alloc_free, op_alloc_free, op_alloc_free, op_alloc_fq]


# ---- DmaCookie --------------------------------------------------------------

def op_new_cookie(w):
    d = w.data
    kind = d.draw(st.sampled_from(KINDS + ["bogus"]), label="allocator")
    kw = {"kernel": d.draw(st.sampled_from(["6.12", "6.12", "6.1", "4.10", "2.6"])),
          "ncpus": arg(d, st.sampled_from([1, 2]), 10),
          "forcedac": d.draw(st.booleans()),
          "rcache": d.draw(st.sampled_from([True, True, False]))}
    if kind == "msi":
        kw["msi_base"] = arg(d, st.sampled_from([0x8000000, 0, None]), 15)
    where = "DmaCookie(%r, %s)" % (kind, ", ".join("%s=%r" % kv for kv in kw.items()))
    ok, c = w.call(where, DmaCookie, kind, **kw)
    if not ok:
        return
    t = w.current = Target(c, where)
    if d.draw(st.integers(0, 5), label="init?") > 0:
        granule = arg(d, st.sampled_from([4096, 4096, 65536]), 10)
        start = arg(d, st.sampled_from([0, 0, 0x100000]), 10)
        end = arg(d, st.sampled_from([(1 << 32) - 1, (1 << 64) - 1, (1 << 40) - 1]), 10)
        force = d.draw(st.booleans())
        fq = d.draw(st.booleans())
        reserved = d.draw(st.sampled_from([(), ((0xFEE00000, 0xFEEFFFFF),), [(5,)], 7]))
        where = "DmaCookie.init_domain(%r, %r, %r, %r, flush_queue=%r, reserved=%r)" % (
            granule, start, end, force, fq, reserved)
        ok, _ = w.call(where, c.init_domain, granule, start, end, force, flush_queue=fq,
                       reserved=reserved)
        if ok and reserved and c.iovad is not None:
            for lo, hi in reserved:               # never to be handed out
                t.claims.add(lo, hi, hi - lo + 1)
    t.flags["fq"] = c.flush_queue
    w.cookies.append(t)


DEVICES = [None, Dev(True, 0), Dev(False, 0), Dev(True, (1 << 32) - 1), Dev(True, 1 << 40)]


def op_cookie_alloc(w):
    t = w.pick(w.cookies)
    if t is None:
        return op_new_cookie(w)
    d, c = w.data, t.obj
    g = c.granule or 4096
    dev = d.draw(st.sampled_from(DEVICES), label="dev")
    size = arg(d, st.integers(1, 40).map(lambda k: k * g), 15)
    limit = arg(d, st.sampled_from([(1 << 32) - 1, (1 << 64) - 1, 0, 1 << 36]), 15)
    where = "DmaCookie.alloc_iova(%r, %r, %r)" % (dev, size, limit)
    ok, iova = w.call(where, c.alloc_iova, dev, size, limit)
    if ok and iova:
        size = as_int(size)
        clash = t.claims.overlapping(iova, iova + size - 1)
        if clash:
            raise Finding("handed-out-twice", where, "%#x overlaps %s" % (iova, clash))
        t.claims.add(iova, iova + size - 1, size)
        t.seen.add(iova)


def op_cookie_free(w):
    t = w.pick(w.cookies)
    if t is None:
        return
    d, c = w.data, t.obj
    known = sorted(t.seen)
    iova = arg(d, st.sampled_from(known) if known else st.just(0), 15)
    i = as_int(iova)
    size = arg(d, st.just(t.claims.by_lo[i][1] if i in t.claims.by_lo else 4096), 15)
    lazy = d.draw(st.booleans(), label="lazy")
    where = "DmaCookie.free_iova(%r, %r, lazy=%r)" % (iova, size, lazy)
    ok, _ = w.call(where, c.free_iova, iova, size, lazy=lazy)
    if ok:
        if i not in t.claims.by_lo:
            raise Finding("free-of-nothing-handed-out", where)
        del t.claims.by_lo[i]


def op_cookie_misc(w):
    t = w.pick(w.cookies)
    if t is None:
        return
    d, c = w.data, t.obj
    which = d.draw(st.sampled_from(["advance", "dma_limit", "uses32", "introspect"]))
    if which == "advance":
        ms = arg(d, st.sampled_from([0, 1, 10, 11, 200]), 20)
        w.call("DmaCookie.advance(%r)" % (ms,), c.advance, ms)
    elif which == "dma_limit":
        dev = d.draw(st.sampled_from(DEVICES))
        lim = arg(d, st.sampled_from([0, (1 << 32) - 1, U64]), 20)
        w.call("DmaCookie.dma_limit(%r, %r)" % (dev, lim), c.dma_limit, dev, lim)
    elif which == "uses32":
        w.call("DmaCookie.uses_32bit_first", c.uses_32bit_first, d.draw(st.sampled_from(DEVICES)))
    else:
        for name in ("stats", "check", "__repr__"):
            w.call("DmaCookie.%s" % name, getattr(c, name))


COOKIE_OPS = [op_new_cookie, op_cookie_alloc, op_cookie_alloc, op_cookie_free, op_cookie_free,
              op_cookie_misc]


# ---- the programs -----------------------------------------------------------

def run_program(data, ops):
    w = World(data)
    try:
        for _ in range(data.draw(st.integers(1, MAX_OPS), label="length")):
            op = data.draw(st.sampled_from(ops), label="op")
            # a finding raised straight from a call (not through guard) is
            # judged here, against the objects the program touched
            w.current = None
            try:
                op(w)
            except Finding as f:
                w.judge(f, w.current)
                continue
            w.check_all()
    finally:
        for pool in (w.domains,):
            for t in pool:
                try:
                    t.obj.close()
                except Exception:
                    pass
    return w


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
                    suppress_health_check=list(HealthCheck), print_blob=True)


@SETTINGS
@given(st.data())
def fuzz_domains(data):
    run_program(data, DOMAIN_OPS)


@SETTINGS
@given(st.data())
def fuzz_allocators(data):
    run_program(data, ALLOCATOR_OPS)


@SETTINGS
@given(st.data())
def fuzz_cookies(data):
    run_program(data, COOKIE_OPS)


@SETTINGS
@given(st.data())
def fuzz_everything(data):
    run_program(data, DOMAIN_OPS + ALLOCATOR_OPS + COOKIE_OPS)


PROPERTIES = [fuzz_domains, fuzz_allocators, fuzz_cookies, fuzz_everything, fuzz_threads]


def _atheris_main(argv):
    import atheris              # optional: pip install atheris

    # coverage feedback from the Python side (bindings, fuzzer, hypothesis);
    # the C core itself is not instrumented for libFuzzer here
    atheris.instrument_all()
    target = fuzz_everything.hypothesis.fuzz_one_input
    atheris.Setup(argv, target)
    atheris.Fuzz()


def main(argv):
    if "--atheris" in argv:
        argv = [a for a in argv if a != "--atheris"]
        return _atheris_main(argv)
    for prop in PROPERTIES:
        n = prop._hypothesis_internal_use_settings.max_examples
        print("fuzzing %s: %d examples" % (prop.__name__, n), flush=True)
        prop()
    print("no findings beyond the known issues")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
