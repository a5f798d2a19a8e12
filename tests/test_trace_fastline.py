"""The one-pattern reader of common lines (trace/fastline.py) reads every
line it takes exactly as parse_line does, and leaves the rest to it."""
import gzip
import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pyiova.trace import Event, parse_line
from pyiova.trace.fastline import fast_event

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")


def _lines(name):
    p = os.path.join(DATA, name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8", errors="replace", newline="") as f:
        return list(f)


def _same(text, n=7):
    """fast_event agrees with parse_line on text; True when it took the line."""
    fast = fast_event(text, n)
    if fast is None:
        return False
    slow = parse_line(text, n)
    assert type(slow) is Event, (text, slow)
    assert fast == slow, text
    assert fast.to_dict() == slow.to_dict(), text
    assert list(fast.fields) == list(slow.fields), text
    return True


def test_every_line_of_the_captures():
    taken = 0
    total = 0
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".meta"):
            continue
        for n, text in enumerate(_lines(name), 1):
            total += 1
            taken += _same(text, n)
    # the real captures are mostly lines of the four common events
    assert taken > total // 2


_SAMPLES = [
    "    kworker/u4:1-29      [000] .....     1.000098: map: IOMMU: iova=0x00000000fffff000 - "
    "0x0000000100000000 paddr=0x0000000062673000 size=4096\n",
    "  <idle>-0     [001] d.h1.   2.563385: unmap: IOMMU: iova=0x00000000ffffd000 - "
    "0x00000000ffffe000 size=4096 unmapped_size=4096\r\n",
    " irq/26-AMD-Vi-154 [000] dNh..  1.698349: dma_map_page: 0000:00:01.0 dir=FROM_DEVICE "
    "dma_addr=ffffd000 size=4096 phys_addr=7ce1000 attrs=SKIP_CPU_SYNC|WEAK_ORDERING",
    "Web Content-4120 [003] ....  1.699738: dma_unmap_phys: 0000:00:01.0 dir=TO_DEVICE "
    "dma_addr=ffffd000 size=4096 attrs=",
]


def test_samples_are_taken():
    for text in _SAMPLES:
        assert _same(text), text


def test_what_it_must_refuse_goes_to_parse_line():
    refused = [
        # 2**64 and more, non-ASCII digits, a TGID column, a TID, no flags
        _SAMPLES[0].replace("size=4096", "size=18446744073709551616"),
        _SAMPLES[0].replace("0x0000000062673000", "0x\u0660\u0661"),
        _SAMPLES[0].replace("-29 ", "-29 (   29) "),
        _SAMPLES[0].replace("-29 ", "-29/30 "),
        _SAMPLES[0].replace(".....", ""),
        "# " + _SAMPLES[0],
        _SAMPLES[2].replace("dma_map_page", "dma_map_sg"),
    ]
    for text in refused:
        assert fast_event(text, 1) is None, text


_NOISE = st.sampled_from([" ", "  ", "\t", "-", "#", "0", "9", "a", "x", "=", ":", "[", "]",
                          ".", "h", "\u0660", "\r", "\n", "|", "{"])


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(_SAMPLES) - 1), st.lists(st.tuples(st.integers(0, 200), _NOISE),
                                                   max_size=3), st.integers(0, 3))
def test_mutated_lines_agree(k, edits, cut):
    """Whatever a line turns into, if the fast reader takes it, it reads
    it as parse_line does."""
    text = _SAMPLES[k]
    for pos, ch in edits:
        pos %= len(text) + 1
        if random.Random(pos).random() < 0.5:
            text = text[:pos] + ch + text[pos:]
        else:
            text = text[:pos] + ch + text[pos + 1:]
    if cut:
        text = text[:len(text) - cut]
    _same(text)
