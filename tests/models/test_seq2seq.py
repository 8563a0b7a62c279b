"""RNN and Transformer seq2seq: one-token-at-a-time decoding equals the teacher-forced run."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.models.rnn_seq2seq import RNNSeq2Seq
from attnlab.models.transformer import TransformerSeq2Seq


def _inputs(batch=2, source_length=6, target_length=5, seed=0):
    rng = np.random.default_rng(seed)
    source = rng.integers(4, 12, size=(batch, source_length)).astype(np.int32)
    source[0, 4:] = 0  # padding
    target = rng.integers(4, 12, size=(batch, target_length)).astype(np.int32)
    target[:, 0] = 1
    return {"source": source, "target_in": target}


MODELS = {
    "rnn_gru_additive": lambda: RNNSeq2Seq(12, 12, embed_dim=8, units=16),
    "rnn_lstm_luong": lambda: RNNSeq2Seq(12, 12, embed_dim=8, units=16, cell="lstm",
                                         attention="luong"),
    "transformer": lambda: TransformerSeq2Seq(12, 12, d_model=16, num_heads=2, ff_dim=32,
                                              num_layers=2, max_length=8),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_by_step_decoding_equals_the_full_run(name):
    model = MODELS[name]()
    x = _inputs()
    full = model(x).numpy()
    memory = model.encode(x["source"])
    state = model.init_decode_state(memory, 8)
    for t in range(x["target_in"].shape[1]):
        logits, state = model.decode_step(tf.constant(x["target_in"][:, t]), memory, state,
                                          tf.constant(t))
        np.testing.assert_allclose(logits.numpy(), full[:, t], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.decode_full(x["target_in"], memory).numpy(), full,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_weights_are_distributions_that_skip_source_padding(name):
    model = MODELS[name]()
    logits, weights = model(_inputs(), return_attention=True)
    assert logits.dtype == tf.float32 and logits.shape == (2, 5, 12)
    cross = [w for k, w in weights.items() if "cross" in k]
    assert cross
    for w in weights.values():
        w = w.numpy()
        assert w.ndim == 4
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    for w in cross:
        assert w.shape[2:] == (5, 6)
        assert np.all(w.numpy()[0, :, :, 4:] == 0)


@settings(max_examples=6)
@given(prefix=st.integers(1, 4))
def test_transformer_is_causal(prefix):
    """Changing target tokens after position p leaves the logits up to p unchanged."""
    model = MODELS["transformer"]()
    x = _inputs()
    base = model(x).numpy()
    changed = {"source": x["source"], "target_in": x["target_in"].copy()}
    changed["target_in"][:, prefix:] = 11 - changed["target_in"][:, prefix:] + 4
    out = model(changed).numpy()
    np.testing.assert_allclose(out[:, :prefix], base[:, :prefix], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_round_trip(name):
    model = MODELS[name]()
    x = _inputs()
    model(x)
    clone = type(model).from_config(model.get_config())
    clone(x)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_mixed_precision_keeps_float32_variables_and_logits():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = TransformerSeq2Seq(12, 12, d_model=16, num_heads=2, ff_dim=32, num_layers=1)
    logits = model(_inputs())
    assert logits.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in model.weights)
    assert model.decoder_blocks[0].compute_dtype == "float16"


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="cell must be one of .* got 'rnn'"):
        RNNSeq2Seq(10, 10, cell="rnn")
    with pytest.raises(ValueError, match="attention must be one of .* got 'dot'"):
        RNNSeq2Seq(10, 10, attention="dot")
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by num_heads \(4\)"):
        TransformerSeq2Seq(10, 10, d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="dropout must be in"):
        TransformerSeq2Seq(10, 10, dropout=1.5)
    model = TransformerSeq2Seq(10, 10, d_model=8, num_heads=2, max_length=4)
    memory = model.encode(np.ones((1, 3), np.int32))
    with pytest.raises(ValueError, match="max_length 9 exceeds the model's max_length 4"):
        model.init_decode_state(memory, 9)
