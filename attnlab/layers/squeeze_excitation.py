"""Squeeze-and-excitation channel attention (Hu et al. 2018)."""
import tensorflow as tf

from attnlab.layers.channel_attention import ChannelAttention


@tf.keras.utils.register_keras_serializable(package="attnlab")
class SqueezeExcitation(ChannelAttention):
    """Rescales channels by sigmoid(W2 relu(W1 avgpool(x) + b1) + b2).

    Squeeze: global average pooling gives one descriptor per channel. Excite: a
    bottleneck MLP (C -> C // ratio -> C) with a sigmoid gives each channel a weight in
    (0, 1) that multiplies its feature map. It is CBAM's ChannelAttention without the
    max-pooled descriptor (which that paper added), so the two share their code; the
    weights keep the paper's names.

    Args:
        ratio: channel reduction r of the bottleneck (16 in the paper); C // r must be
            >= 1.
        kernel_initializer: initializer of W1 and W2.
        bias_initializer: initializer of b1 and b2.
        kernel_regularizer: optional regularizer of W1 and W2.

    Call args:
        inputs: channels-last images (B, H, W, C).

    Returns:
        (B, H, W, C): the inputs scaled per channel.

    Example:
        >>> SqueezeExcitation(ratio=4)(tf.random.normal([2, 8, 8, 16])).shape
        TensorShape([2, 8, 8, 16])
    """

    _poolings = (tf.reduce_mean,)
    # W1, b1 and W2, b2.
    _weight_names = (("squeeze_kernel", "squeeze_bias"), ("excite_kernel", "excite_bias"))

    def __init__(self, ratio=16, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(ratio=ratio, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, **kwargs)
