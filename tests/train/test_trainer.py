"""Trainer: same weights as model.fit, clipping and the NaN guard against NumPy, mixed precision."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from attnlab.train.trainer import NonFiniteLossError, Trainer

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 5)).astype(np.float32)
Y = RNG.normal(size=(48, 3)).astype(np.float32)


def _linear():
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(5,))])
    model.build((None, 5))
    return model


def _dataset(x=X, y=Y, batch=16):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_same_weights_as_keras_fit():
    model = _linear()
    reference = _linear()
    reference.set_weights(model.get_weights())
    reference.compile(tf.keras.optimizers.Adam(0.05), "mse")
    reference.fit(X, Y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    trainer = Trainer(model, tf.keras.optimizers.Adam(0.05), "mse", verbose=0)
    history = trainer.fit(_dataset(), epochs=3)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(trainer.step.numpy()) == 9 and len(history["loss"]) == 3


@pytest.mark.parametrize("known_length", [True, False])
def test_every_batch_once_with_a_short_last_batch_and_data_of_unknown_length(known_length):
    # The step reads its batch inside the graph: with a known number of batches the epoch
    # stops after them, otherwise at the end of the data; a short last batch is trained too.
    model = _linear()
    reference = _linear()
    reference.set_weights(model.get_weights())
    reference.compile(tf.keras.optimizers.Adam(0.05), "mse")
    reference.fit(X, Y, batch_size=20, epochs=2, shuffle=False, verbose=0)  # 20, 20, 8
    data = _dataset(batch=20)
    if not known_length:
        data = data.filter(lambda x, y: True)
        assert int(data.cardinality().numpy()) == tf.data.UNKNOWN_CARDINALITY
    trainer = Trainer(model, tf.keras.optimizers.Adam(0.05), "mse", verbose=0)
    history = trainer.fit(data, epochs=2)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(trainer.step.numpy()) == 6 and len(history["loss"]) == 2
    assert int(trainer.batch_in_epoch.numpy()) == 0


def test_clipping_against_a_numpy_gradient_step():
    model = _linear()
    w0, b0 = (v.astype(np.float64) for v in model.get_weights())
    trainer = Trainer(model, tf.keras.optimizers.SGD(1.0), "mse", clip_norm=0.1, verbose=0)
    trainer.fit(_dataset(batch=48), epochs=1)
    x, y = X.astype(np.float64), Y.astype(np.float64)
    pred = x @ w0 + b0
    d_pred = 2.0 * (pred - y) / (y.shape[0] * y.shape[1])
    gw, gb = x.T @ d_pred, d_pred.sum(0)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert norm > 0.1  # the clip is active
    scale = 0.1 / norm
    w1, b1 = model.get_weights()
    np.testing.assert_allclose(w1, w0 - gw * scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - gb * scale, rtol=1e-5, atol=1e-6)


def _poisoned(bad_batch=2):
    x = X.copy()
    x[bad_batch * 16] = np.nan
    return _dataset(x)


def test_nan_guard_stops_naming_the_step_without_applying_it(tmp_path):
    model = _linear()
    trainer = Trainer(model, tf.keras.optimizers.SGD(0.01), "mse", run_dir=tmp_path / "run",
                      verbose=0)
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \(epoch 1, batch 3\)"):
        trainer.fit(_poisoned(), epochs=1)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "step 3" in status["error"]
    assert "run failed at step 3" in (tmp_path / "run" / "train.log").read_text()


def test_nan_guard_skip_policy_skips_only_the_bad_step(tmp_path):
    model = _linear()
    reference = _linear()
    reference.set_weights(model.get_weights())
    trainer = Trainer(model, tf.keras.optimizers.SGD(0.01), "mse", nan_policy="skip",
                      run_dir=tmp_path / "run", verbose=0)
    trainer.fit(_poisoned(), epochs=1)
    assert int(trainer.skipped_steps.numpy()) == 1 and int(trainer.step.numpy()) == 3
    # Reference: the same two good batches through a plain SGD loop.
    Trainer(reference, tf.keras.optimizers.SGD(0.01), "mse", verbose=0).fit(
        _dataset(X[:32], Y[:32]), epochs=1)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert "skipped step 3 (epoch 1, batch 3)" in (tmp_path / "run" / "train.log").read_text()


def _root_error(y, pred):
    # sqrt((pred - y)^2): finite everywhere, its gradient 0 * inf = NaN where pred == y.
    return tf.reduce_mean(tf.sqrt(tf.square(pred - y)), axis=-1)


@pytest.mark.parametrize("embedding", [False, True])
def test_nan_guard_catches_a_nan_gradient_under_a_finite_loss(embedding):
    # Batch 2 predicts 0 whatever the weights (input 0, no bias; or an embedding row that
    # only batch 2 reads, zero at the start) against targets 0: the loss is 0, finite, and
    # every gradient NaN. With an embedding the table's gradient is an IndexedSlices.
    inputs = np.array([[1], [2], [0], [0], [3], [1]])
    targets = np.array([[1.0], [-2.0], [0.0], [0.0], [1.0], [3.0]], np.float32)
    if embedding:
        inputs = inputs.astype(np.int32)
        layers = [tf.keras.layers.Embedding(4, 2, embeddings_initializer="zeros",
                                            input_length=1),
                  tf.keras.layers.Flatten(), tf.keras.layers.Dense(1, use_bias=False)]
    else:
        inputs = inputs.astype(np.float32)
        layers = [tf.keras.layers.Dense(1, use_bias=False, input_shape=(1,))]
    model = tf.keras.Sequential(layers)
    model.build((None, 1))
    data = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(2)
    reference = tf.keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    trainer = Trainer(model, tf.keras.optimizers.SGD(0.01), _root_error, nan_policy="skip",
                      verbose=0)
    trainer.fit(data, epochs=1)
    assert int(trainer.skipped_steps.numpy()) == 1 and int(trainer.step.numpy()) == 3
    # Reference: batches 1 and 3 only, through the same loop.
    good = tf.data.Dataset.from_tensor_slices((inputs[[0, 1, 4, 5]], targets[[0, 1, 4, 5]]))
    Trainer(reference, tf.keras.optimizers.SGD(0.01), _root_error, verbose=0).fit(
        good.batch(2), epochs=1)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mixed_precision_uses_loss_scaling_and_float32_variables():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = tf.keras.Sequential([tf.keras.layers.Dense(8, activation="relu", input_shape=(5,)),
                                 tf.keras.layers.Dense(3, dtype="float32")])
    trainer = Trainer(model, tf.keras.optimizers.Adam(0.01), "mse", verbose=0)
    assert isinstance(trainer.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    history = trainer.fit(_dataset(), epochs=4)
    assert all(v.dtype == tf.float32 for v in model.weights)
    assert model.layers[0].compute_dtype == "float16"
    assert history["loss"][-1] < history["loss"][0]


def test_jit_compile_gives_the_same_weights():
    a, b = _linear(), _linear()
    b.set_weights(a.get_weights())
    Trainer(a, tf.keras.optimizers.SGD(0.1), "mse", verbose=0).fit(_dataset(), epochs=1)
    Trainer(b, tf.keras.optimizers.SGD(0.1), "mse", jit_compile=True, verbose=0).fit(
        _dataset(), epochs=1)
    for got, want in zip(b.get_weights(), a.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sigterm_request_checkpoints_and_resume_continues(tmp_path):
    model = _linear()
    trainer = Trainer(model, tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                      verbose=0)
    data = _dataset()

    def train(epoch, skip_batches=0):
        if epoch == 1 and skip_batches == 0:
            trainer.request_stop()  # as the SIGTERM handler does, before epoch 2
        return data.skip(skip_batches)

    trainer.fit(train, epochs=3)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] == 4
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-4.index")
    resumed = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                      verbose=0)
    resumed.fit(lambda epoch, skip_batches=0: data.skip(skip_batches), epochs=3)
    assert int(resumed.step.numpy()) == 9
    reference = _linear()
    reference.set_weights(model.get_weights())  # weights at the stop (step 4)
    # The rest of epoch 2 (batches 2-3), then epoch 3, in one uninterrupted loop.
    Trainer(reference, tf.keras.optimizers.SGD(0.1), "mse", verbose=0).fit(
        _dataset(X[16:], Y[16:]).concatenate(data), epochs=1)
    for got, want in zip(resumed.model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"


def test_bad_arguments_name_the_value():
    model = _linear()
    opt = tf.keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="nan_policy must be one of .* got 'ignore'"):
        Trainer(model, opt, "mse", nan_policy="ignore")
    with pytest.raises(ValueError, match="clip_norm must be a positive number or None, got -1"):
        Trainer(model, opt, "mse", clip_norm=-1)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer or None, "
                                         "got 0"):
        Trainer(model, opt, "mse", checkpoint_every=0)
    with pytest.raises(TypeError, match="model must be a tf.keras.Model, got 3"):
        Trainer(3, opt, "mse")
    with pytest.raises(TypeError, match="loss must be a Keras loss name"):
        Trainer(model, opt, 42)
    trainer = Trainer(model, opt, "mse", verbose=0)
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        trainer.fit(_dataset(), epochs=0)
    with pytest.raises(ValueError, match=r"a training batch must be \(x, y\) or \(x, y, "
                                         r"sample_weight\), got 1 items"):
        trainer.fit(tf.data.Dataset.from_tensor_slices(X).batch(8), epochs=1)


def test_restore_skips_a_corrupt_latest_checkpoint(tmp_path):
    """If the newest checkpoint's files are damaged, the one before it is restored."""
    model = _linear()
    trainer = Trainer(model, tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                      keep_checkpoints=3, verbose=0)
    trainer.fit(_dataset(), epochs=2)
    checkpoints = trainer.manager.checkpoints
    assert [os.path.basename(p) for p in checkpoints] == ["ckpt-3", "ckpt-6"]
    with open(checkpoints[-1] + ".index", "wb") as f:
        f.write(b"truncated")
    fresh = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                    verbose=0)
    fresh._build(_dataset())
    assert os.path.basename(fresh.restore()) == "ckpt-3"
    assert int(fresh.step.numpy()) == 3 and int(fresh.epoch.numpy()) == 1


def _damage(path, how):
    if how == "truncated-data":
        with open(path + ".data-00000-of-00001", "r+b") as f:
            f.truncate(7)
    elif how == "missing-data":
        os.remove(path + ".data-00000-of-00001")
    else:
        os.remove(path + ".index")


@pytest.mark.parametrize("how", ["truncated-data", "missing-data", "missing-index"])
def test_restore_skips_a_newest_checkpoint_cut_short_or_missing_and_says_why(tmp_path, how):
    trainer = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                      keep_checkpoints=3, verbose=0)
    trainer.fit(_dataset(), epochs=2)
    _damage(trainer.manager.checkpoints[-1], how)
    fresh = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                    verbose=0)
    fresh._build(_dataset())
    skipped = []
    assert os.path.basename(fresh.restore(skipped.append)) == "ckpt-3"
    assert int(fresh.step.numpy()) == 3
    assert len(skipped) == 1 and skipped[0].startswith("skipped checkpoint ckpt-6, it cannot "
                                                       "be restored ("), skipped


def test_no_restorable_checkpoint_raises_one_error_naming_each(tmp_path):
    from attnlab.train.checkpoints import CheckpointRestoreError

    trainer = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                      keep_checkpoints=3, verbose=0)
    trainer.fit(_dataset(), epochs=2)
    for path, how in zip(trainer.manager.checkpoints, ["truncated-data", "missing-index"]):
        _damage(path, how)
    fresh = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                    verbose=0)
    with pytest.raises(CheckpointRestoreError, match=r"no checkpoint of .*run.checkpoints could "
                                                     r"be restored; tried, newest first: "
                                                     r"ckpt-6 \(.*\); ckpt-3 \("):
        fresh.fit(_dataset(), epochs=2)
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("skipped checkpoint") == 2 and "CheckpointRestoreError" in log
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed"


def test_resume_of_a_complete_run_gives_the_last_epochs_logs_again(tmp_path):
    """A kill after the last checkpoint but before the caller used the logs loses nothing."""
    validation = _dataset(X[:16], Y[:16])
    trainer = Trainer(_linear(), tf.keras.optimizers.Adam(0.05), "mse", metrics=["mae"],
                      run_dir=tmp_path / "run", verbose=0)
    history = trainer.fit(_dataset(), epochs=2, validation=validation)
    fresh = Trainer(_linear(), tf.keras.optimizers.Adam(0.05), "mse", metrics=["mae"],
                    run_dir=tmp_path / "run", verbose=0)
    again = fresh.fit(_dataset(), epochs=2, validation=validation)
    assert fresh.completed and int(fresh.step.numpy()) == 6
    assert sorted(again) == sorted(history) == ["learning_rate", "loss", "mae", "val_loss",
                                                "val_mae"]
    for key, values in history.items():
        assert again[key] == [pytest.approx(values[-1], rel=1e-6)], key
    assert "training was already complete at step 6" in (tmp_path / "run" /
                                                          "train.log").read_text()


@pytest.mark.parametrize("state", ["garbage", "missing"])
def test_restore_finds_the_checkpoints_when_their_state_file_is_garbage_or_lost(tmp_path,
                                                                              state):
    """TensorFlow then reports no checkpoint: a resume must not start the run over."""
    trainer = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                      keep_checkpoints=3, verbose=0)
    trainer.fit(_dataset(), epochs=2)
    index = tmp_path / "run" / "checkpoints" / "checkpoint"
    if state == "garbage":
        index.write_bytes(b"\x00\x01 not a text proto {{")
    else:
        index.unlink()
    _damage(trainer.manager.checkpoints[-1], "truncated-data")
    fresh = Trainer(_linear(), tf.keras.optimizers.SGD(0.1), "mse", run_dir=tmp_path / "run",
                    verbose=0)
    fresh._build(_dataset())
    skipped = []
    assert os.path.basename(fresh.restore(skipped.append)) == "ckpt-3"
    assert int(fresh.step.numpy()) == 3 and len(skipped) == 1
