"""Attention text classifier: embedding -> self-attention -> masked pooling -> dense."""
import tensorflow as tf

from attnlab.layers.custom_attention import CustomAttention
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.validation import check_choice, check_positive_int

ATTENTIONS = ("custom", "multi_head")
POOLINGS = ("mean", "max")


@tf.keras.utils.register_keras_serializable(package="attnlab")
class AttentionClassifier(tf.keras.Model):
    """Classifies token sequences through one self-attention layer (no residual path).

    Without a residual connection every token reaches the classifier only through the
    attention weights, so on the trigger task the weights show which tokens decided.

    Args:
        vocab_size: token vocabulary size (id 0 is padding).
        num_classes: number of labels.
        embed_dim: D, embedding and attention width.
        attention: "custom" (CustomAttention, one head) or "multi_head" (attnlab MHA).
        num_heads: heads of "multi_head" (D must be divisible by it).
        pooling: "mean" or "max" over the real (non-padding) positions.

    Call args:
        inputs: int token ids (B, T), 0 = padding.
        return_attention: also return {"attention": (B, H, T, T) weights}.

    Returns:
        float32 logits (B, num_classes) (and the weights dict).

    Example:
        >>> model = AttentionClassifier(vocab_size=60, num_classes=4)
        >>> model(tf.constant([[5, 7, 0]])).shape
        TensorShape([1, 4])
    """

    def __init__(self, vocab_size, num_classes, embed_dim=32, attention="custom", num_heads=2,
                 pooling="mean", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        check_choice("attention", attention, ATTENTIONS)
        check_choice("pooling", pooling, POOLINGS)
        if attention == "multi_head" and embed_dim % num_heads:
            raise ValueError("embed_dim (%d) must be divisible by num_heads (%d)"
                             % (embed_dim, num_heads))
        self.attention_type = attention
        self.pooling = pooling
        self.embedding = tf.keras.layers.Embedding(vocab_size, embed_dim, name="embedding")
        if attention == "custom":
            self.attention = CustomAttention(embed_dim, return_weights=True, name="attention")
        else:
            self.attention = MultiHeadAttention(num_heads, embed_dim // num_heads,
                                                name="attention")
            build_self_attention(self.attention, embed_dim)
        self.classify = tf.keras.layers.Dense(num_classes, dtype="float32", name="classify")

    def call(self, inputs, training=None, return_attention=False):
        ids = tf.convert_to_tensor(inputs)
        mask = tf.not_equal(ids, 0)
        x = self.embedding(ids)
        if self.attention_type == "custom":
            y, weights = self.attention(x, mask=mask)
            weights = weights[:, tf.newaxis]
        else:
            y, weights = self.attention(x, x, attention_mask=mask[:, tf.newaxis, :],
                                        return_attention_scores=True, training=training)
        logits = self.classify(pool_over_tokens(y, mask, self.pooling))
        if return_attention:
            return logits, {"attention": weights}
        return logits

    def get_config(self):
        return {"vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "embed_dim": self.embed_dim, "attention": self.attention_type,
                "num_heads": self.num_heads, "pooling": self.pooling, "name": self.name}


def build_self_attention(attention, width):
    """Create a MultiHeadAttention's variables for (B, T, width) self-attention now.

    A SavedModel load rebuilds a subclassed model from its config and restores the
    variables that exist then; projections left to the first call would keep their fresh
    initial values.
    """
    shape = tf.TensorShape([None, None, width])
    attention._build_from_signature(shape, shape)


def pool_over_tokens(y, mask, pooling):
    """Mean or max of y (B, T, D) over the positions where mask (B, T) is True."""
    keep = tf.cast(mask, y.dtype)[..., tf.newaxis]
    if pooling == "mean":
        return tf.reduce_sum(y * keep, axis=1) / tf.maximum(
            tf.reduce_sum(keep, axis=1), tf.cast(1.0, y.dtype))
    return tf.reduce_max(tf.where(keep > 0, y, tf.cast(-1e4, y.dtype)), axis=1)


def attention_mass(weights, key_mask, query_mask=None):
    """Mean attention weight mass that queries put on the keys where `key_mask` is True.

    Args:
        weights: (B, H, T, S) attention weights.
        key_mask: bool (B, S), e.g. the trigger positions.
        query_mask: optional bool (B, T) of real queries (default all).

    Returns:
        float: the mass on the marked keys, averaged over heads and real queries.
    """
    weights = tf.cast(weights, tf.float32)
    on_keys = tf.reduce_sum(weights * tf.cast(key_mask, tf.float32)[:, None, None, :], -1)
    on_keys = tf.reduce_mean(on_keys, axis=1)  # (B, T)
    if query_mask is None:
        return float(tf.reduce_mean(on_keys).numpy())
    q = tf.cast(query_mask, tf.float32)
    return float((tf.reduce_sum(on_keys * q) / tf.reduce_sum(q)).numpy())
