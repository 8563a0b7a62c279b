import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from attnlab.ops.masks import padding_mask
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from tests import reference

TOLERANCE = {"float16": 2e-2, "float32": 2e-5, "float64": 1e-7}


@st.composite
def attention_cases(draw):
    batch_shape = draw(st.sampled_from([(), (2,), (2, 3)]))
    t = draw(st.integers(1, 7))
    s = draw(st.integers(1, 7))
    d = draw(st.integers(1, 6))
    dv = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    mask_kind = draw(st.sampled_from(["none", "full", "keys", "rank2"]))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return batch_shape, t, s, d, dv, dtype, mask_kind, causal, seed


@given(attention_cases())
def test_matches_float64_numpy_reference(case):
    batch_shape, t, s, d, dv, dtype, mask_kind, causal, seed = case
    rng = np.random.RandomState(seed)
    q = rng.normal(size=batch_shape + (t, d))
    k = rng.normal(size=batch_shape + (s, d))
    v = rng.normal(size=batch_shape + (s, dv))
    mask = None
    if mask_kind == "full":
        mask = rng.rand(*batch_shape + (t, s)) > 0.3
    elif mask_kind == "keys":
        mask = rng.rand(*batch_shape + (1, s)) > 0.3
    elif mask_kind == "rank2":
        mask = rng.rand(t, s) > 0.3
    visible = np.ones((t, s), bool) if mask is None else mask
    if causal:
        visible = visible & reference.causal(t, s, offset=s - t)
    expected_out, expected_w = reference.attention(q, k, v, mask=visible)

    out, weights = scaled_dot_product_attention(
        q.astype(dtype), k.astype(dtype), v.astype(dtype), mask=mask, causal=causal,
        return_weights=True)
    assert out.dtype == dtype and weights.dtype == dtype
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(out.numpy().astype(np.float64), expected_out, atol=tol, rtol=tol)
    np.testing.assert_allclose(weights.numpy().astype(np.float64), expected_w, atol=tol,
                               rtol=tol)


def test_rank3_mask_is_applied_per_batch_item_for_multi_head_inputs():
    rng = np.random.RandomState(0)
    q, k, v = (rng.normal(size=(2, 3, 4, 5)) for _ in range(3))
    mask = rng.rand(2, 4, 4) > 0.4
    out = scaled_dot_product_attention(q, k, v, mask=mask)
    expected, _ = reference.attention(q, k, v, mask=mask[:, None])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-7)


def test_padding_mask_hides_pad_keys():
    rng = np.random.RandomState(1)
    ids = np.array([[3, 4, 0, 0], [1, 2, 3, 0]])
    q = rng.normal(size=(2, 4, 8))
    out, weights = scaled_dot_product_attention(q, q, q, mask=padding_mask(ids),
                                                return_weights=True)
    np.testing.assert_array_equal(weights.numpy()[0, :, 2:], 0.0)
    np.testing.assert_array_equal(weights.numpy()[1, :, 3], 0.0)
    expected, _ = reference.attention(q, q, q, mask=(ids != 0)[:, None, :])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-7)


def test_fully_masked_query_rows_give_zero_output_and_weights():
    q = tf.random.normal([1, 3, 4])
    mask = tf.constant([[[False, False, False], [True, False, True], [True, True, True]]])
    out, weights = scaled_dot_product_attention(q, q, q, mask=mask, return_weights=True)
    np.testing.assert_array_equal(out.numpy()[0, 0], 0.0)
    np.testing.assert_array_equal(weights.numpy()[0, 0], 0.0)
    assert np.isfinite(out.numpy()).all()


def test_custom_scale_matches_reference():
    rng = np.random.RandomState(2)
    q, k, v = (rng.normal(size=(3, 4)) for _ in range(3))
    out = scaled_dot_product_attention(q, k, v, scale=0.1)
    np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v, scale=0.1)[0],
                               atol=1e-7)


def test_gradients_match_finite_differences():
    rng = np.random.RandomState(3)
    q, k, v = (tf.constant(rng.normal(size=(2, 3, 4))) for _ in range(3))
    mask = tf.constant(rng.rand(2, 3, 3) > 0.3)

    def f(q, k, v):
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=True)

    theoretical, numerical = tf.test.compute_gradient(f, [q, k, v])
    for a, b in zip(theoretical, numerical):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_dropout_only_in_training_and_weights_returned_before_dropout():
    q = tf.random.normal([2, 16, 8])
    eval_out, eval_w = scaled_dot_product_attention(q, q, q, dropout_rate=0.5,
                                                    return_weights=True)
    train_out, train_w = scaled_dot_product_attention(q, q, q, dropout_rate=0.5, training=True,
                                                      return_weights=True, seed=1)
    np.testing.assert_allclose(eval_w.numpy(), train_w.numpy(), atol=1e-6)
    expected, _ = reference.attention(q.numpy(), q.numpy(), q.numpy())
    np.testing.assert_allclose(eval_out.numpy(), expected, atol=1e-5)
    assert not np.allclose(train_out.numpy(), expected, atol=1e-3)


def test_training_as_a_tensor_is_decided_when_the_graph_runs():
    """A bool tensor `training` (a tf.function argument) picks dropout or not at run time."""
    x = tf.constant(np.random.RandomState(6).normal(size=(2, 16, 8)).astype("float32"))
    expected, _ = reference.attention(x.numpy(), x.numpy(), x.numpy())

    @tf.function(input_signature=[tf.TensorSpec([], tf.bool)])
    def attend(training):
        return scaled_dot_product_attention(x, x, x, dropout_rate=0.5, training=training)

    np.testing.assert_allclose(attend(tf.constant(False)).numpy(), expected, atol=1e-5)
    dropped = attend(tf.constant(True)).numpy()
    assert np.isfinite(dropped).all() and not np.allclose(dropped, expected, atol=1e-3)
    # Known in advance (eager tensors, constants, numpy bools): decided now, same results.
    for off in (tf.constant(False), np.bool_(False), 0, None):
        np.testing.assert_allclose(scaled_dot_product_attention(
            x, x, x, dropout_rate=0.5, training=off).numpy(), expected, atol=1e-5)
    with pytest.raises(TypeError, match="training must be a bool or a scalar bool tensor, got "
                                        "float32"):
        scaled_dot_product_attention(x, x, x, dropout_rate=0.5, training=tf.constant(1.0))
    with pytest.raises(TypeError, match=r"got bool \(2,\)"):
        scaled_dot_product_attention(x, x, x, dropout_rate=0.5,
                                     training=tf.constant([True, False]))


def test_works_in_tf_function_with_unknown_lengths():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]),
                                  tf.TensorSpec([None, None, None], tf.bool)])
    def attend(x, mask):
        return scaled_dot_product_attention(x, x, x, mask=mask, causal=True)

    x = np.random.RandomState(4).normal(size=(2, 5, 4)).astype("float32")
    mask = np.random.RandomState(5).rand(2, 5, 5) > 0.2
    expected, _ = reference.attention(x, x, x, mask=mask & reference.causal(5))
    np.testing.assert_allclose(attend(x, mask).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("q_shape,k_shape,v_shape,match", [
    ((2, 3, 4), (2, 5, 6), (2, 5, 6), r"same depth.*\(2, 3, 4\).*\(2, 5, 6\)"),
    ((2, 3, 4), (2, 5, 4), (2, 6, 4), r"same length.*\(2, 5, 4\).*\(2, 6, 4\)"),
    ((2, 3, 4), (5, 4), (5, 4), r"same rank.*\(2, 3, 4\).*\(5, 4\)"),
    ((2, 3, 4), (3, 5, 4), (3, 5, 4), r"leading.*\(2, 3, 4\).*\(3, 5, 4\)"),
    ((4,), (4,), (4,), r"rank >= 2.*\(4,\)"),
    ((2, 0, 4), (2, 5, 4), (2, 5, 4), r"query sequence is empty"),
    ((2, 3, 4), (2, 0, 4), (2, 0, 4), r"key sequence is empty"),
])
def test_bad_shapes_raise_value_error_naming_shapes(q_shape, k_shape, v_shape, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(tf.zeros(q_shape), tf.zeros(k_shape), tf.zeros(v_shape))


def test_integer_inputs_raise_type_error_naming_dtype():
    ids = tf.zeros([2, 3, 4], tf.int32)
    with pytest.raises(TypeError, match="query must be a floating-point tensor, got dtype int32"):
        scaled_dot_product_attention(ids, ids, ids)


def test_mixed_dtypes_raise_type_error():
    with pytest.raises(TypeError, match="float32, float16"):
        scaled_dot_product_attention(tf.zeros([3, 4]), tf.zeros([3, 4], tf.float16),
                                     tf.zeros([3, 4]))


def test_mask_that_cannot_broadcast_raises_value_error_naming_shapes():
    x = tf.zeros([2, 3, 4])
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 5\).*\(2, 3, 3\)"):
        scaled_dot_product_attention(x, x, x, mask=tf.ones([2, 3, 5], tf.bool))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2])
def test_bad_dropout_rate_raises(rate):
    x = tf.zeros([3, 4])
    with pytest.raises(ValueError, match="dropout_rate must be in \\[0, 1\\), got %r" % rate):
        scaled_dot_product_attention(x, x, x, dropout_rate=rate)
