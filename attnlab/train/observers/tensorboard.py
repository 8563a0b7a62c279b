"""TensorBoardScalars: one scalar per metric and epoch in RUN/tb/, at the global step."""
import tensorflow as tf

from attnlab.train.observers.run_observer import RunObserver


class TensorBoardScalars(RunObserver):
    """Writes each epoch's logs as TensorBoard scalars named by metric, at the global step.

    Unlike tf.keras.callbacks.TensorBoard (train/ and validation/ subfolders, "epoch_"
    names, epoch numbers), the event files sit directly in `log_dir` with the metric names
    ("val_loss", "learning_rate") over steps, so runs resumed mid-epoch line up.

    Args:
        log_dir: the folder of the event files (RUN/tb).

    Example:
        >>> model.fit(data, epochs=3, callbacks=[TensorBoardScalars("runs/demo/tb")])
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    @property
    def writer(self):
        """The open summary writer (None outside training): other observers that write
        into the same folder share it, because TensorBoard follows only the newest event
        file of a folder while a run writes."""
        return self._writer

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        with self._writer.as_default(step=self.global_step):
            for key, value in (logs or {}).items():
                tf.summary.scalar(key, value)
        self._writer.flush()

    def _close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_train_end(self, logs=None):
        self._close()

    def on_run_failure(self, error):
        self._close()
