"""head_metrics: every metric against hand-computed cases and float64 loops written here
(row by row, KL-divergence form of Jensen-Shannon), not the module's vectorized code."""
import json
import sys
import types

import numpy as np
import pytest

from attnlab.viz.head_metrics import (
    HeadMetrics,
    head_metrics,
    plot_head_similarity,
    plot_metric_map,
)
from attnlab.viz.snapshots import AttentionSnapshot, make_snapshot, save_attention_snapshot

TOKENS = [["[CLS]", "the", "cat", "[SEP]", "<pad>"], ["[CLS]", "a", "dog", "ran", "[SEP]"]]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc0": _softmax(rng.normal(size=(2, 3, 5, 5)) * 2).astype(np.float32),
            "enc1": _softmax(rng.normal(size=(2, 2, 5, 5)) * 3).astype(np.float32),
            "cross": _softmax(rng.normal(size=(2, 2, 5, 3))).astype(np.float32)}


def _kl(p, q):
    return sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _reference(w, valid, sink_keys=None, self_attention=True):
    """Per head a dict of metrics: explicit loops over the valid rows, float64."""
    b_size, heads, t, s = w.shape
    result = []
    for h in range(heads):
        acc = {"entropy": [], "distance": [], "first_token_share": [], "max_weight": [],
               "sink_share": []}
        for b in range(b_size):
            for i in range(t):
                row = w[b, h, i].astype(np.float64)
                if not valid[b, i] or row.sum() < 1e-6:
                    continue
                p = row / row.sum()
                acc["entropy"].append(-sum(x * np.log(x) for x in p if x > 0))
                acc["distance"].append(sum(p[j] * abs(i - j) for j in range(s)))
                acc["first_token_share"].append(p[0])
                acc["max_weight"].append(max(p))
                if sink_keys is not None:
                    acc["sink_share"].append(sum(p[j] for j in range(s) if sink_keys[b][j]))
        means = {k: float(np.mean(v)) for k, v in acc.items() if v}
        if not self_attention:
            means["distance"] = None
        means["queries"] = len(acc["entropy"])
        result.append(means)
    return result


def _check_rows(metrics, layer, want):
    for h, expected in enumerate(want):
        row = metrics.row(layer, h)
        for name, value in expected.items():
            if value is None or isinstance(value, int):
                assert row[name] == value, (layer, h, name)
            else:
                np.testing.assert_allclose(row[name], value, rtol=1e-10, atol=1e-12,
                                           err_msg="%s head %d %s" % (layer, h, name))


# ------------------------------------------------------------------------ hand cases
def test_uniform_attention_hand_values():
    m = head_metrics({"enc": np.full((2, 3, 4, 4), 0.25)})
    for row in m.rows:
        assert row["entropy"] == pytest.approx(np.log(4), abs=1e-12)
        # rows i = 0..3 look on average 1.5, 1, 1, 1.5 positions away
        assert row["distance"] == pytest.approx(1.25, abs=1e-12)
        assert row["first_token_share"] == pytest.approx(0.25)
        assert row["max_weight"] == pytest.approx(0.25)
        assert row["queries"] == 8
    assert "sink_share" not in m.metrics and "sink_share" not in m.rows[0]
    # identical heads: similarity 1 under both measures
    np.testing.assert_allclose(m.similarity.filled(np.nan), np.ones((3, 3)), atol=1e-12)
    cos = head_metrics({"enc": np.full((2, 3, 4, 4), 0.25)}, similarity="cosine")
    np.testing.assert_allclose(cos.similarity.filled(np.nan), np.ones((3, 3)), atol=1e-12)


def test_one_hot_on_first_token_hand_values():
    w = np.zeros((1, 1, 4, 4))
    w[..., 0] = 1.0
    row = head_metrics({"enc": w}).rows[0]
    assert row["entropy"] == 0.0
    assert row["first_token_share"] == 1.0 and row["max_weight"] == 1.0
    assert row["distance"] == pytest.approx((0 + 1 + 2 + 3) / 4.0)


def test_heads_on_disjoint_keys_have_similarity_zero():
    w = np.zeros((1, 2, 3, 3))
    w[0, 0, :, 0] = 1.0
    w[0, 1, :, 2] = 1.0
    js = head_metrics({"enc": w}).similarity
    assert js[0, 1] == pytest.approx(0.0, abs=1e-12) and js[0, 0] == 1.0
    cos = head_metrics({"enc": w}, similarity="cosine").similarity
    assert cos[0, 1] == 0.0
    # half overlap: rows (1, 0) vs (1/2, 1/2)
    v = np.array([[[[1.0, 0.0]], [[0.5, 0.5]]]])
    half = head_metrics({"enc": v}, similarity="js").similarity[0, 1]
    m = [0.75, 0.25]
    want = 0.5 * _kl([1, 0], m) + 0.5 * _kl([0.5, 0.5], m)
    assert half == pytest.approx(1 - want / np.log(2))
    assert head_metrics({"enc": v}, similarity="cosine").similarity[0, 1] == \
        pytest.approx(0.5 / np.sqrt(0.5))


# ------------------------------------------------------------------------ references
def test_every_metric_against_float64_loops_with_masks_pads_and_sinks():
    w = _weights()
    # a fully masked query row (zero weights) in head 1 of enc0
    w["enc0"][1, 1, 2] = 0.0
    # 3 and 4 valid queries: pooling over rows differs from a mean of example means
    mask = np.array([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]], bool)
    m = head_metrics(w, query_tokens=TOKENS, key_tokens=TOKENS, query_mask=mask,
                     sink_tokens=["[SEP]", 0])
    assert m.metrics == ("entropy", "distance", "first_token_share", "sink_share",
                         "max_weight")
    sinks = [[tok in ("[SEP]", "[CLS]") for tok in row] for row in TOKENS]
    _check_rows(m, "enc0", _reference(w["enc0"], mask, sinks))
    _check_rows(m, "enc1", _reference(w["enc1"], mask, sinks))
    assert m.row("enc0", 1)["queries"] == 6 and m.row("enc0", 0)["queries"] == 7
    # cross: 3 keys, no tokens of that length -> positions; "0" is key 0
    cross_sinks = [[j == 0 for j in range(3)]] * 2
    _check_rows(m, "cross", _reference(w["cross"], mask, cross_sinks, self_attention=False))


def test_pad_token_and_float16_rows_are_normalized():
    w = _weights(1)
    w16 = {k: v.astype(np.float16) for k, v in w.items()}
    m = head_metrics(w16, query_tokens=TOKENS, key_tokens=TOKENS, pad_token="<pad>")
    valid = np.array([[tok != "<pad>" for tok in row] for row in TOKENS])
    _check_rows(m, "enc1", _reference(w16["enc1"], valid))
    assert m.row("enc1", 0)["queries"] == 9


def test_cross_attention_argument_and_name_rule():
    w = {"decoder/cross_attention": _weights()["enc0"], "self": _weights()["enc1"]}
    m = head_metrics(w)
    assert m.row("decoder/cross_attention", 0)["distance"] is None
    assert m.row("self", 0)["distance"] is not None
    m2 = head_metrics(w, cross_attention=["self"])
    assert m2.row("self", 1)["distance"] is None
    # an explicit list replaces the name rule
    assert m2.row("decoder/cross_attention", 0)["distance"] is not None
    assert m2.metric_map("distance").mask.tolist() == [[False] * 3, [True] * 3]


def test_similarity_against_kl_and_flattened_cosine_loops():
    w = _weights(2)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    m = head_metrics(w, query_mask=mask, similarity="js")
    c = head_metrics(w, query_mask=mask, similarity="cosine")
    heads = [(n, h) for n in w for h in range(w[n].shape[1])]
    assert m.heads == heads == c.heads
    for i, (la, ha) in enumerate(heads):
        for j, (lb, hb) in enumerate(heads):
            a, b = w[la][:, ha].astype(np.float64), w[lb][:, hb].astype(np.float64)
            if a.shape != b.shape:
                assert m.similarity.mask[i, j] and c.similarity.mask[i, j]
                continue
            # the mask is (B, 5): it applies to the layers with 5 queries (all here)
            rows = [(x, t) for x in range(2) for t in range(a.shape[1]) if mask[x, t]]
            js = []
            for x, t in rows:
                p, q = a[x, t] / a[x, t].sum(), b[x, t] / b[x, t].sum()
                mid = (p + q) / 2
                js.append(0.5 * _kl(p, mid) + 0.5 * _kl(q, mid))
            assert m.similarity[i, j] == pytest.approx(1 - np.mean(js) / np.log(2), abs=1e-12)
            fa = np.concatenate([a[x, t] / a[x, t].sum() for x, t in rows])
            fb = np.concatenate([b[x, t] / b[x, t].sum() for x, t in rows])
            cos = fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb)
            assert c.similarity[i, j] == pytest.approx(cos, abs=1e-12)
    assert (m.similarity == m.similarity.T).all()


# ------------------------------------------------------------------------ structure
def test_sort_metric_map_dict_and_dataframe(monkeypatch):
    w = _weights()
    m = head_metrics(w)
    ordered = m.sort("entropy")
    assert [r["entropy"] for r in ordered] == sorted(r["entropy"] for r in m.rows)
    down = m.sort("distance", descending=True)
    distances = [r["distance"] for r in down]
    # None (cross-attention) last, the rest largest first
    assert distances[-2:] == [None, None]
    assert distances[:-2] == sorted(distances[:-2], reverse=True)
    assert m.sort("distance")[-2:] == down[-2:]
    assert [(r["layer"], r["head"]) for r in m.sort("layer", descending=True)][:2] == \
        [("cross", 0), ("cross", 1)]

    entropy = m.metric_map("entropy")
    assert entropy.shape == (3, 3)
    assert entropy.mask.tolist() == [[False] * 3, [False, False, True], [False, False, True]]
    for row in m.rows:
        assert entropy[m.layers.index(row["layer"]), row["head"]] == row["entropy"]
    assert m.metric_map("distance").mask[2].all()

    text = json.dumps(m.to_dict(), allow_nan=False)
    assert json.loads(text)["similarity"][0][-1] is None  # enc0 vs cross: shapes differ

    seen = {}
    fake = types.SimpleNamespace(DataFrame=lambda rows, columns: seen.update(
        rows=rows, columns=columns) or "frame")
    monkeypatch.setitem(sys.modules, "pandas", fake)
    assert m.to_dataframe() == "frame"
    assert seen["columns"] == list(m.columns) and seen["rows"] == m.rows


def test_sources_run_folder_step_and_snapshot_list(tmp_path):
    w0, w1 = _weights(0), _weights(1)
    save_attention_snapshot(tmp_path, 10, 1, w0, TOKENS, TOKENS)
    save_attention_snapshot(tmp_path, 20, 2, w1, TOKENS, TOKENS)
    last = head_metrics(str(tmp_path))
    assert last.step == 20
    assert last.row("enc0", 0)["entropy"] == pytest.approx(
        head_metrics(w1).row("enc0", 0)["entropy"], rel=1e-6)
    first = head_metrics(str(tmp_path), step=10, pad_token="<pad>", sink_tokens="[SEP]")
    assert first.step == 10 and first.row("enc1", 0)["queries"] == 9
    snaps = [AttentionSnapshot(5, 0, w0, TOKENS, TOKENS), AttentionSnapshot(9, 1, w1, TOKENS,
                                                                             TOKENS)]
    assert head_metrics(snaps, step=5).row("enc1", 1)["entropy"] == \
        head_metrics(w0).row("enc1", 1)["entropy"]


# ------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("call, error, message", [
    (lambda w: head_metrics(dict(w, enc0=np.full((2, 3, 5, 5), np.nan))), ValueError,
     r"weights\['enc0'\] must be finite"),
    (lambda w: head_metrics(dict(w, enc0=-w["enc0"])), ValueError,
     r"weights\['enc0'\] must be attention weights >= 0"),
    (lambda w: head_metrics(dict(w, enc1=np.ones((3, 2, 5, 5)))), ValueError,
     r"batch size"),
    (lambda w: head_metrics(w, query_mask=np.ones((2, 4), bool)), ValueError,
     r"query_mask must have shape \(B, T\)"),
    (lambda w: head_metrics(w, query_mask=np.ones((3, 5), bool)), ValueError,
     r"query_mask must have shape \(B, T\) = \(2, 5\)"),
    (lambda w: head_metrics(w, query_mask=np.full((2, 5), 2)), ValueError,
     r"query_mask must hold only True/False"),
    (lambda w: head_metrics(w, query_mask={"nope": np.ones((2, 5))}), ValueError,
     r"query_mask names unknown layers \['nope'\]"),
    (lambda w: head_metrics(w, query_tokens=TOKENS, key_tokens=TOKENS,
                            sink_tokens=["[SEP]", "[EOS]"]), ValueError,
     r"sink_tokens \['\[EOS\]'\] are not key tokens"),
    (lambda w: head_metrics(w, sink_tokens=[7]), ValueError,
     r"sink_tokens position 7 is out of range for layer 'enc0'"),
    (lambda w: head_metrics(w, sink_tokens=[True]), TypeError, r"sink_tokens must be"),
    (lambda w: head_metrics(w, sink_tokens=[]), ValueError, r"sink_tokens must name"),
    (lambda w: head_metrics(w, similarity="l2"), ValueError, r"similarity must be one of"),
    (lambda w: head_metrics(w, pad_token=0), TypeError, r"pad_token must be a token"),
    (lambda w: head_metrics(w, cross_attention=3), TypeError,
     r"cross_attention must be layer names"),
    (lambda w: head_metrics(w, cross_attention=["dec"]), ValueError,
     r"cross_attention names unknown layers"),
    (lambda w: head_metrics(w, query_mask=np.zeros((2, 5), bool)), ValueError,
     r"weights\['enc0'\] head 0 has no valid query row"),
    (lambda w: head_metrics([w]), TypeError, r"source must be a dict"),
    (lambda w: head_metrics(w, step=3), ValueError, r"step 3 is not a step of source"),
    (lambda w: head_metrics(w).sort("speed"), ValueError, r"sort key by must be one of"),
    (lambda w: head_metrics(w).sort("entropy", descending="yes"), TypeError,
     r"descending must be a bool"),
    (lambda w: head_metrics(w).metric_map("sink_share"), ValueError,
     r"metric name must be one of"),
    (lambda w: head_metrics(w).row("enc1", 2), ValueError, r"no head \(layer 'enc1', head 2\)"),
    (lambda w: plot_metric_map(w, "entropy"), TypeError, r"metrics must be a HeadMetrics"),
    (lambda w: plot_head_similarity(head_metrics(w, similarity=None)), ValueError,
     r"metrics has no similarity"),
])
def test_bad_inputs_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call(_weights())


def test_a_snapshot_with_nan_is_refused():
    w = _weights()
    w["enc1"][0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"weights\['enc1'\] must be finite, got 1 NaN"):
        head_metrics(AttentionSnapshot(3, 1, w, TOKENS, TOKENS))


def test_empty_run_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no attention snapshots"):
        head_metrics(str(tmp_path))


# ------------------------------------------------------------------------ plots
def test_plot_metric_map_data_annotations_and_selection():
    m = head_metrics(_weights())
    image = plot_metric_map(m, "first_token_share", selected=("enc1", 1))
    want = m.metric_map("first_token_share")
    data = image.get_array()
    np.testing.assert_array_equal(data.filled(-1), want.filled(-1))
    assert data.mask.tolist() == want.mask.tolist()
    texts = sorted(t.get_text() for t in image.axes.texts)
    assert texts == sorted("%.2f" % r["first_token_share"] for r in m.rows)
    assert [t.get_text() for t in image.axes.get_yticklabels()] == ["enc0", "enc1", "cross"]
    rect = image.axes.patches[0]
    assert (rect.get_x(), rect.get_y()) == (0.5, 0.5)
    assert image.axes.get_title() == "first_token_share (share)"


def test_plot_head_similarity_shows_the_matrix():
    m = head_metrics(_weights(), similarity="cosine")
    image = plot_head_similarity(m)
    np.testing.assert_array_equal(image.get_array().filled(-1), m.similarity.filled(-1))
    assert image.get_clim() == (0.0, 1.0)
    labels = [t.get_text() for t in image.axes.get_xticklabels()]
    assert labels[0] == "enc0/h0" and labels[-1] == "cross/h1" and len(labels) == 7
    # lines between layers: after 3 and 5 heads
    assert sorted(line.get_ydata()[0] for line in image.axes.lines
                  if line.get_ydata()[0] == line.get_ydata()[1]) == [2.5, 4.5]


def test_head_metrics_class_is_returned():
    assert isinstance(head_metrics(_weights()), HeadMetrics)
    assert "3 layers, 7 heads" in repr(head_metrics(_weights()))


def test_importing_the_metrics_and_comparison_loads_neither_tensorflow_nor_widgets():
    import subprocess

    code = ("import sys, attnlab.viz.head_metrics, attnlab.viz.compare_attention, "
            "attnlab.viz.head_metrics_table; "
            "print(sorted(m for m in ('tensorflow', 'ipywidgets', 'pandas') if m in "
            "sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_sink_tokens_of_cross_attention_are_the_keys_tokens_when_t_equals_s():
    # Decoder queries and encoder keys of the same length: a sink token is looked up among
    # the encoder's (key) tokens, not the decoder's.
    weights = np.zeros((1, 1, 3, 3))
    weights[0, 0, :, 2] = 1.0                       # every query on key 2
    snapshot = make_snapshot({"cross": weights}, ["<s>", "a", "b"], ["x", "y", "</s>"])
    metrics = head_metrics(snapshot, sink_tokens=["</s>"], similarity=None)
    assert metrics.row("cross", 0)["sink_share"] == 1.0
    with pytest.raises(ValueError, match="sink"):
        head_metrics(snapshot, sink_tokens=["b"], similarity=None)   # a query-side token
