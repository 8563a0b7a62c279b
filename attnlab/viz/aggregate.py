"""Reductions of attention weights over heads, and shape checks shared by the viz package.

Weights are NumPy arrays with the head axis third from the end: (H, T, S) or (B, H, T, S),
as returned by tf.keras.layers.MultiHeadAttention(return_attention_scores=True).
"""
import numpy as np

from attnlab.validation import check_choice

HEAD_REDUCTIONS = ("mean", "max")


def as_weights(weights, name="weights", min_rank=2, max_rank=4):
    """Convert `weights` to a float NumPy array and check its rank and that it is finite.

    Args:
        weights: array-like attention weights.
        name: argument name used in error messages.
        min_rank, max_rank: accepted ranks.

    Returns:
        np.ndarray of a floating dtype (integers and booleans become float32).

    Example:
        >>> as_weights([[1, 0], [0.5, 0.5]]).shape
        (2, 2)
    """
    array = np.asarray(weights)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                     or array.dtype == bool):
        raise TypeError("%s must be a numeric array, got dtype %s" % (name, array.dtype))
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if not min_rank <= array.ndim <= max_rank:
        raise ValueError("%s must have rank %d to %d (e.g. (B, H, T, S)), got shape %s"
                         % (name, min_rank, max_rank, array.shape))
    if 0 in array.shape:
        raise ValueError("%s must not be empty, got shape %s" % (name, array.shape))
    # A NaN would be drawn as a blank cell or spread through a rollout product silently.
    bad = array.size - np.count_nonzero(np.isfinite(array))
    if bad:
        raise ValueError("%s must be finite, got %d NaN/Inf entries of %d (shape %s)"
                         % (name, bad, array.size, array.shape))
    return array


def reduce_heads(weights, how="mean"):
    """Mean or max of attention weights over the head axis.

    Args:
        weights: (H, T, S) or (B, H, T, S) attention weights.
        how: "mean" or "max".

    Returns:
        (T, S) or (B, T, S) array.

    Example:
        >>> reduce_heads(np.ones((2, 4, 3, 3)), "max").shape
        (2, 3, 3)
    """
    check_choice("how", how, HEAD_REDUCTIONS)
    weights = as_weights(weights, min_rank=3)
    return weights.mean(axis=-3) if how == "mean" else weights.max(axis=-3)


def head_mean(weights):
    """Mean attention over heads: (..., H, T, S) -> (..., T, S)."""
    return reduce_heads(weights, "mean")


def head_max(weights):
    """Maximum attention over heads: (..., H, T, S) -> (..., T, S)."""
    return reduce_heads(weights, "max")
