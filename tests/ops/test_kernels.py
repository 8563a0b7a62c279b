"""The kernel interface: every named kernel against the float64 NumPy reference, the one
default, and the kernels' argument checks."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.ops import full, kernels
from attnlab.ops.kernels import (
    EXP_MIN_SCORES,
    KERNELS,
    attention_kernel,
    default_attention_impl,
    default_normalization,
)
from tests import reference

OPTIONS = {"local": dict(window=2), "chunked": dict(chunk_size=3),
           "chunked_exp": dict(chunk_size=3)}


def _inputs(t, s, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, 2, t, 4)) * 0.5  # already scaled, as the interface takes them
    k, v = rng.normal(size=(2, 2, s, 4)), rng.normal(size=(2, 2, s, 3))
    return q, k, v


@pytest.mark.parametrize("name, causal, offset", [
    (name, causal, offset) for name in KERNELS
    for causal, offset in ((False, None), (True, None), (True, 2))
    # local attention is self-attention: offset 0 only (tested below)
    if not (name == "local" and offset is not None)])
def test_every_kernel_matches_the_reference_values_and_gradients(name, causal, offset):
    t = s = 7
    q, k, v = _inputs(t, s, seed=1)
    padding = np.ones((2, 1, 1, s), bool)
    padding[1, ..., 5:] = False
    visible = padding
    if causal:
        visible = visible & reference.causal(t, s, s - t if offset is None else offset)
    if name == "local":
        visible = visible & (np.abs(np.arange(t)[:, None] - np.arange(s)[None]) <= 2)
    upstream = np.random.default_rng(2).normal(size=(2, 2, t, 3))
    tensors = [tf.constant(x) for x in (q, k, v)]
    attend = attention_kernel(name, **OPTIONS.get(name, {}))
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = attend(*tensors, mask=tf.constant(padding), causal=causal, offset=offset)
        loss = tf.reduce_sum(out * upstream)
    grads = tape.gradient(loss, tensors)
    with tf.GradientTape() as tape:  # TensorFlow's autodiff of the plain reference
        tape.watch(tensors)
        want = tf.reduce_sum(reference_attention(*tensors, visible) * upstream)
    want_grads = tape.gradient(want, tensors)
    np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v, visible, 1.0)[0],
                               atol=1e-10)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-10)


def reference_attention(q, k, v, visible):
    """softmax over the visible keys in float64, zero for rows with nothing visible."""
    scores = tf.matmul(q, k, transpose_b=True)
    scores = tf.where(visible, scores, -1e300)
    weights = tf.where(tf.reduce_any(visible, -1, keepdims=True), tf.nn.softmax(scores), 0.0)
    return tf.matmul(weights, v)


def test_auto_is_the_default_kernel_and_computes_the_same():
    q, k, v = (tf.constant(x) for x in _inputs(5, 6, seed=3))
    np.testing.assert_allclose(attention_kernel("auto")(q, k, v, causal=True).numpy(),
                               attention_kernel(default_attention_impl())(
                                   q, k, v, causal=True).numpy(), atol=0)
    assert default_attention_impl() == {"exp": "full_exp",
                                        "softmax": "full"}[default_normalization()]


def test_the_softmax_op_tensorflow_runs_is_one_of_the_two_known():
    # TF 2.9 on a CPU: the generic "Softmax"; TF 2.15 on a CPU with oneDNN: "_MklSoftmax".
    assert kernels.cpu_softmax_op() in ("Softmax", "_MklSoftmax")


@pytest.mark.parametrize("gpu, op, expected", [
    (False, "Softmax", "exp"), (False, "_MklSoftmax", "softmax"), (False, None, "softmax"),
    (True, "Softmax", "softmax")])
def test_default_normalization_is_exp_exactly_where_the_cpu_softmax_is_the_generic_kernel(
        monkeypatch, gpu, op, expected):
    monkeypatch.setattr(kernels, "cpu_softmax_op", lambda: op)
    monkeypatch.setattr(kernels.tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if gpu and kind == "GPU" else [])
    kernels.default_normalization.cache_clear()
    try:
        assert kernels.default_normalization() == expected
        assert kernels.default_attention_impl() == {"exp": "full_exp",
                                                    "softmax": "full"}[expected]
    finally:
        monkeypatch.undo()
        kernels.default_normalization.cache_clear()


def test_full_exp_takes_softmax_below_exp_min_scores(monkeypatch):
    # A decoding step (T = 1) keeps the softmax: the exp path's extra small ops cost more.
    calls = []
    exp_weights = full._exp_weights
    monkeypatch.setattr(full, "_exp_weights", lambda *args: calls.append(1) or exp_weights(*args))
    rng = np.random.RandomState(3)
    s = 256
    attend = attention_kernel("full_exp")
    for t, used in ((1, False), (EXP_MIN_SCORES // s - 1, False), (EXP_MIN_SCORES // s, True)):
        calls.clear()
        q, k, v = rng.normal(size=(1, 1, t, 4)), rng.normal(size=(1, 1, s, 4)), \
            rng.normal(size=(1, 1, s, 3))
        out = attend(tf.constant(q), tf.constant(k), tf.constant(v))
        assert bool(calls) == used, t
        np.testing.assert_allclose(out.numpy(), reference.attention(q, k, v, None, 1.0)[0],
                                   atol=1e-10)


@pytest.mark.parametrize("arguments, error, match", [
    (dict(attention_impl="flash"), ValueError,
     "attention_impl must be one of auto, full, full_exp, chunked, chunked_exp, local, got "
     "'flash'"),
    (dict(attention_impl="local"), ValueError, "needs a window.*window=None"),
    (dict(attention_impl="local", window=0), ValueError, "window must be a positive.*0"),
    (dict(attention_impl="chunked", chunk_size=-4), ValueError, "chunk_size.*-4"),
])
def test_bad_kernel_arguments_are_named(arguments, error, match):
    with pytest.raises(error, match=match):
        attention_kernel(**arguments)


def test_local_kernel_refuses_a_causal_offset_other_than_0():
    q = tf.zeros([1, 1, 4, 2])
    attend = attention_kernel("local", window=1)
    with pytest.raises(ValueError, match="its causal offset is 0, got offset=1"):
        attend(q, q, q, causal=True, offset=1)
    np.testing.assert_array_equal(attend(q, q, q, causal=True, offset=tf.constant(0)).numpy(),
                                  attend(q, q, q, causal=True).numpy())


def test_full_normalization_is_checked():
    q = tf.zeros([1, 3, 2])
    with pytest.raises(ValueError, match="normalization must be one of softmax, exp, got 'max'"):
        full.full_attention(q, q, q, normalization="max")
    assert kernels.resolve_attention_impl("chunked_exp") == "chunked_exp"
