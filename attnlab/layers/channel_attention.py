"""Channel attention of CBAM (Woo et al. 2018): which feature maps matter."""
import tensorflow as tf

from attnlab.ops.validation import check_positive_int


def image_channels(layer_name, input_shape):
    """The channel count C of channels-last images (B, H, W, C); ValueError otherwise."""
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4 or input_shape[-1] is None:
        shape = "(unknown rank)" if input_shape.rank is None else str(
            tuple(input_shape.as_list()))
        raise ValueError("%s expects channels-last images (B, H, W, C) with a known C, got "
                         "shape %s" % (layer_name, shape))
    return input_shape[-1]


def reduced_channels(layer_name, channels, ratio):
    """C // ratio, the width of the bottleneck MLP; ValueError when it would be 0."""
    if channels // ratio < 1:
        raise ValueError("%s: C // ratio must be >= 1, got C=%d channels with ratio=%d (use a "
                         "ratio <= %d)" % (layer_name, channels, ratio, channels))
    return channels // ratio


def fresh(initializer):
    """A copy of `initializer`: a reused unseeded instance repeats its values."""
    return initializer.__class__.from_config(initializer.get_config())


@tf.keras.utils.register_keras_serializable(package="attnlab")
class ChannelAttention(tf.keras.layers.Layer):
    """Rescales channels by sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))).

    The MLP (C -> C // ratio, ReLU -> C) is shared by the average- and max-pooled
    descriptors; max pooling adds the most distinctive response of each channel to the
    average that squeeze-and-excitation uses.

    Args:
        ratio: channel reduction of the MLP's hidden layer; C // ratio must be >= 1.
        kernel_initializer: initializer of the MLP kernels.
        bias_initializer: initializer of the MLP biases.
        kernel_regularizer: optional regularizer of the MLP kernels.

    Call args:
        inputs: channels-last images (B, H, W, C).

    Returns:
        (B, H, W, C): the inputs scaled per channel.

    Example:
        >>> ChannelAttention(ratio=4)(tf.random.normal([2, 8, 8, 16])).shape
        TensorShape([2, 8, 8, 16])
    """

    def __init__(self, ratio=8, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.ratio = check_positive_int("ratio", ratio)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels = image_channels("ChannelAttention", input_shape)
        hidden = reduced_channels("ChannelAttention", channels, self.ratio)

        def weight(name, shape, initializer, regularizer=None):
            return self.add_weight(name, shape=shape, initializer=fresh(initializer),
                                   regularizer=regularizer, trainable=True)

        self.hidden_kernel = weight("hidden_kernel", (channels, hidden), self.kernel_initializer,
                                    self.kernel_regularizer)
        self.hidden_bias = weight("hidden_bias", (hidden,), self.bias_initializer)
        self.output_kernel = weight("output_kernel", (hidden, channels), self.kernel_initializer,
                                    self.kernel_regularizer)
        self.output_bias = weight("output_bias", (channels,), self.bias_initializer)
        super().build(input_shape)

    def _mlp(self, descriptor):
        hidden = tf.nn.relu(tf.matmul(descriptor, self.hidden_kernel) + self.hidden_bias)
        return tf.matmul(hidden, self.output_kernel) + self.output_bias

    def call(self, inputs):
        average = tf.reduce_mean(inputs, axis=[1, 2])
        maximum = tf.reduce_max(inputs, axis=[1, 2])
        scale = tf.sigmoid(self._mlp(average) + self._mlp(maximum))
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
