"""What every attnlab.viz widget shares: observers, held redraws, export and display.

A view (AttentionExplorer, TokenLineView, QueryKeyAnatomy, HeadMetricsTable) subclasses
ViewWidget and provides:

- `state` (plain JSON values) and `png()` (the bytes the page shows);
- `_export_name(fmt)`: the default file name of an export in `fmt`;
- `_export_document(fmt)`: the view as "svg", "pdf" or "html" bytes (through
  `attnlab.viz.figure_export`, with the view's data as JSON in the HTML page);
- the attributes `export_dir`, `status` (an ipywidgets.HTML), `widget` and
  `_export_format_control` (the format dropdown), and calls `_init_view()` first.
"""
import contextlib
import os
import re

from attnlab.viz.figure_export import atomic_write_bytes, export_format


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
