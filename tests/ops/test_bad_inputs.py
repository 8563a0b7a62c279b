"""Bad inputs to every public op: refused with an error naming the argument, never a silent
wrong result, a NaN or a raw TensorFlow error. Plus the value fixes (a window beyond the
sequence, float16 scores beyond 65504, 0/1 masks) against a float64 NumPy reference."""
import math
import re
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.ops import (
    attention_kernel,
    band_mask,
    causal_mask,
    chunked_attention,
    combine_masks,
    full_attention,
    local_attention,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
)
from attnlab.ops.checks import CHECK_NUMERICS_ENV
from attnlab.ops.masks import align_mask
from attnlab.ops.score_bias import align_bias

NAN, INF = float("nan"), float("inf")
B, H, L, D = 1, 2, 6, 4


def _qkv(length=L, dtype=tf.float32, seed=0):
    rng = np.random.RandomState(seed)
    return [tf.constant(rng.randn(B, H, length, D), dtype) for _ in range(3)]


Q, K, V = _qkv()


def reference(q, k, v, keep=None, scale=None):
    """float64 NumPy softmax(q k^T * scale, masked) v; rows with nothing visible give 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.einsum("...td,...sd->...ts", q, k) * scale
    if keep is not None:
        keep = np.broadcast_to(keep, scores.shape)
        scores = np.where(keep, scores, -np.inf)
    top = np.max(scores, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(scores - top)
    total = e.sum(-1, keepdims=True)
    weights = np.where(total > 0, e / np.where(total > 0, total, 1), 0)
    return weights @ v


# ------------------------------------------------------------------ additive masks
# Every place a mask enters the ops, called with the mask `m` (broadcastable to (B, H, L, L)).
MASK_ENTRIES = {
    "scaled_dot_product_attention": lambda m: scaled_dot_product_attention(Q, K, V, mask=m),
    "full_attention": lambda m: full_attention(Q, K, V, mask=m),
    "chunked_attention": lambda m: chunked_attention(Q, K, V, mask=m, query_chunk_size=4,
                                                     key_chunk_size=4),
    "local_attention": lambda m: local_attention(Q, K, V, window=2, mask=m),
    "kernel full": lambda m: attention_kernel("full")(Q, K, V, mask=m),
    "kernel full_exp": lambda m: attention_kernel("full_exp")(Q, K, V, mask=m),
    "kernel chunked": lambda m: attention_kernel("chunked", chunk_size=4)(Q, K, V, mask=m),
    "kernel chunked_exp": lambda m: attention_kernel("chunked_exp")(Q, K, V, mask=m),
    "kernel local": lambda m: attention_kernel("local", window=2)(Q, K, V, mask=m),
    "masked_softmax": lambda m: masked_softmax(tf.zeros([B, H, L, L]), m),
    "combine_masks": lambda m: combine_masks(causal_mask(L), m),
    "align_mask": lambda m: align_mask(m, tf.TensorShape([B, H, L, L])),
}


def _additive(hidden_value, dtype=np.float32):
    """A (B, 1, L) key mask in the additive convention: 0 = keep, `hidden_value` = hide."""
    m = np.zeros([B, 1, L], dtype)
    m[..., -2:] = hidden_value
    return m


BAD_MASKS = {
    "additive -1e9": _additive(-1e9),
    "additive -inf": _additive(-np.inf),
    "float 0.5": _additive(0.5),
    "int 2": _additive(2, np.int32),
    "nan": _additive(np.nan),
}


@pytest.mark.parametrize("mask_name", sorted(BAD_MASKS))
@pytest.mark.parametrize("entry", sorted(MASK_ENTRIES))
def test_masks_other_than_bool_or_0_1_are_refused_pointing_to_bias(entry, mask_name):
    # Silent wrong result before: nonzero read as "may attend", i.e. an inverted mask.
    with pytest.raises(ValueError, match=r"masks are boolean \(True = may attend\).*bias="):
        MASK_ENTRIES[entry](BAD_MASKS[mask_name])


@pytest.mark.parametrize("entry", ["scaled_dot_product_attention", "chunked_attention",
                                   "local_attention", "kernel full_exp", "masked_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float16])
def test_0_1_masks_of_any_number_dtype_equal_the_bool_mask(entry, dtype):
    keep = np.random.RandomState(1).rand(B, L, L) > 0.3
    expected = MASK_ENTRIES[entry](keep)
    np.testing.assert_allclose(MASK_ENTRIES[entry](keep.astype(dtype)), expected, atol=1e-6)


def test_additive_mask_known_only_at_run_time_fails_when_the_graph_runs():
    attend = tf.function(lambda m: scaled_dot_product_attention(Q, K, V, mask=m),
                         input_signature=[tf.TensorSpec([B, 1, L], tf.float32)])
    np.testing.assert_allclose(attend(np.ones([B, 1, L], np.float32)),
                               scaled_dot_product_attention(Q, K, V), atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="other than 0 and 1.*bias="):
        attend(_additive(-1e9))


def _op_types(fn, *specs):
    return [op.type for op in tf.function(fn).get_concrete_function(*specs).graph
            .get_operations()]


@pytest.mark.parametrize("op", [
    lambda m: scaled_dot_product_attention(Q, K, V, mask=m),
    lambda m: chunked_attention(Q, K, V, mask=m, query_chunk_size=4, key_chunk_size=4),
    lambda m: local_attention(Q, K, V, window=2, mask=m),
], ids=["reference", "chunked", "local"])
def test_bool_masks_add_no_op_and_run_time_checks_are_one_assert_outside_loops(op):
    bool_ops = _op_types(op, tf.TensorSpec([B, 1, L], tf.bool))
    float_ops = _op_types(op, tf.TensorSpec([B, 1, L], tf.float32))
    assert "Assert" not in bool_ops
    # The float mask's check is one Assert at the boundary (loops are separate functions,
    # so an Assert inside one would not be in the outer graph at all; none is there twice).
    assert float_ops.count("Assert") == 1
    # Constants, two Equal, LogicalOr, All, the Assert and NotEqual: a handful.
    assert 0 < len(float_ops) - len(bool_ops) <= 15


# ------------------------------------------------------------------ argument errors
# (id, call, exception, match). Before these fixes each was a silent wrong result, a NaN,
# or a raw TensorFlow error (InvalidArgumentError, a conversion error) that named nothing.
ARGUMENT_CASES = [
    # mask builders
    ("band window -1", lambda: band_mask(4, window=-1), ValueError, "window"),
    ("band window 1.5", lambda: band_mask(4, window=1.5), ValueError, "window"),
    ("band window nan", lambda: band_mask(4, window=NAN), ValueError, "window"),
    ("band window inf", lambda: band_mask(4, window=INF), ValueError, "window"),
    ("band window bool", lambda: band_mask(4, window=True), ValueError, "window"),
    ("band window str", lambda: band_mask(4, window="2"), TypeError, "window"),
    ("band window float tensor", lambda: band_mask(4, window=tf.constant(1.0)), TypeError,
     "window"),
    ("band query_length -1", lambda: band_mask(-1), ValueError, "query_length"),
    ("band query_length nan", lambda: band_mask(NAN), ValueError, "query_length"),
    ("band query_length bool", lambda: band_mask(True), ValueError, "query_length"),
    ("band key_length -3", lambda: band_mask(4, -3), ValueError, "key_length"),
    ("band key_length 2.0", lambda: band_mask(4, 2.0), ValueError, "key_length"),
    ("band key_length tensor -1", lambda: band_mask(4, tf.constant(-1)), ValueError,
     "key_length"),
    ("band offset nan", lambda: band_mask(4, offset=NAN), ValueError, "offset"),
    ("band offset 0.5", lambda: band_mask(4, offset=0.5), ValueError, "offset"),
    ("band offset 2**40", lambda: band_mask(4, offset=2 ** 40), ValueError, "offset"),
    ("band causal str", lambda: band_mask(4, causal="yes"), TypeError, "causal"),
    ("causal query_length -1", lambda: causal_mask(-1), ValueError, "query_length"),
    ("causal query_length nan", lambda: causal_mask(NAN), ValueError, "query_length"),
    ("causal query_length 2.5", lambda: causal_mask(2.5), ValueError, "query_length"),
    ("causal key_length -1", lambda: causal_mask(3, -1), ValueError, "key_length"),
    ("causal key_length bool", lambda: causal_mask(3, False), ValueError, "key_length"),
    ("causal offset nan", lambda: causal_mask(3, offset=NAN), ValueError, "offset"),
    ("causal offset inf", lambda: causal_mask(3, offset=INF), ValueError, "offset"),
    ("causal offset float tensor", lambda: causal_mask(3, offset=tf.constant(1.0)),
     TypeError, "offset"),
    ("padding float ids", lambda: padding_mask([[1.0, 0.0]]), TypeError, "float32"),
    ("padding bool ids", lambda: padding_mask([[True, False]]), TypeError, "bool"),
    ("padding rank 1", lambda: padding_mask([1, 0]), ValueError, r"\(batch, length\)"),
    ("padding pad_id 0.5", lambda: padding_mask([[1, 0]], pad_id=0.5), ValueError, "pad_id"),
    ("padding pad_id nan", lambda: padding_mask([[1, 0]], pad_id=NAN), ValueError, "pad_id"),
    ("padding pad_id str", lambda: padding_mask([[1, 0]], pad_id="0"), TypeError, "pad_id"),
    ("combine no broadcast", lambda: combine_masks(np.ones([2, 3], bool),
                                                   np.ones([4, 5], bool)),
     ValueError, r"\(2, 3\).*\(4, 5\)"),
    ("combine string mask", lambda: combine_masks(tf.constant([["a"]])), TypeError,
     "string"),
    # scaled_dot_product_attention
    ("sdpa scale nan", lambda: scaled_dot_product_attention(Q, K, V, scale=NAN), ValueError,
     "scale"),
    ("sdpa scale inf", lambda: scaled_dot_product_attention(Q, K, V, scale=INF), ValueError,
     "scale"),
    ("sdpa scale -inf", lambda: scaled_dot_product_attention(Q, K, V, scale=-INF),
     ValueError, "scale"),
    ("sdpa scale nan tensor", lambda: scaled_dot_product_attention(
        Q, K, V, scale=tf.constant(NAN)), ValueError, "scale"),
    ("sdpa scale str", lambda: scaled_dot_product_attention(Q, K, V, scale="1"), TypeError,
     "scale"),
    ("sdpa dropout nan", lambda: scaled_dot_product_attention(Q, K, V, dropout_rate=NAN),
     ValueError, "dropout_rate"),
    ("sdpa dropout 1", lambda: scaled_dot_product_attention(Q, K, V, dropout_rate=1.0),
     ValueError, "dropout_rate"),
    ("sdpa causal str", lambda: scaled_dot_product_attention(Q, K, V, causal="no"),
     TypeError, "causal"),
    ("sdpa int query", lambda: scaled_dot_product_attention(tf.zeros([2, 3], tf.int32), K, V),
     TypeError, "query"),
    ("sdpa depth mismatch", lambda: scaled_dot_product_attention(Q, K[..., :3], V),
     ValueError, "depth"),
    ("sdpa empty query", lambda: scaled_dot_product_attention(Q[..., :0, :], K, V),
     ValueError, "empty"),
    ("sdpa rank 1", lambda: scaled_dot_product_attention(Q[0, 0, 0], K, V), ValueError,
     "rank"),
    ("sdpa mask no broadcast", lambda: scaled_dot_product_attention(
        Q, K, V, mask=np.ones([3, 5], bool)), ValueError, r"\(3, 5\)"),
    ("sdpa int bias", lambda: scaled_dot_product_attention(Q, K, V, bias=np.zeros([L, L],
                                                                                 np.int32)),
     TypeError, "bias"),
    ("sdpa bias no broadcast", lambda: scaled_dot_product_attention(
        Q, K, V, bias=np.zeros([3, 5], np.float32)), ValueError, "bias"),
    # full_attention
    ("full scale nan", lambda: full_attention(Q, K, V, scale=NAN), ValueError, "scale"),
    ("full normalization", lambda: full_attention(Q, K, V, normalization="fast"),
     ValueError, "normalization"),
    ("full causal_offset 0.5", lambda: full_attention(Q, K, V, causal=True,
                                                       causal_offset=0.5),
     ValueError, "causal_offset"),
    ("full causal_offset nan", lambda: full_attention(Q, K, V, causal=True,
                                                       causal_offset=NAN),
     ValueError, "causal_offset"),
    # chunked_attention
    ("chunked query_chunk_size 0", lambda: chunked_attention(Q, K, V, query_chunk_size=0),
     ValueError, "query_chunk_size"),
    ("chunked query_chunk_size nan", lambda: chunked_attention(Q, K, V,
                                                                 query_chunk_size=NAN),
     ValueError, "query_chunk_size"),
    ("chunked query_chunk_size 1.5", lambda: chunked_attention(Q, K, V,
                                                                 query_chunk_size=1.5),
     ValueError, "query_chunk_size"),
    ("chunked key_chunk_size -1", lambda: chunked_attention(Q, K, V, key_chunk_size=-1),
     ValueError, "key_chunk_size"),
    ("chunked key_chunk_size inf", lambda: chunked_attention(Q, K, V, key_chunk_size=INF),
     ValueError, "key_chunk_size"),
    ("chunked key_chunk_size bool", lambda: chunked_attention(Q, K, V, key_chunk_size=True),
     ValueError, "key_chunk_size"),
    ("chunked scale nan", lambda: chunked_attention(Q, K, V, scale=NAN), ValueError, "scale"),
    ("chunked scale inf", lambda: chunked_attention(Q, K, V, scale=INF), ValueError, "scale"),
    ("chunked causal_offset nan", lambda: chunked_attention(Q, K, V, causal=True,
                                                             causal_offset=NAN),
     ValueError, "causal_offset"),
    ("chunked causal str", lambda: chunked_attention(Q, K, V, causal="yes"), TypeError,
     "causal"),
    ("chunked normalization", lambda: chunked_attention(Q, K, V, normalization="log"),
     ValueError, "normalization"),
    ("chunked mask no broadcast", lambda: chunked_attention(
        Q, K, V, mask=np.ones([3, 5], bool)), ValueError, r"\(3, 5\)"),
    ("chunked empty key", lambda: chunked_attention(Q, K[..., :0, :], V[..., :0, :]),
     ValueError, "empty"),
    # local_attention
    ("local window 0", lambda: local_attention(Q, K, V, window=0), ValueError, "window"),
    ("local window -1", lambda: local_attention(Q, K, V, window=-1), ValueError, "window"),
    ("local window nan", lambda: local_attention(Q, K, V, window=NAN), ValueError, "window"),
    ("local window inf", lambda: local_attention(Q, K, V, window=INF), ValueError, "window"),
    ("local window 2.5", lambda: local_attention(Q, K, V, window=2.5), ValueError, "window"),
    ("local window None", lambda: local_attention(Q, K, V, window=None), ValueError,
     "window"),
    ("local scale nan", lambda: local_attention(Q, K, V, window=2, scale=NAN), ValueError,
     "scale"),
    ("local causal str", lambda: local_attention(Q, K, V, window=2, causal="1"), TypeError,
     "causal"),
    ("local lengths differ", lambda: local_attention(Q, K[..., :4, :], V[..., :4, :],
                                                     window=2),
     ValueError, "length"),
    ("local mask no broadcast", lambda: local_attention(Q, K, V, window=2,
                                                        mask=np.ones([3, 5], bool)),
     ValueError, r"\(3, 5\)"),
    # kernels by name
    ("kernel unknown", lambda: attention_kernel("flash"), ValueError, "attention_impl"),
    ("kernel local no window", lambda: attention_kernel("local"), ValueError, "window"),
    ("kernel local window nan", lambda: attention_kernel("local", window=NAN), ValueError,
     "window"),
    ("kernel chunk_size 0", lambda: attention_kernel("chunked", chunk_size=0), ValueError,
     "chunk_size"),
    ("kernel chunk_size nan", lambda: attention_kernel("chunked", chunk_size=NAN),
     ValueError, "chunk_size"),
    ("kernel local offset 2", lambda: attention_kernel("local", window=2)(
        Q, K, V, causal=True, offset=2), ValueError, "offset"),
    ("kernel full offset nan", lambda: attention_kernel("full")(Q, K, V, causal=True,
                                                                offset=NAN),
     ValueError, "causal_offset"),
    ("kernel chunked offset 0.5", lambda: attention_kernel("chunked")(Q, K, V, causal=True,
                                                                      offset=0.5),
     ValueError, "causal_offset"),
    # masked_softmax
    ("softmax int scores", lambda: masked_softmax(tf.zeros([2, 3], tf.int32)), TypeError,
     "int32"),
    ("softmax bool scores", lambda: masked_softmax(tf.zeros([2, 3], tf.bool)), TypeError,
     "bool"),
    ("softmax mask no broadcast", lambda: masked_softmax(tf.zeros([2, 3]),
                                                         np.ones([4, 5], bool)),
     ValueError, r"\(4, 5\).*\(2, 3\)"),
    ("softmax string mask", lambda: masked_softmax(tf.zeros([2, 3]), tf.constant([["a"]])),
     TypeError, "string"),
    # score bias helpers
    ("align_bias int", lambda: align_bias(np.zeros([L, L], np.int32),
                                          tf.TensorShape([B, H, L, L]), tf.float32),
     TypeError, "bias"),
    ("align_bias bool", lambda: align_bias(np.ones([L, L], bool),
                                           tf.TensorShape([B, H, L, L]), tf.float32),
     TypeError, "mask"),
    ("align_bias no broadcast", lambda: align_bias(np.zeros([3, 5], np.float32),
                                                   tf.TensorShape([B, H, L, L]), tf.float32),
     ValueError, r"bias of shape \(3, 5\)"),
    ("align_mask rank 5", lambda: align_mask(np.ones([1, 1, 1, L, L], bool),
                                             tf.TensorShape([B, H, L, L])),
     ValueError, "attention mask"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in ARGUMENT_CASES],
                         ids=[c[0] for c in ARGUMENT_CASES])
def test_bad_arguments_raise_errors_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------ local window
@pytest.mark.parametrize("window", [L, L + 1, 2 ** 31 - 1, 2 ** 31, 2 ** 40, sys.maxsize])
@pytest.mark.parametrize("causal", [False, True])
def test_local_window_beyond_the_sequence_is_full_attention(window, causal):
    # Silent wrong result before: sys.maxsize wrapped around when cast to int32.
    keep = np.tril(np.ones([L, L], bool)) if causal else None
    out = local_attention(Q, K, V, window=window, causal=causal)
    np.testing.assert_allclose(out, reference(Q, K, V, keep), atol=1e-5)
    np.testing.assert_allclose(out, scaled_dot_product_attention(Q, K, V, causal=causal),
                               atol=1e-5)


def test_local_window_beyond_an_unknown_length_is_full_attention():
    attend = tf.function(lambda q: local_attention(q, q, q, window=sys.maxsize),
                         input_signature=[tf.TensorSpec([B, H, None, D], tf.float32)])
    np.testing.assert_allclose(attend(Q), reference(Q, Q, Q), atol=1e-5)


@pytest.mark.parametrize("window", [sys.maxsize, 2 ** 31])
def test_band_mask_with_a_window_beyond_the_sequence_keeps_everything(window):
    assert band_mask(5, 7, window=window).numpy().all()
    np.testing.assert_array_equal(band_mask(5, window=window, causal=True),
                                  np.tril(np.ones([5, 5], bool)))


# ------------------------------------------------------------------ float16 overflow
def _overflowing_float16(seed=3):
    """float16 q, k with |q . k| / sqrt(d) around 1e5 (beyond float16's 65504)."""
    rng = np.random.RandomState(seed)
    q = rng.uniform(230, 250, [B, H, L, D])
    k = rng.uniform(230, 250, [B, H, L, D]) * rng.choice([-1, 1], [B, H, L, 1])
    v = rng.randn(B, H, L, D)
    return [x.astype(np.float16) for x in (q, k, v)]


FLOAT16_OPS = {
    "scaled_dot_product_attention": lambda q, k, v, c: scaled_dot_product_attention(
        q, k, v, causal=c),
    "full_attention": lambda q, k, v, c: full_attention(q, k, v, causal=c),
    "chunked_attention": lambda q, k, v, c: chunked_attention(
        q, k, v, causal=c, query_chunk_size=4, key_chunk_size=4),
    "local_attention": lambda q, k, v, c: local_attention(q, k, v, window=L, causal=c),
    "kernel full_exp": lambda q, k, v, c: attention_kernel("full_exp")(
        q * np.float16(0.5), k, v, causal=c),
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("op", sorted(FLOAT16_OPS))
def test_float16_scores_beyond_65504_stay_finite_and_match_float64(op, causal):
    # NaN before: the float16 q k^T overflowed to inf, and softmax(inf - inf) is NaN.
    q, k, v = _overflowing_float16()
    scores = np.einsum("...td,...sd->...ts", q.astype(np.float64), k.astype(np.float64))
    assert np.abs(scores).max() / math.sqrt(D) > 65504
    out = FLOAT16_OPS[op](q, k, v, causal).numpy()
    assert out.dtype == np.float16 and np.isfinite(out).all()
    scale = 0.5 / math.sqrt(D) if op == "kernel full_exp" else None  # pre-scaled queries
    keep = np.tril(np.ones([L, L], bool)) if causal else None
    np.testing.assert_allclose(out, reference(q, k, v, keep, scale), atol=2e-2, rtol=2e-2)


def test_float16_weights_are_float16_and_finite():
    q, k, v = _overflowing_float16()
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert weights.dtype == tf.float16 and out.dtype == tf.float16
    assert np.isfinite(weights.numpy()).all()


def test_float16_scores_gradient_is_finite():
    q, k, v = (tf.constant(x) for x in _overflowing_float16())
    with tf.GradientTape() as tape:
        tape.watch(v)
        out = scaled_dot_product_attention(q, k, v)
    assert np.isfinite(tape.gradient(out, v).numpy()).all()


# ------------------------------------------------------------------ checked mode
CHECKED_OPS = {
    "scaled_dot_product_attention": lambda q, b=None: scaled_dot_product_attention(
        q, K, V, bias=b),
    "chunked_attention": lambda q, b=None: chunked_attention(q, K, V, bias=b),
    "local_attention": lambda q, b=None: local_attention(q, K, V, window=L, bias=b),
    "full_attention": lambda q, b=None: full_attention(q, K, V, bias=b),
}
NAN_QUERY = tf.tensor_scatter_nd_update(Q, [[0, 0, 0, 0]], [NAN])


@pytest.mark.parametrize("op", sorted(CHECKED_OPS))
def test_nan_inputs_pass_through_by_default(op, monkeypatch):
    monkeypatch.delenv(CHECK_NUMERICS_ENV, raising=False)
    assert np.isnan(CHECKED_OPS[op](NAN_QUERY).numpy()).any()
    ops = _op_types(lambda q: CHECKED_OPS[op](q), tf.TensorSpec(Q.shape, tf.float32))
    assert "CheckNumerics" not in ops


@pytest.mark.parametrize("op", sorted(CHECKED_OPS))
def test_checked_mode_names_the_op_and_the_tensor(op, monkeypatch):
    monkeypatch.setenv(CHECK_NUMERICS_ENV, "1")
    with pytest.raises(tf.errors.InvalidArgumentError, match="%s: query" % op):
        CHECKED_OPS[op](NAN_QUERY)
    bias = np.zeros([L, L], np.float32)
    bias[0, 0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="%s: bias" % op):
        CHECKED_OPS[op](Q, bias)
    np.testing.assert_allclose(CHECKED_OPS[op](Q), reference(Q, K, V), atol=1e-5)


def test_checked_mode_in_masked_softmax(monkeypatch):
    monkeypatch.setenv(CHECK_NUMERICS_ENV, "1")
    with pytest.raises(tf.errors.InvalidArgumentError, match="masked_softmax: scores"):
        masked_softmax(tf.constant([[0.0, NAN]]))


# ------------------------------------------------------------------ shape spaces
@st.composite
def _non_broadcasting_shapes(draw):
    """(scores shape, mask shape) of equal rank where some mask axis is neither 1 nor the
    scores' size."""
    scores = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    mask = [draw(st.sampled_from([1, n])) for n in scores]
    axis = draw(st.integers(0, len(scores) - 1))
    mask[axis] = scores[axis] + draw(st.integers(1, 3))
    return tuple(scores), tuple(mask)


@settings(max_examples=25, deadline=None)
@given(_non_broadcasting_shapes())
def test_masked_softmax_names_both_shapes_for_any_mask_that_does_not_broadcast(shapes):
    # A raw TF broadcasting error (InvalidArgumentError from SelectV2) before.
    scores, mask = shapes
    with pytest.raises(ValueError, match=re.escape("mask of shape %s" % (mask,)) + ".*"
                       + re.escape("scores of shape %s" % (scores,))):
        masked_softmax(tf.zeros(scores), np.ones(mask, bool))


@settings(max_examples=25, deadline=None)
@given(st.floats(width=32, allow_nan=True, allow_infinity=True).filter(
    lambda x: x not in (0.0, 1.0)))
def test_any_mask_value_other_than_0_and_1_is_refused(value):
    mask = np.ones([B, 1, L], np.float32)
    mask[..., 0] = value
    with pytest.raises(ValueError, match="masks are boolean"):
        scaled_dot_product_attention(Q, K, V, mask=mask)
