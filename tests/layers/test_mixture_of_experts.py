import math

import numpy as np
import pytest
import tensorflow as tf

from attnlab.layers.mixture_of_experts import MixtureOfExperts
from attnlab.layers.transformer_decoder import TransformerDecoderBlock
from attnlab.layers.transformer_encoder import TransformerEncoderBlock
from tests.layers.layer_checks import check_layer

DISPATCHES = ["gather", "buffer"]


# --------------------------------------------------------------- float64 NumPy reference


def random_weights(rng, depth, hidden, experts):
    """Router (D, E), W1 (E, D, H), b1 (E, H), W2 (E, H, D), b2 (E, D), float32 values."""
    shapes = [(depth, experts), (experts, depth, hidden), (experts, hidden),
              (experts, hidden, depth), (experts, depth)]
    return [rng.normal(scale=0.7, size=s).astype("float32") for s in shapes]


def moe_reference(x, weights, top_k, capacity_factor=None, mask=None):
    """Mixture of relu experts on (B, T, D), from the definitions, one assignment at a time.

    Returns (outputs (B, T, D), a dict like the layer's routing, losses dict).
    """
    router, w1, b1, w2, b2 = [np.asarray(w, np.float64) for w in weights]
    x = np.asarray(x, np.float64)
    batch, length, depth = x.shape
    experts = router.shape[1]
    n = batch * length
    tokens = x.reshape(n, depth)
    valid = np.ones(n, bool) if mask is None else np.asarray(mask, bool).reshape(n)
    logits = tokens @ router
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    choices = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    chosen = np.take_along_axis(probs, choices, axis=1)
    gates = chosen if top_k == 1 else chosen / chosen.sum(axis=1, keepdims=True)
    capacity = math.inf if capacity_factor is None else \
        math.ceil(capacity_factor * n * top_k / experts)

    out = np.zeros((n, depth))
    load = np.zeros(experts, int)
    dropped = np.zeros((n, top_k), bool)
    computed_rows = np.zeros(experts, int)
    # First choices of every token come before any second choice.
    for j in range(top_k):
        for t in range(n):
            if not valid[t]:
                continue
            e = choices[t, j]
            if load[e] >= capacity:
                dropped[t, j] = True
                continue
            load[e] += 1
            hidden = np.maximum(tokens[t] @ w1[e] + b1[e], 0.0)
            out[t] += gates[t, j] * (hidden @ w2[e] + b2[e])
            computed_rows[e] += 1

    real = max(valid.sum(), 1)
    f = np.array([np.sum(valid & (choices[:, 0] == e)) for e in range(experts)]) / real
    p = (probs * valid[:, None]).sum(axis=0) / real
    z = np.log(np.exp(logits).sum(axis=1))
    demand = np.array([np.sum(valid[:, None] & (choices == e)) for e in range(experts)])
    routing = {
        "expert_index": np.where(valid[:, None], choices, -1).reshape(batch, length, top_k),
        "router_probs": probs.reshape(batch, length, experts),
        "gates": (gates * valid[:, None]).reshape(batch, length, top_k),
        "dropped": dropped.reshape(batch, length, top_k),
        "expert_load": demand / max(valid.sum() * top_k, 1),
        "dropped_fraction": dropped.sum() / max(valid.sum() * top_k, 1),
        "computed_rows": computed_rows,
    }
    losses = {"load_balance": experts * np.sum(f * p),
              "z": np.sum(z ** 2 * valid) / real}
    return out.reshape(batch, length, depth), routing, losses


def make_layer(weights, **kwargs):
    experts, depth, hidden = weights[1].shape
    layer = MixtureOfExperts(experts, hidden, **kwargs)
    layer.build((None, None, depth))
    layer.set_weights(weights)
    return layer


def compare_routing(routing, expected):
    np.testing.assert_array_equal(routing["expert_index"].numpy(), expected["expert_index"])
    np.testing.assert_array_equal(routing["dropped"].numpy(), expected["dropped"])
    for key in ("router_probs", "gates", "expert_load", "dropped_fraction"):
        np.testing.assert_allclose(routing[key].numpy(), expected[key], atol=1e-5,
                                   err_msg=key)


CASES = {
    "top1": dict(top_k=1),
    "top2": dict(top_k=2),
    "top1 capacity": dict(top_k=1, capacity_factor=0.5),
    "top2 capacity": dict(top_k=2, capacity_factor=0.6),
    "top2 capacity mask": dict(top_k=2, capacity_factor=0.5, masked=True),
}


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_reference(case, dispatch):
    options = dict(CASES[case])
    masked = options.pop("masked", False)
    rng = np.random.RandomState(7)
    x = rng.normal(size=(3, 6, 8)).astype("float32")
    mask = None
    if masked:
        mask = np.ones((3, 6), bool)
        mask[0, 4:] = False
        mask[2, 1:] = False
    weights = random_weights(rng, 8, 12, 4)
    layer = make_layer(weights, dispatch=dispatch, **options)
    out, routing = layer(x, mask=mask, return_routing=True)
    expected, expected_routing, _ = moe_reference(x, weights, mask=mask, **options)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4, rtol=1e-4)
    compare_routing(routing, expected_routing)
    if "capacity_factor" in options:
        assert expected_routing["dropped"].any(), "the case should drop some assignments"
        # A token whose every choice was dropped gets exactly zero.
        all_dropped = expected_routing["dropped"].all(axis=-1)
        assert np.all(out.numpy()[all_dropped] == 0)
    if masked:
        assert np.all(out.numpy()[~mask] == 0)


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_keras_padding_mask_from_embedding(dispatch):
    ids = np.array([[3, 4, 5, 0], [6, 1, 0, 0]])
    embedding = tf.keras.layers.Embedding(8, 6, mask_zero=True)
    layer = MixtureOfExperts(3, 10, top_k=2, capacity_factor=1.0, dispatch=dispatch)
    inputs = tf.keras.Input((4,), dtype="int32")
    outputs, routing = layer(embedding(inputs), return_routing=True)
    assert outputs._keras_mask is not None  # the padding mask goes on
    model = tf.keras.Model(inputs, [outputs, routing["expert_index"], routing["expert_load"]])
    out, index, load = model(ids)
    weights = [layer.router_kernel.numpy()] + [w.numpy() for w in layer.weights[1:]]
    expected, expected_routing, _ = moe_reference(embedding(ids).numpy(), weights, 2, 1.0,
                                                  mask=ids != 0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(index.numpy(), expected_routing["expert_index"])
    assert np.all(index.numpy()[ids == 0] == -1)
    np.testing.assert_allclose(load.numpy(), expected_routing["expert_load"], atol=1e-6)


def test_auxiliary_losses_match_numpy():
    rng = np.random.RandomState(2)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    weights = random_weights(rng, 8, 6, 4)
    layer = make_layer(weights, top_k=2, load_balance_loss_weight=0.05,
                       router_z_loss_weight=0.002)
    layer(x, mask=mask)
    _, _, expected = moe_reference(x, weights, 2, mask=mask)
    assert len(layer.losses) == 2
    np.testing.assert_allclose(layer.losses[0].numpy(), 0.05 * expected["load_balance"],
                               rtol=1e-5)
    np.testing.assert_allclose(layer.losses[1].numpy(), 0.002 * expected["z"], rtol=1e-5)
    # Padding changes the losses (it is left out of them, not counted as tokens).
    _, _, unmasked = moe_reference(x, weights, 2)
    assert abs(unmasked["z"] - expected["z"]) > 1e-3
    silent = make_layer(weights, load_balance_loss_weight=0.0)
    silent(x)
    assert silent.losses == []


def test_router_runs_in_float32_under_mixed_precision():
    rng = np.random.RandomState(4)
    # Inputs exact in float16: the float32 router then sees the same numbers in both layers.
    x = rng.normal(size=(2, 6, 8)).astype("float16").astype("float32")
    weights = random_weights(rng, 8, 12, 4)
    full = make_layer(weights, top_k=2)
    mixed = make_layer(weights, top_k=2, dtype="mixed_float16")
    assert mixed.compute_dtype == "float16"
    assert mixed.router_kernel.dtype == tf.float32
    out, routing = mixed(x, return_routing=True)
    expected_out, expected_routing = full(x, return_routing=True)
    assert out.dtype == tf.float16
    assert routing["router_probs"].dtype == tf.float32
    assert routing["gates"].dtype == tf.float32
    # float16 logits would be off by ~1e-3; the float32 router matches to float32 rounding.
    np.testing.assert_allclose(routing["router_probs"].numpy(),
                               expected_routing["router_probs"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(routing["expert_index"].numpy(),
                                  expected_routing["expert_index"].numpy())
    np.testing.assert_allclose(out.numpy(), expected_out.numpy(), atol=2e-2, rtol=2e-2)


class RowSpy:
    """Records the inputs the experts are computed on."""

    def __init__(self, monkeypatch, method):
        self.shapes = []
        original = getattr(MixtureOfExperts, method)

        def spy(layer, rows, *args):
            self.shapes.append(tuple(rows.shape.as_list()))
            return original(layer, rows, *args)

        monkeypatch.setattr(MixtureOfExperts, method, spy)


@pytest.mark.parametrize("top_k, capacity_factor", [(1, None), (1, 0.25), (2, 0.25)])
def test_gather_dispatch_computes_only_routed_tokens(monkeypatch, top_k, capacity_factor):
    rng = np.random.RandomState(5)
    x = rng.normal(size=(2, 16, 8)).astype("float32")
    weights = random_weights(rng, 8, 12, 8)
    spy = RowSpy(monkeypatch, "expert_feedforward")
    layer = make_layer(weights, top_k=top_k, capacity_factor=capacity_factor)
    layer(x)
    _, expected, _ = moe_reference(x, weights, top_k, capacity_factor)
    # Each expert's FFN saw exactly its kept assignments: N * top_k rows at most in all,
    # where computing every expert on every token would be N * E = 256.
    assert [rows for rows, _ in spy.shapes] == list(expected["computed_rows"])
    assert sum(rows for rows, _ in spy.shapes) <= 32 * top_k
    if capacity_factor is not None:
        capacity = math.ceil(capacity_factor * 32 * top_k / 8)
        assert max(rows for rows, _ in spy.shapes) <= capacity


def test_buffer_dispatch_computes_capacity_slots(monkeypatch):
    rng = np.random.RandomState(5)
    x = rng.normal(size=(2, 16, 8)).astype("float32")
    weights = random_weights(rng, 8, 12, 8)
    spy = RowSpy(monkeypatch, "batched_expert_feedforward")
    make_layer(weights, top_k=1, capacity_factor=0.25, dispatch="buffer")(x)
    # 8 experts x capacity ceil(0.25 * 32 / 8) = 1 slot: 8 rows, not 8 x 32.
    assert spy.shapes == [(8, 1, 8)]


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_gradients_reach_router_and_experts(dispatch):
    rng = np.random.RandomState(6)
    x = tf.constant(rng.normal(size=(2, 8, 8)).astype("float32"))
    # No auxiliary loss: the router's gradient must come through the gates alone.
    layer = MixtureOfExperts(4, 12, top_k=1, load_balance_loss_weight=0.0, dispatch=dispatch,
                             bias_initializer="random_normal")
    layer.build(x.shape)
    upstream = tf.constant(rng.normal(size=(2, 8, 8)).astype("float32"))
    with tf.GradientTape() as tape:
        out, routing = layer(x, return_routing=True)
        loss = tf.reduce_sum(out * upstream)
    grads = tape.gradient(loss, layer.trainable_weights)
    used = np.unique(routing["expert_index"].numpy())
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.name
        grad = tf.convert_to_tensor(grad).numpy()
        if weight is layer.router_kernel:
            assert np.abs(grad).max() > 0
        else:
            assert np.abs(grad[used]).max() > 0, weight.name
            unused = np.setdiff1d(np.arange(4), used)
            assert np.all(grad[unused] == 0), weight.name


def test_padding_only_batch_gives_zeros_not_nan():
    layer = MixtureOfExperts(2, 4, capacity_factor=1.0, router_z_loss_weight=0.1)
    out, routing = layer(tf.ones([1, 3, 4]), mask=tf.zeros([1, 3], tf.bool),
                         return_routing=True)
    assert np.all(out.numpy() == 0)
    assert routing["dropped_fraction"].numpy() == 0
    assert all(np.isfinite(loss.numpy()) for loss in layer.losses)


def test_dropped_fraction_is_a_training_metric():
    inputs = tf.keras.Input((8, 6))
    model = tf.keras.Model(inputs, MixtureOfExperts(4, 10, capacity_factor=0.5,
                                                    name="moe")(inputs))
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.RandomState(0)
    history = model.fit(rng.rand(4, 8, 6), rng.rand(4, 8, 6), verbose=0)
    dropped = history.history["moe_dropped_fraction"][0]
    assert 0.5 <= dropped < 1  # capacity 0.5 keeps at most half of the assignments
    loss_only = model.evaluate(rng.rand(4, 8, 6), rng.rand(4, 8, 6), verbose=0,
                               return_dict=True)
    assert "moe_dropped_fraction" in loss_only


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_check_layer(tmp_path, dispatch):
    x = np.random.RandomState(0).normal(size=(2, 6, 8)).astype("float32")
    check_layer(MixtureOfExperts,
                {"num_experts": 4, "intermediate_dim": 16, "top_k": 2, "capacity_factor": 1.5,
                 "activation": "gelu", "router_z_loss_weight": 0.001, "dispatch": dispatch,
                 "kernel_regularizer": "l2"},
                x, tmp_path, expected_output_shape=(2, 6, 8))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_experts": 0}, "num_experts must be a positive integer, got 0"),
    ({"num_experts": 2.0}, "num_experts must be a positive integer, got 2.0"),
    ({"top_k": 0}, "top_k must be a positive integer, got 0"),
    ({"top_k": 5}, "top_k must be at most num_experts=4, got 5"),
    ({"capacity_factor": 0}, "capacity_factor must be a number > 0, got 0"),
    ({"capacity_factor": "1"}, "capacity_factor must be a number > 0, got '1'"),
    ({"load_balance_loss_weight": -0.1}, "load_balance_loss_weight must be a number >= 0"),
    ({"router_z_loss_weight": -1}, "router_z_loss_weight must be a number >= 0, got -1"),
    ({"dispatch": "dense"}, "dispatch must be one of gather, buffer, got 'dense'"),
    ({"intermediate_dim": 0}, "intermediate_dim must be a positive integer, got 0"),
    ({"activation": "nope"}, "activation 'nope'"),
])
def test_bad_constructor_arguments(kwargs, match):
    arguments = dict({"num_experts": 4, "intermediate_dim": 8}, **kwargs)
    with pytest.raises(ValueError, match=match):
        MixtureOfExperts(**arguments)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(B, T, D\).*\(2, 8\)"):
        MixtureOfExperts(2, 4)(tf.ones([2, 8]))
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor.*int32"):
        MixtureOfExperts(2, 4)(tf.ones([1, 2, 4], tf.int32))
    with pytest.raises(ValueError, match=r"\(B, T\) padding mask, got \(1, 2, 2\)"):
        MixtureOfExperts(2, 4)(tf.ones([1, 2, 4]), mask=tf.ones([1, 2, 2], tf.bool))


# ------------------------------------------------------------------ Transformer blocks

# The dense blocks' variables before the mixture-of-experts option existed.
DENSE_ENCODER_WEIGHTS = [
    "self_attention/query/kernel", "self_attention/query/bias", "self_attention/key/kernel",
    "self_attention/key/bias", "self_attention/value/kernel", "self_attention/value/bias",
    "self_attention/attention_output/kernel", "self_attention/attention_output/bias",
    "self_attention_norm/gamma", "self_attention_norm/beta",
    "feedforward_intermediate/kernel", "feedforward_intermediate/bias",
    "feedforward_output/kernel", "feedforward_output/bias",
    "feedforward_norm/gamma", "feedforward_norm/beta"]
DENSE_DECODER_WEIGHTS = DENSE_ENCODER_WEIGHTS + [
    "cross_attention/query/kernel", "cross_attention/query/bias", "cross_attention/key/kernel",
    "cross_attention/key/bias", "cross_attention/value/kernel", "cross_attention/value/bias",
    "cross_attention/attention_output/kernel", "cross_attention/attention_output/bias",
    "cross_attention_norm/gamma", "cross_attention_norm/beta"]
EXPERT_ARGUMENTS = ["num_experts", "expert_top_k", "expert_capacity_factor",
                    "expert_load_balance_loss_weight", "expert_router_z_loss_weight",
                    "expert_dispatch"]


def weight_names(block):
    return [w.name[len(block.name) + 1:-len(":0")] for w in block.weights]


def build_block(block_cls, **kwargs):
    block = block_cls(2, 16, name="block", **kwargs)
    x = tf.ones([1, 3, 8])
    if block_cls is TransformerDecoderBlock:
        block(x, tf.ones([1, 2, 8]))
    else:
        block(x)
    return block


@pytest.mark.parametrize("block_cls, expected", [
    (TransformerEncoderBlock, DENSE_ENCODER_WEIGHTS),
    (TransformerDecoderBlock, DENSE_DECODER_WEIGHTS)])
def test_dense_blocks_are_unchanged_and_old_configs_load(block_cls, expected):
    block = build_block(block_cls)
    assert weight_names(block) == expected
    assert block.losses == []
    assert not hasattr(block, "feedforward_experts")
    old_config = block.get_config()
    for name in EXPERT_ARGUMENTS:
        old_config.pop(name)
    restored = block_cls.from_config(old_config)
    assert restored.num_experts is None
    assert restored.get_config() == block.get_config()


@pytest.mark.parametrize("block_cls", [TransformerEncoderBlock, TransformerDecoderBlock])
def test_blocks_with_experts_replace_only_the_feedforward(block_cls):
    block = build_block(block_cls, num_experts=4, expert_top_k=2)
    assert isinstance(block.feedforward_experts, MixtureOfExperts)
    assert block.feedforward_experts.top_k == 2
    names = weight_names(block)
    dense = [n for n in (DENSE_DECODER_WEIGHTS if block_cls is TransformerDecoderBlock
                         else DENSE_ENCODER_WEIGHTS) if not n.startswith("feedforward_")
             or n.startswith("feedforward_norm")]
    experts = ["feedforward_experts/router_kernel",
               "feedforward_experts/expert_intermediate_kernel",
               "feedforward_experts/expert_intermediate_bias",
               "feedforward_experts/expert_output_kernel",
               "feedforward_experts/expert_output_bias"]
    assert sorted(names) == sorted(dense + experts)
    assert len(block.losses) == 1  # the load-balancing loss, in the block's losses


def test_encoder_block_routing_and_padding():
    rng = np.random.RandomState(3)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)
    block = TransformerEncoderBlock(2, 16, num_experts=4, expert_capacity_factor=2.0,
                                    norm_first=True)
    out, scores, routing = block(x, mask=mask, return_attention_scores=True,
                                 return_routing=True)
    assert out.shape == (2, 5, 8) and scores["self"].shape == (2, 2, 5, 5)
    assert routing["expert_index"].shape == (2, 5, 1)
    np.testing.assert_array_equal(routing["expert_index"].numpy()[..., 0] == -1, ~mask)
    np.testing.assert_allclose(routing["router_probs"].numpy().sum(-1), 1.0, atol=1e-6)
    # Pre-norm: a padded token gets no expert output, so the FFN's residual leaves it as the
    # attention sublayer's output.
    attended = block.self_attention(block.self_attention_norm(x), block.self_attention_norm(x),
                                    attention_mask=mask[:, None, :])
    np.testing.assert_allclose(out.numpy()[~mask], (x + attended.numpy())[~mask], atol=1e-5)
    with pytest.raises(ValueError, match="dense feed-forward: return_routing needs"):
        TransformerEncoderBlock(2, 16)(x, return_routing=True)


def test_decoder_block_routing_with_cache():
    rng = np.random.RandomState(4)
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    memory = rng.normal(size=(2, 4, 8)).astype("float32")
    block = TransformerDecoderBlock(2, 16, num_experts=3, expert_top_k=2)
    full, routing = block(x, memory, return_routing=True)
    cache = block.init_cache(2, 3)
    steps = []
    for t in range(3):
        out, step_routing, cache = block(x[:, t:t + 1], memory, self_attention_cache=cache,
                                         cache_update_index=t, return_routing=True)
        steps.append(out.numpy())
        np.testing.assert_array_equal(step_routing["expert_index"].numpy()[:, 0],
                                      routing["expert_index"].numpy()[:, t])
    # Without a capacity, token-by-token decoding routes and computes as one call does.
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full.numpy(), atol=1e-5)


def test_blocks_report_dropped_fraction_separately():
    inputs = tf.keras.Input((6, 8))
    x = TransformerEncoderBlock(2, 16, num_experts=4, expert_capacity_factor=0.25,
                                name="first")(inputs)
    x = TransformerEncoderBlock(2, 16, num_experts=4, expert_capacity_factor=4.0,
                                name="second")(x)
    model = tf.keras.Model(inputs, x)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.RandomState(0)
    history = model.fit(rng.rand(4, 6, 8), rng.rand(4, 6, 8), verbose=0).history
    assert history["first_dropped_fraction"][0] >= 0.75
    assert history["second_dropped_fraction"][0] == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"num_experts": 0}, "num_experts must be a positive integer, got 0"),
    ({"num_experts": 2, "expert_top_k": 3}, "expert_top_k must be at most num_experts=2"),
    ({"num_experts": 2, "expert_capacity_factor": -1},
     "expert_capacity_factor must be a number > 0, got -1"),
    ({"num_experts": 2, "expert_router_z_loss_weight": -1},
     "expert_router_z_loss_weight must be a number >= 0"),
    ({"num_experts": 2, "expert_dispatch": "all"}, "expert_dispatch must be one of"),
    ({"expert_top_k": 2}, "expert_top_k only apply to a mixture-of-experts.*num_experts"),
])
@pytest.mark.parametrize("block_cls", [TransformerEncoderBlock, TransformerDecoderBlock])
def test_blocks_bad_expert_arguments(block_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        block_cls(2, 8, **kwargs)


def test_encoder_block_with_experts_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 8)).astype("float32")
    check_layer(TransformerEncoderBlock,
                {"num_heads": 2, "intermediate_dim": 16, "num_experts": 4, "expert_top_k": 2,
                 "expert_capacity_factor": 1.5, "expert_router_z_loss_weight": 0.001,
                 "expert_dispatch": "buffer"},
                x, tmp_path, expected_output_shape=(2, 4, 8))


def test_decoder_block_with_experts_check_layer(tmp_path):
    rng = np.random.RandomState(0)
    inputs = [rng.normal(size=(2, 4, 8)).astype("float32"),
              rng.normal(size=(2, 3, 8)).astype("float32")]
    check_layer(TransformerDecoderBlock,
                {"num_heads": 2, "intermediate_dim": 16, "num_experts": 3,
                 "expert_capacity_factor": 1.0, "norm_first": True},
                inputs, tmp_path, expected_output_shape=(2, 4, 8))


def test_a_mask_that_does_not_fit_the_tokens_is_named():
    layer = MixtureOfExperts(num_experts=2, intermediate_dim=8)
    x = tf.random.normal([2, 3, 4])
    with pytest.raises(ValueError, match=r"MixtureOfExperts expects a \(B, T\) padding mask"):
        layer(x, mask=tf.ones([2, 4], tf.bool))
    with pytest.raises(ValueError, match="values other than 0 and 1"):
        layer(x, mask=tf.constant([[0.0, 0.0, -1e9], [0.0, -1e9, -1e9]]))
