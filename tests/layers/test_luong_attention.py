import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.luong_attention import LuongAttention
from tests.layers.layer_checks import check_layer


def reference(layer, query, values, mask):
    """Luong scores in float64, written per (b, t, s) pair from the paper's formulas."""
    q, h = np.asarray(query, np.float64), np.asarray(values, np.float64)
    scores = np.zeros(q.shape[:2] + (h.shape[1],))
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            for s in range(h.shape[1]):
                if layer.score == "dot":
                    scores[b, t, s] = q[b, t] @ h[b, s]
                elif layer.score == "general":
                    scores[b, t, s] = q[b, t] @ layer.score_kernel.numpy().astype(np.float64) \
                        @ h[b, s]
                else:
                    w = layer.concat_kernel.numpy().astype(np.float64)
                    v = layer.score_vector.numpy().astype(np.float64)
                    scores[b, t, s] = v @ np.tanh(np.concatenate([q[b, t], h[b, s]]) @ w)
    visible = np.broadcast_to(np.asarray(mask, bool)[:, None, :], scores.shape)
    scores = np.where(visible, scores, -np.inf)
    peak = np.max(scores, -1, keepdims=True)
    e = np.where(visible, np.exp(scores - np.where(np.isfinite(peak), peak, 0.0)), 0.0)
    total = e.sum(-1, keepdims=True)
    weights = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.einsum("bts,bsd->btd", weights, h), weights


@settings(max_examples=15)
@given(score=st.sampled_from(["dot", "general", "concat"]), t=st.integers(1, 3),
       s=st.integers(1, 4), dq=st.integers(1, 4), dv=st.integers(1, 4),
       units=st.one_of(st.none(), st.integers(1, 4)), seed=st.integers(0, 100))
def test_matches_numpy_reference(score, t, s, dq, dv, units, seed):
    if score == "dot":
        dv = dq
    rng = np.random.RandomState(seed)
    query = rng.normal(size=(2, t, dq)).astype("float32")
    values = rng.normal(size=(2, s, dv)).astype("float32")
    mask = rng.rand(2, s) > 0.4
    layer = LuongAttention(score, units=units if score == "concat" else None)
    context, weights = layer(query, values, values_mask=mask, return_weights=True)
    expected_context, expected_weights = reference(layer, query, values, mask)
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-5)
    np.testing.assert_allclose(context.numpy(), expected_context, atol=1e-5)


def test_concat_units_default_to_values_depth():
    layer = LuongAttention("concat")
    layer(tf.zeros([1, 2, 3]), tf.zeros([1, 4, 5]))
    assert layer.concat_kernel.shape == (8, 5) and layer.score_vector.shape == (5,)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_masking_and_single_step(score):
    rng = np.random.RandomState(3)
    query = rng.normal(size=(2, 3, 4)).astype("float32")
    values = rng.normal(size=(2, 5, 4)).astype("float32")
    mask = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 0]], bool)
    layer = LuongAttention(score)
    context, weights = layer(query, values, values_mask=mask, return_weights=True)
    assert np.all(weights.numpy()[~np.broadcast_to(mask[:, None], (2, 3, 5))] == 0.0)
    for t in range(3):
        c, w = layer(query[:, t], values, values_mask=mask, return_weights=True)
        np.testing.assert_allclose(c.numpy(), context.numpy()[:, t], atol=1e-6)
        np.testing.assert_allclose(w.numpy(), weights.numpy()[:, t], atol=1e-6)


def test_check_layer_general(tmp_path):
    rng = np.random.RandomState(0)
    inputs = [rng.normal(size=(2, 3, 4)).astype("float32"),
              rng.normal(size=(2, 5, 6)).astype("float32")]
    check_layer(LuongAttention, {"score": "general"}, inputs, tmp_path,
                expected_output_shape=(2, 3, 6))


def test_check_layer_concat_with_mask(tmp_path):
    rng = np.random.RandomState(1)
    # positional (query, values, values_mask): a single decoder step over a padded source
    inputs = [rng.normal(size=(2, 4)).astype("float32"),
              rng.normal(size=(2, 5, 3)).astype("float32"),
              np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)]
    check_layer(LuongAttention, {"score": "concat", "units": 6,
                                 "kernel_initializer": "random_normal"},
                inputs, tmp_path, expected_output_shape=(2, 3))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"score must be one of dot, general, concat, got "
                                         r"'bilinear'"):
        LuongAttention("bilinear")
    with pytest.raises(ValueError, match=r"units is only used by score='concat', got units=4 "
                                         r"with score='dot'"):
        LuongAttention("dot", units=4)
    with pytest.raises(ValueError, match=r"units must be a positive integer, got -1"):
        LuongAttention("concat", units=-1)
    with pytest.raises(ValueError, match=r"same depth, got query depth 4 and values depth 6"):
        LuongAttention("dot")(tf.zeros([2, 3, 4]), tf.zeros([2, 5, 6]))
    with pytest.raises(ValueError, match=r"values \(encoder outputs\) of shape \(B, S, Dv\), "
                                         r"got \(2, 5, 1, 4\)"):
        LuongAttention("general")(tf.zeros([2, 3, 4]), tf.zeros([2, 5, 1, 4]))
