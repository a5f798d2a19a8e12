"""The pyiova command (also `python -m pyiova`)."""
import argparse
import sys

from . import __version__


def _demo(args):
    from .demo import run
    return run(ops=args.ops, seed=args.seed)


def build_parser():
    p = argparse.ArgumentParser(
        prog="pyiova",
        description="A userspace model of the Linux IOMMU IOVA allocator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  pyiova               run the demo\n"
               "  pyiova demo --ops 1000000 --seed 3")
    p.add_argument("--version", action="version", version="pyiova " + __version__)
    sub = p.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="churn a domain and print what happened (the default)")
    demo.add_argument("--ops", type=int, default=200_000, help="allocations per churn (200000)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (1)")
    demo.set_defaults(func=_demo)
    p.set_defaults(func=_demo, ops=200_000, seed=1)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
