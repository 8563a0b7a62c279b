"""The Transformer encoder block (Vaswani et al. 2017): self-attention + feed-forward, each
wrapped in a residual connection and LayerNorm (post-norm as in the paper, or pre-norm)."""
import tensorflow as tf

from attnlab.layers.layer_helpers import (
    build_sublayer,
    clone_initializer,
    key_padding_mask,
    model_depth,
    without_keras_mask,
)
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.ops.kernels import FULL_KERNELS, check_attention_impl, resolve_attention_impl
from attnlab.ops.masks import combine_masks
from attnlab.validation import check_bool, check_floating, check_positive_int, check_rate


def check_block_arguments(num_heads, intermediate_dim, dropout, norm_first, activation,
                          layer_norm_epsilon):
    """Validate the arguments both Transformer blocks share; returns (dropout, activation)."""
    check_positive_int("num_heads", num_heads)
    check_positive_int("intermediate_dim", intermediate_dim)
    dropout = check_rate("dropout", dropout)
    check_bool("norm_first", norm_first)
    if isinstance(layer_norm_epsilon, bool) or not isinstance(layer_norm_epsilon, (int, float)) \
            or not layer_norm_epsilon > 0:
        raise ValueError("layer_norm_epsilon must be a positive number, got %r"
                         % (layer_norm_epsilon,))
    try:
        activation = tf.keras.activations.get(activation)
    except ValueError as error:
        raise ValueError("activation %r is not a Keras activation: %s"
                         % (activation, error)) from None
    return dropout, activation


@tf.keras.utils.register_keras_serializable(package="attnlab")
class TransformerEncoderBlock(tf.keras.layers.Layer):
    """One Transformer encoder layer: multi-head self-attention, then a feed-forward network.

    Post-norm (`norm_first=False`, the paper): x = LN(x + Drop(MHA(x))); x = LN(x + Drop(FFN(x))).
    Pre-norm (`norm_first=True`): x = x + Drop(MHA(LN(x))); x = x + Drop(FFN(LN(x))).
    FFN(x) = Dense(D)(activation(Dense(intermediate_dim)(x))). Each head has D // num_heads
    dimensions.

    Args:
        num_heads: attention heads H; must divide the model depth D.
        intermediate_dim: width of the feed-forward hidden layer.
        dropout: rate of the residual-branch dropouts and of the attention weights.
        norm_first: pre-norm instead of post-norm.
        activation: feed-forward activation (name or callable).
        layer_norm_epsilon: epsilon of the LayerNorms.
        attention_impl: the attention kernel, "auto" by default (see MultiHeadAttention and
            `attnlab.ops.kernels`); with the chunked and local kernels the attention
            weights get no dropout.
        window: window of "local" attention.
        chunk_size: chunk size of the chunked kernels.
        kernel_initializer: initializer of every kernel.
        bias_initializer: initializer of every bias.
        **kwargs: base Layer arguments.

    Call arguments:
        inputs: (B, T, D).
        attention_mask: optional mask broadcastable to (B, T, T); True = may attend.
        mask: (B, T) Keras padding mask (passed automatically, e.g. from
            Embedding(mask_zero=True)); padded tokens are hidden as keys.
        return_attention_scores: also return {"self": (B, H, T, T)} (full kernels only).
        training: dropout switch.

    Returns:
        (B, T, D), and the dict of attention weights when asked. The padding mask is passed on.

    Example:
        >>> block = TransformerEncoderBlock(num_heads=2, intermediate_dim=32)
        >>> block(tf.random.normal([2, 5, 8])).shape
        TensorShape([2, 5, 8])
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, norm_first=False,
                 activation="relu", layer_norm_epsilon=1e-5, attention_impl="auto",
                 window=None, chunk_size=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.dropout, self.activation = check_block_arguments(
            num_heads, intermediate_dim, dropout, norm_first, activation, layer_norm_epsilon)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_impl = check_attention_impl(attention_impl, window)
        self.window = None if window is None else check_positive_int("window", window)
        self.chunk_size = None if chunk_size is None else check_positive_int(
            "chunk_size", chunk_size)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _dense(self, units, name, activation=None):
        return tf.keras.layers.Dense(
            units, activation=activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer), dtype=self._dtype_policy,
            name=name)

    def build(self, input_shape):
        depth = model_depth(input_shape, self.num_heads, type(self).__name__)
        shape = tf.TensorShape([None, None, depth])
        self.self_attention = MultiHeadAttention(
            self.num_heads, depth // self.num_heads,
            dropout=self.dropout if resolve_attention_impl(self.attention_impl) in FULL_KERNELS
            else 0.0,
            attention_impl=self.attention_impl, window=self.window, chunk_size=self.chunk_size,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer), dtype=self._dtype_policy,
            name="self_attention")
        build_sublayer(self.self_attention, shape, shape)
        self.self_attention_norm = tf.keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self._dtype_policy,
            name="self_attention_norm")
        build_sublayer(self.self_attention_norm, shape)
        self.self_attention_dropout = tf.keras.layers.Dropout(
            self.dropout, dtype=self._dtype_policy)
        self.feedforward_intermediate = self._dense(
            self.intermediate_dim, "feedforward_intermediate", self.activation)
        build_sublayer(self.feedforward_intermediate, shape)
        self.feedforward_output = self._dense(depth, "feedforward_output")
        build_sublayer(self.feedforward_output, shape[:-1].concatenate([self.intermediate_dim]))
        self.feedforward_norm = tf.keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self._dtype_policy, name="feedforward_norm")
        build_sublayer(self.feedforward_norm, shape)
        self.feedforward_dropout = tf.keras.layers.Dropout(
            self.dropout, dtype=self._dtype_policy)
        super().build(input_shape)

    def feedforward(self, x, training=None):
        """The position-wise feed-forward sublayer with its residual and norm."""
        residual = x
        if self.norm_first:
            x = self.feedforward_norm(x)
        x = self.feedforward_output(self.feedforward_intermediate(x))
        x = residual + self.feedforward_dropout(x, training=training)
        if not self.norm_first:
            x = self.feedforward_norm(x)
        return x

    def call(self, inputs, attention_mask=None, mask=None, return_attention_scores=False,
             training=None):
        inputs = tf.convert_to_tensor(inputs)
        check_floating("inputs", inputs)
        x = tf.cast(without_keras_mask(inputs), self.compute_dtype)
        self_mask = combine_masks(key_padding_mask(mask), attention_mask)

        residual = x
        if self.norm_first:
            x = self.self_attention_norm(x)
        x = without_keras_mask(x)
        attended = self.self_attention(x, x, attention_mask=self_mask,
                                       return_attention_scores=return_attention_scores,
                                       training=training)
        if return_attention_scores:
            attended, scores = attended
        x = residual + self.self_attention_dropout(attended, training=training)
        if not self.norm_first:
            x = self.self_attention_norm(x)
        x = self.feedforward(x, training=training)
        if return_attention_scores:
            return x, {"self": scores}
        return x

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "norm_first": self.norm_first,
            "activation": tf.keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "attention_impl": self.attention_impl,
            "window": self.window,
            "chunk_size": self.chunk_size,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
        })
        return config
