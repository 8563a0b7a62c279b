"""capture_attention(with_qk=True): queries and keys recomputed in float64 NumPy from the
layers' kernels and inputs, and softmax(scale * q_rot . k_rot + bias) == the weights."""
import pickle

import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers.adaptive_span import AdaptiveSpanAttention
from attnlab.layers.custom_attention import CustomAttention
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.layers.positional.relative_position_bias import RelativePositionBias
from attnlab.layers.transformer_encoder import TransformerEncoderBlock
from attnlab.viz.capture import capture_attention
from attnlab.viz.explorer_panel import explorer_frames
from attnlab.viz.query_key import QueryKeySnapshot, recording_query_key
from attnlab.viz.snapshots import AttentionSnapshot
from tests import reference

ROTARY = {"max_wavelength": 100, "scaling_factor": 1.0}


def rope(x, positions, max_wavelength=100.0):
    """float64 rotate-half RoPE of x (..., L, d) at `positions`, as a complex rotation."""
    half = x.shape[-1] // 2
    theta = max_wavelength ** (-2.0 * np.arange(half) / x.shape[-1])
    z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * np.outer(positions, theta))
    return np.concatenate([z.real, z.imag], axis=-1)


def project(dense, x):
    """(B, L, D) through an (D, H, d) EinsumDense, float64, heads first: (B, H, L, d)."""
    out = np.einsum("bld,dhk->bhlk", np.asarray(x, np.float64),
                    dense.kernel.numpy().astype(np.float64))
    if dense.bias is not None:
        out = out + dense.bias.numpy().astype(np.float64)[None, :, None]
    return out


def independent_softmax(logits, visible):
    logits = np.where(visible, logits, -np.inf)
    e = np.where(visible, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
    return e / e.sum(-1, keepdims=True)


class _Model(tf.keras.Model):
    """Rotary causal MHA with a relative position bias, a Transformer block, then a
    cross-attention MHA (value_dim != key_dim: the unfused projection) and a Keras MHA."""

    def __init__(self):
        super().__init__()
        self.relative = RelativePositionBias(2, num_buckets=8, max_distance=16,
                                             embeddings_initializer="random_normal")
        self.rotary = MultiHeadAttention(2, 4, rotary_embedding=ROTARY,
                                         bias_initializer="random_normal", name="rotary")
        self.block = TransformerEncoderBlock(2, 16, bias_initializer="random_normal",
                                             name="block")
        self.cross = MultiHeadAttention(2, 4, value_dim=3, name="cross")
        self.keras = tf.keras.layers.MultiHeadAttention(3, 2, name="keras",
                                                        bias_initializer="random_normal")
        self.calls = 0

    def call(self, inputs, return_hidden=False):
        self.calls += 1
        x, memory, memory_mask = inputs
        bias = self.relative(x)
        h1 = self.rotary(x, x, attention_bias=bias, causal=True)
        h2 = self.block(h1)
        h3 = self.cross(h2, memory, attention_mask=memory_mask[:, None, :])
        out = self.keras(h3, h3, attention_mask=np.tril(np.ones((5, 5), bool))[None])
        if return_hidden:
            return bias, h1, h2, h3
        return out


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    memory = rng.normal(size=(2, 6, 8)).astype("float32")
    memory_mask = np.ones((2, 6), bool)
    memory_mask[1, 4:] = False
    return x, memory, memory_mask


@pytest.fixture(scope="module")
def captured_model():
    model = _Model()
    inputs = _inputs()
    model(inputs)
    model.calls = 0
    captured = capture_attention(model, inputs, with_qk=True)
    return model, inputs, captured


def test_one_forward_pass_records_every_multi_head_layer(captured_model):
    model, _, captured = captured_model
    assert model.calls == 1
    assert isinstance(captured, QueryKeySnapshot) and isinstance(captured, AttentionSnapshot)
    assert explorer_frames(captured) == ([captured], None)  # the explorer takes it as it is
    assert list(captured.query_key) == ["rotary", "block/self_attention", "cross", "keras"]
    assert list(captured.weights) == list(captured.query_key)
    # Nothing is left on the layers.
    assert model.rotary.query_key_recorder is None
    assert "_compute_attention" not in vars(model.keras) and "call" not in vars(model.keras)


def test_queries_and_keys_equal_the_kernels_applied_to_the_inputs(captured_model):
    model, (x, memory, memory_mask), captured = captured_model
    bias, h1, h2, _ = (t.numpy() for t in model((x, memory, memory_mask), return_hidden=True))
    cases = [("rotary", model.rotary, x, x), ("block/self_attention",
                                               model.block.self_attention, h1, h1),
             ("cross", model.cross, h2, memory)]
    for name, layer, query_input, key_input in cases:
        record = captured.query_key[name]
        q, k = project(layer._query_dense, query_input), project(layer._key_dense, key_input)
        np.testing.assert_allclose(record.query, q, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(record.key, k, atol=2e-5, err_msg=name)
        assert record.scale == 0.5
    rotary = captured.query_key["rotary"]
    assert rotary.rotated and not captured.query_key["cross"].rotated
    np.testing.assert_allclose(rotary.query_rotated, rope(rotary.query, np.arange(5)),
                               atol=1e-5)
    np.testing.assert_allclose(rotary.key_rotated, rope(rotary.key, np.arange(5)), atol=1e-5)
    # The relative position bias is recorded apart from q.k, exactly as the layer made it.
    np.testing.assert_allclose(np.broadcast_to(rotary.bias, (2, 2, 5, 5)),
                               np.broadcast_to(bias, (2, 2, 5, 5)), atol=0)
    assert captured.query_key["cross"].bias is None
    np.testing.assert_array_equal(rotary.visible()[0, 0], reference.causal(5))
    np.testing.assert_array_equal(captured.query_key["cross"].visible()[:, 0, 0],
                                  memory_mask)


def test_softmax_of_scaled_dots_plus_bias_equals_the_captured_weights(captured_model):
    _, _, captured = captured_model
    for name, record in captured.query_key.items():
        q, k = (np.asarray(x, np.float64) for x in record.dotted())
        logits = record.scale * np.einsum("bhtd,bhsd->bhts", q, k)
        if record.bias is not None:
            logits = logits + record.bias
        np.testing.assert_allclose(record.logits(), logits, rtol=1e-12, atol=0)
        want = independent_softmax(logits, record.visible())
        np.testing.assert_allclose(want, captured.weights[name], atol=2e-6, err_msg=name)
        np.testing.assert_allclose(record.softmax(), captured.weights[name], atol=2e-6)


def test_keras_layer_queries_keys_and_mask(captured_model):
    model, inputs, captured = captured_model
    h3 = model(inputs, return_hidden=True)[3].numpy()
    record = captured.query_key["keras"]
    np.testing.assert_allclose(record.query, project(model.keras._query_dense, h3), atol=2e-5)
    np.testing.assert_allclose(record.key, project(model.keras._key_dense, h3), atol=2e-5)
    assert record.scale == pytest.approx(1 / np.sqrt(2)) and record.bias is None
    np.testing.assert_array_equal(record.visible()[1, 2], reference.causal(5))


def test_default_capture_keeps_its_type_and_weights(captured_model):
    model, inputs, captured = captured_model
    plain = capture_attention(model, inputs)
    assert type(plain) is AttentionSnapshot and not hasattr(plain, "query_key")
    for name in plain.weights:
        np.testing.assert_allclose(plain.weights[name], captured.weights[name], atol=1e-6)


def test_snapshot_pickles_and_replaces_with_its_records(captured_model):
    _, _, captured = captured_model
    again = pickle.loads(pickle.dumps(captured))
    assert isinstance(again, QueryKeySnapshot) and list(again.query_key) == list(
        captured.query_key)
    np.testing.assert_array_equal(again.query_key["rotary"].key_rotated,
                                  captured.query_key["rotary"].key_rotated)
    stepped = captured._replace(step=7)
    assert stepped.step == 7 and stepped.query_key is captured.query_key


def _graph_ops(layer, x):
    fn = tf.function(lambda a: layer(a, a, causal=True, return_attention_scores=True))
    return [op.type for op in fn.get_concrete_function(x).graph.get_operations()]


def test_graph_is_unchanged_after_capture_and_the_hook_is_what_adds_ops():
    x = tf.random.normal([2, 5, 8])
    layer = MultiHeadAttention(2, 4, rotary_embedding=ROTARY)
    inputs = tf.keras.Input((5, 8))
    model = tf.keras.Model(inputs, layer(inputs, inputs))
    before = _graph_ops(layer, x)
    capture_attention(model, x.numpy(), with_qk=True)
    assert _graph_ops(layer, x) == before
    # A recorder set while tracing puts its mask ops in the graph: the count above can see
    # a hook that is not cleared.
    object.__setattr__(layer, "query_key_recorder", lambda **tensors: None)
    try:
        assert len(_graph_ops(layer, x)) > len(before)
    finally:
        object.__setattr__(layer, "query_key_recorder", None)


class _Decoder(tf.keras.layers.Layer):
    """One cached decoding step of a rotary MHA (the layer writes position 2 of 4)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = MultiHeadAttention(2, 4, rotary_embedding=ROTARY, name="attention")

    def call(self, x):
        cache = self.attention.init_cache(2, 4)
        _, cache = self.attention(x[:, :2], x[:, :2], cache=cache, cache_update_index=0)
        out, _ = self.attention(x[:, 2:3], x[:, 2:3], cache=cache, cache_update_index=2)
        return out


def test_cached_steps_record_keys_before_and_after_rotation():
    x = np.random.default_rng(1).normal(size=(2, 3, 8)).astype("float32")
    inputs = tf.keras.Input((3, 8))
    decoder = _Decoder(name="decoder")
    model = tf.keras.Model(inputs, decoder(inputs))
    captured = capture_attention(model, x, with_qk=True)
    assert list(captured.query_key) == ["decoder/attention", "decoder/attention#2"]
    step = captured.query_key["decoder/attention#2"]
    keys = project(decoder.attention._key_dense, x)
    # Slots 0..2 hold the three tokens' keys, slot 3 is empty; rotating back recovers them.
    np.testing.assert_allclose(step.key[:, :, :3], keys, atol=2e-5)
    np.testing.assert_allclose(step.key[:, :, 3], 0.0, atol=0)
    np.testing.assert_allclose(step.key_rotated[:, :, :3], rope(keys, np.arange(3)),
                               atol=2e-5)
    np.testing.assert_allclose(step.query_rotated,
                               rope(project(decoder.attention._query_dense, x[:, 2:3]), [2]),
                               atol=2e-5)
    np.testing.assert_array_equal(step.visible()[0, 0, 0], [True, True, True, False])
    np.testing.assert_allclose(step.softmax(), captured.weights["decoder/attention#2"],
                               atol=2e-6)


def test_adaptive_span_records_its_span_as_bias_and_others_are_left_out():
    x = np.random.default_rng(2).normal(size=(1, 6, 8)).astype("float32")
    inputs = tf.keras.Input((6, 8))
    span = AdaptiveSpanAttention(2, 4, max_span=4, ramp=2, span_init=0.2, name="span")
    h = span(inputs, inputs)
    chunked = MultiHeadAttention(2, 4, attention_impl="chunked", chunk_size=2, name="chunked")
    h = chunked(h, h)
    out = CustomAttention(head_size=8, name="custom")(h)
    model = tf.keras.Model(inputs, out)
    captured = capture_attention(model, x, with_qk=True)
    assert list(captured.weights) == ["span", "custom"]  # chunked gives no weights
    assert list(captured.query_key) == ["span"]
    record = captured.query_key["span"]
    assert record.bias is not None and not record.visible().all()  # keys beyond the span
    np.testing.assert_allclose(record.softmax(), captured.weights["span"], atol=2e-6)


def test_with_qk_must_be_a_bool_and_recording_restores_after_an_error():
    model = _Model()
    inputs = _inputs()
    model(inputs)
    with pytest.raises(TypeError, match="with_qk must be a bool, got 1"):
        capture_attention(model, inputs, with_qk=1)
    with pytest.raises(RuntimeError, match="boom"):
        with recording_query_key(model):
            raise RuntimeError("boom")
    assert model.rotary.query_key_recorder is None
    assert "_compute_attention" not in vars(model.keras)


def test_a_recorder_of_the_user_keeps_receiving_calls():
    seen = []
    layer = MultiHeadAttention(2, 4)
    inputs = tf.keras.Input((3, 8))
    model = tf.keras.Model(inputs, layer(inputs, inputs))

    def users_recorder(**tensors):
        seen.append(sorted(tensors))

    layer.query_key_recorder = users_recorder
    captured = capture_attention(model, np.ones((1, 3, 8), np.float32), with_qk=True)
    assert len(captured.query_key) == 1
    assert seen == [["bias", "key", "key_unrotated", "mask", "scale", "scaled_query",
                     "scaled_query_unrotated"]]
    assert layer.query_key_recorder is users_recorder  # given back after the capture
