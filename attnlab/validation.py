"""Argument checks shared by the whole package: clear errors, naming the argument and what
came, before any computation.

TensorFlow is imported only by the check that converts tensors: the plotting, data and
command-line modules use these checks without loading it.
"""


def shape_str(x):
    """The static shape of `x` as text, with `None` for unknown dimensions."""
    return str(tuple(x.shape.as_list())) if x.shape.rank is not None else "(unknown rank)"


def check_floating(name, x):
    """Raise TypeError unless `x` is a floating-point tensor."""
    if not x.dtype.is_floating:
        raise TypeError(
            "%s must be a floating-point tensor, got dtype %s (cast token ids through an "
            "embedding first)" % (name, x.dtype.name))


def check_positive_int(name, value):
    """Raise ValueError unless `value` is a positive Python integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("%s must be a positive integer, got %r" % (name, value))
    return value


def check_non_negative_int(name, value):
    """Raise ValueError unless `value` is a Python integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("%s must be an integer >= 0, got %r" % (name, value))
    return value


def check_bool(name, value):
    """Raise TypeError unless `value` is a Python bool (not 0/1 or a tensor)."""
    if not isinstance(value, bool):
        raise TypeError("%s must be a bool, got %r" % (name, value))
    return value


def check_choice(name, value, choices):
    """Raise ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError("%s must be one of %s, got %r"
                         % (name, ", ".join(str(c) for c in choices), value))
    return value


def check_number(name, value, above=None, at_least=None, below=None, at_most=None):
    """Raise ValueError unless `value` is a real number (not a bool) within the bounds given.

    NaN fails every bound (it compares false with everything).

    Example:
        >>> check_number("top_p", 0.9, above=0, at_most=1)
        0.9
    """
    within = not isinstance(value, bool) and isinstance(value, (int, float)) and \
        (above is None or value > above) and (at_least is None or value >= at_least) and \
        (below is None or value < below) and (at_most is None or value <= at_most)
    if within:
        return value
    low = "(%g" % above if above is not None else \
        None if at_least is None else "[%g" % at_least
    high = "%g)" % below if below is not None else \
        None if at_most is None else "%g]" % at_most
    if low and high:
        expected = "in %s, %s" % (low, high)
    elif low:
        expected = (">= " if low[0] == "[" else "> ") + low[1:]
    else:
        expected = ("<= " if high[-1] == "]" else "< ") + high[:-1]
    raise ValueError("%s must be a number %s, got %r" % (name, expected, value))


def check_rate(name, value):
    """Raise ValueError unless 0 <= value < 1."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError("%s must be in [0, 1), got %r" % (name, value))
    return float(value)


def check_query_key_value(query, key, value):
    """Convert and validate (..., T, d), (..., S, d), (..., S, dv) attention inputs.

    Returns:
        The three inputs as tensors of one floating dtype.
    """
    import tensorflow as tf

    query = tf.convert_to_tensor(query)
    key = tf.convert_to_tensor(key)
    value = tf.convert_to_tensor(value)
    for name, x in (("query", query), ("key", key), ("value", value)):
        check_floating(name, x)
        if x.shape.rank is not None and x.shape.rank < 2:
            raise ValueError("%s must have rank >= 2 (..., length, depth), got shape %s"
                             % (name, shape_str(x)))
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError("query, key and value must share one dtype, got %s, %s, %s"
                        % (query.dtype.name, key.dtype.name, value.dtype.name))
    shapes = "query %s, key %s, value %s" % (shape_str(query), shape_str(key), shape_str(value))
    if None not in (query.shape.rank, key.shape.rank, value.shape.rank):
        if not query.shape.rank == key.shape.rank == value.shape.rank:
            raise ValueError("query, key and value must have the same rank, got " + shapes)
        if not query.shape[:-2].is_compatible_with(key.shape[:-2]) or \
                not key.shape[:-2].is_compatible_with(value.shape[:-2]):
            raise ValueError("query, key and value must share leading (batch/head) "
                             "dimensions, got " + shapes)
        if not query.shape[-1:].is_compatible_with(key.shape[-1:]):
            raise ValueError("query and key must have the same depth (last dimension), got "
                             + shapes)
        if not key.shape[-2:-1].is_compatible_with(value.shape[-2:-1]):
            raise ValueError("key and value must have the same length (second-to-last "
                             "dimension), got " + shapes)
        for name, x in (("query", query), ("key", key)):
            if x.shape[-2] == 0:
                raise ValueError("%s sequence is empty (length 0): %s" % (name, shapes))
    return query, key, value
