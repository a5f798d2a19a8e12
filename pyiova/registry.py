"""Workloads and drivers by name, wherever they come from.

A Registry holds the built-in entries, the entries other installed packages
declare under an entry-point group, and the entries registered at run time:

    pyiova.workloads   Workload subclasses or generator functions of operations
    pyiova.drivers     IommuDriver subclasses

A package adds its own in its pyproject.toml; pyiova finds them the first
time it looks a name up, and they are then usable wherever a built-in is
(simulate, compare, sweep and the pyiova command):

    [project.entry-points."pyiova.workloads"]
    bursty = "mypkg.workloads:Bursty"
    [project.entry-points."pyiova.drivers"]
    lossy = "mypkg.drivers:LossyIommu"

An entry point that cannot be loaded (an import error, an object of the
wrong kind) is left out with a PluginWarning naming it: one broken package
does not take the others, or pyiova, down with it. A name the built-ins
already use keeps the built-in.
"""
from __future__ import annotations

import importlib.metadata
import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import errors

if TYPE_CHECKING:
    from collections.abc import Iterator

_E = TypeVar("_E")

__all__ = ["Registry", "PluginWarning", "WORKLOAD_GROUP", "DRIVER_GROUP"]

WORKLOAD_GROUP = "pyiova.workloads"
DRIVER_GROUP = "pyiova.drivers"


class PluginWarning(UserWarning):
    """An entry point of another package could not be used (the message says
    which and why)."""


def _entry_points(group: str) -> list[tuple[Any, str | None]]:
    """(entry point, the name of the distribution that declares it)."""
    eps = importlib.metadata.entry_points()
    if hasattr(eps, "select"):
        return [(ep, _dist_name(getattr(ep, "dist", None))) for ep in eps.select(group=group)]
    # Python 3.9: a dict of groups whose entry points do not know their
    # distribution, so each distribution is asked for its own
    return [(ep, _dist_name(dist)) for dist in importlib.metadata.distributions()
            for ep in dist.entry_points if ep.group == group]


def _dist_name(dist: Any) -> str | None:
    return dist.metadata["Name"] if dist is not None else None


class Registry(Mapping[str, _E]):
    """name -> entry, read-only as a Mapping; register() adds one.

    group      the entry-point group searched on first use
    what       "workload" or "driver", for messages
    normalise  normalise(name, obj) -> the entry stored for a registered or
               discovered object; raises IovaValueError/IovaTypeError when
               obj is not of the right kind

    source(name) gives the object as it was registered (None for a built-in):
    what a worker process registers again before it runs a cell.
    """

    def __init__(self, group: str, what: str, normalise: Callable[[str, Any], _E]) -> None:
        self.group = group
        self.what = what
        self._normalise = normalise
        self._entries: dict[str, _E] = {}
        self._sources: dict[str, Any] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def add_builtin(self, name: str, entry: _E) -> None:
        self._entries[name] = entry
        self._sources[name] = None
        self._origins[name] = "built-in"

    def register(self, obj: Any, name: str | None = None, *, replace: bool = False) -> _E:
        """Adds obj under name (default: its own name); returns the entry.
        Registering the same object again under the same name does nothing;
        another object under a taken name needs replace=True (never over a
        built-in)."""
        self._load()
        if name is None:
            name = getattr(obj, "name", None) or getattr(obj, "__name__", None)
        if not isinstance(name, str) or not name.strip() or name != name.strip() \
                or "," in name:
            raise errors.IovaValueError("a %s name must be a non-empty string without commas "
                                        "or surrounding spaces, not %r" % (self.what, name))
        with self._lock:
            if name in self._entries:
                if self._sources[name] is obj:
                    return self._entries[name]
                if self._origins[name] == "built-in" or not replace:
                    raise errors.IovaValueError(
                        "%s %r is already registered (%s)%s"
                        % (self.what, name, self._origins[name],
                           "" if self._origins[name] == "built-in"
                           else "; pass replace=True to replace it"))
            entry = self._normalise(name, obj)
            self._entries[name] = entry
            self._sources[name] = obj
            self._origins[name] = "registered"
            return entry

    def adopt(self, name: str, obj: Any) -> _E:
        """Makes name mean obj here, as it does in the process that sent it
        (a worker running a sweep's cell): registers obj unless name already
        stands for it."""
        self._load()
        with self._lock:
            if name in self._entries and (self._sources[name] is obj or
                                          self._entries[name] is obj):
                return self._entries[name]
            return self.register(obj, name, replace=True)

    def unregister(self, name: str) -> None:
        """Removes a registered (not built-in) entry; for tests and notebooks."""
        with self._lock:
            if self._origins.get(name) == "built-in":
                raise errors.IovaValueError("%s %r is built in" % (self.what, name))
            for table in (self._entries, self._sources, self._origins):
                table.pop(name, None)

    def source(self, name: str) -> Any:
        self._load()
        return self._sources[name]

    def origin(self, name: str) -> str:
        """"built-in", "registered" or "entry point DIST:VALUE"."""
        self._load()
        return self._origins[name]

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for ep, dist in _entry_points(self.group):
                if ep.name in self._entries:
                    if self._origins[ep.name] == "built-in":
                        warnings.warn(PluginWarning(
                            "entry point %s = %s (group %s) is ignored: %r is a built-in %s"
                            % (ep.name, ep.value, self.group, ep.name, self.what)),
                            stacklevel=3)
                    continue
                try:
                    obj = ep.load()
                    entry = self._normalise(ep.name, obj)
                except Exception as exc:    # a broken plugin must not break pyiova
                    warnings.warn(PluginWarning(
                        "entry point %s = %s (group %s) is left out: %s: %s"
                        % (ep.name, ep.value, self.group, type(exc).__name__, exc)),
                        stacklevel=3)
                    continue
                self._entries[ep.name] = entry
                self._sources[ep.name] = obj
                self._origins[ep.name] = "entry point %s%s" % (
                    (dist + ":") if dist is not None else "", ep.value)

    def __getitem__(self, name: str) -> _E:
        self._load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __repr__(self) -> str:
        return "<%s registry: %s>" % (self.what, ", ".join(self))
