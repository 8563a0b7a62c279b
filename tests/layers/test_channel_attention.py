import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.channel_attention import ChannelAttention
from tests.layers import vision_reference
from tests.layers.layer_checks import check_layer


@settings(max_examples=10)
@given(h=st.integers(1, 4), w=st.integers(1, 4), c=st.integers(2, 8), seed=st.integers(0, 50))
def test_matches_numpy_reference(h, w, c, seed):
    x = np.random.RandomState(seed).normal(size=(2, h, w, c)).astype("float32")
    layer = ChannelAttention(ratio=2, bias_initializer="random_normal")
    np.testing.assert_allclose(layer(x).numpy(), vision_reference.channel_attention(layer, x),
                               atol=1e-5)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 3, 4, 6)).astype("float32")
    check_layer(ChannelAttention, {"ratio": 3, "bias_initializer": "ones"}, x, tmp_path,
                expected_output_shape=(2, 3, 4, 6))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"C // ratio must be >= 1, got C=4 channels with "
                                         r"ratio=8"):
        ChannelAttention(ratio=8)(tf.zeros([1, 2, 2, 4]))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\) with a known C, got shape "
                                         r"\(1, 2, 2, 2, 4\)"):
        ChannelAttention(ratio=2)(tf.zeros([1, 2, 2, 2, 4]))
