import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers.non_local import NonLocalBlock
from tests.layers.layer_checks import check_layer
from tests.layers.vision_reference import w64


def max_pool(x, p):
    """p x p max pooling of (B, H, W, C) with H and W divisible by p."""
    b, h, w, c = x.shape
    return x.reshape(b, h // p, p, w // p, p, c).max(axis=(2, 4))


def reference(layer, x):
    """The block from its definition in float64: (output, attention map)."""
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape

    def project(t, name):
        y = t @ w64(layer, name + "_kernel")
        return y + w64(layer, name + "_bias") if layer.use_bias else y

    q, k, v = project(x, "query"), project(x, "key"), project(x, "value")
    if layer.downsample > 1:
        k, v = max_pool(k, layer.downsample), max_pool(v, layer.downsample)
    q, k, v = (t.reshape(b, -1, t.shape[-1]) for t in (q, k, v))
    scores = np.einsum("bqd,bkd->bqk", q, k)
    if layer.scaled:
        scores = scores / np.sqrt(q.shape[-1])
    e = np.exp(scores - scores.max(-1, keepdims=True))
    attention = e / e.sum(-1, keepdims=True)
    attended = np.einsum("bqk,bkd->bqd", attention, v).reshape(b, h, w, -1)
    return x + float(layer.gamma.numpy()) * project(attended, "output"), attention


def random_images(seed, shape):
    return np.random.RandomState(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("shape, options", [
    ((2, 4, 6, 16), {}),
    ((2, 4, 6, 16), {"downsample": 2}),
    ((1, 6, 3, 8), {"downsample": 3, "inner_channels": 3, "value_channels": 5,
                    "scaled": True}),
    ((2, 3, 5, 4), {"inner_channels": 2, "value_channels": 4, "use_bias": False}),
])
def test_matches_numpy_reference(shape, options):
    x = random_images(sum(shape), shape)
    layer = NonLocalBlock(return_attention=True, bias_initializer="random_normal",
                          gamma_initializer=tf.keras.initializers.Constant(0.7), **options)
    features, attention = layer(x)
    expected_features, expected_attention = reference(layer, x)
    p = options.get("downsample", 1)
    b, h, w, _ = shape
    assert attention.shape == (b, h * w, (h // p) * (w // p))
    np.testing.assert_allclose(attention.numpy(), expected_attention, atol=1e-5)
    np.testing.assert_allclose(features.numpy(), expected_features, atol=1e-4, rtol=1e-5)
    # The kernel path (no map requested) gives the same features.
    layer.return_attention = False
    np.testing.assert_allclose(layer(x).numpy(), expected_features, atol=1e-4, rtol=1e-5)


def test_identity_at_initialization():
    x = random_images(1, (2, 4, 4, 16))
    layer = NonLocalBlock(downsample=2, bias_initializer="random_normal")
    assert float(layer(x)[0, 0, 0, 0]) == x[0, 0, 0, 0]
    np.testing.assert_array_equal(layer(x).numpy(), x)
    assert float(layer.gamma.numpy()) == 0.0


def test_attention_rows_sum_to_one_and_defaults_follow_sagan():
    x = random_images(2, (3, 8, 8, 32))
    layer = NonLocalBlock(downsample=2, return_attention=True)
    _, attention = layer(x)
    assert attention.shape == (3, 64, 16)
    np.testing.assert_allclose(attention.numpy().sum(-1), 1.0, atol=1e-5)
    assert np.all(attention.numpy() >= 0.0)
    assert layer.query_kernel.shape == (32, 4) and layer.key_kernel.shape == (32, 4)
    assert layer.value_kernel.shape == (32, 16) and layer.output_kernel.shape == (16, 32)
    assert layer.compute_output_shape((None, 8, 8, 32))[1].as_list() == [None, 64, 16]


def test_gradient_reaches_gamma_and_projections():
    x = tf.constant(random_images(3, (2, 4, 4, 8)))
    layer = NonLocalBlock(inner_channels=2, downsample=2)
    layer(x)
    target = tf.constant(random_images(4, (2, 4, 4, 8)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((layer(x) - target) ** 2)
    grads = dict(zip([w.name for w in layer.trainable_weights],
                     tape.gradient(loss, layer.trainable_weights)))
    gamma_grad = [g for name, g in grads.items() if "gamma" in name][0]
    assert np.isfinite(gamma_grad.numpy()) and abs(float(gamma_grad)) > 0.0
    # Once gamma moves away from 0 the projections get gradients too.
    layer.gamma.assign(0.5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((layer(x) - target) ** 2)
    for weight, grad in zip(layer.trainable_weights,
                            tape.gradient(loss, layer.trainable_weights)):
        assert grad is not None and np.any(grad.numpy() != 0.0), weight.name


def test_unknown_spatial_size():
    inputs = tf.keras.Input(shape=(None, None, 8))
    features, attention = NonLocalBlock(inner_channels=2, downsample=2,
                                        return_attention=True)(inputs)
    model = tf.keras.Model(inputs, [features, attention])
    got_features, got_attention = model(random_images(5, (1, 6, 4, 8)))
    assert got_features.shape == (1, 6, 4, 8) and got_attention.shape == (1, 24, 6)
    run = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 8])])
    assert run(random_images(5, (1, 6, 4, 8)))[1].shape == (1, 24, 6)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="needs a height and width divisible by 2"):
        run(random_images(5, (1, 5, 4, 8)))


def test_check_layer(tmp_path):
    x = random_images(0, (2, 4, 4, 16))
    check_layer(NonLocalBlock, {"downsample": 2, "return_attention": True,
                                "gamma_initializer": "ones", "kernel_regularizer": "l2"},
                x, tmp_path, expected_output_shape=(2, 4, 4, 16))


def test_check_layer_scaled_without_map(tmp_path):
    x = random_images(1, (2, 3, 3, 4))
    check_layer(NonLocalBlock, {"inner_channels": 2, "value_channels": 3, "scaled": True,
                                "gamma_initializer": "ones"},
                x, tmp_path, expected_output_shape=(2, 3, 3, 4))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="inner_channels must be None .* or an integer >= 1, "
                                         "got 0"):
        NonLocalBlock(inner_channels=0)
    with pytest.raises(ValueError, match=r"value_channels must be None .* got 2\.5"):
        NonLocalBlock(value_channels=2.5)
    with pytest.raises(ValueError, match="downsample must be a positive integer, got 0"):
        NonLocalBlock(downsample=0)
    with pytest.raises(TypeError, match="scaled must be a bool, got 1"):
        NonLocalBlock(scaled=1)
    with pytest.raises(ValueError, match="the default inner_channels C // 8 is 0 for C=4 input "
                                         "channels; give inner_channels explicitly"):
        NonLocalBlock()(tf.zeros([1, 4, 4, 4]))
    with pytest.raises(ValueError, match="downsample=2 needs a height divisible by 2 .* got "
                                         "height 5"):
        NonLocalBlock(downsample=2)(tf.zeros([1, 5, 4, 16]))
    with pytest.raises(ValueError, match="downsample=2 needs a width divisible by 2 .* got "
                                         "width 3"):
        NonLocalBlock(downsample=2)(tf.zeros([1, 4, 3, 16]))
    with pytest.raises(ValueError, match=r"NonLocalBlock expects channels-last images "
                                         r"\(B, H, W, C\) with a known C, got shape \(2, 9, 16\)"):
        NonLocalBlock()(tf.zeros([2, 9, 16]))
