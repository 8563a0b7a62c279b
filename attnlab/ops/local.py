"""Local (sliding-window) self-attention in O(L * window) time and memory.

The sequence is cut into blocks of `window` positions. Every key within `window` of a
query lies in the query's block or in one of its two neighbour blocks (only the previous
one when causal), so each query block attends to those 2-3 blocks, gathered by
reshape/pad/concat, and the exact band is cut out with a (block, context) mask.
"""
import numbers

import tensorflow as tf

from attnlab.ops.checks import checked_numerics
from attnlab.ops.masked_softmax import masked_softmax, score_matmul
from attnlab.ops.masks import check_bool_arg
from attnlab.ops.scaled_dot_product import resolve_scale, scale_query
from attnlab.ops.shapes import blockwise_inputs, static_or_dynamic_length
from attnlab.validation import check_positive_int, shape_str


def _check_window(window):
    if isinstance(window, numbers.Integral) and not isinstance(window, bool):
        window = int(window)  # accept NumPy integers too
    return check_positive_int("window", window)


def _pad_axis(x, axis, before, after, rank):
    paddings = [[0, 0]] * rank
    paddings[axis % rank] = [before, after]
    return tf.pad(x, paddings)


def _to_blocks(x, num_blocks, block, rank):
    """(..., n * b, d) -> (..., n, b, d)."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([shape[:-2], [num_blocks, block, shape[-1]]], axis=0))


def _with_neighbours(blocks, causal, rank):
    """(..., n, b, d) -> (..., n, c * b, d): previous, own and (unless causal) next block.

    Rank here is the rank of `blocks`. The missing neighbours of the first and last block
    are zeros; the key-validity mask hides them.
    """
    previous = _pad_axis(blocks, -3, 1, 0, rank)[..., :-1, :, :]
    parts = [previous, blocks]
    if not causal:
        parts.append(_pad_axis(blocks, -3, 0, 1, rank)[..., 1:, :, :])
    return tf.concat(parts, axis=-2)


def _blocked_band(block, num_blocks, length, window, causal, context):
    """bool (n, b, c * b): the band |i - j| <= window (or 0 <= i - j <= window) in blocks.

    Query i = n * b + r sees context key j = (n - 1) * b + col, so i - j = b + r - col
    does not depend on the block; only the validity of j (0 <= j < L) does.
    """
    rows = tf.range(block)[:, tf.newaxis]
    cols = tf.range(context * block)[tf.newaxis, :]
    distance = block + rows - cols
    if causal:
        band = (distance >= 0) & (distance <= window)
    else:
        band = tf.abs(distance) <= window
    key_pos = (tf.range(num_blocks)[:, tf.newaxis] - 1) * block + cols
    valid = (key_pos >= 0) & (key_pos < length)
    return band[tf.newaxis] & valid[:, tf.newaxis, :]


def _broadcast_to_length(x, shape):
    """`x` broadcast against ones of `shape` (an axis of unknown size 1 gets its length)."""
    if x.dtype == tf.bool:
        return tf.logical_and(x, tf.ones(shape, tf.bool))
    return x + tf.zeros(shape, x.dtype)


def _blocked_mask(mask, length, num_blocks, block, padded, causal, context, rank):
    """A mask or a score bias (..., 1 or L, 1 or L) cut into the blocked layout
    (..., n, 1 or b, c * b)."""
    # Give the key axis its full length (a no-op for key masks), then pad it.
    mask = _broadcast_to_length(mask, [1, length])
    mask = _pad_axis(mask, -1, 0, padded - length, rank)
    if mask.shape[-2] == 1:
        # Key padding mask (or per-key bias): gather the neighbour blocks like the keys.
        keys = mask[..., 0, :, tf.newaxis]
        if mask.dtype == tf.bool:
            keys = tf.cast(keys, tf.int8)
        keys = _with_neighbours(_to_blocks(keys, num_blocks, block, rank), causal, rank + 1)
        shape = tf.shape(keys)
        keys = tf.reshape(keys, tf.concat([shape[:-2], [1, shape[-2]]], axis=0))
        return tf.cast(keys, mask.dtype)
    # Full (T, S) mask: take the (b, c * b) diagonal band of blocks. With the columns padded
    # by one block on each side (width W), block n needs columns [n b, n b + c b): flattening
    # each row-in-block across the blocks and re-cutting rows of width W + b shifts row n by
    # n b, which lines the wanted columns up at the start.
    mask = _broadcast_to_length(mask, [length, 1])  # rows of unknown size 1
    mask = _pad_axis(mask, -2, 0, padded - length, rank)
    mask = _pad_axis(mask, -1, block, block, rank)
    width = padded + 2 * block
    shape = tf.shape(mask)
    lead = shape[:-2]
    mask = tf.reshape(mask, tf.concat([lead, [num_blocks, block, width]], axis=0))
    swap = list(range(rank - 2)) + [rank - 1, rank - 2, rank]
    mask = tf.transpose(mask, swap)  # (..., b, n, W)
    mask = tf.reshape(mask, tf.concat([lead, [block, num_blocks * width]], axis=0))
    mask = _pad_axis(mask, -1, 0, num_blocks * block, rank)
    mask = tf.reshape(mask, tf.concat([lead, [block, num_blocks, width + block]], axis=0))
    mask = mask[..., :context * block]
    return tf.transpose(mask, swap)  # (..., n, b, c * b)


def _with_equal_lengths(query, key):
    """(query, L): the query (behind a run-time check when the lengths are only known then)
    and its length, a Python int where static."""
    length = static_or_dynamic_length(query, -2)
    key_length = static_or_dynamic_length(key, -2)
    if isinstance(length, int) and isinstance(key_length, int):
        if length != key_length:
            raise ValueError(
                "local_attention is self-attention over one sequence: query length %d and key "
                "length %d must be equal (query %s, key %s)"
                % (length, key_length, shape_str(query), shape_str(key)))
        return query, length
    check = tf.debugging.assert_equal(
        tf.shape(query)[-2], tf.shape(key)[-2],
        message="local_attention: query and key lengths must be equal")
    with tf.control_dependencies([check] if check is not None else []):
        query = tf.identity(query)
    return query, tf.shape(query)[-2]


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def local_attention(query, key, value, window, causal=False, mask=None, scale=None,
                    bias=None):
    """Self-attention where query i sees only keys j with |i - j| <= window.

    Equal to `scaled_dot_product_attention` with `band_mask(L, L, window, causal)` (and
    `mask`), at O(L * window) cost: queries attend blockwise to their own and neighbouring
    blocks of `window` positions, never forming an (L, L) score matrix.

    Args:
        query: (..., L, d) floating tensor.
        key: (..., L, d); the same length as `query` (one sequence attending to itself).
        value: (..., L, dv).
        window: positive int; how far (in positions) a query sees on each side. A window
            of L or more (e.g. sys.maxsize) is full attention.
        causal: see only the `window` previous keys and the query's own position.
        mask: bool/0-1 mask, True = may attend. Accepted: a key padding mask broadcastable
            to (..., 1, L) (e.g. (B, 1, L) or (B, 1, 1, L); O(L) memory), or a full mask
            broadcastable to (..., L, L) (its band is cut out; the mask itself is O(L^2)).
            A rank-3 mask gets a head axis for rank-4 inputs, as in
            `scaled_dot_product_attention`.
        scale: multiplier of the scores; default 1/sqrt(d).
        bias: optional floating tensor added to the scaled scores (`score_bias`), shaped
            like the masks above: a per-key (..., 1, L) bias costs O(L), a full one has its
            band cut out. It gets a gradient.

    Returns:
        (..., L, dv) with the dtype of `query`; rows with no visible key are zero.
        float16 scores are computed in float32, as in `scaled_dot_product_attention`.

    Example:
        >>> x = tf.random.normal([2, 100, 16])
        >>> local_attention(x, x, x, window=8, causal=True).shape
        TensorShape([2, 100, 16])
    """
    window = _check_window(window)
    check_bool_arg("local_attention", "causal", causal)
    query, key, value, mask, bias = blockwise_inputs(
        "local_attention", query, key, value, mask, bias, bias_in_softmax_dtype=True)
    checked = checked_numerics("local_attention", query=query, key=key, value=value, bias=bias)
    query, key, value, bias = (checked[n] for n in ("query", "key", "value", "bias"))
    query, length = _with_equal_lengths(query, key)
    query = scale_query(query, resolve_scale(scale, query))
    # A window beyond the sequence sees all of it: clamp it to L (which also keeps a huge
    # window, e.g. sys.maxsize, from wrapping around when cast to int32).
    if isinstance(length, int):
        window = min(window, length)
    else:
        window = tf.minimum(min(window, 2 ** 31 - 1), length)
    # Blocks of `window` positions (fewer when the whole sequence is shorter).
    block = min(window, length) if isinstance(length, int) else tf.minimum(window, length)
    num_blocks = (length + block - 1) // block
    padded = num_blocks * block
    context = 2 if causal else 3
    rank = query.shape.rank

    def blocks(x):
        return _to_blocks(_pad_axis(x, -2, 0, padded - length, rank), num_blocks, block, rank)

    q_blocks = blocks(query)                                             # (..., n, b, d)
    k_context = _with_neighbours(blocks(key), causal, rank + 1)          # (..., n, c b, d)
    v_context = _with_neighbours(blocks(value), causal, rank + 1)        # (..., n, c b, dv)
    scores = score_matmul(q_blocks, k_context)  # (..., n, b, c b); float32 for float16
    if bias is not None:
        scores = scores + _blocked_mask(bias, length, num_blocks, block, padded, causal,
                                        context, rank)

    keep = _blocked_band(block, num_blocks, length, window, causal, context)
    if mask is not None:
        keep = tf.logical_and(
            keep, _blocked_mask(mask, length, num_blocks, block, padded, causal, context, rank))
    weights = tf.cast(masked_softmax(scores, keep), value.dtype)
    out = tf.matmul(weights, v_context)                                  # (..., n, b, dv)
    shape = tf.shape(out)
    out = tf.reshape(out, tf.concat([shape[:-3], [padded, shape[-1]]], axis=0))
    out = out[..., :length, :]
    out.set_shape(query.shape[:-1].concatenate(value.shape[-1:]))
    return out
