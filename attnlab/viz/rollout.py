"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Each layer's head-fused attention gets the residual connection added as an identity
matrix, rows are renormalized, and the layers are multiplied from the first to the last:
rollout_l = A_hat_l @ rollout_(l-1). Row t of the result says how much of the input
tokens flowed into position t of layer l's output.
"""
import numpy as np

from attnlab.validation import check_choice
from attnlab.viz.aggregate import as_weights

HEAD_FUSIONS = ("mean", "max", "min")


def _fuse(weights, head_fusion):
    if weights.ndim == 4:
        return getattr(weights, head_fusion)(axis=1)
    return weights  # (B, T, T): already one map per example


def attention_rollout(layers, head_fusion="mean", add_residual=True, cumulative=False):
    """Attention rollout through a stack of self-attention layers.

    Args:
        layers: sequence (first layer first) of (B, H, T, T) or (B, T, T) weights, or a
            dict name -> weights in layer order.
        head_fusion: how heads are fused per layer: "mean" (the paper's choice), "max"
            or "min".
        add_residual: add the identity (residual connection) before renormalizing.
        cumulative: return the rollout after every layer instead of only the last.

    Returns:
        (B, T, T) float64 array, or a list of them (one per layer) when `cumulative`.

    Example:
        >>> a = np.full((1, 1, 2, 2), 0.5)
        >>> attention_rollout([a, a])[0].tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    if isinstance(layers, dict):
        names, layers = list(layers.keys()), list(layers.values())
        keys = names
    else:
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError("layers must be a sequence or dict of per-layer weights, got %r"
                            % (type(layers).__name__,))
        layers = list(layers)
        names = ["layer %d" % i for i in range(len(layers))]
        keys = list(range(len(layers)))
    if not layers:
        raise ValueError("attention_rollout needs at least one layer, got an empty sequence")
    result, steps, first_shape = None, [], None
    for name, key, weights in zip(names, keys, layers):
        weights = as_weights(weights, name="layers[%r]" % (key,), min_rank=3)
        fused = _fuse(weights.astype(np.float64), head_fusion)
        batch, t, s = fused.shape
        if t != s:
            raise ValueError("attention rollout needs self-attention (T == S); layer %r has "
                             "weights of shape %s" % (name, weights.shape))
        if first_shape is None:
            first_shape = fused.shape
        elif fused.shape != first_shape:
            raise ValueError("all rollout layers must share (B, T, T) = %s; layer %r has "
                             "weights of shape %s" % (first_shape, name, weights.shape))
        if add_residual:
            fused = fused + np.eye(t)
        total = fused.sum(axis=-1, keepdims=True)
        # A fully masked row (all zeros, no residual) stays zero instead of becoming NaN.
        fused = np.divide(fused, total, out=np.zeros_like(fused), where=total > 0)
        result = fused if result is None else np.matmul(fused, result)
        steps.append(result)
    return steps if cumulative else result
