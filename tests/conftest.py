"""pytest configuration shared by every test module.

The tests import their helpers (reference.py, the reference model; vectors.py,
the kernel recordings; dma_world.py, faultpoints.py, trace_synth.py, ...) as
top-level modules. pytest's default import mode puts this directory on
sys.path for the test files themselves; putting it there once, here, makes
the helpers importable under any --import-mode (importlib too) and from
any working directory, and spares each test file its own sys.path line.
Appended, not prepended: a helper never shadows an installed module.
"""
import gc
import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.append(_TESTS)


def pytest_collection_finish(session):
    """Freeze what collection made (gc.freeze): the kernel recordings loaded
    into test_vectors' and test_reference_vectors' parametrization are
    millions of objects that live for the whole run, and every full garbage
    collection would scan them again - a test that calls gc.collect() in a
    loop (test_lifetime.py) then took seconds instead of a tenth of one.
    Frozen objects are only left out of collections; the tests' own objects
    are collected as before."""
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session, exitstatus):
    gc.unfreeze()
