"""Memory-efficient exact attention over query and key chunks (Rabe & Staats 2021).

"Self-attention does not need O(n^2) memory": the keys are visited chunk by chunk while a
running maximum and running sums (a streaming log-sum-exp) keep the softmax exact, and
every chunk is recomputed in the backward pass (`tf.recompute_grad`), so neither the
forward nor the backward pass ever holds a (T, S) score matrix.
"""
import tensorflow as tf

from attnlab.ops.masked_softmax import mask_value, softmax_dtype
from attnlab.ops.masks import align_mask
from attnlab.ops.scaled_dot_product import default_scale
from attnlab.ops.validation import check_positive_int, check_query_key_value, shape_str


def _length(x, axis):
    """Static length along `axis` when known, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def _clip(chunk_size, length):
    """Chunk size clipped to the length (a Python int when the length is static)."""
    if isinstance(length, int):
        return min(chunk_size, length)
    return tf.minimum(chunk_size, length)


def _to_chunks(x, num_chunks, chunk_size, rank):
    """(..., n * c, d) -> (n, ..., c, d): chunks first, for tf.map_fn / tf.TensorArray."""
    shape = tf.shape(x)
    x = tf.reshape(x, tf.concat([shape[:-2], [num_chunks, chunk_size, shape[-1]]], axis=0))
    perm = [rank - 2] + list(range(rank - 2)) + [rank - 1, rank]
    return tf.transpose(x, perm)


def _from_chunks(x, rank):
    """(n, ..., c, d) -> (..., n * c, d), the inverse of `_to_chunks`."""
    perm = list(range(1, rank - 1)) + [0, rank - 1, rank]
    x = tf.transpose(x, perm)
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([shape[:-3], [shape[-3] * shape[-2], shape[-1]]], axis=0))


def _pad_length(x, amount, rank):
    """Zero-pad axis -2 (the sequence) at the end by `amount`."""
    return tf.pad(x, [[0, 0]] * (rank - 2) + [[0, amount], [0, 0]])


def _slice_axis(mask, positions, axis):
    """Rows (or columns) `positions` of a mask axis that is not broadcast (size != 1).

    Positions past the end (padding) are clamped to the last index; they belong to padded
    queries, whose output is dropped, or padded keys, which the key-validity mask hides.
    """
    if mask.shape[axis] == 1:
        return mask
    last = tf.shape(mask)[axis] - 1
    return tf.gather(mask, tf.minimum(positions, last), axis=axis)


def _chunk_summary(query, key, value, keep, acc_dtype):
    """Unnormalized attention of one query chunk over one key chunk.

    Returns (sum_j e_ij v_j, sum_j e_ij, m_i) with e_ij = exp(s_ij - m_i), m_i the chunk's
    row maximum of the visible scores; rows with nothing visible give zeros and a finite m.
    """
    scores = tf.cast(tf.matmul(query, key, transpose_b=True), acc_dtype)
    if keep is not None:
        # Replacing (not offsetting) masked scores keeps exp() finite for the gradient too.
        scores = tf.where(keep, scores, mask_value(acc_dtype))
    # The result does not depend on the max mathematically; no gradient needs to flow there.
    row_max = tf.stop_gradient(tf.reduce_max(scores, axis=-1, keepdims=True))
    weights = tf.exp(scores - row_max)
    if keep is not None:
        # A chunk row with nothing visible has max == mask value and exp(0) == 1 everywhere.
        weights = tf.where(keep, weights, tf.zeros([], acc_dtype))
    row_sum = tf.reduce_sum(weights, axis=-1, keepdims=True)
    weighted = tf.cast(tf.matmul(tf.cast(weights, value.dtype), value), acc_dtype)
    return weighted, row_sum, row_max


def chunked_attention(query, key, value, mask=None, causal=False, scale=None,
                      query_chunk_size=1024, key_chunk_size=1024, causal_offset=None):
    """Exact softmax(q k^T * scale, masked) v in O(L * chunk) memory, forward and backward.

    Queries are processed `query_chunk_size` at a time (tf.map_fn); for each query chunk the
    keys are visited `key_chunk_size` at a time (tf.while_loop) with a running max and
    running sums; with `causal`, key chunks entirely after the query chunk are skipped.
    Both levels are wrapped in `tf.recompute_grad`, so the backward pass recomputes chunks
    instead of storing their scores. Lengths may be unknown (None) in a tf.function:
    T and S are padded up to multiples of the chunk sizes internally.

    Args:
        query: (..., T, d) floating tensor.
        key: (..., S, d).
        value: (..., S, dv).
        mask: bool/0-1 mask broadcastable to (..., T, S); True = may attend. Axes of size 1
            stay unexpanded, so a (B, 1, 1, S) padding mask costs O(S).
        causal: hide keys after each query; key j is visible from query i when
            j <= i + offset, built per chunk (never a (T, S) tensor).
        scale: multiplier of the scores; default 1/sqrt(d).
        query_chunk_size: queries per chunk (clipped to T).
        key_chunk_size: keys per chunk (clipped to S).
        causal_offset: absolute position of the first query for `causal`; default S - T,
            so the last query sees the last key (as in `scaled_dot_product_attention`).

    Returns:
        (..., T, dv) with the dtype of `query`. Query rows with no visible key are zero.
        Half-precision inputs keep their running sums in float32.

    Example:
        >>> q = tf.random.normal([2, 4, 100, 8])
        >>> chunked_attention(q, q, q, causal=True, query_chunk_size=32,
        ...                   key_chunk_size=16).shape
        TensorShape([2, 4, 100, 8])
    """
    query, key, value = check_query_key_value(query, key, value)
    query_chunk_size = check_positive_int("query_chunk_size", query_chunk_size)
    key_chunk_size = check_positive_int("key_chunk_size", key_chunk_size)
    rank = query.shape.rank
    if rank is None or key.shape.rank is None or value.shape.rank is None:
        raise ValueError("chunked_attention needs inputs of known rank, got query %s, key %s, "
                         "value %s" % (shape_str(query), shape_str(key), shape_str(value)))
    dtype = query.dtype
    acc_dtype = softmax_dtype(dtype)

    if scale is None:
        depth = query.shape[-1]
        scale = (default_scale(depth) if depth is not None
                 else tf.math.rsqrt(tf.cast(tf.shape(query)[-1], tf.float32)))
    query = query * tf.cast(scale, dtype)

    if mask is not None:
        scores_shape = query.shape[:-1].concatenate(key.shape[-2:-1])
        mask = align_mask(mask, scores_shape)
        if mask.shape.rank is None:
            raise ValueError("chunked_attention needs a mask of known rank, got %s"
                             % shape_str(mask))

    t = _length(query, -2)
    s = _length(key, -2)
    q_chunk = _clip(query_chunk_size, t)
    k_chunk = _clip(key_chunk_size, s)
    num_q = (t + q_chunk - 1) // q_chunk
    num_k = (s + k_chunk - 1) // k_chunk
    pad_s = num_k * k_chunk - s
    # Padded keys must be hidden unless the key length is statically a multiple of the chunk.
    hide_padded_keys = not (isinstance(pad_s, int) and pad_s == 0)
    if causal:
        offset = s - t if causal_offset is None else causal_offset
        offset = tf.cast(offset, tf.int32)

    q_chunks = _to_chunks(_pad_length(query, num_q * q_chunk - t, rank), num_q, q_chunk, rank)
    k_chunks = _to_chunks(_pad_length(key, pad_s, rank), num_k, k_chunk, rank)
    v_chunks = _to_chunks(_pad_length(value, pad_s, rank), num_k, k_chunk, rank)

    def chunk_keep(q_index, k_index):
        """bool mask of rank `rank` for one (query chunk, key chunk) pair, or None."""
        q_pos = q_index * q_chunk + tf.range(q_chunk)
        k_pos = k_index * k_chunk + tf.range(k_chunk)
        lead = [1] * (rank - 2)
        parts = []
        if hide_padded_keys:
            parts.append(tf.reshape(k_pos < s, lead + [1, -1]))
        if causal:
            visible = k_pos[tf.newaxis, :] <= q_pos[:, tf.newaxis] + offset
            parts.append(tf.reshape(visible, lead + [q_chunk, k_chunk]))
        if mask is not None:
            parts.append(_slice_axis(_slice_axis(mask, q_pos, rank - 2), k_pos, rank - 1))
        keep = None
        for part in parts:
            keep = part if keep is None else tf.logical_and(keep, part)
        return keep

    def key_chunks_needed(q_index):
        """Key chunks that any query of this chunk can see; causal skips those after it."""
        if not causal:
            return num_k
        last_query = tf.minimum((q_index + 1) * q_chunk, t) - 1
        needed = (last_query + offset) // k_chunk + 1
        return tf.clip_by_value(needed, 0, num_k)

    def attend_query_chunk(q_index):
        def attend(q, keys, values):
            key_array = tf.TensorArray(dtype, size=num_k, element_shape=keys.shape[1:])
            key_array = key_array.unstack(keys)
            value_array = tf.TensorArray(dtype, size=num_k, element_shape=values.shape[1:])
            value_array = value_array.unstack(values)

            def step(k_index, acc, row_max, row_sum):
                keep = chunk_keep(q_index, k_index)

                def summary(q_, k_, v_):
                    return _chunk_summary(q_, k_, v_, keep, acc_dtype)

                weighted, chunk_sum, chunk_max = tf.recompute_grad(summary)(
                    q, key_array.read(k_index), value_array.read(k_index))
                new_max = tf.maximum(row_max, chunk_max)
                old_factor = tf.exp(row_max - new_max)
                new_factor = tf.exp(chunk_max - new_max)
                return (k_index + 1, acc * old_factor + weighted * new_factor, new_max,
                        row_sum * old_factor + chunk_sum * new_factor)

            rows = tf.shape(q)[:-1]
            init = (tf.constant(0),
                    tf.zeros(tf.concat([rows, tf.shape(values)[-1:]], 0), acc_dtype),
                    tf.fill(tf.concat([rows, [1]], 0), mask_value(acc_dtype)),
                    tf.zeros(tf.concat([rows, [1]], 0), acc_dtype))
            needed = key_chunks_needed(q_index)
            # One iteration at a time: with the default 10 the executor starts the score
            # matmuls of later key chunks early and holds up to 10 (chunk x chunk) blocks.
            _, acc, _, row_sum = tf.while_loop(lambda k_index, *_: k_index < needed, step,
                                               init, parallel_iterations=1)
            # Rows that saw no key have row_sum == 0: zero output instead of 0 / 0.
            return tf.cast(tf.math.divide_no_nan(acc, row_sum), dtype)

        return tf.recompute_grad(attend)

    def per_query_chunk(elems):
        q, q_index = elems
        return attend_query_chunk(q_index)(q, k_chunks, v_chunks)

    out = tf.map_fn(per_query_chunk, (q_chunks, tf.range(num_q)), fn_output_signature=dtype,
                    parallel_iterations=1)
    out = _from_chunks(out, rank)[..., :t, :]
    out_shape = query.shape[:-1].concatenate(value.shape[-1:])
    out.set_shape(out_shape)
    return out
