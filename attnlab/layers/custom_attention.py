"""A single-head self-attention layer: the first custom attention most researchers write."""
import tensorflow as tf

from attnlab.layers.layer_helpers import clone_initializer
from attnlab.ops.masks import combine_masks
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from attnlab.validation import check_bool, check_floating, check_positive_int, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class CustomAttention(tf.keras.layers.Layer):
    """Single-head scaled dot-product self-attention with learned Q/K/V projections.

    Args:
        head_size: depth of the projected queries, keys and values (and of the output).
        return_weights: also return the attention weights (B, T, T).
        use_bias: add a bias to each projection.
        kernel_initializer: initializer of the three (D, head_size) kernels.
        bias_initializer: initializer of the three (head_size,) biases.
        kernel_regularizer: optional regularizer of the kernels.
        bias_regularizer: optional regularizer of the biases.
        **kwargs: base Layer arguments (name, dtype, ...).

    Call arguments:
        inputs: (B, T, D) floating tensor.
        mask: (B, T) Keras padding mask (True = real token), e.g. from
            `Embedding(mask_zero=True)`; padded keys are hidden from every query.
        causal: hide keys after each query.

    Returns:
        (B, T, head_size), and the weights (B, T, T) when `return_weights`.
        The input mask is passed on as the output's Keras mask.

    Example:
        >>> x = tf.random.normal([2, 5, 8])
        >>> CustomAttention(4)(x, causal=True).shape
        TensorShape([2, 5, 4])
    """

    def __init__(self, head_size, return_weights=False, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.head_size = check_positive_int("head_size", head_size)
        self.return_weights = check_bool("return_weights", return_weights)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = tf.keras.regularizers.get(bias_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 3 or input_shape[-1] is None:
            raise ValueError("CustomAttention expects inputs of shape (B, T, D) with a known "
                             "D, got %s" % (tuple(input_shape.as_list())
                                            if input_shape.rank is not None else None,))
        depth = input_shape[-1]
        for name in ("query", "key", "value"):
            kernel = self.add_weight(
                name=name + "_kernel", shape=(depth, self.head_size),
                initializer=clone_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer, trainable=True)
            setattr(self, name + "_kernel", kernel)
            bias = None
            if self.use_bias:
                bias = self.add_weight(
                    name=name + "_bias", shape=(self.head_size,),
                    initializer=clone_initializer(self.bias_initializer),
                    regularizer=self.bias_regularizer, trainable=True)
            setattr(self, name + "_bias", bias)
        super().build(input_shape)

    def _project(self, x, name):
        y = tf.matmul(x, tf.cast(getattr(self, name + "_kernel"), x.dtype))
        bias = getattr(self, name + "_bias")
        if bias is not None:
            y = y + tf.cast(bias, x.dtype)
        return y

    def call(self, inputs, mask=None, causal=False, training=None):
        inputs = tf.convert_to_tensor(inputs)
        check_floating("inputs", inputs)
        inputs = tf.cast(inputs, self.compute_dtype)
        depth = self.query_kernel.shape[0]
        if inputs.shape[-1] is not None and inputs.shape[-1] != depth:
            raise ValueError("CustomAttention was built for inputs of depth %d, got inputs of "
                             "shape %s" % (depth, shape_str(inputs)))
        query = self._project(inputs, "query")
        key = self._project(inputs, "key")
        value = self._project(inputs, "value")
        key_mask = None
        if mask is not None:
            # The padding mask hides keys; padded queries still attend to the real tokens
            # and are hidden downstream by the propagated Keras mask.
            key_mask = tf.cast(mask, tf.bool)[:, tf.newaxis, :]
        output, weights = scaled_dot_product_attention(
            query, key, value, mask=combine_masks(key_mask), causal=causal,
            return_weights=True)
        if self.return_weights:
            return output, weights
        return output

    def compute_mask(self, inputs, mask=None):
        if self.return_weights:
            return [mask, None]
        return mask

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        output_shape = input_shape[:-1].concatenate([self.head_size])
        if self.return_weights:
            return output_shape, input_shape[:-1].concatenate(input_shape[1:2])
        return output_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "head_size": self.head_size,
            "return_weights": self.return_weights,
            "use_bias": self.use_bias,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": tf.keras.regularizers.serialize(self.bias_regularizer),
        })
        return config
