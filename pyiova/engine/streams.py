"""Where the C engine's records come from.

NativeStream  a built-in workload's generator in C (csrc/sim_gen.c):
              the same parameters and the same random.Random(seed) state
              as the Python generator, hence the same operations.
PackedStream  any iterator of operation tuples (a user's Workload, a trace),
              packed into records a chunk at a time.

Both run the engine over their next records (run), and hand the operation
at their position back as a tuple (current) when the engine stops there,
so the Python engine can run it (skip then moves past it).
"""
from __future__ import annotations

import random
from typing import Any

from .._pyiova import ffi, lib
from ..error_codes import error as _code_error
from ..workloads import NicWorkload, NvmeWorkload, RandomWorkload, UsbWorkload
from ..workloads import nic, nvme, randomized, usb
from ..workloads.base import PAGE
from . import records

__all__ = ["NativeStream", "PackedStream", "native_stream", "stream_for"]

PACK_CHUNK = 4096          # operations a PackedStream packs at a time
_PEEK = 4096               # records: room for the largest scatter-gather list peeked


def _mt_state(seed):
    """random.Random(seed)'s state as struct sim_mt."""
    state = random.Random(seed).getstate()[1]
    mt = ffi.new("struct sim_mt *")
    mt.mt = list(state[:624])
    mt.index = state[624]
    return mt


def _usb(wl, mt, err):
    sizes = ffi.new("uint64_t[]", list(wl.sizes))
    weights = ffi.new("uint64_t[]", list(wl.weights))
    p = ffi.new("struct sim_usb_params *", dict(
        ring=usb.RING, ring_size=wl.ring_size, desc_size=usb.DESC_SIZE, nsizes=len(wl.sizes),
        sizes=sizes, weights=weights, inflight=wl.inflight, in_ratio=wl.in_ratio,
        unaligned=wl.unaligned, per_ms=wl.per_ms, page=PAGE, phys_base=usb.PHYS_BASE,
        phys_bits=usb.PHYS_BITS))
    return lib.sim_gen_usb(p, mt, err)


def _nic(wl, mt, err):
    p = ffi.new("struct sim_nic_params *", dict(
        rx_ring_handle=nic.RX_RING, tx_ring_handle=nic.TX_RING, rx_base=nic.RX_BASE,
        tx_base=nic.TX_BASE, desc_size=nic.DESC_SIZE, tso_size=nic.TSO_SIZE,
        rx_ring=wl.rx_ring, tx_ring=wl.tx_ring, rx_buf=wl.rx_buf, mtu=wl.mtu, tso=wl.tso,
        tx_ratio=wl.tx_ratio, burst=wl.burst, reap=wl.reap, idle_ms=wl.idle_ms, page=PAGE,
        phys_base=nic.PHYS_BASE, phys_bits=nic.PHYS_BITS))
    return lib.sim_gen_nic(p, mt, err)


def _nvme(wl, mt, err):
    lo, hi, seg_lo, seg_hi = wl.exponents
    p = ffi.new("struct sim_nvme_params *", dict(
        sq_base=nvme.SQ_BASE, cq_base=nvme.CQ_BASE, cmd_base=nvme.CMD_BASE,
        sqe_size=nvme.SQE_SIZE, cqe_size=nvme.CQE_SIZE, queues=wl.queues, depth=wl.depth,
        min_log2=lo, max_log2=hi, read_ratio=wl.read_ratio, prp_max=wl.prp_max,
        seg_min_log2=seg_lo, seg_max_log2=seg_hi, per_ms=wl.per_ms, phys_base=nvme.PHYS_BASE,
        phys_bits=nvme.PHYS_BITS))
    return lib.sim_gen_nvme(p, mt, err)


def _random(wl, mt, err):
    p = ffi.new("struct sim_random_params *", dict(
        size_min=wl.size_min, size_max=wl.size_max, loguniform=wl.size_dist == "loguniform",
        lifetime=wl.lifetime, fixed_lifetime=wl.lifetime_dist == "fixed",
        live_max=wl.live_max, sg_ratio=wl.sg_ratio, coherent_ratio=wl.coherent_ratio,
        write_ratio=wl.write_ratio, per_ms=wl.per_ms, page=PAGE,
        phys_base=randomized.PHYS_BASE, phys_bits=randomized.PHYS_BITS))
    return lib.sim_gen_random(p, mt, err)


_BUILT_IN = {UsbWorkload: _usb, NicWorkload: _nic, NvmeWorkload: _nvme, RandomWorkload: _random}


class NativeStream:
    """A built-in workload's stream, generated in C."""

    def __init__(self, gen) -> None:
        self._g = ffi.gc(gen, lib.sim_gen_destroy)
        self._peek = ffi.new("struct sim_op[]", _PEEK)
        self._ops = ffi.new("uint64_t *")

    @property
    def ptr(self):
        return self._g

    def run(self, engine, max_ops, run):
        return lib.sim_engine_run_gen(engine, self._g, max_ops, run)

    def skip(self, n=1) -> None:
        r = lib.sim_gen_skip(self._g, n)
        if r:
            raise _code_error(r, where=_GENERATING, what="the generator")

    def take(self, n):
        """The next n operations as tuples (and past them)."""
        out: list[Any] = []
        while len(out) < n:
            k = lib.sim_gen_next(self._g, self._peek, _PEEK, n - len(out), self._ops)
            if k < 0:
                raise _code_error(k, where=_GENERATING, what="the generator")
            buf = ffi.buffer(self._peek, records.RECORD_SIZE * k)
            out.extend(records.unpack(bytes(buf)))
        return out

    def tuples(self):
        """The operations from here on, as tuples (the Python engine's form)."""
        while True:
            op = self.current()
            self.skip(1)
            yield op

    @property
    def exhausted(self) -> bool:
        return False

    def current(self):
        """The operation at the stream's position, not consumed."""
        k = lib.sim_gen_peek(self._g, self._peek, _PEEK)
        if k < 0:
            raise _code_error(k, where=_GENERATING, what="the generator")
        return records.decode(bytes(ffi.buffer(self._peek, records.RECORD_SIZE * k)), 0)


_GENERATING = "generating the workload's operations"


def native_stream(workload, seed):
    """A NativeStream for a built-in workload (exactly one of the built-in
    classes, so a subclass's own generator is never bypassed), or None with
    the reason the C generator cannot produce this stream."""
    make = _BUILT_IN.get(type(workload))
    if make is None:
        return None, "the workload %r is written in Python" % (workload.name,)
    err = ffi.new("int *")
    gen = make(workload, _mt_state(seed), err)
    if gen == ffi.NULL:
        if err[0] != lib.IOVA_E_ARG:
            raise _code_error(err[0], where="creating the workload's generator")
        return None, "parameters beyond what the C generator follows exactly"
    return NativeStream(gen), None


class PackedStream:
    """Operation tuples from an iterator, packed into records PACK_CHUNK at a
    time."""

    def __init__(self, ops) -> None:
        self._it = iter(ops)
        self._buf = bytearray()
        self._extra: list[Any] = []
        self._pos = 0                  # next record
        self._n = 0                    # records in the buffer
        self._cbuf: Any = None

    def _fill(self):
        if self._pos < self._n:
            return True
        self._buf, self._extra, packed = records.pack(self._it, PACK_CHUNK)
        self._pos, self._n = 0, len(self._buf) // records.RECORD_SIZE
        self._cbuf = ffi.from_buffer("struct sim_op[]", self._buf) if self._n else None
        return packed > 0

    def run(self, engine, max_ops, run):
        if not self._fill():
            run.status, run.ops, run.records = lib.SIM_DONE, 0, 0
            return 0
        r = lib.sim_engine_run(engine, self._cbuf + self._pos, self._n - self._pos, max_ops,
                               run)
        if r == 0:
            self._pos += run.records
        return r

    @property
    def exhausted(self) -> bool:
        return not self._fill()

    def skip(self, n=1) -> None:
        for _ in range(n):
            if not self._fill():
                return
            self._pos += records.records_of(self._buf, self._pos)

    def current(self):
        self._fill()
        return records.decode(self._buf, self._pos, self._extra)

    def tuples(self):
        while self._fill():
            op = self.current()
            self.skip(1)
            yield op


def stream_for(workload, seed, make_ops):
    """The record source for a run: the C generator when the workload has
    one, else make_ops() (its Python operations) packed."""
    stream, _ = native_stream(workload, seed)
    return stream if stream is not None else PackedStream(make_ops())
