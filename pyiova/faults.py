"""Fault injection for tests: make the C core's allocations fail.

    with fail_allocations_after(3):
        ...   # the 4th malloc in the C core (and every later one) fails

Every C allocation goes through one wrapper, so this reaches them all; the
C core must report each failure (IovaNoMemory here, a MemoryError) and stay
consistent.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

from ._pyiova import lib

__all__ = ["fail_allocations_after", "injected_failures"]


@contextlib.contextmanager
def fail_allocations_after(n: int) -> Iterator[None]:
    """Within the block, allocations after the first n succeed fail."""
    previous = lib.iova_mem_fail_after(n)
    try:
        yield
    finally:
        lib.iova_mem_fail_after(previous)


def injected_failures() -> int:
    """How many allocations the injector has refused so far."""
    return lib.iova_mem_failures()
