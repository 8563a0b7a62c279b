"""local_attention against full attention with a band mask (float64 NumPy and the TF op)."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.ops.local import local_attention
from attnlab.ops.masks import band_mask, combine_masks
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from tests import reference


def _inputs(lead, length, d=4, dv=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=lead + (length, d)).astype(dtype)
    k = rng.normal(size=lead + (length, d)).astype(dtype)
    v = rng.normal(size=lead + (length, dv)).astype(dtype)
    return q, k, v


def _make_mask(kind, rng, lead, length):
    batch = lead[0]
    if kind == "none":
        return None
    if kind == "padding":  # (B, 1, L) or (B, 1, 1, L)
        lengths = rng.integers(0, length + 1, size=batch)
        keep = np.arange(length)[None, :] < lengths[:, None]
        return keep.reshape((batch,) + (1,) * (len(lead) - 1) + (1, length))
    if kind == "random_keys":  # (B, 1, L) keys hidden anywhere, not only at the end
        return (rng.random((batch, 1, length)) > 0.3).reshape(
            (batch,) + (1,) * (len(lead) - 1) + (1, length))
    if kind == "full":  # (B, L, L); gets a head axis for rank-4 inputs
        return rng.random((batch, length, length)) > 0.3
    raise AssertionError(kind)


def _reference_mask(mask, lead, length, window, causal):
    visible = reference.band(length, length, window, causal)
    if mask is None:
        return visible
    if mask.ndim == 3 and len(lead) == 2:
        mask = mask[:, None]
    return np.asarray(mask, bool) & visible


@settings(max_examples=25)
@given(rank=st.sampled_from([3, 4]), length=st.integers(1, 14), window=st.integers(1, 16),
       causal=st.booleans(), mask_kind=st.sampled_from(["none", "padding", "random_keys",
                                                        "full"]),
       seed=st.integers(0, 99))
def test_matches_full_attention_with_band_mask(rank, length, window, causal, mask_kind, seed):
    lead = (2,) if rank == 3 else (2, 2)
    q, k, v = _inputs(lead, length, seed=seed)
    mask = _make_mask(mask_kind, np.random.default_rng(seed), lead, length)
    out = local_attention(q, k, v, window, causal=causal, mask=mask)
    assert out.shape == lead + (length, 3)
    expected, _ = reference.attention(q, k, v, _reference_mask(mask, lead, length, window,
                                                               causal))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
    band = band_mask(length, length, window=window, causal=causal)
    full_mask = band if mask is None else combine_masks(
        mask if mask.ndim == rank else mask[:, None], band)
    full = scaled_dot_product_attention(q, k, v, mask=full_mask)
    np.testing.assert_allclose(out.numpy(), full.numpy(), atol=2e-5)


@pytest.mark.parametrize("length,window", [(9, 2), (8, 4), (5, 5), (4, 10), (1, 1)])
def test_window_edge_cases_match_reference(length, window):
    # Lengths divisible and not divisible by the window, window == L and window > L.
    for causal in (False, True):
        q, k, v = _inputs((2,), length, seed=length)
        out = local_attention(q, k, v, window, causal=causal, scale=0.7)
        expected, _ = reference.attention(q, k, v, reference.band(length, length, window,
                                                                  causal), scale=0.7)
        np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "full"])
def test_gradients_match_full_attention_with_band_mask(causal, mask_kind):
    lead, length, window = (2, 2), 11, 3
    q, k, v = (tf.constant(x) for x in _inputs(lead, length, seed=6))
    mask = _make_mask(mask_kind, np.random.default_rng(3), lead, length)
    band = band_mask(length, length, window=window, causal=causal)
    full_mask = band if mask is None else combine_masks(
        mask if mask.ndim == 4 else mask[:, None], band)
    upstream = tf.constant(np.random.default_rng(4).normal(size=lead + (length, 3)),
                           tf.float32)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(fn() * upstream)
        return tape.gradient(loss, [q, k, v])

    local = grads(lambda: local_attention(q, k, v, window, causal=causal, mask=mask))
    full = grads(lambda: scaled_dot_product_attention(q, k, v, mask=full_mask))
    for name, got, want in zip("qkv", local, full):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, err_msg=name)


def test_unknown_length_in_tf_function():
    spec = tf.TensorSpec([None, None, 4], tf.float32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, None, 3], tf.float32),
                                  tf.TensorSpec([None, 1, None], tf.bool)])
    def attend(q, k, v, mask):
        return local_attention(q, k, v, window=3, causal=True, mask=mask)

    for length in (2, 7, 12):
        q, k, v = _inputs((2,), length, seed=length)
        mask = np.ones((2, 1, length), bool)
        mask[1, 0, length // 2:] = False
        out = attend(q, k, v, mask)
        expected, _ = reference.attention(q, k, v, mask & reference.band(length, length, 3,
                                                                         True))
        np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


def test_unknown_length_mismatch_fails_at_run_time():
    spec = tf.TensorSpec([1, None, 4], tf.float32)

    @tf.function(input_signature=[spec, spec, spec])
    def attend(q, k, v):
        return local_attention(q, k, v, window=2)

    q = np.zeros((1, 5, 4), np.float32)
    k = np.zeros((1, 6, 4), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="lengths must be equal"):
        attend(q, k, k)


def test_fully_masked_rows_are_zero():
    q, k, v = _inputs((1,), 8, seed=2)
    mask = np.ones((1, 1, 8), bool)
    mask[0, 0, :5] = False  # with window 1 and causal, queries 0..4 see no key at all
    out = local_attention(q, k, v, window=1, causal=True, mask=mask)
    np.testing.assert_array_equal(out.numpy()[0, :5], 0.0)
    expected, _ = reference.attention(q, k, v, mask & reference.band(8, 8, 1, True))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


def test_float16_is_finite_and_close_to_float64_reference():
    q, k, v = _inputs((2, 2), 13, d=8, seed=8, dtype=np.float16)
    q = q * np.float16(3.0)
    mask = np.ones((2, 1, 1, 13), bool)
    mask[0] = False  # every row of batch 0 fully masked
    out = local_attention(q, k, v, window=4, mask=mask)
    assert out.dtype == tf.float16
    assert np.all(np.isfinite(out.numpy()))
    np.testing.assert_array_equal(out.numpy()[0], 0.0)
    expected, _ = reference.attention(q, k, v, mask & reference.band(13, 13, 4))
    np.testing.assert_allclose(out.numpy().astype(np.float64), expected, atol=2e-2)


def test_numpy_integer_window_is_accepted():
    q, k, v = _inputs((1,), 6)
    out = local_attention(q, k, v, np.int64(2))
    expected, _ = reference.attention(q, k, v, reference.band(6, 6, 2))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("bad", [0, -3, 2.0, 1.5, True, None, "4"])
def test_bad_window_is_rejected(bad):
    q, k, v = _inputs((1,), 6)
    with pytest.raises(ValueError, match="window must be a positive integer, got %s"
                       % repr(bad).replace(".", r"\.")):
        local_attention(q, k, v, bad)


def test_different_query_and_key_lengths_are_rejected():
    q, _, _ = _inputs((1,), 5)
    k, v, _ = _inputs((1,), 7, dv=4)
    with pytest.raises(ValueError, match=r"query length 5 and key length 7 must be equal"):
        local_attention(q, k, v, 2)


def test_mismatched_depths_and_integer_inputs_are_rejected():
    q, k, v = _inputs((1,), 5)
    with pytest.raises(ValueError, match=r"same depth.*query \(1, 5, 4\), key \(1, 5, 3\)"):
        local_attention(q, k[..., :3], v, 2)
    with pytest.raises(TypeError, match="key must be a floating-point tensor, got dtype int32"):
        local_attention(q, k.astype(np.int32), v, 2)


def test_mask_that_does_not_broadcast_is_rejected():
    q, k, v = _inputs((2,), 6)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 5\).*scores of shape \(2, 6, 6\)"):
        local_attention(q, k, v, 2, mask=np.ones((2, 1, 5), bool))


def test_graph_has_no_length_squared_tensor():
    # Structural O(L * window) check: trace (never run) forward and backward at L = 4096.
    length, window = 4096, 16
    spec = tf.TensorSpec([1, length, 4], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([1, 1, length], tf.bool)])
    def loss_and_grads(q, k, v, mask):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(local_attention(q, k, v, window, causal=True, mask=mask))
        return tape.gradient(loss, [q, k, v])

    graph = loss_and_grads.get_concrete_function().graph
    # Floating tensors hold the memory; TF 2.9 leaves some int32 shape vectors unknown.
    sizes = [t.shape.num_elements() for op in graph.get_operations() for t in op.outputs
             if t.dtype.is_floating]
    assert None not in sizes
    scores = [op.outputs[0].shape.num_elements() for op in graph.get_operations()
              if op.type == "BatchMatMulV2"]
    assert length * 2 * window in scores  # (L / w blocks) x w queries x 2 w keys
    assert max(sizes) <= length * 2 * window
