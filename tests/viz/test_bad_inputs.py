"""The viz functions that take attention weights refuse NaN/Inf, wrong ranks and shapes and
mismatched token labels, with errors naming the argument."""
import numpy as np
import pytest

from attnlab.viz.aggregate import head_max, head_mean, reduce_heads
from attnlab.viz.plots import plot_attention, plot_heads, plot_layers
from attnlab.viz.rollout import attention_rollout
from attnlab.viz.snapshots import save_attention_snapshot
from attnlab.viz.subwords import merge_pieces

NAN, INF = float("nan"), float("inf")


def _weights(shape, bad=None, count=1):
    """Uniform weights of `shape`, with the first `count` entries set to `bad`."""
    w = np.full(shape, 1.0 / shape[-1])
    if bad is not None:
        w.reshape(-1)[:count] = bad
    return w


W2, W3, W4 = _weights((3, 3)), _weights((2, 3, 3)), _weights((2, 2, 3, 3))

# Every public function taking weights, called with `w` in the weights slot.
FUNCTIONS = {
    "plot_attention": (lambda w: plot_attention(w), 2, r"weights"),
    "plot_heads": (lambda w: plot_heads(w), 4, r"weights"),
    "plot_layers": (lambda w: plot_layers({"a": w}), 4, r"layers\['a'\]"),
    "attention_rollout": (lambda w: attention_rollout([w]), 4, r"layers\[0\]"),
    "attention_rollout_dict": (lambda w: attention_rollout({"enc": w}), 4, r"layers\['enc'\]"),
    "head_mean": (lambda w: head_mean(w), 4, "weights"),
    "head_max": (lambda w: head_max(w), 4, "weights"),
    "reduce_heads": (lambda w: reduce_heads(w, "mean"), 4, "weights"),
    "merge_pieces": (lambda w: merge_pieces(w, [[[0], [1], [2]]] * 2, [[[0], [1, 2]]] * 2), 4,
                     "weights"),
}
SHAPES = {2: (3, 3), 4: (2, 2, 3, 3)}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
@pytest.mark.parametrize("bad,count", [(NAN, 1), (INF, 2), (-INF, 1), (NAN, 5)])
def test_non_finite_weights_are_refused_with_their_count(function, bad, count):
    call, rank, name = FUNCTIONS[function]
    shape = SHAPES[rank]
    with pytest.raises(ValueError, match=r"%s must be finite, got %d NaN/Inf entries of %d"
                       % (name, count, int(np.prod(shape)))):
        call(_weights(shape, bad, count))


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_wrong_rank_is_refused(function):
    call, rank, name = FUNCTIONS[function]
    wrong = np.ones((2, 2, 2, 3, 3)) if rank == 4 else np.ones((2, 3, 3))
    with pytest.raises(ValueError, match=r"%s must have rank .*got shape %s"
                       % (name, r"\(" + r", ".join(str(d) for d in wrong.shape) + r"\)")):
        call(wrong)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_empty_weights_are_refused(function):
    call, rank, name = FUNCTIONS[function]
    empty = np.ones((2, 2, 0, 3)) if rank == 4 else np.ones((0, 3))
    with pytest.raises(ValueError, match=r"%s must not be empty" % name):
        call(empty)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_non_numeric_weights_are_refused(function):
    call, rank, name = FUNCTIONS[function]
    with pytest.raises(TypeError, match=r"%s must be a numeric array, got dtype" % name):
        call(np.full(SHAPES[rank], "x"))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"query_tokens": ["a", "b"]}, ValueError, "query_tokens has 2 tokens but the weights have 3"),
    ({"key_tokens": list("abcd")}, ValueError, "key_tokens has 4 tokens but the weights have 3"),
    ({"query_tokens": "abc"}, TypeError, "query_tokens must be a sequence of tokens"),
    ({"key_tokens": "abc"}, TypeError, "key_tokens must be a sequence of tokens"),
    ({"max_ticks": 0}, ValueError, "max_ticks must be a positive integer, got 0"),
    ({"max_ticks": 2.5}, ValueError, "max_ticks must be a positive integer, got 2.5"),
])
def test_plot_attention_bad_labels_and_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        plot_attention(W2, **kwargs)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"example": 2}, ValueError, "example 2 is out of range for weights with batch size 2"),
    ({"example": -3}, ValueError, "example -3 is out of range"),
    ({"example": 1.0}, TypeError, "example must be an integer index into the batch, got 1.0"),
    ({"example": True}, TypeError, "example must be an integer index into the batch, got True"),
    ({"query_tokens": ["a"]}, ValueError, "query_tokens has 1 tokens but the weights have 3"),
    ({"key_tokens": list("abcd")}, ValueError, "key_tokens has 4 tokens"),
    ({"ncols": 0}, ValueError, "ncols must be a positive integer, got 0"),
])
def test_plot_heads_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        plot_heads(W4, **kwargs)


def test_plot_layers_bad_example_and_no_layers():
    with pytest.raises(ValueError, match=r"example 4 is out of range for layers\['a'\]"):
        plot_layers({"a": W4}, example=4)
    with pytest.raises(ValueError, match="plot_layers needs at least one layer"):
        plot_layers({})


@pytest.mark.parametrize("layers,error,message", [
    ([np.ones((1, 1, 2, 3))], ValueError, r"self-attention \(T == S\).*\(1, 1, 2, 3\)"),
    ({"a": W4, "b": _weights((2, 2, 2, 2))}, ValueError, r"must share \(B, T, T\).*'b'"),
    ([], ValueError, "at least one layer"),
    (5, TypeError, "layers must be a sequence or dict of per-layer weights, got 'int'"),
    ("ab", TypeError, "layers must be a sequence or dict of per-layer weights, got 'str'"),
    ([W4, _weights((2, 2, 3, 3), NAN, 3)], ValueError,
     r"layers\[1\] must be finite, got 3 NaN/Inf entries of 36"),
])
def test_attention_rollout_bad_layers(layers, error, message):
    with pytest.raises(error, match=message):
        attention_rollout(layers)


def test_attention_rollout_bad_head_fusion():
    with pytest.raises(ValueError, match="head_fusion must be one of mean, max, min, got 'sum'"):
        attention_rollout([W4], head_fusion="sum")


def test_reduce_heads_bad_how():
    with pytest.raises(ValueError, match="how must be one of"):
        reduce_heads(W4, "median")


def test_snapshot_refuses_non_finite_weights(tmp_path):
    with pytest.raises(ValueError, match=r"weights\['enc'\] must be finite, got 1 NaN/Inf"):
        save_attention_snapshot(str(tmp_path), 1, 0, {"enc": _weights((2, 2, 3, 3), NAN)})
    assert not list(tmp_path.rglob("*.npz"))  # nothing written half


def test_finite_weights_still_plot_and_roll_out():
    assert plot_attention(W2).get_array().shape == (3, 3)
    np.testing.assert_allclose(attention_rollout([W4, W4]).sum(-1), 1.0)
