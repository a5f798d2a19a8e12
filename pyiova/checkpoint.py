"""Checkpoints of a simulation: every stateful pyiova object pickles and
deep-copies, and the copy then behaves exactly as the original would.

    blob = checkpoint.dumps((domain, device))     # or pickle.dumps
    domain2, device2 = checkpoint.loads(blob)     # or pickle.loads

What round-trips: IovaDomain (iova.py), PfnAllocator and DmaCookie (the
allocator's C state, the flush queue with its timer and queued entries, the
wraparound and reset-when-empty state, the cookie's flush and reset counts,
its sticky 32-bit-first devices and the DMA API's live mappings),
IoPgtable and Iotlb (leaves, entries in recency order, stale records,
counters), IommuDomain with its attributes and devices, the drivers
(including the IPMMU's erratum random state and its hardware contexts) and
Device. Pickle's memo keeps shared references shared, so a graph saved in
one call - a domain, its devices and its driver - comes back as one graph.

Damaged bytes are refused, never loaded half-way or into something else:

* dumps() appends a seal to the pickle: a marker and a BLAKE2b digest of the
  pickle's bytes. pickle.loads() reads the pickle and ignores the seal;
  loads() first checks it, so any damaged byte of a sealed checkpoint is a
  CheckpointError (and so is a seal that does not fit its bytes).
* Without a seal (pickle.dumps output, or a seal itself damaged), what
  decodes is checked as it is rebuilt: the C states travel as words the C
  core checks one by one, and every pyiova class checks the Python state
  it is given (its fields, their types and ranges: pyiova._state), so a
  damaged state is a CheckpointError rather than an object that fails
  later. loads() then checks how the objects it rebuilt fit together (a
  device's domain lists it, a cookie belongs to its domain, a mapping
  sits where its address says...).
* What pickle itself raises on damaged bytes becomes CheckpointError.

Like any pickle, a checkpoint must come from a trusted source: unpickling
can run code named in the data.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from typing import TYPE_CHECKING, Any

from . import errors
from .allocators import PfnAllocator
from .errors import CheckpointError

if TYPE_CHECKING:
    from .iova import IovaDomain

__all__ = ["dumps", "loads", "CheckpointError", "SEAL"]

SEAL = b"\n#pyiova-checkpoint-blake2b-128:"   # then 16 digest bytes: the end of a checkpoint
_DIGEST = 16


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def dumps(obj: object) -> bytes:
    """obj (any graph of pyiova objects, plain data around them) as bytes:
    the pickle, then its seal."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data + SEAL + _digest(data)


def _unseal(data: Any) -> bytes:
    """The pickle's bytes of a sealed checkpoint (the seal checked), or the
    bytes themselves when they have no seal."""
    mark = data.rfind(SEAL)
    if mark < 0:
        return data
    body, digest = data[:mark], data[mark + len(SEAL):]
    if len(digest) != _DIGEST:
        raise CheckpointError("damaged checkpoint: its seal is %d bytes short"
                              % (_DIGEST - len(digest)) if len(digest) < _DIGEST else
                              "damaged checkpoint: %d bytes follow its seal"
                              % (len(digest) - _DIGEST))
    if _digest(body) != digest:
        raise CheckpointError("damaged checkpoint: its bytes do not match its seal (%d bytes "
                              "of pickle, then the seal)" % mark)
    return body


def loads(data: bytes | bytearray | memoryview) -> Any:
    """The graph dumps() saved. CheckpointError when the bytes are not a
    sound checkpoint; the IovaError a restore raised when a saved state in
    it is inconsistent."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise errors.IovaTypeError("loads() needs bytes, not %s" % type(data).__name__)
    if type(data) is not bytes:
        try:
            data = memoryview(data).tobytes()
        except (TypeError, ValueError) as exc:
            raise errors.IovaTypeError("loads() needs a buffer of bytes: %s" % exc) from None
    obj = _load(_unseal(data))
    _check_graph(obj)
    return obj


def _load(data: bytes) -> Any:
    f = io.BytesIO(data)
    try:
        obj = pickle.Unpickler(f).load()
        if f.tell() != len(data):
            # a cut seal, or bytes that are not a seal after the pickle
            raise CheckpointError("damaged checkpoint: %d bytes after the end of its pickle are "
                                  "not a seal" % (len(data) - f.tell()))
        return obj
    except errors.IovaError:
        raise
    except MemoryError as exc:
        # A restore running out of memory raises from a Python frame below
        # this one; pickle's own MemoryError, with none below, comes from a
        # damaged length or memo index asking for absurd amounts.
        if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
            raise
        raise CheckpointError("not a readable checkpoint: a damaged size asks for more "
                              "memory than there is") from exc
    except Exception as exc:
        raise CheckpointError("not a readable checkpoint: %s: %s"
                              % (type(exc).__name__, exc)) from exc


def _check_graph(root: object) -> None:
    """Every object loads() rebuilt that can say whether it fits the objects
    around it (a _check_restored method) is asked to."""
    seen = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (int, float, str, bytes, bool, type(None))):
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif type(obj).__module__.startswith("pyiova."):
            check = getattr(obj, "_check_restored", None)
            if check is not None:
                check()
            todo.extend(_fields(obj))


def _fields(obj: object) -> list[Any]:
    """The values an object holds in its __dict__ and its slots."""
    out = list(getattr(obj, "__dict__", {}).values())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name != "__weakref__" and hasattr(obj, name):
                out.append(getattr(obj, name))
    return out


# ---- checkpoints written before PfnAllocator.restore existed name this -----------

def _restore_allocator(type_name: str, iovad: IovaDomain | None, data: bytes) -> PfnAllocator:
    return PfnAllocator.restore(data, iovad, type=type_name)
