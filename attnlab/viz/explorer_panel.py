"""What one explorer heatmap shows: a source's snapshots and the layer, head and step chosen.

`explorer_frames` turns any source the explorer accepts into snapshots ordered by step;
`ExplorerPanel` holds the choice for one heatmap and computes its (T, S) map, including the
head reductions (mean, max, rollout). Drawing lives in `attnlab.viz.explorer_figure`.
"""
import os

import numpy as np

from attnlab.viz.rollout import attention_rollout
from attnlab.viz.snapshots import AttentionSnapshot, load_attention_snapshots, make_snapshot


def explorer_frames(source, query_tokens=None, key_tokens=None):
    """A source as (list of AttentionSnapshot ordered by step, run folder or None).

    Args:
        source: dict name -> (B, H, T, S) weights, an AttentionSnapshot, a list of snapshots
            with distinct steps, or a run folder with saved snapshots.
        query_tokens, key_tokens: tokens for a dict source (see `make_snapshot`).

    Returns:
        (frames, run_dir): run_dir is the folder for a folder source, else None.

    Example:
        >>> frames, run_dir = explorer_frames({"enc0": np.ones((1, 2, 3, 3)) / 3})
        >>> len(frames), run_dir
        (1, None)
    """
    if isinstance(source, (str, os.PathLike)):
        frames = load_attention_snapshots(source)
        if not frames:
            raise ValueError("run folder %r has no attention snapshots" % os.fspath(source))
        return frames, os.fspath(source)
    if isinstance(source, AttentionSnapshot):
        return [source], None
    if isinstance(source, dict):
        return [make_snapshot(source, query_tokens, key_tokens)], None
    if isinstance(source, (list, tuple)) and source and \
            all(isinstance(s, AttentionSnapshot) for s in source):
        steps = [s.step for s in source]
        if len(source) > 1 and (None in steps or len(set(steps)) != len(steps)):
            raise ValueError("snapshots need distinct steps, got %r" % (steps,))
        return sorted(source, key=lambda s: s.step or 0), None
    raise TypeError("source must be a dict name -> (B, H, T, S) weights, an AttentionSnapshot, "
                    "a list of snapshots or a run folder, got %s" % type(source).__name__)


def batch_size(frames):
    """B of the first layer of the first snapshot."""
    return next(iter(frames[0].weights.values())).shape[0]


class ExplorerPanel:
    """One heatmap's data: its snapshots and the layer, head and step index chosen.

    The figure attaches its matplotlib artists (ax, strip_ax, image, strip, title,
    hover_row, hover_col) and the data last drawn (data, clim, summed) to the panel.
    """

    def __init__(self, frames, label):
        self.frames = frames
        self.label = label
        self.layer = next(iter(frames[0].weights))
        self.head = 0
        self.step_index = len(frames) - 1
        self._rollout_cache = {}
        self.layout_key = None

    @property
    def frame(self):
        return self.frames[self.step_index]

    @property
    def step(self):
        return self.frame.step

    def layer_names(self):
        return list(self.frame.weights)

    def weights(self, layer=None):
        return self.frame.weights[layer or self.layer]

    def head_options(self, layer=None):
        w = self.weights(layer)
        options = [("head %d" % h, h) for h in range(w.shape[1])] + [("mean", "mean"),
                                                                     ("max", "max")]
        if w.shape[2] == w.shape[3]:
            options.append(("rollout", "rollout"))
        return options

    def tokens(self, example, length):
        """Labels for an axis of `length`: the snapshot's query or key tokens, else positions."""
        for tokens in (self.frame.query_tokens, self.frame.key_tokens):
            if len(tokens[example]) == length:
                return tokens[example]
        return [str(i) for i in range(length)]

    def query_tokens(self, example):
        return self.tokens(example, self.weights().shape[2])

    def key_tokens(self, example):
        return self.tokens(example, self.weights().shape[3])

    def matrix(self, example):
        """The full (T, S) map for the current layer, head and step."""
        w = self.weights()
        if isinstance(self.head, int):
            return w[example, self.head]
        if self.head == "mean":
            return w[example].mean(axis=0)
        if self.head == "max":
            return w[example].max(axis=0)
        key = (self.step_index, example, self.layer)
        if key not in self._rollout_cache:
            # Rollout through the earlier self-attention layers of the same length.
            t = w.shape[2]
            stack = []
            for name in self.layer_names():
                layer_w = self.weights(name)
                if layer_w.shape[2] == layer_w.shape[3] == t:
                    stack.append(layer_w[example:example + 1])
                if name == self.layer:
                    break
            self._rollout_cache[key] = attention_rollout(stack)[0].astype(np.float32)
        return self._rollout_cache[key]

    def describe(self):
        head = "head %d" % self.head if isinstance(self.head, int) else self.head
        parts = [self.layer, head]
        if self.step is not None:
            parts.append("step %d" % self.step)
        return " \u00b7 ".join(parts)
