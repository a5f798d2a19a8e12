"""Argument checks shared by every binding module.

cffi refuses a non-integer or out-of-range argument with a bare TypeError
or OverflowError; these helpers find which argument it was and build the
pyiova exception that names it, and turn the caller's batch (any buffer of
8-byte integers, raw bytes, or an iterable of ints) into a uint64_t[] the C
core can read in place.
"""
import array

from . import errors
from ._pyiova import ffi

__all__ = ["check_u64", "bad_argument", "u64_buffer"]

_U64_MAX = (1 << 64) - 1


def check_u64(name, value):
    """None if value is an int in 0..2**64-1, else the exception to raise."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return errors.IovaTypeError("%s must be an integer, not %s (%r)"
                                    % (name, type(value).__name__, value))
    v = value.__index__()
    if v < 0 or v > _U64_MAX:
        return errors.IovaValueError("%s %d is out of range (0..2**64-1)" % (name, v))
    return None


def bad_argument(**named):
    """The exception for a call cffi refused: the first argument that is not
    a 64-bit unsigned integer. A cpu of None is fine: it means this thread's."""
    for name, value in named.items():
        if value is None and name == "cpu":
            continue
        exc = check_u64(name, value)
        if exc is not None:
            return exc
    return errors.IovaTypeError("bad argument among " + ", ".join(
        "%s=%r" % kv for kv in named.items()))


def u64_buffer(name, values):
    """(cffi uint64_t[] over values, the object owning the memory, count)."""
    if type(values) is array.array and values.itemsize == 8 and values.typecode in "QqLl":
        return ffi.from_buffer("uint64_t[]", values), values, len(values)   # the common case
    try:
        view = memoryview(values)
    except TypeError:
        view = None
    if view is not None:
        fmt = view.format.lstrip("@=<>!")
        if fmt in ("Q", "q", "L", "l", "N", "n") and view.itemsize == 8 or \
                fmt in ("B", "b", "c") and view.nbytes % 8 == 0:
            if not view.c_contiguous:
                values = view = memoryview(view.tobytes())
            return ffi.from_buffer("uint64_t[]", values), values, view.nbytes // 8
        raise errors.IovaTypeError("%s must hold 8-byte integers, not a buffer of format %r"
                                   % (name, view.format))
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise errors.IovaTypeError("%s must be a buffer or an iterable of integers, not %s"
                                   % (name, type(values).__name__))
    items = list(values)
    for i, v in enumerate(items):
        exc = check_u64("%s[%d]" % (name, i), v)
        if exc is not None:
            raise exc
    arr = array.array("Q", items)
    return ffi.from_buffer("uint64_t[]", arr), arr, len(arr)
