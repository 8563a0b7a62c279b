"""Prior-guided attention classifier: a per-token prior added to the attention scores."""
import numpy as np
import tensorflow as tf

from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.models.classifier import POOLINGS, build_self_attention, pool_over_tokens
from attnlab.validation import check_bool, check_choice, check_positive_int


@tf.keras.utils.register_keras_serializable(package="attnlab")
class PriorGuidedClassifier(tf.keras.Model):
    """Classifies token sequences through self-attention whose scores carry a token prior.

    External knowledge about which tokens matter (term weights from a lexicon, statistics
    of another corpus) enters as an additive score bias: every query's score for key s
    gets `scale * token_prior[id_s]`, so the softmax weights are multiplied by
    exp(scale * prior) before normalization. The prior is a constant of the model (saved
    with it); `scale` is learned (starting at 1) when `learn_prior_scale`, so training can
    trust the prior less, or more.

    Args:
        vocab_size: token vocabulary size (id 0 is padding).
        num_classes: number of labels.
        token_prior: (vocab_size,) floats, the log-weight of each token id (0 = neutral),
            e.g. from `term_weight_prior`.
        embed_dim: D, embedding and attention width.
        num_heads: heads (D must be divisible by it).
        pooling: "mean" or "max" over the real (non-padding) positions.
        learn_prior_scale: learn the prior's scale (else it stays 1).

    Call args:
        inputs: int token ids (B, T), 0 = padding.
        return_attention: also return {"attention": (B, H, T, T) weights, "prior":
            (B, T) the scaled prior of each key}.

    Returns:
        float32 logits (B, num_classes) (and the dict).

    Example:
        >>> model = PriorGuidedClassifier(5, 2, token_prior=[0, 0, 2.0, 0, 0], embed_dim=8)
        >>> model(tf.constant([[1, 2, 0]])).shape
        TensorShape([1, 2])
    """

    def __init__(self, vocab_size, num_classes, token_prior, embed_dim=32, num_heads=2,
                 pooling="mean", learn_prior_scale=True, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.learn_prior_scale = check_bool("learn_prior_scale", learn_prior_scale)
        if embed_dim % num_heads:
            raise ValueError("embed_dim (%d) must be divisible by num_heads (%d)"
                             % (embed_dim, num_heads))
        prior = np.asarray(token_prior, dtype=np.float64)
        if prior.shape != (vocab_size,):
            raise ValueError("token_prior must have one value per token id, shape (%d,), got "
                             "shape %s" % (vocab_size, prior.shape))
        if not np.all(np.isfinite(prior)):
            raise ValueError("token_prior must be finite (a log-weight; mask tokens with the "
                             "padding id instead), got non-finite values at ids %s"
                             % np.flatnonzero(~np.isfinite(prior))[:10].tolist())
        self.token_prior = prior.tolist()
        self._prior = tf.constant(prior, tf.float32)
        self.embedding = tf.keras.layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.attention = MultiHeadAttention(num_heads, embed_dim // num_heads, name="attention")
        build_self_attention(self.attention, embed_dim)
        self.classify = tf.keras.layers.Dense(num_classes, dtype="float32", name="classify")
        self.prior_scale = self.add_weight("prior_scale", shape=(), initializer="ones",
                                           trainable=self.learn_prior_scale)

    def call(self, inputs, training=None, return_attention=False):
        ids = tf.convert_to_tensor(inputs)
        mask = tf.not_equal(ids, 0)
        x = self.embedding(ids)
        # The scale is read in float32 whatever the policy: the prior is float32.
        prior = tf.cast(self.prior_scale, tf.float32) * tf.gather(self._prior, ids)  # (B, S)
        bias = tf.cast(prior[:, tf.newaxis, tf.newaxis, :], x.dtype)  # one row for all heads
        y, weights = self.attention(x, x, attention_mask=mask[:, tf.newaxis, :],
                                    attention_bias=bias, return_attention_scores=True,
                                    training=training)
        logits = self.classify(pool_over_tokens(y, mask, self.pooling))
        if return_attention:
            return logits, {"attention": weights, "prior": prior}
        return logits

    def get_config(self):
        return {"vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "token_prior": self.token_prior, "embed_dim": self.embed_dim,
                "num_heads": self.num_heads, "pooling": self.pooling,
                "learn_prior_scale": self.learn_prior_scale, "name": self.name}


def term_weight_prior(ids, labels, vocab_size, num_classes, smoothing=1.0):
    """A token prior from labelled examples: log(C * max_c P(c | token)), smoothed.

    A token whose examples all share one label gets about log(C); a token spread evenly
    over the labels gets about 0; unseen tokens and the padding id 0 get 0. Computed from a
    labelled sample other than the training set, it plays the part of a lexicon.

    Args:
        ids: int token ids (N, T), 0 = padding.
        labels: int labels (N,).
        vocab_size: V, the prior's length.
        num_classes: C.
        smoothing: add-k smoothing of the per-token label counts (> 0).

    Returns:
        float64 NumPy array (V,).

    Example:
        >>> term_weight_prior([[1, 2], [1, 3]], [0, 1], vocab_size=4, num_classes=2)
        array([0.        , 0.        , 0.28768207, 0.28768207])
    """
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    if ids.ndim != 2 or labels.shape != ids.shape[:1]:
        raise ValueError("term_weight_prior needs ids (N, T) and labels (N,), got shapes %s "
                         "and %s" % (ids.shape, labels.shape))
    if not smoothing > 0:
        raise ValueError("smoothing must be > 0, got %r" % (smoothing,))
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError("token ids must be in [0, %d), got ids from %d to %d"
                         % (vocab_size, ids.min(), ids.max()))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError("labels must be in [0, %d), got labels from %d to %d"
                         % (num_classes, labels.min(), labels.max()))
    counts = np.zeros((vocab_size, num_classes))
    rows = np.repeat(labels, ids.shape[1])
    np.add.at(counts, (ids.reshape(-1), rows), 1.0)  # each occurrence counts
    seen = counts.sum(axis=1) > 0
    smoothed = counts + smoothing
    best = smoothed.max(axis=1) / smoothed.sum(axis=1)
    prior = np.where(seen, np.log(num_classes * best), 0.0)
    prior[0] = 0.0
    return prior
