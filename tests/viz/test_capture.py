"""capture_attention against the weights the layers return when called directly."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.viz.capture import attention_layers, capture_attention, recording_attention


def _keras_model(t=5, d=8):
    inputs = tf.keras.Input((t, d))
    mask = tf.keras.Input((t, t), dtype=tf.bool)
    first = tf.keras.layers.MultiHeadAttention(2, 4, name="mha_a")
    second = tf.keras.layers.MultiHeadAttention(3, 4, name="mha_b")
    x = first(inputs, inputs)
    x = tf.keras.layers.LayerNormalization(name="norm")(x + inputs)
    y = second(x, x, attention_mask=mask)
    out = tf.keras.layers.Dense(2)(y)
    return tf.keras.Model([inputs, mask], out), first, second


def _batch(b=2, t=5, d=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(b, t, d)).astype(np.float32)
    mask = np.tril(np.ones((t, t), bool))[None].repeat(b, 0)
    mask[1, :, 3:] = False
    return x, mask


def test_keras_mha_model_matches_direct_calls():
    model, first, second = _keras_model()
    x, mask = _batch()
    expected_output = model([x, mask]).numpy()
    captured = capture_attention(model, [x, mask], query_tokens=list("abcde"))
    assert list(captured.weights) == ["mha_a", "mha_b"]
    # Reference: call each layer directly with return_attention_scores=True.
    _, want_a = first(x, x, return_attention_scores=True)
    hidden = tf.keras.Model(model.inputs, model.get_layer("norm").output)([x, mask])
    _, want_b = second(hidden, hidden, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(captured.weights["mha_a"], want_a.numpy(), atol=1e-6)
    np.testing.assert_allclose(captured.weights["mha_b"], want_b.numpy(), atol=1e-6)
    assert captured.weights["mha_b"].shape == (2, 3, 5, 5)
    assert captured.weights["mha_b"][1, :, :, 3:].max() == 0.0  # the mask was applied
    assert captured.query_tokens == [list("abcde")] * 2 and captured.step is None
    # The model is untouched: same output, no instance attribute left on the layers.
    np.testing.assert_allclose(model([x, mask]).numpy(), expected_output, atol=1e-6)
    assert "call" not in vars(first) and "call" not in vars(second)


class _Block(tf.keras.layers.Layer):
    """A user layer that owns a Keras MHA and calls it with return_attention_scores."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = tf.keras.layers.MultiHeadAttention(2, 4, name="inner")

    def call(self, x):
        out, scores = self.attention(x, x, return_attention_scores=True)
        return out + 0.0 * tf.reduce_sum(scores)


def test_nested_and_shared_layers_and_scores_the_model_asked_for():
    block = _Block(name="block")
    shared = tf.keras.layers.MultiHeadAttention(1, 4, name="shared")
    inputs = tf.keras.Input((4, 8))
    x = block(inputs)
    x = shared(x, x)
    x = shared(x, x)
    model = tf.keras.Model(inputs, x)
    batch = np.random.default_rng(1).normal(size=(1, 4, 8)).astype(np.float32)
    assert list(attention_layers(model)) == ["block/inner", "shared"]
    captured = capture_attention(model, batch)
    assert list(captured.weights) == ["block/inner", "shared", "shared#2"]
    _, want = block.attention(batch, batch, return_attention_scores=True)
    np.testing.assert_allclose(captured.weights["block/inner"], want.numpy(), atol=1e-6)
    h1 = block(batch)
    h2, want1 = shared(h1, h1, return_attention_scores=True)
    _, want2 = shared(h2, h2, return_attention_scores=True)
    np.testing.assert_allclose(captured.weights["shared"], want1.numpy(), atol=1e-6)
    np.testing.assert_allclose(captured.weights["shared#2"], want2.numpy(), atol=1e-6)


def test_vocabulary_supplies_tokens():
    vocab = ["<pad>", "the", "cat", "sat"]
    ids = tf.keras.Input((3,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(4, 8)(ids)
    x = tf.keras.layers.MultiHeadAttention(2, 4)(x, x)
    model = tf.keras.Model(ids, x)
    captured = capture_attention(model, np.array([[1, 2, 3], [3, 0, 0]]), vocabulary=vocab)
    assert captured.query_tokens == [["the", "cat", "sat"], ["sat", "<pad>", "<pad>"]]
    assert captured.key_tokens == captured.query_tokens


def test_attnlab_layers_match_direct_calls():
    from attnlab.layers.custom_attention import CustomAttention
    from attnlab.layers.multi_head_attention import MultiHeadAttention
    from attnlab.layers.transformer_encoder import TransformerEncoderBlock

    inputs = tf.keras.Input((5, 8))
    encoder = TransformerEncoderBlock(num_heads=2, intermediate_dim=16, name="enc")
    mha = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    custom = CustomAttention(head_size=8, name="custom")
    x = encoder(inputs)
    y = mha(x, x)
    z = custom(y)
    model = tf.keras.Model(inputs, z)
    batch = np.random.default_rng(2).normal(size=(2, 5, 8)).astype(np.float32)
    expected_output = model(batch).numpy()
    captured = capture_attention(model, batch)
    names = list(captured.weights)
    assert names[1:] == ["mha", "custom"] and names[0].startswith("enc/")
    _, want_enc = encoder(batch, return_attention_scores=True)
    np.testing.assert_allclose(captured.weights[names[0]], want_enc["self"].numpy(), atol=1e-6)
    hidden = encoder(batch)
    out, want_mha = mha(hidden, hidden, return_attention_scores=True)
    np.testing.assert_allclose(captured.weights["mha"], want_mha.numpy(), atol=1e-6)
    # CustomAttention returns weights by a constructor flag: a twin with copied weights.
    twin = CustomAttention(head_size=8, return_weights=True)
    twin(out)
    twin.set_weights(custom.get_weights())
    _, want_custom = twin(out)
    np.testing.assert_allclose(captured.weights["custom"][:, 0], want_custom.numpy(),
                               atol=1e-6)
    assert captured.weights["custom"].shape == (2, 1, 5, 5)
    np.testing.assert_allclose(model(batch).numpy(), expected_output, atol=1e-6)
    assert custom.return_weights is False and "call" not in vars(custom)


def test_call_is_restored_after_an_error():
    model, first, _ = _keras_model()
    with pytest.raises(RuntimeError, match="boom"):
        with recording_attention(model):
            raise RuntimeError("boom")
    assert "call" not in vars(first)


def test_model_without_attention_is_named():
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))], name="plain")
    with pytest.raises(ValueError, match="'plain' has no attention layer"):
        capture_attention(model, np.ones((1, 3), np.float32))


def test_vocabulary_needs_integer_ids():
    model, _, _ = _keras_model()
    x, mask = _batch()
    with pytest.raises(ValueError, match=r"integer ids.*float32 shape \(2, 5, 8\)"):
        capture_attention(model, [x, mask], vocabulary=["a"])


def test_unknown_token_id_is_named():
    ids = tf.keras.Input((2,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(10, 8)(ids)
    model = tf.keras.Model(ids, tf.keras.layers.MultiHeadAttention(1, 4)(x, x))
    with pytest.raises(ValueError, match="token id 7"):
        capture_attention(model, np.array([[1, 7]]), vocabulary=["a", "b"])


def test_token_count_mismatch_is_named():
    model, _, _ = _keras_model()
    with pytest.raises(ValueError, match="query_tokens has 2 tokens.*length 5"):
        capture_attention(model, list(_batch()), query_tokens=["a", "b"])
