import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.gated_attention import GatedAttention
from tests import reference
from tests.layers.layer_checks import check_layer


def weights64(layer, name):
    """A weight as float64: "gate_kernel", or a projection's such as "query_kernel" (the
    kernel of MultiHeadAttention's `_query_dense`)."""
    owner = layer
    if not name.startswith("gate_"):
        projection, name = name.rsplit("_", 1)
        owner = getattr(layer, "_%s_dense" % projection)
    return np.asarray(getattr(owner, name).numpy(), np.float64)


def reference_context(layer, query, value, mask):
    """Multi-head attention context in float64: per-head projections, tests.reference
    attention, output projection back to D."""
    q, v = np.asarray(query, np.float64), np.asarray(value, np.float64)
    heads = []
    for h in range(layer.num_heads):
        qh = q @ weights64(layer, "query_kernel")[:, h] + weights64(layer, "query_bias")[h]
        kh = v @ weights64(layer, "key_kernel")[:, h] + weights64(layer, "key_bias")[h]
        vh = v @ weights64(layer, "value_kernel")[:, h] + weights64(layer, "value_bias")[h]
        out, _ = reference.attention(qh, kh, vh, mask=mask)
        heads.append(out @ weights64(layer, "output_kernel")[h])
    return sum(heads) + weights64(layer, "output_bias")


def reference_output(layer, query, value, mask):
    x = np.asarray(query, np.float64)
    context = reference_context(layer, query, value, mask)
    logits = np.concatenate([x, context], -1) @ weights64(layer, "gate_kernel") \
        + weights64(layer, "gate_bias")
    gate = 1.0 / (1.0 + np.exp(-logits))
    return gate * context + (1.0 - gate) * x


def random_layer_inputs(seed, t, s, d, dv):
    rng = np.random.RandomState(seed)
    return (rng.normal(size=(2, t, d)).astype("float32"),
            rng.normal(size=(2, s, dv)).astype("float32"), rng)


@settings(max_examples=10)
@given(t=st.integers(1, 4), s=st.integers(1, 4), heads=st.integers(1, 3),
       key_dim=st.integers(1, 3), causal=st.booleans(), seed=st.integers(0, 50))
def test_matches_numpy_reference(t, s, heads, key_dim, causal, seed):
    query, value, rng = random_layer_inputs(seed, t, s, 4, 3)
    user_mask = rng.rand(2, t, s) > 0.3
    layer = GatedAttention(heads, key_dim, value_dim=2, bias_initializer="random_normal",
                           gate_bias_initializer="random_normal")
    got = layer(query, value, attention_mask=user_mask, causal=causal).numpy()
    mask = user_mask & reference.causal(t, s, offset=s - t) if causal else user_mask
    np.testing.assert_allclose(got, reference_output(layer, query, value, mask), atol=1e-5)


def test_gate_limits_are_attention_and_identity():
    query, value, rng = random_layer_inputs(1, 3, 5, 4, 6)
    mask = rng.rand(2, 3, 5) > 0.3
    open_gate = GatedAttention(2, 3, gate_bias_initializer=tf.keras.initializers.Constant(40.0))
    got = open_gate(query, value, attention_mask=mask).numpy()
    np.testing.assert_allclose(got, reference_context(open_gate, query, value, mask), atol=1e-5)
    closed_gate = GatedAttention(2, 3, gate_bias_initializer=tf.keras.initializers.Constant(-40.0))
    np.testing.assert_allclose(closed_gate(query, value, attention_mask=mask).numpy(), query,
                               atol=1e-6)


def test_self_attention_uses_keras_padding_mask():
    ids = np.array([[4, 5, 6, 0], [7, 8, 0, 0]])
    embedded = tf.keras.layers.Embedding(10, 4, mask_zero=True)(ids)
    layer = GatedAttention(2, 3)
    _, weights = layer(embedded, return_weights=True)
    padded_keys = np.broadcast_to((ids == 0)[:, None, None, :], weights.shape)
    assert np.all(weights.numpy()[padded_keys] == 0.0)
    explicit = layer(tf.convert_to_tensor(embedded), attention_mask=(
        (ids != 0)[:, :, None] & (ids != 0)[:, None, :])).numpy()
    np.testing.assert_allclose(layer(embedded).numpy(), explicit, atol=1e-6)
    assert layer.compute_mask(embedded, embedded._keras_mask) is embedded._keras_mask


def test_return_weights_shape_and_head_mask():
    query, value, _ = random_layer_inputs(2, 3, 4, 4, 4)
    head_mask = np.ones((2, 2, 3, 4), bool)
    head_mask[:, 1, :, 0] = False
    output, weights = GatedAttention(2, 3)(query, value, attention_mask=head_mask,
                                            return_weights=True)
    assert output.shape == (2, 3, 4) and weights.shape == (2, 2, 3, 4)
    assert np.all(weights.numpy()[:, 1, :, 0] == 0.0) and np.all(weights.numpy()[:, 0] > 0.0)


def test_check_layer_self_attention(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 3, 4)).astype("float32")
    check_layer(GatedAttention, {"num_heads": 2, "key_dim": 3, "value_dim": 2, "dropout": 0.1,
                                 "kernel_regularizer": "l2",
                                 "gate_bias_initializer": "ones"},
                x, tmp_path, call_kwargs={"causal": True}, expected_output_shape=(2, 3, 4))


def test_check_layer_cross_attention(tmp_path):
    rng = np.random.RandomState(1)
    inputs = [rng.normal(size=(2, 3, 4)).astype("float32"),
              rng.normal(size=(2, 5, 6)).astype("float32")]
    check_layer(GatedAttention, {"num_heads": 1, "key_dim": 2, "use_bias": False}, inputs,
                tmp_path, call_kwargs={"return_weights": True}, expected_output_shape=(2, 3, 4))


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        GatedAttention(0, 4)
    with pytest.raises(ValueError, match=r"key_dim must be a positive integer, got 2\.0"):
        GatedAttention(2, 2.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1\.0"):
        GatedAttention(2, 4, dropout=1.0)
    layer = GatedAttention(2, 4)
    with pytest.raises(ValueError, match=r"value of shape \(B, length, depth\) .*got \(2, 5\)"):
        layer(tf.zeros([2, 3, 4]), tf.zeros([2, 5]))
    with pytest.raises(ValueError, match=r"attention mask of shape \(2, 1, 3, 7\) does not "
                                         r"broadcast to scores of shape \(2, 2, 3, 5\)"):
        layer(tf.zeros([2, 3, 4]), tf.zeros([2, 5, 4]), attention_mask=tf.ones([2, 3, 7]))
    with pytest.raises(TypeError, match="query must be a floating-point tensor, got dtype int32"):
        layer(tf.zeros([2, 3, 4], tf.int32))


def test_refuses_multi_head_attention_arguments_it_fixes():
    with pytest.raises(TypeError, match="does not take MultiHeadAttention's attention_impl, "
                                        "output_shape"):
        GatedAttention(2, 4, output_shape=8, attention_impl="chunked")
