"""What a workload parameter accepts: the one set of parsers every workload
uses, for values from the command line (strings) and from Python alike.

    integer(lo, hi)   an int: 8, "8", "0x10", "1_000", numpy integers, 8.0;
                      not 2.5, "1e3", True
    number(lo, hi)    a finite float: 0.5, "0.5", 1; not nan, inf, "abc"
    fraction()        a number in 0..1
    parse_size        bytes: 4096, "4096", "4K", "2M", "64KiB", up to 2**63
    parse_list(item)  "4K,16K" or a list/tuple of items (a single value is a
                      one-item list); no empty items
    choice(*names)    one of the names
    boolean           True/False, "true"/"false", "yes"/"no", "on"/"off", 1/0
    seed(value)       a run's seed: an integer, a finite float, a str or bytes
    op_count(value)   a number of operations: an integer in 0..sys.maxsize

Each raises WorkloadError (an IovaValueError) naming the value and saying
what was expected; the workload adds its name and the parameter's.
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Callable, NamedTuple, TypeVar

from .. import errors
from .._args import index_int

__all__ = ["WorkloadError", "Param", "integer", "number", "fraction", "non_negative",
           "parse_size", "parse_list", "choice", "boolean", "seed", "op_count", "format_size",
           "SIZE_MAX", "SEED_TYPES"]

_T = TypeVar("_T")

# The largest size a parameter may give: a buffer of it, placed anywhere a
# workload places its buffers, still ends below 2**64 (phys_addr_t).
SIZE_MAX = 1 << 63


class WorkloadError(errors.IovaValueError):
    """An unknown workload, an unknown parameter or a bad parameter value."""


class Param(NamedTuple):
    """One workload parameter: its default, the parser that turns a
    command-line string (or a Python value) into it, and what it means."""
    default: Any
    parse: Callable[[Any], Any]
    help: str


def _range_error(value: object, lo: float | None, hi: float | None) -> WorkloadError:
    if lo is not None and hi is not None:
        return WorkloadError("%r is outside %s..%s" % (value, lo, hi))
    if lo is not None:
        return WorkloadError("%r is below %s" % (value, lo))
    return WorkloadError("%r is above %s" % (value, hi))


def _as_int(value: Any) -> int | None:
    """value as an int, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        for base in (10, 0):               # "08" is 8; "0x10" is 16
            try:
                return int(text, base)
            except ValueError:
                pass
        return None
    if isinstance(value, float) or isinstance(value, numbers.Real) and \
            not hasattr(value, "__index__"):
        f = float(value)
        return int(f) if math.isfinite(f) and f.is_integer() else None
    return index_int(value)


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    """A parser of integers in lo..hi (either bound may be None)."""
    def parse(value: Any) -> int:
        v = _as_int(value)
        if v is None:
            raise WorkloadError("%r is not an integer" % (value,))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _range_error(value, lo, hi)
        return v
    parse.__name__ = "integer"
    return parse


def number(lo: float | None = None, hi: float | None = None) -> Callable[[Any], float]:
    """A parser of finite numbers (floats) in lo..hi."""
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
            raise WorkloadError("%r is not a number" % (value,))
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise WorkloadError("%r is not a number" % (value,)) from None
        if not math.isfinite(v):
            raise WorkloadError("%r is not a finite number" % (value,))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _range_error(value, lo, hi)
        return v
    parse.__name__ = "number"
    return parse


def fraction() -> Callable[[Any], float]:
    return number(0.0, 1.0)


def non_negative() -> Callable[[Any], float]:
    return number(0.0, None)


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
          "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_size(value: Any) -> int:
    """Bytes from 4096, "4096", "4K", "2M", "64KiB" (binary units), in 1..2**63."""
    if isinstance(value, str):
        text = value.strip().upper().replace("_", "")
        num = text.rstrip("BKMGTI")
        n = _as_int(num) if num else None
        unit = _UNITS.get(text[len(num):])
        if n is None or unit is None:
            raise WorkloadError("%r is not a size (examples: 512, 4K, 2M)" % (value,))
        n *= unit
    else:
        n = _as_int(value)
        if n is None:
            raise WorkloadError("%r is not a size (examples: 512, 4K, 2M)" % (value,))
    if n <= 0:
        raise WorkloadError("size %r is not positive" % (value,))
    if n > SIZE_MAX:
        raise WorkloadError("size %r is above 2**63 bytes" % (value,))
    return n


def format_size(n: int) -> str:
    """4096 -> "4K", 1536 -> "1536" (the inverse of parse_size where exact)."""
    for unit, mult in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= mult and n % mult == 0:
            return "%d%s" % (n // mult, unit)
    return str(n)


def parse_list(item: Callable[[Any], _T]) -> Callable[[Any], tuple[_T, ...]]:
    """A parser of comma-separated lists (or lists and tuples) of `item`;
    a single value that is not a str is a list of one."""
    def parse(value: Any) -> tuple[_T, ...]:
        if isinstance(value, str):
            parts = value.split(",")
            if any(not p.strip() for p in parts):
                raise WorkloadError("%r has an empty item (write items separated by single "
                                    "commas)" % (value,))
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        elif isinstance(value, (dict, set, frozenset)) or hasattr(value, "__next__"):
            raise WorkloadError("%r is not a list (give a list, a tuple or \"a,b,c\")"
                                % (value,))
        elif hasattr(value, "__len__") and hasattr(value, "__getitem__") \
                and not isinstance(value, bytes):
            parts = list(value)              # a numpy array and the like
        else:
            parts = [value]
        out = tuple(item(p) for p in parts)
        if not out:
            raise WorkloadError("%r is an empty list" % (value,))
        return out
    parse.__name__ = "list of %s" % getattr(item, "__name__", "values")
    return parse


def choice(*names: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in names:
            raise WorkloadError("%r is not one of %s" % (value, ", ".join(names)))
        return value
    parse.__name__ = "one of %s" % ", ".join(names)
    return parse


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text: str | None
    if isinstance(value, str):
        text = value.strip().lower()
    else:
        n = _as_int(value)
        text = str(n) if n is not None else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise WorkloadError("%r is not a boolean (true/false)" % (value,))


def seed(value: Any) -> Any:
    """A run's seed: what random.Random takes and gives the same operations
    for every time - an integer (numpy's too), a finite float, a str, bytes
    or a bytearray. Not None (a new seed each run), a bool, or anything
    random.Random cannot hash."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    v = None if isinstance(value, (bool, float)) else _as_int(value)
    if v is None:
        raise WorkloadError("seed must be an integer, a str or bytes, not %s (%r)"
                            % (type(value).__name__, value))
    return v


SEED_TYPES = (int, float, str, bytes)


def op_count(value: Any, name: str = "ops") -> int:
    """A number of operations: an integer in 0..sys.maxsize."""
    v = None if isinstance(value, (str, float)) else _as_int(value)
    if v is None:
        raise WorkloadError("%s must be an integer, not %s (%r)"
                            % (name, type(value).__name__, value))
    if v < 0:
        raise WorkloadError("%s %d is negative" % (name, v))
    if v > sys.maxsize:
        raise WorkloadError("%s %d is more operations than a run can count (at most "
                            "sys.maxsize, %d)" % (name, v, sys.maxsize))
    return v
