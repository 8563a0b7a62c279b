"""Scaled dot-product attention (Vaswani et al. 2017): the plain reference every kernel matches."""
import math

import numpy as np
import tensorflow as tf

from attnlab.ops.checks import check_int_arg, check_scale, checked_numerics
from attnlab.ops.masked_softmax import masked_softmax, score_matmul
from attnlab.ops.masks import align_mask, causal_mask, check_bool_arg, combine_masks
from attnlab.ops.score_bias import align_bias
from attnlab.validation import check_query_key_value, check_rate, shape_str


def resolve_mask(mask, causal, scores_shape, query_length, key_length, causal_offset=None):
    """Combine a user mask and the causal flag into one bool mask of the scores' rank.

    The causal mask is aligned to the end of the keys (offset = S - T) unless
    `causal_offset` is given, so a block of new queries after cached keys sees the cache.
    """
    parts = []
    if causal_offset is not None:
        causal_offset = check_int_arg("attention", "causal_offset", causal_offset)
    if mask is not None:
        parts.append(align_mask(mask, scores_shape))
    if causal:
        offset = key_length - query_length if causal_offset is None else causal_offset
        parts.append(align_mask(causal_mask(query_length, key_length, offset), scores_shape))
    return combine_masks(*parts)


def default_scale(depth):
    """1 / sqrt(depth): keeps the variance of q.k near 1 so softmax does not saturate."""
    return 1.0 / math.sqrt(depth)


def resolve_scale(scale, query):
    """`scale`, or 1 / sqrt(d) for the query's depth d (a tensor when d is unknown); a NaN
    or infinite scale raises ValueError naming `scale`."""
    scale = check_scale(scale)
    if scale is not None:
        return scale
    depth = query.shape[-1]
    if depth is None:
        return tf.math.rsqrt(tf.cast(tf.shape(query)[-1], tf.float32))
    return default_scale(depth)


def scale_query(query, scale):
    """query * scale; scaling the (T, d) query is cheaper than scaling the (T, S) scores."""
    if isinstance(scale, (int, float)) and scale == 1.0:
        return query
    return query * tf.cast(scale, query.dtype)


def static_training(training):
    """True or False when `training` is known now, else the bool tensor to decide by."""
    if training is None or isinstance(training, (bool, int, np.bool_, np.integer)):
        return bool(training)
    training = tf.convert_to_tensor(training)
    if training.dtype != tf.bool or training.shape.rank not in (None, 0):
        raise TypeError("training must be a bool or a scalar bool tensor, got %s %s"
                        % (training.dtype.name, shape_str(training)))
    value = tf.get_static_value(training)
    return training if value is None else bool(value)


def _dropout(weights, rate, training, seed):
    """Dropout on the attention weights when `training` (a bool or a bool tensor)."""
    if rate == 0.0 or training is False:
        return weights
    if training is True:
        return tf.nn.dropout(weights, rate=rate, seed=seed)
    return tf.cond(training, lambda: tf.nn.dropout(weights, rate=rate, seed=seed),
                   lambda: weights)


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def scaled_dot_product_attention(query, key, value, mask=None, causal=False, scale=None,
                                 dropout_rate=0.0, training=False, return_weights=False,
                                 seed=None, bias=None):
    """softmax(q k^T * scale + bias, masked) v, written plainly: the reference of every kernel.

    The kernels in `attnlab.ops.kernels` compute the same output faster or in less memory
    (a gradient of their own, exp normalization, chunks, a band); this function is what they
    are tested against, and what layers use when they need the weights or dropout.

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
        bias: optional floating tensor added to the scaled scores, broadcastable to
            (..., T, S) like a mask (`score_bias`); it gets a gradient.

    Returns:
        (..., T, dv) output, and (..., T, S) weights when `return_weights`.
        Query rows with no visible key get zero output and zero weights.

    float16 inputs: the scores q k^T are computed in float32 (`score_matmul`), so that
    |q . k| beyond float16's 65504 stays finite instead of turning the softmax into NaN;
    the weights are cast back to float16 before the product with `value`.
    NaN or Inf in the inputs pass through as in TensorFlow, unless ATTNLAB_CHECK_NUMERICS=1
    (see `attnlab.ops`).

    Example:
        >>> q = tf.random.normal([2, 5, 8]); kv = tf.random.normal([2, 7, 8])
        >>> scaled_dot_product_attention(q, kv, kv, causal=True).shape
        TensorShape([2, 5, 8])
    """
    query, key, value = check_query_key_value(query, key, value)
    dropout_rate = check_rate("dropout_rate", dropout_rate)
    check_bool_arg("scaled_dot_product_attention", "causal", causal)
    training = static_training(training)
    checked = checked_numerics("scaled_dot_product_attention", query=query, key=key,
                               value=value, bias=bias)
    query, key, value, bias = (checked[n] for n in ("query", "key", "value", "bias"))
    query = scale_query(query, resolve_scale(scale, query))
    scores = score_matmul(query, key)  # float32 for float16 inputs (no overflow)
    if bias is not None:
        scores = scores + align_bias(bias, scores.shape, scores.dtype)
    mask = resolve_mask(mask, causal, scores.shape, tf.shape(query)[-2], tf.shape(key)[-2])
    weights = tf.cast(masked_softmax(scores, mask), value.dtype)
    output = tf.matmul(_dropout(weights, dropout_rate, training, seed), value)
    if return_weights:
        return output, weights
    return output
