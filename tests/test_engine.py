"""The C simulation engine against the Python engine (the reference).

- the built-in workloads' C generators yield the very operations of the
  Python generators (same parameters, same seed);
- operation records pack and unpack to the same tuples;
- every policy x driver x workload x kernel, on several seeds, gives the same
  counters, timeline and final state (handles, DMA mappings, allocator,
  page table, IOTLB, driver) through both engines;
- random operation streams - failing maps, misuse of handles, bad
  arguments, a page table that refuses a map, chunk boundaries anywhere -
  leave both engines in the same state and raise the same exceptions;
- checkpoints taken mid-run resume on the C engine to the same result;
- a driver the engine cannot express runs on the Python engine, and says so.

The default run covers the whole matrix on short runs and one seed; longer
sweeps are opt-in: PYIOVA_ENGINE_SEEDS=5 PYIOVA_ENGINE_OPS=100000, and
PYIOVA_ENGINE_EXAMPLES for the random streams.
"""
import copy
import os
import pickle
import random
import warnings

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pyiova import checkpoint, dma, errors
from pyiova.dma import DmaDirection
from pyiova.drivers import GenericIommu
from pyiova.engine import records, streams
from pyiova.engine.native import NativeEngine
from pyiova.engine.streams import PackedStream, native_stream
from pyiova.sim import (DEFAULT_POLICIES, FAILURE_OPS_KEPT, EngineFallback, Simulation,
                        not_applicable, simulate)
from pyiova.workloads import (ACCESS, ADVANCE, ALLOC_COHERENT, FREE_COHERENT, MAP_PAGE, MAP_SG,
                              UNMAP_PAGE, UNMAP_SG, Workload, get_workload)

SEEDS = range(1, 1 + int(os.environ.get("PYIOVA_ENGINE_SEEDS", "1")))
OPS = int(os.environ.get("PYIOVA_ENGINE_OPS", "3000"))
EXAMPLES = int(os.environ.get("PYIOVA_ENGINE_EXAMPLES", "150"))
KERNELS = ("6.12", "6.1", "4.10")
IN, OUT, BIDI, NONE = (DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE,
                       DmaDirection.BIDIRECTIONAL, DmaDirection.NONE)

# Parameter sets that take each generator down its other paths.
STREAMS = [
    ("usb", {}), ("usb", dict(inflight=1, sizes="1M", unaligned=0)),
    ("usb", dict(sizes="512,4K,300K", weights="0,3,1", unaligned=1.0, in_ratio=0.0)),
    ("nic", {}), ("nic", dict(tx_ring=4, reap=2, tso=0.5, rx_buf="4K", idle_ms=0)),
    ("nic", dict(rx_ring=2, burst=500, rx_buf="1536", mtu=9000)),
    ("nvme", {}), ("nvme", dict(queues=1, depth=1, prp_max="4K", seg_max="4K")),
    ("nvme", dict(queues=8, depth=3, min_size="64K", max_size="64K")),
    ("random", {}), ("random", dict(sg_ratio=0.4, coherent_ratio=0.3, size_dist="uniform")),
    ("random", dict(lifetime_dist="fixed", lifetime=3, live_max=2, size_min=1, size_max=100)),
    ("random", dict(lifetime=0, size_min="5000", size_max="5000", per_ms=1)),
]


# ---- the streams -----------------------------------------------------------------------

@pytest.mark.parametrize("name,params", STREAMS)
def test_c_generators_yield_the_python_generators_operations(name, params):
    wl = get_workload(name, **params)
    for seed in (1, 7, 2 ** 70 + 3, -5):
        stream, why = native_stream(wl, seed)
        assert why is None
        assert stream.take(5000) == list(wl.ops(5000, seed)), (name, params, seed)


def test_a_skipped_stream_goes_on_where_the_python_one_does():
    wl = get_workload("nvme", queues=2, depth=4)
    stream, _ = native_stream(wl, 3)
    stream.skip(777)
    assert stream.current() == list(wl.ops(778, 3))[-1]
    assert stream.take(100) == list(wl.ops(877, 3))[777:]


def test_workloads_with_their_own_generator_are_not_generated_in_c():
    class Mine(Workload):
        name = "mine"

        def _generate(self, rng):
            while True:
                yield (ADVANCE, 1)

    class Subclassed(type(get_workload("usb"))):
        def _generate(self, rng):
            yield (ADVANCE, 1)

    for wl in (Mine(), Subclassed()):
        stream, why = native_stream(wl, 1)
        assert stream is None and "written in Python" in why


ops_strategy = st.lists(st.one_of(
    st.tuples(st.just(ACCESS), st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1),
              st.booleans()),
    st.tuples(st.just(MAP_PAGE), st.integers(0, 9), st.integers(0, 2 ** 64 - 1),
              st.integers(1, 1 << 20), st.sampled_from(list(DmaDirection)),
              st.one_of(st.none(), st.integers(0, 3))),
    st.tuples(st.just(MAP_SG), st.integers(0, 9),
              st.lists(st.tuples(st.integers(0, 2 ** 40), st.integers(1, 1 << 16)), min_size=1,
                       max_size=5).map(tuple),
              st.sampled_from(list(DmaDirection)), st.none()),
    st.tuples(st.just(ADVANCE), st.integers(0, 100)),
    st.tuples(st.just(FREE_COHERENT), st.integers(0, 9), st.none()),
    # what records cannot carry goes as a PYTHON record, unchanged
    st.tuples(st.just(MAP_PAGE), st.text(max_size=2), st.floats(), st.integers(-5, 5),
              st.integers(), st.integers(-3, 3)),
    st.tuples(st.integers(8, 12)),
), max_size=40)


@given(ops=ops_strategy)
def test_records_give_back_the_operations(ops):
    buf, extra, n = records.pack(ops)
    assert n == len(ops)
    assert records.unpack(buf, extra) == ops
    assert len(buf) % records.RECORD_SIZE == 0


# ---- both engines on the built-in workloads ------------------------------------------------

def outcome(result):
    out = result.as_dict(timeline=True)
    for key in ("elapsed_s", "ops_per_sec", "engine", "engine_note"):
        del out[key]
    return out


def _handle(addr, obj):
    if obj is None:
        return ("page", addr)
    if isinstance(obj, dma.SgMapping):
        return ("sg", addr, obj.iova, obj.length, tuple(obj.segments), tuple(obj.dma_addrs))
    return ("coherent", addr, obj.paddr, obj.dma_addr, obj.size)


def snapshot(sim, leaves=True):
    """Everything a run leaves behind that either engine could get wrong
    (leaves=False: the page table by its counters, not leaf by leaf)."""
    dom, dev, cookie, state = sim.domain, sim.device, sim._cookie, sim._state
    out = {"result": outcome(sim.result())}
    out["state"] = {name: getattr(state, name) for name in type(state).__slots__
                    if name not in ("addr", "objs")}
    out["handles"] = {h: _handle(a, state.objs.get(h)) for h, a in state.addr.items()}
    out["objs without a handle"] = set(state.objs) - set(state.addr)
    out["dma mappings"] = {iova: (m.dev is dev, m.size, m.direction, m.kind, m.length, m.addr,
                                  m.paddr) for iova, m in cookie.dma_mappings.items()}
    out["domain"] = (dom.counters().as_dict(), dom.op_count)
    out["cookie"] = (cookie.stats(), cookie.flushes, cookie.resets, cookie.clock_ms,
                     dev in cookie._no_32bit)
    phys = cookie.__dict__.get("dma_phys")
    out["phys"] = None if phys is None else (phys._next,
                                             {k: v for k, v in phys._free.items() if v})
    if cookie.iovad is not None:
        out["ranges"] = cookie.iovad.ranges()
        out["rcache"] = (cookie.iovad.rcache_stats(), cookie.iovad.stats()["clock_ms"])
    elif cookie.type.value == "wraparound":
        out["ranges"] = cookie.allocator.ranges()
    if leaves:
        out["leaves"] = list(dom.mappings())
    out["tlb"] = (dom.iotlb.dump(), dom.iotlb.stats(), dom.stale_translations())
    priv = dom.priv
    if getattr(priv, "mmu", None) is not None:
        out["ipmmu"] = (priv.dirty, priv.mmu._rng.getstate())
    cookie.check()
    dom.check()
    return out


def both(workload, policy, driver, chunks=None, leaves=True, **kw):
    """A Simulation through each engine; (python, c) snapshots."""
    out = []
    for engine in ("python", "c"):
        s = Simulation(workload, policy, driver, engine=engine, **kw)
        assert s.result().engine == engine
        for n in chunks or [None]:
            s.run(n)
        out.append(snapshot(s, leaves))
        s.close()
    return out


MATRIX = [(w, p, d, k) for w in ("usb", "nic", "nvme", "random") for d in ("ipmmu", "generic")
          for p in DEFAULT_POLICIES for k in KERNELS if not not_applicable(p, d, k)]


@pytest.mark.parametrize("case", range(len(MATRIX)), ids=["-".join(m) for m in MATRIX])
def test_both_engines_leave_the_same_state(case):
    workload, policy, driver, kernel = MATRIX[case]
    # each combination on seeds of its own: the matrix covers many seeds at once
    for k, seed in enumerate(SEEDS):
        seed = 1 + case * len(SEEDS) + k
        py, c = both(workload, policy, driver, ops=OPS, seed=seed, kernel=kernel,
                     drop_rate=0.5, timeline=k == 0)
        assert py == c, (workload, policy, driver, kernel, seed)


LONG_RUNS = [
    # (workload, params, policy, driver, what the run must show)
    ("usb", dict(sizes="1M", inflight=1, unaligned=0), "reset-when-empty", "ipmmu",
     lambda snap: snap["result"]["stopped_early"]),
    ("usb", dict(sizes="1M", inflight=2), "wraparound", "ipmmu",
     lambda snap: snap["result"]["wraps"] >= 1),
    ("random", dict(sg_ratio=0.3, coherent_ratio=0.3, lifetime=20000, size_max="4M", dma_bits=40,
                    live_max=50000,
                    pci=True), "iova", "generic",
     lambda snap: snap["cookie"][4]),                       # the 32-bit-first attempts end
    ("nic", dict(tx_ring=1024, reap=1), "iova-lazy", "generic",
     lambda snap: snap["cookie"][1] > 0),                   # the flush queue's flushes
    ("random", dict(lifetime=40000, size_max="4M", live_max=100000), "iova-tree", "ipmmu",
     lambda snap: snap["result"]["failures"] > 0),
]


@pytest.mark.parametrize("workload,params,policy,driver,shows", LONG_RUNS)
def test_both_engines_agree_on_long_runs_that_fail_wrap_and_flush(workload, params, policy,
                                                                  driver, shows):
    py, c = both(workload, policy, driver, params=params, ops=30_000, seed=4, max_failures=50,
                 timeline=True, leaves=False)
    assert py == c
    assert shows(py)


def test_the_ipmmu_erratum_draws_the_same_numbers_and_flushes_when_idle():
    snaps = []
    for engine in ("python", "c"):
        s = Simulation("random", "iova", "ipmmu", ops=5000, seed=2, engine=engine,
                       drop_rate=0.3, params=dict(lifetime=2, live_max=3))
        s.domain.priv.mmu.flush_when_idle = True
        s.run()
        snaps.append(snapshot(s))
        c = s.domain.counters()
        assert c.idle_flushes > 0 and 0 < c.invalidations_lost < c.syncs
    assert snaps[0] == snaps[1]


def test_results_are_the_same_through_simulate_and_compare():
    for engine in ("python", "c"):
        r = simulate("nvme", "iova", "generic", ops=4000, seed=3, engine=engine)
        assert r.engine == engine
    a = [outcome(r) for r in __import__("pyiova").sim.compare("usb", ops=3000, engine="python")
         if r.applicable]
    b = [outcome(r) for r in __import__("pyiova").sim.compare("usb", ops=3000) if r.applicable]
    assert a == b


def test_progress_is_reported_at_the_same_points():
    seen = {}
    for engine in ("python", "c"):
        calls = seen[engine] = []
        simulate("usb", "iova", "generic", ops=20_000, engine=engine,
                 progress=lambda done, label: calls.append((done, label)))
    assert seen["python"] == seen["c"] and seen["c"][-1] == (20_000, "iova")


def test_failure_ops_are_kept_up_to_the_cap():
    kw = dict(params=dict(sizes="1M", inflight=1, unaligned=0), ops=40_000, seed=1,
              max_failures=FAILURE_OPS_KEPT + 500)
    py = simulate("usb", "reset-when-empty", "ipmmu", engine="python", **kw)
    c = simulate("usb", "reset-when-empty", "ipmmu", engine="c", **kw)
    assert len(c.failure_ops) == min(c.failures, FAILURE_OPS_KEPT) > 0
    assert outcome(py) == outcome(c)


# ---- random operation streams -------------------------------------------------------------

class Listed(Workload):
    """A workload that yields a given list of operations."""
    name = "listed"
    dma_bits = 32
    PARAMS = {}

    def __init__(self, ops, pci=False, bits=32, ncpus=1):
        super().__init__()
        self.listed = ops
        self.is_pci = pci
        self.dma_bits = self.coherent_bits = bits
        self._ncpus = ncpus

    @property
    def ncpus(self):
        return self._ncpus

    def _generate(self, rng):
        yield from self.listed


handles = st.integers(0, 5)
dirs = st.sampled_from([IN, OUT, BIDI, NONE, 7])
cpus = st.sampled_from([None, None, None, 0, 1, 5])
sizes = st.sampled_from([1, 100, 4096, 4097, 8192, 65536, 1 << 20, 1 << 24, 1 << 31, 0])
paddrs = st.one_of(st.integers(0, 1 << 33), st.just((1 << 40) + 4096), st.just(-4096))

op_strategy = st.one_of(
    st.tuples(st.just(MAP_PAGE), handles, paddrs, sizes, dirs, cpus),
    st.tuples(st.just(UNMAP_PAGE), handles, sizes, dirs, cpus),
    st.tuples(st.just(MAP_SG), handles,
              st.lists(st.tuples(st.integers(0, 1 << 32), st.sampled_from([0, 1, 4096, 9000])),
                       max_size=4).map(tuple), dirs, cpus),
    st.tuples(st.just(UNMAP_SG), handles, dirs, cpus),
    st.tuples(st.just(ALLOC_COHERENT), handles, sizes, cpus),
    st.tuples(st.just(FREE_COHERENT), handles, cpus),
    st.tuples(st.just(ACCESS), handles, st.sampled_from([0, 1, 4095, 1 << 20, 1 << 40]),
              st.booleans()),
    st.tuples(st.just(ADVANCE), st.sampled_from([0, 1, 10, 200])),
    st.tuples(st.just(UNMAP_PAGE), st.just("h"), st.just(4096), st.just(IN), st.none()),
)


def _attempt(sim, chunks):
    """Runs the chunks; (exception type and message or None, snapshot)."""
    try:
        for n in chunks:
            sim.run(n)
        exc = None
    except (errors.IovaError, ValueError, TypeError, KeyError) as e:
        exc = (type(e), str(e))
    return exc, snapshot(sim)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(op_strategy, max_size=60), data=st.data(),
       policy=st.sampled_from(["iova", "iova-lazy", "iova-tree", "wraparound",
                               "reset-when-empty"]),
       driver=st.sampled_from(["ipmmu", "generic"]), kernel=st.sampled_from(KERNELS),
       pci=st.booleans(), max_failures=st.integers(1, 5))
def test_random_streams_leave_both_engines_in_the_same_state(ops, data, policy, driver, kernel,
                                                             pci, max_failures):
    if not_applicable(policy, driver, kernel):
        return
    chunks = data.draw(st.lists(st.integers(0, 8), max_size=8)) + [None]
    # the records of a Python workload are packed a few operations at a time
    packed = data.draw(st.integers(1, 9))
    saved, streams.PACK_CHUNK = streams.PACK_CHUNK, packed
    try:
        seen = _both_attempts(ops, chunks, policy, driver, kernel, pci, max_failures)
    finally:
        streams.PACK_CHUNK = saved
    assert seen[0] == seen[1]


def _both_attempts(ops, chunks, policy, driver, kernel, pci, max_failures):
    seen = []
    for engine in ("python", "c"):
        wl = Listed(ops, pci=pci, bits=40 if pci else 32)
        s = Simulation(wl, policy, driver, ops=len(ops), seed=1, kernel=kernel,
                       max_failures=max_failures, engine=engine, drop_rate=0.5)
        seen.append(_attempt(s, chunks))
        event("raised %s" % (seen[-1][0][0].__name__ if seen[-1][0] else "nothing"))
        if seen[-1][0] is None:
            assert s.finished
        s.close()
    return seen


def test_a_refused_page_table_map_is_unwound_and_counted_alike():
    """iommu_map fails (a physical address beyond the IPMMU's 40-bit
    output): the IOVA goes back and the map is a failed one
    (DMA_MAPPING_ERROR), in both engines; the run goes on."""
    ops = [(MAP_PAGE, 1, 0x1000, 8192, IN, None), (MAP_PAGE, 2, 1 << 41, 4096, IN, None),
           (ACCESS, 1, 0, True), (ALLOC_COHERENT, 3, 4096, None)]
    seen = []
    for engine in ("python", "c"):
        s = Simulation(Listed(ops), "iova", "ipmmu", ops=4, engine=engine)
        seen.append(_attempt(s, [None]))
    assert seen[0] == seen[1]
    exc, snap = seen[0]
    assert exc is None and snap["state"]["pos"] == 4
    assert snap["state"]["failures"] == 1 and snap["state"]["first_fail"] == 1
    assert snap["state"]["live_at_fail"] == 2 and snap["result"]["maps"] == 2
    assert len(snap["dma mappings"]) == 2


def test_misuse_stops_both_engines_before_the_operation():
    ops = [(MAP_PAGE, 1, 0x1000, 4096, IN, None), (UNMAP_PAGE, 1, 8192, IN, None)]
    for engine in ("python", "c"):
        s = Simulation(Listed(ops), "iova", "generic", ops=2, engine=engine)
        with pytest.raises(errors.DmaApiError, match="size"):
            s.run()
        assert s.done == 1 and s.result().maps == 1 and len(s._state.addr) == 1
        with pytest.raises(errors.DmaApiError):    # the same operation again
            s.run()
        assert s.done == 1


def test_mapping_a_live_handle_is_refused():
    ops = [(MAP_PAGE, 1, 0x1000, 4096, IN, None), (ALLOC_COHERENT, 1, 4096, None)]
    for engine in ("python", "c"):
        s = Simulation(Listed(ops), "iova", "generic", ops=2, engine=engine)
        with pytest.raises(errors.IovaValueError, match="still mapped"):
            s.run()
        assert s.done == 1


# ---- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("workload,policy,driver", [
    ("usb", "iova", "ipmmu"), ("nic", "iova-lazy", "generic"),
    ("nvme", "reset-when-empty", "generic"), ("random", "wraparound", "ipmmu"),
])
def test_checkpoints_resume_on_the_c_engine(workload, policy, driver):
    kw = dict(ops=6000, seed=2, drop_rate=0.5, timeline=True,
              params=dict(sg_ratio=0.2, coherent_ratio=0.2) if workload == "random" else None)
    reference = outcome(simulate(workload, policy, driver, engine="python", **kw))
    for cut in (0, 1, 2345, 5999):
        s = Simulation(workload, policy, driver, engine="c", **kw)
        s.run(cut)
        blob = checkpoint.dumps(s)
        twin = copy.deepcopy(s)
        assert outcome(s.run().result()) == reference
        resumed = checkpoint.loads(blob)
        assert resumed.done == cut and resumed.result().engine == "c"
        assert outcome(resumed.run(1000).run(7).run().result()) == reference
        assert outcome(twin.run().result()) == reference


def test_a_checkpoint_moves_between_engines():
    kw = dict(ops=5000, seed=5, params=dict(coherent_ratio=0.3, sg_ratio=0.3))
    reference = outcome(simulate("random", "iova", "generic", **kw))
    s = Simulation("random", "iova", "generic", engine="python", **kw).run(2500)
    moved = pickle.loads(pickle.dumps(s))
    moved._res.engine = "c"
    assert outcome(moved.run().result()) == reference


# ---- what the engine cannot express ---------------------------------------------------------

class LoudGeneric(GenericIommu):
    """Flushes everything on every sync: behaviour no profile declares."""

    def iotlb_sync(self, domain, gather):
        domain.counts.syncs += 1
        domain.iotlb.invalidate_all()


def _custom_driver_sim(engine):
    s = Simulation("usb", "iova", "generic", ops=2000, seed=1, engine="python")
    # the same system on a driver subclass: rebuild with it
    from pyiova.cookie import get_dma_cookie
    from pyiova.iommu import DomainType
    drv = LoudGeneric()
    dom = drv.domain_alloc(DomainType.DMA)
    get_dma_cookie(dom, allocator="iova", ncpus=1)
    dev = get_workload("usb").device()
    dev.attach(dom)
    dma.dma_cookie(dev)
    from pyiova.sim import _choose_engine
    s._dom, s._dev, s._cookie = dom, dev, dom.iova_cookie
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s._res.engine, s._res.engine_note = _choose_engine(engine, dom, dev, dom.iova_cookie)
    return s, caught


def test_a_driver_the_engine_cannot_express_runs_on_the_python_engine():
    s, caught = _custom_driver_sim("auto")
    assert s.result().engine == "python" and "LoudGeneric" in s.result().engine_note
    assert not caught
    s.run()
    assert s.result().iotlb_syncs == s.result().unmaps > 0
    s, caught = _custom_driver_sim("c")
    assert s.result().engine == "python"
    assert [w.category for w in caught] == [EngineFallback]


def test_a_python_workload_runs_on_the_c_engine_through_records():
    ops = list(get_workload("nvme").ops(4000, 3))
    py, c = both(Listed(ops, pci=True, bits=64, ncpus=4), "iova", "generic", ops=4000)
    assert py == c
    assert py["result"]["maps"] > 0
    # a stream that ends before the run asked for: both stop where it ends
    short = [simulate(Listed(ops[:100], ncpus=4), "iova", "ipmmu", ops=500, engine=engine)
             for engine in ("python", "c")]
    assert short[0].ops == short[1].ops == 100 and outcome(short[0]) == outcome(short[1])


def test_engine_names_are_checked():
    with pytest.raises(errors.IovaValueError, match="engine"):
        simulate("usb", engine="fast", ops=10)


def test_the_engine_validator_passes_after_a_run():
    s = Simulation("random", "iova", "generic", ops=3000, seed=1, engine="c",
                   params=dict(sg_ratio=0.3, coherent_ratio=0.3))
    s.run()
    eng = NativeEngine(s.domain, s.device, s._cookie, 1000, FAILURE_OPS_KEPT)
    eng.load(s._state)
    eng.check()
    eng.close()


def test_packed_streams_run_in_chunks_of_any_size(monkeypatch):
    ops = list(get_workload("random", sg_ratio=0.5).ops(3000, 2))
    monkeypatch.setattr(streams, "PACK_CHUNK", 7)
    py, c = both(Listed(ops), "wraparound", "generic", ops=3000, chunks=[1, 2, 997, None])
    assert py == c
    stream = PackedStream(iter(ops[:10]))
    assert list(stream.tuples()) == ops[:10] and stream.exhausted


def test_seeds_that_are_not_integers_give_the_same_stream():
    wl = get_workload("usb")
    for seed in ("text", 3.5, b"bytes"):
        stream, _ = native_stream(wl, seed)
        assert stream.take(500) == list(wl.ops(500, seed))
    assert random.Random("text").random() == random.Random("text").random()


def test_simulations_in_threads_give_what_they_give_alone():
    import threading
    cases = [("usb", "iova", "ipmmu"), ("nvme", "iova-lazy", "generic"),
             ("random", "wraparound", "generic"), ("nic", "reset-when-empty", "ipmmu")]
    alone = [outcome(simulate(w, p, d, ops=20_000, seed=7)) for w, p, d in cases]
    together = [None] * len(cases)

    def run(i):
        w, p, d = cases[i]
        together[i] = outcome(simulate(w, p, d, ops=20_000, seed=7))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
