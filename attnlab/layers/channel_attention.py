"""Channel attention of CBAM (Woo et al. 2018): which feature maps matter."""
import tensorflow as tf

from attnlab.layers.layer_helpers import check_depth, clone_initializer, image_channels
from attnlab.validation import check_positive_int, shape_str


def reduced_channels(layer_name, channels, ratio):
    """C // ratio, the width of the bottleneck MLP; ValueError when it would be 0."""
    if channels // ratio < 1:
        raise ValueError("%s: C // ratio must be >= 1, got C=%d channels with ratio=%d (use a "
                         "ratio <= %d)" % (layer_name, channels, ratio, channels))
    return channels // ratio


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

    # The pooled descriptors that share the MLP (squeeze-and-excitation keeps the average
    # only) and the names of its (kernel, bias) pairs, hidden layer first.
    _poolings = (tf.reduce_mean, tf.reduce_max)
    _weight_names = (("hidden_kernel", "hidden_bias"), ("output_kernel", "output_bias"))

    def __init__(self, ratio=8, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.ratio = check_positive_int("ratio", ratio)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        layer_name = type(self).__name__
        channels = image_channels(layer_name, input_shape)
        hidden = reduced_channels(layer_name, channels, self.ratio)
        for (kernel_name, bias_name), (fan_in, fan_out) in zip(
                self._weight_names, ((channels, hidden), (hidden, channels))):
            kernel = self.add_weight(kernel_name, shape=(fan_in, fan_out),
                                     initializer=clone_initializer(self.kernel_initializer),
                                     regularizer=self.kernel_regularizer, trainable=True)
            bias = self.add_weight(bias_name, shape=(fan_out,),
                                   initializer=clone_initializer(self.bias_initializer),
                                   trainable=True)
            setattr(self, kernel_name, kernel)
            setattr(self, bias_name, bias)
        super().build(input_shape)

    def _mlp(self, descriptor):
        """The bottleneck MLP, C -> C // ratio (ReLU) -> C, on (B, C) descriptors."""
        (hidden_kernel, hidden_bias), (output_kernel, output_bias) = (
            (getattr(self, kernel), getattr(self, bias)) for kernel, bias in self._weight_names)
        hidden = tf.nn.relu(tf.matmul(descriptor, hidden_kernel) + hidden_bias)
        return tf.matmul(hidden, output_kernel) + output_bias

    def call(self, inputs):
        layer_name = type(self).__name__
        if inputs.shape.rank != 4:
            raise ValueError("%s expects channels-last images (B, H, W, C), got shape %s"
                             % (layer_name, shape_str(inputs)))
        inputs = check_depth(layer_name, "inputs", inputs,
                             getattr(self, self._weight_names[0][0]).shape[0])
        # Each descriptor (B, C) pooled over H and W goes through the one MLP; logits add.
        logits = [self._mlp(pool(inputs, axis=[1, 2])) for pool in self._poolings]
        scale = tf.sigmoid(sum(logits[1:], logits[0]))
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
