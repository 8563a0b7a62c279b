import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.cbam import CBAM
from tests.layers import vision_reference
from tests.layers.layer_checks import check_layer


def reference(layer, x):
    refined = vision_reference.channel_attention(layer.channel_attention, x)
    spatial = vision_reference.spatial_map(layer.spatial_attention, refined)
    return refined * spatial, spatial


@settings(max_examples=10)
@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(2, 6),
       kernel_size=st.sampled_from([1, 3, 5]), seed=st.integers(0, 50))
def test_matches_numpy_reference(h, w, c, kernel_size, seed):
    x = np.random.RandomState(seed).normal(size=(2, h, w, c)).astype("float32")
    layer = CBAM(ratio=2, kernel_size=kernel_size, return_attention=True)
    features, spatial = layer(x)
    expected_features, expected_spatial = reference(layer, x)
    assert spatial.shape == (2, h, w, 1)
    np.testing.assert_allclose(spatial.numpy(), expected_spatial, atol=1e-5)
    np.testing.assert_allclose(features.numpy(), expected_features, atol=1e-5)


def test_without_attention_returns_features_only():
    x = np.random.RandomState(1).normal(size=(1, 3, 3, 4)).astype("float32")
    layer = CBAM(ratio=2, kernel_size=3)
    got = layer(x)
    assert isinstance(got, tf.Tensor)
    np.testing.assert_allclose(got.numpy(), reference(layer, x)[0], atol=1e-5)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 4, 4)).astype("float32")
    check_layer(CBAM, {"ratio": 2, "kernel_size": 3, "return_attention": True,
                       "kernel_regularizer": "l2"},
                x, tmp_path, expected_output_shape=(2, 4, 4, 4))


def test_bad_inputs():
    with pytest.raises(ValueError, match="kernel_size must be an odd positive integer .* got 6"):
        CBAM(kernel_size=6)
    with pytest.raises(ValueError, match="kernel_size must be an odd positive integer .* got 0"):
        CBAM(kernel_size=0)
    with pytest.raises(ValueError, match="ratio must be a positive integer, got -2"):
        CBAM(ratio=-2)
    with pytest.raises(ValueError, match=r"C // ratio must be >= 1, got C=4 channels with "
                                         r"ratio=8"):
        CBAM(ratio=8)(tf.zeros([1, 3, 3, 4]))
    with pytest.raises(ValueError, match=r"CBAM expects channels-last images \(B, H, W, C\) "
                                         r"with a known C, got shape \(2, 9, 4\)"):
        CBAM(ratio=2)(tf.zeros([2, 9, 4]))
