import math

import numpy as np
import pytest

from attnlab.validation import (
    check_bool,
    check_choice,
    check_non_negative_int,
    check_number,
    check_positive_int,
    check_rate,
)


def test_positive_int_accepts_python_ints_only():
    assert check_positive_int("n", 3) == 3
    for bad in (0, -1, 2.0, True, np.int64(3), "3", None):
        with pytest.raises(ValueError, match=r"^n must be a positive integer, got "):
            check_positive_int("n", bad)


def test_non_negative_int_accepts_zero():
    assert check_non_negative_int("step", 0) == 0
    assert check_non_negative_int("step", 7) == 7
    for bad in (-1, 1.0, False, "0"):
        with pytest.raises(ValueError, match=r"^step must be an integer >= 0, got "):
            check_non_negative_int("step", bad)


def test_bool_refuses_truthy_values():
    assert check_bool("use_bias", False) is False
    for bad in (0, 1, "yes", None, np.bool_(True)):
        with pytest.raises(TypeError, match=r"^use_bias must be a bool, got "):
            check_bool("use_bias", bad)


def test_choice_names_the_choices_and_the_value():
    assert check_choice("score", "dot", ("dot", "general")) == "dot"
    with pytest.raises(ValueError, match=r"^score must be one of dot, general, got 'cos'$"):
        check_choice("score", "cos", ("dot", "general"))


@pytest.mark.parametrize("bounds, inside, outside, expected", [
    ({"above": 0}, [1e-9, 3, math.inf], [0, -1.0], "> 0"),
    ({"at_least": 0}, [0, 0.5], [-1e-9], ">= 0"),
    ({"above": 1}, [1.5, 10000], [1, 0.5], "> 1"),
    ({"above": 0, "at_most": 1}, [1, 0.25], [0, 1.01], r"in \(0, 1\]"),
    ({"above": 0, "below": 1}, [0.5], [0, 1], r"in \(0, 1\)"),
    ({"at_most": 2.5}, [-3, 2.5], [2.6], "<= 2.5"),
])
def test_number_bounds(bounds, inside, outside, expected):
    for value in inside:
        assert check_number("x", value, **bounds) == value
    for value in outside + [math.nan, True, "1", None]:
        with pytest.raises(ValueError, match=r"^x must be a number %s, got " % expected):
            check_number("x", value, **bounds)


def test_rate_is_half_open():
    assert check_rate("dropout", 0) == 0.0
    assert check_rate("dropout", 0.5) == 0.5
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\), got 1\.0$"):
        check_rate("dropout", 1.0)
