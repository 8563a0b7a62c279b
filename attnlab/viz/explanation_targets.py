"""The scalar an explanation explains: one value per example, picked from the model's output.

Gradient-based explanations (attention gradients, integrated gradients) differentiate one
number per example. `target` chooses it:

- None: the model's output at the predicted class, i.e. `outputs[b, argmax(outputs[b])]`
  (the logit when the model returns logits, the probability when it returns
  probabilities: whatever the (B, C) output holds);
- an int c: `outputs[b, c]` for every example;
- a sequence of B ints: `outputs[b, c_b]`;
- a callable(outputs) -> (B,) floating tensor, for any other output (sequences, dicts).
  It must work row by row (value b depends on output row b only): integrated gradients
  calls it on batches of interpolated inputs.

The class targets need outputs that are one (B, C) tensor, or an object with a `logits`
(B, C) tensor (Hugging Face model outputs). TensorFlow is imported only when a target is
evaluated.
"""
import numpy as np

TARGET_FORMS = ("None (the predicted class), an int class index, a sequence of B class "
                "indices or a callable(outputs) -> (B,) floating tensor")


def check_target(target):
    """Validate the form of `target` before the model runs; returns it normalized.

    Returns:
        None, a callable, an int or a 1-D int64 array.

    Raises:
        TypeError: `target` is none of the accepted forms.
    """
    if target is None or callable(target):
        return target
    if isinstance(target, (bool, np.bool_)):
        raise TypeError("target must be %s, got the bool %r" % (TARGET_FORMS, target))
    if isinstance(target, (int, np.integer)):
        return int(target)
    if isinstance(target, (list, tuple, np.ndarray)):
        classes = np.asarray(target)
        if classes.ndim == 1 and classes.size and np.issubdtype(classes.dtype, np.integer):
            return classes.astype(np.int64)
        raise TypeError("target as a sequence must hold B integer class indices, got dtype "
                        "%s shape %s" % (classes.dtype, classes.shape))
    raise TypeError("target must be %s, got %r" % (TARGET_FORMS, target))


def class_scores(outputs):
    """The (B, C) tensor that class targets index: `outputs` itself or its `logits`."""
    import tensorflow as tf

    if tf.is_tensor(outputs):
        scores = outputs
    else:
        scores = getattr(outputs, "logits", None)
        if scores is None and isinstance(outputs, dict):
            scores = outputs.get("logits")
        if scores is None or not tf.is_tensor(scores):
            raise TypeError("target=None or a class index needs a model that returns one "
                            "(B, C) tensor (or an object with .logits); this model returned "
                            "%s: pass target=callable(outputs) -> (B,) tensor"
                            % type(outputs).__name__)
    if scores.shape.rank != 2:
        raise ValueError("target=None or a class index needs (B, C) outputs, got shape %s: "
                         "pass target=callable(outputs) -> (B,) tensor"
                         % (tuple(scores.shape.as_list()),))
    return scores


def resolve_classes(target, outputs):
    """The class index of every example, (B,) int64, or None for a callable target.

    Args:
        target: as returned by `check_target`.
        outputs: the model's outputs on the batch the classes are for.

    Raises:
        ValueError: a class index is out of range, or the sequence is not B long.
    """
    if callable(target):
        return None
    scores = class_scores(outputs).numpy()
    batch, num_classes = scores.shape
    if target is None:
        return np.argmax(scores, axis=-1).astype(np.int64)
    classes = np.full([batch], target, np.int64) if isinstance(target, int) else target
    if classes.shape != (batch,):
        raise ValueError("target has %d class indices but the batch has %d examples"
                         % (classes.size, batch))
    bad = classes[(classes < 0) | (classes >= num_classes)]
    if bad.size:
        raise ValueError("target class %d is out of range for outputs with %d classes"
                         % (int(bad[0]), num_classes))
    return classes


def target_values(target, outputs, classes, rows):
    """The (rows,) floating tensor of target values to differentiate.

    Args:
        target: as returned by `check_target`.
        outputs: the model's outputs on a batch of `rows` rows.
        classes: (rows,) class indices (from `resolve_classes`, repeated per row), or None
            for a callable target.
        rows: the number of rows of the batch.

    Raises:
        TypeError: a callable target returned something other than a floating tensor.
        ValueError: a callable target returned a shape other than (rows,).
    """
    import tensorflow as tf

    if classes is None:
        values = target(outputs)
        try:
            values = tf.convert_to_tensor(values)
        except (TypeError, ValueError):
            raise TypeError("target(outputs) must return a (B,) floating tensor, got %r"
                            % (type(values).__name__,)) from None
        if not values.dtype.is_floating:
            raise TypeError("target(outputs) must return a floating tensor (a differentiable "
                            "value), got dtype %s" % values.dtype.name)
        if values.shape.as_list() != [rows]:
            raise ValueError("target(outputs) must return one value per example, shape "
                             "(%d,), got %s" % (rows, tuple(values.shape.as_list())))
        return values
    scores = class_scores(outputs)
    return tf.gather(scores, tf.constant(classes, tf.int32), axis=1, batch_dims=1)
