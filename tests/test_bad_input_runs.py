"""A catalogue of bad inputs for the simulator: every workload parameter,
the run's own arguments (simulate, Simulation, compare), and the command
line. Each is refused before anything runs: the API with a pyiova error
naming the value, the command with exit status 2 and one line on stderr
naming it, never a traceback.
"""
import math
import sys

import pytest

from test_cli import run as run_cli
from pyiova import sim_args, sim_report
from pyiova.errors import IovaError, IovaTypeError, IovaValueError
from pyiova.sim import Simulation, compare, simulate
from pyiova.workloads import WORKLOADS, WorkloadError, get_workload

# ---- workload parameters -------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
# Bad values by the kind of parameter (its parser); each must be refused,
# whatever the parameter, from Python and as command-line text.
BAD = {
    "integer": [NAN, INF, 2.5, "2.5", "1e3", "", "x", True, None, [], "0x", -(10 ** 30)],
    "number": [NAN, INF, -INF, "nan", "inf", "-inf", "1e400", "x", "", True, None, [], 10 ** 400],
    "size": [0, -4096, "0", "-4K", "4X", "1.5K", "", "K", True, None, 2.5, 2 ** 64, "1e6",
             NAN],
    "list of size": ["", ",", "4K,,16K", "4K,", ",4K", {4096}, {"a": 1}, iter([4096]), [],
                     [4096, "x"], NAN],
    "list of integer": [" ,", "1,,2", "1,", "-1", [1, 2.5], {1}, [], "x"],
    "choice": ["", "x", None, 1, ["exp"], "EXP "],
    "boolean": ["", "maybe", 2, 0.5, None, [], "tru"],
}


def _kind(spec):
    name = spec.parse.__name__.replace("parse_size", "size")
    if name.startswith("one of"):
        return "choice"
    if name == "_weights":                 # usb: a list of integers, or "" for the default
        return "list of integer"
    return name


PARAM_CASES = [(wl, key, value)
               for wl, cls in WORKLOADS.items() for key, spec in cls.PARAMS.items()
               for value in BAD[_kind(spec)]]


def test_every_parameter_has_a_kind_of_bad_values():
    kinds = {(wl, key): _kind(spec) for wl, cls in WORKLOADS.items()
             for key, spec in cls.PARAMS.items()}
    unknown = {k: v for k, v in kinds.items() if v not in BAD}
    assert not unknown, unknown
    assert len(PARAM_CASES) > 300


def _shown(value):
    """How a bad value appears in the message."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return repr(value)


@pytest.mark.parametrize("wl,key,value", PARAM_CASES,
                         ids=["%s-%s-%r" % c for c in PARAM_CASES])
def test_bad_parameter_values_are_refused(wl, key, value):
    with pytest.raises(WorkloadError) as e:
        get_workload(wl, **{key: value})
    assert isinstance(e.value, IovaValueError)
    msg = str(e.value)
    assert msg.startswith("%s %s: " % (wl, key)), msg
    if not hasattr(value, "__next__"):
        items = value if isinstance(value, list) else []
        assert any(_shown(v) in msg or str(v) in msg for v in [value] + items), msg


@pytest.mark.parametrize("wl,key,value", [c for c in PARAM_CASES if isinstance(c[2], str)],
                         ids=["%s-%s-%r" % c for c in PARAM_CASES if isinstance(c[2], str)])
def test_bad_parameter_text_on_the_command_line(capsys, wl, key, value):
    code, out, err = run_cli(capsys, "simulate", wl, "--ops", "10", "-p", "%s=%s" % (key, value))
    assert code == 2 and not out
    assert_one_line(err)
    assert "%s %s" % (wl, key) in err


def test_parameters_given_well_in_any_form():
    np = pytest.importorskip("numpy")
    usb = get_workload("usb", sizes=4096, weights=np.array([3]), inflight=np.int64(2),
                       in_ratio=np.float32(0.25), ring_size=8192.0, per_ms="0x10")
    assert usb.sizes == (4096,) and usb.weights == (3,) and usb.inflight == 2
    assert usb.in_ratio == 0.25 and usb.ring_size == 8192 and usb.per_ms == 16
    assert get_workload("random", lifetime="1_000", pci="yes").lifetime == 1000.0
    assert get_workload("nvme", max_size="1T").max_size == 1 << 40


@pytest.mark.parametrize("wl,params,what", [
    ("random", {"dma_bits": 13}, "size_max"),             # no room above page 0 for 256K
    ("random", {"dma_bits": 12}, "13..64"),
    ("random", {"size_min": "8K", "size_max": "4K"}, "size_min"),
    ("random", {"sg_ratio": 0.6, "coherent_ratio": 0.6}, "above 1"),
    ("nvme", {"seg_max": "4G"}, "unsigned int"),
    ("nvme", {"min_size": "6K"}, "power of two"),
    ("usb", {"sizes": "4K,8K", "weights": "1"}, "weights"),
    ("usb", {"weights": "0,0,0,0,0"}, "zero"),
    ("usb", {"ring_size": 16}, "descriptor"),
    ("nic", {"rx_buf": "2M"}, "1 MiB"),
    ("nic", {"idle_ms": 1 << 40}, "idle_ms"),
])
def test_parameters_that_do_not_go_together(wl, params, what):
    with pytest.raises(WorkloadError, match=what.replace("*", r"\*")):
        get_workload(wl, **params)


def test_a_bad_range_is_said_plainly():
    with pytest.raises(WorkloadError, match=r"'-1' is below 0$"):
        get_workload("usb", weights="-1,1,1,1,1")
    with pytest.raises(WorkloadError, match=r"is outside 1\.\.1024$"):
        get_workload("usb", inflight=0)
    with pytest.raises(WorkloadError, match="not a finite number"):
        get_workload("random", lifetime="nan")


# ---- the run's own arguments ----------------------------------------------------------

RUN_CASES = {
    "ops beyond sys.maxsize": (lambda: simulate("usb", ops=sys.maxsize + 1), IovaValueError,
                               str(sys.maxsize + 1)),
    "ops negative": (lambda: simulate("usb", ops=-1), IovaValueError, "-1"),
    "ops float": (lambda: simulate("usb", ops=10.0), IovaValueError, "10.0"),
    "ops str": (lambda: simulate("usb", ops="10"), IovaValueError, "'10'"),
    "ops bool": (lambda: simulate("usb", ops=True), IovaValueError, "True"),
    "seed list": (lambda: simulate("usb", ops=10, seed=[1]), IovaValueError, "[1]"),
    "seed dict": (lambda: simulate("usb", ops=10, seed={}), IovaValueError, "{}"),
    "seed nan": (lambda: simulate("usb", ops=10, seed=float("nan")), IovaValueError, "nan"),
    "seed True": (lambda: simulate("usb", ops=10, seed=True), IovaValueError, "True"),
    "seed None": (lambda: simulate("usb", ops=10, seed=None), IovaValueError, "None"),
    "max_failures 0": (lambda: simulate("usb", ops=10, max_failures=0), IovaValueError, "0"),
    "max_failures float": (lambda: simulate("usb", ops=10, max_failures=1.5), IovaValueError,
                           "1.5"),
    "drop_rate nan, generic": (lambda: simulate("usb", driver="generic", ops=10,
                                                drop_rate=NAN), IovaValueError, "nan"),
    "drop_rate 2": (lambda: simulate("usb", ops=10, drop_rate=2), IovaValueError, "2"),
    "drop_rate str": (lambda: simulate("usb", ops=10, drop_rate="0.5"), IovaValueError, "0.5"),
    "timeline str": (lambda: simulate("usb", ops=10, timeline="no"), IovaTypeError, "no"),
    "progress int": (lambda: simulate("usb", ops=10, progress=5), IovaTypeError, "5"),
    "params int": (lambda: simulate("usb", ops=10, params=5), IovaTypeError, "5"),
    "params sizes 4096": (lambda: simulate("usb", ops=10, params={"sizes": "x"}), WorkloadError,
                          "'x'"),
    "params unknown": (lambda: simulate("usb", ops=10, params={"colour": 1}), WorkloadError,
                       "colour"),
    "params with a Workload": (lambda: simulate(get_workload("usb"), ops=10,
                                                params={"inflight": 2}),
                               WorkloadError, "constructor"),
    "policy unknown": (lambda: simulate("usb", policy="best", ops=10), IovaValueError, "best"),
    "policy not applicable": (lambda: simulate("usb", policy="msi", ops=10), IovaValueError,
                              "msi"),
    "driver unknown": (lambda: simulate("usb", driver="amd", ops=10), IovaValueError, "amd"),
    "kernel unknown": (lambda: simulate("usb", kernel="5.4", ops=10), IovaValueError, "5.4"),
    "workload unknown": (lambda: simulate("sata", ops=10), WorkloadError, "sata"),
    "workload unhashable": (lambda: simulate(["usb"], ops=10), WorkloadError, "['usb']"),
    "describe unknown": (lambda: __import__("pyiova.workloads").workloads.describe("sata"),
                         WorkloadError, "sata"),
    "policy unhashable": (lambda: simulate("usb", policy=["iova"], ops=10), IovaValueError,
                          "['iova']"),
    "driver unhashable": (lambda: simulate("usb", driver={}, ops=10), IovaValueError, "{}"),
    "compare unknown keyword": (lambda: compare("usb", policies="iova", ops=10, colour=1),
                                IovaTypeError, "colour"),
    "compare policies empty name": (lambda: compare("usb", policies="iova,,wraparound", ops=10),
                                    IovaValueError, "iova,,wraparound"),
    "compare policies twice": (lambda: compare("usb", policies=["iova", "iova"], ops=10),
                               IovaValueError, "'iova'"),
    "compare policies unknown": (lambda: compare("usb", policies=("iova", "i"), ops=10),
                                 IovaValueError, "'i'"),
    "compare policies none": (lambda: compare("usb", policies=[], ops=10), IovaValueError,
                              "no policy"),
    "compare policies int": (lambda: compare("usb", policies=5, ops=10), IovaTypeError, "5"),
    "compare policies of ints": (lambda: compare("usb", policies=[1], ops=10), IovaTypeError,
                                 "1"),
    "compare ops": (lambda: compare("usb", policies="iova", ops=-5), IovaValueError, "-5"),
    "Simulation run n str": (lambda: Simulation("usb", ops=10).run("x"), IovaValueError, "'x'"),
    "Simulation run n negative": (lambda: Simulation("usb", ops=10).run(-1), IovaValueError,
                                  "-1"),
    "Simulation run progress": (lambda: Simulation("usb", ops=10).run(5, progress="bar"),
                                IovaTypeError, "bar"),
    "Simulation seed": (lambda: Simulation("usb", ops=10, seed=(1,)), IovaValueError, "(1,)"),
    "Simulation seed object": (lambda: Simulation("usb", ops=10, seed=object()), IovaValueError,
                               "object"),
    "workload ops n negative": (lambda: get_workload("usb").ops(-1), WorkloadError, "-1"),
    "aperture_bits -1": (lambda: sim_args.aperture_bits(-1), IovaValueError, "-1"),
    "aperture_bits 12": (lambda: sim_args.aperture_bits(12), IovaValueError, "12"),
    "aperture_bits 65": (lambda: sim_args.aperture_bits(65), IovaValueError, "65"),
    "aperture_bits str": (lambda: sim_args.aperture_bits("39"), IovaTypeError, "'39'"),
    "workload ops seed list": (lambda: get_workload("usb").ops(5, seed=[1]), WorkloadError,
                               "[1]"),
}


@pytest.mark.parametrize("name", list(RUN_CASES))
def test_bad_run_arguments(name):
    call, exc, shown = RUN_CASES[name]
    with pytest.raises(exc) as e:
        call()
    assert isinstance(e.value, IovaError)
    assert shown in str(e.value), str(e.value)


def test_a_str_is_one_policy_or_a_list_of_them():
    assert [r.policy for r in compare("usb", policies="iova", ops=200)] == ["iova"]
    assert [r.policy for r in compare("usb", policies=" iova , wraparound ", ops=200)] == \
        ["iova", "wraparound"]


def test_the_failure_report_tells_what_was_mapped_then():
    """A ring too large to map fails at op 0 with nothing mapped: the report
    says so, and gives the run's peak as the peak."""
    r = simulate("usb", ops=3000, params={"ring_size": "3G"})
    assert r.first_failure_op == 0 and r.live_at_first_failure == 0 and r.failures == 1
    text = sim_report.explain(r)
    assert "with 0 pfns (0 KiB) mapped at the time (the run's peak: %s pfns" \
        % format(r.peak_live_pfns, ",") in text
    assert "1 failed map in all" in text and "never more than" not in text


# ---- the command line ----------------------------------------------------------------

def assert_one_line(err):
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and err.startswith("pyiova"), err


CLI_CASES = {
    "ops beyond sys.maxsize": (["simulate", "usb", "--ops", str(sys.maxsize + 1)],
                               str(sys.maxsize + 1)),
    "ops 0": (["simulate", "usb", "--ops", "0"], "'0'"),
    "ops float": (["compare", "usb", "--ops", "1e5"], "1e5"),
    "max-failures huge": (["simulate", "usb", "--max-failures", "9" * 30], "9" * 30),
    "seed float": (["simulate", "usb", "--seed", "1.5"], "1.5"),
    "drop-rate nan": (["simulate", "usb", "--drop-rate", "nan"], "nan"),
    "drop-rate 2": (["simulate", "usb", "--drop-rate", "2"], "'2'"),
    "lifetime inf": (["simulate", "random", "-p", "lifetime=inf"], "inf"),
    "lifetime nan": (["simulate", "random", "-p", "lifetime=nan"], "nan"),
    "read_ratio nan": (["simulate", "nvme", "-p", "read_ratio=nan"], "nan"),
    "in_ratio nan": (["simulate", "usb", "-p", "in_ratio=nan"], "nan"),
    "tso nan": (["simulate", "nic", "-p", "tso=nan"], "nan"),
    "write_ratio inf": (["simulate", "random", "-p", "write_ratio=inf"], "inf"),
    "dma_bits 12": (["simulate", "random", "-p", "dma_bits=12"], "12"),
    "weights -1": (["simulate", "usb", "-p", "weights=-1,1,1,1,1"], "-1"),
    "param twice": (["simulate", "usb", "-p", "inflight=2", "-p", "inflight=3"], "inflight"),
    "param without =": (["simulate", "usb", "-p", "inflight"], "inflight"),
    "param unknown": (["simulate", "usb", "-p", "colour=red"], "colour"),
    "policies empty item": (["compare", "usb", "--policies", "iova,,wraparound"],
                            "iova,,wraparound"),
    "policies twice": (["compare", "usb", "--policies", "iova,iova"], "iova"),
    "policies unknown": (["compare", "usb", "--policies", "iova,lru"], "lru"),
    "bench workloads empty item": (["bench", "--workloads", "usb,,nic"], "usb,,nic"),
    "bench policies trailing comma": (["bench", "--policies", "iova,"], "iova,"),
    "plot txt": (["simulate", "usb", "--plot", "out.txt"], "out.txt"),
    "plot a folder": (["simulate", "usb", "--plot", "."], "."),
    "plot in a missing folder": (["compare", "usb", "--plot", "/nonexistent/dir/x.png"],
                                 "/nonexistent/dir"),
    "replay aperture-bits -1": (["replay", "x.trace", "--aperture-bits", "-1"], "-1"),
    "replay aperture-bits 65": (["replay", "x.trace", "--aperture-bits", "65"], "65"),
    "replay aperture-bits 12": (["replay", "x.trace", "--aperture-bits", "12"], "12"),
    "replay aperture-bits 1": (["replay", "x.trace", "--aperture-bits", "1"], "aperture_bits 1 "),
    "replay aperture-bits x": (["replay", "x.trace", "--aperture-bits", "x"], "'x'"),
    "replay policy empty item": (["replay", "x.trace", "--policy", "iova,,wraparound"],
                                 "iova,,wraparound"),
    "no such command": (["frob"], "frob"),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_bad_command_lines(capsys, name):
    argv, shown = CLI_CASES[name]
    if name == "plot txt":
        pytest.importorskip("matplotlib")   # only matplotlib knows what it writes
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, err)
    assert not out
    assert_one_line(err)
    assert shown in err, err


def test_plot_names_the_file_it_writes(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "usage"
    code, out, err = run_cli(capsys, "simulate", "usb", "--ops", "2000", "--plot", str(target),
                             "--no-progress")
    assert code == 0
    assert ("plot written to %s.png" % target) in out
    assert (tmp_path / "usage.png").exists() and not target.exists()


def test_an_internal_error_is_one_line_too(capsys, monkeypatch):
    from pyiova import sim

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(sim, "simulate", broken)
    monkeypatch.delenv("PYIOVA_TRACEBACK", raising=False)
    code, out, err = run_cli(capsys, "simulate", "usb", "--ops", "10")
    assert code == 1
    assert_one_line(err)
    assert "internal error: ZeroDivisionError: a bug" in err and "PYIOVA_TRACEBACK" in err


def test_seeds_random_random_takes_give_the_same_run_twice():
    """A seed is what random.Random takes reproducibly: integers, finite
    floats, str and bytes."""
    np = pytest.importorskip("numpy")
    for seed in (7, np.int64(7), 2.5, "text", b"bytes", bytearray(b"bytes")):
        a = simulate("usb", ops=500, seed=seed)
        b = simulate("usb", ops=500, seed=seed)
        assert a.maps == b.maps and a.iotlb_hits == b.iotlb_hits
    assert simulate("usb", ops=500, seed=np.int64(7)).seed == 7
