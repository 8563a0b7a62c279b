"""Softmax over attention scores with a mask, safe in float16 and for fully masked rows."""
import tensorflow as tf

# Fraction of the dtype's largest value used as the masked score: finite, and far enough
# from the limit that subtracting the row maximum inside softmax cannot overflow.
_MASK_FRACTION = 0.7


def mask_value(dtype):
    """The finite score given to masked positions for scores of `dtype`.

    Example:
        >>> float(mask_value(tf.float16))
        -45852.8
    """
    dtype = tf.as_dtype(dtype)
    return tf.constant(-_MASK_FRACTION * dtype.max, dtype=dtype)


def softmax_dtype(dtype):
    """Half-precision scores are normalized in float32, as Keras does under mixed precision."""
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def masked_softmax(scores, mask=None):
    """Softmax over the last axis, where `mask` (True = keep) hides entries.

    Masked entries are replaced (not offset) by a finite dtype-aware value, the
    normalization runs in float32 for half-precision scores, and rows without any visible
    entry get all-zero weights instead of NaN or a uniform distribution.

    Args:
        scores: (..., T, S) floating tensor.
        mask: bool mask already broadcastable to `scores` (see `masks.align_mask`), or None.

    Returns:
        weights with the dtype and shape of `scores`.
    """
    compute_dtype = softmax_dtype(scores.dtype)
    x = tf.cast(scores, compute_dtype)
    if mask is None:
        return tf.cast(tf.nn.softmax(x, axis=-1), scores.dtype)
    x = tf.where(mask, x, mask_value(compute_dtype))
    weights = tf.nn.softmax(x, axis=-1)
    any_visible = tf.reduce_any(mask, axis=-1, keepdims=True)
    weights = tf.where(any_visible, weights, tf.zeros_like(weights))
    return tf.cast(weights, scores.dtype)
