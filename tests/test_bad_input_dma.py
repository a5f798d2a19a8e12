"""A catalogue of bad inputs for the DMA API (pyiova.dma), the IOMMU domain
and its drivers, devices and cookies: each must raise the documented
pyiova exception, name the bad value in its message, and leave the whole
simulated system exactly as it was - the checkpoint of the driver, the
domains and the devices byte for byte (live mappings, the coherent page
allocator, page tables, IOTLBs, counters, cookies), and every validator
passing.

DMA calls raise DmaApiError (DmaApiTypeError for a wrong type) for what the
kernel's DMA API takes no such argument for, or its DMA-API debugging
reports (an unmap at an address no map returned...), and DmaMappingError
for a mapping that cannot be made. tests/test_bad_input_iova.py has the
same for IovaDomain, PfnAllocator and DmaCookie, tests/test_bad_input_runs.py
for the simulator and the command line.
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest

from bad_input import NOT_NAMED, Index, named
from dma_world import (BI, FROM, NONE, TO, World, assert_same, failed_alloc, generic, ipmmu,
                       refused_map)
from pyiova import dma
from pyiova.cookie import DmaCookie, cookie_of, get_dma_cookie, get_msi_cookie
from pyiova.device import DMA_BIT_MASK, Device
from pyiova.dma import CoherentBuffer, DmaDirection, SgMapping
from pyiova.drivers import GenericIommu, IpmmuVmsa
from pyiova.errors import (DmaApiError, DmaApiTypeError, DmaMappingError, IovaError,
                           IovaTypeError, IovaValueError)
from pyiova.iommu import DomainAttr, DomainGeometry, DomainType
from pyiova.iommu_errors import (IommuAlignmentError, IommuAttrValueError, IommuBusy,
                                 IommuMappingExists, IommuRangeError, IommuReadOnlyAttr,
                                 IommuUnknownAttr)


@dataclass
class Case:
    call: Callable[[World], Any]
    exc: type
    value: Any                   # what the message must name (NOT_NAMED: nothing useful)
    # None: the call changes nothing. Else what the kernel itself does when
    # this call fails (dma_world): the call must change exactly that.
    kernel: Optional[Callable[[World], Any]] = None


def mp(*a, **k):
    return lambda w: dma.map_page(w.pci, *a, **k)


def up(addr, *a, **k):
    return lambda w: dma.unmap_page(w.pci, addr(w), *a, **k)


def sg(segments, *a, **k):
    return lambda w: dma.map_sg(w.plat, segments, *a, **k)


def forged_sg(w, **changes):
    fields = dict(iova=w.sg.iova, length=w.sg.length, segments=w.sg.segments,
                  dma_addrs=w.sg.dma_addrs)
    fields.update(changes)
    return SgMapping(**fields)


def forged_buf(w, **changes):
    fields = dict(paddr=w.coh.paddr, dma_addr=w.coh.dma_addr, size=w.coh.size)
    fields.update(changes)
    return CoherentBuffer(**fields)


CASES = {
    # map_page: the physical address
    "map_page paddr True": Case(mp(True, 4096), DmaApiTypeError, True),
    "map_page paddr None": Case(mp(None, 4096), DmaApiTypeError, None),
    "map_page paddr 1.5": Case(mp(1.5, 4096), DmaApiTypeError, 1.5),
    "map_page paddr str": Case(mp("4096", 4096), DmaApiTypeError, "4096"),
    "map_page paddr -1": Case(mp(-1, 4096), DmaApiError, -1),
    "map_page paddr -4096": Case(mp(-4096, 4096), DmaApiError, -4096),
    "map_page paddr 2**64": Case(mp(2**64, 4096), DmaApiError, 2**64),
    "map_page paddr index-only negative": Case(mp(Index(-5), 4096), DmaApiError, -5),
    "map_page buffer past 2**64": Case(mp(2**64 - 4096, 8192), DmaApiError, 2**64 - 4096),
    # map_page: the size
    "map_page size 0": Case(mp(0x1000, 0), DmaApiError, 0),
    "map_page size -1": Case(mp(0x1000, -1), DmaApiError, -1),
    "map_page size 2**64": Case(mp(0x1000, 2**64), DmaApiError, 2**64),
    "map_page size 4095.9": Case(mp(0x1000, 4095.9), DmaApiTypeError, 4095.9),
    "map_page size str": Case(mp(0x1000, "4096"), DmaApiTypeError, "4096"),
    "map_page size True": Case(mp(0x1000, True), DmaApiTypeError, True),
    "map_page size None": Case(mp(0x1000, None), DmaApiTypeError, None),
    # map_page: the direction, the cpu, the device
    "map_page direction NONE": Case(mp(0x1000, 4096, NONE), DmaApiError, "NONE"),
    "map_page direction 7": Case(mp(0x1000, 4096, 7), DmaApiError, 7),
    "map_page direction -1": Case(mp(0x1000, 4096, -1), DmaApiError, -1),
    "map_page direction str": Case(mp(0x1000, 4096, "TO_DEVICE"), DmaApiTypeError, "TO_DEVICE"),
    "map_page direction True": Case(mp(0x1000, 4096, True), DmaApiTypeError, True),
    "map_page direction None": Case(mp(0x1000, 4096, None), DmaApiTypeError, None),
    "map_page cpu -1": Case(mp(0x1000, 4096, TO, cpu=-1), DmaApiError, -1),
    "map_page cpu 2": Case(mp(0x1000, 4096, TO, cpu=2), DmaApiError, 2),
    "map_page cpu str": Case(mp(0x1000, 4096, TO, cpu="0"), DmaApiTypeError, "0"),
    "map_page cpu 1.0": Case(mp(0x1000, 4096, TO, cpu=1.0), DmaApiTypeError, 1.0),
    "map_page cpu True": Case(mp(0x1000, 4096, TO, cpu=True), DmaApiTypeError, True),
    "map_page dev None": Case(lambda w: dma.map_page(None, 0x1000, 4096), DmaApiTypeError, None),
    "map_page dev str": Case(lambda w: dma.map_page("pci0", 0x1000, 4096), DmaApiTypeError,
                             "pci0"),
    "map_page dev attached nowhere": Case(lambda w: dma.map_page(w.lone, 0x1000, 4096),
                                          DmaApiError, "lone"),
    "map_page dev in an identity domain": Case(lambda w: dma.map_page(w.idev, 0x1000, 4096),
                                               DmaApiError, "IDENTITY"),
    # map_page: what no IOVA space or IOMMU could take
    "map_page mask 0": Case(lambda w: dma.map_page(w.zero, 0x1000, 4096), DmaMappingError,
                            "0x0"),
    "map_page size beyond the space": Case(mp(0x1000, 1 << 50), DmaMappingError, 1 << 50,
                                           failed_alloc("pci", 1 << 50)),
    "map_page paddr beyond the IOMMU's output": Case(mp(1 << 60, 4096), DmaMappingError,
                                                     1 << 60, refused_map("pci", 1 << 60, 4096)),
    # unmap_page
    "unmap_page a + 0x10": Case(up(lambda w: w.page + 0x10, 0x2000, TO), DmaApiError,
                                "not allocated"),
    "unmap_page a - 0x10": Case(up(lambda w: w.page - 0x10, 0x2000, TO), DmaApiError,
                                "not allocated"),
    "unmap_page the next page": Case(up(lambda w: w.page + 0x1000, 0x2000, TO), DmaApiError,
                                     "never mapped"),
    "unmap_page never mapped": Case(up(lambda w: 0x7000, 0x1000, TO), DmaApiError, 0x7000),
    "unmap_page wrong size": Case(up(lambda w: w.page, 0x1000, TO), DmaApiError, "size"),
    "unmap_page wrong direction": Case(up(lambda w: w.page, 0x2000, FROM), DmaApiError,
                                       "FROM_DEVICE"),
    "unmap_page direction NONE": Case(up(lambda w: w.page, 0x2000, NONE), DmaApiError, "NONE"),
    "unmap_page of another device": Case(lambda w: dma.unmap_page(w.plat, w.page, 0x2000, TO),
                                         DmaApiError, "pci0"),
    "unmap_page of an sg mapping": Case(lambda w: dma.unmap_page(w.plat, w.sg.iova,
                                                                 w.sg.length, FROM),
                                        DmaApiError, "map_sg"),
    "unmap_page of a coherent buffer": Case(lambda w: dma.unmap_page(w.plat, w.coh.dma_addr,
                                                                     100, BI),
                                            DmaApiError, "alloc_coherent"),
    "unmap_page dma_addr -1": Case(up(lambda w: -1, 0x2000, TO), DmaApiError, -1),
    "unmap_page dma_addr 2**64": Case(up(lambda w: 2**64, 0x2000, TO), DmaApiError, 2**64),
    "unmap_page dma_addr str": Case(up(lambda w: "0x1000", 0x2000, TO), DmaApiTypeError,
                                    "0x1000"),
    "unmap_page dma_addr None": Case(up(lambda w: None, 0x2000, TO), DmaApiTypeError, None),
    "unmap_page dma_addr float": Case(up(lambda w: float(w.page), 0x2000, TO), DmaApiTypeError,
                                      "float"),
    "unmap_page size 0": Case(up(lambda w: w.page, 0, TO), DmaApiError, 0),
    "unmap_page size None": Case(up(lambda w: w.page, None, TO), DmaApiTypeError, None),
    "unmap_page cpu 5": Case(up(lambda w: w.page, 0x2000, TO, cpu=5), DmaApiError, 5),
    "unmap_page cpu -1": Case(up(lambda w: w.page, 0x2000, TO, cpu=-1), DmaApiError, -1),
    "unmap_page dev None": Case(lambda w: dma.unmap_page(None, w.page, 0x2000, TO),
                                DmaApiTypeError, None),
    "unmap_page dev attached nowhere": Case(lambda w: dma.unmap_page(w.lone, w.page, 0x2000),
                                            DmaApiError, "lone"),
    "unmap_page in a domain without a cookie": Case(
        lambda w: dma.unmap_page(Device("u"), 0x1000, 0x1000) if False else
        _unmap_in_a_fresh_domain(w), DmaApiError, "never mapped"),
    # map_sg
    "map_sg None": Case(sg(None), DmaApiTypeError, None),
    "map_sg int": Case(sg(5), DmaApiTypeError, 5),
    "map_sg str": Case(sg("0x1000"), DmaApiTypeError, "0x1000"),
    "map_sg empty": Case(sg([]), DmaApiError, "empty"),
    "map_sg float length": Case(sg([(0x1000, 4095.9)]), DmaApiTypeError, 4095.9),
    "map_sg str entries": Case(sg([("4096", "4096")]), DmaApiTypeError, "4096"),
    "map_sg bool entries": Case(sg([(True, True)]), DmaApiTypeError, True),
    "map_sg None entry": Case(sg([(0x1000, 4096), None]), DmaApiTypeError, "segments[1]"),
    "map_sg triple": Case(sg([(0x1000, 4096, 0)]), DmaApiTypeError, "segments[0]"),
    "map_sg length 0": Case(sg([(0x1000, 0)]), DmaApiError, "segments[0]"),
    "map_sg length 2**32": Case(sg([(0x1000, 2**32)]), DmaApiError, 2**32),
    "map_sg paddr -1": Case(sg([(-1, 4096)]), DmaApiError, -1),
    "map_sg past 2**64": Case(sg([(2**64 - 1, 2)]), DmaApiError, 2**64 - 1),
    "map_sg direction NONE": Case(sg([(0x1000, 4096)], NONE), DmaApiError, "NONE"),
    "map_sg direction str": Case(sg([(0x1000, 4096)], "x"), DmaApiTypeError, "x"),
    "map_sg cpu 9": Case(sg([(0x1000, 4096)], TO, cpu=9), DmaApiError, 9),
    "map_sg dev None": Case(lambda w: dma.map_sg(None, [(0x1000, 4096)]), DmaApiTypeError, None),
    "map_sg paddr beyond the IOMMU's output": Case(
        sg([(0x1000, 4096), (1 << 60, 4096)]), DmaMappingError, 1 << 60,
        refused_map("plat", 1 << 60, 8192, segments=[(0x1000, 4096)], prot=3)),
    "map_sg mask 0": Case(lambda w: dma.map_sg(w.zero, [(0x1000, 4096)]), DmaMappingError,
                          "0x0"),
    # unmap_sg
    "unmap_sg not an SgMapping": Case(lambda w: dma.unmap_sg(w.plat, (w.sg.iova, w.sg.length)),
                                      DmaApiTypeError, "tuple"),
    "unmap_sg None": Case(lambda w: dma.unmap_sg(w.plat, None), DmaApiTypeError, None),
    "unmap_sg iova + 0x10": Case(lambda w: dma.unmap_sg(w.plat, forged_sg(w, iova=w.sg.iova
                                                                          + 0x10), FROM),
                                 DmaApiError, "not allocated"),
    "unmap_sg wrong length": Case(lambda w: dma.unmap_sg(w.plat, forged_sg(w, length=0x1000),
                                                         FROM), DmaApiError, "size"),
    "unmap_sg iova str": Case(lambda w: dma.unmap_sg(w.plat, forged_sg(w, iova="x"), FROM),
                              DmaApiTypeError, "x"),
    "unmap_sg wrong direction": Case(lambda w: dma.unmap_sg(w.plat, w.sg, TO), DmaApiError,
                                     "TO_DEVICE"),
    "unmap_sg of another device": Case(lambda w: dma.unmap_sg(w.pci, w.sg, FROM), DmaApiError,
                                       "plat0"),
    "unmap_sg cpu 2": Case(lambda w: dma.unmap_sg(w.plat, w.sg, FROM, cpu=2), DmaApiError, 2),
    # alloc_coherent
    "alloc_coherent size 0": Case(lambda w: dma.alloc_coherent(w.plat, 0), DmaApiError, 0),
    "alloc_coherent size -1": Case(lambda w: dma.alloc_coherent(w.plat, -1), DmaApiError, -1),
    "alloc_coherent size 2**64": Case(lambda w: dma.alloc_coherent(w.plat, 2**64), DmaApiError,
                                      2**64),
    "alloc_coherent size str": Case(lambda w: dma.alloc_coherent(w.plat, "4096"),
                                    DmaApiTypeError, "4096"),
    "alloc_coherent size float": Case(lambda w: dma.alloc_coherent(w.plat, 4096.0),
                                      DmaApiTypeError, 4096.0),
    "alloc_coherent size True": Case(lambda w: dma.alloc_coherent(w.plat, True),
                                     DmaApiTypeError, True),
    "alloc_coherent cpu -1": Case(lambda w: dma.alloc_coherent(w.plat, 4096, cpu=-1),
                                  DmaApiError, -1),
    "alloc_coherent dev None": Case(lambda w: dma.alloc_coherent(None, 4096), DmaApiTypeError,
                                    None),
    "alloc_coherent coherent mask 0xfff": Case(lambda w: dma.alloc_coherent(w.zero, 4096),
                                               DmaMappingError, "0xfff"),
    "alloc_coherent 2**40 beyond the space": Case(
        lambda w: dma.alloc_coherent(w.pci, 2**40), DmaMappingError, 2**40,
        failed_alloc("pci", 2**40, "coherent_dma_mask")),
    "alloc_coherent 2**48": Case(lambda w: dma.alloc_coherent(w.pci, 2**48), DmaMappingError,
                                 2**48, failed_alloc("pci", 2**48, "coherent_dma_mask")),
    "alloc_coherent 2**64 - 1": Case(lambda w: dma.alloc_coherent(w.pci, 2**64 - 1),
                                     DmaMappingError, NOT_NAMED),
    # free_coherent
    "free_coherent not a buffer": Case(lambda w: dma.free_coherent(w.plat, w.coh.dma_addr),
                                       DmaApiTypeError, "int"),
    "free_coherent twice": Case(lambda w: dma.free_coherent(w.plat, w.gone), DmaApiError,
                                "never mapped"),
    "free_coherent dma_addr + 0x10": Case(lambda w: dma.free_coherent(
        w.plat, forged_buf(w, dma_addr=w.coh.dma_addr + 0x10)), DmaApiError, "not allocated"),
    # (a coherent mapping records its whole pages, as dma-iommu maps them)
    "free_coherent wrong size": Case(lambda w: dma.free_coherent(w.plat,
                                                                 forged_buf(w, size=4097)),
                                     DmaApiError, "size"),
    "free_coherent wrong paddr": Case(lambda w: dma.free_coherent(
        w.plat, forged_buf(w, paddr=w.coh.paddr + 0x1000)), DmaApiError, "physical"),
    "free_coherent paddr str": Case(lambda w: dma.free_coherent(w.plat, forged_buf(w, paddr="x")),
                                    DmaApiTypeError, "x"),
    "free_coherent of another device": Case(lambda w: dma.free_coherent(w.pci, w.coh),
                                            DmaApiError, "plat0"),
    "free_coherent cpu 7": Case(lambda w: dma.free_coherent(w.plat, w.coh, cpu=7), DmaApiError,
                                7),

    # domain attributes and cookies
    "set_attr msi on a DMA domain": Case(lambda w: w.dom.set_attr(DomainAttr.IOVA_ALLOCATOR,
                                                                  "msi"),
                                         IommuAttrValueError, "msi"),
    "set_attr msi on a fresh DMA domain": Case(
        lambda w: w.drv.domain_alloc(DomainType.DMA).set_attr("iova_allocator", "msi")
        if isinstance(w.drv, GenericIommu) else
        w.dom.set_attr("iova_allocator", "msi"), IommuAttrValueError, "unmanaged"),
    "set_attr unknown allocator": Case(lambda w: w.udom.set_attr(DomainAttr.IOVA_ALLOCATOR,
                                                                 "best-fit"),
                                       IommuAttrValueError, "best-fit"),
    "set_attr allocator int": Case(lambda w: w.udom.set_attr(DomainAttr.IOVA_ALLOCATOR, 2),
                                   IovaTypeError, 2),
    "set_attr flush queue int": Case(lambda w: w.udom.set_attr("dma_use_flush_queue", 1),
                                     IommuUnknownAttr, "DMA_USE_FLUSH_QUEUE"),
    "set_attr geometry": Case(lambda w: w.dom.set_attr(DomainAttr.GEOMETRY, DomainGeometry()),
                              IommuReadOnlyAttr, "GEOMETRY"),
    "set_attr unknown name": Case(lambda w: w.dom.set_attr("colour", 1), IommuUnknownAttr,
                                  "colour"),
    "set_attr allocator with devices attached": Case(
        lambda w: w.dom.set_attr(DomainAttr.IOVA_ALLOCATOR, "wraparound"), IovaError,
        "IOVA_ALLOCATOR"),
    "get_dma_cookie msi": Case(lambda w: get_dma_cookie(w.udom, "msi"), IovaValueError,
                               "get_msi_cookie"),
    "get_dma_cookie twice": Case(lambda w: get_dma_cookie(w.dom), IovaValueError, "already"),
    "get_msi_cookie on a DMA domain": Case(lambda w: get_msi_cookie(w.dom, 0x800_0000),
                                           IovaValueError, "unmanaged"),
    "msi cookie base in page 0": Case(lambda w: DmaCookie("msi", msi_base=0x800).init_domain(
        4096), IovaValueError, 0x800),
    "msi cookie base from aperture 0": Case(lambda w: DmaCookie("msi").init_domain(4096, 0),
                                            IovaValueError, "0x0"),

    # the core's operations on the domain
    "domain map unaligned": Case(lambda w: w.dom.map(0x100_0800, 0x5000, 4096),
                                 IommuAlignmentError, "0x1000800"),
    "domain map size 0": Case(lambda w: w.dom.map(0x100_0000, 0x5000, 0), IommuAlignmentError,
                              "0"),
    "domain map paddr str": Case(lambda w: w.dom.map(0x100_0000, "x", 4096), IovaTypeError,
                                 "x"),
    "domain map outside the aperture": Case(lambda w: w.dom.map(1 << 50, 0x5000, 4096),
                                            IommuRangeError, 1 << 50),
    "domain map prot 0": Case(lambda w: w.dom.map(0x100_0000, 0x5000, 4096, 0), IovaValueError,
                              "prot"),
    "domain unmap unaligned": Case(lambda w: w.dom.unmap(0x100_0800, 4096), IommuAlignmentError,
                                   "0x1000800"),
    "domain unmap iova None": Case(lambda w: w.dom.unmap(None, 4096), IovaTypeError, None),
    "domain unmap_fast gather None": Case(lambda w: w.dom.unmap_fast(0x100_0000, 4096, None),
                                          IovaTypeError, "gather"),
    "domain iotlb_sync not a gather": Case(lambda w: w.dom.iotlb_sync([]), IovaTypeError,
                                           "gather"),
    "domain map on an identity domain": Case(lambda w: w.idom.map(0x1000, 0x1000, 4096),
                                             IovaError, "IDENTITY"),
    "domain map_many lengths differ": Case(lambda w: w.dom.map_many([0x100_0000], [0x5000], []),
                                           IovaValueError, NOT_NAMED),
    "domain unmap_many lengths differ": Case(lambda w: w.dom.unmap_many([0x100_0000], []),
                                             IovaValueError, NOT_NAMED),
    "domain free with devices": Case(lambda w: w.dom.free(), IommuBusy, "pci0"),
    "domain detach a device of another": Case(lambda w: w.idom.detach_device(w.pci),
                                              IovaValueError, "pci0"),
    "domain attach not a device": Case(lambda w: w.udom.attach_device("pci0"), IovaTypeError,
                                       "str"),
    "domain attach a device of another": Case(lambda w: w.udom.attach_device(w.pci), IommuBusy,
                                              "pci0"),
    "domain_alloc unknown type": Case(lambda w: w.drv.domain_alloc("blocked"), IovaError,
                                      "blocked"),

    # devices
    "Device name int": Case(lambda w: Device(5), IovaTypeError, "int"),
    "Device mask negative": Case(lambda w: Device("d", dma_mask=-1), IovaValueError, "-0x1"),
    "Device mask 2**64": Case(lambda w: Device("d", dma_mask=2**64), IovaValueError, "0x1"),
    "Device mask str": Case(lambda w: Device("d", dma_mask="32"), IovaTypeError, "str"),
    "Device is_pci 1": Case(lambda w: Device("d", is_pci=1), IovaTypeError, "int"),
    "set_dma_mask None": Case(lambda w: w.pci.set_dma_mask(None), IovaTypeError, "NoneType"),
    "set_coherent_dma_mask 2**64": Case(lambda w: w.pci.set_coherent_dma_mask(2**64),
                                        IovaValueError, "0x1"),
    "DMA_BIT_MASK 65": Case(lambda w: DMA_BIT_MASK(65), IovaValueError, 65),
    "dma_access str": Case(lambda w: w.pci.dma_access("x"), IovaTypeError, "x"),
    "dma_access negative": Case(lambda w: w.pci.dma_access(-1), IovaValueError, -1),
    "dma_access above the mask": Case(lambda w: w.plat.dma_access(1 << 33), IommuRangeError,
                                      1 << 33),
    "dma_access attached nowhere": Case(lambda w: w.lone.dma_access(0x1000), IovaError, "lone"),
    "dma_access_many above the mask": Case(lambda w: w.plat.dma_access_many([1 << 33]),
                                           IommuRangeError, 1 << 33),
    "dma_access_many uint8 buffer": Case(lambda w: w.plat.dma_access_many(bytearray(3)),
                                         IovaTypeError, "3 raw bytes"),
    "attach to a str": Case(lambda w: w.lone.attach("smmu-dma-1"), IovaTypeError, "smmu-dma-1"),
    "mappings of a str": Case(lambda w: dma.mappings("smmu-dma-1"), DmaApiTypeError,
                              "smmu-dma-1"),
    "dma_cookie of a str": Case(lambda w: dma.dma_cookie("pci0"), DmaApiTypeError, "pci0"),
    "get_dma_cookie of a str": Case(lambda w: get_dma_cookie("dom"), IovaTypeError, "dom"),
    "cookie_of an int": Case(lambda w: cookie_of(5), IovaTypeError, "5"),

    # drivers and cookies: flags are bools, seeds integers
    "GenericIommu deferred_flush str": Case(lambda w: GenericIommu(deferred_flush="no"),
                                            IovaTypeError, "no"),
    "IpmmuVmsa seed list": Case(lambda w: IpmmuVmsa(seed=[1]), IovaTypeError, "[1]"),
    "IpmmuVmsa seed dict": Case(lambda w: IpmmuVmsa(seed={}), IovaTypeError, "{}"),
    "IpmmuVmsa drop rate nan": Case(lambda w: IpmmuVmsa(erratum_drop_rate=float("nan")),
                                    IovaValueError, "nan"),
    "IpmmuVmsa erratum 1": Case(lambda w: IpmmuVmsa(erratum=1), IovaTypeError, "1"),
    "DmaCookie forcedac str": Case(lambda w: DmaCookie(forcedac="no"), IovaTypeError, "no"),
    "DmaCookie rcache 0": Case(lambda w: DmaCookie(rcache=0), IovaTypeError, "0"),
    "init_domain force_aperture str": Case(lambda w: DmaCookie().init_domain(
        4096, force_aperture="no"), IovaTypeError, "no"),
    "init_domain flush_queue 1": Case(lambda w: DmaCookie().init_domain(4096, flush_queue=1),
                                      IovaTypeError, "1"),
}


def _unmap_in_a_fresh_domain(w):
    """An unmap in a domain that never had a DMA call: nothing to unmap, and
    no cookie made for it."""
    dom = w.drv.domain_alloc(DomainType.DMA) if isinstance(w.drv, GenericIommu) else w.udom
    if dom.type is not DomainType.DMA:
        return dma.unmap_page(w.pci, 0x7000, 0x1000, TO)
    dev = Device("fresh")
    dev.attach(dom)
    try:
        dma.unmap_page(dev, 0x7000, 0x1000, TO)
    finally:
        assert cookie_of(dom) is None                 # the unmap set nothing up
        dev.detach()


@pytest.mark.parametrize("make", [generic, ipmmu])
@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in CASES.items()])
def test_bad_input(case, make):
    w = make()
    before = w.snapshot()
    parts = content = None
    if case.kernel is not None:
        twin = w.twin(before)
        case.kernel(twin)
        parts, content = twin.parts(), twin.content()
    with pytest.raises(case.exc) as e:
        case.call(w)
    assert isinstance(e.value, IovaError)
    assert named(case.value, str(e.value)), "%r is not named in %r" % (case.value, str(e.value))
    w.check()
    assert_same(w, before, parts, "the refused call", content)


def test_a_twin_is_the_same_system():
    """The reference the kernel rows compare with is sound: a twin restored
    from the system's bytes saves to the same bytes."""
    for make in (generic, ipmmu):
        w = make()
        twin = w.twin(w.snapshot())
        assert twin.content() == w.content() and twin.parts() == w.parts()
        dma.unmap_page(twin.pci, twin.page, 0x2000, TO)
        assert twin.content() != w.content()


def test_a_refused_overlapping_map_changes_nothing_but_the_refusal_count():
    """The page table counts the maps it refused (PgtableStats.map_failures);
    nothing else changes."""
    w = generic()
    before = w.parts()
    stats = w.dom.pgtable.stats()
    with pytest.raises(IommuMappingExists):
        w.dom.map(w.page & ~0xFFF, 0x5000, 4096)
    after = w.parts()
    assert w.dom.pgtable.stats() == stats._replace(map_failures=stats.map_failures + 1)
    assert {k: v for k, v in after.items() if k != "page table"} == \
        {k: v for k, v in before.items() if k != "page table"}


def test_dma_calls_raise_only_dma_errors():
    """Every catalogue row of a DMA call raises DmaApiError or
    DmaMappingError, never another pyiova error."""
    dma_calls = [name for name in CASES if name.split()[0] in (
        "map_page", "unmap_page", "map_sg", "unmap_sg", "alloc_coherent", "free_coherent")]
    assert len(dma_calls) > 80
    for name in dma_calls:
        assert issubclass(CASES[name].exc, (DmaApiError, DmaMappingError)), name


def test_every_dma_call_has_rows():
    covered = " ".join(CASES)
    for name in dma.__all__:
        obj = getattr(dma, name)
        if callable(obj) and not isinstance(obj, type) and name not in ("mappings", "dma_cookie"):
            assert name in covered, name


# ---- the same calls done right still work --------------------------------------------

def test_integers_that_are_not_plain_ints_are_taken():
    np = pytest.importorskip("numpy")
    w = generic()
    a = dma.map_page(w.pci, np.uint64(0x5000), np.int64(0x3000), TO, cpu=np.int32(1))
    assert type(a) is int and w.dom.iova_to_phys(a & ~0xFFF) == 0x5000
    dma.unmap_page(w.pci, np.uint64(a), np.uint64(0x3000), TO, cpu=np.uint8(1))
    s = dma.map_sg(w.plat, [(np.uint64(0x9000), np.uint32(100)), (Index(0xA000), 4096)],
                   DmaDirection(2))
    dma.unmap_sg(w.plat, s, 2)
    buf = dma.alloc_coherent(w.plat, np.uint16(300))
    dma.free_coherent(w.plat, buf)
    w.check()


def test_an_unmap_at_the_exact_address_map_returned():
    w = generic()
    a = dma.map_page(w.pci, 0x5010, 0x100, TO)
    assert a & 0xFFF == 0x10
    for wrong in (a - 0x10, a + 0x10, a + 0xFEF):
        with pytest.raises(DmaApiError, match="not an address a map returned"):
            dma.unmap_page(w.pci, wrong, 0x100, TO)
    dma.unmap_page(w.pci, a, 0x100, TO)
    assert a & ~0xFFF not in dma.mappings(w.dom)


def test_unmaps_set_up_nothing():
    """An unmap in a domain whose devices never mapped anything refuses it
    without making a cookie."""
    drv = GenericIommu("g")
    dom = drv.domain_alloc(DomainType.DMA)
    dev = Device("d")
    dev.attach(dom)
    for call in (lambda: dma.unmap_page(dev, 0x1000, 0x1000),
                 lambda: dma.free_coherent(dev, CoherentBuffer(0x4000_0000, 0x1000, 4096)),
                 lambda: dma.unmap_sg(dev, SgMapping(0x1000, 0x1000, ((0, 4096),), [0x1000]))):
        with pytest.raises(DmaApiError, match="never mapped"):
            call()
    assert cookie_of(dom) is None


def test_a_device_whose_mask_leaves_no_space_gets_a_mapping_error_in_bytes():
    drv = IpmmuVmsa("ipmmu")
    dom = drv.domain_alloc(DomainType.DMA)
    for mask in (0, 0xFFF):
        dev = Device("m%x" % mask, dma_mask=mask, coherent_dma_mask=mask)
        dev.attach(dom)
        with pytest.raises(DmaMappingError, match="DMA mask %#x leaves it no IOVA space" % mask):
            dma.map_page(dev, 0x1000, 4096)
        with pytest.raises(DmaMappingError, match="%#x" % mask):
            dma.alloc_coherent(dev, 4096)
        dev.detach()
    assert not dma.mappings(dom)
    # the limit is a pfn, inclusive: a mask reaching into pfn 1 gets that page
    # (IOVA page 0 is never handed out)
    for mask in (0x1000, 0x1FFF):
        dev = Device("m%x" % mask, dma_mask=mask)
        dev.attach(dom)
        a = dma.map_page(dev, 0x5000, 4096)
        assert a == 0x1000
        with pytest.raises(DmaMappingError, match="for 0x2000 bytes"):
            dma.map_page(dev, 0x5000, 8192)
        dma.unmap_page(dev, a, 4096)
        dev.detach()


def test_typed_buffers_are_not_read_as_words():
    """Only raw bytes are an opt-in for 8-byte words: typed buffers of 1-,
    2- or 4-byte items are a type error, in every batch call."""
    import array
    from pyiova import IovaDomain
    d = IovaDomain(4096, 1, ncpus=1)
    one = [1, 0, 0, 0, 0, 0, 0, 0]
    typed = [array.array("b", one), array.array("B", one), array.array("h", one[:4]),
             array.array("i", one[:2]), memoryview(array.array("B", one))]
    try:
        import numpy as np
        typed += [np.array(one, np.uint8), np.array(one[:4], np.uint16),
                  np.array(one[:2], np.int32), memoryview(np.array(one, np.uint8))]
    except ImportError:
        pass
    for buf in typed:
        for call in (lambda: d.alloc_many(buf, 0xFFFFF), lambda: d.alloc_fast_many(buf, 0xFFFFF),
                     lambda: d.free_many(buf), lambda: d.free_fast_many(buf, [1])):
            with pytest.raises(IovaTypeError, match="items"):
                call()
    assert len(d) == 0
    raw = bytes(one)
    for buf in (raw, bytearray(raw), memoryview(raw)):
        pfns = d.alloc_many(buf, 0xFFFFF)
        assert len(pfns) == 1 and d.find(pfns[0]) == (pfns[0], pfns[0])
        d.free_many(pfns)
    d.check()
