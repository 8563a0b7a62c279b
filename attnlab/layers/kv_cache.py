"""Fixed-size key/value cache for incremental (token-by-token) decoding.

A cache is a pair `(key_cache, value_cache)` of shapes (B, S_max, H, dk) and
(B, S_max, H, dv) holding the projected keys and values of every position decoded so far.
Its shape never changes: new entries are written in place at `cache_update_index`, so a
decoding loop runs inside `tf.function` / `tf.while_loop` without retracing.
"""
import tensorflow as tf

from attnlab.ops.validation import check_positive_int, shape_str


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
        (key_cache (B, S_max, H, dk), value_cache (B, S_max, H, dv)).

    Example:
        >>> k, v = empty_cache(2, 16, num_heads=4, key_dim=8)
        >>> k.shape
        TensorShape([2, 16, 4, 8])
    """
    check_positive_int("max_length", max_length)
    check_positive_int("num_heads", num_heads)
    check_positive_int("key_dim", key_dim)
    value_dim = key_dim if value_dim is None else check_positive_int("value_dim", value_dim)
    keys = tf.zeros([batch_size, max_length, num_heads, key_dim], dtype=dtype)
    values = tf.zeros([batch_size, max_length, num_heads, value_dim], dtype=dtype)
    return keys, values


def update_cache(cache, new, index):
    """Write `new` (B, T, ...) into `cache` (B, S_max, ...) at positions index..index+T-1.

    The write is a pad + select: `new` is zero-padded to S_max along the length axis and
    chosen where the position lies in the window. Unlike xla.dynamic_update_slice it needs
    no XLA (TF 2.9 runs it eagerly and in plain tf.function on CPU and GPU), unlike
    tf.tensor_scatter_nd_update it needs no transpose to scatter along axis 1, and it is
    differentiable; its cost is O(S_max), the same as attending over the cache.

    Args:
        cache: (B, S_max, ...) tensor.
        new: (B, T, ...) tensor of the same dtype and trailing dimensions.
        index: scalar int, the position of new[:, 0].

    Returns:
        The updated cache, with the static shape of `cache`.

    Example:
        >>> cache = update_cache(tf.zeros([1, 4, 1, 1]), tf.ones([1, 2, 1, 1]), 1)
        >>> cache.numpy().ravel().tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    cache = tf.convert_to_tensor(cache)
    new = tf.convert_to_tensor(new, dtype=cache.dtype)
    if cache.shape.rank is not None and new.shape.rank is not None:
        if cache.shape.rank != new.shape.rank or \
                not cache.shape[2:].is_compatible_with(new.shape[2:]) or \
                not cache.shape[:1].is_compatible_with(new.shape[:1]):
            raise ValueError("cannot write new entries of shape %s into a cache of shape %s: "
                             "batch and trailing dimensions must match"
                             % (shape_str(new), shape_str(cache)))
        if None not in (cache.shape[1], new.shape[1]) and new.shape[1] > cache.shape[1]:
            raise ValueError("cannot write %d new positions into a cache of length %d"
                             % (new.shape[1], cache.shape[1]))
    index = tf.cast(index, tf.int32)
    max_length = tf.shape(cache)[1]
    length = tf.shape(new)[1]
    if isinstance(index, tf.Tensor) and tf.get_static_value(index) is not None \
            and new.shape[1] is not None and cache.shape[1] is not None:
        start = int(tf.get_static_value(index))
        if start < 0 or start + new.shape[1] > cache.shape[1]:
            raise ValueError("cache_update_index %d with %d new positions does not fit a cache "
                             "of length %d" % (start, new.shape[1], cache.shape[1]))
    checks = [tf.debugging.assert_greater_equal(
        index, 0, message="cache_update_index must be >= 0"),
        tf.debugging.assert_less_equal(
            index + length, max_length,
            message="cache_update_index + new length exceeds the cache length")]
    with tf.control_dependencies(checks):
        paddings = tf.concat([[[0, 0]], [[index, max_length - index - length]],
                              tf.zeros([new.shape.rank - 2, 2], tf.int32)], axis=0)
        placed = tf.pad(new, paddings)
    positions = tf.range(max_length)
    in_window = (positions >= index) & (positions < index + length)
    in_window = tf.reshape(in_window, [1, -1] + [1] * (cache.shape.rank - 2))
    updated = tf.where(in_window, placed, cache)
    updated.set_shape(cache.shape)
    return updated
