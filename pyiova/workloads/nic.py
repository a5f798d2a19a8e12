"""A network card: rx and tx descriptor rings, one streaming map per packet.

Two coherent descriptor rings (rx and tx) live for the device's life. The
rx ring is kept full of mapped receive buffers: a received packet is DMA'd
into its slot's buffer, the descriptor is written back, the driver unmaps
the buffer and maps a fresh one into the slot. A sent packet is mapped,
its descriptor fetched and its data read by the device; the driver reaps
completed sends in batches (as a NAPI poll does) and unmaps them. Traffic
comes in bursts with idle time between them.

Handles: RX_RING and TX_RING for the rings, RX_BASE + slot for receive
buffers, TX_BASE + slot for sends (slot < the ring's size, so a ring can
never hold more mappings than it has descriptors).

Device: a 64-bit PCI function.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..dma import DmaDirection
from .base import ACCESS, ADVANCE, ALLOC_COHERENT, MAP_PAGE, PAGE, UNMAP_PAGE, Workload
from .params import Param, WorkloadError, fraction, integer, parse_size

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator

__all__ = ["NicWorkload", "RX_RING", "TX_RING", "RX_BASE", "TX_BASE", "DESC_SIZE"]

RX_RING = 0
TX_RING = 1
RX_BASE = 1 << 16
TX_BASE = 2 << 16
DESC_SIZE = 16
TSO_SIZE = 65536
PHYS_BASE = 0x5_0000_0000
PHYS_BITS = 20                # buffers come from 2^20 pages (4 GiB) of RAM


class NicWorkload(Workload):
    name = "nic"
    summary = ("network card: rx/tx descriptor rings, a map per packet, unmap on completion, "
               "bursts of traffic")
    device_name = "eth0"
    dma_bits = 64
    coherent_bits = 64
    is_pci = True

    # The parameters, as attributes (Workload.__init__ sets them)
    rx_ring: int
    tx_ring: int
    rx_buf: int
    mtu: int
    tso: float
    tx_ratio: float
    burst: int
    reap: int
    idle_ms: int

    PARAMS = {
        "rx_ring": Param(256, integer(1, RX_BASE - 1),
                         "receive descriptors (buffers kept mapped)"),
        "tx_ring": Param(256, integer(1, RX_BASE - 1),
                         "send descriptors (sends in flight at most)"),
        "rx_buf": Param("2K", parse_size, "receive buffer size"),
        "mtu": Param(1500, integer(64, 65535), "largest ordinary frame sent"),
        "tso": Param(0.02, fraction(), "fraction of sends that are 64 KiB TSO super-frames"),
        "tx_ratio": Param(0.5, fraction(), "fraction of packets sent (the rest are received)"),
        "burst": Param(32, integer(1), "mean packets per burst"),
        "reap": Param(16, integer(1), "send completions reaped per poll"),
        "idle_ms": Param(1, integer(0, (1 << 32) - 1), "simulated milliseconds between bursts"),
    }

    def _check(self) -> None:
        if self.rx_buf > 1 << 20:
            raise WorkloadError("nic: rx_buf %d is above 1 MiB" % self.rx_buf)

    def _generate(self, rng: random.Random) -> Iterator[tuple[Any, ...]]:
        rx_ring, tx_ring, rx_buf = self.rx_ring, self.tx_ring, self.rx_buf
        mtu, tso, tx_ratio, reap, idle = self.mtu, self.tso, self.tx_ratio, self.reap, self.idle_ms
        mean_burst = self.burst
        # random() and getrandbits() are single C calls; randrange and
        # randint cost several Python frames each.
        rand, bits, expo = rng.random, rng.getrandbits, rng.expovariate
        frame_span = mtu + 14 - 60 + 1
        IN, OUT = DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE
        # Receive buffers are page fragments: two 2 KiB buffers share a page.
        halves = max(1, PAGE // rx_buf)

        def rx_paddr() -> int:
            return PHYS_BASE + (bits(PHYS_BITS) << 12) + int(rand() * halves) * rx_buf

        yield (ALLOC_COHERENT, RX_RING, rx_ring * DESC_SIZE, None)
        yield (ALLOC_COHERENT, TX_RING, tx_ring * DESC_SIZE, None)
        for slot in range(rx_ring):
            yield (MAP_PAGE, RX_BASE + slot, rx_paddr(), rx_buf, IN, None)

        rx_next = 0
        tx_next = 0
        tx_busy: deque[tuple[int, int]] = deque()   # (slot, size) in send order
        while True:
            n = 1 + int(expo(1.0 / mean_burst))
            for _ in range(n):
                if rand() < tx_ratio:
                    if len(tx_busy) == tx_ring:
                        # Ring full: the stack stops the queue until a poll frees slots.
                        for _ in range(min(reap, len(tx_busy))):
                            slot, size = tx_busy.popleft()
                            yield (ACCESS, TX_RING, slot * DESC_SIZE, True)
                            yield (UNMAP_PAGE, TX_BASE + slot, size, OUT, None)
                    size = TSO_SIZE if rand() < tso else 60 + int(rand() * frame_span)
                    slot = tx_next
                    tx_next = (tx_next + 1) % tx_ring
                    yield (MAP_PAGE, TX_BASE + slot,
                           PHYS_BASE + (bits(PHYS_BITS) << 12) + (bits(5) << 6),
                           size, OUT, None)
                    yield (ACCESS, TX_RING, slot * DESC_SIZE, False)
                    yield (ACCESS, TX_BASE + slot, 0, False)
                    if size > PAGE:
                        yield (ACCESS, TX_BASE + slot, size - 1, False)
                    tx_busy.append((slot, size))
                else:
                    slot = rx_next
                    rx_next = (rx_next + 1) % rx_ring
                    h = RX_BASE + slot
                    yield (ACCESS, RX_RING, slot * DESC_SIZE, False)
                    yield (ACCESS, h, 0, True)
                    yield (ACCESS, RX_RING, slot * DESC_SIZE, True)
                    yield (UNMAP_PAGE, h, rx_buf, IN, None)
                    yield (MAP_PAGE, h, rx_paddr(), rx_buf, IN, None)
            # The poll at the end of the burst reaps what the device finished.
            for _ in range(min(reap, len(tx_busy))):
                slot, size = tx_busy.popleft()
                yield (ACCESS, TX_RING, slot * DESC_SIZE, True)
                yield (UNMAP_PAGE, TX_BASE + slot, size, OUT, None)
            if idle:
                yield (ADVANCE, idle)
