"""Threads: the C core releases the GIL and takes its own locks, so calls
from many threads at once must never corrupt a domain."""
import random
import threading

from pyiova import IovaDomain, IovaExhausted

TOP32 = 0xFFFFF
N_THREADS = 4


def run_threads(target):
    errors = []

    def guarded(i):
        try:
            target(i)
        except BaseException as e:     # surface a worker's failure in the test
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def assert_owned_once(dom, live_by_thread):
    live = [r for rs in live_by_thread for r in rs]
    assert len(live) == len(set(live)), "a range was handed to two owners"
    cached = dom.cached_pfns()
    assert not cached & set(live), "a live range also sits in a magazine"
    assert len(dom) == len(live) + len(cached)
    dom.check()


def test_tree_churn_from_threads():
    dom = IovaDomain(4096, 1, ncpus=N_THREADS)
    live = [[] for _ in range(N_THREADS)]

    def work(i):
        rng = random.Random(i)
        mine = live[i]
        for _ in range(15000):
            if mine and rng.random() < 0.48:
                dom.free(mine.pop(rng.randrange(len(mine))))
            else:
                mine.append(dom.alloc(rng.randint(1, 16), TOP32, rng.random() < 0.5))

    run_threads(work)
    assert_owned_once(dom, live)


def test_fast_path_churn_on_separate_cpus_with_flushes_and_batches():
    dom = IovaDomain(4096, 1, ncpus=N_THREADS)
    live = [[] for _ in range(N_THREADS)]

    def work(i):
        rng = random.Random(100 + i)
        mine = live[i]
        for _step in range(6000):
            r = rng.random()
            if mine and r < 0.45:
                pfn, size = mine.pop(rng.randrange(len(mine)))
                dom.free_fast(pfn, size, cpu=i)
            elif r < 0.9:
                size = rng.choice((1, 2, 3, 4, 8, 16, 32, 40))
                try:
                    mine.append((dom.alloc_fast(size, TOP32, cpu=i), size))
                except IovaExhausted:
                    pass
            elif r < 0.95:
                sizes = [rng.randint(1, 8) for _ in range(16)]
                pfns = dom.alloc_fast_many(sizes, TOP32, cpu=i)
                mine.extend((p, s) for p, s in zip(pfns, sizes) if p)
            elif r < 0.97:
                dom.flush_cpu(rng.randrange(N_THREADS))
            elif r < 0.98:
                dom.flush_depot()
            else:
                dom.run_pending_work()

    run_threads(work)
    assert_owned_once(dom, [[p for p, _ in rs] for rs in live])
    dom.flush_rcaches()
    assert dom.cached_pfns() == set()
    assert len(dom) == sum(len(rs) for rs in live)
    dom.check()


def test_default_cpu_slots_from_threads():
    dom = IovaDomain(4096, 1, ncpus=2)
    live = [[] for _ in range(N_THREADS)]

    def work(i):
        for _ in range(3000):
            p = dom.alloc_fast(4, TOP32)
            live[i].append(p)
            if len(live[i]) > 50:
                dom.free_fast(live[i].pop(0), 4)

    run_threads(work)
    assert_owned_once(dom, live)


def test_dma_map_unmap_from_threads_on_one_domain():
    """Devices on their own threads (their own CPU slots) mapping through one
    domain: every mapping unmapped, nothing held twice, nothing stale."""
    from pyiova import DomainType, GenericIommu, dma
    from pyiova.cookie import cookie_of, get_dma_cookie
    from pyiova.device import Device
    from pyiova.dma import DmaDirection

    iommu = GenericIommu("smmu")
    dom = iommu.domain_alloc(DomainType.DMA)
    get_dma_cookie(dom, ncpus=N_THREADS)
    devs = [Device("dev%d" % i, is_pci=True) for i in range(N_THREADS)]
    for dev in devs:
        dev.attach(dom)
    handed = [set() for _ in range(N_THREADS)]

    def work(i):
        dev, rng, live = devs[i], random.Random(i), []
        for _ in range(2500):
            if live and rng.random() < 0.5:
                addr, size = live.pop(rng.randrange(len(live)))
                dev.dma_access(addr)
                dma.unmap_page(dev, addr, size, DmaDirection.TO_DEVICE, cpu=i)
            else:
                size = rng.choice((512, 4096, 8192, 65536))
                addr = dma.map_page(dev, 0x4000_0000 + i * 0x1000_0000 + rng.randrange(256) * 4096,
                                    size, DmaDirection.TO_DEVICE, cpu=i)
                live.append((addr, size))
                handed[i].add(addr)
        for addr, size in live:
            dma.unmap_page(dev, addr, size, DmaDirection.TO_DEVICE, cpu=i)

    run_threads(work)
    cookie = cookie_of(dom)
    assert not dma.mappings(dom)
    assert cookie.stats()["live_ranges"] == 0
    assert dom.counters().stale_hits == 0
    cookie.check()
    dom.check()
