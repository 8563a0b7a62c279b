"""GRU/LSTM encoder-decoder with additive (Bahdanau) or Luong attention."""
import tensorflow as tf

from attnlab.layers.additive_attention import AdditiveAttention
from attnlab.layers.luong_attention import LuongAttention
from attnlab.validation import check_choice, check_positive_int

CELLS = ("gru", "lstm")
ATTENTIONS = ("additive", "luong")


@tf.keras.utils.register_keras_serializable(package="attnlab")
class RNNSeq2Seq(tf.keras.Model):
    """Recurrent encoder-decoder; the decoder output attends over the encoder outputs.

    Luong et al. (2015) layout: the decoder RNN runs first, its output s_t queries the
    encoder outputs, and tanh(W [context; s_t]) predicts the next token. The RNN then runs
    over the whole target at once with teacher forcing, and one step at a time to decode.

    Args:
        source_vocab_size, target_vocab_size: vocabulary sizes (id 0 is padding).
        embed_dim: embedding width.
        units: RNN and attention width.
        cell: "gru" or "lstm".
        attention: "additive" (AdditiveAttention) or "luong" (LuongAttention, general).

    Call args:
        inputs: {"source": (B, S) ids, "target_in": (B, T) ids starting with <s>}.
        return_attention: also return {"cross_attention": (B, 1, T, S)}.

    Returns:
        float32 logits (B, T, target_vocab_size) (and the weights dict).

    Example:
        >>> model = RNNSeq2Seq(40, 15, attention="additive")
        >>> model({"source": tf.ones([2, 7], tf.int32), "target_in": tf.ones([2, 5], tf.int32)})
    """

    has_kv_cache = False

    def __init__(self, source_vocab_size, target_vocab_size, embed_dim=32, units=64,
                 cell="gru", attention="additive", **kwargs):
        super().__init__(**kwargs)
        self.source_vocab_size = check_positive_int("source_vocab_size", source_vocab_size)
        self.target_vocab_size = check_positive_int("target_vocab_size", target_vocab_size)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.units = check_positive_int("units", units)
        check_choice("cell", cell, CELLS)
        check_choice("attention", attention, ATTENTIONS)
        self.cell = cell
        self.attention_type = attention
        rnn = tf.keras.layers.GRU if cell == "gru" else tf.keras.layers.LSTM
        self.source_embedding = tf.keras.layers.Embedding(source_vocab_size, embed_dim,
                                                          name="source_embedding")
        self.target_embedding = tf.keras.layers.Embedding(target_vocab_size, embed_dim,
                                                          name="target_embedding")
        self.encoder_rnn = rnn(units, return_sequences=True, return_state=True, name="encoder")
        self.decoder_rnn = rnn(units, return_sequences=True, return_state=True, name="decoder")
        self.attention = AdditiveAttention(units, name="attention") if attention == "additive" \
            else LuongAttention("general", name="attention")
        self.combine = tf.keras.layers.Dense(units, activation="tanh", name="combine")
        self.project = tf.keras.layers.Dense(target_vocab_size, dtype="float32", name="logits")

    def encode(self, source, training=False):
        """Encoder outputs, source mask and the decoder's initial state."""
        source = tf.convert_to_tensor(source)
        mask = tf.not_equal(source, 0)
        outputs = self.encoder_rnn(self.source_embedding(source), mask=mask, training=training)
        return {"outputs": outputs[0], "mask": mask, "state": list(outputs[1:])}

    def _decode(self, target, memory, state, training=False):
        outputs = self.decoder_rnn(self.target_embedding(target), initial_state=state,
                                   training=training)
        decoded, new_state = outputs[0], list(outputs[1:])
        context, weights = self.attention(decoded, memory["outputs"],
                                          values_mask=memory["mask"], return_weights=True)
        hidden = self.combine(tf.concat([context, tf.cast(decoded, context.dtype)], -1))
        return self.project(hidden), weights, new_state

    def call(self, inputs, training=None, return_attention=False):
        memory = self.encode(inputs["source"], training=training)
        logits, weights, _ = self._decode(inputs["target_in"], memory, memory["state"],
                                          training=training)
        if return_attention:
            return logits, {"cross_attention": weights[:, tf.newaxis]}
        return logits

    # Decoding protocol (attnlab.decoding): the recurrent state is the RNN's "cache".
    def init_decode_state(self, memory, max_length):
        return memory["state"]

    def decode_step(self, tokens, memory, state, index):
        """logits (B, V) for the next token after `tokens` (B,), and the new state."""
        logits, _, new_state = self._decode(tokens[:, tf.newaxis], memory, state)
        return logits[:, 0], new_state

    def decode_full(self, prefix, memory):
        """Logits (B, L, V) of a whole prefix (B, L), recomputed from the start."""
        return self._decode(prefix, memory, memory["state"])[0]

    def get_config(self):
        return {"source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "embed_dim": self.embed_dim,
                "units": self.units, "cell": self.cell, "attention": self.attention_type,
                "name": self.name}
