"""Figure export: each format is what its suffix says, HTML is self-contained, writes are atomic."""
import html.parser
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from attnlab.viz.figure_export import (  # noqa: E402
    EXPORT_FORMATS,
    export_format,
    figure_bytes,
    html_document,
    save_figure_as,
)

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


class _PageParser(html.parser.HTMLParser):
    """Collects tags, the attributes that load resources, and script texts."""

    def __init__(self):
        super().__init__()
        self.tags, self.loads, self.scripts, self._in_script = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and not value.startswith(
                    ("#", "data:")):
                self.loads.append((tag, name, value))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture
def figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.arange(16.0).reshape(4, 4))
    ax.set_title("map </script> & <b>")
    yield fig
    plt.close(fig)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_each_format_has_its_own_signature(figure, fmt):
    data = figure_bytes(figure, fmt)
    if fmt in MAGIC:
        assert data.startswith(MAGIC[fmt])
    elif fmt == "svg":
        assert b"<svg" in data[:500]
    else:
        assert data.startswith(b"<!DOCTYPE html>")


def test_html_inlines_the_svg_and_data_and_loads_nothing(figure):
    data = {"tokens": ["a", "</script>", "b"], "weights": [[0.25, 0.75]]}
    page = figure_bytes(figure, "html", title="t <1>", data=data,
                        script="window.attnlabLoaded = true;").decode("utf-8")
    parser = _PageParser()
    parser.feed(page)
    assert parser.tags.count("svg") == 1 and "<?xml" not in page
    assert parser.loads == []
    assert "<title>t &lt;1&gt;</title>" in page
    # The JSON survives the trip through the script element, "</script>" in it included.
    blob = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>',
                     page, re.DOTALL).group(1)
    assert json.loads(blob) == data
    assert "window.attnlabLoaded = true;" in parser.scripts


def test_html_refuses_nan_data():
    with pytest.raises(ValueError):
        html_document("<svg></svg>", data={"w": float("nan")})


def test_svg_export_holds_the_figure_text(figure):
    assert b"map" in figure_bytes(figure, "svg")


def test_export_format_names_the_bad_suffix():
    with pytest.raises(ValueError, match=r"png, svg, pdf, html.*'jpg'"):
        export_format("figure.jpg")
    assert export_format("figure.PDF") == "pdf"
    assert export_format("figure", "html") == "html"


@pytest.mark.parametrize("fmt", ["pdf", "html"])
def test_save_figure_as_writes_by_suffix(figure, tmp_path, fmt):
    path = save_figure_as(figure, tmp_path / ("out." + fmt))
    assert open(path, "rb").read() == figure_bytes(figure, fmt)


def test_failed_save_leaves_no_file(figure, tmp_path, monkeypatch):
    target = tmp_path / "out.pdf"
    target.write_bytes(b"previous")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure_as(figure, target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdf"]


def test_a_bad_format_argument_is_named():
    with pytest.raises(ValueError, match=r"format must be one of png, svg, pdf, html, got 'jpg'"):
        export_format("figure.png", "jpg")
