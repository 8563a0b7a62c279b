"""AttentionExplorer: every control is set from Python and the drawn data and labels checked.

References are computed here with NumPy (indexing, mean, max, a float64 rollout loop), not
with the explorer's helpers.
"""
import io
import json

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backend_bases import MouseEvent
from PIL import Image

from attnlab.viz.explorer import AttentionExplorer
from attnlab.viz.snapshots import AttentionSnapshot, save_attention_snapshot

TOKENS = [["the", "cat", "sat", "on", "mat"], ["a", "dog", "ran", "far", "off"]]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc0": _softmax(rng.normal(size=(2, 2, 5, 5)) * 2),
            "enc1": _softmax(rng.normal(size=(2, 3, 5, 5)) * 2),
            "cross": _softmax(rng.normal(size=(2, 1, 5, 3)))}


def _explorer(weights=None, **kwargs):
    kwargs.setdefault("backend", "image")
    return AttentionExplorer(weights or _weights(), query_tokens=TOKENS, key_tokens=TOKENS,
                             **kwargs)


def _pixels(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _rollout_reference(layers, example):
    out = np.eye(layers[0].shape[-1])
    for w in layers:
        a = w[example].astype(np.float64).mean(0) + np.eye(w.shape[-1])
        a /= a.sum(-1, keepdims=True)
        out = a @ out
    return out


def test_initial_view_is_first_layer_first_head():
    w = _weights()
    ex = _explorer(w)
    np.testing.assert_array_equal(ex.image_data(), w["enc0"][0, 0])
    assert ex.tick_labels() == (TOKENS[0], TOKENS[0])
    assert ex.state == {"example": 0, "layer": "enc0", "head": 0, "step": None,
                        "selected_tokens": [], "query_window": [0, 5], "key_window": [0, 5]}
    assert ex.png().startswith(b"\x89PNG")
    assert ex.title().startswith("enc0 \u00b7 head 0")


def test_head_control_every_option():
    w = _weights()
    ex = _explorer(w)
    ex.controls["layer"].value = "enc1"
    values = [v for _, v in ex.controls["head"].options]
    assert values == [0, 1, 2, "mean", "max", "rollout"]
    seen = set()
    for head in values:
        ex.controls["head"].value = head
        if head == "rollout":
            want = _rollout_reference([w["enc0"], w["enc1"]], 0)
        elif head == "mean":
            want = w["enc1"][0].mean(0)
        elif head == "max":
            want = w["enc1"][0].max(0)
        else:
            want = w["enc1"][0, head]
        np.testing.assert_allclose(ex.image_data(), want, rtol=1e-5, atol=1e-7)
        assert ex.state["head"] == head
        assert str(head) in ex.title()
        seen.add(ex.png())
    assert len(seen) == len(values)  # every choice changed the displayed image


def test_example_control_changes_data_and_labels():
    w = _weights()
    ex = _explorer(w)
    ex.controls["example"].value = 1
    np.testing.assert_array_equal(ex.image_data(), w["enc0"][1, 0])
    assert ex.tick_labels() == (TOKENS[1], TOKENS[1])
    assert ex.controls["tokens"].options[1] == ("1: dog", 1)


def test_layer_control_cross_attention_shape_and_heads():
    w = _weights()
    ex = _explorer(w)
    ex.controls["head"].value = 1
    ex.controls["layer"].value = "cross"
    np.testing.assert_array_equal(ex.image_data(), w["cross"][0, 0])
    # head 1 does not exist in a one-head layer, and rollout needs T == S.
    assert ex.state["head"] == 0
    assert [v for _, v in ex.controls["head"].options] == [0, "mean", "max"]
    queries, keys = ex.tick_labels()
    assert queries == TOKENS[0] and keys == ["0", "1", "2"]
    assert ex.state["key_window"] == [0, 3]


def test_token_selection_sums_rows_and_dims_the_rest():
    w = _weights()
    ex = _explorer(w)
    np.testing.assert_allclose(ex.strip_data(), w["enc0"][0, 0].sum(0), rtol=1e-6)
    before = ex.png()
    ex.controls["tokens"].value = (1, 3)
    np.testing.assert_allclose(ex.strip_data(), w["enc0"][0, 0][[1, 3]].sum(0), rtol=1e-6)
    assert ex.state["selected_tokens"] == [1, 3]
    # Selected rows keep the colormap's colours, the others are washed out with white.
    data = w["enc0"][0, 0]
    want = matplotlib.colormaps["viridis"](data / data.max(), bytes=True).astype(int)
    rgba = np.asarray(ex._panels[0].image.get_array()).astype(int)
    assert np.abs(rgba[[1, 3]] - want[[1, 3]]).max() <= 1
    faded = want[[0, 2, 4], :, :3] * 0.4 + 255 * 0.6
    assert np.abs(rgba[[0, 2, 4], :, :3] - faded).max() <= 1.5
    assert ex.png() != before
    ex.set_state(selected_tokens=[])
    assert ex.controls["tokens"].value == ()
    rgba = np.asarray(ex._panels[0].image.get_array()).astype(int)
    assert np.abs(rgba - want).max() <= 1


def test_windows_crop_data_and_labels():
    w = _weights()
    ex = _explorer(w)
    ex.controls["query_window"].value = (1, 4)
    ex.controls["key_window"].value = (2, 5)
    np.testing.assert_array_equal(ex.image_data(), w["enc0"][0, 0][1:4, 2:5])
    assert ex.tick_labels() == (TOKENS[0][1:4], TOKENS[0][2:5])
    ex.set_state(selected_tokens=[0, 2])  # row 0 is outside the window
    np.testing.assert_allclose(ex.strip_data(), w["enc0"][0, 0][2, 2:5], rtol=1e-6)


def test_step_slider_walks_through_snapshots(tmp_path):
    rng = np.random.default_rng(5)
    written = {}
    for step, epoch in ((10, 0), (20, 1), (30, 2)):
        written[step] = {"mha": _softmax(rng.normal(size=(1, 2, 4, 4)) * step / 10)}
        save_attention_snapshot(tmp_path, step, epoch, written[step], list("abcd"))
    ex = AttentionExplorer(str(tmp_path), backend="image")
    assert ex.state["step"] == 30 and ex.export_dir == str(tmp_path)
    labels = [label for label, _ in ex.controls["step"].options]
    assert labels == ["10 (epoch 0)", "20 (epoch 1)", "30 (epoch 2)"]
    for index, step in enumerate((10, 20, 30)):
        ex.controls["step"].value = index
        np.testing.assert_allclose(ex.image_data(), written[step]["mha"][0, 0], rtol=1e-6)
        assert ex.state["step"] == step and "step %d" % step in ex.title()
    ex.set_state(step=20, head="max")
    np.testing.assert_allclose(ex.image_data(), written[20]["mha"][0].max(0), rtol=1e-6)
    assert ex.tick_labels()[0] == list("abcd")


def test_compare_two_heads_side_by_side_on_one_scale():
    w = _weights()
    ex = _explorer(w, compare="self")
    ex.set_state(layer_compare="enc1", head_compare="mean")
    np.testing.assert_array_equal(ex.image_data(0), w["enc0"][0, 0])
    np.testing.assert_allclose(ex.image_data(1), w["enc1"][0].mean(0), rtol=1e-6)
    assert ex.state["compare"] == {"layer": "enc1", "head": "mean", "step": None}
    top = max(w["enc0"][0, 0].max(), w["enc1"][0].mean(0).max())
    for panel in (0, 1):
        assert ex.color_limits(panel) == pytest.approx((0.0, top))
    ex.controls["example"].value = 1  # the example is shared by both panels
    np.testing.assert_allclose(ex.image_data(1), w["enc1"][1].mean(0), rtol=1e-6)


def test_compare_two_models():
    a, b = _weights(1), _weights(2)
    ex = _explorer(a, compare=AttentionSnapshot(None, None, b, TOKENS, TOKENS))
    ex.controls["head_compare"].value = 1
    np.testing.assert_array_equal(ex.image_data(0), a["enc0"][0, 0])
    np.testing.assert_array_equal(ex.image_data(1), b["enc0"][0, 1])


def test_displayed_png_equals_a_full_render():
    ex = _explorer()
    ex.controls["head"].value = "mean"
    ex.controls["tokens"].value = (2,)
    shown = _pixels(ex.png())
    buffer = io.BytesIO()
    ex.figure.savefig(buffer, format="png", dpi=ex.figure.dpi)
    full = _pixels(buffer.getvalue())
    assert shown.shape == full.shape
    assert np.mean(np.abs(shown - full) > 8) < 1e-4  # the blitted frame equals a full draw


def test_export_png_is_exactly_what_is_shown_and_svg(tmp_path):
    ex = _explorer(export_dir=str(tmp_path))
    ex.controls["head"].value = 1
    path = ex.export()
    assert path.endswith("attention-enc0-1-ex0.png")
    with open(path, "rb") as f:
        assert f.read() == ex.png()
    svg = ex.export(str(tmp_path / "view.svg"))
    with open(svg, "rb") as f:
        text = f.read()
    assert b"<svg" in text and b"enc0 \xc2\xb7 head 1" in text or b"<image" in text


def test_export_pdf_and_html_hold_the_shown_view(tmp_path):
    ex = _explorer(export_dir=str(tmp_path))
    ex.set_state(head=1, selected_tokens=[2])
    with open(ex.export(format="pdf"), "rb") as f:
        assert f.read(5) == b"%PDF-"
    with open(ex.export(str(tmp_path / "view.html")), encoding="utf-8") as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    blob = page.split('id="attnlab-data">')[1].split("</script>")[0]
    assert json.loads(blob)["state"] == ex.state


def test_export_button_writes_into_export_dir(tmp_path):
    ex = _explorer(export_dir=str(tmp_path))
    ex.controls["export_format"].value = "svg"
    ex.export_button.click()
    files = [p.name for p in tmp_path.iterdir()]
    assert files == ["attention-enc0-0-ex0.svg"]
    assert files[0] in ex.status.value


def test_state_round_trip_and_observers():
    ex = _explorer(compare="self")
    seen = []
    ex.observe(seen.append)
    state = {"example": 1, "layer": "enc1", "head": "max", "step": None,
             "selected_tokens": [0, 4], "query_window": [0, 5], "key_window": [1, 5],
             "compare": {"layer": "enc0", "head": 1, "step": None}}
    ex.state = state
    assert ex.state == state
    assert seen[-1] == state
    assert ex.controls["head"].value == "max" and ex.controls["head_compare"].value == 1


def test_two_explorers_are_independent():
    w1, w2 = _weights(1), _weights(2)
    a, b = _explorer(w1), _explorer(w2)
    png_b = b.png()
    a.set_state(head="mean", selected_tokens=[1])
    assert b.state["head"] == 0 and b.state["selected_tokens"] == []
    assert b.png() == png_b
    np.testing.assert_array_equal(b.image_data(), w2["enc0"][0, 0])
    assert a.figure is not b.figure


def test_long_sequence_thins_ticks_and_zooms():
    n = 600
    rng = np.random.default_rng(3)
    w = {"long": _softmax(rng.normal(size=(1, 1, n, n)))}
    tokens = ["t%d" % i for i in range(n)]
    ex = AttentionExplorer(w, tokens, tokens, backend="image", max_ticks=20)
    queries, keys = ex.tick_labels()
    assert len(queries) <= 20 and queries[:2] == ["t0", "t30"]
    ex.set_state(query_window=(100, 132), key_window=(200, 232))
    np.testing.assert_array_equal(ex.image_data(), w["long"][0, 0][100:132, 200:232])
    queries, _ = ex.tick_labels()
    assert queries[0] == "t100" and len(queries) <= 20


@settings(max_examples=8)
@given(st.integers(0, 1), st.sampled_from(["enc0", "enc1"]), st.integers(0, 1),
       st.lists(st.integers(0, 4), max_size=3), st.integers(0, 3), st.integers(1, 5))
def test_any_state_shows_the_indexed_map(example, layer, head, tokens, q0, q1_offset):
    w = _weights()
    ex = _explorer(w)
    q1 = min(5, q0 + q1_offset)
    ex.set_state(example=example, layer=layer, head=head, selected_tokens=tokens,
                 query_window=(q0, q1))
    m = w[layer][example, head]
    np.testing.assert_array_equal(ex.image_data(), m[q0:q1])
    rows = sorted(r for r in set(tokens) if q0 <= r < q1) or list(range(q0, q1))
    np.testing.assert_allclose(ex.strip_data(), m[rows].sum(0), rtol=1e-5)


@pytest.fixture
def restore_backend():
    yield
    matplotlib.use("Agg")


def test_ipympl_canvas_click_selects_and_updates(restore_backend):
    from ipympl.backend_nbagg import Canvas

    w = _weights()
    ex = _explorer(w, backend="ipympl")
    assert isinstance(ex.view, Canvas)
    ex.controls["head"].value = "max"
    np.testing.assert_array_equal(ex.image_data(), w["enc0"][0].max(0))
    ax = ex._panels[0].ax
    ex.figure.canvas.draw()
    x, y = ax.transData.transform((2, 3))  # the cell of key 2, query 3
    ex.figure.canvas.callbacks.process(
        "button_press_event", MouseEvent("button_press_event", ex.figure.canvas, x, y, 1))
    assert ex.state["selected_tokens"] == [3]
    ex.figure.canvas.callbacks.process(
        "motion_notify_event", MouseEvent("motion_notify_event", ex.figure.canvas, x, y))
    assert ex.hover == (3, 2) and ex._panels[0].hover_row.get_visible()


def test_bad_state_values_are_named():
    ex = _explorer()
    with pytest.raises(ValueError, match="layer 'nope' is not one of"):
        ex.set_state(layer="nope")
    with pytest.raises(ValueError, match="head 7 is not one of"):
        ex.set_state(head=7)
    with pytest.raises(ValueError, match=r"selected_tokens \[9\] out of range for 5"):
        ex.set_state(selected_tokens=[1, 9])
    with pytest.raises(ValueError, match=r"query_window.*\(3, 3\)"):
        ex.set_state(query_window=(3, 3))
    with pytest.raises(ValueError, match=r"step 5 is not one of the saved steps \[None\]"):
        ex.set_state(step=5)
    with pytest.raises(ValueError, match="unknown explorer state.*'zoom'"):
        ex.set_state(zoom=2)
    with pytest.raises(ValueError, match="head_compare needs a compare source"):
        ex.set_state(head_compare=0)


def test_bad_constructor_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="backend.*'qt'"):
        _explorer(backend="qt")
    with pytest.raises(TypeError, match="got ndarray"):
        AttentionExplorer(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="batch size as source \\(2\\)"):
        AttentionExplorer(_weights(), compare={"m": np.ones((3, 1, 5, 5))}, backend="image")
    with pytest.raises(ValueError, match="has no attention snapshots"):
        AttentionExplorer(str(tmp_path))
    with pytest.raises(ValueError, match=r"weights\['m'\].*\(2, 2\)"):
        AttentionExplorer({"m": np.ones((2, 2))})
