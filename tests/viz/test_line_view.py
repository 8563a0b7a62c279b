"""TokenLineView: the lines drawn against a plain-Python reference, state, page events, pixels
and export.

The reference below walks the weights with Python loops (sorted candidates per query), not
with the vectorized selection of attnlab.viz.line_selection.
"""
import html.parser
import io
import json
import re

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backend_bases import MouseEvent
from PIL import Image

from attnlab.viz.line_view import TokenLineView
from attnlab.viz.snapshots import AttentionSnapshot

TOKENS = ["the", "cat", "sat", "on", "the", "mat"]
SOURCE = ["le", "chat", "est", "assis", "sur", "le", "tapis", "ce", "soir"]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc0": _softmax(rng.normal(size=(2, 4, 6, 6)) * 2),
            "enc1": _softmax(rng.normal(size=(2, 2, 6, 6)) * 3)}


def _view(weights=None, **kwargs):
    kwargs.setdefault("backend", "image")
    return TokenLineView(weights or _weights(), query_tokens=TOKENS, key_tokens=TOKENS,
                         **kwargs)


def _reference(weights, heads, query_window, key_window, threshold, max_lines=None,
               query=None, key=None):
    """(head, query, key, weight) rows drawn, by loops over the (H, T, S) weights."""
    rows = []
    for h in heads:
        for q in range(*query_window):
            if query is not None and q != query:
                continue
            candidates = [(float(weights[h, q, k]), k) for k in range(*key_window)
                          if (key is None or k == key) and weights[h, q, k] >= threshold
                          and weights[h, q, k] > 0]
            candidates.sort(key=lambda c: (-c[0], c[1]))
            if max_lines is not None:
                candidates = candidates[:max_lines]
            rows += [(h, q, k, w) for w, k in sorted(candidates, key=lambda c: c[1])]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def _assert_lines(view, expected):
    drawn = view.lines()
    assert drawn.shape == expected.shape, (drawn.shape, expected.shape)
    np.testing.assert_array_equal(drawn[:, :3], expected[:, :3])
    np.testing.assert_allclose(drawn[:, 3], expected[:, 3], rtol=1e-6)


def _pixels(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_initial_view_draws_every_weight_above_the_threshold():
    w = _weights()
    view = _view(w)
    assert view.state == {"example": 0, "layer": "enc0", "step": None, "heads": [0, 1, 2, 3],
                          "query_window": [0, 6], "key_window": [0, 6], "threshold": 0.01,
                          "max_lines": 16, "selected_query": None, "selected_key": None}
    _assert_lines(view, _reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.01))
    assert view.token_labels() == (list(enumerate(TOKENS)), list(enumerate(TOKENS)))
    assert view.png().startswith(b"\x89PNG")
    assert view.title() == "enc0 \u00b7 all 4 heads \u00b7 example 0"


def test_threshold_drops_weaker_lines_and_alpha_is_the_weight():
    w = _weights()
    view = _view(w)
    view.set_state(threshold=0.2)
    expected = _reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.2)
    _assert_lines(view, expected)
    assert 0 < len(expected) < len(_reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.01))
    colors = np.concatenate([np.asarray(c.get_edgecolor()) for c in view._drawing.collections
                             if len(c.get_paths())])
    np.testing.assert_allclose(colors[:, 3], expected[:, 3], rtol=1e-6)


def test_selecting_a_query_or_a_key_isolates_its_lines():
    w = _weights()
    view = _view(w)
    view.set_state(selected_query=2)
    _assert_lines(view, _reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.01, query=2))
    assert set(view.lines()[:, 1]) == {2}
    view.set_state(selected_query=None, selected_key=4)
    _assert_lines(view, _reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.01, key=4))
    view.set_state(selected_query=1)
    _assert_lines(view, _reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.01, query=1, key=4))
    assert view.controls["query"].value == 1 and view.controls["key"].value == 4


def test_head_selection_one_some_all_none():
    w = _weights()
    view = _view(w)
    for change, heads in (({"head": 1}, [1]), ({"heads": [3, 0]}, [0, 3]),
                          ({"heads": "all"}, [0, 1, 2, 3]), ({"heads": []}, [])):
        view.set_state(**change)
        assert view.state["heads"] == heads
        _assert_lines(view, _reference(w["enc0"][0], heads, (0, 6), (0, 6), 0.01))
        assert [t.value for t in view.head_box.children] == [h in heads for h in range(4)]
    assert view.title().endswith("no head \u00b7 example 0")


def test_max_lines_keeps_the_strongest_keys_per_query_and_head():
    w = _weights()
    view = _view(w, max_lines=2, threshold=0.0)
    expected = _reference(w["enc0"][0], range(4), (0, 6), (0, 6), 0.0, max_lines=2)
    _assert_lines(view, expected)
    counts = np.unique(view.lines()[:, :2], axis=0, return_counts=True)[1]
    assert counts.max() == 2 and len(view.lines()) == 4 * 6 * 2


def test_ties_at_the_cap_go_to_the_lower_key():
    view = TokenLineView({"m": np.full((1, 1, 2, 5), 0.2)}, backend="image", max_lines=3)
    np.testing.assert_array_equal(view.lines()[:, 2], [0, 1, 2, 0, 1, 2])


def test_head_toggles_in_the_page_choose_heads():
    view = _view()
    view.head_box.children[2].value = False
    assert view.state["heads"] == [0, 1, 3]
    assert 2 not in set(view.lines()[:, 0])


def test_long_self_attention_is_windowed_and_its_labels_thinned():
    n = 300
    rng = np.random.default_rng(1)
    w = {"long": _softmax(rng.normal(size=(1, 4, n, n)) * 3)}
    tokens = ["t%d" % i for i in range(n)]
    view = TokenLineView(w, tokens, tokens, backend="image", max_labels=20)
    assert view.state["query_window"] == [0, 128] and view.state["key_window"] == [0, 128]
    _assert_lines(view, _reference(w["long"][0], range(4), (0, 128), (0, 128), 0.01, 16))
    view.set_state(query_window=(100, 164))  # the key column follows for self-attention
    assert view.state["key_window"] == [100, 164]
    _assert_lines(view, _reference(w["long"][0], range(4), (100, 164), (100, 164), 0.01, 16))
    queries, keys = view.token_labels()
    assert len(queries) <= 20 and queries[:2] == [(100, "t100"), (104, "t104")]
    view.set_state(key_window=(0, 300), selected_query=150, max_lines=None)
    _assert_lines(view, _reference(w["long"][0], range(4), (100, 164), (0, 300), 0.01,
                                   query=150))
    view.set_state(query_window=(0, 50))  # the selected query is no longer shown
    assert view.state["selected_query"] is None


def test_cross_attention_has_two_lengths_and_labels():
    rng = np.random.default_rng(2)
    w = {"cross": _softmax(rng.normal(size=(1, 2, 4, 9)) * 2)}
    view = TokenLineView(w, query_tokens=TOKENS[:4], key_tokens=SOURCE, backend="image")
    queries, keys = view.token_labels()
    assert [t for _, t in queries] == TOKENS[:4] and [t for _, t in keys] == SOURCE
    assert view._drawing.query_header.get_text() == "queries 0-3 of 4"
    assert view._drawing.key_header.get_text() == "keys 0-8 of 9"
    _assert_lines(view, _reference(w["cross"][0], range(2), (0, 4), (0, 9), 0.01))
    view.set_state(query_window=(1, 3), selected_key=7)  # keys keep their own window
    assert view.state["key_window"] == [0, 9]
    _assert_lines(view, _reference(w["cross"][0], range(2), (1, 3), (0, 9), 0.01, key=7))
    with pytest.raises(ValueError, match="selected_query 5 is out of range for 3"):
        view.set_state(selected_query=5)


def test_layer_change_with_other_lengths_resets_windows_and_selection():
    w = _weights()
    w["cross"] = _softmax(np.random.default_rng(3).normal(size=(2, 1, 6, 3)))
    view = _view(w)
    view.set_state(selected_query=1, heads=[2])
    view.set_state(layer="cross")
    assert view.state["key_window"] == [0, 3] and view.state["selected_query"] is None
    assert view.state["heads"] == [0]  # head 2 does not exist in a one-head layer
    _assert_lines(view, _reference(w["cross"][0], [0], (0, 6), (0, 3), 0.01))
    view.set_state(layer="enc1", example=1)
    _assert_lines(view, _reference(w["enc1"][1], [0, 1], (0, 6), (0, 6), 0.01))


def test_state_round_trip_and_observers():
    view = _view()
    seen = []
    view.observe(seen.append)
    state = {"example": 1, "layer": "enc1", "step": None, "heads": [1],
             "query_window": [1, 5], "key_window": [0, 6], "threshold": 0.05,
             "max_lines": 3, "selected_query": 2, "selected_key": None}
    view.state = state
    assert view.state == state and seen[-1] == state
    assert json.loads(json.dumps(view.state)) == state
    view.controls["query"].value = 3  # from the page
    assert seen[-1]["selected_query"] == 3
    assert view.controls["query_window"].value == (1, 5)


def test_steps_of_a_snapshot_list():
    rng = np.random.default_rng(4)
    frames = [AttentionSnapshot(step, 0, {"m": _softmax(rng.normal(size=(1, 2, 5, 5)) * 3)},
                                [TOKENS[:5]], [TOKENS[:5]]) for step in (10, 20)]
    view = TokenLineView(frames, backend="image")
    assert view.state["step"] == 20 and "step 20" in view.title()
    view.controls["step"].value = 10
    _assert_lines(view, _reference(frames[0].weights["m"][0], [0, 1], (0, 5), (0, 5), 0.01))
    with pytest.raises(ValueError, match=r"step 30 is not one of the saved steps \[10, 20\]"):
        view.set_state(step=30)


def test_bad_state_values_are_named():
    view = _view()
    before = view.state
    cases = [({"layer": "nope"}, ValueError, "layer 'nope' is not one of"),
             ({"head": 7}, ValueError, "head 7 is out of range for 4"),
             ({"heads": [0, 9]}, ValueError, "heads 9 is out of range for 4"),
             ({"heads": 2}, TypeError, "heads must be a list"),
             ({"example": True}, TypeError, "example must be an integer"),
             ({"query_window": (3, 3)}, ValueError, r"query_window must be \(start, stop\)"),
             ({"key_window": (0, 7)}, ValueError, "key_window .* <= 6"),
             ({"threshold": 1.5}, ValueError, "threshold must be a number in"),
             ({"max_lines": 0}, ValueError, "max_lines must be a positive integer"),
             ({"query_window": (2, 4), "selected_query": 1}, ValueError,
              r"selected_query 1 is outside the window \[2, 4\)"),
             ({"zoom": 2}, ValueError, "unknown line view state.*'zoom'"),
             ({"head": 0, "heads": [1]}, ValueError, "not both")]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            view.set_state(**change)
        assert view.state == before  # a refused change changes nothing


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="backend.*'qt'"):
        _view(backend="qt")
    with pytest.raises(ValueError, match="threshold"):
        _view(threshold=-0.1)
    with pytest.raises(ValueError, match="pixel_ratio"):
        _view(pixel_ratio=0)
    with pytest.raises(ValueError, match="max_labels"):
        _view(max_labels=0)
    with pytest.raises(TypeError, match="got ndarray"):
        TokenLineView(np.ones((1, 1, 2, 2)))


def _midpoint_pixel(view, query, key):
    """The pixel (row, column) of the middle of the line query -> key."""
    drawing = view._drawing
    start = drawing.ax.transData.transform((0, float(drawing.y("query", query))))
    end = drawing.ax.transData.transform((1, float(drawing.y("key", key))))
    x, y = (start + end) / 2
    height = view.figure.canvas.get_width_height()[1]
    return int(height - y), int(x)


def test_rendered_lines_follow_the_weights():
    # Two tokens: weight 1 on the diagonal, 0 across; the crossing lines meet in the middle.
    diagonal = np.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    view = TokenLineView({"m": diagonal}, backend="image", threshold=0.0)
    assert view.lines().tolist() == [[0, 0, 0, 1.0], [0, 1, 1, 1.0]]
    pixels = _pixels(view.png())
    blue = np.array(matplotlib.colormaps["tab10"].colors[0]) * 255
    row, col = _midpoint_pixel(view, 0, 0)
    assert np.abs(pixels[row, col] - blue).max() < 40  # a line of weight 1: the head colour
    row, col = _midpoint_pixel(view, 0, 1)
    assert (pixels[row - 2:row + 3, col - 2:col + 3] == 255).all()  # weight 0: no line
    view_half = TokenLineView({"m": np.full((1, 1, 2, 2), 0.5)}, backend="image")
    half = _pixels(view_half.png())
    assert (half[row, col] < 250).any()  # the same place with weight 0.5 is coloured


def test_isolating_a_token_changes_the_image():
    diagonal = np.array([[[[0.9, 0.1], [0.2, 0.8]]]])
    view = TokenLineView({"m": diagonal}, backend="image")
    before = _pixels(view.png())
    view.set_state(selected_query=0)
    after = _pixels(view.png())
    row, col = _midpoint_pixel(view, 1, 1)
    assert (before[row, col] < 250).any() and (after[row, col] == 255).all()
    assert np.mean(np.abs(before - after).max(-1) > 24) > 0.001


def test_displayed_png_equals_a_full_render():
    view = _view()
    view.set_state(heads=[0, 2], selected_key=3)
    shown, full = _pixels(view.png()), _full_render(view)
    assert shown.shape == full.shape
    assert np.mean(np.abs(shown - full) > 8) < 1e-4


def _full_render(view):
    buffer = io.BytesIO()
    view.figure.savefig(buffer, format="png", dpi=view.figure.dpi)
    return _pixels(buffer.getvalue())


def test_heads_drawn_as_layers_look_like_a_full_render():
    # A head of many lines is drawn once into a layer of its own and composited after.
    n = 40
    rng = np.random.default_rng(6)
    w = {"m": _softmax(rng.normal(size=(1, 4, n, n)) * 1.5)}
    view = TokenLineView(w, backend="image", threshold=0.02)
    view._drawing.layer_min_lines = 100
    counts = [np.sum(view.lines()[:, 0] == h) for h in range(4)]
    assert min(counts) > 100
    for change in ({"heads": [0, 1, 3]}, {"heads": "all"}, {"head": 2},
                   {"heads": "all", "threshold": 0.05}, {"selected_key": 7}):
        view.set_state(**change)
        shown, full = _pixels(view.png()), _full_render(view)
        assert np.mean(np.abs(shown - full).max(-1) > 8) < 1e-3, change
    assert set(view._drawing._layers) == {0, 1, 2, 3}


def test_line_paths_are_built_once_per_window_and_the_cache_is_bounded():
    n = 30
    rng = np.random.default_rng(7)
    w = {"m": _softmax(rng.normal(size=(1, 2, n, n)) * 2)}
    tokens = ["t%d" % i for i in range(n)]
    view = TokenLineView(w, tokens, tokens, backend="image", threshold=0.02)
    paths = {id(p) for c in view._drawing.collections for p in c.get_paths()}
    view.set_state(threshold=0.05)  # fewer lines, each the path drawn before
    again = [p for c in view._drawing.collections for p in c.get_paths()]
    assert 0 < len(again) < len(paths) and {id(p) for p in again} <= paths
    _assert_lines(view, _reference(w["m"][0], range(2), (0, n), (0, n), 0.05, 16))
    view._drawing.max_cached_paths = 25  # fewer than one head's lines: rebuilt each time
    for change in ({"threshold": 0.0}, {"query_window": (5, 20)}, {"max_lines": None},
                   {"threshold": 0.03}):
        view.set_state(**change)
        state = view.state
        _assert_lines(view, _reference(w["m"][0], range(2), state["query_window"],
                                       state["key_window"], state["threshold"],
                                       state["max_lines"]))
        if change == {"threshold": 0.0}:
            # 16 keys per query and head, not the same for both heads: the cache keeps
            # only the last head's paths instead of their union.
            pairs = {(q, k) for _, q, k, _ in view.lines()}
            assert len(pairs) > 30 * 16 == np.count_nonzero(view._drawing._path_made)
        shown, full = _pixels(view.png()), _full_render(view)
        assert np.mean(np.abs(shown - full).max(-1) > 8) < 1e-3, change


def test_a_layer_or_example_of_the_same_tokens_keeps_the_labels():
    rng = np.random.default_rng(8)
    w = {"a": _softmax(rng.normal(size=(2, 2, 6, 6)) * 2),
         "b": _softmax(rng.normal(size=(2, 2, 6, 6)) * 2)}
    view = _view(w)
    labels = [text for _, _, text in view._drawing.labels]
    view.set_state(layer="b", example=1)
    assert [text for _, _, text in view._drawing.labels] == labels  # the same Text objects
    _assert_lines(view, _reference(w["b"][1], range(2), (0, 6), (0, 6), 0.01, 16))
    shown, full = _pixels(view.png()), _full_render(view)
    assert np.mean(np.abs(shown - full).max(-1) > 8) < 1e-3
    other = TokenLineView(w, query_tokens=[TOKENS, SOURCE[:6]], key_tokens=TOKENS,
                          backend="image")
    other.set_state(example=1)  # other query tokens: labelled anew
    assert [t for _, t in other.token_labels()[0]] == SOURCE[:6]
    shown, full = _pixels(other.png()), _full_render(other)
    assert np.mean(np.abs(shown - full).max(-1) > 8) < 1e-3


def test_token_buttons_lie_over_the_labels_and_select():
    view = _view()
    width, height = view._drawing.css_size
    buttons = [b for b in view._token_buttons if b.layout.display != "none"]
    assert len(buttons) == 12
    by_tip = {b.tooltip: b for b in buttons}
    assert set(by_tip) == {"%s %d: %s" % (side, i, t) for side in ("query", "key")
                           for i, t in enumerate(TOKENS)}
    for side, index, (left, top, w, h) in view._drawing.label_boxes():
        button = by_tip["%s %d: %s" % (side, index, TOKENS[index])]
        top_px, left_px = (float(v[:-2]) for v in button.layout.margin.split()[::3])
        assert left_px <= left and left + w <= left_px + float(button.layout.width[:-2])
        assert top_px <= top and top + h <= top_px + float(button.layout.height[:-2])
        assert 0 <= left_px and left_px + w < width and 0 <= top_px and top_px + h < height
        # Left labels sit left of the lines, right labels right of them.
        assert (left < width / 2) == (side == "query")
    by_tip["query 4: the"].click()
    assert view.state["selected_query"] == 4 and set(view.lines()[:, 1]) == {4}
    by_tip["key 1: cat"].click()
    assert view.state["selected_key"] == 1
    by_tip["query 4: the"].click()  # a second click clears
    assert view.state["selected_query"] is None and view.state["selected_key"] == 1


@pytest.fixture
def restore_backend():
    yield
    matplotlib.use("Agg")


def test_ipympl_hover_previews_and_click_selects_a_token(restore_backend):
    from ipympl.backend_nbagg import Canvas

    view = _view(backend="ipympl")
    assert isinstance(view.view, Canvas)
    view.figure.canvas.draw()
    renderer = view.figure.canvas.get_renderer()
    text = [t for side, i, t in view._drawing.labels if (side, i) == ("key", 2)][0]
    box = text.get_window_extent(renderer)
    x, y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    canvas = view.figure.canvas
    everything = view.lines()
    canvas.callbacks.process("motion_notify_event",
                             MouseEvent("motion_notify_event", canvas, x, y))
    assert view.hover == ("key", 2) and view.state["selected_key"] is None
    assert set(view.lines()[:, 2]) == {2}  # hovering previews the token's lines
    canvas.callbacks.process("motion_notify_event",
                             MouseEvent("motion_notify_event", canvas, 1, 1))
    assert view.hover is None and view.lines().shape == everything.shape
    canvas.callbacks.process("button_press_event",
                             MouseEvent("button_press_event", canvas, x, y, 1))
    assert view.state["selected_key"] == 2 and set(view.lines()[:, 2]) == {2}


class _PageParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.loads, self.ids = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and not value.startswith(
                    ("#", "data:")):
                self.loads.append((tag, name, value))
            if name == "id":
                self.ids.append(value)


def test_exports_png_svg_pdf_and_an_interactive_html(tmp_path):
    view = _view(export_dir=str(tmp_path))
    view.set_state(heads=[0, 1], threshold=0.05)
    path = view.export()
    assert path.endswith("lines-enc0-ex0.png")
    with open(path, "rb") as f:
        assert f.read() == view.png()
    with open(view.export(format="pdf"), "rb") as f:
        assert f.read(5) == b"%PDF-"
    with open(view.export(str(tmp_path / "view.svg")), encoding="utf-8") as f:
        svg = f.read()
    # Each head's lines are one group holding one path per line, in the order of lines().
    lines = view.lines()
    for head in (0, 1):
        group = re.search(r'<g id="attnlab-lines-h%d">(.*?)</g>' % head, svg, re.DOTALL)
        assert group.group(1).count("<path") == np.sum(lines[:, 0] == head) > 0
    assert 'id="attnlab-query-3"' in svg and 'id="attnlab-key-5"' in svg
    with open(view.export(str(tmp_path / "view.html")), encoding="utf-8") as f:
        page = f.read()
    parser = _PageParser()
    parser.feed(page)
    assert parser.loads == [] and "attnlab-lines-h0" in parser.ids
    blob = page.split('id="attnlab-data">')[1].split("</script>")[0]
    data = json.loads(blob)
    assert data["state"] == view.state
    assert data["query_tokens"] == TOKENS and data["key_tokens"] == TOKENS
    np.testing.assert_allclose(np.array(data["lines"]), lines)
    assert data["labels"][:2] == [["query", 0], ["query", 1]]
    assert "addEventListener(\"click\"" in page


def test_export_button_writes_the_chosen_format(tmp_path):
    view = _view(export_dir=str(tmp_path))
    view.export_format.value = "svg"
    view.export_button.click()
    assert [p.name for p in tmp_path.iterdir()] == ["lines-enc0-ex0.svg"]
    assert "lines-enc0-ex0.svg" in view.status.value


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1), st.lists(st.integers(0, 3), max_size=4), st.integers(0, 4),
       st.integers(1, 6), st.sampled_from([0.0, 0.01, 0.1, 0.3]),
       st.sampled_from([None, 1, 3]), st.one_of(st.none(), st.integers(0, 5)))
def test_any_state_draws_the_reference_lines(example, heads, start, length, threshold,
                                             max_lines, query):
    w = _weights()
    view = _view(w)
    stop = min(6, start + length)
    query = query if query is not None and start <= query < stop else None
    view.set_state(example=example, heads=heads, query_window=(start, stop),
                   threshold=threshold, max_lines=max_lines, selected_query=query)
    _assert_lines(view, _reference(w["enc0"][example], sorted(set(heads)), (start, stop),
                                   (start, stop), threshold, max_lines, query=query))
