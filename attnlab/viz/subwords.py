"""Merge the word pieces of a tokenizer into words, in attention maps and token lists.

A word split into pieces ("play", "##ing") becomes one row and one column:
- its row (attention *from* the word) is the mean of its pieces' rows, so a row still sums
  to what each piece's row summed to (1 over the keys it could attend);
- its column (attention *to* the word) is the sum of its pieces' columns: the share of a
  query's attention that went to any piece of the word.

Positions that belong to no word (special tokens, padding) stay on their own. Examples of a
batch can have different numbers of words; shorter ones are padded at the end with
positions whose weights are zero.
"""
import numpy as np

from attnlab.viz.aggregate import as_weights


def word_groups(word_ids):
    """Group the positions of one example by word, in order of first appearance.

    Args:
        word_ids: T entries, the word index of each token, or None for a token that is
            part of no word (special tokens, padding), as `BatchEncoding.word_ids(i)` gives.

    Returns:
        list of lists of positions, one per merged token; a None position is its own group.

    Example:
        >>> word_groups([None, 0, 1, 1, None])
        [[0], [1], [2, 3], [4]]
    """
    groups, where = [], {}
    for position, word in enumerate(word_ids):
        if word is None:
            groups.append([position])
            continue
        if isinstance(word, bool) or not isinstance(word, (int, np.integer)):
            raise TypeError("word ids must be integers or None, got %r at position %d"
                            % (word, position))
        if word in where:
            group = groups[where[word]]
            if group[-1] != position - 1:
                raise ValueError("word %d has pieces at positions %s and %d that are not next "
                                 "to each other" % (word, group, position))
            group.append(position)
        else:
            where[word] = len(groups)
            groups.append([position])
    return groups


def _check_groups(groups, length, name):
    covered = sorted(p for group in groups for p in group)
    if covered != list(range(length)):
        raise ValueError("%s must cover positions 0..%d exactly once, got %r"
                         % (name, length - 1, groups))


def merge_pieces(weights, query_groups, key_groups):
    """Attention between words from attention between word pieces.

    Args:
        weights: (B, H, T, S) attention weights.
        query_groups: B lists of position groups over T (from `word_groups`).
        key_groups: B lists of position groups over S.

    Returns:
        (B, H, T', S') float array, T' (S') the most groups of any example; rows of a group
        are averaged, columns of a group summed; padding past an example's groups is zero.

    Example:
        >>> w = np.full((1, 1, 3, 3), 1 / 3)
        >>> merge_pieces(w, [[[0], [1, 2]]], [[[0], [1, 2]]])[0, 0]
        array([[0.333..., 0.666...],
               [0.333..., 0.666...]])
    """
    weights = as_weights(weights, name="weights", min_rank=4, max_rank=4)
    batch, heads, t, s = weights.shape
    for name, groups in (("query_groups", query_groups), ("key_groups", key_groups)):
        if len(groups) != batch:
            raise ValueError("%s has %d examples but the weights have batch size %d"
                             % (name, len(groups), batch))
    rows = max(len(g) for g in query_groups)
    cols = max(len(g) for g in key_groups)
    merged = np.zeros((batch, heads, rows, cols), dtype=weights.dtype)
    for b in range(batch):
        _check_groups(query_groups[b], t, "query_groups[%d]" % b)
        _check_groups(key_groups[b], s, "key_groups[%d]" % b)
        # (T', T) averaging rows and (S, S') summing columns: merged = mean @ w @ sum.
        mean = np.zeros((rows, t), weights.dtype)
        for i, group in enumerate(query_groups[b]):
            mean[i, group] = 1.0 / len(group)
        total = np.zeros((s, cols), weights.dtype)
        for j, group in enumerate(key_groups[b]):
            total[group, j] = 1.0
        merged[b] = mean @ weights[b] @ total
    return merged

