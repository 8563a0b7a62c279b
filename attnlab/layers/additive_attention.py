"""Additive (Bahdanau) attention of an RNN decoder over encoder outputs (Bahdanau et al. 2015)."""
import tensorflow as tf

from attnlab.layers.layer_helpers import (
    check_depth,
    clone_initializer,
    known_depth,
    seq2seq_context,
    seq2seq_inputs,
)
from attnlab.validation import check_positive_int


@tf.keras.utils.register_keras_serializable(package="attnlab")
class AdditiveAttention(tf.keras.layers.Layer):
    """Bahdanau attention: score(s, h) = v^T tanh(W1 s + W2 h), softmax over source positions.

    `s` is a decoder state (query), `h` an encoder output (value). The context is the
    weight-averaged encoder outputs. Padded source positions (values mask False) get zero
    weight; a row with no visible source position gets zero weights and zero context.

    Args:
        units: size of the hidden layer of the score MLP (width of W1, W2 and v).
        kernel_initializer: initializer of W1, W2 and v.
        kernel_regularizer: optional regularizer of W1, W2 and v.

    Call args:
        query: (B, T, Dq) decoder states, or (B, Dq) for a single decoder step.
        values: (B, S, Dv) encoder outputs.
        values_mask: optional (B, S) mask, True = real source token. Default: the Keras
            mask carried by `values`.
        return_weights: also return the attention weights.

    Returns:
        context (B, T, Dv) (or (B, Dv)), and weights (B, T, S) (or (B, S)) when
        `return_weights`. The output carries the query's Keras mask.

    Example:
        >>> attention = AdditiveAttention(units=16)
        >>> state, encoded = tf.random.normal([2, 32]), tf.random.normal([2, 7, 24])
        >>> context, weights = attention(state, encoded, return_weights=True)
        >>> context.shape, weights.shape
        (TensorShape([2, 24]), TensorShape([2, 7]))
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.supports_masking = True

    def _create_weights(self, query_depth, values_depth):
        # Called from `call`: Keras's build() only sees the first argument's shape.
        def kernel(name, shape):
            return self.add_weight(name, shape=shape,
                                   initializer=clone_initializer(self.kernel_initializer),
                                   regularizer=self.kernel_regularizer, trainable=True)

        self.query_kernel = kernel("query_kernel", (query_depth, self.units))     # W1
        self.values_kernel = kernel("values_kernel", (values_depth, self.units))  # W2
        self.score_kernel = kernel("score_kernel", (self.units,))                 # v

    def call(self, query, values, values_mask=None, return_weights=False):
        query, values, mask, single_step = seq2seq_inputs(
            "AdditiveAttention", query, values, values_mask, self.compute_dtype)
        # Checked by attribute: a SavedModel load restores the variables as attributes.
        if not hasattr(self, "score_kernel"):
            with tf.init_scope():
                self._create_weights(known_depth("AdditiveAttention", "query", query),
                                     known_depth("AdditiveAttention", "values", values))
        query = check_depth("AdditiveAttention", "query", query, self.query_kernel.shape[0])
        values = check_depth("AdditiveAttention", "values", values, self.values_kernel.shape[0])
        projected_query = tf.matmul(query, self.query_kernel)     # (B, T, U)
        projected_values = tf.matmul(values, self.values_kernel)  # (B, S, U)
        hidden = tf.tanh(projected_query[:, :, tf.newaxis, :]
                         + projected_values[:, tf.newaxis, :, :])  # (B, T, S, U)
        scores = tf.tensordot(hidden, self.score_kernel, axes=1)   # (B, T, S)
        context, weights = seq2seq_context(scores, values, mask, single_step)
        return (context, weights) if return_weights else context

    def compute_mask(self, query, mask=None):
        if query.shape.rank == 2 or mask is None:
            return None
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
