"""`pyiova replay` end to end: exit codes, text and JSON, and the inputs a
new user hits -- empty, binary, trace-cmd .dat, UTF-16, cut-short gzip,
numbers no kernel prints, maps whose iommu:map line is missing."""
import bz2
import gzip
import json
import lzma
import os
import stat

import pytest

from pyiova import cli

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")
CHECK = os.path.join(DATA, "vtd-6.12-strict.trace")
REPORT = os.path.join(DATA, "vtd-6.12-strict.report")
LAZY = os.path.join(DATA, "nvme-lazy-6.12.107.trace.gz")
NO_EVENTS = "no iommu:map/unmap or dma: events found"


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `pyiova replay argv...` in this process."""
    try:
        code = cli.main(["replay"] + list(argv) + ["--no-progress"])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code or 0, out, err


def test_check_text_and_exit_status(capsys):
    code, out, err = run(capsys, CHECK, "--check")
    assert code == 0 and err == ""
    assert "all 16 recorded addresses matched" in out
    assert "decided by the record: 1 of 1 interrupt orders" in out


def test_check_json_rows(capsys):
    code, out, _ = run(capsys, CHECK, "--check", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["device"] for r in rows] == ["0000:00:01.0", "0000:00:02.0"]
    assert rows[0]["interrupt_orders_decided"] == 1 and rows[0]["mode"] == "strict"
    assert all(r["mismatched"] == 0 for r in rows)


def test_a_divergence_exits_1(capsys, tmp_path):
    lines = open(CHECK).read().splitlines()
    lines[51] = lines[51].replace("dma_addr=ffffb000", "dma_addr=ffffa000")
    bad = tmp_path / "bad.trace"
    bad.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, str(bad), "--check", "--mode", "strict")
    assert code == 1 and "first divergence at line 52" in out


def test_what_if_on_a_lazy_capture(capsys):
    code, out, _ = run(capsys, LAZY, "--policy", "wraparound,iova-lazy")
    assert code == 0
    assert "as traced (iova-lazy)" in out and "what would have changed" in out
    assert "iova-lazy on 0000:00:01.0: 0 of 2160 allocations at another address" in out
    code, out, _ = run(capsys, LAZY, "--policy", "wraparound", "--json")
    r, = json.loads(out)
    assert r["policy"] == "wraparound" and r["kernel_replay"]["ok"]
    assert r["kernel_replay"]["decided"]["fires"] > 0
    assert r["devices"][0]["changed"] > 0


def test_the_kernel_replay_alone(capsys):
    code, out, _ = run(capsys, CHECK)
    assert code == 0 and out.startswith("replay through kernel 6.12 rules")
    code, out, _ = run(capsys, CHECK, "--json")
    r, = json.loads(out)
    assert r["policy"] == "as traced (iova)" and r["ok"]


def test_mode_from_policy_and_bad_arguments(capsys, tmp_path):
    code, out, _ = run(capsys, CHECK, "--check", "--policy", "iova-lazy")
    assert code == 1 and "lazy TLB invalidation" in out and "given" in out
    for argv, word in ((["--check", "--policy", "wraparound"], "iova-lazy"),
                       (["--policy", "iova,,wraparound"], "comma-separated"),
                       (["--policy", "iova@5.4"], "5.4"),
                       (["--aperture-bits", "65"], "65"),
                       (["--hz", "0"], "hz")):
        code, _, err = run(capsys, CHECK, *argv)
        assert code == 2 and word in err and "Traceback" not in err


@pytest.mark.parametrize("name, content, hint", [
    ("empty.trace", b"", "is empty"),
    ("random.bin", bytes(range(256)) * 8, "not text"),
    ("capture.dat", b"\x17\x08\x44tracing6\x00\x00\x00" + bytes(range(256)) * 4,
     "trace-cmd report"),
    ("u16.trace", None, "UTF-16"),
])
def test_files_with_no_events_say_so(capsys, tmp_path, monkeypatch, name, content, hint):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))      # no trace-cmd
    path = tmp_path / name
    if content is None:
        content = open(CHECK, "rb").read().decode().encode("utf-16")
    path.write_bytes(content)
    code, out, err = run(capsys, str(path), "--check")
    assert code == 1 and NO_EVENTS in err and hint in err
    assert "Traceback" not in err
    code, _, err = run(capsys, str(path))
    assert code == 1 and NO_EVENTS in err


def test_dev_null(capsys):
    code, _, err = run(capsys, os.devnull, "--check")
    assert code == 1 and NO_EVENTS in err


def test_a_dat_file_goes_through_trace_cmd_when_installed(capsys, tmp_path, monkeypatch):
    # a stand-in trace-cmd whose report is the fixture's own trace-cmd output
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trace-cmd"
    exe.write_text("#!/bin/sh\ncat '%s'\n" % REPORT)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    dat = tmp_path / "capture.dat"
    dat.write_bytes(b"\x17\x08\x44tracing6\x00\x00\x00" + b"\x00" * 64)
    code, out, _ = run(capsys, str(dat), "--check")
    assert code == 0 and "all 16 recorded addresses matched" in out
    assert "read through `trace-cmd report`" in out


def test_a_cut_gzip_is_one_line_not_a_traceback(capsys, tmp_path):
    data = gzip.compress(open(CHECK, "rb").read() * 50)
    cut = tmp_path / "cut.trace.gz"
    cut.write_bytes(data[:len(data) // 2])
    code, _, err = run(capsys, str(cut), "--check")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "truncated or damaged" in err


@pytest.mark.parametrize("name,data", [
    ("header-only.gz", b"\x1f\x8b\x08\x00"),                         # ends inside the header
    ("bad-block.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage"),
    ("cut.bz2", bz2.compress(b"x" * 1000)[:12]),
    ("cut.xz", lzma.compress(b"x" * 1000)[:20]),
])
def test_compressed_input_damaged_before_its_first_line_is_not_an_empty_file(capsys, tmp_path,
                                                                            name, data):
    path = tmp_path / name
    path.write_bytes(data)
    code, _, err = run(capsys, str(path), "--check")
    assert code == 2 and "Traceback" not in err
    assert "after line 0" in err and "truncated or damaged" in err and "empty" not in err


def test_numbers_no_kernel_prints_are_malformed_with_line_numbers(capsys, tmp_path):
    lines = open(CHECK).read().splitlines()
    lines[13] = lines[13].replace("size=4096", "size=18446744073709551616")          # 2**64
    lines[15] = lines[15].replace("size=8192", "size=-8192")
    lines[19] = lines[19].replace("dma_addr=fffff000", "dma_addr=\u0660fffff000")   # Arabic 0
    path = tmp_path / "bad.trace"
    path.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, str(path), "--check", "--json")
    rows = json.loads(out)
    code, out, _ = run(capsys, str(path), "--check")
    assert "3 malformed lines (line 14, 16, 20)" in out
    from pyiova import trace as T
    t = T.read_trace(str(path))
    reasons = {p.line: p.reason for p in t.problems}
    assert "beyond 2**64-1" in reasons[14] and "negative" in reasons[16]
    assert "not a number" in reasons[20]
    assert sum(r["allocations"] for r in rows) < 16


def test_maps_without_their_map_line_are_reported_in_text(capsys, tmp_path):
    lines = open(CHECK).read().splitlines()
    # drop the iommu:map line of the first map_page (line 14)
    path = tmp_path / "dropped.trace"
    path.write_text("\n".join(lines[:13] + ["#"] + lines[14:]) + "\n")
    code, out, _ = run(capsys, str(path), "--check")
    assert "maps dropped: their allocation's first iommu:map line is missing" in out
    assert "(line 15)" in out


def _walk_down(tmp_path, last):
    """4 MiB maps walking down from 4 GiB; the fifth at `last`."""
    lines = []
    for i, addr in enumerate([0xffc00000, 0xff800000, 0xff400000, 0xff000000, last]):
        phys = 0x100000000 + i * 0x400000
        lines.append("fio-300 [000] ..... %f: map: IOMMU: iova=0x%016x - 0x%016x "
                     "paddr=0x%016x size=%d" % (1 + i / 10, addr, addr + (4 << 20), phys, 4 << 20))
        lines.append("fio-300 [000] ..... %f: dma_map_page: 0000:00:01.0 dir=TO_DEVICE "
                     "dma_addr=%x size=%d phys_addr=%x attrs=" % (1.01 + i / 10, addr, 4 << 20,
                                                                  phys))
    p = tmp_path / "walk.trace"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_pci_windows(capsys, tmp_path):
    # q35's window 0xc0000000-0xfebfffff is reserved by default: the fifth
    # 4 MiB map lands below it; with no windows it lands just under the
    # IOAPIC/MSI window, and with another machine's window below that one
    below = _walk_down(tmp_path, 0xbfc00000)
    assert run(capsys, below, "--check")[0] == 0
    assert run(capsys, below, "--check", "--pci-windows", "none")[0] == 1
    above = _walk_down(tmp_path, 0xfe800000)
    assert run(capsys, above, "--check", "--pci-windows", "none")[0] == 0
    other = _walk_down(tmp_path, 0xefc00000)
    code, out, _ = run(capsys, other, "--check", "--pci-windows",
                       "f0000000-febfffff,0xa0000-0xbffff")
    assert code == 0 and "all 5 recorded addresses matched" in out
    for bad in ("c0000000", "zz-1", "2-1", "0-10000000000000000"):
        code, _, err = run(capsys, other, "--check", "--pci-windows", bad)
        assert code == 2 and "--pci-windows" in err and "LO-HI" in err
