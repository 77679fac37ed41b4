"""`fxlens.pool`: worker processes give the results of one process, in order, and their errors."""

import math

import pytest

from fxlens.pool import ordered_map


def test_ordered_map_in_processes_equals_map():
    items = [float(i) for i in range(7)]
    assert list(ordered_map(math.sqrt, items, workers=2)) == [math.sqrt(x) for x in items]
    assert list(ordered_map(math.sqrt, items, workers=1)) == [math.sqrt(x) for x in items]
    assert list(ordered_map(math.sqrt, [], workers=2)) == []


def test_ordered_map_raises_a_workers_error_in_order():
    got = []
    with pytest.raises(ValueError, match="math domain error"):
        for y in ordered_map(math.sqrt, [4.0, 9.0, -1.0, 16.0], workers=2):
            got.append(y)
    assert got == [2.0, 3.0]


def test_ordered_map_refuses_fewer_than_one_worker():
    from fxlens.errors import ParameterError

    with pytest.raises(ParameterError, match="workers must be >= 1"):
        list(ordered_map(math.sqrt, [1.0], workers=0))
