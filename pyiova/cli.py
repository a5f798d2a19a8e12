"""The pyiova command (also `python -m pyiova`).

It parses arguments, calls the simulator (pyiova.sim) and prints what comes
back: a table for people (pyiova.sim_report, pyiova.trace.report), --json
for machines, --plot for a picture. With no command it runs the demo.

Exit status: 0 when the runs completed (whatever they found: a policy that
fails or is unsafe is a result, not an error); 1 when the command could
not finish (a plot that cannot be written, no memory left, an internal
error); 2 for bad arguments or a policy that cannot run where asked; 3 when
--plot is asked for without matplotlib; 130 on Ctrl-C; 141 when the reader
of the output goes away. Every error is one line on stderr ("pyiova: ..."),
never a traceback (PYIOVA_TRACEBACK=1 shows one for an internal error).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NoReturn

from . import __version__
from .sim_report import bench_text, compare_text, engine_line, run_header, simulate_text

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_MATPLOTLIB = 3


# ---- progress ---------------------------------------------------------------------

class _Bar:
    """A progress bar on stderr for runs that take more than a second: tqdm's
    when it is installed, else a small one of our own; nothing when stderr is
    not a terminal (pipes, CI logs) or when disabled."""

    DELAY = 1.0

    def __init__(self, total, enabled=True, unit="op") -> None:
        self.total = max(1, total)
        self.unit = unit
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()
        self.shown = False
        self.last = 0.0
        self.label = ""
        self.tqdm = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.tqdm = tqdm(total=self.total, unit=unit, unit_scale=True, delay=self.DELAY,
                                 leave=False, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done, label=""):
        if not self.enabled:
            return
        if self.tqdm is not None:
            if label != self.label:
                self.label = label
                self.tqdm.set_description(label, refresh=False)
            self.tqdm.update(done - self.tqdm.n)
            return
        now = time.monotonic()
        if now - self.start < self.DELAY or (now - self.last < 0.1 and done < self.total):
            return
        self.last = now
        self.shown = True
        frac = min(1.0, done / self.total)
        width = 30
        fill = int(frac * width)
        rate = done / (now - self.start)
        left = (self.total - done) / rate if rate > 0 else 0.0
        sys.stderr.write("\r%-16s [%s%s] %3d%% %s/%s %ss  %.0fs left " % (
            label[:16], "#" * fill, "." * (width - fill), frac * 100, _si(done),
            _si(self.total), self.unit, left))
        sys.stderr.flush()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        elif self.shown:
            sys.stderr.write("\r" + " " * 78 + "\r")
            sys.stderr.flush()


def _si(n):
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return "%.1f%s" % (n / div, unit)
    return str(n)


# ---- arguments ------------------------------------------------------------------------

def _params(pairs):
    out = {}
    for item in pairs or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Usage("--param takes NAME=VALUE, not %r" % item)
        if key.strip() in out:
            raise _Usage("--param %s is given twice" % key.strip())
        out[key.strip()] = value.strip()
    return out


def _names(text, check):
    """check(text) for a comma-separated option, its error as argparse's."""
    from .errors import IovaError
    try:
        return check(text)
    except IovaError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _policy_list(text):
    from .policies import POLICIES
    from .sim_args import policy_names
    return _names(text, lambda t: policy_names(t, POLICIES))


def _workload_list(text):
    from .sim_args import policy_names
    from .workloads import WORKLOADS
    return _names(text, lambda t: policy_names(t, WORKLOADS, what="workload"))


def _positive(text):
    """An integer option in 1..sys.maxsize (what a run can count)."""
    try:
        n = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    if n < 1:
        raise argparse.ArgumentTypeError("%r is not positive" % text)
    if n > sys.maxsize:
        raise argparse.ArgumentTypeError("%r is more than a run can count (at most %d)"
                                         % (text, sys.maxsize))
    return n


def _rate(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("%r is not in [0, 1]" % text)
    return v


def _add_run_options(p, ops_default, driver_default="ipmmu", plot=True) -> None:
    from .iova import KERNELS
    from .drivers.registry import DRIVERS
    p.add_argument("--driver", choices=list(DRIVERS), default=driver_default,
                   help="the IOMMU: ipmmu (Renesas IPMMU-VMSA with its TLB-invalidation "
                        "erratum) or generic (strict, ranged invalidation, flush queue) "
                        "(default: %s)" % driver_default)
    p.add_argument("--ops", type=_positive, default=ops_default, metavar="N",
                   help="operations per run (default: %s)" % format(ops_default, ","))
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default: 1)")
    p.add_argument("--kernel", choices=list(KERNELS), default="6.12",
                   help="dma-iommu and iova.c rules to model: 6.12 (mainline), 6.1 (Debian "
                        "12: a fixed 32-magazine depot, PCI devices try below 4 GiB on every "
                        "allocation) or 4.10 (default: 6.12)")
    p.add_argument("--drop-rate", type=_rate, default=1.0, metavar="P",
                   help="ipmmu: probability that a flush on the unmap path is lost "
                        "(default: 1.0; 0 turns the erratum off)")
    p.add_argument("--max-failures", type=_positive, default=None, metavar="N",
                   help="stop a run after N failed maps (default: 1000)")
    p.add_argument("--engine", choices=("auto", "c", "python"), default="auto",
                   help="the simulation engine: c (fast), python (the reference loop, the "
                        "same results), auto: c where the driver allows (default)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it only ever shows on a terminal)")
    if plot:
        p.add_argument("--plot", metavar="FILE.png",
                       help="draw the address space over time (needs matplotlib)")


def _add_workload_options(p) -> None:
    from .workloads import WORKLOADS
    p.add_argument("workload", choices=list(WORKLOADS), metavar="WORKLOAD",
                   help="one of: %s" % ", ".join(WORKLOADS))
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="a workload parameter (repeatable; listed below)")


def _epilog(examples) -> str:
    from .drivers.registry import DRIVERS
    from .policies import POLICIES
    from .workloads import describe
    pol = "\n".join("  %-17s %s" % (p.name, p.summary) for p in POLICIES.values())
    drv = "\n".join("  %-17s %s" % (k, v) for k, v in DRIVERS.items())
    wl = "\n".join("  " + line for line in describe().splitlines())
    return ("examples:\n%s\n\npolicies:\n%s\n\ndrivers:\n%s\n\nworkloads and their parameters "
            "(defaults in brackets):\n%s\n\nAfter a failed map the run goes on, as the USB core "
            "does: the failure is counted,\nthe failed mapping's accesses and unmap are skipped, "
            "and the next transfer is the\nretry; after --max-failures failures the run stops "
            "(the device would be hung)."
            % (examples, pol, drv, wl))


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the usage itself is one
    --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, "%s: error: %s (see: %s --help)\n" % (self.prog, message,
                                                                    self.prog))


def build_parser():
    p = _Parser(
        prog="pyiova",
        description="A userspace model of the Linux IOMMU DMA address (IOVA) allocator: run a "
                    "device's DMA pattern through allocation policies and see what fails, "
                    "what is unsafe and what is fast.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pyiova compare usb                 the 2017 review's argument, measured\n"
               "  pyiova simulate nvme --policy iova-lazy --driver generic\n"
               "  pyiova bench                       which policy is fastest, per workload\n"
               "  pyiova sweep usb -p ring_size=64K,1M --seeds 1..20   many runs, summarised\n"
               "  pyiova                             run the demo\n"
               "  pyiova demo --ops 1000000 --seed 3\n\n"
               "`pyiova COMMAND --help` shows each command's options, policies and workloads.")
    from .policies import DEFAULT_POLICIES, POLICIES
    from .sim import DEFAULT_OPS
    p.add_argument("--version", action="version", version="pyiova " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    demo = sub.add_parser("demo", help="churn a bare IOVA domain and print what happened "
                                       "(the default)",
                          formatter_class=raw,
                          epilog="examples:\n  pyiova demo\n  pyiova demo --ops 1000000 --seed 3")
    demo.add_argument("--ops", type=_positive, default=200_000,
                      help="allocations per churn (default: 200,000)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    demo.set_defaults(func=_demo)

    s = sub.add_parser(
        "simulate", help="run one workload through one policy",
        description="Run a workload's DMA API calls and device accesses through one IOVA "
                    "allocation policy on a model IOMMU, and report maps, failures, address "
                    "space use, flushes, IOTLB behaviour and stale translations.",
        formatter_class=raw,
        epilog=_epilog("  pyiova simulate usb --policy wraparound\n"
                       "  pyiova simulate usb --policy reset-when-empty --ops 300000 --json\n"
                       "  pyiova simulate nic --policy iova-lazy --driver generic "
                       "-p rx_ring=1024\n"
                       "  pyiova simulate usb --policy wraparound --ops 1000000\n"
                       "  pyiova simulate random --policy iova -p lifetime=500 -p size_max=2M "
                       "--plot random.png"))
    _add_workload_options(s)
    s.add_argument("--policy", choices=list(POLICIES),
                   default="iova", metavar="POLICY", help="allocation policy (default: iova)")
    _add_run_options(s, DEFAULT_OPS)
    s.set_defaults(func=_simulate)

    c = sub.add_parser(
        "compare", help="run one workload through several policies, side by side",
        description="Run the same workload (same seed, same operations) through several IOVA "
                    "policies and print them side by side, with a sentence on each.",
        formatter_class=raw,
        epilog=_epilog("  pyiova compare usb\n"
                       "  pyiova compare usb --driver generic\n"
                       "  pyiova compare usb --policies iova,wraparound --ops 100000 --json\n"
                       "  pyiova compare nvme --driver generic -p queues=8 --plot nvme.png\n"
                       "  pyiova compare usb --drop-rate 0.01 --kernel 4.10\n"
                       "  pyiova compare nvme --driver generic --kernel 6.1"))
    _add_workload_options(c)
    c.add_argument("--policies", type=_policy_list, default=DEFAULT_POLICIES,
                   metavar="P,P,...",
                   help="policies to run, comma-separated (default: %s)"
                        % ",".join(DEFAULT_POLICIES))
    _add_run_options(c, DEFAULT_OPS)
    c.set_defaults(func=_compare)

    b = sub.add_parser(
        "bench", help="a quick built-in comparison: every workload through every policy",
        description="A quick built-in comparison: each workload through each policy, a short "
                    "run each (same seed), reporting operations per second and the verdict. "
                    "Answers 'which policy is fastest, and is it safe?' in under a minute.",
        formatter_class=raw,
        epilog="examples:\n  pyiova bench\n  pyiova bench --driver ipmmu\n"
               "  pyiova bench --ops 100000 --workloads usb,nvme --json\n"
               "  pyiova bench --policies iova,iova-tree,wraparound")
    b.add_argument("--workloads", type=_workload_list, default=None, metavar="W,W,...",
                   help="workloads to run (default: all)")
    b.add_argument("--policies", type=_policy_list, default=DEFAULT_POLICIES,
                   metavar="P,P,...", help="policies to run (default: %s)"
                   % ",".join(DEFAULT_POLICIES))
    _add_run_options(b, 50_000, driver_default="generic", plot=False)
    b.set_defaults(func=_bench)

    _add_replay(sub)
    from .sweeps.command import add_parser as add_sweep_parser
    add_sweep_parser(sub, raw)
    p.set_defaults(func=_demo, ops=200_000, seed=1)
    return p


# ---- commands -----------------------------------------------------------------------

def _demo(args):
    from .demo import run
    return run(ops=args.ops, seed=args.seed)


def _sim_kwargs(args):
    from .sim import DEFAULT_MAX_FAILURES
    return dict(kernel=args.kernel, drop_rate=args.drop_rate,
                max_failures=args.max_failures or DEFAULT_MAX_FAILURES, engine=args.engine)


def _header(args, wl):
    return run_header(wl, args.driver, args.drop_rate, args.ops, args.seed, args.kernel)


def _workload(args):
    from .workloads import WorkloadError, get_workload
    try:
        return get_workload(args.workload, **_params(args.param))
    except WorkloadError as exc:
        raise _Usage(str(exc)) from None


class _Usage(Exception):
    """A usage error found after parsing (exit status 2)."""


class _Failure(Exception):
    """The command could not do what was asked (exit status 1)."""


def _check_plot(args) -> bool:
    """Before a long run: can the plot be drawn and written at all? args.plot
    becomes the file that will be written (".png" added to a bare name)."""
    path = getattr(args, "plot", None)
    if path is not None:
        from .errors import IovaError
        from .plot import MISSING_MATPLOTLIB, have_matplotlib, plot_file_name, plot_path
        if not path.strip():
            raise _Usage("--plot needs a file name")
        if os.path.isdir(path):
            raise _Usage("cannot write the plot to %s: it is a folder" % path)
        try:
            path = args.plot = plot_file_name(path)
        except IovaError as exc:
            raise _Usage(str(exc)) from None
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise _Usage("cannot write the plot to %s: it is a folder" % path)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise _Usage("cannot write the plot to %s: %s is not a writable folder"
                         % (path, folder))
        # where to write is checked first: the same mistake with or without
        # matplotlib; which formats it writes only matplotlib can say
        if not have_matplotlib():
            sys.stderr.write("pyiova: %s\n" % MISSING_MATPLOTLIB)
            return False
        try:
            plot_path(path)
        except IovaError as exc:
            raise _Usage(str(exc)) from None
    return True


def _draw(args, results, title) -> None:
    from .plot import plot_results
    try:
        path = plot_results(results, args.plot, title=title)
    except OSError as exc:
        raise _Failure("cannot write the plot to %s: %s" % (args.plot, exc.strerror or exc)) \
            from None
    if not args.json:
        print("\nplot written to %s" % path)


def _simulate(args):
    from .sim import PolicyNotApplicable, not_applicable, simulate
    wl = _workload(args)
    why = not_applicable(args.policy, args.driver, args.kernel)
    if why:
        raise _Usage("%s cannot run on %s: %s" % (args.policy, args.driver, why))
    if not _check_plot(args):
        return EXIT_NO_MATPLOTLIB
    bar = _Bar(args.ops, not args.no_progress)
    try:
        r = simulate(wl, args.policy, args.driver, args.ops, args.seed, bar,
                     timeline=bool(args.plot), **_sim_kwargs(args))
    except PolicyNotApplicable as exc:
        raise _Usage(str(exc)) from None
    finally:
        bar.close()
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
    else:
        print(simulate_text(_header(args, wl), r))
    if args.plot:
        _draw(args, [r], "pyiova simulate %s --policy %s --driver %s" % (wl.name, args.policy,
                                                                        args.driver))
    return 0


def _compare(args):
    from .sim import compare, not_applicable
    wl = _workload(args)
    if not _check_plot(args):
        return EXIT_NO_MATPLOTLIB
    runnable = [p for p in args.policies if not not_applicable(p, args.driver, args.kernel)]
    bar = _Bar(args.ops * len(runnable), not args.no_progress)
    t0 = time.perf_counter()
    try:
        results = compare(wl, args.policies, args.driver, args.ops, args.seed, bar,
                          timeline=bool(args.plot), **_sim_kwargs(args))
    finally:
        bar.close()
    took = time.perf_counter() - t0
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(compare_text(_header(args, wl), results, took))
    if args.plot:
        _draw(args, results, "pyiova compare %s --driver %s (%s ops, seed %d)"
              % (wl.name, args.driver, format(args.ops, ","), args.seed))
    return 0


def _bench(args) -> int:
    from .sim import not_applicable, simulate
    from .workloads import WORKLOADS
    names = args.workloads or tuple(WORKLOADS)
    runnable = [p for p in args.policies if not not_applicable(p, args.driver, args.kernel)]
    bar = _Bar(args.ops * len(runnable) * len(names), not args.no_progress)
    results = []
    done = 0
    t0 = time.perf_counter()
    try:
        for name in names:
            for pol in runnable:
                def cb(n, label, _base=done) -> None:
                    bar(_base + n, label)
                results.append(simulate(name, pol, args.driver, args.ops, args.seed, cb,
                                        **_sim_kwargs(args)))
                done += args.ops
    finally:
        bar.close()
    took = time.perf_counter() - t0
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    engine = None
    if runnable and args.engine != "python":
        engine = _engine_line(results[0], args)
    not_run = {p: not_applicable(p, args.driver, args.kernel)
               for p in args.policies if p not in runnable}
    print(bench_text(results, names, args.policies, not_run, args.ops, args.seed, args.driver,
                     args.kernel, engine, took))
    return 0


def _engine_line(r, args):
    """The engines side by side on the table's first run: the same run again
    through the Python engine (the reference), its ops/s against the C
    engine's."""
    from .sim import simulate
    ref = None
    if r.engine == "c":
        kw = _sim_kwargs(args)
        kw["engine"] = "python"
        ref = simulate(r.workload, r.policy, args.driver, args.ops, args.seed, **kw)
    return engine_line(r, ref)


# ---- replay ---------------------------------------------------------------------------

def _add_replay(sub) -> None:
    r = sub.add_parser(
        "replay", help="replay a kernel trace: --check the model against it, or what if "
                       "another policy had run",
        description="Read a kernel trace (/sys/kernel/tracing/trace text, trace-cmd report or "
                    "perf script output; gzip, bzip2 or xz accepted) with iommu:map/unmap and "
                    "dma: events, and replay each IOVA domain through the kernel's own "
                    "allocator -- strict or lazy (the flush queue), as the trace shows -- with "
                    "the recorded addresses deciding what the trace leaves open (which side "
                    "of an interrupt an allocation fell on, when the flush queue's timer "
                    "fired). --check compares every recorded address with pyiova's. "
                    "--policy runs the same lifetimes through other policies and says what "
                    "would have changed. Malformed or unknown lines are counted and reported "
                    "with their line numbers. docs/trace-replay.md says how to capture a trace.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pyiova replay trace.txt.gz --check          does the model fit this kernel?\n"
               "  pyiova replay trace.txt.gz --policy wraparound,reset-when-empty\n"
               "  pyiova replay trace.txt.gz --policy iova@4.10   the same lifetimes on 4.10\n"
               "  pyiova replay trace.txt.gz --policy iova,wraparound --driver ipmmu\n"
               "                                 ...behind the IPMMU, erratum and all\n"
               "  pyiova replay trace.txt --check --mode lazy --json\n\n"
               "exit status: 0 when the replay ran (with --check: every address matched); "
               "1 when an address differs or no event could be replayed; 2 for bad arguments "
               "or a trace that cannot be read.")
    r.add_argument("trace", metavar="TRACE", help="the trace file ('-' reads stdin)")
    r.add_argument("--check", action="store_true",
                   help="compare pyiova's addresses with the ones the kernel recorded")
    r.add_argument("--policy", type=_trace_policies, default=None, metavar="P[,P...]",
                   help="what-if policies, comma-separated, each optionally @KERNEL "
                        "(iova@4.10); with --check, iova or iova-lazy says strict or lazy")
    r.add_argument("--mode", choices=("auto", "strict", "lazy"), default=None,
                   help="the traced kernel's TLB invalidation: strict, lazy (the flush queue), "
                        "or auto: decided by the recorded addresses (default)")
    r.add_argument("--kernel", choices=("auto", "6.12", "6.1", "4.10"), default="auto",
                   help="the traced kernel's rules (default auto: 6.12 when the trace has dma: "
                        "events, which 6.12 added; else 6.1)")
    r.add_argument("--aperture-bits", type=_aperture_bits, default=39, metavar="B",
                   help="the IOMMU's input address width, forced as the aperture: 13..64 "
                        "(default: 39, VT-d's; 0: none)")
    r.add_argument("--pci-windows", type=_pci_windows, default=None, metavar="LO-HI[,...]",
                   help="the PCI host bridge's memory windows, reserved in each device's "
                        "domain as the kernel does (the 'root bus resource [mem LO-HI window]' "
                        "lines of the boot log), hex, comma-separated, or none (default: "
                        "QEMU q35's)")
    r.add_argument("--hz", type=int, default=250, metavar="HZ",
                   help="the traced kernel's tick rate, for the flush queue's timer "
                        "(default 250, Debian's)")
    r.add_argument("--driver", default=None, metavar="DRIVER",
                   help="the IOMMU driver model the what-if runs through as well, with "
                        "simulated device accesses: generic (the traced IOMMU, default), "
                        "ipmmu (the IPMMU and its invalidation erratum), any registered "
                        "driver, or none (the allocators alone)")
    r.add_argument("--engine", choices=("auto", "c", "python"), default="auto",
                   help="the simulation engine of the driver model (default auto: C)")
    r.add_argument("--drop-rate", type=float, default=1.0, metavar="P",
                   help="ipmmu: probability that an unmap-path flush is lost (default 1.0)")
    r.add_argument("--json", action="store_true",
                   help="JSON: with --check an array of one object per device, else an array "
                        "of one object per policy")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_replay)


def _trace_policies(text):
    from .trace import parse_policy
    names = tuple(p.strip() for p in text.split(","))
    if not names or not all(names):
        raise argparse.ArgumentTypeError("policies must be comma-separated names, not %r"
                                         % text)
    try:
        return tuple(parse_policy(n) for n in names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pci_windows(text):
    """'none' or LO-HI[,LO-HI...] in hex (0x optional): (lo, hi) pairs."""
    if text.strip().lower() == "none":
        return ()
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            pair = (int(lo, 16), int(hi, 16))
        except ValueError:
            pair = None
        if not sep or pair is None or not 0 <= pair[0] <= pair[1] < 1 << 64:
            raise argparse.ArgumentTypeError("%r is not LO-HI in hex (0xc0000000-0xfebfffff) "
                                             "with LO <= HI < 2^64" % part.strip())
        out.append(pair)
    return tuple(out)


def _aperture_bits(text):
    """0 (no aperture) or 13..64 (sim_args.aperture_bits)."""
    from .sim_args import aperture_bits
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    return _names(bits, aperture_bits)


class _TraceBar:
    """The trace reports progress as (done, total): make the bar on the first call."""

    def __init__(self, enabled) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.label = ""

    def __call__(self, done, total):
        if self.bar is None:
            self.bar = _Bar(total, self.enabled)
        self.bar(done, self.label)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _replay_mode(args):
    """--mode, or with --check what --policy iova / iova-lazy says."""
    if args.mode is not None:
        return args.mode
    if args.check and args.policy:
        names = {p for p, _ in args.policy}
        if names == {"iova"}:
            return "strict"
        if names == {"iova-lazy"}:
            return "lazy"
        raise _Usage("--check replays the kernel's own allocator: --policy iova (strict) or "
                     "iova-lazy (lazy) says which, not %s" % ",".join(sorted(names)))
    return "auto"


def _replay(args) -> int:
    from . import trace
    from .errors import TraceError
    try:
        timer = trace.TimerRules(hz=args.hz)
    except ValueError as exc:
        raise _Usage("--hz: %s" % exc) from None
    mode = _replay_mode(args)
    source = sys.stdin.buffer if args.trace == "-" else args.trace
    bar = _TraceBar(not args.no_progress)
    bar.label = "check" if args.check else "replay"
    opts = dict(kernel=args.kernel, mode=mode, aperture_bits=args.aperture_bits, timer=timer,
                progress=bar)
    if args.pci_windows is not None:
        opts["reserved"] = trace.VTD_RESERVED + args.pci_windows
    res: Any    # a CheckResult, or the list of ReplayResult
    try:
        if args.check or not args.policy:
            if args.driver is not None:
                raise _Usage("--driver is for the what-if: give --policy (and no --check)")
            res = trace.check(source, **opts)
        else:
            driver = args.driver if args.driver is not None else trace.DEFAULT_DRIVER
            res = trace.replay(source, list(args.policy), driver=driver, engine=args.engine,
                               drop_rate=args.drop_rate, **opts)
    except OSError as exc:
        raise _Usage("cannot read %s: %s" % (args.trace, exc.strerror or exc)) from None
    except TraceError as exc:
        raise _Usage(str(exc)) from None
    finally:
        bar.close()
    from .trace.report import kernel_only, no_events
    chk = res if isinstance(res, trace.CheckResult) else res[0].check
    if args.json:
        if args.check:
            print(json.dumps(res.to_dicts(), indent=2))
        elif args.policy:
            print(json.dumps([r.to_dict() for r in res], indent=2))
        else:
            print(json.dumps([kernel_only(chk)], indent=2))
    elif args.check:
        print(trace.format_check(res))
    elif args.policy:
        print(trace.format_replay(res))
    else:
        print(trace.format_check(res).replace("check against", "replay through", 1))
    if not chk.trace.get("events") or chk.matched + chk.mismatched == 0:
        sys.stderr.write("pyiova: %s: %s\n" % (args.trace, no_events(chk)))
        return 1
    if args.check and not chk.ok:
        return 1
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import IovaError
    try:
        return args.func(args)
    except (_Usage, IovaError) as exc:
        # a pyiova error names the value it refused: one line, no traceback
        parser.exit(EXIT_USAGE, "pyiova: %s\n" % _one_line(exc))
    except _Failure as exc:
        parser.exit(EXIT_FAILURE, "pyiova: %s\n" % exc)
    except MemoryError as exc:
        parser.exit(EXIT_FAILURE, "pyiova: out of memory%s\n" % (": %s" % exc if str(exc) else ""))
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`pyiova ... | head`): say nothing more, and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        # a bug in pyiova: still one line, with the traceback on request
        if os.environ.get("PYIOVA_TRACEBACK"):
            raise
        parser.exit(EXIT_FAILURE, "pyiova: internal error: %s: %s (run with PYIOVA_TRACEBACK=1 "
                                  "for the traceback, and please report it)\n"
                    % (type(exc).__name__, _one_line(exc)))


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
