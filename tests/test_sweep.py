"""Sweeps: the grid, one row per cell equal to the cell's own simulate(),
the same rows whichever executor runs them (this process, local processes,
a Dask LocalCluster), resuming from a file, failed cells as rows, the
summary's statistics, the tables and the plot. Small sweeps only."""
import csv
import json
import math
import os

import pytest

import pyiova
import sweep_plugins
from test_cli import run as run_cli
from pyiova import errors
from pyiova.sim import simulate
from pyiova.sweeps import SweepResult, param_alternatives, parse_seeds, sweep
from pyiova.sweeps.cell import TIMING_COLUMNS, columns
from pyiova.sweeps.grid import expand
from pyiova.sweeps.summary import summarize, t_975
from pyiova.workloads import WORKLOADS, register_workload

OPS = 3000
SMALL = dict(policies="iova,wraparound,reset-when-empty", params={"ring_size": ["64K", "1M"]},
             seeds=range(1, 4), ops=OPS)


def model_columns(rows):
    """The rows without the columns that measure time."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


@pytest.fixture
def plugins():
    """The test workloads registered by name for one test."""
    names = []
    for fn, name in ((sweep_plugins.pingpong, "pingpong"),
                     (sweep_plugins.dies_in_a_worker, "dies")):
        register_workload(fn, name)
        names.append(name)
    yield names
    for name in names:
        WORKLOADS.unregister(name)


# ---- the grid -------------------------------------------------------------------------

@pytest.mark.parametrize("text,seeds", [("1..4", (1, 2, 3, 4)), ("7", (7,)),
                                        ("1,5,9", (1, 5, 9)), ("1..3,10", (1, 2, 3, 10)),
                                        (" 2 .. 3 ", (2, 3))])
def test_seed_lists(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["3..1", "a", "1,,2", "1..", "1,1", "1..3,2"])
def test_bad_seed_lists_say_what_is_wrong(text):
    with pytest.raises(errors.IovaValueError):
        parse_seeds(text)


def test_param_lists_split_on_commas_except_for_list_parameters():
    usb = WORKLOADS["usb"]
    got = param_alternatives([usb], ["ring_size=64K,256K, 1M", "sizes=4K,16K", "sizes=64K",
                                     "inflight=2"])
    assert got == {"ring_size": ["64K", "256K", "1M"], "sizes": ["4K,16K", "64K"],
                   "inflight": ["2"]}
    for bad in (["nonsense"], ["floppy=1"], ["ring_size=64K,,1M"], ["=3"]):
        with pytest.raises(errors.IovaValueError):
            param_alternatives([usb], bad)


def test_a_parameter_applies_to_the_workloads_that_have_it():
    cells = expand(("usb", "nic"), ("iova",), ("generic",), ("6.12",),
                   {"ring_size": ["64K", "1M"], "mtu": [1500, 9000]}, [1, 2], [100], [1.0], 10)
    usb = [c for c in cells if c.workload == "usb"]
    nic = [c for c in cells if c.workload == "nic"]
    assert len(usb) == 2 * 2 and len(nic) == 2 * 2
    assert {dict(c.params)["ring_size"] for c in usb} == {64 << 10, 1 << 20}
    assert all(set(dict(c.params)) == {"mtu"} for c in nic)
    assert len({c.key for c in cells}) == len(cells)


def test_every_value_is_checked_before_anything_runs():
    with pytest.raises(errors.IovaValueError, match="ring_size"):
        sweep("usb", params={"ring_size": ["64K", "tiny"]}, seeds=[1], ops=10,
              executor="serial")
    with pytest.raises(errors.IovaValueError, match="best-fit"):
        sweep("usb", policies="iova,best-fit", seeds=[1], ops=10, executor="serial")
    with pytest.raises(errors.IovaValueError, match="column"):
        sweep("random", params={"seed": [1]}, seeds=[1], ops=10, executor="serial")


# ---- rows ------------------------------------------------------------------------------

def test_each_row_is_its_cells_simulate():
    r = sweep("usb", executor="serial", **SMALL)
    assert len(r) == 3 * 2 * 3
    assert [c for c in r.columns[:7]] == ["cell", "workload", "policy", "driver", "kernel",
                                          "ring_size", "seed"]
    for row in r.rows[::5]:
        direct = simulate("usb", row["policy"], "ipmmu", OPS, row["seed"],
                          params={"ring_size": row["ring_size"]}).as_dict()
        for k, v in direct.items():
            if k == "params":
                assert json.loads(row[k]) == v
            elif k not in TIMING_COLUMNS:
                assert row[k] == v, k
        assert row["engine"] in ("python", "c") and row["error"] is None
        assert row["pyiova_version"] == pyiova.__version__


def test_local_processes_give_the_rows_of_one_process():
    serial = sweep("usb", executor="serial", **SMALL)
    procs = sweep("usb", workers=2, **SMALL)
    assert procs.executor == "processes"
    assert model_columns(procs.rows) == model_columns(serial.rows)


def test_each_row_says_which_engine_ran_it():
    from pyiova.drivers import DRIVER_SPECS, register_driver
    auto = sweep("usb", policies="iova", seeds=[1], ops=500, executor="serial")
    ref = sweep("usb", policies="iova", seeds=[1], ops=500, executor="serial", engine="python")
    assert (auto.rows[0]["engine"], ref.rows[0]["engine"]) == ("c", "python")
    assert model_columns(auto.rows)[0] == dict(model_columns(ref.rows)[0], engine="c",
                                               engine_note="")
    register_driver(sweep_plugins.ForgetfulIommu, "forgetful")
    try:
        own = sweep("usb", policies="iova", drivers="forgetful", seeds=[1], ops=500, workers=2)
    finally:
        DRIVER_SPECS.unregister("forgetful")
    assert own.rows[0]["engine"] == "python" and "profile" in own.rows[0]["engine_note"]
    with pytest.raises(errors.IovaValueError, match="engine"):
        sweep("usb", seeds=[1], ops=10, engine="fast")


def test_a_policy_that_cannot_run_is_an_n_a_row():
    r = sweep("usb", policies="iova,iova-lazy", seeds=[1], ops=100, executor="serial")
    lazy = r.rows[1]
    assert lazy["verdict"] == "n/a" and lazy["applicable"] is False and lazy["ops"] is None
    assert "deferred-flush" in lazy["note"] and lazy["error"] is None


def test_a_failing_cell_is_a_row_with_its_error(plugins):
    r = sweep("pingpong", policies="iova", drivers="generic", params={"fail_seed": 2},
              seeds=[1, 2, 3], ops=300, workers=2)
    assert [row["seed"] for row in r.errors] == [2]
    bad = r.errors[0]
    assert bad["verdict"] == "error" and "refuses seed 2" in bad["error"]
    assert bad["ops"] is None and bad["cell"].endswith("max_failures=1000")
    assert all(row["verdict"] == "ok" and row["ops"] == 300 for row in r.rows if row is not bad)


def test_a_cell_that_kills_its_worker_is_a_row_and_the_others_finish(plugins):
    r = sweep("dies", policies="iova,wraparound", seeds=range(5, 10), ops=300, workers=2)
    assert {(row["policy"], row["seed"]) for row in r.errors} == {("iova", 7),
                                                                   ("wraparound", 7)}
    assert all("WorkerDied" in row["error"] for row in r.errors)
    assert sum(1 for row in r.rows if row["ops"] == 300) == 2 * 5 - 2


# ---- files and resuming -------------------------------------------------------------

class Stop(Exception):
    pass


def stop_after(n):
    def progress(done, total, row):
        if row is not None and done >= n:
            raise Stop
    return progress


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, ext):
    if ext == ".parquet":
        pytest.importorskip("pyarrow")
    out = str(tmp_path / ("sweep" + ext))
    with pytest.raises(Stop):
        sweep("usb", executor="serial", out=out, progress=stop_after(4), **SMALL)
    if ext == ".parquet":
        assert not os.path.exists(out) and os.path.exists(out + ".part.jsonl")
    seen = []
    r = sweep("usb", executor="serial", out=out,
              progress=lambda done, total, row: seen.append((done, total)), **SMALL)
    assert r.reused == 4 and seen[0] == (4, 18) and seen[-1] == (18, 18)
    again = SweepResult.read(out)
    assert len(again) == 18
    assert model_columns(again.rows) == model_columns(r.rows)
    fresh = sweep("usb", executor="serial", **SMALL)
    assert model_columns(r.rows) == model_columns(fresh.rows)
    if ext == ".parquet":
        assert not os.path.exists(out + ".part.jsonl")


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_out_may_be_a_path_object(tmp_path, ext):
    # The Parquet journal and the rewritten header's temporary file are
    # named after `out`: a pathlib.Path works as a str does.
    if ext == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / ("sweep" + ext)
    with pytest.raises(Stop):
        sweep("usb", executor="serial", out=out, progress=stop_after(4), **SMALL)
    r = sweep("usb", executor="serial", out=out, **SMALL)
    assert r.reused == 4 and len(SweepResult.read(out)) == 18
    if ext == ".csv":                   # a new column: the header is rewritten
        wider = dict(SMALL, params=dict(SMALL["params"], inflight=[4]))
        sweep("usb", executor="serial", out=out, **wider)
        assert "inflight" in SweepResult.read(out).columns


def test_cells_in_the_file_are_not_run_again(tmp_path):
    out = str(tmp_path / "s.csv")
    sweep("usb", policies="wraparound", seeds=[1, 2], ops=500, executor="serial", out=out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["maps"] = "4242"            # what a run would never say: read, not run again
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = sweep("usb", policies="wraparound", seeds=[1, 2, 3], ops=500, executor="serial",
              out=out)
    assert [row["maps"] for row in r.rows][0] == 4242 and r.reused == 2
    assert r.rows[2]["maps"] == simulate("usb", "wraparound", ops=500, seed=3).maps


def test_failed_cells_are_run_again_only_when_asked(tmp_path, plugins):
    out = str(tmp_path / "s.jsonl")
    kw = dict(policies="iova", seeds=[1, 2], ops=200, executor="serial", out=out)
    first = sweep("pingpong", params={"fail_seed": 2}, **kw)
    assert len(first.errors) == 1
    WORKLOADS.unregister("pingpong")
    register_workload(sweep_plugins.pingpong, "pingpong")
    # the same cell (fail_seed=2 is part of it), found with its error: not run
    assert len(sweep("pingpong", params={"fail_seed": 2}, **kw).errors) == 1
    runs = []
    sweep("pingpong", params={"fail_seed": 2}, retry_failed=True,
          progress=lambda d, t, row: runs.append(row), **kw)
    assert [row["seed"] for row in runs if row] == [2]


def test_a_csv_file_with_other_columns_is_widened(tmp_path):
    out = str(tmp_path / "s.csv")
    sweep("usb", policies="iova", seeds=[1], ops=200, executor="serial", out=out)
    r = sweep("usb", policies="iova", params={"inflight": [1, 2]}, seeds=[1], ops=200,
              executor="serial", out=out)
    assert r.reused == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["inflight"] == "" and rows[2]["inflight"] == "2"


def test_unknown_formats_are_refused(tmp_path):
    with pytest.raises(errors.IovaValueError, match=".csv"):
        sweep("usb", seeds=[1], ops=10, out=str(tmp_path / "s.xlsx"))


# ---- summary ---------------------------------------------------------------------------

def _t_cdf_upper_half(q, df):
    """P(0 < T < q) for Student's t, by Simpson's rule over its density."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    n = 20000
    h = q / n
    f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 19, 30, 35, 45, 80, 150, 1000])
def test_t_quantiles_against_the_density(df):
    lo, hi = 1.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_upper_half(mid, df) < 0.475 else (lo, mid)
    assert abs(t_975(df) - lo) < 1e-4 * max(1.0, lo)


def test_summary_statistics_by_hand():
    rows = [dict(policy="a", x=v, y=None if v == 4 else 10.0, seed=i, verdict="ok", error=None)
            for i, v in enumerate([1, 2, 3, 4])]
    rows.append(dict(policy="a", x=None, y=None, seed=9, verdict="error", error="boom"))
    rows.append(dict(policy="b", x=7, y=None, seed=1, verdict="ok", error=None))
    s = summarize(rows, ["policy"], exclude=("seed",))
    by = {(r["policy"], r["metric"]): r for r in s.rows}
    a = by["a", "x"]
    half = 3.1824 * math.sqrt(((1.5 ** 2) * 2 + (0.5 ** 2) * 2) / 3) / 2
    assert (a["n"], a["mean"], a["min"], a["max"]) == (4, 2.5, 1, 4)
    assert a["ci95_low"] == pytest.approx(2.5 - half)
    assert a["ci95_high"] == pytest.approx(2.5 + half)
    y = by["a", "y"]
    assert (y["n"], y["mean"], y["ci95_low"], y["ci95_high"]) == (3, 10.0, 10.0, 10.0)
    b = by["b", "x"]
    assert (b["n"], b["mean"], b["ci95_low"]) == (1, 7, None)
    assert by["b", "y"]["n"] == 0 and by["b", "y"]["mean"] is None
    groups = {g["policy"]: g for g in s.groups}
    assert groups["a"]["cells"] == 5 and groups["a"]["errors"] == 1
    assert groups["a"]["verdicts"] == "4 ok, 1 error"
    text = s.format(metrics=["x"])
    assert "x: mean over seeds" in text and "4 ok, 1 error" in text


def test_a_sweeps_summary_groups_over_the_seeds():
    r = sweep("usb", executor="serial", **SMALL)
    s = r.summary()
    groups = {(g["policy"], g["ring_size"]) for g in s.groups}
    assert len(groups) == 6 and all(g["cells"] == 3 for g in s.groups)
    stale = {(x["policy"], x["ring_size"]): x for x in s.rows
             if x["metric"] == "stale_translations"}
    vals = [row["stale_translations"] for row in r.rows
            if row["policy"] == "iova" and row["ring_size"] == 64 << 10]
    assert stale["iova", 64 << 10]["mean"] == pytest.approx(sum(vals) / 3)
    assert stale["wraparound", 1 << 20]["max"] == 0
    assert "seed" not in s.metrics and "ring_size" not in s.metrics


# ---- tables --------------------------------------------------------------------------

def test_results_show_as_tables_in_jupyter():
    r = sweep("usb", policies="iova,wraparound", seeds=[1, 2], ops=200, executor="serial")
    page = r._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 1 + 4
    assert "wraparound" in page and "UNSAFE" in page
    assert "<table>" in r.summary()._repr_html_()
    one = simulate("usb", "iova", ops=200)
    assert "stale_translations" in one._repr_html_()
    both = pyiova.sim.compare("usb", ("iova", "wraparound"), ops=200)
    assert isinstance(both, list) and both._repr_html_().count("<tr>") == 1 + 2


def test_long_tables_show_their_ends():
    from pyiova.tables import html_table
    page = html_table(["n"], [[i] for i in range(100)], max_rows=10)
    assert ">0<" in page and ">99<" in page and ">50<" not in page and "90 more rows" in page


def test_to_pandas():
    pd = pytest.importorskip("pandas")
    r = sweep("usb", policies="iova,wraparound", seeds=[1, 2], ops=200, executor="serial")
    df = r.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == r.columns and len(df) == 4
    assert list(df["seed"]) == [1, 2, 1, 2]
    assert len(r.summary().to_pandas()) == 2 * len(r.summary().metrics)
    assert list(pyiova.sim.compare("usb", ("iova",), ops=100).to_pandas()["policy"]) == ["iova"]


# ---- Dask ------------------------------------------------------------------------------

def test_a_dask_local_cluster_gives_the_local_rows(plugins):
    distributed = pytest.importorskip("distributed")
    kw = dict(policies="iova,wraparound", params={"inflight": [1, 4]}, seeds=[1, 2], ops=400)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = sweep("usb,pingpong", scheduler=client, **kw)
        assert len(client.scheduler_info()["workers"]) == 2
        pids = client.run(os.getpid)
    assert os.getpid() not in pids.values()
    local = sweep("usb,pingpong", workers=2, **kw)
    assert on_dask.executor == "dask" and not on_dask.errors
    assert len(on_dask) == 2 * 2 * 2 + 2 * 2
    assert model_columns(on_dask.rows) == model_columns(local.rows)


def test_no_distributed_is_a_clear_error(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_dask(name, *a, **kw):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("no distributed here")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(errors.IovaValueError, match="pyiova\\[dask\\]"):
        sweep("usb", policies="iova", seeds=[1, 2], ops=10, scheduler="local")


# ---- plot ----------------------------------------------------------------------------

def test_the_plot_needs_something_swept():
    from pyiova.sweeps.plot import x_column
    one = sweep("usb", policies="iova,wraparound", seeds=[1, 2], ops=100, executor="serial")
    with pytest.raises(ValueError, match="swept"):
        x_column(one)
    two = sweep("usb", policies="iova", params={"inflight": [1, 2]}, drop_rates=[0.5, 1.0],
                seeds=[1], ops=100, executor="serial")
    assert x_column(two) == "inflight" and x_column(two, "drop_rate") == "drop_rate"
    with pytest.raises(ValueError):
        x_column(two, "kernel")


def test_the_plot_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    r = sweep("usb", policies="iova,reset-when-empty", drivers="ipmmu,generic",
              params={"ring_size": ["64K", "1M"], "sizes": ["1M"]}, seeds=[1, 2], ops=2000,
              executor="serial")
    path = r.plot(str(tmp_path / "s.png"), metrics=["failures", "stale_translations"])
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="numeric"):
        r.plot(str(tmp_path / "t.png"), metrics=["verdict"])


def test_columns_carry_every_result_field():
    from dataclasses import fields

    from pyiova.sim import SimResult
    cols = columns(["ring_size"])
    for f in fields(SimResult):
        if f.name not in ("timeline", "failure_ops"):
            assert f.name in cols
    for c in ("cell", "ring_size", "drop_rate", "max_failures", "verdict", "engine",
              "pyiova_version", "error"):
        assert c in cols


# ---- the command ----------------------------------------------------------------------

CLI_SMALL = ["usb", "--policies", "iova,wraparound,reset-when-empty", "-p", "ring_size=64K,1M",
             "-p", "sizes=1M", "--seeds", "1..2", "--ops", "20k"]


def test_sweep_command_prints_the_summary_and_writes_the_file(capsys, tmp_path):
    out = str(tmp_path / "s.csv")
    code, text, _ = run_cli(capsys, "sweep", *CLI_SMALL, "--out", out, "--metrics",
                            "failures,first_failure_op")
    assert code == 0
    assert "pyiova sweep: 12 cells, 12 run in" in text
    assert "failures: mean over seeds" in text and "first_failure_op: mean" in text
    assert "stale_translations: mean" not in text
    group = next(line for line in text.splitlines() if line.startswith("reset-when-empty"))
    assert "1,048,576" in group or "65,536" in group
    assert "2 FAILS" in group
    code, text, _ = run_cli(capsys, "sweep", *CLI_SMALL, "--out", out, "--seeds", "1..3")
    assert code == 0 and "18 cells (12 found in %s, not run again), 6 run" % out in text


def test_sweep_command_json_lines(capsys):
    code, text, _ = run_cli(capsys, "sweep", *CLI_SMALL, "--json", "--serial")
    assert code == 0
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 3 * 2 * 2
    assert {r["ring_size"] for r in rows} == {64 << 10, 1 << 20}
    assert {r["sizes"] for r in rows} == {str(1 << 20)}
    assert all(r["ops_requested"] == 20_000 for r in rows)


def test_sweep_command_on_a_dask_local_cluster(capsys):
    pytest.importorskip("distributed")
    argv = ["sweep", "usb", "--policies", "iova,wraparound", "-p", "inflight=1,4",
            "--seeds", "1..2", "--ops", "500", "--json", "--workers", "2"]
    code, text, _ = run_cli(capsys, *argv, "--scheduler", "local")
    assert code == 0
    on_dask = [json.loads(line) for line in text.splitlines()]
    code, text, _ = run_cli(capsys, *argv)
    local = [json.loads(line) for line in text.splitlines()]
    assert len(on_dask) == 8 and model_columns(on_dask) == model_columns(local)


@pytest.mark.parametrize("argv,message", [
    (["-p", "ring_size=64K,huge"], "huge"),
    (["-p", "floppy=1"], "floppy"),
    (["--seeds", "5..1"], "empty"),
    (["--policies", "iova,,wraparound"], "policy"),
    (["--ops", "lots"], "count of operations"),
    (["--drop-rate", "0.5,2"], "[0, 1]"),
    (["--metrics", "verdict"], "numeric"),
    (["--plot", "x.png"], "nothing is swept"),
    (["-p", "inflight=1,2", "--plot", "x.png", "--x", "kernel"], "not swept"),
    (["--scheduler", "local", "--serial"], "not allowed"),
    (["--out", "/nonexistent-folder/s.csv"], "not a writable folder"),
    (["--out", "/tmp"], "it is a folder"),
    (["--out", "s.xlsx"], ".csv"),
])
def test_sweep_command_refuses_bad_arguments_before_running(capsys, tmp_path, argv, message):
    out = str(tmp_path / "never.csv")
    code, _, err = run_cli(capsys, "sweep", "usb", "--ops", "100M", "--seeds", "1..50",
                           "--out", out, *argv)
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not os.path.exists(out)


def test_retry_failed_needs_a_file(capsys):
    code, _, err = run_cli(capsys, "sweep", "usb", "--ops", "100M", "--retry-failed")
    assert code == 2 and "--retry-failed goes with --out" in err


def test_sweep_command_exits_1_when_a_cell_failed(capsys, plugins):
    code, text, err = run_cli(capsys, "sweep", "pingpong", "--policies", "iova", "--drivers",
                              "generic", "-p", "fail_seed=2", "--seeds", "1..3", "--ops", "100")
    assert code == 1
    assert "1 of 3 cells failed" in err and "refuses seed 2" in err
    assert "2 ok, 1 error" in text


def test_sweep_command_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = str(tmp_path / "s.png")
    code, text, _ = run_cli(capsys, "sweep", *CLI_SMALL, "--plot", png)
    assert code == 0 and "plot written to %s" % png in text
    with open(png, "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_sweep_help_has_examples(capsys):
    code, text, _ = run_cli(capsys, "sweep", "--help")
    assert code == 0 and "examples:" in text and "--scheduler" in text and "--seeds" in text


def test_sweep_command_progress_bar_counts_cells(monkeypatch, capsys):
    import io
    import sys

    from pyiova import cli

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setitem(sys.modules, "tqdm", None)         # the built-in bar
    monkeypatch.setattr(cli._Bar, "DELAY", 0.0)
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["sweep", *CLI_SMALL, "--serial"]) == 0
    bar = tty.getvalue()
    assert "12/12 cells" in bar and "100%" in bar and "s left" in bar
