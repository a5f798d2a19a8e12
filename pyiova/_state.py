"""Checks of the state a pickle hands to __setstate__.

A checkpoint is a pickle, and a damaged pickle can still decode: into the
right classes with the wrong things inside (a str where a count belongs, a
field missing, a list where a dict was). Each pyiova class that pickles its
own Python state checks it here before taking it, so that a damaged
checkpoint is refused with CheckpointError at load time rather than failing
later, somewhere inside a simulation, with an error that says nothing about
the checkpoint.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import CheckpointError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    # A type or a tuple of types, as isinstance() takes them.
    Types = type | tuple[type, ...]

_T = TypeVar("_T")

__all__ = ["CheckpointError", "check_fields", "check_int", "check_float", "check_type",
           "slot_state", "old_slot_state", "set_fields", "fail"]


def _name(types: Types) -> str:
    if isinstance(types, tuple):
        return " or ".join(_name(t) for t in types)
    if types is type(None):
        return "None"
    name = types.__name__
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def check_type(what: str, value: _T, types: Types) -> _T:
    """value, if it is an instance of types (bool is not an int here unless
    bool is named), else CheckpointError."""
    named = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in named and object not in named:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise CheckpointError("damaged checkpoint: %s is %s, not %s"
                              % (what, _name(type(value)), _name(types)))
    return value


def check_fields(what: str, state: Any, spec: Mapping[str, Types],
                 optional: Collection[str] = (), extra_ok: bool = False) -> dict[str, Any]:
    """state must be a dict holding exactly the keys of spec (those in
    optional may be missing; others may be there too with extra_ok), each
    an instance of its type(s)."""
    if type(state) is not dict:
        raise CheckpointError("damaged checkpoint: the state of %s is %s, not a dict"
                              % (what, _name(type(state))))
    keys = set(state)
    missing = set(spec) - keys - set(optional)
    extra = set() if extra_ok else keys - set(spec)
    if missing or extra:
        raise CheckpointError("damaged checkpoint: the state of %s %s" % (what, "; ".join(
            part for part in (
                "lacks %s" % ", ".join(sorted(map(str, missing))) if missing else "",
                "has unknown fields %s" % ", ".join(sorted(map(repr, extra))) if extra else "")
            if part)))
    for key, types in spec.items():
        if key in state:
            check_type("the field %s of %s" % (key, what), state[key], types)
    return state


def slot_state(obj: Any) -> dict[str, Any]:
    """The dict of an object's slots (what its __getstate__ returns)."""
    return {name: getattr(obj, name) for name in type(obj).__slots__ if name != "__weakref__"}


def old_slot_state(state: Any) -> Any:
    """A slots object's state as pickle gave it before the class had a
    __getstate__: (None, {slot: value}) becomes the dict."""
    if type(state) is tuple and len(state) == 2 and state[0] is None:
        return state[1]
    return state


def set_fields(obj: object, state: Mapping[str, Any]) -> None:
    """Take a checked state (setattr works for slots and __dict__ alike)."""
    for name, value in state.items():
        setattr(obj, name, value)


def fail(what: str, why: str) -> CheckpointError:
    """The CheckpointError for a state that fits no sound object."""
    return CheckpointError("damaged checkpoint: %s %s" % (what, why))


def check_int(what: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """value, an int (not a bool) in lo..hi (either bound may be None)."""
    if type(value) is not int:
        check_type(what, value, int)
        value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise CheckpointError("damaged checkpoint: %s %d is outside %s..%s"
                              % (what, value, "" if lo is None else lo,
                                 "" if hi is None else hi))
    return value


def check_float(what: str, value: Any, lo: float | None = None,
                hi: float | None = None) -> float:
    """value, a finite float or int in lo..hi."""
    check_type(what, value, (int, float))
    if not math.isfinite(value) or (lo is not None and value < lo) or \
            (hi is not None and value > hi):
        raise CheckpointError("damaged checkpoint: %s %r is outside %s..%s"
                              % (what, value, "" if lo is None else lo,
                                 "" if hi is None else hi))
    return value
