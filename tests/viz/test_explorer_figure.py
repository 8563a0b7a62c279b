"""The explorer's figure: drawn at pixel_ratio device pixels per CSS pixel, shown in an image
widget of its CSS size (never stretched), encoded as PNG that decodes to the canvas pixels."""
import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from attnlab.viz.explorer import AttentionExplorer
from attnlab.viz.explorer_figure import hidden, png_bytes

TOKENS = ["the", "cat", "sat", "on", "mat"]


def _weights():
    rng = np.random.default_rng(0)
    w = rng.random((1, 2, 5, 5)).astype(np.float32)
    return {"enc0": w / w.sum(-1, keepdims=True)}


def _explorer(**kwargs):
    kwargs.setdefault("backend", "image")
    return AttentionExplorer(_weights(), query_tokens=TOKENS, key_tokens=TOKENS, **kwargs)


def _decoded(png):
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def test_png_decodes_to_exactly_the_canvas_pixels():
    ex = _explorer()
    canvas_rgb = np.asarray(ex.figure.canvas.buffer_rgba())[..., :3].astype(int)
    np.testing.assert_array_equal(_decoded(ex.png()), canvas_rgb)
    np.testing.assert_array_equal(_decoded(png_bytes(ex.figure.canvas)), canvas_rgb)


@pytest.mark.parametrize("ratio, compare", [(1, None), (2, None), (1.5, None), (2, "self")])
def test_drawn_at_the_pixel_ratio_and_shown_at_css_size(ratio, compare):
    ex = _explorer(pixel_ratio=ratio, compare=compare, panel_size=(4.2, 4.8), dpi=100)
    panels = 1 if compare is None else 2
    css_width, css_height = 420 * panels, 480  # panel_size * dpi, in CSS pixels
    height, width = _decoded(ex.png()).shape[:2]
    assert (width, height) == (round(css_width * ratio), round(css_height * ratio))
    assert ex.view.layout.width == "%gpx" % css_width
    assert ex.view.layout.height == "%gpx" % css_height


def test_default_draws_one_pixel_per_css_pixel():
    ex = _explorer()
    height, width = _decoded(ex.png()).shape[:2]
    assert (width, height) == (420, 480)
    assert (ex.view.layout.width, ex.view.layout.height) == ("420px", "480px")


def test_twice_the_pixels_is_the_same_picture():
    one = _decoded(_explorer(pixel_ratio=1).png())
    two = _decoded(_explorer(pixel_ratio=2).png())
    halved = two.reshape(one.shape[0], 2, one.shape[1], 2, 3).mean(axis=(1, 3))
    # Same layout and colours; only antialiased edges and text differ.
    assert np.mean(np.abs(halved - one).max(axis=-1) > 48) < 0.03


def test_controls_sit_left_of_the_map_and_wrap_above_it():
    ex = _explorer()
    controls, view = ex.widget.children
    assert view is ex.view
    assert ex.controls["head"] in controls.children
    assert ex.export_button in controls.children[-2].children
    assert ex.widget.layout.flex_flow == "row wrap"


@pytest.mark.parametrize("bad", [0, -1, "2", True, None, 9])
def test_bad_pixel_ratio_is_named(bad):
    with pytest.raises(ValueError, match=r"pixel_ratio must be a number.*got %s" % repr(bad)):
        _explorer(pixel_ratio=bad)


def test_hidden_gives_each_artist_its_own_visibility_back():
    figure = Figure()
    ax = figure.add_subplot()
    shown, off = ax.plot([0, 1])[0], ax.plot([1, 0], visible=False)[0]
    with pytest.raises(RuntimeError):
        with hidden([shown, off]):
            assert not shown.get_visible() and not off.get_visible()
            raise RuntimeError("drawing failed")
    assert shown.get_visible() and not off.get_visible()


@pytest.fixture
def restore_backend():
    yield
    matplotlib.use("Agg")


def test_ipympl_canvas_keeps_the_css_dpi(restore_backend):
    ex = _explorer(backend="ipympl", pixel_ratio=2, dpi=100)
    assert ex.figure.dpi == 100  # ipympl applies the browser's ratio itself
