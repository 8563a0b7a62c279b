"""HeadMetricsTable: a sortable table of per-head metrics beside their layers x heads map.

The table is an ipywidgets `Select` in a monospace font: one line per head, clicking a
line selects that head. The column buttons above it sort the table (and the checkbox
flips the order); the map shows one metric for every (layer, head) with the selected head
outlined (with ipympl, clicking a cell selects it too). Observers get the state after each
change, so the table can steer an AttentionExplorer:

    table.observe(lambda s: explorer.set_state(layer=s["layer"], head=s["head"]))

No JavaScript is loaded: only ipywidgets' (and ipympl's) own lab extensions, and a small
inline style for the monospace font.
"""
import collections
import functools
import html
import os
import re

import numpy as np

from attnlab.validation import check_choice
from attnlab.viz.head_metrics import HeadMetrics, head_metrics
from attnlab.viz.view_widget import ViewWidget
from attnlab.viz.widget_backend import BACKENDS, choose_backend

_STYLE = ("<style>.attnlab-metrics-table select, .attnlab-table-header pre "
          "{font-family: monospace; font-size: 12px; white-space: pre}"
          ".attnlab-table-header pre {margin: 0 0 0 4px}</style>")


def _cell(value, width):
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return ("%.4f" % value).rjust(width)
    return str(value).rjust(width)


class HeadMetricsTable(ViewWidget):
    """Per-head metrics as a sortable, clickable table and a layers x heads metric map.

    Args:
        source: a HeadMetrics, or any source of `head_metrics` (dict layer -> (B, H, T, S)
            weights, an AttentionSnapshot, a list of snapshots, a run folder).
        query_tokens, key_tokens, query_mask, pad_token, sink_tokens, cross_attention,
            step: passed to `head_metrics` when `source` is not a HeadMetrics already.
        sort_by: the column the table is sorted by (a metric, "layer", "head", "queries").
        descending: largest first.
        metric: the metric the map shows (default: `sort_by` when it is a metric, else
            "entropy").
        backend: "auto" (ipympl when it is matplotlib's backend), "ipympl" or "image".
        export_dir: folder the export button writes to (default: the run folder for a run
            source, else the current folder).
        cmap: colormap of the map.
        figsize: map size in inches (default: at least 5 x 3.6, grown with the number of
            heads and layers so the values stay readable); dpi: CSS pixels per inch.

    Example:
        >>> table = HeadMetricsTable({"enc": weights}, sort_by="entropy")
        >>> table.set_state(sort_by="first_token_share", descending=True)
        >>> table.state["layer"], table.state["head"]   # the selection stays
        ('enc', 0)
    """

    def __init__(self, source, query_tokens=None, key_tokens=None, query_mask=None,
                 pad_token=None, sink_tokens=None, cross_attention=None, step=None,
                 sort_by="entropy", descending=False, metric=None, backend="auto",
                 export_dir=None, cmap="viridis", figsize=None, dpi=100):
        import ipywidgets as widgets

        self._init_view()
        check_choice("backend", backend, BACKENDS)
        if isinstance(source, HeadMetrics):
            self.metrics = source
        else:
            self.metrics = head_metrics(source, query_tokens, key_tokens, query_mask,
                                        pad_token, sink_tokens, cross_attention,
                                        similarity=None, step=step)
        run_dir = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        self.export_dir = export_dir or run_dir or os.getcwd()
        self.cmap = cmap
        self.sort_by = "entropy"
        self.descending = False
        self.metric = "entropy"
        first = self.metrics.rows[0]
        self.layer, self.head = first["layer"], first["head"]
        self._order = list(range(len(self.metrics.rows)))
        self._mode = choose_backend(backend)
        if figsize is None:
            heads = max(r["head"] for r in self.metrics.rows) + 1
            figsize = (max(5.0, 1.8 + 0.6 * heads),
                       max(3.6, 1.2 + 0.4 * len(self.metrics.layers)))
        self._make_figure(figsize, dpi)
        self._build_controls(widgets)
        self._arrange(widgets)
        self.set_state(sort_by=sort_by, descending=descending,
                       metric=metric or (sort_by if sort_by in self.metrics.metrics
                                         else "entropy"))

    # ---------------------------------------------------------------- construction
    def _make_figure(self, figsize, dpi):
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=figsize, dpi=dpi)
        if self._mode == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(self.figure)
            self._manager = FigureManager(canvas, id(self))
            canvas.header_visible = False
            canvas.mpl_connect("button_press_event", self._on_click)
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.figure)
        self.ax = None
        self.image = None
        self._png = b""

    def _build_controls(self, widgets):
        self.controls = collections.OrderedDict()
        self.controls["sort_by"] = widgets.ToggleButtons(
            options=list(self.metrics.columns), value="entropy", description="sort by",
            style={"button_width": "auto"})
        self.controls["descending"] = widgets.Checkbox(value=False, description="descending",
                                                       indent=False)
        self.controls["metric"] = widgets.Dropdown(
            options=list(self.metrics.metrics) + ["queries"], value="entropy",
            description="map")
        self.controls["table"] = widgets.Select(
            options=[], rows=min(16, len(self.metrics.rows)),
            layout=widgets.Layout(width="auto", min_width="420px"))
        self.controls["export_format"] = self._build_export_controls(
            widgets, tooltip="save the map and the table's data")
        self.header = widgets.HTML(value="")
        for name, control in self.controls.items():
            css = "metrics-table" if name == "table" else name.replace("_", "-")
            control.add_class("attnlab-" + css)
            if name != "export_format":
                control.observe(functools.partial(self._on_control, name), names="value")
        self.header.add_class("attnlab-table-header")

    def _arrange(self, widgets):
        if self._mode == "ipympl":
            view = self.figure.canvas
        else:
            width, height = (self.figure.get_size_inches() * self.figure.dpi).tolist()
            view = widgets.Image(format="png", value=b"", layout=widgets.Layout(
                width="%gpx" % width, height="%gpx" % height, flex="0 0 auto"))
        view.add_class("attnlab-metric-map")
        self.view = view
        table = widgets.VBox([self.controls["sort_by"],
                              widgets.HBox([self.controls["descending"],
                                            self.controls["metric"]]),
                              self.header, self.controls["table"],
                              widgets.HBox([self.controls["export_format"],
                                            self.export_button]),
                              self.status], layout=widgets.Layout(flex="0 1 auto"))
        self.widget = widgets.HBox([table, view], layout=widgets.Layout(
            flex_flow="row wrap", align_items="flex-start"))
        self.widget.add_class("attnlab-head-metrics")

    # ---------------------------------------------------------------- state
    @property
    def state(self):
        """The current view as plain values: sort_by, descending, metric, layer, head, step."""
        return {"sort_by": self.sort_by, "descending": self.descending,
                "metric": self.metric, "layer": self.layer, "head": self.head,
                "step": self.metrics.step}

    @state.setter
    def state(self, value):
        self.set_state(**value)

    def set_state(self, **changes):
        """Set any of: sort_by, descending, metric, layer, head (checked); one redraw follows.
        `step` is accepted when it is the metrics' own step (so `set_state(**state)` works).

        Raises:
            ValueError: an unknown name, a column or metric that does not exist, or a
                (layer, head) without metrics.
            TypeError: descending that is not a bool.
        """
        settable = ("sort_by", "descending", "metric", "layer", "head")
        changes = dict(changes)
        if "step" in changes:
            step = changes.pop("step")
            if step != self.metrics.step:
                raise ValueError("step %r: this table shows the metrics of step %r; build "
                                 "another table for another step" % (step, self.metrics.step))
        unknown = sorted(set(changes) - set(settable))
        if unknown:
            raise ValueError("unknown head metrics table state %s; settable: %s"
                             % (unknown, list(settable)))
        if "sort_by" in changes:
            check_choice("sort_by", changes["sort_by"], self.metrics.columns)
        if "descending" in changes and not isinstance(changes["descending"], bool):
            raise TypeError("descending must be a bool, got %r" % (changes["descending"],))
        if "metric" in changes:
            check_choice("metric", changes["metric"], self.metrics.metrics + ("queries",))
        layer = changes.get("layer", self.layer)
        head = changes.get("head", self.head)
        if "layer" in changes or "head" in changes:
            if isinstance(head, bool) or not isinstance(head, (int, np.integer)):
                raise TypeError("head must be an integer, got %r" % (head,))
            self.metrics.row(layer, int(head))  # ValueError naming the pair
        # A new order only rewrites the table; the map is redrawn when what it shows changes.
        redraw = self.image is None or (changes.get("metric", self.metric), layer, int(head)) \
            != (self.metric, self.layer, self.head)
        with self._held():
            for name in ("sort_by", "descending", "metric"):
                if name in changes:
                    setattr(self, name, changes[name])
                    self.controls[name].value = changes[name]
            self.layer, self.head = layer, int(head)
            self._sync_table()
        self._refresh(redraw)

    # ---------------------------------------------------------------- events
    def _on_control(self, name, change):
        if self._holding:
            return
        if name == "table":
            if change["new"] is None:
                return
            row = self.metrics.rows[change["new"]]
            self.set_state(layer=row["layer"], head=row["head"])
        else:
            self.set_state(**{name: change["new"]})

    def _on_click(self, event):
        if event.inaxes is not self.ax or event.xdata is None:
            return
        layer_index, head = int(round(event.ydata)), int(round(event.xdata))
        if 0 <= layer_index < len(self.metrics.layers):
            layer = self.metrics.layers[layer_index]
            if (layer, head) in self.metrics.heads:
                self.set_state(layer=layer, head=head)

    # ---------------------------------------------------------------- table
    def _sync_table(self):
        rows = self.metrics.sort(self.sort_by, self.descending)
        index = {(r["layer"], r["head"]): i for i, r in enumerate(self.metrics.rows)}
        self._order = [index[(r["layer"], r["head"])] for r in rows]
        width = max(len("layer"), max(len(name) for name in self.metrics.layers))
        widths = [width, 4] + [max(9, len(c)) for c in self.metrics.columns[2:]]
        header = "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(self.metrics.columns, widths)))
        arrow = " (descending)" if self.descending else " (ascending)"
        self.header.value = "%s<pre>%s</pre><small>sorted by %s%s</small>" % (
            _STYLE, html.escape(header), self.sort_by, arrow)
        options = []
        for i in self._order:
            row = self.metrics.rows[i]
            text = "  ".join(str(row[c]).ljust(w) if j == 0 else _cell(row[c], w)
                             for j, (c, w) in enumerate(zip(self.metrics.columns, widths)))
            options.append((text, i))
        control = self.controls["table"]
        if list(control.options) != options:
            control.options = options
        control.value = index[(self.layer, self.head)]

    def table_rows(self):
        """The (layer, head) of each table line, top to bottom, as displayed."""
        return [(self.metrics.rows[v]["layer"], self.metrics.rows[v]["head"])
                for _, v in self.controls["table"].options]

    def table_text(self):
        """The table's lines as displayed (header first)."""
        header = html.unescape(re.search(r"<pre>(.*)</pre>", self.header.value).group(1))
        return [header] + [label for label, _ in self.controls["table"].options]

    # ---------------------------------------------------------------- drawing
    def _refresh(self, redraw=True):
        if redraw:
            self._draw_map()
        self.status.value = ""
        self._notify()

    def _draw_map(self):
        from attnlab.viz.head_metrics import plot_metric_map

        self.figure.clear()
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.image = plot_metric_map(self.metrics, self.metric, ax=self.ax, cmap=self.cmap,
                                     selected=(self.layer, self.head))
        self.figure.tight_layout()
        if self._mode == "ipympl":
            self.figure.canvas.draw_idle()
        else:
            from attnlab.viz.explorer_figure import png_bytes

            self.figure.canvas.draw()
            self._png = png_bytes(self.figure.canvas)
            self.view.value = self._png

    def map_data(self):
        """The (layers, heads) masked array the map now shows."""
        return self.image.get_array()

    def png(self):
        """The PNG bytes shown ("image" mode) or a fresh render ("ipympl" mode)."""
        if self._mode == "image":
            return self._png
        from attnlab.viz.figure_export import figure_bytes

        return figure_bytes(self.figure, "png")

    # ---------------------------------------------------------------- export
    def _export_name(self, fmt):
        step = self.metrics.step
        return "head-metrics-%s%s.%s" % (self.metric, "" if step is None else "-step%d" % step,
                                         fmt)

    def _export_document(self, fmt):
        """The HTML page holds the map as SVG, and the state, the sorted table's rows and the
        map's values as JSON."""
        from attnlab.viz.figure_export import figure_bytes

        values = self.map_data()
        return figure_bytes(self.figure, fmt, title="head metrics: %s" % self.metric,
                            data={"state": self.state,
                                  "rows": self.metrics.sort(self.sort_by, self.descending),
                                  "map": [[None if m else float(v) for v, m in
                                           zip(vals, masks)] for vals, masks in
                                          zip(values.data, np.ma.getmaskarray(values))],
                                  "layers": list(self.metrics.layers)})
