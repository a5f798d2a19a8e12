"""Workloads of your own: a Workload subclass, or a generator function.

A generator function is the short way: it takes a random.Random (seeded by
the run's seed) and the workload's parameters as keywords, and yields
operations (the tuples of pyiova.workloads.base) for as long as the run
asks. Its keyword defaults are the parameters and their defaults; a default
may be a Param to give a parser and a help text of its own.

    from pyiova.workloads import MAP_PAGE, UNMAP_PAGE, ACCESS, register_workload
    from pyiova.dma import DmaDirection

    @register_workload(name="pingpong", dma_bits=32)
    def pingpong(rng, size=4096):
        h = 0
        while True:
            h += 1
            yield (MAP_PAGE, h, rng.getrandbits(20) << 12, size, DmaDirection.TO_DEVICE, None)
            yield (ACCESS, h, 0, False)
            yield (UNMAP_PAGE, h, size, DmaDirection.TO_DEVICE, None)

generator_workload() turns such a function into a Workload class without
registering it. The class pickles as "the workload of this function", so
runs in worker processes (sweep) and checkpoints (Simulation) work as long
as the function can be imported by its module and name.
"""
from __future__ import annotations

import copyreg
import inspect
import threading
from typing import TYPE_CHECKING, Any

from .. import errors
from .base import Workload
from .params import Param, WorkloadError, boolean, integer, number

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["generator_workload", "as_workload_class", "DEVICE_OPTIONS"]

# What a generator workload's device is (the Workload attributes of the same
# names), and the defaults: a 32-bit platform device, one CPU.
DEVICE_OPTIONS = {"summary": "", "device_name": None, "dma_bits": 32, "coherent_bits": None,
                  "is_pci": False, "ncpus": 1}



def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise WorkloadError("%r is not text" % (value,))
    return value


def _infer_param(default: Any) -> Param:
    """A Param for a keyword default: its parser chosen by the default's type
    (bool, int, float, str); any other default is passed through as given."""
    if isinstance(default, Param):
        return default
    if isinstance(default, bool):
        return Param(default, boolean, "")
    if isinstance(default, int):
        return Param(default, integer(), "")
    if isinstance(default, float):
        return Param(default, number(), "")
    if isinstance(default, str):
        return Param(default, _text, "")
    return Param(default, lambda value: value, "")


def _params_of(fn: Callable[..., Any]) -> dict[str, Param]:
    """PARAMS from fn(rng, name=default, ...)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise errors.IovaTypeError("%r has no signature to read parameters from" % (fn,)) from None
    names = list(sig.parameters.values())
    if not names or names[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                          inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise errors.IovaTypeError("a generator workload takes the random.Random first: %s%s"
                          % (fn.__name__, sig))
    params = {}
    for p in names[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise errors.IovaTypeError("parameter %r of %s has no default (every parameter of a "
                              "generator workload needs one)" % (p.name, fn.__name__))
        params[p.name] = _infer_param(p.default)
    return params


class _GeneratorWorkloadType(type):
    """The metaclass of generated workload classes: pickled (copyreg below)
    as the call that makes them, so a worker process gets the same class."""


_classes: dict[Any, Any] = {}
_classes_lock = threading.Lock()


def generator_workload(fn: Callable[..., Iterator[tuple[Any, ...]]], name: str | None = None,
                       **options: Any) -> type[Workload]:
    """A Workload class whose operations are fn(rng, **params).

    name      the workload's name (default: the function's)
    options   summary (default: the docstring's first line), device_name
              (default: the name), dma_bits (32), coherent_bits (dma_bits),
              is_pci (False), ncpus (CPU slots the operations use, 1)

    The same function and options give the same class."""
    if not callable(fn):
        raise errors.IovaTypeError("a generator workload is made from a function, not %r" % (fn,))
    unknown = sorted(set(options) - set(DEVICE_OPTIONS))
    if unknown:
        raise WorkloadError("generator_workload() has no option %s (it has: %s)"
                            % (", ".join(unknown), ", ".join(DEVICE_OPTIONS)))
    wl_name: Any = name or getattr(fn, "__name__", "")
    key = (fn, wl_name, tuple(sorted(options.items())))
    with _classes_lock:
        cls = _classes.get(key)
        if cls is None:
            cls = _classes[key] = _make_class(fn, wl_name, options)
    return cls


def _make_class(fn: Callable[..., Iterator[tuple[Any, ...]]], name: str,
                options: dict[str, Any]) -> type[Workload]:
    opts = dict(DEVICE_OPTIONS, **options)
    doc = (inspect.getdoc(fn) or "").strip()
    summary = opts["summary"] or (doc.splitlines()[0] if doc else "a generator workload")
    ncpus = opts["ncpus"]
    if isinstance(ncpus, bool) or not isinstance(ncpus, int) or ncpus < 1:
        raise WorkloadError("ncpus must be an integer >= 1, not %r" % (ncpus,))
    attrs = {
        "name": name,
        "summary": summary,
        "device_name": opts["device_name"] or name,
        "dma_bits": opts["dma_bits"],
        "coherent_bits": opts["coherent_bits"] or opts["dma_bits"],
        "is_pci": bool(opts["is_pci"]),
        "PARAMS": _params_of(fn),
        "generator": staticmethod(fn),
        "ncpus": property(lambda self: ncpus),
        "_generate": lambda self, rng: self.generator(rng, **self.params),
        "__reduce__": lambda self: (_instance, (type(self), self.params)),
        "__doc__": doc or None,
        "__module__": getattr(fn, "__module__", __name__),
        "_made_by": (fn, name, tuple(sorted(options.items()))),
    }
    cls: Any = _GeneratorWorkloadType(
        "%sWorkload" % name.title().replace("-", "").replace("_", ""), (Workload,), attrs)
    return cls


def _instance(cls: type[Workload], params: dict[str, Any]) -> Workload:
    return cls(**params)


def _rebuild(fn: Callable[..., Iterator[tuple[Any, ...]]], name: str,
             options: Any) -> type[Workload]:
    return generator_workload(fn, name, **dict(options))


def _reduce_class(cls: Any) -> tuple[Any, Any]:
    return (_rebuild, cls._made_by)


copyreg.pickle(_GeneratorWorkloadType, _reduce_class)


def as_workload_class(name: str, obj: Any) -> type[Workload]:
    """What a registry keeps for obj: a Workload subclass as it is (its name
    must be the one it is registered under), a generator function as
    generator_workload(obj, name)."""
    if isinstance(obj, type):
        if not issubclass(obj, Workload):
            raise errors.IovaTypeError("%s is a class but not a Workload subclass" % obj.__name__)
        if obj.name != name:
            raise WorkloadError("the workload class %s is named %r, not %r (set its name "
                                "attribute to the name it is registered under)"
                                % (obj.__name__, obj.name, name))
        return obj
    if callable(obj):
        return generator_workload(obj, name)
    raise errors.IovaTypeError("a workload is a Workload subclass or a generator function, not %r"
                      % (obj,))
