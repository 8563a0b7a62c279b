"""TokenLineView: the "head view", attention as lines between two token columns.

Queries (the attending side) on the left, keys on the right; a line per weight, its
opacity the weight, its colour the head. Selecting a query (key) token keeps only the lines
from (into) it. Cross-attention works as self-attention: T decoder tokens against S encoder
tokens. Long sequences stay interactive because only weights above `threshold` are drawn,
each query keeps at most its `max_lines` strongest keys per head, and the columns show a
window of the tokens (`query_window`, `key_window`).

The view follows `AttentionExplorer`'s conventions: the same sources, a `state` of plain
values with `set_state` and `observe`, `backend="auto"|"ipympl"|"image"` and `export` to
PNG, SVG, PDF or an HTML page whose token labels isolate their lines on click. Which lines
are drawn is `attnlab.viz.line_selection`; the figure is `attnlab.viz.line_figure`.

How a token is clicked in the page:
- "image": the figure is an `ipywidgets.Image` (no mouse events), so transparent buttons
  lie over the token labels (a CSS grid cell shared with the image);
- "ipympl": a click on a label text of the canvas; while no token is selected,
  hovering over a label shows only that token's lines.
The query and key dropdowns select any token, labelled or not.
"""
import functools
import numbers
import os

import numpy as np

from attnlab.validation import check_choice, check_number, check_positive_int
from attnlab.viz.explorer_panel import ExplorerPanel, batch_size, explorer_frames
from attnlab.viz.line_figure import LINE_VIEW_SCRIPT, LineFigure
from attnlab.viz.line_selection import attention_lines
from attnlab.viz.view_widget import ViewWidget
from attnlab.viz.widget_backend import BACKENDS, choose_backend

STATE_ORDER = ("example", "layer", "step", "head", "heads", "query_window", "key_window",
               "threshold", "max_lines", "selected_query", "selected_key")
NO_TOKEN = -1  # the token dropdowns' value for "no token selected"
DEFAULT_WINDOW = 128  # tokens per column shown at first: about 10k lines stay interactive


class TokenLineView(ViewWidget):
    """Attention drawn as lines between query and key tokens, one colour per head.

    Args:
        source: dict layer name -> (B, H, T, S) weights (layer order), an AttentionSnapshot
            (e.g. from `capture_attention`), a list of snapshots (adds a step slider) or a
            run folder with saved snapshots, as for `AttentionExplorer`.
        query_tokens, key_tokens: tokens for a dict source: T (S) strings or B lists of them
            (cross-attention: decoder tokens as queries, encoder tokens as keys).
        backend: "auto" (ipympl when it is the active matplotlib backend, else "image"),
            "ipympl" or "image".
        threshold: lines of weight below it are not drawn (0 <= threshold <= 1).
        max_lines: at most this many lines per query token and head, its strongest keys
            (None: every line above the threshold).
        query_window: (start, stop) of the query tokens shown (default: the first 128);
            for self-attention the key column follows it unless `key_window` is given.
        key_window: (start, stop) of the key tokens shown (default: the first 128).
        export_dir: folder the export button writes to (default: the run folder for a run
            source, else the current folder).
        figsize: (width, height) of the figure in inches; dpi: CSS pixels per inch.
        pixel_ratio: device pixels drawn per CSS pixel in "image" mode (2: sharp on
            high-density screens, four times the pixels to draw).
        max_labels: at most this many token labels per column (every k-th token).
        linewidth: line width in points.

    Returns:
        An object that displays as a widget in Jupyter; its `state` is readable and settable.

    Raises:
        ValueError, TypeError: a bad source or argument (the message names it).

    Example:
        >>> view = TokenLineView({"enc0": weights}, query_tokens=tokens, key_tokens=tokens)
        >>> view.set_state(heads=[0, 2], selected_query=3)
        >>> view.lines()[:, 1]  # every line drawn starts at query 3
        array([3., 3., 3.])
    """

    def __init__(self, source, query_tokens=None, key_tokens=None, backend="auto",
                 threshold=0.01, max_lines=16, query_window=None, key_window=None,
                 export_dir=None, figsize=(5.0, 6.4), dpi=100, pixel_ratio=1, max_labels=40,
                 linewidth=1.0):
        import ipywidgets as widgets

        self._init_view()
        check_choice("backend", backend, BACKENDS)
        if isinstance(pixel_ratio, bool) or not isinstance(pixel_ratio, numbers.Real) \
                or not 0 < pixel_ratio <= 8:
            raise ValueError("pixel_ratio must be a number in (0, 8] (device pixels per CSS "
                             "pixel), got %r" % (pixel_ratio,))
        check_positive_int("max_labels", max_labels)
        check_number("linewidth", linewidth, above=0)
        frames, run_dir = explorer_frames(source, query_tokens, key_tokens)
        self._panel = ExplorerPanel(frames, "source")
        self.export_dir = export_dir or run_dir or os.getcwd()
        self.example = 0
        _, h, t, s = self._panel.weights().shape
        self.heads = tuple(range(h))
        self.query_window, self.key_window = _default_window(t), _default_window(s)
        self.threshold, self.max_lines = 0.01, 16
        self.selected_query = self.selected_key = None
        self._layout_key = None
        self._mode = choose_backend(backend)
        self._drawing = LineFigure(self._mode, figsize, dpi, pixel_ratio, max_labels,
                                   linewidth)
        self.figure = self._drawing.figure
        self.hover = None  # (side, index) of the token label under the mouse (ipympl)
        if self._mode == "ipympl":
            self.figure.canvas.mpl_connect("button_press_event", self._on_click)
            self.figure.canvas.mpl_connect("motion_notify_event", self._on_hover)
        self._token_buttons = []
        self._build_controls(widgets)
        self._arrange(widgets)
        initial = {"threshold": threshold, "max_lines": max_lines}
        if query_window is not None:
            initial["query_window"] = query_window
        if key_window is not None:
            initial["key_window"] = key_window
        self.set_state(**initial)

    # ---------------------------------------------------------------- construction
    def _build_controls(self, widgets):
        frames = self._panel.frames
        self.controls = {}
        self.controls["example"] = widgets.Dropdown(
            options=[("example %d" % b, b) for b in range(batch_size(frames))],
            description="example")
        self.controls["layer"] = widgets.Dropdown(options=self._panel.layer_names(),
                                                  description="layer")
        if len(frames) > 1:
            self.controls["step"] = widgets.SelectionSlider(
                options=[("%d (epoch %s)" % (f.step, f.epoch), f.step) for f in frames],
                value=frames[-1].step, description="step", continuous_update=True,
                layout=widgets.Layout(width="300px"))
        self.controls["query"] = widgets.Dropdown(options=[("all queries", NO_TOKEN)],
                                                  description="query")
        self.controls["key"] = widgets.Dropdown(options=[("all keys", NO_TOKEN)],
                                                description="key")
        self.controls["query_window"] = widgets.IntRangeSlider(
            min=0, max=1, value=(0, 1), description="queries", continuous_update=False)
        self.controls["key_window"] = widgets.IntRangeSlider(
            min=0, max=1, value=(0, 1), description="keys", continuous_update=False)
        self.controls["threshold"] = widgets.BoundedFloatText(
            min=0.0, max=1.0, step=0.005, description="threshold",
            layout=widgets.Layout(width="180px"))
        for name, control in self.controls.items():
            control.add_class("attnlab-" + name.replace("_", "-"))
            control.observe(functools.partial(self._on_control, name), names="value")
        self.head_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap",
                                                           max_width="300px"))
        self.head_box.add_class("attnlab-heads")
        self.export_format = self._build_export_controls(widgets)

    def _arrange(self, widgets):
        self._widgets = widgets
        if self._mode == "ipympl":
            self.view = self.image = self.figure.canvas
        else:
            width, height = self._drawing.css_size
            self.image = widgets.Image(format="png", value=b"", layout=widgets.Layout(
                width="%gpx" % width, height="%gpx" % height, grid_area="1 / 1 / 2 / 2"))
            # One grid cell holds the image and, over its token labels, the token buttons.
            self.view = widgets.GridBox([self.image], layout=widgets.Layout(
                grid_template_columns="%gpx" % width, grid_template_rows="%gpx" % height,
                flex="0 0 auto"))
        self.image.add_class("attnlab-line-image")
        self.view.add_class("attnlab-line-canvas")
        column = [self.controls[n] for n in ("example", "layer", "step") if n in self.controls]
        column += [self.head_box] + [self.controls[n] for n in (
            "query", "key", "query_window", "key_window", "threshold")]
        column += [widgets.HBox([self.export_format, self.export_button]), self.status]
        self.widget = widgets.HBox(
            [widgets.VBox(column, layout=widgets.Layout(flex="0 0 auto")), self.view],
            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.widget.add_class("attnlab-line-view")

    # ---------------------------------------------------------------- state
    @property
    def state(self):
        """The current selection as plain Python values (JSON-serializable)."""
        return {"example": self.example, "layer": self._panel.layer, "step": self._panel.step,
                "heads": list(self.heads), "query_window": list(self.query_window),
                "key_window": list(self.key_window), "threshold": self.threshold,
                "max_lines": self.max_lines, "selected_query": self.selected_query,
                "selected_key": self.selected_key}

    @state.setter
    def state(self, value):
        self.set_state(**dict(value))

    def set_state(self, **changes):
        """Set any of: example, layer, step, head (one head) or heads (a list, or "all"),
        query_window, key_window, threshold, max_lines, selected_query, selected_key.

        Values are checked before anything changes; one redraw follows. A new example
        clears the selected tokens; a layer of other lengths shows its first tokens.

        Raises:
            ValueError: an unknown name or a value out of range (the message names it).
            TypeError: a value of the wrong type.
        """
        unknown = sorted(set(changes) - set(STATE_ORDER))
        if unknown:
            raise ValueError("unknown line view state %s; settable: %s"
                             % (unknown, list(STATE_ORDER)))
        if "head" in changes and "heads" in changes:
            raise ValueError("set head (one head) or heads (a list), not both")
        new = self._checked(changes)
        self._panel.layer = new["layer"]
        self._panel.step_index = new["step_index"]
        for name in ("example", "heads", "query_window", "key_window", "threshold",
                     "max_lines", "selected_query", "selected_key"):
            setattr(self, name, new[name])
        self._refresh()

    def _checked(self, changes):
        """The state after `changes`, every value checked; nothing is changed yet."""
        panel = self._panel
        new = {"example": self.example, "layer": panel.layer, "step_index": panel.step_index,
               "heads": self.heads, "query_window": self.query_window,
               "key_window": self.key_window, "threshold": self.threshold,
               "max_lines": self.max_lines, "selected_query": self.selected_query,
               "selected_key": self.selected_key}
        if "example" in changes:
            new["example"] = _index("example", changes["example"], batch_size(panel.frames))
            if new["example"] != self.example:
                new["selected_query"] = new["selected_key"] = None
        if "layer" in changes:
            names = panel.layer_names()
            if changes["layer"] not in names:
                raise ValueError("layer %r is not one of %s" % (changes["layer"], names))
            new["layer"] = changes["layer"]
        if "step" in changes:
            steps = [f.step for f in panel.frames]
            if changes["step"] not in steps or isinstance(changes["step"], bool):
                raise ValueError("step %r is not one of the saved steps %s"
                                 % (changes["step"], steps))
            new["step_index"] = steps.index(changes["step"])
        _, h, t, s = panel.frames[new["step_index"]].weights[new["layer"]].shape
        if (t, s) != self._lengths():
            # Another layer's tokens: its first ones, nothing selected.
            new.update(query_window=_default_window(t), key_window=_default_window(s),
                       selected_query=None,
                       selected_key=None)
        shown = panel.weights().shape[1]
        if h != shown:
            # All heads stay all heads; a choice keeps the heads the new layer has.
            every = len(new["heads"]) == shown
            new["heads"] = tuple(range(h)) if every else \
                tuple(i for i in new["heads"] if i < h) or tuple(range(h))
        if "head" in changes:
            new["heads"] = (_index("head", changes["head"], h),)
        if "heads" in changes:
            new["heads"] = _heads(changes["heads"], h)
        if "query_window" in changes:
            new["query_window"] = _window("query_window", changes["query_window"], t)
            if t == s and "key_window" not in changes:
                new["key_window"] = new["query_window"]
        if "key_window" in changes:
            new["key_window"] = _window("key_window", changes["key_window"], s)
        for name, window in (("selected_query", new["query_window"]),
                             ("selected_key", new["key_window"])):
            if new[name] is not None and not window[0] <= new[name] < window[1]:
                new[name] = None  # the window moved away from the selected token
        if "threshold" in changes:
            new["threshold"] = float(check_number("threshold", changes["threshold"],
                                                  at_least=0, at_most=1))
        if "max_lines" in changes:
            new["max_lines"] = changes["max_lines"]
            if new["max_lines"] is not None:
                check_positive_int("max_lines", new["max_lines"])
        for name, window in (("selected_query", new["query_window"]),
                             ("selected_key", new["key_window"])):
            if name in changes and changes[name] is not None:
                value = _index(name, changes[name], window[1])
                if value < window[0]:
                    raise ValueError("%s %d is outside the window [%d, %d)"
                                     % (name, value, window[0], window[1]))
                new[name] = value
            elif name in changes:
                new[name] = None
        return new

    def _lengths(self):
        """(T, S) of the layer shown now."""
        return tuple(self._panel.weights().shape[2:])

    # ---------------------------------------------------------------- page events
    def _on_control(self, name, change):
        if self._holding:
            return
        value = change["new"]
        if name in ("query", "key"):
            self.set_state(**{"selected_" + name: None if value == NO_TOKEN else value})
        elif name in ("query_window", "key_window"):
            self.set_state(**{name: tuple(value)})
        else:
            self.set_state(**{name: value})

    def _on_head_toggle(self, head, change):
        if self._holding:
            return
        chosen = set(self.heads) | {head} if change["new"] else set(self.heads) - {head}
        self.set_state(heads=sorted(chosen))

    def _toggle_token(self, side, index):
        """A click on a token: select it, or clear the selection when it was selected."""
        name = "selected_" + side
        self.set_state(**{name: None if getattr(self, name) == index else index})

    def _on_click(self, event):
        label = self._drawing.label_at(event)
        if label is not None:
            self._toggle_token(*label)

    def _on_hover(self, event):
        """While no token is selected, the token under the mouse shows only its lines."""
        label = self._drawing.label_at(event)
        if label != self.hover:
            self.hover = label
            if self.selected_query is None and self.selected_key is None:
                self._refresh(notify=False)

    def _sync_controls(self):
        """Show the state in the controls (their events are held)."""
        c = self.controls
        query_tokens, key_tokens = self._tokens()
        t, s = self._lengths()
        with self._held():
            c["example"].value = self.example
            c["layer"].value = self._panel.layer
            if "step" in c:
                c["step"].value = self._panel.step
            for name, n in (("query_window", t), ("key_window", s)):
                window = getattr(self, name)
                if c[name].max != n:
                    # Widen first: the old value must stay valid while the bounds move.
                    c[name].value = (0, min(n, c[name].max))
                    c[name].max = n
                c[name].value = window
            for name, tokens, window, none in (
                    ("query", query_tokens, self.query_window, "all queries"),
                    ("key", key_tokens, self.key_window, "all keys")):
                options = [(none, NO_TOKEN)] + [("%d: %s" % (i, tokens[i]), i)
                                                for i in range(*window)]
                if list(c[name].options) != options:
                    c[name].options = options
                selected = getattr(self, "selected_" + name)
                c[name].value = NO_TOKEN if selected is None else selected
            c["threshold"].value = self.threshold
            self._sync_head_toggles()

    def _sync_head_toggles(self):
        widgets = self._widgets
        count = self._panel.weights().shape[1]
        toggles = list(self.head_box.children)
        if len(toggles) != count:
            toggles = []
            for h, color in enumerate(_hex_colors(count)):
                toggle = widgets.ToggleButton(description="head %d" % h, tooltip="head %d" % h,
                                              layout=widgets.Layout(width="64px"))
                toggle.style.button_color = color
                toggle.add_class("attnlab-head-toggle")
                toggle.observe(functools.partial(self._on_head_toggle, h), names="value")
                toggles.append(toggle)
            self.head_box.children = toggles
        for h, toggle in enumerate(toggles):
            toggle.value = h in self.heads

    # ---------------------------------------------------------------- drawing
    def _tokens(self):
        return (self._panel.query_tokens(self.example), self._panel.key_tokens(self.example))

    def _title(self):
        count = self._panel.weights().shape[1]
        if len(self.heads) == count:
            heads = "all %d heads" % count if count > 1 else "head 0"
        elif not self.heads:
            heads = "no head"
        else:
            heads = ("head " if len(self.heads) == 1 else "heads ") + \
                ",".join(str(h) for h in self.heads)
        parts = [self._panel.layer, heads, "example %d" % self.example]
        if self._panel.step is not None:
            parts.append("step %d" % self._panel.step)
        return " \u00b7 ".join(parts)

    def _refresh(self, notify=True):
        self._sync_controls()
        drawing = self._drawing
        tokens = self._tokens()
        drawing.set_head_count(self._panel.weights().shape[1])
        # The labels (and the drawn background) depend only on the windows and tokens: a
        # layer, step or example of the same tokens keeps them.
        layout_key = (self.query_window, self.key_window, tuple(tokens[0]), tuple(tokens[1]))
        relayout = layout_key != self._layout_key or drawing.windows != (
            self.query_window, self.key_window)
        if relayout:
            self._layout_key = layout_key
            self.hover = None
            drawing.set_tokens(tokens[0], tokens[1], self.query_window, self.key_window)
        selected = (self.selected_query, self.selected_key)
        if selected == (None, None) and self.hover is not None:
            selected = (self.hover[1], None) if self.hover[0] == "query" else \
                (None, self.hover[1])
        lines = attention_lines(self._panel.weights()[self.example], self.heads,
                                self.query_window, self.key_window, self.threshold,
                                self.max_lines, *selected)
        png = drawing.draw(lines, self.heads, selected, tokens, self._title())
        if png is not None:
            self.image.value = png
            if relayout:
                self._place_token_buttons()
        self.status.value = ""
        if notify:
            self._notify()

    def _place_token_buttons(self):
        """Transparent buttons over the token labels of the image ("image" mode)."""
        widgets = self._widgets
        boxes = self._drawing.label_boxes()
        tokens = self._tokens()
        while len(self._token_buttons) < len(boxes):
            button = widgets.Button(description="", layout=widgets.Layout(
                grid_area="1 / 1 / 2 / 2", align_self="flex-start", padding="0",
                min_width="0", min_height="0", border="0"))
            button.style.button_color = "transparent"
            button.on_click(functools.partial(self._on_token_button,
                                              len(self._token_buttons)))
            self._token_buttons.append(button)
            self.view.children = (self.image,) + tuple(self._token_buttons)
        self._button_tokens = [(side, index) for side, index, _ in boxes]
        for i, button in enumerate(self._token_buttons):
            if i >= len(boxes):
                button.layout.display = "none"
                continue
            side, index, (left, top, width, height) = boxes[i]
            pad = 2  # a slightly larger target than the glyphs
            button.layout.margin = "%.1fpx 0 0 %.1fpx" % (max(top - pad, 0), max(left - pad, 0))
            button.layout.width = "%.1fpx" % (width + 2 * pad)
            button.layout.height = "%.1fpx" % (height + 2 * pad)
            button.layout.display = None
            button.tooltip = "%s %d: %s" % (side, index, tokens[side == "key"][index])
            button._dom_classes = ("attnlab-token", "attnlab-%s-token" % side)

    def _on_token_button(self, slot, _button):
        self._toggle_token(*self._button_tokens[slot])

    # ---------------------------------------------------------------- reading back
    def lines(self):
        """The lines drawn now: (N, 4) rows (head, query, key, alpha), read from the figure.

        Sorted by head, then query, then key; alpha is the weight (clipped to [0, 1]).
        """
        return self._drawing.drawn_lines()

    def token_labels(self):
        """(query labels, key labels) drawn: lists of (token index, text)."""
        labels = {"query": [], "key": []}
        for side, index, text in self._drawing.labels:
            labels[side].append((index, text.get_text()))
        return labels["query"], labels["key"]

    def title(self):
        return self._drawing.title.get_text()

    def png(self):
        """The PNG bytes currently displayed (image mode) or a fresh render (ipympl mode)."""
        return self._drawing.png()

    # ---------------------------------------------------------------- export
    def _export_name(self, fmt):
        step = self._panel.step
        return "lines-%s-ex%d%s.%s" % (self._panel.layer, self.example,
                                       "" if step is None else "-step%d" % step, fmt)

    def _export_document(self, fmt):
        """The HTML page holds the figure as SVG, the state, the tokens and the lines as
        JSON, and a script: clicking a token label keeps only its lines."""
        query_tokens, key_tokens = self._tokens()
        lines = [[int(h), int(q), int(k), float(a)] for h, q, k, a in self.lines()]
        return self._drawing.render(
            fmt, title="attention lines: %s" % self.title(), script=LINE_VIEW_SCRIPT,
            data={"state": self.state, "query_tokens": query_tokens,
                  "key_tokens": key_tokens, "lines": lines,
                  "labels": [[side, index] for side, index, _ in self._drawing.labels]})


def _index(name, value, length):
    """`value` as an index in [0, length), or a ValueError/TypeError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an integer, got %r" % (name, value))
    if not 0 <= value < length:
        raise ValueError("%s %d is out of range for %d" % (name, value, length))
    return int(value)


def _heads(value, count):
    if value is None or (isinstance(value, str) and value == "all"):
        return tuple(range(count))
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError("heads must be a list of head indices or \"all\", got %r" % (value,))
    return tuple(sorted({_index("heads", h, count) for h in value}))


def _window(name, value, length):
    try:
        start, stop = (int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       else None for v in value)
    except (TypeError, ValueError):
        start = stop = None
    if start is None or stop is None or not 0 <= start < stop <= length:
        raise ValueError("%s must be (start, stop) with 0 <= start < stop <= %d, got %r"
                         % (name, length, value))
    return start, stop


def _default_window(length):
    return 0, min(length, DEFAULT_WINDOW)


def _hex_colors(count):
    from attnlab.viz.line_figure import head_colors

    return ["#%02x%02x%02x" % tuple(int(round(255 * c)) for c in rgb)
            for rgb in head_colors(count)]
