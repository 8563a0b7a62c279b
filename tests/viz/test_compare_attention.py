"""compare_attention: A - B and per-head divergences against float64 loops written here
(KL form of Jensen-Shannon, row by row), hand cases, and errors naming what differs."""
import numpy as np
import pytest

from attnlab.viz.compare_attention import (
    AttentionComparison,
    compare_attention,
    compare_snapshots,
    plot_attention_difference,
)
from attnlab.viz.snapshots import AttentionSnapshot, save_attention_snapshot

TOKENS = [["the", "cat", "sat", "on", "<pad>"], ["a", "dog", "ran", "far", "off"]]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _weights(seed):
    rng = np.random.default_rng(seed)
    return {"enc0": _softmax(rng.normal(size=(2, 3, 5, 5)) * 2),
            "cross": _softmax(rng.normal(size=(2, 2, 5, 3)))}


def _kl(p, q):
    return sum(x * np.log(x / y) for x, y in zip(p, q) if x > 0)


def _reference(wa, wb, valid):
    out = []
    for h in range(wa.shape[1]):
        diffs, js, tv = [], [], []
        for b in range(wa.shape[0]):
            for t in range(wa.shape[2]):
                if not valid[b, t]:
                    continue
                diffs.extend(abs(x - y) for x, y in zip(wa[b, h, t], wb[b, h, t]))
                p, q = wa[b, h, t] / wa[b, h, t].sum(), wb[b, h, t] / wb[b, h, t].sum()
                m = (p + q) / 2
                js.append(0.5 * _kl(p, m) + 0.5 * _kl(q, m))
                tv.append(0.5 * sum(abs(x - y) for x, y in zip(p, q)))
        out.append({"mean_abs": np.mean(diffs), "max_abs": max(diffs), "js": np.mean(js),
                    "tv": np.mean(tv), "queries": len(js)})
    return out


def test_identical_attention_has_zero_divergence():
    w = _weights(0)
    result = compare_attention(w, {k: v.copy() for k, v in w.items()})
    for row in result.rows:
        assert row["mean_abs"] == row["max_abs"] == 0.0
        assert row["js"] == pytest.approx(0.0, abs=1e-15) and row["tv"] == 0.0
    assert not any(d.any() for d in result.difference.values())


def test_disjoint_one_hot_rows_hand_values():
    a = np.zeros((1, 1, 2, 2))
    b = np.zeros((1, 1, 2, 2))
    a[..., 0] = 1.0
    b[..., 1] = 1.0
    row = compare_attention({"x": a}, {"x": b}).rows[0]
    assert row["js"] == pytest.approx(np.log(2)) and row["tv"] == 1.0
    assert row["mean_abs"] == 1.0 and row["max_abs"] == 1.0
    np.testing.assert_array_equal(compare_attention({"x": a}, {"x": b}).difference["x"], a - b)


def test_every_number_against_float64_loops_with_padding():
    wa, wb = _weights(1), _weights(2)
    result = compare_attention(wa, wb, query_tokens=TOKENS, key_tokens=TOKENS,
                               pad_token="<pad>", labels=("run a", "run b"))
    valid = np.array([[tok != "<pad>" for tok in row] for row in TOKENS])
    for name in wa:
        np.testing.assert_array_equal(result.difference[name], wa[name] - wb[name])
        for h, want in enumerate(_reference(wa[name], wb[name], valid)):
            row = next(r for r in result.rows if r["layer"] == name and r["head"] == h)
            for key, value in want.items():
                assert row[key] == pytest.approx(value, rel=1e-10, abs=1e-15), (name, h, key)
    js = [r["js"] for r in result.summary]
    assert js == sorted(js, reverse=True) and len(js) == 5
    assert [r["tv"] for r in result.sort("tv", descending=False)] == \
        sorted(r["tv"] for r in result.rows)
    assert result.labels == ["run a", "run b"]
    js_map = result.divergence_map("js")
    assert js_map.shape == (2, 3) and js_map.mask.tolist() == [[False] * 3,
                                                                [False, False, True]]
    assert js_map[1, 1] == next(r["js"] for r in result.rows
                                if r["layer"] == "cross" and r["head"] == 1)


def test_zero_rows_leave_js_and_tv_but_count_in_abs():
    wa, wb = _weights(3), _weights(4)
    wa["enc0"][0, 0, 1] = 0.0  # a fully masked query in A only
    result = compare_attention(wa, wb)
    row = next(r for r in result.rows if r["layer"] == "enc0" and r["head"] == 0)
    assert row["queries"] == 9
    valid = np.ones((2, 5), bool)
    valid[0, 1] = False
    want = _reference(wa["enc0"], wb["enc0"], valid)[0]
    assert row["js"] == pytest.approx(want["js"]) and row["tv"] == pytest.approx(want["tv"])
    all_rows = np.abs(wa["enc0"][:, 0] - wb["enc0"][:, 0])
    assert row["mean_abs"] == pytest.approx(all_rows.mean())


def test_compare_snapshots_of_a_run_folder(tmp_path):
    w0, w1 = _weights(5), _weights(6)
    save_attention_snapshot(tmp_path, 0, 0, w0, TOKENS, TOKENS)
    save_attention_snapshot(tmp_path, 40, 2, w1, TOKENS, TOKENS)
    result = compare_snapshots(str(tmp_path), 0, 40)
    assert result.labels == ["step 0", "step 40"]
    assert (result.a.step, result.b.step) == (0, 40)
    # stored as float32: the difference is that of the stored values
    np.testing.assert_allclose(result.difference["enc0"],
                               w0["enc0"].astype(np.float32) - w1["enc0"].astype(np.float32))
    with pytest.raises(ValueError, match=r"step_b 30 is not a saved step .*\[0, 40\]"):
        compare_snapshots(str(tmp_path), 0, 30)


def test_two_run_folders_compare_their_last_snapshots(tmp_path):
    save_attention_snapshot(tmp_path / "a", 0, 0, _weights(5), TOKENS, TOKENS)
    save_attention_snapshot(tmp_path / "a", 50, 1, _weights(6), TOKENS, TOKENS)
    save_attention_snapshot(tmp_path / "b", 50, 1, _weights(7), TOKENS, TOKENS)
    result = compare_attention(str(tmp_path / "a"), str(tmp_path / "b"))
    np.testing.assert_allclose(result.difference["cross"],
                               _weights(6)["cross"].astype(np.float32)
                               - _weights(7)["cross"].astype(np.float32))
    other = [list(row) for row in TOKENS]
    other[0][0] = "a"
    save_attention_snapshot(tmp_path / "c", 50, 1, _weights(7), other, other)
    with pytest.raises(ValueError, match=r"query_tokens differ at example 0, position 0: "
                                         r"'the' in a, 'a' in b"):
        compare_attention(str(tmp_path / "a"), str(tmp_path / "c"))


def test_mismatches_are_named():
    wa = _weights(0)
    with pytest.raises(ValueError, match=r"only in a \['cross'\], only in b \[\]"):
        compare_attention(wa, {"enc0": wa["enc0"]})
    with pytest.raises(ValueError, match=r"layer 'enc0' has shape \(2, 3, 5, 5\) in a but "
                                         r"\(2, 2, 5, 5\) in b"):
        compare_attention(wa, dict(wa, enc0=wa["enc0"][:, :2]))
    other = [list(TOKENS[0]), list(TOKENS[1])]
    other[1][2] = "sat"
    snap_a = AttentionSnapshot(None, None, wa, TOKENS, TOKENS)
    snap_b = AttentionSnapshot(None, None, wa, other, TOKENS)
    with pytest.raises(ValueError, match=r"query_tokens differ at example 1, position 2: "
                                         r"'ran' in a, 'sat' in b"):
        compare_attention(snap_a, snap_b)
    # a dict without tokens has only positions: its tokens are not compared
    assert isinstance(compare_attention(snap_a, wa), AttentionComparison)
    with pytest.raises(ValueError, match=r"^a: weights\['enc0'\] must be finite"):
        compare_attention(dict(wa, enc0=np.full((2, 3, 5, 5), np.nan)), wa)
    with pytest.raises(ValueError, match=r"b.weights\['cross'\] must be attention weights >= 0"):
        compare_attention(wa, dict(wa, cross=-wa["cross"]))
    with pytest.raises(TypeError, match=r"b must be a dict"):
        compare_attention(wa, 3)
    with pytest.raises(TypeError, match=r"labels must be two strings"):
        compare_attention(wa, wa, labels=("a",))
    with pytest.raises(ValueError, match=r"sort key by must be one of"):
        compare_attention(wa, wa).sort("kl")
    with pytest.raises(ValueError, match=r"divergence name must be one of"):
        compare_attention(wa, wa).divergence_map("kl")


def test_plot_difference_is_centred_at_zero():
    wa, wb = _weights(7), _weights(8)
    result = compare_attention(wa, wb, query_tokens=TOKENS, key_tokens=TOKENS)
    fig = plot_attention_difference(result, layer="enc0", example=1)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3
    limit = np.abs(wa["enc0"][1] - wb["enc0"][1]).max()
    for h, image in enumerate(images):
        np.testing.assert_allclose(image.get_array(), wa["enc0"][1, h] - wb["enc0"][1, h])
        assert image.get_clim() == pytest.approx((-limit, limit))
        assert image.get_cmap().name == "RdBu_r"
    assert [t.get_text() for t in images[0].axes.get_yticklabels()] == TOKENS[1]
    # default layer: the most divergent head's
    default = plot_attention_difference(result, heads=[0], limit=0.5)
    image = default.axes[0].images[0]
    assert image.get_clim() == (-0.5, 0.5)
    assert default._suptitle.get_text().startswith(result.summary[0]["layer"])
    same = compare_attention(wa, wa)
    assert plot_attention_difference(same).axes[0].images[0].get_clim() == (-1.0, 1.0)
    with pytest.raises(ValueError, match=r"layer 'dec' is not one of"):
        plot_attention_difference(result, layer="dec")
    with pytest.raises(ValueError, match=r"heads must be indices in \[0, 3\)"):
        plot_attention_difference(result, layer="enc0", heads=[3])
    with pytest.raises(ValueError, match=r"example must be an index in \[0, 2\)"):
        plot_attention_difference(result, example=2)
    with pytest.raises(TypeError, match=r"comparison must be an AttentionComparison"):
        plot_attention_difference(wa)
