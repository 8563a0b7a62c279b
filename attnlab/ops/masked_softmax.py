"""Softmax over attention scores with a mask, safe in float16 and for fully masked rows."""
import tensorflow as tf

from attnlab.ops.checks import as_bool_mask, checked_numerics
from attnlab.validation import shape_str

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


def score_matmul(query, key):
    """q k^T, in float32 for float16 inputs: the scores' dtype is `softmax_dtype(q.dtype)`.

    float16 tops out at 65504, so |q . k| above it would be inf and the softmax NaN (inf -
    inf), even with the query pre-scaled by 1/sqrt(d). The scores are normalized in float32
    anyway (`softmax_dtype`), so they are produced in float32 directly: the casts cost
    O((T + S) d) against the O(T S d) product, the float16 score tensor and its cast to
    float32 disappear, and on CPUs (where TensorFlow's float16 matmul is emulated) the
    float32 product is faster too. bfloat16 has float32's range and keeps its own product
    before the cast.
    """
    if query.dtype == tf.float16:
        return tf.matmul(tf.cast(query, tf.float32), tf.cast(key, tf.float32), transpose_b=True)
    return tf.cast(tf.matmul(query, key, transpose_b=True), softmax_dtype(query.dtype))


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def masked_softmax(scores, mask=None):
    """Softmax over the last axis, where `mask` (True = keep) hides entries.

    Masked entries are replaced (not offset) by a finite dtype-aware value, the
    normalization runs in float32 for half-precision scores, and rows without any visible
    entry get all-zero weights instead of NaN or a uniform distribution.

    Args:
        scores: (..., T, S) floating tensor.
        mask: bool (or 0/1) mask broadcastable to `scores` (see `masks.align_mask`), or
            None. Other values (an additive -1e9/-inf mask) raise ValueError: pass those as
            a score bias, added to `scores`.

    Returns:
        weights with the dtype and shape of `scores`.

    Raises:
        TypeError: non-floating scores (the dtype is named).
        ValueError: a mask that does not broadcast to the scores (both shapes are named),
            or a mask with values other than 0 and 1.

    Example:
        >>> masked_softmax(tf.zeros([1, 3]), [[True, True, False]]).numpy().tolist()
        [[0.5, 0.5, 0.0]]
    """
    scores = tf.convert_to_tensor(scores)
    if not scores.dtype.is_floating:
        raise TypeError("masked_softmax: scores must be a floating-point tensor, got dtype %s"
                        % scores.dtype.name)
    scores = checked_numerics("masked_softmax", scores=scores)["scores"]
    if mask is not None:
        mask = as_bool_mask(mask)
        if scores.shape.rank is not None and mask.shape.rank is not None:
            try:
                # The mask broadcasts *to* the scores: a mask that would enlarge them
                # (scores (1, S), mask (T, S)) is refused as well.
                fits = tf.broadcast_static_shape(scores.shape, mask.shape).is_compatible_with(
                    scores.shape)
            except ValueError:
                fits = False
            if not fits:
                raise ValueError("masked_softmax: mask of shape %s does not broadcast to "
                                 "scores of shape %s" % (shape_str(mask), shape_str(scores)))
    compute_dtype = softmax_dtype(scores.dtype)
    x = tf.cast(scores, compute_dtype)
    if mask is None:
        return tf.cast(tf.nn.softmax(x, axis=-1), scores.dtype)
    x = tf.where(mask, x, mask_value(compute_dtype))
    weights = tf.nn.softmax(x, axis=-1)
    any_visible = tf.reduce_any(mask, axis=-1, keepdims=True)
    weights = tf.where(any_visible, weights, tf.zeros_like(weights))
    return tf.cast(weights, scores.dtype)
