"""Every answer recorded from the kernel's own iova.c (6.12, 6.1 and 4.10) must
come out of the C core unchanged: returned pfns, find/reserve results, the
cache pointers and max32_alloc_size (`state`), and the whole range list
(`dump`), under both search implementations."""
import os

import pytest

from vectors import VECTOR_DIR, VECTOR_FILES, load_sequences, replay

from pyiova import IovaDomain

SEQUENCES = [seq for name in VECTOR_FILES
             for seq in load_sequences(os.path.join(VECTOR_DIR, name))]


def test_the_recordings_are_all_here():
    kernels = {seq.kernel for seq in SEQUENCES}
    assert kernels == {"6.12", "6.1", "4.10"}
    assert sum(len(seq.ops) for seq in SEQUENCES if seq.kernel != "6.1") > 170_000
    # the 6.1 recording's bursts fill the depot: 500,000 fast calls and more
    assert sum(len(seq.ops) for seq in SEQUENCES if seq.kernel == "6.1") > 500_000


@pytest.mark.parametrize("search", ["augmented", "linear"])
@pytest.mark.parametrize("seq", SEQUENCES, ids=lambda s: s.name)
def test_kernel_answers_replay_exactly(seq, search):
    mismatch = replay(seq, lambda **kw: IovaDomain(search=search, **kw), check_every=50)
    assert mismatch is None, (
        "%s line %d: %s => kernel said %r, pyiova said %r"
        % (os.path.basename(seq.path), mismatch.line, mismatch.command,
           mismatch.expected, mismatch.got))
