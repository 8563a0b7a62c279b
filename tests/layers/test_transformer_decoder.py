import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.transformer_decoder import TransformerDecoderBlock
from tests.layers.layer_checks import check_layer

ATOL = 5e-5


def copy(keras_layer, source, shape):
    keras_layer.build(shape)
    keras_layer.set_weights(source.get_weights())
    return keras_layer


def keras_decoder(block, x, memory=None, decoder_mask=None, encoder_mask=None):
    """The block rebuilt from tf.keras layers carrying the block's weights."""
    b, t, depth = x.shape
    key_dim = depth // block.num_heads
    eps = block.layer_norm_epsilon

    def mha(source, query, value):
        layer = tf.keras.layers.MultiHeadAttention(block.num_heads, key_dim)
        layer(query, value)
        layer.set_weights(source.get_weights())
        return layer

    self_mha = mha(block.self_attention, x, x)
    norm1 = copy(tf.keras.layers.LayerNormalization(epsilon=eps), block.self_attention_norm,
                 x.shape)
    norm3 = copy(tf.keras.layers.LayerNormalization(epsilon=eps), block.feedforward_norm,
                 x.shape)
    dense1 = copy(tf.keras.layers.Dense(block.intermediate_dim, activation=block.activation),
                  block.feedforward_intermediate, x.shape)
    dense2 = copy(tf.keras.layers.Dense(depth), block.feedforward_output,
                  (b, t, block.intermediate_dim))
    self_mask = np.tril(np.ones((b, t, t), bool))  # causal (use_causal_mask is Keras 2.10+)
    if decoder_mask is not None:
        self_mask = self_mask & decoder_mask[:, None, :]
    scores = {}

    def sublayer(h, norm, attend):
        if block.norm_first:
            return h + attend(norm(h))
        return norm(h + attend(h))

    def self_attend(h):
        out, scores["self"] = self_mha(h, h, attention_mask=self_mask,
                                       return_attention_scores=True)
        return out

    h = sublayer(x, norm1, self_attend)
    if memory is not None:
        cross_mha = mha(block.cross_attention, x, memory)
        norm2 = copy(tf.keras.layers.LayerNormalization(epsilon=eps),
                     block.cross_attention_norm, x.shape)
        cross_mask = None if encoder_mask is None else encoder_mask[:, None, :]

        def cross_attend(h):
            out, scores["cross"] = cross_mha(h, memory, attention_mask=cross_mask,
                                             return_attention_scores=True)
            return out

        h = sublayer(h, norm2, cross_attend)
    out = sublayer(h, norm3, lambda h: dense2(dense1(h)))
    return out.numpy(), {name: s.numpy() for name, s in scores.items()}


@settings(max_examples=10)
@given(norm_first=st.booleans(), cross=st.booleans(), heads=st.sampled_from([1, 2]),
       t=st.integers(1, 4), s=st.integers(1, 5), masked=st.booleans(),
       seed=st.integers(0, 500))
def test_matches_keras_composition(norm_first, cross, heads, t, s, masked, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(2, t, 6)).astype("float32")
    memory = rng.normal(size=(2, s, 6)).astype("float32") if cross else None
    decoder_mask = encoder_mask = None
    if masked:
        # Keep key 0 visible: Keras spreads rows without keys uniformly, attnlab zeros them.
        decoder_mask = rng.rand(2, t) > 0.4
        decoder_mask[:, 0] = True
        encoder_mask = rng.rand(2, s) > 0.4
        encoder_mask[:, 0] = True
    block = TransformerDecoderBlock(heads, 10, norm_first=norm_first, use_cross_attention=cross,
                                    bias_initializer="random_normal")
    out, scores = block(x, memory, mask=decoder_mask,
                        encoder_mask=encoder_mask if cross else None,
                        return_attention_scores=True)
    expected, expected_scores = keras_decoder(block, x, memory, decoder_mask, encoder_mask)
    np.testing.assert_allclose(out.numpy(), expected, atol=ATOL, rtol=ATOL)
    assert sorted(scores) == sorted(expected_scores)
    for name in scores:
        np.testing.assert_allclose(scores[name].numpy(), expected_scores[name], atol=ATOL,
                                   rtol=ATOL)


def test_encoder_keras_mask_is_used_for_cross_attention():
    rng = np.random.RandomState(1)
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    source_ids = np.array([[1, 2, 0, 0], [3, 4, 5, 0]])
    embedding = tf.keras.layers.Embedding(8, 6, mask_zero=True)
    block = TransformerDecoderBlock(2, 10, bias_initializer="random_normal")
    xi = tf.keras.Input((3, 6))
    si = tf.keras.Input((4,), dtype="int32")
    model = tf.keras.Model([xi, si], block(xi, embedding(si)))
    expected, _ = keras_decoder(block, x, embedding(source_ids).numpy(),
                                encoder_mask=source_ids != 0)
    np.testing.assert_allclose(model([x, source_ids]).numpy(), expected, atol=ATOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_equals_one_shot(norm_first):
    rng = np.random.RandomState(2)
    t = 5
    x = tf.constant(rng.normal(size=(2, t, 6)).astype("float32"))
    memory = tf.constant(rng.normal(size=(2, 4, 6)).astype("float32"))
    encoder_mask = np.array([[True, True, True, False], [True, True, False, False]])
    block = TransformerDecoderBlock(3, 10, norm_first=norm_first,
                                    bias_initializer="random_normal")
    expected = block(x, memory, encoder_mask=encoder_mask).numpy()
    cache = block.init_cache(2, t + 2)
    outputs = []
    out, cache = block(x[:, :2], memory, encoder_mask=encoder_mask,
                       self_attention_cache=cache, cache_update_index=0)
    outputs.append(out)

    @tf.function
    def step(token, cache, index):
        return block(token, memory, encoder_mask=encoder_mask, self_attention_cache=cache,
                     cache_update_index=index)

    for i in range(2, t):
        out, cache = step(x[:, i:i + 1], cache, tf.constant(i))
        outputs.append(out)
    np.testing.assert_allclose(tf.concat(outputs, 1).numpy(), expected, atol=1e-5)
    assert cache[0].shape == (2, 3, t + 2, 2)  # (B, H, S_max, dk)


@pytest.mark.parametrize("return_scores", [False, True])
def test_precomputed_cross_attention_equals_projecting_the_encoder_output(return_scores):
    rng = np.random.RandomState(3)
    x = tf.constant(rng.normal(size=(2, 3, 6)).astype("float32"))
    memory = tf.constant(rng.normal(size=(2, 4, 6)).astype("float32"))
    encoder_mask = np.array([[True, True, True, False], [True, True, False, False]])
    block = TransformerDecoderBlock(3, 10, bias_initializer="random_normal")
    expected = block(x, memory, encoder_mask=encoder_mask,
                     return_attention_scores=return_scores)
    cross = block.precompute_cross_attention(memory)
    assert [c.shape for c in cross] == [(2, 3, 4, 2)] * 2  # (B, H, S, dk)
    got = block(x, memory, encoder_mask=encoder_mask, cross_attention_cache=cross,
                return_attention_scores=return_scores)
    if return_scores:
        (expected, expected_scores), (got, got_scores) = expected, got
        for name in ("self", "cross"):
            np.testing.assert_allclose(got_scores[name].numpy(),
                                       expected_scores[name].numpy(), atol=1e-6)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_precompute_cross_attention_refuses_a_block_without_it():
    block = TransformerDecoderBlock(2, 8, use_cross_attention=False)
    block(tf.zeros([1, 2, 4]))
    with pytest.raises(ValueError, match="use_cross_attention=False"):
        block.precompute_cross_attention(tf.zeros([1, 3, 4]))


def test_cached_decoding_returns_scores_over_the_cache():
    x = tf.random.normal([1, 3, 4])
    block = TransformerDecoderBlock(2, 8, use_cross_attention=False)
    block(x)
    out, scores, cache = block(x[:, :1], self_attention_cache=block.init_cache(1, 3),
                               cache_update_index=0, return_attention_scores=True)
    assert scores["self"].shape == (1, 2, 1, 3)
    np.testing.assert_allclose(scores["self"].numpy()[..., 0], 1.0, atol=1e-6)
    np.testing.assert_array_equal(scores["self"].numpy()[..., 1:], 0.0)


def test_causality_future_tokens_do_not_change_the_past():
    rng = np.random.RandomState(3)
    x = rng.normal(size=(1, 4, 4)).astype("float32")
    changed = x.copy()
    changed[:, 3] += 5.0
    block = TransformerDecoderBlock(2, 8, use_cross_attention=False)
    np.testing.assert_allclose(block(x).numpy()[:, :3], block(changed).numpy()[:, :3],
                               atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_check_layer(tmp_path, norm_first):
    rng = np.random.RandomState(4)
    inputs = [rng.normal(size=(2, 3, 4)).astype("float32"),
              rng.normal(size=(2, 5, 4)).astype("float32")]
    check_layer(TransformerDecoderBlock,
                {"num_heads": 2, "intermediate_dim": 8, "norm_first": norm_first}, inputs,
                tmp_path, expected_output_shape=(2, 3, 4))


def test_check_layer_decoder_only(tmp_path):
    x = np.random.RandomState(5).normal(size=(2, 3, 4)).astype("float32")
    check_layer(TransformerDecoderBlock,
                {"num_heads": 2, "intermediate_dim": 8, "use_cross_attention": False}, x,
                tmp_path, expected_output_shape=(2, 3, 4))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_heads": -1}, ValueError, "num_heads must be a positive integer, got -1"),
    ({"intermediate_dim": 0}, ValueError, "intermediate_dim must be a positive.*0"),
    ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    ({"norm_first": 1}, TypeError, "norm_first must be a bool, got 1"),
    ({"use_cross_attention": "no"}, TypeError, "use_cross_attention must be a bool.*'no'"),
    ({"activation": "nope"}, ValueError, "activation 'nope'"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = dict({"num_heads": 2, "intermediate_dim": 8}, **kwargs)
    with pytest.raises(error, match=match):
        TransformerDecoderBlock(**arguments)


def test_bad_inputs():
    x = tf.ones([1, 2, 4])
    with pytest.raises(ValueError, match="D=4 is not divisible by num_heads=3"):
        TransformerDecoderBlock(3, 8)(x, x)
    with pytest.raises(ValueError, match="pass encoder_output"):
        TransformerDecoderBlock(2, 8)(x)
    with pytest.raises(ValueError, match="use_cross_attention=False but got an encoder_output"):
        TransformerDecoderBlock(2, 8, use_cross_attention=False)(x, x)
    with pytest.raises(ValueError, match=r"built for value depth 4.*\(1, 3, 6\)"):
        TransformerDecoderBlock(2, 8)(x, tf.ones([1, 3, 6]))
    with pytest.raises(ValueError, match="init_cache needs a built block"):
        TransformerDecoderBlock(2, 8).init_cache(1, 4)
