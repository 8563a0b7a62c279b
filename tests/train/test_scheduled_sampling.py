import json

import numpy as np
import pytest
import tensorflow as tf

from attnlab.train.config import ConfigError, validate_config
from attnlab.train.run_dir import RunDir
from attnlab.train.runner import run_training
from attnlab.train.scheduled_sampling import ScheduledSampling

VOCAB = 7


class FixedGuess(tf.keras.Model):
    """Predicts token (input + 1) mod VOCAB at every position: a known, checkable guess."""

    def call(self, inputs, training=None):
        return tf.one_hot((inputs["target_in"] + 1) % VOCAB, VOCAB) * 5.0


def _batch():
    target_in = np.array([[1, 4, 5, 6, 3, 0, 0], [1, 2, 2, 3, 4, 5, 6]], np.int32)
    return {"source": tf.zeros([2, 3], tf.int32), "target_in": tf.constant(target_in)}


def test_rate_ramps_linearly_to_the_maximum():
    sampling = ScheduledSampling(0.6, ramp_epochs=3)
    got = [float(sampling.rate(tf.constant(e, tf.int64))) for e in range(5)]
    np.testing.assert_allclose(got, [0.2, 0.4, 0.6, 0.6, 0.6], rtol=1e-6)


def test_mixing_matches_a_numpy_reference_with_the_same_noise():
    sampling = ScheduledSampling(0.5, ramp_epochs=1, seed=3)
    batch = _batch()
    got = sampling(FixedGuess(), batch, tf.constant(0, tf.int64),
                   tf.constant(11, tf.int64))["target_in"].numpy()
    gold = batch["target_in"].numpy()
    noise = tf.random.stateless_uniform(gold.shape, seed=tf.constant([3, 11], tf.int64)).numpy()
    guess = (gold + 1) % VOCAB
    expected = gold.copy()
    for b in range(gold.shape[0]):
        for t in range(1, gold.shape[1]):
            if gold[b, t] != 0 and noise[b, t] < 0.5:
                expected[b, t] = guess[b, t - 1]
    np.testing.assert_array_equal(got, expected)
    assert (got != gold).any() and (got == gold).any()


def test_full_rate_replaces_every_input_but_the_first_and_padding():
    sampling = ScheduledSampling(1.0, ramp_epochs=1)
    batch = _batch()
    got = sampling(FixedGuess(), batch, tf.constant(0, tf.int64),
                   tf.constant(0, tf.int64))["target_in"].numpy()
    gold = batch["target_in"].numpy()
    shifted = np.concatenate([gold[:, :1], ((gold + 1) % VOCAB)[:, :-1]], axis=1)
    np.testing.assert_array_equal(got, np.where(gold == 0, 0, shifted))
    np.testing.assert_array_equal(got[:, 0], gold[:, 0])


def test_noise_depends_on_the_step_only_so_resumed_runs_draw_the_same():
    sampling = ScheduledSampling(0.5, ramp_epochs=1)
    batch = _batch()
    step = tf.constant(5, tf.int64)
    first = sampling(FixedGuess(), batch, tf.constant(0, tf.int64), step)["target_in"]
    again = sampling(FixedGuess(), batch, tf.constant(0, tf.int64), step)["target_in"]
    np.testing.assert_array_equal(first.numpy(), again.numpy())


@pytest.mark.parametrize("max_rate", [0, 1.5, -0.2, True, "half"])
def test_bad_max_rate_is_refused(max_rate):
    with pytest.raises(ValueError, match="max_rate must be a number in \\(0, 1\\], got %r"
                       % (max_rate,)):
        ScheduledSampling(max_rate, ramp_epochs=2)


@pytest.mark.parametrize("ramp_epochs", [0, -1, 2.5])
def test_bad_ramp_is_refused(ramp_epochs):
    with pytest.raises(ValueError, match="ramp_epochs must be a positive integer, got %r"
                       % (ramp_epochs,)):
        ScheduledSampling(0.5, ramp_epochs=ramp_epochs)


def test_inputs_without_decoder_key_are_refused():
    with pytest.raises(ValueError, match="key 'target_in'.*\\['source'\\]"):
        ScheduledSampling(0.5, 1)(FixedGuess(), {"source": tf.zeros([1, 2])}, 0, 0)


TINY_SEQ2SEQ = {
    "task": {"name": "reverse", "seed": 0, "n_train": 64, "n_val": 16, "n_test": 16,
             "num_symbols": 5, "min_length": 2, "max_length": 4},
    "model": {"name": "rnn_seq2seq", "embed_dim": 8, "units": 16},
    "train": {"epochs": 2, "batch_size": 16, "verbose": 0, "scheduled_sampling": 0.5},
    "eval": {"probe_size": 2},
}


def test_config_runs_a_seq2seq_training_with_scheduled_sampling(tmp_path):
    config = validate_config(TINY_SEQ2SEQ)
    metrics = run_training(config, RunDir(str(tmp_path / "run")))
    assert np.isfinite(metrics["loss"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["step"] == 8


def test_config_refuses_rates_above_one_and_classification_tasks(tmp_path):
    bad = dict(TINY_SEQ2SEQ, train=dict(TINY_SEQ2SEQ["train"], scheduled_sampling=1.5))
    with pytest.raises(ConfigError, match="train.scheduled_sampling: expected a rate"):
        validate_config(bad)
    classify = validate_config({
        "task": {"name": "trigger", "n_train": 32, "n_val": 8, "n_test": 8, "num_filler": 8,
                 "max_length": 8},
        "model": {"name": "classifier", "embed_dim": 8},
        "train": {"epochs": 1, "batch_size": 16, "verbose": 0, "scheduled_sampling": 0.5}})
    with pytest.raises(ValueError, match="only seq2seq tasks.*'trigger'"):
        run_training(classify, RunDir(str(tmp_path / "run")))
