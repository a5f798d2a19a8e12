"""The pyiova command end to end, on small runs: exit codes, the JSON
schema, the table, the plot, the progress bar, --help everywhere."""
import io
import json
import os
import subprocess
import sys

import pytest

from pyiova import cli, plot

COMPARE_KEYS = {"policy", "ops", "maps", "failures", "first_failure_op", "peak_live_pfns",
                "full_flushes", "iotlb_hits", "iotlb_misses", "stale_translations",
                "ops_per_sec"}


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `pyiova argv...` in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code or 0, out, err


TRACES = os.path.join(os.path.dirname(__file__), "data", "traces")
STRICT_TRACE = os.path.join(TRACES, "vtd-6.12-strict.trace.gz")
needs_trace = pytest.mark.skipif(not os.path.exists(STRICT_TRACE),
                                 reason="the trace fixtures are not present")


@pytest.mark.parametrize("argv", [[], ["demo"], ["simulate"], ["compare"], ["bench"],
                                  ["replay"]])
def test_help_everywhere_with_examples(capsys, argv):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    assert "examples:" in out and "usage: pyiova" in out


def test_simulate_and_compare_help_list_policies_and_workload_parameters(capsys):
    for cmd in ("simulate", "compare"):
        _, out, _ = run(capsys, cmd, "--help")
        for word in ("reset-when-empty", "iova-lazy", "ring_size", "rx_ring", "queues",
                     "lifetime", "--ops", "--seed", "--json", "--plot", "--driver"):
            assert word in out


def test_no_command_runs_the_demo():
    assert cli.build_parser().parse_args([]).func is cli._demo


def test_compare_json_schema(capsys):
    code, out, _ = run(capsys, "compare", "usb", "--ops", "3000", "--seed", "2", "--json")
    assert code == 0
    data = json.loads(out)
    assert [d["policy"] for d in data] == ["iova", "iova-lazy", "iova-tree", "wraparound",
                                           "reset-when-empty"]
    for d in data:
        assert COMPARE_KEYS <= set(d)
        assert d["seed"] == 2 and d["driver"] == "ipmmu" and d["workload"] == "usb"
    lazy = data[1]
    assert lazy["applicable"] is False and lazy["ops"] is None and lazy["note"]
    iova = data[0]
    assert iova["ops"] == 3000 and iova["stale_translations"] > 0 and iova["verdict"] == "UNSAFE"
    assert isinstance(iova["ops_per_sec"], float) and iova["first_failure_op"] is None


def test_compare_table_tells_the_story(capsys):
    code, out, _ = run(capsys, "compare", "usb", "--ops", "30000", "-p", "sizes=1M",
                       "-p", "inflight=1", "-p", "unaligned=0", "--policies",
                       "iova,wraparound,reset-when-empty")
    assert code == 0
    assert "reset-when-empty FAILS: the first map failed at op" in out
    assert "never reset" in out
    assert "wraparound ok" in out
    assert "iova UNSAFE" in out
    header = next(line for line in out.splitlines() if line.startswith("policy"))
    for col in ("verdict", "ops/s", "maps", "fails", "1st fail", "peak live", "frag",
                "flushes", "hits", "misses", "stale"):
        assert col in header


def test_simulate_json_and_table(capsys):
    code, out, _ = run(capsys, "simulate", "nvme", "--policy", "iova-lazy", "--driver",
                       "generic", "--ops", "2000", "--json", "-p", "queues=2")
    assert code == 0
    d = json.loads(out)
    assert d["policy"] == "iova-lazy" and d["ops"] == 2000 and d["params"]["queues"] == 2
    code, out, _ = run(capsys, "simulate", "usb", "--policy", "wraparound", "--ops", "2000")
    assert code == 0
    assert "wraparound: ok" in out and "wraparound ok:" in out and "4 GiB" in out


@pytest.mark.parametrize("cmd", ["simulate", "compare", "bench"])
def test_kernel_61_is_accepted_everywhere_simulations_run(capsys, cmd):
    extra = {"simulate": ["nvme", "--policy", "iova-lazy"],
             "compare": ["nvme", "--policies", "iova,iova-lazy"],
             "bench": ["--workloads", "nvme", "--policies", "iova,iova-lazy"]}[cmd]
    code, out, _ = run(capsys, cmd, *extra, "--driver", "generic", "--kernel", "6.1",
                       "--ops", "1000", "--json")
    assert code == 0
    data = json.loads(out)
    rows = data if isinstance(data, list) else [data]
    assert {d["kernel"] for d in rows} == {"6.1"}
    assert {d["verdict"] for d in rows} == {"ok"}      # iova-lazy runs under 6.1 too
    code, _, err = run(capsys, cmd, *extra, "--kernel", "6.2")
    assert code == 2 and "6.2" in err


def test_bench_json(capsys):
    code, out, _ = run(capsys, "bench", "--ops", "1000", "--workloads", "usb,nic",
                       "--policies", "iova,wraparound", "--json")
    assert code == 0
    data = json.loads(out)
    assert [(d["workload"], d["policy"]) for d in data] == [
        ("usb", "iova"), ("usb", "wraparound"), ("nic", "iova"), ("nic", "wraparound")]
    assert all(d["ops"] == 1000 and d["driver"] == "generic" for d in data)


def test_bench_table_skips_what_cannot_run(capsys):
    code, out, _ = run(capsys, "bench", "--ops", "500", "--workloads", "random",
                       "--driver", "ipmmu")
    assert code == 0
    assert "iova-lazy: not run" in out and "random" in out.splitlines()[2]


def test_both_engines_print_the_same_but_for_ops_per_second(capsys):
    outs = {}
    for engine in ("c", "python"):
        code, out, _ = run(capsys, "compare", "nvme", "--driver", "generic", "--ops", "3000",
                           "--engine", engine, "--json")
        assert code == 0
        outs[engine] = [{k: v for k, v in d.items()
                         if k not in ("elapsed_s", "ops_per_sec", "engine", "engine_note")}
                        for d in json.loads(out)]
        assert {d["engine"] for d in json.loads(out) if d["applicable"]} == {engine}
    assert outs["c"] == outs["python"]


def test_bench_says_how_much_faster_the_c_engine_is(capsys):
    code, out, _ = run(capsys, "bench", "--ops", "2000", "--workloads", "usb",
                       "--policies", "iova")
    assert code == 0
    line = [x for x in out.splitlines() if x.startswith("engine:")]
    assert len(line) == 1 and "usb iova through the C engine" in line[0]
    assert line[0].endswith("x") and "Python engine" in line[0]


@pytest.mark.parametrize("argv,message", [
    (["simulate", "usb", "--engine", "fast"], "invalid choice"),
    (["simulate", "usb", "--policy", "iova-lazy"], "deferred-flush"),
    (["simulate", "usb", "--policy", "msi", "--driver", "generic"], "MSI"),
    (["simulate", "usb", "-p", "inflight=lots"], "inflight"),
    (["simulate", "usb", "-p", "nonsense"], "NAME=VALUE"),
    (["compare", "usb", "--policies", "iova,best-fit"], "best-fit"),
    (["compare", "floppy"], "invalid choice"),
    (["simulate", "usb", "--ops", "0"], "not positive"),
    (["simulate", "usb", "--drop-rate", "2"], "[0, 1]"),
])
def test_bad_arguments_exit_2_with_a_reason(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err


@pytest.mark.skipif(not plot.have_matplotlib(), reason="matplotlib is not installed")
def test_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "usb.png"
    code, out, _ = run(capsys, "compare", "usb", "--ops", "4000", "--policies",
                       "iova,wraparound,iova-lazy", "--plot", str(path))
    assert code == 0 and "plot written" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = tmp_path / "one.png"
    code, _, _ = run(capsys, "simulate", "nic", "--ops", "3000", "--plot", str(one), "--json")
    assert code == 0 and one.read_bytes()[:4] == b"\x89PNG"


def test_plot_into_a_missing_folder_is_refused_before_running(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(plot, "have_matplotlib", lambda: True)
    code, out, err = run(capsys, "compare", "usb", "--plot", str(tmp_path / "no" / "x.png"))
    assert code == 2 and "cannot write the plot" in err and out == ""


def test_plot_without_matplotlib_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(plot, "have_matplotlib", lambda: False)
    path = tmp_path / "x.png"
    code, out, err = run(capsys, "compare", "usb", "--ops", "1000", "--plot", str(path))
    assert code == cli.EXIT_NO_MATPLOTLIB != 0
    assert "pip install 'pyiova[plot]'" in err and not path.exists() and out == ""


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)         # the built-in bar
    monkeypatch.setattr(cli._Bar, "DELAY", 0.0)
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    bar = cli._Bar(100)
    bar(50, "iova")
    bar.close()
    assert pipe.getvalue() == ""
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = cli._Bar(100)
    bar(100, "wraparound")
    assert "100%" in tty.getvalue() and "wraparound" in tty.getvalue()
    bar.close()
    quiet = cli._Bar(100, enabled=False)
    quiet(100)
    assert "wraparound" in tty.getvalue() and tty.getvalue().count("100%") == 1


def test_python_dash_m_entry_point():
    p = subprocess.run([sys.executable, "-m", "pyiova", "compare", "usb", "--ops", "1500",
                        "--policies", "wraparound", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["policy"] == "wraparound"
    assert p.stderr == ""                                  # no bar when not on a terminal


@needs_trace
def test_replay_check_json_one_object_per_device(capsys):
    code, out, _ = run(capsys, "replay", STRICT_TRACE, "--check", "--json")
    assert code == 0
    data = json.loads(out)
    assert data and all({"device", "matched", "mismatched", "skipped", "first_divergence"}
                        <= set(d) for d in data)
    assert all(d["mismatched"] == 0 and d["matched"] > 0 for d in data)


@needs_trace
def test_replay_through_several_policies(capsys):
    code, out, _ = run(capsys, "replay", STRICT_TRACE, "--policy", "iova,wraparound", "--json")
    assert code == 0
    assert [r["policy"] for r in json.loads(out)] == ["iova", "wraparound"]
    code, out, _ = run(capsys, "replay", STRICT_TRACE, "--policy", "reset-when-empty")
    assert code == 0 and "reset-when-empty" in out


def test_replay_bad_input_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "replay", str(tmp_path / "missing.trace"))
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, "replay", str(tmp_path / "x"), "--policy", "best-fit")
    assert code == 2 and "best-fit" in err
