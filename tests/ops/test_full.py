"""The full kernels ("full", "full_exp"): `full_attention` with either normalization, its
own gradient against float64 NumPy finite differences, and the exp path's fallbacks."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.ops.full import full_attention
from tests import reference


def reference_gradients(q, k, v, upstream, mask, eps=1e-6):
    """Central finite differences of sum(reference output * upstream) in float64."""
    def loss(q, k, v):
        return np.sum(reference.attention(q, k, v, mask=mask)[0] * upstream)

    inputs = [np.array(x, np.float64) for x in (q, k, v)]
    grads = []
    for i, x in enumerate(inputs):
        grad = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            plus = [y.copy() for y in inputs]
            minus = [y.copy() for y in inputs]
            plus[i][index] += eps
            minus[i][index] -= eps
            grad[index] = (loss(*plus) - loss(*minus)) / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-6), ("float32", 1e-4)])
@pytest.mark.parametrize("mask_kind", ["none", "rows", "fully_masked_row", "causal"])
def test_gradients_without_weights_match_float64_numpy_reference(dtype, tol, mask_kind,
                                                                 normalization):
    # Without the weights and without dropout the attention has its own gradient.
    rng = np.random.RandomState(7)
    q, k, v = (rng.normal(size=(2, 2, 3, 4)) for _ in range(3))
    v = v[..., :3]
    k, v = np.concatenate([k, k[:, :, :1]], axis=2), np.concatenate([v, v[:, :, :1]], axis=2)
    upstream = rng.normal(size=(2, 2, 3, 3))
    mask, causal = None, mask_kind == "causal"
    if mask_kind in ("rows", "fully_masked_row"):
        mask = rng.rand(2, 3, 4) > 0.4  # (B, T, S): gets a head axis
        mask[:, :, 0] = True
        if mask_kind == "fully_masked_row":
            mask[1, 2] = False
    visible = np.ones((2, 1, 3, 4), bool) if mask is None else mask[:, None]
    if causal:
        visible = visible & reference.causal(3, 4, offset=1)
    tensors = [tf.constant(x.astype(dtype)) for x in (q, k, v)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = full_attention(*tensors, mask=mask, causal=causal, normalization=normalization)
        loss = tf.reduce_sum(out * tf.constant(upstream.astype(dtype)))
    grads = tape.gradient(loss, tensors)
    np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v, mask=visible)[0],
                               atol=tol, rtol=tol)
    for got, want in zip(grads, reference_gradients(q, k, v, upstream, visible)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), want, atol=tol, rtol=tol)
    if mask_kind == "fully_masked_row":
        np.testing.assert_array_equal(grads[0].numpy()[1, :, 2], 0.0)


def test_gradients_without_weights_with_unknown_batch_dimensions(normalization):
    # Traced with unknown batch dimensions (broadcasting possible) the gradients keep the
    # inputs' shapes: here key and value are shared by every query batch item.
    rng = np.random.RandomState(8)
    q = rng.normal(size=(3, 2, 4)).astype("float32")
    kv = rng.normal(size=(1, 5, 4)).astype("float32")
    spec = tf.TensorSpec([None, None, 4], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def grads(q, kv):
        with tf.GradientTape() as tape:
            tape.watch([q, kv])
            loss = tf.reduce_sum(full_attention(q, kv, kv, normalization=normalization) ** 2)
        return tape.gradient(loss, [q, kv])

    got = grads(tf.constant(q), tf.constant(kv))
    kv3 = np.repeat(kv, 3, axis=0)
    upstream = 2 * reference.attention(q, kv3, kv3)[0]
    want = reference_gradients(q, kv3, kv3, upstream, None)
    assert got[1].shape == (1, 5, 4)
    np.testing.assert_allclose(got[0].numpy(), want[0], atol=1e-4)
    np.testing.assert_allclose(got[1].numpy(), (want[1] + want[2]).sum(0, keepdims=True),
                               atol=1e-4)


def _outputs_and_gradients(q, k, v, upstream, normalization, mask=None):
    tensors = [tf.constant(x) for x in (q, k, v)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = full_attention(*tensors, mask=mask, scale=1.0, normalization=normalization)
        loss = tf.reduce_sum(out * tf.constant(upstream))
    return out, tape.gradient(loss, tensors)


@pytest.mark.parametrize("case", ["score_far_above_key_0", "key_0_masked_far_above"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-6), ("float32", 1e-4)])
def test_exp_normalization_falls_back_where_key_0_cannot_shift_a_row(case, dtype, tol,
                                                                       normalization):
    # The exp path shifts each row by its score against key 0. A row where another key
    # scores 120 above it (exp overflows float32) or where key 0 is masked and scores 120
    # above the visible keys (their exp underflows to 0) must take the softmax fallback.
    rng = np.random.RandomState(11)
    q = rng.normal(size=(2, 3, 4)) * 0.5
    k = rng.normal(size=(2, 5, 4)) * 0.5
    v = rng.normal(size=(2, 5, 3))
    upstream = rng.normal(size=(2, 3, 3))
    mask = None
    q[1, 2] = [10.0, 0.0, 0.0, 0.0]
    if case == "score_far_above_key_0":
        k[1, 0], k[1, 3] = [-6.0, 0, 0, 0], [6.0, 0, 0, 0]  # scores -60 and +60
    else:
        k[1, 0] = [12.0, 0, 0, 0]  # score +120, hidden
        mask = np.ones((2, 3, 5), bool)
        mask[1, 2, 0] = False
    out, grads = _outputs_and_gradients(*(x.astype(dtype) for x in (q, k, v, upstream)),
                                        normalization, mask=mask)
    visible = np.ones((2, 3, 5), bool) if mask is None else mask
    np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v, visible, 1.0)[0],
                               atol=tol, rtol=tol)
    # The reference gradients at a scale of 1: scaled queries in, scale 1 in the reference.
    def loss(q, k, v):
        return np.sum(reference.attention(q, k, v, mask=visible, scale=1.0)[0] * upstream)
    for index, got in enumerate(grads):
        inputs = [q, k, v]
        want = np.zeros_like(inputs[index])
        for position in np.ndindex(want.shape):
            plus = [x.copy() for x in inputs]
            minus = [x.copy() for x in inputs]
            plus[index][position] += 1e-6
            minus[index][position] -= 1e-6
            want[position] = (loss(*plus) - loss(*minus)) / 2e-6
        assert np.all(np.isfinite(got.numpy()))
        np.testing.assert_allclose(got.numpy(), want, atol=tol * 10, rtol=tol * 10)
