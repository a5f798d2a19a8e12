"""The IOVA allocation policies a run can name: one table, read by the
simulator (simulate, Simulation, compare), sweeps, the command line and
trace replay's what-ifs.

A policy is an allocator type for the domain's cookie, whether the "iova"
allocator keeps its per-CPU caches, and whether unmaps are lazy (the flush
queue):

    iova              the kernel default: tree + per-CPU rcache, strict invalidation
    iova-lazy         the same with the flush queue (deferred invalidation); only on a
                      driver with deferred-flush support and the 6.12 or 6.1 rules
    iova-tree         the tree alone, no rcache
    wraparound        one-way allocator, one full IOTLB flush per wrap (the 2017
                      review's proposal); the IPMMU skips its per-unmap syncs under it
    reset-when-empty  the rejected 2017 patch: freed space is never reused until
                      nothing at all is mapped, then the whole space resets
    msi               the MSI cookie's bump allocator: it serves unmanaged domains'
                      doorbell pages, frees nothing out of order and ignores DMA
                      masks, so no DMA API workload can run on it (reported n/a)
"""
from __future__ import annotations

from typing import NamedTuple

from . import errors
from .allocators import AllocatorType
from .drivers.registry import DRIVER_SPECS, DRIVERS

__all__ = ["Policy", "POLICIES", "DMA_API_POLICIES", "DEFAULT_POLICIES", "PolicyNotApplicable",
           "not_applicable"]


class Policy(NamedTuple):
    name: str
    allocator: AllocatorType   # the domain's IOVA_ALLOCATOR / the cookie's allocator type
    rcache: bool               # the "iova" allocator keeps its per-CPU caches
    lazy: bool                 # unmaps go through the flush queue
    summary: str


POLICIES = {p.name: p for p in (
    Policy("iova", AllocatorType.IOVA, True, False,
           "kernel default: tree + per-CPU rcache, strict invalidation"),
    Policy("iova-lazy", AllocatorType.IOVA, True, True,
           "tree + rcache with the flush queue (deferred invalidation)"),
    Policy("iova-tree", AllocatorType.IOVA, False, False, "the tree alone, no rcache, strict"),
    Policy("wraparound", AllocatorType.WRAPAROUND, False, False,
           "one-way allocator, one full IOTLB flush per wrap"),
    Policy("reset-when-empty", AllocatorType.RESET_WHEN_EMPTY, False, False,
           "the rejected 2017 patch: no reuse until nothing is mapped"),
    Policy("msi", AllocatorType.MSI, False, False,
           "MSI cookie bump allocator (unmanaged domains' doorbells only)"),
)}

# The policies that can serve the DMA API (the MSI cookie maps doorbells
# only): what compare() and sweeps run by default, and what a trace can be
# replayed through.
DMA_API_POLICIES = tuple(name for name, p in POLICIES.items()
                         if p.allocator is not AllocatorType.MSI)
DEFAULT_POLICIES = DMA_API_POLICIES


class PolicyNotApplicable(errors.IovaValueError):
    """The policy cannot run here (the reason is the message)."""


def not_applicable(policy: str, driver: str = "ipmmu", kernel: str = "6.12") -> str | None:
    """Why `policy` cannot run on `driver` (None when it can)."""
    if not isinstance(policy, str) or policy not in POLICIES:
        raise errors.IovaValueError("unknown policy %r (known: %s)"
                                    % (policy, ", ".join(POLICIES)))
    if not isinstance(driver, str) or driver not in DRIVERS:
        raise errors.IovaValueError("unknown driver %r (known: %s)"
                                    % (driver, ", ".join(DRIVERS)))
    pol = POLICIES[policy]
    if pol.allocator is AllocatorType.MSI:
        return ("the MSI cookie belongs to unmanaged domains' MSI doorbell pages: it frees "
                "only its latest allocation and ignores DMA masks, so DMA API workloads "
                "cannot run on it")
    if pol.lazy:
        spec = DRIVER_SPECS[driver]
        if not spec.flush_queue:
            return ("%s has no deferred-flush support: its DMA domains are always "
                    "strict (iova-lazy would be iova)" % spec.label)
        if kernel == "4.10":
            return "dma-iommu had no flush queue in 4.10 (it came in 4.14)"
    return None
