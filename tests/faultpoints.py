"""Run a scenario with each C allocation failing in turn."""
from pyiova.faults import fail_allocations_after, injected_failures


def each_failure_point(scenario, limit=400):
    """Runs scenario() with the C core's n-th allocation (and every later
    one) failing, for n = 0, 1, ... until it runs without meeting a
    failure; returns that n. Each failure must surface as a MemoryError."""
    for n in range(limit):
        before = injected_failures()
        try:
            with fail_allocations_after(n):
                scenario()
        except MemoryError:
            assert injected_failures() > before
            continue
        if injected_failures() == before:
            return n
    raise AssertionError("scenario still allocating after %d tries" % limit)
