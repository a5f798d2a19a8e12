"""Synthetic kernel captures for the replay tests and benchmarks.

A "kernel" -- pyiova's own allocator under the traced kernel's rules, run
here directly -- maps and unmaps buffers for one PCI device and logs the
lines Linux would (/sys/kernel/tracing/trace text, one CPU). Where the
real kernel's order is not in its trace, this one chooses at random:

* an interrupt that unmaps buffers while a task maps one logs its lines
  before the task's map line either way; the allocation happened before
  the interrupt's frees or after them, at random;
* in lazy mode the flush queue's timer fires at a random moment inside the
  window the timer rules allow (never inside an interrupt's stretch).

So a replay reproduces every recorded address only if it lets the record
decide those choices: nothing in here follows the replay's preferences.
"""
import random

from pyiova.trace.kernel import KernelDomain, TimerRules
from pyiova.trace.lifetimes import TraceDevice

DEVICE = "0000:00:01.0"
HEADER = """# tracer: nop
#
# entries-in-buffer/entries-written: 0/0   #P:1
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


class _Alloc:
    """What KernelDomain.alloc reads of an allocation."""
    __slots__ = ("size", "mask", "report_line", "device")

    def __init__(self, size):
        self.size, self.mask, self.report_line, self.device = size, None, 0, DEVICE


def _line(task, pid, ts, event, msg, flags="....."):
    return "%16s-%-7d [000] %s %12.6f: %s: %s" % (task, pid, flags, ts, event, msg)


class SyntheticKernel:
    """Writes a capture of `ops` map/unmap calls (lazy: with the flush
    queue). `irq` is the chance that a map is interrupted by an interrupt
    unmapping buffers, `before` the chance that the allocation came first
    then; `live` about how many buffers stay mapped."""

    def __init__(self, seed, *, lazy=False, ops=400, irq=0.25, live=24, kernel="6.12",
                 timer=None, bursts=0.0, burst_size=300, before=0.5):
        self.rng = random.Random(seed)
        self.lazy, self.ops, self.irq, self.live_target = lazy, ops, irq, live
        self.bursts, self.burst_size = bursts, burst_size
        self.before = before        # chance the kernel allocated before an interrupt's frees
        self.timer = timer or TimerRules()
        self.dev = TraceDevice(DEVICE, True)
        self.model = KernelDomain(kernel, lazy=lazy, trim="record")
        self.t = 1.0
        self.fire_at = None
        self.trim_at = None
        self.trims = 0
        self.lines = []
        self.live = []              # (iova, size, offset, length)
        self.allocations = 0
        self.fires = 0
        self.moved = 0              # allocations the kernel made before an interrupt's frees

    # ---- the kernel's side ------------------------------------------------------
    def _tick(self, lo=20e-6, hi=600e-6):
        self.t += self.rng.uniform(lo, hi)
        return self.t

    def _maybe_fire(self, before):
        """Fires the timer, and runs the depot's trim work, if their moment
        came before time `before`."""
        if self.fire_at is not None and self.fire_at < before:
            self.model.fire()
            self.fire_at = None
            self.fires += 1
        m = self.model
        if m.trim is not None and self.trim_at is None:
            # a random moment in its window, away from the edges
            due = m.trim[0]
            self.trim_at = due + self.rng.uniform(0.0, self.timer.trim_latest - 2e-4)
        if self.trim_at is not None and self.trim_at < before:
            m.run_trim(m.trim[1], self.trim_at)
            self.trim_at = None
            self.trims += 1

    def _free(self, iova, size):
        self.model.at(self.t)
        armed = self.model.timer
        self.model.free(iova, size, 0, self.t)
        if armed is None and self.model.timer is not None:
            t0 = self.model.timer[0]
            r = self.timer
            # strictly inside the window, away from its edges
            self.fire_at = t0 + self.rng.uniform(r.earliest + 2e-4, r.latest - 2e-4)

    def _alloc(self, size):
        self.model.at(self.t)
        return self.model.alloc(self.dev, _Alloc(size), 0)

    # ---- the trace's side ---------------------------------------------------------
    def _unmap_lines(self, task, pid, buf, flags):
        iova, size, offset, length = buf
        ts = self._tick(5e-6, 40e-6)
        self.lines.append(_line(task, pid, ts, "unmap",
                                "IOMMU: iova=0x%016x - 0x%016x size=%d unmapped_size=%d"
                                % (iova, iova + size, size, size), flags))
        self.lines.append(_line(task, pid, self._tick(1e-6, 5e-6), "dma_unmap_page",
                                "%s dir=FROM_DEVICE dma_addr=%x size=%d attrs="
                                % (DEVICE, iova + offset, length), flags))

    def _map(self, task, pid, pages=None):
        rng = self.rng
        if pages is None:
            pages = rng.choice((1, 1, 1, 2, 3, 4, 8, 16, 32))
        offset = rng.choice((0, 0, 0x200, 0x600))
        length = pages * 4096 - offset if offset else pages * 4096
        size = -(-(offset + length) // 4096) * 4096
        irq_bufs = []
        if self.live and rng.random() < self.irq:
            irq_bufs = rng.sample(self.live, min(len(self.live), rng.choice((1, 1, 2))))
            for b in irq_bufs:
                self.live.remove(b)
        t_alloc = self._tick()
        # an interrupt's stretch (under 0.2 ms) never holds a fire: one due
        # during it fires just before it
        self._maybe_fire(t_alloc + 2e-4 if irq_bufs else t_alloc)
        before = bool(irq_bufs) and rng.random() < self.before
        if before:
            # the allocation first, then the interrupt's frees
            iova = self._alloc(size)
            self.moved += 1
        for b in irq_bufs:
            self._unmap_lines(task, pid, b, "d.h1.")
            self._free(b[0], b[1])
        if not before:
            iova = self._alloc(size)
        if not iova:
            return
        paddr = rng.randrange(0x1000, 0x80000) * 4096
        ts = self._tick(2e-6, 20e-6)
        self.lines.append(_line(task, pid, ts, "map",
                                "IOMMU: iova=0x%016x - 0x%016x paddr=0x%016x size=%d"
                                % (iova, iova + size, paddr, size)))
        self.lines.append(_line(task, pid, self._tick(1e-6, 5e-6), "dma_map_page",
                                "%s dir=FROM_DEVICE dma_addr=%x size=%d phys_addr=%x attrs="
                                % (DEVICE, iova + offset, length, paddr + offset)))
        self.live.append((iova, size, offset, length))
        self.allocations += 1

    def _unmap(self, task, pid):
        b = self.live.pop(self.rng.randrange(len(self.live)))
        self._maybe_fire(self.t + 1e-6)
        self._unmap_lines(task, pid, b, ".....")
        self._free(b[0], b[1])

    def _burst(self, task, pid):
        """Many small buffers mapped, then all unmapped within a few
        milliseconds: the flush queue's ring fills, the rcache's magazines
        overflow into the depot."""
        saved, self.irq = self.irq, 0.0
        while len(self.live) < self.burst_size:
            self._map(task, pid, pages=1)       # one size class: its magazines overflow
            self.t -= self.rng.uniform(0, 15e-6)       # denser than usual
        while self.live:
            self._unmap(task, pid)
        self.irq = saved

    def write(self, path=None):
        """The capture's lines; with a path, the file instead (written as it
        goes, so that a capture of millions of lines needs no memory)."""
        rng = self.rng
        f = None
        if path is not None:
            f = open(path, "w")
            f.write(HEADER)
        for _n in range(self.ops):
            if f is not None and len(self.lines) > 8192:
                f.write("\n".join(self.lines) + "\n")
                del self.lines[:]
            task, pid = rng.choice((("kworker/u4:1", 29), ("dd", 512), ("fio", 300)))
            if rng.random() < 0.03:
                self.t += rng.uniform(0.005, 0.05)       # quiet spells
            self._maybe_fire(self.t)
            if rng.random() < self.bursts:
                self._burst(task, pid)
                continue
            grow = len(self.live) < self.live_target
            if self.live and (not grow or rng.random() < 0.4):
                self._unmap(task, pid)
            else:
                self._map(task, pid)
        self.model.close()
        if f is not None:
            f.write("\n".join(self.lines) + "\n")
            f.close()
            return None
        return (HEADER + "\n".join(self.lines)).splitlines()
