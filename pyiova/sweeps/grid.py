"""The cells of a sweep: every combination of workload, policy, driver,
kernel, workload parameters, drop rate, operation count and seed.

A Cell names one run completely, so it gives the same row wherever it runs;
its key is that name as text (the `cell` column of a sweep's table, and
what a resumed sweep looks for in its file).

    parse_seeds("1..20")                  (1, 2, ..., 20); "1,5,9", "1..5,10" too
    param_alternatives(classes, ["ring_size=64K,256K", "sizes=4K,16K"])
        {"ring_size": ["64K", "256K"], "sizes": ["4K,16K"]}: the command
        line's -p, commas separating the values to sweep except for a
        parameter whose value is itself a list (usb's sizes): each -p of it
        is one value, and repeating -p sweeps over them
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .. import errors
from ..iova import KERNELS
from ..drivers.registry import DRIVERS
from ..policies import POLICIES, not_applicable
from ..sim_args import policy_names, run_args
from ..workloads import WORKLOADS, WorkloadError, get_workload

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from ..workloads import Param, Workload

_V = TypeVar("_V")

__all__ = ["Cell", "parse_seeds", "param_alternatives", "expand", "as_values", "canonical"]


class Cell(NamedTuple):
    workload: str
    policy: str
    driver: str
    kernel: str
    params: tuple[tuple[str, object], ...]     # (name, parsed value), the names given
    seed: int
    ops: int
    drop_rate: float
    max_failures: int

    @property
    def key(self) -> str:
        """The cell as text: equal keys, equal cells."""
        parts = [self.workload, self.policy, self.driver, self.kernel]
        parts += ["%s=%s" % (k, canonical(v)) for k, v in self.params]
        parts += ["seed=%d" % self.seed, "ops=%d" % self.ops, "drop_rate=%r" % self.drop_rate,
                  "max_failures=%d" % self.max_failures]
        return " ".join(parts)


def canonical(value: object) -> str:
    """A parameter value as text, the same whether it was parsed here or read
    back from a table: lists joined by commas, floats by repr."""
    if isinstance(value, (tuple, list)):
        return ",".join(canonical(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from "1..20", "3", "1,5,9" or "1..5,10" (a tuple, in order,
    no repeats)."""
    if not isinstance(text, str):
        raise errors.IovaTypeError("seeds are given as text here, not %r" % (text,))
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        lo, dots, hi = part.partition("..")
        try:
            bounds = (int(lo), int(hi)) if dots else (int(part),) * 2
        except ValueError:
            raise errors.IovaValueError("%r is not a seed list (examples: 1..20, 1,5,9, "
                                        "1..5,10)" % text) from None
        if bounds[1] < bounds[0]:
            raise errors.IovaValueError("seed range %r is empty (%d > %d)" % ((part,) + bounds))
        out.extend(range(bounds[0], bounds[1] + 1))
    return _unique(out, "seed")


def _unique(values: Iterable[_V], what: str) -> tuple[_V, ...]:
    seen: list[_V] = []
    for v in values:
        if v in seen:
            raise errors.IovaValueError("%s %r is given twice" % (what, v))
        seen.append(v)
    return tuple(seen)


def _is_list_param(spec: Param) -> bool:
    """Whether a parameter's value is itself a list (its default parses to one)."""
    try:
        return isinstance(spec.parse(spec.default), tuple)
    except errors.IovaError:
        return False


def param_alternatives(classes: Sequence[type[Workload]],
                       pairs: Iterable[str] | None) -> dict[str, list[str]]:
    """{name: [value text, ...]} from the command line's -p NAME=V1,V2,...
    (pairs: the -p strings), checked against the workload classes' parameters.
    This is the one place the command line's parameter lists are split."""
    out: dict[str, list[str]] = {}
    for item in pairs or ():
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise WorkloadError("-p takes NAME=VALUE[,VALUE...], not %r" % item)
        specs = [cls.PARAMS[name] for cls in classes if name in cls.PARAMS]
        if not specs:
            raise WorkloadError("no workload here has a parameter %r (%s)" % (name, "; ".join(
                "%s has: %s" % (cls.name, ", ".join(cls.PARAMS)) for cls in classes)))
        if any(_is_list_param(s) for s in specs):
            values = [text.strip()]
        else:
            values = [v.strip() for v in text.split(",")]
        if any(not v for v in values):
            raise WorkloadError("-p %s: an empty value in %r" % (name, text))
        out.setdefault(name, []).extend(values)
    return out


def as_values(value: Any) -> list[Any]:
    """The values to sweep: a list, tuple or range as they are, anything
    else as the one value."""
    if isinstance(value, (list, tuple, range)):
        values = list(value)
        if not values:
            raise errors.IovaValueError("an empty list of values")
        return values
    return [value]


def _workload_grids(workloads: Sequence[str], params: dict[str, Any]
                    ) -> Iterator[tuple[str, tuple[tuple[str, Any], ...]]]:
    """(workload, [(name, value), ...]) for every combination of the
    parameters each workload has, values parsed (a bad one raises here,
    before anything runs)."""
    for name in workloads:
        cls = WORKLOADS[name]
        own = [(k, as_values(v)) for k, v in params.items() if k in cls.PARAMS]
        for combo in itertools.product(*[vals for _, vals in own]):
            given = dict(zip([k for k, _ in own], combo))
            try:
                wl = get_workload(name, **given)
            except WorkloadError as exc:
                raise WorkloadError("%s with %s: %s" % (name, ", ".join(
                    "%s=%s" % kv for kv in given.items()) or "its defaults", exc)) from None
            yield name, tuple((k, wl.params[k]) for k in given)


def expand(workloads: Any, policies: Any, drivers: Any, kernels: Any,
           params: dict[str, Any] | None, seeds: Any, ops: Any, drop_rates: Any,
           max_failures: int) -> list[Cell]:
    """The cells, checked: names known, parameters parsed. Seeds vary
    fastest, then policies, so neighbouring cells take similar times."""
    workloads = policy_names(workloads, WORKLOADS, "workload")
    policies = policy_names(policies, POLICIES)
    drivers = policy_names(drivers, DRIVERS, "driver")
    kernels = policy_names(kernels, KERNELS, "kernel")
    params = dict(params or {})
    unknown = [k for k in params if not any(k in WORKLOADS[w].PARAMS for w in workloads)]
    if unknown:
        raise WorkloadError("no workload here has a parameter %s" % ", ".join(map(repr, unknown)))
    # each value through the checks of a single run's arguments
    seeds = _unique([run_args(0, s, 1, 0.0)[1] for s in as_values(seeds)], "seed")
    ops = _unique([run_args(n, 1, 1, 0.0)[0] for n in as_values(ops)], "ops value")
    rates = _unique([run_args(0, 1, 1, r)[3] for r in as_values(drop_rates)], "drop rate")
    max_failures = run_args(0, 1, max_failures, 0.0)[2]
    for p in policies:
        for d in drivers:
            for k in kernels:
                not_applicable(p, d, k)          # unknown combinations fail here
    cells: list[Cell] = []
    for wl, given in _workload_grids(workloads, params):
        for d, k, n, r, p in itertools.product(drivers, kernels, ops, rates, policies):
            cells.extend(Cell(wl, p, d, k, given, s, n, r, max_failures) for s in seeds)
    return cells
