"""Fixed sine/cosine position encoding (Vaswani et al. 2017, section 3.5)."""
import math

import tensorflow as tf

from attnlab.layers.layer_helpers import checked_start_index, finite_number, sequence_length
from attnlab.validation import check_positive_int, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class SinusoidalPositionEncoding(tf.keras.layers.Layer):
    """Returns the sin/cos position table for the positions of the inputs.

    PE[p, 2i] = sin(p / base^(2i/D)) and PE[p, 2i+1] = cos(p / base^(2i/D)). The layer
    *returns* the encoding broadcast to the input shape (as keras-nlp's
    SinePositionEncoding does) instead of adding it, so callers choose how to combine it:
    usually `x + layer(x)`. The table has no weights; it is computed in float32 and cast
    to the layer's compute dtype.

    Args:
        max_length: optional largest position + 1; when set, longer inputs are an error.
        base: the wavelength base (10000 in the paper).

    Call args:
        inputs: (B, T, D) (or any (..., T, D)) tensor; only its shape and dtype are used.
        start_index: position of the first token (scalar); for cached decoding, where
            token t is fed alone with `start_index=t`.

    Returns:
        (B, T, D) encoding with the inputs' shape.

    Example:
        >>> x = tf.random.normal([2, 5, 8])
        >>> (x + SinusoidalPositionEncoding()(x)).shape
        TensorShape([2, 5, 8])
    """

    def __init__(self, max_length=None, base=10000.0, **kwargs):
        super().__init__(**kwargs)
        if max_length is not None:
            check_positive_int("max_length", max_length)
        finite_number("base", base, above=1)
        self.max_length = max_length
        self.base = float(base)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is not None and input_shape.rank < 2:
            raise ValueError("SinusoidalPositionEncoding expects inputs (..., T, D), got shape %s"
                             % str(tuple(input_shape.as_list())))
        super().build(input_shape)

    def call(self, inputs, start_index=0):
        if inputs.shape.rank is not None and inputs.shape.rank < 2:
            raise ValueError("SinusoidalPositionEncoding expects inputs (..., T, D), got shape %s"
                             % shape_str(inputs))
        length = sequence_length(inputs, -2)
        depth = inputs.shape[-1] if inputs.shape[-1] is not None else tf.shape(inputs)[-1]
        start, checks = checked_start_index(start_index, length, self.max_length,
                                            "SinusoidalPositionEncoding")
        with tf.control_dependencies(checks):
            positions = tf.cast(tf.range(length) + start, tf.float32)
        # Dimensions 2i and 2i+1 share the frequency base^(-2i/D).
        dims = tf.range(depth)
        exponent = tf.cast(2 * (dims // 2), tf.float32) / tf.cast(depth, tf.float32)
        inverse_frequency = tf.exp(-math.log(self.base) * exponent)
        angles = positions[:, tf.newaxis] * inverse_frequency[tf.newaxis, :]
        table = tf.where(tf.equal(dims % 2, 0)[tf.newaxis, :], tf.sin(angles), tf.cos(angles))
        return tf.broadcast_to(tf.cast(table, self.compute_dtype), tf.shape(inputs))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length, "base": self.base})
        return config
