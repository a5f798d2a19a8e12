"""The drivers a simulation can run on, by name.

Each is a DriverSpec: what the name means (a summary), how a run makes its
IOMMU (make(seed, drop_rate), one fresh driver per run), and whether its DMA
domains can use the flush queue (policy iova-lazy). The built-ins:

    ipmmu     Renesas IPMMU-VMSA with its TLB-invalidation erratum on: every
              flush issued on the unmap path is lost with probability drop_rate
    generic   a strict IOMMU with ranged invalidation and deferred-flush support

Others come from register_driver() or another package's "pyiova.drivers"
entry points (pyiova.registry): an IommuDriver subclass, made for each run
with no arguments but `seed` and `drop_rate` (the run's) when its
constructor takes parameters of those names. Whether it supports the flush
queue is its supports_flush_queue class attribute.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Callable, NamedTuple

from .. import errors
from .base import IommuDriver
from ..registry import DRIVER_GROUP, Registry
from .generic import GenericIommu
from .ipmmu import IpmmuVmsa

__all__ = ["DriverSpec", "DRIVER_SPECS", "DRIVERS", "register_driver", "driver_spec"]

RUN_ARGUMENTS = ("seed", "drop_rate")


class DriverSpec(NamedTuple):
    name: str
    summary: str
    make: Callable[..., IommuDriver]   # make(seed, drop_rate) -> a new IommuDriver
    flush_queue: bool         # DMA domains may use the flush queue (iova-lazy)
    label: str                # what messages call it ("ipmmu-vmsa")


def _ipmmu(seed: Any, drop_rate: float) -> IommuDriver:
    return IpmmuVmsa("ipmmu", erratum=True, erratum_drop_rate=drop_rate, seed=seed)


def _generic(seed: Any, drop_rate: float) -> IommuDriver:
    return GenericIommu("generic-iommu")


class _Construct:
    """make() for an IommuDriver subclass: cls(), given the run arguments
    its constructor names."""

    def __init__(self, cls: type[IommuDriver]) -> None:
        self.cls = cls
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            params = {}
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self.passes = tuple(a for a in RUN_ARGUMENTS if takes_all or a in params)

    def __call__(self, seed: Any, drop_rate: float) -> IommuDriver:
        given = {"seed": seed, "drop_rate": drop_rate}
        return self.cls(**{a: given[a] for a in self.passes})


def _first_line(doc: str | None) -> str:
    doc = inspect.cleandoc(doc or "")
    return doc.splitlines()[0] if doc else ""


def driver_spec(name: str, obj: DriverSpec | type[IommuDriver]) -> DriverSpec:
    """The DriverSpec for obj (a DriverSpec, or an IommuDriver subclass)."""
    if isinstance(obj, DriverSpec):
        if obj.name != name:
            raise errors.IovaValueError("the driver spec is named %r, not %r" % (obj.name, name))
        return obj
    if not (isinstance(obj, type) and issubclass(obj, IommuDriver)):
        raise errors.IovaTypeError("a driver is an IommuDriver subclass, not %r" % (obj,))
    return DriverSpec(name, _first_line(obj.__doc__) or obj.__name__, _Construct(obj),
                      bool(getattr(obj, "supports_flush_queue", True)), name)


DRIVER_SPECS = Registry(DRIVER_GROUP, "driver", driver_spec)
DRIVER_SPECS.add_builtin("ipmmu", DriverSpec(
    "ipmmu", "Renesas IPMMU-VMSA, 32-bit aperture, whole-context flushes, invalidation "
    "erratum on", _ipmmu, False, "ipmmu-vmsa"))
DRIVER_SPECS.add_builtin("generic", DriverSpec(
    "generic", "strict IOMMU with ranged invalidation and a flush queue (SMMUv3/VT-d-like)",
    _generic, True, "generic"))


class _Summaries(Mapping[str, str]):
    """name -> one line on the driver, for every driver DRIVER_SPECS knows."""

    def __getitem__(self, name: str) -> str:
        return DRIVER_SPECS[name].summary

    def __iter__(self) -> Iterator[str]:
        return iter(DRIVER_SPECS)

    def __len__(self) -> int:
        return len(DRIVER_SPECS)

    def __contains__(self, name: object) -> bool:
        return name in DRIVER_SPECS

    def __repr__(self) -> str:
        return repr(dict(self))


DRIVERS = _Summaries()


def register_driver(cls: Any = None, name: str | None = None, *, replace: bool = False) -> Any:
    """Makes an IommuDriver subclass usable by name (simulate, compare,
    sweep, the pyiova command); returns cls, so it works as a decorator too
    (@register_driver or @register_driver(name="lossy")). The name defaults
    to the class's name attribute if it is a string class attribute, else
    the class name in lower case."""
    if cls is None:
        return lambda c: register_driver(c, name, replace=replace)
    if name is None:
        own = cls.__dict__.get("name") if isinstance(cls, type) else None
        name = own if isinstance(own, str) else getattr(cls, "__name__", "").lower()
    DRIVER_SPECS.register(cls, name, replace=replace)
    return cls
