"""bench_iova's churn loops in this process, and the same churn through pyiova.

The Python batch calls are measured against the C core doing the very same
operations. Timed in another process (the bench_iova program), the C side
can run in a different speed state of a shared machine than the Python
side does, and a ratio of the two then says more about the machine than
about pyiova. So the loops of bench_iova.c are also built as a shared
library (`make -C benchmarks libbench_iova.so`, entry points in
bench_iova_lib.h) and loaded here with cffi's ABI mode: C runs and Python
runs interleave in one process.

  load()        the library, built first if needed, as (ffi, lib); raises
                Unavailable, with the reason, when make or cc is missing
  c_sequence()  bench_iova.c's generator: the prefill sizes and the rounds
  Replay        the rounds churn (cases a.rounds and b.rounds) through
                IovaDomain batch calls
  hit_sizes()   the sizes of case h
  fnv1a()       bench_iova.c's live_digest(), to check both did the same work
"""
import array
import os
import shutil
import subprocess
import time

import cffi

from pyiova import IovaDomain

try:
    import numpy as np
except ImportError:        # the replay falls back to lists and arrays
    np = None

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.join(HERE, "libbench_iova.so")
HEADER = os.path.join(HERE, "bench_iova_lib.h")

GRANULE = 4096
LIMIT32 = 0xFFFFF          # 4K granule: the last pfn below 4 GiB
LIVE = 1000
ROUND = 100
M64 = (1 << 64) - 1


# ---- the library -------------------------------------------------------------

class Unavailable(RuntimeError):
    """The library cannot be built here: no make, or no C compiler."""


_loaded = None


def load():
    """(ffi, lib) for libbench_iova.so, running make first so the library
    is built from the csrc/ in this checkout. Raises Unavailable when make
    or the C compiler is missing, and RuntimeError with the compiler's
    message when the build fails. The result, or the failure, is kept for
    the life of the process."""
    global _loaded
    if _loaded is None:
        try:
            _loaded = _build_and_open()
        except RuntimeError as e:
            _loaded = e
    if isinstance(_loaded, Exception):
        raise _loaded
    return _loaded


def _build_and_open():
    name = os.path.basename(LIBRARY)
    if shutil.which("make") is None:
        raise Unavailable("cannot build benchmarks/%s: make is not installed" % name)
    try:
        subprocess.run(["make", "-s", "-C", HERE, name],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        # An up-to-date library needs no compiler; a stale one does.
        cc = (os.environ.get("CC") or "cc").split()[0]
        if shutil.which(cc) is None:
            raise Unavailable("cannot build benchmarks/%s: %s is not installed"
                              % (name, cc)) from None
        raise RuntimeError("make -C benchmarks %s failed:\n%s" % (name, e.stdout + e.stderr)) \
            from None
    ffi = cffi.FFI()
    with open(HEADER) as f:
        # The header is C; cffi takes its declarations, not the # lines.
        ffi.cdef("".join(line for line in f if not line.lstrip().startswith("#")))
    return ffi, ffi.dlopen(LIBRARY)


# ---- bench_iova.c's generator, bit for bit -----------------------------------

class SplitMix:
    """splitmix64 and rnd_below of bench_iova.c, so a seed names the same
    sequence on both sides."""

    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next() * n) >> 64


def c_sequence(pairs):
    """prefill() and make_rounds() of bench_iova.c: the initial sizes, then
    per round the victim slots and the new sizes."""
    rng = SplitMix(1)
    init = [1 + rng.below(64) for _ in range(LIVE)]
    rng = SplitMix(2)
    rounds = []
    for _ in range(pairs // ROUND):
        perm = list(range(LIVE))
        victims, sizes = [], []
        for j in range(ROUND):
            k = j + rng.below(LIVE - j)
            perm[j], perm[k] = perm[k], perm[j]
            victims.append(perm[j])
            sizes.append(1 + rng.below(64))
        rounds.append((victims, sizes))
    return init, rounds


def hit_sizes(batch):
    """hit_sizes() of bench_iova.c: case h's sizes, 1..32 pages."""
    rng = SplitMix(3)
    return array.array("Q", (1 + rng.below(32) for _ in range(batch)))


def fnv1a(pfns):
    """live_digest() of bench_iova.c: FNV-1a over the pfns' bytes."""
    h = 0xcbf29ce484222325
    for p in pfns:
        p = int(p)
        for b in range(0, 64, 8):
            h = ((h ^ ((p >> b) & 0xFF)) * 0x100000001b3) & M64
    return h


# ---- the same churn through pyiova ---------------------------------------------

def _victim_sizes(init, rounds):
    """Per round, the sizes of the ranges it frees. They follow from the
    sequence alone (not from the pfns handed out), so they are gathered
    before the clock starts, as bench_iova.c's sizes are generated before
    its clock starts: the timed loop then holds the batch calls and the
    pfn bookkeeping only, not a second gather and scatter per round that C
    does not pay."""
    sizes = list(init)
    out = []
    for v, new in rounds:
        out.append([sizes[k] for k in v])
        for k, s in zip(v, new):
            sizes[k] = s
    return out


class Replay:
    """bench_iova.c's rounds churn, replayed through IovaDomain's batch
    calls: free_many + alloc_many per round (the tree path, as a.rounds.many)
    or free_fast_many + alloc_fast_many (as b.rounds.many). The sequence is
    built once; fresh() sets up a domain (untimed) and run() is the body to
    time. The final live set's fnv1a() equals bench_iova's digest exactly
    when both handed out the same pfns."""

    def __init__(self, pairs):
        init, rounds = c_sequence(pairs)
        self.pairs = len(rounds) * ROUND
        self.init = array.array("Q", init)
        gone_sizes = _victim_sizes(init, rounds)
        if np is not None:
            # Victim slots index the numpy live set; sizes stay array('Q'),
            # the form the batch calls read in place at the lowest cost.
            self.rounds = [(np.array(v, dtype=np.intp), array.array("Q", s),
                            array.array("Q", g))
                           for (v, s), g in zip(rounds, gone_sizes)]
        else:
            self.rounds = [(v, array.array("Q", s), array.array("Q", g))
                           for (v, s), g in zip(rounds, gone_sizes)]

    def fresh(self):
        """A new domain holding the initial live set, as prefill() leaves
        it, and the live set in the form run() keeps it."""
        d = IovaDomain(GRANULE, 1, ncpus=1)
        pf = d.alloc_many(self.init, LIMIT32, True)
        if np is not None:
            return d, np.frombuffer(pf, dtype=np.uint64).copy()
        return d, list(pf)

    def run(self, d, live, fast, calls=True):
        """Every round on d; returns the live set. calls=False replaces the
        batch calls by stand-ins returning a ready result: what is left is
        the replay's own bookkeeping, a part of the figure with calls."""
        return self._rounds(d, live, fast, calls, None)[0]

    def run_calls_timed(self, d, live, fast):
        """run(), but timing the batch calls alone: returns the live set and
        the seconds spent inside the calls, wrappers, buffer exports and the
        C core included. What a caller does around them - here numpy's
        gather of the victims' pfns and scatter of the new ones, which the
        C loop does in a few C instructions - is left out. The clock reads
        add about 1 ns per pair. Without numpy, the whole replay is timed."""
        if np is None:
            t0 = time.perf_counter()
            live = self.run(d, live, fast)
            return live, time.perf_counter() - t0
        return self._rounds(d, live, fast, True, time.perf_counter)

    def _rounds(self, d, live, fast, calls, clock):
        """The loop behind run() and run_calls_timed(): (live set, seconds
        inside the batch calls, or 0.0 without a clock)."""
        if fast:
            fm, am = d.free_fast_many, d.alloc_fast_many
        else:
            fm, am = d.free_many, d.alloc_many
        if not calls:
            ready = array.array("Q", range(1, ROUND + 1))
            fm = lambda *args: None                 # noqa: E731
            am = lambda *args: ready                # noqa: E731
        inside = 0.0
        if np is not None:
            # a dtype instance: given the type np.uint64, frombuffer spends
            # as long converting it as it does on the array
            frombuffer, u64 = np.frombuffer, np.dtype(np.uint64)
        for v, new, gone_size in self.rounds:
            if np is not None:
                gone = live[v]
            else:
                gone = array.array("Q", [live[k] for k in v])
            if clock:
                t0 = clock()
            if fast:
                fm(gone, gone_size, 0)
                out = am(new, LIMIT32, True, 0)
            else:
                fm(gone)
                out = am(new, LIMIT32, True)
            if clock:
                inside += clock() - t0
            if np is not None:
                live[v] = frombuffer(out, u64)
            else:
                for k, p in zip(v, out):
                    live[k] = p
        return live, inside
