"""An additive score bias through every kernel: values and gradients (the bias's included)
against the float64 reference, broadcast forms kept unexpanded, bad biases named."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.ops.chunked import chunked_attention
from attnlab.ops.kernels import KERNELS, attention_kernel
from attnlab.ops.local import local_attention
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from tests import reference

OPTIONS = {"local": dict(window=2), "chunked": dict(chunk_size=3),
           "chunked_exp": dict(chunk_size=3)}
# (T, S) bias shapes for (B=2, H=2) scores: per key, per head and position, one for all,
# per query, and a full one.
BIAS_SHAPES = [(2, 1, 1, 7), (1, 2, 7, 7), (7, 7), (2, 1, 7, 1), (2, 2, 7, 7)]


def _reference_with_bias(q, k, v, bias, visible):
    """softmax(q k^T + bias) over the visible keys, by TensorFlow's autodiff in float64."""
    scores = tf.matmul(q, k, transpose_b=True) + bias
    scores = tf.where(visible, scores, -1e300)
    weights = tf.where(tf.reduce_any(visible, -1, keepdims=True), tf.nn.softmax(scores), 0.0)
    return tf.matmul(weights, v)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("bias_shape", BIAS_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_every_kernel_adds_the_bias_and_gives_it_its_gradient(name, bias_shape, causal):
    rng = np.random.default_rng(5)
    t = s = 7
    q = rng.normal(size=(2, 2, t, 4)) * 0.5
    k, v = rng.normal(size=(2, 2, s, 4)), rng.normal(size=(2, 2, s, 3))
    bias = rng.normal(size=bias_shape) * 2.0
    padding = np.ones((2, 1, 1, s), bool)
    padding[1, ..., 5:] = False
    visible = padding & (reference.causal(t, s, 0) if causal else True)
    if name == "local":
        visible = visible & (np.abs(np.arange(t)[:, None] - np.arange(s)[None]) <= 2)
    upstream = rng.normal(size=(2, 2, t, 3))
    tensors = [tf.constant(x) for x in (q, k, v, bias)]
    attend = attention_kernel(name, **OPTIONS.get(name, {}))
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = attend(*tensors[:3], mask=tf.constant(padding), causal=causal, bias=tensors[3])
        loss = tf.reduce_sum(out * upstream)
    got = tape.gradient(loss, tensors)
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        expected = _reference_with_bias(*tensors, visible)
        loss = tf.reduce_sum(expected * upstream)
    want = tape.gradient(loss, tensors)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-10)
    # The output also matches the float64 NumPy reference with the bias as an additive mask.
    scores_bias = np.broadcast_to(bias, (2, 2, t, s))
    np.testing.assert_allclose(out.numpy(), _numpy_attention(q, k, v, scores_bias, visible),
                               atol=1e-10)
    for name_, g, w in zip(("q", "k", "v", "bias"), got, want):
        assert g.shape == w.shape, name_
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-9, err_msg=name_)


def _numpy_attention(q, k, v, bias, visible):
    scores = q @ np.swapaxes(k, -1, -2) + bias
    scores = np.where(visible, scores, -np.inf)
    top = np.max(np.where(visible, scores, -1e300), axis=-1, keepdims=True)
    e = np.where(visible, np.exp(scores - top), 0.0)
    total = e.sum(-1, keepdims=True)
    return (e / np.where(total > 0, total, 1.0)) @ v


def test_the_reference_takes_a_bias_and_a_rank_3_bias_gets_a_head_axis():
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 2, 5, 4)) for _ in range(3))
    bias = rng.normal(size=(2, 5, 5))
    got = scaled_dot_product_attention(q, k, v, bias=bias, scale=1.0)
    want = _numpy_attention(q, k, v, bias[:, None], np.ones((2, 2, 5, 5), bool))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_a_key_bias_reaches_chunked_attention_blocks_unexpanded(monkeypatch):
    # The blocks see slices of the (B, 1, 1, S) bias, never a (T, S) tensor.
    import attnlab.ops.chunked as chunked_module

    shapes = []
    block_scores = chunked_module._block_scores

    def recording(query, key, keep, acc_dtype, bias=None):
        shapes.append(None if bias is None else tuple(bias.shape.as_list()))
        return block_scores(query, key, keep, acc_dtype, bias)

    monkeypatch.setattr(chunked_module, "_block_scores", recording)
    q = tf.random.normal([2, 2, 12, 4])
    bias = tf.random.normal([2, 1, 1, 12])
    chunked_attention(q, q, q, bias=bias, query_chunk_size=4, key_chunk_size=4)
    assert shapes and set(shapes) == {(2, 1, 1, 4)}


def test_a_key_bias_in_local_attention_is_blocked_like_a_key_mask():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 10, 4))
    bias = rng.normal(size=(1, 1, 10))
    got = local_attention(x, x, x, window=3, bias=bias)
    visible = np.abs(np.arange(10)[:, None] - np.arange(10)[None]) <= 3
    want = _numpy_attention(x / 2.0, x, x, np.broadcast_to(bias, (1, 10, 10)), visible)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


@pytest.mark.parametrize("attend", [
    lambda q, b: scaled_dot_product_attention(q, q, q, bias=b),
    lambda q, b: chunked_attention(q, q, q, bias=b, query_chunk_size=2, key_chunk_size=2),
    lambda q, b: local_attention(q, q, q, window=1, bias=b)])
def test_bad_biases_are_named(attend):
    q = tf.zeros([2, 4, 3])
    with pytest.raises(TypeError, match="attention bias must be a floating-point tensor.*bool"):
        attend(q, tf.ones([2, 4, 4], tf.bool))
    with pytest.raises(ValueError, match=r"attention bias of shape \(2, 4, 5\) does not "
                                         r"broadcast to scores of shape \(2, 4, 4\)"):
        attend(q, tf.zeros([2, 4, 5]))
