"""What simulate(), Simulation and compare() accept, checked before anything
runs: the run's own arguments (a workload's parameters are checked by
pyiova.workloads.params, whose number parsers these use too).

    policies      compare(): a policy name, "a,b,c", or a list of names;
                  no empty, unknown or repeated names
    ops           0..sys.maxsize operations
    seed          any integer
    max_failures  an integer >= 1
    drop_rate     a number in 0..1 (checked whatever the driver)
    timeline      a bool
    progress      None or a callable

Each raises IovaValueError (IovaTypeError for a wrong type) naming the
argument and the value.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import errors
from .workloads.params import WorkloadError, fraction, integer, op_count, seed

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = ["policy_names", "run_args", "op_count", "progress_callback", "aperture_bits"]


def policy_names(policies: str | Iterable[str], known: Collection[str],
                 what: str = "policy") -> tuple[str, ...]:
    """A tuple of policy names from a name, "a,b,c" or an iterable of names
    (of workloads, with what="workload")."""
    if isinstance(policies, str):
        items = policies.split(",")
    else:
        try:
            items = list(policies)
        except TypeError:
            raise errors.IovaTypeError("%s names must be a name or a list of names, not %s (%r)"
                                       % (what, type(policies).__name__, policies)) from None
    names = []
    for item in items:
        if not isinstance(item, str):
            raise errors.IovaTypeError("%r is not a %s name" % (item, what))
        name = item.strip()
        if not name:
            raise errors.IovaValueError("an empty %s name in %r" % (what, policies))
        if name not in known:
            raise errors.IovaValueError("unknown %s %r (known: %s)"
                                        % (what, name, ", ".join(known)))
        if name in names:
            raise errors.IovaValueError("%s %r is named twice" % (what, name))
        names.append(name)
    if not names:
        raise errors.IovaValueError("no %s named" % what)
    return tuple(names)


_max_failures = integer(1, None)
_drop_rate = fraction()


def run_args(ops: int, run_seed: Any, max_failures: int, drop_rate: float,
             timeline: bool = False,
             progress: Callable[[int, str], None] | None = None
             ) -> tuple[int, Any, int, float]:
    """(ops, seed, max_failures, drop_rate) as a run uses them."""
    try:
        ops = op_count(ops)
        run_seed = seed(run_seed)
    except WorkloadError as exc:
        raise errors.IovaValueError(str(exc)) from None
    if isinstance(max_failures, (str, float)):
        raise errors.IovaValueError("max_failures must be an integer >= 1, not %r"
                                    % (max_failures,))
    try:
        max_failures = _max_failures(max_failures)
    except WorkloadError as exc:
        raise errors.IovaValueError("max_failures must be an integer >= 1: %s" % exc) from None
    if isinstance(drop_rate, str):
        raise errors.IovaValueError("drop_rate must be a number in 0..1, not %r" % (drop_rate,))
    try:
        drop_rate = _drop_rate(drop_rate)
    except WorkloadError as exc:
        raise errors.IovaValueError("drop_rate must be a number in 0..1: %s" % exc) from None
    if not isinstance(timeline, bool):
        raise errors.IovaTypeError("timeline must be a bool, not %s (%r)"
                                   % (type(timeline).__name__, timeline))
    progress_callback(progress)
    return ops, run_seed, max_failures, drop_rate


def progress_callback(progress: Callable[[int, str], None] | None
                      ) -> Callable[[int, str], None] | None:
    """progress, if it is None or a callable."""
    if progress is not None and not callable(progress):
        raise errors.IovaTypeError("progress must be None or a callable, not %s (%r)"
                                   % (type(progress).__name__, progress))
    return progress


def aperture_bits(bits: int | None) -> int:
    """A replay's IOMMU input width: 0 or None (no aperture), or 13..64 bits.
    IOVA page 0 is never handed out, so fewer than 13 bits (with 4 KiB
    pages) leave no IOVA space at all."""
    if bits is None:
        return 0
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise errors.IovaTypeError("aperture_bits must be an integer, not %s (%r)"
                                   % (type(bits).__name__, bits))
    if bits and not 13 <= bits <= 64:
        raise errors.IovaValueError(
            "aperture_bits %d is not 0 (no aperture) or a width in 13..64 bits: IOVA page 0 is "
            "never handed out, so fewer than 13 bits leave no space at all" % bits)
    return bits
