"""Multiplicative and concat (Luong) attention of an RNN decoder over encoder outputs.

Luong, Pham and Manning 2015, "Effective Approaches to Attention-based Neural Machine
Translation", section 3.1 (global attention).
"""
import tensorflow as tf

from attnlab.layers.layer_helpers import (
    check_depth,
    clone_initializer,
    known_depth,
    seq2seq_context,
    seq2seq_inputs,
)
from attnlab.validation import check_choice, check_positive_int

SCORES = ("dot", "general", "concat")


@tf.keras.utils.register_keras_serializable(package="attnlab")
class LuongAttention(tf.keras.layers.Layer):
    """Luong global attention with the "dot", "general" or "concat" score.

    - dot:     score(s, h) = s^T h                (needs Dq == Dv)
    - general: score(s, h) = s^T W_a h            (W_a: (Dq, Dv))
    - concat:  score(s, h) = v^T tanh(W [s; h])   (W: (Dq + Dv, units), v: (units,))

    The weights are a softmax over source positions (padded ones get zero weight) and
    the context is the weighted sum of encoder outputs. Luong's attentional state
    tanh(W_c [context; s]) belongs to the decoder and is left to it.

    Args:
        score: "dot", "general" or "concat".
        units: hidden size of the concat score (default: the values depth Dv); only
            valid with score="concat".
        kernel_initializer: initializer of W_a, W and v.
        kernel_regularizer: optional regularizer of W_a, W and v.

    Call args:
        query: (B, T, Dq) decoder states, or (B, Dq) for a single decoder step.
        values: (B, S, Dv) encoder outputs.
        values_mask: optional (B, S) mask, True = real source token. Default: the Keras
            mask carried by `values`.
        return_weights: also return the attention weights.

    Returns:
        context (B, T, Dv) (or (B, Dv)), and weights (B, T, S) (or (B, S)) when
        `return_weights`.

    Example:
        >>> attention = LuongAttention("general")
        >>> state, encoded = tf.random.normal([2, 3, 32]), tf.random.normal([2, 7, 24])
        >>> attention(state, encoded).shape
        TensorShape([2, 3, 24])
    """

    def __init__(self, score="general", units=None, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        check_choice("score", score, SCORES)
        if units is not None:
            if score != "concat":
                raise ValueError("units is only used by score='concat', got units=%r with "
                                 "score=%r" % (units, score))
            check_positive_int("units", units)
        self.score = score
        self.units = units
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.supports_masking = True

    def _create_weights(self, query_depth, values_depth):
        # Called from `call`: Keras's build() only sees the first argument's shape.
        def kernel(name, shape):
            return self.add_weight(name, shape=shape,
                                   initializer=clone_initializer(self.kernel_initializer),
                                   regularizer=self.kernel_regularizer, trainable=True)

        if self.score == "general":
            self.score_kernel = kernel("score_kernel", (query_depth, values_depth))   # W_a
        elif self.score == "concat":
            units = self.units or values_depth
            self.concat_kernel = kernel("concat_kernel", (query_depth + values_depth, units))
            self.score_vector = kernel("score_vector", (units,))   # v

    def call(self, query, values, values_mask=None, return_weights=False):
        query, values, mask, single_step = seq2seq_inputs(
            "LuongAttention", query, values, values_mask, self.compute_dtype)
        query_depth = known_depth("LuongAttention", "query", query)
        values_depth = known_depth("LuongAttention", "values", values)
        if self.score == "dot" and query_depth != values_depth:
            raise ValueError(
                "LuongAttention(score='dot') needs query and values of the same depth, got "
                "query depth %d and values depth %d (use score='general' to learn a map)"
                % (query_depth, values_depth))
        # Checked by attribute: a SavedModel load restores the variables as attributes.
        weight_name = {"dot": None, "general": "score_kernel", "concat": "concat_kernel"}
        if weight_name[self.score] and not hasattr(self, weight_name[self.score]):
            with tf.init_scope():
                self._create_weights(query_depth, values_depth)
        if self.score == "general":
            query = check_depth("LuongAttention", "query", query, self.score_kernel.shape[0])
            values = check_depth("LuongAttention", "values", values, self.score_kernel.shape[1])
        elif self.score == "concat" and \
                query_depth + values_depth != self.concat_kernel.shape[0]:
            # The concat kernel holds [W_s; W_h]: only the sum of the depths is stored.
            raise ValueError(
                "LuongAttention(score='concat') was built for query depth + values depth = %d, "
                "got query depth %d and values depth %d"
                % (self.concat_kernel.shape[0], query_depth, values_depth))
        if self.score == "dot":
            scores = tf.matmul(query, values, transpose_b=True)
        elif self.score == "general":
            scores = tf.matmul(tf.matmul(query, self.score_kernel), values, transpose_b=True)
        else:
            # W [s; h] = W_s s + W_h h: project each side once instead of every (t, s) pair.
            projected_query = tf.matmul(query, self.concat_kernel[:query_depth])
            projected_values = tf.matmul(values, self.concat_kernel[query_depth:])
            hidden = tf.tanh(projected_query[:, :, tf.newaxis, :]
                             + projected_values[:, tf.newaxis, :, :])   # (B, T, S, units)
            scores = tf.tensordot(hidden, self.score_vector, axes=1)
        context, weights = seq2seq_context(scores, values, mask, single_step)
        return (context, weights) if return_weights else context

    def compute_mask(self, query, mask=None):
        if query.shape.rank == 2 or mask is None:
            return None
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "score": self.score,
            "units": self.units,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
