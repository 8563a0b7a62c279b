import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.positional.sinusoidal import SinusoidalPositionEncoding
from tests.layers.layer_checks import check_layer


def reference_table(length, depth, start=0, base=10000.0):
    """float64 PE[p, 2i] = sin(p / base^(2i/D)), PE[p, 2i+1] = cos(p / base^(2i/D))."""
    table = np.zeros((length, depth))
    for p in range(start, start + length):
        for j in range(depth):
            angle = p / base ** (2 * (j // 2) / depth)
            table[p - start, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


@settings(max_examples=10)
@given(length=st.integers(1, 6), depth=st.integers(1, 9), start=st.integers(0, 50),
       base=st.sampled_from([100.0, 10000.0]))
def test_matches_numpy_formula(length, depth, start, base):
    x = tf.zeros([2, length, depth])
    got = SinusoidalPositionEncoding(base=base)(x, start_index=start).numpy()
    expected = reference_table(length, depth, start, base)
    np.testing.assert_allclose(got, np.broadcast_to(expected, (2, length, depth)), atol=1e-5)


def test_start_index_matches_rows_of_full_table():
    layer = SinusoidalPositionEncoding()
    full = layer(tf.zeros([1, 6, 8])).numpy()
    for t in range(6):
        step = layer(tf.zeros([1, 1, 8]), start_index=t).numpy()
        np.testing.assert_allclose(step[0, 0], full[0, t], atol=1e-6)


def test_graph_mode_with_unknown_length():
    layer = SinusoidalPositionEncoding()
    fn = tf.function(lambda x, s: layer(x, start_index=s),
                     input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([], tf.int32)])
    np.testing.assert_allclose(fn(tf.zeros([1, 3, 4]), tf.constant(2)).numpy()[0],
                               reference_table(3, 4, 2), atol=1e-5)


def test_mask_is_passed_through():
    layer = SinusoidalPositionEncoding()
    mask = tf.constant([[True, False]])
    assert layer.compute_mask(tf.zeros([1, 2, 4]), mask) is mask


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 6)).astype("float32")
    check_layer(SinusoidalPositionEncoding, {"max_length": 16, "base": 1000.0}, x, tmp_path,
                call_kwargs={"start_index": 3}, expected_output_shape=(2, 4, 6))


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_length must be a positive integer, got 0"):
        SinusoidalPositionEncoding(max_length=0)
    with pytest.raises(ValueError, match=r"base must be a number > 1, got -2"):
        SinusoidalPositionEncoding(base=-2)
    with pytest.raises(ValueError, match=r"start_index=6 plus sequence length 3 .* max_length=8"):
        SinusoidalPositionEncoding(max_length=8)(tf.zeros([1, 3, 4]), start_index=6)
    with pytest.raises(ValueError, match=r"start_index must be >= 0, got -1"):
        SinusoidalPositionEncoding()(tf.zeros([1, 3, 4]), start_index=-1)
    with pytest.raises(ValueError, match=r"inputs \(\.\.\., T, D\), got shape \(4,\)"):
        SinusoidalPositionEncoding()(tf.zeros([4]))
