"""Checks of the ops' arguments: masks, scalars and, in checked mode, the inputs' values.

Every check that can be made while tracing is made then (a ValueError/TypeError naming the
argument); a check on values known only when the graph runs is one `tf.debugging` op added
at the op's boundary, never inside its loops. Bool masks and the default (unchecked) mode
add no op at all.
"""
import math
import numbers
import os

import numpy as np
import tensorflow as tf

from attnlab.validation import shape_str

CHECK_NUMERICS_ENV = "ATTNLAB_CHECK_NUMERICS"

_ADDITIVE_HINT = (
    "masks are boolean (True = may attend) or hold only 0 and 1. An additive mask (0 = keep, "
    "-1e9 or -inf = hide) is a score bias: pass it as `bias=` of "
    "scaled_dot_product_attention and the kernels (`attention_bias=` of MultiHeadAttention), "
    "or turn it into a mask with `additive_mask == 0`")


def as_bool_mask(mask, what="attention mask"):
    """`mask` as a bool tensor (True = may attend), refusing values other than 0 and 1.

    A bool mask is returned as it is (no op added). A numeric mask whose values are known
    now (constant or eager) is checked now; otherwise a `tf.debugging.Assert` guards the
    conversion when the graph runs.

    Raises:
        TypeError: a mask that is neither bool nor numeric.
        ValueError: a value other than 0 and 1 (e.g. an additive -1e9/-inf mask).
    """
    mask = tf.convert_to_tensor(mask)
    if mask.dtype == tf.bool:
        return mask
    if not (mask.dtype.is_integer or mask.dtype.is_floating or mask.dtype.is_unsigned):
        raise TypeError("%s must be bool or 0/1 numbers, got dtype %s of shape %s"
                        % (what, mask.dtype.name, shape_str(mask)))
    zero, one = tf.zeros([], mask.dtype), tf.ones([], mask.dtype)
    values = tf.get_static_value(mask)
    if values is not None:
        values = np.asarray(values)
        bad = values[~((values == 0) | (values == 1))]
        if bad.size:
            raise ValueError("%s of dtype %s has values other than 0 and 1 (e.g. %s): %s"
                             % (what, mask.dtype.name, bad.ravel()[0], _ADDITIVE_HINT))
        return tf.not_equal(mask, zero)
    valid = tf.reduce_all(tf.logical_or(tf.equal(mask, zero), tf.equal(mask, one)))
    check = tf.debugging.Assert(valid, ["%s has values other than 0 and 1: %s"
                                        % (what, _ADDITIVE_HINT)])
    with tf.control_dependencies([check] if check is not None else []):
        return tf.not_equal(mask, zero)


def check_scale(scale):
    """`scale` (None, a finite real number or a tensor), as a Python float where it is a
    number; NaN and infinities raise ValueError naming `scale`."""
    if scale is None or tf.is_tensor(scale):
        value = None if scale is None else tf.get_static_value(scale)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError("scale must be finite, got %r" % (value,))
        return scale
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError("scale must be a real number or a tensor, got %r" % (scale,))
    if not math.isfinite(float(scale)):
        raise ValueError("scale must be a finite number, got %r" % (scale,))
    return float(scale)


def check_int_arg(op_name, name, value, at_least=None):
    """`value` as a Python int, or an integer tensor as it is (checked when static).

    Raises:
        ValueError: a bool, a float (NaN included), an int below `at_least`.
        TypeError: a string or other non-number, a non-integer tensor.
    """
    if tf.is_tensor(value):
        if not value.dtype.is_integer:
            raise TypeError("%s: %s must be an integer, got a %s tensor"
                            % (op_name, name, value.dtype.name))
        static = tf.get_static_value(value)
        if static is not None and at_least is not None and np.any(static < at_least):
            raise ValueError("%s: %s must be >= %d, got %r" % (op_name, name, at_least, static))
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        # A number that is not an integer (1.5, NaN, inf, True) is a bad value; anything
        # else (a string, None) a bad type.
        error = ValueError if isinstance(value, numbers.Number) else TypeError
        raise error("%s: %s must be an integer, got %r" % (op_name, name, value))
    value = int(value)
    if at_least is not None and value < at_least:
        raise ValueError("%s: %s must be >= %d, got %d" % (op_name, name, at_least, value))
    return value


def check_numerics_enabled():
    """Whether checked mode is on: ATTNLAB_CHECK_NUMERICS=1, read at call (trace) time."""
    return os.environ.get(CHECK_NUMERICS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def checked_numerics(op_name, **tensors):
    """The tensors, each behind `tf.debugging.check_numerics` in checked mode (an error
    naming "op_name: name" on NaN or Inf), else as they are with no op added.

    Returns:
        A dict name -> tensor (None entries stay None).
    """
    if not check_numerics_enabled():
        return tensors
    checked = {}
    for name, x in tensors.items():
        if x is not None:
            x = tf.convert_to_tensor(x)
            if x.dtype.is_floating:
                x = tf.debugging.check_numerics(x, "%s: %s" % (op_name, name))
        checked[name] = x
    return checked
