"""The token line view's matplotlib figure: two token columns joined by one line per weight.

Layout (the query column on the left attends to the key column on the right):

    title: layer · heads · example · step
    queries a-b of T                          keys c-d of S
    tok0  ───── line of opacity = weight ─────  tok0
    tok1  ─────  (one colour per head)     ───  tok1
    ...
    head 0   head 1   head 2 ...  (legend, unselected heads in grey)

Each head's lines are one collection of straight paths (gid "attnlab-lines-h<head>"),
each token label a Text (gid "attnlab-query-<i>" / "attnlab-key-<i>"), so an SVG export
can find them; the HTML export's script (`LINE_VIEW_SCRIPT`) isolates a token's lines on click.

Like the explorer's figure (`attnlab.viz.explorer_figure`), the "image" mode draws the
static part (labels, column headers) once and, on an update, restores it and draws only
the lines, the highlighted tokens, the legend and the title before encoding the PNG.
Rasterizing a line costs Agg about 10 microseconds, so a head with many lines is drawn
into a layer of its own that is kept while its lines stay the same: switching heads on
and off then composites layers instead of drawing thousands of lines again. A line's
matplotlib Path (a few microseconds to build) depends only on its two tokens and the
windows, so each is built once and kept while the windows stay (`LineFigure._line_paths`).
"""
import numpy as np

from attnlab.viz.explorer_figure import _short, hidden, png_bytes
from attnlab.viz.figure_export import figure_bytes
from attnlab.viz.plots import tick_positions

HIGHLIGHT = "#ffe08a"  # behind the selected tokens' labels
UNSELECTED_HEAD = "#c8c8c8"  # legend colour of heads that are not drawn
LABEL_GAP = 0.03  # between a column's line ends and its labels, in axes widths


def head_colors(count):
    """`count` RGB colours from a qualitative palette (tab10, tab20 beyond ten heads)."""
    import matplotlib

    name = "tab10" if count <= 10 else "tab20"
    colors = matplotlib.colormaps[name].colors if hasattr(matplotlib, "colormaps") else \
        matplotlib.cm.get_cmap(name).colors
    return [tuple(colors[i % len(colors)][:3]) for i in range(count)]


class LineFigure:
    """The figure of a token line view, its canvas and how an update reaches the page.

    Args:
        mode: "ipympl" (the canvas is the widget) or "image" (Agg PNG for an Image widget).
        figsize: (width, height) in inches; dpi: CSS pixels per inch.
        pixel_ratio: device pixels drawn per CSS pixel ("image" mode).
        max_labels: at most this many token labels per column (every k-th token).
        linewidth: width of the lines in points.
    """

    layer_min_lines = 400  # a head with fewer lines is drawn directly on every update
    max_cached_paths = 65536  # line paths kept for reuse (about 40 MB at most)

    def __init__(self, mode, figsize, dpi, pixel_ratio, max_labels, linewidth):
        from matplotlib.figure import Figure

        self.mode = mode
        self.max_labels = max_labels
        self.linewidth = linewidth
        self.pixel_ratio = pixel_ratio if mode == "image" else 1
        self.figure = Figure(figsize=figsize, dpi=dpi * self.pixel_ratio)
        if mode == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(self.figure)
            self._manager = FigureManager(canvas, id(self))
            canvas.header_visible = False
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.figure)
        self.ax = self.figure.add_axes([0.25, 0.08, 0.5, 0.82])
        self.ax.set_xlim(0, 1)
        self.ax.set_ylim(1, 0)
        self.ax.set_axis_off()
        self.title = self.figure.text(0.5, 0.975, "", ha="center", va="top", fontsize=9)
        header = dict(transform=self.ax.transAxes, va="bottom", fontsize=7, color="#555555")
        self.query_header = self.ax.text(-LABEL_GAP, 1.02, "", ha="right", **header)
        self.key_header = self.ax.text(1 + LABEL_GAP, 1.02, "", ha="left", **header)
        highlight = dict(fontsize=7, fontweight="bold", va="center", zorder=5, visible=False,
                         clip_on=False, bbox=dict(boxstyle="round,pad=0.2", fc=HIGHLIGHT,
                                                  ec="none"))
        self.query_highlight = self.ax.text(-LABEL_GAP, 0, "", ha="right", **highlight)
        self.key_highlight = self.ax.text(1 + LABEL_GAP, 0, "", ha="left", **highlight)
        self.query_highlight.set_gid("attnlab-query-selected")
        self.key_highlight.set_gid("attnlab-key-selected")
        self.collections, self.legend, self.colors = [], [], []
        self.labels = []  # (side, token index, Text) of the drawn labels
        self.windows = ((0, 1), (0, 1))
        self._forget_paths()
        self._background = None
        self._layers = {}  # head -> (its lines' key, offset, gain) of the axes area
        self._line_keys = {}
        self._png = b""

    @property
    def canvas(self):
        return self.figure.canvas

    @property
    def css_size(self):
        """(width, height) in CSS pixels at which the drawn image shows unscaled."""
        width, height = self.canvas.get_width_height()
        return width / self.pixel_ratio, height / self.pixel_ratio

    # ---------------------------------------------------------------- layout
    def set_head_count(self, count):
        """One line collection and one legend entry per head of the layer shown."""
        import matplotlib
        from matplotlib.collections import PathCollection

        if count == len(self.collections):
            return
        for artist in self.collections + self.legend:
            artist.remove()
        self.colors = head_colors(count)
        self.collections, self.legend = [], []
        self._layers, self._line_keys = {}, {}
        for h in range(count):
            # Drawn as a LineCollection would be (same zorder, no face, lines' antialiasing),
            # but takes ready Path objects: see `_line_paths`.
            collection = PathCollection([], facecolors="none", linewidths=self.linewidth,
                                        capstyle="round", zorder=2, antialiaseds=bool(
                                            matplotlib.rcParams["lines.antialiased"]))
            collection.set_gid("attnlab-lines-h%d" % h)
            self.collections.append(self.ax.add_collection(collection))
            x = (h + 0.5) / count * 0.9 + 0.05
            self.legend.append(self.figure.text(x, 0.025, "head %d" % h, ha="center",
                                                va="bottom", fontsize=7, fontweight="bold",
                                                gid="attnlab-legend-h%d" % h))
        self._background = None

    def set_tokens(self, query_tokens, key_tokens, query_window, key_window):
        """Label the windowed token columns (at most `max_labels` labels per column)."""
        for _, _, text in self.labels:
            text.remove()
        self.labels = []
        self.windows = (tuple(query_window), tuple(key_window))
        self._forget_paths()
        for side, tokens, (start, stop), x, ha in (
                ("query", query_tokens, query_window, -LABEL_GAP, "right"),
                ("key", key_tokens, key_window, 1 + LABEL_GAP, "left")):
            for offset in tick_positions(stop - start, self.max_labels):
                i = start + offset
                text = self.ax.text(x, self.y(side, i), _short(tokens[i], 14), ha=ha,
                                    va="center", fontsize=7, clip_on=False,
                                    gid="attnlab-%s-%d" % (side, i))
                self.labels.append((side, i, text))
        (q0, q1), (k0, k1) = self.windows
        self.query_header.set_text("queries %d-%d of %d" % (q0, q1 - 1, len(query_tokens)))
        self.key_header.set_text("keys %d-%d of %d" % (k0, k1 - 1, len(key_tokens)))
        self._background = None

    def y(self, side, index):
        """Vertical position (0 top, 1 bottom) of token `index` of the query or key column."""
        start, stop = self.windows[0 if side == "query" else 1]
        return (np.asarray(index) - start + 0.5) / (stop - start)

    def index(self, side, y):
        """Token indices at vertical positions `y` (the inverse of `y`)."""
        start, stop = self.windows[0 if side == "query" else 1]
        return np.rint(np.asarray(y) * (stop - start) - 0.5).astype(int) + start

    # ---------------------------------------------------------------- updates
    def draw(self, lines, heads, selected, tokens, title):
        """Show `lines` and return the new PNG bytes ("image" mode) or None ("ipympl").

        Args:
            lines: (N, 4) rows (head, query, key, weight) from `attention_lines`.
            heads: the heads drawn (the others are hidden, and grey in the legend).
            selected: (query index or None, key index or None) to highlight.
            tokens: (query tokens, key tokens) of the example shown.
            title: the title text.
        """
        head_of = lines[:, 0].astype(int)
        for h, collection in enumerate(self.collections):
            # A head switched off keeps its lines (and layer) for when it comes back.
            collection.set_visible(h in heads)
            if h not in heads:
                continue
            mine = lines[head_of == h]
            key = (self.windows, mine.tobytes())
            if key == self._line_keys.get(h):
                continue  # new paths cost microseconds per line: keep the drawn ones
            colors = np.empty((len(mine), 4))
            colors[:, :3] = self.colors[h]
            colors[:, 3] = np.clip(mine[:, 3], 0.0, 1.0)
            collection.set_paths(self._line_paths(mine[:, 1].astype(int),
                                                  mine[:, 2].astype(int)))
            collection.set_edgecolor(colors)
            self._line_keys[h] = key
        for h, text in enumerate(self.legend):
            text.set_color(self.colors[h] if h in heads else UNSELECTED_HEAD)
        for side, index, text in (("query", selected[0], self.query_highlight),
                                  ("key", selected[1], self.key_highlight)):
            text.set_visible(index is not None)
            if index is not None:
                text.set_y(float(self.y(side, index)))
                text.set_text(_short(tokens[0 if side == "query" else 1][index], 14))
        self.title.set_text(title)
        if self.mode == "ipympl":
            self.canvas.draw_idle()
            return None
        if self._background is None:
            with hidden(self._dynamic()):
                self.canvas.draw()
                self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.canvas.restore_region(self._background)
        self._draw_lines()
        for artist in self._dynamic()[len(self.collections):]:
            if artist.get_visible():
                self.figure.draw_artist(artist)
        self._png = png_bytes(self.canvas, run_length=True)
        return self._png

    def _forget_paths(self):
        """Empty the cache of line paths (new windows move every line)."""
        (q0, q1), (k0, k1) = self.windows
        self._paths = np.empty((q1 - q0, k1 - k0), dtype=object)  # query, key -> Path
        self._path_made = np.zeros((q1 - q0, k1 - k0), dtype=bool)

    def _line_paths(self, queries, keys):
        """The Path of each line query -> key in the windows shown, as a list.

        A Path costs matplotlib a few microseconds to build (a LineCollection builds one
        per segment on every `set_segments`, about a tenth of a full redraw), and a line's
        path depends only on its two tokens and the windows: each is built once and kept
        until the windows change, so a new threshold, head, layer or example reuses the
        paths of the lines drawn before. The cache starts anew when it would grow beyond
        `max_cached_paths` (or one head's lines, when they are more).
        """
        from matplotlib.path import Path

        (q0, _), (k0, _) = self.windows
        rows, cols = queries - q0, keys - k0
        new = np.flatnonzero(~self._path_made[rows, cols])
        if new.size:
            if np.count_nonzero(self._path_made) + new.size > self.max_cached_paths:
                self._forget_paths()
                new = np.arange(rows.size)
            ends = np.empty((new.size, 2, 2))
            ends[:, 0, 0], ends[:, 1, 0] = 0.0, 1.0
            ends[:, 0, 1] = self.y("query", queries[new])
            ends[:, 1, 1] = self.y("key", keys[new])
            for row, col, vertices in zip(rows[new].tolist(), cols[new].tolist(), ends):
                self._paths[row, col] = Path(vertices)
            self._path_made[rows[new], cols[new]] = True
        return self._paths[rows, cols].tolist()

    def _draw_lines(self):
        """Each head's lines over the restored background, in head order."""
        buffer = np.asarray(self.canvas.get_renderer().buffer_rgba())
        area = self._axes_area(buffer.shape[0])
        blended = None  # the axes area as float RGB while layers are being composited
        for h, collection in enumerate(self.collections):
            count = len(collection.get_paths()) if collection.get_visible() else 0
            if count and count < self.layer_min_lines:
                if blended is not None:
                    buffer[area + (slice(0, 3),)] = blended + 0.5
                    blended = None
                self.figure.draw_artist(collection)
            elif count:
                cached = self._layers.get(h)
                if cached is None or cached[0] != self._line_keys[h]:
                    cached = (self._line_keys[h],) + self._render_layer(collection, self.colors[h],
                                                                             area)
                    self._layers[h] = cached
                if blended is None:
                    blended = buffer[area + (slice(0, 3),)].astype(np.float32)
                blended *= cached[2]  # the background through the lines' gain
                blended += cached[1]  # plus their offset
        if blended is not None:
            buffer[area + (slice(0, 3),)] = blended + 0.5

    def _axes_area(self, height):
        """(rows, cols) slices of a canvas buffer `height` pixels high that hold the axes
        (the lines are clipped to them)."""
        x0, y0, x1, y1 = self.ax.bbox.extents
        return (slice(max(int(height - np.ceil(y1)), 0), int(height - np.floor(y0))),
                slice(max(int(np.floor(x0)), 0), int(np.ceil(x1))))

    def _render_layer(self, collection, color, area):
        """`collection` drawn alone, as (offset, gain) of the axes `area` (float32).

        Agg blends each line as dst + (colour - dst) * alpha: the lines of one head map a
        background linearly, to offset + gain * background with offset = colour * (1 -
        gain), one gain per pixel as every line of a head has the head's colour. Drawn
        once on white (the background of a full draw, so Agg's 8-bit rounding is the
        same), the gain follows from the colour's weakest channel. (A layer on a
        transparent canvas would lose alpha to that rounding where lines overlap.)
        """
        from matplotlib.backends.backend_agg import RendererAgg

        size = tuple(self.figure.bbox.size)
        renderer = getattr(self, "_layer_renderer", None)
        if renderer is None or (renderer.width, renderer.height) != size:
            renderer = self._layer_renderer = RendererAgg(size[0], size[1], self.figure.dpi)
        pixels = np.asarray(renderer.buffer_rgba())
        pixels[...] = 255
        collection.draw(renderer)
        on_white = pixels[area + (slice(0, 3),)].astype(np.float32)
        channel = int(np.argmin(color))
        low = float(color[channel])
        gain = (on_white[..., channel:channel + 1] * np.float32(1 / 255.0) - low) * \
            np.float32(1 / (1 - low))
        offset = on_white - 255 * gain
        return offset, gain

    def _dynamic(self):
        """Artists redrawn on every update, in drawing (z) order."""
        return self.collections + [self.query_highlight, self.key_highlight, self.title] + \
            self.legend

    def drawn_lines(self):
        """(N, 4) rows (head, query, key, alpha) read back from the line collections."""
        rows = []
        for h, collection in enumerate(self.collections):
            paths = collection.get_paths() if collection.get_visible() else []
            if not len(paths):
                continue
            ends = np.array([path.vertices for path in paths])
            alpha = np.asarray(collection.get_edgecolor())[:, 3]
            part = np.empty((len(ends), 4))
            part[:, 0] = h
            part[:, 1] = self.index("query", ends[:, 0, 1])
            part[:, 2] = self.index("key", ends[:, 1, 1])
            part[:, 3] = np.broadcast_to(alpha, len(ends))
            rows.append(part)
        return np.concatenate(rows) if rows else np.zeros((0, 4))

    def label_boxes(self):
        """Where each token label is on the image: (side, index, (left, top, width, height))
        in CSS pixels from the image's top left corner ("image" mode, after a draw)."""
        renderer = self.canvas.get_renderer()
        height = self.canvas.get_width_height()[1]
        boxes = []
        for side, index, text in self.labels:
            box = text.get_window_extent(renderer)
            boxes.append((side, index, tuple(v / self.pixel_ratio for v in (
                box.x0, height - box.y1, box.width, box.height))))
        return boxes

    def label_at(self, event):
        """(side, index) of the token label under a mouse event, or None."""
        for side, index, text in self.labels:
            if text.contains(event)[0]:
                return side, index
        return None

    # ---------------------------------------------------------------- output
    def png(self):
        """The PNG bytes shown ("image" mode) or a fresh render ("ipympl" mode)."""
        if self.mode == "image":
            return self._png
        return self.render("png")

    def render(self, fmt, **html_options):
        """A full render of the figure as `fmt` (png, svg, pdf or html) bytes."""
        return figure_bytes(self.figure, fmt, dpi=self.figure.dpi, **html_options)


# Runs in the exported HTML page: click a token label to keep only its lines (click it
# again, or another token, to change); hovering previews a token while none is pinned.
# The i-th path of group "attnlab-lines-h<h>" is the i-th line of head h in the data.
LINE_VIEW_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("attnlab-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var drawn = [];
  var byHead = {};
  data.lines.forEach(function (line) {
    (byHead[line[0]] = byHead[line[0]] || []).push(line);
  });
  Object.keys(byHead).forEach(function (head) {
    var group = document.getElementById("attnlab-lines-h" + head);
    if (!group) { return; }
    var paths = [].filter.call(group.querySelectorAll("path, use"), function (el) {
      return !el.closest("defs");
    });
    byHead[head].forEach(function (line, i) {
      if (paths[i]) { drawn.push({el: paths[i], query: line[1], key: line[2]}); }
    });
  });
  var pinned = null;
  function show(token) {
    drawn.forEach(function (d) {
      var keep = token === null || d[token.side] === token.index;
      d.el.style.display = keep ? "" : "none";
    });
    window.attnlabShown = drawn.filter(function (d) {
      return d.el.style.display !== "none";
    }).length;
  }
  data.labels.forEach(function (label) {
    var group = document.getElementById("attnlab-" + label[0] + "-" + label[1]);
    if (!group) { return; }
    var token = {side: label[0], index: label[1]};
    var box = group.getBBox();
    var hit = document.createElementNS(NS, "rect");
    hit.setAttribute("x", box.x); hit.setAttribute("y", box.y);
    hit.setAttribute("width", box.width); hit.setAttribute("height", box.height);
    hit.setAttribute("fill", "transparent"); hit.setAttribute("pointer-events", "all");
    group.insertBefore(hit, group.firstChild);
    group.style.cursor = "pointer";
    group.addEventListener("click", function () {
      var same = pinned && pinned.side === token.side && pinned.index === token.index;
      pinned = same ? null : token;
      show(pinned);
    });
    group.addEventListener("mouseenter", function () { if (!pinned) { show(token); } });
    group.addEventListener("mouseleave", function () { if (!pinned) { show(null); } });
  });
  show(null);
})();
"""
