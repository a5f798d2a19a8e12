"""The kernel's tree-allocator rules, one example each, as a kernel engineer
would write them down (README "The IOVA domain", docs/kernels.md). 6.1 shares
6.12's tree rules; the 6.1 recordings check them (tests/test_vectors.py)."""
import pytest

from pyiova import IovaDomain, IovaExhausted

TOP32 = 0xFFFFF          # highest pfn below 4 GiB with a 4K granule
TOP64 = (1 << 40) - 1    # a 52-bit-ish DMA mask's worth of pfns


@pytest.fixture
def d():
    dom = IovaDomain(4096, 1, ncpus=1)
    yield dom
    dom.check()


# ---- init_iova_domain ----------------------------------------------------

@pytest.mark.parametrize("granule,shift,dma32", [(4096, 12, 0x100000), (16384, 14, 0x40000),
                                                 (65536, 16, 0x10000)])
def test_init_derives_shift_and_exclusive_32bit_boundary(granule, shift, dma32):
    dom = IovaDomain(granule, 1)
    assert dom.shift == shift
    st = dom.state()
    assert st["dma32"] == dma32
    assert st["max32"] == dma32                  # "no 32-bit failure known"
    assert st["cached"] == st["cached32"] == 2**64 - 1   # both start at the anchor
    assert len(dom) == 0 and dom.ranges() == []
    assert dom.find(2**64 - 1) == (2**64 - 1, 2**64 - 1)  # the anchor
    dom.check()


# ---- alloc_iova ------------------------------------------------------------

def test_first_page_below_4g_is_the_top_page(d):
    assert d.alloc(1, TOP32) == 0xFFFFF


def test_top_down_packing_aligned_leaves_holes_unaligned_packs(d):
    got = [d.alloc(1, TOP32), d.alloc(1, TOP32), d.alloc(3, TOP32, True),
           d.alloc(4, TOP32, True), d.alloc(5, TOP32, True), d.alloc(5, TOP32, False)]
    assert got == [0xFFFFF, 0xFFFFE, 0xFFFF8, 0xFFFF4, 0xFFFE8, 0xFFFE3]
    assert (0xFFFF8, 0xFFFFA) in d.ranges()      # 3 pages long, though 4-aligned


@pytest.mark.parametrize("size,align", [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (8, 8),
                                        (9, 16), (33, 64), (64, 64), (100, 128)])
def test_size_alignment_is_absolute_and_node_keeps_its_size(size, align):
    # start_pfn 3 would shift a relative alignment; the kernel's is absolute
    dom = IovaDomain(4096, 3)
    dom.alloc(1, TOP32)                          # knock the top off alignment
    pfn = dom.alloc(size, TOP32, size_aligned=True)
    assert pfn % align == 0
    assert dom.find(pfn) == (pfn, pfn + size - 1)
    dom.check()


def test_next_fit_downward_from_the_cached_node(d):
    assert d.alloc(1, TOP32) == 0xFFFFF
    assert d.alloc(1, 0xFFF) == 0xFFF            # cached32 now points here
    assert d.state()["cached32"] == 0xFFF
    # plenty of room below 0xFFFFF, but the search starts below the cached node
    assert d.alloc_fast(4, TOP32) == 0xFF8


def test_retry_pass_above_the_cached_node_when_below_is_full(d):
    d.alloc(1, TOP32)
    assert d.alloc(1, 0xF) == 0xF                # cached32 drops to 0xF
    assert [d.alloc(1, TOP32) for _ in range(14)] == list(range(0xE, 0, -1))
    # nothing left below the cached node: the one pass above it finds space
    assert d.alloc(1, TOP32) == 0xFFFFE


def test_cache_pointer_chosen_by_limit_updated_by_landing_place(d):
    d.reserve(0x100000, TOP64)                   # everything above 4 GiB is taken
    pfn = d.alloc(1, TOP64)                      # 64-bit limit, lands below 4 GiB
    assert pfn == 0xFFFFF
    st = d.state()
    assert st["cached32"] == 0xFFFFF and st["cached"] == 2**64 - 1


def test_start_pfn_itself_is_allocatable(d):
    dom = IovaDomain(4096, 5)
    assert dom.alloc(4, 8) == 5


def test_limit_below_needs_exhaustion_raises_and_sets_max32(d):
    with pytest.raises(IovaExhausted):
        d.alloc(TOP32 + 1, TOP32)                # more pages than exist below 4 GiB
    assert d.state()["max32"] == TOP32 + 1


def test_max32_shortcut_fails_32bit_requests_without_searching():
    dom = IovaDomain(65536, 1)                   # 0x10000 pfns below 4 GiB
    assert dom.alloc(0x8000, 0xFFFF) == 0x8000
    assert dom.alloc(0x7FFF, 0xFFFF) == 1        # the 32-bit space is full
    with pytest.raises(IovaExhausted):
        dom.alloc(2, 0xFFFF)
    assert dom.state()["max32"] == 2
    visited = dom.stats()["nodes_visited"]
    with pytest.raises(IovaExhausted):
        dom.alloc(3, 0x7FF, size_aligned=True)   # any 32-bit limit, any alignment
    assert dom.stats()["nodes_visited"] == visited   # the shortcut did not search
    with pytest.raises(IovaExhausted):
        dom.alloc(1, 0xFFFF)                     # smaller than max32: searched, fails
    assert dom.state()["max32"] == 1
    assert dom.alloc(2, 2**40) >= 0x10000        # a 64-bit limit is not affected
    dom.free(1)                                  # a removal below 4 GiB forgets it
    assert dom.state()["max32"] == 0x10000
    assert dom.alloc(2, 0xFFFF) == 0x7FFE
    dom.check()


def test_max32_is_set_by_a_failing_64bit_request_too():
    dom = IovaDomain(4096, 2)
    big = dom.max_pfn                            # one page more than exists above start
    with pytest.raises(IovaExhausted):
        dom.alloc(big, dom.max_pfn)
    assert dom.state()["max32"] == big


def test_max32_not_reset_by_reserve_nor_by_a_free_into_the_rcache():
    dom = IovaDomain(65536, 1, ncpus=1)
    a = dom.alloc_fast(1, 0xFFFF)
    dom.alloc(0xFFFF - 1, 0xFFFF)                # fill the rest
    with pytest.raises(IovaExhausted):
        dom.alloc(1, 0xFFFF)
    dom.free_fast(a, 1)                          # into a magazine: the tree keeps it
    dom.reserve(0x20000, 0x20000)
    assert dom.state()["max32"] == 1


# ---- free_iova and the cache maintenance on removal ----------------------------

def test_free_frees_the_range_containing_the_pfn(d):
    pfn = d.alloc(8, TOP32)
    d.free(pfn + 5)
    assert d.find(pfn) is None and len(d) == 0


def test_freeing_the_topmost_node_sends_the_cache_back_to_the_anchor(d):
    a = d.alloc(1, TOP64)
    assert a == TOP64
    d.alloc(1, TOP64)
    assert d.state()["cached"] == TOP64 - 1
    d.free(a)                                    # at/above the cached node: cache moves up
    assert d.state()["cached"] == 2**64 - 1
    assert d.alloc(1, TOP64) == TOP64            # the next search starts from the top


def test_freeing_below_the_cached_node_leaves_it(d):
    pfns = [d.alloc(1, TOP32) for _ in range(4)]
    d.free(pfns[-1] + 0)                         # the lowest is the cached32 node itself
    assert d.state()["cached32"] == pfns[-2]     # successor of the freed node
    low = d.alloc(1, TOP32)
    d.free(pfns[0])                              # above cached32, below 4 GiB: moves up
    assert d.state()["cached32"] == 2**64 - 1
    assert low == pfns[-1]


def test_free_of_64bit_node_below_cached32_keeps_cached32(d):
    d.alloc(1, TOP32)
    d.alloc(1, 0xFF)                             # cached32 at 0xFF
    hi = d.alloc(1, TOP64)
    d.free(hi)
    assert d.state()["cached32"] == 0xFF


# ---- reserve_iova -----------------------------------------------------------------

def test_reserve_widens_overlapping_nodes_in_place_and_returns_the_cover(d):
    for size, aligned in [(1, 0), (1, 0), (3, 1), (4, 1), (5, 1), (5, 0)]:
        d.alloc(size, TOP32, bool(aligned))
    d.free(0xFFFFF)
    d.free(0xFFFFE)
    assert d.ranges() == [(0xFFFE3, 0xFFFE7), (0xFFFE8, 0xFFFEC), (0xFFFF4, 0xFFFF7),
                          (0xFFFF8, 0xFFFFA)]
    d.alloc(4, 0xFFFF3, True)                    # [FFFF0, FFFF3]
    before = d.state()
    assert d.reserve(0xFFFE0, 0xFFFF8) == (0xFFFF8, 0xFFFFA)   # existing node covers the rest
    assert d.ranges() == [(0xFFFE0, 0xFFFE7), (0xFFFE8, 0xFFFEC), (0xFFFED, 0xFFFF3),
                          (0xFFFF4, 0xFFFF7), (0xFFFF8, 0xFFFFA)]
    after = d.state()
    # no cache pointer moved: cached32 is still the [FFFF0, FFFF3] node, whose
    # lo the reservation lowered in place; max32 is untouched
    assert after["cached32"] == 0xFFFED and before["cached32"] == 0xFFFF0
    assert after["cached"] == before["cached"] and after["max32"] == before["max32"]


def test_reserve_creates_a_node_for_the_part_above_the_last_overlap(d):
    d.reserve(0x100, 0x1FF)
    assert d.reserve(0x180, 0x2FF) == (0x200, 0x2FF)
    assert d.ranges() == [(0x100, 0x1FF), (0x200, 0x2FF)]
    assert d.reserve(0x150, 0x160) == (0x100, 0x1FF)           # fully inside: no new node
    assert len(d) == 2


def test_reserved_space_is_never_allocated(d):
    d.reserve(0x80000, TOP32)
    assert d.alloc(1, TOP32) == 0x7FFFF


# ---- Linux 4.10 (the seed's kernel) ---------------------------------------------

@pytest.fixture
def old():
    dom = IovaDomain(4096, 1, ncpus=1, kernel="4.10", dma_32bit_pfn=TOP32)
    yield dom
    dom.check()


def test_410_limit_override_by_the_cached_node(old):
    assert old.alloc(1, TOP32) == TOP32          # limit == dma_32bit_pfn sets the cache
    assert old.state() == {"cached32": TOP32, "dma32": TOP32}
    # a smaller limit is replaced by the cached node's lo - 1
    assert old.alloc(1, 0xFFF) == 0xFFFFE


def test_410_cache_set_only_by_the_exact_32bit_limit(old):
    old.alloc(1, 0xFFF)
    assert old.state()["cached32"] is None
    old.alloc(1, TOP32)
    assert old.state()["cached32"] == TOP32


def test_410_start_pfn_is_off_by_one():
    dom = IovaDomain(4096, 5, kernel="4.10")
    with pytest.raises(IovaExhausted):
        dom.alloc(4, 8)
    assert dom.alloc(4, 9) == 6


def test_410_no_retry_above_the_cached_node(old):
    old.alloc(1, TOP32)
    old.free(TOP32)                              # the cache empties (successor is none)
    assert old.state()["cached32"] is None
    lows = [old.alloc(1, TOP32) for _ in range(3)]
    assert lows == [TOP32, TOP32 - 1, TOP32 - 2]
    d2 = IovaDomain(4096, 1, kernel="4.10", dma_32bit_pfn=0xF)
    assert d2.alloc(1, 0xF) == 0xF
    for _ in range(13):
        d2.alloc(1, 0xF)                         # fills 0x2..0xE (0x1 is the start_pfn)
    with pytest.raises(IovaExhausted):
        d2.alloc(1, 0xF)


def test_410_removal_moves_cache_to_successor_below_boundary_or_empties(old):
    a = old.alloc(1, TOP32)
    b = old.alloc(1, TOP32)
    c = old.alloc(1, TOP32)
    assert old.state()["cached32"] == c
    old.free(c)                                  # successor b starts below the boundary
    assert old.state()["cached32"] == b
    old.free(b)                                  # successor a starts AT the (inclusive)
    assert old.state()["cached32"] is None       # boundary: strictly-below fails
    assert a == TOP32


def test_410_has_no_anchor_and_no_max32(old):
    assert old.find(2**64 - 1) is None
    assert "max32" not in old.state()


def test_state_names_the_anchor():
    """The 6.12 cached nodes start at the anchor, whose pfn_lo is the
    kernel's IOVA_ANCHOR (~0UL): state() shows it as IOVA_ANCHOR, an int
    equal to 2**64-1, and the real pfn once a range is cached."""
    import json
    from pyiova import IOVA_ANCHOR
    d = IovaDomain(4096, 1)
    st = d.state()
    assert st["cached"] is IOVA_ANCHOR and st["cached32"] is IOVA_ANCHOR
    assert st["cached"] == 2**64 - 1 and hex(st["cached"]) == "0xffffffffffffffff"
    assert repr(st) == ("{'cached': IOVA_ANCHOR, 'cached32': IOVA_ANCHOR, 'max32': 1048576, "
                        "'dma32': 1048576}")
    assert json.loads(json.dumps(st))["cached"] == 2**64 - 1
    pfn = d.alloc(1, 0xFFFFF)
    st = d.state()
    assert st["cached32"] == pfn and type(st["cached32"]) is int
    assert st["cached"] is IOVA_ANCHOR
