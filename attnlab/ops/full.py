"""Full attention with a gradient of its own: the "full" and "full_exp" kernels.

Both compute softmax(q k^T * scale, masked) v, the output of
`scaled_dot_product_attention`, and keep only the weights and the output for the backward
pass. They differ in how they normalize the (T, S) weights:
- "softmax": `tf.nn.softmax`, fused on GPUs and in oneDNN builds of TensorFlow;
- "exp": one `tf.exp` of scores shifted by each query's score against key 0 and a row sum
  (`key0_shifted_exp`); faster where TensorFlow's CPU softmax is its generic kernel (TF 2.9).
Which one a layer uses by default is decided in one place, `kernels.default_attention_impl`.
"""
import tensorflow as tf

from attnlab.ops.checks import checked_numerics
from attnlab.ops.masked_softmax import masked_softmax, softmax_dtype
from attnlab.ops.scaled_dot_product import (
    resolve_mask,
    resolve_scale,
    scale_query,
    scaled_dot_product_attention,
)
from attnlab.ops.score_bias import align_bias, reduce_to_shape_of
from attnlab.validation import check_choice, check_query_key_value

NORMALIZATIONS = ("softmax", "exp")

# The exp path's row sums must lie in [1, EXP_ROW_SUM_LIMIT]: at least 1 when key 0 is
# visible (its own term is exp(0)), and far enough below the float32 maximum that the
# gradient's (T, dv)-sized terms divided by the sum stay normal floats.
EXP_ROW_SUM_LIMIT = 2.0 ** 100


# Explicit tf control flow only: see attnlab/ops/__init__.py on AutoGraph.
@tf.autograph.experimental.do_not_convert
def full_attention(query, key, value, mask=None, causal=False, scale=None, causal_offset=None,
                   normalization="softmax", bias=None):
    """softmax(q k^T * scale + bias, masked) v with a cheaper gradient than autodiff's.

    Args:
        query, key, value, mask, causal, scale: as in `scaled_dot_product_attention`.
        causal_offset: absolute position of the first query for `causal`; default S - T.
        normalization: "softmax" or "exp" (see the module docstring). "exp" normalizes
            through softmax all the same when a row's exp sum does not fit (key 0 hidden
            or far below another key).
        bias: optional floating tensor added to the scaled scores, broadcastable to
            (..., T, S) (`score_bias`); it gets a gradient.

    Returns:
        (..., T, dv), the values of `scaled_dot_product_attention`. Half-precision inputs
        take the reference (its float32 softmax) as they are.
    """
    query, key, value = check_query_key_value(query, key, value)
    check_choice("normalization", normalization, NORMALIZATIONS)
    checked = checked_numerics("full_attention", query=query, key=key, value=value, bias=bias)
    query, key, value, bias = (checked[n] for n in ("query", "key", "value", "bias"))
    query = scale_query(query, resolve_scale(scale, query))
    scores_shape = tf.TensorShape(None)
    if query.shape.rank is not None and key.shape.rank is not None:
        scores_shape = query.shape[:-1].concatenate(key.shape[-2:-1])
    mask = resolve_mask(mask, causal, scores_shape, tf.shape(query)[-2], tf.shape(key)[-2],
                        causal_offset)
    if softmax_dtype(query.dtype) != query.dtype or scores_shape.rank is None:
        return scaled_dot_product_attention(query, key, value, mask=mask, scale=1.0,
                                            bias=bias)
    if bias is not None:
        bias = align_bias(bias, scores_shape, query.dtype)
    return _attend(query, key, value, mask, bias, via_exp=normalization == "exp")


def _scores(q, k, bias):
    scores = tf.matmul(q, k, transpose_b=True)
    return scores if bias is None else scores + bias


def _attend(query, key, value, mask, bias, via_exp):
    """softmax(q k^T + bias, masked) v for scaled queries, with a gradient that keeps only the
    weights and the output (besides the inputs) and makes as few passes over (..., T, S)
    tensors as it can: one matmul writing dW, one product W * dW, three matmuls reading.

    The softmax gradient is dS = W * (dW - rowsum(dW * W)); with dW = dO v^T the row sum
    equals rowsum(dO * O) over the (..., T, dv) output, so the (..., T, S)-sized product
    and reduction of the generic gradient are replaced by one of the output's size, and
    the subtraction rides in the dO v^T matmul as an extra column: [dO, -r] [v, 1]^T.
    Valid for any mask: W is zero where the mask hides a key (and on rows without a
    visible key), and so is dS. `mask` is None or already broadcastable to the scores.

    With `via_exp` the weights are kept unnormalized, W = E / rowsum(E) (`_exp_weights`),
    and the 1 / rowsum factor is applied to the (..., T, dv) output and upstream gradient
    instead of the (..., T, S) weights: W^T dO = E^T (dO / sum) and
    dS = E * ([dO / sum, -r / sum] [v, 1]^T). The bias's gradient is dS, summed over the
    axes it was broadcast along.
    """
    @tf.custom_gradient
    def attend(q, k, v, *with_bias):
        b = with_bias[0] if with_bias else None
        if via_exp:
            weights, norm = _exp_weights(q, k, mask, b)
            output = tf.matmul(weights, v) * norm
        else:
            weights, norm = masked_softmax(_scores(q, k, b), mask), None
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
            grads = [_unbroadcast(d_query, q), _unbroadcast(d_key, k), _unbroadcast(d_value, v)]
            return grads + [reduce_to_shape_of(d_scores, b) for b in with_bias]

        return output, grad

    return attend(query, key, value, *([] if bias is None else [bias]))


def key0_shifted_exp(q, k, mask, bias=None):
    """exp(q k^T + bias - s0), zero where `mask` hides a key, with s0 (..., T, 1) each
    query's score against key 0 (its bias included); returns it, s0, its row sums and
    whether each row sum lies in [1, EXP_ROW_SUM_LIMIT] (bool, (..., T, 1)).

    Softmax is invariant to a per-row shift, and shifting by key 0's score instead of the
    row maximum needs no pass over the (T, S) scores: the shift rides in the q k^T matmul
    as an extra column, [q, -s0] [k, 1]^T, and exp then runs in place. With key 0 visible
    every row sums to at least exp(0) = 1. A row sum outside the range means key 0 is
    masked, the row has no visible key, some score is more than 69 above key 0's, or NaN:
    the caller then normalizes through the row maxima instead.
    """
    first = tf.matmul(q, k[..., :1, :], transpose_b=True)  # (..., T, 1)
    if bias is not None:
        first = first + bias[..., :1]
    rows = q
    if not (q.shape[:-2].is_fully_defined() and q.shape[:-2] == k.shape[:-2]):
        # Unknown batch dimensions may broadcast: the concat needs q at first's shape.
        rows = tf.broadcast_to(q, tf.concat([tf.shape(first)[:-1], tf.shape(q)[-1:]], 0))
    shifted = tf.matmul(tf.concat([rows, -first], axis=-1),
                        tf.concat([k, tf.ones_like(k[..., :1])], axis=-1), transpose_b=True)
    weights = tf.exp(shifted if bias is None else shifted + bias)
    if mask is not None:
        weights = tf.where(mask, weights, tf.zeros([], weights.dtype))
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    fits = (total >= 1.0) & (total <= EXP_ROW_SUM_LIMIT)
    return weights, first, total, fits


def _exp_weights(q, k, mask, bias=None):
    """E = exp(q k^T - s0) (`key0_shifted_exp`) and 1 / rowsum(E): the softmax weights are
    E * (1 / rowsum(E)). Where a row sum is out of range every row takes `masked_softmax`
    instead (a `tf.cond`), with a factor of 1."""
    weights, _, total, fits = key0_shifted_exp(q, k, mask, bias)
    # The fallback recomputes the scores rather than keep them: exp overwrites them.
    return tf.cond(tf.reduce_all(fits), lambda: (weights, 1.0 / total),
                   lambda: (masked_softmax(_scores(q, k, bias), mask),
                            tf.ones_like(total)))


def _unbroadcast(grad, x):
    """Sum `grad` over the batch axes that the matmuls broadcast `x` along (only possible
    when batch dimensions are unknown while tracing; otherwise `grad` as it is)."""
    if x.shape.is_fully_defined() and grad.shape == x.shape:
        return grad
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(grad)[:-2], s1=tf.shape(x)[:-2])
    return tf.reshape(tf.reduce_sum(grad, axes), tf.shape(x))
