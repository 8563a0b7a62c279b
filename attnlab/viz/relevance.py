"""Gradient-weighted relevance (Chefer et al. 2021) and attention x gradient rollout.

Both weigh each layer's attention by the gradient of the explained target, so that heads
and links the prediction does not use fall away; raw attention and its rollout cannot tell.

- `gradient_weighted_relevance`: the rule of Chefer, Gur & Wolf, "Generic Attention-model
  Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers" (ICCV 2021),
  which carries the gradient weighting of their "Transformer Interpretability Beyond
  Attention Visualization" (CVPR 2021) to attention maps alone. With R = I to start, per
  self-attention layer in order:  A_bar = mean_heads((grad * A)^+),  R <- R + A_bar R.
  Row t of R is the relevance of every token for position t (e.g. [CLS]: row 0).
- `attention_gradient_rollout`: attention rollout (attnlab.viz.rollout) of the head-mean
  of (A * grad)^+ (or |A * grad|), each layer's map first scaled to rows of sum 1 so that
  the residual identity weighs as much as in `attention_rollout` (0.5 M + 0.5 I).

Inputs are NumPy arrays: what `capture_attention_gradients` returns, or any dict/sequence
of (B, H, T, T) weights with gradients of the same shapes. Only NumPy is needed.
"""
import numpy as np

from attnlab.validation import check_choice
from attnlab.viz.aggregate import as_weights
from attnlab.viz.rollout import attention_rollout
from attnlab.viz.token_scores import plot_token_scores, query_row, tokens_of

SIGNS = ("positive", "absolute")


def _as_list(layers, name):
    if isinstance(layers, dict):
        return list(layers.keys()), list(layers.values())
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError("%s must be a sequence or dict of per-layer arrays, got %r"
                        % (name, type(layers).__name__))
    layers = list(layers)
    return list(range(len(layers))), layers


def weight_gradient_pairs(weights, gradients=None, layers=None):
    """Checked (name, (B, H, T, T) weights, gradients) float64 triples in layer order.

    Args:
        weights: an AttentionGradients (then `gradients` is taken from it), or a dict
            name -> weights / a sequence of weights, first layer first.
        gradients: the matching dict or sequence of gradients (same keys, same shapes).
        layers: optional names (or indices) of the layers to use, e.g. the encoder's
            self-attention of an encoder-decoder model; default all.

    Raises:
        ValueError: shapes differ, a layer is not self-attention (T != S), names do not
            match, values are not finite, or no layer is left.
    """
    if hasattr(weights, "gradients") and hasattr(weights, "weights"):
        if gradients is not None:
            raise ValueError("gradients must be None when weights is an AttentionGradients "
                             "(it carries its own)")
        weights, gradients = weights.weights, weights.gradients
    if gradients is None:
        raise ValueError("gradients are needed: pass the result of "
                         "capture_attention_gradients, or weights and gradients")
    names, weight_list = _as_list(weights, "weights")
    grad_names, grad_list = _as_list(gradients, "gradients")
    if names != grad_names:
        raise ValueError("weights and gradients must name the same layers in the same order, "
                         "got %s and %s" % (names, grad_names))
    if layers is not None:
        if isinstance(layers, (str, int)):
            layers = [layers]
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError("layers %s are not among the captured layers %s" % (unknown, names))
        keep = [i for i, name in enumerate(names) if name in set(layers)]
        names = [names[i] for i in keep]
        weight_list = [weight_list[i] for i in keep]
        grad_list = [grad_list[i] for i in keep]
    if not names:
        raise ValueError("weights must hold at least one layer, got none")
    triples, first_shape = [], None
    for name, w, g in zip(names, weight_list, grad_list):
        w = as_weights(w, name="weights[%r]" % (name,), min_rank=3).astype(np.float64)
        g = as_weights(g, name="gradients[%r]" % (name,), min_rank=3).astype(np.float64)
        if w.ndim == 3:
            w, g = w[:, None], (g[:, None] if g.ndim == 3 else g)
        if g.shape != w.shape:
            raise ValueError("gradients[%r] has shape %s but its weights have %s"
                             % (name, g.shape, w.shape))
        if w.shape[-1] != w.shape[-2]:
            raise ValueError("layer %r is not self-attention (T != S): weights of shape %s; "
                             "choose the self-attention layers with layers=[...]"
                             % (name, w.shape))
        if first_shape is None:
            first_shape = (w.shape[0], w.shape[2])
        elif (w.shape[0], w.shape[2]) != first_shape:
            raise ValueError("all layers must share batch and length (B, T) = %s; layer %r has "
                             "weights of shape %s" % (first_shape, name, w.shape))
        triples.append((name, w, g))
    return triples


def gradient_weighted_relevance(weights, gradients=None, layers=None, cumulative=False):
    """Chefer et al. 2021 relevance: R <- R + mean_heads((grad * A)^+) R from R = I.

    Args:
        weights: an AttentionGradients from `capture_attention_gradients`, or a dict
            name -> (B, H, T, T) weights (a sequence: first layer first).
        gradients: the gradients of the target w.r.t. `weights` (same keys and shapes);
            None when `weights` is an AttentionGradients.
        layers: the self-attention layers to use (names or indices), default all.
        cumulative: return R after every layer instead of only the last.

    Returns:
        (B, T, T) float64 relevance (or a list of them per layer); R[b, t, s] is how
        relevant token s is for position t. Every entry is >= 0 and the diagonal >= 1.

    Example:
        >>> a = np.array([[[[0.5, 0.5], [0.0, 1.0]]]]); g = np.ones_like(a)
        >>> gradient_weighted_relevance([a], [g])[0].tolist()
        [[1.5, 0.5], [0.0, 2.0]]
    """
    relevance, steps = None, []
    for _, w, g in weight_gradient_pairs(weights, gradients, layers):
        if relevance is None:
            relevance = np.broadcast_to(np.eye(w.shape[-1]), (w.shape[0],) + w.shape[2:]).copy()
        layer = np.maximum(w * g, 0.0).mean(axis=1)
        relevance = relevance + np.matmul(layer, relevance)
        steps.append(relevance)
    return steps if cumulative else relevance


def attention_gradient_rollout(weights, gradients=None, layers=None, sign="positive",
                               add_residual=True, cumulative=False):
    """Rollout of the gradient-weighted attention mean_heads((A * grad)^+) through the layers.

    Each layer's map M = mean over heads of (A * grad)^+ (`sign="positive"`) or |A * grad|
    (`sign="absolute"`) is scaled to rows of sum 1 (gradients have any scale; a row with
    nothing left stays zero), then rolled out as `attention_rollout` does: the residual
    identity added, rows renormalized, layers multiplied first to last.

    Args:
        weights, gradients, layers: as in `gradient_weighted_relevance`.
        sign: "positive" (clamp negative products to zero) or "absolute".
        add_residual: add the identity for the residual connection.
        cumulative: return the rollout after every layer.

    Returns:
        (B, T, T) float64 array whose rows sum to 1 (or 0 for a row that received nothing
        without the residual), or a list of them per layer.

    Example:
        >>> a = np.array([[[[0.5, 0.5], [0.5, 0.5]]]]); g = np.array([[[[1., -1.], [1., 3.]]]])
        >>> attention_gradient_rollout([a], [g])[0].tolist()
        [[1.0, 0.0], [0.125, 0.875]]
    """
    check_choice("sign", sign, SIGNS)
    maps = []
    for _, w, g in weight_gradient_pairs(weights, gradients, layers):
        product = w * g
        product = np.maximum(product, 0.0) if sign == "positive" else np.abs(product)
        fused = product.mean(axis=1)
        total = fused.sum(axis=-1, keepdims=True)
        maps.append(np.divide(fused, total, out=np.zeros_like(fused), where=total > 0))
    return attention_rollout(maps, add_residual=add_residual, cumulative=cumulative)


def _plot(matrix, tokens, query, example, ax, title, ylabel, name):
    scores = query_row(matrix, query, example, name)
    label = {"first": "first position", "mean": "mean over positions"}.get(
        query, "position %s" % (query,))
    return plot_token_scores(scores, tokens_of(tokens, example, scores.shape[0]), ax=ax,
                             title=title or "%s, %s" % (ylabel, label), ylabel=ylabel)


def plot_relevance(relevance, tokens=None, query="first", example=0, without_identity=True,
                   ax=None, title=None):
    """Bar chart of the relevance of every token for one query position.

    Args:
        relevance: (B, T, T) from `gradient_weighted_relevance`.
        tokens: T labels, or B lists of them (e.g. AttentionGradients.key_tokens).
        query: "first" (row 0, [CLS]), "mean" or a position index.
        example: batch index.
        without_identity: subtract the identity R starts from, so that the bars show the
            relevance attention added (otherwise the query's own token gets +1).
        ax: matplotlib Axes to draw into (default: a new figure).
        title: axes title (default: says which query).

    Returns:
        The matplotlib Figure (bar t's height is token t's relevance).

    Example:
        >>> fig = plot_relevance(gradient_weighted_relevance(grads), grads.key_tokens)
    """
    matrix = as_weights(relevance, name="relevance", min_rank=3, max_rank=3).astype(np.float64)
    if without_identity:
        matrix = matrix - np.eye(matrix.shape[-1])
    return _plot(matrix, tokens, query, example, ax, title, "relevance", "relevance")


def plot_gradient_rollout(rollout, tokens=None, query="first", example=0, ax=None, title=None):
    """Bar chart of one query's row of `attention_gradient_rollout` (same arguments as
    `plot_relevance`, without `without_identity`). Returns the matplotlib Figure."""
    matrix = as_weights(rollout, name="rollout", min_rank=3, max_rank=3)
    return _plot(matrix, tokens, query, example, ax, title, "gradient rollout", "rollout")
