"""Spatial attention of CBAM (Woo et al. 2018): where in the image to look."""
import tensorflow as tf

from attnlab.layers.layer_helpers import clone_initializer, image_channels
from attnlab.validation import check_bool, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class SpatialAttention(tf.keras.layers.Layer):
    """Rescales positions by sigmoid(conv_kxk([mean_c(x); max_c(x)])).

    The channel-wise average and maximum form a (B, H, W, 2) descriptor; one k x k
    convolution with 'same' zero padding and a sigmoid turn it into a (B, H, W, 1) map.
    (The paper's reference code also batch-normalizes the conv output; this layer keeps a
    conv bias instead, so the map does not depend on the batch.)

    Args:
        kernel_size: odd, positive size k of the convolution (7 in the paper).
        return_attention: also return the (B, H, W, 1) map, e.g. to overlay on images.
        kernel_initializer: initializer of the (k, k, 2, 1) kernel.
        bias_initializer: initializer of the bias.
        kernel_regularizer: optional regularizer of the kernel.

    Call args:
        inputs: channels-last images (B, H, W, C).

    Returns:
        (B, H, W, C) inputs scaled per position, and the (B, H, W, 1) map when
        `return_attention`.

    Example:
        >>> out, attention = SpatialAttention(3, return_attention=True)(
        ...     tf.random.normal([2, 8, 8, 16]))
        >>> attention.shape
        TensorShape([2, 8, 8, 1])
    """

    def __init__(self, kernel_size=7, return_attention=False,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or \
                kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError("kernel_size must be an odd positive integer (so that 'same' "
                             "padding is centred), got %r" % (kernel_size,))
        self.kernel_size = kernel_size
        self.return_attention = check_bool("return_attention", return_attention)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        image_channels("SpatialAttention", input_shape)
        k = self.kernel_size
        self.kernel = self.add_weight("kernel", shape=(k, k, 2, 1),
                                      initializer=clone_initializer(self.kernel_initializer),
                                      regularizer=self.kernel_regularizer, trainable=True)
        self.bias = self.add_weight("bias", shape=(1,),
                                    initializer=clone_initializer(self.bias_initializer),
                                    trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        if inputs.shape.rank != 4:
            raise ValueError("SpatialAttention expects channels-last images (B, H, W, C), got "
                             "shape %s" % shape_str(inputs))
        descriptor = tf.concat([tf.reduce_mean(inputs, axis=-1, keepdims=True),
                                tf.reduce_max(inputs, axis=-1, keepdims=True)], axis=-1)
        logits = tf.nn.conv2d(descriptor, self.kernel, strides=1, padding="SAME") + self.bias
        attention = tf.sigmoid(logits)
        output = inputs * attention
        return (output, attention) if self.return_attention else output

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if self.return_attention:
            return [input_shape, input_shape[:-1].concatenate([1])]
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_size": self.kernel_size,
            "return_attention": self.return_attention,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
