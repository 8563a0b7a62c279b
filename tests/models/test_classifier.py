"""AttentionClassifier against a float64 NumPy forward pass with the model's weights."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.models.classifier import AttentionClassifier, attention_mass


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def numpy_forward(model, ids, pooling):
    """float64 reference of embedding -> single-head attention -> masked pooling -> dense."""
    w = {v.name.split("/", 1)[1] if "/" in v.name else v.name: v.numpy().astype(np.float64)
         for v in model.weights}
    emb = next(v for k, v in w.items() if "embeddings" in k)
    x = emb[ids]
    mask = ids != 0

    def proj(name):
        kernel = next(v for k, v in w.items() if k.endswith(name + "_kernel:0"))
        bias = next(v for k, v in w.items() if k.endswith(name + "_bias:0"))
        return x @ kernel + bias

    q, k, v = proj("query"), proj("key"), proj("value")
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    scores = np.where(mask[:, None, :], scores, -np.inf)
    weights = _softmax(scores)
    y = weights @ v
    keep = mask[..., None]
    if pooling == "mean":
        pooled = (y * keep).sum(1) / keep.sum(1)
    else:
        pooled = np.where(keep, y, -np.inf).max(1)
    dense_k = next(v for k, v in w.items() if "classify" in k and "kernel" in k)
    dense_b = next(v for k, v in w.items() if "classify" in k and "bias" in k)
    return pooled @ dense_k + dense_b, weights


@settings(max_examples=10)
@given(pooling=st.sampled_from(["mean", "max"]), lengths=st.lists(st.integers(1, 6), min_size=1,
                                                                   max_size=3))
def test_matches_numpy_reference(pooling, lengths):
    rng = np.random.default_rng(len(lengths))
    ids = np.zeros((len(lengths), 6), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, 20, size=n)
    model = AttentionClassifier(20, 3, embed_dim=8, pooling=pooling)
    logits, weights = model(ids, return_attention=True)
    ref_logits, ref_weights = numpy_forward(model, ids, pooling)
    np.testing.assert_allclose(logits.numpy(), ref_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights["attention"].numpy()[:, 0], ref_weights, atol=1e-6)


def test_multi_head_weights_sum_to_one_on_real_tokens_and_skip_padding():
    ids = np.array([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]], np.int32)
    model = AttentionClassifier(10, 2, embed_dim=8, attention="multi_head", num_heads=2)
    logits, weights = model(ids, return_attention=True)
    w = weights["attention"].numpy()
    assert logits.dtype == tf.float32 and logits.shape == (2, 2)
    assert w.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    assert np.all(w[0, :, :, 3:] == 0) and np.all(w[1, :, :, 2:] == 0)


def test_attention_mass_against_numpy():
    w = np.random.default_rng(0).random((2, 3, 4, 4))
    w /= w.sum(-1, keepdims=True)
    keys = np.array([[True, False, False, True], [False, True, False, False]])
    queries = np.array([[True, True, True, False], [True, True, False, False]])
    per_query = (w * keys[:, None, None, :]).sum(-1).mean(1)
    expected = per_query[queries].mean()
    assert attention_mass(w, keys, queries) == pytest.approx(expected, rel=1e-6)


def test_config_round_trip_and_mixed_precision_output():
    ids = np.array([[3, 4, 0]], np.int32)
    model = AttentionClassifier(12, 4, embed_dim=8, attention="multi_head", num_heads=4,
                                pooling="max")
    clone = AttentionClassifier.from_config(model.get_config())
    clone(ids)
    model(ids)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(ids).numpy(), model(ids).numpy(), rtol=1e-6)
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    half = AttentionClassifier(12, 4, embed_dim=8)
    out = half(ids)
    assert out.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in half.weights)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="attention must be one of .* got 'sparse'"):
        AttentionClassifier(10, 2, attention="sparse")
    with pytest.raises(ValueError, match="pooling must be one of .* got 'sum'"):
        AttentionClassifier(10, 2, pooling="sum")
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads "
                                         r"\(4\)"):
        AttentionClassifier(10, 2, embed_dim=10, attention="multi_head", num_heads=4)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        AttentionClassifier(10, 0)


@pytest.mark.parametrize("attention", ["custom", "multi_head"])
def test_saved_model_round_trip_keeps_every_weight(attention, tmp_path):
    ids = np.array([[3, 5, 7, 11, 0, 0], [1, 2, 3, 4, 5, 6]], np.int32)
    model = AttentionClassifier(vocab_size=12, num_classes=3, embed_dim=8,
                                attention=attention)
    model(ids)
    model.save(str(tmp_path / "model"), save_format="tf")
    restored = tf.keras.models.load_model(str(tmp_path / "model"))
    for saved, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy(), err_msg=saved.name)
    np.testing.assert_allclose(restored(ids).numpy(), model(ids).numpy(), atol=1e-6)
