"""Reader and replayer for the kernel test vectors.

The vectors (``tests/data/kernel-*.txt.gz``, described in the README
there) are answers recorded from the kernel's own iova.c on random
call sequences.  Each line is ``COMMAND => ANSWER``; ``# sequence N`` starts
an independent sequence whose first command is ``init``.

``replay(seq, make_domain)`` drives any object with the ReferenceDomain /
IovaDomain API through one sequence and reports the first answer that
differs, so the same recordings check both the reference model and the C
core.
"""

import gzip
import os
from collections import namedtuple

from reference import (IovaExhausted, IovaInvalidFree, IovaNotFound,
                       IovaValueError)

VECTOR_DIR = os.environ.get("PYIOVA_VECTOR_DIR",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
VECTOR_FILES = ("kernel-6.12.txt.gz", "kernel-6.1.txt.gz", "kernel-4.10.txt.gz")

# One recorded call: the command word, its integer arguments, the recorded
# answer text and the line number in the (decompressed) file.
Op = namedtuple("Op", "cmd args expected line")
Mismatch = namedtuple("Mismatch", "line command expected got")


class Sequence:
    """One independent recorded sequence."""

    def __init__(self, path, number, kernel, line):
        self.path = path
        self.number = number        # the N of "# sequence N"
        self.kernel = kernel        # "6.12", "6.1" or "4.10"
        self.line = line            # line of the "# sequence" comment
        self.init_args = None       # the integers of the init command
        self.ops = []

    @property
    def name(self):
        return "%s:%d" % (os.path.basename(self.path), self.number)

    def domain_kwargs(self):
        """Keyword arguments for ReferenceDomain / IovaDomain."""
        a = self.init_args
        kw = {"granule": a[0], "start_pfn": a[1], "ncpus": a[2],
              "kernel": self.kernel}
        if self.kernel == "4.10":
            # 4.10's init also records PAGE_SIZE (only used by the kernel
            # for a sanity check of the granule) and the inclusive 32-bit
            # boundary pfn.
            kw["dma_32bit_pfn"] = a[4]
        return kw

    def __repr__(self):
        return "<Sequence %s, %d ops>" % (self.name, len(self.ops))


_KERNEL_WORDS = ("6.12", "6.1", "4.10")


def _kernel_of(path, header):
    # whole words only: "6.1" is a prefix of "6.12"
    words = header.split()
    for word in _KERNEL_WORDS:
        if "kernel" in words and word in words:
            return word
    name = os.path.basename(path)
    for word in _KERNEL_WORDS:
        if "-%s." % word in name:
            return word
    raise ValueError("cannot tell which kernel %s was recorded from" % path)


def iter_sequences(path):
    """Yield every Sequence of a vector file (plain or gzip)."""
    opener = gzip.open if path.endswith(".gz") else open
    kernel = None
    seq = None
    with opener(path, "rt") as f:
        for lineno, text in enumerate(f, 1):
            text = text.rstrip("\n")
            if not text.strip():
                continue
            if text.startswith("#"):
                if kernel is None:
                    kernel = _kernel_of(path, text)
                words = text[1:].split()
                if len(words) == 2 and words[0] == "sequence":
                    if seq is not None:
                        yield seq
                    seq = Sequence(path, int(words[1]), kernel, lineno)
                continue
            command, sep, answer = text.partition(" => ")
            if not sep:
                raise ValueError("%s:%d: no ' => ' in %r" % (path, lineno, text))
            words = command.split()
            cmd, args = words[0], tuple(int(w) for w in words[1:])
            if seq is None:
                raise ValueError("%s:%d: command before '# sequence'"
                                 % (path, lineno))
            if cmd == "init":
                if seq.init_args is not None or seq.ops:
                    raise ValueError("%s:%d: init in the middle of sequence %d"
                                     % (path, lineno, seq.number))
                if answer.strip() != "ok":
                    raise ValueError("%s:%d: init answered %r"
                                     % (path, lineno, answer))
                seq.init_args = args
                continue
            if seq.init_args is None:
                raise ValueError("%s:%d: sequence %d has no init"
                                 % (path, lineno, seq.number))
            seq.ops.append(Op(cmd, args, answer.strip(), lineno))
    if seq is not None:
        yield seq


def load_sequences(path):
    return list(iter_sequences(path))


def format_state(state, kernel):
    """A state() dict in the vectors' text form."""
    if kernel != "4.10":
        return "cached %d cached32 %d max32 %d dma32 %d" % (
            state["cached"], state["cached32"], state["max32"], state["dma32"])
    c32 = state["cached32"]
    return "cached32 %s dma32 %d" % ("none" if c32 is None else c32,
                                     state["dma32"])


def format_ranges(ranges):
    return " ".join("%d-%d" % r for r in ranges) or "empty"


def _error_text(exc):
    return "error %s: %s" % (type(exc).__name__, exc)


def _answer(dom, op, kernel):
    """Perform one recorded call on `dom` and return its answer in the
    vectors' text form."""
    cmd, a = op.cmd, op.args
    if cmd in ("alloc", "alloc_fast"):
        try:
            if cmd == "alloc":
                pfn = dom.alloc(a[0], a[1], bool(a[2]))
            else:
                pfn = dom.alloc_fast(a[0], a[1], flush_rcache=bool(a[2]),
                                     cpu=a[3])
        except IovaExhausted:
            return "0"
        return str(pfn)
    if cmd in ("free", "free_fast"):
        try:
            if cmd == "free":
                dom.free(a[0])
            else:
                dom.free_fast(a[0], a[1], cpu=a[2])
        except IovaNotFound:
            return "missing"
        except (IovaInvalidFree, IovaValueError):
            return "invalid"
        return "ok"
    if cmd == "find":
        r = dom.find(a[0])
        return "none" if r is None else "%d %d" % tuple(r)
    if cmd == "reserve":
        try:
            r = dom.reserve(a[0], a[1])
        except IovaValueError:
            return "invalid"
        return "%d %d" % tuple(r)
    if cmd == "flush_cpu":
        dom.flush_cpu(a[0])
        return "ok"
    if cmd == "flush_global":
        dom.flush_depot()
        return "ok"
    if cmd == "flush_all":
        dom.flush_rcaches()
        return "ok"
    if cmd == "depot_work":
        return str(dom.run_pending_work())
    if cmd == "state":
        return format_state(dom.state(), kernel)
    if cmd == "dump":
        return format_ranges(dom.ranges())
    raise ValueError("line %d: unknown command %r" % (op.line, cmd))


def _same(expected, got):
    if expected == got:
        return True
    # The recording marks every refused call `invalid`; pyiova reports a
    # pfn that no range contains more precisely, as IovaNotFound.
    if expected == "invalid" and got == "missing":
        return True
    # A reserve the kernel rejects (pfn beyond 64-bit byte addresses) is a
    # ValueError in pyiova, the same as lo > hi.
    if expected == "fail" and got == "invalid":
        return True
    return False


def replay(seq, make_domain, check_every=0):
    """Drive one sequence through ``make_domain(**seq.domain_kwargs())``.

    Returns the first Mismatch(line, command, expected, got), or None when
    every answer matches.  An unexpected exception counts as a mismatch
    (its text is the `got`).  With check_every > 0 the domain's check()
    runs after every that many operations and at the end.
    """
    dom = make_domain(**seq.domain_kwargs())
    for n, op in enumerate(seq.ops, 1):
        try:
            got = _answer(dom, op, seq.kernel)
        except Exception as exc:        # report, do not hide, surprises
            got = _error_text(exc)
        if not _same(op.expected, got):
            command = " ".join([op.cmd] + [str(x) for x in op.args])
            return Mismatch(op.line, command, op.expected, got)
        if check_every and n % check_every == 0:
            dom.check()
    if check_every:
        dom.check()
    return None
