"""The IOTLB model (csrc/iotlb.c) through pyiova's Iotlb wrapper.

Checks replacement (LRU, fully and set associative), block entries,
invalidation by range and in full, faults, and above all stale-translation
detection: a hit on an entry the page table no longer agrees with is served
(as hardware would) and recorded. A hypothesis test runs the C model in
lockstep with a small Python reference of the same cache.
"""
import array
import threading
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyiova.iotlb import FAULT_PERMISSION, FAULT_TRANSLATION, Iotlb
from pyiova.pgtable import SZ_1G, SZ_2M, SZ_4K, IoPgtable
from pyiova._pyiova import lib
from pyiova.errors import IovaTypeError, IovaValueError
from pyiova.faults import fail_allocations_after
from pyiova.iommu_errors import IommuAlignmentError, IommuFault

LPAE = SZ_4K | SZ_2M | SZ_1G


@pytest.fixture
def pt():
    t = IoPgtable(LPAE, ias=32, oas=40)
    yield t
    t.check()


def test_miss_then_hit(pt):
    tlb = Iotlb(8)
    pt.map(0x10000, 0xA0000, SZ_4K)
    tr = tlb.access(pt, 0x10010)
    assert (tr.paddr, tr.hit, tr.stale) == (0xA0010, False, False)
    tr = tlb.access(pt, 0x10FF8, write=True)
    assert (tr.paddr, tr.hit, tr.stale) == (0xA0FF8, True, False)
    s = tlb.stats()
    assert (s.accesses, s.hits, s.misses, s.fills, s.valid_entries) == (2, 1, 1, 1, 1)
    assert tlb.dump() == [(0x10000, 0xA0000, SZ_4K, 3, 0, 0)]
    tlb.check()


def test_block_is_one_entry(pt):
    tlb = Iotlb(4)
    pt.map(SZ_2M, 0x40000000, SZ_2M)
    tlb.access(pt, SZ_2M)
    assert tlb.access(pt, SZ_2M + 0x1FF000).hit
    assert tlb.dump()[0][:3] == (SZ_2M, 0x40000000, SZ_2M)
    # a 4K invalidation inside the block drops the whole entry
    assert tlb.invalidate_range(SZ_2M + 0x5000, SZ_4K) == 1
    assert not tlb.access(pt, SZ_2M).hit
    tlb.check()


def test_fully_associative_lru(pt):
    tlb = Iotlb(4)
    pt.map(0, 0x100000, 8 * SZ_4K)
    for page in (0, 1, 2, 3):
        tlb.access(pt, page * SZ_4K)
    tlb.access(pt, 0)                      # 0 becomes most recent; 1 is now the oldest
    tlb.access(pt, 4 * SZ_4K)              # evicts 1
    assert [e.iova // SZ_4K for e in tlb.dump()] == [4, 0, 3, 2]
    assert not tlb.access(pt, SZ_4K).hit   # 1 missed, evicting 2
    assert tlb.access(pt, 3 * SZ_4K).hit
    assert not tlb.access(pt, 2 * SZ_4K).hit
    assert tlb.stats().evictions == 3
    tlb.check()


def test_set_associative_placement(pt):
    tlb = Iotlb(8, 2)
    assert (tlb.entries, tlb.ways, tlb.sets) == (8, 2, 4)
    pt.map(0, 0x100000, 16 * SZ_4K)
    # pages 0, 4, 8 share set 0: the third pushes out the first
    for page in (0, 4, 8):
        tlb.access(pt, page * SZ_4K)
    tlb.access(pt, 1 * SZ_4K)   # set 1, unaffected
    dump = tlb.dump()
    assert [(e.iova // SZ_4K, e.set, e.rank) for e in dump] == [(8, 0, 0), (4, 0, 1), (1, 1, 0)]
    assert not tlb.access(pt, 0).hit
    assert tlb.stats().evictions == 2
    tlb.check()


def test_invalidate_range_and_all(pt):
    tlb = Iotlb(64, 4)
    pt.map(0, 0x100000, 32 * SZ_4K)
    pt.map(SZ_2M, 0x40000000, SZ_2M)
    for page in range(32):
        tlb.access(pt, page * SZ_4K)
    tlb.access(pt, SZ_2M)
    assert len(tlb) == 33
    assert tlb.invalidate_range(5 * SZ_4K, 3 * SZ_4K) == 3
    assert tlb.invalidate_range(0x1FF000, 2 * SZ_4K) == 1   # meets only the block
    assert tlb.invalidate_range(SZ_1G, SZ_1G) == 0
    # a range larger than the cache takes the scan path
    assert tlb.invalidate_range(20 * SZ_4K, SZ_1G) == 12
    assert sorted(e.iova // SZ_4K for e in tlb.dump()) == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12,
                                                           13, 14, 15, 16, 17, 18, 19]
    assert tlb.invalidate_range((1 << 64) - SZ_4K, 1 << 20) == 0  # clipped at the top
    assert tlb.invalidate_all() == 17
    assert len(tlb) == 0
    s = tlb.stats()
    assert (s.range_invalidations, s.full_invalidations, s.entries_invalidated) == (5, 1, 33)
    with pytest.raises(IommuAlignmentError):
        tlb.invalidate_range(0, 0)
    with pytest.raises(IovaTypeError):
        tlb.invalidate_range("0", 1)
    tlb.check()


def test_stale_after_unmap_and_after_remap(pt):
    tlb = Iotlb(16)
    pt.map(0x10000, 0xA0000, SZ_4K)
    tlb.access(pt, 0x10000, op_index=1, dev_id=9)
    pt.unmap(0x10000, SZ_4K)
    tr = tlb.access(pt, 0x10008, write=True, op_index=2, dev_id=9)
    assert (tr.paddr, tr.hit, tr.stale) == (0xA0008, True, True)
    assert tr.flags & lib.IOTLB_STALE_UNMAPPED
    pt.map(0x10000, 0xB0000, SZ_4K)
    tr = tlb.access(pt, 0x10010, op_index=3, dev_id=9)
    assert (tr.paddr, tr.stale) == (0xA0010, True)
    assert tr.flags & lib.IOTLB_STALE_REMAPPED
    assert tlb.stale_records() == [(0x10008, 0xA0008, None, 2, 9, True),
                                   (0x10010, 0xA0010, 0xB0010, 3, 9, False)]
    s = tlb.stats()
    assert (s.stale_hits, s.stale_unmapped, s.stale_remapped) == (2, 1, 1)
    # once invalidated, the access goes where the table says
    tlb.invalidate_range(0x10000, SZ_4K)
    tr = tlb.access(pt, 0x10010)
    assert (tr.paddr, tr.hit, tr.stale) == (0xB0010, False, False)
    tlb.check()


def test_remap_to_same_page_is_not_stale(pt):
    tlb = Iotlb(4)
    pt.map(0x10000, 0xA0000, SZ_4K)
    tlb.access(pt, 0x10000)
    pt.unmap(0x10000, SZ_4K)
    pt.map(0x10000, 0xA0000, SZ_4K)
    assert not tlb.access(pt, 0x10000).stale


def test_rights_downgrade_is_stale_for_writes_only(pt):
    tlb = Iotlb(4)
    pt.map(0x10000, 0xA0000, SZ_4K, 3)
    tlb.access(pt, 0x10000)
    pt.unmap(0x10000, SZ_4K)
    pt.map(0x10000, 0xA0000, SZ_4K, 1)  # read-only now
    assert not tlb.access(pt, 0x10000).stale
    tr = tlb.access(pt, 0x10000, write=True)
    assert tr.stale and tr.flags & lib.IOTLB_STALE_REMAPPED
    assert tlb.stale_records()[0][2] == 0xA0000


def test_faults(pt):
    tlb = Iotlb(4)
    with pytest.raises(IommuFault) as info:
        tlb.access(pt, 0x5000)
    assert (info.value.kind, info.value.iova, info.value.write) == ("translation", 0x5000, False)
    pt.map(0x5000, 0x6000, SZ_4K, 1)
    with pytest.raises(IommuFault) as info:
        tlb.access(pt, 0x5000, write=True)       # miss, forbidden: no fill
    assert info.value.kind == "permission"
    assert len(tlb) == 0
    tlb.access(pt, 0x5000)
    with pytest.raises(IommuFault) as info:
        tlb.access(pt, 0x5000, write=True)       # hit, forbidden by the cached rights
    assert info.value.kind == "permission"
    with pytest.raises(RuntimeError):
        tlb.access(pt, 1 << 40)
    s = tlb.stats()
    assert (s.translation_faults, s.permission_faults, s.hits, s.misses) == (2, 2, 1, 4)
    tlb.check()


def test_multi_hit_uses_smallest_page(pt):
    tlb = Iotlb(8)
    pt.map(0x200000, 0xA0000, SZ_4K)
    tlb.access(pt, 0x200000)
    pt.unmap(0x200000, SZ_4K)
    pt.map(0x200000, 0x40000000, SZ_2M)   # a block now covers the stale page
    assert not tlb.access(pt, 0x201000).hit  # fills the 2M entry
    tr = tlb.access(pt, 0x200000)
    assert tr.flags & lib.IOTLB_MULTI_HIT and tr.stale and tr.paddr == 0xA0000
    assert tlb.stats().multi_hits == 1
    tlb.check()


def test_access_many(pt):
    tlb = Iotlb(16)
    pt.map(0x1000, 0x9000, 2 * SZ_4K, 1)
    paddrs, status = tlb.access_many(pt, [0x1000, 0x1008, 0x2000, 0x7000, 0x1000],
                                     [0, 0, 0, 0, 1], op_base=10)
    assert list(paddrs[:3]) == [0x9000, 0x9008, 0xA000]
    assert list(status) == [0, lib.IOTLB_HIT, 0, FAULT_TRANSLATION, FAULT_PERMISSION]
    pt.unmap(0x1000, SZ_4K)
    paddrs, status = tlb.access_many(pt, array.array("Q", [0x1010]), op_base=20, dev_id=3)
    assert status[0] == lib.IOTLB_HIT | lib.IOTLB_STALE | lib.IOTLB_STALE_UNMAPPED
    assert tlb.stale_records() == [(0x1010, 0x9010, None, 20, 3, False)]
    with pytest.raises(IovaValueError):
        tlb.access_many(pt, [0, 1], [True])
    with pytest.raises(IovaTypeError):
        tlb.access_many(pt, [0.5])
    tlb.check()


def test_record_limit_and_allocation_failure(pt):
    tlb = Iotlb(4, record_limit=2)
    pt.map(0, 0, SZ_4K)
    tlb.access(pt, 0)
    pt.unmap(0, SZ_4K)
    for _ in range(3):
        assert tlb.access(pt, 0).stale
    s = tlb.stats()
    assert (s.stale_hits, s.records_kept, s.records_dropped) == (3, 2, 1)
    tlb.clear_records()
    assert tlb.stale_records() == []
    tlb.check()
    tlb2 = Iotlb(4)
    pt.map(0, 0, SZ_4K)
    tlb2.access(pt, 0)
    pt.unmap(0, SZ_4K)
    with fail_allocations_after(0):
        tlb2.access(pt, 0)   # the record array cannot grow: counted, not kept
    tlb2.access(pt, 0)
    s = tlb2.stats()
    assert (s.stale_hits, s.records_kept, s.records_dropped) == (2, 1, 1)
    tlb2.check()


def test_out_of_memory_when_creating():
    for n in range(4):   # the structure, its entries, its sets, its hash buckets
        with fail_allocations_after(n):
            with pytest.raises(MemoryError):
                Iotlb(64, 4)
    with fail_allocations_after(4):
        Iotlb(64, 4).check()


@pytest.mark.parametrize("args", [(0,), (6, 4), (1 << 21,), (4, 8), (-1,), ("8",)])
def test_bad_geometry(args):
    with pytest.raises((IovaValueError, IovaTypeError)):
        Iotlb(*args)


def test_threads_do_not_corrupt(pt):
    tlb = Iotlb(32, 4)
    errors = []

    def worker(n):
        try:
            base = n * SZ_2M
            for i in range(3000):
                iova = base + (i % 64) * SZ_4K
                pt.map(iova, iova + SZ_1G, SZ_4K)
                tlb.access(pt, iova)
                pt.unmap(iova, SZ_4K)
                try:
                    tlb.access(pt, iova)
                except IommuFault:
                    pass
                if i % 5 == 0:
                    tlb.invalidate_range(iova, SZ_4K)
                if i % 500 == 0:
                    tlb.invalidate_all()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    tlb.check()
    s = tlb.stats()
    assert s.accesses == 4 * 3000 * 2 and s.hits + s.misses == s.accesses


# ---- lockstep with a reference model ---------------------------------------------

class RefTlb:
    """The same cache in a few lines of Python: per set an OrderedDict from
    (iova, shift) to (paddr, prot), least recently used first."""

    def __init__(self, entries, ways):
        self.ways = ways or entries
        self.nsets = entries // self.ways
        self.sets = [OrderedDict() for _ in range(self.nsets)]

    def _set(self, base, shift):
        return self.sets[(base >> shift) % self.nsets]

    def access(self, pt, iova, write):
        need = 2 if write else 1
        shifts = sorted({k[1] for s in self.sets for k in s})
        found = [(iova & ~((1 << sh) - 1), sh) for sh in shifts
                 if (iova & ~((1 << sh) - 1), sh) in self._set(iova & ~((1 << sh) - 1), sh)]
        if found:
            key = found[0]
            s = self._set(*key)
            s.move_to_end(key)
            paddr, prot = s[key]
            p = paddr + iova - key[0]
            if not prot & need:
                return ("fault", FAULT_PERMISSION)
            leaf = pt.lookup(iova)
            if leaf is None:
                return ("ok", p, 1 | 2 | 4 | (16 if len(found) > 1 else 0))
            if leaf.paddr + iova - leaf.iova != p or not leaf.prot & need:
                return ("ok", p, 1 | 2 | 8 | (16 if len(found) > 1 else 0))
            return ("ok", p, 1 | (16 if len(found) > 1 else 0))
        leaf = pt.lookup(iova)
        if leaf is None:
            return ("fault", FAULT_TRANSLATION)
        if not leaf.prot & need:
            return ("fault", FAULT_PERMISSION)
        shift = leaf.size.bit_length() - 1
        s = self._set(leaf.iova, shift)
        if len(s) == self.ways:
            s.popitem(last=False)
        s[(leaf.iova, shift)] = (leaf.paddr, leaf.prot)
        return ("ok", leaf.paddr + iova - leaf.iova, 0)

    def invalidate(self, first, last):
        n = 0
        for s in self.sets:
            for key in [k for k in s if k[0] <= last and k[0] + (1 << k[1]) - 1 >= first]:
                del s[key]
                n += 1
        return n

    def dump(self):
        return [(k[0], v[0], 1 << k[1], v[1], i, r)
                for i, s in enumerate(self.sets)
                for r, (k, v) in enumerate(reversed(s.items()))]


ops = st.one_of(
    st.tuples(st.just("access"), st.integers(0, 39), st.booleans()),
    st.tuples(st.just("map"), st.integers(0, 39), st.integers(1, 3)),
    st.tuples(st.just("unmap"), st.integers(0, 39), st.booleans()),
    st.tuples(st.just("inval"), st.integers(0, 39), st.integers(1, 600)),
    st.tuples(st.just("inval_all"), st.just(0), st.just(0)),
)


def page_iova(k):
    """Pages 0..31 in the first 2M; 32..39 stand for 2M blocks above it."""
    return k * SZ_4K if k < 32 else (k - 31) * SZ_2M


@settings(max_examples=150, deadline=None)
@given(geometry=st.sampled_from([(1, 0), (2, 0), (4, 0), (4, 2), (8, 2), (8, 1), (16, 4)]),
       seq=st.lists(ops, max_size=60))
def test_lockstep_with_reference(geometry, seq):
    entries, ways = geometry
    pt = IoPgtable(LPAE, ias=32, oas=40)
    tlb, ref = Iotlb(entries, ways), RefTlb(entries, ways)
    stale = 0
    for n, (op, k, arg) in enumerate(seq):
        iova = page_iova(k)
        size = SZ_4K if k < 32 else SZ_2M
        if op == "access":
            addr = iova + (n * 0x1237) % size
            want = ref.access(pt, addr, arg)
            try:
                tr = tlb.access(pt, addr, arg, op_index=n)
                got = ("ok", tr.paddr, tr.flags)
            except IommuFault as exc:
                got = ("fault",
                       FAULT_TRANSLATION if exc.kind == "translation" else FAULT_PERMISSION)
            assert got == want
            stale += got[0] == "ok" and bool(got[2] & 2)
        elif op == "map":
            if pt.iova_to_phys(iova) is None:
                pt.map(iova, (k * 7 + n) % 64 * size, size, arg)
        elif op == "unmap":
            pt.unmap(iova, size)
        elif op == "inval":
            assert tlb.invalidate_range(iova, arg * SZ_4K) == \
                ref.invalidate(iova, iova + arg * SZ_4K - 1)
        else:
            assert tlb.invalidate_all() == ref.invalidate(0, (1 << 64) - 1)
        tlb.check()
        assert tlb.dump() == ref.dump()
    assert tlb.stats().stale_hits == stale == len(tlb.stale_records())
