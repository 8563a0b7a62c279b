"""The explorer's matplotlib figure: per panel a heatmap over a summed strip, drawn for a widget.

Two ways to show it (chosen once, per explorer):
- "ipympl": the canvas is itself a widget (ipympl's Canvas, made without pyplot so explorers
  stay independent; it follows the browser's device-pixel ratio by itself). An update calls
  `draw_idle`.
- "image": Agg draws off-screen at `pixel_ratio` device pixels per CSS pixel and Pillow
  encodes the PNG that an `ipywidgets.Image` of `css_size` shows, so a screen of that ratio
  shows it unscaled. The first draw caches the background (axes, ticks, labels); an update
  restores it and redraws only the images, the titles and the spines.

Layout of one panel (a second panel, for comparison, sits on the right):

    title: layer · head · step · max value
    (T, S) heatmap, rows = queries, dimmed rows when tokens are selected
    (1, S) strip: attention summed over the selected queries (all queries when none)
"""
import contextlib
import io

import numpy as np

from attnlab.viz.figure_export import figure_bytes
from attnlab.viz.plots import tick_positions

DIM_ALPHA = 0.6  # white at 60% over the rows that are not selected


def png_bytes(canvas, run_length=False):
    """PNG bytes of what an Agg canvas holds, as RGB (the alpha channel is always opaque here).

    zlib level 1: an update must stay interactive, and higher levels shrink a figure little.
    run_length=True uses zlib's run-length strategy: about a quarter faster on pictures of
    many thin antialiased lines (the token line view), for about the same size.
    """
    from PIL import Image

    rgba = canvas.buffer_rgba()
    height, width = rgba.shape[:2]
    image = Image.frombytes("RGB", (width, height), rgba, "raw", "RGBX")
    buffer = io.BytesIO()
    options = {"compress_type": 3} if run_length else {}  # 3: zlib's Z_RLE
    image.save(buffer, format="png", compress_level=1, **options)
    return buffer.getvalue()


@contextlib.contextmanager
def hidden(artists):
    """Hide `artists` inside the block and give each its own visibility back after it."""
    visible = [artist.get_visible() for artist in artists]
    for artist in artists:
        artist.set_visible(False)
    try:
        yield
    finally:
        for artist, shown in zip(artists, visible):
            artist.set_visible(shown)


def _short(token, width=10):
    return token if len(token) <= width else token[:width - 1] + "\u2026"


class ExplorerFigure:
    """The figure of an explorer's panels, its canvas, and how an update reaches the page.

    Args:
        panels: `ExplorerPanel`s, left to right; each gets its artists as attributes, and
            the data last drawn: `data` (heatmap), `clim` (its colour limits), `summed`.
        mode: "ipympl" or "image" (see the module docstring).
        panel_size: (width, height) of one panel in inches.
        dpi: CSS pixels per inch.
        pixel_ratio: device pixels per CSS pixel of the drawn image ("image" mode).
        cmap: colormap name, for the heatmap and the strip.
        max_ticks: at most this many token labels per axis.
    """

    def __init__(self, panels, mode, panel_size, dpi, pixel_ratio, cmap, max_ticks):
        import matplotlib
        from matplotlib.figure import Figure

        self.panels = panels
        self.mode = mode
        self.max_ticks = max_ticks
        # ipympl scales the figure to the browser's ratio itself.
        self.pixel_ratio = pixel_ratio if mode == "image" else 1
        self.figure = Figure(figsize=(panel_size[0] * len(panels), panel_size[1]),
                             dpi=dpi * self.pixel_ratio)
        colormap = matplotlib.colormaps[cmap] if hasattr(matplotlib, "colormaps") else \
            matplotlib.cm.get_cmap(cmap)
        self._lut = colormap(np.arange(256), bytes=True)
        self._background = None
        self._png = b""
        if mode == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(self.figure)
            self._manager = FigureManager(canvas, id(self))
            canvas.header_visible = False
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.figure)
        self._add_axes()

    def _add_axes(self):
        from matplotlib.patches import Rectangle

        n = len(self.panels)
        grid = self.figure.add_gridspec(2, n, height_ratios=[10, 1], hspace=0.08, wspace=0.45,
                                        left=0.17 / n, right=1 - 0.04 / n, top=0.93,
                                        bottom=0.17)
        for i, panel in enumerate(self.panels):
            ax = self.figure.add_subplot(grid[0, i])
            strip_ax = self.figure.add_subplot(grid[1, i], sharex=ax)
            panel.ax, panel.strip_ax = ax, strip_ax
            # Heatmap and strip are RGBA uint8 images coloured here at data resolution: Agg
            # then only resamples bytes, instead of colour-mapping every screen pixel.
            panel.image = ax.imshow(np.zeros((1, 1, 4), np.uint8), interpolation="nearest",
                                    aspect="auto")
            panel.strip = strip_ax.imshow(np.zeros((1, 1, 4), np.uint8), aspect="auto",
                                          interpolation="nearest")
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

    @property
    def canvas(self):
        return self.figure.canvas

    @property
    def css_size(self):
        """(width, height) in CSS pixels at which the drawn image shows unscaled."""
        width, height = self.canvas.get_width_height()
        return width / self.pixel_ratio, height / self.pixel_ratio

    # ---------------------------------------------------------------- updates
    def draw(self, views, selected_tokens, example, full=False):
        """Show each panel's windowed map on one colour scale.

        Args:
            views: per panel (panel, (T', S') data, (q0, q1, k0, k1) window).
            selected_tokens: selected query rows (absolute indices).
            example: the example whose tokens label the axes.
            full: redraw the background too (labels or limits changed).

        Returns:
            The new PNG bytes in "image" mode, else None.
        """
        vmax = max(float(data.max()) for _, data, _ in views)
        vmax = vmax if vmax > 0 else 1.0
        for panel, data, (q0, q1, k0, k1) in views:
            rows = [r - q0 for r in selected_tokens if q0 <= r < q1]
            panel.data, panel.clim = data, (0.0, vmax)  # one scale for both panels
            panel.image.set_data(self._colorize(data, vmax, rows))
            panel.summed = data[rows or list(range(q1 - q0))].sum(axis=0)
            panel.strip.set_data(self._colorize(panel.summed[None],
                                                max(float(panel.summed.max()), 1e-12), []))
            panel.title.set_text("%s \u00b7 max %.3g" % (panel.describe(), float(data.max())))
            key = (example, q0, q1, k0, k1, tuple(panel.query_tokens(example)),
                   tuple(panel.key_tokens(example)))
            if key != panel.layout_key:
                panel.layout_key = key
                full = True
                self._layout(panel, example, q0, q1, k0, k1)
        if self.mode == "ipympl":
            self.canvas.draw_idle()
            return None
        if full or self._background is None:
            with hidden(self._dynamic()):
                self.canvas.draw()
                self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.canvas.restore_region(self._background)
        for artist in self._dynamic():
            if artist.get_visible():
                artist.axes.draw_artist(artist)
        self._png = png_bytes(self.canvas)
        return self._png

    def _colorize(self, data, vmax, dim_rows):
        """RGBA uint8 of `data` on [0, vmax]; rows other than `dim_rows` washed out in white."""
        # As matplotlib's Normalize + Colormap: index floor(x * N), the top value in bin N-1.
        index = (data * (self._lut.shape[0] / vmax)).astype(np.intp)
        np.clip(index, 0, self._lut.shape[0] - 1, out=index)
        rgba = self._lut[index]
        if dim_rows:
            keep = np.zeros(data.shape[0], bool)
            keep[dim_rows] = True
            faded = rgba[~keep].astype(np.float32) * (1 - DIM_ALPHA) + 255.0 * DIM_ALPHA
            rgba[~keep] = faded.astype(np.uint8)
        return rgba

    def _layout(self, panel, example, q0, q1, k0, k1):
        panel.image.set_extent((k0 - 0.5, k1 - 0.5, q1 - 0.5, q0 - 0.5))
        panel.strip.set_extent((k0 - 0.5, k1 - 0.5, 0.5, -0.5))
        panel.ax.set_xlim(k0 - 0.5, k1 - 0.5)
        panel.ax.set_ylim(q1 - 0.5, q0 - 0.5)
        query, keys = panel.query_tokens(example), panel.key_tokens(example)
        rows = [q0 + i for i in tick_positions(q1 - q0, self.max_ticks)]
        cols = [k0 + i for i in tick_positions(k1 - k0, self.max_ticks)]
        panel.ax.set_yticks(rows)
        panel.ax.set_yticklabels([_short(query[r]) for r in rows])
        panel.strip_ax.set_xticks(cols)
        panel.strip_ax.set_xticklabels([_short(keys[c]) for c in cols], rotation=90)

    def _dynamic(self):
        """Artists redrawn on every update, in drawing order."""
        artists = []
        for panel in self.panels:
            artists += [panel.image, panel.strip, panel.title]
        for panel in self.panels:  # spines lie on top of the images, as in a full draw
            for ax in (panel.ax, panel.strip_ax):
                artists += list(ax.spines.values())
        return artists

    def show_hover(self, cell, query_window, key_window):
        """A red row/column crosshair through `cell` = (query, key), or none for None."""
        (q0, q1), (k0, k1) = query_window, key_window
        for panel in self.panels:
            for patch in (panel.hover_row, panel.hover_col):
                patch.set_visible(cell is not None)
            if cell is not None:
                panel.hover_row.set_bounds(k0 - 0.5, cell[0] - 0.5, k1 - k0, 1)
                panel.hover_col.set_bounds(cell[1] - 0.5, q0 - 0.5, 1, q1 - q0)
        self.canvas.draw_idle()

    # ---------------------------------------------------------------- output
    def png(self):
        """The PNG bytes shown ("image" mode) or a fresh render ("ipympl" mode)."""
        if self.mode == "image":
            return self._png
        return self.render("png")

    def render(self, fmt, **html_options):
        """A full render of the figure as `fmt` (png, svg, pdf or html) bytes."""
        return figure_bytes(self.figure, fmt, dpi=self.figure.dpi, **html_options)
