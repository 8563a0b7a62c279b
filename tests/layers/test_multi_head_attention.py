import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.kv_cache import empty_cache, update_cache
from attnlab.layers.multi_head_attention import MultiHeadAttention
from tests import reference
from tests.layers.layer_checks import check_layer

ATOL = 2e-5


def random(rng, *shape):
    return rng.normal(size=shape).astype("float32")


def keras_pair(num_heads, key_dim, seed=0, **kwargs):
    """A Keras MHA and an attnlab MHA (built on the same shapes later) with shared weights."""
    keras_kwargs = dict(kwargs)
    if "output_dim" in keras_kwargs:
        keras_kwargs["output_shape"] = keras_kwargs.pop("output_dim")
    tf.keras.utils.set_random_seed(seed)
    ref = tf.keras.layers.MultiHeadAttention(num_heads, key_dim,
                                             bias_initializer="random_normal", **keras_kwargs)
    return ref, MultiHeadAttention(num_heads, key_dim, **kwargs)


def random_mask(rng, b, t, s):
    """(B, T, S) mask with at least one visible key per query (Keras MHA spreads fully
    masked rows uniformly where attnlab gives zeros, so those rows are compared elsewhere)."""
    mask = rng.rand(b, t, s) > 0.4
    mask[:, :, rng.randint(s)] = True
    return mask


@settings(max_examples=12)
@given(t=st.integers(1, 5), s=st.integers(1, 5), dq=st.integers(1, 6), dv=st.integers(1, 6),
       dk=st.sampled_from([None, 3]), heads=st.integers(1, 3), key_dim=st.integers(1, 4),
       value_dim=st.sampled_from([None, 2]), output_dim=st.sampled_from([None, 5]),
       use_bias=st.booleans(), masked=st.booleans(), seed=st.integers(0, 1000))
def test_matches_keras_multi_head_attention_with_copied_weights(
        t, s, dq, dv, dk, heads, key_dim, value_dim, output_dim, use_bias, masked, seed):
    rng = np.random.RandomState(seed)
    query, value = random(rng, 2, t, dq), random(rng, 2, s, dv)
    key = None if dk is None else random(rng, 2, s, dk)
    mask = random_mask(rng, 2, t, s) if masked else None
    kwargs = {"value_dim": value_dim, "use_bias": use_bias}
    if output_dim is not None:
        kwargs["output_dim"] = output_dim
    ref, layer = keras_pair(heads, key_dim, seed, **kwargs)
    expected, expected_scores = ref(query, value, key, attention_mask=mask,
                                    return_attention_scores=True)
    layer(query, value, key)
    assert [w.shape for w in layer.weights] == [w.shape for w in ref.weights]
    layer.set_weights(ref.get_weights())
    out, scores = layer(query, value, key, attention_mask=mask, return_attention_scores=True)
    assert scores.shape == (2, heads, t, s)
    assert out.shape == (2, t, output_dim or dq)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=ATOL, rtol=ATOL)
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=ATOL, rtol=ATOL)


def test_weight_names_and_shapes_follow_keras():
    ref, layer = keras_pair(2, 3, value_dim=4, output_dim=7)
    q, v, k = tf.ones([1, 2, 5]), tf.ones([1, 3, 6]), tf.ones([1, 3, 8])
    ref(q, v, k)
    layer(q, v, k)
    strip = [w.name.split("/", 1)[1] for w in ref.weights]
    assert [w.name.split("/", 1)[1] for w in layer.weights] == strip
    assert [tuple(w.shape) for w in layer.weights] == [
        (5, 2, 3), (2, 3), (8, 2, 3), (2, 3), (6, 2, 4), (2, 4), (2, 4, 7), (7,)]


def test_causal_matches_keras_with_a_causal_mask():
    rng = np.random.RandomState(1)
    x = random(rng, 2, 5, 6)
    ref, layer = keras_pair(2, 3)
    # An explicit lower-triangular mask: `use_causal_mask` is Keras 2.10+.
    expected = ref(x, x, attention_mask=reference.causal(5))
    layer(x, x)
    layer.set_weights(ref.get_weights())
    np.testing.assert_allclose(layer(x, x, causal=True).numpy(), expected.numpy(), atol=ATOL)


def test_keras_masks_of_query_and_value_are_used_like_keras():
    q_ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    v_ids = np.array([[1, 2, 0], [3, 4, 5]])
    embed_q = tf.keras.layers.Embedding(8, 6, mask_zero=True)
    embed_v = tf.keras.layers.Embedding(8, 5, mask_zero=True)
    ref, layer = keras_pair(2, 3)
    qi = tf.keras.Input((4,), dtype="int32")
    vi = tf.keras.Input((3,), dtype="int32")
    out = layer(embed_q(qi), embed_v(vi))
    model = tf.keras.Model([qi, vi], out)
    got = model([q_ids, v_ids]).numpy()
    # Keras MHA given the equivalent explicit mask (query mask & value mask), since only
    # Keras >= 2.10 reads the Keras masks itself.
    ref(embed_q(q_ids), embed_v(v_ids))
    ref.set_weights(layer.get_weights())
    explicit = (q_ids != 0)[:, :, None] & (v_ids != 0)[:, None, :]
    expected = ref(embed_q(q_ids), embed_v(v_ids), attention_mask=explicit).numpy()
    real = q_ids != 0  # padded query rows: Keras spreads them uniformly, attnlab zeros them
    np.testing.assert_allclose(got[real], expected[real], atol=ATOL)
    assert out._keras_mask is not None  # the query mask is passed on
    # Independent check of the value mask: the float64 reference over the real keys only.
    weights = [w.numpy().astype(np.float64) for w in layer.weights]
    qx, vx = embed_q(q_ids).numpy(), embed_v(v_ids).numpy()
    qh = np.einsum("btd,dhk->bhtk", qx, weights[0]) + weights[1][None, :, None, :]
    kh = np.einsum("bsd,dhk->bhsk", vx, weights[2]) + weights[3][None, :, None, :]
    vh = np.einsum("bsd,dhk->bhsk", vx, weights[4]) + weights[5][None, :, None, :]
    visible = (q_ids != 0)[:, None, :, None] & (v_ids != 0)[:, None, None, :]
    heads, _ = reference.attention(qh, kh, vh, visible)
    manual = np.einsum("bhtk,hko->bto", heads, weights[6]) + weights[7]
    np.testing.assert_allclose(got, manual, atol=ATOL)


def test_fully_masked_rows_give_bias_only_output_not_nan():
    layer = MultiHeadAttention(2, 3, bias_initializer="ones")
    x = tf.ones([1, 2, 4])
    out, scores = layer(x, x, attention_mask=np.zeros((1, 2, 2), bool),
                        return_attention_scores=True)
    np.testing.assert_array_equal(scores.numpy(), 0.0)
    np.testing.assert_allclose(out.numpy(), np.ones((1, 2, 4)))


def test_dropout_only_in_training():
    rng = np.random.RandomState(3)
    x = random(rng, 2, 4, 6)
    ref, layer = keras_pair(2, 3, dropout=0.5)
    expected = ref(x, x, training=False)
    layer(x, x)
    layer.set_weights(ref.get_weights())
    np.testing.assert_allclose(layer(x, x, training=False).numpy(), expected.numpy(),
                               atol=ATOL)
    dropped = layer(x, x, training=True).numpy()
    assert np.isfinite(dropped).all()
    assert not np.allclose(dropped, expected.numpy())

    # `training` as a graph tensor, decided when the function runs.
    attend = tf.function(lambda training: layer(x, x, training=training),
                         input_signature=[tf.TensorSpec([], tf.bool)])
    np.testing.assert_allclose(attend(tf.constant(False)).numpy(), expected.numpy(),
                               atol=ATOL)
    assert not np.allclose(attend(tf.constant(True)).numpy(), expected.numpy())


# ------------------------------------------------------------------------------ KV cache
def decode_with_cache(layer, x, prefill, max_length):
    """Prefill `prefill` tokens at once, then one token per call."""
    b, t, _ = x.shape
    cache = layer.init_cache(b, max_length)
    outputs = []
    if prefill:
        out, cache = layer(x[:, :prefill], x[:, :prefill], cache=cache, cache_update_index=0)
        outputs.append(out)
    for i in range(prefill, t):
        out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], cache=cache, cache_update_index=i)
        outputs.append(out)
    return np.concatenate([o.numpy() for o in outputs], axis=1), cache


@settings(max_examples=10)
@given(t=st.integers(1, 6), extra=st.integers(0, 3), prefill=st.integers(0, 6),
       heads=st.integers(1, 3), value_dim=st.sampled_from([None, 2]), seed=st.integers(0, 99))
def test_cached_decoding_equals_one_shot_causal_attention(t, extra, prefill, heads, value_dim,
                                                          seed):
    prefill = min(prefill, t)
    rng = np.random.RandomState(seed)
    x = random(rng, 2, t, 5)
    layer = MultiHeadAttention(heads, 3, value_dim=value_dim, bias_initializer="random_normal")
    expected = layer(x, x, causal=True).numpy()
    got, (key_cache, value_cache) = decode_with_cache(layer, x, prefill, t + extra)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert key_cache.shape == (2, heads, t + extra, 3)  # head-major
    assert value_cache.shape == (2, heads, t + extra, value_dim or 3)
    np.testing.assert_array_equal(key_cache.numpy()[:, :, t:], 0.0)  # unfilled slots untouched


def test_cached_decoding_in_tf_function_and_while_loop():
    rng = np.random.RandomState(4)
    t, max_length = 6, 8
    x = tf.constant(random(rng, 2, t, 5))
    layer = MultiHeadAttention(2, 3, bias_initializer="random_normal")
    expected = layer(x, x, causal=True).numpy()

    @tf.function
    def step(tokens, cache, index):
        return layer(tokens, tokens, cache=cache, cache_update_index=index)

    prefill, cache = step(x[:, :2], layer.init_cache(2, max_length), tf.constant(0))
    outputs = [prefill]
    for i in range(2, t):
        out, cache = step(x[:, i:i + 1], cache, tf.constant(i))
        outputs.append(out)
    np.testing.assert_allclose(tf.concat(outputs, 1).numpy(), expected, atol=1e-5)

    @tf.function
    def decode_loop(inputs):
        def body(i, cache, outputs):
            token = inputs[:, i:i + 1]
            out, cache = layer(token, token, cache=cache, cache_update_index=i)
            return i + 1, cache, outputs.write(i, out[:, 0])
        _, _, outputs = tf.while_loop(
            lambda i, *_: i < t, body,
            (tf.constant(0), layer.init_cache(2, max_length), tf.TensorArray(tf.float32, t)))
        return tf.transpose(outputs.stack(), [1, 0, 2])

    np.testing.assert_allclose(decode_loop(x).numpy(), expected, atol=1e-5)


def test_read_only_cache_equals_attention_over_the_cached_inputs():
    rng = np.random.RandomState(5)
    q, memory = random(rng, 2, 3, 4), random(rng, 2, 5, 6)
    layer = MultiHeadAttention(2, 3)
    expected = layer(q, memory).numpy()
    keys, values = layer.project_cache(memory)
    np.testing.assert_array_equal(
        keys.numpy(), layer._key_dense(memory).numpy().transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(
        values.numpy(), layer._value_dense(memory).numpy().transpose(0, 2, 1, 3))
    got, cache = layer(q, memory, cache=(keys, values))
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL)
    np.testing.assert_array_equal(cache[0].numpy(), keys.numpy())
    with pytest.raises(ValueError, match="built for value depth 6, got value of shape"):
        layer.project_cache(memory[..., :4])
    with pytest.raises(ValueError, match="project_cache needs a built layer"):
        MultiHeadAttention(2, 3).project_cache(memory)


def test_update_cache_writes_the_window_only():
    cache = tf.zeros([1, 1, 5, 1])  # (B, H, S_max, d)
    new = tf.constant([[[[1.0], [2.0]]]])
    got = update_cache(cache, new, 2).numpy().ravel()
    np.testing.assert_array_equal(got, [0, 0, 1, 2, 0])
    # Two heads, two batch rows: the window is written on the length axis of every head.
    cache = tf.reshape(tf.range(40, dtype=tf.float32), [2, 2, 5, 2])
    new = -tf.reshape(tf.range(1, 9, dtype=tf.float32), [2, 2, 1, 2])
    want = cache.numpy().copy()
    want[:, :, 3:4] = new.numpy()
    np.testing.assert_array_equal(update_cache(cache, new, 3).numpy(), want)
    with pytest.raises(ValueError, match="cache_update_index 4 with 2 new positions.*5"):
        update_cache(tf.zeros([1, 1, 5, 1]), tf.ones([1, 1, 2, 1]), 4)
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 3\).*\(1, 1, 5, 1\)"):
        update_cache(tf.zeros([1, 1, 5, 1]), tf.zeros([1, 1, 2, 3]), 0)
    # A tensor index is checked when the graph runs.
    write = tf.function(update_cache)
    for index in (-1, 4):
        with pytest.raises(tf.errors.InvalidArgumentError, match="does not fit a cache"):
            write(tf.zeros([1, 1, 5, 1]), tf.ones([1, 1, 2, 1]), tf.constant(index))
    keys, values = empty_cache(3, 7, num_heads=2, key_dim=4, value_dim=5)
    assert keys.shape == (3, 2, 7, 4) and values.shape == (3, 2, 7, 5)
    with pytest.raises(ValueError, match="max_length must be a positive integer, got 0"):
        empty_cache(1, 0, 2, 4)


# -------------------------------------------------------------------- chunked and local
def test_chunked_impl_equals_full():
    rng = np.random.RandomState(6)
    q, v = random(rng, 2, 5, 6), random(rng, 2, 7, 6)
    mask = random_mask(rng, 2, 5, 7)
    full = MultiHeadAttention(2, 3)
    chunked = MultiHeadAttention(2, 3, attention_impl="chunked", chunk_size=2)
    full(q, v)
    chunked(q, v)
    chunked.set_weights(full.get_weights())
    for kwargs in ({}, {"attention_mask": mask}, {"causal": True}):
        np.testing.assert_allclose(chunked(q, v, **kwargs).numpy(),
                                   full(q, v, **kwargs).numpy(), atol=ATOL)


@pytest.mark.parametrize("causal", [False, True])
def test_local_impl_equals_full_with_band_mask(causal):
    rng = np.random.RandomState(7)
    x = random(rng, 2, 6, 4)
    full = MultiHeadAttention(2, 3)
    local = MultiHeadAttention(2, 3, attention_impl="local", window=2)
    full(x, x)
    local(x, x)
    local.set_weights(full.get_weights())
    band = reference.band(6, window=2, causal=causal)
    np.testing.assert_allclose(local(x, x, causal=causal).numpy(),
                               full(x, x, attention_mask=band).numpy(), atol=ATOL)


def test_local_impl_cached_decoding_equals_one_shot():
    rng = np.random.RandomState(8)
    x = random(rng, 1, 5, 4)
    layer = MultiHeadAttention(2, 3, attention_impl="local", window=1)
    layer(x, x)
    band = reference.band(5, window=1, causal=True)
    full = MultiHeadAttention(2, 3)
    full(x, x)
    full.set_weights(layer.get_weights())
    got, _ = decode_with_cache(layer, x, prefill=2, max_length=6)
    np.testing.assert_allclose(got, full(x, x, attention_mask=band).numpy(), atol=ATOL)


# -------------------------------------------------------------------------- shared check
def test_check_layer_cross_attention(tmp_path):
    rng = np.random.RandomState(9)
    # Positional [query, value]: check_fit_step rebuilds the model from `model.inputs`,
    # which drops dict keys, so dict inputs cannot be fed to its fit() step.
    inputs = [random(rng, 2, 3, 4), random(rng, 2, 5, 6)]
    check_layer(MultiHeadAttention, {"num_heads": 2, "key_dim": 3, "value_dim": 2,
                                     "output_shape": 5},
                inputs, tmp_path, expected_output_shape=(2, 3, 5))


def test_check_layer_causal_self_attention_with_scores(tmp_path):
    x = np.random.RandomState(10).normal(size=(2, 4, 6)).astype("float32")
    check_layer(MultiHeadAttention, {"num_heads": 2, "key_dim": 3, "use_bias": False},
                [x, x], tmp_path,
                call_kwargs={"causal": True, "return_attention_scores": True},
                expected_output_shape=(2, 4, 6))


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_heads": 0}, ValueError, "num_heads must be a positive integer, got 0"),
    ({"num_heads": -2}, ValueError, "num_heads must be a positive integer, got -2"),
    ({"num_heads": 2.0}, ValueError, "num_heads must be a positive integer, got 2.0"),
    ({"num_heads": "2"}, ValueError, "num_heads must be a positive integer, got '2'"),
    ({"key_dim": 0}, ValueError, "key_dim must be a positive integer, got 0"),
    ({"key_dim": None}, ValueError, "key_dim must be a positive integer, got None"),
    ({"value_dim": -1}, ValueError, "value_dim must be a positive integer, got -1"),
    ({"output_dim": 0}, ValueError, "output_dim must be a positive integer, got 0"),
    ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    ({"dropout": -0.1}, ValueError, r"dropout must be in \[0, 1\), got -0.1"),
    ({"attention_impl": "flash"}, ValueError, "attention_impl must be one of.*'flash'"),
    ({"attention_impl": "local"}, ValueError, "needs a window.*window=None"),
    ({"attention_impl": "local", "window": 0}, ValueError, "window must be a positive.*0"),
    ({"attention_impl": "chunked", "chunk_size": -4}, ValueError, "chunk_size.*-4"),
    ({"attention_impl": "chunked", "dropout": 0.1}, ValueError, "dropout=0.1.*'chunked'"),
    ({"use_bias": "no"}, TypeError, "use_bias must be a bool, got 'no'"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = dict({"num_heads": 2, "key_dim": 3}, **kwargs)
    with pytest.raises(error, match=match):
        MultiHeadAttention(**arguments)


def test_bad_call_inputs():
    layer = MultiHeadAttention(2, 3)
    with pytest.raises(ValueError, match=r"query of shape \(B, length, depth\).*\(2, 4\)"):
        layer(tf.ones([2, 4]), tf.ones([2, 3, 4]))
    layer(tf.ones([1, 2, 4]), tf.ones([1, 3, 5]))
    with pytest.raises(ValueError, match=r"built for query depth 4.*\(1, 2, 6\)"):
        layer(tf.ones([1, 2, 6]), tf.ones([1, 3, 5]))
    with pytest.raises(ValueError, match=r"built for value depth 5.*\(1, 3, 7\)"):
        layer(tf.ones([1, 2, 4]), tf.ones([1, 3, 7]))
    with pytest.raises(ValueError, match=r"built for key depth 5.*\(1, 3, 2\)"):
        layer(tf.ones([1, 2, 4]), tf.ones([1, 3, 5]), tf.ones([1, 3, 2]))
    with pytest.raises(TypeError, match="query must be a floating-point tensor, got dtype int32"):
        layer(tf.ones([1, 2, 4], tf.int32), tf.ones([1, 3, 5]))
    with pytest.raises(ValueError, match=r"mask of shape \(1, 1, 4, 4\).*\(1, 2, 2, 3\)"):
        layer(tf.ones([1, 2, 4]), tf.ones([1, 3, 5]), attention_mask=tf.ones([1, 4, 4]))
    with pytest.raises(ValueError, match="cache_update_index=0 was given without a cache"):
        layer(tf.ones([1, 2, 4]), tf.ones([1, 3, 5]), cache_update_index=0)


def test_bad_cache_arguments():
    layer = MultiHeadAttention(2, 3)
    x = tf.ones([1, 2, 4])
    with pytest.raises(ValueError, match=r"key_cache must have shape \(B, 2, S_max, 3\), "
                                         r"got \(1, 5, 2, 3\)"):
        layer(x, x, cache=(tf.zeros([1, 5, 2, 3]), tf.zeros([1, 2, 5, 3])),
              cache_update_index=0)
    with pytest.raises(ValueError, match="cache must be a pair.*Tensor"):
        layer(x, x, cache=tf.zeros([1, 2, 5, 3]), cache_update_index=0)
    with pytest.raises(ValueError, match="cache_update_index 4 with 2 new positions.*5"):
        layer(x, x, cache=layer.init_cache(1, 5), cache_update_index=4)


def test_scores_are_refused_by_local_attention():
    layer = MultiHeadAttention(2, 3, attention_impl="local", window=1)
    x = tf.ones([1, 3, 4])
    with pytest.raises(ValueError, match="return_attention_scores=True needs.*'local'"):
        layer(x, x, return_attention_scores=True)


def test_local_attention_needs_equal_query_and_value_lengths():
    layer = MultiHeadAttention(2, 3, attention_impl="local", window=1)
    with pytest.raises(ValueError, match=r"same length.*\(1, 3, 4\).*\(1, 5, 4\)"):
        layer(tf.ones([1, 3, 4]), tf.ones([1, 5, 4]))


def test_chunked_impl_cached_decoding_equals_one_shot_full():
    rng = np.random.RandomState(11)
    x = random(rng, 2, 5, 4)
    layer = MultiHeadAttention(2, 3, attention_impl="chunked", chunk_size=2)
    full = MultiHeadAttention(2, 3)
    layer(x, x)
    full(x, x)
    full.set_weights(layer.get_weights())
    got, _ = decode_with_cache(layer, x, prefill=3, max_length=7)
    np.testing.assert_allclose(got, full(x, x, causal=True).numpy(), atol=ATOL)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_self_attention_matches_keras_forward_and_gradients(use_bias, causal):
    # One tensor as query, key and value takes the fused-projection path.
    x = tf.constant(np.random.RandomState(3).normal(size=(2, 5, 6)).astype("float32"))
    ref = tf.keras.layers.MultiHeadAttention(2, 3, use_bias=use_bias,
                                             bias_initializer="random_normal")
    layer = MultiHeadAttention(2, 3, use_bias=use_bias)
    ref(x, x)
    layer(x, x)
    layer.set_weights(ref.get_weights())
    mask = np.tril(np.ones((5, 5), bool))[None] if causal else None

    def run(mha, **kwargs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = mha(x, x, **kwargs)
            loss = tf.reduce_sum(out * tf.range(1.0, 7.0))
        return out, tape.gradient(loss, [x] + mha.trainable_variables)

    expected, expected_grads = run(ref, attention_mask=mask)
    out, grads = run(layer, causal=causal)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=2e-5)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5)


def forward_and_gradients(mha, query, value, upstream, **kwargs):
    with tf.GradientTape() as tape:
        tape.watch([query, value])
        out = mha(query, value, **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        loss = tf.reduce_sum(out * upstream)
    sources = [query] if query is value else [query, value]
    return out, tape.gradient(loss, sources + mha.trainable_variables)


@pytest.mark.parametrize("self_attention", [True, False])
@pytest.mark.parametrize("scores", [False, True])
def test_masked_attention_gradients_match_keras(self_attention, scores):
    # Without the scores the attention has its own gradient (any mask); with them, or with
    # separate query and value tensors (unfused projections), the results are the same.
    rng = np.random.RandomState(11)
    x = tf.constant(random(rng, 2, 5, 6))
    value = x if self_attention else tf.constant(random(rng, 2, 4, 6))
    upstream = tf.constant(random(rng, 2, 5, 6))
    mask = random_mask(rng, 2, 5, value.shape[1])
    ref, layer = keras_pair(3, 2, seed=4)
    ref(x, value)
    layer(x, value)
    layer.set_weights(ref.get_weights())
    expected, expected_grads = forward_and_gradients(ref, x, value, upstream,
                                                     attention_mask=mask)
    out, grads = forward_and_gradients(layer, x, value, upstream, attention_mask=mask,
                                       return_attention_scores=scores)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=ATOL)
    assert len(grads) == len(expected_grads)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL)


def test_attention_gradients_in_tf_function_with_unknown_batch_and_length():
    rng = np.random.RandomState(12)
    x = tf.constant(random(rng, 3, 7, 8))
    upstream = tf.constant(random(rng, 3, 7, 8))
    ref, layer = keras_pair(2, 4, seed=5)
    ref(x, x)
    layer(x, x)
    layer.set_weights(ref.get_weights())
    spec = tf.TensorSpec([None, None, 8], tf.float32)
    step = tf.function(lambda x, up: forward_and_gradients(layer, x, x, up, causal=True),
                       input_signature=[spec, spec])
    out, grads = step(x, upstream)
    expected, expected_grads = forward_and_gradients(
        ref, x, x, upstream, attention_mask=np.tril(np.ones((7, 7), bool))[None])
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=ATOL)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL)


def _numpy_mha_with_bias(layer, x, bias):
    """Independent float64 MultiHeadAttention self-attention with an additive score bias,
    from the layer's projection weights."""
    w = {v.name.split("/")[-2] + "/" + v.name.split("/")[-1].split(":")[0]: v.numpy()
         .astype(np.float64) for v in layer.weights}
    q = np.einsum("btd,dhk->bhtk", x, w["query/kernel"]) + w["query/bias"][None, :, None]
    k = np.einsum("btd,dhk->bhtk", x, w["key/kernel"]) + w["key/bias"][None, :, None]
    v = np.einsum("btd,dhk->bhtk", x, w["value/kernel"]) + w["value/bias"][None, :, None]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + bias
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhtv,hvd->btd", weights @ v, w["attention_output/kernel"])
    return out + w["attention_output/bias"], weights


@pytest.mark.parametrize("impl, options", [
    ("full", {}), ("full_exp", {}), ("chunked", {"chunk_size": 2}),
    ("chunked_exp", {"chunk_size": 2}), ("local", {"window": 5})])
@pytest.mark.parametrize("bias_shape", [(2, 1, 1, 5), (1, 2, 5, 5), (2, 5, 5)])
def test_attention_bias_reaches_every_kernel_and_gets_a_gradient(impl, options, bias_shape):
    rng = np.random.RandomState(21)
    x = rng.normal(size=(2, 5, 4))
    layer = MultiHeadAttention(2, 3, attention_impl=impl, dtype="float64", **options)
    layer(x, x)
    bias = tf.Variable(rng.normal(size=bias_shape) * 2.0)
    with tf.GradientTape() as tape:
        out = layer(x, x, attention_bias=bias)
        loss = tf.reduce_sum(out ** 2)
    aligned = bias.numpy()[:, None] if len(bias_shape) == 3 else bias.numpy()
    want, _ = _numpy_mha_with_bias(layer, x, aligned)
    # (The float64 layer and NumPy differ by a few 1e-9 without any bias too.)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-7)
    grad = tape.gradient(loss, bias)
    assert grad.shape == bias_shape
    # The gradient of sum(out^2) by the bias, by central differences of the NumPy reference.
    flat = bias.numpy().reshape(-1)
    for index in (0, flat.size // 2, flat.size - 1):
        shifted = []
        for step in (1e-6, -1e-6):
            b = flat.copy()
            b[index] += step
            b = b.reshape(bias_shape)
            out_b, _ = _numpy_mha_with_bias(layer, x, b[:, None] if len(bias_shape) == 3 else b)
            shifted.append(np.sum(out_b ** 2))
        np.testing.assert_allclose(grad.numpy().reshape(-1)[index],
                                   (shifted[0] - shifted[1]) / 2e-6, rtol=1e-5, atol=1e-7)


def test_attention_bias_with_scores_dropout_and_cache():
    rng = np.random.RandomState(22)
    x = rng.normal(size=(1, 4, 4))
    layer = MultiHeadAttention(2, 3, dtype="float64")
    layer(x, x)
    bias = rng.normal(size=(1, 1, 1, 4))
    out, scores = layer(x, x, attention_bias=bias, return_attention_scores=True)
    want_out, want_scores = _numpy_mha_with_bias(layer, x, bias)
    np.testing.assert_allclose(out.numpy(), want_out, atol=1e-7)
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=1e-7)
    # A cached decoding step over the whole (empty-padded) cache takes a bias of its length.
    cache = layer.init_cache(1, 4)
    step, _ = layer(x[:, :1], x[:, :1], cache=cache, cache_update_index=0,
                    attention_bias=bias)
    assert step.shape == (1, 1, 4)


def test_attention_bias_is_refused_where_it_cannot_apply():
    layer = MultiHeadAttention(2, 3, attention_axes=(1, 2))
    x = tf.zeros([1, 3, 3, 4])
    with pytest.raises(ValueError, match=r"attention_bias needs \(B, T, D\) inputs"):
        layer(x, x, attention_bias=tf.zeros([1, 1, 1, 9]))
    layer = MultiHeadAttention(2, 3)
    x = tf.zeros([1, 3, 4])
    with pytest.raises(TypeError, match="attention bias must be a floating-point tensor"):
        layer(x, x, attention_bias=tf.ones([1, 3, 3], tf.bool))
    with pytest.raises(ValueError, match="attention bias of shape .* does not broadcast"):
        layer(x, x, attention_bias=tf.zeros([1, 1, 1, 4]))
