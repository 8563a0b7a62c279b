"""Every attention layer's weights and the gradient of a target with respect to them.

One eager forward pass runs under a `tf.GradientTape` while `recording_attention` (see
`attnlab.viz.capture`) records each attention layer's weights; those weight tensors are
intermediate tensors on the tape, so one `tape.gradient` call gives d target / d weights for
every layer. The model's variables (trainable or not) and its floating inputs are watched,
so a frozen model records its operations too. No model is cloned or rebuilt.

These pairs are what `attnlab.viz.relevance` turns into gradient-weighted relevance
(Chefer et al. 2021) and attention x gradient rollout.
"""
import collections
import warnings

import numpy as np

from attnlab.viz.capture import _decode, _to_numpy, recording_attention
from attnlab.viz.explanation_targets import (
    check_target,
    resolve_classes,
    target_values,
)
from attnlab.viz.snapshots import normalize_tokens

AttentionGradients = collections.namedtuple(
    "AttentionGradients",
    ["weights", "gradients", "target_values", "classes", "query_tokens", "key_tokens"])
AttentionGradients.__doc__ = """Attention weights and the target's gradient w.r.t. them.

    weights: OrderedDict layer path -> (B, H, T, S) float32 weights, as capture_attention
        names them (a layer called twice gets "#2" on its second record).
    gradients: OrderedDict with the same keys -> (B, H, T, S) float32 d target / d weights.
    target_values: (B,) float64 values of the target that was differentiated.
    classes: (B,) int64 class index per example, or None for a callable target.
    query_tokens, key_tokens: B lists of T (S) token strings of the first layer.
    """


def check_eager(function_name):
    """Raise RuntimeError unless TensorFlow runs eagerly (not inside tf.function)."""
    import tensorflow as tf

    if not tf.executing_eagerly():
        raise RuntimeError("%s needs eager execution (it reads gradients as NumPy arrays); "
                           "call it outside tf.function and without "
                           "tf.compat.v1.disable_eager_execution()" % function_name)


def watch_model(tape, model, inputs):
    """Watch `model`'s floating variables and the floating tensors of `inputs` on `tape`.

    Returns:
        `inputs` with floating NumPy arrays converted to tensors (the watched ones).
    """
    import tensorflow as tf

    tape.watch([v for v in model.variables if v.dtype.is_floating])

    def as_watched(x):
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
            x = tf.constant(x)
        if tf.is_tensor(x) and x.dtype.is_floating:
            tape.watch(x)
        return x

    return tf.nest.map_structure(as_watched, inputs)


def first_input(inputs):
    """The first array of `inputs` (an array, list/tuple or dict of them)."""
    if isinstance(inputs, dict):
        return next(iter(inputs.values()))
    if isinstance(inputs, (list, tuple)):
        return inputs[0]
    return inputs


def capture_attention_gradients(model, inputs, target=None, query_tokens=None,
                                key_tokens=None, vocabulary=None, training=False):
    """Attention weights of every layer and the gradient of a target w.r.t. each of them.

    Args:
        model: a Keras model or layer whose attention layers `capture_attention` handles.
        inputs: what `model` is called with (array, list or dict).
        target: the scalar explained, per example (see `attnlab.viz.explanation_targets`):
            None (default) = the model's output at the predicted class, argmax over the
            last axis of its (B, C) output (the logit for a model that returns logits);
            an int class; a sequence of B classes; or a callable(outputs) -> (B,) floating
            tensor. The gradient is that of the sum over the batch: examples do not
            interact in inference, so each example gets the gradient of its own target.
        query_tokens, key_tokens: T (S) strings, or B lists of them (default positions).
        vocabulary: optional id -> token lookup used with integer first inputs (B, T).
        training: passed to the model call (keep False: dropout makes gradients random).

    Returns:
        AttentionGradients(weights, gradients, target_values, classes, query_tokens,
        key_tokens).

    Raises:
        ValueError: the model has no attention layer that returns its weights, none ran,
            or the target does not depend on any attention weights.
        TypeError: `target` is of an unknown form or a callable returned a non-float.
        RuntimeError: called in graph mode (inside tf.function).

    Example:
        >>> grads = capture_attention_gradients(model, ids)
        >>> gradient_weighted_relevance(grads)[0, 0]   # relevance of each token for [CLS]
    """
    import tensorflow as tf

    check_eager("capture_attention_gradients")
    target = check_target(target)
    if vocabulary is not None:
        decoded = _decode(first_input(inputs), vocabulary, "capture_attention_gradients")
        query_tokens = decoded if query_tokens is None else query_tokens
        key_tokens = decoded if key_tokens is None else key_tokens
    with tf.GradientTape() as tape:
        inputs = watch_model(tape, model, inputs)
        with recording_attention(model) as records:
            if not records:
                raise ValueError("model %r has no attention layer that can return its weights "
                                 "(tf.keras MultiHeadAttention or attnlab attention layers)"
                                 % getattr(model, "name", model))
            outputs = model(inputs, training=training)
        rows = int(tf.shape(tf.nest.flatten(outputs)[0])[0])
        classes = resolve_classes(target, outputs)
        values = target_values(target, outputs, classes, rows)
        total = tf.reduce_sum(tf.cast(values, tf.float32))
    names, tensors = [], []
    for path, calls in records.items():
        for i, w in enumerate(calls):
            names.append(path if i == 0 else "%s#%d" % (path, i + 1))
            tensors.append(w)
    if not tensors:
        raise ValueError("none of the attention layers %s ran in this call of the model"
                         % list(records))
    grads = tape.gradient(total, tensors)
    missing = [name for name, g in zip(names, grads) if g is None]
    if len(missing) == len(names):
        raise ValueError("the target does not depend on the attention weights of any layer "
                         "(every gradient is None): is target differentiable (no argmax, "
                         "no stop_gradient) and computed from the model's outputs?")
    if missing:
        warnings.warn("the target does not depend on the attention weights of %s; their "
                      "gradients are zero" % ", ".join(missing), stacklevel=2)
    weights, gradients = collections.OrderedDict(), collections.OrderedDict()
    for name, w, g in zip(names, tensors, grads):
        weights[name] = _to_numpy(name, w)
        gradients[name] = np.zeros_like(weights[name]) if g is None else _to_numpy(name, g)
    first = next(iter(weights.values()))
    batch, _, t, s = first.shape
    return AttentionGradients(weights, gradients, values.numpy().astype(np.float64), classes,
                              normalize_tokens(query_tokens, batch, t, "query_tokens"),
                              normalize_tokens(key_tokens, batch, s, "key_tokens"))
