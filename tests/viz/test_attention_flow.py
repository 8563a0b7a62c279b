"""Attention flow against hand-computed flows, brute-force minimum cuts and its bounds."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.viz.attention_flow import (
    FLOW_WORK_LIMIT,
    attention_flow,
    plot_attention_flow,
    residual_capacities,
)
from attnlab.viz.capture import capture_attention
from attnlab.viz.rollout import attention_rollout
from tests.viz.explain_models import token_ids, transformer_classifier

# Row t: how position t after the layer attends over the positions before it.
A1 = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.0, 0.5, 0.5]])
A2 = np.array([[0.2, 0.2, 0.6], [0.7, 0.1, 0.2], [0.4, 0.4, 0.2]])


def _random_layers(rng, layers, tokens, heads=2, batch=1, sharpness=2.0):
    out = []
    for _ in range(layers):
        scores = rng.normal(size=(batch, heads, tokens, tokens)) * sharpness
        e = np.exp(scores - scores.max(-1, keepdims=True))
        out.append(e / e.sum(-1, keepdims=True))
    return out


def _min_cut(capacities, source, sink):
    """Smallest cut by enumeration: every subset of the hidden layers' nodes on the source
    side (other inputs on the sink side and other outputs on the source side cost nothing)."""
    layers, tokens = len(capacities), capacities[0].shape[0]
    best = np.inf
    for choice in itertools.product([False, True], repeat=(layers - 1) * tokens):
        side = [np.eye(tokens, dtype=bool)[source]]
        side += [np.array(choice[i * tokens:(i + 1) * tokens]) for i in range(layers - 1)]
        side.append(np.arange(tokens) != sink)
        cut = sum(c[np.ix_(~side[i + 1], side[i])].sum() for i, c in enumerate(capacities))
        best = min(best, cut)
    return best


def test_two_layers_three_tokens_by_hand():
    # Two layers: every path s -> k -> t passes through its own middle node k, so the
    # flow is sum_k min(A1[k, s], A2[t, k]). E.g. s = 0, t = 0:
    # min(.5, .2) + min(.1, .2) + min(0, .6) = .3; s = 2, t = 1: min(.2, .7) + min(.3, .1)
    # + min(.5, .2) = .5.
    got = attention_flow([A1[None, None], A2[None, None]], add_residual=False)
    assert got[0, 0, 0] == pytest.approx(0.3, abs=1e-12)
    assert got[0, 1, 2] == pytest.approx(0.5, abs=1e-12)
    want = np.array([[sum(min(A1[k, s], A2[t, k]) for k in range(3)) for s in range(3)]
                     for t in range(3)])
    np.testing.assert_allclose(got[0], want, atol=1e-12)


def test_single_layer_flow_is_the_capacity_of_the_one_edge():
    # One layer: the only path from s to t is the edge (0, s) -> (1, t).
    # With the residual: capacities (A + I) / 2 (rows of A sum to 1).
    got = attention_flow([A1[None, None]])
    np.testing.assert_allclose(got[0], (A1 + np.eye(3)) / 2, atol=1e-12)
    heads = np.stack([A1, A2])[None]      # head mean, then the residual
    np.testing.assert_allclose(attention_flow([heads])[0], ((A1 + A2) / 2 + np.eye(3)) / 2,
                               atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(2, 7), st.integers(0, 10 ** 6))
def test_two_layer_closed_form_and_flow_bounds(batch, tokens, seed):
    rng = np.random.default_rng(seed)
    layers = _random_layers(rng, 2, tokens, batch=batch)
    got = attention_flow(layers)
    c1, c2 = residual_capacities(layers)
    want = np.array([[[np.minimum(c1[b, :, s], c2[b, t, :]).sum() for s in range(tokens)]
                      for t in range(tokens)] for b in range(batch)])
    np.testing.assert_allclose(got, want, atol=1e-10)
    # Rollout is one feasible flow (each path carries the product of its capacities), so
    # the maximum is at least as large; a node receives at most 1.
    assert np.all(got >= attention_rollout(layers) - 1e-10)
    assert np.all(got <= 1 + 1e-10)


@pytest.mark.parametrize("layers, tokens, seed", [(3, 3, 0), (3, 3, 1), (4, 2, 2), (3, 4, 3)])
def test_deeper_flows_equal_the_brute_force_minimum_cut(layers, tokens, seed):
    rng = np.random.default_rng(seed)
    weights = _random_layers(rng, layers, tokens, sharpness=3.0)
    got = attention_flow(weights)
    capacities = [c[0] for c in residual_capacities(weights)]
    for t in range(tokens):
        for s in range(tokens):
            assert got[0, t, s] == pytest.approx(_min_cut(capacities, s, t), abs=1e-10)
    assert np.all(got >= attention_rollout(weights) - 1e-10)


def test_captured_transformer_flow_is_bounded_by_rollout_and_one():
    model = transformer_classifier(length=6)
    weights = capture_attention(model, token_ids(2, 6)).weights
    flow = attention_flow(weights)
    assert flow.shape == (2, 6, 6)
    assert np.all(flow >= attention_rollout(weights) - 1e-6)
    assert np.all(flow <= 1 + 1e-9)


def test_sizes_beyond_the_limit_are_refused_with_the_size_and_the_alternative():
    big = [np.full((1, 1, 48, 48), 1.0 / 48)] * 4        # 4 * 48**4 = 2.1e7 > the limit
    assert 4 * 48 ** 4 > FLOW_WORK_LIMIT
    with pytest.raises(ValueError, match=r"1 example\(s\) x 4 layers x 48 tokens.*2\.12e\+07 "
                                         r"exceeds the limit 1\.6e\+07.*attention_rollout"):
        attention_flow(big)
    with pytest.raises(ValueError, match="exceeds the limit 100"):
        attention_flow([np.full((1, 1, 3, 3), 1 / 3)] * 2, work_limit=100)
    for bad in ("100", 0, True):
        with pytest.raises(ValueError, match="work_limit must be a positive number or None"):
            attention_flow([np.full((1, 1, 3, 3), 1 / 3)] * 2, work_limit=bad)
    uniform = attention_flow([np.full((1, 1, 3, 3), 1 / 3)] * 2, work_limit=None)
    # Capacities 2/3 on the diagonal, 1/6 elsewhere; through each middle node k the flow is
    # min(C1[k, s], C2[t, k]): s == t gives 2/3 + 1/6 + 1/6 = 1, s != t gives 3 * 1/6.
    np.testing.assert_allclose(uniform[0], [[1, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 1]],
                               atol=1e-12)

def test_plot_draws_the_row_into_the_chosen_position():
    flow = attention_flow([A1[None, None], A2[None, None]], add_residual=False)
    fig = plot_attention_flow(flow, tokens=["a", "b", "c"], query=1)
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], flow[0, 1])
    assert "position 1" in fig.axes[0].get_title()


def test_bad_inputs_are_named():
    good = np.full((1, 1, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"weights_per_layer\[1\] must be finite"):
        attention_flow([good, np.where(good > 0, np.nan, good)])
    with pytest.raises(ValueError, match=r"weights_per_layer\['b'\] has negative"):
        attention_flow({"a": good, "b": -good})
    with pytest.raises(ValueError, match=r"layer 0 has weights of shape \(1, 1, 3, 4\)"):
        attention_flow([np.ones((1, 1, 3, 4))])
    with pytest.raises(ValueError, match=r"share \(B, T, T\)"):
        attention_flow([good, np.full((1, 1, 2, 2), 0.5)])
    with pytest.raises(ValueError, match="at least one layer"):
        attention_flow([])
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        attention_flow([good], head_fusion="median")
    with pytest.raises(TypeError, match="weights_per_layer must be a sequence"):
        attention_flow(3)
