"""Lifetimes (trace order -> allocator order) and replay/check.

The check fixture tests/data/traces/vtd-6.12-strict.trace is a one-CPU
strict capture whose every dma_addr was derived by hand from the kernel's
rules: Linux 6.12, 4 KiB granule, start pfn 1, the emulated VT-d's 39-bit
aperture with the IOAPIC/MSI window 0xfee00000-0xfeefffff reserved, PCI
devices with 64-bit masks -- so every allocation first tries below 4 GiB,
top-down from the cached node, and frees go to the per-CPU rcache and come
back newest first. Device A is 0000:00:01.0, device B 0000:00:02.0 (its own
domain). pfns below are in hex.

  line  call                 pages        kernel rule                            dma_addr
  14/15 A map_page 4096      1            top of the 32-bit space: pfn fffff     fffff000
  16/17 A map_page 6144+0x200 2 (2-aligned) below cached fffff: (fffff-2)&~1    ffffc200
  19/20 B map_page 4096      1            B's own domain: fffff                  fffff000
  21/22 A dma_alloc 512      1            below cached ffffc: ffffb              ffffb000
  23/24 A free a1            -> rcache bin 0 [fffff]
  25/26 A map_page           1            rcache: fffff                          fffff000
  27/28 A free a3 (dma_free before its unmap)          bin 0 [ffffb]
  29/30 B free b1 (A holds fffff000 too: the dma: line says whose)
  31/32 A free a4                                      bin 0 [ffffb fffff]
  33/34 A map_page           1            newest first: fffff                    fffff000
  35/36 A map_page           1            then ffffb                             ffffb000
  37-40 A map_sg 3 segments  4 (4-aligned) below cached ffffb: (ffffb-4)&~3     ffff4000
  41/42 A map_page 12288     3 -> 4       below cached ffff4: ffff0              ffff0000
  43/44 A free a8                                      bin 2 [ffff0]
  45/46 A map_page 16384     4            rcache bin 2: ffff0                    ffff0000
  47/48 (irq) free a6 -- logged before a10's map line, but after a10's allocation
  49/50 A map_page           1            bin 0 empty; below cached ffff0: ffffef fffef000
        (irq free lands)                               bin 0 [ffffb]
  51/52 A map_page           1            rcache: ffffb                          ffffb000
  53-55 A dma_alloc 8192     2 (2-aligned) below cached fffef: fffec             fffec000
  56-59 A map_sg (a7's buffer again) 4    below cached fffec: fffe8             fffe8000
  60/61 A unmap_sg -> unmap fffe8000 (a13)             bin 2 [fffe8]
  62/63 A unmap_sg -> unmap ffff4000 (a7)              bin 2 [fffe8 ffff4]
  64/65 A map_page 16384     4            newest first: ffff4                    ffff4000
  66/67 B map_page           1            B's rcache: fffff                      fffff000
"""
import json
import os

import pytest

from pyiova import errors
from pyiova import trace as T

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")
CHECK = os.path.join(DATA, "vtd-6.12-strict.trace")
A, B = "0000:00:01.0", "0000:00:02.0"

# (dma: line, recorded dma_addr) for every allocation, by hand (table above)
EXPECTED_A = [(15, 0xfffff000), (17, 0xffffc200), (22, 0xffffb000), (26, 0xfffff000),
              (34, 0xfffff000), (36, 0xffffb000), (40, 0xffff4000), (42, 0xffff0000),
              (46, 0xffff0000), (50, 0xfffef000), (52, 0xffffb000), (55, 0xfffec000),
              (59, 0xfffe8000), (65, 0xffff4000)]
EXPECTED_B = [(20, 0xfffff000), (67, 0xfffff000)]


def ft(task, pid, cpu, ts, event, msg, flags="....."):
    """One line of /sys/kernel/tracing/trace."""
    return "%16s-%-7d [%03d] %s %12.6f: %s: %s" % (task, pid, cpu, flags, ts, event, msg)


def mapl(iova, size, paddr):
    return "IOMMU: iova=0x%016x - 0x%016x paddr=0x%016x size=%d" % (iova, iova + size, paddr, size)


def unmapl(iova, size):
    return "IOMMU: iova=0x%016x - 0x%016x size=%d unmapped_size=%d" % (iova, iova + size, size,
                                                                      size)


def dmap(dev, addr, size, phys):
    return "%s dir=TO_DEVICE dma_addr=%x size=%d phys_addr=%x attrs=" % (dev, addr, size, phys)


def dunmap(dev, addr, size):
    return "%s dir=TO_DEVICE dma_addr=%x size=%d attrs=" % (dev, addr, size)


@pytest.fixture(scope="module")
def lt():
    return T.load(CHECK)


# ---- lifetimes ------------------------------------------------------------------

def test_allocations_carry_the_recorded_answer(lt):
    assert list(lt.devices) == [A, B]
    assert not lt.single_domain
    for dev, expected in ((A, EXPECTED_A), (B, EXPECTED_B)):
        allocs = lt.devices[dev].allocations
        assert [(a.dma_line, a.expected) for a in allocs] == expected
        for a in allocs:
            assert a.iova == a.expected & ~0xfff and a.offset == a.expected & 0xfff
            assert a.mask is None                        # not given: replay's default applies


def test_allocation_sits_at_its_first_map_line(lt):
    by_dma = {a.dma_line: a for a in lt.devices[A].allocations}
    assert by_dma[15].line == 14
    assert by_dma[40].line == 37                         # map_sg: three map lines, the first
    assert by_dma[55].line == 53                         # dma_alloc on the remap path: per page
    assert by_dma[59].line == 56


def test_lengths_per_call_type(lt):
    size = {a.dma_line: a.size for a in lt.devices[A].allocations}
    assert size[15] == 0x1000
    assert size[17] == 0x2000            # offset 0x200 + 6144 bytes -> 2 pages
    assert size[22] == 0x1000            # dma_alloc of 512 bytes -> 1 page
    assert size[40] == 0x4000            # sg: align_up(0xffff5800 + 0x2800) - 0xffff4000
    assert size[42] == 0x3000            # 3 pages (the rcache rounds, the length does not)
    assert size[55] == 0x2000
    calls = [a.call for a in lt.devices[A].allocations]
    assert calls.count("map_sg") == 2 and calls.count("alloc") == 2


def test_frees_at_their_unmap_lines_and_sg_pairing(lt):
    freed = {a.dma_line: a.free_line for a in lt.devices[A].allocations}
    assert freed[15] == 23 and freed[22] == 28          # dma_unmap_page after, dma_free before
    assert freed[26] == 31 and freed[36] == 47
    # the same buffer mapped twice: each dma_unmap_sg finds its map_sg
    # through the unmap line that follows it
    assert freed[59] == 61 and freed[40] == 63
    assert freed[17] is None and freed[65] is None      # still mapped at the end
    b = {a.dma_line: a.free_line for a in lt.devices[B].allocations}
    assert b == {20: 29, 67: None}                      # same IOVA, other domain


def test_an_interrupt_before_a_map_line_makes_a_choice(lt):
    # a10's first map line (49) follows the interrupt that freed a6 (47/48,
    # pid 300, d.h1.): a10 may have been allocated before that free
    ops = lt.devices[A].ops
    a10 = next(op for op in ops if op.kind == T.Op.ALLOC and op.a.dma_line == 50)
    assert a10.block == (0, 300, 47)
    assert [op.block for op in ops if op.a.dma_line != 50 or op.kind != T.Op.ALLOC] == \
        [None] * (len(ops) - 1)
    # the record decides: the free came after a10's allocation
    r = T.check(lt)
    dev = {d.device: d for d in r.devices}
    assert (dev[A].interrupt_choices, dev[A].interrupt_orders_decided) == (1, 1)
    assert r.decided["interrupt_orders_decided"] == 1


def test_ops_are_in_trace_order(lt):
    ops = lt.devices[A].ops
    assert len(ops) == 14 + 7
    lines = [op.line for op in ops]
    assert lines == sorted(lines)
    live = set()
    for op in ops:                          # never a free before its allocation
        if op.kind == T.Op.ALLOC:
            live.add(op.a.id)
        else:
            live.remove(op.a.id)


def test_identity_map_recognised_and_skipped(lt):
    assert lt.counts["identity_maps"] == 1 and lt.examples["identity_maps"] == [13]
    assert all(a.line != 13 for d in lt.devices.values() for a in d.allocations)
    assert any("identity" in n for n in lt.notes)


def test_iommu_events_only_are_one_domain():
    lt = T.load(os.path.join(DATA, "iommu-only.trace"))
    assert lt.single_domain and list(lt.devices) == [T.ALL_DEVICES]
    allocs = lt.devices[T.ALL_DEVICES].allocations
    assert [(a.line, a.iova, a.size, a.free_line) for a in allocs] == [
        (2, 0xfffff000, 0x1000, 5),
        (3, 0xffffc000, 0x2000, 7),         # two map lines, one unmap
        (6, 0xfffff000, 0x1000, None),
        (8, 0xffffc000, 0x2000, None),      # still mapped: chunks 8 and 9 are one call
        (10, 0xffffb000, 0x1000, None)]
    assert lt.counts["identity_maps"] == lt.counts["identity_unmaps"] == 1
    assert lt.examples["unknown_frees"] == [12]
    assert "one IOMMU domain" in lt.notes[0]


def _never_unmapped(second_paddr):
    """Two map lines of one context, contiguous in IOVA, never unmapped:
    the first maps page 0x8c89000, the second `second_paddr`."""
    return [ft("dd", 166, 0, 1.0, "map", mapl(0xfffe0000, 4096, 0x8c89000), "..s1."),
            ft("dd", 166, 0, 1.000002, "map", mapl(0xfffe1000, 4096, second_paddr), "..s1.")]


@pytest.mark.parametrize("second_paddr, calls", [
    (0x7000000, 1),         # another page, not where the first ended: one call's two chunks
    (0x8c8a000, 2),         # where the first ended: one call would have logged one line
    (0x8c89000, 2),         # the same page again: two buffers in one page (network receive)
])
def test_a_line_that_cannot_be_the_next_chunk_starts_an_allocation(second_paddr, calls):
    allocs = T.load(_never_unmapped(second_paddr)).devices[T.ALL_DEVICES].allocations
    if calls == 1:
        assert [(a.iova, a.size) for a in allocs] == [(0xfffe0000, 0x2000)]
    else:
        assert [(a.iova, a.size) for a in allocs] == [(0xfffe0000, 0x1000),
                                                      (0xfffe1000, 0x1000)]


@pytest.mark.parametrize("map_flags, irq_flags, movable", [
    (".....", "..s1.", True),       # nothing masked: a softirq may have come in between
    (".....", "d.h1.", True),
    ("b..1.", "..s1.", False),      # bottom halves off (network transmit): no softirq
    ("b..1.", "d.h1.", True),       # ... but a hardirq may
    ("d..1.", "d.h1.", False),      # interrupts off (virtio-blk under its queue lock)
    ("D..1.", "..s1.", False),
])
def test_an_interrupt_the_map_context_masked_cannot_fall_between(map_flags, irq_flags,
                                                                  movable):
    # the interrupt unmaps one buffer, logged on the task's stack just
    # before the task's map line: the allocation may have come before it
    # only if the map line's context let that interrupt in
    lines = [ft("nc", 164, 0, 1.0, "map", mapl(0xfffff000, 4096, 0x1000), map_flags),
             ft("nc", 164, 0, 1.1, "unmap", unmapl(0xfffff000, 4096), irq_flags),
             ft("nc", 164, 0, 1.2, "map", mapl(0xffffe000, 4096, 0x2000), map_flags),
             ft("nc", 164, 0, 1.3, "unmap", unmapl(0xffffe000, 4096), map_flags)]
    ops = T.load(lines).devices[T.ALL_DEVICES].ops
    second = [op for op in ops if op.kind == T.Op.ALLOC][1]
    assert second.block == ((0, 164, 2) if movable else None)


def test_direct_mapped_calls_skipped_with_reason():
    lt = T.load(os.path.join(DATA, "mainline-names.trace"))
    d = lt.devices["0000:00:1f.3"]
    assert d.allocations == [] and d.calls == 1
    assert d.skipped_lines == [(10, "direct (dma_addr == phys_addr: no IOMMU translation)")]


def test_mainline_event_names():
    lt = T.load(os.path.join(DATA, "mainline-names.trace"))
    allocs = lt.devices["0000:03:00.0"].allocations
    assert [(a.call, a.dma_line, a.iova, a.size, a.offset, a.free_line) for a in allocs] == [
        ("map_phys", 2, 0xfffff000, 0x1000, 0x80, 6),
        ("map_sg", 5, 0xffffc000, 0x2000, 0, None),
        ("alloc", 9, 0xfffff000, 0x1000, 0, None)]


def test_contexts_are_per_cpu_and_task():
    # two CPUs map the same IOVA for two devices at once; the lines interleave
    lines = [
        ft("fio", 300, 0, 1.0, "map", mapl(0xfffff000, 4096, 0x1000)),
        ft("nvme", 400, 1, 1.1, "map", mapl(0xfffff000, 4096, 0x2000)),
        ft("fio", 300, 0, 1.2, "dma_map_page", dmap("0000:01:00.0", 0xfffff000, 4096, 0x1000)),
        ft("nvme", 400, 1, 1.3, "dma_map_page", dmap("0000:02:00.0", 0xfffff000, 4096, 0x2000)),
        ft("nvme", 400, 1, 1.4, "unmap", unmapl(0xfffff000, 4096)),
        ft("fio", 300, 0, 1.5, "unmap", unmapl(0xfffff000, 4096)),
        ft("fio", 300, 0, 1.6, "dma_unmap_page", dunmap("0000:01:00.0", 0xfffff000, 4096)),
        ft("nvme", 400, 1, 1.7, "dma_unmap_page", dunmap("0000:02:00.0", 0xfffff000, 4096)),
    ]
    lt = T.load(lines)
    a, = lt.devices["0000:01:00.0"].allocations
    b, = lt.devices["0000:02:00.0"].allocations
    assert (a.line, a.cpu, a.free_line) == (1, 0, 6)
    assert (b.line, b.cpu, b.free_line) == (2, 1, 5)


def test_unmap_without_dma_line_attributed_by_address():
    lines = [
        ft("fio", 300, 0, 1.0, "map", mapl(0xfffff000, 4096, 0x1000)),
        ft("fio", 300, 0, 1.1, "dma_map_page", dmap("0000:01:00.0", 0xfffff000, 4096, 0x1000)),
        ft("fio", 300, 0, 1.2, "unmap", unmapl(0xfffff000, 4096)),
        ft("fio", 300, 0, 1.3, "map", mapl(0xfffff000, 4096, 0x3000)),
        ft("fio", 300, 0, 1.4, "dma_map_page", dmap("0000:01:00.0", 0xfffff000, 4096, 0x3000)),
    ]
    lt = T.load(lines)
    first, second = lt.devices["0000:01:00.0"].allocations
    assert first.free_line == 3 and second.free_line is None
    assert lt.counts["unmaps_attributed_by_address"] == 1


# ---- check ----------------------------------------------------------------------

def test_check_matches_every_hand_derived_address():
    r = T.check(CHECK)
    assert r.ok and r.kernel == "6.12"
    dev = {d.device: d for d in r.devices}
    assert (dev[A].allocations, dev[A].matched, dev[A].mismatched, dev[A].skipped) == (14, 14, 0, 0)
    assert (dev[B].allocations, dev[B].matched, dev[B].mismatched, dev[B].skipped) == (2, 2, 0, 0)
    assert dev[A].first_divergence is None and r.first_divergence is None
    assert dev[A].frees == 7 and dev[B].frees == 1


def test_check_json_schema():
    out = json.loads(json.dumps(T.check(CHECK).to_dicts()))
    assert [d["device"] for d in out] == [A, B]
    for d in out:
        for key in ("device", "matched", "mismatched", "skipped", "first_divergence"):
            assert key in d
    json.dumps(T.check(CHECK).to_dict())


def _with(lines, lineno, old, new):
    out = list(lines)
    assert old in out[lineno - 1]
    out[lineno - 1] = out[lineno - 1].replace(old, new)
    return out


def test_check_reports_a_wrong_dma_addr_as_first_divergence():
    lines = open(CHECK).read().splitlines()
    bad = _with(lines, 52, "dma_addr=ffffb000", "dma_addr=ffffa000")
    r = T.check(bad)
    assert not r.ok
    dev = {d.device: d for d in r.devices}
    assert (dev[A].matched, dev[A].mismatched) == (13, 1)
    assert dev[A].first_divergence == {"line": 52, "expected": 0xffffa000, "got": 0xffffb000,
                                       "call": "map_page", "op": 15}
    assert r.first_divergence["line"] == 52
    assert dev[B].mismatched == 0
    text = T.format_check(r)
    assert "line 52: expected 0xffffa000, got 0xffffb000" in text
    assert "15 of 16 recorded addresses matched; first divergence at line 52" in text


def test_check_reports_a_kernel_that_chose_otherwise():
    # the whole record of a10 moved one page down, consistently: no order
    # gives that, so the trace's own order goes on and a10 is the divergence
    lines = open(CHECK).read().splitlines()
    bad = _with(lines, 49, "iova=0x00000000fffef000 - 0x00000000ffff0000",
                "iova=0x00000000fffee000 - 0x00000000fffef000")
    bad = _with(bad, 50, "dma_addr=fffef000", "dma_addr=fffee000")
    r = T.check(bad, mode="strict")
    first = {d.device: d for d in r.devices}[A].first_divergence
    assert (first["line"], first["expected"], first["got"]) == (50, 0xfffee000, 0xffffb000)


def test_check_fails_without_the_interrupt_choice():
    lt = T.load(CHECK)
    for d in lt.devices.values():
        for op in d.ops:
            op.block = None
    r = T.check(lt, mode="strict")
    first = {d.device: d for d in r.devices}[A].first_divergence
    # a6's free would reach the rcache first and a10 would take it
    assert (first["line"], first["expected"], first["got"]) == (50, 0xfffef000, 0xffffb000)


def test_check_needs_the_vtd_reservation():
    # 4 MiB maps (1024 pages, 1024-aligned) walk down from 4 GiB: ffc00,
    # ff800, ff400, ff000; the fifth would be fec00, which overlaps the
    # reserved fee00-feeff, so it goes below the window, 1024-aligned:
    # (fee00 - 400) & ~3ff = fe800
    addrs = [0xffc00000, 0xff800000, 0xff400000, 0xff000000, 0xfe800000]
    lines = []
    for i, addr in enumerate(addrs):
        phys = 0x100000000 + i * 0x400000
        lines.append(ft("fio", 300, 0, 1 + i / 10, "map", mapl(addr, 4 << 20, phys)))
        lines.append(ft("fio", 300, 0, 1.01 + i / 10, "dma_map_page", dmap(A, addr, 4 << 20, phys)))
    r = T.check(lines, reserved=T.VTD_RESERVED)
    assert r.ok and r.matched == 5
    r = T.check(lines, reserved=())
    assert r.first_divergence == {"line": 10, "expected": 0xfe800000, "got": 0xfec00000,
                                  "call": "map_page", "op": 4}


def _walk_down(addrs):
    lines = []
    for i, addr in enumerate(addrs):
        phys = 0x100000000 + i * 0x400000
        lines.append(ft("fio", 300, 0, 1 + i / 10, "map", mapl(addr, 4 << 20, phys)))
        lines.append(ft("fio", 300, 0, 1.01 + i / 10, "dma_map_page", dmap(A, addr, 4 << 20,
                                                                         phys)))
    return lines


def test_check_reserves_the_pci_host_bridge_windows():
    # the same walk down, on a q35 guest: 0xfe800000 is inside the host
    # bridge's window 0xc0000000-0xfebfffff, which dma-iommu reserves in a
    # PCI device's domain, so the fifth lands below it: (c0000 - 400) & ~3ff
    lines = _walk_down([0xffc00000, 0xff800000, 0xff400000, 0xff000000, 0xbfc00000])
    r = T.check(lines)
    assert r.ok and r.matched == 5
    assert T.DEFAULT_RESERVED == T.VTD_RESERVED + T.Q35_PCI_WINDOWS
    r = T.check(lines, reserved=T.VTD_RESERVED)
    assert r.first_divergence["expected"] == 0xbfc00000
    assert r.first_divergence["got"] == 0xfe800000
    # a window of another machine: 0xf0000000-0xfebfffff leaves room below it
    lines = _walk_down([0xffc00000, 0xff800000, 0xff400000, 0xff000000, 0xefc00000])
    assert T.check(lines, reserved=T.VTD_RESERVED + ((0xf0000000, 0xfebfffff),)).ok


@pytest.mark.parametrize("name, ok", [
    ("vtd-6.12-strict.report", True),        # trace-cmd report -l keeps the flags
    ("vtd-6.12-strict.trace.gz", True),
    ("vtd-6.12-strict.perf", False),         # perf script has no flags column
])
def test_check_other_framings(name, ok):
    r = T.check(os.path.join(DATA, name))
    assert r.ok is ok
    if not ok:
        dev = {d.device: d for d in r.devices}
        assert dev[A].first_divergence["line"] == 50 - 12
        assert any("irq-info" in n for n in r.notes)


def test_check_single_domain_and_mainline_fixtures():
    r = T.check(os.path.join(DATA, "iommu-only.trace"))
    assert r.ok and r.matched == 5
    r = T.check(os.path.join(DATA, "mainline-names.trace"))
    assert r.ok and r.matched == 3
    skipped = {d.device: (d.skipped, d.skip_reasons) for d in r.devices}
    assert skipped["0000:00:1f.3"][0] == 1


def test_devices_in_one_group_share_a_domain():
    lines = [
        ft("swapper/0", 1, 0, 0.1, "add_device_to_group", "IOMMU: groupID=3 device=0000:00:1c.0"),
        ft("swapper/0", 1, 0, 0.2, "add_device_to_group", "IOMMU: groupID=3 device=0000:00:1c.1"),
        ft("fio", 300, 0, 1.0, "map", mapl(0xfffff000, 4096, 0x1000)),
        ft("fio", 300, 0, 1.1, "dma_map_page", dmap("0000:00:1c.0", 0xfffff000, 4096, 0x1000)),
        ft("fio", 300, 0, 1.2, "map", mapl(0xffffe000, 4096, 0x2000)),
        ft("fio", 300, 0, 1.3, "dma_map_page", dmap("0000:00:1c.1", 0xffffe000, 4096, 0x2000)),
    ]
    r = T.check(lines)
    assert r.ok and r.matched == 2
    assert {d.domain for d in r.devices} == {"group 3"}
    r = T.check(lines[2:])                   # without the group: separate domains
    assert not r.ok


def test_check_runs_the_410_rules():
    r = T.check(CHECK, kernel="4.10")
    assert r.kernel == "4.10" and sum(d.allocations for d in r.devices) == 16


# ---- replay ---------------------------------------------------------------------

@pytest.mark.parametrize("policy", T.POLICIES)
def test_replay_every_policy(lt, policy):
    r = T.replay(lt, policy)
    assert r.policy == policy
    dev = {d.device: d for d in r.devices}
    # live pages over time (by hand): 1 3 4 3 4 3 2 3 4 8 11 8 12 13 12 13 15 19 15 11 15
    assert (dev[A].maps, dev[A].frees, dev[A].failures, dev[A].peak_live_pages) == (14, 7, 0, 19)
    assert (dev[B].maps, dev[B].frees, dev[B].failures, dev[B].peak_live_pages) == (2, 1, 0, 1)
    assert dev[A].first_failure_op is None and dev[A].ops == 21
    json.dumps(r.to_dict())


def test_replay_addresses_differ_by_policy(lt):
    def allocs(policy):
        d = T.replay(lt, policy, record=True).devices[0]
        return [iova for _, _, what, iova, _ in d.timeline if what == "alloc"]
    iova = allocs("iova")
    assert iova == [a.iova for a in lt.devices[A].allocations]     # the kernel's own
    tree = allocs("iova-tree")
    # tree only: freeing a4 (fffff) sends cached32 back to the anchor, so a5
    # gets fffff again; a6 then lands just below it, at ffffe (the rcache
    # would have handed back ffffb)
    assert tree[:6] == [0xfffff000, 0xffffc000, 0xffffb000, 0xfffff000, 0xfffff000, 0xffffe000]
    lazy = allocs("iova-lazy")
    # lazy: a1's free is queued, so a4 comes from the tree below a3
    assert lazy[3] == 0xffffa000
    assert allocs("wraparound")[0] != iova[0]


def test_replay_failure_reported_with_op_and_line():
    # a 14-bit mask leaves pfns 1..3: a1 gets pfn 3, a2 (2 pages, 2-aligned) cannot fit
    r = T.replay(CHECK, "iova", masks={A: 0x3FFF}, record=True)
    dev = {d.device: d for d in r.devices}
    assert dev[A].failures > 0
    assert (dev[A].first_failure_op, dev[A].first_failure_line) == (1, 17)
    assert dev[A].timeline[:2] == [(0, 14, "alloc", 0x3000, 1), (1, 16, "fail", 0, 2)]
    assert dev[B].failures == 0
    text = T.format_replay(r)
    assert "op 1 (line 17)" in text


def test_replay_progress_and_table():
    seen = []
    results = T.replay(CHECK, list(T.POLICIES), progress=lambda d, t: seen.append((d, t)))
    size = os.path.getsize(CHECK)
    assert seen and seen[-1] == (size, size)            # bytes of the file read
    text = T.format_replay(results)
    for p in T.POLICIES:
        assert p in text
    assert "peak live pages" in text and "identity" in text


def test_replay_rejects_unknown_policy_and_rebuild_options(lt):
    with pytest.raises(errors.IovaValueError):
        T.replay(lt, "first-fit")
    with pytest.raises(ValueError):
        T.replay(lt, "iova", granule=65536)


def test_masks_per_call_type():
    lt = T.load(CHECK, masks={A: 0xFFFFFFFF}, coherent_masks={A: 0xFFFFF})
    masks = {(a.call, a.mask) for a in lt.devices[A].allocations}
    assert masks == {("map_page", 0xFFFFFFFF), ("map_sg", 0xFFFFFFFF), ("alloc", 0xFFFFF)}
    lt = T.load(CHECK, masks=0xFFFFFFFF)                  # one mask for all, both kinds
    assert {a.mask for d in lt.devices.values() for a in d.allocations} == {0xFFFFFFFF}


def test_refused_requests_are_failures_not_crashes():
    # a zero mask is below the wraparound allocator's space: it raises there
    r = T.replay(CHECK, "wraparound", masks=0)
    dev = {d.device: d for d in r.devices}
    assert dev[A].failures == 14 and dev[A].maps == 14 and dev[A].frees == 0
    assert any("refused" in n for n in r.notes)


def test_empty_and_eventless_traces():
    r = T.check([])
    assert not r.ok and r.matched == r.mismatched == 0
    assert "no recorded address could be compared" in T.format_check(r)
    r = T.replay(["garbage"])
    assert r.ops == 0 and any("malformed" in n for n in r.notes)


def test_counter_clock_does_not_drive_time():
    lines = [ft("fio", 300, 0, 0, "map", mapl(0xfffff000, 4096, 0x1000)).replace(
                 "    0.000000:", "123456789:"),
             ft("fio", 300, 0, 0, "dma_map_page", dmap(A, 0xfffff000, 4096, 0x1000)).replace(
                 "    0.000000:", "123999999:")]
    lt = T.load(lines)
    assert not lt.trace.clock_in_seconds
    assert T.check(lt).ok
    assert T.read_trace(CHECK).clock_in_seconds
