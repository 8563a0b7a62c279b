import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.positional.relative_position_bias import (
    RelativePositionBias,
    relative_position_bucket,
)
from tests.layers.layer_checks import check_layer


def t5_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """NumPy port of T5's _relative_position_bucket (mesh_tensorflow), one value at a time."""
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val_if_large = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val_if_large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional,num_buckets,max_distance",
                         [(True, 32, 128), (False, 32, 128), (True, 8, 20), (False, 6, 9)])
def test_bucket_matches_t5(bidirectional, num_buckets, max_distance):
    relative = np.arange(-300, 301)
    got = relative_position_bucket(tf.constant(relative), bidirectional, num_buckets,
                                   max_distance).numpy()
    expected = [t5_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative]
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0 and got.max() < num_buckets


@settings(max_examples=10)
@given(t=st.integers(1, 5), s=st.integers(1, 7), offset=st.integers(0, 40),
       bidirectional=st.booleans())
def test_bias_values_come_from_table(t, s, offset, bidirectional):
    layer = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16,
                                 bidirectional=bidirectional,
                                 embeddings_initializer="random_normal")
    bias = layer(tf.zeros([2, t, 4]), tf.zeros([2, s, 4]), query_offset=offset).numpy()
    table = layer.embeddings.numpy()
    assert bias.shape == (1, 3, t, s)
    for i in range(t):
        for j in range(s):
            bucket = t5_bucket(j - (offset + i), bidirectional, 8, 16)
            np.testing.assert_array_equal(bias[0, :, i, j], table[bucket])


def test_cached_step_matches_row_of_full_bias():
    layer = RelativePositionBias(num_heads=2, num_buckets=8, max_distance=10,
                                 bidirectional=False, embeddings_initializer="random_normal")
    full = layer(tf.zeros([1, 5, 3])).numpy()
    for t in range(5):
        step = layer(tf.zeros([1, 1, 3]), tf.zeros([1, t + 1, 3]), query_offset=t).numpy()
        np.testing.assert_array_equal(step[0, :, 0], full[0, :, t, :t + 1])


def test_check_layer(tmp_path):
    rng = np.random.RandomState(0)
    inputs = [rng.normal(size=(2, 3, 4)).astype("float32"),
              rng.normal(size=(2, 5, 4)).astype("float32")]
    check_layer(RelativePositionBias,
                {"num_heads": 2, "num_buckets": 8, "max_distance": 12, "bidirectional": False,
                 "embeddings_initializer": "random_normal"},
                inputs, tmp_path, call_kwargs={"query_offset": 2},
                expected_output_shape=(1, 2, 3, 5))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        RelativePositionBias(num_heads=0)
    with pytest.raises(ValueError, match=r"num_buckets=3 is too small: need >= 4"):
        RelativePositionBias(num_heads=2, num_buckets=3)
    with pytest.raises(ValueError, match=r"max_distance=4 must exceed the 8 exactly"):
        RelativePositionBias(num_heads=2, num_buckets=32, max_distance=4)
    with pytest.raises(ValueError, match=r"query_offset must be >= 0, got -1"):
        RelativePositionBias(num_heads=2)(tf.zeros([1, 3, 2]), query_offset=-1)
    with pytest.raises(ValueError, match=r"query of shape \(B, length, \.\.\.\), got \(3,\)"):
        RelativePositionBias(num_heads=2)(tf.zeros([3]))
