"""Which lines a token line view draws: the weights above a threshold, thinned per query.

A line joins query token t (left column) to key token s (right column) of one head; its
opacity is the weight. At 512 tokens a layer has H * 512 * 512 candidate lines, so only
those that carry weight are kept: weights below `threshold`, outside the token windows or
of tokens other than the selected ones are dropped, and each query keeps at most its
`max_lines` strongest keys per head.
"""
import numpy as np


def attention_lines(weights, heads, query_window, key_window, threshold, max_lines=None,
                    query=None, key=None):
    """The lines to draw from one example's (H, T, S) weights.

    Args:
        weights: (H, T, S) attention weights of one example.
        heads: head indices to draw, in drawing order.
        query_window, key_window: (start, stop) ranges of query and key positions shown.
        threshold: lines of weight below it (and of weight 0) are not drawn.
        max_lines: at most this many lines per query and head, its strongest keys (ties
            go to the lower key index); None keeps every line above the threshold.
        query, key: when set, only the lines of this query (into this key) are drawn.

    Returns:
        (N, 4) float64 array of (head, query, key, weight) rows, sorted by head (in the
        order of `heads`), then query, then key.

    Example:
        >>> attention_lines(np.array([[[0.9, 0.1], [0.5, 0.5]]]), [0], (0, 2), (0, 2), 0.2)
        array([[0. , 0. , 0. , 0.9],
               [0. , 1. , 0. , 0.5],
               [0. , 1. , 1. , 0.5]])
    """
    (q0, q1), (k0, k1) = query_window, key_window
    heads = list(heads)
    if query is not None:
        q0, q1 = query, query + 1
    if key is not None:
        k0, k1 = key, key + 1
    if not heads or q1 <= q0 or k1 <= k0:
        return np.zeros((0, 4))
    block = weights[heads, q0:q1, k0:k1]
    keep = (block >= threshold) & (block > 0)
    if max_lines is not None and block.shape[-1] > max_lines:
        keep &= _strongest(np.where(keep, block, -1.0), max_lines)
    head_index, rows, cols = np.nonzero(keep)
    lines = np.empty((head_index.size, 4))
    lines[:, 0] = np.asarray(heads)[head_index]
    lines[:, 1] = rows + q0
    lines[:, 2] = cols + k0
    lines[:, 3] = block[head_index, rows, cols]
    return lines


def _strongest(values, k):
    """Mask of the k largest entries along the last axis, ties to the lower index.

    A partition finds each row's k-th largest value in linear time (a full sort of
    4 x 512 x 512 weights costs tens of milliseconds); all values above it are kept and
    the ties at it fill the remaining places from the left.
    """
    kth = -np.partition(-values, k - 1, axis=-1)[..., k - 1:k]
    above = values > kth
    ties = values == kth
    room = k - above.sum(axis=-1, keepdims=True)
    return above | (ties & (np.cumsum(ties, axis=-1) <= room))
