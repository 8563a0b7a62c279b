"""Scaled dot-product attention (Vaswani et al. 2017), the reference every variant matches."""
import math

import numpy as np
import tensorflow as tf

from attnlab.ops.masked_softmax import masked_softmax, softmax_dtype
from attnlab.ops.masks import align_mask, causal_mask, combine_masks
from attnlab.ops.softmax_kernel import attention_normalization
from attnlab.validation import check_query_key_value, check_rate, shape_str


def resolve_mask(mask, causal, scores_shape, query_length, key_length, causal_offset=None):
    """Combine a user mask and the causal flag into one bool mask of the scores' rank.

    The causal mask is aligned to the end of the keys (offset = S - T) unless
    `causal_offset` is given, so a block of new queries after cached keys sees the cache.
    """
    parts = []
    if mask is not None:
        parts.append(align_mask(mask, scores_shape))
    if causal:
        offset = key_length - query_length if causal_offset is None else causal_offset
        parts.append(align_mask(causal_mask(query_length, key_length, offset), scores_shape))
    return combine_masks(*parts)


# The exp path's row sums must lie in [1, EXP_ROW_SUM_LIMIT]: at least 1 when key 0 is
# visible (its own term is exp(0)), and far enough below the float32 maximum that the
# gradient's (T, dv)-sized terms divided by the sum stay normal floats.
EXP_ROW_SUM_LIMIT = 2.0 ** 100
# Smallest (T x S) score matrix normalized through exp: below it the exp path's extra small
# ops cost more than the softmax passes they save (a decoding step, T = 1, ran 14% slower).
EXP_MIN_SCORES = 256 * 256


def _softmax_attention(query, key, value, mask):
    """softmax(q k^T, masked) v for scaled queries, with a gradient that keeps only the
    weights and the output (besides the inputs) and makes as few passes over (..., T, S)
    tensors as it can: one matmul writing dW, one product W * dW, three matmuls reading.

    The softmax gradient is dS = W * (dW - rowsum(dW * W)); with dW = dO v^T the row sum
    equals rowsum(dO * O) over the (..., T, dv) output, so the (..., T, S)-sized product
    and reduction of the generic gradient are replaced by one of the output's size, and
    the subtraction rides in the dO v^T matmul as an extra column: [dO, -r] [v, 1]^T.
    Valid for any mask: W is zero where the mask hides a key (and on rows without a
    visible key), and so is dS. `mask` is None or already broadcastable to the scores.

    Where TensorFlow's CPU softmax is its generic kernel (`softmax_kernel`) and the (T, S)
    score matrices have at least EXP_MIN_SCORES entries (or unknown lengths), the weights
    are kept unnormalized, W = E / rowsum(E) (`_exp_weights`), and the 1 / rowsum factor is
    applied to the (..., T, dv) output and upstream gradient instead of the (..., T, S)
    weights: W^T dO = E^T (dO / sum) and dS = E * ([dO / sum, -r / sum] [v, 1]^T).
    """
    lengths = (query.shape[-2], key.shape[-2])
    small = None not in lengths and lengths[0] * lengths[1] < EXP_MIN_SCORES
    via_exp = attention_normalization() == "exp" and not small

    @tf.custom_gradient
    def attend(q, k, v):
        if via_exp:
            weights, norm = _exp_weights(q, k, mask)
            output = tf.matmul(weights, v) * norm
        else:
            weights, norm = masked_softmax(tf.matmul(q, k, transpose_b=True), mask), None
            output = tf.matmul(weights, v)

        def grad(d_output):
            if norm is not None:
                d_output = d_output * norm
            d_value = tf.matmul(weights, d_output, transpose_a=True)
            row = tf.reduce_sum(d_output * output, axis=-1, keepdims=True)
            d_weights = tf.matmul(tf.concat([d_output, -row], axis=-1),
                                  tf.concat([v, tf.ones_like(v[..., :1])], axis=-1),
                                  transpose_b=True)  # dO v^T - rowsum(dO * O)
            d_scores = weights * d_weights
            d_query = tf.matmul(d_scores, k)
            d_key = tf.matmul(d_scores, q, transpose_a=True)
            return _unbroadcast(d_query, q), _unbroadcast(d_key, k), _unbroadcast(d_value, v)

        return output, grad

    return attend(query, key, value)


def key0_shifted_exp(q, k, mask):
    """exp(q k^T - s0), zero where `mask` hides a key, with s0 (..., T, 1) each query's
    score against key 0; returns it, s0, its row sums and whether each row sum lies in
    [1, EXP_ROW_SUM_LIMIT] (bool, (..., T, 1)).

    Softmax is invariant to a per-row shift, and shifting by key 0's score instead of the
    row maximum needs no pass over the (T, S) scores: the shift rides in the q k^T matmul
    as an extra column, [q, -s0] [k, 1]^T, and exp then runs in place. With key 0 visible
    every row sums to at least exp(0) = 1. A row sum outside the range means key 0 is
    masked, the row has no visible key, some score is more than 69 above key 0's, or NaN:
    the caller then normalizes through the row maxima instead.
    """
    first = tf.matmul(q, k[..., :1, :], transpose_b=True)  # (..., T, 1)
    rows = q
    if not (q.shape[:-2].is_fully_defined() and q.shape[:-2] == k.shape[:-2]):
        # Unknown batch dimensions may broadcast: the concat needs q at first's shape.
        rows = tf.broadcast_to(q, tf.concat([tf.shape(first)[:-1], tf.shape(q)[-1:]], 0))
    weights = tf.exp(tf.matmul(tf.concat([rows, -first], axis=-1),
                               tf.concat([k, tf.ones_like(k[..., :1])], axis=-1),
                               transpose_b=True))
    if mask is not None:
        weights = tf.where(mask, weights, tf.zeros([], weights.dtype))
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    fits = (total >= 1.0) & (total <= EXP_ROW_SUM_LIMIT)
    return weights, first, total, fits


def _exp_weights(q, k, mask):
    """E = exp(q k^T - s0) (`key0_shifted_exp`) and 1 / rowsum(E): the softmax weights are
    E * (1 / rowsum(E)). Where a row sum is out of range every row takes `masked_softmax`
    instead (a `tf.cond`), with a factor of 1."""
    weights, _, total, fits = key0_shifted_exp(q, k, mask)
    # The fallback recomputes the scores rather than keep them: exp overwrites them.
    return tf.cond(tf.reduce_all(fits), lambda: (weights, 1.0 / total),
                   lambda: (masked_softmax(tf.matmul(q, k, transpose_b=True), mask),
                            tf.ones_like(total)))


def _unbroadcast(grad, x):
    """Sum `grad` over the batch axes that the matmuls broadcast `x` along (only possible
    when batch dimensions are unknown while tracing; otherwise `grad` as it is)."""
    if x.shape.is_fully_defined() and grad.shape == x.shape:
        return grad
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(grad)[:-2], s1=tf.shape(x)[:-2])
    return tf.reshape(tf.reduce_sum(grad, axes), tf.shape(x))


def default_scale(depth):
    """1 / sqrt(depth): keeps the variance of q.k near 1 so softmax does not saturate."""
    return 1.0 / math.sqrt(depth)


def _static_training(training):
    """True or False when `training` is known now, else the bool tensor to decide by."""
    if training is None or isinstance(training, (bool, int, np.bool_, np.integer)):
        return bool(training)
    training = tf.convert_to_tensor(training)
    if training.dtype != tf.bool or training.shape.rank not in (None, 0):
        raise TypeError("training must be a bool or a scalar bool tensor, got %s %s"
                        % (training.dtype.name, shape_str(training)))
    value = tf.get_static_value(training)
    return training if value is None else bool(value)


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def scaled_dot_product_attention(query, key, value, mask=None, causal=False, scale=None,
                                 dropout_rate=0.0, training=False, return_weights=False,
                                 seed=None):
    """softmax(q k^T * scale, masked) v.

    Args:
        query: (..., T, d) floating tensor.
        key: (..., S, d).
        value: (..., S, dv).
        mask: bool/0-1 mask broadcastable to (..., T, S); True = may attend. A rank-3 mask
            (B, T, S) is given a head axis when the inputs are (B, H, T, d).
        causal: hide keys after each query (aligned so the last query sees the last key).
        scale: multiplier of the scores; default 1/sqrt(d).
        dropout_rate: dropout on the attention weights, applied only when `training`.
        training: whether dropout is active: a Python bool, or a bool tensor (a
            `tf.function` argument, Keras' learning phase) decided when the graph runs.
        return_weights: also return the (pre-dropout) attention weights.
        seed: optional seed for the dropout.

    Returns:
        (..., T, dv) output, and (..., T, S) weights when `return_weights`.
        Query rows with no visible key get zero output and zero weights.
        Without the weights, without active dropout and in float32/float64 the attention
        has its own gradient, cheaper than the generic softmax one (same values).

    Example:
        >>> q = tf.random.normal([2, 5, 8]); kv = tf.random.normal([2, 7, 8])
        >>> scaled_dot_product_attention(q, kv, kv, causal=True).shape
        TensorShape([2, 5, 8])
    """
    query, key, value = check_query_key_value(query, key, value)
    dropout_rate = check_rate("dropout_rate", dropout_rate)
    if scale is None:
        depth = query.shape[-1]
        if depth is None:
            depth = tf.cast(tf.shape(query)[-1], tf.float32)
            scale = tf.math.rsqrt(depth)
        else:
            scale = default_scale(depth)
    # Scaling the query (T x d) is cheaper than scaling the scores (T x S).
    if not (isinstance(scale, (int, float)) and scale == 1.0):
        query = query * tf.cast(scale, query.dtype)
    training = _static_training(training)
    dropout = dropout_rate > 0.0 and training is not False
    if not (return_weights or dropout) and softmax_dtype(query.dtype) == query.dtype and \
            query.shape.rank is not None:
        scores_shape = query.shape[:-1].concatenate(key.shape[-2:-1])
        mask = resolve_mask(mask, causal, scores_shape, tf.shape(query)[-2],
                            tf.shape(key)[-2])
        return _softmax_attention(query, key, value, mask)
    scores = tf.matmul(query, key, transpose_b=True)
    mask = resolve_mask(mask, causal, scores.shape, tf.shape(query)[-2], tf.shape(key)[-2])
    weights = masked_softmax(scores, mask)
    used_weights = weights
    if dropout and training is True:
        used_weights = tf.nn.dropout(weights, rate=dropout_rate, seed=seed)
    elif dropout:
        used_weights = tf.cond(tf.cast(training, tf.bool),
                               lambda: tf.nn.dropout(weights, rate=dropout_rate, seed=seed),
                               lambda: weights)
    output = tf.matmul(used_weights, value)
    if return_weights:
        return output, weights
    return output
