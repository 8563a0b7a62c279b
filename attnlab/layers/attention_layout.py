"""Where attention happens in a (B, ..., D) tensor: the attention axes of
tf.keras.layers.MultiHeadAttention, folded into the (B', H, L, depth) layout of the kernels.

A projected tensor has the shape (B, d_1, ..., d_n, H, depth). The attention axes (a subset
of 1..n) are the positions that attend to each other; the other axes ("batch axes") are
independent problems, like the batch. Folding moves the batch axes into the batch and
flattens the attention axes into one length, so that every kernel (full, chunked, local)
sees its usual (B', H, L, depth) tensors. The scores come back in Keras's layout:
(B, <batch axes>, H, <query attention axes>, <key attention axes>).
"""
import string

import tensorflow as tf

from attnlab.ops.masks import as_bool_mask
from attnlab.validation import shape_str


def projection_equation(free_dims, bound_dims, output_dims):
    """The einsum equation of a projection and the axes of its bias.

    Args:
        free_dims: leading input axes kept as they are (batch and positions).
        bound_dims: trailing input axes contracted with the kernel.
        output_dims: trailing output axes made by the kernel.

    Returns:
        (equation, bias_axes), e.g. ("abc,cde->abde", "de") for (B, T, D) -> (B, T, H, dk).

    Example:
        >>> projection_equation(2, 1, 2)
        ('abc,cde->abde', 'de')
    """
    letters = string.ascii_lowercase
    free = letters[:free_dims]
    bound = letters[free_dims:free_dims + bound_dims]
    out = letters[free_dims + bound_dims:free_dims + bound_dims + output_dims]
    return "%s%s,%s%s->%s%s" % (free, bound, bound, out, free, out), out


def normalize_attention_axes(attention_axes, rank):
    """The attention axes of inputs of rank `rank` as a tuple of positive axes.

    Args:
        attention_axes: None (every axis but the batch and the last), an int or a sequence
            of ints; negative axes count from the end of the (B, ..., D) input.
        rank: rank of the query input.

    Returns:
        tuple of axes in 1..rank-2, in the given order.
    """
    if attention_axes is None:
        return tuple(range(1, rank - 1))
    axes = (attention_axes,) if isinstance(attention_axes, int) else tuple(attention_axes)
    normalized = []
    for axis in axes:
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError("attention_axes must be ints, got %r" % (attention_axes,))
        positive = axis + rank if axis < 0 else axis
        if not 1 <= positive <= rank - 2:
            raise ValueError(
                "attention_axes=%r: axis %d is not a position axis of inputs of rank %d "
                "(the batch axis 0 and the feature axis %d cannot be attended over)"
                % (attention_axes, axis, rank, rank - 1))
        normalized.append(positive)
    if not normalized or len(set(normalized)) != len(normalized):
        raise ValueError("attention_axes must name distinct axes, got %r" % (attention_axes,))
    return tuple(normalized)


def _dims(x, axes):
    """Sizes of `x` along `axes`: Python ints where static, scalar tensors otherwise."""
    dynamic = tf.shape(x)
    return [x.shape[a] if x.shape[a] is not None else dynamic[a] for a in axes]


def _product(sizes):
    result = 1
    for size in sizes:
        result = result * size
    return result


class AttentionLayout:
    """Folds projected (B, d_1, ..., d_n, H, depth) tensors into (B', H, L, depth) and back.

    Args:
        rank: rank of the (unprojected) query, (B, d_1, ..., d_n, D).
        attention_axes: axes 1..n to attend over (see `normalize_attention_axes`).

    Example:
        >>> layout = AttentionLayout(4, (2,))  # images (B, rows, cols, C), attend along rows
        >>> layout.batch_axes, layout.attention_axes
        ((1,), (2,))
    """

    def __init__(self, rank, attention_axes=None):
        if rank < 3:
            raise ValueError("multi-head attention needs inputs of rank >= 3 (B, ..., D), got "
                             "rank %d" % rank)
        self.rank = rank
        self.attention_axes = normalize_attention_axes(attention_axes, rank)
        self.batch_axes = tuple(a for a in range(1, rank - 1) if a not in self.attention_axes)
        heads = rank - 1
        self._to_heads_first = ((0,) + self.batch_axes + (heads,) + self.attention_axes +
                                (rank,))
        self._from_heads_first = tuple(self._to_heads_first.index(a) for a in range(rank + 1))

    @property
    def is_sequence(self):
        """True for the plain (B, T, D) case: one attention axis, no batch axes."""
        return self.rank == 3

    def heads_first(self, x):
        """(B, d_1, ..., d_n, H, depth) -> (B * <batch axes>, H, <attention axes>, depth)."""
        x = tf.transpose(x, self._to_heads_first)
        if self.is_sequence:
            return x
        batch = _dims(x, range(1 + len(self.batch_axes)))
        length = _dims(x, range(2 + len(self.batch_axes), self.rank))
        return tf.reshape(x, [_product(batch), x.shape[len(batch)], _product(length),
                              x.shape[-1]])

    def from_heads_first(self, y, like):
        """Undo `heads_first` for a (B', H, L, depth) result of queries shaped like `like`
        (B, d_1, ..., d_n, H, k): returns (B, d_1, ..., d_n, H, depth)."""
        if not self.is_sequence:
            batch = _dims(like, (0,) + self.batch_axes)
            length = _dims(like, self.attention_axes)
            y = tf.reshape(y, batch + [y.shape[1]] + length + [y.shape[-1]])
        return tf.transpose(y, self._from_heads_first)

    def scores_from_heads_first(self, scores, query, key):
        """(B', H, T, S) weights -> Keras's (B, <batch axes>, H, <T axes>, <S axes>)."""
        if self.is_sequence:
            return scores
        return tf.reshape(scores, _dims(query, (0,) + self.batch_axes) + [scores.shape[1]] +
                          _dims(query, self.attention_axes) + _dims(key, self.attention_axes))

    def scores_rank(self):
        """Rank of the scores in Keras's layout."""
        return 2 + len(self.batch_axes) + 2 * len(self.attention_axes)

    def keras_mask(self, mask):
        """A mask in Keras's scores layout, with missing leading axes added as Keras adds
        them (before the query attention axes), as a bool tensor of the scores' rank."""
        mask = as_bool_mask(mask)
        rank = self.scores_rank()
        if mask.shape.rank is None:
            raise ValueError("attention_mask needs a known rank")
        if mask.shape.rank > rank:
            raise ValueError(
                "attention_mask of shape %s has more axes than the attention scores (rank %d: "
                "batch, batch axes, heads, %d query and %d key attention axes)"
                % (shape_str(mask), rank, len(self.attention_axes), len(self.attention_axes)))
        insert_at = -2 * len(self.attention_axes) - 1
        while mask.shape.rank < rank:
            mask = tf.expand_dims(mask, insert_at)
        return mask

    def mask_heads_first(self, mask, query, key, num_heads):
        """A Keras-layout mask for projected `query` (B, ..., H, dk) and `key` as a
        (B', 1 or H, T, S) mask for the kernels; a mask that does not broadcast is a
        ValueError naming both shapes."""
        original = shape_str(tf.convert_to_tensor(mask))
        mask = self.keras_mask(mask)
        heads_axis = 1 + len(self.batch_axes)
        head_size = mask.shape[heads_axis]
        head_size = 1 if head_size == 1 else num_heads
        batch = _dims(query, (0,) + self.batch_axes)
        q_len = _dims(query, self.attention_axes)
        k_len = _dims(key, self.attention_axes)
        static = [b if isinstance(b, int) else None for b in batch] + [head_size] + [
            n if isinstance(n, int) else None for n in q_len + k_len]
        for got, want in zip(mask.shape.as_list(), static):
            if got is not None and want is not None and got not in (1, want):
                raise ValueError(
                    "attention_mask of shape %s does not broadcast to the attention scores "
                    "%s (batch, batch axes, heads, query axes, key axes)"
                    % (original, tuple(static)))
        if self.is_sequence:
            return mask  # (B, 1|H, T, S) broadcasts as it is: nothing to fold
        mask = tf.broadcast_to(mask, batch + [head_size] + q_len + k_len)
        return tf.reshape(mask, [_product(batch), head_size, _product(q_len),
                                 _product(k_len)])
