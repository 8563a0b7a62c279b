"""Multi-head attention whose output is a learned gate between the attended context and x."""
import tensorflow as tf

from attnlab.ops.masks import align_mask, combine_masks
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention
from attnlab.ops.validation import check_floating, check_positive_int, check_rate, shape_str


def _fresh(initializer):
    # A reused unseeded initializer instance repeats its values: one copy per weight.
    return initializer.__class__.from_config(initializer.get_config())


@tf.keras.utils.register_keras_serializable(package="attnlab")
class GatedAttention(tf.keras.layers.Layer):
    """Attention whose context is mixed with the query input by a learned sigmoid gate.

    With x the query input (B, T, D) and c the multi-head attention context projected
    back to D:

        g = sigmoid([x; c] W_g + b_g)        (W_g: (2D, D), b_g: (D,))
        output = g * c + (1 - g) * x

    The gate decides per position and feature how much attended information replaces
    the input (a highway / GRU-style update). As b_g -> +inf the layer is plain
    multi-head attention; as b_g -> -inf it is the identity.

    Args:
        num_heads: number of attention heads H.
        key_dim: size of each head's queries and keys.
        value_dim: size of each head's values (default key_dim).
        dropout: dropout rate on the attention weights during training.
        use_bias: whether the query/key/value/output projections have biases.
        kernel_initializer: initializer of the projection and gate kernels.
        bias_initializer: initializer of the projection biases.
        gate_bias_initializer: initializer of b_g; a positive constant starts the layer
            closer to plain attention, a negative one closer to the identity.
        kernel_regularizer: optional regularizer of the kernels.
        bias_regularizer: optional regularizer of the biases.

    Call args:
        query: x, (B, T, D).
        value: (B, S, Dv); default: `query` (self-attention).
        key: (B, S, Dk); default: `value`.
        attention_mask: bool/0-1 mask broadcastable to (B, T, S) or (B, H, T, S),
            True = may attend. Keras masks carried by `query` and `value` are added.
        causal: hide keys after each query.
        training: enables dropout.
        return_weights: also return the (B, H, T, S) attention weights.

    Returns:
        (B, T, D) output (and the weights when `return_weights`).

    Example:
        >>> layer = GatedAttention(num_heads=2, key_dim=8)
        >>> x = tf.random.normal([2, 5, 16])
        >>> layer(x, causal=True).shape
        TensorShape([2, 5, 16])
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 gate_bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = key_dim if value_dim is None else check_positive_int(
            "value_dim", value_dim)
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.gate_bias_initializer = tf.keras.initializers.get(gate_bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = tf.keras.regularizers.get(bias_regularizer)
        self.supports_masking = True

    def _create_weights(self, model_dim, key_depth, value_depth):
        # Called from `call`: Keras's build() only sees the query's shape.
        heads = self.num_heads

        def kernel(name, shape):
            return self.add_weight(name, shape=shape,
                                   initializer=_fresh(self.kernel_initializer),
                                   regularizer=self.kernel_regularizer, trainable=True)

        def bias(name, shape, initializer=None):
            return self.add_weight(name, shape=shape,
                                   initializer=_fresh(initializer or self.bias_initializer),
                                   regularizer=self.bias_regularizer, trainable=True)

        self.query_kernel = kernel("query_kernel", (model_dim, heads, self.key_dim))
        self.key_kernel = kernel("key_kernel", (key_depth, heads, self.key_dim))
        self.value_kernel = kernel("value_kernel", (value_depth, heads, self.value_dim))
        self.output_kernel = kernel("output_kernel", (heads, self.value_dim, model_dim))
        if self.use_bias:
            self.query_bias = bias("query_bias", (heads, self.key_dim))
            self.key_bias = bias("key_bias", (heads, self.key_dim))
            self.value_bias = bias("value_bias", (heads, self.value_dim))
            self.output_bias = bias("output_bias", (model_dim,))
        self.gate_kernel = kernel("gate_kernel", (2 * model_dim, model_dim))
        self.gate_bias = bias("gate_bias", (model_dim,), self.gate_bias_initializer)

    def _project(self, x, kernel, bias_name):
        projected = tf.einsum("bsd,dhk->bhsk", x, kernel)
        if self.use_bias:
            projected += getattr(self, bias_name)[:, tf.newaxis, :]
        return projected

    def call(self, query, value=None, key=None, attention_mask=None, causal=False,
             training=None, return_weights=False):
        value = query if value is None else value
        # Keras masks (B, T) / (B, S) read before conversion, which drops them.
        keras_masks = [getattr(query, "_keras_mask", None), getattr(value, "_keras_mask", None)]
        key = value if key is None else key
        tensors = []
        for name, x in (("query", query), ("value", value), ("key", key)):
            x = tf.convert_to_tensor(x)
            check_floating(name, x)
            if x.shape.rank != 3 or x.shape[-1] is None:
                raise ValueError("GatedAttention expects %s of shape (B, length, depth) with a "
                                 "known depth, got %s" % (name, shape_str(x)))
            # Keras autocasts only the first argument; value/key may still be float32.
            tensors.append(tf.cast(x, self.compute_dtype))
        query, value, key = tensors
        # Checked by attribute: a SavedModel load restores the variables as attributes.
        if not hasattr(self, "gate_kernel"):
            with tf.init_scope():
                self._create_weights(query.shape[-1], key.shape[-1], value.shape[-1])

        # Everything is aligned to the (B, H, T, S) scores before combining, so a rank-4
        # attention mask and the (B, T) / (B, S) Keras masks broadcast correctly.
        scores_shape = tf.TensorShape([query.shape[0], self.num_heads, query.shape[1],
                                       key.shape[1]])
        query_mask, value_mask = keras_masks
        mask = combine_masks(
            None if attention_mask is None else align_mask(attention_mask, scores_shape),
            None if query_mask is None else query_mask[:, tf.newaxis, :, tf.newaxis],
            None if value_mask is None else value_mask[:, tf.newaxis, tf.newaxis, :])
        context, weights = scaled_dot_product_attention(
            self._project(query, self.query_kernel, "query_bias"),
            self._project(key, self.key_kernel, "key_bias"),
            self._project(value, self.value_kernel, "value_bias"),
            mask=mask, causal=causal, dropout_rate=self.dropout, training=bool(training),
            return_weights=True)
        context = tf.einsum("bhtv,hvd->btd", context, self.output_kernel)
        if self.use_bias:
            context += self.output_bias
        gate = tf.sigmoid(tf.matmul(tf.concat([query, context], axis=-1), self.gate_kernel)
                          + self.gate_bias)
        output = gate * context + (1.0 - gate) * query
        return (output, weights) if return_weights else output

    def compute_mask(self, query, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "gate_bias_initializer":
                tf.keras.initializers.serialize(self.gate_bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": tf.keras.regularizers.serialize(self.bias_regularizer),
        })
        return config
