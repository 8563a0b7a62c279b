"""Head reductions against NumPy written out per element."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnlab.viz.aggregate import as_weights, head_max, head_mean, reduce_heads


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5),
       st.booleans())
def test_mean_and_max_over_heads(b, h, t, s, batched):
    rng = np.random.default_rng(b * 100 + h * 10 + t)
    w = rng.random((b, h, t, s))
    if not batched:
        w = w[0]
    # Independent reference: loop over heads.
    heads = [w[..., i, :, :] for i in range(h)]
    want_mean = sum(heads) / float(h)
    want_max = heads[0]
    for x in heads[1:]:
        want_max = np.where(x > want_max, x, want_max)
    np.testing.assert_allclose(head_mean(w), want_mean, rtol=1e-12)
    np.testing.assert_array_equal(head_max(w), want_max)


def test_integer_weights_become_float():
    assert as_weights([[1, 0], [0, 1]]).dtype == np.float32


def test_bad_reduction_is_named():
    with pytest.raises(ValueError, match="'median'"):
        reduce_heads(np.ones((2, 3, 3)), "median")


def test_rank_two_has_no_head_axis():
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        head_mean(np.ones((3, 3)))


def test_rank_five_is_rejected():
    with pytest.raises(ValueError, match=r"\(1, 1, 1, 2, 2\)"):
        as_weights(np.ones((1, 1, 1, 2, 2)))


def test_empty_weights_are_rejected():
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        as_weights(np.ones((0, 3)))


def test_non_numeric_weights_are_rejected():
    with pytest.raises(TypeError, match="dtype <U1"):
        as_weights([["a", "b"]])
