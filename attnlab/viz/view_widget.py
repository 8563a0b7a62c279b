"""What every attnlab.viz widget shares: observers, held redraws, export and display.

A view (AttentionExplorer, TokenLineView, QueryKeyAnatomy, HeadMetricsTable) subclasses
ViewWidget and provides:

- `state` (plain JSON values) and `png()` (the bytes the page shows);
- `_export_name(fmt)`: the default file name of an export in `fmt`;
- `_export_document(fmt)`: the view as "svg", "pdf" or "html" bytes (through
  `attnlab.viz.figure_export`, with the view's data as JSON in the HTML page);
- the attributes `export_dir` and `widget`; it calls `_init_view()` first and
  `_build_export_controls(widgets)` for the format dropdown, export button and status.
"""
import contextlib
import os
import re

from attnlab.viz.figure_export import EXPORT_FORMATS, atomic_write_bytes, export_format


class ViewWidget:
    """Observers, held redraws, export to PNG/SVG/PDF/HTML and Jupyter display."""

    def _init_view(self):
        self._observers = []
        self._holding = False
        self.last_export = None

    def observe(self, callback):
        """Call `callback(state)` after every change (from the page or from Python)."""
        self._observers.append(callback)

    def _notify(self):
        state = self.state
        for callback in self._observers:
            callback(state)

    @contextlib.contextmanager
    def _held(self):
        """Control changes inside the block draw nothing: its caller redraws once after.

        Blocks nest: each gives back the holding it found.
        """
        holding, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = holding

    def _build_export_controls(self, widgets, tooltip="save exactly this figure"):
        """The format dropdown (returned), `export_button` and `status`, wired and classed."""
        self._export_format_control = widgets.Dropdown(
            options=list(EXPORT_FORMATS), value="png", description="format",
            layout=widgets.Layout(width="160px"))
        self._export_format_control.add_class("attnlab-export-format")
        self.export_button = widgets.Button(description="export", icon="download",
                                            tooltip=tooltip)
        self.export_button.add_class("attnlab-export")
        self.export_button.on_click(lambda _: self._export_clicked())
        self.status = widgets.HTML(value="")
        self.status.add_class("attnlab-status")
        return self._export_format_control

    def export(self, path=None, format=None):
        """Save exactly what is displayed, as PNG, SVG, PDF or self-contained HTML.

        Args:
            path: target file (default: a name from the view's selection in `export_dir`).
            format: "png", "svg", "pdf" or "html" (default: the path's suffix, else "png").
                The HTML page holds the figure as SVG and the view's state and data as JSON.

        Returns:
            The path written.

        Raises:
            ValueError: an unknown format or suffix (named).
        """
        if path is None:
            name = self._export_name(export_format(None, format or "png"))
            path = os.path.join(self.export_dir, re.sub(r"[^A-Za-z0-9._-]+", "_", name))
        fmt = export_format(path, format)
        data = self.png() if fmt == "png" else self._export_document(fmt)
        self.last_export = atomic_write_bytes(os.fspath(path), data)
        return self.last_export

    def _export_clicked(self):
        try:
            path = self.export(format=self._export_format_control.value)
            self.status.value = "saved <code>%s</code>" % path
        except (OSError, TypeError, ValueError) as error:
            self.status.value = "export failed: %s" % error

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
