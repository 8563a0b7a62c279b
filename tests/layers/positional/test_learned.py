import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.positional.learned import LearnedPositionEmbedding
from tests.layers.layer_checks import check_layer


@settings(max_examples=10)
@given(length=st.integers(1, 5), start=st.integers(0, 5))
def test_returns_table_rows_for_positions(length, start):
    layer = LearnedPositionEmbedding(max_length=10)
    x = tf.zeros([2, length, 3])
    got = layer(x, start_index=start).numpy()
    table = layer.embeddings.numpy().astype(np.float64)
    expected = np.broadcast_to(table[start:start + length], (2, length, 3))
    np.testing.assert_array_equal(got, expected)


def test_cached_steps_match_full_call():
    layer = LearnedPositionEmbedding(max_length=5, initializer="random_normal")
    full = layer(tf.zeros([1, 5, 4])).numpy()
    steps = [layer(tf.zeros([1, 1, 4]), start_index=t).numpy()[0, 0] for t in range(5)]
    np.testing.assert_array_equal(np.stack(steps), full[0])


def test_table_is_trainable_and_sized_from_input():
    layer = LearnedPositionEmbedding(max_length=7)
    layer(tf.zeros([1, 2, 5]))
    assert layer.trainable_weights[0].shape == (7, 5)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 6)).astype("float32")
    check_layer(LearnedPositionEmbedding, {"max_length": 8, "initializer": "random_normal"}, x,
                tmp_path, call_kwargs={"start_index": 2}, expected_output_shape=(2, 4, 6))


def test_too_long_input_is_a_clear_error_in_eager():
    layer = LearnedPositionEmbedding(max_length=4)
    with pytest.raises(ValueError, match=r"sequence length 5 needs 5 positions, more than "
                                         r"max_length=4"):
        layer(tf.zeros([1, 5, 2]))
    with pytest.raises(ValueError, match=r"start_index=3 plus sequence length 2"):
        layer(tf.zeros([1, 2, 2]), start_index=tf.constant(3))


def test_too_long_input_fails_assertion_in_graph():
    layer = LearnedPositionEmbedding(max_length=4)
    fn = tf.function(lambda x, s: layer(x, start_index=s),
                     input_signature=[tf.TensorSpec([None, None, 2]), tf.TensorSpec([], tf.int32)])
    assert fn(tf.zeros([1, 2, 2]), tf.constant(2)).shape == (1, 2, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="exceeds max_length=4"):
        fn(tf.zeros([1, 2, 2]), tf.constant(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="start_index must be >= 0"):
        fn(tf.zeros([1, 2, 2]), tf.constant(-1))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"max_length must be a positive integer, got 2\.5"):
        LearnedPositionEmbedding(max_length=2.5)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, None\)"):
        LearnedPositionEmbedding(max_length=4).build(tf.TensorShape([2, 3, None]))
