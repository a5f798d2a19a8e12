"""The typing surface a user's type checker sees (py.typed).

A small user program that drives the public API is type-checked with mypy,
as a user's checker would read pyiova once it is installed: it must pass,
and the same program with deliberately wrong calls must be refused at each
of them. One mypy run checks both files. Skipped when mypy is not
installed (pip install -e ".[lint]").
"""
import ast
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import pyiova
from pyiova.iotlb import IotlbStats
from pyiova.pgtable import PgtableStats

PACKAGE = pathlib.Path(pyiova.__file__).parent

GOOD = '''
from pyiova import (DmaDirection, GenericIommu, IovaDomain, IovaExhausted, PfnAllocator,
                    DmaCookie, Device, DMA_BIT_MASK, dma)
from pyiova.iommu import DomainType, IommuDomain
from pyiova.sim import SimResult, Simulation, compare, simulate
from pyiova.sweeps import SweepResult, sweep
from pyiova.trace import check, replay

d = IovaDomain(4096, 1, kernel="6.1")
pfn: int = d.alloc(4, 0xFFFFF, size_aligned=True)
found: "tuple[int, int] | None" = d.find(pfn)
pfns = d.alloc_many([1, 2, 4], 0xFFFFF)
d.free_fast_many(pfns, [1, 2, 4], cpu=0)
try:
    d.alloc_fast(1 << 20, 0xF)
except IovaExhausted:
    pass
ranges: "list[tuple[int, int]]" = d.ranges()

a = PfnAllocator("wraparound", start_pfn=1, end_pfn=0xFFFF)
got: "tuple[int, int]" = a.alloc(2, 0xFFFF)

iommu = GenericIommu("g")
dom: IommuDomain = iommu.domain_alloc(DomainType.DMA)
dev = Device("nic", DMA_BIT_MASK(32), is_pci=True)
dev.attach(dom)
addr: int = dma.map_page(dev, 0x1000, 4096, DmaDirection.TO_DEVICE)
dma.unmap_page(dev, addr, 4096, DmaDirection.TO_DEVICE)
sg = dma.map_sg(dev, [(0x1000, 512), (0x3000, 4096)])
dma.unmap_sg(dev, sg)
buf = dma.alloc_coherent(dev, 8192)
dma.free_coherent(dev, buf)
stale: int = dom.counters().stale_hits
cookie: "DmaCookie | None" = dom.iova_cookie
assert dom.pgtable is not None
mapped: int = dom.pgtable.stats().mapped_bytes

r: SimResult = simulate("usb", "wraparound", ops=100)
verdict: str = r.verdict
s: Simulation = Simulation("usb", "iova", ops=100).run(50)
results = compare("usb", ["iova", "wraparound"], ops=100)
first: SimResult = results[0]
table: SweepResult = sweep("usb", ["iova"], seeds=[1, 2], ops=100, executor="serial")
rows: int = len(table.summary().rows)
matched: int = check("vtd.trace", kernel="6.12").matched
print(pfn, found, ranges, got, stale, cookie, mapped, verdict, s, first, rows, matched, replay)
'''

# Each line is wrong in one way a checker must see; the marker names it.
BAD = '''
from pyiova import Device, IovaDomain, PfnAllocator, dma
from pyiova.sim import simulate

d = IovaDomain()
d.alloc("x", 0xFFFFF)                       # BAD: str for a size
s: str = d.alloc(1, 0xFFFFF)                # BAD: alloc returns an int
d.free_many(1)                              # BAD: a batch, not one pfn
PfnAllocator("iova").alloc(1, 2, cpu="0")   # BAD: str for a cpu
dma.map_page("eth0", 0x1000, 4096)          # BAD: a name, not a Device
Device("nic").dma_access(None)              # BAD: None for an address
simulate("usb", ops="many")                 # BAD: str for a count
n: int = simulate("usb").verdict            # BAD: the verdict is a str
from pyiova.trace import check
check("vtd.trace", granule="4K")            # BAD: str for the granule
'''


def _mypy(tmp_path):
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra)")
    good = tmp_path / "good.py"
    bad = tmp_path / "bad.py"
    good.write_text(textwrap.dedent(GOOD))
    bad.write_text(textwrap.dedent(BAD))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")          # the user's, not the checkout's
    # pyiova found on PYTHONPATH is, to mypy, an installed package: it is
    # read only if it carries py.typed (PEP 561), else every import of it
    # is an import-untyped error and its names are Any.
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    env.pop("MYPYPATH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
         "--config-file", str(config), "--no-error-summary", "--show-error-codes",
         str(good), str(bad)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return proc, good, bad


def test_a_typed_user_program_checks_and_wrong_calls_are_refused(tmp_path):
    proc, good, bad = _mypy(tmp_path)
    out = proc.stdout + proc.stderr
    assert "import-untyped" not in out and "import-not-found" not in out, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    good_errors = [e for e in errors if e.startswith(str(good)) or e.startswith("good.py")]
    assert not good_errors, out
    bad_lines = {int(m.group(1)) for e in errors
                 for m in [re.match(r".*bad\.py:(\d+):", e)] if m}
    wanted = {i for i, line in enumerate(textwrap.dedent(BAD).splitlines(), 1)
              if "# BAD" in line}
    assert wanted and wanted <= bad_lines, (sorted(wanted - bad_lines), out)
    assert bad_lines <= wanted, (sorted(bad_lines - wanted), out)


def test_the_package_ships_its_marker_and_the_stub_of_the_c_module():
    assert (PACKAGE / "py.typed").is_file()
    stub = (PACKAGE / "_pyiova.pyi").read_text()
    assert "ffi:" in stub and "lib:" in stub


def _declared_fields(module, name):
    """The fields of the NamedTuple a module declares for type checkers
    under `if TYPE_CHECKING:`."""
    tree = ast.parse((PACKAGE / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return tuple(s.target.id for s in node.body if isinstance(s, ast.AnnAssign))
    raise AssertionError("%s declares no %s" % (module, name))


@pytest.mark.parametrize("module,cls", [("pgtable.py", PgtableStats), ("iotlb.py", IotlbStats)])
def test_the_declared_stats_fields_are_the_c_structs(module, cls):
    # At run time the stats tuples take their fields from the C structs;
    # what type checkers are told must be the same fields, in order.
    assert _declared_fields(module, cls.__name__) == cls._fields
