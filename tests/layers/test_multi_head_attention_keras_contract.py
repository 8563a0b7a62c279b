"""attnlab's MultiHeadAttention against tf.keras.layers.MultiHeadAttention, side by side.

The behaviours checked by Keras's own multi_head_attention_test.py (Keras 2.9 and 2.15) are
the checklist; every test here runs our layer and Keras's with the same weights and
compares outputs, scores, shapes, errors and configs. Where Keras 2.9 lacks a feature
(use_causal_mask, Keras masks, ragged inputs, compute_output_shape), the Keras side gets the
equivalent explicit mask or dense input, so the comparison holds on both TensorFlows.
"""
import inspect
import json

import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers import MultiHeadAttention
from tests import reference

KerasMHA = tf.keras.layers.MultiHeadAttention
KERAS_HAS_CAUSAL = "use_causal_mask" in inspect.signature(KerasMHA.call).parameters
KERAS_HAS_OUTPUT_SHAPE = "compute_output_shape" in vars(KerasMHA)
TF_VERSION = tuple(int(p) for p in tf.__version__.split(".")[:2])
SAVE_FORMATS = ["tf", "h5"] + (["keras"] if TF_VERSION >= (2, 13) else [])
ATOL = 2e-5


def normal(rng, *shape):
    return rng.normal(size=shape).astype("float32")


def pair(inputs, seed=0, **kwargs):
    """Keras's layer and ours with the same arguments, built on `inputs` (query, value[,
    key]), ours carrying Keras's weights."""
    tf.keras.utils.set_random_seed(seed)
    kwargs.setdefault("bias_initializer", "random_normal")
    keras_layer = KerasMHA(**kwargs)
    keras_layer(*inputs)
    ours = MultiHeadAttention(**kwargs)
    ours(*inputs)
    assert [w.shape for w in ours.weights] == [w.shape for w in keras_layer.weights]
    ours.set_weights(keras_layer.get_weights())
    return keras_layer, ours


def visible_somewhere(mask, key_axes):
    """`mask` with the first key position made visible to every query, so that no row is
    fully masked (where the two layers differ on purpose, see the test of that)."""
    mask = np.array(mask, dtype=bool)
    mask[(Ellipsis,) + (0,) * key_axes] = True
    return mask


def assert_close(ours, keras, atol=ATOL):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(keras), atol=atol, rtol=atol)


# ------------------------------------------------------------------- outputs and scores
@pytest.mark.parametrize("kwargs, query_shape, value_shape, key_shape", [
    (dict(num_heads=12, key_dim=8), (2, 6, 16), (2, 6, 16), None),
    (dict(num_heads=3, key_dim=4), (2, 5, 8), (2, 7, 8), None),
    (dict(num_heads=3, key_dim=4, value_dim=5, output_shape=6), (2, 5, 8), (2, 7, 8), None),
    (dict(num_heads=2, key_dim=4, value_dim=3, output_shape=[3, 2]), (2, 5, 8), (2, 4, 6),
     (2, 4, 5)),
    (dict(num_heads=2, key_dim=3, use_bias=False), (2, 3, 4), (2, 5, 6), None),
])
def test_outputs_scores_and_symbolic_shapes_match_keras(kwargs, query_shape, value_shape,
                                                        key_shape):
    rng = np.random.RandomState(0)
    inputs = [normal(rng, *query_shape), normal(rng, *value_shape)]
    if key_shape is not None:
        inputs.append(normal(rng, *key_shape))
    keras_layer, ours = pair(inputs, **kwargs)
    expected, expected_scores = keras_layer(*inputs, return_attention_scores=True)
    got, scores = ours(*inputs, return_attention_scores=True)
    assert got.shape == expected.shape and scores.shape == expected_scores.shape
    assert_close(got, expected)
    assert_close(scores, expected_scores)
    # Symbolic (functional) shapes, batch left free, as Keras's tests build them.
    symbolic = [tf.keras.Input(x.shape[1:]) for x in inputs]
    keras_symbolic = KerasMHA(**kwargs)(*symbolic, return_attention_scores=True)
    ours_symbolic = MultiHeadAttention(**kwargs)(*symbolic, return_attention_scores=True)
    assert [t.shape.as_list() for t in ours_symbolic] == \
        [t.shape.as_list() for t in keras_symbolic]


def test_self_attention_with_one_tensor_uses_the_fused_projection_and_matches_keras():
    x = normal(np.random.RandomState(1), 2, 6, 8)
    keras_layer, ours = pair([x, x], num_heads=2, key_dim=4)
    assert_close(ours(x, x), keras_layer(x, x))
    assert_close(ours(x, x, x), keras_layer(x, x, x))


@pytest.mark.parametrize("use_bias", [True, False])
def test_masked_attention_with_and_without_key_matches_keras(use_bias):
    rng = np.random.RandomState(2)
    q, v, k = normal(rng, 3, 4, 8), normal(rng, 3, 2, 8), normal(rng, 3, 2, 8)
    mask = visible_somewhere(rng.randint(2, size=(3, 4, 2)), 1)
    keras_layer, ours = pair([q, v, k], num_heads=2, key_dim=2, use_bias=use_bias)
    for inputs in ([q, v], [q, v, k]):
        masked = ours(*inputs, attention_mask=mask)
        assert_close(masked, keras_layer(*inputs, attention_mask=mask))
        assert not np.allclose(masked, ours(*inputs, attention_mask=np.ones((3, 4, 2))))
        out, scores = ours(*inputs, attention_mask=mask, return_attention_scores=True)
        expected, expected_scores = keras_layer(*inputs, attention_mask=mask,
                                                return_attention_scores=True)
        assert_close(out, expected)
        assert_close(scores, expected_scores)
        np.testing.assert_array_equal(scores.numpy()[np.broadcast_to(
            ~mask[:, None], scores.shape)], 0.0)
    # Keras's sublayers, under Keras's names: a kernel, and a bias only with use_bias.
    for name in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
        assert len(getattr(ours, name).trainable_variables) == \
            len(getattr(keras_layer, name).trainable_variables) == (2 if use_bias else 1)


def test_rows_with_no_visible_key_get_zero_weights_where_keras_spreads_them():
    rng = np.random.RandomState(3)
    q, v = normal(rng, 2, 3, 8), normal(rng, 2, 4, 8)
    keras_layer, ours = pair([q, v], num_heads=2, key_dim=4)
    mask = np.ones((2, 3, 4), bool)
    mask[0, 1] = False  # query 1 of example 0 sees nothing
    out, scores = ours(q, v, attention_mask=mask, return_attention_scores=True)
    expected, expected_scores = keras_layer(q, v, attention_mask=mask,
                                            return_attention_scores=True)
    np.testing.assert_array_equal(scores.numpy()[0, :, 1], 0.0)
    assert_close(expected_scores.numpy()[0, :, 1], np.full((2, 4), 0.25))
    # Its output is the output projection's bias alone; every other row equals Keras's.
    assert_close(out.numpy()[0, 1], ours._output_dense.bias.numpy())
    keep = np.ones((2, 3), bool)
    keep[0, 1] = False
    assert_close(out.numpy()[keep], expected.numpy()[keep])
    assert_close(scores.numpy().transpose(0, 2, 1, 3)[keep],
                 expected_scores.numpy().transpose(0, 2, 1, 3)[keep])


def test_initializers_are_cloned_per_projection_like_keras():
    initializer = tf.keras.initializers.TruncatedNormal(stddev=0.02)
    x = tf.ones([1, 4, 8])
    ours = MultiHeadAttention(num_heads=2, key_dim=8, kernel_initializer=initializer)
    ours(x, x)
    kernels = [getattr(ours, n).kernel.numpy() for n in ("_query_dense", "_key_dense",
                                                         "_value_dense")]
    assert not np.allclose(kernels[0], kernels[1])
    assert not np.allclose(kernels[0], kernels[2])
    assert not np.allclose(kernels[0], ours._output_dense.kernel.numpy().reshape(8, 2, 8))
    # A seeded initializer: every projection gets a clone with the same seed, and the
    # variables are drawn in Keras's order, so that ours are Keras's wherever Keras's own
    # seeded layers are reproducible (its initializers are stateless from Keras 2.10 on).
    seeded = tf.keras.initializers.GlorotUniform(seed=7)

    def seeded_weights(layer_class):
        tf.keras.utils.set_random_seed(3)
        layer = layer_class(num_heads=2, key_dim=8, kernel_initializer=seeded)
        layer(x, x)
        return layer.get_weights()

    keras_weights, again = seeded_weights(KerasMHA), seeded_weights(KerasMHA)
    if all(np.array_equal(a, b) for a, b in zip(keras_weights, again)):
        for got, want in zip(seeded_weights(MultiHeadAttention), keras_weights):
            np.testing.assert_array_equal(got, want)
    else:
        assert TF_VERSION < (2, 10), "Keras's seeded layers differ from run to run"


@pytest.mark.parametrize("dtype, atol", [("bfloat16", 5e-2), ("float16", 1e-2),
                                         ("float32", ATOL), ("float64", ATOL)])
def test_sublayer_dtypes_and_outputs_in_each_dtype_match_keras(dtype, atol):
    rng = np.random.RandomState(4)
    x = normal(rng, 2, 5, 8)
    keras_layer, _ = pair([x, x], num_heads=2, key_dim=4)
    ours = MultiHeadAttention(num_heads=2, key_dim=4, dtype=dtype)
    ours(tf.constant(x, dtype), tf.constant(x, dtype))
    ours.set_weights(keras_layer.get_weights())
    for name in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
        assert getattr(ours, name).dtype == dtype
    symbolic = KerasMHA(num_heads=2, key_dim=4, dtype=dtype)
    symbolic(tf.keras.Input((5, 8), dtype=dtype), tf.keras.Input((5, 8), dtype=dtype))
    if symbolic._query_dense.dtype == dtype:  # Keras >= 2.10 gives its sublayers the dtype
        assert all(getattr(ours, n).dtype == getattr(symbolic, n).dtype for n in
                   ("_query_dense", "_key_dense", "_value_dense", "_output_dense"))
    got = ours(tf.constant(x, dtype), tf.constant(x, dtype))
    assert got.dtype == dtype
    assert_close(tf.cast(got, tf.float32), keras_layer(x, x), atol=atol)


def test_dropout_in_training_only_with_keras_positional_arguments():
    from_data, to_data = tf.ones([32, 4, 8]), normal(np.random.RandomState(5), 32, 2, 8)
    keras_layer, ours = pair([from_data, to_data], num_heads=2, key_dim=2, dropout=0.5)
    # (query, value, key, attention_mask, return_attention_scores, training), as Keras's.
    train_out = ours(from_data, to_data, None, None, None, True)
    test_out = ours(from_data, to_data, None, None, None, False)
    assert_close(test_out, keras_layer(from_data, to_data, None, None, None, False))
    assert np.isfinite(train_out.numpy()).all()
    assert not np.allclose(train_out, test_out)


# -------------------------------------------------------------- attention over more axes
@pytest.mark.parametrize("q_dims, v_dims, mask_dims, attention_axes", [
    ([3, 4], [3, 2], [4, 2], (2,)),
    ([3, 4], [3, 2], [3, 4, 2], (2,)),
    ([3, 4], [3, 2], [3, 2, 4, 2], (2,)),
    ([3, 4], [3, 2], [3, 4, 3, 2], (1, 2)),
    ([5, 3, 4], [5, 3, 2], [3, 4, 3, 2], (2, 3)),
    ([5, 3, 4], [5, 3, 2], [5, 3, 4, 3, 2], (2, 3)),
    ([4, 3], [2, 3], [4, 2], (1,)),
    ([4, 3], [2, 3], None, (-3,)),
    ([3, 4], [3, 2], None, None),
])
def test_attention_axes_match_keras(q_dims, v_dims, mask_dims, attention_axes):
    rng = np.random.RandomState(6)
    q, v = normal(rng, *([3] + q_dims + [8])), normal(rng, *([3] + v_dims + [8]))
    keras_axes = attention_axes
    if attention_axes is not None and min(attention_axes) < 0:
        keras_axes = tuple(a + q.ndim for a in attention_axes)  # Keras needs them positive
    keras_layer = KerasMHA(num_heads=2, key_dim=2, attention_axes=keras_axes,
                           bias_initializer="random_normal")
    keras_layer(q, v)
    ours = MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=attention_axes)
    ours(q, v)
    ours.set_weights(keras_layer.get_weights())
    n_axes = len(keras_layer._attention_axes)
    mask = None
    if mask_dims is not None:
        mask = visible_somewhere(rng.randint(2, size=[3] + mask_dims), n_axes)
    got, scores = ours(q, v, attention_mask=mask, return_attention_scores=True)
    expected, expected_scores = keras_layer(q, v, attention_mask=mask,
                                            return_attention_scores=True)
    assert got.shape == expected.shape and scores.shape == expected_scores.shape
    assert_close(got, expected)
    assert_close(scores, expected_scores)
    if mask is not None:
        assert not np.allclose(got, ours(q, v, attention_mask=np.ones_like(mask)))
    # The same in a functional model with a free batch size.
    inputs = [tf.keras.Input(q.shape[1:]), tf.keras.Input(v.shape[1:])]
    assert ours(*inputs).shape.as_list() == keras_layer(*inputs).shape.as_list()


def test_two_dimensional_self_attention_over_images_equals_flattened_attention():
    """2-D attention over (B, rows, cols, C) is attention over the rows * cols positions."""
    rng = np.random.RandomState(7)
    images = normal(rng, 2, 3, 4, 6)
    layer = MultiHeadAttention(num_heads=2, key_dim=3, attention_axes=(1, 2))
    flat = MultiHeadAttention(num_heads=2, key_dim=3)
    got = layer(images, images)
    flat(images.reshape(2, 12, 6), images.reshape(2, 12, 6))
    flat.set_weights(layer.get_weights())
    assert_close(got.numpy().reshape(2, 12, 6),
                 flat(images.reshape(2, 12, 6), images.reshape(2, 12, 6)))


@pytest.mark.parametrize("impl", [dict(attention_impl="chunked", chunk_size=2),
                                  dict(attention_impl="local", window=1)])
def test_chunked_and_local_kernels_over_a_chosen_axis_match_full(impl):
    rng = np.random.RandomState(8)
    x = normal(rng, 2, 3, 5, 6)  # attention along axis 2, axis 1 independent
    full = MultiHeadAttention(num_heads=2, key_dim=3, attention_axes=2)
    other = MultiHeadAttention(num_heads=2, key_dim=3, attention_axes=2, **impl)
    expected = full(x, x)
    other(x, x)
    other.set_weights(full.get_weights())
    if impl["attention_impl"] == "local":
        expected = full(x, x, attention_mask=reference.band(5, window=1))
    assert_close(other(x, x), expected)


def test_bad_attention_axes_and_masks_are_named():
    x = tf.ones([2, 3, 4, 6])
    with pytest.raises(ValueError, match=r"attention_axes=\(3,\): axis 3 is not a position"):
        MultiHeadAttention(2, 3, attention_axes=3)(x, x)
    with pytest.raises(ValueError, match=r"attention_axes=\(0,\)"):
        MultiHeadAttention(2, 3, attention_axes=0)(x, x)
    with pytest.raises(ValueError, match="distinct axes"):
        MultiHeadAttention(2, 3, attention_axes=(1, 1))(x, x)
    with pytest.raises(TypeError, match="attention_axes must be an int or a sequence of ints"):
        MultiHeadAttention(2, 3, attention_axes="rows")
    layer = MultiHeadAttention(2, 3, attention_axes=(1, 2))
    with pytest.raises(ValueError, match=r"attention_mask of shape \(2, 5, 4, 3, 4\) does not "
                                         r"broadcast"):
        layer(x, x, attention_mask=np.ones((2, 5, 4, 3, 4), bool))
    with pytest.raises(ValueError, match="a causal mask needs one attention axis"):
        layer(x, x, use_causal_mask=True)
    with pytest.raises(ValueError, match=r"built for value of rank 4, got value of shape "
                                         r"\(2, 3, 6\)"):
        layer(x, tf.ones([2, 3, 6]))
    with pytest.raises(ValueError, match="a KV cache needs \\(B, T, D\\) inputs"):
        MultiHeadAttention(2, 3, attention_axes=2)(x, x, cache=(tf.zeros([2, 2, 4, 3]),) * 2)


# ------------------------------------------------------------------------ ragged inputs
def ragged(rows):
    return tf.ragged.constant(rows, inner_shape=(2,), dtype=tf.float32)


RAGGED_QUERY = [[[3.0, 1.0], [4.0, 1.0]], [[5.0, 9.0], [2.0, 6.0], [3.0, 1.0]], [[1.0, 2.0]]]
RAGGED_VALUE = [[[3.0, 1.0], [4.0, 1.0]], [[5.0, 9.0]], [[1.0, 2.0]]]
RAGGED_KEY = [[[3.0, 1.0], [4.0, 1.0]], [[5.0, 9.0], [2.0, 6.0], [3.0, 1.0], [1.0, 5.0]],
              [[1.0, 2.0]]]


@pytest.mark.parametrize("ragged_query", [True, False])
@pytest.mark.parametrize("ragged_value", [True, False])
@pytest.mark.parametrize("ragged_key", [True, False])
def test_ragged_inputs_equal_keras_on_the_padded_inputs_with_the_padding_masked(
        ragged_query, ragged_value, ragged_key):
    rng = np.random.RandomState(9)
    query = ragged(RAGGED_QUERY) if ragged_query else tf.constant(normal(rng, 3, 2, 2))
    value = ragged(RAGGED_VALUE) if ragged_value else tf.constant(normal(rng, 3, 4, 2))
    key = ragged(RAGGED_KEY) if ragged_key else tf.constant(normal(rng, 3, 4, 2))
    # The dense inputs Keras makes of them, and which keys are real (not padding).
    if ragged_value and ragged_key:
        shape = tf.maximum(value.bounding_shape(), key.bounding_shape())
    else:
        shape = tf.shape(key if ragged_value else value)
    real = np.ones((3, int(shape[1])), bool)
    dense = {}
    for name, x in (("value", value), ("key", key)):
        if isinstance(x, tf.RaggedTensor):
            lengths = x.row_lengths().numpy()
            real &= np.arange(real.shape[1])[None, :] < lengths[:, None]
            x = x.to_tensor(shape=shape)
        dense[name] = x
    dense_query = query.to_tensor() if ragged_query else query
    keras_layer, ours = pair([dense_query, dense["value"], dense["key"]], num_heads=5,
                             key_dim=2)
    got = ours(query, value, key)
    expected = keras_layer(dense_query, dense["value"], dense["key"],
                           attention_mask=np.broadcast_to(
                               real[:, None, :], (3, dense_query.shape[1], real.shape[1])))
    assert isinstance(got, tf.RaggedTensor) == ragged_query
    assert got.shape.as_list() == query.shape.as_list()
    if ragged_query:
        np.testing.assert_array_equal(got.row_lengths(), query.row_lengths())
        expected = tf.RaggedTensor.from_tensor(expected, lengths=query.row_lengths())
        got, expected = got.flat_values, expected.flat_values
    assert_close(got, expected)


def test_ragged_self_attention_with_use_causal_mask_equals_keras_with_explicit_masks():
    x = ragged(RAGGED_QUERY)
    dense = x.to_tensor()
    keras_layer, ours = pair([dense, dense], num_heads=5, key_dim=2)
    got = ours(x, x, x, use_causal_mask=True)
    lengths = x.row_lengths().numpy()
    real = np.arange(3)[None, :] < lengths[:, None]
    mask = reference.causal(3)[None] & real[:, None, :]
    expected = tf.RaggedTensor.from_tensor(keras_layer(dense, dense, attention_mask=mask),
                                           lengths=lengths)
    assert got.shape.as_list() == x.shape.as_list()
    assert_close(got.flat_values, expected.flat_values)


# -------------------------------------------------------------------- masks and causality
def embedded_inputs():
    query = tf.constant([[1, 2, 3, 0, 0], [3, 3, 1, 1, 2], [1, 0, 0, 0, 0]])
    value = tf.constant([[5, 4, 0], [3, 0, 0], [2, 1, 1]])
    tf.keras.utils.set_random_seed(10)
    masked_query = tf.keras.layers.Embedding(4, 8, mask_zero=True)(query)
    masked_value = tf.keras.layers.Embedding(6, 8, mask_zero=True)(value)
    return masked_query, masked_value


def test_the_query_mask_is_passed_on():
    masked_query, _ = embedded_inputs()
    layer = MultiHeadAttention(num_heads=2, key_dim=2)
    assert layer.supports_masking
    output = layer(query=masked_query, value=tf.random.normal((3, 3, 8)))
    np.testing.assert_array_equal(output._keras_mask, masked_query._keras_mask)


@pytest.mark.parametrize("use_causal_mask", [True, False])
def test_keras_masks_and_use_causal_mask_equal_the_manual_mask_and_keras(use_causal_mask):
    masked_query, masked_value = embedded_inputs()
    keras_layer, ours = pair([masked_query, masked_value], num_heads=2, key_dim=2)
    got = ours(query=masked_query, value=masked_value, use_causal_mask=use_causal_mask)
    mask = np.array([[[True, True, False]] * 3 + [[False, False, False]] * 2] +
                    [[[True, False, False]] * 5] +
                    [[[True, True, True]] + [[False, False, False]] * 4])
    if use_causal_mask:
        mask &= np.tril(np.ones((5, 3), bool))[None]
    plain_query, plain_value = tf.identity(masked_query), tf.identity(masked_value)
    assert getattr(plain_query, "_keras_mask", None) is None
    assert_close(got, ours(plain_query, plain_value, attention_mask=mask))
    # Keras, with the same manual mask; rows with no visible key are compared in the test of
    # that difference.
    real = mask.any(-1)
    expected = keras_layer(plain_query, plain_value, attention_mask=mask).numpy()
    assert_close(got.numpy()[real], expected[real])
    if KERAS_HAS_CAUSAL:  # Keras >= 2.10 reads the Keras masks and use_causal_mask itself
        expected = keras_layer(masked_query, masked_value, use_causal_mask=use_causal_mask)
        assert_close(got.numpy()[real], expected.numpy()[real])


def test_float_masks_are_read_as_booleans():
    masked_query, masked_value = embedded_inputs()
    layer = MultiHeadAttention(num_heads=2, key_dim=2)
    expected = layer(masked_query, masked_value, use_causal_mask=True)
    masked_query._keras_mask = tf.cast(masked_query._keras_mask, tf.float32)
    masked_value._keras_mask = tf.cast(masked_value._keras_mask, tf.float32)
    got = layer(query=masked_query, value=masked_value, use_causal_mask=True,
                attention_mask=tf.constant([[[1.0]]]))
    assert_close(got, expected)


@pytest.mark.parametrize("t, s", [(3, 5), (5, 3), (4, 4)])
def test_use_causal_mask_is_top_left_and_causal_is_bottom_right(t, s):
    rng = np.random.RandomState(11)
    q, v = normal(rng, 2, t, 6), normal(rng, 2, s, 6)
    keras_layer, ours = pair([q, v], num_heads=2, key_dim=3)
    top_left = np.tril(np.ones((t, s), bool))
    bottom_right = np.tril(np.ones((t, s), bool), k=s - t)
    expected = keras_layer(q, v, attention_mask=top_left).numpy()
    rows = top_left.any(-1)
    assert_close(ours(q, v, use_causal_mask=True).numpy()[:, rows], expected[:, rows])
    if KERAS_HAS_CAUSAL:
        assert_close(ours(q, v, use_causal_mask=True).numpy()[:, rows],
                     keras_layer(q, v, use_causal_mask=True).numpy()[:, rows])
    rows = bottom_right.any(-1)
    assert_close(ours(q, v, causal=True).numpy()[:, rows],
                 keras_layer(q, v, attention_mask=bottom_right).numpy()[:, rows])
    with pytest.raises(ValueError, match="give one of them"):
        ours(q, v, causal=True, use_causal_mask=True)


def test_use_causal_mask_on_the_chunked_kernel_equals_full():
    rng = np.random.RandomState(12)
    q, v = normal(rng, 2, 3, 6), normal(rng, 2, 5, 6)
    full = MultiHeadAttention(2, 3)
    chunked = MultiHeadAttention(2, 3, attention_impl="chunked", chunk_size=2)
    expected = full(q, v, use_causal_mask=True)
    chunked(q, v)
    chunked.set_weights(full.get_weights())
    assert_close(chunked(q, v, use_causal_mask=True), expected)


# ------------------------------------------------------------------ compute_output_shape
@pytest.mark.parametrize("query_dims, value_dims, key_dims, output_shape", [
    ([40, 80], [20, 80], None, None),
    ([40, 80], [20, 80], [20, 30], None),
    ([40, 80], [20, 80], None, [30, 40]),
    ([40, 80], [20, 80], [20, 30], [15, 50]),
    ([4, 2, 3, 8], [2, 2, 5, 8], [2, 2, 5, 4], None),
    ([4, 2, 3, 8], [2, 2, 5, 8], [2, 2, 5, 4], [3, 2]),
])
def test_compute_output_shape_equals_the_output_and_keras(query_dims, value_dims, key_dims,
                                                          output_shape):
    kwargs = dict(num_heads=2, key_dim=2, value_dim=2, output_shape=output_shape)
    layer = MultiHeadAttention(**kwargs)
    shapes = [[None] + query_dims, [None] + value_dims,
              None if key_dims is None else [None] + key_dims]
    inputs = [None if s is None else tf.keras.Input(s[1:]) for s in shapes]
    output = layer(query=inputs[0], value=inputs[1], key=inputs[2])
    computed = layer.compute_output_shape(*shapes)
    assert output.shape.as_list() == computed.as_list()
    if KERAS_HAS_OUTPUT_SHAPE:
        assert computed.as_list() == KerasMHA(**kwargs).compute_output_shape(*shapes).as_list()


def test_compute_output_shape_errors():
    layer = MultiHeadAttention(num_heads=4, key_dim=2, value_dim=2)
    for value_shape, key_shape in [((None, 20, 80), (None, 10, 70)),
                                   ((None, 10, 10, 50, 80), (None, 10, 15, 50, 20))]:
        with pytest.raises(ValueError, match="must be equal"):
            layer.compute_output_shape((None, 40, 80), value_shape, key_shape)
        if KERAS_HAS_OUTPUT_SHAPE:
            with pytest.raises(ValueError, match="must be equal"):
                KerasMHA(4, 2).compute_output_shape((None, 40, 80), value_shape, key_shape)
    # Query and value of different depths: the layer computes this (Keras's layer does too),
    # so attnlab's compute_output_shape answers where Keras's raises.
    assert layer.compute_output_shape((None, 40, 80), (None, 20, 70)).as_list() == \
        [None, 40, 80]
    assert layer(tf.ones([1, 40, 80]), tf.ones([1, 20, 70])).shape == (1, 40, 80)
    if KERAS_HAS_OUTPUT_SHAPE:
        with pytest.raises(ValueError, match="must be equal"):
            KerasMHA(4, 2).compute_output_shape((None, 40, 80), (None, 20, 70))


# ----------------------------------------------------------------------- subclass hooks
class ValueOnly(MultiHeadAttention):
    """Keras's test subclass: no attention at all, the values pass straight through."""

    def _build_attention(self, rank):
        self.built_attention_rank = rank

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        return value, None


class KerasValueOnly(KerasMHA):
    def _build_attention(self, rank):
        pass

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        return value, None


class Recording(MultiHeadAttention):
    """Calls the base `_compute_attention` and records what Keras's layout gave it."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        self.seen = (query.shape.as_list(), None if attention_mask is None
                     else attention_mask.shape.as_list())
        return super()._compute_attention(query, key, value, attention_mask, training)


def test_subclass_hooks_run_as_in_keras():
    rng = np.random.RandomState(13)
    q, v = normal(rng, 2, 4, 8), normal(rng, 2, 4, 8)
    ours = ValueOnly(num_heads=3, key_dim=4)
    out = ours(q, v)
    assert ours.built_attention_rank == 4
    keras_layer = KerasValueOnly(num_heads=3, key_dim=4)
    keras_layer(q, v)
    keras_layer.set_weights(ours.get_weights())
    assert_close(out, keras_layer(q, v))
    assert ValueOnly(num_heads=12, key_dim=64)(tf.keras.Input((40, 80)),
                                               tf.keras.Input((40, 80))).shape.as_list() == \
        [None, 40, 80]
    # A subclass calling the base hook: Keras's layout in, the plain layer's results out.
    mask = visible_somewhere(rng.randint(2, size=(2, 4, 4)), 1)
    recording = Recording(num_heads=3, key_dim=4)
    plain = MultiHeadAttention(num_heads=3, key_dim=4)
    got, scores = recording(q, v, attention_mask=mask, use_causal_mask=True,
                            return_attention_scores=True)
    assert recording.seen == ([2, 4, 3, 4], [2, 4, 4])
    plain(q, v)
    plain.set_weights(recording.get_weights())
    expected, expected_scores = plain(q, v, attention_mask=mask, use_causal_mask=True,
                                      return_attention_scores=True)
    assert_close(got, expected)
    assert_close(scores, expected_scores)


# ------------------------------------------------------------- configs and conversions
def plain_config(config):
    """A config as JSON would store it: tuples and TensorShapes as lists."""
    def default(obj):
        if isinstance(obj, tf.TensorShape):
            return obj.as_list()
        raise TypeError(type(obj))
    return json.loads(json.dumps(config, default=default))


KERAS_CONFIGS = [
    (dict(num_heads=2, key_dim=3), [(2, 4, 6), (2, 5, 6)]),
    (dict(num_heads=3, key_dim=2, value_dim=4, output_shape=[3, 2], use_bias=False,
          kernel_initializer="he_normal"), [(2, 4, 6), (2, 5, 7), (2, 5, 3)]),
    (dict(num_heads=2, key_dim=2, attention_axes=(2,), dropout=0.1), [(2, 3, 4, 5)] * 2),
]


@pytest.mark.parametrize("kwargs, shapes", KERAS_CONFIGS)
def test_keras_configs_and_layers_convert_both_ways(kwargs, shapes):
    rng = np.random.RandomState(14)
    inputs = [normal(rng, *s) for s in shapes]
    keras_layer = KerasMHA(bias_initializer="random_normal", **kwargs)
    expected = keras_layer(*inputs)
    keras_config = plain_config(keras_layer.get_config())
    # from_config of Keras's config: built, same variables; the same outputs once the
    # weights are copied.
    from_config = MultiHeadAttention.from_config(keras_layer.get_config())
    assert [("/".join(w.name.split("/")[-2:]), w.shape) for w in from_config.weights] == \
        [("/".join(w.name.split("/")[-2:]), w.shape) for w in keras_layer.weights]
    from_config.set_weights(keras_layer.get_weights())
    assert_close(from_config(*inputs), expected)
    ours_config = plain_config(from_config.get_config())
    assert {k: ours_config.pop(k) for k in ("attention_impl", "window", "chunk_size",
                                            "rotary_embedding")} == \
        {"attention_impl": "auto", "window": None, "chunk_size": None, "rotary_embedding": None}
    assert ours_config == keras_config
    # from_keras copies the weights too; to_keras goes back.
    converted = MultiHeadAttention.from_keras(keras_layer)
    assert_close(converted(*inputs), expected)
    back = converted.to_keras()
    assert type(back) is KerasMHA
    assert plain_config(back.get_config()) == keras_config
    assert_close(back(*inputs), expected)


def test_from_keras_with_attnlab_options_and_unbuilt_layers():
    rng = np.random.RandomState(15)
    q, v = normal(rng, 2, 6, 8), normal(rng, 2, 9, 8)
    keras_layer = KerasMHA(num_heads=2, key_dim=4)
    expected = keras_layer(q, v)
    chunked = MultiHeadAttention.from_keras(keras_layer, attention_impl="chunked",
                                            chunk_size=4)
    assert chunked.attention_impl == "chunked"
    assert_close(chunked(q, v), expected)
    unbuilt = MultiHeadAttention.from_keras(KerasMHA(num_heads=2, key_dim=4))
    assert not unbuilt.weights
    assert not MultiHeadAttention(2, 4).to_keras().weights
    # Created without a build, as Keras's test does: no variables, then a normal call.
    config = MultiHeadAttention(num_heads=3, key_dim=4, value_dim=4).get_config()
    again = MultiHeadAttention.from_config(config)
    assert not again.weights and again(q, v).shape == (2, 6, 8)
    with pytest.raises(TypeError, match="expects a tf.keras.layers.MultiHeadAttention, got "
                                        "MultiHeadAttention"):
        MultiHeadAttention.from_keras(again)
    with pytest.raises(TypeError, match="accepts only attention_impl, window, chunk_size, "
                                        "rotary_embedding as options, got num_heads"):
        MultiHeadAttention.from_keras(keras_layer, num_heads=4)


def test_configs_with_the_former_output_dim_still_load():
    layer = MultiHeadAttention.from_config({"num_heads": 2, "key_dim": 3, "output_dim": 5,
                                            "name": "old"})
    assert layer(tf.ones([1, 2, 4]), tf.ones([1, 3, 4])).shape == (1, 2, 5)
    assert layer.get_config()["output_shape"] == 5 and "output_dim" not in layer.get_config()
    with pytest.raises(ValueError, match="not both"):
        MultiHeadAttention(2, 3, output_shape=4, output_dim=4)
    with pytest.raises(ValueError, match=r"output_shape must be a positive integer or a "
                                         r"non-empty sequence.*\[3, 0\]"):
        MultiHeadAttention(2, 3, output_shape=[3, 0])


# ------------------------------------------------------------------------------ KV cache
def test_cache_filled_token_by_token_equals_the_projection_of_the_whole_sequence():
    """As KerasNLP's cached attention is tested: token by token with the cache gives the
    one-shot output and the one-shot cache."""
    rng = np.random.RandomState(16)
    x = normal(rng, 2, 5, 6)
    layer = MultiHeadAttention(num_heads=2, key_dim=3, bias_initializer="random_normal")
    expected = layer(x, x, use_causal_mask=True)
    cache = layer.init_cache(2, 5)
    outputs = []
    for i in range(5):
        out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], cache=cache, cache_update_index=i)
        outputs.append(out)
    assert_close(tf.concat(outputs, axis=1), expected)
    for got, want in zip(cache, layer.project_cache(x)):
        assert_close(got, want)


# --------------------------------------------------- a tf.keras model with the import swapped
class TokenAndPositionEmbedding(tf.keras.layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
        self.token_emb = tf.keras.layers.Embedding(vocab_size, embed_dim)
        self.pos_emb = tf.keras.layers.Embedding(maxlen, embed_dim)

    def call(self, x):
        positions = tf.range(start=0, limit=tf.shape(x)[-1], delta=1)
        return self.token_emb(x) + self.pos_emb(positions)

    def get_config(self):
        return dict(super().get_config(), maxlen=self.maxlen, vocab_size=self.vocab_size,
                    embed_dim=self.embed_dim)


ATTENTION_CLASSES = {"keras": KerasMHA, "attnlab": MultiHeadAttention}


class TransformerBlock(tf.keras.layers.Layer):
    """A post-norm Transformer block, written for tf.keras's MultiHeadAttention; `attention`
    names the class its import gives ("keras" or "attnlab")."""

    def __init__(self, attention="keras", embed_dim=16, num_heads=2, ff_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.attention = attention
        self.embed_dim, self.num_heads, self.ff_dim = embed_dim, num_heads, ff_dim
        self.att = ATTENTION_CLASSES[attention](num_heads=num_heads, key_dim=embed_dim)
        self.ffn = tf.keras.Sequential([tf.keras.layers.Dense(ff_dim, activation="relu"),
                                        tf.keras.layers.Dense(embed_dim)])
        self.norm1 = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.norm2 = tf.keras.layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape):
        # As Keras's docstring asks of layers that hold a MultiHeadAttention: create its
        # variables in build, so that a SavedModel load finds them.
        self.att._build_from_signature(input_shape, input_shape)
        super().build(input_shape)

    def call(self, inputs):
        out1 = self.norm1(inputs + self.att(inputs, inputs))
        return self.norm2(out1 + self.ffn(out1))

    def get_config(self):
        return dict(super().get_config(), attention=self.attention, embed_dim=self.embed_dim,
                    num_heads=self.num_heads, ff_dim=self.ff_dim)


def text_classifier(attention, maxlen=8, vocab=20):
    inputs = tf.keras.Input(shape=(maxlen,), dtype="int32")
    x = TokenAndPositionEmbedding(maxlen, vocab, 16)(inputs)
    x = TransformerBlock(attention)(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    outputs = tf.keras.layers.Dense(2)(x)
    return tf.keras.Model(inputs, outputs)


def test_a_tf_keras_model_runs_trains_and_saves_with_the_import_swapped(tmp_path):
    rng = np.random.RandomState(17)
    tokens = rng.randint(0, 20, size=(16, 8)).astype("int32")
    labels = rng.randint(0, 2, size=(16,)).astype("int32")
    keras_model, ours_model = text_classifier("keras"), text_classifier("attnlab")
    assert [w.shape for w in ours_model.weights] == [w.shape for w in keras_model.weights]
    ours_model.set_weights(keras_model.get_weights())
    assert_close(ours_model.predict(tokens, verbose=0), keras_model.predict(tokens, verbose=0),
                 atol=1e-4)
    for model in (keras_model, ours_model):
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(tokens, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for got, want in zip(ours_model.get_weights(), keras_model.get_weights()):
        assert_close(got, want, atol=1e-4)
    expected = ours_model.predict(tokens, verbose=0)
    custom = {"TokenAndPositionEmbedding": TokenAndPositionEmbedding,
              "TransformerBlock": TransformerBlock}
    for save_format in SAVE_FORMATS:
        path = str(tmp_path / ("model." + save_format))
        ours_model.save(path, save_format=None if save_format == "keras" else save_format)
        with tf.keras.utils.custom_object_scope(custom):
            restored = tf.keras.models.load_model(path)
        assert_close(restored.predict(tokens, verbose=0), expected, atol=1e-6)


class AttentionModel(tf.keras.Model):
    """Keras's subclassed saving test model, on attnlab's layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = MultiHeadAttention(num_heads=3, key_dim=4, value_dim=4,
                                            use_bias=True, dropout=0.0, output_shape=[12])

    def build(self, input_shape):
        # Without this, a SavedModel load loses the attention's variables, tf.keras's layer's
        # as ours: they are created by the first call (Keras's docstring asks for this).
        self.attention._build_from_signature(input_shape, input_shape)
        super().build(input_shape)

    def call(self, x, training=False):
        return self.attention(x, x, training=training)

    def get_config(self):
        return {}


@pytest.mark.parametrize("save_format", [f for f in SAVE_FORMATS if f != "h5"])
def test_subclassed_model_round_trip(tmp_path, save_format):
    model = AttentionModel()
    x = normal(np.random.RandomState(18), 2, 40, 80)
    expected = model(x)
    path = str(tmp_path / ("model." + save_format))
    model.save(path, save_format=None if save_format == "keras" else save_format)
    with tf.keras.utils.custom_object_scope({"AttentionModel": AttentionModel}):
        restored = tf.keras.models.load_model(path)
    assert len(restored.trainable_variables) == len(model.trainable_variables) == 8
    for got, want in zip(restored.trainable_variables, model.trainable_variables):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert_close(restored(x), expected, atol=1e-6)
