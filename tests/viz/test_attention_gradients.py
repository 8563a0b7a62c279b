"""capture_attention_gradients against gradients written down by hand (float64 NumPy)."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.models.classifier import AttentionClassifier
from attnlab.viz.attention_gradients import capture_attention_gradients
from attnlab.viz.capture import capture_attention
from tests.viz.explain_models import (
    keras_mha_model,
    mha_logit_gradient,
    token_ids,
    transformer_classifier,
)


def _inputs(batch=2, length=4, depth=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, depth)).astype(np.float32)


def test_default_target_is_the_predicted_logit_and_gradients_match_by_hand():
    model, mha, dense = keras_mha_model()
    x = _inputs()
    logits = model(x).numpy()
    got = capture_attention_gradients(model, x)
    assert list(got.weights) == list(got.gradients) == ["mha"]
    _, want_weights = mha(x, x, return_attention_scores=True)
    np.testing.assert_allclose(got.weights["mha"], want_weights.numpy(), atol=1e-6)
    classes = logits.argmax(-1)
    np.testing.assert_array_equal(got.classes, classes)
    np.testing.assert_allclose(got.target_values, logits[[0, 1], classes], rtol=1e-5)
    want = mha_logit_gradient(x, mha, dense, classes)
    assert got.gradients["mha"].shape == (2, 2, 4, 4) and got.gradients["mha"].dtype == np.float32
    np.testing.assert_allclose(got.gradients["mha"], want, rtol=1e-4, atol=1e-6)


def test_int_list_and_callable_targets():
    model, mha, dense = keras_mha_model()
    x = _inputs()
    by_int = capture_attention_gradients(model, x, target=1)
    np.testing.assert_array_equal(by_int.classes, [1, 1])
    np.testing.assert_allclose(by_int.gradients["mha"],
                               mha_logit_gradient(x, mha, dense, np.array([1, 1])),
                               rtol=1e-4, atol=1e-6)
    by_list = capture_attention_gradients(model, x, target=[2, 0])
    np.testing.assert_allclose(by_list.gradients["mha"],
                               mha_logit_gradient(x, mha, dense, np.array([2, 0])),
                               rtol=1e-4, atol=1e-6)
    # A callable: the margin of class 1 over class 0 (the gradient is linear in the target).
    margin = capture_attention_gradients(model, x, target=lambda out: out[:, 1] - out[:, 0])
    assert margin.classes is None
    want = mha_logit_gradient(x, mha, dense, np.array([1, 1])) - \
        mha_logit_gradient(x, mha, dense, np.array([0, 0]))
    np.testing.assert_allclose(margin.gradients["mha"], want, rtol=1e-4, atol=1e-6)
    logits = model(x).numpy()
    np.testing.assert_allclose(margin.target_values, logits[:, 1] - logits[:, 0], rtol=1e-5)


def test_attnlab_custom_attention_classifier_by_hand():
    # AttentionClassifier: logits = mean over real t of (A V)[t] W_c + b_c, so
    # d logit_c / d A[t, s] = real[t] / n * (V[s] . W_c[:, c]) with V = x W_v + b_v.
    tf.keras.utils.set_random_seed(0)
    model = AttentionClassifier(12, 3, embed_dim=8)
    ids = np.array([[3, 5, 7, 0], [2, 9, 0, 0]], np.int32)
    got = capture_attention_gradients(model, ids, target=2)
    w = {v.name: v.numpy().astype(np.float64) for v in model.weights}

    def find(*parts):
        return next(v for k, v in w.items() if all(p in k for p in parts))

    x = find("embeddings")[ids]
    values = x @ find("value_kernel") + find("value_bias")
    per_key = values @ find("classify", "kernel")[:, 2]            # (B, S)
    real = (ids != 0).astype(np.float64)
    want = real[:, :, None] / real.sum(1)[:, None, None] * per_key[:, None, :]
    assert list(got.gradients) == ["attention"]
    np.testing.assert_allclose(got.gradients["attention"][:, 0], want, rtol=1e-4, atol=1e-6)
    assert model.attention.return_weights is True and "call" not in vars(model.attention)


def test_transformer_weights_match_capture_and_examples_are_independent():
    model = transformer_classifier(length=5)
    ids = token_ids(3, 5)
    letters = "abcdefghijklmnopqrst"
    got = capture_attention_gradients(model, ids, target=[0, 1, 2], vocabulary=list(letters))
    captured = capture_attention(model, ids)
    assert list(got.weights) == list(captured.weights) and len(got.weights) == 2
    for name in got.weights:
        np.testing.assert_allclose(got.weights[name], captured.weights[name], atol=1e-6)
        assert np.abs(got.gradients[name]).max() > 0
    assert got.query_tokens[0] == [letters[i] for i in ids[0]]
    # Each example gets the gradient of its own target: the same as when it runs alone.
    alone = capture_attention_gradients(model, ids[1:2], target=1)
    for name in got.weights:
        np.testing.assert_allclose(got.gradients[name][1:2], alone.gradients[name], rtol=1e-4,
                                   atol=1e-7)


def test_frozen_model_still_gives_gradients():
    model, mha, dense = keras_mha_model()
    model.trainable = False
    x = _inputs()
    got = capture_attention_gradients(model, x, target=0)
    np.testing.assert_allclose(got.gradients["mha"],
                               mha_logit_gradient(x, mha, dense, np.array([0, 0])),
                               rtol=1e-4, atol=1e-6)


def test_model_without_attention_is_named():
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))], name="plain")
    with pytest.raises(ValueError, match="'plain' has no attention layer"):
        capture_attention_gradients(model, np.ones((1, 3), np.float32))


@pytest.mark.parametrize("target, error, message", [
    ("first", TypeError, "target must be None"),
    (True, TypeError, "target must be None"),
    ([0.5, 1.5], TypeError, "target as a sequence"),
    (3, ValueError, "target class 3 is out of range for outputs with 3 classes"),
    ([0, 1, 2], ValueError, "target has 3 class indices but the batch has 2"),
])
def test_bad_targets_are_named(target, error, message):
    model, _, _ = keras_mha_model()
    with pytest.raises(error, match=message):
        capture_attention_gradients(model, _inputs(), target=target)


def test_non_differentiable_targets():
    model, _, _ = keras_mha_model()
    x = _inputs()
    with pytest.raises(TypeError, match="floating tensor.*int64"):
        capture_attention_gradients(model, x, target=lambda out: tf.argmax(out, -1))
    with pytest.raises(ValueError, match="does not depend on the attention weights"):
        capture_attention_gradients(model, x,
                                    target=lambda out: tf.stop_gradient(out[:, 0]))
    with pytest.raises(ValueError, match=r"shape \(2,\), got \(2, 3\)"):
        capture_attention_gradients(model, x, target=lambda out: out)


def test_class_target_needs_class_scores():
    model, _, _ = keras_mha_model()
    sequence_model = tf.keras.Model(model.inputs, model.get_layer("mha").output)
    with pytest.raises(ValueError, match=r"\(B, C\) outputs, got shape \(2, 4, 6\)"):
        capture_attention_gradients(sequence_model, _inputs())


def test_graph_mode_is_refused():
    model, _, _ = keras_mha_model()
    x = tf.constant(_inputs())
    with pytest.raises(RuntimeError, match="needs eager execution"):
        tf.function(lambda: capture_attention_gradients(model, x))()
