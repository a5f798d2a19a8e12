"""`pyiova sweep`: the command line of pyiova.sweep().

    pyiova sweep usb --policies iova,wraparound,reset-when-empty \\
        -p ring_size=64K,256K,1M --seeds 1..20 --ops 1M --out usb.csv --plot usb.png

prints the cells and their verdicts over the seeds, then one table per
metric (mean, min, max, 95% interval of the mean over the seeds); --json
prints the rows instead, one JSON object per line. Exit status: 0 when every
cell ran, 1 when some cell failed (its row holds the error) or --out could
not be written, and the pyiova command's others (2 bad arguments, 3 --plot
without matplotlib, 130 Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

    from .table import SweepResult

__all__ = ["add_parser"]

EXIT_CELL_FAILED = 1

_EXAMPLES = """examples:
  pyiova sweep usb --policies iova,wraparound,reset-when-empty -p ring_size=64K,256K,1M \\
      --seeds 1..20 --ops 1M
  pyiova sweep usb --policies iova,iova-tree --drop-rate 0,0.001,0.01,0.1,1 --seeds 1..10
  pyiova sweep nic --driver generic --policies iova,iova-lazy,wraparound \\
      -p mtu=1500,9000 -p tso=0,1 --seeds 1..5 --out nic.csv --plot nic.png
  pyiova sweep usb,nvme --drivers ipmmu,generic --kernels 6.12,4.10 --seeds 1..3 --json
  pyiova sweep usb -p ring_size=64K,1M --scheduler tcp://10.0.0.5:8786 --out usb.parquet

The cells are every combination of workloads, policies, drivers, kernels,
-p values, --drop-rate and --ops values, and seeds. -p NAME=V1,V2 sweeps V1
and V2; for a parameter whose value is itself a list (usb's sizes, weights)
each -p is one value: -p sizes=4K,16K -p sizes=64K sweeps two size lists.
--out FILE writes each row as its cell ends (.csv, .jsonl, or .parquet with
pyarrow); run the same command again and the cells already in FILE are not
run again. Without --scheduler the cells run on every core of this machine;
--scheduler local starts a Dask LocalCluster, tcp://HOST:8786 uses a running
Dask scheduler (pip install 'pyiova[dask]'; see the README)."""


def _count(text: str) -> int:
    """A count of operations: 200000, 200_000, 200k, 1M."""
    from ..cli import _positive
    t = text.strip().lower().replace("_", "")
    mult = {"k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a count of operations (examples: 200000, "
                                         "200k, 1M)" % text) from None
    return _positive(str(n))


def _list_of(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        parts = text.split(",")
        if any(not p.strip() for p in parts):
            raise argparse.ArgumentTypeError("%r has an empty item" % text)
        return tuple(item(p) for p in parts)
    return parse


def _seeds(text: str) -> tuple[int, ...]:
    from ..cli import _names as as_option
    from .grid import parse_seeds
    return as_option(text, parse_seeds)


def _names(known: Collection[str], what: str) -> Callable[[str], tuple[str, ...]]:
    """An option's comma-separated names, checked as compare() checks its
    policies."""
    def parse(text: str) -> tuple[str, ...]:
        from ..cli import _names as as_option
        from ..sim_args import policy_names
        return as_option(text, lambda t: policy_names(t, known, what))
    return parse


def add_parser(sub: Any, formatter_class: type[argparse.HelpFormatter]) -> None:
    """Adds the sweep command to the pyiova command's subparsers."""
    from ..cli import _positive, _rate
    from ..iova import KERNELS
    from ..policies import DEFAULT_POLICIES, POLICIES
    from ..sim import DRIVERS, ENGINES
    from ..workloads import WORKLOADS
    from .run import DEFAULT_SEEDS, DEFAULT_SWEEP_OPS
    s = sub.add_parser(
        "sweep", help="many runs: workloads x policies x drivers x parameters x seeds, "
                      "on every core or a Dask cluster",
        description="Run every combination of workloads, policies, drivers, kernels, workload "
                    "parameter values and seeds (each cell deterministic by its seed), on every "
                    "local core or a Dask cluster, and summarise each group of cells over the "
                    "seeds: mean, min, max and a 95%% confidence interval of the mean.",
        formatter_class=formatter_class, epilog=_EXAMPLES)
    s.add_argument("workloads", type=_names(WORKLOADS, "workload"), metavar="WORKLOAD[,...]",
                   help="one or more of: %s" % ", ".join(WORKLOADS))
    s.add_argument("--policies", type=_names(POLICIES, "policy"), default=DEFAULT_POLICIES,
                   metavar="P,P,...", help="policies (default: %s)" % ",".join(DEFAULT_POLICIES))
    s.add_argument("--drivers", "--driver", type=_names(DRIVERS, "driver"), default=("ipmmu",),
                   metavar="D,...", help="drivers: %s (default: ipmmu)" % ", ".join(DRIVERS))
    s.add_argument("--kernels", "--kernel", type=_names(KERNELS, "kernel"), default=("6.12",),
                   metavar="K,...", help="kernel rules: %s (default: 6.12)" % ", ".join(KERNELS))
    s.add_argument("-p", "--param", action="append", metavar="NAME=V1[,V2...]",
                   help="workload parameter values to sweep (repeatable; `pyiova simulate "
                        "--help` lists the parameters)")
    s.add_argument("--seeds", type=_seeds, default=tuple(DEFAULT_SEEDS), metavar="SEEDS",
                   help="seeds: 1..20, 1,5,9 or 1..5,10 (default: 1..%d)" % DEFAULT_SEEDS[-1])
    s.add_argument("--ops", type=_list_of(_count), default=(DEFAULT_SWEEP_OPS,),
                   metavar="N[,N...]", help="operations per run: 200000, 200k, 1M (default: "
                                            "%s)" % format(DEFAULT_SWEEP_OPS, ","))
    s.add_argument("--drop-rate", type=_list_of(_rate), default=(1.0,), metavar="P[,P...]",
                   help="ipmmu: probability that an unmap-path flush is lost (default: 1.0)")
    s.add_argument("--max-failures", type=_positive, default=None, metavar="N",
                   help="stop a run after N failed maps (default: 1000)")
    s.add_argument("--engine", choices=ENGINES, default="auto",
                   help="the simulation engine: c (fast), python (the reference loop, the "
                        "same results), auto: c where the driver allows (default)")
    s.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes (or LocalCluster workers) to run cells on (default: every "
                        "core)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on a Dask cluster: tcp://HOST:8786, or 'local' to start a "
                            "LocalCluster here (pip install 'pyiova[dask]')")
    where.add_argument("--serial", action="store_true",
                       help="run the cells one after another in this process")
    s.add_argument("--out", metavar="FILE",
                   help="write the rows to FILE (.csv, .jsonl, .parquet) as cells end; cells "
                        "already in FILE are not run again")
    s.add_argument("--retry-failed", action="store_true",
                   help="with --out: run again the cells whose rows in FILE hold an error")
    s.add_argument("--metrics", metavar="M,M,...|all",
                   help="columns to summarise and plot (default: failures, first_failure_op, "
                        "peak_live_pfns, fragmentation, full_flushes, stale_translations, "
                        "faults, ops_per_sec)")
    s.add_argument("--json", action="store_true",
                   help="print the rows as JSON lines instead of the summary")
    s.add_argument("--plot", metavar="FILE.png",
                   help="each metric against the swept parameter, one line per policy, the "
                        "spread over seeds shaded (needs matplotlib)")
    s.add_argument("--x", metavar="NAME",
                   help="--plot: the swept column along x (default: the first swept parameter)")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it only ever shows on a terminal)")
    s.set_defaults(func=_run)
    return s


def _metrics(args: argparse.Namespace) -> Any:
    if args.metrics is None or args.metrics == "all":
        return args.metrics
    return [m.strip() for m in args.metrics.split(",") if m.strip()]


def _run(args: argparse.Namespace) -> int:
    from ..cli import EXIT_NO_MATPLOTLIB, _Bar, _check_plot, _Failure, _Usage
    from ..errors import IovaError
    from ..sim import DEFAULT_MAX_FAILURES
    from ..workloads import WORKLOADS
    from .grid import param_alternatives
    from .run import sweep

    try:
        params = param_alternatives([WORKLOADS[w] for w in args.workloads], args.param)
    except IovaError as exc:
        raise _Usage(str(exc)) from None
    if args.retry_failed and not args.out:
        raise _Usage("--retry-failed goes with --out FILE")
    metrics = _metrics(args)
    why = _bad_metrics(metrics, params) or _bad_x(args, params) or _bad_out(args)
    if why:
        raise _Usage(why)
    if not _check_plot(args):
        return EXIT_NO_MATPLOTLIB
    bar = None
    started: list[Any] = [None]

    def progress(done: int, total: int, row: dict[str, Any] | None) -> None:
        nonlocal bar
        if bar is None:
            started[0] = done
            bar = _Bar(total - done, not args.no_progress, unit="cell")
        bar(done - started[0], row["policy"] if row else "")

    try:
        result = sweep(args.workloads, args.policies, args.drivers, args.kernels, params,
                       args.seeds, list(args.ops), list(args.drop_rate),
                       args.max_failures or DEFAULT_MAX_FAILURES,
                       engine=args.engine, executor="serial" if args.serial else None,
                       workers=args.workers,
                       scheduler=args.scheduler, out=args.out, retry_failed=args.retry_failed,
                       progress=progress)
    except IovaError as exc:
        raise _Usage(str(exc)) from None
    except OSError as exc:          # the file could not be read or written
        raise _Failure("%s: %s" % (args.out, exc.strerror or exc)) from None
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        for row in result.rows:
            print(json.dumps(row))
    else:
        _print_summary(args, result, metrics)
    if args.plot:
        _draw(args, result, metrics)
    if result.errors:
        sys.stderr.write("pyiova: %d of %d cells failed; their rows hold the error. The "
                         "first: %s: %s\n" % (len(result.errors), len(result),
                                              result.errors[0]["cell"],
                                              result.errors[0]["error"]))
        return EXIT_CELL_FAILED
    return 0


def _bad_metrics(metrics: Any, params: Iterable[str]) -> str | None:
    """Why --metrics names something a sweep cannot summarise (None if fine)."""
    if metrics in (None, "all"):
        return None
    from .cell import columns, numeric_columns
    numeric = set(numeric_columns())
    known = [c for c in columns(list(params)) if c in numeric]
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        return "--metrics: no numeric column %s (there are: %s)" % (
            ", ".join(bad) or "named", ", ".join(known))
    return None


def _bad_out(args: argparse.Namespace) -> str | None:
    """Why --out FILE cannot be written (None if it can), before the run."""
    if not args.out:
        return None
    import os
    folder = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out):
        return "--out %s: it is a folder" % args.out
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        return "--out %s: %s is not a writable folder" % (args.out, folder)
    return None


def _bad_x(args: argparse.Namespace, params: dict[str, list[str]]) -> str | None:
    """Why --plot cannot draw this sweep (None if it can), before it runs."""
    if not args.plot:
        return None
    from .plot import NOTHING_SWEPT
    swept = [k for k, v in params.items() if len(v) > 1]
    swept += [c for c, v in (("drop_rate", args.drop_rate), ("ops_requested", args.ops),
                             ("workload", args.workloads), ("driver", args.drivers),
                             ("kernel", args.kernels)) if len(v) > 1]
    if args.x is not None and args.x not in swept:
        return "--x %s: not swept here (swept: %s)" % (args.x, ", ".join(swept) or "nothing")
    if not [c for c in swept if c not in ("workload", "driver", "kernel")] and args.x is None:
        return "--plot: " + NOTHING_SWEPT
    return None


def _print_summary(args: argparse.Namespace, result: SweepResult, metrics: Any) -> None:
    summary = result.summary()
    found = " (%d found in %s, not run again)" % (result.reused, args.out) \
        if result.reused else ""
    print("pyiova sweep: %d cell%s%s, %d run in %.1f s %s" % (  # type: ignore[str-format]
        len(result), "" if len(result) == 1 else "s", found, len(result) - result.reused,
        result.took, _where(args)))     # (took: a sweep that ran has it)
    print()
    print(summary.format(metrics))
    if args.out:
        print("\nrows written to %s" % args.out)


def _where(args: argparse.Namespace) -> str:
    if args.serial:
        return "in this process"
    if args.scheduler:
        return "on the Dask cluster at %s" % args.scheduler
    from .executors import default_workers
    return "on %d local processes" % (args.workers or default_workers())


def _draw(args: argparse.Namespace, result: SweepResult, metrics: Any) -> None:
    from ..cli import _Failure, _Usage
    try:
        result.plot(args.plot, x=args.x, metrics=None if metrics == "all" else metrics,
                    title="pyiova sweep %s" % ",".join(args.workloads))
    except ValueError as exc:
        raise _Usage("--plot: %s" % exc) from None
    except OSError as exc:
        raise _Failure("cannot write the plot to %s: %s" % (args.plot, exc.strerror or exc)) \
            from None
    if not args.json:
        print("plot written to %s" % args.plot)
