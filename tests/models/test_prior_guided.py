import numpy as np
import pytest
import tensorflow as tf

from attnlab.models import AttentionClassifier, PriorGuidedClassifier, term_weight_prior

VOCAB, CLASSES, DIM, HEADS = 12, 3, 8, 2
IDS = np.array([[3, 5, 7, 11, 0, 0], [1, 2, 3, 4, 5, 6], [9, 0, 0, 0, 0, 0]], np.int32)


def _prior(seed=0):
    prior = np.random.default_rng(seed).normal(size=VOCAB) * 2.0
    prior[0] = 0.0
    return prior


def _model(prior, **kwargs):
    model = PriorGuidedClassifier(VOCAB, CLASSES, prior, embed_dim=DIM, num_heads=HEADS,
                                  **kwargs)
    model(IDS)
    return model


def _numpy_weights(model, ids, prior):
    """(B, H, T, S) attention weights in float64 NumPy: softmax(q k^T / sqrt(dk) + scale *
    prior[key id]) over the real keys."""
    x = model.embedding.get_weights()[0].astype(np.float64)[ids]
    att = model.attention
    wq, bq = (w.astype(np.float64) for w in att._query_dense.get_weights())
    wk, bk = (w.astype(np.float64) for w in att._key_dense.get_weights())
    q = np.einsum("btd,dhk->bhtk", x, wq) + bq[np.newaxis, :, np.newaxis, :]
    k = np.einsum("bsd,dhk->bhsk", x, wk) + bk[np.newaxis, :, np.newaxis, :]
    scores = np.einsum("bhtk,bhsk->bhts", q, k) / np.sqrt(q.shape[-1])
    scale = float(model.prior_scale.numpy())
    scores = scores + scale * prior[ids][:, np.newaxis, np.newaxis, :]
    keep = (ids != 0)[:, np.newaxis, np.newaxis, :]
    scores = np.where(keep, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=-1, keepdims=True)


def test_weights_match_numpy_reference_with_prior():
    prior = _prior()
    model = _model(prior)
    model.prior_scale.assign(0.7)
    _, extra = model(IDS, return_attention=True)
    np.testing.assert_allclose(extra["attention"].numpy(), _numpy_weights(model, IDS, prior),
                               atol=1e-5)
    np.testing.assert_allclose(extra["prior"].numpy(), 0.7 * prior[IDS], atol=1e-6)


def test_zero_prior_is_the_plain_multi_head_classifier():
    plain = AttentionClassifier(VOCAB, CLASSES, embed_dim=DIM, attention="multi_head",
                                num_heads=HEADS)
    plain(IDS)
    guided = _model(np.zeros(VOCAB), learn_prior_scale=False)
    for name in ("embedding", "attention", "classify"):
        getattr(guided, name).set_weights(getattr(plain, name).get_weights())
    np.testing.assert_allclose(guided(IDS).numpy(), plain(IDS).numpy(), atol=1e-6)


def test_a_strong_prior_draws_the_attention_to_its_token():
    prior = np.zeros(VOCAB)
    prior[5] = 30.0
    _, extra = _model(prior)(IDS[:1], return_attention=True)
    np.testing.assert_array_less(0.999, extra["attention"].numpy()[0, :, :4, 1])


def test_fit_learns_the_prior_scale_only_when_asked():
    labels = np.array([0, 1, 2])
    for learn in (True, False):
        model = _model(_prior(), learn_prior_scale=learn)
        model.compile(tf.keras.optimizers.Adam(0.05),
                      tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(IDS, labels, epochs=3, verbose=0)
        moved = abs(float(model.prior_scale.numpy()) - 1.0) > 1e-4
        assert moved == learn


def test_save_and_load_keep_prior_and_predictions(tmp_path):
    prior = _prior(1)
    model = _model(prior)
    model.prior_scale.assign(1.3)
    path = str(tmp_path / "model")
    model.save(path, save_format="tf")
    restored = tf.keras.models.load_model(path)
    np.testing.assert_allclose(restored(IDS).numpy(), model(IDS).numpy(), atol=1e-6)
    clone = PriorGuidedClassifier.from_config(model.get_config())
    np.testing.assert_allclose(clone.token_prior, prior)


@pytest.mark.parametrize("kwargs, message", [
    ({"token_prior": np.zeros(VOCAB - 1)}, "one value per token id"),
    ({"token_prior": np.full(VOCAB, np.nan)}, "finite"),
    ({"token_prior": np.zeros(VOCAB), "embed_dim": 9}, "divisible"),
    ({"token_prior": np.zeros(VOCAB), "pooling": "sum"}, "pooling"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PriorGuidedClassifier(VOCAB, CLASSES, **kwargs)


def test_term_weight_prior_from_counts():
    ids = np.array([[1, 2, 0], [1, 3, 3], [4, 2, 0]])
    labels = np.array([0, 1, 0])
    prior = term_weight_prior(ids, labels, vocab_size=6, num_classes=2, smoothing=1.0)
    # token 1: labels {0, 1} -> (2, 2); token 2: {0, 0} -> (3, 1); token 3 twice in class 1
    # -> (1, 3); token 4: (2, 1); token 5 unseen; padding 0 is neutral.
    expected = [0.0, np.log(2 * 2 / 4), np.log(2 * 3 / 4), np.log(2 * 3 / 4),
                np.log(2 * 2 / 3), 0.0]
    np.testing.assert_allclose(prior, expected)


@pytest.mark.parametrize("ids, labels, message", [
    (np.zeros((2, 3), int), np.zeros(3, int), "ids"),
    (np.full((1, 2), 9), np.zeros(1, int), "token ids"),
    (np.ones((1, 2), int), np.array([5]), "labels"),
])
def test_term_weight_prior_refuses_bad_input(ids, labels, message):
    with pytest.raises(ValueError, match=message):
        term_weight_prior(ids, labels, vocab_size=6, num_classes=2)


def test_mixed_float16_runs_and_matches_float32():
    # The prior and its scale stay float32 under a float16 policy.
    reference = _model(_prior(), learn_prior_scale=True)
    expected = reference(IDS).numpy()
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = PriorGuidedClassifier(VOCAB, CLASSES, _prior(), embed_dim=DIM, num_heads=HEADS,
                                     learn_prior_scale=True)
        half(IDS)
        half.set_weights(reference.get_weights())
        got = half(IDS).numpy()
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-2)
