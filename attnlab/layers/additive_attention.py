"""Additive (Bahdanau) attention of an RNN decoder over encoder outputs (Bahdanau et al. 2015)."""
import tensorflow as tf

from attnlab.ops.masked_softmax import masked_softmax
from attnlab.ops.masks import align_mask
from attnlab.ops.validation import check_floating, check_positive_int, shape_str


def seq2seq_inputs(layer_name, query, values, values_mask, dtype):
    """Check decoder-over-encoder inputs, cast them to `dtype`, give the query a time axis.

    Keras autocasts only a layer's first argument, so the values are cast here (they are
    float32 under mixed_float16 when they come straight from an Input).

    Args:
        query: (B, T, Dq), or (B, Dq) for a single decoder step.
        values: (B, S, Dv) encoder outputs.
        values_mask: (B, S) mask of the values (True = real token) or None; when None the
            Keras mask carried by `values` (from `Embedding(mask_zero=True)` or a masking
            RNN) is used.

    Returns:
        (query (B, T, Dq), values, mask (B, 1, S) bool or None, single_step).
    """
    if values_mask is None:
        values_mask = getattr(values, "_keras_mask", None)
    query, values = tf.convert_to_tensor(query), tf.convert_to_tensor(values)
    for name, x in (("query", query), ("values", values)):
        check_floating(name, x)
    if values.shape.rank != 3:
        raise ValueError("%s expects values (encoder outputs) of shape (B, S, Dv), got %s"
                         % (layer_name, shape_str(values)))
    if query.shape.rank not in (2, 3):
        raise ValueError("%s expects a query of shape (B, T, Dq) or (B, Dq) for one decoder "
                         "step, got %s" % (layer_name, shape_str(query)))
    mask = None
    if values_mask is not None:
        values_mask = tf.convert_to_tensor(values_mask)
        if values_mask.shape.rank != 2:
            raise ValueError("%s expects values_mask of shape (B, S), got %s (values %s)"
                             % (layer_name, shape_str(values_mask), shape_str(values)))
        mask = values_mask[:, tf.newaxis, :]
    query, values = tf.cast(query, dtype), tf.cast(values, dtype)
    single_step = query.shape.rank == 2
    if single_step:
        query = query[:, tf.newaxis, :]
    return query, values, mask, single_step


def known_depth(layer_name, name, x):
    """The static last dimension of `x`, which sizes the layer's weights."""
    if x.shape[-1] is None:
        raise ValueError("%s needs a known %s depth (last dimension), got shape %s"
                         % (layer_name, name, shape_str(x)))
    return x.shape[-1]


def seq2seq_context(scores, values, mask, single_step):
    """Masked softmax over the S axis of (B, T, S) scores and the weighted sum of values.

    Returns:
        context (B, T, Dv) and weights (B, T, S), without the T axis for a single step.
    """
    if mask is not None:
        mask = align_mask(mask, scores.shape)
    weights = masked_softmax(scores, mask)
    context = tf.matmul(weights, values)
    if single_step:
        return context[:, 0], weights[:, 0]
    return context, weights


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
            # A fresh initializer per weight: a reused unseeded instance repeats its values.
            initializer = self.kernel_initializer.__class__.from_config(
                self.kernel_initializer.get_config())
            return self.add_weight(name, shape=shape, initializer=initializer,
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
