"""A small deterministic training run used by the kill/resume tests (run as a subprocess).

Usage: python resume_worker.py RUN_DIR OUT_NPZ [PAUSE_AT_STEP]

Trains a tiny classifier for 3 epochs with a checkpoint at every step, resuming from
RUN_DIR's latest checkpoint, and saves the final weights to OUT_NPZ. With PAUSE_AT_STEP,
the checkpoint of that step stops (prints "paused" to RUN_DIR/paused) after its files are
written and before the checkpoint index names it, so a test can SIGKILL it mid-save.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from attnlab.data.trigger import make_trigger  # noqa: E402
from attnlab.train.trainer import Trainer  # noqa: E402

EPOCHS = 3
BATCH = 16
# Seconds slept after each training step: 60 steps then take about 2 s, longer than the
# tests' kill delays (up to 0.8 s after the first checkpoint) on any machine; without it
# a fast machine finished the whole run in 0.3 s, before the kill.
STEP_PACE_S = 0.03


class StepPace(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(STEP_PACE_S)


def build(run_dir):
    tf.keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    task = make_trigger(seed=0, n_train=320, n_val=32, n_test=32, num_filler=20,
                        min_length=6, max_length=10)
    model = tf.keras.Sequential([
        tf.keras.layers.Embedding(len(task.source_vocab), 16),
        tf.keras.layers.GlobalAveragePooling1D(),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(task.num_classes),
    ])
    trainer = Trainer(model, tf.keras.optimizers.Adam(3e-3),
                      tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], run_dir=run_dir, checkpoint_every=1,
                      keep_checkpoints=2, seed=3, verbose=0)
    return task, trainer


def pause_before_index(run_dir, step):
    """Hold the save of checkpoint `step` between its data files and the index update."""
    original = tf.train.CheckpointManager._record_state

    def record_state(self):
        if self.latest_checkpoint and self.latest_checkpoint.endswith("-%d" % step):
            with open(os.path.join(run_dir, "paused"), "w") as f:
                f.write("paused")
            time.sleep(600)
        return original(self)

    tf.train.CheckpointManager._record_state = record_state


def main(run_dir, out, pause_at=None):
    if pause_at is not None:
        pause_before_index(run_dir, int(pause_at))
    task, trainer = build(run_dir)
    trainer.fit(task.train_fn(BATCH, seed=11), epochs=EPOCHS,
                validation=task.dataset("validation", 32), callbacks=[StepPace()])
    np.savez(out, *trainer.model.get_weights(), step=int(trainer.step.numpy()),
             loss=trainer.history.get("loss", [np.nan])[-1] if trainer.history else np.nan)


if __name__ == "__main__":
    main(*sys.argv[1:])
