"""MultiHeadAttention(rotary_embedding=...) against an independent float64 NumPy reference."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.layers.positional.rotary import RotaryEmbedding
from tests import reference
from tests.layers.layer_checks import check_layer

ATOL = 2e-5
ROTARY = {"max_wavelength": 100, "scaling_factor": 1.5}


def rope(x, positions, max_wavelength=100, scaling_factor=1.5):
    """float64 RoPE of x (..., L, d) at `positions` (L,): the feature pair (x_i, x_{i+d/2})
    as the complex number x_i + j x_{i+d/2}, turned by theta_i * p / scaling_factor."""
    x = np.asarray(x, np.float64)
    half = x.shape[-1] // 2
    theta = float(max_wavelength) ** (-2.0 * np.arange(half) / x.shape[-1])
    turn = np.exp(1j * np.asarray(positions, np.float64)[:, None] / scaling_factor * theta)
    z = (x[..., :half] + 1j * x[..., half:]) * turn
    return np.concatenate([z.real, z.imag], axis=-1)


def numpy_rotary_mha(layer, query, value, query_positions, key_positions, mask=None,
                     bias=None):
    """(B, T, D) output and (B, H, T, S) weights of `layer` recomputed in float64 from its
    kernels, with the queries and keys rotated at the given positions."""
    def project(dense, x):
        w = dense.kernel.numpy().astype(np.float64)
        out = np.einsum("btd,dhk->bhtk", np.asarray(x, np.float64), w)
        return out + dense.bias.numpy().astype(np.float64)[None, :, None]

    q = rope(project(layer._query_dense, query), query_positions)
    k = rope(project(layer._key_dense, value), key_positions)
    v = project(layer._value_dense, value)
    scale = 1.0 / np.sqrt(layer.key_dim)
    scores = np.einsum("bhtd,bhsd->bhts", q, k) * scale + (0.0 if bias is None else bias)
    visible = np.ones(scores.shape, bool) if mask is None else np.broadcast_to(mask, scores.shape)
    scores = np.where(visible, scores, -np.inf)
    e = np.where(visible, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    weights = e / e.sum(-1, keepdims=True)
    out = np.einsum("bhts,bhsv->bthv", weights, v)
    w_out = layer._output_dense.kernel.numpy().astype(np.float64)
    out = np.einsum("bthv,hvo->bto", out, w_out) + layer._output_dense.bias.numpy()
    return out, weights


def _layer(heads=2, key_dim=4, **kwargs):
    return MultiHeadAttention(heads, key_dim, bias_initializer="random_normal",
                              rotary_embedding=ROTARY, **kwargs)


@pytest.mark.parametrize("value_dim", [None, 3])  # None: the fused self-attention projection
@pytest.mark.parametrize("call, mask", [
    ({}, None), ({"causal": True}, reference.causal(5)),
    ({"use_causal_mask": True}, reference.causal(5))])
def test_self_attention_matches_numpy(value_dim, call, mask):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    tf.keras.utils.set_random_seed(1)
    layer = _layer(value_dim=value_dim)
    out, scores = layer(x, x, return_attention_scores=True, **call)
    want_out, want_scores = numpy_rotary_mha(layer, x, x, np.arange(5), np.arange(5), mask)
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=ATOL)
    np.testing.assert_allclose(out.numpy(), want_out, atol=ATOL)
    # The rotation matters: without it the weights differ.
    plain = MultiHeadAttention(2, 4, value_dim=value_dim)
    plain(x, x)
    plain.set_weights(layer.get_weights())
    _, plain_scores = plain(x, x, return_attention_scores=True, **call)
    assert np.abs(plain_scores.numpy() - scores.numpy()).max() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_positions(causal):
    rng = np.random.RandomState(1)
    q, memory = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 5, 6))
    q, memory = q.astype("float32"), memory.astype("float32")
    layer = _layer()
    mask = np.array([[1, 1, 0, 1, 1]], bool)[:, None]  # (B, 1, S): key 2 hidden
    out, scores = layer(q, memory, attention_mask=mask, causal=causal,
                        return_attention_scores=True)
    # Causal queries are the last 3 of the 5 positions; otherwise both start at 0.
    query_positions = np.arange(3) + (2 if causal else 0)
    full_mask = mask[:, None] & (reference.causal(3, 5, offset=2) if causal else True)
    want_out, want_scores = numpy_rotary_mha(layer, q, memory, query_positions,
                                             np.arange(5), full_mask)
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=ATOL)
    np.testing.assert_allclose(out.numpy(), want_out, atol=ATOL)


def test_attention_bias_is_added_to_the_rotated_scores():
    rng = np.random.RandomState(2)
    x = rng.normal(size=(1, 4, 6)).astype("float32")
    bias = rng.normal(size=(1, 2, 4, 4)).astype("float32")
    layer = _layer()
    out, scores = layer(x, x, attention_bias=bias, return_attention_scores=True)
    want_out, want_scores = numpy_rotary_mha(layer, x, x, np.arange(4), np.arange(4),
                                             bias=bias)
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=ATOL)
    np.testing.assert_allclose(out.numpy(), want_out, atol=ATOL)


@pytest.mark.parametrize("prefill", [0, 2])
def test_cached_decoding_equals_one_shot_causal(prefill):
    rng = np.random.RandomState(3)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    layer = _layer(value_dim=3)
    expected = layer(x, x, causal=True).numpy()
    cache = layer.init_cache(2, 7)
    outputs = []
    if prefill:
        out, cache = layer(x[:, :prefill], x[:, :prefill], cache=cache, cache_update_index=0)
        outputs.append(out.numpy())
    for i in range(prefill, 5):
        out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], cache=cache, cache_update_index=i)
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs, 1), expected, atol=ATOL)
    # The cache holds the keys rotated at their positions.
    keys = np.einsum("btd,dhk->bhtk", x.astype(np.float64),
                     layer._key_dense.kernel.numpy()) + layer._key_dense.bias.numpy()[:, None]
    np.testing.assert_allclose(cache[0].numpy()[:, :, :5], rope(keys, np.arange(5)), atol=ATOL)


def test_cached_step_in_tf_function_with_a_tensor_index():
    rng = np.random.RandomState(4)
    x = tf.constant(rng.normal(size=(1, 4, 6)).astype("float32"))
    layer = _layer()
    expected = layer(x, x, causal=True).numpy()
    step = tf.function(lambda tokens, cache, index: layer(tokens, tokens, cache=cache,
                                                          cache_update_index=index))
    cache, outputs = layer.init_cache(1, 4), []
    for i in range(4):
        out, cache = step(x[:, i:i + 1], cache, tf.constant(i))
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs, 1), expected, atol=ATOL)


def test_read_only_cache_equals_cross_attention():
    rng = np.random.RandomState(5)
    q, memory = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 5, 6))
    q, memory = q.astype("float32"), memory.astype("float32")
    layer = _layer()
    expected = layer(q, memory).numpy()
    got, _ = layer(q, memory, cache=layer.project_cache(memory))
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL)


@pytest.mark.parametrize("impl, options", [("chunked", {"chunk_size": 2}),
                                           ("local", {"window": 2})])
def test_every_kernel_sees_the_rotated_queries_and_keys(impl, options):
    rng = np.random.RandomState(6)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    full = _layer()
    other = _layer(attention_impl=impl, **options)
    full(x, x)
    other(x, x)
    other.set_weights(full.get_weights())
    mask = reference.band(5, window=2, causal=True) if impl == "local" else \
        reference.causal(5)
    np.testing.assert_allclose(other(x, x, causal=True).numpy(),
                               full(x, x, attention_mask=mask).numpy(), atol=ATOL)


class _KerasHookSubclass(MultiHeadAttention):
    """Overrides Keras's `_compute_attention` hook (and calls the base one)."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        return super()._compute_attention(query, key, value, attention_mask, training)


@pytest.mark.parametrize("causal", [False, True])
def test_subclass_hook_path_rotates_too(causal):
    rng = np.random.RandomState(7)
    x = rng.normal(size=(2, 4, 6)).astype("float32")
    base, hooked = _layer(), _KerasHookSubclass(2, 4, rotary_embedding=ROTARY)
    base(x, x)
    hooked(x, x)
    hooked.set_weights(base.get_weights())
    np.testing.assert_allclose(hooked(x, x, causal=causal).numpy(),
                               base(x, x, causal=causal).numpy(), atol=ATOL)


def test_rotary_instance_config_and_round_trip(tmp_path):
    rotary = RotaryEmbedding(max_wavelength=50)
    layer = MultiHeadAttention(2, 4, rotary_embedding=rotary)
    assert layer.rotary_embedding is rotary
    assert layer.get_config()["rotary_embedding"] == {"max_wavelength": 50,
                                                      "scaling_factor": 1.0}
    assert MultiHeadAttention(2, 4).get_config()["rotary_embedding"] is None
    x = np.random.RandomState(8).normal(size=(2, 4, 6)).astype("float32")
    check_layer(MultiHeadAttention, {"num_heads": 2, "key_dim": 4, "rotary_embedding": ROTARY},
                [x, x], tmp_path, call_kwargs={"causal": True},
                expected_output_shape=(2, 4, 6))


def test_from_keras_takes_a_rotary_option_and_to_keras_refuses_it():
    keras_layer = tf.keras.layers.MultiHeadAttention(2, 4)
    x = tf.random.normal([1, 3, 6])
    keras_layer(x, x)
    ours = MultiHeadAttention.from_keras(keras_layer, rotary_embedding=ROTARY)
    assert ours.rotary_embedding.max_wavelength == 100
    want, _ = numpy_rotary_mha(ours, x.numpy(), x.numpy(), np.arange(3), np.arange(3))
    np.testing.assert_allclose(ours(x, x).numpy(), want, atol=ATOL)
    with pytest.raises(ValueError, match="to_keras: .*has no rotary embedding"):
        ours.to_keras()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"key_dim": 3, "rotary_embedding": {}}, ValueError,
     "key_dim must be even, got key_dim=3"),
    ({"rotary_embedding": "rope"}, TypeError, "rotary_embedding must be None, a Rotary"),
    ({"rotary_embedding": {"base": 10}}, ValueError,
     "rotary_embedding may set max_wavelength, scaling_factor, got base"),
    ({"rotary_embedding": {"max_wavelength": 0.5}}, ValueError, "max_wavelength must be"),
])
def test_bad_rotary_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MultiHeadAttention(**dict({"num_heads": 2, "key_dim": 4}, **kwargs))


def test_rotary_needs_sequence_inputs():
    layer = MultiHeadAttention(2, 4, attention_axes=(1, 2), rotary_embedding={})
    x = tf.zeros([1, 3, 3, 6])
    with pytest.raises(ValueError, match=r"rotary_embedding needs \(B, T, D\) inputs"):
        layer(x, x)


def test_rotate_on_another_axis_equals_call_and_inverse_undoes_it():
    x = np.random.RandomState(9).normal(size=(2, 3, 5, 4)).astype("float32")  # (B, H, L, d)
    layer = RotaryEmbedding(max_wavelength=100, scaling_factor=1.5)
    heads_first = layer.rotate(x, start_index=2, sequence_axis=2).numpy()
    np.testing.assert_allclose(heads_first, rope(x, np.arange(5) + 2), atol=1e-5)
    via_call = layer(x.transpose(0, 2, 1, 3), start_index=2).numpy().transpose(0, 2, 1, 3)
    np.testing.assert_allclose(heads_first, via_call, atol=1e-6)
    back = layer.rotate(heads_first, start_index=2, sequence_axis=2, inverse=True).numpy()
    np.testing.assert_allclose(back, x, atol=1e-5)
    with pytest.raises(ValueError, match="sequence_axis=3 must be an axis between"):
        layer.rotate(x, sequence_axis=3)
