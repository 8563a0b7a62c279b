"""Two attentions on the same inputs, head by head: A - B and how far apart they are.

A and B are two checkpoints of one run (`compare_snapshots(run, step_a, step_b)`), two
runs (two run folders: their last snapshots) or two models, given as dicts layer ->
(B, H, T, S) weights or AttentionSnapshots.
They must have the same layers, shapes and tokens. Per head the summary gives

    mean_abs  mean |A - B| over the weights of the valid query rows
    max_abs   max |A - B| there
    js        Jensen-Shannon divergence of the query rows, mean over rows, in nats
              (0 = equal, log 2 = 0.693 = disjoint keys)
    tv        total variation 1/2 sum_j |a_j - b_j| of the rows, mean over rows (0 to 1)

Rows are divided by their sums for js and tv (as in `attnlab.viz.head_metrics`); rows that
are zero in A or B (fully masked queries) have no distribution and are left out of js and
tv. Only NumPy is needed (no TensorFlow).
"""
import numpy as np

from attnlab.viz.aggregate import as_weights
from attnlab.viz.head_metrics import (
    neg_entropy_terms,
    normalized_rows,
    query_validity,
    source_snapshot,
)
from attnlab.viz.snapshots import load_attention_snapshots

DIVERGENCES = ("js", "tv", "mean_abs", "max_abs")


def _tokens_given(source, query_tokens):
    # A dict without tokens has only positions: nothing to compare its tokens against.
    return not isinstance(source, dict) or query_tokens is not None


def _check_same_inputs(a, b, check_tokens):
    names_a, names_b = list(a.weights), list(b.weights)
    if set(names_a) != set(names_b):
        only_a = [n for n in names_a if n not in names_b]
        only_b = [n for n in names_b if n not in names_a]
        raise ValueError("a and b must have the same layers: only in a %s, only in b %s"
                         % (only_a, only_b))
    for name in names_a:
        shape_a, shape_b = a.weights[name].shape, b.weights[name].shape
        if shape_a != shape_b:
            raise ValueError("layer %r has shape %s in a but %s in b (the same inputs give "
                             "the same (B, H, T, S))" % (name, tuple(shape_a), tuple(shape_b)))
    if not check_tokens:
        return
    for kind in ("query_tokens", "key_tokens"):
        tokens_a, tokens_b = getattr(a, kind), getattr(b, kind)
        for example, (row_a, row_b) in enumerate(zip(tokens_a, tokens_b)):
            if list(row_a) == list(row_b):
                continue
            if len(row_a) != len(row_b):
                raise ValueError("%s of example %d differ: %d tokens in a, %d in b"
                                 % (kind, example, len(row_a), len(row_b)))
            position = next(i for i, (x, y) in enumerate(zip(row_a, row_b)) if x != y)
            raise ValueError("%s differ at example %d, position %d: %r in a, %r in b (a and "
                             "b must be attention on the same inputs)"
                             % (kind, example, position, row_a[position], row_b[position]))


def _js_rows(p, q):
    """Jensen-Shannon divergence (nats) of each row of p and q (..., S) -> (...)."""
    m = 0.5 * (p + q)
    js = 0.5 * (neg_entropy_terms(p).sum(-1) + neg_entropy_terms(q).sum(-1)) \
        - neg_entropy_terms(m).sum(-1)
    return np.maximum(js, 0.0)


def compare_attention(a, b, query_tokens=None, key_tokens=None, query_mask=None,
                      pad_token=None, labels=("A", "B")):
    """Difference A - B and divergence per head of two attentions on the same inputs.

    Args:
        a, b: dict layer -> (B, H, T, S) weights, AttentionSnapshot, or a run folder (its
            last snapshot): two checkpoints, runs or models on the same probe batch.
        query_tokens, key_tokens: tokens of dict sources (see `make_snapshot`).
        query_mask: (B, T) bool, True = a real query, or a dict layer -> (B, T).
        pad_token: queries labelled with this token are left out.
        labels: names of a and b in titles (compare_snapshots uses "step N").

    Returns:
        AttentionComparison.

    Raises:
        ValueError: different layer names, shapes or tokens (the message names what
            differs), NaN/Inf or negative weights.

    Example:
        >>> result = compare_attention(snapshot_at_100, snapshot_at_900)
        >>> result.summary[0]["layer"], result.summary[0]["head"]   # the head that moved most
    """
    if not (isinstance(labels, (tuple, list)) and len(labels) == 2 and
            all(isinstance(x, str) for x in labels)):
        raise TypeError("labels must be two strings, got %r" % (labels,))
    snap_a = source_snapshot(a, query_tokens, key_tokens, name="a")
    snap_b = source_snapshot(b, query_tokens, key_tokens, name="b")
    _check_same_inputs(snap_a, snap_b, _tokens_given(a, query_tokens) and
                       _tokens_given(b, query_tokens))
    valid = query_validity(snap_a, query_mask, pad_token)
    differences, rows = {}, []
    for name in snap_a.weights:
        wa = as_weights(snap_a.weights[name], "a.weights[%r]" % name, 4, 4)
        wb = as_weights(snap_b.weights[name], "b.weights[%r]" % name, 4, 4)
        pa, rows_a = normalized_rows(wa, valid[name], "a.weights[%r]" % name)
        pb, rows_b = normalized_rows(wb, valid[name], "b.weights[%r]" % name)
        diff = wa.astype(np.float64) - wb.astype(np.float64)
        differences[name] = diff
        both = rows_a & rows_b                                         # (B, H, T)
        js = _js_rows(pa, pb)
        tv = 0.5 * np.abs(pa - pb).sum(-1)
        for h in range(diff.shape[1]):
            entries = np.abs(diff[:, h])[valid[name]]                  # (rows, S)
            count = int(both[:, h].sum())
            rows.append({
                "layer": name, "head": h,
                "mean_abs": float(entries.mean()) if entries.size else 0.0,
                "max_abs": float(entries.max()) if entries.size else 0.0,
                "js": float(js[:, h][both[:, h]].mean()) if count else 0.0,
                "tv": float(tv[:, h][both[:, h]].mean()) if count else 0.0,
                "queries": count})
    return AttentionComparison(snap_a, snap_b, differences, rows, list(labels))


def compare_snapshots(run_dir, step_a, step_b, query_mask=None, pad_token=None):
    """Compare the run folder's attention snapshots of two training steps.

    Args:
        run_dir: the run folder (its attention/ holds the snapshots of a fixed probe).
        step_a, step_b: saved steps (see `[s.step for s in load_attention_snapshots(run)]`).
        query_mask, pad_token: as in `compare_attention`.

    Returns:
        AttentionComparison labelled "step <step_a>" and "step <step_b>".

    Example:
        >>> compare_snapshots("runs/demo", 0, 900).summary[:3]
    """
    snapshots = {s.step: s for s in load_attention_snapshots(run_dir)}
    for name, step in (("step_a", step_a), ("step_b", step_b)):
        if isinstance(step, bool) or step not in snapshots:
            raise ValueError("%s %r is not a saved step of %s (saved: %s)"
                             % (name, step, run_dir, sorted(snapshots)))
    return compare_attention(snapshots[step_a], snapshots[step_b], query_mask=query_mask,
                             pad_token=pad_token,
                             labels=("step %d" % step_a, "step %d" % step_b))


class AttentionComparison:
    """The result of `compare_attention`.

    Attributes:
        a, b: the two AttentionSnapshots compared.
        labels: their names (e.g. ["step 0", "step 900"]).
        difference: dict layer -> (B, H, T, S) float64 A - B.
        rows: per-head dicts "layer", "head", "mean_abs", "max_abs", "js", "tv", "queries"
            (the rows in js and tv), in layer and head order.
        summary: the same rows, most divergent (js) first.
        layers: layer names in order.
    """

    def __init__(self, a, b, difference, rows, labels):
        self.a, self.b = a, b
        self.difference = difference
        self.rows = rows
        self.labels = labels
        self.layers = list(difference)
        self.summary = self.sort("js", descending=True)

    def sort(self, by="js", descending=True):
        """The rows ordered by a divergence (ties in layer and head order).

        Args:
            by: "js", "tv", "mean_abs", "max_abs", "queries", "layer" or "head".
            descending: largest first.
        """
        columns = DIVERGENCES + ("queries", "layer", "head")
        if by not in columns:
            raise ValueError("sort key by must be one of %s, got %r" % (", ".join(columns), by))
        if not isinstance(descending, bool):
            raise TypeError("descending must be a bool, got %r" % (descending,))
        order = {name: i for i, name in enumerate(self.layers)}

        def key(row):
            value = order[row["layer"]] if by == "layer" else row[by]
            return (-value if descending else value, order[row["layer"]], row["head"])

        return sorted(self.rows, key=key)

    def divergence_map(self, name="js"):
        """(layers, max heads) np.ma.MaskedArray of one divergence (missing heads masked)."""
        if name not in DIVERGENCES:
            raise ValueError("divergence name must be one of %s, got %r"
                             % (", ".join(DIVERGENCES), name))
        width = max(r["head"] for r in self.rows) + 1
        data = np.zeros((len(self.layers), width))
        mask = np.ones(data.shape, bool)
        for row in self.rows:
            i = self.layers.index(row["layer"])
            data[i, row["head"]] = row[name]
            mask[i, row["head"]] = False
        return np.ma.MaskedArray(data, mask=mask)

    def to_dataframe(self):
        """The summary as a pandas DataFrame (pandas is imported here, only when asked)."""
        import pandas as pd

        return pd.DataFrame(self.summary)

    def __repr__(self):
        top = self.summary[0]
        return "AttentionComparison(%s vs %s, %d heads; most divergent %s head %d, js %.4g)" \
            % (self.labels[0], self.labels[1], len(self.rows), top["layer"], top["head"],
               top["js"])


def plot_attention_difference(comparison, layer=None, example=0, heads=None, ncols=4,
                              cmap="RdBu_r", limit=None, max_ticks=16, figsize=None):
    """A - B of one layer's heads on a diverging colour scale centred at 0.

    Args:
        comparison: AttentionComparison.
        layer: the layer (default: the layer of the most divergent head).
        example: batch index.
        heads: head indices to draw (default: all).
        ncols: panels per row.
        cmap: a diverging colormap (red: A attends more, blue: B attends more, with
            "RdBu_r").
        limit: colour scale -limit..limit (default: the largest |A - B| drawn).
        max_ticks: at most this many token labels per axis and panel.
        figsize: figure size in inches (default: 3 per panel).

    Returns:
        The matplotlib Figure; `fig.axes[i].images[0]` is the i-th head drawn.

    Example:
        >>> fig = plot_attention_difference(compare_snapshots("runs/demo", 0, 900))
    """
    import math

    import matplotlib.pyplot as plt

    from attnlab.viz.head_metrics import axis_labels
    from attnlab.viz.plots import plot_attention

    if not isinstance(comparison, AttentionComparison):
        raise TypeError("comparison must be an AttentionComparison (from compare_attention), "
                        "got %s" % type(comparison).__name__)
    if layer is None:
        layer = comparison.summary[0]["layer"]
    if layer not in comparison.difference:
        raise ValueError("layer %r is not one of %s" % (layer, comparison.layers))
    diff = comparison.difference[layer]
    if isinstance(example, bool) or not isinstance(example, (int, np.integer)) or \
            not 0 <= example < diff.shape[0]:
        raise ValueError("example must be an index in [0, %d), got %r" % (diff.shape[0], example))
    heads = list(range(diff.shape[1])) if heads is None else list(heads)
    bad = [h for h in heads if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or
           not 0 <= h < diff.shape[1]]
    if bad or not heads:
        raise ValueError("heads must be indices in [0, %d), got %r" % (diff.shape[1], heads))
    if limit is None:
        limit = float(np.abs(diff[example][heads]).max())
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 0:
        raise ValueError("limit must be a number >= 0, got %r" % (limit,))
    limit = limit or 1.0  # identical maps: any symmetric scale shows 0 as the centre
    _, _, t, s = diff.shape
    query = axis_labels(comparison.a, example, t)
    key = axis_labels(comparison.a, example, s, "key")
    ncols = min(ncols, len(heads))
    nrows = int(math.ceil(len(heads) / float(ncols)))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=figsize or (3 * ncols + 1, 3 * nrows))
    rows = {(r["layer"], r["head"]): r for r in comparison.rows}
    image = None
    for i, h in enumerate(heads):
        row = rows[(layer, h)]
        image = plot_attention(diff[example, h], query, key, ax=axes[i // ncols][i % ncols],
                               cmap=cmap, vmin=-limit, vmax=limit, colorbar=False,
                               max_ticks=max_ticks,
                               title="head %d  js %.3g  max|d| %.3g"
                               % (h, row["js"], row["max_abs"]))
    for extra in range(len(heads), nrows * ncols):
        fig.delaxes(axes[extra // ncols][extra % ncols])
    fig.colorbar(image, ax=list(fig.axes), label="%s - %s" % tuple(comparison.labels))
    fig.suptitle("%s: %s - %s" % (layer, comparison.labels[0], comparison.labels[1]))
    return fig

