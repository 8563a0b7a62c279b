import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.custom_attention import CustomAttention
from tests import reference
from tests.layers.layer_checks import check_layer


def numpy_custom_attention(layer, x, key_mask=None, causal=False):
    """The layer's computation in float64 NumPy, from its own weight values."""
    x = np.asarray(x, np.float64)

    def project(name):
        y = x @ getattr(layer, name + "_kernel").numpy().astype(np.float64)
        bias = getattr(layer, name + "_bias")
        return y if bias is None else y + bias.numpy().astype(np.float64)

    t = x.shape[1]
    visible = np.ones((x.shape[0], t, t), bool)
    if key_mask is not None:
        visible = visible & np.asarray(key_mask, bool)[:, None, :]
    if causal:
        visible = visible & reference.causal(t)
    return reference.attention(project("query"), project("key"), project("value"), visible)


@settings(max_examples=15)
@given(t=st.integers(1, 6), d=st.integers(1, 5), head_size=st.integers(1, 4),
       causal=st.booleans(), use_bias=st.booleans(), masked=st.booleans(),
       seed=st.integers(0, 1000))
def test_matches_float64_numpy(t, d, head_size, causal, use_bias, masked, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(2, t, d)).astype("float32")
    mask = rng.rand(2, t) > 0.3 if masked else None
    layer = CustomAttention(head_size, return_weights=True, use_bias=use_bias,
                            bias_initializer="random_normal")
    out, weights = layer(x, mask=mask, causal=causal)
    expected_out, expected_weights = numpy_custom_attention(layer, x, mask, causal)
    assert out.shape == (2, t, head_size) and weights.shape == (2, t, t)
    np.testing.assert_allclose(out.numpy(), expected_out, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=2e-5, rtol=2e-5)


def test_keras_padding_mask_from_embedding_hides_keys_and_propagates():
    ids = np.array([[3, 5, 2, 0, 0], [4, 1, 0, 0, 0]])
    embedding = tf.keras.layers.Embedding(8, 6, mask_zero=True)
    layer = CustomAttention(4)
    inputs = tf.keras.Input(shape=(5,), dtype="int32")
    model = tf.keras.Model(inputs, layer(embedding(inputs)))
    out = model(ids)
    expected, _ = numpy_custom_attention(layer, embedding(ids).numpy(), key_mask=ids != 0)
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5, rtol=2e-5)
    assert model.outputs[0]._keras_mask is not None
    np.testing.assert_array_equal(layer.compute_mask(None, tf.constant(ids != 0)).numpy(),
                                  ids != 0)


def test_fully_masked_sequence_gives_zeros_not_nan():
    layer = CustomAttention(3, return_weights=True)
    out, weights = layer(tf.ones([1, 4, 2]), mask=tf.zeros([1, 4], tf.bool))
    np.testing.assert_array_equal(out.numpy(), 0.0)
    np.testing.assert_array_equal(weights.numpy(), 0.0)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 6)).astype("float32")
    check_layer(CustomAttention, {"head_size": 3, "use_bias": True}, x, tmp_path,
                call_kwargs={"causal": True}, expected_output_shape=(2, 4, 3))


def test_check_layer_returning_weights(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 6)).astype("float32")
    check_layer(CustomAttention, {"head_size": 3, "return_weights": True}, x, tmp_path,
                expected_output_shape=(2, 4, 3))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"head_size": 0}, ValueError, "head_size must be a positive integer, got 0"),
    ({"head_size": 2.5}, ValueError, "head_size must be a positive integer, got 2.5"),
    ({"head_size": 2, "return_weights": "yes"}, TypeError, "return_weights.*'yes'"),
    ({"head_size": 2, "use_bias": 1}, TypeError, "use_bias.*1"),
    ({"head_size": 2, "kernel_initializer": "no_such_init"}, ValueError, "no_such_init"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CustomAttention(**kwargs)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"\(B, T, D\).*\(2, 3\)"):
        CustomAttention(2)(tf.ones([2, 3]))
    layer = CustomAttention(2)
    layer(tf.ones([1, 3, 4]))
    with pytest.raises(ValueError, match=r"depth 4.*\(1, 3, 5\)"):
        layer(tf.ones([1, 3, 5]))
    with pytest.raises(TypeError, match="int32"):
        CustomAttention(2)(tf.ones([1, 3, 4], tf.int32))
