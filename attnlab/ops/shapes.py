"""Shape helpers shared by the attention ops."""
import tensorflow as tf


def static_or_dynamic_length(x, axis):
    """The length of `x` along `axis`: a Python int when known statically, else a scalar
    tensor (so that sizes computed from it stay Python ints whenever they can)."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]
