"""The Transformer encoder block (Vaswani et al. 2017): self-attention + feed-forward, each
wrapped in a residual connection and LayerNorm (post-norm as in the paper, or pre-norm)."""
import tensorflow as tf

from attnlab.layers.layer_helpers import (
    build_sublayer,
    clone_initializer,
    dropout_rate,
    key_padding_mask,
    model_depth,
    without_keras_mask,
)
from attnlab.layers.mixture_of_experts import MixtureOfExperts, check_mixture_arguments
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.ops.kernels import FULL_KERNELS, check_attention_impl, resolve_attention_impl
from attnlab.ops.masks import combine_masks
from attnlab.validation import check_bool, check_floating, check_positive_int


def check_block_arguments(num_heads, intermediate_dim, dropout, norm_first, activation,
                          layer_norm_epsilon):
    """Validate the arguments both Transformer blocks share; returns (dropout, activation)."""
    check_positive_int("num_heads", num_heads)
    check_positive_int("intermediate_dim", intermediate_dim)
    dropout = dropout_rate("dropout", dropout)
    check_bool("norm_first", norm_first)
    # NaN fails both comparisons; an infinite epsilon would scale every output to zero.
    if isinstance(layer_norm_epsilon, bool) or not isinstance(layer_norm_epsilon, (int, float)) \
            or not 0 < layer_norm_epsilon < float("inf"):
        raise ValueError("layer_norm_epsilon must be a positive finite number, got %r"
                         % (layer_norm_epsilon,))
    try:
        activation = tf.keras.activations.get(activation)
    except ValueError as error:
        raise ValueError("activation %r is not a Keras activation: %s"
                         % (activation, error)) from None
    return dropout, activation


# The mixture-of-experts arguments of the blocks and their defaults (a dense feed-forward).
EXPERT_DEFAULTS = (("num_experts", None), ("expert_top_k", 1),
                   ("expert_capacity_factor", None), ("expert_load_balance_loss_weight", 0.01),
                   ("expert_router_z_loss_weight", 0.0), ("expert_dispatch", "gather"))


def check_expert_arguments(arguments):
    """Validate the blocks' mixture-of-experts arguments (a dict named as EXPERT_DEFAULTS);
    returns them with the numbers as floats. Expert options without num_experts are refused
    rather than ignored."""
    arguments = dict(arguments)
    if arguments["num_experts"] is None:
        stray = [name for name, default in EXPERT_DEFAULTS[1:] if arguments[name] != default]
        if stray:
            raise ValueError("%s only apply to a mixture-of-experts feed-forward: set "
                             "num_experts too" % ", ".join(stray))
        return arguments
    (arguments["expert_capacity_factor"], arguments["expert_load_balance_loss_weight"],
     arguments["expert_router_z_loss_weight"]) = check_mixture_arguments(
        arguments["num_experts"], arguments["expert_top_k"],
        arguments["expert_capacity_factor"], arguments["expert_load_balance_loss_weight"],
        arguments["expert_router_z_loss_weight"], arguments["expert_dispatch"],
        prefix="expert_")
    return arguments


@tf.keras.utils.register_keras_serializable(package="attnlab")
class TransformerEncoderBlock(tf.keras.layers.Layer):
    """One Transformer encoder layer: multi-head self-attention, then a feed-forward network.

    Post-norm (`norm_first=False`, the paper): x = LN(x + Drop(MHA(x))); x = LN(x + Drop(FFN(x))).
    Pre-norm (`norm_first=True`): x = x + Drop(MHA(LN(x))); x = x + Drop(FFN(LN(x))).
    FFN(x) = Dense(D)(activation(Dense(intermediate_dim)(x))). Each head has D // num_heads
    dimensions.

    With `num_experts` set, the FFN is a `MixtureOfExperts` of that many experts of width
    `intermediate_dim` (the attribute `feedforward_experts`, created in `build`): padding
    tokens are not routed, and a token dropped by every expert over capacity passes through
    the residual unchanged. Its auxiliary losses are in the block's `losses`; its routing is
    returned with `return_routing=True`.

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
        num_experts: None (default) for the dense FFN, or the number of experts E of a
            mixture-of-experts FFN.
        expert_top_k: experts per token (MixtureOfExperts' `top_k`).
        expert_capacity_factor: MixtureOfExperts' `capacity_factor` (None = unlimited).
        expert_load_balance_loss_weight: coefficient of the Switch load-balancing loss.
        expert_router_z_loss_weight: coefficient of the router z-loss.
        expert_dispatch: "gather" or "buffer" (MixtureOfExperts' `dispatch`).
        **kwargs: base Layer arguments.

    Call arguments:
        inputs: (B, T, D).
        attention_mask: optional mask broadcastable to (B, T, T); True = may attend.
        mask: (B, T) Keras padding mask (passed automatically, e.g. from
            Embedding(mask_zero=True)); padded tokens are hidden as keys.
        return_attention_scores: also return {"self": (B, H, T, T)} (full kernels only).
        return_routing: also return the mixture of experts' routing dict (see
            MixtureOfExperts); only with `num_experts`.
        training: dropout switch.

    Returns:
        (B, T, D), then the dict of attention weights and the routing dict when asked. The
        padding mask is passed on.

    Example:
        >>> block = TransformerEncoderBlock(num_heads=2, intermediate_dim=32)
        >>> block(tf.random.normal([2, 5, 8])).shape
        TensorShape([2, 5, 8])
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, norm_first=False,
                 activation="relu", layer_norm_epsilon=1e-5, attention_impl="auto",
                 window=None, chunk_size=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", num_experts=None, expert_top_k=1,
                 expert_capacity_factor=None, expert_load_balance_loss_weight=0.01,
                 expert_router_z_loss_weight=0.0, expert_dispatch="gather", **kwargs):
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
        experts = check_expert_arguments({
            "num_experts": num_experts, "expert_top_k": expert_top_k,
            "expert_capacity_factor": expert_capacity_factor,
            "expert_load_balance_loss_weight": expert_load_balance_loss_weight,
            "expert_router_z_loss_weight": expert_router_z_loss_weight,
            "expert_dispatch": expert_dispatch})
        for name, _ in EXPERT_DEFAULTS:
            setattr(self, name, experts[name])
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
        if self.num_experts is None:
            self.feedforward_intermediate = self._dense(
                self.intermediate_dim, "feedforward_intermediate", self.activation)
            build_sublayer(self.feedforward_intermediate, shape)
            self.feedforward_output = self._dense(depth, "feedforward_output")
            build_sublayer(self.feedforward_output,
                           shape[:-1].concatenate([self.intermediate_dim]))
        else:
            self.feedforward_experts = MixtureOfExperts(
                self.num_experts, self.intermediate_dim, top_k=self.expert_top_k,
                capacity_factor=self.expert_capacity_factor, activation=self.activation,
                load_balance_loss_weight=self.expert_load_balance_loss_weight,
                router_z_loss_weight=self.expert_router_z_loss_weight,
                dispatch=self.expert_dispatch,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self._dtype_policy, name="feedforward_experts")
            # Blocks' sublayers share one name; Keras would merge their metrics.
            self.feedforward_experts.metric_name = self.name + "_dropped_fraction"
            build_sublayer(self.feedforward_experts, shape)
        self.feedforward_norm = tf.keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self._dtype_policy, name="feedforward_norm")
        build_sublayer(self.feedforward_norm, shape)
        self.feedforward_dropout = tf.keras.layers.Dropout(
            self.dropout, dtype=self._dtype_policy)
        super().build(input_shape)

    def feedforward(self, x, training=None, mask=None, return_routing=False):
        """The position-wise feed-forward sublayer with its residual and norm.

        `mask` (B, T) marks the tokens a mixture of experts routes; with `return_routing`
        the result is `(x, routing)`.
        """
        residual = x
        if self.norm_first:
            x = self.feedforward_norm(x)
        routing = None
        if self.num_experts is None:
            x = self.feedforward_output(self.feedforward_intermediate(x))
        else:
            x = self.feedforward_experts(without_keras_mask(x), mask=mask,
                                         return_routing=return_routing)
            if return_routing:
                x, routing = x
        x = residual + self.feedforward_dropout(x, training=training)
        if not self.norm_first:
            x = self.feedforward_norm(x)
        return (x, routing) if return_routing else x

    def _check_return_routing(self, return_routing):
        if return_routing and self.num_experts is None:
            raise ValueError("%s has a dense feed-forward: return_routing needs num_experts"
                             % self.name)

    def call(self, inputs, attention_mask=None, mask=None, return_attention_scores=False,
             training=None, return_routing=False):
        self._check_return_routing(return_routing)
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
        x = self.feedforward(x, training=training, mask=mask, return_routing=return_routing)
        if return_routing:
            x, routing = x
        outputs = (x,)
        if return_attention_scores:
            outputs += ({"self": scores},)
        if return_routing:
            outputs += (routing,)
        return outputs[0] if len(outputs) == 1 else outputs

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
        config.update({name: getattr(self, name) for name, _ in EXPERT_DEFAULTS})
        return config
