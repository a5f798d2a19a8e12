"""Workloads and a driver of your own, used by name like the built-in ones.

    python examples/custom_models.py

registers three things and runs them through simulate, compare and sweep:

    camera   a generator function: a video capture device with a few frame
             buffers mapped for its whole life and line buffers mapped per
             frame (its keyword defaults are its parameters)
    slabs    a Workload subclass: one large buffer mapped, then many small
             ones, then the large one freed, over and over (fragmentation)
    lossy    an IommuDriver subclass: ranged invalidation, each unmap-path
             invalidation lost with probability drop_rate (seeded per run)

Another package makes them available to everyone who installs it, with no
register_* call, through entry points in its pyproject.toml:

    [project.entry-points."pyiova.workloads"]
    camera = "mypkg.models:camera"
    slabs = "mypkg.models:SlabWorkload"
    [project.entry-points."pyiova.drivers"]
    lossy = "mypkg.models:LossyIommu"

(`pyiova simulate camera --driver lossy` then works from the shell too.)
For sweeps on several processes or a Dask cluster, define them in an
importable module, as here, so the workers can import them.
"""
import random

from pyiova.dma import DmaDirection
from pyiova.drivers import GenericIommu, register_driver
from pyiova.workloads import (ACCESS, ADVANCE, MAP_PAGE, UNMAP_PAGE, Param, Workload,
                              parse_size, register_workload)
from pyiova.workloads.params import integer

PAGE = 4096


@register_workload(name="camera", dma_bits=32, device_name="vin")
def camera(rng, frames=4, frame_size=Param("2M", parse_size, "bytes per frame buffer"),
           lines=8, line_size=Param("16K", parse_size, "bytes per line buffer")):
    """Video capture: frame buffers mapped for the device's life, line buffers per frame."""
    to_mem = DmaDirection.FROM_DEVICE
    for h in range(frames):                           # handles 0..frames-1: the frames
        yield (MAP_PAGE, h, 0x8000_0000 + h * frame_size, frame_size, to_mem, None)
    frame = 0
    while True:
        first = frames + (frame % 2) * lines          # two sets of line handles, alternating
        for k in range(lines):
            paddr = 0x4000_0000 + (rng.getrandbits(16) << 12)
            yield (MAP_PAGE, first + k, paddr, line_size, to_mem, None)
            yield (ACCESS, first + k, rng.randrange(line_size), True)
        yield (ACCESS, frame % frames, rng.randrange(frame_size), True)
        for k in range(lines):
            yield (UNMAP_PAGE, first + k, line_size, to_mem, None)
        frame += 1
        yield (ADVANCE, 33)                           # about 30 frames a second


class SlabWorkload(Workload):
    """Parameters are declared as in the built-in workloads: a default, a
    parser (which also takes the command line's strings) and a help text."""
    name = "slabs"
    summary = "one large buffer, many small ones, the large one freed: repeat"
    device_name = "slab-dev"
    dma_bits = 32
    coherent_bits = 32

    PARAMS = {
        "large": Param("1M", parse_size, "the large buffer"),
        "small": Param("8K", parse_size, "each small buffer"),
        "per_round": Param(32, integer(1, 4096), "small buffers mapped per round"),
    }

    def _generate(self, rng):
        dirn = DmaDirection.BIDIRECTIONAL
        h = 0
        while True:
            big = h = h + 1
            yield (MAP_PAGE, big, 0x1_0000_0000, self.large, dirn, None)
            for _ in range(self.per_round):
                h += 1
                yield (MAP_PAGE, h, 0x2_0000_0000 + (rng.getrandbits(12) << 12), self.small,
                       dirn, None)
                yield (ACCESS, h, 0, rng.random() < 0.5)
            yield (UNMAP_PAGE, big, self.large, dirn, None)


register_workload(SlabWorkload)


@register_driver(name="lossy")
class LossyIommu(GenericIommu):
    """Ranged invalidation, each unmap-path invalidation lost with probability drop_rate."""

    def __init__(self, seed=0, drop_rate=0.0):
        # seed and drop_rate are the run's (--seed, --drop-rate): the
        # simulator passes the arguments the constructor names.
        super().__init__("lossy-iommu")
        self.drop_rate = drop_rate
        self._rng = random.Random(seed)

    def iotlb_sync(self, domain, gather):
        if not gather.empty and self._rng.random() < self.drop_rate:
            domain.counts.invalidations_lost += 1
            return
        super().iotlb_sync(domain, gather)


def main():
    import pyiova
    from pyiova.sim import compare, simulate

    r = simulate("camera", policy="iova", driver="lossy", ops=20_000, drop_rate=0.01)
    print("camera on lossy:", r.verdict, r.stale_translations, "stale translations")
    for r in compare("slabs", policies=("iova", "wraparound"), driver="generic", ops=20_000):
        print("slabs,", r.policy + ":", r.verdict, "fragmentation %.3f" % r.fragmentation)
    result = pyiova.sweep("camera", policies=("iova", "wraparound"), drivers="lossy",
                          params={"lines": [4, 16]}, drop_rates=(0.0, 0.05), seeds=range(1, 4),
                          ops=10_000)
    print(result.summary().format(metrics=("stale_translations",)))


if __name__ == "__main__":
    main()
