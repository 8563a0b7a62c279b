"""Run observers: model.fit with them writes the run folder the Trainer writes for the same run."""
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from attnlab.data.trigger import make_trigger
from attnlab.models.classifier import AttentionClassifier
from attnlab.train.observers import (
    AttentionSnapshots,
    RunObserver,
    StopOnSignal,
    fit_observed,
    run_folder_observers,
)
from attnlab.train.trainer import Trainer
from attnlab.viz.snapshots import load_attention_snapshots

EPOCHS = 2


def _task():
    return make_trigger(seed=0, n_train=64, n_val=16, n_test=16, num_filler=8, min_length=4,
                        max_length=8)


def _model(task):
    tf.keras.utils.set_random_seed(3)
    model = AttentionClassifier(len(task.source_vocab), task.num_classes, embed_dim=8)
    model(task.arrays("train")[0][:2])
    return model


def _probe(task):
    x = task.arrays("validation")[0][:2]
    tokens = [[task.source_vocab.tokens[i] for i in row] for row in x]
    return x, tokens, tokens


def _loss():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _status(folder):
    return json.loads((folder / "status.json").read_text())


def _epoch_lines(folder):
    return [line.split(" ", 2)[2] for line in (folder / "train.log").read_text().splitlines()
            if " epoch " in line]


def _metric(line, name):
    words = line.split()
    return float(words[words.index(name) + 1])


def test_model_fit_with_the_run_folder_observers_writes_what_the_trainer_writes(tmp_path):
    task = _task()
    train = task.dataset("train", 16)
    validation = task.dataset("validation", 16)
    by_trainer, by_fit = _model(task), _model(task)
    by_fit.set_weights(by_trainer.get_weights())
    trainer = Trainer(by_trainer, tf.keras.optimizers.SGD(0.5), _loss(), metrics=["accuracy"],
                      run_dir=tmp_path / "trainer", probe=_probe(task), verbose=0)
    trainer.fit(train, EPOCHS, validation=validation)
    by_fit.compile(tf.keras.optimizers.SGD(0.5), _loss(), metrics=["accuracy"])
    fit_observed(by_fit, train, epochs=EPOCHS, validation_data=validation, verbose=0,
                 callbacks=run_folder_observers(tmp_path / "fit", probe=_probe(task)))

    want, got = _status(tmp_path / "trainer"), _status(tmp_path / "fit")
    assert got["state"] == want["state"] == "finished"
    assert got["epoch"] == want["epoch"] == EPOCHS and got["step"] == want["step"] == 8
    assert got["pid"] == want["pid"] == os.getpid() and got["error"] is want["error"] is None
    # Keras' logs have no learning rate; every metric they share agrees.
    assert set(got["metrics"]) == set(want["metrics"]) - {"learning_rate"}
    for key, value in got["metrics"].items():
        np.testing.assert_allclose(value, want["metrics"][key], rtol=1e-4, err_msg=key)

    want_lines, got_lines = _epoch_lines(tmp_path / "trainer"), _epoch_lines(tmp_path / "fit")
    assert [line.split()[:4] for line in got_lines] == \
        [line.split()[:4] for line in want_lines] == [["epoch", "1/2", "step", "4"],
                                                       ["epoch", "2/2", "step", "8"]]
    for got_line, want_line in zip(got_lines, want_lines):
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(_metric(got_line, name), _metric(want_line, name),
                                       rtol=1e-3, err_msg=name)
    assert "started (2 epochs)" in (tmp_path / "fit" / "train.log").read_text()

    want_snaps = load_attention_snapshots(str(tmp_path / "trainer"))
    got_snaps = load_attention_snapshots(str(tmp_path / "fit"))
    assert [(s.step, s.epoch) for s in got_snaps] == [(s.step, s.epoch) for s in want_snaps] \
        == [(0, 0), (4, 1), (8, 2)]
    for got_snap, want_snap in zip(got_snaps, want_snaps):
        assert got_snap.query_tokens == want_snap.query_tokens
        for name, weights in want_snap.weights.items():
            np.testing.assert_allclose(got_snap.weights[name], weights, rtol=1e-4, atol=1e-5)
    for folder in ("trainer", "fit"):
        assert os.listdir(str(tmp_path / folder / "tb"))


class _Raise(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("boom at the end of epoch %d" % (epoch + 1))


def test_fit_observed_reports_a_failure_to_the_observers(tmp_path):
    task = _task()
    model = _model(task)
    model.compile(tf.keras.optimizers.SGD(0.5), _loss())
    with pytest.raises(RuntimeError, match="boom"):
        fit_observed(model, task.dataset("train", 16), epochs=EPOCHS, verbose=0,
                     callbacks=run_folder_observers(tmp_path / "run") + [_Raise()])
    status = _status(tmp_path / "run")
    assert status["state"] == "failed" and status["step"] == 4
    assert status["error"] == "RuntimeError: boom at the end of epoch 1"
    assert "run failed at step 4: RuntimeError: boom" in \
        (tmp_path / "run" / "train.log").read_text()


class _SigtermAt(tf.keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_model_fit_and_marks_the_run_stopped(tmp_path):
    task = _task()
    model = _model(task)
    model.compile(tf.keras.optimizers.SGD(0.5), _loss())
    before = signal.getsignal(signal.SIGTERM)
    fit_observed(model, task.dataset("train", 16), epochs=EPOCHS, verbose=0,
                 callbacks=[StopOnSignal()] + run_folder_observers(tmp_path / "run") +
                 [_SigtermAt(1)])
    assert signal.getsignal(signal.SIGTERM) is before
    assert int(model.optimizer.iterations.numpy()) == 2
    status = _status(tmp_path / "run")
    assert status["state"] == "stopped" and status["step"] == 2
    assert "stopped by request at epoch 1 step 2 (checkpoint -)" in \
        (tmp_path / "run" / "train.log").read_text()


def test_trainer_passes_its_counters_and_the_run_hooks_to_callbacks(tmp_path):
    task = _task()
    heard = []

    class Recorder(RunObserver):
        def on_train_begin(self, logs=None):
            heard.append(("begin", self.global_step, self.epochs_done))

        def on_epoch_end(self, epoch, logs=None):
            heard.append(("epoch", epoch, self.global_step, sorted(logs)))

        def on_train_end(self, logs=None):
            heard.append(("end", self.global_step, self.model.stop_training))

    trainer = Trainer(_model(task), tf.keras.optimizers.SGD(0.5), _loss(), verbose=0)
    trainer.fit(task.dataset("train", 16), EPOCHS, callbacks=[Recorder()])
    assert heard == [("begin", 0, 0), ("epoch", 0, 4, ["learning_rate", "loss"]),
                     ("epoch", 1, 8, ["learning_rate", "loss"]), ("end", 8, False)]


def test_bad_snapshot_interval_names_the_value(tmp_path):
    with pytest.raises(ValueError, match="every must be a positive integer or None, got 0"):
        AttentionSnapshots(str(tmp_path), None, every=0)


def test_a_functional_model_is_snapshotted_through_capture_attention(tmp_path):
    # A functional model has no return_attention argument: its attention layer's own
    # weights are read during the probe call and equal those the layer returns itself.
    from attnlab.layers import MultiHeadAttention

    tokens = tf.keras.Input(shape=(5,), dtype="int32")
    x = tf.keras.layers.Embedding(7, 8)(tokens)
    attention = MultiHeadAttention(num_heads=2, key_dim=4, name="attention")
    pooled = tf.keras.layers.GlobalAveragePooling1D()(attention(x, x))
    model = tf.keras.Model(tokens, tf.keras.layers.Dense(2)(pooled))
    ids = np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], np.int32)
    labels = [list("abcde"), list("edcba")]
    trainer = Trainer(model, tf.keras.optimizers.SGD(0.1), _loss(), run_dir=str(tmp_path),
                      verbose=0, probe=(ids, labels, labels), attention_summaries=False)
    trainer.fit(tf.data.Dataset.from_tensor_slices((ids, np.array([0, 1]))).batch(2), epochs=1)
    snapshots = load_attention_snapshots(str(tmp_path))
    assert [s.epoch for s in snapshots] == [0, 1]
    embedded = model.layers[1](ids)
    _, expected = attention(embedded, embedded, return_attention_scores=True)
    np.testing.assert_allclose(snapshots[-1].weights["attention"], expected.numpy(), atol=1e-6)
