"""Multi-head attention whose output is a learned gate between the attended context and x."""
import tensorflow as tf

from attnlab.layers.layer_helpers import clone_initializer, init_scope
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.validation import check_floating, shape_str

# MultiHeadAttention's constructor arguments that GatedAttention keeps at their defaults
# (the gate needs the output depth to be the query's, and the "full" kernel's weights).
MHA_ONLY_ARGUMENTS = ("output_shape", "output_dim", "attention_axes", "activity_regularizer",
                      "kernel_constraint", "bias_constraint", "attention_impl", "window",
                      "chunk_size")


@tf.keras.utils.register_keras_serializable(package="attnlab")
class GatedAttention(MultiHeadAttention):
    """Attention whose context is mixed with the query input by a learned sigmoid gate.

    With x the query input (B, T, D) and c the multi-head attention context projected
    back to D:

        g = sigmoid([x; c] W_g + b_g)        (W_g: (2D, D), b_g: (D,))
        output = g * c + (1 - g) * x

    The gate decides per position and feature how much attended information replaces
    the input (a highway / GRU-style update). As b_g -> +inf the layer is plain
    multi-head attention; as b_g -> -inf it is the identity. The context is
    MultiHeadAttention's ("full" kernel), with its projections and variables.

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
            True = may attend. Keras masks carried by `query`, `value` and `key` are added.
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
        fixed = sorted(set(kwargs) & set(MHA_ONLY_ARGUMENTS))
        if fixed:
            raise TypeError("GatedAttention does not take MultiHeadAttention's %s"
                            % ", ".join(fixed))
        super().__init__(num_heads, key_dim, value_dim=value_dim, dropout=dropout,
                         use_bias=bool(use_bias), kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, **kwargs)
        self.gate_bias_initializer = tf.keras.initializers.get(gate_bias_initializer)

    def _build_from_signature(self, query, value, key=None):
        """MultiHeadAttention's projections, then the gate: W_g (2D, D) and b_g (D,)."""
        super()._build_from_signature(query, value, key)
        depth = self._query_shape[-1]
        with init_scope():
            self.gate_kernel = self.add_weight(
                "gate_kernel", shape=(2 * depth, depth),
                initializer=clone_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer, trainable=True)
            self.gate_bias = self.add_weight(
                "gate_bias", shape=(depth,),
                initializer=clone_initializer(self.gate_bias_initializer),
                regularizer=self.bias_regularizer, trainable=True)

    def call(self, query, value=None, key=None, attention_mask=None, causal=False,
             training=None, return_weights=False):
        value = query if value is None else value
        inputs = {"query": query, "value": value, "key": value if key is None else key}
        for name, tensor in inputs.items():
            tensor = tf.convert_to_tensor(tensor)
            check_floating(name, tensor)
            if tensor.shape.rank != 3 or tensor.shape[-1] is None:
                raise ValueError("GatedAttention expects %s of shape (B, length, depth) with a "
                                 "known depth, got %s" % (name, shape_str(tensor)))
        attended = super().call(query, value, key, attention_mask=attention_mask,
                                return_attention_scores=return_weights, training=training,
                                causal=causal)
        context, weights = attended if return_weights else (attended, None)
        x = tf.cast(query, self.compute_dtype)
        gate = tf.sigmoid(tf.matmul(tf.concat([x, context], axis=-1), self.gate_kernel)
                          + self.gate_bias)
        output = gate * context + (1.0 - gate) * x
        return (output, weights) if return_weights else output

    def get_config(self):
        # MultiHeadAttention's config (with the input shapes, which let a SavedModel load
        # create the variables before restoring them) without the arguments this layer fixes.
        config = super().get_config()
        for name in MHA_ONLY_ARGUMENTS:
            config.pop(name, None)  # output_dim is an alias, never in the config
        config["gate_bias_initializer"] = tf.keras.initializers.serialize(
            self.gate_bias_initializer)
        return config
