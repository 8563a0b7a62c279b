import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.spatial_attention import SpatialAttention
from tests.layers import vision_reference
from tests.layers.layer_checks import check_layer


@settings(max_examples=10)
@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 4),
       kernel_size=st.sampled_from([1, 3, 5, 7]), seed=st.integers(0, 50))
def test_matches_numpy_reference(h, w, c, kernel_size, seed):
    x = np.random.RandomState(seed).normal(size=(2, h, w, c)).astype("float32")
    layer = SpatialAttention(kernel_size, return_attention=True, bias_initializer="ones")
    output, attention = layer(x)
    expected = vision_reference.spatial_map(layer, x)
    np.testing.assert_allclose(attention.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(output.numpy(), x * expected, atol=1e-5)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 5, 3)).astype("float32")
    check_layer(SpatialAttention, {"kernel_size": 3, "return_attention": True}, x, tmp_path,
                expected_output_shape=(2, 4, 5, 3))


@pytest.mark.parametrize("kernel_size", [0, -3, 4, 2.0, True])
def test_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be an odd positive integer .* got %s"
                       % repr(kernel_size).replace(".", r"\.")):
        SpatialAttention(kernel_size)


def test_bad_rank():
    with pytest.raises(ValueError, match=r"\(B, H, W, C\) with a known C, got shape \(3, 4\)"):
        SpatialAttention(3)(tf.zeros([3, 4]))
