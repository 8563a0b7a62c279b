import numpy as np
import pytest
import tensorflow as tf

from attnlab.ops.masked_softmax import mask_value, masked_softmax


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_mask_value_is_finite_and_far_below_any_score(dtype):
    value = float(mask_value(dtype))
    assert np.isfinite(value)
    assert value < -0.5 * tf.as_dtype(dtype).max


def test_masked_entries_get_zero_weight_and_rows_sum_to_one():
    scores = tf.constant([[1.0, 2.0, 3.0], [0.5, 0.5, 9.0]])
    mask = tf.constant([[True, False, True], [True, True, False]])
    got = masked_softmax(scores, mask).numpy()
    e = np.exp(np.array([[1.0, 0, 3.0], [0.5, 0.5, 0]]))
    e[0, 1] = e[1, 2] = 0.0
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-6)


def test_fully_masked_row_gives_zero_weights_not_nan():
    scores = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    mask = tf.constant([[False, False], [True, True]])
    got = masked_softmax(scores, mask).numpy()
    np.testing.assert_array_equal(got[0], [0.0, 0.0])
    np.testing.assert_allclose(got[1].sum(), 1.0, rtol=1e-6)


def test_float16_scores_with_large_magnitude_stay_finite():
    # Adding float16.min to a large negative score overflows to -inf (TF 2.9's own
    # Softmax layer does this and returns NaN); replacing the masked scores does not.
    scores = tf.constant([[-60000.0, 100.0, -30000.0]], tf.float16)
    mask = tf.constant([[False, True, True]])
    got = masked_softmax(scores, mask)
    assert got.dtype == tf.float16
    np.testing.assert_array_equal(got.numpy(), [[0.0, 1.0, 0.0]])
