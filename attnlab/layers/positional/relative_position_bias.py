"""T5-style bucketed relative position bias (Raffel et al. 2020; Shaw et al. 2018)."""
import math

import tensorflow as tf

from attnlab.layers.layer_helpers import checked_start_index, sequence_length
from attnlab.validation import check_positive_int, shape_str


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32,
                             max_distance=128):
    """Map key-minus-query distances to bucket ids, as T5 does.

    Small distances get a bucket each; larger ones share logarithmically wider buckets up
    to `max_distance`, beyond which everything falls in the last bucket. With
    `bidirectional`, half of the buckets are for keys after the query.

    Args:
        relative_position: int tensor, key position - query position.
        bidirectional: whether keys after the query get their own buckets.
        num_buckets: total number of buckets.
        max_distance: distances >= this share the last bucket.

    Returns:
        int32 tensor of bucket ids in [0, num_buckets), same shape.

    Example:
        >>> relative_position_bucket(tf.constant([-1, 0, 1]), num_buckets=8).numpy().tolist()
        [1, 0, 5]
    """
    n = -tf.cast(relative_position, tf.int32)
    bucket = tf.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        bucket += tf.cast(n < 0, tf.int32) * num_buckets
        n = tf.abs(n)
    else:
        n = tf.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # log(n / max_exact) is -inf for n = 0; those entries take the is_small branch.
    safe_n = tf.cast(tf.maximum(n, 1), tf.float32)
    large = max_exact + tf.cast(
        tf.math.log(safe_n / max_exact) / math.log(max_distance / max_exact)
        * (num_buckets - max_exact), tf.int32)
    large = tf.minimum(large, num_buckets - 1)
    return bucket + tf.where(is_small, n, large)


@tf.keras.utils.register_keras_serializable(package="attnlab")
class RelativePositionBias(tf.keras.layers.Layer):
    """Learned per-head bias for each bucket of key-minus-query distance.

    bias[h, i, j] = table[bucket(j - (query_offset + i)), h]; add it to the attention
    scores (B, H, T, S) before the softmax.

    Args:
        num_heads: H.
        num_buckets: number of distance buckets (>= 4 when bidirectional, else >= 2).
        max_distance: distances at or beyond it share the last bucket.
        bidirectional: False for causal (decoder) attention, where only keys at or before
            the query matter.
        embeddings_initializer: initializer of the (num_buckets, H) table.

    Call args:
        query: (B, T, ...) tensor; only its length T is used.
        key: (B, S, ...) tensor giving the key length S; default: `query` (S = T).
        query_offset: absolute position of the first query (scalar). For cached decoding
            the new query at step t sees keys 0..t: pass `query_offset=t` and the cache.

    Returns:
        (1, H, T, S) bias in the compute dtype.

    Example:
        >>> x = tf.random.normal([2, 5, 16])
        >>> RelativePositionBias(num_heads=4)(x).shape
        TensorShape([1, 4, 5, 5])
    """

    def __init__(self, num_heads, num_buckets=32, max_distance=128, bidirectional=True,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.num_buckets = check_positive_int("num_buckets", num_buckets)
        self.max_distance = check_positive_int("max_distance", max_distance)
        self.bidirectional = bool(bidirectional)
        # Buckets for one direction, of which half are exact distances; the log-spaced
        # ones need at least one exact bucket and max_distance beyond the exact range.
        max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
        if max_exact < 1:
            raise ValueError("num_buckets=%d is too small: need >= %d when bidirectional=%s"
                             % (num_buckets, 4 if bidirectional else 2, bidirectional))
        if max_distance <= max_exact:
            raise ValueError("max_distance=%d must exceed the %d exactly-bucketed distances "
                             "given by num_buckets=%d" % (max_distance, max_exact, num_buckets))
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings", shape=(self.num_buckets, self.num_heads),
            initializer=self.embeddings_initializer, trainable=True)
        super().build(input_shape)

    def call(self, query, key=None, query_offset=0):
        for name, x in (("query", query), ("key", key)):
            if x is not None and x.shape.rank is not None and x.shape.rank < 2:
                raise ValueError("RelativePositionBias expects %s of shape (B, length, ...), "
                                 "got %s" % (name, shape_str(x)))
        query_length = sequence_length(query, 1)
        key_length = query_length if key is None else sequence_length(key, 1)
        start, checks = checked_start_index(query_offset, query_length, None,
                                            "RelativePositionBias", "query_offset")
        with tf.control_dependencies(checks):
            query_positions = tf.range(query_length) + start
        key_positions = tf.range(key_length)
        relative = key_positions[tf.newaxis, :] - query_positions[:, tf.newaxis]   # (T, S)
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets,
                                           self.max_distance)
        bias = tf.gather(tf.cast(self.embeddings, self.compute_dtype), buckets)   # (T, S, H)
        return tf.transpose(bias, [2, 0, 1])[tf.newaxis]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([1, self.num_heads, None, None])

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "embeddings_initializer":
                tf.keras.initializers.serialize(self.embeddings_initializer),
        })
        return config
