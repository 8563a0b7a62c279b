"""HierarchicalAttentionNetwork: shapes, padding at both levels, saving, arguments, and that it
learns the documents task with its sentence attention on the key sentence."""
import time

import numpy as np
import pytest
import tensorflow as tf

from attnlab.data.documents import make_documents
from attnlab.models.hierarchical import HierarchicalAttentionNetwork
from attnlab.train.config import validate_config
from attnlab.train.runner import build_model, evaluate_task

SMALL = dict(embed_dim=8, word_units=4, sentence_units=5, attention_units=6)
# Two documents of 3 x 4: the second sentence of document 1 is all padding.
IDS = np.array([[[5, 6, 7, 0], [8, 9, 0, 0], [3, 0, 0, 0]],
                [[4, 4, 5, 6], [0, 0, 0, 0], [7, 8, 9, 0]]], np.int32)


def _run(model, ids):
    logits, weights = model(ids, return_attention=True)
    return logits.numpy(), weights["word"].numpy(), weights["sentence"].numpy()


def test_shapes_and_weights_are_distributions_over_real_positions():
    model = HierarchicalAttentionNetwork(12, 3, **SMALL)
    logits, word, sentence = _run(model, IDS)
    assert logits.shape == (2, 3) and word.shape == (2, 3, 4) and sentence.shape == (2, 3)
    assert model(IDS).dtype == tf.float32
    words, sentences = IDS != 0, (IDS != 0).any(-1)
    assert np.all(word[~words] == 0.0) and np.all(sentence[~sentences] == 0.0)
    np.testing.assert_allclose(word.sum(-1)[sentences], 1.0, atol=1e-6)
    np.testing.assert_allclose(sentence.sum(-1), 1.0, atol=1e-6)
    assert sentence[1, 1] == 0.0


def test_padding_at_either_level_does_not_change_the_outputs():
    model = HierarchicalAttentionNetwork(12, 3, **SMALL)
    logits, word, sentence = _run(model, IDS)
    # More padded words per sentence and more padded sentences per document.
    wider = np.zeros((2, 5, 7), np.int32)
    wider[:, :3, :4] = IDS
    wide_logits, wide_word, wide_sentence = _run(model, wider)
    np.testing.assert_allclose(wide_logits, logits, atol=1e-5)
    np.testing.assert_allclose(wide_word[:, :3, :4], word, atol=1e-6)
    np.testing.assert_allclose(wide_sentence[:, :3], sentence, atol=1e-6)
    assert np.all(wide_word[:, :, 4:] == 0) and np.all(wide_sentence[:, 3:] == 0)
    # The empty sentence inside document 1 counts as absent: dropping it changes nothing.
    without = np.zeros_like(IDS)
    without[1, :2] = IDS[1, [0, 2]]
    short_logits, short_word, short_sentence = _run(model, without)
    np.testing.assert_allclose(short_logits[1], logits[1], atol=1e-5)
    np.testing.assert_allclose(short_sentence[1, :2], sentence[1, [0, 2]], atol=1e-6)
    np.testing.assert_allclose(short_word[1, :2], word[1, [0, 2]], atol=1e-6)


def test_a_fully_padded_document_gives_finite_logits_and_zero_weights():
    model = HierarchicalAttentionNetwork(12, 3, **SMALL)
    logits, word, sentence = _run(model, np.zeros((1, 2, 3), np.int32))
    assert np.isfinite(logits).all() and not word.any() and not sentence.any()


def test_config_round_trip_and_saving_keep_the_predictions(tmp_path):
    model = HierarchicalAttentionNetwork(12, 3, **SMALL)
    expected = model(IDS).numpy()
    clone = HierarchicalAttentionNetwork.from_config(model.get_config())
    clone(IDS)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(IDS).numpy(), expected, atol=1e-6)
    assert clone.get_config() == model.get_config()

    # Weights in both formats (the Trainer's checkpoints use the TensorFlow one); a full
    # SavedModel export works too but traces every GRU call signature, too slow for a unit test.
    for weights_path in (str(tmp_path / "han.h5"), str(tmp_path / "ckpt" / "han")):
        model.save_weights(weights_path)
        fresh = HierarchicalAttentionNetwork.from_config(model.get_config())
        fresh(IDS)
        fresh.load_weights(weights_path)
        np.testing.assert_allclose(fresh(IDS).numpy(), expected, atol=1e-6)
        _, weights = fresh(IDS, return_attention=True)
        np.testing.assert_allclose(weights["sentence"].numpy(), _run(model, IDS)[2], atol=1e-6)


def test_mixed_precision_keeps_float32_variables_and_logits():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = HierarchicalAttentionNetwork(12, 3, **SMALL)
    logits, word, sentence = _run(model, IDS)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert all(v.dtype == tf.float32 for v in model.weights)
    np.testing.assert_allclose(sentence.sum(-1), 1.0, atol=1e-3)


def test_bad_arguments_and_inputs_name_the_value():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        HierarchicalAttentionNetwork(10, 0)
    with pytest.raises(ValueError, match="word_units must be a positive integer, got -1"):
        HierarchicalAttentionNetwork(10, 2, word_units=-1)
    with pytest.raises(ValueError, match="attention_units must be a positive integer, got 1.5"):
        HierarchicalAttentionNetwork(10, 2, attention_units=1.5)
    model = HierarchicalAttentionNetwork(10, 2, **SMALL)
    with pytest.raises(ValueError, match=r"token ids of shape \(B, S, T\).*got int32 \(2, 4\)"):
        model(np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"token ids of shape \(B, S, T\).*got float32"):
        model(np.ones((2, 3, 4), np.float32))


def test_config_names_the_han_for_the_documents_task_and_nothing_else():
    config = validate_config({
        "task": {"name": "documents", "n_train": 16, "n_val": 4, "n_test": 4,
                 "num_classes": 3, "max_sentences": 4, "max_words": 5},
        "model": {"name": "han", "embed_dim": 8, "word_units": 4},
        "train": {"epochs": 1, "batch_size": 8}})
    assert config["model"] == {"name": "han", "embed_dim": 8, "word_units": 4,
                               "sentence_units": 32, "attention_units": 32}
    task = make_documents(**{k: v for k, v in config["task"].items() if k != "name"})
    model = build_model(config, task)
    assert isinstance(model, HierarchicalAttentionNetwork)
    assert model.vocab_size == len(task.source_vocab) and model.num_classes == 3
    x, y = next(iter(task.dataset("train", 8)))
    assert model(x).shape == (8, 3)
    classifier = dict(config, model={"name": "classifier"})
    with pytest.raises(ValueError, match="'classifier' does not fit the classification task "
                                         "'documents' \\(use 'han'\\)"):
        build_model(validate_config(classifier), task)
    with pytest.raises(ValueError, match="task.name: unknown task 'document'"):
        validate_config(dict(config, task={"name": "document"}))


def test_learns_the_documents_task_and_attends_to_the_key_sentence():
    """Short training on a small documents task (the first epoch is mostly tracing)."""
    started = time.time()
    task = make_documents(seed=0, n_train=800, n_val=20, n_test=200, num_classes=3,
                          num_filler=20, num_distractors=3, min_sentences=2, max_sentences=5,
                          min_words=2, max_words=6)
    model = HierarchicalAttentionNetwork(len(task.source_vocab), 3, embed_dim=16,
                                         word_units=16, sentence_units=16, attention_units=16)
    model.compile(tf.keras.optimizers.Adam(0.01),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, _ = task.arrays("train")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    config = validate_config({"task": {"name": "documents"}, "model": {"name": "han"}})
    metrics = evaluate_task(model, task, config)
    _, weights = model(task.arrays("test")[0], training=False, return_attention=True)
    key = task.meta["test"]["key_sentence"]
    on_key = weights["sentence"].numpy()[np.arange(len(key)), key]
    print("HAN integration: %.1f s, accuracy %.3f, mass on the key sentence %.3f (uniform "
          "%.3f), documents with > half on it %.3f"
          % (time.time() - started, metrics["test_accuracy"],
             metrics["test_attention_on_key_sentence"],
             metrics["test_uniform_attention_on_key_sentence"], np.mean(on_key > 0.5)))
    assert metrics["test_accuracy"] >= 0.9  # chance is 1/3
    assert metrics["test_attention_on_key_sentence"] == pytest.approx(on_key.mean(), abs=1e-6)
    assert metrics["test_attention_on_key_sentence"] >= 0.6
    assert np.mean(on_key > 0.5) >= 0.55
