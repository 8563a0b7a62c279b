"""Memory-efficient exact attention over query and key chunks, forward and backward.

"Self-attention does not need O(n^2) memory" (Rabe & Staats 2021): the keys are visited
chunk by chunk, and each block's own softmax average of the values is merged into a running
one by softmax mass (the log-sum-exp of the block's scores, `_merge`), which keeps the
softmax exact. The gradient is written by hand, as in FlashAttention (Dao et al. 2022): the
forward pass keeps only the output and, for each query and key chunk, the share of the
query's softmax mass in that chunk (T * S / chunk scalars); the backward pass recomputes
every (query chunk, key chunk) score block exactly once, takes its weights from the block's
own softmax times that share, and accumulates dQ, dK and dV. Neither pass ever holds a
(T, S) score matrix, and no block is computed more than twice in all (autodiff with
recomputation would compute each one three times).

`normalization="exp"` (the "chunked_exp" kernel, faster where TensorFlow's CPU softmax is
its generic kernel) goes through exp and row sums instead, in float32/float64: every block's
exp(s - s0) shares one shift per query (its score against key 0), so the blocks' E [v, 1]
products simply add up, with no rescaling and one normalization per query chunk at the end,
and the backward pass takes its weights as exp(s - lse) from one exp, keeping one scalar per
query.

Chunk sizes, padding and per-block masks are `chunk_plan.ChunkPlan`'s.
"""
import numpy as np
import tensorflow as tf

from attnlab.ops.checks import check_int_arg, checked_numerics
from attnlab.ops.chunk_plan import (
    ChunkPlan,
    chunk,
    chunk_array,
    sequence,
    split,
    transposed_zeros,
    with_column,
    with_ones_column,
)
from attnlab.ops.full import EXP_ROW_SUM_LIMIT, NORMALIZATIONS
from attnlab.ops.masked_softmax import mask_value, score_matmul, softmax_dtype
from attnlab.ops.masks import check_bool_arg
from attnlab.ops.scaled_dot_product import resolve_scale
from attnlab.ops.score_bias import reduce_to_shape_of
from attnlab.ops.shapes import blockwise_inputs
from attnlab.validation import check_choice, check_positive_int


# ------------------------------------------------------------------ one block
def _block_scores(query, key, keep, acc_dtype, bias=None):
    """q k^T (+ the block's bias) of one block, masked scores replaced by the mask value."""
    # float16 blocks are multiplied in float32: |q . k| > 65504 must not overflow.
    scores = tf.cast(score_matmul(query, key), acc_dtype)
    if bias is not None:
        scores = scores + bias
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


def _block_attention(query, key, value, keep, acc_dtype, bias=None):
    """Attention of one query chunk over one key chunk alone: (softmax(s) v, lse(s)).

    The output is normalized within the block; lse, the log-sum-exp of each row's
    visible scores, weighs it against the other blocks. Rows with nothing visible give a
    zero output and an lse of the mask value (no mass).
    """
    scores = _block_scores(query, key, keep, acc_dtype, bias)
    first_score = scores[..., :1]
    # The softmax runs after that slice and is the last to read the scores, so it can
    # write its output over them in place; the rare fallback of `_block_lse` computes
    # them again rather than keep them. (TF's fused softmax kernel is faster than
    # exp(scores - max) and a sum as separate ops.)
    with tf.control_dependencies([first_score]):
        weights = tf.nn.softmax(scores)
    output = tf.cast(tf.matmul(tf.cast(weights, value.dtype), value), acc_dtype)
    lse = _block_lse(first_score, weights, lambda: tf.reduce_max(
        _block_scores(query, key, keep, acc_dtype, bias), axis=-1, keepdims=True))
    if keep is not None:
        # A row with nothing visible has uniform weights over masked keys: no mass.
        visible = tf.reduce_any(keep, axis=-1, keepdims=True)
        lse = tf.where(visible, lse, mask_value(acc_dtype))
        output = tf.where(visible, output, tf.zeros([], acc_dtype))
    return output, lse


def _shifted_block(query_column, key_column, value_column, keep, bias=None):
    """One block's share of the exp formulation: exp([q, -s0] [k, 1]^T + bias) [v, 1],
    masked entries zero. s0 is each query's score against key 0 of the whole sequence, the same
    for every block, so the shares of all blocks simply add up: the sum's last column is the
    row sum of exp(s - s0) over the keys seen so far, and its other columns are the
    unnormalized output (see `forward` in `chunked_attention`)."""
    shifted = tf.matmul(query_column, key_column, transpose_b=True)
    weights = tf.exp(shifted if bias is None else shifted + bias)
    if keep is not None:
        weights = tf.where(keep, weights, tf.zeros([], weights.dtype))
    return tf.matmul(weights, value_column)


def _block_weights(query, key, keep, acc_dtype, bias=None):
    """softmax(q k^T + bias) over this block's keys alone, masked as in `_block_attention`."""
    return tf.nn.softmax(_block_scores(query, key, keep, acc_dtype, bias))


def _chunk_gradients(query, key, value, d_out, delta, ratio, keep, acc_dtype, bias=None):
    """Gradient contributions of one (query chunk, key chunk) block.

    The exact softmax weights are p = exp(s - lse) = w * r, with w the block's own softmax
    (TF's fused kernel, faster than exp) and r = exp(lse_block - lse) per query, kept by the
    forward pass. With delta = rowsum(dO * O): dV = p^T dO, dS = p * (dO V^T - delta),
    dQ = dS K, dK = dS^T Q. The row factor r is folded into dO and delta (O(c * d) work,
    not O(c^2)). In float32/float64 `value` arrives as [V, 1] and dO is extended to
    [dO, -delta], so that the delta offset rides in the matmul; the returned d_value then
    has an extra row, dropped by the caller. (dO is not extended once for the whole
    sequence: that copy would add O(L * d) memory whenever the caller keeps dO.)

    dK and dV are returned transposed, (..., d, c): dO^T W and q^T dS run faster than
    W^T dO and dS^T q (benchmarks/RESULTS.md, target 2); the caller transposes the sums
    once per key chunk. The fourth result is dS (in `acc_dtype`), the block's bias gradient
    before its broadcast axes are summed.
    """
    dtype = query.dtype
    fold = dtype == acc_dtype  # half precision: the offset is applied in float32
    weights = _block_weights(query, key, keep, acc_dtype, bias)
    if fold:
        d_out = with_column(d_out, -delta)
    d_out = d_out * tf.cast(ratio, dtype)
    d_value_t = tf.cast(tf.matmul(d_out, tf.cast(weights, dtype), transpose_a=True), acc_dtype)
    d_shifted = tf.cast(tf.matmul(d_out, value, transpose_b=True), acc_dtype)
    if not fold:
        d_shifted = d_shifted - delta * ratio
    d_scores_acc = weights * d_shifted
    d_scores = tf.cast(d_scores_acc, dtype)
    d_query = tf.cast(tf.matmul(d_scores, key), acc_dtype)
    d_key_t = tf.cast(tf.matmul(query, d_scores, transpose_a=True), acc_dtype)
    return d_query, d_key_t, d_value_t, d_scores_acc


def _chunk_gradients_exp(query, key, key_column, value, d_out, lse, keep, bias=None):
    """`_chunk_gradients` with the exact weights p = exp(s - lse) from one exp, where the
    CPU softmax is TensorFlow's generic kernel: [q, -lse] [k, 1]^T puts the shift in the
    score matmul (`key_column` is [k, 1]). `value` is [V, 1] and `d_out` [dO, -delta], as
    there; lse is the query's log-sum-exp over all keys, so p <= 1. dK and dV are returned
    transposed, and dS fourth."""
    scores = tf.matmul(with_column(query, -lse), key_column, transpose_b=True)
    if bias is not None:
        scores = scores + bias
    if keep is not None:
        scores = tf.where(keep, scores, mask_value(scores.dtype))
    weights = tf.exp(scores)
    d_value_t = tf.matmul(d_out, weights, transpose_a=True)
    d_scores = weights * tf.matmul(d_out, value, transpose_b=True)
    return (tf.matmul(d_scores, key), tf.matmul(query, d_scores, transpose_a=True),
            d_value_t, d_scores)


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


# ------------------------------------------------------------------ forward
def _merge(out, lse, block_out, block_lse):
    """The online-softmax merge: two softmax averages of the values, over disjoint key sets
    with log-sum-exp masses `lse` and `block_lse`, give the average over both key sets
    (weighted by their masses exp(lse), taken relative to the larger) and its mass."""
    top = tf.maximum(lse, block_lse)
    mass, block_mass = tf.exp(lse - top), tf.exp(block_lse - top)
    total = mass + block_mass
    return out * (mass / total) + block_out * (block_mass / total), top + tf.math.log(total)


def _scaled_query_chunk(plan, q, q_index, chunk_scale):
    q_i = chunk(q, q_index, plan.q_chunk)
    return q_i if chunk_scale is None else q_i * tf.cast(chunk_scale, q.dtype)


def _merged_key_chunks(plan, q_i, q_index, read_key, read_value, value_depth, acc_dtype):
    """Output, lse and the per-block lse of one query chunk: each key chunk's block is
    normalized by its own softmax and merged into the running average (`_merge`).
    `value_depth` is dv as a (1,) tensor."""
    no_mass = tf.fill(tf.concat([tf.shape(q_i)[:-1], [1]], 0), mask_value(acc_dtype))

    def key_step(k_index, out, lse, block_lses):
        block_out, block_lse = _block_attention(q_i, read_key(k_index), read_value(k_index),
                                                plan.keep(q_index, k_index), acc_dtype,
                                                plan.bias_block(q_index, k_index))
        out, lse = _merge(out, lse, block_out, block_lse)
        return k_index + 1, out, lse, block_lses.write(k_index, block_lse)

    init = (tf.constant(0), tf.zeros(tf.concat([tf.shape(q_i)[:-1], value_depth], 0),
                                     acc_dtype),
            no_mass, chunk_array(plan.num_k, acc_dtype, fill=no_mass))
    needed = plan.key_chunks_needed(q_index)
    # One iteration at a time: with the default 10 the executor starts the score matmuls
    # of later chunks early and holds up to 10 (chunk x chunk) blocks.
    _, out, lse, block_lses = tf.while_loop(lambda k_index, *_: k_index < needed, key_step,
                                            init, parallel_iterations=1)
    # Rows that saw no key kept the mask value as lse (adding log 2 to it rounds away) and
    # a zero output; an lse of 0 makes all of their ratios exp(mask value) = 0.
    lse = tf.where(lse > 0.5 * mask_value(acc_dtype), lse, 0)
    return out, lse, block_lses


def _shifted_key_chunks(plan, q_i, q_index, first_key, key_columns, value_columns):
    """Output and lse of one query chunk through exp and row sums, and whether every row
    sum fits (`full.key0_shifted_exp` on the whole key sequence): E = exp(s - s0), s0 the
    query's score against key 0, summed block by block with no rescaling, normalized once
    at the end. `key_columns` and `value_columns` hold the [k, 1] and [v, 1] chunks."""
    first = tf.matmul(q_i, first_key, transpose_b=True)
    if plan.bias is not None:
        first = first + plan.bias_block(q_index, 0)[..., :1]
    query_column = with_column(q_i, -first)

    def key_step(k_index, total):
        return k_index + 1, total + _shifted_block(
            query_column, key_columns.read(k_index), value_columns.read(k_index),
            plan.keep(q_index, k_index), plan.bias_block(q_index, k_index))

    depth = value_columns.element_shape[-1]  # static where v's depth is
    column_depth = [depth] if depth is not None else tf.shape(value_columns.read(0))[-1:]
    init = (tf.constant(0), tf.zeros(tf.concat([tf.shape(q_i)[:-1], column_depth], 0),
                                     q_i.dtype))
    needed = plan.key_chunks_needed(q_index)
    _, total = tf.while_loop(lambda k_index, *_: k_index < needed, key_step, init,
                             parallel_iterations=1)
    row_sum = total[..., -1:]
    fits = tf.reduce_all((row_sum >= 1.0) & (row_sum <= EXP_ROW_SUM_LIMIT))
    return total[..., :-1] / row_sum, first + tf.math.log(row_sum), fits


def _forward(plan, q, k, v, chunk_scale, acc_dtype):
    """Output (..., T, dv) and each block's weight ratio (num_q, num_k, ..., c, 1).

    The ratio r = exp(lse_block - lse) of a query's softmax mass inside one key chunk
    lets the backward pass rebuild exact weights from the block's own softmax; blocks the
    forward pass skips (causal) keep r = 0.
    """
    # Every query chunk reads every key chunk: slice them once.
    keys, values = (split(plan.pad_keys(x), plan.num_k, plan.k_chunk) for x in (k, v))
    value_depth = tf.shape(v)[-1:]

    def attend_query_chunk(q_i, q_index):
        out, lse, block_lses = _merged_key_chunks(plan, q_i, q_index, keys.read, values.read,
                                                  value_depth, acc_dtype)
        return out, tf.exp(block_lses.stack() - lse)

    return _over_query_chunks(plan, q, chunk_scale, attend_query_chunk, acc_dtype)


def _forward_exp(plan, q, k, v, chunk_scale, acc_dtype):
    """Output (..., T, dv) and each query's log-sum-exp (num_q, ..., c, 1), through exp and
    row sums; a query chunk whose row sums do not fit (key 0 hidden or far below another
    key, a row with nothing visible, NaN) is computed again block by block."""
    k, v = plan.pad_keys(k), plan.pad_keys(v)
    first_key = k[..., :1, :]
    key_columns, value_columns = (split(x, plan.num_k, plan.k_chunk, ones_column=True)
                                  for x in (k, v))
    value_depth = tf.shape(v)[-1:]

    def attend_query_chunk(q_i, q_index):
        out, lse, fits = _shifted_key_chunks(plan, q_i, q_index, first_key, key_columns,
                                             value_columns)
        return tf.cond(fits, lambda: (out, lse), lambda: _merged_key_chunks(
            plan, q_i, q_index, lambda i: key_columns.read(i)[..., :-1],
            lambda i: value_columns.read(i)[..., :-1], value_depth, acc_dtype)[:2])

    return _over_query_chunks(plan, q, chunk_scale, attend_query_chunk, acc_dtype)


def _over_query_chunks(plan, q, chunk_scale, attend_query_chunk, acc_dtype):
    """Runs `attend_query_chunk(q_i, q_index) -> (out, saved)` over the query chunks one at
    a time; returns the joined output (..., T, dv) and the stacked `saved` tensors."""
    q = plan.pad_queries(q)

    def query_step(q_index, outputs, saved):
        out, kept = attend_query_chunk(_scaled_query_chunk(plan, q, q_index, chunk_scale),
                                       q_index)
        return (q_index + 1, outputs.write(q_index, tf.cast(out, q.dtype)),
                saved.write(q_index, kept))

    init = (0, chunk_array(plan.num_q, q.dtype), chunk_array(plan.num_q, acc_dtype))
    _, outputs, saved = tf.while_loop(lambda q_index, *_: q_index < plan.num_q, query_step,
                                      init, parallel_iterations=1)
    return sequence(outputs, plan.num_q, plan.t), saved.stack()


# ------------------------------------------------------------------ backward
def _backward(plan, q, k, v, out, saved, d_out, chunk_scale, via_exp, acc_dtype):
    """dQ, dK, dV (and the bias's gradient when the plan has a bias): key chunks outer
    (dK, dV accumulate per chunk), queries inner.

    `saved` is what the forward pass kept: the block ratios, or each query's lse with
    `via_exp`. Each block's bias gradient is its dS summed over the axes along which the
    bias broadcasts, so a (B, 1, 1, S) bias costs O(S) per block, never (T, S).
    """
    dtype = q.dtype
    d_out = tf.cast(d_out, dtype)
    delta = tf.reduce_sum(tf.cast(d_out, acc_dtype) * tf.cast(out, acc_dtype), axis=-1,
                          keepdims=True)
    # Padded queries get zero upstream gradient: they contribute nothing.
    q, d_out, delta = (plan.pad_queries(x) for x in (q, d_out, delta))
    k, v = plan.pad_keys(k), plan.pad_keys(v)
    fold = dtype == acc_dtype  # the delta offset rides in the matmuls (`_chunk_gradients`)

    def block_gradients(q_index, k_index, k_j, k_column, v_j):
        keep = plan.keep(q_index, k_index)
        q_i, d_out_i, delta_i = (chunk(x, q_index, plan.q_chunk) for x in (q, d_out, delta))
        bias = plan.bias_block(q_index, k_index)
        if via_exp:
            grads = _chunk_gradients_exp(q_i, k_j, k_column, v_j,
                                         with_column(d_out_i, -delta_i), saved[q_index], keep,
                                         bias)
        else:
            grads = _chunk_gradients(q_i, k_j, v_j, d_out_i, delta_i, saved[q_index, k_index],
                                     keep, acc_dtype, bias)
        d_bias = () if bias is None else (reduce_to_shape_of(grads[3], bias),)
        return grads[:3] + d_bias

    def key_step(k_index, d_query, d_keys, d_values, *d_bias_blocks):
        # The scale rides on the key chunk: s = q (c k)^T, dQ = dS (c k), dK = c dS^T q.
        k_j = chunk(k, k_index, plan.k_chunk)
        if chunk_scale is not None:
            k_j = k_j * tf.cast(chunk_scale, dtype)
        v_j = chunk(v, k_index, plan.k_chunk)
        if fold:
            v_j = with_ones_column(v_j)
        k_column = with_ones_column(k_j) if via_exp else None

        def query_step(q_index, d_query, d_key_t, d_value_t, *d_bias):
            dq, dk_t, dv_t, *block_d_bias = block_gradients(q_index, k_index, k_j, k_column,
                                                            v_j)
            d_query = d_query.write(q_index, d_query.read(q_index) + dq)
            if shared_rows:  # d_bias is this key chunk's running sum
                d_bias = tuple(total + d_b for total, d_b in zip(d_bias, block_d_bias))
            else:  # d_bias holds every block
                d_bias = tuple(blocks.write(q_index * plan.num_k + k_index, d_b)
                               for blocks, d_b in zip(d_bias, block_d_bias))
            return (q_index + 1, d_query, d_key_t + dk_t, d_value_t + dv_t) + d_bias

        d_bias = tuple(tf.zeros_like(blocks.read(k_index)) for blocks in d_bias_blocks) \
            if shared_rows else d_bias_blocks
        init = (plan.first_query_chunk(k_index), d_query,
                transposed_zeros(k_j, acc_dtype), transposed_zeros(v_j, acc_dtype)) + d_bias
        _, d_query, d_key_t, d_value_t, *d_bias = tf.while_loop(
            lambda q_index, *_: q_index < plan.num_q, query_step, init, parallel_iterations=1)
        if shared_rows:
            d_bias_blocks = tuple(blocks.write(k_index, total)
                                  for blocks, total in zip(d_bias_blocks, d_bias))
        else:
            d_bias_blocks = d_bias
        if chunk_scale is not None:
            d_key_t = d_key_t * chunk_scale
        if fold:
            d_value_t = d_value_t[..., :-1, :]
        d_key = tf.linalg.matrix_transpose(d_key_t)
        d_value = tf.linalg.matrix_transpose(d_value_t)
        return (k_index + 1, d_query, d_keys.write(k_index, tf.cast(d_key, dtype)),
                d_values.write(k_index, tf.cast(d_value, dtype))) + tuple(d_bias_blocks)

    # Query chunks (and blocks) that no key chunk reaches (causal) keep a zero gradient.
    d_query = chunk_array(plan.num_q, acc_dtype,
                          fill=tf.zeros_like(chunk(q, 0, plan.q_chunk), acc_dtype))
    # A bias whose query axis broadcasts ((B, 1, 1, S) say) keeps one gradient block per
    # key chunk, summed over the query chunks in the loop, not num_q * num_k of them.
    shared_rows = plan.bias is not None and plan.bias.shape[-2] == 1
    bias_row_blocks = 1 if shared_rows else plan.num_q
    d_bias_blocks = () if plan.bias is None else (chunk_array(
        bias_row_blocks * plan.num_k, acc_dtype,
        fill=tf.zeros_like(plan.bias_block(0, 0), acc_dtype)),)
    init = (0, d_query, chunk_array(plan.num_k, dtype), chunk_array(plan.num_k, dtype)) + \
        d_bias_blocks
    _, d_query, d_keys, d_values, *d_bias_blocks = tf.while_loop(
        lambda k_index, *_: k_index < plan.num_k, key_step, init, parallel_iterations=1)
    grads = (tf.cast(sequence(d_query, plan.num_q, plan.t), dtype),
             sequence(d_keys, plan.num_k, plan.s), sequence(d_values, plan.num_k, plan.s))
    return grads + tuple(_bias_gradient(plan, blocks, bias_row_blocks)
                         for blocks in d_bias_blocks)


def _bias_gradient(plan, blocks, row_blocks):
    """The bias's gradient from its (row_blocks * num_k) block gradients: the blocks laid
    out as the (query chunk, key chunk) grid, cut to (T, S), summed over the bias's
    broadcast axes. `row_blocks` is num_q, or 1 when the blocks of a key chunk were summed
    over the query chunks already."""
    stacked = blocks.stack()  # (row_blocks * nk, ..., rows, cols)
    rank = stacked.shape.rank
    shape = tf.shape(stacked)
    grid = tf.reshape(stacked, tf.concat([[row_blocks, plan.num_k], shape[1:]], 0))
    lead = list(range(2, rank - 1))
    grid = tf.transpose(grid, lead + [0, rank - 1, 1, rank])  # (..., nq, rows, nk, cols)
    shape = tf.shape(grid)
    grid = tf.reshape(grid, tf.concat([shape[:-4], [shape[-4] * shape[-3],
                                                    shape[-2] * shape[-1]]], 0))
    grid = grid[..., :plan.t, :plan.s]
    return reduce_to_shape_of(grid, plan.bias)


# ------------------------------------------------------------------ the op
def _split_scale(query, scale):
    """(query, chunk_scale): a constant scale is applied to each chunk inside the loops (no
    scaled copy of the whole query, and none of its gradient), a tensor one to the query
    here, so that it gets a gradient."""
    scale = resolve_scale(scale, query)
    if isinstance(scale, (int, float)):
        return query, (None if scale == 1.0 else float(scale))
    return query * tf.cast(scale, query.dtype), None


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def chunked_attention(query, key, value, mask=None, causal=False, scale=None,
                      query_chunk_size=512, key_chunk_size=512, causal_offset=None,
                      normalization="softmax", bias=None):
    """Exact softmax(q k^T * scale + bias, masked) v in O(L * chunk) memory, forward and
    backward.

    (Plus one scalar per query and key chunk, kept for the backward pass: B * H * T * S /
    key_chunk_size floats; one per query with the exp normalization.)

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
        normalization: "softmax" (each block's `tf.nn.softmax`, merged by mass) or "exp"
            (exp and row sums, see the module docstring; half precision keeps "softmax").
        bias: optional floating tensor added to the scaled scores, broadcastable to
            (..., T, S) (`score_bias`). Sliced per block like the mask: a (B, 1, 1, S) or
            (1, H, T, S) bias is never expanded. It gets a gradient.

    Returns:
        (..., T, dv) with the dtype of `query`. Query rows with no visible key are zero.
        Half-precision inputs keep their running sums in float32, and float16 score blocks
        are multiplied in float32 (no overflow beyond 65504).

    Example:
        >>> q = tf.random.normal([2, 4, 100, 8])
        >>> chunked_attention(q, q, q, causal=True, query_chunk_size=32,
        ...                   key_chunk_size=16).shape
        TensorShape([2, 4, 100, 8])
    """
    query, key, value, mask, bias = blockwise_inputs(
        "chunked_attention", query, key, value, mask, bias, bias_in_softmax_dtype=True)
    check_bool_arg("chunked_attention", "causal", causal)
    if causal_offset is not None:
        causal_offset = check_int_arg("chunked_attention", "causal_offset", causal_offset)
    checked = checked_numerics("chunked_attention", query=query, key=key, value=value,
                               bias=bias)
    query, key, value, bias = (checked[n] for n in ("query", "key", "value", "bias"))
    plan = ChunkPlan(query, key, mask, causal, causal_offset,
                     check_positive_int("query_chunk_size", query_chunk_size),
                     check_positive_int("key_chunk_size", key_chunk_size), bias)
    acc_dtype = softmax_dtype(query.dtype)
    normalization = check_choice("normalization", normalization, NORMALIZATIONS)
    via_exp = normalization == "exp" and query.dtype == acc_dtype
    query, chunk_scale = _split_scale(query, scale)
    forward = _forward_exp if via_exp else _forward

    @tf.custom_gradient
    def attend(q, k, v, *with_bias):
        # The tape must not record the forward loops (eagerly, it would keep every block).
        q, k, v = (tf.stop_gradient(x) for x in (q, k, v))
        out, saved = forward(plan, q, k, v, chunk_scale, acc_dtype)

        def grad(d_out):
            grads = _backward(plan, q, k, v, out, saved, d_out, chunk_scale, via_exp,
                              acc_dtype)
            for gradient, x in zip(grads, (q, k, v) + with_bias):
                gradient.set_shape(x.shape)
            return _first_order_only(*grads)

        return out, grad

    # The plan reads the bias block by block; passing it in too gives it its gradient.
    out = attend(query, key, value, *([] if bias is None else [bias]))
    out.set_shape(query.shape[:-1].concatenate(value.shape[-1:]))
    return out
