"""An additive bias on the attention scores: prior knowledge the weights start from.

softmax(q k^T * scale + bias) v. A bias broadcasts to the scores (..., T, S) like a mask
does: (T, S), (B, T, S) (a head axis is added for (B, H, T, S) scores), (B, 1, 1, S) per
key, (1, H, T, S) per head (e.g. a relative-position or distance prior). Unlike a mask it is
a floating tensor, and the kernels give it a gradient when it is trained. Masked keys stay
hidden whatever their bias.
"""
import tensorflow as tf

from attnlab.ops.masks import align_to_scores
from attnlab.validation import shape_str


def align_bias(bias, scores_shape, dtype):
    """`bias` as a tensor of `dtype` with the rank of the scores, checked to broadcast.

    Raises:
        TypeError: for a bias that is not floating-point (a bool or 0/1 mask belongs in
            `mask`).
        ValueError: for a shape that does not broadcast to the scores.
    """
    bias = tf.convert_to_tensor(bias)
    if not bias.dtype.is_floating:
        raise TypeError("attention bias must be a floating-point tensor (added to the "
                        "scores), got dtype %s of shape %s; a bool or 0/1 mask goes in `mask`"
                        % (bias.dtype.name, shape_str(bias)))
    return tf.cast(align_to_scores(bias, scores_shape, "attention bias"), dtype)


def reduce_to_shape_of(grad, x):
    """`grad` summed over the axes along which `x` was broadcast to it: the gradient of `x`
    (same rank)."""
    if x.shape.is_fully_defined() and grad.shape == x.shape:
        return grad
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(grad), s1=tf.shape(x))
    return tf.reshape(tf.reduce_sum(grad, axes), tf.shape(x))
