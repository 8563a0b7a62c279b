"""Multi-head attention, weight-compatible with tf.keras.layers.MultiHeadAttention, with a
choice of attention kernel (full, chunked, local) and a KV cache for incremental decoding."""
import contextlib
import math

import tensorflow as tf

from attnlab.layers.kv_cache import empty_cache, update_cache
from attnlab.ops.chunked import chunked_attention
from attnlab.ops.local import local_attention
from attnlab.ops.masks import align_mask, band_mask, causal_mask, combine_masks
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from attnlab.ops.validation import check_floating, check_positive_int, check_rate, shape_str

ATTENTION_IMPLS = ("full", "chunked", "local")


def _init_scope():
    # Variables created lazily inside `call` must live outside any tf.function being traced.
    if tf.compat.v1.executing_eagerly_outside_functions():
        return tf.init_scope()
    return contextlib.nullcontext()


def _clone(initializer):
    # Each projection gets its own initializer object: a seeded initializer reused for
    # several kernels would make them identical.
    return initializer.__class__.from_config(initializer.get_config())


class _Projection(tf.keras.layers.Layer):
    """An einsum projection with a kernel and an optional bias (EinsumDense is not public
    in TF 2.9). Named like Keras MHA's sublayers so variables read `query/kernel` etc."""

    def __init__(self, equation, kernel_shape, bias_shape, kernel_initializer,
                 bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint,
                 bias_constraint, **kwargs):
        super().__init__(**kwargs)
        self.equation = equation
        # The name scope makes the variables read query/kernel, ..., unique names that the
        # H5 format needs.
        with tf.name_scope(self.name):
            self.kernel = self.add_weight(
                name="kernel", shape=kernel_shape, initializer=kernel_initializer,
                regularizer=kernel_regularizer, constraint=kernel_constraint, trainable=True)
            self.bias = None
            if bias_shape is not None:
                self.bias = self.add_weight(
                    name="bias", shape=bias_shape, initializer=bias_initializer,
                    regularizer=bias_regularizer, constraint=bias_constraint, trainable=True)
        self.built = True

    def call(self, x):
        y = tf.einsum(self.equation, x, tf.cast(self.kernel, x.dtype))
        if self.bias is not None:
            y = y + tf.cast(self.bias, x.dtype)
        return y


@tf.keras.utils.register_keras_serializable(package="attnlab")
class MultiHeadAttention(tf.keras.layers.Layer):
    """Multi-head attention (Vaswani et al. 2017) with selectable kernel and KV cache.

    The variables have the shapes and order of tf.keras.layers.MultiHeadAttention's, so
    `layer.set_weights(keras_mha.get_weights())` reproduces a Keras layer:
    query/kernel (D, H, dk), query/bias (H, dk), key/kernel (Dk, H, dk), key/bias (H, dk),
    value/kernel (Dv, H, dv), value/bias (H, dv), attention_output/kernel (H, dv, Dout),
    attention_output/bias (Dout,).

    Args:
        num_heads: H.
        key_dim: dk, depth of each head's queries and keys.
        value_dim: dv, depth of each head's values (default dk).
        dropout: dropout rate on the attention weights during training ("full" only).
        use_bias: add biases to the four projections.
        output_dim: Dout, depth of the output (default: the query depth D).
        attention_impl: "full" (materializes the (B, H, T, S) weights), "chunked"
            (attnlab.ops.chunked, memory-efficient) or "local" (attnlab.ops.local, each
            query sees keys within `window` positions).
        window: the local window; required for "local".
        chunk_size: query and key chunk size of "chunked" (default: chunked_attention's, 512).
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        activity_regularizer, kernel_constraint, bias_constraint: as in Keras Dense.
        **kwargs: base Layer arguments (name, dtype, ...).

    Call arguments:
        query: (B, T, D).
        value: (B, S, Dv).
        key: (B, S, Dk), default `value`.
        attention_mask: mask broadcastable to (B, T, S) (True = may attend). Keras masks on
            query (B, T) and value/key (B, S) are combined in, as Keras MHA does.
        return_attention_scores: also return the weights (B, H, T, S) ("full" only).
        training: dropout switch.
        causal: hide keys after each query, aligned so the last query sees the last key.
        cache: `(key_cache (B, H, S_max, dk), value_cache (B, H, S_max, dv))`, head-major,
            see `init_cache`. With `cache_update_index` the projected keys/values of the T
            new tokens are written at positions index..index+T-1 and the queries attend over
            the whole cache causally (query t sits at position index + t); without it the
            cache is read as precomputed keys/values (e.g. cross-attention over an encoder
            output, see `project_cache`). Keras masks of value/key are not used with a
            cache (they describe only the new tokens).
        cache_update_index: scalar int position of the first new token in the cache.
            With "local" attention, cached decoding uses the causal band of `window`
            positions at the queries' absolute positions.

    Returns:
        (B, T, Dout) output; `(output, scores)` with `return_attention_scores`;
        with a cache, the updated cache is appended: `(output, cache)` or
        `(output, scores, cache)`.

    Example:
        >>> mha = MultiHeadAttention(num_heads=2, key_dim=4)
        >>> x = tf.random.normal([2, 5, 8])
        >>> mha(x, x, causal=True).shape
        TensorShape([2, 5, 8])
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_dim=None, attention_impl="full", window=None, chunk_size=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = key_dim if value_dim is None else check_positive_int(
            "value_dim", value_dim)
        self.dropout = check_rate("dropout", dropout)
        if not isinstance(use_bias, bool):
            raise TypeError("use_bias must be a bool, got %r" % (use_bias,))
        self.use_bias = use_bias
        self.output_dim = None if output_dim is None else check_positive_int(
            "output_dim", output_dim)
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError("attention_impl must be one of %s, got %r"
                             % (", ".join(ATTENTION_IMPLS), attention_impl))
        self.attention_impl = attention_impl
        if attention_impl == "local" and window is None:
            raise ValueError("attention_impl='local' needs a window (a positive integer), "
                             "got window=None")
        self.window = None if window is None else check_positive_int("window", window)
        self.chunk_size = None if chunk_size is None else check_positive_int(
            "chunk_size", chunk_size)
        if attention_impl != "full" and self.dropout > 0.0:
            raise ValueError("dropout=%r needs attention_impl='full': %r attention never "
                             "materializes the weights dropout applies to"
                             % (dropout, attention_impl))
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = tf.keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = tf.keras.constraints.get(kernel_constraint)
        self.bias_constraint = tf.keras.constraints.get(bias_constraint)
        self.supports_masking = True
        self._projections_built = False
        self._depths = None
        self._input_shapes = None

    # ----------------------------------------------------------------------------- build
    def build(self, query_shape, value_shape=None, key_shape=None):
        """Create the projections; Keras passes only the query shape, in which case they
        are created on the first call, when the value and key shapes are known."""
        if value_shape is not None:
            self._build_projections(query_shape, value_shape, key_shape)
        self.built = True

    def _build_projections(self, query_shape, value_shape, key_shape=None):
        shapes = {"query": tf.TensorShape(query_shape), "value": tf.TensorShape(value_shape)}
        shapes["key"] = shapes["value"] if key_shape is None else tf.TensorShape(key_shape)
        for name, shape in shapes.items():
            if shape.rank != 3 or shape[-1] is None:
                raise ValueError("MultiHeadAttention expects %s of shape (B, length, depth) "
                                 "with a known depth, got %s" % (
                                     name, tuple(shape.as_list()) if shape.rank is not None
                                     else "(unknown rank)"))
        depths = {name: shape[-1] for name, shape in shapes.items()}
        output_dim = self.output_dim or depths["query"]
        common = dict(kernel_regularizer=self.kernel_regularizer,
                      bias_regularizer=self.bias_regularizer,
                      kernel_constraint=self.kernel_constraint,
                      bias_constraint=self.bias_constraint, dtype=self._dtype_policy)
        heads = self.num_heads
        with _init_scope():
            # Same creation order as Keras MHA: query, key, value, attention_output.
            self.query_dense = _Projection(
                "btd,dhk->bthk", (depths["query"], heads, self.key_dim),
                (heads, self.key_dim) if self.use_bias else None, _clone(self.kernel_initializer),
                _clone(self.bias_initializer), name="query", **common)
            self.key_dense = _Projection(
                "bsd,dhk->bshk", (depths["key"], heads, self.key_dim),
                (heads, self.key_dim) if self.use_bias else None, _clone(self.kernel_initializer),
                _clone(self.bias_initializer), name="key", **common)
            self.value_dense = _Projection(
                "bsd,dhk->bshk", (depths["value"], heads, self.value_dim),
                (heads, self.value_dim) if self.use_bias else None,
                _clone(self.kernel_initializer), _clone(self.bias_initializer), name="value",
                **common)
            self.output_dense = _Projection(
                "bthk,hko->bto", (heads, self.value_dim, output_dim),
                (output_dim,) if self.use_bias else None, _clone(self.kernel_initializer),
                _clone(self.bias_initializer), name="attention_output", **common)
        self._depths = depths
        self._input_shapes = {name: shape.as_list() for name, shape in shapes.items()}
        self._projections_built = True

    def init_cache(self, batch_size, max_length, dtype=None):
        """An empty KV cache for this layer: (B, H, S_max, dk) and (B, H, S_max, dv) zeros.

        Example:
            >>> cache = mha.init_cache(batch_size=2, max_length=32)
        """
        return empty_cache(batch_size, max_length, self.num_heads, self.key_dim,
                           self.value_dim, dtype or self.compute_dtype)

    def project_cache(self, value, key=None):
        """The read-only cache of a fixed sequence `value` (B, S, Dv) (`key` default
        `value`): its projected keys (B, H, S, dk) and values (B, H, S, dv). Computed once,
        e.g. for the encoder output, and passed as `cache` without `cache_update_index`.

        Example:
            >>> cache = mha.project_cache(encoder_output)
            >>> out, _ = mha(decoder_x, encoder_output, cache=cache)
        """
        value = tf.convert_to_tensor(value)
        key = value if key is None else tf.convert_to_tensor(key)
        if not self._projections_built:
            raise ValueError("project_cache needs a built layer: call it once first")
        self._check_depths(value=value, key=key)
        key, value = (tf.cast(x, self.compute_dtype) for x in (key, value))
        return (_heads_first(self.key_dense(key)), _heads_first(self.value_dense(value)))

    # ------------------------------------------------------------------------------ call
    def _check_depths(self, **inputs):
        for name, x in inputs.items():
            if x.shape.rank is not None and x.shape.rank != 3:
                raise ValueError("MultiHeadAttention expects %s of shape (B, length, depth), "
                                 "got %s" % (name, shape_str(x)))
            expected = self._depths[name]
            if x.shape[-1] is not None and x.shape[-1] != expected:
                raise ValueError("MultiHeadAttention was built for %s depth %d, got %s of "
                                 "shape %s" % (name, expected, name, shape_str(x)))

    def _keras_mask(self, query, value, key, key_is_value, use_cache):
        """The Keras masks of the inputs as one (B, T, S)-broadcastable mask, as in Keras MHA:
        query mask (B, T, 1) & value mask (B, 1, S) & key mask (B, 1, S)."""
        parts = []
        query_mask = getattr(query, "_keras_mask", None)
        if query_mask is not None:
            parts.append(tf.cast(query_mask, tf.bool)[:, :, tf.newaxis])
        if not use_cache:
            sources = (value,) if key_is_value else (value, key)
            for x in sources:
                m = getattr(x, "_keras_mask", None)
                if m is not None:
                    parts.append(tf.cast(m, tf.bool)[:, tf.newaxis, :])
        return combine_masks(*parts)

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False,
             training=None, causal=False, cache=None, cache_update_index=None):
        key_is_value = key is None
        # Self-attention (one tensor as query, key and value) can use one fused projection.
        self_attention = key_is_value and query is value
        if key_is_value:
            key = value
        use_cache = cache is not None
        # Read the Keras masks before any cast: a cast tensor no longer carries them.
        auto_mask = self._keras_mask(query, value, key, key_is_value, use_cache)
        query, value, key = (tf.convert_to_tensor(x) for x in (query, value, key))
        for name, x in (("query", query), ("value", value), ("key", key)):
            check_floating(name, x)
        if not self._projections_built:
            self._build_projections(query.shape, value.shape, key.shape)
        self._check_depths(query=query, value=value, key=key)
        if return_attention_scores and self.attention_impl != "full":
            raise ValueError("return_attention_scores=True needs attention_impl='full'; %r "
                             "attention does not compute the weights" % self.attention_impl)
        if self.attention_impl == "local" and not use_cache and \
                not query.shape[1:2].is_compatible_with(value.shape[1:2]):
            raise ValueError("attention_impl='local' is self-attention: query and value need "
                             "the same length, got query %s and value %s"
                             % (shape_str(query), shape_str(value)))
        if cache_update_index is not None and not use_cache:
            raise ValueError("cache_update_index=%r was given without a cache"
                             % (cache_update_index,))

        dtype = self.compute_dtype
        query, value, key = (tf.cast(x, dtype) for x in (query, value, key))
        scale = 1.0 / math.sqrt(float(self.key_dim))
        fused = self_attention and not use_cache and self.key_dim == self.value_dim
        if fused:
            q, k, v = self._project_self_attention(query, scale)  # (B, H, L, depth)
        else:
            q = self.query_dense(query)  # (B, T, H, dk)
        offset = None
        if use_cache:
            if not isinstance(cache, (tuple, list)) or len(cache) != 2:
                raise ValueError("cache must be a pair (key_cache, value_cache), got %r"
                                 % (type(cache).__name__,))
            key_cache, value_cache = (tf.cast(c, dtype) for c in cache)
            self._check_cache(key_cache, value_cache)
            if cache_update_index is not None:
                key_cache = update_cache(key_cache, _heads_first(self.key_dense(key)),
                                         cache_update_index)
                value_cache = update_cache(value_cache, _heads_first(self.value_dense(value)),
                                           cache_update_index)
                offset = cache_update_index
            k, v = key_cache, value_cache
            new_cache = (key_cache, value_cache)
        elif not fused:
            k = self.key_dense(key)  # (B, S, H, dk)
            v = self.value_dense(value)  # (B, S, H, dv)

        # The length axes: (B, H, L, depth) when fused or cached, else (B, L, H, depth).
        q_axis, k_axis = (2 if fused else 1), (2 if fused or use_cache else 1)
        query_length, key_length = tf.shape(q)[q_axis], tf.shape(k)[k_axis]
        scores_shape = tf.TensorShape([q.shape[0], self.num_heads, q.shape[q_axis],
                                       k.shape[k_axis]])
        mask = combine_masks(*[align_mask(m, scores_shape) for m in (auto_mask, attention_mask)
                               if m is not None])
        if offset is not None:
            # Cache slots after index + t are empty (or in the future): causal from index.
            causal = True
        elif causal:
            offset = key_length - query_length

        if not fused:
            # Scale the (T x dk) query rather than the (T x S) scores, as Keras MHA does.
            q = _heads_first(q * tf.cast(scale, dtype))
            if not use_cache:
                k, v = _heads_first(k), _heads_first(v)
        output, scores = self._attend(q, k, v, mask, causal, offset, training, use_cache,
                                      return_attention_scores)
        output = self.output_dense(tf.transpose(output, [0, 2, 1, 3]))

        outputs = (output,)
        if return_attention_scores:
            outputs += (scores,)
        if use_cache:
            outputs += (new_cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _project_self_attention(self, x, scale):
        """(B, L, D) -> scaled q, k, v of shape (B, H, L, dk) with one fused projection.

        The three kernels are concatenated into one (D, 3H, dk) kernel (the 1/sqrt(dk)
        scale folded into the query's part), so the input is read once by one larger matmul
        and one transpose brings q, k and v to the (B, H, L, dk) layout of the attention
        matmuls. The variables stay separate, as in Keras MHA.
        """
        dtype = x.dtype
        heads, depth = self.num_heads, self.key_dim
        kernel = tf.concat([tf.cast(self.query_dense.kernel, dtype) * tf.cast(scale, dtype),
                            tf.cast(self.key_dense.kernel, dtype),
                            tf.cast(self.value_dense.kernel, dtype)], axis=1)
        shape = tf.shape(x)
        qkv = tf.matmul(tf.reshape(x, [-1, shape[-1]]),
                        tf.reshape(kernel, [kernel.shape[0], 3 * heads * depth]))
        if self.use_bias:
            bias = tf.concat([tf.cast(self.query_dense.bias, dtype) * tf.cast(scale, dtype),
                              tf.cast(self.key_dense.bias, dtype),
                              tf.cast(self.value_dense.bias, dtype)], axis=0)
            qkv = qkv + tf.reshape(bias, [-1])
        qkv = tf.reshape(qkv, tf.stack([shape[0], shape[1], 3, heads, depth]))
        # unstack, not slicing: the gradient of a slice is a zero-padded full-size tensor.
        return tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), num=3)  # 3 x (B, H, L, dk)

    def _attend(self, q, k, v, mask, causal, offset, training, use_cache, return_scores):
        """(B, H, T, dk), (B, H, S, dk), (B, H, S, dv) -> (B, H, T, dv) output and weights
        (None unless `return_scores`: without the weights the attention gradient is
        cheaper)."""
        impl = self.attention_impl
        query_length, key_length = tf.shape(q)[2], tf.shape(k)[2]
        if impl == "local" and use_cache:
            # A decoding step attends over the cache anyway: the band mask at the queries'
            # absolute positions gives local attention exactly, without equal lengths.
            band = band_mask(query_length, key_length, window=self.window, causal=True,
                             offset=offset)
            mask = combine_masks(mask, band[tf.newaxis, tf.newaxis])
            impl = "full"
        if impl == "full":
            if causal:
                mask = combine_masks(mask, causal_mask(query_length, key_length, offset)[
                    tf.newaxis, tf.newaxis])
            if not return_scores:
                return scaled_dot_product_attention(
                    q, k, v, mask=mask, scale=1.0, dropout_rate=self.dropout,
                    training=training), None
            return scaled_dot_product_attention(
                q, k, v, mask=mask, scale=1.0, dropout_rate=self.dropout, training=training,
                return_weights=True)
        if impl == "chunked":
            sizes = {} if self.chunk_size is None else dict(
                query_chunk_size=self.chunk_size, key_chunk_size=self.chunk_size)
            return chunked_attention(q, k, v, mask=mask, causal=causal, scale=1.0,
                                     causal_offset=offset, **sizes), None
        return local_attention(q, k, v, self.window, causal=causal, mask=mask,
                               scale=1.0), None

    def _check_cache(self, key_cache, value_cache):
        expected = (("key_cache", key_cache, self.key_dim), ("value_cache", value_cache,
                                                              self.value_dim))
        for name, c, depth in expected:
            if c.shape.rank is not None and (
                    c.shape.rank != 4 or
                    not c.shape[1:2].is_compatible_with([self.num_heads]) or
                    not c.shape[3:].is_compatible_with([depth])):
                raise ValueError("%s must have shape (B, %d, S_max, %d), got %s"
                                 % (name, self.num_heads, depth, shape_str(c)))

    def compute_mask(self, query, mask=None):
        # Each output position is a query position: the query's Keras mask carries over.
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_dim": self.output_dim,
            "attention_impl": self.attention_impl,
            "window": self.window,
            "chunk_size": self.chunk_size,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": tf.keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": tf.keras.regularizers.serialize(
                self.activity_regularizer),
            "kernel_constraint": tf.keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": tf.keras.constraints.serialize(self.bias_constraint),
        })
        # Like Keras MHA: the shapes the projections were built for, so that `from_config`
        # creates the variables before a SavedModel or H5 load restores their values.
        shapes = self._input_shapes or {}
        for name in ("query", "value", "key"):
            config[name + "_shape"] = shapes.get(name)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        shapes = [config.pop(name + "_shape", None) for name in ("query", "value", "key")]
        layer = cls(**config)
        if shapes[0] is not None and shapes[1] is not None:
            layer._build_projections(*shapes)
        return layer


def _heads_first(x):
    """(B, L, H, depth) -> (B, H, L, depth), the layout of the attention matmuls."""
    return tf.transpose(x, [0, 2, 1, 3])
