"""Workload shapes: each stream is checked on its own, with no IOMMU, against
the rules a real driver follows (map before use, unmap what was mapped with
the same size and direction, never more in flight than a ring holds), and
against each workload's own promises."""
import pytest

from pyiova.dma import DmaDirection
from pyiova.workloads import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE, MAP_SG,
                              OP_NAMES, UNMAP_PAGE, UNMAP_SG, WORKLOADS, WorkloadError,
                              describe, format_op, get_workload, parse_size)
from pyiova.workloads import nic, nvme, usb

N = 20_000


class Walk:
    """Replays a stream, keeping what is live, and fails on any misuse."""

    def __init__(self, wl, n=N, seed=1):
        self.live = {}            # handle -> (kind, size, direction, cpu)
        self.peak = 0
        self.ops = list(wl.ops(n, seed))
        self.counts = {name: 0 for name in OP_NAMES}
        for i, op in enumerate(self.ops):
            self.counts[OP_NAMES[op[0]]] += 1
            self.step(i, op)

    def _map(self, i, h, entry):
        assert h not in self.live, "op %d maps handle %r twice: %s" % (i, h, format_op(self.ops[i]))
        self.live[h] = entry
        self.peak = max(self.peak, len(self.live))

    def _unmap(self, i, h, kind):
        assert h in self.live, "op %d unmaps handle %r, not mapped" % (i, h)
        entry = self.live.pop(h)
        assert entry[0] == kind, "op %d: %s of a %s mapping" % (i, OP_NAMES[self.ops[i][0]],
                                                                entry[0])
        return entry

    def step(self, i, op):
        code = op[0]
        if code == MAP_PAGE:
            _, h, paddr, size, d, cpu = op
            assert size > 0 and paddr >= 0 and d in (DmaDirection.TO_DEVICE,
                                                     DmaDirection.FROM_DEVICE)
            self._map(i, h, ("page", size, d, cpu))
        elif code == UNMAP_PAGE:
            _, h, size, d, cpu = op
            entry = self._unmap(i, h, "page")
            assert entry[1:] == (size, d, cpu), "op %d unmaps with other arguments" % i
        elif code == MAP_SG:
            _, h, segs, d, cpu = op
            assert segs and all(n > 0 and p % 4096 == 0 for p, n in segs)
            self._map(i, h, ("sg", sum(n for _, n in segs), d, cpu))
        elif code == UNMAP_SG:
            _, h, d, cpu = op
            entry = self._unmap(i, h, "sg")
            assert (entry[2], entry[3]) == (d, cpu)
        elif code == ALLOC_COHERENT:
            _, h, size, cpu = op
            self._map(i, h, ("coherent", size, DmaDirection.BIDIRECTIONAL, cpu))
        elif code == FREE_COHERENT:
            _, h, cpu = op
            entry = self._unmap(i, h, "coherent")
            assert entry[3] == cpu
        elif code == ACCESS:
            _, h, offset, write = op
            assert h in self.live, "op %d: the device touches handle %r, not mapped" % (i, h)
            kind, size, d, _ = self.live[h]
            assert 0 <= offset < size, "op %d: offset %d outside %d bytes" % (i, offset, size)
            # the device writes only what was mapped for it to write
            assert not write or d in (DmaDirection.FROM_DEVICE, DmaDirection.BIDIRECTIONAL)
            assert write or d in (DmaDirection.TO_DEVICE, DmaDirection.BIDIRECTIONAL)
        elif code == ADVANCE:
            assert op[1] > 0
        else:
            pytest.fail("unknown opcode %r" % (code,))


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_stream_uses_the_dma_api_correctly(name):
    walk = Walk(get_workload(name))
    assert len(walk.ops) == N
    assert walk.counts["access"] > 0 and walk.counts["advance"] > 0
    assert walk.counts["map_page"] + walk.counts["map_sg"] > 1000


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_the_same_seed_gives_the_same_stream_and_another_seed_another(name):
    wl = get_workload(name)
    a = list(wl.ops(5000, seed=7))
    assert a == list(wl.ops(5000, seed=7))
    assert a == list(get_workload(name).ops(5000, seed=7))
    assert a != list(wl.ops(5000, seed=8))
    assert list(wl.ops(100, seed=7)) == a[:100]      # n only cuts the same stream


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_devices_have_the_masks_of_their_kind(name):
    dev = get_workload(name).device()
    if name in ("nic", "nvme"):
        assert dev.is_pci and dev.dma_mask == dev.coherent_dma_mask == (1 << 64) - 1
    else:
        assert not dev.is_pci and dev.dma_mask == dev.coherent_dma_mask == (1 << 32) - 1


def test_usb_ring_is_allocated_first_and_lives_to_the_end():
    wl = get_workload("usb")
    walk = Walk(wl, 50_000)
    assert walk.ops[0] == (ALLOC_COHERENT, usb.RING, 4096, None)
    assert usb.RING in walk.live                    # never freed
    assert not any(op[0] == FREE_COHERENT for op in walk.ops)
    ring_accesses = [op for op in walk.ops if op[0] == ACCESS and op[1] == usb.RING]
    assert ring_accesses and all(op[2] % usb.DESC_SIZE == 0 for op in ring_accesses)


def test_usb_transfers_stay_within_the_queue_depth_and_the_size_set():
    wl = get_workload("usb", inflight=3, sizes="4K,64K,240K", weights="1,1,1")
    walk = Walk(wl)
    assert walk.peak <= 1 + 3
    sizes = {op[3] for op in walk.ops if op[0] == MAP_PAGE}
    assert sizes == {4096, 65536, 240 * 1024}
    offsets = {op[2] % 4096 for op in walk.ops if op[0] == MAP_PAGE}
    assert 0 in offsets and any(o % 512 == 0 and o for o in offsets)   # some start mid-page


def test_usb_weights_choose_sizes():
    wl = get_workload("usb", sizes="4K,1M", weights="0,1")
    assert {op[3] for op in wl.ops(2000) if op[0] == MAP_PAGE} == {1 << 20}


@pytest.mark.parametrize("rx,tx", [(8, 4), (256, 256)])
def test_nic_rings_are_never_overfilled(rx, tx):
    wl = get_workload("nic", rx_ring=rx, tx_ring=tx, burst=64)
    walk = Walk(wl, 30_000)
    rx_live = tx_live = tx_peak = 0
    for op in walk.ops:
        h = op[1] if op[0] != ADVANCE else None
        if op[0] == MAP_PAGE:
            if h >= nic.TX_BASE:
                assert h - nic.TX_BASE < tx
                tx_live += 1
                tx_peak = max(tx_peak, tx_live)
            else:
                assert nic.RX_BASE <= h < nic.RX_BASE + rx
                rx_live += 1
            assert rx_live <= rx and tx_live <= tx
        elif op[0] == UNMAP_PAGE:
            if h >= nic.TX_BASE:
                tx_live -= 1
            else:
                rx_live -= 1
    assert tx_peak == tx or tx >= 64        # a small ring is driven full
    assert rx_live >= rx - 1                 # the rx ring is kept stocked
    rings = [op for op in walk.ops[:2]]
    assert rings == [(ALLOC_COHERENT, nic.RX_RING, rx * nic.DESC_SIZE, None),
                     (ALLOC_COHERENT, nic.TX_RING, tx * nic.DESC_SIZE, None)]


def test_nvme_queues_depth_sizes_and_scatter_gather():
    wl = get_workload("nvme", queues=3, depth=4, max_size="1M", seg_max="64K")
    walk = Walk(wl)
    busy = {}
    sg_sizes = set()
    for op in walk.ops:
        if op[0] in (MAP_PAGE, MAP_SG):
            h, cpu = op[1], op[-1]
            q, tag = divmod(h - nvme.CMD_BASE, 4)
            assert cpu == q and 0 <= tag < 4
            busy[q] = busy.get(q, 0) + 1
            assert busy[q] <= 4
            if op[0] == MAP_PAGE:
                assert op[3] <= 8192 and op[3] & (op[3] - 1) == 0
            else:
                segs = op[2]
                total = sum(n for _, n in segs)
                assert 8192 < total <= 1 << 20 and total & (total - 1) == 0
                assert all(n <= 65536 for _, n in segs)
                sg_sizes.add(total)
        elif op[0] in (UNMAP_PAGE, UNMAP_SG):
            busy[(op[1] - nvme.CMD_BASE) // 4] -= 1
    assert min(sg_sizes) == 16384 and max(sg_sizes) == 1 << 20
    assert set(busy) == {0, 1, 2}
    assert wl.ncpus == 3
    assert walk.counts["alloc_coherent"] == 6 and walk.counts["free_coherent"] == 0


def test_random_sizes_lifetimes_and_kinds():
    wl = get_workload("random", size_min="8K", size_max="64K", live_max=5, lifetime=50,
                      sg_ratio=0.2, coherent_ratio=0.2)
    walk = Walk(wl)
    assert walk.peak <= 5
    for op in walk.ops:
        if op[0] == MAP_PAGE or op[0] == ALLOC_COHERENT:
            size = op[3] if op[0] == MAP_PAGE else op[2]
            assert 8192 <= size <= 65536
    assert walk.counts["map_sg"] and walk.counts["alloc_coherent"] and walk.counts["free_coherent"]


def test_random_fixed_lifetime_keeps_that_many_live():
    wl = get_workload("random", lifetime=10, lifetime_dist="fixed", size_dist="uniform")
    walk = Walk(wl, 5000)
    assert walk.peak == 11       # mapped at step t, unmapped at step t + 11


def test_random_device_follows_its_parameters():
    dev = get_workload("random", dma_bits=40, pci="true").device()
    assert dev.is_pci and dev.dma_mask == (1 << 40) - 1 == dev.coherent_dma_mask


def test_parameters_are_parsed_and_checked():
    assert get_workload("usb", inflight="8").inflight == 8
    assert get_workload("usb", sizes="512,2M").sizes == (512, 2 << 20)
    with pytest.raises(WorkloadError, match="no parameter"):
        get_workload("usb", bogus=1)
    with pytest.raises(WorkloadError, match="inflight"):
        get_workload("usb", inflight="many")
    with pytest.raises(WorkloadError, match="weights"):
        get_workload("usb", sizes="4K,8K", weights="1")
    with pytest.raises(WorkloadError, match="power of two"):
        get_workload("nvme", max_size="3M")
    with pytest.raises(WorkloadError, match="unknown workload"):
        get_workload("floppy")
    with pytest.raises(WorkloadError):
        get_workload("random", size_dist="normal")
    with pytest.raises(WorkloadError):
        get_workload("usb").ops(-1)


def test_parse_size():
    assert parse_size("4K") == parse_size("4k") == parse_size("4KiB") == 4096
    assert parse_size("2M") == 2 << 20 and parse_size(512) == 512 and parse_size("0x1000") == 4096
    for bad in ("", "4Q", "-1", 0, True, "K"):
        with pytest.raises(WorkloadError):
            parse_size(bad)


def test_describe_lists_every_workload_and_parameter():
    text = describe()
    for name, cls in WORKLOADS.items():
        assert name + ":" in text
        for key in cls.PARAMS:
            assert key in text
