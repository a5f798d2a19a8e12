"""What if the traced device had sat behind another IOMMU driver, with
another policy: the lifetimes the kernel's replay settled, run through
simulate()'s engines on a model IOMMU.

The settled operations of a domain -- allocations and frees, in the order
the record decided -- become the workload vocabulary (pyiova.workloads.base)
and go, a chunk at a time, through a FedRun (pyiova.sim_feed): the C engine
by default, the Python engine when asked for or when the driver declares no
engine profile. So the figures are simulate()'s: device accesses, IOTLB
hits, stale translations (into a freed buffer, or into one mapped for
something else), faults, syncs, syncs skipped, full flushes and lost
invalidations.

What the trace does not say, and what is assumed instead:

* the call: a dma_map_page (or _phys, _resource) becomes MAP_PAGE of the
  physical address its first iommu:map line mapped, plus the buffer's
  offset in the page, for the length that gives the recorded IOVA length; a
  dma_map_sg becomes MAP_SG of one segment of that length (the trace keeps
  the first segment's physical address only); dma_alloc* becomes
  ALLOC_COHERENT of the same size; an allocation rebuilt from map lines
  alone (6.1) becomes MAP_PAGE. The direction is the dma: call's
  (BIDIRECTIONAL when none was printed). Frees are the matching unmaps;
* the device's DMA: it touches every page of a buffer once, right after the
  buffer is mapped -- it writes a FROM_DEVICE or BIDIRECTIONAL buffer and
  reads a TO_DEVICE one. That is when a stale IOTLB entry left by an earlier
  mapping of the same IOVA is hit. No DMA is assumed after an unmap;
* time: the trace's clock moves the model's (ADVANCE, whole milliseconds),
  so a lazy policy's flush-queue timer and the rcache depot's trim run when
  they fall due on it -- at their nominal moments, not at moments the record
  decided;
* the domain: the "generic" driver stands for the traced IOMMU, set up as
  the kernel's replay sets it up (its aperture and reserved regions: VT-d's
  by default); any other driver sets the domain up from its own geometry
  (the IPMMU: a forced 32-bit aperture), with no reserved regions. The
  cookie-level what-if beside it (replay.py) uses the same setup, so both
  hand out the same addresses;
* one device per domain: a domain whose trace names several devices (an
  IOMMU group) is not run through a driver model.
"""
from __future__ import annotations

from typing import Any

from .. import dma, errors
from ..cookie import put_dma_cookie
from ..device import Device
from ..dma import DmaDirection
from ..drivers import DRIVER_SPECS
from ..policies import POLICIES, not_applicable
from ..sim import policy_domain
from ..sim_feed import FedRun
from ..workloads.base import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE, MAP_SG,
                              UNMAP_PAGE, UNMAP_SG)
from .engine import ALLOC, FREE

__all__ = ["DriverModel", "NO_DRIVER", "DEFAULT_DRIVER", "driver_names", "RESULT_FIELDS"]

NO_DRIVER = "none"              # the what-if through cookies alone
DEFAULT_DRIVER = "generic"
CHUNK = 4096                    # operations handed to the engine at a time
_DIRECTIONS = {"BIDIRECTIONAL": DmaDirection.BIDIRECTIONAL, "TO_DEVICE": DmaDirection.TO_DEVICE,
               "FROM_DEVICE": DmaDirection.FROM_DEVICE}
# the SimResult counters a what-if row reports
RESULT_FIELDS = ("accesses", "iotlb_hits", "iotlb_misses", "stale_translations",
                 "stale_unmapped", "stale_remapped", "faults", "iotlb_syncs", "syncs_skipped",
                 "full_flushes", "invalidations_lost")
_PAGE, _SG, _COHERENT = 0, 1, 2


def driver_names():
    """The --driver choices: every registered driver, and none."""
    return tuple(DRIVER_SPECS) + (NO_DRIVER,)


def check_driver(name):
    if not isinstance(name, str) or (name != NO_DRIVER and name not in DRIVER_SPECS):
        raise errors.IovaValueError("driver %r is not one of %s"
                                    % (name, ", ".join(driver_names())))
    return name


class DriverModel:
    """One policy's what-if on one domain through a driver model.

    note      why it does not run (None when it does): the policy does not
              apply to the driver, several devices share the domain...
    aperture  (aperture_bits, reserved regions) of the domain it set up, for
              the cookie-level what-if beside it
    op(kind, op)  each settled operation, in order; finish() -> SimResult
    """

    def __init__(self, run, driver, policy, kernel, device) -> None:
        self.run = run
        self.driver, self.policy, self.kernel = driver, policy, kernel
        self.note = not_applicable(policy, driver, kernel)
        self.aperture = (run.aperture_bits, run.reserved)
        self.fed: Any = None
        self.dom: Any = None
        self.dev: Any = None
        self.buf: list[Any] = []
        # handle -> (kind, size, direction, cpu) of its map
        self.live: dict[Any, Any] = {}
        self.origin: Any = None
        self.clock_ms = 0
        self.shift = run.shift
        self.ncpus = run.ncpus
        self.device = device.name
        self.res: Any = None
        if self.note is None and run.granule != 4096:
            self.note = "the driver models map 4 KiB pages; the trace's granule is %#x" \
                % run.granule
        if self.note is None:
            self._setup(device)

    def _setup(self, d) -> None:
        run, pol = self.run, POLICIES[self.policy]
        dom, cookie = policy_domain(pol, self.driver, run.driver_seed, self.kernel,
                                    run.drop_rate, self.ncpus)
        mask = d.mask if d.mask is not None else run.default_mask
        cmask = d.coherent_mask if d.coherent_mask is not None else run.default_mask
        dev = Device(d.name, mask, cmask, d.is_pci)
        dev.attach(dom)
        if self.driver == DEFAULT_DRIVER:
            # the traced IOMMU as the kernel's replay sets it up (its page
            # tables cover 48 bits, more than any allocation here reaches)
            end = (1 << run.aperture_bits) - 1 if run.aperture_bits else (1 << 64) - 1
            cookie.init_domain(4096, 0, end, bool(run.aperture_bits), reserved=run.reserved,
                               flush_queue=pol.lazy)
        else:
            dma.dma_cookie(dev)         # from the driver's own geometry
            geo = dom.geometry
            width = geo.aperture_end.bit_length() if geo.force_aperture else 0
            bits: int | None = width
            if geo.force_aperture and geo.aperture_end != (1 << width) - 1:
                bits = None
            self.aperture = (bits, ())
        self.dom, self.dev = dom, dev
        self.fed = FedRun(dom, dev, cookie, workload="trace", policy=self.policy,
                          driver=self.driver, kernel=self.kernel, engine=run.engine)

    # ---- the settled operations as the workload vocabulary ----------------------
    def op(self, kind, op) -> None:
        if self.fed is None:
            return
        if self.run.use_clock:
            ts = op.ts
            if self.origin is None:
                self.origin = ts
            ms = int((ts - self.origin) * 1000)
            if ms > self.clock_ms:
                self.buf.append((ADVANCE, ms - self.clock_ms))
                self.clock_ms = ms
        cpu = op.cpu % self.ncpus if self.ncpus > 1 else None
        a = op.a
        h = a.id
        if kind == ALLOC:
            self._map(a, h, cpu)
        elif kind == FREE:
            m = self.live.pop(h, None)
            if m is not None:
                k, size, d, map_cpu = m
                if k == _PAGE:
                    self.buf.append((UNMAP_PAGE, h, size, d, cpu))
                elif k == _SG:
                    self.buf.append((UNMAP_SG, h, d, cpu))
                else:
                    self.buf.append((FREE_COHERENT, h, cpu))
        if len(self.buf) >= CHUNK:
            self._flush()

    def _map(self, a, h, cpu) -> None:
        buf = self.buf
        size = a.size
        if a.coherent:
            buf.append((ALLOC_COHERENT, h, size, cpu))
            self.live[h] = (_COHERENT, size, DmaDirection.BIDIRECTIONAL, cpu)
            write = True
        else:
            d = _DIRECTIONS.get(a.dir, DmaDirection.BIDIRECTIONAL)
            # a physical page the trace did not print: one of the allocation's own
            paddr = a.paddr if a.paddr is not None else (1 << 32) + (h << self.shift)
            length = size - a.offset
            if a.call == "map_sg":
                buf.append((MAP_SG, h, ((paddr + a.offset, length),), d, cpu))
                self.live[h] = (_SG, length, d, cpu)
            else:
                buf.append((MAP_PAGE, h, paddr + a.offset, length, d, cpu))
                self.live[h] = (_PAGE, length, d, cpu)
            write = d != DmaDirection.TO_DEVICE
        page = 1 << self.shift
        for k in range(size >> self.shift):
            buf.append((ACCESS, h, k * page, write))

    def _flush(self) -> None:
        buf, self.buf = self.buf, []
        self.fed.feed(buf)

    def finish(self):
        """Runs what is left; the SimResult (None when it did not run)."""
        if self.fed is None:
            return None
        if self.res is None:
            self._flush()
            self.res = self.fed.result()
        return self.res

    def abandon(self, why) -> None:
        """Stops here: the what-if cannot go on through the driver model."""
        self.note = why
        self.close()
        self.fed = None

    def close(self) -> None:
        if self.dom is not None:
            self.dev.detach()
            put_dma_cookie(self.dom)
            self.dom.free()
            self.dom = self.dev = None
