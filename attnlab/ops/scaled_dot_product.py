"""Scaled dot-product attention (Vaswani et al. 2017), the reference every variant matches."""
import math

import tensorflow as tf

from attnlab.ops.masked_softmax import masked_softmax
from attnlab.ops.masks import align_mask, causal_mask, combine_masks
from attnlab.ops.validation import check_query_key_value, check_rate


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


def default_scale(depth):
    """1 / sqrt(depth): keeps the variance of q.k near 1 so softmax does not saturate."""
    return 1.0 / math.sqrt(depth)


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
        training: whether dropout is active.
        return_weights: also return the (pre-dropout) attention weights.
        seed: optional seed for the dropout.

    Returns:
        (..., T, dv) output, and (..., T, S) weights when `return_weights`.
        Query rows with no visible key get zero output and zero weights.

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
    query = query * tf.cast(scale, query.dtype)
    scores = tf.matmul(query, key, transpose_b=True)
    mask = resolve_mask(mask, causal, scores.shape, tf.shape(query)[-2], tf.shape(key)[-2])
    weights = masked_softmax(scores, mask)
    used_weights = weights
    if training and dropout_rate > 0.0:
        used_weights = tf.nn.dropout(weights, rate=dropout_rate, seed=seed)
    output = tf.matmul(used_weights, value)
    if return_weights:
        return output, weights
    return output
