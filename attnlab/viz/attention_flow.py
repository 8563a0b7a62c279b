"""Attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

The layers form a graph: node (l, t) is position t after layer l (l = 0: the input
tokens); an edge from (l - 1, s) to (l, t) has the capacity A_hat_l[t, s], the head-mean
attention of layer l with the residual connection added, 0.5 A + 0.5 I, rows renormalized
(as in `attention_rollout`). The flow from input token s to output position t is the
maximum flow from node (0, s) to node (L, t). Rollout multiplies the weights along every
path; flow lets each path carry only its narrowest link and shares links between paths.

Maximum flows are computed exactly on float capacities by Dinic's algorithm (breadth-first
levels, then blocking flows along them), written here in Python: T * T flows per example,
each on a graph of (L + 1) * T nodes and L * T * T edges. That grows like L * T**4, so
`attention_flow` refuses sizes that would take more than about ten seconds (see
FLOW_WORK_LIMIT) and names `attention_rollout` as the fast alternative.
"""
import numbers

import numpy as np

from attnlab.viz.aggregate import as_weights
from attnlab.viz.rollout import HEAD_FUSIONS, _fuse

# Largest batch * layers * tokens**4 attention_flow accepts by default: about ten seconds.
# Measured by benchmarks/attention_flow.py (2-core machine under load 4 to 6): 0.25 to 1.1
# microseconds per unit of work, the most for sharp attention; 4 layers x 44 tokens
# (1.5e7) took 6.3 s, 4 x 48 (2.1e7) 9.2 s, 12 x 32 (1.3e7) 3.7 to 4.8 s.
FLOW_WORK_LIMIT = 1.6e7
# Residual capacity below this counts as saturated: capacities are at most 1, so float
# rounding leaves crumbs near 1e-16 that must not become augmenting paths.
_EPSILON = 1e-12


def flow_work(batch, layers, tokens):
    """The size measure the refusal limit applies to: batch * layers * tokens**4."""
    return float(batch) * layers * float(tokens) ** 4


def residual_capacities(layers, head_fusion="mean", add_residual=True):
    """Per layer the (B, T, T) capacities: heads fused, the identity added, rows normalized.

    Args:
        layers: sequence (first layer first) or dict of (B, H, T, T) or (B, T, T) weights.
        head_fusion: "mean" (the paper's), "max" or "min".
        add_residual: add the identity before renormalizing the rows.

    Returns:
        list of (B, T, T) float64 arrays.
    """
    from attnlab.validation import check_choice

    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    if isinstance(layers, dict):
        names, layers = list(layers.keys()), list(layers.values())
    else:
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError("weights_per_layer must be a sequence or dict of per-layer "
                            "weights, got %r" % (type(layers).__name__,))
        layers = list(layers)
        names = list(range(len(layers)))
    if not layers:
        raise ValueError("weights_per_layer must hold at least one layer, got none")
    capacities, first_shape = [], None
    for name, weights in zip(names, layers):
        weights = as_weights(weights, name="weights_per_layer[%r]" % (name,), min_rank=3)
        fused = _fuse(weights.astype(np.float64), head_fusion)
        if fused.shape[-1] != fused.shape[-2]:
            raise ValueError("attention flow needs self-attention (T == S); layer %r has "
                             "weights of shape %s" % (name, weights.shape))
        if np.any(fused < 0):
            raise ValueError("weights_per_layer[%r] has negative entries; capacities must be "
                             ">= 0" % (name,))
        if first_shape is None:
            first_shape = fused.shape
        elif fused.shape != first_shape:
            raise ValueError("all layers must share (B, T, T) = %s; layer %r has weights of "
                             "shape %s" % (first_shape, name, weights.shape))
        if add_residual:
            fused = fused + np.eye(fused.shape[-1])
        total = fused.sum(axis=-1, keepdims=True)
        capacities.append(np.divide(fused, total, out=np.zeros_like(fused), where=total > 0))
    return capacities


class _LayeredGraph:
    """Arcs of the layered graph in adjacency lists; arc e and e ^ 1 are each other's
    reverse (the reverse starts with capacity 0)."""

    def __init__(self, capacities):
        tokens = capacities[0].shape[-1]
        self.nodes = (len(capacities) + 1) * tokens
        self.heads = [[] for _ in range(self.nodes)]
        self.to, self.capacity = [], []
        for layer, matrix in enumerate(capacities, start=1):
            targets, sources = np.nonzero(matrix > _EPSILON)
            for t, s in zip(targets.tolist(), sources.tolist()):
                self._add((layer - 1) * tokens + s, layer * tokens + t, float(matrix[t, s]))

    def _add(self, u, v, capacity):
        self.heads[u].append(len(self.to))
        self.to.append(v)
        self.capacity.append(capacity)
        self.heads[v].append(len(self.to))
        self.to.append(u)
        self.capacity.append(0.0)

    def max_flow(self, source, sink):
        """Value of a maximum flow from `source` to `sink` (Dinic's algorithm)."""
        heads, to = self.heads, self.to
        residual = list(self.capacity)
        total = 0.0
        while True:
            level = [-1] * self.nodes
            level[source] = 0
            queue = [source]
            for u in queue:  # breadth-first: the list grows while it is read
                for e in heads[u]:
                    v = to[e]
                    if level[v] < 0 and residual[e] > _EPSILON:
                        level[v] = level[u] + 1
                        queue.append(v)
            if level[sink] < 0:
                return total
            cursor = [0] * self.nodes
            while True:
                pushed = self._augment(source, sink, level, cursor, residual)
                if pushed <= 0.0:
                    break
                total += pushed

    def _augment(self, source, sink, level, cursor, residual):
        """Push flow along one path of increasing level; 0 when none is left."""
        heads, to = self.heads, self.to
        path = []
        u = source
        while True:
            if u == sink:
                pushed = min(residual[e] for e in path)
                for e in path:
                    residual[e] -= pushed
                    residual[e ^ 1] += pushed
                return pushed
            arcs = heads[u]
            while cursor[u] < len(arcs):
                e = arcs[cursor[u]]
                v = to[e]
                if residual[e] > _EPSILON and level[v] == level[u] + 1:
                    path.append(e)
                    u = v
                    break
                cursor[u] += 1
            else:  # dead end: never come back to u in this phase
                if u == source:
                    return 0.0
                level[u] = -1
                e = path.pop()
                u = to[e ^ 1]
                cursor[u] += 1


def attention_flow(weights_per_layer, head_fusion="mean", add_residual=True,
                   work_limit=FLOW_WORK_LIMIT):
    """Maximum flow from every input token to every position after the last layer.

    Args:
        weights_per_layer: sequence (first layer first) or dict of (B, H, T, T) or
            (B, T, T) self-attention weights, e.g. `capture_attention(...).weights`.
        head_fusion: how heads are fused per layer: "mean" (the paper), "max" or "min".
        add_residual: capacities 0.5 A + 0.5 I (rows renormalized) as in the paper; False
            uses the fused attention alone.
        work_limit: refuse when batch * layers * tokens**4 exceeds it (the default,
            FLOW_WORK_LIMIT, is about ten seconds); None never refuses.

    Returns:
        (B, T, T) float64: flow[b, t, s] is the flow from input token s to output position
        t. A row sums to at most T and each entry is at most 1 (the capacity into a node).

    Raises:
        ValueError: bad weights, or a size beyond `work_limit` (the message gives the size,
            the limit and the alternative, `attention_rollout`).

    Example:
        >>> a = np.array([[[[0.0, 1.0], [1.0, 0.0]]]])    # swap the two tokens
        >>> attention_flow([a, a])[0].tolist()            # 0.5 A + 0.5 I, twice
        [[1.0, 1.0], [1.0, 1.0]]
    """
    if work_limit is not None and (isinstance(work_limit, bool) or
                                   not isinstance(work_limit, numbers.Real) or
                                   not work_limit > 0):
        raise ValueError("work_limit must be a positive number or None, got %r" % (work_limit,))
    capacities = residual_capacities(weights_per_layer, head_fusion, add_residual)
    batch, tokens, _ = capacities[0].shape
    layers = len(capacities)
    work = flow_work(batch, layers, tokens)
    if work_limit is not None and work > work_limit:
        raise ValueError(
            "attention_flow on %d example(s) x %d layers x %d tokens is too slow: its work "
            "batch * layers * tokens**4 = %.3g exceeds the limit %.3g (about 10 s; e.g. 1 x 4 "
            "layers x %d tokens); use attention_rollout for this size, fewer tokens or "
            "examples, or pass work_limit=None to wait"
            % (batch, layers, tokens, work, work_limit,
               int((work_limit / 4.0) ** 0.25)))
    flow = np.zeros((batch, tokens, tokens))
    last = layers * tokens
    for b in range(batch):
        graph = _LayeredGraph([c[b] for c in capacities])
        for t in range(tokens):
            for s in range(tokens):
                flow[b, t, s] = graph.max_flow(s, last + t)
    return flow


def plot_attention_flow(flow, tokens=None, query="first", example=0, ax=None, title=None):
    """Bar chart of the flow from every input token into one output position.

    Args:
        flow: (B, T, T) from `attention_flow`.
        tokens: T labels, or B lists of them.
        query: "first" (position 0, [CLS]), "mean" or a position index.
        example: batch index.
        ax: matplotlib Axes to draw into (default: a new figure).
        title: axes title.

    Returns:
        The matplotlib Figure (bar s's height is the flow from token s).

    Example:
        >>> fig = plot_attention_flow(attention_flow(captured.weights), captured.key_tokens)
    """
    from attnlab.viz.token_scores import plot_token_scores, query_row, tokens_of

    scores = query_row(as_weights(flow, name="flow", min_rank=3, max_rank=3), query, example,
                       "flow")
    label = {"first": "first position", "mean": "mean over positions"}.get(
        query, "position %s" % (query,))
    return plot_token_scores(scores, tokens_of(tokens, example, scores.shape[0]), ax=ax,
                             title=title or "attention flow into the %s" % label,
                             ylabel="flow")
