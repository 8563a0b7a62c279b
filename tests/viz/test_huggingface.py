"""capture_hf_attention against the models' own output_attentions and float64 NumPy attention.

Every family is built from a small random-initialized config with a tokenizer trained in
memory (attnlab.models.hf_tiny), so no weights or vocabularies are downloaded.
"""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.models.hf_tiny import FAMILIES, tiny_hf_model
from attnlab.viz.huggingface import SPECIAL, capture_hf_attention

TEXTS = ["the cats sat on the mat", "researchers visualized attention heads"]
TARGETS = ["the dog sat", "a cat"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, tokenizer = tiny_hf_model(request.param)
    batch = tokenizer(TEXTS, padding=True, return_tensors="tf")
    target = None
    if model.config.is_encoder_decoder:
        target = tokenizer(TARGETS, padding=True, return_tensors="tf")
    return request.param, model, tokenizer, batch, target


def _model_arguments(batch, target):
    arguments = dict(batch)
    if target is not None:
        arguments["decoder_input_ids"] = target["input_ids"]
        arguments["decoder_attention_mask"] = target["attention_mask"]
    return arguments


def _parts(model):
    if model.config.is_encoder_decoder:
        return ["encoder_attentions", "decoder_attentions", "cross_attentions"]
    return ["attentions"]


def _allowed(name, model, part, batch, target):
    """(B, 1, T, S) bool: keys that are not padding and, for causal attention, not later."""
    keys = np.asarray((target if part == "decoder_attentions" else batch)["attention_mask"])
    queries = (batch if part == "encoder_attentions" or target is None else target)
    t = np.asarray(queries["input_ids"]).shape[1]
    allowed = np.repeat(keys.astype(bool)[:, None, None, :], t, axis=2)
    if name == "gpt2" or part == "decoder_attentions":
        allowed &= np.tril(np.ones((t, t), bool))[None, None]
    return allowed


def test_captured_weights_are_the_models_own_output_attentions(family):
    name, model, tokenizer, batch, target = family
    captured = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target)
    reference = model(**_model_arguments(batch, target), output_attentions=True)
    assert list(captured) == _parts(model)
    for part, snapshot in captured.items():
        layers = getattr(reference, part)
        assert len(snapshot.weights) == len(layers) == 2
        for (layer_name, weights), want in zip(snapshot.weights.items(), layers):
            assert layer_name.endswith("layer_%d" % list(snapshot.weights).index(layer_name))
            assert weights.dtype == np.float32
            np.testing.assert_array_equal(weights, want.numpy())


def _marked(tokenizer, encoding):
    special = set(tokenizer.all_special_tokens)
    return [[SPECIAL.format(t) if t in special else t
             for t in tokenizer.convert_ids_to_tokens(row)]
            for row in encoding["input_ids"].numpy().tolist()]


def test_tokens_are_written_as_the_tokenizer_writes_them_with_special_tokens_marked(family):
    name, model, tokenizer, batch, target = family
    captured = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target)
    want = _marked(tokenizer, batch)
    assert any(t.startswith("\u00ab") for row in want for t in row)
    first = captured[_parts(model)[0]]
    assert first.query_tokens == want and first.key_tokens == want
    if target is not None:
        assert captured["decoder_attentions"].query_tokens == _marked(tokenizer, target)
        assert captured["cross_attentions"].query_tokens == _marked(tokenizer, target)
        assert captured["cross_attentions"].key_tokens == want
    plain = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target, special=None)
    assert plain[_parts(model)[0]].query_tokens == [
        tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].numpy().tolist()]


def test_rows_sum_to_one_over_unmasked_keys(family):
    name, model, tokenizer, batch, target = family
    captured = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target)
    for part, snapshot in captured.items():
        allowed = _allowed(name, model, part, batch, target)
        for layer_name, weights in snapshot.weights.items():
            w = weights.astype(np.float64)
            np.testing.assert_allclose(np.where(allowed, w, 0).sum(-1), 1.0, atol=1e-5,
                                       err_msg="%s %s %s" % (name, part, layer_name))
            np.testing.assert_allclose(np.where(allowed, 0, w), 0.0, atol=1e-6,
                                       err_msg="%s %s %s" % (name, part, layer_name))


def test_capture_does_not_change_the_model_outputs(family):
    name, model, tokenizer, batch, target = family
    arguments = _model_arguments(batch, target)
    plain = model(**arguments)
    _, outputs = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target,
                                      return_outputs=True)
    np.testing.assert_allclose(outputs.last_hidden_state.numpy(),
                               plain.last_hidden_state.numpy(), rtol=1e-6, atol=1e-6)
    again = model(**arguments)
    np.testing.assert_array_equal(again.last_hidden_state.numpy(),
                                  plain.last_hidden_state.numpy())


def test_merged_words_keep_rows_summing_to_one_over_their_keys(family):
    name, model, tokenizer, batch, target = family
    captured = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target,
                                    merge_subwords=True)
    first = captured[_parts(model)[0]]
    # "cats" is split into pieces by every tiny vocabulary; merged it is one token again.
    assert "cats" in first.query_tokens[0]
    assert len(first.query_tokens[0]) < batch["input_ids"].shape[1]
    for snapshot in captured.values():
        for weights in snapshot.weights.values():
            sums = weights.astype(np.float64).sum(-1)
            # A row sums to 1 when the merged position holds real tokens, else it is padding.
            real = np.array([[t != "" for t in row] for row in snapshot.query_tokens])
            np.testing.assert_allclose(sums[real[:, None, :].repeat(sums.shape[1], 1)], 1.0,
                                       atol=1e-5)
            assert np.all(sums[~real[:, None, :].repeat(sums.shape[1], 1)] == 0)


# --- float64 NumPy attention from the layers' own projection weights ----------------------

def _softmax(scores, allowed):
    scores = np.where(allowed, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(-1, keepdims=True)


def _heads(x, heads):
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def _dense(layer, x):
    kernel, bias = (v.numpy().astype(np.float64) for v in (layer.kernel, layer.bias))
    return x @ kernel + bias


def _layer_norm(layer, x):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    gamma, beta = (v.numpy().astype(np.float64) for v in (layer.gamma, layer.beta))
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _projections(name, model, i, h):
    """Queries and keys (B, T, D) of layer i from its input hidden states h, float64."""
    if name == "bert":
        attention = model.bert.encoder.layer[i].attention.self_attention
        return _dense(attention.query, h), _dense(attention.key, h)
    if name == "distilbert":
        attention = model.distilbert.transformer.layer[i].attention
        return _dense(attention.q_lin, h), _dense(attention.k_lin, h)
    if name == "gpt2":
        block = model.transformer.h[i]
        a = _layer_norm(block.ln_1, h)
        conv = block.attn.c_attn
        qkv = a @ conv.weight.numpy().astype(np.float64) + conv.bias.numpy().astype(np.float64)
        d = h.shape[-1]
        return qkv[..., :d], qkv[..., d:2 * d]
    attention = model.model.encoder.layers[i].self_attn  # bart
    return _dense(attention.q_proj, h), _dense(attention.k_proj, h)


@pytest.mark.parametrize("name", ["bert", "distilbert", "gpt2", "bart"])
def test_output_attentions_equal_softmax_of_the_layers_own_queries_and_keys(name):
    # An independent check that what the models return as attention is softmax(q k^T / sqrt(d))
    # over the allowed keys (T5 adds a learned relative position bias: covered by the
    # output_attentions comparison above, not recomputed here).
    model, tokenizer = tiny_hf_model(name)
    batch = tokenizer(TEXTS, padding=True, return_tensors="tf")
    target = tokenizer(TARGETS, padding=True, return_tensors="tf") if name == "bart" else None
    arguments = _model_arguments(batch, target)
    outputs = model(**arguments, output_hidden_states=True)
    hidden = outputs.encoder_hidden_states if name == "bart" else outputs.hidden_states
    part = "encoder_attentions" if name == "bart" else "attentions"
    captured = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target)[part]
    heads = model.config.num_attention_heads if name != "bart" else \
        model.config.encoder_attention_heads
    allowed = _allowed(name, model, part, batch, target)
    for i, weights in enumerate(captured.weights.values()):
        q, k = _projections(name, model, i, hidden[i].numpy().astype(np.float64))
        q, k = _heads(q, heads), _heads(k, heads)
        want = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]), allowed)
        np.testing.assert_allclose(weights, want, atol=2e-5, err_msg="%s layer %d" % (name, i))


# --- errors --------------------------------------------------------------------------------

def test_bad_inputs_get_clear_errors():
    model, tokenizer = tiny_hf_model("bert")
    with pytest.raises(TypeError, match="Hugging Face transformers TF model"):
        capture_hf_attention(tf.keras.Sequential(), {"input_ids": np.zeros((1, 3), int)})
    with pytest.raises(ValueError, match="must contain 'input_ids'"):
        capture_hf_attention(model, {"attention_mask": np.ones((1, 3), int)})
    with pytest.raises(ValueError, match=r"integer token ids of shape \(B, T\)"):
        capture_hf_attention(model, np.zeros((3,), np.int32))
    with pytest.raises(ValueError, match="has no decoder"):
        ids = np.array([[2, 5, 3]])
        capture_hf_attention(model, ids, decoder_inputs=ids)
    with pytest.raises(ValueError, match="special must be a format string"):
        capture_hf_attention(model, np.array([[2, 5, 3]]), tokenizer, special="*")
    with pytest.raises(ValueError, match="BatchEncoding of a fast tokenizer"):
        capture_hf_attention(model, np.array([[2, 5, 3]]), tokenizer, merge_subwords=True)
    t5, t5_tokenizer = tiny_hf_model("t5")
    with pytest.raises(ValueError, match="encoder-decoder model: pass decoder_inputs"):
        capture_hf_attention(t5, t5_tokenizer(["the cat"], return_tensors="tf"))


def test_ids_without_a_tokenizer_are_shown_as_numbers():
    model, _ = tiny_hf_model("distilbert")
    ids = np.array([[2, 7, 9, 3]], np.int32)
    captured = capture_hf_attention(model, ids)["attentions"]
    assert captured.query_tokens == [["2", "7", "9", "3"]]
    assert captured.weights["layer_0"].shape == (1, 4, 4, 4)


@pytest.mark.parametrize("family, head", [("bert", "TFBertForSequenceClassification"),
                                          ("t5", "TFT5ForConditionalGeneration")])
def test_models_with_a_task_head_give_the_same_fields(family, head):
    import transformers

    from attnlab.models.hf_tiny import tiny_config, tiny_tokenizer

    tokenizer = tiny_tokenizer(family)
    model = getattr(transformers, head)(tiny_config(family, tokenizer))
    batch = tokenizer(TEXTS, padding=True, return_tensors="tf")
    target = tokenizer(TARGETS, padding=True, return_tensors="tf") if family == "t5" else None
    captured, outputs = capture_hf_attention(model, batch, tokenizer, decoder_inputs=target,
                                             return_outputs=True)
    assert list(captured) == _parts(model)
    assert hasattr(outputs, "logits")
    for part, snapshot in captured.items():
        for weights, want in zip(snapshot.weights.values(), getattr(outputs, part)):
            np.testing.assert_array_equal(weights, want.numpy())
