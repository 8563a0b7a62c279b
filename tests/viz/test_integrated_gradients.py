"""Integrated Gradients: exact on a linear model, complete on a Transformer classifier."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.models.classifier import AttentionClassifier
from attnlab.viz.integrated_gradients import (
    integrated_gradients,
    plot_token_salience,
    quadrature,
)
from tests.viz.explain_models import token_ids, transformer_classifier


def _linear_model(vocab=10, length=4, depth=3, classes=2, seed=0):
    """ids -> Embedding -> Flatten -> Dense: the logits are linear in the embeddings."""
    tf.keras.utils.set_random_seed(seed)
    ids = tf.keras.Input((length,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(vocab, depth, name="embed")(ids)
    logits = tf.keras.layers.Dense(classes, name="dense")(tf.keras.layers.Flatten()(x))
    return tf.keras.Model(ids, logits, name="linear")


@pytest.mark.parametrize("method, steps", [("gauss_legendre", 1), ("trapezoid", 2),
                                           ("gauss_legendre", 32)])
def test_linear_model_gives_x_minus_baseline_times_w(method, steps):
    model = _linear_model()
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32)
    table = model.get_layer("embed").embeddings.numpy().astype(np.float64)
    kernel = model.get_layer("dense").kernel.numpy().astype(np.float64)   # (T * D, C)
    baseline = np.array([0.5, -1.0, 2.0])                                 # one (D,) vector
    got = integrated_gradients(model, ids, baseline=baseline, target=[1, 0], steps=steps,
                               method=method)
    x = table[ids]
    for b, c in enumerate([1, 0]):
        w = kernel[:, c].reshape(4, 3)
        np.testing.assert_allclose(got.embedding_attributions[b], (x[b] - baseline) * w,
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got.attributions[b], ((x[b] - baseline) * w).sum(-1),
                                   rtol=1e-5, atol=1e-7)
    logits = model(ids).numpy()
    np.testing.assert_allclose(got.input_values, logits[[0, 1], [1, 0]], rtol=1e-6)
    np.testing.assert_array_equal(got.classes, [1, 0])
    assert np.all(got.relative_errors < 1e-4)


def test_completeness_on_a_two_layer_transformer_classifier():
    model = transformer_classifier(length=8, depth=16, layers=2)
    ids = token_ids(6, 8)
    logits = model(ids).numpy()
    got = integrated_gradients(model, ids, steps=32, batch_size=20)
    assert got.attributions.shape == (6, 8) and got.embedding_attributions.shape == (6, 8, 16)
    np.testing.assert_array_equal(got.classes, logits.argmax(-1))
    np.testing.assert_allclose(got.input_values, logits.max(-1), rtol=1e-5)
    # f(baseline): the same model with zero embeddings (positions still added).
    zero = tf.keras.Model(model.inputs, model.outputs)
    embed = model.get_layer("embedding")
    saved = embed.get_weights()
    embed.set_weights([np.zeros_like(saved[0])])
    want_base = zero(ids).numpy()[np.arange(6), got.classes]
    embed.set_weights(saved)
    np.testing.assert_allclose(got.baseline_values, want_base, rtol=1e-5, atol=1e-6)
    difference = got.input_values - got.baseline_values
    # Relative completeness where f(x) - f(baseline) is not near 0 (a meaningful check,
    # not 0 vs 0; which examples those are depends on the TensorFlow version's initializers),
    # and absolute completeness for the others.
    clear = np.abs(difference) > 1e-2
    assert clear.sum() >= 3, difference
    np.testing.assert_allclose(got.attributions.sum(-1)[clear], difference[clear], rtol=0.01)
    assert np.all(got.relative_errors[clear] < 0.01)
    np.testing.assert_allclose(got.attributions.sum(-1), difference,
                               atol=0.01 * np.abs(difference).max())
    np.testing.assert_allclose(got.attribution_sums, got.attributions.sum(-1))
    assert "call" not in vars(embed)
    # The same attributions batch by batch: rows do not interact.
    one = integrated_gradients(model, ids[2:], steps=32, batch_size=7)
    np.testing.assert_allclose(one.attributions[0], got.attributions[2], rtol=1e-4, atol=1e-6)


def test_few_steps_warn_about_completeness_and_more_steps_converge():
    model = transformer_classifier(length=6, depth=16, layers=2, seed=3)
    ids = token_ids(1, 6, seed=4)
    with pytest.warns(UserWarning, match="relative error"):
        coarse = integrated_gradients(model, ids, steps=2, method="trapezoid",
                                      completeness_tolerance=1e-9)
    fine = integrated_gradients(model, ids, steps=64, method="trapezoid")
    assert fine.relative_errors[0] < coarse.relative_errors[0]
    assert fine.relative_errors[0] < 0.01


def test_attnlab_classifier_with_padding_and_a_callable_target():
    tf.keras.utils.set_random_seed(0)
    model = AttentionClassifier(12, 3, embed_dim=8, attention="multi_head")
    ids = np.array([[3, 5, 7, 0], [2, 9, 4, 1]], np.int32)
    got = integrated_gradients(model, ids, target=lambda out: out[:, 2] - out[:, 0],
                               vocabulary=["<pad>"] + list("abcdefghijk"))
    logits = model(ids).numpy()
    np.testing.assert_allclose(got.input_values, logits[:, 2] - logits[:, 0], rtol=1e-5)
    assert got.classes is None and got.tokens[0] == ["c", "e", "g", "<pad>"]
    np.testing.assert_allclose(got.attribution_sums, got.input_values - got.baseline_values,
                               rtol=0.01)


def test_quadrature_rules_integrate_polynomials():
    for method, steps, degree in (("gauss_legendre", 3, 5), ("trapezoid", 2, 1)):
        points, weights = quadrature(method, steps)
        assert weights.sum() == pytest.approx(1.0)
        assert points.min() >= 0 and points.max() <= 1
        assert np.dot(weights, points ** degree) == pytest.approx(1.0 / (degree + 1))


def test_plot_token_salience_draws_the_attributions():
    model = _linear_model()
    ids = np.array([[1, 2, 3, 4]], np.int32)
    got = integrated_gradients(model, ids, steps=4, tokens=list("abcd"))
    fig = plot_token_salience(got)
    ax = fig.axes[0]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], got.attributions[0])
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcd")
    assert "class %d" % got.classes[0] in ax.get_title()
    fig = plot_token_salience(got.attributions, tokens=list("wxyz"))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("wxyz")


@pytest.mark.parametrize("arguments, error, message", [
    (dict(steps=0), ValueError, "steps must be a positive integer, got 0"),
    (dict(steps=1, method="trapezoid"), ValueError, "steps must be >= 2"),
    (dict(method="simpson"), ValueError, "method must be one of"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    (dict(baseline="ones"), ValueError, "baseline must be 'zeros' or an array"),
    (dict(baseline=np.full(3, np.nan)), ValueError, "baseline must be finite"),
    (dict(baseline=np.zeros((5, 3))), ValueError, r"baseline of shape \(5, 3\)"),
    (dict(target="cat"), TypeError, "target must be None"),
    (dict(target=7), ValueError, "target class 7 is out of range"),
    (dict(target=lambda out: tf.stop_gradient(out[:, 0])), ValueError,
     "does not depend on the output of embedding layer"),
    (dict(embedding_layer="dense_9"), ValueError, "embedding_layer 'dense_9' is not a layer"),
    (dict(embedding_layer=3), TypeError, "embedding_layer must be None"),
    (dict(completeness_tolerance=float("nan")), ValueError, "completeness_tolerance"),
])
def test_bad_arguments_are_named(arguments, error, message):
    model = _linear_model()
    with pytest.raises(error, match=message):
        integrated_gradients(model, np.array([[1, 2, 3, 4]], np.int32), **arguments)


def test_models_without_or_with_several_embeddings():
    plain = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))], name="plain")
    with pytest.raises(ValueError, match="'plain' has no tf.keras.layers.Embedding"):
        integrated_gradients(plain, np.ones((1, 3), np.float32))
    ids = tf.keras.Input((4,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(10, 3, name="a")(ids) + \
        tf.keras.layers.Embedding(10, 3, name="b")(ids)
    model = tf.keras.Model(ids, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(x)), name="two")
    with pytest.raises(ValueError, match="'two' has 2 Embedding layers"):
        integrated_gradients(model, np.ones((1, 4), np.int32))
    got = integrated_gradients(model, np.ones((1, 4), np.int32), embedding_layer="b", steps=2)
    assert got.attributions.shape == (1, 4)


def test_graph_mode_is_refused():
    model = _linear_model()
    ids = tf.constant([[1, 2, 3, 4]])
    with pytest.raises(RuntimeError, match="needs eager execution"):
        tf.function(lambda: integrated_gradients(model, ids))()


def test_hugging_face_model_with_dict_inputs_and_its_embedding_layer():
    from attnlab.models.hf_tiny import tiny_hf_model

    model, tokenizer = tiny_hf_model("bert")
    batch = dict(tokenizer(["the cat sat on the mat", "a dog"], padding=True,
                           return_tensors="tf"))

    def first_token(outputs):   # row-wise: one value per example from its [CLS] vector
        return tf.reduce_sum(outputs.last_hidden_state[:, 0, :4], axis=-1)

    # BERT's embedding output is layer-normalized: the zero baseline sits where the next
    # LayerNorm jumps (f(0) = 0, f(a x) = f(x) for a >> 1e-6), a spike no quadrature sees.
    # The embeddings of an all-[PAD] input are the baseline instead.
    pads = model.bert.embeddings(input_ids=tf.zeros_like(batch["input_ids"])).numpy()
    got = integrated_gradients(model, batch, embedding_layer=model.bert.embeddings,
                               baseline=pads, target=first_token, steps=32)
    want = first_token(model(batch)).numpy()
    np.testing.assert_allclose(got.input_values, want, rtol=1e-5, atol=1e-6)
    assert got.attributions.shape == batch["input_ids"].shape
    assert np.all(np.abs(got.input_values - got.baseline_values) > 1e-2)
    np.testing.assert_allclose(got.attribution_sums, got.input_values - got.baseline_values,
                               rtol=0.01)
    assert "call" not in vars(model.bert.embeddings)
