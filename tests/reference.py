"""A plain-Python reference model of the Linux IOVA allocator.

This is the yardstick the C core (``pyiova.IovaDomain``) is differentially
tested against, so it is written for clarity rather than speed: the ranges
live in a Python list kept in address order, and every walk is a simple loop
over that list.  It follows the kernel's rules as the project states them
(docs/allocator-rules.md, docs/kernels.md): mainline 6.12, Linux 6.1 (6.12's tree with a
fixed depot of 32 magazines) and Linux 4.10.  It is checked line for line
against the answers recorded from the kernel's own iova.c
(``tests/test_reference_vectors.py``).

All pfn arithmetic that the kernel does in unsigned 64-bit registers is
reduced modulo 2**64 here with ``& _U64`` so that wrap-around quirks are
reproduced rather than silently "fixed" by Python's unbounded integers.
"""

import bisect
import operator

from pyiova.errors import (IovaCorrupted, IovaCpuError, IovaError, IovaExhausted,
                          IovaInvalidFree, IovaNotFound, IovaTypeError, IovaValueError)

_Corrupted = IovaCorrupted

__all__ = ["ReferenceDomain"]

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

# The rcache has six size classes ("bins"): sizes 1, 2, 3-4, 5-8, 9-16 and
# 17-32 pages.  Anything larger bypasses the cache.
_NUM_BINS = 6
# How long a depot-trim work item waits after being armed (simulated ms).
_TRIM_DELAY_MS = 100
# Domain parameter bounds shared with the C core.  The kernel itself only
# requires a power-of-two granule no larger than PAGE_SIZE (64K at most).
_MAX_GRANULE = 65536
_MAX_CPUS = 1024


def _order_base_2(n):
    """ceil(log2(n)) for n >= 1: the rcache bin a size belongs to."""
    return (n - 1).bit_length()


def _roundup_pow_of_two(n):
    return 1 << (n - 1).bit_length()


class _Node:
    """One allocated (or reserved) range [lo, hi], inclusive.

    Cache pointers hold references to these objects rather than pfn values:
    reserve() may lower ``lo`` of an existing node in place, and the kernel's
    cache pointers follow the node, not the old address.
    """

    __slots__ = ("lo", "hi", "in_cache")

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi
        # True while a pfn of this node sits in an rcache magazine or in the
        # depot.  Such a node is still in the tree (the kernel only hands it
        # back to the tree when the magazine is flushed), but freeing it
        # again would be a double free.
        self.in_cache = False

    def __repr__(self):
        return "_Node(%#x, %#x)" % (self.lo, self.hi)


class ReferenceDomain:
    """Reference model of one ``iova_domain`` plus its rcaches.

    ``kernel`` selects the rules: "6.12" (mainline), "6.1" (6.12's tree and
    magazines, 4.10's fixed depot) or "4.10" (the seed).
    """

    def __init__(self, granule=4096, start_pfn=1, *, ncpus=1, kernel="6.12",
                 dma_32bit_pfn=None):
        granule = self._int(granule, "granule")
        if granule < 2 or granule & (granule - 1) or granule > _MAX_GRANULE:
            raise IovaValueError("granule %r is not a power of two in 2..%d"
                                 % (granule, _MAX_GRANULE))
        self._shift = granule.bit_length() - 1
        self._granule = granule
        # The kernel refuses byte addresses that do not fit in 64 bits.
        self._max_pfn = _U64 >> self._shift
        self._start_pfn = self._pfn(start_pfn, "start_pfn")
        ncpus = self._int(ncpus, "ncpus")
        if not 1 <= ncpus <= _MAX_CPUS:
            raise IovaValueError("ncpus %d not in 1..%d" % (ncpus, _MAX_CPUS))
        self._ncpus = ncpus
        if kernel not in ("6.12", "6.1", "4.10"):
            raise IovaValueError('kernel must be "6.12", "6.1" or "4.10"')
        self._kernel = kernel
        # 6.1 shares everything with 6.12 but the depot, so two questions
        # decide every rule below: whose tree (and magazines), whose depot.
        self._mainline = kernel != "4.10"       # the mainline tree and rcache pop
        self._trimmed_depot = kernel == "6.12"  # unbounded, trimmed by work

        # Parallel lists in address order: node objects, and their ``lo``
        # values so that bisect can search them.  reserve() is the only
        # operation that changes a node's lo, and it updates both.
        self._nodes = []
        self._los = []

        if self._mainline:
            if dma_32bit_pfn is not None:
                raise IovaValueError(
                    "dma_32bit_pfn is derived from the granule under %s" % kernel)
            # Exclusive: the first pfn at or above 4 GiB.
            self._dma32 = 1 << (32 - self._shift)
            # max32_alloc_size == dma_32bit_pfn means "no 32-bit failure
            # remembered".
            self._max32 = self._dma32
            # The anchor [~0, ~0] sits above everything, so a successor
            # always exists and the cache pointers are never empty.
            self._anchor = _Node(_U64, _U64)
            self._insert(self._anchor)
            self._cached = self._anchor
            self._cached32 = self._anchor
            self._mag_size = 127
            # 6.1: a fixed array of 32 full magazines per bin; 6.12 a list.
            self._depot_max = None if self._trimmed_depot else 32
        else:
            if dma_32bit_pfn is None:
                dma_32bit_pfn = _U32 >> self._shift
            # Inclusive under 4.10: the highest pfn of the "32-bit" space.
            self._dma32 = self._pfn(dma_32bit_pfn, "dma_32bit_pfn")
            if self._dma32 == 0:
                raise IovaValueError("dma_32bit_pfn must be at least 1")
            self._anchor = None
            self._cached32 = None       # may be empty under 4.10
            self._mag_size = 128
            self._depot_max = 32        # fixed-size depot array per bin

        # rcache: per bin, per CPU, the "loaded" and "prev" magazines (lists
        # used as stacks, index 0 = oldest), and per bin a LIFO depot of
        # full magazines.
        self._loaded = [[[] for _ in range(ncpus)] for _ in range(_NUM_BINS)]
        self._prev = [[[] for _ in range(ncpus)] for _ in range(_NUM_BINS)]
        self._depot = [[] for _ in range(_NUM_BINS)]
        # 6.12 depot-trim work: per bin, the simulated time it is due at, or
        # None when not pending.  Time only moves in advance().
        self._work_due = [None] * _NUM_BINS
        self._clock = 0

    # ------------------------------------------------------------------
    # argument checking

    @staticmethod
    def _int(value, what):
        # bool is an int subclass, but passing True as a pfn is a bug.
        if isinstance(value, bool):
            raise IovaTypeError("%s must be an integer, not bool" % what)
        try:
            return operator.index(value)
        except TypeError:
            raise IovaTypeError("%s must be an integer, not %s"
                                % (what, type(value).__name__)) from None

    def _pfn(self, value, what):
        value = self._int(value, what)
        if value < 0 or value > self._max_pfn:
            raise IovaValueError("%s %#x out of range 0..%#x"
                                 % (what, value, self._max_pfn))
        return value

    def _size(self, value):
        value = self._pfn(value, "size")
        if value < 1:
            raise IovaValueError("size must be >= 1")
        return value

    def _limit(self, value):
        value = self._pfn(value, "limit_pfn")
        if value < self._start_pfn:
            raise IovaValueError("limit_pfn %#x below start_pfn %#x"
                                 % (value, self._start_pfn))
        return value

    def _cpu(self, value):
        value = self._int(value, "cpu")
        if not 0 <= value < self._ncpus:
            raise IovaCpuError("cpu %d not in 0..%d" % (value, self._ncpus - 1))
        return value

    # ------------------------------------------------------------------
    # the ordered set of nodes

    def _index(self, node):
        """Position of a node object in the list (los are unique)."""
        i = bisect.bisect_left(self._los, node.lo)
        _require(i < len(self._nodes) and self._nodes[i] is node,
                 "node %r is not in the tree", node)
        return i

    def _find_index(self, pfn):
        """Index of the node containing pfn, or None."""
        i = bisect.bisect_right(self._los, pfn) - 1
        if i >= 0 and self._nodes[i].hi >= pfn:
            return i
        return None

    def _find_node(self, pfn):
        i = self._find_index(pfn)
        return None if i is None else self._nodes[i]

    def _insert(self, node):
        i = bisect.bisect_left(self._los, node.lo)
        self._nodes.insert(i, node)
        self._los.insert(i, node.lo)

    def _successor(self, i):
        return self._nodes[i + 1] if i + 1 < len(self._nodes) else None

    def _remove(self, node):
        """Take a node out of the tree, first moving the cache pointers the
        way the kernel does (the rule looks at the node's successor, so it
        must run while the node is still linked)."""
        i = self._index(node)
        succ = self._successor(i)
        if self._mainline:
            # 6.12 (docs/allocator-rules.md, "Freeing").  The successor
            # always exists: the anchor is above every removable node.
            dma32 = self._dma32
            c32 = self._cached32
            if node is c32 or (node.hi < dma32 and node.lo >= c32.lo):
                self._cached32 = succ
            # Any removal that frees space below 4 GiB may make a remembered
            # 32-bit failure succeed, so forget it.
            if node.lo < dma32:
                self._max32 = dma32
            if node.lo >= self._cached.lo:
                self._cached = succ
        else:
            # 4.10 (docs/kernels.md, "The tree: 4.10"): the cache moves to
            # the successor only if that starts below the (inclusive) 32-bit
            # boundary pfn, else empties.
            # Note the comparison is "<", so a successor starting exactly at
            # dma_32bit_pfn empties the cache.
            c32 = self._cached32
            if c32 is not None and node.lo >= c32.lo:
                if succ is not None and succ.lo < self._dma32:
                    self._cached32 = succ
                else:
                    self._cached32 = None
        del self._nodes[i]
        del self._los[i]

    # ------------------------------------------------------------------
    # tree allocation

    def alloc(self, size, limit_pfn, size_aligned=False):
        """alloc_iova(): returns the new range's pfn_lo or raises
        IovaExhausted (state changes of a failed attempt still apply)."""
        size = self._size(size)
        limit_pfn = self._limit(limit_pfn)
        node = self._alloc_tree(size, limit_pfn, bool(size_aligned))
        if node is None:
            raise IovaExhausted("no %d-page range below %#x" % (size, limit_pfn))
        return node.lo

    def _alloc_tree(self, size, limit_pfn, aligned):
        if self._mainline:
            return self._alloc_612(size, limit_pfn, aligned)
        return self._alloc_410(size, limit_pfn, aligned)

    def _alloc_612(self, size, limit_pfn, aligned):
        # Mainline works with an exclusive bound.
        top = (limit_pfn + 1) & _U64
        if aligned:
            # Alignment is absolute: the start pfn is a multiple of the
            # size rounded up to a power of two.  The node itself stays
            # exactly `size` long.
            mask = ~(_roundup_pow_of_two(size) - 1) & _U64
        else:
            mask = _U64
        is32 = top <= self._dma32
        # Known-to-fail shortcut: a 32-bit request at least as big as one
        # that already failed fails at once, without touching anything.  It
        # ignores alignment and the exact limit.
        if is32 and size >= self._max32:
            return None
        # The pointer used is chosen by the request's limit ...
        start = self._cached32 if is32 else self._cached
        retry_floor = start.hi
        # Pass 1: next-fit downwards from the cached node.
        lo = self._walk_down(self._index(start), top, self._start_pfn,
                             size, mask)
        if lo is None and retry_floor < top:
            # Pass 2 ("wrap once"): the space between the cached node and
            # the limit, only used when everything below the cache is full.
            lo = self._walk_down(self._first_reaching(top), top,
                                 retry_floor + 1, size, mask)
        if lo is None:
            # Set on any failure, even for a 64-bit limit or an aligned
            # request; only removals below 4 GiB reset it.
            self._max32 = size
            return None
        node = _Node(lo, lo + size - 1)
        self._insert(node)
        # ... but the pointer updated is chosen by where the node landed.
        if node.hi < self._dma32:
            self._cached32 = node
        else:
            self._cached = node
        return node

    def _first_reaching(self, top):
        """Where pass 2 starts: the anchor for a 64-bit limit, else the
        lowest node whose hi reaches the exclusive limit."""
        if top > self._dma32:
            return len(self._nodes) - 1
        for i, node in enumerate(self._nodes):
            if node.hi >= top:
                return i
        raise AssertionError("the anchor always reaches the limit")

    def _walk_down(self, i, top, floor, size, mask):
        """Look for the highest fitting start in the gaps below node i,
        moving down one node at a time.  `top` is exclusive; `floor` is the
        lowest start pfn allowed.  Returns the start pfn or None."""
        nodes = self._nodes
        high = top
        while True:
            high = min(high, nodes[i].lo)
            # May wrap when high < size; the test after the loop catches it.
            cand = ((high - size) & _U64) & mask
            if i == 0:
                break
            below = nodes[i - 1]
            # Stop as soon as the candidate clears the node below (found)
            # or has dropped below the floor (the pass fails).
            if cand > below.hi or cand < floor:
                break
            i -= 1
        if high < size or cand < floor:
            return None
        return cand

    def _alloc_410(self, size, limit_pfn, aligned):
        nodes = self._nodes
        saved_limit = limit_pfn
        limit = limit_pfn
        c32 = self._cached32
        if limit > self._dma32 or c32 is None:
            i = len(nodes) - 1
        else:
            # The cached node overrides the caller's limit, even a lower
            # one: the search starts just below it.  Unsigned arithmetic, so
            # a cached node widened down to pfn 0 by reserve wraps (kernel
            # behaviour, kept as is).
            limit = (c32.lo - 1) & _U64
            i = self._index(c32) - 1
        pad = 0
        while i >= 0:
            cur = nodes[i]
            if limit < cur.lo:
                pass                    # wholly above the window: skip it
            else:
                if limit >= cur.hi:
                    # Wholly below the limit: try the gap just above it.
                    pad = self._pad_410(size, limit) if aligned else 0
                    if ((cur.hi + size + pad) & _U64) <= limit:
                        break
                # The window drops below this node.  A node at pfn 0 leaves
                # no room below it; the kernel clamps rather than wrapping.
                limit = cur.lo - 1 if cur.lo else 0
            i -= 1
        if i < 0:
            pad = self._pad_410(size, limit) if aligned else 0
            # Off by one in 4.10: the window has to leave start_pfn itself
            # free, so start_pfn is never handed out.
            if ((self._start_pfn + size + pad) & _U64) > limit:
                return None
        lo = (limit - (size + pad) + 1) & _U64
        node = _Node(lo, (lo + size - 1) & _U64)
        self._insert(node)
        # 4.10 only remembers allocations made with exactly the 32-bit
        # boundary as their limit.
        if saved_limit == self._dma32:
            self._cached32 = node
        return node

    @staticmethod
    def _pad_410(size, limit):
        # 4.10 computes the alignment padding in 32-bit unsigned ints: the
        # distance from the top-of-window start down to an aligned one.
        size32 = size & _U32
        if size32 == 0:
            return 0
        return ((limit + 1 - size32) & _U32) & (_roundup_pow_of_two(size32) - 1)

    # ------------------------------------------------------------------
    # other tree operations

    def find(self, pfn):
        """find_iova(): the (lo, hi) of the range containing pfn, or None.

        A lookup changes nothing, so any 64-bit pfn is accepted, as in the
        kernel; under 6.12 find(2**64 - 1) returns the anchor."""
        pfn = self._int(pfn, "pfn")
        if not 0 <= pfn <= _U64:
            raise IovaValueError("pfn %#x is not a 64-bit value" % pfn)
        node = self._find_node(pfn)
        if node is None:
            return None
        return (node.lo, node.hi)

    def free(self, pfn):
        """free_iova(): free the range containing pfn."""
        pfn = self._pfn(pfn, "pfn")
        node = self._find_node(pfn)
        if node is None:
            raise IovaNotFound("no range contains pfn %#x" % pfn)
        if node is self._anchor:
            raise IovaInvalidFree("the anchor cannot be freed")
        if node.in_cache:
            raise IovaInvalidFree("range [%#x, %#x] already sits in an rcache "
                                  "magazine (double free)" % (node.lo, node.hi))
        self._remove(node)

    def reserve(self, lo, hi):
        """reserve_iova(): make sure [lo, hi] is covered, widening and
        reusing overlapping nodes; returns the (lo, hi) of the node the
        kernel returns.  Cache pointers and max32 are not touched."""
        lo = self._pfn(lo, "lo")
        hi = self._pfn(hi, "hi")
        if lo > hi:
            raise IovaValueError("reserve lo %#x > hi %#x" % (lo, hi))
        seen_overlap = False
        for i, node in enumerate(self._nodes):
            if lo <= node.hi and hi >= node.lo:
                if lo < node.lo:
                    # Widen the existing node downwards in place.  Nothing
                    # lies in between: any lower node overlapping [lo, hi]
                    # was met first and moved lo above itself.
                    node.lo = lo
                    self._los[i] = lo
                if hi > node.hi:
                    lo = node.hi + 1    # the part above still needs covering
                if lo >= node.lo and hi <= node.hi:
                    return (node.lo, node.hi)
                seen_overlap = True
            elif seen_overlap:
                break
        node = _Node(lo, hi)
        self._insert(node)
        return (node.lo, node.hi)

    # ---- batches: plain loops over the single calls ----

    def alloc_many(self, sizes, limit_pfn, size_aligned=False):
        """One alloc per size; 0 where it failed. Bad sizes are refused
        before anything is done, as the C core does."""
        sizes = list(sizes)
        self._limit(limit_pfn)
        for s in sizes:
            self._size(s)
        out = []
        for s in sizes:
            try:
                out.append(self.alloc(s, limit_pfn, size_aligned))
            except IovaExhausted:
                out.append(0)
        return out

    def free_many(self, pfns):
        """free per pfn; stops at the first failure, which is raised with
        `done` set to the number freed before it."""
        for done, pfn in enumerate(list(pfns)):
            try:
                self.free(pfn)
            except IovaError as exc:
                exc.done = exc.index = done
                raise

    def ranges(self):
        """Every range in address order, the 6.12 anchor excluded."""
        return [(n.lo, n.hi) for n in self._nodes if n is not self._anchor]

    def __len__(self):
        return len(self._nodes) - (1 if self._anchor is not None else 0)

    @property
    def used_pfns(self):
        return sum(n.hi - n.lo + 1 for n in self._nodes
                   if n is not self._anchor)

    def state(self):
        if self._mainline:
            return {"cached": self._cached.lo, "cached32": self._cached32.lo,
                    "max32": self._max32, "dma32": self._dma32}
        return {"cached32": None if self._cached32 is None
                else self._cached32.lo,
                "dma32": self._dma32}

    # ------------------------------------------------------------------
    # rcache

    def alloc_fast(self, size, limit_pfn, flush_rcache=True, cpu=0):
        """alloc_iova_fast() on `cpu`; raises IovaExhausted where the kernel
        returns 0."""
        size = self._size(size)
        limit_pfn = self._limit(limit_pfn)
        cpu = self._cpu(cpu)
        if self._mainline:
            pfn = self._alloc_fast_612(size, limit_pfn, bool(flush_rcache), cpu)
        else:
            pfn = self._alloc_fast_410(size, limit_pfn, cpu)
        # 0 is the fast path's failure value, so a range that really starts
        # at pfn 0 (only possible with start_pfn 0) reads as a failure too.
        if pfn == 0:
            raise IovaExhausted("no %d-page range below %#x"
                                % (size, limit_pfn))
        return pfn

    def _alloc_fast_612(self, size, limit_pfn, flush, cpu):
        # Mainline rounds small sizes up to a power of two here so that the
        # range fits its rcache bin exactly; 32 and above are left alone.
        if size < 32:
            size = _roundup_pow_of_two(size)
        k = _order_base_2(size)
        if k < _NUM_BINS:
            # Accept a cached pfn only if the whole range fits under the
            # limit.  Unsigned: if limit+1 < size this wraps to a huge value
            # and any cached pfn of the bin is accepted (kernel quirk).
            pfn = self._rcache_get_612(k, cpu, (limit_pfn + 1 - size) & _U64)
            if pfn:
                return pfn
        while True:
            node = self._alloc_612(size, limit_pfn, True)
            if node is not None:
                return node.lo
            if not flush:
                return 0
            flush = False
            for c in range(self._ncpus):
                self._flush_cpu(c)
            self._flush_depot()

    def _magazine_to_pop(self, k, cpu):
        """The magazine a pop searches (both kernels): loaded if it holds
        anything, else prev swapped in, else the newest depot magazine (the
        empty loaded one is dropped, even if the pop then misses); an empty
        list when all are empty."""
        loaded = self._loaded[k][cpu]
        if not loaded:
            prev = self._prev[k][cpu]
            if prev:
                self._loaded[k][cpu], self._prev[k][cpu] = prev, loaded
                loaded = prev
            elif self._depot[k]:
                loaded = self._depot[k].pop()
                self._loaded[k][cpu] = loaded
        return loaded

    def _rcache_get_612(self, k, cpu, lim):
        loaded = self._magazine_to_pop(k, cpu)
        if not loaded:
            return 0
        # Only the loaded magazine is searched: newest to oldest, for the
        # first pfn low enough; the newest pfn then fills its slot.
        for i in range(len(loaded) - 1, -1, -1):
            if loaded[i] <= lim:
                pfn = loaded[i]
                loaded[i] = loaded[-1]
                loaded.pop()
                self._uncache(pfn)
                return pfn
        return 0

    def _alloc_fast_410(self, size, limit_pfn, cpu):
        # 4.10 neither rounds the size nor honours a flush flag: after a
        # tree failure it always flushes every CPU's magazines (never the
        # depot) and retries once.
        k = _order_base_2(size)
        if k < _NUM_BINS:
            pfn = self._rcache_get_410(k, cpu, limit_pfn)
            if pfn:
                return pfn
        node = self._alloc_410(size, limit_pfn, True)
        if node is None:
            for c in range(self._ncpus):
                self._flush_cpu(c)
            node = self._alloc_410(size, limit_pfn, True)
        return 0 if node is None else node.lo

    def _rcache_get_410(self, k, cpu, limit_pfn):
        loaded = self._magazine_to_pop(k, cpu)
        if not loaded:
            return 0
        # 4.10 looks at the newest pfn only, compares it with the caller's
        # inclusive limit using ">=" and ignores the size entirely.
        if loaded[-1] >= limit_pfn:
            return 0
        pfn = loaded.pop()
        self._uncache(pfn)
        return pfn

    def _uncache(self, pfn):
        node = self._find_node(pfn)
        _require(node is not None and node.in_cache,
                 "popped pfn %#x was not a cached range", pfn)
        node.in_cache = False

    def free_fast(self, pfn, size, cpu=0):
        """free_iova_fast() on `cpu`: cache the range in its size class,
        or free it to the tree if it is too big to cache."""
        pfn = self._pfn(pfn, "pfn")
        size = self._size(size)
        cpu = self._cpu(cpu)
        node = self._find_node(pfn)
        if node is None:
            raise IovaNotFound("no range contains pfn %#x" % pfn)
        # Everything below would corrupt the kernel's state, so it is
        # refused with the domain left unchanged.
        if node is self._anchor:
            raise IovaInvalidFree("the anchor cannot be freed")
        if node.lo != pfn:
            raise IovaInvalidFree("pfn %#x is inside [%#x, %#x], not its start"
                                  % (pfn, node.lo, node.hi))
        if node.in_cache:
            raise IovaInvalidFree("range [%#x, %#x] already sits in an rcache "
                                  "magazine (double free)" % (node.lo, node.hi))
        k = _order_base_2(size)
        node_k = _order_base_2(node.hi - node.lo + 1)
        if min(k, _NUM_BINS) != min(node_k, _NUM_BINS):
            raise IovaInvalidFree("size %d is not the size class of [%#x, %#x]"
                                  % (size, node.lo, node.hi))
        if k >= _NUM_BINS:
            self._remove(node)          # too big to cache: plain free
            return
        if self._trimmed_depot:
            self._rcache_insert_612(k, cpu, pfn)
        else:
            self._rcache_insert_fixed_depot(k, cpu, pfn)
        node.in_cache = True

    def _rcache_insert_612(self, k, cpu, pfn):
        if len(self._loaded[k][cpu]) >= self._mag_size:
            if len(self._prev[k][cpu]) < self._mag_size:
                self._loaded[k][cpu], self._prev[k][cpu] = (
                    self._prev[k][cpu], self._loaded[k][cpu])
            else:
                # Both full: the loaded magazine goes to the depot and the
                # trim work is armed (a no-op if it is already pending).
                self._depot[k].append(self._loaded[k][cpu])
                if self._work_due[k] is None:
                    self._work_due[k] = self._clock + _TRIM_DELAY_MS
                self._loaded[k][cpu] = []
        self._loaded[k][cpu].append(pfn)

    def _rcache_insert_fixed_depot(self, k, cpu, pfn):
        """4.10 and 6.1: a depot of at most 32 magazines, no trim work."""
        overflow = None
        if len(self._loaded[k][cpu]) >= self._mag_size:
            if len(self._prev[k][cpu]) < self._mag_size:
                self._loaded[k][cpu], self._prev[k][cpu] = (
                    self._prev[k][cpu], self._loaded[k][cpu])
            else:
                if len(self._depot[k]) < self._depot_max:
                    self._depot[k].append(self._loaded[k][cpu])
                else:
                    overflow = self._loaded[k][cpu]
                self._loaded[k][cpu] = []
        self._loaded[k][cpu].append(pfn)
        if overflow is not None:
            # Depot full: the displaced magazine's pfns go straight back to
            # the tree, after the new pfn has been cached.
            self._free_magazine(overflow)

    def _free_magazine(self, mag):
        """Give every pfn of a magazine back to the tree, oldest first; the
        order matters because each removal moves the cache pointers."""
        for pfn in mag:
            node = self._find_node(pfn)
            if node is None:        # the kernel warns and skips
                continue
            node.in_cache = False
            self._remove(node)
        del mag[:]

    def _flush_cpu(self, cpu):
        for k in range(_NUM_BINS):
            self._free_magazine(self._loaded[k][cpu])
            self._free_magazine(self._prev[k][cpu])

    def _flush_depot(self):
        for k in range(_NUM_BINS):
            depot = self._depot[k]
            if self._kernel == "6.1":
                # 6.1 walks its array from index 0: oldest magazine first
                for mag in depot:
                    self._free_magazine(mag)
                del depot[:]
            while depot:
                self._free_magazine(depot.pop())    # newest magazine first

    def flush_cpu(self, cpu):
        """free_cpu_cached_iovas(cpu): bins ascending, loaded then prev."""
        self._flush_cpu(self._cpu(cpu))

    def flush_depot(self):
        """free_global_cached_iovas(): every bin's depot, newest magazine
        first (6.1: oldest first).  4.10 has no such function; pyiova gives
        it 6.12's meaning there."""
        self._flush_depot()

    def flush_rcaches(self):
        """Every CPU's magazines (ascending), then the depot."""
        for c in range(self._ncpus):
            self._flush_cpu(c)
        self._flush_depot()

    def _trim(self, k):
        """One run of bin k's depot-trim work (6.12): give back the newest
        depot magazine if the depot holds more than one per CPU, and re-arm
        only if something was trimmed."""
        depot = self._depot[k]
        if len(depot) > self._ncpus:
            self._free_magazine(depot.pop())
            self._work_due[k] = self._clock + _TRIM_DELAY_MS

    def run_pending_work(self):
        """Run, once, every trim work item pending now (bins ascending);
        items that re-arm themselves do not run again in this call."""
        pending = [k for k in range(_NUM_BINS) if self._work_due[k] is not None]
        for k in pending:
            self._work_due[k] = None
            self._trim(k)
        return len(pending)

    def advance(self, ms):
        """Move the simulated clock forward by `ms`, running each trim item
        as it comes due, in (due time, bin) order."""
        ms = self._int(ms, "ms")
        if ms < 0:
            raise IovaValueError("time cannot go backwards")
        end = self._clock + ms
        ran = 0
        while True:
            due = [(t, k) for k, t in enumerate(self._work_due)
                   if t is not None and t <= end]
            if not due:
                break
            t, k = min(due)
            self._clock = t
            self._work_due[k] = None
            self._trim(k)
            ran += 1
        self._clock = end
        return ran

    def rcache_stats(self):
        return [{"bin": k,
                 "loaded": [len(m) for m in self._loaded[k]],
                 "prev": [len(m) for m in self._prev[k]],
                 "depot": len(self._depot[k])}
                for k in range(_NUM_BINS)]

    def _all_magazines(self):
        for k in range(_NUM_BINS):
            yield from self._loaded[k]
            yield from self._prev[k]
            yield from self._depot[k]

    def cached_pfns(self):
        return {pfn for mag in self._all_magazines() for pfn in mag}

    # ------------------------------------------------------------------

    def check(self):
        """Raise IovaCorrupted (an AssertionError) if one of the model's own
        invariants does not hold.  Written without ``assert`` statements so
        it still checks under ``python -O``."""
        nodes = self._nodes
        _require(self._los == [n.lo for n in nodes], "lo index out of sync")
        for n in nodes:
            _require(n.lo <= n.hi, "range %r has lo > hi", n)
        for a, b in zip(nodes, nodes[1:]):
            _require(a.hi < b.lo, "%r and %r overlap or are out of order", a, b)
        ids = {id(n) for n in nodes}
        if self._mainline:
            _require(nodes and nodes[-1] is self._anchor
                     and self._anchor.lo == self._anchor.hi == _U64,
                     "the anchor is not the last node")
            _require(id(self._cached) in ids and id(self._cached32) in ids,
                     "a cache pointer references a node not in the tree")
        elif self._cached32 is not None:
            _require(id(self._cached32) in ids,
                     "cached32 references a node not in the tree")
        for k in range(_NUM_BINS):
            for m in self._loaded[k] + self._prev[k]:
                _require(len(m) <= self._mag_size, "overfull magazine")
            for m in self._depot[k]:
                _require(len(m) == self._mag_size,
                         "a depot magazine is not full")
            if not self._trimmed_depot:
                _require(len(self._depot[k]) <= self._depot_max,
                         "%s depot over its 32 slots", self._kernel)
                _require(self._work_due[k] is None,
                         "trim work armed in %s, which has none", self._kernel)
        seen = set()
        for mag in self._all_magazines():
            for pfn in mag:
                _require(pfn not in seen, "pfn %#x cached twice", pfn)
                seen.add(pfn)
                node = self._find_node(pfn)
                # A cached pfn was the start of its range when it was
                # cached; only a reserve that widened the range since can
                # have moved the range's lo below it.
                _require(node is not None and node.in_cache
                         and node is not self._anchor,
                         "cached pfn %#x is not in a cached range", pfn)
        _require(sum(n.in_cache for n in nodes) == len(seen),
                 "a range holds two cached pfns, or a stale in_cache flag")


def _require(condition, message, *args):
    """Raise _Corrupted(message % args) unless condition holds; the message
    is only formatted on failure (check() runs over every node)."""
    if not condition:
        raise _Corrupted(message % args if args else message)
