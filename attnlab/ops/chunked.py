"""Memory-efficient exact attention over query and key chunks, forward and backward.

"Self-attention does not need O(n^2) memory" (Rabe & Staats 2021): the keys are visited
chunk by chunk, and each block's own softmax average of the values is merged into a running
one by softmax mass (the log-sum-exp of the block's scores), which keeps the softmax exact.
The gradient is written by hand, as in FlashAttention (Dao et al. 2022): the forward pass
keeps only the output and, for each query and key chunk, the share of the query's softmax
mass in that chunk (T * S / chunk scalars); the backward pass recomputes every (query
chunk, key chunk) score block exactly once, takes its weights from the block's own softmax
times that share, and accumulates dQ, dK and dV. Neither pass ever holds a (T, S) score
matrix, and no block is computed more than twice in all (autodiff with recomputation would
compute each one three times). Chunks live in TensorArrays, so that writing or re-reading
one costs O(chunk), not O(sequence).

Where TensorFlow's CPU softmax is its generic kernel (`softmax_kernel`), float32/float64
attention goes through exp and row sums instead: every block's exp(s - s0) shares one
shift per query (its score against key 0), so the blocks' E [v, 1] products simply add
up, with no rescaling and one normalization per query chunk at the end, and the backward
pass takes its weights as exp(s - lse) from one exp, keeping one scalar per query.
"""
import numpy as np
import tensorflow as tf

from attnlab.ops.masked_softmax import mask_value, softmax_dtype
from attnlab.ops.masks import align_mask
from attnlab.ops.scaled_dot_product import EXP_ROW_SUM_LIMIT, default_scale
from attnlab.ops.softmax_kernel import attention_normalization
from attnlab.validation import check_positive_int, check_query_key_value, shape_str


def _length(x, axis):
    """Static length along `axis` when known, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def _clip(chunk_size, length):
    """Chunk size clipped to the length (a Python int when the length is static)."""
    if isinstance(length, int):
        return min(chunk_size, length)
    return tf.minimum(chunk_size, length)


def _pad_length(x, amount, rank):
    """Zero-pad axis -2 (the sequence) at the end by `amount`; no copy when it is 0."""
    if isinstance(amount, int) and amount == 0:
        return x
    return tf.pad(x, [[0, 0]] * (rank - 2) + [[0, amount], [0, 0]])


def _chunk(x, index, size):
    """Rows [index * size, (index + 1) * size) of axis -2, with as static a shape as `x`."""
    rank, shape = x.shape.rank, tf.shape(x)
    # tf.slice with explicit sizes (not x[..., a:b, :]) so that XLA sees a static size.
    begin = tf.concat([tf.zeros([rank - 2], tf.int32), [index * size, 0]], axis=0)
    chunk = tf.slice(x, begin, tf.concat([shape[:-2], [size, shape[-1]]], axis=0))
    chunk.set_shape(x.shape[:-2].concatenate([size if isinstance(size, int) else None,
                                              x.shape[-1]]))
    return chunk


def _chunk_array(num_chunks, dtype, fill=None):
    """A TensorArray of `num_chunks` chunks; with `fill`, every element starts as `fill`.

    Writing a chunk is O(chunk): the array holds references, where a tensor_scatter_nd
    write into a (..., n, c, d) buffer copies the whole buffer on every call.
    """
    chunks = tf.TensorArray(dtype, size=num_chunks, clear_after_read=False,
                            element_shape=None if fill is None else fill.shape)
    if fill is None:
        return chunks
    # Every element refers to the same `fill` tensor: updates replace it, never write to it.
    return tf.while_loop(lambda index, _: index < num_chunks,
                         lambda index, chunks: (index + 1, chunks.write(index, fill)),
                         (0, chunks))[1]


def _split(x, num_chunks, chunk_size, ones_column=False):
    """TensorArray of the `num_chunks` chunks of `x` along axis -2, each sliced once; with
    `ones_column`, each chunk is [chunk, 1] (a column of ones appended).

    A loop reading the same chunk many times reads it from here without a copy, where a
    slice of `x` copies it every time (the chunks are one copy of `x` in all).
    """
    depth = x.shape[-1]
    if ones_column and depth is not None:
        depth += 1
    shape = x.shape[:-2].concatenate([chunk_size if isinstance(chunk_size, int) else None,
                                      depth])

    def chunk(index):
        part = _chunk(x, index, chunk_size)
        return _with_column(part, tf.ones_like(part[..., :1])) if ones_column else part

    chunks = tf.TensorArray(x.dtype, size=num_chunks, clear_after_read=False,
                            element_shape=shape)
    return tf.while_loop(
        lambda index, _: index < num_chunks,
        lambda index, chunks: (index + 1, chunks.write(index, chunk(index))),
        (0, chunks))[1]


def _sequence(chunks, num_chunks, length):
    """The array's (..., c, d) chunks joined along axis -2 into (..., length, d).

    A known number of chunks is joined by one concat (a single chunk with no copy); an
    unknown one is stacked to (n, ..., c, d) and moved into place by a transpose.
    """
    if isinstance(num_chunks, int):
        parts = [chunks.read(index) for index in range(num_chunks)]
        x = parts[0] if num_chunks == 1 else tf.concat(parts, axis=-2)
    else:
        stacked = chunks.stack()
        rank = stacked.shape.rank
        x = tf.transpose(stacked, list(range(1, rank - 2)) + [0, rank - 2, rank - 1])
        shape = tf.shape(x)
        x = tf.reshape(x, tf.concat([shape[:-3], [shape[-3] * shape[-2], shape[-1]]], 0))
    if isinstance(length, int) and x.shape[-2] == length:
        return x
    return x[..., :length, :]


def _slice_axis(mask, positions, axis):
    """Rows (or columns) `positions` of a mask axis that is not broadcast (size != 1).

    Positions past the end (padding) are clamped to the last index; they belong to padded
    queries, whose output is dropped, or padded keys, which the key-validity mask hides.
    """
    if mask.shape[axis] == 1:
        return mask
    last = tf.shape(mask)[axis] - 1
    return tf.gather(mask, tf.minimum(positions, last), axis=axis)


def _block_scores(query, key, keep, acc_dtype):
    """q k^T of one block, masked scores replaced by the mask value."""
    scores = tf.cast(tf.matmul(query, key, transpose_b=True), acc_dtype)
    if keep is not None:
        # Replacing (not offsetting) masked scores keeps exp() finite.
        scores = tf.where(keep, scores, mask_value(acc_dtype))
    return scores


def _block_lse(first_score, weights, max_score):
    """log sum_j exp(s_ij) per row of a block, from its softmax weights w = softmax(s).

    Any one column gives it: w_i0 = exp(s_i0 - lse_i), so lse_i = s_i0 - log(w_i0), from
    `first_score` (s_i0) and a (c, 1) slice instead of two passes over the (c, c) block
    for its row maxima. When some w_i0 is below the dtype's epsilon (key 0 masked or far
    below the row's best), its logarithm would lose precision or be -inf: the block then
    takes lse = max_j s_ij - log(max_j w_ij) (the largest weight is exp(max - lse)), with
    max_j s_ij from the callable `max_score`.
    """
    first_weight = weights[..., :1]
    epsilon = np.finfo(weights.dtype.as_numpy_dtype).eps
    precise = tf.reduce_all(first_weight >= tf.constant(epsilon, weights.dtype))
    lse = tf.cond(
        precise,
        lambda: first_score - tf.math.log(first_weight),
        lambda: max_score() - tf.math.log(tf.reduce_max(weights, axis=-1, keepdims=True)))
    # (..., c, 1) even where c is unknown (a slice [:1] of an unknown axis could be empty).
    lse.set_shape(weights.shape[:-1].concatenate([1]))
    return lse


def _block_attention(query, key, value, keep, acc_dtype):
    """Attention of one query chunk over one key chunk alone: (softmax(s) v, lse(s)).

    The output is normalized within the block; lse, the log-sum-exp of each row's
    visible scores, weighs it against the other blocks. Rows with nothing visible give a
    zero output and an lse of the mask value (no mass).
    """
    scores = _block_scores(query, key, keep, acc_dtype)
    first_score = scores[..., :1]
    # The softmax runs after that slice and is the last to read the scores, so it can
    # write its output over them in place; the rare fallback of `_block_lse` computes
    # them again rather than keep them. (TF's fused softmax kernel is faster than
    # exp(scores - max) and a sum as separate ops.)
    with tf.control_dependencies([first_score]):
        weights = tf.nn.softmax(scores)
    output = tf.cast(tf.matmul(tf.cast(weights, value.dtype), value), acc_dtype)
    lse = _block_lse(first_score, weights, lambda: tf.reduce_max(
        _block_scores(query, key, keep, acc_dtype), axis=-1, keepdims=True))
    if keep is not None:
        # A row with nothing visible has uniform weights over masked keys: no mass.
        visible = tf.reduce_any(keep, axis=-1, keepdims=True)
        lse = tf.where(visible, lse, mask_value(acc_dtype))
        output = tf.where(visible, output, tf.zeros([], acc_dtype))
    return output, lse


def _shifted_block(query_column, key_column, value_column, keep):
    """One block's share of the exp formulation: exp([q, -s0] [k, 1]^T) [v, 1], masked
    entries zero. s0 is each query's score against key 0 of the whole sequence, the same
    for every block, so the shares of all blocks simply add up: the sum's last column is the
    row sum of exp(s - s0) over the keys seen so far, and its other columns are the
    unnormalized output (see `forward` in `chunked_attention`)."""
    weights = tf.exp(tf.matmul(query_column, key_column, transpose_b=True))
    if keep is not None:
        weights = tf.where(keep, weights, tf.zeros([], weights.dtype))
    return tf.matmul(weights, value_column)


def _with_column(x, column):
    """(..., n, d) -> (..., n, d + 1): `x` with `column` (..., n, 1) appended."""
    return tf.concat([x, tf.cast(column, x.dtype)], axis=-1)


def _transposed_zeros(x, dtype):
    """Zeros of the shape of x^T, (..., d, n) for x of shape (..., n, d)."""
    shape = tf.shape(x)
    zeros = tf.zeros(tf.concat([shape[:-2], shape[-1:], shape[-2:-1]], axis=0), dtype)
    zeros.set_shape(x.shape[:-2].concatenate([x.shape[-1], x.shape[-2]]))
    return zeros


def _block_weights(query, key, keep, acc_dtype):
    """softmax(q k^T) over this block's keys alone, masked as in `_block_attention`."""
    return tf.nn.softmax(_block_scores(query, key, keep, acc_dtype))


def _chunk_gradients(query, key, value, d_out, delta, ratio, keep, acc_dtype):
    """Gradient contributions of one (query chunk, key chunk) block.

    The exact softmax weights are p = exp(s - lse) = w * r, with w the block's own softmax
    (TF's fused kernel, faster than exp) and r = exp(lse_block - lse) per query, kept by the
    forward pass. With delta = rowsum(dO * O): dV = p^T dO, dS = p * (dO V^T - delta),
    dQ = dS K, dK = dS^T Q. The row factor r is folded into dO and delta (O(c * d) work,
    not O(c^2)). In float32/float64 `value` arrives as [V, 1] and dO is extended to
    [dO, -delta], so that the delta offset rides in the matmul; the returned d_value then
    has an extra row, dropped by the caller. (dO is not extended once for the whole
    sequence: that copy would add O(L * d) memory whenever the caller keeps dO.)

    dK and dV are returned transposed, (..., d, c): timed alone, oneDNN computes dO^T W about
    25% faster than W^T dO for a (512 x 512) block W, and q^T dS about 8% faster than
    dS^T q; the caller transposes the sums once per key chunk.
    """
    dtype = query.dtype
    fold = dtype == acc_dtype  # half precision: the offset is applied in float32
    weights = _block_weights(query, key, keep, acc_dtype)
    if fold:
        d_out = _with_column(d_out, -delta)
    d_out = d_out * tf.cast(ratio, dtype)
    d_value_t = tf.cast(tf.matmul(d_out, tf.cast(weights, dtype), transpose_a=True), acc_dtype)
    d_shifted = tf.cast(tf.matmul(d_out, value, transpose_b=True), acc_dtype)
    if not fold:
        d_shifted = d_shifted - delta * ratio
    d_scores = tf.cast(weights * d_shifted, dtype)
    d_query = tf.cast(tf.matmul(d_scores, key), acc_dtype)
    d_key_t = tf.cast(tf.matmul(query, d_scores, transpose_a=True), acc_dtype)
    return d_query, d_key_t, d_value_t


def _chunk_gradients_exp(query, key, key_column, value, d_out, lse, keep):
    """`_chunk_gradients` with the exact weights p = exp(s - lse) from one exp, where the
    CPU softmax is TensorFlow's generic kernel: [q, -lse] [k, 1]^T puts the shift in the
    score matmul (`key_column` is [k, 1]). `value` is [V, 1] and `d_out` [dO, -delta], as
    there; lse is the query's log-sum-exp over all keys, so p <= 1. dK and dV are returned
    transposed."""
    scores = tf.matmul(_with_column(query, -lse), key_column, transpose_b=True)
    if keep is not None:
        scores = tf.where(keep, scores, mask_value(scores.dtype))
    weights = tf.exp(scores)
    d_value_t = tf.matmul(d_out, weights, transpose_a=True)
    d_scores = weights * tf.matmul(d_out, value, transpose_b=True)
    return (tf.matmul(d_scores, key), tf.matmul(query, d_scores, transpose_a=True),
            d_value_t)


@tf.custom_gradient
def _first_order_only(*grads):
    """The gradients as they are; differentiating them again raises a clear error.

    The backward pass treats the saved output and weight ratios as constants, so autodiff of
    it would give a wrong second-order gradient without any warning.
    """
    def second_order(*_):
        raise NotImplementedError(
            "chunked_attention has a first-order gradient only (its backward pass is written "
            "by hand); use scaled_dot_product_attention where a gradient of the gradient is "
            "needed, e.g. for a gradient penalty")

    return [tf.identity(g) for g in grads], second_order


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def chunked_attention(query, key, value, mask=None, causal=False, scale=None,
                      query_chunk_size=512, key_chunk_size=512, causal_offset=None):
    """Exact softmax(q k^T * scale, masked) v in O(L * chunk) memory, forward and backward.

    (Plus one scalar per query and key chunk, kept for the backward pass: 4 MiB at
    B=1, H=8, L=8192 with chunks of 512; one per query with the exp formulation.)

    Queries are processed `query_chunk_size` at a time; for each query chunk the keys are
    visited `key_chunk_size` at a time, the blocks merged by their softmax mass; with
    `causal`, key chunks entirely after the query chunk are skipped, in both passes. The
    gradient recomputes each score block once (see the module docstring); it is first-order
    only: differentiating it again raises NotImplementedError. Lengths may be unknown (None)
    in a tf.function: T and S are padded up to multiples of the chunk sizes internally.

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
    # Where TensorFlow's CPU softmax is its generic kernel, the blocks normalize by exp
    # and row sums instead (float32/float64; half precision keeps the float32 softmax).
    via_exp = dtype == acc_dtype and attention_normalization() == "exp"

    if scale is None:
        depth = query.shape[-1]
        scale = (default_scale(depth) if depth is not None
                 else tf.math.rsqrt(tf.cast(tf.shape(query)[-1], tf.float32)))
    # A constant scale is applied to each query chunk inside (no scaled copy of the whole
    # query, and none of its gradient); a tensor one outside, so that it gets a gradient.
    chunk_scale = None
    if isinstance(scale, (int, float)):
        chunk_scale = None if scale == 1.0 else float(scale)
    else:
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
    pad_t = num_q * q_chunk - t
    pad_s = num_k * k_chunk - s
    # Padded keys must be hidden unless the key length is statically a multiple of the chunk.
    hide_padded_keys = not (isinstance(pad_s, int) and pad_s == 0)
    if causal:
        offset = s - t if causal_offset is None else causal_offset
        offset = tf.cast(offset, tf.int32)

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

    def first_query_chunk(k_index):
        """The first query chunk that sees any key of this chunk (causal), else 0."""
        if not causal:
            return 0
        return tf.clip_by_value((k_index * k_chunk - offset) // q_chunk, 0, num_q)

    def query_chunk(q, q_index):
        """Query chunk `q_index`, scaled."""
        q_i = _chunk(q, q_index, q_chunk)
        return q_i if chunk_scale is None else q_i * tf.cast(chunk_scale, dtype)

    def forward(q, k, v):
        """Output (..., T, dv) and each block's weight ratio (num_q, num_k, ..., c, 1), or
        with `via_exp` each query's log-sum-exp (num_q, ..., c, 1).

        The ratio r = exp(lse_block - lse) of a query's softmax mass inside one key chunk
        lets the backward pass rebuild exact weights from the block's own softmax; blocks
        the forward pass skips (causal) keep r = 0. The exp formulation's backward pass
        takes exp(s - lse) directly.
        """
        q = _pad_length(q, pad_t, rank)
        k = _pad_length(k, pad_s, rank)
        v = _pad_length(v, pad_s, rank)
        value_depth = tf.shape(v)[-1:]
        # [v, 1]'s depth, static where v's is (tf.zeros then gets a static shape).
        column_depth = [v.shape[-1] + 1] if v.shape[-1] is not None else value_depth + 1
        first_key = k[..., :1, :]
        # Every query chunk reads every key chunk: slice them once (the exp formulation
        # reads [k, 1] and [v, 1]).
        k, v = (_split(x, num_k, k_chunk, ones_column=via_exp) for x in (k, v))
        outputs = _chunk_array(num_q, dtype)
        ratios = _chunk_array(num_q, acc_dtype)
        no_mass = tf.fill(tf.concat([tf.shape(q)[:-2], [q_chunk, 1]], 0), mask_value(acc_dtype))

        def merged_blocks(q_i, q_index, read_key, read_value):
            """Output, lse and the per-block lse of one query chunk: each block normalized
            by its own softmax, merged into the running average by softmax mass."""
            def key_step(k_index, out, lse, block_lses):
                block_out, block_lse = _block_attention(
                    q_i, read_key(k_index), read_value(k_index),
                    chunk_keep(q_index, k_index), acc_dtype)
                # Two averages merged by their masses exp(lse), taken relative to the larger.
                top = tf.maximum(lse, block_lse)
                mass, block_mass = tf.exp(lse - top), tf.exp(block_lse - top)
                total = mass + block_mass
                out = out * (mass / total) + block_out * (block_mass / total)
                return (k_index + 1, out, top + tf.math.log(total),
                        block_lses.write(k_index, block_lse))

            rows = tf.shape(q_i)[:-1]
            init = (tf.constant(0),
                    tf.zeros(tf.concat([rows, value_depth], 0), acc_dtype),
                    no_mass,
                    _chunk_array(num_k, acc_dtype, fill=no_mass))
            needed = key_chunks_needed(q_index)
            # One iteration at a time: with the default 10 the executor starts the score
            # matmuls of later chunks early and holds up to 10 (chunk x chunk) blocks.
            _, out, lse, block_lses = tf.while_loop(
                lambda k_index, *_: k_index < needed, key_step, init, parallel_iterations=1)
            # Rows that saw no key kept the mask value as lse (adding log 2 to it rounds
            # away) and a zero output; an lse of 0 makes all of their ratios exp(mask
            # value) = 0.
            lse = tf.where(lse > 0.5 * mask_value(acc_dtype), lse, 0)
            return out, lse, block_lses

        def shifted_blocks(q_i, q_index):
            """Output and lse of one query chunk through exp and row sums, and whether
            every row sum fits (`scaled_dot_product.key0_shifted_exp` on the whole key
            sequence): E = exp(s - s0), s0 the query's score against key 0, summed
            block by block with no rescaling, normalized once at the end."""
            first = tf.matmul(q_i, first_key, transpose_b=True)
            query_column = _with_column(q_i, -first)

            def key_step(k_index, total):
                return k_index + 1, total + _shifted_block(
                    query_column, k.read(k_index), v.read(k_index),
                    chunk_keep(q_index, k_index))

            rows = tf.shape(q_i)[:-1]
            init = (tf.constant(0), tf.zeros(tf.concat([rows, column_depth], 0), dtype))
            _, total = tf.while_loop(lambda k_index, *_: k_index < key_chunks_needed(q_index),
                                     key_step, init, parallel_iterations=1)
            row_sum = total[..., -1:]
            fits = tf.reduce_all((row_sum >= 1.0) & (row_sum <= EXP_ROW_SUM_LIMIT))
            return total[..., :-1] / row_sum, first + tf.math.log(row_sum), fits

        def query_step(q_index, outputs, ratios):
            q_i = query_chunk(q, q_index)
            if via_exp:
                out, lse, fits = shifted_blocks(q_i, q_index)
                # A row sum out of range (key 0 hidden or far below another key, a row
                # with nothing visible, NaN): the chunk again, block by block.
                out, lse = tf.cond(fits, lambda: (out, lse), lambda: merged_blocks(
                    q_i, q_index, lambda i: k.read(i)[..., :-1],
                    lambda i: v.read(i)[..., :-1])[:2])
                ratio = lse
            else:
                out, lse, block_lses = merged_blocks(q_i, q_index, k.read, v.read)
                ratio = tf.exp(block_lses.stack() - lse)
            return (q_index + 1, outputs.write(q_index, tf.cast(out, dtype)),
                    ratios.write(q_index, ratio))

        _, outputs, ratios = tf.while_loop(
            lambda q_index, *_: q_index < num_q, query_step, (0, outputs, ratios),
            parallel_iterations=1)
        return _sequence(outputs, num_q, t), ratios.stack()

    def backward(q, k, v, out, ratios, d_out):
        """dQ, dK, dV: key chunks outer (dK, dV accumulate per chunk), queries inner."""
        d_out = tf.cast(d_out, dtype)
        delta = tf.reduce_sum(tf.cast(d_out, acc_dtype) * tf.cast(out, acc_dtype), axis=-1,
                              keepdims=True)
        # Padded queries get zero upstream gradient: they contribute nothing.
        q, d_out, delta = (_pad_length(x, pad_t, rank) for x in (q, d_out, delta))
        fold = dtype == acc_dtype  # the delta offset rides in the matmuls (see above)
        k = _pad_length(k, pad_s, rank)
        v = _pad_length(v, pad_s, rank)
        # Query chunks that no key chunk reaches (causal) keep a zero gradient.
        d_query = _chunk_array(num_q, acc_dtype,
                               fill=tf.zeros_like(_chunk(q, 0, q_chunk), acc_dtype))
        d_keys = _chunk_array(num_k, dtype)
        d_values = _chunk_array(num_k, dtype)

        def key_step(k_index, d_query, d_keys, d_values):
            # The scale rides on the key chunk: s = q (c k)^T, dQ = dS (c k), dK = c dS^T q.
            k_j = _chunk(k, k_index, k_chunk)
            if chunk_scale is not None:
                k_j = k_j * tf.cast(chunk_scale, dtype)
            v_j = _chunk(v, k_index, k_chunk)
            if fold:
                v_j = _with_column(v_j, tf.ones_like(v_j[..., :1]))
            k_column = _with_column(k_j, tf.ones_like(k_j[..., :1])) if via_exp else None

            def query_step(q_index, d_query, d_key_t, d_value_t):
                keep = chunk_keep(q_index, k_index)
                if via_exp:
                    dq, dk_t, dv_t = _chunk_gradients_exp(
                        _chunk(q, q_index, q_chunk), k_j, k_column, v_j,
                        _with_column(_chunk(d_out, q_index, q_chunk),
                                     -_chunk(delta, q_index, q_chunk)),
                        ratios[q_index], keep)
                else:
                    dq, dk_t, dv_t = _chunk_gradients(
                        _chunk(q, q_index, q_chunk), k_j, v_j,
                        _chunk(d_out, q_index, q_chunk), _chunk(delta, q_index, q_chunk),
                        ratios[q_index, k_index], keep, acc_dtype)
                d_query = d_query.write(q_index, d_query.read(q_index) + dq)
                return q_index + 1, d_query, d_key_t + dk_t, d_value_t + dv_t

            init = (first_query_chunk(k_index), d_query,
                    _transposed_zeros(k_j, acc_dtype), _transposed_zeros(v_j, acc_dtype))
            _, d_query, d_key_t, d_value_t = tf.while_loop(
                lambda q_index, *_: q_index < num_q, query_step, init, parallel_iterations=1)
            if chunk_scale is not None:
                d_key_t = d_key_t * chunk_scale
            if fold:
                d_value_t = d_value_t[..., :-1, :]
            d_key = tf.linalg.matrix_transpose(d_key_t)
            d_value = tf.linalg.matrix_transpose(d_value_t)
            return (k_index + 1, d_query, d_keys.write(k_index, tf.cast(d_key, dtype)),
                    d_values.write(k_index, tf.cast(d_value, dtype)))

        _, d_query, d_keys, d_values = tf.while_loop(
            lambda k_index, *_: k_index < num_k, key_step, (0, d_query, d_keys, d_values),
            parallel_iterations=1)
        return (tf.cast(_sequence(d_query, num_q, t), dtype), _sequence(d_keys, num_k, s),
                _sequence(d_values, num_k, s))

    @tf.custom_gradient
    def attend(q, k, v):
        # The tape must not record the forward loops (eagerly, it would keep every block).
        q, k, v = (tf.stop_gradient(x) for x in (q, k, v))
        out, ratios = forward(q, k, v)

        def grad(d_out):
            d_q, d_k, d_v = backward(q, k, v, out, ratios, d_out)
            d_q.set_shape(q.shape)
            d_k.set_shape(k.shape)
            d_v.set_shape(v.shape)
            return _first_order_only(d_q, d_k, d_v)

        return out, grad

    out = attend(query, key, value)
    out.set_shape(query.shape[:-1].concatenate(value.shape[-1:]))
    return out
