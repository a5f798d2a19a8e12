"""Physical pages for coherent DMA buffers.

dma_alloc_coherent takes pages from the page allocator, then maps them. The
page allocator is not what pyiova models, so this is the smallest stand-in
that hands out distinct, reproducible addresses: the first free run of
pages of the size asked (what was freed is reused, latest first), else the
next pages above everything handed out so far.

Each domain's cookie holds one, so a checkpointed domain carries the pages
its coherent buffers hold and a restored copy hands out the same addresses
as the original. A coherent allocation that fails after its pages were
taken gives them back with undo(), which leaves the allocator exactly as it
was before: the next buffer gets the address it would have got anyway.
"""
from __future__ import annotations

import threading
from typing import Any

from . import errors

__all__ = ["PhysAllocator", "PHYS_END"]

PHYS_END = 1 << 64         # phys_addr_t is 64 bits: every page lies below this


class PhysAllocator:
    """base: the first physical address handed out; page: the size pages are
    counted in (every size is rounded up to whole pages). Addresses stay
    aligned to whatever power of two every size is a multiple of, up to
    base's own alignment."""

    def __init__(self, base: int = 0x4000_0000, page: int = 4096) -> None:
        self.base, self.page = base, page
        self._next = base
        self._free: dict[int, list[int]] = {}   # pages -> [paddr, ...], the latest freed last
        self._lock = threading.Lock()

    def alloc(self, size: int) -> int:
        """The physical address of `size` bytes of pages; DmaMappingError
        (the kernel's dma_alloc_coherent returns NULL) when they would run
        past the top of the physical address space."""
        return self.take(size)[0]

    def take(self, size: int) -> tuple[int, bool]:
        """(paddr, reused): alloc(size), and whether the pages came from the
        free runs, which undo() needs to put everything back."""
        pages = -(-size // self.page)
        with self._lock:
            spare = self._free.get(pages)
            if spare:
                return spare.pop(), True
            paddr = self._next
            end = paddr + pages * self.page
            if end >= PHYS_END:                # (the next free address must be one too)
                raise errors.DmaMappingError(
                    "no physical memory for %#x bytes: the pages would end at %#x, at or past "
                    "the top of the 64-bit physical address space" % (size, end - 1))
            self._next = end
            return paddr, False

    def undo(self, paddr: int, size: int, reused: bool) -> None:
        """Take back what take(size) just returned, as if it had never been
        called (exactly so when nothing was allocated or freed in between;
        when other threads were at work, the pages are freed instead)."""
        pages = -(-size // self.page)
        with self._lock:
            if not reused and paddr + pages * self.page == self._next:
                self._next = paddr
            else:
                # an emptied run list stays in the dict, so it keeps its place
                self._free.setdefault(pages, []).append(paddr)

    def free(self, paddr: int, size: int) -> None:
        with self._lock:
            self._free.setdefault(-(-size // self.page), []).append(paddr)

    # -- pickling and deepcopy (checkpoints) ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"base": self.base, "page": self.page, "_next": self._next,
                "_free": {k: list(v) for k, v in self._free.items()}}

    def __setstate__(self, state: Any) -> None:
        from ._state import check_fields, check_int
        check_fields("a PhysAllocator", state, {"base": int, "page": int, "_next": int,
                                              "_free": dict})
        page = check_int("PhysAllocator page", state["page"], 1, PHYS_END)
        base = check_int("PhysAllocator base", state["base"], 0, PHYS_END - 1)
        nxt = check_int("PhysAllocator next address", state["_next"], base, PHYS_END - 1)
        free: dict[int, list[int]] = {}
        for pages, runs in state["_free"].items():
            check_int("PhysAllocator free run length", pages, 1, PHYS_END)
            if type(runs) is not list:
                raise _bad("a free list that is not a list")
            for paddr in runs:
                check_int("PhysAllocator free page", paddr, base, nxt - 1)
            free[pages] = list(runs)
        self.base, self.page, self._next, self._free = base, page, nxt, free
        self._lock = threading.Lock()


def _bad(what: str) -> Exception:
    from ._state import CheckpointError
    return CheckpointError("the saved PhysAllocator holds %s" % what)
