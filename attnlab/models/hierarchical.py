"""Hierarchical Attention Network (Yang et al. 2016): words -> sentences -> document -> label."""
import tensorflow as tf

from attnlab.layers.attention_pooling import AttentionPooling
from attnlab.validation import check_positive_int, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class HierarchicalAttentionNetwork(tf.keras.Model):
    """Classifies documents of sentences through word attention and sentence attention.

    Reads like the paper: embed words; a bidirectional GRU encodes each sentence's words;
    word attention pools them into a sentence vector; a bidirectional GRU encodes the
    sentences; sentence attention pools them into a document vector; a dense layer gives the
    logits. Padding (id 0) is masked at both levels: padded words and fully padded sentences
    get weight 0 and do not change the output.

    Args:
        vocab_size: token vocabulary size (id 0 is padding).
        num_classes: number of labels.
        embed_dim: word embedding width.
        word_units: GRU units per direction of the word encoder.
        sentence_units: GRU units per direction of the sentence encoder.
        attention_units: hidden width u of both attention poolings.

    Call args:
        inputs: int token ids (B, S, T): S sentences of T words, 0 = padding.
        return_attention: also return {"word": (B, S, T), "sentence": (B, S)} weights.

    Returns:
        float32 logits (B, num_classes) (and the weights dict).

    Example:
        >>> model = HierarchicalAttentionNetwork(vocab_size=60, num_classes=4)
        >>> logits, weights = model(tf.constant([[[5, 7, 0], [9, 0, 0]]]),
        ...                         return_attention=True)
        >>> logits.shape, weights["word"].shape, weights["sentence"].shape
        (TensorShape([1, 4]), TensorShape([1, 2, 3]), TensorShape([1, 2]))
    """

    def __init__(self, vocab_size, num_classes, embed_dim=32, word_units=32, sentence_units=32,
                 attention_units=32, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.word_units = check_positive_int("word_units", word_units)
        self.sentence_units = check_positive_int("sentence_units", sentence_units)
        self.attention_units = check_positive_int("attention_units", attention_units)
        self.embedding = tf.keras.layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.word_encoder = tf.keras.layers.Bidirectional(
            tf.keras.layers.GRU(word_units, return_sequences=True), name="word_encoder")
        self.word_attention = AttentionPooling(attention_units, name="word_attention")
        self.sentence_encoder = tf.keras.layers.Bidirectional(
            tf.keras.layers.GRU(sentence_units, return_sequences=True), name="sentence_encoder")
        self.sentence_attention = AttentionPooling(attention_units, name="sentence_attention")
        self.classify = tf.keras.layers.Dense(num_classes, dtype="float32", name="classify")

    def call(self, inputs, training=None, return_attention=False):
        ids = tf.convert_to_tensor(inputs)
        if ids.dtype.is_floating or ids.dtype == tf.bool or ids.shape.rank != 3:
            raise ValueError("HierarchicalAttentionNetwork expects integer token ids of shape "
                             "(B, S, T) (sentences of words, 0 = padding), got %s %s"
                             % (ids.dtype.name, shape_str(ids)))
        word_mask = tf.not_equal(ids, 0)                        # (B, S, T)
        sentence_mask = tf.reduce_any(word_mask, axis=-1)       # (B, S)
        size = tf.shape(ids)
        batch, sentences, words = size[0], size[1], size[2]

        # The word encoder reads each sentence on its own: sentences become batch rows.
        x = self.embedding(ids)                                 # (B, S, T, E)
        x = tf.reshape(x, [batch * sentences, words, self.embed_dim])
        h = self.word_encoder(x, mask=tf.reshape(word_mask, [batch * sentences, words]),
                              training=training)
        h = tf.reshape(h, [batch, sentences, words, 2 * self.word_units])
        sentence_vectors, word_weights = self.word_attention(
            h, mask=word_mask, return_weights=True)             # (B, S, 2Uw), (B, S, T)

        g = self.sentence_encoder(sentence_vectors, mask=sentence_mask, training=training)
        document, sentence_weights = self.sentence_attention(
            g, mask=sentence_mask, return_weights=True)         # (B, 2Us), (B, S)
        logits = self.classify(document)
        if return_attention:
            return logits, {"word": word_weights, "sentence": sentence_weights}
        return logits

    def get_config(self):
        return {"vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "embed_dim": self.embed_dim, "word_units": self.word_units,
                "sentence_units": self.sentence_units,
                "attention_units": self.attention_units, "name": self.name}
