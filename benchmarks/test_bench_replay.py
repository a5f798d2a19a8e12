"""Trace replay: speed per million lines, and memory that stays flat as a
capture grows.

The capture is synthetic (tests/trace_synth.py): a "kernel" -- pyiova's
allocator under 6.12's rules -- maps and unmaps buffers for one NVMe-like
device and writes /sys/kernel/tracing/trace text, about 140 bytes a line
like a real capture, with interrupts that hit a task between an
allocation and its map line. `pyiova replay --check` must reproduce every
address it recorded.

    pytest benchmarks/test_bench_replay.py --benchmark-only              200k lines
    pytest benchmarks/test_bench_replay.py --benchmark-only --run-slow   and 2M lines

Speed is a ratio against a baseline in the same process: reading the same
file's events (parsing alone), which any replay has to do. Memory is the
peak RSS of `pyiova replay --check` in a fresh process, for captures of
one and two sizes: flat means the larger one needs no more.
"""
import subprocess
import sys
import time

import pytest

from pyiova import trace as T
from pyiova.trace.parse import Trace, gc_paused, iter_events

import trace_synth             # tests/trace_synth.py (conftest.py puts tests/ on the path)

OPS_PER_100K_LINES = 43_500      # map/unmap calls per 100k lines, for the generator


def _capture(tmp_path_factory, lines):
    path = tmp_path_factory.getbasetemp() / ("capture-%dk.trace" % (lines // 1000))
    if not path.exists():
        k = trace_synth.SyntheticKernel(1, ops=lines * OPS_PER_100K_LINES // 100_000, live=64,
                                        irq=0.25, before=0.05)
        k.write(str(path))
    return str(path)


def _lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _parse(path):
    with gc_paused():
        return sum(1 for _ in iter_events(path, Trace()))


@pytest.mark.parametrize("size", [200_000, pytest.param(2_000_000, marks=pytest.mark.slow)],
                         ids=["200k", "2M"])
def test_replay_speed(benchmark, tmp_path_factory, size):
    path = _capture(tmp_path_factory, size)
    n = _lines(path)
    t = time.perf_counter()
    _parse(path)
    parse_s = time.perf_counter() - t           # the same clock as the benchmark's
    benchmark.group = "replay-%s" % ("200k" if size < 10 ** 6 else "2M")
    t = time.perf_counter()
    r = benchmark.pedantic(T.check, args=(path,), rounds=1, iterations=1)
    s = time.perf_counter() - t                 # one round (also under --benchmark-disable)
    assert r.ok and r.mismatched == 0
    benchmark.extra_info.update(
        lines=n, addresses=r.matched, seconds_per_million_lines=round(s * 1e6 / n, 2),
        parse_seconds_per_million_lines=round(parse_s * 1e6 / n, 2),
        times_parsing=round(s / parse_s, 2) if parse_s else None)


_RSS = ("import resource, sys\n"
        "from pyiova.cli import main\n"
        "code = main(['replay', sys.argv[1], '--check', '--no-progress'])\n"
        "sys.stdout.flush()\n"
        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n")


def _peak_rss_mb(path):
    p = subprocess.run([sys.executable, "-c", _RSS, path], capture_output=True, text=True,
                       timeout=3600)
    assert p.returncode == 0, p.stderr
    kb = int(p.stdout.rsplit("maxrss_kb", 1)[1])
    return kb / 1024.0


@pytest.mark.parametrize("size", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)],
                         ids=["100k+200k", "1M+2M"])
def test_replay_memory_is_flat(benchmark, tmp_path_factory, size):
    small, large = _capture(tmp_path_factory, size), _capture(tmp_path_factory, 2 * size)
    benchmark.group = "replay-memory"
    rss_small = _peak_rss_mb(small)
    rss_large = benchmark.pedantic(_peak_rss_mb, args=(large,), rounds=1, iterations=1)
    benchmark.extra_info.update(lines_small=_lines(small), lines_large=_lines(large),
                                peak_rss_mb_small=round(rss_small, 1),
                                peak_rss_mb_large=round(rss_large, 1))
    # what a replay holds is the live mappings and the open choices, not the
    # lines: twice the capture, (about) the same memory
    assert rss_large < rss_small * 1.25 + 8
    assert rss_large < 200
