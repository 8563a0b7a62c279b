"""Helpers shared by the attention layers: weights and sublayers, input shapes, masks,
positions, and the decoder-over-encoder inputs of the RNN seq2seq attentions."""
import contextlib
import math

import tensorflow as tf

from attnlab.ops.masked_softmax import masked_softmax
from attnlab.ops.masks import align_mask
from attnlab.validation import check_floating, check_number, shape_str

# ------------------------------------------------------------------ constructor numbers


def finite_number(name, value, **bounds):
    """`value` checked by `check_number(name, value, **bounds)` and to be finite: an
    infinite rate or scale passes a one-sided bound but yields NaN or a degenerate layer."""
    check_number(name, value, **bounds)
    if math.isinf(value):
        raise ValueError("%s must be a finite number, got %r" % (name, value))
    return value


def dropout_rate(name, value):
    """A rate in [0, 1) as a float; ValueError naming `name` for anything else (a string,
    a bool, NaN), which float() would otherwise reject without saying which argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0.0 <= value < 1.0:
        raise ValueError("%s must be in [0, 1), got %r" % (name, value))
    return float(value)


# ------------------------------------------------------------------ weights and sublayers


def clone_initializer(initializer):
    """A fresh copy of `initializer`, one per weight: a reused initializer object repeats its
    values (a seeded one gives identical kernels, an unseeded one correlated ones)."""
    return initializer.__class__.from_config(initializer.get_config())


def init_scope():
    """Where variables created lazily inside `call` must go: outside any tf.function being
    traced (a no-op in TF1-style graph mode, which has no such functions)."""
    if tf.compat.v1.executing_eagerly_outside_functions():
        return tf.init_scope()
    return contextlib.nullcontext()


def build_sublayer(layer, *shapes):
    """Build a sublayer now, under its own name scope so variable names stay unique
    (`block/feedforward_output/kernel`), which the H5 format needs."""
    with tf.name_scope(layer.name):
        layer.build(*shapes)


# ---------------------------------------------------------------------------- shapes


def sequence_length(inputs, axis=-2):
    """Length along `axis`: a Python int when static, else a scalar int32 tensor."""
    static = inputs.shape[axis] if inputs.shape.rank is not None else None
    return static if static is not None else tf.shape(inputs)[axis]


def known_depth(layer_name, name, x):
    """The static last dimension of `x`, which sizes the layer's weights."""
    if x.shape[-1] is None:
        raise ValueError("%s needs a known %s depth (last dimension), got shape %s"
                         % (layer_name, name, shape_str(x)))
    return x.shape[-1]


def model_depth(input_shape, num_heads, block_name):
    """D from a (B, T, D) shape, checked to split into `num_heads` heads."""
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3 or input_shape[-1] is None:
        raise ValueError("%s expects inputs of shape (B, T, D) with a known D, got %s" % (
            block_name, tuple(input_shape.as_list()) if input_shape.rank is not None
            else "(unknown rank)"))
    depth = input_shape[-1]
    if depth % num_heads:
        raise ValueError("%s: the model depth D=%d is not divisible by num_heads=%d (each head "
                         "gets D // num_heads dimensions)" % (block_name, depth, num_heads))
    return depth


def image_channels(layer_name, input_shape):
    """The channel count C of channels-last images (B, H, W, C); ValueError otherwise."""
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4 or input_shape[-1] is None:
        shape = "(unknown rank)" if input_shape.rank is None else str(
            tuple(input_shape.as_list()))
        raise ValueError("%s expects channels-last images (B, H, W, C) with a known C, got "
                         "shape %s" % (layer_name, shape))
    return input_shape[-1]


# ----------------------------------------------------------------------------- masks


def without_keras_mask(x):
    """`x` without its `_keras_mask`: the blocks pass padding as an explicit key mask, and the
    attention layer would otherwise also hide padded queries (zero rows)."""
    if getattr(x, "_keras_mask", None) is None:
        return x
    return tf.identity(x)


def key_padding_mask(mask):
    """(B, S) padding mask -> (B, 1, S) key mask (None stays None)."""
    if mask is None:
        return None
    return tf.cast(mask, tf.bool)[:, tf.newaxis, :]


# ------------------------------------------------------------------------- positions


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


# ------------------------------------------------------ decoder-over-encoder attention


def seq2seq_inputs(layer_name, query, values, values_mask, dtype):
    """Check decoder-over-encoder inputs, cast them to `dtype`, give the query a time axis.

    Keras autocasts only a layer's first argument, so the values are cast here (they are
    float32 under mixed_float16 when they come straight from an Input).

    Args:
        query: (B, T, Dq), or (B, Dq) for a single decoder step.
        values: (B, S, Dv) encoder outputs.
        values_mask: (B, S) mask of the values (True = real token) or None; when None the
            Keras mask carried by `values` (from `Embedding(mask_zero=True)` or a masking
            RNN) is used.

    Returns:
        (query (B, T, Dq), values, mask (B, 1, S) bool or None, single_step).
    """
    if values_mask is None:
        values_mask = getattr(values, "_keras_mask", None)
    query, values = tf.convert_to_tensor(query), tf.convert_to_tensor(values)
    for name, x in (("query", query), ("values", values)):
        check_floating(name, x)
    if values.shape.rank != 3:
        raise ValueError("%s expects values (encoder outputs) of shape (B, S, Dv), got %s"
                         % (layer_name, shape_str(values)))
    if query.shape.rank not in (2, 3):
        raise ValueError("%s expects a query of shape (B, T, Dq) or (B, Dq) for one decoder "
                         "step, got %s" % (layer_name, shape_str(query)))
    mask = None
    if values_mask is not None:
        values_mask = tf.convert_to_tensor(values_mask)
        if values_mask.shape.rank != 2:
            raise ValueError("%s expects values_mask of shape (B, S), got %s (values %s)"
                             % (layer_name, shape_str(values_mask), shape_str(values)))
        mask = values_mask[:, tf.newaxis, :]
    # A batch mismatch would otherwise fail (or broadcast) inside the score computation.
    # A single decoder step (B, Dq) runs once per token inside decoding loops: there only the
    # static check, no per-step assertion when the batch is unknown.
    values = check_same_batch(layer_name, ("query", "values"), query, values,
                              runtime=query.shape.rank != 2)
    query, values = tf.cast(query, dtype), tf.cast(values, dtype)
    single_step = query.shape.rank == 2
    if single_step:
        query = query[:, tf.newaxis, :]
    return query, values, mask, single_step


def seq2seq_context(scores, values, mask, single_step):
    """Masked softmax over the S axis of (B, T, S) scores and the weighted sum of values.

    Returns:
        context (B, T, Dv) and weights (B, T, S), without the T axis for a single step.
    """
    if mask is not None:
        mask = align_mask(mask, scores.shape)
    weights = masked_softmax(scores, mask)
    context = tf.matmul(weights, values)
    if single_step:
        return context[:, 0], weights[:, 0]
    return context, weights


# ------------------------------------------------------- inputs against built weights


def check_depth(layer_name, arg_name, x, depth):
    """`x` checked to have last dimension `depth` (the one its weights were built for).

    A static mismatch is a ValueError now; an unknown depth (a graph input without a static
    last dimension) gets a runtime assertion, so the error never surfaces as a MatMul
    shape failure deep inside the layer.
    """
    got = x.shape[-1] if x.shape.rank else None
    if got is not None:
        if got != depth:
            raise ValueError("%s was built for %s of depth %d (last dimension), got %s of "
                             "shape %s" % (layer_name, arg_name, depth, arg_name, shape_str(x)))
        return x
    check = tf.debugging.assert_equal(
        tf.shape(x)[-1], tf.constant(depth, tf.int32),
        message="%s was built for %s of depth %d (last dimension)"
        % (layer_name, arg_name, depth))
    with tf.control_dependencies([check]):
        return tf.identity(x)


def check_same_batch(layer_name, names, first, second, runtime=True):
    """`second` checked to have the batch size (first dimension) of `first`.

    Static sizes raise ValueError; unknown ones get a runtime assertion on `second` (unless
    `runtime` is False: for calls made once per step of a loop).
    """
    a, b = first.shape[0], second.shape[0]
    if a is not None and b is not None:
        if a != b:
            raise ValueError("%s needs %s and %s of the same batch size, got %s of shape %s "
                             "and %s of shape %s" % (layer_name, names[0], names[1], names[0],
                                                     shape_str(first), names[1],
                                                     shape_str(second)))
        return second
    if not runtime:
        return second
    check = tf.debugging.assert_equal(
        tf.shape(first)[0], tf.shape(second)[0],
        message="%s needs %s and %s of the same batch size" % (layer_name, *names))
    with tf.control_dependencies([check]):
        return tf.identity(second)
