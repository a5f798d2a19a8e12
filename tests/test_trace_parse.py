"""Trace parsing: every framing, every event, the awkward lines.

Fixtures (tests/data/traces/) are written in the kernel's exact formats:
  vtd-6.12-strict.trace   /sys/kernel/tracing/trace text, 5-wide flags, #P:1
  vtd-6.12-strict.report  the same capture as `trace-cmd report -l` prints it
  vtd-6.12-strict.perf    the same capture as `perf script` prints it
  vtd-6.12-strict.trace.gz
  awkward.trace / .report / .perf   one awkward case per line
"""
import bz2
import gzip
import io
import json
import lzma
import os
import random
import shutil

import pytest

from pyiova.trace import Event, Problem, parse_line, read_trace

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")


def path(name):
    return os.path.join(DATA, name)


def by_line(trace):
    return {e.line: e for e in trace.events}


# ---- the three framings of one capture ------------------------------------------

def test_ftrace_text_header_and_counts():
    t = read_trace(path("vtd-6.12-strict.trace"))
    assert t.format == "ftrace"
    assert t.tracer == "nop"
    assert t.ncpus == 1 and t.header_ncpus == 1
    assert (t.lines, len(t.events), t.malformed, t.unknown, t.lost_events) == (67, 55, 0, 0, 0)
    assert t.events[0].line == 13 and t.events[-1].line == 67


def _essence(e):
    return (e.system, e.name, e.task, e.pid, e.cpu, round(e.ts, 6), e.fields)


@pytest.mark.parametrize("name, first_line, fmt", [
    ("vtd-6.12-strict.report", 2, "trace-cmd"),
    ("vtd-6.12-strict.perf", 1, "perf"),
    ("vtd-6.12-strict.trace.gz", 13, "ftrace"),
])
def test_formats_carry_the_same_events(name, first_line, fmt):
    ref = read_trace(path("vtd-6.12-strict.trace"))
    t = read_trace(path(name))
    assert t.format == fmt
    assert len(t.events) == len(ref.events) == 55
    assert t.malformed == t.unknown == 0
    assert [_essence(e) for e in t.events] == [_essence(e) for e in ref.events]
    assert [e.line for e in t.events] == [e.line - 13 + first_line for e in ref.events]
    if fmt == "perf":
        # perf script has no irq-info column
        assert all(e.flags == "" and not e.irq for e in t.events)
    else:
        assert [e.flags for e in t.events] == [e.flags for e in ref.events]
        assert [e.irq for e in t.events] == [e.irq for e in ref.events]


def test_interrupt_lines_are_flagged():
    t = read_trace(path("vtd-6.12-strict.trace"))
    irq = [e.line for e in t.events if e.irq]
    assert irq == [47, 48]
    ev = by_line(t)
    assert ev[47].flags == "d.h1." and ev[47].pid == 300 and ev[47].name == "unmap"


def test_trace_cmd_header_gives_cpu_count():
    assert read_trace(path("vtd-6.12-strict.report")).ncpus == 1
    assert read_trace(path("awkward.report")).ncpus == 4


# ---- compressed input ----------------------------------------------------------

def test_gzip_recognised_by_magic_not_name(tmp_path):
    plain = read_trace(path("vtd-6.12-strict.trace"))
    renamed = tmp_path / "capture.txt"
    shutil.copy(path("vtd-6.12-strict.trace.gz"), renamed)
    t = read_trace(str(renamed))
    assert [_essence(e) for e in t.events] == [_essence(e) for e in plain.events]
    assert t.name == str(renamed)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_streams_and_bytes(compress, tmp_path):
    raw = open(path("vtd-6.12-strict.trace"), "rb").read()
    packed = compress(raw)
    f = tmp_path / "t.bin"
    f.write_bytes(packed)
    for source in (str(f), packed, io.BytesIO(packed)):
        t = read_trace(source)
        assert len(t.events) == 55 and t.malformed == 0


def test_sources_of_every_kind():
    raw = open(path("vtd-6.12-strict.trace"), "rb").read()
    text = raw.decode()
    stream = io.BytesIO(raw)
    for source in (raw, stream, io.StringIO(text), text.splitlines(), text.splitlines(True)):
        t = read_trace(source)
        assert len(t.events) == 55
    assert not stream.closed                  # the caller's file stays open


# ---- awkward lines, /sys/kernel/tracing/trace --------------------------------------

@pytest.fixture(scope="module")
def awkward():
    return read_trace(path("awkward.trace"))


def test_awkward_counts(awkward):
    assert awkward.ncpus == 16
    assert (awkward.lines, len(awkward.events)) == (52, 31)
    assert (awkward.malformed, awkward.unknown) == (4, 2)
    assert awkward.lost_events == 17 and awkward.lost_lines == [32]


def test_malformed_and_unknown_lines_reported_with_numbers(awkward):
    got = [(p.line, p.kind) for p in awkward.problems]
    assert got == [(34, "malformed"), (35, "malformed"), (36, "malformed"), (37, "unknown"),
                   (38, "unknown"), (39, "malformed")]
    reasons = {p.line: p.reason for p in awkward.problems}
    assert "not a trace event line" in reasons[34]
    assert "without size" in reasons[35]                     # a line cut short
    assert "dma_addr='zzzz'" in reasons[36]
    assert "sched_switch" in reasons[37]
    assert "device name" in reasons[39]
    assert awkward.unknown_names == {"sched_switch": 1, "tracing_mark_write": 1}
    s = awkward.summary()
    json.dumps(s)
    assert s["malformed"] == 4 and s["problems"][0]["line"] == 34


@pytest.mark.parametrize("line, task, pid, cpu, flags, irq, event", [
    (13, "swapper/0", 1, 0, ".....", False, "iommu:map"),
    (16, "(udev-worker)", 532, 10, ".....", False, "iommu:map"),           # parens and a dash
    (18, "Web Content", 4120, 3, "d.h1.", True, "dma:dma_map_phys"),       # a space
    (19, "<idle>", 0, 2, "d.h1", True, "dma:dma_unmap_phys"),              # 4-wide flags
    (20, "qemu-kvm", 4575, 8, ".......", False, "iommu:map"),              # 7-wide flags
    (21, "kworker/u64:0", 12, 11, "", False, "dma:dma_free"),              # no irq-info column
    (23, "irq/26-AMD-Vi", 154, 6, ".....", False, "iommu:io_page_fault"),  # dashes and digits
    (24, "bash", 1977, 0, ".....", False, "dma:dma_map_sg"),               # (TGID) column
    (25, "<...>", 2001, 1, "..s1.", True, "dma:dma_unmap_sg"),             # (-------), softirq
    (40, "fio", 300, 0, ".....", False, "iommu:unmap"),                    # counter clock
    (51, "<idle>", 0, 5, "dNZ1.", True, "iommu:remove_device_from_group"),  # NMI
    (52, "<idle>", 0, 5, "d.H2.", True, "iommu:detach_device_from_domain"),  # CRLF ending
])
def test_awkward_framing(awkward, line, task, pid, cpu, flags, irq, event):
    e = by_line(awkward)[line]
    assert (e.task, e.pid, e.cpu, e.flags, e.irq, e.full_name) == (task, pid, cpu, flags, irq,
                                                                    event)


def test_iommu_fields(awkward):
    ev = by_line(awkward)
    m = ev[13]
    assert (m.iova, m.iova_end, m.paddr, m.size) == (0, 16 << 20, 0, 16 << 20)
    u = ev[22]
    assert (u.iova, u.iova_end, u.size, u.unmapped_size) == (0xfe980000, 0xfea00000, 524288,
                                                             524288)
    f = ev[23]
    assert (f.driver, f.device, f.iova, f.fault_flags) == ("ath12k_pci", "0000:c2:00.0",
                                                           0xfe980000, "0x0001")
    assert (ev[14].groupID, ev[14].device) == (7, "0000:c2:00.0")
    assert ev[15].device == "0000:c2:00.0"
    assert ev[40].ts == 123456789.0


def test_dma_map_and_unmap_fields(awkward):
    ev = by_line(awkward)
    m = ev[18]
    assert (m.device, m.dir, m.dma_addr, m.size, m.phys_addr) == (
        "0000:00:1f.6", "FROM_DEVICE", 0xfffff000, 1536, 0x1234567000)
    assert m.attrs == ("SKIP_CPU_SYNC", "WEAK_ORDERING")
    u = ev[19]
    assert (u.dma_addr, u.size, u.attrs) == (0xfffff000, 1536, ())       # empty attrs
    r = ev[44]
    assert (r.name, r.attrs, r.phys_addr, r.size) == ("dma_map_resource", ("MMIO",), 0xfed00000, 4)
    assert ev[45].name == "dma_unmap_resource"
    s = ev[50]
    assert (s.name, s.dma_addr, s.size) == ("dma_sync_single_for_cpu", 0xffffa000, 4)


def test_dma_alloc_all_three_versions(awkward):
    ev = by_line(awkward)
    released = ev[17]                       # 6.12.35: virt_addr, no dir
    assert (released.device, released.dma_addr, released.size) == ("0000:c2:00.0", 0xfe980000,
                                                                    524288)
    assert released.dir is None and released.virt_addr == "000000006cadbcb1"
    assert released.flags_gfp == "GFP_KERNEL" and released.attrs == ()
    posted = ev[27]                         # the v4 posting: phys_addr, no virt_addr
    assert (posted.dma_addr, posted.phys_addr) == (0xffffe000, 0x1f000)
    assert posted.flags_gfp == "GFP_KERNEL|__GFP_ZERO"
    mainline = ev[28]                       # current mainline: dir first
    assert (mainline.dir, mainline.dma_addr, mainline.size, mainline.attrs) == (
        "BIDIRECTIONAL", 0xffffc000, 8192, ("FORCE_CONTIGUOUS",))
    assert ev[41].virt_addr == "(____ptrval____)"
    assert (ev[46].name, ev[47].name) == ("dma_alloc_pages", "dma_free_pages")
    sgt = ev[48]
    assert (sgt.name, sgt.dma_addr, sgt.size, sgt.phys_addrs) == (
        "dma_alloc_sgt", 0xffe00000, 2 << 20, (0x300000000, 0x300200000))
    assert ev[49].name == "dma_free_sgt"


def test_sg_hex_arrays(awkward):
    ev = by_line(awkward)
    sg = ev[24]
    assert sg.nents == (3, 3) and sg.ents == (2, 2) and sg.truncated is False
    assert sg.dma_addrs == (0xffff4000, 0xffff5800)
    assert sg.sizes == (0x1000, 0x2800)                  # sizes are hex too
    assert sg.phys_addrs == (0x40000000, 0x50000800, 0x60000000)
    assert ev[25].phys_addrs == sg.phys_addrs and ev[25].dma_addrs is None
    big = ev[26]
    assert big.truncated is True and big.nents == (128, 130) and big.ents == (128, 130)
    assert len(big.dma_addrs) == len(big.sizes) == len(big.phys_addrs) == 128
    assert big.dma_addrs[127] == 0xfff00000 + 127 * 0x1000
    empty = ev[29]
    assert empty.dma_addrs == empty.sizes == empty.phys_addrs == ()
    assert ev[30].dma_addrs == (0xffff4000,) and ev[30].sizes == (0x1000,)
    assert ev[31].err == -12


# ---- trace-cmd report, perf script -----------------------------------------------

def test_trace_cmd_report_awkward():
    t = read_trace(path("awkward.report"))
    assert t.format == "trace-cmd"
    ev = by_line(t)
    assert sorted(ev) == [4, 5, 6, 7, 8, 11]
    assert ev[4].full_name == "iommu:map" and ev[4].flags == ""          # no -l: no flags
    assert ev[5].dma_addr == 0xfffff000                                  # padded name
    long = ev[6]                                                         # name past the pad
    assert long.name == "dma_sync_single_for_device" and long.irq and long.device == "0000:00:01.0"
    legacy = ev[7]                       # old -l layout: CPU glued to the flags
    assert (legacy.task, legacy.pid, legacy.cpu, legacy.flags, legacy.irq) == (
        "fio", 300, 0, "d.h1", True)
    assert ev[8].ts == pytest.approx(1.000374123)                        # nanoseconds
    assert ev[11].attrs == ("WEAK_ORDERING",) and ev[11].sizes == (0x200,)
    probs = [(p.line, p.kind) for p in t.problems]
    assert probs == [(9, "unknown"), (10, "malformed")]
    assert "failed to render" in t.problems[1].reason


def test_perf_script_awkward():
    t = read_trace(path("awkward.perf"))
    assert t.format == "perf"
    ev = by_line(t)
    assert sorted(ev) == [1, 2, 3, 4, 5]
    assert ev[1].full_name == "iommu:map" and ev[1].task == "swapper" and ev[1].pid == 0
    assert (ev[2].task, ev[2].pid, ev[2].cpu) == ("Web Content", 4120, 3)   # pid/tid
    assert (ev[3].task, ev[3].pid, ev[3].cpu) == ("fio", 300, None)         # no CPU column
    assert ev[4].task == "kworker/u64:0" and ev[4].unmapped_size == 524288
    assert ev[5].name == "dma_map_page" and ev[5].dma_addr == 0xfffff000    # period column
    probs = {p.line: (p.kind, p.reason) for p in t.problems}
    assert probs[6][0] == "unknown" and "sched:sched_switch" in probs[6][1]
    assert probs[7][0] == "unknown" and "iommu:frobnicate" in probs[7][1]
    assert probs[8][0] == "malformed" and "phys_addrs" in probs[8][1]      # array cut open


def test_mixed_file_detected_per_line():
    lines = open(path("vtd-6.12-strict.trace")).read().splitlines()[12:20]
    lines += open(path("vtd-6.12-strict.perf")).read().splitlines()[10:20]
    t = read_trace(lines)
    assert t.format == "mixed" and len(t.events) == 18 and t.malformed == 0


# ---- robustness ----------------------------------------------------------------

def test_problem_list_is_bounded():
    t = read_trace(["garbage %d" % i for i in range(100)], max_problems=5)
    assert t.malformed == 100
    assert [p.line for p in t.problems] == [1, 2, 3, 4, 5]


def test_parse_line_never_raises_on_cut_or_mangled_lines():
    rng = random.Random(6)
    lines = [ln for name in ("vtd-6.12-strict.trace", "awkward.trace", "awkward.report",
                             "awkward.perf")
             for ln in open(path(name), encoding="utf-8").read().splitlines()]
    for text in rng.sample(lines, 40):
        for cut in range(0, len(text), 7):
            r = parse_line(text[:cut], 1)
            assert r is None or isinstance(r, (Event, Problem))
        for _ in range(10):
            chars = list(text)
            for _ in range(3):
                chars[rng.randrange(len(chars))] = rng.choice("{}=:-[]() x0\x00\u00e9")
            r = parse_line("".join(chars), 1)
            assert r is None or isinstance(r, (Event, Problem))


def test_blank_and_header_lines_carry_nothing():
    for text in ("", "   ", "# tracer: nop", "#P:4", "cpus=2", "version = 6", "CPU 3 is empty",
                 "##### CPU 2 buffer started ####"):
        assert parse_line(text, 1) is None
    lost = parse_line("CPU:5 [LOST 12 EVENTS]", 9)
    assert isinstance(lost, Problem) and lost.kind == "lost" and lost.line == 9


def test_event_record_api():
    t = read_trace(path("vtd-6.12-strict.trace"))
    e = by_line(t)[40]
    assert e.name == "dma_map_sg" and e.system == "dma" and e.full_name == "dma:dma_map_sg"
    assert e.device == "0000:00:01.0" and e.iova is None
    with pytest.raises(AttributeError):
        e.no_such_field  # noqa: B018 (the read itself must raise)
    d = e.to_dict()
    json.dumps(d)
    assert d["line"] == 40 and d["dma_addrs"] == [0xffff4000, 0xffff5800]
    assert "dma_map_sg" in repr(e)
    assert e == parse_line(open(path("vtd-6.12-strict.trace")).read().splitlines()[39], 40)


# ---- the one number reader, and what a file holds ---------------------------------

@pytest.mark.parametrize("text, base, value", [
    ("0", 10, 0), ("18446744073709551615", 10, (1 << 64) - 1), ("0x1000", 10, 0x1000),
    ("fffff000", 16, 0xfffff000), ("0XFFFFFFFFFFFFFFFF", 16, (1 << 64) - 1),
    ("0x0000000100000000", 16, 1 << 32),
])
def test_numbers_the_kernel_prints(text, base, value):
    from pyiova.trace.parse import read_number
    assert read_number(text, "size", base) == value


@pytest.mark.parametrize("text, base, why", [
    ("18446744073709551616", 10, r"beyond 2\*\*64-1"), ("0x10000000000000000", 16, "beyond"),
    ("-4096", 10, "negative"), ("-0x10", 16, "negative"), ("+5", 10, "not a number"),
    ("1_000", 10, "not a number"), (" 12", 10, "not a number"), ("\u0661\u0662", 10, "not"),
    ("0x\u0660\u0661", 16, "not a number"), ("12.5", 10, "not a number"), ("", 10, "not"),
    ("0x", 16, "not a number"), ("ff", 10, "not a number"),
])
def test_numbers_no_kernel_prints(text, base, why):
    from pyiova.trace.parse import _Malformed, read_number
    with pytest.raises(_Malformed, match=why):
        read_number(text, "size", base)


def test_an_errno_may_be_negative():
    e = parse_line("  fio-300 [000] ..... 1.0: dma_map_sg_err: 0000:00:01.0 dir=TO_DEVICE "
                   "err=-12 phys_addrs={0x1000} attrs=", 1)
    assert isinstance(e, Event) and e.fields["err"] == -12


@pytest.mark.parametrize("line, why", [
    ("map: IOMMU: iova=0x%016x - 0x%016x paddr=0x0 size=%d" % (0, 1 << 64, 1 << 64), "beyond"),
    ("map: IOMMU: iova=0x1000 - 0x2000 paddr=0x0 size=-4096", "negative"),
    ("dma_map_page: 0000:00:01.0 dir=TO_DEVICE dma_addr=\u0660 size=1 phys_addr=1 attrs=",
     "not a number"),
    ("dma_map_sg: 0000:00:01.0 dir=TO_DEVICE dma_addrs={0x1000,-0x10} sizes={0x10,0x10} "
     "phys_addrs={0x1,0x2} attrs=", "negative"),
])
def test_such_numbers_make_the_line_malformed(line, why):
    p = parse_line("  fio-300 [000] ..... 1.0: " + line, 7)
    assert isinstance(p, Problem) and p.kind == "malformed" and p.line == 7
    assert why in p.reason


@pytest.mark.parametrize("head, kind", [
    (b"# tracer: nop\n", None), (b"", None), (b"\xff\xfe#\x00 \x00", "UTF-16 text"),
    (b"#\x00 \x00t\x00r\x00a\x00c\x00", "UTF-16 text"), (b"\x17\x08\x44tracing6", "trace-cmd .dat"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00", "binary"),
])
def test_what_a_file_holds(head, kind):
    from pyiova.trace.parse import sniff
    assert sniff(head) == kind


def test_reading_streams_without_keeping_events():
    from pyiova.trace import Trace, iter_events
    info = Trace()
    it = iter_events(path("vtd-6.12-strict.trace.gz"), info)
    first = next(it)
    assert first.line == 13 and info.events == [] and info.nevents == 1
    rest = list(it)
    assert info.nevents == 55 == len(rest) + 1 and info.lines == 67 and info.events == []
