"""Argument checks shared by every binding module.

cffi refuses a non-integer or out-of-range argument with a bare TypeError
or OverflowError; these helpers find which argument it was and build the
pyiova exception that names it, and turn the caller's batch (any buffer of
8-byte integers, raw bytes, or an iterable of ints) into a uint64_t[] the C
core can read in place.

The bindings call cffi first with plain ints (`type(x) is int`) and come
here only when that fails or the value is not a plain int, so a check costs
nothing on the hot path. What counts as an integer is what operator.index
accepts (numpy integers, IntEnum, any __index__), except bool: True is not
a size. cffi itself would take bools, and any object with __int__ (a
Decimal, numpy.float32) truncated, so nothing but a plain int goes to it
unconverted.
"""
from __future__ import annotations

import array
import mmap
import operator
import struct
import sys

from typing import TYPE_CHECKING, Any, Union

from . import errors
from ._pyiova import ffi, lib

if TYPE_CHECKING:
    from collections.abc import Iterable

    # What a batch call takes: a buffer of 8-byte integers (array('Q'),
    # numpy uint64, raw bytes, an mmap) or an iterable of integers.
    U64Batch = Union[Iterable[int], mmap.mmap]

__all__ = ["check_u64", "bad_argument", "u64_buffer", "as_integer", "as_u64", "as_flag", "as_cpu",
           "as_granule", "granule_ok", "granule_error", "u64_cdata", "release", "U64_CODES",
           "U64_ARRAY"]

_U64_MAX = (1 << 64) - 1
_INT_MAX = (1 << 31) - 1

_array = array.array
_from_buffer = ffi.from_buffer
release = ffi.release
U64_ARRAY = ffi.typeof("uint64_t[]")
# array typecodes that hold 8-byte integers on this machine ('L' is 4 bytes on
# some platforms): such an array is handed to C as it is.
U64_CODES = frozenset(c for c in "QqLlNn" if c in array.typecodes and _array(c).itemsize == 8)
# Buffer formats of 8-byte integers in native byte order: q/Q in any native
# spelling, and l/L/n/N where the native long is 8 bytes ('<L' is 4 bytes in
# struct's standard sizes). '<' only where that is native: a big-endian numpy
# array read as native would give other values.
_NATIVE = ("", "@", "=") + (("<",) if sys.byteorder == "little" else (">", "!"))
_U64_FORMATS = frozenset([p + c for p in _NATIVE for c in "Qq"] +
                         [p + c for p in ("", "@") for c in "LlNn" if struct.calcsize(c) == 8])
_BYTE_FORMATS = frozenset(p + c for p in _NATIVE for c in "Bbc")
# Raw bytes are the one opt-in for "8-byte words in a byte buffer": bytes,
# bytearray, an mmap, or a memoryview of one of them. A typed buffer whose
# items are not 8 bytes (numpy uint8, array('b'), array('H')) holds items of
# that size, and is refused rather than read as words.
_RAW = (bytes, bytearray, mmap.mmap)


# ---- scalars: the slow path, after a plain-int fast path refused -------------

def index_int(value: Any) -> int | None:
    """value as an exact int through __index__ (numpy integers, IntEnum...),
    or None for a bool or anything without one. What every reader of an
    integer argument in pyiova accepts."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    try:
        # int(): on Python 3.9 operator.index hands an int subclass back as is
        return int(operator.index(value))
    except TypeError:
        return None


def _integer(name: str, value: Any) -> int:
    """value as an int through __index__, or raise IovaTypeError naming it."""
    v = index_int(value)
    if v is None:
        raise errors.IovaTypeError("%s must be an integer, not %s (%r)"
                                   % (name, type(value).__name__, value))
    return v


def as_integer(name: str, value: Any) -> int:
    """value as an int of any sign, else raise IovaTypeError naming it."""
    return value if type(value) is int else _integer(name, value)


def as_u64(name: str, value: Any) -> int:
    """value as an int in 0..2**64-1, else raise the pyiova error naming it."""
    v = value if type(value) is int else _integer(name, value)
    if v < 0 or v > _U64_MAX:
        raise errors.IovaValueError("%s %d is out of range (0..2**64-1)" % (name, v)) from None
    return v


def as_flag(name: str, value: Any) -> int:
    """A C flag (0 or 1) from a bool or an integer; anything else (None, a
    string) is refused rather than read as true or false."""
    if value is True or value is False:
        return int(value)
    try:
        return 1 if operator.index(value) else 0
    except TypeError:
        raise errors.IovaTypeError("%s must be a bool, not %s (%r)"
                                   % (name, type(value).__name__, value)) from None


def as_cpu(value: Any, ncpus: int | None, allow_none: bool = True) -> int:
    """A CPU slot as the C int the core takes (-1 for None: this thread's
    slot). A negative number is refused here: the core reads -1 as "this
    thread's slot", which only None may ask for. An integer beyond a C int
    cannot be a slot either; the core checks every other value itself.
    ncpus: the slots there are, for the message (None: no fixed number)."""
    if value is None and allow_none:
        return -1
    v = value if type(value) is int else _integer("cpu", value)
    if v < 0 or v > _INT_MAX:
        raise errors.IovaCpuError("cpu %d is not %s%s" % (
            v, "a CPU slot" if ncpus is None else "in 0..%d" % (ncpus - 1),
            " (None: this thread's)" if allow_none else "")) from None
    return v


def granule_ok(value: int) -> bool:
    """Whether the integer value is a granule the C core models. The rule
    is the core's (iova_granule_check), asked here so that a constructor
    can refuse a bad granule in the order it checks its arguments, before
    it builds anything."""
    return 0 <= value <= _U64_MAX and lib.iova_granule_check(value) == 0


def granule_error(value: int) -> errors.IovaError:
    """The IovaValueError for a granule granule_ok() refuses (the core's
    IOVA_E_GRANULE)."""
    from .error_codes import error
    return error(lib.IOVA_E_GRANULE, granule=value)


def as_granule(value: Any) -> int:
    """value as a granule the C core models, else the pyiova error naming it."""
    granule = as_u64("granule", value)
    if not granule_ok(granule):
        raise granule_error(granule)
    return granule


def check_u64(name: str, value: Any) -> errors.IovaError | None:
    """None if value is an int in 0..2**64-1, else the exception to raise."""
    v = index_int(value)
    if v is None:
        return errors.IovaTypeError("%s must be an integer, not %s (%r)"
                                    % (name, type(value).__name__, value))
    if v < 0 or v > _U64_MAX:
        return errors.IovaValueError("%s %d is out of range (0..2**64-1)" % (name, v))
    return None


def bad_argument(**named: Any) -> errors.IovaError:
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


# ---- batches ------------------------------------------------------------------

def _items_array(name: str, values: Any) -> array.array[int]:
    """An array('Q') of an iterable's integers, or the error naming the first
    item that is not one."""
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise errors.IovaTypeError("%s must be a buffer or an iterable of integers, not %s"
                                   % (name, type(values).__name__))
    items = values if type(values) is list else list(values)
    if set(map(type, items)) <= {int}:          # plain ints: array() checks the range
        try:
            return _array("Q", items)
        except OverflowError:
            pass
    return _array("Q", [as_u64("%s[%d]" % (name, i), v) for i, v in enumerate(items)])


def u64_cdata(name: str, values: Any) -> tuple[Any, int]:
    """(a cffi uint64_t[] over values, its length). A contiguous buffer of
    8-byte integers (array('Q'), numpy uint64/int64, bytes) is read in place;
    other iterables are copied. The cdata keeps its source alive; a caller
    that raises while holding one must release() it first (see iova.py)."""
    if type(values) is _array and values.typecode in U64_CODES:
        return _from_buffer(U64_ARRAY, values), len(values)
    try:
        view = memoryview(values)
    except TypeError:
        arr = _items_array(name, values)
        return _from_buffer(U64_ARRAY, arr), len(arr)
    # (the view goes with this frame; it is released before a raise, which
    # would keep an export of the caller's buffer alive in the traceback)
    fmt = view.format
    if fmt in _U64_FORMATS or fmt in _BYTE_FORMATS and view.nbytes % 8 == 0 and \
            isinstance(view.obj, _RAW):
        if view.c_contiguous:
            return _from_buffer(U64_ARRAY, values), view.nbytes >> 3
        data = view.tobytes()
        return _from_buffer(U64_ARRAY, data), len(data) >> 3
    if fmt in _BYTE_FORMATS and isinstance(view.obj, _RAW):
        why = ": %d raw bytes are not a whole number of 8-byte words" % view.nbytes
    elif view.itemsize != 8:
        why = (": it holds %d-byte items (only raw bytes, bytearray or mmap are read as "
               "8-byte words)" % view.itemsize)
    else:
        why = " (native byte order is needed)" if fmt[:1] in "<>!=" else ""
    view.release()
    raise errors.IovaTypeError("%s must hold 8-byte integers, not a buffer of format %r%s"
                               % (name, fmt, why))


def u64_buffer(name: str, values: Any) -> tuple[Any, Any, int]:
    """(cffi uint64_t[] over values, an iterable of its integers, count): the
    older form of u64_cdata, for callers that also read the values."""
    buf, n = u64_cdata(name, values)
    return buf, buf, n
