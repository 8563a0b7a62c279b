"""Adaptive attention span (Sukhbaatar et al. 2019): each head learns how far back it looks."""
import numpy as np
import tensorflow as tf

from attnlab.layers.layer_helpers import finite_number, init_scope
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.ops.masks import combine_masks
from attnlab.ops.score_bias import align_bias
from attnlab.validation import check_number, check_positive_int


class _UnitInterval(tf.keras.constraints.Constraint):
    """Clips a variable into [0, 1] after each optimizer update, as the paper clamps z."""

    def __call__(self, w):
        return tf.clip_by_value(w, 0.0, 1.0)


@tf.keras.utils.register_keras_serializable(package="attnlab")
class SpanPenalty(tf.keras.regularizers.Regularizer):
    """coefficient * mean over heads of the span z_i in tokens: the paper's L1 term
    lambda / M * sum_i z_i (spans are >= 0, so the L1 norm is their sum).

    Args:
        coefficient: lambda.
        max_span: S_max, the span in tokens of a fraction of 1.
    """

    def __init__(self, coefficient, max_span):
        self.coefficient = float(coefficient)
        self.max_span = int(max_span)

    def __call__(self, fraction):
        spans = float(self.max_span) * tf.clip_by_value(fraction, 0.0, 1.0)
        return self.coefficient * tf.reduce_mean(spans)

    def get_config(self):
        return {"coefficient": self.coefficient, "max_span": self.max_span}


@tf.keras.utils.register_keras_serializable(package="attnlab")
class AdaptiveSpanAttention(MultiHeadAttention):
    """Multi-head attention in which each head learns its attention span.

    Head i has a span z_i = max_span * f_i with a trainable fraction f_i in [0, 1] (clipped
    into it after every optimizer update, as the paper clamps z). A key at distance x from
    the query gets the soft mask

        m_i(x) = clamp((R + z_i - x) / R, 0, 1)

    (1 up to z_i, a linear ramp of width R, 0 from z_i + R on), and the head's attention
    weights are the softmax weights times the mask, renormalised. That equals
    softmax(s + log m) exactly, so the layer adds log m to the scores as a per-head
    attention bias and masks the keys where m = 0 (no -inf enters the softmax); every
    kernel of MultiHeadAttention and its KV cache then apply it. The ramp makes the
    weights differentiable in z_i, and the span penalty pulls each z_i down until the
    task pays for the context.

    Positions: query t of the call sits at position t + S - T (the last query aligned
    with the last key, as with `causal=True`), at t with `use_causal_mask=True`, and at
    `cache_update_index + t` when writing a KV cache; key s sits at position s. The
    distance is x = |query position - key position|: with a causal mask the future keys
    are hidden anyway, so on every visible key this is the paper's query pos - key pos;
    without one, a head sees z_i (+ R) tokens on both sides.

    The span penalty is the paper's lambda / M * sum_i z_i (spans in tokens, M heads):
    `span_penalty * mean(spans)`, a regularization loss of the span fractions (Keras adds
    it with `add_loss`, in `layer.losses` and `model.losses`, so `fit` minimises it).

    Args:
        num_heads: H.
        key_dim: dk, depth of each head's queries and keys.
        max_span: S_max, the largest span in tokens (a fraction of 1).
        ramp: R, width in tokens of the linear ramp of the mask (32 in the paper).
        span_init: initial fraction of every head, in [0, 1] (1: each head starts seeing
            max_span tokens and gives up what it does not need).
        span_penalty: lambda >= 0, coefficient of the span penalty (the paper's 2e-6).
        **kwargs: MultiHeadAttention's arguments (value_dim, dropout, use_bias,
            output_shape, kernel_initializer, attention_impl, ..., name, dtype).
            The inputs must be sequences (B, T, D): one attention axis.

    Call arguments:
        As MultiHeadAttention's (query, value, key, attention_mask,
        return_attention_scores, training, use_causal_mask, causal, cache,
        cache_update_index, attention_bias); a given attention_bias is added to the
        span's.

    Returns:
        As MultiHeadAttention: (B, T, D) output, plus the (B, H, T, S) weights with
        `return_attention_scores` (they are 0 beyond each head's span) and the cache with
        `cache`.

    Example:
        >>> layer = AdaptiveSpanAttention(num_heads=2, key_dim=8, max_span=64, ramp=8,
        ...                               span_penalty=1e-3)
        >>> x = tf.random.normal([2, 10, 16])
        >>> layer(x, x, causal=True).shape
        TensorShape([2, 10, 16])
        >>> layer.spans
        array([64., 64.])
    """

    def __init__(self, num_heads, key_dim, max_span, ramp=32, span_init=1.0,
                 span_penalty=2e-6, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.max_span = check_positive_int("max_span", max_span)
        self.ramp = finite_number("ramp", ramp, above=0)
        self.span_init = check_number("span_init", span_init, at_least=0, at_most=1)
        self.span_penalty = finite_number("span_penalty", span_penalty, at_least=0)

    def _build_from_signature(self, query, value, key=None):
        """MultiHeadAttention's projections, then the (H,) span fractions."""
        super()._build_from_signature(query, value, key)
        if not self._layout.is_sequence:
            raise ValueError(
                "AdaptiveSpanAttention needs sequences (B, T, D) with one attention axis "
                "(its spans are distances along it), got query of shape %s and "
                "attention_axes=%r" % (tuple(self._query_shape.as_list()),
                                        self._attention_axes))
        regularizer = SpanPenalty(self.span_penalty, self.max_span) \
            if self.span_penalty > 0 else None
        with init_scope():
            # Not autocast: the mask is computed in float32, since in float16 the span
            # would be rounded to a coarse grid of token positions.
            self.span_fraction = self.add_weight(
                "span_fraction", shape=(self.num_heads,),
                initializer=tf.keras.initializers.Constant(float(self.span_init)),
                regularizer=regularizer, constraint=_UnitInterval(), trainable=True,
                experimental_autocast=False)

    @property
    def spans(self):
        """The learned span z_i of each head in tokens, a float64 NumPy array (H,); keys
        up to z_i + ramp away still get part of their weight."""
        if not self._built_from_signature:
            raise ValueError("AdaptiveSpanAttention has no spans before it is built: call "
                             "it once first")
        fraction = np.clip(np.asarray(self.span_fraction.numpy(), np.float64), 0.0, 1.0)
        return self.max_span * fraction

    def span_mask(self, query_length, key_length, offset=None):
        """The soft mask m of every head: float32 (H, T, S), 1 within the span, a ramp to
        0 over `ramp` tokens; query t at position t + offset (default S - T), key s at s.

        Example:
            >>> layer.span_mask(5, 5).shape
            TensorShape([2, 5, 5])
        """
        query_length = tf.convert_to_tensor(query_length, tf.int32)
        key_length = tf.convert_to_tensor(key_length, tf.int32)
        if offset is None:
            offset = key_length - query_length
        positions = tf.range(query_length) + tf.cast(offset, tf.int32)
        distance = tf.cast(tf.abs(positions[:, tf.newaxis] - tf.range(key_length)[tf.newaxis]),
                           tf.float32)
        spans = float(self.max_span) * tf.clip_by_value(
            tf.cast(self.span_fraction, tf.float32), 0.0, 1.0)
        ramp = float(self.ramp)
        return tf.clip_by_value(
            (ramp + spans[:, tf.newaxis, tf.newaxis] - distance[tf.newaxis]) / ramp, 0.0, 1.0)

    def _attend(self, q, k, v, mask, causal, offset, training, use_cache, return_scores,
                bias=None, unrotated=None):
        """MultiHeadAttention's attention with the span: log m added to the scores, keys
        with m = 0 masked."""
        span = self.span_mask(tf.shape(q)[2], tf.shape(k)[2], offset)[tf.newaxis]
        visible = span > 0.0
        # log of 1 where m = 0: those keys are masked, and log(0) would make NaN gradients.
        span_bias = tf.math.log(tf.where(visible, span, tf.ones_like(span)))
        scores_shape = tf.TensorShape([q.shape[0], self.num_heads, q.shape[2], k.shape[2]])
        span_bias = tf.cast(span_bias, q.dtype)
        if bias is not None:
            span_bias = align_bias(bias, scores_shape, q.dtype) + span_bias
        return super()._attend(q, k, v, combine_masks(mask, visible), causal, offset,
                               training, use_cache, return_scores, span_bias, unrotated)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_span": self.max_span,
            "ramp": self.ramp,
            "span_init": self.span_init,
            "span_penalty": self.span_penalty,
        })
        return config
