"""Saved states as bytes: the C core writes a state as uint64_t words
(iova_save, iova_cookie_save, io_pgtable_save, iotlb_save), and these two
helpers move such words between C and the bytes a pickle holds."""
from . import errors
from ._pyiova import ffi


def save_words(save, ptr, error):
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


def load_words(data, what):
    """(uint64_t[] over data, word count, the object owning the memory)."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise errors.IovaTypeError("a saved %s must be bytes, not %s"
                                   % (what, type(data).__name__)) from None
    if view.nbytes % 8 or not view.nbytes:
        raise errors.IovaValueError("a saved %s of %d bytes is not a whole number of words"
                                    % (what, view.nbytes))
    return ffi.from_buffer("uint64_t[]", view), view.nbytes // 8, view
