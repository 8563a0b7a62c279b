"""Convolutional Block Attention Module, CBAM (Woo et al. 2018): channel then spatial."""
import tensorflow as tf

from attnlab.layers.channel_attention import ChannelAttention
from attnlab.layers.layer_helpers import check_depth, image_channels
from attnlab.layers.spatial_attention import SpatialAttention
from attnlab.validation import check_bool


@tf.keras.utils.register_keras_serializable(package="attnlab")
class CBAM(tf.keras.layers.Layer):
    """Refines CNN features with channel attention followed by spatial attention.

    x' = ChannelAttention(x) (shared MLP on avg- and max-pooled descriptors, sigmoid),
    x'' = SpatialAttention(x') (k x k conv on channel-wise avg and max, sigmoid); the
    sequential channel-first order is the paper's best variant.

    Args:
        ratio: channel reduction of the channel-attention MLP; C // ratio must be >= 1.
        kernel_size: odd, positive size of the spatial-attention convolution.
        return_attention: also return the (B, H, W, 1) spatial map (for image overlays).
        kernel_initializer: initializer of the MLP and conv kernels.
        kernel_regularizer: optional regularizer of the MLP and conv kernels.

    Call args:
        inputs: channels-last images (B, H, W, C).

    Returns:
        (B, H, W, C) refined features, and the (B, H, W, 1) spatial map when
        `return_attention`.

    Example:
        >>> features, spatial = CBAM(ratio=4, return_attention=True)(
        ...     tf.random.normal([2, 8, 8, 16]))
        >>> features.shape, spatial.shape
        (TensorShape([2, 8, 8, 16]), TensorShape([2, 8, 8, 1]))
    """

    def __init__(self, ratio=8, kernel_size=7, return_attention=False,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.return_attention = check_bool("return_attention", return_attention)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        # The sublayers validate ratio and kernel_size and share this layer's dtype policy.
        common = {"kernel_initializer": self.kernel_initializer,
                  "kernel_regularizer": self.kernel_regularizer, "dtype": self.dtype_policy}
        self.channel_attention = ChannelAttention(ratio=ratio, name="channel_attention",
                                                  **common)
        self.spatial_attention = SpatialAttention(kernel_size=kernel_size, return_attention=True,
                                                  name="spatial_attention", **common)
        self.ratio = ratio
        self.kernel_size = kernel_size

    def build(self, input_shape):
        image_channels("CBAM", input_shape)
        self.channel_attention.build(input_shape)
        self.spatial_attention.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        # Checked here too, so that the error names CBAM rather than its sublayer.
        if inputs.shape.rank == 4:
            inputs = check_depth("CBAM", "inputs", inputs,
                                 self.channel_attention.hidden_kernel.shape[0])
        refined, spatial = self.spatial_attention(self.channel_attention(inputs))
        return (refined, spatial) if self.return_attention else refined

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if self.return_attention:
            return [input_shape, input_shape[:-1].concatenate([1])]
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "ratio": self.ratio,
            "kernel_size": self.kernel_size,
            "return_attention": self.return_attention,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
