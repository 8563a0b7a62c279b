"""query_key_anatomy and QueryKeyAnatomy: every number against float64 NumPy recomputed from
the layers' kernels and inputs, the view's drawn data against its state, bad inputs."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers.custom_attention import CustomAttention
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.layers.positional.relative_position_bias import RelativePositionBias
from attnlab.viz.anatomy import QueryKeyAnatomy, anatomy_json, query_key_anatomy
from attnlab.viz.capture import capture_attention
from tests import reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENS = ["the", "cat", "sat", "on", "a", "mat"]


def rope(x, positions, max_wavelength=10000.0):
    """float64 rotate-half RoPE of x (..., L, d) at `positions` (complex rotation)."""
    half = x.shape[-1] // 2
    theta = max_wavelength ** (-2.0 * np.arange(half) / x.shape[-1])
    z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * np.outer(positions, theta))
    return np.concatenate([z.real, z.imag], axis=-1)


def project(dense, x):
    """(B, L, D) -> (B, L, H, d) through the layer's EinsumDense kernel and bias, float64."""
    out = np.einsum("bld,dhk->blhk", np.asarray(x, np.float64),
                    dense.kernel.numpy().astype(np.float64))
    return out + dense.bias.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def setup():
    """A rotary, causal attnlab MHA with a relative position bias, then a Keras MHA and a
    CustomAttention (which has no queries and keys to record)."""
    tf.keras.utils.set_random_seed(3)
    x = np.random.default_rng(3).normal(size=(2, 6, 8)).astype("float32")
    inputs = tf.keras.Input((6, 8))
    relative = RelativePositionBias(2, num_buckets=8, max_distance=16,
                                    embeddings_initializer="random_normal", name="relative")
    rotary = MultiHeadAttention(2, 4, rotary_embedding={}, bias_initializer="random_normal",
                                name="rotary")
    bias = relative(inputs)
    h = rotary(inputs, inputs, attention_bias=bias, causal=True)
    keras = tf.keras.layers.MultiHeadAttention(2, 3, name="keras")
    h2 = keras(h, h)
    out = CustomAttention(head_size=8, name="custom")(h2)
    model = tf.keras.Model(inputs, out)
    hidden = tf.keras.Model(inputs, [bias, h])(x)
    captured = capture_attention(model, x, query_tokens=TOKENS, key_tokens=TOKENS,
                                 with_qk=True)
    return dict(x=x, captured=captured, rotary=rotary, keras=keras,
                bias=hidden[0].numpy(), h=hidden[1].numpy())


@pytest.mark.parametrize("example, head, query_index", [(0, 0, 0), (1, 1, 4), (0, 1, 5)])
def test_rotary_anatomy_matches_numpy(setup, example, head, query_index):
    x, layer = setup["x"], setup["rotary"]
    a = query_key_anatomy(setup["captured"], "rotary", head, query_index, example)
    q = project(layer._query_dense, x)[example, :, head]   # (T, dk)
    k = project(layer._key_dense, x)[example, :, head]     # (S, dk)
    q_rot, k_rot = rope(q, np.arange(6)), rope(k, np.arange(6))
    np.testing.assert_allclose(a.query, q[query_index], atol=2e-5)
    np.testing.assert_allclose(a.keys, k, atol=2e-5)
    np.testing.assert_allclose(a.query_rotated, q_rot[query_index], atol=2e-5)
    np.testing.assert_allclose(a.keys_rotated, k_rot, atol=2e-5)
    products = q_rot[query_index][None, :] * k_rot
    np.testing.assert_allclose(a.products, products, atol=5e-5)
    np.testing.assert_allclose(a.dots, products.sum(1), atol=5e-5)
    assert a.scale == 0.5
    np.testing.assert_allclose(a.scaled, 0.5 * products.sum(1), atol=5e-5)
    bias = setup["bias"][0, head, query_index]  # (1, H, T, S) from RelativePositionBias
    np.testing.assert_array_equal(a.bias, bias)
    np.testing.assert_allclose(a.logits, 0.5 * products.sum(1) + bias, atol=5e-5)
    visible = reference.causal(6)[query_index]
    np.testing.assert_array_equal(a.visible, visible)
    want = np.exp(np.where(visible, a.logits, -np.inf))
    want /= want.sum()
    np.testing.assert_allclose(a.weights, want, atol=1e-12)
    np.testing.assert_allclose(a.weights, a.recorded_weights, atol=2e-6)
    assert np.ptp(bias) > 1e-3  # the bias differs between keys: it shapes the weights
    assert a.query_token == TOKENS[query_index] and a.key_tokens == TOKENS
    assert (a.layer, a.head, a.query_index, a.example) == ("rotary", head, query_index,
                                                           example)


def test_keras_layer_anatomy_matches_numpy(setup):
    layer, h = setup["keras"], setup["h"]
    a = query_key_anatomy(setup["captured"], "keras", head=1, query_index=2, example=1)
    q, k = project(layer._query_dense, h)[1, 2, 1], project(layer._key_dense, h)[1, :, 1]
    assert a.query_rotated is None and a.keys_rotated is None and a.bias is None
    np.testing.assert_allclose(a.query, q, atol=2e-5)
    np.testing.assert_allclose(a.keys, k, atol=2e-5)
    np.testing.assert_allclose(a.products, q[None] * k, atol=2e-5)
    np.testing.assert_allclose(a.scaled, (k @ q) / np.sqrt(3), atol=2e-5)
    _, weights = reference.attention(q[None], k, k)
    np.testing.assert_allclose(a.weights, weights[0], atol=1e-5)
    np.testing.assert_allclose(a.recorded_weights, weights[0], atol=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"query_index": 6}, ValueError,
     r"query_index 6 is out of range: layer 'rotary': queries has 6 \(valid: 0..5\)"),
    ({"query_index": -1}, ValueError, "query_index -1 is out of range"),
    ({"head": 2}, ValueError, "head 2 is out of range: layer 'rotary': heads has 2"),
    ({"example": 2}, ValueError, "example 2 is out of range: the batch has 2"),
    ({"head": 0.0}, TypeError, "head must be an integer, got 0.0"),
    ({"query_index": True}, TypeError, "query_index must be an integer, got True"),
    ({"layer": "custom"}, ValueError,
     r"layer 'custom' has no recorded queries and keys; layers with queries and keys: "
     r"\['rotary', 'keras'\]"),
    ({"layer": "nope"}, ValueError, "layer 'nope' is not a captured layer"),
    ({"layer": 0}, TypeError, "layer must be a layer name"),
])
def test_bad_arguments_are_named(setup, kwargs, error, match):
    arguments = dict({"layer": "rotary", "head": 0, "query_index": 0}, **kwargs)
    with pytest.raises(error, match=match):
        query_key_anatomy(setup["captured"], **arguments)


def test_captures_without_queries_and_keys_are_refused(setup):
    plain = capture_attention(tf.keras.Model(*_custom_only()), np.ones((1, 4, 8), np.float32))
    with pytest.raises(TypeError, match=r"captured must come from capture_attention\(model, "
                                        r"inputs, with_qk=True\).*got AttentionSnapshot"):
        query_key_anatomy(plain, "custom", 0, 0)
    without = capture_attention(tf.keras.Model(*_custom_only()), np.ones((1, 4, 8), np.float32),
                                with_qk=True)
    with pytest.raises(ValueError, match=r"captured has no layer with recorded queries and "
                                         r"keys \(layers: \['custom"):
        query_key_anatomy(without, "custom", 0, 0)
    with pytest.raises(ValueError, match="captured has no layer"):
        QueryKeyAnatomy(without, backend="image")


def _custom_only():
    inputs = tf.keras.Input((4, 8))
    return inputs, CustomAttention(head_size=8, name="custom")(inputs)


# ----------------------------------------------------------------------------- the view
def _drawn_matches(view):
    a, drawn = view.arrays, view.drawn
    np.testing.assert_allclose(drawn["query"], a.query)
    np.testing.assert_allclose(drawn["keys"], a.keys)
    np.testing.assert_allclose(drawn["products"], a.products)
    np.testing.assert_allclose(drawn["dots"], a.dots)
    np.testing.assert_allclose(drawn["softmax"], a.weights)
    np.testing.assert_allclose(drawn["captured"], a.recorded_weights)
    if a.query_rotated is None:
        assert "query_rotated" not in drawn and "keys_rotated" not in drawn
    else:
        np.testing.assert_allclose(drawn["query_rotated"], a.query_rotated)
        np.testing.assert_allclose(drawn["keys_rotated"], a.keys_rotated)
    if a.bias is None:
        assert "bias" not in drawn
    else:
        np.testing.assert_allclose(drawn["bias"], a.bias)


def test_view_state_set_state_observe_and_drawn_data(setup):
    view = QueryKeyAnatomy(setup["captured"], head=1, query_index=3, backend="image")
    assert view.state == {"layer": "rotary", "head": 1, "query_index": 3, "example": 0}
    json.dumps(view.state)
    _drawn_matches(view)
    assert view.png().startswith(b"\x89PNG") and view.png() == view.view.value
    seen = []
    view.observe(seen.append)
    view.set_state(example=1, query_index=5)
    assert seen == [{"layer": "rotary", "head": 1, "query_index": 5, "example": 1}]
    expected = query_key_anatomy(setup["captured"], "rotary", 1, 5, 1)
    np.testing.assert_array_equal(view.arrays.weights, expected.weights)
    _drawn_matches(view)
    assert view.controls["query"].value == 5 and view.controls["example"].value == 1
    # The Keras layer has 2 heads of depth 3 and no rotation or bias: fewer panels.
    view.set_state(layer="keras", head=0)
    _drawn_matches(view)
    assert len(seen) == 2 and seen[-1]["layer"] == "keras"
    view.state = {"layer": "rotary", "head": 0, "query_index": 0, "example": 0}
    assert view.state == {"layer": "rotary", "head": 0, "query_index": 0, "example": 0}


def test_view_controls_drive_the_state(setup):
    view = QueryKeyAnatomy(setup["captured"], backend="image")
    seen = []
    view.observe(seen.append)
    view.controls["query"].value = 4
    view.controls["head"].value = 1
    assert view.state == {"layer": "rotary", "head": 1, "query_index": 4, "example": 0}
    assert [s["query_index"] for s in seen] == [4, 4] and len(seen) == 2
    _drawn_matches(view)
    view.controls["layer"].value = "keras"
    assert view.state["layer"] == "keras" and view.state["query_index"] == 4
    assert [label for label, _ in view.controls["query"].options][4] == "4: a"
    for name in ("example", "layer", "head", "query", "export-format"):
        assert "attnlab-" + name in view.controls[name.replace("-", "_")]._dom_classes
    assert "attnlab-anatomy" in view.widget._dom_classes
    assert "attnlab-anatomy-figure" in view.view._dom_classes


def test_view_bad_state_is_refused_and_leaves_the_state(setup):
    view = QueryKeyAnatomy(setup["captured"], backend="image")
    before = view.state
    with pytest.raises(ValueError, match="unknown anatomy state"):
        view.set_state(token=2)
    with pytest.raises(ValueError, match="query_index 9 is out of range"):
        view.set_state(query_index=9)
    with pytest.raises(ValueError, match="head 2 is out of range"):
        view.set_state(layer="keras", head=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        QueryKeyAnatomy(setup["captured"], backend="svg")
    assert view.state == before


def test_view_exports_every_format(setup, tmp_path):
    view = QueryKeyAnatomy(setup["captured"], layer="rotary", head=1, query_index=2,
                           backend="image", export_dir=str(tmp_path))
    magic = {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF-", "html": b"<!DOCTYPE html>"}
    for fmt, start in magic.items():
        path = view.export(format=fmt)
        assert os.path.basename(path) == "anatomy-rotary-h1-q2-ex0.%s" % fmt
        with open(path, "rb") as f:
            assert f.read().startswith(start)
    assert view.last_export == path
    with open(path, encoding="utf-8") as f:
        page = f.read()
    start = page.index('id="attnlab-data">') + len('id="attnlab-data">')
    data = json.loads(page[start:page.index("</script>", start)])
    assert data["state"] == view.state
    np.testing.assert_allclose(data["anatomy"]["weights"], view.arrays.weights)
    np.testing.assert_allclose(data["anatomy"]["keys_rotated"], view.arrays.keys_rotated)
    assert data["anatomy"] == json.loads(json.dumps(anatomy_json(view.arrays)))
    with open(view.export(str(tmp_path / "chosen.png")), "rb") as f:
        assert f.read() == view.png()
    with pytest.raises(ValueError, match="can export png, svg, pdf, html only"):
        view.export(str(tmp_path / "x.gif"))


def test_anatomy_needs_no_tensorflow_once_captured(setup, tmp_path):
    path = tmp_path / "captured.pkl"
    with open(path, "wb") as f:
        pickle.dump(setup["captured"], f)
    want = query_key_anatomy(setup["captured"], "rotary", 1, 3).weights
    script = (
        "import pickle, sys\n"
        "sys.modules['tensorflow'] = None  # any import of TensorFlow fails\n"
        "import matplotlib; matplotlib.use('Agg')\n"
        "from attnlab.viz.anatomy import QueryKeyAnatomy, query_key_anatomy\n"
        "captured = pickle.load(open(%r, 'rb'))\n"
        "view = QueryKeyAnatomy(captured, head=1, query_index=3, backend='image')\n"
        "print(list(query_key_anatomy(captured, 'rotary', 1, 3).weights), len(view.png()) > 0)\n"
        % str(path))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights, shown = proc.stdout.strip().rsplit(" ", 1)
    np.testing.assert_allclose(json.loads(weights), want, atol=0)
    assert shown == "True"


@pytest.fixture
def restore_backend():
    yield
    import matplotlib

    matplotlib.use("Agg")


def test_ipympl_canvas_view(setup, restore_backend, tmp_path):
    from ipympl.backend_nbagg import Canvas

    view = QueryKeyAnatomy(setup["captured"], backend="ipympl")
    assert isinstance(view.view, Canvas) and view.view is view.figure.canvas
    view.set_state(query_index=2, head=1)
    _drawn_matches(view)
    assert view.png().startswith(b"\x89PNG")
    with open(view.export(str(tmp_path / "view.pdf")), "rb") as f:
        assert f.read().startswith(b"%PDF-")


def test_anatomy_json_turns_a_hiding_minus_inf_bias_into_none():
    # An additive mask passed as bias holds -inf: JSON (and the HTML export) has no infinity.
    from attnlab.viz.anatomy import QueryKeyArrays

    fields = dict.fromkeys(QueryKeyArrays._fields)
    fields.update(bias=np.array([0.5, -np.inf]), logits=np.array([1.5, -np.inf]),
                  weights=np.array([1.0, 0.0]))
    data = anatomy_json(QueryKeyArrays(**fields))
    assert data["bias"] == [0.5, None] and data["logits"] == [1.5, None]
    assert data["weights"] == [1.0, 0.0]
    json.dumps(data, allow_nan=False)


def test_a_minus_inf_bias_is_drawn_as_a_hidden_key_and_exports(tmp_path):
    # An additive mask passed as attention_bias: -inf hides key 1 of every query.
    layer = MultiHeadAttention(1, 4, name="masked")
    x = np.random.default_rng(0).normal(size=(1, 3, 4)).astype("float32")
    bias = np.zeros((1, 1, 1, 3), "float32")
    bias[..., 1] = -np.inf
    inputs = tf.keras.Input((3, 4))
    model = tf.keras.Model(inputs, layer(inputs, inputs, attention_bias=tf.constant(bias)))
    captured = capture_attention(model, x, with_qk=True)
    view = QueryKeyAnatomy(captured, backend="image")
    assert view.arrays.weights[1] == 0.0 and np.isneginf(view.arrays.bias[1])
    assert np.all(np.isfinite(view.drawn["bias"])) and view.drawn["bias"][1] == 0.0
    page = open(view.export(str(tmp_path / "masked.html")), encoding="utf-8").read()
    assert '"bias": [0.0, null, 0.0]' in page
