"""Static heatmaps are checked on the data and labels they draw, and on the exported files."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.viz.plots import plot_attention, plot_heads, plot_layers, save_figure, tick_positions


def _labels(ticklabels):
    return [t.get_text() for t in ticklabels]


def test_plot_attention_draws_the_weights_with_token_labels():
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
    image = plot_attention(w, ["q0", "q1"], ["a", "b", "c"], title="t")
    ax = image.axes
    np.testing.assert_array_equal(np.asarray(image.get_array()), w)
    assert image.get_interpolation() == "nearest"
    assert _labels(ax.get_yticklabels()) == ["q0", "q1"]
    assert _labels(ax.get_xticklabels()) == ["a", "b", "c"]
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert ax.get_title() == "t"
    assert image.get_clim() == pytest.approx((0.0, 5 / 6.0))
    assert len(ax.figure.axes) == 2  # the map and its colour bar


@settings(max_examples=10)
@given(st.integers(1, 700), st.integers(1, 50))
def test_tick_thinning_labels_at_most_max_ticks_evenly(n, max_ticks):
    ticks = tick_positions(n, max_ticks)
    assert 1 <= len(ticks) <= max_ticks
    assert ticks[0] == 0 and ticks[-1] < n
    assert len(set(np.diff(ticks))) <= 1
    if n <= max_ticks:
        assert ticks == list(range(n))


def test_long_sequence_is_one_raster_with_thinned_labels():
    tokens = ["t%d" % i for i in range(600)]
    w = np.random.default_rng(0).random((600, 600))
    image = plot_attention(w, tokens, tokens, max_ticks=20, colorbar=False)
    ax = image.axes
    assert len(ax.images) == 1
    labels = _labels(ax.get_xticklabels())
    assert len(labels) == 20 and labels[:2] == ["t0", "t30"]
    assert ax.get_xticks()[1] == 30


def test_shared_colour_scale_applies_to_every_panel():
    w = np.random.default_rng(1).random((2, 3, 4, 4))
    w[1, 2] *= 3.0
    fig = plot_heads(w, example=1, ncols=2, share_scale=True)
    maps = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("head")]
    assert len(maps) == 3
    for h, ax in enumerate(maps):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), w[1, h])
        assert ax.images[0].get_clim() == pytest.approx((w[1].min(), w[1].max()))
    # 3 heads on a 2 x 2 grid: the spare axes is removed, one shared colour bar added.
    assert len(fig.axes) == 4


def test_plot_heads_own_scales():
    w = np.random.default_rng(2).random((2, 3, 3))
    fig = plot_heads(w, share_scale=False)
    heads = [ax for ax in fig.axes if ax.get_title().startswith("head")]
    for h, ax in enumerate(heads):
        assert ax.images[0].get_clim() == pytest.approx((w[h].min(), w[h].max()))


def test_plot_layers_grid_rows_are_layers_and_columns_heads():
    rng = np.random.default_rng(3)
    layers = {"enc0": rng.random((1, 2, 3, 3)), "dec0": rng.random((1, 3, 2, 3))}
    fig = plot_layers(layers)
    grid = fig.axes[:6]  # 2 layers x 3 heads, then the colour bar
    np.testing.assert_array_equal(grid[0].images[0].get_array(), layers["enc0"][0, 0])
    np.testing.assert_array_equal(grid[4].images[0].get_array(), layers["dec0"][0, 1])
    assert not grid[2].get_visible()  # enc0 has only 2 heads
    assert grid[0].get_ylabel() == "enc0" and grid[3].get_ylabel() == "dec0"
    assert grid[1].get_title() == "head 1"
    lo = min(w.min() for w in layers.values())
    hi = max(w.max() for w in layers.values())
    assert grid[5].images[0].get_clim() == pytest.approx((lo, hi))


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_export(tmp_path, suffix, magic):
    fig = plot_heads(np.random.default_rng(4).random((2, 3, 3)))
    path = save_figure(fig, tmp_path / ("heads" + suffix))
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(magic)
    if suffix == ".svg":
        assert b"head 1" in data or b"<image" in data
    assert [p.name for p in tmp_path.iterdir()] == ["heads" + suffix]  # no temp file left


def test_export_rejects_unknown_format(tmp_path):
    fig = plot_heads(np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="'jpg'"):
        save_figure(fig, tmp_path / "x.jpg")


def test_tokens_must_match_the_weights():
    with pytest.raises(ValueError, match="query_tokens has 3 tokens.*2"):
        plot_attention(np.ones((2, 2)), ["a", "b", "c"])


def test_tokens_must_not_be_a_string():
    with pytest.raises(TypeError, match="'ab'"):
        plot_attention(np.ones((2, 2)), "ab")


def test_plot_attention_needs_one_map():
    with pytest.raises(ValueError, match=r"\(1, 2, 2\)"):
        plot_attention(np.ones((1, 2, 2)))


def test_example_out_of_range():
    with pytest.raises(ValueError, match="example 5.*batch size 2"):
        plot_heads(np.ones((2, 1, 2, 2)), example=5)


def test_bad_max_ticks():
    with pytest.raises(ValueError, match="max_ticks.*0"):
        tick_positions(3, 0)
