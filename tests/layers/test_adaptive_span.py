import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers.adaptive_span import AdaptiveSpanAttention
from tests import reference
from tests.layers.layer_checks import check_layer


def weights64(layer, projection, name):
    return np.asarray(getattr(getattr(layer, "_%s_dense" % projection), name).numpy(),
                      np.float64)


def paper_mask(spans, ramp, t, s, offset):
    """m_z(x) = clamp((R + z - x) / R, 0, 1) per head, (H, T, S), x = |query pos - key pos|."""
    distance = np.abs((np.arange(t) + offset)[:, None] - np.arange(s)[None, :])
    return np.clip((ramp + np.asarray(spans)[:, None, None] - distance[None]) / ramp, 0.0, 1.0)


def reference_attention(layer, query, value, spans, ramp, mask, offset, bias=None):
    """The paper's form in float64: softmax weights (masked), times the span mask,
    renormalised; per-head projections in and out. Returns (output, weights (B, H, T, S))."""
    q, v = np.asarray(query, np.float64), np.asarray(value, np.float64)
    t, s = q.shape[1], v.shape[1]
    span = paper_mask(spans, ramp, t, s, offset)
    outputs, all_weights = [], []
    for h in range(layer.num_heads):
        qh = q @ weights64(layer, "query", "kernel")[:, h] + weights64(layer, "query", "bias")[h]
        kh = v @ weights64(layer, "key", "kernel")[:, h] + weights64(layer, "key", "bias")[h]
        vh = v @ weights64(layer, "value", "kernel")[:, h] + weights64(layer, "value", "bias")[h]
        if bias is None:
            _, weights = reference.attention(qh, kh, vh, mask=mask)
        else:
            # A score bias b: softmax(s + b) is softmax(s) times exp(b), renormalised.
            _, weights = reference.attention(qh, kh, vh, mask=mask)
            weights = weights * np.exp(np.asarray(bias, np.float64)[:, h])
        weights = weights * span[h]
        total = weights.sum(-1, keepdims=True)
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        outputs.append((weights @ vh) @ weights64(layer, "output", "kernel")[h])
        all_weights.append(weights)
    output = sum(outputs) + weights64(layer, "output", "bias")
    return output, np.stack(all_weights, axis=1)


def make_layer(fractions, **options):
    options = dict({"max_span": 6, "ramp": 2, "bias_initializer": "random_normal"}, **options)
    layer = AdaptiveSpanAttention(len(fractions), 3, **options)
    return layer, np.asarray(fractions)


def set_fractions(layer, fractions):
    layer.span_fraction.assign(np.asarray(fractions, np.float32))
    return layer.spans


@pytest.mark.parametrize("causal, t, s", [(True, 7, 7), (False, 7, 7), (True, 3, 8),
                                          (False, 5, 9)])
def test_matches_paper_multiply_and_renormalise(causal, t, s):
    rng = np.random.RandomState(t * s + causal)
    query = rng.normal(size=(2, t, 4)).astype("float32")
    value = query if t == s else rng.normal(size=(2, s, 4)).astype("float32")
    user_mask = rng.rand(2, t, s) > 0.2
    layer, fractions = make_layer([0.1, 0.45, 1.0])
    layer(query, value)
    spans = set_fractions(layer, fractions)
    np.testing.assert_allclose(spans, 6 * fractions, rtol=1e-6)
    output, weights = layer(query, value, attention_mask=user_mask, causal=causal,
                            return_attention_scores=True)
    mask = user_mask & reference.causal(t, s, offset=s - t) if causal else user_mask
    expected_output, expected_weights = reference_attention(
        layer, query, value, spans, 2.0, mask, offset=s - t)
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-6)
    np.testing.assert_allclose(output.numpy(), expected_output, atol=1e-5)
    # Keys beyond span + ramp get no weight at all.
    beyond = paper_mask(spans, 2.0, t, s, s - t) == 0.0
    assert np.all(weights.numpy()[np.broadcast_to(beyond[None], weights.shape)] == 0.0)


@pytest.mark.parametrize("attention_impl", ["full", "chunked", "local"])
def test_kernels_and_attention_bias_match_reference(attention_impl):
    rng = np.random.RandomState(3)
    x = rng.normal(size=(2, 9, 4)).astype("float32")
    bias = rng.normal(size=(2, 2, 9, 9)).astype("float32")
    options = {"attention_impl": attention_impl}
    if attention_impl == "chunked":
        options["chunk_size"] = 4
    if attention_impl == "local":
        options["window"] = 9  # covers the sequence: the span alone limits the context
    layer, fractions = make_layer([0.2, 0.6], **options)
    layer(x, x)
    spans = set_fractions(layer, fractions)
    got = layer(x, x, causal=True, attention_bias=bias).numpy()
    expected, _ = reference_attention(layer, x, x, spans, 2.0, reference.causal(9), 0,
                                      bias=bias)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_use_causal_mask_places_queries_from_zero():
    rng = np.random.RandomState(4)
    query, value = (rng.normal(size=(1, n, 4)).astype("float32") for n in (3, 6))
    layer, fractions = make_layer([0.0, 0.3])
    layer(query, value)
    spans = set_fractions(layer, fractions)
    _, weights = layer(query, value, use_causal_mask=True, return_attention_scores=True)
    _, expected = reference_attention(layer, query, value, spans, 2.0,
                                      reference.causal(3, 6, offset=0), offset=0)
    np.testing.assert_allclose(weights.numpy(), expected, atol=1e-6)


def test_kv_cache_token_by_token_equals_one_shot():
    rng = np.random.RandomState(5)
    x = rng.normal(size=(2, 8, 4)).astype("float32")
    layer, fractions = make_layer([0.15, 0.5])
    layer(x, x)
    set_fractions(layer, fractions)
    one_shot = layer(x, x, causal=True).numpy()
    cache = layer.init_cache(batch_size=2, max_length=8)
    steps = []
    for t in range(8):
        step = x[:, t:t + 1]
        out, cache = layer(step, step, cache=cache, cache_update_index=t)
        steps.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), one_shot, atol=1e-5)
    # A block of new tokens after cached ones: positions continue from the index.
    cache = layer.init_cache(batch_size=2, max_length=8)
    first, cache = layer(x[:, :5], x[:, :5], cache=cache, cache_update_index=0)
    rest, cache = layer(x[:, 5:], x[:, 5:], cache=cache, cache_update_index=5)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), one_shot, atol=1e-5)


def test_span_penalty_is_coefficient_times_mean_span():
    x = tf.zeros([1, 4, 4])
    layer, fractions = make_layer([0.25, 0.5, 1.0], span_penalty=0.01, max_span=40)
    layer(x, x)
    spans = set_fractions(layer, fractions)
    np.testing.assert_allclose(spans, [10.0, 20.0, 40.0])
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.01 * np.mean(spans), rtol=1e-6)
    inputs = tf.keras.Input((4, 4))
    model = tf.keras.Model(inputs, layer(inputs, inputs))
    np.testing.assert_allclose(float(tf.add_n(model.losses)), 0.01 * np.mean(spans),
                               rtol=1e-6)
    free, _ = make_layer([0.5], span_penalty=0.0)
    free(x, x)
    assert free.losses == []


def test_gradient_reaches_span_fractions():
    rng = np.random.RandomState(6)
    x = tf.constant(rng.normal(size=(2, 8, 4)).astype("float32"))
    layer, fractions = make_layer([0.2, 0.5], span_penalty=0.0)
    layer(x, x)
    set_fractions(layer, fractions)
    target = tf.constant(rng.normal(size=(2, 8, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((layer(x, x, causal=True) - target) ** 2)
    grad = tape.gradient(loss, layer.span_fraction)
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    assert np.all(grad.numpy() != 0.0)
    # The penalty alone: d/df of lambda * mean(max_span * f) is lambda * max_span / H.
    penalized, _ = make_layer([0.2, 0.5], span_penalty=0.1)
    penalized(x, x)
    with tf.GradientTape() as tape:
        penalty = tf.add_n(penalized.losses)
    np.testing.assert_allclose(tape.gradient(penalty, penalized.span_fraction).numpy(),
                               [0.1 * 6 / 2] * 2, rtol=1e-6)


def test_spans_are_readable_as_numpy():
    layer, _ = make_layer([1.0, 1.0], max_span=16, span_init=0.25)
    with pytest.raises(ValueError, match="no spans before it is built"):
        _ = layer.spans
    layer(tf.zeros([1, 3, 4]), tf.zeros([1, 3, 4]))
    spans = layer.spans
    assert isinstance(spans, np.ndarray) and spans.dtype == np.float64
    np.testing.assert_allclose(spans, [4.0, 4.0])
    assert layer.span_mask(1, 8).shape == (2, 1, 8)


def test_penalty_alone_shrinks_spans_and_constraint_keeps_them_in_range():
    rng = np.random.RandomState(7)
    x = rng.normal(size=(8, 6, 4)).astype("float32")
    layer = AdaptiveSpanAttention(2, 3, max_span=10, ramp=2, span_penalty=1.0)
    inputs = tf.keras.Input((6, 4))
    model = tf.keras.Model(inputs, layer(inputs, inputs, causal=True))
    optimizer = tf.keras.optimizers.SGD(0.05)
    history = [layer.spans]
    for _ in range(25):
        with tf.GradientTape() as tape:
            model(x)
            loss = tf.add_n(model.losses)
        variables = [layer.span_fraction]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        history.append(layer.spans)
    history = np.array(history)
    assert np.all(np.diff(history, axis=0) <= 0.0)
    assert np.all(history[-1] == 0.0), history[-1]   # clipped at 0, never below
    assert np.all(layer.span_fraction.numpy() >= 0.0)


def test_previous_token_task_shrinks_spans():
    """y_t = x_{t-1}: only the previous token matters, so the learned spans shrink."""
    tf.keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    x = rng.normal(size=(64, 10, 8)).astype("float32")
    y = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    layer = AdaptiveSpanAttention(1, 8, max_span=8, ramp=2, span_penalty=1e-3)
    inputs = tf.keras.Input((10, 8))
    model = tf.keras.Model(inputs, layer(inputs, inputs, causal=True))
    model.compile(tf.keras.optimizers.Adam(0.05), "mse")
    history = model.fit(x, y, epochs=50, batch_size=64, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
    assert layer.spans[0] < 2.0, layer.spans


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 5, 4)).astype("float32")
    check_layer(AdaptiveSpanAttention,
                {"num_heads": 2, "key_dim": 3, "max_span": 3, "ramp": 1.5, "span_init": 0.5,
                 "span_penalty": 0.01, "value_dim": 2, "kernel_regularizer": "l2"},
                [x, x], tmp_path, call_kwargs={"causal": True, "return_attention_scores": True},
                expected_output_shape=(2, 5, 4))


def test_config_is_multi_head_attention_config_plus_span_keys():
    layer = AdaptiveSpanAttention(2, 3, max_span=12, ramp=4, span_init=0.5,
                                  span_penalty=0.1, attention_impl="chunked", chunk_size=4)
    layer(tf.zeros([1, 3, 4]), tf.zeros([1, 3, 4]))
    config = layer.get_config()
    assert {k: config[k] for k in ("max_span", "ramp", "span_init", "span_penalty")} == {
        "max_span": 12, "ramp": 4, "span_init": 0.5, "span_penalty": 0.1}
    assert config["attention_impl"] == "chunked" and config["query_shape"] == [1, 3, 4]
    clone = AdaptiveSpanAttention.from_config(config)
    assert clone.get_config() == config and clone.span_fraction.shape == (2,)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="max_span must be a positive integer, got 0"):
        AdaptiveSpanAttention(2, 4, max_span=0)
    with pytest.raises(ValueError, match=r"max_span must be a positive integer, got 8\.0"):
        AdaptiveSpanAttention(2, 4, max_span=8.0)
    with pytest.raises(ValueError, match="ramp must be a number > 0, got 0"):
        AdaptiveSpanAttention(2, 4, max_span=8, ramp=0)
    with pytest.raises(ValueError, match=r"span_init must be a number in \[0, 1\], got 1\.5"):
        AdaptiveSpanAttention(2, 4, max_span=8, span_init=1.5)
    with pytest.raises(ValueError, match="span_penalty must be a number >= 0, got -1"):
        AdaptiveSpanAttention(2, 4, max_span=8, span_penalty=-1)
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        AdaptiveSpanAttention(0, 4, max_span=8)
    images = tf.zeros([1, 3, 3, 4])
    with pytest.raises(ValueError, match=r"needs sequences \(B, T, D\) with one attention "
                                         r"axis .* got query of shape \(1, 3, 3, 4\)"):
        AdaptiveSpanAttention(2, 4, max_span=8)(images, images)
