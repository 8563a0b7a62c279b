"""RunLog: the human-readable train.log of a run folder."""
import os
import time

import tensorflow as tf

from attnlab.train.observers.format_metrics import format_metrics
from attnlab.train.observers.run_observer import RunObserver


class RunLog(RunObserver):
    """Appends to RUN/train.log: start or resume, one line per epoch, stop, failure.

    Args:
        run: the RunDir to write.

    Example:
        >>> model.fit(data, epochs=3, callbacks=[RunLog(RunDir("runs/demo"))])
    """

    def __init__(self, run):
        super().__init__()
        self.run = run
        self._resumed_from = None
        self._epoch = 0
        self._epoch_started = time.time()

    def on_run_resume(self, checkpoint_path):
        self._resumed_from = checkpoint_path

    def on_train_begin(self, logs=None):
        if self._resumed_from:
            self.run.log("resumed from %s at step %d (epoch %d, %d batches done)" % (
                os.path.basename(self._resumed_from), self.global_step, self.epochs_done + 1,
                self.batches_done))
        else:
            self.run.log("started (%d epochs)" % self.params["epochs"])
        self._resumed_from = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.run.log("epoch %d/%d step %d %s time %.1fs" % (
            epoch + 1, self.params["epochs"], self.global_step, format_metrics(logs or {}),
            time.time() - self._epoch_started))

    def on_train_end(self, logs=None):
        if self.model.stop_training:
            # The Trainer saved a checkpoint just before: name it, for `--resume`.
            path = tf.train.latest_checkpoint(self.run.checkpoint_dir)
            self.run.log("stopped by request at epoch %d step %d (checkpoint %s)"
                         % (self._epoch + 1, self.global_step, os.path.basename(path or "-")))

    def on_run_message(self, message):
        self.run.log(message)

    def on_run_failure(self, error):
        self.run.log("run failed at step %d: %s: %s"
                     % (self.global_step, type(error).__name__, error))
