"""The C core's error codes and what each raises.

One table: each IOVA_E_* code of csrc/iova_errors.h maps to one exception
class, whichever structure returned it (domain, allocator, page table,
IOTLB, simulation engine), and to the message that names the offending
values. Every binding module raises through error(); the values come from
the call (the pfn, the size, the domain's limits...), and where one code
arises in situations a user tells apart, the table holds one message per
variant.
"""
from __future__ import annotations

from typing import Any, Union

from ._pyiova import lib
from .errors import (IovaClosed, IovaCorrupted, IovaCpuError, IovaError, IovaExhausted,
                     IovaInvalidFree, IovaNoMemory, IovaNotFound, IovaValueError, LaterMessage)
from .iommu_errors import IommuAlignmentError, IommuFault, IommuMappingExists, IommuRangeError

__all__ = ["ERRORS", "error"]

# A code's message, or its messages by variant.
_Messages = Union[str, dict[str, str]]

ERRORS: dict[int, tuple[type[IovaError], _Messages]] = {
    lib.IOVA_E_NOMEM: (IovaNoMemory, "out of memory %(where)s"),
    lib.IOVA_E_CLOSED: (IovaClosed, "%(what)s is closed"),
    lib.IOVA_E_SIZE: (IovaValueError, {
        "": "size %(size)r is not in 1..%(max_size)#x",
        "batch": "sizes[%(index)d] = %(size)d is not in 1..%(max_size)#x"}),
    lib.IOVA_E_LIMIT: (IovaValueError, {
        "": "limit_pfn %(limit_pfn)#x is below start_pfn %(start_pfn)#x or above the highest "
            "pfn %(max_pfn)#x",
        "space": "limit_pfn %(limit_pfn)#x is below the allocator's space (pfns "
                 "%(start_pfn)#x..%(max_pfn)#x)"}),
    lib.IOVA_E_PFN: (IovaValueError, "%(name)s %(value)#x is beyond what a %(granule)d-byte "
                                     "granule can address in 64 bits (max %(max_pfn)#x)"),
    lib.IOVA_E_NOTFOUND: (IovaNotFound, {
        "": "no allocated range contains pfn %(pfn)#x",
        "start": "no range handed out starts at pfn %(pfn)#x"}),
    lib.IOVA_E_NOTSTART: (IovaInvalidFree, "pfn %(pfn)#x is inside a range but is not its "
                                           "first pfn"),
    lib.IOVA_E_CACHED: (IovaInvalidFree, "the range at pfn %(pfn)#x is already freed: it sits "
                                         "in an rcache magazine"),
    lib.IOVA_E_SIZECLASS: (IovaInvalidFree, "size %(size)d names another size class than the "
                                            "range at pfn %(pfn)#x"),
    lib.IOVA_E_RANGE: (IovaValueError, {
        "": "reserve: lo %(lo)#x is above hi %(hi)#x",
        "space": "bad allocator space: granule %(granule)r, pfns %(start_pfn)r..%(end_pfn)r "
                 "(start_pfn <= end_pfn < 2**63)"}),
    lib.IOVA_E_CPU: (IovaCpuError, {
        "": "cpu %(cpu)r is not in 0..%(max_cpu)d",
        "ring": "cpu %(cpu)r is not in 0..%(max_cpu)d, the flush queue's rings",
        "rings": "flush queue ncpus %(ncpus)r: the domain has %(slots)d CPU slots"}),
    lib.IOVA_E_ANCHOR: (IovaInvalidFree, "pfn %(pfn)#x is the anchor node, which is never freed"),
    lib.IOVA_E_NOSPC: (IovaExhausted, "no free range of %(size)d pages at or below limit_pfn "
                                      "%(limit_pfn)#x"),
    lib.IOVA_E_GRANULE: (IovaValueError, "granule %(granule)r is not a power of two in "
                                         "2..65536"),
    lib.IOVA_E_START: (IovaValueError, "start_pfn %(start_pfn)#x is beyond what a "
                                       "%(granule)d-byte granule can address"),
    lib.IOVA_E_NCPUS: (IovaValueError, "ncpus %(ncpus)r is not in 1..%(max_cpus)d"),
    lib.IOVA_E_KERNEL: (IovaValueError, "kernel %(kernel)r is not one of %(kernels)s"),
    lib.IOVA_E_DMA32: (IovaValueError, "dma_32bit_pfn %(dma_32bit_pfn)#x is beyond what a "
                                       "%(granule)d-byte granule can address"),
    lib.IOVA_E_MODE: (IovaValueError, "search %(search)r is not one of %(modes)s"),
    lib.IOVA_E_TOOMANY: (IovaNoMemory, "the domain holds as many ranges as a node index can "
                                       "address"),
    lib.IOVA_E_CORRUPT: (IovaCorrupted, "%(report)s"),
    lib.IOVA_E_STATE: (IovaValueError, {
        "": "the saved %(what)s is corrupt or inconsistent",
        "lent": "the saved %(what)s is corrupt or inconsistent, or does not fit its IOVA "
                "domain"}),
    lib.IOVA_E_ARG: (IovaValueError, "%(what)s is malformed"),
    lib.IOVA_E_GEOMETRY: (IovaValueError, "bad %(what)s (%(rules)s)"),
    lib.IOVA_E_ALIGN: (IommuAlignmentError, {
        "": "%(name)s %(value)#x is not a multiple of the %(granule)#x-byte granule",
        "zero": "size must not be 0"}),
    lib.IOVA_E_PROT: (IovaValueError, "prot %(prot)r must hold READ (1) or WRITE (2) and only "
                                      "bits of %(prot_all)#x"),
    lib.IOVA_E_ADDR: (IommuRangeError, {
        "in": "iova range %(iova)#x+%(size)#x goes beyond the %(ias)d-bit input address size",
        "out": "physical range %(paddr)#x+%(size)#x goes beyond the %(oas)d-bit output "
               "address size"}),
    lib.IOVA_E_EXISTS: (IommuMappingExists, "iova range %(iova)#x+%(size)#x overlaps an "
                                            "existing mapping%(held)s"),
    lib.IOVA_E_FAULT: (IommuFault, "%(who)stranslation fault on %(rw)s of iova %(iova)#x: "
                                   "nothing maps it"),
    lib.IOVA_E_PERM: (IommuFault, "%(who)spermission fault on %(rw)s of iova %(iova)#x"),
    lib.IOVA_E_FQ_FULL: (IovaError, "the flush queue's ring is still full after a flush"),
    lib.IOVA_E_NOT_LIVE: (IovaInvalidFree, "the range at pfn %(pfn)#x is not handed out"),
    lib.IOVA_E_COOKIE: (IovaValueError, "a %(type)s allocator cannot do that"),
    lib.IOVA_E_QUEUED: (IovaInvalidFree, "the range at pfn %(pfn)#x is already freed: it "
                                         "waits in the flush queue"),
    lib.IOVA_E_FQ_LOST: (IovaInvalidFree, "a range waiting in the flush queue could no longer "
                                          "be freed when its flush came (it was freed behind "
                                          "the queue's back); it was dropped from the queue"),
    lib.IOVA_E_FREE_SIZE: (IovaInvalidFree, "%(pages)d pages is not the size of the range at "
                                            "pfn %(pfn)#x"),
    lib.IOVA_E_OVERLAP: (IovaValueError, "reserve: [%(lo)#x, %(hi)#x] overlaps ranges already "
                                         "held"),
}


def template(code: int, variant: str = "") -> tuple[type[IovaError], str]:
    """(exception class, message template) for code (and variant)."""
    cls, fmt = ERRORS[code]
    if isinstance(fmt, dict):
        fmt = fmt.get(variant) or fmt.get("") or next(iter(fmt.values()))
    return cls, fmt


def error(code: int, variant: str = "", *, lazy: bool = False, **values: Any) -> IovaError:
    """The exception for the C core's negative return code `code`: the
    table's class, its message for `variant` filled in from `values`.

    lazy: the message is formatted when first read (for errors callers
    expect and catch by the thousand). A code the table does not know, or
    values its message cannot take, still give an IovaError that says so:
    an error report never fails itself."""
    try:
        cls, fmt = template(code, variant)
    except KeyError:
        return IovaError("the C core returned the unknown error code %r (%s)"
                         % (code, _named(values)))
    if lazy:
        return cls(LaterMessage(fmt, values))
    try:
        message = fmt % values
    except (KeyError, TypeError, ValueError):
        message = "%s (code %d; %s)" % (fmt, code, _named(values))
    return cls(message)


def _named(values: dict[str, Any]) -> str:
    return ", ".join("%s=%r" % kv for kv in sorted(values.items())) or "no values"
