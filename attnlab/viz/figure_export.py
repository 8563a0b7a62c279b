"""Figures as files: PNG, SVG, PDF and self-contained HTML, written atomically.

Every view in `attnlab.viz` exports through here, so a figure saved from a widget is the
figure shown, in any of the formats. The HTML file inlines the figure as SVG together with
optional JSON data and script: it opens in a browser later without a network or a server.
"""
import html
import io
import json
import os
import re
import tempfile

EXPORT_FORMATS = ("png", "svg", "pdf", "html")

_XML_PROLOGUE = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file and os.replace (never half written)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def export_format(path, format=None):
    """The export format (one of EXPORT_FORMATS) from `format` or the file suffix.

    Raises:
        ValueError: the format (or suffix) is not one of EXPORT_FORMATS.
    """
    if format is not None:
        if not isinstance(format, str) or format.lower() not in EXPORT_FORMATS:
            raise ValueError("format must be one of %s, got %r"
                             % (", ".join(EXPORT_FORMATS), format))
        return format.lower()
    fmt = os.path.splitext(str(path))[1].lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise ValueError("can export %s only, got %r for path %r (pass format= or use one of "
                         "these suffixes)" % (", ".join(EXPORT_FORMATS), fmt, str(path)))
    return fmt


def figure_bytes(fig, fmt, dpi=None, bbox_inches=None, title=None, data=None, script=None):
    """The figure rendered as `fmt` bytes, the same bytes each time for the same figure.

    Args:
        fig: matplotlib Figure.
        fmt: one of EXPORT_FORMATS.
        dpi: resolution of PNG (and of raster images inside SVG/PDF); default the figure's.
        bbox_inches: passed to savefig ("tight" crops to the drawn content).
        title, data, script: HTML only (see `html_document`).

    Example:
        >>> figure_bytes(fig, "pdf")[:5]
        b'%PDF-'
    """
    import matplotlib

    fmt = export_format(None, fmt)
    buffer = io.BytesIO()
    saved_as = "svg" if fmt == "html" else fmt
    # No date and fixed SVG ids: the same view exports to the same bytes.
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(saved_as)
    with matplotlib.rc_context({"svg.hashsalt": "attnlab"}):
        fig.savefig(buffer, format=saved_as, dpi=dpi or fig.dpi, bbox_inches=bbox_inches,
                    metadata=metadata)
    if fmt != "html":
        return buffer.getvalue()
    return html_document(buffer.getvalue().decode("utf-8"), title=title, data=data,
                         script=script).encode("utf-8")


def html_document(svg, title=None, data=None, script=None):
    """A standalone HTML page: the SVG inline, `data` as inline JSON, `script` inline.

    Nothing is loaded from elsewhere: the page works offline and from a file:// URL.

    Args:
        svg: an SVG document (as matplotlib writes it).
        title: the page title.
        data: JSON-serializable values, readable in `script` as
            JSON.parse(document.getElementById("attnlab-data").textContent).
        script: JavaScript run after the page is parsed.

    Returns:
        The page as a str.
    """
    body = _XML_PROLOGUE.sub("", svg, count=1)
    parts = ["<!DOCTYPE html>", "<html>", "<head>", '<meta charset="utf-8">',
             "<title>%s</title>" % html.escape(title or "attnlab figure"),
             "<style>body{margin:0;background:#fff}svg{max-width:100%;height:auto}</style>",
             "</head>", "<body>", body]
    if data is not None:
        # "</" inside a script element would end it: JSON allows the escaped form "<\/".
        text = json.dumps(data, allow_nan=False).replace("</", "<\\/")
        parts.append('<script type="application/json" id="attnlab-data">%s</script>' % text)
    if script:
        parts.append("<script>%s</script>" % script.replace("</script", "<\\/script"))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def save_figure_as(fig, path, format=None, dpi=None, bbox_inches=None, **html_options):
    """Write `fig` to `path` in the format of `format` or its suffix, atomically.

    Returns:
        The path written.
    """
    fmt = export_format(path, format)
    data = figure_bytes(fig, fmt, dpi=dpi, bbox_inches=bbox_inches, **html_options)
    return atomic_write_bytes(os.fspath(path), data)
