"""Workloads for the sweep and plugin tests, in a module of their own so that
worker processes can import them (by reference, as pickle does)."""
import os
import random

from pyiova.dma import DmaDirection
from pyiova.drivers import GenericIommu
from pyiova.workloads import ACCESS, MAP_PAGE, UNMAP_PAGE, Param, Workload, parse_size

# The process the tests run in: the workloads below misbehave only in others.
TEST_PROCESS = os.getpid()


def pingpong(rng, size=4096, fail_seed=-1):
    """Map a page, touch it, unmap it; fail_seed: the seed whose stream raises."""
    if fail_seed >= 0 and rng.getstate() == random.Random(fail_seed).getstate():
        raise RuntimeError("this stream refuses seed %d" % fail_seed)
    h = 0
    while True:
        h += 1
        d = DmaDirection.TO_DEVICE
        yield (MAP_PAGE, h, 0x1000_0000 + (rng.getrandbits(16) << 12), size, d, None)
        yield (ACCESS, h, rng.randrange(size), False)
        yield (UNMAP_PAGE, h, size, d, None)


def dies_in_a_worker(rng, victim=7):
    """pingpong, but the stream of seed `victim` kills the worker process
    that runs it (never the tests' own process)."""
    if os.getpid() != TEST_PROCESS and rng.getstate() == random.Random(victim).getstate():
        os._exit(3)
    yield from pingpong(rng)


class Strided(Workload):
    """A Workload subclass: maps of `size` bytes, `live` of them at a time."""
    name = "strided"
    summary = "fixed-size maps, a window of them live"
    PARAMS = {"size": Param("8K", parse_size, "bytes per map"),
              "live": Param(4, int, "maps live at once")}

    def _generate(self, rng):
        d = DmaDirection.FROM_DEVICE
        h = 0
        while True:
            h += 1
            yield (MAP_PAGE, h, 0x2000_0000 + (h << 14), self.size, d, None)
            yield (ACCESS, h, 0, True)
            if h > self.live:
                yield (UNMAP_PAGE, h - self.live, self.size, d, None)


class ForgetfulIommu(GenericIommu):
    """Ranged invalidation that forgets a sync with probability drop_rate; no flush queue."""
    supports_flush_queue = False

    def __init__(self, seed=0, drop_rate=0.0):
        super().__init__("forgetful")
        self.seed, self.drop_rate = seed, drop_rate
        self._rng = random.Random(seed)

    def iotlb_sync(self, domain, gather):
        if not gather.empty and self._rng.random() < self.drop_rate:
            domain.counts.invalidations_lost += 1
            return
        super().iotlb_sync(domain, gather)
