"""Out of memory in C is an IovaNoMemory (a MemoryError and an IovaError),
never a crash, and never leaves a half-changed domain: every allocation in
each scenario is made to fail in turn, and the domain must check out (and
still work) afterwards."""
import pickle

import pytest

from pyiova import IovaDomain, IovaError
from pyiova.errors import IovaNoMemory
from pyiova.allocators import PfnAllocator
from faultpoints import each_failure_point
from pyiova.faults import fail_allocations_after

TOP32 = 0xFFFFF


def test_creating_domains():
    made = []

    def scenario():
        made.append(IovaDomain(4096, 1, ncpus=4))

    assert each_failure_point(scenario) > 2
    made[-1].check()


def test_growing_the_tree_and_the_depot():
    dom = IovaDomain(4096, 1, ncpus=1)

    def scenario():
        try:
            pfns = dom.alloc_many([1] * 600, TOP32)
        except MemoryError as e:      # the ones made before the failure are ours
            dom.free_many([p for p in e.pfns if p])
            raise
        try:
            for p in pfns:
                if p:
                    dom.free_fast(p, 1, cpu=0)
        finally:
            dom.check()
        dom.flush_rcaches()

    each_failure_point(scenario)
    dom.flush_rcaches()
    dom.check()
    assert dom.alloc(1, TOP32) == TOP32


def test_reserve_and_alloc_fast_leave_nothing_half_done():
    dom = IovaDomain(4096, 1, ncpus=2)

    def scenario():
        before = (dom.ranges(), dom.state())
        try:
            dom.reserve(0x1000, 0x1FFF)
            dom.alloc_fast(3, TOP32, cpu=1)
        except MemoryError:
            dom.check()
            raise
        dom.check()
        assert dom.ranges() != before[0]

    each_failure_point(scenario)


def test_save_and_restore():
    dom = IovaDomain(4096, 1, ncpus=2)
    for p in dom.alloc_many([2] * 300, TOP32):
        dom.free_fast(p, 2, cpu=0)

    def scenario():
        copy = pickle.loads(pickle.dumps(dom))
        copy.check()

    each_failure_point(scenario)
    dom.check()


def test_cookie_allocators_and_the_flush_queue():
    def scenario():
        w = PfnAllocator("wraparound", start_pfn=1, end_pfn=4000)
        for _ in range(300):
            p, _ = w.alloc(1, 4000)
            w.free(p, 1)
        w.check()
        i = PfnAllocator("iova", ncpus=2)
        i.enable_flush_queue(ncpus=2, size=8)
        i.check()

    each_failure_point(scenario)


def test_out_of_memory_is_one_class_a_memory_error_and_an_iova_error():
    # wherever the C core runs out: a domain, an allocator, a page table,
    # an IOTLB, the simulation engine's generator
    from pyiova.engine.streams import native_stream
    from pyiova.iotlb import Iotlb
    from pyiova.pgtable import IoPgtable
    from pyiova.workloads import get_workload
    makers = [IovaDomain, lambda: PfnAllocator("wraparound"), IoPgtable, lambda: Iotlb(8),
              lambda: native_stream(get_workload("usb"), 1)]
    for make in makers:
        with fail_allocations_after(0):
            with pytest.raises(IovaNoMemory) as e:
                make()
        assert isinstance(e.value, MemoryError) and isinstance(e.value, IovaError)
        assert "out of memory" in str(e.value)
