"""The model drivers' common base: IommuDriver, the plumbing every driver in
pyiova.drivers shares (domain allocation, each domain's page table and
IOTLB, attribute storage and checks, checkpoints), and EngineProfile, what a
driver declares so that the C simulation engine can do what its methods do.

A driver is any object with the IommuOps methods (pyiova.iommu); the
IOMMU core (IommuDomain) calls them. Subclasses of IommuDriver decide what
invalidation means (unmap, iotlb_sync, flush_iotlb_all) and when the
hardware is set up (_init_domain or attach_dev).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _state
from .. import errors
from .. import iommu_errors as ierr
from ..iotlb import Iotlb
from ..pgtable import LPAE_4K_PGSIZES, IoPgtable
from ..allocators import AllocatorType
from ..iommu import DomainAttr, DomainType, IommuDomain, _domain_type

if TYPE_CHECKING:
    from ..device import Device
    from ..iommu import IotlbGather

__all__ = ["IommuDriver", "EngineProfile", "ENGINE_METHODS", "declares_own"]


class EngineProfile(NamedTuple):
    """A driver's behaviour on the DMA path, declared so that the C
    simulation engine (pyiova.engine) can do what the driver's methods do.

    invalidation     "range": unmap gathers what it cleared and iotlb_sync
                     invalidates that range; "context": iotlb_sync and every
                     flush drop the whole context
    skip_syncs       iotlb_sync does nothing but count itself as skipped
    erratum          a flush issued by iotlb_sync may be lost...
    drop_rate        ...with this probability (1.0: always)...
    rng              ...as this random.Random decides (its state is used and
                     written back)
    flush_when_idle  after an unmap's sync, flush the context once nothing is
                     mapped and an unmap left entries possibly cached
    dirty            that flag's value now (engine_store takes it back)
    """
    invalidation: str
    skip_syncs: bool = False
    erratum: bool = False
    drop_rate: float = 0.0
    rng: Any = None
    flush_when_idle: bool = False
    dirty: bool = False


# The driver methods whose behaviour an EngineProfile declares.
ENGINE_METHODS = ("map", "unmap", "iotlb_sync", "flush_iotlb_all", "domain_reset")


def declares_own(driver: object, cls: type, extra: tuple[str, ...] = ()) -> bool:
    """Whether driver runs cls's own versions of the methods a profile
    declares: a subclass that overrides one says more than cls's profile."""
    kind = type(driver)
    return all(getattr(kind, name, None) is getattr(cls, name)
               for name in ENGINE_METHODS + tuple(extra))


class IommuDriver:
    """Plumbing shared by the model drivers: domain allocation, the page
    table and IOTLB of each domain, attribute storage and checks.

    Subclasses decide what invalidation means (unmap, iotlb_sync,
    flush_iotlb_all) and when the hardware is set up (_init_domain or
    attach_dev).

    name           shown in messages and domain names
    pgsize_bitmap  page sizes the hardware maps (default 4K | 2M | 1G)
    ias, oas       input and output address bits of its page tables
    tlb_entries, tlb_ways   the IOTLB of each domain (ways 0: fully
                   associative LRU)
    record_limit   stale records kept per domain
    """

    domain_types = (DomainType.DMA, DomainType.UNMANAGED, DomainType.IDENTITY)
    supports_flush_queue = True

    def __init__(self, name: str, *, pgsize_bitmap: int = LPAE_4K_PGSIZES, ias: int = 48,
                 oas: int = 48, tlb_entries: int = 64, tlb_ways: int = 0,
                 record_limit: int = 65536) -> None:
        if not isinstance(name, str):
            raise errors.IovaTypeError("name must be a str")
        self.name = name
        self.pgsize_bitmap = pgsize_bitmap
        self.ias = ias
        self.oas = oas
        self.tlb_entries = tlb_entries
        self.tlb_ways = tlb_ways
        self.record_limit = record_limit
        # Build one of each now, so a bad configuration fails here rather
        # than at the first domain.
        IoPgtable(pgsize_bitmap, ias=ias, oas=oas)
        Iotlb(tlb_entries, tlb_ways, record_limit=record_limit)

    def new_pgtable(self) -> IoPgtable:
        return IoPgtable(self.pgsize_bitmap, ias=self.ias, oas=self.oas)

    def new_iotlb(self) -> Iotlb:
        return Iotlb(self.tlb_entries, self.tlb_ways, record_limit=self.record_limit)

    def _not_ready(self, domain: IommuDomain) -> errors.IovaError:
        return ierr.IommuNotReady("%s has no page table yet (attach a device first)"
                                  % domain.name)

    # -- domains ---------------------------------------------------------------
    def domain_alloc(self, type: DomainType | str | int) -> IommuDomain:
        dtype = _domain_type(type)
        if dtype not in self.domain_types:
            raise ierr.IommuDomainTypeError("%s cannot allocate %s domains"
                                            % (self.name, dtype.name))
        domain = IommuDomain(self, dtype, self.pgsize_bitmap)
        self._init_domain(domain)
        return domain

    def _init_domain(self, domain: IommuDomain) -> None:
        """Set up a new domain's hardware (default: nothing until attach)."""

    def domain_free(self, domain: IommuDomain) -> None:
        pass

    def attach_dev(self, domain: IommuDomain, dev: Device) -> None:
        raise ierr.IommuAttachError("the %s driver does not say how to attach a device "
                                    "(it defines no attach_dev)" % type(self).__name__)

    def detach_dev(self, domain: IommuDomain, dev: Device) -> None:
        pass

    # -- page table --------------------------------------------------------------
    def map(self, domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> None:
        pt = domain.pgtable
        if pt is None:
            raise self._not_ready(domain)
        pt.map(iova, paddr, size, prot)

    def unmap(self, domain: IommuDomain, iova: int, size: int, gather: IotlbGather) -> int:
        pt = domain.pgtable
        if pt is None:
            raise self._not_ready(domain)
        return pt.unmap(iova, size)

    def iova_to_phys(self, domain: IommuDomain, iova: int) -> int | None:
        pt = domain.pgtable
        return None if pt is None else pt.iova_to_phys(iova)

    # -- TLB -------------------------------------------------------------------
    def iotlb_sync(self, domain: IommuDomain, gather: IotlbGather) -> None:
        pass

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        tlb = domain.iotlb
        if tlb is not None:
            domain.counts.full_flushes += 1
            tlb.invalidate_all()

    def domain_reset(self, domain: IommuDomain) -> None:
        self.flush_iotlb_all(domain)

    # -- the C simulation engine -----------------------------------------------
    def engine_profile(self, domain: IommuDomain) -> EngineProfile | None:
        """How this driver behaves on domain's DMA path (an EngineProfile),
        or None when a profile cannot say it: the simulation then runs on
        the Python engine. Drivers that declare one override this."""
        return None

    def engine_store(self, domain: IommuDomain, dirty: bool) -> None:
        """Takes back what the engine changed of the profile's state."""

    # -- attributes --------------------------------------------------------------
    def domain_get_attr(self, domain: IommuDomain, attr: DomainAttr) -> Any:
        try:
            return domain.attrs[attr]
        except KeyError:
            raise ierr.IommuUnknownAttr("%s domains of %s have no attribute %s"
                                        % (domain.type.name, self.name, attr.name)) from None

    def domain_set_attr(self, domain: IommuDomain, attr: DomainAttr, value: Any) -> None:
        if attr not in domain.attrs:
            raise ierr.IommuUnknownAttr("%s domains of %s have no attribute %s"
                                        % (domain.type.name, self.name, attr.name))
        if attr is DomainAttr.DMA_USE_FLUSH_QUEUE:
            if not isinstance(value, bool):
                raise errors.IovaTypeError("DMA_USE_FLUSH_QUEUE takes a bool, not %r" % (value,))
            if value and not self.supports_flush_queue:
                raise ierr.IommuAttrValueError(
                    "%s has no deferred-flush support: its DMA domains are always strict"
                    % self.name)
        elif attr is DomainAttr.IOVA_ALLOCATOR:
            if not isinstance(value, str):
                raise errors.IovaTypeError("IOVA_ALLOCATOR takes an IovaAllocator or its name, "
                                           "not %r" % (value,))
            try:
                value = AllocatorType(value)
            except ValueError:
                raise ierr.IommuAttrValueError(
                    "unknown IOVA allocator %r (known: %s)"
                    % (value, ", ".join(a.value for a in AllocatorType))) from None
            if value is AllocatorType.MSI and domain.type is not DomainType.UNMANAGED:
                # iommu_get_msi_cookie refuses every other kind of domain
                raise ierr.IommuAttrValueError(
                    "IOVA_ALLOCATOR 'msi' is for unmanaged domains: the kernel gives MSI "
                    "cookies to no other kind, and %s is a %s domain"
                    % (domain.name, domain.type.name))
        if domain.attrs[attr] == value:
            return
        if domain.devices or (domain.pgtable is not None and domain.pgtable.mapped_bytes):
            raise ierr.IommuAttrBusy("%s of %s can only change before the first attach and "
                                     "while nothing is mapped" % (attr.name, domain.name))
        domain.attrs[attr] = value

    # -- pickling and deepcopy (checkpoints) ------------------------------------
    _STATE: dict[str, Any] = {"name": str, "pgsize_bitmap": int, "ias": int, "oas": int,
                              "tlb_entries": int, "tlb_ways": int, "record_limit": int}

    def __setstate__(self, state: Any) -> None:
        """The state checked against what the class keeps (a subclass of a
        pyiova driver may keep more), and its hardware configuration
        against what __init__ accepts."""
        cls = type(self)
        _state.check_fields("a driver %s" % cls.__name__, state, cls._STATE,
                            extra_ok=cls._EXTRA_STATE_OK)
        try:
            IoPgtable(state["pgsize_bitmap"], ias=state["ias"], oas=state["oas"])
            Iotlb(state["tlb_entries"], state["tlb_ways"], record_limit=state["record_limit"])
        except errors.IovaError as exc:
            raise _state.fail("driver %s" % state["name"], "has a bad configuration: %s" % exc) \
                from None
        self._check_state(state)
        self.__dict__.update(state)

    def _check_state(self, state: dict[str, Any]) -> None:
        """What a driver class checks of its own state (subclasses)."""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # a subclass outside pyiova may keep state of its own
        cls._EXTRA_STATE_OK = not cls.__module__.startswith("pyiova.")

    _EXTRA_STATE_OK = False

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, self.name)
