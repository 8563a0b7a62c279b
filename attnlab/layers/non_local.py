"""Non-local block (Wang et al. 2018) / SAGAN self-attention (Zhang et al. 2019): every
position of a feature map attends to every other position."""
import math

import tensorflow as tf

from attnlab.layers.layer_helpers import check_depth, clone_initializer, image_channels
from attnlab.ops.kernels import attention_kernel
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from attnlab.validation import check_bool, check_positive_int


def _optional_channels(name, value):
    """None (the default fraction of C) or a channel count >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("%s must be None (a default fraction of the input channels) or an "
                         "integer >= 1, got %r" % (name, value))
    return value


@tf.keras.utils.register_keras_serializable(package="attnlab")
class NonLocalBlock(tf.keras.layers.Layer):
    """Self-attention over the H * W positions of a feature map, added back residually.

    With 1x1 projections (per-position matmuls) q = x W_q, k = x W_k, v = x W_v:

        A = softmax_over_keys(scale * q k^T)      (B, HW, HW')
        out = (A v) W_o                           (B, H, W, C)
        y = x + gamma * out

    This is the embedded-Gaussian non-local block and SAGAN's self-attention layer. gamma
    is a learned scalar initialised to 0, so the block starts as the identity and the
    network lets non-local evidence in gradually (SAGAN's choice; the non-local paper gets
    the same effect from a zero-initialised batch norm). With `downsample=p` the keys and
    values are max-pooled p x p after their projection, as SAGAN does, so the map is
    (HW x HW / p^2) and the cost drops by p^2.

    Channel defaults follow SAGAN: C // 8 for queries and keys (they only rank
    positions), C // 2 for values (they carry the features that are mixed in).

    Args:
        inner_channels: depth of the queries and keys; default C // 8 (must come out >= 1,
            so C >= 8, or give it).
        value_channels: depth of the values before the output projection; default C // 2.
        downsample: pool size p of the keys and values (1: none; 2: SAGAN's 2x2 max
            pool). H and W must be divisible by p.
        scaled: multiply the scores by 1 / sqrt(inner_channels), as Transformers do. The
            non-local and SAGAN papers do not scale (False, the default); scaling keeps
            the softmax from saturating when the inner depth is large.
        use_bias: add biases to the four projections.
        return_attention: also return the (B, HW, HW') attention map, rows indexed by
            query position h * W + w, columns by (pooled) key position.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        gamma_initializer: initializer of the residual scale gamma ("zeros": identity at
            start).
        kernel_regularizer: optional regularizer of the projection kernels.

    Call args:
        inputs: channels-last feature maps (B, H, W, C).

    Returns:
        (B, H, W, C) features, and the (B, H*W, H*W / downsample^2) attention map
        (rows sum to 1) when `return_attention`.

    Example:
        >>> features, attention = NonLocalBlock(downsample=2, return_attention=True)(
        ...     tf.random.normal([2, 8, 8, 16]))
        >>> features.shape, attention.shape
        (TensorShape([2, 8, 8, 16]), TensorShape([2, 64, 16]))
    """

    def __init__(self, inner_channels=None, value_channels=None, downsample=1, scaled=False,
                 use_bias=True, return_attention=False, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", gamma_initializer="zeros", kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.inner_channels = _optional_channels("inner_channels", inner_channels)
        self.value_channels = _optional_channels("value_channels", value_channels)
        self.downsample = check_positive_int("downsample", downsample)
        self.scaled = check_bool("scaled", scaled)
        self.use_bias = check_bool("use_bias", use_bias)
        self.return_attention = check_bool("return_attention", return_attention)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.gamma_initializer = tf.keras.initializers.get(gamma_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self._kernel = attention_kernel("auto")

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        channels = image_channels("NonLocalBlock", input_shape)
        self._check_size(input_shape[1], input_shape[2])
        inner = self.inner_channels or channels // 8
        values = self.value_channels or channels // 2
        for name, depth, ratio in (("inner_channels", inner, 8), ("value_channels", values, 2)):
            if depth < 1:
                raise ValueError("NonLocalBlock: the default %s C // %d is 0 for C=%d input "
                                 "channels; give %s explicitly" % (name, ratio, channels, name))
        self._inner, self._values = inner, values
        for name, depth_in, depth_out in (("query", channels, inner), ("key", channels, inner),
                                          ("value", channels, values),
                                          ("output", values, channels)):
            setattr(self, name + "_kernel", self.add_weight(
                name + "_kernel", shape=(depth_in, depth_out),
                initializer=clone_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer, trainable=True))
            setattr(self, name + "_bias", self.add_weight(
                name + "_bias", shape=(depth_out,),
                initializer=clone_initializer(self.bias_initializer),
                trainable=True) if self.use_bias else None)
        self.gamma = self.add_weight("gamma", shape=(),
                                     initializer=clone_initializer(self.gamma_initializer),
                                     trainable=True)
        super().build(input_shape)

    def _check_size(self, height, width):
        p = self.downsample
        if p == 1:
            return
        for name, size in (("height", height), ("width", width)):
            if size is not None and size % p:
                raise ValueError("NonLocalBlock with downsample=%d needs a %s divisible by "
                                 "%d (keys and values are max-pooled %dx%d), got %s %d"
                                 % (p, name, p, p, p, name, size))

    def _project(self, x, name):
        """A 1x1 convolution: (B, H, W, Cin) -> (B, H, W, Cout)."""
        y = tf.tensordot(x, getattr(self, name + "_kernel"), axes=[[3], [0]])
        bias = getattr(self, name + "_bias")
        return y if bias is None else y + bias

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        image_channels("NonLocalBlock", x.shape)
        self._check_size(x.shape[1], x.shape[2])
        x = check_depth("NonLocalBlock", "inputs", x, self.query_kernel.shape[0])
        shape = tf.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        keys, values = self._project(x, "key"), self._project(x, "value")
        p = self.downsample
        checks = []
        if p > 1:
            if x.shape[1] is None or x.shape[2] is None:
                checks = [tf.debugging.assert_equal(
                    tf.math.floormod(tf.stack([height, width]), p), 0,
                    message="NonLocalBlock with downsample=%d needs a height and width "
                            "divisible by %d" % (p, p))]
            keys = tf.nn.max_pool2d(keys, p, p, "VALID")
            values = tf.nn.max_pool2d(values, p, p, "VALID")
        with tf.control_dependencies(checks):
            query = tf.reshape(self._project(x, "query"), [batch, -1, self._inner])
        keys = tf.reshape(keys, [batch, -1, self._inner])
        values = tf.reshape(values, [batch, -1, self._values])
        scale = 1.0 / math.sqrt(self._inner) if self.scaled else 1.0
        if self.return_attention:
            attended, attention = scaled_dot_product_attention(
                query, keys, values, scale=scale, return_weights=True)
        else:
            # The kernels take (B, heads, L, d) with queries already scaled: one head.
            attended = self._kernel(query[:, tf.newaxis] * tf.cast(scale, query.dtype),
                                    keys[:, tf.newaxis], values[:, tf.newaxis])[:, 0]
            attention = None
        attended = tf.reshape(attended, [batch, height, width, self._values])
        output = x + self.gamma * self._project(attended, "output")
        return (output, attention) if self.return_attention else output

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if not self.return_attention:
            return input_shape
        height, width = input_shape[1], input_shape[2]
        queries = None if height is None or width is None else height * width
        keys = None if queries is None else queries // (self.downsample ** 2)
        return [input_shape, tf.TensorShape([input_shape[0], queries, keys])]

    def get_config(self):
        config = super().get_config()
        config.update({
            "inner_channels": self.inner_channels,
            "value_channels": self.value_channels,
            "downsample": self.downsample,
            "scaled": self.scaled,
            "use_bias": self.use_bias,
            "return_attention": self.return_attention,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "gamma_initializer": tf.keras.initializers.serialize(self.gamma_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
