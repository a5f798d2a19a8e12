#!/usr/bin/env python3
"""What the Python layer adds on top of the C core, as ratios.

    python benchmarks/bench_python_overhead.py [--pairs N] [--repeats N] [--no-c]

Measures, in one process and best of --repeats:

  1. an empty cffi call (lib.iova_current_cpu: a C function that does next
     to nothing) against one IovaDomain.alloc / .free call, and against the
     same two calls made on `lib` directly. Issue 7's target: a single call
     costs at most about twice an empty cffi call.
  2. batch calls (alloc_many/free_many, alloc_fast_many/free_fast_many) per
     operation, against the C program (benchmarks/bench_iova) doing the very
     same operations: the churn in rounds of 100 frees then 100 allocs is
     replayed here from the C program's own generator (splitmix64, same
     seeds), so both hand out the same pfns. Target: within 1.2x.
  3. rcache-hit batches (the same sizes allocated and freed over and over):
     alloc+free pairs per second. Target: at least 10M.

The C program is built with `make -C benchmarks bench_iova` unless --no-c.
"""
import argparse
import array
import csv
import glob
import io
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, Python puts benchmarks/ first on the path, not the
# checkout: `import pyiova` would then measure whichever pyiova is installed
# (another checkout, say) against this checkout's C program. The checkout
# comes first, unless PYIOVA_BENCH_INSTALLED=1 asks for the installed one.
if os.environ.get("PYIOVA_BENCH_INSTALLED", "") in ("", "0"):
    sys.path.insert(0, ROOT)

import pyiova  # noqa: E402
from pyiova import IovaDomain  # noqa: E402
from pyiova._pyiova import lib  # noqa: E402

try:
    import numpy as np
except ImportError:
    np = None

LIMIT32 = 0xFFFFF          # 4K granule: the last pfn below 4 GiB
LIVE = 1000
ROUND = 100
HIT_BATCHES = (64, 1024)
M64 = (1 << 64) - 1


# ---- the C program's generator, bit for bit -------------------------------

class SplitMix:
    """bench_iova.c's splitmix64 and rnd_below, so a seed names the same
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


# ---- timing helpers --------------------------------------------------------

def best_of(repeats, fn):
    """Best wall time of fn(), each run on fresh state fn sets up itself;
    fn returns the seconds it timed."""
    return min(fn() for _ in range(repeats))


def per_call_ns(fn, n, repeats):
    def run():
        t0 = time.perf_counter()
        fn(n)
        return time.perf_counter() - t0
    return best_of(repeats, run) / n * 1e9


# ---- 1. single calls -------------------------------------------------------

def single_call_costs(repeats):
    d = IovaDomain(4096, 1, ncpus=1)
    raw = d._d
    empty = lib.iova_current_cpu
    c_alloc, c_free = lib.iova_alloc, lib.iova_free
    alloc, free = d.alloc, d.free

    def loop_empty(n):
        for _ in range(n):
            empty(raw)

    def loop_raw(n):
        for _ in range(n):
            c_free(raw, c_alloc(raw, 1, LIMIT32, 1))

    def loop_wrapped(n):
        for _ in range(n):
            free(alloc(1, LIMIT32, True))

    def loop_nothing(n):
        for _ in range(n):
            pass

    # Interleaved: on a shared 2-core machine a burst of other work would
    # otherwise land on one measurement and skew the ratios between them.
    loops = {"loop": loop_nothing, "empty": loop_empty, "raw_pair": loop_raw,
             "wrapped_pair": loop_wrapped}
    best = dict.fromkeys(loops, float("inf"))
    n = 100_000
    for _ in range(max(repeats, 5) * 2):
        for name, fn in loops.items():
            best[name] = min(best[name], per_call_ns(fn, n, 1))
    return best


# ---- 2. batch churn, the C program's sequence ------------------------------

def _victim_sizes(init, rounds):
    """Per round, the sizes of the ranges it frees. They follow from the
    sequence alone (not from the pfns handed out), so they are gathered
    before the clock starts, as the C program's sizes are generated before
    its clock starts: the timed loop then holds the batch calls and the
    pfn bookkeeping only, not a second numpy gather and scatter per round
    that C does not pay."""
    sizes = list(init)
    out = []
    for v, new in rounds:
        out.append([sizes[k] for k in v])
        for k, s in zip(v, new):
            sizes[k] = s
    return out


def batch_churn_ns(pairs, repeats, fast, calls=True):
    """ns per alloc+free pair replaying the C program's rounds. calls=False
    replaces the batch calls by stand-ins returning ready results: what is
    left is the replay's own bookkeeping, which the first figure includes."""
    init, rounds = c_sequence(pairs)
    init_arr = array.array("Q", init)
    gone_sizes = _victim_sizes(init, rounds)
    if np is not None:
        rounds_b = [(np.array(v, dtype=np.intp), np.array(s, dtype=np.uint64),
                     np.array(g, dtype=np.uint64)) for (v, s), g in zip(rounds, gone_sizes)]
    else:
        rounds_b = [(v, array.array("Q", s), array.array("Q", g))
                    for (v, s), g in zip(rounds, gone_sizes)]

    def run():
        d = IovaDomain(4096, 1, ncpus=1)
        pf = d.alloc_many(init_arr, LIMIT32, True)
        if fast:
            fm, am = d.free_fast_many, d.alloc_fast_many
        else:
            fm, am = d.free_many, d.alloc_many
        if not calls:
            ready = array.array("Q", range(1, ROUND + 1))
            fm = lambda *args: None                 # noqa: E731
            am = lambda *args: ready                # noqa: E731
        if np is not None:
            live = np.frombuffer(pf, dtype=np.uint64).copy()
        else:
            live = list(pf)
        t0 = time.perf_counter()
        if np is not None:
            frombuffer, u64 = np.frombuffer, np.uint64
            if fast:
                for v, new, gone_size in rounds_b:
                    fm(live[v], gone_size, 0)
                    live[v] = frombuffer(am(new, LIMIT32, True, 0), dtype=u64)
            else:
                for v, new, _ in rounds_b:
                    fm(live[v])
                    live[v] = frombuffer(am(new, LIMIT32, True), dtype=u64)
        else:
            for v, new, gone_size in rounds_b:
                gone = array.array("Q", [live[k] for k in v])
                if fast:
                    fm(gone, gone_size, 0)
                    out = am(new, LIMIT32, True, 0)
                else:
                    fm(gone)
                    out = am(new, LIMIT32, True)
                for k, p in zip(v, out):
                    live[k] = p
        t = time.perf_counter() - t0
        assert all(live), "an allocation failed"
        if calls:
            digests.add(fnv1a(int(p) for p in live))
        return t

    digests = set()
    ns = best_of(repeats, run) / (len(rounds) * ROUND) * 1e9
    if not calls:
        return ns, None
    assert len(digests) == 1
    return ns, digests.pop()


def fnv1a(pfns):
    """live_digest() of bench_iova.c."""
    h = 0xcbf29ce484222325
    for p in pfns:
        for b in range(0, 64, 8):
            h = ((h ^ ((p >> b) & 0xFF)) * 0x100000001b3) & M64
    return "%016x" % h


# ---- 3. rcache hits ----------------------------------------------------------

def rcache_hit_ns(batch, pairs, repeats):
    rng = SplitMix(3)          # h in bench_iova.c: the same sizes
    sizes = array.array("Q", (1 + rng.below(32) for _ in range(batch)))
    rounds = max(1, pairs // batch)

    def run():
        d = IovaDomain(4096, 1, ncpus=1)
        am, fm = d.alloc_fast_many, d.free_fast_many
        fm(am(sizes, LIMIT32, True, 0), sizes, 0)     # stock the magazines
        n0 = len(d)
        t0 = time.perf_counter()
        for _ in range(rounds):
            fm(am(sizes, LIMIT32, True, 0), sizes, 0)
        t = time.perf_counter() - t0
        assert len(d) == n0, "an alloc missed the cache"
        return t

    return best_of(repeats, run) / (rounds * batch) * 1e9


# ---- the C program -----------------------------------------------------------

def stale_extension():
    """True when a csrc/iova* file is newer than the built extension: then
    Python runs older C than bench_iova does, and the ratios mislead."""
    sos = glob.glob(os.path.join(ROOT, "pyiova", "_pyiova*.so"))
    srcs = glob.glob(os.path.join(ROOT, "csrc", "iova*.[ch]"))
    if not sos or not srcs:
        return False
    return max(os.path.getmtime(p) for p in srcs) > min(os.path.getmtime(p) for p in sos)


def c_figures(pairs, repeats):
    """{case: ns per op} and {case: note} from bench_iova --csv."""
    subprocess.run(["make", "-s", "-C", HERE, "bench_iova"], check=True)
    out = subprocess.run(
        [os.path.join(HERE, "bench_iova"), "--csv", "--search", "augmented",
         "--only", "a.rounds,b.rounds,h", "--pairs", str(pairs), "--repeats", str(repeats)],
        check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    return ({r["case"]: float(r["ns_per_op"]) for r in rows},
            {r["case"]: r["note"] for r in rows})


# ---- main ------------------------------------------------------------------

def verdict(ok):
    return "met" if ok else "NOT met"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200_000,
                    help="alloc+free pairs per churn run (default 200000)")
    ap.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    ap.add_argument("--no-c", action="store_true", help="skip the C program")
    args = ap.parse_args()

    print("# Python %s, numpy %s, pairs %d, best of %d" % (
        sys.version.split()[0], np.__version__ if np is not None else "absent",
        args.pairs, args.repeats))
    print("# pyiova from %s" % os.path.dirname(pyiova.__file__))
    if stale_extension():
        print("# WARNING: csrc/ is newer than the built extension; rebuild "
              "(pip install -e . --no-build-isolation) before trusting the ratios")

    s = single_call_costs(args.repeats)
    loop = s["loop"]
    empty = s["empty"] - loop
    raw = (s["raw_pair"] - loop) / 2
    wrapped = (s["wrapped_pair"] - loop) / 2
    print("\n1. single calls (ns per call; the bare for-loop's %.0f ns taken out)" % loop)
    print("   empty cffi call (lib.iova_current_cpu)     %7.1f" % empty)
    print("   lib.iova_alloc / lib.iova_free, direct     %7.1f" % raw)
    print("   IovaDomain.alloc / .free                   %7.1f" % wrapped)
    print("   wrapper's own cost (IovaDomain - direct)   %7.1f  = %.2fx an empty call"
          % (wrapped - raw, (wrapped - raw) / empty))
    ratio = wrapped / empty
    print("   IovaDomain call / empty cffi call          %7.2fx  target <= ~2x: %s"
          % (ratio, verdict(ratio <= 2.0)))

    print("\n2. batch calls, per alloc+free pair, same operations as bench_iova")
    rows = [("tree", "a.rounds", False), ("fast", "b.rounds", True)]
    # One C run, then one run of each Python measurement, --repeats times
    # over, keeping the best of each: on a shared machine a burst of other
    # load then hits both sides alike instead of deciding a ratio alone.
    c, notes, py, hits, books = {}, {}, {}, {}, {}
    for _ in range(args.repeats):
        if not args.no_c:
            once, notes = c_figures(args.pairs, 1)
            c = {k: min(v, c.get(k, v)) for k, v in once.items()}
        for name, _, fast in rows:
            ns, digest = batch_churn_ns(args.pairs, 1, fast)
            py[name] = (min(ns, py.get(name, (ns,))[0]), digest)
            ns, _ = batch_churn_ns(args.pairs, 1, fast, calls=False)
            books[name] = min(ns, books.get(name, ns))
        for batch in HIT_BATCHES:
            hits[batch] = min(rcache_hit_ns(batch, args.pairs, 1), hits.get(batch, float("inf")))
    print("   %-6s %12s %16s %16s %10s" % ("path", "Python batch", "C batch calls", "C single calls",
                                           "Py / C"))
    for name, case, _ in rows:
        ns, digest = py[name]
        cm, cs = c.get(case + ".many"), c.get(case + ".single")
        if cm:
            r = ns / cm
            same = digest in notes.get(case + ".many", "")
            print("   %-6s %12.1f %16.1f %16.1f %9.2fx  target <= 1.2x: %s%s"
                  % (name, ns, cm, cs, r, verdict(r <= 1.2),
                     "" if same else "  (WARNING: the final live sets differ)"))
        else:
            print("   %-6s %12.1f" % (name, ns))
    print("   (of the Python figures, the replay's own numpy bookkeeping, no calls: %s)"
          % ", ".join("%s %.1f ns" % (name, books[name]) for name, _, _ in rows))

    print("\n3. rcache-hit batches (alloc_fast_many + free_fast_many)")
    for batch in HIT_BATCHES:
        ns = hits[batch]
        cm = c.get("h.many%d" % batch)
        extra = ""
        if cm:
            extra = "   C: %.1f ns (%.1fM/s), Py / C %.2fx" % (cm, 1e3 / cm, ns / cm)
        print("   batch %5d: %6.1f ns/pair = %5.1fM pairs/s  target >= 10M: %s%s"
              % (batch, ns, 1e3 / ns, verdict(1e3 / ns >= 10), extra))


if __name__ == "__main__":
    main()
