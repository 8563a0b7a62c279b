"""Per-head attention statistics, to find the heads worth looking at.

For every layer and head of a source (dict layer -> (B, H, T, S) weights, an
AttentionSnapshot, a list of snapshots or a run folder), `head_metrics` computes

    entropy            -sum_j p_j log p_j of a query row, in nats (0: one key, log S: uniform)
    distance           sum_j p_j |i - j|: how far from its own position query i looks, in
                       positions (self-attention only; see below)
    first_token_share  p_0: the weight on the first key
    sink_share         the weight on the keys named by `sink_tokens` ("[SEP]", "</s>", or
                       key positions); only when sink_tokens are given
    max_weight         max_j p_j: how peaked a row is

each averaged over the valid query rows of all examples, pooled (every valid (example,
query) row counts once), and a head-to-head similarity over all heads of all layers.

Normalization: every valid row is divided by its own sum first. Softmax rows already sum to
1; the division removes float16 rounding of stored snapshots and makes the numbers shares
for mechanisms whose rows do not sum to 1. Valid rows are those kept by `query_mask` and
`pad_token`; rows summing to less than ZERO_ROW (the zero rows of fully masked queries)
are left out for that head. Only NumPy is needed (no TensorFlow).
"""
import collections
import functools
import os

import numpy as np

from attnlab.viz.aggregate import as_weights
from attnlab.viz.snapshots import AttentionSnapshot, load_attention_snapshots, make_snapshot

METRICS = ("entropy", "distance", "first_token_share", "sink_share", "max_weight")
UNITS = {"entropy": "nats", "distance": "positions", "first_token_share": "share",
         "sink_share": "share", "max_weight": "weight", "queries": "rows"}
SIMILARITIES = ("js", "cosine")
# Rows below this sum hold no distribution (a fully masked query's zero row).
ZERO_ROW = 1e-6


# ------------------------------------------------------------------------------- inputs
def source_snapshot(source, query_tokens=None, key_tokens=None, step=None, name="source"):
    """One AttentionSnapshot from any source the viewers accept.

    Args:
        source: dict layer -> (B, H, T, S) weights, an AttentionSnapshot, a list of
            snapshots or a run folder with saved snapshots.
        query_tokens, key_tokens: tokens of a dict source (see `make_snapshot`).
        step: the snapshot's step for a list or a run folder (default: the last one).
        name: argument name for errors.

    Returns:
        AttentionSnapshot.

    Example:
        >>> source_snapshot({"enc": np.ones((1, 2, 3, 3)) / 3}).weights["enc"].shape
        (1, 2, 3, 3)
    """
    if isinstance(source, AttentionSnapshot):
        snapshots = [source]
    elif isinstance(source, dict):
        try:
            snapshots = [make_snapshot(source, query_tokens, key_tokens)]
        except (TypeError, ValueError) as err:
            # Which of several sources (compare_attention's a or b) is at fault.
            raise type(err)("%s: %s" % (name, err)) from None
    elif isinstance(source, (str, os.PathLike)):
        snapshots = load_attention_snapshots(source)
        if not snapshots:
            raise ValueError("%s: run folder %r has no attention snapshots"
                             % (name, os.fspath(source)))
    elif isinstance(source, (list, tuple)) and source and \
            all(isinstance(s, AttentionSnapshot) for s in source):
        snapshots = list(source)
    else:
        raise TypeError("%s must be a dict layer -> (B, H, T, S) weights, an "
                        "AttentionSnapshot, a list of snapshots or a run folder, got %s"
                        % (name, type(source).__name__))
    if step is None:
        # The last snapshot: the highest step, and the last one given among equal steps.
        return max(reversed(snapshots), key=lambda s: -1 if s.step is None else s.step)
    steps = [s.step for s in snapshots]
    if step not in steps or isinstance(step, bool):
        raise ValueError("step %r is not a step of %s (steps: %s)" % (step, name, steps))
    return snapshots[steps.index(step)]


def axis_labels(snapshot, example, length, side="query"):
    """Token labels of the `side` ("query" or "key") axis of `length`: that side's tokens
    when they fit, else the other side's, else positions (as the explorer labels it).

    Trying the axis's own side first keeps cross-attention right when T == S: the keys
    are the encoder's tokens, not the decoder's."""
    own, other = snapshot.query_tokens, snapshot.key_tokens
    if side == "key":
        own, other = other, own
    for tokens in (own, other):
        if len(tokens[example]) == length:
            return tokens[example]
    return [str(i) for i in range(length)]


def _check_mask(mask, shape, name):
    array = np.asarray(mask)
    if array.dtype == object or not (array.dtype == bool or
                                     np.issubdtype(array.dtype, np.number)):
        raise TypeError("%s must be a boolean (B, T) array, got dtype %s" % (name, array.dtype))
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError("%s must hold only True/False (or 1/0), got other values" % name)
    if array.shape != shape:
        raise ValueError("%s must have shape (B, T) = %s, got %s" % (name, shape, array.shape))
    return array.astype(bool)


def query_validity(snapshot, query_mask=None, pad_token=None):
    """Per layer a (B, T) bool array: the query rows the metrics use.

    Args:
        snapshot: AttentionSnapshot.
        query_mask: None, a (B, T) bool array (True = a real query) applied to every layer
            with T queries, or a dict layer -> (B, T) array.
        pad_token: a token string; queries labelled with it are left out.

    Returns:
        OrderedDict layer -> (B, T) bool.
    """
    if query_mask is not None and not isinstance(query_mask, dict):
        array = np.asarray(query_mask)
        lengths = sorted({w.shape[2] for w in snapshot.weights.values()})
        if array.ndim != 2 or array.shape[1] not in lengths:
            raise ValueError("query_mask must have shape (B, T) with T one of the layers' "
                             "query lengths %s, got %s" % (lengths, array.shape))
    if isinstance(query_mask, dict):
        unknown = sorted(set(query_mask) - set(snapshot.weights))
        if unknown:
            raise ValueError("query_mask names unknown layers %s (layers: %s)"
                             % (unknown, list(snapshot.weights)))
    if pad_token is not None and not isinstance(pad_token, str):
        raise TypeError("pad_token must be a token string, got %r" % (pad_token,))
    valid = collections.OrderedDict()
    for layer, w in snapshot.weights.items():
        batch, _, t, _ = w.shape
        keep = np.ones((batch, t), bool)
        if isinstance(query_mask, dict):
            if layer in query_mask:
                keep &= _check_mask(query_mask[layer], (batch, t),
                                    "query_mask[%r]" % layer)
        elif query_mask is not None and np.asarray(query_mask).shape[1] == t:
            keep &= _check_mask(query_mask, (batch, t), "query_mask")
        if pad_token is not None:
            keep &= np.array([[tok != pad_token for tok in axis_labels(snapshot, b, t)]
                              for b in range(batch)], bool).reshape(batch, t)
        valid[layer] = keep
    return valid


def _check_non_negative(weights, name):
    low = float(weights.min())
    if low < 0:
        raise ValueError("%s must be attention weights >= 0, got a minimum of %g" % (name, low))


def normalized_rows(weights, valid, name="weights"):
    """Rows divided by their sums, and which rows count.

    Args:
        weights: (B, H, T, S) non-negative weights.
        valid: (B, T) bool: the query rows to use.
        name: argument name for errors.

    Returns:
        (p, rows): p (B, H, T, S) float64 rows summing to 1 (zero rows stay zero) and rows
        (B, H, T) bool, `valid` without the rows that sum to less than ZERO_ROW.
    """
    _check_non_negative(weights, name)
    w = np.asarray(weights, np.float64)
    sums = w.sum(axis=-1)
    rows = valid[:, None, :] & (sums >= ZERO_ROW)
    p = w / np.where(rows, sums, 1.0)[..., None]
    return p * rows[..., None], rows


def neg_entropy_terms(p):
    """p log p with 0 log 0 = 0 (same shape as p)."""
    return p * np.log(np.where(p > 0, p, 1.0))


def _sink_keys(snapshot, layer, sink_tokens):
    """(B, S) bool: the keys of `layer` that `sink_tokens` names (strings or positions)."""
    batch, _, _, s = snapshot.weights[layer].shape
    names = {t for t in sink_tokens if isinstance(t, str)}
    keys = np.zeros((batch, s), bool)
    for b in range(batch):
        labels = axis_labels(snapshot, b, s, "key")
        keys[b] = [label in names for label in labels]
    for position in (t for t in sink_tokens if not isinstance(t, str)):
        if not -s <= position < s:
            raise ValueError("sink_tokens position %d is out of range for layer %r with %d "
                             "keys" % (position, layer, s))
        keys[:, position] = True
    return keys


def _check_sink_tokens(sink_tokens, snapshot):
    if sink_tokens is None:
        return None
    if isinstance(sink_tokens, (str, int, np.integer)):
        sink_tokens = [sink_tokens]
    try:
        sink_tokens = list(sink_tokens)
    except TypeError:
        raise TypeError("sink_tokens must be token strings or key positions, got %r"
                        % (sink_tokens,)) from None
    if not sink_tokens:
        raise ValueError("sink_tokens must name at least one token or position, got []")
    checked = []
    for token in sink_tokens:
        if isinstance(token, bool) or not isinstance(token, (str, int, np.integer)):
            raise TypeError("sink_tokens must be token strings or integer key positions, "
                            "got %r" % (token,))
        checked.append(token if isinstance(token, str) else int(token))
    seen = set()
    for w in snapshot.weights.values():
        for b in range(w.shape[0]):
            seen.update(axis_labels(snapshot, b, w.shape[3], "key"))
    missing = [t for t in checked if isinstance(t, str) and t not in seen]
    if missing:
        sample = sorted(seen)[:12]
        raise ValueError("sink_tokens %s are not key tokens of any layer (tokens include %s)"
                         % (missing, sample))
    return checked


def _cross_layers(snapshot, cross_attention):
    if cross_attention is None:
        return {n for n, w in snapshot.weights.items()
                if "cross" in n.lower() or w.shape[2] != w.shape[3]}
    if isinstance(cross_attention, str):
        cross_attention = [cross_attention]
    if not isinstance(cross_attention, (list, tuple, set)):
        raise TypeError("cross_attention must be layer names, got %r" % (cross_attention,))
    names = list(cross_attention)
    unknown = [n for n in names if n not in snapshot.weights]
    if unknown:
        raise ValueError("cross_attention names unknown layers %s (layers: %s)"
                         % (unknown, list(snapshot.weights)))
    return set(names) | {n for n, w in snapshot.weights.items() if w.shape[2] != w.shape[3]}


# ------------------------------------------------------------------------------- metrics
def head_metrics(source, query_tokens=None, key_tokens=None, query_mask=None, pad_token=None,
                 sink_tokens=None, cross_attention=None, similarity="js", step=None):
    """Entropy, attended distance, first-token and sink shares, peak weight, per head.

    Args:
        source: dict layer -> (B, H, T, S) weights, an AttentionSnapshot, a list of
            snapshots or a run folder (`step` picks the snapshot; default the last).
        query_tokens, key_tokens: tokens of a dict source (T / S strings or B lists).
        query_mask: (B, T) bool, True = a real query (padding False), for the layers with
            T queries, or a dict layer -> (B, T).
        pad_token: queries labelled with this token (e.g. "<pad>") are left out.
        sink_tokens: key token strings (e.g. "[SEP]", "</s>") and/or key positions
            (ints, -1 = last) whose total weight is `sink_share`; None: no sink_share.
        cross_attention: layers whose queries and keys are different sequences, where
            |i - j| means nothing and `distance` is None. Default: layers whose name
            contains "cross", and always every layer with T != S.
        similarity: "js" (1 - Jensen-Shannon divergence / log 2, mean over query rows),
            "cosine" (of the flattened maps) or None (skip it; cheaper).
        step: the step of a list or run-folder source.

    Returns:
        HeadMetrics.

    Raises:
        ValueError: NaN/Inf or negative weights, masks of the wrong shape, a head with
            no valid query row, sink tokens that no layer has; each names the argument.

    Example:
        >>> metrics = head_metrics({"enc": np.full((1, 2, 4, 4), 0.25)})
        >>> metrics.row("enc", 0)["entropy"]        # log 4
        1.3862943611198906
    """
    if similarity is not None and similarity not in SIMILARITIES:
        raise ValueError("similarity must be one of %s or None, got %r"
                         % (", ".join(SIMILARITIES), similarity))
    snapshot = source_snapshot(source, query_tokens, key_tokens, step)
    valid = query_validity(snapshot, query_mask, pad_token)
    sinks = _check_sink_tokens(sink_tokens, snapshot)
    cross = _cross_layers(snapshot, cross_attention)
    metrics = tuple(m for m in METRICS if m != "sink_share" or sinks is not None)
    rows, maps = [], []
    for layer, w in snapshot.weights.items():
        # A snapshot given as it is (not through make_snapshot) is checked here.
        w = as_weights(w, "weights[%r]" % layer, 4, 4)
        p, used = normalized_rows(w, valid[layer], "weights[%r]" % layer)
        counts = used.sum(axis=(0, 2))
        if not counts.all():
            raise ValueError("weights[%r] head %d has no valid query row (every row is "
                             "masked, padding or zero)" % (layer, int(np.argmin(counts))))
        mean_over_rows = functools.partial(_mean_over_rows, used=used, counts=counts)
        values = {"entropy": mean_over_rows(-neg_entropy_terms(p).sum(-1)),
                  "first_token_share": mean_over_rows(p[..., 0]),
                  "max_weight": mean_over_rows(p.max(-1))}
        t, s = w.shape[2], w.shape[3]
        if layer not in cross:
            offsets = np.abs(np.arange(t)[:, None] - np.arange(s)[None, :])
            values["distance"] = mean_over_rows((p * offsets).sum(-1))
        if sinks is not None:
            on_sink = _sink_keys(snapshot, layer, sinks)[:, None, None, :]
            values["sink_share"] = mean_over_rows((p * on_sink).sum(-1))
        for h in range(w.shape[1]):
            row = {"layer": layer, "head": h}
            for name in metrics:
                row[name] = float(values[name][h]) if name in values else None
            row["queries"] = int(counts[h])
            rows.append(row)
            if similarity is not None:  # kept only when needed: all layers' maps at once
                maps.append((p[:, h], used[:, h]))
    sim = None if similarity is None else head_similarity(maps, similarity)
    return HeadMetrics(rows, list(snapshot.weights), metrics, sim, similarity, sinks,
                       snapshot.step)


def head_similarity(maps, kind="js"):
    """Pairwise similarity of heads' maps; pairs of different shapes are masked.

    Args:
        maps: list of (p, rows): p (B, T, S) row-normalized weights of one head, rows (B, T)
            bool, the rows that count.
        kind: "js": 1 - mean over the rows valid in both of JS(p_i, p_j) / log 2 (1 for
            identical maps, 0 for maps on disjoint keys); "cosine": sum(p_i p_j) /
            sqrt(sum p_i^2 sum p_j^2) over the rows valid in both.

    Returns:
        (N, N) np.ma.MaskedArray of float64, symmetric, 1 on the diagonal.
    """
    n = len(maps)
    sim = np.zeros((n, n))
    masked = np.ones((n, n), bool)
    groups = collections.defaultdict(list)
    for i, (p, _) in enumerate(maps):
        groups[p.shape].append(i)
    for members in groups.values():
        stack = np.stack([maps[i][0] for i in members])        # (m, B, T, S)
        rows = np.stack([maps[i][1] for i in members])         # (m, B, T)
        half_plogp = 0.5 * neg_entropy_terms(stack).sum(-1)   # (m, B, T)
        for a, i in enumerate(members):
            others = slice(a, len(members))
            both = rows[a] & rows[others]                      # (k, B, T)
            count = both.sum(axis=(1, 2))
            if kind == "js":
                mix = 0.5 * (stack[a] + stack[others])
                # JS = (sum p log p + sum q log q) / 2 - sum m log m
                js = half_plogp[a] + half_plogp[others] - neg_entropy_terms(mix).sum(-1)
                js = np.maximum(js, 0.0) * both
                value = 1.0 - js.sum(axis=(1, 2)) / np.maximum(count, 1) / np.log(2.0)
            else:
                pa = stack[a] * both[..., None]
                pb = stack[others] * both[..., None]
                dot = (pa * pb).sum(axis=(1, 2, 3))
                norms = np.sqrt((pa * pa).sum(axis=(1, 2, 3)) * (pb * pb).sum(axis=(1, 2, 3)))
                value = dot / np.where(norms > 0, norms, 1.0)
            for b, j in enumerate(members[a:]):
                if count[b]:
                    sim[i, j] = sim[j, i] = value[b]
                    masked[i, j] = masked[j, i] = False
    np.fill_diagonal(sim, 1.0)
    np.fill_diagonal(masked, False)
    return np.ma.MaskedArray(sim, mask=masked)


def _mean_over_rows(per_row, used, counts):
    """(B, H, T) per-row values -> (H,) means over the used rows, pooled over examples."""
    return (per_row * used).sum(axis=(0, 2)) / counts


def _sort_key(by, layer_order, descending):
    def key(row):
        value = row[by]
        if by == "layer":
            value = layer_order[value]
        missing = value is None
        if not missing and descending:
            value = -value
        # None (a metric a layer lacks) sorts last either way.
        return (missing, 0 if missing else value, layer_order[row["layer"]], row["head"])
    return key


class HeadMetrics:
    """The metrics of every (layer, head), as rows, maps and a similarity matrix.

    Attributes:
        rows: list of dicts (layer order, then head): "layer", "head", one key per metric
            (None where a metric does not apply, e.g. distance of cross-attention) and
            "queries" (the valid query rows averaged).
        layers: layer names in order.
        metrics: the metric names computed (METRICS without sink_share unless sink tokens
            were given).
        similarity: (N, N) np.ma.MaskedArray over `heads`, or None; pairs of heads whose
            maps differ in shape are masked.
        similarity_kind: "js", "cosine" or None.
        heads: the (layer, head) of each similarity row, in row order.
        sink_tokens: the sink tokens and positions used, or None.
        step: the snapshot's step (None outside training).
    """

    def __init__(self, rows, layers, metrics, similarity, similarity_kind, sink_tokens,
                 step=None):
        self.rows = rows
        self.layers = layers
        self.metrics = tuple(metrics)
        self.similarity = similarity
        self.similarity_kind = similarity_kind
        self.sink_tokens = sink_tokens
        self.step = step
        self.heads = [(r["layer"], r["head"]) for r in rows]

    @property
    def columns(self):
        """The keys of every row, in table order."""
        return ("layer", "head") + self.metrics + ("queries",)

    def row(self, layer, head):
        """The row of one head; ValueError when there is none."""
        for row in self.rows:
            if row["layer"] == layer and row["head"] == head:
                return row
        raise ValueError("no head (layer %r, head %r); layers: %s" % (layer, head, self.layers))

    def sort(self, by="entropy", descending=False):
        """The rows ordered by a column (None values last, ties in layer and head order).

        Args:
            by: a metric name, "layer", "head" or "queries".
            descending: largest first.

        Returns:
            A new list of the row dicts.

        Example:
            >>> [(r["layer"], r["head"]) for r in metrics.sort("entropy")[:3]]  # focused heads
        """
        if by not in self.columns:
            raise ValueError("sort key by must be one of %s, got %r"
                             % (", ".join(self.columns), by))
        if not isinstance(descending, bool):
            raise TypeError("descending must be a bool, got %r" % (descending,))
        order = {name: i for i, name in enumerate(self.layers)}
        return sorted(self.rows, key=_sort_key(by, order, descending))

    def metric_map(self, name):
        """A (layers, max heads) np.ma.MaskedArray of one metric; cells without a value
        (a layer with fewer heads, distance of cross-attention) are masked."""
        if name not in self.metrics and name != "queries":
            raise ValueError("metric name must be one of %s, got %r"
                             % (", ".join(self.metrics + ("queries",)), name))
        width = max(r["head"] for r in self.rows) + 1
        data = np.zeros((len(self.layers), width))
        mask = np.ones(data.shape, bool)
        index = {layer: i for i, layer in enumerate(self.layers)}
        for row in self.rows:
            if row[name] is not None:
                data[index[row["layer"]], row["head"]] = row[name]
                mask[index[row["layer"]], row["head"]] = False
        return np.ma.MaskedArray(data, mask=mask)

    def to_dataframe(self):
        """The rows as a pandas DataFrame (pandas is imported here, only when asked)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self.columns))

    def to_dict(self):
        """Plain JSON values: rows, layers, metrics, step and the similarity (None where
        masked)."""
        sim = None
        if self.similarity is not None:
            sim = [[None if m else float(v) for v, m in zip(vals, masks)] for vals, masks in
                   zip(self.similarity.data, np.ma.getmaskarray(self.similarity))]
        return {"layers": list(self.layers), "metrics": list(self.metrics),
                "rows": [dict(r) for r in self.rows], "step": self.step,
                "sink_tokens": self.sink_tokens, "similarity_kind": self.similarity_kind,
                "similarity": sim, "heads": [list(h) for h in self.heads]}

    def __repr__(self):
        return "HeadMetrics(%d layers, %d heads, metrics=%s)" % (
            len(self.layers), len(self.rows), list(self.metrics))


# ------------------------------------------------------------------------------- plots
def _check_metrics(metrics):
    if not isinstance(metrics, HeadMetrics):
        raise TypeError("metrics must be a HeadMetrics (from head_metrics), got %s"
                        % type(metrics).__name__)


def plot_metric_map(metrics, name="entropy", ax=None, cmap="viridis", annotate=True,
                    fmt="%.2f", selected=None, colorbar=True):
    """A layers x heads heatmap of one metric, with the values written in the cells.

    Args:
        metrics: HeadMetrics.
        name: the metric (see `metrics.metrics`).
        ax: matplotlib Axes (default: a new figure).
        cmap: colormap name; cells without a value are left blank.
        annotate: write each value (format `fmt`) in its cell.
        selected: optional (layer, head) outlined with a rectangle.
        colorbar: add a colour bar.

    Returns:
        The AxesImage; `image.get_array()` is `metrics.metric_map(name)`.

    Example:
        >>> image = plot_metric_map(head_metrics(weights), "entropy")
    """
    _check_metrics(metrics)
    data = metrics.metric_map(name)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(1.0 + 0.7 * data.shape[1], 0.8 + 0.45 * data.shape[0]))
    image = ax.imshow(data, cmap=cmap, interpolation="nearest", aspect="auto")
    ax.set_yticks(range(data.shape[0]))
    ax.set_yticklabels(metrics.layers)
    ax.set_xticks(range(data.shape[1]))
    ax.set_xticklabels(["head %d" % h for h in range(data.shape[1])], rotation=90)
    ax.set_title("%s (%s)" % (name, UNITS[name]))
    if annotate:
        low, high = (float(data.min()), float(data.max())) if data.count() else (0.0, 1.0)
        middle = (low + high) / 2.0
        for (i, j), value in np.ndenumerate(data.data):
            if data.mask[i, j]:
                continue
            # Dark text on the light end of the colormap, light text on the dark end.
            colour = "black" if value > middle else "white"
            ax.text(j, i, fmt % value, ha="center", va="center", fontsize=7, color=colour)
    if selected is not None:
        layer, head = selected
        metrics.row(layer, head)
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((head - 0.5, metrics.layers.index(layer) - 0.5), 1, 1,
                               fill=False, lw=2, edgecolor="red"))
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    return image


def plot_head_similarity(metrics, ax=None, cmap="viridis", max_ticks=32, colorbar=True):
    """The head-to-head similarity matrix, with lines between layers.

    Args:
        metrics: HeadMetrics computed with a similarity.
        ax: matplotlib Axes (default: a new figure).
        cmap: colormap name; pairs of heads with different map shapes are blank.
        max_ticks: at most this many head labels per axis.
        colorbar: add a colour bar.

    Returns:
        The AxesImage; `image.get_array()` is `metrics.similarity`.

    Example:
        >>> image = plot_head_similarity(head_metrics(weights, similarity="cosine"))
    """
    from attnlab.viz.plots import tick_positions

    _check_metrics(metrics)
    if metrics.similarity is None:
        raise ValueError("metrics has no similarity: compute it with head_metrics("
                         "similarity='js' or 'cosine')")
    if ax is None:
        import matplotlib.pyplot as plt

        size = min(12.0, 2.0 + 0.25 * len(metrics.heads))
        _, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(metrics.similarity, cmap=cmap, vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    labels = ["%s/h%d" % head for head in metrics.heads]
    ticks = tick_positions(len(labels), max_ticks)
    ax.set_xticks(ticks)
    ax.set_xticklabels([labels[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks)
    ax.set_yticklabels([labels[i] for i in ticks], fontsize=7)
    for i in range(1, len(metrics.heads)):
        if metrics.heads[i][0] != metrics.heads[i - 1][0]:
            ax.axhline(i - 0.5, color="white", lw=1)
            ax.axvline(i - 0.5, color="white", lw=1)
    ax.set_title("head similarity (%s)" % metrics.similarity_kind)
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    return image
