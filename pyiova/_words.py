"""Saved states as bytes: the C core writes a state as uint64_t words
(iova_save, iova_cookie_save, io_pgtable_save, iotlb_save), and these two
helpers move such words between C and the bytes a pickle holds."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

from . import errors
from ._pyiova import ffi

if TYPE_CHECKING:
    from collections.abc import Iterator


def save_words(save: Callable[[Any, Any, int], int], ptr: Any,
               error: Callable[[int], BaseException]) -> bytes:
    """The bytes of save(ptr, buf, cap). `error(code)` builds the exception
    for a negative return. The state may grow between the sizing call and
    the copy (another thread), hence the loop."""
    while True:
        n = save(ptr, ffi.NULL, 0)
        if n < 0:
            raise error(n)
        buf = ffi.new("uint64_t[]", max(n, 1))
        m = save(ptr, buf, n)
        if m < 0:
            raise error(m)
        if m == n:
            return bytes(ffi.buffer(buf, 8 * n))


@contextlib.contextmanager
def loaded_words(data: Any, what: str) -> Iterator[tuple[Any, int]]:
    """with loaded_words(data, what) as (words, n): a uint64_t[] over the
    bytes of a save, and its word count. The export of data is released on
    the way out, whatever happens: a restore that raises would otherwise
    leave it to the garbage collector, which may free a bytearray before
    the export that points into it."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise errors.IovaTypeError("a saved %s must be bytes, not %s"
                                   % (what, type(data).__name__)) from None
    try:
        if view.nbytes % 8 or not view.nbytes:
            raise errors.IovaValueError("a saved %s of %d bytes is not a whole number of words"
                                        % (what, view.nbytes))
        words = ffi.from_buffer("uint64_t[]", view)
        try:
            yield words, view.nbytes // 8
        finally:
            ffi.release(words)
    finally:
        view.release()
