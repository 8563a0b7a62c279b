"""Integrated Gradients token salience on the embedding output (Sundararajan et al. 2017).

For input embeddings x, a baseline x' and a target f (one value per example):

    IG_i = (x_i - x'_i) * integral_0^1 df/dx_i (x' + a (x - x')) da

summed over the embedding dimensions of each token. Completeness, the method's defining
property: the attributions add up to f(x) - f(x'); the result reports how closely they do
(the integral is a quadrature, so more steps give a smaller error).

How the model runs from interpolated embeddings without being rebuilt: for each batch of
interpolation points the embedding layer's `call` is wrapped (an instance attribute, removed
afterwards, as `attnlab.viz.capture` does) so that it runs as usual, then returns the
interpolated embeddings instead of its own output. Everything after the embedding layer
(positions added, masks from `mask_zero`, the blocks, the head) runs unchanged; position
embeddings added later are held fixed, not interpolated. One model call per `batch_size`
rows, one row per (example, point).
"""
import collections
import contextlib
import functools
import warnings

import numpy as np

from attnlab.validation import check_choice, check_number, check_positive_int
from attnlab.viz.attention_gradients import check_eager, first_input
from attnlab.viz.capture import _children, _decode
from attnlab.viz.explanation_targets import check_target, resolve_classes, target_values
from attnlab.viz.snapshots import normalize_tokens
from attnlab.viz.token_scores import pick_example, plot_token_scores, tokens_of

METHODS = ("gauss_legendre", "trapezoid")

IntegratedGradients = collections.namedtuple(
    "IntegratedGradients",
    ["attributions", "embedding_attributions", "input_values", "baseline_values",
     "attribution_sums", "relative_errors", "classes", "tokens", "method", "steps"])
IntegratedGradients.__doc__ = """Integrated Gradients of a batch, with its completeness check.

    attributions: (B, T) float64, token salience (sum over the embedding dimensions).
    embedding_attributions: (B, T, D) float64, per embedding dimension.
    input_values: (B,) f(x), the target at the input.
    baseline_values: (B,) f(x'), the target at the baseline.
    attribution_sums: (B,) attributions summed over tokens.
    relative_errors: (B,) |sum - (f(x) - f(x'))| / |f(x) - f(x')| (inf when the
        difference is 0 and the sum is not; 0 when both are).
    classes: (B,) int64 class explained per example, or None for a callable target.
    tokens: B lists of T token strings.
    method, steps: the quadrature rule and its number of points.
    """


def quadrature(method, steps):
    """Points in [0, 1] and weights (summing to 1) of the rule `method` with `steps` points.

    "gauss_legendre": exact for polynomials of degree < 2 * steps (the default: smooth
    models converge in few points). "trapezoid": equally spaced points including both
    ends (steps >= 2).

    Example:
        >>> quadrature("trapezoid", 3)
        (array([0. , 0.5, 1. ]), array([0.25, 0.5 , 0.25]))
    """
    check_choice("method", method, METHODS)
    check_positive_int("steps", steps)
    if method == "trapezoid":
        if steps < 2:
            raise ValueError("steps must be >= 2 for method='trapezoid' (both ends of the "
                             "path), got %d" % steps)
        points = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
        return points, weights
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1.0) / 2.0, weights / 2.0


def embedding_layers(model):
    """The tf.keras.layers.Embedding layers inside `model`, as an ordered dict path -> layer."""
    import tensorflow as tf

    found = collections.OrderedDict()
    seen = set()

    def visit(layer, path):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, tf.keras.layers.Embedding):
            found["/".join(path) or layer.name] = layer
        for child in _children(layer):
            visit(child, path + [child.name])

    visit(model, [])
    return found


def find_embedding_layer(model, embedding_layer=None):
    """The layer whose output is attributed: `embedding_layer` (a layer, or its name or
    path in `model`), or the model's only Embedding layer.

    Raises:
        ValueError: no Embedding, several of them, or no layer of that name.
        TypeError: `embedding_layer` is neither a layer nor a string.
    """
    import tensorflow as tf

    if isinstance(embedding_layer, tf.keras.layers.Layer):
        return embedding_layer
    model_name = getattr(model, "name", model)
    if embedding_layer is None:
        found = embedding_layers(model)
        if len(found) == 1:
            return next(iter(found.values()))
        if not found:
            raise ValueError("model %r has no tf.keras.layers.Embedding: pass embedding_layer="
                             "the layer whose output are the token embeddings" % model_name)
        raise ValueError("model %r has %d Embedding layers (%s): pass embedding_layer= the one "
                         "that embeds the tokens" % (model_name, len(found), ", ".join(found)))
    if not isinstance(embedding_layer, str):
        raise TypeError("embedding_layer must be None, a Keras layer or its name, got %r"
                        % (embedding_layer,))
    paths = collections.OrderedDict()

    def visit(layer, path):
        for child in _children(layer):
            child_path = path + [child.name]
            paths.setdefault("/".join(child_path), child)
            paths.setdefault(child.name, child)
            visit(child, child_path)

    visit(model, [])
    if embedding_layer not in paths:
        raise ValueError("embedding_layer %r is not a layer of model %r (its layers: %s)"
                         % (embedding_layer, model_name, ", ".join(list(paths)[:20])))
    return paths[embedding_layer]


@contextlib.contextmanager
def output_hook(layer, transform):
    """While active, `layer`'s call runs as usual and returns transform(its output).

    Yields:
        A list that counts the calls (one entry per call).
    """
    calls = []
    saved = vars(layer).get("call")
    original = layer.call

    @functools.wraps(original)
    def call(*args, **kwargs):
        calls.append(None)
        return transform(original(*args, **kwargs))

    # object.__setattr__ bypasses Keras attribute tracking; undone in `finally`.
    object.__setattr__(layer, "call", call)
    try:
        yield calls
    finally:
        if saved is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", saved)


def _check_one_call(calls, layer):
    if len(calls) != 1:
        raise ValueError("embedding layer %r ran %d times in one call of the model; integrated "
                         "gradients needs a layer that embeds the inputs once"
                         % (layer.name, len(calls)))


def _baseline(baseline, embedded):
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError("baseline must be 'zeros' or an array broadcastable to the "
                             "embeddings %s, got %r" % (embedded.shape, baseline))
        return np.zeros_like(embedded)
    array = np.asarray(baseline, dtype=np.float64)
    try:
        array = np.broadcast_to(array, embedded.shape)
    except ValueError:
        raise ValueError("baseline of shape %s does not broadcast to the embeddings (B, T, D) = "
                         "%s" % (array.shape, embedded.shape)) from None
    if not np.all(np.isfinite(array)):
        raise ValueError("baseline must be finite, got NaN or Inf")
    return array


def _gather_rows(inputs, rows, batch):
    import tensorflow as tf

    def gather(x):
        shape = np.shape(x)
        if not shape or shape[0] != batch:
            raise ValueError("every input needs the batch axis first (%d examples), got an "
                             "input of shape %s" % (batch, tuple(shape)))
        return tf.gather(x, rows)

    return tf.nest.map_structure(gather, inputs)


def _relative_errors(sums, differences):
    errors = np.abs(sums - differences)
    scale = np.abs(differences)
    relative = np.divide(errors, scale, out=np.zeros_like(errors), where=scale > 0)
    return np.where((scale == 0) & (errors > 0), np.inf, relative)


def integrated_gradients(model, inputs, embedding_layer=None, baseline="zeros", steps=32,
                         target=None, method="gauss_legendre", batch_size=32, tokens=None,
                         vocabulary=None, training=False, completeness_tolerance=0.01):
    """Integrated Gradients of a target w.r.t. the token embeddings, per token.

    Args:
        model: a Keras model (attnlab models, tf.keras, Hugging Face TF) called on `inputs`.
        inputs: the model's inputs (array, list or dict; batch axis first).
        embedding_layer: the layer whose (B, T, D) output is attributed: a layer, its name
            or path; default the model's only tf.keras.layers.Embedding.
        baseline: "zeros" (the all-zero embedding) or an array broadcastable to (B, T, D)
            (e.g. the embedding of a padding token, shape (D,)). Where a LayerNorm
            follows the embeddings (BERT's embedding layer ends with one), zero is a
            degenerate point (the normalized output jumps near it) and completeness fails:
            use the embeddings of an all-padding input there.
        steps: points of the quadrature rule (>= 1; >= 2 for "trapezoid").
        target: the explained value per example (see `attnlab.viz.explanation_targets`):
            None = the output at the class predicted for the input, held fixed along the
            path; an int class; B classes; or a row-wise callable(outputs) -> (B,) tensor.
        method: "gauss_legendre" (default) or "trapezoid".
        batch_size: interpolation rows per model call.
        tokens: T labels or B lists of them, for plots (default positions).
        vocabulary: id -> token lookup for integer first inputs (B, T).
        training: passed to every model call.
        completeness_tolerance: warn when an example's relative completeness error exceeds
            it (more steps reduce the error); None never warns.

    Returns:
        IntegratedGradients(attributions (B, T), embedding_attributions (B, T, D),
        input_values, baseline_values, attribution_sums, relative_errors, classes, tokens,
        method, steps).

    Raises:
        ValueError: bad steps, method, baseline or batch_size, no (single) embedding layer,
            or a target that does not depend on the embeddings.
        TypeError: a target or embedding_layer of an unknown form.
        RuntimeError: called in graph mode (inside tf.function).

    Example:
        >>> ig = integrated_gradients(model, ids, steps=32)
        >>> ig.attributions.sum(-1), ig.input_values - ig.baseline_values   # completeness
        >>> plot_token_salience(ig)
    """
    import tensorflow as tf

    check_eager("integrated_gradients")
    points, point_weights = quadrature(method, steps)
    check_positive_int("batch_size", batch_size)
    if completeness_tolerance is not None:
        check_number("completeness_tolerance", completeness_tolerance, above=0)
    target = check_target(target)
    layer = find_embedding_layer(model, embedding_layer)
    if vocabulary is not None and tokens is None:
        tokens = _decode(first_input(inputs), vocabulary, "integrated_gradients")

    recorded = []
    with output_hook(layer, lambda out: recorded.append(out) or out) as calls:
        outputs = model(inputs, training=training)
    _check_one_call(calls, layer)
    embedded = recorded[0]
    if not embedded.dtype.is_floating or embedded.shape.rank != 3:
        raise ValueError("the output of embedding layer %r must be floating (B, T, D), got "
                         "dtype %s shape %s" % (layer.name, embedded.dtype.name,
                                                tuple(embedded.shape.as_list())))
    embedded = embedded.numpy().astype(np.float64)
    batch = embedded.shape[0]
    tokens = normalize_tokens(tokens, batch, embedded.shape[1], "tokens")  # before the runs
    classes = resolve_classes(target, outputs)
    input_values = target_values(target, outputs, classes, batch).numpy().astype(np.float64)
    base = _baseline(baseline, embedded)

    def run(rows, alphas, with_gradient):
        path = base[rows] + alphas[:, None, None] * (embedded[rows] - base[rows])
        path = tf.constant(path, tf.float32)
        row_inputs = _gather_rows(inputs, rows, batch)
        with tf.GradientTape() as tape:
            tape.watch(path)
            with output_hook(layer, lambda out: _replace(out, path)) as hook_calls:
                row_outputs = model(row_inputs, training=training)
            values = target_values(target, row_outputs,
                                   None if classes is None else classes[rows], len(rows))
            total = tf.reduce_sum(tf.cast(values, tf.float32))
        _check_one_call(hook_calls, layer)
        if not with_gradient:
            return values.numpy().astype(np.float64), None
        gradient = tape.gradient(total, path)
        if gradient is None:
            raise ValueError("the target does not depend on the output of embedding layer %r "
                             "(its gradient is None): is target differentiable and computed "
                             "from the model's outputs?" % layer.name)
        return None, gradient.numpy().astype(np.float64)

    examples = np.arange(batch)
    baseline_values = np.concatenate([
        run(rows, np.zeros(len(rows)), False)[0]
        for rows in np.array_split(examples, range(batch_size, batch, batch_size))])
    row_examples = np.repeat(examples, len(points))
    row_points = np.tile(np.arange(len(points)), batch)
    integral = np.zeros_like(embedded)
    for start in range(0, len(row_examples), batch_size):
        rows = row_examples[start:start + batch_size]
        which = row_points[start:start + batch_size]
        _, gradient = run(rows, points[which], True)
        weighted = gradient * point_weights[which][:, None, None]
        for example in np.unique(rows):  # rows run example by example: few slices
            integral[example] += weighted[rows == example].sum(axis=0)
    per_dimension = (embedded - base) * integral
    attributions = per_dimension.sum(axis=-1)
    sums = attributions.sum(axis=-1)
    relative = _relative_errors(sums, input_values - baseline_values)
    if completeness_tolerance is not None and np.any(relative > completeness_tolerance):
        worst = int(np.argmax(relative))
        warnings.warn("integrated gradients: attributions of example %d sum to %.6g but f(x) - "
                      "f(baseline) = %.6g (relative error %.3g > %.3g); use more steps"
                      % (worst, sums[worst], input_values[worst] - baseline_values[worst],
                         relative[worst], completeness_tolerance), stacklevel=2)
    return IntegratedGradients(attributions, per_dimension, input_values, baseline_values, sums,
                               relative, classes, tokens, method, steps)


def _replace(output, path):
    """The interpolated embeddings in place of the layer's output (same shape and dtype)."""
    import tensorflow as tf

    if output.shape.as_list() != path.shape.as_list():
        raise ValueError("the embedding layer's output has shape %s but the interpolated "
                         "embeddings %s" % (output.shape.as_list(), path.shape.as_list()))
    return tf.cast(path, output.dtype)


def plot_token_salience(result, tokens=None, example=0, ax=None, title=None):
    """Bar chart of one example's Integrated Gradients per token (red +, blue -).

    Args:
        result: an IntegratedGradients, or (B, T) attributions.
        tokens: T labels or B lists of them (default: the result's tokens).
        example: batch index.
        ax: matplotlib Axes to draw into (default: a new figure).
        title: axes title (default: the class and the completeness check).

    Returns:
        The matplotlib Figure (bar t's height is token t's attribution).

    Example:
        >>> fig = plot_token_salience(integrated_gradients(model, ids), example=0)
    """
    from attnlab.viz.aggregate import as_weights

    if isinstance(result, IntegratedGradients):
        attributions = result.attributions
        tokens = result.tokens if tokens is None else tokens
        row = pick_example(np.arange(len(attributions)), example, "attributions")
        if title is None:
            what = "class %d" % result.classes[row] if result.classes is not None else "target"
            title = ("integrated gradients, %s: sum %.4g, f(x) - f(x') %.4g (error %.2g%%)"
                     % (what, result.attribution_sums[row],
                        result.input_values[row] - result.baseline_values[row],
                        100.0 * result.relative_errors[row]))
    else:
        attributions = result
    attributions = as_weights(attributions, name="attributions", min_rank=2, max_rank=2)
    scores = pick_example(attributions, example, "attributions")
    return plot_token_scores(scores, tokens_of(tokens, example, scores.shape[0]), ax=ax,
                             title=title or "integrated gradients", ylabel="attribution")
