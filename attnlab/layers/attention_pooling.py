"""Attention pooling with a learned context vector (Yang et al. 2016, hierarchical attention)."""
import tensorflow as tf

from attnlab.layers.layer_helpers import check_depth, clone_initializer, known_depth
from attnlab.ops.checks import as_bool_mask
from attnlab.ops.masked_softmax import masked_softmax
from attnlab.validation import check_floating, check_positive_int, shape_str


@tf.keras.utils.register_keras_serializable(package="attnlab")
class AttentionPooling(tf.keras.layers.Layer):
    """Pools a sequence into one vector: u = tanh(W h + b), score = u . u_context,
    weights = softmax over the real positions, pooled = sum of weights * h.

    This is additive attention (see AdditiveAttention) whose query is a learned context
    vector instead of a decoder state: it has no query input, so it is a layer of its own.
    Leading axes are kept, so (B, S, T, D) word states pool into (B, S, D) sentence vectors
    in one call. Padded positions (mask False) get weight 0; a row without any real position
    gets zero weights and a zero vector.

    Args:
        units: size of the hidden layer u (width of W, b and u_context).
        kernel_initializer: initializer of W and of the context vector u_context.
        bias_initializer: initializer of b.
        kernel_regularizer: optional regularizer of W and u_context.

    Call args:
        inputs: (B, ..., T, D) floating states, e.g. (B, T, D).
        mask: optional (B, ..., T) mask, True = real position. Default: the Keras mask
            carried by `inputs`.
        return_weights: also return the attention weights.

    Returns:
        pooled (B, ..., D), and weights (B, ..., T) when `return_weights`. The time axis is
        pooled away, so the output carries no Keras mask.

    Example:
        >>> pooling = AttentionPooling(units=16)
        >>> states = tf.random.normal([2, 7, 24])
        >>> pooled, weights = pooling(states, mask=tf.sequence_mask([7, 3], 7),
        ...                           return_weights=True)
        >>> pooled.shape, weights.shape
        (TensorShape([2, 24]), TensorShape([2, 7]))
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is None or input_shape.rank < 3 or input_shape[-1] is None:
            raise ValueError("AttentionPooling expects inputs of shape (B, ..., T, D) with a "
                             "known D, got %s" % (str(tuple(input_shape.as_list()))
                                                  if input_shape.rank is not None
                                                  else "(unknown rank)"))
        depth = input_shape[-1]
        self.kernel = self.add_weight(
            "kernel", shape=(depth, self.units),
            initializer=clone_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer, trainable=True)
        self.bias = self.add_weight(
            "bias", shape=(self.units,), initializer=clone_initializer(self.bias_initializer),
            trainable=True)
        self.context = self.add_weight(
            "context", shape=(self.units,),
            initializer=clone_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer, trainable=True)
        super().build(input_shape)

    def call(self, inputs, mask=None, return_weights=False):
        inputs = tf.convert_to_tensor(inputs)
        check_floating("inputs", inputs)
        if inputs.shape.rank is None or inputs.shape.rank < 3:
            raise ValueError("AttentionPooling expects inputs of shape (B, ..., T, D), got %s"
                             % shape_str(inputs))
        known_depth("AttentionPooling", "inputs", inputs)
        inputs = check_depth("AttentionPooling", "inputs", inputs, self.kernel.shape[0])
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank != inputs.shape.rank - 1 or \
                    not mask.shape.is_compatible_with(inputs.shape[:-1]):
                raise ValueError("AttentionPooling expects a mask of shape %s (the inputs' "
                                 "shape without D), got mask %s for inputs %s"
                                 % (str(tuple(inputs.shape[:-1].as_list())), shape_str(mask),
                                    shape_str(inputs)))
            mask = as_bool_mask(mask, "AttentionPooling mask")
        hidden = tf.tanh(tf.tensordot(inputs, self.kernel, axes=1) + self.bias)  # (..., T, U)
        scores = tf.tensordot(hidden, self.context, axes=1)                       # (..., T)
        weights = masked_softmax(scores, mask)
        pooled = tf.reduce_sum(weights[..., tf.newaxis] * inputs, axis=-2)        # (..., D)
        return (pooled, weights) if return_weights else pooled

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
