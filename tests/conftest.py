"""pytest configuration shared by every test module.

The tests import their helpers (reference.py, the reference model; vectors.py,
the kernel recordings; dma_world.py, faultpoints.py, trace_synth.py, ...) as
top-level modules. pytest's default import mode puts this directory on
sys.path for the test files themselves; putting it there once, here, makes
the helpers importable under any --import-mode (importlib too) and from
any working directory, and spares each test file its own sys.path line.
Appended, not prepended: a helper never shadows an installed module.
"""
import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
