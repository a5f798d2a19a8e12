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

Speed is a ratio against baselines in the same process: reading the same
file's events (parsing alone), which any replay has to do, and the replay
as it was before it streamed (commit e5475d4: every line held in lists,
one fixed order, no ordering engine), run on the same capture in the same
process (group replay-vs-e5475d4-*). That replay is read from the
repository's history into a temporary directory for the run, never kept
as code; without git or the history the group is skipped. Memory is the
peak RSS of `pyiova replay --check` in a fresh process, for captures of
one and two sizes: flat means the larger one needs no more.
"""
import importlib
import os
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


# ---- against the replay before streaming -----------------------------------------

OLD_COMMIT = "e5475d4"
_OLD_MODULES = ("__init__", "lifetimes", "parse", "replay", "report")
_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
_timings = {}


def _old_replay(tmp_path_factory):
    """pyiova.trace as of OLD_COMMIT, as a package of its own (`old_trace`)
    on top of today's C core; None when git or the history is missing."""
    if "old_trace" in sys.modules:
        return sys.modules["old_trace"]
    root = tmp_path_factory.mktemp("old-replay")
    pkg = root / "old_trace"
    pkg.mkdir()
    for name in _OLD_MODULES:
        try:
            text = subprocess.run(["git", "-C", _REPO, "show",
                                   "%s:pyiova/trace/%s.py" % (OLD_COMMIT, name)],
                                  capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        # its imports of the rest of pyiova, made absolute
        text = text.replace("from .. import ", "from pyiova import ")
        text = text.replace("from ..", "from pyiova.")
        (pkg / ("%s.py" % name)).write_text(text)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("old_trace")
    finally:
        sys.path.remove(str(root))


@pytest.mark.parametrize("size", [200_000, pytest.param(2_000_000, marks=pytest.mark.slow)],
                         ids=["200k", "2M"])
@pytest.mark.parametrize("which", ["e5475d4", "now"])
def test_replay_against_the_replay_before_streaming(benchmark, tmp_path_factory, size, which):
    """Both check() the same capture. Before each timed round the other
    replay runs once, untimed (so that a slow minute of a shared machine
    falls on both rows alike); the ratio of their best process CPU times
    (user + system, as `time` reports them) is noted on both rows."""
    path = _capture(tmp_path_factory, size)
    old = _old_replay(tmp_path_factory)
    if old is None:
        pytest.skip("the replay of %s is not in this checkout's history" % OLD_COMMIT)
    label = "200k" if size < 10 ** 6 else "2M"
    benchmark.group = "replay-vs-%s-%s" % (OLD_COMMIT, label)
    n = _lines(path)
    checks = {"e5475d4": old.check, "now": T.check}
    cpu = _timings.setdefault(label, {"e5475d4": [], "now": []})
    other = "now" if which == "e5475d4" else "e5475d4"

    def one(kind):
        with gc_paused():
            t = time.process_time()
            r = checks[kind](path)
            cpu[kind].append(time.process_time() - t)
        return r

    r = benchmark.pedantic(one, args=(which,), setup=lambda: one(other) and None,
                           rounds=3 if size < 10 ** 6 else 1, iterations=1)
    if which == "now":
        assert r.ok and r.mismatched == 0
    best = {k: min(v) for k, v in cpu.items() if v}
    benchmark.extra_info.update(lines=n, cpu_us_per_line=round(best[which] * 1e6 / n, 2))
    ratio = best["now"] / best["e5475d4"]
    benchmark.extra_info["now_over_e5475d4_cpu"] = round(ratio, 3)
    benchmark.extra_info["e5475d4_cpu_us_per_line"] = round(best["e5475d4"] * 1e6 / n, 2)
    benchmark.extra_info["now_cpu_us_per_line"] = round(best["now"] * 1e6 / n, 2)


# The peak RSS of this process image: Linux's VmHWM starts again at exec,
# while ru_maxrss keeps the forking parent's (pytest's, which the replay of
# e5475d4 above has grown); ru_maxrss where there is no /proc.
_RSS = ("import resource, sys\n"
        "from pyiova.cli import main\n"
        "code = main(['replay', sys.argv[1], '--check', '--no-progress'])\n"
        "sys.stdout.flush()\n"
        "kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            kb = int(line.split()[1])\n"
        "except OSError:\n"
        "    pass\n"
        "print('maxrss_kb', kb)\n"
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
