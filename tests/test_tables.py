"""The one text-table layout (pyiova.tables.align) every printed table uses:
the simulation report's, trace replay's and the sweep summary's."""
from pyiova.sim import SimResult
from pyiova.sim_report import results_table
from pyiova.tables import align, text_table


def test_columns_are_as_wide_as_their_widest_cell_two_spaces_apart():
    text = align(["a", "bbb", "c"], [["xx", "y", "1"], ["x", "yyyy", "22"]], right=(2,))
    assert text.splitlines() == [
        "a   bbb    c",
        "xx  y      1",
        "x   yyyy  22",
    ]


def test_a_rule_under_the_header_and_an_indent():
    text = align(["name", "n"], [["ab", "7"]], right=(1,), rule=True, indent="  ")
    assert text.splitlines() == ["  name  n", "  ----  -", "  ab    7"]


def test_a_short_row_ends_in_a_cell_that_runs_on_and_sets_no_width():
    note = "a long reason that is wider than every column"
    text = align(["policy", "verdict", "ops", "maps"],
                 [["iova", "ok", "12", "3"], ["msi", "n/a", note]], right=(2, 3))
    assert text.splitlines() == [
        "policy  verdict  ops  maps",
        "iova    ok        12     3",
        "msi     n/a      " + note,
    ]


def test_trailing_blanks_are_dropped():
    assert align(["a", "b"], [["x", ""]]) == "a  b\nx"


def test_text_table_right_aligns_columns_of_numbers_only():
    text = text_table(["what", "n"], [["one", 1], ["many", 12345], ["none", None]])
    assert text.splitlines() == ["what       n", "one        1", "many  12,345", "none       -"]


def test_a_policy_that_could_not_run_shows_its_reason_across_the_columns():
    ran = SimResult("usb", "iova", "generic", 1, ops=10, maps=3, ops_per_sec=2000.0)
    not_run = SimResult("usb", "iova-lazy", "ipmmu", 1, applicable=False, note="no queue")
    lines = results_table([ran, not_run]).splitlines()
    assert lines[0].split() == ["policy", "verdict", "ops/s", "ops", "maps", "fails", "1st",
                                "fail", "peak", "live", "frag", "syncs", "flushes", "hits",
                                "misses", "stale", "faults"]
    assert lines[1].split()[:5] == ["iova", "ok", "2,000", "10", "3"]
    # the reason starts where the ops/s column starts
    assert lines[2] == "iova-lazy  n/a      no queue"
    assert lines[0].index("ops/s") == lines[2].index("no queue")
