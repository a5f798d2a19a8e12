"""Renesas IPMMU-VMSA, as drivers/iommu/ipmmu-vmsa.c drives it.

What is modelled:
* Page tables: ARM LPAE stage 1, 4K granule, 4K/2M/1G pages, 32-bit input
  and 40-bit output addresses.
* Binding: a domain is bound to an IPMMU instance and given one of its
  hardware contexts at its first attach (before that it has no page table
  and maps fail, as in the kernel). The geometry is set then too: aperture
  [0, 2^32 - 1], forced. A device behind another IPMMU instance cannot join
  a bound domain; an instance with every context taken refuses new domains.
* Invalidation: the hardware can only flush a whole context. unmap gathers
  nothing; iotlb_sync (which the core calls after every unmap) and
  flush_iotlb_all both flush the whole context: strict mode costs one full
  flush per unmap.
* The erratum (erratum=True): a flush issued on the unmap path (by
  iotlb_sync) may silently not take effect, with probability
  erratum_drop_rate (1.0: never takes effect). flush_iotlb_all,
  domain_reset and the idle flush below do take effect. With the kernel's
  rbtree/rcache allocator, which hands freed addresses straight back out,
  that is how a device reaches a new buffer through a stale entry.
* The 2017 review's alternative: when the domain's IOVA_ALLOCATOR attribute
  is "wraparound", iotlb_sync is skipped altogether: a one-way allocator
  never reuses an address before it wraps, and it calls flush_iotlb_all
  when it does. flush_when_idle=True adds the review's refcount idea: once
  an unmap leaves nothing mapped in the domain, flush the context (only if
  some unmap since the last effective flush left entries possibly cached).
* ipmmu-vmsa has no deferred-flush capability, so DMA_USE_FLUSH_QUEUE
  cannot be turned on: its DMA domains are always strict.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .. import _state
from .. import errors
from .. import iommu_errors as ierr
from ..pgtable import SZ_1G, SZ_2M, SZ_4K
from ..allocators import AllocatorType
from ..iommu import DomainGeometry, DomainType
from .base import EngineProfile, IommuDriver, declares_own

if TYPE_CHECKING:
    from ..device import Device
    from ..iommu import IommuDomain, IotlbGather

__all__ = ["IpmmuVmsa"]

IPMMU_PGSIZES = SZ_4K | SZ_2M | SZ_1G
IPMMU_IAS = 32
IPMMU_OAS = 40
IPMMU_CTX_MAX = 16


class _IpmmuDomain:
    """Driver-private state of a domain (struct ipmmu_vmsa_domain)."""
    __slots__ = ("mmu", "context", "dirty")

    def __init__(self) -> None:
        self.mmu: IpmmuVmsa | None = None   # the instance the domain is bound to
        self.context: int | None = None     # its hardware context number there
        self.dirty = False    # unmaps since the last flush that took effect

    def __getstate__(self) -> dict[str, Any]:
        return _state.slot_state(self)

    def __setstate__(self, state: Any) -> None:
        state = _state.old_slot_state(state)
        _state.check_fields("an IPMMU domain", state, {
            "mmu": (IpmmuVmsa, type(None)), "context": (int, type(None)), "dirty": bool})
        if (state["mmu"] is None) != (state["context"] is None):
            raise _state.fail("an IPMMU domain", "is bound to an instance without a context, "
                              "or to a context without an instance")
        if state["context"] is not None:
            _state.check_int("an IPMMU domain's context", state["context"], 0,
                             IPMMU_CTX_MAX - 1)
        _state.set_fields(self, state)


class IpmmuVmsa(IommuDriver):
    """One IPMMU instance and its driver ops.

    name               the instance's name (e.g. "ipmmu-ds0")
    num_contexts       hardware contexts (8 on R-Car Gen3, up to 16)
    erratum            model the unreliable unmap-path TLB flush
    erratum_drop_rate  probability that such a flush is lost (0..1)
    seed               seeds the drop decisions (runs are reproducible)
    flush_when_idle    flush the context when an unmap leaves nothing mapped
    tlb_entries, tlb_ways, record_limit   the IOTLB model of each context
    """

    supports_flush_queue = False

    def __init__(self, name: str = "ipmmu", *, num_contexts: int = 8, erratum: bool = False,
                 erratum_drop_rate: float = 1.0, seed: Any = 0, flush_when_idle: bool = False,
                 tlb_entries: int = 64, tlb_ways: int = 0, record_limit: int = 65536) -> None:
        super().__init__(name, pgsize_bitmap=IPMMU_PGSIZES, ias=IPMMU_IAS, oas=IPMMU_OAS,
                         tlb_entries=tlb_entries, tlb_ways=tlb_ways, record_limit=record_limit)
        if isinstance(num_contexts, bool) or not isinstance(num_contexts, int):
            raise errors.IovaTypeError("num_contexts must be an int")
        if not 1 <= num_contexts <= IPMMU_CTX_MAX:
            raise errors.IovaValueError("num_contexts %d is not in 1..%d"
                                        % (num_contexts, IPMMU_CTX_MAX))
        for flag, value in (("erratum", erratum), ("flush_when_idle", flush_when_idle)):
            if not isinstance(value, bool):
                raise errors.IovaTypeError("%s must be a bool, not %r" % (flag, value))
        if isinstance(erratum_drop_rate, bool) or \
                not isinstance(erratum_drop_rate, (int, float)) or \
                not 0.0 <= erratum_drop_rate <= 1.0:
            raise errors.IovaValueError("erratum_drop_rate must be a number in [0, 1], not %r"
                                        % (erratum_drop_rate,))
        # what random.Random takes (None: a seed of its own choosing)
        if isinstance(seed, bool) or not (seed is None or isinstance(seed, (int, float, str, bytes))
                                          or hasattr(seed, "__index__")):
            raise errors.IovaTypeError("seed must be an integer, a float, a str or bytes, not %s "
                                       "(%r)" % (type(seed).__name__, seed))
        self.num_contexts = num_contexts
        self.erratum = erratum
        self.erratum_drop_rate = float(erratum_drop_rate)
        self.flush_when_idle = flush_when_idle
        self._rng = random.Random(seed if isinstance(seed, (int, float, str, bytes, type(None)))
                                  else seed.__index__())
        self._contexts: list[IommuDomain | None] = [None] * num_contexts

    # -- pickling and deepcopy (checkpoints) ------------------------------------
    _STATE = dict(IommuDriver._STATE, num_contexts=int, erratum=bool, erratum_drop_rate=float,
                  flush_when_idle=bool, _rng=random.Random, _contexts=list)

    def _check_state(self, state: dict[str, Any]) -> None:
        name = "IPMMU %s" % state["name"]
        n = _state.check_int("%s's context count" % name, state["num_contexts"], 1,
                             IPMMU_CTX_MAX)
        _state.check_float("%s's erratum drop rate" % name, state["erratum_drop_rate"], 0.0, 1.0)
        if len(state["_contexts"]) != n:
            raise _state.fail(name, "has %d contexts, not %d" % (len(state["_contexts"]), n))
        from ..iommu import IommuDomain
        for owner in state["_contexts"]:
            _state.check_type("a context owner of %s" % name, owner, (IommuDomain, type(None)))

    def _check_restored(self) -> None:
        """After a checkpoint is loaded: each context's domain is bound to it."""
        for ctx, owner in enumerate(self._contexts):
            if owner is not None and (owner.priv.mmu is not self or owner.priv.context != ctx):
                raise _state.fail("IPMMU %s" % self.name,
                                  "gives context %d to %s, which is bound elsewhere"
                                  % (ctx, owner.name))

    @property
    def contexts_in_use(self) -> int:
        return sum(1 for c in self._contexts if c is not None)

    # -- domains ---------------------------------------------------------------
    def _init_domain(self, domain: IommuDomain) -> None:
        domain.priv = _IpmmuDomain()

    def _free_context(self) -> int:
        """The number of a free hardware context (claimed by the caller)."""
        for i, owner in enumerate(self._contexts):
            if owner is None:
                return i
        raise ierr.IommuBusy("IPMMU %s has no free context (all %d in use)"
                             % (self.name, self.num_contexts))

    def domain_free(self, domain: IommuDomain) -> None:
        priv = domain.priv
        if priv.mmu is not None:
            # The kernel disables the context (with a final flush) and
            # releases it; the tables go with the domain.
            priv.mmu._contexts[priv.context] = None
            priv.mmu = None
            priv.context = None

    def attach_dev(self, domain: IommuDomain, dev: Device) -> None:
        # Everything is checked and built before anything is bound, so a
        # refused attach leaves the device, the domain and the instances as
        # they were.
        mmu = dev.iommu if dev.iommu is not None else self
        if not isinstance(mmu, IpmmuVmsa):
            raise ierr.IommuAttachError("%s sits behind %s, not an IPMMU"
                                        % (dev.name, getattr(mmu, "name", mmu)))
        priv = domain.priv
        if domain.type is not DomainType.IDENTITY:
            if priv.mmu is None:
                ctx = mmu._free_context()
                pgtable, iotlb = mmu.new_pgtable(), mmu.new_iotlb()
                mmu._contexts[ctx] = domain
                priv.mmu, priv.context = mmu, ctx
                domain.set_hardware(pgtable, iotlb)
                domain.set_geometry(DomainGeometry(0, (1 << IPMMU_IAS) - 1, True))
            elif priv.mmu is not mmu:
                raise ierr.IommuAttachError(
                    "cannot attach %s (behind IPMMU %s) to %s: the domain is bound to IPMMU %s"
                    % (dev.name, mmu.name, domain.name, priv.mmu.name))
        # (identity: the device's micro-TLBs are just disabled, no translation)
        dev.iommu = mmu

    # -- page table --------------------------------------------------------------
    def unmap(self, domain: IommuDomain, iova: int, size: int, gather: IotlbGather) -> int:
        # The hardware cannot invalidate by address, so nothing is gathered.
        pt = domain.pgtable
        if pt is None:
            raise self._not_ready(domain)
        unmapped = pt.unmap(iova, size)
        if unmapped:
            domain.priv.dirty = True
        return unmapped

    # -- TLB -------------------------------------------------------------------
    def _flush_context(self, domain: IommuDomain, *, unmap_path: bool) -> None:
        """ipmmu_tlb_invalidate(): set FLUSH in IMCTR and wait. Lost to the
        erratum only when issued on the unmap path."""
        counts = domain.counts
        counts.full_flushes += 1
        if unmap_path and self.erratum and (
                self.erratum_drop_rate >= 1.0 or self._rng.random() < self.erratum_drop_rate):
            counts.invalidations_lost += 1
            return
        domain.iotlb.invalidate_all()  # type: ignore[union-attr]  # (bound: it has one)
        domain.priv.dirty = False

    def iotlb_sync(self, domain: IommuDomain, gather: IotlbGather) -> None:
        priv = domain.priv
        mmu = priv.mmu
        if mmu is None:
            return
        counts = domain.counts
        if domain.iova_allocator is AllocatorType.WRAPAROUND:
            counts.syncs_skipped += 1
        else:
            counts.syncs += 1
            mmu._flush_context(domain, unmap_path=True)
        if (mmu.flush_when_idle and priv.dirty
                and domain.pgtable.mapped_bytes == 0):  # type: ignore[union-attr]
            counts.idle_flushes += 1
            mmu._flush_context(domain, unmap_path=False)

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        mmu = domain.priv.mmu
        if mmu is not None:
            mmu._flush_context(domain, unmap_path=False)

    def domain_reset(self, domain: IommuDomain) -> None:
        self.flush_iotlb_all(domain)

    # -- the C simulation engine -----------------------------------------------
    def engine_profile(self, domain: IommuDomain) -> EngineProfile | None:
        priv = domain.priv
        mmu = getattr(priv, "mmu", None)
        own = ("_flush_context",)
        if mmu is None or domain.pgtable is None or domain.iotlb is None or \
                not declares_own(self, IpmmuVmsa, own) or not declares_own(mmu, IpmmuVmsa, own):
            return None
        return EngineProfile("context",
                             skip_syncs=domain.iova_allocator is AllocatorType.WRAPAROUND,
                             erratum=mmu.erratum, drop_rate=mmu.erratum_drop_rate,
                             rng=mmu._rng, flush_when_idle=mmu.flush_when_idle,
                             dirty=priv.dirty)

    def engine_store(self, domain: IommuDomain, dirty: bool) -> None:
        domain.priv.dirty = bool(dirty)

    def __repr__(self) -> str:
        return "<IpmmuVmsa %s contexts %d/%d%s>" % (
            self.name, self.contexts_in_use, self.num_contexts,
            " erratum" if self.erratum else "")
