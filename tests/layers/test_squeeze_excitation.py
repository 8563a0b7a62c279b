import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.squeeze_excitation import SqueezeExcitation
from tests.layers.layer_checks import check_layer
from tests.layers.vision_reference import sigmoid, w64


def reference(layer, x):
    x = np.asarray(x, np.float64)
    squeezed = x.mean(axis=(1, 2))
    hidden = np.maximum(squeezed @ w64(layer, "squeeze_kernel") + w64(layer, "squeeze_bias"), 0)
    scale = sigmoid(hidden @ w64(layer, "excite_kernel") + w64(layer, "excite_bias"))
    return x * scale[:, None, None, :]


@settings(max_examples=10)
@given(h=st.integers(1, 4), w=st.integers(1, 4), c=st.integers(1, 8), ratio=st.integers(1, 4),
       seed=st.integers(0, 50))
def test_matches_numpy_reference(h, w, c, ratio, seed):
    if c // ratio < 1:
        ratio = 1
    x = np.random.RandomState(seed).normal(size=(2, h, w, c)).astype("float32")
    layer = SqueezeExcitation(ratio=ratio, bias_initializer="random_normal")
    got = layer(x).numpy()
    np.testing.assert_allclose(got, reference(layer, x), atol=1e-5)
    assert layer.squeeze_kernel.shape == (c, c // ratio)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 3, 3, 8)).astype("float32")
    check_layer(SqueezeExcitation, {"ratio": 4, "kernel_regularizer": "l2"}, x, tmp_path,
                expected_output_shape=(2, 3, 3, 8))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"C // ratio must be >= 1, got C=8 channels with "
                                         r"ratio=16"):
        SqueezeExcitation(ratio=16)(tf.zeros([1, 4, 4, 8]))
    with pytest.raises(ValueError, match="ratio must be a positive integer, got 0"):
        SqueezeExcitation(ratio=0)
    with pytest.raises(ValueError, match=r"channels-last images \(B, H, W, C\) with a known C, "
                                         r"got shape \(2, 5, 8\)"):
        SqueezeExcitation(ratio=2)(tf.zeros([2, 5, 8]))
