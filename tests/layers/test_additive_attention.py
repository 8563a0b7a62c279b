import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.additive_attention import AdditiveAttention
from tests.layers.layer_checks import check_layer


def softmax_rows(scores, mask):
    """float64 softmax over the last axis; masked entries excluded, empty rows all zero."""
    scores = np.where(mask, scores, -np.inf)
    peak = np.max(scores, axis=-1, keepdims=True)
    e = np.where(mask, np.exp(scores - np.where(np.isfinite(peak), peak, 0.0)), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def reference(layer, query, values, mask):
    """Bahdanau: score[b, t, s] = v . tanh(W1 q[b, t] + W2 h[b, s]), in float64 loops."""
    w1, w2, v = (np.asarray(w.numpy(), np.float64) for w in
                 (layer.query_kernel, layer.values_kernel, layer.score_kernel))
    q, h = np.asarray(query, np.float64), np.asarray(values, np.float64)
    scores = np.zeros(q.shape[:2] + (h.shape[1],))
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            for s in range(h.shape[1]):
                scores[b, t, s] = v @ np.tanh(q[b, t] @ w1 + h[b, s] @ w2)
    weights = softmax_rows(scores, np.asarray(mask, bool)[:, None, :])
    return np.einsum("bts,bsd->btd", weights, h), weights


@settings(max_examples=10)
@given(t=st.integers(1, 3), s=st.integers(1, 4), dq=st.integers(1, 4), dv=st.integers(1, 4),
       units=st.integers(1, 5), mask_seed=st.integers(0, 100))
def test_matches_numpy_reference(t, s, dq, dv, units, mask_seed):
    rng = np.random.RandomState(mask_seed)
    query = rng.normal(size=(2, t, dq)).astype("float32")
    values = rng.normal(size=(2, s, dv)).astype("float32")
    mask = rng.rand(2, s) > 0.4
    layer = AdditiveAttention(units)
    context, weights = layer(query, values, values_mask=mask, return_weights=True)
    expected_context, expected_weights = reference(layer, query, values, mask)
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-5)
    np.testing.assert_allclose(context.numpy(), expected_context, atol=1e-5)


def test_padded_source_positions_get_zero_weight():
    rng = np.random.RandomState(0)
    query, values = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 6))
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    context, weights = AdditiveAttention(8)(query.astype("float32"), values.astype("float32"),
                                            values_mask=mask, return_weights=True)
    assert np.all(weights.numpy()[0, :, 3:] == 0.0)
    np.testing.assert_allclose(weights.numpy()[0].sum(-1), 1.0, atol=1e-6)
    # a source with no real token: zero weights and zero context, no NaN
    assert np.all(weights.numpy()[1] == 0.0) and np.all(context.numpy()[1] == 0.0)


def test_single_step_equals_row_of_sequence_call():
    rng = np.random.RandomState(1)
    query = rng.normal(size=(2, 4, 3)).astype("float32")
    values = rng.normal(size=(2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]], bool)
    layer = AdditiveAttention(7)
    context, weights = layer(query, values, values_mask=mask, return_weights=True)
    for t in range(4):
        c, w = layer(query[:, t], values, values_mask=mask, return_weights=True)
        assert c.shape == (2, 6) and w.shape == (2, 5)
        np.testing.assert_allclose(c.numpy(), context.numpy()[:, t], atol=1e-6)
        np.testing.assert_allclose(w.numpy(), weights.numpy()[:, t], atol=1e-6)


def test_keras_mask_of_values_is_used():
    ids = np.array([[3, 4, 0, 0], [5, 6, 7, 0]])
    query = tf.keras.Input((2, 5))
    source = tf.keras.Input((4,), dtype="int32")
    encoded = tf.keras.layers.Embedding(10, 5, mask_zero=True)(source)
    layer = AdditiveAttention(4)
    outputs = layer(query, encoded, return_weights=True)
    model = tf.keras.Model([query, source], outputs)
    q = np.random.RandomState(2).normal(size=(2, 2, 5)).astype("float32")
    _, weights = model([q, ids])
    assert np.all(weights.numpy()[ids[:, None, :].repeat(2, 1) == 0] == 0.0)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, atol=1e-6)


def test_output_keeps_query_mask():
    layer = AdditiveAttention(3)
    mask = tf.constant([[True, False]])
    assert layer.compute_mask(tf.zeros([1, 2, 4]), mask) is mask
    assert layer.compute_mask(tf.zeros([1, 4]), None) is None


def test_check_layer(tmp_path):
    rng = np.random.RandomState(0)
    inputs = [rng.normal(size=(2, 3, 4)).astype("float32"),
              rng.normal(size=(2, 5, 6)).astype("float32")]
    check_layer(AdditiveAttention, {"units": 8, "kernel_regularizer": "l2"}, inputs, tmp_path,
                call_kwargs={"return_weights": True}, expected_output_shape=(2, 3, 6))


def test_bad_inputs():
    with pytest.raises(ValueError, match="units must be a positive integer, got 0"):
        AdditiveAttention(0)
    layer = AdditiveAttention(4)
    with pytest.raises(ValueError, match=r"values \(encoder outputs\) of shape \(B, S, Dv\), "
                                         r"got \(2, 5\)"):
        layer(tf.zeros([2, 3, 4]), tf.zeros([2, 5]))
    with pytest.raises(ValueError, match=r"query of shape \(B, T, Dq\) or \(B, Dq\).*"
                                         r"got \(1, 2, 3, 4\)"):
        layer(tf.zeros([1, 2, 3, 4]), tf.zeros([1, 5, 4]))
    with pytest.raises(ValueError, match=r"values_mask of shape \(B, S\), got \(2, 1, 5\)"):
        layer(tf.zeros([2, 3, 4]), tf.zeros([2, 5, 4]), values_mask=tf.ones([2, 1, 5], bool))
    with pytest.raises(TypeError, match="values must be a floating-point tensor, got dtype "
                                        "int32"):
        layer(tf.zeros([2, 3, 4]), tf.zeros([2, 5, 4], tf.int32))
