"""Squeeze-and-excitation channel attention (Hu et al. 2018)."""
import tensorflow as tf

from attnlab.layers.channel_attention import fresh, image_channels, reduced_channels
from attnlab.ops.validation import check_positive_int


@tf.keras.utils.register_keras_serializable(package="attnlab")
class SqueezeExcitation(tf.keras.layers.Layer):
    """Rescales channels by sigmoid(W2 relu(W1 avgpool(x) + b1) + b2).

    Squeeze: global average pooling gives one descriptor per channel. Excite: a
    bottleneck MLP (C -> C // ratio -> C) with a sigmoid gives each channel a weight in
    (0, 1) that multiplies its feature map.

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

    def __init__(self, ratio=16, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.ratio = check_positive_int("ratio", ratio)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels = image_channels("SqueezeExcitation", input_shape)
        hidden = reduced_channels("SqueezeExcitation", channels, self.ratio)

        def weight(name, shape, initializer, regularizer=None):
            return self.add_weight(name, shape=shape, initializer=fresh(initializer),
                                   regularizer=regularizer, trainable=True)

        self.squeeze_kernel = weight("squeeze_kernel", (channels, hidden),
                                     self.kernel_initializer, self.kernel_regularizer)
        self.squeeze_bias = weight("squeeze_bias", (hidden,), self.bias_initializer)
        self.excite_kernel = weight("excite_kernel", (hidden, channels),
                                    self.kernel_initializer, self.kernel_regularizer)
        self.excite_bias = weight("excite_bias", (channels,), self.bias_initializer)
        super().build(input_shape)

    def call(self, inputs):
        squeezed = tf.reduce_mean(inputs, axis=[1, 2])
        hidden = tf.nn.relu(tf.matmul(squeezed, self.squeeze_kernel) + self.squeeze_bias)
        scale = tf.sigmoid(tf.matmul(hidden, self.excite_kernel) + self.excite_bias)
        return inputs * scale[:, tf.newaxis, tf.newaxis, :]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "ratio": self.ratio,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
