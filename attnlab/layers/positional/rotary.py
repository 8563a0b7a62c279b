"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer")."""
import math

import tensorflow as tf

from attnlab.layers.layer_helpers import checked_start_index, finite_number, sequence_length
from attnlab.validation import check_floating, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class RotaryEmbedding(tf.keras.layers.Layer):
    """Rotates query/key features by angles proportional to their positions.

    Feature pairs (x_i, x_{i + d/2}), i < d/2, are rotated by the angle
    theta_i * p / scaling_factor with theta_i = max_wavelength^(-2i/d) (the "rotate half"
    pairing of GPT-NeoX and keras-nlp; the paper pairs neighbours, which is the same up to
    a fixed permutation of features). Because rotations compose, the dot product of a
    rotated query at position m and a rotated key at position n depends only on m - n.
    The rotation runs in float32 and the result is cast back to the compute dtype.

    Args:
        max_wavelength: the largest wavelength (10000 in the paper).
        scaling_factor: positions are divided by it (> 1 stretches the context, as in
            linear position interpolation).

    Call args:
        inputs: (B, T, d) or (B, T, H, d) queries or keys; d must be even.
        start_index: position of the first token (scalar), for cached decoding.

    Returns:
        The rotated inputs, same shape.

    Example:
        >>> q = tf.random.normal([2, 5, 4, 8])   # (B, T, H, d)
        >>> RotaryEmbedding()(q, start_index=3).shape
        TensorShape([2, 5, 4, 8])
    """

    def __init__(self, max_wavelength=10000, scaling_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = finite_number("max_wavelength", max_wavelength, above=1)
        self.scaling_factor = float(finite_number("scaling_factor", scaling_factor, above=0))
        self.supports_masking = True

    def _check_shape(self, shape):
        shape = tf.TensorShape(shape)
        if shape.rank is not None and shape.rank not in (3, 4):
            raise ValueError("RotaryEmbedding expects inputs (B, T, d) or (B, T, H, d), got "
                             "shape %s" % str(tuple(shape.as_list())))
        if shape.rank is not None and shape[-1] is not None and shape[-1] % 2:
            raise ValueError("RotaryEmbedding needs an even feature depth d to form rotation "
                             "pairs, got d=%d (shape %s)" % (shape[-1], tuple(shape.as_list())))

    def build(self, input_shape):
        self._check_shape(input_shape)
        super().build(input_shape)

    def call(self, inputs, start_index=0):
        check_floating("inputs", inputs)
        self._check_shape(inputs.shape)
        return self.rotate(inputs, start_index)

    def rotate(self, x, start_index=0, sequence_axis=1, inverse=False):
        """Rotate `x` whose positions run along `sequence_axis`, as `call` does on axis 1.

        MultiHeadAttention uses it on its heads-first (B, H, L, dk) queries and keys
        (`sequence_axis=2`) without transposing them to the (B, L, H, dk) layout of `call`.

        Args:
            x: floating tensor (B, ..., d) with an even, known d.
            start_index: position of the first element along `sequence_axis` (scalar).
            sequence_axis: the positions' axis, between the batch and the feature axes.
            inverse: rotate by the opposite angles, which undoes a rotation.

        Returns:
            The rotated tensor, same shape and dtype.

        Example:
            >>> k = tf.random.normal([2, 4, 6, 8])   # (B, H, L, d)
            >>> RotaryEmbedding().rotate(k, start_index=2, sequence_axis=2).shape
            TensorShape([2, 4, 6, 8])
        """
        x = tf.convert_to_tensor(x)
        check_floating("x", x)
        rank = x.shape.rank
        if rank is None or not 0 < sequence_axis < rank - 1:
            raise ValueError("RotaryEmbedding.rotate: sequence_axis=%r must be an axis "
                             "between the batch and the feature axes of a tensor of shape %s"
                             % (sequence_axis, shape_str(x)))
        if x.shape[-1] is None:
            raise ValueError("RotaryEmbedding needs a known feature depth, got shape %s"
                             % shape_str(x))
        if x.shape[-1] % 2:
            raise ValueError("RotaryEmbedding needs an even feature depth d to form rotation "
                             "pairs, got d=%d (shape %s)" % (x.shape[-1], shape_str(x)))
        half = x.shape[-1] // 2
        length = sequence_length(x, sequence_axis)
        start, checks = checked_start_index(start_index, length, None, "RotaryEmbedding")
        with tf.control_dependencies(checks):
            positions = tf.cast(tf.range(length) + start, tf.float32) / self.scaling_factor
        exponent = tf.range(half, dtype=tf.float32) * (2.0 / (2 * half))
        inverse_frequency = tf.exp(-math.log(float(self.max_wavelength)) * exponent)
        angles = positions[:, tf.newaxis] * inverse_frequency[tf.newaxis, :]   # (L, d/2)
        # The same angle for every batch element and head: broadcast over the other axes.
        angles = tf.reshape(angles, [-1 if axis == sequence_axis else 1
                                     for axis in range(1, rank - 1)] + [half])
        cos, sin = tf.cos(angles), tf.sin(angles)
        if inverse:
            sin = -sin
        rotated = tf.cast(x, tf.float32)
        x1, x2 = rotated[..., :half], rotated[..., half:]
        rotated = tf.concat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return tf.cast(rotated, x.dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength,
                       "scaling_factor": self.scaling_factor})
        return config
