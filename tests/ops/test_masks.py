import numpy as np
import pytest
import tensorflow as tf

from attnlab.ops.masks import align_mask, band_mask, causal_mask, combine_masks, padding_mask
from tests import reference


def test_padding_mask_marks_real_tokens_and_broadcasts_over_queries():
    ids = np.array([[4, 9, 0, 0], [3, 0, 5, 7]])
    got = padding_mask(ids).numpy()
    assert got.shape == (2, 1, 4)
    np.testing.assert_array_equal(got[:, 0], ids != 0)
    np.testing.assert_array_equal(padding_mask(ids, pad_id=7).numpy()[:, 0], ids != 7)


@pytest.mark.parametrize("t,s,offset", [(4, 4, 0), (3, 6, 3), (1, 9, 8), (5, 3, 0), (2, 5, -1)])
def test_causal_mask_matches_reference(t, s, offset):
    np.testing.assert_array_equal(causal_mask(t, s, offset).numpy(),
                                  reference.causal(t, s, offset))


@pytest.mark.parametrize("window,causal", [(1, False), (2, True), (0, False), (10, True)])
def test_band_mask_matches_reference(window, causal):
    np.testing.assert_array_equal(band_mask(7, 7, window, causal).numpy(),
                                  reference.band(7, 7, window, causal))


def test_combine_masks_is_logical_and_with_broadcasting():
    pad = padding_mask([[1, 2, 0]])
    got = combine_masks(pad, causal_mask(3), None).numpy()
    expected = reference.causal(3)[None] & np.array([True, True, False])[None, None, :]
    np.testing.assert_array_equal(got, expected)
    assert combine_masks(None, None) is None
    np.testing.assert_array_equal(combine_masks(np.array([[1, 0]])).numpy(), [[True, False]])


def test_combine_masks_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        combine_masks(tf.ones([2, 3], tf.bool), tf.ones([4, 5], tf.bool))


def test_align_mask_adds_head_axis_for_rank3_mask_and_leading_axes_for_rank2():
    scores = tf.TensorShape([2, 4, 3, 5])
    assert align_mask(tf.ones([2, 3, 5], tf.bool), scores).shape == (2, 1, 3, 5)
    assert align_mask(tf.ones([3, 5], tf.bool), scores).shape == (1, 1, 3, 5)
    assert align_mask(tf.ones([2, 1, 1, 5], tf.bool), scores).shape == (2, 1, 1, 5)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 5, 5), (5,), (3, 2, 3, 5)])
def test_align_mask_rejects_masks_that_do_not_fit_the_scores(shape):
    with pytest.raises(ValueError, match=r"mask of shape \(%s" % shape[0]):
        align_mask(tf.ones(shape, tf.bool), tf.TensorShape([2, 4, 3, 5]))


def test_padding_mask_rejects_float_ids_and_wrong_rank():
    with pytest.raises(TypeError, match="float32"):
        padding_mask(tf.zeros([2, 3]))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        padding_mask(tf.zeros([2, 3, 4], tf.int32))


def test_causal_mask_rejects_negative_length():
    with pytest.raises(ValueError, match="query_length.*-1"):
        causal_mask(-1)
