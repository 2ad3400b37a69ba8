"""The order in which ``./dev test``'s workers get the suite's units of work."""
from __future__ import annotations

from tests.conftest import LONG_UNITS, long_units_first, unit_of
from tests.contract.layers import ROOT


def test_every_long_unit_is_a_test_module_of_the_suite():
    assert all((ROOT / unit).is_file() and unit.startswith("tests/") for unit in LONG_UNITS)


def test_long_units_go_first_longest_first_then_the_rest_by_number_of_tests():
    by_length = sorted(LONG_UNITS, key=LONG_UNITS.get)
    long_short, long_long = by_length[0], by_length[-1]
    nodeids = ["tests/a/test_one.py::t1",
               "tests/b/test_three.py::t1", "tests/b/test_three.py::t2", "tests/b/test_three.py::t3",
               f"{long_short}::t", f"{long_long}::t1", f"{long_long}::t2",
               "tests/inference/test_x.py::t", "tests/inference/test_y.py::t"]
    order = long_units_first(nodeids)
    units = list(dict.fromkeys(map(unit_of, order)))
    assert units == [long_long, long_short, "tests/b/test_three.py", "tests/inference/", "tests/a/test_one.py"]
    assert order[:2] == [f"{long_long}::t1", f"{long_long}::t2"]  # a unit's tests in collection order
    assert sorted(order) == sorted(nodeids)
