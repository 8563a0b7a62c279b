"""HeadMetricsTable: the displayed table order and map data follow the state; clicking a
line (or a map cell with ipympl) selects a head; export holds what is shown."""
import io
import json
import re

import matplotlib
import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent
from PIL import Image

from attnlab.viz.head_metrics import head_metrics
from attnlab.viz.head_metrics_table import HeadMetricsTable
from attnlab.viz.snapshots import save_attention_snapshot

TOKENS = [["[CLS]", "the", "cat", "[SEP]", "<pad>"], ["[CLS]", "a", "dog", "ran", "[SEP]"]]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _weights():
    rng = np.random.default_rng(0)
    return {"enc0": _softmax(rng.normal(size=(2, 3, 5, 5)) * 2),
            "enc1": _softmax(rng.normal(size=(2, 2, 5, 5)) * 3),
            "cross": _softmax(rng.normal(size=(2, 2, 5, 3)))}


def _table(**kwargs):
    kwargs.setdefault("backend", "image")
    return HeadMetricsTable(_weights(), query_tokens=TOKENS, key_tokens=TOKENS, **kwargs)


def _expected_order(metrics, by, descending):
    """Sorted by hand: values (None last), ties in layer then head order."""
    layers = metrics.layers
    rows = [r for r in metrics.rows if r[by] is not None]
    rows.sort(key=lambda r: (layers.index(r["layer"]), r["head"]))
    rows.sort(key=lambda r: r[by], reverse=descending)
    rows += [r for r in metrics.rows if r[by] is None]
    return [(r["layer"], r["head"]) for r in rows]


def _line_values(line, columns):
    cells = line.split()
    return dict(zip(columns, cells))


def test_initial_table_is_sorted_and_the_map_shows_the_metric():
    table = _table(sort_by="entropy", pad_token="<pad>", sink_tokens="[SEP]")
    m = head_metrics(_weights(), query_tokens=TOKENS, key_tokens=TOKENS, pad_token="<pad>",
                     sink_tokens="[SEP]", similarity=None)
    assert table.state == {"sort_by": "entropy", "descending": False, "metric": "entropy",
                           "layer": "enc0", "head": 0, "step": None}
    assert table.table_rows() == _expected_order(m, "entropy", False)
    header, *lines = table.table_text()
    assert header.split() == list(m.columns)
    for (layer, head), line in zip(table.table_rows(), lines):
        cells = _line_values(line, m.columns)
        assert (cells["layer"], int(cells["head"])) == (layer, head)
        row = m.row(layer, head)
        assert float(cells["entropy"]) == pytest.approx(row["entropy"], abs=5e-5)
        assert float(cells["sink_share"]) == pytest.approx(row["sink_share"], abs=5e-5)
        assert cells["distance"] == ("-" if layer == "cross" else "%.4f" % row["distance"])
    data = table.map_data()
    want = m.metric_map("entropy")
    np.testing.assert_array_equal(data.filled(-1), want.filled(-1))
    assert table.controls["table"].value == 0  # the line of (enc0, 0)
    assert table.png().startswith(b"\x89PNG")


def test_sorting_by_column_buttons_and_descending():
    table = _table()
    m = table.metrics
    for by in ("distance", "first_token_share", "max_weight", "layer", "head", "queries"):
        for descending in (False, True):
            table.controls["descending"].value = descending
            table.controls["sort_by"].value = by
            assert table.state["sort_by"] == by and table.state["descending"] == descending
            if by in ("layer", "head", "queries"):
                continue
            assert table.table_rows() == _expected_order(m, by, descending), (by, descending)
    # re-sorting rewrites the table only; the map is drawn again when its content changes
    drawn, png = table.image, table.png()
    table.set_state(sort_by="head")
    assert table.image is drawn and table.png() == png
    table.set_state(head=1)
    assert table.image is not drawn and table.png() != png
    table.set_state(sort_by="layer", descending=True)
    assert [layer for layer, _ in table.table_rows()] == \
        ["cross"] * 2 + ["enc1"] * 2 + ["enc0"] * 3
    assert "sorted by layer (descending)" in table.header.value


def test_clicking_a_line_selects_the_head_and_calls_observers():
    table = _table()
    seen = []
    table.observe(seen.append)
    line = table.table_rows().index(("enc1", 1))
    table.controls["table"].value = table.controls["table"].options[line][1]
    assert table.state["layer"] == "enc1" and table.state["head"] == 1
    assert seen[-1] == table.state
    rect = table.ax.patches[0]
    assert (rect.get_x(), rect.get_y()) == (0.5, 0.5)
    # the selection survives a re-sort and stays the selected line
    table.set_state(sort_by="max_weight", descending=True)
    options = table.controls["table"].options
    assert options[[v for _, v in options].index(table.controls["table"].value)][0] \
        .split()[:2] == ["enc1", "1"]
    assert seen[-1]["sort_by"] == "max_weight" and seen[-1]["head"] == 1


def test_metric_control_changes_the_map():
    table = _table()
    for metric in table.metrics.metrics + ("queries",):
        table.controls["metric"].value = metric
        want = table.metrics.metric_map(metric)
        np.testing.assert_array_equal(table.map_data().filled(-1), want.filled(-1))
        assert table.ax.get_title().startswith(metric)
    assert table.map_data().mask.tolist() == [[False] * 3, [False, False, True],
                                              [False, False, True]]


def test_state_round_trip_and_bad_values_named():
    table = _table()
    table.state = {"sort_by": "distance", "descending": True, "metric": "max_weight",
                   "layer": "cross", "head": 1, "step": None}
    other = _table()
    other.state = table.state
    assert other.state == table.state and other.table_rows() == table.table_rows()
    other.set_state(**table.state)  # the state, step included, is settable as it reads
    assert other.state == table.state
    with pytest.raises(ValueError, match="step 5: this table shows the metrics of step None"):
        table.set_state(step=5)
    with pytest.raises(ValueError, match="sort_by must be one of"):
        table.set_state(sort_by="speed")
    with pytest.raises(ValueError, match="metric must be one of"):
        table.set_state(metric="sink_share")
    with pytest.raises(ValueError, match=r"no head \(layer 'enc1', head 2\)"):
        table.set_state(layer="enc1", head=2)
    with pytest.raises(TypeError, match="descending must be a bool"):
        table.set_state(descending=1)
    with pytest.raises(TypeError, match="head must be an integer"):
        table.set_state(head="0")
    with pytest.raises(ValueError, match=r"unknown head metrics table state \['zoom'\]"):
        table.set_state(zoom=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        _table(backend="svg")
    assert table.state["layer"] == "cross" and table.state["head"] == 1


def test_export_png_is_what_is_shown_and_html_holds_the_rows(tmp_path):
    table = _table(export_dir=str(tmp_path))
    table.set_state(sort_by="first_token_share", descending=True, metric="distance")
    png = table.export()
    assert png.endswith("head-metrics-distance.png")
    with open(png, "rb") as f:
        assert f.read() == table.png()
    pixels = np.asarray(Image.open(io.BytesIO(table.png())))
    assert pixels.shape[1] == 500  # figsize 5 in x 100 dpi
    page = open(table.export(format="html"), encoding="utf-8").read()
    data = json.loads(re.search(r'id="attnlab-data">(.*?)</script>', page, re.S).group(1))
    assert data["state"] == table.state
    assert [(r["layer"], r["head"]) for r in data["rows"]] == table.table_rows()
    assert data["map"][2] == [None, None, None]  # cross-attention has no distance
    assert data["map"][0][1] == table.metrics.row("enc0", 1)["distance"]
    assert table.export(str(tmp_path / "map.svg")).endswith("map.svg")
    table.controls["export_format"].value = "pdf"
    table.export_button.click()
    assert "saved" in table.status.value and table.last_export.endswith(".pdf")


def test_run_folder_source_exports_there_and_names_the_step(tmp_path):
    save_attention_snapshot(tmp_path, 12, 1, _weights(), TOKENS, TOKENS)
    table = HeadMetricsTable(str(tmp_path), backend="image", pad_token="<pad>")
    assert table.state["step"] == 12
    assert table.export().startswith(str(tmp_path))
    assert "step12" in table.last_export
    # a HeadMetrics can be shown as it is
    m = head_metrics(_weights(), cross_attention=["enc1"])
    assert HeadMetricsTable(m, backend="image").metrics is m


@pytest.fixture
def restore_backend():
    yield
    matplotlib.use("Agg")


def test_ipympl_click_on_a_map_cell_selects_it(restore_backend):
    from ipympl.backend_nbagg import Canvas

    table = _table(backend="ipympl")
    assert isinstance(table.view, Canvas)
    table.figure.canvas.draw()
    x, y = table.ax.transData.transform((2, 0))  # head 2 of enc0
    table.figure.canvas.callbacks.process(
        "button_press_event", MouseEvent("button_press_event", table.figure.canvas, x, y, 1))
    assert (table.state["layer"], table.state["head"]) == ("enc0", 2)
    x, y = table.ax.transData.transform((2, 1))  # enc1 has no head 2: nothing changes
    table.figure.canvas.callbacks.process(
        "button_press_event", MouseEvent("button_press_event", table.figure.canvas, x, y, 1))
    assert (table.state["layer"], table.state["head"]) == ("enc0", 2)
    assert table.png().startswith(b"\x89PNG")
