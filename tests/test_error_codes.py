"""The C core's error codes: one family (csrc/iova_errors.h), and one table
(pyiova.error_codes) from each code to the exception it raises."""
import re

import pytest

from pyiova import IovaDomain, errors
from pyiova._pyiova import lib
from pyiova.allocators import PfnAllocator
from pyiova.error_codes import ERRORS, error, template
from pyiova.iotlb import FAULT_PERMISSION, FAULT_TRANSLATION, Iotlb
from pyiova.pgtable import IoPgtable

CODES = {name: getattr(lib, name) for name in dir(lib) if name.startswith("IOVA_E_")}


def test_every_code_is_distinct_negative_and_in_the_table():
    assert len(set(CODES.values())) == len(CODES)
    assert all(code < 0 for code in CODES.values())
    assert set(ERRORS) == set(CODES.values())


def test_every_code_raises_an_iova_error_whose_message_names_what_it_is_given():
    for name, code in CODES.items():
        cls, fmt = ERRORS[code]
        assert issubclass(cls, errors.IovaError), name
        for variant in (fmt if isinstance(fmt, dict) else {"": fmt}):
            cls, text = template(code, variant)
            fields = re.findall(r"%\((\w+)\)", text)
            values = {f: 0x1234 for f in fields}
            exc = error(code, variant, **values)
            assert type(exc) is cls and "(code" not in str(exc), (name, variant, str(exc))
            if fields:
                assert "0x1234" in str(exc) or "4660" in str(exc), (name, variant, str(exc))


def test_a_code_the_table_lacks_or_values_its_message_cannot_take_still_give_an_iova_error():
    exc = error(-1000, pfn=5)
    assert isinstance(exc, errors.IovaError) and "-1000" in str(exc) and "pfn=5" in str(exc)
    exc = error(lib.IOVA_E_NOTFOUND)                   # no pfn to name
    assert isinstance(exc, errors.IovaNotFound) and str(lib.IOVA_E_NOTFOUND) in str(exc)


def test_out_of_memory_is_iova_no_memory_a_memory_error():
    cls, _ = ERRORS[lib.IOVA_E_NOMEM]
    assert cls is errors.IovaNoMemory and issubclass(cls, MemoryError)
    assert ERRORS[lib.IOVA_E_TOOMANY][0] is errors.IovaNoMemory


def _inside_a_wraparound_range():
    w = PfnAllocator("wraparound")
    p, _ = w.alloc(4, 0xFFFFF)
    w.free(p + 1, 1)                      # no range handed out starts there


@pytest.mark.parametrize("call, code", [
    (lambda: IovaDomain(3), "IOVA_E_GRANULE"),
    (lambda: IovaDomain().free(0x777), "IOVA_E_NOTFOUND"),
    (lambda: _inside_a_wraparound_range(), "IOVA_E_NOTFOUND"),
    (lambda: IoPgtable().map(0x1000, 0x2000, 0), "IOVA_E_ALIGN"),
    (lambda: IoPgtable(ias=32).map(1 << 32, 0x2000, 4096), "IOVA_E_ADDR"),
    (lambda: Iotlb(8).invalidate_range(0, 0), "IOVA_E_ALIGN"),
    (lambda: Iotlb(8).access(IoPgtable(), 0x1000), "IOVA_E_FAULT"),
])
def test_each_structure_raises_its_codes_class(call, code):
    with pytest.raises(ERRORS[getattr(lib, code)][0]):
        call()


def test_a_batch_of_accesses_reports_faults_by_their_codes():
    pt = IoPgtable()
    pt.map(0x1000, 0x5000, 0x1000, prot=1)
    _, status = Iotlb(8).access_many(pt, [0x1000, 0x9000, 0x1000], [False, False, True])
    assert list(status)[1:] == [FAULT_TRANSLATION, FAULT_PERMISSION]
    assert (FAULT_TRANSLATION, FAULT_PERMISSION) == (lib.IOVA_E_FAULT, lib.IOVA_E_PERM)
