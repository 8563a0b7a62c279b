"""Word-piece merging against a plain loop over words, in float64."""
import numpy as np
import pytest

from attnlab.viz.subwords import merge_pieces, word_groups


def _softmax_rows(rng, shape):
    e = np.exp(rng.normal(size=shape))
    return e / e.sum(-1, keepdims=True)


def _reference(weights, query_groups, key_groups):
    """Loop over examples, heads and word pairs: mean over query pieces of summed key pieces."""
    b, h = weights.shape[:2]
    rows = max(len(g) for g in query_groups)
    cols = max(len(g) for g in key_groups)
    out = np.zeros((b, h, rows, cols))
    for n in range(b):
        for head in range(h):
            for i, qg in enumerate(query_groups[n]):
                for j, kg in enumerate(key_groups[n]):
                    total = 0.0
                    for q in qg:
                        for k in kg:
                            total += weights[n, head, q, k]
                    out[n, head, i, j] = total / len(qg)
    return out


def test_word_groups_follow_word_ids_and_keep_special_tokens_alone():
    assert word_groups([None, 0, 1, 1, 1, 2, None, None]) == [[0], [1], [2, 3, 4], [5], [6], [7]]
    assert word_groups([0, 0]) == [[0, 1]]
    assert word_groups([]) == []


def test_word_groups_reject_split_words_and_non_integers():
    with pytest.raises(ValueError, match="not next to each other"):
        word_groups([0, 1, 0])
    with pytest.raises(TypeError, match="integers or None"):
        word_groups([0, "1"])


def test_merge_pieces_matches_the_loop_and_keeps_row_sums():
    rng = np.random.default_rng(0)
    weights = _softmax_rows(rng, (2, 3, 6, 6))
    queries = [word_groups([None, 0, 0, 1, None, None]), word_groups([None, 0, 1, 1, 1, None])]
    merged = merge_pieces(weights, queries, queries)
    want = _reference(weights, queries, queries)
    np.testing.assert_allclose(merged, want, rtol=1e-12, atol=1e-12)
    assert merged.shape == (2, 3, 5, 5)  # example 0 has 5 groups, example 1 has 4 + padding
    np.testing.assert_allclose(merged[0].sum(-1), 1.0)
    np.testing.assert_allclose(merged[1, :, :4].sum(-1), 1.0)
    assert np.all(merged[1, :, 4] == 0) and np.all(merged[1, :, :, 4] == 0)


def test_merge_pieces_cross_attention_groups_differ_for_queries_and_keys():
    rng = np.random.default_rng(1)
    weights = _softmax_rows(rng, (1, 2, 4, 7)).astype(np.float32)
    queries = [word_groups([0, 0, 1, None])]
    keys = [word_groups([None, 0, 0, 0, 1, 2, None])]
    merged = merge_pieces(weights, queries, keys)
    assert merged.dtype == np.float32 and merged.shape == (1, 2, 3, 5)
    np.testing.assert_allclose(merged, _reference(weights.astype(np.float64), queries, keys),
                               rtol=1e-6, atol=1e-7)


def test_merge_pieces_rejects_groups_that_do_not_cover_the_positions():
    weights = np.full((1, 1, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"query_groups\[0\] must cover positions 0..2"):
        merge_pieces(weights, [[[0], [1]]], [[[0], [1], [2]]])
    with pytest.raises(ValueError, match="key_groups has 2 examples"):
        merge_pieces(weights, [[[0], [1], [2]]], [[[0], [1], [2]]] * 2)
    with pytest.raises(ValueError, match="rank 4 to 4"):
        merge_pieces(weights[0], [[[0], [1], [2]]], [[[0], [1], [2]]])
