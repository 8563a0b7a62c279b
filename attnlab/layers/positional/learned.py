"""Trainable absolute position embeddings (as in BERT and GPT-2)."""
import tensorflow as tf

from attnlab.layers.layer_helpers import check_depth, checked_start_index, sequence_length
from attnlab.validation import check_positive_int, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class LearnedPositionEmbedding(tf.keras.layers.Layer):
    """Returns rows of a trainable (max_length, D) table for the positions of the inputs.

    Like SinusoidalPositionEncoding the layer returns the embedding broadcast to the input
    shape; add it yourself: `x + layer(x)`.

    Args:
        max_length: number of positions in the table; positions >= max_length are an
            error (ValueError when known while tracing or in eager mode, a failed
            `tf.debugging` assertion otherwise).
        initializer: initializer of the table.

    Call args:
        inputs: (B, T, D) tensor; only its shape is used.
        start_index: position of the first token (scalar), for cached decoding.

    Returns:
        (B, T, D) embedding with the inputs' shape.

    Example:
        >>> x = tf.random.normal([2, 5, 8])
        >>> LearnedPositionEmbedding(max_length=16)(x, start_index=3).shape
        TensorShape([2, 5, 8])
    """

    def __init__(self, max_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_length = check_positive_int("max_length", max_length)
        self.initializer = tf.keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is None or input_shape.rank < 2 or input_shape[-1] is None:
            shape = "(unknown rank)" if input_shape.rank is None else str(
                tuple(input_shape.as_list()))
            raise ValueError("LearnedPositionEmbedding expects inputs (..., T, D) with a known "
                             "D, got shape %s" % shape)
        self.embeddings = self.add_weight(
            "embeddings", shape=(self.max_length, input_shape[-1]),
            initializer=self.initializer, trainable=True)
        super().build(input_shape)

    def call(self, inputs, start_index=0):
        if inputs.shape.rank is not None and inputs.shape.rank < 2:
            raise ValueError("LearnedPositionEmbedding expects inputs (..., T, D), got shape %s"
                             % shape_str(inputs))
        # broadcast_to would fail on a depth other than the table's with a raw kernel error.
        inputs = check_depth("LearnedPositionEmbedding", "inputs", inputs,
                             self.embeddings.shape[-1])
        length = sequence_length(inputs, -2)
        start, checks = checked_start_index(start_index, length, self.max_length,
                                            "LearnedPositionEmbedding")
        with tf.control_dependencies(checks):
            rows = tf.slice(self.embeddings, tf.stack([start, 0]),
                            tf.stack([tf.cast(length, tf.int32), -1]))
        return tf.broadcast_to(tf.cast(rows, self.compute_dtype), tf.shape(inputs))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length,
                       "initializer": tf.keras.initializers.serialize(self.initializer)})
        return config
