"""Fixed-size key/value cache for incremental (token-by-token) decoding.

A cache is a pair `(key_cache, value_cache)` of shapes (B, H, S_max, dk) and
(B, H, S_max, dv) holding the projected keys and values of every position decoded so far,
head-major: the layout the attention matmuls read, so a decoding step transposes only its
new entries, never the whole cache. Its shape never changes: new entries are written in
place at `cache_update_index`, so a decoding loop runs inside `tf.function` /
`tf.while_loop` without retracing.
"""
import tensorflow as tf

from attnlab.validation import check_positive_int, shape_str

LENGTH_AXIS = 2


def empty_cache(batch_size, max_length, num_heads, key_dim, value_dim=None, dtype="float32"):
    """An all-zero cache; unfilled slots are hidden by the causal mask, never read.

    Args:
        batch_size: B (int or scalar tensor).
        max_length: S_max, the most positions the cache holds.
        num_heads: H.
        key_dim: dk.
        value_dim: dv (default dk).
        dtype: dtype of the cache (the attention layer's compute dtype).

    Returns:
        (key_cache (B, H, S_max, dk), value_cache (B, H, S_max, dv)).

    Example:
        >>> k, v = empty_cache(2, 16, num_heads=4, key_dim=8)
        >>> k.shape
        TensorShape([2, 4, 16, 8])
    """
    check_positive_int("max_length", max_length)
    check_positive_int("num_heads", num_heads)
    check_positive_int("key_dim", key_dim)
    value_dim = key_dim if value_dim is None else check_positive_int("value_dim", value_dim)
    keys = tf.zeros([batch_size, num_heads, max_length, key_dim], dtype=dtype)
    values = tf.zeros([batch_size, num_heads, max_length, value_dim], dtype=dtype)
    return keys, values


def update_cache(cache, new, index):
    """Write `new` (B, H, T, d) into `cache` (B, H, S_max, d) at positions index..index+T-1.

    The write is a pad + select: `new` is zero-padded to S_max along the length axis and
    chosen where the position lies in the window. Unlike xla.dynamic_update_slice it needs
    no XLA (TF 2.9 runs it eagerly and in plain tf.function on CPU and GPU), unlike
    tf.tensor_scatter_nd_update it needs no transpose to scatter along axis 2, and it is
    differentiable; its cost is O(S_max), the same as attending over the cache.

    Args:
        cache: (B, H, S_max, d) tensor.
        new: (B, H, T, d) tensor of the same dtype, batch, heads and depth.
        index: scalar int, the position of new[:, :, 0].

    Returns:
        The updated cache, with the static shape of `cache`.

    Example:
        >>> cache = update_cache(tf.zeros([1, 1, 4, 1]), tf.ones([1, 1, 2, 1]), 1)
        >>> cache.numpy().ravel().tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    cache = tf.convert_to_tensor(cache)
    new = tf.convert_to_tensor(new, dtype=cache.dtype)
    if cache.shape.rank is not None and new.shape.rank is not None:
        if cache.shape.rank != 4 or new.shape.rank != 4 or \
                not cache.shape[3:].is_compatible_with(new.shape[3:]) or \
                not cache.shape[:2].is_compatible_with(new.shape[:2]):
            raise ValueError("cannot write new entries of shape %s into a cache of shape %s: "
                             "both are (B, H, length, depth) with equal B, H and depth"
                             % (shape_str(new), shape_str(cache)))
        if None not in (cache.shape[2], new.shape[2]) and new.shape[2] > cache.shape[2]:
            raise ValueError("cannot write %d new positions into a cache of length %d"
                             % (new.shape[2], cache.shape[2]))
    index = tf.cast(index, tf.int32)
    max_length = tf.shape(cache)[LENGTH_AXIS]
    length = tf.shape(new)[LENGTH_AXIS]
    if isinstance(index, tf.Tensor) and tf.get_static_value(index) is not None \
            and new.shape[2] is not None and cache.shape[2] is not None:
        start = int(tf.get_static_value(index))
        if start < 0 or start + new.shape[2] > cache.shape[2]:
            raise ValueError("cache_update_index %d with %d new positions does not fit a cache "
                             "of length %d" % (start, new.shape[2], cache.shape[2]))
    # One scalar check (a decoding step runs this once per layer and per tensor).
    fits = tf.debugging.Assert(
        tf.logical_and(index >= 0, index + length <= max_length),
        ["cache_update_index", index, "with", length,
         "new positions does not fit a cache of length", max_length])
    with tf.control_dependencies([fits]):
        paddings = tf.stack([[0, 0], [0, 0], [index, max_length - index - length], [0, 0]])
        placed = tf.pad(new, paddings)
    positions = tf.range(max_length)
    in_window = (positions >= index) & (positions < index + length)
    updated = tf.where(in_window[:, tf.newaxis], placed, cache)
    updated.set_shape(cache.shape)
    return updated
