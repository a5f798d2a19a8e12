"""A USB host controller: the 2017 review's scenario.

"Many devices (USB being among them) use a coherent allocation for some
kind of descriptor buffer which exists for the lifetime of the device, then
use streaming mappings for data transfers." So: one coherent descriptor
ring, allocated by the first operation and never freed, then bulk transfers
of varying size, a few queued at once, each mapped, fetched through a ring
descriptor, moved, written back and unmapped in submission order.

The ring is what defeats reset-when-empty: the count of mapped pfns never
drops to zero, so the space is never reset, and since freed addresses are
never reused the streaming maps eventually fail.

Device: a 32-bit platform device (EHCI/xHCI behind an IPMMU on R-Car).
"""
from __future__ import annotations

from bisect import bisect
from collections import deque
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from ..dma import DmaDirection
from .base import ACCESS, ADVANCE, ALLOC_COHERENT, MAP_PAGE, PAGE, UNMAP_PAGE, Workload
from .params import Param, WorkloadError, fraction, integer, parse_list, parse_size

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator

__all__ = ["UsbWorkload", "RING", "DESC_SIZE"]

RING = 0            # the ring's handle; transfers use 1..inflight
DESC_SIZE = 32      # an EHCI qTD
PHYS_BASE = 0x4_8000_0000
PHYS_BITS = 19               # data buffers come from 2^19 pages (2 GiB) of RAM


DEFAULT_SIZES = "4K,16K,64K,120K,240K"
DEFAULT_WEIGHTS = "1,1,2,3,3"
_weight_list = parse_list(integer(0))


def _weights(value: Any) -> tuple[float, ...]:
    # "" (or None): chosen in _check, once the sizes are known
    if value is None or isinstance(value, str) and not value.strip():
        return ()
    return _weight_list(value)


class UsbWorkload(Workload):
    name = "usb"
    summary = ("USB host controller: a coherent descriptor ring for the device's life, "
               "bulk transfers of varying size (the 2017 review's scenario)")
    device_name = "usb-hc"
    dma_bits = 32
    coherent_bits = 32
    is_pci = False

    # The parameters, as attributes (Workload.__init__ sets them)
    ring_size: int
    sizes: tuple[int, ...]
    weights: tuple[float, ...]
    inflight: int
    in_ratio: float
    unaligned: float
    per_ms: int

    PARAMS = {
        "ring_size": Param("4K", parse_size,
                           "coherent descriptor ring, allocated first and never freed"),
        "sizes": Param(DEFAULT_SIZES, parse_list(parse_size),
                       "bulk transfer sizes (usb-storage moves up to 240 KiB per command)"),
        "weights": Param("", _weights,
                         "relative frequency of each size (default: %s for the default sizes, "
                         "else equal)" % DEFAULT_WEIGHTS),
        "inflight": Param(4, integer(1, 1024), "transfers (URBs) queued at once"),
        "in_ratio": Param(0.5, fraction(), "fraction of bulk-IN transfers (the device writes)"),
        "unaligned": Param(0.25, fraction(),
                           "fraction of buffers starting mid-page (at a 512-byte offset)"),
        "per_ms": Param(8, integer(1), "transfers completed per simulated millisecond"),
    }

    def _check(self) -> None:
        if not self.weights:
            self.weights = (_weight_list(DEFAULT_WEIGHTS)
                            if self.sizes == parse_list(parse_size)(DEFAULT_SIZES)
                            else (1,) * len(self.sizes))
        if len(self.sizes) != len(self.weights):
            raise WorkloadError("usb: %d sizes but %d weights" % (len(self.sizes),
                                                                  len(self.weights)))
        if not any(self.weights):
            raise WorkloadError("usb: every weight is zero")
        if self.ring_size < DESC_SIZE:
            raise WorkloadError("usb: ring_size %d holds no %d-byte descriptor"
                                % (self.ring_size, DESC_SIZE))

    def _generate(self, rng: random.Random) -> Iterator[tuple[Any, ...]]:
        sizes = list(self.sizes)
        cum = list(accumulate(self.weights))
        total = cum[-1]
        inflight, per_ms = self.inflight, self.per_ms
        in_ratio, unaligned = self.in_ratio, self.unaligned
        ndesc = self.ring_size // DESC_SIZE
        # random() and getrandbits() are single C calls; randrange and
        # choices cost several Python frames each, per operation.
        rand, bits = rng.random, rng.getrandbits
        IN, OUT = DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE

        yield (ALLOC_COHERENT, RING, self.ring_size, None)
        queue: deque[Any] = deque()
        seq = 0
        done = 0
        while True:
            # Keep the queue full: the class driver resubmits as soon as a
            # transfer completes.
            while len(queue) < inflight:
                h = 1 + seq % inflight     # FIFO completion frees this handle first
                size = sizes[bisect(cum, rand() * total)]
                off = (1 + int(rand() * 7)) * 512 if rand() < unaligned else 0
                paddr = PHYS_BASE + (bits(PHYS_BITS) << 12) + off
                is_in = rand() < in_ratio
                desc = (seq % ndesc) * DESC_SIZE
                seq += 1
                yield (MAP_PAGE, h, paddr, size, IN if is_in else OUT, None)
                yield (ACCESS, RING, desc, False)          # the controller fetches the qTD
                queue.append((h, size, is_in, desc))
            h, size, is_in, desc = queue.popleft()
            yield (ACCESS, h, 0, is_in)                    # first and last byte moved
            if size > PAGE:
                yield (ACCESS, h, size - 1, is_in)
            yield (ACCESS, RING, desc, True)               # status written back
            yield (UNMAP_PAGE, h, size, IN if is_in else OUT, None)
            done += 1
            if done % per_ms == 0:
                yield (ADVANCE, 1)
