"""Operation sequences and domain set-ups shared by the benchmark files.

Every workload is a fixed, seeded sequence of operations, built once and then
replayed by each implementation, so a benchmark group compares the same work
done different ways. Building a sequence (and filling a domain to its live
set) happens in pytest-benchmark's `setup`, outside the timed body.
"""
import array
import hashlib
import random

from pyiova import IovaDomain

try:
    import numpy as np
except ImportError:        # the batch bodies fall back to plain lists
    np = None


# Live-set sizes, and the granule each one runs at. The 32-bit limit holds
# 2^(32 - shift) pfns: at 4K that is 1M pfns, room for 1k ranges of 1..64
# pages but not for 100k of them (about 45 pfns each once size alignment is
# paid). Shrinking the granule moves the 4 GiB boundary up in pfn terms and
# changes nothing else in the allocator, so every live set runs at about
# the same occupancy (a third or less) of its 32-bit space.
LIVE = {"1k": 1000, "100k": 100_000, "1M": 1_000_000}
GRANULE = {"1k": 4096, "100k": 256, "1M": 32}

BATCH = 100           # frees, then allocs, per churn round
MAX_SIZE = 64         # churn sizes are 1..MAX_SIZE pages, size-aligned
CACHED_MAX = 32       # larger sizes bypass the rcache


def limit32(granule):
    """The highest pfn below 4 GiB: the 32-bit DMA limit."""
    return (1 << (32 - (granule.bit_length() - 1))) - 1


def load_reference():
    """tests/reference.py's ReferenceDomain (conftest.py puts tests/ on the
    path), or None while it cannot be imported (work in progress on it must
    not break the benchmarks)."""
    try:
        from reference import ReferenceDomain
    except Exception:             # not only ImportError: a half-written file
        return None
    return ReferenceDomain


# ---- churn ---------------------------------------------------------------

class Churn:
    """A live set of `live` ranges and `rounds` rounds of churn: each round
    frees BATCH distinct ranges (random victims, or the oldest ones for
    "fifo") and then allocates BATCH new ones of random sizes into their
    slots. Kept in the forms the single-call and batch bodies want, so no
    body pays for a conversion the other does not."""

    def __init__(self, live_key, rounds, seed=1, kind="random"):
        self.live_key = live_key
        self.live = LIVE[live_key]
        self.granule = GRANULE[live_key]
        self.limit = limit32(self.granule)
        self.rounds = rounds
        self.pairs = rounds * BATCH
        rng = random.Random(seed)
        self.init_sizes = array.array("Q", (rng.randint(1, MAX_SIZE) for _ in range(self.live)))
        self.victims = []
        self.sizes = []
        for r in range(rounds):
            if kind == "fifo":
                # The ring-buffer order: slot i holds the i-th oldest range,
                # so the BATCH oldest sit in consecutive slots.
                start = (r * BATCH) % self.live
                v = [(start + j) % self.live for j in range(BATCH)]
            else:
                v = rng.sample(range(self.live), BATCH)
            self.victims.append(v)
            self.sizes.append([rng.randint(1, MAX_SIZE) for _ in range(BATCH)])
        self.sizes_arr = [array.array("Q", s) for s in self.sizes]
        if np is not None:
            self.victims_np = [np.array(v, dtype=np.intp) for v in self.victims]
            self.sizes_np = [np.array(s, dtype=np.uint64) for s in self.sizes]

    # -- set-up (untimed) --

    def fresh(self, cls=IovaDomain, **kw):
        """A new domain holding the initial live set, and the live set as the
        single-call bodies keep it (a list of pfns, and one of sizes)."""
        d = cls(self.granule, 1, ncpus=kw.pop("ncpus", 1), **kw)
        if hasattr(d, "alloc_many"):
            pfns = list(d.alloc_many(self.init_sizes, self.limit, True))
        else:
            alloc, limit = d.alloc, self.limit
            pfns = [alloc(s, limit, True) for s in self.init_sizes]
        assert 0 not in pfns, "the initial live set does not fit"
        return d, pfns, list(self.init_sizes)

    def fresh_batch(self, **kw):
        """The same, with the live set as a numpy array (or a list without
        numpy) for the batch bodies."""
        d, pfns, sizes = self.fresh(**kw)
        if np is not None:
            return d, np.array(pfns, dtype=np.uint64), np.array(sizes, dtype=np.uint64)
        return d, pfns, sizes

    # -- timed bodies: the tree path --

    def run_single(self, d, live, sizes=None):
        free, alloc, limit = d.free, d.alloc, self.limit
        for victims, new in zip(self.victims, self.sizes):
            for k in victims:
                free(live[k])
            for k, s in zip(victims, new):
                live[k] = alloc(s, limit, True)
        return live

    def run_batch(self, d, live, sizes=None):
        free_many, alloc_many, limit = d.free_many, d.alloc_many, self.limit
        if np is not None:
            frombuffer, u64 = np.frombuffer, np.dtype(np.uint64)
            for v, new in zip(self.victims_np, self.sizes_np):
                free_many(live[v])
                live[v] = frombuffer(alloc_many(new, limit, True), u64)
            return live
        for v, new in zip(self.victims, self.sizes_arr):
            free_many(array.array("Q", [live[k] for k in v]))
            for k, p in zip(v, alloc_many(new, limit, True)):
                live[k] = p
        return live

    # -- timed bodies: the rcache path --

    def run_fast_single(self, d, live, sizes):
        free, alloc, limit = d.free_fast, d.alloc_fast, self.limit
        for victims, new in zip(self.victims, self.sizes):
            for k in victims:
                free(live[k], sizes[k], 0)
            for k, s in zip(victims, new):
                live[k] = alloc(s, limit, True, 0)
                sizes[k] = s
        return live

    def run_fast_batch(self, d, live, sizes):
        free_many, alloc_many, limit = d.free_fast_many, d.alloc_fast_many, self.limit
        if np is not None:
            frombuffer, u64 = np.frombuffer, np.dtype(np.uint64)
            for v, new in zip(self.victims_np, self.sizes_np):
                free_many(live[v], sizes[v], 0)
                live[v] = frombuffer(alloc_many(new, limit, True, 0), u64)
                sizes[v] = new
            return live
        for v, new in zip(self.victims, self.sizes_arr):
            free_many(array.array("Q", [live[k] for k in v]),
                      array.array("Q", [sizes[k] for k in v]), 0)
            for k, p, s in zip(v, alloc_many(new, limit, True, 0), new):
                live[k] = p
                sizes[k] = s
        return live

    def bypass_count(self):
        """Frees in the whole sequence whose size bypasses the rcache: the
        initial sizes of each slot, then each new size, as the slots turn
        over. Needed to read the hit rate off the tree's node count."""
        sizes = list(self.init_sizes)
        n = 0
        for victims, new in zip(self.victims, self.sizes):
            for k in victims:
                n += sizes[k] > CACHED_MAX
            for k, s in zip(victims, new):
                sizes[k] = s
        return n


    def cacheable_allocs(self):
        """Allocs in the sequence whose size the rcache serves at all."""
        return sum(s <= CACHED_MAX for new in self.sizes for s in new)


def magazine_hits(allocs, nodes_before, nodes_after, bypass_frees):
    """Magazine hits of a fast-path churn, read off the tree.

    With no flush and no trim (the simulated clock never moves), a range
    enters the tree only when alloc_fast misses and leaves it only when
    free_fast bypasses the cache, so misses = growth + bypassing frees.
    Returns the number of hits."""
    misses = nodes_after - nodes_before + bypass_frees
    return allocs - misses


def digest(live):
    """A short fingerprint of a final live set: equal across implementations
    exactly when they handed out the same pfns."""
    return hashlib.sha1(array.array("Q", (int(p) for p in live)).tobytes()).hexdigest()[:12]


# ---- the fragmentation pathology -----------------------------------------

FRAG_N = 200_000       # one-page ranges, every other one freed afterwards
GRANULE_4K = 4096
LIMIT32_4K = limit32(GRANULE_4K)


def fragmented(search, start_pfn=1, limit=LIMIT32_4K):
    """FRAG_N one-page ranges allocated top-down under `limit`, then every
    other one freed in allocation order, which leaves the cached node near
    the top (as in the kernel measurement). Returns the domain and the pfns
    (the kept ones at even indices; pfns[0] is the topmost range)."""
    d = IovaDomain(GRANULE_4K, start_pfn, ncpus=1, search=search)
    pfns = d.alloc_many(array.array("Q", [1]) * FRAG_N, limit, True)
    assert 0 not in pfns
    d.free_many(pfns[1::2])
    return d, pfns


# ---- notes printed at the end of the run ---------------------------------

NOTES = []


def note(benchmark, text):
    """Records a line for the terminal summary (hit rates and the like); the
    same figures go into the saved JSON through extra_info."""
    NOTES.append("%s: %s" % (benchmark.name, text))
