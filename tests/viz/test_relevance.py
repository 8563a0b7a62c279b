"""Gradient-weighted relevance and attention x gradient rollout against hand computation."""
import numpy as np
import pytest

from attnlab.viz.attention_gradients import capture_attention_gradients
from attnlab.viz.relevance import (
    attention_gradient_rollout,
    gradient_weighted_relevance,
    plot_gradient_rollout,
    plot_relevance,
)
from attnlab.viz.rollout import attention_rollout
from tests.viz.explain_models import token_ids, transformer_classifier

# Layer 1: two heads; layer 2: one head; batch 1, T = 2.
WEIGHTS = {"l1": np.array([[[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]]]]),
           "l2": np.array([[[[0.2, 0.8], [0.6, 0.4]]]])}
GRADS = {"l1": np.array([[[[2.0, 1.0], [-1.0, 2.0]], [[1.0, -2.0], [1.0, 1.0]]]]),
         "l2": np.array([[[[1.0, 1.0], [-1.0, 0.5]]]])}


def test_relevance_by_hand():
    # (G*A)^+: head 0 [[2, 0], [0, 1]], head 1 [[.5, 0], [0, 1]] -> mean [[1.25, 0], [0, 1]];
    # R1 = I + A1 = [[2.25, 0], [0, 2]]. Layer 2: (G*A)^+ = [[.2, .8], [0, .2]];
    # R2 = R1 + A2 R1 = [[2.25 + .45, 1.6], [0, 2 + .4]].
    steps = gradient_weighted_relevance(WEIGHTS, GRADS, cumulative=True)
    np.testing.assert_allclose(steps[0], [[[2.25, 0.0], [0.0, 2.0]]], atol=1e-12)
    np.testing.assert_allclose(steps[1], [[[2.7, 1.6], [0.0, 2.4]]], atol=1e-12)
    np.testing.assert_allclose(gradient_weighted_relevance(list(WEIGHTS.values()),
                                                           list(GRADS.values())),
                               steps[1], atol=1e-12)
    only_second = gradient_weighted_relevance(WEIGHTS, GRADS, layers=["l2"])
    np.testing.assert_allclose(only_second, [[[1.2, 0.8], [0.0, 1.2]]], atol=1e-12)


def test_gradient_rollout_by_hand():
    # Positive: layer 1 map [[1.25, 0], [0, 1]] -> rows [[1, 0], [0, 1]] -> (M + I) / 2 = I;
    # layer 2 [[.2, .8], [0, .2]] -> [[.2, .8], [0, 1]] -> [[.6, .4], [0, 1]].
    np.testing.assert_allclose(attention_gradient_rollout(WEIGHTS, GRADS),
                               [[[0.6, 0.4], [0.0, 1.0]]], atol=1e-12)
    # Absolute: layer 1 mean |G*A| = [[1.25, .5], [.25, 1]] -> rows [[5/7, 2/7], [.2, .8]]
    # -> [[6/7, 1/7], [.1, .9]]; layer 2 |G*A| = [[.2, .8], [.6, .2]] -> [[.2, .8], [.75, .25]]
    # -> [[.6, .4], [.375, .625]]; the product layer 2 @ layer 1:
    want = np.array([[0.6, 0.4], [0.375, 0.625]]) @ np.array([[6 / 7, 1 / 7], [0.1, 0.9]])
    np.testing.assert_allclose(attention_gradient_rollout(WEIGHTS, GRADS, sign="absolute"),
                               want[None], atol=1e-12)


def test_row_with_no_positive_product_keeps_only_the_residual():
    weights = [np.array([[[[0.5, 0.5], [0.5, 0.5]]]])]
    grads = [np.array([[[[1.0, 1.0], [-1.0, -1.0]]]])]
    np.testing.assert_allclose(attention_gradient_rollout(weights, grads),
                               [[[0.75, 0.25], [0.0, 1.0]]], atol=1e-12)
    np.testing.assert_allclose(attention_gradient_rollout(weights, grads, add_residual=False),
                               [[[0.5, 0.5], [0.0, 0.0]]], atol=1e-12)


def test_unit_gradients_reduce_to_attention_rollout_and_to_the_product_of_i_plus_a():
    model = transformer_classifier(length=5)
    grads = capture_attention_gradients(model, token_ids(2, 5))
    ones = {name: np.ones_like(g) for name, g in grads.gradients.items()}
    np.testing.assert_allclose(attention_gradient_rollout(grads.weights, ones),
                               attention_rollout(grads.weights), atol=1e-10)
    want = np.eye(5)
    for w in grads.weights.values():
        want = (np.eye(5) + w.astype(np.float64).mean(1)) @ want
    np.testing.assert_allclose(gradient_weighted_relevance(grads.weights, ones), want,
                               atol=1e-10)
    relevance = gradient_weighted_relevance(grads)
    assert relevance.shape == (2, 5, 5) and relevance.min() >= 0.0
    assert np.all(np.diagonal(relevance, axis1=1, axis2=2) >= 1.0)


def test_plots_draw_the_chosen_row():
    relevance = gradient_weighted_relevance(WEIGHTS, GRADS)
    fig = plot_relevance(relevance, tokens=["a", "b"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [1.7, 1.6], atol=1e-12)   # row 0 minus identity
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]
    fig = plot_relevance(relevance, query="mean", without_identity=False)
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], [1.35, 2.0])
    rollout = attention_gradient_rollout(WEIGHTS, GRADS)
    fig = plot_gradient_rollout(rollout, tokens=[["x", "y"]], query=1)
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], [0.0, 1.0])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["x", "y"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"gradients\['l2'\] has shape \(1, 1, 2, 3\)"):
        gradient_weighted_relevance(WEIGHTS, {"l1": GRADS["l1"], "l2": np.ones((1, 1, 2, 3))})
    nan = dict(GRADS, l1=np.where(GRADS["l1"] > 1, np.nan, GRADS["l1"]))
    with pytest.raises(ValueError, match=r"gradients\['l1'\] must be finite"):
        gradient_weighted_relevance(WEIGHTS, nan)
    with pytest.raises(ValueError, match="same layers"):
        gradient_weighted_relevance(WEIGHTS, {"l1": GRADS["l1"]})
    with pytest.raises(ValueError, match="gradients are needed"):
        gradient_weighted_relevance(WEIGHTS)
    with pytest.raises(ValueError, match=r"'x'.*not self-attention"):
        gradient_weighted_relevance({"x": np.ones((1, 1, 2, 3))}, {"x": np.ones((1, 1, 2, 3))})
    with pytest.raises(ValueError, match=r"layers \['l3'\]"):
        attention_gradient_rollout(WEIGHTS, GRADS, layers=["l3"])
    with pytest.raises(ValueError, match="sign must be one of"):
        attention_gradient_rollout(WEIGHTS, GRADS, sign="negative")
    relevance = gradient_weighted_relevance(WEIGHTS, GRADS)
    with pytest.raises(ValueError, match="query must be 'first', 'mean'"):
        plot_relevance(relevance, query="last")
    with pytest.raises(ValueError, match="example 3 is out of range"):
        plot_relevance(relevance, example=3)
    with pytest.raises(ValueError, match="tokens has 3 tokens"):
        plot_relevance(relevance, tokens=["a", "b", "c"])


def test_explanation_modules_import_without_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import attnlab.viz.relevance, attnlab.viz.attention_flow, "
            "attnlab.viz.integrated_gradients, attnlab.viz.attention_gradients; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
