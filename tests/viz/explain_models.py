"""Small models the explanation tests share: an attnlab Transformer classifier and a
Keras MultiHeadAttention model whose gradients can be written down by hand."""
import numpy as np
import tensorflow as tf

from attnlab.layers.positional.learned import LearnedPositionEmbedding
from attnlab.layers.transformer_encoder import TransformerEncoderBlock


def transformer_classifier(vocab_size=20, length=6, depth=16, heads=2, layers=2, classes=3,
                           activation="gelu", seed=0):
    """ids (B, T) -> Embedding -> + learned positions -> `layers` attnlab encoder blocks
    -> mean over tokens -> Dense(classes) logits. GELU keeps the function smooth, so
    numerical integration along a path converges fast."""
    tf.keras.utils.set_random_seed(seed)
    ids = tf.keras.Input((length,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(vocab_size, depth, name="embedding")(ids)
    x = x + LearnedPositionEmbedding(length, name="positions")(x)
    for i in range(layers):
        x = TransformerEncoderBlock(heads, 2 * depth, activation=activation,
                                    name="block_%d" % i)(x)
    pooled = tf.keras.layers.GlobalAveragePooling1D()(x)
    logits = tf.keras.layers.Dense(classes, name="classify")(pooled)
    return tf.keras.Model(ids, logits, name="transformer_classifier")


def token_ids(batch, length, vocab_size=20, seed=1):
    return np.random.default_rng(seed).integers(1, vocab_size, size=(batch, length)).astype(
        np.int32)


def keras_mha_model(length=4, depth=6, heads=2, key_dim=3, classes=3, seed=0):
    """x (B, T, D) -> Keras MHA -> Dense(classes) per token -> mean over tokens: the
    logits are linear in the attention weights (see `mha_logit_gradient`)."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((length, depth))
    mha = tf.keras.layers.MultiHeadAttention(heads, key_dim, name="mha")
    y = mha(inputs, inputs)
    logits = tf.keras.layers.GlobalAveragePooling1D()(tf.keras.layers.Dense(classes)(y))
    model = tf.keras.Model(inputs, logits)
    dense = model.layers[-2]
    return model, mha, dense


def mha_logit_gradient(x, mha, dense, classes):
    """float64 d logits[b, c_b] / d A[b, h, t, s] = (1/T) (V_h[s] W_o,h W_c[:, c_b]), with
    V_h = x W_v,h + b_v,h: the logits are mean_t (sum_h A_h V_h W_o,h + b_o) W_c + b_c."""
    value_kernel = mha._value_dense.kernel.numpy().astype(np.float64)    # (D, H, dv)
    value_bias = mha._value_dense.bias.numpy().astype(np.float64)        # (H, dv)
    output_kernel = mha._output_dense.kernel.numpy().astype(np.float64)  # (H, dv, D)
    class_kernel = dense.kernel.numpy().astype(np.float64)               # (D, C)
    x = np.asarray(x, np.float64)
    values = np.einsum("btd,dhv->bhtv", x, value_kernel) + value_bias[None, :, None, :]
    per_key = np.einsum("bhsv,hvd,dc->bhsc", values, output_kernel, class_kernel)
    chosen = per_key[np.arange(len(x)), :, :, classes]                 # (B, H, S)
    length = x.shape[1]
    return np.repeat(chosen[:, :, None, :], length, axis=2) / length
