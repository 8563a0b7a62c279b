"""The Transformer decoder block (Vaswani et al. 2017): causal self-attention, cross-attention
on the encoder output, feed-forward; residuals and LayerNorm; KV cache for decoding."""
import tensorflow as tf

from attnlab.layers.layer_helpers import (
    build_sublayer,
    check_same_batch,
    clone_initializer,
    key_padding_mask,
    model_depth,
    without_keras_mask,
)
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.layers.transformer_encoder import TransformerEncoderBlock
from attnlab.ops.masks import combine_masks
from attnlab.validation import check_bool, check_floating


@tf.keras.utils.register_keras_serializable(package="attnlab")
class TransformerDecoderBlock(TransformerEncoderBlock):
    """One Transformer decoder layer: causal self-attention, cross-attention, feed-forward.

    Post-norm (`norm_first=False`): x = LN(x + Drop(SelfMHA(x))); x = LN(x + Drop(CrossMHA(x,
    enc))); x = LN(x + Drop(FFN(x))). Pre-norm applies each LN to the sublayer input instead.
    Each head has D // num_heads dimensions; the encoder output must have depth D too.
    With `num_experts` the FFN is a `MixtureOfExperts` (attribute `feedforward_experts`), as
    in TransformerEncoderBlock. With an expert capacity, which tokens are dropped depends
    on the tokens of the call, so step-by-step decoding with a cache can drop differently
    from one call on the whole sequence; decode with `expert_capacity_factor=None` when the
    two must agree.

    Args:
        num_heads: attention heads H; must divide the model depth D.
        intermediate_dim: width of the feed-forward hidden layer.
        dropout: rate of the residual-branch dropouts and of the attention weights.
        norm_first: pre-norm instead of post-norm.
        activation: feed-forward activation.
        layer_norm_epsilon: epsilon of the LayerNorms.
        use_cross_attention: include the cross-attention sublayer (False gives a
            decoder-only, GPT-style block).
        kernel_initializer: initializer of every kernel.
        bias_initializer: initializer of every bias.
        num_experts, expert_top_k, expert_capacity_factor, expert_load_balance_loss_weight,
        expert_router_z_loss_weight, expert_dispatch: the mixture-of-experts feed-forward,
            as in TransformerEncoderBlock (num_experts=None: the dense FFN).
        **kwargs: base Layer arguments.

    Call arguments:
        inputs: (B, T, D) decoder sequence.
        encoder_output: (B, S, D); required with cross-attention, refused without.
        attention_mask: optional self-attention mask broadcastable to (B, T, T), or to
            (B, T, S_max) with a cache; combined with the causal mask.
        encoder_mask: (B, S) encoder padding mask (default: encoder_output's Keras mask).
        mask: (B, T) decoder padding mask (passed automatically by Keras); hides padded
            decoder keys. Not used with a cache (it describes only the new tokens).
        self_attention_cache: `(key_cache, value_cache)` of the self-attention, see
            `init_cache`.
        cache_update_index: position of the first of the T new tokens in the cache.
        cross_attention_cache: `(keys, values)` of the cross-attention over
            `encoder_output`, from `precompute_cross_attention`; given, they are used
            instead of projecting `encoder_output` again (once per sequence in decoding,
            not at every step).
        return_attention_scores: also return {"self": (B, H, T, T or S_max),
            "cross": (B, H, T, S)}.
        return_routing: also return the mixture of experts' routing dict; only with
            `num_experts`.
        training: dropout switch.

    Returns:
        (B, T, D); then the attention weight dict and the routing dict when asked; then
        the updated cache when a cache is given: `(output, cache)`,
        `(output, scores, cache)`, `(output, scores, routing, cache)`...

    Example:
        >>> block = TransformerDecoderBlock(num_heads=2, intermediate_dim=32)
        >>> block(tf.random.normal([2, 4, 8]), tf.random.normal([2, 6, 8])).shape
        TensorShape([2, 4, 8])
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, norm_first=False,
                 activation="relu", layer_norm_epsilon=1e-5, use_cross_attention=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 num_experts=None, expert_top_k=1, expert_capacity_factor=None,
                 expert_load_balance_loss_weight=0.01, expert_router_z_loss_weight=0.0,
                 expert_dispatch="gather", **kwargs):
        super().__init__(num_heads, intermediate_dim, dropout=dropout, norm_first=norm_first,
                         activation=activation, layer_norm_epsilon=layer_norm_epsilon,
                         kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, num_experts=num_experts,
                         expert_top_k=expert_top_k,
                         expert_capacity_factor=expert_capacity_factor,
                         expert_load_balance_loss_weight=expert_load_balance_loss_weight,
                         expert_router_z_loss_weight=expert_router_z_loss_weight,
                         expert_dispatch=expert_dispatch, **kwargs)
        self.use_cross_attention = check_bool("use_cross_attention", use_cross_attention)

    def build(self, input_shape):
        # Self-attention and feed-forward as in the encoder block; the cross-attention is
        # built here too (encoder depth = D), so every variable exists before a load.
        super().build(input_shape)
        depth = model_depth(input_shape, self.num_heads, type(self).__name__)
        shape = tf.TensorShape([None, None, depth])
        if self.use_cross_attention:
            self.cross_attention = MultiHeadAttention(
                self.num_heads, depth // self.num_heads, dropout=self.dropout,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer), dtype=self._dtype_policy,
                name="cross_attention")
            build_sublayer(self.cross_attention, shape, shape)
            self.cross_attention_norm = tf.keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self._dtype_policy,
                name="cross_attention_norm")
            build_sublayer(self.cross_attention_norm, shape)
            self.cross_attention_dropout = tf.keras.layers.Dropout(
                self.dropout, dtype=self._dtype_policy)

    def init_cache(self, batch_size, max_length, dtype=None):
        """An empty self-attention cache: (B, H, S_max, D // H) zeros, twice."""
        if not self.built:
            raise ValueError("init_cache needs a built block: call it once or build it with "
                             "the (B, T, D) input shape first")
        return self.self_attention.init_cache(batch_size, max_length, dtype)

    def precompute_cross_attention(self, encoder_output):
        """The cross-attention's keys and values of `encoder_output` (B, S, D), each
        (B, H, S, D // H): pass them as `cross_attention_cache` to every decoding step."""
        if not self.use_cross_attention:
            raise ValueError("%s was built with use_cross_attention=False" % self.name)
        if not self.built:
            raise ValueError("precompute_cross_attention needs a built block: call it once "
                             "first")
        return self.cross_attention.project_cache(
            without_keras_mask(tf.convert_to_tensor(encoder_output)))

    def call(self, inputs, encoder_output=None, attention_mask=None, encoder_mask=None,
             mask=None, self_attention_cache=None, cache_update_index=None,
             return_attention_scores=False, training=None, cross_attention_cache=None,
             return_routing=False):
        self._check_return_routing(return_routing)
        if self.use_cross_attention and encoder_output is None:
            raise ValueError("%s has cross-attention: pass encoder_output (B, S, D), or build "
                             "it with use_cross_attention=False" % self.name)
        if not self.use_cross_attention and encoder_output is not None:
            raise ValueError("%s was built with use_cross_attention=False but got an "
                             "encoder_output" % self.name)
        if encoder_output is not None and encoder_mask is None:
            encoder_mask = getattr(encoder_output, "_keras_mask", None)
        inputs = tf.convert_to_tensor(inputs)
        check_floating("inputs", inputs)
        if encoder_output is not None:
            # Named here: the cross-attention's own error speaks of (B, H, L, d) heads.
            # A decoding step runs inside the decoder's loop: no runtime assert there.
            encoder_output = check_same_batch(
                "TransformerDecoderBlock", ("inputs", "encoder_output"), inputs,
                tf.convert_to_tensor(encoder_output), runtime=self_attention_cache is None)
        x = tf.cast(without_keras_mask(inputs), self.compute_dtype)
        use_cache = self_attention_cache is not None
        scores = {}

        # Causal self-attention; with a cache the causal mask comes from the cache index.
        self_mask = combine_masks(None if use_cache else key_padding_mask(mask),
                                  attention_mask)
        residual = x
        if self.norm_first:
            x = self.self_attention_norm(x)
        x = without_keras_mask(x)
        attended = self.self_attention(
            x, x, attention_mask=self_mask, return_attention_scores=return_attention_scores,
            training=training, causal=not use_cache, cache=self_attention_cache,
            cache_update_index=cache_update_index)
        attended = list(attended) if (use_cache or return_attention_scores) else [attended]
        if use_cache:
            new_cache = attended.pop()
        if return_attention_scores:
            scores["self"] = attended[1]
        x = residual + self.self_attention_dropout(attended[0], training=training)
        if not self.norm_first:
            x = self.self_attention_norm(x)

        if self.use_cross_attention:
            memory = tf.cast(without_keras_mask(tf.convert_to_tensor(encoder_output)),
                             self.compute_dtype)
            residual = x
            if self.norm_first:
                x = self.cross_attention_norm(x)
            attended = self.cross_attention(
                without_keras_mask(x), memory, attention_mask=key_padding_mask(encoder_mask),
                return_attention_scores=return_attention_scores, training=training,
                cache=cross_attention_cache)
            if cross_attention_cache is not None:
                attended = attended[:-1] if return_attention_scores else attended[0]
            if return_attention_scores:
                attended, scores["cross"] = attended
            x = residual + self.cross_attention_dropout(attended, training=training)
            if not self.norm_first:
                x = self.cross_attention_norm(x)

        x = self.feedforward(x, training=training, mask=mask, return_routing=return_routing)
        if return_routing:
            x, routing = x
        outputs = (x,)
        if return_attention_scores:
            outputs += (scores,)
        if return_routing:
            outputs += (routing,)
        if use_cache:
            outputs += (new_cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        config = super().get_config()
        # The attention kernel choice is an encoder-block argument only: the decoder's
        # attention always takes the default ("auto": a full kernel).
        for name in ("attention_impl", "window", "chunk_size"):
            config.pop(name)
        config["use_cross_attention"] = self.use_cross_attention
        return config
