"""pytest configuration for the benchmark suite.

    pytest benchmarks --benchmark-only              timed, grouped tables
    pytest benchmarks --benchmark-disable -q        each body once, as CI runs it
    pytest benchmarks --benchmark-only --run-slow   adds the 1M-range cases and
                                                    the reference model at 100k
"""
import os
import sys

import pytest

# The benchmark files import their shared helpers (workloads.py, c_baseline.py)
# and the tests' (reference.py, trace_synth.py) as top-level modules; make that
# work under any --import-mode, not only the default "prepend". The tests'
# directory is appended: its helpers never shadow an installed module.
_HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS = os.path.join(os.path.dirname(_HERE), "tests")
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

import workloads  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run benchmarks marked slow (1M live ranges, the "
                          "pure-Python reference at 100k)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: needs --run-slow (large live sets; seconds of set-up per round)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    # Hit rates, nodes visited and pairs/s: the figures a time alone does not
    # show. They are saved in the JSON too (extra_info).
    if workloads.NOTES:
        terminalreporter.section("benchmark notes")
        for line in workloads.NOTES:
            terminalreporter.write_line(line)
