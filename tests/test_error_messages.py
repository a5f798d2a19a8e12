"""Errors made with IovaError.later(): the message is formatted when first
read, and reads the same everywhere a message is read."""
import pickle
import traceback

import pytest

from pyiova import IovaDomain, IovaExhausted
from pyiova.errors import IovaError, IovaNotFound


def full_domain():
    d = IovaDomain(4096, 1, ncpus=1)
    d.alloc(0xFFFF, 0xFFFF)
    return d


MESSAGE = "no free range of 3 pages at or below limit_pfn 0xffff"


def test_an_exhausted_domain_says_what_was_asked_for():
    d = full_domain()
    with pytest.raises(IovaExhausted, match="^no free range of 3 pages at or below limit_pfn "
                                            "0xffff$") as info:
        d.alloc(3, 0xFFFF)
    exc = info.value
    assert str(exc) == MESSAGE and exc.args == (MESSAGE,)
    assert repr(exc) == "IovaExhausted(%r)" % MESSAGE
    with pytest.raises(IovaExhausted, match="limit_pfn 0xffff"):
        d.alloc_fast(3, 0xFFFF, cpu=0)


@pytest.mark.parametrize("read", [str, repr, lambda e: e.args,
                                  lambda e: "".join(traceback.format_exception_only(type(e), e)),
                                  lambda e: pickle.loads(pickle.dumps(e)).args])
def test_whatever_reads_the_message_first_gets_it(read):
    exc = IovaExhausted.later("%d pages below %#x", 3, 0xFFFF)
    assert "3 pages below 0xffff" in str(read(exc))
    assert exc.args == ("3 pages below 0xffff",) and str(exc) == "3 pages below 0xffff"


def test_args_can_be_replaced_and_subclasses_keep_their_str():
    exc = IovaExhausted.later("%d", 1)
    exc.args = ("other",)
    assert str(exc) == "other"
    nf = IovaNotFound.later("no range at pfn %#x", 16)
    assert str(nf) == "no range at pfn 0x10"          # not quoted as KeyError would
    assert isinstance(nf, KeyError) and isinstance(nf, IovaError)
    assert str(IovaError("plain")) == "plain" and IovaError("a", 1).args == ("a", 1)
