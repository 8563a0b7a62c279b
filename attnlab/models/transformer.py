"""Encoder-decoder Transformer (Vaswani et al. 2017) with a KV cache for decoding."""
import math

import tensorflow as tf

from attnlab.layers.positional.sinusoidal import SinusoidalPositionEncoding
from attnlab.layers.transformer_decoder import TransformerDecoderBlock
from attnlab.layers.transformer_encoder import TransformerEncoderBlock
from attnlab.validation import check_positive_int, check_rate


@tf.keras.utils.register_keras_serializable(package="attnlab")
class TransformerSeq2Seq(tf.keras.Model):
    """Encoder-decoder Transformer over token ids, with cached incremental decoding.

    Built from attnlab's TransformerEncoderBlock / TransformerDecoderBlock in their
    pre-norm form (LayerNorm before each sublayer, one final LayerNorm per stack), which
    trains without learning-rate tricks at these small sizes.

    Args:
        source_vocab_size, target_vocab_size: vocabulary sizes (id 0 is padding).
        d_model: D, model width.
        num_heads: H (D must be divisible by H).
        ff_dim: feed-forward hidden width.
        num_layers: encoder and decoder blocks each.
        dropout: dropout rate on sublayer outputs.
        max_length: longest target the KV cache holds.

    Call args:
        inputs: {"source": (B, S) ids, "target_in": (B, T) ids starting with <s>}.
        return_attention: also return {"encoder/0/self_attention": (B, H, S, S),
            "decoder/0/self_attention": (B, H, T, T), "decoder/0/cross_attention":
            (B, H, T, S), ...}.

    Returns:
        float32 logits (B, T, target_vocab_size) (and the weights dict).

    Example:
        >>> model = TransformerSeq2Seq(14, 14, d_model=32, num_heads=2)
        >>> model({"source": tf.ones([2, 7], tf.int32), "target_in": tf.ones([2, 5], tf.int32)})
    """

    has_kv_cache = True

    def __init__(self, source_vocab_size, target_vocab_size, d_model=64, num_heads=4,
                 ff_dim=128, num_layers=2, dropout=0.0, max_length=128, **kwargs):
        super().__init__(**kwargs)
        self.source_vocab_size = check_positive_int("source_vocab_size", source_vocab_size)
        self.target_vocab_size = check_positive_int("target_vocab_size", target_vocab_size)
        self.d_model = check_positive_int("d_model", d_model)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if d_model % num_heads:
            raise ValueError("d_model (%d) must be divisible by num_heads (%d)"
                             % (d_model, num_heads))
        self.ff_dim = check_positive_int("ff_dim", ff_dim)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.dropout_rate = check_rate("dropout", dropout)
        self.max_length = check_positive_int("max_length", max_length)
        self.source_embedding = tf.keras.layers.Embedding(source_vocab_size, d_model,
                                                          name="source_embedding")
        self.target_embedding = tf.keras.layers.Embedding(target_vocab_size, d_model,
                                                          name="target_embedding")
        self.positions = SinusoidalPositionEncoding(name="positions")
        self.encoder_blocks = [
            TransformerEncoderBlock(num_heads, ff_dim, dropout=dropout, norm_first=True,
                                    name="encoder_%d" % i) for i in range(num_layers)]
        self.decoder_blocks = [
            TransformerDecoderBlock(num_heads, ff_dim, dropout=dropout, norm_first=True,
                                    name="decoder_%d" % i) for i in range(num_layers)]
        self.encoder_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="enc_norm")
        self.decoder_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="dec_norm")
        self.project = tf.keras.layers.Dense(target_vocab_size, dtype="float32", name="logits")

    def _embed(self, layer, ids, start_index=0):
        x = layer(ids) * tf.cast(math.sqrt(self.d_model), layer.compute_dtype)
        return x + tf.cast(self.positions(x, start_index=start_index), x.dtype)

    def encode(self, source, training=False, weights=None):
        """Encoder output (B, S, D) and the source padding mask (B, S)."""
        source = tf.convert_to_tensor(source)
        mask = tf.not_equal(source, 0)
        x = self._embed(self.source_embedding, source)
        for i, block in enumerate(self.encoder_blocks):
            x, w = block(x, mask=mask, return_attention_scores=True, training=training)
            if weights is not None:
                weights["encoder/%d/self_attention" % i] = w["self"]
        return {"outputs": self.encoder_norm(x), "mask": mask}

    def _decode(self, target, memory, training=False, weights=None):
        x = self._embed(self.target_embedding, target)
        for i, block in enumerate(self.decoder_blocks):
            x, w = block(x, encoder_output=memory["outputs"], encoder_mask=memory["mask"],
                         return_attention_scores=True, training=training)
            if weights is not None:
                weights["decoder/%d/self_attention" % i] = w["self"]
                weights["decoder/%d/cross_attention" % i] = w["cross"]
        return self.project(self.decoder_norm(x))

    def call(self, inputs, training=None, return_attention=False):
        weights = {} if return_attention else None
        memory = self.encode(inputs["source"], training=training, weights=weights)
        logits = self._decode(inputs["target_in"], memory, training=training, weights=weights)
        if return_attention:
            return logits, weights
        return logits

    # Decoding protocol (attnlab.decoding).
    def init_decode_state(self, memory, max_length):
        """Per decoder block: an empty self-attention (key, value) cache of max_length
        positions, and the cross-attention keys and values of the encoder output,
        projected once here rather than at every step."""
        if max_length > self.max_length:
            raise ValueError("max_length %d exceeds the model's max_length %d"
                             % (max_length, self.max_length))
        batch = tf.shape(memory["outputs"])[0]
        if not self.decoder_blocks[0].built:
            self._decode(tf.ones([1, 1], tf.int32), {k: v[:1] for k, v in memory.items()})
        return [{"self": block.init_cache(batch, max_length),
                 "cross": block.precompute_cross_attention(memory["outputs"])}
                for block in self.decoder_blocks]

    def decode_step(self, tokens, memory, state, index):
        """Logits (B, V) after feeding `tokens` (B,) at position `index`, and the new cache."""
        x = self._embed(self.target_embedding, tokens[:, tf.newaxis], start_index=index)
        new_state = []
        for block, cache in zip(self.decoder_blocks, state):
            x, self_cache = block(x, encoder_output=memory["outputs"],
                                  encoder_mask=memory["mask"], self_attention_cache=cache["self"],
                                  cache_update_index=index, cross_attention_cache=cache["cross"])
            new_state.append({"self": self_cache, "cross": cache["cross"]})
        return self.project(self.decoder_norm(x))[:, 0], new_state

    def decode_full(self, prefix, memory):
        """Logits (B, L, V) of a whole prefix (B, L), recomputed without a cache."""
        return self._decode(prefix, memory)

    def get_config(self):
        return {"source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "d_model": self.d_model,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "num_layers": self.num_layers, "dropout": self.dropout_rate,
                "max_length": self.max_length, "name": self.name}
