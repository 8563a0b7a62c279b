import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.transformer_encoder import TransformerEncoderBlock
from tests import reference
from tests.layers.layer_checks import check_layer

ATOL = 5e-5


def keras_encoder(block, x, key_mask=None, attention_mask=None):
    """The block rebuilt from tf.keras layers carrying the block's weights."""
    depth = x.shape[-1]
    mha = tf.keras.layers.MultiHeadAttention(block.num_heads, depth // block.num_heads)
    mha(x, x)
    mha.set_weights(block.self_attention.get_weights())
    norm1 = tf.keras.layers.LayerNormalization(epsilon=block.layer_norm_epsilon)
    norm2 = tf.keras.layers.LayerNormalization(epsilon=block.layer_norm_epsilon)
    dense1 = tf.keras.layers.Dense(block.intermediate_dim, activation=block.activation)
    dense2 = tf.keras.layers.Dense(depth)
    for layer, source, shape in ((norm1, block.self_attention_norm, x.shape),
                                 (norm2, block.feedforward_norm, x.shape),
                                 (dense1, block.feedforward_intermediate, x.shape),
                                 (dense2, block.feedforward_output,
                                  x.shape[:-1] + (block.intermediate_dim,))):
        layer.build(shape)
        layer.set_weights(source.get_weights())
    mask = np.ones((x.shape[0], x.shape[1], x.shape[1]), bool)
    if key_mask is not None:
        mask = mask & key_mask[:, None, :]
    if attention_mask is not None:
        mask = mask & attention_mask
    if block.norm_first:
        attended, scores = mha(norm1(x), norm1(x), attention_mask=mask,
                               return_attention_scores=True)
        h = x + attended
        out = h + dense2(dense1(norm2(h)))
    else:
        attended, scores = mha(x, x, attention_mask=mask, return_attention_scores=True)
        h = norm1(x + attended)
        out = norm2(h + dense2(dense1(h)))
    return out.numpy(), scores.numpy()


@settings(max_examples=10)
@given(norm_first=st.booleans(), heads=st.sampled_from([1, 2, 4]), t=st.integers(1, 5),
       masked=st.booleans(), activation=st.sampled_from(["relu", "gelu"]),
       seed=st.integers(0, 500))
def test_matches_keras_composition(norm_first, heads, t, masked, activation, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(2, t, 8)).astype("float32")
    key_mask = None
    if masked:
        key_mask = rng.rand(2, t) > 0.4
        key_mask[:, 0] = True  # Keras spreads rows without keys uniformly; attnlab zeros them
    block = TransformerEncoderBlock(heads, 12, norm_first=norm_first, activation=activation,
                                    bias_initializer="random_normal")
    out, scores = block(x, mask=key_mask, return_attention_scores=True)
    expected, expected_scores = keras_encoder(block, x, key_mask)
    np.testing.assert_allclose(out.numpy(), expected, atol=ATOL, rtol=ATOL)
    np.testing.assert_allclose(scores["self"].numpy(), expected_scores, atol=ATOL, rtol=ATOL)


def test_attention_mask_and_embedding_padding_mask():
    ids = np.array([[3, 4, 5, 0], [6, 1, 0, 0]])
    embedding = tf.keras.layers.Embedding(8, 6, mask_zero=True)
    block = TransformerEncoderBlock(3, 10, bias_initializer="random_normal")
    inputs = tf.keras.Input((4,), dtype="int32")
    attention_mask = reference.causal(4)
    out = block(embedding(inputs), attention_mask=attention_mask)
    model = tf.keras.Model(inputs, out)
    assert out._keras_mask is not None  # the padding mask goes on to the next layer
    expected, _ = keras_encoder(block, embedding(ids).numpy(), key_mask=ids != 0,
                                attention_mask=attention_mask)
    np.testing.assert_allclose(model(ids).numpy(), expected, atol=ATOL)


@pytest.mark.parametrize("impl, kwargs", [("chunked", {"chunk_size": 2}),
                                          ("local", {"window": 1})])
def test_chunked_and_local_attention_match_full(impl, kwargs):
    rng = np.random.RandomState(3)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    full = TransformerEncoderBlock(2, 12)
    other = TransformerEncoderBlock(2, 12, attention_impl=impl, **kwargs)
    full(x)
    other(x)
    other.set_weights(full.get_weights())
    mask = reference.band(5, window=1) if impl == "local" else None
    np.testing.assert_allclose(other(x).numpy(), full(x, attention_mask=mask).numpy(),
                               atol=ATOL)


def test_dropout_is_active_only_in_training():
    x = tf.random.normal([2, 4, 8])
    block = TransformerEncoderBlock(2, 12, dropout=0.5)
    np.testing.assert_allclose(block(x, training=False).numpy(), block(x).numpy())
    assert not np.allclose(block(x, training=True).numpy(), block(x).numpy())


@pytest.mark.parametrize("norm_first", [False, True])
def test_check_layer(tmp_path, norm_first):
    x = np.random.RandomState(0).normal(size=(2, 4, 8)).astype("float32")
    check_layer(TransformerEncoderBlock,
                {"num_heads": 2, "intermediate_dim": 16, "norm_first": norm_first,
                 "activation": "gelu"}, x, tmp_path, expected_output_shape=(2, 4, 8))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_heads": 0}, ValueError, "num_heads must be a positive integer, got 0"),
    ({"num_heads": 1.5}, ValueError, "num_heads must be a positive integer, got 1.5"),
    ({"intermediate_dim": -3}, ValueError, "intermediate_dim must be a positive.*-3"),
    ({"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\), got 1.5"),
    ({"norm_first": "yes"}, TypeError, "norm_first must be a bool, got 'yes'"),
    ({"layer_norm_epsilon": 0}, ValueError, "layer_norm_epsilon must be a positive.*0"),
    ({"activation": "nope"}, ValueError, "activation 'nope'"),
    ({"attention_impl": "sparse"}, ValueError, "attention_impl must be one of.*'sparse'"),
    ({"attention_impl": "local"}, ValueError, "needs a window.*window=None"),
    ({"attention_impl": "local", "window": -1}, ValueError, "window must be.*-1"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = dict({"num_heads": 2, "intermediate_dim": 8}, **kwargs)
    with pytest.raises(error, match=match):
        TransformerEncoderBlock(**arguments)


def test_bad_inputs():
    with pytest.raises(ValueError, match="D=10 is not divisible by num_heads=3"):
        TransformerEncoderBlock(3, 8)(tf.ones([1, 2, 10]))
    with pytest.raises(ValueError, match=r"\(B, T, D\).*\(2, 8\)"):
        TransformerEncoderBlock(2, 8)(tf.ones([2, 8]))
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor.*int32"):
        TransformerEncoderBlock(2, 8)(tf.ones([1, 2, 4], tf.int32))
