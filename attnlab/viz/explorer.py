"""AttentionExplorer: an offline ipywidgets + matplotlib viewer for attention weights.

The explorer owns the controls, the selection state and export; what each panel shows is
`attnlab.viz.explorer_panel`, and how the figure is drawn and reaches the page (an ipympl
canvas, or an Agg-drawn PNG in an `ipywidgets.Image` at its displayed size) is
`attnlab.viz.explorer_figure`. No JavaScript is loaded from anywhere: only ipywidgets' and
ipympl's own lab extensions.

The controls sit left of the map, and above it when the output area is too narrow for both.
With ipympl, clicking a cell selects its query token and hovering shows a row/column
crosshair; a plain image has no mouse events, so there the tokens control selects.
"""
import collections
import functools
import numbers
import os

from attnlab.validation import check_choice
from attnlab.viz.explorer_figure import ExplorerFigure
from attnlab.viz.explorer_panel import ExplorerPanel, batch_size, explorer_frames
from attnlab.viz.view_widget import ViewWidget
from attnlab.viz.widget_backend import BACKENDS, choose_backend


class AttentionExplorer(ViewWidget):
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
        panel_size: (width, height) of one panel in inches; dpi: CSS pixels per inch, so
            the map shows at panel_size * dpi CSS pixels, never stretched to the page.
        pixel_ratio: device pixels drawn per CSS pixel in "image" mode: 1 (as matplotlib's
            inline backend) keeps updates fast; 2 is sharp on high-density screens (as the
            inline backend's "retina") for four times the pixels to draw and encode.
            ipympl follows the browser's ratio by itself.

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
                 panel_size=(4.2, 4.8), dpi=100, pixel_ratio=1):
        import ipywidgets as widgets

        self._init_view()
        check_choice("backend", backend, BACKENDS)
        if isinstance(pixel_ratio, bool) or not isinstance(pixel_ratio, numbers.Real) \
                or not 0 < pixel_ratio <= 8:
            raise ValueError("pixel_ratio must be a number in (0, 8] (device pixels per CSS "
                             "pixel), got %r" % (pixel_ratio,))
        frames, run_dir = explorer_frames(source, query_tokens, key_tokens)
        self._panels = [ExplorerPanel(frames, "source")]
        if compare is not None:
            if isinstance(compare, str) and compare == "self":
                other = frames
            else:
                other, _ = explorer_frames(compare, query_tokens, key_tokens)
            if batch_size(other) != batch_size(frames):
                raise ValueError("compare must have the same batch size as source (%d)"
                                 % batch_size(frames))
            self._panels.append(ExplorerPanel(other, "compare"))
        self.export_dir = export_dir or run_dir or os.getcwd()
        self.cmap = cmap
        self.max_ticks = max_ticks
        self.example = 0
        self.selected_tokens = ()
        self.query_window = None
        self.key_window = None
        self.hover = None
        self._mode = choose_backend(backend)
        self._drawing = ExplorerFigure(self._panels, self._mode, panel_size, dpi, pixel_ratio,
                                       cmap, max_ticks)
        self.figure = self._drawing.figure
        if self._mode == "ipympl":
            self.figure.canvas.mpl_connect("button_press_event", self._on_click)
            self.figure.canvas.mpl_connect("motion_notify_event", self._on_hover)
        self._build_controls(widgets)
        self._arrange(widgets)
        self._reset_windows()
        self._refresh(full=True)

    # ---------------------------------------------------------------- construction
    def _build_controls(self, widgets):
        batch = batch_size(self._panels[0].frames)
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
                    continuous_update=True, layout=widgets.Layout(width="300px"))
        self.controls["tokens"] = widgets.SelectMultiple(
            options=[], description="tokens", rows=6)
        self.controls["query_window"] = widgets.IntRangeSlider(
            min=0, max=1, value=(0, 1), description="queries", continuous_update=False)
        self.controls["key_window"] = widgets.IntRangeSlider(
            min=0, max=1, value=(0, 1), description="keys", continuous_update=False)
        self.controls["export_format"] = self._build_export_controls(widgets)
        for name, control in self.controls.items():
            control.add_class("attnlab-" + name.replace("_", "-"))
            if name != "export_format":
                control.observe(functools.partial(self._on_control, name), names="value")

    def _arrange(self, widgets):
        """The map's view and the explorer's widget: a column of controls, then the map."""
        if self._mode == "ipympl":
            view = self.figure.canvas
        else:
            # Sized in CSS pixels: the page shows the drawn pixels at the device-pixel ratio
            # instead of stretching them to the output width; never shrunk in the row.
            width, height = self._drawing.css_size
            view = widgets.Image(format="png", value=b"", layout=widgets.Layout(
                width="%gpx" % width, height="%gpx" % height, flex="0 0 auto",
                object_fit="contain"))
        view.add_class("attnlab-heatmap")
        self.view = view
        column = [c for n, c in self.controls.items() if n != "export_format"]
        column += [widgets.HBox([self.controls["export_format"], self.export_button]),
                   self.status]
        # Controls beside the map, so both fit a laptop window; they wrap above it when
        # the output area is narrower than both.
        self.widget = widgets.HBox(
            [widgets.VBox(column, layout=widgets.Layout(flex="0 0 auto")), view],
            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))
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
        with self._held():
            for name in order:
                if name in changes:
                    self._set_control(name, changes[name])
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
            length = len(self._panels[0].query_tokens(self.example))
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
        with self._held():
            control.options = options
            control.value = keep
        panel.head = keep

    def _reset_windows(self):
        """Full windows for the current shapes (called when the example or layer changes)."""
        t = max(p.weights().shape[2] for p in self._panels)
        s = max(p.weights().shape[3] for p in self._panels)
        with self._held():
            for name, n in (("query_window", t), ("key_window", s)):
                control = self.controls[name]
                if control.max != n or getattr(self, name) is None:
                    control.max = n
                    control.value = (0, n)
                    setattr(self, name, (0, n))
            length = len(self._panels[0].query_tokens(self.example))
            self.selected_tokens = tuple(i for i in self.selected_tokens if i < length)
            self._sync_tokens_control()

    def _sync_tokens_control(self):
        tokens = self._panels[0].query_tokens(self.example)
        control = self.controls["tokens"]
        with self._held():
            options = [("%d: %s" % (i, t), i) for i, t in enumerate(tokens)]
            if list(control.options) != options:
                control.options = options
            control.value = tuple(self.selected_tokens)

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
        self._drawing.show_hover(cell, self.query_window, self.key_window)

    # ---------------------------------------------------------------- drawing
    def _windowed(self, panel):
        m = panel.matrix(self.example)
        (q0, q1), (k0, k1) = self.query_window, self.key_window
        q1, k1 = min(q1, m.shape[0]), min(k1, m.shape[1])
        q0, k0 = min(q0, q1 - 1), min(k0, k1 - 1)
        return m[q0:q1, k0:k1], (q0, q1, k0, k1)

    def _refresh(self, full=False):
        views = [(panel,) + self._windowed(panel) for panel in self._panels]
        png = self._drawing.draw(views, self.selected_tokens, self.example, full)
        if png is not None:
            self.view.value = png
        self.status.value = ""
        self._notify()

    # ---------------------------------------------------------------- reading back
    def image_data(self, panel=0):
        """The (T', S') array the heatmap of `panel` (0 = left, 1 = compare) now shows."""
        return self._panels[panel].data

    def color_limits(self, panel=0):
        """(vmin, vmax) of the heatmap colours of `panel` (shared by both panels)."""
        return self._panels[panel].clim

    def strip_data(self, panel=0):
        """The (S',) summed attention the strip under `panel` now shows."""
        return self._panels[panel].summed

    def tick_labels(self, panel=0):
        """(query labels, key labels) as drawn on the axes of `panel`."""
        p = self._panels[panel]
        return ([t.get_text() for t in p.ax.get_yticklabels()],
                [t.get_text() for t in p.strip_ax.get_xticklabels()])

    def title(self, panel=0):
        return self._panels[panel].title.get_text()

    def png(self):
        """The PNG bytes currently displayed (image mode) or a fresh render (ipympl mode)."""
        return self._drawing.png()

    # ---------------------------------------------------------------- export
    def _export_name(self, fmt):
        main = self._panels[0]
        return "attention-%s-%s%s-ex%d.%s" % (
            main.layer, main.head, "" if main.step is None else "-step%d" % main.step,
            self.example, fmt)

    def _export_document(self, fmt):
        return self._drawing.render(fmt, title="attention: %s" % self.title(),
                                    data={"state": self.state})
