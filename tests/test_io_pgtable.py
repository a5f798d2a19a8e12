"""The C page table (csrc/io_pgtable.c) through pyiova's IoPgtable wrapper.

The shape follows io-pgtable-arm's boot-time selftest (empty table, one
page of each size, overlap refused, partial unmap of a block, full unmap,
remap), then adds what the kernel never tests: bad arguments leave the
table intact, allocation failures are rolled back, and a hypothesis state
machine holds the table to an extent model of iommu_map/iommu_unmap.
Every test runs the C validator after each step.
"""
import array
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pyiova.pgtable import SZ_1G, SZ_2M, SZ_4K, SZ_64K, SZ_512M, IoPgtable
from pyiova.errors import IovaError, IovaTypeError, IovaValueError
from faultpoints import each_failure_point
from pyiova.faults import fail_allocations_after
from pyiova.iommu_errors import (IommuAlignmentError, IommuMappingExists, IommuNoMemory,
                                 IommuRangeError)

RW = 3
LPAE = SZ_4K | SZ_2M | SZ_1G


def leaves(pt):
    return [(x.iova, x.paddr, x.size, x.prot) for x in pt.leaves()]


@pytest.fixture
def pt():
    t = IoPgtable(LPAE, ias=32, oas=40)
    yield t
    t.check()


def test_empty_table_translates_nothing(pt):
    assert pt.iova_to_phys(0) is None
    assert pt.iova_to_phys(0xFFFFF000) is None
    assert leaves(pt) == []
    s = pt.stats()
    assert s.live_tables == 1 and s.mapped_bytes == 0
    assert pt.start_level == 1  # 32-bit input: the walk starts at level 1


@pytest.mark.parametrize("size,level", [(SZ_4K, 3), (SZ_2M, 2), (SZ_1G, 1)])
def test_one_page_of_each_size(pt, size, level):
    iova, paddr = size * 3, size * 5
    pt.map(iova, paddr, size, RW)
    pt.check()
    assert leaves(pt) == [(iova, paddr, size, RW)]
    assert pt.lookup(iova + size - 8).level == level
    assert pt.iova_to_phys(iova + 0x123) == paddr + 0x123
    assert pt.iova_to_phys(iova - 1) is None
    assert pt.iova_to_phys(iova + size) is None
    assert pt.unmap(iova, size) == size
    pt.check()
    assert pt.iova_to_phys(iova) is None
    assert pt.stats().live_tables == 1  # every emptied table was freed


def test_map_uses_largest_aligned_pages(pt):
    # 2M-aligned both sides: two 2M blocks then two 4K pages.
    pt.map(0x200000, 0x4000000, 2 * SZ_2M + 2 * SZ_4K)
    assert [x[2] for x in leaves(pt)] == [SZ_2M, SZ_2M, SZ_4K, SZ_4K]
    # paddr only 4K-aligned: nothing larger than 4K can be used.
    pt.map(0x800000, 0x8001000, SZ_2M)
    assert {x.size for x in pt.leaves(0x800000)} == {SZ_4K}
    assert len(list(pt.leaves(0x800000))) == 512
    # iova unaligned to 2M at the start: 4K pages up to the 2M boundary.
    pt.map(0x1FF000 + 0x40000000, 0x1FF000, SZ_4K + SZ_2M)
    got = [x[2] for x in pt.leaves(0x40000000)]
    assert got == [SZ_4K, SZ_2M]
    pt.check()
    s = pt.stats()
    assert s.live_leaves == (0, 0, 3, 2 + 512 + 1)
    assert s.leaves_installed == 3 + 515
    assert s.mapped_bytes == 2 * SZ_2M + 2 * SZ_4K + SZ_2M + SZ_4K + SZ_2M


def test_partial_unmap_splits_blocks(pt):
    pt.map(SZ_1G, 2 * SZ_1G, SZ_1G, RW)
    assert pt.unmap(SZ_1G + SZ_2M + SZ_4K, SZ_4K) == SZ_4K
    pt.check()
    s = pt.stats()
    assert s.block_splits == 2  # 1G -> 512 x 2M, then one 2M -> 512 x 4K
    assert s.live_leaves == (0, 0, 511, 511)
    assert s.mapped_bytes == SZ_1G - SZ_4K
    assert pt.iova_to_phys(SZ_1G + SZ_2M + SZ_4K) is None
    assert pt.iova_to_phys(SZ_1G + SZ_2M + 2 * SZ_4K) == 2 * SZ_1G + SZ_2M + 2 * SZ_4K
    assert pt.iova_to_phys(SZ_1G + SZ_1G - 1) == 3 * SZ_1G - 1
    # remap the hole, then the whole gigabyte goes in one call
    pt.map(SZ_1G + SZ_2M + SZ_4K, 0x1000, SZ_4K)
    assert pt.unmap(SZ_1G, SZ_1G) == SZ_1G
    assert pt.stats().live_tables == 1 and leaves(pt) == []


def test_unmap_of_unmapped_space_reports_bytes(pt):
    assert pt.unmap(0x100000, SZ_4K) == 0
    pt.map(0x100000, 0x100000, 2 * SZ_4K)
    # The walk stops at the first page-sized step with nothing mapped.
    assert pt.unmap(0x100000, 4 * SZ_4K) == 2 * SZ_4K
    pt.map(0x100000, 0x100000, SZ_4K)
    pt.map(0x102000, 0x102000, SZ_4K)
    assert pt.unmap(0x100000, 3 * SZ_4K) == SZ_4K
    assert leaves(pt) == [(0x102000, 0x102000, SZ_4K, RW)]
    pt.check()


def test_unmap_step_over_a_table_takes_all_of_it(pt):
    # As __arm_lpae_unmap: a 2M step whose slot holds a table removes the
    # whole table, holes included, and counts the full 2M.
    for off in (0, 0x5000, 0x1FF000):
        pt.map(SZ_2M + off, 0x10000000 + off, SZ_4K)
    assert pt.unmap(SZ_2M, SZ_2M) == SZ_2M
    assert leaves(pt) == []
    s = pt.stats()
    assert s.leaves_removed == 3 and s.bytes_unmapped_total == 3 * SZ_4K
    pt.check()


def test_overlapping_map_refused_and_nothing_changes(pt):
    pt.map(0x200000, 0x40000000, SZ_2M)
    pt.map(0x600000, 0x50000000, SZ_4K)
    before = leaves(pt)
    for iova, size in [(0x200000, SZ_2M), (0x200000, SZ_4K), (0x3FF000, SZ_4K),
                       (0x1FF000, 2 * SZ_4K), (0x400000, SZ_2M + SZ_4K), (0, SZ_1G)]:
        with pytest.raises(IommuMappingExists, match="overlaps"):
            pt.map(iova, 0x80000000, size)
        pt.check()
        assert leaves(pt) == before
    assert pt.stats().map_failures == 6


@pytest.mark.parametrize("args,exc,msg", [
    ((0x1001, 0x2000, SZ_4K), IommuAlignmentError, "iova 0x1001"),
    ((0x1000, 0x2800, SZ_4K), IommuAlignmentError, "paddr 0x2800"),
    ((0x1000, 0x2000, 0x1800), IommuAlignmentError, "size 0x1800"),
    ((0x1000, 0x2000, 0), IommuAlignmentError, "size must not be 0"),
    ((0xFFFFF000, 0x2000, 2 * SZ_4K), IommuRangeError, "32-bit input"),
    ((1 << 32, 0x2000, SZ_4K), IommuRangeError, "32-bit input"),
    ((0x1000, (1 << 40) - SZ_4K, 2 * SZ_4K), IommuRangeError, "40-bit output"),
    ((0x1000, 0x2000, SZ_4K, 0), IovaValueError, "prot"),
    ((0x1000, 0x2000, SZ_4K, 64 | 1), IovaValueError, "prot"),
    ((4096.0, 0x2000, SZ_4K), IovaTypeError, "iova must be an integer"),
    ((0x1000, "0x2000", SZ_4K), IovaTypeError, "paddr must be an integer"),
    ((0x1000, 0x2000, None), IovaTypeError, "size must be an integer"),
    ((-0x1000, 0x2000, SZ_4K), IovaValueError, "out of range"),
    ((0x1000, 1 << 64, SZ_4K), IovaValueError, "out of range"),
])
def test_bad_map_arguments(pt, args, exc, msg):
    pt.map(0x10000, 0x10000, SZ_4K)
    before = leaves(pt)
    with pytest.raises(exc, match=msg) as info:
        pt.map(*args)
    assert isinstance(info.value, IovaError)
    pt.check()
    assert leaves(pt) == before


@pytest.mark.parametrize("args,exc", [
    ((0x1800, SZ_4K), IommuAlignmentError),
    ((0x1000, 0x800), IommuAlignmentError),
    ((0x1000, 0), IommuAlignmentError),
    ((1 << 32, SZ_4K), IommuRangeError),
    ((0x1000, "4096"), IovaTypeError),
    ((None, SZ_4K), IovaTypeError),
])
def test_bad_unmap_arguments(pt, args, exc):
    pt.map(0x1000, 0x1000, SZ_4K)
    with pytest.raises(exc):
        pt.unmap(*args)
    pt.check()
    assert leaves(pt) == [(0x1000, 0x1000, SZ_4K, RW)]


def test_errors_are_builtin_subclasses(pt):
    with pytest.raises(ValueError):
        pt.map(1, 0, SZ_4K)
    pt.map(0, 0, SZ_4K)
    with pytest.raises(ValueError):
        pt.map(0, 0, SZ_4K)
    with pytest.raises(TypeError):
        pt.map([], 0, SZ_4K)


@pytest.mark.parametrize("kw", [
    dict(pgsize_bitmap=SZ_4K | SZ_1G),            # levels not consecutive
    dict(pgsize_bitmap=SZ_2M),                    # no granule
    dict(pgsize_bitmap=SZ_4K | (1 << 39)),        # level-0 blocks
    dict(pgsize_bitmap=LPAE, ias=49),
    dict(pgsize_bitmap=LPAE, ias=12),
    dict(pgsize_bitmap=LPAE, oas=53),
    dict(pgsize_bitmap=0),
    dict(pgsize_bitmap=SZ_4K, granule=8192),
])
def test_bad_geometry(kw):
    with pytest.raises(IovaValueError):
        IoPgtable(**kw)


def test_64k_granule():
    t = IoPgtable(SZ_64K | SZ_512M, ias=48, oas=48)
    assert t.granule == SZ_64K and t.start_level == 1
    t.map(SZ_512M, 2 * SZ_512M, SZ_512M + SZ_64K)
    assert [x.size for x in t.leaves()] == [SZ_512M, SZ_64K]
    assert t.unmap(SZ_512M + SZ_64K, SZ_64K) == SZ_64K
    assert t.stats().block_splits == 1
    assert t.iova_to_phys(SZ_512M + 2 * SZ_64K + 5) == 2 * SZ_512M + 2 * SZ_64K + 5
    with pytest.raises(IommuAlignmentError):
        t.map(SZ_4K, 0, SZ_64K)
    t.check()


def test_prot_is_kept(pt):
    pt.map(0x1000, 0x2000, SZ_4K, 1)
    pt.map(0x2000, 0x3000, SZ_4K, 2 | 8 | 16)
    assert [x.prot for x in pt.leaves()] == [1, 2 | 8 | 16]


def test_leaves_iteration_pages_through(pt):
    pt.map(0, SZ_4K, 600 * SZ_4K)  # paddr misaligned for 2M: pages only
    got = list(pt.leaves())
    assert len(got) == 600 and got[-1].iova == 599 * SZ_4K
    assert [x.iova for x in pt.leaves(300 * SZ_4K + 7)][:2] == [300 * SZ_4K, 301 * SZ_4K]
    assert len(pt) == 600


def test_out_of_memory_when_creating():
    made = []
    assert each_failure_point(lambda: made.append(IoPgtable(LPAE))) == 2  # struct, root
    made[-1].check()


def test_out_of_memory_while_mapping_rolls_back():
    """Each allocation in turn fails: a map either completes or leaves the
    table exactly as it was."""
    # crosses a 512G, a 1G and a 2M boundary: several tables are needed
    iova, size = (1 << 39) - SZ_2M - SZ_4K, SZ_2M + 2 * SZ_4K
    tables = []

    def scenario():
        t = IoPgtable(LPAE, ias=48, oas=48)   # 2 allocations
        tables.append(t)
        t.map(0x7000, 0x7000, SZ_4K)           # 3 tables
        before, stats_before = leaves(t), t.stats()
        try:
            t.map(iova, 0x100000000, size)     # 6 tables
        except IommuNoMemory:
            t.check()
            assert leaves(t) == before
            after = t.stats()
            assert (after.live_tables, after.mapped_bytes) == \
                (stats_before.live_tables, stats_before.mapped_bytes)
            raise

    assert each_failure_point(scenario) == 2 + 3 + 6
    t = tables[-1]
    t.check()
    assert t.stats().mapped_bytes == size + SZ_4K
    # tables freed by an unmap are kept aside: mapping again allocates nothing
    t.unmap(iova, size)
    with fail_allocations_after(0):
        t.map(iova, 0x100000000, size)
    t.check()


def test_out_of_memory_while_splitting_keeps_mappings():
    t = IoPgtable(LPAE, ias=32, oas=40)
    t.map(0, SZ_1G, SZ_1G)
    t.map(SZ_1G, 0, SZ_4K)
    with fail_allocations_after(1):  # the 1G split succeeds, the 2M split fails
        with pytest.raises(IommuNoMemory) as info:
            t.unmap(SZ_1G - SZ_4K, 2 * SZ_4K)
    assert info.value.unmapped == 0
    t.check()
    assert t.stats().mapped_bytes == SZ_1G + SZ_4K
    assert t.stats().block_splits == 1
    assert t.iova_to_phys(SZ_1G - 8) == 2 * SZ_1G - 8
    assert t.unmap(SZ_1G - SZ_4K, 2 * SZ_4K) == 2 * SZ_4K
    t.check()


def test_batches(pt):
    iovas = array.array("Q", [i * 2 * SZ_4K for i in range(100)])
    paddrs = array.array("Q", [0x80000000 + i * SZ_4K for i in range(100)])
    assert pt.map_many(iovas, paddrs, [SZ_4K] * 100) == 100
    assert len(pt) == 100
    with pytest.raises(IommuMappingExists) as info:
        pt.map_many([0x1000000, 0x1001000, iovas[5]], [0, 0x1000, 0], [SZ_4K] * 3)
    assert info.value.done == 2
    out = pt.unmap_many(list(iovas) + [0x1000000], [SZ_4K] * 101)
    assert list(out) == [SZ_4K] * 101
    with pytest.raises(IommuAlignmentError) as info:
        pt.unmap_many([0x1001000, 0x1001800], [SZ_4K, SZ_4K])
    assert info.value.done == 1 and info.value.unmapped[0] == SZ_4K
    pt.check()
    assert len(pt) == 0 and pt.stats().live_tables == 1
    with pytest.raises(IovaValueError):
        pt.map_many([0], [0, 1], [SZ_4K])
    with pytest.raises(IovaTypeError):
        pt.map_many([0.5], [0], [SZ_4K])


def test_threads_do_not_corrupt():
    t = IoPgtable(LPAE, ias=48, oas=48)
    errors = []

    def worker(base):
        try:
            iovas = array.array("Q", [base + i * SZ_4K for i in range(256)])
            for _ in range(40):
                t.map_many(iovas, iovas, [SZ_4K] * 256)
                for i in range(0, 256, 3):
                    t.unmap(iovas[i], SZ_4K)
                    t.map(iovas[i], iovas[i] + SZ_1G, SZ_4K)
                t.unmap(base, 256 * SZ_4K)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * SZ_1G + n * SZ_2M,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    t.check()
    s = t.stats()
    assert s.mapped_bytes == 0 and s.live_tables == 1


# ---- the model ------------------------------------------------------------------

class ExtentModel:
    """What iommu_map/iommu_unmap promise, as a list of disjoint extents
    [iova, iova + size) -> paddr with prot (no page tables involved)."""

    STEPS = (SZ_1G, SZ_2M, SZ_4K)

    def __init__(self):
        self.ext = []  # (iova, end, paddr, prot)

    def overlaps(self, a, b):
        return any(s < b and a < e for s, e, _, _ in self.ext)

    def map(self, iova, paddr, size, prot):
        self.ext.append((iova, iova + size, paddr, prot))
        self.ext.sort()

    def remove(self, a, b):
        out = []
        for s, e, p, prot in self.ext:
            if e <= a or b <= s:
                out.append((s, e, p, prot))
                continue
            if s < a:
                out.append((s, a, p, prot))
            if b < e:
                out.append((b, e, p + (b - s), prot))
        self.ext = sorted(out)

    def unmap(self, iova, size):
        done = 0
        while done < size:
            a = iova + done
            step = next(s for s in self.STEPS if s <= size - done and a % s == 0)
            if not self.overlaps(a, a + step):
                break
            self.remove(a, a + step)
            done += step
        return done

    def translate(self, x):
        for s, e, p, _prot in self.ext:
            if s <= x < e:
                return p + (x - s)
        return None

    def merged(self):
        out = []
        for s, e, p, prot in self.ext:
            if out and out[-1][1] == s and out[-1][2] + (s - out[-1][0]) == p and \
                    out[-1][3] == prot:
                out[-1] = (out[-1][0], e, out[-1][2], prot)
            else:
                out.append((s, e, p, prot))
        return out

    @property
    def bytes(self):
        return sum(e - s for s, e, _, _ in self.ext)


def merged_leaves(pt):
    m = ExtentModel()
    m.ext = [(x.iova, x.iova + x.size, x.paddr, x.prot) for x in pt.leaves()]
    return m.merged()


@st.composite
def ranges(draw):
    """An (iova, size) pair: mostly 4K work in an 8M window, some 2M work,
    rarely a whole gigabyte, so that operations collide often."""
    unit = draw(st.sampled_from([SZ_4K] * 6 + [SZ_2M] * 3 + [SZ_1G]))
    if unit == SZ_4K:
        return draw(st.integers(0, 2047)) * SZ_4K, draw(st.integers(1, 700)) * SZ_4K
    if unit == SZ_2M:
        return draw(st.integers(0, 7)) * SZ_2M, draw(st.integers(1, 3)) * SZ_2M
    return draw(st.integers(0, 3)) * SZ_1G, SZ_1G


class PgtableMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.pt = IoPgtable(LPAE, ias=32, oas=40)
        self.model = ExtentModel()

    @rule(r=ranges(), pa=st.integers(0, 255), align=st.sampled_from([SZ_4K, SZ_2M, SZ_1G]),
          prot=st.sampled_from([1, 2, 3]))
    def map(self, r, pa, align, prot):
        iova, size = r
        # The paddr's alignment decides which block sizes the map can use;
        # a gigabyte gets at least 2M blocks so the leaf lists stay short.
        if size >= SZ_1G:
            align = max(align, SZ_2M)
        paddr = pa * align
        if self.model.overlaps(iova, iova + size) or iova + size > 1 << 32:
            with pytest.raises((IommuMappingExists, IommuRangeError)):
                self.pt.map(iova, paddr, size, prot)
            return
        self.pt.map(iova, paddr, size, prot)
        self.model.map(iova, paddr, size, prot)

    @rule(r=ranges())
    def unmap(self, r):
        iova, size = r
        if iova + size > 1 << 32:
            return
        assert self.pt.unmap(iova, size) == self.model.unmap(iova, size)

    @rule(r=ranges(), off=st.integers(0, SZ_4K - 1))
    def translate(self, r, off):
        x = r[0] + off
        assert self.pt.iova_to_phys(x) == self.model.translate(x)

    @invariant()
    def consistent(self):
        self.pt.check()
        assert self.pt.mapped_bytes == self.model.bytes
        assert merged_leaves(self.pt) == self.model.merged()


TestPgtableAgainstModel = PgtableMachine.TestCase
TestPgtableAgainstModel.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), ranges()), max_size=25))
def test_random_sequences_free_every_table_at_the_end(ops):
    t = IoPgtable(LPAE, ias=32, oas=40)
    for is_map, (iova, size) in ops:
        if iova + size > 1 << 32:
            continue
        if is_map:
            try:
                t.map(iova, iova ^ (1 << 33), size)
            except IommuMappingExists:
                pass
        else:
            t.unmap(iova, size)
        t.check()
    for leaf in list(t.leaves()):
        t.unmap(leaf.iova, leaf.size)
    t.check()
    s = t.stats()
    assert s.live_tables == 1 and s.mapped_bytes == 0
    assert s.tables_allocated - s.tables_freed == 1
    assert sum(s.live_leaves) == 0
