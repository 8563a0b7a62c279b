"""AttentionPooling against a float64 NumPy implementation of the definition."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.attention_pooling import AttentionPooling
from tests.layers.layer_checks import check_layer


def reference(layer, states, mask):
    """u = tanh(W h + b); score = u . context; softmax over real positions; sum of w * h.

    float64, one row at a time; a row without a real position pools to zeros.
    """
    w, b, c = (np.asarray(v.numpy(), np.float64) for v in
               (layer.kernel, layer.bias, layer.context))
    h = np.asarray(states, np.float64)
    mask = np.asarray(mask, bool)
    rows, length, depth = h.reshape(-1, h.shape[-2], h.shape[-1]).shape
    flat_h, flat_mask = h.reshape(rows, length, depth), mask.reshape(rows, length)
    pooled, weights = np.zeros((rows, depth)), np.zeros((rows, length))
    for r in range(rows):
        real = np.flatnonzero(flat_mask[r])
        if not len(real):
            continue
        scores = np.array([np.tanh(flat_h[r, t] @ w + b) @ c for t in real])
        e = np.exp(scores - scores.max())
        weights[r, real] = e / e.sum()
        pooled[r] = weights[r] @ flat_h[r]
    return pooled.reshape(h.shape[:-2] + (depth,)), weights.reshape(h.shape[:-1])


@settings(max_examples=10)
@given(t=st.integers(1, 5), d=st.integers(1, 4), units=st.integers(1, 5),
       leading=st.sampled_from([(), (3,)]), seed=st.integers(0, 100))
def test_matches_numpy_reference(t, d, units, leading, seed):
    rng = np.random.RandomState(seed)
    states = rng.normal(size=(2,) + leading + (t, d)).astype("float32")
    mask = rng.rand(*states.shape[:-1]) > 0.3
    mask.reshape(-1, t)[0] = False  # always one fully padded row
    layer = AttentionPooling(units, bias_initializer="random_normal")
    pooled, weights = layer(states, mask=mask, return_weights=True)
    expected_pooled, expected_weights = reference(layer, states, mask)
    assert pooled.shape == states.shape[:-2] + (d,) and weights.shape == states.shape[:-1]
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-6)
    np.testing.assert_allclose(pooled.numpy(), expected_pooled, atol=1e-5)


def test_padding_gets_zero_weight_and_a_fully_padded_row_pools_to_zero():
    rng = np.random.RandomState(0)
    states = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    layer = AttentionPooling(6)
    pooled, weights = (x.numpy() for x in layer(states, mask=mask, return_weights=True))
    assert np.all(weights[~mask] == 0.0)
    np.testing.assert_allclose(weights[[0, 2]].sum(-1), 1.0, atol=1e-6)
    assert np.all(weights[1] == 0.0) and np.all(pooled[1] == 0.0)
    assert np.isfinite(pooled).all() and np.isfinite(weights).all()
    # What sits at padded positions does not matter.
    noisy = np.where(mask[..., None], states, 1e4 * rng.normal(size=states.shape))
    again, again_weights = layer(noisy.astype("float32"), mask=mask, return_weights=True)
    np.testing.assert_allclose(again.numpy(), pooled, atol=1e-6)
    np.testing.assert_allclose(again_weights.numpy(), weights, atol=1e-7)


def test_without_a_mask_every_position_counts():
    states = np.random.RandomState(1).normal(size=(2, 4, 3)).astype("float32")
    layer = AttentionPooling(5)
    pooled, weights = layer(states, return_weights=True)
    expected, expected_weights = reference(layer, states, np.ones((2, 4), bool))
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-6)
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-5)


def test_keras_mask_is_used_and_not_passed_on():
    ids = np.array([[3, 4, 0, 0], [0, 0, 0, 0]])
    source = tf.keras.Input((4,), dtype="int32")
    embedded = tf.keras.layers.Embedding(10, 5, mask_zero=True)(source)
    pooled, weights = AttentionPooling(4)(embedded, return_weights=True)
    assert getattr(pooled, "_keras_mask", None) is None
    model = tf.keras.Model(source, [pooled, weights])
    pooled, weights = (x.numpy() for x in model(ids))
    assert np.all(weights[ids == 0] == 0.0)
    np.testing.assert_allclose(weights[0].sum(), 1.0, atol=1e-6)
    assert np.all(pooled[1] == 0.0)


def test_check_layer(tmp_path):
    rng = np.random.RandomState(0)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    inputs = {"inputs": rng.normal(size=(2, 5, 6)).astype("float32"), "mask": mask}
    check_layer(AttentionPooling, {"units": 8, "kernel_regularizer": "l2"}, inputs, tmp_path,
                call_kwargs={"return_weights": True}, expected_output_shape=(2, 6))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="units must be a positive integer, got 0"):
        AttentionPooling(0)
    with pytest.raises(ValueError, match="units must be a positive integer, got 2.5"):
        AttentionPooling(2.5)
    layer = AttentionPooling(4)
    with pytest.raises(ValueError, match=r"inputs of shape \(B, \.\.\., T, D\).*got \(2, 5\)"):
        layer(tf.zeros([2, 5]))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 5\).*got mask \(2, 1, 5\) for "
                                         r"inputs \(2, 5, 3\)"):
        layer(tf.zeros([2, 5, 3]), mask=tf.ones([2, 1, 5], bool))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 5\).*got mask \(2, 4\)"):
        layer(tf.zeros([2, 5, 3]), mask=tf.ones([2, 4], bool))
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor, got dtype "
                                        "int32"):
        AttentionPooling(4)(tf.zeros([2, 5, 3], tf.int32))


def test_an_additive_float_mask_is_refused_not_inverted():
    layer = AttentionPooling(units=4)
    x = tf.random.normal([2, 3, 5])
    additive = tf.constant([[0.0, 0.0, -1e9], [0.0, -1e9, -1e9]])
    with pytest.raises(ValueError, match="AttentionPooling mask of dtype float32 has values "
                                         "other than 0 and 1"):
        layer(x, mask=additive)
