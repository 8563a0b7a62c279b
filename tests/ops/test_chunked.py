"""chunked_attention against the float64 NumPy reference and the full scaled_dot_product op."""
import functools

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.ops import chunked
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from tests import reference


@pytest.fixture(scope="module")
def chunked_attention(normalization):
    """`chunked_attention` with each normalization ("softmax", then "exp"): every test that
    takes this fixture runs with both."""
    return functools.partial(chunked.chunked_attention, normalization=normalization)


def _inputs(lead, t, s, d=4, dv=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=lead + (t, d)).astype(dtype)
    k = rng.normal(size=lead + (s, d)).astype(dtype)
    v = rng.normal(size=lead + (s, dv)).astype(dtype)
    return q, k, v


def _reference_mask(mask, causal, t, s, offset=None):
    """The full float64-reference mask: user mask AND causal (aligned to the end)."""
    visible = np.ones((t, s), bool)
    if causal:
        visible &= reference.causal(t, s, s - t if offset is None else offset)
    if mask is not None:
        visible = np.asarray(mask, bool) & visible
    return visible


def _make_mask(kind, rng, lead, t, s):
    batch = lead[0]
    if kind == "none":
        return None
    if kind == "padding":  # (B, 1, S) for rank 3, (B, 1, 1, S) for rank 4
        lengths = rng.integers(0, s + 1, size=batch)
        keep = np.arange(s)[None, :] < lengths[:, None]
        return keep.reshape((batch,) + (1,) * (len(lead) - 1) + (1, s))
    if kind == "full":  # (B, T, S); gets a head axis for rank-4 inputs
        return rng.random((batch, t, s)) > 0.4
    raise AssertionError(kind)


def _reference_with_heads(mask, lead):
    """A (B, T, S) mask used with (B, H, T, d) inputs applies to every head."""
    if mask is not None and mask.ndim == 3 and len(lead) == 2:
        return mask[:, None]
    return mask


@settings(max_examples=25)
@given(rank=st.sampled_from([3, 4]), t=st.integers(1, 11), s=st.integers(1, 11),
       query_chunk=st.integers(1, 6), key_chunk=st.integers(1, 6), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "padding", "full"]), seed=st.integers(0, 99))
def test_matches_reference_and_full_attention(rank, t, s, query_chunk, key_chunk, causal,
                                               mask_kind, seed, chunked_attention):
    lead = (2,) if rank == 3 else (2, 2)
    q, k, v = _inputs(lead, t, s, seed=seed)
    mask = _make_mask(mask_kind, np.random.default_rng(seed), lead, t, s)
    out = chunked_attention(q, k, v, mask=mask, causal=causal, query_chunk_size=query_chunk,
                            key_chunk_size=key_chunk)
    assert out.shape == lead + (t, 3)
    expected, _ = reference.attention(
        q, k, v, _reference_mask(_reference_with_heads(mask, lead), causal, t, s))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
    full = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)
    np.testing.assert_allclose(out.numpy(), full.numpy(), atol=2e-5)


@pytest.mark.parametrize("offset", [0, 3, 6])
def test_causal_offset_for_cached_decoding(offset, chunked_attention):
    # Two new queries after `offset` cached keys (S = 8 in all, so the default would be 6).
    q, k, v = _inputs((1,), 2, 8, seed=offset)
    out = chunked_attention(q, k, v, causal=True, causal_offset=offset, query_chunk_size=1,
                            key_chunk_size=3)
    expected, _ = reference.attention(q, k, v, reference.causal(2, 8, offset))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


def _counted(function, calls):
    """`function`, appending to `calls` on each call."""
    def counting(*args):
        calls.append(1)
        return function(*args)

    return counting


def test_causal_skips_key_chunks_after_the_query_chunk(monkeypatch, chunked_attention):
    import attnlab.ops.chunked as chunked_module

    visited = []
    # The block function of either normalization (the exp one falls back to the softmax
    # one only for a query chunk whose row sums do not fit, which these scores never need).
    for name in ("_block_attention", "_shifted_block"):
        monkeypatch.setattr(chunked_module, name,
                            _counted(getattr(chunked_module, name), visited))
    q, k, v = _inputs((1,), 8, 8, seed=1)
    out = chunked_attention(q, k, v, causal=True, query_chunk_size=4, key_chunk_size=2)
    # Query chunk 0 (queries 0-3) needs key chunks 0-1, query chunk 1 needs all 4.
    assert len(visited) == 2 + 4
    expected, _ = reference.attention(q, k, v, reference.causal(8, 8))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


def test_custom_scale_and_default_chunks_clipped_to_lengths(chunked_attention):
    q, k, v = _inputs((2,), 5, 7, seed=3)
    out = chunked_attention(q, k, v, scale=0.3)  # default chunks (1024) > lengths
    expected, _ = reference.attention(q, k, v, scale=0.3)
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "full"])
def test_gradients_match_full_attention(causal, mask_kind, chunked_attention):
    lead = (2, 2)
    q, k, v = (tf.constant(x) for x in _inputs(lead, 9, 11, seed=7))
    mask = _make_mask(mask_kind, np.random.default_rng(1), lead, 9, 11)
    upstream = tf.constant(np.random.default_rng(2).normal(size=lead + (9, 3)), tf.float32)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(fn() * upstream)
        return tape.gradient(loss, [q, k, v])

    chunked = grads(lambda: chunked_attention(q, k, v, mask=mask, causal=causal,
                                              query_chunk_size=4, key_chunk_size=3))
    full = grads(lambda: scaled_dot_product_attention(q, k, v, mask=mask, causal=causal))
    for name, got, want in zip("qkv", chunked, full):
        assert got is not None, name
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, err_msg=name)


def _gradients(fn, tensors, upstream):
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        loss = tf.reduce_sum(tf.cast(fn(), tf.float32) * upstream)
    return tape.gradient(loss, tensors)


@settings(max_examples=20, deadline=None)
@given(t=st.integers(1, 9), s=st.integers(1, 9), query_chunk=st.integers(1, 5),
       key_chunk=st.integers(1, 5), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "padding", "full"]), seed=st.integers(0, 99))
def test_gradients_match_float64_reference(t, s, query_chunk, key_chunk, causal, mask_kind,
                                           seed, chunked_attention):
    lead = (2,)
    rng = np.random.default_rng(seed)
    q, k, v = (tf.constant(x, tf.float64) for x in _inputs(lead, t, s, seed=seed))
    mask = _make_mask(mask_kind, rng, lead, t, s)
    upstream = tf.constant(rng.normal(size=lead + (t, 3)), tf.float32)
    chunked = _gradients(lambda: chunked_attention(
        q, k, v, mask=mask, causal=causal, query_chunk_size=query_chunk,
        key_chunk_size=key_chunk), [q, k, v], upstream)
    # Reference: autodiff of the float64 full op (no chunking, no hand-written gradient).
    full = _gradients(lambda: scaled_dot_product_attention(q, k, v, mask=mask, causal=causal),
                      [q, k, v], upstream)
    for name, got, want in zip("qkv", chunked, full):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-10, err_msg=name)


def _logsumexp(scores):
    scores = np.asarray(scores, np.float64)
    top = scores.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("first_key_offset", [0.0, -200.0, -2000.0])
def test_block_log_sum_exp_from_one_column_or_from_the_maxima(dtype, first_key_offset):
    from attnlab.ops.chunked import _block_lse

    scores = np.random.default_rng(5).normal(scale=3.0, size=(2, 3, 6, 7))
    # Rows 0-2 of every block get a first score far below the rest: its weight underflows
    # (float32) or is far below epsilon (float64), so those blocks need the row maxima.
    scores[..., :3, 0] += first_key_offset
    scores = tf.constant(scores, dtype)
    lse = _block_lse(scores[..., :1], tf.nn.softmax(scores),
                     lambda: tf.reduce_max(scores, axis=-1, keepdims=True))
    assert lse.shape == (2, 3, 6, 1)
    tolerance = 1e-5 if dtype == tf.float32 else 1e-12
    np.testing.assert_allclose(lse.numpy(), _logsumexp(scores.numpy()), rtol=tolerance)


def test_first_key_far_below_the_rest_of_its_chunk(chunked_attention):
    # Every key chunk's first key scores about 120 below the others for every query: its
    # float32 weight exp(-120) underflows to 0, so the log-sum-exp of every block comes from
    # the row maxima. Output and gradients must not notice.
    rng = np.random.default_rng(11)
    q = rng.normal(size=(1, 2, 8, 4)) + np.array([3.0, 0, 0, 0])
    k = rng.normal(size=(1, 2, 9, 4))
    k[..., ::3, :] = np.array([-80.0, 0, 0, 0])
    v = rng.normal(size=(1, 2, 9, 3))
    q, k, v = (tf.constant(x, tf.float32) for x in (q, k, v))
    upstream = tf.constant(rng.normal(size=(1, 2, 8, 3)), tf.float32)
    out = chunked_attention(q, k, v, query_chunk_size=4, key_chunk_size=3)
    expected, _ = reference.attention(q, k, v)
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
    chunked = _gradients(lambda: chunked_attention(q, k, v, query_chunk_size=4,
                                                   key_chunk_size=3), [q, k, v], upstream)
    q64, k64, v64 = (tf.cast(x, tf.float64) for x in (q, k, v))
    full = _gradients(lambda: scaled_dot_product_attention(q64, k64, v64), [q64, k64, v64],
                      upstream)
    for name, got, want in zip("qkv", chunked, full):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, err_msg=name)


def test_exp_formulation_falls_back_only_for_query_chunks_whose_sums_do_not_fit(
        monkeypatch):
    # Eagerly, tf.cond runs only the branch it takes: the softmax blocks run for exactly
    # the query chunks that need them.
    import attnlab.ops.chunked as chunked_module

    chunked_attention = functools.partial(chunked.chunked_attention, normalization="exp")
    calls = []
    monkeypatch.setattr(chunked_module, "_block_attention",
                        _counted(chunked_module._block_attention, calls))
    q, k, v = _inputs((1, 2), 8, 9, seed=4)
    out = chunked_attention(q, k, v, query_chunk_size=4, key_chunk_size=3)
    assert calls == []
    np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v)[0], atol=2e-5)
    # Query 5 scores key 7 about 90 above key 0: its chunk (queries 4-7, three key chunks)
    # takes the softmax blocks, the first chunk does not.
    q[..., 5, :] = 0.0
    q[..., 5, 0] = 30.0
    k[..., 7, :] = 0.0
    k[..., 7, 0] = 6.0
    k[..., 0, 0] = 0.0
    out = chunked_attention(q, k, v, query_chunk_size=4, key_chunk_size=3)
    assert len(calls) == 3
    np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v)[0], atol=2e-5)


def test_backward_pass_also_skips_key_chunks_after_the_query_chunk(monkeypatch, chunked_attention):
    import attnlab.ops.chunked as chunked_module

    visited = []
    for name in ("_chunk_gradients", "_chunk_gradients_exp"):  # either normalization's
        monkeypatch.setattr(chunked_module, name,
                            _counted(getattr(chunked_module, name), visited))
    q, k, v = (tf.constant(x) for x in _inputs((1,), 8, 8, seed=1))
    upstream = tf.ones([1, 8, 3])
    got = _gradients(lambda: chunked_attention(q, k, v, causal=True, query_chunk_size=4,
                                               key_chunk_size=2), [q, k, v], upstream)
    # Key chunks 0 and 1 (keys 0-3) are seen by both query chunks, 2 and 3 only by the
    # second: 2 + 2 + 1 + 1 blocks, the same 6 the forward pass visits.
    assert len(visited) == 6
    want = _gradients(lambda: scaled_dot_product_attention(q, k, v, causal=True), [q, k, v],
                      upstream)
    for name, a, b in zip("qkv", got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=name)


def test_float16_gradients_are_finite_and_close_to_float32_full_attention(chunked_attention):
    q, k, v = _inputs((2, 2), 13, 11, d=8, seed=6, dtype=np.float16)
    mask = np.ones((2, 1, 1, 11), bool)
    mask[1, ..., 7:] = False
    upstream = tf.constant(np.random.default_rng(3).normal(size=(2, 2, 13, 3)), tf.float32)
    half = [tf.constant(x) for x in (q, k, v)]
    single = [tf.constant(x.astype(np.float32)) for x in (q, k, v)]
    got = _gradients(lambda: chunked_attention(*half, mask=mask, causal=True,
                                               query_chunk_size=5, key_chunk_size=4),
                     half, upstream)
    want = _gradients(lambda: scaled_dot_product_attention(*single, mask=mask, causal=True),
                      single, upstream)
    for name, a, b in zip("qkv", got, want):
        assert a.dtype == tf.float16, name
        assert np.all(np.isfinite(a.numpy())), name
        np.testing.assert_allclose(a.numpy().astype(np.float32), b.numpy(), atol=2e-2,
                                   err_msg=name)


@pytest.mark.parametrize("in_graph", [False, True])
def test_second_order_gradient_is_refused_with_a_clear_error(in_graph, chunked_attention):
    q, k, v = (tf.constant(x) for x in _inputs((1,), 4, 4, seed=2))

    def gradient_penalty():
        with tf.GradientTape() as outer:
            outer.watch(q)
            with tf.GradientTape() as inner:
                inner.watch(q)
                loss = tf.reduce_sum(chunked_attention(q, k, v, query_chunk_size=2,
                                                       key_chunk_size=2) ** 2)
            penalty = tf.reduce_sum(inner.gradient(loss, q) ** 2)
        return outer.gradient(penalty, q)

    with pytest.raises(NotImplementedError, match="first-order gradient only"):
        tf.function(gradient_penalty)() if in_graph else gradient_penalty()


def test_xla_compiled_forward_and_gradients_match_full_attention(chunked_attention):
    q, k, v = (tf.constant(x) for x in _inputs((2, 2), 10, 7, seed=8))
    mask = np.ones((2, 1, 1, 7), bool)
    mask[0, ..., 5:] = False

    def step(attend):
        def loss_and_grads(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = attend(q, k, v)
                loss = tf.reduce_sum(out * out)
            return [out] + tape.gradient(loss, [q, k, v])
        return loss_and_grads

    got = tf.function(step(lambda q, k, v: chunked_attention(
        q, k, v, mask=mask, causal=True, query_chunk_size=4, key_chunk_size=3)),
        jit_compile=True)(q, k, v)
    want = step(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=mask,
                                                             causal=True))(q, k, v)
    for name, a, b in zip(["out", "q", "k", "v"], got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=name)


def test_rank_two_inputs_without_lead_dims(chunked_attention):
    q, k, v = (tf.constant(x) for x in _inputs((), 7, 9, seed=4))
    upstream = tf.constant(np.random.default_rng(4).normal(size=(7, 3)), tf.float32)
    got = _gradients(lambda: chunked_attention(q, k, v, causal=True, query_chunk_size=3,
                                               key_chunk_size=4), [q, k, v], upstream)
    want = _gradients(lambda: scaled_dot_product_attention(q, k, v, causal=True), [q, k, v],
                      upstream)
    for name, a, b in zip("qkv", got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=name)


def test_scale_given_as_a_variable_gets_its_gradient(chunked_attention):
    q, k, v = (tf.constant(x) for x in _inputs((2,), 6, 5, seed=5))
    upstream = tf.constant(np.random.default_rng(5).normal(size=(2, 6, 3)), tf.float32)
    scale = tf.Variable(0.7)
    got = _gradients(lambda: chunked_attention(q, k, v, scale=scale, query_chunk_size=4,
                                               key_chunk_size=2), [q, scale], upstream)
    want = _gradients(lambda: scaled_dot_product_attention(q, k, v, scale=scale),
                      [q, scale], upstream)
    for name, a, b in zip(["q", "scale"], got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=name)


def test_unknown_lengths_in_tf_function(chunked_attention):
    signature = [tf.TensorSpec([None, None, None, 4], tf.float32)] * 2 + [
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, 1, 1, None], tf.bool)]

    @tf.function(input_signature=signature)
    def attend(q, k, v, mask):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = chunked_attention(q, k, v, mask=mask, causal=True, query_chunk_size=4,
                                    key_chunk_size=3)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, [q, k, v])

    for t, s in ((5, 5), (7, 10), (1, 4)):
        q, k, v = (tf.constant(x) for x in _inputs((2, 2), t, s, seed=t))
        mask = np.ones((2, 1, 1, s), bool)
        mask[1, ..., s - 2:] = False
        out, grads = attend(q, k, v, tf.constant(mask))
        expected, _ = reference.attention(q, k, v, _reference_mask(mask, True, t, s))
        np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            full = scaled_dot_product_attention(q, k, v, mask=mask, causal=True)
            loss = tf.reduce_sum(full * full)
        for got, want in zip(grads, tape.gradient(loss, [q, k, v])):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_fully_masked_rows_give_zero_output_and_finite_gradients(chunked_attention):
    q, k, v = (tf.constant(x) for x in _inputs((1,), 6, 7, seed=5))
    mask = np.ones((1, 6, 7), bool)
    mask[0, 2] = False  # query 2 sees nothing
    mask[0, 4, 3:] = False
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = chunked_attention(q, k, v, mask=mask, query_chunk_size=4, key_chunk_size=2)
        loss = tf.reduce_sum(out)
    np.testing.assert_array_equal(out.numpy()[0, 2], 0.0)
    expected, _ = reference.attention(q, k, v, mask)
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
    grads = tape.gradient(loss, [q, k, v])
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))
    np.testing.assert_array_equal(grads[0].numpy()[0, 2], 0.0)  # the output ignores query 2


def test_causal_with_more_queries_than_keys_zeroes_leading_rows(chunked_attention):
    # Offset S - T = -2: queries 0 and 1 precede every key.
    q, k, v = _inputs((1,), 5, 3, seed=9)
    out = chunked_attention(q, k, v, causal=True, query_chunk_size=2, key_chunk_size=2)
    np.testing.assert_array_equal(out.numpy()[0, :2], 0.0)
    expected, _ = reference.attention(q, k, v, reference.causal(5, 3, -2))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


def test_float16_is_finite_and_close_to_float64_reference(chunked_attention):
    q, k, v = _inputs((2, 2), 13, 13, d=8, seed=4, dtype=np.float16)
    q = q * np.float16(3.0)  # large scores: the running sums must not overflow in float16
    mask = np.ones((2, 1, 1, 13), bool)
    mask[0, ..., :] = False  # batch 0: every row fully masked
    out = chunked_attention(q, k, v, mask=mask, causal=True, query_chunk_size=5,
                            key_chunk_size=4)
    assert out.dtype == tf.float16
    assert np.all(np.isfinite(out.numpy()))
    expected, _ = reference.attention(q, k, v, _reference_mask(mask, True, 13, 13))
    np.testing.assert_allclose(out.numpy().astype(np.float64), expected, atol=2e-2)
    np.testing.assert_array_equal(out.numpy()[0], 0.0)


@pytest.mark.parametrize("argument", ["query_chunk_size", "key_chunk_size"])
@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "8"])
def test_bad_chunk_sizes_are_rejected(argument, bad, chunked_attention):
    q, k, v = _inputs((1,), 4, 4)
    with pytest.raises(ValueError, match="%s must be a positive integer, got %s"
                       % (argument, repr(bad).replace(".", r"\."))):
        chunked_attention(q, k, v, **{argument: bad})


def test_mismatched_depths_are_rejected(chunked_attention):
    q, _, v = _inputs((1,), 4, 4, d=4)
    k = np.zeros((1, 4, 5), np.float32)
    with pytest.raises(ValueError, match=r"same depth.*query \(1, 4, 4\), key \(1, 4, 5\)"):
        chunked_attention(q, k, v)


def test_integer_inputs_are_rejected(chunked_attention):
    q = np.zeros((1, 4, 4), np.int32)
    with pytest.raises(TypeError, match="query must be a floating-point tensor, got dtype int32"):
        chunked_attention(q, q, q)


def test_mask_that_does_not_broadcast_is_rejected(chunked_attention):
    q, k, v = _inputs((2,), 4, 6)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4, 5\).*scores of shape \(2, 4, 6\)"):
        chunked_attention(q, k, v, mask=np.ones((2, 4, 5), bool))


# --- memory: the gradient graph never materializes a (T, S) tensor --------------------------

_SUBGRAPH_ATTRIBUTES = ("_body_graph", "_cond_graph", "_true_graph", "_false_graph")


def _graph_tensors(graph, seen=None):
    """(op, output) for every op output in `graph` and in the while/cond bodies it calls."""
    seen = set() if seen is None else seen
    if id(graph) in seen:
        return
    seen.add(id(graph))
    for op in graph.get_operations():
        for output in op.outputs:
            yield op, output
        for attribute in _SUBGRAPH_ATTRIBUTES:
            subgraph = getattr(op, attribute, None)
            if subgraph is not None:
                yield from _graph_tensors(subgraph, seen)


def _gradient_graph_stats(attention, length, depth=4):
    spec = tf.TensorSpec([1, length, depth], tf.float32)
    mask_spec = tf.TensorSpec([1, 1, length], tf.bool)

    @tf.function(input_signature=[spec, spec, spec, mask_spec])
    def loss_and_grads(q, k, v, mask):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(attention(q, k, v, mask))
        return loss, tape.gradient(loss, [q, k, v])

    graph = loss_and_grads.get_concrete_function().graph  # traced only, never run
    outputs = loss_and_grads.get_concrete_function().structured_outputs
    assert all(g is not None and g.shape == (1, length, depth) for g in outputs[1])
    largest, matmul_sizes, unknown, graphs, stored = 0, [], [], set(), []
    for op, tensor in _graph_tensors(graph):
        graphs.add(op.graph.name)
        if op.type == "TensorListPushBack" and tensor is op.outputs[0]:
            # A loop body saving a tensor for its gradient: one copy per iteration.
            stored.append(op.inputs[1])
        size = tensor.shape.num_elements()
        if size is None:
            # Unused inputs of loop conditions carry no data; anything else must be sized.
            if tensor.dtype.is_floating and tensor.consumers():
                unknown.append(tensor.name)
            continue
        largest = max(largest, size)
        if op.type == "BatchMatMulV2":
            matmul_sizes.append(size)
    return largest, matmul_sizes, unknown, graphs, stored


def test_gradient_graph_has_no_length_squared_tensor(chunked_attention):
    length, chunk = 4096, 256

    def chunked(q, k, v, mask):
        return chunked_attention(q, k, v, mask=mask, causal=True, query_chunk_size=chunk,
                                 key_chunk_size=chunk)

    def full(q, k, v, mask):
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=True)

    largest, matmuls, unknown, graphs, stored = _gradient_graph_stats(chunked, length)
    assert unknown == []
    # The gradient is written by hand: no loop saves per-iteration tensors for a backward
    # pass (autodiff of the loops would, one chunk-sized tensor per block: (T, S) memory
    # split into pieces).
    assert [t.name for t in stored] == []
    # The walk reached the forward and the backward loop bodies: the (chunk x chunk) score
    # matmul appears in the forward, and the backward recomputes it and forms dO V^T.
    assert len(graphs) >= 5
    assert matmuls.count(chunk * chunk) >= 3
    # Nothing larger than a (chunk x chunk) block or an O(L x d) tensor exists anywhere.
    assert largest <= max(chunk * chunk, length * 4), largest

    largest_full, matmuls_full, unknown_full, _, _ = _gradient_graph_stats(full, length)
    assert unknown_full == []
    assert length * length in matmuls_full  # the same walk does see the full op's scores
    assert largest_full >= length * length
