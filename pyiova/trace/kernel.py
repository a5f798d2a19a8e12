"""One IOVA domain as the traced kernel ran it: a dma-iommu cookie set up
as the kernel sets up a DMA domain, strict or lazy, and the timing rules
of the flush queue's timer.

What the trace leaves open (when the timer fired, which side of an
interrupt an allocation fell on) is not decided here: the ordering engine
(engine.py) asks this model to fire the timer, or not, and to copy and
restore its state while the record decides.

Domain setup (dma-iommu's iommu_dma_init_domain for a DMA domain): the
granule, start pfn max(1, aperture_start >> shift), the aperture forced
(the emulated VT-d: 39 bits) and the reserved regions -- for VT-d the
IOAPIC/MSI window -- before the first allocation.

The flush queue (lazy mode, VT-d): an unmap queues the range on its CPU's
ring; the range returns to the allocator (free_iova_fast) only when a flush
covers it. A ring has 256 slots and holds 255 entries; queueing first
releases what an earlier flush covers, and a full ring flushes the IOTLB
and releases everything before queueing. The first range queued while
the timer is off arms it; its expiry flushes the IOTLB and releases every
ring. The timer is 10 ms, msecs_to_jiffies() rounds that up to whole
jiffies (3 at HZ=250), and the timer wheel adds one more jiffy to a
first-level expiry, so it fires between 3 and 4 jiffies after it was
armed (12-16 ms at HZ=250) -- nominally: the timer runs in a softirq, and
once softirq work has been handed to ksoftirqd it waits for that thread to
be scheduled, which nothing bounds. Real captures show it up to 8 ms late
(NVMe) and a little over (virtio-net receive bursts); the default allows 16.
"""
from __future__ import annotations

import math
from typing import Any

from .. import errors
from ..cookie import DmaCookie
from ..iova import KERNELS as _IOVA_KERNELS

__all__ = ["KernelDomain", "TimerRules", "KERNELS", "VTD_RESERVED", "Q35_PCI_WINDOWS",
           "DEFAULT_RESERVED", "U64_MAX"]

U64_MAX = (1 << 64) - 1
# VT-d reserves the IOAPIC/MSI window in every DMA domain
VTD_RESERVED = ((0xFEE00000, 0xFEEFFFFF),)
# dma-iommu also reserves, in a PCI device's domain, the memory windows of
# its PCI host bridge, so that DMA never aims at a peer's MMIO. A machine's
# own are in its boot log: "pci_bus 0000:00: root bus resource [mem LO-HI
# window]". These are QEMU 7.2's q35 with 2 GiB of RAM. The window that
# matters most, 0xc0000000-0xfebfffff, is the same in every q35 guest: an
# allocation that does not fit above 0xfec00000 lands below 0xc0000000.
Q35_PCI_WINDOWS = ((0xA0000, 0xBFFFF), (0x80000000, 0xAFFFFFFF), (0xC0000000, 0xFEBFFFFF),
                   (0x100000000, 0x8FFFFFFFF))
DEFAULT_RESERVED = VTD_RESERVED + Q35_PCI_WINDOWS
KERNELS = tuple(_IOVA_KERNELS)       # "6.12", "6.1", "4.10"


class TimerRules:
    """When the flush queue's timer can fire, in seconds after it was armed.

    hz           the kernel's tick rate (Debian's kernels: 250)
    timeout_ms   the flush queue's timeout (VT-d: 10 ms)
    late_ms      how much later than nominal the timer may run (softirqs
                 delayed, handed to ksoftirqd); real captures show a little
                 over 8 ms, the default allows 16
    slack_ms     how much earlier than nominal a fire may look in the
                 trace's clock (the timestamps and the tick are not in phase
                 to the microsecond)
    """

    def __init__(self, hz=250, timeout_ms=10, late_ms=16.0, slack_ms=0.3) -> None:
        if isinstance(hz, bool) or not isinstance(hz, int) or not 24 <= hz <= 10000:
            raise errors.IovaValueError("hz %r is not a tick rate in 24..10000" % (hz,))
        for name, v in (("timeout_ms", timeout_ms), ("late_ms", late_ms),
                        ("slack_ms", slack_ms)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not \
                    0 <= v <= 60000 or v != v:
                raise errors.IovaValueError("%s %r is not in 0..60000" % (name, v))
        self.hz, self.timeout_ms, self.late_ms, self.slack_ms = hz, timeout_ms, late_ms, slack_ms
        tick = 1.0 / hz
        # msecs_to_jiffies rounds up; the wheel's first level adds one jiffy
        jiffies = math.ceil(timeout_ms * hz / 1000.0)
        self.earliest = jiffies * tick - slack_ms / 1000.0
        self.latest = (jiffies + 1) * tick + late_ms / 1000.0
        # the depot's trim work: due (on a millisecond clock) 100 ms after a
        # magazine was pushed; the delayed work's timer rounds up to whole
        # jiffies plus one, and a worker thread runs it after that
        self.trim_earliest = -(slack_ms + 1.0) / 1000.0
        self.trim_latest = 2 * tick + late_ms / 1000.0

    def __repr__(self) -> str:
        return ("<TimerRules HZ=%d, the flush queue's timer fires %.1f-%.1f ms after it is armed>"
                % (self.hz, self.earliest * 1000, self.latest * 1000))


class KernelDomain:
    """One DMA domain's cookie under the traced kernel's rules.

    alloc(op) / free(op, iova) / fire() are the allocator calls the kernel
    made; `timer` is None, or (t0, cpu) of the armed flush-queue timer.
    snapshot() / restore() copy the whole state (the C core's checkpoint
    words), for the ordering engine's candidates.
    """

    def __init__(self, kernel="6.12", *, lazy=False, granule=4096, aperture_bits=39,
                 reserved=VTD_RESERVED, ncpus=1, default_mask=U64_MAX, allocator="iova",
                 rcache=True, use_clock=True, trim="clock") -> None:
        if kernel not in KERNELS:
            raise errors.IovaValueError("kernel %r is not one of %s" % (kernel, ", ".join(KERNELS)))
        self.kernel = kernel
        self.cookie: Any = DmaCookie(allocator, kernel=kernel, ncpus=ncpus, rcache=rcache)
        if aperture_bits:
            end, force = (1 << aperture_bits) - 1, True
        else:
            end, force = U64_MAX, False
        self.cookie.init_domain(granule, 0, end, force, reserved=tuple(reserved),
                                flush_queue=lazy)
        self.lazy = bool(lazy) and self.cookie.flush_queue
        self.default_mask = default_mask
        self.timer: Any = None
        self.fires = 0
        self.clock_ms = 0
        self.origin = None              # the trace time of clock_ms 0
        self.now = 0.0                  # the latest trace time seen
        self.use_clock = use_clock
        self.refused = 0                # allocations the allocator refused outright
        self.refused_first: str | None = None
        # "clock": depot trim work runs when due on the trace's clock;
        # "record": the caller runs it (run_trim), `trim` saying what is due
        # (6.1 and 4.10 have no trim work)
        self.trim_by_record = trim == "record" and kernel == "6.12"
        self.trim: Any = None                # (trace time due, size class), by record only

    # ---- the kernel's calls ---------------------------------------------------
    def alloc(self, dev, a, cpu):
        """iommu_dma_alloc_iova for allocation `a`: its IOVA, 0 when none."""
        limit = a.mask if a.mask is not None else self.default_mask
        try:
            return self.cookie.alloc_iova(dev, a.size, limit, cpu=cpu)
        except errors.IovaError as exc:
            # a request this allocator refuses outright (a limit below its
            # space, say): the call fails, as it would for a driver
            self.refused += 1
            if self.refused_first is None:
                self.refused_first = "line %d (%s): %s" % (a.report_line, a.device, exc)
            return 0

    def free(self, iova, size, cpu, ts) -> None:
        """iommu_dma_free_iova: at once (strict) or queued (lazy). Queueing
        while the timer is off arms it at `ts`."""
        if not self.lazy:
            self.cookie.free_iova(iova, size, cpu=cpu)
        elif self.cookie.free_iova(iova, size, lazy=True, cpu=cpu) and self.timer is None:
            self.timer = (ts, cpu)
        if self.trim_by_record and self.trim is None:
            self._due_trim()            # a magazine pushed to the depot arms its trim

    def fire(self, gap_end=None) -> None:
        """The flush queue's timer: flush the IOTLB, release every ring
        (into the rcache of the CPU the timer runs on), disarm. It runs
        after the last operation seen, before `gap_end` when that is known."""
        cpu = self.timer[1] if self.timer is not None else 0
        self.timer = None
        self.fires += 1
        c = self.cookie
        c.flushes += 1
        c.allocator.fq_flushed(all_rings=True, cpu=cpu)
        if self.trim_by_record and self.trim is None:
            # a magazine pushed to the depot now arms the trim: "now" is
            # somewhere in the gap, which widens when it can fall due
            self._due_trim(gap_end - self.now if gap_end is not None else 0.0)

    def at(self, ts) -> None:
        """The trace's clock reached `ts` (seconds): deferred work due by
        then -- the rcache depot's trim -- runs. A trace whose clock is a
        counter (use_clock False) leaves it waiting."""
        if not self.use_clock:
            return
        if self.origin is None:
            self.origin = ts
        if ts > self.now:
            self.now = ts
        ms = int((ts - self.origin) * 1000)
        if ms > self.clock_ms:
            iovad = self.cookie.iovad
            if iovad is not None:
                if self.trim_by_record:
                    iovad.set_clock(ms)
                else:
                    iovad.advance(ms - self.clock_ms)
            self.clock_ms = ms

    def _due_trim(self, extra=0.0) -> None:
        """The earliest pending trim item: (trace time due, size class, how
        much later it may fall due: the width of the gap it was armed in)."""
        iovad = self.cookie.iovad
        if iovad is None or not self.use_clock:
            return
        due = iovad.trim_due()
        if due:
            k = min(due, key=due.get)
            self.trim = ((self.origin or 0.0) + due[k] / 1000.0, k, extra)
        else:
            self.trim = None

    def run_trim(self, size_class, start, end=None) -> None:
        """Runs the depot's trim work of size_class, at trace time `start`,
        or somewhere between `start` and `end`: never before it fell due. A
        trim that frees a magazine re-arms itself from that moment."""
        if self.trim is not None and start < self.trim[0]:
            start = self.trim[0]
        self.at(start)
        self.cookie.iovad.run_trim(size_class)
        self._due_trim(max(0.0, end - start) if end is not None else 0.0)

    # ---- copies ---------------------------------------------------------------
    def snapshot(self):
        """The state, as the C core's words for the allocator (a fraction of
        a pickle's cost) and the model's own fields."""
        return (self.cookie.allocator_state(), self.timer, self.fires, self.clock_ms,
                self.origin, self.trim, self.now, self.refused, self.refused_first)

    def restore(self, snap) -> None:
        (state, self.timer, self.fires, self.clock_ms, self.origin, self.trim, self.now,
         self.refused, self.refused_first) = snap
        self.cookie = self.cookie.restored(state)

    def copy(self):
        return self.restored(self.snapshot())

    def restored(self, snap):
        """A domain like this one, in the state `snap` recorded."""
        k = KernelDomain.__new__(KernelDomain)
        k.__dict__.update(self.__dict__)
        k.restore(snap)
        return k

    def fingerprint(self):
        """Equal for two domains in the same state (the C core's words)."""
        c = self.cookie
        words = c.allocator.save()
        iovad = c.iovad.save() if c.iovad is not None else b""
        return (words, iovad, self.timer, self.trim, self.clock_ms, frozenset(c._no_32bit))

    def close(self) -> None:
        if self.cookie.iovad is not None:
            self.cookie.iovad.close()

    @property
    def queued(self):
        return self.cookie.allocator.stats()["fq_queued"] if self.lazy else 0
