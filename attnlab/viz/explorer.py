"""AttentionExplorer: an offline ipywidgets + matplotlib viewer for attention weights.

Rendering (chosen once, per explorer):
- "ipympl": the matplotlib canvas is itself a widget (ipympl's Canvas, made without pyplot
  so explorers stay independent). Updates call `set_data` and `draw_idle`; clicking a cell
  selects its query token, hovering shows a row/column crosshair.
- "image" (fallback when ipympl is absent or not the active backend): the figure is drawn
  off-screen with Agg and shown as PNG in an `ipywidgets.Image`. The first draw caches the
  background (axes, ticks, labels); a control change restores it and redraws only the
  image artists and the title, then encodes the buffer (fast PNG). Token selection uses
  the tokens control (no mouse events on a plain image).

No JavaScript is loaded from anywhere: only ipywidgets' and ipympl's own lab extensions.

Layout of one panel (a second panel, `compare=`, sits on the right):

    title: layer · head · step · max value
    (T, S) heatmap, rows = queries, dimmed rows when tokens are selected
    (1, S) strip: attention summed over the selected queries (all queries when none)
"""
import collections
import functools
import importlib.util
import io
import os
import re
import struct
import zlib

import numpy as np

from attnlab.validation import check_choice
from attnlab.viz.plots import EXPORT_FORMATS, atomic_write_bytes, export_format, tick_positions
from attnlab.viz.rollout import attention_rollout
from attnlab.viz.snapshots import AttentionSnapshot, load_attention_snapshots, make_snapshot

HEAD_AGGREGATES = ("mean", "max", "rollout")
_DIM = (1.0, 1.0, 1.0, 0.6)  # white at 60% over the rows that are not selected


def _frames(source, query_tokens, key_tokens):
    """A source as (list of AttentionSnapshot ordered by step, run folder or None)."""
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


def encode_png(rgba, level=1):
    """PNG bytes of an (H, W, 4) uint8 image, written as RGB with no row filter.

    Pillow's adaptive filtering costs 3x more than the whole redraw on a 420 x 480 figure;
    unfiltered rows at zlib level 1 keep an update within a few milliseconds.
    """
    height, width = rgba.shape[:2]
    raw = np.empty((height, width * 3 + 1), np.uint8)
    raw[:, 0] = 0  # filter type "None" for every row
    raw[:, 1:] = rgba[:, :, :3].reshape(height, -1)

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b""))


def _short(token, width=10):
    return token if len(token) <= width else token[:width - 1] + "\u2026"


class _Panel:
    """One heatmap: its data source, its controls' values and its matplotlib artists."""

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


class AttentionExplorer:
    """Interactive attention heatmap with controls, token selection, comparison and export.

    Args:
        source: dict layer name -> (B, H, T, S) weights (layer order), an AttentionSnapshot
            (e.g. from `capture_attention`), a list of snapshots (adds a step slider) or a
            run folder with saved snapshots (`attnlab.viz.snapshots`).
        query_tokens, key_tokens: tokens for a dict source: T (S) strings or B lists of them.
        compare: a second source shown side by side on the same example (another
            checkpoint, model or head), or "self" to compare two views of `source`.
        backend: "auto" (ipympl when it is the active matplotlib backend, else "image"),
            "ipympl" or "image".
        export_dir: folder the export button writes to (default: the run folder for a run
            source, else the current folder, i.e. the notebook's).
        cmap: colormap name.
        max_ticks: at most this many token labels per axis.
        panel_size: (width, height) of one panel in inches; dpi: pixels per inch.

    Returns:
        An object that displays as a widget in Jupyter; its `state` is readable and settable.

    Example:
        >>> weights = {"enc0": np.random.rand(2, 4, 6, 6)}
        >>> explorer = AttentionExplorer(weights, query_tokens=list("abcdef"),
        ...                              key_tokens=list("abcdef"))
        >>> explorer.set_state(head="mean", selected_tokens=[1, 2])
        >>> explorer.state["head"]
        'mean'
    """

    def __init__(self, source, query_tokens=None, key_tokens=None, compare=None,
                 backend="auto", export_dir=None, cmap="viridis", max_ticks=24,
                 panel_size=(4.2, 4.8), dpi=100):
        import ipywidgets as widgets

        check_choice("backend", backend, ("auto", "ipympl", "image"))
        frames, run_dir = _frames(source, query_tokens, key_tokens)
        self._panels = [_Panel(frames, "source")]
        if compare is not None:
            if isinstance(compare, str) and compare == "self":
                other = frames
            else:
                other, _ = _frames(compare, query_tokens, key_tokens)
            if other[0].weights[next(iter(other[0].weights))].shape[0] != self._batch(frames):
                raise ValueError("compare must have the same batch size as source (%d)"
                                 % self._batch(frames))
            self._panels.append(_Panel(other, "compare"))
        self.export_dir = export_dir or run_dir or os.getcwd()
        self.cmap = cmap
        import matplotlib

        self._lut = matplotlib.colormaps[cmap](np.arange(256), bytes=True) \
            if hasattr(matplotlib, "colormaps") else \
            matplotlib.cm.get_cmap(cmap)(np.arange(256), bytes=True)
        self.max_ticks = max_ticks
        self.example = 0
        self.selected_tokens = ()
        self.query_window = None
        self.key_window = None
        self.hover = None
        self.last_export = None
        self._observers = []
        self._holding = False
        self._png = b""
        self._background = None
        self._mode = self._choose_backend(backend)
        self._build_figure(panel_size, dpi)
        self._build_controls(widgets)
        self._reset_windows()
        self._refresh(full=True)

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _batch(frames):
        return next(iter(frames[0].weights.values())).shape[0]

    @staticmethod
    def _choose_backend(backend):
        if backend != "auto":
            return backend
        import matplotlib

        # Importing ipympl switches matplotlib's backend, so only look for it here.
        if importlib.util.find_spec("ipympl") is None:
            return "image"
        name = matplotlib.get_backend().lower()
        return "ipympl" if ("ipympl" in name or "widget" in name) else "image"

    def _build_figure(self, panel_size, dpi):
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        n = len(self._panels)
        self.figure = Figure(figsize=(panel_size[0] * n, panel_size[1]), dpi=dpi)
        if self._mode == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(self.figure)
            self._manager = FigureManager(canvas, id(self))
            canvas.header_visible = False
            canvas.mpl_connect("button_press_event", self._on_click)
            canvas.mpl_connect("motion_notify_event", self._on_hover)
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.figure)
        grid = self.figure.add_gridspec(2, n, height_ratios=[10, 1], hspace=0.08, wspace=0.45,
                                        left=0.17 / n, right=1 - 0.04 / n, top=0.93,
                                        bottom=0.17)
        for i, panel in enumerate(self._panels):
            ax = self.figure.add_subplot(grid[0, i])
            strip_ax = self.figure.add_subplot(grid[1, i], sharex=ax)
            panel.ax, panel.strip_ax = ax, strip_ax
            # The heatmap is an RGBA uint8 image coloured here at data resolution: Agg then
            # only resamples bytes, instead of colour-mapping every screen pixel.
            panel.image = ax.imshow(np.zeros((1, 1, 4), np.uint8), interpolation="nearest",
                                    aspect="auto")
            panel.strip = strip_ax.imshow(np.zeros((1, 1)), cmap=self.cmap, aspect="auto",
                                          interpolation="nearest", vmin=0, vmax=1)
            panel.hover_row = ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, lw=1.2,
                                                     ec="red", visible=False))
            panel.hover_col = ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, lw=1.2,
                                                     ec="red", visible=False))
            ax.tick_params(labelbottom=False, labelsize=7)
            strip_ax.tick_params(labelsize=7)
            strip_ax.set_yticks([0])
            strip_ax.set_yticklabels(["\u03a3"])
            ax.set_ylabel("query", fontsize=8)
            # A plain text artist at a fixed place: Axes titles move during layout.
            panel.title = ax.text(0.5, 1.015, "", transform=ax.transAxes, ha="center",
                                  va="bottom", fontsize=9)

    def _build_controls(self, widgets):
        first = self._panels[0]
        batch = self._batch(first.frames)
        self.controls = collections.OrderedDict()
        self.controls["example"] = widgets.Dropdown(
            options=[("example %d" % b, b) for b in range(batch)], value=0,
            description="example")
        for i, panel in enumerate(self._panels):
            suffix = "" if i == 0 else "_compare"
            tag = "" if i == 0 else " (right)"
            self.controls["layer" + suffix] = widgets.Dropdown(
                options=panel.layer_names(), value=panel.layer, description="layer" + tag)
            self.controls["head" + suffix] = widgets.Dropdown(
                options=panel.head_options(), value=panel.head, description="head" + tag)
            if len(panel.frames) > 1:
                self.controls["step" + suffix] = widgets.SelectionSlider(
                    options=[("%d (epoch %s)" % (f.step, f.epoch), j)
                             for j, f in enumerate(panel.frames)],
                    value=panel.step_index, description="step" + tag,
                    continuous_update=True, layout=widgets.Layout(width="420px"))
        self.controls["tokens"] = widgets.SelectMultiple(
            options=[], description="tokens", rows=6)
        self.controls["query_window"] = widgets.IntRangeSlider(
            min=0, max=1, value=(0, 1), description="queries", continuous_update=False)
        self.controls["key_window"] = widgets.IntRangeSlider(
            min=0, max=1, value=(0, 1), description="keys", continuous_update=False)
        self.controls["export_format"] = widgets.Dropdown(
            options=list(EXPORT_FORMATS), value="png", description="format",
            layout=widgets.Layout(width="160px"))
        self.export_button = widgets.Button(description="export", icon="download",
                                            tooltip="save exactly this figure")
        self.status = widgets.HTML(value="")
        for name, control in self.controls.items():
            control.add_class("attnlab-" + name.replace("_", "-"))
            if name != "export_format":
                control.observe(functools.partial(self._on_control, name), names="value")
        self.export_button.add_class("attnlab-export")
        self.status.add_class("attnlab-status")
        self.export_button.on_click(lambda _: self._export_clicked())

        if self._mode == "ipympl":
            view = self.figure.canvas
        else:
            view = widgets.Image(format="png", value=b"")
        view.add_class("attnlab-heatmap")
        self.view = view
        left = [c for n, c in self.controls.items()
                if n not in ("tokens", "export_format")]
        side = widgets.VBox([self.controls["tokens"],
                             widgets.HBox([self.controls["export_format"], self.export_button]),
                             self.status])
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox(left), side]), view])
        self.widget.add_class("attnlab-explorer")

    # ---------------------------------------------------------------- state
    @property
    def state(self):
        """The current selection as plain Python values (JSON-serializable)."""
        main = self._panels[0]
        state = {"example": self.example, "layer": main.layer, "head": main.head,
                 "step": main.step, "selected_tokens": list(self.selected_tokens),
                 "query_window": list(self.query_window), "key_window": list(self.key_window)}
        if len(self._panels) > 1:
            other = self._panels[1]
            state["compare"] = {"layer": other.layer, "head": other.head, "step": other.step}
        return state

    @state.setter
    def state(self, value):
        value = dict(value)
        compare = value.pop("compare", None)
        if compare is not None:
            value.update({k + "_compare": v for k, v in compare.items()})
        self.set_state(**value)

    def set_state(self, **changes):
        """Set any of: example, layer, head, step, selected_tokens, query_window, key_window,
        layer_compare, head_compare, step_compare. Values are checked; one redraw follows.

        Raises:
            ValueError: an unknown name or a value that is not one of the options.
        """
        order = ["example", "layer", "layer_compare", "step", "step_compare", "head",
                 "head_compare", "query_window", "key_window", "selected_tokens"]
        unknown = sorted(set(changes) - set(order))
        if unknown:
            raise ValueError("unknown explorer state %s; settable: %s" % (unknown, order))
        self._holding = True
        try:
            for name in order:
                if name in changes:
                    self._set_control(name, changes[name])
        finally:
            self._holding = False
        self._refresh(full=True)

    def _set_control(self, name, value):
        if name.endswith("_compare") and len(self._panels) < 2:
            raise ValueError("%s needs a compare source" % name)
        if name in ("step", "step_compare"):
            panel = self._panels[0 if name == "step" else 1]
            steps = [f.step for f in panel.frames]
            if value not in steps:
                raise ValueError("%s %r is not one of the saved steps %s" % (name, value, steps))
            if len(panel.frames) > 1:
                self.controls[name].value = steps.index(value)
            return
        if name == "selected_tokens":
            value = tuple(int(v) for v in value)
            length = len(self._query_tokens(self._panels[0]))
            bad = [v for v in value if not 0 <= v < length]
            if bad:
                raise ValueError("selected_tokens %s out of range for %d query tokens"
                                 % (bad, length))
            self.selected_tokens = tuple(sorted(set(value)))
            self._sync_tokens_control()
            return
        if name in ("query_window", "key_window"):
            value = tuple(value)
            control = self.controls[name]
            if len(value) != 2 or not control.min <= value[0] < value[1] <= control.max:
                raise ValueError("%s must be (start, stop) with %d <= start < stop <= %d, "
                                 "got %r" % (name, control.min, control.max, value))
            control.value = value
            return
        control = self.controls[name]
        values = [o[1] if isinstance(o, tuple) else o for o in control.options]
        if value not in values or isinstance(value, bool):
            raise ValueError("%s %r is not one of %s" % (name, value, values))
        control.value = value

    def observe(self, callback):
        """Call `callback(state)` after every change (from the page or from Python)."""
        self._observers.append(callback)

    # ---------------------------------------------------------------- control events
    def _on_control(self, name, change):
        panel = self._panels[1 if name.endswith("_compare") else 0]
        base = name[:-len("_compare")] if name.endswith("_compare") else name
        value = change["new"]
        full = False
        if base == "example":
            self.example = value
            self.selected_tokens = ()
            full = True
        elif base == "layer":
            panel.layer = value
            self._update_head_options(panel, name)
            full = True
        elif base == "head":
            if value is not None:
                panel.head = value
        elif base == "step":
            panel.step_index = value
        elif base == "tokens":
            self.selected_tokens = tuple(sorted(value))
        elif base in ("query_window", "key_window"):
            setattr(self, base, tuple(value))
            full = True
        if base in ("example", "layer"):
            self._reset_windows()
        if not self._holding:
            self._refresh(full=full)

    def _update_head_options(self, panel, layer_control):
        head_name = "head" + ("_compare" if layer_control.endswith("_compare") else "")
        options = panel.head_options()
        values = [v for _, v in options]
        keep = panel.head if panel.head in values else 0
        control = self.controls[head_name]
        holding, self._holding = self._holding, True
        try:
            control.options = options
            control.value = keep
        finally:
            self._holding = holding
        panel.head = keep

    def _reset_windows(self):
        """Full windows for the current shapes (called when the example or layer changes)."""
        t = max(p.weights().shape[2] for p in self._panels)
        s = max(p.weights().shape[3] for p in self._panels)
        holding, self._holding = self._holding, True
        try:
            for name, n in (("query_window", t), ("key_window", s)):
                control = self.controls[name]
                if control.max != n or getattr(self, name) is None:
                    control.max = n
                    control.value = (0, n)
                    setattr(self, name, (0, n))
            length = len(self._query_tokens(self._panels[0]))
            self.selected_tokens = tuple(i for i in self.selected_tokens if i < length)
            self._sync_tokens_control()
        finally:
            self._holding = holding

    def _query_tokens(self, panel):
        return panel.tokens(self.example, panel.weights().shape[2])

    def _sync_tokens_control(self):
        tokens = self._query_tokens(self._panels[0])
        control = self.controls["tokens"]
        holding, self._holding = self._holding, True
        try:
            options = [("%d: %s" % (i, t), i) for i, t in enumerate(tokens)]
            if list(control.options) != options:
                control.options = options
            control.value = tuple(self.selected_tokens)
        finally:
            self._holding = holding

    def _on_click(self, event):
        for panel in self._panels:
            if event.inaxes is panel.ax and event.ydata is not None:
                row = int(round(event.ydata))
                chosen = set(self.selected_tokens) ^ {row}
                self.set_state(selected_tokens=sorted(chosen))

    def _on_hover(self, event):
        cell = None
        for panel in self._panels:
            if event.inaxes is panel.ax and event.xdata is not None:
                cell = (int(round(event.ydata)), int(round(event.xdata)))
        if cell == self.hover:
            return
        self.hover = cell
        for panel in self._panels:
            for patch in (panel.hover_row, panel.hover_col):
                patch.set_visible(cell is not None)
            if cell is not None:
                (q0, q1), (k0, k1) = self.query_window, self.key_window
                panel.hover_row.set_bounds(k0 - 0.5, cell[0] - 0.5, k1 - k0, 1)
                panel.hover_col.set_bounds(cell[1] - 0.5, q0 - 0.5, 1, q1 - q0)
        self.figure.canvas.draw_idle()

    # ---------------------------------------------------------------- drawing
    def _windowed(self, panel):
        m = panel.matrix(self.example)
        (q0, q1), (k0, k1) = self.query_window, self.key_window
        q1, k1 = min(q1, m.shape[0]), min(k1, m.shape[1])
        q0, k0 = min(q0, q1 - 1), min(k0, k1 - 1)
        return m[q0:q1, k0:k1], (q0, q1, k0, k1)

    def _colorize(self, data, vmax, dim_rows):
        """RGBA uint8 of `data` on [0, vmax]; rows other than `dim_rows` washed out in white."""
        # As matplotlib's Normalize + Colormap: index floor(x * N), the top value in bin N-1.
        index = (data * (self._lut.shape[0] / vmax)).astype(np.intp)
        np.clip(index, 0, self._lut.shape[0] - 1, out=index)
        rgba = self._lut[index]
        if dim_rows:
            keep = np.zeros(data.shape[0], bool)
            keep[dim_rows] = True
            faded = rgba[~keep].astype(np.float32) * (1 - _DIM[3]) + 255.0 * _DIM[3]
            rgba[~keep] = faded.astype(np.uint8)
        return rgba

    def _refresh(self, full=False):
        vmax = 0.0
        views = []
        for panel in self._panels:
            data, window = self._windowed(panel)
            views.append((panel, data, window))
            vmax = max(vmax, float(data.max()))
        vmax = vmax if vmax > 0 else 1.0
        for panel, data, (q0, q1, k0, k1) in views:
            rows = [r for r in self.selected_tokens if q0 <= r < q1]
            panel.data, panel.clim = data, (0.0, vmax)  # one scale for both panels
            panel.image.set_data(self._colorize(data, vmax, [r - q0 for r in rows]))
            chosen = [r - q0 for r in rows] if rows else list(range(q1 - q0))
            summed = data[chosen].sum(axis=0, keepdims=True)
            panel.strip.set_data(summed)
            panel.strip.set_clim(0.0, max(float(summed.max()), 1e-12))
            panel.title.set_text("%s \u00b7 max %.3g" % (panel.describe(), float(data.max())))
            key = (self.example, q0, q1, k0, k1, tuple(self._query_tokens(panel)),
                   tuple(panel.tokens(self.example, panel.weights().shape[3])))
            if key != panel.layout_key:
                panel.layout_key = key
                full = True
                self._layout(panel, q0, q1, k0, k1)
        if self._mode == "ipympl":
            self.figure.canvas.draw_idle()
        elif full or self._background is None:
            self._draw_background()
            self._blit()
        else:
            self._blit()
        self.status.value = ""
        state = self.state
        for callback in self._observers:
            callback(state)

    def _layout(self, panel, q0, q1, k0, k1):
        extent = (k0 - 0.5, k1 - 0.5, q1 - 0.5, q0 - 0.5)
        panel.image.set_extent(extent)
        panel.strip.set_extent((k0 - 0.5, k1 - 0.5, 0.5, -0.5))
        panel.ax.set_xlim(k0 - 0.5, k1 - 0.5)
        panel.ax.set_ylim(q1 - 0.5, q0 - 0.5)
        query = self._query_tokens(panel)
        keys = panel.tokens(self.example, panel.weights().shape[3])
        rows = [q0 + i for i in tick_positions(q1 - q0, self.max_ticks)]
        cols = [k0 + i for i in tick_positions(k1 - k0, self.max_ticks)]
        panel.ax.set_yticks(rows)
        panel.ax.set_yticklabels([_short(query[r]) for r in rows])
        panel.strip_ax.set_xticks(cols)
        panel.strip_ax.set_xticklabels([_short(keys[c]) for c in cols], rotation=90)

    def _dynamic(self):
        """Artists redrawn on every update, in drawing order."""
        artists = []
        for panel in self._panels:
            artists += [panel.image, panel.strip, panel.title]
        for panel in self._panels:  # spines lie on top of the images, as in a full draw
            for ax in (panel.ax, panel.strip_ax):
                artists += list(ax.spines.values())
        return artists

    def _draw_background(self):
        canvas = self.figure.canvas
        dynamic = self._dynamic()
        visible = [artist.get_visible() for artist in dynamic]
        for artist in dynamic:
            artist.set_visible(False)
        try:
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        finally:
            for artist, shown in zip(dynamic, visible):
                artist.set_visible(shown)

    def _blit(self):
        canvas = self.figure.canvas
        canvas.restore_region(self._background)
        for artist in self._dynamic():
            if artist.get_visible():
                artist.axes.draw_artist(artist)
        self._png = encode_png(np.asarray(canvas.buffer_rgba()))
        self.view.value = self._png

    # ---------------------------------------------------------------- reading back
    def image_data(self, panel=0):
        """The (T', S') array the heatmap of `panel` (0 = left, 1 = compare) now shows."""
        return self._panels[panel].data

    def color_limits(self, panel=0):
        """(vmin, vmax) of the heatmap colours of `panel` (shared by both panels)."""
        return self._panels[panel].clim

    def strip_data(self, panel=0):
        """The (S',) summed attention the strip under `panel` now shows."""
        return np.asarray(self._panels[panel].strip.get_array())[0]

    def tick_labels(self, panel=0):
        """(query labels, key labels) as drawn on the axes of `panel`."""
        p = self._panels[panel]
        return ([t.get_text() for t in p.ax.get_yticklabels()],
                [t.get_text() for t in p.strip_ax.get_xticklabels()])

    def title(self, panel=0):
        return self._panels[panel].title.get_text()

    def png(self):
        """The PNG bytes currently displayed (image mode) or a fresh render (ipympl mode)."""
        if self._mode == "image":
            return self._png
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.figure.dpi)
        return buffer.getvalue()

    # ---------------------------------------------------------------- export
    def export(self, path=None, format=None):
        """Save exactly what is displayed, as PNG or SVG.

        Args:
            path: target file (default: export_dir/attention-<layer>-<head>[-step<N>].<fmt>).
            format: "png" or "svg" (default: the path's suffix, else "png").

        Returns:
            The path written.
        """
        if path is None:
            fmt = export_format("x." + (format or "png"))
            main = self._panels[0]
            name = "attention-%s-%s%s-ex%d.%s" % (
                main.layer, main.head, "" if main.step is None else "-step%d" % main.step,
                self.example, fmt)
            path = os.path.join(self.export_dir, re.sub(r"[^A-Za-z0-9._-]+", "_", name))
        fmt = export_format(path, format)
        if fmt == "png":
            data = self.png()
        else:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="svg", dpi=self.figure.dpi)
            data = buffer.getvalue()
        self.last_export = atomic_write_bytes(os.fspath(path), data)
        return self.last_export

    def _export_clicked(self):
        try:
            path = self.export(format=self.controls["export_format"].value)
            self.status.value = "saved <code>%s</code>" % path
        except (OSError, ValueError) as error:
            self.status.value = "export failed: %s" % error

    # ---------------------------------------------------------------- display
    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

