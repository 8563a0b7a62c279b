"""Position bookkeeping shared by the positional layers: lengths and cache offsets."""
import tensorflow as tf


def sequence_length(inputs, axis=-2):
    """Length along `axis`: a Python int when static, else a scalar int32 tensor."""
    static = inputs.shape[axis] if inputs.shape.rank is not None else None
    return static if static is not None else tf.shape(inputs)[axis]


def checked_start_index(start_index, length, max_length, layer_name, arg_name="start_index"):
    """`start_index` as a scalar int32 tensor, checked to be >= 0 and to fit `max_length`.

    Known values (eager, or Python ints while tracing) raise ValueError at once; unknown
    ones get runtime assertions, since an out-of-range slice would fail far from its cause.

    Returns:
        (start, checks): the int32 start and a list of assertion ops to depend on.
    """
    start = tf.cast(start_index, tf.int32)
    if start.shape.rank not in (None, 0):
        raise ValueError("%s: %s must be a scalar, got shape %s"
                         % (layer_name, arg_name, tuple(start.shape.as_list())))
    start_value = tf.get_static_value(start)
    length_value = tf.get_static_value(length)
    if start_value is not None and start_value < 0:
        raise ValueError("%s: %s must be >= 0, got %d" % (layer_name, arg_name, start_value))
    if max_length is not None and start_value is not None and length_value is not None:
        if start_value + length_value > max_length:
            raise ValueError(
                "%s: %s=%d plus sequence length %d needs %d positions, more than "
                "max_length=%d" % (layer_name, arg_name, start_value, length_value,
                                   start_value + length_value, max_length))
        return start, []
    checks = []
    if start_value is None:
        checks.append(tf.debugging.assert_non_negative(
            start, message="%s: %s must be >= 0" % (layer_name, arg_name)))
    if max_length is not None:
        checks.append(tf.debugging.assert_less_equal(
            start + tf.cast(length, tf.int32), tf.constant(max_length, tf.int32),
            message="%s: %s + sequence length exceeds max_length=%d"
            % (layer_name, arg_name, max_length)))
    return start, checks
