"""Independent float64 NumPy references that the TensorFlow code is compared with."""
import numpy as np


def attention(query, key, value, mask=None, scale=None):
    """softmax(q k^T * scale) v in float64, with `mask` (True = visible) broadcast to the scores.

    Rows with no visible key give zero weights and zero output.
    Returns (output, weights).
    """
    q = np.asarray(query, np.float64)
    k = np.asarray(key, np.float64)
    v = np.asarray(value, np.float64)
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    scores = np.einsum("...td,...sd->...ts", q, k) * scale
    if mask is None:
        visible = np.ones(scores.shape, bool)
    else:
        visible = np.broadcast_to(np.asarray(mask, bool), scores.shape)
    scores = np.where(visible, scores, -np.inf)
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(visible, np.exp(scores - row_max), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    weights = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.einsum("...ts,...sd->...td", weights, v), weights


def causal(t, s=None, offset=0):
    """bool (T, S): key j visible from query i when j <= i + offset."""
    s = t if s is None else s
    return np.arange(s)[None, :] <= np.arange(t)[:, None] + offset


def band(t, s=None, window=1, causal=False):
    """bool (T, S): key j visible from query i when |i - j| <= window (or i-window <= j <= i)."""
    s = t if s is None else s
    d = np.arange(t)[:, None] - np.arange(s)[None, :]
    if causal:
        return (d >= 0) & (d <= window)
    return np.abs(d) <= window
