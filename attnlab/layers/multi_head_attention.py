"""Multi-head attention with the public API of tf.keras.layers.MultiHeadAttention, a choice
of attention kernel (`attnlab.ops.kernels`) and a KV cache for incremental decoding."""
import math

import tensorflow as tf

from attnlab.layers.attention_layout import AttentionLayout, projection_equation
from attnlab.layers.kv_cache import empty_cache, update_cache
from attnlab.layers.layer_helpers import (
    clone_initializer,
    dropout_rate,
    init_scope,
    sequence_length,
)
from attnlab.layers.positional.rotary import RotaryEmbedding
from attnlab.ops.kernels import (
    FULL_KERNELS,
    attention_kernel,
    check_attention_impl,
    resolve_attention_impl,
)
from attnlab.ops.masks import align_mask, band_mask, causal_mask, combine_masks
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention, static_training
from attnlab.ops.score_bias import align_bias
from attnlab.validation import check_bool, check_floating, check_positive_int, shape_str

# Exported as experimental in TF 2.9, also under tf.keras.layers from TF 2.10 on.
EinsumDense = getattr(tf.keras.layers, "EinsumDense", None) or \
    tf.keras.layers.experimental.EinsumDense
# Constructor arguments of attnlab's layer that tf.keras.layers.MultiHeadAttention lacks.
ATTNLAB_ARGUMENTS = ("attention_impl", "window", "chunk_size", "rotary_embedding")
# What a `rotary_embedding` config may set (the arguments of RotaryEmbedding).
ROTARY_ARGUMENTS = ("max_wavelength", "scaling_factor")


def _check_output_shape(name, output_shape):
    if output_shape is None:
        return None
    if isinstance(output_shape, (list, tuple, tf.TensorShape)):
        dims = list(output_shape)
        if dims and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                        for d in dims):
            return output_shape
        raise ValueError("%s must be a positive integer or a non-empty sequence of positive "
                         "integers, got %r" % (name, output_shape))
    return check_positive_int(name, output_shape)


def _check_rotary(rotary_embedding, key_dim):
    """`rotary_embedding` (None, a RotaryEmbedding or a dict of its arguments) as a layer."""
    if rotary_embedding is None or isinstance(rotary_embedding, RotaryEmbedding):
        rotary = rotary_embedding
    elif isinstance(rotary_embedding, dict):
        unknown = sorted(set(rotary_embedding) - set(ROTARY_ARGUMENTS))
        if unknown:
            raise ValueError("rotary_embedding may set %s, got %s"
                             % (", ".join(ROTARY_ARGUMENTS), ", ".join(map(str, unknown))))
        rotary = RotaryEmbedding(name="rotary_embedding", **rotary_embedding)
    else:
        raise TypeError("rotary_embedding must be None, a RotaryEmbedding or a dict of its "
                        "arguments (%s), got %r" % (", ".join(ROTARY_ARGUMENTS),
                                                    rotary_embedding))
    if rotary is not None and key_dim % 2:
        raise ValueError("rotary_embedding rotates pairs of query/key features: key_dim must "
                         "be even, got key_dim=%d" % key_dim)
    return rotary


def _to_dense(ragged, shape=None):
    """A ragged (B, None, D) input as a dense tensor and its (B, S) validity mask."""
    if ragged.ragged_rank != 1 or ragged.shape.rank != 3:
        raise ValueError("ragged inputs must be (B, None, D) with one ragged axis, got shape "
                         "%s with ragged_rank %d" % (ragged.shape, ragged.ragged_rank))
    dense = ragged.to_tensor(shape=shape)
    valid = tf.sequence_mask(ragged.row_lengths(), tf.shape(dense)[1])
    return dense, valid


@tf.keras.utils.register_keras_serializable(package="attnlab")
class MultiHeadAttention(tf.keras.layers.Layer):
    """Multi-head attention (Vaswani et al. 2017): a drop-in for
    tf.keras.layers.MultiHeadAttention with a selectable kernel and a KV cache.

    Constructor and call arguments, variables (names, shapes, order), `get_config`,
    `compute_output_shape`, Keras masks, ragged inputs, `attention_axes` and the
    `_compute_attention` / `_build_from_signature` hooks of subclasses follow
    tf.keras.layers.MultiHeadAttention (Keras 2.15), so swapping the import keeps a model's
    code, configs and weights. `from_keras` / `to_keras` convert built layers both ways.

    Where attnlab deliberately differs from Keras:
    - a query with no visible key gets zero weights and a zero attention output (Keras
      spreads its weights uniformly over the hidden keys);
    - the padding of ragged key/value inputs is masked (Keras attends to the zero padding);
    - `compute_output_shape` does not require the query and value depths to be equal
      (the layer never did);
    - `causal=True` aligns the causal mask bottom-right (query i sees keys j <= i + S - T,
      right for a KV cache), while `use_causal_mask=True` is Keras's top-left j <= i;
    - inputs are cast to the layer's compute dtype.

    Args:
        num_heads: H.
        key_dim: dk, depth of each head's queries and keys.
        value_dim: dv, depth of each head's values (default dk).
        dropout: dropout rate on the attention weights during training (full kernels only).
        use_bias: add biases to the four projections.
        output_shape: depth of the output, an int or a shape such as (3, 2) (the output is
            then (B, T, 3, 2)); default: the query depth D. `output_dim`, its name before
            attnlab followed Keras, is still accepted.
        attention_axes: the axes of (B, ..., D) inputs to attend over (default: every axis
            but the batch and the depth); the other axes are independent, like the batch.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        activity_regularizer, kernel_constraint, bias_constraint: as in Keras Dense.
        attention_impl: the attention kernel (`attnlab.ops.kernels`): "auto" (the default:
            `default_attention_impl()`), "full" or "full_exp" (materialize the (B, H, T, S)
            weights), "chunked" or "chunked_exp" (memory-efficient) or "local" (each query
            sees keys within `window` positions; one attention axis).
        window: the local window; required for "local".
        chunk_size: query and key chunk size of the chunked kernels (default:
            chunked_attention's).
        rotary_embedding: None (default), or rotary position embedding (RoPE) of the
            queries and keys: a `RotaryEmbedding` or a dict of its arguments
            (`{"max_wavelength": 10000, "scaling_factor": 1.0}`). Each head's projected
            queries and keys are rotated at their positions after the projection and before
            the kernel, so every kernel and the KV cache see rotated keys (the cache stores
            them rotated at `cache_update_index` + t). Positions start at 0 for queries and
            keys; with `causal=True` the T queries are the last T of the S key positions.
            Needs (B, T, D) inputs and an even `key_dim`.
        **kwargs: base Layer arguments (name, dtype, ...).

    Capture hook:
        `query_key_recorder` is None, or a callable that each call (and each cached step)
        invokes once, whatever the kernel, with keyword arguments, heads-first tensors:
        `scaled_query` (B, H, T, dk) (the rotated queries times `scale`), `key`
        (B, H, S, dk) (rotated), `scale` (float, 1/sqrt(dk)), `bias` (the aligned
        `attention_bias`, broadcastable to (B, H, T, S), or None), `mask` (bool,
        broadcastable to (B, H, T, S), causal, Keras and "local" window masks included,
        or None),
        `scaled_query_unrotated` and `key_unrotated` (before the rotary embedding; None
        without one). The weights are then softmax(scaled_query . key + bias) over the
        keys where `mask` is True. `attnlab.viz.capture` sets it during one eager pass;
        when None the layer runs exactly as without it (no graph op is added).

    Call arguments:
        query: (B, T, D), or (B, ..., D) with `attention_axes`; may be ragged (B, None, D).
        value: (B, S, Dv), same rank as the query; may be ragged.
        key: (B, S, Dk), default `value`; may be ragged.
        attention_mask: bool or 0/1 mask of the scores' shape (B, [H,] T, S) or one that
            broadcasts to it after the missing axes are added in front of the query axes, as
            in Keras (True = may attend). Keras masks on query (B, T) and value/key (B, S)
            are combined in.
        return_attention_scores: also return the weights (B, H, T, S) (full kernels only;
            they are then computed by `scaled_dot_product_attention`, the reference).
        training: dropout switch.
        use_causal_mask: Keras's causal mask: query i sees keys j <= i.
        attention_bias: a floating tensor added to the scaled scores before the softmax
            (prior knowledge such as a distance prior or term weights), broadcastable to
            (B, H, T, S): e.g. (B, 1, 1, S) per key, (1, H, T, S) per head, (B, T, S) (a head
            axis is added). Every kernel takes it (`attnlab.ops.score_bias`); it gets a
            gradient. (B, T, D) inputs only.
        causal: attnlab's causal mask, aligned so the last query sees the last key.
        cache: `(key_cache (B, H, S_max, dk), value_cache (B, H, S_max, dv))`, head-major,
            see `init_cache`. With `cache_update_index` the projected keys/values of the T
            new tokens are written at positions index..index+T-1 and the queries attend over
            the whole cache causally (query t sits at position index + t); without it the
            cache is read as precomputed keys/values (e.g. cross-attention over an encoder
            output, see `project_cache`). Keras masks of value/key are not used with a
            cache (they describe only the new tokens). (B, T, D) inputs only.
        cache_update_index: scalar int position of the first new token in the cache.
            With "local" attention, cached decoding uses the causal band of `window`
            positions at the queries' absolute positions.

    Returns:
        (B, T, *output_shape) output (ragged when the query is); `(output, scores)` with
        `return_attention_scores`; with a cache, the updated cache is appended:
        `(output, cache)` or `(output, scores, cache)`.

    Example:
        >>> mha = MultiHeadAttention(num_heads=2, key_dim=4)
        >>> x = tf.random.normal([2, 5, 8])
        >>> mha(x, x, use_causal_mask=True).shape
        TensorShape([2, 5, 8])
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, attention_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 attention_impl="auto", window=None, chunk_size=None, rotary_embedding=None,
                 **kwargs):
        output_dim = kwargs.pop("output_dim", None)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = key_dim if value_dim is None else check_positive_int(
            "value_dim", value_dim)
        self.dropout = dropout_rate("dropout", dropout)
        self.use_bias = check_bool("use_bias", use_bias)
        if output_dim is not None and output_shape is not None:
            raise ValueError("give output_shape or its former name output_dim, not both "
                             "(got output_shape=%r, output_dim=%r)" % (output_shape, output_dim))
        self._output_shape = _check_output_shape("output_shape", output_shape) \
            if output_dim is None else _check_output_shape("output_dim", output_dim)
        if isinstance(attention_axes, int) and not isinstance(attention_axes, bool):
            attention_axes = (attention_axes,)
        if attention_axes is not None and not all(
                isinstance(a, int) and not isinstance(a, bool) for a in attention_axes):
            raise TypeError("attention_axes must be an int or a sequence of ints, got %r"
                            % (attention_axes,))
        self._attention_axes = None if attention_axes is None else tuple(attention_axes)
        self.attention_impl = check_attention_impl(attention_impl, window)
        self.window = None if window is None else check_positive_int("window", window)
        self.chunk_size = None if chunk_size is None else check_positive_int(
            "chunk_size", chunk_size)
        self._kernel_name = resolve_attention_impl(attention_impl)
        self._kernel = attention_kernel(self._kernel_name, self.window, self.chunk_size)
        if self._kernel_name not in FULL_KERNELS and self.dropout > 0.0:
            raise ValueError("dropout=%r needs a full kernel (attention_impl 'auto', 'full' or "
                             "'full_exp'): %r attention never materializes the weights "
                             "dropout applies to" % (dropout, attention_impl))
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = tf.keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = tf.keras.constraints.get(kernel_constraint)
        self.bias_constraint = tf.keras.constraints.get(bias_constraint)
        self.supports_masking = True
        self._built_from_signature = False
        self._query_shape = self._key_shape = self._value_shape = None
        self._layout = None
        self.rotary_embedding = _check_rotary(rotary_embedding, self.key_dim)
        # See "Capture hook" in the class docstring; a plain attribute, not a weight.
        self.query_key_recorder = None

    # ----------------------------------------------------------------------------- build
    def build(self, query_shape, value_shape=None, key_shape=None):
        """Create the projections; Keras passes only the query shape, in which case they
        are created on the first call, when the value and key shapes are known."""
        if value_shape is not None and not self._built_from_signature:
            self._build_from_signature(query_shape, value_shape, key_shape)
        self.built = True

    def _build_from_signature(self, query, value, key=None):
        """Create the four projections for inputs (tensors or shapes) like these, as
        Keras's method of this name does (a custom layer's `build` may call it).

        Args:
            query: (B, ..., D) tensor or shape.
            value: (B, ..., Dv) tensor or shape of the query's rank.
            key: (B, ..., Dk) tensor or shape; default `value`.
        """
        shapes = {"query": query, "value": value, "key": value if key is None else key}
        for name, x in shapes.items():
            shapes[name] = tf.TensorShape(x.shape if hasattr(x, "shape") else x)
        rank = shapes["query"].rank
        for name, shape in shapes.items():
            if shape.rank is None or shape.rank < 3 or shape[-1] is None:
                raise ValueError(
                    "MultiHeadAttention expects %s of shape (B, length, depth) or "
                    "(B, ..., depth) with a known depth, got %s" % (
                        name, tuple(shape.as_list()) if shape.rank is not None
                        else "(unknown rank)"))
            if shape.rank != rank:
                raise ValueError("MultiHeadAttention expects query, value and key of one rank, "
                                 "got query %s and %s %s" % (
                                     tuple(shapes["query"].as_list()), name,
                                     tuple(shape.as_list())))
        self._layout = AttentionLayout(rank, self._attention_axes)
        self._attention_axes = self._layout.attention_axes
        self._query_shape, self._value_shape, self._key_shape = (
            shapes["query"], shapes["value"], shapes["key"])
        free = rank - 1  # the batch and position axes, kept by every projection
        heads = self.num_heads
        with init_scope():
            # Same creation order as Keras MHA: query, key, value, attention_output.
            self._query_dense = self._projection(
                "query", free, 1, [heads, self.key_dim], shapes["query"])
            self._key_dense = self._projection(
                "key", free, 1, [heads, self.key_dim], shapes["key"])
            self._value_dense = self._projection(
                "value", free, 1, [heads, self.value_dim], shapes["value"])
            self._build_attention(rank + 1)
            self._output_dense = self._projection(
                "attention_output", free, 2, self._output_dims(shapes["query"][-1]),
                shapes["query"][:-1].concatenate([heads, self.value_dim]))
        self._built_from_signature = True

    def _projection(self, name, free_dims, bound_dims, output_dims, input_shape):
        """A built EinsumDense (B, ..., <bound>) -> (B, ..., <output_dims>)."""
        equation, bias_axes = projection_equation(free_dims, bound_dims, len(output_dims))
        dense = EinsumDense(
            equation, output_shape=[None] * (free_dims - 1) + list(output_dims),
            bias_axes=bias_axes if self.use_bias else None, name=name,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer, bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint, bias_constraint=self.bias_constraint,
            dtype=self._dtype_policy)
        # Built now, under its own name, so the variables read query/kernel, ... as Keras
        # MHA's do (H5 needs the names unique) and exist before a weight load.
        with tf.name_scope(name):
            dense.build(input_shape)
        return dense

    def _build_attention(self, rank):
        """Hook of Keras MHA for subclasses that set up their own `_compute_attention`;
        attnlab's kernels need nothing built. `rank` is that of the projected tensors."""

    def _output_dims(self, query_depth):
        if self._output_shape is None:
            return [query_depth]
        if isinstance(self._output_shape, int):
            return [self._output_shape]
        return list(self._output_shape)

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
        if not self._built_from_signature:
            raise ValueError("project_cache needs a built layer: call it once first")
        self._check_inputs(value=value, key=key)
        key, value = (tf.cast(x, self.compute_dtype) for x in (key, value))
        keys = _heads_first(self._key_dense(key))
        if self.rotary_embedding is not None:
            keys = self.rotary_embedding.rotate(keys, 0, sequence_axis=2)
        return keys, _heads_first(self._value_dense(value))

    # ------------------------------------------------------------------------------ call
    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False,
             training=None, use_causal_mask=False, causal=False, cache=None,
             cache_update_index=None, attention_bias=None):
        query, value, key, key_is_value, query_lengths, padding = self._densify(
            query, value, key)
        use_cache = cache is not None
        # Read the Keras masks before any cast: a cast tensor no longer carries them.
        keras_masks = self._keras_masks(query, value, key, key_is_value, use_cache)
        self_attention = key_is_value and query is value
        query, value, key = (tf.convert_to_tensor(x) for x in (query, value, key))
        for name, x in (("query", query), ("value", value), ("key", key)):
            check_floating(name, x)
        if not self._built_from_signature:
            self._build_from_signature(query, value, key)
        self._check_inputs(query=query, value=value, key=key)
        self._check_call_options(query, value, return_attention_scores, use_causal_mask,
                                 causal, use_cache, cache_update_index)
        if attention_bias is not None and not self._layout.is_sequence:
            raise ValueError("attention_bias needs (B, T, D) inputs, got query of shape %s"
                             % shape_str(query))
        if self.rotary_embedding is not None and not self._layout.is_sequence:
            raise ValueError("rotary_embedding needs (B, T, D) inputs, got query of shape %s"
                             % shape_str(query))
        if attention_bias is not None and _overrides(self, "_compute_attention"):
            raise ValueError("attention_bias is not passed to an overridden "
                             "_compute_attention (Keras's hook has no bias argument)")
        dtype = self.compute_dtype
        query, value, key = (tf.cast(x, dtype) for x in (query, value, key))
        mask = attention_mask
        if self._layout.is_sequence:  # Keras and ragged masks exist for (B, T, D) inputs only
            mask = combine_masks(*[self._layout.keras_mask(m) for m in
                                   keras_masks + [padding, attention_mask] if m is not None])

        if use_cache:
            output, scores, new_cache = self._attend_with_cache(
                query, value, key, mask, cache, cache_update_index, training,
                return_attention_scores, attention_bias)
        elif _overrides(self, "_compute_attention"):
            output, scores = self._call_compute_attention(
                query, value, key, mask, use_causal_mask, causal, training)
        else:
            output, scores = self._project_and_attend(
                query, value, key, mask, use_causal_mask, causal, training,
                return_attention_scores, self_attention, attention_bias)
        output = self._output_dense(output)

        if query_lengths is not None:
            output = tf.RaggedTensor.from_tensor(output, lengths=query_lengths)
        outputs = (output,)
        if return_attention_scores:
            outputs += (scores,)
        if use_cache:
            outputs += (new_cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _densify(self, query, value, key):
        """Ragged inputs as dense tensors, as Keras MHA pads them, plus the lengths of a
        ragged query (to make its output ragged) and a (B, 1, S) mask of the keys' padding.
        """
        key_is_value = key is None
        if key_is_value:
            key = value
        query_lengths = None
        if isinstance(query, tf.RaggedTensor):
            query_lengths = query.nested_row_lengths()
            query, _ = _to_dense(query)
        valid = []
        key_ragged, value_ragged = (isinstance(x, tf.RaggedTensor) for x in (key, value))
        if key_ragged and value_ragged:
            if key_is_value:
                value, valid_value = _to_dense(value)
                key, valid = value, [valid_value]
            else:
                shape = tf.math.maximum(key.bounding_shape(), value.bounding_shape())
                (key, valid_key), (value, valid_value) = (_to_dense(x, shape)
                                                          for x in (key, value))
                valid = [valid_key, valid_value]
        elif key_ragged:
            key, valid_key = _to_dense(key, tf.shape(value))
            valid = [valid_key]
        elif value_ragged:
            value, valid_value = _to_dense(value, tf.shape(key))
            valid = [valid_value]
        padding = combine_masks(*valid)
        if padding is not None:
            padding = padding[:, tf.newaxis, :]
        return query, value, key, key_is_value, query_lengths, padding

    def _keras_masks(self, query, value, key, key_is_value, use_cache):
        """The Keras masks of the inputs, as Keras MHA reads them: query mask (B, T, 1),
        value and key masks (B, 1, S)."""
        parts = []
        sources = [("query", query)]
        if not use_cache:
            sources += [("value", value)] + ([] if key_is_value else [("key", key)])
        for name, x in sources:
            m = getattr(x, "_keras_mask", None)
            if m is None:
                continue
            if x.shape.rank != 3:
                raise ValueError(
                    "the %s carries a Keras mask, which MultiHeadAttention reads on (B, T, D) "
                    "inputs only, got %s of shape %s: pass attention_mask instead"
                    % (name, name, shape_str(x)))
            m = tf.cast(m, tf.bool)
            parts.append(m[:, :, tf.newaxis] if name == "query" else m[:, tf.newaxis, :])
        return parts

    def _check_inputs(self, **inputs):
        built = {"query": self._query_shape, "value": self._value_shape,
                 "key": self._key_shape}
        for name, x in inputs.items():
            expected = built[name]
            if x.shape.rank is not None and x.shape.rank != expected.rank:
                if expected.rank == 3:
                    raise ValueError("MultiHeadAttention expects %s of shape (B, length, "
                                     "depth), got %s" % (name, shape_str(x)))
                raise ValueError("MultiHeadAttention was built for %s of rank %d, got %s of "
                                 "shape %s" % (name, expected.rank, name, shape_str(x)))
            if x.shape[-1] is not None and x.shape[-1] != expected[-1]:
                raise ValueError("MultiHeadAttention was built for %s depth %d, got %s of "
                                 "shape %s" % (name, expected[-1], name, shape_str(x)))

    def _check_call_options(self, query, value, return_scores, use_causal_mask, causal,
                            use_cache, cache_update_index):
        layout = self._layout
        if return_scores and self._kernel_name not in FULL_KERNELS:
            raise ValueError("return_attention_scores=True needs a full kernel "
                             "(attention_impl 'auto', 'full' or 'full_exp'); %r attention "
                             "does not compute the weights" % self.attention_impl)
        if use_causal_mask and causal:
            raise ValueError("use_causal_mask=True (Keras: query i sees keys j <= i) and "
                             "causal=True (keys j <= i + S - T) are two alignments of one "
                             "mask: give one of them")
        if (use_causal_mask or causal) and len(layout.attention_axes) != 1:
            raise ValueError("a causal mask needs one attention axis, got attention_axes=%r"
                             % (layout.attention_axes,))
        if self._kernel_name == "local" and len(layout.attention_axes) != 1:
            raise ValueError("attention_impl='local' needs one attention axis, got "
                             "attention_axes=%r" % (layout.attention_axes,))
        if use_cache and not layout.is_sequence:
            raise ValueError("a KV cache needs (B, T, D) inputs, got query of shape %s"
                             % shape_str(query))
        if use_cache and use_causal_mask:
            raise ValueError("use_causal_mask=True with a cache: the cache_update_index "
                             "already makes cached attention causal")
        axis = layout.attention_axes[0]
        if self._kernel_name == "local" and not use_cache and \
                not query.shape[axis:axis + 1].is_compatible_with(value.shape[axis:axis + 1]):
            raise ValueError("attention_impl='local' is self-attention: query and value need "
                             "the same length, got query %s and value %s"
                             % (shape_str(query), shape_str(value)))
        if cache_update_index is not None and not use_cache:
            raise ValueError("cache_update_index=%r was given without a cache"
                             % (cache_update_index,))

    def _project_and_attend(self, query, value, key, mask, use_causal_mask, causal, training,
                            return_scores, self_attention, bias=None):
        """Project, fold into the kernels' layout, attend, unfold: (B, ..., H, dv) output
        and Keras-layout weights (None unless `return_scores`)."""
        q, k, v = self._project(query, value, key, self_attention)  # (B', H, L, depth)
        offset = None
        if use_causal_mask:
            offset = 0
        elif causal:
            offset = tf.shape(k)[2] - tf.shape(q)[2]
        unrotated = None
        if self.rotary_embedding is not None:
            unrotated = (q, k)
            q, k = self._rotate(q, k, causal, 2)
        output, scores = self._attend(q, k, v, self._kernel_mask(mask, query, key),
                                      offset is not None, offset, training, False,
                                      return_scores, bias, unrotated=unrotated)
        if scores is not None:
            scores = self._layout.scores_from_heads_first(scores, query, key)
        return self._layout.from_heads_first(output, query), scores

    def _kernel_mask(self, mask, query, key):
        """A Keras-layout mask as the kernels' (B', 1 or H, T, S) mask."""
        if mask is None:
            return None
        if self._layout.is_sequence:
            return align_mask(mask, tf.TensorShape([query.shape[0], self.num_heads,
                                                    query.shape[1], key.shape[1]]))
        return self._layout.mask_heads_first(mask, query, key, self.num_heads)

    def _project(self, query, value, key, self_attention):
        """Scaled queries, keys and values in the kernels' layout (B', H, L, depth)."""
        scale = 1.0 / math.sqrt(float(self.key_dim))
        if self_attention and self._layout.is_sequence and self.key_dim == self.value_dim:
            return self._project_self_attention(query, scale)
        layout = self._layout
        q = layout.heads_first(self._query_dense(query) * tf.cast(scale, query.dtype))
        return q, layout.heads_first(self._key_dense(key)), layout.heads_first(
            self._value_dense(value))

    def _project_self_attention(self, x, scale):
        """(B, L, D) -> scaled q, k, v of shape (B, H, L, dk) with one fused projection.

        The three kernels are concatenated into one (D, 3H, dk) kernel (the 1/sqrt(dk)
        scale folded into the query's part), so the input is read once by one larger matmul
        and one transpose brings q, k and v to the (B, H, L, dk) layout of the attention
        matmuls. The variables stay separate, as in Keras MHA.
        """
        dtype = x.dtype
        heads, depth = self.num_heads, self.key_dim
        kernel = tf.concat([tf.cast(self._query_dense.kernel, dtype) * tf.cast(scale, dtype),
                            tf.cast(self._key_dense.kernel, dtype),
                            tf.cast(self._value_dense.kernel, dtype)], axis=1)
        shape = tf.shape(x)
        qkv = tf.matmul(tf.reshape(x, [-1, shape[-1]]),
                        tf.reshape(kernel, [kernel.shape[0], 3 * heads * depth]))
        if self.use_bias:
            bias = tf.concat([tf.cast(self._query_dense.bias, dtype) * tf.cast(scale, dtype),
                              tf.cast(self._key_dense.bias, dtype),
                              tf.cast(self._value_dense.bias, dtype)], axis=0)
            qkv = qkv + tf.reshape(bias, [-1])
        qkv = tf.reshape(qkv, tf.stack([shape[0], shape[1], 3, heads, depth]))
        # unstack, not slicing: the gradient of a slice is a zero-padded full-size tensor.
        return tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), num=3)  # 3 x (B, H, L, dk)

    def _attend_with_cache(self, query, value, key, mask, cache, cache_update_index,
                           training, return_scores, bias=None):
        """Attention of (B, T, D) queries over a KV cache, written first when
        `cache_update_index` is given; returns (B, T, H, dv) output, weights, new cache."""
        if not isinstance(cache, (tuple, list)) or len(cache) != 2:
            raise ValueError("cache must be a pair (key_cache, value_cache), got %r"
                             % (type(cache).__name__,))
        dtype = self.compute_dtype
        key_cache, value_cache = (tf.cast(c, dtype) for c in cache)
        self._check_cache(key_cache, value_cache)
        offset = None
        rotary = self.rotary_embedding
        if cache_update_index is not None:
            new_keys = _heads_first(self._key_dense(key))
            if rotary is not None:  # the cache holds keys rotated at their positions
                new_keys = rotary.rotate(new_keys, cache_update_index, sequence_axis=2)
            key_cache = update_cache(key_cache, new_keys, cache_update_index)
            value_cache = update_cache(value_cache, _heads_first(self._value_dense(value)),
                                       cache_update_index)
            # Cache slots after index + t are empty (or in the future): causal from index.
            offset = cache_update_index
        scale = 1.0 / math.sqrt(float(self.key_dim))
        q = _heads_first(self._query_dense(query) * tf.cast(scale, dtype))
        unrotated = None
        if rotary is not None:
            start = 0 if cache_update_index is None else cache_update_index
            if self.query_key_recorder is not None:
                # Cache slot j holds the key of position j: rotating back recovers it.
                unrotated = (q, rotary.rotate(key_cache, 0, sequence_axis=2, inverse=True))
            q = rotary.rotate(q, start, sequence_axis=2)
        if mask is not None:
            mask = align_mask(mask, tf.TensorShape([query.shape[0], self.num_heads,
                                                    query.shape[1], key_cache.shape[2]]))
        output, scores = self._attend(q, key_cache, value_cache, mask, offset is not None,
                                      offset, training, True, return_scores, bias,
                                      unrotated=unrotated)
        return _heads_first(output), scores, (key_cache, value_cache)

    def _call_compute_attention(self, query, value, key, mask, use_causal_mask, causal,
                                training):
        """The Keras path for subclasses that override `_compute_attention`: projected
        (B, ..., H, depth) tensors and a Keras-layout mask in, as Keras MHA calls it."""
        q, k, v = self._query_dense(query), self._key_dense(key), self._value_dense(value)
        if self.rotary_embedding is not None:  # (B, L, H, dk): positions on axis 1
            q, k = self._rotate(q, k, causal, 1)
        heads_axis = 1 + len(self._layout.batch_axes)
        if mask is not None and mask.shape[heads_axis] == 1:
            mask = tf.squeeze(mask, heads_axis)  # Keras's (B, T, S), without the head axis
        if use_causal_mask or causal:
            t, s = tf.shape(q)[1], tf.shape(k)[1]
            mask = combine_masks(mask, causal_mask(t, s, 0 if use_causal_mask else s - t)[
                tf.newaxis])
        return self._compute_attention(q, k, v, mask, training)

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        """Attention over projected tensors in Keras MHA's layout: the hook a subclass
        overrides (or calls) as it would Keras's.

        Args:
            query: (B, T, H, dk) projected queries (not yet scaled), or (B, ..., H, dk).
            key: (B, S, H, dk).
            value: (B, S, H, dv).
            attention_mask: Keras-layout mask (B, T, S) or broadcastable, True = attend.
            training: dropout switch.

        Returns:
            (B, T, H, dv) output and (B, H, T, S) weights (None unless "full").
        """
        layout = self._layout
        scale = 1.0 / math.sqrt(float(self.key_dim))
        q = layout.heads_first(query * tf.cast(scale, query.dtype))
        k, v = layout.heads_first(key), layout.heads_first(value)
        mask = None
        if attention_mask is not None:
            mask = layout.mask_heads_first(attention_mask, query, key, self.num_heads)
        output, scores = self._attend(q, k, v, mask, False, None, training, False,
                                      self._kernel_name in FULL_KERNELS)
        if scores is not None:
            scores = layout.scores_from_heads_first(scores, query, key)
        return layout.from_heads_first(output, query), scores

    def _attend(self, q, k, v, mask, causal, offset, training, use_cache, return_scores,
                bias=None, unrotated=None):
        """(B, H, T, dk), (B, H, S, dk), (B, H, S, dv) -> (B, H, T, dv) output and weights
        (None unless `return_scores`). Queries are already scaled (and rotated); `offset`
        aligns the causal mask; `bias` is the call's `attention_bias`; `unrotated` is
        (q, k) before the rotary embedding, for the capture hook. The layer's kernel
        computes the output; the weights and dropout on them come from the reference,
        `scaled_dot_product_attention`."""
        kernel, kernel_name = self._kernel, self._kernel_name
        if bias is not None:
            bias = align_bias(bias, tf.TensorShape([q.shape[0], self.num_heads, q.shape[2],
                                                    k.shape[2]]), q.dtype)
        if kernel_name == "local" and use_cache:
            # A decoding step attends over the cache anyway: the band mask at the queries'
            # absolute positions gives local attention exactly, without equal lengths.
            band = band_mask(tf.shape(q)[2], tf.shape(k)[2], window=self.window, causal=True,
                             offset=offset)
            mask = combine_masks(mask, band[tf.newaxis, tf.newaxis])
            kernel = attention_kernel("auto")
        if self.query_key_recorder is not None:
            self._record_query_key(q, k, mask, causal, offset, use_cache, bias, unrotated)
        dropout = self.dropout > 0.0 and static_training(training) is not False
        if not (return_scores or dropout):
            return kernel(q, k, v, mask=mask, causal=causal, offset=offset, bias=bias), None
        if causal:
            mask = combine_masks(mask, causal_mask(tf.shape(q)[2], tf.shape(k)[2], offset)[
                tf.newaxis, tf.newaxis])
        result = scaled_dot_product_attention(q, k, v, mask=mask, scale=1.0,
                                              dropout_rate=self.dropout, training=training,
                                              return_weights=return_scores, bias=bias)
        return result if return_scores else (result, None)

    def _record_query_key(self, q, k, mask, causal, offset, use_cache, bias, unrotated):
        """Hand this call's queries, keys, bias and complete mask to `query_key_recorder`."""
        if self._kernel_name == "local" and not use_cache:
            band = band_mask(tf.shape(q)[2], tf.shape(k)[2], window=self.window,
                             causal=causal)
            mask = combine_masks(mask, band[tf.newaxis, tf.newaxis])
        if causal:
            mask = combine_masks(mask, causal_mask(tf.shape(q)[2], tf.shape(k)[2], offset)[
                tf.newaxis, tf.newaxis])
        query_before, key_before = (None, None) if unrotated is None else unrotated
        self.query_key_recorder(scaled_query=q, key=k, scale=1.0 / math.sqrt(self.key_dim),
                                bias=bias, mask=mask, scaled_query_unrotated=query_before,
                                key_unrotated=key_before)

    def _rotate(self, q, k, causal, sequence_axis):
        """q (B, ..., T, ..., dk) and k (B, ..., S, ..., dk) rotated by the rotary embedding,
        positions along `sequence_axis`. Queries and keys start at position 0; causal
        queries are the last T of S positions, so query t and key j stay t + S - T - j
        apart (neither start negative)."""
        query_start = key_start = 0
        if causal:
            shift = sequence_length(k, sequence_axis) - sequence_length(q, sequence_axis)
            if isinstance(shift, int):
                query_start, key_start = max(shift, 0), max(-shift, 0)
            else:
                query_start, key_start = tf.maximum(shift, 0), tf.maximum(-shift, 0)
        rotary = self.rotary_embedding
        return (rotary.rotate(q, query_start, sequence_axis=sequence_axis),
                rotary.rotate(k, key_start, sequence_axis=sequence_axis))

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

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        """The output shape (B, ..., *output_shape) for inputs of these shapes.

        Raises:
            ValueError: when key and value differ in any axis but the last.
        """
        query_shape, value_shape = tf.TensorShape(query_shape), tf.TensorShape(value_shape)
        key_shape = value_shape if key_shape is None else tf.TensorShape(key_shape)
        if not value_shape[1:-1].is_compatible_with(key_shape[1:-1]):
            raise ValueError("All dimensions of value and key except the last must be equal, "
                             "got value %s and key %s" % (value_shape, key_shape))
        return query_shape[:-1].concatenate(self._output_dims(query_shape[-1]))

    # ---------------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": self._output_shape,
            "attention_axes": self._attention_axes,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": tf.keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": tf.keras.regularizers.serialize(
                self.activity_regularizer),
            "kernel_constraint": tf.keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": tf.keras.constraints.serialize(self.bias_constraint),
            "attention_impl": self.attention_impl,
            "window": self.window,
            "chunk_size": self.chunk_size,
            "rotary_embedding": None if self.rotary_embedding is None else {
                name: getattr(self.rotary_embedding, name) for name in ROTARY_ARGUMENTS},
        })
        # Like Keras MHA: the shapes the projections were built for, so that `from_config`
        # creates the variables before a SavedModel or H5 load restores their values.
        for name in ("query", "key", "value"):
            shape = getattr(self, "_%s_shape" % name)
            config[name + "_shape"] = None if shape is None else shape.as_list()
        return config

    @classmethod
    def from_config(cls, config):
        """The layer of an attnlab or a tf.keras.layers.MultiHeadAttention config, built
        (variables created) when the config records the input shapes."""
        config = dict(config)
        shapes = [config.pop(name + "_shape", None) for name in ("query", "value", "key")]
        layer = cls(**config)
        if shapes[0] is not None and shapes[1] is not None:
            layer._build_from_signature(*shapes)
        return layer

    @classmethod
    def from_keras(cls, keras_layer, **options):
        """An attnlab layer equivalent to a tf.keras.layers.MultiHeadAttention, with its
        weights when it is built.

        Args:
            keras_layer: a tf.keras.layers.MultiHeadAttention.
            **options: attnlab's own arguments (attention_impl, window, chunk_size,
                rotary_embedding).

        Example:
            >>> ours = MultiHeadAttention.from_keras(model.get_layer("attention"),
            ...                                      attention_impl="chunked")
        """
        if not isinstance(keras_layer, tf.keras.layers.MultiHeadAttention):
            raise TypeError("from_keras expects a tf.keras.layers.MultiHeadAttention, got %s"
                            % type(keras_layer).__name__)
        unknown = sorted(set(options) - set(ATTNLAB_ARGUMENTS))
        if unknown:
            raise TypeError("from_keras accepts only %s as options, got %s"
                            % (", ".join(ATTNLAB_ARGUMENTS), ", ".join(unknown)))
        layer = cls.from_config(dict(keras_layer.get_config(), **options))
        if keras_layer.weights:
            if not layer.weights:
                raise ValueError("the Keras layer has weights but no recorded input shapes; "
                                 "call it once through its _build_from_signature first")
            layer.set_weights(keras_layer.get_weights())
        return layer

    def to_keras(self):
        """The equivalent tf.keras.layers.MultiHeadAttention, with this layer's weights.

        Keras's layer computes full attention whatever `attention_impl` is (same values),
        and spreads a query with no visible key uniformly where this layer gives zeros.

        Raises:
            ValueError: the layer has a rotary embedding, which Keras's layer lacks.

        Example:
            >>> keras_layer = ours.to_keras()
        """
        if self.rotary_embedding is not None:
            raise ValueError("to_keras: tf.keras.layers.MultiHeadAttention has no rotary "
                             "embedding; this layer has rotary_embedding=%r"
                             % self.get_config()["rotary_embedding"])
        config = self.get_config()
        for name in ATTNLAB_ARGUMENTS:
            config.pop(name)
        layer = tf.keras.layers.MultiHeadAttention.from_config(config)
        if self.weights:
            # Keras creates its variables on the first call: one call on zeros builds them.
            inputs = [tf.zeros([1 if d is None else d for d in shape.as_list()],
                               self.compute_dtype)
                      for shape in (self._query_shape, self._value_shape, self._key_shape)]
            layer(*inputs)
            layer.set_weights(self.get_weights())
        return layer


def _overrides(layer, method):
    """Whether `layer`'s class replaces MultiHeadAttention's `method`."""
    return getattr(type(layer), method) is not getattr(MultiHeadAttention, method)


def _heads_first(x):
    """(B, L, H, depth) -> (B, H, L, depth), the layout of the attention matmuls."""
    return tf.transpose(x, [0, 2, 1, 3])
