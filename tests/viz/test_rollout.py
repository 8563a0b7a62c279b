"""Attention rollout against hand-computed float64 examples (Abnar & Zuidema 2020)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.viz.rollout import attention_rollout

# Layer 1: two heads; layer 2: one head; batch 1, T = 2.
LAYER1 = np.array([[[[1.0, 0.0], [0.5, 0.5]],
                    [[0.5, 0.5], [0.0, 1.0]]]])
LAYER2 = np.array([[[[1.0, 0.0], [0.2, 0.8]]]])


def test_mean_fusion_with_residual_by_hand():
    # A1 = (mean + I) / 2 = [[.875, .125], [.125, .875]]; A2 = [[1, 0], [.1, .9]].
    # A2 @ A1 = [[.875, .125], [.1*.875 + .9*.125, .1*.125 + .9*.875]] = [[.875, .125], [.2, .8]]
    got = attention_rollout([LAYER1, LAYER2])
    np.testing.assert_allclose(got, [[[0.875, 0.125], [0.2, 0.8]]], atol=1e-12)


def test_max_fusion_by_hand():
    # max = [[1, .5], [.5, 1]]; (+I) / 2.5 = [[.8, .2], [.2, .8]]; then A2 as above.
    got = attention_rollout([LAYER1, LAYER2], head_fusion="max")
    np.testing.assert_allclose(got, [[[0.8, 0.2], [0.26, 0.74]]], atol=1e-12)


def test_without_residual_by_hand():
    got = attention_rollout({"l1": LAYER1, "l2": LAYER2}, add_residual=False)
    np.testing.assert_allclose(got, [[[0.75, 0.25], [0.35, 0.65]]], atol=1e-12)


def test_cumulative_returns_every_layer():
    steps = attention_rollout([LAYER1, LAYER2], cumulative=True)
    assert len(steps) == 2
    np.testing.assert_allclose(steps[0], [[[0.875, 0.125], [0.125, 0.875]]], atol=1e-12)
    np.testing.assert_allclose(steps[1], [[[0.875, 0.125], [0.2, 0.8]]], atol=1e-12)


def test_fully_masked_row_without_residual_stays_zero():
    layer = np.array([[[[1.0, 0.0], [0.0, 0.0]]]])
    got = attention_rollout([layer], add_residual=False)
    np.testing.assert_array_equal(got, [[[1.0, 0.0], [0.0, 0.0]]])


@settings(max_examples=10)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 3))
def test_rows_stay_distributions_and_match_a_matrix_loop(layers, heads, t, b):
    rng = np.random.default_rng(layers * 31 + heads * 7 + t)
    ws = []
    for _ in range(layers):
        w = rng.random((b, heads, t, t))
        ws.append(w / w.sum(-1, keepdims=True))
    got = attention_rollout(ws)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)
    for example in range(b):
        want = np.eye(t)
        for w in ws:
            a = 0.5 * w[example].mean(0) + 0.5 * np.eye(t)
            want = a @ want
        np.testing.assert_allclose(got[example], want, atol=1e-12)


def test_cross_attention_is_rejected_with_its_shape():
    with pytest.raises(ValueError, match=r"layer 0.*\(1, 1, 2, 3\)"):
        attention_rollout([np.ones((1, 1, 2, 3))])


def test_layers_must_share_shape():
    with pytest.raises(ValueError, match=r"'b'.*\(1, 1, 3, 3\)"):
        attention_rollout({"a": np.ones((1, 1, 2, 2)), "b": np.ones((1, 1, 3, 3))})


def test_unknown_head_fusion():
    with pytest.raises(ValueError, match="'median'"):
        attention_rollout([LAYER1], head_fusion="median")


def test_no_layers():
    with pytest.raises(ValueError, match="empty"):
        attention_rollout([])
