"""A synthetic workload: mapping sizes and lifetimes drawn from distributions.

Each step maps one buffer (unless `live_max` are live), the device touches
it once, and the buffer is unmapped `lifetime` steps later, lifetime drawn
from an exponential distribution with the given mean (or fixed). Sizes are
log-uniform (every power-of-two octave equally likely; the default, since
DMA sizes cluster by octave) or uniform in whole pages between size_min and
size_max. A fraction of the maps can be scatter-gather lists or coherent
buffers instead of single pages.

Handles: one new handle per mapping (1, 2, 3, ...).
"""
from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

from ..dma import DmaDirection
from .base import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE, MAP_SG, PAGE,
                   UNMAP_PAGE, UNMAP_SG, Workload)
from .params import (Param, WorkloadError, boolean, choice, format_size, fraction, integer,
                     non_negative, parse_size)

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator

__all__ = ["RandomWorkload"]

PHYS_BASE = 0x7_0000_0000
PHYS_BITS = 21                # buffers come from 2^21 pages (8 GiB) of RAM
_PAGE_KIND, _SG_KIND, _COHERENT_KIND = 0, 1, 2


class RandomWorkload(Workload):
    name = "random"
    summary = "synthetic: sizes and lifetimes from distributions you choose"
    device_name = "dma-dev"

    # The parameters, as attributes (Workload.__init__ sets them)
    size_min: int
    size_max: int
    size_dist: str
    lifetime: float
    lifetime_dist: str
    live_max: int
    sg_ratio: float
    coherent_ratio: float
    write_ratio: float
    pci: bool
    per_ms: int

    PARAMS = {
        "size_min": Param("4K", parse_size, "smallest mapping"),
        "size_max": Param("256K", parse_size, "largest mapping"),
        "size_dist": Param("loguniform", choice("loguniform", "uniform"),
                           "loguniform (each octave equally likely) or uniform (in pages)"),
        "lifetime": Param(64.0, non_negative(),
                          "mean steps (maps) a mapping stays live before its unmap"),
        "lifetime_dist": Param("exp", choice("exp", "fixed"), "exp (exponential) or fixed"),
        "live_max": Param(4096, integer(1), "mappings live at most (a step then only unmaps)"),
        "sg_ratio": Param(0.0, fraction(), "fraction of maps that are scatter-gather lists"),
        "coherent_ratio": Param(0.0, fraction(), "fraction of maps that are coherent buffers"),
        "write_ratio": Param(0.5, fraction(), "fraction of maps the device writes"),
        "dma_bits": Param(32, integer(13, 64), "the device's DMA mask width"),
        "pci": Param(False, boolean, "a PCI device (dma-iommu tries 32-bit addresses first)"),
        "per_ms": Param(16, integer(1), "steps per simulated millisecond"),
    }

    def _check(self) -> None:
        if self.size_min > self.size_max:
            raise WorkloadError("random: size_min is above size_max")
        if self.sg_ratio + self.coherent_ratio > 1.0:
            raise WorkloadError("random: sg_ratio + coherent_ratio is above 1")
        # IOVA page 0 is never handed out: the mask must leave room above it
        # for the largest mapping, or every map of that size fails
        room = (1 << self.dma_bits) - PAGE
        if self.size_max > room:
            raise WorkloadError("random: a %d-bit DMA mask leaves %s of IOVA space above page "
                                "0, less than size_max %s" % (self.dma_bits, format_size(room),
                                                              format_size(self.size_max)))
        self.coherent_bits = self.dma_bits

    @property
    def is_pci(self) -> bool:  # type: ignore[override]  # (a parameter, not a constant)
        return self.pci

    def _generate(self, rng: random.Random) -> Iterator[tuple[Any, ...]]:
        size_min, size_max = self.size_min, self.size_max
        loguniform = self.size_dist == "loguniform"
        log_lo, log_hi = math.log(size_min), math.log(size_max + 1)
        pages_lo, pages_hi = -(-size_min // PAGE), max(1, size_max // PAGE)
        mean, fixed = self.lifetime, self.lifetime_dist == "fixed"
        live_max, per_ms = self.live_max, self.per_ms
        sg_ratio, coh_cut = self.sg_ratio, self.sg_ratio + self.coherent_ratio
        write_ratio = self.write_ratio
        # random() and getrandbits() are single C calls; randrange and
        # randint cost several Python frames each.
        rand, bits = rng.random, rng.getrandbits
        pages_span = pages_hi - pages_lo + 1
        expo, exp = rng.expovariate, math.exp
        IN, OUT = DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE
        push, pop = heapq.heappush, heapq.heappop

        due: list[Any] = []   # (step, handle, kind, size, direction)
        step = 0
        handle = 0
        while True:
            while due and due[0][0] <= step:
                _, h, kind, size, d = pop(due)
                if kind == _PAGE_KIND:
                    yield (UNMAP_PAGE, h, size, d, None)
                elif kind == _SG_KIND:
                    yield (UNMAP_SG, h, d, None)
                else:
                    yield (FREE_COHERENT, h, None)
            if len(due) >= live_max:
                # Full: time moves on to the next unmap.
                step = due[0][0]
                continue
            handle += 1
            if loguniform:
                size = min(size_max, max(size_min, int(exp(log_lo + (log_hi - log_lo) * rand()))))
            else:
                size = (pages_lo + int(rand() * pages_span)) * PAGE
                size = min(size_max, max(size_min, size))
            is_write = rand() < write_ratio
            d = IN if is_write else OUT
            r = rand()
            if r < sg_ratio:
                kind = _SG_KIND
                segs = []
                left = size
                while left:
                    n = min(left, (1 + int(rand() * 16)) * PAGE)
                    segs.append((PHYS_BASE + (bits(PHYS_BITS) << 12), n))
                    left -= n
                yield (MAP_SG, handle, tuple(segs), d, None)
            elif r < coh_cut:
                kind = _COHERENT_KIND
                yield (ALLOC_COHERENT, handle, size, None)
            else:
                kind = _PAGE_KIND
                yield (MAP_PAGE, handle, PHYS_BASE + (bits(PHYS_BITS) << 12), size, d, None)
            yield (ACCESS, handle, int(rand() * size), is_write)
            life = mean if fixed else expo(1.0 / mean) if mean > 0 else 0.0
            push(due, (step + 1 + int(life), handle, kind, size, d))
            step += 1
            if step % per_ms == 0:
                yield (ADVANCE, 1)
