"""Attention masks. Convention: True (or 1) means "this query may attend to this key".

Masks broadcast to the score shape (..., T, S): (T, S), (B, T, S), (B, 1, S) or
(B, H, T, S). A rank-3 mask used with rank-4 scores (B, H, T, S) gets a head axis, as in
tf.keras.layers.MultiHeadAttention.
"""
import numpy as np
import tensorflow as tf

from attnlab.ops.checks import as_bool_mask, check_int_arg
from attnlab.validation import shape_str

__all__ = ["align_mask", "align_to_scores", "as_bool_mask", "band_mask", "causal_mask",
           "combine_masks", "padding_mask"]


def padding_mask(ids, pad_id=0):
    """Key mask that hides padding tokens.

    Args:
        ids: integer token ids, (B, S).
        pad_id: the id used for padding.

    Returns:
        bool (B, 1, S): True where the key is a real token; broadcasts over queries.

    Example:
        >>> padding_mask([[5, 7, 0]]).numpy().tolist()
        [[[True, True, False]]]
    """
    ids = tf.convert_to_tensor(ids)
    if ids.dtype.is_floating or ids.dtype == tf.bool:
        raise TypeError("padding_mask expects integer token ids, got dtype %s" % ids.dtype.name)
    if ids.shape.rank is not None and ids.shape.rank != 2:
        raise ValueError("padding_mask expects ids of shape (batch, length), got %s"
                         % shape_str(ids))
    pad_id = check_int_arg("padding_mask", "pad_id", pad_id)
    return tf.not_equal(ids, tf.cast(pad_id, ids.dtype))[:, tf.newaxis, :]


def causal_mask(query_length, key_length=None, offset=0):
    """Lower-triangular mask: query i may attend key j when j <= i + offset.

    Args:
        query_length: T, number of queries.
        key_length: S, number of keys (default T).
        offset: absolute position of the first query; with a KV cache the new queries
            start after the `offset` cached keys.

    Returns:
        bool (T, S).

    Example:
        >>> causal_mask(2, 3, offset=1).numpy().astype(int).tolist()
        [[1, 1, 0], [1, 1, 1]]
    """
    query_length, key_length, offset = _check_lengths(
        "causal_mask", query_length, key_length, offset)
    rows = tf.range(query_length)[:, tf.newaxis] + tf.cast(offset, tf.int32)
    cols = tf.range(key_length)[tf.newaxis, :]
    return cols <= rows


def band_mask(query_length, key_length=None, window=1, causal=False, offset=0):
    """Local mask: query i may attend key j when |i + offset - j| <= window.

    With `causal=True` only the `window` keys before the query and the query's own key
    are visible. This is the full-attention equivalent of `local_attention`.

    Args:
        query_length: T, an integer >= 0 (or an integer scalar tensor).
        key_length: S (default T).
        window: integer >= 0; 0 keeps only the diagonal.
        causal: hide the keys after each query.
        offset: absolute position of the first query (any integer).

    Returns:
        bool (T, S).
    """
    query_length, key_length, offset = _check_lengths(
        "band_mask", query_length, key_length, offset)
    window = check_int_arg("band_mask", "window", window, at_least=0)
    if isinstance(window, int):
        # Every distance fits in int32: a larger window (e.g. sys.maxsize) must not wrap.
        window = min(window, 2 ** 31 - 1)
    check_bool_arg("band_mask", "causal", causal)
    rows = tf.range(query_length)[:, tf.newaxis] + tf.cast(offset, tf.int32)
    cols = tf.range(key_length)[tf.newaxis, :]
    distance = rows - cols
    if causal:
        return (distance >= 0) & (distance <= window)
    return tf.abs(distance) <= window


def _check_lengths(op_name, query_length, key_length, offset):
    """Lengths (integers >= 0 or integer tensors, key_length defaulting to query_length)
    and an integer offset, each refused with an error naming it."""
    query_length = check_int_arg(op_name, "query_length", query_length, at_least=0)
    key_length = query_length if key_length is None else \
        check_int_arg(op_name, "key_length", key_length, at_least=0)
    offset = check_int_arg(op_name, "offset", offset)
    if isinstance(offset, int) and not -2 ** 31 <= offset < 2 ** 31:
        raise ValueError("%s: offset must fit in int32, got %d" % (op_name, offset))
    return query_length, key_length, offset


def check_bool_arg(op_name, name, value):
    """Raise TypeError unless `value` is a Python (or NumPy) bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError("%s: %s must be a bool, got %r" % (op_name, name, value))
    return bool(value)


def combine_masks(*masks):
    """Logical AND of masks that broadcast together; None entries are ignored.

    Returns:
        A bool mask, or None when every argument is None.

    Example:
        >>> m = combine_masks(padding_mask([[1, 2, 0]]), causal_mask(3))
        >>> m.shape
        TensorShape([1, 3, 3])
    """
    result = None
    for mask in masks:
        if mask is None:
            continue
        mask = as_bool_mask(mask)
        if result is None:
            result = mask
            continue
        if result.shape.rank is not None and mask.shape.rank is not None:
            try:
                tf.broadcast_static_shape(result.shape, mask.shape)
            except ValueError:
                raise ValueError("combine_masks: masks of shapes %s and %s do not broadcast"
                                 % (shape_str(result), shape_str(mask))) from None
        result = tf.logical_and(result, mask)
    return result


def align_mask(mask, scores_shape):
    """Give a mask the rank of the scores it applies to and check that it broadcasts.

    Args:
        mask: bool or 0/1 mask of rank 2 (T, S), rank(scores) - 1 for rank-4 scores
            ((B, T, S), gets a head axis) or rank(scores).
        scores_shape: the static TensorShape of the scores (..., T, S).

    Returns:
        bool mask with rank(scores) dimensions.
    """
    return align_to_scores(as_bool_mask(mask), scores_shape, "attention mask")


def align_to_scores(x, scores_shape, what):
    """`x` (a mask or a score bias) with the rank of the scores, as `align_mask` describes;
    a ValueError names `what` and both shapes when it cannot broadcast to them."""
    rank = scores_shape.rank
    if x.shape.rank is None or rank is None:
        return x
    given = shape_str(x)  # the caller's shape, named in errors before any axis is added
    if x.shape.rank == 2 and rank > 2:
        for _ in range(rank - 2):
            x = x[tf.newaxis]
    elif x.shape.rank == rank - 1 and rank == 4:
        x = x[:, tf.newaxis]
    if x.shape.rank != rank:
        raise ValueError(
            "%s of shape %s cannot be used with scores of shape %s: expected "
            "(T, S), (B, T, S) or (B, H, T, S)-like shapes that broadcast"
            % (what, shape_str(x), str(tuple(scores_shape.as_list()))))
    for m, s in zip(x.shape.as_list(), scores_shape.as_list()):
        if m is not None and s is not None and m not in (1, s):
            aligned = "" if shape_str(x) == given else " (as %s)" % shape_str(x)
            raise ValueError(
                "%s of shape %s%s does not broadcast to scores of shape %s"
                % (what, given, aligned, str(tuple(scores_shape.as_list()))))
    return x
