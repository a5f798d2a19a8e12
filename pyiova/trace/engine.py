"""The ordering engine: one mechanism for every place where a trace leaves
the allocator's order open and the recorded addresses decide it.

A trace fixes which allocations and frees a domain saw, but not always in
which order, nor when deferred work ran:

* interrupt order: an interrupt logged just before a task's first map
  line may have come before the task's allocation (its frees happened
  first, as traced) or after it (the allocation was already made; only its
  map line came later). The trace cannot tell; both happen.
* the flush queue's timer (lazy mode) releases the queued ranges at a
  moment no event records, somewhere in a window after it was armed: in
  any of the gaps between the operations inside that window.

Each such place is a choice whose candidates have a fixed order of
preference: the trace's own order first, then the allocation before the
whole interrupt, then before its later parts; the earliest fire first.

The engine follows the preferred candidate of every choice on one copy of
the domain's state and compares each allocation with the address the
kernel recorded. At each choice it keeps ("parks") a way back to the
state before it -- a checkpoint copy shared by up to `checkpoint_every`
choices, and the journal since, which it can run again -- with the
candidates not taken. While the record agrees nothing else runs. When an
allocation differs, parked alternatives are woken, the most recent
first (the newest, then the two before it, then four more...), each on
its own copy, and run in lockstep, one allocation at a time, up to that
allocation and `lookahead` beyond it: a hypothesis whose allocation
differs from the record is dropped, hypotheses that reach the same state
merge, and the first batch with a survivor decides (the other survivors
stay parked). When no batch has one (the copies beyond `width` were
cut), the same parked choices are tried once more depth first, one at a
time. So the record decides each choice, however late the
allocation that tells the candidates apart comes, and an earlier choice
is revised without replaying the trace. A mismatch is never accepted
while a consistent hypothesis is left; when none is, the one that
reproduced the most allocations goes on and the allocation it could not
reproduce counts as a divergence.

Bounds: a parked choice expires once `lookahead` allocations after its
window matched and (lazy) `depth` newer timer windows opened, or when
`max_parked` are parked; at most `width` hypotheses run at once (copies
beyond it are dropped as they are made, the least preferred first). Only
what no parked alternative can change is final: it is counted and handed
to the listener (the what-if policies) in order, and the operations
before it are dropped. So memory holds the parked copies and the
operations since the oldest, never the whole trace.
"""
from __future__ import annotations

from typing import Any

from .kernel import TimerRules

__all__ = ["Op", "Engine", "ALLOC", "FREE", "FIRE", "TRIM"]

ALLOC, FREE, FIRE, TRIM = 0, 1, 2, 3
_IRQ_CHOICE, _FIRE_CHOICE, _TRIM_CHOICE = 0, 1, 2

# counters, one list per hypothesis
(MATCHED, MISMATCHED, FAILED, IRQ_CHOICES, IRQ_RECORD, FIRE_SINGLE, FIRE_EARLIEST,
 FIRE_RECORD, TRIM_SINGLE, TRIM_EARLIEST, TRIM_RECORD) = range(11)
_NCOUNTERS = 11


class Op:
    """One allocator operation of a domain, in trace order.

    kind   ALLOC or FREE
    a      the Allocation
    dev    the device the allocation is for (a TraceDevice)
    line, ts, cpu, pid, irq   where it sits in the trace (a free: its unmap line)
    block  ALLOC in task context: (cpu, pid, first line) of the interrupt's
           lines logged just before its first map line, else None
    """

    __slots__ = ("kind", "a", "dev", "line", "ts", "cpu", "pid", "irq", "block")
    ALLOC, FREE = ALLOC, FREE

    def __init__(self, kind, a, dev, line, ts, cpu, pid, irq, block=None) -> None:
        self.kind, self.a, self.dev, self.line, self.ts = kind, a, dev, line, ts
        self.cpu, self.pid, self.irq, self.block = cpu, pid, irq, block

    def __repr__(self) -> str:
        return "<Op %s #%d line %d>" % (("alloc", "free")[self.kind], self.a.id, self.line)


class _Hyp:
    """One way the choices may have gone, consistent with the record so far:
    a domain state, where it is in the operations, what each live
    allocation got, its counters, and its journal (a chain of final-to-be
    entries shared with its ancestors: (parent, kind, op, x, depth))."""

    __slots__ = ("model", "pos", "pending", "pending_i", "irq_done", "c", "first_divergence",
                 "fire_gaps", "armings", "got", "journal", "nalloc", "todo", "direct",
                 "trim_gaps")
    model: Any
    pos: Any
    pending: Any
    pending_i: Any
    irq_done: Any
    c: Any
    first_divergence: Any
    fire_gaps: Any
    armings: Any
    got: Any
    journal: Any
    nalloc: Any
    todo: Any
    direct: Any
    trim_gaps: Any

    def fields(self):
        return (self.pos, self.pending, self.pending_i, self.irq_done, list(self.c),
                self.first_divergence, self.fire_gaps, self.armings, dict(self.got),
                self.journal, self.nalloc, self.trim_gaps)

    def set_fields(self, f) -> None:
        (self.pos, self.pending, self.pending_i, self.irq_done, c, self.first_divergence,
         self.fire_gaps, self.armings, got, self.journal, self.nalloc, self.trim_gaps) = f
        self.c = list(c)
        self.got = dict(got) if got is not None else {}

    def light_fields(self):
        """fields() without what each allocation got (a checkpoint has it)."""
        return (self.pos, self.pending, self.pending_i, self.irq_done, list(self.c),
                self.first_divergence, self.fire_gaps, self.armings, None, self.journal,
                self.nalloc, self.trim_gaps)

    def copy(self):
        h = _Hyp.__new__(_Hyp)
        h.model = self.model.copy()
        h.set_fields(self.fields())
        h.todo = h.direct = None
        return h

    def key(self):
        """Hypotheses with different keys have different futures (equal
        keys: compare fingerprint() too)."""
        return (self.pos, self.pending_i, tuple(id(o) for o in self.pending), self.irq_done,
                self.model.timer, tuple(sorted(self.got.items())))


class _Parked:
    """The state before a choice and the candidates not taken there. The
    state is either whole (snap, fields) or a checkpoint `ck` from before
    it plus the light fields: the journal from the checkpoint to here is
    run again to rebuild it, which is cheaper than copying the state at
    every choice when few are ever woken."""
    __slots__ = ("snap", "fields", "ck", "kind", "where", "next", "ncand", "armings",
                 "close_ts", "close_m", "root")
    snap: Any
    fields: Any
    ck: Any
    kind: Any
    where: Any
    next: Any
    ncand: Any
    armings: Any
    close_ts: Any
    close_m: Any
    root: Any


class _Checkpoint:
    """A whole copy of the active hypothesis, shared by the choices parked
    after it (up to `checkpoint_every` of them)."""
    __slots__ = ("snap", "fields", "node", "parks")
    snap: Any
    fields: Any
    node: Any
    parks: Any


class Engine:
    """Replays one domain's operations through `model` (a KernelDomain),
    the record deciding what the trace leaves open.

    feed(op) as the operations come, in trace order; finish() at the end.
    listener(kind, op, x) receives each operation once it is final:
    (ALLOC, op, iova the kernel model gave or 0), (FREE, op, iova freed or 0),
    (FIRE, op, t0): the timer armed at t0 fired just before op.
    """

    def __init__(self, model, *, timer=None, lookahead=8, depth=8, max_parked=256, width=1024,
                 reserve=256, checkpoint_every=16, budget=100000, listener=None) -> None:
        self.timer = timer or TimerRules()
        self.lookahead, self.depth, self.max_parked = lookahead, depth, max_parked
        self.width, self.reserve = width, reserve
        self.checkpoint_every = checkpoint_every
        self.budget = budget            # hypothesis-allocations one search may run
        self.quiet_until = -1           # no parking before this many allocations
        self.last_divergence = None
        self.clustered = 0
        self.ck: Any = None              # the active hypothesis' latest checkpoint
        self.listener = listener
        self.buf: list[Any] = []               # operations from absolute index `base` on
        self.base = 0
        self.end = 0
        # index of a block's first op -> (alloc's index, ops)
        self.block_starts: dict[Any, Any] = {}
        h = _Hyp()
        h.model = model
        h.set_fields((0, (), 0, -1, [0] * _NCOUNTERS, None, 0, 0, {}, None, 0, 0))
        h.todo = None
        # with nothing parked, final results go straight to the listener
        h.direct = listener if listener is not None else _ignore
        self.hyps = [h]
        self.parked: list[Any] = []
        self.unclosed = 0           # parked[:unclosed] have had their window close
        self.emitted: Any = None         # the journal node handed on last
        self.stats = {"wakes": 0, "peak_hypotheses": 1, "peak_parked": 0, "width_cuts": 0,
                      "parked_dropped": 0, "budget_cuts": 0, "searches_suspended": 0,
                      "depth_first_runs": 0}

    # ---- input ------------------------------------------------------------------
    def feed(self, op) -> None:
        i = self.end
        self.buf.append(op)
        self.end = i + 1
        if op.block is not None and op.kind == ALLOC:
            self._mark_block(op, i)
        if i - self.hyps[0].pos >= 2 * self.reserve:
            self._advance(self.end - self.reserve)

    def finish(self) -> None:
        self._advance(self.end)
        del self.parked[:]
        self.unclosed = 0
        self._emit()

    @property
    def model(self):
        return self.hyps[0].model

    @property
    def listener(self):
        return self._listener

    @listener.setter
    def listener(self, fn) -> None:
        self._listener = fn
        for h in getattr(self, "hyps", ()):
            if h.direct is not None:
                h.direct = fn if fn is not None else _ignore

    def _mark_block(self, op, i) -> None:
        """The interrupt's operations just before this allocation (not yet
        run by any hypothesis) make the allocation's place a choice."""
        cpu, pid, first = op.block
        lo = max(min(h.pos for h in self.hyps), self.base)
        j = i - 1
        buf, base = self.buf, self.base
        while j >= lo:
            o = buf[j - base]
            if o.cpu != cpu or o.pid != pid or not o.irq or o.line < first:
                break
            j -= 1
        k = i - 1 - j
        if k:
            self.block_starts[j + 1] = (i, k)

    # ---- running ------------------------------------------------------------------
    def _advance(self, limit) -> None:
        while self._round(limit):
            pass
        self._trim()

    def _round(self, limit) -> bool:
        """The active hypothesis to its next allocation (parking the
        alternatives of its choices); on a mismatch, the parked ones decide."""
        h = self.hyps[0]
        r = self._run(h, limit, self.hyps, 0)
        if r is None:
            return False
        last = r[1]                     # the allocation it ran to
        if not r[0]:
            self.ck = None              # the active hypothesis changes
            last = None
            alive, root, furthest = self._wake(h.nalloc)
            if alive:
                h = alive[0]
                # the others wait, parked, in case the record turns against h
                for other in reversed(alive[1:]):
                    self._park_hyp(other, root)
            elif furthest is not None:
                # nothing reproduces every allocation: the hypothesis that
                # got furthest goes on, its first mismatch counted
                h, op, answer = furthest
                _divergence(h, op, answer)
                self._diverged(h)
            else:
                # nothing reproduces this allocation: the most preferred goes
                # on, and the divergence is counted in it
                _divergence(h, r[1], r[2])
                self._diverged(h)
            self.hyps = [h]
        if self.parked:
            self._expire(last)
        self._emit()
        return True

    def _diverged(self, h) -> None:
        """After a divergence the replay is off the record until it finds its
        way back: searching at every allocation then would cost much and
        decide little, so choices take their first candidate for a while --
        256 allocations, 1024 when divergences come in clusters."""
        last = self.last_divergence
        self.last_divergence = h.nalloc
        quiet = 256
        if last is not None and h.nalloc - last < 300:
            self.clustered += 1
            if self.clustered >= 4:
                quiet = 1024
        else:
            self.clustered = 0
        self.quiet_until = h.nalloc + quiet
        self.stats["searches_suspended"] += 1

    def _wake(self, target):
        """Wakes parked alternatives, the newest first -- the newest one,
        then the two before it, then four more... -- each batch run in
        lockstep up to the allocation that failed (`target` allocations
        done) and `lookahead` allocations beyond it. The first batch with
        survivors (those reproducing every allocation on the way) ends the
        search; older parked choices stay parked."""
        parked = self.parked
        furthest = None
        if not parked:
            return [], None, furthest
        st = self.stats
        st["wakes"] += 1
        model = self.hyps[0].model
        saved = list(parked)
        batch = 1
        while parked:
            woken = parked[-batch:]
            del parked[-batch:]
            self.unclosed = min(self.unclosed, len(parked))
            hyps = []
            for p in reversed(woken):
                cands = [None] if p.kind is None else range(p.next, p.ncand)
                for cand in cands:
                    h = self._rebuild(p, model)
                    h.todo = None if p.kind is None else (p.kind, p.where, cand)
                    hyps.append(h)
            alive, dead = self._lockstep(hyps, target)
            if alive:
                return alive, woken[0].root, None
            if dead is not None and (furthest is None or dead[0].nalloc > furthest[0].nalloc):
                furthest = dead
            batch *= 2
        # nothing side by side reproduces the record: the same choices once
        # more, depth first, which reaches combinations the width cut
        self.parked, self.unclosed = saved, 0
        found, deeper = self._depth_first(target, model)
        if found is not None:
            return [found], None, None
        self.parked = []
        if deeper is not None and (furthest is None or deeper[0].nalloc > furthest[0].nalloc):
            furthest = deeper
        return [], None, furthest

    def _depth_first(self, target, model):
        """After the side-by-side search found nothing: tries the parked
        alternatives one at a time, the newest first, each run alone as the
        active hypothesis is -- its own choices parked on the same stack --
        up to the allocation that failed (`target` allocations done) and
        `lookahead` beyond it. Most alternatives fail at their first
        allocation, so this reaches a choice made hundreds of allocations
        back (the timer's moment in a burst of frees decides when the ring
        next fills) at a few allocations per alternative, where copies side
        by side are cut to the width first. Returns the hypothesis found,
        the parked choices left behind it; or None and the alternative that
        got furthest, the parked choices as they were."""
        goal = target + self.lookahead
        budget = self.budget
        st = self.stats
        saved = self.parked
        stack = [(p, p.next) for p in saved]
        furthest = None
        while stack and budget > 0:
            p, cand = stack.pop()
            if p.kind is not None and cand + 1 < p.ncand:
                stack.append((p, cand + 1))
            h = self._rebuild(p, model)
            h.todo = None if p.kind is None else (p.kind, p.where, cand)
            self.hyps, self.parked, self.ck = [h], [], None
            st["depth_first_runs"] += 1
            ok = True
            while h.nalloc < goal:
                r = self._run(h, self.end, self.hyps, 0)
                if r is None:
                    break               # every operation fed so far is done
                budget -= 1
                if not r[0]:
                    ok = False
                    if h.nalloc > target and (furthest is None or h.nalloc > furthest[0].nalloc):
                        furthest = (h, r[1], r[2])
                    break
            if ok and h.nalloc >= target:
                for q, c in stack:
                    q.next = c
                self.parked = [q for q, _ in stack] + self.parked
                self.unclosed = 0
                return h, None
            stack.extend((q, q.next) for q in self.parked)
        if budget <= 0:
            st["budget_cuts"] += 1
        self.parked, self.ck = saved, None
        return None, furthest

    def _rebuild(self, p, model):
        """A hypothesis in the state parked in p."""
        h = _Hyp.__new__(_Hyp)
        h.direct = None
        if p.ck is None:
            h.model = model.restored(p.snap)
            h.set_fields(p.fields)
            return h
        ck = p.ck
        h.model = model.restored(ck.snap)
        h.set_fields(ck.fields)
        entries = []
        n = p.fields[9]
        while n is not ck.node:
            entries.append(n)
            n = n[0]
        m, got = h.model, h.got
        for _, kind, op, x, _ in reversed(entries):
            if kind == FIRE:
                m.fire(op.ts)
                continue
            if kind == TRIM:
                m.run_trim(*x)
                continue
            m.at(op.ts)
            a = op.a
            if kind == ALLOC:
                got[a.id] = m.alloc(op.dev, a, op.cpu)
            else:
                g = got.pop(a.id, 0)
                if g:
                    m.free(g, a.size, op.cpu, op.ts)
        got = h.got
        h.set_fields(p.fields[:8] + (got,) + p.fields[9:])
        return h

    def _lockstep(self, hyps, target):
        """(the hypotheses reproducing every allocation up to target +
        lookahead, or as far as the operations fed so far go; the one that
        died furthest beyond target, as (hyp, op, answer), or None)."""
        goal = target + self.lookahead
        st = self.stats
        dead = None
        steps = 0
        while hyps:
            if len(hyps) > self.width:
                st["width_cuts"] += len(hyps) - self.width
                del hyps[self.width:]
            if len(hyps) > st["peak_hypotheses"]:
                st["peak_hypotheses"] = len(hyps)
            results = self._run_all(hyps, self.end, goal)
            if results is None:
                break                   # every operation fed so far is done
            steps += len(results)
            if steps > self.budget:
                st["budget_cuts"] += 1
                return [], dead
            for h, r in results:
                if r is not None and not r[0] and h.nalloc > target and \
                        (dead is None or h.nalloc > dead[0].nalloc):
                    dead = (h, r[1], r[2])
            hyps = [h for h, r in results if r is None or r[0]]
            if len(hyps) > 1:
                hyps = _merge(hyps)
        return [h for h in hyps if h.nalloc >= target], dead

    def _run_all(self, hyps, limit, goal):
        """Runs each hypothesis below `goal` allocations (and the copies its
        choices make) to its next allocation: [(hyp, result)] in order of
        preference, or None when none got to one."""
        out = []
        progress = False
        i = 0
        while i < len(hyps):
            h = hyps[i]
            r = None
            if h.nalloc < goal:
                r = self._run(h, limit, hyps, i)
                progress = progress or r is not None
            out.append((h, r))
            i += 1
        return out if progress else None

    def _park_hyp(self, h, root) -> None:
        """Parks a whole hypothesis, to be resumed as it is; `root` is a
        journal node it and the active hypothesis both descend from."""
        p = _Parked()
        p.snap, p.ck = h.model.snapshot(), None
        p.fields = h.fields()
        p.kind, p.where, p.next, p.ncand = None, None, 0, 1
        p.armings = h.armings
        last = _last_alloc(h)
        p.close_ts = last.ts if last is not None else 0.0
        p.close_m = None
        p.root = root
        self.parked.append(p)

    def _run(self, h, limit, hyps, index):
        """Runs h up to and including its next allocation; None if it
        reaches `limit` first, else (matched, op, answer)."""
        if h.todo is not None:
            kind, where, cand = h.todo
            h.todo = None
            r = self._take(h, kind, where, cand, hyps, index)
            if r is not None:
                return r
        buf, base, starts = self.buf, self.base, self.block_starts
        m = h.model
        while True:
            if h.pending_i < len(h.pending):
                op = h.pending[h.pending_i]
                h.pending_i += 1
            else:
                if h.pending:
                    h.pending, h.pending_i = (), 0
                p = h.pos
                if p >= limit:
                    return None
                if p in starts and p != h.irq_done:
                    self._choose(h, _IRQ_CHOICE, p, starts[p][1] + 1, hyps, index)
                    continue
                h.pos = p + 1
                op = buf[p - base]
            if m.trim is None and m.timer is None:
                r = _apply(h, op)       # no deferred work can come before it
            else:
                r = self._step(h, op, hyps, index, False)
            if r is not None:
                return r

    def _step(self, h, op, hyps, index, trim_decided):
        """Deferred work that may come before op -- the depot's trim, the
        flush queue's timer -- then op itself."""
        m = h.model
        tr = m.trim
        if tr is not None and not trim_decided:
            since = op.ts - tr[0]
            if since >= self.timer.trim_earliest:
                if since > self.timer.trim_latest + tr[2]:
                    _trim(h, True, op)
                else:
                    return self._choose(h, _TRIM_CHOICE, op, 2, hyps, index)
        t = m.timer
        if t is not None:
            since = op.ts - t[0]
            if since >= self.timer.earliest:
                if since > self.timer.latest:
                    _fire(h, True, op)
                else:
                    return self._choose(h, _FIRE_CHOICE, op, 2, hyps, index)
        return _apply(h, op)

    def _choose(self, h, kind, where, ncand, hyps, index):
        """Takes candidate 0 in h. The others are parked while h runs alone;
        among several hypotheses they run at once, as copies placed after h
        in order of preference."""
        if hyps is self.hyps and h.nalloc < self.quiet_until:
            pass                        # not searching for now: candidate 0 only
        elif hyps is self.hyps:
            if h.direct is not None:
                # from here on results wait in the journal until final
                h.direct = None
                h.journal = self.emitted = [None, None, None, None, 0]
            ck = self.ck
            if ck is None or ck.parks >= self.checkpoint_every:
                ck = self.ck = _Checkpoint()
                ck.snap, ck.fields, ck.node, ck.parks = h.model.snapshot(), h.fields(), \
                    h.journal, 0
            ck.parks += 1
            p = _Parked()
            p.snap, p.ck = None, ck
            p.fields = h.light_fields()
            p.kind, p.where, p.next, p.ncand = kind, where, 1, ncand
            p.armings = h.armings
            if kind == _IRQ_CHOICE:
                p.close_ts = self.buf[self.block_starts[where][0] - self.base].ts
            elif kind == _FIRE_CHOICE:
                p.close_ts = h.model.timer[0] + self.timer.latest
            else:
                p.close_ts = h.model.trim[0] + self.timer.trim_latest + h.model.trim[2]
            p.close_m = None
            p.root = ck.node            # everything later descends from it
            self.parked.append(p)
            if len(self.parked) > self.stats["peak_parked"]:
                self.stats["peak_parked"] = len(self.parked)
        else:
            clones = []
            for cand in range(1, ncand):
                k = h.copy()
                k.todo = (kind, where, cand)
                clones.append(k)
            hyps[index + 1:index + 1] = clones
            # the least preferred beyond `width` go now, not at the end of the
            # round: a burst of frees inside a timer window is a choice at
            # every gap, and each copy holds a whole domain state
            cut = len(hyps) - max(self.width, index + 1 + len(clones))
            if cut > 0:
                self.stats["width_cuts"] += cut
                del hyps[-cut:]
        return self._take(h, kind, where, 0, hyps, index)

    def _take(self, h, kind, where, cand, hyps, index):
        """Candidate `cand` of a choice. The timer: 0 fires before op
        `where`, 1 lets `where` run first (the next gap decides again); the
        depot's trim work the same. An interrupt block starting at index
        `where`: 0 keeps the trace's order; 1 moves the allocation before
        the whole block, 2.. before its later parts (the last operation,
        the last two...)."""
        if kind == _FIRE_CHOICE:
            if cand == 0:
                _fire(h, False, where)
            else:
                h.fire_gaps += 1
            return _apply(h, where)
        if kind == _TRIM_CHOICE:
            if cand == 0:
                _trim(h, False, where)
            else:
                h.trim_gaps += 1
            return self._step(h, where, hyps, index, True)
        alloc_i, k = self.block_starts[where]
        h.c[IRQ_CHOICES] += 1
        if cand == 0:
            h.irq_done = where
            return None
        h.c[IRQ_RECORD] += 1
        q = 0 if cand == 1 else k - cand + 1        # the allocation goes before block[q:]
        base = self.base
        block = self.buf[where - base:alloc_i - base]
        h.pending = tuple(block[:q]) + (self.buf[alloc_i - base],) + tuple(block[q:])
        h.pending_i = 0
        h.pos = alloc_i + 1
        return None

    def _expire(self, last=None) -> None:
        """Drops parked choices the record has confirmed long enough; `last`
        is the active hypothesis' latest allocation when the caller knows it."""
        parked = self.parked
        if not parked:
            return
        h = self.hyps[0]
        m = h.c[MATCHED]
        if last is None:
            last = _last_alloc(h)
        if last is not None:
            ts = last.ts
            i = self.unclosed
            while i < len(parked) and ts > parked[i].close_ts:
                parked[i].close_m = m - 1
                i += 1
            self.unclosed = i
        n = max(0, len(parked) - self.max_parked)
        look, armings = self.lookahead, h.armings
        # a choice can be revised until `depth` newer timer windows or trims
        # came (when the trace has any), and never while a trim is pending: a
        # trim re-arms from the moment it ran, so the next one tells
        depth = self.depth if h.model.lazy or armings else 0
        if h.model.trim is None:
            while n < len(parked):
                p = parked[n]
                if p.close_m is None or m - p.close_m < look or armings - p.armings < depth:
                    break
                n += 1
        if n:
            self.stats["parked_dropped"] += n
            del parked[:n]
            self.unclosed = max(0, self.unclosed - n)

    # ---- what is final ----------------------------------------------------------------
    def _emit(self) -> None:
        """Hands on the journal entries no alternative can change any more."""
        parked = self.parked
        if parked:
            node = parked[0].root
        else:
            h = self.hyps[0]
            node = h.journal
            self.ck = None              # what it holds is about to be handed on
            if h.direct is None:
                h.direct = self.listener if self.listener is not None else _ignore
        stop = self.emitted
        if node is stop or node is None:
            return
        stop_depth = stop[4] if stop is not None else 0
        entries = []
        n = node
        while n is not None and n[4] > stop_depth:
            entries.append(n)
            n = n[0]
        node[0] = None              # nothing before it is needed again
        self.emitted = node
        listener = self.listener
        if listener is not None:
            for e in reversed(entries):
                if e[2] is not None:
                    listener(e[1], e[2], e[3])

    def _trim(self) -> None:
        """Drops operations no hypothesis or parked choice will look at again."""
        keep = min(h.pos for h in self.hyps)
        if self.parked:
            keep = min(keep, self.parked[0].fields[0])
        drop = keep - self.base - self.reserve
        if drop > 4096:
            del self.buf[:drop]
            self.base += drop
            for k in [k for k in self.block_starts if k < self.base]:
                del self.block_starts[k]

    # ---- results ------------------------------------------------------------------
    @property
    def counts(self):
        c = self.hyps[0].c
        return {"matched": c[MATCHED], "mismatched": c[MISMATCHED], "failed": c[FAILED],
                "interrupt_choices": c[IRQ_CHOICES], "interrupt_orders_decided": c[IRQ_RECORD],
                "fires_single": c[FIRE_SINGLE], "fires_earliest": c[FIRE_EARLIEST],
                "fires_decided": c[FIRE_RECORD], "trims_single": c[TRIM_SINGLE],
                "trims_earliest": c[TRIM_EARLIEST], "trims_decided": c[TRIM_RECORD]}

    @property
    def first_divergence(self):
        return self.hyps[0].first_divergence


def _last_alloc(h):
    """The hypothesis' most recent allocation (its op), or None."""
    n = h.journal
    while n is not None:
        if n[1] == ALLOC:
            return n[2]
        n = n[0]
    return None


def _merge(hyps):
    """Drops the hypotheses in the same state as a preferred one."""
    seen: dict[Any, Any] = {}
    out = []
    for h in hyps:
        if h.todo is None:
            k = h.key()
            same = seen.get(k)
            if same is None:
                seen[k] = [h]
            else:
                # the domain states decide (the C core's words): costly, so
                # only among hypotheses equal in everything else
                fp = h.model.fingerprint()
                if any(o.model.fingerprint() == fp for o in same):
                    continue
                same.append(h)
        out.append(h)
    return out


def _ignore(kind, op, x) -> None:
    pass


def _log(h, kind, op, x) -> None:
    d = h.direct
    if d is not None:
        d(kind, op, x)
        return
    j = h.journal
    h.journal = [j, kind, op, x, (j[4] if j is not None else 0) + 1]


def _apply(h, op):
    """One operation in hypothesis h; for an allocation (matched, op, answer)."""
    m = h.model
    ts = op.ts
    if ts > m.now or m.origin is None:
        m.at(ts)                    # (the clock cannot have moved otherwise)
    a = op.a
    if op.kind == ALLOC:
        got = m.alloc(op.dev, a, op.cpu)
        h.got[a.id] = got
        h.nalloc += 1
        d = h.direct
        if d is not None:
            d(ALLOC, op, got)
        else:
            _log(h, ALLOC, op, got)
        answer = got + a.offset if got else 0
        if answer == a.expected:
            h.c[MATCHED] += 1
            return (True, op, answer)
        return (False, op, answer)
    g = h.got.pop(a.id, 0)
    d = h.direct
    if d is not None:
        d(FREE, op, g)
    else:
        _log(h, FREE, op, g)
    if g:
        armed = m.timer
        m.free(g, a.size, op.cpu, op.ts)
        if armed is None and m.timer is not None:
            h.fire_gaps = 0
            h.armings += 1
    return None


def _count_moment(c, gaps, forced, single, earliest, record) -> None:
    """A deferred run counted by its moment: the only one possible (forced
    with no gap passed), the earliest, or a later one the record chose."""
    if gaps == 0:
        c[single if forced else earliest] += 1
    else:
        c[record] += 1


def _fire(h, forced, before) -> None:
    _count_moment(h.c, h.fire_gaps, forced, FIRE_SINGLE, FIRE_EARLIEST, FIRE_RECORD)
    t0 = h.model.timer[0]
    h.model.fire(before.ts)
    _log(h, FIRE, before, t0)


def _trim(h, forced, before) -> None:
    """The depot's trim work, run in the gap before op `before`."""
    _count_moment(h.c, h.trim_gaps, forced, TRIM_SINGLE, TRIM_EARLIEST, TRIM_RECORD)
    h.trim_gaps = 0
    h.armings += 1
    m = h.model
    k = m.trim[1]
    # it ran after the last operation (and not before it fell due), before op
    start = m.now
    m.run_trim(k, start, before.ts)
    _log(h, TRIM, before, (k, start, before.ts))


def _divergence(h, op, answer) -> None:
    a = op.a
    h.c[MISMATCHED] += 1
    if not answer:
        h.c[FAILED] += 1
    if h.first_divergence is None:
        h.first_divergence = {"line": a.report_line, "expected": a.expected, "got": answer,
                              "call": a.call}
