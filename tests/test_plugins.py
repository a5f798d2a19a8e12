"""Workloads and drivers of your own: registered at run time or found
through another package's entry points, and used by name by simulate,
compare, sweep and the pyiova command alike."""
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest

import sweep_plugins
from pyiova import errors
from pyiova.drivers import DRIVER_SPECS, register_driver
from pyiova.drivers.registry import driver_spec
from pyiova.registry import DRIVER_GROUP, WORKLOAD_GROUP, PluginWarning, Registry
from pyiova.sim import DRIVERS, Simulation, compare, not_applicable, simulate
from pyiova.sweeps import sweep
from pyiova.workloads import (WORKLOADS, UsbWorkload, WorkloadError, describe, generator_workload,
                              get_workload, register_workload)
from pyiova.workloads.custom import as_workload_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def registered():
    """pingpong (a generator), strided (a subclass) and forgetful (a driver),
    for one test."""
    register_workload(sweep_plugins.pingpong)
    register_workload(sweep_plugins.Strided)
    register_driver(sweep_plugins.ForgetfulIommu, "forgetful")
    yield
    WORKLOADS.unregister("pingpong")
    WORKLOADS.unregister("strided")
    DRIVER_SPECS.unregister("forgetful")


def test_a_generator_function_is_a_workload_with_its_keywords_as_parameters(registered):
    wl = get_workload("pingpong", size="8192")
    assert wl.name == "pingpong" and wl.size == 8192 and wl.fail_seed == -1
    assert list(wl.ops(3, seed=5)) == list(get_workload("pingpong", size=8192).ops(3, seed=5))
    assert wl.ops(3, seed=5) is not None and len(list(wl.ops(6, seed=1))) == 6
    with pytest.raises(WorkloadError, match="size"):
        get_workload("pingpong", size="big")
    with pytest.raises(WorkloadError, match="no parameter"):
        get_workload("pingpong", sizes=4096)
    assert "pingpong: Map a page" in describe("pingpong")


def test_a_generator_workloads_parameters_parse_by_their_defaults_type():
    def gen(rng, count=3, ratio=0.5, flag=False, label="x", sizes=(1, 2)):
        while True:
            yield (7, 1)                # ADVANCE
    cls = generator_workload(gen, "typed")
    wl = cls(count="16", ratio="0.25", flag="yes", label="y", sizes=[4])
    assert (wl.count, wl.ratio, wl.flag, wl.label, wl.sizes) == (16, 0.25, True, "y", [4])
    for bad in (dict(count="2.5"), dict(ratio="nan"), dict(ratio="inf"), dict(flag="maybe"),
                dict(count=True), dict(label=3)):
        with pytest.raises(WorkloadError, match="typed"):
            cls(**bad)
    assert generator_workload(gen, "typed") is cls           # made once per function and name


def test_registered_workloads_and_drivers_run_everywhere(registered):
    r = simulate("pingpong", "iova", "forgetful", ops=3000, seed=2, drop_rate=0.5)
    assert r.workload == "pingpong" and r.driver == "forgetful" and r.ops == 3000
    assert r.invalidations_lost > 0 and r.stale_translations > 0     # drop_rate reached it
    strict = simulate("pingpong", "iova", "forgetful", ops=3000, seed=2, drop_rate=0.0)
    assert strict.invalidations_lost == 0 and strict.stale_translations == 0
    assert [x.verdict for x in compare("strided", ("iova", "wraparound"), "generic",
                                       ops=2000)] == ["ok", "ok"]
    assert "forgetful" in DRIVERS and DRIVERS["forgetful"].startswith("Ranged invalidation")
    assert "deferred-flush" in not_applicable("iova-lazy", "forgetful")
    s = sweep("pingpong,strided", policies="iova", drivers="forgetful", seeds=[1, 2], ops=500,
              drop_rates=[0.0, 1.0], workers=2)
    assert not s.errors and len(s) == 2 * 2 * 2
    assert {r["invalidations_lost"] > 0 for r in s.rows if r["drop_rate"] == 1.0} == {True}


def test_the_run_seed_reaches_a_driver_that_takes_one(registered):
    a = simulate("pingpong", "iova", "forgetful", ops=2000, seed=3, drop_rate=0.5)
    b = simulate("pingpong", "iova", "forgetful", ops=2000, seed=3, drop_rate=0.5)
    c = simulate("pingpong", "iova", "forgetful", ops=2000, seed=4, drop_rate=0.5)
    assert a.invalidations_lost == b.invalidations_lost
    made = DRIVER_SPECS["forgetful"].make(17, 0.25)
    assert (made.seed, made.drop_rate) == (17, 0.25)
    assert c.maps > 0


def test_the_command_line_knows_them(registered, capsys):
    from pyiova import cli
    code = cli.main(["simulate", "strided", "--driver", "forgetful", "--ops", "400", "--json",
                     "-p", "live=2"])
    out = capsys.readouterr().out
    assert code == 0
    d = json.loads(out)
    assert (d["workload"], d["driver"], d["params"]["live"]) == ("strided", "forgetful", 2)


def test_registration_rules():
    with pytest.raises(errors.IovaValueError, match="built-in"):
        register_workload(sweep_plugins.pingpong, "usb")
    with pytest.raises(WorkloadError, match="named 'strided', not 'other'"):
        register_workload(sweep_plugins.Strided, "other")
    with pytest.raises(errors.IovaTypeError):
        register_driver(UsbWorkload, "nope")
    with pytest.raises(errors.IovaTypeError, match="no default"):
        generator_workload(lambda rng, size: iter(()), "nodefault")
    register_workload(sweep_plugins.pingpong)
    try:
        register_workload(sweep_plugins.pingpong)             # the same again: nothing
        with pytest.raises(errors.IovaValueError, match="replace=True"):
            register_workload(sweep_plugins.dies_in_a_worker, "pingpong")
        register_workload(sweep_plugins.dies_in_a_worker, "pingpong", replace=True)
        assert WORKLOADS["pingpong"].generator is sweep_plugins.dies_in_a_worker
    finally:
        WORKLOADS.unregister("pingpong")
    assert "pingpong" not in WORKLOADS


def test_a_generated_workload_pickles_as_the_same_class(registered):
    cls = WORKLOADS["pingpong"]
    assert pickle.loads(pickle.dumps(cls)) is cls
    wl = get_workload("pingpong", size=8192)
    back = pickle.loads(pickle.dumps(wl))
    assert type(back) is cls and back.params == wl.params
    sim = Simulation("pingpong", "iova", "generic", ops=600, seed=1)
    sim.run(200)
    resumed = pickle.loads(pickle.dumps(sim)).run().result()
    whole = simulate("pingpong", "iova", "generic", ops=600, seed=1)
    assert (resumed.maps, resumed.unmaps, resumed.iotlb_hits) == \
        (whole.maps, whole.unmaps, whole.iotlb_hits)


# ---- entry points: a real (tiny) installed distribution ---------------------------

PLUGIN = '''
from pyiova.dma import DmaDirection
from pyiova.drivers import GenericIommu
from pyiova.workloads import ACCESS, MAP_PAGE, UNMAP_PAGE


def blink(rng, size=4096, live=3):
    """Maps that live for `live` maps."""
    d = DmaDirection.BIDIRECTIONAL
    h = 0
    while True:
        h += 1
        yield (MAP_PAGE, h, 0x3000_0000 + (rng.getrandbits(12) << 12), size, d, None)
        yield (ACCESS, h, 0, True)
        if h > live:
            yield (UNMAP_PAGE, h - live, size, d, None)


class Blinky(GenericIommu):
    """A strict IOMMU that never syncs: every unmap leaves its entries."""
    supports_flush_queue = False

    def __init__(self):
        super().__init__("blinky")

    def iotlb_sync(self, domain, gather):
        pass
'''


@pytest.fixture
def tiny_dist(tmp_path):
    """A folder holding the package tinyplug and its installed metadata
    (tinyplug-0.1.dist-info, as pip leaves it), with entry points: two that
    work, one that cannot load, one that takes a built-in name."""
    (tmp_path / "tinyplug").mkdir()
    (tmp_path / "tinyplug" / "__init__.py").write_text(PLUGIN)
    info = tmp_path / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [pyiova.workloads]
        blink = tinyplug:blink
        broken = tinyplug:no_such_thing
        usb = tinyplug:blink

        [pyiova.drivers]
        blinky = tinyplug:Blinky
        """))
    return tmp_path


def test_entry_points_are_found_and_a_broken_one_is_left_out(tiny_dist, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny_dist))
    wl = Registry(WORKLOAD_GROUP, "workload", as_workload_class)
    wl.add_builtin("usb", UsbWorkload)
    drv = Registry(DRIVER_GROUP, "driver", driver_spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sorted(wl) == ["blink", "usb"]
        assert list(drv) == ["blinky"]
    said = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(said) == 2
    assert any("broken = tinyplug:no_such_thing" in s and "left out" in s for s in said)
    assert any("usb = tinyplug:blink" in s and "built-in" in s for s in said)
    assert wl["usb"] is UsbWorkload
    assert wl.origin("blink") == "entry point tinyplug:tinyplug:blink"
    assert wl["blink"]().params == {"size": 4096, "live": 3}
    assert drv["blinky"].flush_queue is False and drv["blinky"].summary.startswith("A strict")


def test_an_installed_plugin_works_from_the_command_line(tiny_dist):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tiny_dist), ROOT]))

    def pyiova(*argv):
        return subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-m", "pyiova"]
                              + list(argv), capture_output=True, text=True, env=env,
                              cwd=str(tiny_dist), timeout=300)
    p = pyiova("simulate", "blink", "--driver", "blinky", "--ops", "600", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert (d["workload"], d["driver"], d["ops"]) == ("blink", "blinky", 600)
    assert d["stale_translations"] > 0          # a driver that never syncs
    p = pyiova("sweep", "blink", "--drivers", "blinky,generic", "--policies", "iova,wraparound",
               "--seeds", "1..2", "--ops", "300", "-p", "live=2,5", "--json", "--workers", "2")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 2 * 2 * 2 * 2 and not any(r["error"] for r in rows)
    assert {r["live"] for r in rows} == {2, 5}
    p = pyiova("compare", "blink", "--driver", "blinky", "--ops", "300", "--policies",
               "iova,iova-lazy")
    assert p.returncode == 0 and "iova-lazy: not run (blinky has no deferred-flush" in p.stdout


def test_the_example_file_runs():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "custom_models.py")],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    assert "camera on lossy: UNSAFE" in p.stdout
    assert "slabs, wraparound: ok" in p.stdout
    assert "stale_translations: mean over seeds" in p.stdout
