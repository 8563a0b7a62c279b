"""ProgressBar: the loss on a Keras progress bar, and an epoch line when stdout is a file."""
import sys

import tensorflow as tf

from attnlab.train.observers.format_metrics import format_metrics
from attnlab.train.observers.run_observer import RunObserver


class ProgressBar(RunObserver):
    """A tf.keras.utils.Progbar per epoch showing the step's loss.

    The Trainer reports batches only now and then (it reads device values rarely), so the
    bar moves in jumps. When stdout is not a terminal (a detached run's output.log), each
    epoch also prints one line "epoch E/N loss ... accuracy ...".

    Example:
        >>> trainer.fit(data, epochs=3, callbacks=[ProgressBar()])  # with Trainer(verbose=0)
    """

    def __init__(self):
        super().__init__()
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._bar = tf.keras.utils.Progbar(self.params.get("steps"), verbose=1)
        if self.batches_done:
            self._bar.update(self.batches_done)  # resumed inside the epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None and logs and "loss" in logs:
            self._bar.update(batch + 1, [("loss", float(logs["loss"]))])

    def on_epoch_end(self, epoch, logs=None):
        if not sys.stdout.isatty():
            print("epoch %d/%d %s" % (epoch + 1, self.params["epochs"], format_metrics(logs)),
                  flush=True)
