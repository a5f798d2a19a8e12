"""An NVMe SSD: several queue pairs, 4 KiB to 2 MiB transfers, scatter-gather.

Each I/O queue pair (a submission and a completion queue, both coherent,
both kept for the device's life) belongs to one CPU, as blk-mq sets them
up, so each queue's maps and unmaps run on its own CPU slot (its own
rcache). A command's data is mapped with dma_map_page when it fits in
`prp_max` bytes, otherwise as a scatter-gather list of physically scattered
segments. The controller fetches the command, moves the data, posts a
completion; the driver unmaps on completion. Commands complete out of
order, and no queue ever has more than `depth` commands outstanding.

Handles: SQ_BASE + q and CQ_BASE + q for queue q's rings; CMD_BASE +
q * depth + tag for its commands (tag < depth).

Device: a 64-bit PCI function.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..dma import DmaDirection
from .base import (ACCESS, ADVANCE, ALLOC_COHERENT, MAP_PAGE, MAP_SG, PAGE, UNMAP_PAGE,
                   UNMAP_SG, Workload)
from .params import Param, WorkloadError, fraction, integer, parse_size

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator

__all__ = ["NvmeWorkload", "SQ_BASE", "CQ_BASE", "CMD_BASE", "SQE_SIZE", "CQE_SIZE"]

SQ_BASE = 0
CQ_BASE = 1 << 10
CMD_BASE = 1 << 20
SQE_SIZE = 64
CQE_SIZE = 16
PHYS_BASE = 0x6_0000_0000
PHYS_BITS = 21                # data pages come from 2^21 pages (8 GiB) of RAM
SEG_MAX = 1 << 31             # the largest power of two a scatterlist entry can hold


def _log2(n: int) -> int:
    return n.bit_length() - 1


class NvmeWorkload(Workload):
    name = "nvme"
    summary = ("NVMe SSD: per-CPU queue pairs, 4 KiB-2 MiB transfers, scatter-gather lists, "
               "out-of-order completion")
    device_name = "nvme0"
    dma_bits = 64
    coherent_bits = 64
    is_pci = True

    # The parameters, as attributes (Workload.__init__ sets them)
    queues: int
    depth: int
    min_size: int
    max_size: int
    read_ratio: float
    prp_max: int
    seg_max: int
    per_ms: int

    PARAMS = {
        "queues": Param(4, integer(1, 64), "I/O queue pairs, one per CPU"),
        "depth": Param(64, integer(1, 4096), "commands outstanding per queue at most"),
        "min_size": Param("4K", parse_size, "smallest transfer (a power of two)"),
        "max_size": Param("2M", parse_size, "largest transfer (a power of two)"),
        "read_ratio": Param(0.7, fraction(), "fraction of reads (the device writes memory)"),
        "prp_max": Param("8K", parse_size, "largest transfer mapped as one page (PRP)"),
        "seg_max": Param("128K", parse_size, "largest physically contiguous sg segment"),
        "per_ms": Param(16, integer(1), "commands completed per simulated millisecond"),
    }

    def _check(self) -> None:
        for key in ("min_size", "max_size", "seg_max"):
            v = getattr(self, key)
            if v & (v - 1) or v < PAGE:
                raise WorkloadError("nvme: %s %d is not a power of two >= 4K" % (key, v))
        if self.min_size > self.max_size:
            raise WorkloadError("nvme: min_size is above max_size")
        if self.seg_max > SEG_MAX:
            raise WorkloadError("nvme: seg_max %d is above %d: a scatterlist entry's length is "
                                "an unsigned int" % (self.seg_max, SEG_MAX))

    @property
    def ncpus(self) -> int:
        return self.queues

    @property
    def exponents(self) -> tuple[int, int, int, int]:
        """(smallest, largest) transfer and (smallest, largest) segment size
        as powers of two: what each transfer and segment is drawn from (the
        C generator is given the same)."""
        return _log2(self.min_size), _log2(self.max_size), _log2(PAGE), _log2(self.seg_max)

    def _generate(self, rng: random.Random) -> Iterator[tuple[Any, ...]]:
        queues, depth, read_ratio = self.queues, self.depth, self.read_ratio
        lo, hi, seg_lo, seg_hi = self.exponents
        prp_max = self.prp_max
        per_ms = self.per_ms
        # random() and getrandbits() are single C calls; randrange and
        # randint cost several Python frames each.
        rand, bits = rng.random, rng.getrandbits
        octaves, seg_octaves = hi - lo + 1, seg_hi - seg_lo + 1
        IN, OUT = DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE

        for q in range(queues):
            yield (ALLOC_COHERENT, SQ_BASE + q, depth * SQE_SIZE, q)
            yield (ALLOC_COHERENT, CQ_BASE + q, depth * CQE_SIZE, q)
        # Per queue: free tags, and what each busy tag holds.
        free_tags = [list(range(depth - 1, -1, -1)) for _ in range(queues)]
        busy: list[list[int]] = [[] for _ in range(queues)]   # tags in flight, in no order
        cmd: list[dict[int, Any]] = [dict() for _ in range(queues)]  # tag -> (size, is_read, sg)
        sq_tail = [0] * queues
        done = 0
        while True:
            q = int(rand() * queues)
            tags = busy[q]
            # Submit while there is room, half the time; otherwise complete.
            if free_tags[q] and (not tags or rand() < 0.5):
                tag = free_tags[q].pop()
                h = CMD_BASE + q * depth + tag
                size = 1 << (lo + int(rand() * octaves))
                is_read = rand() < read_ratio
                d = IN if is_read else OUT
                if size <= prp_max:
                    yield (MAP_PAGE, h, PHYS_BASE + (bits(PHYS_BITS) << 12), size, d, q)
                    sg = False
                else:
                    segs = []
                    left = size
                    while left:
                        n = 1 << (seg_lo + int(rand() * seg_octaves))
                        if n > left:
                            n = left
                        segs.append((PHYS_BASE + (bits(PHYS_BITS) << 12), n))
                        left -= n
                    yield (MAP_SG, h, tuple(segs), d, q)
                    sg = True
                cmd[q][tag] = (size, is_read, sg)
                tags.append(tag)
                yield (ACCESS, SQ_BASE + q, sq_tail[q] * SQE_SIZE, False)
                sq_tail[q] = (sq_tail[q] + 1) % depth
                yield (ACCESS, h, 0, is_read)
                yield (ACCESS, h, size - 1, is_read)
            else:
                i = int(rand() * len(tags))
                tag = tags[i]
                tags[i] = tags[-1]
                tags.pop()
                size, is_read, sg = cmd[q].pop(tag)
                h = CMD_BASE + q * depth + tag
                yield (ACCESS, CQ_BASE + q, tag * CQE_SIZE, True)
                d = IN if is_read else OUT
                if sg:
                    yield (UNMAP_SG, h, d, q)
                else:
                    yield (UNMAP_PAGE, h, size, d, q)
                free_tags[q].append(tag)
                done += 1
                if done % per_ms == 0:
                    yield (ADVANCE, 1)
